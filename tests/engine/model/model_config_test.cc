#include "engine/model/model_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>

#include "engine/model/gguf.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using ::testing::HasSubstr;

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string HfConfig(const std::string& name) {
  const std::string text = ReadText(testing::TestDataPath("hf_configs/" + name));
  EXPECT_FALSE(text.empty()) << name;
  return text;
}

// The HF config `name` with `key` replaced (or removed when `value` is discarded).
std::string EditedHf(const std::string& name, const std::string& key, nlohmann::json value) {
  nlohmann::json j = nlohmann::json::parse(HfConfig(name));
  if (value.is_discarded()) {
    j.erase(key);
  } else {
    j[key] = std::move(value);
  }
  return j.dump();
}
nlohmann::json Removed() { return nlohmann::json(nlohmann::json::value_t::discarded); }

std::string HfError(const std::string& text) {
  auto c = ConfigFromHfJson(text);
  if (c.ok()) return "OK";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  return std::string(c.status().message());
}

// ---- Hugging Face config.json ----

TEST(ConfigFromHfJson, Llama31WithLlama3Scaling) {
  auto c = ConfigFromHfJson(HfConfig("llama3.1_8b.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kLlama);
  EXPECT_EQ(c->arch_name, "llama");
  EXPECT_EQ(c->n_layers, 32);
  EXPECT_EQ(c->d_model, 4096);
  EXPECT_EQ(c->n_heads, 32);
  EXPECT_EQ(c->n_kv_heads, 8);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->d_ff, 14336);
  EXPECT_EQ(c->vocab_size, 128256);
  EXPECT_EQ(c->context_length, 131072);
  EXPECT_FLOAT_EQ(c->norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c->rope.base, 500000.0f);
  EXPECT_EQ(c->rope.rotary_dims, 128);
  EXPECT_EQ(c->rope.style, RopeStyle::kNeox);
  EXPECT_EQ(c->rope.scaling, RopeScalingKind::kLlama3);
  EXPECT_FLOAT_EQ(c->rope.factor, 8.0f);
  EXPECT_FLOAT_EQ(c->rope.low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(c->rope.high_freq_factor, 4.0f);
  EXPECT_EQ(c->rope.original_context, 8192);
  EXPECT_FALSE(c->rope.has_freq_factors);
  EXPECT_FALSE(c->tied_embeddings);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_FALSE(c->qk_norm);
  EXPECT_EQ(c->sliding_window, 0);
  EXPECT_EQ(c->bos, 128000);
  EXPECT_EQ(c->eos, 128001);  // the first of the list
  EXPECT_EQ(c->pad, -1);
}

TEST(ConfigFromHfJson, SmolLm2) {
  auto c = ConfigFromHfJson(HfConfig("smollm2_135m.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "HuggingFaceTB/SmolLM2-135M-Instruct");
  EXPECT_EQ(c->n_layers, 30);
  EXPECT_EQ(c->d_model, 576);
  EXPECT_EQ(c->n_heads, 9);
  EXPECT_EQ(c->n_kv_heads, 3);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->d_ff, 1536);
  EXPECT_EQ(c->vocab_size, 49152);
  EXPECT_EQ(c->context_length, 8192);
  EXPECT_FLOAT_EQ(c->rope.base, 100000.0f);
  EXPECT_EQ(c->rope.scaling, RopeScalingKind::kNone);
  EXPECT_TRUE(c->tied_embeddings);
  EXPECT_EQ(c->bos, 1);
  EXPECT_EQ(c->eos, 2);
  EXPECT_EQ(c->pad, 2);
}

TEST(ConfigFromHfJson, LinearScaling) {
  auto c = ConfigFromHfJson(HfConfig("llama2_linear_16k.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.scaling, RopeScalingKind::kLinear);
  EXPECT_FLOAT_EQ(c->rope.factor, 4.0f);
  EXPECT_FLOAT_EQ(c->rope.base, 10000.0f);  // default
  EXPECT_EQ(c->n_kv_heads, 40);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->pad, 0);
}

TEST(ConfigFromHfJson, MistralSlidingWindow) {
  auto c = ConfigFromHfJson(HfConfig("mistral_7b_v0.1.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kMistral);
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_EQ(c->rope.style, RopeStyle::kNeox);
  EXPECT_EQ(c->vocab_size, 32000);
  auto no_window = ConfigFromHfJson(EditedHf("mistral_7b_v0.1.json", "sliding_window", nullptr));
  ASSERT_TRUE(no_window.ok()) << no_window.status();
  EXPECT_EQ(no_window->sliding_window, 0);
}

TEST(ConfigFromHfJson, Qwen2HasQkvBiasAndNoWindowWhenUnused) {
  auto c = ConfigFromHfJson(HfConfig("qwen2_0.5b_instruct.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kQwen2);
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_FALSE(c->attn_output_bias);
  EXPECT_FALSE(c->qk_norm);
  EXPECT_TRUE(c->tied_embeddings);
  EXPECT_EQ(c->sliding_window, 0);  // use_sliding_window: false
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_FLOAT_EQ(c->norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c->rope.base, 1e6f);
  EXPECT_EQ(c->bos, 151643);
  EXPECT_EQ(c->eos, 151645);

  // A window on every layer is supported, on some layers only it is not.
  nlohmann::json j = nlohmann::json::parse(HfConfig("qwen2_0.5b_instruct.json"));
  j["use_sliding_window"] = true;
  j["sliding_window"] = 1024;
  j["max_window_layers"] = 0;
  auto all = ConfigFromHfJson(j.dump());
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->sliding_window, 1024);
  j["max_window_layers"] = 12;
  EXPECT_THAT(HfError(j.dump()), HasSubstr("max_window_layers"));
}

TEST(ConfigFromHfJson, Qwen25Yarn) {
  auto c = ConfigFromHfJson(HfConfig("qwen2.5_7b_yarn.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.scaling, RopeScalingKind::kYarn);
  EXPECT_FLOAT_EQ(c->rope.factor, 4.0f);
  EXPECT_EQ(c->rope.original_context, 32768);
  EXPECT_FLOAT_EQ(c->rope.beta_fast, 32.0f);
  EXPECT_FLOAT_EQ(c->rope.beta_slow, 1.0f);
  EXPECT_FLOAT_EQ(c->rope.attn_factor, static_cast<float>(0.1 * std::log(4.0) + 1.0));
  EXPECT_FALSE(c->tied_embeddings);
}

TEST(ConfigFromHfJson, Qwen3HasQkNormAndExplicitHeadDim) {
  auto c = ConfigFromHfJson(HfConfig("qwen3_0.6b.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kQwen3);
  EXPECT_TRUE(c->qk_norm);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_EQ(c->head_dim, 128);  // != hidden_size / heads = 64
  EXPECT_EQ(c->rope.rotary_dims, 128);
  EXPECT_EQ(c->n_heads * c->head_dim, 2048);
  EXPECT_TRUE(c->tied_embeddings);
  EXPECT_EQ(c->sliding_window, 0);
}

TEST(ConfigFromHfJson, MissingRequiredKeysAreNamed) {
  for (const char* key :
       {"model_type", "num_hidden_layers", "hidden_size", "num_attention_heads",
        "intermediate_size", "vocab_size", "max_position_embeddings", "rms_norm_eps"}) {
    const std::string e = HfError(EditedHf("llama3.1_8b.json", key, Removed()));
    EXPECT_THAT(e, HasSubstr(std::string("missing required key \"") + key + "\"")) << key;
  }
  // Defaults for the optional ones.
  auto c = ConfigFromHfJson(EditedHf("llama3.1_8b.json", "num_key_value_heads", Removed()));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->n_kv_heads, 32);
}

TEST(ConfigFromHfJson, IllTypedKeysAreNamed) {
  EXPECT_THAT(HfError(EditedHf("qwen3_0.6b.json", "hidden_size", "1024")),
              HasSubstr("key \"hidden_size\" must be an integer, got string"));
  EXPECT_THAT(HfError(EditedHf("qwen3_0.6b.json", "num_hidden_layers", 28.5)),
              HasSubstr("\"num_hidden_layers\" must be an integer"));
  EXPECT_THAT(HfError(EditedHf("qwen3_0.6b.json", "rope_theta", "big")),
              HasSubstr("\"rope_theta\" must be a number"));
  EXPECT_THAT(HfError(EditedHf("qwen3_0.6b.json", "tie_word_embeddings", 1)),
              HasSubstr("\"tie_word_embeddings\" must be a boolean"));
  EXPECT_THAT(HfError(EditedHf("qwen3_0.6b.json", "eos_token_id", "x")),
              HasSubstr("\"eos_token_id\""));
  EXPECT_THAT(HfError(EditedHf("qwen3_0.6b.json", "model_type", 3)),
              HasSubstr("\"model_type\" must be a string"));
  EXPECT_THAT(HfError(EditedHf("qwen3_0.6b.json", "rope_scaling", 3)),
              HasSubstr("\"rope_scaling\""));
  EXPECT_THAT(HfError(EditedHf("qwen3_0.6b.json", "vocab_size", 1ull << 40)),
              HasSubstr("\"vocab_size\""));
}

TEST(ConfigFromHfJson, RopeScalingErrors) {
  EXPECT_THAT(HfError(EditedHf("llama3.1_8b.json", "rope_scaling",
                               {{"rope_type", "llama3"}, {"factor", 8.0}})),
              HasSubstr("\"low_freq_factor\""));
  EXPECT_THAT(HfError(EditedHf("llama3.1_8b.json", "rope_scaling", {{"type", "linear"}})),
              HasSubstr("rope_scaling: missing required key \"factor\""));
  EXPECT_THAT(
      HfError(EditedHf("llama3.1_8b.json", "rope_scaling", {{"type", "dynamic"}, {"factor", 2.0}})),
      HasSubstr("\"dynamic\" is not supported"));
  EXPECT_THAT(HfError(EditedHf("llama3.1_8b.json", "rope_scaling", {{"factor", 2.0}})),
              HasSubstr("\"rope_type\""));
  auto def =
      ConfigFromHfJson(EditedHf("llama3.1_8b.json", "rope_scaling", {{"rope_type", "default"}}));
  ASSERT_TRUE(def.ok()) << def.status();
  EXPECT_EQ(def->rope.scaling, RopeScalingKind::kNone);
  // transformers v5 keeps theta inside rope_parameters.
  nlohmann::json j = nlohmann::json::parse(HfConfig("smollm2_135m.json"));
  j.erase("rope_theta");
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5000.0}};
  auto v5 = ConfigFromHfJson(j.dump());
  ASSERT_TRUE(v5.ok()) << v5.status();
  EXPECT_FLOAT_EQ(v5->rope.base, 5000.0f);
}

TEST(ConfigFromHfJson, UnsupportedModelsAndFeatures) {
  EXPECT_THAT(HfError(EditedHf("llama3.1_8b.json", "model_type", "gpt2")),
              HasSubstr("model_type \"gpt2\" is not supported"));
  EXPECT_THAT(HfError(EditedHf("llama3.1_8b.json", "hidden_act", "gelu")), HasSubstr("hidden_act"));
  EXPECT_THAT(HfError(EditedHf("llama3.1_8b.json", "mlp_bias", true)), HasSubstr("mlp_bias"));
  EXPECT_THAT(HfError("{not json"), HasSubstr("not valid JSON"));
  EXPECT_THAT(HfError("[1, 2]"), HasSubstr("not a JSON object"));
  EXPECT_THAT(HfError(""), HasSubstr("not valid JSON"));
  // llama's attention_bias covers q, k, v and o.
  auto biased = ConfigFromHfJson(EditedHf("llama3.1_8b.json", "attention_bias", true));
  ASSERT_TRUE(biased.ok());
  EXPECT_TRUE(biased->qkv_bias);
  EXPECT_TRUE(biased->attn_output_bias);
}

TEST(ConfigFromHfJson, ValidationFailuresAreInvalidArgument) {
  EXPECT_THAT(HfError(EditedHf("llama3.1_8b.json", "num_key_value_heads", 5)),
              HasSubstr("not a multiple of n_kv_heads"));
  EXPECT_THAT(HfError(EditedHf("llama3.1_8b.json", "hidden_size", 4097)), HasSubstr("head_dim"));
  EXPECT_THAT(HfError(EditedHf("llama3.1_8b.json", "num_hidden_layers", 0)),
              HasSubstr("n_layers = 0"));
  EXPECT_THAT(HfError(EditedHf("llama3.1_8b.json", "rms_norm_eps", -1.0)), HasSubstr("norm_eps"));
  EXPECT_THAT(HfError(EditedHf("qwen3_0.6b.json", "partial_rotary_factor", 65.0 / 128)),
              HasSubstr("odd"));
  // Out-of-range special ids are dropped (as llama.cpp does), not fatal.
  auto c = ConfigFromHfJson(EditedHf("smollm2_135m.json", "pad_token_id", 49152));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->pad, -1);
}

// ---- Validate / ToJson ----

ModelConfig Small() {
  ModelConfig c;
  c.arch_name = "llama";
  c.n_layers = 2;
  c.d_model = 64;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.d_ff = 96;
  c.vocab_size = 300;
  c.context_length = 512;
  c.rope.rotary_dims = 16;
  return c;
}

TEST(ModelConfig, Validate) {
  EXPECT_TRUE(Small().Validate().ok());
  auto bad = [](auto edit) {
    ModelConfig c = Small();
    edit(c);
    return std::string(c.Validate().message());
  };
  EXPECT_THAT(bad([](ModelConfig& c) { c.d_model = 0; }), HasSubstr("d_model"));
  EXPECT_THAT(bad([](ModelConfig& c) { c.n_kv_heads = 3; }), HasSubstr("n_kv_heads"));
  EXPECT_THAT(bad([](ModelConfig& c) { c.n_kv_heads = 8; }), HasSubstr("n_kv_heads"));
  EXPECT_THAT(bad([](ModelConfig& c) { c.rope.rotary_dims = 18; }), HasSubstr("rotary_dims"));
  EXPECT_THAT(bad([](ModelConfig& c) { c.rope.rotary_dims = 7; }), HasSubstr("odd"));
  EXPECT_THAT(bad([](ModelConfig& c) { c.rope.base = NAN; }), HasSubstr("rope.base"));
  EXPECT_THAT(bad([](ModelConfig& c) { c.norm_eps = 0; }), HasSubstr("norm_eps"));
  EXPECT_THAT(bad([](ModelConfig& c) { c.eos = 300; }), HasSubstr("eos"));
  EXPECT_THAT(bad([](ModelConfig& c) { c.sliding_window = -1; }), HasSubstr("sliding_window"));
  EXPECT_THAT(bad([](ModelConfig& c) { c.rope.scaling = RopeScalingKind::kYarn; }),
              HasSubstr("original_context"));
  EXPECT_THAT(bad([](ModelConfig& c) {
                c.rope.scaling = RopeScalingKind::kLlama3;
                c.rope.original_context = 8192;
                c.rope.high_freq_factor = 1.0f;
              }),
              HasSubstr("high_freq_factor"));
  ModelConfig freqs = Small();
  freqs.rope.scaling = RopeScalingKind::kLlama3;
  freqs.rope.has_freq_factors = true;  // the tensor carries the factors
  EXPECT_TRUE(freqs.Validate().ok());
}

TEST(ModelConfig, ToJsonIsStableAndReadable) {
  ModelConfig c = Small();
  c.name = "tiny \"quoted\"";
  c.norm_eps = 1e-5f;
  c.eos = 2;
  const std::string s = c.ToJson();
  EXPECT_EQ(s, c.ToJson());
  nlohmann::json j = nlohmann::json::parse(s);
  EXPECT_EQ(j["arch"], "llama");
  EXPECT_EQ(j["name"], "tiny \"quoted\"");
  EXPECT_EQ(j["n_heads"], 4);
  EXPECT_EQ(j["rope"]["style"], "normal");
  EXPECT_EQ(j["eos"], 2);
  EXPECT_THAT(s, HasSubstr("\"norm_eps\":1e-05"));  // the float's shortest form
  EXPECT_EQ(s.find("\"arch\""), 1u);                // fixed key order
  c.name = "\xff";
  EXPECT_NO_THROW(nlohmann::json::parse(c.ToJson()));
}

TEST(ModelConfig, Names) {
  for (Architecture a :
       {Architecture::kLlama, Architecture::kMistral, Architecture::kQwen2, Architecture::kQwen3}) {
    EXPECT_EQ(ArchitectureFromName(ArchName(a)), a);
  }
  EXPECT_EQ(ArchitectureFromName("gemma"), std::nullopt);
  EXPECT_EQ(RopeScalingKindName(RopeScalingKind::kYarn), "yarn");
  EXPECT_EQ(RopeStyleName(RopeStyle::kNeox), "neox");
}

// ---- GGUF ----

TEST(ConfigFromGguf, Stories260K) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  auto f = GgufFile::Open(testing::StoriesGgufPath());
  ASSERT_TRUE(f.ok()) << f.status();
  auto c = ConfigFromGguf(**f);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kLlama);
  EXPECT_EQ(c->arch_name, "llama");
  EXPECT_EQ(c->n_layers, 5);
  EXPECT_EQ(c->d_model, 64);
  EXPECT_EQ(c->n_heads, 8);
  EXPECT_EQ(c->n_kv_heads, 4);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->d_ff, 172);
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_EQ(c->context_length, 2048);
  EXPECT_FLOAT_EQ(c->rope.base, 10000.0f);
  EXPECT_EQ(c->rope.rotary_dims, 8);
  EXPECT_EQ(c->rope.style, RopeStyle::kNormal);
  EXPECT_EQ(c->rope.scaling, RopeScalingKind::kNone);
  EXPECT_FLOAT_EQ(c->norm_eps, 1e-5f);
  EXPECT_FALSE(c->tied_embeddings);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_FALSE(c->qk_norm);
  EXPECT_EQ(c->sliding_window, 0);
  EXPECT_EQ(c->bos, 1);
  EXPECT_EQ(c->eos, 2);
  EXPECT_EQ(c->unk, 0);
  EXPECT_EQ(c->pad, -1);  // stored as u32 -1
}

TEST(ConfigFromGguf, SmolLm2MatchesItsHfConfig) {
  MNEMO_REQUIRE_FILE(testing::SmolLm2GgufPath());
  auto f = GgufFile::Open(testing::SmolLm2GgufPath());
  ASSERT_TRUE(f.ok()) << f.status();
  auto c = ConfigFromGguf(**f);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Architecture::kLlama);
  EXPECT_EQ(c->n_layers, 30);
  EXPECT_EQ(c->d_model, 576);
  EXPECT_EQ(c->n_heads, 9);
  EXPECT_EQ(c->n_kv_heads, 3);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->d_ff, 1536);
  EXPECT_EQ(c->vocab_size, 49152);
  EXPECT_EQ(c->context_length, 8192);
  EXPECT_FLOAT_EQ(c->rope.base, 100000.0f);
  EXPECT_EQ(c->rope.rotary_dims, 64);
  EXPECT_EQ(c->rope.style, RopeStyle::kNormal);
  EXPECT_TRUE(c->tied_embeddings);

  auto hf = ConfigFromHfJson(HfConfig("smollm2_135m.json"));
  ASSERT_TRUE(hf.ok());
  EXPECT_EQ(hf->n_layers, c->n_layers);
  EXPECT_EQ(hf->d_ff, c->d_ff);
  EXPECT_EQ(hf->head_dim, c->head_dim);
  EXPECT_EQ(hf->rope.base, c->rope.base);
  EXPECT_EQ(hf->norm_eps, c->norm_eps);
  EXPECT_EQ(hf->tied_embeddings, c->tied_embeddings);
}

// A minimal GGUF: llama-style metadata for `arch` plus one tiny tensor per name in `tensors`.
GgufBuilder MinimalGguf(const std::string& arch, const std::vector<std::string>& tensors) {
  GgufBuilder b;
  b.SetString("general.architecture", arch);
  b.SetString("general.name", "mini");
  b.SetU32(arch + ".block_count", 2);
  b.SetU32(arch + ".embedding_length", 64);
  b.SetU32(arch + ".attention.head_count", 4);
  b.SetU32(arch + ".attention.head_count_kv", 2);
  b.SetU32(arch + ".feed_forward_length", 96);
  b.SetU32(arch + ".context_length", 256);
  b.SetF32(arch + ".attention.layer_norm_rms_epsilon", 1e-6f);
  b.SetU32(arch + ".vocab_size", 100);
  b.SetU32("tokenizer.ggml.eos_token_id", 7);
  for (const std::string& t : tensors) {
    EXPECT_TRUE(b.AddTensor(t, {1}, kernels::DType::kF32, std::vector<uint8_t>(4)).ok());
  }
  return b;
}

absl::StatusOr<ModelConfig> FromBuilder(const GgufBuilder& b) {
  auto f = GgufFile::FromBytes(b.Serialize());
  if (!f.ok()) return f.status();
  return ConfigFromGguf(**f);
}

TEST(ConfigFromGguf, ArchitectureSwitchesFromTensors) {
  auto llama = FromBuilder(MinimalGguf("llama", {"output.weight"}));
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_EQ(llama->head_dim, 16);
  EXPECT_EQ(llama->rope.rotary_dims, 16);
  EXPECT_EQ(llama->rope.style, RopeStyle::kNormal);
  EXPECT_FALSE(llama->tied_embeddings);
  EXPECT_EQ(llama->eos, 7);
  EXPECT_EQ(llama->name, "mini");

  auto qwen2 = FromBuilder(MinimalGguf("qwen2", {"blk.0.attn_q.bias"}));
  ASSERT_TRUE(qwen2.ok()) << qwen2.status();
  EXPECT_EQ(qwen2->arch, Architecture::kQwen2);
  EXPECT_EQ(qwen2->rope.style, RopeStyle::kNeox);
  EXPECT_TRUE(qwen2->qkv_bias);
  EXPECT_TRUE(qwen2->tied_embeddings);

  GgufBuilder b3 = MinimalGguf("qwen3", {"blk.0.attn_q_norm.weight", "output.weight"});
  b3.SetU32("qwen3.attention.key_length", 32);
  b3.SetU32("qwen3.attention.value_length", 32);
  auto qwen3 = FromBuilder(b3);
  ASSERT_TRUE(qwen3.ok()) << qwen3.status();
  EXPECT_TRUE(qwen3->qk_norm);
  EXPECT_EQ(qwen3->head_dim, 32);
  EXPECT_EQ(qwen3->rope.rotary_dims, 32);

  b3.SetU32("qwen3.attention.value_length", 16);
  EXPECT_THAT(std::string(FromBuilder(b3).status().message()), HasSubstr("value_length"));

  auto mistral = FromBuilder(MinimalGguf("mistral", {}));
  ASSERT_TRUE(mistral.ok()) << mistral.status();
  EXPECT_EQ(mistral->arch, Architecture::kMistral);
}

TEST(ConfigFromGguf, RopeScaling) {
  GgufBuilder lin = MinimalGguf("llama", {});
  lin.SetString("llama.rope.scaling.type", "linear");
  lin.SetF32("llama.rope.scaling.factor", 2.0f);
  lin.SetF32("llama.rope.freq_base", 500000.0f);
  lin.SetU32("llama.rope.dimension_count", 8);
  auto c = FromBuilder(lin);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.scaling, RopeScalingKind::kLinear);
  EXPECT_FLOAT_EQ(c->rope.factor, 2.0f);
  EXPECT_FLOAT_EQ(c->rope.base, 500000.0f);
  EXPECT_EQ(c->rope.rotary_dims, 8);

  GgufBuilder legacy = MinimalGguf("llama", {});
  legacy.SetF32("llama.rope.scale_linear", 4.0f);
  c = FromBuilder(legacy);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.scaling, RopeScalingKind::kLinear);
  EXPECT_FLOAT_EQ(c->rope.factor, 4.0f);

  GgufBuilder yarn = MinimalGguf("qwen2", {});
  yarn.SetString("qwen2.rope.scaling.type", "yarn");
  yarn.SetF32("qwen2.rope.scaling.factor", 4.0f);
  yarn.SetU32("qwen2.rope.scaling.original_context_length", 32768);
  c = FromBuilder(yarn);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.scaling, RopeScalingKind::kYarn);
  EXPECT_EQ(c->rope.original_context, 32768);
  EXPECT_FLOAT_EQ(c->rope.attn_factor, static_cast<float>(0.1 * std::log(4.0) + 1.0));

  auto llama3 = FromBuilder(MinimalGguf("llama", {"rope_freqs.weight"}));
  ASSERT_TRUE(llama3.ok()) << llama3.status();
  EXPECT_EQ(llama3->rope.scaling, RopeScalingKind::kLlama3);
  EXPECT_TRUE(llama3->rope.has_freq_factors);

  GgufBuilder bad = MinimalGguf("llama", {});
  bad.SetString("llama.rope.scaling.type", "longrope");
  EXPECT_THAT(std::string(FromBuilder(bad).status().message()), HasSubstr("longrope"));
  GgufBuilder no_factor = MinimalGguf("llama", {});
  no_factor.SetString("llama.rope.scaling.type", "linear");
  EXPECT_THAT(std::string(FromBuilder(no_factor).status().message()),
              HasSubstr("llama.rope.scaling.factor"));
}

