// The Engine: stateful turns equal their from-scratch recomputation, fork/rewind/delete/TTL
// and cancellation keep exact block accounting, prefix sharing respects tenants, the
// scheduler's priority, fairness and preemption, and clear errors without state changes.
#include "engine/engine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/generate.h"
#include "engine/model/model.h"
#include "engine/model/test_model.h"
#include "tests/engine/engine_test_util.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using ::testing::HasSubstr;

// Ten chat turns on one session; each reply equals a from-scratch generation over the
// session's whole history, while the turn computes only its new tokens.
void CheckTenTurns(const Model& model, int max_tokens) {
  auto e = MakeEngine(model);
  ASSERT_NE(e, nullptr);
  const std::string id = NewSession(*e, "t", {.system_prompt = "You answer briefly."});
  int64_t prev_len = static_cast<int64_t>(Tokens(*e, "t", id).size());
  for (int turn = 0; turn < 10; ++turn) {
    const TurnResult r = Await(
        e->Continue("t", id, UserTurn(absl::StrCat("Question ", turn, ": why?"), max_tokens)));
    ASSERT_TRUE(r.status.ok()) << r.status;
    const std::vector<TokenId> history = Tokens(*e, "t", id);
    ASSERT_GE(static_cast<int64_t>(history.size()), r.usage.prompt_tokens);
    const std::vector<TokenId> prompt(history.begin(), history.begin() + r.usage.prompt_tokens);
    EXPECT_EQ(r.ids, FromScratch(model, prompt, max_tokens)) << "turn " << turn;
    // Only the new tokens were computed: at most the lag of the previous turn (its last
    // sampled token and the template's end-of-turn text) on top of this turn's delta.
    const int64_t computed = r.usage.prompt_tokens - r.usage.cached_tokens;
    EXPECT_LE(computed, r.usage.prompt_tokens - prev_len + 3) << "turn " << turn;
    EXPECT_GT(r.usage.cached_tokens, 0) << "turn " << turn;
    EXPECT_EQ(r.turn, turn + 1);  // turn 0 is the system prompt
    prev_len = static_cast<int64_t>(history.size());
  }
  EXPECT_TRUE(e->CheckInvariants().ok()) << e->CheckInvariants();
}

class EngineArchTest : public ::testing::TestWithParam<Architecture> {};

TEST_P(EngineArchTest, TenTurnsEqualFromScratch) {
  auto model = TestModel(GetParam());
  ASSERT_NE(model, nullptr);
  CheckTenTurns(*model, 6);
}

INSTANTIATE_TEST_SUITE_P(Archs, EngineArchTest,
                         ::testing::Values(Architecture::kLlama, Architecture::kMistral,
                                           Architecture::kQwen2, Architecture::kQwen3),
                         [](const auto& p) { return std::string(ArchName(p.param)); });

TEST(Engine, SmolLm2TenTurnsEqualFromScratch) {
  MNEMO_REQUIRE_FILE(testing::SmolLm2GgufPath());
  auto model = OpenOrDie(testing::SmolLm2GgufPath());
  CheckTenTurns(*model, 12);
}

// stories260K has no chat template: raw-token turns.
TEST(Engine, Stories260KRawTokenTurnsEqualFromScratch) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  auto model = OpenOrDie(testing::StoriesGgufPath());
  auto e = MakeEngine(*model);
  const std::string id = NewSession(*e, "t");
  const Tokenizer& tok = e->tokenizer();
  const char* kTexts[] = {"Once upon a time", " Then",   " The dog", " She said",
                          " One day",         " They",   " The sun", " He ran",
                          " At night",        " The end"};
  for (int turn = 0; turn < 10; ++turn) {
    std::vector<TokenId> ids = tok.Encode(kTexts[turn], {.add_bos = turn == 0});
    const TurnResult r = Await(e->Continue("t", id, TokenTurn(ids, 8)));
    ASSERT_TRUE(r.status.ok()) << r.status;
    const std::vector<TokenId> history = Tokens(*e, "t", id);
    const std::vector<TokenId> prompt(history.begin(), history.begin() + r.usage.prompt_tokens);
    EXPECT_EQ(r.ids, FromScratch(*model, prompt, 8)) << "turn " << turn;
    // A raw turn leaves the history as the model produced it: prompt + reply.
    EXPECT_EQ(history.size(), prompt.size() + r.ids.size());
    if (turn > 0) {
      EXPECT_EQ(r.usage.cached_tokens,
                r.usage.prompt_tokens - 1 - static_cast<int64_t>(ids.size()));
    }
  }
}

