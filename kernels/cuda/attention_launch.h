// Launch configurations and work planning of the CUDA paged-attention and KV-write kernels
// (kernels/cuda/attention.cu). Plain C++, header-only: the CPU tests check them with
// CheckLaunch against sm_80/sm_90 and check that the split plan covers every key once.
//
// Attention work: one warp per item (query row, query head, context split); items are
// numbered with the split fastest, then the head, then the row:
//
//   item = (row_local * n_heads + head) * n_splits + split,  kAttnWarpsPerBlock items/block
//
// With one split (every kv_len <= kAttnSplitKeys) each warp writes its output directly. With
// several, each warp writes its partial softmax state (acc[head_dim], m, l) to the scratch
// buffer at [row_local][head][split] (stride head_dim + 2 floats) and a merge kernel (one
// block per (row, head)) combines the splits in split order. When the scratch holds fewer
// rows than the call has, the launcher runs (attend, merge) pairs over row chunks on the
// same stream; every row's result is the same whatever the chunking.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/attention_math.h"
#include "kernels/cuda/launch.h"

namespace mnemo::kernels::cuda {

inline constexpr int kAttnWarpsPerBlock = 4;
// Keys per step of an attention warp: one per lane (AttendKernel).
inline constexpr int kAttnKeyTile = 32;
inline constexpr int kAttnMaxHeadDim = 256;  // each lane holds head_dim / 32 <= 8 elements
inline constexpr int kAttnMergeThreads = 128;
inline constexpr int kKvWriteThreads = 256;
// Rows per (attend, merge) pair at most: keeps grids far below the limits (8192 rows * 128
// heads * 256 splits / 4 = 2^26 blocks) whatever the batch.
inline constexpr int64_t kAttnMaxRowsPerLaunch = 8192;

// Context splits of a call whose sequences have at most max_kv_len tokens of KV.
inline int64_t AttentionSplits(int64_t max_kv_len) {
  return std::max<int64_t>(1, CeilDiv(max_kv_len, kAttnSplitKeys));
}

// Scratch bytes one query row needs: 0 with a single split (no scratch used); otherwise
// n_heads * n_splits * (head_dim + 2) floats, e.g. 32 heads, head_dim 128, kv 32768 (64
// splits): 1.06 MB per row.
inline int64_t AttentionScratchBytesPerRow(int n_heads, int head_dim, int64_t max_kv_len) {
  const int64_t n_splits = AttentionSplits(max_kv_len);
  if (n_splits == 1) return 0;
  return int64_t{n_heads} * n_splits * (int64_t{head_dim} + 2) * int64_t{sizeof(float)};
}

// Scratch bytes for running `rows` query rows in one (attend, merge) pair. Any scratch of
// at least AttentionScratchBytesPerRow works (the launcher chunks the rows).
inline int64_t AttentionScratchBytes(int64_t rows, int n_heads, int head_dim, int64_t max_kv_len) {
  return std::min(rows, kAttnMaxRowsPerLaunch) *
         AttentionScratchBytesPerRow(n_heads, head_dim, max_kv_len);
}

// Dynamic shared memory of an attention block: per warp the pre-scaled query (head_dim
// floats) and the V rows of one key tile (kAttnKeyTile * head_dim 16-bit elements), staged
// there by asynchronous copies while the tile's scores are computed. Over 48 KiB
// (head_dim > 176) the launcher raises the kernel's limit (opt-in).
inline int64_t AttendSharedBytes(int head_dim) {
  return int64_t{kAttnWarpsPerBlock} * head_dim * (4 + 2 * kAttnKeyTile);
}
MNEMO_HD int64_t AttendSharedQueryFloats(int head_dim) {
  return int64_t{kAttnWarpsPerBlock} * head_dim;
}

inline LaunchConfig AttendLaunch(int64_t rows, int n_heads, int64_t n_splits, int head_dim) {
  LaunchConfig c;
  c.grid.x = CeilDiv(rows * n_heads * n_splits, kAttnWarpsPerBlock);
  c.block.x = int64_t{kAttnWarpsPerBlock} * 32;
  c.shared_bytes = AttendSharedBytes(head_dim);
  return c;
}

inline LaunchConfig MergeLaunch(int64_t rows, int n_heads) {
  LaunchConfig c;
  c.grid.x = rows * n_heads;
  c.block.x = kAttnMergeThreads;
  return c;
}

struct AttentionPlan {
  int64_t n_splits = 1;
  // Rows per (attend, merge) pair; 0 when the scratch cannot hold even one row.
  int64_t rows_per_launch = 0;
};

inline AttentionPlan PlanAttention(int64_t total_rows, int n_heads, int head_dim,
                                   int64_t max_kv_len, int64_t scratch_bytes) {
  AttentionPlan plan;
  plan.n_splits = AttentionSplits(max_kv_len);
  const int64_t cap = std::clamp<int64_t>(total_rows, 1, kAttnMaxRowsPerLaunch);
  const int64_t per_row = AttentionScratchBytesPerRow(n_heads, head_dim, max_kv_len);
  plan.rows_per_launch = per_row == 0 ? cap : std::min(cap, scratch_bytes / per_row);
  return plan;
}

// KV write: one thread per element. grid.x = the row; grid.y = (k|v, chunk of
// kKvWriteThreads elements of the row's n_kv_heads * head_dim):
//   is_v = blockIdx.y / chunks, element = (blockIdx.y % chunks) * kKvWriteThreads + threadIdx.x
inline int64_t KvWriteChunks(int n_kv_heads, int head_dim) {
  return CeilDiv(int64_t{n_kv_heads} * head_dim, kKvWriteThreads);
}

inline LaunchConfig KvWriteLaunch(int64_t rows, int n_kv_heads, int head_dim) {
  LaunchConfig c;
  c.grid.x = rows;
  c.grid.y = 2 * KvWriteChunks(n_kv_heads, head_dim);
  c.block.x = kKvWriteThreads;
  return c;
}

}  // namespace mnemo::kernels::cuda
