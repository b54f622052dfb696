// The Engine: the engine loop, its command queue, the scheduler and the per-request
// streams. See engine.h for the contract; the loop is the only thread that touches sessions,
// the block pool, the prefix index and the forward pass.
#include "engine/engine.h"

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

namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

void Append(StreamChunk& into, StreamChunk&& from) {
  into.ids.insert(into.ids.end(), from.ids.begin(), from.ids.end());
  into.text += from.text;
  into.logprobs.insert(into.logprobs.end(), from.logprobs.begin(), from.logprobs.end());
  for (auto& t : from.top_logprobs) into.top_logprobs.push_back(std::move(t));
}

absl::Status UnknownSession(std::string_view id) {
  return absl::NotFoundError(absl::StrCat("no session ", AsAbsl(id)));
}

}  // namespace

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

ResponseStream::ResponseStream(std::shared_ptr<State> state) : state_(std::move(state)) {}
ResponseStream::~ResponseStream() = default;

bool ResponseStream::Next(StreamChunk* chunk) {
  std::unique_lock<std::mutex> lock(state_->mu);
  state_->cv.wait(lock, [&] { return state_->has_pending || state_->done; });
  if (!state_->has_pending) return false;
  *chunk = std::exchange(state_->pending, {});
  state_->has_pending = false;
  return true;
}

const TurnResult& ResponseStream::Wait() {
  std::unique_lock<std::mutex> lock(state_->mu);
  state_->cv.wait(lock, [&] { return state_->done; });
  return state_->result;
}

void ResponseStream::Cancel() { state_->cancel.store(true, std::memory_order_relaxed); }
bool ResponseStream::cancelled() const { return state_->cancel.load(std::memory_order_relaxed); }
bool ResponseStream::done() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->done;
}

// ---------------------------------------------------------------------------------------
// Engine::Impl

namespace {

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

}  // namespace

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

// ---------------------------------------------------------------------------------------
// Creation and the loop

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const Model& model,
                                                       const EngineOptions& opts) {
  if (opts.max_batch_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch_tokens must be >= 1, got ", opts.max_batch_tokens));
  }
  if (opts.max_seqs < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_seqs must be >= 1, got ", opts.max_seqs));
  }
  if (opts.max_batch_tokens < opts.max_seqs) {
    // Every running sequence must be able to decode in every step.
    return absl::InvalidArgumentError(absl::StrCat("max_batch_tokens (", opts.max_batch_tokens,
                                                   ") must be >= max_seqs (", opts.max_seqs, ")"));
  }
  if (opts.block_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_tokens must be >= 1, got ", opts.block_tokens));
  }
  if (opts.kv_dtype != kernels::DType::kF16 && opts.kv_dtype != kernels::DType::kBF16) {
    return absl::InvalidArgumentError("KV dtype must be f16 or bf16");
  }
  auto impl = std::make_unique<Impl>();
  impl->model = &model;
  impl->opts = opts;
  auto tok = Tokenizer::Create(model.tokenizer_data());
  if (!tok.ok()) return tok.status();
  impl->tokenizer = std::move(*tok);
  impl->tmpl = ModelChatTemplate(*impl->tokenizer);
  auto fwd = LlamaForward::Create(model, ForwardOptions{.threads = opts.threads});
  if (!fwd.ok()) return fwd.status();
  impl->forward = std::move(*fwd);
  auto pool =
      BlockPool::Create({.layout = impl->forward->KvLayoutFor(opts.kv_dtype, opts.block_tokens),
                         .budget_bytes = opts.kv_budget_bytes});
  if (!pool.ok()) return pool.status();
  impl->pool = std::move(*pool);
  impl->root = cache::ChainRoot(model.fingerprint());
  impl->vocab = impl->forward->config().vocab_size;
  impl->ctx = impl->forward->config().context_length;
  Impl* raw = impl.get();
  impl->loop = std::thread([raw] { raw->Loop(); });
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
    impl_->cv.notify_one();
  }
  impl_->loop.join();
}

void Engine::Impl::Loop() {
  for (;;) {
    std::deque<absl::AnyInvocable<void()>> todo;
    bool stop = false;
    bool pause = false;
    {
      std::unique_lock<std::mutex> lock(mu);
      if (commands.empty() && !stopping && (paused || !HasWork())) {
        // Idle: wake for commands, or after a second to expire sessions.
        cv.wait_for(lock, std::chrono::seconds(1));
      }
      todo.swap(commands);
      stop = stopping;
      pause = paused;
    }
    for (auto& c : todo) c();
    if (stop) break;
    if (opts.expiry_interval != absl::InfiniteDuration() &&
        Clock::now() - last_expiry >= absl::ToChronoNanoseconds(opts.expiry_interval)) {
      last_expiry = Clock::now();
      ExpireNow();
    }
    if (HasWork() && !pause) Step();
  }
  Shutdown();
  // Commands that arrived while shutting down still get their answer.
  std::deque<absl::AnyInvocable<void()>> todo;
  {
    std::lock_guard<std::mutex> lock(mu);
    todo.swap(commands);
  }
  for (auto& c : todo) c();
}

