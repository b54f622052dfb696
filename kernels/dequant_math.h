// Per-element dequantization math, shared by the CPU reference (kernels/cpu/dequant_ref.cc)
// and the CUDA kernels (kernels/cuda/dequant.cu). Header-only, MNEMO_HD, no CUDA headers.
//
// One "format" struct per weight dtype gives:
//   using Block                      the storage unit (a quant block, or one f32/f16/bf16)
//   kElems                           elements per Block
//   Element(const Block&, int i)     element i (0 <= i < kElems) as f32
//   ToFloats(const Block&, float* y) all kElems elements into y[0..kElems)
// ToFloats computes every element with the same operations, in the same order, as Element
// (it only hoists the scale decoding out of the loop), so both give bit-identical results;
// the CUDA kernels use Element (one thread per element), the CPU reference ToFloats.
//
// Numerics: the f16 fields are converted exactly; each element then costs at most a
// multiply and a subtract (or add), never fused: on the device the products and sums use
// the round-to-nearest intrinsics, so nvcc cannot contract them into an FMA and the GPU
// results equal the CPU reference bit for bit. Layouts: kernels/quant_blocks.h.
#pragma once

#include <cstdint>

#include "kernels/base/hd.h"
#include "kernels/dtype.h"
#include "kernels/half.h"
#include "kernels/quant_blocks.h"

namespace mnemo::kernels {

// a * b - c and a * b + c with two roundings (never an FMA), on host and device.
MNEMO_HD float MulSubNoFma(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(__fmul_rn(a, b), c);
#else
  const float p = a * b;
  return p - c;
#endif
}

MNEMO_HD float MulAddNoFma(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(a, b), c);
#else
  const float p = a * b;
  return p + c;
#endif
}

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block from its 12 scale
// bytes (ggml's get_scale_min_k4; byte diagram in quant_blocks.h).
MNEMO_HD void KScaleMin(const uint8_t* scales, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = (scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4);
    *m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
  }
}

// y = (d * sc) * q - (dmin * m): the K-quant value of quant q in a sub-block with 6-bit
// scale sc and min m. The two products are the sub-block's step and offset.
MNEMO_HD float KQuantValue(float d, float dmin, int sc, int m, int q) {
  const float step = d * static_cast<float>(sc);
  const float offset = dmin * static_cast<float>(m);
  return MulSubNoFma(step, static_cast<float>(q), offset);
}

// The 4-bit quant of element i of a Q4_K block (also the low bits of Q5_K).
MNEMO_HD int Q4KNibble(const uint8_t* qs, int i) {
  const uint8_t byte = qs[32 * (i / 64) + (i % 32)];
  return ((i / 32) & 1) ? (byte >> 4) : (byte & 0x0f);
}

// ---- plain types ----

struct F32Format {
  using Block = float;
  static constexpr int kElems = 1;
  MNEMO_HD static float Element(const Block& b, int) { return b; }
  MNEMO_HD static void ToFloats(const Block& b, float* y) { y[0] = b; }
};

struct F16Format {
  using Block = uint16_t;
  static constexpr int kElems = 1;
  MNEMO_HD static float Element(const Block& b, int) { return F16ToF32(b); }
  MNEMO_HD static void ToFloats(const Block& b, float* y) { y[0] = F16ToF32(b); }
};

struct BF16Format {
  using Block = uint16_t;
  static constexpr int kElems = 1;
  MNEMO_HD static float Element(const Block& b, int) { return BF16ToF32(b); }
  MNEMO_HD static void ToFloats(const Block& b, float* y) { y[0] = BF16ToF32(b); }
};

// ---- 32-element formats ----

struct Q8_0Format {
  using Block = BlockQ8_0;
  static constexpr int kElems = kQK;
  MNEMO_HD static float Element(const Block& b, int i) {
    return static_cast<float>(b.qs[i]) * F16ToF32(b.d);
  }
  MNEMO_HD static void ToFloats(const Block& b, float* y) {
    const float d = F16ToF32(b.d);
    for (int i = 0; i < kElems; ++i) y[i] = static_cast<float>(b.qs[i]) * d;
  }
};

struct Q4_0Format {
  using Block = BlockQ4_0;
  static constexpr int kElems = kQK;
  MNEMO_HD static int Quant(const Block& b, int i) {
    return i < 16 ? (b.qs[i] & 0x0f) : (b.qs[i - 16] >> 4);
  }
  MNEMO_HD static float Element(const Block& b, int i) {
    return static_cast<float>(Quant(b, i) - 8) * F16ToF32(b.d);
  }
  MNEMO_HD static void ToFloats(const Block& b, float* y) {
    const float d = F16ToF32(b.d);
    for (int i = 0; i < kElems; ++i) y[i] = static_cast<float>(Quant(b, i) - 8) * d;
  }
};

