#include "cache/block_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "cache/block_hash.h"
#include "tests/cache/cache_test_util.h"

namespace mnemo::cache {
namespace {

using testing::MakePool;
using testing::TinyLayout;

// A distinct hash per number (the pool does not care how hashes are made).
BlockHash H(uint64_t n) { return BlockHash{.lo = n, .hi = ~n}; }

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
  EXPECT_EQ(BlockPool::Create({TinyLayout(), 255}).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(BlockPool::Create({TinyLayout(), 0}).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(BlockPoolTest, SizesFollowTheBudget) {
  kernels::KvLayout bf = TinyLayout();
  bf.dtype = kernels::DType::kBF16;
  auto pool = BlockPool::Create({bf, 5 * 256 + 150});  // 5.6 blocks -> 5 slots
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ((*pool)->num_total(), 5);
  EXPECT_EQ((*pool)->num_free(), 5);
  EXPECT_EQ((*pool)->num_in_use(), 0);
  EXPECT_EQ((*pool)->num_cached(), 0);
  EXPECT_EQ((*pool)->block_bytes(), 256);
  const kernels::KvArenaView v = (*pool)->view();
  EXPECT_EQ(v.n_slots, 5);
  EXPECT_EQ(v.layout.block_bytes(), 256);
  EXPECT_EQ(v.layout.dtype, kernels::DType::kBF16);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v.base) % 64, 0u);
}

TEST(BlockPoolTest, AllocatesInOrderThenNulloptAndReusesFreedSlotsFifo) {
  auto pool = MakePool(4);
  for (int32_t i = 0; i < 4; ++i) {
    const std::optional<BlockId> id = pool->Allocate();
    ASSERT_TRUE(id.has_value());
    EXPECT_EQ(id->value, i);
    EXPECT_EQ(pool->refcount(*id), 1);
    EXPECT_FALSE(pool->is_published(*id));
  }
  EXPECT_EQ(pool->num_free(), 0);
  EXPECT_EQ(pool->num_in_use(), 4);
  EXPECT_FALSE(pool->Allocate().has_value());  // full is a normal result
  pool->Release(BlockId{2});
  pool->Release(BlockId{0});
  EXPECT_FALSE(pool->IsAllocated(BlockId{2}));
  EXPECT_EQ(pool->num_free(), 2);
  EXPECT_EQ(pool->num_cached(), 0);         // unpublished: plain free
  EXPECT_EQ(pool->Allocate(), BlockId{2});  // freed longest ago comes back first
  EXPECT_EQ(pool->Allocate(), BlockId{0});
  EXPECT_FALSE(pool->Allocate().has_value());
  EXPECT_EQ(pool->stats().evictions, 0);
}

TEST(BlockPoolTest, IsAllocatedIsFalseForIdsOutsideThePool) {
  auto pool = MakePool(2);
  ASSERT_TRUE(pool->Allocate().has_value());
  EXPECT_TRUE(pool->IsAllocated(BlockId{0}));
  EXPECT_FALSE(pool->IsAllocated(BlockId{1}));
  EXPECT_FALSE(pool->IsAllocated(BlockId{}));
  EXPECT_FALSE(pool->IsAllocated(BlockId{2}));
}

TEST(BlockPoolTest, RefcountTransitions) {
  auto pool = MakePool(3);
  const BlockId a = *pool->Allocate();
  EXPECT_EQ(pool->refcount(a), 1);
  pool->Retain(a);
  pool->Retain(a);
  EXPECT_EQ(pool->refcount(a), 3);
  EXPECT_EQ(pool->num_in_use(), 1);  // one slot, however many references
  pool->Release(a);
  pool->Release(a);
  EXPECT_EQ(pool->refcount(a), 1);
  EXPECT_TRUE(pool->IsAllocated(a));
  EXPECT_EQ(pool->num_free(), 2);
  pool->Release(a);
  EXPECT_EQ(pool->refcount(a), 0);
  EXPECT_FALSE(pool->IsAllocated(a));
  EXPECT_EQ(pool->num_free(), 3);
  EXPECT_EQ(pool->num_cached(), 0);
}

TEST(BlockPoolTest, ReleasedPublishedSlotIsCachedAndAcquireRevivesIt) {
  auto pool = MakePool(3);
  const BlockId a = *pool->Allocate();
  ASSERT_TRUE(pool->Publish(a, H(7)));
  EXPECT_TRUE(pool->is_published(a));
  EXPECT_EQ(pool->hash(a), H(7));
  EXPECT_TRUE(pool->Contains(H(7)));
  pool->Release(a);
  EXPECT_FALSE(pool->IsAllocated(a));
  EXPECT_EQ(pool->num_cached(), 1);
  EXPECT_EQ(pool->num_free(), 3);  // cached slots count as allocatable
  EXPECT_EQ(pool->num_in_use(), 0);
  EXPECT_TRUE(pool->Contains(H(7)));  // still findable

  EXPECT_EQ(pool->Acquire(H(7)), a);
  EXPECT_EQ(pool->refcount(a), 1);
  EXPECT_TRUE(pool->is_published(a));
  EXPECT_EQ(pool->num_cached(), 0);
  EXPECT_EQ(pool->num_in_use(), 1);
  EXPECT_EQ(pool->stats().acquire_hits, 1);
  EXPECT_EQ(pool->stats().acquire_misses, 0);

  EXPECT_EQ(pool->Acquire(H(7)), a);  // in use: one more reference
  EXPECT_EQ(pool->refcount(a), 2);
  EXPECT_FALSE(pool->Acquire(H(8)).has_value());
  EXPECT_EQ(pool->stats().acquire_hits, 2);
  EXPECT_EQ(pool->stats().acquire_misses, 1);
  EXPECT_FALSE(pool->Contains(H(8)));
  EXPECT_EQ(pool->stats().acquire_misses, 1);  // Contains counts nothing
}

TEST(BlockPoolTest, AllocatePrefersFreeSlotsThenEvictsLeastRecentlyReleased) {
  auto pool = MakePool(4);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(pool->Allocate().has_value());
  ASSERT_TRUE(pool->Publish(BlockId{0}, H(0)));
  ASSERT_TRUE(pool->Publish(BlockId{1}, H(1)));
  pool->Release(BlockId{1});  // cached first: least recently released
  pool->Release(BlockId{0});  // cached second
  pool->Release(BlockId{3});  // plain free
  pool->Release(BlockId{2});  // plain free
  EXPECT_EQ(pool->num_cached(), 2);
  EXPECT_EQ(pool->num_free(), 4);

  EXPECT_EQ(pool->Allocate(), BlockId{3});  // free slots first, FIFO
  EXPECT_EQ(pool->Allocate(), BlockId{2});
  EXPECT_EQ(pool->stats().evictions, 0);
  EXPECT_TRUE(pool->Contains(H(1)));
  EXPECT_EQ(pool->Allocate(), BlockId{1});  // then the LRU cached slot
  EXPECT_EQ(pool->stats().evictions, 1);
  EXPECT_FALSE(pool->is_published(BlockId{1}));  // handed out private
  EXPECT_FALSE(pool->Contains(H(1)));
  EXPECT_FALSE(pool->Acquire(H(1)).has_value());  // the evicted hash is gone
  EXPECT_TRUE(pool->Contains(H(0)));
  EXPECT_EQ(pool->num_cached(), 1);
  EXPECT_EQ(pool->Allocate(), BlockId{0});
  EXPECT_EQ(pool->stats().evictions, 2);
  EXPECT_FALSE(pool->Contains(H(0)));
  EXPECT_FALSE(pool->Allocate().has_value());
}

TEST(BlockPoolTest, LruOrderFollowsReleaseTimeAndRevivalResetsIt) {
  auto pool = MakePool(3);
  for (int i = 0; i < 3; ++i) {
    const BlockId id = *pool->Allocate();
    ASSERT_TRUE(pool->Publish(id, H(static_cast<uint64_t>(10 + i))));
  }
  for (int i = 0; i < 3; ++i) pool->Release(BlockId{i});  // LRU: 0, 1, 2
  ASSERT_EQ(pool->Acquire(H(10)), BlockId{0});            // revived, out of the LRU
  pool->Release(BlockId{0});                              // LRU: 1, 2, 0
  EXPECT_EQ(pool->Allocate(), BlockId{1});
  EXPECT_EQ(pool->Allocate(), BlockId{2});
  EXPECT_EQ(pool->Allocate(), BlockId{0});
  EXPECT_EQ(pool->stats().evictions, 3);
}

TEST(BlockPoolTest, PublishConflictChangesNothing) {
  auto pool = MakePool(3);
  const BlockId a = *pool->Allocate();
  const BlockId b = *pool->Allocate();
  ASSERT_TRUE(pool->Publish(a, H(5)));
  EXPECT_FALSE(pool->Publish(b, H(5)));
  EXPECT_EQ(pool->stats().publish_conflicts, 1);
  EXPECT_FALSE(pool->is_published(b));
  EXPECT_EQ(pool->Acquire(H(5)), a);  // still a's
  EXPECT_EQ(pool->refcount(a), 2);
  EXPECT_EQ(pool->refcount(b), 1);
  // The refusal left b unpublished: under a fresh hash it publishes.
  EXPECT_TRUE(pool->Publish(b, H(6)));
  EXPECT_EQ(pool->stats().publish_conflicts, 1);
  EXPECT_EQ(pool->Acquire(H(6)), b);
}

TEST(BlockPoolTest, RefusedPublishLeavesTheSlotToBeFreedPlainly) {
  auto pool = MakePool(2);
  const BlockId a = *pool->Allocate();
  const BlockId b = *pool->Allocate();
  ASSERT_TRUE(pool->Publish(a, H(5)));
  ASSERT_FALSE(pool->Publish(b, H(5)));
  pool->Release(b);  // unpublished: plain free, not cached
  EXPECT_EQ(pool->num_cached(), 0);
  EXPECT_EQ(pool->num_free(), 1);
  pool->Release(a);
  EXPECT_EQ(pool->num_cached(), 1);
  EXPECT_EQ(pool->Allocate(), b);  // the free slot before the cached one
  EXPECT_TRUE(pool->Contains(H(5)));
}

TEST(BlockPoolTest, EvictedSlotCanBePublishedAgainUnderANewHash) {
  auto pool = MakePool(1);
  const BlockId a = *pool->Allocate();
  ASSERT_TRUE(pool->Publish(a, H(1)));
  pool->Release(a);
  const BlockId again = *pool->Allocate();  // evicts H(1)
  EXPECT_EQ(again, a);
  EXPECT_TRUE(pool->Publish(again, H(2)));
  EXPECT_FALSE(pool->Contains(H(1)));
  EXPECT_TRUE(pool->Contains(H(2)));
  EXPECT_EQ(pool->hash(again), H(2));
}

TEST(BlockPoolTest, SlotsAreDisjointAndMatchTheView) {
  auto pool = MakePool(6);
  std::vector<BlockId> ids;
  while (auto id = pool->Allocate()) ids.push_back(*id);
  ASSERT_EQ(ids.size(), 6u);
  for (BlockId id : ids) {
    EXPECT_EQ(pool->BlockData(id), pool->view().base + id.value * 256);
    std::memset(pool->BlockData(id), 0x10 + id.value, 256);
  }
  for (BlockId id : ids) {
    const uint8_t* p = pool->BlockData(id);
    for (int i = 0; i < 256; ++i) ASSERT_EQ(p[i], 0x10 + id.value) << id.value << " " << i;
  }
}

// Random operations against a model that predicts every slot Allocate hands out: plain
// free slots in FIFO order, then cached ones in LRU order.
TEST(BlockPoolTest, RandomOperationsMatchAModelOfFreeAndLruOrder) {
  constexpr int kSlots = 23;
  auto pool = MakePool(kSlots);
  std::mt19937 rng(11);
  std::vector<int> rc(kSlots, 0);
  std::vector<std::optional<uint64_t>> published(kSlots);
  std::deque<int> free_fifo;
  for (int s = 0; s < kSlots; ++s) free_fifo.push_back(s);
  std::deque<int> lru;
  absl::flat_hash_map<uint64_t, int> index;
  uint64_t next_hash = 0;
  int64_t evictions = 0;
  auto erase = [](std::deque<int>& q, int s) { q.erase(std::find(q.begin(), q.end(), s)); };
  auto random_in_use = [&]() -> int {
    std::vector<int> in_use;
    for (int s = 0; s < kSlots; ++s) {
      if (rc[s] > 0) in_use.push_back(s);
    }
    return in_use.empty() ? -1 : in_use[rng() % in_use.size()];
  };
  for (int step = 0; step < 20000; ++step) {
    switch (rng() % 5) {
      case 0: {
        const std::optional<BlockId> id = pool->Allocate();
        int want = -1;
        if (!free_fifo.empty()) {
          want = free_fifo.front();
          free_fifo.pop_front();
        } else if (!lru.empty()) {
          want = lru.front();
          lru.pop_front();
          index.erase(*published[want]);
          published[want].reset();
          ++evictions;
        }
        ASSERT_EQ(id.has_value() ? id->value : -1, want) << "step " << step;
        if (want >= 0) rc[want] = 1;
        break;
      }
      case 1: {
        const int s = random_in_use();
        if (s < 0) break;
        pool->Retain(BlockId{s});
        ++rc[s];
        break;
      }
      case 2: {
        const int s = random_in_use();
        if (s < 0) break;
        pool->Release(BlockId{s});
        if (--rc[s] == 0) (published[s] ? lru : free_fifo).push_back(s);
        break;
      }
      case 3: {
        const int s = random_in_use();
        if (s < 0 || published[s]) break;
        // Sometimes a hash another slot has: a conflict.
        const uint64_t h = !index.empty() && rng() % 3 == 0 ? index.begin()->first : next_hash++;
        const bool ok = pool->Publish(BlockId{s}, H(h));
        ASSERT_EQ(ok, !index.contains(h));
        if (ok) {
          published[s] = h;
          index[h] = s;
        }
        break;
      }
      default: {
        const uint64_t h = next_hash == 0 ? 0 : rng() % next_hash;
        const std::optional<BlockId> id = pool->Acquire(H(h));
        const auto it = index.find(h);
        ASSERT_EQ(id.has_value() ? id->value : -1, it == index.end() ? -1 : it->second);
        if (id) {
          if (rc[id->value] == 0) erase(lru, id->value);
          ++rc[id->value];
        }
      }
    }
    for (int s = 0; s < kSlots; ++s) ASSERT_EQ(pool->refcount(BlockId{s}), rc[s]) << s;
    ASSERT_EQ(pool->num_cached(), static_cast<int64_t>(lru.size()));
    ASSERT_EQ(pool->num_free(), static_cast<int64_t>(free_fifo.size() + lru.size()));
    ASSERT_EQ(pool->stats().evictions, evictions);
  }
}

TEST(BlockPoolDeathTest, ReleaseOrRetainOfASlotNotInUseAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto pool = MakePool(2);
  const BlockId id = *pool->Allocate();
  pool->Release(id);
  EXPECT_DEATH(pool->Release(id), "Release of block 0, which is not in use");
  EXPECT_DEATH(pool->Release(BlockId{1}), "Release of block 1, which is not in use");
  EXPECT_DEATH(pool->Retain(id), "Retain of block 0, which is not in use");
  // A cached slot is not in use either.
  const BlockId p = *pool->Allocate();
  ASSERT_TRUE(pool->Publish(p, H(1)));
  pool->Release(p);
  EXPECT_DEATH(pool->Release(p), "which is not in use");
}

TEST(BlockPoolDeathTest, ForeignIdAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto pool = MakePool(2);
  EXPECT_DEATH(pool->Release(BlockId{2}), "block 2 outside a pool of 2");
  EXPECT_DEATH(pool->Retain(BlockId{}), "block -1 outside a pool of 2");
  EXPECT_DEATH(pool->refcount(BlockId{5}), "outside a pool of 2");
  EXPECT_DEATH(pool->BlockData(BlockId{-3}), "outside a pool of 2");
}

TEST(BlockPoolDeathTest, BadPublishAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto pool = MakePool(2);
  EXPECT_DEATH(pool->Publish(BlockId{0}, H(1)), "Publish of block 0, which is not in use");
  const BlockId id = *pool->Allocate();
  ASSERT_TRUE(pool->Publish(id, H(1)));
  EXPECT_DEATH(pool->Publish(id, H(2)), "already published");
  EXPECT_DEATH(pool->hash(BlockId{1}), "not published");
}

}  // namespace
}  // namespace mnemo::cache

