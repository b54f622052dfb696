// Tokenizers: SentencePiece-style (GGUF `tokenizer.ggml.model = llama`) and byte-level BPE
// (`gpt2`, with the pre-tokenizer named by `tokenizer.ggml.pre`), and a streaming
// detokenizer that never emits a partial UTF-8 sequence.
//
// TokenizerData is the plain description both model formats load into (GGUF metadata or a
// Hugging Face tokenizer.json); Tokenizer is built from it once and is then immutable and
// safe to use from any number of threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace mnemo::engine {

class GgufFile;

using TokenId = int32_t;
inline constexpr TokenId kNoToken = -1;

enum class TokenizerKind : uint8_t {
  kSpm,  // SentencePiece: scores, byte fallback <0xNN>, "▁" for spaces
  kBpe,  // byte-level BPE: merge ranks over GPT-2's byte-to-unicode alphabet
};

// GGUF token types (tokenizer.ggml.token_type), also used for tokenizer.json added tokens.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct TokenizerData {
  TokenizerKind kind = TokenizerKind::kSpm;
  std::string model_name;  // tokenizer.ggml.model: "llama", "gpt2"
  std::string pre;         // tokenizer.ggml.pre: "default", "llama-bpe", "qwen2", "smollm", ...
  std::vector<std::string> tokens;  // id -> piece as stored (SPM "▁" / BPE byte-unicode)
  std::vector<float> scores;        // SPM only (may be empty for BPE)
  std::vector<TokenType> types;     // same length as tokens
  std::vector<std::string> merges;  // BPE only: "left right", rank = index
  TokenId bos = kNoToken;
  TokenId eos = kNoToken;
  TokenId eot = kNoToken;  // end of turn (e.g. <|im_end|>, <|eot_id|>), if the model has one
  TokenId unk = kNoToken;
  TokenId pad = kNoToken;
  TokenId sep = kNoToken;
  std::vector<TokenId> eog;  // every end-of-generation token (eos, eot, ...), deduplicated
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = false;  // SPM: prepend "▁" to the text (SentencePiece default)
  std::string chat_template;      // tokenizer.chat_template (Jinja source), may be empty
};

// Reads tokenizer.* metadata. InvalidArgument naming the key when it is missing, of the
// wrong type, or inconsistent (lengths differ, a special id out of range, ...).
absl::StatusOr<TokenizerData> TokenizerDataFromGguf(const GgufFile& file);

// Reads a Hugging Face tokenizer.json (+ optional tokenizer_config.json text, which holds
// the chat template and add_bos/eos flags; may be empty). Supports the byte-level BPE
// models of the llama3, qwen2, smollm and gpt2 families and SentencePiece-style BPE with
// byte fallback (llama 2, mistral); anything else is InvalidArgument naming what it found.
absl::StatusOr<TokenizerData> TokenizerDataFromHfJson(std::string_view tokenizer_json,
                                                      std::string_view tokenizer_config_json);

struct EncodeOptions {
  // Prepend BOS / append EOS. nullopt: follow the model (TokenizerData::add_bos/add_eos).
  std::optional<bool> add_bos;
  std::optional<bool> add_eos;
  // Recognise control and user-defined tokens written in the text ("<|im_start|>").
  // When false they are tokenized as plain text.
  bool parse_special = false;
};

class Tokenizer {
 public:
  // Builds lookup tables. InvalidArgument if the data is inconsistent (e.g. a BPE merge
  // names an unknown piece, an SPM vocabulary lacks byte-fallback tokens it needs).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(TokenizerData data);
  virtual ~Tokenizer() = default;

  // Any byte string is accepted (invalid UTF-8 is encoded through byte fallback / byte
  // tokens, never dropped).
  virtual std::vector<TokenId> Encode(std::string_view text, const EncodeOptions& opts) const = 0;

  // The bytes token `id` stands for ("▁" becomes " ", <0x0A> becomes "\n", BPE bytes are
  // unmapped). Control tokens decode to "" unless `render_special`. Out-of-range ids decode
  // to "". The bytes of one token may be a partial UTF-8 sequence.
  virtual std::string TokenBytes(TokenId id, bool render_special = false) const = 0;

  // Concatenated TokenBytes, with SPM's leading-space rule: the space of the first piece
  // is dropped when add_space_prefix is set and `strip_leading_space` is true.
  std::string Decode(std::span<const TokenId> ids, bool render_special = false) const;

  const TokenizerData& data() const { return data_; }
  int vocab_size() const { return static_cast<int>(data_.tokens.size()); }
  bool IsEog(TokenId id) const;
  bool IsControl(TokenId id) const;

 protected:
  explicit Tokenizer(TokenizerData data) : data_(std::move(data)) {}
  TokenizerData data_;
};

// Turns a stream of token ids into text, emitting only complete UTF-8 sequences: bytes of
// a sequence split across tokens are held until it completes. Invalid bytes are emitted as
// U+FFFD once it is clear they cannot complete. Not thread-safe (one per stream).
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer, bool render_special = false);
  // Text that became complete with this token (possibly empty).
  std::string Push(TokenId id);
  // Whatever is held back (incomplete trailing bytes become U+FFFD).
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool render_special_;
  bool first_ = true;
  std::string pending_;
};

}  // namespace mnemo::engine
