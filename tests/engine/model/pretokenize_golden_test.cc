// mnemo's pre-tokenizers against Hugging Face `tokenizers`' own pre-tokenizers, built as the
// published tokenizer.json files define each family; goldens written by
// tools/make_pretokenizer_goldens.py into tests/data/pretokenizer_goldens.json.
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/pretokenize.h"
#include "engine/model/unicode.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using nlohmann::json;

using testing::FromHex;

const json& Goldens() {
  static const json* goldens = [] {
    return new json(
        json::parse(testing::ReadFile(testing::TestDataPath("pretokenizer_goldens.json")), nullptr,
                    /*allow_exceptions=*/false));
  }();
  return *goldens;
}

const json* FindFamily(const std::string& family) {
  const json& g = Goldens();
  if (!g.is_object() || !g.contains("families")) return nullptr;
  for (const json& f : g["families"]) {
    if (f["family"] == family) return &f;
  }
  return nullptr;
}

// `s` quoted, with C0 and C1 controls escaped and other UTF-8 left readable.
std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    const auto b = static_cast<uint8_t>(s[i]);
    const auto next = i + 1 < s.size() ? static_cast<uint8_t>(s[i + 1]) : 0;
    if (s[i] == '\n') {
      out += "\\n";
    } else if (s[i] == '"' || s[i] == '\\') {
      out.push_back('\\');
      out.push_back(s[i]);
    } else if (b < 0x20 || b == 0x7F) {
      absl::StrAppendFormat(&out, "\\x%02x", b);
    } else if (b == 0xC2 && next >= 0x80 && next < 0xA0) {  // U+0080..U+009F
      absl::StrAppendFormat(&out, "\\u%04x", next);
      ++i;
    } else {
      out.push_back(s[i]);
    }
  }
  return out + "\"";
}

std::string QuoteAll(const std::vector<std::string>& pieces) {
  std::string out = "[";
  for (size_t i = 0; i < pieces.size(); ++i) {
    absl::StrAppend(&out, i == 0 ? "" : ", ", Quote(pieces[i]));
  }
  return out + "]";
}

class PreTokenizerGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PreTokenizerGoldenTest, SplitsMatchHuggingFaceTokenizers) {
  const json* family = FindFamily(GetParam());
  ASSERT_NE(family, nullptr) << "tests/data/pretokenizer_goldens.json lacks " << GetParam();
  auto pre = PreTokenizer::Create(GetParam());
  ASSERT_TRUE(pre.ok()) << pre.status();

  int checked = 0;
  int mismatched = 0;
  std::string first_mismatch;
  for (const json& c : (*family)["cases"]) {
    const std::string text = FromHex(c["text_hex"]);
    ASSERT_TRUE(unicode::IsValidUtf8(text)) << c["label"];
    std::vector<std::string> want;
    for (const json& p : c["pieces"]) want.push_back(FromHex(p.get<std::string>()));
    std::vector<std::string_view> views;
    (*pre)->Split(text, &views);
    const std::vector<std::string> got(views.begin(), views.end());
    ++checked;
    if (got == want) continue;
    if (++mismatched == 1) {
      first_mismatch =
          absl::StrCat("case \"", c["label"].get<std::string>(), "\"\n  text: ", Quote(text),
                       "\n  want: ", QuoteAll(want), "\n  got:  ", QuoteAll(got));
    }
  }
  EXPECT_EQ(mismatched, 0) << GetParam() << ": " << mismatched << " of " << checked
                           << " texts split differently from `tokenizers`; the first:\n"
                           << first_mismatch;
  EXPECT_GE(checked, 100);
}

INSTANTIATE_TEST_SUITE_P(Families, PreTokenizerGoldenTest,
                         ::testing::Values("gpt2", "llama3", "qwen2", "smollm"),
                         [](const auto& p) { return p.param; });

}  // namespace
}  // namespace mnemo::engine
