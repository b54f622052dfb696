// Test helpers for the dtype conversions: random rows of every weight dtype.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/quant_blocks.h"

namespace mnemo::testing {

// The weight dtypes (those DequantizeRowRef and CudaDequantize accept).
inline const std::vector<kernels::DType>& WeightDTypes() {
  using kernels::DType;
  static const auto* types =
      new std::vector<DType>{DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ8_0, DType::kQ4_0,
                             DType::kQ4_1, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};
  return *types;
}

// A random finite f16 of either sign with magnitude in [2^-12, 2^4): a plausible scale.
inline uint16_t RandomScaleF16(std::mt19937& rng) {
  const uint32_t exp = 3 + rng() % 16;  // biased exponent 3..18: 2^-12 .. 2^3
  const uint32_t mant = rng() % 1024;
  const uint32_t sign = (rng() & 1) << 15;
  return static_cast<uint16_t>(sign | (exp << 10) | mant);
}

// The bytes of a row of n elements of type t: uniformly random bytes, except that the f16
// scale fields of quant blocks get random finite scales (RandomScaleF16). Plain f32, f16
// and bf16 rows are random bit patterns, NaN and inf included.
inline std::vector<uint8_t> RandomRowBytes(kernels::DType t, int64_t n, std::mt19937& rng) {
  using kernels::DType;
  const uint64_t size = *kernels::DTypeBytes(t, n);
  std::vector<uint8_t> bytes(size);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  const kernels::DTypeInfo& info = kernels::GetDTypeInfo(t);
  const int64_t blocks = n / info.block_elems;
  auto set_scale = [&](int64_t block, size_t offset) {
    const uint16_t v = RandomScaleF16(rng);
    std::memcpy(bytes.data() + block * info.block_bytes + offset, &v, sizeof(v));
  };
  for (int64_t b = 0; b < blocks; ++b) {
    switch (t) {
      case DType::kQ8_0:
        set_scale(b, offsetof(kernels::BlockQ8_0, d));
        break;
      case DType::kQ4_0:
        set_scale(b, offsetof(kernels::BlockQ4_0, d));
        break;
      case DType::kQ4_1:
        set_scale(b, offsetof(kernels::BlockQ4_1, d));
        set_scale(b, offsetof(kernels::BlockQ4_1, m));
        break;
      case DType::kQ4_K:
        set_scale(b, offsetof(kernels::BlockQ4_K, d));
        set_scale(b, offsetof(kernels::BlockQ4_K, dmin));
        break;
      case DType::kQ5_K:
        set_scale(b, offsetof(kernels::BlockQ5_K, d));
        set_scale(b, offsetof(kernels::BlockQ5_K, dmin));
        break;
      case DType::kQ6_K:
        set_scale(b, offsetof(kernels::BlockQ6_K, d));
        break;
      default:
        break;
    }
  }
  return bytes;
}

}  // namespace mnemo::testing
