// The Engine's tiers (docs/sessions.md, "Tiers"; engine/internal/tiers.h): spills and
// restores between the device tier, the host tier and the state directory, write-behind of
// finished turns, recovery at startup and the write-down at shutdown. Runs on the engine
// loop; the bytes move on the I/O workers.
#include <cstring>

#include "engine/engine.h"
#include "engine/internal/engine_impl.h"

namespace mnemo::engine {

std::string_view TierName(StorageTier t) {
  switch (t) {
    case StorageTier::kDevice:
      return "device";
    case StorageTier::kHost:
      return "host";
    case StorageTier::kDisk:
      return "disk";
  }
  return "?";
}

std::string_view DurabilityName(Durability d) {
  switch (d) {
    case Durability::kAsync:
      return "async";
    case Durability::kSync:
      return "sync";
    case Durability::kNone:
      return "none";
  }
  return "?";
}

namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool SameLayout(const kernels::KvLayout& a, const kernels::KvLayout& b) {
  return a.n_layers == b.n_layers && a.n_kv_heads == b.n_kv_heads && a.head_dim == b.head_dim &&
         a.block_tokens == b.block_tokens && a.dtype == b.dtype;
}

int64_t UnixUs(absl::Time t) { return absl::ToUnixMicros(t); }

}  // namespace

// ---------------------------------------------------------------------------------------
// Startup

absl::Status Engine::Impl::OpenTiers() {
  if (opts.io_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("io_threads must be >= 1, got ", opts.io_threads));
  }
  if (!(opts.low_watermark >= 0.0 && opts.low_watermark <= opts.high_watermark &&
        opts.high_watermark <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("watermarks must satisfy 0 <= low (",
                                                   opts.low_watermark, ") <= high (",
                                                   opts.high_watermark, ") <= 1"));
  }
  if (opts.durability == Durability::kSync && opts.state_dir.empty()) {
    return absl::InvalidArgumentError("durability sync needs a state directory");
  }
  if (opts.host_budget_bytes > 0) {
    auto h = cache::HostTier::Create(
        {.block_bytes = pool->block_bytes(), .budget_bytes = opts.host_budget_bytes});
    if (!h.ok()) return h.status();
    host = std::move(*h);
  }
  io = std::make_unique<IoWorkers>(opts.io_threads);
  if (opts.state_dir.empty()) return absl::OkStatus();
  auto d = cache::StateDir::Open(opts.state_dir, {.fsync = opts.fsync, .file_ops = opts.file_ops});
  if (!d.ok()) return d.status();
  disk = std::move(*d);
  auto scan = disk->Scan();
  if (!scan.ok()) return scan.status();
  for (const cache::ScanProblem& p : scan->quarantined) {
    recovery.quarantined.push_back(absl::StrCat(p.path, ": ", p.status.message(),
                                                p.moved_to.empty() ? "" : " (moved to ", p.moved_to,
                                                p.moved_to.empty() ? "" : ")"));
  }
  for (const cache::ScanProblem& p : scan->skipped) {
    recovery.skipped.push_back(absl::StrCat(p.path, ": ", p.status.message()));
  }
  recovery.garbage_removed = static_cast<int64_t>(scan->removed.size());
  for (cache::SessionRecord& r : scan->sessions) {
    if (r.model_fingerprint != model->fingerprint()) {
      const std::string why =
          absl::StrCat("session ", r.id.ToString(), " was saved by a model with fingerprint ",
                       r.model_fingerprint, "; this engine runs ", model->fingerprint());
      recovery.refused.push_back(absl::StrCat(disk->SessionPath(r.id), ": ", why));
      refused[r.id] = why;
      continue;
    }
    const std::string tenant = r.tenant;
    RegisterRecord(std::move(r), tenant);
    ++recovery.sessions;
  }
  stats.sessions = static_cast<int64_t>(sessions.size());
  return absl::OkStatus();
}

// Registers a session read from the state directory, with its KV left there.
void Engine::Impl::RegisterRecord(cache::SessionRecord rec, std::string_view tenant) {
  auto s = std::make_unique<SessionState>();
  s->id = rec.id;
  s->tenant = std::string(tenant);
  s->model_fingerprint = rec.model_fingerprint;
  s->kv.tokens = std::move(rec.tokens);
  s->turns = std::move(rec.turns);
  s->messages = std::move(rec.messages);
  s->rng_state = rec.rng_state;
  s->metadata = std::move(rec.metadata);
  s->created = absl::FromUnixMicros(rec.created_unix_us);
  s->last_used = absl::FromUnixMicros(rec.last_used_unix_us);
  s->ttl = rec.ttl_us < 0 ? absl::InfiniteDuration() : absl::Microseconds(rec.ttl_us);
  Residency& r = residency[rec.id];
  r = Residency{};
  r.durability = opts.durability;
  r.on_disk = true;
  r.disk = std::move(rec.blocks);
  r.disk_kv_tokens = rec.kv_tokens;
  r.version = r.written = 1;
  const int64_t bb = pool->block_bytes();
  if (SameLayout(rec.layout, pool->layout()) && rec.kv_tokens > 0) {
    r.disk_valid_full = rec.kv_tokens / rec.layout.block_tokens;
    r.tier = StorageTier::kDisk;
    r.off_kv_tokens = rec.kv_tokens;
    for (const cache::DiskBlock& b : r.disk) {
      if (b.hash == cache::BlockHash{}) break;
      r.off_chain.push_back(b.hash);
    }
  }
  // (Another KV layout: the blocks cannot be used; the first turn recomputes them.)
  const int64_t bytes = static_cast<int64_t>(r.disk.size()) * bb;
  disk_bytes += bytes;
  tenant_disk_bytes[s->tenant] += bytes;
  sessions.Insert(std::move(s));
}

