// ConfigFromGguf: ModelConfig from GGUF metadata (llama.cpp's key names) and tensor presence.
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/gguf.h"
#include "engine/model/internal/config_util.h"
#include "engine/model/internal/status_util.h"
#include "engine/model/model_config.h"

namespace mnemo::engine {
namespace {

using model_internal::InvalidArgument;

// Typed access to GGUF metadata where every error is InvalidArgument naming the key.
class GgufKeys {
 public:
  explicit GgufKeys(const GgufFile& f) : f_(f) {}

  absl::Status Missing(const std::string& key) const {
    return InvalidArgument(absl::StrFormat("GGUF: missing required key \"%s\"", key));
  }
  absl::Status WrongType(const std::string& key, const char* want, const GgufValue& v) const {
    return InvalidArgument(absl::StrFormat("GGUF: key \"%s\" must be %s, got %s %s", key, want,
                                           GgufTypeName(v.type()), v.DebugString(4)));
  }

  absl::StatusOr<std::optional<int64_t>> OptInt(const std::string& key) const {
    const GgufValue* v = f_.Find(key);
    if (v == nullptr) return std::optional<int64_t>();
    std::optional<int64_t> i = v->AsInt();
    if (!i || v->type() == GgufType::kBool || v->type() == GgufType::kFloat32 ||
        v->type() == GgufType::kFloat64) {
      return WrongType(key, "an integer", *v);
    }
    return i;
  }
  // An integer that fits in int (sizes, counts).
  absl::StatusOr<std::optional<int>> OptInt32(const std::string& key) const {
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<int64_t> v, OptInt(key));
    if (!v) return std::optional<int>();
    if (*v < 0 || *v > std::numeric_limits<int32_t>::max()) {
      return InvalidArgument(absl::StrFormat("GGUF: key \"%s\" = %d is out of range", key, *v));
    }
    return std::optional<int>(static_cast<int>(*v));
  }
  absl::StatusOr<int> Int32(const std::string& key) const {
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<int> v, OptInt32(key));
    if (!v) return Missing(key);
    return *v;
  }
  absl::StatusOr<std::optional<double>> OptFloat(const std::string& key) const {
    const GgufValue* v = f_.Find(key);
    if (v == nullptr) return std::optional<double>();
    std::optional<double> d = v->AsFloat();
    if (!d || v->type() == GgufType::kBool) return WrongType(key, "a number", *v);
    return d;
  }
  absl::StatusOr<double> Float(const std::string& key) const {
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<double> v, OptFloat(key));
    if (!v) return Missing(key);
    return *v;
  }
  absl::StatusOr<std::optional<std::string>> OptString(const std::string& key) const {
    const GgufValue* v = f_.Find(key);
    if (v == nullptr) return std::optional<std::string>();
    const std::string* s = v->AsString();
    if (s == nullptr) return WrongType(key, "a string", *v);
    return std::optional<std::string>(*s);
  }
  absl::StatusOr<std::string> String(const std::string& key) const {
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<std::string> v, OptString(key));
    if (!v) return Missing(key);
    return *v;
  }
  // A token id: unsigned 32-bit in practice; absent or u32/i32 -1 -> -1.
  absl::StatusOr<int64_t> TokenId(const std::string& key) const {
    const GgufValue* v = f_.Find(key);
    if (v == nullptr) return int64_t{-1};
    std::optional<int64_t> i = v->AsInt();
    if (!i) {
      std::optional<uint64_t> u = v->AsUint();
      if (!u) return WrongType(key, "an integer", *v);
      return int64_t{-1};  // does not fit int64: certainly not a valid id
    }
    if (v->type() == GgufType::kFloat32 || v->type() == GgufType::kFloat64 ||
        v->type() == GgufType::kBool) {
      return WrongType(key, "an integer", *v);
    }
    return *i;
  }

 private:
  const GgufFile& f_;
};

