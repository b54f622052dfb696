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
  switch (t) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return true;
    default:
      return false;
  }
}

bool CanQuantize(DType t) { return CanDequantize(t); }

void DequantizeRowRef(DType t, const void* src, float* dst, int64_t n) {
  MNEMO_CHECK(CanDequantize(t)) << "cannot dequantize dtype " << DTypeName(t);
  MNEMO_CHECK(n >= 0 && n % GetDTypeInfo(t).block_elems == 0)
      << "row of " << n << " elements is not a whole number of " << DTypeName(t) << " blocks";
  if (n == 0) return;
  MNEMO_CHECK(src != nullptr && dst != nullptr) << "null row pointer";
  switch (t) {
    case DType::kF32:
      return DequantizeBlocks<F32Format>(src, dst, n);
    case DType::kF16:
      return DequantizeBlocks<F16Format>(src, dst, n);
    case DType::kBF16:
      return DequantizeBlocks<BF16Format>(src, dst, n);
    case DType::kQ8_0:
      return DequantizeBlocks<Q8_0Format>(src, dst, n);
    case DType::kQ4_0:
      return DequantizeBlocks<Q4_0Format>(src, dst, n);
    case DType::kQ4_1:
      return DequantizeBlocks<Q4_1Format>(src, dst, n);
    case DType::kQ4_K:
      return DequantizeBlocks<Q4_KFormat>(src, dst, n);
    case DType::kQ5_K:
      return DequantizeBlocks<Q5_KFormat>(src, dst, n);
    case DType::kQ6_K:
      return DequantizeBlocks<Q6_KFormat>(src, dst, n);
    default:
      break;
  }
  MNEMO_CHECK(false) << "unreachable";
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
