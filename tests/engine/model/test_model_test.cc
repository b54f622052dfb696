#include "engine/model/test_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "engine/model/model.h"
#include "kernels/dequant.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using kernels::DType;
using ::testing::HasSubstr;

constexpr Architecture kArchs[] = {Architecture::kLlama, Architecture::kMistral,
                                   Architecture::kQwen2, Architecture::kQwen3};
constexpr DType kGgufDTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16,
                                 DType::kQ8_0, DType::kQ4_0, DType::kQ4_1,
                                 DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};
constexpr DType kSafetensorsDTypes[] = {DType::kF32, DType::kF16, DType::kBF16};

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string OutPath(const std::string& dir, const TestModelOptions& o) {
  return absl::StrCat(dir, "/", AsAbsl(ArchName(o.arch)), "-", AsAbsl(kernels::DTypeName(o.dtype)),
                      "-", o.seed, o.format == TestModelFormat::kGguf ? ".gguf" : "");
}

// The largest round-trip error the dtype's quantizer allows for a row whose largest
// magnitude is `amax` (see kernels/dequant.h; a range max - min <= 2 * amax).
float Bound(DType t, float amax) {
  switch (t) {
    case DType::kF32:
      return 0.0f;
    case DType::kF16:
      return amax * 0x1p-11f + 1e-7f;
    case DType::kBF16:
      return amax * 0x1p-8f;
    case DType::kQ8_0:
      return amax / 225.0f + 4e-6f;
    case DType::kQ4_0:
      return amax / 7.9f + 3e-7f;
    case DType::kQ4_1:
      return 2.0f * amax / 29.0f + amax / 2048.0f + 1e-6f;
    case DType::kQ4_K:
      return 2.0f * amax / 28.0f + 1e-7f;
    case DType::kQ5_K:
      return 2.0f * amax / 58.0f + 1e-7f;
    case DType::kQ6_K:
      return amax / 61.0f + 1e-7f;
    default:
      return 0.0f;
  }
}

// Checks every tensor of `m` against the writer's source values: the stored bytes are the
// reference quantization of the source, and dequantize to within the dtype's bound.
void CheckWeights(const Model& m, const TestModelOptions& opts) {
  const std::vector<TensorSpec> specs = ExpectedTensors(m.config());
  ASSERT_EQ(m.tensors().size(), specs.size());
  for (const TensorSpec& spec : specs) {
    SCOPED_TRACE(spec.name);
    const TensorRef* t = m.FindTensor(spec.name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->shape, spec.shape);
    const DType dt = TestModelTensorDType(opts, spec.shape);
    ASSERT_EQ(t->dtype, dt);
    const std::vector<float> src = TestModelTensorValues(opts, spec.name, spec.shape);
    const int64_t cols = spec.shape.back();
    const int64_t rows = static_cast<int64_t>(src.size()) / cols;
    const uint64_t row_bytes = *kernels::DTypeBytes(dt, cols);
    ASSERT_EQ(t->bytes, row_bytes * static_cast<uint64_t>(rows));
    std::vector<uint8_t> want(row_bytes);
    std::vector<uint8_t> got(row_bytes);
    std::vector<float> deq(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      const float* x = src.data() + r * cols;
      kernels::QuantizeRowRef(dt, x, want.data(), cols);
      std::memcpy(got.data(), t->data + r * row_bytes, row_bytes);  // data may be unaligned
      ASSERT_EQ(got, want) << "row " << r;
      kernels::DequantizeRowRef(dt, got.data(), deq.data(), cols);
      float amax = 0.0f;
      for (int64_t i = 0; i < cols; ++i) amax = std::max(amax, std::fabs(x[i]));
      const float bound = Bound(dt, amax);
      for (int64_t i = 0; i < cols; ++i) {
        ASSERT_LE(std::fabs(deq[i] - x[i]), bound) << "row " << r << " col " << i;
      }
    }
  }
}

// Everything but the special ids that Model fills in from the tokenizer.
void ExpectSameConfig(ModelConfig got, ModelConfig want) {
  got.eot = want.eot = -1;
  got.unk = want.unk = -1;
  EXPECT_EQ(got, want) << "got  " << got.ToJson() << "\nwant " << want.ToJson();
}

