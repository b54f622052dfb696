// The Engine's tier movements (docs/sessions.md, "Tiers"; engine/internal/tiers.h): spills
// down, restores up, the choice of victims, the periodic tier work, parked turns, deletion
// from every tier and the write-down at shutdown. Startup, jobs and writes are in tiers.cc.
#include <cstring>

#include "engine/engine.h"
#include "engine/internal/engine_impl.h"

namespace mnemo::engine {

namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

// ---------------------------------------------------------------------------------------
// Spills

void Engine::Impl::DropKv(SessionState* s) {
  Account(*s);
  Residency& r = Res(*s);
  s->kv.ReleaseKv(*pool);
  if (r.tier == StorageTier::kHost) {
    for (cache::HostBlockId h : r.host) host->Free(h);
    tenant_host_bytes[s->tenant] -= static_cast<int64_t>(r.host.size()) * HostBlockBytes();
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
  const int64_t bb = HostBlockBytes();
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
    struct Copy {
      const uint8_t* src;
      uint8_t* dst;
      int64_t rows;  // tokens of the block in use
    };
    std::vector<cache::HostBlockId> slots;
    std::vector<Copy> copies;
    const int64_t bt = opts.block_tokens;
    const int64_t n_kv = s->kv.table.n_tokens();
    for (size_t i = 0; i < s->kv.table.blocks().size(); ++i) {
      slots.push_back(*host->Allocate());
      copies.push_back({pool->BlockData(s->kv.table.blocks()[i]),
                        host->MutableBlockData(slots.back()).data(),
                        std::min<int64_t>(bt, n_kv - static_cast<int64_t>(i) * bt)});
    }
    tenant_host_bytes[s->tenant] += n * bb;
    RunJob(
        s, /*move=*/true,
        [this, copies = std::move(copies)]() {
          for (const Copy& c : copies) EncodeCold(c.src, c.rows, c.dst);
          return absl::OkStatus();
        },
        [this, slots = std::move(slots), n, bb, done = std::move(done)](SessionState* sess,
                                                                        absl::Status st) mutable {
          Residency& res = Res(*sess);
          if (!st.ok()) {  // not copied (the engine shut down): the KV stays where it is
            for (cache::HostBlockId h : slots) host->Free(h);
            tenant_host_bytes[sess->tenant] -= n * bb;
            return done(st);
          }
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
                       static_cast<int64_t>(res.host.size()) * HostBlockBytes();
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
  const int64_t moved =
      static_cast<int64_t>(copy.size()) * (from_host ? cold_bytes : pool->block_bytes());
  RunJob(
      s, /*move=*/true,
      [this, id = s->id, copies = std::move(copies), reads = std::move(reads),
       encoding = from_host ? std::string(ColdEncoding()) : r.disk_encoding]() {
        for (const auto& [from, to] : copies) DecodeCold(encoding, from, to);
        std::vector<uint8_t> buf;
        for (const auto& [block, to] : reads) {
          if (encoding == cache::kKvEncodingRaw && DeviceMemory() == nullptr) {
            absl::Status st = disk->ReadBlock(id, block, std::span(to, block.length));
            if (!st.ok()) return st;
            continue;
          }
          buf.resize(block.length);
          if (absl::Status st = disk->ReadBlock(id, block, buf); !st.ok()) return st;
          DecodeCold(encoding, buf.data(), to);
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
                static_cast<int64_t>(res.host.size()) * HostBlockBytes();
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
  if (static_cast<double>(pool->num_in_use() + need) <=
      opts.high_watermark * static_cast<double>(pool->num_total())) {
    return io_in_flight > 0;  // under the watermark: no candidates to gather (the tick's path)
  }
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
  const int64_t bb = HostBlockBytes();
  return host && host->num_free() >= blocks &&
         (opts.tenant_host_quota_bytes == 0 ||
          static_cast<uint64_t>(tenant_host_bytes[s.tenant] + blocks * bb) <=
              opts.tenant_host_quota_bytes);
}

// The host tier's watermarks: idle host sessions go to disk (or are dropped without one).
void Engine::Impl::DemoteHost(int64_t need_blocks) {
  if (!host) return;
  if (static_cast<double>(host->num_stored() + need_blocks) <=
      opts.high_watermark * static_cast<double>(host->num_slots())) {
    return;  // under the watermark
  }
  const int64_t bb = HostBlockBytes();
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
  s->kv.ReleaseKv(*pool);
  r.io_hold.Release(*pool);
  r.restore_table.Release(*pool);
  if (host) {
    for (cache::HostBlockId h : r.host) host->Free(h);
  }
  tenant_host_bytes[s->tenant] -= static_cast<int64_t>(r.host.size()) * HostBlockBytes();
  const int64_t on_disk = DiskBytes(r);
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
  io->Stop();         // waits for the jobs running now; drops the others
  io_stopped = true;  // completions still queued must not start new jobs (RunJob)
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
