// bench/stateful/runner.h: the runner against a scripted driver (errors, counters, open
// loop), the in-process driver in every mode on a random test model (exact reply lengths,
// what each mode computes and reuses, spilling), and the HTTP driver against an in-process
// mnemo server through chat completions, sessions and responses. No test sleeps: the
// workloads have no think times.
#include "bench/stateful/runner.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "engine/model/model.h"
#include "engine/model/test_model.h"
#include "tests/server/server_test_util.h"
#include "tests/test_util.h"

namespace mnemo::bench {
namespace {

// ---- a scripted driver -----------------------------------------------------------------

// Replies with `reply_tokens` tokens, except where told to fail; counts Opens and Ends.
struct Script {
  int status_error_conversation = -1, status_error_turn = -1;  // Turn returns a Status error
  int record_error_conversation = -1, record_error_turn = -1;  // Turn returns error records
  std::mutex mu;
  int opened = 0, ended = 0;
  int64_t counter_calls = 0;
};

class ScriptedClient : public ConversationClient {
 public:
  ScriptedClient(Script& s, const WorkloadConversation& c, int index)
      : s_(s), c_(c), index_(index) {}
  absl::StatusOr<TurnRecord> Turn(int t) override {
    if (index_ == s_.status_error_conversation && t == s_.status_error_turn) {
      return absl::UnavailableError("scripted failure");
    }
    TurnRecord r;
    if (index_ == s_.record_error_conversation && t == s_.record_error_turn) {
      r.error = "HTTP 500: scripted";
      return r;
    }
    r.prompt_tokens = 10 * (t + 1);
    r.generated_tokens = c_.turns[static_cast<size_t>(t)].reply_tokens;
    return r;
  }
  absl::Status End() override {
    std::lock_guard<std::mutex> lock(s_.mu);
    ++s_.ended;
    return absl::OkStatus();
  }

 private:
  Script& s_;
  const WorkloadConversation& c_;
  const int index_;
};

class ScriptedDriver : public Driver {
 public:
  explicit ScriptedDriver(Script& s) : s_(s) {}
  std::string name() const override { return "scripted"; }
  absl::StatusOr<std::unique_ptr<ConversationClient>> Open(const WorkloadConversation& c) override {
    std::lock_guard<std::mutex> lock(s_.mu);
    ++s_.opened;
    return std::unique_ptr<ConversationClient>(
        std::make_unique<ScriptedClient>(s_, c, std::stoi(c.id)));
  }
  // Each call reports 100 more generated tokens and one more spill; nothing else is known.
  ServerCounters Counters() override {
    std::lock_guard<std::mutex> lock(s_.mu);
    ++s_.counter_calls;
    ServerCounters c;
    c.tokens_generated = 100 * s_.counter_calls;
    c.spills_to_host = s_.counter_calls;
    return c;
  }
  std::optional<TierSample> Tiers() override { return TierSample{.device_bytes = 4096}; }

