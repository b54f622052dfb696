// Chat templates against Python jinja2: tests/data/chat_goldens.json holds what the real
// template sources in tests/data/chat_templates/ render (tools/make_chat_goldens.py), and the
// C++ renderers must match byte for byte, or fail where the template raises.
#include "engine/model/chat_template.h"

#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/model/gguf.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const nlohmann::json& Goldens() {
  static const nlohmann::json* goldens = [] {
    const std::string text = ReadFile(mnemo::testing::TestDataPath("chat_goldens.json"));
    return new nlohmann::json(nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false));
  }();
  return *goldens;
}

std::vector<ChatMessage> Conversation(const std::string& name) {
  std::vector<ChatMessage> out;
  for (const auto& m : Goldens()["conversations"][name]) {
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return out;
}

// Families that take user/assistant turns strictly alternating after an optional leading
// system message. Their templates raise on most misplaced system messages but render one at
// an odd position (Gemma writes a "system" turn, Llama 2 drops it silently); mnemo rejects
// every system message after messages[0] in these families (documented).
bool Alternates(ChatTemplateFamily f) {
  switch (f) {
    case ChatTemplateFamily::kLlama2:
    case ChatTemplateFamily::kMistral:
    case ChatTemplateFamily::kMistralSystemFirst:
    case ChatTemplateFamily::kMistralV3:
    case ChatTemplateFamily::kGemma:
    case ChatTemplateFamily::kGemma3:
      return true;
    default:
      return false;
  }
}

bool HasLateSystem(const std::vector<ChatMessage>& m) {
  for (size_t i = 1; i < m.size(); ++i) {
    if (m[i].role == "system") return true;
  }
  return false;
}

struct TemplateCase {
  const char* name;
  ChatTemplateFamily family;
};

// Every template file and the family Detect() must find for it.
constexpr TemplateCase kTemplates[] = {
    {"chatml", ChatTemplateFamily::kChatMl},
    {"gemma", ChatTemplateFamily::kGemma},
    {"gemma3", ChatTemplateFamily::kGemma3},
    {"llama2", ChatTemplateFamily::kLlama2},
    {"llama3", ChatTemplateFamily::kLlama3},
    {"llama3_1", ChatTemplateFamily::kLlama31},
    {"llama3_2", ChatTemplateFamily::kLlama31},
    {"mistral_v0_1", ChatTemplateFamily::kMistral},
    {"mistral_v0_1_system", ChatTemplateFamily::kMistralSystemFirst},
    {"mistral_v0_2", ChatTemplateFamily::kMistral},
    {"mistral_v0_3", ChatTemplateFamily::kMistralV3},
    {"phi3", ChatTemplateFamily::kPhi3},
    {"phi3_5", ChatTemplateFamily::kPhi3},
    {"qwen2", ChatTemplateFamily::kChatMl},
    {"qwen2_5", ChatTemplateFamily::kChatMl},
    {"smollm2", ChatTemplateFamily::kChatMl},
    {"zephyr", ChatTemplateFamily::kZephyr},
};

void PrintTo(const TemplateCase& c, std::ostream* os) { *os << c.name; }

class ChatGoldenTest : public ::testing::TestWithParam<TemplateCase> {};

TEST(ChatGoldens, CoverEveryTemplateFile) {
  ASSERT_TRUE(Goldens().is_object()) << "tests/data/chat_goldens.json missing or invalid";
  std::vector<std::string> in_json;
  for (const auto& t : Goldens()["templates"]) in_json.push_back(t["name"].get<std::string>());
  std::vector<std::string> expected;
  for (const TemplateCase& t : kTemplates) expected.push_back(t.name);
  EXPECT_EQ(in_json, expected);
}

TEST_P(ChatGoldenTest, DetectsFamilyAndRendersLikeJinja) {
  const TemplateCase& tc = GetParam();
  const nlohmann::json* golden = nullptr;
  for (const auto& t : Goldens()["templates"]) {
    if (t["name"] == tc.name) golden = &t;
  }
  ASSERT_NE(golden, nullptr) << tc.name << " missing from chat_goldens.json";
  const std::string source =
      ReadFile(mnemo::testing::TestDataPath(std::string("chat_templates/") + tc.name + ".jinja"));
  ASSERT_FALSE(source.empty());
  ChatTemplate tmpl = ChatTemplate::Detect(source, (*golden)["bos"], (*golden)["eos"]);
  ASSERT_EQ(tmpl.family(), tc.family) << ChatTemplateFamilyName(tmpl.family());
  EXPECT_EQ(ChatTemplateFamilyName(tmpl.family()), (*golden)["family"].get<std::string>());
  if (tmpl.variant().date_from_clock) {
    // The goldens pin strftime_now; pin the C++ date the same way.
    ChatTemplateVariant v = tmpl.variant();
    v.date_from_clock = false;
    v.date_string = Goldens()["pinned_date"];
    tmpl = ChatTemplate::FromFamily(tmpl.family(), tmpl.bos_text(), tmpl.eos_text(), v);
  }
  int compared = 0;
  for (const auto& c : (*golden)["cases"]) {
    const std::string conv = c["conversation"];
    const bool gen = c["add_generation_prompt"];
    SCOPED_TRACE(std::string(tc.name) + " / " + conv + (gen ? " / gen" : ""));
    const std::vector<ChatMessage> messages = Conversation(conv);
    absl::StatusOr<std::string> out = tmpl.Render(messages, gen);
    if (c.contains("error") || (Alternates(tc.family) && HasLateSystem(messages))) {
      ASSERT_FALSE(out.ok()) << "jinja: " << c.value("error", "(stricter in C++)");
      EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(out.status().message()), HasSubstr("message "));
    } else {
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_EQ(*out, c["output"].get<std::string>());
    }
    ++compared;
  }
  EXPECT_GE(compared, 20);
}

