// `mnemo bench multiturn` end to end: the real binary on a random test model, in process and
// against a real server over HTTP, writing every output file; and its errors. No timing is
// asserted: the checks are on what each mode computed and reused.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/model/test_model.h"
#include "nlohmann/json.hpp"
#include "tests/server/server_test_util.h"
#include "tests/test_util.h"

namespace mnemo::cli {
namespace {

namespace fs = std::filesystem;
using mnemo::testing::CommandResult;
using nlohmann::json;
using ::testing::HasSubstr;

CommandResult Bench(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {mnemo::testing::MnemoBinary(), "bench"};
  argv.insert(argv.end(), args.begin(), args.end());
  return mnemo::testing::RunCommand(argv);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string TestModel() {
  const std::string path = mnemo::testing::MakeTempDir() + "/model.gguf";
  EXPECT_TRUE(engine::WriteTestModel({}, path).ok());
  return path;
}

const json* FindMode(const json& result, const std::string& name) {
  for (const json& m : result["modes"]) {
    if (m["mode"] == name) return &m;
  }
  return nullptr;
}

// 3 conversations of 3 turns, user messages of 24 tokens, replies of 4.
std::vector<std::string> SmallRun(const std::string& model, const std::string& out) {
  return {"multiturn",
          model,
          "--out",
          out,
          "--conversations",
          "3",
          "--turns",
          "3",
          "--user-tokens",
          "24",
          "--reply-tokens",
          "4",
          "--concurrency",
          "2",
          "--threads",
          "1",
          "--quiet",
          "--seed",
          "5"};
}

TEST(BenchCmd, MultiturnWritesEveryOutputAndStatefulComputesLess) {
  const std::string model = TestModel();
  const std::string out = mnemo::testing::MakeTempDir() + "/out";
  const CommandResult r = Bench(SmallRun(model, out));
  ASSERT_EQ(r.exit_code, 0) << r.err;

  for (const char* f : {"workload.jsonl", "result.json", "result.csv", "report.md"}) {
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  }
  for (const char* png :
       {"ttft_by_turn.png", "prefill_tokens.png", "tier_occupancy.png", "cost.png"}) {
    EXPECT_EQ(ReadFile(out + "/" + png).substr(0, 8), "\x89PNG\r\n\x1a\n") << png;
  }

  const json result = json::parse(ReadFile(out + "/result.json"));
  ASSERT_EQ(result["modes"].size(), 4u);
  const json* stateless = FindMode(result, "stateless");
  const json* prefix = FindMode(result, "prefix");
  const json* stateful = FindMode(result, "stateful");
  const json* spill = FindMode(result, "spill");
  ASSERT_TRUE(stateless && prefix && stateful && spill);
  for (const json* m : {stateless, prefix, stateful, spill}) {
    EXPECT_EQ((*m)["turns_ok"].get<int64_t>(), 9) << (*m)["mode"];
    EXPECT_EQ((*m)["turns_failed"].get<int64_t>(), 0) << (*m)["mode"];
    // Every mode decodes exactly the same replies: 9 turns of 4 tokens.
    EXPECT_EQ((*m)["generated_tokens"].get<int64_t>(), 36) << (*m)["mode"];
    EXPECT_EQ((*m)["driver"], "engine");
  }
  // Recomputation reuses nothing; the prefix index and the sessions reuse the history.
  EXPECT_EQ((*stateless)["cached_tokens"].get<int64_t>(), 0);
  EXPECT_GT((*prefix)["cached_tokens"].get<int64_t>(), 0);
  EXPECT_LT((*stateful)["computed_tokens"].get<int64_t>(),
            (*stateless)["computed_tokens"].get<int64_t>());
  EXPECT_LT((*spill)["computed_tokens"].get<int64_t>(),
            (*stateless)["computed_tokens"].get<int64_t>());
  // The engine's own counters agree with what the responses reported (the engine also
  // counts every generated token but a reply's last as computed: 9 turns of 4 tokens).
  EXPECT_EQ((*stateless)["counters"]["tokens_computed"].get<int64_t>(),
            (*stateless)["computed_tokens"].get<int64_t>() + 9 * 3);
  EXPECT_EQ((*stateful)["counters"]["tokens_generated"], (*stateful)["generated_tokens"]);

  // One CSV row per turn and mode, plus the header.
  const std::string csv = ReadFile(out + "/result.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 1 + 4 * 9);
  const std::string md = ReadFile(out + "/report.md");
  EXPECT_THAT(md, HasSubstr("stateful"));
  EXPECT_THAT(md, HasSubstr("ttft_by_turn.png"));

  // The saved workload replays: the same conversations, so the same token counts.
  const std::string again = mnemo::testing::MakeTempDir() + "/again";
  const CommandResult r2 =
      Bench({"multiturn", model, "--out", again, "--workload", out + "/workload.jsonl", "--modes",
             "stateful", "--threads", "1", "--quiet", "--no-plots"});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ(ReadFile(again + "/workload.jsonl"), ReadFile(out + "/workload.jsonl"));
  const json replay = json::parse(ReadFile(again + "/result.json"));
  ASSERT_EQ(replay["modes"].size(), 1u);
  EXPECT_EQ(replay["modes"][0]["computed_tokens"], (*stateful)["computed_tokens"]);
  EXPECT_EQ(replay["modes"][0]["generated_tokens"], (*stateful)["generated_tokens"]);
}

TEST(BenchCmd, AgentWorkloadGrowsTheContext) {
  const std::string model = TestModel();
  const std::string out = mnemo::testing::MakeTempDir() + "/agent";
  const CommandResult r = Bench({"multiturn",      model,   "--out",           out,
                                 "--workload",     "agent", "--conversations", "2",
                                 "--turns",        "2",     "--user-tokens",   "40",
                                 "--reply-tokens", "3",     "--modes",         "stateless,stateful",
                                 "--threads",      "1",     "--quiet",         "--no-plots"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json result = json::parse(ReadFile(out + "/result.json"));
  const json* stateless = FindMode(result, "stateless");
  const json* stateful = FindMode(result, "stateful");
  ASSERT_TRUE(stateless && stateful);
  // A task and 2 tool outputs per run (the test model's context is 1024 tokens, 600 of
  // them the agent's system prompt).
  EXPECT_EQ((*stateful)["turns_ok"].get<int64_t>(), 6);
  EXPECT_EQ((*stateless)["turns_ok"].get<int64_t>(), 6);
  EXPECT_LT((*stateful)["computed_tokens"].get<int64_t>(),
            (*stateless)["computed_tokens"].get<int64_t>());
  // Recomputation's prefill grows with the context: its last turn computes more than its
  // first; a session's last turn computes about as much as any tool output.
  const json& by_turn = (*stateless)["computed_by_turn"];
  ASSERT_EQ(by_turn.size(), 3u);
  EXPECT_GT(by_turn[2].get<int64_t>(), by_turn[1].get<int64_t>());
  EXPECT_LT((*stateful)["computed_by_turn"][2].get<int64_t>(), by_turn[2].get<int64_t>());
}

// Over HTTP against a real server: the chat completions API (stateless) and the session API
// and Responses API (stateful) from the same workload.
TEST(BenchCmd, TargetDrivesAServerStatelessAndStateful) {
  const std::string model = TestModel();
  for (const char* api : {"sessions", "responses"}) {
    // A fresh server each time: its prefix index would otherwise remember the last run.
    auto server = server::testing::TestServer::Start({}, {}, model);
    ASSERT_NE(server, nullptr);
    const std::string url = "http://127.0.0.1:" + std::to_string(server->server->port());
    const std::string out = mnemo::testing::MakeTempDir() + "/http-" + api;
    std::vector<std::string> args = SmallRun(model, out);
    for (const std::string& extra : {std::string("--target"), url, std::string("--stateful-api"),
                                     std::string(api), std::string("--no-plots")}) {
      args.push_back(extra);
    }
    const CommandResult r = Bench(args);
    ASSERT_EQ(r.exit_code, 0) << api << ": " << r.err;
    const json result = json::parse(ReadFile(out + "/result.json"));
    ASSERT_EQ(result["modes"].size(), 2u) << api;
    const json* stateless = FindMode(result, "stateless");
    const json* stateful = FindMode(result, "stateful");
    ASSERT_TRUE(stateless && stateful);
    EXPECT_EQ((*stateless)["driver"], "http-chat");
    EXPECT_EQ((*stateful)["driver"], std::string("http-") + api);
    for (const json* m : {stateless, stateful}) {
      EXPECT_EQ((*m)["turns_ok"].get<int64_t>(), 9) << api;
      EXPECT_EQ((*m)["generated_tokens"].get<int64_t>(), 36) << api;
      // mnemo's /metrics gave the busy time.
      EXPECT_EQ((*m)["busy_is_wall"], false) << api;
    }
    EXPECT_LT((*stateful)["computed_tokens"].get<int64_t>(),
              (*stateless)["computed_tokens"].get<int64_t>())
        << api;
  }
}

TEST(BenchCmd, BadFlagsAndFilesAreClearErrors) {
  const std::string model = TestModel();
  const std::string out = mnemo::testing::MakeTempDir() + "/bad";
  struct Case {
    std::vector<std::string> args;
    int code;
    std::string message;
  };
  const std::string bad_jsonl = mnemo::testing::MakeTempDir() + "/bad.jsonl";
  std::ofstream(bad_jsonl) << "{\"id\": \"a\", \"turns\": []}\n";
  const std::vector<Case> cases = {
      {{"multiturn", model}, 2, "--out DIR is required"},
      {{"multiturn", model, "--out", out, "--modes", "stateful,bogus"}, 2, "'bogus'"},
      {{"multiturn", model, "--out", out, "--modes", "stateful,stateful"}, 2, "given twice"},
      {{"multiturn", model, "--out", out, "--target", "http://127.0.0.1:1", "--modes", "prefix"},
       2,
       "server configuration"},
      {{"multiturn", model, "--out", out, "--concurrency", "0"}, 2, "--concurrency"},
      {{"multiturn", model, "--out", out, "--stateful-api", "grpc"}, 2, "--stateful-api"},
      {{"multiturn", model, "--out", out, "--device", "xpu"}, 2, "--device: expected cpu"},
      {{"multiturn", model, "--out", out, "--workload", bad_jsonl}, 1, "line 1"},
      {{"multiturn", out + "/missing.gguf", "--out", out}, 1, "missing.gguf"},
      {{"frobnicate"}, 2, "unknown benchmark"},
  };
  for (const Case& c : cases) {
    const CommandResult r = Bench(c.args);
    EXPECT_EQ(r.exit_code, c.code) << c.message << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.message));
  }
  // A closed port is named.
  const CommandResult r = Bench({"multiturn", model, "--out", out, "--target", "http://127.0.0.1:1",
                                 "--conversations", "1", "--turns", "1", "--quiet", "--no-plots"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("127.0.0.1:1"));
}

}  // namespace
}  // namespace mnemo::cli
