// The weights of a llama-family model as the forward pass reads them, prepared once.
//
// Matrices stay in the model's file mapping (zero copy) and are seen as kernels::WeightView
// ([out, in] rows in the file's dtype); a matrix whose data is not aligned to its dtype's
// scale width (possible in safetensors files) is copied once into aligned memory. Vectors
// (norm weights, biases, RoPE frequency factors) are dequantized once to f32.
//
// Thread-safety: immutable after Create; the Model must outlive the ModelWeights.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model.h"
#include "kernels/ops.h"

namespace mnemo::engine {

struct LayerWeights {
  const float* attn_norm = nullptr;  // [d_model]
  kernels::WeightView attn_q;        // [n_heads * head_dim, d_model]
  kernels::WeightView attn_k;        // [n_kv_heads * head_dim, d_model]
  kernels::WeightView attn_v;        // [n_kv_heads * head_dim, d_model]
  const float* q_bias = nullptr;     // qkv_bias only, else nullptr
  const float* k_bias = nullptr;
  const float* v_bias = nullptr;
  const float* q_norm = nullptr;  // qk_norm only: [head_dim]
  const float* k_norm = nullptr;
  kernels::WeightView attn_output;  // [d_model, n_heads * head_dim]
  const float* o_bias = nullptr;    // attn_output_bias only: [d_model]
  const float* ffn_norm = nullptr;  // [d_model]
  kernels::WeightView ffn_gate;     // [d_ff, d_model]
  kernels::WeightView ffn_up;       // [d_ff, d_model]
  kernels::WeightView ffn_down;     // [d_model, d_ff]
};

class ModelWeights {
 public:
  // InvalidArgument naming the tensor when a matrix's dtype is not one the kernels can
  // multiply with, or a vector cannot be dequantized; NotFound for a missing tensor.
  static absl::StatusOr<std::unique_ptr<ModelWeights>> Create(const Model& model);

  const ModelConfig& config() const { return config_; }
  const kernels::WeightView& token_embedding() const { return token_embedding_; }
  const kernels::WeightView& output() const { return output_; }  // token_embd when tied
  const float* output_norm() const { return output_norm_; }
  const LayerWeights& layer(int l) const { return layers_[static_cast<size_t>(l)]; }
  // rope_freqs.weight as f32 ([rotary_dims / 2]), empty when the model has none.
  std::span<const float> rope_freq_factors() const { return rope_freq_factors_; }

  // Bytes of weights one decode step reads: every matrix once, plus one embedding row
  // (the whole embedding when it is also the output projection).
  uint64_t decode_bytes_per_token() const { return decode_bytes_per_token_; }
  // Multiply-adds per token of the matrix products (the "parameters" of 2 x params flops).
  int64_t matmul_params() const { return matmul_params_; }

 private:
  ModelWeights() = default;
  absl::StatusOr<kernels::WeightView> Matrix(const Model& model, const std::string& name);
  absl::StatusOr<const float*> Vector(const Model& model, const std::string& name);

  ModelConfig config_;
  kernels::WeightView token_embedding_;
  kernels::WeightView output_;
  const float* output_norm_ = nullptr;
  std::vector<LayerWeights> layers_;
  std::vector<float> rope_freq_factors_;
  uint64_t decode_bytes_per_token_ = 0;
  int64_t matmul_params_ = 0;
  // Storage behind the pointers above that do not point into the file mapping.
  std::vector<std::vector<float>> vectors_;
  std::vector<std::unique_ptr<uint64_t[]>> realigned_;
};

}  // namespace mnemo::engine
