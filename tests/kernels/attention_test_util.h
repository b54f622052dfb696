// Test scaffolding for the paged KV kernels: a random batch of sequences whose K/V live in
// scattered, NaN-poisoned blocks, plus plain contiguous copies of the same K/V for
// independent checks.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/half.h"

namespace mnemo::kernels::testing {

// A sequence of the batch: kv_len tokens of KV; its n_rows query rows are the last
// positions kv_len - n_rows .. kv_len - 1 (a prefill chunk, or one decode row).
struct SeqSpec {
  int kv_len = 1;
  int n_rows = 1;
};

struct AttnCase {
  int head_dim = 64;
  int block_tokens = 16;
  int n_heads = 8;
  int n_kv_heads = 4;
  DType dtype = DType::kF16;
  int sliding_window = 0;
  std::vector<SeqSpec> seqs;
  uint32_t seed = 1;
  float kv_scale = 1.0f;  // K values ~ N(0, kv_scale): larger gives peakier softmax

  std::string Name() const {
    std::string s = "hd" + std::to_string(head_dim) + "_bt" + std::to_string(block_tokens) + "_h" +
                    std::to_string(n_heads) + "_" + std::to_string(n_kv_heads) +
                    (dtype == DType::kF16 ? "_f16" : "_bf16") + "_w" +
                    std::to_string(sliding_window);
    for (const SeqSpec& q : seqs)
      s += "_" + std::to_string(q.kv_len) + "x" + std::to_string(q.n_rows);
    return s;
  }
};

inline constexpr int kLayers = 3;  // the case uses layer 1: layers 0 and 2 stay poisoned
inline constexpr int kLayer = 1;
inline constexpr float kSentinel = -7777.25f;

inline uint16_t PoisonBits(DType t) { return t == DType::kF16 ? 0x7e00 : 0x7fc0; }
inline uint16_t ToBits(float x, DType t) { return t == DType::kF16 ? F32ToF16(x) : F32ToBF16(x); }
inline float FromBits(uint16_t b, DType t) { return t == DType::kF16 ? F16ToF32(b) : BF16ToF32(b); }

// Builds the arena, block tables and query rows of an AttnCase.
// A case of shape {head_dim, block_tokens, n_heads, n_kv_heads, sliding_window} and KV
// dtype t (sequences and seed left to the caller).
inline AttnCase ShapeCase(const int (&shape)[5], DType t) {
  AttnCase c;
  c.head_dim = shape[0];
  c.block_tokens = shape[1];
  c.n_heads = shape[2];
  c.n_kv_heads = shape[3];
  c.sliding_window = shape[4];
  c.dtype = t;
  return c;
}

// A batch of its own made of rows [r0, r1) of one sequence of a fixture (see
// AttnFixture::Alone); owns the small arrays its params point to, so it does not move.
struct SeqSlice {
  SeqSlice() = default;
  SeqSlice(const SeqSlice&) = delete;
  SeqSlice& operator=(const SeqSlice&) = delete;
  int32_t q_start[2] = {0, 0};
  int32_t table_start[2] = {0, 0};
  int32_t kv_len = 0;
  AttentionParams p;
};

class AttnFixture {
 public:
  explicit AttnFixture(const AttnCase& c) : c_(c) {
    layout_.n_layers = kLayers;
    layout_.n_kv_heads = c.n_kv_heads;
    layout_.head_dim = c.head_dim;
    layout_.block_tokens = c.block_tokens;
    layout_.dtype = c.dtype;
    std::mt19937 rng(c.seed);
    const int n_seqs = static_cast<int>(c.seqs.size());
    // Blocks per sequence; every other sequence gets one spare (reserved, never written).
    std::vector<int> n_blocks(n_seqs);
    int total_blocks = 0;
    for (int s = 0; s < n_seqs; ++s) {
      n_blocks[s] = (c.seqs[s].kv_len + c.block_tokens - 1) / c.block_tokens + (s % 2);
      total_blocks += n_blocks[s];
    }
    n_slots_ = total_blocks + 3;  // a few slots nobody owns
    std::vector<int32_t> slots(n_slots_);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng);
    arena_.assign(static_cast<size_t>(n_slots_ * layout_.block_elems()), PoisonBits(c.dtype));
    table_start_.push_back(0);
    q_start_.push_back(0);
    int next = 0;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int s = 0; s < n_seqs; ++s) {
      for (int b = 0; b < n_blocks[s]; ++b) block_table_.push_back(slots[next++]);
      table_start_.push_back(static_cast<int32_t>(block_table_.size()));
      kv_len_.push_back(c.seqs[s].kv_len);
      for (int r = 0; r < c.seqs[s].n_rows; ++r) {
        positions_.push_back(c.seqs[s].kv_len - c.seqs[s].n_rows + r);
      }
      q_start_.push_back(static_cast<int32_t>(positions_.size()));
      // K and V of every position, through the layout (independently of KvWrite).
      const int32_t* table = block_table_.data() + table_start_[s];
      for (int is_v = 0; is_v < 2; ++is_v) {
        std::vector<float>& cont = is_v ? v_.emplace_back() : k_.emplace_back();
        cont.resize(static_cast<size_t>(c.n_kv_heads) * c.seqs[s].kv_len * c.head_dim);
        for (int g = 0; g < c.n_kv_heads; ++g) {
          for (int j = 0; j < c.seqs[s].kv_len; ++j) {
            uint16_t* dst = arena_.data() + table[j / c.block_tokens] * layout_.block_elems() +
                            layout_.ElemOffset(kLayer, is_v, g, j % c.block_tokens);
            for (int d = 0; d < c.head_dim; ++d) {
              const uint16_t bits = ToBits(normal(rng) * (is_v ? 1.0f : c.kv_scale), c.dtype);
              dst[d] = bits;
              cont[(static_cast<size_t>(g) * c.seqs[s].kv_len + j) * c.head_dim + d] =
                  FromBits(bits, c.dtype);
            }
          }
        }
      }
    }
    rows_ = static_cast<int>(positions_.size());
    ldq_ = int64_t{c.n_heads} * c.head_dim + 3;
    q_.assign(static_cast<size_t>(rows_ * ldq_), std::numeric_limits<float>::quiet_NaN());
    for (int r = 0; r < rows_; ++r) {
      for (int64_t i = 0; i < int64_t{c.n_heads} * c.head_dim; ++i) q_[r * ldq_ + i] = normal(rng);
    }
    ldo_ = int64_t{c.n_heads} * c.head_dim + 5;
  }

  // Output buffer: rows_ rows of ldo_ plus two guard rows, all sentinels.
  std::vector<float> NewOut() const {
    return std::vector<float>(static_cast<size_t>((rows_ + 2) * ldo_), kSentinel);
  }

  // Rows [r0, r1) of sequence s as a batch of their own whose KV length is kv_len, writing
  // to out (row r0 at out[0]).
  void Alone(int s, int r0, int r1, int32_t kv_len, float* out, SeqSlice* slice) const {
    slice->q_start[1] = r1 - r0;
    slice->table_start[1] = table_start_[s + 1] - table_start_[s];
    slice->kv_len = kv_len;
    AttentionParams& p = slice->p;
    p = Params(out);
    p.seqs.n_seqs = 1;
    p.seqs.q_start = slice->q_start;
    p.seqs.positions = positions_.data() + r0;
    p.seqs.kv_len = &slice->kv_len;
    p.seqs.table_start = slice->table_start;
    p.seqs.block_table = block_table_.data() + table_start_[s];
    p.q += r0 * ldq_;
  }

  // Rows [r0, r1) of an output written with row stride ldo(), packed [r1 - r0][n_heads *
  // head_dim].
  std::vector<float> Rows(const std::vector<float>& out, int r0, int r1) const {
    const int64_t width = int64_t{c_.n_heads} * c_.head_dim;
    std::vector<float> rows(static_cast<size_t>((r1 - r0) * width));
    for (int r = r0; r < r1; ++r) {
      std::memcpy(&rows[static_cast<size_t>((r - r0) * width)], &out[r * ldo_],
                  static_cast<size_t>(width) * sizeof(float));
    }
    return rows;
  }

  AttentionParams Params(float* out) const {
    AttentionParams p;
    p.kv = KvArenaView{
        layout_, const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(arena_.data())), n_slots_};
    p.layer = kLayer;
    p.seqs.n_seqs = static_cast<int>(c_.seqs.size());
    p.seqs.q_start = q_start_.data();
    p.seqs.positions = positions_.data();
    p.seqs.kv_len = kv_len_.data();
    p.seqs.table_start = table_start_.data();
    p.seqs.block_table = block_table_.data();
    p.n_heads = c_.n_heads;
    p.q = q_.data();
    p.ldq = ldq_;
    p.out = out;
    p.ldo = ldo_;
    p.scale = 1.0f / std::sqrt(static_cast<float>(c_.head_dim));
    p.sliding_window = c_.sliding_window;
    return p;
  }

  // Row r's softmax weights for head h in double over the contiguous K copies: w[j] for
  // every position j of its sequence (0 where it does not attend).
  std::vector<double> DirectWeights(int r, int h) const {
    const int hd = c_.head_dim;
    const int group = c_.n_heads / c_.n_kv_heads;
    const double scale = 1.0 / std::sqrt(static_cast<double>(static_cast<float>(hd)));
    size_t s = 0;
    while (r >= q_start_[s + 1]) ++s;
    const int kv_len = c_.seqs[s].kv_len;
    const int pos = positions_[r];
    const float* kc = k_[s].data() + static_cast<size_t>(h / group) * kv_len * hd;
    auto attends = [&](int j) {
      return j <= pos && !(c_.sliding_window > 0 && pos - j >= c_.sliding_window);
    };
    std::vector<double> w(kv_len, 0.0);
    double mx = -1e300;
    for (int j = 0; j < kv_len; ++j) {
      if (!attends(j)) continue;
      double dot = 0;
      for (int d = 0; d < hd; ++d) dot += double{q_[r * ldq_ + h * hd + d]} * kc[j * hd + d];
      w[j] = dot * scale;
      mx = std::max(mx, w[j]);
    }
    double sum = 0;
    for (int j = 0; j < kv_len; ++j) {
      w[j] = attends(j) ? std::exp(w[j] - mx) : 0.0;
      sum += w[j];
    }
    for (double& x : w) x /= sum;
    return w;
  }

  // Direct attention in double over the contiguous K/V copies: out[r][h][d].
  std::vector<double> Direct() const {
    const int hd = c_.head_dim;
    const int group = c_.n_heads / c_.n_kv_heads;
    std::vector<double> out(static_cast<size_t>(rows_) * c_.n_heads * hd);
    for (size_t s = 0; s < c_.seqs.size(); ++s) {
      const int kv_len = c_.seqs[s].kv_len;
      for (int r = q_start_[s]; r < q_start_[s + 1]; ++r) {
        for (int h = 0; h < c_.n_heads; ++h) {
          const float* vc = v_[s].data() + static_cast<size_t>(h / group) * kv_len * hd;
          const std::vector<double> w = DirectWeights(r, h);
          for (int d = 0; d < hd; ++d) {
            double acc = 0;
            for (int j = 0; j < kv_len; ++j) acc += w[j] * vc[j * hd + d];
            out[(static_cast<size_t>(r) * c_.n_heads + h) * hd + d] = acc;
          }
        }
      }
    }
    return out;
  }

  const AttnCase& c() const { return c_; }
  const KvLayout& layout() const { return layout_; }
  int rows() const { return rows_; }
  int64_t ldo() const { return ldo_; }
  int64_t ldq() const { return ldq_; }
  std::vector<float>& q() { return q_; }
  const std::vector<int32_t>& positions() const { return positions_; }
  const std::vector<int32_t>& block_table() const { return block_table_; }
  const std::vector<int32_t>& table_start() const { return table_start_; }
  const std::vector<uint16_t>& arena() const { return arena_; }
  int64_t n_slots() const { return n_slots_; }

 private:
  AttnCase c_;
  KvLayout layout_;
  int64_t n_slots_ = 0;
  std::vector<uint16_t> arena_;
  std::vector<int32_t> q_start_, positions_, kv_len_, table_start_, block_table_;
  std::vector<std::vector<float>> k_, v_;  // per sequence: [n_kv_heads][kv_len][head_dim]
  int rows_ = 0;
  int64_t ldq_ = 0, ldo_ = 0;
  std::vector<float> q_;
};

inline bool BitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace mnemo::kernels::testing
