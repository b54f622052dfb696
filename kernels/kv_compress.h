// Cold-tier KV compression: one KV block (kernels/attention.h, f16 or bf16) to int8 with one
// f32 scale per (layer, k|v, kv_head) tile, and back (DESIGN.md 3 and 4).
//
// Compressed block, for a KvLayout with n_tiles = n_layers * 2 * n_kv_heads tiles of
// tile_elems = block_tokens * head_dim elements:
//
//   offset 0                      n_tiles * 4                       CompressedBlockBytes
//   | scale[0] .. scale[n_tiles-1] | q[tile 0][tile_elems] .. q[tile n_tiles-1] |
//     f32, host byte order          int8, each tile [token][head_dim] as in the block
//
// Tile t = (layer * 2 + is_v) * n_kv_heads + kv_head, the order of the uncompressed block,
// so element e of the block (ElemOffset order) is q[e] after the scales. All targets of
// mnemo are little-endian; the bytes depend only on the input block (deterministic).
//
// Math per tile (the per-element functions below are MNEMO_HD so the CUDA backend shares
// them; DESIGN.md 6):
//   amax  = max |x| over the tile (x exact in f32: converted from f16/bf16)
//   scale = amax / 127 (f32 division, correctly rounded); 0 for an all-zero tile
//   q     = clamp(round_to_nearest_even(x * (127 / amax)), -127, 127) (q = 0 if amax = 0)
//   x'    = q * scale (one f32 rounding), then rounded to the layout's dtype (RNE)
//
// Error bound, per element: |x - x'| <= scale * (0.5 + 2^-16) + the f16/bf16 rounding of
// x' (half an ulp of |x'| in the output dtype; f16 subnormals: 2^-25). The 2^-16 covers
// 127 / amax not being exactly 1 / scale and the f32 product; -0 comes back as +0.
// Inputs must be finite (the forward pass writes finite KV); a NaN or inf makes its tile's
// values unspecified but never undefined behaviour.
//
// Thread-safety: the functions are pure; distinct blocks may be processed concurrently.
#pragma once

#include <cstdint>

#include "kernels/attention.h"
#include "kernels/base/hd.h"

namespace mnemo::kernels {

// The number of (layer, k|v, kv_head) tiles of a block, i.e. of scales.
MNEMO_HD int64_t KvCompressedTiles(const KvLayout& l) {
  return int64_t{l.n_layers} * 2 * l.n_kv_heads;
}

// Bytes of one compressed block: the scales, then one int8 per element.
MNEMO_HD int64_t CompressedBlockBytes(const KvLayout& l) {
  return KvCompressedTiles(l) * 4 + l.block_elems();
}

// The dequantization scale of a tile whose largest magnitude is amax (>= 0).
MNEMO_HD float KvInt8Scale(float amax) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(amax, 127.0f);
#else
  return amax / 127.0f;
#endif
}

// The quantization multiplier 127 / amax (0 for an all-zero tile, so every q is 0).
MNEMO_HD float KvInt8InvScale(float amax) {
  if (!(amax > 0.0f)) return 0.0f;
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(127.0f, amax);
#else
  return 127.0f / amax;
#endif
}

// x * inv_scale rounded to the nearest integer (ties to even) and clamped to [-127, 127].
// The clamps are written so that a NaN product becomes -127 (never a NaN-to-int cast).
MNEMO_HD int8_t KvInt8Quantize(float x, float inv_scale) {
#if defined(__CUDA_ARCH__)
  float y = __fmul_rn(x, inv_scale);
#else
  float y = x * inv_scale;
#endif
  y = y >= -127.0f ? y : -127.0f;
  y = y <= 127.0f ? y : 127.0f;
#if defined(__CUDA_ARCH__)
  return static_cast<int8_t>(__float2int_rn(y));
#else
  // Adding and subtracting 1.5 * 2^23 rounds |y| < 2^22 to an integer in the default
  // (nearest-even) rounding mode: the sum has no fraction bits left.
  const float r = (y + 12582912.0f) - 12582912.0f;
  return static_cast<int8_t>(r);
#endif
}

// The f32 value of quant q at scale `scale` (one rounding, no FMA).
MNEMO_HD float KvInt8Dequantize(int8_t q, float scale) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(static_cast<float>(q), scale);
#else
  return static_cast<float>(q) * scale;
#endif
}

// Compresses one block (layout.block_bytes() bytes, 2-byte aligned, f16 or bf16 per
// layout.dtype) into `out` (CompressedBlockBytes(layout) bytes, no alignment needed).
// Checks the dtype. Scalar code (no SIMD twin yet).
void CompressKvBlock(const KvLayout& layout, const uint8_t* block, uint8_t* out);

// The inverse: writes every element of `block` (layout.block_bytes() bytes, 2-byte aligned)
// in layout.dtype from the compressed bytes `in`. `in` and `block` must not overlap.
void DecompressKvBlock(const KvLayout& layout, const uint8_t* in, uint8_t* block);

}  // namespace mnemo::kernels
