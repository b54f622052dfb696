// Launch configurations of the CUDA dense ops (kernels/cuda/ops_launch.h), checked without a
// GPU: every configuration passes CheckLaunch on sm_80 and sm_90 over model shapes, and the
// loops of kernels/cuda/ops.cu, replayed on the host from the configuration, visit every row
// and every column exactly once.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/ops_launch.h"

namespace mnemo::kernels::cuda {
namespace {

// Visits per index of the loop `for (i = first; i < n; i += stride)` run by every
// (block, thread) of one grid dimension: first = block * threads + thread (threads = 1 for
// the rows of grid x).
std::vector<int> Visits(int64_t n, int64_t blocks, int64_t threads) {
  std::vector<int> v(static_cast<size_t>(n), 0);
  const int64_t stride = blocks * threads;
  for (int64_t first = 0; first < stride; ++first) {
    for (int64_t i = first; i < n; i += stride) ++v[static_cast<size_t>(i)];
  }
  return v;
}

// Indices of v not visited exactly once, at most a few, for the failure message.
std::string NotOnce(const std::vector<int>& v) {
  std::string out;
  int shown = 0;
  for (size_t i = 0; i < v.size() && shown < 5; ++i) {
    if (v[i] != 1) {
      out += " [" + std::to_string(i) + "]x" + std::to_string(v[i]);
      ++shown;
    }
  }
  return out;
}

const int64_t kRowCounts[] = {1, 2, 3, 17, 255, 4096, 65535, 65536};
// Hidden sizes, FFN widths and vocabularies of current models, and awkward sizes.
const int64_t kColCounts[] = {1,    2,    31,   32,    33,    100,   577,   1024,  2048,   4096,
                              4097, 5120, 8192, 11008, 13824, 14336, 16384, 32000, 128256, 151936};

TEST(CudaOpsLaunch, RowOpsFitBothArchitecturesAndCoverEveryElementOnce) {
  for (int64_t rows : kRowCounts) {
    for (int64_t cols : kColCounts) {
      const LaunchConfig c = RowOpLaunch(rows, cols);
      SCOPED_TRACE("rows " + std::to_string(rows) + " cols " + std::to_string(cols));
      EXPECT_EQ(CheckLaunch(c, kSm80), "");
      EXPECT_EQ(CheckLaunch(c, kSm90), "");
      // One block per row: the kernel's shared scratch holds one float per warp.
      EXPECT_EQ(c.grid.y, 1);
      EXPECT_EQ(c.grid.z, 1);
      EXPECT_EQ(c.block.y * c.block.z, 1);
      EXPECT_LE(c.block.x / 32, 32);
      // Rows: blocks stride over grid x; columns: the block's threads stride over the row.
      const std::vector<int> row_visits = Visits(rows, c.grid.x, 1);
      const std::vector<int> col_visits = Visits(cols, 1, c.block.x);
      EXPECT_EQ(NotOnce(row_visits), "");
      EXPECT_EQ(NotOnce(col_visits), "");
      // The block size (hence the reduction order) depends on cols only.
      EXPECT_EQ(c.block.x, RowOpLaunch(1, cols).block.x);
    }
  }
}

TEST(CudaOpsLaunch, ElementwiseOpsFitBothArchitecturesAndCoverEveryElementOnce) {
  std::vector<int64_t> widths(std::begin(kColCounts), std::end(kColCounts));
  // RoPE: n_heads * rotary_dims / 2 pairs per row, head_dim 64/128/256, up to 128 heads.
  for (int64_t heads : {1, 8, 32, 64, 128}) {
    for (int64_t head_dim : {64, 128, 256}) widths.push_back(heads * head_dim / 2);
  }
  for (int64_t rows : kRowCounts) {
    for (int64_t cols : widths) {
      const LaunchConfig c = ElementwiseLaunch(rows, cols);
      SCOPED_TRACE("rows " + std::to_string(rows) + " cols " + std::to_string(cols));
      EXPECT_EQ(CheckLaunch(c, kSm80), "");
      EXPECT_EQ(CheckLaunch(c, kSm90), "");
      EXPECT_EQ(c.grid.z, 1);
      EXPECT_EQ(c.block.y * c.block.z, 1);
      EXPECT_EQ(NotOnce(Visits(rows, c.grid.x, 1)), "");
      EXPECT_EQ(NotOnce(Visits(cols, c.grid.y, c.block.x)), "");
      // No block made only of idle threads.
      EXPECT_LT((c.grid.y - 1) * c.block.x, cols);
    }
  }
}

// Past the grid limits the loops still cover everything: rows beyond 2^31 - 1 blocks and
// columns beyond 65535 blocks on grid y wrap around (checked on the configurations alone,
// without enumerating 2^31 rows).
TEST(CudaOpsLaunch, ClampsToTheGridLimits) {
  const int64_t huge_rows = int64_t{1} << 33;
  EXPECT_EQ(RowOpLaunch(huge_rows, 64).grid.x, kOpsMaxGridX);
  EXPECT_EQ(ElementwiseLaunch(huge_rows, 64).grid.x, kOpsMaxGridX);
  const LaunchConfig wide = ElementwiseLaunch(1, int64_t{1} << 26);
  EXPECT_EQ(wide.grid.y, kOpsMaxGridY);
  EXPECT_EQ(CheckLaunch(wide, kSm80), "");
  EXPECT_EQ(NotOnce(Visits(int64_t{1} << 26, wide.grid.y, wide.block.x)), "");
  EXPECT_EQ(NotOnce(Visits(100000, 7, 1)), "");  // a row loop with fewer blocks than rows
}

}  // namespace
}  // namespace mnemo::kernels::cuda
