// GgufValue and the GGUF / ggml type tables.
#include <array>
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "engine/model/gguf.h"
#include "engine/model/internal/gguf_format.h"
#include "kernels/base/check.h"

namespace mnemo::engine {
namespace {

using kernels::DType;

// ggml's type ids 0..39 by name (ggml.h, enum ggml_type). Ids whose formats ggml removed
// (4, 5, 31..33, 36..38) keep their old names so that errors can say what the file holds.
constexpr std::array<std::string_view, 40> kGgmlTypeNames = {
    "f32",   "f16",        "q4_0",       "q4_1",       "q4_2",     "q4_3",     "q5_0",
    "q5_1",  "q8_0",       "q8_1",       "q2_K",       "q3_K",     "q4_K",     "q5_K",
    "q6_K",  "q8_K",       "iq2_xxs",    "iq2_xs",     "iq3_xxs",  "iq1_s",    "iq4_nl",
    "iq3_s", "iq2_s",      "iq4_xs",     "i8",         "i16",      "i32",      "i64",
    "f64",   "iq1_m",      "bf16",       "q4_0_4_4",   "q4_0_4_8", "q4_0_8_8", "tq1_0",
    "tq2_0", "iq4_nl_4_4", "iq4_nl_4_8", "iq4_nl_8_8", "mxfp4",
};

}  // namespace

// ---- type tables ----

std::string_view GgufTypeName(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
      return "uint8";
    case GgufType::kInt8:
      return "int8";
    case GgufType::kUint16:
      return "uint16";
    case GgufType::kInt16:
      return "int16";
    case GgufType::kUint32:
      return "uint32";
    case GgufType::kInt32:
      return "int32";
    case GgufType::kFloat32:
      return "float32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "string";
    case GgufType::kArray:
      return "array";
    case GgufType::kUint64:
      return "uint64";
    case GgufType::kInt64:
      return "int64";
    case GgufType::kFloat64:
      return "float64";
  }
  return "unknown";
}

std::optional<DType> DTypeFromGgml(uint32_t ggml_type) {
  switch (ggml_type) {
    case 0:
      return DType::kF32;
    case 1:
      return DType::kF16;
    case 2:
      return DType::kQ4_0;
    case 3:
      return DType::kQ4_1;
    case 8:
      return DType::kQ8_0;
    case 12:
      return DType::kQ4_K;
    case 13:
      return DType::kQ5_K;
    case 14:
      return DType::kQ6_K;
    case 24:
      return DType::kI8;
    case 25:
      return DType::kI16;
    case 26:
      return DType::kI32;
    case 27:
      return DType::kI64;
    case 28:
      return DType::kF64;
    case 30:
      return DType::kBF16;
    default:
      return std::nullopt;
  }
}

uint32_t GgmlTypeFromDType(DType t) {
  switch (t) {
    case DType::kF32:
      return 0;
    case DType::kF16:
      return 1;
    case DType::kQ4_0:
      return 2;
    case DType::kQ4_1:
      return 3;
    case DType::kQ8_0:
      return 8;
    case DType::kQ4_K:
      return 12;
    case DType::kQ5_K:
      return 13;
    case DType::kQ6_K:
      return 14;
    case DType::kI8:
      return 24;
    case DType::kI16:
      return 25;
    case DType::kI32:
      return 26;
    case DType::kI64:
      return 27;
    case DType::kF64:
      return 28;
    case DType::kBF16:
      return 30;
  }
  MNEMO_CHECK(false) << "DType " << static_cast<int>(t) << " has no ggml type";
  return 0;
}

std::string_view GgmlTypeName(uint32_t ggml_type) {
  return ggml_type < kGgmlTypeNames.size() ? kGgmlTypeNames[ggml_type] : "unknown";
}

// ---- GgufValue ----

GgufValue GgufValue::Uint(GgufType t, uint64_t v) {
  MNEMO_CHECK(gguf_internal::IsUnsignedType(t)) << "GgufValue::Uint with type " << GgufTypeName(t);
  const uint64_t bits = 8 * gguf_internal::FixedSize(t);
  MNEMO_CHECK(bits == 64 || v < (uint64_t{1} << bits)) << v << " does not fit " << GgufTypeName(t);
  GgufValue r;
  r.type_ = t;
  r.v_ = v;
  return r;
}

