// Precondition checks shared by the reference and fast versions of the ops in
// kernels/ops.h. Violations are programming errors (MNEMO_CHECK aborts with a message);
// both twins check the same things so a bad call fails the same way on either.
#pragma once

#include <cstdint>

#include "kernels/ops.h"

namespace mnemo::kernels::internal {

// Bytes of one weight row (w.cols elements of w.dtype); checks the view is usable.
int64_t CheckedWeightRowBytes(const WeightView& w);

void CheckEmbedding(const EmbeddingParams& p);
void CheckRmsNorm(const RmsNormParams& p);
void CheckRope(const RopeParams& p);
void CheckMatMul(const MatMulParams& p);
void CheckSwiGlu(const SwiGluParams& p);
void CheckSoftmax(const SoftmaxParams& p);

}  // namespace mnemo::kernels::internal
