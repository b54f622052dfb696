// AVX-512 (F, BW, VL, VNNI) MatMul kernels (kernels/cpu/matmul_internal.h).
//
// Quantized weights: one step handles 64 elements (two 32-element blocks = one ActGroup).
// The weight quants are made unsigned bytes (stored bias added back, see ActGroup::nsum),
// vpdpbusd multiplies them with the signed activation quants into 16 int32 lanes (lanes
// 0..7 block 2g, 8..15 block 2g+1), exact; then per output, in this order:
//   acc = fmadd(cvt(lanes), w_scale * x_scale, acc)      (per-lane scales)
//   acc = fmadd(w_offset, x_dsum, acc)                   (Q4_1 / Q4_K / Q5_K only)
// and finally y = reduce_add(acc) (+ bias). Float weights: acc = fmadd(x, w, acc) over
// 16-element steps (masked tail), y = reduce_add(acc) (+ bias).
//
// Register blocking: a tile of R activation rows x C weight rows decodes each weight step
// once per tile and each activation step once per tile; every accumulator runs the same
// instruction sequence whatever R and C are, so results do not depend on the tiling.
#include <algorithm>
#include <cstdint>

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

// ---- weight decoders: 64 unsigned quants, per-lane step and offset -------------------

struct WeightPair {
  __m512i q;
  __m512 step;
  __m512 offset;
};

// Sum of the 16 lanes in a fixed order: halves, quarters, then pairs.
MNEMO_AVX512_INLINE float ReduceAdd(__m512 v) {
  const __m512 h = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  const __m256 e = _mm512_castps512_ps256(h);
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(e), _mm256_extractf128_ps(e, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

MNEMO_AVX512_INLINE WeightPair ZeroPair() {
  return {_mm512_setzero_si512(), _mm512_setzero_ps(), _mm512_setzero_ps()};
}

// Lanes 0..7 take element a of v, lanes 8..15 element b.
MNEMO_AVX512_INLINE __m512 SplitBroadcast(__m512 v, int a, int b) {
  const __m512i idx = _mm512_set_epi32(b, b, b, b, b, b, b, b, a, a, a, a, a, a, a, a);
  return _mm512_permutexvar_ps(idx, v);
}

// Two f16 scale bits -> lanes 0..7 = first, 8..15 = second.
MNEMO_AVX512_INLINE __m512 ScalePair(uint16_t first, uint16_t second) {
  const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(first | (static_cast<int>(second) << 16)));
  return SplitBroadcast(_mm512_castps128_ps512(f), 0, 1);
}

// 16 + 16 nibble bytes (two Q4 blocks) -> 64 quants [lo(a), hi(a), lo(b), hi(b)].
MNEMO_AVX512_INLINE __m512i UnpackNibblePair(const uint8_t* a, const uint8_t* b) {
  const __m256i t = _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))),
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), 1);
  const __m256i mask = _mm256_set1_epi8(0x0f);
  const __m256i lo = _mm256_and_si256(t, mask);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(t, 4), mask);
  const __m512i z =
      _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);  // lo a, lo b, hi a, hi b
  return _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));
}

// Legacy formats: a step is one pair of blocks; a row with an odd block count ends with a
// half step whose second block is all zero.
struct Q8_0Avx512 {
  static constexpr int kPairsPerStep = 1;
  static constexpr int kNsumShift = 7;  // quants stored as q + 128
  static constexpr bool kHasOffset = false;
  static constexpr bool kHasTail = true;
  struct Step {
    const BlockQ8_0* b;
  };
  MNEMO_AVX512_INLINE static Step Load(const uint8_t* row, int64_t s) {
    return {reinterpret_cast<const BlockQ8_0*>(row) + 2 * s};
  }
  MNEMO_AVX512_INLINE static WeightPair Pair(const Step& st, int) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(st.b[0].qs));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(st.b[1].qs));
    const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
    return {_mm512_xor_si512(q, _mm512_set1_epi8(static_cast<char>(0x80))),
            ScalePair(st.b[0].d, st.b[1].d), _mm512_setzero_ps()};
  }
  MNEMO_AVX512_INLINE static WeightPair Tail(const uint8_t* row, int64_t block) {
    const BlockQ8_0& b = reinterpret_cast<const BlockQ8_0*>(row)[block];
    const __m256i a = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)),
                                       _mm256_set1_epi8(static_cast<char>(0x80)));
    return {_mm512_zextsi256_si512(a), ScalePair(b.d, 0), _mm512_setzero_ps()};
  }
};

