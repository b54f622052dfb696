// GGUF reader: GgufFile (mmap + validating parser) and its typed getters. GgufValue and the
// type tables are in gguf_value.cc, the builder in gguf_builder.cc, the shared format
// constants in internal/gguf_format.h.
#include "engine/model/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <numeric>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "engine/model/internal/gguf_format.h"
#include "kernels/base/check.h"

namespace mnemo::engine {
namespace {

using gguf_internal::kAlignmentKey;
using gguf_internal::kDefaultAlignment;
using gguf_internal::kMagic;
using gguf_internal::kMaxArrayDepth;
using gguf_internal::kMaxDims;
using gguf_internal::kNumValueTypes;
using kernels::DType;

#define MNEMO_GGUF_RETURN_IF_ERROR(expr) \
  do {                                   \
    absl::Status status_ = (expr);       \
    if (!status_.ok()) return status_;   \
  } while (0)

// Cap on the number of metadata values (array elements included) in one file. A real model
// holds about a million (vocabulary, scores, token types, merges); the cap keeps a hostile
// file's parsed form within a few hundred MiB whatever its size.
constexpr uint64_t kMaxMetadataValues = uint64_t{1} << 24;

// The fewest bytes one metadata pair / one tensor info can take in the file.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;                  // key len, 1-byte key, type, u8
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;  // name, n_dims, ne, type, off

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    uint32_t min_cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min_cp = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min_cp = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min_cp = 0x10000;
    } else {
      return false;
    }
    if (s.size() - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

// A name for error messages: escaped, and shortened when long.
std::string Printable(const std::string& s) {
  constexpr size_t kMax = 96;
  if (s.size() <= kMax) return absl::CHexEscape(s);
  return absl::StrCat(absl::CHexEscape(s.substr(0, kMax)), "...");
}

std::string TypeDescription(const GgufValue& v) {
  if (v.type() == GgufType::kArray) {
    return absl::StrCat("array of ", AsAbsl(GgufTypeName(v.array_type())));
  }
  return std::string(GgufTypeName(v.type()));
}

// Parses a whole file image. Every read goes through Take/ReadName, which check the bytes
// left; every error names where it happened (`where_`, the byte offset, the array element).
class Parser {
 public:
  struct Result {
    uint32_t version = 0;
    uint64_t alignment = kDefaultAlignment;
    uint64_t data_offset = 0;
    std::vector<std::pair<std::string, GgufValue>> metadata;
    std::vector<GgufTensorInfo> tensors;
    absl::flat_hash_map<std::string, size_t> key_index;
    absl::flat_hash_map<std::string, size_t> tensor_index;
  };

  Parser(const uint8_t* base, uint64_t size, std::string prefix)
      : base_(base), size_(size), prefix_(std::move(prefix)) {}

  absl::Status Run(Result* r);

 private:
  uint64_t remaining() const { return size_ - pos_; }

  template <typename T>
  bool Take(T* v) {
    if (remaining() < sizeof(T)) return false;
    std::memcpy(v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }

  // "<prefix><where> at byte <at>: [array element [i][j]: ]<msg>".
  absl::Status Fail(uint64_t at, const std::string& msg) const {
    std::string s = absl::StrCat(prefix_, where_, " at byte ", at, ": ");
    if (!elem_path_.empty()) {
      s += "array element ";
      for (uint64_t i : elem_path_) absl::StrAppend(&s, "[", i, "]");
      s += ": ";
    }
    s += msg;
    return absl::InvalidArgumentError(s);
  }
  // "<prefix><where>: <msg>", for checks that concern a whole entry rather than a byte.
  absl::Status FailEntry(const std::string& msg) const {
    return absl::InvalidArgumentError(absl::StrCat(prefix_, where_, ": ", msg));
  }
  absl::Status Truncated(uint64_t at, const std::string& field, uint64_t need) const {
    return Fail(at, absl::StrCat(field, " needs ", need, " bytes but only ", remaining(),
                                 " remain (truncated file?)"));
  }

  absl::Status ReadHeader(Result* r, uint64_t* n_tensors, uint64_t* n_kv);
  absl::Status ReadMetadata(uint64_t n_kv, Result* r);
  absl::Status ReadAlignment(Result* r);
  absl::Status ReadTensorInfos(uint64_t n_tensors, Result* r);
  absl::Status PlaceTensorData(Result* r);

  // A u64-length string of at most remaining() bytes.
  absl::Status ReadString(const char* field, std::string* out);
  // A key or tensor name: a string that is also non-empty, valid UTF-8, without NUL.
  absl::Status ReadName(const char* field, std::string* out);
  absl::Status ReadValue(GgufType type, int depth, GgufValue* out);
  absl::Status ReadArray(int depth, GgufValue* out);

  const uint8_t* base_;
  const uint64_t size_;
  const std::string prefix_;
  uint64_t pos_ = 0;
  uint64_t n_values_ = 0;
  std::string where_ = "header";
  std::vector<uint64_t> elem_path_;
};

absl::Status Parser::Run(Result* r) {
  uint64_t n_tensors = 0;
  uint64_t n_kv = 0;
  MNEMO_GGUF_RETURN_IF_ERROR(ReadHeader(r, &n_tensors, &n_kv));
  MNEMO_GGUF_RETURN_IF_ERROR(ReadMetadata(n_kv, r));
  MNEMO_GGUF_RETURN_IF_ERROR(ReadAlignment(r));
  MNEMO_GGUF_RETURN_IF_ERROR(ReadTensorInfos(n_tensors, r));
  return PlaceTensorData(r);
}

absl::Status Parser::ReadHeader(Result* r, uint64_t* n_tensors, uint64_t* n_kv) {
  where_ = "header";
  uint32_t magic = 0;
  if (!Take(&magic)) return Truncated(0, "magic", 4);
  if (magic != kMagic) {
    std::string got(reinterpret_cast<const char*>(base_), 4);
    return Fail(0, absl::StrCat("bad magic \"", absl::CHexEscape(got),
                                "\" (expected \"GGUF\"): not a GGUF file"));
  }
  uint32_t version = 0;
  if (!Take(&version)) return Truncated(4, "version", 4);
  if (version == 1) {
    return Fail(4, "version 1 is not supported (it used 32-bit counts); only versions 2 and 3");
  }
  if (version != 2 && version != 3) {
    const uint32_t swapped = __builtin_bswap32(version);
    if (swapped == 2 || swapped == 3) {
      return Fail(4, absl::StrCat("big-endian GGUF (version ", swapped, ") is not supported"));
    }
    return Fail(4, absl::StrCat("unsupported version ", version, " (only versions 2 and 3)"));
  }
  r->version = version;
  if (!Take(n_tensors)) return Truncated(8, "tensor count", 8);
  if (!Take(n_kv)) return Truncated(16, "metadata count", 8);
  if (*n_kv > remaining() / kMinKvBytes) {
    return Fail(16, absl::StrCat("metadata count ", *n_kv, " cannot fit in the remaining ",
                                 remaining(), " bytes (a pair takes at least ", kMinKvBytes, ")"));
  }
  if (*n_tensors > remaining() / kMinTensorInfoBytes) {
    return Fail(
        8, absl::StrCat("tensor count ", *n_tensors, " cannot fit in the remaining ", remaining(),
                        " bytes (a tensor info takes at least ", kMinTensorInfoBytes, ")"));
  }
  return absl::OkStatus();
}

absl::Status Parser::ReadMetadata(uint64_t n_kv, Result* r) {
  r->metadata.reserve(n_kv);  // bounded by the file size (checked in ReadHeader)
  for (uint64_t i = 0; i < n_kv; ++i) {
    const uint64_t entry_at = pos_;
    where_ = absl::StrCat("metadata key #", i);
    std::string key;
    MNEMO_GGUF_RETURN_IF_ERROR(ReadName("key", &key));
    where_ = absl::StrCat("metadata '", Printable(key), "' (#", i, ")");
    if (auto it = r->key_index.find(key); it != r->key_index.end()) {
      return Fail(entry_at, absl::StrCat("duplicate key (first defined by #", it->second, ")"));
    }
    const uint64_t type_at = pos_;
    uint32_t type_raw = 0;
    if (!Take(&type_raw)) return Truncated(type_at, "value type", 4);
    if (type_raw >= kNumValueTypes) {
      return Fail(type_at, absl::StrCat("value type ", type_raw, " is not a GGUF type (0..",
                                        kNumValueTypes - 1, ")"));
    }
    GgufValue value;
    MNEMO_GGUF_RETURN_IF_ERROR(ReadValue(static_cast<GgufType>(type_raw), 0, &value));
    r->key_index.emplace(key, r->metadata.size());
    r->metadata.emplace_back(std::move(key), std::move(value));
  }
  return absl::OkStatus();
}

absl::Status Parser::ReadAlignment(Result* r) {
  auto it = r->key_index.find(kAlignmentKey);
  if (it == r->key_index.end()) return absl::OkStatus();
  const GgufValue& v = r->metadata[it->second].second;
  where_ = absl::StrCat("metadata '", kAlignmentKey, "' (#", it->second, ")");
  const std::optional<uint64_t> a = v.AsUint();
  if (!a.has_value()) {
    return FailEntry(
        absl::StrCat("type ", TypeDescription(v), ", expected an unsigned integer (uint32)"));
  }
  if (!gguf_internal::IsPowerOfTwo(*a)) {
    return FailEntry(absl::StrCat("alignment ", *a, " is not a non-zero power of two"));
  }
  r->alignment = *a;
  return absl::OkStatus();
}

absl::Status Parser::ReadTensorInfos(uint64_t n_tensors, Result* r) {
  if (n_tensors > remaining() / kMinTensorInfoBytes) {
    where_ = "header";
    return Fail(8, absl::StrCat("tensor count ", n_tensors, " cannot fit in the ", remaining(),
                                " bytes after the metadata (a tensor info takes at least ",
                                kMinTensorInfoBytes, ")"));
  }
  r->tensors.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    const uint64_t entry_at = pos_;
    where_ = absl::StrCat("tensor #", i);
    MNEMO_GGUF_RETURN_IF_ERROR(ReadName("name", &t.name));
    where_ = absl::StrCat("tensor '", Printable(t.name), "' (#", i, ")");
    if (auto it = r->tensor_index.find(t.name); it != r->tensor_index.end()) {
      return Fail(entry_at,
                  absl::StrCat("duplicate tensor name (first defined by #", it->second, ")"));
    }
    uint64_t at = pos_;
    uint32_t n_dims = 0;
    if (!Take(&n_dims)) return Truncated(at, "n_dims", 4);
    if (n_dims < 1 || n_dims > kMaxDims) {
      return Fail(at, absl::StrCat("n_dims ", n_dims, " is outside 1..", kMaxDims));
    }
    const uint64_t ne0_at = pos_;
    t.ne.resize(n_dims);
    int64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      at = pos_;
      uint64_t ne = 0;
      if (!Take(&ne)) return Truncated(at, absl::StrCat("ne[", d, "]"), 8);
      if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Fail(at, absl::StrCat("ne[", d, "] = ", ne, " is not in 1..2^63-1"));
      }
      t.ne[d] = static_cast<int64_t>(ne);
      if (__builtin_mul_overflow(n_elements, t.ne[d], &n_elements)) {
        return Fail(at, absl::StrCat("element count overflows int64 at ne[", d, "] = ", ne));
      }
    }
    t.n_elements = n_elements;
    at = pos_;
    if (!Take(&t.ggml_type)) return Truncated(at, "ggml type", 4);
    const std::optional<DType> dtype = DTypeFromGgml(t.ggml_type);
    if (!dtype.has_value()) {
      const std::string_view name = GgmlTypeName(t.ggml_type);
      if (name == "unknown") {
        return Fail(at, absl::StrCat("unknown ggml type ", t.ggml_type));
      }
      return Fail(
          at, absl::StrCat("ggml type ", t.ggml_type, " (", AsAbsl(name), ") is not supported"));
    }
    t.dtype = *dtype;
    const kernels::DTypeInfo& info = kernels::GetDTypeInfo(t.dtype);
    if (t.ne[0] % info.block_elems != 0) {
      return Fail(ne0_at, absl::StrCat("row length ne[0] = ", t.ne[0], " is not a multiple of the ",
                                       AsAbsl(GgmlTypeName(t.ggml_type)), " block size ",
                                       info.block_elems));
    }
    const std::optional<uint64_t> bytes = kernels::DTypeBytes(t.dtype, t.n_elements);
    if (!bytes.has_value()) {
      return Fail(ne0_at, absl::StrCat("byte size of ", t.n_elements, " ",
                                       AsAbsl(GgmlTypeName(t.ggml_type)), " elements overflows"));
    }
    t.bytes = *bytes;
    at = pos_;
    if (!Take(&t.offset)) return Truncated(at, "data offset", 8);
    if (t.offset % r->alignment != 0) {
      return Fail(at, absl::StrCat("data offset ", t.offset, " is not a multiple of the alignment ",
                                   r->alignment));
    }
    r->tensor_index.emplace(t.name, r->tensors.size());
    r->tensors.push_back(std::move(t));
  }
  return absl::OkStatus();
}

