// Internals of the Engine (engine/engine.h), shared by its two translation units:
// engine.cc (the loop, sessions' turns, the scheduler) and engine_api.cc (the public calls).
// Nothing outside engine/engine*.cc includes this.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "cache/block_hash.h"
#include "cache/block_pool.h"
#include "cache/block_table.h"
#include "cache/prefix.h"
#include "cache/session.h"
#include "cache/state_store.h"
#include "cache/tier_policy.h"
#include "engine/forward/llama_forward.h"
#include "engine/generate.h"
#include "engine/internal/tiers.h"
#include "kernels/base/check.h"

namespace mnemo::engine {

using cache::BlockPool;
using cache::KvSequence;
using cache::SessionId;
using cache::SessionState;
using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

inline void Append(StreamChunk& into, StreamChunk&& from) {
  into.ids.insert(into.ids.end(), from.ids.begin(), from.ids.end());
  into.text += from.text;
  into.logprobs.insert(into.logprobs.end(), from.logprobs.begin(), from.logprobs.end());
  for (auto& t : from.top_logprobs) into.top_logprobs.push_back(std::move(t));
}

inline absl::Status UnknownSession(std::string_view id) {
  return absl::NotFoundError(absl::StrCat("no session ", AsAbsl(id)));
}

// ---------------------------------------------------------------------------------------
// ResponseStream

struct ResponseStream::State {
  std::mutex mu;
  std::condition_variable cv;
  StreamChunk pending;  // pushed, not yet read by Next()
  bool has_pending = false;
  bool done = false;
  TurnResult result;
  std::atomic<bool> cancel{false};

  void Push(StreamChunk chunk) {
    std::lock_guard<std::mutex> lock(mu);
    Append(pending, std::move(chunk));
    has_pending = true;
    cv.notify_all();
  }
  void Finish(TurnResult r) {
    std::lock_guard<std::mutex> lock(mu);
    result = std::move(r);
    done = true;
    cv.notify_all();
  }
};

// ---------------------------------------------------------------------------------------
// Engine::Impl

enum class SeqKind : uint8_t {
  kTurn,       // a session's turn
  kStateless,  // Generate()
  kPrefill,    // computes KV only: a session's system prompt, a published prefix
};

// A request in flight: waiting for admission or running.
struct Seq {
  Seq(const SamplingParams& sp, const StopParams& stop, const Tokenizer& tok, int vocab)
      : sampler(sp, vocab),
        stopper(stop, tok),
        detok(tok, DecodeOptions{.render_special = false, .strip_leading_space = false}) {}

  uint64_t arrival = 0;
  SeqKind kind = SeqKind::kStateless;
  std::string tenant;
  int priority = 0;
  cache::PrefixNamespace ns;
  SessionState* session = nullptr;  // kTurn, and kPrefill of a session
  KvSequence own;                   // the KV of stateless and published-prefix requests
  KvSequence& kv() { return session != nullptr ? session->kv : own; }

  TurnParams params;  // kTurn: prepared when the turn starts (PrepareTurn)
  bool prepared = false;
  bool generate = true;  // false: compute KV only
  bool pin = false;      // kPrefill of a published prefix: kept in Impl::pinned_
  // Rollback point of a session turn: history, turns and messages before it.
  int64_t rollback_tokens = 0;
  size_t rollback_turns = 0;
  size_t rollback_messages = 0;

  int64_t n_prompt = 0;  // history length when generation starts
  // History tokens to keep by compacting the session when the turn is admitted (its KV is
  // then on the device tier); 0: no compaction (PlanTurnCompaction).
  int64_t compact_keep = 0;
  bool admitted_once = false;
  // Why it can never be admitted (a planned compaction that failed); OK otherwise.
  absl::Status refused;
  bool running = false;
  Sampler sampler;
  StopChecker stopper;
  StreamingDetokenizer detok;
  std::shared_ptr<ResponseStream::State> out;
  TurnResult result;
  Clock::time_point submitted;
  bool first_token_seen = false;

