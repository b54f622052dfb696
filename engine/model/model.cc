#include "engine/model/model.h"

#include <algorithm>
#include <set>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/model/gguf.h"
#include "engine/model/internal/file_io.h"
#include "engine/model/internal/status_util.h"
#include "engine/model/safetensors.h"
#include "engine/model/tensor_names.h"
#include "nlohmann/json.hpp"

namespace mnemo::engine {
namespace {

using kernels::DType;
using model_internal::InvalidArgument;

constexpr uint64_t kMaxConfigBytes = 16ull << 20;
constexpr uint64_t kMaxTokenizerBytes = 1ull << 30;

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string JoinPath(const std::string& dir, std::string_view file) {
  if (!dir.empty() && dir.back() == '/') return absl::StrCat(dir, AsAbsl(file));
  return absl::StrCat(dir, "/", AsAbsl(file));
}

bool IsWeightDType(DType t) {
  switch (t) {
    case DType::kI8:
    case DType::kI16:
    case DType::kI32:
    case DType::kI64:
    case DType::kF64:
      return false;
    default:
      return true;
  }
}

}  // namespace

std::vector<TensorSpec> ExpectedTensors(const ModelConfig& c) {
  const int64_t d = c.d_model;
  const int64_t q = int64_t{c.n_heads} * c.head_dim;
  const int64_t kv = int64_t{c.n_kv_heads} * c.head_dim;
  const int64_t ff = c.d_ff;
  const int64_t vocab = c.vocab_size;
  std::vector<TensorSpec> out;
  out.push_back({"token_embd.weight", {vocab, d}});
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("blk.", l, ".");
    out.push_back({p + "attn_norm.weight", {d}});
    out.push_back({p + "attn_q.weight", {q, d}});
    out.push_back({p + "attn_k.weight", {kv, d}});
    out.push_back({p + "attn_v.weight", {kv, d}});
    if (c.qkv_bias) {
      out.push_back({p + "attn_q.bias", {q}});
      out.push_back({p + "attn_k.bias", {kv}});
      out.push_back({p + "attn_v.bias", {kv}});
    }
    if (c.qk_norm) {
      out.push_back({p + "attn_q_norm.weight", {c.head_dim}});
      out.push_back({p + "attn_k_norm.weight", {c.head_dim}});
    }
    out.push_back({p + "attn_output.weight", {d, q}});
    if (c.attn_output_bias) out.push_back({p + "attn_output.bias", {d}});
    out.push_back({p + "ffn_norm.weight", {d}});
    out.push_back({p + "ffn_gate.weight", {ff, d}});
    out.push_back({p + "ffn_up.weight", {ff, d}});
    out.push_back({p + "ffn_down.weight", {d, ff}});
  }
  out.push_back({"output_norm.weight", {d}});
  if (!c.tied_embeddings) out.push_back({"output.weight", {vocab, d}});
  if (c.rope.has_freq_factors) out.push_back({"rope_freqs.weight", {c.rope.rotary_dims / 2}});
  return out;
}

namespace {

// Sort key of the canonical order: token_embd, layers, output_norm, output, others.
std::tuple<int, int, int, std::string_view> OrderKey(const std::string& name) {
  if (name == "token_embd.weight") return {0, 0, 0, name};
  if (std::optional<LayerTensorName> l = ParseLayerTensorName(name)) {
    const int rank = LayerTensorRank(l->suffix);
    return {1, l->layer, rank < 0 ? 1000 : rank, name};
  }
  if (name == "output_norm.weight") return {2, 0, 0, name};
  if (name == "output.weight") return {3, 0, 0, name};
  return {4, 0, 0, name};
}

// "tensor "blk.0.attn_q.weight"" plus its name in the file when that differs.
std::string Describe(const std::string& name, std::string_view source) {
  if (source.empty() || source == name) return absl::StrCat("tensor \"", name, "\"");
  return absl::StrCat("tensor \"", name, "\" (\"", AsAbsl(source), "\" in the file)");
}

}  // namespace

int64_t TensorRef::n_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Model::~Model() = default;

