// Dequantization of hand-built blocks. Each block is written as raw bytes at the offsets
// the GGUF layout documents (little-endian f16 fields), and the expected floats are derived
// here from that layout, never by calling the code under test.
#include "kernels/dequant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/dequant_math.h"
#include "kernels/dtype.h"
#include "tests/kernels/quant_test_util.h"

namespace mnemo::kernels {
namespace {

void PutF16(std::vector<uint8_t>& raw, size_t offset, uint16_t bits) {
  raw[offset] = static_cast<uint8_t>(bits & 0xff);
  raw[offset + 1] = static_cast<uint8_t>(bits >> 8);
}

std::vector<float> Decode(DType t, const std::vector<uint8_t>& raw) {
  const DTypeInfo& info = GetDTypeInfo(t);
  const int64_t n = static_cast<int64_t>(raw.size()) / info.block_bytes * info.block_elems;
  std::vector<float> out(n, std::numeric_limits<float>::quiet_NaN());
  DequantizeRowRef(t, raw.data(), out.data(), n);
  return out;
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

TEST(DequantTest, PlainTypes) {
  std::vector<uint8_t> f16(8);
  PutF16(f16, 0, 0x3c00);
  PutF16(f16, 2, 0xc000);
  PutF16(f16, 4, 0x0001);
  PutF16(f16, 6, 0x7c00);
  EXPECT_EQ(Decode(DType::kF16, f16), (std::vector<float>{1.0f, -2.0f, std::ldexp(1.0f, -24),
                                                          std::numeric_limits<float>::infinity()}));

  std::vector<uint8_t> bf16(4);
  PutF16(bf16, 0, 0x3f80);
  PutF16(bf16, 2, 0x4049);
  EXPECT_EQ(Decode(DType::kBF16, bf16), (std::vector<float>{1.0f, 3.140625f}));

  const std::vector<uint32_t> f32_bits = {0x3f800000u, 0xffc00001u, 0x00000001u};
  std::vector<uint8_t> f32(12);
  std::memcpy(f32.data(), f32_bits.data(), 12);
  const std::vector<float> y = Decode(DType::kF32, f32);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Bits(y[i]), f32_bits[i]);
}

TEST(DequantTest, Q8_0) {
  // Two blocks: d = 0.5 with qs[i] = 7i - 100 (qs[31] = -128); d = -4 with qs[i] = i.
  std::vector<uint8_t> raw(2 * 34);
  PutF16(raw, 0, 0x3800);
  for (int i = 0; i < 32; ++i) raw[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(7 * i - 100));
  raw[2 + 31] = 0x80;
  PutF16(raw, 34, 0xc400);
  for (int i = 0; i < 32; ++i) raw[36 + i] = static_cast<uint8_t>(i);
  const std::vector<float> y = Decode(DType::kQ8_0, raw);
  ASSERT_EQ(y.size(), 64u);
  for (int i = 0; i < 31; ++i) EXPECT_EQ(y[i], (7 * i - 100) * 0.5f) << i;
  EXPECT_EQ(y[31], -64.0f);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[32 + i], -4.0f * i) << i;
}

TEST(DequantTest, Q4_0) {
  // d = -2; qs[j] = j | (15 - j) << 4: element j has q = j, element j + 16 has q = 15 - j.
  std::vector<uint8_t> raw(18);
  PutF16(raw, 0, 0xc000);
  for (int j = 0; j < 16; ++j) raw[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const std::vector<float> y = Decode(DType::kQ4_0, raw);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], (j - 8) * -2.0f) << j;
    EXPECT_EQ(y[j + 16], (15 - j - 8) * -2.0f) << j;
  }
  EXPECT_EQ(y[3], 10.0f);
  EXPECT_EQ(y[19], -8.0f);
  EXPECT_EQ(y[8], 0.0f);
}

