#include "engine/model/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using kernels::DType;
using ::testing::HasSubstr;

std::vector<uint8_t> Bytes(size_t n, uint8_t start) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(start + i * 7);
  return b;
}

// A file with the given header text (no padding) followed by `data_bytes` bytes.
std::vector<uint8_t> RawFile(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  std::vector<uint8_t> data = Bytes(data_bytes, 1);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::string ErrorOf(const std::vector<uint8_t>& file) {
  auto f = SafetensorsFile::FromBytes(file);
  if (f.ok()) return "OK";
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  return std::string(f.status().message());
}

std::vector<uint8_t> SmallFile() {
  SafetensorsBuilder b;
  b.SetMetadata("format", "pt");
  EXPECT_TRUE(b.AddTensor("a.weight", DType::kF32, {2, 3}, Bytes(24, 0)).ok());
  EXPECT_TRUE(b.AddTensor("b.bias", DType::kBF16, {5}, Bytes(10, 100)).ok());
  EXPECT_TRUE(b.AddTensor("c.ids", DType::kI64, {1, 1}, Bytes(8, 200)).ok());
  return b.Serialize();
}

TEST(Safetensors, DTypeNames) {
  EXPECT_EQ(DTypeFromSafetensors("BF16"), DType::kBF16);
  EXPECT_EQ(DTypeFromSafetensors("I8"), DType::kI8);
  EXPECT_EQ(DTypeFromSafetensors("F8_E4M3"), std::nullopt);
  EXPECT_EQ(DTypeFromSafetensors("bf16"), std::nullopt);
  EXPECT_EQ(SafetensorsDTypeName(DType::kF64), "F64");
  EXPECT_EQ(SafetensorsDTypeName(DType::kQ4_K), std::nullopt);
}

TEST(Safetensors, BuilderRoundTrip) {
  const std::vector<uint8_t> bytes = SmallFile();
  auto f = SafetensorsFile::FromBytes(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->data_offset() % 8, 0u);
  EXPECT_EQ((*f)->file_size(), bytes.size());
  ASSERT_EQ((*f)->tensors().size(), 3u);
  const SafetensorsTensor& a = (*f)->tensors()[0];
  EXPECT_EQ(a.name, "a.weight");
  EXPECT_EQ(a.dtype, DType::kF32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.n_elements, 6);
  EXPECT_EQ(a.begin, 0u);
  EXPECT_EQ(a.bytes, 24u);
  EXPECT_EQ(std::vector<uint8_t>(a.data, a.data + a.bytes), Bytes(24, 0));
  const SafetensorsTensor* b = (*f)->FindTensor("b.bias");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, DType::kBF16);
  EXPECT_EQ(b->begin, 24u);
  EXPECT_EQ(std::vector<uint8_t>(b->data, b->data + b->bytes), Bytes(10, 100));
  const SafetensorsTensor* c = (*f)->FindTensor("c.ids");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->end, 42u);
  EXPECT_EQ(std::vector<uint8_t>(c->data, c->data + 8), Bytes(8, 200));
  EXPECT_EQ((*f)->FindTensor("nope"), nullptr);
  ASSERT_NE((*f)->FindMetadata("format"), nullptr);
  EXPECT_EQ(*(*f)->FindMetadata("format"), "pt");
  EXPECT_EQ((*f)->FindMetadata("other"), nullptr);
  // The data region is exactly the tensors, back to back.
  EXPECT_EQ((*f)->data_offset() + 42, bytes.size());
}

TEST(Safetensors, WriteFileAndOpen) {
  const std::string dir = testing::MakeTempDir();
  SafetensorsBuilder b;
  ASSERT_TRUE(b.AddTensor("w", DType::kF16, {4, 4}, Bytes(32, 3)).ok());
  ASSERT_TRUE(b.WriteFile(dir + "/m.safetensors").ok());
  auto f = SafetensorsFile::Open(dir + "/m.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->path(), dir + "/m.safetensors");
  ASSERT_EQ((*f)->tensors().size(), 1u);
  EXPECT_EQ(std::vector<uint8_t>((*f)->tensors()[0].data, (*f)->tensors()[0].data + 32),
            Bytes(32, 3));

  auto missing = SafetensorsFile::Open(dir + "/absent.safetensors");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  auto folder = SafetensorsFile::Open(dir);
  EXPECT_FALSE(folder.ok());
}

TEST(Safetensors, EmptyHeaderAndZeroSizedTensors) {
  EXPECT_EQ(ErrorOf(RawFile("{}", 0)), "OK");
  EXPECT_EQ(ErrorOf(RawFile(R"({"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},)"
                            R"("f":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})",
                            4)),
            "OK");
}

