// Shared helpers for mnemo's tests: where the real models and test data live.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mnemo::testing {

// The source tree root (MNEMO_SOURCE_DIR at build time).
std::string SourceDir();
// tests/data/<name>.
std::string TestDataPath(const std::string& name);
// ../shared/models/stories260K.gguf (or $MNEMO_STORIES_GGUF).
std::string StoriesGgufPath();
// models/SmolLM2-135M-Instruct.Q4_1.gguf, fetched by tools/fetch-model.sh (or
// $MNEMO_SMOLLM2_GGUF).
std::string SmolLm2GgufPath();
// A fresh empty directory under the test temp dir, removed at process exit.
std::string MakeTempDir();

bool FileExists(const std::string& path);

// n token ids in [0, vocab) from a fixed LCG over `seed`: the same ids on every platform.
inline std::vector<int32_t> SomeTokens(int n, int vocab, uint32_t seed) {
  std::vector<int32_t> t;
  uint32_t x = seed * 2654435761u + 12345u;
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    t.push_back(static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(vocab)));
  }
  return t;
}

// The whole file's bytes ("" if it cannot be read).
std::string ReadFile(const std::string& path);

// Bytes from lower- or upper-case hex digits ("e697a5" -> "日"); golden files store texts
// hex-encoded so that invalid UTF-8 survives JSON.
std::string FromHex(const std::string& hex);

// Kernel threads for tests that run forward passes in an Engine or Generator: 2, or 1 in a
// ThreadSanitizer build (tools/tsan.sh). oneTBB is not instrumented, so under TSan every
// hand-off to a TBB worker is a race report that TSan replays before tools/tsan.supp drops
// it (an engine test then takes tens of minutes); and since the forward pass runs inside a
// task_arena, its accesses are under libtbb frames, suppressed whatever the thread count.
// One kernel thread loses TSan nothing and keeps every thread of the engine's own.
int TestKernelThreads();

// The `mnemo` binary of this build.
std::string MnemoBinary();
// A benchmark binary of this build (bench/<name>, e.g. "mnemo_multiturn_bench").
std::string BenchBinary(const std::string& name);

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs argv[0] with arguments argv[1..] (no shell), capturing stdout and stderr.
CommandResult RunCommand(const std::vector<std::string>& argv);
// The same, with `stdin_text` as the command's whole standard input (then end of file).
CommandResult RunCommandWithInput(const std::vector<std::string>& argv,
                                  const std::string& stdin_text);

}  // namespace mnemo::testing

// Skips the current test with a message naming the missing file and how to get it.
#define MNEMO_REQUIRE_FILE(path)                                                     \
  do {                                                                               \
    if (!::mnemo::testing::FileExists(path)) {                                       \
      GTEST_SKIP() << "missing " << (path)                                           \
                   << " (run tools/fetch-model.sh; the README's test command does)"; \
    }                                                                                \
  } while (0)
