// The CUDA forward pass (engine/forward/cuda_forward.h) against the CPU one (LlamaForward),
// step by step on the same tokens: a prefill, then decode steps. Tests that need a device
// skip without one; the no-device error path runs everywhere.
//
// Tolerance (derived here, not yet measured on a GPU). The CPU fast path is nearly exact:
// f32/f16/bf16 weights are used as stored with f32 activations, quantized weights meet
// activations quantized to int16 per 32-element block (relative error ~2^-16). The device
// path rounds every weight to bf16 at upload (f16 stays f16) and every activation entering
// a product to bf16: 8 significant bits, relative error <= 2^-9 per operand, so each term
// x_k w_k carries a relative error up to ~2^-8 with independent signs. A product's output
// (typical size sqrt(sum_k (x_k w_k)^2) for these weights) is then off by ~2^-8 ~ 4e-3 of
// its size; a logit sits behind ~4 products per layer in series plus the head, so over L
// layers its error is ~4e-3 * sqrt(4 L + 1): ~1.2e-2 for the 2-layer test models and
// stories260K (5 layers: 1.8e-2), measured against the row's max |logit|, which is about
// half the row's range (max - min). We allow kTolSmall = 3e-2 of the range. SmolLM2 (30
// layers, 4.4e-2 by the same count) gets kTolDeep = 6e-2. A broken op (a wrong RoPE pair,
// a missing bias, a misindexed head or KV block) moves logits by a sizable fraction of the
// range, far beyond these. Greedy choices: random test models have flat logits (near-ties
// flip under that error), so most steps must agree there; real models' peaked rows must
// agree on 80% of steps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cache/block_pool.h"
#include "cache/block_table.h"
#include "engine/forward/forward.h"
#include "engine/forward/llama_forward.h"
#include "engine/model/model.h"
#include "engine/model/test_model.h"
#include "engine/model/tokenizer.h"
#include "kernels/cuda/device.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using kernels::DType;

#define REQUIRE_CUDA_DEVICE()                                                             \
  do {                                                                                    \
    if (kernels::CudaDeviceCount() == 0) {                                                \
      GTEST_SKIP() << "no CUDA device: cudaGetDeviceCount found none (no GPU or driver)"; \
    }                                                                                     \
  } while (0)

constexpr double kTolSmall = 3e-2;
constexpr double kTolDeep = 6e-2;

// A forward pass with a block pool in its own memory (device memory for CUDA).
struct Backend {
  std::unique_ptr<ForwardPass> fwd;
  std::unique_ptr<cache::BlockPool> pool;  // destroyed before fwd (its memory)

  static std::unique_ptr<Backend> Make(const Model& model, Device device) {
    auto b = std::make_unique<Backend>();
    auto f = CreateForwardPass(model, {.device = device, .threads = 2});
    EXPECT_TRUE(f.ok()) << f.status();
    if (!f.ok()) return nullptr;
    b->fwd = std::move(*f);
    auto pool = cache::BlockPool::Create({.layout = b->fwd->KvLayoutFor(DType::kF16),
                                          .budget_bytes = 64ull << 20,
                                          .memory = b->fwd->kv_memory()});
    EXPECT_TRUE(pool.ok()) << pool.status();
    if (!pool.ok()) return nullptr;
    b->pool = std::move(*pool);
    return b;
  }
};

int Argmax(const std::vector<float>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

// The logits of each step of: prefill(tokens[0, prefill)), then one token per step up to
// tokens.size() (teacher forcing, so both backends see the same tokens).
std::vector<std::vector<float>> StepLogits(Backend& b, const std::vector<TokenId>& tokens,
                                           size_t prefill) {
  const int vocab = b.fwd->config().vocab_size;
  cache::BlockTable table;
  EXPECT_TRUE(table.Reserve(*b.pool, static_cast<int64_t>(tokens.size())));
  std::vector<std::vector<float>> out;
  for (size_t done = 0; done < tokens.size();) {
    const size_t n = done == 0 ? prefill : 1;
    SeqBatchEntry e{.tokens = std::span(tokens).subspan(done, n),
                    .start_pos = static_cast<int32_t>(done),
                    .table = &table};
    std::vector<float> logits(static_cast<size_t>(vocab));
    const absl::Status s = b.fwd->Forward(b.pool->view(), std::span(&e, 1), logits.data());
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) break;
    out.push_back(std::move(logits));
    done += n;
  }
  table.Release(*b.pool);
  return out;
}

