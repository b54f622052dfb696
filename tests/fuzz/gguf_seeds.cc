// Writes the seed corpus of the GGUF fuzz target (tests/fuzz/corpus/gguf/): small files
// built with GgufBuilder covering every value type, nested arrays, every tensor dtype,
// alignments and both versions, plus real metadata from stories260K.gguf when it is given.
// Usage: gguf_seeds OUT_DIR [stories260K.gguf]   (run by `tools/fuzz.sh --seeds gguf`)
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/model/gguf.h"

namespace {

using mnemo::engine::GgufBuilder;
using mnemo::engine::GgufFile;
using mnemo::engine::GgufType;
using mnemo::engine::GgufValue;
using mnemo::kernels::DType;

constexpr size_t kMaxSeedBytes = 64 * 1024;

bool Write(const std::string& dir, const std::string& name, const std::vector<uint8_t>& b) {
  if (b.size() >= kMaxSeedBytes) {
    std::fprintf(stderr, "seed %s is %zu bytes, over the %zu limit\n", name.c_str(), b.size(),
                 kMaxSeedBytes);
    return false;
  }
  const std::string path = dir + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  const bool ok = std::fwrite(b.data(), 1, b.size(), f) == b.size();
  return std::fclose(f) == 0 && ok;
}

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 37);
  return v;
}

GgufValue Scalar(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kUint16:
    case GgufType::kUint32:
    case GgufType::kUint64:
      return GgufValue::Uint(t, 100);
    case GgufType::kInt8:
    case GgufType::kInt16:
    case GgufType::kInt32:
    case GgufType::kInt64:
      return GgufValue::Int(t, -100);
    case GgufType::kFloat32:
    case GgufType::kFloat64:
      return GgufValue::Float(t, 0.5);
    case GgufType::kBool:
      return GgufValue::Bool(true);
    case GgufType::kString:
      return GgufValue::String("seed");
    case GgufType::kArray:
      break;
  }
  return GgufValue::MakeArray(GgufType::kUint8, {Scalar(GgufType::kUint8)});
}

GgufBuilder AllValues() {
  GgufBuilder b;
  b.SetString("general.architecture", "llama");
  for (uint32_t t = 0; t < 13; ++t) {
    const auto type = static_cast<GgufType>(t);
    b.Set("scalar." + std::to_string(t), Scalar(type));
    if (type != GgufType::kArray) {
      b.Set("array." + std::to_string(t), GgufValue::MakeArray(type, {Scalar(type), Scalar(type)}));
    }
  }
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR [stories260K.gguf]\n", argv[0]);
    return 2;
  }
  const std::string out = argv[1];
  bool ok = true;

  ok &= Write(out, "empty.gguf", GgufBuilder().Serialize());
  ok &= Write(out, "values.gguf", AllValues().Serialize());

  GgufBuilder nested;
  GgufValue v = GgufValue::MakeArray(GgufType::kString, {GgufValue::String("x")});
  for (int i = 0; i < 7; ++i) v = GgufValue::MakeArray(GgufType::kArray, {v, v});
  nested.Set("nested", v);
  ok &= Write(out, "nested.gguf", nested.Serialize());

  GgufBuilder tensors;
  tensors.SetU32("general.alignment", 32);
  for (int i = 0; i < mnemo::kernels::kNumDTypes; ++i) {
    const auto dt = static_cast<DType>(i);
    const auto& info = mnemo::kernels::GetDTypeInfo(dt);
    const std::vector<int64_t> ne = {info.block_elems, 2};
    const auto bytes = *mnemo::kernels::DTypeBytes(dt, 2 * info.block_elems);
    ok &= tensors.AddTensor("t." + std::string(info.name), ne, dt, Pattern(bytes, 1)).ok();
  }
  ok &= Write(out, "dtypes.gguf", tensors.Serialize());

  GgufBuilder aligned = AllValues();
  aligned.SetU32("general.alignment", 8);
  ok &= aligned.AddTensor("a", {3, 1, 1, 2}, DType::kF16, Pattern(12, 2)).ok();
  ok &= aligned.AddTensor("b", {32}, DType::kQ4_1, Pattern(20, 3)).ok();
  ok &= Write(out, "align8.gguf", aligned.Serialize());

  // Version 2 differs from 3 only in the version field.
  GgufBuilder small;
  small.SetStringArray("tokenizer.ggml.tokens", {"<s>", "</s>",
                                                 "\xe2\x96\x81"
                                                 "a",
                                                 "b"});
  small.SetF32Array("tokenizer.ggml.scores", {0, 0, -1.5f, -2});
  small.SetI32Array("tokenizer.ggml.token_type", {3, 3, 1, 1});
  ok &= small.AddTensor("token_embd.weight", {4, 4}, DType::kF32, Pattern(64, 4)).ok();
  std::vector<uint8_t> v2 = small.Serialize();
  ok &= Write(out, "tokenizer_v3.gguf", v2);
  v2[4] = 2;
  ok &= Write(out, "tokenizer_v2.gguf", v2);

  if (argc > 2) {
    // Real metadata (a 512-token SentencePiece vocabulary) with the tensors shrunk, and the
    // real file's head cut inside the first tensor's data.
    auto stories = GgufFile::Open(argv[2]);
    if (!stories.ok()) {
      std::fprintf(stderr, "%s\n", std::string(stories.status().message()).c_str());
      return 1;
    }
    GgufBuilder real;
    for (const auto& [key, value] : (*stories)->metadata()) real.Set(key, value);
    ok &= real.AddTensor("token_embd.weight", {8, 2}, DType::kF32, Pattern(64, 5)).ok();
    ok &= real.AddTensor("output_norm.weight", {8}, DType::kF32, Pattern(32, 6)).ok();
    ok &= Write(out, "stories_metadata.gguf", real.Serialize());
    std::FILE* f = std::fopen(argv[2], "rb");
    std::vector<uint8_t> head(16 * 1024);
    ok &= f != nullptr && std::fread(head.data(), 1, head.size(), f) == head.size();
    if (f != nullptr) std::fclose(f);
    ok &= Write(out, "stories_head16k.gguf", head);
  }
  return ok ? 0 : 1;
}