void Engine::Impl::Shutdown() {
  const absl::Status cancelled = absl::CancelledError("the engine is shutting down");
  while (!running.empty()) Finish(running.back().get(), cancelled);
  while (!waiting.empty()) Finish(waiting.back().get(), cancelled);
  for (auto& [id, run] : runs) {
    for (auto& q : run.queued) {
      q->result.status = cancelled;
      q->out->Finish(std::move(q->result));
    }
  }
  runs.clear();
  for (SessionState* s : sessions.All()) s->kv.ReleaseKv(*pool);
  for (KvSequence& p : pinned) p.ReleaseKv(*pool);
  pinned.clear();
}

// ---------------------------------------------------------------------------------------
// Sessions

SessionInfo Engine::Impl::Info(const SessionState& s) const {
  SessionInfo info;
  info.id = s.id.ToString();
  info.tenant = s.tenant;
  info.n_tokens = static_cast<int64_t>(s.kv.tokens.size());
  info.kv_tokens = s.kv.table.n_tokens();
  info.kv_bytes = s.kv_bytes(*pool);
  info.n_turns = static_cast<int64_t>(s.turns.size());
  info.n_messages = static_cast<int64_t>(s.messages.size());
  info.busy = Busy(s.id);
  info.created = s.created;
  info.last_used = s.last_used;
  info.expires = s.expires();
  return info;
}

absl::StatusOr<SessionState*> Engine::Impl::FindSession(std::string_view tenant,
                                                        std::string_view id) {
  const std::optional<SessionId> sid = SessionId::Parse(id);
  if (!sid) return UnknownSession(id);
  SessionState* s = sessions.Find(tenant, *sid);
  if (s == nullptr) return UnknownSession(id);
  return s;
}

void Engine::Impl::DeleteSessionNow(SessionState* s, absl::Status why) {
  if (auto it = runs.find(s->id); it != runs.end()) {
    std::deque<std::unique_ptr<Seq>> queued = std::move(it->second.queued);
    Seq* active = it->second.active;
    runs.erase(it);
    for (auto& q : queued) {
      q->result.status = why;
      q->out->Finish(std::move(q->result));
    }
    if (active != nullptr) {
      std::unique_ptr<Seq> seq = Detach(active);
      seq->result.status = why;
      seq->out->Finish(std::move(seq->result));
    }
  }
  s->kv.ReleaseKv(*pool);
  sessions.Remove(s->id);
  stats.sessions = static_cast<int64_t>(sessions.size());
}

int64_t Engine::Impl::ExpireNow() {
  const absl::Time now = Now();
  int64_t n = 0;
  for (SessionState* s : sessions.All()) {
    if (!Busy(s->id) && s->expires() <= now) {
      DeleteSessionNow(s, absl::NotFoundError("session expired"));
      ++n;
    }
  }
  return n;
}

// ---------------------------------------------------------------------------------------
// Requests

std::unique_ptr<Seq> Engine::Impl::NewSeq(SeqKind kind, std::string_view tenant,
                                          const TurnParams& params) {
  auto seq = std::make_unique<Seq>(params.sampling, params.stop, *tokenizer, vocab);
  seq->kind = kind;
  seq->arrival = next_arrival++;
  seq->tenant = std::string(tenant);
  seq->priority = params.priority;
  seq->ns = {.root = root, .salt = cache::TenantSalt(tenant), .search_public = true};
  seq->params = params;
  seq->generate = seq->stopper.finish() == FinishReason::kNone;  // max_tokens == 0: prefill
  seq->out = std::make_shared<ResponseStream::State>();
  seq->submitted = Clock::now();
  return seq;
}

absl::StatusOr<std::vector<TokenId>> Engine::Impl::RenderTurn(const SessionState* s,
                                                              std::span<const ChatMessage> messages,
                                                              bool add_generation_prompt) const {
  if (tmpl.family() == ChatTemplateFamily::kUnknown) {
    return absl::InvalidArgumentError(
        tokenizer->data().chat_template.empty()
            ? "messages given but the model has no chat template (send tokens instead)"
            : "messages given but the model's chat template is not one mnemo renders (send "
              "tokens instead)");
  }
  // The transcript so far, then the new messages. While the session's history is empty
  // (a system prompt the template can only render with a user turn), everything is new.
  std::vector<ChatMessage> all;
  size_t num_prior = 0;
  if (s != nullptr) {
    for (const cache::SessionMessage& m : s->messages) all.push_back({m.role, m.content});
    if (!s->kv.tokens.empty()) num_prior = all.size();
  }
  all.insert(all.end(), messages.begin(), messages.end());
  const bool at_start = s == nullptr || s->kv.tokens.empty();
  auto text = at_start ? tmpl.Render(all, add_generation_prompt)
                       : tmpl.RenderAppend(all, num_prior, add_generation_prompt);
  if (!text.ok()) return text.status();
  EncodeOptions eo;
  eo.parse_special = true;
  if (!at_start || tmpl.renders_bos()) eo.add_bos = false;
  return tokenizer->Encode(*text, eo);
}

