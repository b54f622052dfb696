// The AVX2 PagedAttention item kernel: 8 f32 lanes, f16 -> f32 by F16C, bf16 by widening
// shifts, a polynomial exp. Compiled for AVX2 + FMA + F16C by the target region below and
// called only when the processor has them (attention.cc dispatches).
// GCC 12's AVX-512 intrinsics build their pass-through operands from a self-initialized
// "undefined" vector, which -Wmaybe-uninitialized flags at the header lines: silence it
// for the intrinsic headers only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cpu/attention_internal.h"
#include "kernels/half.h"

// Everything defined from here to pop_options may use AVX2, FMA and F16C; the headers above
// stay outside the region (see attention_avx512.cc).
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace mnemo::kernels::attention_internal {
namespace {

float HorizontalSum(__m256 x) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// Lane j of the result is the sum of a_j's eight lanes, by the same tree for every j.
__m128 Reduce4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

struct Avx2Ops {
  static constexpr int kLanes = 8;

  static void LoadRows(const uint16_t* src, int64_t n, int hd, DType t, float* dst, int hdp) {
    for (int64_t r = 0; r < n; ++r) {
      const uint16_t* s = src + r * hd;
      float* o = dst + r * hdp;
      int d = 0;
      if (t == DType::kF16) {
        for (; d + 8 <= hd; d += 8) {
          const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + d));
          _mm256_storeu_ps(o + d, _mm256_cvtph_ps(h));
        }
        for (; d < hd; ++d) o[d] = F16ToF32(s[d]);
      } else {
        for (; d + 8 <= hd; d += 8) {
          const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + d));
          _mm256_storeu_ps(o + d,
                           _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
        }
        for (; d < hd; ++d) o[d] = BF16ToF32(s[d]);
      }
      for (; d < hdp; ++d) o[d] = 0.0f;
    }
  }

  // Scores of keys k[0..n) (rows of hdp) against q, four keys at a time: each key has one
  // accumulator over the head dimension, then the four are reduced together by one
  // symmetric tree, so every key's score is the same sequence of operations wherever it
  // sits in its group (a short last group repeats key i; the extra results are dropped).
  static float Scores(const float* q, const float* k, int n, int hdp, float* s) {
    __m128 mx = _mm_set1_ps(-std::numeric_limits<float>::infinity());
    for (int i = 0; i < n; i += 4) {
      const float* k0 = k + static_cast<int64_t>(i) * hdp;
      const float* k1 = i + 1 < n ? k0 + hdp : k0;
      const float* k2 = i + 2 < n ? k0 + 2 * hdp : k0;
      const float* k3 = i + 3 < n ? k0 + 3 * hdp : k0;
      __m256 a0 = _mm256_setzero_ps();
      __m256 a1 = a0;
      __m256 a2 = a0;
      __m256 a3 = a0;
      for (int d = 0; d < hdp; d += 8) {
        const __m256 qv = _mm256_loadu_ps(q + d);
        a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
        a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + d), a1);
        a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + d), a2);
        a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + d), a3);
      }
      const __m128 r = Reduce4(a0, a1, a2, a3);
      mx = _mm_max_ps(mx, r);  // repeated keys do not change the max
      if (n - i >= 4) {
        _mm_storeu_ps(s + i, r);
      } else {
        alignas(16) float t[4];
        _mm_store_ps(t, r);
        for (int j = i; j < n; ++j) s[j] = t[j - i];
      }
    }
    mx = _mm_max_ps(mx, _mm_movehl_ps(mx, mx));
    return _mm_cvtss_f32(_mm_max_ss(mx, _mm_movehdup_ps(mx)));
  }

  // exp(x) for x <= 0, as in attention_avx512.cc; 2^n is built in the exponent bits
  // (n >= -126 after the clamp, so the result is a normal number).
  static __m256 Exp(__m256 x) {
    const __m256 keep = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ);
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 poly = _mm256_set1_ps(1.0f / 5040.0f);
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f / 720.0f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f / 120.0f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f / 24.0f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f / 6.0f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(0.5f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f));
    const __m256i bits =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(poly, _mm256_castsi256_ps(bits)), keep);
  }

  static float ExpShifted(const float* s, int n, float m, float* out) {
    const __m256 vm = _mm256_set1_ps(m);
    __m256 sum = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
      _mm256_storeu_ps(out + i, e);
      sum = _mm256_add_ps(sum, e);
    }
    if (i < n) {  // the same lane math on a copy padded with -inf (whose exp is 0)
      alignas(32) float t[8];
      for (int j = 0; j < 8; ++j)
        t[j] = i + j < n ? s[i + j] : -std::numeric_limits<float>::infinity();
      const __m256 e = Exp(_mm256_sub_ps(_mm256_load_ps(t), vm));
      _mm256_store_ps(t, e);
      for (int j = i; j < n; ++j) out[j] = t[j - i];
      sum = _mm256_add_ps(sum, e);
    }
    return HorizontalSum(sum);
  }

  // Four vectors of the accumulator stay in registers while the n value rows stream by;
  // each element still gets acc * alpha, then + p[0] v[0][d], + p[1] v[1][d], ... in order.
  static void ScaleAddRows(float* acc, float alpha, const float* p, const float* v, int n,
                           int hdp) {
    const __m256 va = _mm256_set1_ps(alpha);
    const bool rescale = alpha != 1.0f;  // skipping x * 1 changes no bit
    int d = 0;
    for (; d + 32 <= hdp; d += 32) {
      __m256 a0 = _mm256_loadu_ps(acc + d);
      __m256 a1 = _mm256_loadu_ps(acc + d + 8);
      __m256 a2 = _mm256_loadu_ps(acc + d + 16);
      __m256 a3 = _mm256_loadu_ps(acc + d + 24);
      if (rescale) {
        a0 = _mm256_mul_ps(a0, va);
        a1 = _mm256_mul_ps(a1, va);
        a2 = _mm256_mul_ps(a2, va);
        a3 = _mm256_mul_ps(a3, va);
      }
      for (int i = 0; i < n; ++i) {
        const __m256 pb = _mm256_set1_ps(p[i]);
        const float* vi = v + static_cast<int64_t>(i) * hdp + d;
        a0 = _mm256_fmadd_ps(pb, _mm256_loadu_ps(vi), a0);
        a1 = _mm256_fmadd_ps(pb, _mm256_loadu_ps(vi + 8), a1);
        a2 = _mm256_fmadd_ps(pb, _mm256_loadu_ps(vi + 16), a2);
        a3 = _mm256_fmadd_ps(pb, _mm256_loadu_ps(vi + 24), a3);
      }
      _mm256_storeu_ps(acc + d, a0);
      _mm256_storeu_ps(acc + d + 8, a1);
      _mm256_storeu_ps(acc + d + 16, a2);
      _mm256_storeu_ps(acc + d + 24, a3);
    }
    for (; d < hdp; d += 8) {
      __m256 a = _mm256_loadu_ps(acc + d);
      if (rescale) a = _mm256_mul_ps(a, va);
      for (int i = 0; i < n; ++i) {
        a = _mm256_fmadd_ps(_mm256_set1_ps(p[i]),
                            _mm256_loadu_ps(v + static_cast<int64_t>(i) * hdp + d), a);
      }
      _mm256_storeu_ps(acc + d, a);
    }
  }
};

#include "kernels/cpu/attention_driver.inc"

}  // namespace

void AttendItemAvx2(const AttentionParams& p, const WorkItem& w) { AttendItem<Avx2Ops>(p, w); }

}  // namespace mnemo::kernels::attention_internal

#pragma GCC pop_options
