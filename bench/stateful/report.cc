// The statistics and the cost model of `mnemo bench multiturn`, result.json, and the writer
// of the three report files. The Markdown and CSV texts are in report_text.cc.
#include "bench/stateful/report.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace mnemo::bench {
namespace {

using Json = nlohmann::json;

constexpr double kSecondsPerHour = 3600;
constexpr double kBytesPerGb = 1e9;
// The think times of the cost-vs-think-time table (seconds).
constexpr double kThinkTimes[] = {0, 5, 30, 120, 600, 3600};

double PricePerByteSecond(double gb_hour) { return gb_hour / kBytesPerGb / kSecondsPerHour; }

bool HoldsState(BenchMode m) { return m == BenchMode::kStateful || m == BenchMode::kSpill; }

// The price of one byte held for one second, spread over the tiers as the run held its bytes.
double MixPricePerByteSecond(const ModeCost& c, const CostInputs& p) {
  return c.device_share * PricePerByteSecond(p.device_gb_hour) +
         c.host_share * PricePerByteSecond(p.host_gb_hour) +
         c.disk_share * PricePerByteSecond(p.disk_gb_hour);
}

double ComputePerTurn(const ModeSummary& s) {
  return s.turns_ok > 0 ? s.cost.compute_cost / static_cast<double>(s.turns_ok) : 0;
}

// Byte-seconds held on each tier: the trapezoid rule over consecutive samples (sorted by
// time, so that out-of-order samples do not subtract).
struct TierByteSeconds {
  double device = 0, host = 0, disk = 0;
};

TierByteSeconds IntegrateSamples(std::vector<TierSample> samples) {
  std::stable_sort(samples.begin(), samples.end(),
                   [](const TierSample& a, const TierSample& b) { return a.seconds < b.seconds; });
  TierByteSeconds t;
  for (size_t i = 1; i < samples.size(); ++i) {
    const TierSample& a = samples[i - 1];
    const TierSample& b = samples[i];
    const double dt = b.seconds - a.seconds;
    t.device += 0.5 * static_cast<double>(a.device_bytes + b.device_bytes) * dt;
    t.host += 0.5 * static_cast<double>(a.host_bytes + b.host_bytes) * dt;
    t.disk += 0.5 * static_cast<double>(a.disk_bytes + b.disk_bytes) * dt;
  }
  return t;
}

// Where the run held its bytes: the byte-second shares of the tiers; when the samples span no
// time (a single sample), the shares of their summed bytes; all device without any bytes.
void SetTierShares(const std::vector<TierSample>& samples, const TierByteSeconds& integral,
                   ModeCost& cost) {
  double device = integral.device, host = integral.host, disk = integral.disk;
  if (device + host + disk <= 0) {
    device = host = disk = 0;
    for (const TierSample& s : samples) {
      device += static_cast<double>(s.device_bytes);
      host += static_cast<double>(s.host_bytes);
      disk += static_cast<double>(s.disk_bytes);
    }
  }
  const double total = device + host + disk;
  if (total <= 0) {
    cost.device_share = 1;
    cost.host_share = cost.disk_share = 0;
    return;
  }
  cost.device_share = device / total;
  cost.host_share = host / total;
  cost.disk_share = disk / total;
}

// The state held through the think times: for every successful turn t of a conversation
// whose workload has a turn t + 1, the KV bytes of the context after turn t, weighted by the
// think seconds before turn t + 1 (a failed turn t + 1 was still waited for).
struct HeldState {
  double bytes_sum = 0;   // sum of held bytes
  double byte_think = 0;  // sum of held bytes * think seconds
  double think_sum = 0;   // sum of think seconds
  int64_t gaps = 0;       // the turns counted
};

// Context length after each turn when the record does not say (context_tokens < 0): the
// previous turn's context plus what entered the model this turn (prompt - cached, which is
// the new message whether the server reports prompt_tokens as the new message only or as the
// whole history with the history cached) plus the reply; at least this turn's prompt plus
// its reply (a server that reports the whole history as prompt, a prefix hit on turn 0).
int64_t NextContext(int64_t previous, const TurnRecord& t) {
  const int64_t entered = std::max<int64_t>(0, t.prompt_tokens - t.cached_tokens);
  return std::max(previous + entered + t.generated_tokens, t.prompt_tokens + t.generated_tokens);
}

HeldState HeldDuringThink(const ModeRun& run, const Workload& w) {
  HeldState h;
  if (!HoldsState(run.mode) || run.kv_bytes_per_token <= 0) return h;
  const int conversations = static_cast<int>(w.conversations.size());
  std::vector<std::vector<const TurnRecord*>> by_conversation(w.conversations.size());
  for (const TurnRecord& t : run.turns) {
    if (!t.error.empty() || t.conversation < 0 || t.conversation >= conversations) continue;
    by_conversation[t.conversation].push_back(&t);
  }
  for (int c = 0; c < conversations; ++c) {
    std::vector<const TurnRecord*>& records = by_conversation[c];
    std::stable_sort(records.begin(), records.end(),
                     [](const TurnRecord* a, const TurnRecord* b) { return a->turn < b->turn; });
    const std::vector<WorkloadTurn>& turns = w.conversations[c].turns;
    int64_t context = 0;
    for (const TurnRecord* t : records) {
      context = t->context_tokens >= 0 ? t->context_tokens : NextContext(context, *t);
      if (t->turn < 0 || static_cast<size_t>(t->turn) + 1 >= turns.size()) continue;
      const double held =
          static_cast<double>(run.kv_bytes_per_token) * static_cast<double>(context);
      const double think = std::max(0.0, turns[t->turn + 1].think_seconds);
      h.bytes_sum += held;
      h.byte_think += held * think;
      h.think_sum += think;
      ++h.gaps;
    }
  }
  return h;
}

ModeCost CostOf(const ModeRun& run, const ModeSummary& s, const Workload& w, const CostInputs& p) {
  ModeCost cost;
  cost.compute_cost = s.busy_seconds * p.compute_per_hour / kSecondsPerHour;
  const TierByteSeconds integral = IntegrateSamples(run.samples);
  cost.measured_memory_cost = integral.device * PricePerByteSecond(p.device_gb_hour) +
                              integral.host * PricePerByteSecond(p.host_gb_hour) +
                              integral.disk * PricePerByteSecond(p.disk_gb_hour);
  SetTierShares(run.samples, integral, cost);
  const HeldState held = HeldDuringThink(run, w);
  cost.held_bytes_sum = held.bytes_sum;
  if (held.think_sum > 0) {
    cost.held_byte_seconds_per_think_second = held.byte_think / held.think_sum;
  } else if (held.gaps > 0) {  // no think time at all: the plain mean
    cost.held_byte_seconds_per_think_second = held.bytes_sum / static_cast<double>(held.gaps);
  }
  cost.think_memory_cost = held.byte_think * MixPricePerByteSecond(cost, p);
  cost.total = cost.compute_cost + cost.measured_memory_cost + cost.think_memory_cost;
  if (!w.conversations.empty()) {
    cost.per_1000_conversations = cost.total / static_cast<double>(w.conversations.size()) * 1000;
  }
  if (s.generated_tokens > 0) {
    cost.per_million_generated_tokens = cost.total / static_cast<double>(s.generated_tokens) * 1e6;
  }
  return cost;
}

// ---- JSON helpers ----------------------------------------------------------------------

// JSON has no inf or NaN: null.
Json Number(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }

Json QuantilesJson(const Quantiles& q) {
  if (q.count == 0) {
    return {{"p50", nullptr}, {"p90", nullptr}, {"p99", nullptr}, {"mean", nullptr}, {"count", 0}};
  }
  return {{"p50", q.p50}, {"p90", q.p90}, {"p99", q.p99}, {"mean", q.mean}, {"count", q.count}};
}

Json CountersJson(const ServerCounters& c) {
  return {{"busy_seconds", c.busy_seconds},
          {"tokens_computed", c.tokens_computed},
          {"tokens_reused", c.tokens_reused},
          {"tokens_generated", c.tokens_generated},
          {"bytes_to_host", c.bytes_to_host},
          {"bytes_from_host", c.bytes_from_host},
          {"bytes_to_disk", c.bytes_to_disk},
          {"bytes_from_disk", c.bytes_from_disk},
          {"spills_to_host", c.spills_to_host},
          {"spills_to_disk", c.spills_to_disk},
          {"restores_from_host", c.restores_from_host},
          {"restores_from_disk", c.restores_from_disk}};
}

Json CostJson(const ModeCost& c) {
  return {{"compute", c.compute_cost},
          {"measured_memory", c.measured_memory_cost},
          {"think_memory", c.think_memory_cost},
          {"total", c.total},
          {"per_1000_conversations", c.per_1000_conversations},
          {"per_million_generated_tokens", c.per_million_generated_tokens},
          {"held_byte_seconds_per_think_second", c.held_byte_seconds_per_think_second},
          {"held_bytes_sum", c.held_bytes_sum},
          {"device_share", c.device_share},
          {"host_share", c.host_share},
          {"disk_share", c.disk_share}};
}

Json SamplesJson(const std::vector<TierSample>& samples) {
  Json seconds = Json::array(), device = Json::array(), host = Json::array(), disk = Json::array();
  for (const TierSample& s : samples) {
    seconds.push_back(s.seconds);
    device.push_back(s.device_bytes);
    host.push_back(s.host_bytes);
    disk.push_back(s.disk_bytes);
  }
  return {
      {"seconds", seconds}, {"device_bytes", device}, {"host_bytes", host}, {"disk_bytes", disk}};
}

Json TurnJson(const TurnRecord& t) {
  return {{"conversation", t.conversation},     {"turn", t.turn},
          {"start_seconds", t.start_seconds},   {"ttft_seconds", t.ttft_seconds},
          {"end_seconds", t.end_seconds},       {"prompt_tokens", t.prompt_tokens},
          {"cached_tokens", t.cached_tokens},   {"generated_tokens", t.generated_tokens},
          {"context_tokens", t.context_tokens}, {"error", t.error}};
}

Json ModeJson(const ModeRun& run, const ModeSummary& s, const std::string& label) {
  Json by_turn = Json::array();
  for (size_t i = 0; i < s.ttft_by_turn.size(); ++i) {
    Json q = QuantilesJson(s.ttft_by_turn[i]);
    q["turn"] = i;
    by_turn.push_back(std::move(q));
  }
  Json computed = Json::array(), cumulative = Json::array();
  int64_t running = 0;
  for (int64_t c : s.computed_by_turn) {
    running += c;
    computed.push_back(c);
    cumulative.push_back(running);
  }
  Json turns = Json::array();
  for (const TurnRecord& t : run.turns) turns.push_back(TurnJson(t));
  return {{"label", label},
          {"mode", std::string(ModeName(s.mode))},
          {"driver", s.driver},
          {"wall_seconds", run.wall_seconds},
          {"turns_ok", s.turns_ok},
          {"turns_failed", s.turns_failed},
          {"ttft_seconds", QuantilesJson(s.ttft_seconds)},
          {"ttft_by_turn", std::move(by_turn)},
          {"token_seconds", QuantilesJson(s.token_seconds)},
          {"requests_per_second", s.requests_per_second},
          {"generated_tokens_per_second", s.generated_tokens_per_second},
          {"prompt_tokens", s.prompt_tokens},
          {"cached_tokens", s.cached_tokens},
          {"computed_tokens", s.computed_tokens},
          {"generated_tokens", s.generated_tokens},
          {"computed_by_turn", std::move(computed)},
          {"computed_by_turn_cumulative", std::move(cumulative)},
          {"counters", CountersJson(s.counters)},
          {"peak_device_bytes", s.peak_device_bytes},
          {"peak_host_bytes", s.peak_host_bytes},
          {"peak_disk_bytes", s.peak_disk_bytes},
          {"busy_seconds", s.busy_seconds},
          {"busy_is_wall", s.busy_is_wall},
          {"kv_bytes_per_token", run.kv_bytes_per_token},
          {"device_budget_bytes", run.device_budget_bytes},
          {"host_budget_bytes", run.host_budget_bytes},
          {"cost", CostJson(s.cost)},
          {"samples", SamplesJson(run.samples)},
          {"turns", std::move(turns)}};
}

// A mode's name, with the driver when two summaries share the mode.
std::vector<std::string> Labels(const std::vector<ModeSummary>& summaries) {
  std::vector<std::string> labels;
  for (const ModeSummary& s : summaries) {
    const int same =
        static_cast<int>(std::count_if(summaries.begin(), summaries.end(),
                                       [&](const ModeSummary& o) { return o.mode == s.mode; }));
    std::string label(ModeName(s.mode));
    if (same > 1) absl::StrAppend(&label, " (", s.driver, ")");
    labels.push_back(std::move(label));
  }
  return labels;
}

// The stateless summary the break-even compares with: "stateless", else "prefix"; -1: none.
int BaselineIndex(const std::vector<ModeSummary>& summaries) {
  for (BenchMode m : {BenchMode::kStateless, BenchMode::kPrefix}) {
    for (size_t i = 0; i < summaries.size(); ++i) {
      if (summaries[i].mode == m) return static_cast<int>(i);
    }
  }
  return -1;
}

absl::Status FileError(const std::error_code& ec, const std::string& what) {
  const std::string message = absl::StrCat(what, ": ", ec.message());
  if (ec == std::errc::permission_denied) return absl::PermissionDeniedError(message);
  if (ec == std::errc::no_space_on_device) return absl::ResourceExhaustedError(message);
  if (ec == std::errc::not_a_directory || ec == std::errc::file_exists ||
      ec == std::errc::no_such_file_or_directory) {
    return absl::FailedPreconditionError(message);
  }
  return absl::UnavailableError(message);
}

// Writes `bytes` to `path` through `path`.tmp renamed into place.
absl::Status WriteFileAtomically(const std::filesystem::path& path, const std::string& bytes) {
  const std::filesystem::path temp = path.string() + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) {
      return FileError(std::error_code(errno, std::generic_category()),
                       absl::StrCat("cannot open ", temp.string(), " for writing"));
    }
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      const std::error_code ec(errno, std::generic_category());
      std::error_code ignored;
      std::filesystem::remove(temp, ignored);
      return FileError(ec, absl::StrCat("cannot write ", temp.string()));
    }
  }
  std::error_code ec;
  std::filesystem::rename(temp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    return FileError(ec, absl::StrCat("cannot rename ", temp.string(), " to ", path.string()));
  }
  return absl::OkStatus();
}

}  // namespace

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return v[lo] + frac * (v[hi] - v[lo]);
}

