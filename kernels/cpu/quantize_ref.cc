// Reference quantizers (f32 -> every weight dtype), used to write test models. The error
// bounds they guarantee are documented in kernels/dequant.h; the derivations are next to
// the code below.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/base/check.h"
#include "kernels/dequant.h"
#include "kernels/dequant_math.h"
#include "kernels/dtype.h"
#include "kernels/half.h"
#include "kernels/quant_blocks.h"

namespace mnemo::kernels {
namespace {

// 1 / d, or 0 when d is 0 or so small that 1 / d overflows (the block then quantizes to 0).
float SafeInverse(float d) {
  if (d == 0.0f) return 0.0f;
  const float id = 1.0f / d;
  return std::isfinite(id) ? id : 0.0f;
}

// The smallest f16 >= v, for finite v >= 0. K-quant scales are rounded up so that 63 (or
// 127) times the scale still covers the largest sub-block: no quant has to be clamped.
uint16_t F16RoundUp(float v) {
  uint16_t h = F32ToF16(v);
  if (F16ToF32(h) < v) ++h;  // positive f16 bit patterns are ordered like their values
  return h;
}

void QuantizeQ8_0(const float* x, BlockQ8_0* y) {
  float amax = 0.0f;
  for (int i = 0; i < kQK; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float id = SafeInverse(d);
  y->d = F32ToF16(d);
  // |x * id| <= 127 (up to rounding), so round() stays in int8 range. The error: d/2 from
  // rounding plus 127 * |d - f16(d)| <= amax/2048 + 127 * 2^-25 from the f16 scale.
  for (int i = 0; i < kQK; ++i) y->qs[i] = static_cast<int8_t>(std::round(x[i] * id));
}

void QuantizeQ4_0(const float* x, BlockQ4_0* y) {
  float amax = 0.0f;
  float max = 0.0f;  // the element of largest magnitude, with its sign
  for (int i = 0; i < kQK; ++i) {
    if (amax < std::fabs(x[i])) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  // d has the opposite sign of `max`, so max maps to q = 0 exactly (value -8 * d); the
  // other end (+8 * d) is one step beyond q = 15 and clamps: the amax / 8 error.
  const float d = max / -8.0f;
  const float id = SafeInverse(d);
  y->d = F32ToF16(d);
  for (int j = 0; j < kQK / 2; ++j) {
    const int q0 = std::min(15, static_cast<int>(x[j] * id + 8.5f));
    const int q1 = std::min(15, static_cast<int>(x[j + 16] * id + 8.5f));
    y->qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

void QuantizeQ4_1(const float* x, BlockQ4_1* y) {
  float min = x[0];
  float max = x[0];
  for (int i = 1; i < kQK; ++i) {
    min = std::min(min, x[i]);
    max = std::max(max, x[i]);
  }
  const float d = (max - min) / 15.0f;
  const float id = SafeInverse(d);
  y->d = F32ToF16(d);
  y->m = F32ToF16(min);
  for (int j = 0; j < kQK / 2; ++j) {
    const int q0 = std::min(15, static_cast<int>((x[j] - min) * id + 0.5f));
    const int q1 = std::min(15, static_cast<int>((x[j + 16] - min) * id + 0.5f));
    y->qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

// Stores the 6-bit scale sc and min m of sub-block j: the inverse of KScaleMin.
void KSetScaleMin(uint8_t* scales, int j, int sc, int m) {
  if (j < 4) {
    scales[j] = static_cast<uint8_t>((scales[j] & 0xc0) | sc);
    scales[j + 4] = static_cast<uint8_t>((scales[j + 4] & 0xc0) | m);
  } else {
    scales[j + 4] = static_cast<uint8_t>((sc & 0x0f) | ((m & 0x0f) << 4));
    scales[j - 4] = static_cast<uint8_t>((scales[j - 4] & 0x3f) | ((sc >> 4) << 6));
    scales[j] = static_cast<uint8_t>((scales[j] & 0x3f) | ((m >> 4) << 6));
  }
}

// The shared part of Q4_K (kMaxQ = 15) and Q5_K (kMaxQ = 31): chooses d, dmin, the eight
// (sc, m) pairs and the quants q[0..256) of one super-block.
//
// Sub-block j (32 elements) is represented as step_j * q - offset_j with
// offset_j = dmin * m_j >= -min(0, min_j) (so the lowest element is reachable) and
// step_j = d * sc_j >= (max_j + offset_j) / kMaxQ (so the highest is too). Rounding
// dmin and d up to f16 and m_j, sc_j up (ceil) guarantees both, with m_j, sc_j <= 63.
// Then |err| <= step_j / 2 <= (range_j + dmin) / (2 kMaxQ) + d / 2, which with
// dmin <= A / 63 and d <= (A + dmin) / (63 kMaxQ) (A as in dequant.h, f16 rounding
// 2^-10 relative) is below A / 28 (kMaxQ = 15) and A / 58 (kMaxQ = 31).
template <int kMaxQ>
void ChooseKQuant(const float* x, uint16_t* d_bits, uint16_t* dmin_bits, uint8_t* scales, int* q) {
  float lo[8], hi[8];
  float max_neg_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    lo[j] = 0.0f;  // the min is clamped to <= 0: the format can only subtract it
    hi[j] = x[32 * j];
    for (int i = 32 * j; i < 32 * j + 32; ++i) {
      lo[j] = std::min(lo[j], x[i]);
      hi[j] = std::max(hi[j], x[i]);
    }
    max_neg_min = std::max(max_neg_min, -lo[j]);
  }
  *dmin_bits = F16RoundUp(max_neg_min / 63.0f);
  const float dmin = F16ToF32(*dmin_bits);

  int m[8];
  float range[8];
  float max_range = 0.0f;
  for (int j = 0; j < 8; ++j) {
    m[j] = dmin > 0.0f ? std::min(63, static_cast<int>(std::ceil(-lo[j] / dmin))) : 0;
    const float offset = dmin * static_cast<float>(m[j]);
    range[j] = std::max(0.0f, hi[j] + offset);
    max_range = std::max(max_range, range[j]);
  }
  *d_bits = F16RoundUp(max_range / (63.0f * kMaxQ));
  const float d = F16ToF32(*d_bits);

  std::memset(scales, 0, kKScaleBytes);
  for (int j = 0; j < 8; ++j) {
    const int sc = d > 0.0f ? std::min(63, static_cast<int>(std::ceil(range[j] / (kMaxQ * d)))) : 0;
    KSetScaleMin(scales, j, sc, m[j]);
    // The same products the dequantizer forms (KQuantValue).
    const float step = d * static_cast<float>(sc);
    const float offset = dmin * static_cast<float>(m[j]);
    for (int i = 32 * j; i < 32 * j + 32; ++i) {
      const float r = step > 0.0f ? std::round((x[i] + offset) / step) : 0.0f;
      q[i] = static_cast<int>(std::clamp(r, 0.0f, static_cast<float>(kMaxQ)));
    }
  }
}

// Packs 4-bit quants in Q4_K's nibble order (layout in quant_blocks.h).
void PackKNibbles(const int* q, uint8_t* qs) {
  for (int g = 0; g < 4; ++g) {
    for (int l = 0; l < 32; ++l) {
      qs[32 * g + l] =
          static_cast<uint8_t>((q[64 * g + l] & 0x0f) | ((q[64 * g + 32 + l] & 0x0f) << 4));
    }
  }
}

void QuantizeQ4_K(const float* x, BlockQ4_K* y) {
  int q[kQKK];
  ChooseKQuant<15>(x, &y->d, &y->dmin, y->scales, q);
  PackKNibbles(q, y->qs);
}

void QuantizeQ5_K(const float* x, BlockQ5_K* y) {
  int q[kQKK];
  ChooseKQuant<31>(x, &y->d, &y->dmin, y->scales, q);
  PackKNibbles(q, y->qs);
  std::memset(y->qh, 0, sizeof(y->qh));
  for (int i = 0; i < kQKK; ++i) {
    y->qh[i % 32] = static_cast<uint8_t>(y->qh[i % 32] | (((q[i] >> 4) & 1) << (i / 32)));
  }
}

// Sub-block j (16 elements) is step_j * q with step_j = d * sc_j >= amax_j / 31, q in
// [-31, 31]: d = f16 rounded up of A / (31 * 127), sc_j = ceil(amax_j / (31 d)) <= 127.
// |err| <= step_j / 2 <= amax_j / 62 + d / 2 < A / 61.
void QuantizeQ6_K(const float* x, BlockQ6_K* y) {
  float amax[16];
  float max_amax = 0.0f;
  for (int j = 0; j < 16; ++j) {
    amax[j] = 0.0f;
    for (int i = 16 * j; i < 16 * j + 16; ++i) amax[j] = std::max(amax[j], std::fabs(x[i]));
    max_amax = std::max(max_amax, amax[j]);
  }
  y->d = F16RoundUp(max_amax / (31.0f * 127.0f));
  const float d = F16ToF32(y->d);
  int u[kQKK];  // unsigned 6-bit quants, q + 32
  for (int j = 0; j < 16; ++j) {
    const int sc = d > 0.0f ? std::min(127, static_cast<int>(std::ceil(amax[j] / (31.0f * d)))) : 0;
    y->scales[j] = static_cast<int8_t>(sc);
    const float step = d * static_cast<float>(sc);
    for (int i = 16 * j; i < 16 * j + 16; ++i) {
      const float r = step > 0.0f ? std::round(x[i] / step) : 0.0f;
      u[i] = static_cast<int>(std::clamp(r, -32.0f, 31.0f)) + 32;
    }
  }
  std::memset(y->qh, 0, sizeof(y->qh));
  for (int i = 0; i < kQKK; ++i) {
    const int h = i / 128;
    const int k = (i % 128) / 32;
    const int l = i % 32;
    uint8_t& low = y->ql[64 * h + 32 * (k & 1) + l];
    if (k < 2) {
      low = static_cast<uint8_t>((low & 0xf0) | (u[i] & 0x0f));
    } else {
      low = static_cast<uint8_t>((low & 0x0f) | ((u[i] & 0x0f) << 4));
    }
    y->qh[32 * h + l] = static_cast<uint8_t>(y->qh[32 * h + l] | ((u[i] >> 4) << (2 * k)));
  }
}

template <typename Block, void (*Quantize)(const float*, Block*)>
void QuantizeBlocks(const float* src, void* dst, int64_t n) {
  auto* blocks = static_cast<Block*>(dst);
  const int64_t num_blocks = n / Block::kElems;
  for (int64_t b = 0; b < num_blocks; ++b) Quantize(src + b * Block::kElems, &blocks[b]);
}

}  // namespace

void QuantizeRowRef(DType t, const float* src, void* dst, int64_t n) {
  MNEMO_CHECK(CanQuantize(t)) << "cannot quantize to dtype " << DTypeName(t);
  MNEMO_CHECK(n >= 0 && n % GetDTypeInfo(t).block_elems == 0)
      << "row of " << n << " elements is not a whole number of " << DTypeName(t) << " blocks";
  if (n == 0) return;
  MNEMO_CHECK(src != nullptr && dst != nullptr) << "null row pointer";
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kF16: {
      auto* out = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) out[i] = F32ToF16(src[i]);
      return;
    }
    case DType::kBF16: {
      auto* out = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) out[i] = F32ToBF16(src[i]);
      return;
    }
    case DType::kQ8_0:
      return QuantizeBlocks<BlockQ8_0, QuantizeQ8_0>(src, dst, n);
    case DType::kQ4_0:
      return QuantizeBlocks<BlockQ4_0, QuantizeQ4_0>(src, dst, n);
    case DType::kQ4_1:
      return QuantizeBlocks<BlockQ4_1, QuantizeQ4_1>(src, dst, n);
    case DType::kQ4_K:
      return QuantizeBlocks<BlockQ4_K, QuantizeQ4_K>(src, dst, n);
    case DType::kQ5_K:
      return QuantizeBlocks<BlockQ5_K, QuantizeQ5_K>(src, dst, n);
    case DType::kQ6_K:
      return QuantizeBlocks<BlockQ6_K, QuantizeQ6_K>(src, dst, n);
    default:
      break;
  }
  MNEMO_CHECK(false) << "unreachable";
}

}  // namespace mnemo::kernels