GgufValue GgufValue::Int(GgufType t, int64_t v) {
  MNEMO_CHECK(gguf_internal::IsSignedType(t)) << "GgufValue::Int with type " << GgufTypeName(t);
  const uint64_t bits = 8 * gguf_internal::FixedSize(t);
  if (bits < 64) {
    const int64_t hi = (int64_t{1} << (bits - 1)) - 1;
    MNEMO_CHECK(v >= -hi - 1 && v <= hi) << v << " does not fit " << GgufTypeName(t);
  }
  GgufValue r;
  r.type_ = t;
  r.v_ = v;
  return r;
}

GgufValue GgufValue::Float(GgufType t, double v) {
  MNEMO_CHECK(t == GgufType::kFloat32 || t == GgufType::kFloat64)
      << "GgufValue::Float with type " << GgufTypeName(t);
  GgufValue r;
  r.type_ = t;
  // A float32 value holds exactly what the file will hold, so that values compare equal
  // after a round trip.
  r.v_ = t == GgufType::kFloat32 ? static_cast<double>(static_cast<float>(v)) : v;
  return r;
}

GgufValue GgufValue::Bool(bool v) {
  GgufValue r;
  r.type_ = GgufType::kBool;
  r.v_ = v;
  return r;
}

GgufValue GgufValue::String(std::string v) {
  GgufValue r;
  r.type_ = GgufType::kString;
  r.v_ = std::move(v);
  return r;
}

GgufValue GgufValue::MakeArray(GgufType elem_type, Array elems) {
  for (const GgufValue& e : elems) {
    MNEMO_CHECK(e.type() == elem_type)
        << "array of " << GgufTypeName(elem_type) << " holds a " << GgufTypeName(e.type());
  }
  GgufValue r;
  r.type_ = GgufType::kArray;
  r.array_type_ = elem_type;
  r.v_ = std::move(elems);
  return r;
}

std::optional<int64_t> GgufValue::AsInt() const {
  if (const auto* u = std::get_if<uint64_t>(&v_)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&v_)) return *i;
  return std::nullopt;
}

std::optional<uint64_t> GgufValue::AsUint() const {
  if (const auto* u = std::get_if<uint64_t>(&v_)) return *u;
  if (const auto* i = std::get_if<int64_t>(&v_)) {
    if (*i < 0) return std::nullopt;
    return static_cast<uint64_t>(*i);
  }
  return std::nullopt;
}

std::optional<double> GgufValue::AsFloat() const {
  if (const auto* d = std::get_if<double>(&v_)) return *d;
  if (const auto* u = std::get_if<uint64_t>(&v_)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&v_)) return static_cast<double>(*i);
  return std::nullopt;
}

std::optional<bool> GgufValue::AsBool() const {
  if (const auto* b = std::get_if<bool>(&v_)) return *b;
  return std::nullopt;
}

const std::string* GgufValue::AsString() const { return std::get_if<std::string>(&v_); }

const GgufValue::Array* GgufValue::AsArray() const { return std::get_if<Array>(&v_); }

std::string GgufValue::DebugString(size_t max_elems) const {
  if (const auto* u = std::get_if<uint64_t>(&v_)) return absl::StrCat(*u);
  if (const auto* i = std::get_if<int64_t>(&v_)) return absl::StrCat(*i);
  if (const auto* d = std::get_if<double>(&v_)) return absl::StrCat(*d);
  if (const auto* b = std::get_if<bool>(&v_)) return *b ? "true" : "false";
  if (const auto* s = std::get_if<std::string>(&v_)) {
    constexpr size_t kMaxChars = 120;
    if (s->size() <= kMaxChars) return absl::StrCat("\"", absl::CHexEscape(*s), "\"");
    return absl::StrCat("\"", absl::CHexEscape(s->substr(0, kMaxChars)), "\"... (", s->size(),
                        " bytes)");
  }
  const Array& a = std::get<Array>(v_);
  std::string out = "[";
  for (size_t i = 0; i < a.size() && i < max_elems; ++i) {
    if (i > 0) out += ", ";
    out += a[i].DebugString(max_elems);
  }
  if (a.size() > max_elems) absl::StrAppend(&out, ", ... (", a.size(), " total)");
  out += "]";
  return out;
}

}  // namespace mnemo::engine
