// The file-system seam of the disk tier (cache/state_store.h): every file operation the state
// directory performs goes through a FileOps, so tests can inject faults (a full disk, an I/O
// error on the n-th call) without touching the real code paths.
//
// The calls mirror POSIX and return like the kernel's system-call ABI: a non-negative result
// on success, -errno on failure (never -1 with errno set). A short Pwrite/Pread is a success
// that moved fewer bytes; the caller loops. PosixFileOps retries EINTR itself.
//
// FaultInjectingFileOps is for fault-injection tests only; every other test uses the real
// file system (PosixFileOps) in a temporary directory.
//
// Thread-safety: PosixFileOps is stateless and thread-safe. FaultInjectingFileOps guards its
// counters with a mutex, so it may be shared by threads.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace mnemo::cache {

class FileOps {
 public:
  virtual ~FileOps() = default;

  // open(2): a file descriptor, or -errno.
  virtual int Open(const std::string& path, int flags, mode_t mode) = 0;
  // close(2): 0 or -errno.
  virtual int Close(int fd) = 0;
  // pwrite(2)/pread(2): bytes moved (possibly fewer than n; 0 from Pread at end of file), or
  // -errno.
  virtual int64_t Pwrite(int fd, const void* data, size_t n, int64_t offset) = 0;
  virtual int64_t Pread(int fd, void* data, size_t n, int64_t offset) = 0;
  // fsync(2) of a file or of a directory opened with O_DIRECTORY: 0 or -errno.
  virtual int Fsync(int fd) = 0;
  // fstat(2)/stat(2) (the latter follows links): 0 or -errno.
  virtual int Fstat(int fd, struct stat* st) = 0;
  virtual int Stat(const std::string& path, struct stat* st) = 0;
  // rename(2), unlink(2), mkdir(2), rmdir(2): 0 or -errno.
  virtual int Rename(const std::string& from, const std::string& to) = 0;
  virtual int Unlink(const std::string& path) = 0;
  virtual int Mkdir(const std::string& path, mode_t mode) = 0;
  virtual int Rmdir(const std::string& path) = 0;
  // The entry names of a directory, without "." and "..", in no particular order: 0 or -errno.
  virtual int ListDir(const std::string& path, std::vector<std::string>* names) = 0;
};

// The real file system. One process-wide instance, never destroyed.
FileOps& PosixFileOps();

// Which call a fault is injected into.
enum class FileOp {
  kOpen,
  kClose,
  kPwrite,
  kPread,
  kFsync,
  kFstat,
  kStat,
  kRename,
  kUnlink,
  kMkdir,
  kRmdir,
  kListDir,
};
inline constexpr int kNumFileOps = 12;

struct FaultOptions {
  // Pwrite accepts this many bytes in total (from the first call on, over every file), then
  // fails with `write_errno`; the write that crosses the limit is short (it writes what is
  // left). -1: no limit.
  int64_t fail_after_bytes = -1;
  int write_errno = ENOSPC;
  // The `fail_call_index`-th call (0-based, counted per op) of `fail_op` fails with
  // `call_errno` (and every later one too when `sticky`). -1: none.
  FileOp fail_op = FileOp::kFsync;
  int64_t fail_call_index = -1;
  int call_errno = EIO;
  bool sticky = false;
};

// Forwards to `base` (PosixFileOps by default), failing as `options` says. Reconfigure with
// SetOptions (the counters keep counting; bytes_written() is what Pwrite accepted).
class FaultInjectingFileOps : public FileOps {
 public:
  explicit FaultInjectingFileOps(const FaultOptions& options = {}, FileOps* base = nullptr);

  void SetOptions(const FaultOptions& options);
  // Resets the byte and call counters to 0.
  void ResetCounters();
  int64_t bytes_written() const;
  int64_t calls(FileOp op) const;
  // How many faults were injected so far.
  int64_t faults() const;

  int Open(const std::string& path, int flags, mode_t mode) override;
  int Close(int fd) override;
  int64_t Pwrite(int fd, const void* data, size_t n, int64_t offset) override;
  int64_t Pread(int fd, void* data, size_t n, int64_t offset) override;
  int Fsync(int fd) override;
  int Fstat(int fd, struct stat* st) override;
  int Stat(const std::string& path, struct stat* st) override;
  int Rename(const std::string& from, const std::string& to) override;
  int Unlink(const std::string& path) override;
  int Mkdir(const std::string& path, mode_t mode) override;
  int Rmdir(const std::string& path) override;
  int ListDir(const std::string& path, std::vector<std::string>* names) override;

 private:
  // Counts a call of `op`; -errno when it is to fail, else 0.
  int Enter(FileOp op);

  FileOps* const base_;
  mutable std::mutex mu_;
  FaultOptions options_ ABSL_GUARDED_BY(mu_);
  int64_t bytes_written_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t calls_[kNumFileOps] ABSL_GUARDED_BY(mu_) = {};
  int64_t faults_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace mnemo::cache
