#include "tests/test_util.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
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

// Runs argv with stdout and stderr captured into files under `dir`, and stdin read from
// `stdin_path` (nullptr: inherited).
CommandResult Spawn(const std::vector<std::string>& argv, const std::string* stdin_path,
                    const std::string& dir) {
  CommandResult result;
  const std::string out_path = dir + "/stdout", err_path = dir + "/stderr";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (stdin_path != nullptr) {
    posix_spawn_file_actions_addopen(&actions, 0, stdin_path->c_str(), O_RDONLY, 0);
  }
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ) == 0) {
    int status = 0;
    if (waitpid(pid, &status, 0) == pid && WIFEXITED(status))
      result.exit_code = WEXITSTATUS(status);
  }
  posix_spawn_file_actions_destroy(&actions);
  auto slurp = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  result.out = slurp(out_path);
  result.err = slurp(err_path);
  return result;
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

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

int TestKernelThreads() {
#if defined(__SANITIZE_THREAD__)  // gcc -fsanitize=thread (MNEMO_TSAN)
  return 1;
#else
  return 2;
#endif
}

std::string MnemoBinary() { return std::string(MNEMO_BINARY_DIR) + "/mnemo"; }

std::string BenchBinary(const std::string& name) {
  return std::string(MNEMO_BINARY_DIR) + "/bench/" + name;
}

CommandResult RunCommand(const std::vector<std::string>& argv) {
  return Spawn(argv, nullptr, MakeTempDir());
}

CommandResult RunCommandWithInput(const std::vector<std::string>& argv,
                                  const std::string& stdin_text) {
  const std::string dir = MakeTempDir();
  const std::string in_path = dir + "/stdin";
  {
    std::ofstream in(in_path, std::ios::binary);
    in << stdin_text;
  }
  return Spawn(argv, &in_path, dir);
}

}  // namespace mnemo::testing