TEST(Engine, ForkSharesFullBlocksAndBranchesEqualFromScratch) {
  auto model = TestModel(Architecture::kLlama);
  auto e = MakeEngine(*model);
  const std::string a = NewSession(*e, "t", {.system_prompt = "Be kind."});
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(Await(e->Continue("t", a, UserTurn("Hello there", 7))).status.ok());
  const EngineStats before = e->Stats();
  const std::vector<TokenId> history = Tokens(*e, "t", a);
  auto fork = e->Fork("t", a);
  ASSERT_TRUE(fork.ok()) << fork.status();
  const EngineStats after = e->Stats();
  const auto info = e->GetSession("t", a);
  ASSERT_TRUE(info.ok());
  // Only the partly used last block is copied.
  const int64_t partial = info->kv_tokens % 16 != 0 ? 1 : 0;
  EXPECT_EQ(after.blocks_in_use - before.blocks_in_use, partial);
  EXPECT_EQ(Tokens(*e, "t", fork->id), history);
  EXPECT_EQ(fork->kv_tokens, info->kv_tokens);

  const TurnResult ra = Await(e->Continue("t", a, UserTurn("Tell me about cats", 7)));
  const TurnResult rb = Await(e->Continue("t", fork->id, UserTurn("Tell me about dogs", 7)));
  ASSERT_TRUE(ra.status.ok() && rb.status.ok());
  for (const auto& [sid, r] : {std::pair{a, ra}, std::pair{fork->id, rb}}) {
    const std::vector<TokenId> h = Tokens(*e, "t", sid);
    EXPECT_EQ(r.ids, FromScratch(*model, {h.begin(), h.begin() + r.usage.prompt_tokens}, 7));
    // The branches share the common history.
    EXPECT_TRUE(std::equal(history.begin(), history.end(), h.begin()));
  }
  EXPECT_NE(Tokens(*e, "t", a), Tokens(*e, "t", fork->id));

  // Forking at an earlier turn keeps exactly that prefix of the history.
  auto early = e->Fork("t", a, 2);
  ASSERT_TRUE(early.ok()) << early.status();
  EXPECT_EQ(early->n_turns, 2);
  const std::vector<TokenId> eh = Tokens(*e, "t", early->id);
  EXPECT_TRUE(std::equal(eh.begin(), eh.end(), history.begin()));
  EXPECT_LT(eh.size(), history.size());
  EXPECT_TRUE(e->CheckInvariants().ok()) << e->CheckInvariants();
}

TEST(Engine, RewindDeleteAndTtlReturnEveryBlock) {
  auto model = TestModel(Architecture::kQwen2);
  absl::Time now = absl::FromUnixSeconds(1000);
  std::mutex mu;
  EngineOptions o;
  o.expiry_interval = absl::InfiniteDuration();
  o.clock = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return now;
  };
  auto e = MakeEngine(*model, o);
  const int64_t total = e->Stats().blocks_total;

  const std::string a = NewSession(*e, "t", {.system_prompt = "S"});
  std::vector<std::vector<TokenId>> after_turn;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(Await(e->Continue("t", a, UserTurn(absl::StrCat("turn ", i), 20))).status.ok());
    after_turn.push_back(Tokens(*e, "t", a));
  }
  // Rewind to the state after the second user turn (turns: system, user 0, user 1).
  ASSERT_TRUE(e->Rewind("t", a, 3).ok());
  EXPECT_EQ(Tokens(*e, "t", a), after_turn[1]);
  const TurnResult r = Await(e->Continue("t", a, UserTurn("again", 9)));
  ASSERT_TRUE(r.status.ok());
  const std::vector<TokenId> h = Tokens(*e, "t", a);
  EXPECT_EQ(r.ids, FromScratch(*model, {h.begin(), h.begin() + r.usage.prompt_tokens}, 9));
  EXPECT_THAT(e->Rewind("t", a, 99).message(), HasSubstr("turns must be in [0, 4]"));
  ASSERT_TRUE(e->Rewind("t", a, 0).ok());
  EXPECT_TRUE(Tokens(*e, "t", a).empty());
  EXPECT_EQ(e->GetSession("t", a)->kv_bytes, 0);

  // TTL: the session expires after its idle time, not before.
  const std::string b = NewSession(*e, "t", {.ttl = absl::Seconds(10)});
  ASSERT_TRUE(Await(e->Continue("t", b, UserTurn("hi", 5))).status.ok());
  {
    std::lock_guard<std::mutex> lock(mu);
    now += absl::Seconds(5);
  }
  EXPECT_EQ(e->ExpireSessions(), 0);
  EXPECT_TRUE(e->GetSession("t", b).ok());
  {
    std::lock_guard<std::mutex> lock(mu);
    now += absl::Seconds(6);
  }
  EXPECT_EQ(e->ExpireSessions(), 1);
  EXPECT_EQ(e->GetSession("t", b).status().code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE(e->DeleteSession("t", a).ok());
  EXPECT_EQ(e->DeleteSession("t", a).code(), absl::StatusCode::kNotFound);
  const EngineStats s = e->Stats();
  EXPECT_EQ(s.blocks_in_use, 0);
  EXPECT_EQ(s.blocks_free, total);
  EXPECT_EQ(s.sessions, 0);
  EXPECT_TRUE(e->CheckInvariants().ok());
}

