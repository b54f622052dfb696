// A model on disk, in either format, seen one way: its config, its tokenizer data and its
// weights under canonical names and shapes. Weights stay in the file mappings (zero copy).
//
//   GGUF          one .gguf file: metadata -> ModelConfig + TokenizerData, tensors as is.
//   safetensors   a folder: config.json, model.safetensors (or model.safetensors.index.json
//                 and the shards it names), tokenizer.json, optional tokenizer_config.json.
//                 Tensor names are mapped to canonical ones (engine/model/tensor_names.h).
//
// Open validates the tensor set against the config: every tensor the config implies is
// present with the expected shape and a weight dtype; unknown Hugging Face tensors and GGUF
// tensors of layers past n_layers are refused. Errors name the tensor (and its name in the
// file), the expected and the actual shape.
//
// Thread-safety: a Model is immutable after Open (fingerprint() computes once, under
// std::call_once) and may be used from any number of threads.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"
#include "engine/model/tokenizer.h"
#include "kernels/dtype.h"

namespace mnemo::engine {

class GgufFile;
class SafetensorsFile;

enum class WeightFormat : uint8_t { kGguf, kSafetensors };

struct TensorRef {
  // Canonical GGUF-style name: token_embd.weight, blk.N.attn_q.weight, attn_k, attn_v,
  // attn_output, attn_norm, ffn_gate, ffn_up, ffn_down, ffn_norm, attn_q_norm, attn_k_norm,
  // attn_{q,k,v,output}.bias, output_norm.weight, output.weight, rope_freqs.weight.
  std::string name;
  std::string source_name;  // as stored in the file
  // Row-major, slowest-varying first (PyTorch order): a weight is [out, in]; GGUF ne are
  // reversed. A quantized tensor's last dimension is a multiple of its block size.
  std::vector<int64_t> shape;
  kernels::DType dtype = kernels::DType::kF32;
  uint64_t bytes = 0;
  const uint8_t* data = nullptr;  // into a file mapping; valid while the Model lives;
                                  // safetensors data may be unaligned

  int64_t n_elements() const;
};

class Model {
 public:
  // `path`: a .gguf file or a safetensors model folder (see above). NotFound for a missing
  // path or a missing required file (naming it); InvalidArgument for malformed content.
  static absl::StatusOr<std::unique_ptr<Model>> Open(const std::string& path);

  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  WeightFormat format() const { return format_; }
  const std::string& path() const { return path_; }
  const ModelConfig& config() const { return config_; }
  const TokenizerData& tokenizer_data() const { return tokenizer_; }

  // In canonical order: token_embd, each layer's tensors (layer by layer, in the order of
  // the table above), output_norm, output, then any others by name.
  const std::vector<TensorRef>& tensors() const { return tensors_; }
  const TensorRef* FindTensor(std::string_view name) const;  // nullptr if absent

  uint64_t total_bytes() const { return total_bytes_; }    // sum of the tensors' bytes
  int64_t n_params() const { return n_params_; }           // sum of the tensors' elements
  uint64_t file_bytes() const { return file_bytes_; }      // the weight files' sizes
  uint32_t gguf_version() const { return gguf_version_; }  // 0 for safetensors
  const GgufFile* gguf() const { return gguf_.get(); }     // nullptr for safetensors

  // 32 lowercase hex digits: XXH3-128 of a canonical serialization of the config and every
  // tensor, so that state (KV blocks, sessions) computed with one model is never used with
  // another. Serialization "mnemo.model-fingerprint.v1" (little-endian; strings as u64
  // length + bytes):
  //   config: arch name, n_layers, d_model, n_heads, n_kv_heads, head_dim, d_ff, vocab_size,
  //     context_length, rope {base, rotary_dims, style, scaling, factor, original_context,
  //     low/high_freq_factor, beta_fast/slow, attn_factor, has_freq_factors}, norm_eps,
  //     tied_embeddings, qkv_bias, attn_output_bias, qk_norm, sliding_window
  //     (ints as i64, floats as their f32 bits, bools as u8, enums by name);
  //   u64 tensor count; per tensor, by canonical name: name, dtype name, u64 rank, i64 dims,
  //     u64 bytes, XXH3-128 of its data bytes (high 64 bits, then low).
  // Not included: the file format, metadata that does not change the math (name, special
  // token ids, tokenizer), tensor order or padding in the file. The same weights and config
  // in GGUF and safetensors therefore share a fingerprint (when their RoPE style and bytes
  // agree). The first call reads every weight byte (hashed in parallel); later calls are free.
  const std::string& fingerprint() const;

 private:
  Model() = default;
  absl::Status OpenGguf(const std::string& path);
  absl::Status OpenSafetensorsFolder(const std::string& dir);
  // Adds the tensors of one safetensors file; returns the names of all tensors it holds.
  absl::StatusOr<std::vector<std::string>> AddSafetensorsFile(const std::string& file);
  absl::Status Finish();  // sorts, validates, totals

  WeightFormat format_ = WeightFormat::kGguf;
  std::string path_;
  ModelConfig config_;
  TokenizerData tokenizer_;
  std::vector<TensorRef> tensors_;
  uint64_t total_bytes_ = 0;
  int64_t n_params_ = 0;
  uint64_t file_bytes_ = 0;
  uint32_t gguf_version_ = 0;
  std::unique_ptr<GgufFile> gguf_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;

  mutable std::once_flag fingerprint_once_;
  mutable std::string fingerprint_;
};

// A tensor the config implies: canonical name and row-major shape.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};
// Every tensor a model with config `c` must have, in canonical order (see Model::tensors()):
// token_embd [vocab, d_model]; per layer attn_norm [d_model], attn_q [n_heads*head_dim,
// d_model], attn_k and attn_v [n_kv_heads*head_dim, d_model], their biases if qkv_bias,
// attn_q_norm and attn_k_norm [head_dim] if qk_norm, attn_output [d_model, n_heads*head_dim]
// (+ bias [d_model] if attn_output_bias), ffn_norm [d_model], ffn_gate and ffn_up [d_ff,
// d_model], ffn_down [d_model, d_ff]; output_norm [d_model]; output [vocab, d_model] unless
// tied; rope_freqs [rotary_dims / 2] if rope.has_freq_factors.
std::vector<TensorSpec> ExpectedTensors(const ModelConfig& c);

// The fingerprint of `config` and `tensors` as Model::fingerprint() defines it (for tests
// and tools that assemble weights without a file).
std::string ComputeModelFingerprint(const ModelConfig& config,
                                    const std::vector<TensorRef>& tensors);

}  // namespace mnemo::engine
