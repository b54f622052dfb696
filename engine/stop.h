// When generation of one sequence ends, and which of its text may be streamed so far.
//
// StopChecker is fed each generated token with the text that token completed (from
// StreamingDetokenizer::Push) and returns the text that is safe to emit: text that might be
// the start of a stop string is held back until it is clear that it is not, and a stop string
// itself is never emitted, nor anything after it (OpenAI semantics). A typical loop:
//
//   StopChecker stop(params, tokenizer);
//   StreamingDetokenizer detok(tokenizer);
//   while (stop.finish() == FinishReason::kNone) {
//     TokenId id = sampler.Sample(...).id;
//     Emit(stop.Push(id, detok.Push(id)));
//   }
//   // When the loop ends for another reason (context full, cancelled): Emit(stop.Flush()).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/tokenizer.h"

namespace mnemo::engine {

struct StopParams {
  int max_tokens = -1;                    // generated tokens at most; < 0: no limit
  std::vector<std::string> stop_strings;  // non-empty strings; matched across token boundaries
  bool ignore_eos = false;                // when true, end-of-generation tokens do not stop

  // OK, or InvalidArgument naming the field: an empty stop string or one that is not valid
  // UTF-8, more than kMaxStopStrings.
  absl::Status Validate() const;
};

inline constexpr int kMaxStopStrings = 16;

enum class FinishReason : uint8_t {
  kNone,    // still generating
  kStop,    // an end-of-generation token or a stop string
  kLength,  // max_tokens generated
};

// "stop", "length" or "" (kNone): the OpenAI finish_reason strings.
std::string_view FinishReasonName(FinishReason reason);

// Not thread-safe: one per sequence.
class StopChecker {
 public:
  // eog_ids: the end-of-generation tokens (TokenizerData::eog). Precondition:
  // params.Validate().ok() (checked). With max_tokens == 0 it is finished (kLength) at once.
  StopChecker(StopParams params, std::vector<TokenId> eog_ids);
  // The tokenizer's end-of-generation tokens (those Tokenizer::IsEog accepts).
  StopChecker(StopParams params, const Tokenizer& tokenizer);

  // One generated token and the text it completed. Returns the text that may be emitted now.
  // When this token ends generation, the result is final: with a stop string, the text before
  // its first occurrence; with an eog token, everything held (the eog token's own text is
  // dropped); with max_tokens, everything held plus `delta`. After the finish every Push
  // returns "" and changes nothing.
  std::string Push(TokenId id, std::string_view delta);

  // Ends generation for a reason of the caller's: returns the held text (it did not become a
  // stop string) and clears it. finish() is unchanged.
  std::string Flush();

  FinishReason finish() const { return finish_; }
  int64_t num_tokens() const { return num_tokens_; }  // tokens pushed before the finish
  // The stop string that ended generation, or "" if none did.
  const std::string& matched_stop() const { return matched_stop_; }

 private:
  // The length of the longest suffix of `text` that is a proper prefix of a stop string.
  size_t HeldSuffixLength(std::string_view text) const;

  StopParams params_;
  std::vector<TokenId> eog_;  // sorted
  FinishReason finish_ = FinishReason::kNone;
  int64_t num_tokens_ = 0;
  std::string held_;  // emitted nowhere yet: could start a stop string
  std::string matched_stop_;
};

}  // namespace mnemo::engine