INSTANTIATE_TEST_SUITE_P(Templates, ChatGoldenTest, ::testing::ValuesIn(kTemplates),
                         [](const ::testing::TestParamInfo<TemplateCase>& p) {
                           return std::string(p.param.name);
                         });

// SmolLM2's template exactly as tokenizer.chat_template holds it (real newlines inside the
// string literals).
constexpr char kSmolLm2Template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";

constexpr char kSmolLm2System[] =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

TEST(ChatTemplate, SmolLm2DefaultSystemPromptIsReadFromTheSource) {
  const ChatTemplate t = ChatTemplate::Detect(kSmolLm2Template, "<|im_start|>", "<|im_end|>");
  ASSERT_EQ(t.family(), ChatTemplateFamily::kChatMl);
  ASSERT_TRUE(t.variant().default_system.has_value());
  EXPECT_EQ(*t.variant().default_system, kSmolLm2System);
  EXPECT_FALSE(t.renders_bos());
  const std::vector<ChatMessage> m = {{"user", "Hi"}};
  EXPECT_EQ(*t.Render(m, true), std::string("<|im_start|>system\n") + kSmolLm2System +
                                    "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                                    "<|im_start|>assistant\n");
  const std::vector<ChatMessage> with_system = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_EQ(*t.Render(with_system, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");

  // The same template with Jinja "\n" escapes instead of raw newlines.
  std::string escaped;
  for (char ch : std::string(kSmolLm2Template))
    escaped += ch == '\n' ? std::string("\\n") : std::string(1, ch);
  const ChatTemplate e = ChatTemplate::Detect(escaped, "", "");
  ASSERT_TRUE(e.variant().default_system.has_value());
  EXPECT_EQ(*e.variant().default_system, kSmolLm2System);

  // A different injected prompt is read, not assumed (with Jinja escapes inside).
  std::string other = kSmolLm2Template;
  other.replace(other.find("You are"), std::strlen(kSmolLm2System), R"(Tu es \'utile\'.)");
  EXPECT_EQ(ChatTemplate::Detect(other, "", "").variant().default_system, "Tu es 'utile'.");
}

// The real model: its tokenizer.chat_template is the literal above, and with the BOS/EOS
// texts of its own vocabulary it renders SmolLM2's default system prompt.
TEST(ChatTemplate, SmolLm2GgufTemplate) {
  const std::string path = mnemo::testing::SmolLm2GgufPath();
  MNEMO_REQUIRE_FILE(path);
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<std::string> source = (*file)->GetString("tokenizer.chat_template");
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(*source, kSmolLm2Template);
  absl::StatusOr<const GgufValue::Array*> tokens = (*file)->GetArray("tokenizer.ggml.tokens");
  absl::StatusOr<int64_t> bos = (*file)->GetInt("tokenizer.ggml.bos_token_id");
  absl::StatusOr<int64_t> eos = (*file)->GetInt("tokenizer.ggml.eos_token_id");
  ASSERT_TRUE(tokens.ok() && bos.ok() && eos.ok());
  const std::string bos_text = *(**tokens)[static_cast<size_t>(*bos)].AsString();
  const std::string eos_text = *(**tokens)[static_cast<size_t>(*eos)].AsString();
  EXPECT_EQ(eos_text, "<|im_end|>");
  const ChatTemplate t = ChatTemplate::Detect(*source, bos_text, eos_text);
  EXPECT_EQ(t.family(), ChatTemplateFamily::kChatMl);
  EXPECT_EQ(t.variant().default_system, kSmolLm2System);
  EXPECT_FALSE(t.renders_bos());
  EXPECT_EQ(t.assistant_end(), eos_text + "\n");
}

TEST(ChatTemplate, FamilyNamesRoundTrip) {
  for (const TemplateCase& tc : kTemplates) {
    const std::string_view name = ChatTemplateFamilyName(tc.family);
    ASSERT_EQ(ChatTemplateFamilyFromName(name), tc.family) << name;
    // A source that is just a family name selects it (e.g. a --chat-template override).
    EXPECT_EQ(ChatTemplate::Detect(std::string(name) + "\n", "", "").family(), tc.family);
  }
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kUnknown), "unknown");
  EXPECT_EQ(ChatTemplateFamilyFromName("unknown"), std::nullopt);
  EXPECT_EQ(ChatTemplateFamilyFromName("ChatML"), std::nullopt);
}

TEST(ChatTemplate, UnrecognisedSourcesAreUnknown) {
  const std::vector<std::string> sources = {
      "",
      "   \n",
      "{{ messages[0]['content'] }}",
      "\xff\xfe garbage",
      // Qwen3-style reasoning template: rewrites earlier assistant turns.
      "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n<think>\\n' }}"
      "{%- endfor %}",
      // Mistral v7 system prompt tags.
      "{{- bos_token }}{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}"
      "{{- '[INST]' + message['content'] + '[/INST]' }}",
      // [INST] with spacing that matches no known variant.
      "{{ bos_token }}{% for message in messages %}{{ '  ' + message['content'] + '  ' }}"
      "{% endfor %}[INST]",
      // Old Phi-3 template without a generation prompt switch.
      "{% for message in messages %}{{'<|user|>\\n' + message['content'] + '<|end|>'}}"
      "{% endfor %}",
  };
  for (const std::string& s : sources) {
    const ChatTemplate t = ChatTemplate::Detect(s, "<s>", "</s>");
    EXPECT_EQ(t.family(), ChatTemplateFamily::kUnknown) << s;
    const std::vector<ChatMessage> m = {{"user", "hi"}};
    const absl::StatusOr<std::string> out = t.Render(m, true);
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(out.status().message()), HasSubstr("unknown"));
  }
}