 private:
  Script& s_;
};

// `n` conversations of `turns` turns; conversation ids are their indices.
Workload NumberedWorkload(int n, int turns) {
  Workload w;
  w.name = "numbered";
  for (int i = 0; i < n; ++i) {
    WorkloadConversation c{.id = std::to_string(i), .kind = "chat"};
    c.arrival_seconds = 0.0;
    for (int t = 0; t < turns; ++t) c.turns.push_back({.user = "hi", .reply_tokens = 2 + t});
    w.conversations.push_back(std::move(c));
  }
  return w;
}

TEST(RunnerTest, PlaysEveryTurnAndDiffsTheCounters) {
  for (bool open_loop : {false, true}) {
    SCOPED_TRACE(open_loop ? "open loop" : "closed loop");
    Script s;
    ScriptedDriver d(s);
    const Workload w = NumberedWorkload(5, 3);
    auto run = RunWorkload(d, w, {.concurrency = 2, .open_loop = open_loop, .progress = false});
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->driver, "scripted");
    ASSERT_EQ(run->turns.size(), 15u);
    std::map<std::pair<int, int>, TurnRecord> by_turn;
    for (const TurnRecord& r : run->turns) by_turn[{r.conversation, r.turn}] = r;
    ASSERT_EQ(by_turn.size(), 15u);
    for (const auto& [key, r] : by_turn) {
      EXPECT_EQ(r.generated_tokens, 2 + key.second);
      EXPECT_LE(r.start_seconds, r.end_seconds);
      EXPECT_LE(r.end_seconds, run->wall_seconds);
    }
    // Turns of one conversation are played in order.
    for (int c = 0; c < 5; ++c) {
      for (int t = 0; t + 1 < 3; ++t) {
        const auto this_turn = std::make_pair(c, t), next_turn = std::make_pair(c, t + 1);
        EXPECT_LE(by_turn[this_turn].end_seconds, by_turn[next_turn].start_seconds);
      }
    }
    EXPECT_EQ(s.opened, 5);
    EXPECT_EQ(s.ended, 5);
    EXPECT_EQ(run->counters.tokens_generated, 100);  // end minus start: two calls
    EXPECT_EQ(run->counters.spills_to_host, 1);
    EXPECT_EQ(run->counters.tokens_computed, -1);  // unknown on both ends stays unknown
    EXPECT_EQ(run->counters.busy_seconds, -1);
    ASSERT_GE(run->samples.size(), 2u);  // at the start and at the end at least
    EXPECT_EQ(run->samples.front().device_bytes, 4096);
    EXPECT_LE(run->samples.front().seconds, run->samples.back().seconds);
  }
}

TEST(RunnerTest, TurnErrorEndsOnlyItsConversation) {
  Script s;
  s.record_error_conversation = 1;
  s.record_error_turn = 1;
  ScriptedDriver d(s);
  auto run = RunWorkload(d, NumberedWorkload(3, 3), {.concurrency = 3, .progress = false});
  ASSERT_TRUE(run.ok()) << run.status();
  int failed = 0, of_conversation_1 = 0;
  for (const TurnRecord& r : run->turns) {
    failed += !r.error.empty();
    of_conversation_1 += r.conversation == 1;
  }
  EXPECT_EQ(failed, 1);
  EXPECT_EQ(of_conversation_1, 2);  // turns 0 and 1 (failed); turn 2 never sent
  EXPECT_EQ(run->turns.size(), 8u);
  EXPECT_EQ(s.ended, 3);
}

TEST(RunnerTest, StatusErrorAbortsTheRun) {
  Script s;
  s.status_error_conversation = 0;
  s.status_error_turn = 1;
  ScriptedDriver d(s);
  // One conversation at a time (think_scale > 0; the workload's think times are 0).
  auto run = RunWorkload(d, NumberedWorkload(4, 3),
                         {.concurrency = 1, .think_scale = 1.0, .progress = false});
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(run.status().message().find("scripted failure"), absl::string_view::npos);
  EXPECT_EQ(s.opened, 1);  // one user: nothing after conversation 0 starts
  EXPECT_EQ(s.ended, 1);   // End is still called

  // Interleaved: every conversation is open at once; all that were opened are ended.
  Script s2;
  s2.status_error_conversation = 0;
  s2.status_error_turn = 1;
  ScriptedDriver d2(s2);
  auto run2 = RunWorkload(d2, NumberedWorkload(4, 3), {.concurrency = 1, .progress = false});
  ASSERT_FALSE(run2.ok());
  EXPECT_EQ(run2.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s2.opened, 4);  // every first turn is ready at time 0, before turn 1 of any
  EXPECT_EQ(s2.ended, s2.opened);
}

// Interleaved order: with one user, turns follow the virtual clock, so every conversation's
// first turn (all arriving at 0) comes before any second turn.
TEST(RunnerTest, InterleavedPlaysReadyTurnsFirst) {
  Script s;
  ScriptedDriver d(s);
  auto run = RunWorkload(d, NumberedWorkload(3, 2), {.concurrency = 1, .progress = false});
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->turns.size(), 6u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(run->turns[i].turn, 0) << i;
  for (size_t i = 3; i < 6; ++i) EXPECT_EQ(run->turns[i].turn, 1) << i;
  EXPECT_EQ(s.opened, 3);
  EXPECT_EQ(s.ended, 3);
}

// ---- the engine and HTTP drivers -------------------------------------------------------

constexpr char kSystem[] = "You are a terse assistant. Answer in a few words.";

Workload ChatWorkload() {
  const std::vector<std::vector<std::string>> users = {
      {"What is the capital of France?", "And of Spain?", "Which one is larger?"},
      {"Name a prime number.", "Name a bigger one.", "Is their sum even?"},
      {"Tell me a colour.", "Now a fruit of that colour.", "Where does it grow?"}};
  Workload w;
  w.name = "test";
  for (size_t i = 0; i < users.size(); ++i) {
    WorkloadConversation c{.id = "chat-" + std::to_string(i), .kind = "chat", .system = kSystem};
    c.shared_system = true;
    for (size_t t = 0; t < users[i].size(); ++t) {
      c.turns.push_back({.user = users[i][t], .reply_tokens = static_cast<int>(4 + 2 * t + i)});
    }
    w.conversations.push_back(std::move(c));
  }
  return w;
}

class RunnerEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = mnemo::testing::MakeTempDir() + "/runner.gguf";
    ASSERT_TRUE(engine::WriteTestModel(
                    {.arch = engine::Architecture::kLlama, .dtype = kernels::DType::kF16}, path)
                    .ok());
    auto m = engine::Model::Open(path);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = m->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }

  // One mode's run on a fresh engine driver.
  static absl::StatusOr<ModeRun> RunMode(BenchMode mode, const Workload& w, int concurrency,
                                         EngineDriverOptions::ReplyHook on_reply = nullptr) {
    EngineDriverOptions o;
    o.mode = mode;
    o.engine.threads = mnemo::testing::TestKernelThreads();
    o.engine.kv_budget_bytes = 16 << 20;
    o.engine.max_seqs = 4;
    o.engine.max_batch_tokens = 16;  // small: the spill floor (longest + one step) stays small
    o.spill_device_fraction = 0.0;   // the floor: room for about one conversation
    o.on_reply = std::move(on_reply);
    auto d = MakeEngineDriver(*model_, w, o);
    if (!d.ok()) return d.status();
    auto run = RunWorkload(**d, w, {.concurrency = concurrency, .progress = false});
    if (run.ok()) run->mode = mode;
    return run;
  }

  static engine::Model* model_;
};

