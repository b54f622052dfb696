// The BPE pre-tokenizers (hand-checked splits, cross-checked once against Hugging Face
// `tokenizers`) and the UTF-8 helpers under them.
#include "engine/model/pretokenize.h"

#include <string>
#include <string_view>
#include <vector>

#include "engine/model/unicode.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mnemo::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Split(std::string_view name, std::string_view text) {
  auto pre = PreTokenizer::Create(name);
  EXPECT_TRUE(pre.ok()) << pre.status();
  if (!pre.ok()) return {};
  std::vector<std::string_view> views;
  (*pre)->Split(text, &views);
  return {views.begin(), views.end()};
}

TEST(PreTokenizerTest, Gpt2KeepsDigitRunsAndGivesSpacesToTheNextWord) {
  EXPECT_THAT(Split("gpt2", "Hello world's 123  test\n"),
              ElementsAre("Hello", " world", "'s", " 123", " ", " test", "\n"));
  // "default" is GPT-2's regex too.
  EXPECT_EQ(Split("default", "a  b"), Split("gpt2", "a  b"));
  // Contractions are case-sensitive in GPT-2's regex.
  EXPECT_THAT(Split("gpt2", "I'LL"), ElementsAre("I", "'", "LL"));
}

TEST(PreTokenizerTest, Llama3SplitsNumbersIntoGroupsOfUpToThreeDigits) {
  EXPECT_THAT(
      Split("llama3", "12345 apples\n\nI'LL do it!!\n  ok"),
      ElementsAre("123", "45", " apples", "\n\n", "I", "'LL", " do", " it", "!!\n", " ", " ok"));
  EXPECT_EQ(Split("llama-bpe", "1234567"), (std::vector<std::string>{"123", "456", "7"}));
}

TEST(PreTokenizerTest, Qwen2SplitsNumbersIntoSingleDigits) {
  EXPECT_THAT(Split("qwen2", "12345 apples\n\nI'LL"),
              ElementsAre("1", "2", "3", "4", "5", " apples", "\n\n", "I", "'LL"));
}

TEST(PreTokenizerTest, SmollmIsolatesEveryDigitBeforeGpt2Splitting) {
  EXPECT_THAT(Split("smollm", "abc123 4.5 x"),
              ElementsAre("abc", "1", "2", "3", " ", "4", ".", "5", " x"));
  // \p{N} covers other numerals too (Arabic-Indic digits, superscripts).
  EXPECT_THAT(Split("smollm", "x\u0661\u0662\u00b2"),
              ElementsAre("x", "\u0661", "\u0662", "\u00b2"));
}

TEST(PreTokenizerTest, UnicodeWhitespaceIncludingNextLine) {
  // White_Space as in the reference tokenizers: U+0085 is in it, U+180E (which PCRE2's \s
  // matches) is not, so a space joins it like a symbol.
  EXPECT_THAT(Split("gpt2", "a\u0085\u0085b"), ElementsAre("a", "\u0085", "\u0085", "b"));
  EXPECT_THAT(Split("gpt2", "a\u3000b"), ElementsAre("a", "\u3000", "b"));
  EXPECT_THAT(Split("gpt2", "x \u3000!"), ElementsAre("x", " ", "\u3000", "!"));
  EXPECT_THAT(Split("gpt2", "x \u180e!"), ElementsAre("x", " \u180e!"));
}

TEST(PreTokenizerTest, PiecesAlwaysCoverTheText) {
  const std::string text =
      "Mixed: 你好 мир 🚀🇺🇸 a\u0301 ٣٫١٤ \t\r\n  " + std::string(5000, ' ') + "end!!";
  for (std::string_view name : {"gpt2", "llama3", "qwen2", "smollm"}) {
    std::string joined;
    for (const auto& p : Split(name, text)) {
      EXPECT_FALSE(p.empty()) << name;
      joined += p;
    }
    EXPECT_EQ(joined, text) << name;
  }
}

