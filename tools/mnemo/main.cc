// `mnemo`: one binary, one subcommand per job (see DESIGN.md section 9).
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "tools/mnemo/commands.h"

namespace {

struct Subcommand {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>&);
};

constexpr Subcommand kSubcommands[] = {
    {"inspect", "show a model's config, tensors, tokenizer and chat template",
     mnemo::cli::RunInspect},
    {"tokenize", "print the token ids (and pieces) of a text", mnemo::cli::RunTokenize},
    {"generate", "generate text from a prompt (CPU)", mnemo::cli::RunGenerate},
    {"chat", "an interactive multi-turn chat on one session (CPU)", mnemo::cli::RunChat},
    {"serve", "serve the OpenAI and session HTTP APIs (docs/api.md)", mnemo::cli::RunServe},
    {"session", "list, verify, remove, export and import saved sessions (--state-dir)",
     mnemo::cli::RunSession},
    {"bench", "measure stateful vs stateless serving (multiturn) or the kernels",
     mnemo::cli::RunBench},
    {"make-test-model", "write a tiny random-weight model for tests", mnemo::cli::RunMakeTestModel},
};

void PrintUsage(std::FILE* out) {
  std::fprintf(out, "usage: mnemo SUBCOMMAND [ARGS...]   (mnemo SUBCOMMAND --help for more)\n\n");
  for (const Subcommand& s : kSubcommands) std::fprintf(out, "  %-16s %s\n", s.name, s.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    PrintUsage(stderr);
    return 2;
  }
  const std::string_view cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    PrintUsage(stdout);
    return 0;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  for (const Subcommand& s : kSubcommands) {
    if (cmd == s.name) return s.run(args);
  }
  std::fprintf(stderr, "mnemo: unknown subcommand '%s' (mnemo --help lists them)\n", argv[1]);
  return 2;
}
