// StateDir: the on-disk form of sessions (DESIGN.md 4, docs/state-format.md) — a directory
// with one subdirectory per session, each a manifest plus append-only block segments:
//
//   <root>/
//     sess_<32 hex>/            one session (SessionId::ToString())
//       manifest                SessionRecord (cache/state_manifest.h), replaced atomically
//       seg-000001.kv           block payloads of one AppendBlocks call, 4 KiB aligned
//       seg-000002.kv           ...
//     quarantine/sess_<...>/    sessions whose manifest was found corrupt (moved by Scan)
//     server/                   files of `mnemo serve` (its Responses index); Scan skips it
//
// The write protocol of one turn: AppendBlocks writes the turn's new blocks into a NEW
// segment file and fsyncs it (and the directory); then WriteManifest writes the complete new
// record to `manifest.tmp`, fsyncs it, renames it over `manifest` and fsyncs the directory.
// Blocks never move and segments are never rewritten, so a crash at any point leaves the old
// manifest (and possibly an unreferenced segment: garbage, see CollectGarbage) or the new
// one, never a torn state; and a turn writes only its new blocks plus the manifest.
//
// Errors are absl::Status values naming the file and, for system calls, the errno text:
// NotFound (no such session), AlreadyExists (Import of a present id), PermissionDenied
// (EACCES/EPERM/EROFS), ResourceExhausted (ENOSPC/EDQUOT), Unavailable (other I/O errors),
// DataLoss (a checksum, size or structure that does not verify), FailedPrecondition (a format
// version this build does not read), InvalidArgument (a bad record or buffer from the
// caller). A failed call leaves nothing partial visible: the previous manifest stays, a
// half-written segment is unlinked (or, if even that fails, left unreferenced).
//
// Thread-safety: calls for DIFFERENT sessions may run concurrently on different threads.
// Calls for ONE session must not overlap (the tier manager serializes a session's I/O), and
// Scan, Import and CollectGarbage must not overlap with writes of the sessions they touch.
// One StateDir per directory per process, and one process per directory (there is no lock
// file yet).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache/file_ops.h"
#include "cache/session.h"
#include "cache/state_manifest.h"

namespace mnemo::cache {

// The entry of a state directory that belongs to the server, not to a session.
inline constexpr char kServerDirName[] = "server";

struct StateDirOptions {
  // fsync files and directories at every commit point. Off only for tests and benchmarks
  // that do not care about power loss (a process crash is still safe without it).
  bool fsync = true;
  // Every file operation goes through this (not owned; must outlive the StateDir).
  // nullptr: PosixFileOps(). A FaultInjectingFileOps in fault-injection tests.
  FileOps* file_ops = nullptr;
  // For readers that must leave the directory as it is (`mnemo session ls|verify|export`,
  // which also work on a read-only mount): Open neither creates the directory (NotFound
  // when it is missing) nor probes it for writes, and every call that would change it
  // (AppendBlocks, WriteManifest, CollectGarbage, Scan, Remove, Import) fails with
  // FailedPrecondition without touching anything.
  bool read_only = false;
};

// One entry of the state directory that Scan did not load.
struct ScanProblem {
  std::string path;      // the entry, where Scan found it
  absl::Status status;   // why it was not loaded
  std::string moved_to;  // the quarantine path it was moved to; empty: left in place
};

struct ScanResult {
  std::vector<SessionRecord> sessions;   // every valid session, ordered by id bytes
  std::vector<ScanProblem> quarantined;  // corrupt (DataLoss): moved to <root>/quarantine/
  std::vector<ScanProblem> skipped;      // left in place: a format version this build does
                                         // not read, an I/O error, a name that is no session
  std::vector<std::string> removed;      // garbage deleted: unreferenced segments, temporary
                                         // files, session dirs without a manifest (a first
                                         // write or a Remove that a crash interrupted),
                                         // interrupted imports
};

class StateDir {
 public:
  // Opens the state directory at `path`, creating it (and its parents) if missing (NotFound
  // instead with `read_only`). InvalidArgument: `path` exists and is not a directory.
  // PermissionDenied (or another I/O code): it cannot be created or a file cannot be created in it
  // (probed by creating and removing `.write-probe`; not with `read_only`). The message names the
  // path and the errno text.
  static absl::StatusOr<std::unique_ptr<StateDir>> Open(const std::string& path,
                                                        const StateDirOptions& options = {});

  StateDir(const StateDir&) = delete;
  StateDir& operator=(const StateDir&) = delete;

  const std::string& path() const { return root_; }
  // <root>/<id.ToString()>
  std::string SessionPath(const SessionId& id) const;

  // Writes `payloads` (in order) into one new segment file of session `id` — creating the
  // session's directory if needed — at 4 KiB-aligned offsets, fsyncs the file and the
  // directory, and returns where each payload went with its checksum (hash {0, 0}: the caller
  // sets the chain hashes of published blocks before WriteManifest). No payloads: no I/O, an
  // empty result. Empty payloads: InvalidArgument. On failure the segment is unlinked; the
  // manifest and every earlier segment are untouched.
  absl::StatusOr<std::vector<DiskBlock>> AppendBlocks(
      const SessionId& id, std::span<const std::span<const uint8_t>> payloads);

