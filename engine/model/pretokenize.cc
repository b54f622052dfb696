#include "engine/model/pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"

namespace mnemo::engine {
namespace {

// `\s` of the reference tokenizers (Oniguruma, Rust) is Unicode's White_Space property,
// spelled out here as a class body (used inside [...]). PCRE2's UCP `\s` is not quite it: it
// also matches U+180E MONGOLIAN VOWEL SEPARATOR (through `\h`), which left White_Space in
// Unicode 6.3.
#define MNEMO_SP                                                                   \
  R"(\t-\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F})" \
  R"(\x{3000})"

// GPT-2 (tiktoken r50k): contractions, optional space + letters / numbers / other symbols,
// whitespace not followed by non-whitespace, remaining whitespace.
constexpr const char* kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^)" MNEMO_SP R"(\p{L}\p{N}]+)"
    R"(|[)" MNEMO_SP R"(]+(?![^)" MNEMO_SP R"(])|[)" MNEMO_SP R"(]+)";

// Llama 3 (tiktoken cl100k-style): case-insensitive contractions, a letter run with at most
// one leading non-letter/non-digit (not a newline), 1-3 digits, punctuation with trailing
// newlines, newline runs, whitespace.
#define MNEMO_CL100K(DIGITS)                                                             \
  R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|)" DIGITS R"(| ?[^)" MNEMO_SP \
  R"(\p{L}\p{N}]+[\r\n]*|[)" MNEMO_SP R"(]*[\r\n]+|[)" MNEMO_SP R"(]+(?![^)" MNEMO_SP    \
  R"(])|[)" MNEMO_SP R"(]+)"

constexpr const char* kLlama3Regex = MNEMO_CL100K(R"(\p{N}{1,3})");
constexpr const char* kQwen2Regex = MNEMO_CL100K(R"(\p{N})");
constexpr const char* kDigitRegex = R"(\p{N})";

#undef MNEMO_CL100K
#undef MNEMO_SP

struct Alias {
  std::string_view name;
  std::string_view family;
};

constexpr std::array<Alias, 11> kAliases = {{
    {"default", "gpt2"},
    {"gpt2", "gpt2"},
    {"mpt", "gpt2"},
    {"olmo", "gpt2"},
    {"llama3", "llama3"},
    {"llama-bpe", "llama3"},
    {"qwen2", "qwen2"},
    {"stablelm2", "qwen2"},
    {"smollm", "smollm"},
    {"starcoder", "smollm"},
    {"refact", "smollm"},
}};

std::vector<const char*> StagesOf(std::string_view family) {
  if (family == "gpt2") return {kGpt2Regex};
  if (family == "llama3") return {kLlama3Regex};
  if (family == "qwen2") return {kQwen2Regex};
  if (family == "smollm") return {kDigitRegex, kGpt2Regex};
  return {};
}

}  // namespace

struct PreTokenizer::Pattern {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Pattern() {
    if (code != nullptr) pcre2_code_free(code);
  }
};

PreTokenizer::~PreTokenizer() = default;

std::string PreTokenizer::SupportedNames() {
  std::string names;
  for (const Alias& a : kAliases) {
    if (!names.empty()) names += ", ";
    names += a.name;
  }
  return names;
}

std::string_view PreTokenizer::Family(std::string_view name) {
  for (const Alias& a : kAliases) {
    if (a.name == name) return a.family;
  }
  return {};
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(std::string_view name) {
  const std::string_view family = Family(name);
  if (family.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported BPE pre-tokenizer \"", AsAbsl(name),
                     "\" (tokenizer.ggml.pre); supported: ", SupportedNames()));
  }
  std::unique_ptr<PreTokenizer> pre(new PreTokenizer());
  for (const char* regex : StagesOf(family)) {
    int err = 0;
    PCRE2_SIZE err_offset = 0;
    auto pattern = std::make_unique<Pattern>();
    pattern->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(regex), PCRE2_ZERO_TERMINATED,
                                  PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
    if (pattern->code == nullptr) {
      std::array<PCRE2_UCHAR, 256> msg{};
      pcre2_get_error_message(err, msg.data(), msg.size());
      return absl::InternalError(absl::StrCat("pre-tokenizer ", AsAbsl(family),
                                              ": regex does not compile at offset ", err_offset,
                                              ": ", reinterpret_cast<const char*>(msg.data())));
    }
    pattern->jit = pcre2_jit_compile(pattern->code, PCRE2_JIT_COMPLETE) == 0;
    pre->stages_.push_back(std::move(pattern));
  }
  return pre;
}

namespace {

// Finds the next match of `code` in `text` at or after `start`. Returns false at the end
// or on an engine error (then `*error` is set).
bool NextMatch(const pcre2_code* code, bool jit, std::string_view text, size_t start,
               pcre2_match_data* md, size_t* begin, size_t* end, bool* error) {
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT && jit) {
    // The interpreter keeps its backtracking state on the heap: retry without JIT.
    rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                     nullptr);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    *error = true;
    return false;
  }
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
  *begin = ov[0];
  *end = ov[1];
  return true;
}

// Length in bytes of the UTF-8 character starting with byte `b` (valid input assumed).
size_t CharLen(char b) {
  const auto u = static_cast<uint8_t>(b);
  return u < 0x80 ? 1 : u < 0xE0 ? 2 : u < 0xF0 ? 3 : 4;
}

}  // namespace

void PreTokenizer::Split(std::string_view text, std::vector<std::string_view>* out) const {
  if (text.empty()) return;
  std::vector<std::string_view> pieces{text};
  std::vector<std::string_view> next;
  for (const auto& stage : stages_) {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(stage->code, nullptr);
    next.clear();
    for (const std::string_view piece : pieces) {
      size_t last = 0;  // end of what has been emitted
      size_t pos = 0;   // where to search next
      bool error = false;
      size_t b = 0, e = 0;
      while (pos < piece.size() &&
             NextMatch(stage->code, stage->jit, piece, pos, md, &b, &e, &error)) {
        if (b > last) next.push_back(piece.substr(last, b - last));
        if (e > b) {
          next.push_back(piece.substr(b, e - b));
          last = e;
          pos = e;
        } else if (b < piece.size()) {
          pos = b + CharLen(piece[b]);
        } else {
          break;  // an empty match: step over one character
        }
      }
      (void)error;  // on an engine error the remainder stays one piece, below
      if (last < piece.size()) next.push_back(piece.substr(last));
    }
    pcre2_match_data_free(md);
    pieces.swap(next);
  }
  out->insert(out->end(), pieces.begin(), pieces.end());
}

}  // namespace mnemo::engine
