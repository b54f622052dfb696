// The Engine's tiers (docs/sessions.md, "Tiers"; engine/internal/tiers.h), part one:
// recovery at startup, I/O jobs and how a session settles after one, and durable writes
// (write-behind, sync, flush, demotion to disk). Spills, restores, victims, deletion and
// shutdown are in tiers_move.cc. Runs on the engine loop; the bytes move on I/O workers.
#include <cstring>

#include "engine/engine.h"
#include "engine/internal/engine_impl.h"
#include "kernels/kv_compress.h"

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
  cold_bytes = static_cast<int64_t>(cache::EncodedBlockBytes(pool->layout(), ColdEncoding()));
  if (opts.host_budget_bytes > 0) {
    auto h = cache::HostTier::Create({.block_bytes = cold_bytes,
                                      .budget_bytes = opts.host_budget_bytes,
                                      .allocator = forward->host_allocator()});
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
      refused[r.id] = {r.tenant, why};
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
  s->compaction_log = std::move(rec.compaction_log);
  s->created = absl::FromUnixMicros(rec.created_unix_us);
  s->last_used = absl::FromUnixMicros(rec.last_used_unix_us);
  s->ttl = rec.ttl_us < 0 ? absl::InfiniteDuration() : absl::Microseconds(rec.ttl_us);
  Residency& r = residency[rec.id];
  r = Residency{};
  r.durability = opts.durability;
  r.compaction = rec.compaction;
  r.on_disk = true;
  r.disk = std::move(rec.blocks);
  r.disk_encoding = std::move(rec.kv_encoding);
  r.disk_kv_tokens = rec.kv_tokens;
  r.version = r.written = 1;
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
  const int64_t bytes = DiskBytes(r);
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
  r.compaction_log = s.compaction_log;
  if (const auto it = residency.find(s.id); it != residency.end()) {
    r.compaction = it->second.compaction;
  }
  r.created_unix_us = UnixUs(s.created);
  r.last_used_unix_us = UnixUs(s.last_used);
  r.ttl_us = s.ttl == absl::InfiniteDuration() ? -1 : absl::ToInt64Microseconds(s.ttl);
  return r;
}

// ---------------------------------------------------------------------------------------
// Jobs, waiting and settling

