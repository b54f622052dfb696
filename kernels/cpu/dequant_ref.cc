// Scalar reference dequantization: one loop over blocks per format, the per-block math from
// kernels/dequant_math.h.
#include <cstdint>

#include "kernels/base/check.h"
#include "kernels/dequant.h"
#include "kernels/dequant_math.h"
#include "kernels/dtype.h"
#include "tbb/blocked_range.h"
#include "tbb/parallel_for.h"

namespace mnemo::kernels {
namespace {

template <typename Format>
void DequantizeBlocks(const void* src, float* dst, int64_t n) {
  using Block = typename Format::Block;
  const auto* blocks = static_cast<const Block*>(src);
  const int64_t num_blocks = n / Format::kElems;
  for (int64_t b = 0; b < num_blocks; ++b) {
    Format::ToFloats(blocks[b], dst + b * Format::kElems);
  }
}

}  // namespace

bool CanDequantize(DType t) {
  return VisitWeightFormat(t, false, [](auto) { return true; });
}

bool CanQuantize(DType t) { return CanDequantize(t); }

void DequantizeRowRef(DType t, const void* src, float* dst, int64_t n) {
  MNEMO_CHECK(CanDequantize(t)) << "cannot dequantize dtype " << DTypeName(t);
  MNEMO_CHECK(n >= 0 && n % GetDTypeInfo(t).block_elems == 0)
      << "row of " << n << " elements is not a whole number of " << DTypeName(t) << " blocks";
  if (n == 0) return;
  MNEMO_CHECK(src != nullptr && dst != nullptr) << "null row pointer";
  VisitWeightFormat(t, 0, [&](auto format) {
    DequantizeBlocks<decltype(format)>(src, dst, n);
    return 0;
  });
}

void DequantizeRows(DType t, const void* src, float* dst, int64_t rows, int64_t cols) {
  MNEMO_CHECK(rows >= 0) << "negative row count " << rows;
  const std::optional<uint64_t> row_bytes = DTypeBytes(t, cols);
  MNEMO_CHECK(row_bytes.has_value())
      << "row of " << cols << " elements is not a whole number of " << DTypeName(t) << " blocks";
  if (rows == 0 || cols == 0) return;
  const auto* bytes = static_cast<const uint8_t*>(src);
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, rows),
                    [&](const tbb::blocked_range<int64_t>& r) {
                      for (int64_t row = r.begin(); row != r.end(); ++row) {
                        DequantizeRowRef(t, bytes + static_cast<uint64_t>(row) * *row_bytes,
                                         dst + row * cols, cols);
                      }
                    });
}

}  // namespace mnemo::kernels