cache::SessionRecord Engine::Impl::MakeRecord(const SessionState& s) const {
  cache::SessionRecord r;
  r.id = s.id;
  r.tenant = s.tenant;
  r.model_fingerprint = s.model_fingerprint;
  r.layout = pool->layout();
  r.tokens = s.kv.tokens;
  r.turns = s.turns;
  r.messages = s.messages;
  r.rng_state = s.rng_state;
  r.metadata = s.metadata;
  r.created_unix_us = UnixUs(s.created);
  r.last_used_unix_us = UnixUs(s.last_used);
  r.ttl_us = s.ttl == absl::InfiniteDuration() ? -1 : absl::ToInt64Microseconds(s.ttl);
  return r;
}

// ---------------------------------------------------------------------------------------
// Jobs, waiting and settling

void Engine::Impl::RunJob(SessionState* s, bool move, absl::AnyInvocable<absl::Status()> job,
                          absl::AnyInvocable<void(SessionState*, absl::Status)> done) {
  Residency& r = Res(*s);
  MNEMO_CHECK(!r.io_busy) << "two I/O jobs on session " << s->id.ToString();
  r.io_busy = true;
  r.moving = move;
  ++io_in_flight;
  if (move) ++moves_in_flight;
  io->Submit([this, s, move, job = std::move(job), done = std::move(done)]() mutable {
    absl::Status st = job();
    Post([this, s, move, st = std::move(st), done = std::move(done)]() mutable {
      --io_in_flight;
      if (move) --moves_in_flight;
      if (moves_in_flight == 0) {
        for (auto& w : std::exchange(moves_waiters, {})) w(absl::OkStatus());
      }
      Residency& res = Res(*s);
      res.io_busy = false;
      res.moving = false;
      done(s, std::move(st));
      Settle(s);
    });
  });
}

void Engine::Impl::WhenReady(SessionState* s, Need need,
                             absl::AnyInvocable<void(absl::Status)> fn) {
  Residency& r = Res(*s);
  const bool ok = need == Need::kNoIo     ? !r.io_busy
                  : need == Need::kNoMove ? !r.moving
                                          : !r.moving && r.tier == StorageTier::kDevice;
  if (ok && r.deferred.empty()) {
    fn(absl::OkStatus());
    return;
  }
  r.deferred.push_back({.need = static_cast<int>(need), .fn = std::move(fn)});
  if (need == Need::kResident) RequestRestore(s);
}

void Engine::Impl::Settle(SessionState* s) {
  const SessionId id = s->id;
  if (Res(*s).deleting) {
    if (!Res(*s).io_busy) FinishDelete(s);
    return;
  }
  // Deferred calls, in order, while the session meets what the first one needs.
  while (true) {
    Residency& r = Res(*s);
    if (r.deferred.empty()) break;
    const Need need = static_cast<Need>(r.deferred.front().need);
    const bool ok = need == Need::kNoIo     ? !r.io_busy
                    : need == Need::kNoMove ? !r.moving
                                            : !r.moving && r.tier == StorageTier::kDevice;
    if (!ok) {
      if (need == Need::kResident) RequestRestore(s);
      break;
    }
    Deferred d = std::move(r.deferred.front());
    r.deferred.erase(r.deferred.begin());
    d.fn(absl::OkStatus());
    if (!residency.contains(id) || Res(*s).deleting) return;  // the call deleted it
  }
  if (HasParked(id)) {
    if (Resident(*s)) {
      Unpark(id);
    } else {
      RequestRestore(s);
    }
  }
  MaybeWrite(s, /*force=*/false);
  Residency& r = Res(*s);
  if (r.want_restore && !r.io_busy) TryRestore(s);
}

void Engine::Impl::TruncateHistory(SessionState* s, int64_t n_tokens) {
  s->kv.Truncate(*pool, n_tokens);
  Residency& r = Res(*s);
  const int64_t full = n_tokens / opts.block_tokens;
  r.disk_valid_full = std::min(r.disk_valid_full, full);
  r.trunc_floor = std::min(r.trunc_floor, full);
  if (r.tier != StorageTier::kDevice && r.off_kv_tokens > n_tokens) {
    // (Only reached if a history shrinks below KV that is off the device tier; the copy's
    // extra rows are simply not used.)
    r.off_kv_tokens = n_tokens;
    if (static_cast<int64_t>(r.off_chain.size()) > full) r.off_chain.resize(full);
  }
}

