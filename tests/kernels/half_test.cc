#include "kernels/half.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>

namespace mnemo::kernels {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The value of an fp16 bit pattern, from the IEEE definition (independent of half.h).
double F16Value(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 31;
  const int mant = h & 1023;
  if (exp == 31) {
    return mant ? std::numeric_limits<double>::quiet_NaN()
                : sign * std::numeric_limits<double>::infinity();
  }
  if (exp == 0) return sign * std::ldexp(mant, -24);
  return sign * std::ldexp(1024 + mant, exp - 25);
}

// Round to nearest even f16, computed in double arithmetic (exact for these magnitudes).
uint16_t F16Oracle(float x) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= 65520.0) return sign | 0x7c00;
  int e2;
  std::frexp(a, &e2);  // a = f * 2^e2, f in [0.5, 1): floor(log2 a) = e2 - 1
  const int e = a == 0.0 ? -100 : e2 - 1;
  const double ulp = e < -14 ? std::ldexp(1.0, -24) : std::ldexp(1.0, e - 10);
  const double q = a / ulp;  // exact: a power-of-two scaling
  double r = std::floor(q);
  const double frac = q - r;
  if (frac > 0.5 || (frac == 0.5 && std::fmod(r, 2.0) == 1.0)) r += 1.0;
  if (e < -14) return static_cast<uint16_t>(sign | static_cast<uint16_t>(r));  // 1024: 2^-14
  // r in [1024, 2048]; 2048 carries into the next binade, which the addition does.
  return static_cast<uint16_t>(sign | (((e + 15) << 10) + (static_cast<int>(r) - 1024)));
}

// Round to nearest even bf16 by comparing the two candidates in double.
uint16_t BF16Oracle(float x) {
  const uint32_t u = Bits(x);
  const uint16_t lo = static_cast<uint16_t>(u >> 16);
  const uint16_t hi = static_cast<uint16_t>(lo + 1);
  const double v = x;
  const double dlo = std::fabs(v - static_cast<double>(FromBits(static_cast<uint32_t>(lo) << 16)));
  const double vhi = FromBits(static_cast<uint32_t>(hi) << 16);
  // Past the largest finite bf16 the rounding acts as if the exponent went on (2^128).
  const double dhi =
      std::isinf(vhi) ? std::fabs(v - std::copysign(0x1p128, v)) : std::fabs(v - vhi);
  if (dlo < dhi) return lo;
  if (dhi < dlo) return hi;
  return (lo & 1) ? hi : lo;
}

TEST(HalfTest, F16ToF32KnownValues) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc000), -2.0f);
  EXPECT_EQ(F16ToF32(0x3555), 0.333251953125f);
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0400), std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(F16ToF32(0x03ff), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(F16ToF32(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(Bits(F16ToF32(0x0000)), 0x00000000u);
  EXPECT_EQ(Bits(F16ToF32(0x8000)), 0x80000000u);  // -0 keeps its sign
  EXPECT_EQ(F16ToF32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(F16ToF32(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(F16ToF32(0x7e00)));
  EXPECT_TRUE(std::isnan(F16ToF32(0x7c01)));  // signaling NaN stays NaN
  EXPECT_TRUE(std::signbit(F16ToF32(0xfe00)));
}

TEST(HalfTest, F16ToF32ExhaustiveAgainstDefinition) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double want = F16Value(static_cast<uint16_t>(h));
    const float got = F16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << h;
      ASSERT_EQ(std::signbit(got), (h & 0x8000) != 0) << std::hex << h;
      continue;
    }
    ASSERT_EQ(static_cast<double>(got), want) << std::hex << h;
    ASSERT_EQ(std::signbit(got), (h & 0x8000) != 0) << std::hex << h;
  }
}

TEST(HalfTest, F16RoundTripIsExactForEveryNonNaN) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t v = static_cast<uint16_t>(h);
    if ((v & 0x7c00) == 0x7c00 && (v & 0x3ff) != 0) continue;  // NaN: tested below
    ASSERT_EQ(F32ToF16(F16ToF32(v)), v) << std::hex << h;
  }
}