struct Q4_0Avx512 {
  static constexpr int kPairsPerStep = 1;
  static constexpr int kNsumShift = 3;  // quants stored as q + 8
  static constexpr bool kHasOffset = false;
  static constexpr bool kHasTail = true;
  struct Step {
    const BlockQ4_0* b;
  };
  MNEMO_AVX512_INLINE static Step Load(const uint8_t* row, int64_t s) {
    return {reinterpret_cast<const BlockQ4_0*>(row) + 2 * s};
  }
  MNEMO_AVX512_INLINE static WeightPair Pair(const Step& st, int) {
    return {UnpackNibblePair(st.b[0].qs, st.b[1].qs), ScalePair(st.b[0].d, st.b[1].d),
            _mm512_setzero_ps()};
  }
  MNEMO_AVX512_INLINE static WeightPair Tail(const uint8_t* row, int64_t block) {
    const BlockQ4_0& b = reinterpret_cast<const BlockQ4_0*>(row)[block];
    const __m512i q = UnpackNibblePair(b.qs, b.qs);
    return {_mm512_zextsi256_si512(_mm512_castsi512_si256(q)), ScalePair(b.d, 0),
            _mm512_setzero_ps()};
  }
};

struct Q4_1Avx512 {
  static constexpr int kPairsPerStep = 1;
  static constexpr int kNsumShift = -1;  // quants stored as they are
  static constexpr bool kHasOffset = true;
  static constexpr bool kHasTail = true;
  struct Step {
    const BlockQ4_1* b;
  };
  MNEMO_AVX512_INLINE static Step Load(const uint8_t* row, int64_t s) {
    return {reinterpret_cast<const BlockQ4_1*>(row) + 2 * s};
  }
  MNEMO_AVX512_INLINE static WeightPair Make(const BlockQ4_1& a, const BlockQ4_1& b, uint16_t db,
                                             uint16_t mb) {
    const __m128i h = _mm_set_epi16(0, 0, 0, 0, static_cast<int16_t>(mb), static_cast<int16_t>(a.m),
                                    static_cast<int16_t>(db), static_cast<int16_t>(a.d));
    const __m512 f = _mm512_castps128_ps512(_mm_cvtph_ps(h));
    return {UnpackNibblePair(a.qs, b.qs), SplitBroadcast(f, 0, 1), SplitBroadcast(f, 2, 3)};
  }
  MNEMO_AVX512_INLINE static WeightPair Pair(const Step& st, int) {
    return Make(st.b[0], st.b[1], st.b[1].d, st.b[1].m);
  }
  MNEMO_AVX512_INLINE static WeightPair Tail(const uint8_t* row, int64_t block) {
    const BlockQ4_1& b = reinterpret_cast<const BlockQ4_1*>(row)[block];
    WeightPair w = Make(b, b, 0, 0);
    w.q = _mm512_zextsi256_si512(_mm512_castsi512_si256(w.q));
    return w;
  }
};

// K-quants: a step is one 256-element super-block (four pairs); its scales are decoded once.
struct KSteps {
  __m512 step;    // lanes 0..7: sub-block steps
  __m512 offset;  // lanes 0..7: sub-block offsets
};

MNEMO_AVX512_INLINE KSteps LoadKScales(const uint8_t* scales, uint16_t d, uint16_t dmin) {
  alignas(64) float step[16] = {};
  alignas(64) float offset[16] = {};
  KSubBlockScales(scales, d, dmin, step, offset);
  return {_mm512_load_ps(step), _mm512_load_ps(offset)};
}

struct Q4_KAvx512 {
  static constexpr int kPairsPerStep = 4;
  static constexpr int kNsumShift = -1;
  static constexpr bool kHasOffset = true;
  static constexpr bool kHasTail = false;
  struct Step {
    const uint8_t* qs;
    KSteps s;
  };
  MNEMO_AVX512_INLINE static Step Load(const uint8_t* row, int64_t s) {
    const BlockQ4_K& b = reinterpret_cast<const BlockQ4_K*>(row)[s];
    return {b.qs, LoadKScales(b.scales, b.d, b.dmin)};
  }
  MNEMO_AVX512_INLINE static WeightPair Pair(const Step& st, int g) {
    // Sub-blocks 2g (low nibbles) and 2g + 1 (high nibbles) of qs[32g .. 32g + 31].
    const __m256i t = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(st.qs + 32 * g));
    const __m256i mask = _mm256_set1_epi8(0x0f);
    const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(t, mask)),
                                         _mm256_and_si256(_mm256_srli_epi16(t, 4), mask), 1);
    return {q, SplitBroadcast(st.s.step, 2 * g, 2 * g + 1),
            SplitBroadcast(st.s.offset, 2 * g, 2 * g + 1)};
  }
  MNEMO_AVX512_INLINE static WeightPair Tail(const uint8_t*, int64_t) { return ZeroPair(); }
};

