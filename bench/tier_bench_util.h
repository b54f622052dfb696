// Helpers of mnemo_tier_bench (bench/tier_bench.cc): timing summaries, page-cache eviction
// with a residency check, the dd-style sequential ceiling, restores into pool slots, and a
// FileOps that times the disk tier's fsyncs. Plain POSIX; not thread-safe (one benchmark thread).
#pragma once

#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache/block_pool.h"
#include "cache/block_table.h"
#include "cache/file_ops.h"
#include "cache/state_store.h"

namespace mnemo::bench {

using Clock = std::chrono::steady_clock;

inline double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Prints "tier_bench: <line>" to stderr.
void Progress(const std::string& line);

// The 1-minute load average, or -1 when unknown.
double LoadAverage();

// Best (smallest) and median of repeated timings, in seconds.
struct Timing {
  double best = 0.0;
  double median = 0.0;
};
Timing Summarize(std::vector<double> seconds);

// What an eviction left in the page cache.
struct Residency {
  bool advice_ok = true;  // every posix_fadvise(POSIX_FADV_DONTNEED) call succeeded
  int64_t pages = 0;      // pages of the files
  int64_t resident = 0;   // of them still cached afterwards (mincore)
  double fraction() const { return pages > 0 ? static_cast<double>(resident) / pages : 0.0; }
};

// Asks the kernel to drop the (clean: fsynced) pages of file `path`, or of every file under
// directory `path`, from the page cache, then counts the pages that stayed (adds to `*r`).
// Needs no privilege, unlike /proc/sys/vm/drop_caches, and touches no other file.
void EvictFromPageCache(const std::string& path, Residency* r);

// The dd-style ceiling: writes `bytes` (a multiple of chunk.size()) to a fresh file `path` in
// chunk-sized pwrites, then fsyncs; seconds from open to close.
absl::StatusOr<double> DdWrite(const std::string& path, int64_t bytes,
                               std::span<const uint8_t> chunk);
// Reads the whole file `path` (which must have `bytes` bytes) in chunk-sized reads; seconds.
absl::StatusOr<double> DdRead(const std::string& path, int64_t bytes, std::span<uint8_t> chunk);

// Reads every regular file under directory `dir` whole, in chunk-sized reads, in name
// order; seconds. `*bytes`: the bytes read.
absl::StatusOr<double> ReadTree(const std::string& dir, std::span<uint8_t> chunk, int64_t* bytes);

// Whether the slots of tables `a` and `b` (same length) hold the same bytes, in order.
bool SameBytes(const cache::BlockPool& pool, const cache::BlockTable& a,
               const cache::BlockTable& b);

// Reads `blocks` of session `id` into the slots `dst` (same count): one ReadBlocks per run of
// consecutive slots, straight into the arena (no staging copy).
absl::Status ReadIntoSlots(const cache::StateDir& dir, const cache::SessionId& id,
                           std::span<const cache::DiskBlock> blocks, const cache::BlockPool& pool,
                           std::span<const cache::BlockId> dst);

// PosixFileOps, timing fsync calls: those of segment files (`seg-*`, the data) apart from
// the others (directories, manifests: the write protocol's metadata commit points).
class FsyncTimingFileOps : public cache::FileOps {
 public:
  struct Fsyncs {
    int64_t data_calls = 0, meta_calls = 0;
    double data_s = 0.0, meta_s = 0.0;
  };
  Fsyncs fsyncs;  // the caller resets it

  int Open(const std::string& path, int flags, mode_t mode) override;
  int Close(int fd) override;
  int64_t Pwrite(int fd, const void* data, size_t n, int64_t offset) override {
    return base_.Pwrite(fd, data, n, offset);
  }
  int64_t Pread(int fd, void* data, size_t n, int64_t offset) override {
    return base_.Pread(fd, data, n, offset);
  }
  int Fsync(int fd) override;
  int Fstat(int fd, struct stat* st) override { return base_.Fstat(fd, st); }
  int Stat(const std::string& path, struct stat* st) override { return base_.Stat(path, st); }
  int Rename(const std::string& from, const std::string& to) override {
    return base_.Rename(from, to);
  }
  int Unlink(const std::string& path) override { return base_.Unlink(path); }
  int Mkdir(const std::string& path, mode_t mode) override { return base_.Mkdir(path, mode); }
  int Rmdir(const std::string& path) override { return base_.Rmdir(path); }
  int ListDir(const std::string& path, std::vector<std::string>* names) override {
    return base_.ListDir(path, names);
  }

 private:
  cache::FileOps& base_ = cache::PosixFileOps();
  absl::flat_hash_set<int> segment_fds_;  // open segment files
};

}  // namespace mnemo::bench