absl::Status Engine::Impl::StartTurn(Seq& seq) {
  SessionState* s = seq.session;
  std::vector<TokenId> delta;
  if (!seq.params.messages.empty()) {
    auto ids = RenderTurn(s, seq.params.messages, /*add_generation_prompt=*/true);
    if (!ids.ok()) return ids.status();
    delta = std::move(*ids);
  } else {
    delta = seq.params.tokens;
  }
  const int64_t history = static_cast<int64_t>(s->kv.tokens.size());
  const int64_t n = history + static_cast<int64_t>(delta.size());
  const int64_t max_tokens = seq.params.stop.max_tokens;
  if (n + std::max<int64_t>(max_tokens, 1) > ctx || (n == 0 && seq.generate)) {
    if (n == 0) return absl::InvalidArgumentError("the turn is empty");
    return absl::InvalidArgumentError(absl::StrCat(
        "the turn would overflow the context: ", history, " tokens of history + ", delta.size(),
        " new + max_tokens ", std::max<int64_t>(max_tokens, 1), " > context length ", ctx));
  }
  seq.rollback_tokens = history;
  seq.rollback_turns = s->turns.size();
  seq.rollback_messages = s->messages.size();
  s->turns.push_back(
      {.token_start = history, .message_start = static_cast<int64_t>(s->messages.size())});
  for (const ChatMessage& m : seq.params.messages) s->messages.push_back({m.role, m.content});
  s->kv.tokens.insert(s->kv.tokens.end(), delta.begin(), delta.end());
  if (!seq.params.reseed && s->rng_state != std::array<uint64_t, 4>{}) {
    auto rng = Rng::FromState(s->rng_state);
    if (rng.ok()) seq.sampler.set_rng(*rng);
  }
  seq.n_prompt = n;
  seq.result.turn = static_cast<int64_t>(s->turns.size()) - 1;
  seq.prepared = true;
  return absl::OkStatus();
}

void Engine::Impl::Enqueue(std::unique_ptr<Seq> seq) {
  // A tenant that was idle joins at the least-served active tenant's count, so that
  // having been idle does not buy it a long head start over the others.
  bool active = false;
  double floor = -1.0;
  for (auto* list : {&running, &waiting}) {
    for (const auto& s : *list) {
      active |= s->tenant == seq->tenant;
      const double served = tenant_served[s->tenant];
      if (floor < 0.0 || served < floor) floor = served;
    }
  }
  if (!active && floor > tenant_served[seq->tenant]) tenant_served[seq->tenant] = floor;
  waiting.push_back(std::move(seq));
  stats.waiting = static_cast<int64_t>(waiting.size());
}

// Starts the next queued turn of session `id`, if any (the previous one has ended).
void Engine::Impl::StartNextTurn(const SessionId& id) {
  auto it = runs.find(id);
  if (it == runs.end()) return;
  SessionRun& run = it->second;
  run.active = nullptr;
  while (!run.queued.empty()) {
    std::unique_ptr<Seq> next = std::move(run.queued.front());
    run.queued.pop_front();
    if (next->out->cancel.load(std::memory_order_relaxed)) {
      next->result.status = absl::CancelledError("cancelled before it started");
      next->out->Finish(std::move(next->result));
      continue;
    }
    if (absl::Status st = StartTurn(*next); !st.ok()) {
      next->result.status = st;
      next->out->Finish(std::move(next->result));
      continue;
    }
    run.active = next.get();
    Enqueue(std::move(next));
    return;
  }
  runs.erase(it);
}

// Removes `seq` from the waiting or running list and hands it back.
std::unique_ptr<Seq> Engine::Impl::Detach(Seq* seq) {
  for (auto* list : {&running, &waiting}) {
    for (auto it = list->begin(); it != list->end(); ++it) {
      if (it->get() == seq) {
        std::unique_ptr<Seq> owned = std::move(*it);
        list->erase(it);
        owned->running = false;
        stats.running = static_cast<int64_t>(running.size());
        stats.waiting = static_cast<int64_t>(waiting.size());
        return owned;
      }
    }
  }
  MNEMO_CHECK(false) << "request not found in the engine's lists";
  return nullptr;
}

// After a message turn's reply: the assistant message joins the transcript and the history
// gets the template's end-of-turn text (minus the end-of-generation token's text, when the
// reply stopped at one), so that the next turn's rendering continues it.
void Engine::Impl::CloseAssistantTurn(Seq& seq) {
  SessionState* s = seq.session;
  s->messages.push_back({"assistant", seq.result.text});
  std::string end = tmpl.assistant_end();
  const std::vector<TokenId>& ids = seq.result.ids;
  if (!ids.empty() && tokenizer->IsEog(ids.back()) && seq.stopper.matched_stop().empty()) {
    const std::string eog = tokenizer->TokenBytes(ids.back(), /*render_special=*/true);
    if (end.starts_with(eog)) end.erase(0, eog.size());
  }
  if (end.empty()) return;
  EncodeOptions eo;
  eo.parse_special = true;
  eo.add_bos = false;
  const std::vector<TokenId> tail = tokenizer->Encode(end, eo);
  if (static_cast<int64_t>(s->kv.tokens.size() + tail.size()) < ctx) {
    s->kv.tokens.insert(s->kv.tokens.end(), tail.begin(), tail.end());
  }
}

