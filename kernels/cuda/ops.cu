// CUDA twins of the dense elementwise and row ops (kernels/cuda/ops.h). Small kernels with
// the loop shapes of kernels/cuda/ops_launch.h; per-element math from kernels/ops_math.h and
// kernels/dequant_math.h, shared with the CPU.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/ops.h"
#include "kernels/cuda/ops_launch.h"
#include "kernels/dequant_math.h"
#include "kernels/ops.h"
#include "kernels/ops_math.h"

namespace mnemo::kernels {
namespace {

constexpr int kInvalid = cudaErrorInvalidValue;

bool Aligned4(const void* p) { return reinterpret_cast<uintptr_t>(p) % 4 == 0; }

dim3 ToDim3(const cuda::Dim3& d) {
  return dim3(static_cast<unsigned>(d.x), static_cast<unsigned>(d.y), static_cast<unsigned>(d.z));
}

// ---- block-wide reductions ---------------------------------------------------------------
// Fixed order for a given blockDim.x: an xor butterfly inside each warp (every lane ends with
// the same bits: each step adds the same two values, in either order), then warp 0 combines
// the per-warp results the same way. `scratch` holds 32 floats. Every thread gets the
// result. Must be reached by all threads of the block.

__device__ float WarpSum(float v) {
  for (int m = 16; m > 0; m >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, m));
  return v;
}

__device__ float WarpMax(float v) {
  for (int m = 16; m > 0; m >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, m));
  return v;
}

template <bool kMax>
__device__ float BlockReduce(float v, float* scratch) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warps = blockDim.x / 32;  // blockDim.x is a whole number of warps (ops_launch.h)
  const float identity = kMax ? -INFINITY : 0.0f;
  v = kMax ? WarpMax(v) : WarpSum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : identity;
  return kMax ? WarpMax(v) : WarpSum(v);
}

// ---- row kernels (one block per row) ------------------------------------------------------

__global__ void RmsNormKernel(RmsNormParams p) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const float* x = p.x + r * p.ldx;
    float* y = p.y + r * p.ldy;
    float part = 0.0f;
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) part = fmaf(x[c], x[c], part);
    const float scale = RmsNormScale(BlockReduce<false>(part, scratch), p.cols, p.eps);
    // In place (y == x): each element is read and written by the same thread, after the
    // whole row has been read for the reduction.
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) {
      y[c] = RmsNormApply(x[c], scale, p.weight[c]);
    }
  }
}

__global__ void SoftmaxKernel(SoftmaxParams p) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    float* x = p.x + r * p.ld;
    float part_max = -INFINITY;
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) part_max = fmaxf(part_max, x[c]);
    const float max = BlockReduce<true>(part_max, scratch);
    if (max == -INFINITY) {  // every entry masked: all zeros (block-uniform branch)
      for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) x[c] = 0.0f;
      continue;
    }
    float part_sum = 0.0f;
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) {
      const float e = SoftmaxExp(x[c], max);
      x[c] = e;  // re-read below by the same thread
      part_sum = __fadd_rn(part_sum, e);
    }
    const float inv = __fdiv_rn(1.0f, BlockReduce<false>(part_sum, scratch));
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) x[c] = __fmul_rn(x[c], inv);
  }
}

// ---- elementwise kernels (rows on grid x, columns on grid y) ------------------------------

__device__ int64_t FirstColumn() {
  return static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
}
__device__ int64_t ColumnStride() { return static_cast<int64_t>(gridDim.y) * blockDim.x; }

template <typename Format>
__global__ void EmbeddingKernel(EmbeddingParams p, int64_t row_blocks) {
  for (int64_t i = blockIdx.x; i < p.n; i += gridDim.x) {
    const int32_t id = p.ids[i];
    const bool valid = id >= 0 && id < p.table.rows;
    const auto* row =
        static_cast<const typename Format::Block*>(p.table.data) + (valid ? id : 0) * row_blocks;
    float* out = p.out + i * p.ld_out;
    for (int64_t c = FirstColumn(); c < p.table.cols; c += ColumnStride()) {
      const int64_t block = c / Format::kElems;
      out[c] = valid ? Format::Element(row[block], static_cast<int>(c - block * Format::kElems))
                     : __int_as_float(0x7fc00000);  // quiet NaN: the id was out of range
    }
  }
}

