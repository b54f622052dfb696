// The per-family renderers. Each one mirrors its reference Jinja template line by line (the
// templates are in tests/data/chat_templates/); comments quote the Jinja they reproduce.
// Where the C++ is stricter than the template (a system message after messages[0] in an
// alternating family, which some templates render oddly or drop silently), it says so.
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "engine/model/internal/chat_template_internal.h"

namespace mnemo::engine::chat_internal {
namespace {

constexpr std::string_view kSystem = "system";
constexpr std::string_view kUser = "user";
constexpr std::string_view kAssistant = "assistant";

bool IsSystem(const ChatMessage& m) { return m.role == kSystem; }

void Append(std::string* out, std::string_view a) { out->append(a); }

// Index of the first message after the optional leading system message.
size_t LoopStart(std::span<const ChatMessage> m) { return IsSystem(m[0]) ? 1 : 0; }

absl::Status RejectSystem(std::span<const ChatMessage> m, const RenderContext& c) {
  for (size_t i = 0; i < m.size(); ++i) {
    if (IsSystem(m[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("chat template family '", AsAbsl(c.family_name),
                       "' does not support system messages (message ", i, ")"));
    }
  }
  return absl::OkStatus();
}

// {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception(...) }}
// over messages[start..]. A system message there is rejected outright (the templates either
// raise or, at odd positions, render or drop it).
absl::Status CheckAlternation(std::span<const ChatMessage> m, size_t start,
                              const RenderContext& c) {
  for (size_t i = start; i < m.size(); ++i) {
    if (IsSystem(m[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chat template family '", AsAbsl(c.family_name),
          "' accepts a system message only as message 0; message ", i, " is a system message"));
    }
    const std::string_view expected = (i - start) % 2 == 0 ? kUser : kAssistant;
    if (m[i].role != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chat template family '", AsAbsl(c.family_name),
          "' requires user and assistant messages to alternate after the optional system "
          "message: message ",
          i, " has role '", m[i].role, "', expected '", AsAbsl(expected), "'"));
    }
  }
  return absl::OkStatus();
}

void AppendLlama3Header(std::string_view role, std::string* out) {
  Append(out, "<|start_header_id|>");
  Append(out, role);
  Append(out, "<|end_header_id|>\n\n");
}

}  // namespace

// {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}, with
// the default system turn before messages[0] when the template has one.
absl::Status RenderChatMl(std::span<const ChatMessage> m, const RenderContext& c,
                          std::string* out) {
  const auto& default_system = c.variant->default_system;
  if (default_system.has_value() && !IsSystem(m[0])) {
    absl::StrAppend(out, "<|im_start|>system\n", AsAbsl(*default_system), "<|im_end|>\n");
  }
  for (const ChatMessage& msg : m) {
    absl::StrAppend(out, "<|im_start|>", msg.role, "\n", msg.content, "<|im_end|>\n");
  }
  if (c.add_generation_prompt) Append(out, "<|im_start|>assistant\n");
  return absl::OkStatus();
}

// bos_token + ('<|start_header_id|>' + role + '<|end_header_id|>\n\n' + content | trim +
// '<|eot_id|>') for each message; BOS only before the first.
absl::Status RenderLlama3(std::span<const ChatMessage> m, const RenderContext& c,
                          std::string* out) {
  Append(out, c.bos);
  for (const ChatMessage& msg : m) {
    AppendLlama3Header(msg.role, out);
    Append(out, PyStrip(msg.content));
    Append(out, "<|eot_id|>");
  }
  if (c.add_generation_prompt) AppendLlama3Header(kAssistant, out);
  return absl::OkStatus();
}

