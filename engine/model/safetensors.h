// safetensors files: a validating reader over a memory mapping, and a builder that writes
// them (used by the test-model writer).
//
// Layout:
//   u64 little-endian N | N bytes of UTF-8 JSON header | data region (to end of file)
// The header is an object: one entry per tensor,
//   "name": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}
// with offsets relative to the start of the data region, and an optional
// "__metadata__": {string: string} entry.
//
// Validation (every failure is InvalidArgument naming the tensor and the field):
//   - N <= kMaxHeaderBytes and 8 + N <= file size; the header is a JSON object (parsed
//     without exceptions, nesting depth bounded before parsing);
//   - dtype is one of F64 F32 F16 BF16 I64 I32 I16 I8 (others, e.g. F8_E4M3, U8 or BOOL,
//     are refused by name);
//   - shape is a list of non-negative integers; data_offsets is [begin, end] with
//     begin <= end <= data size and end - begin == product(shape) * element size (no
//     overflow);
//   - no two tensors' byte ranges overlap. Gaps between tensors are tolerated (the
//     reference implementation requires a gap-free region; the builder writes one).
// Tensor data in the mapping is not necessarily aligned: read it with memcpy or bytewise.
//
// Thread-safety: a SafetensorsFile is immutable after Open and may be read from any number
// of threads. SafetensorsBuilder is a plain value type (not thread-safe).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/dtype.h"

namespace mnemo::engine {

// The largest header accepted, in bytes (the reference implementation uses 100 MB too).
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// "F32" <-> DType for the dtypes mnemo reads. nullopt for anything else (and for the
// quantized DTypes, which safetensors cannot hold).
std::optional<kernels::DType> DTypeFromSafetensors(std::string_view name);
std::optional<std::string_view> SafetensorsDTypeName(kernels::DType t);

struct SafetensorsTensor {
  std::string name;
  kernels::DType dtype = kernels::DType::kF32;
  std::vector<int64_t> shape;  // row-major, slowest-varying first
  uint64_t begin = 0;          // [begin, end) relative to the data region
  uint64_t end = 0;
  uint64_t bytes = 0;  // end - begin
  int64_t n_elements = 0;
  const uint8_t* data = nullptr;  // into the mapping; valid while the file lives
};

class SafetensorsFile {
 public:
  // Memory-maps and validates `path`. NotFound if it does not exist, Unavailable if it
  // cannot be read, InvalidArgument for malformed content.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Parses a copy of `bytes` (tests, fuzzing). Same validation as Open.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(std::span<const uint8_t> bytes);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }  // empty for FromBytes
  uint64_t file_size() const { return size_; }
  uint64_t header_bytes() const { return header_bytes_; }
  uint64_t data_offset() const { return 8 + header_bytes_; }  // start of the data region

  // Tensors ordered by their position in the data region (then by name).
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* FindTensor(std::string_view name) const;  // nullptr if absent

  // The "__metadata__" map, ordered by key.
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }
  const std::string* FindMetadata(std::string_view key) const;  // nullptr if absent

 private:
  SafetensorsFile() = default;
  absl::Status Parse();

  std::string path_;
  const uint8_t* base_ = nullptr;  // the mapping, or owned_.data()
  uint64_t size_ = 0;
  void* mapping_ = nullptr;  // munmap'ed on destruction when non-null
  std::vector<uint8_t> owned_;
  uint64_t header_bytes_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

// Builds a safetensors file in memory. Tensors are laid out contiguously in insertion
// order; the header is padded with spaces so that the data region starts at a multiple of
// 8 bytes (as the reference implementation does).
class SafetensorsBuilder {
 public:
  void SetMetadata(std::string key, std::string value);  // replaces an existing key

  // `shape` row-major. InvalidArgument if the dtype is not a safetensors dtype, a dim is
  // negative, `data` does not hold exactly product(shape) elements, the name is empty,
  // "__metadata__" or a duplicate.
  absl::Status AddTensor(std::string name, kernels::DType dtype, std::vector<int64_t> shape,
                         std::vector<uint8_t> data);

  std::vector<uint8_t> Serialize() const;
  // Writes atomically: a temporary file in the same folder, fsync, rename.
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    kernels::DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> data;
  };
  std::vector<std::pair<std::string, std::string>> metadata_;
  std::vector<Tensor> tensors_;
};

}  // namespace mnemo::engine
