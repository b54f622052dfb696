// Scalar references of the dense ops (kernels/ops.h): single-threaded, obviously correct,
// accumulating in double so that they are more accurate than any fast twin; the tests
// bound the fast versions' error against these.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/cpu/ops_check.h"
#include "kernels/dequant.h"
#include "kernels/ops.h"
#include "kernels/ops_math.h"

namespace mnemo::kernels {

void EmbeddingRef(const EmbeddingParams& p) {
  internal::CheckEmbedding(p);
  const int64_t row_bytes = internal::CheckedWeightRowBytes(p.table);
  const auto* table = static_cast<const uint8_t*>(p.table.data);
  for (int64_t i = 0; i < p.n; ++i) {
    DequantizeRowRef(p.table.dtype, table + p.ids[i] * row_bytes, p.out + i * p.ld_out,
                     p.table.cols);
  }
}

void RmsNormRef(const RmsNormParams& p) {
  internal::CheckRmsNorm(p);
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* x = p.x + r * p.ldx;
    float* y = p.y + r * p.ldy;
    double ss = 0.0;
    for (int64_t c = 0; c < p.cols; ++c) ss += static_cast<double>(x[c]) * x[c];
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(p.cols) + p.eps);
    for (int64_t c = 0; c < p.cols; ++c) {
      y[c] = static_cast<float>(static_cast<double>(x[c]) * scale * p.weight[c]);
    }
  }
}

void RopeRef(const RopeParams& p) {
  internal::CheckRope(p);
  const int half = p.rotary_dims / 2;
  for (int64_t r = 0; r < p.rows; ++r) {
    for (int i = 0; i < half; ++i) {
      const double angle = static_cast<double>(p.positions[r]) * static_cast<double>(p.theta[i]);
      const double c = std::cos(angle) * p.mscale;
      const double s = std::sin(angle) * p.mscale;
      int i0;
      int i1;
      RopePairOffsets(p.mode == RopeMode::kNeox, half, i, &i0, &i1);
      for (int h = 0; h < p.n_heads; ++h) {
        float* v = p.x + r * p.ld + static_cast<int64_t>(h) * p.head_dim;
        const double a = v[i0];
        const double b = v[i1];
        v[i0] = static_cast<float>(a * c - b * s);
        v[i1] = static_cast<float>(a * s + b * c);
      }
    }
  }
}

void MatMulRef(const MatMulParams& p) {
  internal::CheckMatMul(p);
  const int64_t row_bytes = internal::CheckedWeightRowBytes(p.w);
  const int64_t k = p.w.cols;
  std::vector<float> w_row(static_cast<size_t>(k));
  for (int64_t n = 0; n < p.w.rows; ++n) {
    DequantizeRowRef(p.w.dtype, static_cast<const uint8_t*>(p.w.data) + n * row_bytes, w_row.data(),
                     k);
    for (int64_t m = 0; m < p.rows; ++m) {
      const float* x = p.x + m * p.ldx;
      double sum = 0.0;
      for (int64_t i = 0; i < k; ++i) sum += static_cast<double>(x[i]) * w_row[i];
      if (p.bias != nullptr) sum += p.bias[n];
      p.y[m * p.ldy + n] = static_cast<float>(sum);
    }
  }
}

void SwiGluRef(const SwiGluParams& p) {
  internal::CheckSwiGlu(p);
  for (int64_t r = 0; r < p.rows; ++r) {
    for (int64_t c = 0; c < p.cols; ++c) {
      const double g = p.gate[r * p.ld_gate + c];
      const double u = p.up[r * p.ld_up + c];
      p.out[r * p.ld_out + c] = static_cast<float>(g / (1.0 + std::exp(-g)) * u);
    }
  }
}

void SoftmaxRef(const SoftmaxParams& p) {
  internal::CheckSoftmax(p);
  for (int64_t r = 0; r < p.rows; ++r) {
    float* x = p.x + r * p.ld;
    float max = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < p.cols; ++c) max = std::max(max, x[c]);
    if (max == -std::numeric_limits<float>::infinity()) {  // every entry masked
      for (int64_t c = 0; c < p.cols; ++c) x[c] = 0.0f;
      continue;
    }
    double sum = 0.0;
    for (int64_t c = 0; c < p.cols; ++c) sum += std::exp(static_cast<double>(x[c]) - max);
    for (int64_t c = 0; c < p.cols; ++c) {
      x[c] = static_cast<float>(std::exp(static_cast<double>(x[c]) - max) / sum);
    }
  }
}

}  // namespace mnemo::kernels
