// GGUF reader on corrupt and hostile input: every truncation point, hand-crafted bad fields,
// and seeded random byte flips. Each case must give InvalidArgument naming the field (or,
// for flips, parse cleanly) and never read out of bounds (run under ASan+UBSan too).
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "engine/model/gguf.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using kernels::DType;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Writes raw GGUF fields, so that tests can produce what the builder never would.
class Raw {
 public:
  Raw& U8(uint8_t v) { return Put(v); }
  Raw& U32(uint32_t v) { return Put(v); }
  Raw& U64(uint64_t v) { return Put(v); }
  Raw& Str(const std::string& s) {
    U64(s.size());
    b_.insert(b_.end(), s.begin(), s.end());
    return *this;
  }
  Raw& Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    return Bytes("GGUF").U32(version).U64(n_tensors).U64(n_kv);
  }
  Raw& KvU32(const std::string& key, uint32_t v) { return Str(key).U32(4).U32(v); }
  Raw& TensorInfo(const std::string& name, const std::vector<uint64_t>& ne, uint32_t type,
                  uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(ne.size()));
    for (uint64_t n : ne) U64(n);
    return U32(type).U64(offset);
  }
  Raw& PadTo(size_t align) {
    b_.resize((b_.size() + align - 1) / align * align, 0);
    return *this;
  }
  Raw& Zeros(size_t n) {
    b_.resize(b_.size() + n, 0);
    return *this;
  }
  Raw& Bytes(const std::string& s) {
    b_.insert(b_.end(), s.begin(), s.end());
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return b_; }

 private:
  template <typename T>
  Raw& Put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b_.insert(b_.end(), p, p + sizeof(T));
    return *this;
  }
  std::vector<uint8_t> b_;
};

// Parses `bytes` and expects InvalidArgument whose message contains every one of `parts`.
void ExpectError(const std::vector<uint8_t>& bytes, const std::vector<std::string>& parts) {
  auto f = GgufFile::FromBytes(bytes);
  ASSERT_FALSE(f.ok()) << "parsed, but expected an error with: " << parts[0];
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  const std::string msg(f.status().message());
  EXPECT_THAT(msg, StartsWith("gguf: "));
  for (const std::string& p : parts) EXPECT_THAT(msg, HasSubstr(p));
}

// Reads every value and every tensor byte (ASan flags anything outside the buffer).
uint64_t TouchEverything(const GgufFile& f) {
  uint64_t h = 0;
  std::vector<const GgufValue*> stack;
  for (const auto& [k, v] : f.metadata()) {
    h += k.size() + f.Find(k)->DebugString(2).size();
    stack.push_back(&v);
  }
  while (!stack.empty()) {
    const GgufValue* v = stack.back();
    stack.pop_back();
    h += static_cast<uint64_t>(v->AsInt().value_or(1));
    if (const std::string* s = v->AsString()) h += s->size();
    if (const auto* a = v->AsArray()) {
      for (const GgufValue& e : *a) stack.push_back(&e);
    }
  }
  for (const auto& t : f.tensors()) {
    EXPECT_EQ(f.FindTensor(t.name), &t);
    for (uint64_t i = 0; i < t.bytes; ++i) h += t.data[i];
  }
  return h;
}

// A small file with a bit of everything: scalar, string, nested array, 3 tensors.
std::vector<uint8_t> SmallFile() {
  GgufBuilder b;
  b.SetString("general.architecture", "llama");
  b.SetU32("llama.block_count", 2);
  b.SetStringArray("tokenizer.ggml.tokens", {"<s>", "a", "bc"});
  b.Set("nested", GgufValue::MakeArray(
                      GgufType::kArray,
                      {GgufValue::MakeArray(GgufType::kInt8, {GgufValue::Int(GgufType::kInt8, 1)}),
                       GgufValue::MakeArray(GgufType::kInt8, {})}));
  b.SetBool("flag", true);
  std::vector<uint8_t> d1(4 * 5), d2(34 * 2), d3(2 * 3);
  for (size_t i = 0; i < d1.size(); ++i) d1[i] = static_cast<uint8_t>(i * 7 + 1);
  EXPECT_TRUE(b.AddTensor("a", {5}, DType::kF32, d1).ok());
  EXPECT_TRUE(b.AddTensor("blk.0.q", {32, 2}, DType::kQ8_0, d2).ok());
  EXPECT_TRUE(b.AddTensor("c", {3}, DType::kF16, d3).ok());
  return b.Serialize();
}

