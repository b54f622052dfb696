// Conversions to 16-bit types on the device: grid-stride kernels, one thread per output
// element, the per-element math from kernels/half.h (shared with the CPU reference).
// CudaDequantizeToBf16 lives with CudaDequantize in dequant.cu (one kernel for both).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/convert.h"
#include "kernels/dtype.h"
#include "kernels/half.h"

namespace mnemo::kernels {
namespace {

// dst[r * cols + c] = F32ToBF16 or F32ToF16 of x[r * ldx + c]; e = r * cols + c over the
// packed output (grid stride as above), so writes are coalesced and reads are within rows.
template <bool kToF16>
__global__ void F32To16Kernel(const float* __restrict__ x, int64_t cols, int64_t ldx,
                              uint16_t* __restrict__ dst, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += stride) {
    const int64_t r = e / cols;
    const float v = x[r * ldx + (e - r * cols)];
    dst[e] = kToF16 ? F32ToF16(v) : F32ToBF16(v);
  }
}

template <bool kToF16>
int LaunchF32To16(const float* d_x, int64_t rows, int64_t cols, int64_t ldx, uint16_t* d_dst,
                  void* stream) {
  if (rows < 0 || cols < 0 || ldx < cols) return cudaErrorInvalidValue;
  const int64_t n = rows * cols;
  if (n == 0) return cudaSuccess;
  if (d_x == nullptr || d_dst == nullptr) return cudaErrorInvalidValue;
  if (reinterpret_cast<uintptr_t>(d_x) % alignof(float) != 0 ||
      reinterpret_cast<uintptr_t>(d_dst) % alignof(uint16_t) != 0) {
    return cudaErrorInvalidValue;
  }
  const cuda::LaunchConfig c = cuda::ElementwiseLaunch(n);
  F32To16Kernel<kToF16><<<static_cast<unsigned>(c.grid.x), static_cast<unsigned>(c.block.x), 0,
                          static_cast<cudaStream_t>(stream)>>>(d_x, cols, ldx, d_dst, n);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int CudaConvertWeight(DType t, const void* d_src, uint16_t* d_dst, int64_t n, void* stream) {
  if (t != DType::kF16) return CudaDequantizeToBf16(t, d_src, d_dst, n, stream);
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (d_src == nullptr || d_dst == nullptr) return cudaErrorInvalidValue;
  if (reinterpret_cast<uintptr_t>(d_src) % 2 != 0 || reinterpret_cast<uintptr_t>(d_dst) % 2 != 0) {
    return cudaErrorInvalidValue;
  }
  if (d_src == d_dst) return cudaSuccess;  // already in place: f16 stays f16
  return static_cast<int>(cudaMemcpyAsync(d_dst, d_src, static_cast<size_t>(n) * 2,
                                          cudaMemcpyDeviceToDevice,
                                          static_cast<cudaStream_t>(stream)));
}

int CudaF32ToBf16(const float* d_x, int64_t rows, int64_t cols, int64_t ldx, uint16_t* d_dst,
                  void* stream) {
  return LaunchF32To16<false>(d_x, rows, cols, ldx, d_dst, stream);
}

int CudaF32ToF16(const float* d_x, int64_t rows, int64_t cols, int64_t ldx, uint16_t* d_dst,
                 void* stream) {
  return LaunchF32To16<true>(d_x, rows, cols, ldx, d_dst, stream);
}

}  // namespace mnemo::kernels
