// The main() of a benchmark program with its own flags (mnemo_multiturn_bench,
// mnemo_tier_bench): --help prints to stdout and exits 0; a bad flag prints "NAME: message"
// to stderr and exits 2; a failed run prints "NAME: message" and exits 1.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mnemo::bench {

// The model a benchmark runs by default: $MNEMO_SMOLLM2_GGUF, else the SmolLM2 that
// tools/fetch-model.sh puts under `source_dir`/models.
inline std::string DefaultModelPath(const std::string& source_dir) {
  const char* env_model = std::getenv("MNEMO_SMOLLM2_GGUF");
  return env_model != nullptr ? env_model : source_dir + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

// Prints the program's report: `j` (a JSON object) on stdout as JSON, or as text by
// `print_text(j)`.
template <typename Json, typename PrintText>
void PrintReport(const Json& j, bool as_json, PrintText print_text) {
  if (as_json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    print_text(j);
  }
}

// `flags` is the program's parse result: Cancelled carries the help text.
template <typename Flags, typename Run>
int BenchMain(const char* name, const absl::StatusOr<Flags>& flags, Run run) {
  if (!flags.ok()) {
    const std::string message(flags.status().message());
    if (absl::IsCancelled(flags.status())) {
      std::fprintf(stdout, "%s", message.c_str());
      return 0;
    }
    std::fprintf(stderr, "%s: %s\n", name, message.c_str());
    return 2;
  }
  if (absl::Status st = run(*flags); !st.ok()) {
    std::fprintf(stderr, "%s: %s\n", name, std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace mnemo::bench
