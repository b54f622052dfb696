// Byte-level BPE tokenizer (GGUF `gpt2`), compatible with Hugging Face `tokenizers` and
// llama.cpp:
//   1. the text is split into maximal well-formed UTF-8 runs and single invalid bytes;
//      runs are split into words by the pre-tokenizer (engine/model/pretokenize.h), each
//      invalid byte is a word of its own;
//   2. a word is spelled in GPT-2's byte alphabet, one symbol per byte;
//   3. (ignore_merges) a word that is a token is emitted whole;
//   4. otherwise the adjacent pair with the lowest merge rank is merged (ties: leftmost)
//      until no listed merge applies; each symbol is then a token.
// A byte whose alphabet letter is not in the vocabulary becomes unk (skipped without unk).
#include <queue>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "engine/model/pretokenize.h"
#include "engine/model/tokenizer_impl.h"
#include "engine/model/unicode.h"

namespace mnemo::engine::internal {
namespace {

uint64_t PairKey(TokenId left, TokenId right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

class BpeTokenizer final : public TokenizerBase {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Make(TokenizerData data) {
    std::unique_ptr<BpeTokenizer> t(new BpeTokenizer(std::move(data)));
    if (auto s = t->Build(); !s.ok()) return s;
    return std::unique_ptr<Tokenizer>(std::move(t));
  }

 private:
  struct Merge {
    int32_t rank;
    TokenId result;
  };

  explicit BpeTokenizer(TokenizerData data) : TokenizerBase(std::move(data)) {}

  absl::Status Build();
  void EncodeText(std::string_view text, bool at_start, std::vector<TokenId>* out) const override;
  void EncodeWord(std::string_view word, std::vector<TokenId>* out) const;

  TokenId Find(std::string_view piece) const {
    const auto it = vocab_.find(AsAbsl(piece));
    return it == vocab_.end() ? kNoToken : it->second;
  }

  std::unique_ptr<PreTokenizer> pre_;
  absl::flat_hash_map<std::string, TokenId> vocab_;
  absl::flat_hash_map<uint64_t, Merge> merges_;  // PairKey(left, right) -> rank, result
  std::array<TokenId, 256> byte_tokens_{};       // the token of each byte's letter
};

absl::Status BpeTokenizer::Build() {
  const std::string pre_name = data_.pre.empty() ? "default" : data_.pre;
  auto pre = PreTokenizer::Create(pre_name);
  if (!pre.ok()) return pre.status();
  pre_ = std::move(*pre);

  const size_t n = data_.tokens.size();
  const auto& alphabet = unicode::ByteUnicodeMap::Get();
  token_bytes_.resize(n);
  vocab_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = data_.tokens[i];
    vocab_.try_emplace(text, static_cast<TokenId>(i));  // the first of duplicates wins
    const TokenType t = data_.types[i];
    if (t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown) {
      token_bytes_[i] = text;  // added tokens are stored as plain text
      continue;
    }
    // Unmap the byte alphabet; a letter outside it (not produced by this alphabet, e.g. in
    // a hand-made vocabulary) is kept as its own UTF-8.
    std::string bytes;
    for (size_t pos = 0; pos < text.size();) {
      const unicode::Utf8Char c = unicode::DecodeUtf8(text, pos);
      const int b =
          c.status == unicode::Utf8Status::kValid ? alphabet.DecodeCodePoint(c.code_point) : -1;
      const size_t len = c.length == 0 ? 1 : c.length;
      if (b >= 0) {
        bytes.push_back(static_cast<char>(b));
      } else {
        bytes.append(text, pos, len);
      }
      pos += len;
    }
    token_bytes_[i] = std::move(bytes);
  }
  for (int b = 0; b < 256; ++b) byte_tokens_[b] = Find(alphabet.Encode(static_cast<uint8_t>(b)));

  merges_.reserve(data_.merges.size());
  for (size_t rank = 0; rank < data_.merges.size(); ++rank) {
    const std::string& m = data_.merges[rank];
    const size_t space = m.find(' ', 1);  // the left piece is never empty
    if (space == std::string::npos || space + 1 >= m.size() ||
        m.find(' ', space + 1) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer: merge ", rank, " is \"", m,
                                                     "\", not two pieces separated by a space"));
    }
    const std::string_view left = std::string_view(m).substr(0, space);
    const std::string_view right = std::string_view(m).substr(space + 1);
    const TokenId l = Find(left), r = Find(right);
    if (l == kNoToken || r == kNoToken) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer: merge ", rank, " (\"", m,
                                                     "\") names unknown piece \"",
                                                     AsAbsl(l == kNoToken ? left : right), "\""));
    }
    const std::string merged = absl::StrCat(AsAbsl(left), AsAbsl(right));
    const TokenId result = Find(merged);
    if (result == kNoToken) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer: merge ", rank, " (\"", m,
                                                     "\") makes \"", merged,
                                                     "\", which is not in the vocabulary"));
    }
    // A repeated merge keeps its first (best) rank.
    merges_.try_emplace(PairKey(l, r), Merge{static_cast<int32_t>(rank), result});
  }
  return absl::OkStatus();
}

