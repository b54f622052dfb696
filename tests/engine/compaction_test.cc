// Context compaction in the Engine (cache/compaction.h, engine/compaction.cc,
// docs/compaction.md): the kept tokens, the re-rotated keys against keys computed directly
// at the new positions, block accounting, triggers, the rewind floor, and compacted sessions
// through fork, the tiers, export/import and a restart.
#include "cache/compaction.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "kernels/attention.h"
#include "kernels/half.h"
#include "tests/engine/engine_test_util.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using cache::CompactionPolicy;
using ::testing::HasSubstr;

constexpr int kCtx = 256;

EngineOptions WindowOptions(EngineOptions o = {}) {
  o.compaction.policy = CompactionPolicy::kWindow;
  o.compaction.sink_tokens = 4;
  o.compaction.target_fraction = 0.5;
  return o;
}

std::vector<TokenId> Window(const std::vector<TokenId>& all, int sinks, int keep) {
  std::vector<TokenId> want(all.begin(), all.begin() + sinks);
  want.insert(want.end(), all.end() - (keep - sinks), all.end());
  return want;
}

// The kept set is exactly sinks + the most recent tokens; layer 0's keys of the moved tokens
// (which depend only on the token and its position) equal the keys computed directly at the
// new positions within f16 rounding; layer 0's values and every layer's sink rows are the
// same bits.
TEST(Compaction, WindowKeepsSinksAndRecentAndReRotatesKeys) {
  auto model = TestModel(Architecture::kLlama, kCtx);
  auto e = MakeEngine(*model, WindowOptions());
  const std::vector<TokenId> all = testing::SomeTokens(200, kTestModelVocabSize, 7);
  const std::string id = SessionWithKv(*e, all);
  auto info = e->Compact("t", id, std::nullopt, 60);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->n_tokens, 60);
  EXPECT_EQ(info->kv_tokens, 60);
  EXPECT_EQ(info->compactions, 1);
  EXPECT_EQ(info->compacted_tokens, 140);
  const std::vector<TokenId> want = Window(all, 4, 60);
  EXPECT_EQ(Tokens(*e, "t", id), want);

  ExpectKeysAtTheirNewPositions(*e, *model, id, 60, 4);
  EXPECT_TRUE(e->CheckInvariants().ok());
}

// After a compaction the session holds exactly ceil(kept / block_tokens) blocks, the old ones
// are released, and deleting it leaves no block in use.
TEST(Compaction, BlocksAreAccountedExactly) {
  auto model = TestModel(Architecture::kLlama, kCtx);
  auto e = MakeEngine(*model, WindowOptions());
  const std::string id = SessionWithKv(*e, testing::SomeTokens(230, kTestModelVocabSize, 3));
  EXPECT_EQ(e->Stats().blocks_in_use, (230 + 15) / 16);
  auto info = e->Compact("t", id, std::nullopt, 70);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(e->Stats().blocks_in_use, (70 + 15) / 16);
  EXPECT_EQ(info->kv_bytes, (70 + 15) / 16 * e->block_bytes());
  EXPECT_TRUE(e->CheckInvariants().ok());
  ASSERT_TRUE(e->DeleteSession("t", id).ok());
  EXPECT_EQ(e->Stats().blocks_in_use, 0);
}

// Policy none: the overflowing turn is refused, saying why, and the session is unchanged.
TEST(Compaction, NoneRefusesTheOverflowingTurn) {
  auto model = TestModel(Architecture::kLlama, kCtx);
  auto e = MakeEngine(*model);
  const std::string id = SessionWithKv(*e, testing::SomeTokens(250, kTestModelVocabSize, 5));
  auto st = e->Continue("t", id, TokenTurn(testing::SomeTokens(10, kTestModelVocabSize, 6), 4));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.status().message(), HasSubstr("compaction policy none"));
  EXPECT_EQ(Info(*e, "t", id).n_tokens, 250);
  EXPECT_EQ(e->Compact("t", id).status().code(), absl::StatusCode::kInvalidArgument);
  // A turn that only computes KV needs no room for a reply: it may fill the context exactly.
  const std::string full = SessionWithKv(*e, testing::SomeTokens(250, kTestModelVocabSize, 5));
  EXPECT_TRUE(
      Await(e->Continue("t", full, TokenTurn(testing::SomeTokens(6, kTestModelVocabSize, 8), 0)))
          .status.ok());
  EXPECT_EQ(Info(*e, "t", full).n_tokens, kCtx);
  // A turn may ask for compaction itself (the server's truncation: "auto").
  TurnParams p = TokenTurn(testing::SomeTokens(10, kTestModelVocabSize, 6), 4);
  p.compaction = cache::CompactionOptions{.policy = CompactionPolicy::kWindow};
  const TurnResult r = Await(e->Continue("t", id, p));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_GT(r.usage.compacted_tokens, 0);
}

