// KV block int8 compression (kernels/kv_compress.h): scalar, tile by tile.
#include "kernels/kv_compress.h"

#include <cstdint>
#include <cstring>

#include "kernels/base/check.h"
#include "kernels/half.h"

namespace mnemo::kernels {
namespace {

void CheckLayout(const KvLayout& l) {
  MNEMO_CHECK(l.dtype == DType::kF16 || l.dtype == DType::kBF16) << "KV dtype must be f16 or bf16";
  MNEMO_CHECK(l.n_layers > 0 && l.n_kv_heads > 0 && l.head_dim > 0 && l.block_tokens > 0)
      << "empty KV layout";
}

float ToF32(uint16_t bits, bool f16) { return f16 ? F16ToF32(bits) : BF16ToF32(bits); }

}  // namespace

void CompressKvBlock(const KvLayout& l, const uint8_t* block, uint8_t* out) {
  CheckLayout(l);
  const bool f16 = l.dtype == DType::kF16;
  const int64_t n_tiles = KvCompressedTiles(l);
  const int64_t tile = l.tile_elems();
  const auto* src = reinterpret_cast<const uint16_t*>(block);
  auto* q = reinterpret_cast<int8_t*>(out + n_tiles * 4);
  for (int64_t t = 0; t < n_tiles; ++t) {
    const uint16_t* x = src + t * tile;
    float amax = 0.0f;
    for (int64_t i = 0; i < tile; ++i) {
      const float a = ToF32(x[i], f16);
      const float m = a < 0.0f ? -a : a;
      amax = m > amax ? m : amax;
    }
    const float scale = KvInt8Scale(amax);
    const float inv = KvInt8InvScale(amax);
    std::memcpy(out + t * 4, &scale, 4);
    int8_t* qt = q + t * tile;
    for (int64_t i = 0; i < tile; ++i) qt[i] = KvInt8Quantize(ToF32(x[i], f16), inv);
  }
}

void DecompressKvBlock(const KvLayout& l, const uint8_t* in, uint8_t* block) {
  CheckLayout(l);
  const bool f16 = l.dtype == DType::kF16;
  const int64_t n_tiles = KvCompressedTiles(l);
  const int64_t tile = l.tile_elems();
  const auto* q = reinterpret_cast<const int8_t*>(in + n_tiles * 4);
  auto* dst = reinterpret_cast<uint16_t*>(block);
  for (int64_t t = 0; t < n_tiles; ++t) {
    float scale;
    std::memcpy(&scale, in + t * 4, 4);
    const int8_t* qt = q + t * tile;
    uint16_t* y = dst + t * tile;
    for (int64_t i = 0; i < tile; ++i) {
      const float v = KvInt8Dequantize(qt[i], scale);
      y[i] = f16 ? F32ToF16(v) : F32ToBF16(v);
    }
  }
}

}  // namespace mnemo::kernels
