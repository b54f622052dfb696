// BM_Kernels_DequantRef/<dtype>: the scalar reference dequantizer on one row of 1M
// elements (random data quantized with QuantizeRowRef). Bytes = quantized bytes read +
// f32 bytes written, so bytes/s compares with the machine's memory bandwidth; the row
// (about 4-8 MB) is larger than most L2 caches.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/dequant.h"
#include "kernels/dtype.h"

namespace mnemo::kernels {
namespace {

constexpr int64_t kElems = int64_t{1} << 20;

void BM_Kernels_DequantRef(benchmark::State& state, DType t) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> x(kElems);
  for (float& v : x) v = normal(rng);
  const uint64_t src_bytes = *DTypeBytes(t, kElems);
  std::vector<uint8_t> q(src_bytes);
  QuantizeRowRef(t, x.data(), q.data(), kElems);
  std::vector<float> y(kElems);
  for (auto _ : state) {
    DequantizeRowRef(t, q.data(), y.data(), kElems);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(src_bytes + kElems * 4));
  state.SetItemsProcessed(state.iterations() * kElems);
}

const bool kRegistered = [] {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_0, DType::kQ4_1,
                  DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    const std::string name = "BM_Kernels_DequantRef/" + std::string(DTypeName(t));
    benchmark::RegisterBenchmark(name.c_str(), BM_Kernels_DequantRef, t)
        ->Unit(benchmark::kMicrosecond);
  }
  return true;
}();

}  // namespace
}  // namespace mnemo::kernels
