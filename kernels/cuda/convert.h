// Conversions to the 16-bit types the cuBLAS products take: weights once at upload
// (dequantized to bf16), activations per call (f32 to the weight's 16-bit type). Plain C++
// header: no CUDA or Abseil includes.
//
// Why bf16 weights: every weight dtype becomes one layout cuBLAS multiplies on tensor cores
// with f32 accumulation, so one simple product path serves all of them; the price is device
// memory (2 bytes per weight instead of ~0.56 for q4_k). F16 weights stay f16 (converting
// them to bf16 would drop 3 mantissa bits); F32 weights are rounded to bf16.
//
// Numerics: every output element is F32ToBF16 / F32ToF16 (kernels/half.h, round to nearest
// even) of the value the CPU computes for it (kernels/dequant_math.h Format::Element), so the
// device results equal DequantizeRowRef followed by the same rounding, bit for bit.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/launch.h"
#include "kernels/dtype.h"

namespace mnemo::kernels {

// The dtype a weight of type t is kept in on the device: kF16 for kF16, kBF16 for every
// other weight dtype (CanDequantize).
inline DType DeviceWeightDType(DType t) { return t == DType::kF16 ? DType::kF16 : DType::kBF16; }

// Enqueues on `stream` (a cudaStream_t; nullptr: the legacy default stream) the conversion
// of the n elements of type t at device address d_src into n bf16 values (raw bits) at
// d_dst: d_dst[e] = F32ToBF16(element e of the dequantized row). Any weight dtype is
// accepted (f16 input is rounded to bf16; bf16 input is copied unchanged).
//
// Returns 0 (cudaSuccess) once the work is enqueued, or the cudaError_t value:
// cudaErrorInvalidValue (1) when t is not a weight dtype, n is negative or not a multiple of
// t's block size, a pointer is null while n > 0, or d_src is not aligned for t's block or
// d_dst not 2-byte aligned; otherwise the launch error. n == 0 enqueues nothing. The buffers
// must not overlap and must stay valid until the work completes. Thread-safe.
int CudaDequantizeToBf16(DType t, const void* d_src, uint16_t* d_dst, int64_t n, void* stream);

// The upload path of one weight tensor already copied (in its file dtype) to the device:
// writes its n elements in DeviceWeightDType(t) to d_dst. F16 is copied as is; every other
// dtype goes through CudaDequantizeToBf16. Same contract and errors as CudaDequantizeToBf16.
int CudaConvertWeight(DType t, const void* d_src, uint16_t* d_dst, int64_t n, void* stream);

// Activations: dst[r * cols + c] = F32ToBF16 / F32ToF16 (x[r * ldx + c]) for r < rows,
// c < cols: a row-major f32 matrix with row stride ldx (>= cols) into a packed 16-bit one.
// F32ToF16 overflows to +-inf from |x| >= 65520 (the caller chose f16 weights).
// Returns 0, or cudaErrorInvalidValue when rows or cols is negative, ldx < cols, a pointer is
// null while rows * cols > 0 or misaligned (x 4-byte, dst 2-byte); otherwise the launch
// error. An empty matrix enqueues nothing. Thread-safe.
int CudaF32ToBf16(const float* d_x, int64_t rows, int64_t cols, int64_t ldx, uint16_t* d_dst,
                  void* stream);
int CudaF32ToF16(const float* d_x, int64_t rows, int64_t cols, int64_t ldx, uint16_t* d_dst,
                 void* stream);

namespace cuda {

// The launch of the elementwise kernels of convert.cu, dequant.cu and gemm.cu: one
// thread per element in a grid-stride loop, 256 threads a block, at most 2^16 blocks
// (enough to fill any current GPU many times over; larger inputs loop). n >= 1.
inline constexpr int64_t kElementwiseThreads = 256;
inline constexpr int64_t kElementwiseMaxBlocks = int64_t{1} << 16;

inline LaunchConfig ElementwiseLaunch(int64_t n) {
  LaunchConfig c;
  c.block.x = kElementwiseThreads;
  c.grid.x = std::min(CeilDiv(n, kElementwiseThreads), kElementwiseMaxBlocks);
  return c;
}

}  // namespace cuda
}  // namespace mnemo::kernels
