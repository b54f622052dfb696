// TokenizerDataFromHfJson (a small handwritten tokenizer.json in tests/data/, inline
// variants) and TokenizerDataFromGguf on files made with GgufBuilder.
#include <fstream>
#include <random>
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
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

EncodeOptions Bare() {
  EncodeOptions o;
  o.add_bos = false;
  o.add_eos = false;
  return o;
}

void ExpectInvalid(const absl::Status& s, const std::string& needle) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(needle));
}

TEST(HfJsonTest, LoadsTheHandwrittenLlama3StyleTokenizer) {
  const std::string tj = ReadFile(testing::TestDataPath("tiny_bpe_tokenizer.json"));
  const std::string cj = ReadFile(testing::TestDataPath("tiny_bpe_tokenizer_config.json"));
  ASSERT_FALSE(tj.empty());
  auto data = TokenizerDataFromHfJson(tj, cj);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->kind, TokenizerKind::kBpe);
  EXPECT_EQ(data->pre, "llama3");
  EXPECT_TRUE(data->ignore_merges);
  ASSERT_EQ(data->tokens.size(), 27u);
  EXPECT_EQ(data->merges.size(), 11u);
  EXPECT_EQ(data->merges[6], "Ġw or");
  EXPECT_EQ(data->types[24], TokenType::kControl);
  EXPECT_EQ(data->types[26], TokenType::kUserDefined);
  EXPECT_EQ(data->types[15], TokenType::kNormal);
  EXPECT_EQ(data->bos, 24);
  EXPECT_EQ(data->eos, 25);
  EXPECT_EQ(data->eot, 25);
  EXPECT_THAT(data->eog, ElementsAre(25));
  EXPECT_TRUE(data->add_bos);  // from the TemplateProcessing post-processor
  EXPECT_THAT(data->chat_template, HasSubstr("m['role']"));

  auto tok = Tokenizer::Create(*data);
  ASSERT_TRUE(tok.ok()) << tok.status();
  // Expected ids checked with Hugging Face `tokenizers` loading the same file.
  EXPECT_THAT((*tok)->Encode("hello world!", EncodeOptions{}), ElementsAre(24, 15, 20, 8));
  EXPECT_THAT((*tok)->Encode("hellod", Bare()), ElementsAre(15, 7));
  EXPECT_THAT((*tok)->Encode("hello world 12", Bare()), ElementsAre(15, 20, 4, 21));
  EXPECT_THAT((*tok)->Encode("hello\n\nworld", Bare()), ElementsAre(15, 23, 23, 5, 17, 19));
  EXPECT_THAT((*tok)->Encode("123 1212", Bare()), ElementsAre(22, 4, 21, 9, 10));
  EncodeOptions special = Bare();
  special.parse_special = true;
  EXPECT_THAT((*tok)->Encode("<tool>hello<|eot_id|>", special), ElementsAre(26, 15, 25));
  EXPECT_EQ((*tok)->Decode(std::vector<TokenId>{24, 15, 20, 8}), "hello world!");
}

