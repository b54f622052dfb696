// The Engine's public calls (engine/engine.h): validation on the caller's thread, everything
// else on the engine loop through Impl::Call.
#include "engine/engine.h"
#include "engine/internal/engine_impl.h"

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
  if (p.compaction) {
    if (absl::Status s = cache::ValidateCompactionOptions(*p.compaction); !s.ok()) return s;
  }
  return p.stop.Validate();
}

}  // namespace

absl::StatusOr<SessionInfo> Engine::CreateSession(std::string_view tenant,
                                                  const SessionParams& params) {
  Impl& m = *impl_;
  if (params.ttl && *params.ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("ttl must be positive");
  }
  const Durability durability = params.durability.value_or(m.opts.durability);
  if (durability == Durability::kSync && m.opts.state_dir.empty()) {
    return absl::InvalidArgumentError("durability sync needs a state directory");
  }
  if (params.retention.pin < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("retention.pin must not be negative");
  }
  if (params.compaction) {
    if (absl::Status s = cache::ValidateCompactionOptions(*params.compaction); !s.ok()) return s;
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
    Residency& r = m.Res(*raw);
    r.durability = durability;
    r.compaction = params.compaction;
    m.ApplyRetention(raw, params.retention);
    if (prefill) {
      prefill->session = raw;
      prefill->n_prompt = static_cast<int64_t>(raw->kv.tokens.size());
      prefill_done = prefill->out;
      m.runs[raw->id].active = prefill.get();
      m.Enqueue(std::move(prefill));
    } else {
      m.MaybeWrite(raw, /*force=*/false);
    }
    return m.Info(*raw);
  });
  if (!info.ok()) return info;
  // The session is ready once its system prompt is in KV (if the prefill could not run, e.g.
  // for want of blocks, the first turn computes it instead).
  if (prefill_done != nullptr) ResponseStream(prefill_done).Wait();
  return SyncedInfo(tenant, info->id);
}

// A sync session's calls return once what they changed is durable.
absl::StatusOr<SessionInfo> Engine::SyncedInfo(std::string_view tenant, std::string_view id) {
  auto info = GetSession(tenant, id);
  if (!info.ok() || info->durability != Durability::kSync) return info;
  if (absl::Status st = Flush(tenant, id); !st.ok()) return st;
  return GetSession(tenant, id);
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
  absl::StatusOr<SessionInfo> forked = m.Await<absl::StatusOr<SessionInfo>>([&](auto reply) {
    auto src = m.FindSession(tenant, session_id);
    if (!src.ok()) return reply(src.status());
    m.WhenReady(*src, Impl::Need::kResident,
                [&m, src = *src, turns, session_id = std::string(session_id),
                 reply = std::move(reply)](absl::Status ready) mutable {
                  if (!ready.ok()) return reply(ready);
                  reply(m.ForkNow(*src, turns, session_id));
                });
  });
  if (!forked.ok()) return forked;
  return SyncedInfo(tenant, forked->id);
}

absl::StatusOr<SessionInfo> Engine::Impl::ForkNow(const SessionState& s,
                                                  std::optional<int64_t> turns,
                                                  std::string_view session_id) {
  Impl& m = *this;
  {
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
    if (const int64_t floor = cache::RewindFloor(s.compaction_log);
        keep < n_turns && keep < floor) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot fork session ", AsAbsl(session_id), " at ", keep,
          " turns: it was compacted after ", floor, " turns and the earlier state is gone"));
    }
    absl::StatusOr<SessionState*> raw = m.CopySession(s, keep, s.tenant);
    if (!raw.ok()) return raw.status();
    // The states kept by its compactions stay the source's.
    for (cache::CompactionRecord& c : (*raw)->compaction_log) c.kept.clear();
    (*raw)->ttl = s.ttl;
    m.Res(**raw).compaction = m.Res(s).compaction;
    m.ApplyRetention(*raw, m.Res(s).retention);
    m.MaybeWrite(*raw, /*force=*/false);
    return m.Info(**raw);
  }
}

