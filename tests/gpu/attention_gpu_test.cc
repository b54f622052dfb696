// CudaPagedAttention and CudaKvWrite against the CPU references: scattered block tables,
// NaN-poisoned unused KV, guard sentinels around the output, several sequences of different
// lengths in one call (decode rows, prefill chunks, contexts long enough for several
// splits), GQA, sliding windows, f16/bf16; batch invariance bit for bit; KvWrite
// bit-identical to KvWriteRef. Tests that need a device skip without one; argument
// validation runs everywhere.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_math.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_launch.h"
#include "kernels/cuda/device.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/kernels/attention_test_util.h"

namespace mnemo::kernels {
namespace {

using testing::AttnCase;
using testing::AttnFixture;
using testing::BitEqual;
using testing::kSentinel;
using testing::SeqSlice;
using testing::SeqSpec;
using testing::ShapeCase;

// Device copies of host arrays, freed together.
class DeviceArrays {
 public:
  DeviceArrays() = default;
  DeviceArrays(const DeviceArrays&) = delete;
  DeviceArrays& operator=(const DeviceArrays&) = delete;
  ~DeviceArrays() {
    for (void* p : ptrs_) cudaFree(p);
  }
  // A device copy of `count` elements at `src` (nullptr on failure, reported by gtest).
  template <class T>
  T* Copy(const T* src, size_t count) {
    void* d = nullptr;
    const size_t bytes = std::max<size_t>(count * sizeof(T), 4);
    EXPECT_EQ(cudaMalloc(&d, bytes), cudaSuccess);
    if (d == nullptr) return nullptr;
    ptrs_.push_back(d);
    if (count > 0) {
      EXPECT_EQ(cudaMemcpy(d, src, count * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    }
    return static_cast<T*>(d);
  }

 private:
  std::vector<void*> ptrs_;
};

template <class T>
void Download(std::vector<T>* host, const T* device) {
  ASSERT_CUDA_OK(
      cudaMemcpy(host->data(), device, host->size() * sizeof(T), cudaMemcpyDeviceToHost));
}

// Copies the batch `s` (host pointers) of `total_rows` rows to `dev`; returns the same
// batch with device pointers.
BatchSeqs UploadSeqs(const BatchSeqs& s, int64_t total_rows, DeviceArrays* dev) {
  BatchSeqs d = s;
  d.q_start = dev->Copy(s.q_start, s.n_seqs + 1);
  d.positions = dev->Copy(s.positions, total_rows);
  if (s.kv_len != nullptr) d.kv_len = dev->Copy(s.kv_len, s.n_seqs);
  d.table_start = dev->Copy(s.table_start, s.n_seqs + 1);
  d.block_table = dev->Copy(s.block_table, s.table_start[s.n_seqs]);
  return d;
}

// Runs CudaPagedAttention on host-side params `h` (every pointer a host pointer; out
// unused) and returns the output: total_rows rows of h.ldo plus two guard rows, sentinels
// wherever nothing was written. scratch_bytes < 0: the one-pass size.
std::vector<float> RunOnDevice(const AttentionParams& h, int64_t max_kv_len,
                               int64_t scratch_bytes = -1) {
  const int64_t rows = h.seqs.q_start[h.seqs.n_seqs];
  const KvLayout& l = h.kv.layout;
  DeviceArrays dev;
  AttentionParams d = h;
  d.kv.base = dev.Copy(h.kv.base, static_cast<size_t>(h.kv.n_slots * l.block_bytes()));
  d.seqs = UploadSeqs(h.seqs, rows, &dev);
  d.q = dev.Copy(h.q, static_cast<size_t>(rows * h.ldq));
  std::vector<float> out(static_cast<size_t>((rows + 2) * h.ldo), kSentinel);
  d.out = dev.Copy(out.data(), out.size());
  if (scratch_bytes < 0) {
    scratch_bytes = cuda::AttentionScratchBytes(rows, h.n_heads, l.head_dim, max_kv_len);
  }
  std::vector<float> scratch(static_cast<size_t>(scratch_bytes / 4), kSentinel);
  float* d_scratch = dev.Copy(scratch.data(), scratch.size());
  cudaStream_t stream = nullptr;
  EXPECT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  EXPECT_EQ(CudaPagedAttention(d, rows, max_kv_len, d_scratch, scratch_bytes, stream), 0);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
  Download(&out, d.out);
  return out;
}

int MaxKvLen(const AttnCase& c) {
  int m = 0;
  for (const SeqSpec& s : c.seqs) m = std::max(m, s.kv_len);
  return m;
}

// Elements over the CPU fast path's tolerance, |got - ref| <= 1e-5 * (1 + |ref|), plus any
// write outside the output rows' used columns.
void ExpectMatchesReference(const AttnFixture& f, const std::vector<float>& got) {
  std::vector<float> want = f.NewOut();
  PagedAttentionRef(f.Params(want.data()));
  const int64_t used = int64_t{f.c().n_heads} * f.c().head_dim;
  int bad = 0;
  int outside = 0;
  double worst = 0.0;
  for (int64_t r = 0; r < f.rows() + 2; ++r) {
    for (int64_t i = 0; i < f.ldo(); ++i) {
      const float g = got[r * f.ldo() + i];
      if (r >= f.rows() || i >= used) {
        outside += g != kSentinel;
        continue;
      }
      const float w = want[r * f.ldo() + i];
      const double err = std::fabs(double{g} - w) / (1.0 + std::fabs(w));
      if (!(err <= 1e-5)) ++bad;
      if (err > worst || std::isnan(err)) worst = err;
    }
  }
  EXPECT_EQ(bad, 0) << "elements over tolerance; worst relative error " << worst;
  EXPECT_EQ(outside, 0) << "writes outside the output rows";
}

std::vector<AttnCase> Sweep() {
  // head_dim, block_tokens, n_heads, n_kv_heads (GQA 1, 4, 8), window.
  const int shapes[][5] = {
      {64, 16, 4, 4, 0},   {64, 16, 16, 4, 5},  {128, 16, 16, 2, 0}, {128, 7, 8, 8, 700},
      {80, 16, 8, 2, 0},   {256, 16, 8, 1, 33}, {8, 1, 9, 3, 0},     {64, 32, 32, 4, 1000},
      {128, 16, 32, 8, 0}, {96, 5, 12, 3, 513},
  };
  std::vector<AttnCase> cases;
  uint32_t seed = 7;
  for (const auto& s : shapes) {
    for (DType t : {DType::kF16, DType::kBF16}) {
      AttnCase c = ShapeCase(s, t);
      // Decode rows, prefill chunks and full prefills; over kAttnSplitKeys (128) tokens span
      // several splits.
      c.seqs = {{1, 1}, {17, 17}, {100, 1}, {513, 2}, {1500, 1}, {2600, 9}, {16, 16}, {1030, 1}};
      c.seed = seed++;
      c.kv_scale = seed % 3 == 0 ? 3.0f : 1.0f;
      cases.push_back(c);
    }
  }
  return cases;
}

TEST(AttentionGpuTest, MatchesReferenceOverShapes) {
  REQUIRE_CUDA_DEVICE();
  for (const AttnCase& c : Sweep()) {
    SCOPED_TRACE(c.Name());
    AttnFixture f(c);
    std::vector<float> host_out = f.NewOut();
    const std::vector<float> got = RunOnDevice(f.Params(host_out.data()), MaxKvLen(c));
    ExpectMatchesReference(f, got);
  }
}

TEST(AttentionGpuTest, ShortContextsUseNoScratch) {
  REQUIRE_CUDA_DEVICE();
  AttnCase c;
  c.seqs = {{1, 1}, {15, 15}, {kAttnSplitKeys, 3}, {kAttnSplitKeys - 1, 1}};
  AttnFixture f(c);
  std::vector<float> host_out = f.NewOut();
  ASSERT_EQ(cuda::AttentionSplits(kAttnSplitKeys), 1);
  const std::vector<float> got =
      RunOnDevice(f.Params(host_out.data()), kAttnSplitKeys, /*scratch=*/0);
  ExpectMatchesReference(f, got);
}

// Rows [r0, r1) of sequence s of the fixture as a batch of their own with kv_len kv_len,
// as [r1 - r0][n_heads * head_dim].
std::vector<float> RunRows(const AttnFixture& f, int s, int r0, int r1, int32_t kv_len,
                           int64_t scratch_bytes = -1) {
  SeqSlice slice;
  f.Alone(s, r0, r1, kv_len, /*out=*/nullptr, &slice);
  return f.Rows(RunOnDevice(slice.p, kv_len, scratch_bytes), 0, r1 - r0);
}

AttnCase InvarianceCase(DType t) {
  AttnCase c;
  c.head_dim = 80;
  c.block_tokens = 16;
  c.n_heads = 12;
  c.n_kv_heads = 3;
  c.sliding_window = t == DType::kBF16 ? 700 : 0;
  c.dtype = t;
  c.seqs = {{300, 300}, {1200, 1}, {40, 23}, {1, 1}, {2000, 5}};
  c.seed = 77;
  c.kv_scale = 2.0f;
  return c;
}

TEST(AttentionGpuTest, SequenceAloneEqualsSequenceInBatch) {
  REQUIRE_CUDA_DEVICE();
  for (DType t : {DType::kF16, DType::kBF16}) {
    const AttnCase c = InvarianceCase(t);
    AttnFixture f(c);
    std::vector<float> host_out = f.NewOut();
    const std::vector<float> out = RunOnDevice(f.Params(host_out.data()), MaxKvLen(c));
    int r0 = 0;
    for (int s = 0; s < static_cast<int>(c.seqs.size()); ++s) {
      const int r1 = r0 + c.seqs[s].n_rows;
      EXPECT_TRUE(BitEqual(RunRows(f, s, r0, r1, c.seqs[s].kv_len), f.Rows(out, r0, r1)))
          << "seq " << s;
      r0 = r1;
    }
  }
}

// Every prefill row equals a decode step at its position (kv_len = pos + 1; usually fewer
// splits than the batch), a 7-row chunked prefill equals the whole, and a scratch of one
// row (the launcher loops over rows) gives the same bits as a one-pass scratch.
TEST(AttentionGpuTest, PrefillRowsEqualDecodeRowsChunksAndSmallScratch) {
  REQUIRE_CUDA_DEVICE();
  const AttnCase c = InvarianceCase(DType::kF16);
  AttnFixture f(c);
  std::vector<float> host_out = f.NewOut();
  const std::vector<float> out = RunOnDevice(f.Params(host_out.data()), MaxKvLen(c));
  int r0 = 0;
  for (int s = 0; s < static_cast<int>(c.seqs.size()); ++s) {
    const int r1 = r0 + c.seqs[s].n_rows;
    int bad = 0;
    for (int r = r0; r < r1; r += (s == 0 ? 13 : 1)) {
      bad += !BitEqual(RunRows(f, s, r, r + 1, f.positions()[r] + 1), f.Rows(out, r, r + 1));
    }
    EXPECT_EQ(bad, 0) << "decode rows differing from prefill rows, seq " << s;
    for (int c0 = r0; c0 < r1; c0 += 7) {
      const int c1 = std::min(c0 + 7, r1);
      EXPECT_TRUE(BitEqual(RunRows(f, s, c0, c1, f.positions()[c1 - 1] + 1), f.Rows(out, c0, c1)))
          << "chunk at row " << c0 << " of seq " << s;
    }
    r0 = r1;
  }
  std::vector<float> unused;
  const AttentionParams p = f.Params(unused.data());
  const int64_t one_row = cuda::AttentionScratchBytesPerRow(c.n_heads, c.head_dim, MaxKvLen(c));
  ASSERT_GT(one_row, 0);
  EXPECT_TRUE(BitEqual(RunOnDevice(p, MaxKvLen(c), one_row), out));
  EXPECT_TRUE(BitEqual(RunOnDevice(p, MaxKvLen(c), 3 * one_row + 4), out));
}

TEST(AttentionGpuTest, BrokenBlockTableGivesNaNNotACrash) {
  REQUIRE_CUDA_DEVICE();
  AttnCase c;
  c.seqs = {{40, 2}, {30, 1}};
  AttnFixture f(c);
  std::vector<float> unused;
  AttentionParams p = f.Params(unused.data());
  std::vector<int32_t> table = f.block_table();
  table[f.table_start()[1]] = static_cast<int32_t>(f.n_slots()) + 1000;  // seq 1's block 0
  p.seqs.block_table = table.data();
  const std::vector<float> out = RunOnDevice(p, 40);
  const int width = c.n_heads * c.head_dim;
  for (int i = 0; i < width; ++i) {
    EXPECT_TRUE(std::isfinite(out[0 * f.ldo() + i]));
    EXPECT_TRUE(std::isnan(out[2 * f.ldo() + i])) << "seq 1 reads a slot past the arena";
  }
}

// KvWrite: a batch of rows at scattered positions with awkward row strides and special
// values, written on the device and by KvWriteRef into copies of the same poisoned arena.
TEST(KvWriteGpuTest, BitIdenticalToReference) {
  REQUIRE_CUDA_DEVICE();
  for (DType t : {DType::kF16, DType::kBF16}) {
    for (int hd : {8, 64, 80, 128}) {
      SCOPED_TRACE(std::string(t == DType::kF16 ? "f16" : "bf16") + " hd " + std::to_string(hd));
      AttnCase c;
      c.head_dim = hd;
      c.block_tokens = 7;
      c.n_heads = 8;
      c.n_kv_heads = 2;
      c.dtype = t;
      c.seqs = {{30, 30}, {1, 1}, {100, 1}, {45, 9}};
      AttnFixture f(c);
      const int rows = f.rows();
      const int64_t width = int64_t{c.n_kv_heads} * hd;
      const int64_t ld = width + 3;
      std::mt19937 rng(hd);
      std::normal_distribution<float> normal(0.0f, 100.0f);
      std::vector<float> k(static_cast<size_t>(rows * ld)), v(k.size());
      for (float& x : k) x = normal(rng);
      for (float& x : v) x = normal(rng);
      const float specials[] = {0.0f,
                                -0.0f,
                                65504.0f,
                                65520.0f,
                                -65519.0f,
                                1e6f,
                                6e-8f,
                                3e-8f,
                                1e-40f,
                                -1e-45f,
                                1.0009765625f,
                                std::numeric_limits<float>::infinity(),
                                std::numeric_limits<float>::quiet_NaN(),
                                1.00390625f};
      for (size_t i = 0; i < std::size(specials); ++i) k[i * 5 % k.size()] = specials[i];
      std::vector<int32_t> q_start{0}, kv_len;
      for (const SeqSpec& s : c.seqs) {
        q_start.push_back(q_start.back() + s.n_rows);
        kv_len.push_back(s.kv_len);
      }
      KvWriteParams h;
      h.kv = KvArenaView{f.layout(),
                         const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(f.arena().data())),
                         f.n_slots()};
      h.layer = testing::kLayer;
      h.seqs = BatchSeqs{static_cast<int>(c.seqs.size()),
                         q_start.data(),
                         f.positions().data(),
                         kv_len.data(),
                         f.table_start().data(),
                         f.block_table().data()};
      h.k = k.data();
      h.ldk = ld;
      h.v = v.data();
      h.ldv = ld;

      DeviceArrays dev;
      KvWriteParams d = h;
      d.kv.base = dev.Copy(h.kv.base, f.arena().size() * 2);
      d.seqs = UploadSeqs(h.seqs, rows, &dev);
      d.k = dev.Copy(k.data(), k.size());
      d.v = dev.Copy(v.data(), v.size());
      ASSERT_CUDA_OK(CudaKvWrite(d, rows, nullptr));
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      std::vector<uint16_t> got(f.arena().size());
      Download(&got, reinterpret_cast<const uint16_t*>(d.kv.base));

      std::vector<uint16_t> want = f.arena();
      h.kv.base = reinterpret_cast<uint8_t*>(want.data());
      KvWriteRef(h);
      ASSERT_EQ(got.size(), want.size());
      int differ = 0;
      for (size_t i = 0; i < got.size(); ++i) differ += got[i] != want[i];
      EXPECT_EQ(differ, 0) << "arena elements differing from KvWriteRef (writes or untouched)";
    }
  }
}

TEST(AttentionGpuTest, NothingToDoEnqueuesNothing) {
  // Needs no device: nothing is launched and nothing is read.
  AttentionParams p;
  EXPECT_EQ(CudaPagedAttention(p, 0, 0, nullptr, 0, nullptr), 0);
  KvWriteParams w;
  EXPECT_EQ(CudaKvWrite(w, 0, nullptr), 0);
}

TEST(AttentionGpuTest, RejectsBadArgumentsWithoutLaunching) {
  // Host-side fixture arrays stand in for device pointers: validation happens before any
  // CUDA call and never dereferences them, so these hold with or without a device.
  AttnCase c;
  c.seqs = {{1000, 2}, {10, 1}};
  AttnFixture f(c);
  std::vector<float> out = f.NewOut();
  const AttentionParams good = f.Params(out.data());
  const int64_t rows = f.rows();
  const int64_t one_row = cuda::AttentionScratchBytesPerRow(c.n_heads, c.head_dim, 1000);
  std::vector<float> scratch_buf(static_cast<size_t>(one_row / 4));
  float* const scratch = scratch_buf.data();
  auto run = [&](const AttentionParams& p, int64_t max_kv = 1000, bool with_scratch = true,
                 int64_t bytes = -1) {
    return CudaPagedAttention(p, rows, max_kv, with_scratch ? scratch : nullptr,
                              bytes < 0 ? one_row : bytes, nullptr);
  };
  AttentionParams p = good;
  p.n_heads = 7;  // not a multiple of n_kv_heads = 4
  EXPECT_EQ(run(p), kInvalid);
  p = good;
  p.kv.layout.head_dim = 257;
  p.ldq = p.ldo = int64_t{1} << 20;
  EXPECT_EQ(run(p), kInvalid);
  p = good;
  p.kv.layout.dtype = DType::kF32;
  EXPECT_EQ(run(p), kInvalid);
  p = good;
  p.layer = testing::kLayers;
  EXPECT_EQ(run(p), kInvalid);
  p = good;
  p.ldo = int64_t{c.n_heads} * c.head_dim - 1;
  EXPECT_EQ(run(p), kInvalid);
  p = good;
  p.q = nullptr;
  EXPECT_EQ(run(p), kInvalid);
  p = good;
  p.seqs.kv_len = nullptr;
  EXPECT_EQ(run(p), kInvalid);
  p = good;
  p.out = reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(out.data()) + 2);
  EXPECT_EQ(run(p), kInvalid);
  EXPECT_EQ(run(good, -1), kInvalid);
  EXPECT_EQ(CudaPagedAttention(good, -1, 1000, scratch, one_row, nullptr), kInvalid);
  EXPECT_EQ(run(good, 1000, false), kInvalid) << "several splits need a scratch";
  EXPECT_EQ(run(good, 1000, true, one_row - 1), kInvalid) << "scratch below one row";