TEST(HfJsonTest, AcceptsMergesAsStringsAndGpt2AndSmollmPreTokenizers) {
  json j = json::parse(ReadFile(testing::TestDataPath("tiny_bpe_tokenizer.json")));
  json merges = json::array();
  for (const auto& m : j["model"]["merges"]) {
    merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
  }
  j["model"]["merges"] = merges;
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  auto gpt2 = TokenizerDataFromHfJson(j.dump(), "");
  ASSERT_TRUE(gpt2.ok()) << gpt2.status();
  EXPECT_EQ(gpt2->pre, "gpt2");
  EXPECT_EQ(gpt2->merges[0], "h e");
  EXPECT_EQ(gpt2->bos, 24);  // from the post-processor alone

  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Digits"}, {"individual_digits", true}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}}};
  auto smollm = TokenizerDataFromHfJson(j.dump(), "");
  ASSERT_TRUE(smollm.ok()) << smollm.status();
  EXPECT_EQ(smollm->pre, "smollm");

  j["pre_tokenizer"]["pretokenizers"][0] = {
      {"type", "Split"}, {"pattern", {{"Regex", "\\p{N}{1,5}"}}}, {"behavior", "Isolated"}};
  j["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = false;
  auto bad = TokenizerDataFromHfJson(j.dump(), "");
  ASSERT_FALSE(bad.ok());
  ExpectInvalid(bad.status(), "unsupported regex");
}

TEST(HfJsonTest, SentencePieceStyleBpeBecomesSpmWithScoresFromRanks) {
  const json j = {{"added_tokens",
                   {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                    {{"id", 1}, {"content", "<s>"}, {"special", true}},
                    {{"id", 2}, {"content", "</s>"}, {"special", true}}}},
                  {"normalizer", nullptr},
                  {"pre_tokenizer",
                   {{"type", "Metaspace"},
                    {"replacement", "▁"},
                    {"prepend_scheme", "first"},
                    {"split", false}}},
                  {"model",
                   {{"type", "BPE"},
                    {"unk_token", "<unk>"},
                    {"byte_fallback", true},
                    {"vocab",
                     {{"<unk>", 0},
                      {"<s>", 1},
                      {"</s>", 2},
                      {"<0x0A>", 3},
                      {"▁", 4},
                      {"h", 5},
                      {"i", 6},
                      {"▁h", 7},
                      {"▁hi", 8},
                      {"t", 9},
                      {"he", 10},
                      {"▁the", 11},
                      {"e", 12},
                      {"▁t", 13}}},
                    {"merges", {"▁ h", "▁h i", "▁ t", "h e", "▁t he"}}}}};
  auto data = TokenizerDataFromHfJson(j.dump(), R"({"bos_token": "<s>", "eos_token": "</s>"})");
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->kind, TokenizerKind::kSpm);
  EXPECT_TRUE(data->add_space_prefix);
  EXPECT_TRUE(data->add_bos);  // SentencePiece's default when nothing says otherwise
  EXPECT_TRUE(data->merges.empty());
  EXPECT_EQ(data->types[0], TokenType::kUnknown);
  EXPECT_EQ(data->types[1], TokenType::kControl);
  EXPECT_EQ(data->types[3], TokenType::kByte);
  EXPECT_FLOAT_EQ(data->scores[7], 0.0f);    // "▁h": rank 0
  EXPECT_FLOAT_EQ(data->scores[11], -4.0f);  // "▁the": rank 4
  auto tok = Tokenizer::Create(*data);
  ASSERT_TRUE(tok.ok()) << tok.status();
  // "▁hi▁the\n": ▁h, ▁hi, ▁t, he, ▁the; "\n" by byte fallback; "x" has no byte token: unk.
  EXPECT_THAT((*tok)->Encode("hi the\n", EncodeOptions{}), ElementsAre(1, 8, 11, 3));
  EXPECT_THAT((*tok)->Encode("hix", Bare()), ElementsAre(8, 0));
  EXPECT_EQ((*tok)->Decode((*tok)->Encode("hi the\n", EncodeOptions{})), "hi the\n");
}

TEST(HfJsonTest, ErrorsNameWhatWasFound) {
  ExpectInvalid(TokenizerDataFromHfJson("{not json", "").status(), "not a JSON object");
  ExpectInvalid(
      TokenizerDataFromHfJson(R"({"model": {"type": "Unigram", "vocab": []}})", "").status(),
      "model.type \"Unigram\" is not supported");
  ExpectInvalid(
      TokenizerDataFromHfJson(
          R"({"pre_tokenizer": {"type": "Whitespace"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})",
          "")
          .status(),
      "Whitespace");
  const std::string gap =
      R"({"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0, "b": 2}, "merges": []}})";
  ExpectInvalid(TokenizerDataFromHfJson(gap, "").status(), "not dense");
  const std::string hole =
      R"({"pre_tokenizer": {"type": "ByteLevel"}, "added_tokens": [{"id": 2, "content": "b"}],
          "model": {"type": "BPE", "vocab": {"a": 0, "b": 2}, "merges": []}})";
  ExpectInvalid(TokenizerDataFromHfJson(hole, "").status(), "no token has id 1");
  const std::string ok =
      R"({"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": [42]}})";
  ExpectInvalid(TokenizerDataFromHfJson(ok, "").status(), "model.merges entry 42");
  const std::string fine =
      R"({"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})";
  ExpectInvalid(TokenizerDataFromHfJson(fine, R"({"bos_token": "<s>"})").status(),
                "bos_token \"<s>\" is not in the vocabulary");
  ExpectInvalid(TokenizerDataFromHfJson(fine, "[1, 2]").status(), "tokenizer_config.json");
  // Wrong JSON types inside are errors, not exceptions.
  ExpectInvalid(
      TokenizerDataFromHfJson(
          R"({"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": "x"}}})",
          "")
          .status(),
      "is not an id");
}

