// UTF-8 helpers for the tokenizers: decoding with a precise account of invalid input,
// splitting a byte string into valid runs and invalid bytes, and GPT-2's byte <-> unicode
// alphabet used by byte-level BPE vocabularies.
//
// All functions are pure and thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mnemo::engine::unicode {

inline constexpr char32_t kReplacementChar = 0xFFFD;
inline constexpr std::string_view kReplacementUtf8 = "\xEF\xBF\xBD";

enum class Utf8Status : uint8_t {
  kValid,       // a complete, well-formed sequence of `length` bytes
  kIncomplete,  // the bytes so far are a valid prefix, but the text ends before the sequence
  kInvalid,     // `length` bytes (>= 1) form an ill-formed subsequence ("maximal subpart")
};

struct Utf8Char {
  Utf8Status status = Utf8Status::kInvalid;
  char32_t code_point = 0;  // meaningful when status == kValid
  size_t length = 0;        // bytes consumed; for kIncomplete, the bytes available
};

// Decodes the sequence that starts at text[pos] (pos < text.size()). Well-formed means
// Unicode's Table 3-7: no overlongs, no surrogates, nothing above U+10FFFF. For kInvalid,
// `length` is the maximal subpart (the longest prefix of a well-formed sequence, at least 1
// byte), which is what one U+FFFD replaces under Unicode's recommended practice.
Utf8Char DecodeUtf8(std::string_view text, size_t pos);

// Appends the UTF-8 encoding of `cp` (precondition: a Unicode scalar value).
void AppendUtf8(char32_t cp, std::string* out);
std::string EncodeUtf8(char32_t cp);

bool IsValidUtf8(std::string_view text);

// A maximal run of well-formed UTF-8, or a single byte that is not part of any well-formed
// sequence (including the bytes of a truncated sequence: each is its own invalid span).
struct Utf8Span {
  size_t begin = 0;
  size_t length = 0;
  bool valid = true;
};
// Splits `text` into valid runs and single invalid bytes, in order, covering every byte.
std::vector<Utf8Span> SplitUtf8Runs(std::string_view text);

// Replaces each ill-formed subsequence with U+FFFD (a truncated sequence at the end too).
std::string SanitizeUtf8(std::string_view text);

// GPT-2's reversible map from bytes to printable code points: the printable Latin-1 bytes
// map to themselves, the other 68 bytes to U+0100.. in byte order. Byte-level BPE
// vocabularies spell every token in this alphabet ("Ġ" is the byte 0x20).
class ByteUnicodeMap {
 public:
  static const ByteUnicodeMap& Get();

  // UTF-8 of the code point that stands for byte `b`.
  const std::string& Encode(uint8_t b) const { return byte_to_utf8_[b]; }
  // Appends the byte-level spelling of `bytes` to `out`.
  void EncodeBytes(std::string_view bytes, std::string* out) const;
  // The byte a code point stands for, or -1 if it is not in the alphabet.
  int DecodeCodePoint(char32_t cp) const;

 private:
  ByteUnicodeMap();
  std::array<std::string, 256> byte_to_utf8_;
  std::array<int16_t, 512> cp_to_byte_;  // the alphabet lies below U+0200
};

}  // namespace mnemo::engine::unicode
