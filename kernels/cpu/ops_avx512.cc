// AVX-512F row kernels (kernels/cpu/ops_rows.h): ops_simd.h over 16 x f32 lanes, with
// masked loads and stores for row tails.
#include <cstdint>

#include "kernels/cpu/ops_rows.h"

#if defined(__x86_64__)
#include <immintrin.h>

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as the pass-through operand, which
// -Wuninitialized reports at every inlining site (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")

namespace mnemo::kernels::internal {
namespace {

struct V512 {
  using T = __m512;
  static constexpr int kLanes = 16;
  static __mmask16 Mask(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static T Zero() { return _mm512_setzero_ps(); }
  static T Set1(float f) { return _mm512_set1_ps(f); }
  static T Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static T LoadTail(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(Mask(n), p); }
  static T LoadTailOr(const float* p, int64_t n, T fill) {
    return _mm512_mask_loadu_ps(fill, Mask(n), p);
  }
  static void StoreTail(float* p, T v, int64_t n) { _mm512_mask_storeu_ps(p, Mask(n), v); }
  static T Add(T a, T b) { return _mm512_add_ps(a, b); }
  static T Sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static T Mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T Div(T a, T b) { return _mm512_div_ps(a, b); }
  static T Max(T a, T b) { return _mm512_max_ps(a, b); }
  static T Min(T a, T b) { return _mm512_min_ps(a, b); }
  static T FmAdd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T FmSub(T a, T b, T c) { return _mm512_fmsub_ps(a, b, c); }
  static T Round(T a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static T Pow2(T n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  static __mmask16 Greater(T a, T b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static __mmask16 Less(T a, T b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static T Blend(__mmask16 m, T a, T b) { return _mm512_mask_blend_ps(m, a, b); }
  static float ReduceAdd(T v) {
    const __m512 h = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
    const __m256 e = _mm512_castps512_ps256(h);
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(e), _mm256_extractf128_ps(e, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
  }
  static float ReduceMax(T v) {
    const __m512 h = _mm512_max_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
    const __m256 e = _mm512_castps512_ps256(h);
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(e), _mm256_extractf128_ps(e, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
  }
  static T SwapPairs(T a) { return _mm512_permute_ps(a, 0xb1); }
};

}  // namespace
}  // namespace mnemo::kernels::internal

#include "kernels/cpu/ops_simd.h"

namespace mnemo::kernels::internal {

const RowKernels& RowKernelsAvx512() {
  static const RowKernels k{simd::RmsNormRow<V512>, simd::SwiGluRow<V512>, simd::SoftmaxRow<V512>,
                            simd::RopeRow<V512>};
  return k;
}

}  // namespace mnemo::kernels::internal

#pragma GCC pop_options

#else

namespace mnemo::kernels::internal {
const RowKernels& RowKernelsAvx512() { return RowKernelsScalar(); }
}  // namespace mnemo::kernels::internal

#endif