// Ends `seq` (which is waiting or running): OK commits a session turn, anything else rolls it
// back; the stream gets the result; the session's next queued turn starts.
void Engine::Impl::Finish(Seq* raw, absl::Status status) {
  std::unique_ptr<Seq> seq = Detach(raw);
  SessionState* s = seq->session;
  if (status.ok() && seq->generate) {
    std::string rest = seq->stopper.Flush();
    if (!rest.empty()) {
      seq->result.text += rest;
      StreamChunk chunk;
      chunk.text = std::move(rest);
      seq->out->Push(std::move(chunk));
    }
  }
  if (s != nullptr) {
    if (seq->kind == SeqKind::kTurn && seq->prepared) {
      if (status.ok()) {
        if (!seq->params.messages.empty()) CloseAssistantTurn(*seq);
        s->rng_state = seq->sampler.rng().state();
      } else {
        s->kv.Truncate(*pool, seq->rollback_tokens);
        s->turns.resize(seq->rollback_turns);
        s->messages.resize(seq->rollback_messages);
      }
    }
    s->last_used = Now();
  } else if (seq->pin && status.ok()) {
    pinned.push_back(std::move(seq->own));
  } else {
    seq->own.ReleaseKv(*pool);
  }
  seq->result.status = status;
  seq->result.usage.prompt_tokens = seq->n_prompt;
  seq->result.total_seconds = Seconds(Clock::now() - seq->submitted);
  seq->out->Finish(std::move(seq->result));
  if (s != nullptr) StartNextTurn(s->id);
}

// Drops the KV of a running sequence and puts it back in the queue: it is recomputed when
// admitted again (its published blocks are usually still cached).
void Engine::Impl::Preempt(Seq* raw) {
  std::unique_ptr<Seq> seq = Detach(raw);
  seq->kv().ReleaseKv(*pool);
  ++stats.preemptions;
  Enqueue(std::move(seq));
}

// Attaches the cached prefix and checks that the pool has room for the rest of the known
// history (the blocks are taken chunk by chunk, PlanChunk); false (and nothing held beyond
// what it held before) when it has not.
bool Engine::Impl::Admit(Seq& seq) {
  KvSequence& kv = seq.kv();
  const int64_t bt = opts.block_tokens;
  const int64_t before = kv.table.n_tokens();
  const int64_t n = static_cast<int64_t>(kv.tokens.size());
  if (opts.prefix_cache && before % bt == 0 &&
      static_cast<int64_t>(kv.chain.size()) == before / bt) {
    // At least one token is left to compute when a token is to be sampled.
    const int64_t limit = seq.generate ? n - 1 : n;
    const int64_t got =
        cache::AttachCachedPrefix(*pool, seq.ns, kv.tokens, limit, kv.table, kv.chain);
    stats.prefix_hits += (got - before) / bt;
  }
  const int64_t reused = kv.table.n_tokens();
  const int64_t need = (n + bt - 1) / bt - static_cast<int64_t>(kv.table.blocks().size());
  if (need > pool->num_free()) {
    kv.table.Truncate(*pool, before);
    kv.chain.resize(std::min<size_t>(kv.chain.size(), static_cast<size_t>(before / bt)));
    return false;
  }
  if (!seq.admitted_once) {  // a preempted sequence's recomputation is not counted again
    seq.admitted_once = true;
    seq.result.usage.cached_tokens = reused;
    seq.result.admission = admissions++;
    seq.result.queue_seconds = Seconds(Clock::now() - seq.submitted);
    stats.tokens_cached += reused;
  }
  return true;
}

// One token sampled from `row` for `seq`: appended to its history, streamed, and checked
// against the stop conditions and the context length.
void Engine::Impl::SampleInto(Seq& seq, std::span<const float> row) {
  KvSequence& kv = seq.kv();
  SampleResult r = seq.sampler.Sample(row, kv.tokens, seq.n_prompt);
  kv.tokens.push_back(r.id);
  ++stats.tokens_generated;
  if (!seq.first_token_seen) {
    seq.first_token_seen = true;
    seq.result.ttft_seconds = Seconds(Clock::now() - seq.submitted);
  }
  StreamChunk chunk;
  chunk.ids.push_back(r.id);
  chunk.logprobs.push_back(r.logprob);
  if (seq.params.sampling.top_logprobs > 0) chunk.top_logprobs.push_back(r.top);
  seq.result.ids.push_back(r.id);
  seq.result.logprobs.push_back(r.logprob);
  if (seq.params.sampling.top_logprobs > 0) seq.result.top_logprobs.push_back(std::move(r.top));
  ++seq.result.usage.completion_tokens;
  std::string text = seq.stopper.Push(r.id, seq.detok.Push(r.id));
  if (seq.stopper.finish() != FinishReason::kNone) {
    // Bytes of an incomplete UTF-8 sequence held by the detokenizer, unless a stop string
    // or an end-of-generation token ended the text.
    if (seq.stopper.matched_stop().empty() && !tokenizer->IsEog(r.id)) text += seq.detok.Flush();
    seq.result.finish = seq.stopper.finish();
  } else if (static_cast<int64_t>(kv.tokens.size()) >= ctx) {
    text += seq.stopper.Flush() + seq.detok.Flush();
    seq.result.finish = FinishReason::kLength;
  }
  seq.result.text += text;
  chunk.text = std::move(text);
  seq.out->Push(std::move(chunk));
}

