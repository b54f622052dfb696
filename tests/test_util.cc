#include "tests/test_util.h"

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>
#include <vector>

namespace mnemo::testing {
namespace {

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? std::string(v) : fallback;
}

struct TempDirs {
  std::mutex mu;
  std::vector<std::filesystem::path> dirs;
  ~TempDirs() {
    std::error_code ec;
    for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
  }
};

TempDirs& Temps() {
  static TempDirs* t = new TempDirs();  // removed by the atexit hook below
  static bool registered = [] {
    std::atexit([] { delete &Temps(); });
    return true;
  }();
  (void)registered;
  return *t;
}

}  // namespace

std::string SourceDir() { return MNEMO_SOURCE_DIR; }

std::string TestDataPath(const std::string& name) { return SourceDir() + "/tests/data/" + name; }

std::string StoriesGgufPath() {
  return EnvOr("MNEMO_STORIES_GGUF", SourceDir() + "/../shared/models/stories260K.gguf");
}

std::string SmolLm2GgufPath() {
  return EnvOr("MNEMO_SMOLLM2_GGUF", SourceDir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf");
}

std::string MakeTempDir() {
  std::random_device rd;
  auto base = std::filesystem::temp_directory_path();
  for (int i = 0; i < 100; ++i) {
    auto p = base / ("mnemo-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::error_code ec;
    if (std::filesystem::create_directory(p, ec)) {
      std::lock_guard<std::mutex> lock(Temps().mu);
      Temps().dirs.push_back(p);
      return p.string();
    }
  }
  std::abort();
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace mnemo::testing