// Greedy continuation on the CPU: prompt + n generated tokens.
std::vector<TokenId> CpuGreedy(Backend& cpu, std::vector<TokenId> seq, int n) {
  for (int i = 0; i < n; ++i) {
    const auto steps = StepLogits(cpu, seq, seq.size());
    if (steps.empty()) break;
    seq.push_back(Argmax(steps.back()));
  }
  return seq;
}

struct Comparison {
  double max_rel_error = 0.0;  // max over steps of max |gpu - cpu| / (max - min of cpu)
  int same_top1 = 0;
  int steps = 0;
};

Comparison Compare(const std::vector<std::vector<float>>& cpu,
                   const std::vector<std::vector<float>>& gpu) {
  Comparison c;
  EXPECT_EQ(cpu.size(), gpu.size());
  for (size_t s = 0; s < std::min(cpu.size(), gpu.size()); ++s) {
    const auto [lo, hi] = std::minmax_element(cpu[s].begin(), cpu[s].end());
    const double range = std::max(1e-6, static_cast<double>(*hi - *lo));
    double diff = 0.0;
    for (size_t v = 0; v < cpu[s].size(); ++v) {
      diff = std::max(diff, std::abs(static_cast<double>(gpu[s][v]) - cpu[s][v]));
    }
    c.max_rel_error = std::max(c.max_rel_error, diff / range);
    c.same_top1 += Argmax(cpu[s]) == Argmax(gpu[s]) ? 1 : 0;
    ++c.steps;
  }
  return c;
}

// Prefill of `prompt`, then CPU-greedy decode steps; logits of both backends compared.
void CheckModel(const Model& model, const std::vector<TokenId>& prompt, int decode_steps,
                double tol, double min_same_top1, const std::string& what) {
  auto cpu = Backend::Make(model, Device{});
  auto gpu = Backend::Make(model, Device{.kind = Device::Kind::kCuda, .index = 0});
  ASSERT_NE(cpu, nullptr);
  ASSERT_NE(gpu, nullptr);
  EXPECT_FALSE(gpu->pool->memory().host_accessible());
  const std::vector<TokenId> seq = CpuGreedy(*cpu, prompt, decode_steps);
  const Comparison c =
      Compare(StepLogits(*cpu, seq, prompt.size()), StepLogits(*gpu, seq, prompt.size()));
  std::printf("[%s] max |gpu - cpu| / logit range %.3g over %d steps, same top-1 on %d\n",
              what.c_str(), c.max_rel_error, c.steps, c.same_top1);
  EXPECT_LE(c.max_rel_error, tol) << what;
  // Near-ties may flip under bf16 rounding.
  EXPECT_GE(c.same_top1, min_same_top1 * c.steps) << what;
}

using testing::SomeTokens;

