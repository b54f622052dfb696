// AVX2 kernels for quantized weights (kernels/cpu/matmul_internal.h).
//
// One step handles one ActGroup (four 32-element blocks) as two units of two blocks: unit u
// covers blocks 2u, 2u+1 and the group vectors' lanes 8u..8u+7. A decoder turns the
// weights into unsigned bytes (lo = quants 0..15 of both blocks, hi = quants 16..31; Q8_0
// as q + 128) with per-lane scales; they are widened to int16 in the activations' order
// (q[v] = quants 8v..8v+7 of both blocks) and vpmaddwd multiplies them with the int16
// activation quants into int32 pairs (block 2u + j in lanes 4j..4j+3). Per output, in
// this order:
//   dot = bias * nsum + madd(q[0], x[0]) + ... + madd(q[3], x[3])   exact int32
//   acc = fmadd(cvt(dot), w_step * x_d, acc)
//   acc = fmadd(w_offset, x_dsum, acc)                           (Q4_1, Q4_K, Q5_K)
// Q6_K scales its two halves separately. y = sum of the 8 lanes in a fixed order (+ bias).
// Tiles of R activation rows x C weight rows run the same sequence on every output.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/quant_blocks.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define MNEMO_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MNEMO_AVX2_INLINE MNEMO_AVX2 inline __attribute__((always_inline))

namespace mnemo::kernels::internal {
namespace {

struct WeightUnit {
  __m256i lo;
  __m256i hi;
  __m256i q[4];    // lo and hi widened to int16 (Widen)
  __m256 step;     // per-lane weight scale (Q6_K: of quants 0..15)
  __m256 step_hi;  // Q6_K: scale of quants 16..31
  __m256 offset;   // per-lane weight offset
};

MNEMO_AVX2_INLINE float ReduceAdd(__m256 v) {
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

MNEMO_AVX2_INLINE __m128i Load128(const void* p) {
  return _mm_loadu_si128(static_cast<const __m128i*>(p));
}

// Lanes 0..3 = a, lanes 4..7 = b.
MNEMO_AVX2_INLINE __m256 Halves(float a, float b) {
  return _mm256_set_m128(_mm_set1_ps(b), _mm_set1_ps(a));
}

// w.lo and w.hi widened to int16 in the activations' order: within each 16-byte lane,
// bytes 0..7 then 8..15.
MNEMO_AVX2_INLINE void Widen(WeightUnit* w) {
  const __m256i zero = _mm256_setzero_si256();
  w->q[0] = _mm256_unpacklo_epi8(w->lo, zero);
  w->q[1] = _mm256_unpackhi_epi8(w->lo, zero);
  w->q[2] = _mm256_unpacklo_epi8(w->hi, zero);
  w->q[3] = _mm256_unpackhi_epi8(w->hi, zero);
}

MNEMO_AVX2_INLINE __m256i LowNibbles(__m256i v) {
  return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}
MNEMO_AVX2_INLINE __m256i HighNibbles(__m256i v) {
  return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0f));
}

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
  static constexpr bool kSplitScales = false;
  using Step = BlockRefs<Block>;
  MNEMO_AVX2_INLINE static Step Load(const uint8_t* row, int64_t s) {
    const Block* b = reinterpret_cast<const Block*>(row) + kActGroupBlocks * s;
    return {{b, b + 1, b + 2, b + 3}};
  }
  // The last group of a row with 1..3 blocks left: the missing ones read as an all-zero
  // block (scale 0), which meets zero activations and adds exactly nothing.
  MNEMO_AVX2_INLINE static Step Partial(const uint8_t* row, int64_t blocks) {
    const int64_t rest = blocks % kActGroupBlocks;
    const Block* b = reinterpret_cast<const Block*>(row) + (blocks - rest);
    Step st;
    for (int j = 0; j < kActGroupBlocks; ++j) st.p[j] = j < rest ? b + j : &ZeroBlock<Block>();
    return st;
  }
};

struct Q8_0Avx2 : LegacySteps<BlockQ8_0> {
  static constexpr int kNsumShift = 7;  // quants as q + 128
  static constexpr bool kHasOffset = false;
  MNEMO_AVX2_INLINE static WeightUnit Unit(const Step& b, int, int u) {
    const BlockQ8_0& p = b[2 * u];
    const BlockQ8_0& q = b[2 * u + 1];
    const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
    WeightUnit w;
    w.lo = _mm256_xor_si256(_mm256_set_m128i(Load128(q.qs), Load128(p.qs)), flip);
    w.hi = _mm256_xor_si256(_mm256_set_m128i(Load128(q.qs + 16), Load128(p.qs + 16)), flip);
    w.step = Halves(_cvtsh_ss(p.d), _cvtsh_ss(q.d));
    return w;
  }
};

