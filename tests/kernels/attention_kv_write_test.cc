// KvWrite: every element lands at the layout's offset (some checked against hand-computed
// numbers), nothing else in the arena changes, and the fast version is bit-identical to the
// reference (including rounding ties, subnormals, overflow and NaN).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "kernels/half.h"

namespace mnemo::kernels {
namespace {

constexpr uint16_t kPoison = 0xabcd;

// Layout: 3 layers, 3 kv heads, head_dim 8, 7 tokens per block:
// tile = 7 * 8 = 56 elements, block = 3 layers * 2 * 3 heads * 56 = 1008 elements.
KvLayout SmallLayout(DType t) {
  KvLayout l;
  l.n_layers = 3;
  l.n_kv_heads = 3;
  l.head_dim = 8;
  l.block_tokens = 7;
  l.dtype = t;
  return l;
}

// Two sequences: sequence 0 owns slots {4, 0} and writes positions 9 and 10 (decode-like,
// both in its second block); sequence 1 owns slots {2, 5, 1} and writes positions 3..15.
struct WriteCase {
  KvLayout layout;
  std::vector<uint16_t> arena;
  std::vector<int32_t> q_start{0, 2, 15};
  std::vector<int32_t> positions{9, 10, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  std::vector<int32_t> kv_len{11, 16};
  std::vector<int32_t> table_start{0, 2, 5};
  std::vector<int32_t> block_table{4, 0, 2, 5, 1};
  int64_t ld = 3 * 8 + 2;
  std::vector<float> k, v;
  int64_t n_slots = 7;

  explicit WriteCase(DType t, uint32_t seed) : layout(SmallLayout(t)) {
    arena.assign(static_cast<size_t>(n_slots * layout.block_elems()), kPoison);
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const size_t rows = positions.size();
    k.resize(rows * ld);
    v.resize(rows * ld);
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
  }

  KvWriteParams Params(std::vector<uint16_t>& dst) const {
    KvWriteParams p;
    p.kv = KvArenaView{layout, reinterpret_cast<uint8_t*>(dst.data()), n_slots};
    p.layer = 1;
    p.seqs.n_seqs = 2;
    p.seqs.q_start = q_start.data();
    p.seqs.positions = positions.data();
    p.seqs.kv_len = kv_len.data();
    p.seqs.table_start = table_start.data();
    p.seqs.block_table = block_table.data();
    p.k = k.data();
    p.ldk = ld;
    p.v = v.data();
    p.ldv = ld;
    return p;
  }
};

TEST(KvWriteTest, ElementsLandAtHandComputedOffsets) {
  WriteCase c(DType::kF16, 1);
  std::vector<uint16_t> arena = c.arena;
  KvWriteRef(c.Params(arena));
  // Row 0 = sequence 0, position 9: block 1 of its table (slot 0), token row 2.
  // V (is_v 1), head 2, d 5: ((layer 1 * 2 + 1) * 3 + 2) * 56 + 2 * 8 + 5 = 637.
  EXPECT_EQ(arena[637], F32ToF16(c.v[0 * c.ld + 2 * 8 + 5]));
  // K, head 0, d 0 of the same row: ((1 * 2 + 0) * 3 + 0) * 56 + 16 = 352.
  EXPECT_EQ(arena[352], F32ToF16(c.k[0]));
  // Row 1 = sequence 0, position 10 (token row 3 of slot 0), K head 1, d 7:
  // ((2 + 0) * 3 + 1) * 56 + 3 * 8 + 7 = 423.
  EXPECT_EQ(arena[423], F32ToF16(c.k[1 * c.ld + 8 + 7]));
  // Row 14 = sequence 1, position 15: block 2 of its table (slot 1), token row 1.
  // V head 0, d 3: 1008 + ((2 + 1) * 3 + 0) * 56 + 8 + 3 = 1008 + 515 = 1523.
  EXPECT_EQ(arena[1523], F32ToF16(c.v[14 * c.ld + 3]));
  // Row 2 = sequence 1, position 3: block 0 (slot 2), token row 3; K head 2, d 1:
  // 2 * 1008 + ((2 + 0) * 3 + 2) * 56 + 24 + 1 = 2016 + 473 = 2489.
  EXPECT_EQ(arena[2489], F32ToF16(c.k[2 * c.ld + 16 + 1]));
}

TEST(KvWriteTest, WritesExactlyTheRowsElements) {
  for (DType t : {DType::kF16, DType::kBF16}) {
    WriteCase c(t, 2);
    std::vector<uint16_t> arena = c.arena;
    KvWriteRef(c.Params(arena));
    // Expected arena, built element by element from the layout formula.
    std::vector<uint16_t> want = c.arena;
    std::vector<int> seq_of_row;
    for (int s = 0; s < 2; ++s) {
      for (int r = c.q_start[s]; r < c.q_start[s + 1]; ++r) {
        const int pos = c.positions[r];
        const int slot = c.block_table[c.table_start[s] + pos / 7];
        for (int is_v = 0; is_v < 2; ++is_v) {
          for (int h = 0; h < 3; ++h) {
            for (int d = 0; d < 8; ++d) {
              const float x = (is_v ? c.v : c.k)[r * c.ld + h * 8 + d];
              want[slot * 1008 + ((1 * 2 + is_v) * 3 + h) * 56 + (pos % 7) * 8 + d] =
                  t == DType::kF16 ? F32ToF16(x) : F32ToBF16(x);
            }
          }
        }
      }
    }
    EXPECT_EQ(arena, want);
    int changed = 0;
    for (size_t i = 0; i < arena.size(); ++i) changed += arena[i] != kPoison;
    EXPECT_EQ(changed, 15 * 2 * 3 * 8);  // rows * (k, v) * heads * head_dim
  }
}

TEST(KvWriteTest, FastIsBitIdenticalToReference) {
  for (DType t : {DType::kF16, DType::kBF16}) {
    WriteCase c(t, 3);
    // Special values: ties, subnormals, overflow, infinities, NaN, signed zero.
    const float specials[] = {0.0f,
                              -0.0f,
                              65504.0f,
                              65520.0f,
                              -65519.0f,
                              1e6f,
                              std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity(),
                              std::numeric_limits<float>::quiet_NaN(),
                              -std::numeric_limits<float>::quiet_NaN(),
                              6e-8f,
                              2.9802322e-8f,
                              1e-40f,
                              1.0009765625f + 0.00048828125f,
                              3.3895314e38f,
                              1.00390625f};
    for (size_t i = 0; i < std::size(specials); ++i) c.k[i * 5 % c.k.size()] = specials[i];
    for (size_t i = 0; i < std::size(specials); ++i) c.v[i * 7 % c.v.size()] = specials[i];
    std::vector<uint16_t> ref = c.arena;
    std::vector<uint16_t> fast = c.arena;
    KvWriteRef(c.Params(ref));
    KvWrite(c.Params(fast));
    EXPECT_EQ(fast, ref) << (t == DType::kF16 ? "f16" : "bf16");
    for (CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
      std::vector<uint16_t> by_isa = c.arena;
      if (!KvWriteForIsa(c.Params(by_isa), isa)) continue;
      EXPECT_EQ(by_isa, ref) << "isa " << static_cast<int>(isa);
    }
  }
}

// Random f32 bit patterns (every class: normals, subnormals, huge values, inf, NaN
// payloads) through rows long enough for every vector width and its tails (head_dim 43).
TEST(KvWriteTest, FastMatchesReferenceOnRandomBitPatterns) {
  for (DType t : {DType::kF16, DType::kBF16}) {
    KvLayout l;
    l.n_layers = 2;
    l.n_kv_heads = 2;
    l.head_dim = 43;
    l.block_tokens = 16;
    l.dtype = t;
    const int rows = 40;
    const int64_t ld = 2 * 43 + 1;
    std::vector<int32_t> q_start{0, rows}, kv_len{rows}, table_start{0, 3}, table{2, 0, 1};
    std::vector<int32_t> positions(rows);
    for (int r = 0; r < rows; ++r) positions[r] = r;
    std::mt19937 rng(11);
    std::vector<float> k(rows * ld), v(rows * ld);
    for (std::vector<float>* x : {&k, &v}) {
      for (float& f : *x) {
        uint32_t bits = rng();
        // Bias towards f16's interesting range: exponents around 2^-25 .. 2^16.
        if (rng() % 2 == 0) bits = (bits & 0x807fffffu) | ((100u + rng() % 45) << 23);
        std::memcpy(&f, &bits, 4);
      }
    }
    std::vector<uint16_t> ref(3 * l.block_elems(), kPoison);
    KvWriteParams p;
    p.kv = KvArenaView{l, reinterpret_cast<uint8_t*>(ref.data()), 3};
    p.layer = 1;
    p.seqs = BatchSeqs{
        1, q_start.data(), positions.data(), kv_len.data(), table_start.data(), table.data()};
    p.k = k.data();
    p.ldk = ld;
    p.v = v.data();
    p.ldv = ld;
    KvWriteRef(p);
    for (CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
      std::vector<uint16_t> got(ref.size(), kPoison);
      p.kv.base = reinterpret_cast<uint8_t*>(got.data());
      if (!KvWriteForIsa(p, isa)) continue;
      EXPECT_EQ(got, ref) << "isa " << static_cast<int>(isa) << " dtype " << DTypeName(t);
    }
  }
}

}  // namespace
}  // namespace mnemo::kernels
