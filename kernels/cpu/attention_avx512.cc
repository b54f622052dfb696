// The AVX-512 (F) PagedAttention item kernel: 16 f32 lanes, f16 -> f32 by vcvtph2ps, bf16
// by widening shifts, a polynomial exp. Compiled for AVX-512 by the target region below
// and called only when the processor has it (attention.cc dispatches).
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

// Everything defined from here to pop_options may use AVX-512F, AVX2, FMA and F16C. The
// headers above are outside the region, so no inline function they define is compiled
// for AVX-512 (which could leak into a shared COMDAT copy used on other processors).
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma,f16c")

namespace mnemo::kernels::attention_internal {
namespace {

// Adds the upper half of a vector to its lower half.
__m256 Fold(__m512 a) {
  return _mm256_add_ps(_mm512_castps512_ps256(a),
                       _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
}

// Lane j of the result is the sum of a_j's eight lanes, by the same tree for every j.
__m128 Reduce4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

struct Avx512Ops {
  static constexpr int kLanes = 16;

  static void LoadRows(const uint16_t* src, int64_t n, int hd, DType t, float* dst, int hdp) {
    for (int64_t r = 0; r < n; ++r) {
      const uint16_t* s = src + r * hd;
      float* o = dst + r * hdp;
      int d = 0;
      if (t == DType::kF16) {
        for (; d + 16 <= hd; d += 16) {
          const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + d));
          _mm512_storeu_ps(o + d, _mm512_cvtph_ps(h));
        }
        for (; d < hd; ++d) o[d] = F16ToF32(s[d]);
      } else {
        for (; d + 16 <= hd; d += 16) {
          const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + d));
          _mm512_storeu_ps(o + d,
                           _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
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
      __m512 a0 = _mm512_setzero_ps();
      __m512 a1 = a0;
      __m512 a2 = a0;
      __m512 a3 = a0;
      for (int d = 0; d < hdp; d += 16) {
        const __m512 qv = _mm512_loadu_ps(q + d);
        a0 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + d), a0);
        a1 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k1 + d), a1);
        a2 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k2 + d), a2);
        a3 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k3 + d), a3);
      }
      const __m128 r = Reduce4(Fold(a0), Fold(a1), Fold(a2), Fold(a3));
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

  // exp(x) for x <= 0: x = n ln2 + r (Cody-Waite split of ln2), exp(r) by its Taylor
  // polynomial to degree 7 (|r| <= ln2 / 2: truncation < 1e-8 relative), times 2^n.
  // x < -87 gives 0 (exp(-87) ~ 1.6e-38 is below f32's normal range).
  static __m512 Exp(__m512 x) {
    const __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 poly = _mm512_set1_ps(1.0f / 5040.0f);
    poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f / 720.0f));
    poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f / 120.0f));
    poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f / 24.0f));
    poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f / 6.0f));
    poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(0.5f));
    poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f));
    poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_mov_ps(static_cast<__mmask16>(~tiny), _mm512_scalef_ps(poly, n));
  }

  static float ExpShifted(const float* s, int n, float m, float* out) {
    const __m512 vm = _mm512_set1_ps(m);
    __m512 sum = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
      const __mmask16 mask = n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - i)) - 1);
      const __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, s + i), vm);
      const __m512 e = _mm512_maskz_mov_ps(mask, Exp(x));  // lanes past n: exactly 0
      _mm512_mask_storeu_ps(out + i, mask, e);
      sum = _mm512_add_ps(sum, e);
    }
    return _mm512_reduce_add_ps(sum);
  }

  // Four vectors of the accumulator stay in registers while the n value rows stream by;
  // each element still gets acc * alpha, then + p[0] v[0][d], + p[1] v[1][d], ... in order.
  static void ScaleAddRows(float* acc, float alpha, const float* p, const float* v, int n,
                           int hdp) {
    const __m512 va = _mm512_set1_ps(alpha);
    const bool rescale = alpha != 1.0f;  // skipping x * 1 changes no bit
    int d = 0;
    for (; d + 64 <= hdp; d += 64) {
      __m512 a0 = _mm512_loadu_ps(acc + d);
      __m512 a1 = _mm512_loadu_ps(acc + d + 16);
      __m512 a2 = _mm512_loadu_ps(acc + d + 32);
      __m512 a3 = _mm512_loadu_ps(acc + d + 48);
      if (rescale) {
        a0 = _mm512_mul_ps(a0, va);
        a1 = _mm512_mul_ps(a1, va);
        a2 = _mm512_mul_ps(a2, va);
        a3 = _mm512_mul_ps(a3, va);
      }
      for (int i = 0; i < n; ++i) {
        const __m512 pb = _mm512_set1_ps(p[i]);
        const float* vi = v + static_cast<int64_t>(i) * hdp + d;
        a0 = _mm512_fmadd_ps(pb, _mm512_loadu_ps(vi), a0);
        a1 = _mm512_fmadd_ps(pb, _mm512_loadu_ps(vi + 16), a1);
        a2 = _mm512_fmadd_ps(pb, _mm512_loadu_ps(vi + 32), a2);
        a3 = _mm512_fmadd_ps(pb, _mm512_loadu_ps(vi + 48), a3);
      }
      _mm512_storeu_ps(acc + d, a0);
      _mm512_storeu_ps(acc + d + 16, a1);
      _mm512_storeu_ps(acc + d + 32, a2);
      _mm512_storeu_ps(acc + d + 48, a3);
    }
    for (; d < hdp; d += 16) {
      __m512 a = _mm512_loadu_ps(acc + d);
      if (rescale) a = _mm512_mul_ps(a, va);
      for (int i = 0; i < n; ++i) {
        a = _mm512_fmadd_ps(_mm512_set1_ps(p[i]),
                            _mm512_loadu_ps(v + static_cast<int64_t>(i) * hdp + d), a);
      }
      _mm512_storeu_ps(acc + d, a);
    }
  }
};

#include "kernels/cpu/attention_driver.inc"

}  // namespace

void AttendItemAvx512(const AttentionParams& p, const WorkItem& w) { AttendItem<Avx512Ops>(p, w); }

}  // namespace mnemo::kernels::attention_internal

#pragma GCC pop_options
