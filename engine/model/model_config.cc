#include "engine/model/model_config.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/internal/config_util.h"
#include "engine/model/internal/status_util.h"
#include "nlohmann/json.hpp"

namespace mnemo::engine {
namespace {

using model_internal::InvalidArgument;

constexpr std::string_view kArchNames[] = {"llama", "mistral", "qwen2", "qwen3"};
constexpr std::string_view kScalingNames[] = {"none", "linear", "llama3", "yarn"};

// float -> double that prints as the float's shortest decimal form (1e-05, not
// 9.999999747378752e-06).
double ShortestDouble(float f) {
  if (!std::isfinite(f)) return static_cast<double>(f);
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf) - 1, f);
  if (ec != std::errc()) return static_cast<double>(f);
  *end = '\0';
  return std::strtod(buf, nullptr);
}

absl::Status CheckRange(const char* field, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return InvalidArgument(
        absl::StrFormat("model config: %s = %d is outside [%d, %d]", field, v, lo, hi));
  }
  return absl::OkStatus();
}

absl::Status CheckPositive(const char* field, float v) {
  if (!std::isfinite(v) || v <= 0.0f) {
    return InvalidArgument(
        absl::StrFormat("model config: %s = %g must be finite and positive", field, v));
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view ArchName(Architecture a) { return kArchNames[static_cast<size_t>(a)]; }

std::optional<Architecture> ArchitectureFromName(std::string_view name) {
  for (size_t i = 0; i < std::size(kArchNames); ++i) {
    if (kArchNames[i] == name) return static_cast<Architecture>(i);
  }
  return std::nullopt;
}

std::string_view RopeScalingKindName(RopeScalingKind k) {
  return kScalingNames[static_cast<size_t>(k)];
}

std::string_view RopeStyleName(RopeStyle s) { return s == RopeStyle::kNormal ? "normal" : "neox"; }

absl::Status ModelConfig::Validate() const {
  MNEMO_MODEL_RETURN_IF_ERROR(CheckRange("n_layers", n_layers, 1, 4096));
  MNEMO_MODEL_RETURN_IF_ERROR(CheckRange("d_model", d_model, 1, 1 << 17));
  MNEMO_MODEL_RETURN_IF_ERROR(CheckRange("n_heads", n_heads, 1, 4096));
  MNEMO_MODEL_RETURN_IF_ERROR(CheckRange("n_kv_heads", n_kv_heads, 1, n_heads));
  if (n_heads % n_kv_heads != 0) {
    return InvalidArgument(absl::StrFormat(
        "model config: n_heads = %d is not a multiple of n_kv_heads = %d", n_heads, n_kv_heads));
  }
  MNEMO_MODEL_RETURN_IF_ERROR(CheckRange("head_dim", head_dim, 1, 4096));
  MNEMO_MODEL_RETURN_IF_ERROR(
      CheckRange("n_heads * head_dim", int64_t{n_heads} * head_dim, 1, 1 << 18));
  MNEMO_MODEL_RETURN_IF_ERROR(CheckRange("d_ff", d_ff, 1, 1 << 20));
  MNEMO_MODEL_RETURN_IF_ERROR(CheckRange("vocab_size", vocab_size, 1, 1 << 24));
  MNEMO_MODEL_RETURN_IF_ERROR(CheckRange("context_length", context_length, 1, 1 << 30));
  MNEMO_MODEL_RETURN_IF_ERROR(CheckRange("rope.rotary_dims", rope.rotary_dims, 2, head_dim));
  if (rope.rotary_dims % 2 != 0) {
    return InvalidArgument(
        absl::StrFormat("model config: rope.rotary_dims = %d is odd", rope.rotary_dims));
  }
  MNEMO_MODEL_RETURN_IF_ERROR(CheckPositive("rope.base", rope.base));
  MNEMO_MODEL_RETURN_IF_ERROR(CheckPositive("rope.factor", rope.factor));
  if (rope.scaling == RopeScalingKind::kLlama3 && !rope.has_freq_factors) {
    MNEMO_MODEL_RETURN_IF_ERROR(
        CheckRange("rope.original_context", rope.original_context, 1, 1 << 30));
    MNEMO_MODEL_RETURN_IF_ERROR(CheckPositive("rope.low_freq_factor", rope.low_freq_factor));
    MNEMO_MODEL_RETURN_IF_ERROR(CheckPositive("rope.high_freq_factor", rope.high_freq_factor));
    if (!(rope.high_freq_factor > rope.low_freq_factor)) {
      return InvalidArgument(absl::StrFormat(
          "model config: rope.high_freq_factor = %g must exceed rope.low_freq_factor = %g",
          rope.high_freq_factor, rope.low_freq_factor));
    }
  }
  if (rope.scaling == RopeScalingKind::kYarn) {
    MNEMO_MODEL_RETURN_IF_ERROR(
        CheckRange("rope.original_context", rope.original_context, 1, 1 << 30));
    MNEMO_MODEL_RETURN_IF_ERROR(CheckPositive("rope.beta_fast", rope.beta_fast));
    MNEMO_MODEL_RETURN_IF_ERROR(CheckPositive("rope.beta_slow", rope.beta_slow));
    MNEMO_MODEL_RETURN_IF_ERROR(CheckPositive("rope.attn_factor", rope.attn_factor));
  }
  if (!std::isfinite(norm_eps) || norm_eps <= 0.0f || norm_eps >= 1.0f) {
    return InvalidArgument(
        absl::StrFormat("model config: norm_eps = %g must be in (0, 1)", norm_eps));
  }
  MNEMO_MODEL_RETURN_IF_ERROR(CheckRange("sliding_window", sliding_window, 0, 1 << 30));
  const std::pair<const char*, int32_t> ids[] = {
      {"bos", bos}, {"eos", eos}, {"eot", eot}, {"pad", pad}, {"unk", unk}};
  for (const auto& [field, id] : ids) {
    MNEMO_MODEL_RETURN_IF_ERROR(CheckRange(field, id, -1, int64_t{vocab_size} - 1));
  }
  return absl::OkStatus();
}

std::string ModelConfig::ToJson() const {
  nlohmann::ordered_json r = nlohmann::ordered_json::object();
  r["base"] = ShortestDouble(rope.base);
  r["rotary_dims"] = rope.rotary_dims;
  r["style"] = std::string(RopeStyleName(rope.style));
  r["scaling"] = std::string(RopeScalingKindName(rope.scaling));
  if (rope.scaling != RopeScalingKind::kNone) {
    r["factor"] = ShortestDouble(rope.factor);
    r["original_context"] = rope.original_context;
  }
  if (rope.scaling == RopeScalingKind::kLlama3) {
    r["low_freq_factor"] = ShortestDouble(rope.low_freq_factor);
    r["high_freq_factor"] = ShortestDouble(rope.high_freq_factor);
    r["has_freq_factors"] = rope.has_freq_factors;
  }
  if (rope.scaling == RopeScalingKind::kYarn) {
    r["beta_fast"] = ShortestDouble(rope.beta_fast);
    r["beta_slow"] = ShortestDouble(rope.beta_slow);
    r["attn_factor"] = ShortestDouble(rope.attn_factor);
  }
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  j["arch"] = std::string(ArchName(arch));
  j["arch_name"] = arch_name;
  j["name"] = name;
  j["n_layers"] = n_layers;
  j["d_model"] = d_model;
  j["n_heads"] = n_heads;
  j["n_kv_heads"] = n_kv_heads;
  j["head_dim"] = head_dim;
  j["d_ff"] = d_ff;
  j["vocab_size"] = vocab_size;
  j["context_length"] = context_length;
  j["rope"] = std::move(r);
  j["norm_eps"] = ShortestDouble(norm_eps);
  j["tied_embeddings"] = tied_embeddings;
  j["qkv_bias"] = qkv_bias;
  j["attn_output_bias"] = attn_output_bias;
  j["qk_norm"] = qk_norm;
  j["sliding_window"] = sliding_window;
  j["bos"] = bos;
  j["eos"] = eos;
  j["eot"] = eot;
  j["pad"] = pad;
  j["unk"] = unk;
  // Names may hold arbitrary bytes; replace invalid UTF-8 instead of throwing.
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// ---- Hugging Face config.json ----

namespace {

using Json = nlohmann::json;

// Typed access to the keys of one JSON object; every error names the key. A key whose value
// is null counts as absent.
class JsonKeys {
 public:
  JsonKeys(const Json& obj, std::string where) : obj_(obj), where_(std::move(where)) {}

  const Json* Find(const char* key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  absl::Status Missing(const char* key) const {
    return InvalidArgument(absl::StrFormat("%s: missing required key \"%s\"", where_, key));
  }
  absl::Status WrongType(const char* key, const char* want, const Json& got) const {
    return InvalidArgument(absl::StrFormat("%s: key \"%s\" must be %s, got %s %s", where_, key,
                                           want, got.type_name(), Abbreviate(got)));
  }
  absl::StatusOr<std::optional<int64_t>> OptInt(const char* key) const {
    const Json* v = Find(key);
    if (v == nullptr) return std::optional<int64_t>();
    if (v->is_number_unsigned()) {
      if (v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
        return WrongType(key, "an integer below 2^31", *v);
      }
      return std::optional<int64_t>(static_cast<int64_t>(v->get<uint64_t>()));
    }
    if (v->is_number_integer()) {
      const int64_t i = v->get<int64_t>();
      if (i < std::numeric_limits<int32_t>::min()) {
        return WrongType(key, "an integer above -2^31", *v);
      }
      return std::optional<int64_t>(i);
    }
    return WrongType(key, "an integer", *v);
  }
  absl::StatusOr<int> Int(const char* key) const {
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<int64_t> v, OptInt(key));
    if (!v) return Missing(key);
    return static_cast<int>(*v);
  }
  absl::StatusOr<std::optional<double>> OptFloat(const char* key) const {
    const Json* v = Find(key);
    if (v == nullptr) return std::optional<double>();
    if (!v->is_number()) return WrongType(key, "a number", *v);
    return std::optional<double>(v->get<double>());
  }
  absl::StatusOr<double> Float(const char* key) const {
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<double> v, OptFloat(key));
    if (!v) return Missing(key);
    return *v;
  }
  absl::StatusOr<std::optional<bool>> OptBool(const char* key) const {
    const Json* v = Find(key);
    if (v == nullptr) return std::optional<bool>();
    if (!v->is_boolean()) return WrongType(key, "a boolean", *v);
    return std::optional<bool>(v->get<bool>());
  }
  absl::StatusOr<std::optional<std::string>> OptString(const char* key) const {
    const Json* v = Find(key);
    if (v == nullptr) return std::optional<std::string>();
    if (!v->is_string()) return WrongType(key, "a string", *v);
    return std::optional<std::string>(v->get<std::string>());
  }
  absl::StatusOr<std::string> String(const char* key) const {
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<std::string> v, OptString(key));
    if (!v) return Missing(key);
    return *v;
  }
  // A token id given as an integer, a list of integers (the first counts) or null.
  absl::StatusOr<int64_t> TokenId(const char* key) const {
    const Json* v = Find(key);
    if (v == nullptr) return int64_t{-1};
    const Json* first = v;
    if (v->is_array()) {
      if (v->empty()) return int64_t{-1};
      first = &(*v)[0];
    }
    if (first->is_number_integer()) return first->get<int64_t>();
    return WrongType(key, "an integer or a list of integers", *v);
  }
  const std::string& where() const { return where_; }

 private:
  static std::string Abbreviate(const Json& j) {
    std::string s = j.dump(-1, ' ', false, Json::error_handler_t::replace);
    if (s.size() > 40) s = s.substr(0, 37) + "...";
    return s;
  }
  const Json& obj_;
  std::string where_;
};

// Reads rope_scaling (or transformers v5 rope_parameters) into `rope`.
absl::Status ReadHfRopeScaling(const JsonKeys& top, int context_length, RopeConfig& rope) {
  const char* key = "rope_scaling";
  const Json* rs = top.Find(key);
  if (rs == nullptr) {
    key = "rope_parameters";
    rs = top.Find(key);
  }
  if (rs == nullptr) return absl::OkStatus();
  if (!rs->is_object()) return top.WrongType(key, "an object or null", *rs);
  JsonKeys k(*rs, absl::StrCat(top.where(), ": ", key));
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<std::string> type, k.OptString("rope_type"));
  if (!type) {
    MNEMO_MODEL_ASSIGN_OR_RETURN(type, k.OptString("type"));
  }
  if (!type) return k.Missing("rope_type");
  if (key == std::string_view("rope_parameters")) {
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<double> theta, k.OptFloat("rope_theta"));
    if (theta) rope.base = static_cast<float>(*theta);
  }
  if (*type == "default") return absl::OkStatus();
  if (*type == "linear") {
    rope.scaling = RopeScalingKind::kLinear;
    MNEMO_MODEL_ASSIGN_OR_RETURN(double f, k.Float("factor"));
    rope.factor = static_cast<float>(f);
    return absl::OkStatus();
  }
  if (*type == "llama3") {
    rope.scaling = RopeScalingKind::kLlama3;
    MNEMO_MODEL_ASSIGN_OR_RETURN(double f, k.Float("factor"));
    MNEMO_MODEL_ASSIGN_OR_RETURN(double lo, k.Float("low_freq_factor"));
    MNEMO_MODEL_ASSIGN_OR_RETURN(double hi, k.Float("high_freq_factor"));
    MNEMO_MODEL_ASSIGN_OR_RETURN(rope.original_context, k.Int("original_max_position_embeddings"));
    rope.factor = static_cast<float>(f);
    rope.low_freq_factor = static_cast<float>(lo);
    rope.high_freq_factor = static_cast<float>(hi);
    return absl::OkStatus();
  }
  if (*type == "yarn") {
    rope.scaling = RopeScalingKind::kYarn;
    MNEMO_MODEL_ASSIGN_OR_RETURN(double f, k.Float("factor"));
    rope.factor = static_cast<float>(f);
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<int64_t> orig,
                                 k.OptInt("original_max_position_embeddings"));
    rope.original_context = orig ? static_cast<int>(*orig) : context_length;
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<double> bf, k.OptFloat("beta_fast"));
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<double> bs, k.OptFloat("beta_slow"));
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<double> af, k.OptFloat("attention_factor"));
    rope.beta_fast = static_cast<float>(bf.value_or(32.0));
    rope.beta_slow = static_cast<float>(bs.value_or(1.0));
    rope.attn_factor = static_cast<float>(af.value_or(model_internal::YarnDefaultMscale(f)));
    return absl::OkStatus();
  }
  return InvalidArgument(absl::StrFormat(
      "%s: rope_type \"%s\" is not supported (supported: default, linear, llama3, yarn)", k.where(),
      *type));
}

}  // namespace

