// QuantizeRowRef: the ggml reference schemes on hand-picked inputs, and quantize ->
// dequantize round trips on random rows at awkward sizes within the documented bounds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/dequant.h"
#include "kernels/dtype.h"
#include "tests/kernels/quant_test_util.h"

namespace mnemo::kernels {
namespace {

std::vector<uint8_t> Quantize(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> out(*DTypeBytes(t, static_cast<int64_t>(x.size())), 0xa5);
  QuantizeRowRef(t, x.data(), out.data(), static_cast<int64_t>(x.size()));
  return out;
}

std::vector<float> Dequantize(DType t, const std::vector<uint8_t>& bytes, size_t n) {
  std::vector<float> y(n, std::nanf(""));
  DequantizeRowRef(t, bytes.data(), y.data(), static_cast<int64_t>(n));
  return y;
}

uint16_t GetU16(const std::vector<uint8_t>& b, size_t offset) {
  return static_cast<uint16_t>(b[offset] | (b[offset + 1] << 8));
}

TEST(QuantizeTest, Q8_0FollowsTheReferenceScheme) {
  std::vector<float> x(32, 1.0f);
  x[0] = 127.0f;  // amax: d = 1
  x[1] = -63.5f;  // rounds away from zero
  x[2] = 0.4f;
  x[3] = -0.5f;
  const std::vector<uint8_t> q = Quantize(DType::kQ8_0, x);
  EXPECT_EQ(GetU16(q, 0), 0x3c00);
  EXPECT_EQ(static_cast<int8_t>(q[2]), 127);
  EXPECT_EQ(static_cast<int8_t>(q[3]), -64);
  EXPECT_EQ(static_cast<int8_t>(q[4]), 0);
  EXPECT_EQ(static_cast<int8_t>(q[5]), -1);
  for (int i = 4; i < 32; ++i) EXPECT_EQ(q[2 + i], 1) << i;
}

TEST(QuantizeTest, Q4_0FollowsTheReferenceScheme) {
  std::vector<float> x(32, 0.5f);
  x[0] = -8.0f;  // the first element of largest magnitude: d = -8 / -8 = 1
  x[1] = 8.0f;   // the opposite end: 8 + 8.5 truncates to 16, clamped to 15
  x[2] = 7.4f;
  x[17] = -3.2f;
  const std::vector<uint8_t> q = Quantize(DType::kQ4_0, x);
  EXPECT_EQ(GetU16(q, 0), 0x3c00);
  EXPECT_EQ(q[2 + 0], 0x90);  // element 0: q 0, element 16: q 9 (0.5 + 8.5)
  EXPECT_EQ(q[2 + 1], 0x5f);  // element 1: q 15, element 17: q 5
  EXPECT_EQ(q[2 + 2], 0x9f);
  for (int j = 3; j < 16; ++j) EXPECT_EQ(q[2 + j], 0x99) << j;
  const std::vector<float> y = Dequantize(DType::kQ4_0, q, 32);
  EXPECT_EQ(y[0], -8.0f);
  EXPECT_EQ(y[1], 7.0f);
  EXPECT_EQ(y[2], 7.0f);
  EXPECT_EQ(y[17], -3.0f);
  EXPECT_EQ(y[5], 1.0f);
}

TEST(QuantizeTest, Q4_1FollowsTheReferenceScheme) {
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i % 16) - 3.0f;  // min -3, max 12
  const std::vector<uint8_t> q = Quantize(DType::kQ4_1, x);
  EXPECT_EQ(GetU16(q, 0), 0x3c00);  // d = 15 / 15
  EXPECT_EQ(GetU16(q, 2), 0xc200);  // m = -3
  for (int j = 0; j < 16; ++j) EXPECT_EQ(q[4 + j], j | (j << 4)) << j;
  EXPECT_EQ(Dequantize(DType::kQ4_1, q, 32), x);
}

// The documented bound (kernels/dequant.h) for element i of x, a row of type t.
double Bound(DType t, const std::vector<float>& x, size_t i) {
  const int be = GetDTypeInfo(t).block_elems;
  const auto begin = x.begin() + static_cast<std::ptrdiff_t>(i / be * be);
  const auto end = begin + be;
  const double lo = *std::min_element(begin, end);
  const double hi = *std::max_element(begin, end);
  const double amax = std::max(std::fabs(lo), std::fabs(hi));
  const double v = std::fabs(x[i]);
  double bound = 0.0;
  switch (t) {
    case DType::kF32:
      return 0.0;
    case DType::kF16:
      return v >= std::ldexp(1.0, -14) ? v * std::ldexp(1.0, -11) : std::ldexp(1.0, -25);
    case DType::kBF16:
      return std::max(v * std::ldexp(1.0, -8), std::ldexp(1.0, -134));
    case DType::kQ8_0:
      bound = amax / 225 + 4e-6;
      break;
    case DType::kQ4_0:
      bound = amax / 7.9 + 3e-7;
      break;
    case DType::kQ4_1:
      bound = (hi - lo) / 29 + std::fabs(lo) / 2048 + 1e-6;
      break;
    case DType::kQ4_K:
      bound = (std::max(hi, 0.0) - std::min(lo, 0.0)) / 28 + 1e-7;
      break;
    case DType::kQ5_K:
      bound = (std::max(hi, 0.0) - std::min(lo, 0.0)) / 58 + 1e-7;
      break;
    case DType::kQ6_K:
      bound = amax / 61 + 1e-7;
      break;
    default:
      ADD_FAILURE() << "no bound for " << DTypeName(t);
  }
  return bound + amax * 1e-6;  // f32 rounding in the quantizer and the dequantizer
}

// Random rows whose 32-element blocks differ in scale and shape (symmetric, shifted to one sign,
// heavy-tailed, tiny enough for f16-subnormal scales); never all zeros.
std::vector<float> RandomRow(int64_t n, int block, std::mt19937& rng) {
  std::vector<float> x(n);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::uniform_real_distribution<float> log_scale(-3.0f, 2.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t b = 0; b < n; b += block) {
    const int kind = static_cast<int>(rng() % 5);
    const float s = kind == 4 ? 1e-5f : std::pow(10.0f, log_scale(rng));
    const float shift = kind == 1 ? 1.5f * s : (kind == 2 ? -2.5f * s : 0.0f);
    for (int64_t i = b; i < std::min<int64_t>(n, b + block); ++i) {
      float v = kind == 3 ? normal(rng) * s : unit(rng) * s + shift;
      if (kind == 3 && rng() % 50 == 0) v *= 10.0f;  // outliers
      x[i] = v == 0.0f ? s * 0.5f : v;
    }
  }
  return x;
}

void ExpectRoundTripWithinBound(DType t, const std::vector<float>& x, bool random = true) {
  const std::vector<uint8_t> q = Quantize(t, x);
  const std::vector<float> y = Dequantize(t, q, x.size());
  double worst_ratio = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double err = std::fabs(static_cast<double>(y[i]) - x[i]);
    const double bound = Bound(t, x, i);
    ASSERT_LE(err, bound) << DTypeName(t) << " n=" << x.size() << " element " << i << ": x=" << x[i]
                          << " y=" << y[i];
    if (bound > 0) worst_ratio = std::max(worst_ratio, err / bound);
  }
  // On random rows quantization really happened (the bound is not vacuous): some error is
  // a visible part of it. f32 is exact, so only the quantized types.
  if (random && GetDTypeInfo(t).quantized) {
    EXPECT_GT(worst_ratio, 0.1) << DTypeName(t) << " n=" << x.size();
  }
  // Deterministic: the same input gives the same bytes.
  EXPECT_EQ(Quantize(t, x), q) << DTypeName(t);
}