absl::StatusOr<std::unique_ptr<Model>> Model::Open(const std::string& path) {
  std::unique_ptr<Model> m(new Model());
  m->path_ = path;
  absl::Status s;
  if (model_internal::IsDirectory(path)) {
    m->format_ = WeightFormat::kSafetensors;
    s = m->OpenSafetensorsFolder(path);
  } else if (path.ends_with(".safetensors") || path.ends_with("config.json")) {
    return InvalidArgument(absl::StrCat(
        path, ": open the folder that holds config.json and the .safetensors files instead"));
  } else {
    m->format_ = WeightFormat::kGguf;
    s = m->OpenGguf(path);
  }
  MNEMO_MODEL_RETURN_IF_ERROR(s);
  MNEMO_MODEL_RETURN_IF_ERROR(model_internal::Annotate(m->Finish(), path));
  return m;
}

absl::Status Model::OpenGguf(const std::string& path) {
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(path);
  if (!file.ok()) {
    // Parse errors name the field and offset but not the file.
    if (file.status().message().find(AsAbsl(path)) != absl::string_view::npos) {
      return file.status();
    }
    return model_internal::Annotate(file.status(), path);
  }
  gguf_ = *std::move(file);
  file_bytes_ = gguf_->file_size();
  gguf_version_ = gguf_->version();
  absl::StatusOr<ModelConfig> config = ConfigFromGguf(*gguf_);
  if (!config.ok()) return model_internal::Annotate(config.status(), path);
  config_ = *std::move(config);
  absl::StatusOr<TokenizerData> tok = TokenizerDataFromGguf(*gguf_);
  if (!tok.ok()) return model_internal::Annotate(tok.status(), path);
  tokenizer_ = *std::move(tok);
  tensors_.reserve(gguf_->tensors().size());
  for (const GgufTensorInfo& info : gguf_->tensors()) {
    TensorRef t;
    t.name = info.name;
    t.source_name = info.name;
    t.shape.assign(info.ne.rbegin(), info.ne.rend());
    t.dtype = info.dtype;
    t.bytes = info.bytes;
    t.data = info.data;
    tensors_.push_back(std::move(t));
  }
  return absl::OkStatus();
}