absl::Status Parser::PlaceTensorData(Result* r) {
  where_ = "tensor data";
  const std::optional<uint64_t> data_offset = gguf_internal::AlignUp(pos_, r->alignment);
  if (r->tensors.empty()) {
    // Writers may end a tensor-less file right after the metadata, without padding.
    r->data_offset = std::min(data_offset.value_or(size_), size_);
    return absl::OkStatus();
  }
  if (!data_offset.has_value() || *data_offset > size_) {
    return FailEntry(absl::StrCat(
        "the data section would start at byte ",
        data_offset.has_value() ? absl::StrCat(*data_offset) : std::string("2^64 or later"),
        " (tensor infos end at byte ", pos_, ", alignment ", r->alignment,
        "), past the end of the file (size ", size_, ")"));
  }
  r->data_offset = *data_offset;
  const uint64_t avail = size_ - r->data_offset;
  for (size_t i = 0; i < r->tensors.size(); ++i) {
    GgufTensorInfo& t = r->tensors[i];
    if (t.offset > avail || t.bytes > avail - t.offset) {
      where_ = absl::StrCat("tensor '", Printable(t.name), "' (#", i, ")");
      return FailEntry(absl::StrCat("data [offset ", t.offset, ", ", t.bytes,
                                    " bytes] extends past end of file (size ", size_,
                                    ", data section at byte ", r->data_offset, ")"));
    }
    t.data = base_ + r->data_offset + t.offset;
  }
  std::vector<size_t> order(r->tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return r->tensors[a].offset < r->tensors[b].offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const GgufTensorInfo& prev = r->tensors[order[k - 1]];
    const GgufTensorInfo& cur = r->tensors[order[k]];
    if (prev.offset + prev.bytes > cur.offset) {  // no overflow: both end within the file
      where_ = absl::StrCat("tensor '", Printable(cur.name), "' (#", order[k], ")");
      return FailEntry(absl::StrCat("data [offset ", cur.offset, ", ", cur.bytes,
                                    " bytes] overlaps tensor '", Printable(prev.name), "' (#",
                                    order[k - 1], ") data [offset ", prev.offset, ", ", prev.bytes,
                                    " bytes]"));
    }
  }
  return absl::OkStatus();
}

