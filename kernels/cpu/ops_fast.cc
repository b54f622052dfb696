// Fast CPU twins of the elementwise and row-wise ops (kernels/ops.h).
#include "kernels/cpu/ops_check.h"
#include "kernels/ops.h"

namespace mnemo::kernels {

void Embedding(const EmbeddingParams& p) { EmbeddingRef(p); }
void RmsNorm(const RmsNormParams& p) { RmsNormRef(p); }
void Rope(const RopeParams& p) { RopeRef(p); }
void SwiGlu(const SwiGluParams& p) { SwiGluRef(p); }
void Softmax(const SoftmaxParams& p) { SoftmaxRef(p); }

}  // namespace mnemo::kernels
