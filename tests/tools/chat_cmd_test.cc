// `mnemo chat` end to end: the real binary with its standard input fed, on a random test
// model (ChatML template), stories260K (no template: raw tokens) and SmolLM2.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/test_model.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mnemo {
namespace {

using nlohmann::json;
using testing::CommandResult;
using ::testing::HasSubstr;

// About 140 tokens on the test model's byte-level tokenizer (few merges: ~one per byte).
constexpr char kSystem[] =
    "You are a terse assistant. Answer every question in one line, without greetings, "
    "lists or apologies, and never repeat the question back to the user.";

struct ChatRun {
  CommandResult result;
  std::vector<json> events;  // one per stdout line
  // The events of one kind, in order.
  std::vector<json> Of(const std::string& kind) const {
    std::vector<json> out;
    for (const json& e : events) {
      if (e.value("event", "") == kind) out.push_back(e);
    }
    return out;
  }
};

ChatRun Chat(const std::string& model, std::vector<std::string> flags, const std::string& input) {
  flags.insert(flags.begin(), {testing::MnemoBinary(), "chat", model});
  ChatRun run;
  run.result = testing::RunCommandWithInput(flags, input);
  std::istringstream lines(run.result.out);
  for (std::string line; std::getline(lines, line);) {
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(j.is_discarded()) << "not JSON: " << line;
    run.events.push_back(std::move(j));
  }
  return run;
}

// Greedy, --json, a small KV pool.
ChatRun GreedyChat(const std::string& model, std::vector<std::string> flags,
                   const std::string& input) {
  flags.insert(flags.end(), {"--temperature", "0", "--kv-budget", "64M", "--json"});
  return Chat(model, flags, input);
}

int64_t Usage(const json& turn, const char* key) { return turn["usage"][key].get<int64_t>(); }

class MnemoChat : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new std::string(testing::MakeTempDir() + "/chat.gguf");
    ASSERT_TRUE(engine::WriteTestModel(
                    {.arch = engine::Architecture::kQwen3, .dtype = kernels::DType::kQ8_0}, *model_)
                    .ok());
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  // Greedy with short replies.
  static ChatRun Greedy(std::vector<std::string> flags, const std::string& input) {
    flags.insert(flags.end(), {"--max-tokens", "8"});
    return GreedyChat(*model_, flags, input);
  }
  static std::string* model_;
};
std::string* MnemoChat::model_ = nullptr;

TEST_F(MnemoChat, LaterTurnsReuseTheSessionsKv) {
  ChatRun run = Greedy({"--system", kSystem}, "hello\nhow are you?\ntell me more\n");
  ASSERT_EQ(run.result.exit_code, 0) << run.result.err;
  ASSERT_FALSE(run.events.empty());
  EXPECT_EQ(run.events[0]["event"], "session");
  EXPECT_EQ(run.events[0]["raw_tokens"], false);
  const std::string id = run.events[0]["id"];
  EXPECT_FALSE(id.empty());
  const std::vector<json> turns = run.Of("turn");
  ASSERT_EQ(turns.size(), 3u) << run.result.out;
  for (size_t i = 0; i < turns.size(); ++i) {
    const json& t = turns[i];
    EXPECT_EQ(t["id"], id);
    EXPECT_EQ(t["turn"], static_cast<int>(i) + 1);
    EXPECT_TRUE(t["text"].is_string());
    EXPECT_GE(t["ttft"].get<double>(), 0.0);
    EXPECT_EQ(Usage(t, "cached_tokens") + Usage(t, "computed_tokens"), Usage(t, "prompt_tokens"));
    EXPECT_EQ(Usage(t, "completion_tokens"), static_cast<int64_t>(t["ids"].size()));
    EXPECT_GE(Usage(t, "completion_tokens"), 1);
  }
  // The system prompt was prefilled when the session was created.
  EXPECT_GT(Usage(turns[0], "cached_tokens"), 100);
  for (size_t i = 1; i < turns.size(); ++i) {
    const json& prev = turns[i - 1];
    const json& t = turns[i];
    // Everything before this turn is reused: the previous prompt and reply (the reply's last
    // token was sampled, not computed, so it is computed now).
    EXPECT_GE(Usage(t, "cached_tokens"),
              Usage(prev, "prompt_tokens") + Usage(prev, "completion_tokens") - 1);
    EXPECT_GT(Usage(t, "prompt_tokens"), 100);
    EXPECT_LT(Usage(t, "computed_tokens") * 4, Usage(t, "prompt_tokens")) << t.dump();
  }
  // Plain statistics are off with --json; errors would be on stderr.
  EXPECT_EQ(run.result.err, "");
}

