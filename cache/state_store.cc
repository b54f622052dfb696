#include "cache/state_store.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "cache/internal/state_io.h"

namespace mnemo::cache {
namespace {

using state_internal::CheckSegmentHeader;
using state_internal::Fd;
using state_internal::IoError;
using state_internal::kImportPrefix;
using state_internal::kManifestName;
using state_internal::kManifestTempName;
using state_internal::kProbeName;
using state_internal::kQuarantineName;
using state_internal::kSegmentHeaderBytes;
using state_internal::OpenFile;
using state_internal::ParseSegmentName;
using state_internal::ReadExact;
using state_internal::SegmentName;
using state_internal::SegmentWriter;

// Verify reads blocks in batches of at most this many bytes.
constexpr uint64_t kVerifyBatchBytes = uint64_t{64} << 20;

std::string Join(const std::string& dir, std::string_view name) {
  return absl::StrCat(dir, "/", AsAbsl(name));
}

// Creates `path` and any missing parents (like mkdir -p).
absl::Status MakeDirs(FileOps* ops, const std::string& path) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    const std::string prefix = path.substr(0, pos);
    if (const int r = ops->Mkdir(prefix, 0755); r < 0 && r != -EEXIST) {
      return IoError("mkdir", prefix, r);
    }
  }
  return absl::OkStatus();
}

}  // namespace

StateDir::StateDir(std::string root, const StateDirOptions& options)
    : root_(std::move(root)),
      fsync_(options.fsync),
      read_only_(options.read_only),
      ops_(options.file_ops != nullptr ? options.file_ops : &PosixFileOps()) {}

absl::StatusOr<std::unique_ptr<StateDir>> StateDir::Open(const std::string& path,
                                                         const StateDirOptions& options) {
  std::string root = path;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  if (root.empty()) return absl::InvalidArgumentError("state directory: empty path");
  std::unique_ptr<StateDir> dir(new StateDir(root, options));
  FileOps* ops = dir->ops_;
  struct stat st;
  int r = ops->Stat(root, &st);
  if (r == -ENOENT && options.read_only) {
    return absl::NotFoundError(absl::StrCat("no state directory at ", root));
  }
  if (r == -ENOENT) {
    if (absl::Status s = MakeDirs(ops, root); !s.ok()) return s;
    r = ops->Stat(root, &st);
  }
  if (r < 0) return IoError("stat", root, r);
  if (!S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(root, ": not a directory (state directory)"));
  }
  if (options.read_only) return dir;
  const std::string probe = Join(root, kProbeName);
  absl::StatusOr<Fd> fd = OpenFile(ops, probe, O_WRONLY | O_CREAT | O_TRUNC);
  if (!fd.ok()) {
    return absl::Status(
        fd.status().code(),
        absl::StrCat("state directory ", root, " is not writable: ", fd.status().message()));
  }
  if (absl::Status s = fd->Close(probe); !s.ok()) return s;
  if (const int u = ops->Unlink(probe); u < 0) return IoError("unlink", probe, u);
  return dir;
}

std::string StateDir::SessionPath(const SessionId& id) const { return Join(root_, id.ToString()); }

absl::Status StateDir::CheckWritable(std::string_view call) const {
  if (!read_only_) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("state directory ", root_, " was opened read-only: ", AsAbsl(call), " refused"));
}

absl::Status StateDir::FsyncDir(const std::string& dir) const {
  return fsync_ ? state_internal::FsyncDir(ops_, dir) : absl::OkStatus();
}

absl::Status StateDir::EnsureSessionDir(const std::string& dir) {
  const int r = ops_->Mkdir(dir, 0755);
  if (r == -EEXIST) return absl::OkStatus();
  if (r < 0) return IoError("mkdir", dir, r);
  return FsyncDir(root_);
}

