// Block layouts of ggml's quantized weight formats, byte-exact with GGUF tensor data.
//
// A quantized row of n elements is n / kElems consecutive blocks; element e of the row is
// element (e % kElems) of block (e / kElems). Every f16 field is stored as its raw IEEE
// binary16 bits (kernels/half.h converts), little-endian like the rest of a GGUF file. All
// block sizes are even and the only multi-byte fields are uint16_t, so a block needs 2-byte
// alignment (GGUF tensor data is 32-byte aligned by default).
//
// The per-element decoding of each layout is in kernels/dequant_math.h; the diagrams below
// say which bits of which byte hold element i (0-based within the block).
#pragma once

#include <cstddef>
#include <cstdint>

namespace mnemo::kernels {

// Elements per block of the "legacy" formats (Q8_0, Q4_0, Q4_1) and per super-block of
// the K-quants (Q4_K, Q5_K, Q6_K).
inline constexpr int kQK = 32;
inline constexpr int kQKK = 256;

// Q8_0: 32 elements, y[i] = qs[i] * d.
//   bytes 0-1  d (f16)
//   bytes 2-33 qs[0..31], int8: element i = qs[i]
struct BlockQ8_0 {
  static constexpr int kElems = kQK;
  uint16_t d;
  int8_t qs[kQK];
};
static_assert(sizeof(BlockQ8_0) == 34 && alignof(BlockQ8_0) == 2);

// Q4_0: 32 elements, y[i] = (q[i] - 8) * d, q unsigned 4-bit.
//   bytes 0-1  d (f16)
//   bytes 2-17 qs[0..15]:   qs[j] = | q[j+16] (bits 7..4) | q[j] (bits 3..0) |
//   element j < 16: low nibble of qs[j]; element j + 16: high nibble of qs[j].
struct BlockQ4_0 {
  static constexpr int kElems = kQK;
  uint16_t d;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_0) == 18 && alignof(BlockQ4_0) == 2);

// Q4_1: 32 elements, y[i] = q[i] * d + m, q unsigned 4-bit; nibbles as in Q4_0.
//   bytes 0-1  d (f16), bytes 2-3 m (f16)
//   bytes 4-19 qs[0..15]:   qs[j] = | q[j+16] (bits 7..4) | q[j] (bits 3..0) |
struct BlockQ4_1 {
  static constexpr int kElems = kQK;
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_1) == 20 && alignof(BlockQ4_1) == 2);

// The 12 scale bytes of Q4_K and Q5_K: eight 6-bit scales sc[0..7] and eight 6-bit mins
// m[0..7], one pair per 32-element sub-block (sub-block j = elements 32j .. 32j+31).
//
//   byte  0..3  (s[j],   j < 4):  | sc[j+4] bits 5..4 (7..6) | sc[j] (5..0) |
//   byte  4..7  (s[j+4], j < 4):  | m[j+4]  bits 5..4 (7..6) | m[j]  (5..0) |
//   byte  8..11 (s[j+8], j < 4):  | m[j+4]  bits 3..0 (7..4) | sc[j+4] bits 3..0 (3..0) |
inline constexpr int kKScaleBytes = 12;

// Q4_K: 256 elements in 8 sub-blocks of 32, y[i] = d * sc[j] * q[i] - dmin * m[j] with
// j = i / 32, q unsigned 4-bit. Sub-blocks 2g and 2g+1 (g = 0..3, a 64-element group)
// share the 32 bytes qs[32g .. 32g+31]:
//   element 64g + l      (l < 32): low nibble  (bits 3..0) of qs[32g + l]
//   element 64g + 32 + l (l < 32): high nibble (bits 7..4) of qs[32g + l]
//   bytes 0-1 d (f16), 2-3 dmin (f16), 4-15 scales[12], 16-143 qs[128]
struct BlockQ4_K {
  static constexpr int kElems = kQKK;
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(BlockQ4_K) == 144 && alignof(BlockQ4_K) == 2);

// Q5_K: as Q4_K with a fifth bit per element, q = low4 + 16 * high1 (0..31):
//   low 4 bits: exactly as Q4_K's nibbles in qs[128]
//   high bit of element i: bit (i / 32) of qh[i % 32]   (bit j belongs to sub-block j)
//   bytes 0-1 d, 2-3 dmin, 4-15 scales[12], 16-47 qh[32], 48-175 qs[128]
struct BlockQ5_K {
  static constexpr int kElems = kQKK;
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(BlockQ5_K) == 176 && alignof(BlockQ5_K) == 2);

// Q6_K: 256 elements in 16 sub-blocks of 16, y[i] = d * scales[i / 16] * (q[i] - 32), q
// unsigned 6-bit, scales int8. Two halves h = 0, 1 of 128 elements; in half h, element
// i = 128h + 32k + l (k = 0..3, l = 0..31) has
//   low 4 bits:  k = 0: ql[64h + l] bits 3..0     k = 1: ql[64h + 32 + l] bits 3..0
//                k = 2: ql[64h + l] bits 7..4     k = 3: ql[64h + 32 + l] bits 7..4
//   high 2 bits: bits (2k+1 .. 2k) of qh[32h + l]
//   bytes 0-127 ql, 128-191 qh, 192-207 scales[16] (int8), 208-209 d (f16)
struct BlockQ6_K {
  static constexpr int kElems = kQKK;
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210 && alignof(BlockQ6_K) == 2);
static_assert(offsetof(BlockQ6_K, d) == 208);
static_assert(offsetof(BlockQ5_K, qs) == 48);

}  // namespace mnemo::kernels