// ---------------------------------------------------------------------------------------
// Writes (write-behind, sync, flush, demotion to disk, shutdown)

void Engine::Impl::MaybeWrite(SessionState* s, bool force) {
  if (!disk) return;
  Residency& r = Res(*s);
  if (r.io_busy || r.deleting) return;
  const bool dirty = r.version > r.written;
  const bool wanted = r.sync.has_value() || !r.flush_waiters.empty() || force || shut;
  // (Sync sessions write other changes behind too; the calls that make them flush.)
  const bool automatic =
      dirty && r.durability != Durability::kNone && r.failed_version != r.version;
  if (!(automatic || (wanted && (dirty || !r.flush_waiters.empty())))) return;
  StartWrite(s, /*move=*/false, [](SessionState*, absl::Status) {});
}

void Engine::Impl::StartWrite(SessionState* s, bool move,
                              absl::AnyInvocable<void(SessionState*, absl::Status)> then) {
  Residency& r = Res(*s);
  if (!disk) {
    then(s, absl::FailedPreconditionError("the engine has no state directory"));
    return;
  }
  const int64_t bt = opts.block_tokens;
  const int64_t bb = pool->block_bytes();
  int64_t n_kv = 0;
  const std::vector<cache::BlockHash>* chain = nullptr;
  switch (r.tier) {
    case StorageTier::kDevice:
      n_kv = s->kv.table.n_tokens();
      chain = &s->kv.chain;
      break;
    case StorageTier::kHost:
    case StorageTier::kDisk:
      n_kv = r.off_kv_tokens;
      chain = &r.off_chain;
      break;
  }
  const int64_t nfull = n_kv / bt;
  const int64_t nblocks = CeilDiv(n_kv, bt);
  const bool kv_on_disk = r.tier == StorageTier::kDisk;
  const int64_t keep = kv_on_disk ? nblocks : std::min(r.disk_valid_full, nfull);
  if (r.on_disk && r.written == r.version && r.disk_kv_tokens == n_kv && keep == nblocks) {
    AfterWrite(s, absl::OkStatus());  // nothing new to write
    then(s, absl::OkStatus());
    return;
  }
  // Budgets: the state directory's and the tenant's.
  const int64_t old_bytes = static_cast<int64_t>(r.disk.size()) * bb;
  const int64_t new_bytes = nblocks * bb;
  absl::Status quota;
  if (opts.disk_budget_bytes > 0 &&
      static_cast<uint64_t>(disk_bytes - old_bytes + new_bytes) > opts.disk_budget_bytes) {
    quota = absl::ResourceExhaustedError(absl::StrCat(
        "the disk tier is full: writing session ", s->id.ToString(), " needs ", new_bytes,
        " bytes; ", disk_bytes, " of the budget's ", opts.disk_budget_bytes, " are used"));
  } else if (opts.tenant_disk_quota_bytes > 0 &&
             static_cast<uint64_t>(tenant_disk_bytes[s->tenant] - old_bytes + new_bytes) >
                 opts.tenant_disk_quota_bytes) {
    quota = absl::ResourceExhaustedError(
        absl::StrCat("tenant \"", s->tenant, "\" would exceed its disk quota of ",
                     opts.tenant_disk_quota_bytes, " bytes (", tenant_disk_bytes[s->tenant],
                     " used; session ", s->id.ToString(), " needs ", new_bytes, ")"));
  }
  if (!quota.ok()) {
    r.last_error = std::string(quota.message());
    r.failed_version = r.version;
    ++stats.write_failures;
    AfterWrite(s, quota);
    then(s, quota);
    return;
  }

  // The payloads: full blocks by reference (device: one more reference each, so a turn that
  // runs meanwhile cannot change them; host: the slots stay until this job ends), the partly
  // used last block copied now (the next turn writes into it).
  struct Job {
    cache::SessionRecord record;
    std::vector<cache::DiskBlock> kept;
    std::vector<std::span<const uint8_t>> full;
    std::vector<cache::BlockHash> hashes;
    std::vector<uint8_t> partial;
    std::vector<cache::DiskBlock> blocks;  // the result
  };
  auto job = std::make_shared<Job>();
  job->record = MakeRecord(*s);
  job->record.kv_tokens = n_kv;
  job->kept.assign(r.disk.begin(), r.disk.begin() + std::min<int64_t>(keep, r.disk.size()));
  if (!kv_on_disk) {
    for (int64_t i = keep; i < nblocks; ++i) {
      std::span<const uint8_t> bytes;
      if (r.tier == StorageTier::kDevice) {
        const cache::BlockId id = s->kv.table.blocks()[static_cast<size_t>(i)];
        bytes = {pool->BlockData(id), static_cast<size_t>(bb)};
        if (i < nfull) {
          pool->Retain(id);
          r.io_hold.AppendShared(*pool, id);
        }
      } else {
        bytes = host->BlockData(r.host[static_cast<size_t>(i)]);
      }
      if (i < nfull) {
        job->full.push_back(bytes);
        job->hashes.push_back(i < static_cast<int64_t>(chain->size())
                                  ? (*chain)[static_cast<size_t>(i)]
                                  : cache::BlockHash{});
      } else {
        job->partial.assign(bytes.begin(), bytes.end());
      }
    }
  }
  const uint64_t version = r.version;
  r.trunc_floor = std::numeric_limits<int64_t>::max();
  const int64_t written_blocks =
      static_cast<int64_t>(job->full.size()) + (job->partial.empty() ? 0 : 1);
  RunJob(
      s, move,
      [this, id = s->id, job]() -> absl::Status {
        std::vector<cache::DiskBlock> blocks = job->kept;
        auto full = disk->AppendBlocks(id, job->full);
        if (!full.ok()) return full.status();
        for (size_t i = 0; i < full->size(); ++i) (*full)[i].hash = job->hashes[i];
        blocks.insert(blocks.end(), full->begin(), full->end());
        if (!job->partial.empty()) {
          // Its own segment: the next write supersedes it, and then it is collected.
          const std::span<const uint8_t> p(job->partial);
          auto last = disk->AppendBlocks(id, std::span(&p, 1));
          if (!last.ok()) return last.status();
          blocks.push_back((*last)[0]);
        }
        job->record.blocks = blocks;
        if (absl::Status st = disk->WriteManifest(job->record); !st.ok()) return st;
        job->blocks = std::move(blocks);
        (void)disk->CollectGarbage(id);  // superseded segments; a failure leaves garbage only
        return absl::OkStatus();
      },
      [this, job, version, n_kv, nfull, new_bytes, old_bytes, written_blocks, bb,
       then = std::move(then)](SessionState* sess, absl::Status st) mutable {
        Residency& res = Res(*sess);
        res.io_hold.Release(*pool);
        if (st.ok()) {
          disk_bytes += new_bytes - old_bytes;
          tenant_disk_bytes[sess->tenant] += new_bytes - old_bytes;
          res.disk = std::move(job->blocks);
          res.on_disk = true;
          res.disk_kv_tokens = n_kv;
          res.disk_valid_full = std::min(nfull, res.trunc_floor);
          res.written = std::max(res.written, version);
          res.last_error.clear();
          ++stats.writes;
          stats.bytes_to_disk += written_blocks * bb;
        } else {
          res.last_error = std::string(st.message());
          res.failed_version = version;
          ++stats.write_failures;
        }
        AfterWrite(sess, st);
        then(sess, std::move(st));
      });
}