  // Atomically replaces session `record.id`'s manifest with `record` (creating the session's
  // directory if needed): temp file, fsync, rename, directory fsync. InvalidArgument if the
  // record breaks ValidateRecord. Its blocks must be ones AppendBlocks returned for this
  // session (not checked here; ReadManifest checks them). On failure the old manifest (or
  // none) stays.
  absl::Status WriteManifest(const SessionRecord& record);

  // The session's validated record. NotFound: no manifest. DataLoss naming the file: a
  // corrupt manifest (ParseManifest), a manifest of another session id, or a block whose
  // segment file is missing, has a bad header, or ends before the block does.
  // FailedPrecondition: an unsupported format version (manifest or segment).
  absl::StatusOr<SessionRecord> ReadManifest(const SessionId& id) const;

  // Reads one block's payload into `out` (exactly block.length bytes, else InvalidArgument)
  // and checks its checksum: DataLoss naming the segment file and offset on a mismatch or a
  // short read. `out` is unspecified after a failure.
  absl::Status ReadBlock(const SessionId& id, const DiskBlock& block, std::span<uint8_t> out) const;
  // The same for several blocks, packed back to back into `out` (the sum of their lengths),
  // opening each segment file once.
  absl::Status ReadBlocks(const SessionId& id, std::span<const DiskBlock> blocks,
                          std::span<uint8_t> out) const;

  // ReadManifest plus every block read and checksummed: OK only if the whole session would
  // restore. (What `mnemo session verify` runs.)
  absl::Status Verify(const SessionId& id) const;

  // Lists every session with a valid manifest, quarantines the corrupt ones (DataLoss: moved,
  // never deleted), and collects garbage (see ScanResult::removed; for every valid session,
  // CollectGarbage). Must not overlap with writes (call it at startup). Fails only if the
  // root itself cannot be listed; a problem with one entry is reported in the result.
  absl::StatusOr<ScanResult> Scan();

  // Deletes the session's segment files that its manifest does not reference (left by an
  // AppendBlocks whose WriteManifest never happened) and a stale `manifest.tmp`; returns how
  // many files it removed. The manifest must be valid (ReadManifest's errors otherwise).
  // Precondition: no AppendBlocks of this session awaits its WriteManifest — those blocks
  // would be collected.
  absl::StatusOr<int64_t> CollectGarbage(const SessionId& id);

  // Deletes the session: the manifest first (so a crash part way leaves a directory without
  // a manifest, which Scan removes), then its segments and directory, with directory fsyncs.
  // NotFound if the session has no directory.
  absl::Status Remove(const SessionId& id);

  // Writes the session as one bundle file (docs/state-format.md: header, manifest, then
  // every block with its length and checksum), atomically (`out_file`.tmp, fsync, rename).
  // Every block is checksummed on the way (DataLoss: nothing is written).
  absl::Status Export(const SessionId& id, const std::string& out_file) const;

  // Reads a bundle, verifies everything (header, manifest, every block's length and
  // checksum, the exact file size) and writes it as a normal session (one segment) through
  // a temporary directory renamed into place, so a failed import leaves nothing visible.
  // Returns the imported id. AlreadyExists: the id is already in this directory. DataLoss
  // naming the bundle: anything that does not verify. FailedPrecondition: an unsupported
  // format version.
  absl::StatusOr<SessionId> Import(const std::string& bundle_file);

 private:
  StateDir(std::string root, const StateDirOptions& options);

  // OK, or FailedPrecondition naming `call` if this StateDir was opened read-only.
  absl::Status CheckWritable(std::string_view call) const;
  // Creates <root>/<id> if missing (fsyncing the root when it does).
  absl::Status EnsureSessionDir(const std::string& dir);
  // The number for the session's next segment file.
  absl::StatusOr<uint32_t> NextSegment(const SessionId& id, const std::string& dir, bool refresh);
  absl::Status FsyncDir(const std::string& dir) const;
  // Checks every segment `record` references: present, a valid header of this session and
  // that number, long enough for its blocks.
  absl::Status CheckSegments(const std::string& dir, const SessionRecord& record) const;
  // Moves <root>/<name> to <root>/quarantine/<name>[.N]; returns the new path.
  absl::StatusOr<std::string> Quarantine(const std::string& name);

  // Constant after construction.
  const std::string root_;
  const bool fsync_;
  const bool read_only_;
  FileOps* const ops_;

  std::mutex mu_;  // std::mutex: ThreadSanitizer sees it (TOOLCHAIN.md)
  // The next free segment number per session (learned by listing the directory once).
  absl::flat_hash_map<SessionId, uint32_t> next_segment_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mnemo::cache
