#include "engine/model/unicode.h"

namespace mnemo::engine::unicode {

Utf8Char DecodeUtf8(std::string_view text, size_t pos) {
  const auto at = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t b0 = at(pos);
  if (b0 < 0x80) return {Utf8Status::kValid, b0, 1};

  // Table 3-7 of the Unicode standard: the lead byte fixes the length and the range of
  // the second byte; later bytes are plain continuation bytes 80..BF.
  size_t need = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  char32_t cp = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;  // no overlongs
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {Utf8Status::kInvalid, 0, 1};  // 80..C1, F5..FF never start a sequence
  }

  size_t i = 1;
  for (; i < need; ++i) {
    if (pos + i >= text.size()) return {Utf8Status::kIncomplete, 0, i};
    const uint8_t b = at(pos + i);
    const uint8_t min = (i == 1) ? lo : 0x80;
    const uint8_t max = (i == 1) ? hi : 0xBF;
    if (b < min || b > max) return {Utf8Status::kInvalid, 0, i};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {Utf8Status::kValid, cp, need};
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string EncodeUtf8(char32_t cp) {
  std::string s;
  AppendUtf8(cp, &s);
  return s;
}

bool IsValidUtf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Char c = DecodeUtf8(text, pos);
    if (c.status != Utf8Status::kValid) return false;
    pos += c.length;
  }
  return true;
}

std::vector<Utf8Span> SplitUtf8Runs(std::string_view text) {
  std::vector<Utf8Span> spans;
  size_t run_begin = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const Utf8Char c = DecodeUtf8(text, pos);
    if (c.status == Utf8Status::kValid) {
      pos += c.length;
      continue;
    }
    if (pos > run_begin) spans.push_back({run_begin, pos - run_begin, true});
    // Every byte of an ill-formed or truncated sequence is its own invalid span: none of
    // them can be part of a character, and byte-sized pieces keep encoding lossless.
    const size_t n = c.length == 0 ? 1 : c.length;
    for (size_t i = 0; i < n; ++i) spans.push_back({pos + i, 1, false});
    pos += n;
    run_begin = pos;
  }
  if (pos > run_begin) spans.push_back({run_begin, pos - run_begin, true});
  return spans;
}

std::string SanitizeUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const Utf8Char c = DecodeUtf8(text, pos);
    if (c.status == Utf8Status::kValid) {
      out.append(text.substr(pos, c.length));
    } else {
      out.append(kReplacementUtf8);
    }
    pos += c.length == 0 ? 1 : c.length;
  }
  return out;
}

const ByteUnicodeMap& ByteUnicodeMap::Get() {
  static const ByteUnicodeMap* map = new ByteUnicodeMap();
  return *map;
}

ByteUnicodeMap::ByteUnicodeMap() {
  cp_to_byte_.fill(-1);
  const auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = printable(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(next++);
    byte_to_utf8_[b] = EncodeUtf8(cp);
    cp_to_byte_[cp] = static_cast<int16_t>(b);
  }
}

void ByteUnicodeMap::EncodeBytes(std::string_view bytes, std::string* out) const {
  for (const char ch : bytes) out->append(byte_to_utf8_[static_cast<uint8_t>(ch)]);
}

int ByteUnicodeMap::DecodeCodePoint(char32_t cp) const {
  return cp < cp_to_byte_.size() ? cp_to_byte_[cp] : -1;
}

}  // namespace mnemo::engine::unicode
