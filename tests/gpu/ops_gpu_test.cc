// The CUDA dense ops (kernels/cuda/ops.h) against the CPU references (`<Op>Ref`): random
// non-zero inputs at awkward sizes, row strides with poisoned padding and poisoned guard
// floats after the last row (out-of-bounds writes), in-place use, batch invariance, and the
// tolerances of kernels/cuda/ops.h (those of the CPU fast-vs-reference tests). Tests that
// need a device skip without one; argument validation runs everywhere.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/device.h"
#include "kernels/cuda/ops.h"
#include "kernels/dequant.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/kernels/ops_test_util.h"
#include "tests/kernels/quant_test_util.h"

namespace mnemo::kernels {
namespace {

using ::mnemo::testing::FloatBits;
using ::mnemo::testing::IsPoison;
using ::mnemo::testing::PoisonedMatrix;
using ::mnemo::testing::PoisonNaN;
using ::mnemo::testing::RandomMatrix;
using ::mnemo::testing::TouchedGuards;

constexpr float kEps23 = 1.0f / (1 << 23);
constexpr int64_t kGuard = 64;  // poisoned floats after the last row of every output
const int64_t kRows[] = {1, 3, 17};
const int64_t kCols[] = {1, 31, 33, 577, 4097};

// A device copy of a host vector; Download() brings it back after a sync.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host) : n_(host.size()) {
    ok_ = cudaMalloc(reinterpret_cast<void**>(&ptr_), (n_ + 1) * sizeof(T)) == cudaSuccess &&
          cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess;
  }
  ~DeviceArray() { cudaFree(ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  bool ok() const { return ok_; }
  T* get() const { return ptr_; }
  std::vector<T> Download() const {
    std::vector<T> out(n_);
    if (cudaDeviceSynchronize() != cudaSuccess ||
        cudaMemcpy(out.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess) {
      ADD_FAILURE() << "download failed";
    }
    return out;
  }

 private:
  size_t n_ = 0;
  T* ptr_ = nullptr;
  bool ok_ = false;
};

// m followed by kGuard poisoned floats.
std::vector<float> WithGuard(std::vector<float> m) {
  m.resize(m.size() + kGuard, PoisonNaN());
  return m;
}

// The guard floats after rows * ld that lost their poison.
int64_t TouchedTail(const std::vector<float>& m, int64_t rows, int64_t ld) {
  int64_t touched = 0;
  for (int64_t i = rows * ld; i < static_cast<int64_t>(m.size()); ++i) touched += !IsPoison(m[i]);
  return touched;
}

// Runs a launcher on a fresh stream and waits for it.
template <typename Params, typename Launcher>
void RunOnStream(Launcher launcher, const Params& p) {
  cudaStream_t stream = nullptr;
  ASSERT_CUDA_OK(cudaStreamCreate(&stream));
  ASSERT_CUDA_OK(launcher(p, stream));
  ASSERT_CUDA_OK(cudaStreamSynchronize(stream));
  ASSERT_CUDA_OK(cudaStreamDestroy(stream));
}

TEST(OpsGpuTest, EmbeddingMatchesReferenceBitForBit) {
  REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(31);
  for (DType t : ::mnemo::testing::WeightDTypes()) {
    const int64_t be = GetDTypeInfo(t).block_elems;
    for (int64_t cols : {be == 1 ? int64_t{33} : be, be == 1 ? int64_t{4097} : 3 * be}) {
      SCOPED_TRACE(std::string(DTypeName(t)) + " cols " + std::to_string(cols));
      const int64_t vocab = 11;
      const std::vector<uint8_t> table = ::mnemo::testing::RandomRowBytes(t, vocab * cols, rng);
      std::vector<int32_t> ids = {3, 0, 10, 3, 7, 1, 9, 10, 2, 5, 4, 6, 8, 0, 1, 2, 3};
      const int64_t n = static_cast<int64_t>(ids.size());
      const int64_t ld = cols + 5;
      std::vector<float> want = WithGuard(PoisonedMatrix(n, ld));
      EmbeddingParams p{{table.data(), t, vocab, cols}, ids.data(), n, want.data(), ld};
      EmbeddingRef(p);
      DeviceArray<uint8_t> d_table(table);
      DeviceArray<int32_t> d_ids(ids);
      DeviceArray<float> d_out(WithGuard(PoisonedMatrix(n, ld)));
      ASSERT_TRUE(d_table.ok() && d_ids.ok() && d_out.ok());
      p.table.data = d_table.get();
      p.ids = d_ids.get();
      p.out = d_out.get();
      RunOnStream(CudaEmbedding, p);
      const std::vector<float> got = d_out.Download();
      for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(FloatBits(got[i]), FloatBits(want[i])) << i;
    }
  }
}

TEST(OpsGpuTest, EmbeddingFillsRowsOfOutOfRangeIdsWithNaN) {
  REQUIRE_CUDA_DEVICE();
  const int64_t vocab = 4;
  const int64_t cols = 32;
  std::vector<float> table(vocab * cols);
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<float>(i) + 0.5f;
  const std::vector<int32_t> ids = {2, 4, -1, 0};
  DeviceArray<float> d_table(table);
  DeviceArray<int32_t> d_ids(ids);
  DeviceArray<float> d_out(WithGuard(PoisonedMatrix(4, cols)));
  ASSERT_TRUE(d_table.ok() && d_ids.ok() && d_out.ok());
  RunOnStream(CudaEmbedding,
              EmbeddingParams{
                  {d_table.get(), DType::kF32, vocab, cols}, d_ids.get(), 4, d_out.get(), cols});
  const std::vector<float> got = d_out.Download();
  for (int64_t c = 0; c < cols; ++c) {
    EXPECT_EQ(got[c], table[2 * cols + c]);
    EXPECT_TRUE(std::isnan(got[cols + c]) && !IsPoison(got[cols + c]));
    EXPECT_TRUE(std::isnan(got[2 * cols + c]) && !IsPoison(got[2 * cols + c]));
    EXPECT_EQ(got[3 * cols + c], table[c]);
  }
  EXPECT_EQ(TouchedTail(got, 4, cols), 0);
}

// (cols + 4) * 2^-23 relative, as the CPU fast twin (tests/kernels/ops_test.cc): an f32 sum
// of squares in a different order, then the same scale and products. In place gives the
// same bits; each row alone gives the same bits as inside a batch of rows.
TEST(OpsGpuTest, RmsNormMatchesReferenceInPlaceAndBatchInvariant) {
  REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(32);
  for (int64_t rows : kRows) {
    for (int64_t cols : kCols) {
      SCOPED_TRACE("rows " + std::to_string(rows) + " cols " + std::to_string(cols));
      const int64_t ld = cols + 3;
      const std::vector<float> x = WithGuard(RandomMatrix(rows, cols, ld, rng, 3.0f));
      const std::vector<float> w = RandomMatrix(1, cols, cols, rng);
      std::vector<float> want = WithGuard(PoisonedMatrix(rows, ld));
      RmsNormRef({x.data(), ld, w.data(), want.data(), ld, rows, cols, 1e-5f});
      DeviceArray<float> d_x(x), d_w(w), d_y(WithGuard(PoisonedMatrix(rows, ld)));
      DeviceArray<float> d_inplace(x);
      ASSERT_TRUE(d_x.ok() && d_w.ok() && d_y.ok() && d_inplace.ok());
      RunOnStream(CudaRmsNorm,
                  RmsNormParams{d_x.get(), ld, d_w.get(), d_y.get(), ld, rows, cols, 1e-5f});
      RunOnStream(CudaRmsNorm, RmsNormParams{d_inplace.get(), ld, d_w.get(), d_inplace.get(), ld,
                                             rows, cols, 1e-5f});
      const std::vector<float> got = d_y.Download();
      const std::vector<float> inplace = d_inplace.Download();
      const float rel = static_cast<float>(cols + 4) * kEps23;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const float ref = want[r * ld + c];
          ASSERT_NEAR(got[r * ld + c], ref, rel * std::fabs(ref) + 1e-30f) << r << "," << c;
        }
      }
      EXPECT_EQ(TouchedGuards(got, rows, cols, ld), 0);
      EXPECT_EQ(TouchedTail(got, rows, ld), 0);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < ld; ++c) {  // padding: out of place poison, in place x
          const int64_t i = r * ld + c;
          ASSERT_EQ(FloatBits(inplace[i]), FloatBits(c < cols ? got[i] : x[i])) << i;
        }
      }
      // The last row alone.
      DeviceArray<float> d_one(WithGuard(PoisonedMatrix(1, ld)));
      ASSERT_TRUE(d_one.ok());
      RunOnStream(CudaRmsNorm, RmsNormParams{d_x.get() + (rows - 1) * ld, ld, d_w.get(),
                                             d_one.get(), ld, 1, cols, 1e-5f});
      const std::vector<float> one = d_one.Download();
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_EQ(FloatBits(one[c]), FloatBits(got[(rows - 1) * ld + c])) << c;
      }
    }
  }
}