Quantiles Summarize(const std::vector<double>& v) {
  Quantiles q;
  q.count = static_cast<int64_t>(v.size());
  if (v.empty()) return q;
  std::vector<double> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  q.p50 = Percentile(sorted, 50);
  q.p90 = Percentile(sorted, 90);
  q.p99 = Percentile(sorted, 99);
  double sum = 0;
  for (double x : sorted) sum += x;
  q.mean = sum / static_cast<double>(sorted.size());
  return q;
}

// Token sums and computed_by_turn count every record (a failed turn's usage is whatever the
// server reported for it); TTFT, per-token latency and requests/s count the successful ones.
ModeSummary SummarizeRun(const ModeRun& run, const Workload& w, const CostInputs& prices) {
  ModeSummary s;
  s.mode = run.mode;
  s.driver = run.driver;
  s.counters = run.counters;
  int max_turn = -1;
  for (const TurnRecord& t : run.turns) max_turn = std::max(max_turn, t.turn);
  const size_t turn_slots = static_cast<size_t>(max_turn + 1);
  std::vector<double> ttft, token_seconds;
  std::vector<std::vector<double>> ttft_by_turn(turn_slots);
  s.computed_by_turn.assign(turn_slots, 0);
  for (const TurnRecord& t : run.turns) {
    const int64_t computed = std::max<int64_t>(0, t.prompt_tokens - t.cached_tokens);
    s.prompt_tokens += t.prompt_tokens;
    s.cached_tokens += t.cached_tokens;
    s.computed_tokens += computed;
    s.generated_tokens += t.generated_tokens;
    if (t.turn >= 0) s.computed_by_turn[t.turn] += computed;
    if (!t.error.empty()) {
      ++s.turns_failed;
      continue;
    }
    ++s.turns_ok;
    ttft.push_back(t.ttft_seconds);
    if (t.turn >= 0) ttft_by_turn[t.turn].push_back(t.ttft_seconds);
    if (t.generated_tokens >= 2) {
      const double first_token = t.start_seconds + t.ttft_seconds;
      token_seconds.push_back((t.end_seconds - first_token) /
                              static_cast<double>(t.generated_tokens - 1));
    }
  }
  s.ttft_seconds = Summarize(ttft);
  for (const std::vector<double>& v : ttft_by_turn) s.ttft_by_turn.push_back(Summarize(v));
  s.token_seconds = Summarize(token_seconds);
  if (run.wall_seconds > 0) {
    s.requests_per_second = static_cast<double>(s.turns_ok) / run.wall_seconds;
    s.generated_tokens_per_second = static_cast<double>(s.generated_tokens) / run.wall_seconds;
  }
  for (const TierSample& sample : run.samples) {
    s.peak_device_bytes = std::max(s.peak_device_bytes, sample.device_bytes);
    s.peak_host_bytes = std::max(s.peak_host_bytes, sample.host_bytes);
    s.peak_disk_bytes = std::max(s.peak_disk_bytes, sample.disk_bytes);
  }
  s.busy_is_wall = run.counters.busy_seconds < 0;
  s.busy_seconds = s.busy_is_wall ? run.wall_seconds : run.counters.busy_seconds;
  s.cost = CostOf(run, s, w, prices);
  return s;
}