// One scheduler iteration and one forward step (engine.h: "Scheduling"). A table holds
// blocks for exactly the tokens whose KV is computed, except during a step, when it is
// grown to cover the chunk being computed (Reserve in PlanChunk).
void Engine::Impl::Step() {
  const auto t0 = Clock::now();
  // Cancellations first: they free blocks for everything below.
  for (auto* list : {&running, &waiting}) {
    std::vector<Seq*> cancelled;
    for (auto& s : *list) {
      if (s->out->cancel.load(std::memory_order_relaxed)) cancelled.push_back(s.get());
    }
    for (Seq* s : cancelled) Finish(s, absl::CancelledError("cancelled"));
  }
  auto by_order = [&](const std::unique_ptr<Seq>& a, const std::unique_ptr<Seq>& b) {
    return Order(*a) < Order(*b);
  };
  std::sort(running.begin(), running.end(), by_order);
  work.clear();
  budget = opts.max_batch_tokens;

  // 1. Decodes: one token each.
  std::vector<Seq*> order;
  for (auto& s : running) order.push_back(s.get());
  for (Seq* seq : order) {
    if (budget == 0) break;
    if (seq->running && seq->generate && seq->pending() == 1) PlanChunk(seq, 1);
  }
  // 2. Chunks of running prefills.
  for (Seq* seq : order) {
    if (budget == 0) break;
    if (!seq->running || Planned(seq)) continue;
    const int64_t pending = seq->pending();
    if (pending > 0) PlanChunk(seq, std::min(pending, budget));
  }
  // 3. Admissions, best first, while the sequence cap, the budget and the blocks last.
  std::stable_sort(waiting.begin(), waiting.end(), by_order);
  while (!waiting.empty() && budget > 0 && static_cast<int64_t>(running.size()) < opts.max_seqs) {
    Seq* seq = waiting.front().get();
    if (!Admit(*seq)) {
      if (running.empty()) {  // nothing running could ever free blocks for it
        const int64_t n = static_cast<int64_t>(seq->kv().tokens.size());
        Finish(seq,
               absl::ResourceExhaustedError(absl::StrCat(
                   "the KV pool cannot hold this request: ", n, " tokens need ",
                   (n + opts.block_tokens - 1) / opts.block_tokens, " blocks of ",
                   pool->block_bytes(), " bytes; ", pool->num_free(), " of ", pool->num_total(),
                   " are free (idle sessions hold the rest: delete some or raise the KV "
                   "budget)")));
        continue;
      }
      break;
    }
    std::unique_ptr<Seq> owned = std::move(waiting.front());
    waiting.erase(waiting.begin());
    owned->running = true;
    Seq* raw = owned.get();
    running.push_back(std::move(owned));
    const int64_t pending = raw->pending();
    if (pending > 0 && !PlanChunk(raw, std::min(pending, budget))) break;
  }

  // Prefill-only requests whose KV was all found in the prefix index.
  std::vector<Seq*> complete;
  for (auto& s : running) {
    if (!s->generate && s->pending() == 0 && !Planned(s.get())) complete.push_back(s.get());
  }
  for (Seq* s : complete) Finish(s, absl::OkStatus());
  stats.running = static_cast<int64_t>(running.size());
  stats.waiting = static_cast<int64_t>(waiting.size());
  if (work.empty()) return;

  // The forward pass over every planned chunk.
  std::vector<SeqBatchEntry> entries;
  entries.reserve(work.size());
  for (const Work& w : work) {
    KvSequence& kv = w.seq->kv();
    const bool sample =
        w.seq->generate && w.start + w.take == static_cast<int64_t>(kv.tokens.size());
    entries.push_back({.tokens = std::span<const TokenId>(kv.tokens).subspan(
                           static_cast<size_t>(w.start), static_cast<size_t>(w.take)),
                       .start_pos = static_cast<int32_t>(w.start),
                       .table = &kv.table,
                       .logits = sample ? LogitRows::kLast : LogitRows::kNone});
  }
  logits.resize(static_cast<size_t>(LlamaForward::LogitRowCount(entries)) *
                static_cast<size_t>(vocab));
  const absl::Status st = forward->Forward(pool->view(), entries, logits.data());
  ++stats.steps;
  std::vector<Seq*> done;
  if (!st.ok()) {
    for (const Work& w : work) done.push_back(w.seq);
  } else {
    int64_t row = 0;
    for (size_t j = 0; j < work.size(); ++j) {
      Seq& seq = *work[j].seq;
      KvSequence& kv = seq.kv();
      tenant_served[seq.tenant] += static_cast<double>(work[j].take);
      stats.tokens_computed += work[j].take;
      if (opts.prefix_cache) {
        cache::PublishFullBlocks(*pool, seq.ns, kv.tokens, kv.table, kv.chain);
      }
      if (entries[j].logits == LogitRows::kNone) {
        if (!seq.generate && seq.pending() == 0) done.push_back(&seq);
        continue;
      }
      SampleInto(seq,
                 std::span<const float>(logits.data() + row * vocab, static_cast<size_t>(vocab)));
      ++row;
      if (seq.result.finish != FinishReason::kNone) done.push_back(&seq);
    }
  }
  work.clear();
  for (Seq* s : done) Finish(s, st);
  stats.busy_seconds += Seconds(Clock::now() - t0);
#ifndef NDEBUG
  const absl::Status inv = CheckAll();
  MNEMO_CHECK(inv.ok()) << inv.message();
#endif
}

