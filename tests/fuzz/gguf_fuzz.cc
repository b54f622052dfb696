// libFuzzer target for the GGUF reader: GgufFile::FromBytes on arbitrary bytes must either
// fail with a "gguf: " InvalidArgument or yield a file whose every value and tensor byte can
// be read, and which the builder re-serializes into a file that parses back to the same bytes.
// Built and run by tools/fuzz.sh (clang, -fsanitize=fuzzer,address,undefined); not part of
// the CMake build.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "engine/model/gguf.h"

namespace {

using mnemo::engine::GgufBuilder;
using mnemo::engine::GgufFile;
using mnemo::engine::GgufType;
using mnemo::engine::GgufValue;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "gguf_fuzz invariant broken: %s\n", what.c_str());
  std::abort();
}

uint64_t TouchValue(const GgufValue& v, int depth) {
  if (depth > 16) Fail("arrays nested deeper than the reader's cap");
  uint64_t h = v.DebugString(4).size();
  h += static_cast<uint64_t>(v.AsInt().value_or(0));
  h += v.AsUint().value_or(0);
  h += static_cast<uint64_t>(v.AsFloat().value_or(0) != 0);
  h += v.AsBool().value_or(false);
  if (const std::string* s = v.AsString()) {
    for (char c : *s) h += static_cast<uint8_t>(c);
  }
  if (const GgufValue::Array* a = v.AsArray()) {
    if (v.type() != GgufType::kArray) Fail("array view on a non-array");
    for (const GgufValue& e : *a) {
      if (e.type() != v.array_type()) Fail("array element of the wrong type");
      h += TouchValue(e, depth + 1);
    }
  }
  return h;
}

uint64_t TouchFile(const GgufFile& f) {
  uint64_t h = f.version() + f.alignment() + f.data_offset();
  if (f.data_offset() > f.file_size()) Fail("data offset past the end");
  for (const auto& [key, value] : f.metadata()) {
    if (f.Find(key) != &value) Fail("Find does not return the key's value");
    h += TouchValue(value, 0);
    h += f.GetString(key).ok() + f.GetInt(key).ok() + f.GetFloat(key).ok();
    h += f.GetBool(key).ok() + f.GetArray(key).ok();
  }
  for (const auto& t : f.tensors()) {
    if (f.FindTensor(t.name) != &t) Fail("FindTensor does not return the tensor");
    if (t.offset % f.alignment() != 0) Fail("misaligned tensor accepted");
    if (f.data_offset() + t.offset + t.bytes > f.file_size()) Fail("tensor past the end");
    for (uint64_t i = 0; i < t.bytes; ++i) h += t.data[i];  // ASan checks every byte
  }
  return h;
}

// The file re-built from its parsed form.
std::vector<uint8_t> Rebuild(const GgufFile& f) {
  GgufBuilder b;
  for (const auto& [key, value] : f.metadata()) b.Set(key, value);
  for (const auto& t : f.tensors()) {
    absl::Status st = b.AddTensor(t.name, t.ne, t.dtype, {t.data, t.data + t.bytes});
    if (!st.ok()) Fail("builder rejects a tensor the reader accepted: " + st.ToString());
  }
  return b.Serialize();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = GgufFile::FromBytes(std::span<const uint8_t>(data, size));
  if (!f.ok()) {
    if (f.status().code() != absl::StatusCode::kInvalidArgument ||
        f.status().message().substr(0, 6) != "gguf: ") {
      Fail("unexpected error status: " + f.status().ToString());
    }
    return 0;
  }
  volatile uint64_t sink = TouchFile(**f);
  (void)sink;
  // Writer/reader agreement (skipping alignments whose padding alone would be huge).
  if ((*f)->alignment() > 4096) return 0;
  const std::vector<uint8_t> once = Rebuild(**f);
  auto again = GgufFile::FromBytes(once);
  if (!again.ok()) Fail("a re-serialized file does not parse: " + again.status().ToString());
  if (Rebuild(**again) != once) Fail("re-serialization is not stable");
  return 0;
}