TEST(DequantTest, Q4_1) {
  // d = 0.5, m = -1; qs[0] = 0xf0 (element 0: q = 0, element 16: q = 15), other bytes 0x21.
  std::vector<uint8_t> raw(20);
  PutF16(raw, 0, 0x3800);
  PutF16(raw, 2, 0xbc00);
  for (int j = 0; j < 16; ++j) raw[4 + j] = 0x21;
  raw[4] = 0xf0;
  const std::vector<float> y = Decode(DType::kQ4_1, raw);
  EXPECT_EQ(y[0], -1.0f);
  EXPECT_EQ(y[16], 6.5f);
  for (int j = 1; j < 16; ++j) {
    EXPECT_EQ(y[j], -0.5f) << j;      // q = 1
    EXPECT_EQ(y[j + 16], 0.0f) << j;  // q = 2
  }
}

// Scale bytes of the K-quant tests and the (sc, m) pairs they hold, worked out by hand:
// sc = {1, 2, 3, 4, 37, 50, 43, 63}, m = {5, 6, 7, 8, 17, 33, 23, 60}; e.g. sub-block 6:
// sc = (s[10] & 15) | (s[2] >> 6) << 4 = 11 | 2 << 4 = 43, m = (s[10] >> 4) | (s[6] >> 6) << 4
// = 7 | 1 << 4 = 23.
constexpr uint8_t kKScales[12] = {0x81, 0xc2, 0x83, 0xc4, 0x45, 0x86,
                                  0x47, 0xc8, 0x15, 0x12, 0x7b, 0xcf};
constexpr int kKSc[8] = {1, 2, 3, 4, 37, 50, 43, 63};
constexpr int kKMin[8] = {5, 6, 7, 8, 17, 33, 23, 60};

TEST(DequantTest, KScaleMinUnpacksByHandWorkedBytes) {
  for (int j = 0; j < 8; ++j) {
    int sc = -1, m = -1;
    KScaleMin(kKScales, j, &sc, &m);
    EXPECT_EQ(sc, kKSc[j]) << j;
    EXPECT_EQ(m, kKMin[j]) << j;
  }
}

// qs bytes of the K-quant tests: qs[32g + l] = (l & 15) | (15 - (l & 15)) << 4, except
// qs[104] = 0x3d (g = 3, l = 8: element 200 has q = 13, element 232 has q = 3).
std::vector<uint8_t> KQs() {
  std::vector<uint8_t> qs(128);
  for (int g = 0; g < 4; ++g) {
    for (int l = 0; l < 32; ++l)
      qs[32 * g + l] = static_cast<uint8_t>((l & 15) | ((15 - (l & 15)) << 4));
  }
  qs[104] = 0x3d;
  return qs;
}

// The 4-bit quant of element i by the layout: group g = i / 64 uses qs[32g .. 32g+31],
// low nibbles for its first 32 elements and high nibbles for the next 32.
int KNibble(const std::vector<uint8_t>& qs, int i) {
  const uint8_t byte = qs[32 * (i / 64) + i % 32];
  return (i % 64) < 32 ? (byte & 15) : (byte >> 4);
}

TEST(DequantTest, Q4_K) {
  std::vector<uint8_t> raw(144);
  PutF16(raw, 0, 0x3c00);  // d = 1
  PutF16(raw, 2, 0x3800);  // dmin = 0.5
  std::memcpy(&raw[4], kKScales, 12);
  const std::vector<uint8_t> qs = KQs();
  std::memcpy(&raw[16], qs.data(), 128);
  const std::vector<float> y = Decode(DType::kQ4_K, raw);
  ASSERT_EQ(y.size(), 256u);
  for (int i = 0; i < 256; ++i) {
    const int j = i / 32;
    EXPECT_EQ(y[i], 1.0f * kKSc[j] * KNibble(qs, i) - 0.5f * kKMin[j]) << i;
  }
  EXPECT_EQ(y[0], -2.5f);     // sub-block 0, q = 0: -0.5 * 5
  EXPECT_EQ(y[32], 27.0f);    // sub-block 1, q = 15: 2 * 15 - 0.5 * 6
  EXPECT_EQ(y[100], 40.0f);   // sub-block 3, high nibble of qs[36] = 11: 4 * 11 - 4
  EXPECT_EQ(y[200], 547.5f);  // sub-block 6, q = 13: 43 * 13 - 0.5 * 23
  EXPECT_EQ(y[232], 159.0f);  // sub-block 7, q = 3: 63 * 3 - 0.5 * 60
}

