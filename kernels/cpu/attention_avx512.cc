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

  static float Dot(const float* a, const float* b, int hdp) {
    __m512 acc0 = _mm512_setzero_ps();
    __m512 acc1 = _mm512_setzero_ps();
    int d = 0;
    for (; d + 32 <= hdp; d += 32) {
      acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), acc0);
      acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d + 16), _mm512_loadu_ps(b + d + 16), acc1);
    }
    if (d < hdp) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), acc0);
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
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

  static void ExpShifted(const float* s, int n, float m, float* out) {
    const __m512 vm = _mm512_set1_ps(m);
    for (int i = 0; i < n; i += 16) {
      const __mmask16 mask = n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - i)) - 1);
      const __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, s + i), vm);
      _mm512_mask_storeu_ps(out + i, mask, Exp(x));
    }
  }

  static void ScaleAddRows(float* acc, float alpha, const float* p, const float* v, int n,
                           int hdp) {
    const __m512 va = _mm512_set1_ps(alpha);
    const bool rescale = alpha != 1.0f;  // skipping x * 1 changes no bit
    for (int d = 0; d < hdp; d += 16) {
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
