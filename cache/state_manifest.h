// The durable record of one session and its manifest file (docs/state-format.md, format
// version 1): what the disk tier keeps of a session besides its KV block payloads.
//
// manifest file = 32-byte header + FlatBuffer body (cache/state_format.fbs):
//
//   0   8  magic "MNEMOMAN"
//   8   4  format version (u32 LE, kStateFormatVersion)
//   12  4  header bytes (u32 LE, 32)
//   16  8  body bytes (u64 LE)
//   24  8  XXH3-64 (seed 0) of the body
//   32  .. body: a FlatBuffer Manifest, file identifier "MNMF"
//
// SessionRecord is the plain C++ mirror of the body, independent of SessionState so that
// the engine (or a tool) fills it from whatever it holds. Every byte read back is validated
// (ParseManifest); nothing here touches the file system.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache/block_hash.h"
#include "cache/compaction.h"
#include "cache/session.h"
#include "kernels/attention.h"

namespace mnemo::cache {

inline constexpr uint32_t kStateFormatVersion = 1;
inline constexpr std::string_view kKvEncodingRaw = "";
inline constexpr std::string_view kKvEncodingInt8 = "int8";

// The bytes of one block payload of `layout` in `encoding` (0 for an unknown encoding).
uint64_t EncodedBlockBytes(const kernels::KvLayout& layout, std::string_view encoding);
// Block payloads start at multiples of this in segment files; the segment header is page 0.
inline constexpr uint64_t kStateAlignment = 4096;
inline constexpr uint64_t kManifestHeaderBytes = 32;
// Manifests larger than this are refused (a 1M-token history is about 4 MiB).
inline constexpr uint64_t kMaxManifestBytes = uint64_t{256} << 20;

// Where one KV block's payload is on disk: in segment file seg-NNNNNN.kv (NNNNNN =
// `segment`, at least 6 digits) of the session's directory.
struct DiskBlock {
  uint32_t segment = 0;   // >= 1
  uint64_t offset = 0;    // a multiple of kStateAlignment, >= kStateAlignment
  uint64_t length = 0;    // the payload's bytes (the layout's block_bytes())
  uint64_t checksum = 0;  // XXH3-64 (seed 0) of the payload
  BlockHash hash;         // the block's chain hash; {0, 0} when it was never published

  friend bool operator==(const DiskBlock&, const DiskBlock&) = default;
};

// Everything a manifest holds. Times are microseconds since the Unix epoch.
struct SessionRecord {
  SessionId id;
  std::string tenant;
  std::string model_fingerprint;
  kernels::KvLayout layout;
  std::vector<int32_t> tokens;  // the token history
  int64_t kv_tokens = 0;        // tokens whose KV `blocks` hold (<= tokens.size())
  std::vector<SessionTurn> turns;
  std::vector<SessionMessage> messages;
  std::array<uint64_t, 4> rng_state{};
  std::string metadata;  // opaque client bytes
  int64_t created_unix_us = 0;
  int64_t last_used_unix_us = 0;
  int64_t ttl_us = -1;  // -1: never expires
  std::vector<CompactionRecord> compaction_log;
  // ceil(kv_tokens / layout.block_tokens) blocks, in token order.
  std::vector<DiskBlock> blocks;
  // The blocks' encoding: kKvEncodingRaw (the layout's block bytes) or kKvEncodingInt8
  // (kernels/kv_compress.h, CompressedBlockBytes each).
  std::string kv_encoding;
  // The session's own compaction options; nullopt: the engine's default.
  std::optional<CompactionOptions> compaction;
};

bool operator==(const SessionRecord& a, const SessionRecord& b);

// XXH3-64 (seed 0) of `bytes`: the checksum of block payloads and manifest bodies.
uint64_t StateChecksum(std::span<const uint8_t> bytes);

// OK, or InvalidArgument naming the first field that breaks the format's rules: layout
// sizes > 0 and its block within 1 GiB, dtype f16 or bf16; 0 <= kv_tokens <= tokens; blocks ==
// ceil(kv_tokens / block_tokens), each block's length == layout.block_bytes(), segment >= 1,
// offset a multiple of kStateAlignment and >= it, a chain hash only on full blocks;
// turns[0] (if any) starts at token 0, turns never go backwards and stay within the tokens
// and messages; ttl >= -1; compaction ranges with 0 <= begin <= end.
absl::Status ValidateRecord(const SessionRecord& record);

// The manifest file's bytes for `record` (header + body). The record must be valid
// (ValidateRecord; checked: InvalidArgument otherwise).
absl::StatusOr<std::string> SerializeManifest(const SessionRecord& record);

// Parses and validates a whole manifest file. `name` (a path) starts every error message.
// DataLoss: bad magic, truncated or oversized file, wrong header size, checksum mismatch,
// a body that fails the FlatBuffers verifier or lacks a required field, a version field that
// disagrees with the header's, or a record that breaks ValidateRecord.
// FailedPrecondition: a format version this build does not read (the file may be intact:
// written by a newer mnemo), naming the version.
absl::StatusOr<SessionRecord> ParseManifest(std::span<const uint8_t> file, std::string_view name);

}  // namespace mnemo::cache
