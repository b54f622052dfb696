// RoPE: frequency tables against hand-computed values, the rotation against a direct formula
// in double (normal and NeoX pairs, partial rotary dims), norm preservation, untouched
// non-rotary dims and guard elements, every CPU path.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "tests/kernels/ops_test_util.h"

namespace mnemo::kernels {
namespace {

using ::mnemo::testing::FloatBits;
using ::mnemo::testing::IsaName;
using ::mnemo::testing::RandomMatrix;
using ::mnemo::testing::ScopedMaxIsa;
using ::mnemo::testing::SupportedIsas;
using ::mnemo::testing::TouchedGuards;

// theta is rounded once from double: within 1 ulp of the exact value.
void ExpectTheta(const RopeTable& t, int i, double want) {
  ASSERT_LT(static_cast<size_t>(i), t.theta.size());
  EXPECT_NEAR(t.theta[i], want, want * 1.2e-7) << "pair " << i;
}

TEST(RopeTableTest, Unscaled) {
  RopeFreqConfig c;
  c.base = 10000.0f;
  c.rotary_dims = 8;
  const RopeTable t = ComputeRopeTable(c);
  ASSERT_EQ(t.theta.size(), 4u);
  ExpectTheta(t, 0, 1.0);
  ExpectTheta(t, 1, 0.1);
  ExpectTheta(t, 2, 0.01);
  ExpectTheta(t, 3, 0.001);
  EXPECT_EQ(t.mscale, 1.0f);
}

TEST(RopeTableTest, LinearAndFreqFactors) {
  const float ff[4] = {1.0f, 2.0f, 4.0f, 8.0f};
  RopeFreqConfig c;
  c.base = 10000.0f;
  c.rotary_dims = 8;
  c.freq_factors = ff;
  RopeTable t = ComputeRopeTable(c);
  ExpectTheta(t, 1, 0.05);
  ExpectTheta(t, 3, 0.000125);
  c.freq_factors = nullptr;
  c.scaling = RopeScaling::kLinear;
  c.factor = 4.0f;
  t = ComputeRopeTable(c);
  ExpectTheta(t, 0, 0.25);
  ExpectTheta(t, 2, 0.0025);
  EXPECT_EQ(t.mscale, 1.0f);
}

// Llama 3.1's settings: base 500000, factor 8, low 1, high 4, original context 8192.
// Wavelengths below 2048 keep theta (i <= 28), above 8192 divide by 8 (i >= 36), between
// they mix. Values computed by hand (Python, double) from Meta's formula.
TEST(RopeTableTest, Llama3) {
  RopeFreqConfig c;
  c.base = 500000.0f;
  c.rotary_dims = 128;
  c.scaling = RopeScaling::kLlama3;
  c.factor = 8.0f;
  c.low_freq_factor = 1.0f;
  c.high_freq_factor = 4.0f;
  c.original_context = 8192;
  const RopeTable t = ComputeRopeTable(c);
  ASSERT_EQ(t.theta.size(), 64u);
  ExpectTheta(t, 0, 1.0);
  ExpectTheta(t, 20, 0.016560440080994446);    // high frequency: unchanged
  ExpectTheta(t, 30, 0.0013718935677611381);   // smoothed (unscaled 0.0021311195)
  ExpectTheta(t, 33, 0.00031269375038406517);  // smoothed (unscaled 0.0011520427)
  ExpectTheta(t, 63, 3.068925988914511e-07);   // low frequency: / 8
  EXPECT_EQ(t.mscale, 1.0f);
}

// YaRN: base 10000, 64 dims, factor 4, original context 4096, beta 32/1: the correction
// dims are floor(10.47) = 10 and ceil(22.5) = 23; pairs <= 10 keep theta, >= 23 divide by
// 4, pair 16 mixes 7/13 of theta with 6/13 of theta/4. mscale = (0.1 ln 4 + 1) * 0.5.
TEST(RopeTableTest, Yarn) {
  RopeFreqConfig c;
  c.base = 10000.0f;
  c.rotary_dims = 64;
  c.scaling = RopeScaling::kYarn;
  c.factor = 4.0f;
  c.original_context = 4096;
  c.beta_fast = 32.0f;
  c.beta_slow = 1.0f;
  c.attn_factor = 0.5f;
  const RopeTable t = ComputeRopeTable(c);
  ExpectTheta(t, 0, 1.0);
  ExpectTheta(t, 10, 0.05623413251903491);
  ExpectTheta(t, 16, 0.006538461538461538);
  ExpectTheta(t, 23, 0.000333380358040831);
  ExpectTheta(t, 31, 3.33380358040831e-05);
  EXPECT_NEAR(t.mscale, 0.5693147180559945, 1e-7);
}

struct RopeCase {
  RopeMode mode;
  int n_heads;
  int head_dim;
  int rotary_dims;
  int64_t rows;
};

// Expected rotation in double straight from the definition (theta_i = base^(-2i/R)).
std::vector<float> DirectRope(const std::vector<float>& x, int64_t ld, const RopeCase& rc,
                              const std::vector<int32_t>& pos, double base, double mscale) {
  std::vector<float> y = x;
  const int half = rc.rotary_dims / 2;
  for (int64_t r = 0; r < rc.rows; ++r) {
    for (int h = 0; h < rc.n_heads; ++h) {
      for (int i = 0; i < half; ++i) {
        const double theta = std::pow(base, -2.0 * i / rc.rotary_dims);
        const double angle = pos[r] * static_cast<double>(static_cast<float>(theta));
        const int64_t o = r * ld + static_cast<int64_t>(h) * rc.head_dim;
        const int64_t a = o + (rc.mode == RopeMode::kNormal ? 2 * i : i);
        const int64_t b = o + (rc.mode == RopeMode::kNormal ? 2 * i + 1 : i + half);
        y[a] = static_cast<float>(mscale * (x[a] * std::cos(angle) - x[b] * std::sin(angle)));
        y[b] = static_cast<float>(mscale * (x[a] * std::sin(angle) + x[b] * std::cos(angle)));
      }
    }
  }
  return y;
}

TEST(RopeTest, MatchesDirectFormulaAndPreservesNorm) {
  std::mt19937 rng(21);
  const RopeCase cases[] = {
      {RopeMode::kNormal, 3, 64, 64, 1}, {RopeMode::kNeox, 3, 64, 64, 2},
      {RopeMode::kNormal, 2, 48, 32, 3}, {RopeMode::kNeox, 5, 80, 20, 7},
      {RopeMode::kNeox, 1, 6, 6, 17},    {RopeMode::kNormal, 4, 128, 128, 5},
      {RopeMode::kNeox, 9, 64, 64, 17},  {RopeMode::kNormal, 2, 18, 18, 4},
  };
  for (CpuIsa isa : SupportedIsas()) {
    ScopedMaxIsa cap(isa);
    for (const RopeCase& rc : cases) {
      for (const float mscale : {1.0f, 1.25f}) {
        RopeFreqConfig fc;
        fc.base = 10000.0f;
        fc.rotary_dims = rc.rotary_dims;
        const RopeTable table = ComputeRopeTable(fc);
        const int64_t width = static_cast<int64_t>(rc.n_heads) * rc.head_dim;
        const int64_t ld = width + 3;
        const std::vector<float> x = RandomMatrix(rc.rows, width, ld, rng);
        std::vector<int32_t> pos(rc.rows);
        for (int64_t r = 0; r < rc.rows; ++r) pos[r] = static_cast<int32_t>(rng() % 40000);
        pos[0] = 0;
        const std::vector<float> want = DirectRope(x, ld, rc, pos, 10000.0, mscale);
        std::vector<float> got = x;
        std::vector<float> ref = x;
        RopeParams p{got.data(),     ld,      rc.rows,    rc.n_heads,         rc.head_dim,
                     rc.rotary_dims, rc.mode, pos.data(), table.theta.data(), mscale};
        Rope(p);
        p.x = ref.data();
        RopeRef(p);
        const int half = rc.rotary_dims / 2;
        for (int64_t r = 0; r < rc.rows; ++r) {
          for (int h = 0; h < rc.n_heads; ++h) {
            const int64_t o = r * ld + static_cast<int64_t>(h) * rc.head_dim;
            for (int i = 0; i < half; ++i) {
              const int64_t a = o + (rc.mode == RopeMode::kNormal ? 2 * i : i);
              const int64_t b = o + (rc.mode == RopeMode::kNormal ? 2 * i + 1 : i + half);
              // f32 rotation: two products and a sum, cos/sin rounded to f32: a few ulps of
              // the pair's magnitude.
              const double mag = mscale * (std::fabs(x[a]) + std::fabs(x[b]));
              const double tol = 4.0 * std::ldexp(mag, -23);
              ASSERT_NEAR(got[a], want[a], tol) << IsaName(isa) << " pair " << i;
              ASSERT_NEAR(got[b], want[b], tol) << IsaName(isa) << " pair " << i;
              ASSERT_NEAR(ref[a], want[a], tol);
              ASSERT_NEAR(ref[b], want[b], tol);
              const double n_in = std::hypot(x[a], x[b]) * mscale;
              const double n_out = std::hypot(got[a], got[b]);
              ASSERT_NEAR(n_out, n_in, 4.0 * std::ldexp(n_in, -23) + 1e-30);
            }
            for (int c = rc.rotary_dims; c < rc.head_dim; ++c) {  // beyond rotary_dims
              ASSERT_EQ(FloatBits(got[o + c]), FloatBits(x[o + c]));
            }
          }
          if (pos[r] == 0 && mscale == 1.0f) {  // position 0 is the identity
            for (int64_t c = 0; c < width; ++c) ASSERT_EQ(got[r * ld + c], x[r * ld + c]);
          }
        }
        EXPECT_EQ(TouchedGuards(got, rc.rows, width, ld), 0);
      }
    }
  }
}

TEST(RopeTest, BatchInvariant) {
  std::mt19937 rng(22);
  RopeFreqConfig fc;
  fc.rotary_dims = 64;
  const RopeTable table = ComputeRopeTable(fc);
  const int64_t rows = 9;
  const int64_t width = 4 * 64;
  for (CpuIsa isa : SupportedIsas()) {
    ScopedMaxIsa cap(isa);
    const std::vector<float> x = RandomMatrix(rows, width, width, rng);
    std::vector<int32_t> pos(rows);
    for (int64_t r = 0; r < rows; ++r) pos[r] = static_cast<int32_t>(rng() % 5000);
    std::vector<float> all = x;
    Rope({all.data(), width, rows, 4, 64, 64, RopeMode::kNeox, pos.data(), table.theta.data(),
          1.0f});
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> one(x.begin() + r * width, x.begin() + (r + 1) * width);
      Rope({one.data(), width, 1, 4, 64, 64, RopeMode::kNeox, pos.data() + r, table.theta.data(),
            1.0f});
      for (int64_t c = 0; c < width; ++c)
        ASSERT_EQ(FloatBits(one[c]), FloatBits(all[r * width + c]));
    }
  }
}

}  // namespace
}  // namespace mnemo::kernels