engine::Model* RunnerEngineTest::model_ = nullptr;

struct Totals {
  int64_t prompt = 0, cached = 0, computed = 0, generated = 0;
  int64_t computed_after_first = 0;  // turns 1, 2, ...
  // The engine also computes the KV of every generated token but the last (fed back).
  int64_t fed_back = 0;
};

// Checks that every turn succeeded with its exact reply length; sums the records.
Totals CheckTurns(const ModeRun& run, const Workload& w) {
  Totals t;
  size_t expected = 0;
  for (const WorkloadConversation& c : w.conversations) expected += c.turns.size();
  EXPECT_EQ(run.turns.size(), expected) << run.driver;
  for (const TurnRecord& r : run.turns) {
    EXPECT_EQ(r.error, "") << run.driver;
    const WorkloadTurn& turn =
        w.conversations[static_cast<size_t>(r.conversation)].turns[static_cast<size_t>(r.turn)];
    EXPECT_EQ(r.generated_tokens, turn.reply_tokens)
        << run.driver << " conversation " << r.conversation << " turn " << r.turn;
    EXPECT_GT(r.prompt_tokens, 0);
    EXPECT_GE(r.ttft_seconds, 0.0);
    EXPECT_LE(r.ttft_seconds, r.end_seconds - r.start_seconds + 1e-9);
    EXPECT_GE(r.context_tokens, r.prompt_tokens + r.generated_tokens) << run.driver;
    t.prompt += r.prompt_tokens;
    t.cached += r.cached_tokens;
    t.computed += r.prompt_tokens - r.cached_tokens;
    t.generated += r.generated_tokens;
    t.fed_back += r.generated_tokens - 1;
    if (r.turn > 0) t.computed_after_first += r.prompt_tokens - r.cached_tokens;
  }
  EXPECT_EQ(run.counters.tokens_generated, t.generated) << run.driver;
  return t;
}