// Column j of a row is pair i = j % half of head h = j / half.
__global__ void RopeKernel(RopeParams p) {
  const int half = p.rotary_dims / 2;
  const int64_t pairs = static_cast<int64_t>(p.n_heads) * half;
  const bool neox = p.mode == RopeMode::kNeox;
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const int32_t position = p.positions[r];
    for (int64_t j = FirstColumn(); j < pairs; j += ColumnStride()) {
      const int h = static_cast<int>(j / half);
      const int i = static_cast<int>(j - static_cast<int64_t>(h) * half);
      float c;
      float s;
      RopeCosSin(position, p.theta[i], p.mscale, &c, &s);
      int a;
      int b;
      RopePairOffsets(neox, half, i, &a, &b);
      float* v = p.x + r * p.ld + static_cast<int64_t>(h) * p.head_dim;
      RopeRotate(v[a], v[b], c, s, &v[a], &v[b]);
    }
  }
}

__global__ void SwiGluKernel(SwiGluParams p) {
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    for (int64_t c = FirstColumn(); c < p.cols; c += ColumnStride()) {
      p.out[r * p.ld_out + c] = SiluMul(p.gate[r * p.ld_gate + c], p.up[r * p.ld_up + c]);
    }
  }
}

__global__ void AddKernel(AddParams p) {
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    for (int64_t c = FirstColumn(); c < p.cols; c += ColumnStride()) {
      float* y = p.y + r * p.ldy + c;
      *y = __fadd_rn(*y, p.x[r * p.ldx + c]);
    }
  }
}

// ---- launch helpers ------------------------------------------------------------------------

template <typename Kernel, typename Params>
int Launch(Kernel kernel, const cuda::LaunchConfig& lc, const Params& p, void* stream) {
  kernel<<<ToDim3(lc.grid), ToDim3(lc.block), static_cast<size_t>(lc.shared_bytes),
           static_cast<cudaStream_t>(stream)>>>(p);
  return static_cast<int>(cudaGetLastError());
}