// An unknown tier name gives NaN.
double BreakEvenThinkSeconds(const ModeSummary& stateful, const ModeSummary& stateless,
                             const std::string& tier, const CostInputs& prices) {
  double gb_hour = 0;
  if (tier == "device") {
    gb_hour = prices.device_gb_hour;
  } else if (tier == "host") {
    gb_hour = prices.host_gb_hour;
  } else if (tier == "disk") {
    gb_hour = prices.disk_gb_hour;
  } else {
    return std::numeric_limits<double>::quiet_NaN();
  }
  const double saving = ComputePerTurn(stateless) - ComputePerTurn(stateful);
  if (!(saving > 0)) return 0;
  const double holding =
      stateful.cost.held_byte_seconds_per_think_second * PricePerByteSecond(gb_hour);
  if (!(holding > 0)) return std::numeric_limits<double>::infinity();
  return saving / holding;
}

double CostPer1000AtThink(const ModeSummary& s, const Workload& w, double think_seconds,
                          const CostInputs& prices) {
  if (w.conversations.empty()) return 0;
  double total = s.cost.compute_cost + s.cost.measured_memory_cost;
  if (HoldsState(s.mode)) {
    total += s.cost.held_bytes_sum * think_seconds * MixPricePerByteSecond(s.cost, prices);
  }
  return total / static_cast<double>(w.conversations.size()) * 1000;
}

