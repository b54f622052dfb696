// Fast CPU twins of the row-wise ops (kernels/ops.h): rows split over oneTBB threads, each
// row handled by the SIMD kernel of the active path (kernels/cpu/ops_rows.h). This file
// also holds the portable (scalar) kernels.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/ops_check.h"
#include "kernels/cpu/ops_rows.h"
#include "kernels/dequant.h"
#include "kernels/half.h"
#include "kernels/ops.h"
#include "kernels/ops_math.h"
#include "tbb/blocked_range.h"
#include "tbb/parallel_for.h"

namespace mnemo::kernels {
namespace internal {
namespace {

void RmsNormScalar(const float* x, const float* w, float* y, int64_t cols, float eps) {
  float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t c = 0; c < cols; ++c) part[c % 4] += x[c] * x[c];
  const float ss = (part[0] + part[1]) + (part[2] + part[3]);
  const float scale = RmsNormScale(ss, cols, eps);
  for (int64_t c = 0; c < cols; ++c) y[c] = RmsNormApply(x[c], scale, w[c]);
}

void SwiGluScalar(const float* gate, const float* up, float* out, int64_t cols) {
  for (int64_t c = 0; c < cols; ++c) out[c] = SiluMul(gate[c], up[c]);
}

void SoftmaxScalar(float* x, int64_t cols) {
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < cols; ++c) max = std::max(max, x[c]);
  if (max == -std::numeric_limits<float>::infinity()) {  // every entry masked
    std::fill(x, x + cols, 0.0f);
    return;
  }
  float sum = 0.0f;
  for (int64_t c = 0; c < cols; ++c) {
    x[c] = SoftmaxExp(x[c], max);
    sum += x[c];
  }
  const float inv = 1.0f / sum;
  for (int64_t c = 0; c < cols; ++c) x[c] *= inv;
}

void RopeScalar(float* x, int n_heads, int head_dim, int rotary_dims, bool neox, const float* cc,
                const float* ss) {
  const int half = rotary_dims / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<int64_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      int a;
      int b;
      RopePairOffsets(neox, half, i, &a, &b);
      const float c = neox ? cc[i] : cc[2 * i];
      const float s = neox ? ss[i] : ss[2 * i + 1];
      RopeRotate(v[a], v[b], c, s, &v[a], &v[b]);
    }
  }
}

// Runs fn(r) for r in [0, rows), in parallel when there is enough work to pay for it.
template <typename Fn>
void ForRows(int64_t rows, int64_t work_per_row, const Fn& fn) {
  if (rows > 1 && rows * work_per_row >= (int64_t{1} << 14)) {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, rows),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        for (int64_t i = r.begin(); i < r.end(); ++i) fn(i);
                      });
  } else {
    for (int64_t i = 0; i < rows; ++i) fn(i);
  }
}

const RowKernels& ActiveRowKernels() {
  switch (ActiveCpuIsa()) {
    case CpuIsa::kAvx512:
      return RowKernelsAvx512();
    case CpuIsa::kAvx2:
      return RowKernelsAvx2();
    case CpuIsa::kScalar:
      break;
  }
  return RowKernelsScalar();
}

}  // namespace

const RowKernels& RowKernelsScalar() {
  static const RowKernels k{RmsNormScalar, SwiGluScalar, SoftmaxScalar, RopeScalar};
  return k;
}

}  // namespace internal

void Embedding(const EmbeddingParams& p) {
  internal::CheckEmbedding(p);
  const int64_t row_bytes = internal::CheckedWeightRowBytes(p.table);
  const auto* table = static_cast<const uint8_t*>(p.table.data);
  const int64_t cols = p.table.cols;
  internal::ForRows(p.n, cols, [&](int64_t i) {
    const uint8_t* src = table + p.ids[i] * row_bytes;
    float* dst = p.out + i * p.ld_out;
    if (p.table.dtype == DType::kF32) {
      std::memcpy(dst, src, static_cast<size_t>(cols) * sizeof(float));
    } else {
      DequantizeRowRef(p.table.dtype, src, dst, cols);
    }
  });
}

void RmsNorm(const RmsNormParams& p) {
  internal::CheckRmsNorm(p);
  if (p.cols == 0) return;
  const internal::RowKernels& k = internal::ActiveRowKernels();
  internal::ForRows(p.rows, p.cols, [&](int64_t r) {
    k.rms_norm(p.x + r * p.ldx, p.weight, p.y + r * p.ldy, p.cols, p.eps);
  });
}

void SwiGlu(const SwiGluParams& p) {
  internal::CheckSwiGlu(p);
  if (p.cols == 0) return;
  const internal::RowKernels& k = internal::ActiveRowKernels();
  internal::ForRows(p.rows, p.cols, [&](int64_t r) {
    k.swiglu(p.gate + r * p.ld_gate, p.up + r * p.ld_up, p.out + r * p.ld_out, p.cols);
  });
}

void Softmax(const SoftmaxParams& p) {
  internal::CheckSoftmax(p);
  if (p.cols == 0) return;
  const internal::RowKernels& k = internal::ActiveRowKernels();
  internal::ForRows(p.rows, p.cols, [&](int64_t r) { k.softmax(p.x + r * p.ld, p.cols); });
}

void Rope(const RopeParams& p) {
  internal::CheckRope(p);
  if (p.rows == 0 || p.n_heads == 0 || p.rotary_dims == 0) return;
  const internal::RowKernels& k = internal::ActiveRowKernels();
  const int half = p.rotary_dims / 2;
  const bool neox = p.mode == RopeMode::kNeox;
  internal::ForRows(p.rows, static_cast<int64_t>(p.n_heads) * p.rotary_dims, [&](int64_t r) {
    // cos and sin of each pair's angle in double (as the reference), rounded once with
    // mscale folded in; then the rotation in f32.
    thread_local std::vector<float> cc;
    thread_local std::vector<float> ss;
    cc.resize(static_cast<size_t>(p.rotary_dims));
    ss.resize(static_cast<size_t>(p.rotary_dims));
    for (int i = 0; i < half; ++i) {
      float c;
      float s;
      RopeCosSin(p.positions[r], p.theta[i], p.mscale, &c, &s);
      if (neox) {
        cc[i] = c;
        ss[i] = s;
      } else {
        cc[2 * i] = c;
        cc[2 * i + 1] = c;
        ss[2 * i] = -s;
        ss[2 * i + 1] = s;
      }
    }
    k.rope(p.x + r * p.ld, p.n_heads, p.head_dim, p.rotary_dims, neox, cc.data(), ss.data());
  });
}

}  // namespace mnemo::kernels
