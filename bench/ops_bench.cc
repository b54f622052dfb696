// The row-wise ops at SmolLM2-135M shapes (d_model 576, ffn 1536, 9 heads of 64, vocab
// 49152), decode (1 row) and prefill (512 rows). Bytes = f32 bytes read + written, so
// bytes/s compares with BM_Ceiling_MemRead (bench/matmul_bench.cc); at these sizes the
// data stays in cache and the ops are compute-bound (exp, trig).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/dequant.h"
#include "kernels/ops.h"

namespace mnemo::kernels {
namespace {

std::vector<float> RandomFloats(int64_t n, float scale) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = normal(rng);
  return v;
}

void BM_Kernels_RmsNorm(benchmark::State& state) {
  const int64_t rows = state.range(0);
  const int64_t cols = 576;
  std::vector<float> x = RandomFloats(rows * cols, 1.0f);
  const std::vector<float> w = RandomFloats(cols, 1.0f);
  std::vector<float> y(x.size());
  for (auto _ : state) {
    RmsNorm({x.data(), cols, w.data(), y.data(), cols, rows, cols, 1e-5f});
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * rows * cols * 8);
}

void BM_Kernels_SwiGlu(benchmark::State& state) {
  const int64_t rows = state.range(0);
  const int64_t cols = 1536;
  const std::vector<float> g = RandomFloats(rows * cols, 2.0f);
  const std::vector<float> u = RandomFloats(rows * cols, 1.0f);
  std::vector<float> out(g.size());
  for (auto _ : state) {
    SwiGlu({g.data(), cols, u.data(), cols, out.data(), cols, rows, cols});
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * rows * cols * 12);
  state.SetItemsProcessed(state.iterations() * rows * cols);
}

void BM_Kernels_Softmax(benchmark::State& state) {
  const int64_t rows = state.range(0);
  const int64_t cols = state.range(1);
  const std::vector<float> x0 = RandomFloats(rows * cols, 3.0f);
  std::vector<float> x = x0;
  for (auto _ : state) {
    Softmax({x.data(), cols, rows, cols});
    benchmark::DoNotOptimize(x.data());
  }
  state.SetBytesProcessed(state.iterations() * rows * cols * 8);
  state.SetItemsProcessed(state.iterations() * rows * cols);
}

void BM_Kernels_Rope(benchmark::State& state) {
  const int64_t rows = state.range(0);
  const int n_heads = 9;
  const int head_dim = 64;
  RopeFreqConfig fc;
  fc.base = 100000.0f;
  fc.rotary_dims = head_dim;
  const RopeTable table = ComputeRopeTable(fc);
  std::vector<float> x = RandomFloats(rows * n_heads * head_dim, 1.0f);
  std::vector<int32_t> pos(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) pos[r] = static_cast<int32_t>(r + 100);
  for (auto _ : state) {
    Rope({x.data(), n_heads * head_dim, rows, n_heads, head_dim, head_dim, RopeMode::kNeox,
          pos.data(), table.theta.data(), 1.0f});
    benchmark::DoNotOptimize(x.data());
  }
  state.SetBytesProcessed(state.iterations() * rows * n_heads * head_dim * 8);
}

void BM_Kernels_Embedding(benchmark::State& state, DType t) {
  const int64_t rows = state.range(0);
  const int64_t vocab = 4096;
  const int64_t cols = 576;
  const std::vector<float> src = RandomFloats(vocab * cols, 0.1f);
  const int64_t row_bytes = static_cast<int64_t>(*DTypeBytes(t, cols));
  std::vector<uint8_t> table(static_cast<size_t>(vocab * row_bytes));
  for (int64_t r = 0; r < vocab; ++r) {
    QuantizeRowRef(t, src.data() + r * cols, table.data() + r * row_bytes, cols);
  }
  std::vector<int32_t> ids(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) ids[i] = static_cast<int32_t>((i * 977) % vocab);
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (auto _ : state) {
    Embedding({{table.data(), t, vocab, cols}, ids.data(), rows, out.data(), cols});
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * rows * (row_bytes + cols * 4));
}

const bool kRegistered = [] {
  for (int64_t rows : {1, 512}) {
    benchmark::RegisterBenchmark("BM_Kernels_RmsNorm", BM_Kernels_RmsNorm)
        ->Arg(rows)
        ->UseRealTime();
    benchmark::RegisterBenchmark("BM_Kernels_SwiGlu", BM_Kernels_SwiGlu)->Arg(rows)->UseRealTime();
    benchmark::RegisterBenchmark("BM_Kernels_Rope", BM_Kernels_Rope)->Arg(rows)->UseRealTime();
    for (DType t : {DType::kF32, DType::kQ8_0, DType::kQ4_1}) {
      const std::string name = "BM_Kernels_Embedding/" + std::string(DTypeName(t));
      benchmark::RegisterBenchmark(name.c_str(), BM_Kernels_Embedding, t)->Arg(rows)->UseRealTime();
    }
  }
  benchmark::RegisterBenchmark("BM_Kernels_Softmax", BM_Kernels_Softmax)
      ->Args({1, 49152})
      ->Args({9 * 512, 512})
      ->UseRealTime();
  return true;
}();

}  // namespace
}  // namespace mnemo::kernels