TEST(HfJsonTest, MutatedFilesAreErrorsNotCrashes) {
  const std::string base = ReadFile(testing::TestDataPath("tiny_bpe_tokenizer.json"));
  ASSERT_FALSE(base.empty());
  std::mt19937 rng(31337);
  int loaded = 0;
  for (int i = 0; i < 400; ++i) {
    std::string s = base;
    const int edits = 1 + i % 4;
    for (int e = 0; e < edits; ++e) {
      const size_t pos = std::uniform_int_distribution<size_t>(0, s.size() - 1)(rng);
      switch (std::uniform_int_distribution<int>(0, 2)(rng)) {
        case 0:
          s[pos] = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));
          break;
        case 1:
          s.erase(pos, std::uniform_int_distribution<size_t>(1, 20)(rng));
          break;
        default:
          s.insert(pos, std::string(1, "0123456789\"[:,{}]"[i % 17]));
      }
    }
    auto data = TokenizerDataFromHfJson(s, "");
    if (!data.ok()) {
      EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
      continue;
    }
    auto tok = Tokenizer::Create(std::move(*data));
    if (!tok.ok()) continue;
    ++loaded;
    (void)(*tok)->Decode((*tok)->Encode("hello world 123 \xFF", EncodeOptions{}));
  }
  EXPECT_GT(loaded, 0);
}

// ---- GGUF ----

GgufBuilder SpmBuilder() {
  GgufBuilder b;
  b.SetString("tokenizer.ggml.model", "llama");
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<int32_t> types = {2, 3, 3};
  for (int i = 0; i < 256; ++i) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", i);
    tokens.push_back(buf);
    types.push_back(6);
  }
  tokens.push_back("▁a");
  types.push_back(1);
  b.SetStringArray("tokenizer.ggml.tokens", tokens);
  b.SetF32Array("tokenizer.ggml.scores", std::vector<float>(tokens.size(), 0.0f));
  b.SetI32Array("tokenizer.ggml.token_type", types);
  b.SetU32("tokenizer.ggml.unknown_token_id", 0);
  b.SetU32("tokenizer.ggml.bos_token_id", 1);
  b.SetU32("tokenizer.ggml.eos_token_id", 2);
  b.SetU32("tokenizer.ggml.padding_token_id", 4294967295u);
  return b;
}

absl::StatusOr<TokenizerData> Load(const GgufBuilder& b) {
  const std::vector<uint8_t> bytes = b.Serialize();
  auto file = GgufFile::FromBytes(bytes);
  if (!file.ok()) return file.status();
  return TokenizerDataFromGguf(**file);
}

TEST(GgufTokenizerTest, SpmDefaultsWhenKeysAreAbsent) {
  auto d = Load(SpmBuilder());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->kind, TokenizerKind::kSpm);
  EXPECT_TRUE(d->add_bos);
  EXPECT_TRUE(d->add_space_prefix);
  EXPECT_FALSE(d->add_eos);
  EXPECT_EQ(d->pad, kNoToken);
  EXPECT_THAT(d->eog, ElementsAre(2));
  auto tok = Tokenizer::Create(*d);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT((*tok)->Encode("a", EncodeOptions{}), ElementsAre(1, 259));

  GgufBuilder b = SpmBuilder();
  b.SetBool("tokenizer.ggml.add_bos_token", false);
  b.SetBool("tokenizer.ggml.add_space_prefix", false);
  b.SetString("tokenizer.chat_template", "{{ x }}");
  auto e = Load(b);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_FALSE(e->add_bos);
  EXPECT_FALSE(e->add_space_prefix);
  EXPECT_EQ(e->chat_template, "{{ x }}");
}

