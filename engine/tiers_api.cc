// The Engine's public calls about tiers and durability (engine/engine.h): prefetch, demote,
// flush, retention, export and import. The work is in engine/tiers.cc.
#include "engine/engine.h"
#include "engine/internal/engine_impl.h"

namespace mnemo::engine {

void Engine::Impl::ApplyRetention(SessionState* s, const Retention& retention) {
  Residency& r = Res(*s);
  r.retention = retention;
  r.pinned_until = retention.pin > absl::ZeroDuration()
                       ? Now() + std::min(retention.pin, opts.max_pin)
                       : absl::InfinitePast();
  if (Pinned(r, Now())) RequestRestore(s);  // a pin keeps it on the device tier
}

absl::Status Engine::Prefetch(std::string_view tenant, std::string_view session_id) {
  Impl& m = *impl_;
  return m.Call([&]() -> absl::Status {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return s.status();
    m.RequestRestore(*s);
    return absl::OkStatus();
  });
}

absl::Status Engine::Demote(std::string_view tenant, std::string_view session_id, StorageTier to) {
  Impl& m = *impl_;
  if (to == StorageTier::kDevice) {
    return absl::InvalidArgumentError("Demote moves a session to the host or disk tier");
  }
  return m.Await<absl::Status>([&](auto reply) {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return reply(s.status());
    m.WhenReady(*s, Impl::Need::kNoIo,
                [&m, s = *s, to, reply = std::move(reply)](absl::Status ready) mutable {
                  if (!ready.ok()) return reply(ready);
                  if (m.Busy(s->id) || m.HasParked(s->id)) {
                    return reply(absl::FailedPreconditionError(
                        absl::StrCat("session ", s->id.ToString(), " has a turn in flight")));
                  }
                  if (m.Pinned(m.Res(*s), m.Now())) {
                    return reply(absl::FailedPreconditionError(
                        absl::StrCat("session ", s->id.ToString(), " is pinned")));
                  }
                  m.StartSpill(s, to, std::move(reply));
                });
  });
}

absl::Status Engine::Flush(std::string_view tenant, std::string_view session_id) {
  Impl& m = *impl_;
  if (m.opts.state_dir.empty()) {
    return absl::FailedPreconditionError("the engine has no state directory");
  }
  return m.Await<absl::Status>([&](auto reply) {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return reply(s.status());
    Residency& r = m.Res(**s);
    r.flush_waiters.emplace_back(r.version, std::move(reply));
    m.MaybeWrite(*s, /*force=*/true);  // else after the job in flight (Settle)
  });
}

absl::Status Engine::SetRetention(std::string_view tenant, std::string_view session_id,
                                  const Retention& retention) {
  Impl& m = *impl_;
  if (retention.pin < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("retention.pin must not be negative");
  }
  return m.Call([&]() -> absl::Status {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return s.status();
    m.ApplyRetention(*s, retention);
    return absl::OkStatus();
  });
}

absl::Status Engine::ExportSession(std::string_view tenant, std::string_view session_id,
                                   const std::string& file) {
  Impl& m = *impl_;
  if (absl::Status st = Flush(tenant, session_id); !st.ok()) return st;
  return m.Await<absl::Status>([&](auto reply) {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return reply(s.status());
    m.WhenReady(
        *s, Impl::Need::kNoIo,
        [&m, s = *s, file, reply = std::move(reply)](absl::Status ready) mutable {
          if (!ready.ok()) return reply(ready);
          auto shared = std::make_shared<absl::AnyInvocable<void(absl::Status)>>(std::move(reply));
          m.RunJob(
              s, /*move=*/false, [&m, id = s->id, file] { return m.disk->Export(id, file); },
              [shared](SessionState*, absl::Status st) { (*shared)(std::move(st)); });
        });
  });
}

absl::StatusOr<SessionInfo> Engine::ImportSession(std::string_view tenant,
                                                  const std::string& file) {
  Impl& m = *impl_;
  if (m.disk == nullptr) {
    return absl::FailedPreconditionError("importing a session needs a state directory");
  }
  // The bundle is verified and written as a new session directory off the loop.
  auto id = m.disk->Import(file);
  if (!id.ok()) return id.status();
  auto record = m.disk->ReadManifest(*id);
  absl::Status bad;
  if (!record.ok()) {
    bad = record.status();
  } else if (record->model_fingerprint != m.model->fingerprint()) {
    bad = absl::FailedPreconditionError(
        absl::StrCat(file, ": the session was saved by a model with fingerprint ",
                     record->model_fingerprint, "; this engine runs ", m.model->fingerprint()));
  }
  if (bad.ok()) {
    absl::StatusOr<SessionInfo> info = m.Call([&]() -> absl::StatusOr<SessionInfo> {
      if (m.residency.contains(*id)) {
        return absl::AlreadyExistsError(
            absl::StrCat("session ", id->ToString(), " is already in this engine"));
      }
      // The states its compactions kept stayed with the exporting engine.
      bool rewrite = record->tenant != tenant;
      for (cache::CompactionRecord& c : record->compaction_log) {
        rewrite |= !c.kept.empty();
        c.kept.clear();
      }
      m.RegisterRecord(std::move(*record), tenant);
      SessionState* s = m.sessions.Find(tenant, *id);
      m.stats.sessions = static_cast<int64_t>(m.sessions.size());
      if (rewrite) {  // the directory must say whose it is now, and what it kept
        m.MarkChanged(s);
        m.MaybeWrite(s, /*force=*/true);
      }
      return m.Info(*s);
    });
    if (info.ok()) return info;
    bad = info.status();
  }
  (void)m.disk->Remove(*id);  // nothing of a refused import stays
  return bad;
}

const RecoveryReport& Engine::recovery() const { return impl_->recovery; }

void Engine::MaintainTiers() {
  Impl& m = *impl_;
  m.Await<absl::Status>([&](auto reply) {
     m.last_tier_tick = Clock::time_point();
     m.TierTick();
     if (m.moves_in_flight == 0) return reply(absl::OkStatus());
     m.moves_waiters.push_back(std::move(reply));
   }).IgnoreError();
}

absl::StatusOr<std::string> Engine::SessionKvBytes(std::string_view tenant,
                                                   std::string_view session_id) {
  Impl& m = *impl_;
  return m.Await<absl::StatusOr<std::string>>([&](auto reply) {
    auto s = m.FindSession(tenant, session_id);
    if (!s.ok()) return reply(s.status());
    m.WhenReady(*s, Impl::Need::kResident,
                [&m, s = *s, reply = std::move(reply)](absl::Status ready) mutable {
                  if (!ready.ok()) return reply(ready);
                  std::string out;
                  const size_t bb = static_cast<size_t>(m.pool->block_bytes());
                  out.resize(s->kv.table.blocks().size() * bb);
                  for (size_t i = 0; i < s->kv.table.blocks().size(); ++i) {
                    m.CopyBlockOut(m.pool->BlockData(s->kv.table.blocks()[i]),
                                   reinterpret_cast<uint8_t*>(out.data()) + i * bb);
                  }
                  reply(std::move(out));
                });
  });
}

}  // namespace mnemo::engine
