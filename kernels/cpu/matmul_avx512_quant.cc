// AVX-512 VNNI kernels for quantized weights (kernels/cpu/matmul_internal.h).
//
// One step handles one ActGroup: 128 elements = four 32-element blocks A..D. A decoder
// turns a weight row's four blocks into unsigned bytes (lo = quants 0..15 of A, B, C, D;
// hi = quants 16..31) and widens them to int16 in the activations' order (q[0..3]), plus
// per-lane scales (lanes 4j..4j+3 belong to block j). Per output, in this order:
//   dot = dpwssd(... dpwssd(bias * nsum, q[0], x[0]) ..., q[3], x[3])
//                                              exact int32, block j in lanes 4j..4j+3
//   acc = fmadd(cvt(dot), w_step * x_d, acc)
//   acc = fmadd(w_offset, x_dsum, acc)                   (Q4_1, Q4_K, Q5_K)
// Q6_K has separate scales for quants 0..15 and 16..31 of a block, so its two halves are
// converted and scaled separately. At the end y = sum of the 16 lanes in a fixed order
// (+ bias). A tile of R activation rows x C weight rows decodes each weight group once
// and runs this same sequence for every (row, column), so the tiling never changes a
// result.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/quant_blocks.h"

#if defined(__x86_64__)
#include <immintrin.h>

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the pass-through operand, which
// -Wuninitialized reports at every inlining site (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define MNEMO_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define MNEMO_AVX512_INLINE MNEMO_AVX512 inline __attribute__((always_inline))

