// Tokenizer behaviour on hand-made vocabularies (always run) and on the real test models
// (skipped when their files are missing): round trips on random text, special tokens,
// streaming detokenization, and the errors of malformed TokenizerData.
#include "engine/model/tokenizer.h"

#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/model/gguf.h"
#include "engine/model/unicode.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// SPM: <unk> <s> </s>, the 256 byte tokens (ids 3..258), then pieces with scores.
TokenizerData SpmData() {
  TokenizerData d;
  d.kind = TokenizerKind::kSpm;
  d.model_name = "llama";
  const auto add = [&](std::string text, float score, TokenType type) {
    d.tokens.push_back(std::move(text));
    d.scores.push_back(score);
    d.types.push_back(type);
  };
  add("<unk>", 0, TokenType::kUnknown);
  add("<s>", 0, TokenType::kControl);
  add("</s>", 0, TokenType::kControl);
  for (int b = 0; b < 256; ++b) add(absl::StrFormat("<0x%02X>", b), 0, TokenType::kByte);
  add("▁", -1, TokenType::kNormal);             // 259
  add("a", -1, TokenType::kNormal);             // 260
  add("b", -1, TokenType::kNormal);             // 261
  add("ab", -2, TokenType::kNormal);            // 262
  add("▁a", -3, TokenType::kNormal);            // 263
  add("▁ab", -4, TokenType::kNormal);           // 264
  add("<|im_start|>", 0, TokenType::kControl);  // 265
  add("<tool>", 0, TokenType::kUserDefined);    // 266
  d.unk = 0;
  d.bos = 1;
  d.eos = 2;
  d.add_bos = true;
  d.add_space_prefix = true;
  return d;
}

// BPE: the 256 byte letters (id = byte), merges over "hello", and two control tokens.
TokenizerData BpeData() {
  TokenizerData d;
  d.kind = TokenizerKind::kBpe;
  d.model_name = "gpt2";
  d.pre = "gpt2";
  const auto& letters = unicode::ByteUnicodeMap::Get();
  for (int b = 0; b < 256; ++b) d.tokens.push_back(letters.Encode(static_cast<uint8_t>(b)));
  for (const char* t :
       {"he", "ll", "hell", "hello", "Ġh", "Ġhello", "<|im_start|>", "<|im_end|>"}) {
    d.tokens.push_back(t);
  }
  d.types.assign(d.tokens.size(), TokenType::kNormal);
  d.types[262] = d.types[263] = TokenType::kControl;
  d.merges = {"h e", "l l", "he ll", "hell o", "Ġ h", "Ġ hello"};
  d.eos = 263;
  return d;
}