TEST_F(MnemoChat, ForkContinuesOnANewSessionSharingTheHistory) {
  ChatRun run = Greedy({"--system", kSystem}, "hello\n/fork\nand then?\n");
  ASSERT_EQ(run.result.exit_code, 0) << run.result.err;
  const std::string first = run.events[0]["id"];
  const std::vector<json> forks = run.Of("fork");
  ASSERT_EQ(forks.size(), 1u);
  EXPECT_EQ(forks[0]["from"], first);
  const std::string fork = forks[0]["id"];
  EXPECT_NE(fork, first);
  const std::vector<json> turns = run.Of("turn");
  ASSERT_EQ(turns.size(), 2u);
  EXPECT_EQ(turns[0]["id"], first);
  EXPECT_EQ(turns[1]["id"], fork);
  EXPECT_EQ(turns[1]["turn"], 2);
  EXPECT_GE(Usage(turns[1], "cached_tokens"),
            Usage(turns[0], "prompt_tokens") + Usage(turns[0], "completion_tokens") - 1);
}

TEST_F(MnemoChat, RewindThenTheSameLineRepeatsTheReply) {
  ChatRun run =
      Greedy({"--system", kSystem}, "hello\nwhat next?\n/rewind\nwhat next?\n/rewind 0\nhello\n");
  ASSERT_EQ(run.result.exit_code, 0) << run.result.err;
  const std::vector<json> rewinds = run.Of("rewind");
  ASSERT_EQ(rewinds.size(), 2u);
  EXPECT_EQ(rewinds[0]["turns"], 1);
  EXPECT_EQ(rewinds[1]["turns"], 0);
  const std::vector<json> turns = run.Of("turn");
  ASSERT_EQ(turns.size(), 4u);
  // The second line again, on the history of the first turn only.
  EXPECT_EQ(turns[2]["turn"], 2);
  EXPECT_EQ(turns[2]["ids"], turns[1]["ids"]);
  EXPECT_EQ(turns[2]["text"], turns[1]["text"]);
  EXPECT_EQ(Usage(turns[2], "prompt_tokens"), Usage(turns[1], "prompt_tokens"));
  EXPECT_GE(Usage(turns[2], "cached_tokens"), Usage(turns[1], "cached_tokens"));
  // Back to the system prompt alone: the first line gives the first reply again.
  EXPECT_EQ(turns[3]["turn"], 1);
  EXPECT_EQ(turns[3]["ids"], turns[0]["ids"]);
  EXPECT_EQ(Usage(turns[3], "prompt_tokens"), Usage(turns[0], "prompt_tokens"));
}

TEST_F(MnemoChat, ResetReusesOnlyTheSystemPrompt) {
  ChatRun run = Greedy({"--system", kSystem}, "hello\nmore\n/reset\ngoodbye\n");
  ASSERT_EQ(run.result.exit_code, 0) << run.result.err;
  const std::vector<json> resets = run.Of("reset");
  ASSERT_EQ(resets.size(), 1u);
  EXPECT_EQ(resets[0]["from"], run.events[0]["id"]);
  EXPECT_NE(resets[0]["id"], run.events[0]["id"]);
  const std::vector<json> turns = run.Of("turn");
  ASSERT_EQ(turns.size(), 3u);
  const int64_t system_tokens = Usage(turns[0], "cached_tokens");
  EXPECT_GT(system_tokens, 100);
  EXPECT_EQ(turns[2]["id"], resets[0]["id"]);
  EXPECT_EQ(turns[2]["turn"], 1);
  EXPECT_EQ(Usage(turns[2], "cached_tokens"), system_tokens);
  EXPECT_GT(Usage(turns[2], "computed_tokens"), 0);
}

