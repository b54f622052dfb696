// SentencePiece-style tokenizer (GGUF `llama`), compatible with llama.cpp and with
// SentencePiece's BPE model:
//   1. the text gets a leading space (add_space_prefix), then every " " becomes "▁";
//   2. it is split into characters (an invalid byte is a one-byte symbol);
//   3. adjacent symbols are merged, highest-scoring resulting piece first (ties: leftmost),
//      while the concatenation is a piece of the vocabulary;
//   4. each final symbol is its piece, or its bytes as <0xNN> tokens (byte fallback), or
//      unk if the vocabulary has no byte tokens.
// Only normal (and undefined) pieces take part in merging, as in SentencePiece: control,
// user-defined, unused, byte and unknown pieces are never formed from plain text.
#include <cstdio>
#include <limits>
#include <queue>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache/base/strings.h"
#include "engine/model/tokenizer_impl.h"
#include "engine/model/unicode.h"

namespace mnemo::engine::internal {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // "▁" U+2581

// Parses "<0xNN>" into its byte value, or -1.
int ParseByteToken(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  int v = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = text[i];
    int d = -1;
    if (c >= '0' && c <= '9') d = c - '0';
    if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

std::string ReplaceAll(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s, pos, hit - pos);
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s, pos);
  return out;
}

class SpmTokenizer final : public TokenizerBase {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Make(TokenizerData data) {
    std::unique_ptr<SpmTokenizer> t(new SpmTokenizer(std::move(data)));
    if (auto s = t->Build(); !s.ok()) return s;
    return std::unique_ptr<Tokenizer>(std::move(t));
  }

 private:
  explicit SpmTokenizer(TokenizerData data) : TokenizerBase(std::move(data)) {}

  absl::Status Build();
  void EncodeText(std::string_view text, bool at_start, std::vector<TokenId>* out) const override;
  void EmitBytes(std::string_view bytes, std::vector<TokenId>* out) const;

  TokenId PieceId(std::string_view piece) const {
    const auto it = pieces_.find(AsAbsl(piece));
    return it == pieces_.end() ? kNoToken : it->second;
  }

  absl::flat_hash_map<std::string, TokenId> pieces_;  // mergeable pieces -> id
  std::array<TokenId, 256> byte_tokens_{};
  size_t max_piece_bytes_ = 0;
};

absl::Status SpmTokenizer::Build() {
  const size_t n = data_.tokens.size();
  if (data_.scores.empty()) data_.scores.assign(n, 0.0f);
  byte_tokens_.fill(kNoToken);
  token_bytes_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = data_.tokens[i];
    const auto id = static_cast<TokenId>(i);
    switch (data_.types[i]) {
      case TokenType::kByte: {
        const int b = ParseByteToken(text);
        if (b < 0) {
          return absl::InvalidArgumentError(absl::StrCat("tokenizer: byte token ", i, " is \"",
                                                         text, "\", not of the form <0xNN>"));
        }
        if (byte_tokens_[b] == kNoToken) byte_tokens_[b] = id;
        token_bytes_[i] = std::string(1, static_cast<char>(b));
        break;
      }
      case TokenType::kNormal:
      case TokenType::kUndefined:
        pieces_.try_emplace(text, id);  // the first of duplicate pieces wins
        max_piece_bytes_ = std::max(max_piece_bytes_, text.size());
        token_bytes_[i] = ReplaceAll(text, kSpace, " ");
        break;
      case TokenType::kUnused:
        token_bytes_[i] = ReplaceAll(text, kSpace, " ");
        break;
      case TokenType::kControl:
      case TokenType::kUserDefined:
      case TokenType::kUnknown:
        token_bytes_[i] = text;
        break;
    }
  }
  if (data_.unk == kNoToken) {
    for (int b = 0; b < 256; ++b) {
      if (byte_tokens_[b] == kNoToken) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "tokenizer: SentencePiece vocabulary has no byte-fallback token <0x%02X> and no "
            "unknown token",
            b));
      }
    }
  }
  return absl::OkStatus();
}

void SpmTokenizer::EmitBytes(std::string_view bytes, std::vector<TokenId>* out) const {
  for (const char c : bytes) {
    if (byte_tokens_[static_cast<uint8_t>(c)] == kNoToken) {
      // Without byte fallback, one unknown character is one unk (Build made sure it exists).
      out->push_back(data_.unk);
      return;
    }
  }
  for (const char c : bytes) out->push_back(byte_tokens_[static_cast<uint8_t>(c)]);
}

void SpmTokenizer::EncodeText(std::string_view text, bool at_start,
                              std::vector<TokenId>* out) const {
  // The text with its dummy prefix, every " " written as "▁".
  std::string s;
  s.reserve(text.size() + 8);
  if (data_.add_space_prefix && at_start) s.append(kSpace);
  for (const char c : text) {
    if (c == ' ') {
      s.append(kSpace);
    } else {
      s.push_back(c);
    }
  }

  // Symbols form a doubly linked list over `s`; a merged-away symbol has length 0.
  struct Symbol {
    size_t begin;
    size_t length;
    int prev;
    int next;
  };
  std::vector<Symbol> sym;
  sym.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    const unicode::Utf8Char c = unicode::DecodeUtf8(s, pos);
    const size_t len = c.status == unicode::Utf8Status::kValid ? c.length : 1;
    const int idx = static_cast<int>(sym.size());
    sym.push_back({pos, len, idx - 1, -1});
    if (idx > 0) sym[idx - 1].next = idx;
    pos += len;
  }

  struct Bigram {
    float score;
    int left;
    int right;
    size_t length;
  };
  // Highest score first; among equal scores, the leftmost.
  const auto lower = [](const Bigram& a, const Bigram& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(lower)> queue(lower);
  const auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const size_t len = sym[left].length + sym[right].length;
    if (len > max_piece_bytes_) return;
    const TokenId id = PieceId(std::string_view(s).substr(sym[left].begin, len));
    if (id == kNoToken) return;
    queue.push({data_.scores[id], left, right, len});
  };
  for (int i = 1; i < static_cast<int>(sym.size()); ++i) try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = sym[b.left];
    Symbol& r = sym[b.right];
    // Stale entry: one side was merged away or grew since it was queued.
    if (l.length == 0 || r.length == 0 || l.length + r.length != b.length) continue;
    l.length += r.length;
    r.length = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }

  for (int i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) {
    const std::string_view piece = std::string_view(s).substr(sym[i].begin, sym[i].length);
    const TokenId id = PieceId(piece);
    if (id != kNoToken) {
      out->push_back(id);
    } else {
      EmitBytes(piece, out);
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateSpmTokenizer(TokenizerData data) {
  return SpmTokenizer::Make(std::move(data));
}

}  // namespace mnemo::engine::internal
