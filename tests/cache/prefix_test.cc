#include "cache/prefix.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <vector>

#include "cache/block_hash.h"
#include "cache/block_pool.h"
#include "cache/block_table.h"
#include "tests/cache/cache_test_util.h"

namespace mnemo::cache {
namespace {

using testing::Ids;
using testing::MakePool;

constexpr int kBt = 4;

std::vector<int32_t> Iota(int n, int32_t first = 100) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

// One sequence: its tokens, table and chain.
struct Seq {
  std::vector<int32_t> tokens;
  BlockTable table;
  std::vector<BlockHash> chain;
};

class PrefixTest : public ::testing::Test {
 protected:
  PrefixNamespace Public() const { return {.root = root_, .salt = kPublicSalt}; }
  PrefixNamespace Tenant(std::string_view name) const {
    return {.root = root_, .salt = TenantSalt(name)};
  }

  // Attaches the cached prefix, then computes (reserves) the rest and publishes it.
  int64_t Run(Seq& s, const PrefixNamespace& ns, std::vector<int32_t> tokens) {
    s.tokens = std::move(tokens);
    const int64_t attached = AttachCachedPrefix(
        *pool_, ns, s.tokens, static_cast<int64_t>(s.tokens.size()), s.table, s.chain);
    EXPECT_TRUE(s.table.Reserve(*pool_, static_cast<int64_t>(s.tokens.size())));
    PublishFullBlocks(*pool_, ns, s.tokens, s.table, s.chain);
    return attached;
  }
  void Release(Seq& s) {
    s.table.Release(*pool_);
    s.chain.clear();
  }

  const BlockHash root_ = ChainRoot("test-model");
  std::unique_ptr<BlockPool> pool_ = MakePool(32, kBt);
};

TEST_F(PrefixTest, PublishedBlocksAreFoundUpToTheFirstDifferentBlock) {
  Seq a;
  EXPECT_EQ(Run(a, Tenant("t"), Iota(14)), 0);  // nothing cached yet
  ASSERT_EQ(a.chain.size(), 3u);                // blocks 0..2 full, block 3 partly used
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(pool_->is_published(a.table.blocks()[i]));
    EXPECT_EQ(pool_->hash(a.table.blocks()[i]), a.chain[i]);
  }
  EXPECT_FALSE(pool_->is_published(a.table.blocks()[3]));
  EXPECT_EQ(a.chain[0], ChainHash(root_, TenantSalt("t"), std::span(a.tokens).first(4)));
  EXPECT_EQ(a.chain[1], ChainHash(a.chain[0], TenantSalt("t"), std::span(a.tokens).subspan(4, 4)));
  const std::vector<int32_t> a_blocks = Ids(a.table);
  Release(a);
  EXPECT_EQ(pool_->num_cached(), 3);

