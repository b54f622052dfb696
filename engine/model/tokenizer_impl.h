// Internal to the tokenizer implementation (tokenizer*.cc): the shared base of the
// SentencePiece-style and byte-level BPE tokenizers. Not part of the engine's API.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/model/tokenizer.h"

namespace mnemo::engine::internal {

// Finds control and user-defined token texts in a string: at each position the longest
// token text that starts there wins, scanning left to right.
class SpecialTokenMatcher {
 public:
  explicit SpecialTokenMatcher(const TokenizerData& data);
  bool empty() const { return count_ == 0; }

  struct Fragment {
    std::string_view text;     // raw text (when token == kNoToken)
    TokenId token = kNoToken;  // a matched special token
  };
  // Splits `text` into raw-text fragments (never empty) and special tokens, in order.
  std::vector<Fragment> Split(std::string_view text) const;

 private:
  // By first byte: (text, id), longest first.
  std::array<std::vector<std::pair<std::string, TokenId>>, 256> by_first_byte_;
  size_t count_ = 0;
};

// Encode (special-token splitting, BOS/EOS) and TokenBytes shared by both kinds; the kinds
// implement EncodeText for one run of plain text and fill token_bytes_.
class TokenizerBase : public Tokenizer {
 public:
  std::vector<TokenId> Encode(std::string_view text, const EncodeOptions& opts) const final;
  std::string TokenBytes(TokenId id, bool render_special) const final;

 protected:
  explicit TokenizerBase(TokenizerData data);

  // Appends the tokens of `text` (non-empty plain text). `at_start` is true for the first
  // fragment and for one that follows a special token (where SPM prepends its space).
  virtual void EncodeText(std::string_view text, bool at_start,
                          std::vector<TokenId>* out) const = 0;

  // Bytes each token decodes to when rendered (control tokens: their text); filled by the
  // kind's Create.
  std::vector<std::string> token_bytes_;
  SpecialTokenMatcher special_;
};

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateSpmTokenizer(TokenizerData data);
absl::StatusOr<std::unique_ptr<Tokenizer>> CreateBpeTokenizer(TokenizerData data);

// Tokens the text of which marks the end of a turn in common chat formats, most specific
// first; used to find `eot` and `eog` when the metadata does not list them.
inline constexpr std::array<std::string_view, 10> kEndOfTurnTexts = {
    "<|eot_id|>",      "<|im_end|>",    "<end_of_turn>", "<|end|>",    "<|eom_id|>",
    "<|end_of_text|>", "<|endoftext|>", "<EOT>",         "<|return|>", "<｜end▁of▁sentence｜>",
};

// Fills data->eot (if unset) and data->eog from eos, eot and the control tokens named in
// kEndOfTurnTexts; eog is deduplicated and sorted.
void FillEndOfGeneration(TokenizerData* data);

}  // namespace mnemo::engine::internal