TEST_F(MnemoChat, CommandErrorsAreReportedAndTheChatGoesOn) {
  ChatRun run = Greedy({}, "/nope\n/rewind\nhello\n/rewind 3\n/rewind x\n\n/help\n/quit\nnever\n");
  EXPECT_EQ(run.result.exit_code, 1);  // something failed
  std::vector<std::string> kinds;
  for (const json& e : run.events) kinds.push_back(e["event"].get<std::string>());
  EXPECT_THAT(
      kinds, ::testing::ElementsAre("session", "error", "error", "turn", "error", "error", "help"));
  const std::vector<json> errors = run.Of("error");
  ASSERT_EQ(errors.size(), 4u);
  EXPECT_THAT(errors[0]["message"].get<std::string>(), HasSubstr("unknown command /nope"));
  EXPECT_THAT(errors[1]["message"].get<std::string>(), HasSubstr("nothing to rewind"));
  EXPECT_THAT(errors[2]["message"].get<std::string>(), HasSubstr("[0, 1]"));
  EXPECT_THAT(errors[3]["message"].get<std::string>(), HasSubstr("'x'"));
  EXPECT_THAT(run.Of("help")[0]["text"].get<std::string>(), HasSubstr("/rewind [N]"));
  // Each error is one line on stderr too.
  EXPECT_EQ(std::count(run.result.err.begin(), run.result.err.end(), '\n'), 4) << run.result.err;
}

TEST_F(MnemoChat, CompactDropsHistoryAndTheChatGoesOn) {
  ChatRun run = Greedy({"--system", kSystem},
                       "hello\nhow are you?\n/compact 60\nand now?\n/rewind 0\n/compact x\n"
                       "/help\n");
  EXPECT_EQ(run.result.exit_code, 1);  // the rewind below the floor and /compact x failed
  std::vector<std::string> kinds;
  for (const json& e : run.events) kinds.push_back(e["event"].get<std::string>());
  EXPECT_THAT(kinds, ::testing::ElementsAre("session", "turn", "turn", "compact", "turn", "error",
                                            "error", "help"));
  const std::vector<json> turns = run.Of("turn");
  const json compact = run.Of("compact")[0];
  const int64_t before = compact["tokens_before"];
  // Everything the two turns left: their prompts and replies (and an end-of-turn marker).
  const int64_t history = Usage(turns[1], "prompt_tokens") + Usage(turns[1], "completion_tokens");
  EXPECT_GE(before, history);
  EXPECT_LE(before, history + 4);
  EXPECT_EQ(compact["tokens_after"], 60);
  EXPECT_EQ(compact["dropped_tokens"], before - 60);
  EXPECT_EQ(compact["compactions"], 1);
  EXPECT_EQ(compact["compacted_tokens"], before - 60);
  EXPECT_EQ(compact["rewind_floor"], 2);  // user turns
  // The turn after it runs on the 60 kept tokens, reusing their KV (but for the tokens of the
  // last turn that were never computed: its last sampled token and end-of-turn marker).
  EXPECT_EQ(turns[2]["turn"], 3);
  EXPECT_LE(Usage(turns[2], "cached_tokens"), 60);
  EXPECT_GE(Usage(turns[2], "cached_tokens"), 55);
  EXPECT_EQ(Usage(turns[2], "compacted_tokens"), 0);
  const std::vector<json> errors = run.Of("error");
  EXPECT_THAT(errors[0]["message"].get<std::string>(), HasSubstr("compacted"));
  EXPECT_THAT(errors[1]["message"].get<std::string>(), HasSubstr("'x'"));
  EXPECT_THAT(run.Of("help")[0]["text"].get<std::string>(), HasSubstr("/compact [N]"));
}

