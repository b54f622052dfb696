// result.csv and report.md of `mnemo bench multiturn` (report.h). The break-even and the
// cost-vs-think-time tables are read from ResultJson, so that report.md and result.json
// cannot disagree.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/stateful/report.h"

namespace mnemo::bench {
namespace {

using Json = nlohmann::json;

constexpr size_t kMaxTurnRows = 20;

// RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled.
std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

// Table cells must not break the Markdown table.
std::string Cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n' || c == '\r') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::string Bytes(double b) {
  const double a = std::fabs(b);
  if (a >= 1024.0 * 1024 * 1024) return absl::StrFormat("%.2f GiB", b / (1024.0 * 1024 * 1024));
  if (a >= 1024.0 * 1024) return absl::StrFormat("%.1f MiB", b / (1024.0 * 1024));
  if (a >= 1024.0) return absl::StrFormat("%.1f KiB", b / 1024.0);
  return absl::StrFormat("%.0f B", b);
}

// A counter that may be unknown (-1).
std::string CounterBytes(int64_t v) { return v < 0 ? "n/a" : Bytes(static_cast<double>(v)); }

// Fixed-point wherever it stays readable, so that a column's amounts line up.
std::string Money(double v) {
  if (v == 0) return "0";
  if (std::fabs(v) >= 100) return absl::StrFormat("%.2f", v);
  if (std::fabs(v) >= 1) return absl::StrFormat("%.4f", v);
  if (std::fabs(v) >= 1e-4) return absl::StrFormat("%.6f", v);
  return absl::StrFormat("%.2e", v);
}

std::string Ms(const Quantiles& q, double seconds) {
  return q.count == 0 ? "–" : absl::StrFormat("%.1f", seconds * 1000);
}

// A duration in the largest unit that keeps it readable.
std::string Duration(double s) {
  if (s < 120) return absl::StrFormat("%.1f s", s);
  if (s < 2 * 3600) return absl::StrFormat("%.1f min", s / 60);
  if (s < 2 * 86400) return absl::StrFormat("%.1f h", s / 3600);
  return absl::StrFormat("%.1f days", s / 86400);
}

std::string JsonValueText(const Json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// One row of a table: the label, then one cell per summary.
template <typename F>
void Row(std::string& md, const std::string& label, const std::vector<ModeSummary>& summaries,
         F cell) {
  md += "| " + label + " |";
  for (const ModeSummary& s : summaries) md += " " + Cell(cell(s)) + " |";
  md += "\n";
}

void Header(std::string& md, const std::string& first, const std::vector<std::string>& columns,
            bool numeric) {
  md += "| " + first + " |";
  for (const std::string& c : columns) md += " " + Cell(c) + " |";
  md += "\n|---|";
  for (size_t i = 0; i < columns.size(); ++i) md += numeric ? "---:|" : "---|";
  md += "\n";
}

void Settings(std::string& md, const BenchResult& r) {
  md += "## Settings\n\n";
  if (r.config.is_object() && !r.config.empty()) {
    for (const auto& [key, value] : r.config.items()) {
      md += absl::StrCat("- ", key, ": ", JsonValueText(value), "\n");
    }
  } else {
    md += "(none recorded)\n";
  }
  md += "\n";
}

void WorkloadSection(std::string& md, const BenchResult& r) {
  const WorkloadStats& w = r.workload_stats;
  md += "## Workload\n\n";
  md += absl::StrFormat(
      "- conversations: %d, turns: %d (mean %.1f per conversation)\n"
      "- mean user tokens per turn: %.1f; mean reply tokens per turn: %.1f\n"
      "- mean think time: %.1f s\n"
      "- final context: mean %.0f tokens, max %d\n"
      "- conversations with the shared system prompt: %.0f%%\n\n",
      w.conversations, w.turns, w.mean_turns, w.mean_user_tokens, w.mean_reply_tokens,
      w.mean_think_seconds, w.mean_final_context, w.max_final_context,
      w.shared_system_fraction * 100);
}

void ModesSection(std::string& md, const BenchResult& r, const std::vector<std::string>& labels) {
  const std::vector<ModeSummary>& ss = r.summaries;
  md += "## Modes side by side\n\n";
  Header(md, "", labels, true);
  Row(md, "driver", ss, [](const ModeSummary& s) { return s.driver; });
  Row(md, "turns ok / failed", ss,
      [](const ModeSummary& s) { return absl::StrFormat("%d / %d", s.turns_ok, s.turns_failed); });
  Row(md, "TTFT p50 (ms)", ss,
      [](const ModeSummary& s) { return Ms(s.ttft_seconds, s.ttft_seconds.p50); });
  Row(md, "TTFT p90 (ms)", ss,
      [](const ModeSummary& s) { return Ms(s.ttft_seconds, s.ttft_seconds.p90); });
  Row(md, "TTFT p99 (ms)", ss,
      [](const ModeSummary& s) { return Ms(s.ttft_seconds, s.ttft_seconds.p99); });
  Row(md, "per-token p50 (ms)", ss,
      [](const ModeSummary& s) { return Ms(s.token_seconds, s.token_seconds.p50); });
  Row(md, "requests/s", ss,
      [](const ModeSummary& s) { return absl::StrFormat("%.2f", s.requests_per_second); });
  Row(md, "generated tokens/s", ss,
      [](const ModeSummary& s) { return absl::StrFormat("%.1f", s.generated_tokens_per_second); });
  Row(md, "prompt tokens computed", ss,
      [](const ModeSummary& s) { return absl::StrCat(s.computed_tokens); });
  Row(md, "prompt tokens reused", ss,
      [](const ModeSummary& s) { return absl::StrCat(s.cached_tokens); });
  Row(md, "bytes to host", ss,
      [](const ModeSummary& s) { return CounterBytes(s.counters.bytes_to_host); });
  Row(md, "bytes from host", ss,
      [](const ModeSummary& s) { return CounterBytes(s.counters.bytes_from_host); });
  Row(md, "bytes to disk", ss,
      [](const ModeSummary& s) { return CounterBytes(s.counters.bytes_to_disk); });
  Row(md, "bytes from disk", ss,
      [](const ModeSummary& s) { return CounterBytes(s.counters.bytes_from_disk); });
  Row(md, "peak device", ss,
      [](const ModeSummary& s) { return Bytes(static_cast<double>(s.peak_device_bytes)); });
  Row(md, "peak host", ss,
      [](const ModeSummary& s) { return Bytes(static_cast<double>(s.peak_host_bytes)); });
  Row(md, "peak disk", ss,
      [](const ModeSummary& s) { return Bytes(static_cast<double>(s.peak_disk_bytes)); });
  Row(md, "busy s", ss, [](const ModeSummary& s) {
    return absl::StrFormat("%.2f%s", s.busy_seconds, s.busy_is_wall ? " (wall)" : "");
  });
  Row(md, "cost per 1000 conversations", ss,
      [](const ModeSummary& s) { return Money(s.cost.per_1000_conversations); });
  Row(md, "cost per 1M generated tokens", ss,
      [](const ModeSummary& s) { return Money(s.cost.per_million_generated_tokens); });
  if (std::any_of(r.summaries.begin(), r.summaries.end(),
                  [](const ModeSummary& s) { return s.busy_is_wall; })) {
    md += "\n\"(wall)\": the server did not report its busy time; the run's wall time is used.\n";
  }
  md += "\n";
}

void TtftByTurnSection(std::string& md, const BenchResult& r,
                       const std::vector<std::string>& labels) {
  size_t rows = 0;
  for (const ModeSummary& s : r.summaries) rows = std::max(rows, s.ttft_by_turn.size());
  md += "## TTFT p50 by turn index (ms)\n\n";
  Header(md, "turn", labels, true);
  for (size_t t = 0; t < std::min(rows, kMaxTurnRows); ++t) {
    md += absl::StrCat("| ", t, " |");
    for (const ModeSummary& s : r.summaries) {
      const std::string cell =
          t < s.ttft_by_turn.size() ? Ms(s.ttft_by_turn[t], s.ttft_by_turn[t].p50) : "–";
      md += " " + cell + " |";
    }
    md += "\n";
  }
  if (rows > kMaxTurnRows) {
    md += absl::StrFormat("\nThe first %d of %d turn indices; result.json has all of them.\n",
                          kMaxTurnRows, rows);
  }
  md += "\n";
}

void CostSection(std::string& md, const BenchResult& r, const std::vector<std::string>& labels,
                 const Json& result) {
  const CostInputs& p = r.prices;
  const std::vector<ModeSummary>& ss = r.summaries;
  md += "## Cost\n\n### Inputs\n\n";
  md += absl::StrFormat(
      "- compute: %g per busy hour\n"
      "- device memory: %g per GB-hour; host memory: %g per GB-hour; disk: %g per GB-hour\n\n",
      p.compute_per_hour, p.device_gb_hour, p.host_gb_hour, p.disk_gb_hour);
  md +=
      "Compute is the busy time priced per hour. Measured memory integrates the sampled tier "
      "occupancy over the run (trapezoid rule). Think memory (stateful modes only) holds each "
      "conversation's KV through the workload's think times — after every turn but the last, "
      "the context's KV bytes times the think time before the next turn — split over the "
      "tiers in the proportions the samples show.\n\n";
  Header(md, "", labels, true);
  Row(md, "compute", ss, [](const ModeSummary& s) { return Money(s.cost.compute_cost); });
  Row(md, "measured memory", ss,
      [](const ModeSummary& s) { return Money(s.cost.measured_memory_cost); });
  Row(md, "think memory", ss, [](const ModeSummary& s) { return Money(s.cost.think_memory_cost); });
  Row(md, "total", ss, [](const ModeSummary& s) { return Money(s.cost.total); });
  Row(md, "per 1000 conversations", ss,
      [](const ModeSummary& s) { return Money(s.cost.per_1000_conversations); });
  Row(md, "per 1M generated tokens", ss,
      [](const ModeSummary& s) { return Money(s.cost.per_million_generated_tokens); });
  Row(md, "mean bytes held while thinking", ss,
      [](const ModeSummary& s) { return Bytes(s.cost.held_byte_seconds_per_think_second); });
  Row(md, "tier mix device / host / disk", ss, [](const ModeSummary& s) {
    return absl::StrFormat("%.0f%% / %.0f%% / %.0f%%", s.cost.device_share * 100,
                           s.cost.host_share * 100, s.cost.disk_share * 100);
  });
  md += "\n";

  md += "### Break-even think time\n\n";
  const Json& be = result["break_even"];
  if (be.empty()) {
    md += "No stateful mode with a stateless mode to compare in this run.\n\n";
  } else {
    md +=
        "The think time at which holding a conversation's state on a tier costs as much as the "
        "compute it saves per turn (longer think times favour recomputing); \"never\": holding "
        "costs nothing at these prices.\n\n";
    Header(md, "mode", {"versus", "device", "host", "disk"}, true);
    for (const Json& row : be) {
      md += absl::StrCat("| ", Cell(row["mode"].get<std::string>()), " | ",
                         Cell(row["versus"].get<std::string>()), " |");
      for (const char* tier : {"device", "host", "disk"}) {
        const Json& v = row[tier];
        std::string cell = "never";  // holding costs nothing
        if (!v.is_null()) {
          const double t = v.get<double>();
          cell = t == 0 ? "0 (saves no compute)" : Duration(t);
        }
        md += " " + cell + " |";
      }
      md += "\n";
    }
    md += "\n";
  }

  md += "### Cost per 1000 conversations vs think time\n\n";
  md +=
      "Compute and measured memory as run; the think memory re-priced as if every think time "
      "were the row's.\n\n";
  const Json& cvt = result["cost_vs_think"];
  Header(md, "think time", labels, true);
  const Json& think = cvt["think_seconds"];
  for (size_t i = 0; i < think.size(); ++i) {
    md += "| " + Duration(think[i].get<double>()) + " |";
    for (const Json& mode : cvt["modes"]) {
      const Json& v = mode["per_1000_conversations"][i];
      md += " " + (v.is_null() ? std::string("–") : Money(v.get<double>())) + " |";
    }
    md += "\n";
  }
  md += "\n";
}

}  // namespace

std::string ResultCsv(const BenchResult& r) {
  std::string csv =
      "mode,driver,conversation,turn,start_s,ttft_s,end_s,prompt_tokens,cached_tokens,"
      "generated_tokens,context_tokens,error\n";
  for (const ModeRun& run : r.runs) {
    for (const TurnRecord& t : run.turns) {
      csv +=
          absl::StrFormat("%s,%s,%d,%d,%.6f,%.6f,%.6f,%d,%d,%d,%d,%s\n",
                          std::string(ModeName(run.mode)), CsvField(run.driver), t.conversation,
                          t.turn, t.start_seconds, t.ttft_seconds, t.end_seconds, t.prompt_tokens,
                          t.cached_tokens, t.generated_tokens, t.context_tokens, CsvField(t.error));
    }
  }
  return csv;
}

std::string ReportMarkdown(const BenchResult& r) {
  const Json result = ResultJson(r);
  std::vector<std::string> labels;
  for (const Json& m : result["modes"]) labels.push_back(m["label"].get<std::string>());

  std::string md = absl::StrCat("# mnemo bench multiturn: ", r.workload.name, "\n\n");
  md += absl::StrCat("Modes: ", labels.empty() ? "none" : absl::StrJoin(labels, ", "),
                     ". Raw numbers: result.json; every turn: result.csv.\n\n");
  Settings(md, r);
  WorkloadSection(md, r);
  ModesSection(md, r, labels);
  TtftByTurnSection(md, r, labels);
  CostSection(md, r, labels, result);
  md += "## Plots\n\n";
  md += "Drawn from result.json by `tools/bench_plots.py DIR`.\n\n";
  md += "![TTFT p50 by turn index](ttft_by_turn.png)\n\n";
  md += "![Cumulative prefill tokens computed by turn index](prefill_tokens.png)\n\n";
  md += "![Bytes per tier over time](tier_occupancy.png)\n\n";
  md += "![Cost per 1000 conversations vs think time](cost.png)\n";
  return md;
}

}  // namespace mnemo::bench
