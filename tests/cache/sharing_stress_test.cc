// Many sequences sharing one small pool through every path that takes or drops
// references (Reserve, Truncate with copy-on-write, Fork, AttachCachedPrefix,
// PublishFullBlocks with deduplication, Release), checked after every step against a model
// of the expected refcounts, CheckRefcounts and each session's CheckInvariants.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "cache/block_hash.h"
#include "cache/block_pool.h"
#include "cache/block_table.h"
#include "cache/prefix.h"
#include "cache/session.h"
#include "tests/cache/cache_test_util.h"

namespace mnemo::cache {
namespace {

constexpr int kBt = 2;      // tiny blocks over a 3-token alphabet: frequent duplicates
constexpr int kSlots = 20;  // a pool too small for all sequences: evictions, refusals
constexpr int kSeqs = 8;

// What a run exercised, so that the test can insist that every path was taken.
struct Coverage {
  int64_t refusals = 0;       // Reserve refused
  int64_t dedups = 0;         // blocks swapped for an existing slot by PublishFullBlocks
  int64_t cows = 0;           // partly kept blocks copied by Truncate
  int64_t cow_fallbacks = 0;  // ... or dropped for want of a slot
  int64_t forks = 0;
  int64_t attached_tokens = 0;
};

class SharingStress {
 public:
  explicit SharingStress(uint32_t seed) : rng_(seed), pool_(testing::MakePool(kSlots, kBt)) {
    const BlockHash root = ChainRoot("stress-model");
    namespaces_ = {{.root = root, .salt = kPublicSalt},
                   {.root = root, .salt = TenantSalt("a")},
                   {.root = root, .salt = TenantSalt("b")},
                   {.root = root, .salt = TenantSalt("b"), .search_public = false}};
    for (int i = 0; i < kSeqs; ++i) {
      seqs_[i].turns.push_back({});
      ns_of_[i] = i % static_cast<int>(namespaces_.size());
    }
  }

  void Step() {
    const int i = static_cast<int>(rng_() % kSeqs);
    switch (rng_() % 6) {
      case 0:
        Grow(i);
        break;
      case 1:
        Publish(i);
        break;
      case 2:
        Truncate(i);
        break;
      case 3:
        Fork(i, static_cast<int>(rng_() % kSeqs));
        break;
      case 4:
        Attach(i);
        break;
      default:
        if (rng_() % 3 == 0) Release(i);
    }
    Check();
  }

  void ReleaseAll() {
    for (int i = 0; i < kSeqs; ++i) Release(i);
    Check();
  }

  const BlockPool& pool() const { return *pool_; }
  const Coverage& coverage() const { return coverage_; }

 private:
  KvSequence& kv(int i) { return seqs_[i].kv; }
  std::vector<BlockId> Blocks(int i) {
    return {kv(i).table.blocks().begin(), kv(i).table.blocks().end()};
  }
  // The model: a table's holdings changed from `before` to its current blocks.
  void Account(int i, const std::vector<BlockId>& before) {
    for (BlockId id : before) --rc_[id.value];
    for (BlockId id : kv(i).table.blocks()) ++rc_[id.value];
  }
  // A block Allocate just handed out: unheld before, private now.
  void ExpectFresh(BlockId id, const std::vector<int>& rc_before) {
    ASSERT_EQ(rc_before[id.value], 0) << "slot " << id.value << " handed out while held";
    ASSERT_EQ(pool_->refcount(id), 1);
    ASSERT_FALSE(pool_->is_published(id));
  }
  void AppendTokens(int i, int n) {
    for (int k = 0; k < n; ++k) kv(i).tokens.push_back(static_cast<int32_t>(rng_() % 3));
  }

