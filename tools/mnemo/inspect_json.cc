#include "tools/mnemo/inspect_json.h"

#include <map>
#include <string>

#include "engine/model/chat_template.h"
#include "engine/model/model_config.h"
#include "engine/model/tokenizer.h"

namespace mnemo::cli {
namespace {

using engine::Model;
using engine::ModelConfig;
using engine::TokenizerData;
using nlohmann::json;

json ConfigJson(const ModelConfig& c) {
  json rope = {{"base", c.rope.base},
               {"rotary_dims", c.rope.rotary_dims},
               {"style", std::string(engine::RopeStyleName(c.rope.style))},
               {"scaling", std::string(engine::RopeScalingKindName(c.rope.scaling))},
               {"factor", c.rope.factor}};
  if (c.rope.original_context > 0) rope["original_context"] = c.rope.original_context;
  if (c.rope.has_freq_factors) rope["freq_factors"] = true;
  return {{"architecture", std::string(engine::ArchName(c.arch))},
          {"arch_name", c.arch_name},
          {"name", c.name},
          {"n_layers", c.n_layers},
          {"d_model", c.d_model},
          {"n_heads", c.n_heads},
          {"n_kv_heads", c.n_kv_heads},
          {"head_dim", c.head_dim},
          {"d_ff", c.d_ff},
          {"vocab_size", c.vocab_size},
          {"context_length", c.context_length},
          {"rope", rope},
          {"norm_eps", c.norm_eps},
          {"tied_embeddings", c.tied_embeddings},
          {"qkv_bias", c.qkv_bias},
          {"attn_output_bias", c.attn_output_bias},
          {"qk_norm", c.qk_norm},
          {"sliding_window", c.sliding_window}};
}

json TokenizerJson(const TokenizerData& t) {
  json special = json::object();
  auto add = [&](const char* name, engine::TokenId id) {
    if (id < 0 || id >= static_cast<engine::TokenId>(t.tokens.size())) return;
    special[name] = {{"id", id}, {"piece", t.tokens[static_cast<size_t>(id)]}};
  };
  add("bos", t.bos);
  add("eos", t.eos);
  add("eot", t.eot);
  add("unk", t.unk);
  add("pad", t.pad);
  json eog = json::array();
  for (engine::TokenId id : t.eog) eog.push_back(id);
  return {{"kind", t.kind == engine::TokenizerKind::kSpm ? "sentencepiece" : "bpe"},
          {"model", t.model_name},
          {"pre", t.pre.empty() ? "default" : t.pre},
          {"n_tokens", static_cast<int>(t.tokens.size())},
          {"n_merges", static_cast<int>(t.merges.size())},
          {"special", special},
          {"eog", eog},
          {"add_bos", t.add_bos},
          {"add_eos", t.add_eos},
          {"add_space_prefix", t.add_space_prefix}};
}

}  // namespace

json InspectJson(const Model& model, const std::string& path, bool with_tensors) {
  json j;
  j["path"] = path;
  j["format"] = model.format() == engine::WeightFormat::kGguf ? "gguf" : "safetensors";
  j["file_bytes"] = model.file_bytes();
  if (model.format() == engine::WeightFormat::kGguf) j["gguf_version"] = model.gguf_version();
  j["config"] = ConfigJson(model.config());
  const TokenizerData& tok = model.tokenizer_data();
  j["tokenizer"] = TokenizerJson(tok);
  auto piece = [&](engine::TokenId id) -> std::string {
    return id >= 0 && id < static_cast<engine::TokenId>(tok.tokens.size())
               ? tok.tokens[static_cast<size_t>(id)]
               : std::string();
  };
  const auto tmpl = engine::ChatTemplate::Detect(tok.chat_template, piece(tok.bos), piece(tok.eos));
  j["chat_template"] = {{"family", std::string(engine::ChatTemplateFamilyName(tmpl.family()))},
                        {"present", !tok.chat_template.empty()}};
  j["fingerprint"] = model.fingerprint();

  struct Sum {
    int tensors = 0;
    uint64_t params = 0, bytes = 0;
  };
  Sum total;
  std::map<std::string, Sum> by_dtype;
  json tensors = json::array();
  for (const engine::TensorRef& t : model.tensors()) {
    uint64_t n = 1;
    for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
    Sum& s = by_dtype[std::string(kernels::DTypeName(t.dtype))];
    for (Sum* x : {&s, &total}) {
      x->tensors += 1;
      x->params += n;
      x->bytes += t.bytes;
    }
    if (with_tensors) {
      tensors.push_back({{"name", t.name},
                         {"shape", t.shape},
                         {"dtype", std::string(kernels::DTypeName(t.dtype))},
                         {"bytes", t.bytes}});
    }
  }
  if (with_tensors) j["tensors"] = tensors;
  json by = json::object();
  for (const auto& [name, s] : by_dtype) {
    by[name] = {{"tensors", s.tensors}, {"params", s.params}, {"bytes", s.bytes}};
  }
  j["totals"] = {{"tensors", total.tensors},
                 {"params", total.params},
                 {"bytes", total.bytes},
                 {"by_dtype", by}};
  return j;
}

}  // namespace mnemo::cli
