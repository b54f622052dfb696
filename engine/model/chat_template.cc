#include "engine/model/chat_template.h"

#include <array>
#include <ctime>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "cache/base/strings.h"
#include "engine/model/internal/chat_template_internal.h"
#include "engine/model/unicode.h"

namespace mnemo::engine {

using chat_internal::JinjaScan;
using chat_internal::RenderContext;

// ---------------------------------------------------------------------------------------
// Text helpers (Python/Jinja string semantics).
// ---------------------------------------------------------------------------------------
namespace chat_internal {
namespace {

// Decodes the code point at s[i] (valid UTF-8 assumed) and returns its length.
size_t DecodeAt(std::string_view s, size_t i, uint32_t* cp) {
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) {
    *cp = b;
    return 1;
  }
  const size_t len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
  uint32_t v = b & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) v = (v << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  *cp = v;
  return len;
}

bool IsPySpace(uint32_t cp) {
  if (cp <= 0x20) return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20);
  switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t min;
    if (b >= 0xC2 && b <= 0xDF) {
      len = 2, min = 0x80;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3, min = 0x800;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4, min = 0x10000;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    uint32_t cp;
    DecodeAt(s, i, &cp);
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

std::string_view PyStrip(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    uint32_t cp;
    const size_t len = DecodeAt(s, begin, &cp);
    if (!IsPySpace(cp)) break;
    begin += len;
  }
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    uint32_t cp;
    DecodeAt(s, start, &cp);
    if (!IsPySpace(cp)) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

std::string UnescapeJinjaString(std::string_view body) {
  std::string out;
  out.reserve(body.size());
  size_t i = 0;
  while (i < body.size()) {
    const char ch = body[i];
    if (ch == '\r') {  // jinja2 normalises \r\n and \r to \n before unescaping
      out.push_back('\n');
      i += (i + 1 < body.size() && body[i + 1] == '\n') ? 2 : 1;
      continue;
    }
    if (ch != '\\' || i + 1 >= body.size()) {
      out.push_back(ch);
      ++i;
      continue;
    }
    const char e = body[i + 1];
    constexpr std::string_view kEscaped = "ntr\\'\"abfv";
    constexpr std::string_view kDecoded = "\n\t\r\\'\"\a\b\f\v";
    if (const size_t k = kEscaped.find(e); k != std::string_view::npos) {
      out.push_back(kDecoded[k]);
      i += 2;
      continue;
    }
    if (e == '\n') {  // backslash-newline is a line continuation
      i += 2;
      continue;
    }
    const size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
    if (digits > 0 && i + 2 + digits <= body.size()) {
      uint32_t cp = 0;
      bool ok = true;
      for (size_t k = 0; k < digits; ++k) {
        const int h = HexValue(body[i + 2 + k]);
        ok = ok && h >= 0;
        cp = (cp << 4) | static_cast<uint32_t>(h < 0 ? 0 : h);
      }
      if (ok && cp <= 0x10FFFF) {
        unicode::AppendUtf8(static_cast<char32_t>(cp), &out);
        i += 2 + digits;
        continue;
      }
    }
    if (e >= '0' && e <= '7') {
      uint32_t cp = 0;
      size_t k = i + 1;
      while (k < body.size() && k < i + 4 && body[k] >= '0' && body[k] <= '7') {
        cp = cp * 8 + static_cast<uint32_t>(body[k] - '0');
        ++k;
      }
      unicode::AppendUtf8(static_cast<char32_t>(cp), &out);
      i = k;
      continue;
    }
    out.push_back(ch);  // unknown escape: kept as written
    ++i;
  }
  return out;
}

JinjaScan ScanJinja(std::string_view src) {
  JinjaScan scan;
  size_t i = 0;
  while (i + 1 < src.size()) {
    const size_t open = src.find('{', i);
    if (open == std::string_view::npos || open + 1 >= src.size()) break;
    const char kind = src[open + 1];
    if (kind == '#') {
      const size_t close = src.find("#}", open + 2);
      if (close == std::string_view::npos) break;
      i = close + 2;
      continue;
    }
    if (kind != '{' && kind != '%') {
      i = open + 1;
      continue;
    }
    const std::string_view close_tag = kind == '{' ? "}}" : "%}";
    scan.canonical.push_back('\x01');
    size_t j = open + 2;
    while (j < src.size()) {
      const char ch = src[j];
      if (ch == '\'' || ch == '"') {
        size_t k = j + 1;
        while (k < src.size() && src[k] != ch) k += (src[k] == '\\') ? 2 : 1;
        const std::string value = UnescapeJinjaString(src.substr(j + 1, k - j - 1));
        absl::StrAppend(&scan.canonical, "'", value, "'");
        scan.literals.push_back(value);
        j = k + 1;
        continue;
      }
      if (src.substr(j, 2) == close_tag) {
        j += 2;
        break;
      }
      if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') scan.canonical.push_back(ch);
      ++j;
    }
    i = j;
  }
  scan.canonical = absl::StrReplaceAll(scan.canonical, {{"message.content", "message['content']"},
                                                        {"message.role", "message['role']"}});
  return scan;
}

}  // namespace chat_internal

// ---------------------------------------------------------------------------------------
// Families.
// ---------------------------------------------------------------------------------------
namespace {

struct FamilyName {
  ChatTemplateFamily family;
  std::string_view name;
};

constexpr std::array<FamilyName, 12> kFamilyNames = {{
    {ChatTemplateFamily::kUnknown, "unknown"},
    {ChatTemplateFamily::kChatMl, "chatml"},
    {ChatTemplateFamily::kLlama3, "llama3"},
    {ChatTemplateFamily::kLlama31, "llama3.1"},
    {ChatTemplateFamily::kLlama2, "llama2"},
    {ChatTemplateFamily::kMistral, "mistral"},
    {ChatTemplateFamily::kMistralSystemFirst, "mistral-system-first"},
    {ChatTemplateFamily::kMistralV3, "mistral-v3"},
    {ChatTemplateFamily::kGemma, "gemma"},
    {ChatTemplateFamily::kGemma3, "gemma3"},
    {ChatTemplateFamily::kZephyr, "zephyr"},
    {ChatTemplateFamily::kPhi3, "phi3"},
}};

bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// The system prompt of a literal '<|im_start|>system\n' + X + '<|im_end|>\n' (SmolLM2, Qwen2,
// Qwen2.5 inject it when messages[0] is not a system message).
std::optional<std::string> ChatMlDefaultSystem(const JinjaScan& scan) {
  constexpr std::string_view kBegin = "<|im_start|>system\n";
  constexpr std::string_view kEnd = "<|im_end|>\n";
  for (const std::string& lit : scan.literals) {
    const std::string_view s = lit;
    if (s.size() < kBegin.size() + kEnd.size() || !s.starts_with(kBegin) || !s.ends_with(kEnd)) {
      continue;
    }
    std::string_view body = s.substr(kBegin.size(), s.size() - kBegin.size() - kEnd.size());
    if (Contains(body, "<|im_start|>") || Contains(body, "<|im_end|>")) continue;
    return std::string(body);
  }
  return std::nullopt;
}

// {% set date_string = "26 Jul 2024" %} -> 26 Jul 2024.
std::optional<std::string> Llama31DateString(const JinjaScan& scan) {
  constexpr std::string_view kSet = "setdate_string='";
  const size_t p = scan.canonical.find(kSet);
  if (p == std::string::npos) return std::nullopt;
  const size_t begin = p + kSet.size();
  const size_t end = scan.canonical.find('\'', begin);
  if (end == std::string::npos) return std::nullopt;
  return scan.canonical.substr(begin, end - begin);
}

// [INST] families: told apart by the expressions that write a turn (canonical spelling).
ChatTemplateFamily DetectInst(const JinjaScan& scan, ChatTemplateVariant* v) {
  const std::string_view c = scan.canonical;
  if (Contains(c, "'<<SYS>>\n'+system_message+'\n<</SYS>>\n\n'+message['content']") &&
      Contains(c, "bos_token+'[INST] '+content.strip()+' [/INST]'") &&
      Contains(c, "' '+content.strip()+' '+eos_token")) {
    return ChatTemplateFamily::kLlama2;
  }
  if (Contains(c, "[SYSTEM_PROMPT]")) return ChatTemplateFamily::kUnknown;  // v7: not yet
  if (Contains(c, "(message==user_messages[-1])andsystem_messageisdefined") &&
      Contains(c, "'[INST] '+system_message+'\n\n'+message['content']+'[/INST]'") &&
      Contains(c, "'[INST] '+message['content']+'[/INST]'") &&
      Contains(c, "' '+message['content']|trim+eos_token")) {
    return ChatTemplateFamily::kMistralV3;
  }
  if (Contains(c, "loop.firstandsystem_messageisdefined") &&
      Contains(c, "' [INST] '+system_message+'\n\n'+message['content']+' [/INST]'") &&
      Contains(c, "' [INST] '+message['content']+' [/INST]'") &&
      Contains(c, "' '+message['content']+eos_token")) {
    return ChatTemplateFamily::kMistralSystemFirst;
  }
  if (!Contains(c, "system_message")) {
    if (Contains(c, "bos_token") && Contains(c, "'[INST] '+message['content']+' [/INST]'") &&
        Contains(c, "message['content']+eos_token")) {
      v->space_after_eos = Contains(c, "message['content']+eos_token+' '");
      return ChatTemplateFamily::kMistral;
    }
  }
  return ChatTemplateFamily::kUnknown;
}

std::string TodayDateString() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buf[32];
  const size_t n = std::strftime(buf, sizeof(buf), "%d %b %Y", &local);
  return std::string(buf, n);
}

}  // namespace

std::string_view ChatTemplateFamilyName(ChatTemplateFamily family) {
  for (const FamilyName& f : kFamilyNames) {
    if (f.family == family) return f.name;
  }
  return "unknown";
}

std::optional<ChatTemplateFamily> ChatTemplateFamilyFromName(std::string_view name) {
  for (const FamilyName& f : kFamilyNames) {
    if (f.name == name && f.family != ChatTemplateFamily::kUnknown) return f.family;
  }
  return std::nullopt;
}

ChatTemplate::ChatTemplate(ChatTemplateFamily family, std::string bos_text, std::string eos_text,
                           ChatTemplateVariant variant)
    : family_(family),
      bos_text_(std::move(bos_text)),
      eos_text_(std::move(eos_text)),
      variant_(std::move(variant)) {}

ChatTemplate ChatTemplate::FromFamily(ChatTemplateFamily family, std::string bos_text,
                                      std::string eos_text, ChatTemplateVariant variant) {
  return ChatTemplate(family, std::move(bos_text), std::move(eos_text), std::move(variant));
}

ChatTemplate ChatTemplate::Detect(std::string_view src, std::string bos_text,
                                  std::string eos_text) {
  const std::string_view name =
      chat_internal::PyStrip(chat_internal::IsValidUtf8(src) ? src : std::string_view());
  if (std::optional<ChatTemplateFamily> f = ChatTemplateFamilyFromName(name)) {
    return FromFamily(*f, std::move(bos_text), std::move(eos_text));
  }
  ChatTemplateVariant v;
  ChatTemplateFamily family = ChatTemplateFamily::kUnknown;
  const JinjaScan scan = chat_internal::ScanJinja(src);
  const std::string_view c = scan.canonical;
  if (Contains(src, "<|start_header_id|>")) {
    if (Contains(src, "Cutting Knowledge Date")) {
      family = ChatTemplateFamily::kLlama31;
      if (std::optional<std::string> date = Llama31DateString(scan)) v.date_string = *date;
      v.date_from_clock = Contains(c, "strftime_now");
    } else {
      family = ChatTemplateFamily::kLlama3;
    }
  } else if (Contains(src, "<start_of_turn>")) {
    family =
        Contains(c, "first_user_prefix") ? ChatTemplateFamily::kGemma3 : ChatTemplateFamily::kGemma;
  } else if (Contains(src, "[INST]")) {
    family = DetectInst(scan, &v);
  } else if (Contains(src, "<|im_start|>")) {
    // Reasoning templates (Qwen3, ...) rewrite earlier assistant turns: not rendered here.
    if (!Contains(src, "<think>")) {
      family = ChatTemplateFamily::kChatMl;
      v.default_system = ChatMlDefaultSystem(scan);
    }
  } else if (Contains(src, "<|user|>")) {
    if (Contains(src, "<|end|>")) {
      if (Contains(c, "add_generation_prompt")) {
        family = ChatTemplateFamily::kPhi3;
        v.phi3_bos = Contains(c, "bos_token");
        v.skip_empty_system = Contains(c, "message['role']=='system'andmessage['content']");
      }
    } else if (Contains(c, "eos_token")) {
      family = ChatTemplateFamily::kZephyr;
    }
  }
  return ChatTemplate(family, std::move(bos_text), std::move(eos_text), std::move(v));
}

bool ChatTemplate::renders_bos() const {
  if (bos_text_.empty()) return false;
  switch (family_) {
    case ChatTemplateFamily::kLlama3:
    case ChatTemplateFamily::kLlama31:
    case ChatTemplateFamily::kLlama2:
    case ChatTemplateFamily::kMistral:
    case ChatTemplateFamily::kMistralSystemFirst:
    case ChatTemplateFamily::kMistralV3:
    case ChatTemplateFamily::kGemma:
    case ChatTemplateFamily::kGemma3:
      return true;
    case ChatTemplateFamily::kPhi3:
      return variant_.phi3_bos;
    case ChatTemplateFamily::kUnknown:
    case ChatTemplateFamily::kChatMl:
    case ChatTemplateFamily::kZephyr:
      return false;
  }
  return false;
}

std::string ChatTemplate::generation_prompt() const {
  switch (family_) {
    case ChatTemplateFamily::kChatMl:
      return "<|im_start|>assistant\n";
    case ChatTemplateFamily::kLlama3:
    case ChatTemplateFamily::kLlama31:
      return "<|start_header_id|>assistant<|end_header_id|>\n\n";
    case ChatTemplateFamily::kGemma:
    case ChatTemplateFamily::kGemma3:
      return "<start_of_turn>model\n";
    case ChatTemplateFamily::kZephyr:
    case ChatTemplateFamily::kPhi3:
      return "<|assistant|>\n";
    case ChatTemplateFamily::kUnknown:
    case ChatTemplateFamily::kLlama2:
    case ChatTemplateFamily::kMistral:
    case ChatTemplateFamily::kMistralSystemFirst:
    case ChatTemplateFamily::kMistralV3:
      return "";
  }
  return "";
}

std::string ChatTemplate::assistant_content_prefix() const {
  switch (family_) {
    case ChatTemplateFamily::kLlama2:
    case ChatTemplateFamily::kMistralSystemFirst:
    case ChatTemplateFamily::kMistralV3:
      return " ";
    default:
      return "";
  }
}

std::string ChatTemplate::assistant_end() const {
  switch (family_) {
    case ChatTemplateFamily::kChatMl:
      return "<|im_end|>\n";
    case ChatTemplateFamily::kLlama3:
    case ChatTemplateFamily::kLlama31:
      return "<|eot_id|>";
    case ChatTemplateFamily::kLlama2:
      return absl::StrCat(" ", eos_text_);
    case ChatTemplateFamily::kMistral:
      return absl::StrCat(eos_text_, variant_.space_after_eos ? " " : "");
    case ChatTemplateFamily::kMistralSystemFirst:
    case ChatTemplateFamily::kMistralV3:
      return eos_text_;
    case ChatTemplateFamily::kGemma:
    case ChatTemplateFamily::kGemma3:
      return "<end_of_turn>\n";
    case ChatTemplateFamily::kZephyr:
      return absl::StrCat(eos_text_, "\n");
    case ChatTemplateFamily::kPhi3:
      return "<|end|>\n";
    case ChatTemplateFamily::kUnknown:
      return "";
  }
  return "";
}

absl::StatusOr<std::string> ChatTemplate::Render(std::span<const ChatMessage> messages,
                                                 bool add_generation_prompt) const {
  return RenderImpl(messages, add_generation_prompt, /*session=*/false);
}

absl::StatusOr<std::string> ChatTemplate::RenderAppend(std::span<const ChatMessage> messages,
                                                       size_t num_prior,
                                                       bool add_generation_prompt) const {
  if (num_prior > messages.size()) {
    return absl::InvalidArgumentError(absl::StrCat("RenderAppend: num_prior ", num_prior,
                                                   " exceeds the ", messages.size(), " messages"));
  }
  absl::StatusOr<std::string> full = RenderImpl(messages, add_generation_prompt, true);
  if (!full.ok() || num_prior == 0) return full;
  absl::StatusOr<std::string> prior = RenderImpl(messages.first(num_prior), false, true);
  if (!prior.ok()) return prior.status();
  // Session-mode renderings extend each other by construction; a mismatch is a bug here.
  if (!std::string_view(*full).starts_with(*prior)) {
    return absl::InternalError(absl::StrCat("chat template family '",
                                            AsAbsl(ChatTemplateFamilyName(family_)),
                                            "': session rendering is not prefix-stable"));
  }
  return full->substr(prior->size());
}

absl::StatusOr<std::string> ChatTemplate::RenderImpl(std::span<const ChatMessage> messages,
                                                     bool add_generation_prompt,
                                                     bool session) const {
  const std::string_view name = ChatTemplateFamilyName(family_);
  if (family_ == ChatTemplateFamily::kUnknown) {
    return absl::InvalidArgumentError(
        "chat template family is unknown: the model's chat template was not recognised "
        "(see docs/chat-templates.md)");
  }
  if (messages.empty()) return absl::InvalidArgumentError("chat has no messages");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      return absl::InvalidArgumentError(absl::StrCat("message ", i, " has unknown role '", role,
                                                     "' (chat template family '", AsAbsl(name),
                                                     "' takes system, user and assistant)"));
    }
    if (!chat_internal::IsValidUtf8(messages[i].content)) {
      return absl::InvalidArgumentError(absl::StrCat("message ", i, " content is not valid UTF-8"));
    }
  }
  std::string date;
  if (family_ == ChatTemplateFamily::kLlama31) {
    date = variant_.date_from_clock ? TodayDateString() : variant_.date_string;
  }
  const RenderContext ctx{.variant = &variant_,
                          .family_name = name,
                          .bos = bos_text_,
                          .eos = eos_text_,
                          .date_string = date,
                          .add_generation_prompt = add_generation_prompt,
                          .session = session};
  std::string out;
  absl::Status status;
  switch (family_) {
    case ChatTemplateFamily::kChatMl:
      status = chat_internal::RenderChatMl(messages, ctx, &out);
      break;
    case ChatTemplateFamily::kLlama3:
      status = chat_internal::RenderLlama3(messages, ctx, &out);
      break;
    case ChatTemplateFamily::kLlama31:
      status = chat_internal::RenderLlama31(messages, ctx, &out);
      break;
    case ChatTemplateFamily::kLlama2:
      status = chat_internal::RenderLlama2(messages, ctx, &out);
      break;
    case ChatTemplateFamily::kMistral:
      status = chat_internal::RenderMistral(messages, ctx, &out);
      break;
    case ChatTemplateFamily::kMistralSystemFirst:
      status = chat_internal::RenderMistralSystemFirst(messages, ctx, &out);
      break;
    case ChatTemplateFamily::kMistralV3:
      status = chat_internal::RenderMistralV3(messages, ctx, &out);
      break;
    case ChatTemplateFamily::kGemma:
      status = chat_internal::RenderGemma(messages, ctx, &out);
      break;
    case ChatTemplateFamily::kGemma3:
      status = chat_internal::RenderGemma3(messages, ctx, &out);
      break;
    case ChatTemplateFamily::kZephyr:
      status = chat_internal::RenderZephyr(messages, ctx, &out);
      break;
    case ChatTemplateFamily::kPhi3:
      status = chat_internal::RenderPhi3(messages, ctx, &out);
      break;
    case ChatTemplateFamily::kUnknown:
      break;
  }
  if (!status.ok()) return status;
  return out;
}

}  // namespace mnemo::engine
