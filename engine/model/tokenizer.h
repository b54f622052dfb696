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
  // BPE only: a pre-tokenized word that is itself a token is emitted whole, without merging
  // (Hugging Face's `ignore_merges`; the llama3 family sets it).
  bool ignore_merges = false;
  TokenId bos = kNoToken;
  TokenId eos = kNoToken;
  TokenId eot = kNoToken;  // end of turn (e.g. <|im_end|>, <|eot_id|>), if the model has one
  TokenId unk = kNoToken;
  TokenId pad = kNoToken;
  TokenId sep = kNoToken;
  std::vector<TokenId> eog;  // every end-of-generation token (eos, eot, ...), deduplicated
  bool add_bos = false;
  bool add_eos = false;
  // SPM: prepend "▁" to the text and after each special token (SentencePiece's dummy
  // prefix). Ignored by BPE.
  bool add_space_prefix = false;
  std::string chat_template;  // tokenizer.chat_template (Jinja source), may be empty
};

// Reads tokenizer.* metadata. InvalidArgument naming the key when it is missing, of the
// wrong type, or inconsistent (lengths differ, a special id out of range, ...).
// tokenizer.ggml.model "llama" -> kSpm (add_bos and add_space_prefix default to true when
// their keys are absent), "gpt2" -> kBpe (pre defaults to "default"; the supported names
// are listed in engine/model/pretokenize.h). Ids stored as 4294967295 (or -1) are unset.
// eot is found by name when absent (<|eot_id|>, <|im_end|>, ...); eog = eos + eot + the
// end-of-turn/-text control tokens the vocabulary has.
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

struct DecodeOptions {
  // Render control (and unknown) tokens as their text; otherwise they decode to "".
  bool render_special = false;
  // SPM with add_space_prefix only: drop the leading space of the first token that is not
  // a control token (the space Encode prepended). Keep it (false) when decoding a
  // continuation, e.g. generated tokens, whose leading space is real text.
  bool strip_leading_space = true;
};

class Tokenizer {
 public:
  // Builds lookup tables. InvalidArgument if the data is inconsistent: lengths of tokens /
  // scores / types differ, a special id is out of range, a BPE merge names an unknown piece
  // or a piece not in the vocabulary, an SPM vocabulary lacks byte-fallback tokens and has no
  // unknown token, the BPE pre-tokenizer is unknown (the message lists the supported ones).
  // An empty `types` means all normal; an empty `eog` is derived (eos, eot, known
  // end-of-turn control tokens).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(TokenizerData data);
  virtual ~Tokenizer() = default;

  // Any byte string is accepted; invalid UTF-8 is never dropped:
  //  - SPM: each byte that is not part of a well-formed character is its own symbol and is
  //    encoded as its byte-fallback token <0xNN> (or unk if the vocabulary has none).
  //  - BPE: the text is split into maximal well-formed runs, which are pre-tokenized, and
  //    single invalid bytes, each its own word, encoded as its byte-level token.
  //  A byte the vocabulary cannot spell at all becomes `unk`; only when there is no unk
  //  either is it skipped.
  // Special tokens are recognised only with opts.parse_special (leftmost, longest first).
  virtual std::vector<TokenId> Encode(std::string_view text, const EncodeOptions& opts) const = 0;

  // The bytes token `id` stands for ("▁" becomes " ", <0x0A> becomes "\n", BPE bytes are
  // unmapped, control and user-defined tokens are their text). Control and unknown tokens
  // decode to "" unless `render_special`. Out-of-range ids decode to "". The bytes of one
  // token may be a partial UTF-8 sequence.
  virtual std::string TokenBytes(TokenId id, bool render_special = false) const = 0;

  // Concatenated TokenBytes (raw bytes: may hold invalid UTF-8 if the ids do), with SPM's
  // leading-space rule (see DecodeOptions). Decode(Encode(s)) == s, with or without
  // BOS/EOS, for any s whose bytes the vocabulary can spell (no unk), except that SPM
  // cannot tell a literal "▁" (U+2581) from a space, and parse_special may turn text into
  // control tokens (which decode to "" without render_special).
  std::string Decode(std::span<const TokenId> ids, bool render_special = false) const;
  std::string Decode(std::span<const TokenId> ids, const DecodeOptions& opts) const;

  const TokenizerData& data() const { return data_; }
  int vocab_size() const { return static_cast<int>(data_.tokens.size()); }
  bool IsEog(TokenId id) const;      // in data().eog
  bool IsControl(TokenId id) const;  // type kControl (false when out of range)

 protected:
  explicit Tokenizer(TokenizerData data) : data_(std::move(data)) {}
  TokenizerData data_;
};

// Turns a stream of token ids into text, emitting only complete UTF-8 sequences: bytes of
// a sequence split across tokens are held until it completes. An ill-formed subsequence is
// emitted as one U+FFFD as soon as it is clear it cannot complete (Unicode's "maximal
// subpart" practice). For well-formed output the concatenation of everything returned
// equals Decode(ids, opts). Not thread-safe (one per stream); `tokenizer` must outlive it.
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tokenizer, bool render_special = false);
  StreamingDetokenizer(const Tokenizer& tokenizer, const DecodeOptions& opts);
  // Text that became complete with this token (possibly empty).
  std::string Push(TokenId id);
  // Whatever is held back (an incomplete trailing sequence becomes U+FFFD); the stream can
  // go on afterwards.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  DecodeOptions opts_;
  bool first_ = true;  // no non-control token seen yet (for the leading-space rule)
  std::string pending_;
};

}  // namespace mnemo::engine