TEST(GgufCorrupt, EveryTruncationPoint) {
  const std::vector<uint8_t> full = SmallFile();
  auto parsed = GgufFile::FromBytes(full);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  uint64_t data_end = 0;
  for (const auto& t : (*parsed)->tensors()) {
    data_end = std::max(data_end, (*parsed)->data_offset() + t.offset + t.bytes);
  }
  int errors = 0;
  for (size_t n = 0; n < full.size(); ++n) {
    // A fresh heap copy of exactly n bytes: ASan sees any read past the end.
    std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
    auto f = GgufFile::FromBytes(cut);
    if (n < data_end) {
      ASSERT_FALSE(f.ok()) << "truncated to " << n << " bytes but parsed";
      ASSERT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
      ASSERT_THAT(std::string(f.status().message()), StartsWith("gguf: ")) << n;
      ++errors;
    } else {
      // Only the padding after the last tensor is missing: still a complete file.
      ASSERT_TRUE(f.ok()) << n << ": " << f.status();
    }
  }
  EXPECT_EQ(errors, static_cast<int>(data_end));
  // Truncations name what they hit.
  ExpectError(std::vector<uint8_t>(full.begin(), full.begin() + 2), {"magic"});
  ExpectError(std::vector<uint8_t>(full.begin(), full.begin() + 6), {"version"});
  ExpectError(std::vector<uint8_t>(full.begin(), full.begin() + 12), {"tensor count"});
  ExpectError(std::vector<uint8_t>(full.begin(), full.begin() + 20), {"metadata count"});
}

TEST(GgufCorrupt, TruncationThroughOpenNamesThePath) {
  const std::vector<uint8_t> full = SmallFile();
  const std::string path = testing::MakeTempDir() + "/cut.gguf";
  std::FILE* fp = std::fopen(path.c_str(), "wb");
  ASSERT_NE(fp, nullptr);
  ASSERT_EQ(std::fwrite(full.data(), 1, full.size() - 40, fp), full.size() - 40);
  std::fclose(fp);
  auto f = GgufFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(f.status().message()), StartsWith("gguf: " + path + ": tensor '"));
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("extends past end of file"));
}

TEST(GgufCorrupt, BadMagicAndVersion) {
  auto bytes = SmallFile();
  bytes[0] = 'G', bytes[1] = 'G', bytes[2] = 'M', bytes[3] = 'L';
  ExpectError(bytes, {"header at byte 0", "bad magic \"GGML\""});
  ExpectError(Raw().Header(0, 0, 1).bytes(), {"at byte 4", "version 1 is not supported"});
  ExpectError(Raw().Header(0, 0, 4).bytes(), {"unsupported version 4"});
  ExpectError(Raw().Header(0, 0, 0x03000000).bytes(), {"big-endian"});
  EXPECT_TRUE(GgufFile::FromBytes(Raw().Header(0, 0, 2).bytes()).ok());
  EXPECT_EQ((*GgufFile::FromBytes(Raw().Header(0, 0, 2).bytes()))->version(), 2u);
}

TEST(GgufCorrupt, HugeCountsAndLengths) {
  ExpectError(Raw().Header(0, uint64_t{1} << 60).bytes(), {"metadata count 1152921504606846976"});
  ExpectError(Raw().Header(~uint64_t{0}, 0).bytes(), {"tensor count 18446744073709551615"});
  // Counts that pass the header check but not the one after the metadata.
  ExpectError(Raw().Header(1, 1).KvU32("k", 1).Zeros(20).bytes(),
              {"tensor count 1", "after the metadata"});
  ExpectError(Raw().Header(0, 1).U64(9999999).Zeros(20).bytes(),
              {"metadata key #0 at byte 24", "key length 9999999 exceeds remaining 20 bytes"});
  ExpectError(Raw().Header(0, 1).Str("k").U32(8).U64(~uint64_t{0}).Zeros(8).bytes(),
              {"metadata 'k' (#0) at byte 37", "string length 18446744073709551615"});
  ExpectError(Raw().Header(0, 1).Str("k").U32(9).U32(4).U64(1000).Zeros(100).bytes(),
              {"metadata 'k' (#0) at byte 41", "array count 1000", "uint32 takes at least 4"});
  ExpectError(Raw().Header(0, 1).Str("k").U32(9).U32(9).U64(uint64_t{1} << 61).bytes(),
              {"array count 2305843009213693952"});
  // Strings inside arrays name their element.
  ExpectError(Raw().Header(0, 1).Str("toks").U32(9).U32(8).U64(2).Str("ok").U64(50).bytes(),
              {"metadata 'toks' (#0)", "array element [1]", "string length 50"});
  ExpectError(Raw().Header(1, 0).Str("tensor.with.long.name").U32(1).U64(1).bytes(),
              {"tensor 'tensor.with.long.name' (#0)", "ggml type needs 4 bytes"});
}