void BpeTokenizer::EncodeText(std::string_view text, bool /*at_start*/,
                              std::vector<TokenId>* out) const {
  std::vector<std::string_view> words;
  for (const unicode::Utf8Span& span : unicode::SplitUtf8Runs(text)) {
    const std::string_view part = text.substr(span.begin, span.length);
    if (span.valid) {
      pre_->Split(part, &words);
    } else {
      words.push_back(part);
    }
  }
  for (const std::string_view w : words) EncodeWord(w, out);
}

void BpeTokenizer::EncodeWord(std::string_view word, std::vector<TokenId>* out) const {
  if (data_.ignore_merges) {
    std::string spelled;
    unicode::ByteUnicodeMap::Get().EncodeBytes(word, &spelled);
    if (const TokenId id = Find(spelled); id != kNoToken) {
      out->push_back(id);
      return;
    }
  }
  if (word.size() == 1) {
    const TokenId id = byte_tokens_[static_cast<uint8_t>(word[0])];
    if (id != kNoToken) {
      out->push_back(id);
    } else if (data_.unk != kNoToken) {
      out->push_back(data_.unk);
    }
    return;
  }

  // One symbol per byte in a doubly linked list; a merged-away symbol has id kMerged.
  // A byte without a token has id kNoToken and never merges.
  constexpr TokenId kMerged = -2;
  struct Symbol {
    TokenId id;
    int prev;
    int next;
  };
  std::vector<Symbol> sym(word.size());
  for (size_t i = 0; i < word.size(); ++i) {
    sym[i] = {byte_tokens_[static_cast<uint8_t>(word[i])], static_cast<int>(i) - 1,
              i + 1 < word.size() ? static_cast<int>(i) + 1 : -1};
  }

  struct Candidate {
    int32_t rank;
    int left;
    TokenId left_id;
    TokenId right_id;
    TokenId result;
  };
  // Lowest rank first; among equal ranks (the same merge twice), the leftmost.
  const auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> queue(later);
  const auto try_add = [&](int left) {
    if (left < 0 || sym[left].next < 0) return;
    const TokenId l = sym[left].id, r = sym[sym[left].next].id;
    if (l < 0 || r < 0) return;
    const auto it = merges_.find(PairKey(l, r));
    if (it != merges_.end()) queue.push({it->second.rank, left, l, r, it->second.result});
  };
  for (int i = 0; i + 1 < static_cast<int>(sym.size()); ++i) try_add(i);

  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& l = sym[c.left];
    // Stale entry: the left symbol changed or was merged away, or its right neighbour did.
    if (l.id != c.left_id || l.next < 0 || sym[l.next].id != c.right_id) continue;
    Symbol& r = sym[l.next];
    l.id = c.result;
    r.id = kMerged;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = c.left;
    try_add(l.prev);
    try_add(c.left);
  }

  for (int i = 0; i >= 0; i = sym[i].next) {
    if (sym[i].id >= 0) {
      out->push_back(sym[i].id);
    } else if (data_.unk != kNoToken) {
      out->push_back(data_.unk);
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateBpeTokenizer(TokenizerData data) {
  return BpeTokenizer::Make(std::move(data));
}

}  // namespace mnemo::engine::internal
