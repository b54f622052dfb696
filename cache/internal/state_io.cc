#include "cache/internal/state_io.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache/base/strings.h"
#include "cache/internal/le_bytes.h"

namespace mnemo::cache::state_internal {
namespace {

constexpr char kSegmentMagic[8] = {'M', 'N', 'E', 'M', 'O', 'S', 'E', 'G'};
constexpr std::string_view kSegmentPrefix = "seg-";
constexpr std::string_view kSegmentSuffix = ".kv";

uint64_t AlignUp(uint64_t x) {
  return (x + kStateAlignment - 1) / kStateAlignment * kStateAlignment;
}

}  // namespace

absl::Status IoError(std::string_view op, const std::string& path, int neg_errno) {
  const int err = -neg_errno;
  const std::string msg =
      absl::StrCat(path, ": ", AsAbsl(op), " failed: ", std::strerror(err), " (errno ", err, ")");
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case EEXIST:
    case ENOTEMPTY:
      return absl::AlreadyExistsError(msg);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::UnavailableError(msg);
  }
}

std::string SegmentName(uint32_t segment) { return absl::StrFormat("seg-%06u.kv", segment); }

std::optional<uint32_t> ParseSegmentName(std::string_view name) {
  if (!name.starts_with(kSegmentPrefix) || !name.ends_with(kSegmentSuffix)) return std::nullopt;
  const std::string_view digits = name.substr(
      kSegmentPrefix.size(), name.size() - kSegmentPrefix.size() - kSegmentSuffix.size());
  if (digits.size() < 6 || digits.size() > 10) return std::nullopt;
  uint64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v == 0 || v > UINT32_MAX || SegmentName(static_cast<uint32_t>(v)) != name) {
    return std::nullopt;
  }
  return static_cast<uint32_t>(v);
}

absl::Status Fd::Close(const std::string& path) {
  const int fd = fd_;
  fd_ = -1;
  if (const int r = ops_->Close(fd); r < 0) return IoError("close", path, r);
  return absl::OkStatus();
}

absl::StatusOr<Fd> OpenFile(FileOps* ops, const std::string& path, int flags, int mode) {
  const int fd = ops->Open(path, flags, static_cast<mode_t>(mode));
  if (fd < 0) return IoError("open", path, fd);
  return Fd(ops, fd);
}