namespace mnemo::cache {
namespace {

// Host memory that records what the pool asks of it (the arena of a device backend goes
// through the same calls), and can refuse to allocate.
class RecordingMemory final : public ArenaMemory {
 public:
  void* Allocate(size_t bytes) override {
    allocated = bytes;
    return refuse ? nullptr : HostArenaMemory().Allocate(bytes);
  }
  void Free(void* p) override {
    ++frees;
    HostArenaMemory().Free(p);
  }
  void Copy(void* dst, const void* src, size_t n) override {
    ++copies;
    copied_bytes += n;
    HostArenaMemory().Copy(dst, src, n);
  }
  bool host_accessible() const override { return true; }

  bool refuse = false;
  size_t allocated = 0;
  int frees = 0;
  int copies = 0;
  size_t copied_bytes = 0;
};

TEST(BlockPoolMemoryTest, ArenaComesFromItsMemoryAndCopyOnWriteGoesThroughIt) {
  RecordingMemory memory;
  const kernels::KvLayout l = TinyLayout(4);
  {
    auto pool = BlockPool::Create({l, static_cast<uint64_t>(3 * l.block_bytes()), &memory});
    ASSERT_TRUE(pool.ok()) << pool.status();
    EXPECT_EQ(&(*pool)->memory(), &memory);
    EXPECT_EQ(memory.allocated, static_cast<size_t>((3 * l.block_bytes() + 63) / 64 * 64));
    BlockTable t;
    ASSERT_TRUE(t.Reserve(**pool, 6));  // a full block and a partly used one
    std::memset((*pool)->BlockData(t.blocks()[1]), 0x5a, static_cast<size_t>(l.block_bytes()));
    std::optional<BlockTable> fork = t.Fork(**pool);  // copies the partly used block
    ASSERT_TRUE(fork.has_value());
    EXPECT_EQ(memory.copies, 1);
    EXPECT_EQ(memory.copied_bytes, static_cast<size_t>(l.block_bytes()));
    EXPECT_EQ((*pool)->BlockData(fork->blocks()[1])[7], 0x5a);
    fork->Release(**pool);
    t.Release(**pool);
    EXPECT_EQ(memory.frees, 0);
  }
  EXPECT_EQ(memory.frees, 1);
}

TEST(BlockPoolMemoryTest, AnArenaItsMemoryRefusesIsResourceExhausted) {
  RecordingMemory memory;
  memory.refuse = true;
  const kernels::KvLayout l = TinyLayout(4);
  auto pool = BlockPool::Create({l, static_cast<uint64_t>(2 * l.block_bytes()), &memory});
  ASSERT_FALSE(pool.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(pool.status())) << pool.status();
  EXPECT_EQ(memory.frees, 0);
}

TEST(BlockPoolMemoryTest, DefaultIsHostMemory) {
  auto pool = MakePool(2);
  EXPECT_EQ(&pool->memory(), &HostArenaMemory());
  EXPECT_TRUE(pool->memory().host_accessible());
}

}  // namespace
}  // namespace mnemo::cache
