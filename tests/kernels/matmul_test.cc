// MatMul: every weight dtype and CPU path against the reference at awkward shapes, with
// an error bound derived from the int16 activation rounding; guard elements after each
// output row; batch invariance (1 row vs R rows) and thread-count invariance, bit for bit.
//
// Error bound. The fast path may quantize each 32-element block b of an activation row to
// int16 with d_b = amax_b / 32767 and x^_k = d_b * round(x_k * (1 / d_b)), so
// |x_k - x^_k| <= e_k = d_b (1/2 + 2^-7) (the rounding of d_b, 1 / d_b and the product moves
// x_k / d_b by at most 32767 * 2^-23 < 2^-7). It then computes sum_k w_k x^_k exactly in
// integers per block and in f32 across blocks and lanes; an f32 sum of k terms has error
// <= k * 2^-24 * sum |terms|. The reference sums in double. So
//   |fast - ref| <= sum_k |w_k| e_k + k 2^-23 sum_k |w_k| (|x_k| + e_k) + 2^-23 (|ref| + |bias|)
// with e_k = 0 for the f32/f16/bf16 weights (f32 activations, exact weight conversion).
// This is about 250 times tighter than the 8-bit scheme's bound (d_b = amax_b / 127), which
// that scheme fails. A second, tighter check compares with the exact product of w and the
// int16-rounded x
// (computed here in double), which catches a wrong element that the first bound's slack
// could hide in long rows.
#include <gtest/gtest.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/dequant.h"
#include "kernels/ops.h"
#include "tests/kernels/ops_test_util.h"
#include "tests/kernels/quant_test_util.h"