TEST(ChatTemplate, RenderRejectsBadInputNamingTheMessage) {
  const ChatTemplate chatml = ChatTemplate::FromFamily(ChatTemplateFamily::kChatMl, "", "");
  EXPECT_EQ(chatml.Render({}, true).status().code(), absl::StatusCode::kInvalidArgument);

  const std::vector<ChatMessage> tool = {{"user", "a"}, {"tool", "b"}};
  absl::Status s = chatml.Render(tool, true).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("message 1"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("'tool'"));

  const std::vector<ChatMessage> bad_utf8 = {{"user", "ok"}, {"assistant", "x"}, {"user", "\xc3"}};
  s = chatml.Render(bad_utf8, true).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("message 2"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("UTF-8"));

  const std::vector<ChatMessage> with_system = {{"system", "s"}, {"user", "u"}};
  for (ChatTemplateFamily f : {ChatTemplateFamily::kGemma, ChatTemplateFamily::kMistral}) {
    s = ChatTemplate::FromFamily(f, "<s>", "</s>").Render(with_system, true).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("system"));
    EXPECT_THAT(std::string(s.message()), HasSubstr("message 0"));
  }

  const std::vector<ChatMessage> not_alternating = {
      {"system", "s"}, {"user", "u"}, {"assistant", "a"}, {"assistant", "b"}};
  for (ChatTemplateFamily f :
       {ChatTemplateFamily::kLlama2, ChatTemplateFamily::kMistralV3,
        ChatTemplateFamily::kMistralSystemFirst, ChatTemplateFamily::kGemma3}) {
    s = ChatTemplate::FromFamily(f, "<s>", "</s>").Render(not_alternating, false).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << ChatTemplateFamilyName(f);
    EXPECT_THAT(std::string(s.message()), HasSubstr("message 3"));
    EXPECT_THAT(std::string(s.message()), HasSubstr("alternate"));
  }
  // Families without the alternation rule render the same messages.
  EXPECT_TRUE(ChatTemplate::FromFamily(ChatTemplateFamily::kLlama3, "<s>", "</s>")
                  .Render(not_alternating, false)
                  .ok());
}

