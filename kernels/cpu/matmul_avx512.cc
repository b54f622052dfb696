// AVX-512F MatMul kernels for f32 / f16 / bf16 weights, and the AVX-512 tile sets
// (kernels/cpu/matmul_internal.h; quantized weights: matmul_avx512_quant.cc).
//
// Per output: acc = fmadd(x[i..i+16), w[i..i+16), acc) over 16-element steps (the tail
// masked to zero), then y = sum of the 16 lanes in a fixed order (+ bias); f16 and bf16
// widen exactly to f32 first. A tile of R activation rows x C weight rows loads each
// weight step once for R rows and each activation step once for C columns, and runs the
// same sequence on every accumulator, so the tiling never changes a result.
#include <algorithm>
#include <cstdint>

#include "kernels/cpu/matmul_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the pass-through operand, which
// -Wuninitialized reports at every inlining site (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define MNEMO_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define MNEMO_AVX512_INLINE MNEMO_AVX512 inline __attribute__((always_inline))

namespace mnemo::kernels::internal {
namespace {

MNEMO_AVX512_INLINE float ReduceAdd(__m512 v) {
  const __m512 h = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  const __m256 e = _mm512_castps512_ps256(h);
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(e), _mm256_extractf128_ps(e, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
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

template <class W, int R, int C>
struct FloatTile {
  MNEMO_AVX512 static void Run(const MatMulJob& job, int64_t m0, int64_t n0) {
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
};

constexpr int kTileRows = 4;
constexpr int kTileCols = 4;

template <class W>
const TileSet& Tiles() {
  static const TileSet tiles = MakeTileSet<FloatTile, W, kTileRows, kTileCols>();
  return tiles;
}

}  // namespace

const TileSet& TilesAvx512(DType t) {
  switch (t) {
    case DType::kF32:
      return Tiles<F32Avx512>();
    case DType::kF16:
      return Tiles<F16Avx512>();
    case DType::kBF16:
      return Tiles<BF16Avx512>();
    default:
      return QuantTilesAvx512(t);
  }
}

}  // namespace mnemo::kernels::internal

#endif  // __x86_64__
