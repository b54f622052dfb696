// The cuBLAS product path: weight conversion at upload (bit-exact against the CPU's
// dequantize-then-round), activation conversion, CudaGemm against MatMulRef at awkward
// shapes, and DevicePool. Tests that need a device skip without one; argument validation,
// launch configurations and the bump arithmetic run everywhere.
//
// Tolerance of CudaGemm. Let xh and wh be x and w rounded to the weight's 16-bit type. The
// reference is MatMulRef on xh and wh (as f32 values): a double sum rounded once, error
// <= 2^-24 |ref|. On the device every product xh_k * wh_k is exact in f32 (8- or 11-bit
// significands give at most 22 bits), and the k products are summed in f32 in an order
// cuBLAS chooses (tensor-core tiles, maybe split-K). Tensor cores add a group of products
// to the accumulator by aligning them to the group's largest exponent and truncating, then
// round the group sum: at most 2 lost ulps per product, each of a value no larger than
// S = sum_k |xh_k wh_k|, so at most 2k 2^-23 S. The bias is added in f32 (one more
// rounding) and the reference rounds once. So
//   |got - ref| <= k 2^-22 S + 2^-22 (|ref| + |bias|).
// A wrong element (a transposed index, a missing row) is off by about S / sqrt(k): 60 times
// this bound at k = 1568, thousands of times at k = 32.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/convert.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/device_pool.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/launch.h"
#include "kernels/dequant.h"
#include "kernels/dtype.h"
#include "kernels/half.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/kernels/ops_test_util.h"
#include "tests/kernels/quant_test_util.h"