absl::StatusOr<uint32_t> StateDir::NextSegment(const SessionId& id, const std::string& dir,
                                               bool refresh) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = next_segment_.find(id);
    if (it != next_segment_.end() && !refresh) return it->second++;
  }
  std::vector<std::string> names;
  if (const int r = ops_->ListDir(dir, &names); r < 0) return IoError("list", dir, r);
  uint32_t max_seen = 0;
  for (const std::string& name : names) {
    if (const std::optional<uint32_t> n = ParseSegmentName(name)) max_seen = std::max(max_seen, *n);
  }
  if (max_seen == UINT32_MAX) {
    return absl::ResourceExhaustedError(absl::StrCat(dir, ": segment numbers exhausted"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t& next = next_segment_[id];
  next = std::max(next, max_seen + 1);
  return next++;
}

absl::StatusOr<std::vector<DiskBlock>> StateDir::AppendBlocks(
    const SessionId& id, std::span<const std::span<const uint8_t>> payloads) {
  if (absl::Status s = CheckWritable("AppendBlocks"); !s.ok()) return s;
  if (payloads.empty()) return std::vector<DiskBlock>();
  for (size_t i = 0; i < payloads.size(); ++i) {
    if (payloads[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("AppendBlocks: payload ", i, " is empty"));
    }
  }
  if (payloads.size() > UINT32_MAX) {
    return absl::InvalidArgumentError("AppendBlocks: too many payloads for one segment");
  }
  const std::string dir = SessionPath(id);
  if (absl::Status s = EnsureSessionDir(dir); !s.ok()) return s;
  std::optional<SegmentWriter> writer;
  // A taken name means the cached number is stale (e.g. files restored by hand): re-list.
  for (int attempt = 0; attempt < 3 && !writer.has_value(); ++attempt) {
    absl::StatusOr<uint32_t> segment = NextSegment(id, dir, attempt > 0);
    if (!segment.ok()) return segment.status();
    absl::StatusOr<SegmentWriter> w =
        SegmentWriter::Create(ops_, dir, *segment, id, static_cast<uint32_t>(payloads.size()));
    if (w.ok()) {
      writer.emplace(*std::move(w));
    } else if (!absl::IsAlreadyExists(w.status()) || attempt == 2) {
      return w.status();
    }
  }
  std::vector<DiskBlock> blocks;
  blocks.reserve(payloads.size());
  for (std::span<const uint8_t> p : payloads) {
    absl::StatusOr<DiskBlock> b = writer->Append(p);
    if (!b.ok()) return b.status();  // the writer unlinks its file
    blocks.push_back(*b);
  }
  if (absl::Status s = writer->Finish(fsync_); !s.ok()) return s;
  if (absl::Status s = FsyncDir(dir); !s.ok()) {
    ops_->Unlink(writer->path());  // not known durable: do not hand it out
    return s;
  }
  return blocks;
}

absl::Status StateDir::WriteManifest(const SessionRecord& record) {
  if (absl::Status s = CheckWritable("WriteManifest"); !s.ok()) return s;
  absl::StatusOr<std::string> bytes = SerializeManifest(record);
  if (!bytes.ok()) return bytes.status();
  const std::string dir = SessionPath(record.id);
  if (absl::Status s = EnsureSessionDir(dir); !s.ok()) return s;
  const std::string temp = Join(dir, kManifestTempName);
  return state_internal::ReplaceFileAtomically(
      ops_, Join(dir, kManifestName), temp,
      [&](int fd) {
        return state_internal::WriteAll(
            ops_, fd, {reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()}, 0, temp);
      },
      fsync_);
}

absl::StatusOr<SessionRecord> StateDir::ReadManifest(const SessionId& id) const {
  const std::string dir = SessionPath(id);
  const std::string path = Join(dir, kManifestName);
  absl::StatusOr<std::string> bytes = state_internal::ReadWholeFile(ops_, path, kMaxManifestBytes);
  if (absl::IsNotFound(bytes.status())) {
    return absl::NotFoundError(
        absl::StrCat("no session ", id.ToString(), " in ", root_, " (", path, " does not exist)"));
  }
  if (!bytes.ok()) return bytes.status();
  absl::StatusOr<SessionRecord> record =
      ParseManifest({reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()}, path);
  if (!record.ok()) return record.status();
  if (record->id != id) {
    return absl::DataLossError(absl::StrCat(path, ": manifest of session ", record->id.ToString(),
                                            " in the directory of ", id.ToString()));
  }
  if (absl::Status s = CheckSegments(dir, *record); !s.ok()) return s;
  return record;
}

absl::Status StateDir::CheckSegments(const std::string& dir, const SessionRecord& record) const {
  // Per segment, the block that ends last.
  std::map<uint32_t, const DiskBlock*> last;
  for (const DiskBlock& b : record.blocks) {
    const DiskBlock*& l = last[b.segment];
    if (l == nullptr || b.offset + b.length > l->offset + l->length) l = &b;
  }
  for (const auto& [segment, block] : last) {
    const std::string path = Join(dir, SegmentName(segment));
    absl::StatusOr<Fd> fd = OpenFile(ops_, path, O_RDONLY);
    if (absl::IsNotFound(fd.status())) {
      return absl::DataLossError(
          absl::StrCat(path, ": segment file is missing (the manifest references it)"));
    }
    if (!fd.ok()) return fd.status();
    struct stat st;
    if (const int r = ops_->Fstat(fd->get(), &st); r < 0) return IoError("fstat", path, r);
    uint8_t header[kSegmentHeaderBytes];
    if (absl::Status s = ReadExact(ops_, fd->get(), header, 0, path); !s.ok()) return s;
    if (absl::Status s = CheckSegmentHeader(header, path, segment, record.id); !s.ok()) return s;
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    if (block->offset + block->length > size) {
      return absl::DataLossError(absl::StrCat(
          path, ": the manifest's block at offset ", block->offset, " (", block->length,
          " bytes) ends past the end of the segment file (", size, " bytes)"));
    }
  }
  return absl::OkStatus();
}

absl::Status StateDir::ReadBlock(const SessionId& id, const DiskBlock& block,
                                 std::span<uint8_t> out) const {
  return ReadBlocks(id, std::span<const DiskBlock>(&block, 1), out);
}

absl::Status StateDir::ReadBlocks(const SessionId& id, std::span<const DiskBlock> blocks,
                                  std::span<uint8_t> out) const {
  uint64_t total = 0;
  for (const DiskBlock& b : blocks) total += b.length;
  if (total != out.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ReadBlocks: the blocks have ", total, " bytes, the buffer ", out.size()));
  }
  const std::string dir = SessionPath(id);
  std::optional<Fd> fd;
  uint32_t open_segment = 0;
  std::string path;
  for (const DiskBlock& b : blocks) {
    if (!fd.has_value() || b.segment != open_segment) {
      fd.reset();
      path = Join(dir, SegmentName(b.segment));
      absl::StatusOr<Fd> f = OpenFile(ops_, path, O_RDONLY);
      if (absl::IsNotFound(f.status())) {
        return absl::DataLossError(absl::StrCat(path, ": segment file is missing"));
      }
      if (!f.ok()) return f.status();
      fd.emplace(*std::move(f));
      open_segment = b.segment;
    }
    const std::span<uint8_t> dst = out.first(b.length);
    if (absl::Status s = ReadExact(ops_, fd->get(), dst, b.offset, path); !s.ok()) return s;
    if (const uint64_t sum = StateChecksum(dst); sum != b.checksum) {
      return absl::DataLossError(absl::StrCat(path, ": block at offset ", b.offset, " (", b.length,
                                              " bytes) fails its checksum (xxh3 ", sum,
                                              ", the manifest says ", b.checksum, ")"));
    }
    out = out.subspan(b.length);
  }
  return absl::OkStatus();
}

absl::Status StateDir::Verify(const SessionId& id) const {
  absl::StatusOr<SessionRecord> record = ReadManifest(id);
  if (!record.ok()) return record.status();
  const std::span<const DiskBlock> blocks = record->blocks;
  std::vector<uint8_t> buf;
  for (size_t i = 0; i < blocks.size();) {
    size_t n = 0;
    uint64_t bytes = 0;
    while (i + n < blocks.size() && (n == 0 || bytes + blocks[i + n].length <= kVerifyBatchBytes)) {
      bytes += blocks[i + n].length;
      ++n;
    }
    buf.resize(bytes);
    if (absl::Status s = ReadBlocks(id, blocks.subspan(i, n), buf); !s.ok()) return s;
    i += n;
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> StateDir::CollectGarbage(const SessionId& id) {
  if (absl::Status s = CheckWritable("CollectGarbage"); !s.ok()) return s;
  absl::StatusOr<SessionRecord> record = ReadManifest(id);
  if (!record.ok()) return record.status();
  absl::flat_hash_set<uint32_t> referenced;
  for (const DiskBlock& b : record->blocks) referenced.insert(b.segment);
  const std::string dir = SessionPath(id);
  std::vector<std::string> names;
  if (const int r = ops_->ListDir(dir, &names); r < 0) return IoError("list", dir, r);
  int64_t removed = 0;
  for (const std::string& name : names) {
    const std::optional<uint32_t> segment = ParseSegmentName(name);
    const bool garbage =
        (segment.has_value() && !referenced.contains(*segment)) || name == kManifestTempName;
    if (!garbage) continue;
    const std::string path = Join(dir, name);
    if (const int r = ops_->Unlink(path); r < 0) return IoError("unlink", path, r);
    ++removed;
  }
  if (removed > 0) {
    if (absl::Status s = FsyncDir(dir); !s.ok()) return s;
  }
  return removed;
}

absl::StatusOr<std::string> StateDir::Quarantine(const std::string& name) {
  const std::string qdir = Join(root_, kQuarantineName);
  if (const int r = ops_->Mkdir(qdir, 0755); r < 0 && r != -EEXIST) {
    return IoError("mkdir", qdir, r);
  }
  std::string target = Join(qdir, name);
  struct stat st;
  for (int i = 1; ops_->Stat(target, &st) == 0; ++i) {
    target = absl::StrCat(qdir, "/", name, ".", i);
  }
  const std::string from = Join(root_, name);
  if (const int r = ops_->Rename(from, target); r < 0) {
    return IoError(absl::StrCat("rename to ", target), from, r);
  }
  if (absl::Status s = FsyncDir(root_); !s.ok()) return s;
  if (absl::Status s = FsyncDir(qdir); !s.ok()) return s;
  return target;
}

absl::StatusOr<ScanResult> StateDir::Scan() {
  if (absl::Status s = CheckWritable("Scan"); !s.ok()) return s;
  std::vector<std::string> names;
  if (const int r = ops_->ListDir(root_, &names); r < 0) return IoError("list", root_, r);
  std::sort(names.begin(), names.end());
  ScanResult result;
  for (const std::string& name : names) {
    const std::string path = Join(root_, name);
    if (name == kQuarantineName || name == kServerDirName) continue;
    if (name.starts_with(kImportPrefix) || name == kProbeName) {
      // An interrupted Import (or Open): never visible as a session.
      struct stat st;
      absl::Status s;
      if (ops_->Stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        s = state_internal::RemoveDirTree(ops_, path, &result.removed);
      } else if (const int r = ops_->Unlink(path); r < 0) {
        s = IoError("unlink", path, r);
      } else {
        result.removed.push_back(path);
      }
      if (!s.ok()) result.skipped.push_back({path, s, ""});
      continue;
    }
    const std::optional<SessionId> id = SessionId::Parse(name);
    struct stat st;
    if (!id.has_value() || ops_->Stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
      result.skipped.push_back(
          {path, absl::InvalidArgumentError(absl::StrCat(path, ": not a session directory")), ""});
      continue;
    }
    if (const int r = ops_->Stat(Join(path, kManifestName), &st); r == -ENOENT) {
      // Never committed (a crash before the first manifest) or a Remove cut short.
      if (absl::Status s = state_internal::RemoveDirTree(ops_, path, &result.removed); !s.ok()) {
        result.skipped.push_back({path, s, ""});
      }
      continue;
    }
    absl::StatusOr<SessionRecord> record = ReadManifest(*id);
    if (record.ok()) {
      absl::StatusOr<int64_t> collected = CollectGarbage(*id);
      if (!collected.ok()) {
        result.skipped.push_back({path, collected.status(), ""});
        continue;
      }
      if (*collected > 0) result.removed.push_back(absl::StrCat(path, " (", *collected, " files)"));
      result.sessions.push_back(*std::move(record));
    } else if (absl::IsDataLoss(record.status())) {
      absl::StatusOr<std::string> moved = Quarantine(name);
      if (moved.ok()) {
        result.quarantined.push_back({path, record.status(), *moved});
      } else {
        result.skipped.push_back(
            {path,
             absl::Status(record.status().code(),
                          absl::StrCat(record.status().message(),
                                       "; could not quarantine it: ", moved.status().message())),
             ""});
      }
    } else {
      result.skipped.push_back({path, record.status(), ""});
    }
  }
  return result;
}

absl::Status StateDir::Remove(const SessionId& id) {
  if (absl::Status s = CheckWritable("Remove"); !s.ok()) return s;
  const std::string dir = SessionPath(id);
  struct stat st;
  if (const int r = ops_->Stat(dir, &st); r == -ENOENT) {
    return absl::NotFoundError(absl::StrCat("no session ", id.ToString(), " in ", root_));
  } else if (r < 0) {
    return IoError("stat", dir, r);
  }
  const std::string manifest = Join(dir, kManifestName);
  if (const int r = ops_->Unlink(manifest); r < 0 && r != -ENOENT) {
    return IoError("unlink", manifest, r);
  }
  if (absl::Status s = FsyncDir(dir); !s.ok()) return s;
  if (absl::Status s = state_internal::RemoveDirTree(ops_, dir, nullptr); !s.ok()) return s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    next_segment_.erase(id);
  }
  return FsyncDir(root_);
}

}  // namespace mnemo::cache
