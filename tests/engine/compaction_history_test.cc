// Kept pre-compaction states (CompactionOptions::keep_history): a rewind past compactions
// comes back to exactly the state a never-compacted twin has, from the tier the state was
// moved to, across a restart; later kept states are dropped; deleting or forking the session
// and importing it elsewhere leave no dangling state.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cache/compaction.h"
#include "engine/engine.h"
#include "tests/engine/engine_test_util.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using cache::CompactionPolicy;
using ::testing::HasSubstr;

constexpr int kCtx = 256;

EngineOptions KeepOptions(const std::string& state_dir) {
  EngineOptions o;
  o.host_budget_bytes = 64 << 20;
  o.state_dir = state_dir;
  o.fsync = false;
  o.compaction.policy = CompactionPolicy::kWindow;
  o.compaction.trigger_tokens = 120;
  o.compaction.keep_history = true;
  return o;
}

// Turn k's tokens.
std::vector<TokenId> TurnTokens(uint32_t k) {
  return testing::SomeTokens(30, kTestModelVocabSize, 500 + k);
}

// Runs turns [from, to) of the conversation on session `id` (greedy, 2 tokens each).
void RunTurns(Engine& e, const std::string& id, uint32_t from, uint32_t to) {
  for (uint32_t k = from; k < to; ++k) {
    const TurnResult r = Await(e.Continue("t", id, TokenTurn(TurnTokens(k), 2)));
    ASSERT_TRUE(r.status.ok()) << "turn " << k << ": " << r.status;
  }
}

// The KV of a session's tokens (all layers' keys and layer-0 values) equal another's.
void ExpectSameState(Engine& e, const std::string& a, const std::string& b,
                     const kernels::KvLayout& lay) {
  const std::vector<TokenId> ta = Tokens(e, "t", a);
  ASSERT_EQ(ta, Tokens(e, "t", b));
  const SessionInfo ia = Info(e, "t", a);
  ASSERT_EQ(ia.kv_tokens, Info(e, "t", b).kv_tokens);
  const KvAgreement kv =
      CompareLayerZero(KvBytes(e, "t", a), KvBytes(e, "t", b), lay, ia.kv_tokens, ia.kv_tokens);
  EXPECT_EQ(kv.worst_key, 0.0);
  EXPECT_EQ(kv.value_mismatches, 0);
  EXPECT_EQ(kv.sink_mismatches, 0);
}

TEST(CompactionHistory, RewindPastCompactionsComesBackToTheUncompactedState) {
  auto model = TestModel(Architecture::kLlama, kCtx);
  const std::string root = testing::MakeTempDir();
  auto e = MakeEngine(*model, KeepOptions(root + "/state"));
  // A twin with no compaction: the truth for every earlier turn.
  SessionParams plain;
  plain.compaction = cache::CompactionOptions{};
  const std::string twin = NewSession(*e, "t", plain);
  RunTurns(*e, twin, 0, 7);
  const std::string id = NewSession(*e, "t");
  RunTurns(*e, id, 0, 7);
  SessionInfo info = Info(*e, "t", id);
  ASSERT_GE(info.compactions, 2);
  EXPECT_EQ(info.rewind_floor, 0) << "every compaction kept its state";
  std::vector<std::string> kept;
  for (const cache::CompactionRecord& c : info.compaction_log) {
    ASSERT_FALSE(c.kept.empty());
    kept.push_back(c.kept);
  }
  // The kept states are hidden sessions, moved down to disk once written (the move starts
  // when the write ends; MaintainTiers waits for moves in flight).
  for (const std::string& k : kept) ASSERT_TRUE(e->Flush(KeptStateTenant("t"), k).ok());
  e->MaintainTiers();
  for (const std::string& k : kept) {
    auto s = e->GetSession(KeptStateTenant("t"), k);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_NE(s->tier, StorageTier::kDevice);
  }
  EXPECT_TRUE(e->ListSessions("t").size() == 2u);

  // Back past both compactions: the state of the twin at turn 2, and the same next turn.
  ASSERT_TRUE(e->Rewind("t", id, 2).ok());
  ASSERT_TRUE(e->Rewind("t", twin, 2).ok());
  ExpectSameState(*e, id, twin, LayoutOf(*model));
  info = Info(*e, "t", id);
  EXPECT_EQ(info.compactions, 0);
  EXPECT_EQ(info.n_turns, 2);
  for (const std::string& k : kept) {
    EXPECT_EQ(e->GetSession(KeptStateTenant("t"), k).status().code(), absl::StatusCode::kNotFound)
        << "the kept states past the rewind are gone";
  }
  const TurnResult a = Await(e->Continue("t", id, TokenTurn(TurnTokens(2), 4)));
  const TurnResult b = Await(e->Continue("t", twin, TokenTurn(TurnTokens(2), 4)));
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_TRUE(e->CheckInvariants().ok());
}