TEST_F(RunnerEngineTest, StatelessPrefixAndStatefulReplayTheWorkloadExactly) {
  const Workload w = ChatWorkload();
  std::map<BenchMode, Totals> totals;
  for (BenchMode mode : {BenchMode::kStateless, BenchMode::kPrefix, BenchMode::kStateful}) {
    SCOPED_TRACE(std::string(ModeName(mode)));
    auto run = RunMode(mode, w, /*concurrency=*/3);
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->driver, "engine");
    EXPECT_EQ(run->kv_bytes_per_token, model_->config().n_layers * model_->config().n_kv_heads *
                                           model_->config().head_dim * 2 * 2);
    EXPECT_GE(run->samples.size(), 2u);  // at the start and at the end at least
    const Totals t = CheckTurns(*run, w);
    totals[mode] = t;
    // The engine's counters and the records tell the same story. Sessions also compute and
    // reuse their system prompts at creation, which no turn's usage counts.
    if (mode == BenchMode::kStateful) {
      EXPECT_GE(run->counters.tokens_computed, t.computed + t.fed_back);
      EXPECT_GE(run->counters.tokens_reused, t.cached);
    } else {
      EXPECT_EQ(run->counters.tokens_computed, t.computed + t.fed_back);
      EXPECT_EQ(run->counters.tokens_reused, t.cached);
    }
    EXPECT_EQ(run->counters.spills_to_host + run->counters.spills_to_disk, 0);
    for (const TurnRecord& r : run->turns) {
      if (mode == BenchMode::kStateless) {
        EXPECT_EQ(r.cached_tokens, 0);
      } else if (r.turn > 0) {
        EXPECT_GT(r.cached_tokens, 0) << "conversation " << r.conversation << " turn " << r.turn;
      }
      if (mode != BenchMode::kStateful) {
        EXPECT_EQ(r.context_tokens, r.prompt_tokens + r.generated_tokens);
      }
    }
  }
  EXPECT_LT(totals[BenchMode::kStateful].computed, totals[BenchMode::kStateless].computed);
  EXPECT_LT(totals[BenchMode::kStateful].computed_after_first,
            totals[BenchMode::kStateless].computed_after_first);
  EXPECT_LT(totals[BenchMode::kPrefix].computed, totals[BenchMode::kStateless].computed);
}

// Plays the conversations' turns one at a time, round robin (conversation 0's turn t, 1's,
// 2's, then turn t + 1), from the reply hook: a conversation whose turn ended waits there,
// its session idle, until every turn before its next one has ended. So each turn runs while
// the other sessions are idle and can be spilled, whatever the threads' timing.
class RoundRobin {
 public:
  RoundRobin(int conversations, int turns) : n_(conversations), turns_(turns) {}

  void AfterTurn(const std::string& id, int turn, const std::string& reply) {
    const int c = std::stoi(id.substr(id.find('-') + 1));
    std::unique_lock<std::mutex> lock(mu_);
    replies_[{id, turn}] = reply;
    ++done_;
    cv_.notify_all();
    if (turn + 1 >= turns_) return;  // the conversation's last turn
    const int next_slot = (turn + 1) * n_ + c;
    // A bound, not a pause: a failed turn elsewhere must not hang the test.
    if (!cv_.wait_for(lock, std::chrono::seconds(30), [&] { return done_ >= next_slot; })) {
      ADD_FAILURE() << id << " waited for slot " << next_slot << " in vain";
    }
  }

  std::map<std::pair<std::string, int>, std::string> replies() {
    std::lock_guard<std::mutex> lock(mu_);
    return replies_;
  }

 private:
  const int n_, turns_;
  std::mutex mu_;
  std::condition_variable cv_;
  int done_ = 0;
  std::map<std::pair<std::string, int>, std::string> replies_;
};

