#include "engine/model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cache/base/strings.h"
#include "engine/model/internal/file_io.h"
#include "engine/model/internal/status_util.h"
#include "nlohmann/json.hpp"

namespace mnemo::engine {
namespace {

using kernels::DType;
using Json = nlohmann::json;
using model_internal::InvalidArgument;

struct DTypeName {
  std::string_view name;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {
    {"F64", DType::kF64}, {"F32", DType::kF32}, {"F16", DType::kF16}, {"BF16", DType::kBF16},
    {"I64", DType::kI64}, {"I32", DType::kI32}, {"I16", DType::kI16}, {"I8", DType::kI8},
};

// Safetensors headers are three levels deep; anything deeper is refused before parsing so
// that a hostile header cannot make the parser or the destructor of its result recurse.
constexpr int kMaxJsonDepth = 8;

int JsonNestingDepth(std::string_view text) {
  int depth = 0;
  int max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max_depth;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// A JSON value's kind, for error messages.
std::string KindOf(const Json& j) { return j.type_name(); }

absl::StatusOr<uint64_t> NonNegativeInt(const Json& j, const std::string& what) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v >= 0) return static_cast<uint64_t>(v);
    return InvalidArgument(absl::StrCat(what, " is negative (", v, ")"));
  }
  return InvalidArgument(absl::StrCat(what, " must be a non-negative integer, got ", KindOf(j)));
}

}  // namespace

std::optional<DType> DTypeFromSafetensors(std::string_view name) {
  for (const DTypeName& d : kDTypes) {
    if (d.name == name) return d.dtype;
  }
  return std::nullopt;
}

std::optional<std::string_view> SafetensorsDTypeName(DType t) {
  for (const DTypeName& d : kDTypes) {
    if (d.dtype == t) return d.name;
  }
  return std::nullopt;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) model_internal::Unmap({base_, size_, mapping_});
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  MNEMO_MODEL_ASSIGN_OR_RETURN(model_internal::MappedFile m, model_internal::MapFile(path));
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->base_ = m.data;
  f->size_ = m.size;
  f->mapping_ = m.mapping;
  absl::Status s = f->Parse();
  if (!s.ok()) return model_internal::Annotate(s, path);
  return f;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(
    std::span<const uint8_t> bytes) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->owned_.assign(bytes.begin(), bytes.end());
  f->base_ = f->owned_.data();
  f->size_ = f->owned_.size();
  MNEMO_MODEL_RETURN_IF_ERROR(f->Parse());
  return f;
}