  std::vector<float> k(static_cast<size_t>(rows) * c.n_kv_heads * c.head_dim);
  KvWriteParams w;
  w.kv = good.kv;
  w.layer = good.layer;
  w.seqs = good.seqs;
  w.k = k.data();
  w.v = k.data();
  w.ldk = w.ldv = int64_t{c.n_kv_heads} * c.head_dim;
  KvWriteParams bad = w;
  bad.ldv -= 1;
  EXPECT_EQ(CudaKvWrite(bad, rows, nullptr), kInvalid);
  bad = w;
  bad.k = nullptr;
  EXPECT_EQ(CudaKvWrite(bad, rows, nullptr), kInvalid);
  bad = w;
  bad.kv.layout.dtype = DType::kQ8_0;
  EXPECT_EQ(CudaKvWrite(bad, rows, nullptr), kInvalid);
  bad = w;
  bad.kv.base = nullptr;
  EXPECT_EQ(CudaKvWrite(bad, rows, nullptr), kInvalid);
  bad = w;
  bad.seqs.positions = nullptr;
  EXPECT_EQ(CudaKvWrite(bad, rows, nullptr), kInvalid);
  EXPECT_EQ(CudaKvWrite(w, -1, nullptr), kInvalid);
}

// CudaAttentionMass against the CPU's AttentionMass over the same fixture: f32 scores and
// atomic sums on the device, so a small relative tolerance rather than the same bits.
TEST(AttentionGpuTest, AttentionMassMatchesTheCpu) {
  REQUIRE_CUDA_DEVICE();
  for (int window : {0, 5}) {
    for (DType t : {DType::kF16, DType::kBF16}) {
      AttnCase c;
      c.n_heads = 9;
      c.n_kv_heads = 3;
      c.dtype = t;
      c.sliding_window = window;
      c.seqs = {{300, 40}};
      c.kv_scale = 2.0f;
      SCOPED_TRACE(c.Name());
      AttnFixture f(c);
      std::vector<float> host_out = f.NewOut();
      const AttentionParams h = f.Params(host_out.data());
      std::vector<float> want(300, 0.0f);
      AttentionMass(h, 8, want.data());
      DeviceArrays dev;
      AttentionParams d = h;
      d.kv.base =
          dev.Copy(h.kv.base, static_cast<size_t>(h.kv.n_slots * h.kv.layout.block_bytes()));
      d.seqs = UploadSeqs(h.seqs, f.rows(), &dev);
      d.q = dev.Copy(h.q, static_cast<size_t>(f.rows() * h.ldq));
      d.out = nullptr;
      std::vector<float> got(300, 0.0f);
      float* d_mass = dev.Copy(got.data(), got.size());
      ASSERT_EQ(CudaAttentionMass(d, 8, f.rows(), d_mass, nullptr), 0);
      ASSERT_CUDA_OK(cudaDeviceSynchronize());
      Download(&got, d_mass);
      for (size_t j = 0; j < got.size(); ++j) {
        EXPECT_NEAR(got[j], want[j], 1e-4 * (1.0 + want[j])) << "key " << j;
      }
    }
  }
}

TEST(AttentionGpuTest, AttentionMassRefusesBadArguments) {
  AttnCase c;
  c.seqs = {{20, 4}};
  AttnFixture f(c);
  std::vector<float> out = f.NewOut();
  const AttentionParams p = f.Params(out.data());
  float mass[20];
  EXPECT_EQ(CudaAttentionMass(p, -1, f.rows(), mass, nullptr), kInvalid);
  EXPECT_EQ(CudaAttentionMass(p, 0, f.rows(), nullptr, nullptr), kInvalid);
  AttentionParams bad = p;
  bad.n_heads = 5;  // not a multiple of the KV heads
  EXPECT_EQ(CudaAttentionMass(bad, 0, f.rows(), mass, nullptr), kInvalid);
  EXPECT_EQ(CudaAttentionMass(p, f.rows(), f.rows(), mass, nullptr), 0);  // nothing observed
}

}  // namespace
}  // namespace mnemo::kernels
