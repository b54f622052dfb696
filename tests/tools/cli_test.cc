#include "tools/mnemo/cli.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/test_util.h"
#include "tools/mnemo/engine_flags.h"

namespace mnemo::cli {
namespace {

CommandSpec TestSpec() {
  return CommandSpec{.name = "t",
                     .usage = "A [--json] [--n N]",
                     .summary = "test",
                     .flags = {{"json", false, "", "json"}, {"n", true, "N", "a number"}},
                     .min_positionals = 1,
                     .max_positionals = 2};
}

TEST(CliParse, FlagsAndPositionals) {
  auto p = Parse(TestSpec(), {"a", "--json", "--n", "5", "b"});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->Has("json"));
  EXPECT_EQ(*p->GetInt("n", 0), 5);
  EXPECT_EQ(p->positionals(), (std::vector<std::string>{"a", "b"}));
  auto q = Parse(TestSpec(), {"--n=7", "a"});
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q->GetInt("n", 0), 7);
  EXPECT_EQ(*q->GetInt("missing", 3), 3);
}

TEST(CliParse, DoubleDashEndsFlags) {
  auto p = Parse(TestSpec(), {"--", "--json"});
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->Has("json"));
  EXPECT_EQ(p->positionals(), (std::vector<std::string>{"--json"}));
}

TEST(CliParse, ErrorsNameTheArgument) {
  auto unknown = Parse(TestSpec(), {"a", "--bogus"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("--bogus"), std::string::npos);
  auto no_value = Parse(TestSpec(), {"a", "--n"});
  ASSERT_FALSE(no_value.ok());
  EXPECT_NE(no_value.status().message().find("--n"), std::string::npos);
  auto value_on_bool = Parse(TestSpec(), {"a", "--json=1"});
  EXPECT_FALSE(value_on_bool.ok());
  auto too_few = Parse(TestSpec(), {});
  ASSERT_FALSE(too_few.ok());
  EXPECT_NE(too_few.status().message().find("usage"), std::string::npos);
  auto too_many = Parse(TestSpec(), {"a", "b", "c"});
  EXPECT_FALSE(too_many.ok());
  CommandSpec long_usage = TestSpec();
  long_usage.usage = "A [--json]\n       [--n N]";
  auto one_line = Parse(long_usage, {});
  ASSERT_FALSE(one_line.ok());
  EXPECT_EQ(one_line.status().message(),
            "usage: mnemo t A [--json] ... (mnemo t --help lists them all)");
  auto bad_int = Parse(TestSpec(), {"a", "--n", "5x"});
  ASSERT_TRUE(bad_int.ok());
  auto n = bad_int->GetInt("n", 0);
  ASSERT_FALSE(n.ok());
  EXPECT_NE(n.status().message().find("5x"), std::string::npos);
}

TEST(CliParse, HelpSkipsPositionalCheck) {
  auto p = Parse(TestSpec(), {"--help"});
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->Has("help"));
  const std::string help = HelpText(TestSpec());
  EXPECT_NE(help.find("--json"), std::string::npos);
  EXPECT_NE(help.find("--n N"), std::string::npos);
}

TEST(CliByteSize, Suffixes) {
  EXPECT_EQ(*ParseByteSize("512"), 512u);
  EXPECT_EQ(*ParseByteSize("64K"), 64u << 10);
  EXPECT_EQ(*ParseByteSize("512M"), 512ull << 20);
  EXPECT_EQ(*ParseByteSize("4G"), 4ull << 30);
  EXPECT_EQ(*ParseByteSize("4gib"), 4ull << 30);
  EXPECT_EQ(*ParseByteSize("1T"), 1ull << 40);
  EXPECT_FALSE(ParseByteSize("").ok());
  EXPECT_FALSE(ParseByteSize("M").ok());
  EXPECT_FALSE(ParseByteSize("12X").ok());
  EXPECT_FALSE(ParseByteSize("-5").ok());
  EXPECT_FALSE(ParseByteSize("99999999999999999999").ok());
  EXPECT_FALSE(ParseByteSize("17179869184G").ok());  // 2^34 GiB overflows
}

TEST(CliFormatBytes, Units) {
  EXPECT_EQ(FormatBytes(12), "12 B");
  EXPECT_EQ(FormatBytes(1536), "1.50 KiB");
  EXPECT_EQ(FormatBytes(3ull << 30), "3.00 GiB");
}

CommandSpec CompactionSpec() {
  return CommandSpec{.name = "t", .usage = "", .summary = "", .flags = CompactionFlagSpecs()};
}

