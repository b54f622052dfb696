// Tiny random-weight models for tests (the library behind `mnemo make-test-model`).
//
// A test model has the tensors and metadata of a real checkpoint of its architecture
// (llama, mistral, qwen2 with QKV bias, qwen3 with QK-norm), deterministic pseudo-random
// weights, and a small real tokenizer: byte-level BPE over GPT-2's byte alphabet (the 256
// byte symbols, a few dozen merges) with the special tokens <|endoftext|>, <|im_start|>,
// <|im_end|> and a ChatML chat template.
//
//   GGUF         one file: llama.cpp metadata keys, tokenizer.ggml.* (model "gpt2", pre
//                "qwen2"), matrices in `dtype` (any of F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q4_K
//                Q5_K Q6_K), 1-D tensors (norms, biases) in F32 as llama.cpp writes them.
//                Mistral is written as general.architecture "llama", as converters do.
//   safetensors  a folder: config.json, model.safetensors (every tensor in `dtype`: F32, F16
//                or BF16), tokenizer.json, tokenizer_config.json.
//
// Everything is a pure function of the options: the same options give byte-identical files.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/model_config.h"
#include "engine/model/tokenizer.h"
#include "kernels/dtype.h"

namespace mnemo::engine {

enum class TestModelFormat : uint8_t { kGguf, kSafetensors };

struct TestModelOptions {
  Architecture arch = Architecture::kLlama;
  kernels::DType dtype = kernels::DType::kF32;
  TestModelFormat format = TestModelFormat::kGguf;
  // Every row length (d_model, n_heads * head_dim, d_ff) is a multiple of 256, so that every
  // quantized dtype (K-quants: 256-element blocks) works with the defaults.
  int n_layers = 2;
  int d_model = 256;
  int n_heads = 4;
  int n_kv_heads = 2;
  int head_dim = 64;
  int d_ff = 512;
  int context_length = 1024;
  float rope_base = 10000.0f;
  float norm_eps = 1e-5f;
  int sliding_window = 0;  // mistral, qwen2, qwen3 only
  uint64_t seed = 1;
  bool tied_embeddings = false;
};

// The config a reader derives from the written model (ConfigFromGguf / ConfigFromHfJson),
// or InvalidArgument naming the bad option (a dtype the format cannot hold, a row length
// that is not a multiple of the dtype's block, sizes that fail ModelConfig::Validate, ...).
absl::StatusOr<ModelConfig> TestModelConfig(const TestModelOptions& opts);

// Writes the model to `out_path`: a .gguf file, or a folder (created if needed) for
// safetensors. Files are written atomically. InvalidArgument for bad options, Unavailable
// for I/O errors.
absl::Status WriteTestModel(const TestModelOptions& opts, const std::string& out_path);

// The source values of tensor `name` (canonical) with row-major `shape`, before conversion
// to the weight dtype: uniform in [-1, 1) / sqrt(row length) for matrices (the embedding:
// [-1, 1)), 1 + [-0.1, 0.1) for norm weights, [-0.1, 0.1) for biases. Seeded by
// (opts.seed, name) only, so the same tensor has the same values in every format and dtype.
std::vector<float> TestModelTensorValues(const TestModelOptions& opts, std::string_view name,
                                         const std::vector<int64_t>& shape);

// The dtype `name` is stored in: opts.dtype, except 1-D tensors in GGUF (F32).
kernels::DType TestModelTensorDType(const TestModelOptions& opts,
                                    const std::vector<int64_t>& shape);

// The tokenizer every test model carries (as GGUF metadata would load it).
TokenizerData TestModelTokenizerData();

// Ids of its special tokens.
inline constexpr int kTestModelNumMerges = 40;
inline constexpr TokenId kTestModelEndOfText = 256 + kTestModelNumMerges;
inline constexpr TokenId kTestModelImStart = kTestModelEndOfText + 1;
inline constexpr TokenId kTestModelImEnd = kTestModelEndOfText + 2;
inline constexpr int kTestModelVocabSize = kTestModelEndOfText + 3;

}  // namespace mnemo::engine