absl::Status Parser::ReadString(const char* field, std::string* out) {
  const uint64_t at = pos_;
  uint64_t len = 0;
  if (!Take(&len)) return Truncated(at, absl::StrCat(field, " length"), 8);
  if (len > remaining()) {
    return Fail(at,
                absl::StrCat(field, " length ", len, " exceeds remaining ", remaining(), " bytes"));
  }
  out->assign(reinterpret_cast<const char*>(base_ + pos_), len);
  pos_ += len;
  return absl::OkStatus();
}

absl::Status Parser::ReadName(const char* field, std::string* out) {
  const uint64_t at = pos_;
  MNEMO_GGUF_RETURN_IF_ERROR(ReadString(field, out));
  if (out->empty()) return Fail(at, absl::StrCat(field, " is empty"));
  if (out->find('\0') != std::string::npos) {
    return Fail(at, absl::StrCat(field, " \"", Printable(*out), "\" contains a NUL byte"));
  }
  if (!IsValidUtf8(*out)) {
    return Fail(at, absl::StrCat(field, " \"", Printable(*out), "\" is not valid UTF-8"));
  }
  return absl::OkStatus();
}

absl::Status Parser::ReadValue(GgufType type, int depth, GgufValue* out) {
  if (++n_values_ > kMaxMetadataValues) {
    return Fail(pos_, absl::StrCat("more than ", kMaxMetadataValues,
                                   " metadata values in the file (the reader's cap)"));
  }
  const uint64_t at = pos_;
  const char* name = GgufTypeName(type).data();  // the names are NUL-terminated literals
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kUint16:
    case GgufType::kUint32:
    case GgufType::kUint64: {
      uint64_t v = 0;
      const uint64_t n = gguf_internal::FixedSize(type);
      if (remaining() < n) return Truncated(at, absl::StrCat(name, " value"), n);
      std::memcpy(&v, base_ + pos_, n);  // little-endian: the low bytes
      pos_ += n;
      *out = GgufValue::Uint(type, v);
      return absl::OkStatus();
    }
    case GgufType::kInt8:
    case GgufType::kInt16:
    case GgufType::kInt32:
    case GgufType::kInt64: {
      const uint64_t n = gguf_internal::FixedSize(type);
      if (remaining() < n) return Truncated(at, absl::StrCat(name, " value"), n);
      uint64_t raw = 0;
      std::memcpy(&raw, base_ + pos_, n);
      pos_ += n;
      // Sign-extend the n-byte two's complement value.
      const unsigned shift = static_cast<unsigned>(64 - 8 * n);
      const auto v = static_cast<int64_t>(raw << shift) >> shift;
      *out = GgufValue::Int(type, v);
      return absl::OkStatus();
    }
    case GgufType::kFloat32: {
      float v = 0;
      if (!Take(&v)) return Truncated(at, "float32 value", 4);
      *out = GgufValue::Float(type, v);
      return absl::OkStatus();
    }
    case GgufType::kFloat64: {
      double v = 0;
      if (!Take(&v)) return Truncated(at, "float64 value", 8);
      *out = GgufValue::Float(type, v);
      return absl::OkStatus();
    }
    case GgufType::kBool: {
      uint8_t v = 0;
      if (!Take(&v)) return Truncated(at, "bool value", 1);
      if (v > 1) return Fail(at, absl::StrCat("bool value ", v, " is neither 0 nor 1"));
      *out = GgufValue::Bool(v != 0);
      return absl::OkStatus();
    }
    case GgufType::kString: {
      std::string s;
      MNEMO_GGUF_RETURN_IF_ERROR(ReadString("string", &s));
      *out = GgufValue::String(std::move(s));
      return absl::OkStatus();
    }
    case GgufType::kArray:
      return ReadArray(depth, out);
  }
  return Fail(at, "unreachable value type");  // type was range-checked by the caller
}

