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
#include "engine/forward/forward.h"
#include "engine/forward/weights.h"
#include "engine/model/model.h"
#include "kernels/attention.h"
#include "kernels/ops.h"

namespace mnemo::cache {
class BlockTable;
}  // namespace mnemo::cache

namespace mnemo::engine {

class LlamaForward : public ForwardPass {
 public:
  // Prepares the weights of `model` (which must outlive the LlamaForward). InvalidArgument
  // naming the tensor for an unsupported weight dtype.
  static absl::StatusOr<std::unique_ptr<LlamaForward>> Create(const Model& model,
                                                              const ForwardOptions& opts = {});
  ~LlamaForward();

  const ModelConfig& config() const override { return weights_->config(); }
  const Device& device() const override { return device_; }
  const ModelWeights& weights() const { return *weights_; }
  int threads() const { return threads_; }

  // ForwardPass::Forward; the arena is host memory.
  absl::Status Forward(const kernels::KvArenaView& kv, std::span<const SeqBatchEntry> batch,
                       float* logits) override;
  absl::Status ObserveAttention(const kernels::KvArenaView& kv, const SeqBatchEntry& entry,
                                int64_t observe_from, std::span<float> mass) override;

 private:
  struct Scratch;
  struct Ops;
  static const Ops kFastOps;
  static const Ops kReferenceOps;
  LlamaForward() = default;
  void RunLayers(const kernels::KvArenaView& kv, float* logits);

  std::unique_ptr<ModelWeights> weights_;
  Device device_;
  int threads_ = 1;
  kernels::RopeTable rope_;
  // Set only during ObserveAttention: the first observed row and where the mass adds up.
  int64_t observe_from_ = 0;
  float* observe_mass_ = nullptr;

 public:
  const kernels::RopeTable& rope_table() const override { return rope_; }
  std::unique_ptr<Scratch> scratch_;
  const Ops* ops_ = nullptr;
};

}  // namespace mnemo::engine