  int64_t pending() { return static_cast<int64_t>(kv().tokens.size()) - kv().table.n_tokens(); }
};

struct Engine::Impl {
  const Model* model = nullptr;
  EngineOptions opts;
  std::unique_ptr<Tokenizer> tokenizer;
  ChatTemplate tmpl = ChatTemplate::FromFamily(ChatTemplateFamily::kUnknown, "", "");
  std::unique_ptr<ForwardPass> forward;
  std::unique_ptr<BlockPool> pool;
  cache::BlockHash root;
  int vocab = 0;
  int64_t ctx = 0;

  // Command queue (any thread -> loop).
  std::mutex mu;
  std::condition_variable cv;
  std::deque<absl::AnyInvocable<void()>> commands;
  bool stopping = false;
  bool paused = false;
  bool loop_done = false;  // the loop thread has exited: calls run inline (under dead_mu)
  absl::Duration shutdown_deadline = absl::Seconds(30);
  std::thread loop;
  std::mutex dead_mu;

  // Owned by the loop thread.
  cache::SessionStore sessions;
  struct SessionRun {
    Seq* active = nullptr;                    // the turn (or prefill) in flight
    std::deque<std::unique_ptr<Seq>> queued;  // turns waiting for it
  };
  absl::flat_hash_map<SessionId, SessionRun> runs;         // only sessions with work
  std::vector<std::unique_ptr<Seq>> waiting;               // not admitted (in arrival order)
  std::vector<std::unique_ptr<Seq>> running;               // admitted
  std::vector<KvSequence> pinned;                          // published prefixes
  absl::flat_hash_map<std::string, double> tenant_served;  // tokens computed per tenant
  uint64_t next_arrival = 0;
  Clock::time_point last_expiry = Clock::now();
  int64_t admissions = 0;
  std::vector<float> logits;
  EngineStats stats;
  bool stalled = false;  // the last step could do nothing: wait for an event

  // Tiers (engine/tiers.cc; engine/internal/tiers.h).
  std::unique_ptr<cache::HostTier> host;
  std::unique_ptr<cache::StateDir> disk;
  std::unique_ptr<IoWorkers> io;
  absl::flat_hash_map<SessionId, Residency> residency;  // one per live session
  std::vector<std::unique_ptr<Seq>> parked;             // turns waiting for their session's restore
  absl::flat_hash_map<std::string, int64_t> tenant_host_bytes;
  absl::flat_hash_map<std::string, int64_t> tenant_disk_bytes;
  int64_t disk_bytes = 0;
  int64_t io_in_flight = 0;  // jobs submitted whose completion has not run
  bool io_stopped = false;   // the I/O workers are stopped (shutdown)
  int64_t moves_in_flight = 0;
  std::vector<absl::AnyInvocable<void(absl::Status)>> moves_waiters;  // MaintainTiers()
  // Another model's sessions found at startup: id -> (tenant, why). Only their tenant is
  // told why; to anyone else they are unknown ids.
  absl::flat_hash_map<SessionId, std::pair<std::string, std::string>> refused;
  RecoveryReport recovery;
  ShutdownReport shutdown_report;
  bool shut = false;  // Shutdown has begun: nothing new is admitted
  Clock::time_point last_tier_tick;

  absl::Time Now() const { return opts.clock ? opts.clock() : absl::Now(); }