void RoundTrip(TestModelFormat format, std::span<const DType> dtypes) {
  const std::string dir = testing::MakeTempDir();
  for (Architecture arch : kArchs) {
    for (DType dtype : dtypes) {
      TestModelOptions o;
      o.arch = arch;
      o.dtype = dtype;
      o.format = format;
      o.seed = 7;
      o.tied_embeddings = arch == Architecture::kQwen3;  // both kinds of output projection
      SCOPED_TRACE(absl::StrCat(AsAbsl(ArchName(arch)), " ", AsAbsl(kernels::DTypeName(dtype))));
      const std::string path = OutPath(dir, o);
      absl::Status s = WriteTestModel(o, path);
      ASSERT_TRUE(s.ok()) << s;
      auto m = Model::Open(path);
      ASSERT_TRUE(m.ok()) << m.status();
      auto want = TestModelConfig(o);
      ASSERT_TRUE(want.ok()) << want.status();
      ExpectSameConfig((*m)->config(), *want);
      EXPECT_EQ((*m)->config().arch,
                arch == Architecture::kMistral && format == TestModelFormat::kGguf
                    ? Architecture::kLlama
                    : arch);
      EXPECT_EQ((*m)->config().qkv_bias, arch == Architecture::kQwen2);
      EXPECT_EQ((*m)->config().qk_norm, arch == Architecture::kQwen3);
      EXPECT_EQ((*m)->format(), format == TestModelFormat::kGguf ? WeightFormat::kGguf
                                                                 : WeightFormat::kSafetensors);
      EXPECT_TRUE((*m)->tokenizer_data().tokens == TestModelTokenizerData().tokens)
          << "tokenizer has " << (*m)->tokenizer_data().tokens.size() << " tokens";
      CheckWeights(**m, o);
    }
  }
}

TEST(TestModel, GgufRoundTripEveryArchAndDType) { RoundTrip(TestModelFormat::kGguf, kGgufDTypes); }

TEST(TestModel, SafetensorsRoundTripEveryArchAndDType) {
  RoundTrip(TestModelFormat::kSafetensors, kSafetensorsDTypes);
}

TEST(TestModel, DeterministicBytes) {
  const std::string dir = testing::MakeTempDir();
  TestModelOptions o;
  o.arch = Architecture::kQwen2;
  o.dtype = DType::kQ4_K;
  ASSERT_TRUE(WriteTestModel(o, dir + "/a.gguf").ok());
  ASSERT_TRUE(WriteTestModel(o, dir + "/b.gguf").ok());
  const std::string a = ReadText(dir + "/a.gguf");
  EXPECT_GT(a.size(), 100000u);
  EXPECT_EQ(a, ReadText(dir + "/b.gguf"));
  o.seed = 2;
  ASSERT_TRUE(WriteTestModel(o, dir + "/c.gguf").ok());
  EXPECT_NE(a, ReadText(dir + "/c.gguf"));
}

TEST(TestModel, SourceValuesAreSeededByNameOnly) {
  TestModelOptions o;
  const std::vector<int64_t> shape = {8, 256};
  const auto a = TestModelTensorValues(o, "blk.0.attn_q.weight", shape);
  EXPECT_EQ(a, TestModelTensorValues(o, "blk.0.attn_q.weight", shape));
  EXPECT_NE(a, TestModelTensorValues(o, "blk.1.attn_q.weight", shape));
  o.dtype = DType::kQ6_K;
  o.format = TestModelFormat::kSafetensors;
  EXPECT_EQ(a, TestModelTensorValues(o, "blk.0.attn_q.weight", shape));
  float amax = 0;
  for (float x : a) amax = std::max(amax, std::fabs(x));
  EXPECT_LE(amax, 1.0f / 16.0f);  // 1 / sqrt(256)
  EXPECT_GT(amax, 0.9f / 16.0f);
  for (float x : TestModelTensorValues(o, "blk.0.attn_norm.weight", {256})) {
    EXPECT_GE(x, 0.9f);
    EXPECT_LT(x, 1.1f);
  }
}

