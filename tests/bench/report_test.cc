// The report of `mnemo bench multiturn` (bench/stateful/report.h) on hand-computed cases: the
// percentiles, one tiny stateful run whose every statistic and cost is worked out below, the
// break-even and cost-vs-think arithmetic, the three files, and the plot script on them.
#include "bench/stateful/report.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mnemo::bench {
namespace {

using nlohmann::json;

constexpr double kEps = 1e-9;

// Prices chosen so that one GB-second costs 0.001 (device), 0.0005 (host), 0.0001 (disk).
CostInputs Prices() {
  CostInputs p;
  p.compute_per_hour = 2.0;
  p.device_gb_hour = 3.6;
  p.host_gb_hour = 1.8;
  p.disk_gb_hour = 0.36;
  return p;
}

// Two conversations: 0 has three turns (think 10 s, then 20 s), 1 has two (think 30 s).
Workload TinyWorkload() {
  Workload w;
  w.name = "tiny";
  WorkloadConversation c0;
  c0.id = "chat-0";
  c0.turns = {{"a", 11, 0}, {"b", 11, 10}, {"c", 4, 20}};
  WorkloadConversation c1;
  c1.id = "chat-1";
  c1.turns = {{"d", 6, 0}, {"e", 8, 30}};
  w.conversations = {c0, c1};
  return w;
}

TurnRecord Record(int conversation, int turn, double start, double ttft, double end, int64_t prompt,
                  int64_t cached, int64_t generated, int64_t context, std::string error = "") {
  TurnRecord t;
  t.conversation = conversation;
  t.turn = turn;
  t.start_seconds = start;
  t.ttft_seconds = ttft;
  t.end_seconds = end;
  t.prompt_tokens = prompt;
  t.cached_tokens = cached;
  t.generated_tokens = generated;
  t.context_tokens = context;
  t.error = std::move(error);
  return t;
}

// A stateful run of TinyWorkload: 4 successful turns and one failed (conversation 1, turn 1).
// Conversation 1's first record does not know its context: the fallback gives
// max(0 + (200 - 100) + 6, 200 + 6) = 206 tokens.
ModeRun TinyStatefulRun() {
  ModeRun run;
  run.mode = BenchMode::kStateful;
  run.driver = "engine";
  run.wall_seconds = 10;
  run.counters.busy_seconds = 3.6;  // compute: 3.6 s * 2 / 3600 = 0.002
  run.kv_bytes_per_token = 1'000'000;
  run.turns = {
      Record(0, 0, 0.0, 0.1, 1.1, 100, 0, 11, 111),  // 10 tokens after the first in 1.0 s
      Record(1, 0, 1.0, 0.5, 2.5, 200, 100, 6, -1),  // 5 in 1.0 s
      Record(0, 1, 2.0, 0.2, 3.2, 50, 0, 11, 172),   // 10 in 1.0 s
      Record(1, 1, 3.0, 0.0, 3.0, 30, 0, 0, -1, "connection reset, retry later"),
      Record(0, 2, 5.0, 0.3, 5.6, 40, 0, 4, 216),  // 3 in 0.3 s
  };
  // Byte-seconds (trapezoid): device 1e9 + 2e9, host 1e9, disk 2e9.
  run.samples = {
      {0, 0, 0, 0}, {2, 1'000'000'000, 0, 0}, {4, 1'000'000'000, 1'000'000'000, 2'000'000'000}};
  return run;
}

// A stateless run of the same workload: twice the busy time, no samples.
ModeRun TinyStatelessRun() {
  ModeRun run = TinyStatefulRun();
  run.mode = BenchMode::kStateless;
  run.driver = "engine";
  run.counters.busy_seconds = 7.2;  // 0.004: 0.001 per successful turn
  run.samples.clear();
  for (TurnRecord& t : run.turns) t.cached_tokens = 0;
  return run;
}

BenchResult TinyResult(const CostInputs& prices) {
  BenchResult r;
  r.config = {{"model", "tiny.gguf"}, {"seed", 7}};
  r.workload = TinyWorkload();
  r.workload_stats.conversations = 2;
  r.workload_stats.turns = 5;
  r.workload_stats.mean_think_seconds = 20;
  r.prices = prices;
  r.runs = {TinyStatelessRun(), TinyStatefulRun()};
  for (const ModeRun& run : r.runs) r.summaries.push_back(SummarizeRun(run, r.workload, prices));
  return r;
}

TEST(BenchReport, PercentileInterpolatesLinearlyLikeNumpy) {
  EXPECT_NEAR(Percentile({1, 2, 3, 4}, 50), 2.5, kEps);
  EXPECT_NEAR(Percentile({1, 2, 3, 4}, 90), 3.7, kEps);
  EXPECT_NEAR(Percentile({1, 2, 3, 4}, 99), 3.97, kEps);
  EXPECT_NEAR(Percentile({4, 1, 3, 2}, 90), 3.7, kEps);  // unsorted input
  EXPECT_NEAR(Percentile({1, 2, 3, 4}, 0), 1, kEps);
  EXPECT_NEAR(Percentile({1, 2, 3, 4}, 100), 4, kEps);
  EXPECT_NEAR(Percentile({7}, 50), 7, kEps);
  EXPECT_NEAR(Percentile({7}, 99), 7, kEps);
  EXPECT_EQ(Percentile({}, 50), 0);
  EXPECT_NEAR(Percentile({10, 0}, 25), 2.5, kEps);
}

TEST(BenchReport, SummarizeGivesQuantilesMeanAndCount) {
  const Quantiles q = Summarize({3, 1, 4, 2});
  EXPECT_NEAR(q.p50, 2.5, kEps);
  EXPECT_NEAR(q.p90, 3.7, kEps);
  EXPECT_NEAR(q.p99, 3.97, kEps);
  EXPECT_NEAR(q.mean, 2.5, kEps);
  EXPECT_EQ(q.count, 4);
  const Quantiles empty = Summarize({});
  EXPECT_EQ(empty.count, 0);
  EXPECT_EQ(empty.p50, 0);
}

TEST(BenchReport, SummarizeRunLatencyAndTokens) {
  const ModeSummary s = SummarizeRun(TinyStatefulRun(), TinyWorkload(), Prices());
  EXPECT_EQ(s.mode, BenchMode::kStateful);
  EXPECT_EQ(s.driver, "engine");
  EXPECT_EQ(s.turns_ok, 4);
  EXPECT_EQ(s.turns_failed, 1);
  // TTFT of the successful turns {0.1, 0.5, 0.2, 0.3}.
  EXPECT_EQ(s.ttft_seconds.count, 4);
  EXPECT_NEAR(s.ttft_seconds.p50, 0.25, kEps);
  EXPECT_NEAR(s.ttft_seconds.p90, 0.44, kEps);
  EXPECT_NEAR(s.ttft_seconds.mean, 0.275, kEps);
  ASSERT_EQ(s.ttft_by_turn.size(), 3u);
  EXPECT_NEAR(s.ttft_by_turn[0].p50, 0.3, kEps);  // {0.1, 0.5}
  EXPECT_EQ(s.ttft_by_turn[0].count, 2);
  EXPECT_NEAR(s.ttft_by_turn[1].p50, 0.2, kEps);  // the failed turn is left out
  EXPECT_EQ(s.ttft_by_turn[1].count, 1);
  EXPECT_NEAR(s.ttft_by_turn[2].p50, 0.3, kEps);
  // Per token after the first: 0.1, 0.2, 0.1, 0.1.
  EXPECT_EQ(s.token_seconds.count, 4);
  EXPECT_NEAR(s.token_seconds.p50, 0.1, kEps);
  EXPECT_NEAR(s.token_seconds.mean, 0.125, kEps);
  EXPECT_NEAR(s.requests_per_second, 0.4, kEps);
  // Token sums over every record: prompts 420, cached 100, generated 32.
  EXPECT_EQ(s.prompt_tokens, 420);
  EXPECT_EQ(s.cached_tokens, 100);
  EXPECT_EQ(s.computed_tokens, 320);
  EXPECT_EQ(s.generated_tokens, 32);
  EXPECT_NEAR(s.generated_tokens_per_second, 3.2, kEps);
  EXPECT_EQ(s.computed_by_turn, (std::vector<int64_t>{200, 80, 40}));
  EXPECT_EQ(s.peak_device_bytes, 1'000'000'000);
  EXPECT_EQ(s.peak_host_bytes, 1'000'000'000);
  EXPECT_EQ(s.peak_disk_bytes, 2'000'000'000);
  EXPECT_NEAR(s.busy_seconds, 3.6, kEps);
  EXPECT_FALSE(s.busy_is_wall);
}

TEST(BenchReport, SummarizeRunCost) {
  const ModeSummary s = SummarizeRun(TinyStatefulRun(), TinyWorkload(), Prices());
  const ModeCost& c = s.cost;
  EXPECT_NEAR(c.compute_cost, 0.002, kEps);
  // 3 GB-s device * 0.001 + 1 GB-s host * 0.0005 + 2 GB-s disk * 0.0001.
  EXPECT_NEAR(c.measured_memory_cost, 0.0037, kEps);
  EXPECT_NEAR(c.device_share, 0.5, kEps);
  EXPECT_NEAR(c.host_share, 1.0 / 6, kEps);
  EXPECT_NEAR(c.disk_share, 1.0 / 3, kEps);
  // Held while thinking: 111 MB * 10 s + 172 MB * 20 s + 206 MB * 30 s = 10.73 GB-s over
  // 60 s of think time; 489 MB summed. Priced at the mix 0.5 * 0.001 + 0.0005 / 6 +
  // 0.0001 / 3 per GB-s.
  const double mix = 0.5 * 0.001 + 0.0005 / 6 + 0.0001 / 3;
  EXPECT_NEAR(c.held_bytes_sum, 489e6, 1e-3);
  EXPECT_NEAR(c.held_byte_seconds_per_think_second, 10.73e9 / 60, 1e-3);
  EXPECT_NEAR(c.think_memory_cost, 10.73 * mix, kEps);
  const double total = 0.002 + 0.0037 + 10.73 * mix;
  EXPECT_NEAR(c.total, total, kEps);
  EXPECT_NEAR(c.per_1000_conversations, total / 2 * 1000, 1e-9);
  EXPECT_NEAR(c.per_million_generated_tokens, total / 32 * 1e6, 1e-6);
}

TEST(BenchReport, StatelessHoldsNothingAndUnknownBusyIsWall) {
  ModeRun run = TinyStatelessRun();
  run.counters.busy_seconds = -1;
  const ModeSummary s = SummarizeRun(run, TinyWorkload(), Prices());
  EXPECT_TRUE(s.busy_is_wall);
  EXPECT_NEAR(s.busy_seconds, 10, kEps);
  EXPECT_NEAR(s.cost.compute_cost, 10 * 2.0 / 3600, kEps);
  EXPECT_EQ(s.cost.measured_memory_cost, 0);
  EXPECT_EQ(s.cost.think_memory_cost, 0);
  EXPECT_EQ(s.cost.held_bytes_sum, 0);
  EXPECT_EQ(s.cost.device_share, 1);  // no samples: all device
  EXPECT_EQ(s.computed_tokens, 420);
}

TEST(BenchReport, SpillWithoutSamplesPricesThinkMemoryOnDevice) {
  ModeRun run = TinyStatefulRun();
  run.mode = BenchMode::kSpill;
  run.samples.clear();
  const ModeSummary s = SummarizeRun(run, TinyWorkload(), Prices());
  EXPECT_EQ(s.cost.device_share, 1);
  EXPECT_EQ(s.cost.measured_memory_cost, 0);
  EXPECT_NEAR(s.cost.think_memory_cost, 10.73 * 0.001, kEps);
}

TEST(BenchReport, BreakEvenThinkSeconds) {
  const CostInputs p = Prices();
  ModeSummary stateless, stateful;
  stateless.turns_ok = stateful.turns_ok = 10;
  stateless.cost.compute_cost = 10;                        // 1 per turn
  stateful.cost.compute_cost = 5;                          // 0.5 per turn: saves 0.5
  stateful.cost.held_byte_seconds_per_think_second = 1e9;  // 1 GB: 0.001 per s on device
  EXPECT_NEAR(BreakEvenThinkSeconds(stateful, stateless, "device", p), 500, 1e-6);
  EXPECT_NEAR(BreakEvenThinkSeconds(stateful, stateless, "host", p), 1000, 1e-6);
  EXPECT_NEAR(BreakEvenThinkSeconds(stateful, stateless, "disk", p), 5000, 1e-6);

  CostInputs free = p;
  free.device_gb_hour = 0;
  EXPECT_EQ(BreakEvenThinkSeconds(stateful, stateless, "device", free),
            std::numeric_limits<double>::infinity());
  ModeSummary holds_nothing = stateful;
  holds_nothing.cost.held_byte_seconds_per_think_second = 0;
  EXPECT_TRUE(std::isinf(BreakEvenThinkSeconds(holds_nothing, stateless, "host", p)));

  ModeSummary expensive = stateful;
  expensive.cost.compute_cost = 12;  // more compute than the stateless mode: no saving
  EXPECT_EQ(BreakEvenThinkSeconds(expensive, stateless, "device", p), 0);
  EXPECT_EQ(BreakEvenThinkSeconds(expensive, stateless, "device", free), 0);
  EXPECT_TRUE(std::isnan(BreakEvenThinkSeconds(stateful, stateless, "tape", p)));
}

TEST(BenchReport, BreakEvenFromTheTinyRuns) {
  const CostInputs p = Prices();
  const Workload w = TinyWorkload();
  const ModeSummary stateful = SummarizeRun(TinyStatefulRun(), w, p);
  const ModeSummary stateless = SummarizeRun(TinyStatelessRun(), w, p);
  // Saves 0.001 - 0.0005 per turn; holds 10.73e9 / 60 bytes at 1e-12 per byte-second.
  const double held_price = 10.73e9 / 60 * 1e-12;
  EXPECT_NEAR(BreakEvenThinkSeconds(stateful, stateless, "device", p), 0.0005 / held_price, 1e-9);
  EXPECT_NEAR(BreakEvenThinkSeconds(stateful, stateless, "disk", p), 0.0005 / (held_price / 10),
              1e-8);
}

TEST(BenchReport, CostPer1000AtThinkRepricesOnlyTheThinkMemory) {
  const CostInputs p = Prices();
  const Workload w = TinyWorkload();
  const ModeSummary stateful = SummarizeRun(TinyStatefulRun(), w, p);
  const double mix = 0.5 * 0.001 + 0.0005 / 6 + 0.0001 / 3;
  // (compute 0.002 + measured 0.0037 + 0.489 GB * T * mix) / 2 conversations * 1000.
  EXPECT_NEAR(CostPer1000AtThink(stateful, w, 0, p), 0.0057 / 2 * 1000, 1e-9);
  EXPECT_NEAR(CostPer1000AtThink(stateful, w, 100, p), (0.0057 + 48.9 * mix) / 2 * 1000, 1e-9);
  const ModeSummary stateless = SummarizeRun(TinyStatelessRun(), w, p);
  EXPECT_NEAR(CostPer1000AtThink(stateless, w, 3600, p), 0.004 / 2 * 1000, 1e-9);
  EXPECT_EQ(CostPer1000AtThink(stateful, Workload{}, 100, p), 0);
}

TEST(BenchReport, CsvHasAHeaderAndOneRowPerRecord) {
  const BenchResult r = TinyResult(Prices());
  const std::string csv = ResultCsv(r);
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t nl; (nl = csv.find('\n', start)) != std::string::npos; start = nl + 1) {
    lines.push_back(csv.substr(start, nl - start));
  }
  EXPECT_EQ(start, csv.size());  // ends with a newline
  ASSERT_EQ(lines.size(), 1u + 10u);
  EXPECT_EQ(lines[0],
            "mode,driver,conversation,turn,start_s,ttft_s,end_s,prompt_tokens,cached_tokens,"
            "generated_tokens,context_tokens,error");
  EXPECT_EQ(lines[1].rfind("stateless,engine,0,0,", 0), 0u) << lines[1];
  EXPECT_EQ(lines[7].rfind("stateful,engine,1,0,", 0), 0u) << lines[7];
  // The error has a comma: quoted.
  EXPECT_NE(lines[9].find(",30,0,0,-1,\"connection reset, retry later\""), std::string::npos)
      << lines[9];
}

TEST(BenchReport, JsonHasWhatThePlotScriptReads) {
  const BenchResult r = TinyResult(Prices());
  const json j = ResultJson(r);
  EXPECT_EQ(j["config"]["seed"], 7);
  EXPECT_EQ(j["workload"]["name"], "tiny");
  EXPECT_EQ(j["workload"]["mean_think_seconds"], 20.0);
  ASSERT_EQ(j["modes"].size(), 2u);
  const json& stateful = j["modes"][1];
  EXPECT_EQ(stateful["label"], "stateful");
  EXPECT_EQ(stateful["mode"], "stateful");
  ASSERT_EQ(stateful["ttft_by_turn"].size(), 3u);
  EXPECT_NEAR(stateful["ttft_by_turn"][0]["p50"].get<double>(), 0.3, kEps);
  EXPECT_NEAR(stateful["ttft_by_turn"][0]["p90"].get<double>(), 0.46, kEps);
  EXPECT_EQ(stateful["computed_by_turn"], json({200, 80, 40}));
  EXPECT_EQ(stateful["computed_by_turn_cumulative"], json({200, 280, 320}));
  EXPECT_EQ(stateful["samples"]["seconds"], json({0.0, 2.0, 4.0}));
  EXPECT_EQ(stateful["samples"]["disk_bytes"], json({0, 0, 2'000'000'000}));
  ASSERT_TRUE(stateful["samples"].contains("device_bytes"));
  ASSERT_TRUE(stateful["samples"].contains("host_bytes"));
  EXPECT_NEAR(stateful["cost"]["per_1000_conversations"].get<double>(),
              r.summaries[1].cost.per_1000_conversations, kEps);
  EXPECT_EQ(stateful["turns"].size(), 5u);

  ASSERT_EQ(j["break_even"].size(), 1u);
  const json& be = j["break_even"][0];
  EXPECT_EQ(be["mode"], "stateful");
  EXPECT_EQ(be["versus"], "stateless");
  EXPECT_NEAR(be["device"].get<double>(), 0.0005 / (10.73e9 / 60 * 1e-12), 1e-9);

  const json& cvt = j["cost_vs_think"];
  EXPECT_EQ(cvt["think_seconds"], json({0.0, 5.0, 30.0, 120.0, 600.0, 3600.0}));
  ASSERT_EQ(cvt["modes"].size(), 2u);
  EXPECT_EQ(cvt["modes"][1]["mode"], "stateful");
  ASSERT_EQ(cvt["modes"][1]["per_1000_conversations"].size(), 6u);
  EXPECT_NEAR(cvt["modes"][1]["per_1000_conversations"][0].get<double>(), 2.85, 1e-9);
}

TEST(BenchReport, FreeMemoryNeverBreaksEven) {
  CostInputs free = Prices();
  free.device_gb_hour = free.host_gb_hour = free.disk_gb_hour = 0;
  const BenchResult r = TinyResult(free);
  const json j = ResultJson(r);
  ASSERT_EQ(j["break_even"].size(), 1u);
  EXPECT_TRUE(j["break_even"][0]["device"].is_null());
  EXPECT_TRUE(j["break_even"][0]["disk"].is_null());
  const std::string md = ReportMarkdown(r);
  EXPECT_NE(md.find("| stateful | stateless | never | never | never |"), std::string::npos) << md;
}

TEST(BenchReport, PrefixIsTheBaselineWithoutStateless) {
  BenchResult r = TinyResult(Prices());
  r.runs[0].mode = BenchMode::kPrefix;
  r.summaries[0].mode = BenchMode::kPrefix;
  const json j = ResultJson(r);
  ASSERT_EQ(j["break_even"].size(), 1u);
  EXPECT_EQ(j["break_even"][0]["versus"], "prefix");
  r.runs.erase(r.runs.begin());
  r.summaries.erase(r.summaries.begin());
  EXPECT_TRUE(ResultJson(r)["break_even"].empty());
}

TEST(BenchReport, MarkdownHasTheTablesAndPlots) {
  const std::string md = ReportMarkdown(TinyResult(Prices()));
  for (const char* s : {"# mnemo bench multiturn: tiny", "- model: tiny.gguf", "| stateless |",
                        "| TTFT p50 (ms) | 250.0 | 250.0 |", "## TTFT p50 by turn index (ms)",
                        "| 0 | 300.0 | 300.0 |", "| prompt tokens reused | 0 | 100 |",
                        "| bytes to host | n/a | n/a |", "| peak disk | 0 B | 1.86 GiB |",
                        "| busy s | 7.20 | 3.60 |", "### Break-even think time",
                        "### Cost per 1000 conversations vs think time", "| 0.0 s | 2.0000 |",
                        "![TTFT p50 by turn index](ttft_by_turn.png)", "(prefill_tokens.png)",
                        "(tier_occupancy.png)", "(cost.png)"}) {
    EXPECT_NE(md.find(s), std::string::npos) << "missing \"" << s << "\" in\n" << md;
  }
}

TEST(BenchReport, MarkdownCapsTheTurnTable) {
  BenchResult r = TinyResult(Prices());
  ModeRun& run = r.runs[1];
  for (int t = 3; t < 25; ++t) run.turns.push_back(Record(0, t, 6, 0.1, 7, 10, 0, 2, -1));
  r.summaries[1] = SummarizeRun(run, r.workload, r.prices);
  const std::string md = ReportMarkdown(r);
  EXPECT_NE(md.find("| 19 |"), std::string::npos);
  EXPECT_EQ(md.find("| 20 |"), std::string::npos);
  EXPECT_NE(md.find("The first 20 of 25 turn indices"), std::string::npos) << md;
}

TEST(BenchReport, WriteReportWritesTheThreeFiles) {
  const BenchResult r = TinyResult(Prices());
  const std::string dir = testing::MakeTempDir() + "/out/nested";
  ASSERT_TRUE(WriteReport(r, dir).ok());
  const json j = json::parse(testing::ReadFile(dir + "/result.json"), nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j, ResultJson(r));
  EXPECT_EQ(testing::ReadFile(dir + "/result.csv"), ResultCsv(r));
  EXPECT_EQ(testing::ReadFile(dir + "/report.md"), ReportMarkdown(r));
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    EXPECT_NE(entry.path().extension(), ".tmp") << "left behind: " << entry.path();
  }
  // Writing again replaces the files.
  EXPECT_TRUE(WriteReport(r, dir).ok());
}

TEST(BenchReport, WriteReportNamesTheDirectoryItCannotCreate) {
  const std::string file = testing::MakeTempDir() + "/plain_file";
  {
    std::FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  const std::string dir = file + "/report";
  const absl::Status s = WriteReport(TinyResult(Prices()), dir);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find(dir), std::string::npos) << s;
}

// ---- tools/bench_plots.py --------------------------------------------------------------

std::string Python() {
  for (const char* p : {"/usr/bin/python3", "/usr/local/bin/python3"}) {
    if (testing::FileExists(p)) return p;
  }
  return "";
}

std::string PlotScript() { return testing::SourceDir() + "/tools/bench_plots.py"; }

TEST(BenchReport, PlotScriptDrawsTheFourPngs) {
  const std::string python = Python();
  if (python.empty()) GTEST_SKIP() << "no python3";
  if (testing::RunCommand({python, "-c", "import matplotlib"}).exit_code != 0) {
    GTEST_SKIP() << "matplotlib is not installed for " << python;
  }
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(WriteReport(TinyResult(Prices()), dir).ok());
  const testing::CommandResult run = testing::RunCommand({python, PlotScript(), dir});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::string signature = "\x89PNG\r\n\x1a\n";
  for (const char* name :
       {"ttft_by_turn.png", "prefill_tokens.png", "tier_occupancy.png", "cost.png"}) {
    const std::string png = testing::ReadFile(dir + "/" + name);
    EXPECT_GT(png.size(), 1000u) << name;
    EXPECT_EQ(png.substr(0, signature.size()), signature) << name;
  }
}

TEST(BenchReport, PlotScriptNamesAMissingOrInvalidResult) {
  const std::string python = Python();
  if (python.empty()) GTEST_SKIP() << "no python3";
  const std::string dir = testing::MakeTempDir();
  testing::CommandResult run = testing::RunCommand({python, PlotScript(), dir});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find(dir + "/result.json"), std::string::npos) << run.err;

  {
    std::FILE* f = std::fopen((dir + "/result.json").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("{\"modes\": [", f);
    std::fclose(f);
  }
  run = testing::RunCommand({python, PlotScript(), dir});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("invalid JSON"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find(dir + "/result.json"), std::string::npos) << run.err;
}

}  // namespace
}  // namespace mnemo::bench
