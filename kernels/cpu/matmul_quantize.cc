// Activation quantization for the quantized-weight MatMul kernels: one row of floats to
// ActGroups (layout in kernels/cpu/matmul_internal.h), with portable, AVX2 and AVX-512
// versions that give the same bits: the block max is exact in any order, d = amax / 32767 and
// 1 / d are single IEEE operations, and every quant is round-half-even(x * (1 / d)) (the
// SIMD conversion in the default rounding mode, the 1.5 * 2^23 trick in scalar code).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/ops.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace mnemo::kernels::internal {
namespace {

// Round half to even for |v| < 2^22 in the default rounding mode, without a libm call.
inline float RoundHalfEven(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

inline float BlockScale(float amax) { return amax / kActQuantMax; }
inline float InverseScale(float d) { return d != 0.0f ? 1.0f / d : 0.0f; }

// The per-lane fields of block j of a group, from its scale and quant sums. Always
// inlined: called from the AVX-512 path, it must be compiled as AVX-512 code there (SSE
// instructions after 512-bit code without vzeroupper run many times slower).
inline __attribute__((always_inline)) void FinishBlock(ActGroup& grp, int j, float d,
                                                       int32_t sum_lo, int32_t sum_hi) {
  for (int lane = 4 * j; lane < 4 * j + 4; ++lane) {
    const bool first = lane == 4 * j;
    grp.nsum_lo[lane] = first ? -sum_lo : 0;
    grp.nsum_hi[lane] = first ? -sum_hi : 0;
    grp.d[lane] = d;
    grp.dsum[lane] = first ? d * static_cast<float>(sum_lo + sum_hi) : 0.0f;
  }
}

inline __attribute__((always_inline)) void ZeroBlock(ActGroup& grp, int j) {
  for (int v = 0; v < 4; ++v) std::fill(grp.qs + 32 * v + 8 * j, grp.qs + 32 * v + 8 * j + 8, 0);
  FinishBlock(grp, j, 0.0f, 0, 0);
}

void QuantizeBlockScalar(const float* x, ActGroup& grp, int j) {
  float amax = 0.0f;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = BlockScale(amax);
  const float id = InverseScale(d);
  int32_t sum[2] = {0, 0};
  for (int i = 0; i < 32; ++i) {
    // |x * id| <= 32767 up to rounding; the clamp only guards non-finite input.
    const float v = std::clamp(RoundHalfEven(x[i] * id), -kActQuantMax, kActQuantMax);
    const int16_t q = static_cast<int16_t>(v);
    grp.qs[32 * (i / 8) + 8 * j + i % 8] = q;
    sum[i / 16] += q;
  }
  FinishBlock(grp, j, d, sum[0], sum[1]);
}

#if defined(__x86_64__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Quants 8v..8v+7 of block j. A plain 128-bit store (VEX/EVEX-encoded wherever inlined).
inline __attribute__((always_inline)) void Store8(ActGroup& grp, int v, int j, __m128i q) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(grp.qs + 32 * v + 8 * j), q);
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __attribute__((always_inline)) void
QuantizeBlockAvx512(const float* x, ActGroup& grp, int j) {
  const __m512 a = _mm512_loadu_ps(x);
  const __m512 b = _mm512_loadu_ps(x + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
  const float d = BlockScale(amax);
  const __m512 id = _mm512_set1_ps(InverseScale(d));
  const __m512 lim = _mm512_set1_ps(kActQuantMax);
  const __m512 neg_lim = _mm512_set1_ps(-kActQuantMax);
  const __m512i qa =
      _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(a, id), neg_lim), lim));
  const __m512i qb =
      _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(b, id), neg_lim), lim));
  const __m256i ha = _mm512_cvtsepi32_epi16(qa);
  const __m256i hb = _mm512_cvtsepi32_epi16(qb);
  Store8(grp, 0, j, _mm256_castsi256_si128(ha));
  Store8(grp, 1, j, _mm256_extracti128_si256(ha, 1));
  Store8(grp, 2, j, _mm256_castsi256_si128(hb));
  Store8(grp, 3, j, _mm256_extracti128_si256(hb, 1));
  FinishBlock(grp, j, d, _mm512_reduce_add_epi32(qa), _mm512_reduce_add_epi32(qb));
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void QuantizeRowAvx512(const float* x,
                                                                            int64_t k,
                                                                            ActGroup* out) {
  const int64_t blocks = k / 32;
  for (int64_t g = 0; g < ActGroupsPerRow(k); ++g) {
    for (int j = 0; j < kActGroupBlocks; ++j) {
      const int64_t b = kActGroupBlocks * g + j;
      if (b < blocks) {
        QuantizeBlockAvx512(x + 32 * b, out[g], j);
      } else {
        ZeroBlock(out[g], j);
      }
    }
  }
}