namespace mnemo::kernels::internal {
namespace {

struct WeightGroup {
  __m512i q[4];    // int16 quants, vector v: quants 8v..8v+7 of blocks A..D (ActGroup order)
  __m512 step;     // per-lane weight scale (Q6_K: of quants 0..15)
  __m512 step_hi;  // Q6_K: scale of quants 16..31
  __m512 offset;   // per-lane weight offset (Q4_1 m, K-quants -dmin * m)
};

MNEMO_AVX512_INLINE float ReduceAdd(__m512 v) {
  const __m512 h = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  const __m256 e = _mm512_castps512_ps256(h);
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(e), _mm256_extractf128_ps(e, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

// Lanes 4j..4j+3 = v[a_j].
MNEMO_AVX512_INLINE __m512 Spread4(__m512 v, int a0, int a1, int a2, int a3) {
  const __m512i idx =
      _mm512_set_epi32(a3, a3, a3, a3, a2, a2, a2, a2, a1, a1, a1, a1, a0, a0, a0, a0);
  return _mm512_permutexvar_ps(idx, v);
}

MNEMO_AVX512_INLINE __m128i Load128(const void* p) {
  return _mm_loadu_si128(static_cast<const __m128i*>(p));
}

// The 16-byte runs at a, b, c, d as one vector.
MNEMO_AVX512_INLINE __m512i Gather4x16(const void* a, const void* b, const void* c, const void* d) {
  __m512i v = _mm512_castsi128_si512(Load128(a));
  v = _mm512_inserti32x4(v, Load128(b), 1);
  v = _mm512_inserti32x4(v, Load128(c), 2);
  return _mm512_inserti32x4(v, Load128(d), 3);
}

// Four f16 scales -> lanes 4j..4j+3.
MNEMO_AVX512_INLINE __m512 Scales4(uint16_t a, uint16_t b, uint16_t c, uint16_t d) {
  const __m128i h = _mm_set_epi16(0, 0, 0, 0, static_cast<int16_t>(d), static_cast<int16_t>(c),
                                  static_cast<int16_t>(b), static_cast<int16_t>(a));
  return Spread4(_mm512_castps128_ps512(_mm_cvtph_ps(h)), 0, 1, 2, 3);
}

// The weight bytes lo (quants 0..15 of A..D) and hi (16..31) widened to int16 in the
// activations' order: within each 16-byte lane, bytes 0..7 then 8..15.
MNEMO_AVX512_INLINE void Widen(__m512i lo, __m512i hi, WeightGroup* w) {
  const __m512i zero = _mm512_setzero_si512();
  w->q[0] = _mm512_unpacklo_epi8(lo, zero);
  w->q[1] = _mm512_unpackhi_epi8(lo, zero);
  w->q[2] = _mm512_unpacklo_epi8(hi, zero);
  w->q[3] = _mm512_unpackhi_epi8(hi, zero);
}

MNEMO_AVX512_INLINE __m512i LowNibbles(__m512i v) {
  return _mm512_and_si512(v, _mm512_set1_epi8(0x0f));
}
MNEMO_AVX512_INLINE __m512i HighNibbles(__m512i v) {
  return _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0f));
}

// ---- legacy formats: a step is one group of four blocks --------------------------------

// Four blocks of a legacy format, not necessarily adjacent.
template <class Block>
struct BlockRefs {
  const Block* p[kActGroupBlocks];
  const Block& operator[](int j) const { return *p[j]; }
};

template <class Block>
const Block& ZeroBlock() {
  static const Block zero{};
  return zero;
}

template <class Block>
struct LegacySteps {
  static constexpr int kGroupsPerStep = 1;
  static constexpr bool kLegacy = true;
  using Step = BlockRefs<Block>;
  MNEMO_AVX512_INLINE static Step Load(const uint8_t* row, int64_t s) {
    const Block* b = reinterpret_cast<const Block*>(row) + kActGroupBlocks * s;
    return {{b, b + 1, b + 2, b + 3}};
  }
  // The last group of a row with 1..3 blocks left: the missing ones read as an all-zero
  // block (scale 0), which meets zero activations and adds exactly nothing.
  MNEMO_AVX512_INLINE static Step Partial(const uint8_t* row, int64_t blocks) {
    const int64_t rest = blocks % kActGroupBlocks;
    const Block* b = reinterpret_cast<const Block*>(row) + (blocks - rest);
    Step st;
    for (int j = 0; j < kActGroupBlocks; ++j) st.p[j] = j < rest ? b + j : &ZeroBlock<Block>();
    return st;
  }
};

struct Q8_0Avx512 : LegacySteps<BlockQ8_0> {
  static constexpr int kNsumShift = 7;  // quants stored as q + 128
  static constexpr bool kHasOffset = false;
  static constexpr bool kSplitScales = false;
  MNEMO_AVX512_INLINE static WeightGroup Group(const Step& b, int) {
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    WeightGroup w;
    Widen(
        _mm512_xor_si512(Gather4x16(b[0].qs, b[1].qs, b[2].qs, b[3].qs), flip),
        _mm512_xor_si512(Gather4x16(b[0].qs + 16, b[1].qs + 16, b[2].qs + 16, b[3].qs + 16), flip),
        &w);
    w.step = Scales4(b[0].d, b[1].d, b[2].d, b[3].d);
    return w;
  }
};

struct Q4_0Avx512 : LegacySteps<BlockQ4_0> {
  static constexpr int kNsumShift = 3;  // quants stored as q + 8
  static constexpr bool kHasOffset = false;
  static constexpr bool kSplitScales = false;
  MNEMO_AVX512_INLINE static WeightGroup Group(const Step& b, int) {
    // Quant i < 16 of a block is the low nibble of qs[i], quant 16 + i the high nibble.
    const __m512i nib = Gather4x16(b[0].qs, b[1].qs, b[2].qs, b[3].qs);
    WeightGroup w;
    Widen(LowNibbles(nib), HighNibbles(nib), &w);
    w.step = Scales4(b[0].d, b[1].d, b[2].d, b[3].d);
    return w;
  }
};

struct Q4_1Avx512 : LegacySteps<BlockQ4_1> {
  static constexpr int kNsumShift = -1;
  static constexpr bool kHasOffset = true;
  static constexpr bool kSplitScales = false;
  MNEMO_AVX512_INLINE static int32_t ScaleAndMin(const BlockQ4_1& b) {
    int32_t v;
    std::memcpy(&v, &b.d, sizeof(v));  // d in the low half, m in the high half
    return v;
  }
  MNEMO_AVX512_INLINE static WeightGroup Group(const Step& b, int) {
    const __m512i nib = Gather4x16(b[0].qs, b[1].qs, b[2].qs, b[3].qs);
    const __m128i h =
        _mm_set_epi32(ScaleAndMin(b[3]), ScaleAndMin(b[2]), ScaleAndMin(b[1]), ScaleAndMin(b[0]));
    const __m512 f = _mm512_castps256_ps512(_mm256_cvtph_ps(h));  // d0 m0 d1 m1 ...
    WeightGroup w;
    Widen(LowNibbles(nib), HighNibbles(nib), &w);
    w.step = Spread4(f, 0, 2, 4, 6);
    w.offset = Spread4(f, 1, 3, 5, 7);
    return w;
  }
};

// ---- K-quants: a step is one 256-element super-block (two groups) ----------------------

struct KScales {
  __m512 step;    // lanes 0..7: d * sc[j]
  __m512 offset;  // lanes 0..7: -(dmin * m[j])
};

MNEMO_AVX512_INLINE KScales LoadKScales(const uint8_t* scales, uint16_t d, uint16_t dmin) {
  alignas(64) float step[16] = {};
  alignas(64) float offset[16] = {};
  KSubBlockScales(scales, d, dmin, step, offset);
  return {_mm512_load_ps(step), _mm512_load_ps(offset)};
}

// Group h of a Q4_K/Q5_K super-block = sub-blocks 4h .. 4h+3, whose nibbles are the 64
// bytes qs[64h ..] = P0 P1 P2 P3 (16 bytes each): sub-block 4h is the low nibbles of P0 P1,
// 4h+1 the high nibbles of P0 P1, 4h+2 / 4h+3 the same of P2 P3.
MNEMO_AVX512_INLINE void KNibbles(const uint8_t* qs, int h, __m512i* lo, __m512i* hi) {
  const __m512i v = _mm512_loadu_si512(qs + 64 * h);
  const __m512i l = LowNibbles(v);
  const __m512i u = HighNibbles(v);
  // 64-bit lane indices: 0..7 pick from l, 8..15 from u.
  *lo = _mm512_permutex2var_epi64(l, _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0), u);
  *hi = _mm512_permutex2var_epi64(l, _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2), u);
}

