// libFuzzer target for the safetensors reader: SafetensorsFile::FromBytes on arbitrary bytes
// must either fail with InvalidArgument or yield tensors whose byte ranges lie in the data
// region, do not overlap and match dtype x shape; the builder then re-serializes them into a
// file that parses back to the same tensors and metadata. Not part of the CMake build: build
// with clang -fsanitize=fuzzer,address,undefined from engine/model/safetensors.cc,
// engine/model/internal/file_io.cc and kernels/dtype.cc (see tools/fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "engine/model/safetensors.h"

namespace {

using mnemo::engine::SafetensorsBuilder;
using mnemo::engine::SafetensorsFile;
using mnemo::engine::SafetensorsTensor;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "safetensors_fuzz invariant broken: %s\n", what.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = SafetensorsFile::FromBytes(std::span<const uint8_t>(data, size));
  if (!f.ok()) {
    if (f.status().code() != absl::StatusCode::kInvalidArgument) Fail("not InvalidArgument");
    return 0;
  }
  const SafetensorsFile& file = **f;
  const uint64_t data_size = size - file.data_offset();
  uint64_t sum = 0;
  uint64_t prev_end = 0;
  SafetensorsBuilder b;
  for (const auto& [k, v] : file.metadata()) b.SetMetadata(k, v);
  for (const SafetensorsTensor& t : file.tensors()) {
    if (t.end > data_size || t.begin > t.end) Fail("range outside the data region");
    if (t.bytes != 0 && t.begin < prev_end) Fail("overlap");
    if (t.bytes != 0) prev_end = std::max(prev_end, t.end);
    auto want = mnemo::kernels::DTypeBytes(t.dtype, t.n_elements);
    if (!want || *want != t.bytes) Fail("bytes != dtype x shape for " + t.name);
    for (uint64_t i = 0; i < t.bytes; ++i) sum += t.data[i];
    if (!b.AddTensor(t.name, t.dtype, t.shape, std::vector<uint8_t>(t.data, t.data + t.bytes))
             .ok()) {
      Fail("builder refused tensor " + t.name);
    }
  }
  auto again = SafetensorsFile::FromBytes(b.Serialize());
  if (!again.ok())
    Fail("re-serialized file does not parse: " + std::string(again.status().message()));
  if ((*again)->metadata() != file.metadata()) Fail("metadata changed");
  if ((*again)->tensors().size() != file.tensors().size()) Fail("tensor count changed");
  for (const SafetensorsTensor& t : file.tensors()) {
    const SafetensorsTensor* u = (*again)->FindTensor(t.name);
    if (u == nullptr || u->dtype != t.dtype || u->shape != t.shape || u->bytes != t.bytes ||
        !std::equal(t.data, t.data + t.bytes, u->data)) {
      Fail("tensor changed: " + t.name);
    }
  }
  return static_cast<int>(sum & 0);
}