// Answers what waited for a write: Flush callers and a sync turn.
void Engine::Impl::AfterWrite(SessionState* s, const absl::Status& st) {
  Residency& r = Res(*s);
  std::vector<std::pair<uint64_t, absl::AnyInvocable<void(absl::Status)>>> keep;
  for (auto& [version, fn] : r.flush_waiters) {
    if (r.written >= version) {
      fn(absl::OkStatus());
    } else if (!st.ok()) {
      fn(st);
    } else {
      keep.emplace_back(version, std::move(fn));
    }
  }
  r.flush_waiters = std::move(keep);
  if (r.sync && (r.written >= r.sync->version || !st.ok())) {
    ReleaseSyncWait(s, r.written >= r.sync->version ? absl::OkStatus() : st);
  }
}

void Engine::Impl::ReleaseSyncWait(SessionState* s, absl::Status st) {
  Residency& r = Res(*s);
  SyncWait w = std::move(*r.sync);
  r.sync.reset();
  if (!st.ok()) {  // the turn is not durable: roll it back and say why
    TruncateHistory(s, w.rollback_tokens);
    s->turns.resize(w.rollback_turns);
    s->messages.resize(w.rollback_messages);
    s->rng_state = w.rollback_rng;
    MarkChanged(s);
    w.result.status = absl::Status(
        st.code(), absl::StrCat("the turn was computed but could not be made durable (rolled "
                                "back): ",
                                st.message()));
  }
  w.out->Finish(std::move(w.result));
  StartNextTurn(s->id);
}

// ---------------------------------------------------------------------------------------
// Spills

void Engine::Impl::DropKv(SessionState* s) {
  Residency& r = Res(*s);
  s->kv.ReleaseKv(*pool);
  if (r.tier == StorageTier::kHost) {
    for (cache::HostBlockId h : r.host) host->Free(h);
    tenant_host_bytes[s->tenant] -= static_cast<int64_t>(r.host.size()) * pool->block_bytes();
    r.host.clear();
  }
  r.tier = StorageTier::kDevice;
  r.off_kv_tokens = 0;
  r.off_chain.clear();
  ++stats.drops;
}

