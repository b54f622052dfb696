#include "cache/block_table.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "cache/block_pool.h"
#include "tests/cache/cache_test_util.h"

namespace mnemo::cache {
namespace {

using testing::Fill;
using testing::Filled;
using testing::Ids;
using testing::MakePool;

BlockHash H(uint64_t n) { return BlockHash{.lo = n, .hi = n * 31}; }

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
  for (BlockId id : t.blocks()) EXPECT_EQ(pool->refcount(id), 1);
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

TEST(BlockTableTest, ReserveEvictsCachedBlocksOnlyWhenItSucceeds) {
  auto pool = MakePool(3);
  BlockTable a;
  ASSERT_TRUE(a.Reserve(*pool, 8));  // blocks 0, 1
  ASSERT_TRUE(pool->Publish(BlockId{0}, H(0)));
  ASSERT_TRUE(pool->Publish(BlockId{1}, H(1)));
  a.Release(*pool);  // releases 1, then 0: both cached, LRU 1, 0
  EXPECT_EQ(pool->num_cached(), 2);

  BlockTable b;
  EXPECT_FALSE(b.Reserve(*pool, 13));  // 4 blocks: refused without touching the cache
  EXPECT_EQ(pool->num_cached(), 2);
  EXPECT_EQ(pool->stats().evictions, 0);
  EXPECT_TRUE(pool->Contains(H(0)));
  EXPECT_TRUE(pool->Contains(H(1)));

  ASSERT_TRUE(b.Reserve(*pool, 8));  // the free slot, then the LRU cached one
  EXPECT_EQ(Ids(b), (std::vector<int32_t>{2, 1}));
  EXPECT_EQ(pool->stats().evictions, 1);
  EXPECT_FALSE(pool->Contains(H(1)));
  EXPECT_TRUE(pool->Contains(H(0)));
  b.Release(*pool);
}

TEST(BlockTableTest, TruncateReleasesWholeBlocksPastTheTokens) {
  auto pool = MakePool(8);
  BlockTable t;
  ASSERT_TRUE(t.Reserve(*pool, 15));   // blocks 0..3
  EXPECT_EQ(t.Truncate(*pool, 9), 9);  // keeps 3 blocks (token 8 is in block 2)
  EXPECT_EQ(Ids(t), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(t.n_tokens(), 9);
  EXPECT_EQ(t.capacity_tokens(), 12);
  EXPECT_EQ(pool->num_free(), 5);
  EXPECT_FALSE(pool->IsAllocated(BlockId{3}));
  EXPECT_EQ(t.Truncate(*pool, 8), 8);  // exactly two blocks
  EXPECT_EQ(Ids(t), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(t.Truncate(*pool, 20), 8);  // larger: no change
  EXPECT_EQ(t.n_tokens(), 8);
  EXPECT_EQ(t.Truncate(*pool, 0), 0);
  EXPECT_TRUE(t.blocks().empty());
  EXPECT_EQ(t.capacity_tokens(), 0);
  EXPECT_EQ(pool->num_free(), 8);
  // Regrowing after a truncation takes fresh blocks from the front of the free list:
  // 4..7 were never used, then 3, 2, 1, 0 in the order they were released.
  ASSERT_TRUE(t.Reserve(*pool, 32));
  EXPECT_EQ(Ids(t), (std::vector<int32_t>{4, 5, 6, 7, 3, 2, 1, 0}));
  t.Release(*pool);
}

TEST(BlockTableTest, TruncateKeepsAPrivatePartlyUsedBlockInPlace) {
  auto pool = MakePool(4);
  BlockTable t;
  ASSERT_TRUE(t.Reserve(*pool, 8));
  Fill(*pool, BlockId{1}, 0x11);
  EXPECT_EQ(t.Truncate(*pool, 6), 6);
  EXPECT_EQ(Ids(t), (std::vector<int32_t>{0, 1}));  // no copy
  EXPECT_EQ(pool->num_in_use(), 2);
  EXPECT_TRUE(Filled(*pool, BlockId{1}, 0x11));
  t.Release(*pool);
}

TEST(BlockTableTest, AppendSharedTakesTheCallersReference) {
  auto pool = MakePool(4);
  BlockTable a;
  ASSERT_TRUE(a.Reserve(*pool, 4));
  ASSERT_TRUE(pool->Publish(a.blocks()[0], H(1)));
  BlockTable b;
  const std::optional<BlockId> shared = pool->Acquire(H(1));
  ASSERT_TRUE(shared.has_value());
  b.AppendShared(*pool, *shared);
  EXPECT_EQ(b.n_tokens(), 4);
  EXPECT_EQ(b.capacity_tokens(), 4);
  EXPECT_EQ(Ids(b), Ids(a));
  EXPECT_EQ(pool->refcount(*shared), 2);
  ASSERT_TRUE(b.Reserve(*pool, 6));  // grows with a private block
  EXPECT_EQ(Ids(b), (std::vector<int32_t>{0, 1}));
  a.Release(*pool);
  EXPECT_EQ(pool->refcount(*shared), 1);
  b.Release(*pool);
  EXPECT_EQ(pool->num_in_use(), 0);
  EXPECT_EQ(pool->num_cached(), 1);
}

// Two tables share block 1 (a fork of a block-aligned table); one rewinds into it.
TEST(BlockTableTest, TruncateCopiesASharedPartlyKeptBlock) {
  auto pool = MakePool(4);
  BlockTable a;
  ASSERT_TRUE(a.Reserve(*pool, 8));  // blocks 0, 1
  Fill(*pool, BlockId{0}, 0xA0);
  Fill(*pool, BlockId{1}, 0xA1);
  std::optional<BlockTable> b = a.Fork(*pool);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(pool->refcount(BlockId{1}), 2);

  EXPECT_EQ(b->Truncate(*pool, 6), 6);
  ASSERT_EQ(b->blocks().size(), 2u);
  EXPECT_EQ(b->blocks()[0], BlockId{0});  // the full block stays shared
  const BlockId copy = b->blocks()[1];
  EXPECT_EQ(copy, BlockId{2});
  EXPECT_EQ(pool->refcount(copy), 1);
  EXPECT_EQ(pool->refcount(BlockId{1}), 1);  // a's reference only
  EXPECT_EQ(pool->refcount(BlockId{0}), 2);
  EXPECT_TRUE(Filled(*pool, copy, 0xA1));        // bytes equal
  Fill(*pool, copy, 0xB1);                       // b writes its copy...
  EXPECT_TRUE(Filled(*pool, BlockId{1}, 0xA1));  // ...a's block is untouched
  EXPECT_EQ(Ids(a), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(a.n_tokens(), 8);
  a.Release(*pool);
  b->Release(*pool);
  EXPECT_EQ(pool->num_in_use(), 0);
}

TEST(BlockTableTest, TruncateCopiesAPublishedPartlyKeptBlock) {
  auto pool = MakePool(3);
  BlockTable t;
  ASSERT_TRUE(t.Reserve(*pool, 8));
  Fill(*pool, BlockId{1}, 0x5A);
  ASSERT_TRUE(pool->Publish(BlockId{1}, H(9)));
  EXPECT_EQ(t.Truncate(*pool, 5), 5);
  EXPECT_EQ(Ids(t), (std::vector<int32_t>{0, 2}));
  EXPECT_TRUE(Filled(*pool, BlockId{2}, 0x5A));
  EXPECT_FALSE(pool->is_published(BlockId{2}));
  // The published block is no longer held but stays findable.
  EXPECT_EQ(pool->refcount(BlockId{1}), 0);
  EXPECT_EQ(pool->num_cached(), 1);
  EXPECT_TRUE(pool->Contains(H(9)));
  t.Release(*pool);
}

TEST(BlockTableTest, TruncateWithoutASlotForTheCopyKeepsTheWholeBlocks) {
  auto pool = MakePool(2);
  BlockTable a;
  ASSERT_TRUE(a.Reserve(*pool, 8));  // the whole pool
  std::optional<BlockTable> b = a.Fork(*pool);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(pool->num_free(), 0);
  EXPECT_EQ(b->Truncate(*pool, 7), 4);  // no slot to copy block 1 into
  EXPECT_EQ(Ids(*b), (std::vector<int32_t>{0}));
  EXPECT_EQ(b->n_tokens(), 4);
  EXPECT_EQ(b->capacity_tokens(), 4);
  EXPECT_EQ(pool->refcount(BlockId{1}), 1);  // still a's
  EXPECT_EQ(pool->refcount(BlockId{0}), 2);
  EXPECT_EQ(Ids(a), (std::vector<int32_t>{0, 1}));
  a.Release(*pool);
  b->Release(*pool);
  EXPECT_EQ(pool->num_in_use(), 0);
}

TEST(BlockTableTest, ForkOfAPartlyUsedTableCopiesTheLastBlock) {
  auto pool = MakePool(6);
  BlockTable a;
  ASSERT_TRUE(a.Reserve(*pool, 10));  // blocks 0, 1, 2 (2 partly used)
  Fill(*pool, BlockId{2}, 0x42);
  const int64_t in_use = pool->num_in_use();
  std::optional<BlockTable> b = a.Fork(*pool);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(pool->num_in_use(), in_use + 1);
  EXPECT_EQ(Ids(*b), (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(b->n_tokens(), 10);
  EXPECT_EQ(b->capacity_tokens(), 12);
  EXPECT_EQ(pool->refcount(BlockId{0}), 2);
  EXPECT_EQ(pool->refcount(BlockId{1}), 2);
  EXPECT_EQ(pool->refcount(BlockId{2}), 1);
  EXPECT_EQ(pool->refcount(BlockId{3}), 1);
  EXPECT_TRUE(Filled(*pool, BlockId{3}, 0x42));
  // Both grow independently.
  ASSERT_TRUE(a.Reserve(*pool, 13));
  ASSERT_TRUE(b->Reserve(*pool, 13));
  EXPECT_EQ(Ids(a), (std::vector<int32_t>{0, 1, 2, 4}));
  EXPECT_EQ(Ids(*b), (std::vector<int32_t>{0, 1, 3, 5}));
  a.Release(*pool);
  b->Release(*pool);
  EXPECT_EQ(pool->num_in_use(), 0);
}

TEST(BlockTableTest, ForkOfABlockAlignedTableSharesEverything) {
  auto pool = MakePool(3);
  BlockTable a;
  ASSERT_TRUE(a.Reserve(*pool, 8));
  std::optional<BlockTable> b = a.Fork(*pool);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(pool->num_in_use(), 2);  // no new slot
  EXPECT_EQ(Ids(*b), Ids(a));
  EXPECT_EQ(b->n_tokens(), 8);
  EXPECT_EQ(pool->refcount(BlockId{0}), 2);
  EXPECT_EQ(pool->refcount(BlockId{1}), 2);
  BlockTable empty;
  std::optional<BlockTable> e = empty.Fork(*pool);
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(e->blocks().empty());
  EXPECT_EQ(e->n_tokens(), 0);
  a.Release(*pool);
  b->Release(*pool);
}

TEST(BlockTableTest, ForkWithoutASlotChangesNothing) {
  auto pool = MakePool(2);
  BlockTable a;
  ASSERT_TRUE(a.Reserve(*pool, 6));  // both slots, block 1 partly used
  EXPECT_FALSE(a.Fork(*pool).has_value());
  EXPECT_EQ(pool->refcount(BlockId{0}), 1);
  EXPECT_EQ(pool->refcount(BlockId{1}), 1);
  EXPECT_EQ(a.n_tokens(), 6);
  a.Release(*pool);
}

TEST(BlockTableTest, ReplaceBlockSwapsAndReleasesTheOldOne) {
  auto pool = MakePool(4);
  BlockTable a, b;
  ASSERT_TRUE(a.Reserve(*pool, 4));  // block 0
  ASSERT_TRUE(b.Reserve(*pool, 6));  // blocks 1, 2
  ASSERT_TRUE(pool->Publish(BlockId{0}, H(3)));
  const std::optional<BlockId> existing = pool->Acquire(H(3));
  ASSERT_TRUE(existing.has_value());
  b.ReplaceBlock(*pool, 0, *existing);
  EXPECT_EQ(Ids(b), (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(b.n_tokens(), 6);
  EXPECT_EQ(pool->refcount(BlockId{0}), 2);
  EXPECT_FALSE(pool->IsAllocated(BlockId{1}));
  EXPECT_EQ(pool->Allocate(), BlockId{3});  // never used, ahead of 1 in the free list
  EXPECT_EQ(pool->Allocate(), BlockId{1});
  pool->Release(BlockId{3});
  pool->Release(BlockId{1});
  a.Release(*pool);
  b.Release(*pool);
  EXPECT_EQ(pool->num_in_use(), 0);
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

// Many tables growing, shrinking and releasing at random, without sharing: no slot is in
// two tables, and the pool's free count equals its size minus the blocks the tables hold.
TEST(BlockTableTest, RandomOperationsKeepPrivateBlocksExclusive) {
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
      case 2: {
        const int64_t want = t.n_tokens() == 0 ? 0 : static_cast<int64_t>(rng() % t.n_tokens());
        ASSERT_EQ(t.Truncate(*pool, want), want);  // private blocks: never shortened
        break;
      }
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
        ASSERT_EQ(pool->refcount(id), 1);
      }
      held += static_cast<int64_t>(u.blocks().size());
    }
    ASSERT_EQ(pool->num_free(), pool->num_total() - held);
  }
  for (BlockTable& t : tables) t.Release(*pool);
  EXPECT_EQ(pool->num_free(), 50);
}

TEST(BlockTableDeathTest, MisuseAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto pool = MakePool(4);
  BlockTable t;
  ASSERT_TRUE(t.Reserve(*pool, 6));
  const BlockId spare = *pool->Allocate();
  EXPECT_DEATH(t.AppendShared(*pool, spare), "AppendShared after a partly used block");
  EXPECT_DEATH(t.ReplaceBlock(*pool, 1, spare), "which is partly used");
  EXPECT_DEATH(t.ReplaceBlock(*pool, 2, spare), "ReplaceBlock of block 2 of a table of 2");
  BlockTable u;
  EXPECT_DEATH(u.AppendShared(*pool, BlockId{3}), "which the caller holds no reference to");
  pool->Release(spare);
  t.Release(*pool);
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
