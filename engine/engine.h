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
#include "cache/arena_memory.h"
#include "cache/compaction.h"
#include "engine/forward/forward.h"
#include "engine/model/chat_template.h"
#include "engine/model/model.h"
#include "engine/model/tokenizer.h"
#include "engine/sampling.h"
#include "engine/stop.h"
#include "kernels/dtype.h"

namespace mnemo::cache {
class FileOps;
}

namespace mnemo::engine {

// Where a session's KV is (DESIGN.md 4). kDevice also stands for "nowhere": a session whose
// KV was dropped (or never computed) is on the device tier with kv_tokens 0, and its next
// turn computes it.
enum class StorageTier : uint8_t { kDevice, kHost, kDisk };
std::string_view TierName(StorageTier t);

// When a session's state reaches the state directory (docs/sessions.md, "Tiers").
enum class Durability : uint8_t {
  kAsync,  // each finished turn is written behind at once (the write starts when the turn
           // ends; a crash loses at most the turns whose write had not completed)
  kSync,   // a turn's result is released only after its state is fsync'ed; if that write
           // fails, the turn is rolled back and ends with the write's error
  kNone,   // memory tiers only, until demoted to disk or the engine shuts down
};
std::string_view DurabilityName(Durability d);

// Retention hints of one session (DESIGN.md 4).
struct Retention {
  int priority = 0;  // lower-priority idle sessions are demoted first
  // Kept on the device tier (never demoted) until this long after it is set, at most
  // EngineOptions::max_pin (e.g. while an agent waits on a tool call). Zero: not pinned.
  absl::Duration pin = absl::ZeroDuration();
  // Demoted one tier down once idle this long (device -> host -> disk).
  absl::Duration demote_after_idle = absl::InfiniteDuration();
  // Deleted (from every tier) once this old, counted from creation.
  absl::Duration max_lifetime = absl::InfiniteDuration();
};

struct EngineOptions {
  Device device;                                   // where the forward pass runs
  int threads = 0;                                 // kernel threads; 0: every hardware thread
  kernels::DType kv_dtype = kernels::DType::kF16;  // kF16 or kBF16
  int block_tokens = 16;
  uint64_t kv_budget_bytes = uint64_t{1} << 30;  // the device tier's KV pool
  // CUDA: device memory for weights, scratch and the KV pool together (0: 0.9 of the free
  // memory); the KV pool is then what the memory plan leaves (docs/cuda.md), and
  // kv_budget_bytes does not apply. Ignored on the CPU.
  uint64_t device_budget_bytes = 0;
  // Where the device tier's KV arena lives; nullptr: where the forward pass wants it (host
  // RAM for the CPU backend, device memory for CUDA). The forward pass must be able to read
  // it; tests pass host memory that says it is not host-accessible, so that every block
  // byte the tiers move goes through ArenaMemory::Copy as it does on a GPU.
  cache::ArenaMemory* kv_memory = nullptr;
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

  // Tiers (docs/sessions.md, "Tiers"). kv_budget_bytes above is the device tier.
  uint64_t host_budget_bytes = 0;  // the host tier's RAM; 0: no host tier
  std::string state_dir;           // the disk tier and durable sessions; "": none
  uint64_t disk_budget_bytes = 0;  // bytes of blocks the state directory may hold; 0: no limit
  // Per-tenant limits on the host and disk tiers (0: none). A spill that would exceed the
  // host quota goes to disk instead; a write that would exceed the disk quota (or the disk
  // budget) is refused with ResourceExhausted and the session stays in memory.
  uint64_t tenant_host_quota_bytes = 0;
  uint64_t tenant_disk_quota_bytes = 0;
  Durability durability = Durability::kAsync;  // sessions' default (needs state_dir)
  bool tier_cost_aware = true;                 // victim choice; false: plain LRU
  // KV leaving the device tier is quantized to int8 with one scale per (layer, k|v, head)
  // tile (kernels/kv_compress.h): about half the bytes on the host tier and on disk, at a
  // small accuracy cost (docs/kernels.md). Off: byte-identical copies.
  bool compress_cold = false;
  double high_watermark = 0.9;                 // fraction of a tier's budget that triggers
  double low_watermark = 0.7;                  // demotion, and what demotion brings it to
  int io_threads = 2;                          // I/O workers (copies, file I/O), >= 1
  bool fsync = true;                           // off only for tests that accept power loss
  absl::Duration max_pin = absl::Minutes(10);  // longest Retention::pin honoured
  // Every file operation of the state directory goes through this (not owned; nullptr: the
  // real file system). Fault-injection tests pass a cache::FaultInjectingFileOps.
  cache::FileOps* file_ops = nullptr;

