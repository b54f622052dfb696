// Chat templates: recognise the family of a model's `tokenizer.chat_template` (Jinja source)
// and render message lists exactly as that template does under Hugging Face transformers
// (jinja2 with trim_blocks and lstrip_blocks), without a Jinja engine: one small renderer per
// family. docs/chat-templates.md lists the families, the detection rules and how each family
// behaves when a live session appends turns (DESIGN.md §2 step 3).
//
// BOS: families whose template writes `bos_token` (renders_bos()) put the BOS text into the
// rendered string; such text must be tokenized with special tokens recognised and WITHOUT the
// tokenizer adding another BOS (EncodeOptions{.add_bos = false, .parse_special = true}). The
// text of RenderAppend() is never at the start of a sequence: tokenize it without BOS too.
//
// Thread-safety: a ChatTemplate is an immutable value after construction (copyable); its
// const methods may be called from any number of threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace mnemo::engine {

enum class ChatTemplateFamily : uint8_t {
  kUnknown,
  // <|im_start|>role\n...<|im_end|>\n (SmolLM2, Qwen2/2.5, OpenHermes, ...), optionally with
  // a default system prompt injected when messages[0] is not a system message.
  kChatMl,
  // Llama 3 / 3.0: [bos]<|start_header_id|>role<|end_header_id|>\n\n trim(content)<|eot_id|>.
  kLlama3,
  // Llama 3.1 / 3.2 / 3.3 (no tools): Llama 3 plus an always-present system header with
  // "Cutting Knowledge Date: December 2023\nToday Date: <date>\n\n" before the system prompt.
  kLlama31,
  // Llama 2 chat: <s>[INST] <<SYS>>\n...\n<</SYS>>\n\n user [/INST] assistant </s>.
  kLlama2,
  // Mistral Instruct v0.1 / v0.2 / Mixtral, original templates: [INST] user [/INST]answer</s>,
  // no system message, strictly alternating.
  kMistral,
  // Mistral Instruct v0.1 / v0.2 as updated in 2024: " [INST] sys\n\nuser [/INST] answer</s>",
  // optional system prompt folded into the FIRST user turn.
  kMistralSystemFirst,
  // Mistral Instruct v0.3 ("v3" tokenizer): [INST] user[/INST] answer</s>, optional system
  // prompt folded into the LAST user turn.
  kMistralV3,
  // Gemma / Gemma 2: <start_of_turn>user|model\n trim(content)<end_of_turn>\n; rejects system.
  kGemma,
  // Gemma 3: like Gemma, with the system prompt folded into the first user turn.
  kGemma3,
  // Zephyr / TinyLlama chat: <|role|>\ncontent</s>\n.
  kZephyr,
  // Phi-3 / Phi-3.5: <|role|>\ncontent<|end|>\n, eos after the last turn when no
  // generation prompt is added.
  kPhi3,
};

// "unknown", "chatml", "llama3", "llama3.1", "llama2", "mistral", "mistral-system-first",
// "mistral-v3", "gemma", "gemma3", "zephyr", "phi3".
std::string_view ChatTemplateFamilyName(ChatTemplateFamily family);
// The family named by ChatTemplateFamilyName(), or nullopt (kUnknown is never returned).
std::optional<ChatTemplateFamily> ChatTemplateFamilyFromName(std::string_view name);

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// Details of one template beyond its family, read from the source by Detect(). The defaults
// are those of each family's reference template (what FromFamily() uses).
struct ChatTemplateVariant {
  // kChatMl: the system prompt the template injects before the first message when
  // messages[0] is not a system message (SmolLM2, Qwen2); nullopt when it injects none.
  std::optional<std::string> default_system;
  // kLlama31: the "Today Date:" text. When date_from_clock is set (the template calls
  // strftime_now, as Llama 3.2's does and as transformers defines it), Render() writes the
  // local date ("%d %b %Y") at the time of the call instead.
  std::string date_string = "26 Jul 2024";
  bool date_from_clock = false;
  // kMistral: "</s> " instead of "</s>" after each answer (Mistral-7B-Instruct-v0.1).
  bool space_after_eos = false;
  // kPhi3: the template starts with bos_token / drops empty system messages (Phi-3.5).
  bool phi3_bos = false;
  bool skip_empty_system = false;
};