TEST(HalfTest, F32ToF16EdgeCases) {
  EXPECT_EQ(F32ToF16(1.0f), 0x3c00);
  EXPECT_EQ(F32ToF16(-2.0f), 0xc000);
  EXPECT_EQ(F32ToF16(0.0f), 0x0000);
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7bff);
  EXPECT_EQ(F32ToF16(65519.99f), 0x7bff);  // below the half-way point to 2^16
  EXPECT_EQ(F32ToF16(65520.0f), 0x7c00);   // the tie goes to even: inf
  EXPECT_EQ(F32ToF16(-1e6f), 0xfc00);
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(F32ToF16(-std::numeric_limits<float>::infinity()), 0xfc00);
  // Ties to even around 1.0: ulp(1) = 2^-10.
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // tie, even is 0x3c00
  EXPECT_EQ(F32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie, even is 0x3c02
  EXPECT_EQ(F32ToF16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)), 0x3c01);
  // Subnormals: multiples of 2^-24.
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25)), 0x0000);  // tie with 0: even
  EXPECT_EQ(F32ToF16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(F32ToF16(3 * std::ldexp(1.0f, -25)), 0x0002);  // 1.5 ulp: tie, even is 2
  EXPECT_EQ(F32ToF16(5 * std::ldexp(1.0f, -25)), 0x0002);  // 2.5 ulp: tie, even is 2
  EXPECT_EQ(F32ToF16(-std::ldexp(1023.0f, -24)), 0x83ff);
  // Just below the smallest normal rounds up into it.
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -26)), 0x0400);
  EXPECT_EQ(F32ToF16(1e-10f), 0x0000);
  EXPECT_EQ(F32ToF16(-1e-10f), 0x8000);
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::denorm_min()), 0x0000);
  // NaN stays a (quiet) NaN with its sign.
  const uint16_t nan = F32ToF16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x3ff, 0);
  const uint16_t snan = F32ToF16(FromBits(0xff800001u));  // payload only in low bits
  EXPECT_EQ(snan & 0xfc00, 0xfc00);
  EXPECT_NE(snan & 0x3ff, 0);
}

TEST(HalfTest, F32ToF16MatchesOracleOnTiesAndNeighbours) {
  // Every midpoint between consecutive finite f16 values, and the f32 values just around
  // it: exercises ties-to-even and carries in every binade, subnormals included.
  for (uint32_t h = 0; h < 0x7bff; ++h) {
    const double lo = F16Value(static_cast<uint16_t>(h));
    const double hi = F16Value(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((lo + hi) / 2);  // exact in f32
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
      ASSERT_EQ(F32ToF16(x), F16Oracle(x)) << x;
      ASSERT_EQ(F32ToF16(-x), F16Oracle(-x)) << -x;
    }
  }
}

TEST(HalfTest, F32ToF16MatchesOracleOnRandomBits) {
  std::mt19937 rng(7);
  for (int i = 0; i < 2000000; ++i) {
    const float x = FromBits(rng());
    if (std::isnan(x)) continue;
    ASSERT_EQ(F32ToF16(x), F16Oracle(x)) << std::hexfloat << x;
  }
  // Random values in the f16 range, where most of the work happens.
  std::uniform_real_distribution<float> dist(-70000.0f, 70000.0f);
  std::uniform_int_distribution<int> scale(-30, 0);
  for (int i = 0; i < 1000000; ++i) {
    const float x = std::ldexp(dist(rng), scale(rng));
    ASSERT_EQ(F32ToF16(x), F16Oracle(x)) << std::hexfloat << x;
  }
}

TEST(HalfTest, BF16Conversions) {
  EXPECT_EQ(BF16ToF32(0x3f80), 1.0f);
  EXPECT_EQ(BF16ToF32(0xc000), -2.0f);
  EXPECT_EQ(BF16ToF32(0x7f80), std::numeric_limits<float>::infinity());
  EXPECT_EQ(BF16ToF32(0x0001), std::ldexp(1.0f, -133));  // subnormal
  EXPECT_EQ(Bits(BF16ToF32(0x8000)), 0x80000000u);
  EXPECT_TRUE(std::isnan(BF16ToF32(0x7fc0)));

  EXPECT_EQ(F32ToBF16(1.0f), 0x3f80);
  EXPECT_EQ(F32ToBF16(FromBits(0x3f808000u)), 0x3f80);  // tie, even is 0x3f80
  EXPECT_EQ(F32ToBF16(FromBits(0x3f818000u)), 0x3f82);  // tie, even is 0x3f82
  EXPECT_EQ(F32ToBF16(FromBits(0x3f808001u)), 0x3f81);
  EXPECT_EQ(F32ToBF16(FromBits(0x7f7fffffu)), 0x7f80);  // FLT_MAX rounds to inf
  EXPECT_EQ(F32ToBF16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(F32ToBF16(FromBits(0x00008000u)), 0x0000);  // subnormal tie, even is 0
  EXPECT_EQ(F32ToBF16(FromBits(0x00018000u)), 0x0002);
  const uint16_t nan = F32ToBF16(FromBits(0x7f800001u));  // payload only in dropped bits
  EXPECT_TRUE(std::isnan(BF16ToF32(nan)));
  EXPECT_TRUE(std::signbit(BF16ToF32(F32ToBF16(-std::numeric_limits<float>::quiet_NaN()))));

  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t v = static_cast<uint16_t>(b);
    ASSERT_EQ(Bits(BF16ToF32(v)), b << 16);
    if ((v & 0x7f80) == 0x7f80 && (v & 0x7f) != 0) continue;
    ASSERT_EQ(F32ToBF16(BF16ToF32(v)), v);
  }
  std::mt19937 rng(11);
  for (int i = 0; i < 2000000; ++i) {
    const float x = FromBits(rng());
    if (std::isnan(x)) continue;
    ASSERT_EQ(F32ToBF16(x), BF16Oracle(x)) << std::hexfloat << x;
  }
}

}  // namespace
}  // namespace mnemo::kernels
