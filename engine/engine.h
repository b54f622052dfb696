// Engine: mnemo's public C++ API (DESIGN.md 2, 3, 5). Stateful sessions whose KV stays
// alive between requests, stateless generation that still reuses cached prefixes, and one
// engine loop thread that batches every running request into each forward step.
//
//   any thread                          engine loop thread (owns everything below)
//   ----------                          -------------------------------------------
//   CreateSession / Continue / Fork ->  command queue -> sessions, block pool, prefix index,
//   Generate / Rewind / Delete / ...                     scheduler, LlamaForward, samplers
//   ResponseStream::Next()          <-  chunks (ids, text, logprobs) as tokens are sampled
//
// A session's turn ("Continue") appends only the new tokens — the chat template's rendering
// of the new messages (ChatTemplate::RenderAppend) or raw tokens — to the session's history
// and computes KV only for them; the reply is sampled with the session's own RNG. When a
// message turn ends, the template's end-of-turn text is appended so the next turn continues
// it; a raw-token turn leaves the history exactly as the model produced it.
// Full KV blocks are published in the prefix index under the tenant's namespace, so any
// request of the same tenant (or anyone, for prefixes published with PublishPrefix) that
// starts with the same tokens reuses them by reference.
//
// Scheduling (each step, under max_batch_tokens and max_seqs): every decoding sequence gets
// one token; the rest of the budget goes to chunks of running prefills; then waiting
// requests are admitted while free blocks last, highest priority first and, within a
// priority, the tenant that has been served the fewest tokens first (then arrival order).
// One turn per session runs at a time; further turns of a busy session wait their turn.
// When blocks run out: cached (refcount-0) prefix blocks are evicted first; a request that
// still does not fit waits, and fails with ResourceExhausted if nothing running could free
// blocks for it; a running sequence that cannot grow is preempted (its KV dropped, requeued,
// recomputed later — published blocks are usually found again in the prefix index).
//
// Errors never change state: an unknown session id, one of another tenant (the same
// NotFound), bad tokens or parameters, or a turn that would overflow the context fail the
// call and leave the session as it was. A cancelled or failed turn is rolled back.
//
// Thread-safety: every public method may be called from any thread concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/model/chat_template.h"
#include "engine/model/model.h"
#include "engine/model/tokenizer.h"
#include "engine/sampling.h"
#include "engine/stop.h"
#include "kernels/dtype.h"

