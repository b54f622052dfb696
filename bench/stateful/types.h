// The records of `mnemo bench multiturn` (docs/benchmarks.md): a workload (conversations to
// replay), what one mode's run measured, and the inputs of the cost model. The workload
// generator (workload.h), the drivers and runner (runner.h) and the report (report.h) meet
// here and nowhere else.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mnemo::bench {

// ---- the workload ----------------------------------------------------------------------

struct WorkloadTurn {
  std::string user;          // the user message (chat) or the tool output (agent): text
  int reply_tokens = 0;      // the reply's exact length (max_tokens with EOS ignored), >= 1
  double think_seconds = 0;  // the pause before this turn is sent, after the previous reply
                             // ended (0 for the first turn)
};

struct WorkloadConversation {
  std::string id;                   // unique in the workload, e.g. "chat-0003"
  std::string kind;                 // "chat" | "agent"
  std::string system;               // the system prompt ("": none)
  bool shared_system = false;       // `system` is the workload's shared prompt
  double arrival_seconds = 0;       // open-loop arrival of its first turn, from the run's start
  std::vector<WorkloadTurn> turns;  // at least one
};

struct Workload {
  std::string name;  // "chat", "agent", or the JSONL file's name
  std::vector<WorkloadConversation> conversations;
};

// ---- modes -----------------------------------------------------------------------------

enum class BenchMode {
  kStateless,  // the whole history every turn, prefix index off (recompute)
  kPrefix,     // the whole history every turn, prefix index on
  kStateful,   // one session per conversation, only the new message every turn
  kSpill,      // stateful with a device budget small enough that sessions spill
};

inline constexpr BenchMode kAllModes[] = {BenchMode::kStateless, BenchMode::kPrefix,
                                          BenchMode::kStateful, BenchMode::kSpill};

inline std::string_view ModeName(BenchMode m) {
  switch (m) {
    case BenchMode::kStateless:
      return "stateless";
    case BenchMode::kPrefix:
      return "prefix";
    case BenchMode::kStateful:
      return "stateful";
    case BenchMode::kSpill:
      return "spill";
  }
  return "?";
}

inline std::optional<BenchMode> ParseMode(std::string_view name) {
  for (BenchMode m : kAllModes) {
    if (ModeName(m) == name) return m;
  }
  return std::nullopt;
}

// ---- what a run measured ---------------------------------------------------------------

// One turn as the client saw it. Times are seconds from the start of the mode's run.
struct TurnRecord {
  int conversation = 0;          // index into Workload::conversations
  int turn = 0;                  // index into its turns (the "turn index" of the report)
  double start_seconds = 0;      // request sent
  double ttft_seconds = 0;       // from the request to the first generated token
  double end_seconds = 0;        // the last token arrived
  int64_t prompt_tokens = 0;     // tokens the turn fed to the model (usage.prompt_tokens)
  int64_t cached_tokens = 0;     // of those, reused (usage...cached_tokens)
  int64_t generated_tokens = 0;  // usage.completion_tokens
  int64_t context_tokens = 0;    // the conversation's length after the turn (-1: unknown)
  std::string error;             // "" when the turn succeeded
};

// Bytes held on each tier at one moment (sampled during the run).
struct TierSample {
  double seconds = 0;  // from the mode's start
  int64_t device_bytes = 0;
  int64_t host_bytes = 0;
  int64_t disk_bytes = 0;
};

// Counters of the serving side over the run (the engine's stats, or mnemo serve's /metrics).
// -1 where the server does not say (another OpenAI-compatible server).
struct ServerCounters {
  double busy_seconds = -1;  // time in forward steps and sampling
  int64_t tokens_computed = -1;
  int64_t tokens_reused = -1;
  int64_t tokens_generated = -1;
  int64_t bytes_to_host = -1, bytes_from_host = -1;
  int64_t bytes_to_disk = -1, bytes_from_disk = -1;
  int64_t spills_to_host = -1, spills_to_disk = -1;
  int64_t restores_from_host = -1, restores_from_disk = -1;
};

struct ModeRun {
  BenchMode mode = BenchMode::kStateless;
  // "engine" (in-process), "http-chat" (/v1/chat/completions), "http-sessions"
  // (/v1/sessions), "http-responses" (/v1/responses with previous_response_id).
  std::string driver;
  double wall_seconds = 0;
  ServerCounters counters;          // over the whole run (end minus start)
  std::vector<TurnRecord> turns;    // every turn of every conversation, in completion order
  std::vector<TierSample> samples;  // tier occupancy over time (empty where unknown)
  int64_t kv_bytes_per_token = 0;   // one token's KV, all layers (0: unknown)
  int64_t device_budget_bytes = 0;  // the run's configured budgets (0: none / unknown)
  int64_t host_budget_bytes = 0;
};

// ---- the cost model --------------------------------------------------------------------

// Prices (any currency; the report prints them). Defaults are stated in docs/benchmarks.md.
struct CostInputs {
  double compute_per_hour = 2.0;  // the serving machine's compute, per busy hour
  double device_gb_hour = 0.025;  // accelerator (device-tier) memory, per GB-hour
  double host_gb_hour = 0.005;    // host memory, per GB-hour
  double disk_gb_hour = 0.0001;   // local SSD, per GB-hour
};

}  // namespace mnemo::bench
