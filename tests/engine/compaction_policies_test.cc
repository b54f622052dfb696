// The score and summarize compaction policies in the Engine (engine/compaction.cc): the kept
// set is what the policy says (the score probe's attention mass recomputed independently;
// the summary the model writes greedily), the moved keys equal keys computed at their new
// positions, the rebuilt history of a summary, a chat session on SmolLM2, and every policy
// through a session ten times the context.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cache/block_pool.h"
#include "cache/block_table.h"
#include "cache/compaction.h"
#include "engine/engine.h"
#include "engine/forward/llama_forward.h"
#include "tests/engine/engine_test_util.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using cache::CompactionOptions;
using cache::CompactionPolicy;
using cache::TokenRange;
using ::testing::HasSubstr;

constexpr int kCtx = 256;

EngineOptions PolicyOptions(CompactionPolicy policy) {
  EngineOptions o;
  o.compaction.policy = policy;
  o.compaction.sink_tokens = 4;
  o.compaction.observe_tokens = 32;
  o.compaction.summary_max_tokens = 12;
  // The test model's tokenizer spends a token per byte: the default prompt would take a
  // third of this context.
  o.compaction.summary_prompt = "Summary:";
  return o;
}

std::vector<TokenId> Without(const std::vector<TokenId>& all, const std::vector<TokenRange>& drop) {
  std::vector<TokenId> out;
  for (int64_t p = 0; p < static_cast<int64_t>(all.size()); ++p) {
    if (cache::MapPosition(drop, p) >= 0) out.push_back(all[static_cast<size_t>(p)]);
  }
  return out;
}

// The attention the last `observe` tokens of `tokens` give each position, computed by a
// forward pass of its own over the whole sequence at once.
std::vector<float> ProbeMass(const Model& model, const std::vector<TokenId>& tokens, int observe) {
  auto fwd = LlamaForward::Create(model, {.threads = testing::TestKernelThreads()});
  EXPECT_TRUE(fwd.ok()) << fwd.status();
  auto pool = cache::BlockPool::Create(
      {.layout = (*fwd)->KvLayoutFor(kernels::DType::kF16), .budget_bytes = 16 << 20});
  EXPECT_TRUE(pool.ok()) << pool.status();
  cache::BlockTable table;
  EXPECT_TRUE(table.Reserve(**pool, static_cast<int64_t>(tokens.size())));
  std::vector<float> mass(tokens.size(), 0.0f);
  const SeqBatchEntry e = {.tokens = tokens, .start_pos = 0, .table = &table};
  EXPECT_TRUE((*fwd)
                  ->ObserveAttention((*pool)->view(), e,
                                     static_cast<int64_t>(tokens.size()) - observe, mass)
                  .ok());
  table.Release(**pool);
  return mass;
}

