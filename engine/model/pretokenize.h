// Pre-tokenizers of byte-level BPE models: a sequence of regular expressions (PCRE2, UTF
// and Unicode-property mode, JIT-compiled where available) that split text into the words
// BPE merges within. Each stage splits every piece of the previous stage: matches and the
// gaps between them both become pieces (Hugging Face's "Isolated" split), so the pieces
// always cover the text exactly, in order.
//
// Supported names (tokenizer.ggml.pre), by family:
//   gpt2    "default", "gpt2", "mpt", "olmo"   GPT-2's regex
//   llama3  "llama3", "llama-bpe"              digits in groups of 1-3, case-insensitive
//                                               contractions, newline runs kept apart
//   qwen2   "qwen2", "stablelm2"               as llama3 but single digits
//   smollm  "smollm", "starcoder", "refact"    every digit alone (\p{N}), then GPT-2's regex
// "default" is mapped to GPT-2's regex (llama.cpp's "default" is a legacy mix that no
// current converter writes).
//
// `\s` is Unicode's White_Space property, as in the reference tokenizers (PCRE2's own `\s`
// also matches U+180E, so the patterns spell the property out).
//
// Thread-safety: immutable after Create; Split may run on any number of threads.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace mnemo::engine {

class PreTokenizer {
 public:
  // InvalidArgument naming `name` and the supported names when `name` is unknown.
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(std::string_view name);
  // "default, gpt2, ..." for error messages.
  static std::string SupportedNames();
  // The canonical family name ("gpt2", "llama3", "qwen2", "smollm") of a supported name,
  // or "" if unknown.
  static std::string_view Family(std::string_view name);

  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Appends the pieces of `text` to `out` (views into `text`). Precondition: `text` is
  // well-formed UTF-8 (callers split invalid bytes off first; see unicode::SplitUtf8Runs).
  // If the regex engine fails on some input (a resource limit), the unsplit remainder is
  // kept as one piece: text is never dropped.
  void Split(std::string_view text, std::vector<std::string_view>* out) const;

 private:
  struct Pattern;
  PreTokenizer() = default;
  std::vector<std::unique_ptr<Pattern>> stages_;
};

}  // namespace mnemo::engine
