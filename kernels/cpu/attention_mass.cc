// AttentionMass (kernels/attention.h): scores of the observed query rows against every key
// they attend to, one (kv head, block) tile of keys converted to f32 at a time; then each
// (row, head)'s softmax; then the weights summed per key in (row, head) order.
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/attention.h"
#include "kernels/base/check.h"
#include "kernels/half.h"

namespace mnemo::kernels {

void AttentionMass(const AttentionParams& p, int first_row, float* mass) {
  const KvLayout& l = p.kv.layout;
  MNEMO_CHECK(l.dtype == DType::kF16 || l.dtype == DType::kBF16) << "KV dtype must be f16/bf16";
  MNEMO_CHECK(l.n_kv_heads > 0 && p.n_heads % l.n_kv_heads == 0)
      << "n_heads " << p.n_heads << " is not a multiple of n_kv_heads " << l.n_kv_heads;
  const int group = p.n_heads / l.n_kv_heads;
  const int hd = l.head_dim;
  const int bt = l.block_tokens;
  // The observed rows, with their sequence and allowed positions [lo, hi].
  struct Row {
    int32_t r;
    int seq;
    int64_t lo;
    int64_t hi;
  };
  std::vector<Row> rows;
  int64_t n_keys = 0;
  for (int s = 0; s < p.seqs.n_seqs; ++s) {
    const int64_t kv_len = p.seqs.kv_len[s];
    for (int32_t r = std::max(p.seqs.q_start[s], first_row); r < p.seqs.q_start[s + 1]; ++r) {
      const int64_t pos = p.seqs.positions[r];
      const int64_t lo =
          p.sliding_window > 0 ? std::max<int64_t>(0, pos - p.sliding_window + 1) : 0;
      rows.push_back({r, s, lo, std::min(pos, kv_len - 1)});
      n_keys = std::max(n_keys, kv_len);
    }
  }
  if (rows.empty() || n_keys == 0) return;
  const auto n_rows = static_cast<int64_t>(rows.size());
  // scores[(i * n_heads + h) * n_keys + j]: row i, head h, key j (unset outside [lo, hi]).
  std::vector<float> scores(static_cast<size_t>(n_rows * p.n_heads * n_keys), 0.0f);
  const int64_t n_blocks = (n_keys + bt - 1) / bt;
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, n_blocks * l.n_kv_heads),
                    [&](const tbb::blocked_range<int64_t>& range) {
                      std::vector<float> k(static_cast<size_t>(bt) * hd);
                      for (int64_t t = range.begin(); t < range.end(); ++t) {
                        const int64_t b = t / l.n_kv_heads;
                        const int g = static_cast<int>(t % l.n_kv_heads);
                        for (int64_t i = 0; i < n_rows; ++i) {
                          const Row& row = rows[static_cast<size_t>(i)];
                          const int64_t j0 = std::max(b * bt, row.lo);
                          const int64_t j1 = std::min((b + 1) * bt - 1, row.hi);
                          if (j1 < j0) continue;
                          const int32_t* table = p.seqs.block_table + p.seqs.table_start[row.seq];
                          const int32_t slot = table[b];
                          MNEMO_CHECK(slot >= 0 && slot < p.kv.n_slots) << "slot " << slot;
                          const auto* tile = reinterpret_cast<const uint16_t*>(
                                                 p.kv.base + slot * l.block_bytes()) +
                                             l.ElemOffset(p.layer, 0, g, 0);
                          for (int64_t j = j0; j <= j1; ++j) {
                            float* kj = k.data() + (j - b * bt) * hd;
                            const uint16_t* src = tile + (j - b * bt) * hd;
                            for (int d = 0; d < hd; ++d) {
                              kj[d] = l.dtype == DType::kF16 ? F16ToF32(src[d]) : BF16ToF32(src[d]);
                            }
                          }
                          for (int h = g * group; h < (g + 1) * group; ++h) {
                            const float* q = p.q + int64_t{row.r} * p.ldq + int64_t{h} * hd;
                            float* out = scores.data() + (i * p.n_heads + h) * n_keys;
                            for (int64_t j = j0; j <= j1; ++j) {
                              const float* kj = k.data() + (j - b * bt) * hd;
                              float dot = 0.0f;
                              for (int d = 0; d < hd; ++d) dot += q[d] * kj[d];
                              out[j] = p.scale * dot;
                            }
                          }
                        }
                      }
                    });
  // Each (row, head)'s scores become its softmax weights.
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, n_rows * p.n_heads),
                    [&](const tbb::blocked_range<int64_t>& range) {
                      for (int64_t t = range.begin(); t < range.end(); ++t) {
                        const Row& row = rows[static_cast<size_t>(t / p.n_heads)];
                        float* w = scores.data() + t * n_keys;
                        if (row.hi < row.lo) continue;
                        double max_score = -std::numeric_limits<double>::infinity();
                        for (int64_t j = row.lo; j <= row.hi; ++j)
                          max_score = std::max<double>(max_score, w[j]);
                        double sum = 0.0;
                        for (int64_t j = row.lo; j <= row.hi; ++j)
                          sum += std::exp(w[j] - max_score);
                        for (int64_t j = row.lo; j <= row.hi; ++j) {
                          w[j] = static_cast<float>(std::exp(w[j] - max_score) / sum);
                        }
                      }
                    });
  // Summed per key over (row, head) in order.
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, n_keys, 256),
                    [&](const tbb::blocked_range<int64_t>& range) {
                      for (int64_t i = 0; i < n_rows; ++i) {
                        const Row& row = rows[static_cast<size_t>(i)];
                        const int64_t j0 = std::max(range.begin(), row.lo);
                        const int64_t j1 = std::min(range.end() - 1, row.hi);
                        for (int h = 0; h < p.n_heads; ++h) {
                          const float* w = scores.data() + (i * p.n_heads + h) * n_keys;
                          for (int64_t j = j0; j <= j1; ++j) mass[j] += w[j];
                        }
                      }
                    });
}

}  // namespace mnemo::kernels