struct Q4_1Format {
  using Block = BlockQ4_1;
  static constexpr int kElems = kQK;
  MNEMO_HD static int Quant(const Block& b, int i) {
    return i < 16 ? (b.qs[i] & 0x0f) : (b.qs[i - 16] >> 4);
  }
  MNEMO_HD static float Element(const Block& b, int i) {
    return MulAddNoFma(static_cast<float>(Quant(b, i)), F16ToF32(b.d), F16ToF32(b.m));
  }
  MNEMO_HD static void ToFloats(const Block& b, float* y) {
    const float d = F16ToF32(b.d);
    const float m = F16ToF32(b.m);
    for (int i = 0; i < kElems; ++i) y[i] = MulAddNoFma(static_cast<float>(Quant(b, i)), d, m);
  }
};

// ---- 256-element K-quants ----

struct Q4_KFormat {
  using Block = BlockQ4_K;
  static constexpr int kElems = kQKK;
  MNEMO_HD static int Quant(const Block& b, int i) { return Q4KNibble(b.qs, i); }
  MNEMO_HD static float Element(const Block& b, int i) {
    int sc, m;
    KScaleMin(b.scales, i / 32, &sc, &m);
    return KQuantValue(F16ToF32(b.d), F16ToF32(b.dmin), sc, m, Quant(b, i));
  }
  MNEMO_HD static void ToFloats(const Block& b, float* y) {
    const float d = F16ToF32(b.d);
    const float dmin = F16ToF32(b.dmin);
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      KScaleMin(b.scales, j, &sc, &m);
      for (int i = 32 * j; i < 32 * j + 32; ++i) y[i] = KQuantValue(d, dmin, sc, m, Quant(b, i));
    }
  }
};

struct Q5_KFormat {
  using Block = BlockQ5_K;
  static constexpr int kElems = kQKK;
  MNEMO_HD static int Quant(const Block& b, int i) {
    const int high = (b.qh[i % 32] >> (i / 32)) & 1;
    return Q4KNibble(b.qs, i) | (high << 4);
  }
  MNEMO_HD static float Element(const Block& b, int i) {
    int sc, m;
    KScaleMin(b.scales, i / 32, &sc, &m);
    return KQuantValue(F16ToF32(b.d), F16ToF32(b.dmin), sc, m, Quant(b, i));
  }
  MNEMO_HD static void ToFloats(const Block& b, float* y) {
    const float d = F16ToF32(b.d);
    const float dmin = F16ToF32(b.dmin);
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      KScaleMin(b.scales, j, &sc, &m);
      for (int i = 32 * j; i < 32 * j + 32; ++i) y[i] = KQuantValue(d, dmin, sc, m, Quant(b, i));
    }
  }
};

struct Q6_KFormat {
  using Block = BlockQ6_K;
  static constexpr int kElems = kQKK;
  // The unsigned 6-bit quant (0..63) of element i; the value uses q - 32.
  MNEMO_HD static int Quant(const Block& b, int i) {
    const int h = i / 128;
    const int k = (i % 128) / 32;
    const int l = i % 32;
    const uint8_t low_byte = b.ql[64 * h + 32 * (k & 1) + l];
    const int low = (k < 2) ? (low_byte & 0x0f) : (low_byte >> 4);
    const int high = (b.qh[32 * h + l] >> (2 * k)) & 3;
    return low | (high << 4);
  }
  // (d * scale) * (q - 32), the product order of ggml's reference.
  MNEMO_HD static float Value(float d, int scale, int q) {
    return d * static_cast<float>(scale) * static_cast<float>(q - 32);
  }
  MNEMO_HD static float Element(const Block& b, int i) {
    return Value(F16ToF32(b.d), b.scales[i / 16], Quant(b, i));
  }
  MNEMO_HD static void ToFloats(const Block& b, float* y) {
    const float d = F16ToF32(b.d);
    for (int i = 0; i < kElems; ++i) y[i] = Value(d, b.scales[i / 16], Quant(b, i));
  }
};

// Calls fn(Format{}) with the format above of weight dtype t and returns its result, or
// returns `otherwise` when t is not a weight dtype: the one dispatch from a run-time dtype
// to the compile-time formats, for the CPU reference and every CUDA launcher.
template <class R, class Fn>
R VisitWeightFormat(DType t, R otherwise, Fn&& fn) {
  switch (t) {
    case DType::kF32:
      return fn(F32Format{});
    case DType::kF16:
      return fn(F16Format{});
    case DType::kBF16:
      return fn(BF16Format{});
    case DType::kQ8_0:
      return fn(Q8_0Format{});
    case DType::kQ4_0:
      return fn(Q4_0Format{});
    case DType::kQ4_1:
      return fn(Q4_1Format{});
    case DType::kQ4_K:
      return fn(Q4_KFormat{});
    case DType::kQ5_K:
      return fn(Q5_KFormat{});
    case DType::kQ6_K:
      return fn(Q6_KFormat{});
    default:
      return otherwise;
  }
}

}  // namespace mnemo::kernels
