// Helpers of mnemo_tier_bench (bench/tier_bench_util.h).
#include "bench/tier_bench_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace mnemo::bench {
namespace {

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::UnavailableError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

void EvictFile(const std::string& path, Residency* r) {
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    r->advice_ok = false;
    return;
  }
  if (posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0) r->advice_ok = false;
  struct stat st;
  if (fstat(fd, &st) == 0 && st.st_size > 0) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t size = static_cast<size_t>(st.st_size);
    void* map = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (map != MAP_FAILED) {
      std::vector<unsigned char> vec((size + page - 1) / page);
      if (mincore(map, size, vec.data()) == 0) {
        r->pages += static_cast<int64_t>(vec.size());
        for (unsigned char v : vec) r->resident += v & 1;
      }
      munmap(map, size);
    }
  }
  close(fd);
}

}  // namespace

void Progress(const std::string& line) {
  std::fprintf(stderr, "tier_bench: %s\n", line.c_str());
  std::fflush(stderr);
}

double LoadAverage() {
  double load = 0.0;
  return getloadavg(&load, 1) == 1 ? load : -1.0;
}

Timing Summarize(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return {v[0], n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2])};
}

void EvictFromPageCache(const std::string& path, Residency* r) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(path)) {
    EvictFile(path, r);
    return;
  }
  for (const auto& e : fs::recursive_directory_iterator(path)) {
    if (e.is_regular_file()) EvictFile(e.path().string(), r);
  }
}

absl::StatusOr<double> DdWrite(const std::string& path, int64_t bytes,
                               std::span<const uint8_t> chunk) {
  unlink(path.c_str());
  const Clock::time_point t0 = Clock::now();
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return Errno("open", path);
  for (int64_t off = 0; off < bytes; off += static_cast<int64_t>(chunk.size())) {
    if (pwrite(fd, chunk.data(), chunk.size(), off) != static_cast<ssize_t>(chunk.size())) {
      close(fd);
      return Errno("pwrite", path);
    }
  }
  if (fsync(fd) != 0) {
    close(fd);
    return Errno("fsync", path);
  }
  if (close(fd) != 0) return Errno("close", path);
  return Since(t0);
}

absl::StatusOr<double> DdRead(const std::string& path, int64_t bytes, std::span<uint8_t> chunk) {
  const Clock::time_point t0 = Clock::now();
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return Errno("open", path);
  int64_t got = 0;
  for (ssize_t n; (n = read(fd, chunk.data(), chunk.size())) > 0;) got += n;
  close(fd);
  if (got != bytes) return absl::DataLossError(absl::StrCat(path, ": read ", got, " bytes"));
  return Since(t0);
}

absl::StatusOr<double> ReadTree(const std::string& dir, std::span<uint8_t> chunk, int64_t* bytes) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  *bytes = 0;
  const Clock::time_point t0 = Clock::now();
  for (const std::string& path : files) {
    const int fd = open(path.c_str(), O_RDONLY);
    if (fd < 0) return Errno("open", path);
    ssize_t n;
    while ((n = read(fd, chunk.data(), chunk.size())) > 0) *bytes += n;
    close(fd);
    if (n < 0) return Errno("read", path);
  }
  return Since(t0);
}

bool SameBytes(const cache::BlockPool& pool, const cache::BlockTable& a,
               const cache::BlockTable& b) {
  return std::equal(a.blocks().begin(), a.blocks().end(), b.blocks().begin(), [&](auto x, auto y) {
    return std::memcmp(pool.BlockData(x), pool.BlockData(y), pool.block_bytes()) == 0;
  });
}

absl::Status ReadIntoSlots(const cache::StateDir& dir, const cache::SessionId& id,
                           std::span<const cache::DiskBlock> blocks, const cache::BlockPool& pool,
                           std::span<const cache::BlockId> dst) {
  const size_t bb = static_cast<size_t>(pool.block_bytes());
  for (size_t i = 0; i < blocks.size();) {
    size_t n = 1;
    while (i + n < blocks.size() && dst[i + n].value == dst[i].value + static_cast<int32_t>(n)) ++n;
    absl::Status s = dir.ReadBlocks(id, blocks.subspan(i, n), {pool.BlockData(dst[i]), n * bb});
    if (!s.ok()) return s;
    i += n;
  }
  return absl::OkStatus();
}

int FsyncTimingFileOps::Open(const std::string& path, int flags, mode_t mode) {
  const int fd = base_.Open(path, flags, mode);
  const size_t slash = path.rfind('/');
  if (fd >= 0 && path.compare(slash == std::string::npos ? 0 : slash + 1, 4, "seg-") == 0) {
    segment_fds_.insert(fd);
  }
  return fd;
}

int FsyncTimingFileOps::Close(int fd) {
  segment_fds_.erase(fd);
  return base_.Close(fd);
}

int FsyncTimingFileOps::Fsync(int fd) {
  const Clock::time_point t0 = Clock::now();
  const int r = base_.Fsync(fd);
  const double s = Since(t0);
  if (segment_fds_.contains(fd)) {
    ++fsyncs.data_calls;
    fsyncs.data_s += s;
  } else {
    ++fsyncs.meta_calls;
    fsyncs.meta_s += s;
  }
  return r;
}

}  // namespace mnemo::bench