absl::StatusOr<ModelConfig> ConfigFromHfJson(std::string_view config_json) {
  Json j;
  try {
    j = Json::parse(config_json.begin(), config_json.end(), nullptr, /*allow_exceptions=*/false);
  } catch (const std::exception& e) {
    return InvalidArgument(absl::StrCat("config.json: not valid JSON: ", e.what()));
  }
  if (j.is_discarded()) return InvalidArgument("config.json: not valid JSON");
  if (!j.is_object()) return InvalidArgument("config.json: not a JSON object");
  JsonKeys k(j, "config.json");

  ModelConfig c;
  MNEMO_MODEL_ASSIGN_OR_RETURN(c.arch_name, k.String("model_type"));
  std::optional<Architecture> arch = ArchitectureFromName(c.arch_name);
  if (!arch) {
    return InvalidArgument(absl::StrFormat(
        "config.json: model_type \"%s\" is not supported (supported: llama, mistral, qwen2, "
        "qwen3)",
        c.arch_name));
  }
  c.arch = *arch;
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<std::string> name, k.OptString("_name_or_path"));
  c.name = name.value_or("");
  MNEMO_MODEL_ASSIGN_OR_RETURN(c.n_layers, k.Int("num_hidden_layers"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(c.d_model, k.Int("hidden_size"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(c.n_heads, k.Int("num_attention_heads"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<int64_t> kv, k.OptInt("num_key_value_heads"));
  c.n_kv_heads = kv ? static_cast<int>(*kv) : c.n_heads;
  MNEMO_MODEL_ASSIGN_OR_RETURN(c.d_ff, k.Int("intermediate_size"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(c.vocab_size, k.Int("vocab_size"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(c.context_length, k.Int("max_position_embeddings"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(double eps, k.Float("rms_norm_eps"));
  c.norm_eps = static_cast<float>(eps);
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<int64_t> head_dim, k.OptInt("head_dim"));
  if (head_dim) {
    c.head_dim = static_cast<int>(*head_dim);
  } else {
    if (c.n_heads <= 0 || c.d_model % c.n_heads != 0) {
      return InvalidArgument(
          absl::StrFormat("config.json: no \"head_dim\" and hidden_size %d is not a multiple of "
                          "num_attention_heads %d",
                          c.d_model, c.n_heads));
    }
    c.head_dim = c.d_model / c.n_heads;
  }

  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<std::string> act, k.OptString("hidden_act"));
  if (act && *act != "silu") {
    return InvalidArgument(absl::StrFormat(
        "config.json: hidden_act \"%s\" is not supported (only silu / SwiGLU)", *act));
  }
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<bool> mlp_bias, k.OptBool("mlp_bias"));
  if (mlp_bias.value_or(false)) {
    return InvalidArgument("config.json: mlp_bias = true is not supported");
  }

  // RoPE: HF checkpoints keep q/k unpermuted, so rotation is always over halves.
  c.rope.style = RopeStyle::kNeox;
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<double> theta, k.OptFloat("rope_theta"));
  c.rope.base = static_cast<float>(theta.value_or(10000.0));
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<double> partial, k.OptFloat("partial_rotary_factor"));
  c.rope.rotary_dims = static_cast<int>(std::lround(c.head_dim * partial.value_or(1.0)));
  MNEMO_MODEL_RETURN_IF_ERROR(ReadHfRopeScaling(k, c.context_length, c.rope));

  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<bool> tied, k.OptBool("tie_word_embeddings"));
  c.tied_embeddings = tied.value_or(false);
  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<bool> attn_bias, k.OptBool("attention_bias"));
  switch (c.arch) {
    case Architecture::kQwen2:  // q/k/v always biased, o never (the key is not read by HF)
      c.qkv_bias = true;
      break;
    case Architecture::kQwen3:
      c.qk_norm = true;
      [[fallthrough]];
    case Architecture::kLlama:
    case Architecture::kMistral:  // attention_bias applies to q, k, v and o
      c.qkv_bias = attn_bias.value_or(false);
      c.attn_output_bias = c.qkv_bias;
      break;
  }

  MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<int64_t> window, k.OptInt("sliding_window"));
  if (c.arch == Architecture::kMistral) {
    c.sliding_window = static_cast<int>(window.value_or(0));
  } else if (c.arch == Architecture::kQwen2 || c.arch == Architecture::kQwen3) {
    MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<bool> use, k.OptBool("use_sliding_window"));
    if (use.value_or(false) && window.value_or(0) > 0) {
      // HF applies the window to layers >= max_window_layers.
      MNEMO_MODEL_ASSIGN_OR_RETURN(std::optional<int64_t> from, k.OptInt("max_window_layers"));
      const int64_t first = from.value_or(0);
      if (first <= 0) {
        c.sliding_window = static_cast<int>(*window);
      } else if (first < c.n_layers) {
        return InvalidArgument(absl::StrFormat(
            "config.json: sliding windows on layers %d..%d only (max_window_layers) are not "
            "supported",
            first, c.n_layers - 1));
      }
    }
  }

  MNEMO_MODEL_ASSIGN_OR_RETURN(int64_t bos, k.TokenId("bos_token_id"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(int64_t eos, k.TokenId("eos_token_id"));
  MNEMO_MODEL_ASSIGN_OR_RETURN(int64_t pad, k.TokenId("pad_token_id"));
  c.bos = model_internal::SpecialId(bos, c.vocab_size);
  c.eos = model_internal::SpecialId(eos, c.vocab_size);
  c.pad = model_internal::SpecialId(pad, c.vocab_size);

  MNEMO_MODEL_RETURN_IF_ERROR(model_internal::Annotate(c.Validate(), "config.json"));
  return c;
}

}  // namespace mnemo::engine