namespace mnemo::kernels {
namespace {

using ::mnemo::testing::FloatBits;
using ::mnemo::testing::IsPoison;
using ::mnemo::testing::PoisonedMatrix;
using ::mnemo::testing::RandomMatrix;

constexpr uint16_t kSentinel16 = 0x7fa5;  // a NaN pattern no conversion here produces
constexpr int kGuard = 64;

// A device buffer freed at scope exit.
struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    if (cudaMalloc(&p, bytes) != cudaSuccess) p = nullptr;
  }
  ~DeviceBuffer() { (void)cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

template <typename T>
int Upload(const DeviceBuffer& d, const std::vector<T>& h) {
  return static_cast<int>(cudaMemcpy(d.p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
}

template <typename T>
int Download(std::vector<T>* h, const DeviceBuffer& d) {
  return static_cast<int>(
      cudaMemcpy(h->data(), d.p, h->size() * sizeof(T), cudaMemcpyDeviceToHost));
}

// ---- validation and host-side checks (no device needed) ---------------------------------

TEST(CudaConvertTest, RejectsBadArgumentsWithoutLaunching) {
  alignas(16) static uint16_t buf[1024];
  alignas(16) static float xf[256];
  EXPECT_EQ(CudaDequantizeToBf16(DType::kQ4_0, buf, buf + 512, 31, nullptr), kInvalid);
  EXPECT_EQ(CudaDequantizeToBf16(DType::kQ4_K, buf, buf + 512, 255, nullptr), kInvalid);
  EXPECT_EQ(CudaDequantizeToBf16(DType::kF32, buf, buf + 512, -1, nullptr), kInvalid);
  EXPECT_EQ(CudaDequantizeToBf16(DType::kI32, buf, buf + 512, 4, nullptr), kInvalid);
  EXPECT_EQ(CudaDequantizeToBf16(DType::kQ8_0, nullptr, buf, 32, nullptr), kInvalid);
  EXPECT_EQ(CudaDequantizeToBf16(DType::kQ8_0, buf, nullptr, 32, nullptr), kInvalid);
  const auto* odd = reinterpret_cast<const uint8_t*>(buf) + 1;
  EXPECT_EQ(CudaDequantizeToBf16(DType::kF16, odd, buf + 512, 4, nullptr), kInvalid);
  EXPECT_EQ(CudaDequantizeToBf16(DType::kF32, buf + 1, buf + 512, 4, nullptr), kInvalid);
  EXPECT_EQ(CudaDequantizeToBf16(DType::kF16, buf,
                                 reinterpret_cast<uint16_t*>(reinterpret_cast<uint8_t*>(buf) + 1),
                                 4, nullptr),
            kInvalid);
  EXPECT_EQ(CudaDequantizeToBf16(DType::kQ6_K, nullptr, nullptr, 0, nullptr), 0);
  EXPECT_EQ(CudaConvertWeight(DType::kF16, nullptr, nullptr, 0, nullptr), 0);
  EXPECT_EQ(CudaConvertWeight(DType::kF16, nullptr, buf, 4, nullptr), kInvalid);
  EXPECT_EQ(CudaConvertWeight(DType::kF16, buf, buf + 512, -2, nullptr), kInvalid);
  EXPECT_EQ(CudaConvertWeight(DType::kI8, buf, buf + 512, 4, nullptr), kInvalid);

  EXPECT_EQ(CudaF32ToBf16(xf, 2, 8, 7, buf, nullptr), kInvalid);  // ldx < cols
  EXPECT_EQ(CudaF32ToBf16(xf, -1, 8, 8, buf, nullptr), kInvalid);
  EXPECT_EQ(CudaF32ToF16(nullptr, 2, 8, 8, buf, nullptr), kInvalid);
  EXPECT_EQ(CudaF32ToF16(xf, 2, 8, 8, nullptr, nullptr), kInvalid);
  EXPECT_EQ(CudaF32ToF16(xf, 0, 8, 8, nullptr, nullptr), 0);
}

TEST(CudaConvertTest, DeviceWeightDTypes) {
  EXPECT_EQ(DeviceWeightDType(DType::kF16), DType::kF16);
  for (DType t : {DType::kF32, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ4_K,
                  DType::kQ5_K, DType::kQ6_K}) {
    EXPECT_EQ(DeviceWeightDType(t), DType::kBF16) << DTypeName(t);
  }
}

TEST(CudaConvertTest, ElementwiseLaunchIsValidOnBothArchitectures) {
  for (int64_t n : {int64_t{1}, int64_t{255}, int64_t{256}, int64_t{257}, int64_t{151936},
                    int64_t{512} * 16384, int64_t{128256} * 4096, int64_t{1} << 40}) {
    const cuda::LaunchConfig c = cuda::ElementwiseLaunch(n);
    for (const cuda::ArchLimits& a : {cuda::kSm80, cuda::kSm90}) {
      EXPECT_EQ(cuda::CheckLaunch(c, a), "") << "n=" << n;
    }
    // One thread per element up to the block cap; beyond it the grid-stride loop covers the
    // rest.
    EXPECT_EQ(c.block.x, 256);
    EXPECT_EQ(c.grid.x, std::min<int64_t>(cuda::CeilDiv(n, 256), int64_t{1} << 16)) << n;
  }
}

TEST(CudaGemmTest, ValidatesArgumentsWithoutADevice) {
  alignas(16) static uint16_t w16[64 * 64];
  alignas(16) static float x[64 * 64];
  alignas(16) static float y[64 * 64];
  alignas(16) static uint8_t scratch[8192];
  const CudaWeight w{w16, DType::kBF16, 33, 32};
  const int64_t need = CudaGemm::MatMulScratchBytes(3, 32);
  EXPECT_EQ(need, 256);  // 3 * 32 * 2 = 192 bytes, rounded up to 256
  EXPECT_EQ(CudaGemm::MatMulScratchBytes(17, 1568), (17 * 1568 * 2 + 255) / 256 * 256);
  EXPECT_EQ(CudaGemm::MatMulScratchBytes(0, 1568), 0);
  EXPECT_EQ(CudaGemm::CheckMatMulArgs(w, x, 3, 32, y, 33, scratch, need), 0);
  EXPECT_EQ(CudaGemm::CheckMatMulArgs(w, x, 3, 40, y, 40, scratch, need), 0);
  EXPECT_EQ(CudaGemm::CheckMatMulArgs(w, x, 3, 31, y, 33, scratch, need), kInvalid);  // ldx
  EXPECT_EQ(CudaGemm::CheckMatMulArgs(w, x, 3, 32, y, 32, scratch, need), kInvalid);  // ldy
  EXPECT_EQ(CudaGemm::CheckMatMulArgs(w, x, 3, 32, y, 33, scratch, need - 1), kInvalid);
  EXPECT_EQ(CudaGemm::CheckMatMulArgs(w, x, -1, 32, y, 33, scratch, need), kInvalid);
  EXPECT_EQ(CudaGemm::CheckMatMulArgs(w, nullptr, 3, 32, y, 33, scratch, need), kInvalid);
  EXPECT_EQ(CudaGemm::CheckMatMulArgs(w, x, 3, 32, nullptr, 33, scratch, need), kInvalid);
  EXPECT_EQ(CudaGemm::CheckMatMulArgs(w, x, 3, 32, y, 33, nullptr, need), kInvalid);
  EXPECT_EQ(CudaGemm::CheckMatMulArgs(w, nullptr, 0, 32, nullptr, 33, nullptr, 0), 0);
  CudaWeight bad = w;
  bad.dtype = DType::kQ8_0;
  EXPECT_EQ(CudaGemm::CheckMatMulArgs(bad, x, 3, 32, y, 33, scratch, need), kInvalid);
  bad = w;
  bad.data = nullptr;
  EXPECT_EQ(CudaGemm::CheckMatMulArgs(bad, x, 3, 32, y, 33, scratch, need), kInvalid);
  bad = w;
  bad.rows = 0;
  EXPECT_EQ(CudaGemm::CheckMatMulArgs(bad, x, 3, 32, y, 33, scratch, need), kInvalid);
  bad = w;
  bad.cols = int64_t{1} << 31;
  EXPECT_EQ(
      CudaGemm::CheckMatMulArgs(bad, x, 3, int64_t{1} << 31, y, 33, scratch, int64_t{1} << 40),
      kInvalid);
}

TEST(CudaGemmTest, CreateFailsCleanlyWithoutADevice) {
  if (CudaDeviceCount() != 0) GTEST_SKIP() << "a CUDA device is present";
  std::string error;
  const std::unique_ptr<CudaGemm> g = CudaGemm::Create(CudaGemmOptions{}, &error);
  EXPECT_EQ(g, nullptr);
  EXPECT_NE(error.find("cublasCreate failed"), std::string::npos) << error;
  std::string pool_error;
  EXPECT_EQ(cuda::DevicePool::Create(1 << 20, &pool_error), nullptr);
  EXPECT_NE(pool_error.find("cudaMalloc"), std::string::npos) << pool_error;
}

TEST(DevicePoolTest, BumpAllocatorAlignsAndRefusesWhenFull) {
  cuda::BumpAllocator a(4096, 2000);
  uint64_t off = 1;
  ASSERT_TRUE(a.Allocate(100, &off));
  EXPECT_EQ(off, 0u);
  ASSERT_TRUE(a.Allocate(1, &off));
  EXPECT_EQ(off, 256u);  // aligned up past the first 100 bytes
  ASSERT_TRUE(a.Allocate(256, &off));
  EXPECT_EQ(off, 512u);
  EXPECT_EQ(a.used(), 768u);
  EXPECT_FALSE(a.Allocate(0, &off));
  EXPECT_FALSE(a.Allocate(2000 - 768 + 1, &off));  // one byte too many
  EXPECT_EQ(a.used(), 768u);                       // unchanged by the refusal
  ASSERT_TRUE(a.Allocate(2000 - 768, &off));       // exactly the rest
  EXPECT_EQ(off, 768u);
  EXPECT_EQ(a.remaining(), 0u);
  EXPECT_FALSE(a.Allocate(1, &off));
  // used_ not at a 256 boundary and the aligned start past the end: refused, no wrap.
  cuda::BumpAllocator b(0, 300);
  ASSERT_TRUE(b.Allocate(257, &off));
  EXPECT_FALSE(b.Allocate(1, &off));
  EXPECT_FALSE(b.Allocate(UINT64_MAX, &off));
}

// ---- on the device ------------------------------------------------------------------------

TEST(CudaConvertTest, DequantizeToBf16MatchesCpuBitForBit) {
  REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(77);
  for (DType t : testing::WeightDTypes()) {
    const int be = GetDTypeInfo(t).block_elems;
    for (int64_t blocks : {int64_t{1}, int64_t{3}, int64_t{1001}, (int64_t{1} << 24) / be + 5}) {
      const int64_t n = blocks * be;
      SCOPED_TRACE(std::string(DTypeName(t)) + " n=" + std::to_string(n));
      const std::vector<uint8_t> bytes = testing::RandomRowBytes(t, n, rng);
      std::vector<float> f(static_cast<size_t>(n));
      DequantizeRowRef(t, bytes.data(), f.data(), n);
      std::vector<uint16_t> got(static_cast<size_t>(n + kGuard), kSentinel16);
      DeviceBuffer d_src(bytes.size());
      DeviceBuffer d_dst(got.size() * 2);
      ASSERT_CUDA_OK(Upload(d_src, bytes));
      ASSERT_CUDA_OK(Upload(d_dst, got));
      ASSERT_CUDA_OK(CudaConvertWeight(t, d_src.p, d_dst.as<uint16_t>(), n, nullptr));
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      ASSERT_CUDA_OK(Download(&got, d_dst));
      const bool keeps_f16 = DeviceWeightDType(t) == DType::kF16;
      for (int64_t i = 0; i < n; ++i) {
        uint16_t want = F32ToBF16(f[i]);
        if (keeps_f16) std::memcpy(&want, bytes.data() + 2 * i, 2);
        ASSERT_EQ(got[i], want) << "element " << i << " of " << f[i];
      }
      for (int i = 0; i < kGuard; ++i) ASSERT_EQ(got[n + i], kSentinel16) << "past the end";
      if (keeps_f16) {  // CudaDequantizeToBf16 itself also accepts f16: rounded to bf16
        ASSERT_CUDA_OK(CudaDequantizeToBf16(t, d_src.p, d_dst.as<uint16_t>(), n, nullptr));
        ASSERT_CUDA_OK(cudaDeviceSynchronize());
        ASSERT_CUDA_OK(Download(&got, d_dst));
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], F32ToBF16(f[i])) << i;
      }
    }
  }
}

TEST(CudaConvertTest, ActivationsMatchCpuRoundingBitForBit) {
  REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(5);
  for (bool f16 : {false, true}) {
    for (int64_t rows : {1, 3, 17}) {
      const int64_t cols = 1568, ldx = cols + 5;
      std::vector<float> x = RandomMatrix(rows, cols, ldx, rng, 100.0f);
      x[7] = 1e6f;  // overflows f16: inf expected
      std::vector<uint16_t> got(static_cast<size_t>(rows * cols + kGuard), kSentinel16);
      DeviceBuffer d_x(x.size() * 4), d_dst(got.size() * 2);
      ASSERT_CUDA_OK(Upload(d_x, x));
      ASSERT_CUDA_OK(Upload(d_dst, got));
      ASSERT_CUDA_OK(
          f16 ? CudaF32ToF16(d_x.as<float>(), rows, cols, ldx, d_dst.as<uint16_t>(), nullptr)
              : CudaF32ToBf16(d_x.as<float>(), rows, cols, ldx, d_dst.as<uint16_t>(), nullptr));
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      ASSERT_CUDA_OK(Download(&got, d_dst));
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const float v = x[static_cast<size_t>(r * ldx + c)];
          ASSERT_EQ(got[static_cast<size_t>(r * cols + c)], f16 ? F32ToF16(v) : F32ToBF16(v))
              << "row " << r << " col " << c;
        }
      }
      for (int i = 0; i < kGuard; ++i) ASSERT_EQ(got[rows * cols + i], kSentinel16);
    }
  }
}