// 2e-6 relative, as the CPU fast twin: CUDA's expf (2 ulps), a division and a product.
void CheckSwiGlu(const std::vector<float>& gate, const std::vector<float>& up, int64_t rows,
                 int64_t cols, int64_t ld) {
  std::vector<float> want = WithGuard(PoisonedMatrix(rows, ld));
  SwiGluRef({gate.data(), ld, up.data(), ld, want.data(), ld, rows, cols});
  DeviceArray<float> d_gate(gate), d_up(up), d_out(WithGuard(PoisonedMatrix(rows, ld)));
  ASSERT_TRUE(d_gate.ok() && d_up.ok() && d_out.ok());
  RunOnStream(CudaSwiGlu,
              SwiGluParams{d_gate.get(), ld, d_up.get(), ld, d_out.get(), ld, rows, cols});
  // In place over gate.
  RunOnStream(CudaSwiGlu,
              SwiGluParams{d_gate.get(), ld, d_up.get(), ld, d_gate.get(), ld, rows, cols});
  const std::vector<float> got = d_out.Download();
  const std::vector<float> inplace = d_gate.Download();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * ld + c;
      ASSERT_TRUE(std::isfinite(got[i])) << "gate " << gate[i];
      ASSERT_NEAR(got[i], want[i], 2e-6f * std::fabs(want[i]) + 1e-37f) << "gate " << gate[i];
      ASSERT_EQ(FloatBits(inplace[i]), FloatBits(got[i])) << i;
    }
  }
  EXPECT_EQ(TouchedGuards(got, rows, cols, ld), 0);
  EXPECT_EQ(TouchedTail(got, rows, ld), 0);
}

