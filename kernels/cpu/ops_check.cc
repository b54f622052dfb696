#include "kernels/cpu/ops_check.h"

#include <optional>

#include "kernels/base/check.h"
#include "kernels/dequant.h"

namespace mnemo::kernels::internal {

int64_t CheckedWeightRowBytes(const WeightView& w) {
  MNEMO_CHECK(CanDequantize(w.dtype)) << "not a weight dtype: " << DTypeName(w.dtype);
  MNEMO_CHECK(w.rows >= 0 && w.cols >= 0) << "negative weight shape " << w.rows << "x" << w.cols;
  const std::optional<uint64_t> bytes = DTypeBytes(w.dtype, w.cols);
  MNEMO_CHECK(bytes.has_value()) << w.cols << " columns is not a whole number of "
                                 << DTypeName(w.dtype) << " blocks";
  MNEMO_CHECK(w.data != nullptr || w.rows == 0 || w.cols == 0) << "null weight data";
  return static_cast<int64_t>(*bytes);
}

void CheckEmbedding(const EmbeddingParams& p) {
  CheckedWeightRowBytes(p.table);
  MNEMO_CHECK(p.n >= 0) << "negative id count " << p.n;
  if (p.n == 0) return;
  MNEMO_CHECK(p.ids != nullptr && p.out != nullptr) << "null embedding pointer";
  MNEMO_CHECK(p.ld_out >= p.table.cols) << "ld_out " << p.ld_out << " < " << p.table.cols;
  for (int64_t i = 0; i < p.n; ++i) {
    MNEMO_CHECK(p.ids[i] >= 0 && p.ids[i] < p.table.rows)
        << "token id " << p.ids[i] << " outside [0, " << p.table.rows << ")";
  }
}

void CheckRmsNorm(const RmsNormParams& p) {
  MNEMO_CHECK(p.rows >= 0 && p.cols >= 0) << "negative shape";
  if (p.rows == 0 || p.cols == 0) return;
  MNEMO_CHECK(p.x != nullptr && p.y != nullptr && p.weight != nullptr) << "null rmsnorm pointer";
  MNEMO_CHECK(p.ldx >= p.cols && p.ldy >= p.cols) << "row stride < cols";
  MNEMO_CHECK(p.x != p.y || p.ldx == p.ldy) << "in-place rmsnorm needs ldx == ldy";
}

void CheckRope(const RopeParams& p) {
  MNEMO_CHECK(p.rows >= 0 && p.n_heads >= 0 && p.head_dim >= 0) << "negative shape";
  MNEMO_CHECK(p.rotary_dims >= 0 && p.rotary_dims % 2 == 0 && p.rotary_dims <= p.head_dim)
      << "rotary_dims " << p.rotary_dims << " must be even and <= head_dim " << p.head_dim;
  if (p.rows == 0 || p.n_heads == 0 || p.rotary_dims == 0) return;
  MNEMO_CHECK(p.x != nullptr && p.positions != nullptr && p.theta != nullptr)
      << "null rope pointer";
  MNEMO_CHECK(p.ld >= static_cast<int64_t>(p.n_heads) * p.head_dim) << "ld < n_heads * head_dim";
}

void CheckMatMul(const MatMulParams& p) {
  CheckedWeightRowBytes(p.w);
  MNEMO_CHECK(p.rows >= 0) << "negative row count " << p.rows;
  if (p.rows == 0 || p.w.rows == 0) return;
  MNEMO_CHECK(p.y != nullptr) << "null matmul output";
  MNEMO_CHECK(p.ldy >= p.w.rows) << "ldy " << p.ldy << " < n_out " << p.w.rows;
  if (p.w.cols == 0) return;
  MNEMO_CHECK(p.x != nullptr) << "null matmul input";
  MNEMO_CHECK(p.ldx >= p.w.cols) << "ldx " << p.ldx << " < k " << p.w.cols;
  // y must not alias x: the fast version reads x after writing some of y.
  const float* x_end = p.x + (p.rows - 1) * p.ldx + p.w.cols;
  const float* y_end = p.y + (p.rows - 1) * p.ldy + p.w.rows;
  MNEMO_CHECK(y_end <= p.x || x_end <= p.y) << "matmul output aliases its input";
}

void CheckSwiGlu(const SwiGluParams& p) {
  MNEMO_CHECK(p.rows >= 0 && p.cols >= 0) << "negative shape";
  if (p.rows == 0 || p.cols == 0) return;
  MNEMO_CHECK(p.gate != nullptr && p.up != nullptr && p.out != nullptr) << "null swiglu pointer";
  MNEMO_CHECK(p.ld_gate >= p.cols && p.ld_up >= p.cols && p.ld_out >= p.cols)
      << "row stride < cols";
}

void CheckSoftmax(const SoftmaxParams& p) {
  MNEMO_CHECK(p.rows >= 0 && p.cols >= 0) << "negative shape";
  if (p.rows == 0 || p.cols == 0) return;
  MNEMO_CHECK(p.x != nullptr) << "null softmax pointer";
  MNEMO_CHECK(p.ld >= p.cols) << "row stride < cols";
}

}  // namespace mnemo::kernels::internal