TEST_F(RunnerEngineTest, SpillModeSpillsAndRepliesAsStatefulDoes) {
  const Workload w = ChatWorkload();
  const int n = static_cast<int>(w.conversations.size());
  RoundRobin stateful_order(n, 3), spill_order(n, 3);
  auto hook = [](RoundRobin& order) {
    return [&order](const std::string& id, int turn, const std::string& reply) {
      order.AfterTurn(id, turn, reply);
    };
  };
  auto stateful = RunMode(BenchMode::kStateful, w, n, hook(stateful_order));
  ASSERT_TRUE(stateful.ok()) << stateful.status();
  auto spill = RunMode(BenchMode::kSpill, w, n, hook(spill_order));
  ASSERT_TRUE(spill.ok()) << spill.status();
  const Totals t = CheckTurns(*spill, w);
  const Totals stateful_totals = CheckTurns(*stateful, w);

  // The device tier holds about one conversation; the host tier as much again.
  EXPECT_GT(spill->device_budget_bytes, 0);
  EXPECT_LT(spill->device_budget_bytes, int64_t{16} << 20);
  EXPECT_EQ(spill->host_budget_bytes, spill->device_budget_bytes);
  const ServerCounters& c = spill->counters;
  EXPECT_GT(c.spills_to_host + c.spills_to_disk, 0);
  EXPECT_GT(c.restores_from_host + c.restores_from_disk, 0);
  EXPECT_GT(c.bytes_to_host + c.bytes_to_disk, 0);
  EXPECT_GE(c.tokens_computed, t.computed + t.fed_back);
  for (const TierSample& s : spill->samples) {
    EXPECT_LE(s.device_bytes, spill->device_budget_bytes);
  }
  // Greedy: spilling and restoring sessions changes none of the replies.
  EXPECT_EQ(stateful_order.replies().size(), 9u);
  EXPECT_EQ(spill_order.replies(), stateful_order.replies());
  // The turns computed what they compute in stateful mode (a dropped KV would be recomputed).
  EXPECT_EQ(t.computed, stateful_totals.computed);
}

TEST_F(RunnerEngineTest, ConcurrencyDoesNotChangeTheConversations) {
  const Workload w = ChatWorkload();
  using Key = std::pair<int, int>;
  std::map<Key, std::tuple<int64_t, int64_t, int64_t>> counts[2];
  for (int k = 0; k < 2; ++k) {
    auto run = RunMode(BenchMode::kStateful, w, /*concurrency=*/k + 1);
    ASSERT_TRUE(run.ok()) << run.status();
    CheckTurns(*run, w);
    for (const TurnRecord& r : run->turns) {
      counts[k][{r.conversation, r.turn}] = {r.prompt_tokens, r.cached_tokens, r.generated_tokens};
    }
  }
  EXPECT_EQ(counts[0].size(), 9u);
  EXPECT_EQ(counts[0], counts[1]);
}

// ---- HTTP ------------------------------------------------------------------------------

TEST(RunnerHttpTest, ChatSessionsAndResponsesAgainstMnemoServe) {
  engine::EngineOptions eo;
  eo.prefix_cache = false;  // chat completions recompute the whole history
  auto server = server::testing::TestServer::Start({}, eo);
  ASSERT_NE(server, nullptr);
  const Workload w = ChatWorkload();
  const std::string url = "http://127.0.0.1:" + std::to_string(server->server->port()) + "/v1";
  std::map<HttpApi, Totals> totals;
  for (HttpApi api : {HttpApi::kChat, HttpApi::kSessions, HttpApi::kResponses}) {
    auto d = MakeHttpDriver({.base_url = url, .model = "test-model", .api = api});
    ASSERT_TRUE(d.ok()) << d.status();
    SCOPED_TRACE((*d)->name());
    auto run = RunWorkload(**d, w, {.concurrency = 1, .progress = false});
    ASSERT_TRUE(run.ok()) << run.status();
    const Totals t = CheckTurns(*run, w);
    totals[api] = t;
    const ServerCounters& c = run->counters;
    EXPECT_GE(c.busy_seconds, 0.0);
    EXPECT_EQ(c.tokens_reused, t.cached);
    if (api == HttpApi::kChat) {
      EXPECT_EQ(c.tokens_computed, t.computed + t.fed_back);
    } else {
      EXPECT_GE(c.tokens_computed, t.computed + t.fed_back);  // and system prompts at creation
    }
    EXPECT_EQ(c.spills_to_host, 0);
    EXPECT_EQ(c.bytes_to_host, 0);  // /metrics counts bytes moved: none here
    EXPECT_EQ(c.bytes_from_disk, 0);
    // /metrics gave the block's bytes: the samples are in bytes.
    EXPECT_EQ(run->kv_bytes_per_token, server->engine->block_bytes() / 16);
    ASSERT_FALSE(run->samples.empty());
    for (const TierSample& s : run->samples) {
      EXPECT_EQ(s.device_bytes % server->engine->block_bytes(), 0);
    }
    // Every conversation's server state is gone.
    EXPECT_TRUE(server->engine->ListSessions("").empty());
  }
  EXPECT_LT(totals[HttpApi::kSessions].computed_after_first,
            totals[HttpApi::kChat].computed_after_first);
  EXPECT_LT(totals[HttpApi::kResponses].computed_after_first,
            totals[HttpApi::kChat].computed_after_first);
  EXPECT_TRUE(server->engine->CheckInvariants().ok());
}