TEST(ConfigFromGguf, KeyErrorsAreNamed) {
  auto message = [](const GgufBuilder& b) {
    auto c = FromBuilder(b);
    EXPECT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
    return std::string(c.status().message());
  };
  GgufBuilder b = MinimalGguf("llama", {});
  b.SetString("llama.block_count", "two");
  EXPECT_THAT(message(b), HasSubstr("\"llama.block_count\" must be an integer"));
  b = MinimalGguf("llama", {});
  b.SetF32("llama.embedding_length", 64.0f);
  EXPECT_THAT(message(b), HasSubstr("\"llama.embedding_length\" must be an integer"));
  b = MinimalGguf("llama", {});
  b.SetString("llama.attention.layer_norm_rms_epsilon", "tiny");
  EXPECT_THAT(message(b), HasSubstr("llama.attention.layer_norm_rms_epsilon"));
  b = MinimalGguf("llama", {});
  b.SetI32("llama.context_length", -5);
  EXPECT_THAT(message(b), HasSubstr("llama.context_length"));
  b = MinimalGguf("gemma", {});
  EXPECT_THAT(message(b), HasSubstr("\"gemma\" is not supported"));
  GgufBuilder empty;
  EXPECT_THAT(message(empty), HasSubstr("general.architecture"));
  GgufBuilder partial;
  partial.SetString("general.architecture", "qwen2");
  partial.SetU32("qwen2.block_count", 2);
  EXPECT_THAT(message(partial), HasSubstr("missing required key \"qwen2.embedding_length\""));
  b = MinimalGguf("llama", {});
  b.SetU32("llama.attention.head_count_kv", 3);
  EXPECT_THAT(message(b), HasSubstr("n_kv_heads"));
}

TEST(ConfigFromGguf, VocabularyFallsBackToTokens) {
  GgufBuilder b;
  b.SetString("general.architecture", "llama");
  b.SetU32("llama.block_count", 1);
  b.SetU32("llama.embedding_length", 32);
  b.SetU32("llama.attention.head_count", 2);
  b.SetU32("llama.feed_forward_length", 64);
  b.SetU32("llama.context_length", 128);
  b.SetF32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  b.SetStringArray("tokenizer.ggml.tokens", {"a", "b", "c"});
  auto c = FromBuilder(b);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vocab_size, 3);
  EXPECT_EQ(c->n_kv_heads, 2);  // defaults to head_count
}

}  // namespace
}  // namespace mnemo::engine