struct Q4_0Avx2 : LegacySteps<BlockQ4_0> {
  static constexpr int kNsumShift = 3;  // quants stored as q + 8
  static constexpr bool kHasOffset = false;
  MNEMO_AVX2_INLINE static WeightUnit Unit(const Step& b, int, int u) {
    const BlockQ4_0& p = b[2 * u];
    const BlockQ4_0& q = b[2 * u + 1];
    const __m256i nib = _mm256_set_m128i(Load128(q.qs), Load128(p.qs));
    WeightUnit w;
    w.lo = LowNibbles(nib);
    w.hi = HighNibbles(nib);
    w.step = Halves(_cvtsh_ss(p.d), _cvtsh_ss(q.d));
    return w;
  }
};

struct Q4_1Avx2 : LegacySteps<BlockQ4_1> {
  static constexpr int kNsumShift = -1;
  static constexpr bool kHasOffset = true;
  MNEMO_AVX2_INLINE static WeightUnit Unit(const Step& b, int, int u) {
    const BlockQ4_1& p = b[2 * u];
    const BlockQ4_1& q = b[2 * u + 1];
    const __m256i nib = _mm256_set_m128i(Load128(q.qs), Load128(p.qs));
    WeightUnit w;
    w.lo = LowNibbles(nib);
    w.hi = HighNibbles(nib);
    w.step = Halves(_cvtsh_ss(p.d), _cvtsh_ss(q.d));
    w.offset = Halves(_cvtsh_ss(p.m), _cvtsh_ss(q.m));
    return w;
  }
};

// K-quants: a step is one 256-element super-block = two groups = four units.
struct KScalesAvx2 {
  alignas(32) float step[8];
  alignas(32) float offset[8];
};

// Unit u of group h of a Q4_K/Q5_K super-block = sub-blocks 4h + 2u (low nibbles) and
// 4h + 2u + 1 (high nibbles) of the 32 bytes qs[32 (2h + u) ..] = P0 P1.
MNEMO_AVX2_INLINE void KNibbles(const uint8_t* qs, int h, int u, __m256i* lo, __m256i* hi) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * (2 * h + u)));
  const __m256i l = LowNibbles(v);
  const __m256i t = HighNibbles(v);
  *lo = _mm256_permute2x128_si256(l, t, 0x20);  // low P0, high P0
  *hi = _mm256_permute2x128_si256(l, t, 0x31);  // low P1, high P1
}

template <class Block>
struct KSteps {
  static constexpr int kGroupsPerStep = 2;
  static constexpr bool kLegacy = false;
  static constexpr bool kSplitScales = false;
  static constexpr int kNsumShift = -1;
  static constexpr bool kHasOffset = true;
  struct Step {
    const Block* b;
    KScalesAvx2 s;
  };
  MNEMO_AVX2_INLINE static Step Load(const uint8_t* row, int64_t s) {
    Step st;
    st.b = reinterpret_cast<const Block*>(row) + s;
    KSubBlockScales(st.b->scales, st.b->d, st.b->dmin, st.s.step, st.s.offset);
    return st;
  }
  MNEMO_AVX2_INLINE static void Scales(const Step& st, int h, int u, WeightUnit* w) {
    const int j = 4 * h + 2 * u;
    w->step = Halves(st.s.step[j], st.s.step[j + 1]);
    w->offset = Halves(st.s.offset[j], st.s.offset[j + 1]);
  }
};

struct Q4_KAvx2 : KSteps<BlockQ4_K> {
  MNEMO_AVX2_INLINE static WeightUnit Unit(const Step& st, int h, int u) {
    WeightUnit w;
    KNibbles(st.b->qs, h, u, &w.lo, &w.hi);
    Scales(st, h, u, &w);
    return w;
  }
};

// 16 where qh has the bit of `bits` set, else 0 (per byte).
MNEMO_AVX2_INLINE __m256i FifthBits(__m256i qh, __m256i bits, __m256i sixteen) {
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bits), bits), sixteen);
}