TEST(OpsGpuTest, SwiGluMatchesReferenceAndInPlace) {
  REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(33);
  for (int64_t rows : kRows) {
    for (int64_t cols : kCols) {
      SCOPED_TRACE("rows " + std::to_string(rows) + " cols " + std::to_string(cols));
      const int64_t ld = cols + 2;
      CheckSwiGlu(WithGuard(RandomMatrix(rows, cols, ld, rng, 6.0f)),
                  WithGuard(RandomMatrix(rows, cols, ld, rng)), rows, cols, ld);
    }
  }
}

TEST(OpsGpuTest, SwiGluExtremeGates) {
  REQUIRE_CUDA_DEVICE();
  const std::vector<float> gate = {-200.0f, -88.0f, -20.0f, -1e-30f, 0.0f,
                                   1e-30f,  20.0f,  89.0f,  300.0f};
  const int64_t cols = static_cast<int64_t>(gate.size());
  CheckSwiGlu(gate, std::vector<float>(gate.size(), 1.5f), 1, cols, cols);
}

// (2e-6 + cols * 2^-23) relative, as the CPU fast twin. Masked entries give exactly 0, a
// fully masked row all zeros; a row alone gives the same bits as inside the batch.
TEST(OpsGpuTest, SoftmaxMatchesReferenceWithMasksAndBatchInvariant) {
  REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(34);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t rows : kRows) {
    for (int64_t cols :
         {int64_t{1}, int64_t{31}, int64_t{33}, int64_t{577}, int64_t{4097}, int64_t{151936}}) {
      if (cols == 151936 && rows > 3) continue;  // one vocabulary-wide case is enough
      SCOPED_TRACE("rows " + std::to_string(rows) + " cols " + std::to_string(cols));
      const int64_t ld = cols + 2;
      std::vector<float> x = WithGuard(RandomMatrix(rows, cols, ld, rng, 4.0f));
      for (int64_t r = 0; r < rows; ++r) {
        if (cols > 2 && r % 2 == 0) x[r * ld + 1] = kNegInf;
      }
      if (rows > 2) {
        for (int64_t c = 0; c < cols; ++c) x[ld + c] = kNegInf;  // row 1 fully masked
      }
      std::vector<float> want = x;
      SoftmaxRef({want.data(), ld, rows, cols});
      DeviceArray<float> d_x(x);
      const int64_t last = rows - 1;
      DeviceArray<float> d_one(std::vector<float>(x.begin() + last * ld, x.end()));
      ASSERT_TRUE(d_x.ok() && d_one.ok());
      RunOnStream(CudaSoftmax, SoftmaxParams{d_x.get(), ld, rows, cols});
      RunOnStream(CudaSoftmax, SoftmaxParams{d_one.get(), ld, 1, cols});
      const std::vector<float> got = d_x.Download();
      const std::vector<float> one = d_one.Download();
      const float rel = 2e-6f + static_cast<float>(cols) * kEps23;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t i = r * ld + c;
          if (x[i] == kNegInf) {
            ASSERT_EQ(FloatBits(got[i]), FloatBits(0.0f)) << i;
            continue;
          }
          ASSERT_GT(want[i], 0.0f);
          ASSERT_NEAR(got[i], want[i], rel * want[i]) << r << "," << c;
        }
      }
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_EQ(FloatBits(one[c]), FloatBits(got[last * ld + c])) << c;
      }
      EXPECT_EQ(TouchedGuards(got, rows, cols, ld), 0);
      EXPECT_EQ(TouchedTail(got, rows, ld), 0);
    }
  }
}