absl::Status SafetensorsFile::Parse() {
  if (size_ < 8) {
    return InvalidArgument(absl::StrFormat(
        "safetensors: file is %d bytes, too short for the 8-byte header length", size_));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base_[i];
  if (n > kSafetensorsMaxHeaderBytes) {
    return InvalidArgument(
        absl::StrFormat("safetensors: header length %d exceeds the limit of %d bytes", n,
                        kSafetensorsMaxHeaderBytes));
  }
  if (n > size_ - 8) {
    return InvalidArgument(absl::StrFormat(
        "safetensors: header length %d exceeds the %d bytes after the length field", n, size_ - 8));
  }
  if (n < 2)
    return InvalidArgument(absl::StrFormat("safetensors: header length %d is too short", n));
  header_bytes_ = n;
  const std::string_view text(reinterpret_cast<const char*>(base_ + 8), n);
  if (text.front() != '{') {
    return InvalidArgument("safetensors: header does not start with '{' (not a JSON object)");
  }
  if (JsonNestingDepth(text) > kMaxJsonDepth) {
    return InvalidArgument(
        absl::StrFormat("safetensors: header JSON nests deeper than %d levels", kMaxJsonDepth));
  }

  // Duplicate top-level keys would silently drop a tensor: refuse them while parsing.
  std::set<std::string> seen_keys;
  std::string duplicate;
  Json header;
  try {
    header = Json::parse(
        text.begin(), text.end(),
        [&](int depth, Json::parse_event_t event, Json& parsed) {
          if (event == Json::parse_event_t::key && depth == 1 && parsed.is_string()) {
            if (!seen_keys.insert(parsed.get<std::string>()).second && duplicate.empty()) {
              duplicate = parsed.get<std::string>();
            }
          }
          return true;
        },
        /*allow_exceptions=*/false);
  } catch (const std::exception& e) {
    return InvalidArgument(absl::StrCat("safetensors: header is not valid JSON: ", e.what()));
  }
  if (header.is_discarded()) return InvalidArgument("safetensors: header is not valid JSON");
  if (!header.is_object()) {
    return InvalidArgument(
        absl::StrCat("safetensors: header must be a JSON object, got ", KindOf(header)));
  }
  if (!duplicate.empty()) {
    return InvalidArgument(absl::StrCat("safetensors: header names \"", duplicate, "\" twice"));
  }

  const uint64_t data_size = size_ - 8 - n;
  const uint8_t* data_base = base_ + 8 + n;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) {
        return InvalidArgument(
            absl::StrCat("safetensors: __metadata__ must be an object, got ", KindOf(value)));
      }
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) {
          return InvalidArgument(absl::StrCat("safetensors: __metadata__ value of \"", mk,
                                              "\" must be a string, got ", KindOf(mv)));
        }
        metadata_.emplace_back(mk, mv.get<std::string>());
      }
      continue;
    }
    const std::string where = absl::StrCat("safetensors: tensor \"", key, "\"");
    if (key.empty()) return InvalidArgument("safetensors: a tensor has an empty name");
    if (!value.is_object()) {
      return InvalidArgument(absl::StrCat(where, ": entry must be an object, got ", KindOf(value)));
    }
    SafetensorsTensor t;
    t.name = key;

    auto dt = value.find("dtype");
    if (dt == value.end()) return InvalidArgument(absl::StrCat(where, ": missing \"dtype\""));
    if (!dt->is_string()) {
      return InvalidArgument(
          absl::StrCat(where, ": \"dtype\" must be a string, got ", KindOf(*dt)));
    }
    const std::string dtype_name = dt->get<std::string>();
    std::optional<DType> dtype = DTypeFromSafetensors(dtype_name);
    if (!dtype) {
      return InvalidArgument(
          absl::StrCat(where, ": unsupported dtype \"", dtype_name,
                       "\" (supported: F64, F32, F16, BF16, I64, I32, I16, I8)"));
    }
    t.dtype = *dtype;

    auto sh = value.find("shape");
    if (sh == value.end()) return InvalidArgument(absl::StrCat(where, ": missing \"shape\""));
    if (!sh->is_array()) {
      return InvalidArgument(
          absl::StrCat(where, ": \"shape\" must be an array, got ", KindOf(*sh)));
    }
    uint64_t elems = 1;
    bool overflow = false;
    for (size_t i = 0; i < sh->size(); ++i) {
      MNEMO_MODEL_ASSIGN_OR_RETURN(
          uint64_t d, NonNegativeInt((*sh)[i], absl::StrCat(where, ": shape[", i, "]")));
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) overflow = true;
      if (__builtin_mul_overflow(elems, d, &elems)) overflow = true;
      t.shape.push_back(static_cast<int64_t>(
          std::min<uint64_t>(d, static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))));
    }
    const uint64_t elem_bytes = static_cast<uint64_t>(kernels::GetDTypeInfo(t.dtype).block_bytes);
    uint64_t want_bytes = 0;
    if (overflow || elems > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(elems, elem_bytes, &want_bytes)) {
      return InvalidArgument(
          absl::StrCat(where, ": shape ", ShapeString(t.shape), " overflows 64 bits"));
    }
    t.n_elements = static_cast<int64_t>(elems);

    auto off = value.find("data_offsets");
    if (off == value.end()) {
      return InvalidArgument(absl::StrCat(where, ": missing \"data_offsets\""));
    }
    if (!off->is_array() || off->size() != 2) {
      return InvalidArgument(absl::StrCat(where, ": \"data_offsets\" must be [begin, end]"));
    }
    MNEMO_MODEL_ASSIGN_OR_RETURN(t.begin, NonNegativeInt((*off)[0], where + ": data_offsets[0]"));
    MNEMO_MODEL_ASSIGN_OR_RETURN(t.end, NonNegativeInt((*off)[1], where + ": data_offsets[1]"));
    if (t.begin > t.end) {
      return InvalidArgument(
          absl::StrFormat("%s: data_offsets [%d, %d] has begin after end", where, t.begin, t.end));
    }
    if (t.end > data_size) {
      return InvalidArgument(
          absl::StrFormat("%s: data_offsets [%d, %d] run past the data region of %d bytes", where,
                          t.begin, t.end, data_size));
    }
    t.bytes = t.end - t.begin;
    if (t.bytes != want_bytes) {
      return InvalidArgument(absl::StrFormat(
          "%s: data_offsets [%d, %d] hold %d bytes, but dtype %s and shape %s need %d", where,
          t.begin, t.end, t.bytes, dtype_name, ShapeString(t.shape), want_bytes));
    }
    t.data = data_base + t.begin;
    tensors_.push_back(std::move(t));
  }

  std::sort(tensors_.begin(), tensors_.end(), [](const auto& a, const auto& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  const SafetensorsTensor* prev = nullptr;  // the non-empty tensor that ends last so far
  for (const SafetensorsTensor& t : tensors_) {
    if (t.bytes == 0) continue;
    if (prev != nullptr && t.begin < prev->end) {
      return InvalidArgument(absl::StrFormat(
          "safetensors: tensor \"%s\" data_offsets [%d, %d] overlap tensor \"%s\" [%d, %d]", t.name,
          t.begin, t.end, prev->name, prev->begin, prev->end));
    }
    if (prev == nullptr || t.end > prev->end) prev = &t;
  }
  std::sort(metadata_.begin(), metadata_.end());
  return absl::OkStatus();
}

const SafetensorsTensor* SafetensorsFile::FindTensor(std::string_view name) const {
  for (const SafetensorsTensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const std::string* SafetensorsFile::FindMetadata(std::string_view key) const {
  for (const auto& [k, v] : metadata_) {
    if (k == key) return &v;
  }
  return nullptr;
}

void SafetensorsBuilder::SetMetadata(std::string key, std::string value) {
  for (auto& [k, v] : metadata_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(std::move(key), std::move(value));
}

absl::Status SafetensorsBuilder::AddTensor(std::string name, DType dtype,
                                           std::vector<int64_t> shape, std::vector<uint8_t> data) {
  if (name.empty() || name == "__metadata__") {
    return InvalidArgument(absl::StrCat("safetensors builder: invalid tensor name \"", name, "\""));
  }
  for (const Tensor& t : tensors_) {
    if (t.name == name) {
      return InvalidArgument(absl::StrCat("safetensors builder: duplicate tensor \"", name, "\""));
    }
  }
  if (!SafetensorsDTypeName(dtype)) {
    return InvalidArgument(absl::StrCat("safetensors builder: tensor \"", name, "\": dtype ",
                                        AsAbsl(kernels::DTypeName(dtype)),
                                        " cannot be stored in safetensors"));
  }
  int64_t elems = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(elems, d, &elems)) {
      return InvalidArgument(absl::StrCat("safetensors builder: tensor \"", name,
                                          "\": invalid shape ", ShapeString(shape)));
    }
  }
  std::optional<uint64_t> want = kernels::DTypeBytes(dtype, elems);
  if (!want || *want != data.size()) {
    return InvalidArgument(absl::StrFormat(
        "safetensors builder: tensor \"%s\": %d bytes given, shape %s of %s needs %d", name,
        data.size(), ShapeString(shape), kernels::DTypeName(dtype), want.value_or(0)));
  }
  tensors_.push_back({std::move(name), dtype, std::move(shape), std::move(data)});
  return absl::OkStatus();
}

std::vector<uint8_t> SafetensorsBuilder::Serialize() const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    nlohmann::ordered_json e = nlohmann::ordered_json::object();
    e["dtype"] = std::string(*SafetensorsDTypeName(t.dtype));
    e["shape"] = t.shape;
    e["data_offsets"] = {offset, offset + t.data.size()};
    offset += t.data.size();
    header[t.name] = std::move(e);
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');

  std::vector<uint8_t> out;
  out.reserve(8 + text.size() + offset);
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), text.begin(), text.end());
  for (const Tensor& t : tensors_) out.insert(out.end(), t.data.begin(), t.data.end());
  return out;
}

absl::Status SafetensorsBuilder::WriteFile(const std::string& path) const {
  const std::vector<uint8_t> bytes = Serialize();
  return model_internal::WriteFileAtomically(path, bytes);
}

}  // namespace mnemo::engine
