// GGUF model files (versions 2 and 3): a validating reader over a memory mapping, and a
// builder that writes them (used by the test-model writer and the fuzz seed corpus).
//
// Layout (little-endian):
//   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv          (v1 used u32 counts: refused)
//   n_kv x { string key | u32 type | value }
//   n_tensors x { string name | u32 n_dims | n_dims x u64 ne | u32 ggml_type | u64 offset }
//   padding to `general.alignment` (default 32)
//   data section: each tensor at data_start + offset (offset a multiple of the alignment)
// A string is u64 length + bytes (no terminator). An array is u32 elem_type + u64 count +
// elements; arrays may nest.
//
// Every count, length, offset and size is checked against the file before it is used: a
// truncated, corrupt or hostile file yields InvalidArgument naming the field and its byte
// offset; the reader never reads out of bounds. Thread-safety: a GgufFile is immutable after
// Open and may be read from any number of threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/dtype.h"

namespace mnemo::engine {

enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

std::string_view GgufTypeName(GgufType t);

// One metadata value. Scalars keep their declared type; arrays hold their elements (which
// may themselves be arrays) and the declared element type.
class GgufValue {
 public:
  using Array = std::vector<GgufValue>;

  GgufValue() = default;
  static GgufValue Uint(GgufType t, uint64_t v);  // t: one of the unsigned types
  static GgufValue Int(GgufType t, int64_t v);    // t: one of the signed types
  static GgufValue Float(GgufType t, double v);   // t: kFloat32 or kFloat64
  static GgufValue Bool(bool v);
  static GgufValue String(std::string v);
  static GgufValue MakeArray(GgufType elem_type, Array elems);

  GgufType type() const { return type_; }
  GgufType array_type() const { return array_type_; }  // meaningful when type() == kArray

  // Typed views. Each returns nullopt/nullptr when the value is not of a compatible type:
  // AsInt accepts any integer type whose value fits int64; AsFloat accepts floats and
  // integers; AsBool accepts only kBool.
  std::optional<int64_t> AsInt() const;
  std::optional<uint64_t> AsUint() const;
  std::optional<double> AsFloat() const;
  std::optional<bool> AsBool() const;
  const std::string* AsString() const;
  const Array* AsArray() const;

  // Human-readable, arrays shortened to their first `max_elems` elements.
  std::string DebugString(size_t max_elems = 8) const;

  // Same declared type(s) and same value(s), recursively (floats compare as doubles).
  friend bool operator==(const GgufValue& a, const GgufValue& b) = default;

 private:
  GgufType type_ = GgufType::kUint8;
  GgufType array_type_ = GgufType::kUint8;
  std::variant<uint64_t, int64_t, double, bool, std::string, Array> v_ = uint64_t{0};
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // GGUF order: ne[0] is the fastest-varying (row length)
  uint32_t ggml_type = 0;   // the raw type id in the file
  kernels::DType dtype = kernels::DType::kF32;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t bytes = 0;   // validated: lies within the file
  int64_t n_elements = 0;
  const uint8_t* data = nullptr;  // into the mapping; valid while the GgufFile lives
};

// Maps a ggml type id to a DType; nullopt for types mnemo does not support (the error
// message then names the id and, where known, the ggml name).
std::optional<kernels::DType> DTypeFromGgml(uint32_t ggml_type);
uint32_t GgmlTypeFromDType(kernels::DType t);       // precondition: a ggml-representable type
std::string_view GgmlTypeName(uint32_t ggml_type);  // "q4_K", ... or "unknown"

class GgufFile {
 public:
  // Memory-maps and validates `path`. NotFound if it cannot be opened; InvalidArgument
  // naming the field and byte offset for any malformed content.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses a copy of `bytes` (for tests and fuzzing). Same validation as Open.
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromBytes(std::span<const uint8_t> bytes);

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t file_size() const { return size_; }
  uint64_t data_offset() const { return data_offset_; }
  const std::string& path() const { return path_; }

  // Metadata in file order. Keys are unique (a duplicate key is rejected at Open).
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* Find(std::string_view key) const;  // nullptr if absent

  // Typed getters: NotFound if the key is absent, InvalidArgument (naming the key, the
  // expected and the actual type) if it has another type.
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;
  absl::StatusOr<double> GetFloat(std::string_view key) const;
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<const GgufValue::Array*> GetArray(std::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(std::string_view name) const;  // nullptr if absent

 private:
  GgufFile() = default;
  absl::Status Parse();

  std::string path_;
  const uint8_t* base_ = nullptr;  // the mapping (or owned_ copy)
  uint64_t size_ = 0;
  void* mapping_ = nullptr;  // munmap on destruction when non-null
  std::vector<uint8_t> owned_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> key_index_;     // key -> index in metadata_
  absl::flat_hash_map<std::string, size_t> tensor_index_;  // name -> index in tensors_
};

// Builds a GGUF v3 file in memory. Keys are written in insertion order; setting a key
// again replaces its value. Tensors are laid out in insertion order at the alignment.
class GgufBuilder {
 public:
  void Set(std::string key, GgufValue value);
  void SetString(std::string key, std::string v);
  void SetU32(std::string key, uint32_t v);
  void SetI32(std::string key, int32_t v);
  void SetF32(std::string key, float v);
  void SetBool(std::string key, bool v);
  void SetStringArray(std::string key, const std::vector<std::string>& v);
  void SetF32Array(std::string key, const std::vector<float>& v);
  void SetI32Array(std::string key, const std::vector<int32_t>& v);

  // `ne` in GGUF order (ne[0] fastest). `data` must hold exactly the bytes the dtype and
  // shape need (InvalidArgument otherwise). Duplicate names are InvalidArgument.
  absl::Status AddTensor(std::string name, std::vector<int64_t> ne, kernels::DType dtype,
                         std::vector<uint8_t> data);

  // Version 3. Alignment 32, or the value of `general.alignment` when that is set to a
  // power of two up to 1 GiB (any other value is written as given, and readers reject it).
  std::vector<uint8_t> Serialize() const;
  // Writes atomically: a temporary file in the same folder, fsync, rename.
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> ne;
    kernels::DType dtype;
    std::vector<uint8_t> data;
  };
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Tensor> tensors_;
  uint64_t alignment_ = 32;
};

}  // namespace mnemo::engine
