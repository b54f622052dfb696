// The dense elementwise and row ops of kernels/ops.h on a CUDA device. Plain C++ header: no
// CUDA or Abseil includes, so host code and nvcc both compile it cheaply.
//
// Each launcher takes the CPU op's Params with DEVICE pointers (every pointer in the struct,
// ids/positions/theta included) plus `stream` (a cudaStream_t; nullptr for the legacy default
// stream), enqueues the work and returns 0 (cudaSuccess) or a cudaError_t value:
// cudaErrorInvalidValue (1) when the arguments break the contract (the same checks as
// kernels/cpu/ops_check.h, plus 4-byte alignment of every f32/i32 pointer), before any CUDA
// call; otherwise the launch error. Empty shapes enqueue nothing. Errors of the kernel's
// execution surface on the stream's next synchronization. Buffers must stay valid until the
// work completes. Thread-safe.
//
// Numerics: per-element math from kernels/ops_math.h (the same functions as the fast CPU
// twins); reductions in f32 in a fixed order that depends only on cols, so a row's result
// is the same whatever the number of rows (batch invariance, as on the CPU). Tolerances
// against the `<Op>Ref` references (tests/gpu/ops_gpu_test.cc):
//   Embedding, Add: bit-identical.
//   RmsNorm:  (cols + 4) * 2^-23 relative.      SwiGlu: 2e-6 relative.
//   Softmax:  (2e-6 + cols * 2^-23) relative.   Rope: 4 * 2^-23 * mscale * (|a| + |b|) per pair.
#pragma once

#include <cstdint>

#include "kernels/ops.h"

namespace mnemo::kernels {

// out[i][:] = dequantized row ids[i] of table, any weight dtype (kernels/dequant_math.h:
// bit-identical to EmbeddingRef). The ids live on the device and cannot be checked before
// the launch: a row whose id is outside [0, table.rows) is filled with quiet NaNs instead of
// reading out of bounds. Also needs table.data aligned to its dtype's block alignment.
int CudaEmbedding(const EmbeddingParams& p, void* stream);

// One block per row; y may equal x (with ldx == ldy).
int CudaRmsNorm(const RmsNormParams& p, void* stream);

// Angles from positions (device, [rows]) and theta (device, [rotary_dims / 2]), formed and
// turned into cos/sin in double as the fast CPU twin does; normal and neox pairs;
// rotary_dims < head_dim leaves the rest of each head untouched.
int CudaRope(const RopeParams& p, void* stream);

// out may alias gate or up (same element, same thread).
int CudaSwiGlu(const SwiGluParams& p, void* stream);

// In place; -inf entries give 0, a row of only -inf all zeros (the CPU contract).
int CudaSoftmax(const SoftmaxParams& p, void* stream);

// ---- residual add (no CPU op: the CPU forward pass adds in its own loops) ---------------
// y[r][c] += x[r][c] for r < rows, c < cols, one f32 add per element (bit-identical to the
// host's `y += x`). x must not overlap y, except x == y with ldx == ldy (y doubles).
struct AddParams {
  const float* x = nullptr;  // [rows, ldx]
  int64_t ldx = 0;
  float* y = nullptr;  // [rows, ldy]
  int64_t ldy = 0;
  int64_t rows = 0;
  int64_t cols = 0;
};
int CudaAdd(const AddParams& p, void* stream);

}  // namespace mnemo::kernels