std::unique_ptr<Tokenizer> MustCreate(TokenizerData d) {
  auto t = Tokenizer::Create(std::move(d));
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

EncodeOptions Bare() {
  EncodeOptions o;
  o.add_bos = false;
  o.add_eos = false;
  return o;
}

TEST(SpmTokenizerTest, MergesByScoreWithDummyPrefixAndByteFallback) {
  auto tok = MustCreate(SpmData());
  ASSERT_NE(tok, nullptr);
  // "▁ab▁a": ▁ab (a merge of ▁a + b is not a piece; ab then ▁ + ab) and ▁a.
  EXPECT_THAT(tok->Encode("ab a", Bare()), ElementsAre(264, 263));
  EXPECT_THAT(tok->Encode("ab a", EncodeOptions{}), ElementsAre(1, 264, 263));
  // "x" is no piece: byte fallback <0x78> = 3 + 0x78.
  EXPECT_THAT(tok->Encode("x", Bare()), ElementsAre(259, 3 + 0x78));
  // Invalid UTF-8 bytes are byte tokens too; nothing is dropped.
  EXPECT_THAT(tok->Encode("a\xFF", Bare()), ElementsAre(263, 3 + 0xFF));
  EXPECT_TRUE(tok->Encode("", Bare()).empty());
  EXPECT_THAT(tok->Encode("", EncodeOptions{}), ElementsAre(1));
}

TEST(SpmTokenizerTest, DecodeDropsOnlyThePrefixSpace) {
  auto tok = MustCreate(SpmData());
  ASSERT_NE(tok, nullptr);
  for (const std::string s : {"ab a", " ab", "  a b ", "x\xFFy", "\n", ""}) {
    EXPECT_EQ(tok->Decode(tok->Encode(s, EncodeOptions{})), s);
    EXPECT_EQ(tok->Decode(tok->Encode(s, Bare())), s);
  }
  DecodeOptions keep;
  keep.strip_leading_space = false;
  EXPECT_EQ(tok->Decode(std::vector<TokenId>{263, 261}, keep), " ab");
  EXPECT_EQ(tok->Decode(std::vector<TokenId>{263, 261}), "ab");
  EXPECT_EQ(tok->Decode(std::vector<TokenId>{1, 263}, /*render_special=*/true), "<s>a");
  EXPECT_EQ(tok->Decode(std::vector<TokenId>{0, 9999, -5}), "");
}

TEST(SpmTokenizerTest, ParseSpecialMatchesControlAndUserDefinedTokens) {
  auto tok = MustCreate(SpmData());
  ASSERT_NE(tok, nullptr);
  EncodeOptions special = Bare();
  special.parse_special = true;
  // Each text fragment after a special token gets its own dummy prefix (llama.cpp).
  EXPECT_THAT(tok->Encode("<|im_start|>ab<tool>", special), ElementsAre(265, 264, 266));
  const auto plain = tok->Encode("<|im_start|>ab<tool>", Bare());
  EXPECT_THAT(plain, Not(Contains(265)));
  EXPECT_THAT(plain, Not(Contains(266)));
  EXPECT_EQ(tok->Decode(plain), "<|im_start|>ab<tool>");
}

TEST(SpmTokenizerTest, WithoutByteTokensUnknownCharactersBecomeOneUnk) {
  TokenizerData d = SpmData();
  for (int b = 0; b < 256; ++b) d.types[3 + b] = TokenType::kUnused;
  auto tok = MustCreate(d);
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("a\u4F60b", Bare()), ElementsAre(263, 0, 261));
}

TEST(BpeTokenizerTest, MergesByRankAndKeepsInvalidBytes) {
  auto tok = MustCreate(BpeData());
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(tok->Encode("hello hello", Bare()), ElementsAre(259, 261));
  EXPECT_THAT(tok->Encode("hell", Bare()), ElementsAre(258));
  // An invalid byte in the middle of a word splits it; the byte is its own token.
  EXPECT_THAT(tok->Encode("hel\x80lo", Bare()), ElementsAre(256, 'l', 0x80, 'l', 'o'));
  EXPECT_EQ(tok->Decode(tok->Encode("hel\x80lo", Bare())), "hel\x80lo");
  EXPECT_THAT(tok->Encode("", Bare()), ElementsAre());
  EXPECT_FALSE(tok->data().add_bos);
}

TEST(BpeTokenizerTest, ParseSpecialOnAndOff) {
  auto tok = MustCreate(BpeData());
  ASSERT_NE(tok, nullptr);
  EncodeOptions special = Bare();
  special.parse_special = true;
  EXPECT_THAT(tok->Encode("<|im_start|>hello<|im_end|>", special), ElementsAre(262, 259, 263));
  const auto plain = tok->Encode("<|im_start|>hello<|im_end|>", Bare());
  EXPECT_THAT(plain, Not(Contains(262)));
  EXPECT_EQ(tok->Decode(plain), "<|im_start|>hello<|im_end|>");
  EXPECT_EQ(tok->Decode(std::vector<TokenId>{262, 259, 263}), "hello");
  EXPECT_EQ(tok->Decode(std::vector<TokenId>{262, 259, 263}, true), "<|im_start|>hello<|im_end|>");
  // The longest special text wins where two start at the same place.
  TokenizerData d = BpeData();
  d.tokens.push_back("<|im_start|>h");
  d.types.push_back(TokenType::kUserDefined);
  auto longer = MustCreate(d);
  ASSERT_NE(longer, nullptr);
  EXPECT_THAT(longer->Encode("<|im_start|>hello", special), ElementsAre(264, 'e', 257, 'o'));
  EXPECT_TRUE(longer->IsEog(263));
  EXPECT_TRUE(longer->IsControl(262));
  EXPECT_FALSE(longer->IsControl(264));
}

