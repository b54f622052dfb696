// CudaDequantize against the CPU reference: every weight dtype, random blocks, awkward
// sizes, bit-exact (both use kernels/dequant_math.h), with guard sentinels after the output.
// Tests that need a device skip without one; argument validation runs everywhere.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/dequant.h"
#include "kernels/cuda/device.h"
#include "kernels/dequant.h"
#include "kernels/dtype.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/kernels/quant_test_util.h"

namespace mnemo::kernels {
namespace {

constexpr uint32_t kSentinel = 0x7fc0dead;  // a NaN pattern every guard float must keep
constexpr int kGuard = 64;                  // guard floats after the output

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Runs CudaDequantize on `bytes` (n elements of type t) on a fresh stream; returns the
// output followed by the kGuard guard floats.
void RunOnDevice(DType t, const std::vector<uint8_t>& bytes, int64_t n, std::vector<float>* out) {
  void* d_src = nullptr;
  float* d_dst = nullptr;
  cudaStream_t stream = nullptr;
  ASSERT_CUDA_OK(cudaMalloc(&d_src, bytes.size() + 1));
  ASSERT_CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&d_dst), (n + kGuard) * sizeof(float)));
  ASSERT_CUDA_OK(cudaStreamCreate(&stream));
  std::vector<uint32_t> poison(n + kGuard, kSentinel);
  ASSERT_CUDA_OK(cudaMemcpy(d_src, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
  ASSERT_CUDA_OK(
      cudaMemcpy(d_dst, poison.data(), poison.size() * sizeof(float), cudaMemcpyHostToDevice));
  ASSERT_CUDA_OK(CudaDequantize(t, d_src, d_dst, n, stream));
  ASSERT_CUDA_OK(cudaStreamSynchronize(stream));
  out->assign(n + kGuard, 0.0f);
  ASSERT_CUDA_OK(
      cudaMemcpy(out->data(), d_dst, out->size() * sizeof(float), cudaMemcpyDeviceToHost));
  ASSERT_CUDA_OK(cudaStreamDestroy(stream));
  ASSERT_CUDA_OK(cudaFree(d_src));
  ASSERT_CUDA_OK(cudaFree(d_dst));
}

TEST(DequantGpuTest, MatchesReferenceBitForBit) {
  REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(1234);
  for (DType t : testing::WeightDTypes()) {
    const int be = GetDTypeInfo(t).block_elems;
    // Awkward block counts, and one row longer than a full grid (grid-stride loop).
    for (int64_t blocks :
         {int64_t{1}, int64_t{3}, int64_t{37}, int64_t{1001}, (int64_t{1} << 24) / be + 7}) {
      const int64_t n = blocks * be;
      SCOPED_TRACE(std::string(DTypeName(t)) + " n=" + std::to_string(n));
      const std::vector<uint8_t> bytes = testing::RandomRowBytes(t, n, rng);
      std::vector<float> want(n);
      DequantizeRowRef(t, bytes.data(), want.data(), n);
      std::vector<float> got;
      RunOnDevice(t, bytes, n, &got);
      if (HasFatalFailure()) return;
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(Bits(got[i]), Bits(want[i]))
            << "element " << i << ": " << got[i] << " vs " << want[i];
      }
      for (int i = 0; i < kGuard; ++i) {
        ASSERT_EQ(Bits(got[n + i]), kSentinel) << "write past the end at " << n + i;
      }
    }
  }
}

TEST(DequantGpuTest, ZeroElementsEnqueueNothing) {
  // Needs no device: nothing is launched.
  EXPECT_EQ(CudaDequantize(DType::kQ4_K, nullptr, nullptr, 0, nullptr), 0);
  EXPECT_EQ(CudaDequantize(DType::kF16, nullptr, nullptr, 0, nullptr), 0);
}

TEST(DequantGpuTest, RejectsBadArgumentsWithoutLaunching) {
  // Validation happens before any CUDA call, so these hold with or without a device.
  alignas(16) static float buf[512];
  const int kInvalid = static_cast<int>(cudaErrorInvalidValue);
  EXPECT_EQ(CudaDequantize(DType::kQ4_0, buf, buf + 256, 31, nullptr), kInvalid);
  EXPECT_EQ(CudaDequantize(DType::kQ6_K, buf, buf + 256, 255, nullptr), kInvalid);
  EXPECT_EQ(CudaDequantize(DType::kF32, buf, buf + 256, -1, nullptr), kInvalid);
  EXPECT_EQ(CudaDequantize(DType::kI32, buf, buf + 256, 4, nullptr), kInvalid);
  EXPECT_EQ(CudaDequantize(DType::kF64, buf, buf + 256, 0, nullptr), kInvalid);
  EXPECT_EQ(CudaDequantize(DType::kQ8_0, nullptr, buf, 32, nullptr), kInvalid);
  EXPECT_EQ(CudaDequantize(DType::kQ8_0, buf, nullptr, 32, nullptr), kInvalid);
  const auto* odd = reinterpret_cast<const uint8_t*>(buf) + 1;
  EXPECT_EQ(CudaDequantize(DType::kQ4_0, odd, buf + 256, 32, nullptr), kInvalid);
  EXPECT_EQ(CudaDequantize(DType::kF32, buf + 0,
                           reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(buf + 256) + 2), 4,
                           nullptr),
            kInvalid);
}

TEST(CudaDeviceTest, ListingIsConsistent) {
  const int count = CudaDeviceCount();
  EXPECT_GE(count, 0);
  const std::vector<CudaDeviceInfo> devices = ListCudaDevices();
  EXPECT_EQ(static_cast<int>(devices.size()), count);
  for (size_t i = 0; i < devices.size(); ++i) {
    EXPECT_EQ(devices[i].index, static_cast<int>(i));
    EXPECT_FALSE(devices[i].name.empty());
    EXPECT_GT(devices[i].total_memory_bytes, 0u);
    EXPECT_GE(devices[i].compute_major, 5);
    EXPECT_GT(devices[i].multiprocessor_count, 0);
  }
}

TEST(CudaDeviceTest, ErrorStringNamesTheError) {
  const std::string s = CudaErrorString(static_cast<int>(cudaErrorInvalidValue));
  EXPECT_NE(s.find("cudaErrorInvalidValue"), std::string::npos) << s;
}

}  // namespace
}  // namespace mnemo::kernels
