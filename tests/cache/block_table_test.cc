#include "cache/block_table.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "cache/block_pool.h"

namespace mnemo::cache {
namespace {

// 4 tokens per block, 256 bytes per block.
std::unique_ptr<BlockPool> MakePool(int64_t n_blocks) {
  kernels::KvLayout l;
  l.n_layers = 1;
  l.n_kv_heads = 2;
  l.head_dim = 8;
  l.block_tokens = 4;
  auto pool = BlockPool::Create({l, static_cast<uint64_t>(n_blocks) * 256});
  EXPECT_TRUE(pool.ok()) << pool.status();
  return *std::move(pool);
}

std::vector<int32_t> Ids(const BlockTable& t) {
  std::vector<int32_t> v;
  for (BlockId id : t.blocks()) v.push_back(id.value);
  return v;
}

TEST(BlockTableTest, ReserveAllocatesWhatTheTokensNeed) {
  auto pool = MakePool(8);
  BlockTable t;
  EXPECT_EQ(t.n_tokens(), 0);
  EXPECT_EQ(t.capacity_tokens(), 0);
  ASSERT_TRUE(t.Reserve(*pool, 1));
  EXPECT_EQ(Ids(t), (std::vector<int32_t>{0}));
  EXPECT_EQ(t.n_tokens(), 1);
  EXPECT_EQ(t.capacity_tokens(), 4);
  ASSERT_TRUE(t.Reserve(*pool, 4));  // still fits in block 0
  EXPECT_EQ(Ids(t), (std::vector<int32_t>{0}));
  ASSERT_TRUE(t.Reserve(*pool, 9));  // 3 blocks
  EXPECT_EQ(Ids(t), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(t.n_tokens(), 9);
  EXPECT_EQ(t.capacity_tokens(), 12);
  EXPECT_EQ(pool->num_free(), 5);
  ASSERT_TRUE(t.Reserve(*pool, 5));  // smaller: no change
  EXPECT_EQ(t.n_tokens(), 9);
  EXPECT_EQ(Ids(t).size(), 3u);
  ASSERT_TRUE(t.Reserve(*pool, 0));
  t.Release(*pool);
}

TEST(BlockTableTest, ReserveIsAllOrNothing) {
  auto pool = MakePool(5);
  BlockTable a, b;
  ASSERT_TRUE(a.Reserve(*pool, 8));           // blocks 0, 1
  ASSERT_TRUE(b.Reserve(*pool, 3));           // block 2
  EXPECT_FALSE(b.Reserve(*pool, 4 * 4 + 1));  // needs 4 more blocks, 2 are free
  EXPECT_EQ(b.n_tokens(), 3);
  EXPECT_EQ(b.capacity_tokens(), 4);
  EXPECT_EQ(Ids(b), (std::vector<int32_t>{2}));
  EXPECT_EQ(pool->num_free(), 2);
  EXPECT_TRUE(b.Reserve(*pool, 12));  // exactly the 2 free blocks
  EXPECT_EQ(Ids(b), (std::vector<int32_t>{2, 3, 4}));
  EXPECT_EQ(pool->num_free(), 0);
  EXPECT_FALSE(a.Reserve(*pool, 9));
  EXPECT_EQ(a.n_tokens(), 8);
  a.Release(*pool);
  b.Release(*pool);
  EXPECT_EQ(pool->num_free(), 5);
}

TEST(BlockTableTest, TruncateFreesWholeBlocksPastTheTokens) {
  auto pool = MakePool(8);
  BlockTable t;
  ASSERT_TRUE(t.Reserve(*pool, 15));  // blocks 0..3
  t.Truncate(*pool, 9);               // keeps 3 blocks (token 8 is in block 2)
  EXPECT_EQ(Ids(t), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(t.n_tokens(), 9);
  EXPECT_EQ(t.capacity_tokens(), 12);
  EXPECT_EQ(pool->num_free(), 5);
  EXPECT_FALSE(pool->IsAllocated(BlockId{3}));
  t.Truncate(*pool, 8);  // exactly two blocks
  EXPECT_EQ(Ids(t), (std::vector<int32_t>{0, 1}));
  t.Truncate(*pool, 20);  // larger: no change
  EXPECT_EQ(t.n_tokens(), 8);
  t.Truncate(*pool, 0);
  EXPECT_TRUE(t.blocks().empty());
  EXPECT_EQ(t.capacity_tokens(), 0);
  EXPECT_EQ(pool->num_free(), 8);
  // Regrowing after a truncation takes fresh blocks from the front of the free queue:
  // 4..7 were never used, then 3, 2, 1, 0 in the order they were freed.
  ASSERT_TRUE(t.Reserve(*pool, 32));
  EXPECT_EQ(Ids(t), (std::vector<int32_t>{4, 5, 6, 7, 3, 2, 1, 0}));
  t.Release(*pool);
}

TEST(BlockTableTest, ReleaseFreesTailFirstAndMoveTransfersOwnership) {
  auto pool = MakePool(6);
  BlockTable t;
  ASSERT_TRUE(t.Reserve(*pool, 12));  // 0, 1, 2
  BlockTable moved(std::move(t));
  EXPECT_TRUE(t.blocks().empty());  // NOLINT(bugprone-use-after-move): moved-from is empty
  EXPECT_EQ(t.n_tokens(), 0);
  EXPECT_EQ(moved.n_tokens(), 12);
  BlockTable assigned;
  assigned = std::move(moved);
  EXPECT_EQ(Ids(assigned), (std::vector<int32_t>{0, 1, 2}));
  assigned.Release(*pool);
  EXPECT_EQ(assigned.n_tokens(), 0);
  EXPECT_EQ(pool->num_free(), 6);
  BlockTable next;
  ASSERT_TRUE(next.Reserve(*pool, 24));
  EXPECT_EQ(Ids(next), (std::vector<int32_t>{3, 4, 5, 2, 1, 0}));
  next.Release(*pool);
}

// Many tables growing, shrinking and releasing at random: no slot is in two tables, and
// the pool's free count always equals its size minus the blocks the tables hold.
TEST(BlockTableTest, RandomOperationsKeepOwnershipExclusive) {
  auto pool = MakePool(50);
  std::mt19937 rng(3);
  std::vector<BlockTable> tables(7);
  for (int step = 0; step < 5000; ++step) {
    BlockTable& t = tables[rng() % tables.size()];
    switch (rng() % 4) {
      case 0:
      case 1: {
        const int64_t want = t.n_tokens() + static_cast<int64_t>(rng() % 30);
        const int64_t free_before = pool->num_free();
        const size_t blocks_before = t.blocks().size();
        if (!t.Reserve(*pool, want)) {
          ASSERT_EQ(pool->num_free(), free_before);
          ASSERT_EQ(t.blocks().size(), blocks_before);
        } else {
          ASSERT_EQ(t.n_tokens(), want);
        }
        break;
      }
      case 2:
        t.Truncate(*pool, t.n_tokens() == 0 ? 0 : static_cast<int64_t>(rng() % t.n_tokens()));
        break;
      default:
        if (rng() % 4 == 0) t.Release(*pool);
    }
    std::set<int32_t> seen;
    int64_t held = 0;
    for (const BlockTable& u : tables) {
      ASSERT_EQ(static_cast<int64_t>(u.blocks().size()), (u.n_tokens() + 3) / 4);
      ASSERT_EQ(u.capacity_tokens(), static_cast<int64_t>(u.blocks().size()) * 4);
      for (BlockId id : u.blocks()) {
        ASSERT_TRUE(seen.insert(id.value).second) << "block " << id.value << " owned twice";
        ASSERT_TRUE(pool->IsAllocated(id));
      }
      held += static_cast<int64_t>(u.blocks().size());
    }
    ASSERT_EQ(pool->num_free(), pool->num_total() - held);
  }
  for (BlockTable& t : tables) t.Release(*pool);
  EXPECT_EQ(pool->num_free(), 50);
}

#ifndef NDEBUG
TEST(BlockTableDeathTest, DestroyingATableThatHoldsBlocksAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto pool = MakePool(2);
  EXPECT_DEATH(
      {
        BlockTable t;
        t.Reserve(*pool, 1);
      },
      "without Release");
}
#endif

}  // namespace
}  // namespace mnemo::cache
