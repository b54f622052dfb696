// End-to-end CPU engine benchmark on SmolLM2-135M-Instruct, against this machine's ceilings
// measured in the same run on the same threads (DESIGN.md 8):
//
//   BM_Ceiling_MemoryRead       sum of a 1 GiB buffer: the DRAM read bandwidth (bytes/s)
//   BM_Ceiling_Sgemm/M/N/K      f32 GEMM rate of oneDNN's sgemm (OpenBLAS without oneDNN)
//   BM_Engine_Decode/1          one decode step of one sequence (context 128..384):
//                               frac_bw_bound = tokens/s / (bandwidth / weight bytes/token)
//   BM_Engine_Prefill/512       a 512-token prompt in one step:
//                               frac_gemm = 2 * params * tokens/s / GEMM rate
//   BM_Engine_Decode/16         one decode step of 16 sequences: x_batch1 = tokens/s / batch 1
//
// Usage: mnemo_e2e_bench [--model=PATH] [--threads=N] [Google Benchmark flags]
// (default model: models/SmolLM2-135M-Instruct.Q4_1.gguf or $MNEMO_SMOLLM2_GGUF; threads:
// every hardware thread). Each benchmark runs 3 times (--benchmark_repetitions=N to change);
// a summary with the fractions of the best runs is printed at the end.
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/parallel_reduce.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cache/block_pool.h"
#include "cache/block_table.h"
#include "engine/forward/llama_forward.h"
#include "engine/model/model.h"

#if defined(MNEMO_BENCH_DNNL)
#include <oneapi/dnnl/dnnl.h>
extern "C" void omp_set_num_threads(int);
#elif defined(MNEMO_BENCH_OPENBLAS)
#include <cblas.h>
extern "C" void openblas_set_num_threads(int);
#endif

namespace mnemo::bench {
namespace {

using engine::LlamaForward;
using engine::LogitRows;
using engine::SeqBatchEntry;
using engine::TokenId;

struct Settings {
  std::string model;
  int threads = 0;
};
Settings& Config() {
  static Settings s;
  return s;
}

// Results the later benchmarks and the summary divide by.
struct Measured {
  double read_bytes_per_s = 0.0;
  double gemm_flops = 0.0;
  std::string gemm_shape;
  double decode1_tokens_per_s = 0.0;
  double decode16_tokens_per_s = 0.0;
  double prefill_tokens_per_s = 0.0;
  double decode_bytes_per_token = 0.0;
  double params = 0.0;
};
Measured& Results() {
  static Measured m;
  return m;
}

tbb::task_arena& Arena() {
  static tbb::task_arena arena(Config().threads);
  return arena;
}

// ---- memory read ceiling --------------------------------------------------------------

__attribute__((target("avx2"))) uint64_t SumAvx2(const uint64_t* p, int64_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  uint64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n; ++i) s += p[i];
  return s;
}

uint64_t SumPlain(const uint64_t* p, int64_t n) {
  uint64_t s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; ++j) s[j] += p[i + j];
  }
  for (; i < n; ++i) s[0] += p[i];
  return s[0] + s[1] + s[2] + s[3];
}

void BM_Ceiling_MemoryRead(benchmark::State& state) {
  constexpr int64_t kBytes = int64_t{1} << 30;
  constexpr int64_t kWords = kBytes / 8;
  auto* buf = static_cast<uint64_t*>(std::aligned_alloc(64, kBytes));
  const bool avx2 = __builtin_cpu_supports("avx2");
  // Each thread touches (first) the part it will read.
  auto range = [&] { return tbb::blocked_range<int64_t>(0, kWords, kWords / 1024); };
  Arena().execute([&] {
    tbb::parallel_for(
        range(),
        [&](const tbb::blocked_range<int64_t>& r) {
          for (int64_t i = r.begin(); i < r.end(); ++i) buf[i] = static_cast<uint64_t>(i);
        },
        tbb::static_partitioner());
  });
  uint64_t sink = 0;
  for (auto _ : state) {
    Arena().execute([&] {
      sink += tbb::parallel_reduce(
          range(), uint64_t{0},
          [&](const tbb::blocked_range<int64_t>& r, uint64_t acc) {
            const int64_t n = r.end() - r.begin();
            return acc + (avx2 ? SumAvx2(buf + r.begin(), n) : SumPlain(buf + r.begin(), n));
          },
          [](uint64_t a, uint64_t b) { return a + b; }, tbb::static_partitioner());
    });
  }
  benchmark::DoNotOptimize(sink);
  state.SetBytesProcessed(state.iterations() * kBytes);
  std::free(buf);
}