  std::vector<int32_t> other = Iota(14);
  other[9] = 7;  // block 2 differs
  Seq b;
  EXPECT_EQ(Run(b, Tenant("t"), other), 8);
  EXPECT_EQ(Ids(b.table)[0], a_blocks[0]);
  EXPECT_EQ(Ids(b.table)[1], a_blocks[1]);
  EXPECT_NE(Ids(b.table)[2], a_blocks[2]);
  EXPECT_EQ(b.chain.size(), 3u);
  EXPECT_TRUE(
      pool_->Contains(ChainHash(b.chain[1], TenantSalt("t"), std::span(other).subspan(8, 4))));
  Release(b);
}

TEST_F(PrefixTest, AttachTakesOnlyWholeBlocksAndAtMostMaxTokens) {
  Seq a;
  Run(a, Public(), Iota(16));
  ASSERT_EQ(a.chain.size(), 4u);
  const std::vector<int32_t> tokens = Iota(16);
  for (int64_t max_tokens : {0, 3, 4, 7, 8, 15, 16, 100}) {
    Seq b;
    const int64_t got = AttachCachedPrefix(*pool_, Public(), tokens, max_tokens, b.table, b.chain);
    EXPECT_EQ(got, std::min<int64_t>(max_tokens, 16) / kBt * kBt) << max_tokens;
    EXPECT_EQ(b.table.n_tokens(), got);
    EXPECT_EQ(static_cast<int64_t>(b.chain.size()), got / kBt);
    for (size_t i = 0; i < b.chain.size(); ++i) EXPECT_EQ(b.chain[i], a.chain[i]);
    Release(b);
  }
  // Tokens that end inside block 2: only blocks 0 and 1.
  Seq c;
  EXPECT_EQ(AttachCachedPrefix(*pool_, Public(), Iota(11), 100, c.table, c.chain), 8);
  EXPECT_EQ(pool_->refcount(a.table.blocks()[0]), 2);
  EXPECT_EQ(pool_->refcount(a.table.blocks()[2]), 1);
  Release(c);
  Release(a);
}

TEST_F(PrefixTest, AttachStopsAtTheFirstMissEvenIfLaterBlocksAreCached) {
  pool_ = MakePool(3, kBt);
  Seq a;
  Run(a, Public(), Iota(12));  // slots 0, 1, 2
  const std::vector<BlockHash> chain = a.chain;
  Release(a);  // released tail first: LRU 2, 1, 0
  ASSERT_EQ(pool_->Acquire(chain[2]), BlockId{2});
  pool_->Release(BlockId{2});                // LRU 1, 0, 2
  ASSERT_EQ(pool_->Allocate(), BlockId{1});  // evicts block 1 of the chain
  pool_->Release(BlockId{1});
  ASSERT_TRUE(pool_->Contains(chain[2]));

  Seq b;
  const int64_t misses = pool_->stats().acquire_misses;
  EXPECT_EQ(AttachCachedPrefix(*pool_, Public(), Iota(12), 12, b.table, b.chain), 4);
  EXPECT_EQ(Ids(b.table), (std::vector<int32_t>{0}));
  EXPECT_EQ(pool_->stats().acquire_misses, misses + 1);  // one lookup for block 1, then stop
  EXPECT_EQ(pool_->refcount(BlockId{2}), 0);             // block 2 was not taken
  Release(b);
}

TEST_F(PrefixTest, TenantsNeverFindEachOthersBlocksButBothFindPublicOnes) {
  Seq a;
  Run(a, Tenant("alice"), Iota(8, 0));
  Seq b;
  EXPECT_EQ(Run(b, Tenant("bob"), Iota(8, 0)), 0);  // same tokens, other tenant: a miss
  EXPECT_NE(Ids(a.table), Ids(b.table));
  EXPECT_NE(a.chain[0], b.chain[0]);
  EXPECT_EQ(pool_->refcount(a.table.blocks()[0]), 1);
  Seq a2;
  EXPECT_EQ(Run(a2, Tenant("alice"), Iota(8, 0)), 8);  // alice finds her own
  EXPECT_EQ(Ids(a2.table), Ids(a.table));

  // The operator publishes a system prompt; both tenants find it and continue it in their
  // own namespaces.
  Seq sys;
  Run(sys, Public(), Iota(8, 500));
  std::vector<int32_t> convo = Iota(8, 500);
  for (int32_t t : {1, 2, 3, 4}) convo.push_back(t);
  Seq alice;
  EXPECT_EQ(Run(alice, Tenant("alice"), convo), 8);
  EXPECT_EQ(Ids(alice.table)[0], Ids(sys.table)[0]);
  EXPECT_EQ(Ids(alice.table)[1], Ids(sys.table)[1]);
  EXPECT_EQ(alice.chain[0], sys.chain[0]);
  EXPECT_EQ(alice.chain[2], ChainHash(sys.chain[1], TenantSalt("alice"), std::span(convo).last(4)));
  EXPECT_TRUE(pool_->is_published(alice.table.blocks()[2]));

  Seq bob;
  EXPECT_EQ(Run(bob, Tenant("bob"), convo), 8);  // the public part, not alice's block 2
  EXPECT_NE(Ids(bob.table)[2], Ids(alice.table)[2]);
  Seq alice2;
  EXPECT_EQ(Run(alice2, Tenant("alice"), convo), 12);  // public blocks, then her own
  EXPECT_EQ(Ids(alice2.table), Ids(alice.table));
  EXPECT_EQ(pool_->refcount(alice.table.blocks()[0]), 4);  // sys, alice, bob, alice2
  for (Seq* s : {&a, &b, &a2, &sys, &alice, &bob, &alice2}) Release(*s);
  EXPECT_EQ(pool_->num_in_use(), 0);
}

TEST_F(PrefixTest, WithoutSearchPublicATenantIgnoresPublicBlocks) {
  Seq sys;
  Run(sys, Public(), Iota(8));
  PrefixNamespace ns = Tenant("t");
  ns.search_public = false;
  Seq s;
  EXPECT_EQ(Run(s, ns, Iota(8)), 0);
  EXPECT_NE(Ids(s.table), Ids(sys.table));
  Release(s);
  Release(sys);
}

TEST_F(PrefixTest, PublishFullBlocksDeduplicatesAgainstTheExistingSlot) {
  Seq a, b;
  Run(a, Tenant("t"), Iota(10));  // blocks 0, 1 published, 2 partly used
  ASSERT_TRUE(b.table.Reserve(*pool_, 10));
  b.tokens = Iota(10);
  EXPECT_EQ(Ids(b.table), (std::vector<int32_t>{3, 4, 5}));  // computed privately
  const int64_t free_before = pool_->num_free();
  PublishFullBlocks(*pool_, Tenant("t"), b.tokens, b.table, b.chain);
  EXPECT_EQ(Ids(b.table), (std::vector<int32_t>{0, 1, 5}));
  EXPECT_EQ(b.chain, a.chain);
  EXPECT_EQ(pool_->refcount(BlockId{0}), 2);
  EXPECT_EQ(pool_->refcount(BlockId{1}), 2);
  EXPECT_FALSE(pool_->IsAllocated(BlockId{3}));  // the duplicates are free, not cached
  EXPECT_FALSE(pool_->IsAllocated(BlockId{4}));
  EXPECT_EQ(pool_->num_free(), free_before + 2);
  EXPECT_EQ(pool_->num_cached(), 0);
  EXPECT_EQ(pool_->stats().publish_conflicts, 2);
  EXPECT_FALSE(pool_->is_published(BlockId{5}));
  Release(a);
  Release(b);
}

TEST_F(PrefixTest, PublishFullBlocksIsIncremental) {
  Seq s;
  s.tokens = Iota(20);
  ASSERT_TRUE(s.table.Reserve(*pool_, 6));
  PublishFullBlocks(*pool_, Public(), s.tokens, s.table, s.chain);
  ASSERT_EQ(s.chain.size(), 1u);
  const BlockHash first = s.chain[0];
  ASSERT_TRUE(s.table.Reserve(*pool_, 13));
  PublishFullBlocks(*pool_, Public(), s.tokens, s.table, s.chain);
  ASSERT_EQ(s.chain.size(), 3u);
  EXPECT_EQ(s.chain[0], first);
  EXPECT_EQ(s.chain[2], ChainHash(s.chain[1], kPublicSalt, std::span(s.tokens).subspan(8, 4)));
  EXPECT_EQ(pool_->hash(s.table.blocks()[2]), s.chain[2]);
  EXPECT_FALSE(pool_->is_published(s.table.blocks()[3]));
  PublishFullBlocks(*pool_, Public(), s.tokens, s.table, s.chain);  // nothing new
  EXPECT_EQ(s.chain.size(), 3u);
  Release(s);
}

TEST_F(PrefixTest, SharedBlocksAreOnlyHashed) {
  Seq a;
  a.tokens = Iota(8);
  ASSERT_TRUE(a.table.Reserve(*pool_, 8));
  std::optional<BlockTable> fork = a.table.Fork(*pool_);
  ASSERT_TRUE(fork.has_value());
  PublishFullBlocks(*pool_, Public(), a.tokens, a.table, a.chain);
  ASSERT_EQ(a.chain.size(), 2u);
  EXPECT_EQ(a.chain[0], ChainHash(root_, kPublicSalt, std::span(a.tokens).first(4)));
  EXPECT_FALSE(pool_->is_published(a.table.blocks()[0]));  // refcount 2: not private
  EXPECT_FALSE(pool_->Contains(a.chain[0]));
  fork->Release(*pool_);
  Release(a);
}

TEST_F(PrefixTest, AnAlreadyPublishedBlockKeepsItsHashInTheChain) {
  Seq a;
  Run(a, Tenant("x"), Iota(8));
  Seq b;
  b.tokens = a.tokens;
  b.table = *a.table.Fork(*pool_);  // shares both published blocks, no chain yet
  PublishFullBlocks(*pool_, Tenant("y"), b.tokens, b.table, b.chain);
  EXPECT_EQ(b.chain, a.chain);  // the published hashes, not tenant y's
  EXPECT_EQ(Ids(b.table), Ids(a.table));
  Release(a);
  Release(b);
}

}  // namespace
}  // namespace mnemo::cache
