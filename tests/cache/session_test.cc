#include "cache/session.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cache/prefix.h"
#include "tests/cache/cache_test_util.h"

namespace mnemo::cache {
namespace {

using testing::MakePool;

// An absl::Status message as a std::string (absl::string_view is not std::string_view here).
std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(SessionIdTest, PrintsAndParsesBack) {
  SessionId id;
  for (size_t i = 0; i < id.bytes.size(); ++i) id.bytes[i] = static_cast<uint8_t>(i * 17 + 1);
  EXPECT_EQ(id.ToString(), "sess_0112233445566778899aabbccddeef00");
  EXPECT_EQ(SessionId::Parse(id.ToString()), id);
  for (int i = 0; i < 100; ++i) {
    const SessionId r = SessionId::Random();
    const std::string text = r.ToString();
    ASSERT_EQ(text.size(), 37u);
    EXPECT_EQ(SessionId::Parse(text), r);
  }
}

TEST(SessionIdTest, RandomIdsDiffer) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(SessionId::Random().ToString());
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_NE(SessionId::Random(), SessionId{});
}

TEST(SessionIdTest, ParseRejectsAnythingElse) {
  const std::string good = "sess_0112233445566778899aabbccddeeff0";
  ASSERT_TRUE(SessionId::Parse(good).has_value());
  for (const std::string& bad : std::vector<std::string>{
           std::string(), std::string("sess_"), good.substr(0, 36),  // short
           good + "0",                                               // long
           "sesx_" + good.substr(5),                                 // prefix
           "SESS_" + good.substr(5),                                 // prefix case
           "0112233445566778899aabbccddeeff0",                       // no prefix
           "sess_0112233445566778899aabbccddeeFf0",                  // upper-case digit (and long)
           "sess_0112233445566778899aabbccddeeF0",                   // upper-case digit
           "sess_0112233445566778899aabbccddeeg0",                   // not a digit
           "sess_0112233445566778899aabbccdd eef0",                  // space
           "sess_-112233445566778899aabbccddeeff0",                  // sign
       }) {
    EXPECT_FALSE(SessionId::Parse(bad).has_value()) << bad;
  }
  std::string with_nul = good;
  with_nul[20] = '\0';
  EXPECT_FALSE(SessionId::Parse(with_nul).has_value());
}

class SessionStateTest : public ::testing::Test {
 protected:
  // A session whose history is `n_history` tokens and whose KV covers n_kv of them.
  std::unique_ptr<SessionState> Make(int n_history, int n_kv, std::string tenant = "t") {
    auto s = std::make_unique<SessionState>();
    s->id = SessionId::Random();
    s->tenant = std::move(tenant);
    s->kv.tokens.resize(static_cast<size_t>(n_history));
    std::iota(s->kv.tokens.begin(), s->kv.tokens.end(), 1);
    s->turns.push_back({});
    EXPECT_TRUE(s->kv.table.Reserve(*pool_, n_kv));
    return s;
  }
  void ExpectBroken(const SessionState& s, const std::string& what) {
    const absl::Status st = s.CheckInvariants(*pool_);
    EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
    EXPECT_NE(Message(st).find(what), std::string::npos) << st;
    EXPECT_NE(Message(st).find(s.id.ToString()), std::string::npos) << st;
  }