// ---- f32 GEMM ceiling -----------------------------------------------------------------

void BM_Ceiling_Sgemm(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  std::vector<float> a(static_cast<size_t>(m * k)), b(static_cast<size_t>(k * n)),
      c(static_cast<size_t>(m * n));
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 17) * 0.01f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 13) * 0.01f;
#if defined(MNEMO_BENCH_DNNL)
  // C[m, n] = A[m, k] * B[k, n]^T laid out as the engine's [out, in] weights.
  auto run = [&] {
    dnnl_sgemm('N', 'T', m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c.data(), n);
  };
#elif defined(MNEMO_BENCH_OPENBLAS)
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), 1.0f, a.data(), static_cast<int>(k), b.data(),
                static_cast<int>(k), 0.0f, c.data(), static_cast<int>(n));
  };
#else
  state.SkipWithError("built without oneDNN or OpenBLAS: no GEMM ceiling");
  auto run = [] {};
#endif
  run();  // warm up (thread pool start, packing buffers)
  for (auto _ : state) {
    run();
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * static_cast<double>(m * n * k);
  state.counters["flops"] = benchmark::Counter(flops * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}

// ---- the engine -----------------------------------------------------------------------

struct Engine {
  std::unique_ptr<engine::Model> model;
  std::unique_ptr<LlamaForward> fwd;
  std::unique_ptr<cache::BlockPool> pool;
  std::vector<float> logits;
};

Engine* GetEngine() {
  static Engine* e = [] {
    auto* eng = new Engine;
    auto model = engine::Model::Open(Config().model);
    if (!model.ok()) {
      std::fprintf(stderr, "e2e_bench: %s\n", std::string(model.status().message()).c_str());
      return static_cast<Engine*>(nullptr);
    }
    eng->model = std::move(*model);
    auto fwd = LlamaForward::Create(*eng->model, {.threads = Config().threads});
    if (!fwd.ok()) {
      std::fprintf(stderr, "e2e_bench: %s\n", std::string(fwd.status().message()).c_str());
      return static_cast<Engine*>(nullptr);
    }
    eng->fwd = std::move(*fwd);
    auto pool = cache::BlockPool::Create(
        {.layout = eng->fwd->KvLayoutFor(kernels::DType::kF16), .budget_bytes = 512ull << 20});
    if (!pool.ok()) return static_cast<Engine*>(nullptr);
    eng->pool = std::move(*pool);
    eng->logits.resize(static_cast<size_t>(eng->fwd->config().vocab_size) * 512);
    Results().decode_bytes_per_token =
        static_cast<double>(eng->fwd->weights().decode_bytes_per_token());
    Results().params = static_cast<double>(eng->model->n_params());
    return eng;
  }();
  return e;
}

std::vector<TokenId> SomeTokens(int64_t n, int vocab, uint32_t seed) {
  std::vector<TokenId> t(static_cast<size_t>(n));
  uint32_t x = seed * 2654435761u + 1u;
  for (TokenId& id : t) {
    x = x * 1664525u + 1013904223u;
    id = static_cast<TokenId>((x >> 8) % static_cast<uint32_t>(vocab));
  }
  return t;
}

// Decode steps of `batch` sequences whose contexts start at 128 + 8 * i tokens; after 256
// steps the sequences are cut back (outside the timing) so the context stays in 128..392.
void BM_Engine_Decode(benchmark::State& state) {
  Engine* e = GetEngine();
  if (e == nullptr) {
    state.SkipWithError("model not available (--model=PATH)");
    return;
  }
  const int batch = static_cast<int>(state.range(0));
  const int vocab = e->fwd->config().vocab_size;
  constexpr int kSteps = 256;
  std::vector<cache::BlockTable> tables(static_cast<size_t>(batch));
  std::vector<std::vector<TokenId>> seqs;
  std::vector<int64_t> base;
  for (int i = 0; i < batch; ++i) {
    base.push_back(128 + 8 * i);
    seqs.push_back(SomeTokens(base.back() + kSteps, vocab, static_cast<uint32_t>(i + 1)));
    if (!tables[i].Reserve(*e->pool, static_cast<int64_t>(seqs.back().size()))) {
      state.SkipWithError("KV pool too small");
      return;
    }
  }
  std::vector<SeqBatchEntry> entries(static_cast<size_t>(batch));
  auto prefill = [&] {
    for (int i = 0; i < batch; ++i) {
      SeqBatchEntry p{.tokens = std::span(seqs[i]).first(static_cast<size_t>(base[i])),
                      .table = &tables[i],
                      .logits = LogitRows::kNone};
      (void)e->fwd->Forward(e->pool->view(), std::span(&p, 1), e->logits.data());
    }
  };
  prefill();
  int step = 0;
  for (auto _ : state) {
    if (step == kSteps) {  // KV rows past base are simply overwritten by the next round
      step = 0;
    }
    for (int i = 0; i < batch; ++i) {
      const int64_t pos = base[i] + step;
      entries[i] = {.tokens = std::span(seqs[i]).subspan(static_cast<size_t>(pos), 1),
                    .start_pos = static_cast<int32_t>(pos),
                    .table = &tables[i],
                    .logits = LogitRows::kLast};
    }
    absl::Status s = e->fwd->Forward(e->pool->view(), entries, e->logits.data());
    if (!s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      break;
    }
    ++step;
  }
  for (auto& t : tables) t.Release(*e->pool);
  const double tokens = static_cast<double>(state.iterations()) * batch;
  state.counters["tokens"] = benchmark::Counter(tokens, benchmark::Counter::kIsRate);
  state.counters["weight_bytes"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * Results().decode_bytes_per_token,
                         benchmark::Counter::kIsRate);
}

void BM_Engine_Prefill(benchmark::State& state) {
  Engine* e = GetEngine();
  if (e == nullptr) {
    state.SkipWithError("model not available (--model=PATH)");
    return;
  }
  const int64_t n = state.range(0);
  const std::vector<TokenId> tokens = SomeTokens(n, e->fwd->config().vocab_size, 99);
  cache::BlockTable table;
  if (!table.Reserve(*e->pool, n)) {
    state.SkipWithError("KV pool too small");
    return;
  }
  SeqBatchEntry entry{.tokens = tokens, .start_pos = 0, .table = &table};
  for (auto _ : state) {
    absl::Status s = e->fwd->Forward(e->pool->view(), std::span(&entry, 1), e->logits.data());
    if (!s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      break;
    }
  }
  table.Release(*e->pool);
  const double tokens_done = static_cast<double>(state.iterations() * n);
  state.counters["tokens"] = benchmark::Counter(tokens_done, benchmark::Counter::kIsRate);
  state.counters["flops"] =
      benchmark::Counter(2.0 * Results().params * tokens_done, benchmark::Counter::kIsRate);
}

// Collects the rates the summary needs as each benchmark finishes: the best repetition of
// each (on a shared machine the best run is the closest to what the hardware allows, for
// the ceilings and for the engine alike).
class Reporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.error_occurred || r.run_type != Run::RT_Iteration) continue;
      const std::string name = r.benchmark_name();
      auto counter = [&](const char* c) {
        auto it = r.counters.find(c);
        return it == r.counters.end() ? 0.0 : it->second.value;
      };
      Measured& m = Results();
      if (name.starts_with("BM_Ceiling_MemoryRead")) {
        m.read_bytes_per_s = std::max(m.read_bytes_per_s, counter("bytes_per_second"));
      } else if (name.starts_with("BM_Ceiling_Sgemm") && counter("flops") > m.gemm_flops) {
        m.gemm_flops = counter("flops");
        m.gemm_shape = name.substr(std::strlen("BM_Ceiling_Sgemm/"));
        m.gemm_shape = m.gemm_shape.substr(0, m.gemm_shape.find("/min_time"));
      } else if (name.starts_with("BM_Engine_Decode/1/")) {
        m.decode1_tokens_per_s = std::max(m.decode1_tokens_per_s, counter("tokens"));
      } else if (name.starts_with("BM_Engine_Decode/16/")) {
        m.decode16_tokens_per_s = std::max(m.decode16_tokens_per_s, counter("tokens"));
      } else if (name.starts_with("BM_Engine_Prefill/")) {
        m.prefill_tokens_per_s = std::max(m.prefill_tokens_per_s, counter("tokens"));
      }
    }
  }
};

