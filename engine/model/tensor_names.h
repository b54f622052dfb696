// Canonical tensor names (GGUF/llama.cpp style) and their Hugging Face equivalents.
//
//   canonical                      Hugging Face (llama, mistral, qwen2, qwen3)
//   token_embd.weight              model.embed_tokens.weight
//   blk.N.attn_norm.weight         model.layers.N.input_layernorm.weight
//   blk.N.attn_q.weight / .bias    model.layers.N.self_attn.q_proj.weight / .bias
//   blk.N.attn_k.weight / .bias    model.layers.N.self_attn.k_proj.weight / .bias
//   blk.N.attn_v.weight / .bias    model.layers.N.self_attn.v_proj.weight / .bias
//   blk.N.attn_output.weight/.bias model.layers.N.self_attn.o_proj.weight / .bias
//   blk.N.attn_q_norm.weight       model.layers.N.self_attn.q_norm.weight   (qwen3)
//   blk.N.attn_k_norm.weight       model.layers.N.self_attn.k_norm.weight   (qwen3)
//   blk.N.ffn_norm.weight          model.layers.N.post_attention_layernorm.weight
//   blk.N.ffn_gate.weight          model.layers.N.mlp.gate_proj.weight
//   blk.N.ffn_up.weight            model.layers.N.mlp.up_proj.weight
//   blk.N.ffn_down.weight          model.layers.N.mlp.down_proj.weight
//   output_norm.weight             model.norm.weight
//   output.weight                  lm_head.weight
//
// Both directions are pure string functions (no model needed).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace mnemo::engine {

// The canonical name of a Hugging Face tensor name, or nullopt if it is not one of the above.
std::optional<std::string> CanonicalFromHfName(std::string_view hf_name);

// The Hugging Face name of a canonical name, or nullopt if it has none.
std::optional<std::string> HfNameFromCanonical(std::string_view canonical);

// HF tensors that carry no weights and are skipped on load
// (model.layers.N.self_attn.rotary_emb.inv_freq in older checkpoints).
bool IsIgnoredHfTensor(std::string_view hf_name);

// For "blk.N.<suffix>": N and the suffix ("attn_q.weight"). nullopt for other names or a
// malformed layer number.
struct LayerTensorName {
  int layer;
  std::string_view suffix;
};
std::optional<LayerTensorName> ParseLayerTensorName(std::string_view canonical);

// The position of a per-layer suffix ("attn_q.weight") in the table above (the canonical
// order of a layer's tensors), or -1 if it is not one of them.
int LayerTensorRank(std::string_view suffix);

}  // namespace mnemo::engine