// One product on the device against MatMulRef on the 16-bit-rounded inputs. The weights
// are q8_0 uploaded through CudaConvertWeight (so bf16 on the device) or random f16 (kept
// f16), ldx = k + 5 and ldy = n + 3 with poisoned padding.
void CheckProduct(CudaGemm& gemm, DType file_dtype, int64_t rows, int64_t k, int64_t n,
                  bool with_bias, std::mt19937& rng) {
  SCOPED_TRACE(std::string(DTypeName(file_dtype)) + " rows=" + std::to_string(rows) +
               " k=" + std::to_string(k) + " n=" + std::to_string(n) + (with_bias ? " bias" : ""));
  const std::vector<float> src = RandomMatrix(n, k, k, rng, 0.5f);
  std::vector<uint8_t> bytes(static_cast<size_t>(*DTypeBytes(file_dtype, n * k)));
  QuantizeRowRef(file_dtype, src.data(), bytes.data(), n * k);
  // The device weight values: dequantized (exact for f16), then rounded to bf16 unless f16.
  const DType dev = DeviceWeightDType(file_dtype);
  std::vector<float> wh(static_cast<size_t>(n * k));
  DequantizeRowRef(file_dtype, bytes.data(), wh.data(), n * k);
  if (dev == DType::kBF16) {
    for (float& v : wh) v = BF16ToF32(F32ToBF16(v));
  }
  const int64_t ldx = k + 5, ldy = n + 3;
  const std::vector<float> x = RandomMatrix(rows, k, ldx, rng);
  std::vector<float> xh = x;  // the rounded activations (padding keeps its poison)
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t i = 0; i < k; ++i) {
      float& v = xh[static_cast<size_t>(m * ldx + i)];
      v = dev == DType::kF16 ? F16ToF32(F32ToF16(v)) : BF16ToF32(F32ToBF16(v));
    }
  }
  const std::vector<float> bias = RandomMatrix(1, n, n, rng);
  std::vector<float> want = PoisonedMatrix(rows, ldy);
  MatMulRef(MatMulParams{WeightView{wh.data(), DType::kF32, n, k}, xh.data(), ldx,
                         with_bias ? bias.data() : nullptr, want.data(), ldy, rows});

  DeviceBuffer d_file(bytes.size()), d_w(static_cast<size_t>(n * k) * 2), d_x(x.size() * 4);
  DeviceBuffer d_y(want.size() * 4), d_bias(bias.size() * 4);
  const int64_t scratch_bytes = CudaGemm::MatMulScratchBytes(rows, k);
  DeviceBuffer d_scratch(static_cast<size_t>(scratch_bytes));
  std::vector<float> got = PoisonedMatrix(rows, ldy);
  ASSERT_CUDA_OK(Upload(d_file, bytes));
  ASSERT_CUDA_OK(Upload(d_x, x));
  ASSERT_CUDA_OK(Upload(d_y, got));
  ASSERT_CUDA_OK(Upload(d_bias, bias));
  ASSERT_CUDA_OK(CudaConvertWeight(file_dtype, d_file.p, d_w.as<uint16_t>(), n * k, nullptr));
  const CudaWeight w{d_w.as<uint16_t>(), dev, n, k};
  ASSERT_CUDA_OK(gemm.MatMul(w, d_x.as<float>(), rows, ldx, d_y.as<float>(), ldy,
                             with_bias ? d_bias.as<float>() : nullptr, d_scratch.p, scratch_bytes));
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  ASSERT_CUDA_OK(Download(&got, d_y));

  const double eps22 = std::ldexp(1.0, -22);
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t j = 0; j < ldy; ++j) {
      const float g = got[static_cast<size_t>(m * ldy + j)];
      if (j >= n) {
        ASSERT_TRUE(IsPoison(g)) << "padding written at row " << m << " col " << j;
        continue;
      }
      double s = 0.0;
      for (int64_t i = 0; i < k; ++i) {
        s += std::fabs(static_cast<double>(xh[static_cast<size_t>(m * ldx + i)]) *
                       wh[static_cast<size_t>(j * k + i)]);
      }
      const double r = want[static_cast<size_t>(m * ldy + j)];
      const double b = with_bias ? std::fabs(bias[static_cast<size_t>(j)]) : 0.0;
      const double tol = static_cast<double>(k) * eps22 * s + eps22 * (std::fabs(r) + b);
      ASSERT_LE(std::fabs(g - r), tol) << "row " << m << " col " << j << ": " << g << " vs " << r;
    }
  }
}