bool Engine::Impl::Planned(const Seq* seq) const {
  return std::any_of(work.begin(), work.end(), [&](const Work& w) { return w.seq == seq; });
}

// Grows `seq`'s table by `take` tokens and plans them for this step. When the pool is short,
// preempts running sequences from the end of the order (lowest priority, most served
// tenant, newest) until it fits; returns false when that end was `seq` itself.
bool Engine::Impl::PlanChunk(Seq* seq, int64_t take) {
  KvSequence& kv = seq->kv();
  const int64_t start = kv.table.n_tokens();
  while (!kv.table.Reserve(*pool, start + take)) {
    Seq* victim = running.back().get();
    std::erase_if(work, [&](const Work& w) {
      if (w.seq != victim) return false;
      budget += w.take;
      return true;
    });
    Preempt(victim);
    if (victim == seq) return false;
  }
  work.push_back({seq, start, take});
  budget -= take;
  return true;
}

}  // namespace mnemo::engine

namespace mnemo::engine {

// ---------------------------------------------------------------------------------------
// The public API: validation on the caller's thread, everything else on the loop.

namespace {

absl::Status ValidateTurn(const TurnParams& p, int vocab) {
  if (p.messages.empty() == p.tokens.empty()) {
    return absl::InvalidArgumentError("give exactly one of messages and tokens");
  }
  for (size_t i = 0; i < p.tokens.size(); ++i) {
    if (p.tokens[i] < 0 || p.tokens[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token ", i, " (id ", p.tokens[i], ") is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  if (absl::Status s = p.sampling.Validate(vocab); !s.ok()) return s;
  return p.stop.Validate();
}

}  // namespace

absl::StatusOr<SessionInfo> Engine::CreateSession(std::string_view tenant,
                                                  const SessionParams& params) {
  Impl& m = *impl_;
  if (params.ttl && *params.ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("ttl must be positive");
  }
  std::shared_ptr<ResponseStream::State> prefill_done;
  absl::StatusOr<SessionInfo> info = m.Call([&]() -> absl::StatusOr<SessionInfo> {
    auto s = std::make_unique<SessionState>();
    s->id = SessionId::Random();
    s->tenant = std::string(tenant);
    s->model_fingerprint = m.model->fingerprint();
    s->created = s->last_used = m.Now();
    s->ttl = params.ttl.value_or(m.opts.default_ttl);
    s->metadata = params.metadata;
    s->rng_state = Rng(params.seed).state();
    std::unique_ptr<Seq> prefill;
    if (!params.system_prompt.empty()) {
      const ChatMessage system{.role = "system", .content = params.system_prompt};
      if (m.tmpl.family() == ChatTemplateFamily::kUnknown) {
        return absl::InvalidArgumentError(
            "a system prompt needs a chat template mnemo renders; the model has none");
      }
      s->messages.push_back({system.role, system.content});
      // Templates that can render a system message alone get it prefilled now; the others
      // (system folded into the first user turn) render it with the first turn.
      auto text = m.tmpl.Render(std::span(&system, 1), /*add_generation_prompt=*/false);
      if (text.ok()) {
        EncodeOptions eo;
        eo.parse_special = true;
        if (m.tmpl.renders_bos()) eo.add_bos = false;
        s->kv.tokens = m.tokenizer->Encode(*text, eo);
        if (static_cast<int64_t>(s->kv.tokens.size()) >= m.ctx) {
          return absl::InvalidArgumentError(
              absl::StrCat("the system prompt (", s->kv.tokens.size(),
                           " tokens) does not fit the context length ", m.ctx));
        }
        s->turns.push_back({.token_start = 0, .message_start = 0});
        TurnParams tp;
        tp.stop.max_tokens = 0;
        prefill = m.NewSeq(SeqKind::kPrefill, tenant, tp);
      }
    }
    SessionState* raw = m.sessions.Insert(std::move(s));
    m.stats.sessions = static_cast<int64_t>(m.sessions.size());
    if (prefill) {
      prefill->session = raw;
      prefill->n_prompt = static_cast<int64_t>(raw->kv.tokens.size());
      prefill_done = prefill->out;
      m.runs[raw->id].active = prefill.get();
      m.Enqueue(std::move(prefill));
    }
    return m.Info(*raw);
  });
  if (!info.ok() || prefill_done == nullptr) return info;
  // The session is ready once its system prompt is in KV (if the prefill could not run, e.g.
  // for want of blocks, the first turn computes it instead).
  ResponseStream(prefill_done).Wait();
  return GetSession(tenant, info->id);
}

absl::StatusOr<StreamPtr> Engine::Continue(std::string_view tenant, std::string_view session_id,
                                           TurnParams params) {
  Impl& m = *impl_;
  if (absl::Status st = ValidateTurn(params, m.vocab); !st.ok()) return st;
  return m.Call([&]() -> absl::StatusOr<StreamPtr> {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return s.status();
    const bool busy = m.Busy((*s)->id);
    if (busy && !params.wait_if_busy) {
      return absl::FailedPreconditionError(
          absl::StrCat("session ", AsAbsl(session_id), " has a turn in flight"));
    }
    std::unique_ptr<Seq> seq = m.NewSeq(SeqKind::kTurn, tenant, params);
    seq->session = *s;
    auto stream = std::make_shared<ResponseStream>(seq->out);
    Impl::SessionRun& run = m.runs[(*s)->id];
    if (busy) {
      run.queued.push_back(std::move(seq));
      return stream;
    }
    if (absl::Status st = m.StartTurn(*seq); !st.ok()) {
      m.runs.erase((*s)->id);
      return st;
    }
    run.active = seq.get();
    m.Enqueue(std::move(seq));
    return stream;
  });
}

absl::StatusOr<StreamPtr> Engine::Generate(std::string_view tenant, TurnParams params) {
  Impl& m = *impl_;
  if (absl::Status st = ValidateTurn(params, m.vocab); !st.ok()) return st;
  std::vector<TokenId> prompt = params.tokens;
  if (!params.messages.empty()) {
    auto ids = m.RenderTurn(nullptr, params.messages, /*add_generation_prompt=*/true);
    if (!ids.ok()) return ids.status();
    prompt = std::move(*ids);
  }
  const int64_t n = static_cast<int64_t>(prompt.size());
  const int64_t max_tokens = std::max<int64_t>(params.stop.max_tokens, 1);
  if (n + max_tokens > m.ctx) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", n, " tokens + max_tokens ",
                                                   max_tokens, " exceeds the context length ",
                                                   m.ctx));
  }
  return m.Call([&]() -> absl::StatusOr<StreamPtr> {
    std::unique_ptr<Seq> seq = m.NewSeq(SeqKind::kStateless, tenant, params);
    seq->own.tokens = std::move(prompt);
    seq->n_prompt = n;
    seq->prepared = true;
    auto stream = std::make_shared<ResponseStream>(seq->out);
    m.Enqueue(std::move(seq));
    return stream;
  });
}

absl::StatusOr<int64_t> Engine::PublishPrefix(std::span<const ChatMessage> messages,
                                              std::span<const TokenId> tokens) {
  Impl& m = *impl_;
  std::vector<TokenId> ids(tokens.begin(), tokens.end());
  if (messages.empty() == tokens.empty()) {
    return absl::InvalidArgumentError("give exactly one of messages and tokens");
  }
  if (!messages.empty()) {
    auto r = m.RenderTurn(nullptr, messages, /*add_generation_prompt=*/false);
    if (!r.ok()) return r.status();
    ids = std::move(*r);
  }
  for (TokenId id : ids) {
    if (id < 0 || id >= m.vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " outside the vocabulary"));
    }
  }
  if (static_cast<int64_t>(ids.size()) >= m.ctx) {
    return absl::InvalidArgumentError("the prefix does not fit the context length");
  }
  const int64_t whole =
      static_cast<int64_t>(ids.size()) / m.opts.block_tokens * m.opts.block_tokens;
  ids.resize(static_cast<size_t>(whole));  // a partial block could never be shared
  if (whole == 0) return int64_t{0};
  auto stream = m.Call([&]() {
    TurnParams tp;
    tp.stop.max_tokens = 0;
    std::unique_ptr<Seq> seq = m.NewSeq(SeqKind::kPrefill, "", tp);
    seq->ns.salt = cache::kPublicSalt;
    seq->pin = true;
    seq->own.tokens = ids;
    seq->n_prompt = whole;
    auto out = std::make_shared<ResponseStream>(seq->out);
    m.Enqueue(std::move(seq));
    return out;
  });
  const TurnResult& r = stream->Wait();
  if (!r.status.ok()) return r.status;
  return whole;
}

