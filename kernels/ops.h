// The dense ops of the forward pass: contracts, scalar references and fast CPU twins.
//
// Every op takes a Params view (non-owning pointers + sizes, usable from host and device
// code) and has two entry points: `<Op>Ref` (scalar, single-threaded, obviously correct;
// what the tests compare against) and `<Op>` (the fast CPU version: SIMD with run-time
// dispatch among scalar / AVX2 / AVX-512 paths, oneTBB threads). The CUDA backend adds a
// third twin with the same Params.
//
// Layouts: activations are row-major f32 matrices [rows, cols] with a row stride `ld*` in
// elements (>= cols). Weight matrices are row-major [out, in] ("n rows of k elements") in
// any weight dtype; row r starts at data + r * DTypeBytes(dtype, in).
//
// Determinism contract (batch invariance): every output element is computed by the same
// sequence of floating-point operations whatever the number of rows in the call, the
// thread count, or the other rows' contents. Fast versions parallelise only over
// independent outputs, never split one reduction across threads, and use a fixed
// reduction order per output. So a sequence's logits do not depend on what else is in
// the batch, and greedy decoding gives the same ids at any thread count.
//
// Tolerances (fast vs reference, stated per op in the tests): elementwise ops match to
// 1e-6 relative; reductions of length k to ~k * 2^-23 relative of the sum of |terms|.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/dtype.h"

namespace mnemo::kernels {

// A weight matrix [rows = out features, cols = in features] of any weight dtype.
struct WeightView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;  // a multiple of the dtype's block size
};

// ---- embedding lookup ------------------------------------------------------------------
// out[i][:] = dequantized row ids[i] of table (table.cols elements). ids must be in
// [0, table.rows) (checked).
struct EmbeddingParams {
  WeightView table;  // [vocab, d_model]
  const int32_t* ids = nullptr;
  int64_t n = 0;         // number of ids
  float* out = nullptr;  // [n, ld_out]
  int64_t ld_out = 0;
};
void EmbeddingRef(const EmbeddingParams& p);
void Embedding(const EmbeddingParams& p);

// ---- RMSNorm ---------------------------------------------------------------------------
// y[r][c] = x[r][c] / sqrt(mean_c(x[r]^2) + eps) * weight[c]. y may equal x (in place).
struct RmsNormParams {
  const float* x = nullptr;  // [rows, ldx]
  int64_t ldx = 0;
  const float* weight = nullptr;  // [cols]
  float* y = nullptr;             // [rows, ldy]
  int64_t ldy = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  float eps = 1e-5f;
};
void RmsNormRef(const RmsNormParams& p);
void RmsNorm(const RmsNormParams& p);

// ---- RoPE ------------------------------------------------------------------------------
enum class RopeMode : uint8_t {
  kNormal,  // pairs (x[2i], x[2i+1])
  kNeox,    // pairs (x[i], x[i + rotary_dims/2])
};

enum class RopeScaling : uint8_t { kNone, kLinear, kLlama3, kYarn };

struct RopeFreqConfig {
  float base = 10000.0f;
  int rotary_dims = 0;  // even, <= head_dim
  RopeScaling scaling = RopeScaling::kNone;
  float factor = 1.0f;                  // linear / llama3 / yarn
  int original_context = 0;             // llama3 / yarn
  float low_freq_factor = 1.0f;         // llama3
  float high_freq_factor = 4.0f;        // llama3
  float beta_fast = 32.0f;              // yarn
  float beta_slow = 1.0f;               // yarn
  float attn_factor = 1.0f;             // yarn: multiplies mscale
  const float* freq_factors = nullptr;  // optional per-pair divisors (GGUF rope_freqs.weight)
};

// Per-pair angular frequencies theta_i (angle = position * theta_i), i < rotary_dims / 2,
// with the scaling applied, and the attention magnitude scale (yarn's mscale; 1 otherwise)
// that multiplies cos and sin. theta_i = base^(-2i / rotary_dims) / freq_factors[i] (when
// given), then: linear divides by factor; llama3 applies Meta's wavelength smoothing against
// original_context; yarn ramps between theta / factor and theta over the dimensions between
// beta_fast and beta_slow turns, with mscale = (0.1 ln(factor) + 1) * attn_factor. Computed
// in double, rounded once. Formulas: kernels/cpu/ops_rope_table.cc.
struct RopeTable {
  std::vector<float> theta;
  float mscale = 1.0f;
};
RopeTable ComputeRopeTable(const RopeFreqConfig& c);