TEST(BpeTokenizerTest, IgnoreMergesEmitsWholeWordTokens) {
  TokenizerData d = BpeData();
  d.tokens.push_back("helo");  // reachable only as a whole word: no merge makes it
  d.types.push_back(TokenType::kNormal);
  auto merged = MustCreate(d);
  d.ignore_merges = true;
  auto whole = MustCreate(d);
  ASSERT_NE(merged, nullptr);
  ASSERT_NE(whole, nullptr);
  EXPECT_THAT(merged->Encode("helo", Bare()), ElementsAre(256, 'l', 'o'));
  EXPECT_THAT(whole->Encode("helo", Bare()), ElementsAre(264));
}

TEST(TokenizerCreateTest, RejectsMalformedData) {
  const auto expect_error = [](TokenizerData d, const std::string& needle) {
    auto t = Tokenizer::Create(std::move(d));
    ASSERT_FALSE(t.ok()) << "expected an error mentioning " << needle;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(needle));
  };
  TokenizerData d = BpeData();
  d.merges.push_back("h zz");
  expect_error(d, "unknown piece \"zz\"");
  d = BpeData();
  d.merges.push_back("hello");
  expect_error(d, "not two pieces");
  d = BpeData();
  d.merges.push_back("o h");
  expect_error(d, "\"oh\", which is not in the vocabulary");
  d = BpeData();
  d.types.pop_back();
  expect_error(d, "token types for");
  d = BpeData();
  d.pre = "tekken";
  expect_error(d, "supported: default, gpt2");
  d = BpeData();
  d.eos = 100000;
  expect_error(d, "EOS id 100000 is out of range");
  d = BpeData();
  d.add_bos = true;
  expect_error(d, "no BOS");
  d = SpmData();
  d.scores.pop_back();
  expect_error(d, "scores for");
  d = SpmData();
  d.unk = kNoToken;
  d.types[3 + 0x41] = TokenType::kNormal;
  expect_error(d, "<0x41>");
  d = SpmData();
  d.tokens[3] = "<0xZZ>";
  expect_error(d, "not of the form <0xNN>");
  d = SpmData();
  d.tokens.clear();
  d.types.clear();
  d.scores.clear();
  expect_error(d, "empty vocabulary");
}

// ---- the real models ----

std::unique_ptr<Tokenizer> LoadModel(const std::string& path) {
  auto file = GgufFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return nullptr;
  auto data = TokenizerDataFromGguf(**file);
  EXPECT_TRUE(data.ok()) << data.status();
  if (!data.ok()) return nullptr;
  return MustCreate(std::move(*data));
}

// Random text from a mix of scripts, whitespace, digits, punctuation, emoji (with ZWJ and
// flags) and combining marks. C0 controls other than \t \n \r are left out (SmolLM2's
// vocabulary cannot spell some of them), and so is U+2581 (SPM reads it as a space).
std::string RandomText(std::mt19937& rng, int chars) {
  static const std::vector<std::pair<char32_t, char32_t>> kRanges = {
      {'a', 'z'},         {'A', 'Z'},         {'0', '9'},         {' ', '/'},
      {':', '@'},         {0xA0, 0xFF},       {0x100, 0x17F},     {0x300, 0x36F},
      {0x391, 0x3C9},     {0x410, 0x44F},     {0x5D0, 0x5EA},     {0x627, 0x64A},
      {0x660, 0x669},     {0x905, 0x939},     {0xE01, 0xE30},     {0x2000, 0x206F},
      {0x3041, 0x3096},   {0x30A1, 0x30FA},   {0x4E00, 0x9FFF},   {0xAC00, 0xD7A3},
      {0xFF01, 0xFF5E},   {0x1F300, 0x1F64F}, {0x1F680, 0x1F6FF}, {0x1F1E6, 0x1F1FF},
      {0x1F900, 0x1F9FF}, {0x10000, 0x1007F},
  };
  static const std::vector<std::string> kSpecials = {" ",      "  ", "\n",  "\n\n", "\t",  "\r\n",
                                                     "\u200d", "'s", "'LL", "123",  "3.14"};
  std::string s;
  for (int i = 0; i < chars; ++i) {
    const int pick = std::uniform_int_distribution<int>(0, 9)(rng);
    if (pick < 2) {
      s += kSpecials[std::uniform_int_distribution<size_t>(0, kSpecials.size() - 1)(rng)];
      continue;
    }
    const auto& [lo, hi] =
        kRanges[std::uniform_int_distribution<size_t>(0, kRanges.size() - 1)(rng)];
    const auto cp = static_cast<char32_t>(std::uniform_int_distribution<uint32_t>(lo, hi)(rng));
    if (cp == 0x2581) continue;
    unicode::AppendUtf8(cp, &s);
  }
  return s;
}

class RealModelTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string Path() const {
    return GetParam() == "stories" ? testing::StoriesGgufPath() : testing::SmolLm2GgufPath();
  }
};

TEST_P(RealModelTest, RandomUnicodeRoundTrips) {
  MNEMO_REQUIRE_FILE(Path());
  auto tok = LoadModel(Path());
  ASSERT_NE(tok, nullptr);
  std::mt19937 rng(20240517);
  for (int i = 0; i < 300; ++i) {
    const std::string s = RandomText(rng, 1 + i % 40);
    const auto ids = tok->Encode(s, EncodeOptions{});
    ASSERT_EQ(tok->Decode(ids), s) << "text #" << i;
    ASSERT_EQ(tok->Decode(tok->Encode(s, Bare())), s) << "text #" << i;
  }
}

TEST_P(RealModelTest, RandomBytesRoundTrip) {
  MNEMO_REQUIRE_FILE(Path());
  auto tok = LoadModel(Path());
  ASSERT_NE(tok, nullptr);
  // Bytes whose letter is missing from the vocabulary cannot round-trip (they are unk).
  std::vector<char> alphabet;
  for (int b = 0; b < 256; ++b) {
    const std::string one(1, static_cast<char>(b));
    const auto ids = tok->Encode(one, Bare());
    if (ids.empty() || ids.back() != tok->data().unk) alphabet.push_back(static_cast<char>(b));
  }
  ASSERT_GE(alphabet.size(), 200u);
  std::mt19937 rng(7);
  for (int i = 0; i < 300; ++i) {
    std::string s;
    const int n = 1 + i % 30;
    for (int k = 0; k < n; ++k) {
      s += alphabet[std::uniform_int_distribution<size_t>(0, alphabet.size() - 1)(rng)];
    }
    if (tok->data().kind == TokenizerKind::kSpm && s.find("\xE2\x96\x81") != std::string::npos) {
      continue;
    }
    ASSERT_EQ(tok->Decode(tok->Encode(s, EncodeOptions{})), s) << "bytes #" << i;
  }
}

TEST_P(RealModelTest, StreamingDetokenizerEmitsOnlyCompleteCharacters) {
  MNEMO_REQUIRE_FILE(Path());
  auto tok = LoadModel(Path());
  ASSERT_NE(tok, nullptr);
  for (const std::string text :
       {"Hello 🦙 world 👨\u200d👩\u200d👧 🇺🇸 你好世界 こんにちは",
        "漢字🚀🚀🚀 mixed ascii", "Once upon a time"}) {
    const auto ids = tok->Encode(text, EncodeOptions{});
    StreamingDetokenizer stream(*tok);
    std::string streamed;
    for (const TokenId id : ids) {
      const std::string chunk = stream.Push(id);
      EXPECT_TRUE(unicode::IsValidUtf8(chunk)) << "partial UTF-8 after id " << id;
      streamed += chunk;
    }
    streamed += stream.Flush();
    EXPECT_EQ(streamed, tok->Decode(ids));
    EXPECT_EQ(streamed, text);
  }
  // A continuation keeps its leading space when asked to.
  DecodeOptions keep;
  keep.strip_leading_space = false;
  StreamingDetokenizer cont(*tok, keep);
  std::string out;
  for (const TokenId id : tok->Encode(" world", Bare())) out += cont.Push(id);
  out += cont.Flush();
  EXPECT_EQ(out, tok->Decode(tok->Encode(" world", Bare()), keep));
}

TEST_P(RealModelTest, StreamingDetokenizerReplacesBytesThatCannotComplete) {
  MNEMO_REQUIRE_FILE(Path());
  auto tok = LoadModel(Path());
  ASSERT_NE(tok, nullptr);
  // "\xE4\xBD" (a truncated 3-byte sequence) then "a": one U+FFFD, then "a".
  const auto ids = tok->Encode(
      "x\xE4\xBD"
      "a\xF0\x9F",
      Bare());
  StreamingDetokenizer stream(*tok);
  std::string out;
  for (const TokenId id : ids) {
    const std::string chunk = stream.Push(id);
    EXPECT_TRUE(unicode::IsValidUtf8(chunk));
    out += chunk;
  }
  const std::string tail = stream.Flush();
  EXPECT_EQ(out + tail,
            "x\uFFFD"
            "a\uFFFD");
  EXPECT_EQ(tail, "\uFFFD");
}