absl::Status Parser::ReadArray(int depth, GgufValue* out) {
  const uint64_t at = pos_;
  if (depth >= kMaxArrayDepth) {
    return Fail(at, absl::StrCat("arrays nested more than ", kMaxArrayDepth, " levels deep"));
  }
  uint32_t elem_raw = 0;
  if (!Take(&elem_raw)) return Truncated(at, "array element type", 4);
  if (elem_raw >= kNumValueTypes) {
    return Fail(at, absl::StrCat("array element type ", elem_raw, " is not a GGUF type (0..",
                                 kNumValueTypes - 1, ")"));
  }
  const auto elem_type = static_cast<GgufType>(elem_raw);
  uint64_t count = 0;
  if (!Take(&count)) return Truncated(at + 4, "array count", 8);
  const uint64_t min_size = gguf_internal::MinEncodedSize(elem_type);
  if (count > remaining() / min_size) {
    return Fail(at + 4,
                absl::StrCat("array count ", count, " exceeds what the remaining ", remaining(),
                             " bytes can hold (a ", AsAbsl(GgufTypeName(elem_type)),
                             " takes at least ", min_size, ")"));
  }
  GgufValue::Array elems;
  elems.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    elem_path_.push_back(i);
    MNEMO_GGUF_RETURN_IF_ERROR(ReadValue(elem_type, depth + 1, &elems.emplace_back()));
    elem_path_.pop_back();
  }
  *out = GgufValue::MakeArray(elem_type, std::move(elems));
  return absl::OkStatus();
}