// Rotates, in place, the first rotary_dims of every head of every row:
// x[r][h * head_dim + ...] for h < n_heads, at position positions[r].
struct RopeParams {
  float* x = nullptr;  // [rows, ld]
  int64_t ld = 0;
  int64_t rows = 0;
  int n_heads = 0;
  int head_dim = 0;
  int rotary_dims = 0;
  RopeMode mode = RopeMode::kNormal;
  const int32_t* positions = nullptr;  // [rows]
  const float* theta = nullptr;        // [rotary_dims / 2], from ComputeRopeTable
  float mscale = 1.0f;
};
void RopeRef(const RopeParams& p);
void Rope(const RopeParams& p);

// ---- matrix products -------------------------------------------------------------------
// y[m][n] = sum_k x[m][k] * w[n][k] (+ bias[n] when bias != nullptr), for m < rows,
// n < w.rows, k < w.cols. Quantized weights are dequantized on the fly. y must not alias x.
// The fast version multiplies quantized weights with x quantized to int16 per 32-element
// block (d = amax / 32767, q = round-half-even(x / d)): exact integer block sums, f32 across
// blocks. Its tolerance against the reference (derived in tests/kernels/matmul_test.cc):
//   |fast - ref| <= sum_k |w_k| e_k + k 2^-23 sum_k |w_k| (|x_k| + e_k) + 2^-23 (|ref| + |bias|)
// with e_k = d (1/2 + 2^-7) of x_k's block for quantized weights, 0 for f32/f16/bf16 weights.
// Batch invariant: a row's outputs are bit-identical whatever the other rows and threads.
struct MatMulParams {
  WeightView w;              // [n_out, k]
  const float* x = nullptr;  // [rows, ldx]
  int64_t ldx = 0;
  const float* bias = nullptr;  // [n_out] or nullptr
  float* y = nullptr;           // [rows, ldy]
  int64_t ldy = 0;
  int64_t rows = 0;
};
void MatMulRef(const MatMulParams& p);
void MatMul(const MatMulParams& p);

// ---- SwiGLU ----------------------------------------------------------------------------
// out[r][c] = silu(gate[r][c]) * up[r][c], silu(g) = g / (1 + exp(-g)). out may alias gate.
struct SwiGluParams {
  const float* gate = nullptr;
  int64_t ld_gate = 0;
  const float* up = nullptr;
  int64_t ld_up = 0;
  float* out = nullptr;
  int64_t ld_out = 0;
  int64_t rows = 0;
  int64_t cols = 0;
};
void SwiGluRef(const SwiGluParams& p);
void SwiGlu(const SwiGluParams& p);

// ---- softmax ---------------------------------------------------------------------------
// In place over each row's first `cols` elements (max-subtracted). -inf entries get 0; a
// row of only -inf becomes all zeros. Inputs are otherwise finite.
struct SoftmaxParams {
  float* x = nullptr;
  int64_t ld = 0;
  int64_t rows = 0;
  int64_t cols = 0;
};
void SoftmaxRef(const SoftmaxParams& p);
void Softmax(const SoftmaxParams& p);

// ---- run-time dispatch -----------------------------------------------------------------
enum class CpuIsa : uint8_t { kScalar, kAvx2, kAvx512 };
// The best path this processor supports (cached after the first call), capped by
// SetMaxCpuIsa (tests force each path in turn). AVX2 means AVX2 + FMA + F16C; AVX-512
// means F + BW + VL + VNNI. SetMaxCpuIsa is process-wide (an atomic): for tests and
// benchmarks, not to be changed while ops run on other threads.
CpuIsa ActiveCpuIsa();
void SetMaxCpuIsa(CpuIsa isa);
const char* CpuIsaName(CpuIsa isa);

}  // namespace mnemo::kernels
