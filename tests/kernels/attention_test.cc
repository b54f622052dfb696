// PagedAttention: the reference against a direct double-precision attention over contiguous
// K/V copies, and the fast versions against the reference, at awkward shapes with scattered
// block tables, NaN-poisoned unused KV and guard sentinels around the output.
#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "tests/kernels/attention_test_util.h"

namespace mnemo::kernels {
namespace {

using testing::AttnCase;
using testing::AttnFixture;
using testing::kSentinel;
using testing::SeqSpec;

// Sequences of kv lengths 1, 15, 16, 17 and 100: decode rows, full prefills and a chunk.
std::vector<SeqSpec> MixedSeqs() {
  return {{1, 1}, {15, 15}, {16, 1}, {17, 17}, {100, 1}, {100, 37}, {16, 16}};
}

std::vector<AttnCase> Sweep() {
  std::vector<AttnCase> cases;
  uint32_t seed = 1;
  for (int hd : {8, 64, 80, 128}) {
    for (int bt : {16, 1, 7}) {
      for (auto [nh, nkv] : {std::pair{8, 4}, std::pair{9, 3}, std::pair{4, 4}}) {
        for (DType t : {DType::kF16, DType::kBF16}) {
          for (int window : {0, 5}) {
            AttnCase c;
            c.head_dim = hd;
            c.block_tokens = bt;
            c.n_heads = nh;
            c.n_kv_heads = nkv;
            c.dtype = t;
            c.sliding_window = window;
            c.seqs = MixedSeqs();
            c.seed = seed++;
            c.kv_scale = (seed % 3 == 0) ? 3.0f : 1.0f;
            cases.push_back(c);
          }
        }
      }
    }
  }
  return cases;
}

// The guard columns after each output row and the two rows after the last are untouched.
void ExpectSentinelsIntact(const AttnFixture& f, const std::vector<float>& out) {
  const int64_t used = int64_t{f.c().n_heads} * f.c().head_dim;
  int bad = 0;
  for (int64_t r = 0; r < f.rows() + 2; ++r) {
    for (int64_t i = (r < f.rows() ? used : 0); i < f.ldo(); ++i) {
      if (out[r * f.ldo() + i] != kSentinel) ++bad;
    }
  }
  EXPECT_EQ(bad, 0) << "writes outside the output rows";
}

TEST(PagedAttentionRefTest, MatchesDirectDoubleAttention) {
  for (const AttnCase& c : Sweep()) {
    SCOPED_TRACE(c.Name());
    AttnFixture f(c);
    std::vector<float> out = f.NewOut();
    PagedAttentionRef(f.Params(out.data()));
    const std::vector<double> want = f.Direct();
    const int hd = c.head_dim;
    int bad = 0;
    for (int r = 0; r < f.rows(); ++r) {
      for (int i = 0; i < c.n_heads * hd; ++i) {
        const double w = want[static_cast<size_t>(r) * c.n_heads * hd + i];
        const float got = out[r * f.ldo() + i];
        // Output rounding to f32 plus the f32 scale: a few ulp.
        if (!(std::fabs(got - w) <= 1e-6 * (1.0 + std::fabs(w)))) {
          if (++bad < 5)
            ADD_FAILURE() << "row " << r << " elem " << i << ": " << got << " vs " << w;
        }
      }
    }
    EXPECT_EQ(bad, 0);
    ExpectSentinelsIntact(f, out);
    if (HasFailure()) return;
  }
}

// A single token attends only to itself: the output is exactly its V row (softmax of one).
TEST(PagedAttentionRefTest, SingleTokenReturnsItsValue) {
  AttnCase c;
  c.seqs = {{1, 1}};
  c.n_heads = 4;
  c.n_kv_heads = 2;
  AttnFixture f(c);
  std::vector<float> out = f.NewOut();
  PagedAttentionRef(f.Params(out.data()));
  const std::vector<double> want = f.Direct();  // = V row 0 of each head's kv head
  for (int i = 0; i < c.n_heads * c.head_dim; ++i) {
    EXPECT_EQ(out[i], static_cast<float>(want[i])) << i;
  }
}

const char* IsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kScalar:
      break;
  }
  return "scalar";
}

// Fast vs reference: f32 online softmax vs double two-pass, over at most 100 keys.
// Tolerance: 1e-5 * (1 + |ref|) per element (the observed worst is printed).
TEST(PagedAttentionTest, FastMatchesReferenceOnEveryPath) {
  const std::vector<AttnCase> cases = Sweep();
  for (CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    SCOPED_TRACE(IsaName(isa));
    double worst = 0.0;
    int ran = 0;
    for (const AttnCase& c : cases) {
      SCOPED_TRACE(c.Name());
      AttnFixture f(c);
      std::vector<float> ref = f.NewOut();
      std::vector<float> fast = f.NewOut();
      PagedAttentionRef(f.Params(ref.data()));
      if (!PagedAttentionForIsa(f.Params(fast.data()), isa)) break;
      ++ran;
      int bad = 0;
      for (int r = 0; r < f.rows(); ++r) {
        for (int i = 0; i < c.n_heads * c.head_dim; ++i) {
          const double want = ref[r * f.ldo() + i];
          const double got = fast[r * f.ldo() + i];
          const double err = std::fabs(got - want) / (1.0 + std::fabs(want));
          worst = std::max(worst, err);
          if (!(err <= 1e-5) && ++bad < 5) {
            ADD_FAILURE() << "row " << r << " elem " << i << ": " << got << " vs " << want;
          }
        }
      }
      ExpectSentinelsIntact(f, fast);
      if (HasFailure()) return;
    }
    if (ran == 0) {
      std::printf("[ SKIPPED  ] %s: not supported by this processor\n", IsaName(isa));
    } else {
      std::printf("[   INFO   ] %s: %d cases, worst error %.3g\n", IsaName(isa), ran, worst);
    }
  }
}

// The default entry point (best path) on a case with every feature at once.
TEST(PagedAttentionTest, DefaultPathMatchesReference) {
  AttnCase c;
  c.head_dim = 80;
  c.block_tokens = 16;
  c.n_heads = 9;
  c.n_kv_heads = 3;
  c.dtype = DType::kBF16;
  c.sliding_window = 20;
  c.seqs = MixedSeqs();
  AttnFixture f(c);
  std::vector<float> ref = f.NewOut();
  std::vector<float> fast = f.NewOut();
  PagedAttentionRef(f.Params(ref.data()));
  PagedAttention(f.Params(fast.data()));
  for (int r = 0; r < f.rows(); ++r) {
    for (int i = 0; i < c.n_heads * c.head_dim; ++i) {
      ASSERT_NEAR(fast[r * f.ldo() + i], ref[r * f.ldo() + i],
                  1e-5 * (1.0 + std::fabs(ref[r * f.ldo() + i])))
          << r << " " << i;
    }
  }
  ExpectSentinelsIntact(f, fast);
}

}  // namespace
}  // namespace mnemo::kernels