struct Q4_KAvx512 {
  static constexpr int kGroupsPerStep = 2;
  static constexpr bool kLegacy = false;
  static constexpr int kNsumShift = -1;
  static constexpr bool kHasOffset = true;
  static constexpr bool kSplitScales = false;
  struct Step {
    const uint8_t* qs;
    KScales s;
  };
  MNEMO_AVX512_INLINE static Step Load(const uint8_t* row, int64_t s) {
    const BlockQ4_K& b = reinterpret_cast<const BlockQ4_K*>(row)[s];
    return {b.qs, LoadKScales(b.scales, b.d, b.dmin)};
  }
  MNEMO_AVX512_INLINE static WeightGroup Group(const Step& st, int h) {
    WeightGroup w;
    __m512i lo, hi;
    KNibbles(st.qs, h, &lo, &hi);
    Widen(lo, hi, &w);
    w.step = Spread4(st.s.step, 4 * h, 4 * h + 1, 4 * h + 2, 4 * h + 3);
    w.offset = Spread4(st.s.offset, 4 * h, 4 * h + 1, 4 * h + 2, 4 * h + 3);
    return w;
  }
};

struct Q5_KAvx512 {
  static constexpr int kGroupsPerStep = 2;
  static constexpr bool kLegacy = false;
  static constexpr int kNsumShift = -1;
  static constexpr bool kHasOffset = true;
  static constexpr bool kSplitScales = false;
  struct Step {
    const uint8_t* qs;
    const uint8_t* qh;
    KScales s;
  };
  MNEMO_AVX512_INLINE static Step Load(const uint8_t* row, int64_t s) {
    const BlockQ5_K& b = reinterpret_cast<const BlockQ5_K*>(row)[s];
    return {b.qs, b.qh, LoadKScales(b.scales, b.d, b.dmin)};
  }
  MNEMO_AVX512_INLINE static WeightGroup Group(const Step& st, int h) {
    WeightGroup w;
    __m512i lo, hi;
    KNibbles(st.qs, h, &lo, &hi);
    // The fifth bit of quant l of sub-block j is bit j of qh[l]; the vector's 16-byte
    // lane j holds sub-block 4h + j.
    const auto bit = [](int j) { return static_cast<int32_t>(0x01010101u << j); };
    const __m512i bits = _mm512_set_epi32(
        bit(4 * h + 3), bit(4 * h + 3), bit(4 * h + 3), bit(4 * h + 3), bit(4 * h + 2),
        bit(4 * h + 2), bit(4 * h + 2), bit(4 * h + 2), bit(4 * h + 1), bit(4 * h + 1),
        bit(4 * h + 1), bit(4 * h + 1), bit(4 * h), bit(4 * h), bit(4 * h), bit(4 * h));
    const __m512i sixteen = _mm512_set1_epi8(16);
    const __m512i qh_lo = _mm512_broadcast_i32x4(Load128(st.qh));
    const __m512i qh_hi = _mm512_broadcast_i32x4(Load128(st.qh + 16));
    lo = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(qh_lo, bits), lo, sixteen);
    hi = _mm512_mask_add_epi8(hi, _mm512_test_epi8_mask(qh_hi, bits), hi, sixteen);
    Widen(lo, hi, &w);
    w.step = Spread4(st.s.step, 4 * h, 4 * h + 1, 4 * h + 2, 4 * h + 3);
    w.offset = Spread4(st.s.offset, 4 * h, 4 * h + 1, 4 * h + 2, 4 * h + 3);
    return w;
  }
};

