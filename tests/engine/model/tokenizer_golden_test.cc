// mnemo's tokenizers against goldens from independent implementations (SentencePiece for
// stories260K, Hugging Face `tokenizers` for SmolLM2), written by
// tools/make_tokenizer_goldens.py into tests/data/tokenizer_goldens.json.
#include <algorithm>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/model/gguf.h"
#include "engine/model/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using nlohmann::json;

using testing::FromHex;

const json& Goldens() {
  static const json* goldens = [] {
    return new json(json::parse(testing::ReadFile(testing::TestDataPath("tokenizer_goldens.json")),
                                nullptr,
                                /*allow_exceptions=*/false));
  }();
  return *goldens;
}

const json* FindModel(const std::string& key) {
  const json& g = Goldens();
  if (!g.is_object() || !g.contains("models")) return nullptr;
  for (const json& m : g["models"]) {
    if (m["model"] == key) return &m;
  }
  return nullptr;
}

std::unique_ptr<Tokenizer> LoadTokenizer(const std::string& path) {
  auto file = GgufFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return nullptr;
  auto data = TokenizerDataFromGguf(**file);
  EXPECT_TRUE(data.ok()) << data.status();
  if (!data.ok()) return nullptr;
  auto tok = Tokenizer::Create(std::move(*data));
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

std::string PathOf(const std::string& model) {
  return model == "stories" ? testing::StoriesGgufPath() : testing::SmolLm2GgufPath();
}

class TokenizerGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerGoldenTest, BareEncodingMatchesIndependentImplementation) {
  const json* model = FindModel(GetParam());
  ASSERT_NE(model, nullptr) << "tests/data/tokenizer_goldens.json lacks " << GetParam();
  const std::string path = PathOf(GetParam());
  MNEMO_REQUIRE_FILE(path);
  auto tok = LoadTokenizer(path);
  ASSERT_NE(tok, nullptr);

  EncodeOptions bare;
  bare.add_bos = false;
  bare.add_eos = false;
  int checked = 0;
  for (const json& c : (*model)["cases"]) {
    const std::string label = c["label"];
    SCOPED_TRACE("case \"" + label + "\"");
    const std::string text = FromHex(c["text_hex"]);
    const std::vector<TokenId> want = c["ids"].get<std::vector<TokenId>>();
    const std::vector<TokenId> got = tok->Encode(text, bare);
    EXPECT_EQ(got, want);
    if (c.contains("decoded_hex")) {
      // The independent decoder's text for the golden ids (valid UTF-8, no unk).
      EXPECT_EQ(tok->Decode(want), FromHex(c["decoded_hex"]));
    }
    ++checked;
  }
  EXPECT_GE(checked, 60);
}

TEST_P(TokenizerGoldenTest, BosFollowsTheModel) {
  const json* model = FindModel(GetParam());
  ASSERT_NE(model, nullptr);
  const std::string path = PathOf(GetParam());
  MNEMO_REQUIRE_FILE(path);
  auto tok = LoadTokenizer(path);
  ASSERT_NE(tok, nullptr);

  const bool add_bos = (*model)["add_bos_default"];
  const TokenId bos = (*model)["bos"];
  EXPECT_EQ(tok->data().add_bos, add_bos);
  EXPECT_EQ(tok->data().bos, bos);
  for (const json& c : (*model)["cases"]) {
    SCOPED_TRACE("case \"" + c["label"].get<std::string>() + "\"");
    const std::string text = FromHex(c["text_hex"]);
    std::vector<TokenId> want = c["ids"].get<std::vector<TokenId>>();
    // Model default.
    std::vector<TokenId> with_default = want;
    if (add_bos) with_default.insert(with_default.begin(), bos);
    EXPECT_EQ(tok->Encode(text, EncodeOptions{}), with_default);
    // Forced on: exactly one BOS in front, even for the empty text.
    EncodeOptions on;
    on.add_bos = true;
    std::vector<TokenId> with_bos = want;
    with_bos.insert(with_bos.begin(), bos);
    EXPECT_EQ(tok->Encode(text, on), with_bos);
  }
}

TEST_P(TokenizerGoldenTest, DecodeRoundTripsValidGoldenTexts) {
  const json* model = FindModel(GetParam());
  ASSERT_NE(model, nullptr);
  const std::string path = PathOf(GetParam());
  MNEMO_REQUIRE_FILE(path);
  auto tok = LoadTokenizer(path);
  ASSERT_NE(tok, nullptr);
  for (const json& c : (*model)["cases"]) {
    const std::string label = c["label"];
    SCOPED_TRACE("case \"" + label + "\"");
    const std::string text = FromHex(c["text_hex"]);
    const std::vector<TokenId> ids = c["ids"].get<std::vector<TokenId>>();
    // Texts the vocabulary cannot spell (unk) or where SPM's "▁" stands for a space cannot
    // round-trip; every other text, invalid UTF-8 included, comes back byte for byte.
    const bool has_unk = std::find(ids.begin(), ids.end(), tok->data().unk) != ids.end();
    const bool spm_mark =
        tok->data().kind == TokenizerKind::kSpm && text.find("\xE2\x96\x81") != std::string::npos;
    if (has_unk || spm_mark) continue;
    EXPECT_EQ(tok->Decode(tok->Encode(text, EncodeOptions{})), text);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, TokenizerGoldenTest, ::testing::Values("stories", "smollm2"),
                         [](const auto& p) { return p.param; });

}  // namespace
}  // namespace mnemo::engine