absl::Status Model::OpenSafetensorsFolder(const std::string& dir) {
  const std::string config_path = JoinPath(dir, "config.json");
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::string config_text,
                               model_internal::ReadFileToString(config_path, kMaxConfigBytes));
  absl::StatusOr<ModelConfig> config = ConfigFromHfJson(config_text);
  if (!config.ok()) return model_internal::Annotate(config.status(), dir);
  config_ = *std::move(config);

  const std::string index_path = JoinPath(dir, "model.safetensors.index.json");
  const std::string single_path = JoinPath(dir, "model.safetensors");
  absl::StatusOr<std::string> index_text =
      model_internal::ReadFileToString(index_path, kMaxConfigBytes * 4);
  if (index_text.ok()) {
    nlohmann::json index = nlohmann::json::parse(*index_text, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object()) {
      return InvalidArgument(absl::StrCat(index_path, ": not a JSON object"));
    }
    auto map = index.find("weight_map");
    if (map == index.end() || !map->is_object()) {
      return InvalidArgument(absl::StrCat(index_path, ": missing object \"weight_map\""));
    }
    std::set<std::string> files;
    for (const auto& [name, file] : map->items()) {
      if (!file.is_string()) {
        return InvalidArgument(
            absl::StrCat(index_path, ": weight_map entry \"", name, "\" is not a string"));
      }
      const std::string f = file.get<std::string>();
      if (f.empty() || f == "." || f == ".." || f.find('/') != std::string::npos ||
          f.find('\\') != std::string::npos) {
        return InvalidArgument(absl::StrCat(index_path, ": weight_map entry \"", name,
                                            "\" names an invalid shard \"", f, "\""));
      }
      files.insert(f);
    }
    if (files.empty()) return InvalidArgument(absl::StrCat(index_path, ": weight_map is empty"));
    absl::flat_hash_map<std::string, std::string> found_in;  // source name -> shard
    for (const std::string& f : files) {
      MNEMO_MODEL_ASSIGN_OR_RETURN(std::vector<std::string> names,
                                   AddSafetensorsFile(JoinPath(dir, f)));
      for (std::string& n : names) found_in[std::move(n)] = f;
    }
    for (const auto& [name, file] : map->items()) {
      auto it = found_in.find(name);
      if (it == found_in.end() || it->second != file.get<std::string>()) {
        return InvalidArgument(absl::StrCat(index_path, ": weight_map puts \"", name, "\" in ",
                                            file.get<std::string>(), ", which does not hold it"));
      }
    }
  } else if (index_text.status().code() == absl::StatusCode::kNotFound) {
    absl::StatusOr<std::vector<std::string>> names = AddSafetensorsFile(single_path);
    if (names.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat(
          dir, ": no model.safetensors or model.safetensors.index.json in the folder"));
    }
    MNEMO_MODEL_RETURN_IF_ERROR(names.status());
  } else {
    return index_text.status();
  }

  const std::string tok_path = JoinPath(dir, "tokenizer.json");
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::string tok_text,
                               model_internal::ReadFileToString(tok_path, kMaxTokenizerBytes));
  absl::StatusOr<std::string> tok_config =
      model_internal::ReadFileToString(JoinPath(dir, "tokenizer_config.json"), kMaxTokenizerBytes);
  if (!tok_config.ok() && tok_config.status().code() != absl::StatusCode::kNotFound) {
    return tok_config.status();
  }
  absl::StatusOr<TokenizerData> tok =
      TokenizerDataFromHfJson(tok_text, tok_config.ok() ? *tok_config : std::string());
  if (!tok.ok()) return model_internal::Annotate(tok.status(), dir);
  tokenizer_ = *std::move(tok);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> Model::AddSafetensorsFile(const std::string& file) {
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> st, SafetensorsFile::Open(file));
  file_bytes_ += st->file_size();
  std::vector<std::string> names;
  for (const SafetensorsTensor& s : st->tensors()) {
    names.push_back(s.name);
    if (IsIgnoredHfTensor(s.name)) continue;
    std::optional<std::string> canonical = CanonicalFromHfName(s.name);
    if (!canonical) {
      return InvalidArgument(absl::StrFormat("%s: tensor \"%s\" is not a tensor of a %s model",
                                             file, s.name, config_.arch_name));
    }
    // Tied checkpoints sometimes store the output projection anyway; it is the embedding.
    if (config_.tied_embeddings && *canonical == "output.weight") continue;
    TensorRef t;
    t.name = *std::move(canonical);
    t.source_name = s.name;
    t.shape = s.shape;
    t.dtype = s.dtype;
    t.bytes = s.bytes;
    t.data = s.data;
    tensors_.push_back(std::move(t));
  }
  shards_.push_back(std::move(st));
  return names;
}

