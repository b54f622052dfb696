#include "engine/model/model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "absl/strings/str_format.h"
#include "engine/model/gguf.h"
#include "engine/model/safetensors.h"
#include "engine/model/tensor_names.h"
#include "engine/model/test_model.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using kernels::DType;
using ::testing::HasSubstr;

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string OpenError(const std::string& path) {
  auto m = Model::Open(path);
  if (m.ok()) return "OK";
  return std::string(m.status().message());
}

// Writes a test model and returns its path.
std::string Write(const std::string& dir, TestModelOptions o, const std::string& name) {
  const std::string path = dir + "/" + name;
  absl::Status s = WriteTestModel(o, path);
  EXPECT_TRUE(s.ok()) << s;
  return path;
}

TestModelOptions Safetensors(Architecture arch = Architecture::kLlama) {
  TestModelOptions o;
  o.arch = arch;
  o.format = TestModelFormat::kSafetensors;
  o.n_layers = 2;
  return o;
}

// Rewrites `folder`/model.safetensors through `edit`, which gets each tensor (HF name, dtype,
// shape, bytes) and may change it or return false to drop it.
using TensorEdit =
    std::function<bool(std::string&, DType&, std::vector<int64_t>&, std::vector<uint8_t>&)>;
struct ExtraTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};
void RewriteSafetensors(const std::string& folder, const TensorEdit& edit,
                        std::vector<ExtraTensor> extra = {}) {
  auto f = SafetensorsFile::Open(folder + "/model.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  SafetensorsBuilder b;
  for (const SafetensorsTensor& t : (*f)->tensors()) {
    std::string name = t.name;
    DType dtype = t.dtype;
    std::vector<int64_t> shape = t.shape;
    std::vector<uint8_t> data(t.data, t.data + t.bytes);
    if (!edit(name, dtype, shape, data)) continue;
    ASSERT_TRUE(b.AddTensor(name, dtype, shape, std::move(data)).ok());
  }
  for (ExtraTensor& e : extra) {
    ASSERT_TRUE(b.AddTensor(e.name, e.dtype, e.shape, std::move(e.data)).ok());
  }
  f->reset();
  ASSERT_TRUE(b.WriteFile(folder + "/model.safetensors").ok());
}

// The same for a GGUF file (`ne` in GGUF order).
using GgufEdit = std::function<bool(std::string&, std::vector<int64_t>&, std::vector<uint8_t>&)>;
void RewriteGguf(const std::string& path, const GgufEdit& edit) {
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  GgufBuilder b;
  for (const auto& [k, v] : (*f)->metadata()) b.Set(k, v);
  for (const GgufTensorInfo& t : (*f)->tensors()) {
    std::string name = t.name;
    std::vector<int64_t> ne = t.ne;
    std::vector<uint8_t> data(t.data, t.data + t.bytes);
    if (!edit(name, ne, data)) continue;
    ASSERT_TRUE(b.AddTensor(name, ne, t.dtype, std::move(data)).ok());
  }
  f->reset();
  ASSERT_TRUE(b.WriteFile(path).ok());
}

TEST(TensorNames, HfMappingBothWays) {
  EXPECT_EQ(CanonicalFromHfName("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(CanonicalFromHfName("lm_head.weight"), "output.weight");
  EXPECT_EQ(CanonicalFromHfName("model.norm.weight"), "output_norm.weight");
  EXPECT_EQ(CanonicalFromHfName("model.layers.12.self_attn.q_proj.weight"), "blk.12.attn_q.weight");
  EXPECT_EQ(CanonicalFromHfName("model.layers.0.self_attn.v_proj.bias"), "blk.0.attn_v.bias");
  EXPECT_EQ(CanonicalFromHfName("model.layers.3.self_attn.k_norm.weight"),
            "blk.3.attn_k_norm.weight");
  EXPECT_EQ(CanonicalFromHfName("model.layers.3.post_attention_layernorm.weight"),
            "blk.3.ffn_norm.weight");
  EXPECT_EQ(CanonicalFromHfName("model.layers.3.mlp.down_proj.weight"), "blk.3.ffn_down.weight");
  for (const char* bad : {"model.layers.x.mlp.up_proj.weight", "model.layers.01.mlp.up_proj.weight",
                          "model.layers.-1.mlp.up_proj.weight", "model.layers.3.mlp.fc1.weight",
                          "model.layers..mlp.up_proj.weight", "vision.patch_embed.weight"}) {
    EXPECT_EQ(CanonicalFromHfName(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(HfNameFromCanonical("blk.7.ffn_gate.weight"), "model.layers.7.mlp.gate_proj.weight");
  EXPECT_EQ(HfNameFromCanonical("blk.7.attn_output.weight"),
            "model.layers.7.self_attn.o_proj.weight");
  EXPECT_EQ(HfNameFromCanonical("rope_freqs.weight"), std::nullopt);
  EXPECT_TRUE(IsIgnoredHfTensor("model.layers.4.self_attn.rotary_emb.inv_freq"));
  EXPECT_FALSE(IsIgnoredHfTensor("model.layers.4.self_attn.q_proj.weight"));
  auto l = ParseLayerTensorName("blk.10.attn_k.bias");
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->layer, 10);
  EXPECT_EQ(l->suffix, "attn_k.bias");
  EXPECT_LT(LayerTensorRank("attn_norm.weight"), LayerTensorRank("ffn_down.weight"));
  EXPECT_EQ(LayerTensorRank("nope"), -1);
}

TEST(Model, OpensStories260K) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  auto m = Model::Open(testing::StoriesGgufPath());
  ASSERT_TRUE(m.ok()) << m.status();
  const Model& model = **m;
  EXPECT_EQ(model.format(), WeightFormat::kGguf);
  EXPECT_EQ(model.gguf_version(), 3u);
  EXPECT_EQ(model.file_bytes(), 1185376u);
  EXPECT_NE(model.gguf(), nullptr);
  EXPECT_EQ(model.config().n_layers, 5);
  EXPECT_EQ(model.config().vocab_size, 512);
  ASSERT_EQ(model.tensors().size(), 48u);
  EXPECT_EQ(model.tensors().front().name, "token_embd.weight");
  EXPECT_EQ(model.tensors()[1].name, "blk.0.attn_norm.weight");
  EXPECT_EQ(model.tensors()[2].name, "blk.0.attn_q.weight");
  EXPECT_EQ(model.tensors().back().name, "output.weight");
  EXPECT_EQ(model.tensors()[model.tensors().size() - 2].name, "output_norm.weight");
  EXPECT_EQ(model.n_params(), 292800);
  EXPECT_EQ(model.total_bytes(), 292800u * 4);
  EXPECT_EQ(model.tokenizer_data().tokens.size(), 512u);

  const TensorRef* q = model.FindTensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->shape, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(q->source_name, "blk.0.attn_q.weight");
  EXPECT_EQ(model.FindTensor("blk.4.attn_k.weight")->shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(model.FindTensor("blk.2.ffn_down.weight")->shape, (std::vector<int64_t>{64, 172}));
  EXPECT_EQ(model.FindTensor("blk.2.ffn_up.weight")->shape, (std::vector<int64_t>{172, 64}));
  EXPECT_EQ(model.FindTensor("token_embd.weight")->shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(model.FindTensor("blk.5.attn_q.weight"), nullptr);
  EXPECT_EQ(model.FindTensor(""), nullptr);

  const std::string fp = model.fingerprint();
  EXPECT_EQ(fp.size(), 32u);
  EXPECT_EQ(fp.find_first_not_of("0123456789abcdef"), std::string::npos);
  auto again = Model::Open(testing::StoriesGgufPath());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->fingerprint(), fp);
}

TEST(Model, OpensSmolLm2) {
  MNEMO_REQUIRE_FILE(testing::SmolLm2GgufPath());
  auto m = Model::Open(testing::SmolLm2GgufPath());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE((*m)->config().tied_embeddings);
  EXPECT_EQ((*m)->tensors().size(), 1u + 30 * 9 + 1);
  EXPECT_EQ((*m)->n_params(), 134515008);
  EXPECT_EQ((*m)->FindTensor("output.weight"), nullptr);
  EXPECT_EQ((*m)->FindTensor("blk.29.attn_k.weight")->shape, (std::vector<int64_t>{192, 576}));
  EXPECT_EQ((*m)->fingerprint().size(), 32u);
}

TEST(Model, PathErrors) {
  const std::string dir = testing::MakeTempDir();
  auto missing = Model::Open(dir + "/nope.gguf");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  auto no_config = Model::Open(dir);
  EXPECT_EQ(no_config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(no_config.status().message()), HasSubstr("config.json"));
  EXPECT_THAT(OpenError(dir + "/model.safetensors"), HasSubstr("open the folder"));
  WriteText(dir + "/junk.gguf", "not a gguf file at all");
  EXPECT_FALSE(Model::Open(dir + "/junk.gguf").ok());
}

TEST(Model, SafetensorsFolderNeedsWeightsAndTokenizer) {
  const std::string dir = testing::MakeTempDir();
  const std::string folder = Write(dir, Safetensors(), "m");
  ASSERT_EQ(OpenError(folder), "OK");
  std::filesystem::rename(folder + "/tokenizer.json", folder + "/t.json");
  auto no_tok = Model::Open(folder);
  EXPECT_EQ(no_tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(no_tok.status().message()), HasSubstr("tokenizer.json"));
  std::filesystem::rename(folder + "/t.json", folder + "/tokenizer.json");
  std::filesystem::remove(folder + "/tokenizer_config.json");  // optional
  EXPECT_EQ(OpenError(folder), "OK");
  std::filesystem::rename(folder + "/model.safetensors", folder + "/w.bin");
  auto no_weights = Model::Open(folder);
  EXPECT_EQ(no_weights.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(no_weights.status().message()), HasSubstr("model.safetensors"));
}

TEST(Model, ShardedSafetensorsMatchSingleFile) {
  const std::string dir = testing::MakeTempDir();
  const std::string folder = Write(dir, Safetensors(Architecture::kQwen2), "m");
  auto single = Model::Open(folder);
  ASSERT_TRUE(single.ok()) << single.status();
  const std::string fp = (*single)->fingerprint();
  const size_t n = (*single)->tensors().size();
  single->reset();

  // Split model.safetensors into two shards and an index.
  auto f = SafetensorsFile::Open(folder + "/model.safetensors");
  ASSERT_TRUE(f.ok());
  SafetensorsBuilder shard[2];
  nlohmann::json index = {{"metadata", {{"total_size", 0}}},
                          {"weight_map", nlohmann::json::object()}};
  int i = 0;
  for (const SafetensorsTensor& t : (*f)->tensors()) {
    const int s = (i++ % 2);
    ASSERT_TRUE(
        shard[s]
            .AddTensor(t.name, t.dtype, t.shape, std::vector<uint8_t>(t.data, t.data + t.bytes))
            .ok());
    index["weight_map"][t.name] = absl::StrFormat("model-%05d-of-00002.safetensors", s + 1);
  }
  f->reset();
  std::filesystem::remove(folder + "/model.safetensors");
  ASSERT_TRUE(shard[0].WriteFile(folder + "/model-00001-of-00002.safetensors").ok());
  ASSERT_TRUE(shard[1].WriteFile(folder + "/model-00002-of-00002.safetensors").ok());
  WriteText(folder + "/model.safetensors.index.json", index.dump());

  auto sharded = Model::Open(folder);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  EXPECT_EQ((*sharded)->tensors().size(), n);
  EXPECT_EQ((*sharded)->fingerprint(), fp);
  sharded->reset();

  // The index must be right about where each tensor is, and name only files in the folder.
  nlohmann::json wrong = index;
  wrong["weight_map"]["model.embed_tokens.weight"] =
      wrong["weight_map"]["model.embed_tokens.weight"] == "model-00001-of-00002.safetensors"
          ? "model-00002-of-00002.safetensors"
          : "model-00001-of-00002.safetensors";
  WriteText(folder + "/model.safetensors.index.json", wrong.dump());
  EXPECT_THAT(OpenError(folder), HasSubstr("model.embed_tokens.weight"));
  wrong = index;
  wrong["weight_map"]["model.norm.weight"] = "../evil.safetensors";
  WriteText(folder + "/model.safetensors.index.json", wrong.dump());
  EXPECT_THAT(OpenError(folder), HasSubstr("invalid shard"));
  WriteText(folder + "/model.safetensors.index.json", "{\"weight_map\": 3}");
  EXPECT_THAT(OpenError(folder), HasSubstr("weight_map"));
  WriteText(folder + "/model.safetensors.index.json", "{");
  EXPECT_THAT(OpenError(folder), HasSubstr("not a JSON object"));
}

TEST(Model, MissingTensorIsNamed) {
  const std::string dir = testing::MakeTempDir();
  const std::string folder = Write(dir, Safetensors(), "st");
  RewriteSafetensors(folder,
                     [](std::string& name, DType&, std::vector<int64_t>&, std::vector<uint8_t>&) {
                       return name != "model.layers.1.mlp.up_proj.weight";
                     });
  const std::string e = OpenError(folder);
  EXPECT_THAT(e, HasSubstr("missing tensor \"blk.1.ffn_up.weight\""));
  EXPECT_THAT(e, HasSubstr("model.layers.1.mlp.up_proj.weight"));
  EXPECT_THAT(e, HasSubstr("[512, 256]"));

  TestModelOptions g;
  const std::string gguf = Write(dir, g, "m.gguf");
  RewriteGguf(gguf, [](std::string& name, std::vector<int64_t>&, std::vector<uint8_t>&) {
    return name != "blk.0.attn_k.weight";
  });
  EXPECT_THAT(OpenError(gguf), HasSubstr("missing tensor \"blk.0.attn_k.weight\", expected shape "
                                         "[128, 256]"));
}

TEST(Model, WrongShapeIsNamed) {
  const std::string dir = testing::MakeTempDir();
  const std::string folder = Write(dir, Safetensors(), "st");
  RewriteSafetensors(
      folder, [](std::string& name, DType&, std::vector<int64_t>& shape, std::vector<uint8_t>&) {
        if (name == "model.layers.0.self_attn.o_proj.weight") shape = {128, 512};
        return true;
      });
  const std::string e = OpenError(folder);
  EXPECT_THAT(e, HasSubstr("blk.0.attn_output.weight"));
  EXPECT_THAT(e, HasSubstr("model.layers.0.self_attn.o_proj.weight"));
  EXPECT_THAT(e, HasSubstr("has shape [128, 512], expected [256, 256]"));

  TestModelOptions g;
  const std::string gguf = Write(dir, g, "m.gguf");
  RewriteGguf(gguf, [](std::string& name, std::vector<int64_t>& ne, std::vector<uint8_t>&) {
    if (name == "blk.1.ffn_down.weight") std::swap(ne[0], ne[1]);  // [d_ff, d_model] instead
    return true;
  });
  EXPECT_THAT(OpenError(gguf),
              HasSubstr("\"blk.1.ffn_down.weight\" has shape [512, 256], expected [256, 512]"));
}

TEST(Model, UnexpectedTensorsAreRefused) {
  const std::string dir = testing::MakeTempDir();
  const std::string a = Write(dir, Safetensors(), "a");
  RewriteSafetensors(a,
                     [](std::string& name, DType&, std::vector<int64_t>&, std::vector<uint8_t>&) {
                       if (name == "model.norm.weight") name = "model.vision_tower.norm.weight";
                       return true;
                     });
  EXPECT_THAT(OpenError(a), HasSubstr("\"model.vision_tower.norm.weight\" is not a tensor"));

  // A bias the config does not use would be silently ignored: refuse it.
  const std::string b = Write(dir, Safetensors(), "b");
  RewriteSafetensors(
      b, [](std::string&, DType&, std::vector<int64_t>&, std::vector<uint8_t>&) { return true; },
      {{"model.layers.0.self_attn.o_proj.bias", DType::kF32, {256}, std::vector<uint8_t>(1024)}});
  EXPECT_THAT(OpenError(b), HasSubstr("blk.0.attn_output.bias"));

  // A layer past n_layers.
  TestModelOptions g;
  const std::string gguf = Write(dir, g, "m.gguf");
  RewriteGguf(gguf, [](std::string& name, std::vector<int64_t>&, std::vector<uint8_t>&) {
    if (name == "blk.1.ffn_norm.weight") name = "blk.2.ffn_norm.weight";
    return true;
  });
  EXPECT_THAT(OpenError(gguf), HasSubstr("missing tensor \"blk.1.ffn_norm.weight\""));
  const std::string gguf2 = Write(dir, g, "m2.gguf");
  RewriteGguf(gguf2,
              [](std::string&, std::vector<int64_t>&, std::vector<uint8_t>&) { return true; });
  ASSERT_EQ(OpenError(gguf2), "OK");

  // Old checkpoints' rotary inv_freq buffers are skipped; a tied checkpoint's lm_head too.
  TestModelOptions tied = Safetensors();
  tied.tied_embeddings = true;
  const std::string c = Write(dir, tied, "c");
  auto before = Model::Open(c);
  ASSERT_TRUE(before.ok()) << before.status();
  const std::string fp = (*before)->fingerprint();
  const TensorRef* emb = (*before)->FindTensor("token_embd.weight");
  std::vector<ExtraTensor> extra = {{"model.layers.0.self_attn.rotary_emb.inv_freq",
                                     DType::kF32,
                                     {32},
                                     std::vector<uint8_t>(128, 1)},
                                    {"lm_head.weight", emb->dtype, emb->shape,
                                     std::vector<uint8_t>(emb->data, emb->data + emb->bytes)}};
  before->reset();
  RewriteSafetensors(
      c, [](std::string&, DType&, std::vector<int64_t>&, std::vector<uint8_t>&) { return true; },
      std::move(extra));
  auto after = Model::Open(c);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ((*after)->FindTensor("output.weight"), nullptr);
  EXPECT_EQ((*after)->fingerprint(), fp);
}

TEST(Model, FingerprintTracksWeightsAndConfig) {
  const std::string dir = testing::MakeTempDir();
  const std::string folder = Write(dir, Safetensors(Architecture::kQwen3), "m");
  auto m = Model::Open(folder);
  ASSERT_TRUE(m.ok()) << m.status();
  const std::string fp = (*m)->fingerprint();
  EXPECT_EQ((*m)->fingerprint(), fp);  // cached
  m->reset();
  auto m2 = Model::Open(folder);
  ASSERT_TRUE(m2.ok());
  EXPECT_EQ((*m2)->fingerprint(), fp);
  m2->reset();

  // One weight byte.
  RewriteSafetensors(
      folder, [](std::string& name, DType&, std::vector<int64_t>&, std::vector<uint8_t>& data) {
        if (name == "model.layers.1.mlp.down_proj.weight") data[1000] ^= 1;
        return true;
      });
  auto flipped = Model::Open(folder);
  ASSERT_TRUE(flipped.ok()) << flipped.status();
  const std::string fp_flipped = (*flipped)->fingerprint();
  EXPECT_NE(fp_flipped, fp);
  flipped->reset();

  // One config value (rms_norm_eps) with the same weights.
  nlohmann::json cfg = nlohmann::json::parse(ReadText(folder + "/config.json"));
  cfg["rms_norm_eps"] = 2e-5;
  WriteText(folder + "/config.json", cfg.dump());
  auto edited = Model::Open(folder);
  ASSERT_TRUE(edited.ok()) << edited.status();
  EXPECT_NE((*edited)->fingerprint(), fp_flipped);
  EXPECT_NE((*edited)->fingerprint(), fp);
}

TEST(Model, FingerprintDependsOnRopeStyleNotFormat) {
  // The same llama weights and config, but GGUF llama rotates adjacent pairs and HF halves:
  // different models, different fingerprints; with the GGUF config, the HF tensors hash the
  // same as the GGUF ones.
  const std::string dir = testing::MakeTempDir();
  TestModelOptions o;
  auto g = Model::Open(Write(dir, o, "l.gguf"));
  o.format = TestModelFormat::kSafetensors;
  auto s = Model::Open(Write(dir, o, "l"));
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*g)->config().rope.style, RopeStyle::kNormal);
  EXPECT_EQ((*s)->config().rope.style, RopeStyle::kNeox);
  EXPECT_NE((*g)->fingerprint(), (*s)->fingerprint());
  EXPECT_EQ(ComputeModelFingerprint((*g)->config(), (*s)->tensors()), (*g)->fingerprint());
  ModelConfig renamed = (*g)->config();
  renamed.name = "another name";
  renamed.eos = 3;
  EXPECT_EQ(ComputeModelFingerprint(renamed, (*g)->tensors()), (*g)->fingerprint());
}

TEST(Model, FingerprintOfF32QwenIsFormatIndependent) {
  const std::string dir = testing::MakeTempDir();
  TestModelOptions o;
  o.arch = Architecture::kQwen2;
  o.dtype = DType::kF32;  // GGUF's F32 1-D tensors then match safetensors' exactly
  auto g = Model::Open(Write(dir, o, "q.gguf"));
  o.format = TestModelFormat::kSafetensors;
  auto s = Model::Open(Write(dir, o, "q"));
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*g)->fingerprint(), (*s)->fingerprint());
  EXPECT_EQ((*g)->total_bytes(), (*s)->total_bytes());
  EXPECT_EQ((*g)->n_params(), (*s)->n_params());
  EXPECT_EQ((*s)->tensors()[1].source_name, "model.layers.0.input_layernorm.weight");
}

TEST(Model, FingerprintSerializationCoversNamesShapesAndDTypes) {
  ModelConfig c;
  std::vector<uint8_t> bytes(16, 7);
  std::vector<TensorRef> t = {{"a", "a", {2, 2}, DType::kF32, 16, bytes.data()}};
  const std::string base = ComputeModelFingerprint(c, t);
  auto changed = [&](auto edit) {
    std::vector<TensorRef> u = t;
    ModelConfig d = c;
    edit(u[0], d);
    return ComputeModelFingerprint(d, u);
  };
  EXPECT_NE(changed([](TensorRef& r, ModelConfig&) { r.name = "b"; }), base);
  EXPECT_NE(changed([](TensorRef& r, ModelConfig&) { r.shape = {4, 1}; }), base);
  EXPECT_NE(changed([](TensorRef& r, ModelConfig&) { r.dtype = DType::kI32; }), base);
  EXPECT_NE(changed([](TensorRef& r, ModelConfig&) { r.bytes = 8; }), base);
  EXPECT_NE(changed([](TensorRef&, ModelConfig& d) { d.rope.base = 10001; }), base);
  EXPECT_NE(changed([](TensorRef&, ModelConfig& d) { d.context_length = 1; }), base);
  EXPECT_NE(changed([](TensorRef&, ModelConfig& d) { d.qk_norm = true; }), base);
  EXPECT_EQ(changed([](TensorRef& r, ModelConfig&) { r.source_name = "x"; }), base);
  EXPECT_EQ(changed([](TensorRef&, ModelConfig& d) { d.bos = 5; }), base);
  // Tensor order does not matter.
  std::vector<uint8_t> more(4, 1);
  std::vector<TensorRef> two = {t[0], {"z", "z", {1}, DType::kF32, 4, more.data()}};
  std::vector<TensorRef> swapped = {two[1], two[0]};
  EXPECT_EQ(ComputeModelFingerprint(c, two), ComputeModelFingerprint(c, swapped));
}

}  // namespace
}  // namespace mnemo::engine
