// Shared parts of the tokenizers: validation and dispatch in Create, special-token
// splitting, BOS/EOS, Decode and the streaming detokenizer.
#include "engine/model/tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "engine/model/tokenizer_impl.h"
#include "engine/model/unicode.h"

namespace mnemo::engine {
namespace internal {

SpecialTokenMatcher::SpecialTokenMatcher(const TokenizerData& data) {
  for (size_t i = 0; i < data.tokens.size(); ++i) {
    const TokenType t = data.types[i];
    const std::string& text = data.tokens[i];
    if ((t != TokenType::kControl && t != TokenType::kUserDefined) || text.empty()) continue;
    by_first_byte_[static_cast<uint8_t>(text[0])].emplace_back(text, static_cast<TokenId>(i));
    ++count_;
  }
  for (auto& list : by_first_byte_) {
    // Longest first; equal texts keep the lowest id first (stable).
    std::stable_sort(list.begin(), list.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }
}

std::vector<SpecialTokenMatcher::Fragment> SpecialTokenMatcher::Split(std::string_view text) const {
  std::vector<Fragment> out;
  size_t raw_begin = 0;
  for (size_t pos = 0; pos < text.size();) {
    const auto& candidates = by_first_byte_[static_cast<uint8_t>(text[pos])];
    const std::pair<std::string, TokenId>* hit = nullptr;
    for (const auto& c : candidates) {
      if (text.compare(pos, c.first.size(), c.first) == 0) {
        hit = &c;
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    if (pos > raw_begin) out.push_back({text.substr(raw_begin, pos - raw_begin), kNoToken});
    out.push_back({std::string_view(), hit->second});
    pos += hit->first.size();
    raw_begin = pos;
  }
  if (raw_begin < text.size()) out.push_back({text.substr(raw_begin), kNoToken});
  return out;
}

TokenizerBase::TokenizerBase(TokenizerData data) : Tokenizer(std::move(data)), special_(data_) {}

std::vector<TokenId> TokenizerBase::Encode(std::string_view text, const EncodeOptions& opts) const {
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 2);
  if (opts.add_bos.value_or(data_.add_bos) && data_.bos != kNoToken) out.push_back(data_.bos);
  if (opts.parse_special && !special_.empty()) {
    bool at_start = true;
    for (const auto& f : special_.Split(text)) {
      if (f.token != kNoToken) {
        out.push_back(f.token);
        at_start = true;
      } else {
        EncodeText(f.text, at_start, &out);
        at_start = false;
      }
    }
  } else if (!text.empty()) {
    EncodeText(text, /*at_start=*/true, &out);
  }
  if (opts.add_eos.value_or(data_.add_eos) && data_.eos != kNoToken) out.push_back(data_.eos);
  return out;
}

std::string TokenizerBase::TokenBytes(TokenId id, bool render_special) const {
  if (id < 0 || id >= vocab_size()) return {};
  const TokenType t = data_.types[id];
  if (!render_special && (t == TokenType::kControl || t == TokenType::kUnknown)) return {};
  return token_bytes_[id];
}

void FillEndOfGeneration(TokenizerData* data) {
  const auto find_control = [&](std::string_view text) -> TokenId {
    for (size_t i = 0; i < data->tokens.size(); ++i) {
      if (data->types[i] == TokenType::kControl && data->tokens[i] == text) {
        return static_cast<TokenId>(i);
      }
    }
    return kNoToken;
  };
  if (data->eot == kNoToken) {
    // Only turn markers qualify as end of turn (not <|endoftext|>, an end of document).
    for (std::string_view t : {"<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>", "<EOT>"}) {
      data->eot = find_control(t);
      if (data->eot != kNoToken) break;
    }
  }
  std::vector<TokenId>& eog = data->eog;
  if (data->eos != kNoToken) eog.push_back(data->eos);
  if (data->eot != kNoToken) eog.push_back(data->eot);
  for (std::string_view t : kEndOfTurnTexts) {
    const TokenId id = find_control(t);
    if (id != kNoToken) eog.push_back(id);
  }
  std::sort(eog.begin(), eog.end());
  eog.erase(std::unique(eog.begin(), eog.end()), eog.end());
}

}  // namespace internal

namespace {

absl::Status CheckId(const TokenizerData& d, TokenId id, std::string_view what) {
  if (id == kNoToken || (id >= 0 && static_cast<size_t>(id) < d.tokens.size())) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", AsAbsl(what), " id ", id,
                                                 " is out of range (vocabulary of ",
                                                 d.tokens.size(), " tokens)"));
}

absl::Status Validate(TokenizerData& d) {
  if (d.tokens.empty()) return absl::InvalidArgumentError("tokenizer: empty vocabulary");
  if (d.types.empty()) d.types.assign(d.tokens.size(), TokenType::kNormal);
  if (d.types.size() != d.tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer: ", d.types.size(), " token types for ", d.tokens.size(), " tokens"));
  }
  for (size_t i = 0; i < d.types.size(); ++i) {
    const auto t = static_cast<int32_t>(d.types[i]);
    if (t < 0 || t > static_cast<int32_t>(TokenType::kByte)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer: token ", i, " has unknown type ", t));
    }
  }
  if (!d.scores.empty() && d.scores.size() != d.tokens.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer: ", d.scores.size(), " scores for ", d.tokens.size(), " tokens"));
  }
  for (const auto& [id, what] : {std::pair{d.bos, "BOS"}, std::pair{d.eos, "EOS"},
                                 std::pair{d.eot, "EOT"}, std::pair{d.unk, "unknown-token"},
                                 std::pair{d.pad, "padding"}, std::pair{d.sep, "separator"}}) {
    if (auto s = CheckId(d, id, what); !s.ok()) return s;
  }
  for (TokenId id : d.eog) {
    if (id == kNoToken) return absl::InvalidArgumentError("tokenizer: end-of-generation id -1");
    if (auto s = CheckId(d, id, "end-of-generation"); !s.ok()) return s;
  }
  if (d.add_bos && d.bos == kNoToken) {
    return absl::InvalidArgumentError("tokenizer: add_bos is set but there is no BOS token");
  }
  if (d.add_eos && d.eos == kNoToken) {
    return absl::InvalidArgumentError("tokenizer: add_eos is set but there is no EOS token");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(TokenizerData data) {
  if (auto s = Validate(data); !s.ok()) return s;
  if (data.eog.empty()) {
    internal::FillEndOfGeneration(&data);
  } else {
    // IsEog binary-searches: keep a caller-given list sorted and unique.
    std::sort(data.eog.begin(), data.eog.end());
    data.eog.erase(std::unique(data.eog.begin(), data.eog.end()), data.eog.end());
  }
  switch (data.kind) {
    case TokenizerKind::kSpm:
      return internal::CreateSpmTokenizer(std::move(data));
    case TokenizerKind::kBpe:
      return internal::CreateBpeTokenizer(std::move(data));
  }
  return absl::InvalidArgumentError("tokenizer: unknown kind");
}

std::string Tokenizer::Decode(std::span<const TokenId> ids, bool render_special) const {
  DecodeOptions opts;
  opts.render_special = render_special;
  return Decode(ids, opts);
}

std::string Tokenizer::Decode(std::span<const TokenId> ids, const DecodeOptions& opts) const {
  const bool strip =
      opts.strip_leading_space && data_.kind == TokenizerKind::kSpm && data_.add_space_prefix;
  bool first = true;
  std::string out;
  for (const TokenId id : ids) {
    std::string piece = TokenBytes(id, opts.render_special);
    if (first && !IsControl(id)) {
      if (strip && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
      first = false;
    }
    out += piece;
  }
  return out;
}

bool Tokenizer::IsEog(TokenId id) const {
  return std::binary_search(data_.eog.begin(), data_.eog.end(), id);
}

bool Tokenizer::IsControl(TokenId id) const {
  return id >= 0 && id < vocab_size() && data_.types[id] == TokenType::kControl;
}

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer, bool render_special)
    : tokenizer_(tokenizer) {
  opts_.render_special = render_special;
}

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer, const DecodeOptions& opts)
    : tokenizer_(tokenizer), opts_(opts) {}

std::string StreamingDetokenizer::Push(TokenId id) {
  std::string piece = tokenizer_.TokenBytes(id, opts_.render_special);
  if (first_ && !tokenizer_.IsControl(id)) {
    const TokenizerData& d = tokenizer_.data();
    if (opts_.strip_leading_space && d.kind == TokenizerKind::kSpm && d.add_space_prefix &&
        !piece.empty() && piece[0] == ' ') {
      piece.erase(0, 1);
    }
    first_ = false;
  }
  pending_ += piece;

  // Emit every complete character; replace ill-formed subsequences; keep a valid but
  // incomplete tail for the next token.
  std::string out;
  size_t pos = 0;
  while (pos < pending_.size()) {
    const unicode::Utf8Char c = unicode::DecodeUtf8(pending_, pos);
    if (c.status == unicode::Utf8Status::kIncomplete) break;
    if (c.status == unicode::Utf8Status::kValid) {
      out.append(pending_, pos, c.length);
    } else {
      out.append(unicode::kReplacementUtf8);
    }
    pos += c.length;
  }
  pending_.erase(0, pos);
  return out;
}

std::string StreamingDetokenizer::Flush() {
  std::string out = unicode::SanitizeUtf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace mnemo::engine