std::unique_ptr<Model> OpenTestModel(Architecture arch, DType dtype, bool tied = false) {
  TestModelOptions o;
  o.arch = arch;
  o.dtype = dtype;
  o.tied_embeddings = tied;
  const std::string path = testing::MakeTempDir() + "/m.gguf";
  EXPECT_TRUE(WriteTestModel(o, path).ok());
  auto model = Model::Open(path);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

// A real prompt's ids (real models' logits are peaked on real text).
std::vector<TokenId> Encode(const Model& model, const std::string& text) {
  auto tok = Tokenizer::Create(model.tokenizer_data());
  EXPECT_TRUE(tok.ok()) << tok.status();
  if (!tok.ok()) return {1};
  const std::vector<TokenId> ids = (*tok)->Encode(text, {});
  EXPECT_FALSE(ids.empty());
  return ids.empty() ? std::vector<TokenId>{1} : ids;
}

TEST(CudaForward, FailedPreconditionWithoutADevice) {
  if (kernels::CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present";
  auto model = OpenTestModel(Architecture::kLlama, DType::kF32);
  ASSERT_NE(model, nullptr);
  auto f = CreateForwardPass(*model, {.device = {.kind = Device::Kind::kCuda, .index = 0}});
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kFailedPrecondition) << f.status();
}

TEST(CudaForward, TestModelsMatchCpu) {
  REQUIRE_CUDA_DEVICE();
  struct Case {
    Architecture arch;
    DType dtype;
    bool tied;
  };
  // qwen2: QKV biases; qwen3: QK-norm (unfused Q/K/V path); F16: weights kept f16;
  // quantized: dequantized to bf16 at upload; tied: the embedding is also the head.
  const Case cases[] = {
      {Architecture::kLlama, DType::kF32, false},  {Architecture::kMistral, DType::kF32, false},
      {Architecture::kQwen2, DType::kF32, false},  {Architecture::kQwen3, DType::kF32, false},
      {Architecture::kLlama, DType::kF16, false},  {Architecture::kLlama, DType::kQ4_K, false},
      {Architecture::kQwen2, DType::kQ8_0, false}, {Architecture::kLlama, DType::kF32, true},
  };
  for (const Case& c : cases) {
    auto model = OpenTestModel(c.arch, c.dtype, c.tied);
    ASSERT_NE(model, nullptr);
    const std::string what = absl::StrCat(static_cast<int>(c.arch), "/", static_cast<int>(c.dtype),
                                          c.tied ? "/tied" : "");
    CheckModel(*model, SomeTokens(9, kTestModelVocabSize, 3), 12, kTolSmall, 0.5, what);
  }
}

TEST(CudaForward, Stories260KMatchesCpu) {
  REQUIRE_CUDA_DEVICE();
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  auto model = Model::Open(testing::StoriesGgufPath());
  ASSERT_TRUE(model.ok()) << model.status();
  CheckModel(**model, Encode(**model, "Once upon a time, there was a little"), 24, kTolSmall, 0.8,
             "stories260K");
}

TEST(CudaForward, SmolLm2MatchesCpu) {
  REQUIRE_CUDA_DEVICE();
  MNEMO_REQUIRE_FILE(testing::SmolLm2GgufPath());
  auto model = Model::Open(testing::SmolLm2GgufPath());
  ASSERT_TRUE(model.ok()) << model.status();
  CheckModel(**model, Encode(**model, "The capital of France is Paris. The capital of Italy is"),
             16, kTolDeep, 0.8, "SmolLM2");
}

// Several sequences of different lengths in one step against each alone: every op but the
// cuBLAS products is batch invariant on the device (docs/cuda.md); cuBLAS may pick another
// algorithm for another row count, so logits are compared within the tolerance (not bits)
// and the greedy choice must agree.
TEST(CudaForward, BatchMatchesEachAlone) {
  REQUIRE_CUDA_DEVICE();
  auto model = OpenTestModel(Architecture::kQwen2, DType::kF32);
  ASSERT_NE(model, nullptr);
  auto gpu = Backend::Make(*model, Device{.kind = Device::Kind::kCuda, .index = 0});
  ASSERT_NE(gpu, nullptr);
  const int vocab = gpu->fwd->config().vocab_size;
  const std::vector<std::vector<TokenId>> prompts = {
      SomeTokens(3, vocab, 1), SomeTokens(17, vocab, 2), SomeTokens(40, vocab, 3)};
  // Alone: each sequence's prefill in a step of its own.
  std::vector<std::vector<float>> alone;
  for (const auto& p : prompts) {
    const auto steps = StepLogits(*gpu, p, p.size());
    ASSERT_EQ(steps.size(), 1u);
    alone.push_back(steps[0]);
  }
  // Together: one step with every prefill, then one decode step of all three.
  std::vector<cache::BlockTable> tables(prompts.size());
  std::vector<SeqBatchEntry> batch;
  for (size_t s = 0; s < prompts.size(); ++s) {
    ASSERT_TRUE(tables[s].Reserve(*gpu->pool, static_cast<int64_t>(prompts[s].size()) + 1));
    batch.push_back({.tokens = prompts[s], .start_pos = 0, .table = &tables[s]});
  }
  std::vector<float> logits(prompts.size() * static_cast<size_t>(vocab));
  ASSERT_TRUE(gpu->fwd->Forward(gpu->pool->view(), batch, logits.data()).ok());
  std::vector<std::vector<float>> together;
  for (size_t s = 0; s < prompts.size(); ++s) {
    together.emplace_back(logits.begin() + static_cast<ptrdiff_t>(s * vocab),
                          logits.begin() + static_cast<ptrdiff_t>((s + 1) * vocab));
  }
  const Comparison c = Compare(alone, together);
  std::printf("batch vs alone: max rel error %.3g, same top-1 %d of %d\n", c.max_rel_error,
              c.same_top1, c.steps);
  EXPECT_EQ(c.same_top1, c.steps);
  EXPECT_LE(c.max_rel_error, kTolSmall);
  // A batched decode step after the batched prefill: each sequence's next token.
  std::vector<std::vector<TokenId>> next(prompts.size());
  for (size_t s = 0; s < prompts.size(); ++s) {
    next[s] = {Argmax(together[s])};
    batch[s] = {.tokens = next[s],
                .start_pos = static_cast<int32_t>(prompts[s].size()),
                .table = &tables[s]};
  }
  ASSERT_TRUE(gpu->fwd->Forward(gpu->pool->view(), batch, logits.data()).ok());
  for (size_t s = 0; s < prompts.size(); ++s) {
    std::vector<TokenId> seq = prompts[s];
    seq.push_back(next[s][0]);
    const auto steps = StepLogits(*gpu, seq, prompts[s].size());  // alone: prefill, decode
    ASSERT_EQ(steps.size(), 2u);
    const std::vector<float> row(logits.begin() + static_cast<ptrdiff_t>(s * vocab),
                                 logits.begin() + static_cast<ptrdiff_t>((s + 1) * vocab));
    EXPECT_EQ(Argmax(row), Argmax(steps[1])) << "sequence " << s;
  }
  for (auto& t : tables) t.Release(*gpu->pool);
}

// Bad batches give the CPU path's error codes, write nothing and leave the pass usable.
TEST(CudaForward, ErrorsMatchCpu) {
  REQUIRE_CUDA_DEVICE();
  auto model = OpenTestModel(Architecture::kLlama, DType::kF32);
  ASSERT_NE(model, nullptr);
  auto cpu = Backend::Make(*model, Device{});
  auto gpu = Backend::Make(*model, Device{.kind = Device::Kind::kCuda, .index = 0});
  ASSERT_NE(cpu, nullptr);
  ASSERT_NE(gpu, nullptr);
  const int vocab = gpu->fwd->config().vocab_size;
  auto run = [&](Backend& b, const std::vector<TokenId>& tokens, int64_t reserve) {
    cache::BlockTable table;
    EXPECT_TRUE(table.Reserve(*b.pool, reserve));
    SeqBatchEntry e{.tokens = tokens, .start_pos = 0, .table = &table};
    std::vector<float> logits(static_cast<size_t>(vocab));
    const absl::Status s = b.fwd->Forward(b.pool->view(), std::span(&e, 1), logits.data());
    table.Release(*b.pool);
    return s.code();
  };
  const std::vector<TokenId> bad_id = {1, vocab, 2};
  EXPECT_EQ(run(*gpu, bad_id, 3), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(run(*gpu, bad_id, 3), run(*cpu, bad_id, 3));
  const std::vector<TokenId> long_seq = SomeTokens(40, vocab, 9);
  EXPECT_EQ(run(*gpu, long_seq, 16), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(run(*gpu, long_seq, 16), run(*cpu, long_seq, 16));
  EXPECT_EQ(run(*gpu, long_seq, 40), absl::StatusCode::kOk);
}

// `mnemo generate --device cuda` end to end: same greedy story start as on the CPU.
TEST(CudaForward, GenerateCommandOnDevice) {
  REQUIRE_CUDA_DEVICE();
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  if (!testing::FileExists(testing::MnemoBinary())) GTEST_SKIP() << "mnemo is not built";
  auto generate = [](const std::string& device) {
    return testing::RunCommand({testing::MnemoBinary(), "generate", testing::StoriesGgufPath(),
                                "--prompt", "Once upon a time", "--temperature", "0",
                                "--max-tokens", "32", "--device", device});
  };
  const testing::CommandResult gpu = generate("cuda");
  const testing::CommandResult cpu = generate("cpu");
  ASSERT_EQ(gpu.exit_code, 0) << gpu.err;
  ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
  std::printf("cpu: %s\ncuda: %s\n", cpu.out.c_str(), gpu.out.c_str());
  // bf16 rounding may flip a late near-tie; the opening words must agree.
  ASSERT_GE(cpu.out.size(), 20u);
  EXPECT_EQ(gpu.out.substr(0, 20), cpu.out.substr(0, 20));
}

}  // namespace
}  // namespace mnemo::engine