namespace mnemo::engine {

struct EngineOptions {
  int threads = 0;                                 // kernel threads; 0: every hardware thread
  kernels::DType kv_dtype = kernels::DType::kF16;  // kF16 or kBF16
  int block_tokens = 16;
  uint64_t kv_budget_bytes = uint64_t{1} << 30;  // the device tier's KV pool
  int max_batch_tokens = 512;  // tokens per forward step (decodes + prefill chunks), >= 1
  int max_seqs = 64;           // sequences per forward step, >= 1
  bool prefix_cache = true;    // off: no lookups and no publishing (stateless recompute)
  absl::Duration default_ttl = absl::InfiniteDuration();  // session idle time to expiry
  // Where "now" comes from (sessions' timestamps and TTL); absl::Now when empty. Tests pass
  // a fake clock and call ExpireSessions() to make expiry happen without waiting.
  std::function<absl::Time()> clock;
  // How often the loop deletes expired sessions by itself; InfiniteDuration: only when
  // ExpireSessions() is called (tests that move a fake clock).
  absl::Duration expiry_interval = absl::Seconds(1);
};

// A turn of a session (Continue) or a stateless request (Generate). Exactly one of
// `messages` and `tokens` is non-empty.
struct TurnParams {
  // Rendered through the model's chat template (InvalidArgument if it has none mnemo can
  // render). For Continue: the new messages only.
  std::vector<ChatMessage> messages;
  // Raw token ids, appended as they are (no template, no BOS).
  std::vector<TokenId> tokens;
  SamplingParams sampling;
  StopParams stop;   // stop.max_tokens < 0: until the context is full
  int priority = 0;  // higher is admitted first
  // Continue on a session that has a turn in flight: wait for it (true) or fail with
  // FailedPrecondition (false).
  bool wait_if_busy = true;
  // Sessions only. A session samples every turn from one RNG stream (seeded by
  // SessionParams::seed, saved after each turn), so a conversation replays exactly; with
  // reseed the turn starts from sampling.seed instead. Stateless requests always use
  // sampling.seed.
  bool reseed = false;
};

struct SessionParams {
  // Rendered as the conversation's system message and prefilled at once (so the first turn
  // computes only its own tokens); "" for none.
  std::string system_prompt;
  std::string metadata;               // opaque client blob, kept with the session
  std::optional<absl::Duration> ttl;  // nullopt: EngineOptions::default_ttl
  uint64_t seed = 0;                  // seeds the session's sampling RNG
};

struct Usage {
  int64_t prompt_tokens = 0;      // tokens the turn fed to the model (new history + prompt)
  int64_t cached_tokens = 0;      // of those, tokens whose KV was reused (session or prefix)
  int64_t completion_tokens = 0;  // tokens sampled
};

// A piece of a streamed reply.
struct StreamChunk {
  std::vector<TokenId> ids;
  std::string text;                                     // UTF-8-safe text delta
  std::vector<float> logprobs;                          // one per id
  std::vector<std::vector<TokenLogprob>> top_logprobs;  // one list per id when requested
};

struct TurnResult {
  absl::Status status;  // OK, Cancelled, ResourceExhausted, NotFound (session deleted), ...
  FinishReason finish = FinishReason::kNone;
  Usage usage;
  std::vector<TokenId> ids;  // every sampled id
  std::string text;          // the reply text (stop strings excluded)
  std::vector<float> logprobs;
  std::vector<std::vector<TokenLogprob>> top_logprobs;
  int64_t turn = -1;           // the session turn this created (-1: stateless)
  int64_t admission = -1;      // the engine's count of admissions when this was admitted
  double queue_seconds = 0.0;  // submission to admission
  double ttft_seconds = 0.0;   // submission to the first sampled token
  double total_seconds = 0.0;  // submission to the end
};

// The per-request channel. The engine loop pushes chunks; any one consumer thread reads.
class ResponseStream {
 public:
  ~ResponseStream();
  // Blocks until a chunk is available (true, *chunk filled with everything pushed since the
  // last call, merged) or the request has ended and every chunk was read (false).
  bool Next(StreamChunk* chunk);
  // Blocks until the request has ended; the whole result (chunks need not be read).
  const TurnResult& Wait();
  // Asks the engine to stop the request; it ends with status Cancelled (a session turn is
  // rolled back). No effect once ended.
  void Cancel();
  bool cancelled() const;
  bool done() const;

  struct State;  // shared with the engine loop
  explicit ResponseStream(std::shared_ptr<State> state);

 private:
  std::shared_ptr<State> state_;
};
using StreamPtr = std::shared_ptr<ResponseStream>;

struct SessionInfo {
  std::string id;
  std::string tenant;
  int64_t n_tokens = 0;   // history length
  int64_t kv_tokens = 0;  // tokens whose KV is held
  int64_t kv_bytes = 0;   // bytes of the blocks it references (shared ones included)
  int64_t n_turns = 0;
  int64_t n_messages = 0;
  bool busy = false;  // a turn in flight or queued
  absl::Time created;
  absl::Time last_used;
  absl::Time expires;  // InfiniteFuture without a TTL
};

struct EngineStats {
  int64_t blocks_total = 0;
  int64_t blocks_free = 0;    // allocatable now (free + cached)
  int64_t blocks_cached = 0;  // refcount 0, findable in the prefix index
  int64_t blocks_in_use = 0;
  int64_t sessions = 0;
  int64_t running = 0;          // sequences admitted
  int64_t waiting = 0;          // requests not admitted yet
  int64_t steps = 0;            // forward steps run
  int64_t tokens_computed = 0;  // prompt tokens whose KV was computed
  int64_t tokens_cached = 0;    // prompt tokens whose KV was reused
  int64_t tokens_generated = 0;
  int64_t preemptions = 0;
  int64_t prefix_hits = 0;    // blocks found in the prefix index
  int64_t evictions = 0;      // cached blocks reused for new ones
  double busy_seconds = 0.0;  // time spent in forward steps and sampling
};

class Engine {
 public:
  // Loads the forward pass for `model` (which must outlive the Engine), sizes the block pool
  // and starts the engine loop. InvalidArgument for bad options or an unsupported model;
  // ResourceExhausted when the budget holds no block.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const Model& model,
                                                        const EngineOptions& opts = {});
  // Stops the loop: every request still running or waiting ends with Cancelled.
  ~Engine();

