// Scalar reference paged attention: for each (row, head), a plain two-pass softmax in double
// over the allowed key positions, each K/V element fetched through the block table and
// KvLayout::ElemOffset. Slow and obviously correct; the fast versions are tested against it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/attention.h"
#include "kernels/base/check.h"
#include "kernels/half.h"

namespace mnemo::kernels {
namespace {

// Row `pos` of the (layer, k|v, kv_head) tile of a sequence, as raw 16-bit elements.
const uint16_t* KvRow(const KvArenaView& kv, const int32_t* table, int layer, int is_v, int kv_head,
                      int64_t pos) {
  const KvLayout& l = kv.layout;
  const int32_t slot = table[pos / l.block_tokens];
  MNEMO_CHECK(slot >= 0 && slot < kv.n_slots) << "slot " << slot;
  const auto* block = reinterpret_cast<const uint16_t*>(kv.base + slot * l.block_bytes());
  return block + l.ElemOffset(layer, is_v, kv_head, static_cast<int>(pos % l.block_tokens));
}

double ToDouble(uint16_t x, DType t) { return t == DType::kF16 ? F16ToF32(x) : BF16ToF32(x); }

}  // namespace

void PagedAttentionRef(const AttentionParams& p) {
  const KvLayout& l = p.kv.layout;
  MNEMO_CHECK(l.dtype == DType::kF16 || l.dtype == DType::kBF16) << "KV dtype must be f16/bf16";
  MNEMO_CHECK(p.layer >= 0 && p.layer < l.n_layers) << "layer " << p.layer;
  MNEMO_CHECK(l.n_kv_heads > 0 && p.n_heads % l.n_kv_heads == 0)
      << "n_heads " << p.n_heads << " is not a multiple of n_kv_heads " << l.n_kv_heads;
  const int group = p.n_heads / l.n_kv_heads;
  const int hd = l.head_dim;
  std::vector<double> scores;
  std::vector<double> acc(hd);
  for (int s = 0; s < p.seqs.n_seqs; ++s) {
    const int32_t* table = p.seqs.block_table + p.seqs.table_start[s];
    const int64_t n_blocks = p.seqs.table_start[s + 1] - p.seqs.table_start[s];
    const int64_t kv_len = p.seqs.kv_len[s];
    MNEMO_CHECK(kv_len <= n_blocks * l.block_tokens)
        << "kv_len " << kv_len << " exceeds the block table of sequence " << s;
    for (int32_t r = p.seqs.q_start[s]; r < p.seqs.q_start[s + 1]; ++r) {
      const int64_t pos = p.seqs.positions[r];
      const int64_t lo =
          p.sliding_window > 0 ? std::max<int64_t>(0, pos - p.sliding_window + 1) : 0;
      const int64_t hi = std::min(pos, kv_len - 1);
      for (int h = 0; h < p.n_heads; ++h) {
        const int g = h / group;
        const float* q = p.q + r * p.ldq + int64_t{h} * hd;
        float* out = p.out + r * p.ldo + int64_t{h} * hd;
        if (hi < lo) {  // nothing to attend to
          std::fill(out, out + hd, 0.0f);
          continue;
        }
        scores.assign(hi - lo + 1, 0.0);
        double max_score = -std::numeric_limits<double>::infinity();
        for (int64_t j = lo; j <= hi; ++j) {
          const uint16_t* k = KvRow(p.kv, table, p.layer, 0, g, j);
          double dot = 0.0;
          for (int d = 0; d < hd; ++d) dot += double{q[d]} * ToDouble(k[d], l.dtype);
          scores[j - lo] = double{p.scale} * dot;
          max_score = std::max(max_score, scores[j - lo]);
        }
        double sum = 0.0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = lo; j <= hi; ++j) {
          const double w = std::exp(scores[j - lo] - max_score);
          sum += w;
          const uint16_t* v = KvRow(p.kv, table, p.layer, 1, g, j);
          for (int d = 0; d < hd; ++d) acc[d] += w * ToDouble(v[d], l.dtype);
        }
        for (int d = 0; d < hd; ++d) out[d] = static_cast<float>(acc[d] / sum);
      }
    }
  }
}

}  // namespace mnemo::kernels
