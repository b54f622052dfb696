// An independent, plain float64 forward pass of the llama family, for tests only.
//
// It shares nothing with the engine's forward pass or kernels except the model loader
// (engine::Model) and the scalar dequantizer (kernels::DequantizeRowRef): every weight is
// dequantized once to f32 (exactly: every weight dtype's values are representable in f32)
// and all arithmetic runs in double, one token at a time, over a plain contiguous KV cache
// (no paging, no batching, no SIMD, no threads). RoPE frequencies and their scaling (linear,
// llama3, yarn, GGUF rope_freqs) are computed here from the config, in double.
//
// Per layer (x: the residual stream of one token, d_model values):
//   h = RMSNorm(x) * attn_norm
//   q = Wq h (+ bq), k = Wk h (+ bk), v = Wv h (+ bv)            qkv_bias (qwen2)
//   q_h, k_h = RMSNorm per head * attn_{q,k}_norm                 qk_norm (qwen3)
//   RoPE on the first rotary_dims of each head (normal: adjacent pairs; neox: halves)
//   o_h = sum_j softmax_j(q_h . k_j / sqrt(head_dim)) v_j  over the causal (windowed) past,
//         KV head h / (n_heads / n_kv_heads)                       GQA
//   x += Wo o (+ bo)                                               attn_output_bias
//   h = RMSNorm(x) * ffn_norm;  x += Wdown (silu(Wgate h) * Wup h)
// logits = Wout (RMSNorm(x) * output_norm), Wout = token_embd when tied.
//
// ReferenceOptions::int16_activations rounds the input of every product with a block-quantized
// weight matrix the way kernels/ops.h allows MatMul to (per 32-element block: d = amax / 32767
// in f32, q = round-half-even(x * (1 / d)), value q * d), and nothing else. That separates
// the forward pass's own errors from the activation rounding of the fast kernels: with it,
// only accumulation order and f16 KV rounding remain between engine and reference.
//
// Thread-safety: a ReferenceModel is immutable after Create; each ReferenceSequence is
// single-threaded.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model.h"

namespace mnemo::testing {

class ReferenceSequence;

struct ReferenceOptions {
  bool int16_activations = false;  // see above
  // Round keys and values to f16 (round to nearest even) as they enter the KV cache, as the
  // engine's f16 KV blocks store them.
  bool f16_kv = false;
};

class ReferenceModel {
 public:
  // Dequantizes every weight of `model` into memory of its own (`model` may be closed
  // afterwards). InvalidArgument for a dtype the reference dequantizer cannot read.
  static absl::StatusOr<std::unique_ptr<ReferenceModel>> Create(const engine::Model& model,
                                                                const ReferenceOptions& opts = {});

  const engine::ModelConfig& config() const { return config_; }

  // Logits [tokens.size()][vocab] of every position of a fresh sequence holding `tokens`.
  std::vector<std::vector<double>> Logits(std::span<const engine::TokenId> tokens) const;

  // Greedy continuation of `prompt`: n tokens, each the argmax (lowest id on ties) of the
  // logits after the previous one. Does not stop at end-of-generation tokens. With
  // `logits`, also the logits of every position fed: prompt + the first n - 1 generated.
  std::vector<engine::TokenId> Greedy(std::span<const engine::TokenId> prompt, int n,
                                      std::vector<std::vector<double>>* logits = nullptr) const;

 private:
  friend class ReferenceSequence;

  struct Matrix {  // row-major [rows, cols], dequantized
    std::vector<float> w;
    int64_t rows = 0;
    int64_t cols = 0;
    bool round_input = false;  // int16_activations and a block-quantized dtype
  };
  struct Layer {
    std::vector<float> attn_norm, ffn_norm, q_norm, k_norm;
    std::vector<float> q_bias, k_bias, v_bias, o_bias;
    Matrix q, k, v, o, gate, up, down;
  };

  ReferenceModel() = default;
  // out[r] = sum_c m[r][c] * x[c] (+ bias[r]); x has m.cols values.
  static void MatVec(const Matrix& m, const double* x, const std::vector<float>& bias, double* out);

  engine::ModelConfig config_;
  Matrix embedding_;
  Matrix output_;  // empty when tied (embedding_ is used)
  std::vector<float> output_norm_;
  std::vector<Layer> layers_;
  std::vector<double> theta_;  // per rotated pair: angle = position * theta
  double rope_scale_ = 1.0;    // multiplies cos and sin (yarn)
  bool f16_kv_ = false;
};

// One sequence: its tokens so far and their keys and values, contiguous per layer.
class ReferenceSequence {
 public:
  explicit ReferenceSequence(const ReferenceModel& model);

  // Appends `token` at the next position and returns the logits [vocab] after it.
  std::vector<double> Step(engine::TokenId token);

  int64_t size() const { return n_tokens_; }

 private:
  const ReferenceModel& m_;
  int64_t n_tokens_ = 0;
  // Per layer: keys and values of every position, [position][n_kv_heads * head_dim].
  std::vector<std::vector<double>> k_cache_, v_cache_;
};

// Index of the largest value (the lowest index on ties).
int64_t ArgMax(std::span<const double> values);

}  // namespace mnemo::testing
