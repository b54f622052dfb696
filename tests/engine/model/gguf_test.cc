// GGUF reader and builder: round trips of every value type and tensor dtype, the typed
// getters, atomic writes, and the two real model files. Corrupt input: gguf_corrupt_test.cc.
#include "engine/model/gguf.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using kernels::DType;
using ::testing::HasSubstr;

using namespace std::string_literals;

std::string Name(const std::string& prefix, int i) { return prefix + std::to_string(i); }

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// One value of each of the 13 types, extremes included, plus arrays of each scalar type,
// empty arrays and arrays nested three levels deep.
std::vector<std::pair<std::string, GgufValue>> AllValueTypes() {
  using V = GgufValue;
  std::vector<std::pair<std::string, GgufValue>> kv = {
      {"t.u8", V::Uint(GgufType::kUint8, 255)},
      {"t.i8", V::Int(GgufType::kInt8, -128)},
      {"t.u16", V::Uint(GgufType::kUint16, 65535)},
      {"t.i16", V::Int(GgufType::kInt16, -32768)},
      {"t.u32", V::Uint(GgufType::kUint32, 4294967295u)},
      {"t.i32", V::Int(GgufType::kInt32, std::numeric_limits<int32_t>::min())},
      {"t.f32", V::Float(GgufType::kFloat32, 1e-5)},
      {"t.bool", V::Bool(true)},
      {"t.string", V::String("héllo, wörld \xe2\x96\x81 with a\0nul\0"s)},
      {"t.empty_string", V::String("")},
      {"t.u64", V::Uint(GgufType::kUint64, std::numeric_limits<uint64_t>::max())},
      {"t.i64", V::Int(GgufType::kInt64, std::numeric_limits<int64_t>::min())},
      {"t.f64", V::Float(GgufType::kFloat64, -3.141592653589793)},
      {"t.f32_inf", V::Float(GgufType::kFloat32, std::numeric_limits<float>::infinity())},
      {"ключ.unicode", V::Bool(false)},
  };
  const std::vector<std::pair<GgufType, GgufValue>> elems = {
      {GgufType::kUint8, V::Uint(GgufType::kUint8, 7)},
      {GgufType::kInt8, V::Int(GgufType::kInt8, -7)},
      {GgufType::kUint16, V::Uint(GgufType::kUint16, 700)},
      {GgufType::kInt16, V::Int(GgufType::kInt16, -700)},
      {GgufType::kUint32, V::Uint(GgufType::kUint32, 70000)},
      {GgufType::kInt32, V::Int(GgufType::kInt32, -70000)},
      {GgufType::kFloat32, V::Float(GgufType::kFloat32, 0.25)},
      {GgufType::kBool, V::Bool(true)},
      {GgufType::kString, V::String("x")},
      {GgufType::kUint64, V::Uint(GgufType::kUint64, uint64_t{1} << 40)},
      {GgufType::kInt64, V::Int(GgufType::kInt64, -(int64_t{1} << 40))},
      {GgufType::kFloat64, V::Float(GgufType::kFloat64, 1.0 / 3.0)},
  };
  for (const auto& [t, e] : elems) {
    kv.emplace_back(Name("arr.", static_cast<int>(t)), V::MakeArray(t, {e, e, e}));
    kv.emplace_back(Name("empty.", static_cast<int>(t)), V::MakeArray(t, {}));
  }
  GgufValue inner = V::MakeArray(GgufType::kString, {V::String("a"), V::String("bc")});
  GgufValue mid = V::MakeArray(GgufType::kArray, {inner, V::MakeArray(GgufType::kString, {})});
  kv.emplace_back("nested.3", V::MakeArray(GgufType::kArray, {mid, mid}));
  kv.emplace_back("nested.empty", V::MakeArray(GgufType::kArray, {}));
  return kv;
}

struct TensorSpec {
  std::string name;
  std::vector<int64_t> ne;
  DType dtype;
  std::vector<uint8_t> data;
};

// One tensor of every dtype, each with an awkward shape and random contents.
std::vector<TensorSpec> AllDTypeTensors() {
  std::vector<TensorSpec> out;
  for (int i = 0; i < kernels::kNumDTypes; ++i) {
    const auto dt = static_cast<DType>(i);
    const auto& info = kernels::GetDTypeInfo(dt);
    std::vector<int64_t> ne = {info.block_elems * (1 + i % 3), 3};
    if (i % 2 == 1) ne.push_back(2);
    if (i % 4 == 3) ne.push_back(1);
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    const uint64_t bytes = *kernels::DTypeBytes(dt, n);
    out.push_back({Name("tensor.", i), ne, dt, RandomBytes(bytes, 100 + i)});
  }
  return out;
}

