// Shared helpers for the state directory tests: records with every field set, random block
// payloads, raw file edits (truncation, bit flips) on the real file system.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "cache/state_store.h"

namespace mnemo::cache::testing {

// 1 layer * 2 * 2 kv heads * 4 tokens * 8 dims * 2 bytes: 256-byte blocks of 4 tokens.
inline kernels::KvLayout StateLayout() {
  kernels::KvLayout l;
  l.n_layers = 1;
  l.n_kv_heads = 2;
  l.head_dim = 8;
  l.block_tokens = 4;
  l.dtype = kernels::DType::kBF16;
  return l;
}

// A session id whose bytes are all `seed` + i.
inline SessionId TestId(uint8_t seed) {
  SessionId id;
  for (size_t i = 0; i < id.bytes.size(); ++i) id.bytes[i] = static_cast<uint8_t>(seed + i);
  return id;
}

using Payloads = std::vector<std::vector<uint8_t>>;

// `n` random payloads of `bytes` bytes (never all zeros).
inline Payloads RandomPayloads(size_t n, size_t bytes, uint32_t seed) {
  std::mt19937 rng(seed);
  Payloads out(n, std::vector<uint8_t>(bytes));
  for (auto& p : out) {
    for (uint8_t& b : p) b = static_cast<uint8_t>(rng());
  }
  return out;
}

inline std::vector<std::span<const uint8_t>> Spans(const Payloads& payloads) {
  return {payloads.begin(), payloads.end()};
}

// A record of session `id` with every field set (binary metadata, a compaction entry, turns,
// messages), whose history covers `blocks` full blocks plus 2 tokens without KV. The blocks
// are the caller's.
inline SessionRecord FullRecord(const SessionId& id, std::vector<DiskBlock> blocks) {
  SessionRecord r;
  r.id = id;
  r.tenant = "tenant-a";
  r.model_fingerprint = "llama:stories260K:f32:0123456789abcdef";
  r.layout = StateLayout();
  r.kv_tokens = static_cast<int64_t>(blocks.size()) * r.layout.block_tokens;
  for (int64_t t = 0; t < r.kv_tokens + 2; ++t) r.tokens.push_back(static_cast<int32_t>(t * 7 + 1));
  r.turns = {{0, 0}, {r.kv_tokens / 2, 2}};
  r.messages = {{"system", "be terse"}, {"user", "hi"}, {"assistant", "hello \xe2\x9c\x93"}};
  r.rng_state = {1, 0xfedcba9876543210ull, 3, 0x8000000000000000ull};
  r.metadata = std::string("tool\0state\xff", 11);
  r.created_unix_us = 1700000000000000;
  r.last_used_unix_us = 1700000123456789;
  r.ttl_us = 3600000000;
  r.compaction_log = {{1700000100000000,
                       "drop-middle",
                       {{4, 8}},
                       {{8, 12}, {12, 13}},
                       -4,
                       1,
                       "the user greeted the assistant \xe2\x9c\x93"}};
  r.compaction = CompactionOptions{.policy = CompactionPolicy::kSummarize,
                                   .sink_tokens = 8,
                                   .trigger_fraction = 0.75,
                                   .trigger_tokens = 300,
                                   .max_session_bytes = 1 << 20,
                                   .target_fraction = 0.25,
                                   .observe_tokens = 48,
                                   .summary_prompt = "Summarize, briefly.",
                                   .summary_max_tokens = 100};
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (i % 2 == 0) blocks[i].hash = {0x1111 * (i + 1), 0x2222 * (i + 1)};
  }
  r.blocks = std::move(blocks);
  return r;
}

inline std::unique_ptr<StateDir> OpenDir(const std::string& path, bool fsync = false,
                                         FileOps* ops = nullptr) {
  auto dir = StateDir::Open(path, {.fsync = fsync, .file_ops = ops});
  EXPECT_TRUE(dir.ok()) << dir.status();
  return dir.ok() ? *std::move(dir) : nullptr;
}

inline std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline void FlipBit(const std::string& path, uint64_t offset, int bit = 0) {
  std::string bytes = ReadBytes(path);
  ASSERT_LT(offset, bytes.size()) << path;
  bytes[offset] = static_cast<char>(bytes[offset] ^ (1 << bit));
  WriteBytes(path, bytes);
}

inline void Truncate(const std::string& path, uint64_t size) {
  std::filesystem::resize_file(path, size);
}

inline uint64_t FileSize(const std::string& path) { return std::filesystem::file_size(path); }

// The names in a directory, sorted.
inline std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Appends `payloads` as one turn and writes the record over them (with `FullRecord` fields):
// the first `prior.size()` blocks are kept from the previous turn.
inline SessionRecord CommitTurn(StateDir& dir, const SessionId& id,
                                const std::vector<DiskBlock>& prior, const Payloads& payloads) {
  auto added = dir.AppendBlocks(id, Spans(payloads));
  EXPECT_TRUE(added.ok()) << added.status();
  std::vector<DiskBlock> blocks = prior;
  if (added.ok()) blocks.insert(blocks.end(), added->begin(), added->end());
  SessionRecord r = FullRecord(id, blocks);
  const absl::Status s = dir.WriteManifest(r);
  EXPECT_TRUE(s.ok()) << s;
  return r;
}

}  // namespace mnemo::cache::testing
