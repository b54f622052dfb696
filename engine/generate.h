// Text generation on the CPU forward pass: tokenize (optionally through the model's chat
// template), prefill in chunks, then decode one token per sequence per step, sampling each
// sequence with its own Sampler (and RNG) and streaming UTF-8-safe text through a
// StreamingDetokenizer and a StopChecker.
//
// Generate() serves one prompt; GenerateBatch() serves N independent prompts at once: every
// step flattens the new tokens of all live sequences into one forward pass (so weights are
// read once per step for the whole batch). Greedy outputs do not depend on the batch or the
// thread count (the kernels' determinism contract).
//
// KV lives in a BlockPool of the generator. With GeneratorOptions::kv_budget_bytes == 0 the
// pool is sized for each call (every sequence's prompt + max_tokens); with a budget, a call
// whose sequences do not fit fails with ResourceExhausted before any compute.
//
// Thread-safety: a Generator is used from one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/forward/forward.h"
#include "engine/model/chat_template.h"
#include "engine/model/model.h"
#include "engine/model/tokenizer.h"
#include "engine/sampling.h"
#include "engine/stop.h"
#include "kernels/dtype.h"

namespace mnemo::cache {
class BlockPool;
}  // namespace mnemo::cache

namespace mnemo::engine {

struct GeneratorOptions {
  Device device;                                   // where the forward pass runs
  int threads = 0;                                 // kernel threads; 0: every hardware thread
  kernels::DType kv_dtype = kernels::DType::kF16;  // kF16 or kBF16
  int block_tokens = 16;
  uint64_t kv_budget_bytes = 0;  // 0: sized per call (see above)
  int prefill_chunk = 512;       // prompt tokens per step (all sequences together), >= 1
};

struct GenerateRequest {
  std::string prompt;
  // Render `prompt` as one user message through the model's chat template (with the
  // generation prompt). InvalidArgument when the model has no template mnemo can render.
  bool chat = false;
  // When non-empty, used as the prompt instead of tokenizing `prompt`.
  std::vector<TokenId> prompt_ids;
  SamplingParams sampling;
  StopParams stop;  // stop.max_tokens < 0: until the context is full
};

struct GenerateTimings {
  int64_t prompt_tokens = 0;
  double prompt_seconds = 0.0;  // prefill steps, up to and including the first sample
  int64_t decode_tokens = 0;    // tokens sampled after decode steps
  double decode_seconds = 0.0;
  double prompt_tokens_per_second() const;
  double decode_tokens_per_second() const;
};

struct GenerateResult {
  std::vector<TokenId> prompt_ids;
  std::vector<TokenId> ids;  // generated, including a final end-of-generation token
  std::string text;          // streamed text, concatenated (stop strings excluded)
  FinishReason finish = FinishReason::kNone;
  std::vector<float> logprobs;                          // of each generated id
  std::vector<std::vector<TokenLogprob>> top_logprobs;  // per generated id, when requested
  // For GenerateBatch, the timings of the whole batch (every result carries the same).
  GenerateTimings timings;
};

// The chat template of the model `tokenizer` belongs to (Detect over its data's template
// source, with its BOS/EOS texts); kUnknown when it has none mnemo renders.
ChatTemplate ModelChatTemplate(const Tokenizer& tokenizer);

// Called with each piece of text as it becomes safe to emit: (request index, text).
using TextCallback = std::function<void(size_t, std::string_view)>;

class Generator {
 public:
  // InvalidArgument for bad options, an unsupported weight dtype or a tokenizer that does
  // not load; `model` must outlive the Generator.
  static absl::StatusOr<std::unique_ptr<Generator>> Create(const Model& model,
                                                           const GeneratorOptions& opts = {});
  ~Generator();

  // The prompt ids of `request` (BOS as the model wants it). InvalidArgument for an empty
  // prompt or a chat request without a usable chat template.
  absl::StatusOr<std::vector<TokenId>> PromptIds(const GenerateRequest& request) const;

  // Errors: InvalidArgument for an empty prompt, a prompt (+ max_tokens) past the context
  // length, bad sampling or stop parameters; ResourceExhausted when the KV budget cannot
  // hold the sequences.
  absl::StatusOr<GenerateResult> Generate(const GenerateRequest& request,
                                          const TextCallback& on_text = nullptr);
  absl::StatusOr<std::vector<GenerateResult>> GenerateBatch(
      std::span<const GenerateRequest> requests, const TextCallback& on_text = nullptr);

  const Tokenizer& tokenizer() const { return *tokenizer_; }
  ForwardPass& forward() { return *forward_; }
  const GeneratorOptions& options() const { return opts_; }

 private:
  struct Seq;
  Generator() = default;
  absl::Status EnsurePool(int64_t blocks_needed);
  // One forward step over `entries`; samples every sequence whose entry wants logits.
  absl::Status Step(std::vector<Seq>& seqs, std::span<const size_t> which,
                    std::span<const SeqBatchEntry> entries, const TextCallback& on_text);

  GeneratorOptions opts_;
  const Model* model_ = nullptr;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ForwardPass> forward_;
  std::unique_ptr<cache::BlockPool> pool_;
  std::vector<float> logits_;
};

}  // namespace mnemo::engine
