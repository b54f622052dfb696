// The Engine: the engine loop, its command queue, the scheduler and the per-request
// streams. See engine.h for the contract; the loop is the only thread that touches sessions,
// the block pool, the prefix index and the forward pass.
#include "engine/engine.h"

#include "engine/internal/engine_impl.h"

namespace mnemo::engine {

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
  if (absl::Status st = cache::ValidateCompactionOptions(opts.compaction); !st.ok()) return st;
  auto impl = std::make_unique<Impl>();
  impl->model = &model;
  impl->opts = opts;
  auto tok = Tokenizer::Create(model.tokenizer_data());
  if (!tok.ok()) return tok.status();
  impl->tokenizer = std::move(*tok);
  impl->tmpl = ModelChatTemplate(*impl->tokenizer);
  auto fwd = CreateForwardPass(model, {.device = opts.device,
                                       .threads = opts.threads,
                                       .device_budget_bytes = opts.device_budget_bytes});
  if (!fwd.ok()) return fwd.status();
  impl->forward = std::move(*fwd);
  auto pool = BlockPool::Create(
      {.layout = impl->forward->KvLayoutFor(opts.kv_dtype, opts.block_tokens),
       // On a GPU the memory plan's KV region decides (EngineOptions::device_budget_bytes).
       .budget_bytes = impl->forward->kv_capacity_bytes() > 0 ? impl->forward->kv_capacity_bytes()
                                                              : opts.kv_budget_bytes,
       .memory = opts.kv_memory != nullptr ? opts.kv_memory : impl->forward->kv_memory()});
  if (!pool.ok()) return pool.status();
  impl->pool = std::move(*pool);
  impl->root = cache::ChainRoot(model.fingerprint());
  impl->vocab = impl->forward->config().vocab_size;
  impl->ctx = impl->forward->config().context_length;
  if (absl::Status st = impl->OpenTiers(); !st.ok()) {
    if (impl->io) impl->io->Stop();
    for (SessionState* s : impl->sessions.All()) s->kv.ReleaseKv(*impl->pool);
    return st;
  }
  Impl* raw = impl.get();
  impl->loop = std::thread([raw] { raw->Loop(); });
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Engine::~Engine() { Shutdown(); }

ShutdownReport Engine::Shutdown(absl::Duration deadline) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->stopping) return {};
    impl_->stopping = true;
    impl_->shutdown_deadline = deadline;
    impl_->cv.notify_one();
  }
  impl_->loop.join();
  return impl_->shutdown_report;
}

void Engine::Impl::Loop() {
  for (;;) {
    std::deque<absl::AnyInvocable<void()>> todo;
    bool stop = false;
    bool pause = false;
    {
      std::unique_lock<std::mutex> lock(mu);
      if (commands.empty() && !stopping && (paused || !HasWork() || stalled)) {
        // Idle: wake for commands, or after a second to expire sessions.
        cv.wait_for(lock, std::chrono::seconds(1));
      }
      todo.swap(commands);
      stop = stopping;
      pause = paused;
    }
    if (!todo.empty()) stalled = false;
    for (auto& c : todo) c();
    if (stop) break;
    TierTick();
    if (opts.expiry_interval != absl::InfiniteDuration() &&
        Clock::now() - last_expiry >= absl::ToChronoNanoseconds(opts.expiry_interval)) {
      last_expiry = Clock::now();
      ExpireNow();
    }
    if (HasWork() && !pause) Step();
  }
  Shutdown();
  // Commands that arrived while shutting down still get their answer; later calls run
  // inline (Post).
  std::lock_guard<std::mutex> dead(dead_mu);
  std::deque<absl::AnyInvocable<void()>> todo;
  {
    std::lock_guard<std::mutex> lock(mu);
    todo.swap(commands);
    loop_done = true;
  }
  for (auto& c : todo) c();
}

void Engine::Impl::Shutdown() {
  shut = true;
  const absl::Status cancelled = absl::CancelledError("the engine is shutting down");
  CancelAll(cancelled);
  ShutdownTiers();
  CancelAll(cancelled);  // requests that arrived while writing down
  for (SessionState* s : sessions.All()) s->kv.ReleaseKv(*pool);
  for (KvSequence& p : pinned) p.ReleaseKv(*pool);
  pinned.clear();
}

