// TokenizerData from GGUF metadata (the tokenizer.ggml.* keys llama.cpp's converters write).
#include <cmath>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "engine/model/gguf.h"
#include "engine/model/pretokenize.h"
#include "engine/model/tokenizer.h"
#include "engine/model/tokenizer_impl.h"

namespace mnemo::engine {
namespace {

constexpr int64_t kUnsetId = 4294967295;  // UINT32_MAX: llama.cpp's "no token"

absl::Status KeyError(std::string_view key, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("GGUF key ", AsAbsl(key), ": ", AsAbsl(what)));
}

// The array at `key`; nullptr (and OK) if absent and !required.
absl::StatusOr<const GgufValue::Array*> FindArray(const GgufFile& f, std::string_view key,
                                                  bool required) {
  const GgufValue* v = f.Find(key);
  if (v == nullptr) {
    if (required) return KeyError(key, "missing");
    return nullptr;
  }
  const GgufValue::Array* a = v->AsArray();
  if (a == nullptr) {
    return KeyError(key,
                    absl::StrCat("expected an array, found ", AsAbsl(GgufTypeName(v->type()))));
  }
  return a;
}

absl::StatusOr<std::vector<std::string>> StringArray(const GgufFile& f, std::string_view key,
                                                     bool required) {
  auto a = FindArray(f, key, required);
  if (!a.ok()) return a.status();
  std::vector<std::string> out;
  if (*a == nullptr) return out;
  out.reserve((*a)->size());
  for (size_t i = 0; i < (*a)->size(); ++i) {
    const std::string* s = (**a)[i].AsString();
    if (s == nullptr) return KeyError(key, absl::StrCat("element ", i, " is not a string"));
    out.push_back(*s);
  }
  return out;
}

absl::StatusOr<std::string> OptionalString(const GgufFile& f, std::string_view key) {
  const GgufValue* v = f.Find(key);
  if (v == nullptr) return std::string();
  const std::string* s = v->AsString();
  if (s == nullptr) {
    return KeyError(key,
                    absl::StrCat("expected a string, found ", AsAbsl(GgufTypeName(v->type()))));
  }
  return *s;
}

absl::StatusOr<bool> OptionalBool(const GgufFile& f, std::string_view key, bool fallback) {
  const GgufValue* v = f.Find(key);
  if (v == nullptr) return fallback;
  if (auto b = v->AsBool()) return *b;
  if (auto i = v->AsInt(); i && (*i == 0 || *i == 1)) return *i == 1;  // tolerate 0/1 ints
  return KeyError(key, absl::StrCat("expected a bool, found ", AsAbsl(GgufTypeName(v->type()))));
}

absl::StatusOr<TokenId> OptionalId(const GgufFile& f, std::string_view key, size_t n_tokens) {
  const GgufValue* v = f.Find(key);
  if (v == nullptr) return kNoToken;
  const std::optional<int64_t> id = v->AsInt();
  if (!id) {
    return KeyError(
        key, absl::StrCat("expected an integer token id, found ", AsAbsl(GgufTypeName(v->type()))));
  }
  if (*id == kUnsetId || *id == -1) return kNoToken;
  if (*id < 0 || static_cast<uint64_t>(*id) >= n_tokens) {
    return KeyError(key, absl::StrCat("token id ", *id, " is out of range (vocabulary of ",
                                      n_tokens, " tokens)"));
  }
  return static_cast<TokenId>(*id);
}

}  // namespace

