#include "engine/model/tensor_names.h"

#include <charconv>

namespace mnemo::engine {
namespace {

struct NamePair {
  std::string_view canonical;
  std::string_view hf;
};

// Per-layer suffixes: "blk.N." + canonical <-> "model.layers.N." + hf.
// In canonical order (Model::tensors() sorts each layer's tensors this way).
constexpr NamePair kLayerNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_q_norm.weight", "self_attn.q_norm.weight"},
    {"attn_k_norm.weight", "self_attn.k_norm.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"attn_output.bias", "self_attn.o_proj.bias"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

constexpr NamePair kGlobalNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

constexpr std::string_view kHfLayerPrefix = "model.layers.";
constexpr std::string_view kLayerPrefix = "blk.";

// "N.rest" -> (N, rest); N is decimal without sign or leading zeros (except "0").
std::optional<std::pair<int, std::string_view>> SplitLayer(std::string_view s) {
  const size_t dot = s.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot > 6) return std::nullopt;
  if (s[0] < '0' || s[0] > '9' || (s[0] == '0' && dot > 1)) return std::nullopt;
  int n = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + dot, n);
  if (ec != std::errc() || end != s.data() + dot) return std::nullopt;
  return std::make_pair(n, s.substr(dot + 1));
}

}  // namespace

std::optional<LayerTensorName> ParseLayerTensorName(std::string_view canonical) {
  if (!canonical.starts_with(kLayerPrefix)) return std::nullopt;
  auto split = SplitLayer(canonical.substr(kLayerPrefix.size()));
  if (!split) return std::nullopt;
  return LayerTensorName{split->first, split->second};
}

std::optional<std::string> CanonicalFromHfName(std::string_view hf_name) {
  for (const NamePair& p : kGlobalNames) {
    if (p.hf == hf_name) return std::string(p.canonical);
  }
  if (!hf_name.starts_with(kHfLayerPrefix)) return std::nullopt;
  auto split = SplitLayer(hf_name.substr(kHfLayerPrefix.size()));
  if (!split) return std::nullopt;
  for (const NamePair& p : kLayerNames) {
    if (p.hf == split->second) {
      return std::string(kLayerPrefix) + std::to_string(split->first) + "." +
             std::string(p.canonical);
    }
  }
  return std::nullopt;
}

std::optional<std::string> HfNameFromCanonical(std::string_view canonical) {
  for (const NamePair& p : kGlobalNames) {
    if (p.canonical == canonical) return std::string(p.hf);
  }
  std::optional<LayerTensorName> l = ParseLayerTensorName(canonical);
  if (!l) return std::nullopt;
  for (const NamePair& p : kLayerNames) {
    if (p.canonical == l->suffix) {
      return std::string(kHfLayerPrefix) + std::to_string(l->layer) + "." + std::string(p.hf);
    }
  }
  return std::nullopt;
}

int LayerTensorRank(std::string_view suffix) {
  for (size_t i = 0; i < std::size(kLayerNames); ++i) {
    if (kLayerNames[i].canonical == suffix) return static_cast<int>(i);
  }
  return -1;
}

bool IsIgnoredHfTensor(std::string_view hf_name) {
  return hf_name.starts_with(kHfLayerPrefix) && hf_name.ends_with(".self_attn.rotary_emb.inv_freq");
}

}  // namespace mnemo::engine
