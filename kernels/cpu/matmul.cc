// Fast CPU matrix product (kernels/ops.h: MatMul): quantizes the activations once per call
// for quantized weights, then runs the per-ISA column kernels in parallel over fixed chunks
// of output columns (kernels/cpu/matmul_internal.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/cpu/ops_check.h"
#include "kernels/ops.h"
#include "tbb/blocked_range.h"
#include "tbb/parallel_for.h"
#include "tbb/partitioner.h"

namespace mnemo::kernels {
namespace internal {

void QuantizeActRow(const float* x, int64_t k, ActGroup* out) {
  const int64_t blocks = k / 32;
  for (int64_t g = 0; g < ActGroupsPerRow(k); ++g) {
    ActGroup& grp = out[g];
    for (int half = 0; half < 2; ++half) {
      const int64_t b = 2 * g + half;
      int8_t* q = grp.qs + 32 * half;
      int32_t sum16[2] = {0, 0};
      float d = 0.0f;
      if (b < blocks) {
        const float* xb = x + 32 * b;
        float amax = 0.0f;
        for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(xb[i]));
        d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int i = 0; i < 32; ++i) {
          // nearbyint rounds half to even, like the SIMD conversions; |x * id| <= 127
          // up to rounding, the clamp only guards non-finite input.
          const float v = std::clamp(std::nearbyint(xb[i] * id), -127.0f, 127.0f);
          q[i] = static_cast<int8_t>(v);
          sum16[i / 16] += q[i];
        }
      } else {
        std::fill(q, q + 32, int8_t{0});
      }
      for (int lane = 0; lane < 8; ++lane) {
        grp.nsum[8 * half + lane] = lane % 4 == 0 ? -sum16[lane / 4] : 0;
        grp.d[8 * half + lane] = d;
        grp.dsum[8 * half + lane] = 0.0f;
      }
      grp.dsum[8 * half] = d * static_cast<float>(sum16[0] + sum16[1]);
    }
  }
}

}  // namespace internal

void MatMul(const MatMulParams& p) {
  internal::CheckMatMul(p);
  const int64_t n_out = p.w.rows;
  if (p.rows == 0 || n_out == 0) return;
  internal::MatMulJob job;
  job.dtype = p.w.dtype;
  job.w = static_cast<const uint8_t*>(p.w.data);
  job.w_row_bytes = internal::CheckedWeightRowBytes(p.w);
  job.k = p.w.cols;
  job.rows = p.rows;
  job.x = p.x;
  job.ldx = p.ldx;
  job.bias = p.bias;
  job.y = p.y;
  job.ldy = p.ldy;

  std::vector<internal::ActGroup> xq;
  if (GetDTypeInfo(p.w.dtype).quantized && job.k > 0) {
    job.xq_groups = internal::ActGroupsPerRow(job.k);
    xq.resize(static_cast<size_t>(job.xq_groups * p.rows));
    auto quantize = [&](int64_t m) {
      internal::QuantizeActRow(p.x + m * p.ldx, job.k, xq.data() + m * job.xq_groups);
    };
    if (p.rows * job.k >= (int64_t{1} << 16)) {
      tbb::parallel_for(int64_t{0}, p.rows, quantize);
    } else {
      for (int64_t m = 0; m < p.rows; ++m) quantize(m);
    }
    job.xq = xq.data();
  }

  void (*columns)(const internal::MatMulJob&, int64_t, int64_t) = internal::MatMulColumnsScalar;
#if defined(__x86_64__)
  switch (ActiveCpuIsa()) {
    case CpuIsa::kAvx512:
      columns = internal::MatMulColumnsAvx512;
      break;
    case CpuIsa::kAvx2:
      columns = internal::MatMulColumnsAvx2;
      break;
    case CpuIsa::kScalar:
      break;
  }
#endif

  // Fixed chunks of output columns (a multiple of every kernel's column tile): the
  // partition changes which thread computes an output, never how.
  const int64_t chunk = p.rows >= 16 ? 64 : 16;
  const int64_t chunks = (n_out + chunk - 1) / chunk;
  auto run = [&](int64_t c) { columns(job, c * chunk, std::min(n_out, (c + 1) * chunk)); };
  if (chunks == 1 || job.w_row_bytes * n_out * std::max<int64_t>(1, p.rows / 4) < (1 << 15)) {
    for (int64_t c = 0; c < chunks; ++c) run(c);
  } else {
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, chunks, 1),
        [&](const tbb::blocked_range<int64_t>& r) {
          for (int64_t c = r.begin(); c < r.end(); ++c) run(c);
        },
        tbb::simple_partitioner());
  }
}

}  // namespace mnemo::kernels
