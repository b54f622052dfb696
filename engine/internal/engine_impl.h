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
#include "engine/forward/llama_forward.h"
#include "engine/generate.h"
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
  bool admitted_once = false;
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
  std::unique_ptr<LlamaForward> forward;
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
  std::thread loop;

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

  absl::Time Now() const { return opts.clock ? opts.clock() : absl::Now(); }

  // Runs `fn` on the loop thread and returns its result.
  template <typename F>
  auto Call(F fn) -> std::invoke_result_t<F&> {
    using R = std::invoke_result_t<F&>;
    std::promise<R> promise;
    std::future<R> future = promise.get_future();
    {
      std::lock_guard<std::mutex> lock(mu);
      commands.emplace_back([&]() {
        if constexpr (std::is_void_v<R>) {
          fn();
          promise.set_value();
        } else {
          promise.set_value(fn());
        }
      });
      cv.notify_one();
    }
    return future.get();
  }

  void Loop();
  bool HasWork() const { return !waiting.empty() || !running.empty(); }
  void Step();
  void Shutdown();

  // Sessions.
  SessionInfo Info(const SessionState& s) const;
  bool Busy(const SessionId& id) const { return runs.contains(id); }
  absl::StatusOr<SessionState*> FindSession(std::string_view tenant, std::string_view id);
  void DeleteSessionNow(SessionState* s, absl::Status why);
  int64_t ExpireNow();

  // Requests.
  std::unique_ptr<Seq> NewSeq(SeqKind kind, std::string_view tenant, const TurnParams& params);
  absl::StatusOr<std::vector<TokenId>> RenderTurn(const SessionState* s,
                                                  std::span<const ChatMessage> messages,
                                                  bool add_generation_prompt) const;
  absl::Status StartTurn(Seq& seq);  // appends the turn to its session; Status: nothing changed
  void Enqueue(std::unique_ptr<Seq> seq);
  void StartNextTurn(const SessionId& id);
  void Finish(Seq* seq, absl::Status status);
  void CloseAssistantTurn(Seq& seq);
  std::unique_ptr<Seq> Detach(Seq* seq);
  void Preempt(Seq* seq);
  bool Admit(Seq& seq);
  void SampleInto(Seq& seq, std::span<const float> row);
  bool PlanChunk(Seq* seq, int64_t take);
  absl::Status CheckAll();  // every invariant (engine.h CheckInvariants)
  bool Planned(const Seq* seq) const;

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