GgufBuilder FullBuilder() {
  GgufBuilder b;
  for (auto& [k, v] : AllValueTypes()) b.Set(k, v);
  for (auto& t : AllDTypeTensors()) EXPECT_TRUE(b.AddTensor(t.name, t.ne, t.dtype, t.data).ok());
  return b;
}

void ExpectMatchesFull(const GgufFile& f) {
  const auto kv = AllValueTypes();
  ASSERT_EQ(f.metadata().size(), kv.size());
  for (size_t i = 0; i < kv.size(); ++i) {
    EXPECT_EQ(f.metadata()[i].first, kv[i].first);
    EXPECT_TRUE(f.metadata()[i].second == kv[i].second)
        << kv[i].first << ": " << f.metadata()[i].second.DebugString() << " vs "
        << kv[i].second.DebugString();
    EXPECT_EQ(f.Find(kv[i].first), &f.metadata()[i].second);
  }
  const auto specs = AllDTypeTensors();
  ASSERT_EQ(f.tensors().size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const GgufTensorInfo& t = f.tensors()[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, specs[i].name);
    EXPECT_EQ(t.ne, specs[i].ne);
    EXPECT_EQ(t.dtype, specs[i].dtype);
    EXPECT_EQ(t.ggml_type, GgmlTypeFromDType(specs[i].dtype));
    EXPECT_EQ(t.bytes, specs[i].data.size());
    EXPECT_EQ(t.offset % f.alignment(), 0u);
    EXPECT_EQ((f.data_offset() + t.offset) % f.alignment(), 0u);
    ASSERT_NE(t.data, nullptr);
    EXPECT_EQ(std::memcmp(t.data, specs[i].data.data(), t.bytes), 0);
    EXPECT_EQ(f.FindTensor(t.name), &t);
  }
  EXPECT_EQ(f.FindTensor("no.such.tensor"), nullptr);
  EXPECT_EQ(f.Find("no.such.key"), nullptr);
}

TEST(GgufRoundTrip, EveryValueTypeAndDType) {
  const std::vector<uint8_t> bytes = FullBuilder().Serialize();
  auto f = GgufFile::FromBytes(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 3u);
  EXPECT_EQ((*f)->alignment(), 32u);
  EXPECT_EQ((*f)->file_size(), bytes.size());
  EXPECT_EQ((*f)->data_offset() % 32, 0u);
  EXPECT_TRUE((*f)->path().empty());
  ExpectMatchesFull(**f);
  // The builder writes the same bytes from the same input.
  EXPECT_EQ(FullBuilder().Serialize(), bytes);
}

TEST(GgufRoundTrip, NestedArrayStructure) {
  auto f = GgufFile::FromBytes(FullBuilder().Serialize());
  ASSERT_TRUE(f.ok()) << f.status();
  auto outer = (*f)->GetArray("nested.3");
  ASSERT_TRUE(outer.ok());
  ASSERT_EQ((*outer)->size(), 2u);
  const GgufValue& mid = (**outer)[1];
  EXPECT_EQ(mid.type(), GgufType::kArray);
  EXPECT_EQ(mid.array_type(), GgufType::kArray);
  const GgufValue& inner = (*mid.AsArray())[0];
  EXPECT_EQ(inner.array_type(), GgufType::kString);
  EXPECT_EQ(*(*inner.AsArray())[1].AsString(), "bc");
  EXPECT_TRUE((*mid.AsArray())[1].AsArray()->empty());
  EXPECT_EQ(mid.DebugString(), "[[\"a\", \"bc\"], []]");
}

TEST(GgufRoundTrip, WriteFileThenOpen) {
  const std::string dir = testing::MakeTempDir();
  const std::string path = dir + "/model.gguf";
  GgufBuilder b = FullBuilder();
  ASSERT_TRUE(b.WriteFile(path).ok());
  // Overwriting is atomic too, and leaves no temporary file behind.
  ASSERT_TRUE(b.WriteFile(path).ok());
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  EXPECT_EQ(names, std::vector<std::string>{"model.gguf"});
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->path(), path);
  EXPECT_EQ((*f)->file_size(), std::filesystem::file_size(path));
  ExpectMatchesFull(**f);
}

TEST(GgufRoundTrip, WriteFileIntoMissingDirectoryFails) {
  GgufBuilder b;
  absl::Status st = b.WriteFile(testing::MakeTempDir() + "/no/such/dir/x.gguf");
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr("x.gguf"));
}