TEST(GgufTokenizerTest, BpeWithPreAndEndOfTurnTokens) {
  GgufBuilder b;
  b.SetString("tokenizer.ggml.model", "gpt2");
  b.SetString("tokenizer.ggml.pre", "llama-bpe");
  b.SetStringArray("tokenizer.ggml.tokens",
                   {"a", "b", "ab", "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"});
  b.SetI32Array("tokenizer.ggml.token_type", {1, 1, 1, 3, 3, 3});
  b.SetStringArray("tokenizer.ggml.merges", {"a b"});
  b.SetU32("tokenizer.ggml.bos_token_id", 3);
  b.SetU32("tokenizer.ggml.eos_token_id", 5);
  b.SetBool("tokenizer.ggml.add_bos_token", true);
  auto d = Load(b);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->kind, TokenizerKind::kBpe);
  EXPECT_TRUE(d->ignore_merges);
  EXPECT_FALSE(d->add_space_prefix);
  EXPECT_EQ(d->eot, 4);
  EXPECT_THAT(d->eog, ElementsAre(4, 5));
  auto tok = Tokenizer::Create(*d);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT((*tok)->Encode("ab", EncodeOptions{}), ElementsAre(3, 2));
}

TEST(GgufTokenizerTest, ErrorsNameTheKey) {
  GgufBuilder b = SpmBuilder();
  b.SetString("tokenizer.ggml.model", "bert");
  ExpectInvalid(Load(b).status(), "tokenizer.ggml.model: tokenizer model \"bert\"");

  b = SpmBuilder();
  b.SetF32Array("tokenizer.ggml.scores", {1.0f, 2.0f});
  ExpectInvalid(Load(b).status(), "tokenizer.ggml.scores: 2 scores for 260 tokens");

  b = SpmBuilder();
  b.SetI32Array("tokenizer.ggml.token_type", std::vector<int32_t>(260, 9));
  ExpectInvalid(Load(b).status(), "tokenizer.ggml.token_type: element 0");

  b = SpmBuilder();
  b.SetU32("tokenizer.ggml.eos_token_id", 260);
  ExpectInvalid(Load(b).status(), "tokenizer.ggml.eos_token_id: token id 260 is out of range");

  b = SpmBuilder();
  b.SetString("tokenizer.ggml.bos_token_id", "one");
  ExpectInvalid(Load(b).status(), "tokenizer.ggml.bos_token_id: expected an integer");

  b = SpmBuilder();
  b.SetString("tokenizer.ggml.tokens", "not an array");
  ExpectInvalid(Load(b).status(), "tokenizer.ggml.tokens: expected an array");

  b = SpmBuilder();
  b.SetI32Array("tokenizer.ggml.tokens", {1, 2, 3});
  ExpectInvalid(Load(b).status(), "tokenizer.ggml.tokens: element 0 is not a string");

  GgufBuilder bpe;
  bpe.SetString("tokenizer.ggml.model", "gpt2");
  bpe.SetString("tokenizer.ggml.pre", "chatglm-bpe");
  bpe.SetStringArray("tokenizer.ggml.tokens", {"a"});
  bpe.SetStringArray("tokenizer.ggml.merges", {});
  ExpectInvalid(Load(bpe).status(), "tokenizer.ggml.pre: unsupported BPE pre-tokenizer");
  bpe.SetString("tokenizer.ggml.pre", "qwen2");
  EXPECT_TRUE(Load(bpe).ok());
  GgufBuilder no_merges = bpe;
  no_merges = GgufBuilder();
  no_merges.SetString("tokenizer.ggml.model", "gpt2");
  no_merges.SetStringArray("tokenizer.ggml.tokens", {"a"});
  ExpectInvalid(Load(no_merges).status(), "tokenizer.ggml.merges: missing");

  GgufBuilder empty;
  ExpectInvalid(Load(empty).status(), "tokenizer.ggml.model: missing");
}

}  // namespace
}  // namespace mnemo::engine
