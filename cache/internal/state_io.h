// File helpers shared by the state directory's sources (cache/state_store.cc,
// cache/state_bundle.cc): errno -> Status, whole reads and writes over FileOps, the atomic
// file replacement, and the segment file writer. Internal to cache/.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache/file_ops.h"
#include "cache/session.h"
#include "cache/state_manifest.h"

namespace mnemo::cache::state_internal {

inline constexpr std::string_view kManifestName = "manifest";
inline constexpr std::string_view kManifestTempName = "manifest.tmp";
inline constexpr std::string_view kQuarantineName = "quarantine";
inline constexpr std::string_view kImportPrefix = ".import-";
inline constexpr std::string_view kProbeName = ".write-probe";
// Bytes of the segment header at offset 0 (the rest of page 0 is zero).
inline constexpr uint64_t kSegmentHeaderBytes = 48;

// A Status for a failed system call: `op` on `path` gave -`neg_errno`. The code follows the
// errno (NotFound, AlreadyExists, PermissionDenied, ResourceExhausted, Unavailable) and the
// message names the path and strerror's text.
absl::Status IoError(std::string_view op, const std::string& path, int neg_errno);

// "seg-NNNNNN.kv" (at least 6 digits) and back (nullopt for other names).
std::string SegmentName(uint32_t segment);
std::optional<uint32_t> ParseSegmentName(std::string_view name);

// An open file descriptor, closed (errors ignored) when destroyed unless Close()d.
class Fd {
 public:
  Fd(FileOps* ops, int fd) : ops_(ops), fd_(fd) {}
  Fd(Fd&& other) noexcept : ops_(other.ops_), fd_(other.fd_) { other.fd_ = -1; }
  Fd& operator=(Fd&&) = delete;
  Fd(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ops_->Close(fd_);
  }
  int get() const { return fd_; }
  // Closes now, reporting an error (a failed close may mean lost writes).
  absl::Status Close(const std::string& path);

 private:
  FileOps* ops_;
  int fd_;
};

absl::StatusOr<Fd> OpenFile(FileOps* ops, const std::string& path, int flags, int mode = 0644);
// All of `bytes` at `offset` (looping over short writes).
absl::Status WriteAll(FileOps* ops, int fd, std::span<const uint8_t> bytes, uint64_t offset,
                      const std::string& path);
// Exactly out.size() bytes at `offset`; DataLoss naming the path and offset if the file ends
// first.
absl::Status ReadExact(FileOps* ops, int fd, std::span<uint8_t> out, uint64_t offset,
                       const std::string& path);
// A whole file of at most `max_bytes` (DataLoss naming the file if larger).
absl::StatusOr<std::string> ReadWholeFile(FileOps* ops, const std::string& path,
                                          uint64_t max_bytes);
absl::Status FsyncDir(FileOps* ops, const std::string& dir);
// Replaces `path` atomically: `write` fills `temp` (a fresh, empty file opened for writing,
// given as a descriptor), which is then fsynced (when `fsync`), renamed to `path`, and the
// directory of `path` fsynced (when `fsync`). On failure before the rename `path` is
// untouched and `temp` is unlinked.
absl::Status ReplaceFileAtomically(FileOps* ops, const std::string& path, const std::string& temp,
                                   absl::FunctionRef<absl::Status(int fd)> write, bool fsync);
// The directory part of `path` ("." when there is none).
std::string DirName(const std::string& path);
// Unlinks every entry of `dir` (files only: state directories hold no subdirectories) and
// the directory itself; appends the removed paths to `removed` (if not null).
absl::Status RemoveDirTree(FileOps* ops, const std::string& dir, std::vector<std::string>* removed);

// Writes one segment file:
//
//   offset 0      header (kSegmentHeaderBytes): magic "MNEMOSEG", u32 format version,
//                 u32 segment number, 16-byte session id, u32 block count, u32 0,
//                 u64 XXH3-64 of the preceding 40 bytes; zeros up to 4096
//   offset 4096   payload 0, then each next payload at the next multiple of 4096
//
// Create opens it with O_EXCL (AlreadyExists if the name is taken); Append writes a payload;
// Finish fsyncs (when asked) and closes. Destroying an unfinished writer unlinks the file.
class SegmentWriter {
 public:
  static absl::StatusOr<SegmentWriter> Create(FileOps* ops, const std::string& dir,
                                              uint32_t segment, const SessionId& id,
                                              uint32_t n_blocks);
  SegmentWriter(SegmentWriter&& other) noexcept;
  SegmentWriter& operator=(SegmentWriter&&) = delete;
  ~SegmentWriter();

  // The block's place and checksum (hash {0, 0}).
  absl::StatusOr<DiskBlock> Append(std::span<const uint8_t> payload);
  absl::Status Finish(bool fsync);
  const std::string& path() const { return path_; }

 private:
  SegmentWriter(FileOps* ops, std::string path, uint32_t segment, Fd fd);

  FileOps* ops_;
  std::string path_;
  uint32_t segment_;
  Fd fd_;
  uint64_t next_offset_;
  bool finished_ = false;
};

// Checks a segment file's header bytes: DataLoss naming `path` for a bad magic or checksum or
// a header of another session or number; FailedPrecondition for an unsupported version.
absl::Status CheckSegmentHeader(std::span<const uint8_t> header, const std::string& path,
                                uint32_t segment, const SessionId& id);

}  // namespace mnemo::cache::state_internal