struct Q5_KAvx2 : KSteps<BlockQ5_K> {
  MNEMO_AVX2_INLINE static WeightUnit Unit(const Step& st, int h, int u) {
    WeightUnit w;
    KNibbles(st.b->qs, h, u, &w.lo, &w.hi);
    // Fifth bit of quant l of sub-block j: bit j of qh[l]; 16-byte lane i is sub-block j0 + i.
    const int j0 = 4 * h + 2 * u;
    const __m256i bits = _mm256_set_m128i(_mm_set1_epi8(static_cast<char>(1 << (j0 + 1))),
                                          _mm_set1_epi8(static_cast<char>(1 << j0)));
    const __m256i sixteen = _mm256_set1_epi8(16);
    const __m256i qh_lo = _mm256_broadcastsi128_si256(Load128(st.b->qh));
    const __m256i qh_hi = _mm256_broadcastsi128_si256(Load128(st.b->qh + 16));
    w.lo = _mm256_or_si256(w.lo, FifthBits(qh_lo, bits, sixteen));
    w.hi = _mm256_or_si256(w.hi, FifthBits(qh_hi, bits, sixteen));
    Scales(st, h, u, &w);
    return w;
  }
};

struct Q6_KAvx2 {
  static constexpr int kGroupsPerStep = 2;
  static constexpr bool kLegacy = false;
  static constexpr bool kSplitScales = true;
  static constexpr int kNsumShift = 5;  // quants stored as q + 32
  static constexpr bool kHasOffset = false;
  struct Step {
    const BlockQ6_K* b;
    alignas(32) float scales[16];  // d * scales[j]
  };
  MNEMO_AVX2_INLINE static Step Load(const uint8_t* row, int64_t s) {
    Step st;
    st.b = reinterpret_cast<const BlockQ6_K*>(row) + s;
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(st.b->d));
    const __m128i sc = Load128(st.b->scales);
    _mm256_store_ps(st.scales, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))));
    _mm256_store_ps(
        st.scales + 8,
        _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)))));
    return st;
  }
  // Bits 2k+1..2k of 16 qh bytes moved to bits 5..4: k = k0 in the low 16-byte lane,
  // k0 + 1 in the high one.
  MNEMO_AVX2_INLINE static __m256i HighBits(const uint8_t* qh, int k0) {
    const __m256i v = _mm256_broadcastsi128_si256(Load128(qh));
    const __m256i s =
        _mm256_blend_epi32(_mm256_srli_epi16(v, 2 * k0), _mm256_srli_epi16(v, 2 * k0 + 2), 0xf0);
    return _mm256_and_si256(_mm256_slli_epi16(s, 4), _mm256_set1_epi8(0x30));
  }
  MNEMO_AVX2_INLINE static WeightUnit Unit(const Step& st, int h, int u) {
    // Unit u of group h = elements 128h + 32k + l for k = 2u, 2u + 1: low bits are the
    // low (u = 0) or high (u = 1) nibbles of ql[64h + 32 (k % 2) + l], high bits are bits
    // 2k+1..2k of qh[32h + l].
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(st.b->ql + 64 * h));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(st.b->ql + 64 * h + 32));
    const __m256i na = u == 0 ? LowNibbles(a) : HighNibbles(a);
    const __m256i nb = u == 0 ? LowNibbles(b) : HighNibbles(b);
    const int k0 = 2 * u;
    WeightUnit w;
    w.lo =
        _mm256_or_si256(_mm256_permute2x128_si256(na, nb, 0x20), HighBits(st.b->qh + 32 * h, k0));
    w.hi = _mm256_or_si256(_mm256_permute2x128_si256(na, nb, 0x31),
                           HighBits(st.b->qh + 32 * h + 16, k0));
    // Quants 0..15 of k use scale 8h + 2k, quants 16..31 scale 8h + 2k + 1.
    const float* s = st.scales + 8 * h + 2 * k0;
    w.step = Halves(s[0], s[2]);
    w.step_hi = Halves(s[1], s[3]);
    return w;
  }
};

// dot + the int32 pair sums of w[0] * x[0] and w[1] * x[1] (exact).
MNEMO_AVX2_INLINE __m256i Dot2(__m256i dot, const __m256i* w, const __m256i* x) {
  return _mm256_add_epi32(_mm256_add_epi32(dot, _mm256_madd_epi16(w[0], x[0])),
                          _mm256_madd_epi16(w[1], x[1]));
}

