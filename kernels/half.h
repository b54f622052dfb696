// IEEE binary16 (fp16) and bfloat16 <-> binary32 (f32) conversions, by bit manipulation.
//
// Usable from host and device code (MNEMO_HD) and independent of any compiler's half type,
// so the CPU reference and the CUDA kernels convert identically. Values are passed as their
// raw bits (uint16_t), the way GGUF files and the quantized blocks store them.
//
//   fp16:  s eeeee mmmmmmmmmm         bias 15, subnormals when e == 0, inf/NaN when e == 31
//   bf16:  s eeeeeeee mmmmmmm         the top 16 bits of an f32 (bias 127)
//   f32:   s eeeeeeee mmmmmmmmmmmmmmmmmmmmmmm
//
// Contract:
// - F16ToF32 / BF16ToF32 are exact for every input, including subnormals, +-0, +-inf and
//   NaN (a NaN keeps its sign and payload bits).
// - F32ToF16 / F32ToBF16 round to nearest, ties to even, as IEEE conversions do in the
//   default rounding mode: fp16 results overflow to +-inf from |x| >= 65520, underflow to
//   subnormals and to +-0 (|x| <= 2^-25 gives +-0); f32 subnormal inputs are handled
//   exactly (not flushed). A NaN gives a quiet NaN of the same sign that keeps the top
//   payload bits.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/base/hd.h"

namespace mnemo::kernels {

MNEMO_HD uint32_t F32Bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

MNEMO_HD float F32FromBits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

MNEMO_HD float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) {  // inf (mant == 0) or NaN: all-ones exponent, payload moved up
    return F32FromBits(sign | 0x7f800000u | (mant << 13));
  }
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24. mant < 2^10 and the scale is a power of two, so
    // the product is exact in f32; the sign is applied by bits so -0 stays -0.
    const float mag = static_cast<float>(mant) * 5.9604644775390625e-8f;  // 2^-24
    return F32FromBits(sign | F32Bits(mag));
  }
  // Normal: rebias the exponent (127 - 15 = 112), widen the mantissa.
  return F32FromBits(sign | ((exp + 112u) << 23) | (mant << 13));
}

MNEMO_HD uint16_t F32ToF16(float f) {
  const uint32_t x = F32Bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {  // inf or NaN
    if (ax == 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u);
    return static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // quiet NaN
  }
  // 65520 = 0x477ff000 is half-way between 65504 (the largest fp16, odd mantissa) and
  // 2^16: ties-to-even and everything above round to inf.
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (ax >= 0x38800000u) {  // |x| >= 2^-14: a normal fp16 (or rounds up to the next binade)
    uint32_t r = (((ax >> 23) - 112u) << 10) | ((ax >> 13) & 0x3ffu);
    const uint32_t rest = ax & 0x1fffu;                        // the 13 bits dropped
    if (rest > 0x1000u || (rest == 0x1000u && (r & 1u))) ++r;  // a carry may bump exp
    return static_cast<uint16_t>(sign | r);
  }
  // |x| < 2^-14: result is a subnormal fp16 (mant * 2^-24) or zero. With the f32 value
  // m * 2^(e - 150) (m including the implicit bit), mant = round(m * 2^(e - 126)), i.e.
  // m shifted right by 126 - e bits. Below 2^-25 (e < 102) everything rounds to zero;
  // that also covers f32 subnormals (e == 0), which have no implicit bit.
  const uint32_t e = ax >> 23;
  if (e < 102u) return static_cast<uint16_t>(sign);
  const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - e;  // 14..24
  uint32_t r = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (r & 1u))) ++r;  // 0x400 is the smallest normal
  return static_cast<uint16_t>(sign | r);
}

MNEMO_HD float BF16ToF32(uint16_t b) { return F32FromBits(static_cast<uint32_t>(b) << 16); }

MNEMO_HD uint16_t F32ToBF16(float f) {
  const uint32_t x = F32Bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) {  // NaN: truncate, forcing the quiet bit
    return static_cast<uint16_t>((x >> 16) | 0x0040u);
  }
  // Adding 0x7fff plus the lowest kept bit rounds to nearest even; a carry out of the
  // mantissa bumps the exponent, which is exactly right (up to inf for the largest values).
  const uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

}  // namespace mnemo::kernels