TEST(CudaGemmTest, MatchesReferenceAtAwkwardShapes) {
  REQUIRE_CUDA_DEVICE();
  std::string error;
  const std::unique_ptr<CudaGemm> gemm = CudaGemm::Create(CudaGemmOptions{}, &error);
  ASSERT_NE(gemm, nullptr) << error;
  std::mt19937 rng(99);
  int case_index = 0;
  for (DType t : {DType::kQ8_0, DType::kF16}) {
    for (int64_t rows : {1, 3, 17, 512}) {
      for (int64_t k : {32, 576, 1536 + 32}) {
        for (int64_t n : {1, 33, 960}) {
          CheckProduct(*gemm, t, rows, k, n, /*with_bias=*/(case_index++ % 2) == 0, rng);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

TEST(CudaGemmTest, SameCallGivesSameBits) {
  REQUIRE_CUDA_DEVICE();
  std::string error;
  const std::unique_ptr<CudaGemm> gemm = CudaGemm::Create(CudaGemmOptions{}, &error);
  ASSERT_NE(gemm, nullptr) << error;
  std::mt19937 rng(3);
  const int64_t rows = 17, k = 576, n = 960;
  std::vector<uint16_t> w(static_cast<size_t>(n * k));
  for (auto& v : w) v = F32ToBF16(std::normal_distribution<float>(0.0f, 0.5f)(rng));
  const std::vector<float> x = RandomMatrix(rows, k, k, rng);
  DeviceBuffer d_w(w.size() * 2), d_x(x.size() * 4), d_y(static_cast<size_t>(rows * n) * 4);
  DeviceBuffer d_scratch(static_cast<size_t>(CudaGemm::MatMulScratchBytes(rows, k)));
  ASSERT_CUDA_OK(Upload(d_w, w));
  ASSERT_CUDA_OK(Upload(d_x, x));
  const CudaWeight cw{d_w.as<uint16_t>(), DType::kBF16, n, k};
  std::vector<float> first(static_cast<size_t>(rows * n)), second(first.size());
  for (std::vector<float>* out : {&first, &second}) {
    ASSERT_CUDA_OK(gemm->MatMul(cw, d_x.as<float>(), rows, k, d_y.as<float>(), n, nullptr,
                                d_scratch.p, CudaGemm::MatMulScratchBytes(rows, k)));
    ASSERT_CUDA_OK(cudaDeviceSynchronize());
    ASSERT_CUDA_OK(Download(out, d_y));
  }
  for (size_t i = 0; i < first.size(); ++i) ASSERT_EQ(FloatBits(first[i]), FloatBits(second[i]));
}

TEST(DevicePoolTest, AllocatesAlignedAndReportsExhaustion) {
  REQUIRE_CUDA_DEVICE();
  std::string error;
  const std::unique_ptr<cuda::DevicePool> pool = cuda::DevicePool::Create(1 << 20, &error);
  ASSERT_NE(pool, nullptr) << error;
  EXPECT_EQ(pool->capacity(), uint64_t{1} << 20);
  void* a = nullptr;
  void* b = nullptr;
  ASSERT_CUDA_OK(pool->Allocate(1000, &a));
  ASSERT_CUDA_OK(pool->Allocate(3, &b));
  EXPECT_EQ(a, pool->base());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % 256, 0u);
  EXPECT_EQ(static_cast<uint8_t*>(b) - static_cast<uint8_t*>(a), 1024);
  ASSERT_CUDA_OK(cudaMemset(b, 0x5a, 3));  // the memory is usable
  ASSERT_CUDA_OK(cudaDeviceSynchronize());
  void* c = &error;
  EXPECT_EQ(pool->Allocate(pool->remaining() + 1, &c), static_cast<int>(cudaErrorMemoryAllocation));
  EXPECT_EQ(c, nullptr);
  EXPECT_EQ(pool->Allocate(0, &c), kInvalid);
  EXPECT_EQ(pool->Allocate(16, nullptr), kInvalid);
  // A pool larger than any device: a clean error.
  EXPECT_EQ(cuda::DevicePool::Create(uint64_t{1} << 50, &error), nullptr);
  EXPECT_NE(error.find("cudaMalloc of"), std::string::npos) << error;
}

}  // namespace
}  // namespace mnemo::kernels
