#include "kernels/dtype.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

#include "kernels/quant_blocks.h"

namespace mnemo::kernels {
namespace {

TEST(DTypeTest, NamesRoundTripCaseInsensitively) {
  for (int i = 0; i < kNumDTypes; ++i) {
    const auto t = static_cast<DType>(i);
    EXPECT_EQ(DTypeFromName(DTypeName(t)), t) << DTypeName(t);
  }
  EXPECT_EQ(DTypeFromName("Q4_K"), DType::kQ4_K);
  EXPECT_EQ(DTypeFromName("BF16"), DType::kBF16);
  EXPECT_EQ(DTypeName(DType::kQ6_K), "q6_k");
  EXPECT_EQ(DTypeFromName("q4k"), std::nullopt);
  EXPECT_EQ(DTypeFromName(""), std::nullopt);
  EXPECT_EQ(DTypeFromName("q4_k "), std::nullopt);
}

TEST(DTypeTest, BlockSizesMatchTheBlockStructs) {
  EXPECT_EQ(GetDTypeInfo(DType::kQ8_0).block_bytes, static_cast<int>(sizeof(BlockQ8_0)));
  EXPECT_EQ(GetDTypeInfo(DType::kQ4_0).block_bytes, static_cast<int>(sizeof(BlockQ4_0)));
  EXPECT_EQ(GetDTypeInfo(DType::kQ4_1).block_bytes, static_cast<int>(sizeof(BlockQ4_1)));
  EXPECT_EQ(GetDTypeInfo(DType::kQ4_K).block_bytes, static_cast<int>(sizeof(BlockQ4_K)));
  EXPECT_EQ(GetDTypeInfo(DType::kQ5_K).block_bytes, static_cast<int>(sizeof(BlockQ5_K)));
  EXPECT_EQ(GetDTypeInfo(DType::kQ6_K).block_bytes, static_cast<int>(sizeof(BlockQ6_K)));
  EXPECT_EQ(GetDTypeInfo(DType::kQ8_0).block_elems, BlockQ8_0::kElems);
  EXPECT_EQ(GetDTypeInfo(DType::kQ4_0).block_elems, BlockQ4_0::kElems);
  EXPECT_EQ(GetDTypeInfo(DType::kQ4_1).block_elems, BlockQ4_1::kElems);
  EXPECT_EQ(GetDTypeInfo(DType::kQ4_K).block_elems, BlockQ4_K::kElems);
  EXPECT_EQ(GetDTypeInfo(DType::kQ5_K).block_elems, BlockQ5_K::kElems);
  EXPECT_EQ(GetDTypeInfo(DType::kQ6_K).block_elems, BlockQ6_K::kElems);
  EXPECT_TRUE(GetDTypeInfo(DType::kQ4_K).quantized);
  EXPECT_FALSE(GetDTypeInfo(DType::kBF16).quantized);
}

TEST(DTypeTest, Bytes) {
  EXPECT_EQ(DTypeBytes(DType::kF32, 3), 12u);
  EXPECT_EQ(DTypeBytes(DType::kF16, 7), 14u);
  EXPECT_EQ(DTypeBytes(DType::kBF16, 0), 0u);
  EXPECT_EQ(DTypeBytes(DType::kI64, 2), 16u);
  EXPECT_EQ(DTypeBytes(DType::kQ8_0, 96), 3u * 34);
  EXPECT_EQ(DTypeBytes(DType::kQ4_0, 64), 36u);
  EXPECT_EQ(DTypeBytes(DType::kQ4_1, 32), 20u);
  EXPECT_EQ(DTypeBytes(DType::kQ4_K, 512), 288u);
  EXPECT_EQ(DTypeBytes(DType::kQ5_K, 256), 176u);
  EXPECT_EQ(DTypeBytes(DType::kQ6_K, 256 * 5), 1050u);
  // Not a whole number of blocks, negative, or overflowing.
  EXPECT_EQ(DTypeBytes(DType::kQ4_0, 31), std::nullopt);
  EXPECT_EQ(DTypeBytes(DType::kQ4_K, 100), std::nullopt);
  EXPECT_EQ(DTypeBytes(DType::kF32, -1), std::nullopt);
  EXPECT_EQ(DTypeBytes(DType::kQ6_K, -256), std::nullopt);
  EXPECT_EQ(DTypeBytes(DType::kF64, std::numeric_limits<int64_t>::max()), std::nullopt);
  EXPECT_EQ(DTypeBytes(DType::kI64, int64_t{1} << 61), std::nullopt);  // 2^64 bytes
  EXPECT_EQ(DTypeBytes(DType::kF32, int64_t{1} << 61), uint64_t{1} << 63);
}

}  // namespace
}  // namespace mnemo::kernels
