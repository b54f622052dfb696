// AVX2 + FMA row kernels (kernels/cpu/ops_rows.h): ops_simd.h over 8 x f32 lanes, with
// vmaskmov loads and stores for row tails.
#include <cstdint>

#include "kernels/cpu/ops_rows.h"

#if defined(__x86_64__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace mnemo::kernels::internal {
namespace {

struct V256 {
  using T = __m256;
  static constexpr int kLanes = 8;
  static __m256i Mask(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static T Zero() { return _mm256_setzero_ps(); }
  static T Set1(float f) { return _mm256_set1_ps(f); }
  static T Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static T LoadTail(const float* p, int64_t n) { return _mm256_maskload_ps(p, Mask(n)); }
  static T LoadTailOr(const float* p, int64_t n, T fill) {
    const __m256i m = Mask(n);
    return _mm256_blendv_ps(fill, _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
  }
  static void StoreTail(float* p, T v, int64_t n) { _mm256_maskstore_ps(p, Mask(n), v); }
  static T Add(T a, T b) { return _mm256_add_ps(a, b); }
  static T Sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static T Mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static T Div(T a, T b) { return _mm256_div_ps(a, b); }
  static T Max(T a, T b) { return _mm256_max_ps(a, b); }
  static T Min(T a, T b) { return _mm256_min_ps(a, b); }
  static T FmAdd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T FmSub(T a, T b, T c) { return _mm256_fmsub_ps(a, b, c); }
  static T Round(T a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static T Pow2(T n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  static T Greater(T a, T b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static T Less(T a, T b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static T Blend(T m, T a, T b) { return _mm256_blendv_ps(a, b, m); }
  static float ReduceAdd(T v) {
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
  }
  static float ReduceMax(T v) {
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
  }
  static T SwapPairs(T a) { return _mm256_permute_ps(a, 0xb1); }
};

}  // namespace
}  // namespace mnemo::kernels::internal

#include "kernels/cpu/ops_simd.h"

namespace mnemo::kernels::internal {

const RowKernels& RowKernelsAvx2() {
  static const RowKernels k{simd::RmsNormRow<V256>, simd::SwiGluRow<V256>, simd::SoftmaxRow<V256>,
                            simd::RopeRow<V256>};
  return k;
}

}  // namespace mnemo::kernels::internal

#pragma GCC pop_options

#else

namespace mnemo::kernels::internal {
const RowKernels& RowKernelsAvx2() { return RowKernelsScalar(); }
}  // namespace mnemo::kernels::internal

#endif
