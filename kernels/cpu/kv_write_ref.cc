// Scalar reference KV write: one element at a time, through KvLayout::ElemOffset.
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/base/check.h"
#include "kernels/half.h"

namespace mnemo::kernels {

void KvWriteRef(const KvWriteParams& p) {
  const KvLayout& l = p.kv.layout;
  MNEMO_CHECK(l.dtype == DType::kF16 || l.dtype == DType::kBF16) << "KV dtype must be f16/bf16";
  MNEMO_CHECK(p.layer >= 0 && p.layer < l.n_layers) << "layer " << p.layer;
  for (int s = 0; s < p.seqs.n_seqs; ++s) {
    const int32_t* table = p.seqs.block_table + p.seqs.table_start[s];
    const int64_t n_blocks = p.seqs.table_start[s + 1] - p.seqs.table_start[s];
    for (int32_t r = p.seqs.q_start[s]; r < p.seqs.q_start[s + 1]; ++r) {
      const int32_t pos = p.seqs.positions[r];
      MNEMO_CHECK(pos >= 0 && pos / l.block_tokens < n_blocks)
          << "position " << pos << " of sequence " << s << " is outside its block table";
      const int32_t slot = table[pos / l.block_tokens];
      MNEMO_CHECK(slot >= 0 && slot < p.kv.n_slots) << "slot " << slot;
      auto* block = reinterpret_cast<uint16_t*>(p.kv.base + slot * l.block_bytes());
      for (int is_v = 0; is_v < 2; ++is_v) {
        const float* src = is_v ? p.v + r * p.ldv : p.k + r * p.ldk;
        for (int h = 0; h < l.n_kv_heads; ++h) {
          uint16_t* dst = block + l.ElemOffset(p.layer, is_v, h, pos % l.block_tokens);
          for (int d = 0; d < l.head_dim; ++d) {
            const float x = src[int64_t{h} * l.head_dim + d];
            dst[d] = l.dtype == DType::kF16 ? F32ToF16(x) : F32ToBF16(x);
          }
        }
      }
    }
  }
}

}  // namespace mnemo::kernels