// The compaction options the flags give, or the error.
absl::StatusOr<cache::CompactionOptions> CompactionFrom(const std::vector<std::string>& args) {
  auto p = Parse(CompactionSpec(), args);
  if (!p.ok()) return p.status();
  engine::EngineOptions eo;
  if (absl::Status st = ApplyEngineFlags(*p, &eo); !st.ok()) return st;
  return eo.compaction;
}

TEST(CliCompactionFlags, SetEveryField) {
  auto none = CompactionFrom({});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->policy, cache::CompactionPolicy::kNone);
  EXPECT_EQ(none->sink_tokens, 4);
  auto o = CompactionFrom({"--compaction", "window", "--compaction-sinks", "8",
                           "--compaction-trigger", "0.75", "--compaction-trigger-tokens", "300",
                           "--compaction-target=0.25", "--compaction-max-session-bytes", "2M"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->policy, cache::CompactionPolicy::kWindow);
  EXPECT_EQ(o->sink_tokens, 8);
  EXPECT_EQ(o->trigger_fraction, 0.75);
  EXPECT_EQ(o->trigger_tokens, 300);
  EXPECT_EQ(o->target_fraction, 0.25);
  EXPECT_EQ(o->max_session_bytes, 2 << 20);
  EXPECT_TRUE(CompactionFrom({"--compaction", "none"}).ok());
  EXPECT_TRUE(CompactionFrom({"--compaction-trigger", "1"}).ok());
  // The score and summarize policies' options; absent ones keep the defaults.
  EXPECT_EQ(none->observe_tokens, 32);
  EXPECT_EQ(none->summary_prompt, cache::CompactionOptions::kDefaultSummaryPrompt);
  EXPECT_EQ(none->summary_max_tokens, 256);
  EXPECT_FALSE(none->keep_history);
  auto keep = CompactionFrom({"--compaction", "window", "--compaction-keep-history"});
  ASSERT_TRUE(keep.ok()) << keep.status();
  EXPECT_TRUE(keep->keep_history);
  auto score = CompactionFrom({"--compaction", "score", "--compaction-observe", "16"});
  ASSERT_TRUE(score.ok()) << score.status();
  EXPECT_EQ(score->policy, cache::CompactionPolicy::kScore);
  EXPECT_EQ(score->observe_tokens, 16);
  EXPECT_EQ(score->summary_max_tokens, 256);
  auto summarize = CompactionFrom({"--compaction", "summarize", "--compaction-summary-prompt",
                                   "Sum it up, names included.", "--compaction-summary-tokens=64"});
  ASSERT_TRUE(summarize.ok()) << summarize.status();
  EXPECT_EQ(summarize->policy, cache::CompactionPolicy::kSummarize);
  EXPECT_EQ(summarize->summary_prompt, "Sum it up, names included.");
  EXPECT_EQ(summarize->summary_max_tokens, 64);
  EXPECT_EQ(summarize->observe_tokens, 32);
  EXPECT_TRUE(
      CompactionFrom({"--compaction-observe", "1", "--compaction-summary-tokens", "1"}).ok());
}

TEST(CliCompactionFlags, BadValuesNameTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--compaction", "lru"},
       "--compaction must be none, window, score or summarize, got \"lru\""},
      {{"--compaction", ""}, "--compaction must be none, window, score or summarize"},
      {{"--compaction-sinks", "-1"}, "--compaction-sinks must be >= 0, got -1"},
      {{"--compaction-sinks", "four"}, "--compaction-sinks: not an integer: 'four'"},
      {{"--compaction-trigger", "0"}, "--compaction-trigger must be in (0, 1], got 0"},
      {{"--compaction-trigger", "1.01"}, "--compaction-trigger must be in (0, 1]"},
      {{"--compaction-trigger", "nan"}, "--compaction-trigger must be in (0, 1]"},
      {{"--compaction-trigger-tokens", "-3"}, "--compaction-trigger-tokens must be >= 0"},
      {{"--compaction-target", "1"}, "--compaction-target must be in (0, 1), got 1"},
      {{"--compaction-target", "0"}, "--compaction-target must be in (0, 1), got 0"},
      {{"--compaction-target", "x"}, "--compaction-target: not a number: 'x'"},
      {{"--compaction-max-session-bytes", "-1"}, "--compaction-max-session-bytes: not a byte"},
      {{"--compaction-observe", "0"}, "--compaction-observe must be >= 1, got 0"},
      {{"--compaction-observe", "-4"}, "--compaction-observe must be >= 1, got -4"},
      {{"--compaction-observe", "many"}, "--compaction-observe: not an integer: 'many'"},
      {{"--compaction-summary-tokens", "0"}, "--compaction-summary-tokens must be >= 1, got 0"},
      {{"--compaction-summary-tokens", "1.5"}, "--compaction-summary-tokens: not an integer"},
      {{"--compaction-summary-prompt", ""}, "--compaction-summary-prompt must not be empty"},
  };
  for (const auto& [args, message] : cases) {
    auto o = CompactionFrom(args);
    ASSERT_FALSE(o.ok()) << args[0] << " " << args[1];
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(o.status().message()), ::testing::HasSubstr(message));
  }
}

