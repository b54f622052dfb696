// Paged attention at the SmolLM2-135M shape (9 query heads, 3 KV heads, head_dim 64, f16
// KV, 16-token blocks, 30 layers per block so tiles are strided as in the engine).
//
// BM_Kernels_PagedAttentionDecode/<isa>/ctx:N/batch:B — one decode row per sequence, each
// sequence with N tokens of context. Bytes = the K and V bytes the call must read
// (B * N * 3 heads * 64 * 2 (k, v) * 2 bytes), so bytes/s compares with memory bandwidth.
// BM_Kernels_PagedAttentionPrefill/<isa>/tokens:N — one causal prefill of N rows; flops =
// 4 * head_dim per (query head, row, visible key) (q.k and p.v), reported as FLOP/s.
// BM_Kernels_KvWrite/<isa>/rows:N — writing N rows of K and V; bytes = f32 read + f16 written.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/half.h"

namespace mnemo::kernels {
namespace {

constexpr int kHeads = 9;
constexpr int kKvHeads = 3;
constexpr int kHeadDim = 64;
constexpr int kLayers = 30;
constexpr int kBlockTokens = 16;

KvLayout SmolLayout() {
  KvLayout l;
  l.n_layers = kLayers;
  l.n_kv_heads = kKvHeads;
  l.head_dim = kHeadDim;
  l.block_tokens = kBlockTokens;
  l.dtype = DType::kF16;
  return l;
}

// B sequences of ctx tokens each, with rows_per_seq query rows at the last positions. The
// blocks of all sequences are interleaved in the arena (scattered tables).
struct Batch {
  KvLayout layout = SmolLayout();
  std::unique_ptr<uint16_t[]> arena;
  int64_t n_slots = 0;
  std::vector<int32_t> q_start{0}, positions, kv_len, table_start{0}, table;
  std::vector<float> q, out, k_new, v_new;

  Batch(int n_seqs, int ctx, int rows_per_seq) {
    const int blocks_per_seq = (ctx + kBlockTokens - 1) / kBlockTokens;
    n_slots = int64_t{n_seqs} * blocks_per_seq;
    // Only layer 0 is touched; the other layers' pages are never read.
    arena.reset(new uint16_t[n_slots * layout.block_elems()]);
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t slot = 0; slot < n_slots; ++slot) {
      for (int is_v = 0; is_v < 2; ++is_v) {
        uint16_t* tile =
            arena.get() + slot * layout.block_elems() + layout.ElemOffset(0, is_v, 0, 0);
        for (int64_t i = 0; i < kKvHeads * layout.tile_elems(); ++i)
          tile[i] = F32ToF16(normal(rng));
      }
    }
    for (int s = 0; s < n_seqs; ++s) {
      for (int b = 0; b < blocks_per_seq; ++b) table.push_back(b * n_seqs + s);
      table_start.push_back(static_cast<int32_t>(table.size()));
      kv_len.push_back(ctx);
      for (int r = ctx - rows_per_seq; r < ctx; ++r) positions.push_back(r);
      q_start.push_back(static_cast<int32_t>(positions.size()));
    }
    const size_t rows = positions.size();
    q.resize(rows * kHeads * kHeadDim);
    for (float& x : q) x = normal(rng);
    out.resize(rows * kHeads * kHeadDim);
    k_new.resize(rows * kKvHeads * kHeadDim);
    v_new.resize(rows * kKvHeads * kHeadDim);
    for (float& x : k_new) x = normal(rng);
    for (float& x : v_new) x = normal(rng);
  }

  BatchSeqs Seqs() const {
    return BatchSeqs{static_cast<int>(kv_len.size()),
                     q_start.data(),
                     positions.data(),
                     kv_len.data(),
                     table_start.data(),
                     table.data()};
  }
  KvArenaView View() const {
    return KvArenaView{layout, reinterpret_cast<uint8_t*>(arena.get()), n_slots};
  }