struct Q5_KAvx512 {
  static constexpr int kPairsPerStep = 4;
  static constexpr int kNsumShift = -1;
  static constexpr bool kHasOffset = true;
  static constexpr bool kHasTail = false;
  struct Step {
    const uint8_t* qs;
    const uint8_t* qh;
    KSteps s;
  };
  MNEMO_AVX512_INLINE static Step Load(const uint8_t* row, int64_t s) {
    const BlockQ5_K& b = reinterpret_cast<const BlockQ5_K*>(row)[s];
    return {b.qs, b.qh, LoadKScales(b.scales, b.d, b.dmin)};
  }
  MNEMO_AVX512_INLINE static WeightPair Pair(const Step& st, int g) {
    const __m256i t = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(st.qs + 32 * g));
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(st.qh));
    const __m256i mask = _mm256_set1_epi8(0x0f);
    // The fifth bit of sub-block j is bit j of qh[l]: test it, turn it into 16.
    const __m256i bit_lo = _mm256_set1_epi8(static_cast<char>(1 << (2 * g)));
    const __m256i bit_hi = _mm256_set1_epi8(static_cast<char>(1 << (2 * g + 1)));
    const __m256i sixteen = _mm256_set1_epi8(16);
    const __m256i lo = _mm256_or_si256(
        _mm256_and_si256(t, mask),
        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, bit_lo), bit_lo), sixteen));
    const __m256i hi = _mm256_or_si256(
        _mm256_and_si256(_mm256_srli_epi16(t, 4), mask),
        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, bit_hi), bit_hi), sixteen));
    return {_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1),
            SplitBroadcast(st.s.step, 2 * g, 2 * g + 1),
            SplitBroadcast(st.s.offset, 2 * g, 2 * g + 1)};
  }
  MNEMO_AVX512_INLINE static WeightPair Tail(const uint8_t*, int64_t) { return ZeroPair(); }
};

struct Q6_KAvx512 {
  static constexpr int kPairsPerStep = 4;
  static constexpr int kNsumShift = 5;  // quants stored as q + 32
  static constexpr bool kHasOffset = false;
  static constexpr bool kHasTail = false;
  struct Step {
    const BlockQ6_K* b;
    __m512 scales;  // d * scales[j], j = 0..15 (16-element sub-blocks)
  };
  MNEMO_AVX512_INLINE static Step Load(const uint8_t* row, int64_t s) {
    const BlockQ6_K* b = reinterpret_cast<const BlockQ6_K*>(row) + s;
    const __m512i sc =
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b->scales)));
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(b->d));
    return {b, _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc))};
  }
  MNEMO_AVX512_INLINE static WeightPair Pair(const Step& st, int pp) {
    // Pair pp covers elements 64pp .. 64pp + 63: half h = pp / 2, k = 2 (pp % 2) + {0, 1}.
    const int h = pp / 2;
    const __m512i ql = _mm512_loadu_si512(st.b->ql + 64 * h);
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(st.b->qh + 32 * h));
    const __m512i qhz = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
    const __m512i low_mask = _mm512_set1_epi8(0x0f);
    const __m512i high_mask = _mm512_set1_epi8(0x30);
    __m512i q;
    if (pp % 2 == 0) {  // k = 0, 1: low nibbles, qh bits 1..0 and 3..2
      q = _mm512_or_si512(_mm512_and_si512(ql, low_mask),
                          _mm512_and_si512(_mm512_slli_epi16(qhz, 4), high_mask));
    } else {  // k = 2, 3: high nibbles, qh bits 5..4 and 7..6
      q = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low_mask),
                          _mm512_and_si512(qhz, high_mask));
    }
    // Lanes 4j..4j+3 cover 16 elements: scale 4pp + j.
    const int s = 4 * pp;
    const __m512i idx = _mm512_set_epi32(s + 3, s + 3, s + 3, s + 3, s + 2, s + 2, s + 2, s + 2,
                                         s + 1, s + 1, s + 1, s + 1, s, s, s, s);
    return {q, _mm512_permutexvar_ps(idx, st.scales), _mm512_setzero_ps()};
  }
  MNEMO_AVX512_INLINE static WeightPair Tail(const uint8_t*, int64_t) { return ZeroPair(); }
};

