// Internals of the fast CPU MatMul (kernels/cpu/matmul*.cc): the quantized activation
// layout, the job description handed to the per-ISA kernels, and their entry points.
//
// Quantized weights are multiplied with 8-bit activations: each row of x is cut into
// 32-element blocks, block b gets d_b = amax_b / 127 and q = round-half-even(x * (1 / d_b)),
// so every block product is an exact integer sum and only the per-block scaling is in f32.
// Two consecutive blocks form a 64-element ActGroup laid out so that the SIMD kernels load
// each field as one vector (AVX-512: the whole group; AVX2: one half per block):
//
//   qs    [64]  int8   the quants of block 2g (0..31) and 2g+1 (32..63)
//   nsum  [16]  int32  minus the sum of qs[16j .. 16j+15] in lane 4j, 0 elsewhere: the
//                      dot-product lanes 4j..4j+3 cover those 16 bytes, so a kernel whose
//                      weights are stored as q + bias (Q8_0 as q + 128, Q4_0 as q + 8,
//                      Q6_K as q + 32) starts lane 4j at bias * nsum[4j] and the sum of
//                      lanes is sum (q_w - bias) * q_x exactly.
//   d     [16]  f32    d of block 2g in lanes 0..7, of block 2g+1 in lanes 8..15
//   dsum  [16]  f32    d * sum(qs of the block) in lanes 0 and 8, 0 elsewhere: the factor
//                      of a weight block's offset (Q4_1 m, K-quant -dmin * m)
//
// A row with an odd number of blocks has its last group's second half all zero, which
// contributes exactly nothing. Fast kernels parallelise over output columns only; each
// (m, n) output is one function of row m of x and row n of w, whatever the tile it falls
// in (the tiled kernels run the same instruction sequence on every accumulator).
#pragma once

#include <cstdint>

#include "kernels/dequant_math.h"
#include "kernels/dtype.h"
#include "kernels/half.h"

namespace mnemo::kernels::internal {

struct alignas(64) ActGroup {
  int8_t qs[64];
  int32_t nsum[16];
  float d[16];
  float dsum[16];
};
static_assert(sizeof(ActGroup) == 256);

inline constexpr int kActGroupElems = 64;

// Groups per quantized activation row of k elements (k a multiple of 32).
inline int64_t ActGroupsPerRow(int64_t k) { return (k + kActGroupElems - 1) / kActGroupElems; }

// Quantizes one row of k floats (k a multiple of 32) into ActGroupsPerRow(k) groups. The
// result is the same bits on every code path.
void QuantizeActRow(const float* x, int64_t k, ActGroup* out);

struct MatMulJob {
  DType dtype = DType::kF32;
  const uint8_t* w = nullptr;  // row n at w + n * w_row_bytes
  int64_t w_row_bytes = 0;
  int64_t k = 0;
  int64_t rows = 0;
  const float* x = nullptr;  // f32/f16/bf16 weights: the activations as given
  int64_t ldx = 0;
  const ActGroup* xq = nullptr;  // quantized weights: row m at xq + m * xq_groups
  int64_t xq_groups = 0;
  const float* bias = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;
};

// The per-sub-block step d * sc[j] and offset -(dmin * m[j]) of a Q4_K / Q5_K super-block:
// weight i of sub-block j is step[j] * q + offset[j].
inline void KSubBlockScales(const uint8_t* scales, uint16_t d16, uint16_t dmin16, float* step,
                            float* offset) {
  const float d = F16ToF32(d16);
  const float dmin = F16ToF32(dmin16);
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    KScaleMin(scales, j, &sc, &m);
    step[j] = d * static_cast<float>(sc);
    offset[j] = -(dmin * static_cast<float>(m));
  }
}

// Computes y[m][n] for every m < job.rows and n in [n_begin, n_end). One per path; the
// AVX2 and AVX-512 ones exist only on x86-64 (and must be called only when ActiveCpuIsa
// allows them).
void MatMulColumnsScalar(const MatMulJob& job, int64_t n_begin, int64_t n_end);
void MatMulColumnsAvx2(const MatMulJob& job, int64_t n_begin, int64_t n_end);
void MatMulColumnsAvx512(const MatMulJob& job, int64_t n_begin, int64_t n_end);

}  // namespace mnemo::kernels::internal