void Engine::Impl::RunJob(SessionState* s, bool move, absl::AnyInvocable<absl::Status()> job,
                          absl::AnyInvocable<void(SessionState*, absl::Status)> done) {
  if (io_stopped) {  // shut down: a completion run at exit must not leave work behind
    done(s, absl::UnavailableError("the engine shut down"));
    return;
  }
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
      Account(*s);  // before the job's outcome changes what each tier holds
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
  // Blocks already on disk in another encoding (compress_cold changed) are rewritten.
  const std::string encoding(kv_on_disk ? r.disk_encoding : ColdEncoding());
  const int64_t keep = kv_on_disk                    ? nblocks
                       : r.disk_encoding != encoding ? 0
                                                     : std::min(r.disk_valid_full, nfull);
  if (r.on_disk && r.written == r.version && r.disk_kv_tokens == n_kv && keep == nblocks) {
    AfterWrite(s, absl::OkStatus());  // nothing new to write
    then(s, absl::OkStatus());
    return;
  }
  // Budgets: the state directory's and the tenant's.
  const int64_t old_bytes = DiskBytes(r);
  const int64_t new_bytes = kv_on_disk ? old_bytes : nblocks * cold_bytes;
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
    int64_t partial_rows = 0;
    bool encode = false;  // raw device blocks to put in the cold encoding
    bool staged = false;  // device blocks in device memory, to copy to the host first
    std::vector<std::vector<uint8_t>> encoded;
    std::vector<cache::DiskBlock> blocks;  // the result
  };
  auto job = std::make_shared<Job>();
  job->record = MakeRecord(*s);
  job->record.kv_tokens = n_kv;
  job->record.kv_encoding = encoding;
  job->encode = r.tier == StorageTier::kDevice && opts.compress_cold;
  job->staged = r.tier == StorageTier::kDevice && DeviceMemory() != nullptr;
  job->partial_rows = n_kv - nfull * bt;
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
      } else if (job->staged) {
        job->partial.resize(bytes.size());
        CopyBlockOut(bytes.data(), job->partial.data());
      } else {
        job->partial.assign(bytes.begin(), bytes.end());
      }
    }
  }
  const uint64_t version = r.version;
  const Clock::time_point dirty_since = r.dirty_since;
  const Clock::time_point started = Clock::now();
  r.trunc_floor = std::numeric_limits<int64_t>::max();
  const int64_t written_blocks =
      static_cast<int64_t>(job->full.size()) + (job->partial.empty() ? 0 : 1);
  RunJob(
      s, move,
      [this, id = s->id, job]() -> absl::Status {
        if (job->encode || job->staged) {          // device blocks, off the loop: into the cold
          job->encoded.reserve(job->full.size());  // encoding or host memory (the spans point
          for (std::span<const uint8_t>& b : job->full) {  // into it)
            if (job->encode) {
              job->encoded.emplace_back(static_cast<size_t>(cold_bytes));
              EncodeCold(b.data(), pool->layout().block_tokens, job->encoded.back().data());
            } else {
              job->encoded.emplace_back(b.size());
              CopyBlockOut(b.data(), job->encoded.back().data());
            }
            b = job->encoded.back();
          }
          if (!job->partial.empty()) {
            std::vector<uint8_t> out(static_cast<size_t>(cold_bytes));
            EncodeCold(job->partial.data(), job->partial_rows, out.data());
            job->partial = std::move(out);
          }
        }
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
      [this, job, version, dirty_since, started, n_kv, nfull, new_bytes, old_bytes, written_blocks,
       then = std::move(then)](SessionState* sess, absl::Status st) mutable {
        Residency& res = Res(*sess);
        res.io_hold.Release(*pool);
        if (st.ok()) {
          disk_bytes += new_bytes - old_bytes;
          tenant_disk_bytes[sess->tenant] += new_bytes - old_bytes;
          res.disk = std::move(job->blocks);
          res.disk_encoding = job->record.kv_encoding;
          res.on_disk = true;
          res.disk_kv_tokens = n_kv;
          res.disk_valid_full = std::min(nfull, res.trunc_floor);
          if (version > res.written) {
            stats.write_lag_max_seconds =
                std::max(stats.write_lag_max_seconds, Seconds(Clock::now() - dirty_since));
            res.written = version;
            // Changes made while this write ran are no older than its start (an upper bound).
            if (res.version > version) res.dirty_since = started;
          }
          res.last_error.clear();
          ++stats.writes;
          stats.bytes_to_disk += written_blocks * cold_bytes;
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

}  // namespace mnemo::engine

namespace mnemo::engine {

cache::ArenaMemory* Engine::Impl::DeviceMemory() const {
  return pool->memory().host_accessible() ? nullptr : &pool->memory();
}

void Engine::Impl::CopyBlockOut(const uint8_t* raw, uint8_t* out) const {
  pool->memory().Copy(out, raw, static_cast<size_t>(pool->block_bytes()));
}

void Engine::Impl::EncodeCold(const uint8_t* raw, int64_t rows, uint8_t* out) const {
  const kernels::KvLayout& l = pool->layout();
  if (!opts.compress_cold) {
    CopyBlockOut(raw, out);
    return;
  }
  // A host copy when the block is in device memory, or when its stale rows must be zeroed.
  std::vector<uint8_t> tmp;
  if (DeviceMemory() != nullptr || rows < l.block_tokens) {
    tmp.resize(static_cast<size_t>(l.block_bytes()));
    CopyBlockOut(raw, tmp.data());
    raw = tmp.data();
  }
  if (rows < l.block_tokens) {
    // The rows past the last token hold stale values: zero them so they do not set the scales.
    const int64_t row_bytes = int64_t{l.head_dim} * l.elem_bytes();
    for (int64_t t = 0; t < kernels::KvCompressedTiles(l); ++t) {
      uint8_t* tile = tmp.data() + t * l.tile_elems() * l.elem_bytes();
      std::memset(tile + rows * row_bytes, 0,
                  static_cast<size_t>((l.block_tokens - rows) * row_bytes));
    }
  }
  kernels::CompressKvBlock(l, raw, out);
}

void Engine::Impl::DecodeCold(std::string_view encoding, const uint8_t* in, uint8_t* raw) const {
  const kernels::KvLayout& l = pool->layout();
  if (encoding != cache::kKvEncodingInt8) {
    pool->memory().Copy(raw, in, static_cast<size_t>(l.block_bytes()));
    return;
  }
  if (DeviceMemory() == nullptr) {
    kernels::DecompressKvBlock(l, in, raw);
    return;
  }
  std::vector<uint8_t> tmp(static_cast<size_t>(l.block_bytes()));
  kernels::DecompressKvBlock(l, in, tmp.data());
  pool->memory().Copy(raw, tmp.data(), tmp.size());
}

}  // namespace mnemo::engine