TEST(DequantTest, Q5_K) {
  std::vector<uint8_t> raw(176);
  PutF16(raw, 0, 0x3c00);  // d = 1
  PutF16(raw, 2, 0x3800);  // dmin = 0.5
  std::memcpy(&raw[4], kKScales, 12);
  std::vector<uint8_t> qh(32);
  for (int l = 0; l < 32; ++l) qh[l] = static_cast<uint8_t>(l * 37);
  qh[8] = 0x40;  // only bit 6: element 32 * 6 + 8 = 200 gets +16
  std::memcpy(&raw[16], qh.data(), 32);
  const std::vector<uint8_t> qs = KQs();
  std::memcpy(&raw[48], qs.data(), 128);
  const std::vector<float> y = Decode(DType::kQ5_K, raw);
  ASSERT_EQ(y.size(), 256u);
  for (int i = 0; i < 256; ++i) {
    const int j = i / 32;
    const int q = KNibble(qs, i) + 16 * ((qh[i % 32] >> j) & 1);
    EXPECT_EQ(y[i], 1.0f * kKSc[j] * q - 0.5f * kKMin[j]) << i;
  }
  EXPECT_EQ(y[200], 1235.5f);  // q = 13 + 16: 43 * 29 - 0.5 * 23
  EXPECT_EQ(y[232], 159.0f);   // bit 7 of qh[8] clear: as Q4_K
  EXPECT_EQ(y[8], 5.5f);       // q = 8: 1 * 8 - 0.5 * 5
  EXPECT_EQ(y[65], 47.5f);     // qh[1] = 37 has bit 2 set: q = 1 + 16: 3 * 17 - 0.5 * 7
  EXPECT_EQ(y[33], 25.0f);     // qh[1] bit 1 clear: q = 14: 2 * 14 - 0.5 * 6
}

TEST(DequantTest, Q6_K) {
  std::vector<uint8_t> raw(210);
  std::vector<uint8_t> ql(128), qh(64);
  std::vector<int8_t> scales(16);
  for (int b = 0; b < 128; ++b) ql[b] = static_cast<uint8_t>(b * 13 + 7);
  for (int b = 0; b < 64; ++b) qh[b] = static_cast<uint8_t>(b * 29 + 3);
  for (int j = 0; j < 16; ++j) scales[j] = static_cast<int8_t>((j % 2 ? -1 : 1) * (j + 1));
  ql[101] = 0x4b;  // element 165 (h 1, k 1, l 5): low 4 bits 11; element 229 (k 3): 4
  qh[37] = 0x08;   // h 1, l 5: bits 3..2 = 2 for k = 1, zero for k = 0, 2, 3
  std::memcpy(&raw[0], ql.data(), 128);
  std::memcpy(&raw[128], qh.data(), 64);
  std::memcpy(&raw[192], scales.data(), 16);
  PutF16(raw, 208, 0x3400);  // d = 0.25
  const std::vector<float> y = Decode(DType::kQ6_K, raw);
  ASSERT_EQ(y.size(), 256u);
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, k = (i % 128) / 32, l = i % 32;
    const uint8_t low_byte = ql[64 * h + 32 * (k % 2) + l];
    const int low = k < 2 ? (low_byte & 15) : (low_byte >> 4);
    const int high = (qh[32 * h + l] >> (2 * k)) & 3;
    EXPECT_EQ(y[i], 0.25f * scales[i / 16] * ((low | high << 4) - 32)) << i;
  }
  EXPECT_EQ(y[165], 30.25f);   // q = 11 | 2 << 4 = 43: 0.25 * 11 * 11
  EXPECT_EQ(y[229], -105.0f);  // q = 4: 0.25 * 15 * (4 - 32)
  EXPECT_EQ(y[197], -78.0f);   // ql[69] = 0x88, high nibble 8: 0.25 * 13 * (8 - 32)
  EXPECT_EQ(y[133], -54.0f);   // ql[69] low nibble 8: 0.25 * 9 * (8 - 32)
}

