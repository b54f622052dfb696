// Paged KV storage and attention over it: the KV block layout (DESIGN.md 3), writing new
// keys/values into blocks, and causal attention for decode and (chunked) prefill with GQA.
//
// One block holds `block_tokens` consecutive tokens of ONE sequence for ALL layers:
//
//   block = [layer][k | v][kv_head][token][head_dim]
//   sizes:   n_layers   2   n_kv_heads  block_tokens  head_dim
//
// so one (layer, k|v, kv_head) tile of block_tokens x head_dim elements is contiguous.
// Elements are f16 or bf16. Blocks live at arena + slot * block_bytes; a sequence's block
// table lists its slots in token order: token t of the sequence is at row t % block_tokens
// of block table[t / block_tokens].
#pragma once

#include <cstdint>

#include "kernels/base/hd.h"
#include "kernels/dtype.h"
#include "kernels/ops.h"  // CpuIsa

namespace mnemo::kernels {

struct KvLayout {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int block_tokens = 16;
  DType dtype = DType::kF16;  // kF16 or kBF16

  MNEMO_HD int64_t elem_bytes() const { return 2; }
  // Elements of one (layer, k|v, kv_head) tile.
  MNEMO_HD int64_t tile_elems() const { return int64_t{block_tokens} * head_dim; }
  MNEMO_HD int64_t block_elems() const { return int64_t{n_layers} * 2 * n_kv_heads * tile_elems(); }
  MNEMO_HD int64_t block_bytes() const { return block_elems() * elem_bytes(); }
  // Element offset inside a block of row `token` of head `kv_head`, K (is_v = 0) or V (1).
  MNEMO_HD int64_t ElemOffset(int layer, int is_v, int kv_head, int token) const {
    return ((int64_t{layer} * 2 + is_v) * n_kv_heads + kv_head) * tile_elems() +
           int64_t{token} * head_dim;
  }
};

// A non-owning view of a pool of blocks.
struct KvArenaView {
  KvLayout layout;
  uint8_t* base = nullptr;  // slot s at base + s * layout.block_bytes()
  int64_t n_slots = 0;
};

// The sequences of one batch step. The query rows of all sequences are flattened into one
// matrix; sequence s owns rows [q_start[s], q_start[s + 1]).
struct BatchSeqs {
  int n_seqs = 0;
  const int32_t* q_start = nullptr;      // [n_seqs + 1], q_start[0] = 0
  const int32_t* positions = nullptr;    // [total rows]: each row's token position
  const int32_t* kv_len = nullptr;       // [n_seqs]: tokens in KV after this step's writes
  const int32_t* table_start = nullptr;  // [n_seqs + 1]: sequence s's blocks are
  const int32_t* block_table = nullptr;  //   block_table[table_start[s] .. table_start[s+1])
};

// Writes the new keys and values of one layer: row r of k/v (n_kv_heads * head_dim f32,
// converted to the layout's dtype with round-to-nearest-even) goes to position
// positions[r] of its sequence. Every written slot must be in the sequence's table.
struct KvWriteParams {
  KvArenaView kv;
  int layer = 0;
  BatchSeqs seqs;
  const float* k = nullptr;  // [rows, ldk]
  int64_t ldk = 0;
  const float* v = nullptr;  // [rows, ldv]
  int64_t ldv = 0;
};
void KvWriteRef(const KvWriteParams& p);
void KvWrite(const KvWriteParams& p);  // bit-identical to KvWriteRef

// Causal attention for one layer: query row r (position pos) of sequence s attends to the
// sequence's KV positions [max(0, pos - window + 1), pos] (window = 0: no limit), each of
// them < kv_len[s]. Query head h uses KV head h / (n_heads / n_kv_heads) (GQA).
// out[r][h * head_dim ..] = sum_j softmax_j(scale * q.k_j) * v_j. n_heads must be a
// multiple of n_kv_heads. A row none of whose allowed positions is < kv_len gets zeros
// (never, in normal use: pos < kv_len). Only q[r][0 .. n_heads * head_dim) and the KV of
// allowed positions are read (anything else may hold NaN); out is written only at
// out[r][0 .. n_heads * head_dim).
//
// Numerics: PagedAttentionRef computes each (row, head) in double with a two-pass
// max-subtracted softmax (the ground truth). PagedAttention accumulates in f32 with an
// online softmax block by block in key order, from the lowest allowed position upward; a
// row's result depends only on its own q, position, window and KV, never on the other rows
// or sequences of the call or the thread count, so decode and (chunked) prefill give
// bit-identical rows (batch invariance) on a given instruction-set path (the scalar, AVX2
// and AVX-512 paths may differ from each other in the last bits). Fast vs reference:
// |diff| <= 1e-5 * (1 + |ref|) per element on the tests' data (worst seen ~1.5e-6).
struct AttentionParams {
  KvArenaView kv;
  int layer = 0;
  BatchSeqs seqs;
  int n_heads = 0;
  const float* q = nullptr;  // [rows, ldq], n_heads * head_dim used
  int64_t ldq = 0;
  float* out = nullptr;  // [rows, ldo]
  int64_t ldo = 0;
  float scale = 1.0f;  // usually 1 / sqrt(head_dim)
  int sliding_window = 0;
};
void PagedAttentionRef(const AttentionParams& p);
void PagedAttention(const AttentionParams& p);

// How much attention each key gets from a set of queries (the score compaction policy,
// cache/compaction.h): for every query row r >= first_row of the call and every head, the
// softmax weights PagedAttention uses (same positions, window and scale) are added to
// mass[pos] of each attended position pos, so every (row, head) adds 1 in all. mass must
// hold the largest kv_len of the rows' sequences (positions of different sequences add into
// the same entries: call it for one sequence). Scores in f32 from the stored keys, softmax
// in double; the sum over (row, head) is taken in a fixed order, so the result does not
// depend on the thread count.
void AttentionMass(const AttentionParams& p, int first_row, float* mass);

// Tests and benchmarks: the fast versions forced onto one instruction-set path. They do
// nothing and return false when this processor lacks `isa`. PagedAttention and KvWrite run
// the best path the processor supports.
bool PagedAttentionForIsa(const AttentionParams& p, CpuIsa isa);
bool KvWriteForIsa(const KvWriteParams& p, CpuIsa isa);

}  // namespace mnemo::kernels