absl::StatusOr<SessionInfo> Engine::Fork(std::string_view tenant, std::string_view session_id,
                                         std::optional<int64_t> turns) {
  Impl& m = *impl_;
  return m.Call([&]() -> absl::StatusOr<SessionInfo> {
    auto src = m.FindSession(tenant, session_id);
    if (!src.ok()) return src.status();
    const SessionState& s = **src;
    if (m.Busy(s.id)) {
      return absl::FailedPreconditionError(
          absl::StrCat("session ", AsAbsl(session_id), " has a turn in flight"));
    }
    const int64_t n_turns = static_cast<int64_t>(s.turns.size());
    const int64_t keep = turns.value_or(n_turns);
    if (keep < 0 || keep > n_turns) {
      return absl::InvalidArgumentError(
          absl::StrCat("turns must be in [0, ", n_turns, "], got ", keep));
    }
    std::optional<cache::BlockTable> table = s.kv.table.Fork(*m.pool);
    if (!table) {
      return absl::ResourceExhaustedError("no free KV block for the fork's partial block");
    }
    auto f = std::make_unique<SessionState>();
    f->id = SessionId::Random();
    f->tenant = s.tenant;
    f->model_fingerprint = s.model_fingerprint;
    f->kv.tokens = s.kv.tokens;
    f->kv.table = std::move(*table);
    f->kv.chain = s.kv.chain;
    f->turns = s.turns;
    f->messages = s.messages;
    f->rng_state = s.rng_state;
    f->metadata = s.metadata;
    f->created = f->last_used = m.Now();
    f->ttl = s.ttl;
    if (keep < n_turns) {
      f->kv.Truncate(*m.pool, f->turns[static_cast<size_t>(keep)].token_start);
      f->messages.resize(static_cast<size_t>(f->turns[static_cast<size_t>(keep)].message_start));
      f->turns.resize(static_cast<size_t>(keep));
    }
    SessionState* raw = m.sessions.Insert(std::move(f));
    m.stats.sessions = static_cast<int64_t>(m.sessions.size());
    return m.Info(*raw);
  });
}

