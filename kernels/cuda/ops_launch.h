// Launch configurations of the dense-op kernels (kernels/cuda/ops.cu). Plain C++ header,
// checked without a GPU by tests/kernels/cuda_ops_launch_test.cc.
//
// Two shapes of kernel, both over a [rows, cols] index space:
//
//   row kernels (RmsNorm, Softmax): one block per row, its threads striding over the row.
//     for (r = blockIdx.x; r < rows; r += gridDim.x)
//       for (c = threadIdx.x; c < cols; c += blockDim.x)
//
//   elementwise kernels (Embedding, Rope, SwiGlu, Add): rows on grid x, columns on grid y.
//     for (r = blockIdx.x; r < rows; r += gridDim.x)
//       for (c = blockIdx.y * blockDim.x + threadIdx.x; c < cols; c += gridDim.y * blockDim.x)
//
// Rows go on grid x (up to 2^31 - 1 blocks; grid y stops at 65535, fewer than the 65536+
// rows of a long prefill). The loops make any row or column count correct even past the
// grid limits. The block size depends only on cols, never on rows: a row reduction's order
// is then a function of cols alone (batch invariance).
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/launch.h"

namespace mnemo::kernels::cuda {

inline constexpr int64_t kOpsMaxGridX = 2147483647;
inline constexpr int64_t kOpsMaxGridY = 65535;
// Threads per block of a row kernel, at most: a 4096-wide row gets 8 elements per thread;
// smaller blocks let more rows share an SM.
inline constexpr int64_t kRowMaxThreads = 512;
inline constexpr int64_t kElementwiseMaxThreads = 256;

inline constexpr int64_t RoundUpToWarp(int64_t n) { return CeilDiv(n, 32) * 32; }

// Row kernels: block = cols rounded up to whole warps, capped at kRowMaxThreads.
inline LaunchConfig RowOpLaunch(int64_t rows, int64_t cols) {
  LaunchConfig c;
  c.grid.x = std::clamp<int64_t>(rows, 1, kOpsMaxGridX);
  c.block.x = std::clamp<int64_t>(RoundUpToWarp(cols), 32, kRowMaxThreads);
  return c;
}

// Elementwise kernels over `cols` elements per row (for Rope: n_heads * rotary_dims / 2
// pairs per row).
inline LaunchConfig ElementwiseLaunch(int64_t rows, int64_t cols) {
  LaunchConfig c;
  c.block.x = std::clamp<int64_t>(RoundUpToWarp(cols), 32, kElementwiseMaxThreads);
  c.grid.x = std::clamp<int64_t>(rows, 1, kOpsMaxGridX);
  c.grid.y = std::clamp<int64_t>(CeilDiv(cols, c.block.x), 1, kOpsMaxGridY);
  return c;
}

}  // namespace mnemo::kernels::cuda
