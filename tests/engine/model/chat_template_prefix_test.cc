// Prefix stability of each chat template family (DESIGN.md §2 step 3, docs/chat-templates.md):
// what a live session appends must make its history equal to what the template renders,
// except where the documentation says the family cannot hold that.
#include <string>
#include <vector>

#include "engine/model/chat_template.h"
#include "engine/model/internal/chat_template_internal.h"
#include "gtest/gtest.h"

namespace mnemo::engine {
namespace {

struct FamilyCase {
  ChatTemplateFamily family;
  bool with_system;  // false for the families that reject system messages
  // Render(1..k) is a byte prefix of Render(1..k+1) when message k ends an assistant turn.
  bool prefix_stable;
  // The session built with RenderAppend equals Render(all).
  bool session_equals_render;
};

constexpr FamilyCase kFamilies[] = {
    {ChatTemplateFamily::kChatMl, true, true, true},
    {ChatTemplateFamily::kLlama3, true, true, true},
    {ChatTemplateFamily::kLlama31, true, true, true},
    {ChatTemplateFamily::kLlama2, true, true, true},
    {ChatTemplateFamily::kMistral, false, true, true},
    {ChatTemplateFamily::kMistralSystemFirst, true, true, true},
    // The system prompt moves to the last user turn: not prefix-stable.
    {ChatTemplateFamily::kMistralV3, true, false, false},
    {ChatTemplateFamily::kMistralV3, false, true, true},
    {ChatTemplateFamily::kGemma, false, true, true},
    {ChatTemplateFamily::kGemma3, true, true, true},
    {ChatTemplateFamily::kZephyr, true, true, true},
    // The eos after the last turn (no generation prompt) moves: not prefix-stable; the
    // session never writes it, so its history still matches.
    {ChatTemplateFamily::kPhi3, true, false, true},
};

std::vector<ChatMessage> Chat(bool with_system) {
  std::vector<ChatMessage> m;
  if (with_system) m.push_back({"system", "You are a pirate."});
  m.push_back({"user", "Hello"});
  m.push_back({"assistant", "Ahoy, matey!"});
  m.push_back({"user", "Where is the gold? 🪙"});
  m.push_back({"assistant", "Buried on the island, ye landlubber."});
  m.push_back({"user", "Thanks"});
  return m;
}

std::span<const ChatMessage> Head(const std::vector<ChatMessage>& m, size_t n) {
  return std::span<const ChatMessage>(m).first(n);
}

ChatTemplate Make(ChatTemplateFamily family) {
  ChatTemplateVariant v;
  if (family == ChatTemplateFamily::kChatMl) v.default_system = "Default system.";
  return ChatTemplate::FromFamily(family, "<BOS>", "<EOS>", v);
}

std::string Name(const FamilyCase& c) {
  return std::string(ChatTemplateFamilyName(c.family)) + (c.with_system ? "+system" : "");
}

void PrintTo(const FamilyCase& c, std::ostream* os) { *os << Name(c); }

class ChatPrefixTest : public ::testing::TestWithParam<FamilyCase> {};

TEST_P(ChatPrefixTest, HistoryWithoutGenerationPromptIsAPrefix) {
  const FamilyCase& fc = GetParam();
  const ChatTemplate t = Make(fc.family);
  const std::vector<ChatMessage> m = Chat(fc.with_system);
  bool all_prefix = true;
  for (size_t k = 1; k < m.size(); ++k) {
    if (m[k - 1].role != "assistant") continue;  // turns 1..k end after an assistant turn
    const std::string shorter = *t.Render(Head(m, k), false);
    const std::string longer = *t.Render(Head(m, k + 1), false);
    all_prefix = all_prefix && longer.starts_with(shorter);
  }
  EXPECT_EQ(all_prefix, fc.prefix_stable) << Name(fc);
}

// Render(1..k, generation prompt) + assistant_content_prefix + reply + assistant_end is what
// the template writes for turns 1..k+1 up to the end of that reply: true for every family.
TEST_P(ChatPrefixTest, GenerationPromptPlusReplyMatchesTheTemplate) {
  const FamilyCase& fc = GetParam();
  const ChatTemplate t = Make(fc.family);
  const std::vector<ChatMessage> m = Chat(fc.with_system);
  int checked = 0;
  for (size_t k = 1; k < m.size(); ++k) {
    if (m[k].role != "assistant") continue;
    const std::string live = *t.Render(Head(m, k), true) + t.assistant_content_prefix() +
                             m[k].content + t.assistant_end();
    const std::string rendered = *t.Render(Head(m, k + 1), false);
    EXPECT_EQ(rendered.substr(0, live.size()), live) << Name(fc) << " reply " << k;
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

// A live session: turn 1 is Render(..., true); each reply is completed with assistant_end();
// each later turn appends RenderAppend(...).
TEST_P(ChatPrefixTest, LiveSessionAppendsOnlyTheNewTurn) {
  const FamilyCase& fc = GetParam();
  const ChatTemplate t = Make(fc.family);
  const std::vector<ChatMessage> m = Chat(fc.with_system);
  const size_t first_user = fc.with_system ? 2 : 1;
  std::string session = *t.Render(Head(m, first_user), true);
  for (size_t k = first_user; k < m.size(); k += 2) {
    session += t.assistant_content_prefix() + m[k].content + t.assistant_end();
    const absl::StatusOr<std::string> delta = t.RenderAppend(Head(m, k + 2), k + 1, true);
    ASSERT_TRUE(delta.ok()) << delta.status();
    // Only Llama 2 writes BOS again (at every user turn).
    if (fc.family != ChatTemplateFamily::kLlama2) {
      EXPECT_EQ(delta->find("<BOS>"), std::string::npos) << Name(fc);
    }
    session += *delta;
  }
  const std::string stateless = *t.Render(m, true);
  EXPECT_EQ(session == stateless, fc.session_equals_render) << Name(fc) << "\n" << session;
  if (fc.family == ChatTemplateFamily::kMistralV3 && fc.with_system) {
    // Documented: the system prompt stays in the first user turn instead of moving to the
    // last one.
    EXPECT_EQ(session,
              "<BOS>[INST] You are a pirate.\n\nHello[/INST] Ahoy, matey!<EOS>"
              "[INST] Where is the gold? 🪙[/INST] Buried on the island, ye landlubber.<EOS>"
              "[INST] Thanks[/INST]");
    EXPECT_EQ(stateless,
              "<BOS>[INST] Hello[/INST] Ahoy, matey!<EOS>"
              "[INST] Where is the gold? 🪙[/INST] Buried on the island, ye landlubber.<EOS>"
              "[INST] You are a pirate.\n\nThanks[/INST]");
  }
}

INSTANTIATE_TEST_SUITE_P(Families, ChatPrefixTest, ::testing::ValuesIn(kFamilies),
                         [](const ::testing::TestParamInfo<FamilyCase>& p) {
                           std::string n = Name(p.param);
                           for (char& ch : n) {
                             if (ch == '.' || ch == '-' || ch == '+') ch = '_';
                           }
                           return n;
                         });

TEST(ChatRenderAppend, ValidatesItsArguments) {
  const ChatTemplate t = Make(ChatTemplateFamily::kChatMl);
  const std::vector<ChatMessage> m = Chat(true);
  EXPECT_EQ(t.RenderAppend(m, m.size() + 1, true).status().code(),
            absl::StatusCode::kInvalidArgument);
  // num_prior == 0: the whole conversation.
  EXPECT_EQ(*t.RenderAppend(m, 0, true), *t.Render(m, true));
  // Appending nothing but the generation prompt.
  EXPECT_EQ(*t.RenderAppend(m, m.size(), true), "<|im_start|>assistant\n");
  // ChatML: the "\n" after <|im_end|> belongs to the finished turn, so the delta starts with
  // the new turn's header.
  EXPECT_EQ(*t.RenderAppend(Head(m, 4), 3, true),
            "<|im_start|>user\nWhere is the gold? 🪙<|im_end|>\n<|im_start|>assistant\n");
  // Llama 2 writes BOS at every user turn, so its delta starts with it.
  const ChatTemplate llama2 = Make(ChatTemplateFamily::kLlama2);
  EXPECT_EQ(*llama2.RenderAppend(Head(m, 4), 3, true),
            "<BOS>[INST] Where is the gold? 🪙 [/INST]");
}

TEST(ChatTextHelpers, PyStripMatchesPythonWhitespace) {
  using chat_internal::PyStrip;
  EXPECT_EQ(PyStrip(" \t\n\r\v\f x \x1c\x1d\x1e\x1f"), "x");
  EXPECT_EQ(PyStrip("\u3000\u00a0\u2028\u2029\u202f\u205f\u1680\u2000\u200a\u0085x"), "x");
  EXPECT_EQ(PyStrip("\u200bx\u200b"), "\u200bx\u200b");  // zero-width space is not a space
  EXPECT_EQ(PyStrip("é \u3000"), "é");
  EXPECT_EQ(PyStrip("   "), "");
  EXPECT_EQ(PyStrip(""), "");
}

TEST(ChatTextHelpers, Utf8Validation) {
  using chat_internal::IsValidUtf8;
  EXPECT_TRUE(IsValidUtf8("plain é 中 🪙"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\x80"));
}

TEST(ChatTextHelpers, JinjaStringUnescaping) {
  using chat_internal::UnescapeJinjaString;
  EXPECT_EQ(UnescapeJinjaString(R"(a\nb\tc\\d\'e\"f)"), "a\nb\tc\\d'e\"f");
  EXPECT_EQ(UnescapeJinjaString(R"(\x41\u00e9\U0001F600\101)"), "Aé😀A");
  EXPECT_EQ(UnescapeJinjaString(R"(\q\)"), R"(\q\)");
  EXPECT_EQ(UnescapeJinjaString("line\r\nnext"), "line\nnext");
}

}  // namespace
}  // namespace mnemo::engine
