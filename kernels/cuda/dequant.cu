// CUDA dequantization: one templated grid-stride kernel, one thread per output element,
// the element math from kernels/dequant_math.h (shared with the CPU reference).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/convert.h"
#include "kernels/cuda/dequant.h"
#include "kernels/cuda/launch.h"
#include "kernels/dequant_math.h"
#include "kernels/dtype.h"
#include "kernels/half.h"

namespace mnemo::kernels {
namespace {

// dst[e] = element e % kElems of block e / kElems (as f32, or rounded to bf16), e in [0, n).
//   threads:  e = blockIdx.x * blockDim.x + threadIdx.x, then += gridDim.x * blockDim.x
// Neighbouring threads read neighbouring elements of one quant block (served by the same
// cache lines) and write neighbouring outputs (coalesced).
template <typename Format, typename Out>
__global__ void DequantizeKernel(const typename Format::Block* __restrict__ src,
                                 Out* __restrict__ dst, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += stride) {
    const int64_t block = e / Format::kElems;
    const int i = static_cast<int>(e - block * Format::kElems);
    const float v = Format::Element(src[block], i);
    if constexpr (sizeof(Out) == 2) {
      dst[e] = F32ToBF16(v);
    } else {
      dst[e] = v;
    }
  }
}

template <typename Format, typename Out>
int Launch(const void* d_src, Out* d_dst, int64_t n, cudaStream_t stream) {
  if (n % Format::kElems != 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;  // a launch of zero blocks would be an error
  if (reinterpret_cast<uintptr_t>(d_src) % alignof(typename Format::Block) != 0) {
    return cudaErrorInvalidValue;
  }
  const cuda::LaunchConfig c = cuda::ElementwiseLaunch(n);
  DequantizeKernel<Format, Out>
      <<<static_cast<unsigned>(c.grid.x), static_cast<unsigned>(c.block.x), 0, stream>>>(
          static_cast<const typename Format::Block*>(d_src), d_dst, n);
  return static_cast<int>(cudaGetLastError());
}

// The checks both entry points make, then the launch for t's format.
template <typename Out>
int Dequantize(DType t, const void* d_src, Out* d_dst, int64_t n, void* stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n > 0 && (d_src == nullptr || d_dst == nullptr)) return cudaErrorInvalidValue;
  if (reinterpret_cast<uintptr_t>(d_dst) % alignof(Out) != 0) return cudaErrorInvalidValue;
  const auto s = static_cast<cudaStream_t>(stream);
  return VisitWeightFormat(t, static_cast<int>(cudaErrorInvalidValue), [&](auto format) {
    return Launch<decltype(format)>(d_src, d_dst, n, s);
  });
}

}  // namespace

int CudaDequantize(DType t, const void* d_src, float* d_dst, int64_t n, void* stream) {
  return Dequantize(t, d_src, d_dst, n, stream);
}

int CudaDequantizeToBf16(DType t, const void* d_src, uint16_t* d_dst, int64_t n, void* stream) {
  return Dequantize(t, d_src, d_dst, n, stream);
}

}  // namespace mnemo::kernels