absl::Status ReadGgufRope(const GgufKeys& k, const std::string& p, const GgufFile& f,
                          ModelConfig& c) {
  RopeConfig& rope = c.rope;
  rope.style = (c.arch == Architecture::kQwen2 || c.arch == Architecture::kQwen3)
                   ? RopeStyle::kNeox
                   : RopeStyle::kNormal;
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<double> base, k.OptFloat(p + "rope.freq_base"));
  rope.base = static_cast<float>(base.value_or(10000.0));
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<int> dims, k.OptInt32(p + "rope.dimension_count"));
  rope.rotary_dims = dims.value_or(c.head_dim);

  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<std::string> type,
                               k.OptString(p + "rope.scaling.type"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<double> factor, k.OptFloat(p + "rope.scaling.factor"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<double> legacy_linear,
                               k.OptFloat(p + "rope.scale_linear"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<int> orig,
                               k.OptInt32(p + "rope.scaling.original_context_length"));
  rope.original_context = orig.value_or(0);
  if (!type && legacy_linear && *legacy_linear != 1.0) {
    type = "linear";
    factor = legacy_linear;
  }
  const std::string type_key = p + "rope.scaling.type";
  if (!type || *type == "none") {
    rope.scaling = RopeScalingKind::kNone;
  } else if (*type == "linear") {
    rope.scaling = RopeScalingKind::kLinear;
    if (!factor) return k.Missing(p + "rope.scaling.factor");
    rope.factor = static_cast<float>(*factor);
  } else if (*type == "yarn") {
    rope.scaling = RopeScalingKind::kYarn;
    if (!factor) return k.Missing(p + "rope.scaling.factor");
    rope.factor = static_cast<float>(*factor);
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<double> bf,
                                 k.OptFloat(p + "rope.scaling.yarn_beta_fast"));
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<double> bs,
                                 k.OptFloat(p + "rope.scaling.yarn_beta_slow"));
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<double> af,
                                 k.OptFloat(p + "rope.scaling.attn_factor"));
    rope.beta_fast = static_cast<float>(bf.value_or(32.0));
    rope.beta_slow = static_cast<float>(bs.value_or(1.0));
    rope.attn_factor =
        static_cast<float>(af.value_or(1.0) * model_internal::YarnDefaultMscale(*factor));
  } else if (*type == "llama3") {
    rope.scaling = RopeScalingKind::kLlama3;
    if (factor) rope.factor = static_cast<float>(*factor);
  } else {
    return InvalidArgument(absl::StrFormat(
        "GGUF: key \"%s\" = \"%s\" is not supported (supported: none, linear, yarn)", type_key,
        *type));
  }
  // llama3-style scaling is stored as precomputed per-dimension divisors.
  if (f.FindTensor("rope_freqs.weight") != nullptr) {
    if (rope.scaling != RopeScalingKind::kNone && rope.scaling != RopeScalingKind::kLlama3) {
      return InvalidArgument(absl::StrFormat(
          "GGUF: tensor rope_freqs.weight together with %s = \"%s\" is not supported", type_key,
          *type));
    }
    rope.scaling = RopeScalingKind::kLlama3;
    rope.has_freq_factors = true;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ConfigFromGguf(const GgufFile& f) {
  GgufKeys k(f);
  ModelConfig c;
  MNEMO_MODEL_ASSIGN_OR_RETURN(c.arch_name, k.String("general.architecture"));
  std::optional<Architecture> arch = ArchitectureFromName(c.arch_name);
  if (!arch) {
    return InvalidArgument(absl::StrFormat(
        "GGUF: general.architecture \"%s\" is not supported (supported: llama, mistral, qwen2, "
        "qwen3)",
        c.arch_name));
  }
  c.arch = *arch;
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<std::string> name, k.OptString("general.name"));
  c.name = name.value_or("");

  const std::string p = c.arch_name + ".";
  MNEMO_MODEL_ASSIGN_OR_RETURN(c.n_layers, k.Int32(p + "block_count"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(c.d_model, k.Int32(p + "embedding_length"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(c.n_heads, k.Int32(p + "attention.head_count"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<int> kv, k.OptInt32(p + "attention.head_count_kv"));
  c.n_kv_heads = kv.value_or(c.n_heads);
  MNEMO_MODEL_ASSIGN_OR_RETURN(c.d_ff, k.Int32(p + "feed_forward_length"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(c.context_length, k.Int32(p + "context_length"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(double eps, k.Float(p + "attention.layer_norm_rms_epsilon"));
  c.norm_eps = static_cast<float>(eps);

  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<int> key_len, k.OptInt32(p + "attention.key_length"));
  if (key_len) {
    c.head_dim = *key_len;
  } else {
    if (c.n_heads <= 0 || c.d_model % c.n_heads != 0) {
      return InvalidArgument(absl::StrFormat(
          "GGUF: no \"%sattention.key_length\" and embedding_length %d is not a multiple of "
          "head_count %d",
          p, c.d_model, c.n_heads));
    }
    c.head_dim = c.d_model / c.n_heads;
  }
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<int> val_len,
                               k.OptInt32(p + "attention.value_length"));
  if (val_len && *val_len != c.head_dim) {
    return InvalidArgument(absl::StrFormat(
        "GGUF: %sattention.value_length = %d differs from the key length %d (not supported)", p,
        *val_len, c.head_dim));
  }
  MNEMO_MODEL_RETURN_IF_ERROR(ReadGgufRope(k, p, f, c));
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<int> window,
                               k.OptInt32(p + "attention.sliding_window"));
  c.sliding_window = window.value_or(0);

  // Vocabulary: the explicit key, else the token list, else the embedding's rows.
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<int> vocab, k.OptInt32(p + "vocab_size"));
  if (vocab) {
    c.vocab_size = *vocab;
  } else if (const GgufValue* tokens = f.Find("tokenizer.ggml.tokens"); tokens != nullptr) {
    const GgufValue::Array* a = tokens->AsArray();
    if (a == nullptr) return k.WrongType("tokenizer.ggml.tokens", "an array", *tokens);
    if (a->size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      return InvalidArgument("GGUF: tokenizer.ggml.tokens is too long");
    }
    c.vocab_size = static_cast<int>(a->size());
  } else if (const GgufTensorInfo* emb = f.FindTensor("token_embd.weight");
             emb != nullptr && emb->ne.size() == 2 &&
             emb->ne[1] <= std::numeric_limits<int32_t>::max()) {
    c.vocab_size = static_cast<int>(emb->ne[1]);
  } else {
    return InvalidArgument(
        absl::StrFormat("GGUF: cannot tell the vocabulary size: no \"%svocab_size\", no "
                        "\"tokenizer.ggml.tokens\" and no 2-D token_embd.weight",
                        p));
  }

  c.tied_embeddings = f.FindTensor("output.weight") == nullptr;
  c.qkv_bias = f.FindTensor("blk.0.attn_q.bias") != nullptr;
  c.attn_output_bias = f.FindTensor("blk.0.attn_output.bias") != nullptr;
  c.qk_norm = f.FindTensor("blk.0.attn_q_norm.weight") != nullptr;

  struct IdKey {
    const char* key;
    int32_t* field;
  };
  const IdKey ids[] = {{"tokenizer.ggml.bos_token_id", &c.bos},
                       {"tokenizer.ggml.eos_token_id", &c.eos},
                       {"tokenizer.ggml.eot_token_id", &c.eot},
                       {"tokenizer.ggml.padding_token_id", &c.pad},
                       {"tokenizer.ggml.unknown_token_id", &c.unk}};
  for (const IdKey& id : ids) {
    MNEMO_MODEL_ASSIGN_OR_RETURN(int64_t v, k.TokenId(id.key));
    *id.field = model_internal::SpecialId(v, c.vocab_size);
  }

  MNEMO_MODEL_RETURN_IF_ERROR(model_internal::Annotate(c.Validate(), "GGUF"));
  return c;
}

}  // namespace mnemo::engine
