// Per-element math of the dense ops (kernels/ops.h), shared by the CPU twins
// (kernels/cpu/ops_ref.cc, ops_fast.cc) and the CUDA kernels (kernels/cuda/ops.cu).
// Header-only, MNEMO_HD, no CUDA headers.
//
// Numerics: every function performs the same IEEE operations, in the same order, on host and
// device. On the device the products and sums that the CPU code rounds separately use the
// round-to-nearest intrinsics, so nvcc cannot contract them into an FMA; division and square
// root are correctly rounded on both (nvcc's default -prec-div/-prec-sqrt, no fast math).
// Only the transcendental functions differ: expf/sincos of CUDA's libdevice against glibc
// (both within 2 ulps), which is what the GPU tests' tolerances account for.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/base/hd.h"

namespace mnemo::kernels {

// exp(x) in f32: glibc's expf on the host, CUDA's (max 2 ulps) on the device.
MNEMO_HD float ExpF32(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return std::exp(x);
#endif
}

// ---- RMSNorm ---------------------------------------------------------------------------

// The factor 1 / sqrt(sum_sq / cols + eps) that scales a row whose squares sum to sum_sq.
MNEMO_HD float RmsNormScale(float sum_sq, int64_t cols, float eps) {
#if defined(__CUDA_ARCH__)
  return 1.0f / sqrtf(sum_sq / static_cast<float>(cols) + eps);
#else
  return 1.0f / std::sqrt(sum_sq / static_cast<float>(cols) + eps);
#endif
}

// y = (x * scale) * w, two roundings (the CPU's left-to-right order).
MNEMO_HD float RmsNormApply(float x, float scale, float w) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(__fmul_rn(x, scale), w);
#else
  return x * scale * w;
#endif
}

// ---- SwiGLU ----------------------------------------------------------------------------

// silu(g) * u = (g * u) / (1 + exp(-g)). Finite for every finite g: exp(-g) overflows to
// +inf only for g < -88.7, where the quotient is correctly -0 or a tiny value.
MNEMO_HD float SiluMul(float g, float u) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(__fmul_rn(g, u), __fadd_rn(1.0f, ExpF32(-g)));
#else
  return g * u / (1.0f + ExpF32(-g));
#endif
}

// ---- softmax ---------------------------------------------------------------------------

// exp(x - max) of one entry of a row whose maximum is `max` (finite). A masked entry
// (x = -inf) gives exactly 0.
MNEMO_HD float SoftmaxExp(float x, float max) {
#if defined(__CUDA_ARCH__)
  return ExpF32(__fsub_rn(x, max));
#else
  return ExpF32(x - max);
#endif
}

// ---- RoPE ------------------------------------------------------------------------------

// The two offsets (within a head) of rotation pair i < half = rotary_dims / 2:
//   normal: (2i, 2i + 1)          x0 x1 | x2 x3 | ...      adjacent elements
//   neox:   (i, i + half)         x0 .. x(half-1) | x(half) .. x(2 half - 1)   two halves
MNEMO_HD void RopePairOffsets(bool neox, int half, int i, int* a, int* b) {
  *a = neox ? i : 2 * i;
  *b = neox ? i + half : 2 * i + 1;
}

// cos and sin of the angle position * theta, each times mscale, rounded once to f32. The
// angle is formed in double: in f32 it would be off by up to position * 2^-24 radians
// (0.002 at position 40000), far more than the rotation's own error.
MNEMO_HD void RopeCosSin(int32_t position, float theta, float mscale, float* c, float* s) {
  const double angle = static_cast<double>(position) * static_cast<double>(theta);
#if defined(__CUDA_ARCH__)
  double sd;
  double cd;
  sincos(angle, &sd, &cd);
  *c = static_cast<float>(cd * mscale);
  *s = static_cast<float>(sd * mscale);
#else
  *c = static_cast<float>(std::cos(angle) * mscale);
  *s = static_cast<float>(std::sin(angle) * mscale);
#endif
}

// The rotated pair (va, vb) -> (va c - vb s, va s + vb c), in f32 with each product rounded.
MNEMO_HD void RopeRotate(float va, float vb, float c, float s, float* oa, float* ob) {
#if defined(__CUDA_ARCH__)
  *oa = __fsub_rn(__fmul_rn(va, c), __fmul_rn(vb, s));
  *ob = __fadd_rn(__fmul_rn(va, s), __fmul_rn(vb, c));
#else
  *oa = va * c - vb * s;
  *ob = va * s + vb * c;
#endif
}

}  // namespace mnemo::kernels