// serve and bench read the same flags, with their own error prefix and exit code 2 (the
// flags are checked before the model is opened).
TEST(CliCompactionFlags, ServeAndBenchRefuseBadValues) {
  const std::string bin = mnemo::testing::MnemoBinary();
  mnemo::testing::CommandResult serve =
      mnemo::testing::RunCommand({bin, "serve", "/nonexistent.gguf", "--compaction", "lru"});
  EXPECT_EQ(serve.exit_code, 2) << serve.err;
  EXPECT_EQ(serve.err,
            "mnemo serve: --compaction must be none, window, score or summarize, got \"lru\"\n");
  mnemo::testing::CommandResult target = mnemo::testing::RunCommand(
      {bin, "serve", "/nonexistent.gguf", "--compaction", "window", "--compaction-target", "2"});
  EXPECT_EQ(target.exit_code, 2) << target.err;
  EXPECT_EQ(target.err, "mnemo serve: --compaction-target must be in (0, 1), got 2\n");
  mnemo::testing::CommandResult bench =
      mnemo::testing::RunCommand({bin, "bench", "multiturn", "/nonexistent.gguf", "--out",
                                  mnemo::testing::MakeTempDir(), "--compaction-target", "1.5"});
  EXPECT_EQ(bench.exit_code, 2) << bench.err;
  EXPECT_THAT(bench.err, ::testing::HasSubstr("--compaction-target must be in (0, 1), got 1.5"));
  mnemo::testing::CommandResult observe = mnemo::testing::RunCommand(
      {bin, "serve", "/nonexistent.gguf", "--compaction", "score", "--compaction-observe", "0"});
  EXPECT_EQ(observe.exit_code, 2) << observe.err;
  EXPECT_EQ(observe.err, "mnemo serve: --compaction-observe must be >= 1, got 0\n");
  mnemo::testing::CommandResult summary = mnemo::testing::RunCommand(
      {bin, "bench", "multiturn", "/nonexistent.gguf", "--out", mnemo::testing::MakeTempDir(),
       "--compaction-summary-tokens", "0"});
  EXPECT_EQ(summary.exit_code, 2) << summary.err;
  EXPECT_THAT(summary.err, ::testing::HasSubstr("--compaction-summary-tokens must be >= 1, got 0"));
  mnemo::testing::CommandResult help = mnemo::testing::RunCommand({bin, "serve", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, ::testing::HasSubstr("--compaction-trigger-tokens N"));
  for (const char* text : {"--compaction-observe N", "--compaction-summary-prompt TEXT",
                           "--compaction-summary-tokens N", "summarize"}) {
    EXPECT_THAT(help.out, ::testing::HasSubstr(text));
  }
}

// Good values of the new flags pass the flag checks of every command that takes them: the
// command goes on to open the model (and fails there, exit 1, on a missing file).
TEST(CliCompactionFlags, EveryCommandTakesTheNewFlags) {
  const std::string bin = mnemo::testing::MnemoBinary();
  const std::vector<std::string> flags = {"--compaction",
                                          "summarize",
                                          "--compaction-observe",
                                          "8",
                                          "--compaction-summary-prompt",
                                          "Sum up.",
                                          "--compaction-summary-tokens",
                                          "32"};
  for (std::vector<std::string> argv :
       {std::vector<std::string>{bin, "serve", "/nonexistent.gguf"},
        std::vector<std::string>{bin, "chat", "/nonexistent.gguf"},
        std::vector<std::string>{bin, "bench", "multiturn", "/nonexistent.gguf", "--out",
                                 mnemo::testing::MakeTempDir()}}) {
    argv.insert(argv.end(), flags.begin(), flags.end());
    mnemo::testing::CommandResult r = mnemo::testing::RunCommand(argv);
    EXPECT_EQ(r.exit_code, 1) << argv[1] << ": " << r.err;
    EXPECT_THAT(r.err, ::testing::HasSubstr("nonexistent")) << argv[1];
  }
}

}  // namespace
}  // namespace mnemo::cli