// Llama 3.1/3.2 without tools: the system header always comes first, holding the knowledge
// cutoff, the date and the (trimmed) system prompt; the other messages as in Llama 3.
absl::Status RenderLlama31(std::span<const ChatMessage> m, const RenderContext& c,
                           std::string* out) {
  Append(out, c.bos);
  AppendLlama3Header(kSystem, out);
  absl::StrAppend(out, "Cutting Knowledge Date: December 2023\nToday Date: ", AsAbsl(c.date_string),
                  "\n\n");
  const size_t start = LoopStart(m);
  if (start == 1) Append(out, PyStrip(m[0].content));
  Append(out, "<|eot_id|>");
  for (size_t i = start; i < m.size(); ++i) {
    AppendLlama3Header(m[i].role, out);
    Append(out, PyStrip(m[i].content));
    Append(out, "<|eot_id|>");
  }
  if (c.add_generation_prompt) AppendLlama3Header(kAssistant, out);
  return absl::OkStatus();
}

// content = '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content for the first loop message;
// user: bos_token + '[INST] ' + content.strip() + ' [/INST]';
// assistant: ' ' + content.strip() + ' ' + eos_token. No generation prompt.
absl::Status RenderLlama2(std::span<const ChatMessage> m, const RenderContext& c,
                          std::string* out) {
  const size_t start = LoopStart(m);
  if (absl::Status s = CheckAlternation(m, start, c); !s.ok()) return s;
  for (size_t i = start; i < m.size(); ++i) {
    std::string content;
    if (i == start && start == 1) {
      content = absl::StrCat("<<SYS>>\n", m[0].content, "\n<</SYS>>\n\n", m[i].content);
    } else {
      content = m[i].content;
    }
    if (m[i].role == kUser) {
      absl::StrAppend(out, AsAbsl(c.bos), "[INST] ", AsAbsl(PyStrip(content)), " [/INST]");
    } else {
      absl::StrAppend(out, " ", AsAbsl(PyStrip(content)), " ", AsAbsl(c.eos));
    }
  }
  return absl::OkStatus();
}

// bos_token; user: '[INST] ' + content + ' [/INST]'; assistant: content + eos_token (+ ' ' in
// v0.1). No system message, no generation prompt.
absl::Status RenderMistral(std::span<const ChatMessage> m, const RenderContext& c,
                           std::string* out) {
  if (absl::Status s = RejectSystem(m, c); !s.ok()) return s;
  if (absl::Status s = CheckAlternation(m, 0, c); !s.ok()) return s;
  Append(out, c.bos);
  for (const ChatMessage& msg : m) {
    if (msg.role == kUser) {
      absl::StrAppend(out, "[INST] ", msg.content, " [/INST]");
    } else {
      absl::StrAppend(out, msg.content, AsAbsl(c.eos), c.variant->space_after_eos ? " " : "");
    }
  }
  return absl::OkStatus();
}

// bos_token; first user turn: ' [INST] ' + system + '\n\n' + content + ' [/INST]', others
// ' [INST] ' + content + ' [/INST]'; assistant: ' ' + content + eos_token.
absl::Status RenderMistralSystemFirst(std::span<const ChatMessage> m, const RenderContext& c,
                                      std::string* out) {
  const size_t start = LoopStart(m);
  if (absl::Status s = CheckAlternation(m, start, c); !s.ok()) return s;
  Append(out, c.bos);
  for (size_t i = start; i < m.size(); ++i) {
    if (m[i].role == kUser) {
      Append(out, " [INST] ");
      if (i == start && start == 1) absl::StrAppend(out, m[0].content, "\n\n");
      absl::StrAppend(out, m[i].content, " [/INST]");
    } else {
      absl::StrAppend(out, " ", m[i].content, AsAbsl(c.eos));
    }
  }
  return absl::OkStatus();
}