// The probe's arguments are checked before anything runs.
TEST(CompactionPolicies, ObserveAttentionRefusesBadArguments) {
  auto model = TestModel(Architecture::kLlama, kCtx);
  auto fwd = LlamaForward::Create(*model, {.threads = 1});
  ASSERT_TRUE(fwd.ok()) << fwd.status();
  auto pool = cache::BlockPool::Create(
      {.layout = (*fwd)->KvLayoutFor(kernels::DType::kF16), .budget_bytes = 4 << 20});
  ASSERT_TRUE(pool.ok()) << pool.status();
  cache::BlockTable table;
  ASSERT_TRUE(table.Reserve(**pool, 20));
  const std::vector<TokenId> tokens = testing::SomeTokens(20, kTestModelVocabSize, 3);
  const SeqBatchEntry e = {.tokens = tokens, .start_pos = 0, .table = &table};
  std::vector<float> mass(20, 0.0f);
  const absl::Status past = (*fwd)->ObserveAttention((*pool)->view(), e, 20, mass);
  EXPECT_EQ(past.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(past.message(), HasSubstr("observe_from 20"));
  const absl::Status shortm =
      (*fwd)->ObserveAttention((*pool)->view(), e, 4, std::span(mass).first(19));
  EXPECT_EQ(shortm.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(shortm.message(), HasSubstr("holds 19 positions"));
  EXPECT_TRUE((*fwd)->ObserveAttention((*pool)->view(), e, 4, mass).ok());
  float total = 0.0f;
  for (float m : mass) total += m;
  // 16 observed rows x 4 heads x 2 layers, one unit of attention each.
  EXPECT_NEAR(total, 16 * 4 * 2, 1e-3);
  table.Release(**pool);
}

// Score: the dropped ranges are ScoreCut of the observation window's attention (recomputed
// here independently: the probe recomputes only the window, on top of the session's KV, and
// gets the same bits); the kept tokens' layer-0 keys equal keys computed directly at their new
// positions, values and sinks are the same bits; the blocks are exactly the kept tokens'.
TEST(CompactionPolicies, ScoreDropsWhatTheWindowAttendsLeastAndReRotatesEveryKey) {
  auto model = TestModel(Architecture::kLlama, kCtx);
  auto e = MakeEngine(*model, PolicyOptions(CompactionPolicy::kScore));
  const std::vector<TokenId> all = testing::SomeTokens(200, kTestModelVocabSize, 21);
  const std::string id = SessionWithKv(*e, all);
  auto info = e->Compact("t", id, std::nullopt, 70);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->n_tokens, 70);
  EXPECT_EQ(info->kv_tokens, 70);
  EXPECT_EQ(e->Stats().blocks_in_use, (70 + 15) / 16);
  ASSERT_EQ(info->compaction_log.size(), 1u);
  const cache::CompactionRecord& rec = info->compaction_log[0];
  EXPECT_EQ(rec.policy, "score");
  // The window starts at a block boundary: positions 160.. are recomputed and kept; the
  // queries of the last 32 score the rest.
  auto want = cache::ScoreCut(ProbeMass(*model, all, 32), 4, 200 - 160, 70);
  ASSERT_TRUE(want.ok()) << want.status();
  EXPECT_EQ(rec.dropped, *want);
  EXPECT_GT(rec.dropped.size(), 1u) << "the kept tokens are not one window";
  EXPECT_EQ(info->compacted_tokens, 130);
  const std::vector<TokenId> kept = Without(all, rec.dropped);
  EXPECT_EQ(Tokens(*e, "t", id), kept);

  const std::string direct = ExpectKeysAtTheirNewPositions(*e, *model, id, 70, 4);
  EXPECT_TRUE(e->CheckInvariants().ok());
  // Too little room for the window and the sinks: a clear error, nothing changed.
  auto small = e->Compact("t", direct, std::nullopt, 20);
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(small.status().message(), HasSubstr("observation window"));
  EXPECT_EQ(Info(*e, "t", direct).n_tokens, 70);
}

// At a turn's compaction the observation window is the end of the new turn (its KV not
// computed yet): the question picks what is kept, as in SnapKV.
TEST(CompactionPolicies, ScoreAtATurnObservesTheNewTurn) {
  auto model = TestModel(Architecture::kLlama, kCtx);
  auto e = MakeEngine(*model);
  const std::vector<TokenId> all = testing::SomeTokens(240, kTestModelVocabSize, 41);
  const std::string id = SessionWithKv(*e, std::vector<TokenId>(all.begin(), all.begin() + 200));
  TurnParams p = TokenTurn(std::vector<TokenId>(all.begin() + 200, all.end()), 2);
  p.compaction = CompactionOptions{.policy = CompactionPolicy::kScore,
                                   .sink_tokens = 4,
                                   .trigger_tokens = 100,
                                   .target_fraction = 0.5,
                                   .observe_tokens = 32};
  const TurnResult r = Await(e->Continue("t", id, p));
  ASSERT_TRUE(r.status.ok()) << r.status;
  // keep: the policy's floor, 4 sinks + 40 new + 32 observed + a block + 8 lagging = 100;
  // the probe starts at the KV's last block boundary (192) and observes tokens 208..239.
  const SessionInfo info = Info(*e, "t", id);
  ASSERT_EQ(info.compaction_log.size(), 1u);
  auto want = cache::ScoreCut(ProbeMass(*model, all, 32), 4, 240 - 192, 100);
  ASSERT_TRUE(want.ok()) << want.status();
  EXPECT_EQ(info.compaction_log[0].dropped, *want);
  EXPECT_EQ(r.usage.compacted_tokens, 140);
  std::vector<TokenId> kept = Without(all, *want);
  kept.insert(kept.end(), r.ids.begin(), r.ids.end());
  EXPECT_EQ(Tokens(*e, "t", id), kept);
  EXPECT_TRUE(e->CheckInvariants().ok());
}

// Summarize on a raw-token session: the sinks stay, the oldest tokens up to the cut become
// the framed summary — the model's greedy continuation of them after the instruction, as a
// stateless request computes it — and the recent tokens follow; their KV is computed again
// by the next turn.
TEST(CompactionPolicies, SummarizeRebuildsSinksSummaryAndRecentTokens) {
  auto model = TestModel(Architecture::kLlama, kCtx);
  const EngineOptions o = PolicyOptions(CompactionPolicy::kSummarize);
  auto e = MakeEngine(*model, o);
  const std::vector<TokenId> all = testing::SomeTokens(200, kTestModelVocabSize, 31);
  const std::string id = SessionWithKv(*e, all);
  auto info = e->Compact("t", id, std::nullopt, 120);
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_EQ(info->compaction_log.size(), 1u);
  const cache::CompactionRecord& rec = info->compaction_log[0];
  EXPECT_EQ(rec.policy, "summarize");
  // keep 120 = 4 sinks + the summary's room (12 tokens, the framing of an empty summary and
  // 4 to spare) + the most recent tokens.
  const EncodeOptions raw = {.add_bos = false, .parse_special = false};
  const auto framing = static_cast<int64_t>(
      e->tokenizer().Encode("Summary of the earlier conversation: \n\n", raw).size());
  const int64_t cut = 200 - (120 - 4 - (12 + framing + 4));
  EXPECT_EQ(rec.summarized, (std::vector<TokenRange>{{4, cut}}));
  EXPECT_TRUE(rec.dropped.empty());

  std::vector<TokenId> ask(all.begin(), all.begin() + cut);
  const std::vector<TokenId> instruction =
      e->tokenizer().Encode(absl::StrCat("\n\n", o.compaction.summary_prompt, "\n"), raw);
  ask.insert(ask.end(), instruction.begin(), instruction.end());
  const TurnResult greedy = Await(e->Generate("u", TokenTurn(ask, 12)));
  ASSERT_TRUE(greedy.status.ok()) << greedy.status;
  // The greedy text, or its beginning when the framed text took more than its room.
  EXPECT_TRUE(absl::StartsWith(absl::StripAsciiWhitespace(greedy.text), rec.summary))
      << rec.summary << " vs " << greedy.text;

  std::vector<TokenId> want(all.begin(), all.begin() + 4);
  const std::vector<TokenId> framed = e->tokenizer().Encode(
      absl::StrCat("Summary of the earlier conversation: ", rec.summary, "\n\n"), raw);
  want.insert(want.end(), framed.begin(), framed.end());
  want.insert(want.end(), all.begin() + cut, all.end());
  EXPECT_EQ(Tokens(*e, "t", id), want);
  EXPECT_EQ(info->n_tokens, static_cast<int64_t>(want.size()));
  EXPECT_LE(info->n_tokens, 120);
  EXPECT_EQ(rec.position_shift, static_cast<int64_t>(framed.size()) - (cut - 4));
  EXPECT_EQ(info->kv_tokens, 4);
  EXPECT_EQ(info->compacted_tokens, cut - 4);

  const TurnResult next =
      Await(e->Continue("t", id, TokenTurn(testing::SomeTokens(10, kTestModelVocabSize, 2), 3)));
  ASSERT_TRUE(next.status.ok()) << next.status;
  EXPECT_GE(Info(*e, "t", id).kv_tokens, static_cast<int64_t>(want.size()) + 10);
  EXPECT_TRUE(e->CheckInvariants().ok());
}

// Summarize on a chat session of a real model: the system prompt's turn is kept with its KV,
// the oldest exchanges become a system message with the summary, the conversation goes on.
TEST(CompactionPolicies, SummarizeAChatOnSmolLm2) {
  auto model = OpenOrDie(testing::SmolLm2GgufPath());
  EngineOptions o = PolicyOptions(CompactionPolicy::kSummarize);
  o.compaction.summary_max_tokens = 24;
  auto e = MakeEngine(*model, o);
  SessionParams sp;
  sp.system_prompt = "You are a helpful assistant.";
  const std::string id = NewSession(*e, "t", sp);
  const int64_t head = Info(*e, "t", id).n_tokens;
  const std::string kv_head = KvBytes(*e, "t", id);
  for (const char* q : {"My name is Ada and I keep bees.", "I have 12 hives near Lisbon.",
                        "What is a good first tool to buy?", "And the second?"}) {
    const TurnResult r = Await(e->Continue("t", id, UserTurn(q, 12)));
    ASSERT_TRUE(r.status.ok()) << r.status;
  }
  const std::vector<TokenId> before = Tokens(*e, "t", id);
  const auto n = static_cast<int64_t>(before.size());
  auto info = e->Compact("t", id, std::nullopt, n - 20);
  ASSERT_TRUE(info.ok()) << info.status();
  const cache::CompactionRecord& rec = info->compaction_log.at(0);
  ASSERT_EQ(rec.summarized.size(), 1u);
  EXPECT_EQ(rec.summarized[0].begin, head);
  EXPECT_FALSE(rec.summary.empty());
  std::printf("[ SmolLM2 summary: %s ]\n", rec.summary.c_str());
  const std::vector<TokenId> after = Tokens(*e, "t", id);
  EXPECT_TRUE(std::equal(before.begin(), before.begin() + head, after.begin()));
  EXPECT_TRUE(std::equal(before.begin() + rec.summarized[0].end, before.end(),
                         after.end() - (n - rec.summarized[0].end)));
  const std::string text = e->tokenizer().Decode(after, /*render_special=*/true);
  EXPECT_THAT(text, HasSubstr(absl::StrCat("<|im_start|>system\nSummary of the earlier "
                                           "conversation: ",
                                           rec.summary, "<|im_end|>\n")));
  const KvAgreement kept =
      CompareLayerZero(KvBytes(*e, "t", id), kv_head, LayoutOf(*model), head, head);
  EXPECT_EQ(kept.worst_key, 0.0) << "the system prompt's KV is kept";
  EXPECT_EQ(kept.value_mismatches, 0);
  EXPECT_EQ(kept.sink_mismatches, 0);
  const TurnResult r = Await(e->Continue("t", id, UserTurn("Thanks!", 8)));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_FALSE(r.text.empty());
  EXPECT_TRUE(e->CheckInvariants().ok());
}

// A turn whose planned compaction cannot run (here: no room in the context to write the
// summary after the default instruction) ends with that error and changes nothing.
TEST(CompactionPolicies, ATurnWhoseCompactionFailsEndsWithItsError) {
  auto model = TestModel(Architecture::kLlama, kCtx);
  EngineOptions o = PolicyOptions(CompactionPolicy::kSummarize);
  o.compaction.summary_prompt = CompactionOptions::kDefaultSummaryPrompt;
  auto e = MakeEngine(*model, o);
  const std::string id = SessionWithKv(*e, testing::SomeTokens(240, kTestModelVocabSize, 4));
  const std::vector<TokenId> before = Tokens(*e, "t", id);
  const TurnResult r =
      Await(e->Continue("t", id, TokenTurn(testing::SomeTokens(40, kTestModelVocabSize, 5), 4)));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status.message(), HasSubstr("no room in the context to summarize"));
  EXPECT_EQ(Tokens(*e, "t", id), before);
  EXPECT_EQ(Info(*e, "t", id).compactions, 0);
  EXPECT_TRUE(e->CheckInvariants().ok());
}

