// Internals of the fast row-wise ops (kernels/cpu/ops_fast.cc): one kernel per op per
// CPU path, each processing a single row. The fast entry points split the rows over oneTBB
// threads and call the kernel of ActiveCpuIsa() for each; a row's result depends only on
// that row (reductions inside a row run in a fixed lane order), so it is the same whatever
// the batch or thread count.
#pragma once

#include <cstdint>

namespace mnemo::kernels::internal {

struct RowKernels {
  // y[c] = x[c] * (1 / sqrt(sum(x^2) / cols + eps)) * w[c]; y may equal x.
  void (*rms_norm)(const float* x, const float* w, float* y, int64_t cols, float eps);
  // out[c] = gate[c] * up[c] / (1 + exp(-gate[c])); out may equal gate.
  void (*swiglu)(const float* gate, const float* up, float* out, int64_t cols);
  // In place: exp(x - max) / sum; -inf entries give 0, a row of only -inf all zeros.
  void (*softmax)(float* x, int64_t cols);
  // Rotates the first rotary_dims of each of n_heads heads of one row. Normal (adjacent)
  // pairs use cc/ss of length rotary_dims: cc[2i] = cc[2i+1] = cos_i, ss[2i] = -sin_i,
  // ss[2i+1] = sin_i (x'[j] = x[j] cc[j] + x[j ^ 1] ss[j]); NeoX pairs use cos_i = cc[i],
  // sin_i = ss[i], i < rotary_dims / 2.
  void (*rope)(float* x, int n_heads, int head_dim, int rotary_dims, bool neox, const float* cc,
               const float* ss);
};

const RowKernels& RowKernelsScalar();
const RowKernels& RowKernelsAvx2();
const RowKernels& RowKernelsAvx512();

}  // namespace mnemo::kernels::internal