struct Q6_KAvx512 {
  static constexpr int kGroupsPerStep = 2;
  static constexpr bool kLegacy = false;
  static constexpr int kNsumShift = 5;  // quants stored as q + 32
  static constexpr bool kHasOffset = false;
  static constexpr bool kSplitScales = true;
  struct Step {
    const BlockQ6_K* b;
    __m512 scales;  // d * scales[j], the 16 sub-blocks of 16
  };
  MNEMO_AVX512_INLINE static Step Load(const uint8_t* row, int64_t s) {
    const BlockQ6_K* b = reinterpret_cast<const BlockQ6_K*>(row) + s;
    const __m512i sc = _mm512_cvtepi8_epi32(Load128(b->scales));
    return {b, _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(b->d)), _mm512_cvtepi32_ps(sc))};
  }
  MNEMO_AVX512_INLINE static WeightGroup Group(const Step& st, int h) {
    // Group h = elements 128h + 32k + l (k = 0..3 is the vector's 16-byte lane): low bits
    // from ql[64h ..] = Q0 Q1 Q2 Q3 (k = 0: low nibbles of Q0 Q1, k = 1: of Q2 Q3, k = 2, 3:
    // high nibbles), high bits k from bits 2k+1..2k of qh[32h + l].
    const __m512i v = _mm512_loadu_si512(st.b->ql + 64 * h);
    const __m512i l = LowNibbles(v);
    const __m512i u = HighNibbles(v);
    __m512i lo = _mm512_permutex2var_epi64(l, _mm512_set_epi64(13, 12, 9, 8, 5, 4, 1, 0), u);
    __m512i hi = _mm512_permutex2var_epi64(l, _mm512_set_epi64(15, 14, 11, 10, 7, 6, 3, 2), u);
    const __m512i shifts =
        _mm512_set_epi64(0x0006000600060006, 0x0006000600060006, 0x0004000400040004,
                         0x0004000400040004, 0x0002000200020002, 0x0002000200020002, 0, 0);
    const __m512i mask = _mm512_set1_epi8(0x30);
    const __m512i qh_lo = _mm512_broadcast_i32x4(Load128(st.b->qh + 32 * h));
    const __m512i qh_hi = _mm512_broadcast_i32x4(Load128(st.b->qh + 32 * h + 16));
    lo = _mm512_or_si512(
        lo, _mm512_and_si512(_mm512_slli_epi16(_mm512_srlv_epi16(qh_lo, shifts), 4), mask));
    hi = _mm512_or_si512(
        hi, _mm512_and_si512(_mm512_slli_epi16(_mm512_srlv_epi16(qh_hi, shifts), 4), mask));
    WeightGroup w;
    Widen(lo, hi, &w);
    // Quants 0..15 of k use scale 8h + 2k, quants 16..31 scale 8h + 2k + 1.
    w.step = Spread4(st.scales, 8 * h, 8 * h + 2, 8 * h + 4, 8 * h + 6);
    w.step_hi = Spread4(st.scales, 8 * h + 1, 8 * h + 3, 8 * h + 5, 8 * h + 7);
    return w;
  }
};

// ---- the tile --------------------------------------------------------------------------

// dot + sum over v of the int16 pairs of w.q[v] * x[v], lane by lane (exact).
MNEMO_AVX512_INLINE __m512i Dot2(__m512i dot, const __m512i* w, const __m512i* x) {
  return _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(dot, w[0], x[0]), w[1], x[1]);
}