template <int R, int C, class W>
MNEMO_AVX2_INLINE void Accumulate(const ActGroup* const* x, int64_t g, int u, const WeightUnit* w,
                                  __m256 (&acc)[R][C]) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const ActGroup& a = x[r][g];
    __m256i xv[4];
    for (int v = 0; v < 4; ++v) {
      xv[v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(a.qs + 32 * v + 16 * u));
    }
    const __m256 dx = _mm256_load_ps(a.d + 8 * u);
    const __m256i nsum_lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(a.nsum_lo + 8 * u));
    const __m256i nsum_hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(a.nsum_hi + 8 * u));
    if constexpr (W::kSplitScales) {
      const __m256i init_lo = _mm256_slli_epi32(nsum_lo, W::kNsumShift);
      const __m256i init_hi = _mm256_slli_epi32(nsum_hi, W::kNsumShift);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) {
        const __m256i dot_lo = Dot2(init_lo, w[c].q, xv);
        const __m256i dot_hi = Dot2(init_hi, w[c].q + 2, xv + 2);
        acc[r][c] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_lo), _mm256_mul_ps(w[c].step, dx), acc[r][c]);
        acc[r][c] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_hi), _mm256_mul_ps(w[c].step_hi, dx), acc[r][c]);
      }
    } else {
      __m256i init = _mm256_setzero_si256();
      if constexpr (W::kNsumShift >= 0) {
        init = _mm256_slli_epi32(_mm256_add_epi32(nsum_lo, nsum_hi), W::kNsumShift);
      }
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) {
        const __m256i dot = Dot2(Dot2(init, w[c].q, xv), w[c].q + 2, xv + 2);
        acc[r][c] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(w[c].step, dx), acc[r][c]);
        if constexpr (W::kHasOffset) {
          acc[r][c] = _mm256_fmadd_ps(w[c].offset, _mm256_load_ps(a.dsum + 8 * u), acc[r][c]);
        }
      }
    }
  }
}

template <int R, int C, class W>
MNEMO_AVX2_INLINE void AccumulateGroup(const ActGroup* const* x, int64_t g,
                                       const typename W::Step* st, int h, __m256 (&acc)[R][C]) {
#pragma GCC unroll 2
  for (int u = 0; u < 2; ++u) {
    WeightUnit w[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      w[c] = W::Unit(st[c], h, u);
      Widen(&w[c]);
    }
    Accumulate<R, C, W>(x, g, u, w, acc);
  }
}

template <class W, int R, int C>
struct QuantTile {
  MNEMO_AVX2 static void Run(const MatMulJob& job, int64_t m0, int64_t n0) {
    const uint8_t* wrow[C];
    for (int c = 0; c < C; ++c) wrow[c] = job.w + (n0 + c) * job.w_row_bytes;
    const ActGroup* x[R];
    for (int r = 0; r < R; ++r) x[r] = job.xq + (m0 + r) * job.xq_groups;
    __m256 acc[R][C];
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
    }
    const int64_t blocks = job.k / 32;
    const int64_t steps = blocks / (kActGroupBlocks * W::kGroupsPerStep);
    const TilePrefetch prefetch(wrow[0], C * job.w_row_bytes, steps);
    for (int64_t s = 0; s < steps; ++s) {
      prefetch.Step(s);
      typename W::Step st[C];
      for (int c = 0; c < C; ++c) st[c] = W::Load(wrow[c], s);
#pragma GCC unroll 2
      for (int h = 0; h < W::kGroupsPerStep; ++h) {
        AccumulateGroup<R, C, W>(x, s * W::kGroupsPerStep + h, st, h, acc);
      }
    }
    if constexpr (W::kLegacy) {
      if (blocks % kActGroupBlocks != 0) {
        typename W::Step st[C];
        for (int c = 0; c < C; ++c) st[c] = W::Partial(wrow[c], blocks);
        AccumulateGroup<R, C, W>(x, steps, st, 0, acc);
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
};

constexpr int kTileRows = 4;
constexpr int kTileCols = 2;

template <class W>
const TileSet& Tiles() {
  static const TileSet tiles = MakeTileSet<QuantTile, W, kTileRows, kTileCols>();
  return tiles;
}

}  // namespace

const TileSet& QuantTilesAvx2(DType t) {
  switch (t) {
    case DType::kQ8_0:
      return Tiles<Q8_0Avx2>();
    case DType::kQ4_0:
      return Tiles<Q4_0Avx2>();
    case DType::kQ4_1:
      return Tiles<Q4_1Avx2>();
    case DType::kQ4_K:
      return Tiles<Q4_KAvx2>();
    case DType::kQ5_K:
      return Tiles<Q5_KAvx2>();
    default:
      break;
  }
  return Tiles<Q6_KAvx2>();
}

}  // namespace mnemo::kernels::internal

#endif  // __x86_64__