TEST_F(MnemoChat, CompactWithTheScorePolicy) {
  // The session's policy is none; /compact names the policy (in either order with N).
  ChatRun run = Greedy({"--system", kSystem, "--compaction-observe", "8"},
                       "hello\nhow are you?\n/compact 100 score\nand now?\n/compact 60 lru\n"
                       "/compact none\n/compact 50 60\n");
  EXPECT_EQ(run.result.exit_code, 1);  // the three bad /compact lines
  std::vector<std::string> kinds;
  for (const json& e : run.events) kinds.push_back(e["event"].get<std::string>());
  EXPECT_THAT(kinds, ::testing::ElementsAre("session", "turn", "turn", "compact", "turn", "error",
                                            "error", "error"));
  const json compact = run.Of("compact")[0];
  const int64_t before = compact["tokens_before"];
  EXPECT_EQ(compact["policy"], "score");
  EXPECT_EQ(compact["tokens_after"], 100);
  EXPECT_EQ(compact["dropped_tokens"], before - 100);
  EXPECT_EQ(compact["summarized_tokens"], 0);
  EXPECT_EQ(compact["compacted_tokens"], before - 100);
  EXPECT_FALSE(compact.contains("summary"));
  // The turn after it reuses the kept tokens' KV.
  const std::vector<json> turns = run.Of("turn");
  EXPECT_GE(Usage(turns[2], "cached_tokens"), 90);
  EXPECT_LE(Usage(turns[2], "cached_tokens"), 100);
  const std::vector<json> errors = run.Of("error");
  EXPECT_THAT(errors[0]["message"].get<std::string>(), HasSubstr("'60 lru'"));
  EXPECT_THAT(errors[1]["message"].get<std::string>(), HasSubstr("window, score or summarize"));
  EXPECT_THAT(errors[2]["message"].get<std::string>(), HasSubstr("one number"));
}

TEST_F(MnemoChat, CompactWithTheSummarizePolicyPrintsTheSummary) {
  // The session's policy (summarize, summaries of at most 16 tokens) without a POLICY.
  const std::vector<std::string> flags = {"--compaction", "summarize",
                                          "--compaction-summary-tokens", "16"};
  const std::string input = "hello there\nhow are you?\nwhat now?\n/compact 60\nand then?\n";
  ChatRun run = Greedy(flags, input);
  ASSERT_EQ(run.result.exit_code, 0) << run.result.err;
  ASSERT_EQ(run.Of("compact").size(), 1u) << run.result.out;
  const json compact = run.Of("compact")[0];
  const int64_t before = compact["tokens_before"];
  EXPECT_EQ(compact["policy"], "summarize");
  EXPECT_GT(compact["summarized_tokens"].get<int64_t>(), 0);
  EXPECT_EQ(compact["compacted_tokens"], compact["summarized_tokens"]);
  EXPECT_EQ(compact["tokens_after"], before - compact["dropped_tokens"].get<int64_t>());
  EXPECT_LE(compact["tokens_after"].get<int64_t>(), 60);
  ASSERT_TRUE(compact.contains("summary")) << compact.dump();
  const std::string summary = compact["summary"];
  EXPECT_FALSE(summary.empty()) << "the test model wrote no summary";
  EXPECT_EQ(run.Of("turn").size(), 4u);  // the turn after the summary ran

  // Without --json the notice says what happened and prints the summary.
  std::vector<std::string> plain = {
      testing::MnemoBinary(), "chat", *model_, "--temperature", "0", "--max-tokens", "8",
      "--kv-budget",          "64M"};
  plain.insert(plain.end(), flags.begin(), flags.end());
  CommandResult text = testing::RunCommandWithInput(plain, input);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_THAT(text.err, HasSubstr(absl::StrCat("compacted ", before, " -> ")));
  EXPECT_THAT(text.err, HasSubstr("summarize: "));
  // The summary as the model wrote it (stdout's JSON writes invalid UTF-8 as U+FFFD), up to
  // the next turn's statistics.
  const size_t from = text.err.find("summary: ");
  const size_t to = text.err.find("\n[prompt", from);
  ASSERT_NE(from, std::string::npos) << text.err;
  ASSERT_NE(to, std::string::npos) << text.err;
  const std::string printed = text.err.substr(from + 9, to - from - 9);
  EXPECT_EQ(json::parse(json(printed).dump(-1, ' ', false, json::error_handler_t::replace)),
            summary);
}