void Engine::Impl::StartSpill(SessionState* s, StorageTier to,
                              absl::AnyInvocable<void(absl::Status)> done) {
  Residency& r = Res(*s);
  const int64_t bb = pool->block_bytes();
  if (r.io_busy || Busy(s->id)) {
    done(absl::FailedPreconditionError(
        absl::StrCat("session ", s->id.ToString(), " is busy (a turn or a move in flight)")));
    return;
  }
  if (to <= r.tier) {
    done(absl::OkStatus());  // already there or lower
    return;
  }
  if (r.tier == StorageTier::kDevice && s->kv.table.n_tokens() == 0) {
    done(absl::OkStatus());  // no KV to move
    return;
  }
  if (to == StorageTier::kHost) {
    const int64_t n = static_cast<int64_t>(s->kv.table.blocks().size());
    if (!host) {
      done(absl::FailedPreconditionError("the engine has no host tier"));
      return;
    }
    if (opts.tenant_host_quota_bytes > 0 &&
        static_cast<uint64_t>(tenant_host_bytes[s->tenant] + n * bb) >
            opts.tenant_host_quota_bytes) {
      done(absl::ResourceExhaustedError(
          absl::StrCat("tenant \"", s->tenant, "\" would exceed its host quota of ",
                       opts.tenant_host_quota_bytes, " bytes (", tenant_host_bytes[s->tenant],
                       " used; ", n * bb, " more needed)")));
      return;
    }
    if (host->num_free() < n) {
      done(absl::ResourceExhaustedError(absl::StrCat("the host tier has ", host->num_free(),
                                                     " free blocks; the session needs ", n)));
      return;
    }
    std::vector<cache::HostBlockId> slots;
    std::vector<std::pair<const uint8_t*, uint8_t*>> copies;
    for (cache::BlockId b : s->kv.table.blocks()) {
      slots.push_back(*host->Allocate());
      copies.emplace_back(pool->BlockData(b), host->MutableBlockData(slots.back()).data());
    }
    tenant_host_bytes[s->tenant] += n * bb;
    RunJob(
        s, /*move=*/true,
        [copies = std::move(copies), bb]() {
          for (const auto& [src, dst] : copies) std::memcpy(dst, src, static_cast<size_t>(bb));
          return absl::OkStatus();
        },
        [this, slots = std::move(slots), n, bb, done = std::move(done)](SessionState* sess,
                                                                        absl::Status st) mutable {
          Residency& res = Res(*sess);
          res.host = std::move(slots);
          res.off_kv_tokens = sess->kv.table.n_tokens();
          res.off_chain = std::move(sess->kv.chain);
          sess->kv.ReleaseKv(*pool);
          res.tier = StorageTier::kHost;
          ++stats.spills_to_host;
          stats.bytes_to_host += n * bb;
          done(st);
        });
    return;
  }
  // To disk: the state directory gets the current state, then the memory copy goes.
  if (!disk) {
    done(absl::FailedPreconditionError("the engine has no state directory"));
    return;
  }
  StartWrite(s, /*move=*/true,
             [this, done = std::move(done)](SessionState* sess, absl::Status st) mutable {
               if (st.ok()) {
                 Residency& res = Res(*sess);
                 if (res.tier == StorageTier::kDevice) {
                   res.off_kv_tokens = sess->kv.table.n_tokens();
                   res.off_chain = std::move(sess->kv.chain);
                   sess->kv.ReleaseKv(*pool);
                 } else if (res.tier == StorageTier::kHost) {
                   for (cache::HostBlockId h : res.host) host->Free(h);
                   tenant_host_bytes[sess->tenant] -=
                       static_cast<int64_t>(res.host.size()) * pool->block_bytes();
                   res.host.clear();
                 }
                 res.tier = StorageTier::kDisk;
                 ++stats.spills_to_disk;
               }
               done(std::move(st));
             });
}

// ---------------------------------------------------------------------------------------
// Restores

void Engine::Impl::RequestRestore(SessionState* s) {
  Residency& r = Res(*s);
  if (r.tier == StorageTier::kDevice || r.deleting) return;
  if (r.io_busy) {
    r.want_restore = true;  // after the job in flight (Settle)
    return;
  }
  TryRestore(s);
}