Json ResultJson(const BenchResult& r) {
  const WorkloadStats& ws = r.workload_stats;
  Json j;
  j["config"] = r.config.is_null() ? Json::object() : r.config;
  j["workload"] = {{"name", r.workload.name},
                   {"conversations", ws.conversations},
                   {"turns", ws.turns},
                   {"mean_turns", ws.mean_turns},
                   {"mean_user_tokens", ws.mean_user_tokens},
                   {"mean_reply_tokens", ws.mean_reply_tokens},
                   {"mean_think_seconds", ws.mean_think_seconds},
                   {"mean_final_context", ws.mean_final_context},
                   {"max_final_context", ws.max_final_context},
                   {"shared_system_fraction", ws.shared_system_fraction}};
  j["prices"] = {{"compute_per_hour", r.prices.compute_per_hour},
                 {"device_gb_hour", r.prices.device_gb_hour},
                 {"host_gb_hour", r.prices.host_gb_hour},
                 {"disk_gb_hour", r.prices.disk_gb_hour}};
  const std::vector<std::string> labels = Labels(r.summaries);
  Json modes = Json::array();
  for (size_t i = 0; i < r.summaries.size(); ++i) {
    static const ModeRun kNoRun;
    const ModeRun& run = i < r.runs.size() ? r.runs[i] : kNoRun;
    modes.push_back(ModeJson(run, r.summaries[i], labels[i]));
  }
  j["modes"] = std::move(modes);

  Json break_even = Json::array();
  const int base = BaselineIndex(r.summaries);
  for (size_t i = 0; base >= 0 && i < r.summaries.size(); ++i) {
    const ModeSummary& s = r.summaries[i];
    if (!HoldsState(s.mode)) continue;
    Json row = {{"mode", labels[i]}, {"versus", labels[base]}};
    for (const char* tier : {"device", "host", "disk"}) {
      row[tier] = Number(BreakEvenThinkSeconds(s, r.summaries[base], tier, r.prices));
    }
    break_even.push_back(std::move(row));
  }
  j["break_even"] = std::move(break_even);

  Json think = Json::array();
  for (double t : kThinkTimes) think.push_back(t);
  Json per_mode = Json::array();
  for (size_t i = 0; i < r.summaries.size(); ++i) {
    Json costs = Json::array();
    for (double t : kThinkTimes) {
      costs.push_back(Number(CostPer1000AtThink(r.summaries[i], r.workload, t, r.prices)));
    }
    per_mode.push_back({{"mode", labels[i]}, {"per_1000_conversations", std::move(costs)}});
  }
  j["cost_vs_think"] = {{"think_seconds", std::move(think)}, {"modes", std::move(per_mode)}};
  return j;
}

absl::Status WriteReport(const BenchResult& r, const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("report directory: empty path");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return FileError(ec, absl::StrCat("cannot create report directory ", dir));
  const std::filesystem::path root(dir);
  if (absl::Status s = WriteFileAtomically(root / "result.json", ResultJson(r).dump(2) + "\n");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteFileAtomically(root / "result.csv", ResultCsv(r)); !s.ok()) return s;
  return WriteFileAtomically(root / "report.md", ReportMarkdown(r));
}

}  // namespace mnemo::bench
