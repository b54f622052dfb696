// Batch invariance of the fast PagedAttention, bit for bit, on every supported ISA path:
// a sequence alone vs in a batch; a prefill row vs the same position as a decode row;
// one prefill call vs chunked prefill; one thread vs many.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/attention.h"
#include "tbb/global_control.h"
#include "tests/kernels/attention_test_util.h"

namespace mnemo::kernels {
namespace {

using testing::AttnCase;
using testing::AttnFixture;
using testing::BitEqual;
using testing::SeqSlice;
using testing::ShapeCase;

constexpr CpuIsa kIsas[] = {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512};

std::vector<AttnCase> Cases() {
  std::vector<AttnCase> cases;
  const int shapes[][5] = {
      // head_dim, block_tokens, n_heads, n_kv_heads, window
      {64, 16, 9, 3, 0},
      {80, 7, 8, 4, 0},
      {128, 16, 4, 4, 33},
      {8, 1, 9, 3, 0},
  };
  uint32_t seed = 100;
  for (const auto& s : shapes) {
    for (DType t : {DType::kF16, DType::kBF16}) {
      AttnCase c = ShapeCase(s, t);
      c.seqs = {{100, 100}, {17, 1}, {40, 23}, {1, 1}, {64, 64}};
      c.seed = seed++;
      c.kv_scale = 2.0f;
      cases.push_back(c);
    }
  }
  return cases;
}

// Runs rows [r0, r1) of sequence s of the fixture as a batch of its own (with kv_len
// kv_len), returning their outputs [r1 - r0][n_heads * head_dim].
std::vector<float> RunRows(const AttnFixture& f, int s, int r0, int r1, int32_t kv_len,
                           CpuIsa isa) {
  std::vector<float> out(static_cast<size_t>(r1 - r0) * f.ldo(), -1.0f);
  SeqSlice slice;
  f.Alone(s, r0, r1, kv_len, out.data(), &slice);
  EXPECT_TRUE(PagedAttentionForIsa(slice.p, isa));
  return f.Rows(out, 0, r1 - r0);
}

std::vector<int32_t> QStarts(const AttnCase& c) {
  std::vector<int32_t> q{0};
  for (const auto& s : c.seqs) q.push_back(q.back() + s.n_rows);
  return q;
}

TEST(PagedAttentionInvarianceTest, SequenceAloneEqualsSequenceInBatch) {
  for (CpuIsa isa : kIsas) {
    for (const AttnCase& c : Cases()) {
      SCOPED_TRACE(c.Name());
      AttnFixture f(c);
      std::vector<float> out = f.NewOut();
      if (!PagedAttentionForIsa(f.Params(out.data()), isa)) break;
      const std::vector<int32_t> q = QStarts(c);
      for (int s = 0; s < static_cast<int>(c.seqs.size()); ++s) {
        EXPECT_TRUE(BitEqual(RunRows(f, s, q[s], q[s + 1], c.seqs[s].kv_len, isa),
                             f.Rows(out, q[s], q[s + 1])))
            << "isa " << static_cast<int>(isa) << " seq " << s;
      }
    }
  }
}

// Every row of a prefill equals a decode step at that position (one row, kv_len = pos + 1),
// and a chunked prefill (chunks of 7 rows, kv_len = end of the chunk) equals the whole.
TEST(PagedAttentionInvarianceTest, PrefillRowsEqualDecodeRowsAndChunks) {
  for (CpuIsa isa : kIsas) {
    for (const AttnCase& c : Cases()) {
      SCOPED_TRACE(c.Name());
      AttnFixture f(c);
      std::vector<float> out = f.NewOut();
      if (!PagedAttentionForIsa(f.Params(out.data()), isa)) break;
      const std::vector<int32_t> q = QStarts(c);
      for (int s = 0; s < static_cast<int>(c.seqs.size()); ++s) {
        int bad = 0;
        for (int r = q[s]; r < q[s + 1]; ++r) {
          const int32_t pos = f.positions()[r];
          bad += !BitEqual(RunRows(f, s, r, r + 1, pos + 1, isa), f.Rows(out, r, r + 1));
        }
        EXPECT_EQ(bad, 0) << "decode rows differing from prefill rows, seq " << s;
        for (int r0 = q[s]; r0 < q[s + 1]; r0 += 7) {
          const int r1 = std::min(r0 + 7, q[s + 1]);
          EXPECT_TRUE(
              BitEqual(RunRows(f, s, r0, r1, f.positions()[r1 - 1] + 1, isa), f.Rows(out, r0, r1)))
              << "chunk at row " << r0 << " of seq " << s;
        }
      }
    }
  }
}

TEST(PagedAttentionInvarianceTest, ThreadCountDoesNotChangeResults) {
  for (CpuIsa isa : kIsas) {
    const AttnCase c = Cases()[0];
    AttnFixture f(c);
    std::vector<float> many = f.NewOut();
    if (!PagedAttentionForIsa(f.Params(many.data()), isa)) break;
    std::vector<float> one = f.NewOut();
    {
      tbb::global_control single(tbb::global_control::max_allowed_parallelism, 1);
      ASSERT_TRUE(PagedAttentionForIsa(f.Params(one.data()), isa));
    }
    EXPECT_TRUE(BitEqual(one, many)) << "isa " << static_cast<int>(isa);
  }
}

}  // namespace
}  // namespace mnemo::kernels
