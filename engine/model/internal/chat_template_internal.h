// Internals of engine/model/chat_template: the per-family renderers, the text helpers that
// reproduce Python/Jinja string semantics, and the Jinja source scanner used by Detect().
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/chat_template.h"

namespace mnemo::engine::chat_internal {

// ---- text helpers ----

// True if `s` is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF).
bool IsValidUtf8(std::string_view s);
// Python's str.strip() without arguments (what Jinja's `trim` filter and `.strip()` call):
// removes leading and trailing code points for which str.isspace() is true (ASCII
// whitespace, U+001C..U+001F, U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029,
// U+202F, U+205F, U+3000). Precondition: `s` is valid UTF-8.
std::string_view PyStrip(std::string_view s);
void AppendUtf8(uint32_t code_point, std::string* out);

// ---- Jinja source scanning ----

struct JinjaScan {
  // The contents of every {{ }} and {% %} tag, each preceded by '\x01': whitespace outside
  // string literals removed, string literals unescaped (as Jinja's lexer does) and re-quoted
  // with '...', and `message.role` / `message.content` spelled message['role'] /
  // message['content']. Comments and template text are dropped. Used for pattern matching
  // that does not depend on spacing, quoting or attribute syntax.
  std::string canonical;
  // Every string literal of the tags, unescaped, in source order.
  std::vector<std::string> literals;
};
JinjaScan ScanJinja(std::string_view source);

// Decodes the body of a Jinja string literal (between its quotes) the way jinja2's lexer
// does: newlines normalised to "\n", then Python "unicode-escape" decoding (\n \t \r \\ \'
// \" \a \b \f \v \xHH \uHHHH \UHHHHHHHH and octal; an unknown escape stays as written).
std::string UnescapeJinjaString(std::string_view body);

// ---- renderers ----

struct RenderContext {
  const ChatTemplateVariant* variant = nullptr;
  std::string_view family_name;
  std::string_view bos;
  std::string_view eos;
  std::string_view date_string;  // kLlama31: already resolved (clock or variant)
  bool add_generation_prompt = false;
  bool session = false;  // live-session conventions (ChatTemplate::RenderAppend)
};

// Each appends the rendering of `messages` (non-empty, roles and UTF-8 already validated) to
// *out, or returns InvalidArgument for what the family's template rejects.
absl::Status RenderChatMl(std::span<const ChatMessage> m, const RenderContext& c, std::string* out);
absl::Status RenderLlama3(std::span<const ChatMessage> m, const RenderContext& c, std::string* out);
absl::Status RenderLlama31(std::span<const ChatMessage> m, const RenderContext& c,
                           std::string* out);
absl::Status RenderLlama2(std::span<const ChatMessage> m, const RenderContext& c, std::string* out);
absl::Status RenderMistral(std::span<const ChatMessage> m, const RenderContext& c,
                           std::string* out);
absl::Status RenderMistralSystemFirst(std::span<const ChatMessage> m, const RenderContext& c,
                                      std::string* out);
absl::Status RenderMistralV3(std::span<const ChatMessage> m, const RenderContext& c,
                             std::string* out);
absl::Status RenderGemma(std::span<const ChatMessage> m, const RenderContext& c, std::string* out);
absl::Status RenderGemma3(std::span<const ChatMessage> m, const RenderContext& c, std::string* out);
absl::Status RenderZephyr(std::span<const ChatMessage> m, const RenderContext& c, std::string* out);
absl::Status RenderPhi3(std::span<const ChatMessage> m, const RenderContext& c, std::string* out);

}  // namespace mnemo::engine::chat_internal