  std::unique_ptr<BlockPool> pool_ = MakePool(8);
};

TEST_F(SessionStateTest, AHealthySessionPasses) {
  auto s = Make(10, 9);
  s->turns.push_back({.token_start = 6, .message_start = 0});
  s->turns.push_back({.token_start = 10, .message_start = 0});
  PublishFullBlocks(*pool_, {.root = ChainRoot("m")}, s->kv.tokens, s->kv.table, s->kv.chain);
  EXPECT_EQ(s->kv.chain.size(), 2u);
  EXPECT_TRUE(s->CheckInvariants(*pool_).ok()) << s->CheckInvariants(*pool_);
  EXPECT_EQ(s->kv_bytes(*pool_), 3 * 256);
  s->kv.ReleaseKv(*pool_);
  EXPECT_TRUE(s->kv.chain.empty());
  EXPECT_EQ(s->kv.tokens.size(), 10u);  // the history stays
  EXPECT_EQ(s->kv_bytes(*pool_), 0);
  EXPECT_TRUE(s->CheckInvariants(*pool_).ok());
}

TEST_F(SessionStateTest, CatchesBrokenTurnsAndHistory) {
  auto s = Make(6, 8);
  ExpectBroken(*s, "KV of 8 tokens is longer than the history of 6");
  s->kv.tokens.resize(8);
  ASSERT_TRUE(s->CheckInvariants(*pool_).ok());
  s->turns[0].token_start = 1;
  ExpectBroken(*s, "turn 0 starts at token 1, not 0");
  s->turns[0].token_start = 0;
  s->turns.push_back({.token_start = 5});
  s->turns.push_back({.token_start = 3});
  ExpectBroken(*s, "turn 2 (token 3, message 0) starts before turn 1");
  s->turns.back().token_start = 9;
  ExpectBroken(*s, "turn 2 starts at token 9, outside the history of 8 tokens");
  s->turns.back().token_start = 8;
  s->turns.back().message_start = 1;
  ExpectBroken(*s, "turn 2 starts at message 1 of 0");
  s->messages.push_back({.role = "user", .content = "hi"});
  EXPECT_TRUE(s->CheckInvariants(*pool_).ok());
  s->kv.ReleaseKv(*pool_);
}

TEST_F(SessionStateTest, CatchesBrokenKv) {
  auto s = Make(12, 6);  // blocks 0, 1 (1 partly used)
  s->kv.chain.push_back(ChainHash(ChainRoot("m"), kPublicSalt, std::span(s->kv.tokens).first(4)));
  ASSERT_TRUE(s->CheckInvariants(*pool_).ok());

  s->kv.chain.push_back(BlockHash{.lo = 1});
  ExpectBroken(*s, "chain of 2 hashes is longer than the 1 full blocks");
  s->kv.chain.pop_back();

  ASSERT_TRUE(pool_->Publish(BlockId{0}, BlockHash{.lo = 42}));
  ExpectBroken(*s, "block 0 (slot 0) is published as");
  s->kv.chain.clear();  // no chain entry to disagree with
  ASSERT_TRUE(s->CheckInvariants(*pool_).ok());

  pool_->Retain(BlockId{1});  // another holder of the partly used block
  ExpectBroken(*s, "partly used last block (slot 1) is not private: refcount 2");
  pool_->Release(BlockId{1});
  ASSERT_TRUE(s->CheckInvariants(*pool_).ok());
  ASSERT_TRUE(pool_->Publish(BlockId{1}, BlockHash{.lo = 43}));
  ExpectBroken(*s, "partly used last block (slot 1) is not private: refcount 1, published");
  s->kv.ReleaseKv(*pool_);
}

TEST_F(SessionStateTest, CatchesABlockNotInUse) {
  pool_ = MakePool(2);
  auto s = Make(8, 8);  // the whole pool
  pool_->Release(BlockId{1});
  ExpectBroken(*s, "block 1 (slot 1) is not in use");
  ASSERT_EQ(pool_->Allocate(), BlockId{1});  // take it back for the table
  EXPECT_TRUE(s->CheckInvariants(*pool_).ok());
  s->kv.ReleaseKv(*pool_);
}

TEST_F(SessionStateTest, KvSequenceTruncateKeepsChainAndTableInStep) {
  auto s = Make(14, 14);
  const PrefixNamespace ns{.root = ChainRoot("m")};
  PublishFullBlocks(*pool_, ns, s->kv.tokens, s->kv.table, s->kv.chain);
  ASSERT_EQ(s->kv.chain.size(), 3u);
  s->kv.Truncate(*pool_, 9);  // into block 2, published: copied
  EXPECT_EQ(s->kv.tokens.size(), 9u);
  EXPECT_EQ(s->kv.table.n_tokens(), 9);
  EXPECT_EQ(s->kv.chain.size(), 2u);
  EXPECT_TRUE(s->CheckInvariants(*pool_).ok()) << s->CheckInvariants(*pool_);
  s->kv.Truncate(*pool_, 20);  // longer: nothing changes
  EXPECT_EQ(s->kv.tokens.size(), 9u);
  EXPECT_EQ(s->kv.chain.size(), 2u);
  s->kv.Truncate(*pool_, 4);
  EXPECT_EQ(s->kv.chain.size(), 1u);
  EXPECT_EQ(s->kv.table.n_tokens(), 4);
  s->kv.ReleaseKv(*pool_);
}

TEST_F(SessionStateTest, KvSequenceTruncateFollowsATableThatKeptLess) {
  pool_ = MakePool(2);
  auto s = Make(8, 8);
  std::optional<BlockTable> other = s->kv.table.Fork(*pool_);  // shares both blocks
  ASSERT_TRUE(other.has_value());
  PublishFullBlocks(*pool_, {.root = ChainRoot("m")}, s->kv.tokens, s->kv.table, s->kv.chain);
  ASSERT_EQ(s->kv.chain.size(), 2u);
  s->kv.Truncate(*pool_, 6);  // no slot to copy block 1 into: the table keeps 4 tokens
  EXPECT_EQ(s->kv.tokens.size(), 6u);
  EXPECT_EQ(s->kv.table.n_tokens(), 4);
  EXPECT_EQ(s->kv.chain.size(), 1u);
  EXPECT_TRUE(s->CheckInvariants(*pool_).ok()) << s->CheckInvariants(*pool_);
  other->Release(*pool_);
  s->kv.ReleaseKv(*pool_);
}

TEST(SessionStoreTest, LookupsAreTenantScopedAndListsOrderedByCreation) {
  SessionStore store;
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  auto make = [&](std::string tenant, int created_s) {
    auto s = std::make_unique<SessionState>();
    s->id = SessionId::Random();
    s->tenant = std::move(tenant);
    s->created = t0 + absl::Seconds(created_s);
    return s;
  };
  SessionState* a3 = store.Insert(make("a", 3));
  SessionState* a1 = store.Insert(make("a", 1));
  SessionState* b2 = store.Insert(make("b", 2));
  SessionState* a1_too = store.Insert(make("a", 1));  // same time: ordered by id
  EXPECT_EQ(store.size(), 4u);

  EXPECT_EQ(store.Find("a", a3->id), a3);
  EXPECT_EQ(store.Find("b", a3->id), nullptr);  // another tenant's: as if unknown
  EXPECT_EQ(store.Find("a", b2->id), nullptr);
  EXPECT_EQ(store.Find("a", SessionId::Random()), nullptr);

  std::vector<SessionState*> first_two = {a1, a1_too};
  if (a1_too->id.bytes < a1->id.bytes) std::swap(first_two[0], first_two[1]);
  EXPECT_EQ(store.List("a"), (std::vector<SessionState*>{first_two[0], first_two[1], a3}));
  EXPECT_EQ(store.List("b"), (std::vector<SessionState*>{b2}));
  EXPECT_TRUE(store.List("c").empty());
  EXPECT_EQ(store.All(), (std::vector<SessionState*>{first_two[0], first_two[1], b2, a3}));

  const SessionId id = a3->id;
  std::unique_ptr<SessionState> removed = store.Remove(id);
  ASSERT_NE(removed, nullptr);
  EXPECT_EQ(removed->id, id);
  EXPECT_EQ(store.size(), 3u);
  EXPECT_EQ(store.Find("a", id), nullptr);
  EXPECT_EQ(store.Remove(id), nullptr);
}

TEST(CheckRefcountsTest, CatchesAWrongCount) {
  auto pool = MakePool(6);
  BlockTable a;
  ASSERT_TRUE(a.Reserve(*pool, 8));  // 0, 1
  std::optional<BlockTable> b = a.Fork(*pool);
  ASSERT_TRUE(b.has_value());
  const BlockTable* both[] = {&a, &*b};
  EXPECT_TRUE(CheckRefcounts(*pool, both).ok());

  const BlockTable* only_a[] = {&a};  // b's references unaccounted for
  absl::Status st = CheckRefcounts(*pool, only_a);
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(Message(st), "block 0 has refcount 2 but 1 table(s) hold it");

  pool->Retain(BlockId{1});  // a holder that is not a table
  st = CheckRefcounts(*pool, both);
  EXPECT_EQ(Message(st), "block 1 has refcount 3 but 2 table(s) hold it");
  BlockTable pin;  // passed as a table, the extra holder is counted
  pin.AppendShared(*pool, BlockId{0});
  pin.AppendShared(*pool, BlockId{1});  // takes the Retain above
  pool->Retain(BlockId{0});             // ...and one for block 0
  const BlockTable* with_pin[] = {&a, &*b, &pin};
  EXPECT_TRUE(CheckRefcounts(*pool, with_pin).ok()) << CheckRefcounts(*pool, with_pin);

  const BlockId leaked = *pool->Allocate();  // held by nobody
  st = CheckRefcounts(*pool, with_pin);
  EXPECT_EQ(Message(st), "block 2 has refcount 1 but 0 table(s) hold it");
  pool->Release(leaked);

  pin.Release(*pool);
  b->Release(*pool);
  a.Release(*pool);
  EXPECT_TRUE(CheckRefcounts(*pool, {}).ok());
}

TEST(CheckRefcountsTest, CatchesATableHoldingABlockNotInUse) {
  auto pool = MakePool(2);
  BlockTable a;
  ASSERT_TRUE(a.Reserve(*pool, 8));
  pool->Release(BlockId{1});
  const BlockTable* tables[] = {&a};
  EXPECT_EQ(Message(CheckRefcounts(*pool, tables)),
            "block 1 has refcount 0 but 1 table(s) hold it");
  ASSERT_EQ(pool->Allocate(), BlockId{1});
  a.Release(*pool);
}

}  // namespace
}  // namespace mnemo::cache