TEST(Engine, CancelRollsTheTurnBackAndFreesItsBlocks) {
  auto model = TestModel(Architecture::kLlama);
  auto e = MakeEngine(*model);
  const std::string a = NewSession(*e, "t");
  ASSERT_TRUE(Await(e->Continue("t", a, UserTurn("first", 5))).status.ok());
  const std::vector<TokenId> before = Tokens(*e, "t", a);
  const int64_t in_use = e->Stats().blocks_in_use;

  TurnParams long_turn = UserTurn("write a long story", 900);
  long_turn.stop.ignore_eos = true;
  auto stream = e->Continue("t", a, long_turn);
  ASSERT_TRUE(stream.ok());
  StreamChunk chunk;
  ASSERT_TRUE((*stream)->Next(&chunk));  // it is generating
  (*stream)->Cancel();
  const TurnResult& r = (*stream)->Wait();
  EXPECT_EQ(r.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(Tokens(*e, "t", a), before);
  EXPECT_EQ(e->GetSession("t", a)->n_turns, 1);
  EXPECT_EQ(e->Stats().blocks_in_use, in_use);

  // A stateless request cancelled while it waits never holds a block.
  e->Pause();
  auto waiting = e->Generate("t", UserTurn("x", 5));
  ASSERT_TRUE(waiting.ok());
  (*waiting)->Cancel();
  e->Resume();
  EXPECT_EQ((*waiting)->Wait().status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(e->Stats().blocks_in_use, in_use);
  EXPECT_TRUE(e->CheckInvariants().ok());
}

TEST(Engine, BadInputIsAClearErrorAndChangesNothing) {
  auto model = TestModel(Architecture::kLlama, /*context_length=*/256);
  auto e = MakeEngine(*model);
  const std::string a = NewSession(*e, "alice");
  ASSERT_TRUE(Await(e->Continue("alice", a, UserTurn("hello", 4))).status.ok());
  const std::vector<TokenId> before = Tokens(*e, "alice", a);

  // Unknown ids and another tenant's session look the same.
  const auto unknown =
      e->Continue("alice", "sess_00000000000000000000000000000000", UserTurn("x", 4));
  const auto foreign = e->Continue("bob", a, UserTurn("x", 4));
  ASSERT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  ASSERT_EQ(foreign.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(foreign.status().message(), HasSubstr("no session"));
  EXPECT_EQ(e->Continue("alice", "garbage", UserTurn("x", 4)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(e->GetMetadata("bob", a).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(e->DeleteSession("bob", a).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(e->ListSessions("bob").empty());

  // Tokens outside the vocabulary, both or neither of messages and tokens, bad sampling.
  const int vocab = e->tokenizer().vocab_size();
  auto bad_token = e->Continue("alice", a, TokenTurn({1, vocab}, 4));
  EXPECT_EQ(bad_token.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_token.status().message(), HasSubstr("outside the vocabulary"));
  TurnParams both = UserTurn("x", 4);
  both.tokens = {1};
  EXPECT_THAT(e->Continue("alice", a, both).status().message(), HasSubstr("exactly one"));
  TurnParams bad_temp = UserTurn("x", 4);
  bad_temp.sampling.temperature = -1.0f;
  EXPECT_EQ(e->Continue("alice", a, bad_temp).status().code(), absl::StatusCode::kInvalidArgument);

  // A turn that would overflow the context.
  auto overflow = e->Continue("alice", a, UserTurn(std::string(400, 'z'), 4));
  EXPECT_EQ(overflow.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(overflow.status().message(), HasSubstr("overflow the context"));

  // A continuation while one is running, when asked not to wait.
  e->Pause();
  auto running = e->Continue("alice", a, UserTurn("slow", 4));
  ASSERT_TRUE(running.ok());
  TurnParams no_wait = UserTurn("second", 4);
  no_wait.wait_if_busy = false;
  auto busy = e->Continue("alice", a, no_wait);
  EXPECT_EQ(busy.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(e->Rewind("alice", a, 0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(e->Fork("alice", a).status().code(), absl::StatusCode::kFailedPrecondition);
  (*running)->Cancel();
  e->Resume();
  EXPECT_EQ((*running)->Wait().status.code(), absl::StatusCode::kCancelled);

  EXPECT_EQ(Tokens(*e, "alice", a), before);
  EXPECT_EQ(e->GetSession("alice", a)->n_turns, 1);
  EXPECT_TRUE(e->CheckInvariants().ok());
}

TEST(Engine, QueuedTurnsOfOneSessionRunInOrder) {
  auto model = TestModel(Architecture::kMistral);
  auto e = MakeEngine(*model);
  const std::string a = NewSession(*e, "t");
  e->Pause();
  std::vector<StreamPtr> streams;
  for (int i = 0; i < 3; ++i) {
    auto s = e->Continue("t", a, UserTurn(absl::StrCat("q", i), 3));
    ASSERT_TRUE(s.ok());
    streams.push_back(*s);
  }
  EXPECT_TRUE(e->GetSession("t", a)->busy);
  e->Resume();
  for (size_t i = 0; i < streams.size(); ++i) {
    const TurnResult& r = streams[i]->Wait();
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.turn, static_cast<int64_t>(i));
  }
  EXPECT_EQ(e->GetSession("t", a)->n_messages, 6);
}

TEST(Engine, PrefixSharingStaysInsideATenantUnlessPublished) {
  auto model = TestModel(Architecture::kQwen3);
  auto e = MakeEngine(*model);
  const std::string system(300, 's');  // many blocks of identical tokens
  const std::vector<ChatMessage> prompt = {{"system", "You are a helpful assistant. " + system},
                                           {"user", "hi"}};
  auto ask = [&](std::string_view tenant) {
    TurnParams p = UserTurn("", 2);
    p.messages = prompt;
    return Await(e->Generate(tenant, p));
  };
  const TurnResult first = ask("alice");
  ASSERT_TRUE(first.status.ok());
  EXPECT_EQ(first.usage.cached_tokens, 0);
  const TurnResult again = ask("alice");
  EXPECT_GE(again.usage.cached_tokens, first.usage.prompt_tokens - 16);
  EXPECT_EQ(again.ids, first.ids);
  const TurnResult bob = ask("bob");
  EXPECT_EQ(bob.usage.cached_tokens, 0);  // never alice's blocks
  EXPECT_EQ(bob.ids, first.ids);

  // A prefix the operator publishes is found by every tenant.
  const std::vector<ChatMessage> shared = {{"system", "Shared rules. " + system}};
  auto published = e->PublishPrefix(shared);
  ASSERT_TRUE(published.ok()) << published.status();
  EXPECT_GT(*published, 0);
  EXPECT_EQ(*published % 16, 0);
  for (const char* tenant : {"carol", "dave"}) {
    TurnParams p = UserTurn("", 2);
    p.messages = {shared[0], {"user", "hello"}};
    const TurnResult r = Await(e->Generate(tenant, p));
    ASSERT_TRUE(r.status.ok());
    EXPECT_EQ(r.usage.cached_tokens, *published) << tenant;
  }
  // Sessions with the same system prompt share its blocks.
  const std::string s1 = NewSession(*e, "erin", {.system_prompt = system});
  const std::string s2 = NewSession(*e, "erin", {.system_prompt = system});
  const TurnResult t1 = Await(e->Continue("erin", s1, UserTurn("a", 2)));
  const TurnResult t2 = Await(e->Continue("erin", s2, UserTurn("a", 2)));
  EXPECT_EQ(t1.ids, t2.ids);
  EXPECT_GT(e->Stats().prefix_hits, 0);

  // With the prefix cache off nothing is reused.
  auto off = MakeEngine(*model, {.prefix_cache = false});
  TurnParams p = UserTurn("", 2);
  p.messages = prompt;
  ASSERT_TRUE(Await(off->Generate("alice", p)).status.ok());
  EXPECT_EQ(Await(off->Generate("alice", p)).usage.cached_tokens, 0);
  EXPECT_TRUE(e->CheckInvariants().ok());
}

TEST(Engine, AdmissionFollowsPriorityThenTenantFairness) {
  auto model = TestModel(Architecture::kLlama);
  auto e = MakeEngine(*model, {.max_seqs = 1});
  e->Pause();
  std::vector<StreamPtr> a;
  for (int i = 0; i < 4; ++i) a.push_back(*e->Generate("a", UserTurn(absl::StrCat("a", i), 3)));
  StreamPtr b = *e->Generate("b", UserTurn("b", 3));
  TurnParams urgent = UserTurn("c", 3);
  urgent.priority = 5;
  StreamPtr c = *e->Generate("c", urgent);
  e->Resume();
  const int64_t ca = c->Wait().admission;
  const int64_t b0 = b->Wait().admission;
  std::vector<int64_t> as;
  for (auto& s : a) as.push_back(s->Wait().admission);
  EXPECT_EQ(ca, 0);     // highest priority first
  EXPECT_EQ(as[0], 1);  // then arrival order among the equally served...
  EXPECT_EQ(b0, 2);     // ...but tenant b goes before a's second request
  EXPECT_EQ(as[1], 3);
  EXPECT_EQ(as[3], 5);
}

TEST(Engine, PreemptionUnderASmallPoolKeepsOutputsExact) {
  auto model = TestModel(Architecture::kQwen2);
  // Blocks for about 1.5 sequences of 48 + 80 tokens: decoding must preempt.
  const int64_t block = [&] {
    auto probe = MakeEngine(*model);
    return probe->block_bytes();
  }();
  auto e = MakeEngine(*model, {.kv_budget_bytes = static_cast<uint64_t>(block) * 12});
  std::vector<std::vector<TokenId>> prompts;
  std::vector<StreamPtr> streams;
  for (int i = 0; i < 3; ++i) {
    std::vector<TokenId> p;
    for (int t = 0; t < 48; ++t) p.push_back(static_cast<TokenId>(32 + (t * 7 + i * 13) % 200));
    TurnParams tp = TokenTurn(p, 80);
    tp.stop.ignore_eos = true;
    prompts.push_back(p);
    streams.push_back(*e->Generate("t", tp));
  }
  StopParams ignore;
  ignore.ignore_eos = true;
  for (int i = 0; i < 3; ++i) {
    const TurnResult& r = streams[static_cast<size_t>(i)]->Wait();
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.ids, FromScratch(*model, prompts[static_cast<size_t>(i)], 80, ignore));
  }
  EXPECT_GT(e->Stats().preemptions, 0);
  EXPECT_EQ(e->Stats().blocks_in_use, 0);

  // A request the whole pool cannot hold fails clearly.
  std::vector<TokenId> huge(300, 40);
  const TurnResult r = Await(e->Generate("t", TokenTurn(huge, 4)));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(r.status.message(), HasSubstr("KV pool cannot hold"));
  EXPECT_TRUE(e->CheckInvariants().ok());
}

TEST(Engine, StreamsDeliverEveryTokenAndTheUsage) {
  auto model = TestModel(Architecture::kLlama);
  auto e = MakeEngine(*model);
  TurnParams p = UserTurn("stream me", 10);
  p.sampling.top_logprobs = 3;
  auto stream = e->Generate("t", p);
  ASSERT_TRUE(stream.ok());
  StreamChunk all;
  StreamChunk c;
  while ((*stream)->Next(&c)) {
    all.ids.insert(all.ids.end(), c.ids.begin(), c.ids.end());
    all.text += c.text;
    all.top_logprobs.insert(all.top_logprobs.end(), c.top_logprobs.begin(), c.top_logprobs.end());
  }
  const TurnResult& r = (*stream)->Wait();
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(all.ids, r.ids);
  EXPECT_EQ(all.text, r.text);
  EXPECT_EQ(all.top_logprobs.size(), r.ids.size());
  EXPECT_EQ(r.usage.completion_tokens, static_cast<int64_t>(r.ids.size()));
  EXPECT_GT(r.usage.prompt_tokens, 0);
  EXPECT_EQ(r.turn, -1);
}

TEST(Engine, MetadataAndListing) {
  auto model = TestModel(Architecture::kLlama);
  auto e = MakeEngine(*model);
  const std::string a = NewSession(*e, "t", {.metadata = std::string("\0blob", 5)});
  const std::string b = NewSession(*e, "t");
  NewSession(*e, "other");
  EXPECT_EQ(*e->GetMetadata("t", a), std::string("\0blob", 5));
  ASSERT_TRUE(e->SetMetadata("t", b, "tool-state").ok());
  EXPECT_EQ(*e->GetMetadata("t", b), "tool-state");
  const std::vector<SessionInfo> list = e->ListSessions("t");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].id, a);
  EXPECT_EQ(list[1].id, b);
  EXPECT_EQ(e->ListSessions("other").size(), 1u);
}

}  // namespace
}  // namespace mnemo::engine
