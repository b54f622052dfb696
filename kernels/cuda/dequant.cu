// CUDA dequantization: one templated grid-stride kernel, one thread per output element,
// the element math from kernels/dequant_math.h (shared with the CPU reference).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/dequant.h"
#include "kernels/dequant_math.h"
#include "kernels/dtype.h"

namespace mnemo::kernels {
namespace {

constexpr int kThreads = 256;
// Enough blocks to fill any current GPU many times over; larger rows loop (grid stride).
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

// dst[e] = element e % kElems of block e / kElems, for e in [0, n).
//   threads:  e = blockIdx.x * blockDim.x + threadIdx.x, then += gridDim.x * blockDim.x
// Neighbouring threads read neighbouring elements of one quant block (served by the same
// cache lines) and write neighbouring floats (coalesced).
template <typename Format>
__global__ void DequantizeKernel(const typename Format::Block* __restrict__ src,
                                 float* __restrict__ dst, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += stride) {
    const int64_t block = e / Format::kElems;
    const int i = static_cast<int>(e - block * Format::kElems);
    dst[e] = Format::Element(src[block], i);
  }
}

template <typename Format>
int Launch(const void* d_src, float* d_dst, int64_t n, cudaStream_t stream) {
  if (n % Format::kElems != 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;  // a launch of zero blocks would be an error
  if (reinterpret_cast<uintptr_t>(d_src) % alignof(typename Format::Block) != 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks);
  DequantizeKernel<Format><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      static_cast<const typename Format::Block*>(d_src), d_dst, n);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int CudaDequantize(DType t, const void* d_src, float* d_dst, int64_t n, void* stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n > 0 && (d_src == nullptr || d_dst == nullptr)) return cudaErrorInvalidValue;
  if (reinterpret_cast<uintptr_t>(d_dst) % alignof(float) != 0) return cudaErrorInvalidValue;
  const auto s = static_cast<cudaStream_t>(stream);
  int result = cudaErrorInvalidValue;
  switch (t) {
    case DType::kF32:
      result = Launch<F32Format>(d_src, d_dst, n, s);
      break;
    case DType::kF16:
      result = Launch<F16Format>(d_src, d_dst, n, s);
      break;
    case DType::kBF16:
      result = Launch<BF16Format>(d_src, d_dst, n, s);
      break;
    case DType::kQ8_0:
      result = Launch<Q8_0Format>(d_src, d_dst, n, s);
      break;
    case DType::kQ4_0:
      result = Launch<Q4_0Format>(d_src, d_dst, n, s);
      break;
    case DType::kQ4_1:
      result = Launch<Q4_1Format>(d_src, d_dst, n, s);
      break;
    case DType::kQ4_K:
      result = Launch<Q4_KFormat>(d_src, d_dst, n, s);
      break;
    case DType::kQ5_K:
      result = Launch<Q5_KFormat>(d_src, d_dst, n, s);
      break;
    case DType::kQ6_K:
      result = Launch<Q6_KFormat>(d_src, d_dst, n, s);
      break;
    default:
      break;
  }
  return result;
}

}  // namespace mnemo::kernels
