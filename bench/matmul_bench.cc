// MatMul at SmolLM2-135M shapes, against this machine's measured ceilings.
//
// BM_Ceiling_MemRead: sums a 1 GiB float buffer on every TBB thread (the DRAM read
//   bandwidth a decode step can hope for).
// BM_Kernels_MatMul/<dtype>/<n>x<k>/rows:1: one decode step through one weight matrix.
//   bytes/s counts weight bytes; frac_mem_bw divides by BM_Ceiling_MemRead's rate. The
//   small matrices stay in cache between iterations (L2 is 2 MiB per core here), so they
//   can beat the DRAM ceiling; the 49152 x 576 output head (28 MB in Q8_0) exceeds L2 but
//   may stay in a large L3.
// BM_Kernels_MatMul/<dtype>/<n>x<k>/rows:512: prefill; GFLOP/s = 2 n k rows / time.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/dequant.h"
#include "kernels/dtype.h"
#include "kernels/ops.h"
#include "tbb/blocked_range.h"
#include "tbb/parallel_reduce.h"
#include "tbb/partitioner.h"

namespace mnemo::kernels {
namespace {

constexpr int64_t kCeilingBytes = int64_t{1} << 30;

// Sum of a float buffer in 16 independent lanes per chunk (auto-vectorisable) over TBB.
double ParallelSum(const float* data, int64_t n) {
  return tbb::parallel_reduce(
      tbb::blocked_range<int64_t>(0, n, int64_t{1} << 20), 0.0,
      [&](const tbb::blocked_range<int64_t>& r, double acc) {
        float lanes[16] = {};
        int64_t i = r.begin();
        for (; i + 16 <= r.end(); i += 16) {
          for (int l = 0; l < 16; ++l) lanes[l] += data[i + l];
        }
        for (; i < r.end(); ++i) lanes[0] += data[i];
        for (float l : lanes) acc += l;
        return acc;
      },
      [](double a, double b) { return a + b; }, tbb::static_partitioner());
}

struct Ceiling {
  std::unique_ptr<float[]> buf;
  double gbps = 0.0;
};

Ceiling& MemCeiling() {
  static Ceiling* c = [] {
    auto* ceiling = new Ceiling;
    const int64_t n = kCeilingBytes / 4;
    ceiling->buf.reset(new float[n]);
    std::fill(ceiling->buf.get(), ceiling->buf.get() + n, 1.0f);
    ParallelSum(ceiling->buf.get(), n);  // warm up: page faults
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      benchmark::DoNotOptimize(ParallelSum(ceiling->buf.get(), n));
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::min(best, s);
    }
    ceiling->gbps = static_cast<double>(kCeilingBytes) / best / 1e9;
    return ceiling;
  }();
  return *c;
}

void BM_Ceiling_MemRead(benchmark::State& state) {
  Ceiling& c = MemCeiling();
  const int64_t n = kCeilingBytes / 4;
  for (auto _ : state) benchmark::DoNotOptimize(ParallelSum(c.buf.get(), n));
  state.SetBytesProcessed(state.iterations() * kCeilingBytes);
}

void BM_Kernels_MatMul(benchmark::State& state, DType t, int64_t n, int64_t k, int64_t rows,
                       CpuIsa isa) {
  SetMaxCpuIsa(isa);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const int64_t row_bytes = static_cast<int64_t>(*DTypeBytes(t, k));
  std::vector<uint8_t> w(static_cast<size_t>(row_bytes * n));
  {
    std::vector<float> src(static_cast<size_t>(k));
    for (int64_t r = 0; r < n; ++r) {
      for (float& v : src) v = normal(rng);
      QuantizeRowRef(t, src.data(), w.data() + r * row_bytes, k);
    }
  }
  std::vector<float> x(static_cast<size_t>(rows * k));
  for (float& v : x) v = normal(rng);
  std::vector<float> y(static_cast<size_t>(rows * n));
  const MatMulParams p{{w.data(), t, n, k}, x.data(), k, nullptr, y.data(), n, rows};
  const double mem_gbps = rows == 1 ? MemCeiling().gbps : 0.0;
  for (auto _ : state) {
    MatMul(p);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double iters = static_cast<double>(state.iterations());
  state.SetBytesProcessed(state.iterations() * row_bytes * n);
  state.counters["GFLOP/s"] = benchmark::Counter(
      iters * 2.0 * static_cast<double>(n * k * rows) / 1e9, benchmark::Counter::kIsRate);
  SetMaxCpuIsa(CpuIsa::kAvx512);
  if (rows == 1) {
    // weight bytes per second as a fraction of the measured DRAM read rate
    state.counters["frac_mem_bw"] = benchmark::Counter(
        iters * static_cast<double>(row_bytes * n) / (mem_gbps * 1e9), benchmark::Counter::kIsRate);
  }
}

const bool kRegistered = [] {
  benchmark::RegisterBenchmark("BM_Ceiling_MemRead", BM_Ceiling_MemRead)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  struct Shape {
    int64_t n, k;
  };
  const Shape shapes[] = {{576, 576}, {1536, 576}, {576, 1536}};
  for (int64_t rows : {1, 512}) {
    for (DType t : {DType::kQ4_1, DType::kQ8_0, DType::kF32, DType::kF16}) {
      for (const Shape& s : shapes) {
        const std::string name = "BM_Kernels_MatMul/" + std::string(DTypeName(t)) + "/" +
                                 std::to_string(s.n) + "x" + std::to_string(s.k) +
                                 "/rows:" + std::to_string(rows);
        benchmark::RegisterBenchmark(name.c_str(), BM_Kernels_MatMul, t, s.n, s.k, rows,
                                     CpuIsa::kAvx512)
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
      }
    }
  }
  for (int64_t rows : {1, 2, 4, 16}) {
    const std::string name = "BM_Kernels_MatMul/q8_0/49152x576/rows:" + std::to_string(rows);
    benchmark::RegisterBenchmark(name.c_str(), BM_Kernels_MatMul, DType::kQ8_0, 49152, 576, rows,
                                 CpuIsa::kAvx512)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark("BM_Kernels_MatMul/q8_0/49152x576/rows:1/avx2", BM_Kernels_MatMul,
                               DType::kQ8_0, 49152, 576, 1, CpuIsa::kAvx2)
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
  // The fallback paths, for comparison (the best path this processor has caps these).
  for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kScalar}) {
    for (DType t : {DType::kQ4_1, DType::kQ8_0, DType::kF16}) {
      for (int64_t rows : {1, 512}) {
        if (isa == CpuIsa::kScalar && rows > 1) continue;
        const std::string name = "BM_Kernels_MatMul/" + std::string(DTypeName(t)) +
                                 "/576x1536/rows:" + std::to_string(rows) + "/" + CpuIsaName(isa);
        benchmark::RegisterBenchmark(name.c_str(), BM_Kernels_MatMul, t, 576, 1536, rows, isa)
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
      }
    }
  }
  return true;
}();

}  // namespace
}  // namespace mnemo::kernels