template <int R, int C, class W>
MNEMO_AVX512_INLINE void Accumulate(const ActGroup* const* x, int64_t g, const WeightGroup* w,
                                    __m512 (&acc)[R][C]) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const ActGroup& a = x[r][g];
    __m512i xv[4];
    for (int v = 0; v < 4; ++v) xv[v] = _mm512_load_si512(a.qs + 32 * v);
    const __m512 dx = _mm512_load_ps(a.d);
    if constexpr (W::kSplitScales) {
      const __m512i init_lo = _mm512_slli_epi32(_mm512_load_si512(a.nsum_lo), W::kNsumShift);
      const __m512i init_hi = _mm512_slli_epi32(_mm512_load_si512(a.nsum_hi), W::kNsumShift);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) {
        const __m512i dot_lo = Dot2(init_lo, w[c].q, xv);
        const __m512i dot_hi = Dot2(init_hi, w[c].q + 2, xv + 2);
        acc[r][c] =
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_lo), _mm512_mul_ps(w[c].step, dx), acc[r][c]);
        acc[r][c] =
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_hi), _mm512_mul_ps(w[c].step_hi, dx), acc[r][c]);
      }
    } else {
      __m512i init = _mm512_setzero_si512();
      if constexpr (W::kNsumShift >= 0) {
        const __m512i nsum =
            _mm512_add_epi32(_mm512_load_si512(a.nsum_lo), _mm512_load_si512(a.nsum_hi));
        init = _mm512_slli_epi32(nsum, W::kNsumShift);
      }
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) {
        const __m512i dot = Dot2(Dot2(init, w[c].q, xv), w[c].q + 2, xv + 2);
        acc[r][c] =
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(w[c].step, dx), acc[r][c]);
        if constexpr (W::kHasOffset) {
          acc[r][c] = _mm512_fmadd_ps(w[c].offset, _mm512_load_ps(a.dsum), acc[r][c]);
        }
      }
    }
  }
}

template <int R, int C>
MNEMO_AVX512_INLINE void Store(const MatMulJob& job, int64_t m0, int64_t n0, __m512 (&acc)[R][C]) {
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      float v = ReduceAdd(acc[r][c]);
      if (job.bias != nullptr) v += job.bias[n0 + c];
      job.y[(m0 + r) * job.ldy + n0 + c] = v;
    }
  }
}

template <class W, int R, int C>
struct QuantTile {
  // Decodes the C weight rows group by group while accumulating (few activation rows).
  MNEMO_AVX512 static void Run(const MatMulJob& job, int64_t m0, int64_t n0) {
    const uint8_t* wrow[C];
    for (int c = 0; c < C; ++c) wrow[c] = job.w + (n0 + c) * job.w_row_bytes;
    const ActGroup* x[R];
    for (int r = 0; r < R; ++r) x[r] = job.xq + (m0 + r) * job.xq_groups;
    __m512 acc[R][C];
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
    }
    const int64_t blocks = job.k / 32;
    const int64_t steps = blocks / (kActGroupBlocks * W::kGroupsPerStep);
    const TilePrefetch prefetch(wrow[0], C * job.w_row_bytes, steps);
    for (int64_t s = 0; s < steps; ++s) {
      prefetch.Step(s);
      typename W::Step st[C];
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) st[c] = W::Load(wrow[c], s);
#pragma GCC unroll 2
      for (int h = 0; h < W::kGroupsPerStep; ++h) {
        WeightGroup w[C];
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) w[c] = W::Group(st[c], h);
        Accumulate<R, C, W>(x, s * W::kGroupsPerStep + h, w, acc);
      }
    }
    if constexpr (W::kLegacy) {
      if (blocks % kActGroupBlocks != 0) {
        WeightGroup w[C];
        for (int c = 0; c < C; ++c) w[c] = W::Group(W::Partial(wrow[c], blocks), 0);
        Accumulate<R, C, W>(x, steps, w, acc);
      }
    }
    Store<R, C>(job, m0, n0, acc);
  }

  // The same sequence with the weight groups decoded beforehand: group g of column c at
  // w[g * stride + c].
  MNEMO_AVX512 static void RunDecoded(const MatMulJob& job, int64_t m0, int64_t n0,
                                      const WeightGroup* w, int64_t stride) {
    const ActGroup* x[R];
    for (int r = 0; r < R; ++r) x[r] = job.xq + (m0 + r) * job.xq_groups;
    __m512 acc[R][C];
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
    }
    for (int64_t g = 0; g < job.xq_groups; ++g) Accumulate<R, C, W>(x, g, w + g * stride, acc);
    Store<R, C>(job, m0, n0, acc);
  }
};