bool Engine::Impl::TryRestore(SessionState* s) {
  Residency& r = Res(*s);
  r.want_restore = false;
  if (r.tier == StorageTier::kDevice || r.io_busy) return true;
  const int64_t bt = opts.block_tokens;
  const int64_t bb = pool->block_bytes();
  const int64_t n = r.off_kv_tokens;
  const int64_t nfull = n / bt;
  const int64_t nblocks = CeilDiv(n, bt);
  cache::BlockTable& t = r.restore_table;
  std::vector<std::pair<int64_t, cache::BlockId>> copy;  // block index -> slot to fill
  bool room = true;
  int64_t shared = 0;
  for (int64_t i = 0; i < nfull && room; ++i) {
    std::optional<cache::BlockId> id;
    if (opts.prefix_cache && i < static_cast<int64_t>(r.off_chain.size())) {
      id = pool->Acquire(r.off_chain[static_cast<size_t>(i)]);
    }
    if (id) {
      ++shared;
    } else {
      id = pool->Allocate();
      if (!id) {
        room = false;
        break;
      }
      copy.emplace_back(i, *id);
    }
    t.AppendShared(*pool, *id);
  }
  if (room && n % bt != 0) {
    room = t.Reserve(*pool, n);
    if (room) copy.emplace_back(nblocks - 1, t.blocks().back());
  }
  if (!room) {
    t.Release(*pool);
    if (FreeDeviceBlocks(nblocks)) {
      r.want_restore = true;  // demotions in flight will make room
      return false;
    }
    // Nothing will free blocks: the turn recomputes the KV (the scheduler waits for blocks
    // or preempts, as for any request).
    DropKv(s);
    Settle(s);
    return false;
  }
  stats.restore_blocks_shared += shared;
  const bool from_host = r.tier == StorageTier::kHost;
  std::vector<std::pair<const uint8_t*, uint8_t*>> copies;
  std::vector<std::pair<cache::DiskBlock, uint8_t*>> reads;
  for (const auto& [i, id] : copy) {
    if (from_host) {
      copies.emplace_back(host->BlockData(r.host[static_cast<size_t>(i)]).data(),
                          pool->BlockData(id));
    } else {
      reads.emplace_back(r.disk[static_cast<size_t>(i)], pool->BlockData(id));
    }
  }
  const int64_t moved = static_cast<int64_t>(copy.size()) * bb;
  RunJob(
      s, /*move=*/true,
      [this, id = s->id, copies = std::move(copies), reads = std::move(reads), bb]() {
        for (const auto& [from, to] : copies) std::memcpy(to, from, static_cast<size_t>(bb));
        for (const auto& [block, to] : reads) {
          absl::Status st = disk->ReadBlock(id, block, std::span(to, static_cast<size_t>(bb)));
          if (!st.ok()) return st;
        }
        return absl::OkStatus();
      },
      [this, from_host, moved, nfull, copy = std::move(copy)](SessionState* sess,
                                                              absl::Status st) mutable {
        Residency& res = Res(*sess);
        if (st.ok()) {
          sess->kv.table = std::move(res.restore_table);
          sess->kv.chain = std::move(res.off_chain);
          if (opts.prefix_cache) {
            for (const auto& [i, id] : copy) {
              if (i < nfull && i < static_cast<int64_t>(sess->kv.chain.size())) {
                pool->Publish(id, sess->kv.chain[static_cast<size_t>(i)]);  // false: a twin won
              }
            }
          }
          if (from_host) {
            ++stats.restores_from_host;
            stats.bytes_from_host += moved;
          } else {
            ++stats.restores_from_disk;
            stats.bytes_from_disk += moved;
          }
          if (from_host) {
            for (cache::HostBlockId h : res.host) host->Free(h);
            tenant_host_bytes[sess->tenant] -=
                static_cast<int64_t>(res.host.size()) * pool->block_bytes();
            res.host.clear();
          }
          res.tier = StorageTier::kDevice;
          res.off_kv_tokens = 0;
          res.off_chain.clear();
        } else {
          // A block that does not read back (checksum, I/O): the KV is recomputed instead,
          // and the next write rewrites every block.
          res.restore_table.Release(*pool);
          ++stats.restore_failures;
          res.last_error = absl::StrCat("restore failed: ", st.message());
          res.disk_valid_full = 0;
          DropKv(sess);
          --stats.drops;
        }
      });
  return true;
}

// ---------------------------------------------------------------------------------------
// Victims

namespace {

cache::TierCostModel CostModel(const kernels::KvLayout& layout, const Model& model,
                               double reload_bytes_per_second) {
  return {.kv_bytes_per_token = cache::KvBytesPerToken(layout),
          .parameters = static_cast<double>(model.n_params()),
          .reload_bytes_per_second = reload_bytes_per_second};
}

}  // namespace

