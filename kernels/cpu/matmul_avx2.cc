// AVX2 + FMA + F16C MatMul kernels for f32 / f16 / bf16 weights, and the AVX2 tile sets
// (kernels/cpu/matmul_internal.h; quantized weights: matmul_avx2_quant.cc).
//
// Per output: acc = fmadd(x[i..i+8), w[i..i+8), acc) over 8-element steps (the tail
// zero-padded), then y = sum of the 8 lanes in a fixed order (+ bias); f16 and bf16 widen
// exactly to f32 first. Tiles of R activation rows x C weight rows run the same sequence
// on every accumulator, so the tiling never changes a result.
#include <algorithm>
#include <cstdint>

#include "kernels/cpu/matmul_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define MNEMO_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MNEMO_AVX2_INLINE MNEMO_AVX2 inline __attribute__((always_inline))

namespace mnemo::kernels::internal {
namespace {

MNEMO_AVX2_INLINE float ReduceAdd(__m256 v) {
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

struct F32Avx2 {
  using T = float;
  MNEMO_AVX2_INLINE static __m256 Load(const float* p) { return _mm256_loadu_ps(p); }
};

struct F16Avx2 {
  using T = uint16_t;
  MNEMO_AVX2_INLINE static __m256 Load(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
};

struct BF16Avx2 {
  using T = uint16_t;
  MNEMO_AVX2_INLINE static __m256 Load(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
};

// The float tile's last partial step: the k % 8 remaining elements, zero-padded.
template <class W>
MNEMO_AVX2_INLINE __m256 LoadTail(const typename W::T* p, int64_t n) {
  alignas(32) typename W::T buf[8] = {};
  for (int64_t i = 0; i < n; ++i) buf[i] = p[i];
  return W::Load(buf);
}

template <class W, int R, int C>
struct FloatTile {
  MNEMO_AVX2 static void Run(const MatMulJob& job, int64_t m0, int64_t n0) {
    using T = typename W::T;
    const T* wrow[C];
    for (int c = 0; c < C; ++c)
      wrow[c] = reinterpret_cast<const T*>(job.w + (n0 + c) * job.w_row_bytes);
    const float* x[R];
    for (int r = 0; r < R; ++r) x[r] = job.x + (m0 + r) * job.ldx;
    __m256 acc[R][C];
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
    }
    const int64_t k = job.k;
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
      __m256 w[C];
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) w[c] = W::Load(wrow[c] + i);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m256 xv = _mm256_loadu_ps(x[r] + i);
#pragma GCC unroll 4
        for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(xv, w[c], acc[r][c]);
      }
    }
    if (i < k) {
      __m256 w[C];
      for (int c = 0; c < C; ++c) w[c] = LoadTail<W>(wrow[c] + i, k - i);
      for (int r = 0; r < R; ++r) {
        const __m256 xv = LoadTail<F32Avx2>(x[r] + i, k - i);
        for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(xv, w[c], acc[r][c]);
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
  static const TileSet tiles = MakeTileSet<FloatTile, W, kTileRows, kTileCols>();
  return tiles;
}

}  // namespace

const TileSet& TilesAvx2(DType t) {
  switch (t) {
    case DType::kF32:
      return Tiles<F32Avx2>();
    case DType::kF16:
      return Tiles<F16Avx2>();
    case DType::kBF16:
      return Tiles<BF16Avx2>();
    default:
      return QuantTilesAvx2(t);
  }
}

}  // namespace mnemo::kernels::internal

#endif  // __x86_64__
