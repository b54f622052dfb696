// Writes the seed corpus of the state format fuzz target (tests/fuzz/corpus/state_manifest/):
// for a full record (every field set) and an empty one, the manifest file (mode byte 0), its
// body alone (mode 1) and an exported bundle (mode 2); see state_manifest_fuzz.cc.
// Usage: state_manifest_seeds OUT_DIR   (run by `tools/fuzz.sh --seeds state_manifest`)
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include "cache/state_manifest.h"
#include "cache/state_store.h"

namespace {

using mnemo::cache::DiskBlock;
using mnemo::cache::SessionRecord;
using mnemo::cache::StateDir;

bool Write(const std::string& path, char mode, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.put(mode);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out);
}

SessionRecord Record(uint8_t seed, int n_tokens) {
  SessionRecord r;
  for (size_t i = 0; i < r.id.bytes.size(); ++i) r.id.bytes[i] = static_cast<uint8_t>(seed + i);
  r.layout.n_layers = 1;
  r.layout.n_kv_heads = 1;
  r.layout.head_dim = 4;
  r.layout.block_tokens = 2;
  r.layout.dtype = mnemo::kernels::DType::kF16;
  if (n_tokens == 0) return r;
  r.tenant = "t";
  r.model_fingerprint = "fp";
  for (int t = 0; t < n_tokens; ++t) r.tokens.push_back(t * 3 + 1);
  r.kv_tokens = n_tokens - 1;
  r.turns = {{0, 0}, {2, 1}};
  r.messages = {{"user", "hi"}, {"assistant", "yo"}};
  r.rng_state = {1, 2, 3, 4};
  r.metadata = std::string("m\0d", 3);
  r.created_unix_us = 1;
  r.last_used_unix_us = 2;
  r.ttl_us = 1000;
  r.compaction_log = {{5, "p", {{0, 1}}, {{1, 2}}, -1}};
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string out = argv[1];
  const std::string scratch = out + "/.scratch";
  auto dir = StateDir::Open(scratch, {.fsync = false});
  if (!dir.ok()) return 1;
  bool ok = true;
  for (const int n_tokens : {0, 5}) {
    SessionRecord r = Record(static_cast<uint8_t>(n_tokens), n_tokens);
    const int n_blocks = (static_cast<int>(r.kv_tokens) + 1) / 2;
    const size_t block_bytes = static_cast<size_t>(r.layout.block_bytes());
    std::vector<std::vector<uint8_t>> payloads(n_blocks, std::vector<uint8_t>(block_bytes));
    for (int b = 0; b < n_blocks; ++b) {
      for (size_t i = 0; i < block_bytes; ++i) payloads[b][i] = static_cast<uint8_t>(b * 16 + i);
    }
    std::vector<std::span<const uint8_t>> spans(payloads.begin(), payloads.end());
    auto blocks = (*dir)->AppendBlocks(r.id, spans);
    if (!blocks.ok()) return 1;
    r.blocks = *blocks;
    if (!r.blocks.empty()) r.blocks[0].hash = {7, 8};
    if (!(*dir)->WriteManifest(r).ok()) return 1;
    auto manifest = mnemo::cache::SerializeManifest(r);
    if (!manifest.ok()) return 1;
    const std::string name = n_tokens == 0 ? "empty" : "full";
    ok &= Write(out + "/" + name + ".manifest", 0, *manifest);
    ok &=
        Write(out + "/" + name + ".body", 1, manifest->substr(mnemo::cache::kManifestHeaderBytes));
    const std::string bundle = scratch + "/bundle";
    if (!(*dir)->Export(r.id, bundle).ok()) return 1;
    std::ifstream in(bundle, std::ios::binary);
    ok &= Write(out + "/" + name + ".bundle", 2,
                std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()));
  }
  std::filesystem::remove_all(scratch);
  return ok ? 0 : 1;
}