class ChatTemplate {
 public:
  // Recognises the family from characteristic substrings of the Jinja source (see
  // docs/chat-templates.md) and reads the variant details. An empty or unrecognised source,
  // or a recognised family in a variant mnemo cannot render faithfully (Qwen3-style <think>
  // handling, Mistral v7 [SYSTEM_PROMPT], ...), gives kUnknown. A source that is exactly a
  // family name ("chatml", "llama3", ...) selects that family with default details.
  // bos_text / eos_text: the texts of the model's BOS and EOS tokens (Jinja's bos_token /
  // eos_token); empty when the model has none.
  static ChatTemplate Detect(std::string_view jinja_source, std::string bos_text,
                             std::string eos_text);
  static ChatTemplate FromFamily(ChatTemplateFamily family, std::string bos_text,
                                 std::string eos_text, ChatTemplateVariant variant = {});

  ChatTemplateFamily family() const { return family_; }
  const ChatTemplateVariant& variant() const { return variant_; }
  const std::string& bos_text() const { return bos_text_; }
  const std::string& eos_text() const { return eos_text_; }

  // True when Render() writes the BOS text at the start of the conversation (the template
  // uses bos_token and the BOS text is not empty): the tokenizer must not add BOS again.
  bool renders_bos() const;

  // How a live session completes an assistant turn. A reply is generated after
  // Render(..., add_generation_prompt=true); the template then writes the assistant message
  // as generation_prompt() + assistant_content_prefix() + content + assistant_end(), e.g.
  // ChatML "<|im_start|>assistant\n" + "" + content + "<|im_end|>\n" and Llama 2
  // "" + " " + content + " </s>". A session whose reply stopped at an end-of-generation
  // token appends what follows that token's text in assistant_end() ("\n" for ChatML).
  std::string generation_prompt() const;
  std::string assistant_content_prefix() const;
  std::string assistant_end() const;

  // Renders the whole conversation as the model's template does. InvalidArgument (naming
  // the message index where one is at fault) when: the family is kUnknown; `messages` is
  // empty; a role is not system/user/assistant; a content is not valid UTF-8; the family
  // rejects a system message (kMistral, kGemma) or one that is not messages[0] (the
  // alternating families); the family requires user/assistant alternation after the
  // optional system message (llama2, mistral*, gemma*) and it is broken.
  absl::StatusOr<std::string> Render(std::span<const ChatMessage> messages,
                                     bool add_generation_prompt) const;

  // The text a live session appends when messages[num_prior..] are new: its history is the
  // rendering of messages[0, num_prior) (a first Render() with the generation prompt, then
  // each reply completed as described above), and the result makes it the rendering of all
  // of `messages`. For families whose renderings extend each other as byte prefixes this is
  // exactly Render(messages)[Render(prior).size()..]. Where a template would rewrite earlier
  // turns, the session's tokens stay the truth and only the new turns are rendered
  // (docs/chat-templates.md): kMistralV3 keeps the system prompt in the first user turn
  // instead of moving it to the last one; kPhi3 leaves out the eos that the template writes
  // after the last turn of a conversation without a generation prompt.
  // InvalidArgument as for Render(), or when num_prior > messages.size().
  absl::StatusOr<std::string> RenderAppend(std::span<const ChatMessage> messages, size_t num_prior,
                                           bool add_generation_prompt) const;

 private:
  ChatTemplate(ChatTemplateFamily family, std::string bos_text, std::string eos_text,
               ChatTemplateVariant variant);

  // `session`: render with the live-session conventions of RenderAppend().
  absl::StatusOr<std::string> RenderImpl(std::span<const ChatMessage> messages,
                                         bool add_generation_prompt, bool session) const;

  ChatTemplateFamily family_ = ChatTemplateFamily::kUnknown;
  std::string bos_text_;
  std::string eos_text_;
  ChatTemplateVariant variant_;
};

}  // namespace mnemo::engine