TEST(GgufRoundTrip, EmptyFile) {
  GgufBuilder b;
  const auto bytes = b.Serialize();
  EXPECT_EQ(bytes.size(), 32u);  // 24-byte header padded to the alignment
  auto f = GgufFile::FromBytes(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE((*f)->metadata().empty());
  EXPECT_TRUE((*f)->tensors().empty());
  // A tensor-less file may also end right after its header, unpadded.
  auto g = GgufFile::FromBytes(std::span(bytes).first(24));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ((*g)->data_offset(), 24u);
}

TEST(GgufRoundTrip, AlignmentKeyIsHonoured) {
  for (uint32_t align : {1u, 8u, 64u, 4096u}) {
    SCOPED_TRACE(align);
    GgufBuilder b;
    b.SetU32("general.alignment", align);
    ASSERT_TRUE(b.AddTensor("a", {3}, DType::kF32, RandomBytes(12, 1)).ok());
    ASSERT_TRUE(b.AddTensor("b", {5}, DType::kI8, RandomBytes(5, 2)).ok());
    ASSERT_TRUE(b.AddTensor("c", {32}, DType::kQ8_0, RandomBytes(34, 3)).ok());
    auto f = GgufFile::FromBytes(b.Serialize());
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ((*f)->alignment(), align);
    EXPECT_EQ((*f)->data_offset() % align, 0u);
    for (const auto& t : (*f)->tensors()) EXPECT_EQ(t.offset % align, 0u) << t.name;
    if (align == 1) {
      EXPECT_EQ((*f)->FindTensor("c")->offset, 17u);  // packed: 12 + 5
    }
  }
}

TEST(GgufBuilderTest, SetReplacesInPlace) {
  GgufBuilder b;
  b.SetString("a", "one");
  b.SetU32("b", 2);
  b.SetI32("a", -1);
  b.SetF32("c", 1.5f);
  b.SetBool("d", true);
  b.SetStringArray("e", {"x", "y"});
  b.SetF32Array("f", {0.5f, -2.0f});
  b.SetI32Array("g", {1, -2, 3});
  auto f = GgufFile::FromBytes(b.Serialize());
  ASSERT_TRUE(f.ok()) << f.status();
  const auto& md = (*f)->metadata();
  ASSERT_EQ(md.size(), 7u);
  EXPECT_EQ(md[0].first, "a");
  EXPECT_EQ(md[0].second.type(), GgufType::kInt32);
  EXPECT_EQ(*(*f)->GetInt("a"), -1);
  EXPECT_EQ(*(*f)->GetInt("b"), 2);
  EXPECT_EQ(*(*f)->GetFloat("c"), 1.5);
  EXPECT_EQ(*(*f)->GetBool("d"), true);
  EXPECT_EQ(md[4].second.DebugString(), "[\"x\", \"y\"]");
  EXPECT_EQ(md[5].second.DebugString(), "[0.5, -2]");
  EXPECT_EQ(md[6].second.DebugString(1), "[1, ... (3 total)]");
}

TEST(GgufBuilderTest, AddTensorValidates) {
  GgufBuilder b;
  ASSERT_TRUE(b.AddTensor("w", {32, 2}, DType::kQ4_0, std::vector<uint8_t>(36)).ok());
  auto expect_error = [&](absl::Status st, const char* what) {
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_THAT(std::string(st.message()), HasSubstr(what));
  };
  expect_error(b.AddTensor("w", {4}, DType::kF32, std::vector<uint8_t>(16)), "duplicate");
  expect_error(b.AddTensor("", {4}, DType::kF32, std::vector<uint8_t>(16)), "empty");
  expect_error(b.AddTensor("x", {4}, DType::kF32, std::vector<uint8_t>(15)), "needs 16");
  expect_error(b.AddTensor("x", {16}, DType::kQ4_0, std::vector<uint8_t>(9)), "row length");
  expect_error(b.AddTensor("x", {4, 0}, DType::kF32, {}), "ne[1] = 0");
  expect_error(b.AddTensor("x", {}, DType::kF32, {}), "0 dimensions");
  expect_error(b.AddTensor("x", {1, 1, 1, 1, 1}, DType::kF32, std::vector<uint8_t>(4)),
               "5 dimensions");
  expect_error(b.AddTensor("x", {int64_t{1} << 62, 8}, DType::kF32, {}), "overflows");
}

TEST(GgufValueTest, TypedViews) {
  using V = GgufValue;
  EXPECT_EQ(V::Uint(GgufType::kUint32, 7).AsInt(), 7);
  EXPECT_EQ(V::Uint(GgufType::kUint64, ~uint64_t{0}).AsInt(), std::nullopt);
  EXPECT_EQ(V::Uint(GgufType::kUint64, ~uint64_t{0}).AsUint(), ~uint64_t{0});
  EXPECT_EQ(V::Int(GgufType::kInt8, -3).AsInt(), -3);
  EXPECT_EQ(V::Int(GgufType::kInt8, -3).AsUint(), std::nullopt);
  EXPECT_EQ(V::Int(GgufType::kInt16, 3).AsUint(), 3u);
  EXPECT_EQ(V::Int(GgufType::kInt16, 3).AsFloat(), 3.0);
  EXPECT_EQ(V::Float(GgufType::kFloat64, 2.5).AsFloat(), 2.5);
  EXPECT_EQ(V::Float(GgufType::kFloat64, 2.5).AsInt(), std::nullopt);
  EXPECT_EQ(V::Float(GgufType::kFloat32, 0.1).AsFloat(), static_cast<double>(0.1f));
  EXPECT_EQ(V::Bool(true).AsBool(), true);
  EXPECT_EQ(V::Bool(true).AsInt(), std::nullopt);
  EXPECT_EQ(V::Uint(GgufType::kUint8, 1).AsBool(), std::nullopt);
  EXPECT_EQ(V::String("s").AsInt(), std::nullopt);
  EXPECT_EQ(*V::String("s").AsString(), "s");
  EXPECT_EQ(V::String("s").AsArray(), nullptr);
  EXPECT_EQ(V::Bool(false).AsString(), nullptr);
  EXPECT_FALSE(V::Uint(GgufType::kUint32, 1) == V::Uint(GgufType::kUint64, 1));
  EXPECT_EQ(V::String("a\nb").DebugString(), "\"a\\nb\"");
  EXPECT_THAT(V::String(std::string(500, 'z')).DebugString(), HasSubstr("(500 bytes)"));
}

TEST(GgufFileTest, TypedGettersNameKeyAndTypes) {
  GgufBuilder b;
  b.SetString("s", "text");
  b.SetU32("u", 9);
  b.Set("big", GgufValue::Uint(GgufType::kUint64, ~uint64_t{0}));
  b.SetI32Array("arr", {1});
  auto f = GgufFile::FromBytes(b.Serialize());
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(*g.GetString("s"), "text");
  EXPECT_EQ(*g.GetInt("u"), 9);
  EXPECT_EQ(*g.GetFloat("u"), 9.0);
  EXPECT_EQ((*g.GetArray("arr"))->size(), 1u);

  EXPECT_EQ(g.GetString("missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(g.GetString("missing").status().message()), HasSubstr("'missing'"));
  absl::Status st = g.GetBool("u").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("'u' is uint32, expected bool"));
  st = g.GetString("arr").status();
  EXPECT_THAT(std::string(st.message()), HasSubstr("'arr' is array of int32, expected string"));
  st = g.GetInt("big").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("does not fit int64"));
  EXPECT_EQ(g.GetFloat("s").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(g.GetArray("s").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GgufFileTest, OpenErrors) {
  auto missing = GgufFile::Open("/nonexistent/dir/model.gguf");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/nonexistent/dir/model.gguf"));
  const std::string dir = testing::MakeTempDir();
  EXPECT_EQ(GgufFile::Open(dir).status().code(), absl::StatusCode::kInvalidArgument);
  // An empty file is a clean error, not a failed mmap.
  const std::string empty = dir + "/empty.gguf";
  std::FILE* fp = std::fopen(empty.c_str(), "w");
  ASSERT_NE(fp, nullptr);
  std::fclose(fp);
  auto e = GgufFile::Open(empty);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(e.status().message()), HasSubstr(empty + ": header at byte 0: magic"));
}

TEST(GgmlTypes, MappingIsConsistent) {
  for (int i = 0; i < kernels::kNumDTypes; ++i) {
    const auto dt = static_cast<DType>(i);
    const uint32_t id = GgmlTypeFromDType(dt);
    EXPECT_EQ(DTypeFromGgml(id), dt) << id;
    // ggml spells the K-quants with a capital K; otherwise the names agree.
    std::string name(GgmlTypeName(id));
    for (char& c : name) c = static_cast<char>(std::tolower(c));
    EXPECT_EQ(name, kernels::DTypeName(dt));
  }
  const std::map<uint32_t, DType> expected = {
      {0, DType::kF32},  {1, DType::kF16},   {2, DType::kQ4_0},  {3, DType::kQ4_1},
      {8, DType::kQ8_0}, {12, DType::kQ4_K}, {13, DType::kQ5_K}, {14, DType::kQ6_K},
      {24, DType::kI8},  {25, DType::kI16},  {26, DType::kI32},  {27, DType::kI64},
      {28, DType::kF64}, {30, DType::kBF16}};
  for (uint32_t id = 0; id < 64; ++id) {
    auto it = expected.find(id);
    EXPECT_EQ(DTypeFromGgml(id), it == expected.end() ? std::nullopt : std::optional(it->second))
        << id;
  }
  EXPECT_EQ(GgmlTypeName(12), "q4_K");
  EXPECT_EQ(GgmlTypeName(16), "iq2_xxs");
  EXPECT_EQ(GgmlTypeName(39), "mxfp4");
  EXPECT_EQ(GgmlTypeName(40), "unknown");
  EXPECT_EQ(GgufTypeName(GgufType::kFloat64), "float64");
}

// ---- the real model files ----

TEST(GgufRealModel, Stories260K) {
  const std::string path = testing::StoriesGgufPath();
  MNEMO_REQUIRE_FILE(path);
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.file_size(), 1185376u);
  EXPECT_EQ(g.metadata().size(), 19u);
  EXPECT_EQ(g.tensors().size(), 48u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(*g.GetString("general.architecture"), "llama");
  EXPECT_EQ(*g.GetInt("llama.block_count"), 5);
  EXPECT_EQ(*g.GetInt("llama.embedding_length"), 64);
  EXPECT_EQ(*g.GetInt("llama.attention.head_count"), 8);
  EXPECT_EQ(*g.GetInt("llama.attention.head_count_kv"), 4);
  EXPECT_EQ(*g.GetString("tokenizer.ggml.model"), "llama");
  auto tokens = g.GetArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok());
  ASSERT_EQ((*tokens)->size(), 512u);
  EXPECT_EQ(*(**tokens)[1].AsString(), "<s>");
  EXPECT_EQ(*(**tokens)[3].AsString(), "<0x00>");
  const GgufTensorInfo* emb = g.FindTensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->ne, (std::vector<int64_t>{64, 512}));
  EXPECT_EQ(emb->dtype, DType::kF32);
  EXPECT_EQ(emb->bytes, 64u * 512 * 4);
  int64_t params = 0;
  for (const auto& t : g.tensors()) {
    EXPECT_EQ(t.dtype, DType::kF32) << t.name;
    EXPECT_LE(g.data_offset() + t.offset + t.bytes, g.file_size()) << t.name;
    params += t.n_elements;
  }
  EXPECT_EQ(params, 292800);
  // The weights are trained values, not zeros.
  float first = 0;
  std::memcpy(&first, emb->data, sizeof(first));
  EXPECT_TRUE(std::isfinite(first));
  EXPECT_NE(first, 0.0f);
}