  AttentionParams Params() {
    AttentionParams p;
    p.kv = View();
    p.layer = 0;
    p.seqs = Seqs();
    p.n_heads = kHeads;
    p.q = q.data();
    p.ldq = kHeads * kHeadDim;
    p.out = out.data();
    p.ldo = kHeads * kHeadDim;
    p.scale = 0.125f;
    return p;
  }
};

void BM_Decode(benchmark::State& state, CpuIsa isa) {
  const int ctx = static_cast<int>(state.range(0));
  const int n_seqs = static_cast<int>(state.range(1));
  Batch batch(n_seqs, ctx, 1);
  const AttentionParams p = batch.Params();
  if (!PagedAttentionForIsa(p, isa)) {
    state.SkipWithError("instruction set not supported here");
    return;
  }
  for (auto _ : state) {
    PagedAttentionForIsa(p, isa);
    benchmark::ClobberMemory();
  }
  const int64_t kv_bytes = int64_t{n_seqs} * ctx * kKvHeads * kHeadDim * 2 * 2;
  state.SetBytesProcessed(state.iterations() * kv_bytes);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * n_seqs,
                                                  benchmark::Counter::kIsRate);
}

void BM_Prefill(benchmark::State& state, CpuIsa isa) {
  const int n = static_cast<int>(state.range(0));
  Batch batch(1, n, n);
  const AttentionParams p = batch.Params();
  if (!PagedAttentionForIsa(p, isa)) {
    state.SkipWithError("instruction set not supported here");
    return;
  }
  for (auto _ : state) {
    PagedAttentionForIsa(p, isa);
    benchmark::ClobberMemory();
  }
  const double visible_keys = 0.5 * n * (n + 1.0);  // causal: row i sees i + 1 keys
  state.counters["FLOP/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * visible_keys * kHeads * 4.0 * kHeadDim,
      benchmark::Counter::kIsRate);
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * n, benchmark::Counter::kIsRate);
}

void BM_KvWrite(benchmark::State& state, CpuIsa isa) {
  const int n = static_cast<int>(state.range(0));
  Batch batch(1, n, n);
  KvWriteParams p;
  p.kv = batch.View();
  p.layer = 0;
  p.seqs = batch.Seqs();
  p.k = batch.k_new.data();
  p.ldk = kKvHeads * kHeadDim;
  p.v = batch.v_new.data();
  p.ldv = kKvHeads * kHeadDim;
  if (!KvWriteForIsa(p, isa)) {
    state.SkipWithError("instruction set not supported here");
    return;
  }
  for (auto _ : state) {
    KvWriteForIsa(p, isa);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * int64_t{n} * kKvHeads * kHeadDim * 2 * (4 + 2));
}

const char* IsaName(CpuIsa isa) {
  return isa == CpuIsa::kAvx512 ? "avx512" : isa == CpuIsa::kAvx2 ? "avx2" : "scalar";
}

const bool kRegistered = [] {
  for (CpuIsa isa : {CpuIsa::kAvx512, CpuIsa::kAvx2, CpuIsa::kScalar}) {
    const std::string suffix = std::string("/") + IsaName(isa);
    benchmark::RegisterBenchmark(("BM_Kernels_PagedAttentionDecode" + suffix).c_str(), BM_Decode,
                                 isa)
        ->ArgNames({"ctx", "batch"})
        ->Args({512, 1})
        ->Args({2048, 1})
        ->Args({8192, 1})
        ->Args({512, 8})
        ->Args({2048, 8})
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("BM_Kernels_PagedAttentionPrefill" + suffix).c_str(), BM_Prefill,
                                 isa)
        ->ArgName("tokens")
        ->Arg(512)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("BM_Kernels_KvWrite" + suffix).c_str(), BM_KvWrite, isa)
        ->ArgName("rows")
        ->Arg(1)
        ->Arg(512)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }
  return true;
}();

}  // namespace
}  // namespace mnemo::kernels