void PrintSummary() {
  const Measured& m = Results();
  const double bound = m.decode_bytes_per_token > 0 && m.read_bytes_per_s > 0
                           ? m.read_bytes_per_s / m.decode_bytes_per_token
                           : 0.0;
  const double prefill_rate = 2.0 * m.params * m.prefill_tokens_per_s;
  std::printf("\n== e2e summary (%d threads, %s) ==\n", Config().threads, Config().model.c_str());
  std::printf("memory read ceiling        %8.2f GB/s\n", m.read_bytes_per_s / 1e9);
  std::printf("f32 GEMM ceiling           %8.2f GFLOP/s (%s, %s)\n", m.gemm_flops / 1e9,
#if defined(MNEMO_BENCH_DNNL)
              "oneDNN sgemm",
#elif defined(MNEMO_BENCH_OPENBLAS)
              "OpenBLAS sgemm",
#else
              "none",
#endif
              m.gemm_shape.c_str());
  std::printf("weight bytes per token     %8.2f MB; params %.1f M\n",
              m.decode_bytes_per_token / 1e6, m.params / 1e6);
  std::printf(
      "decode batch 1             %8.2f tokens/s = %.1f%% of the bandwidth bound "
      "(%.1f tokens/s)\n",
      m.decode1_tokens_per_s, bound > 0 ? 100.0 * m.decode1_tokens_per_s / bound : 0.0, bound);
  std::printf(
      "prefill 512                %8.2f tokens/s = %.2f GFLOP/s = %.1f%% of the GEMM "
      "ceiling\n",
      m.prefill_tokens_per_s, prefill_rate / 1e9,
      m.gemm_flops > 0 ? 100.0 * prefill_rate / m.gemm_flops : 0.0);
  std::printf("decode batch 16            %8.2f tokens/s = %.2fx batch 1\n",
              m.decode16_tokens_per_s,
              m.decode1_tokens_per_s > 0 ? m.decode16_tokens_per_s / m.decode1_tokens_per_s : 0.0);
}

}  // namespace
}  // namespace mnemo::bench