struct RopeCase {
  RopeMode mode;
  int n_heads;
  int head_dim;
  int rotary_dims;
  int64_t rows;
};

// Against RopeRef: 4 * 2^-23 of the pair's magnitude mscale (|a| + |b|), the bound the CPU
// test puts on the fast twin (same f32 rotation; cos/sin in double rounded once, CUDA's
// double sincos within 2 ulps of double). Elements beyond rotary_dims keep their bits.
TEST(OpsGpuTest, RopeMatchesReference) {
  REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(35);
  const RopeCase cases[] = {
      {RopeMode::kNormal, 3, 64, 64, 1},  {RopeMode::kNeox, 3, 64, 64, 3},
      {RopeMode::kNormal, 2, 48, 32, 3},  {RopeMode::kNeox, 5, 80, 20, 17},
      {RopeMode::kNeox, 1, 6, 6, 17},     {RopeMode::kNormal, 4, 128, 128, 17},
      {RopeMode::kNeox, 32, 128, 128, 3}, {RopeMode::kNormal, 2, 18, 18, 1},
      {RopeMode::kNeox, 8, 256, 64, 3},   {RopeMode::kNormal, 128, 64, 64, 1},
  };
  for (const RopeCase& rc : cases) {
    for (const float mscale : {1.0f, 1.25f}) {
      SCOPED_TRACE("heads " + std::to_string(rc.n_heads) + " head_dim " +
                   std::to_string(rc.head_dim) + " rotary " + std::to_string(rc.rotary_dims) +
                   (rc.mode == RopeMode::kNeox ? " neox" : " normal"));
      RopeFreqConfig fc;
      fc.rotary_dims = rc.rotary_dims;
      const RopeTable table = ComputeRopeTable(fc);
      const int64_t width = static_cast<int64_t>(rc.n_heads) * rc.head_dim;
      const int64_t ld = width + 3;
      const std::vector<float> x = WithGuard(RandomMatrix(rc.rows, width, ld, rng));
      std::vector<int32_t> pos(rc.rows);
      for (int64_t r = 0; r < rc.rows; ++r) pos[r] = static_cast<int32_t>(rng() % 40000);
      pos[0] = 0;
      std::vector<float> want = x;
      RopeParams p{want.data(),    ld,      rc.rows,    rc.n_heads,         rc.head_dim,
                   rc.rotary_dims, rc.mode, pos.data(), table.theta.data(), mscale};
      RopeRef(p);
      DeviceArray<float> d_x(x), d_theta(table.theta);
      DeviceArray<int32_t> d_pos(pos);
      ASSERT_TRUE(d_x.ok() && d_theta.ok() && d_pos.ok());
      p.x = d_x.get();
      p.positions = d_pos.get();
      p.theta = d_theta.get();
      RunOnStream(CudaRope, p);
      const std::vector<float> got = d_x.Download();
      const int half = rc.rotary_dims / 2;
      for (int64_t r = 0; r < rc.rows; ++r) {
        for (int h = 0; h < rc.n_heads; ++h) {
          const int64_t o = r * ld + static_cast<int64_t>(h) * rc.head_dim;
          for (int i = 0; i < half; ++i) {
            const int64_t a = o + (rc.mode == RopeMode::kNormal ? 2 * i : i);
            const int64_t b = o + (rc.mode == RopeMode::kNormal ? 2 * i + 1 : i + half);
            const double tol = 4.0 * std::ldexp(mscale * (std::fabs(x[a]) + std::fabs(x[b])), -23);
            ASSERT_NEAR(got[a], want[a], tol) << "row " << r << " head " << h << " pair " << i;
            ASSERT_NEAR(got[b], want[b], tol) << "row " << r << " head " << h << " pair " << i;
          }
          for (int c = rc.rotary_dims; c < rc.head_dim; ++c) {
            ASSERT_EQ(FloatBits(got[o + c]), FloatBits(x[o + c]));
          }
        }
        if (pos[r] == 0 && mscale == 1.0f) {  // position 0 is the identity
          for (int64_t c = 0; c < width; ++c) ASSERT_EQ(got[r * ld + c], x[r * ld + c]);
        }
      }
      EXPECT_EQ(TouchedGuards(got, rc.rows, width, ld), 0);
      EXPECT_EQ(TouchedTail(got, rc.rows, ld), 0);
    }
  }
}