absl::StatusOr<TokenizerData> TokenizerDataFromGguf(const GgufFile& file) {
  TokenizerData d;
  constexpr std::string_view kModelKey = "tokenizer.ggml.model";
  const GgufValue* model = file.Find(kModelKey);
  if (model == nullptr) return KeyError(kModelKey, "missing");
  if (model->AsString() == nullptr) return KeyError(kModelKey, "expected a string");
  d.model_name = *model->AsString();
  if (d.model_name == "llama") {
    d.kind = TokenizerKind::kSpm;
  } else if (d.model_name == "gpt2") {
    d.kind = TokenizerKind::kBpe;
  } else {
    return KeyError(kModelKey, absl::StrCat("tokenizer model \"", d.model_name,
                                            "\" is not supported (supported: llama "
                                            "(SentencePiece), gpt2 (byte-level BPE))"));
  }
  const bool spm = d.kind == TokenizerKind::kSpm;

  auto pre = OptionalString(file, "tokenizer.ggml.pre");
  if (!pre.ok()) return pre.status();
  d.pre = pre->empty() ? "default" : *pre;
  if (!spm) {
    const std::string_view family = PreTokenizer::Family(d.pre);
    if (family.empty()) {
      return KeyError("tokenizer.ggml.pre",
                      absl::StrCat("unsupported BPE pre-tokenizer \"", d.pre,
                                   "\"; supported: ", PreTokenizer::SupportedNames()));
    }
    d.ignore_merges = family == "llama3";
  }

  auto tokens = StringArray(file, "tokenizer.ggml.tokens", /*required=*/true);
  if (!tokens.ok()) return tokens.status();
  d.tokens = std::move(*tokens);
  const size_t n = d.tokens.size();
  if (n == 0) return KeyError("tokenizer.ggml.tokens", "empty vocabulary");
  if (n > static_cast<size_t>(INT32_MAX)) return KeyError("tokenizer.ggml.tokens", "too large");

  auto scores = FindArray(file, "tokenizer.ggml.scores", /*required=*/false);
  if (!scores.ok()) return scores.status();
  if (*scores != nullptr) {
    if ((*scores)->size() != n) {
      return KeyError("tokenizer.ggml.scores",
                      absl::StrCat((*scores)->size(), " scores for ", n, " tokens"));
    }
    d.scores.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      const std::optional<double> s = (**scores)[i].AsFloat();
      if (!s || std::isnan(*s)) {
        return KeyError("tokenizer.ggml.scores", absl::StrCat("element ", i, " is not a number"));
      }
      d.scores.push_back(static_cast<float>(*s));
    }
  }

  auto types = FindArray(file, "tokenizer.ggml.token_type", /*required=*/false);
  if (!types.ok()) return types.status();
  if (*types != nullptr) {
    if ((*types)->size() != n) {
      return KeyError("tokenizer.ggml.token_type",
                      absl::StrCat((*types)->size(), " token types for ", n, " tokens"));
    }
    d.types.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      const std::optional<int64_t> t = (**types)[i].AsInt();
      if (!t || *t < 0 || *t > static_cast<int64_t>(TokenType::kByte)) {
        return KeyError("tokenizer.ggml.token_type",
                        absl::StrCat("element ", i, " is not a token type (0..6)"));
      }
      d.types.push_back(static_cast<TokenType>(*t));
    }
  } else {
    d.types.assign(n, TokenType::kNormal);
  }

  auto merges = StringArray(file, "tokenizer.ggml.merges", /*required=*/!spm);
  if (!merges.ok()) return merges.status();
  d.merges = std::move(*merges);

  struct IdKey {
    std::string_view key;
    TokenId* id;
  };
  for (const IdKey& k :
       {IdKey{"tokenizer.ggml.bos_token_id", &d.bos}, IdKey{"tokenizer.ggml.eos_token_id", &d.eos},
        IdKey{"tokenizer.ggml.eot_token_id", &d.eot},
        IdKey{"tokenizer.ggml.unknown_token_id", &d.unk},
        IdKey{"tokenizer.ggml.padding_token_id", &d.pad},
        // llama.cpp writes the misspelt key; accept both spellings.
        IdKey{"tokenizer.ggml.seperator_token_id", &d.sep},
        IdKey{"tokenizer.ggml.separator_token_id", &d.sep}}) {
    auto id = OptionalId(file, k.key, n);
    if (!id.ok()) return id.status();
    if (*id != kNoToken) *k.id = *id;
  }

  // SentencePiece models add BOS and a dummy prefix unless told otherwise; llama.cpp's
  // converters often leave these keys out for them.
  for (const auto& [key, field, fallback] :
       {std::tuple{"tokenizer.ggml.add_bos_token", &d.add_bos, spm && d.bos != kNoToken},
        std::tuple{"tokenizer.ggml.add_eos_token", &d.add_eos, false},
        std::tuple{"tokenizer.ggml.add_space_prefix", &d.add_space_prefix, spm}}) {
    auto b = OptionalBool(file, key, fallback);
    if (!b.ok()) return b.status();
    *field = *b;
  }
  if (d.add_bos && d.bos == kNoToken) {
    return KeyError("tokenizer.ggml.add_bos_token", "set, but there is no BOS token id");
  }
  if (d.add_eos && d.eos == kNoToken) {
    return KeyError("tokenizer.ggml.add_eos_token", "set, but there is no EOS token id");
  }

  auto tmpl = OptionalString(file, "tokenizer.chat_template");
  if (!tmpl.ok()) return tmpl.status();
  d.chat_template = std::move(*tmpl);

  internal::FillEndOfGeneration(&d);
  return d;
}

}  // namespace mnemo::engine