absl::Status Engine::Rewind(std::string_view tenant, std::string_view session_id, int64_t turns) {
  Impl& m = *impl_;
  return m.Call([&]() -> absl::Status {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return s.status();
    SessionState& st = **s;
    if (m.Busy(st.id)) {
      return absl::FailedPreconditionError(
          absl::StrCat("session ", AsAbsl(session_id), " has a turn in flight"));
    }
    const int64_t n_turns = static_cast<int64_t>(st.turns.size());
    if (turns < 0 || turns > n_turns) {
      return absl::InvalidArgumentError(
          absl::StrCat("turns must be in [0, ", n_turns, "], got ", turns));
    }
    if (turns == n_turns) return absl::OkStatus();
    const cache::SessionTurn at = st.turns[static_cast<size_t>(turns)];
    st.kv.Truncate(*m.pool, at.token_start);
    st.messages.resize(static_cast<size_t>(at.message_start));
    st.turns.resize(static_cast<size_t>(turns));
    st.last_used = m.Now();
    return absl::OkStatus();
  });
}

absl::StatusOr<std::string> Engine::GetMetadata(std::string_view tenant,
                                                std::string_view session_id) {
  Impl& m = *impl_;
  return m.Call([&]() -> absl::StatusOr<std::string> {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return s.status();
    return (*s)->metadata;
  });
}

absl::Status Engine::SetMetadata(std::string_view tenant, std::string_view session_id,
                                 std::string metadata) {
  Impl& m = *impl_;
  return m.Call([&]() -> absl::Status {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return s.status();
    (*s)->metadata = std::move(metadata);
    (*s)->last_used = m.Now();
    return absl::OkStatus();
  });
}

absl::StatusOr<SessionInfo> Engine::GetSession(std::string_view tenant,
                                               std::string_view session_id) {
  Impl& m = *impl_;
  return m.Call([&]() -> absl::StatusOr<SessionInfo> {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return s.status();
    return m.Info(**s);
  });
}

std::vector<SessionInfo> Engine::ListSessions(std::string_view tenant) {
  Impl& m = *impl_;
  return m.Call([&]() {
    std::vector<SessionInfo> out;
    for (const SessionState* s : m.sessions.List(tenant)) out.push_back(m.Info(*s));
    return out;
  });
}

absl::Status Engine::DeleteSession(std::string_view tenant, std::string_view session_id) {
  Impl& m = *impl_;
  return m.Call([&]() -> absl::Status {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return s.status();
    m.DeleteSessionNow(
        *s, absl::NotFoundError(absl::StrCat("session ", AsAbsl(session_id), " was deleted")));
    return absl::OkStatus();
  });
}

int64_t Engine::ExpireSessions() {
  Impl& m = *impl_;
  return m.Call([&]() { return m.ExpireNow(); });
}

void Engine::Pause() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->paused = true;
}

void Engine::Resume() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->paused = false;
  impl_->cv.notify_one();
}

absl::StatusOr<std::vector<TokenId>> Engine::SessionTokens(std::string_view tenant,
                                                           std::string_view session_id) {
  Impl& m = *impl_;
  return m.Call([&]() -> absl::StatusOr<std::vector<TokenId>> {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return s.status();
    return (*s)->kv.tokens;
  });
}

EngineStats Engine::Stats() {
  Impl& m = *impl_;
  return m.Call([&]() {
    EngineStats s = m.stats;
    s.blocks_total = m.pool->num_total();
    s.blocks_free = m.pool->num_free();
    s.blocks_cached = m.pool->num_cached();
    s.blocks_in_use = m.pool->num_in_use();
    s.sessions = static_cast<int64_t>(m.sessions.size());
    s.evictions = m.pool->stats().evictions;
    return s;
  });
}

absl::Status Engine::CheckInvariants() {
  Impl& m = *impl_;
  return m.Call([&]() { return m.CheckAll(); });
}

absl::Status Engine::Impl::CheckAll() {
  std::vector<const cache::BlockTable*> tables;
  for (const SessionState* s : sessions.All()) {
    if (absl::Status st = s->CheckInvariants(*pool); !st.ok()) {
      return absl::InternalError(absl::StrCat("session ", s->id.ToString(), ": ", st.message()));
    }
    tables.push_back(&s->kv.table);
  }
  for (auto* list : {&running, &waiting}) {
    for (const auto& seq : *list) {
      if (seq->session == nullptr) tables.push_back(&seq->own.table);
    }
  }
  for (const KvSequence& p : pinned) tables.push_back(&p.table);
  return cache::CheckRefcounts(*pool, tables);
}

const Tokenizer& Engine::tokenizer() const { return *impl_->tokenizer; }
const ChatTemplate& Engine::chat_template() const { return impl_->tmpl; }
const EngineOptions& Engine::options() const { return impl_->opts; }
int64_t Engine::context_length() const { return impl_->ctx; }
int64_t Engine::block_bytes() const { return impl_->pool->block_bytes(); }

}  // namespace mnemo::engine