// y += x is one f32 add: bit-identical to the host's; x == y doubles y.
TEST(OpsGpuTest, AddMatchesHostBitForBit) {
  REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(36);
  for (int64_t rows : kRows) {
    for (int64_t cols : kCols) {
      SCOPED_TRACE("rows " + std::to_string(rows) + " cols " + std::to_string(cols));
      const int64_t ldx = cols + 1;
      const int64_t ldy = cols + 4;
      const std::vector<float> x = RandomMatrix(rows, cols, ldx, rng);
      const std::vector<float> y = WithGuard(RandomMatrix(rows, cols, ldy, rng));
      DeviceArray<float> d_x(x), d_y(y), d_self(y);
      ASSERT_TRUE(d_x.ok() && d_y.ok() && d_self.ok());
      RunOnStream(CudaAdd, AddParams{d_x.get(), ldx, d_y.get(), ldy, rows, cols});
      RunOnStream(CudaAdd, AddParams{d_self.get(), ldy, d_self.get(), ldy, rows, cols});
      const std::vector<float> got = d_y.Download();
      const std::vector<float> self = d_self.Download();
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const float sum = y[r * ldy + c] + x[r * ldx + c];
          ASSERT_EQ(FloatBits(got[r * ldy + c]), FloatBits(sum)) << r << "," << c;
          ASSERT_EQ(FloatBits(self[r * ldy + c]), FloatBits(2.0f * y[r * ldy + c]));
        }
      }
      EXPECT_EQ(TouchedGuards(got, rows, cols, ldy), 0);
      EXPECT_EQ(TouchedTail(got, rows, ldy), 0);
    }
  }
}