// A token trigger below the context compacts to target_fraction of it, and the compaction is
// the rewind floor: earlier turns' state is refused, later ones still rewind.
TEST(Compaction, TokenTriggerAndRewindFloor) {
  auto model = TestModel(Architecture::kLlama, kCtx);
  EngineOptions o = WindowOptions();
  o.compaction.trigger_tokens = 100;
  auto e = MakeEngine(*model, o);
  const std::string id = NewSession(*e, "t");
  int64_t compacted_at = -1;
  for (uint32_t turn = 0; turn < 6; ++turn) {
    const TurnResult r = Await(
        e->Continue("t", id, TokenTurn(testing::SomeTokens(30, kTestModelVocabSize, turn), 2)));
    ASSERT_TRUE(r.status.ok()) << r.status;
    if (r.usage.compacted_tokens > 0 && compacted_at < 0) {
      compacted_at = r.turn;
      EXPECT_LE(Info(*e, "t", id).n_tokens, 50 + 2);  // 0.5 * 100 kept, then the reply
    }
  }
  ASSERT_GE(compacted_at, 1);
  const SessionInfo info = Info(*e, "t", id);
  EXPECT_GE(info.rewind_floor, compacted_at);
  const absl::Status refused = e->Rewind("t", id, info.rewind_floor - 1);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("compacted"));
  const auto fork = e->Fork("t", id, info.rewind_floor - 1);
  EXPECT_EQ(fork.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(fork.status().message(), HasSubstr("compacted"));
  ASSERT_TRUE(e->Fork("t", id, info.rewind_floor).ok());
  ASSERT_TRUE(e->Rewind("t", id, info.rewind_floor).ok());
  EXPECT_TRUE(e->CheckInvariants().ok());
}

// A per-session byte budget: turns that would take the session's KV past it compact it to
// target_fraction of the tokens the budget holds; the KV never exceeds the budget.
TEST(Compaction, ByteBudgetKeepsTheSessionUnderIt) {
  auto model = TestModel(Architecture::kLlama, kCtx);
  auto e = MakeEngine(*model);
  const int64_t budget = 6 * e->block_bytes();  // 96 tokens
  SessionParams sp;
  sp.compaction =
      cache::CompactionOptions{.policy = CompactionPolicy::kWindow, .max_session_bytes = budget};
  const std::string id = NewSession(*e, "t", sp);
  int compacting = 0;
  for (uint32_t turn = 0; turn < 8; ++turn) {
    const TurnResult r = Await(
        e->Continue("t", id, TokenTurn(testing::SomeTokens(20, kTestModelVocabSize, turn), 2)));
    ASSERT_TRUE(r.status.ok()) << r.status;
    compacting += r.usage.compacted_tokens > 0;
    EXPECT_LE(Info(*e, "t", id).kv_bytes, budget) << "turn " << turn;
  }
  EXPECT_GE(compacting, 2);
  EXPECT_EQ(Info(*e, "t", id).compaction_policy, CompactionPolicy::kWindow);
}

// Compacted blocks are never published: a stateless request for the compacted tokens finds
// none of them in the prefix index.
TEST(Compaction, CompactedBlocksAreNeverPublished) {
  auto model = TestModel(Architecture::kLlama, kCtx);
  auto e = MakeEngine(*model, WindowOptions());
  const std::string id = SessionWithKv(*e, testing::SomeTokens(200, kTestModelVocabSize, 9));
  ASSERT_TRUE(e->Compact("t", id, std::nullopt, 64).ok());
  ASSERT_TRUE(
      Await(e->Continue("t", id, TokenTurn(testing::SomeTokens(40, kTestModelVocabSize, 10), 2)))
          .status.ok());
  std::vector<TokenId> tokens = Tokens(*e, "t", id);
  tokens.resize(96);
  TurnParams p = TokenTurn(tokens, 1);
  const TurnResult r = Await(e->Generate("t", p));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.usage.cached_tokens, 0);
}

EngineOptions TierOptions(const std::string& state_dir, CompactionPolicy policy) {
  EngineOptions o;
  o.host_budget_bytes = 64 << 20;
  o.state_dir = state_dir;
  o.fsync = false;
  o = WindowOptions(o);
  o.compaction.policy = policy;
  o.compaction.summary_max_tokens = 12;
  o.compaction.summary_prompt = "Summary:";
  return o;
}

class CompactedSessions : public ::testing::TestWithParam<CompactionPolicy> {};

