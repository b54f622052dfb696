// Whole-file reads and atomic writes for the model-loading sources. Internal to
// engine/model.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mnemo::engine::model_internal {

// The whole file. NotFound if it does not exist, Unavailable on other I/O errors;
// InvalidArgument if it is larger than `max_bytes`.
absl::StatusOr<std::string> ReadFileToString(const std::string& path, uint64_t max_bytes);

// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename,
// folder fsync. Unavailable (naming the path) on I/O errors; the temporary is removed.
absl::Status WriteFileAtomically(const std::string& path, std::span<const uint8_t> bytes);

// A read-only mapping of a whole file (or nothing, for an empty file).
struct MappedFile {
  const uint8_t* data = nullptr;
  uint64_t size = 0;
  void* mapping = nullptr;  // pass to Unmap
};
// NotFound if the file does not exist, Unavailable if it cannot be opened or mapped,
// InvalidArgument if it is not a regular file.
absl::StatusOr<MappedFile> MapFile(const std::string& path);
void Unmap(const MappedFile& f);

bool IsDirectory(const std::string& path);

}  // namespace mnemo::engine::model_internal
