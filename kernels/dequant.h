// Weight rows to f32 and back: the scalar references for every weight dtype.
//
// A "row" of n elements of type t is DTypeBytes(t, n) bytes: n values for the plain types,
// n / block_elems blocks (kernels/quant_blocks.h) for the quantized ones. The per-element
// math is shared with the CUDA version (kernels/cuda/dequant.h) through
// kernels/dequant_math.h, so both produce bit-identical floats.
//
// Preconditions (checked with MNEMO_CHECK; these are programming errors, validate external
// input such as GGUF shapes before calling): t is supported (CanDequantize/CanQuantize),
// n >= 0 and a multiple of t's block size, src and dst do not overlap, and the quantized
// buffer is aligned to 2 bytes (4 for f32). All functions are thread-safe (no shared state).
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace mnemo::kernels {

// True for the weight dtypes: f32, f16, bf16, q8_0, q4_0, q4_1, q4_k, q5_k, q6_k.
bool CanDequantize(DType t);
bool CanQuantize(DType t);

// dst[0..n) = the n elements of type t at src. Scalar, single-threaded, obviously correct:
// the reference every faster version is tested against.
void DequantizeRowRef(DType t, const void* src, float* dst, int64_t n);

// `rows` consecutive rows of `cols` elements each (row r at src + r * DTypeBytes(t, cols),
// dst + r * cols), dequantized with the reference in parallel over rows (oneTBB).
void DequantizeRows(DType t, const void* src, float* dst, int64_t rows, int64_t cols);

// Writes the n floats at src as DTypeBytes(t, n) bytes of type t at dst. Inputs must be
// finite (and within the fp16 range for f16). Simple, deterministic schemes: the round
// trip DequantizeRowRef(QuantizeRowRef(x)) stays within these bounds, per element:
//
//   f32    exact.
//   f16    round to nearest even: |err| <= |x| * 2^-11, or 2^-25 below 2^-14.
//   bf16   round to nearest even: |err| <= |x| * 2^-8.
//   q8_0   ggml's reference: d = amax / 127 (amax = max |x| of the 32-block), q =
//          round(x / d): |err| <= amax / 225 + 4e-6.
//   q4_0   ggml's reference: d = -max / 8 where max is the element of largest magnitude,
//          q = min(15, trunc(x / d + 8.5)): |err| <= amax / 16 except at the far end of the
//          opposite sign, which clamps to 7 * d: overall |err| <= amax / 7.9 + 3e-7.
//   q4_1   ggml's reference: d = (max - min) / 15, m = min:
//          |err| <= (max - min) / 29 + |min| / 2048 + 1e-6.
//   q4_k, q5_k  per 256-block let A = max(0, max(x)) - min(0, min(x)). Each 32-sub-block's min
//          (clamped to <= 0) and range are covered by 6-bit multiples of dmin and d (both
//          rounded up to f16): |err| <= A / 28 (q4_k), A / 58 (q5_k), + 1e-7.
//   q6_k   per 256-block let A = max |x|. Each 16-sub-block's scale is an int8 multiple of
//          d (rounded up), quants in [-31, 31]: |err| <= A / 61 + 1e-7.
//
// The absolute terms cover f16 scales that fall into the f16 subnormal range (tiny rows).
// q8_0, q4_0 and q4_1 follow the schemes of ggml's quantize_row_*_ref; the K-quant
// quantizers are simpler (and less accurate) than ggml's search for the best scales, but
// their output is valid for any reader of the format.
void QuantizeRowRef(DType t, const float* src, void* dst, int64_t n);

}  // namespace mnemo::kernels