namespace mnemo::kernels {
namespace {

using ::mnemo::testing::FloatBits;
using ::mnemo::testing::IsaName;
using ::mnemo::testing::PoisonedMatrix;
using ::mnemo::testing::RandomMatrix;
using ::mnemo::testing::ScopedMaxIsa;
using ::mnemo::testing::SupportedIsas;
using ::mnemo::testing::TouchedGuards;

struct Weights {
  DType dtype;
  int64_t rows;
  int64_t cols;
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // dequantized, [rows, cols]
  WeightView view() const { return {bytes.data(), dtype, rows, cols}; }
};

Weights MakeWeights(DType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  Weights w{t, rows, cols, {}, {}};
  const std::vector<float> src = RandomMatrix(rows, cols, cols, rng, 0.5f);
  const int64_t row_bytes = static_cast<int64_t>(*DTypeBytes(t, cols));
  w.bytes.resize(static_cast<size_t>(rows * row_bytes) + 64);
  w.values.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    QuantizeRowRef(t, src.data() + r * cols, w.bytes.data() + r * row_bytes, cols);
    DequantizeRowRef(t, w.bytes.data() + r * row_bytes, w.values.data() + r * cols, cols);
  }
  return w;
}

bool QuantizesActivations(DType t) { return GetDTypeInfo(t).quantized; }

// The int16 rounding of one activation row (32-element blocks, d = amax / 32767) and the
// per-element bound e_k on |x_k - x^_k|.
void Q16Round(const float* x, int64_t k, std::vector<double>* xq, std::vector<double>* err) {
  xq->assign(static_cast<size_t>(k), 0.0);
  err->assign(static_cast<size_t>(k), 0.0);
  for (int64_t b = 0; b < k; b += 32) {
    float amax = 0.0f;
    for (int64_t i = b; i < b + 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 32767.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int64_t i = b; i < b + 32; ++i) {
      (*xq)[i] = static_cast<double>(std::nearbyint(x[i] * id)) * d;
      (*err)[i] = d * (0.5 + std::ldexp(1.0, -7));
    }
  }
}

const int64_t kRowCounts[] = {1, 2, 3, 7, 17};

std::vector<int64_t> ColCounts(DType t) {
  switch (GetDTypeInfo(t).block_elems) {
    case 1:
      return {1, 7, 16, 33, 100, 257};
    case 32:
      return {32, 64, 96, 256, 512, 768};
    default:
      return {256, 512, 768};
  }
}

void CheckAgainstReference(DType t, CpuIsa isa, int64_t rows, int64_t n_out, int64_t k,
                           bool with_bias, std::mt19937& rng) {
  const Weights w = MakeWeights(t, n_out, k, rng);
  const int64_t ldx = k + 5;
  const int64_t ldy = n_out + 3;
  const std::vector<float> x = RandomMatrix(rows, k, ldx, rng);
  const std::vector<float> bias = RandomMatrix(1, n_out, n_out, rng);
  std::vector<float> got = PoisonedMatrix(rows, ldy);
  std::vector<float> want = PoisonedMatrix(rows, ldy);
  MatMulParams p{w.view(), x.data(), ldx, with_bias ? bias.data() : nullptr, got.data(), ldy, rows};
  MatMul(p);
  p.y = want.data();
  MatMulRef(p);
  ASSERT_EQ(TouchedGuards(got, rows, n_out, ldy), 0) << DTypeName(t) << " " << IsaName(isa);

  const double eps23 = std::ldexp(1.0, -23);
  std::vector<double> xq, err;
  for (int64_t m = 0; m < rows; ++m) {
    const float* xm = x.data() + m * ldx;
    if (QuantizesActivations(t)) {
      Q16Round(xm, k, &xq, &err);
    } else {
      xq.assign(xm, xm + k);
      err.assign(static_cast<size_t>(k), 0.0);
    }
    for (int64_t n = 0; n < n_out; ++n) {
      const float* wn = w.values.data() + n * k;
      double rounding = 0.0, magnitude = 0.0, exact_q = 0.0, magnitude_q = 0.0;
      for (int64_t i = 0; i < k; ++i) {
        rounding += std::fabs(wn[i]) * err[i];
        magnitude += std::fabs(wn[i]) * (std::fabs(xm[i]) + err[i]);
        exact_q += wn[i] * xq[i];
        magnitude_q += std::fabs(wn[i] * xq[i]);
      }
      const double b = with_bias ? bias[n] : 0.0;
      const double ref = want[m * ldy + n];
      const double fast = got[m * ldy + n];
      const double bound =
          rounding + k * eps23 * magnitude + eps23 * (std::fabs(ref) + std::fabs(b));
      ASSERT_LE(std::fabs(fast - ref), bound)
          << DTypeName(t) << " " << IsaName(isa) << " rows " << rows << " k " << k << " m " << m
          << " n " << n << " ref " << ref;
      const double tight =
          k * eps23 * magnitude_q + eps23 * (std::fabs(exact_q + b) + std::fabs(b));
      ASSERT_LE(std::fabs(fast - (exact_q + b)), tight)
          << DTypeName(t) << " " << IsaName(isa) << " (vs int16-rounded x) k " << k << " n " << n;
    }
  }
}

class MatMulDTypeTest : public ::testing::TestWithParam<DType> {};

TEST_P(MatMulDTypeTest, MatchesReferenceOnEveryPath) {
  const DType t = GetParam();
  std::mt19937 rng(31 + static_cast<int>(t));
  for (CpuIsa isa : SupportedIsas()) {
    ScopedMaxIsa cap(isa);
    for (int64_t rows : kRowCounts) {
      for (int64_t k : ColCounts(t)) {
        for (int64_t n_out : {1, 5, 19}) {
          CheckAgainstReference(t, isa, rows, n_out, k, (rows + n_out) % 2 == 0, rng);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

// Row m of a call with R rows equals a call with row m alone, bit for bit, on every path,
// at 1 and 2 threads; large enough shapes that the fast kernels tile rows and columns.
TEST_P(MatMulDTypeTest, BatchAndThreadInvariant) {
  const DType t = GetParam();
  std::mt19937 rng(41 + static_cast<int>(t));
  const int64_t k = GetDTypeInfo(t).block_elems == 1 ? 203 : 512;
  const int64_t n_out = 131;
  const int64_t rows = 37;
  const Weights w = MakeWeights(t, n_out, k, rng);
  const std::vector<float> x = RandomMatrix(rows, k, k, rng);
  const std::vector<float> bias = RandomMatrix(1, n_out, n_out, rng);
  for (CpuIsa isa : SupportedIsas()) {
    ScopedMaxIsa cap(isa);
    std::vector<float> all(rows * n_out);
    MatMul({w.view(), x.data(), k, bias.data(), all.data(), n_out, rows});
    std::vector<float> all_1thread(rows * n_out);
    tbb::task_arena one_thread(1);
    one_thread.execute([&] {
      MatMul({w.view(), x.data(), k, bias.data(), all_1thread.data(), n_out, rows});
    });
    for (int64_t i = 0; i < rows * n_out; ++i) {
      ASSERT_EQ(FloatBits(all[i]), FloatBits(all_1thread[i]))
          << DTypeName(t) << " " << IsaName(isa);
    }
    for (int64_t m = 0; m < rows; ++m) {
      std::vector<float> one(n_out);
      MatMul({w.view(), x.data() + m * k, k, bias.data(), one.data(), n_out, 1});
      for (int64_t n = 0; n < n_out; ++n) {
        ASSERT_EQ(FloatBits(one[n]), FloatBits(all[m * n_out + n]))
            << DTypeName(t) << " " << IsaName(isa) << " row " << m << " col " << n;
      }
    }
    // A sub-batch (rows 5..11) also agrees: tiles start at a different row.
    std::vector<float> some(7 * n_out);
    MatMul({w.view(), x.data() + 5 * k, k, bias.data(), some.data(), n_out, 7});
    for (int64_t i = 0; i < 7 * n_out; ++i) {
      ASSERT_EQ(FloatBits(some[i]), FloatBits(all[5 * n_out + i]))
          << DTypeName(t) << " " << IsaName(isa);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllWeightDTypes, MatMulDTypeTest,
                         ::testing::ValuesIn(::mnemo::testing::WeightDTypes()),
                         [](const ::testing::TestParamInfo<DType>& param_info) {
                           return std::string(DTypeName(param_info.param));
                         });

// Exactly representable inputs give exactly the integer answer on every path.
TEST(MatMulTest, SmallIntegersAreExact) {
  const int64_t k = 64;
  const int64_t n_out = 3;
  std::vector<float> wf(n_out * k), x(2 * k);
  for (int64_t i = 0; i < n_out * k; ++i) wf[i] = static_cast<float>(static_cast<int>(i % 7) - 3);
  for (int64_t i = 0; i < 2 * k; ++i) x[i] = static_cast<float>(static_cast<int>(i % 5) - 2);
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    std::vector<uint8_t> wb(*DTypeBytes(t, n_out * k));
    QuantizeRowRef(t, wf.data(), wb.data(), n_out * k);
    for (CpuIsa isa : SupportedIsas()) {
      ScopedMaxIsa cap(isa);
      std::vector<float> y(2 * n_out);
      MatMul({{wb.data(), t, n_out, k}, x.data(), k, nullptr, y.data(), n_out, 2});
      for (int64_t m = 0; m < 2; ++m) {
        for (int64_t n = 0; n < n_out; ++n) {
          double want = 0;
          for (int64_t i = 0; i < k; ++i) want += wf[n * k + i] * x[m * k + i];
          ASSERT_EQ(y[m * n_out + n], want) << DTypeName(t) << " " << IsaName(isa);
        }
      }
    }
  }
}

// The activation quantizer gives the same bytes on every path: q = round-half-even(x / d)
// with d = amax / 32767, per-16 sums, and zero blocks past the row's end.
TEST(MatMulTest, ActivationQuantizationIsIdenticalOnEveryPath) {
  std::mt19937 rng(51);
  for (int64_t k : {32, 96, 128, 160, 544}) {
    std::vector<float> x = RandomMatrix(1, k, k, rng, 0.7f);
    // Block 0 has amax 32767, so d = 1 and ties at .5 must round to even.
    x[0] = 32767.0f;
    x[1] = 2.5f;
    x[2] = 3.5f;
    x[3] = -2.5f;
    x[4] = -0.5f;
    const int64_t groups = internal::ActGroupsPerRow(k);
    std::vector<std::vector<internal::ActGroup>> results;
    for (CpuIsa isa : SupportedIsas()) {
      ScopedMaxIsa cap(isa);
      std::vector<internal::ActGroup> q(static_cast<size_t>(groups));
      std::memset(q.data(), 0x5a, q.size() * sizeof(internal::ActGroup));
      internal::QuantizeActRow(x.data(), k, q.data());
      results.push_back(q);
    }
    const internal::ActGroup& g0 = results[0][0];
    EXPECT_EQ(internal::ActQuant(g0, 0, 0), 32767);
    EXPECT_EQ(internal::ActQuant(g0, 0, 1), 2);
    EXPECT_EQ(internal::ActQuant(g0, 0, 2), 4);
    EXPECT_EQ(internal::ActQuant(g0, 0, 3), -2);
    EXPECT_EQ(internal::ActQuant(g0, 0, 4), 0);
    EXPECT_EQ(g0.d[0], 1.0f);
    std::vector<double> xq, err;
    Q16Round(x.data(), k, &xq, &err);
    for (int64_t b = 0; b < groups * 4; ++b) {
      const internal::ActGroup& g = results[0][b / 4];
      const int j = static_cast<int>(b % 4);
      int32_t sum_lo = 0, sum_hi = 0;
      for (int i = 0; i < 32; ++i) {
        const int q = internal::ActQuant(g, j, i);
        if (b < k / 32) {
          ASSERT_EQ(q * static_cast<double>(g.d[4 * j]), xq[32 * b + i]) << "k " << k << " " << b;
        } else {
          ASSERT_EQ(q, 0);
        }
        (i < 16 ? sum_lo : sum_hi) += q;
      }
      EXPECT_EQ(g.nsum_lo[4 * j], -sum_lo);
      EXPECT_EQ(g.nsum_hi[4 * j], -sum_hi);
      EXPECT_EQ(g.nsum_lo[4 * j + 1], 0);
      EXPECT_EQ(g.dsum[4 * j], g.d[4 * j] * static_cast<float>(sum_lo + sum_hi));
    }
    for (size_t p = 1; p < results.size(); ++p) {
      ASSERT_EQ(std::memcmp(results[0].data(), results[p].data(),
                            results[0].size() * sizeof(internal::ActGroup)),
                0)
          << "path " << p << " k " << k;
    }
  }
}

TEST(MatMulTest, RejectsAliasedOutput) {
  std::vector<float> w(8 * 8, 1.0f), buf(64, 1.0f);
  MatMulParams p{{w.data(), DType::kF32, 8, 8}, buf.data(), 8, nullptr, buf.data() + 4, 8, 2};
  EXPECT_DEATH(MatMul(p), "aliases");
}

}  // namespace
}  // namespace mnemo::kernels