TEST(RunnerHttpTest, UnreachableServerNamesTheUrl) {
  // A port nothing listens on: bound, then closed.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd);
  const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/v1";
  auto d = MakeHttpDriver({.base_url = url, .model = "m", .timeout_seconds = 5});
  ASSERT_FALSE(d.ok());
  EXPECT_NE(std::string(d.status().message()).find(url), std::string::npos) << d.status();

  auto bad = MakeHttpDriver({.base_url = "localhost:8080"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mnemo::bench

namespace mnemo::bench {
namespace {

// A server that, like some OpenAI-compatible ones, refuses fields it does not know: the
// driver must leave "ignore_eos" out when told to (a fault injected by a minimal server).
TEST(RunnerHttpTest, IgnoreEosCanBeLeftOutForStrictServers) {
  httplib::Server strict;
  strict.Get("/v1/models", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"object": "list", "data": [{"id": "strict"}]})", "application/json");
  });
  strict.Post("/v1/chat/completions", [](const httplib::Request& req, httplib::Response& res) {
    const nlohmann::json body = nlohmann::json::parse(req.body);
    if (body.contains("ignore_eos") || body["model"] != "strict") {
      res.status = 400;
      res.set_content(R"({"error": {"message": "Unrecognized request argument: ignore_eos"}})",
                      "application/json");
      return;
    }
    res.set_content(
        "data: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"Hi\"}}]}\n\n"
        "data: {\"choices\": [], \"usage\": {\"prompt_tokens\": 7, \"completion_tokens\": 1}}\n\n"
        "data: [DONE]\n\n",
        "text/event-stream");
  });
  const int port = strict.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  // Bound and listening: connections wait in the backlog until the thread accepts them.
  std::thread serving([&] { strict.listen_after_bind(); });

  Workload w;
  w.conversations.push_back(
      {.id = "c", .kind = "chat", .turns = {{.user = "hi", .reply_tokens = 1}}});
  for (bool ignore_eos : {true, false}) {
    HttpDriverOptions o{.base_url = "http://127.0.0.1:" + std::to_string(port)};
    o.ignore_eos = ignore_eos;
    auto driver = MakeHttpDriver(o);
    ASSERT_TRUE(driver.ok()) << driver.status();
    auto run = RunWorkload(**driver, w, {.concurrency = 1, .progress = false});
    ASSERT_TRUE(run.ok()) << run.status();
    ASSERT_EQ(run->turns.size(), 1u);
    if (ignore_eos) {
      EXPECT_NE(run->turns[0].error.find("400"), std::string::npos) << run->turns[0].error;
    } else {
      EXPECT_EQ(run->turns[0].error, "");
      EXPECT_EQ(run->turns[0].prompt_tokens, 7);
      EXPECT_EQ(run->turns[0].generated_tokens, 1);
    }
  }
  strict.stop();
  serving.join();
}

}  // namespace
}  // namespace mnemo::bench