// bos_token; user: '[INST] ' + [system + '\n\n' if message == user_messages[-1]] + content +
// '[/INST]'; assistant: ' ' + content | trim + eos_token. The template compares messages by
// value, so every user message equal to the last one gets the system prompt. In session mode
// the system prompt stays in the first user turn (RenderAppend).
absl::Status RenderMistralV3(std::span<const ChatMessage> m, const RenderContext& c,
                             std::string* out) {
  const size_t start = LoopStart(m);
  if (absl::Status s = CheckAlternation(m, start, c); !s.ok()) return s;
  const bool has_system = start == 1;
  size_t last_user = m.size();
  for (size_t i = start; i < m.size(); ++i) {
    if (m[i].role == kUser) last_user = i;
  }
  Append(out, c.bos);
  for (size_t i = start; i < m.size(); ++i) {
    if (m[i].role == kUser) {
      const bool with_system =
          has_system && (c.session ? i == start : m[i].content == m[last_user].content);
      Append(out, "[INST] ");
      if (with_system) absl::StrAppend(out, m[0].content, "\n\n");
      absl::StrAppend(out, m[i].content, "[/INST]");
    } else {
      absl::StrAppend(out, " ", AsAbsl(PyStrip(m[i].content)), AsAbsl(c.eos));
    }
  }
  return absl::OkStatus();
}

// bos_token; raise on a system message; '<start_of_turn>' + role ('model' for assistant) +
// '\n' + content | trim + '<end_of_turn>\n'; generation prompt '<start_of_turn>model\n'.
absl::Status RenderGemma(std::span<const ChatMessage> m, const RenderContext& c, std::string* out) {
  if (absl::Status s = RejectSystem(m, c); !s.ok()) return s;
  if (absl::Status s = CheckAlternation(m, 0, c); !s.ok()) return s;
  Append(out, c.bos);
  for (const ChatMessage& msg : m) {
    absl::StrAppend(out, "<start_of_turn>", msg.role == kAssistant ? "model" : "user", "\n",
                    AsAbsl(PyStrip(msg.content)), "<end_of_turn>\n");
  }
  if (c.add_generation_prompt) Append(out, "<start_of_turn>model\n");
  return absl::OkStatus();
}

// As Gemma, with first_user_prefix = system + '\n\n' (system not trimmed) written before the
// trimmed content of the first loop message.
absl::Status RenderGemma3(std::span<const ChatMessage> m, const RenderContext& c,
                          std::string* out) {
  const size_t start = LoopStart(m);
  if (absl::Status s = CheckAlternation(m, start, c); !s.ok()) return s;
  Append(out, c.bos);
  for (size_t i = start; i < m.size(); ++i) {
    absl::StrAppend(out, "<start_of_turn>", m[i].role == kAssistant ? "model" : "user", "\n");
    if (i == start && start == 1) absl::StrAppend(out, m[0].content, "\n\n");
    absl::StrAppend(out, AsAbsl(PyStrip(m[i].content)), "<end_of_turn>\n");
  }
  if (c.add_generation_prompt) Append(out, "<start_of_turn>model\n");
  return absl::OkStatus();
}

// '<|role|>\n' + content + eos_token, then the "\n" that follows the expression in the
// template source; '<|assistant|>' + "\n" after the last message when prompting.
absl::Status RenderZephyr(std::span<const ChatMessage> m, const RenderContext& c,
                          std::string* out) {
  for (const ChatMessage& msg : m) {
    absl::StrAppend(out, "<|", msg.role, "|>\n", msg.content, AsAbsl(c.eos), "\n");
  }
  if (c.add_generation_prompt) Append(out, "<|assistant|>\n");
  return absl::OkStatus();
}

// '<|role|>\n' + content + '<|end|>\n'; then '<|assistant|>\n' when prompting, else
// eos_token (left out in session mode: a live session continues after '<|end|>\n').
absl::Status RenderPhi3(std::span<const ChatMessage> m, const RenderContext& c, std::string* out) {
  if (c.variant->phi3_bos) Append(out, c.bos);
  for (const ChatMessage& msg : m) {
    if (c.variant->skip_empty_system && IsSystem(msg) && msg.content.empty()) continue;
    absl::StrAppend(out, "<|", msg.role, "|>\n", msg.content, "<|end|>\n");
  }
  if (c.add_generation_prompt) {
    Append(out, "<|assistant|>\n");
  } else if (!c.session) {
    Append(out, c.eos);
  }
  return absl::OkStatus();
}

}  // namespace mnemo::engine::chat_internal
