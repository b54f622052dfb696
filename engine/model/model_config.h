// The hyperparameters of a decoder-only transformer, read from either model format: GGUF
// metadata (ConfigFromGguf) or a Hugging Face config.json (ConfigFromHfJson). Everything
// downstream (weights validation, the forward pass, KV block sizes, the model fingerprint)
// reads only this struct, never the file's own keys.
//
// Supported families: llama, mistral, qwen2 (QKV bias), qwen3 (QK-norm). All use RMSNorm,
// SwiGLU and rotary position embeddings; they differ in the switches below.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mnemo::engine {

class GgufFile;

enum class Architecture : uint8_t { kLlama, kMistral, kQwen2, kQwen3 };

// "llama", "mistral", "qwen2", "qwen3" (as in HF model_type and GGUF general.architecture).
std::string_view ArchName(Architecture a);
std::optional<Architecture> ArchitectureFromName(std::string_view name);

enum class RopeScalingKind : uint8_t { kNone, kLinear, kLlama3, kYarn };
std::string_view RopeScalingKindName(RopeScalingKind k);  // "none", "linear", ...

enum class RopeStyle : uint8_t {
  kNormal,  // rotates adjacent pairs (x[2i], x[2i+1]): GGUF llama/mistral (weights permuted)
  kNeox,    // rotates halves (x[i], x[i + d/2]): HF rotate_half, GGUF qwen2/qwen3
};
std::string_view RopeStyleName(RopeStyle s);  // "normal", "neox"

struct RopeConfig {
  float base = 10000.0f;  // theta
  int rotary_dims = 0;    // leading dims of each head that are rotated; even, <= head_dim
  RopeStyle style = RopeStyle::kNormal;
  RopeScalingKind scaling = RopeScalingKind::kNone;
  float factor = 1.0f;            // linear / llama3 / yarn: context extension factor
  int original_context = 0;       // llama3 / yarn: the pre-extension training context (0: unset)
  float low_freq_factor = 1.0f;   // llama3
  float high_freq_factor = 4.0f;  // llama3
  float beta_fast = 32.0f;        // yarn
  float beta_slow = 1.0f;         // yarn
  // yarn: the total scale applied to cos/sin (HF "attention_factor"; when a file does not
  // give it, 0.1 * ln(factor) + 1). For GGUF files it is rope.scaling.attn_factor (default 1)
  // times that same default, which is how llama.cpp combines them.
  float attn_factor = 1.0f;
  // llama3 in GGUF: the per-dimension frequency divisors are stored precomputed as the
  // tensor "rope_freqs.weight" [rotary_dims / 2] (F32) instead of the factors above.
  bool has_freq_factors = false;

  bool operator==(const RopeConfig&) const = default;
};

struct ModelConfig {
  Architecture arch = Architecture::kLlama;
  std::string arch_name;  // as the file spells it (GGUF general.architecture, HF model_type)
  std::string name;       // general.name / _name_or_path; informational only

  int n_layers = 0;
  int d_model = 0;         // embedding width
  int n_heads = 0;         // query heads
  int n_kv_heads = 0;      // key/value heads (GQA: divides n_heads)
  int head_dim = 0;        // per head; n_heads * head_dim need not equal d_model
  int d_ff = 0;            // SwiGLU hidden width
  int vocab_size = 0;      // rows of the embedding (and of the output projection)
  int context_length = 0;  // trained maximum
  RopeConfig rope;
  float norm_eps = 1e-5f;         // RMSNorm epsilon
  bool tied_embeddings = false;   // the output projection is token_embd.weight
  bool qkv_bias = false;          // attn_q/k/v carry biases (qwen2)
  bool attn_output_bias = false;  // attn_output carries a bias (HF attention_bias on llama)
  bool qk_norm = false;           // per-head RMSNorm of q and k before RoPE (qwen3)
  int sliding_window = 0;         // attention window in tokens on every layer; 0: none

  // Special tokens as the model file states them; -1 when unset. The tokenizer's own data
  // (TokenizerData) is authoritative for encoding; these are hints for generation.
  int32_t bos = -1;
  int32_t eos = -1;
  int32_t eot = -1;
  int32_t pad = -1;
  int32_t unk = -1;

  // OK when the sizes are positive and bounded, n_heads % n_kv_heads == 0, rotary_dims is
  // even and <= head_dim, eps and rope parameters are finite and positive, and special ids
  // are -1 or < vocab_size. Otherwise InvalidArgument naming the field and its value.
  absl::Status Validate() const;

  // One-line JSON object with a fixed key order (for `mnemo inspect --json`, logs).
  std::string ToJson() const;

  bool operator==(const ModelConfig&) const = default;
};

// Reads `{arch}.*` hyperparameters, tokenizer.ggml.*_token_id and tensor presence (output
// weight -> untied, attn_q.bias -> qkv_bias, attn_q_norm -> qk_norm, rope_freqs -> llama3)
// from a GGUF file. general.architecture must be llama, mistral, qwen2 or qwen3 (mistral
// models are normally stored as llama). InvalidArgument naming the key when a required key
// is missing or has the wrong type, or when the result fails Validate().
absl::StatusOr<ModelConfig> ConfigFromGguf(const GgufFile& file);

// Parses a Hugging Face config.json with model_type llama, mistral, qwen2 or qwen3.
// InvalidArgument naming the key when a required key is missing or ill-typed, for
// unsupported features (mlp_bias, a non-SiLU activation, dynamic rope scaling, per-layer
// sliding windows), or when the result fails Validate(). HF checkpoints use RopeStyle::kNeox.
absl::StatusOr<ModelConfig> ConfigFromHfJson(std::string_view config_json);

}  // namespace mnemo::engine