std::string ErrorPrefix(const std::string& path) {
  return path.empty() ? std::string("gguf: ") : absl::StrCat("gguf: ", path, ": ");
}

}  // namespace

// ---- GgufFile ----

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return absl::NotFoundError(absl::StrCat("gguf: cannot open ", path, ": ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(
        absl::StrCat("gguf: cannot stat ", path, ": ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("gguf: ", path, ": not a regular file"));
  }
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  file->size_ = static_cast<uint64_t>(st.st_size);
  if (file->size_ > 0) {
    void* m = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::UnavailableError(
          absl::StrCat("gguf: cannot map ", path, ": ", std::strerror(err)));
    }
    file->mapping_ = m;
    file->base_ = static_cast<const uint8_t*>(m);
  }
  ::close(fd);  // the mapping keeps the file's pages
  MNEMO_GGUF_RETURN_IF_ERROR(file->Parse());
  return file;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBytes(std::span<const uint8_t> bytes) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->owned_.assign(bytes.begin(), bytes.end());
  file->base_ = file->owned_.data();
  file->size_ = file->owned_.size();
  MNEMO_GGUF_RETURN_IF_ERROR(file->Parse());
  return file;
}

GgufFile::~GgufFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

absl::Status GgufFile::Parse() {
  Parser::Result r;
  MNEMO_GGUF_RETURN_IF_ERROR(Parser(base_, size_, ErrorPrefix(path_)).Run(&r));
  version_ = r.version;
  alignment_ = r.alignment;
  data_offset_ = r.data_offset;
  metadata_ = std::move(r.metadata);
  tensors_ = std::move(r.tensors);
  key_index_ = std::move(r.key_index);
  tensor_index_ = std::move(r.tensor_index);
  return absl::OkStatus();
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = key_index_.find(AsAbsl(key));
  return it == key_index_.end() ? nullptr : &metadata_[it->second].second;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(AsAbsl(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

absl::Status KeyNotFound(const std::string& path, std::string_view key) {
  return absl::NotFoundError(
      absl::StrCat(ErrorPrefix(path), "metadata key '", AsAbsl(key), "' not found"));
}

absl::Status WrongType(const std::string& path, std::string_view key, const GgufValue& v,
                       const char* expected) {
  return absl::InvalidArgumentError(absl::StrCat(ErrorPrefix(path), "metadata '", AsAbsl(key),
                                                 "' is ", TypeDescription(v), ", expected ",
                                                 expected));
}

}  // namespace

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return KeyNotFound(path_, key);
  if (const std::string* s = v->AsString()) return *s;
  return WrongType(path_, key, *v, "string");
}

absl::StatusOr<int64_t> GgufFile::GetInt(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return KeyNotFound(path_, key);
  if (std::optional<int64_t> i = v->AsInt()) return *i;
  if (gguf_internal::IsUnsignedType(v->type())) {
    return absl::InvalidArgumentError(absl::StrCat(ErrorPrefix(path_), "metadata '", AsAbsl(key),
                                                   "' = ", v->DebugString(),
                                                   " (uint64) does not fit int64"));
  }
  return WrongType(path_, key, *v, "an integer");
}

absl::StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return KeyNotFound(path_, key);
  if (std::optional<double> d = v->AsFloat()) return *d;
  return WrongType(path_, key, *v, "a number");
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return KeyNotFound(path_, key);
  if (std::optional<bool> b = v->AsBool()) return *b;
  return WrongType(path_, key, *v, "bool");
}

absl::StatusOr<const GgufValue::Array*> GgufFile::GetArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return KeyNotFound(path_, key);
  if (const GgufValue::Array* a = v->AsArray()) return a;
  return WrongType(path_, key, *v, "an array");
}

}  // namespace mnemo::engine
