// `mnemo chat --state-dir`: durable sessions across processes. A chat resumed with
// --session continues exactly as an uninterrupted one, and a chat killed with SIGKILL at
// random points never loses an acknowledged sync turn nor leaves a torn session (the turn
// being written is either all there or not at all). MNEMO_CRASH_ITERATIONS (default 6) sets
// how many kills one run makes per durability mode; MNEMO_CRASH_SEED replays a run.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "engine/model/test_model.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mnemo {
namespace {

using nlohmann::json;

std::string Question(int i) { return absl::StrCat("Question number ", i, ": what follows?"); }

std::vector<std::string> ChatArgs(const std::string& model, const std::string& dir,
                                  const std::string& durability) {
  return {testing::MnemoBinary(),
          "chat",
          model,
          "--state-dir",
          dir,
          "--durability",
          durability,
          "--json",
          "--temperature",
          "0",
          "--max-tokens",
          "6",
          "--threads",
          "1",
          "--system",
          "Be short."};
}

std::vector<json> Events(const std::string& out) {
  std::vector<json> events;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    events.push_back(json::parse(line, nullptr, /*allow_exceptions=*/false));
  }
  return events;
}

// The session of a state directory, as a fresh engine recovers it.
struct Recovered {
  int64_t sessions = 0;
  int64_t quarantined = 0;
  int64_t turns = 0;
  std::vector<engine::TokenId> tokens;
  bool kv_ok = false;
};

Recovered Recover(const engine::Model& model, const std::string& dir, const std::string& id) {
  Recovered r;
  engine::EngineOptions o;
  o.threads = 1;
  o.state_dir = dir;
  auto e = engine::Engine::Create(model, o);
  EXPECT_TRUE(e.ok()) << e.status();
  if (!e.ok()) return r;
  r.sessions = (*e)->recovery().sessions;
  r.quarantined = static_cast<int64_t>((*e)->recovery().quarantined.size());
  auto info = (*e)->GetSession("local", id);
  if (!info.ok()) return r;
  r.turns = info->n_turns;
  r.tokens = *(*e)->SessionTokens("local", id);
  r.kv_ok = (*e)->SessionKvBytes("local", id).ok() && (*e)->Stats().restore_failures == 0;
  return r;
}

class ChatState : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    path_ = new std::string(testing::MakeTempDir() + "/chat.gguf");
    ASSERT_TRUE(engine::WriteTestModel(
                    {.arch = engine::Architecture::kLlama, .dtype = kernels::DType::kF16}, *path_)
                    .ok());
  }
  static void TearDownTestSuite() {
    delete path_;
    path_ = nullptr;
  }
  static std::string* path_;
};
std::string* ChatState::path_ = nullptr;

TEST_F(ChatState, ResumedSessionContinuesExactly) {
  const std::string a = testing::MakeTempDir() + "/a";
  const std::string b = testing::MakeTempDir() + "/b";
  std::string input;
  for (int i = 0; i < 3; ++i) input += Question(i) + "\n";
  const auto whole = testing::RunCommandWithInput(ChatArgs(*path_, a, "async"), input);
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  const auto first = testing::RunCommandWithInput(ChatArgs(*path_, b, "none"),
                                                  Question(0) + "\n" + Question(1) + "\n");
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const std::string id = Events(first.out)[0]["id"];
  std::vector<std::string> resume = ChatArgs(*path_, b, "async");
  resume.insert(resume.end(), {"--session", id});
  const auto second = testing::RunCommandWithInput(resume, Question(2) + "\n");
  ASSERT_EQ(second.exit_code, 0) << second.err;
  const std::vector<json> w = Events(whole.out);
  const std::vector<json> s = Events(second.out);
  ASSERT_EQ(w.size(), 4u);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0]["resumed"], true);
  EXPECT_EQ(s[0]["id"], id);
  EXPECT_EQ(s[1]["ids"], w[3]["ids"]);  // the third turn, uninterrupted vs resumed
  EXPECT_EQ(s[1]["usage"]["cached_tokens"], w[3]["usage"]["cached_tokens"]);
  EXPECT_EQ(s[1]["turn"], 3);
}

