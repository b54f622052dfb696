// StateDir::Export and StateDir::Import: one session as a single portable file.
//
//   offset 0   bundle header (64 bytes): magic "MNEMOBDL", u32 format version, u32 header
//              bytes (64), u64 manifest bytes M, u64 block count N, u64 payload bytes P (the
//              sum of the block lengths), u64 XXH3-64 of the preceding 40 bytes, 16 zero bytes
//   64         the manifest file (M bytes: its own header, checksum and FlatBuffer body; its
//              block refs name the exporting directory's segments and are rewritten on import)
//   64 + M     N records: u64 length, u64 XXH3-64, then the payload (no padding)
//
// The file is exactly 64 + M + 16 N + P bytes.
#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "cache/internal/le_bytes.h"
#include "cache/internal/state_io.h"
#include "cache/state_store.h"

namespace mnemo::cache {
namespace {

using state_internal::Fd;
using state_internal::GetLe32;
using state_internal::GetLe64;
using state_internal::IoError;
using state_internal::OpenFile;
using state_internal::PutLe32;
using state_internal::PutLe64;
using state_internal::ReadExact;
using state_internal::WriteAll;

constexpr char kBundleMagic[8] = {'M', 'N', 'E', 'M', 'O', 'B', 'D', 'L'};
constexpr uint64_t kBundleHeaderBytes = 64;
constexpr uint64_t kBlockRecordBytes = 16;

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

struct BundleHeader {
  uint64_t manifest_bytes = 0;
  uint64_t n_blocks = 0;
  uint64_t payload_bytes = 0;
};

}  // namespace

absl::Status StateDir::Export(const SessionId& id, const std::string& out_file) const {
  absl::StatusOr<SessionRecord> record = ReadManifest(id);
  if (!record.ok()) return record.status();
  absl::StatusOr<std::string> manifest = SerializeManifest(*record);
  if (!manifest.ok()) return manifest.status();
  uint64_t payload_bytes = 0;
  for (const DiskBlock& b : record->blocks) payload_bytes += b.length;

  uint8_t header[kBundleHeaderBytes] = {};
  std::memcpy(header, kBundleMagic, sizeof(kBundleMagic));
  PutLe32(header + 8, kStateFormatVersion);
  PutLe32(header + 12, static_cast<uint32_t>(kBundleHeaderBytes));
  PutLe64(header + 16, manifest->size());
  PutLe64(header + 24, record->blocks.size());
  PutLe64(header + 32, payload_bytes);
  PutLe64(header + 40, StateChecksum({header, 40}));

  const std::string temp = out_file + ".tmp";
  const auto write = [&](int fd) -> absl::Status {
    uint64_t offset = 0;
    const auto put = [&](std::span<const uint8_t> bytes) {
      absl::Status s = WriteAll(ops_, fd, bytes, offset, temp);
      offset += bytes.size();
      return s;
    };
    if (absl::Status s = put(header); !s.ok()) return s;
    if (absl::Status s = put(Bytes(*manifest)); !s.ok()) return s;
    std::vector<uint8_t> payload;
    for (const DiskBlock& b : record->blocks) {
      payload.resize(b.length);
      if (absl::Status s = ReadBlock(id, b, payload); !s.ok()) return s;
      uint8_t rec[kBlockRecordBytes];
      PutLe64(rec, b.length);
      PutLe64(rec + 8, b.checksum);
      if (absl::Status s = put(rec); !s.ok()) return s;
      if (absl::Status s = put(payload); !s.ok()) return s;
    }
    return absl::OkStatus();
  };
  return state_internal::ReplaceFileAtomically(ops_, out_file, temp, write, fsync_);
}

absl::StatusOr<SessionId> StateDir::Import(const std::string& bundle_file) {
  if (absl::Status s = CheckWritable("Import"); !s.ok()) return s;
  const auto bad = [&bundle_file](auto&&... parts) {
    return absl::DataLossError(absl::StrCat(bundle_file, ": ", parts...));
  };
  absl::StatusOr<Fd> in = OpenFile(ops_, bundle_file, O_RDONLY);
  if (!in.ok()) return in.status();
  struct stat st;
  if (const int r = ops_->Fstat(in->get(), &st); r < 0) return IoError("fstat", bundle_file, r);
  if (!S_ISREG(st.st_mode)) return bad("not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);

  // The header.
  if (file_size < kBundleHeaderBytes) {
    return bad("truncated bundle: ", file_size, " bytes, shorter than its header");
  }
  uint8_t header[kBundleHeaderBytes];
  if (absl::Status s = ReadExact(ops_, in->get(), header, 0, bundle_file); !s.ok()) return s;
  if (std::memcmp(header, kBundleMagic, sizeof(kBundleMagic)) != 0) {
    return bad("not a mnemo session bundle (bad magic)");
  }
  if (StateChecksum({header, 40}) != GetLe64(header + 40)) {
    return bad("bundle header checksum mismatch");
  }
  if (const uint32_t v = GetLe32(header + 8); v != kStateFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        bundle_file, ": bundle format version ", v,
        " is not supported by this build (it reads version ", kStateFormatVersion, ")"));
  }
  BundleHeader h{GetLe64(header + 16), GetLe64(header + 24), GetLe64(header + 32)};
  if (GetLe32(header + 12) != kBundleHeaderBytes || h.manifest_bytes > kMaxManifestBytes ||
      h.n_blocks > file_size / kBlockRecordBytes || h.payload_bytes > file_size ||
      kBundleHeaderBytes + h.manifest_bytes + h.n_blocks * kBlockRecordBytes + h.payload_bytes !=
          file_size) {
    return bad("bundle is ", file_size, " bytes but its header says 64 + ", h.manifest_bytes,
               " manifest bytes + ", h.n_blocks, " blocks of ", h.payload_bytes,
               " payload bytes (truncated, padded or corrupt)");
  }