// Element(b, i) (the CUDA path) and ToFloats (the CPU reference) agree bit for bit.
template <typename Format>
void ExpectElementMatchesRow(DType t, std::mt19937& rng) {
  const int64_t n = 7 * Format::kElems;
  const std::vector<uint8_t> raw = testing::RandomRowBytes(t, n, rng);
  std::vector<float> row(n);
  DequantizeRowRef(t, raw.data(), row.data(), n);
  const auto* blocks = reinterpret_cast<const typename Format::Block*>(raw.data());
  for (int64_t e = 0; e < n; ++e) {
    const float v =
        Format::Element(blocks[e / Format::kElems], static_cast<int>(e % Format::kElems));
    ASSERT_EQ(Bits(v), Bits(row[e])) << DTypeName(t) << " element " << e;
  }
}

TEST(DequantTest, ElementMathMatchesBlockMath) {
  std::mt19937 rng(3);
  ExpectElementMatchesRow<F32Format>(DType::kF32, rng);
  ExpectElementMatchesRow<F16Format>(DType::kF16, rng);
  ExpectElementMatchesRow<BF16Format>(DType::kBF16, rng);
  ExpectElementMatchesRow<Q8_0Format>(DType::kQ8_0, rng);
  ExpectElementMatchesRow<Q4_0Format>(DType::kQ4_0, rng);
  ExpectElementMatchesRow<Q4_1Format>(DType::kQ4_1, rng);
  ExpectElementMatchesRow<Q4_KFormat>(DType::kQ4_K, rng);
  ExpectElementMatchesRow<Q5_KFormat>(DType::kQ5_K, rng);
  ExpectElementMatchesRow<Q6_KFormat>(DType::kQ6_K, rng);
}

TEST(DequantTest, RowsInParallelMatchRowByRow) {
  std::mt19937 rng(5);
  for (DType t : testing::WeightDTypes()) {
    const int64_t cols = 3 * GetDTypeInfo(t).block_elems;
    const int64_t rows = 37;
    const std::vector<uint8_t> raw = testing::RandomRowBytes(t, rows * cols, rng);
    std::vector<float> whole(rows * cols), by_rows(rows * cols);
    DequantizeRowRef(t, raw.data(), whole.data(), rows * cols);
    DequantizeRows(t, raw.data(), by_rows.data(), rows, cols);
    for (int64_t i = 0; i < rows * cols; ++i) {
      ASSERT_EQ(Bits(whole[i]), Bits(by_rows[i])) << DTypeName(t) << " " << i;
    }
  }
}

TEST(DequantTest, SupportedTypes) {
  for (DType t : testing::WeightDTypes()) {
    EXPECT_TRUE(CanDequantize(t)) << DTypeName(t);
    EXPECT_TRUE(CanQuantize(t)) << DTypeName(t);
  }
  EXPECT_FALSE(CanDequantize(DType::kI32));
  EXPECT_FALSE(CanQuantize(DType::kF64));
}

TEST(DequantDeathTest, RejectsPartialBlocksAndUnsupportedTypes) {
  std::vector<uint8_t> raw(64);
  std::vector<float> out(64);
  EXPECT_DEATH(DequantizeRowRef(DType::kQ4_0, raw.data(), out.data(), 31), "whole number");
  EXPECT_DEATH(DequantizeRowRef(DType::kI32, raw.data(), out.data(), 4), "cannot dequantize");
  EXPECT_DEATH(QuantizeRowRef(DType::kQ4_K, out.data(), raw.data(), 32), "whole number");
}

}  // namespace
}  // namespace mnemo::kernels