TEST(QuantizeTest, RoundTripWithinDocumentedBoundAtAwkwardSizes) {
  std::mt19937 rng(42);
  for (DType t : testing::WeightDTypes()) {
    const int be = GetDTypeInfo(t).block_elems;
    const std::vector<int64_t> blocks =
        be == 1 ? std::vector<int64_t>{1, 3, 17, 1001, 4099} : std::vector<int64_t>{1, 3, 13, 101};
    for (int64_t nb : blocks) {
      SCOPED_TRACE(std::string(DTypeName(t)) + " blocks=" + std::to_string(nb));
      ExpectRoundTripWithinBound(t, RandomRow(nb * be, 32, rng));
    }
  }
}

TEST(QuantizeTest, SpecialRows) {
  for (DType t : testing::WeightDTypes()) {
    const int64_t n = 2 * GetDTypeInfo(t).block_elems;
    SCOPED_TRACE(std::string(DTypeName(t)));
    // All zeros decode to exact zeros (no NaN from a zero scale).
    const std::vector<float> zeros(n, 0.0f);
    EXPECT_EQ(Dequantize(t, Quantize(t, zeros), n), zeros);
    // Constant rows of either sign, one element differing, and alternating signs.
    for (float c : {-3.0f, 0.75f}) {
      std::vector<float> x(n, c);
      ExpectRoundTripWithinBound(t, x, /*random=*/false);
      x[n / 2] = -c * 2;
      ExpectRoundTripWithinBound(t, x, /*random=*/false);
    }
    std::vector<float> alt(n);
    for (int64_t i = 0; i < n; ++i) alt[i] = (i % 2 ? 1.0f : -1.0f) * (1.0f + 0.01f * i);
    ExpectRoundTripWithinBound(t, alt, /*random=*/false);
  }
}

TEST(QuantizeTest, F16AndBF16RowsConvertElementwise) {
  const std::vector<float> x = {1.0f, -2.5f, 65504.0f, 1e-8f, 3.140625f};
  const std::vector<uint8_t> h = Quantize(DType::kF16, x);
  EXPECT_EQ(GetU16(h, 0), 0x3c00);
  EXPECT_EQ(GetU16(h, 2), 0xc100);
  EXPECT_EQ(GetU16(h, 4), 0x7bff);
  EXPECT_EQ(GetU16(h, 6), 0x0000);  // 1e-8 < 2^-25: rounds to zero
  const std::vector<uint8_t> b = Quantize(DType::kBF16, x);
  EXPECT_EQ(GetU16(b, 0), 0x3f80);
  EXPECT_EQ(GetU16(b, 8), 0x4049);
  EXPECT_EQ(Dequantize(DType::kF32, Quantize(DType::kF32, x), x.size()), x);
}

}  // namespace
}  // namespace mnemo::kernels