TEST(GgufCorrupt, BadValues) {
  ExpectError(Raw().Header(0, 1).Str("k").U32(13).U32(0).bytes(),
              {"metadata 'k' (#0) at byte 33", "value type 13 is not a GGUF type"});
  ExpectError(Raw().Header(0, 1).Str("k").U32(9).U32(77).U64(0).bytes(), {"array element type 77"});
  ExpectError(Raw().Header(0, 1).Str("k").U32(7).U8(2).Zeros(8).bytes(),
              {"bool value 2 is neither 0 nor 1"});
  ExpectError(Raw().Header(0, 1).Str("").U32(4).U32(0).bytes(), {"key is empty"});
  ExpectError(Raw().Header(0, 1).Str("bad\xff").U32(4).U32(0).bytes(),
              {"metadata key #0", "not valid UTF-8"});
  ExpectError(Raw().Header(0, 1).Str("ov\xc0\xaf").U32(4).U32(0).bytes(), {"not valid UTF-8"});
  ExpectError(Raw().Header(0, 1).Str(std::string("a\0b", 3)).U32(4).U32(0).bytes(), {"NUL byte"});
  ExpectError(Raw().Header(0, 3).KvU32("k", 1).KvU32("j", 2).KvU32("k", 3).bytes(),
              {"metadata 'k' (#2) at byte 58", "duplicate key (first defined by #0)"});
}

TEST(GgufCorrupt, Alignment) {
  ExpectError(Raw().Header(0, 1).KvU32("general.alignment", 33).bytes(),
              {"metadata 'general.alignment' (#0)", "alignment 33 is not a non-zero power of two"});
  ExpectError(Raw().Header(0, 1).KvU32("general.alignment", 0).bytes(), {"alignment 0"});
  ExpectError(Raw().Header(0, 1).Str("general.alignment").U32(8).Str("32").bytes(),
              {"type string, expected an unsigned integer"});
  ExpectError(Raw().Header(0, 1).Str("general.alignment").U32(5).U32(~0u).bytes(),
              {"type int32, expected an unsigned integer"});
  // A valid non-default alignment is used for the offsets and the data section.
  Raw ok;
  ok.Header(1, 1).KvU32("general.alignment", 64).TensorInfo("t", {16}, 0, 0).PadTo(64).Zeros(64);
  auto f = GgufFile::FromBytes(ok.bytes());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->alignment(), 64u);
  EXPECT_EQ((*f)->data_offset(), 128u);
}

TEST(GgufCorrupt, TensorInfoFields) {
  auto one = [](const std::vector<uint64_t>& ne, uint32_t type, uint64_t offset = 0) {
    return Raw()
        .Header(1, 0)
        .TensorInfo("blk.0.attn_q.weight", ne, type, offset)
        .PadTo(32)
        .Zeros(4096)
        .bytes();
  };
  EXPECT_TRUE(GgufFile::FromBytes(one({4, 4}, 0)).ok());
  ExpectError(one({}, 0),
              {"tensor 'blk.0.attn_q.weight' (#0) at byte 51", "n_dims 0 is outside 1..4"});
  ExpectError(one({1, 1, 1, 1, 1}, 0), {"n_dims 5"});
  ExpectError(one({4, 0}, 0), {"at byte 63", "ne[1] = 0 is not in 1..2^63-1"});
  ExpectError(one({uint64_t{1} << 63}, 0), {"ne[0] = 9223372036854775808"});
  ExpectError(one({uint64_t{1} << 32, uint64_t{1} << 32}, 0),
              {"element count overflows int64 at ne[1]"});
  ExpectError(one({uint64_t{1} << 61, 2}, 26), {"byte size", "overflows"});
  ExpectError(one({4}, 99), {"unknown ggml type 99"});
  ExpectError(one({256}, 16), {"ggml type 16 (iq2_xxs) is not supported"});
  ExpectError(one({256}, 4), {"ggml type 4 (q4_2)"});
  ExpectError(one({48, 2}, 2),
              {"row length ne[0] = 48 is not a multiple of the q4_0 block size 32"});
  ExpectError(one({4}, 0, 16), {"data offset 16 is not a multiple of the alignment 32"});
  ExpectError(one({4}, 0, 4096),
              {"tensor 'blk.0.attn_q.weight' (#0): data [offset 4096, 16 bytes] extends past end "
               "of file"});
  ExpectError(one({1024, 2}, 0), {"data [offset 0, 8192 bytes] extends past end of file"});
  ExpectError(one({4}, 0, ~uint64_t{0} - 31), {"extends past end of file"});
  ExpectError(Raw().Header(1, 0).TensorInfo("", {4}, 0, 0).Zeros(64).bytes(),
              {"tensor #0 at byte 24", "name is empty"});
}

