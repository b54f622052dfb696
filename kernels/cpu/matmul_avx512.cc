// AVX-512 (F, BW, VL, VNNI) MatMul kernels (kernels/cpu/matmul_internal.h).
#include "kernels/cpu/matmul_internal.h"

namespace mnemo::kernels::internal {

void MatMulColumnsAvx512(const MatMulJob& job, int64_t n_begin, int64_t n_end) {
  MatMulColumnsScalar(job, n_begin, n_end);
}

}  // namespace mnemo::kernels::internal