TEST(TestModel, SlidingWindowAndTiedEmbeddings) {
  const std::string dir = testing::MakeTempDir();
  for (TestModelFormat format : {TestModelFormat::kGguf, TestModelFormat::kSafetensors}) {
    for (Architecture arch : {Architecture::kMistral, Architecture::kQwen2}) {
      TestModelOptions o;
      o.arch = arch;
      o.format = format;
      o.sliding_window = 128;
      o.tied_embeddings = true;
      o.n_layers = 1;
      const std::string path =
          absl::StrCat(dir, "/", static_cast<int>(format), "-", static_cast<int>(arch));
      ASSERT_TRUE(WriteTestModel(o, path).ok());
      auto m = Model::Open(path);
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_EQ((*m)->config().sliding_window, 128);
      EXPECT_TRUE((*m)->config().tied_embeddings);
      EXPECT_EQ((*m)->FindTensor("output.weight"), nullptr);
      EXPECT_EQ((*m)->config().n_layers, 1);
    }
  }
}

TEST(TestModel, SafetensorsFolderFiles) {
  const std::string dir = testing::MakeTempDir() + "/model";
  TestModelOptions o;
  o.arch = Architecture::kQwen3;
  o.format = TestModelFormat::kSafetensors;
  o.dtype = DType::kBF16;
  ASSERT_TRUE(WriteTestModel(o, dir).ok());
  auto config = ConfigFromHfJson(ReadText(dir + "/config.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(*config, *TestModelConfig(o));
  nlohmann::json cj = nlohmann::json::parse(ReadText(dir + "/config.json"));
  EXPECT_EQ(cj["torch_dtype"], "bfloat16");
  EXPECT_EQ(cj["architectures"][0], "Qwen3ForCausalLM");

  nlohmann::json tok = nlohmann::json::parse(ReadText(dir + "/tokenizer.json"));
  EXPECT_EQ(tok["model"]["type"], "BPE");
  EXPECT_EQ(tok["model"]["vocab"].size(), static_cast<size_t>(kTestModelEndOfText));
  EXPECT_EQ(tok["model"]["vocab"]["Ġthe"], 262);
  EXPECT_EQ(tok["model"]["merges"].size(), static_cast<size_t>(kTestModelNumMerges));
  ASSERT_EQ(tok["added_tokens"].size(), 3u);
  EXPECT_EQ(tok["added_tokens"][2]["content"], "<|im_end|>");
  EXPECT_EQ(tok["added_tokens"][2]["id"], kTestModelImEnd);
  EXPECT_EQ(tok["pre_tokenizer"]["pretokenizers"][0]["type"], "Split");
  EXPECT_EQ(tok["pre_tokenizer"]["pretokenizers"][1]["type"], "ByteLevel");

  nlohmann::json tc = nlohmann::json::parse(ReadText(dir + "/tokenizer_config.json"));
  EXPECT_THAT(tc["chat_template"].get<std::string>(), HasSubstr("<|im_start|>"));
  EXPECT_EQ(tc["eos_token"], "<|im_end|>");
  EXPECT_EQ(tc["added_tokens_decoder"][std::to_string(kTestModelImStart)]["content"],
            "<|im_start|>");
}

TEST(TestModel, TokenizerData) {
  const TokenizerData d = TestModelTokenizerData();
  ASSERT_EQ(d.tokens.size(), static_cast<size_t>(kTestModelVocabSize));
  ASSERT_EQ(d.types.size(), d.tokens.size());
  EXPECT_EQ(d.tokens['a'], "a");
  EXPECT_EQ(d.tokens[' '], "Ġ");
  EXPECT_EQ(d.tokens['\n'], "Ċ");
  EXPECT_EQ(d.tokens[0], "Ā");
  EXPECT_EQ(d.tokens[0xff], "ÿ");
  EXPECT_EQ(d.tokens[kTestModelEndOfText], "<|endoftext|>");
  EXPECT_EQ(d.tokens[kTestModelImStart], "<|im_start|>");
  EXPECT_EQ(d.tokens[kTestModelImEnd], "<|im_end|>");
  EXPECT_EQ(d.types[kTestModelImEnd], TokenType::kControl);
  EXPECT_EQ(d.types[300 - 10], TokenType::kNormal);
  // Every merge joins two existing pieces into the token that follows the bytes.
  std::vector<std::string> seen(d.tokens.begin(), d.tokens.begin() + 256);
  for (size_t i = 0; i < d.merges.size(); ++i) {
    const std::string& m = d.merges[i];
    const size_t sp = m.find(' ');
    ASSERT_NE(sp, std::string::npos);
    const std::string l = m.substr(0, sp), r = m.substr(sp + 1);
    EXPECT_NE(std::find(seen.begin(), seen.end(), l), seen.end()) << m;
    EXPECT_NE(std::find(seen.begin(), seen.end(), r), seen.end()) << m;
    EXPECT_EQ(d.tokens[256 + i], l + r);
    EXPECT_EQ(std::find(seen.begin(), seen.end(), l + r), seen.end()) << "duplicate " << m;
    seen.push_back(l + r);
  }
  // Distinct byte symbols.
  std::vector<std::string> bytes(d.tokens.begin(), d.tokens.begin() + 256);
  std::sort(bytes.begin(), bytes.end());
  EXPECT_EQ(std::unique(bytes.begin(), bytes.end()), bytes.end());
  EXPECT_THAT(d.chat_template, HasSubstr("add_generation_prompt"));
}

// The tokenizer is real: both formats load it, and the merges apply.
TEST(TestModel, TokenizerEncodesWithMerges) {
  const std::string dir = testing::MakeTempDir();
  for (TestModelFormat format : {TestModelFormat::kGguf, TestModelFormat::kSafetensors}) {
    TestModelOptions o;
    o.format = format;
    o.n_layers = 1;
    const std::string path = dir + (format == TestModelFormat::kGguf ? "/m.gguf" : "/m");
    ASSERT_TRUE(WriteTestModel(o, path).ok());
    auto m = Model::Open(path);
    ASSERT_TRUE(m.ok()) << m.status();
    auto tok = Tokenizer::Create((*m)->tokenizer_data());
    ASSERT_TRUE(tok.ok()) << tok.status();
    EncodeOptions eo;
    eo.parse_special = true;
    const std::vector<TokenId> ids = (*tok)->Encode("<|im_start|>Hello world<|im_end|>", eo);
    // "Hello" and " world" are single merged tokens (ranks 25 and 22).
    EXPECT_EQ(ids, (std::vector<TokenId>{kTestModelImStart, 256 + 25, 256 + 22, kTestModelImEnd}));
    EXPECT_EQ((*tok)->Decode(ids), "Hello world");
    EXPECT_TRUE((*tok)->IsEog(kTestModelImEnd));
    EXPECT_EQ((*m)->tokenizer_data().chat_template, TestModelTokenizerData().chat_template);
  }
}

TEST(TestModel, BadOptionsAreNamed) {
  const std::string dir = testing::MakeTempDir();
  auto error = [&](auto edit) {
    TestModelOptions o;
    edit(o);
    absl::Status s = WriteTestModel(o, dir + "/x");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    return std::string(s.message());
  };
  EXPECT_THAT(error([](TestModelOptions& o) {
                o.dtype = DType::kQ4_K;
                o.d_model = 64;
              }),
              HasSubstr("d_model = 64 is not a multiple of 256"));
  EXPECT_THAT(error([](TestModelOptions& o) {
                o.dtype = DType::kQ8_0;
                o.d_ff = 100;
              }),
              HasSubstr("d_ff"));
  EXPECT_THAT(error([](TestModelOptions& o) {
                o.dtype = DType::kQ8_0;
                o.format = TestModelFormat::kSafetensors;
              }),
              HasSubstr("safetensors"));
  EXPECT_THAT(error([](TestModelOptions& o) { o.dtype = DType::kI32; }),
              HasSubstr("not a weight dtype"));
  EXPECT_THAT(error([](TestModelOptions& o) { o.sliding_window = 16; }),
              HasSubstr("sliding window"));
  EXPECT_THAT(error([](TestModelOptions& o) { o.n_kv_heads = 3; }), HasSubstr("n_kv_heads"));
  EXPECT_THAT(error([](TestModelOptions& o) { o.n_layers = 0; }), HasSubstr("n_layers"));
  EXPECT_FALSE(testing::FileExists(dir + "/x"));
}

}  // namespace
}  // namespace mnemo::engine
