// Per-element math of paged attention shared by the CPU code, the CUDA kernels and their
// tests (MNEMO_HD: host and device): the allowed key range of a query row, the element
// address of a KV row through a block table, the online-softmax step and the merge of two
// partial softmax states, and the fixed split of a row's keys into context splits.
//
// A partial softmax state over a set of keys J is (m, l, acc) with
//   m = max_j s_j,   l = sum_j exp(s_j - m),   acc = sum_j exp(s_j - m) * v_j
// and the attention output is acc / l. The empty state is (-inf, 0, 0).
#pragma once

#include <math.h>

#include <cstdint>

#include "kernels/attention.h"
#include "kernels/base/hd.h"

namespace mnemo::kernels {

// The allowed key positions [lo, hi] of a query row at `pos` in a sequence of kv_len
// tokens (hi < lo: none), as stated in kernels/attention.h.
MNEMO_HD int64_t AttnKeyLo(int64_t pos, int window) {
  return window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
}
MNEMO_HD int64_t AttnKeyHi(int64_t pos, int64_t kv_len) {
  return pos < kv_len - 1 ? pos : kv_len - 1;
}

// Element index (in 16-bit elements from the arena base) of the first element of the
// (layer, k|v, kv_head) tile of the block in arena slot `slot`.
MNEMO_HD int64_t KvTileIndex(const KvLayout& l, int64_t slot, int layer, int is_v, int kv_head) {
  return slot * l.block_elems() + l.ElemOffset(layer, is_v, kv_head, 0);
}

// Element index of row `token` of the (layer, k|v, kv_head) tile of a sequence whose block
// table is `table`: token t lives at row t % block_tokens of block table[t / block_tokens].
MNEMO_HD int64_t KvRowIndex(const KvLayout& l, const int32_t* table, int layer, int is_v,
                            int kv_head, int64_t token) {
  return KvTileIndex(l, table[token / l.block_tokens], layer, is_v, kv_head) +
         (token % l.block_tokens) * l.head_dim;
}

// One key's online-softmax step on a state (*m, *l): returns through *alpha the factor the
// accumulator is rescaled by and through *p the new key's weight, so that the caller does
// acc = acc * alpha + p * v. From the empty state alpha = exp(-inf) = 0 and p = 1.
MNEMO_HD void OnlineSoftmaxStep(float s, float* m, float* l, float* alpha, float* p) {
  const float m_new = fmaxf(*m, s);
  *alpha = expf(*m - m_new);
  *p = expf(s - m_new);
  *l = *l * *alpha + *p;
  *m = m_new;
}

// Merges state b into state a: returns through *scale_a / *scale_b the factors of the two
// accumulators (acc = acc_a * scale_a + acc_b * scale_b) and updates (*m_a, *l_a). Callers
// skip empty states (m == -inf) instead of merging them, so that a row whose keys all fall
// in one split gets exactly that split's bits (scale 1, nothing added).
MNEMO_HD void MergeSoftmaxStates(float* m_a, float* l_a, float m_b, float l_b, float* scale_a,
                                 float* scale_b) {
  const float m = fmaxf(*m_a, m_b);
  *scale_a = expf(*m_a - m);
  *scale_b = expf(m_b - m);
  *l_a = *l_a * *scale_a + l_b * *scale_b;
  *m_a = m;
}

// The attention output element of a final state: zeros for a row with no keys (l == 0); a
// NaN that reached the state stays NaN.
MNEMO_HD float SoftmaxOutput(float acc, float l) { return l == 0.0f ? 0.0f : acc / l; }

// Context splits. Split z of a call with n_splits splits covers the absolute key positions
// [z * kAttnSplitKeys, (z + 1) * kAttnSplitKeys), except that the last split extends to the
// end. The boundaries depend only on the position, never on the batch, so a row's result
// depends only on its own q, position, window and KV as long as n_splits * kAttnSplitKeys
// covers its keys (true when n_splits is planned from an upper bound of kv_len).
inline constexpr int kAttnSplitKeys = 128;

// The keys [*j0, *j1] of the row range [lo, hi] that split z handles (*j1 < *j0: none).
MNEMO_HD void SplitKeyRange(int64_t lo, int64_t hi, int64_t z, int64_t n_splits, int64_t* j0,
                            int64_t* j1) {
  const int64_t begin = z * kAttnSplitKeys;
  const int64_t last = z + 1 < n_splits ? begin + kAttnSplitKeys - 1 : hi;
  *j0 = lo > begin ? lo : begin;
  *j1 = hi < last ? hi : last;
}

}  // namespace mnemo::kernels
