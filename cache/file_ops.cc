#include "cache/file_ops.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace mnemo::cache {
namespace {

// The result of a system call that returns -1 and sets errno, as 0/value or -errno, retrying
// EINTR.
template <typename Call>
auto Retry(Call call) -> decltype(call()) {
  for (;;) {
    const auto r = call();
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}

class Posix final : public FileOps {
 public:
  int Open(const std::string& path, int flags, mode_t mode) override {
    return Retry([&] { return ::open(path.c_str(), flags | O_CLOEXEC, mode); });
  }
  int Close(int fd) override {
    // close(2) must not be retried on EINTR (the descriptor is gone either way).
    return ::close(fd) == 0 ? 0 : (errno == EINTR ? 0 : -errno);
  }
  int64_t Pwrite(int fd, const void* data, size_t n, int64_t offset) override {
    return Retry([&] { return static_cast<int64_t>(::pwrite(fd, data, n, offset)); });
  }
  int64_t Pread(int fd, void* data, size_t n, int64_t offset) override {
    return Retry([&] { return static_cast<int64_t>(::pread(fd, data, n, offset)); });
  }
  int Fsync(int fd) override {
    return Retry([&] { return ::fsync(fd); });
  }
  int Fstat(int fd, struct stat* st) override {
    return Retry([&] { return ::fstat(fd, st); });
  }
  int Stat(const std::string& path, struct stat* st) override {
    return Retry([&] { return ::stat(path.c_str(), st); });
  }
  int Rename(const std::string& from, const std::string& to) override {
    return Retry([&] { return ::rename(from.c_str(), to.c_str()); });
  }
  int Unlink(const std::string& path) override {
    return Retry([&] { return ::unlink(path.c_str()); });
  }
  int Mkdir(const std::string& path, mode_t mode) override {
    return Retry([&] { return ::mkdir(path.c_str(), mode); });
  }
  int Rmdir(const std::string& path) override {
    return Retry([&] { return ::rmdir(path.c_str()); });
  }
  int ListDir(const std::string& path, std::vector<std::string>* names) override {
    names->clear();
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) return -errno;
    for (;;) {
      errno = 0;
      const dirent* e = ::readdir(dir);
      if (e == nullptr) break;
      const std::string name = e->d_name;
      if (name != "." && name != "..") names->push_back(name);
    }
    const int err = errno;
    ::closedir(dir);
    return -err;
  }
};

}  // namespace

FileOps& PosixFileOps() {
  static Posix* const posix = new Posix();
  return *posix;
}

FaultInjectingFileOps::FaultInjectingFileOps(const FaultOptions& options, FileOps* base)
    : base_(base != nullptr ? base : &PosixFileOps()), options_(options) {}

void FaultInjectingFileOps::SetOptions(const FaultOptions& options) {
  std::lock_guard<std::mutex> lock(mu_);
  options_ = options;
}

void FaultInjectingFileOps::ResetCounters() {
  std::lock_guard<std::mutex> lock(mu_);
  bytes_written_ = 0;
  for (int64_t& c : calls_) c = 0;
}

int64_t FaultInjectingFileOps::bytes_written() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_written_;
}

int64_t FaultInjectingFileOps::calls(FileOp op) const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_[static_cast<int>(op)];
}

int64_t FaultInjectingFileOps::faults() const {
  std::lock_guard<std::mutex> lock(mu_);
  return faults_;
}

int FaultInjectingFileOps::Enter(FileOp op) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t index = calls_[static_cast<int>(op)]++;
  if (op != options_.fail_op || options_.fail_call_index < 0) return 0;
  if (index == options_.fail_call_index || (options_.sticky && index > options_.fail_call_index)) {
    ++faults_;
    return -options_.call_errno;
  }
  return 0;
}

int FaultInjectingFileOps::Open(const std::string& path, int flags, mode_t mode) {
  if (const int e = Enter(FileOp::kOpen)) return e;
  return base_->Open(path, flags, mode);
}

int FaultInjectingFileOps::Close(int fd) {
  if (const int e = Enter(FileOp::kClose)) {
    base_->Close(fd);  // the descriptor is gone either way, as with a real failing close
    return e;
  }
  return base_->Close(fd);
}

int64_t FaultInjectingFileOps::Pwrite(int fd, const void* data, size_t n, int64_t offset) {
  if (const int e = Enter(FileOp::kPwrite)) return e;
  size_t allowed = n;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (options_.fail_after_bytes >= 0) {
      const int64_t left = options_.fail_after_bytes - bytes_written_;
      if (left <= 0) {
        ++faults_;
        return -options_.write_errno;
      }
      if (static_cast<int64_t>(n) > left) allowed = static_cast<size_t>(left);
    }
  }
  const int64_t r = base_->Pwrite(fd, data, allowed, offset);
  if (r > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    bytes_written_ += r;
  }
  return r;
}

int64_t FaultInjectingFileOps::Pread(int fd, void* data, size_t n, int64_t offset) {
  if (const int e = Enter(FileOp::kPread)) return e;
  return base_->Pread(fd, data, n, offset);
}

int FaultInjectingFileOps::Fsync(int fd) {
  if (const int e = Enter(FileOp::kFsync)) return e;
  return base_->Fsync(fd);
}

int FaultInjectingFileOps::Fstat(int fd, struct stat* st) {
  if (const int e = Enter(FileOp::kFstat)) return e;
  return base_->Fstat(fd, st);
}

int FaultInjectingFileOps::Stat(const std::string& path, struct stat* st) {
  if (const int e = Enter(FileOp::kStat)) return e;
  return base_->Stat(path, st);
}

int FaultInjectingFileOps::Rename(const std::string& from, const std::string& to) {
  if (const int e = Enter(FileOp::kRename)) return e;
  return base_->Rename(from, to);
}

int FaultInjectingFileOps::Unlink(const std::string& path) {
  if (const int e = Enter(FileOp::kUnlink)) return e;
  return base_->Unlink(path);
}

int FaultInjectingFileOps::Mkdir(const std::string& path, mode_t mode) {
  if (const int e = Enter(FileOp::kMkdir)) return e;
  return base_->Mkdir(path, mode);
}

int FaultInjectingFileOps::Rmdir(const std::string& path) {
  if (const int e = Enter(FileOp::kRmdir)) return e;
  return base_->Rmdir(path);
}

int FaultInjectingFileOps::ListDir(const std::string& path, std::vector<std::string>* names) {
  if (const int e = Enter(FileOp::kListDir)) return e;
  return base_->ListDir(path, names);
}

}  // namespace mnemo::cache