class EveryPolicy : public ::testing::TestWithParam<CompactionPolicy> {};

// A session fed ten times the context length in turns runs to the end under every policy but
// none: turns that would overflow compact first, the history stays within the context, the
// invariants hold.
TEST_P(EveryPolicy, TenTimesTheContextRunsToTheEnd) {
  auto model = TestModel(Architecture::kLlama, kCtx);
  auto e = MakeEngine(*model, PolicyOptions(GetParam()));
  const std::string id = NewSession(*e, "t");
  int64_t fed = 0;
  int compacting_turns = 0;
  for (uint32_t turn = 0; fed < 10 * kCtx; ++turn) {
    const std::vector<TokenId> delta = testing::SomeTokens(40, kTestModelVocabSize, 100 + turn);
    const TurnResult r = Await(e->Continue("t", id, TokenTurn(delta, 8)));
    ASSERT_TRUE(r.status.ok()) << "turn " << turn << ": " << r.status;
    EXPECT_GE(r.ids.size(), 1u);  // (an end-of-text token may end a reply early)
    compacting_turns += r.usage.compacted_tokens > 0;
    fed += 40 + 8;
    ASSERT_LE(Info(*e, "t", id).n_tokens, kCtx);
  }
  const SessionInfo info = Info(*e, "t", id);
  EXPECT_GE(compacting_turns, 5);
  EXPECT_EQ(info.compactions, compacting_turns);
  EXPECT_EQ(e->Stats().compactions, compacting_turns);
  for (const cache::CompactionRecord& rec : info.compaction_log) {
    EXPECT_EQ(rec.policy, cache::CompactionPolicyName(GetParam()));
  }
  EXPECT_TRUE(e->CheckInvariants().ok());
}

INSTANTIATE_TEST_SUITE_P(Compaction, EveryPolicy,
                         ::testing::Values(CompactionPolicy::kWindow, CompactionPolicy::kScore,
                                           CompactionPolicy::kSummarize),
                         [](const auto& p) {
                           return std::string(cache::CompactionPolicyName(p.param));
                         });

}  // namespace
}  // namespace mnemo::engine
