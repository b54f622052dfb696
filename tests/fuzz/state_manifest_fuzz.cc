// libFuzzer target for the durable state format (docs/state-format.md). The first input byte
// picks what the rest is:
//   0  a whole manifest file: ParseManifest must fail with DataLoss/FailedPrecondition or
//      yield a valid record that re-serializes into bytes that parse back to the same record;
//   1  a manifest BODY: wrapped in a correct header (so the checksum passes and the
//      FlatBuffers verifier and the record validation get the bytes), same contract;
//   2  a session bundle: StateDir::Import into a scratch directory must fail with
//      DataLoss/FailedPrecondition/AlreadyExists or import a session that verifies, exports
//      and is then removed without error.
// Built and run by tools/fuzz.sh (clang, -fsanitize=fuzzer,address,undefined); not part of
// the CMake build.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <string>

#include "cache/state_manifest.h"
#include "cache/state_store.h"

namespace {

using mnemo::cache::kManifestHeaderBytes;
using mnemo::cache::ParseManifest;
using mnemo::cache::SerializeManifest;
using mnemo::cache::SessionRecord;
using mnemo::cache::StateDir;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "state_manifest_fuzz invariant broken: %s\n", what.c_str());
  std::abort();
}

void CheckParse(std::span<const uint8_t> file) {
  auto r = ParseManifest(file, "fuzz");
  if (!r.ok()) {
    if (!absl::IsDataLoss(r.status()) && !absl::IsFailedPrecondition(r.status())) {
      Fail("unexpected code: " + r.status().ToString());
    }
    return;
  }
  if (!mnemo::cache::ValidateRecord(*r).ok()) Fail("accepted an invalid record");
  auto bytes = SerializeManifest(*r);
  if (!bytes.ok()) Fail("cannot re-serialize: " + bytes.status().ToString());
  auto again = ParseManifest({reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()},
                             "fuzz (again)");
  if (!again.ok()) Fail("re-serialized manifest does not parse: " + again.status().ToString());
  if (!(*again == *r)) Fail("the record changed in a round trip");
}

// Wraps `body` in a manifest header with the right size and checksum.
std::string WithHeader(std::span<const uint8_t> body) {
  std::string file(kManifestHeaderBytes, '\0');
  std::memcpy(file.data(), "MNEMOMAN", 8);
  const uint64_t fields[3] = {
      uint64_t{mnemo::cache::kStateFormatVersion} | (uint64_t{kManifestHeaderBytes} << 32),
      body.size(), mnemo::cache::StateChecksum(body)};
  for (int f = 0; f < 3; ++f) {
    for (int i = 0; i < 8; ++i) file[8 + 8 * f + i] = static_cast<char>(fields[f] >> (8 * i));
  }
  file.append(reinterpret_cast<const char*>(body.data()), body.size());
  return file;
}

// A scratch state directory for this process, created once.
StateDir& Scratch(std::string* root_out) {
  static std::string root;
  static std::unique_ptr<StateDir> dir = [] {
    root =
        std::filesystem::temp_directory_path() / ("mnemo-state-fuzz-" + std::to_string(::getpid()));
    std::filesystem::remove_all(root);
    auto d = StateDir::Open(root, {.fsync = false});
    if (!d.ok()) Fail("cannot open the scratch directory: " + d.status().ToString());
    return *std::move(d);
  }();
  *root_out = root;
  return *dir;
}

void CheckImport(std::span<const uint8_t> bundle) {
  std::string root;
  StateDir& dir = Scratch(&root);
  const std::string in = root + ".in";
  {
    std::FILE* f = std::fopen(in.c_str(), "wb");
    if (f == nullptr || std::fwrite(bundle.data(), 1, bundle.size(), f) != bundle.size() ||
        std::fclose(f) != 0) {
      Fail("cannot write the input file");
    }
  }
  auto id = dir.Import(in);
  if (!id.ok()) {
    if (!absl::IsDataLoss(id.status()) && !absl::IsFailedPrecondition(id.status())) {
      Fail("unexpected import error: " + id.status().ToString());
    }
  } else {
    if (absl::Status s = dir.Verify(*id); !s.ok()) Fail("imported session fails: " + s.ToString());
    const std::string out = root + ".out";
    if (absl::Status s = dir.Export(*id, out); !s.ok()) Fail("cannot export: " + s.ToString());
    if (absl::Status s = dir.Remove(*id); !s.ok()) Fail("cannot remove: " + s.ToString());
    auto again = dir.Import(out);
    if (!again.ok() || *again != *id) Fail("the exported bundle does not import");
    if (absl::Status s = dir.Remove(*id); !s.ok()) Fail("cannot remove: " + s.ToString());
  }
  // Nothing may be left behind: no session, no temporary directory.
  if (!std::filesystem::is_empty(root)) Fail("import left files in the state directory");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::span<const uint8_t> rest(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      CheckParse(rest);
      break;
    case 1: {
      const std::string file = WithHeader(rest);
      CheckParse({reinterpret_cast<const uint8_t*>(file.data()), file.size()});
      break;
    }
    default:
      CheckImport(rest);
      break;
  }
  return 0;
}