  // Sessions' default context compaction (cache/compaction.h, docs/compaction.md): policy
  // none refuses a turn that would overflow the context.
  cache::CompactionOptions compaction;
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
  // Sessions only: this turn's compaction options instead of the session's (e.g. the
  // server's `truncation: "auto"`).
  std::optional<cache::CompactionOptions> compaction;
  // Scores the turn's own tokens (teacher forcing): TurnResult::prompt_logprobs.
  bool prompt_logprobs = false;
};

struct SessionParams {
  // Rendered as the conversation's system message and prefilled at once (so the first turn
  // computes only its own tokens); "" for none.
  std::string system_prompt;
  std::string metadata;                  // opaque client blob, kept with the session
  std::optional<absl::Duration> ttl;     // nullopt: EngineOptions::default_ttl
  uint64_t seed = 0;                     // seeds the session's sampling RNG
  std::optional<Durability> durability;  // nullopt: EngineOptions::durability
  Retention retention;
  // nullopt: EngineOptions::compaction. Durable with the session (its manifest).
  std::optional<cache::CompactionOptions> compaction;
};

struct Usage {
  int64_t prompt_tokens = 0;      // tokens the turn fed to the model (new history + prompt)
  int64_t cached_tokens = 0;      // of those, tokens whose KV was reused (session or prefix)
  int64_t completion_tokens = 0;  // tokens sampled
  int64_t compacted_tokens = 0;   // history tokens a compaction before the turn dropped
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
  // With TurnParams::prompt_logprobs: the natural log-probability of each token the turn
  // appended (after any compaction) given everything before it, NaN where the logits of the
  // position before were not computed by this turn (a turn's first token, when the history
  // before it already had its KV; a stateless request's first token).
  std::vector<float> prompt_logprobs;
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
  absl::Time expires;                       // InfiniteFuture without a TTL
  StorageTier tier = StorageTier::kDevice;  // where its KV is
  int64_t device_bytes = 0;                 // == kv_bytes
  int64_t host_bytes = 0;
  int64_t disk_bytes = 0;  // bytes of the blocks its durable copy references
  bool moving = false;     // a spill or restore is in flight
  Durability durability = Durability::kAsync;
  bool durable = false;          // the state directory holds its current state
  std::string last_write_error;  // of the latest failed write ("" when the last one worked)
  Retention retention;
  absl::Time pinned_until;  // InfinitePast when not pinned
  // What holding the session has cost so far: bytes x seconds on each tier (device bytes
  // count every block the session references, shared ones included), since it was created
  // or registered in this process.
  double device_byte_seconds = 0.0;
  double host_byte_seconds = 0.0;
  double disk_byte_seconds = 0.0;
  // Context compaction: the policy its turns use, how often it was compacted and how many
  // history tokens that dropped, and the fewest turns a rewind may keep (the state of
  // earlier turns is gone unless kept: CompactionOptions::keep_history).
  cache::CompactionPolicy compaction_policy = cache::CompactionPolicy::kNone;
  cache::CompactionOptions compaction;  // the options its turns use (policy included)
  int64_t compactions = 0;
  int64_t compacted_tokens = 0;
  int64_t rewind_floor = 0;
  // Every compaction, oldest first (cache/session.h CompactionRecord; a summary's text too).
  std::vector<cache::CompactionRecord> compaction_log;
};

// What startup found in the state directory.
struct RecoveryReport {
  int64_t sessions = 0;  // registered (their KV is loaded when used)
  // "path: reason" of each entry not loaded: quarantined (corrupt), skipped (a newer format,
  // I/O errors), or refused (another model's state).
  std::vector<std::string> quarantined;
  std::vector<std::string> skipped;
  std::vector<std::string> refused;
  int64_t garbage_removed = 0;  // unreferenced files deleted
};

// What Shutdown wrote down.
struct ShutdownReport {
  int64_t written = 0;    // sessions whose state was written (or already was durable)
  int64_t failed = 0;     // sessions whose write failed (their names and errors in `errors`)
  int64_t timed_out = 0;  // sessions still not durable at the deadline
  std::vector<std::string> errors;
  double seconds = 0.0;
};

struct EngineStats {
  int64_t block_bytes = 0;   // one KV block (all layers, K and V) on the device tier
  int64_t block_tokens = 0;  // tokens per block
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