TEST(ChatTemplate, RendersBosOnlyWhereTheTemplateWritesIt) {
  const struct {
    ChatTemplateFamily family;
    bool bos;
  } cases[] = {
      {ChatTemplateFamily::kChatMl, false},   {ChatTemplateFamily::kLlama3, true},
      {ChatTemplateFamily::kLlama31, true},   {ChatTemplateFamily::kLlama2, true},
      {ChatTemplateFamily::kMistral, true},   {ChatTemplateFamily::kMistralSystemFirst, true},
      {ChatTemplateFamily::kMistralV3, true}, {ChatTemplateFamily::kGemma, true},
      {ChatTemplateFamily::kGemma3, true},    {ChatTemplateFamily::kZephyr, false},
      {ChatTemplateFamily::kPhi3, false},
  };
  const std::vector<ChatMessage> m = {{"user", "hi"}};
  for (const auto& c : cases) {
    const ChatTemplate t = ChatTemplate::FromFamily(c.family, "<BOS>", "<EOS>");
    EXPECT_EQ(t.renders_bos(), c.bos) << ChatTemplateFamilyName(c.family);
    EXPECT_EQ(t.Render(m, true)->starts_with("<BOS>"), c.bos) << ChatTemplateFamilyName(c.family);
    EXPECT_FALSE(ChatTemplate::FromFamily(c.family, "", "</s>").renders_bos());
  }
  ChatTemplateVariant phi_bos;
  phi_bos.phi3_bos = true;
  EXPECT_TRUE(
      ChatTemplate::FromFamily(ChatTemplateFamily::kPhi3, "<s>", "", phi_bos).renders_bos());
}

TEST(ChatTemplate, Llama32DateComesFromTheClock) {
  const std::string source =
      ReadFile(mnemo::testing::TestDataPath("chat_templates/llama3_2.jinja"));
  const ChatTemplate t = ChatTemplate::Detect(source, "<|begin_of_text|>", "<|eot_id|>");
  ASSERT_EQ(t.family(), ChatTemplateFamily::kLlama31);
  EXPECT_TRUE(t.variant().date_from_clock);
  auto today = [] {
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buf[32];
    return std::string(buf, std::strftime(buf, sizeof(buf), "%d %b %Y", &local));
  };
  const std::string before = today();
  const std::vector<ChatMessage> m = {{"user", "hi"}};
  const std::string out = *t.Render(m, true);
  const std::string after = today();
  EXPECT_TRUE(out.find("Today Date: " + before + "\n\n") != std::string::npos ||
              out.find("Today Date: " + after + "\n\n") != std::string::npos)
      << out;
  // Llama 3.1 pins its date in the source.
  const ChatTemplate t31 = ChatTemplate::Detect(
      ReadFile(mnemo::testing::TestDataPath("chat_templates/llama3_1.jinja")), "", "");
  EXPECT_FALSE(t31.variant().date_from_clock);
  EXPECT_EQ(t31.variant().date_string, "26 Jul 2024");
}

// Template sources come from model files: Detect() must take any bytes. Random sources built
// from template fragments (unterminated tags and literals, stray escapes, markers of every
// family) never crash it, and whatever it detects renders or fails cleanly.
TEST(ChatTemplate, DetectSurvivesArbitrarySources) {
  const std::vector<std::string> pieces = {"{{",
                                           "}}",
                                           "{%",
                                           "%}",
                                           "{#",
                                           "#}",
                                           "'",
                                           "\"",
                                           "\\",
                                           "\\u12",
                                           "\\x4",
                                           "\n",
                                           " ",
                                           "<|im_start|>",
                                           "<|im_end|>",
                                           "system\n",
                                           "<|start_header_id|>",
                                           "Cutting Knowledge Date",
                                           "[INST]",
                                           "<<SYS>>",
                                           "<start_of_turn>",
                                           "<|user|>",
                                           "<|end|>",
                                           "eos_token",
                                           "bos_token",
                                           "message['content']",
                                           "+",
                                           "set date_string = ",
                                           "user_messages[-1]",
                                           "\xff",
                                           "add_generation_prompt"};
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  const std::vector<ChatMessage> m = {{"system", "s"}, {"user", "u"}};
  int detected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string src;
    const size_t n = next() % 24;
    for (size_t i = 0; i < n; ++i) src += pieces[next() % pieces.size()];
    const ChatTemplate t = ChatTemplate::Detect(src, "<s>", "</s>");
    const absl::StatusOr<std::string> out = t.Render(m, true);
    if (!out.ok()) {
      EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << src;
    }
    detected += t.family() != ChatTemplateFamily::kUnknown;
  }
  EXPECT_GT(detected, 0);
}

}  // namespace
}  // namespace mnemo::engine
