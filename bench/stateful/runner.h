// Replaying a workload against a server: the drivers (in-process Engine, or HTTP against any
// OpenAI-compatible endpoint) and the runner that plays N simulated users with their think
// times, closed-loop or open-loop, while sampling tier occupancy, with a progress bar.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "bench/stateful/types.h"
#include "engine/engine.h"
#include "engine/model/model.h"

namespace mnemo::bench {

// One conversation's client side. A driver makes one per conversation; Turn is called for
// turns 0, 1, ... in order, from one thread at a time (different conversations run on
// different threads at once).
class ConversationClient {
 public:
  virtual ~ConversationClient() = default;
  // Sends turn `t` of the conversation and reads the whole reply (streamed). Fills the
  // record's token counts, ttft_seconds (from the call to the first generated token) and
  // error; the runner fills the times relative to the run. A failed turn returns a record
  // with `error` set (the conversation then stops); a Status error aborts the whole run.
  virtual absl::StatusOr<TurnRecord> Turn(int t) = 0;
  // The conversation ended (or stopped): free its server state (e.g. delete the session).
  virtual absl::Status End() = 0;
};

class Driver {
 public:
  virtual ~Driver() = default;
  virtual std::string name() const = 0;  // ModeRun::driver
  virtual absl::StatusOr<std::unique_ptr<ConversationClient>> Open(
      const WorkloadConversation& c) = 0;
  // Counters since the driver was created (-1 where unknown), and the tier occupancy now
  // (nullopt when unknown).
  virtual ServerCounters Counters() = 0;
  virtual std::optional<TierSample> Tiers() = 0;
  virtual int64_t kv_bytes_per_token() const { return 0; }
  virtual int64_t device_budget_bytes() const { return 0; }
  virtual int64_t host_budget_bytes() const { return 0; }
};

// ---- in-process ------------------------------------------------------------------------

struct EngineDriverOptions {
  BenchMode mode = BenchMode::kStateful;
  // threads, max_batch_tokens, ... (the mode overrides prefix_cache)
  ::mnemo::engine::EngineOptions engine;
  // kSpill: the device budget is this fraction of the KV the whole workload would hold at
  // once if every conversation stayed resident (at least enough for the longest one
  // conversation plus one max_batch_tokens step), the host budget the same again, and the
  // rest spills to `state_dir` (a temporary directory when empty, removed at the end).
  double spill_device_fraction = 0.25;
  int concurrency = 1;  // kSpill: the device budget holds at least this many of the
                        // longest conversation (the turns in flight at once)
  std::string state_dir;
  // Called with each successful turn's reply text, from the conversation's thread (tests
  // compare the modes' replies). Empty: none.
  using ReplyHook =
      std::function<void(const std::string& conversation_id, int turn, const std::string& reply)>;
  ReplyHook on_reply;
};

// A fresh Engine on `model` (which must outlive the driver) configured for the mode:
// kStateless and kPrefix send the whole history (system, every user message and the reply
// actually produced) through Engine::Generate with prefix_cache off / on; kStateful and
// kSpill create a session per conversation (CreateSession with the system prompt) and send
// only the new message through Continue. Every reply is greedy with exactly reply_tokens
// tokens (EOS ignored).
absl::StatusOr<std::unique_ptr<Driver>> MakeEngineDriver(const engine::Model& model,
                                                         const Workload& w,
                                                         const EngineDriverOptions& opts);

// ---- HTTP ------------------------------------------------------------------------------

enum class HttpApi { kChat, kSessions, kResponses };

struct HttpDriverOptions {
  std::string base_url;  // "http://host:port" (a trailing /v1 is accepted and stripped)
  std::string api_key;   // sent as "Authorization: Bearer ..." when not empty
  std::string model;     // the request's "model" field ("": the first id of GET /v1/models)
  HttpApi api = HttpApi::kChat;
  double timeout_seconds = 600;
  // Send "ignore_eos": true so that every reply has its workload length (vLLM and mnemo take
  // it); off for servers that refuse unknown fields (replies may then end early: the records'
  // generated_tokens show it).
  bool ignore_eos = true;
};

// kChat: POST /v1/chat/completions with the whole history, streamed, with
// "stream_options": {"include_usage": true}, "max_tokens" and "ignore_eos": true (vLLM's and
// mnemo's extension; other servers may end a reply early, which the records show).
// kSessions: POST /v1/sessions (system prompt), then POST /v1/sessions/{id}/messages with the
// new message, streamed; DELETE at the end. kResponses: POST /v1/responses with "input" (the
// new message), "instructions" (system) and "previous_response_id", streamed.
// Counters and tiers come from GET /metrics when the server is mnemo (-1 / nullopt otherwise).
absl::StatusOr<std::unique_ptr<Driver>> MakeHttpDriver(const HttpDriverOptions& opts);

// ---- the runner ------------------------------------------------------------------------

// Three ways to play a workload:
//   interleaved (the default: closed loop with think_scale 0): every conversation is open
//     from its first turn to its last, as on a real server where many users think while a
//     few are served. Time is virtual: a conversation's turn is ready at its arrival (the
//     first) or at its previous turn's virtual end (ready time + measured latency) plus the
//     think time; `concurrency` users repeatedly take the ready turn with the earliest
//     virtual time among the conversations not in flight. No pauses are slept, yet the
//     sessions' state lives (and spills) across other conversations' turns as it would.
//   closed loop with think_scale > 0: each user plays whole conversations one after another,
//     sleeping the scaled think times.
//   open loop: conversations start at their (scaled) arrival times.
struct RunOptions {
  int concurrency = 4;       // simulated users: turns in flight at once
  bool open_loop = false;    // conversations start at their arrival times instead
  double think_scale = 0.0;  // multiplies the workload's think times (0: interleaved, no
                             // pauses; the cost model prices think time either way)
  double sample_interval_seconds = 0.1;  // tier occupancy sampling
  bool progress = true;  // a progress bar on stderr (only when stderr is a terminal;
                         // otherwise one line per 10 %)
  std::string label;     // shown in the progress bar (e.g. the mode)
};

// Plays every conversation of `w` through `driver` and returns the mode's record
// (ModeRun::mode is left for the caller). Turns are recorded in completion order.
absl::StatusOr<ModeRun> RunWorkload(Driver& driver, const Workload& w, const RunOptions& opts);

}  // namespace mnemo::bench
