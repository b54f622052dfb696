// The device memory plan: how one device allocation (kernels/cuda/device_pool.h) is split
// between the model's weights, scratch (activations, cuBLAS workspace) and the KV block
// pool. Plain C++, header-only, no CUDA: the CPU tests check it without a GPU.
//
//   device free memory (cudaMemGetInfo, after the CUDA context exists)
//   └─ budget: --device-budget bytes, or a fraction of free (default 0.9: headroom for
//      cuBLAS's and the driver's own allocations)
//      ├─ weights   every tensor 16-bit (bf16, or f16 when stored f16), each padded to 256 B
//      ├─ scratch   the reserve: activations of the largest step, cuBLAS workspace
//      └─ KV pool   floor((budget - weights - scratch) / block_bytes) blocks
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "kernels/attention.h"  // KvLayout

namespace mnemo::kernels::cuda {

// Alignment of every sub-allocation of the device pool: cudaMalloc's own alignment, and
// enough for the widest vector loads and cuBLAS's tensor-core paths.
inline constexpr uint64_t kPoolAlignment = 256;

inline constexpr uint64_t AlignUp(uint64_t v, uint64_t a = kPoolAlignment) {
  return (v + a - 1) / a * a;
}

struct MemoryPlanOptions {
  uint64_t device_free_bytes = 0;   // cudaMemGetInfo's free
  uint64_t device_total_bytes = 0;  // cudaMemGetInfo's total
  // --device-budget in bytes (0: not given; then budget_fraction of the free memory).
  uint64_t budget_bytes = 0;
  double budget_fraction = 0.9;  // in (0, 1]
  uint64_t weight_bytes = 0;     // the device weights, each tensor already padded to 256
  uint64_t reserve_bytes = 0;    // activations + cuBLAS workspace + anything else per step
  uint64_t kv_block_bytes = 0;   // KvLayout::block_bytes()
  int64_t min_kv_blocks = 1;     // fewer than this is an error (nothing could run)
};

struct MemoryPlan {
  std::string error;  // empty when the plan is usable; else why not, for the user
  uint64_t budget_bytes = 0;
  uint64_t weight_bytes = 0;   // aligned
  uint64_t scratch_bytes = 0;  // aligned
  int64_t kv_blocks = 0;
  uint64_t kv_bytes = 0;  // kv_blocks * kv_block_bytes, aligned
  bool ok() const { return error.empty(); }
  // The size of the one device allocation: weights, then scratch, then the KV pool.
  uint64_t total_bytes() const { return weight_bytes + scratch_bytes + kv_bytes; }
};

inline double Gib(uint64_t bytes) { return static_cast<double>(bytes) / double(1ull << 30); }

// "14.96 GiB"
inline std::string FormatGib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f GiB", Gib(bytes));
  return buf;
}

// The plan for options `o`, or a plan whose error says what does not fit.
inline MemoryPlan PlanDeviceMemory(const MemoryPlanOptions& o) {
  MemoryPlan p;
  if (o.device_total_bytes == 0 || o.device_free_bytes > o.device_total_bytes) {
    p.error = "device memory unknown: free " + FormatGib(o.device_free_bytes) + " of total " +
              FormatGib(o.device_total_bytes);
    return p;
  }
  if (o.kv_block_bytes == 0) {
    p.error = "KV block size is 0";
    return p;
  }
  if (o.budget_bytes > 0) {
    if (o.budget_bytes > o.device_free_bytes) {
      p.error = "device budget " + FormatGib(o.budget_bytes) + " exceeds the free device memory " +
                FormatGib(o.device_free_bytes);
      return p;
    }
    p.budget_bytes = o.budget_bytes;
  } else {
    if (!(o.budget_fraction > 0.0 && o.budget_fraction <= 1.0)) {
      p.error = "device budget fraction must be in (0, 1]";
      return p;
    }
    p.budget_bytes =
        static_cast<uint64_t>(static_cast<double>(o.device_free_bytes) * o.budget_fraction);
  }
  p.weight_bytes = AlignUp(o.weight_bytes);
  p.scratch_bytes = AlignUp(o.reserve_bytes);
  if (p.weight_bytes > p.budget_bytes) {
    p.error = "model needs " + FormatGib(p.weight_bytes) + " of weights, device budget " +
              FormatGib(p.budget_bytes);
    return p;
  }
  if (p.weight_bytes + p.scratch_bytes > p.budget_bytes) {
    p.error = "model needs " + FormatGib(p.weight_bytes) + " of weights + " +
              FormatGib(p.scratch_bytes) + " of scratch, device budget " +
              FormatGib(p.budget_bytes);
    return p;
  }
  // Whole blocks in what is left, then the pool's size padded to the alignment, which must
  // still fit: drop a block if the padding would cross the budget.
  const uint64_t left = p.budget_bytes - p.weight_bytes - p.scratch_bytes;
  uint64_t blocks = left / o.kv_block_bytes;
  while (blocks > 0 && AlignUp(blocks * o.kv_block_bytes) > left) --blocks;
  p.kv_blocks = static_cast<int64_t>(blocks);
  p.kv_bytes = AlignUp(blocks * o.kv_block_bytes);
  if (p.kv_blocks < o.min_kv_blocks) {
    p.error = "no room for the KV cache: " + FormatGib(left) +
              " left after weights and scratch, device budget " + FormatGib(p.budget_bytes) +
              ", one KV block needs " + std::to_string(o.kv_block_bytes) + " bytes";
    return p;
  }
  return p;
}

// KV blocks one session of `tokens` tokens occupies (ceil(tokens / block_tokens)).
inline int64_t KvBlocksPerSession(int64_t tokens, int block_tokens) {
  if (tokens <= 0 || block_tokens <= 0) return 0;
  return (tokens + block_tokens - 1) / block_tokens;
}

// How many sessions of `tokens` tokens each stay resident in the plan's KV pool at once.
inline int64_t ResidentSessions(const MemoryPlan& plan, const KvLayout& layout, int64_t tokens) {
  const int64_t per_session = KvBlocksPerSession(tokens, layout.block_tokens);
  return per_session == 0 ? 0 : plan.kv_blocks / per_session;
}

// KV bytes per token of a model (all layers, K and V): the size a session grows by.
inline uint64_t KvBytesPerToken(const KvLayout& layout) {
  return static_cast<uint64_t>(layout.block_bytes()) / static_cast<uint64_t>(layout.block_tokens);
}

}  // namespace mnemo::kernels::cuda