  void Grow(int i) {
    const std::vector<BlockId> before = Blocks(i);
    const std::vector<int> rc_before = rc_;
    const size_t n_before = kv(i).tokens.size();
    // Now and then take every slot left, so that later copies find the pool full.
    const int64_t fill =
        kv(i).table.capacity_tokens() + pool_->num_free() * kBt - static_cast<int64_t>(n_before);
    AppendTokens(
        i, rng_() % 4 == 0 && fill > 0 ? static_cast<int>(fill) : 1 + static_cast<int>(rng_() % 7));
    const int64_t free_before = pool_->num_free();
    if (!kv(i).table.Reserve(*pool_, static_cast<int64_t>(kv(i).tokens.size()))) {
      kv(i).tokens.resize(n_before);
      ASSERT_EQ(Blocks(i), before);
      ASSERT_EQ(pool_->num_free(), free_before);
      ++coverage_.refusals;
      return;
    }
    const std::vector<BlockId> after = Blocks(i);
    ASSERT_TRUE(std::equal(before.begin(), before.end(), after.begin()));
    for (size_t b = before.size(); b < after.size(); ++b) ExpectFresh(after[b], rc_before);
    Account(i, before);
  }

  void Publish(int i) {
    const std::vector<BlockId> before = Blocks(i);
    const size_t chain_before = kv(i).chain.size();
    PublishFullBlocks(*pool_, namespaces_[ns_of_[i]], kv(i).tokens, kv(i).table, kv(i).chain);
    const std::vector<BlockId> after = Blocks(i);
    ASSERT_EQ(kv(i).chain.size(), static_cast<size_t>(kv(i).table.n_tokens() / kBt));
    for (size_t b = 0; b < after.size(); ++b) {
      if (after[b] == before[b]) continue;
      // Only newly hashed blocks are deduplicated, onto the slot published under the hash.
      ASSERT_GE(b, chain_before);
      ASSERT_EQ(pool_->hash(after[b]), kv(i).chain[b]);
      ++coverage_.dedups;
    }
    Account(i, before);
  }

  void Truncate(int i) {
    KvSequence& s = kv(i);
    const std::vector<BlockId> before = Blocks(i);
    const std::vector<int> rc_before = rc_;
    const int64_t want = static_cast<int64_t>(rng_() % (s.tokens.size() + 1));
    const int64_t n_kv = s.table.n_tokens();
    s.Truncate(*pool_, want);
    const std::vector<BlockId> after = Blocks(i);
    ASSERT_EQ(s.tokens.size(), static_cast<size_t>(want));
    const int64_t kept = s.table.n_tokens();
    ASSERT_TRUE(kept == std::min(want, n_kv) || kept == want / kBt * kBt) << kept;
    if (kept < std::min(want, n_kv)) ++coverage_.cow_fallbacks;
    ASSERT_LE(after.size(), before.size());
    // The blocks past the kept ones are released before the copy is allocated, so the copy
    // may reuse one of them.
    std::vector<int> rc_dropped = rc_before;
    for (size_t b = after.size(); b < before.size(); ++b) --rc_dropped[before[b].value];
    for (size_t b = 0; b < after.size(); ++b) {
      if (after[b] == before[b]) continue;
      // Copy-on-write of the kept partly used block only.
      ASSERT_EQ(b + 1, after.size());
      ASSERT_NE(kept % kBt, 0);
      ExpectFresh(after[b], rc_dropped);
      ++coverage_.cows;
    }
    Account(i, before);
  }

  void Fork(int from, int to) {
    if (from == to || !kv(to).table.blocks().empty()) return;
    const std::vector<int> rc_before = rc_;
    std::optional<BlockTable> t = kv(from).table.Fork(*pool_);
    const std::vector<BlockId> src = Blocks(from);
    if (!t) {
      ASSERT_NE(kv(from).table.n_tokens() % kBt, 0);  // only a copy can fail
      ASSERT_EQ(rc_, rc_before);
      return;
    }
    Release(to);
    kv(to).tokens = kv(from).tokens;
    kv(to).chain = kv(from).chain;
    kv(to).table = *std::move(t);
    ns_of_[to] = ns_of_[from];
    const std::vector<BlockId> after = Blocks(to);
    ASSERT_EQ(after.size(), src.size());
    for (size_t b = 0; b < after.size(); ++b) {
      if (after[b] != src[b]) {
        ASSERT_EQ(b + 1, after.size());  // the partly used last block, copied
        ExpectFresh(after[b], rc_before);
      }
    }
    Account(to, {});
    ++coverage_.forks;
  }