TEST(GgufCorrupt, DuplicateAndOverlappingTensors) {
  ExpectError(Raw()
                  .Header(2, 0)
                  .TensorInfo("w", {4}, 0, 0)
                  .TensorInfo("w", {4}, 0, 32)
                  .PadTo(32)
                  .Zeros(64)
                  .bytes(),
              {"tensor 'w' (#1)", "duplicate tensor name (first defined by #0)"});
  // b starts inside a (listed out of order to check the sort).
  ExpectError(Raw()
                  .Header(3, 0)
                  .TensorInfo("c", {4}, 0, 128)
                  .TensorInfo("b", {4}, 0, 32)
                  .TensorInfo("a", {16}, 0, 0)
                  .PadTo(32)
                  .Zeros(256)
                  .bytes(),
              {"tensor 'b' (#1): data [offset 32, 16 bytes] overlaps tensor 'a' (#2)"});
  // Touching but not overlapping is fine.
  EXPECT_TRUE(GgufFile::FromBytes(Raw()
                                      .Header(2, 0)
                                      .TensorInfo("a", {8}, 0, 0)
                                      .TensorInfo("b", {8}, 0, 32)
                                      .PadTo(32)
                                      .Zeros(64)
                                      .bytes())
                  .ok());
  // Tensors with no room at all for the data section.
  ExpectError(Raw().Header(1, 0).TensorInfo("a", {8}, 0, 0).bytes(),
              {"the data section would start at byte 64", "past the end of the file"});
}

// `depth` arrays nested inside each other, the innermost holding one u8.
std::vector<uint8_t> Nested(int depth) {
  Raw r;
  r.Header(0, 1).Str("deep").U32(9);
  for (int i = 0; i < depth - 1; ++i) r.U32(9).U64(1);
  r.U32(0).U64(1).U8(42);
  return r.bytes();
}

TEST(GgufCorrupt, DeepNesting) {
  auto ok = GgufFile::FromBytes(Nested(8));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->Find("deep")->DebugString(), "[[[[[[[[42]]]]]]]]");
  ExpectError(Nested(9), {"metadata 'deep' (#0)", "array element [0][0][0][0][0][0][0][0]",
                          "nested more than 8 levels"});
  ExpectError(Nested(100000 / 12), {"nested more than 8 levels"});
}

TEST(GgufCorrupt, RandomByteFlips) {
  const std::vector<uint8_t> full = SmallFile();
  const uint64_t header_end = (*GgufFile::FromBytes(full))->data_offset();
  std::mt19937_64 rng(20240601);
  int parsed = 0;
  int rejected = 0;
  constexpr int kIterations = 20000;
  for (int it = 0; it < kIterations; ++it) {
    std::vector<uint8_t> b = full;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      // Mostly the header and metadata, where the structure is.
      const uint64_t span = (rng() % 8 == 0) ? b.size() : header_end;
      const size_t pos = rng() % span;
      switch (rng() % 3) {
        case 0:
          b[pos] ^= static_cast<uint8_t>(1u << (rng() % 8));
          break;
        case 1:
          b[pos] = static_cast<uint8_t>(rng());
          break;
        default:
          b[pos] = (rng() % 2) ? 0xFF : 0x00;
      }
    }
    if (rng() % 16 == 0) b.resize(rng() % b.size());
    auto f = GgufFile::FromBytes(b);
    if (f.ok()) {
      TouchEverything(**f);
      ++parsed;
    } else {
      ASSERT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
      ASSERT_THAT(std::string(f.status().message()), StartsWith("gguf: "));
      ++rejected;
    }
  }
  // Both outcomes must occur, or the mutations miss the structure (or everything fails).
  EXPECT_GT(parsed, kIterations / 50);
  EXPECT_GT(rejected, kIterations / 4);
}

TEST(GgufCorrupt, RealModelHeadFlips) {
  const std::string path = testing::StoriesGgufPath();
  MNEMO_REQUIRE_FILE(path);
  auto real = GgufFile::Open(path);
  ASSERT_TRUE(real.ok()) << real.status();
  std::ifstream in(path, std::ios::binary);
  const std::vector<uint8_t> full((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
  ASSERT_EQ(full.size(), (*real)->file_size());
  const uint64_t header_end = (*real)->data_offset();
  std::mt19937_64 rng(7);
  for (int it = 0; it < 300; ++it) {
    std::vector<uint8_t> b = full;
    for (int k = 0; k < 3; ++k) b[rng() % header_end] ^= static_cast<uint8_t>(1u << (rng() % 8));
    auto f = GgufFile::FromBytes(b);
    if (f.ok())
      TouchEverything(**f);
    else
      ASSERT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  }
}

}  // namespace
}  // namespace mnemo::engine