// ---- the quantized tile ----------------------------------------------------------------

template <int R, int C, class W>
MNEMO_AVX512_INLINE void Accumulate(const ActGroup* const* x, int64_t g, const WeightPair* w,
                                    __m512 (&acc)[R][C]) {
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const ActGroup& a = x[r][g];
    const __m512i qx = _mm512_load_si512(a.qs);
    const __m512 dx = _mm512_load_ps(a.d);
    __m512i init = _mm512_setzero_si512();
    if constexpr (W::kNsumShift >= 0) {
      init = _mm512_slli_epi32(_mm512_load_si512(a.nsum), W::kNsumShift);
    }
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      const __m512i dot = _mm512_dpbusd_epi32(init, w[c].q, qx);
      acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(w[c].step, dx), acc[r][c]);
      if constexpr (W::kHasOffset) {
        acc[r][c] = _mm512_fmadd_ps(w[c].offset, _mm512_load_ps(a.dsum), acc[r][c]);
      }
    }
  }
}

template <int R, int C, class W>
MNEMO_AVX512 void QuantTile(const MatMulJob& job, int64_t m0, int64_t n0) {
  const uint8_t* wrow[C];
  for (int c = 0; c < C; ++c) wrow[c] = job.w + (n0 + c) * job.w_row_bytes;
  const ActGroup* x[R];
  for (int r = 0; r < R; ++r) x[r] = job.xq + (m0 + r) * job.xq_groups;
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  const int64_t blocks = job.k / 32;
  const int64_t steps = blocks / (2 * W::kPairsPerStep);
  for (int64_t s = 0; s < steps; ++s) {
    typename W::Step st[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) st[c] = W::Load(wrow[c], s);
#pragma GCC unroll 4
    for (int pp = 0; pp < W::kPairsPerStep; ++pp) {
      WeightPair w[C];
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) w[c] = W::Pair(st[c], pp);
      Accumulate<R, C, W>(x, s * W::kPairsPerStep + pp, w, acc);
    }
  }
  if constexpr (W::kHasTail) {
    if (blocks % 2 == 1) {
      WeightPair w[C];
      for (int c = 0; c < C; ++c) w[c] = W::Tail(wrow[c], blocks - 1);
      Accumulate<R, C, W>(x, blocks / 2, w, acc);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      float v = ReduceAdd(acc[r][c]);
      if (job.bias != nullptr) v += job.bias[n0 + c];
      job.y[(m0 + r) * job.ldy + n0 + c] = v;
    }
  }
}

// ---- float weights ---------------------------------------------------------------------

struct F32Avx512 {
  using T = float;
  MNEMO_AVX512_INLINE static __m512 Load(const float* p) { return _mm512_loadu_ps(p); }
  MNEMO_AVX512_INLINE static __m512 LoadMasked(const float* p, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, p);
  }
};

struct F16Avx512 {
  using T = uint16_t;
  MNEMO_AVX512_INLINE static __m512 Load(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  MNEMO_AVX512_INLINE static __m512 LoadMasked(const uint16_t* p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
  }
};

struct BF16Avx512 {
  using T = uint16_t;
  MNEMO_AVX512_INLINE static __m512 Widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  MNEMO_AVX512_INLINE static __m512 Load(const uint16_t* p) {
    return Widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  MNEMO_AVX512_INLINE static __m512 LoadMasked(const uint16_t* p, __mmask16 m) {
    return Widen(_mm256_maskz_loadu_epi16(m, p));
  }
};

template <int R, int C, class W>
MNEMO_AVX512 void FloatTile(const MatMulJob& job, int64_t m0, int64_t n0) {
  using T = typename W::T;
  const T* wrow[C];
  for (int c = 0; c < C; ++c)
    wrow[c] = reinterpret_cast<const T*>(job.w + (n0 + c) * job.w_row_bytes);
  const float* x[R];
  for (int r = 0; r < R; ++r) x[r] = job.x + (m0 + r) * job.ldx;
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  const int64_t k = job.k;
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    __m512 w[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) w[c] = W::Load(wrow[c] + i);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_loadu_ps(x[r] + i);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(xv, w[c], acc[r][c]);
    }
  }
  if (i < k) {
    const __mmask16 m = static_cast<__mmask16>((1u << (k - i)) - 1u);
    __m512 w[C];
    for (int c = 0; c < C; ++c) w[c] = W::LoadMasked(wrow[c] + i, m);
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x[r] + i);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(xv, w[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      float v = ReduceAdd(acc[r][c]);
      if (job.bias != nullptr) v += job.bias[n0 + c];
      job.y[(m0 + r) * job.ldy + n0 + c] = v;
    }
  }
}