// A chat process that answers turns on a pipe, killed with SIGKILL within 20 ms after it was
// sent a turn: the kill lands while the turn computes, is written, or is acknowledged.
void CrashIterations(const std::string& model_path, const std::string& durability) {
  auto model = engine::Model::Open(model_path);
  ASSERT_TRUE(model.ok());
  // The uninterrupted conversation: the history after each turn is a prefix of it.
  const std::string ref_dir = testing::MakeTempDir() + "/ref";
  std::string input;
  constexpr int kMaxTurns = 5;
  for (int i = 0; i < kMaxTurns; ++i) input += Question(i) + "\n";
  const auto ref = testing::RunCommandWithInput(ChatArgs(model_path, ref_dir, "sync"), input);
  ASSERT_EQ(ref.exit_code, 0) << ref.err;
  const std::string ref_id = Events(ref.out)[0]["id"];
  const Recovered full = Recover(**model, ref_dir, ref_id);
  ASSERT_EQ(full.turns, kMaxTurns + 1);  // + the system prompt's turn

  const char* env_iter = std::getenv("MNEMO_CRASH_ITERATIONS");
  const char* env_seed = std::getenv("MNEMO_CRASH_SEED");
  const int iterations = env_iter != nullptr ? std::atoi(env_iter) : 6;
  const uint32_t seed =
      env_seed != nullptr ? static_cast<uint32_t>(std::atoll(env_seed)) : std::random_device{}();
  SCOPED_TRACE(absl::StrCat("MNEMO_CRASH_SEED=", seed, " durability ", durability));
  std::mt19937 rng(seed);
  int landed_after_commit = 0;  // the killed turn was durable already
  for (int it = 0; it < iterations; ++it) {
    const std::string dir = testing::MakeTempDir() + "/s";
    const int acked_before_kill = std::uniform_int_distribution<int>(0, kMaxTurns - 1)(rng);
    int to_child[2], from_child[2];
    ASSERT_EQ(pipe(to_child), 0);
    ASSERT_EQ(pipe(from_child), 0);
    const std::vector<std::string> args = ChatArgs(model_path, dir, durability);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {  // only async-signal-safe calls before exec
      dup2(to_child[0], 0);
      dup2(from_child[1], 1);
      close(to_child[1]);
      close(from_child[0]);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    FILE* out = fdopen(from_child[0], "r");
    char line[1 << 16];
    std::string id;
    int acked = 0;
    ASSERT_NE(std::fgets(line, sizeof(line), out), nullptr);  // the session event
    id = json::parse(line)["id"];
    for (int turn = 0; turn <= acked_before_kill; ++turn) {
      const std::string q = Question(turn) + "\n";
      ASSERT_EQ(write(to_child[1], q.data(), q.size()), static_cast<ssize_t>(q.size()));
      if (turn == acked_before_kill) break;  // killed while this turn is in flight
      ASSERT_NE(std::fgets(line, sizeof(line), out), nullptr);
      ASSERT_EQ(json::parse(line)["event"], "turn");
      ++acked;
    }
    // Where the kill lands: a random point of the turn's compute, write and acknowledgement
    // (a turn of this model takes a few milliseconds). This picks the crash point; nothing
    // waits for an event here.
    usleep(std::uniform_int_distribution<useconds_t>(0, 20000)(rng));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    std::fclose(out);
    close(to_child[1]);

    const Recovered got = Recover(**model, dir, id);
    EXPECT_EQ(got.quarantined, 0);
    if (durability == "sync") {
      // Every acknowledged turn is there (and the system prompt's turn), at most one more.
      ASSERT_EQ(got.sessions, 1) << "iteration " << it;
      EXPECT_GE(got.turns, acked + 1) << "iteration " << it;
    }
    EXPECT_LE(got.turns, acked + 2) << "iteration " << it;
    landed_after_commit += got.turns == acked + 2 ? 1 : 0;
    if (got.sessions == 1 && got.turns > 0) {
      // Never torn: the history is the reference's up to a turn boundary, and its KV loads.
      ASSERT_LE(got.tokens.size(), full.tokens.size());
      EXPECT_TRUE(std::equal(got.tokens.begin(), got.tokens.end(), full.tokens.begin()))
          << "iteration " << it;
      EXPECT_TRUE(got.kv_ok) << "iteration " << it;
    }
  }
  std::printf("%s: %d kills, %d after the killed turn was committed\n", durability.c_str(),
              iterations, landed_after_commit);
}

TEST_F(ChatState, SigkillNeverLosesAnAcknowledgedSyncTurn) { CrashIterations(*path_, "sync"); }
TEST_F(ChatState, SigkillNeverTearsAnAsyncSession) { CrashIterations(*path_, "async"); }

}  // namespace
}  // namespace mnemo
