// The CUDA paged-attention plan, checked on the CPU (no GPU needed): launch configurations
// within the sm_80/sm_90 limits over model shapes, the context splits covering every
// allowed key exactly once and independently of the batch, the scratch sizing, and a host
// model of the CUDA algorithm (per-key online softmax per split, then the split merge, all
// through kernels/attention_math.h) against PagedAttentionRef.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_math.h"
#include "kernels/cuda/attention_launch.h"
#include "kernels/cuda/launch.h"
#include "kernels/half.h"
#include "tests/kernels/attention_test_util.h"

namespace mnemo::kernels::cuda {
namespace {

TEST(CudaAttentionLaunchTest, ConfigsFitBothArchitectures) {
  for (const ArchLimits& a : {kSm80, kSm90}) {
    for (int head_dim : {1, 8, 64, 80, 128, 256}) {
      for (int n_heads : {1, 8, 32, 64, 128}) {
        for (int64_t kv : {int64_t{0}, int64_t{1}, int64_t{511}, int64_t{512}, int64_t{513},
                           int64_t{4096}, int64_t{32768}, int64_t{131072}}) {
          for (int64_t rows :
               {int64_t{1}, int64_t{7}, int64_t{256}, int64_t{8192}, int64_t{100000}}) {
            SCOPED_TRACE("hd " + std::to_string(head_dim) + " heads " + std::to_string(n_heads) +
                         " kv " + std::to_string(kv) + " rows " + std::to_string(rows));
            const int64_t scratch = AttentionScratchBytes(rows, n_heads, head_dim, kv);
            const AttentionPlan plan = PlanAttention(rows, n_heads, head_dim, kv, scratch);
            ASSERT_GE(plan.rows_per_launch, 1);
            ASSERT_LE(plan.rows_per_launch, rows);
            EXPECT_EQ(plan.rows_per_launch, std::min(rows, kAttnMaxRowsPerLaunch));
            const bool optin = AttendSharedBytes(head_dim) > a.max_shared_default_bytes;
            EXPECT_EQ(
                CheckLaunch(AttendLaunch(plan.rows_per_launch, n_heads, plan.n_splits, head_dim), a,
                            optin),
                "");
            EXPECT_EQ(CheckLaunch(AttendLaunch(1, n_heads, plan.n_splits, head_dim), a, optin), "");
            if (plan.n_splits > 1) {
              EXPECT_EQ(CheckLaunch(MergeLaunch(plan.rows_per_launch, n_heads), a), "");
              EXPECT_EQ(CheckLaunch(MergeLaunch(1, n_heads), a), "");
            }
          }
        }
      }
      for (int n_kv_heads : {1, 8, 128}) {
        for (int64_t rows : {int64_t{1}, int64_t{65536}, int64_t{1} << 30}) {
          EXPECT_EQ(CheckLaunch(KvWriteLaunch(rows, n_kv_heads, head_dim), a), "");
        }
      }
    }
  }
}

TEST(CudaAttentionLaunchTest, KvWriteGridCoversEveryElementOnce) {
  for (int hd : {1, 8, 80, 128, 256}) {
    for (int nkv : {1, 3, 8, 128}) {
      const LaunchConfig c = KvWriteLaunch(5, nkv, hd);
      const int64_t chunks = KvWriteChunks(nkv, hd);
      EXPECT_EQ(c.grid.y, 2 * chunks);
      EXPECT_GE(chunks * c.block.x, int64_t{nkv} * hd);
      EXPECT_LT((chunks - 1) * c.block.x, int64_t{nkv} * hd) << "a chunk with no element";
    }
  }
}

TEST(CudaAttentionLaunchTest, ScratchSizing) {
  EXPECT_EQ(AttentionSplits(0), 1);
  EXPECT_EQ(AttentionSplits(kAttnSplitKeys), 1);
  EXPECT_EQ(AttentionSplits(kAttnSplitKeys + 1), 2);
  EXPECT_EQ(AttentionScratchBytesPerRow(32, 128, kAttnSplitKeys), 0);
  EXPECT_EQ(AttentionScratchBytesPerRow(32, 128, 3 * kAttnSplitKeys), int64_t{32} * 3 * 130 * 4);
  // One split needs no scratch at all.
  EXPECT_EQ(PlanAttention(10, 8, 64, 100, 0).rows_per_launch, 10);
  // Several splits: the scratch bounds the rows per launch; too little scratch gives 0.
  const int64_t per_row = AttentionScratchBytesPerRow(8, 64, 2000);
  EXPECT_EQ(PlanAttention(10, 8, 64, 2000, 3 * per_row + per_row / 2).rows_per_launch, 3);
  EXPECT_EQ(PlanAttention(10, 8, 64, 2000, per_row).rows_per_launch, 1);
  EXPECT_EQ(PlanAttention(10, 8, 64, 2000, per_row - 1).rows_per_launch, 0);
  EXPECT_EQ(PlanAttention(10, 8, 64, 2000, 100 * per_row).rows_per_launch, 10);
}

// The nonempty split ranges of one row, in split order.
std::vector<std::pair<int64_t, int64_t>> RowSplits(int64_t pos, int64_t kv_len, int window,
                                                   int64_t n_splits) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  const int64_t lo = AttnKeyLo(pos, window);
  const int64_t hi = AttnKeyHi(pos, kv_len);
  for (int64_t z = 0; z < n_splits; ++z) {
    int64_t j0 = 0;
    int64_t j1 = 0;
    SplitKeyRange(lo, hi, z, n_splits, &j0, &j1);
    if (j0 <= j1) ranges.emplace_back(j0, j1);
  }
  return ranges;
}

TEST(CudaAttentionLaunchTest, SplitsCoverEveryAllowedKeyExactlyOnce) {
  const int64_t s = kAttnSplitKeys;
  for (int64_t kv_len : {int64_t{1}, int64_t{2}, s - 1, s, s + 1, 3 * s + 17, int64_t{131072}}) {
    for (int window : {0, 1, 5, static_cast<int>(s), static_cast<int>(s) + 3, 4096}) {
      for (int64_t pos : {int64_t{0}, kv_len / 2, kv_len - 1, s - 1, s, s * 2 + 1}) {
        if (pos >= kv_len) continue;
        const int64_t lo = AttnKeyLo(pos, window);
        const int64_t hi = AttnKeyHi(pos, kv_len);
        ASSERT_LE(lo, hi);
        EXPECT_EQ(hi, pos);
        EXPECT_EQ(lo, window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0);
        // max_kv_len: exact, larger, and smaller than kv_len (the last split takes the rest).
        for (int64_t max_kv : {kv_len, kv_len + 3 * s, kv_len / 3}) {
          const std::vector<std::pair<int64_t, int64_t>> r =
              RowSplits(pos, kv_len, window, AttentionSplits(max_kv));
          ASSERT_FALSE(r.empty());
          // Contiguous, in order, from lo to hi: every key exactly once.
          EXPECT_EQ(r.front().first, lo);
          EXPECT_EQ(r.back().second, hi);
          for (size_t i = 1; i < r.size(); ++i) EXPECT_EQ(r[i].first, r[i - 1].second + 1);
          if (max_kv >= kv_len) {
            // Batch invariance: the same splits as planned for this sequence alone.
            EXPECT_EQ(r, RowSplits(pos, kv_len, window, AttentionSplits(pos + 1)));
            for (const auto& [j0, j1] : r) EXPECT_EQ(j0 / s, j1 / s) << "a split crosses";
          }
        }
      }
    }
  }
  // A row with no allowed key (pos beyond kv_len's end is clamped; pos < 0) has no split.
  EXPECT_TRUE(RowSplits(-1, 10, 0, 4).empty());
}

TEST(CudaAttentionLaunchTest, RowIndexFollowsTheBlockTable) {
  KvLayout l;
  l.n_layers = 3;
  l.n_kv_heads = 4;
  l.head_dim = 80;
  l.block_tokens = 7;
  const int32_t table[] = {5, 2, 9};
  for (int64_t t : {0, 6, 7, 13, 20}) {
    const int64_t want =
        table[t / 7] * l.block_elems() + l.ElemOffset(2, 1, 3, static_cast<int>(t % 7));
    EXPECT_EQ(KvRowIndex(l, table, 2, 1, 3, t), want);
  }
}

// A host model of the CUDA kernels: for each (row, head, split) AttendKernel's key tiles
// (kAttnKeyTile keys from the split's first key; the tile's state m_t = max score, l_t and
// acc_t from exp(score - m_t); merged into the running state with MergeSoftmaxStates), then
// MergeKernel's merge of the splits in split order. It runs the same attention_math.h
// functions the device does (with host expf and another summation order inside a tile), so
// it checks the tile and split decomposition and the merges, not the device's last bits.
void ModelOfCudaAttention(const AttentionParams& p, int64_t max_kv_len) {
  const KvLayout& lay = p.kv.layout;
  const int hd = lay.head_dim;
  const int group = p.n_heads / lay.n_kv_heads;
  const int64_t n_splits = AttentionSplits(max_kv_len);
  const auto* arena = reinterpret_cast<const uint16_t*>(p.kv.base);
  auto to_f32 = [&](uint16_t x) { return lay.dtype == DType::kF16 ? F16ToF32(x) : BF16ToF32(x); };
  // Merges the state (mb, lb, accb) into (*m, *l, acc), or takes it when *have is false.
  auto merge = [&](bool* have, float* m, float* l, std::vector<float>* acc, float mb, float lb,
                   const std::vector<float>& accb) {
    if (!*have) {
      *m = mb;
      *l = lb;
      *acc = accb;
      *have = true;
      return;
    }
    float sa = 0.0f;
    float sb = 0.0f;
    MergeSoftmaxStates(m, l, mb, lb, &sa, &sb);
    for (int d = 0; d < hd; ++d) (*acc)[d] = (*acc)[d] * sa + accb[d] * sb;
  };
  std::vector<float> acc(hd), part(hd), tile(hd), score(kAttnKeyTile);
  for (int s = 0; s < p.seqs.n_seqs; ++s) {
    const int32_t* table = p.seqs.block_table + p.seqs.table_start[s];
    for (int32_t r = p.seqs.q_start[s]; r < p.seqs.q_start[s + 1]; ++r) {
      const int64_t pos = p.seqs.positions[r];
      for (int h = 0; h < p.n_heads; ++h) {
        const float* q = p.q + r * p.ldq + int64_t{h} * hd;
        float m = -INFINITY;
        float l = 0.0f;
        bool have = false;
        for (int64_t z = 0; z < n_splits; ++z) {
          int64_t j0 = 0;
          int64_t j1 = 0;
          SplitKeyRange(AttnKeyLo(pos, p.sliding_window), AttnKeyHi(pos, p.seqs.kv_len[s]), z,
                        n_splits, &j0, &j1);
          if (j0 > j1) continue;
          float mz = -INFINITY;
          float lz = 0.0f;
          bool have_z = false;
          for (int64_t t0 = j0; t0 <= j1; t0 += kAttnKeyTile) {
            const int n = static_cast<int>(std::min<int64_t>(kAttnKeyTile, j1 - t0 + 1));
            float mt = -INFINITY;
            for (int t = 0; t < n; ++t) {
              const uint16_t* k = arena + KvRowIndex(lay, table, p.layer, 0, h / group, t0 + t);
              float dot = 0.0f;
              for (int d = 0; d < hd; ++d) dot += q[d] * p.scale * to_f32(k[d]);
              score[t] = dot;
              mt = std::max(mt, dot);
            }
            float lt = 0.0f;
            std::fill(tile.begin(), tile.end(), 0.0f);
            for (int t = 0; t < n; ++t) {
              const uint16_t* v = arena + KvRowIndex(lay, table, p.layer, 1, h / group, t0 + t);
              const float w = std::exp(score[t] - mt);
              lt += w;
              for (int d = 0; d < hd; ++d) tile[d] += w * to_f32(v[d]);
            }
            merge(&have_z, &mz, &lz, &part, mt, lt, tile);
          }
          merge(&have, &m, &l, &acc, mz, lz, part);
        }
        float* out = p.out + r * p.ldo + int64_t{h} * hd;
        for (int d = 0; d < hd; ++d) out[d] = have ? SoftmaxOutput(acc[d], l) : 0.0f;
      }
    }
  }
}

TEST(CudaAttentionLaunchTest, HostModelOfTheSplitAlgorithmMatchesReference) {
  using testing::AttnCase;
  using testing::AttnFixture;
  int case_index = 0;
  for (auto [nh, nkv] : {std::pair{4, 4}, std::pair{8, 2}, std::pair{16, 2}}) {
    for (int window : {0, 700}) {
      AttnCase c;
      c.head_dim = case_index % 2 ? 64 : 80;
      c.block_tokens = case_index % 3 ? 16 : 7;
      c.n_heads = nh;
      c.n_kv_heads = nkv;
      c.dtype = case_index % 2 ? DType::kBF16 : DType::kF16;
      c.sliding_window = window;
      c.seqs = {{1, 1}, {600, 2}, {1500, 1}, {1100, 3}, {33, 33}};
      c.seed = 50 + case_index++;
      c.kv_scale = 2.0f;
      SCOPED_TRACE(c.Name());
      AttnFixture f(c);
      std::vector<float> want = f.NewOut();
      PagedAttentionRef(f.Params(want.data()));
      std::vector<float> got = f.NewOut();
      ModelOfCudaAttention(f.Params(got.data()), 1500);
      int bad = 0;
      for (int r = 0; r < f.rows(); ++r) {
        for (int i = 0; i < c.n_heads * c.head_dim; ++i) {
          const float w = want[r * f.ldo() + i];
          const float g = got[r * f.ldo() + i];
          if (!(std::fabs(g - w) <= 1e-5f * (1.0f + std::fabs(w)))) ++bad;
        }
      }
      EXPECT_EQ(bad, 0);
    }
  }
}

}  // namespace
}  // namespace mnemo::kernels::cuda