// ---- validation: before any CUDA call, so these hold with or without a device ----------

TEST(OpsGpuValidationTest, EmptyShapesEnqueueNothing) {
  EXPECT_EQ(CudaRmsNorm(RmsNormParams{}, nullptr), 0);
  EXPECT_EQ(CudaSwiGlu(SwiGluParams{}, nullptr), 0);
  EXPECT_EQ(CudaSoftmax(SoftmaxParams{}, nullptr), 0);
  EXPECT_EQ(CudaAdd(AddParams{}, nullptr), 0);
  EXPECT_EQ(CudaRope(RopeParams{}, nullptr), 0);
  EXPECT_EQ(CudaEmbedding(EmbeddingParams{{nullptr, DType::kQ4_K, 0, 256}, nullptr, 0, nullptr, 0},
                          nullptr),
            0);
}

TEST(OpsGpuValidationTest, RejectsBadArguments) {
  alignas(16) static float buf[1024];
  alignas(16) static int32_t ints[16];
  float* odd = reinterpret_cast<float*>(reinterpret_cast<char*>(buf) + 2);

  const RmsNormParams norm{buf, 8, buf + 256, buf + 512, 8, 2, 8, 1e-5f};
  auto bad_norm = [&](auto edit) {
    RmsNormParams p = norm;
    edit(p);
    return CudaRmsNorm(p, nullptr);
  };
  EXPECT_EQ(bad_norm([](RmsNormParams& p) { p.rows = -1; }), kInvalid);
  EXPECT_EQ(bad_norm([](RmsNormParams& p) { p.cols = -1; }), kInvalid);
  EXPECT_EQ(bad_norm([](RmsNormParams& p) { p.weight = nullptr; }), kInvalid);
  EXPECT_EQ(bad_norm([](RmsNormParams& p) { p.ldx = 7; }), kInvalid);
  EXPECT_EQ(bad_norm([](RmsNormParams& p) { p.ldy = 7; }), kInvalid);
  EXPECT_EQ(bad_norm([&](RmsNormParams& p) { p.x = odd; }), kInvalid);
  EXPECT_EQ(bad_norm([](RmsNormParams& p) {  // in place with different strides
              p.y = const_cast<float*>(p.x);
              p.ldy = 9;
            }),
            kInvalid);

  const SwiGluParams glu{buf, 8, buf + 256, 8, buf + 512, 8, 2, 8};
  auto bad_glu = [&](auto edit) {
    SwiGluParams p = glu;
    edit(p);
    return CudaSwiGlu(p, nullptr);
  };
  EXPECT_EQ(bad_glu([](SwiGluParams& p) { p.rows = -2; }), kInvalid);
  EXPECT_EQ(bad_glu([](SwiGluParams& p) { p.up = nullptr; }), kInvalid);
  EXPECT_EQ(bad_glu([](SwiGluParams& p) { p.ld_out = 4; }), kInvalid);
  EXPECT_EQ(bad_glu([&](SwiGluParams& p) { p.out = odd; }), kInvalid);

  EXPECT_EQ(CudaSoftmax(SoftmaxParams{buf, 7, 2, 8}, nullptr), kInvalid);
  EXPECT_EQ(CudaSoftmax(SoftmaxParams{nullptr, 8, 2, 8}, nullptr), kInvalid);
  EXPECT_EQ(CudaSoftmax(SoftmaxParams{odd, 8, 2, 8}, nullptr), kInvalid);
  EXPECT_EQ(CudaSoftmax(SoftmaxParams{buf, 8, 2, -8}, nullptr), kInvalid);

  EXPECT_EQ(CudaAdd(AddParams{buf, 8, buf + 4, 8, 2, 8}, nullptr), kInvalid);  // overlap
  EXPECT_EQ(CudaAdd(AddParams{buf, 8, buf, 9, 2, 8}, nullptr), kInvalid);
  EXPECT_EQ(CudaAdd(AddParams{buf, 7, buf + 256, 8, 2, 8}, nullptr), kInvalid);
  EXPECT_EQ(CudaAdd(AddParams{nullptr, 8, buf + 256, 8, 2, 8}, nullptr), kInvalid);
  EXPECT_EQ(CudaAdd(AddParams{odd, 8, buf + 256, 8, 2, 8}, nullptr), kInvalid);

  const RopeParams rope{buf, 64, 2, 2, 32, 32, RopeMode::kNeox, ints, buf + 512, 1.0f};
  auto bad_rope = [&](auto edit) {
    RopeParams p = rope;
    edit(p);
    return CudaRope(p, nullptr);
  };
  EXPECT_EQ(bad_rope([](RopeParams& p) { p.rotary_dims = 31; }), kInvalid);
  EXPECT_EQ(bad_rope([](RopeParams& p) { p.rotary_dims = 34; }), kInvalid);
  EXPECT_EQ(bad_rope([](RopeParams& p) { p.ld = 63; }), kInvalid);
  EXPECT_EQ(bad_rope([](RopeParams& p) { p.positions = nullptr; }), kInvalid);
  EXPECT_EQ(bad_rope([](RopeParams& p) { p.theta = nullptr; }), kInvalid);
  EXPECT_EQ(bad_rope([](RopeParams& p) { p.n_heads = -1; }), kInvalid);
  EXPECT_EQ(bad_rope([](RopeParams& p) { p.mode = static_cast<RopeMode>(7); }), kInvalid);
  EXPECT_EQ(bad_rope([&](RopeParams& p) { p.x = odd; }), kInvalid);

  const EmbeddingParams emb{{buf, DType::kQ8_0, 4, 64}, ints, 2, buf + 512, 64};
  auto bad_emb = [&](auto edit) {
    EmbeddingParams p = emb;
    edit(p);
    return CudaEmbedding(p, nullptr);
  };
  EXPECT_EQ(bad_emb([](EmbeddingParams& p) { p.table.cols = 48; }), kInvalid);  // not 32k
  EXPECT_EQ(bad_emb([](EmbeddingParams& p) { p.table.dtype = DType::kI32; }), kInvalid);
  EXPECT_EQ(bad_emb([](EmbeddingParams& p) { p.table.data = nullptr; }), kInvalid);
  EXPECT_EQ(bad_emb([](EmbeddingParams& p) { p.table.rows = 0; }), kInvalid);
  EXPECT_EQ(bad_emb([](EmbeddingParams& p) { p.ids = nullptr; }), kInvalid);
  EXPECT_EQ(bad_emb([](EmbeddingParams& p) { p.ld_out = 63; }), kInvalid);
  EXPECT_EQ(bad_emb([](EmbeddingParams& p) { p.n = -1; }), kInvalid);
  EXPECT_EQ(bad_emb([](EmbeddingParams& p) {
              p.table.data = reinterpret_cast<const char*>(p.table.data) + 1;
            }),
            kInvalid);
}

}  // namespace
}  // namespace mnemo::kernels
