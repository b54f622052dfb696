// The row kernels of kernels/cpu/ops_rows.h written once over a vector-traits type V, and
// instantiated by kernels/cpu/ops_avx2.cc (V = 8 x f32) and kernels/cpu/ops_avx512.cc
// (V = 16 x f32). Include this header only from inside a `#pragma GCC target` region,
// after every other header, so that only these internal-linkage templates get the wider
// instruction set.
//
// V provides: kLanes, type T, Zero(), Set1(f), Load(p), Store(p, v), LoadTail(p, n)
// (lanes >= n zero), LoadTailOr(p, n, fill) (lanes >= n = fill), StoreTail(p, v, n), Add, Sub, Mul,
// Div, Max, Min, FmAdd(a, b, c) = a*b+c, FmSub(a, b, c) = a*b-c, Round (to nearest even), Pow2(n)
// (2^n for integral n in
// [-126, 127]), Greater/Less(a, b) masks, Blend(mask, a, b) (b where mask), ReduceAdd and
// ReduceMax (fixed lane order), SwapPairs (lanes 2i <-> 2i+1).
#pragma once

#include <cstdint>

namespace mnemo::kernels::internal::simd {

// exp(x) for f32 lanes, about 1 ulp: Cody-Waite reduction x = n ln2 + r (two-part ln2),
// a degree-6 polynomial on |r| <= ln2 / 2 (Cephes expf coefficients), and the scale 2^n
// applied as two exact power-of-two products (n may be 128 near the overflow threshold).
// +inf above ln(FLT_MAX), exactly 0 below ln(FLT_MIN) (including -inf).
template <class V>
inline typename V::T Exp(typename V::T x) {
  using T = typename V::T;
  const T hi = V::Set1(88.72283935546875f);
  const T lo = V::Set1(-87.33654022216797f);
  const T xc = V::Min(V::Max(x, lo), hi);
  const T n = V::Round(V::Mul(xc, V::Set1(1.44269504088896341f)));
  T r = V::FmAdd(n, V::Set1(-0.693359375f), xc);
  r = V::FmAdd(n, V::Set1(2.12194440e-4f), r);
  T p = V::Set1(1.9875691500e-4f);
  p = V::FmAdd(p, r, V::Set1(1.3981999507e-3f));
  p = V::FmAdd(p, r, V::Set1(8.3334519073e-3f));
  p = V::FmAdd(p, r, V::Set1(4.1665795894e-2f));
  p = V::FmAdd(p, r, V::Set1(1.6666665459e-1f));
  p = V::FmAdd(p, r, V::Set1(5.0000001201e-1f));
  const T y = V::FmAdd(p, V::Mul(r, r), V::Add(r, V::Set1(1.0f)));
  const T n1 = V::Round(V::Mul(n, V::Set1(0.5f)));
  const T n2 = V::Sub(n, n1);
  T e = V::Mul(V::Mul(y, V::Pow2(n1)), V::Pow2(n2));
  e = V::Blend(V::Greater(x, hi), e, V::Set1(__builtin_inff()));
  e = V::Blend(V::Less(x, lo), e, V::Zero());
  return e;
}

template <class V>
void RmsNormRow(const float* x, const float* w, float* y, int64_t cols, float eps) {
  using T = typename V::T;
  constexpr int64_t kN = V::kLanes;
  T acc = V::Zero();
  int64_t i = 0;
  for (; i + kN <= cols; i += kN) {
    const T v = V::Load(x + i);
    acc = V::FmAdd(v, v, acc);
  }
  if (i < cols) {
    const T v = V::LoadTail(x + i, cols - i);
    acc = V::FmAdd(v, v, acc);
  }
  const float ss = V::ReduceAdd(acc);
  const T scale = V::Set1(1.0f / __builtin_sqrtf(ss / static_cast<float>(cols) + eps));
  for (i = 0; i + kN <= cols; i += kN) {
    V::Store(y + i, V::Mul(V::Mul(V::Load(x + i), scale), V::Load(w + i)));
  }
  if (i < cols) {
    const int64_t n = cols - i;
    V::StoreTail(y + i, V::Mul(V::Mul(V::LoadTail(x + i, n), scale), V::LoadTail(w + i, n)), n);
  }
}

template <class V>
inline typename V::T Silu(typename V::T g, typename V::T u) {
  const typename V::T e = Exp<V>(V::Sub(V::Zero(), g));
  return V::Div(V::Mul(g, u), V::Add(V::Set1(1.0f), e));
}

template <class V>
void SwiGluRow(const float* gate, const float* up, float* out, int64_t cols) {
  constexpr int64_t kN = V::kLanes;
  int64_t i = 0;
  for (; i + kN <= cols; i += kN) V::Store(out + i, Silu<V>(V::Load(gate + i), V::Load(up + i)));
  if (i < cols) {
    const int64_t n = cols - i;
    V::StoreTail(out + i, Silu<V>(V::LoadTail(gate + i, n), V::LoadTail(up + i, n)), n);
  }
}

template <class V>
void SoftmaxRow(float* x, int64_t cols) {
  using T = typename V::T;
  constexpr int64_t kN = V::kLanes;
  const T neg_inf = V::Set1(-__builtin_inff());
  T m = neg_inf;
  int64_t i = 0;
  for (; i + kN <= cols; i += kN) m = V::Max(m, V::Load(x + i));
  if (i < cols) m = V::Max(m, V::LoadTailOr(x + i, cols - i, neg_inf));
  const float max_value = V::ReduceMax(m);
  if (max_value == -__builtin_inff()) {  // every entry masked: all zeros
    for (i = 0; i + kN <= cols; i += kN) V::Store(x + i, V::Zero());
    if (i < cols) V::StoreTail(x + i, V::Zero(), cols - i);
    return;
  }
  const T max = V::Set1(max_value);
  T sum = V::Zero();
  for (i = 0; i + kN <= cols; i += kN) {
    const T e = Exp<V>(V::Sub(V::Load(x + i), max));
    V::Store(x + i, e);
    sum = V::Add(sum, e);
  }
  if (i < cols) {
    const int64_t n = cols - i;
    // Lanes past the row load as -inf, so their exp is exactly 0 and the sum is unchanged.
    const T e = Exp<V>(V::Sub(V::LoadTailOr(x + i, n, neg_inf), max));
    V::StoreTail(x + i, e, n);
    sum = V::Add(sum, e);
  }
  const T inv = V::Set1(1.0f / V::ReduceAdd(sum));
  for (i = 0; i + kN <= cols; i += kN) V::Store(x + i, V::Mul(V::Load(x + i), inv));
  if (i < cols) {
    const int64_t n = cols - i;
    V::StoreTail(x + i, V::Mul(V::LoadTail(x + i, n), inv), n);
  }
}

template <class V>
void RopeRow(float* x, int n_heads, int head_dim, int rotary_dims, bool neox, const float* cc,
             const float* ss) {
  using T = typename V::T;
  constexpr int kN = V::kLanes;
  const int half = rotary_dims / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<int64_t>(h) * head_dim;
    if (neox) {
      int i = 0;
      for (; i + kN <= half; i += kN) {
        const T a = V::Load(v + i);
        const T b = V::Load(v + half + i);
        const T c = V::Load(cc + i);
        const T s = V::Load(ss + i);
        V::Store(v + i, V::FmSub(a, c, V::Mul(b, s)));
        V::Store(v + half + i, V::FmAdd(a, s, V::Mul(b, c)));
      }
      if (i < half) {
        const int n = half - i;
        const T a = V::LoadTail(v + i, n);
        const T b = V::LoadTail(v + half + i, n);
        const T c = V::LoadTail(cc + i, n);
        const T s = V::LoadTail(ss + i, n);
        V::StoreTail(v + i, V::FmSub(a, c, V::Mul(b, s)), n);
        V::StoreTail(v + half + i, V::FmAdd(a, s, V::Mul(b, c)), n);
      }
    } else {
      // x'[j] = x[j] cc[j] + x[j ^ 1] ss[j]; kN is even so pairs never straddle a step.
      int i = 0;
      for (; i + kN <= rotary_dims; i += kN) {
        const T a = V::Load(v + i);
        V::Store(v + i, V::FmAdd(a, V::Load(cc + i), V::Mul(V::SwapPairs(a), V::Load(ss + i))));
      }
      if (i < rotary_dims) {
        const int n = rotary_dims - i;
        const T a = V::LoadTail(v + i, n);
        V::StoreTail(
            v + i,
            V::FmAdd(a, V::LoadTail(cc + i, n), V::Mul(V::SwapPairs(a), V::LoadTail(ss + i, n))),
            n);
      }
    }
  }
}

}  // namespace mnemo::kernels::internal::simd