absl::Status WriteAll(FileOps* ops, int fd, std::span<const uint8_t> bytes, uint64_t offset,
                      const std::string& path) {
  while (!bytes.empty()) {
    const int64_t n = ops->Pwrite(fd, bytes.data(), bytes.size(), static_cast<int64_t>(offset));
    if (n < 0) return IoError(absl::StrCat("write at offset ", offset), path, static_cast<int>(n));
    if (n == 0) return IoError(absl::StrCat("write at offset ", offset), path, -EIO);
    bytes = bytes.subspan(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status ReadExact(FileOps* ops, int fd, std::span<uint8_t> out, uint64_t offset,
                       const std::string& path) {
  const uint64_t start = offset;
  while (!out.empty()) {
    const int64_t n = ops->Pread(fd, out.data(), out.size(), static_cast<int64_t>(offset));
    if (n < 0) return IoError(absl::StrCat("read at offset ", offset), path, static_cast<int>(n));
    if (n == 0) {
      return absl::DataLossError(absl::StrCat(path, ": file ends at offset ", offset,
                                              ", inside the ", offset - start + out.size(),
                                              " bytes expected at offset ", start));
    }
    out = out.subspan(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadWholeFile(FileOps* ops, const std::string& path,
                                          uint64_t max_bytes) {
  absl::StatusOr<Fd> fd = OpenFile(ops, path, O_RDONLY);
  if (!fd.ok()) return fd.status();
  struct stat st;
  if (const int r = ops->Fstat(fd->get(), &st); r < 0) return IoError("fstat", path, r);
  if (!S_ISREG(st.st_mode)) return absl::DataLossError(absl::StrCat(path, ": not a regular file"));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes) {
    return absl::DataLossError(
        absl::StrCat(path, ": ", size, " bytes, more than the limit of ", max_bytes));
  }
  std::string bytes(size, '\0');
  if (absl::Status s = ReadExact(ops, fd->get(),
                                 {reinterpret_cast<uint8_t*>(bytes.data()), bytes.size()}, 0, path);
      !s.ok()) {
    return s;
  }
  return bytes;
}

absl::Status FsyncDir(FileOps* ops, const std::string& dir) {
  absl::StatusOr<Fd> fd = OpenFile(ops, dir, O_RDONLY | O_DIRECTORY);
  if (!fd.ok()) return fd.status();
  if (const int r = ops->Fsync(fd->get()); r < 0) return IoError("fsync (directory)", dir, r);
  return fd->Close(dir);
}

std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

absl::Status ReplaceFileAtomically(FileOps* ops, const std::string& path, const std::string& temp,
                                   absl::FunctionRef<absl::Status(int fd)> write, bool fsync) {
  absl::Status status = [&]() -> absl::Status {
    absl::StatusOr<Fd> fd = OpenFile(ops, temp, O_WRONLY | O_CREAT | O_TRUNC);
    if (!fd.ok()) return fd.status();
    if (absl::Status s = write(fd->get()); !s.ok()) return s;
    if (fsync) {
      if (const int r = ops->Fsync(fd->get()); r < 0) return IoError("fsync", temp, r);
    }
    if (absl::Status s = fd->Close(temp); !s.ok()) return s;
    if (const int r = ops->Rename(temp, path); r < 0) {
      return IoError(absl::StrCat("rename to ", path), temp, r);
    }
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    ops->Unlink(temp);  // best effort; a leftover temporary is garbage (Scan removes it)
    return status;
  }
  // The rename is done: the new file is visible. Only its durability depends on this fsync.
  return fsync ? FsyncDir(ops, DirName(path)) : absl::OkStatus();
}

absl::Status RemoveDirTree(FileOps* ops, const std::string& dir,
                           std::vector<std::string>* removed) {
  std::vector<std::string> names;
  if (const int r = ops->ListDir(dir, &names); r < 0) return IoError("list", dir, r);
  for (const std::string& name : names) {
    const std::string path = absl::StrCat(dir, "/", name);
    if (const int r = ops->Unlink(path); r < 0) return IoError("unlink", path, r);
    if (removed != nullptr) removed->push_back(path);
  }
  if (const int r = ops->Rmdir(dir); r < 0) return IoError("rmdir", dir, r);
  if (removed != nullptr) removed->push_back(dir);
  return absl::OkStatus();
}

SegmentWriter::SegmentWriter(FileOps* ops, std::string path, uint32_t segment, Fd fd)
    : ops_(ops),
      path_(std::move(path)),
      segment_(segment),
      fd_(std::move(fd)),
      next_offset_(kStateAlignment) {}

SegmentWriter::SegmentWriter(SegmentWriter&& other) noexcept
    : ops_(other.ops_),
      path_(std::move(other.path_)),
      segment_(other.segment_),
      fd_(std::move(other.fd_)),
      next_offset_(other.next_offset_),
      finished_(other.finished_) {
  other.finished_ = true;  // the moved-from writer owns no file any more
}

SegmentWriter::~SegmentWriter() {
  if (finished_) return;
  // Unfinished: close and unlink (best effort; a leftover is unreferenced garbage).
  const Fd closing = std::move(fd_);
  ops_->Unlink(path_);
}

absl::StatusOr<SegmentWriter> SegmentWriter::Create(FileOps* ops, const std::string& dir,
                                                    uint32_t segment, const SessionId& id,
                                                    uint32_t n_blocks) {
  const std::string path = absl::StrCat(dir, "/", SegmentName(segment));
  absl::StatusOr<Fd> fd = OpenFile(ops, path, O_WRONLY | O_CREAT | O_EXCL);
  if (!fd.ok()) return fd.status();
  SegmentWriter w(ops, path, segment, *std::move(fd));
  uint8_t header[kSegmentHeaderBytes] = {};
  std::memcpy(header, kSegmentMagic, sizeof(kSegmentMagic));
  PutLe32(header + 8, kStateFormatVersion);
  PutLe32(header + 12, segment);
  std::memcpy(header + 16, id.bytes.data(), id.bytes.size());
  PutLe32(header + 32, n_blocks);
  PutLe64(header + 40, StateChecksum({header, 40}));
  if (absl::Status s = WriteAll(ops, w.fd_.get(), header, 0, path); !s.ok()) return s;
  return w;
}

absl::StatusOr<DiskBlock> SegmentWriter::Append(std::span<const uint8_t> payload) {
  DiskBlock b;
  b.segment = segment_;
  b.offset = next_offset_;
  b.length = payload.size();
  b.checksum = StateChecksum(payload);
  if (absl::Status s = WriteAll(ops_, fd_.get(), payload, b.offset, path_); !s.ok()) return s;
  next_offset_ = AlignUp(b.offset + b.length);
  return b;
}

absl::Status SegmentWriter::Finish(bool fsync) {
  if (fsync) {
    if (const int r = ops_->Fsync(fd_.get()); r < 0) return IoError("fsync", path_, r);
  }
  if (absl::Status s = fd_.Close(path_); !s.ok()) return s;
  finished_ = true;
  return absl::OkStatus();
}

absl::Status CheckSegmentHeader(std::span<const uint8_t> h, const std::string& path,
                                uint32_t segment, const SessionId& id) {
  const auto bad = [&path](auto&&... parts) {
    return absl::DataLossError(absl::StrCat(path, ": ", parts...));
  };
  if (h.size() < kSegmentHeaderBytes) return bad("segment header truncated");
  if (std::memcmp(h.data(), kSegmentMagic, sizeof(kSegmentMagic)) != 0) {
    return bad("not a mnemo segment file (bad magic)");
  }
  if (const uint64_t sum = StateChecksum(h.first(40)); sum != GetLe64(h.data() + 40)) {
    return bad("segment header checksum mismatch");
  }
  if (const uint32_t v = GetLe32(h.data() + 8); v != kStateFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, ": segment format version ", v, " is not supported by this build (it reads version ",
        kStateFormatVersion, ")"));
  }
  if (const uint32_t n = GetLe32(h.data() + 12); n != segment) {
    return bad("segment header says number ", n, ", the file name ", segment);
  }
  if (std::memcmp(h.data() + 16, id.bytes.data(), id.bytes.size()) != 0) {
    return bad("segment belongs to another session");
  }
  return absl::OkStatus();
}

}  // namespace mnemo::cache::state_internal