TEST(Safetensors, TruncatedAtEveryByte) {
  const std::vector<uint8_t> bytes = SmallFile();
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(n));
    auto f = SafetensorsFile::FromBytes(prefix);
    EXPECT_FALSE(f.ok()) << "prefix of " << n << " bytes parsed";
  }
}

TEST(Safetensors, BadHeaderLength) {
  EXPECT_THAT(ErrorOf({1, 2, 3}), HasSubstr("too short"));
  std::vector<uint8_t> f = RawFile("{}", 0);
  f[0] = 200;  // longer than the file
  EXPECT_THAT(ErrorOf(f), HasSubstr("exceeds"));
  f[0] = 0;
  f[3] = 0x10;  // 256 MB: over the limit
  EXPECT_THAT(ErrorOf(f), HasSubstr("limit"));
  std::vector<uint8_t> huge(8, 0xff);
  EXPECT_THAT(ErrorOf(huge), HasSubstr("limit"));
  EXPECT_THAT(ErrorOf(RawFile("", 0)), HasSubstr("too short"));
}

TEST(Safetensors, BadJson) {
  EXPECT_THAT(ErrorOf(RawFile(R"({"a": )", 0)), HasSubstr("not valid JSON"));
  EXPECT_THAT(ErrorOf(RawFile(R"([1, 2])", 0)), HasSubstr("'{'"));
  EXPECT_THAT(ErrorOf(RawFile("{\"a\":\"\xff\xfe\"}", 0)), HasSubstr("not valid JSON"));
  std::string deep = "{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}";
  EXPECT_THAT(ErrorOf(RawFile(deep, 0)), HasSubstr("deeper"));
  // A bracket inside a string does not count as nesting.
  EXPECT_EQ(ErrorOf(RawFile(R"({"__metadata__":{"k":"[[[[[[[[[[[[[[[[[[[[[[[["}})", 0)), "OK");
  EXPECT_THAT(ErrorOf(RawFile(R"({"__metadata__":{"k":1}})", 0)), HasSubstr("\"k\""));
  EXPECT_THAT(ErrorOf(RawFile(R"({"__metadata__":[]})", 0)), HasSubstr("__metadata__"));
  EXPECT_THAT(ErrorOf(RawFile(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                              R"("t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                              8)),
              HasSubstr("\"t\" twice"));
}

TEST(Safetensors, FieldErrorsNameTensorAndField) {
  auto err = [](const std::string& entry, size_t data = 64) {
    return ErrorOf(RawFile("{\"my.tensor\":" + entry + "}", data));
  };
  EXPECT_THAT(err("3"), HasSubstr("\"my.tensor\": entry must be an object"));
  EXPECT_THAT(err(R"({"shape":[1],"data_offsets":[0,4]})"), HasSubstr("missing \"dtype\""));
  EXPECT_THAT(err(R"({"dtype":7,"shape":[1],"data_offsets":[0,4]})"), HasSubstr("\"dtype\""));
  EXPECT_THAT(err(R"({"dtype":"F32","data_offsets":[0,4]})"), HasSubstr("missing \"shape\""));
  EXPECT_THAT(err(R"({"dtype":"F32","shape":[-1],"data_offsets":[0,4]})"),
              HasSubstr("shape[0] is negative"));
  EXPECT_THAT(err(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})"), HasSubstr("shape[0]"));
  EXPECT_THAT(err(R"({"dtype":"F32","shape":[1]})"), HasSubstr("missing \"data_offsets\""));
  EXPECT_THAT(err(R"({"dtype":"F32","shape":[1],"data_offsets":[0]})"), HasSubstr("[begin, end]"));
  EXPECT_THAT(err(R"({"dtype":"F32","shape":[1],"data_offsets":"0,4"})"),
              HasSubstr("[begin, end]"));
  EXPECT_THAT(err(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})"),
              HasSubstr("data_offsets[0] is negative"));
  const std::string overflow =
      err(R"({"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]})");
  EXPECT_THAT(overflow, HasSubstr("my.tensor"));
  EXPECT_THAT(overflow, HasSubstr("overflows"));
}

TEST(Safetensors, UnsupportedDTypeIsNamed) {
  for (const char* dt : {"F8_E4M3", "F8_E5M2", "U8", "BOOL", "Q4_0", "f32"}) {
    const std::string e = ErrorOf(RawFile(
        std::string(R"({"w":{"dtype":")") + dt + R"(","shape":[4],"data_offsets":[0,4]}})", 4));
    EXPECT_THAT(e, HasSubstr("\"w\""));
    EXPECT_THAT(e, HasSubstr(std::string("unsupported dtype \"") + dt + "\""));
  }
}

TEST(Safetensors, OffsetsOutOfRangeOverlappingOrMismatched) {
  // Past the end of the data region.
  EXPECT_THAT(ErrorOf(RawFile(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 12)),
              HasSubstr("run past the data region of 12 bytes"));
  // Begin after end.
  EXPECT_THAT(ErrorOf(RawFile(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 12)),
              HasSubstr("begin after end"));
  // Size mismatch: shape [3] of F32 is 12 bytes, the range holds 16.
  const std::string mismatch =
      ErrorOf(RawFile(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16));
  EXPECT_THAT(mismatch, HasSubstr("hold 16 bytes"));
  EXPECT_THAT(mismatch, HasSubstr("need 12"));
  // Overlap.
  const std::string overlap =
      ErrorOf(RawFile(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                      R"("b":{"dtype":"F16","shape":[4],"data_offsets":[12,20]}})",
                      32));
  EXPECT_THAT(overlap, HasSubstr("overlap"));
  EXPECT_THAT(overlap, HasSubstr("\"a\""));
  EXPECT_THAT(overlap, HasSubstr("\"b\""));
  // One tensor inside another (sorted by begin, the outer one ends last).
  EXPECT_THAT(ErrorOf(RawFile(R"({"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]},)"
                              R"("b":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},)"
                              R"("c":{"dtype":"F32","shape":[1],"data_offsets":[24,28]}})",
                              32)),
              HasSubstr("overlap"));
  // Gaps are tolerated.
  EXPECT_EQ(ErrorOf(RawFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                            12)),
            "OK");
}

TEST(Safetensors, BuilderRejectsBadTensors) {
  SafetensorsBuilder b;
  EXPECT_TRUE(b.AddTensor("x", DType::kF32, {2}, Bytes(8, 0)).ok());
  EXPECT_FALSE(b.AddTensor("x", DType::kF32, {2}, Bytes(8, 0)).ok());
  EXPECT_FALSE(b.AddTensor("y", DType::kF32, {3}, Bytes(8, 0)).ok());
  EXPECT_FALSE(b.AddTensor("z", DType::kQ8_0, {32}, Bytes(34, 0)).ok());
  EXPECT_FALSE(b.AddTensor("", DType::kF32, {2}, Bytes(8, 0)).ok());
  EXPECT_FALSE(b.AddTensor("__metadata__", DType::kF32, {2}, Bytes(8, 0)).ok());
  EXPECT_FALSE(b.AddTensor("n", DType::kF32, {-2}, Bytes(8, 0)).ok());
}

// Random corruption of a valid file never crashes the reader (a mini fuzz run).
TEST(Safetensors, RandomCorruptionNeverCrashes) {
  const std::vector<uint8_t> bytes = SmallFile();
  std::mt19937 rng(1234);
  int parsed = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> m = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) {
      const size_t pos = rng() % m.size();
      m[pos] = static_cast<uint8_t>(rng());
    }
    auto f = SafetensorsFile::FromBytes(m);
    if (f.ok()) {
      ++parsed;
      for (const SafetensorsTensor& t : (*f)->tensors()) {
        ASSERT_LE(8 + (*f)->header_bytes() + t.end, m.size());
      }
    }
  }
  EXPECT_GT(parsed, 0);  // flips in tensor data leave the file valid
}

}  // namespace
}  // namespace mnemo::engine