TEST(CompactionHistory, KeptStatesSurviveARestartAndLeaveWithTheSession) {
  auto model = TestModel(Architecture::kLlama, kCtx);
  const std::string root = testing::MakeTempDir();
  std::string id;
  std::string twin;
  {
    auto e = MakeEngine(*model, KeepOptions(root + "/state"));
    SessionParams plain;
    plain.compaction = cache::CompactionOptions{};
    twin = NewSession(*e, "t", plain);
    RunTurns(*e, twin, 0, 6);
    id = NewSession(*e, "t");
    RunTurns(*e, id, 0, 6);
    ASSERT_GE(Info(*e, "t", id).compactions, 1);
    ASSERT_TRUE(e->Flush("t", id).ok());
    ASSERT_TRUE(e->Flush("t", twin).ok());
    // A fork does not share the kept states: it cannot rewind past the compaction.
    auto fork = e->Fork("t", id);
    ASSERT_TRUE(fork.ok()) << fork.status();
    EXPECT_GT(fork->rewind_floor, 0);
    EXPECT_EQ(e->Rewind("t", fork->id, 1).code(), absl::StatusCode::kFailedPrecondition);
    ASSERT_TRUE(e->DeleteSession("t", fork->id).ok());
    // Exported and imported elsewhere, the kept states stay behind.
    ASSERT_TRUE(e->ExportSession("t", id, root + "/s.mnemo").ok());
  }
  {
    EngineOptions o = KeepOptions(root + "/other");
    auto b = MakeEngine(*model, o);
    auto imported = b->ImportSession("t", root + "/s.mnemo");
    ASSERT_TRUE(imported.ok()) << imported.status();
    EXPECT_GT(imported->rewind_floor, 0);
    for (const cache::CompactionRecord& c : imported->compaction_log) EXPECT_EQ(c.kept, "");
    const absl::Status refused = b->Rewind("t", id, 1);
    EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(refused.message(), HasSubstr("compacted"));
  }
  auto e = MakeEngine(*model, KeepOptions(root + "/state"));
  EXPECT_EQ(Info(*e, "t", id).rewind_floor, 0);
  ASSERT_TRUE(e->Rewind("t", id, 1).ok());
  ASSERT_TRUE(e->Rewind("t", twin, 1).ok());
  ExpectSameState(*e, id, twin, LayoutOf(*model));
  // Deleting the session deletes what it kept: nothing is left but the twin.
  RunTurns(*e, id, 1, 6);
  ASSERT_GE(Info(*e, "t", id).compactions, 1);
  ASSERT_TRUE(e->DeleteSession("t", id).ok());
  ASSERT_TRUE(e->DeleteSession("t", twin).ok());
  EXPECT_EQ(e->Stats().sessions, 0);
  EXPECT_EQ(e->Stats().blocks_in_use, 0);
  EXPECT_TRUE(e->CheckInvariants().ok());
}

}  // namespace
}  // namespace mnemo::engine
