#include "cache/block_pool.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <vector>

#include "absl/status/status.h"

namespace mnemo::cache {
namespace {

// 2 layers * 2 (k, v) * 2 kv heads * 4 tokens * 8 dims * 2 bytes = 512 bytes per block.
kernels::KvLayout TinyLayout() {
  kernels::KvLayout l;
  l.n_layers = 2;
  l.n_kv_heads = 2;
  l.head_dim = 8;
  l.block_tokens = 4;
  l.dtype = kernels::DType::kF16;
  return l;
}

std::unique_ptr<BlockPool> MakePool(int64_t n_blocks) {
  auto pool = BlockPool::Create({TinyLayout(), static_cast<uint64_t>(n_blocks) * 512});
  EXPECT_TRUE(pool.ok()) << pool.status();
  return *std::move(pool);
}

TEST(BlockPoolTest, RejectsBadLayouts) {
  for (int field = 0; field < 4; ++field) {
    kernels::KvLayout l = TinyLayout();
    int* sizes[] = {&l.n_layers, &l.n_kv_heads, &l.head_dim, &l.block_tokens};
    *sizes[field] = field % 2 == 0 ? 0 : -3;
    auto pool = BlockPool::Create({l, 1 << 20});
    EXPECT_EQ(pool.status().code(), absl::StatusCode::kInvalidArgument) << field;
  }
  for (kernels::DType t : {kernels::DType::kF32, kernels::DType::kQ8_0, kernels::DType::kI8}) {
    kernels::KvLayout l = TinyLayout();
    l.dtype = t;
    EXPECT_EQ(BlockPool::Create({l, 1 << 20}).status().code(), absl::StatusCode::kInvalidArgument);
  }
  kernels::KvLayout huge = TinyLayout();
  huge.n_layers = huge.n_kv_heads = huge.head_dim = huge.block_tokens = 1 << 30;
  EXPECT_EQ(BlockPool::Create({huge, ~uint64_t{0}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BlockPoolTest, BudgetBelowOneBlockIsResourceExhausted) {
  EXPECT_EQ(BlockPool::Create({TinyLayout(), 511}).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(BlockPool::Create({TinyLayout(), 0}).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(BlockPoolTest, SizesFollowTheBudget) {
  kernels::KvLayout bf = TinyLayout();
  bf.dtype = kernels::DType::kBF16;
  auto pool = BlockPool::Create({bf, 5 * 512 + 300});  // 5.6 blocks -> 5 slots
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ((*pool)->num_total(), 5);
  EXPECT_EQ((*pool)->num_free(), 5);
  EXPECT_EQ((*pool)->block_bytes(), 512);
  const kernels::KvArenaView v = (*pool)->view();
  EXPECT_EQ(v.n_slots, 5);
  EXPECT_EQ(v.layout.block_bytes(), 512);
  EXPECT_EQ(v.layout.dtype, kernels::DType::kBF16);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v.base) % 64, 0u);
}

TEST(BlockPoolTest, AllocatesInOrderThenNulloptAndReusesFifo) {
  auto pool = MakePool(4);
  for (int32_t i = 0; i < 4; ++i) {
    const std::optional<BlockId> id = pool->Allocate();
    ASSERT_TRUE(id.has_value());
    EXPECT_EQ(id->value, i);
    EXPECT_TRUE(pool->IsAllocated(*id));
  }
  EXPECT_EQ(pool->num_free(), 0);
  EXPECT_FALSE(pool->Allocate().has_value());  // full is a normal result
  pool->Free(BlockId{2});
  pool->Free(BlockId{0});
  EXPECT_FALSE(pool->IsAllocated(BlockId{2}));
  EXPECT_EQ(pool->num_free(), 2);
  EXPECT_EQ(pool->Allocate(), BlockId{2});  // freed longest ago comes back first
  EXPECT_EQ(pool->Allocate(), BlockId{0});
  EXPECT_FALSE(pool->Allocate().has_value());
  EXPECT_FALSE(pool->IsAllocated(BlockId{-1}));
  EXPECT_FALSE(pool->IsAllocated(BlockId{4}));
}

TEST(BlockPoolTest, SlotsAreDisjointAndMatchTheView) {
  auto pool = MakePool(6);
  std::vector<BlockId> ids;
  while (auto id = pool->Allocate()) ids.push_back(*id);
  ASSERT_EQ(ids.size(), 6u);
  for (BlockId id : ids) {
    EXPECT_EQ(pool->BlockData(id), pool->view().base + id.value * 512);
    std::memset(pool->BlockData(id), 0x10 + id.value, 512);
  }
  for (BlockId id : ids) {
    const uint8_t* p = pool->BlockData(id);
    for (int i = 0; i < 512; ++i) ASSERT_EQ(p[i], 0x10 + id.value) << id.value << " " << i;
  }
}

TEST(BlockPoolTest, RandomAllocFreeNeverHandsOutAnOwnedSlot) {
  auto pool = MakePool(37);
  std::mt19937 rng(7);
  std::set<int32_t> owned;
  for (int step = 0; step < 20000; ++step) {
    if (rng() % 2 == 0) {
      const std::optional<BlockId> id = pool->Allocate();
      if (owned.size() == 37) {
        EXPECT_FALSE(id.has_value());
        continue;
      }
      ASSERT_TRUE(id.has_value());
      ASSERT_TRUE(owned.insert(id->value).second) << "slot " << id->value << " handed out twice";
    } else if (!owned.empty()) {
      auto it = owned.begin();
      std::advance(it, rng() % owned.size());
      pool->Free(BlockId{*it});
      owned.erase(it);
    }
    ASSERT_EQ(pool->num_free() + static_cast<int64_t>(owned.size()), pool->num_total());
  }
}

TEST(BlockPoolDeathTest, DoubleFreeAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto pool = MakePool(2);
  const BlockId id = *pool->Allocate();
  pool->Free(id);
  EXPECT_DEATH(pool->Free(id), "double free of block 0");
  EXPECT_DEATH(pool->Free(BlockId{1}), "double free of block 1");  // never allocated
}

TEST(BlockPoolDeathTest, ForeignIdAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto pool = MakePool(2);
  EXPECT_DEATH(pool->Free(BlockId{2}), "outside a pool of 2");
  EXPECT_DEATH(pool->Free(BlockId{}), "outside a pool of 2");
}

}  // namespace
}  // namespace mnemo::cache