  // Runs `fn` on the loop thread (or inline once the loop has exited).
  void Post(absl::AnyInvocable<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!loop_done) {
        commands.push_back(std::move(fn));
        cv.notify_one();
        return;
      }
    }
    std::lock_guard<std::mutex> lock(dead_mu);
    fn();
  }

  // Runs `fn` on the loop thread and returns its result.
  template <typename F>
  auto Call(F fn) -> std::invoke_result_t<F&> {
    using R = std::invoke_result_t<F&>;
    std::promise<R> promise;
    std::future<R> future = promise.get_future();
    Post([&]() {
      if constexpr (std::is_void_v<R>) {
        fn();
        promise.set_value();
      } else {
        promise.set_value(fn());
      }
    });
    return future.get();
  }

  // Runs `fn(reply)` on the loop; returns what `reply` is given, which may happen later
  // (from a job's completion). `reply` must be called exactly once.
  template <typename R, typename F>
  R Await(F fn) {
    std::promise<R> promise;
    std::future<R> future = promise.get_future();
    Post([&]() {
      fn(absl::AnyInvocable<void(R)>([&promise](R r) { promise.set_value(std::move(r)); }));
    });
    return future.get();
  }

  void Loop();
  bool HasWork() const { return !waiting.empty() || !running.empty(); }
  void Step();
  void Shutdown();
  void CancelAll(const absl::Status& why);

  // Sessions.
  SessionInfo Info(const SessionState& s);
  bool Busy(const SessionId& id) const { return runs.contains(id); }
  absl::StatusOr<SessionState*> FindSession(std::string_view tenant, std::string_view id);
  // Ends the session's requests with `why` and deletes it from every tier, at once or once
  // its I/O job ends; `done` (if any) gets the result of removing its files.
  void DeleteSessionNow(SessionState* s, absl::Status why,
                        absl::AnyInvocable<void(absl::Status)> done = nullptr);
  int64_t ExpireNow();

  // Requests.
  std::unique_ptr<Seq> NewSeq(SeqKind kind, std::string_view tenant, const TurnParams& params);
  absl::StatusOr<std::vector<TokenId>> RenderTurn(const SessionState* s,
                                                  std::span<const ChatMessage> messages,
                                                  bool add_generation_prompt) const;
  absl::Status StartTurn(Seq& seq);  // appends the turn to its session; Status: nothing changed

  // Compaction (engine/compaction.cc).
  cache::CompactionOptions CompactionFor(const SessionState& s, const TurnParams* turn) const;
  // Whether the turn (history + n_delta new tokens) triggers a compaction: sets
  // seq.compact_keep. InvalidArgument when it cannot fit the context even compacted.
  absl::Status PlanTurnCompaction(Seq& seq, int64_t history, int64_t n_delta);
  // What a compaction did to the history: how much shorter it is, and how many of its
  // tokens were dropped or summarized.
  struct Compacted {
    int64_t removed = 0;
    int64_t compacted = 0;
  };
  // Compacts `s` (resident) to at most `keep` history tokens, never touching tokens from
  // `protect_from` on; logs it with `turns_seen` as the rewind floor. On an error nothing
  // changed (ResourceExhausted: no free KV blocks for the work, try again later).
  absl::StatusOr<Compacted> CompactSession(SessionState* s, const cache::CompactionOptions& o,
                                           int64_t keep, int64_t protect_from, int64_t turns_seen);
  // The policy's work of CompactSession.
  absl::StatusOr<Compacted> CompactWithPolicy(SessionState* s, const cache::CompactionOptions& o,
                                              int64_t keep, int64_t protect_from,
                                              int64_t turns_seen);
  // Kept pre-compaction states (CompactionOptions::keep_history): hidden copies of the
  // session (CopySession) under KeptStateTenant, one per compaction, named in its record.
  SessionState* FindKeptState(const SessionState& s, const cache::CompactionRecord& r);
  // Deletes the states kept by the session's compactions from record `from` on.
  void DeleteKeptStates(const SessionState& s, size_t from);
  // The latest kept state from which `turns` turns can be reached (its record's index), or
  // nullopt when none can.
  std::optional<size_t> KeptStateFor(const SessionState& s, int64_t turns);
  // Makes resident `s` the kept state of its record `k` (which must be resident), and drops
  // the states kept since.
  absl::Status RestoreKeptState(SessionState* s, size_t k);
  // Appends `record` to the session's log (stats, durable copy, change mark).
  void LogCompaction(SessionState* s, cache::CompactionRecord record);
  // The score policy's dropped ranges: the session's KV probed by an observation window.
  absl::StatusOr<std::vector<cache::TokenRange>> ScoreRanges(SessionState* s,
                                                             const cache::CompactionOptions& o,
                                                             int64_t keep);
  // The session's KV without the `dropped` ranges (sorted, within the KV): whole blocks
  // before the first shared, the rest gathered into fresh private blocks, moved keys
  // re-rotated.
  absl::Status RewriteKv(SessionState* s, std::span<const cache::TokenRange> dropped);
  // The summarize policy: a summary of the oldest turns (WriteSummary) replaces them.
  absl::StatusOr<Compacted> SummarizeSession(SessionState* s, const cache::CompactionOptions& o,
                                             int64_t keep, int64_t protect_from,
                                             int64_t turns_seen);
  // The model's summary (greedy ids, at most summary_max_tokens) of the history before `cut`
  // followed by the instruction `ask`,
  // written on the loop in a scratch block table that shares the session's whole blocks.
  absl::StatusOr<std::vector<TokenId>> WriteSummary(const SessionState& s,
                                                    std::span<const TokenId> ask,
                                                    const cache::CompactionOptions& o, int64_t cut);
  // The instruction the summary is written after (`ask` above): the summary prompt as a
  // user message of a chat session, plain text otherwise.
  std::vector<TokenId> SummaryInstruction(const SessionState& s,
                                          const cache::CompactionOptions& o) const;
  // The tokens the summary is inserted as: a system (or user) message of a chat session,
  // plain text otherwise.
  std::vector<TokenId> FrameSummary(const SessionState& s, std::string_view summary) const;
  // The tokens a summary keeps before it: a chat session's system-prompt turn (else none:
  // the summary starts the history), a raw-token session's sinks.
  int64_t SummaryHead(const SessionState& s, const cache::CompactionOptions& o) const;
  // Tokens whose KV may lag a session's history when a turn starts (a reply's last token
  // and the template's end-of-turn text), allowed for in the score policy's floor.
  static constexpr int64_t kLagTokens = 8;
  // The tokens a summary may take in the rebuilt history: summary_max_tokens and its framing
  // (role markers, "Summary of ...").
  int64_t SummaryRoom(const SessionState& s, const cache::CompactionOptions& o) const;
  // Runs the compaction PlanTurnCompaction planned for `seq`, once. ResourceExhausted: it
  // must wait for free blocks; any other error ends the turn.
  absl::Status CompactForTurn(Seq& seq);
  void Enqueue(std::unique_ptr<Seq> seq);
  void StartNextTurn(const SessionId& id);
  void Finish(Seq* seq, absl::Status status);
  void CloseAssistantTurn(Seq& seq);
  std::unique_ptr<Seq> Detach(Seq* seq);
  void Preempt(Seq* seq);
  bool Admit(Seq& seq);
  void SampleInto(Seq& seq, std::span<const float> row);
  // Fills seq.result.prompt_logprobs from the `take` logit rows of a chunk at `start`.
  void ScorePrompt(Seq& seq, int64_t start, int64_t take, const float* rows);
  bool PlanChunk(Seq* seq, int64_t take);
  absl::Status CheckAll();  // every invariant (engine.h CheckInvariants)
  bool Planned(const Seq* seq) const;

  // Tiers (engine/tiers.cc).
  absl::Status OpenTiers();  // at Create: host tier, state directory, recovery
  Residency& Res(const SessionState& s) { return residency[s.id]; }
  bool Resident(const SessionState& s) {
    const Residency& r = residency[s.id];
    return r.tier == StorageTier::kDevice && !r.moving;
  }
  bool Pinned(const Residency& r, absl::Time now) const { return now < r.pinned_until; }
  enum class Need : uint8_t { kNoMove, kResident, kNoIo };
  // Runs `fn` now if the session meets `need`, else once it does (or with the error that
  // ended the wait). Starts a restore when `need` is kResident.
  void WhenReady(SessionState* s, Need need, absl::AnyInvocable<void(absl::Status)> fn);
  // After a job on `s` ended: deferred calls, parked turns, pending writes, deletion.
  void Settle(SessionState* s);
  void RunJob(SessionState* s, bool move, absl::AnyInvocable<absl::Status()> job,
              absl::AnyInvocable<void(SessionState*, absl::Status)> done);
  void TruncateHistory(SessionState* s, int64_t n_tokens);
  // Adds the bytes x seconds each tier held the session for since the last call; called
  // before anything changes what it holds (and when it is reported).
  void Account(const SessionState& s) {
    Residency& r = Res(s);
    const Clock::time_point now = Clock::now();
    const double dt = Seconds(now - r.accounted_at);
    r.accounted_at = now;
    r.byte_seconds[0] += dt * static_cast<double>(s.kv_bytes(*pool));
    r.byte_seconds[1] +=
        dt * static_cast<double>(r.host.size()) * static_cast<double>(HostBlockBytes());
    r.byte_seconds[2] += dt * static_cast<double>(DiskBytes(r));
  }
  void MarkChanged(SessionState* s) {
    Account(*s);
    Residency& r = Res(*s);
    if (r.version == r.written) r.dirty_since = Clock::now();
    ++r.version;
  }
  cache::SessionRecord MakeRecord(const SessionState& s) const;
  // Starts a write of the session's state if one is due (durability, Flush, sync, shutdown).
  void MaybeWrite(SessionState* s, bool force);
  void StartWrite(SessionState* s, bool move,
                  absl::AnyInvocable<void(SessionState*, absl::Status)> then);
  void AfterWrite(SessionState* s, const absl::Status& st);
  // Moves an idle session's KV one or more tiers down; `done` gets the outcome.
  void StartSpill(SessionState* s, StorageTier to, absl::AnyInvocable<void(absl::Status)> done);
  void DropKv(SessionState* s);  // forgets the KV (recomputed when used)
  void RequestRestore(SessionState* s);
  bool TryRestore(SessionState* s);
  // Starts demotions of idle device sessions so that `need` more blocks fit; true when a
  // move is (now or already) in flight that will free blocks.
  bool FreeDeviceBlocks(int64_t need);
  void DemoteHost(int64_t need_blocks);
  // The cold tiers' block encoding (EngineOptions::compress_cold) and its bytes per block.
  std::string_view ColdEncoding() const {
    return opts.compress_cold ? cache::kKvEncodingInt8 : cache::kKvEncodingRaw;
  }
  int64_t cold_bytes = 0;
  int64_t HostBlockBytes() const { return host ? host->block_bytes() : 0; }
  static int64_t DiskBytes(const Residency& r) {
    int64_t n = 0;
    for (const cache::DiskBlock& b : r.disk) n += static_cast<int64_t>(b.length);
    return n;
  }
  // A device block (raw, `rows` of its tokens used) in the cold encoding, and back. Pure:
  // called on the I/O workers. Device-tier block bytes (`raw`: a pool block, in device memory when
  // the pool's arena is not host-accessible) to and from the cold encoding in host memory. With a
  // device arena these are, with CopyBlockOut and the restore's disk reads, the only places block
  // bytes cross between the arena and the host.
  void EncodeCold(const uint8_t* raw, int64_t rows, uint8_t* out) const;
  void DecodeCold(std::string_view encoding, const uint8_t* in, uint8_t* raw) const;
  // The arena's memory when the CPU cannot touch it directly (a GPU's), else nullptr.
  cache::ArenaMemory* DeviceMemory() const;
  // Copies the bytes of pool block `raw` to host memory `out` (block_bytes of them).
  void CopyBlockOut(const uint8_t* raw, uint8_t* out) const;
  // Whether `blocks` more host blocks fit the host tier and the session's tenant quota.
  bool HostFits(const SessionState& s, int64_t blocks);
  void TierTick();
  void Park(std::unique_ptr<Seq> seq);
  void Unpark(const SessionId& id);
  bool HasParked(const SessionId& id) const;
  void FinishDelete(SessionState* s);
  void ReleaseSyncWait(SessionState* s, absl::Status st);
  void RegisterRecord(cache::SessionRecord record, std::string_view tenant);
  void ShutdownTiers();
  void ApplyRetention(SessionState* s, const Retention& retention);
  // A new session in `tenant` with the history, KV (full blocks shared, the partial one
  // copied), transcript, RNG, metadata and log of `s` as of its first `turns` turns; the
  // caller sets TTL, retention and options. ResourceExhausted without a block for the copy.
  absl::StatusOr<SessionState*> CopySession(const SessionState& s, int64_t turns,
                                            std::string_view tenant);
  absl::StatusOr<SessionInfo> ForkNow(const SessionState& s, std::optional<int64_t> turns,
                                      std::string_view session_id);
  absl::Status RewindNow(SessionState* s, int64_t turns, std::string_view session_id);

  // The plan of the step being built.
  struct Work {
    Seq* seq;
    int64_t start;  // first position of the chunk
    int64_t take;
  };
  std::vector<Work> work;
  int64_t budget = 0;
  std::tuple<int, double, uint64_t> Order(const Seq& s) {
    return {-s.priority, tenant_served[s.tenant], s.arrival};
  }
};

}  // namespace mnemo::engine