void Engine::Impl::CancelAll(const absl::Status& why) {
  while (!running.empty()) Finish(running.back().get(), why);
  while (!waiting.empty()) Finish(waiting.back().get(), why);
  while (!parked.empty()) Finish(parked.back().get(), why);
  for (auto& [id, run] : runs) {
    for (auto& q : run.queued) {
      q->result.status = why;
      q->out->Finish(std::move(q->result));
    }
    run.queued.clear();
  }
  // (Sessions waiting on a sync write keep their runs entry until it completes.)
  absl::erase_if(
      runs, [](const auto& kv) { return kv.second.active == nullptr && kv.second.queued.empty(); });
}

// ---------------------------------------------------------------------------------------
// Sessions

SessionInfo Engine::Impl::Info(const SessionState& s) {
  Account(s);
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
  const auto it = residency.find(s.id);
  if (it != residency.end()) {
    const Residency& r = it->second;
    info.tier = r.tier;
    info.device_bytes = info.kv_bytes;
    info.host_bytes = static_cast<int64_t>(r.host.size()) * HostBlockBytes();
    info.disk_bytes = DiskBytes(r);
    info.moving = r.moving;
    if (r.tier != StorageTier::kDevice) info.kv_tokens = r.off_kv_tokens;
    info.durability = r.durability;
    info.durable = r.on_disk && r.written >= r.version;
    info.last_write_error = r.last_error;
    info.retention = r.retention;
    info.pinned_until = r.pinned_until;
    info.device_byte_seconds = r.byte_seconds[0];
    info.host_byte_seconds = r.byte_seconds[1];
    info.disk_byte_seconds = r.byte_seconds[2];
  }
  info.compaction = CompactionFor(s, nullptr);
  info.compaction_policy = info.compaction.policy;
  info.compactions = static_cast<int64_t>(s.compaction_log.size());
  info.compacted_tokens = cache::CompactedTokens(s.compaction_log);
  // Back over every latest compaction whose state was kept.
  info.rewind_floor = cache::RewindFloor(s.compaction_log);
  for (size_t k = s.compaction_log.size(); k-- > 0 && FindKeptState(s, s.compaction_log[k]);) {
    info.rewind_floor = k == 0 ? 0 : s.compaction_log[k - 1].turns;
  }
  info.compaction_log = s.compaction_log;
  return info;
}

absl::StatusOr<SessionState*> Engine::Impl::FindSession(std::string_view tenant,
                                                        std::string_view id) {
  const std::optional<SessionId> sid = SessionId::Parse(id);
  if (!sid) return UnknownSession(id);
  SessionState* s = sessions.Find(tenant, *sid);
  if (s == nullptr) {
    if (auto it = refused.find(*sid); it != refused.end() && it->second.first == tenant) {
      return absl::FailedPreconditionError(it->second.second);
    }
    return UnknownSession(id);
  }
  if (Res(*s).deleting) return UnknownSession(id);
  return s;
}

void Engine::Impl::DeleteSessionNow(SessionState* s, absl::Status why,
                                    absl::AnyInvocable<void(absl::Status)> done) {
  Residency& r = Res(*s);
  if (done) r.delete_waiters.push_back(std::move(done));
  if (r.deleting) return;
  r.deleting = true;
  DeleteKeptStates(*s, 0);
  for (Deferred& d : r.deferred) d.fn(why);
  r.deferred.clear();
  for (auto& [v, fn] : r.flush_waiters) fn(why);
  r.flush_waiters.clear();
  if (r.sync) {
    r.sync->result.status = why;
    r.sync->out->Finish(std::move(r.sync->result));
    r.sync.reset();
  }
  std::vector<Seq*> mine;
  for (auto& p : parked) {
    if (p->session == s) mine.push_back(p.get());
  }
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
  for (Seq* p : mine) {
    if (std::any_of(parked.begin(), parked.end(), [&](const auto& q) { return q.get() == p; })) {
      std::unique_ptr<Seq> seq = Detach(p);
      seq->result.status = why;
      seq->out->Finish(std::move(seq->result));
    }
  }
  if (!r.io_busy) FinishDelete(s);  // else once its job ends (Settle)
}