// ---- tiling ----------------------------------------------------------------------------

constexpr int kTileRows = 4;
constexpr int kTileCols = 4;
constexpr int64_t kRowBlock = 64;  // activation rows kept hot in cache per weight pass

// Float weight formats name their element type T.
template <class W>
concept FloatWeights = requires {
  typename W::T;
};

template <int R, int C, class W>
MNEMO_AVX512_INLINE void Tile(const MatMulJob& job, int64_t m0, int64_t n0) {
  if constexpr (FloatWeights<W>) {
    FloatTile<R, C, W>(job, m0, n0);
  } else {
    QuantTile<R, C, W>(job, m0, n0);
  }
}

template <class W, int R>
MNEMO_AVX512 void TileRow(const MatMulJob& job, int64_t m0, int64_t n0, int64_t cols) {
  switch (cols) {
    case 4:
      return Tile<R, 4, W>(job, m0, n0);
    case 3:
      return Tile<R, 3, W>(job, m0, n0);
    case 2:
      return Tile<R, 2, W>(job, m0, n0);
    default:
      return Tile<R, 1, W>(job, m0, n0);
  }
}

template <class W>
MNEMO_AVX512 void Columns(const MatMulJob& job, int64_t n_begin, int64_t n_end) {
  for (int64_t mb = 0; mb < job.rows; mb += kRowBlock) {
    const int64_t mb_end = std::min(job.rows, mb + kRowBlock);
    for (int64_t n = n_begin; n < n_end; n += kTileCols) {
      const int64_t cols = std::min<int64_t>(kTileCols, n_end - n);
      int64_t m = mb;
      for (; m + kTileRows <= mb_end; m += kTileRows) TileRow<W, 4>(job, m, n, cols);
      switch (mb_end - m) {
        case 3:
          TileRow<W, 3>(job, m, n, cols);
          break;
        case 2:
          TileRow<W, 2>(job, m, n, cols);
          break;
        case 1:
          TileRow<W, 1>(job, m, n, cols);
          break;
        default:
          break;
      }
    }
  }
}

}  // namespace

void MatMulColumnsAvx512(const MatMulJob& job, int64_t n_begin, int64_t n_end) {
  switch (job.dtype) {
    case DType::kF32:
      return Columns<F32Avx512>(job, n_begin, n_end);
    case DType::kF16:
      return Columns<F16Avx512>(job, n_begin, n_end);
    case DType::kBF16:
      return Columns<BF16Avx512>(job, n_begin, n_end);
    case DType::kQ8_0:
      return Columns<Q8_0Avx512>(job, n_begin, n_end);
    case DType::kQ4_0:
      return Columns<Q4_0Avx512>(job, n_begin, n_end);
    case DType::kQ4_1:
      return Columns<Q4_1Avx512>(job, n_begin, n_end);
    case DType::kQ4_K:
      return Columns<Q4_KAvx512>(job, n_begin, n_end);
    case DType::kQ5_K:
      return Columns<Q5_KAvx512>(job, n_begin, n_end);
    case DType::kQ6_K:
      return Columns<Q6_KAvx512>(job, n_begin, n_end);
    default:
      return MatMulColumnsScalar(job, n_begin, n_end);
  }
}

}  // namespace mnemo::kernels::internal

#else  // not x86-64: never selected (ActiveCpuIsa() is kScalar)

namespace mnemo::kernels::internal {
void MatMulColumnsAvx512(const MatMulJob& job, int64_t n_begin, int64_t n_end) {
  MatMulColumnsScalar(job, n_begin, n_end);
}
}  // namespace mnemo::kernels::internal

#endif
