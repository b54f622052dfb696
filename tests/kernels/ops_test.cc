// The row-wise ops (Embedding, RmsNorm, SwiGlu, Softmax): every CPU path against the
// scalar reference at awkward sizes, guard elements after each output row, and batch
// invariance (a row's result does not depend on the other rows of the call).
#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "kernels/dequant.h"
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

constexpr float kEps23 = 1.0f / (1 << 23);
const int64_t kRowCounts[] = {1, 2, 3, 7, 17};
const int64_t kColCounts[] = {1, 3, 8, 15, 16, 17, 31, 33, 64, 100, 577};

TEST(OpsTest, IsaNamesAndCap) {
  EXPECT_STREQ(CpuIsaName(CpuIsa::kScalar), "scalar");
  EXPECT_STREQ(CpuIsaName(CpuIsa::kAvx2), "avx2");
  EXPECT_STREQ(CpuIsaName(CpuIsa::kAvx512), "avx512");
  ScopedMaxIsa cap(CpuIsa::kScalar);
  EXPECT_EQ(ActiveCpuIsa(), CpuIsa::kScalar);
}

TEST(OpsTest, EmbeddingMatchesReferenceBitForBit) {
  std::mt19937 rng(7);
  for (CpuIsa isa : SupportedIsas()) {
    ScopedMaxIsa cap(isa);
    for (DType t : ::mnemo::testing::WeightDTypes()) {
      const int64_t cols = GetDTypeInfo(t).block_elems == 1 ? 37 : 2 * GetDTypeInfo(t).block_elems;
      const int64_t vocab = 11;
      std::vector<float> table_f = RandomMatrix(vocab, cols, cols, rng);
      const int64_t row_bytes = static_cast<int64_t>(*DTypeBytes(t, cols));
      std::vector<uint8_t> table(static_cast<size_t>(row_bytes * vocab));
      for (int64_t r = 0; r < vocab; ++r) {
        QuantizeRowRef(t, table_f.data() + r * cols, table.data() + r * row_bytes, cols);
      }
      const std::vector<int32_t> ids = {3, 0, 10, 3, 7, 1, 9};
      const int64_t n = static_cast<int64_t>(ids.size());
      const int64_t ld = cols + 5;
      std::vector<float> got = PoisonedMatrix(n, ld);
      std::vector<float> want = PoisonedMatrix(n, ld);
      EmbeddingParams p{{table.data(), t, vocab, cols}, ids.data(), n, got.data(), ld};
      Embedding(p);
      p.out = want.data();
      EmbeddingRef(p);
      for (int64_t i = 0; i < n * ld; ++i) {
        ASSERT_EQ(FloatBits(got[i]), FloatBits(want[i])) << DTypeName(t) << " " << IsaName(isa);
      }
      EXPECT_EQ(TouchedGuards(got, n, cols, ld), 0);
    }
  }
}

TEST(OpsTest, EmbeddingRejectsOutOfRangeIds) {
  std::vector<float> table(4 * 8, 1.0f);
  std::vector<float> out(8);
  const int32_t bad = 4;
  EmbeddingParams p{{table.data(), DType::kF32, 4, 8}, &bad, 1, out.data(), 8};
  EXPECT_DEATH(Embedding(p), "token id 4");
}

// |fast - ref| <= (cols + 4) * 2^-23 * |ref|: the sum of squares in f32 has relative error
// <= cols * 2^-24; the square root, reciprocal and two products add a few ulps.
TEST(OpsTest, RmsNormMatchesReference) {
  std::mt19937 rng(11);
  for (CpuIsa isa : SupportedIsas()) {
    ScopedMaxIsa cap(isa);
    for (int64_t rows : kRowCounts) {
      for (int64_t cols : kColCounts) {
        const int64_t ld = cols + 3;
        std::vector<float> x = RandomMatrix(rows, cols, ld, rng, 3.0f);
        std::vector<float> w = RandomMatrix(1, cols, cols, rng);
        std::vector<float> got = PoisonedMatrix(rows, ld);
        std::vector<float> want = PoisonedMatrix(rows, ld);
        RmsNormParams p{x.data(), ld, w.data(), got.data(), ld, rows, cols, 1e-5f};
        RmsNorm(p);
        p.y = want.data();
        RmsNormRef(p);
        const float rel = static_cast<float>(cols + 4) * kEps23;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < cols; ++c) {
            const float ref = want[r * ld + c];
            ASSERT_NEAR(got[r * ld + c], ref, rel * std::fabs(ref) + 1e-30f)
                << IsaName(isa) << " rows " << rows << " cols " << cols;
          }
        }
        EXPECT_EQ(TouchedGuards(got, rows, cols, ld), 0);

        // In place gives the same bits as out of place.
        std::vector<float> inplace = x;
        p.x = inplace.data();
        p.y = inplace.data();
        RmsNorm(p);
        for (int64_t i = 0; i < rows * ld; ++i) ASSERT_EQ(FloatBits(inplace[i]), FloatBits(got[i]));
      }
    }
  }
}

