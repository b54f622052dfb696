// The accuracy cost of int8 KV compression (kernels/kv_compress.h) on real models: prefill
// a prompt, round-trip every KV block of the prompt through CompressKvBlock /
// DecompressKvBlock, then decode greedily and compare with decoding from the untouched KV.
// Reports the first decode step's max logit error relative to the logit range and the
// greedy agreement length over 64 tokens (figures recorded in docs/kernels.md).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "cache/block_pool.h"
#include "cache/block_table.h"
#include "engine/forward/llama_forward.h"
#include "engine/model/model.h"
#include "kernels/kv_compress.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using kernels::DType;

constexpr int kDecodeTokens = 64;

struct Accuracy {
  double first_step_error = 0.0;  // max |exact - compressed| / (max - min of exact logits)
  size_t agreement = 0;           // generated tokens equal before the first divergence
};

TokenId Argmax(const std::vector<float>& logits) {
  return static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// One decode step of `table` at `pos` feeding `token`; the logits into `logits`.
void Step(LlamaForward& fwd, cache::BlockPool& pool, const cache::BlockTable& table, TokenId token,
          int32_t pos, std::vector<float>& logits) {
  SeqBatchEntry e{.tokens = std::span(&token, 1), .start_pos = pos, .table = &table};
  const absl::Status s = fwd.Forward(pool.view(), std::span(&e, 1), logits.data());
  ASSERT_TRUE(s.ok()) << s;
}

Accuracy Measure(LlamaForward& fwd, DType kv_dtype, const std::vector<TokenId>& prompt) {
  Accuracy acc;
  const kernels::KvLayout layout = fwd.KvLayoutFor(kv_dtype);
  auto pool = cache::BlockPool::Create({.layout = layout, .budget_bytes = 64ull << 20});
  EXPECT_TRUE(pool.ok()) << pool.status();
  if (!pool.ok()) return acc;
  const auto n_total = static_cast<int64_t>(prompt.size()) + kDecodeTokens;
  cache::BlockTable exact, compressed;
  EXPECT_TRUE(exact.Reserve(**pool, n_total) && compressed.Reserve(**pool, n_total));
  // The arena is not initialised; zero the blocks so that the unused rows of the prompt's
  // partial last block (which count towards its tiles' max |x|) hold zeros, as a real
  // tier would have to guarantee.
  for (const cache::BlockTable* t : {&exact, &compressed}) {
    for (cache::BlockId id : t->blocks()) {
      std::memset((*pool)->BlockData(id), 0, static_cast<size_t>(layout.block_bytes()));
    }
  }

  const int vocab = fwd.config().vocab_size;
  std::vector<float> logits(static_cast<size_t>(vocab));
  SeqBatchEntry e{.tokens = std::span(prompt), .start_pos = 0, .table = &exact};
  const absl::Status s = fwd.Forward((*pool)->view(), std::span(&e, 1), logits.data());
  EXPECT_TRUE(s.ok()) << s;
  if (!s.ok()) return acc;
  const TokenId first = Argmax(logits);

  // The prompt's KV, copied, then round-tripped through int8 in place.
  const size_t prompt_blocks = (prompt.size() + layout.block_tokens - 1) / layout.block_tokens;
  std::vector<uint8_t> packed(static_cast<size_t>(kernels::CompressedBlockBytes(layout)));
  for (size_t b = 0; b < prompt_blocks; ++b) {
    uint8_t* dst = (*pool)->BlockData(compressed.blocks()[b]);
    std::memcpy(dst, (*pool)->BlockData(exact.blocks()[b]),
                static_cast<size_t>(layout.block_bytes()));
    kernels::CompressKvBlock(layout, dst, packed.data());
    kernels::DecompressKvBlock(layout, packed.data(), dst);
  }

  // Greedy decoding from both, each from its own tokens; the first generated token comes
  // from the prefill and is common.
  std::vector<TokenId> out_exact{first}, out_compressed{first};
  std::vector<float> logits_c(static_cast<size_t>(vocab));
  for (int i = 0; i + 1 < kDecodeTokens; ++i) {
    const auto pos = static_cast<int32_t>(prompt.size()) + i;
    Step(fwd, **pool, exact, out_exact.back(), pos, logits);
    Step(fwd, **pool, compressed, out_compressed.back(), pos, logits_c);
    if (::testing::Test::HasFatalFailure()) return acc;
    if (i == 0) {
      const auto [lo, hi] = std::minmax_element(logits.begin(), logits.end());
      double diff = 0.0;
      for (size_t v = 0; v < logits.size(); ++v) {
        diff = std::max(diff, double{std::abs(logits[v] - logits_c[v])});
      }
      acc.first_step_error = diff / (double{*hi} - double{*lo});
    }
    out_exact.push_back(Argmax(logits));
    out_compressed.push_back(Argmax(logits_c));
  }
  while (acc.agreement < out_exact.size() &&
         out_exact[acc.agreement] == out_compressed[acc.agreement]) {
    ++acc.agreement;
  }
  exact.Release(**pool);
  compressed.Release(**pool);
  return acc;
}

struct Worst {
  double error = 0.0;
  size_t min_agreement = kDecodeTokens;
  size_t total_agreement = 0;
};

Worst RunModel(const std::string& path, const char* name, const std::vector<std::string>& prompts) {
  Worst w;
  auto model = Model::Open(path);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return w;
  auto tok = Tokenizer::Create((*model)->tokenizer_data());
  EXPECT_TRUE(tok.ok());
  auto fwd = LlamaForward::Create(**model, {.threads = 2});
  EXPECT_TRUE(fwd.ok()) << fwd.status();
  if (!tok.ok() || !fwd.ok()) return w;
  for (DType kv : {DType::kF16, DType::kBF16}) {
    for (const std::string& p : prompts) {
      const std::vector<TokenId> ids = (*tok)->Encode(p, {});
      const Accuracy a = Measure(**fwd, kv, ids);
      std::printf(
          "[ KV int8 %s %s KV, %3zu prompt tokens: first-step logit error %.2e of range, greedy "
          "agreement %2zu/%d ]\n",
          name, kv == DType::kF16 ? "f16 " : "bf16", ids.size(), a.first_step_error, a.agreement,
          kDecodeTokens);
      w.error = std::max(w.error, a.first_step_error);
      w.min_agreement = std::min(w.min_agreement, a.agreement);
      w.total_agreement += a.agreement;
    }
  }
  return w;
}

const std::vector<std::string> kStoriesPrompts = {
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "park with her friends. One day, she saw a big red ball under a tree.",
    "Tom and his dog went to the beach. The sun was hot and the water was blue. Tom wanted to "
    "build a big sand castle, but the waves kept coming.",
    "The little bird was sad because it could not fly. Its mom said"};

const std::vector<std::string> kSmolLm2Prompts = {
    "The French Revolution was a period of political and societal change in France that began "
    "with the Estates General of 1789 and ended with the coup of 18 Brumaire in November 1799. "
    "Many of its ideas are considered fundamental principles of liberal democracy, and its",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n"
    "        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n\ndef factorial(n):\n",
    "Water boils at a temperature of 100 degrees Celsius at sea level. At higher altitudes,"};

// Bounds: the measured worst first-step error (1.1e-2 on both models) with about 2.5x
// margin; greedy agreement is not asserted to be full (a near-tie may flip early: 2/64 was
// seen), only that over the 6 runs of a model at least a quarter of the 384 tokens agree
// (measured: 222 for stories260K, 293 for SmolLM2). A broken round trip fails both.
TEST(KvCompressAccuracy, Stories260K) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  const Worst w = RunModel(testing::StoriesGgufPath(), "stories260K", kStoriesPrompts);
  std::printf("[ KV int8 stories260K: worst first-step error %.2e, min agreement %zu/%d ]\n",
              w.error, w.min_agreement, kDecodeTokens);
  EXPECT_LT(w.error, 3e-2);
  EXPECT_GE(w.total_agreement, 96u);
}

TEST(KvCompressAccuracy, SmolLm2) {
  MNEMO_REQUIRE_FILE(testing::SmolLm2GgufPath());
  const Worst w = RunModel(testing::SmolLm2GgufPath(), "SmolLM2", kSmolLm2Prompts);
  std::printf("[ KV int8 SmolLM2: worst first-step error %.2e, min agreement %zu/%d ]\n", w.error,
              w.min_agreement, kDecodeTokens);
  EXPECT_LT(w.error, 3e-2);
  EXPECT_GE(w.total_agreement, 96u);
}

}  // namespace
}  // namespace mnemo::engine