TEST_P(RealModelTest, EncodesTenKilobytesQuickly) {
  MNEMO_REQUIRE_FILE(Path());
  auto tok = LoadModel(Path());
  ASSERT_NE(tok, nullptr);
  std::mt19937 rng(99);
  std::string text;
  while (text.size() < 10 * 1024) text += RandomText(rng, 50) + " the story of Lily. ";
  const auto start = std::chrono::steady_clock::now();
  const auto ids = tok->Encode(text, EncodeOptions{});
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("encoded %zu bytes into %zu tokens in %.2f ms\n", text.size(), ids.size(), ms);
  EXPECT_EQ(tok->Decode(ids), text);
  // A generous bound that only a quadratic algorithm would miss (even under sanitizers).
  EXPECT_LT(ms, 2000.0);
}

INSTANTIATE_TEST_SUITE_P(Models, RealModelTest, ::testing::Values("stories", "smollm2"),
                         [](const auto& p) { return p.param; });

TEST(SmolLm2Test, ParseSpecialAndEndOfGeneration) {
  MNEMO_REQUIRE_FILE(testing::SmolLm2GgufPath());
  auto tok = LoadModel(testing::SmolLm2GgufPath());
  ASSERT_NE(tok, nullptr);
  EncodeOptions special;
  special.parse_special = true;
  const auto ids = tok->Encode("<|im_start|>user\nHi<|im_end|>\n", special);
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids.front(), 1);      // <|im_start|>
  EXPECT_THAT(ids, Contains(2));  // <|im_end|>
  const auto plain = tok->Encode("<|im_start|>user\nHi<|im_end|>\n", EncodeOptions{});
  EXPECT_THAT(plain, Not(Contains(1)));
  EXPECT_THAT(plain, Not(Contains(2)));
  EXPECT_EQ(tok->Decode(ids), "user\nHi\n");
  EXPECT_EQ(tok->Decode(ids, /*render_special=*/true), "<|im_start|>user\nHi<|im_end|>\n");
  EXPECT_EQ(tok->data().eos, 2);
  EXPECT_EQ(tok->data().eot, 2);
  EXPECT_THAT(tok->data().eog, ElementsAre(0, 2));  // <|endoftext|>, <|im_end|>
  EXPECT_TRUE(tok->IsEog(2));
  EXPECT_FALSE(tok->IsEog(1));
  EXPECT_THAT(tok->data().chat_template, HasSubstr("<|im_start|>"));
}

TEST(Stories260KTest, MetadataDefaults) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  auto tok = LoadModel(testing::StoriesGgufPath());
  ASSERT_NE(tok, nullptr);
  const TokenizerData& d = tok->data();
  EXPECT_EQ(d.kind, TokenizerKind::kSpm);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_TRUE(d.add_bos);
  EXPECT_FALSE(d.add_eos);
  EXPECT_TRUE(d.add_space_prefix);
  EXPECT_EQ(d.bos, 1);
  EXPECT_EQ(d.eos, 2);
  EXPECT_EQ(d.unk, 0);
  EXPECT_EQ(d.pad, kNoToken);
  EXPECT_EQ(d.sep, kNoToken);
  EXPECT_THAT(d.eog, ElementsAre(2));
  EXPECT_EQ(tok->TokenBytes(3 + 0x0A), "\n");
  EXPECT_EQ(tok->TokenBytes(1), "");
  EXPECT_EQ(tok->TokenBytes(1, true), "<s>");
}

}  // namespace
}  // namespace mnemo::engine

namespace mnemo::engine {
namespace {

TEST(TokenizerEogTest, AGivenUnsortedEogListIsHonoured) {
  TokenizerData d = BpeData();
  const TokenId last = static_cast<TokenId>(d.tokens.size()) - 1;
  d.eog = {last, 0, last};  // unsorted, with a duplicate
  auto tok = MustCreate(std::move(d));
  EXPECT_TRUE(tok->IsEog(0));
  EXPECT_TRUE(tok->IsEog(last));
  EXPECT_FALSE(tok->IsEog(1));
  EXPECT_EQ(tok->data().eog, (std::vector<TokenId>{0, last}));
}

}  // namespace
}  // namespace mnemo::engine
