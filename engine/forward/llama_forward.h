// The llama-family forward pass (llama, mistral, smollm2, tinyllama; qwen2 with QKV bias;
// qwen3 with QK-norm) over a batch of sequences whose keys and values live in paged blocks.
//
// One step takes the new tokens of every sequence in the batch and flattens them into one
// activation matrix, so that each weight matrix is read once per step whatever the batch:
//
//   rows:   | seq 0: tokens at start_pos0 .. | seq 1: ... | ... |        (T rows in all)
//   x = Embedding(tokens)                                               [T, d_model]
//   per layer:
//     h = RMSNorm(x) ; q,k,v = h Wq,Wk,Wv (+ bias)   ; per-head RMSNorm of q,k (qk_norm)
//     RoPE(q, k) at each row's position ; KvWrite(k, v) into each sequence's blocks
//     o = PagedAttention(q, the sequence's blocks) ; x += o Wo (+ bias)
//     h = RMSNorm(x) ; x += SwiGLU(h Wgate, h Wup) Wdown
//   logits = RMSNorm(x[wanted rows]) Wout                               [n_wanted, vocab]
//
// The output projection (the largest matrix of small models) runs only over the rows whose
// logits are wanted (usually each sequence's last token). All ops honour the kernels'
// determinism contract (kernels/ops.h), so a sequence's logits are the same bits whatever
// else is in the batch and whatever the thread count.
//
// Thread-safety: Forward() is not reentrant (scratch buffers are reused across steps); call
// it from one thread (the engine loop). The kernels run inside this object's oneTBB arena.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/forward/weights.h"
#include "engine/model/model.h"
#include "kernels/attention.h"
#include "kernels/ops.h"

namespace mnemo::cache {
class BlockTable;
}  // namespace mnemo::cache

namespace mnemo::engine {

// Which of a sequence's new tokens get logits.
enum class LogitRows : uint8_t {
  kNone,  // prefill chunk that samples nothing
  kLast,  // the last new token (a sampled position)
  kAll,   // every new token (scoring a text, tests)
};

// One sequence of a step: `tokens` are appended at positions start_pos, start_pos + 1, ...
// and attend to the sequence's positions [0, start_pos) already in its blocks.
struct SeqBatchEntry {
  std::span<const TokenId> tokens;
  int32_t start_pos = 0;
  // Must hold blocks for at least start_pos + tokens.size() tokens (reserve them first).
  const cache::BlockTable* table = nullptr;
  LogitRows logits = LogitRows::kLast;
};

struct ForwardOptions {
  int threads = 0;  // oneTBB threads for the kernels; 0: every hardware thread
  // Run the scalar reference twins of the ops (kernels/ops.h `<Op>Ref`: no 16-bit activation
  // rounding, attention softmax in double; MatMulRef split over output rows across threads)
  // instead of the fast ones.
  // Slow; for validating the forward pass itself against an independent implementation.
  bool reference_kernels = false;
  // Multiply with the fused Q|K|V and gate|up copies where the weights allow it
  // (WeightOptions::fuse). The same bits either way; off only to test that.
  bool fuse_matrices = true;
};

class LlamaForward {
 public:
  // Prepares the weights of `model` (which must outlive the LlamaForward). InvalidArgument
  // naming the tensor for an unsupported weight dtype.
  static absl::StatusOr<std::unique_ptr<LlamaForward>> Create(const Model& model,
                                                              const ForwardOptions& opts = {});
  ~LlamaForward();

  const ModelConfig& config() const { return weights_->config(); }
  const ModelWeights& weights() const { return *weights_; }
  int threads() const { return threads_; }

  // The KV block layout this model needs (kv_dtype: kF16 or kBF16).
  kernels::KvLayout KvLayoutFor(kernels::DType kv_dtype, int block_tokens = 16) const;

  // Rows of logits Forward() writes for `batch`.
  static int64_t LogitRowCount(std::span<const SeqBatchEntry> batch);

  // Runs one step. `kv` is the arena the tables' block ids index; its layout must equal
  // KvLayoutFor(its dtype, its block_tokens). Writes the logits of the wanted rows, in batch
  // order (a sequence's rows in position order), to logits[LogitRowCount(batch), vocab].
  // Errors (nothing is written to the KV then):
  //   InvalidArgument: empty batch or entry, a token id outside the vocabulary, a position
  //     past the model's context length, a layout that does not match the model;
  //   FailedPrecondition: a table without blocks for all of its entry's tokens.
  absl::Status Forward(const kernels::KvArenaView& kv, std::span<const SeqBatchEntry> batch,
                       float* logits);

 private:
  struct Scratch;
  struct Ops;
  static const Ops kFastOps;
  static const Ops kReferenceOps;
  LlamaForward() = default;
  absl::Status Validate(const kernels::KvArenaView& kv, std::span<const SeqBatchEntry> batch) const;
  void Plan(std::span<const SeqBatchEntry> batch);
  void RunLayers(const kernels::KvArenaView& kv, float* logits);

  std::unique_ptr<ModelWeights> weights_;
  int threads_ = 1;
  kernels::RopeTable rope_;
  std::unique_ptr<Scratch> scratch_;
  const Ops* ops_ = nullptr;
};

}  // namespace mnemo::engine
