// BM_Engine_Sample/<mode>/<vocab>: one Sampler::Sample call on a row of logits shaped like a
// language model's (normal, sd 3, with a few tokens well above the rest), without history.
// items/s is tokens sampled per second for one sequence; bytes/s counts the logits read,
// so it compares with memory bandwidth (the row fits in L2 on most machines).
//   greedy:  temperature 0
//   top_p:   temperature 0.8, top_p 0.95 (no top-k: the nucleus is found by partial sorts)
//   top_k:   temperature 0.8, top_k 40, top_p 0.95
//   full:    temperature 1, no truncation (the draw sorts only the head it needs)
#include <benchmark/benchmark.h>

#include <cmath>
#include <string>
#include <vector>

#include "engine/sampling.h"

namespace mnemo::engine {
namespace {

std::vector<float> ModelLikeLogits(int vocab) {
  Rng rng(1);
  std::vector<float> logits(static_cast<size_t>(vocab));
  for (float& v : logits) {
    // Box-Muller from two uniforms (1 - u keeps the log finite).
    const double r = std::sqrt(-2.0 * std::log(1.0 - rng.NextUniform()));
    v = static_cast<float>(3.0 * r * std::cos(6.283185307179586 * rng.NextUniform()));
  }
  for (int i = 0; i < 8; ++i) logits[static_cast<size_t>(rng.NextU64() % vocab)] += 12.0f;
  return logits;
}

void BM_Engine_Sample(benchmark::State& state, SamplingParams params, int vocab) {
  const std::vector<float> logits = ModelLikeLogits(vocab);
  Sampler sampler(params, vocab);
  for (auto _ : state) {
    SampleResult r = sampler.Sample(logits, {}, 0);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * vocab * static_cast<int64_t>(sizeof(float)));
}

const bool kRegistered = [] {
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  SamplingParams top_p;
  top_p.temperature = 0.8f;
  top_p.top_p = 0.95f;
  SamplingParams top_k = top_p;
  top_k.top_k = 40;
  SamplingParams full;
  const std::pair<const char*, SamplingParams> modes[] = {
      {"greedy", greedy}, {"top_p", top_p}, {"top_k", top_k}, {"full", full}};
  for (const auto& [name, params] : modes) {
    for (int vocab : {49152, 151936}) {
      const std::string label =
          std::string("BM_Engine_Sample/") + name + "/" + std::to_string(vocab);
      benchmark::RegisterBenchmark(label.c_str(), BM_Engine_Sample, params, vocab)
          ->Unit(benchmark::kMicrosecond);
    }
  }
  return true;
}();

}  // namespace
}  // namespace mnemo::engine