// Chooses victims among the idle sessions of one tier and demotes each one tier down (or
// further, where the next tier has no room; their KV is dropped where no tier has).
// `used_blocks` / `total_blocks`: the tier's usage, in blocks.
bool Engine::Impl::FreeDeviceBlocks(int64_t need) {
  if (!host && !disk) return false;
  const int64_t bb = pool->block_bytes();
  const absl::Time now = Now();
  const cache::TierCostModel cost =
      CostModel(pool->layout(), *model,
                host ? cache::TierCostModel::kDefaultHostBytesPerSecond
                     : cache::TierCostModel::kDefaultDiskBytesPerSecond);
  std::vector<cache::TierCandidate> cands;
  absl::flat_hash_map<SessionId, SessionState*> by_id;
  for (SessionState* s : sessions.All()) {
    const Residency& r = Res(*s);
    if (r.tier != StorageTier::kDevice || s->kv.table.blocks().empty() || r.deleting) continue;
    uint64_t held = 0;
    for (cache::BlockId b : s->kv.table.blocks()) {
      if (pool->refcount(b) == 1) held += static_cast<uint64_t>(bb);
    }
    by_id[s->id] = s;
    cands.push_back({.id = s->id,
                     .bytes_held = held,
                     .idle = now - s->last_used,
                     .tokens = s->kv.table.n_tokens(),
                     .reload_seconds_per_token = cost.ReloadSecondsPerToken(),
                     .recompute_seconds_per_token = cost.RecomputeSecondsPerToken(),
                     .busy = Busy(s->id) || r.io_busy || HasParked(s->id),
                     .pinned = Pinned(r, now),
                     .priority = r.retention.priority});
  }
  const uint64_t total = static_cast<uint64_t>(pool->num_total() * bb);
  const uint64_t used = static_cast<uint64_t>((pool->num_in_use() + need) * bb);
  auto plan = cache::ChooseDemotions(
      opts.tier_cost_aware ? cache::TierPolicy::kCostAware : cache::TierPolicy::kLru,
      {.used_bytes = used,
       .budget_bytes = total,
       .high_watermark = opts.high_watermark,
       .low_watermark = opts.low_watermark},
      cands);
  bool freed = false;
  if (plan.ok()) {
    for (const SessionId& id : plan->victims) {
      SessionState* s = by_id[id];
      const int64_t n = static_cast<int64_t>(s->kv.table.blocks().size());
      if (HostFits(*s, n)) {
        StartSpill(s, StorageTier::kHost, [](absl::Status) {});
      } else if (disk) {
        StartSpill(s, StorageTier::kDisk, [](absl::Status) {});
      } else {
        DropKv(s);
        freed = true;
      }
    }
  }
  // Writes in flight hold references on device blocks too; when they end, blocks may free.
  return freed || io_in_flight > 0;
}

bool Engine::Impl::HostFits(const SessionState& s, int64_t blocks) {
  const int64_t bb = pool->block_bytes();
  return host && host->num_free() >= blocks &&
         (opts.tenant_host_quota_bytes == 0 ||
          static_cast<uint64_t>(tenant_host_bytes[s.tenant] + blocks * bb) <=
              opts.tenant_host_quota_bytes);
}

// The host tier's watermarks: idle host sessions go to disk (or are dropped without one).
void Engine::Impl::DemoteHost(int64_t need_blocks) {
  if (!host) return;
  const int64_t bb = pool->block_bytes();
  const absl::Time now = Now();
  const cache::TierCostModel cost =
      CostModel(pool->layout(), *model, cache::TierCostModel::kDefaultDiskBytesPerSecond);
  std::vector<cache::TierCandidate> cands;
  absl::flat_hash_map<SessionId, SessionState*> by_id;
  for (SessionState* s : sessions.All()) {
    const Residency& r = Res(*s);
    if (r.tier != StorageTier::kHost || r.deleting) continue;
    by_id[s->id] = s;
    cands.push_back({.id = s->id,
                     .bytes_held = static_cast<uint64_t>(r.host.size()) * static_cast<uint64_t>(bb),
                     .idle = now - s->last_used,
                     .tokens = r.off_kv_tokens,
                     .reload_seconds_per_token = cost.ReloadSecondsPerToken(),
                     .recompute_seconds_per_token = cost.RecomputeSecondsPerToken(),
                     .busy = Busy(s->id) || r.io_busy || HasParked(s->id),
                     .pinned = Pinned(r, now),
                     .priority = r.retention.priority});
  }
  auto plan = cache::ChooseDemotions(
      opts.tier_cost_aware ? cache::TierPolicy::kCostAware : cache::TierPolicy::kLru,
      {.used_bytes = static_cast<uint64_t>((host->num_stored() + need_blocks) * bb),
       .budget_bytes = static_cast<uint64_t>(host->num_slots() * bb),
       .high_watermark = opts.high_watermark,
       .low_watermark = opts.low_watermark},
      cands);
  if (!plan.ok()) return;
  for (const SessionId& id : plan->victims) {
    SessionState* s = by_id[id];
    if (disk) {
      StartSpill(s, StorageTier::kDisk, [](absl::Status) {});
    } else {
      DropKv(s);
    }
  }
}

// Periodic tier work (from the loop, at most every 20 ms): lifetimes, idle demotion,
// watermarks, restores waiting for room.
void Engine::Impl::TierTick() {
  const auto t = Clock::now();
  if (t - last_tier_tick < std::chrono::milliseconds(20)) return;
  last_tier_tick = t;
  const absl::Time now = Now();
  for (SessionState* s : sessions.All()) {
    Residency& r = Res(*s);
    if (r.deleting || Busy(s->id) || HasParked(s->id)) continue;
    if (now - s->created >= r.retention.max_lifetime) {
      DeleteSessionNow(s, absl::NotFoundError("session reached its maximum lifetime"));
      continue;
    }
    if (r.io_busy || Pinned(r, now) || now - s->last_used < r.retention.demote_after_idle) {
      continue;
    }
    if (r.tier == StorageTier::kDevice && !s->kv.table.blocks().empty() && (host || disk)) {
      const int64_t n = static_cast<int64_t>(s->kv.table.blocks().size());
      StartSpill(s, HostFits(*s, n) ? StorageTier::kHost : StorageTier::kDisk, [](absl::Status) {});
    } else if (r.tier == StorageTier::kHost && disk) {
      StartSpill(s, StorageTier::kDisk, [](absl::Status) {});
    }
  }
  if (host || disk) {
    FreeDeviceBlocks(0);
    DemoteHost(0);
  }
  for (SessionState* s : sessions.All()) {
    Residency& r = Res(*s);
    if (r.want_restore && !r.io_busy) TryRestore(s);
  }
}