  // Tiers.
  int64_t host_bytes_used = 0;
  int64_t host_bytes_total = 0;
  int64_t disk_bytes_used = 0;  // bytes of blocks the sessions' durable copies reference
  int64_t spills_to_host = 0;   // sessions moved device -> host
  int64_t spills_to_disk = 0;   // sessions moved to the disk tier (from device or host)
  int64_t drops = 0;            // sessions whose KV was dropped (no lower tier had room)
  int64_t restores_from_host = 0;
  int64_t restores_from_disk = 0;
  int64_t restore_failures = 0;       // restores that failed (the KV is recomputed instead)
  int64_t restore_blocks_shared = 0;  // restored blocks found in the prefix index (no copy)
  int64_t bytes_to_host = 0;
  int64_t bytes_from_host = 0;
  int64_t bytes_to_disk = 0;
  int64_t bytes_from_disk = 0;
  int64_t writes = 0;  // durable writes completed
  // The longest time from a change (a finished turn, ...) to the completed write that made
  // it durable: the async write-behind's lag as measured.
  double write_lag_max_seconds = 0.0;
  int64_t write_failures = 0;    // durable writes that failed
  int64_t parked = 0;            // requests waiting for their session's restore (now)
  int64_t compactions = 0;       // sessions' contexts compacted
  int64_t compacted_tokens = 0;  // history tokens those compactions dropped
};

// The tenant under which a session's kept pre-compaction states live (hidden sessions, one
// per compaction with CompactionOptions::keep_history; deleted with the session). No client
// tenant starts with its control character; for tests and operators.
std::string KeptStateTenant(std::string_view tenant);

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
  // transcript, RNG state, metadata, TTL and compaction log of `session_id` as of its first
  // `turns` turns (nullopt: all). FailedPrecondition while the source has a turn in flight, or
  // for `turns` below its rewind floor (a compaction since dropped that state).
  absl::StatusOr<SessionInfo> Fork(std::string_view tenant, std::string_view session_id,
                                   std::optional<int64_t> turns = std::nullopt);
  // Keeps the first `turns` turns (0 <= turns <= n_turns; 0 leaves an empty session) and
  // frees the KV past them. Below a compaction whose pre-compaction state was kept
  // (CompactionOptions::keep_history), the session becomes that state first (brought back
  // from its tier) and the states kept by later compactions are deleted. FailedPrecondition
  // while a turn is in flight, or when `turns` is below the session's rewind floor (a
  // compaction since dropped that state and did not keep it).
  absl::Status Rewind(std::string_view tenant, std::string_view session_id, int64_t turns);
  // Compacts an idle session's context now (docs/compaction.md): with `policy` (nullopt:
  // the session's), keeping `keep_tokens` of its history (nullopt: the policy's
  // target_fraction of it). InvalidArgument for policy none or a keep that drops nothing;
  // FailedPrecondition while a turn is in flight; ResourceExhausted when no KV block is
  // free for the compacted copy.
  absl::StatusOr<SessionInfo> Compact(std::string_view tenant, std::string_view session_id,
                                      std::optional<cache::CompactionPolicy> policy = std::nullopt,
                                      std::optional<int64_t> keep_tokens = std::nullopt);
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

  // Tiers and durability (docs/sessions.md, "Tiers").
  // Starts bringing the session's KV back to the device tier, so a request that follows
  // does not wait for it; returns at once. A no-op when it is there already.
  absl::Status Prefetch(std::string_view tenant, std::string_view session_id);
  // Moves an idle session's KV down to `to` (kHost or kDisk) now, and returns once it is
  // there. FailedPrecondition: the session is busy or pinned, or the tier does not exist;
  // ResourceExhausted: the tier (or the tenant's quota there) has no room.
  absl::Status Demote(std::string_view tenant, std::string_view session_id, StorageTier to);
  // Returns once the session's current state is in the state directory (writing it if
  // needed, whatever its durability mode). FailedPrecondition without a state directory.
  absl::Status Flush(std::string_view tenant, std::string_view session_id);
  absl::Status SetRetention(std::string_view tenant, std::string_view session_id,
                            const Retention& retention);
  // Writes the session as one portable bundle file (docs/state-format.md; flushes first).
  absl::Status ExportSession(std::string_view tenant, std::string_view session_id,
                             const std::string& file);
  // Imports a bundle written by ExportSession (or `mnemo session export`) for a model with
  // this engine's fingerprint, into `tenant` whatever tenant it was exported from. Needs a
  // state directory. AlreadyExists if the id is present; FailedPrecondition for another
  // model's state or KV layout.
  absl::StatusOr<SessionInfo> ImportSession(std::string_view tenant, const std::string& file);
  const RecoveryReport& recovery() const;
  // Runs the tier manager now — lifetimes, demotion of idle sessions, watermarks (the loop
  // also does this as time passes) — and returns once the moves it started have ended.
  // Tests that move a fake clock call it.
  void MaintainTiers();
  // The bytes of the session's KV blocks, in token order (restored to the device tier first).
  // For tests and debugging.
  absl::StatusOr<std::string> SessionKvBytes(std::string_view tenant, std::string_view session_id);
  // Cancels every request, writes every session's state down (every durability mode) until
  // `deadline` passes, and stops the loop. The destructor calls it (deadline 30 s) unless it
  // was called. Later calls return an empty report.
  ShutdownReport Shutdown(absl::Duration deadline = absl::Seconds(30));

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
  absl::StatusOr<SessionInfo> SyncedInfo(std::string_view tenant, std::string_view id);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mnemo::engine
