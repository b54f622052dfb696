// The workload of mnemo_multiturn_bench: seeded conversations whose user messages are
// English text cut to an exact token count, and whose replies have drawn lengths.
// Everything is a pure function of (text, tokenizer, seed, salt, index), so every mode of the
// benchmark replays the same conversations. Not thread-safe to build; const use is.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "engine/model/tokenizer.h"

namespace mnemo::bench {

// Words of a text, and user messages of an exact token count cut from them.
class TextSource {
 public:
  // `tokenizer` must outlive the TextSource.
  TextSource(std::vector<std::string> words, const engine::Tokenizer& tokenizer)
      : words_(std::move(words)), tokenizer_(tokenizer) {}

  // The words of the file at `path` (`*used` = path), or of an embedded public-domain
  // paragraph when it cannot be read or has fewer than 200 words (`*used` says so).
  static std::vector<std::string> LoadWords(const std::string& path, std::string* used);

  // `tokens` tokens (as the model encodes the text alone, without BOS) of consecutive words,
  // starting at a sentence start drawn from `rng` and wrapping around the text; cut inside
  // the last word where that keeps the count exact (else it may run over by a word's tokens).
  std::string Draw(std::mt19937_64& rng, int tokens) const;

 private:
  std::vector<engine::TokenId> Encode(const std::string& text) const;
  int Count(const std::string& text) const { return static_cast<int>(Encode(text).size()); }

  std::vector<std::string> words_;
  const engine::Tokenizer& tokenizer_;
};

struct Conversation {
  std::vector<std::string> user;  // one message per turn
  std::vector<int> reply_tokens;  // one count per turn
};

struct ConversationShape {
  int turns = 10;
  int min_user_tokens = 100, max_user_tokens = 300;  // drawn uniformly per turn
  int min_reply_tokens = 32, max_reply_tokens = 64;
};

// Conversation `index` of stream `salt`: a pure function of (text, seed, salt, index, shape).
Conversation MakeConversation(const TextSource& text, uint64_t seed, uint64_t salt, int index,
                              const ConversationShape& shape);

}  // namespace mnemo::bench