  // A fresh sequence: the tokens of another one (or a prefix of them) and a few more, so
  // that prefixes are found.
  void Attach(int i) {
    Release(i);
    const int other = static_cast<int>(rng_() % kSeqs);
    if (other != i) {
      const size_t n = kv(other).tokens.size();
      kv(i).tokens.assign(kv(other).tokens.begin(),
                          kv(other).tokens.begin() + static_cast<std::ptrdiff_t>(rng_() % (n + 1)));
    }
    AppendTokens(i, static_cast<int>(rng_() % 5));
    ns_of_[i] = static_cast<int>(rng_() % namespaces_.size());
    const int64_t max_tokens = static_cast<int64_t>(rng_() % (kv(i).tokens.size() + 1));
    const int64_t got = AttachCachedPrefix(*pool_, namespaces_[ns_of_[i]], kv(i).tokens, max_tokens,
                                           kv(i).table, kv(i).chain);
    ASSERT_LE(got, max_tokens);
    ASSERT_EQ(got % kBt, 0);
    ASSERT_EQ(kv(i).chain.size(), static_cast<size_t>(got / kBt));
    for (size_t b = 0; b < kv(i).chain.size(); ++b) {
      ASSERT_EQ(pool_->hash(kv(i).table.blocks()[b]), kv(i).chain[b]);
    }
    coverage_.attached_tokens += got;
    Account(i, {});
  }

  void Release(int i) {
    const std::vector<BlockId> before = Blocks(i);
    kv(i).ReleaseKv(*pool_);
    kv(i).tokens.clear();
    Account(i, before);
  }

  void Check() {
    int64_t in_use = 0;
    int64_t cached = 0;
    for (int s = 0; s < kSlots; ++s) {
      ASSERT_EQ(pool_->refcount(BlockId{s}), rc_[s]) << "slot " << s;
      if (rc_[s] > 0) ++in_use;
      if (rc_[s] == 0 && pool_->is_published(BlockId{s})) ++cached;
    }
    ASSERT_EQ(pool_->num_in_use(), in_use);
    ASSERT_EQ(pool_->num_cached(), cached);
    std::vector<const BlockTable*> tables;
    for (SessionState& s : seqs_) {
      tables.push_back(&s.kv.table);
      ASSERT_TRUE(s.CheckInvariants(*pool_).ok()) << s.CheckInvariants(*pool_);
    }
    ASSERT_TRUE(CheckRefcounts(*pool_, tables).ok()) << CheckRefcounts(*pool_, tables);
  }

  std::mt19937 rng_;
  std::unique_ptr<BlockPool> pool_;
  std::vector<PrefixNamespace> namespaces_;
  SessionState seqs_[kSeqs];
  int ns_of_[kSeqs] = {};
  std::vector<int> rc_ = std::vector<int>(kSlots, 0);  // the model: references per slot
  Coverage coverage_;
};

TEST(SharingStressTest, RefcountsMatchTheModelAfterEveryStep) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    SharingStress stress(seed);
    for (int step = 0; step < 4000; ++step) {
      ASSERT_NO_FATAL_FAILURE(stress.Step()) << "seed " << seed << " step " << step;
    }
    ASSERT_NO_FATAL_FAILURE(stress.ReleaseAll());
    EXPECT_EQ(stress.pool().num_in_use(), 0);
    EXPECT_EQ(stress.pool().num_free(), kSlots);
    const Coverage& c = stress.coverage();  // every path ran
    EXPECT_GT(c.refusals, 0) << seed;
    EXPECT_GT(c.dedups, 0) << seed;
    EXPECT_GT(c.cows, 0) << seed;
    EXPECT_GT(c.cow_fallbacks, 0) << seed;
    EXPECT_GT(c.forks, 0) << seed;
    EXPECT_GT(c.attached_tokens, 0) << seed;
    EXPECT_GT(stress.pool().stats().evictions, 0) << seed;
  }
}

}  // namespace
}  // namespace mnemo::cache