// A compacted session forks, goes to the host and disk tiers and back, exports and imports,
// and survives a restart: the KV bytes come back identical, the log (a summary's text
// included) is kept, and the next turn is the same everywhere.
TEST_P(CompactedSessions, ForkSpillRestoreExportImportRestart) {
  const CompactionPolicy policy = GetParam();
  auto model = TestModel(Architecture::kLlama, kCtx);
  const std::string root = testing::MakeTempDir();
  const TurnParams next = TokenTurn(testing::SomeTokens(20, kTestModelVocabSize, 77), 6);
  std::string id;
  std::string kv;
  std::vector<TokenId> want;
  std::vector<cache::CompactionRecord> log;
  {
    auto e = MakeEngine(*model, TierOptions(root + "/a", policy));
    id = SessionWithKv(*e, testing::SomeTokens(180, kTestModelVocabSize, 11));
    auto compacted = e->Compact("t", id, std::nullopt, 50);
    ASSERT_TRUE(compacted.ok()) << compacted.status();
    log = compacted->compaction_log;
    kv = KvBytes(*e, "t", id);
    auto fork = e->Fork("t", id);
    ASSERT_TRUE(fork.ok()) << fork.status();
    EXPECT_EQ(fork->compactions, 1);
    EXPECT_EQ(fork->rewind_floor, Info(*e, "t", id).rewind_floor);
    want = Await(e->Continue("t", fork->id, next)).ids;
    ASSERT_EQ(want.size(), 6u);

    ASSERT_TRUE(e->Demote("t", id, StorageTier::kHost).ok());
    EXPECT_EQ(FirstDiff(KvBytes(*e, "t", id), kv), -1) << "host round trip";
    ASSERT_TRUE(e->Demote("t", id, StorageTier::kDisk).ok());
    EXPECT_EQ(FirstDiff(KvBytes(*e, "t", id), kv), -1) << "disk round trip";
    ASSERT_TRUE(e->ExportSession("t", id, root + "/s.mnemo").ok());
    ASSERT_TRUE(e->Flush("t", id).ok());
  }
  {
    auto b = MakeEngine(*model, TierOptions(root + "/b", policy));
    auto imported = b->ImportSession("u", root + "/s.mnemo");
    ASSERT_TRUE(imported.ok()) << imported.status();
    EXPECT_EQ(imported->compaction_log, log);
    EXPECT_EQ(FirstDiff(KvBytes(*b, "u", id), kv), -1) << "export/import";
    EXPECT_EQ(Await(b->Continue("u", id, next)).ids, want);
  }
  auto e = MakeEngine(*model, TierOptions(root + "/a", policy));
  const SessionInfo info = Info(*e, "t", id);
  EXPECT_EQ(info.compaction_log, log);
  EXPECT_EQ(FirstDiff(KvBytes(*e, "t", id), kv), -1) << "restart";
  EXPECT_EQ(Await(e->Continue("t", id, next)).ids, want);
  EXPECT_TRUE(e->CheckInvariants().ok());
}

INSTANTIATE_TEST_SUITE_P(Compaction, CompactedSessions,
                         ::testing::Values(CompactionPolicy::kWindow, CompactionPolicy::kScore,
                                           CompactionPolicy::kSummarize),
                         [](const auto& p) {
                           return std::string(cache::CompactionPolicyName(p.param));
                         });

// A session's own compaction options are durable: after a restart (whose engine default is
// none) the session still compacts by them.
TEST(Compaction, SessionOptionsSurviveARestart) {
  auto model = TestModel(Architecture::kLlama, kCtx);
  const std::string root = testing::MakeTempDir();
  EngineOptions o;
  o.state_dir = root + "/state";
  o.fsync = false;
  SessionParams sp;
  sp.compaction =
      cache::CompactionOptions{.policy = CompactionPolicy::kWindow, .trigger_tokens = 100};
  std::string id;
  {
    auto e = MakeEngine(*model, o);
    id = NewSession(*e, "t", sp);
    ASSERT_TRUE(
        Await(e->Continue("t", id, TokenTurn(testing::SomeTokens(60, kTestModelVocabSize, 1), 0)))
            .status.ok());
    ASSERT_TRUE(e->Flush("t", id).ok());
  }
  auto e = MakeEngine(*model, o);
  EXPECT_EQ(Info(*e, "t", id).compaction_policy, CompactionPolicy::kWindow);
  const TurnResult r =
      Await(e->Continue("t", id, TokenTurn(testing::SomeTokens(60, kTestModelVocabSize, 2), 2)));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_GT(r.usage.compacted_tokens, 0);
}

}  // namespace
}  // namespace mnemo::engine