// silu(g) * u in f32 with a vectorised exp: |fast - ref| <= 2e-6 * |ref|.
TEST(OpsTest, SwiGluMatchesReference) {
  std::mt19937 rng(12);
  for (CpuIsa isa : SupportedIsas()) {
    ScopedMaxIsa cap(isa);
    for (int64_t rows : kRowCounts) {
      for (int64_t cols : kColCounts) {
        std::vector<float> gate = RandomMatrix(rows, cols, cols + 1, rng, 6.0f);
        std::vector<float> up = RandomMatrix(rows, cols, cols + 2, rng);
        const int64_t ld = cols + 3;
        std::vector<float> got = PoisonedMatrix(rows, ld);
        std::vector<float> want = PoisonedMatrix(rows, ld);
        SwiGluParams p{gate.data(), cols + 1, up.data(), cols + 2, got.data(), ld, rows, cols};
        SwiGlu(p);
        p.out = want.data();
        SwiGluRef(p);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < cols; ++c) {
            const float ref = want[r * ld + c];
            ASSERT_NEAR(got[r * ld + c], ref, 2e-6f * std::fabs(ref) + 1e-37f)
                << IsaName(isa) << " gate " << gate[r * (cols + 1) + c];
          }
        }
        EXPECT_EQ(TouchedGuards(got, rows, cols, ld), 0);
      }
    }
  }
}

TEST(OpsTest, SwiGluExtremeGates) {
  const std::vector<float> gate = {-200.0f, -88.0f, -20.0f, -1e-30f, 0.0f,
                                   1e-30f,  20.0f,  89.0f,  300.0f};
  const int64_t cols = static_cast<int64_t>(gate.size());
  const std::vector<float> up(gate.size(), 1.5f);
  for (CpuIsa isa : SupportedIsas()) {
    ScopedMaxIsa cap(isa);
    std::vector<float> got(gate.size());
    std::vector<float> want(gate.size());
    SwiGluParams p{gate.data(), cols, up.data(), cols, got.data(), cols, 1, cols};
    SwiGlu(p);
    p.out = want.data();
    SwiGluRef(p);
    for (size_t i = 0; i < gate.size(); ++i) {
      ASSERT_TRUE(std::isfinite(got[i])) << gate[i];
      ASSERT_NEAR(got[i], want[i], 2e-6f * std::fabs(want[i]) + 1e-37f)
          << gate[i] << " " << IsaName(isa);
    }
  }
}

// Softmax: the f32 sum of cols exponentials has relative error <= cols * 2^-24, each exp
// ~2 ulps: |fast - ref| <= (2e-6 + cols * 2^-23) * ref. Masked (-inf) entries give exactly 0;
// a fully masked row gives all zeros.
TEST(OpsTest, SoftmaxMatchesReference) {
  std::mt19937 rng(13);
  for (CpuIsa isa : SupportedIsas()) {
    ScopedMaxIsa cap(isa);
    for (int64_t rows : kRowCounts) {
      for (int64_t cols : kColCounts) {
        const int64_t ld = cols + 2;
        std::vector<float> x = RandomMatrix(rows, cols, ld, rng, 4.0f);
        for (int64_t r = 0; r < rows; ++r) {
          if (cols > 2 && r % 2 == 1) x[r * ld + 1] = -std::numeric_limits<float>::infinity();
        }
        if (rows > 2) {  // a fully masked row
          for (int64_t c = 0; c < cols; ++c) x[ld + c] = -std::numeric_limits<float>::infinity();
        }
        std::vector<float> got = x;
        std::vector<float> want = x;
        Softmax({got.data(), ld, rows, cols});
        SoftmaxRef({want.data(), ld, rows, cols});
        const float rel = 2e-6f + static_cast<float>(cols) * kEps23;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < cols; ++c) {
            const float ref = want[r * ld + c];
            if (x[r * ld + c] == -std::numeric_limits<float>::infinity()) {
              ASSERT_EQ(got[r * ld + c], 0.0f);
              continue;
            }
            ASSERT_GT(ref, 0.0f);
            ASSERT_NEAR(got[r * ld + c], ref, rel * ref)
                << IsaName(isa) << " rows " << rows << " cols " << cols;
          }
        }
        EXPECT_EQ(TouchedGuards(got, rows, cols, ld), 0);
      }
    }
  }
}

// Every row-wise op gives a row the same bits whether it is alone in the call or one of 17.
TEST(OpsTest, RowOpsAreBatchInvariant) {
  std::mt19937 rng(14);
  const int64_t rows = 17;
  const int64_t cols = 203;
  for (CpuIsa isa : SupportedIsas()) {
    ScopedMaxIsa cap(isa);
    std::vector<float> x = RandomMatrix(rows, cols, cols, rng, 2.0f);
    std::vector<float> u = RandomMatrix(rows, cols, cols, rng);
    std::vector<float> w = RandomMatrix(1, cols, cols, rng);
    std::vector<float> norm_all(rows * cols), glu_all(rows * cols), soft_all = x;
    RmsNorm({x.data(), cols, w.data(), norm_all.data(), cols, rows, cols, 1e-6f});
    SwiGlu({x.data(), cols, u.data(), cols, glu_all.data(), cols, rows, cols});
    Softmax({soft_all.data(), cols, rows, cols});
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> norm1(cols), glu1(cols),
          soft1(x.begin() + r * cols, x.begin() + (r + 1) * cols);
      RmsNorm({x.data() + r * cols, cols, w.data(), norm1.data(), cols, 1, cols, 1e-6f});
      SwiGlu({x.data() + r * cols, cols, u.data() + r * cols, cols, glu1.data(), cols, 1, cols});
      Softmax({soft1.data(), cols, 1, cols});
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_EQ(FloatBits(norm1[c]), FloatBits(norm_all[r * cols + c])) << IsaName(isa);
        ASSERT_EQ(FloatBits(glu1[c]), FloatBits(glu_all[r * cols + c])) << IsaName(isa);
        ASSERT_EQ(FloatBits(soft1[c]), FloatBits(soft_all[r * cols + c])) << IsaName(isa);
      }
    }
  }
}

}  // namespace
}  // namespace mnemo::kernels
