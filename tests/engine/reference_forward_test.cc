// The float64 reference forward pass validates itself on a real trained model: greedy
// decoding of stories260K must tell the story that model is known to tell.
#include "tests/engine/reference_forward.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "engine/model/model.h"
#include "engine/model/test_model.h"
#include "engine/model/tokenizer.h"
#include "tests/test_util.h"

namespace mnemo::testing {
namespace {

using engine::TokenId;

TEST(ReferenceForward, Stories260KTellsTheKnownStory) {
  MNEMO_REQUIRE_FILE(StoriesGgufPath());
  auto model = engine::Model::Open(StoriesGgufPath());
  ASSERT_TRUE(model.ok()) << model.status();
  auto tok = engine::Tokenizer::Create((*model)->tokenizer_data());
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ref = ReferenceModel::Create(**model);
  ASSERT_TRUE(ref.ok()) << ref.status();

  const std::vector<TokenId> prompt = (*tok)->Encode("Once upon a time", {});
  ASSERT_FALSE(prompt.empty());
  EXPECT_EQ(prompt[0], 1);  // BOS
  const std::vector<TokenId> ids = (*ref)->Greedy(prompt, 40);
  engine::DecodeOptions opts;
  opts.strip_leading_space = false;
  const std::string text = (*tok)->Decode(ids, opts);
  EXPECT_THAT(text, ::testing::StartsWith(", there was a little girl named Lily. She loved to "
                                          "play outside in the park."))
      << text;
}

// SmolLM2 (a GGUF llama with permuted Q/K, tied embeddings, Q4_1 weights) knows a fact.
TEST(ReferenceForward, SmolLm2KnowsTheCapitalOfFrance) {
  MNEMO_REQUIRE_FILE(SmolLm2GgufPath());
  auto model = engine::Model::Open(SmolLm2GgufPath());
  ASSERT_TRUE(model.ok()) << model.status();
  auto tok = engine::Tokenizer::Create((*model)->tokenizer_data());
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ref = ReferenceModel::Create(**model);
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::vector<TokenId> prompt = (*tok)->Encode("The capital of France is", {});
  const std::string text = (*tok)->Decode((*ref)->Greedy(prompt, 4));
  EXPECT_THAT(text, ::testing::HasSubstr("Paris")) << text;
}

TEST(ReferenceForward, LogitsAreThoseOfEachPrefix) {
  MNEMO_REQUIRE_FILE(StoriesGgufPath());
  auto model = engine::Model::Open(StoriesGgufPath());
  ASSERT_TRUE(model.ok()) << model.status();
  auto ref = ReferenceModel::Create(**model);
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::vector<TokenId> tokens = {1, 400, 300, 20, 77, 500, 3};
  const auto all = (*ref)->Logits(tokens);
  ASSERT_EQ(all.size(), tokens.size());
  // Causality: the logits at position i depend only on tokens[0..i].
  const auto prefix = (*ref)->Logits(std::span(tokens).first(4));
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(all[i], prefix[i]);
  for (const auto& row : all) {
    ASSERT_EQ(row.size(), 512u);
    for (double v : row) ASSERT_TRUE(std::isfinite(v));
  }
}

TEST(ReferenceForward, EveryTestArchitectureGivesFiniteLogits) {
  const std::string dir = MakeTempDir();
  for (engine::Architecture arch : {engine::Architecture::kLlama, engine::Architecture::kMistral,
                                    engine::Architecture::kQwen2, engine::Architecture::kQwen3}) {
    engine::TestModelOptions o;
    o.arch = arch;
    o.n_layers = 1;
    const std::string path = dir + "/m" + std::to_string(static_cast<int>(arch)) + ".gguf";
    ASSERT_TRUE(engine::WriteTestModel(o, path).ok());
    auto model = engine::Model::Open(path);
    ASSERT_TRUE(model.ok()) << model.status();
    auto ref = ReferenceModel::Create(**model);
    ASSERT_TRUE(ref.ok()) << ref.status();
    const std::vector<TokenId> tokens = {10, 20, 30};
    for (const auto& row : (*ref)->Logits(tokens)) {
      for (double v : row) ASSERT_TRUE(std::isfinite(v));
    }
  }
}

}  // namespace
}  // namespace mnemo::testing