  // Sessions. `tenant` scopes every call ("" is a tenant like any other). CreateSession
  // returns once the system prompt's KV is computed (so the session is idle and ready).
  absl::StatusOr<SessionInfo> CreateSession(std::string_view tenant, const SessionParams& params);
  absl::StatusOr<StreamPtr> Continue(std::string_view tenant, std::string_view session_id,
                                     TurnParams params);
  // A new session with the history, KV (full blocks shared, the partial block copied),
  // transcript, RNG state, metadata and TTL of `session_id` as of its first `turns` turns
  // (nullopt: all). FailedPrecondition while the source has a turn in flight.
  absl::StatusOr<SessionInfo> Fork(std::string_view tenant, std::string_view session_id,
                                   std::optional<int64_t> turns = std::nullopt);
  // Keeps the first `turns` turns (0 <= turns <= n_turns; 0 leaves an empty session) and
  // frees the KV past them. FailedPrecondition while a turn is in flight.
  absl::Status Rewind(std::string_view tenant, std::string_view session_id, int64_t turns);
  absl::StatusOr<std::string> GetMetadata(std::string_view tenant, std::string_view session_id);
  absl::Status SetMetadata(std::string_view tenant, std::string_view session_id,
                           std::string metadata);
  absl::StatusOr<SessionInfo> GetSession(std::string_view tenant, std::string_view session_id);
  // The session's token history (tests, debugging, export).
  absl::StatusOr<std::vector<TokenId>> SessionTokens(std::string_view tenant,
                                                     std::string_view session_id);
  std::vector<SessionInfo> ListSessions(std::string_view tenant);
  // Deletes the session and frees its blocks; a turn in flight ends with NotFound.
  absl::Status DeleteSession(std::string_view tenant, std::string_view session_id);
  // Deletes every idle session whose TTL has passed (also done by the loop as time
  // passes); returns how many.
  int64_t ExpireSessions();

  // A stateless request: nothing is kept afterwards but the published prefix blocks.
  absl::StatusOr<StreamPtr> Generate(std::string_view tenant, TurnParams params);

  // Computes and pins the KV of `messages` (rendered without a generation prompt) or of
  // `tokens` in the public namespace, so that every tenant's requests starting with it reuse
  // it (an operator's shared system prompt). Returns the number of tokens published (whole
  // blocks only).
  absl::StatusOr<int64_t> PublishPrefix(std::span<const ChatMessage> messages,
                                        std::span<const TokenId> tokens = {});

  // While paused the loop answers calls but runs no step: requests queue up (for draining,
  // and for tests that need many requests waiting at once).
  void Pause();
  void Resume();

  EngineStats Stats();
  // Runs on the loop: every session's and sequence's invariants and the pool's refcounts
  // (CheckRefcounts over every live table). Internal naming the first violation.
  absl::Status CheckInvariants();

  const Tokenizer& tokenizer() const;
  const ChatTemplate& chat_template() const;
  const EngineOptions& options() const;
  int64_t context_length() const;
  int64_t block_bytes() const;

  struct Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mnemo::engine