  // The manifest: validated as a whole, then checked against the header.
  std::string manifest(h.manifest_bytes, '\0');
  if (absl::Status s =
          ReadExact(ops_, in->get(), {reinterpret_cast<uint8_t*>(manifest.data()), manifest.size()},
                    kBundleHeaderBytes, bundle_file);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<SessionRecord> record =
      ParseManifest(Bytes(manifest), absl::StrCat(bundle_file, " (manifest)"));
  if (!record.ok()) return record.status();
  uint64_t payload_bytes = 0;
  for (const DiskBlock& b : record->blocks) payload_bytes += b.length;
  if (record->blocks.size() != h.n_blocks || payload_bytes != h.payload_bytes) {
    return bad("the manifest has ", record->blocks.size(), " blocks of ", payload_bytes,
               " bytes, the bundle header ", h.n_blocks, " of ", h.payload_bytes);
  }
  const SessionId id = record->id;
  const std::string final_dir = SessionPath(id);
  if (ops_->Stat(final_dir, &st) == 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("session ", id.ToString(), " already exists in ", root_));
  }

  // Written into a temporary directory that becomes the session by one rename.
  const std::string temp_dir =
      absl::StrCat(root_, "/", AsAbsl(state_internal::kImportPrefix), id.ToString());
  if (ops_->Stat(temp_dir, &st) == 0) {
    if (absl::Status s = state_internal::RemoveDirTree(ops_, temp_dir, nullptr); !s.ok()) return s;
  }
  if (const int r = ops_->Mkdir(temp_dir, 0755); r < 0) return IoError("mkdir", temp_dir, r);
  absl::Status status = [&]() -> absl::Status {
    std::optional<state_internal::SegmentWriter> writer;
    if (!record->blocks.empty()) {
      absl::StatusOr<state_internal::SegmentWriter> w = state_internal::SegmentWriter::Create(
          ops_, temp_dir, 1, id, static_cast<uint32_t>(record->blocks.size()));
      if (!w.ok()) return w.status();
      writer.emplace(*std::move(w));
    }
    uint64_t offset = kBundleHeaderBytes + h.manifest_bytes;
    std::vector<uint8_t> payload;
    for (size_t i = 0; i < record->blocks.size(); ++i) {
      DiskBlock& b = record->blocks[i];
      uint8_t rec[kBlockRecordBytes];
      if (absl::Status s = ReadExact(ops_, in->get(), rec, offset, bundle_file); !s.ok()) return s;
      offset += kBlockRecordBytes;
      if (GetLe64(rec) != b.length || GetLe64(rec + 8) != b.checksum) {
        return bad("block ", i, " record (", GetLe64(rec), " bytes, xxh3 ", GetLe64(rec + 8),
                   ") disagrees with the manifest (", b.length, " bytes, xxh3 ", b.checksum, ")");
      }
      payload.resize(b.length);
      if (absl::Status s = ReadExact(ops_, in->get(), payload, offset, bundle_file); !s.ok()) {
        return s;
      }
      if (StateChecksum(payload) != b.checksum) {
        return bad("block ", i, " at offset ", offset, " fails its checksum");
      }
      offset += b.length;
      absl::StatusOr<DiskBlock> placed = writer->Append(payload);
      if (!placed.ok()) return placed.status();
      placed->hash = b.hash;
      b = *placed;
    }
    if (writer.has_value()) {
      if (absl::Status s = writer->Finish(fsync_); !s.ok()) return s;
    }
    absl::StatusOr<std::string> bytes = SerializeManifest(*record);
    if (!bytes.ok()) return bytes.status();
    const std::string manifest_path =
        absl::StrCat(temp_dir, "/", AsAbsl(state_internal::kManifestName));
    const std::string manifest_temp =
        absl::StrCat(temp_dir, "/", AsAbsl(state_internal::kManifestTempName));
    if (absl::Status s = state_internal::ReplaceFileAtomically(
            ops_, manifest_path, manifest_temp,
            [&](int fd) { return WriteAll(ops_, fd, Bytes(*bytes), 0, manifest_temp); }, fsync_);
        !s.ok()) {
      return s;
    }
    if (ops_->Stat(final_dir, &st) == 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("session ", id.ToString(), " already exists in ", root_));
    }
    if (const int r = ops_->Rename(temp_dir, final_dir); r < 0) {
      return IoError(absl::StrCat("rename to ", final_dir), temp_dir, r);
    }
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    // Best effort: a leftover .import-* directory is garbage that Scan removes.
    state_internal::RemoveDirTree(ops_, temp_dir, nullptr).IgnoreError();
    return status;
  }
  if (absl::Status s = FsyncDir(root_); !s.ok()) return s;
  return id;
}

}  // namespace mnemo::cache