int main(int argc, char** argv) {
  using namespace mnemo::bench;
  const char* env_model = std::getenv("MNEMO_SMOLLM2_GGUF");
  Config().model = env_model != nullptr
                       ? env_model
                       : std::string(MNEMO_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  Config().threads = tbb::info::default_concurrency();
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.starts_with("--model=")) {
      Config().model = a.substr(8);
    } else if (a.starts_with("--threads=")) {
      Config().threads = std::max(1, std::atoi(a.c_str() + 10));
    } else {
      rest.push_back(argv[i]);
    }
  }
#if defined(MNEMO_BENCH_DNNL)
  omp_set_num_threads(Config().threads);  // oneDNN's sgemm runs on OpenMP
#elif defined(MNEMO_BENCH_OPENBLAS)
  openblas_set_num_threads(Config().threads);
#endif
  using benchmark::RegisterBenchmark;
  RegisterBenchmark("BM_Ceiling_MemoryRead", BM_Ceiling_MemoryRead)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->MinTime(2.0);
  RegisterBenchmark("BM_Ceiling_Sgemm", BM_Ceiling_Sgemm)
      ->Args({512, 1536, 576})
      ->Args({512, 2048, 2048})
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->MinTime(2.0);
  RegisterBenchmark("BM_Engine_Decode", BM_Engine_Decode)
      ->Arg(1)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->MinTime(3.0);
  RegisterBenchmark("BM_Engine_Prefill", BM_Engine_Prefill)
      ->Arg(512)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->MinTime(3.0);
  RegisterBenchmark("BM_Engine_Decode", BM_Engine_Decode)
      ->Arg(16)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->MinTime(3.0);
  // Three repetitions unless told otherwise (the summary takes the best of them).
  std::string reps = "--benchmark_repetitions=3";
  if (std::none_of(rest.begin(), rest.end(), [](const char* a) {
        return std::string_view(a).starts_with("--benchmark_repetitions");
      })) {
    rest.push_back(reps.data());
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  Reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  PrintSummary();
  return 0;
}