// ---------------------------------------------------------------------------------------
// Parked turns

void Engine::Impl::Park(std::unique_ptr<Seq> seq) {
  SessionState* s = seq->session;
  parked.push_back(std::move(seq));
  stats.parked = static_cast<int64_t>(parked.size());
  RequestRestore(s);
}

bool Engine::Impl::HasParked(const SessionId& id) const {
  return std::any_of(parked.begin(), parked.end(),
                     [&](const std::unique_ptr<Seq>& p) { return p->session->id == id; });
}

void Engine::Impl::Unpark(const SessionId& id) {
  std::vector<std::unique_ptr<Seq>> ready;
  for (auto it = parked.begin(); it != parked.end();) {
    if ((*it)->session->id == id) {
      ready.push_back(std::move(*it));
      it = parked.erase(it);
    } else {
      ++it;
    }
  }
  stats.parked = static_cast<int64_t>(parked.size());
  for (auto& seq : ready) Enqueue(std::move(seq));
}

// ---------------------------------------------------------------------------------------
// Deletion and shutdown

void Engine::Impl::FinishDelete(SessionState* s) {
  Residency& r = Res(*s);
  const int64_t bb = pool->block_bytes();
  s->kv.ReleaseKv(*pool);
  r.io_hold.Release(*pool);
  r.restore_table.Release(*pool);
  if (host) {
    for (cache::HostBlockId h : r.host) host->Free(h);
  }
  tenant_host_bytes[s->tenant] -= static_cast<int64_t>(r.host.size()) * bb;
  const int64_t on_disk = static_cast<int64_t>(r.disk.size()) * bb;
  disk_bytes -= on_disk;
  tenant_disk_bytes[s->tenant] -= on_disk;
  std::vector<absl::AnyInvocable<void(absl::Status)>> waiters = std::move(r.delete_waiters);
  const SessionId id = s->id;
  residency.erase(id);
  sessions.Remove(id);
  stats.sessions = static_cast<int64_t>(sessions.size());
  if (!disk) {
    for (auto& w : waiters) w(absl::OkStatus());
    return;
  }
  // Its files: the manifest first, then segments and directory, with directory fsyncs.
  ++io_in_flight;
  io->Submit([this, id, waiters = std::move(waiters)]() mutable {
    absl::Status st = disk->Remove(id);
    if (absl::IsNotFound(st)) st = absl::OkStatus();  // it was never written
    Post([this, st, waiters = std::move(waiters)]() mutable {
      --io_in_flight;
      for (auto& w : waiters) w(st);
    });
  });
}

// Writes every session down (all durability modes) until the deadline; then stops the I/O
// workers. Runs on the loop after every request was cancelled.
void Engine::Impl::ShutdownTiers() {
  const auto t0 = Clock::now();
  const auto deadline = t0 + absl::ToChronoNanoseconds(shutdown_deadline);
  if (disk) {
    for (SessionState* s : sessions.All()) MaybeWrite(s, /*force=*/true);
    while (io_in_flight > 0 && Clock::now() < deadline) {
      std::deque<absl::AnyInvocable<void()>> todo;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait_until(lock, deadline, [&] { return !commands.empty(); });
        todo.swap(commands);
      }
      for (auto& c : todo) c();
    }
    for (SessionState* s : sessions.All()) {
      const Residency& r = Res(*s);
      if (r.on_disk && r.written >= r.version) {
        ++shutdown_report.written;
      } else if (!r.last_error.empty()) {
        ++shutdown_report.failed;
        shutdown_report.errors.push_back(absl::StrCat(s->id.ToString(), ": ", r.last_error));
      } else {
        ++shutdown_report.timed_out;
      }
    }
  }
  io->Stop();  // waits for the jobs running now; drops the others
  const absl::Status gone = absl::UnavailableError("the engine shut down");
  for (SessionState* s : sessions.All()) {
    Residency& r = Res(*s);
    for (Deferred& d : r.deferred) d.fn(gone);
    r.deferred.clear();
    for (auto& [v, fn] : r.flush_waiters) fn(gone);
    r.flush_waiters.clear();
    if (r.sync) {
      r.sync->result.status = gone;
      r.sync->out->Finish(std::move(r.sync->result));
      r.sync.reset();
    }
    for (auto& w : r.delete_waiters) w(gone);
    r.delete_waiters.clear();
    r.io_hold.Release(*pool);
    r.restore_table.Release(*pool);
    if (host) {
      for (cache::HostBlockId h : r.host) host->Free(h);
      r.host.clear();
    }
  }
  shutdown_report.seconds = Seconds(Clock::now() - t0);
}

}  // namespace mnemo::engine
