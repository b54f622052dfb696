// The `mnemo` subcommands. Each takes the words after its name and returns the process
// exit code; it prints results to stdout and a one-line error to stderr.
#pragma once

#include <string>
#include <vector>

namespace mnemo::cli {

int RunInspect(const std::vector<std::string>& args);
int RunTokenize(const std::vector<std::string>& args);
int RunMakeTestModel(const std::vector<std::string>& args);
int RunGenerate(const std::vector<std::string>& args);
int RunChat(const std::vector<std::string>& args);
int RunServe(const std::vector<std::string>& args);
int RunSession(const std::vector<std::string>& args);
int RunBench(const std::vector<std::string>& args);

}  // namespace mnemo::cli