absl::Status Model::Finish() {
  // Special tokens the weights' config leaves unset come from the tokenizer.
  const std::pair<int32_t*, TokenId> fill[] = {{&config_.bos, tokenizer_.bos},
                                               {&config_.eos, tokenizer_.eos},
                                               {&config_.eot, tokenizer_.eot},
                                               {&config_.pad, tokenizer_.pad},
                                               {&config_.unk, tokenizer_.unk}};
  for (const auto& [field, id] : fill) {
    if (*field < 0 && id >= 0 && id < config_.vocab_size) *field = id;
  }
  if (tokenizer_.tokens.size() > static_cast<size_t>(config_.vocab_size)) {
    return InvalidArgument(
        absl::StrFormat("the tokenizer has %d tokens but the model's vocabulary has only %d rows",
                        tokenizer_.tokens.size(), config_.vocab_size));
  }

  std::sort(tensors_.begin(), tensors_.end(), [](const TensorRef& a, const TensorRef& b) {
    return OrderKey(a.name) < OrderKey(b.name);
  });
  for (size_t i = 1; i < tensors_.size(); ++i) {
    if (tensors_[i].name == tensors_[i - 1].name) {
      return InvalidArgument(absl::StrFormat("tensor \"%s\" appears twice (\"%s\" and \"%s\")",
                                             tensors_[i].name, tensors_[i - 1].source_name,
                                             tensors_[i].source_name));
    }
  }

  const std::vector<TensorSpec> expected = ExpectedTensors(config_);
  absl::flat_hash_map<std::string, const TensorSpec*> want;
  for (const TensorSpec& e : expected) want[e.name] = &e;
  const bool hf = format_ == WeightFormat::kSafetensors;
  for (const TensorSpec& e : expected) {
    const TensorRef* t = FindTensor(e.name);
    if (t == nullptr) {
      std::optional<std::string> hf_name = hf ? HfNameFromCanonical(e.name) : std::nullopt;
      return InvalidArgument(
          absl::StrFormat("missing tensor \"%s\"%s, expected shape %s", e.name,
                          hf_name ? absl::StrCat(" (\"", *hf_name, "\" in safetensors)") : "",
                          ShapeString(e.shape)));
    }
    if (t->shape != e.shape) {
      return InvalidArgument(absl::StrFormat("%s has shape %s, expected %s",
                                             Describe(t->name, t->source_name),
                                             ShapeString(t->shape), ShapeString(e.shape)));
    }
  }
  for (const TensorRef& t : tensors_) {
    if (!IsWeightDType(t.dtype)) {
      return InvalidArgument(absl::StrFormat("%s has dtype %s, which is not a weight dtype",
                                             Describe(t.name, t.source_name),
                                             kernels::DTypeName(t.dtype)));
    }
    const int block = kernels::GetDTypeInfo(t.dtype).block_elems;
    if (t.shape.empty() || t.shape.back() % block != 0) {
      return InvalidArgument(absl::StrFormat("%s: shape %s does not hold whole %s blocks of %d",
                                             Describe(t.name, t.source_name), ShapeString(t.shape),
                                             kernels::DTypeName(t.dtype), block));
    }
    if (want.contains(t.name)) continue;
    // Anything else must be a tensor the config does not know of: a per-layer tensor of a
    // layer that does not exist, or a known kind the config does not use, would be ignored
    // silently and give wrong results.
    std::optional<LayerTensorName> l = ParseLayerTensorName(t.name);
    if (l && l->layer >= config_.n_layers) {
      return InvalidArgument(absl::StrFormat("%s belongs to layer %d, but the model has %d",
                                             Describe(t.name, t.source_name), l->layer,
                                             config_.n_layers));
    }
    if ((l && LayerTensorRank(l->suffix) >= 0) || t.name == "output.weight" ||
        t.name == "rope_freqs.weight") {
      return InvalidArgument(absl::StrFormat(
          "%s is present but the config does not use it (qkv_bias=%d, attn_output_bias=%d, "
          "qk_norm=%d, tied_embeddings=%d)",
          Describe(t.name, t.source_name), config_.qkv_bias, config_.attn_output_bias,
          config_.qk_norm, config_.tied_embeddings));
    }
  }

  total_bytes_ = 0;
  n_params_ = 0;
  for (const TensorRef& t : tensors_) {
    total_bytes_ += t.bytes;
    n_params_ += t.n_elements();
  }
  return absl::OkStatus();
}

const TensorRef* Model::FindTensor(std::string_view name) const {
  // tensors_ is sorted by OrderKey: binary search on it.
  const std::string key(name);
  auto it = std::lower_bound(
      tensors_.begin(), tensors_.end(), key,
      [](const TensorRef& t, const std::string& k) { return OrderKey(t.name) < OrderKey(k); });
  if (it != tensors_.end() && it->name == name) return &*it;
  return nullptr;
}

const std::string& Model::fingerprint() const {
  std::call_once(fingerprint_once_,
                 [this] { fingerprint_ = ComputeModelFingerprint(config_, tensors_); });
  return fingerprint_;
}

}  // namespace mnemo::engine