TEST_F(MnemoChat, CompactionFlagsCompactTurnsPastTheTrigger) {
  // The system prompt (~140 tokens) and a short first turn stay under 250 tokens; a second
  // turn of ~150 passes them and compacts the history first. Without the flags nothing is
  // compacted.
  std::string second(150, 'x');
  for (size_t i = 5; i < second.size(); i += 6) second[i] = ' ';
  const std::string input = "hi\n" + second + "\n";
  ChatRun run = Greedy({"--system", kSystem, "--compaction", "window",
                        "--compaction-trigger-tokens", "250", "--compaction-target", "0.5"},
                       input);
  ASSERT_EQ(run.result.exit_code, 0) << run.result.err;
  std::vector<json> turns = run.Of("turn");
  ASSERT_EQ(turns.size(), 2u);
  EXPECT_EQ(Usage(turns[0], "compacted_tokens"), 0);
  const int64_t compacted = Usage(turns[1], "compacted_tokens");
  EXPECT_GT(compacted, 0);
  EXPECT_LE(Usage(turns[1], "prompt_tokens"), 250);

  ChatRun plain = Greedy({"--system", kSystem}, input);
  ASSERT_EQ(plain.result.exit_code, 0) << plain.result.err;
  turns = plain.Of("turn");
  ASSERT_EQ(turns.size(), 2u);
  EXPECT_EQ(Usage(turns[1], "compacted_tokens"), 0);
  EXPECT_GT(Usage(turns[1], "prompt_tokens"), 250);
}

TEST_F(MnemoChat, BadFlagsFailWithOneLine) {
  struct Case {
    std::vector<std::string> args;
    int code;
    std::string message;
  };
  const std::string m = *model_;
  const std::vector<Case> cases = {
      {{}, 2, "usage: mnemo chat MODEL"},
      {{m, "--bogus"}, 2, "unknown option '--bogus'"},
      {{m, "--temperature", "warm"}, 2, "--temperature"},
      {{m, "--temperature", "-1"}, 2, "temperature"},
      {{m, "--max-tokens", "0"}, 2, "--max-tokens"},
      {{m, "--kv-budget", "12Q"}, 2, "--kv-budget"},
      {{m, "--threads", "-2"}, 2, "--threads"},
      {{m, "--session=abc"}, 2, "--session needs --state-dir"},
      {{m, "--durability", "sync"}, 2, "--durability needs --state-dir"},
      {{m, "--state-dir", testing::MakeTempDir(), "--durability", "often"},
       2,
       "async, sync or none"},
      {{m, "--state-dir", testing::MakeTempDir(), "--session", "sess_x"}, 1, "no session sess_x"},
      {{m, "--kv-budget", "1K"}, 1, ""},
      {{m, "--device", "tpu"}, 2, "--device: expected cpu, cuda or cuda:N, got 'tpu'"},
      {{m, "--compaction", "lru"},
       2,
       "--compaction must be none, window, score or summarize, got \"lru\""},
      {{m, "--compaction-observe", "0"}, 2, "--compaction-observe must be >= 1, got 0"},
      {{m, "--compaction-summary-tokens", "x"}, 2, "--compaction-summary-tokens: not an integer"},
      {{m, "--compaction-summary-prompt="}, 2, "--compaction-summary-prompt must not be empty"},
      {{m, "--compaction-target", "1.5"}, 2, "--compaction-target must be in (0, 1), got 1.5"},
      {{m, "--compaction-target", "half"}, 2, "--compaction-target: not a number: 'half'"},
      {{m, "--compaction-trigger", "0"}, 2, "--compaction-trigger must be in (0, 1]"},
      {{m, "--compaction-sinks", "-1"}, 2, "--compaction-sinks must be >= 0"},
      {{m, "--compaction-max-session-bytes", "9Q"}, 2, "--compaction-max-session-bytes"},
      {{m, "--device", "cuda:7"}, 1, "device cuda:7: "},
      {{"/nonexistent.gguf"}, 1, "nonexistent"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {testing::MnemoBinary(), "chat"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    CommandResult r = testing::RunCommandWithInput(argv, "hello\n");
    const std::string what = c.args.empty() ? "(no args)" : c.args.back();
    EXPECT_EQ(r.exit_code, c.code) << what << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.message)) << what;
    EXPECT_THAT(r.err, ::testing::StartsWith("mnemo chat: ")) << what;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << what << ": " << r.err;
    EXPECT_EQ(r.out, "") << what;
  }
  CommandResult help = testing::RunCommand({testing::MnemoBinary(), "chat", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("--kv-budget"));
  EXPECT_THAT(help.out, HasSubstr("/fork"));
  EXPECT_THAT(help.out, HasSubstr("/compact [N] [POLICY]"));
  EXPECT_THAT(help.out, HasSubstr("--compaction POLICY"));
  EXPECT_THAT(help.out, HasSubstr("--compaction-summary-tokens N"));
  EXPECT_THAT(help.out, HasSubstr("none|window|score|summarize"));
  EXPECT_THAT(help.out, HasSubstr("raw tokens"));
}

TEST(MnemoChatStories, RawTokenTurnsContinueTheStory) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  ChatRun run =
      GreedyChat(testing::StoriesGgufPath(), {"--max-tokens", "16"}, "Once upon a time\nThe dog\n");
  ASSERT_EQ(run.result.exit_code, 0) << run.result.err;
  EXPECT_EQ(run.events[0]["raw_tokens"], true);
  const std::vector<json> turns = run.Of("turn");
  ASSERT_EQ(turns.size(), 2u);
  // BOS + 4 tokens, as `mnemo generate` encodes the same prompt; the same greedy reply.
  EXPECT_EQ(Usage(turns[0], "prompt_tokens"), 5);
  EXPECT_EQ(Usage(turns[0], "cached_tokens"), 0);
  EXPECT_THAT(turns[0]["text"].get<std::string>(),
              ::testing::StartsWith(", there was a little girl named Lily."));
  // No BOS on the second line: everything before it is reused.
  const int64_t history = Usage(turns[0], "prompt_tokens") + Usage(turns[0], "completion_tokens");
  EXPECT_EQ(Usage(turns[1], "cached_tokens"), history - 1);
  EXPECT_LE(Usage(turns[1], "computed_tokens"), 4);
}