template <typename Format>
int LaunchEmbedding(const EmbeddingParams& p, void* stream) {
  if (p.table.cols % Format::kElems != 0) return kInvalid;
  if (reinterpret_cast<uintptr_t>(p.table.data) % alignof(typename Format::Block) != 0) {
    return kInvalid;
  }
  if (p.n == 0 || p.table.cols == 0) return cudaSuccess;
  if (p.table.rows == 0) return kInvalid;  // no id can be valid
  const cuda::LaunchConfig lc = cuda::ElementwiseLaunch(p.n, p.table.cols);
  EmbeddingKernel<Format>
      <<<ToDim3(lc.grid), ToDim3(lc.block), 0, static_cast<cudaStream_t>(stream)>>>(
          p, p.table.cols / Format::kElems);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int CudaEmbedding(const EmbeddingParams& p, void* stream) {
  if (p.n < 0 || p.table.rows < 0 || p.table.cols < 0) return kInvalid;
  if (p.table.data == nullptr && p.table.rows > 0 && p.table.cols > 0) return kInvalid;
  if (p.n > 0) {
    if (p.ids == nullptr || p.out == nullptr || p.ld_out < p.table.cols) return kInvalid;
    if (!Aligned4(p.ids) || !Aligned4(p.out)) return kInvalid;
  }
  return VisitWeightFormat(p.table.dtype, static_cast<int>(kInvalid), [&](auto format) {
    return LaunchEmbedding<decltype(format)>(p, stream);
  });
}

int CudaRmsNorm(const RmsNormParams& p, void* stream) {
  if (p.rows < 0 || p.cols < 0) return kInvalid;
  if (p.rows == 0 || p.cols == 0) return cudaSuccess;
  if (p.x == nullptr || p.y == nullptr || p.weight == nullptr) return kInvalid;
  if (!Aligned4(p.x) || !Aligned4(p.y) || !Aligned4(p.weight)) return kInvalid;
  if (p.ldx < p.cols || p.ldy < p.cols) return kInvalid;
  if (p.x == p.y && p.ldx != p.ldy) return kInvalid;
  return Launch(RmsNormKernel, cuda::RowOpLaunch(p.rows, p.cols), p, stream);
}

int CudaRope(const RopeParams& p, void* stream) {
  if (p.rows < 0 || p.n_heads < 0 || p.head_dim < 0) return kInvalid;
  if (p.rotary_dims < 0 || p.rotary_dims % 2 != 0 || p.rotary_dims > p.head_dim) return kInvalid;
  if (p.mode != RopeMode::kNormal && p.mode != RopeMode::kNeox) return kInvalid;
  if (p.rows == 0 || p.n_heads == 0 || p.rotary_dims == 0) return cudaSuccess;
  if (p.x == nullptr || p.positions == nullptr || p.theta == nullptr) return kInvalid;
  if (!Aligned4(p.x) || !Aligned4(p.positions) || !Aligned4(p.theta)) return kInvalid;
  if (p.ld < static_cast<int64_t>(p.n_heads) * p.head_dim) return kInvalid;
  const int64_t pairs = static_cast<int64_t>(p.n_heads) * (p.rotary_dims / 2);
  return Launch(RopeKernel, cuda::ElementwiseLaunch(p.rows, pairs), p, stream);
}

int CudaSwiGlu(const SwiGluParams& p, void* stream) {
  if (p.rows < 0 || p.cols < 0) return kInvalid;
  if (p.rows == 0 || p.cols == 0) return cudaSuccess;
  if (p.gate == nullptr || p.up == nullptr || p.out == nullptr) return kInvalid;
  if (!Aligned4(p.gate) || !Aligned4(p.up) || !Aligned4(p.out)) return kInvalid;
  if (p.ld_gate < p.cols || p.ld_up < p.cols || p.ld_out < p.cols) return kInvalid;
  return Launch(SwiGluKernel, cuda::ElementwiseLaunch(p.rows, p.cols), p, stream);
}

int CudaSoftmax(const SoftmaxParams& p, void* stream) {
  if (p.rows < 0 || p.cols < 0) return kInvalid;
  if (p.rows == 0 || p.cols == 0) return cudaSuccess;
  if (p.x == nullptr || !Aligned4(p.x) || p.ld < p.cols) return kInvalid;
  return Launch(SoftmaxKernel, cuda::RowOpLaunch(p.rows, p.cols), p, stream);
}

int CudaAdd(const AddParams& p, void* stream) {
  if (p.rows < 0 || p.cols < 0) return kInvalid;
  if (p.rows == 0 || p.cols == 0) return cudaSuccess;
  if (p.x == nullptr || p.y == nullptr || !Aligned4(p.x) || !Aligned4(p.y)) return kInvalid;
  if (p.ldx < p.cols || p.ldy < p.cols) return kInvalid;
  if (p.x == p.y) {
    if (p.ldx != p.ldy) return kInvalid;
  } else {
    // Partial overlap would let one element's sum read another's result.
    const float* x_end = p.x + (p.rows - 1) * p.ldx + p.cols;
    const float* y_end = p.y + (p.rows - 1) * p.ldy + p.cols;
    if (!(y_end <= p.x || x_end <= p.y)) return kInvalid;
  }
  return Launch(AddKernel, cuda::ElementwiseLaunch(p.rows, p.cols), p, stream);
}

}  // namespace mnemo::kernels