absl::StatusOr<SessionState*> Engine::Impl::CopySession(const SessionState& s, int64_t turns,
                                                        std::string_view tenant) {
  std::optional<cache::BlockTable> table = s.kv.table.Fork(*pool);
  if (!table) return absl::ResourceExhaustedError("no free KV block for the copy's partial block");
  auto f = std::make_unique<SessionState>();
  f->id = SessionId::Random();
  f->tenant = std::string(tenant);
  f->model_fingerprint = s.model_fingerprint;
  f->kv.tokens = s.kv.tokens;
  f->kv.table = std::move(*table);
  f->kv.chain = s.kv.chain;
  f->turns = s.turns;
  f->messages = s.messages;
  f->rng_state = s.rng_state;
  f->metadata = s.metadata;
  f->compaction_log = s.compaction_log;
  f->created = f->last_used = Now();
  if (turns < static_cast<int64_t>(s.turns.size())) {
    f->kv.Truncate(*pool, f->turns[static_cast<size_t>(turns)].token_start);
    f->messages.resize(static_cast<size_t>(f->turns[static_cast<size_t>(turns)].message_start));
    f->turns.resize(static_cast<size_t>(turns));
  }
  SessionState* raw = sessions.Insert(std::move(f));
  stats.sessions = static_cast<int64_t>(sessions.size());
  Res(*raw).durability = Res(s).durability;
  return raw;
}

absl::Status Engine::Rewind(std::string_view tenant, std::string_view session_id, int64_t turns) {
  Impl& m = *impl_;
  absl::Status st = m.Await<absl::Status>([&](auto reply) {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return reply(s.status());
    m.WhenReady(
        *s, Impl::Need::kResident,
        [&m, s = *s, turns, session_id = std::string(session_id),
         reply = std::move(reply)](absl::Status ready) mutable {
          if (!ready.ok()) return reply(ready);
          // Below the floor, a kept pre-compaction state (resident first) brings it back.
          std::optional<size_t> k;
          if (!m.Busy(s->id) && turns >= 0 && turns < cache::RewindFloor(s->compaction_log)) {
            k = m.KeptStateFor(*s, turns);
          }
          if (!k) return reply(m.RewindNow(s, turns, session_id));
          m.WhenReady(m.FindKeptState(*s, s->compaction_log[*k]), Impl::Need::kResident,
                      [&m, s, k = *k, turns, session_id,
                       reply = std::move(reply)](absl::Status kept_ready) mutable {
                        if (!kept_ready.ok()) return reply(kept_ready);
                        if (m.Busy(s->id)) {
                          return reply(absl::FailedPreconditionError(
                              absl::StrCat("session ", session_id, " has a turn in flight")));
                        }
                        if (absl::Status restored = m.RestoreKeptState(s, k); !restored.ok()) {
                          return reply(restored);
                        }
                        reply(m.RewindNow(s, turns, session_id));
                      });
        });
  });
  if (!st.ok()) return st;
  return SyncedInfo(tenant, session_id).status();
}

absl::Status Engine::Impl::RewindNow(SessionState* s, int64_t turns, std::string_view session_id) {
  Impl& m = *this;
  {
    SessionState& st = *s;
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
    if (const int64_t floor = cache::RewindFloor(st.compaction_log); turns < floor) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot rewind session ", AsAbsl(session_id), " to ", turns,
          " turns: it was compacted after ", floor, " turns and the earlier state is gone"));
    }
    const cache::SessionTurn at = st.turns[static_cast<size_t>(turns)];
    m.TruncateHistory(&st, at.token_start);
    st.messages.resize(static_cast<size_t>(at.message_start));
    st.turns.resize(static_cast<size_t>(turns));
    st.last_used = m.Now();
    m.MarkChanged(&st);
    m.MaybeWrite(&st, /*force=*/false);
    return absl::OkStatus();
  }
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
  absl::Status st = m.Call([&]() -> absl::Status {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return s.status();
    (*s)->metadata = std::move(metadata);
    (*s)->last_used = m.Now();
    m.MarkChanged(*s);
    m.MaybeWrite(*s, /*force=*/false);
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return SyncedInfo(tenant, session_id).status();
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
  return m.Await<absl::Status>([&](auto reply) {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return reply(s.status());
    m.DeleteSessionNow(
        *s, absl::NotFoundError(absl::StrCat("session ", AsAbsl(session_id), " was deleted")),
        std::move(reply));
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
    s.block_bytes = m.pool->block_bytes();
    s.block_tokens = m.opts.block_tokens;
    s.blocks_total = m.pool->num_total();
    s.blocks_free = m.pool->num_free();
    s.blocks_cached = m.pool->num_cached();
    s.blocks_in_use = m.pool->num_in_use();
    s.sessions = static_cast<int64_t>(m.sessions.size());
    s.evictions = m.pool->stats().evictions;
    if (m.host) {
      s.host_bytes_used = static_cast<int64_t>(m.host->used_bytes());
      s.host_bytes_total = static_cast<int64_t>(m.host->capacity_bytes());
    }
    s.disk_bytes_used = m.disk_bytes;
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
    const Residency& r = Res(*s);
    tables.push_back(&r.io_hold);
    tables.push_back(&r.restore_table);
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
