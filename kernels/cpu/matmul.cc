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

void RunTiles(const TileSet& tiles, const MatMulJob& job, int64_t n_begin, int64_t n_end) {
  // A tile of activation rows stays in L1 while the chunk's weight columns stream past
  // from L2 (per 128 elements a weight row is at most 136 bytes, an activation row 384).
  for (int64_t m = 0; m < job.rows; m += tiles.rows) {
    const int64_t rows = std::min<int64_t>(tiles.rows, job.rows - m);
    for (int64_t n = n_begin; n < n_end; n += tiles.cols) {
      const int64_t cols = std::min<int64_t>(tiles.cols, n_end - n);
      tiles.fn[rows][cols](job, m, n);
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

  const internal::TileSet* tiles = nullptr;
#if defined(__x86_64__)
  switch (ActiveCpuIsa()) {
    case CpuIsa::kAvx512:
      tiles = &internal::TilesAvx512(p.w.dtype);
      break;
    case CpuIsa::kAvx2:
      tiles = &internal::TilesAvx2(p.w.dtype);
      break;
    case CpuIsa::kScalar:
      break;
  }
#endif
  auto columns = [&](int64_t n_begin, int64_t n_end) {
    if (tiles != nullptr && tiles->columns != nullptr) {
      tiles->columns(*tiles, job, n_begin, n_end);
    } else if (tiles != nullptr) {
      internal::RunTiles(*tiles, job, n_begin, n_end);
    } else {
      internal::MatMulColumnsScalar(job, n_begin, n_end);
    }
  };

  // Fixed chunks of output columns, whole column tiles each: the partition changes which
  // thread computes an output, never how (tiles run the same sequence on every output).
  const int64_t tile_cols = tiles != nullptr ? tiles->cols : 1;
  const int64_t chunk = p.rows >= 16 ? 8 * tile_cols : 48;
  const int64_t chunks = (n_out + chunk - 1) / chunk;
  auto run = [&](int64_t c) { columns(c * chunk, std::min(n_out, (c + 1) * chunk)); };
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
