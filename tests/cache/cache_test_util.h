// Shared helpers for the cache tests: tiny pools that run on any CPU.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "cache/block_pool.h"
#include "cache/block_table.h"

namespace mnemo::cache::testing {

// 1 layer * 2 (k, v) * 2 kv heads * block_tokens * 8 dims * 2 bytes per block: 256 bytes
// for 4-token blocks.
inline kernels::KvLayout TinyLayout(int block_tokens = 4) {
  kernels::KvLayout l;
  l.n_layers = 1;
  l.n_kv_heads = 2;
  l.head_dim = 8;
  l.block_tokens = block_tokens;
  l.dtype = kernels::DType::kF16;
  return l;
}

inline std::unique_ptr<BlockPool> MakePool(int64_t n_blocks, int block_tokens = 4) {
  const kernels::KvLayout l = TinyLayout(block_tokens);
  auto pool = BlockPool::Create({l, static_cast<uint64_t>(n_blocks * l.block_bytes())});
  EXPECT_TRUE(pool.ok()) << pool.status();
  return *std::move(pool);
}

// The slot numbers of a table's blocks, in order.
inline std::vector<int32_t> Ids(const BlockTable& t) {
  std::vector<int32_t> v;
  for (BlockId id : t.blocks()) v.push_back(id.value);
  return v;
}

// Fills a block with `byte` (a recognizable pattern for copy-on-write checks).
inline void Fill(const BlockPool& pool, BlockId id, uint8_t byte) {
  std::fill_n(pool.BlockData(id), pool.block_bytes(), byte);
}

// Whether every byte of a block is `byte`.
inline bool Filled(const BlockPool& pool, BlockId id, uint8_t byte) {
  const uint8_t* p = pool.BlockData(id);
  return std::all_of(p, p + pool.block_bytes(), [byte](uint8_t b) { return b == byte; });
}

}  // namespace mnemo::cache::testing
