// The report of `mnemo bench multiturn`: per-mode statistics from the runs' records, the
// cost model, and the output files (result.json, result.csv, report.md). The PNG plots are
// drawn from result.json by tools/bench_plots.py. Pure functions of their inputs (no clock,
// no I/O but the writers), so the arithmetic is tested on hand-computed cases.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bench/stateful/types.h"
#include "bench/stateful/workload.h"
#include "nlohmann/json.hpp"

namespace mnemo::bench {

// The p-th percentile (0 <= p <= 100) by linear interpolation between closest ranks (numpy's
// default "linear" method): sorted v, rank r = p/100 * (n - 1), v[floor r] + frac * (v[ceil r]
// - v[floor r]). 0 for an empty vector.
double Percentile(std::vector<double> v, double p);

struct Quantiles {
  double p50 = 0, p90 = 0, p99 = 0, mean = 0;
  int64_t count = 0;
};
Quantiles Summarize(const std::vector<double>& v);

// What the cost model needs of one mode, derived from its run.
struct ModeCost {
  double compute_cost = 0;          // busy seconds * compute_per_hour / 3600
  double measured_memory_cost = 0;  // tier byte-seconds integrated over the samples, priced
  // Holding the conversations' state through the workload's think times (the stateful modes;
  // 0 for the stateless ones): sum over turns but the last of (KV bytes of the context after
  // the turn) * (think seconds before the next turn), split over the tiers in the proportions
  // the run's samples show (all device when there are no samples), priced.
  double think_memory_cost = 0;
  double total = 0;  // compute + measured memory + think memory
  double per_1000_conversations = 0;
  double per_million_generated_tokens = 0;
  // For the break-even: averages per turn after the first.
  double held_byte_seconds_per_think_second = 0;  // mean bytes held while users think
  double held_bytes_sum = 0;  // sum over those turns of the bytes held (CostPer1000AtThink)
  double device_share = 1, host_share = 0, disk_share = 0;  // where they are held
};

struct ModeSummary {
  BenchMode mode = BenchMode::kStateless;
  std::string driver;
  int64_t turns_ok = 0, turns_failed = 0;
  Quantiles ttft_seconds;               // every successful turn
  std::vector<Quantiles> ttft_by_turn;  // index = turn index
  Quantiles token_seconds;              // per-token latency after the first token:
                                        // (end - first token) / (generated - 1),
                                        // turns with >= 2 tokens
  double requests_per_second = 0;       // turns / wall
  double generated_tokens_per_second = 0;
  int64_t prompt_tokens = 0, cached_tokens = 0, computed_tokens = 0;  // from the turns
  int64_t generated_tokens = 0;
  std::vector<int64_t> computed_by_turn;  // prefill tokens computed, summed per turn index
  ServerCounters counters;
  int64_t peak_device_bytes = 0, peak_host_bytes = 0, peak_disk_bytes = 0;
  double busy_seconds = 0;  // counters.busy_seconds, or wall_seconds when unknown
  bool busy_is_wall = false;
  ModeCost cost;
};

ModeSummary SummarizeRun(const ModeRun& run, const Workload& w, const CostInputs& prices);

// Break-even think time between a stateful summary and a stateless one: the think time T
// (seconds) at which holding the state on `tier` ("device" | "host" | "disk") costs as much
// as the compute it saves per turn: T = (stateless compute per turn - stateful compute per
// turn) / (held bytes per turn * price per byte-second of the tier). +inf when holding costs
// nothing; 0 when the stateful mode saves no compute.
double BreakEvenThinkSeconds(const ModeSummary& stateful, const ModeSummary& stateless,
                             const std::string& tier, const CostInputs& prices);

// Cost per 1000 conversations of `s` if every think time of the workload were `think_seconds`
// (the compute and measured memory as run, the think memory re-priced).
double CostPer1000AtThink(const ModeSummary& s, const Workload& w, double think_seconds,
                          const CostInputs& prices);

struct BenchResult {
  nlohmann::json config;  // the command line's settings, the model, the machine
  Workload workload;
  WorkloadStats workload_stats;
  CostInputs prices;
  std::vector<ModeRun> runs;
  std::vector<ModeSummary> summaries;  // one per run, same order
};

// result.json: config, workload stats, prices, per mode its summary (TTFT quantiles overall
// and by turn, per-token latency, throughput, tokens, counters, peaks, cost, the tier samples
// and the per-turn records), the break-even table and the cost-vs-think-time table.
nlohmann::json ResultJson(const BenchResult& r);
// result.csv: one row per turn record: mode,driver,conversation,turn,start_s,ttft_s,end_s,
// prompt_tokens,cached_tokens,generated_tokens,context_tokens,error.
std::string ResultCsv(const BenchResult& r);
// report.md: the settings, the workload's statistics, a table of the modes side by side,
// TTFT p50 by turn index, the cost table with its inputs, the break-even think times, and
// links to the PNG plots.
std::string ReportMarkdown(const BenchResult& r);

// Writes result.json, result.csv and report.md into `dir` (created if missing), each
// through a temporary file renamed into place.
absl::Status WriteReport(const BenchResult& r, const std::string& dir);

}  // namespace mnemo::bench
