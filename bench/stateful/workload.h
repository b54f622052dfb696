// Workloads of `mnemo bench multiturn`: seeded generators for multi-turn chat and agentic
// tool loops, and the JSON-lines form in which any workload is saved and replayed
// (docs/benchmarks.md gives the format and the default distributions with their sources).
// A workload is a pure function of (text sources, tokenizer, options): the same seed gives
// the same bytes.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "bench/multiturn_workload.h"
#include "bench/stateful/types.h"
#include "engine/model/tokenizer.h"

namespace mnemo::bench {

// A log-normal distribution given by its median and its 90th percentile, clipped to
// [min, max] (integers are rounded). Draws use the caller's std::mt19937_64 through an
// explicit inverse-CDF of a uniform from that engine (libstdc++'s distributions are not
// specified across versions, so they are not used: a seed gives the same workload on every
// build).
struct LogNormal {
  double median = 1, p90 = 1;
  double min = 0, max = 1e18;
};

// Phi^-1(p), the standard normal's inverse CDF, for p in (0, 1) (-inf / +inf at 0 / 1, NaN
// outside): Acklam's rational approximation refined by one Halley step against std::erfc,
// absolute error below 1e-12 for p in [1e-300, 1 - 1e-15].
double InverseNormalCdf(double p);

// One draw from `d`: exp(ln(median) + sigma * Phi^-1(u)) with sigma = (ln(p90) - ln(median)) /
// Phi^-1(0.9) and u = ((rng() >> 11) + 0.5) * 2^-53, clipped to [min, max]. Exactly one
// rng() call. Requires median > 0 and p90 >= median (p90 < median counts as p90 = median).
double DrawLogNormal(const LogNormal& d, std::mt19937_64& rng);

struct ChatOptions {
  int conversations = 16;
  LogNormal turns{3.5, 8, 1, 16};             // turns per conversation
  LogNormal user_tokens{80, 400, 8, 1024};    // per user message
  LogNormal reply_tokens{180, 500, 8, 1024};  // per reply
  LogNormal think_seconds{20, 90, 2, 600};    // between a reply and the next message
  double shared_system_fraction = 0.5;        // conversations that use the shared system prompt
  int shared_system_tokens = 400;             // its length
  int own_system_tokens = 40;                 // the others' (unique per conversation) prompt length
  double arrival_rate = 0.5;                  // open-loop arrivals per second (Poisson)
};

struct AgentOptions {
  int conversations = 8;
  LogNormal steps{10, 16, 2, 40};               // tool calls per run
  int task_tokens = 120;                        // the first user message (the task)
  LogNormal tool_tokens{600, 1500, 200, 2000};  // each tool output
  LogNormal reply_tokens{40, 90, 8, 256};       // the model's brief reply / next call
  LogNormal think_seconds{1, 4, 0.1, 30};       // the tool's run time
  double shared_system_fraction = 1.0;
  int shared_system_tokens = 600;
  int own_system_tokens = 40;
  double arrival_rate = 0.2;
};

// Text the messages are cut from: user text for chat (and agent tasks), tool-output text for
// agents (e.g. source code or a manual page). Both are TextSource (bench/multiturn_workload.h).
struct WorkloadText {
  const TextSource* user = nullptr;
  const TextSource* tool = nullptr;  // nullptr: `user`
};

Workload MakeChatWorkload(const WorkloadText& text, uint64_t seed, const ChatOptions& opts);
Workload MakeAgentWorkload(const WorkloadText& text, uint64_t seed, const AgentOptions& opts);

// The JSON-lines form: one conversation per line,
//   {"id": "...", "kind": "chat", "system": "...", "shared_system": false, "arrival": 0.0,
//    "turns": [{"user": "...", "reply_tokens": 120, "think": 12.5}, ...]}
// Reading validates every field and names the line and field of the first error
// (InvalidArgument); an empty file is an error. `name` becomes Workload::name.
std::string WorkloadToJsonl(const Workload& w);
absl::StatusOr<Workload> WorkloadFromJsonl(std::string_view text, std::string name);
absl::Status WriteWorkloadFile(const Workload& w, const std::string& path);
absl::StatusOr<Workload> ReadWorkloadFile(const std::string& path);

// Summary statistics of a workload (for the report): conversations, turns, mean turns per
// conversation, mean user tokens and reply tokens per turn (user tokens counted with
// `tokenizer`), mean think seconds, the final context length's mean and maximum.
struct WorkloadStats {
  int conversations = 0;
  int64_t turns = 0;
  double mean_turns = 0;
  double mean_user_tokens = 0;
  double mean_reply_tokens = 0;
  double mean_think_seconds = 0;  // per pause (every turn but a conversation's first)
  // System + every user message + every reply, in tokens (the chat template's tokens are
  // not counted).
  double mean_final_context = 0;
  int64_t max_final_context = 0;
  double shared_system_fraction = 0;
};
WorkloadStats ComputeWorkloadStats(const Workload& w, const engine::Tokenizer& tokenizer);

}  // namespace mnemo::bench