// Every group of one weight row, to out[g * stride].
template <class W>
MNEMO_AVX512 void DecodeRow(const uint8_t* row, int64_t k, WeightGroup* out, int64_t stride) {
  const int64_t blocks = k / 32;
  const int64_t steps = blocks / (kActGroupBlocks * W::kGroupsPerStep);
  for (int64_t s = 0; s < steps; ++s) {
    const typename W::Step st = W::Load(row, s);
#pragma GCC unroll 2
    for (int h = 0; h < W::kGroupsPerStep; ++h) {
      out[(s * W::kGroupsPerStep + h) * stride] = W::Group(st, h);
    }
  }
  if constexpr (W::kLegacy) {
    if (blocks % kActGroupBlocks != 0) out[steps * stride] = W::Group(W::Partial(row, blocks), 0);
  }
}

constexpr int kTileRows = 4;
constexpr int kTileCols = 4;

// Tile of the decoded-weights path (4 x 4 measured best among 4x3, 3x4, 5x3, 6x2).
constexpr int kDecodedRows = 4;
constexpr int kDecodedCols = 4;

// Runs the decoded tile of exactly rows x cols (R, C: the largest allowed).
template <class W, int R, int C>
void RunDecodedTile(int64_t rows, int64_t cols, const MatMulJob& job, int64_t m0, int64_t n0,
                    const WeightGroup* w, int64_t stride) {
  if (rows == R && cols == C) return QuantTile<W, R, C>::RunDecoded(job, m0, n0, w, stride);
  if constexpr (C > 1) {
    if (rows == R) return RunDecodedTile<W, R, C - 1>(rows, cols, job, m0, n0, w, stride);
  }
  if constexpr (R > 1) {
    return RunDecodedTile<W, R - 1, kDecodedCols>(rows, cols, job, m0, n0, w, stride);
  }
}

// Per-thread scratch for decoded weight groups, grown on demand.
WeightGroup* DecodeScratch(int64_t n) {
  thread_local std::unique_ptr<WeightGroup[]> buf;
  thread_local int64_t capacity = 0;
  if (n > capacity) {
    buf.reset(new WeightGroup[n]);
    capacity = n;
  }
  return buf.get();
}

// Columns [n_begin, n_end) for all rows. With more rows than one tile, the chunk's weight
// rows are decoded once into scratch and every row tile reads them from cache; the
// arithmetic is the same either way.
template <class W>
void Columns(const TileSet& tiles, const MatMulJob& job, int64_t n_begin, int64_t n_end) {
  if (job.rows <= kTileRows) return RunTiles(tiles, job, n_begin, n_end);
  const int64_t cols = n_end - n_begin;
  WeightGroup* w = DecodeScratch(cols * job.xq_groups);
  for (int64_t c = 0; c < cols; ++c) {
    DecodeRow<W>(job.w + (n_begin + c) * job.w_row_bytes, job.k, w + c, cols);
  }
  for (int64_t m = 0; m < job.rows; m += kDecodedRows) {
    const int64_t tr = std::min<int64_t>(kDecodedRows, job.rows - m);
    for (int64_t c = 0; c < cols; c += kDecodedCols) {
      const int64_t tc = std::min<int64_t>(kDecodedCols, cols - c);
      RunDecodedTile<W, kDecodedRows, kDecodedCols>(tr, tc, job, m, n_begin + c, w + c, cols);
    }
  }
}

template <class W>
const TileSet& Tiles() {
  static const TileSet tiles = [] {
    TileSet t = MakeTileSet<QuantTile, W, kTileRows, kTileCols>();
    t.columns = &Columns<W>;
    return t;
  }();
  return tiles;
}

}  // namespace

const TileSet& QuantTilesAvx512(DType t) {
  switch (t) {
    case DType::kQ8_0:
      return Tiles<Q8_0Avx512>();
    case DType::kQ4_0:
      return Tiles<Q4_0Avx512>();
    case DType::kQ4_1:
      return Tiles<Q4_1Avx512>();
    case DType::kQ4_K:
      return Tiles<Q4_KAvx512>();
    case DType::kQ5_K:
      return Tiles<Q5_KAvx512>();
    default:
      break;
  }
  return Tiles<Q6_KAvx512>();
}

}  // namespace mnemo::kernels::internal

#endif  // __x86_64__