TEST(PreTokenizerTest, UnknownNameIsInvalidArgumentListingSupportedNames) {
  auto pre = PreTokenizer::Create("deepseek-llm");
  ASSERT_FALSE(pre.ok());
  EXPECT_EQ(pre.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(pre.status().message()), HasSubstr("deepseek-llm"));
  EXPECT_THAT(std::string(pre.status().message()), HasSubstr("llama3"));
  EXPECT_THAT(std::string(pre.status().message()), HasSubstr("smollm"));
  EXPECT_EQ(PreTokenizer::Family("llama-bpe"), "llama3");
  EXPECT_EQ(PreTokenizer::Family("nope"), "");
}

TEST(UnicodeTest, DecodeUtf8ClassifiesSequences) {
  using unicode::DecodeUtf8;
  using unicode::Utf8Status;
  const auto c = DecodeUtf8("\xF0\x9F\xA6\x99", 0);
  EXPECT_EQ(c.status, Utf8Status::kValid);
  EXPECT_EQ(c.code_point, U'\U0001F999');
  EXPECT_EQ(c.length, 4u);
  EXPECT_EQ(DecodeUtf8("\xF0\x9F\xA6", 0).status, Utf8Status::kIncomplete);
  EXPECT_EQ(DecodeUtf8("\x80", 0).status, Utf8Status::kInvalid);
  EXPECT_EQ(DecodeUtf8("\xC0\xAF", 0).status, Utf8Status::kInvalid);      // overlong
  EXPECT_EQ(DecodeUtf8("\xED\xA0\x80", 0).status, Utf8Status::kInvalid);  // surrogate
  EXPECT_EQ(DecodeUtf8("\xF4\x90\x80\x80", 0).status, Utf8Status::kInvalid);
  const auto sub = DecodeUtf8("\xE4\xBDx", 0);  // maximal subpart: 2 bytes
  EXPECT_EQ(sub.status, Utf8Status::kInvalid);
  EXPECT_EQ(sub.length, 2u);
}

TEST(UnicodeTest, SplitUtf8RunsCoversEveryByte) {
  const std::string text =
      "ab\xFF\xE4\xBD"
      "c\xC3\xA9";
  const auto spans = unicode::SplitUtf8Runs(text);
  ASSERT_EQ(spans.size(), 5u);
  EXPECT_TRUE(spans[0].valid);
  EXPECT_EQ(text.substr(spans[0].begin, spans[0].length), "ab");
  EXPECT_FALSE(spans[1].valid);
  EXPECT_FALSE(spans[2].valid);
  EXPECT_FALSE(spans[3].valid);
  EXPECT_EQ(spans[3].begin, 4u);
  EXPECT_TRUE(spans[4].valid);
  EXPECT_EQ(text.substr(spans[4].begin), "c\xC3\xA9");
  EXPECT_EQ(unicode::SanitizeUtf8(text), "ab\uFFFD\uFFFDc\u00e9");
  EXPECT_EQ(unicode::SanitizeUtf8("end\xF0\x9F"), "end\uFFFD");
}

TEST(UnicodeTest, ByteUnicodeMapIsGpt2sAlphabet) {
  const auto& m = unicode::ByteUnicodeMap::Get();
  EXPECT_EQ(m.Encode(' '), "\u0120");   // Ġ
  EXPECT_EQ(m.Encode('\n'), "\u010A");  // Ċ
  EXPECT_EQ(m.Encode('a'), "a");
  EXPECT_EQ(m.Encode(0xAD), "\u0143");  // the soft hyphen is not printable
  for (int b = 0; b < 256; ++b) {
    const auto c = unicode::DecodeUtf8(m.Encode(static_cast<uint8_t>(b)), 0);
    EXPECT_EQ(m.DecodeCodePoint(c.code_point), b);
  }
  EXPECT_EQ(m.DecodeCodePoint(U'\u4F60'), -1);
}

}  // namespace
}  // namespace mnemo::engine
