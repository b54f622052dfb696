// Internals of the Engine's tiers (docs/sessions.md, "Tiers"): each session's residency
// record and the I/O workers that move blocks and write files off the engine loop.
// Nothing outside engine/*.cc includes this.
//
// A session's KV is in exactly one memory place at a time: the device tier (its KvSequence's
// table; possibly empty), the host tier (host slots), or only in the state directory. Its
// durable copy (the manifest and segments of the state directory) is separate: any session
// may have one, whatever its tier, and it may lag the session by the turns not yet written.
//
// Every I/O job on a session is serialized (io_busy). A "move" (spill, restore, demotion to
// disk) also holds the session still: calls that touch its KV wait for it (deferred), and a
// turn that arrives meanwhile is parked until its KV is back on the device tier. A
// write-behind is not a move: it copies the partly used last block and holds a reference on
// every full block it reads (io_hold), so turns run while it writes.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cache/block_hash.h"
#include "cache/block_table.h"
#include "cache/host_tier.h"
#include "cache/state_manifest.h"
#include "engine/engine.h"

namespace mnemo::engine {

struct Seq;

// A call waiting for its session to be settled (no move in flight) and, if `resident`, on
// the device tier. Runs on the loop with OK, or with the error that ended the wait (the
// session deleted, the engine shutting down).
struct Deferred {
  int need = 0;  // an Engine::Impl::Need
  absl::AnyInvocable<void(absl::Status)> fn;
};

// A finished sync-durability turn whose result waits for its write.
struct SyncWait {
  uint64_t version = 0;  // the session version that must be written
  std::shared_ptr<ResponseStream::State> out;
  TurnResult result;
  // Rollback point if the write fails.
  int64_t rollback_tokens = 0;
  size_t rollback_turns = 0;
  size_t rollback_messages = 0;
  std::array<uint64_t, 4> rollback_rng{};
};

struct Residency {
  StorageTier tier = StorageTier::kDevice;
  // Off the device tier: the KV tokens the copy holds and the chain hashes of its full
  // blocks (the KvSequence's table and chain are empty meanwhile).
  int64_t off_kv_tokens = 0;
  std::vector<cache::BlockHash> off_chain;
  std::vector<cache::HostBlockId> host;  // tier kHost: one slot per block, in token order

  // The durable copy: the blocks of the last manifest written (or found at startup).
  bool on_disk = false;
  std::vector<cache::DiskBlock> disk;
  std::string disk_encoding;  // of `disk` (cache::kKvEncodingRaw or kKvEncodingInt8)
  int64_t disk_kv_tokens = 0;
  int64_t disk_valid_full = 0;  // leading full disk blocks that still match the session's KV
  // Full blocks kept by history truncations since the running write took its snapshot.
  int64_t trunc_floor = std::numeric_limits<int64_t>::max();
  uint64_t version = 1;  // bumped by every change to what a manifest holds
  uint64_t written = 0;  // the version the durable copy holds
  std::chrono::steady_clock::time_point dirty_since;  // first change not yet written
  std::string last_error;

  Durability durability = Durability::kAsync;
  Retention retention;
  std::optional<cache::CompactionOptions> compaction;  // nullopt: the engine's default
  absl::Time pinned_until = absl::InfinitePast();

  bool io_busy = false;       // an I/O job on this session is in flight
  bool moving = false;        // ... and it is a move
  bool want_restore = false;  // waits for device blocks to restore into
  bool deleting = false;
  cache::BlockTable io_hold;        // full blocks a write in flight reads
  cache::BlockTable restore_table;  // the device blocks a restore in flight fills
  std::vector<Deferred> deferred;
  // Flush() callers: each waits until `written` reaches its version.
  std::vector<std::pair<uint64_t, absl::AnyInvocable<void(absl::Status)>>> flush_waiters;
  std::optional<SyncWait> sync;
  // Bytes x seconds held per tier (SessionInfo), accumulated up to `accounted_at`.
  std::chrono::steady_clock::time_point accounted_at = std::chrono::steady_clock::now();
  double byte_seconds[3] = {0.0, 0.0, 0.0};  // device, host, disk
  uint64_t failed_version = 0;  // a write of this version failed: not retried by itself
  std::vector<absl::AnyInvocable<void(absl::Status)>> delete_waiters;
};

// A fixed set of threads running jobs in submission order (FIFO, any free thread).
class IoWorkers {
 public:
  explicit IoWorkers(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
  }
  ~IoWorkers() { Stop(); }
  IoWorkers(const IoWorkers&) = delete;
  IoWorkers& operator=(const IoWorkers&) = delete;

  void Submit(absl::AnyInvocable<void()> job) {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job));
    cv_.notify_one();
  }
  // Drops the jobs not started and joins the threads (waiting for the running ones).
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      jobs_.clear();
      cv_.notify_all();
    }
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  void Run() {
    for (;;) {
      absl::AnyInvocable<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<absl::AnyInvocable<void()>> jobs_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace mnemo::engine
