#include "engine/stop.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/model/unicode.h"
#include "kernels/base/check.h"

namespace mnemo::engine {

absl::Status StopParams::Validate() const {
  if (stop_strings.size() > static_cast<size_t>(kMaxStopStrings)) {
    return absl::InvalidArgumentError(absl::StrCat("stop: stop_strings has ", stop_strings.size(),
                                                   " entries, at most ", kMaxStopStrings));
  }
  for (size_t i = 0; i < stop_strings.size(); ++i) {
    if (stop_strings[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("stop: stop_strings[", i, "] is empty"));
    }
    // Valid UTF-8 in, valid UTF-8 out: a match or a held suffix then starts where a
    // character starts, so what Push returns never splits a character.
    if (!unicode::IsValidUtf8(stop_strings[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop: stop_strings[", i, "] is not valid UTF-8"));
    }
  }
  return absl::OkStatus();
}

std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
  }
  return "";
}

StopChecker::StopChecker(StopParams params, std::vector<TokenId> eog_ids)
    : params_(std::move(params)), eog_(std::move(eog_ids)) {
  const absl::Status status = params_.Validate();
  MNEMO_CHECK(status.ok()) << status.ToString();
  std::sort(eog_.begin(), eog_.end());
  if (params_.max_tokens == 0) finish_ = FinishReason::kLength;
}

StopChecker::StopChecker(StopParams params, const Tokenizer& tokenizer)
    : StopChecker(std::move(params), tokenizer.data().eog) {}

size_t StopChecker::HeldSuffixLength(std::string_view text) const {
  size_t best = 0;
  for (const std::string& stop : params_.stop_strings) {
    // Longest first; anything not longer than `best` cannot improve it.
    for (size_t len = std::min(text.size(), stop.size() - 1); len > best; --len) {
      if (text.substr(text.size() - len) == std::string_view(stop).substr(0, len)) {
        best = len;
        break;
      }
    }
  }
  return best;
}

std::string StopChecker::Push(TokenId id, std::string_view delta) {
  if (finish_ != FinishReason::kNone) return "";
  ++num_tokens_;
  if (!params_.ignore_eos && std::binary_search(eog_.begin(), eog_.end(), id)) {
    finish_ = FinishReason::kStop;
    return std::exchange(held_, std::string());
  }

  // Text before held_ was checked already and cannot start a match (it is not a prefix of
  // any stop string), so a match lies within held_ + delta.
  std::string text = std::exchange(held_, std::string());
  text.append(delta);
  size_t first = std::string::npos;
  for (const std::string& stop : params_.stop_strings) {
    const size_t pos = text.find(stop);
    if (pos < first) {
      first = pos;
      matched_stop_ = stop;
    }
  }
  if (first != std::string::npos) {
    finish_ = FinishReason::kStop;
    text.resize(first);
    return text;
  }

  if (params_.max_tokens > 0 && num_tokens_ >= params_.max_tokens) {
    finish_ = FinishReason::kLength;
    return text;
  }
  const size_t held = HeldSuffixLength(text);
  held_.assign(text, text.size() - held, held);
  text.resize(text.size() - held);
  return text;
}

std::string StopChecker::Flush() { return std::exchange(held_, std::string()); }

}  // namespace mnemo::engine