TEST(GgufRealModel, SmolLm2Q4_1) {
  const std::string path = testing::SmolLm2GgufPath();
  MNEMO_REQUIRE_FILE(path);
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.metadata().size(), 33u);
  EXPECT_EQ(g.tensors().size(), 272u);
  std::map<DType, int> by_dtype;
  for (const auto& t : g.tensors()) ++by_dtype[t.dtype];
  EXPECT_EQ(by_dtype[DType::kQ4_1], 210);
  EXPECT_EQ(by_dtype[DType::kF32], 61);
  EXPECT_EQ(by_dtype[DType::kQ8_0], 1);
  const GgufTensorInfo* emb = g.FindTensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->dtype, DType::kQ8_0);
  EXPECT_EQ(emb->ne, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(emb->bytes, 576u / 32 * 34 * 49152);
  EXPECT_EQ(*g.GetString("general.architecture"), "llama");
  EXPECT_EQ(*g.GetInt("llama.block_count"), 30);
  EXPECT_EQ(*g.GetInt("llama.embedding_length"), 576);
  EXPECT_EQ(*g.GetInt("llama.attention.head_count"), 9);
  EXPECT_EQ(*g.GetInt("llama.attention.head_count_kv"), 3);
  EXPECT_EQ(*g.GetString("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(*g.GetString("tokenizer.ggml.pre"), "smollm");
  EXPECT_EQ((*g.GetArray("tokenizer.ggml.tokens"))->size(), 49152u);
  EXPECT_EQ((*g.GetArray("tokenizer.ggml.merges"))->size(), 48900u);
}

}  // namespace
}  // namespace mnemo::engine