TEST(MnemoChatStories, PlainOutputStreamsTheReplyAndPrintsStats) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  CommandResult r = testing::RunCommandWithInput(
      {testing::MnemoBinary(), "chat", testing::StoriesGgufPath(), "--temperature", "0",
       "--max-tokens", "16", "--kv-budget", "16M"},
      "Once upon a time\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::StartsWith(", there was a little girl named Lily."));
  EXPECT_THAT(r.err, HasSubstr("mnemo chat: session "));
  EXPECT_THAT(r.err, HasSubstr("raw tokens"));
  EXPECT_THAT(r.err, HasSubstr("[prompt 5 tokens: 0 reused, 5 computed; generated 16"));
  EXPECT_THAT(r.err, HasSubstr("tokens/s]"));

  // A system prompt needs a chat template.
  CommandResult sys = testing::RunCommandWithInput(
      {testing::MnemoBinary(), "chat", testing::StoriesGgufPath(), "--system", "Be nice."}, "");
  EXPECT_EQ(sys.exit_code, 1);
  EXPECT_THAT(sys.err, HasSubstr("chat template"));
}

TEST(MnemoChatSmolLm2, KnowsTheCapitalOfFrance) {
  MNEMO_REQUIRE_FILE(testing::SmolLm2GgufPath());
  ChatRun run = GreedyChat(testing::SmolLm2GgufPath(), {"--max-tokens", "24"},
                           "What is the capital of France?\nThank you.\n");
  ASSERT_EQ(run.result.exit_code, 0) << run.result.err;
  const std::vector<json> turns = run.Of("turn");
  ASSERT_EQ(turns.size(), 2u);
  EXPECT_THAT(turns[0]["text"].get<std::string>(), HasSubstr("Paris"));
  EXPECT_GT(Usage(turns[1], "cached_tokens"), Usage(turns[0], "prompt_tokens"));
}

}  // namespace
}  // namespace mnemo