int64_t Engine::Impl::ExpireNow() {
  const absl::Time now = Now();
  int64_t n = 0;
  for (SessionState* s : sessions.All()) {
    if (!Busy(s->id) && !HasParked(s->id) && !Res(*s).deleting && s->expires() <= now) {
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
  if (n == 0 && seq.generate) return absl::InvalidArgumentError("the turn is empty");
  if (absl::Status st = PlanTurnCompaction(seq, history, static_cast<int64_t>(delta.size()));
      !st.ok()) {
    return st;
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
  if (shut) {
    seq->result.status = absl::CancelledError("the engine is shutting down");
    if (seq->session != nullptr && seq->kind == SeqKind::kTurn && seq->prepared) {
      TruncateHistory(seq->session, seq->rollback_tokens);
      seq->session->turns.resize(seq->rollback_turns);
      seq->session->messages.resize(seq->rollback_messages);
    }
    if (seq->session != nullptr) runs.erase(seq->session->id);
    seq->out->Finish(std::move(seq->result));
    return;
  }
  if (seq->session != nullptr && !Resident(*seq->session)) {
    Park(std::move(seq));  // enqueued again once its KV is back on the device tier
    return;
  }
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
  for (auto* list : {&running, &waiting, &parked}) {
    for (auto it = list->begin(); it != list->end(); ++it) {
      if (it->get() == seq) {
        std::unique_ptr<Seq> owned = std::move(*it);
        list->erase(it);
        owned->running = false;
        stats.running = static_cast<int64_t>(running.size());
        stats.waiting = static_cast<int64_t>(waiting.size());
        stats.parked = static_cast<int64_t>(parked.size());
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
  std::array<uint64_t, 4> rng_before{};
  if (s != nullptr) {
    rng_before = s->rng_state;
    if (seq->kind == SeqKind::kTurn && seq->prepared) {
      if (status.ok()) {
        if (!seq->params.messages.empty()) CloseAssistantTurn(*seq);
        s->rng_state = seq->sampler.rng().state();
      } else {
        TruncateHistory(s, seq->rollback_tokens);
        s->turns.resize(seq->rollback_turns);
        s->messages.resize(seq->rollback_messages);
      }
    }
    s->last_used = Now();
    MarkChanged(s);
  } else if (seq->pin && status.ok()) {
    pinned.push_back(std::move(seq->own));
  } else {
    seq->own.ReleaseKv(*pool);
  }
  seq->result.status = status;
  seq->result.usage.prompt_tokens = seq->n_prompt;
  seq->result.total_seconds = Seconds(Clock::now() - seq->submitted);
  if (s != nullptr && status.ok() && seq->kind == SeqKind::kTurn && disk &&
      Res(*s).durability == Durability::kSync) {
    // The result waits for the write (ReleaseSyncWait); the session stays busy meanwhile.
    Residency& r = Res(*s);
    r.sync = SyncWait{.version = r.version,
                      .out = seq->out,
                      .result = std::move(seq->result),
                      .rollback_tokens = seq->rollback_tokens,
                      .rollback_turns = seq->rollback_turns,
                      .rollback_messages = seq->rollback_messages,
                      .rollback_rng = rng_before};
    runs[s->id].active = nullptr;
    MaybeWrite(s, /*force=*/true);
    return;
  }
  seq->out->Finish(std::move(seq->result));
  if (s != nullptr) {
    MaybeWrite(s, /*force=*/false);
    StartNextTurn(s->id);
  }
}

// Drops the KV of a running sequence and puts it back in the queue: it is recomputed when
// admitted again (its published blocks are usually still cached).
void Engine::Impl::Preempt(Seq* raw) {
  std::unique_ptr<Seq> seq = Detach(raw);
  seq->kv().ReleaseKv(*pool);
  ++stats.preemptions;
  Enqueue(std::move(seq));
}

// Runs the turn's planned compaction, attaches the cached prefix and checks that the pool
// has room for the rest of the known history (the blocks are taken chunk by chunk,
// PlanChunk); false (and nothing held beyond what it held before) when it has not, or when
// the compaction failed for good (seq.refused says why).
bool Engine::Impl::Admit(Seq& seq) {
  if (absl::Status st = CompactForTurn(seq); !st.ok()) {
    if (!absl::IsResourceExhausted(st)) seq.refused = std::move(st);
    return false;
  }
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
  for (auto* list : {&running, &waiting, &parked}) {
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
      if (!seq->refused.ok()) {
        Finish(seq, seq->refused);
        continue;
      }
      // Idle sessions' KV can make room: demote some (the request waits for the moves).
      const int64_t n_tok = static_cast<int64_t>(seq->kv().tokens.size());
      const int64_t need = (n_tok + opts.block_tokens - 1) / opts.block_tokens -
                           static_cast<int64_t>(seq->kv().table.blocks().size());
      const bool making_room = FreeDeviceBlocks(need);
      if (running.empty() && !making_room) {  // nothing could ever free blocks for it
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
  if (work.empty()) {
    stalled = complete.empty();  // nothing can run until an event (a command, a move)
    return;
  }

  // The forward pass over every planned chunk.
  std::vector<SeqBatchEntry> entries;
  std::vector<bool> samples;  // whether the chunk ends where a token is sampled
  entries.reserve(work.size());
  for (const Work& w : work) {
    KvSequence& kv = w.seq->kv();
    const bool sample =
        w.seq->generate && w.start + w.take == static_cast<int64_t>(kv.tokens.size());
    samples.push_back(sample);
    const bool score = w.seq->params.prompt_logprobs && w.start < w.seq->n_prompt;
    entries.push_back({.tokens = std::span<const TokenId>(kv.tokens).subspan(
                           static_cast<size_t>(w.start), static_cast<size_t>(w.take)),
                       .start_pos = static_cast<int32_t>(w.start),
                       .table = &kv.table,
                       .logits = score    ? LogitRows::kAll
                                 : sample ? LogitRows::kLast
                                          : LogitRows::kNone});
  }
  logits.resize(static_cast<size_t>(LogitRowCount(entries)) * static_cast<size_t>(vocab));
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
      // A compacted session's KV is not a function of its tokens: never published.
      if (opts.prefix_cache && (seq.session == nullptr || seq.session->compaction_log.empty())) {
        cache::PublishFullBlocks(*pool, seq.ns, kv.tokens, kv.table, kv.chain);
      }
      if (entries[j].logits == LogitRows::kAll) {
        ScorePrompt(seq, work[j].start, work[j].take, logits.data() + row * vocab);
        row += work[j].take;
      } else if (entries[j].logits == LogitRows::kLast) {
        ++row;
      }
      if (!samples[j]) {
        if (!seq.generate && seq.pending() == 0) done.push_back(&seq);
        continue;
      }
      // The sampling row is the chunk's last.
      SampleInto(seq, std::span<const float>(logits.data() + (row - 1) * vocab,
                                             static_cast<size_t>(vocab)));
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

void Engine::Impl::ScorePrompt(Seq& seq, int64_t start, int64_t take, const float* rows) {
  const int64_t first = seq.rollback_tokens;  // the turn's first token (0: stateless)
  const std::vector<TokenId>& tokens = seq.kv().tokens;
  std::vector<float>& out = seq.result.prompt_logprobs;
  if (out.empty()) {
    out.assign(static_cast<size_t>(seq.n_prompt - first), std::numeric_limits<float>::quiet_NaN());
  }
  for (int64_t i = 0; i < take; ++i) {
    const int64_t next = start + i + 1;
    if (next < first || next >= seq.n_prompt) continue;
    const std::span<const float> row(rows + i * vocab, static_cast<size_t>(vocab));
    const double log_z = LogSumExp(row, *std::max_element(row.begin(), row.end()));
    out[static_cast<size_t>(next - first)] = static_cast<float>(
        static_cast<double>(row[static_cast<size_t>(tokens[static_cast<size_t>(next)])]) - log_z);
  }
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