__attribute__((target("avx2,fma"))) inline __attribute__((always_inline)) int32_t HorizontalSum(
    __m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

__attribute__((target("avx2,fma"))) inline __attribute__((always_inline)) void QuantizeBlockAvx2(
    const float* x, ActGroup& grp, int j) {
  __m256 v[4];
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m = _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm256_loadu_ps(x + 8 * i);
    m = _mm256_max_ps(m, _mm256_and_ps(v[i], abs_mask));
  }
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  const float d = BlockScale(_mm_cvtss_f32(h));
  const __m256 id = _mm256_set1_ps(InverseScale(d));
  const __m256 lim = _mm256_set1_ps(kActQuantMax);
  const __m256 neg_lim = _mm256_set1_ps(-kActQuantMax);
  __m256i q[4];
  for (int i = 0; i < 4; ++i) {
    q[i] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v[i], id), neg_lim), lim));
  }
  // packs interleave 128-bit lanes: q0[0..3] q1[0..3] q0[4..7] q1[4..7]; the 64-bit
  // permutation restores element order.
  for (int p = 0; p < 2; ++p) {
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[2 * p], q[2 * p + 1]),
                                               _MM_SHUFFLE(3, 1, 2, 0));
    Store8(grp, 2 * p, j, _mm256_castsi256_si128(w));
    Store8(grp, 2 * p + 1, j, _mm256_extracti128_si256(w, 1));
  }
  FinishBlock(grp, j, d, HorizontalSum(_mm256_add_epi32(q[0], q[1])),
              HorizontalSum(_mm256_add_epi32(q[2], q[3])));
}

__attribute__((target("avx2,fma"))) void QuantizeRowAvx2(const float* x, int64_t k, ActGroup* out) {
  const int64_t blocks = k / 32;
  for (int64_t g = 0; g < ActGroupsPerRow(k); ++g) {
    for (int j = 0; j < kActGroupBlocks; ++j) {
      const int64_t b = kActGroupBlocks * g + j;
      if (b < blocks) {
        QuantizeBlockAvx2(x + 32 * b, out[g], j);
      } else {
        ZeroBlock(out[g], j);
      }
    }
  }
}
#endif

void QuantizeRowScalar(const float* x, int64_t k, ActGroup* out) {
  const int64_t blocks = k / 32;
  for (int64_t g = 0; g < ActGroupsPerRow(k); ++g) {
    for (int j = 0; j < kActGroupBlocks; ++j) {
      const int64_t b = kActGroupBlocks * g + j;
      if (b < blocks) {
        QuantizeBlockScalar(x + 32 * b, out[g], j);
      } else {
        ZeroBlock(out[g], j);
      }
    }
  }
}

}  // namespace

void QuantizeActRow(const float* x, int64_t k, ActGroup* out) {
#if defined(__x86_64__)
  switch (ActiveCpuIsa()) {
    case CpuIsa::kAvx512:
      return QuantizeRowAvx512(x, k, out);
    case CpuIsa::kAvx2:
      return QuantizeRowAvx2(x, k, out);
    case CpuIsa::kScalar:
      break;
  }
#endif
  QuantizeRowScalar(x, k, out);
}

}  // namespace mnemo::kernels::internal
