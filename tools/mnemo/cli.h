// A small command-line parser shared by the `mnemo` subcommands.
//
// Each subcommand declares its flags (name, whether it takes a value, help text) and gets
// back positionals and flag values, or a one-line error naming the offending argument.
// Accepted forms: `--name value`, `--name=value`, `--flag` (booleans), `--` ends flags.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace mnemo::cli {

struct FlagSpec {
  std::string name;  // without the leading dashes
  bool takes_value = false;
  std::string value_name;  // shown in help, e.g. "N"
  std::string help;
};

struct CommandSpec {
  std::string name;     // "inspect"
  std::string usage;    // "MODEL [--json]"
  std::string summary;  // one line
  std::vector<FlagSpec> flags;
  int min_positionals = 0;
  int max_positionals = 0;
};

class ParsedArgs {
 public:
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::optional<std::string> Get(const std::string& name) const;
  const std::vector<std::string>& positionals() const { return positionals_; }

  // Typed accessors: InvalidArgument naming the flag when the value does not parse.
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t fallback) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback) const;

 private:
  friend absl::StatusOr<ParsedArgs> Parse(const CommandSpec&, const std::vector<std::string>&);
  std::map<std::string, std::string> values_;
  std::vector<std::string> positionals_;
};

// Parses `args` (the words after the subcommand name). `--help` is always accepted and
// recorded as the flag "help"; positional-count checks are skipped when it is present.
absl::StatusOr<ParsedArgs> Parse(const CommandSpec& spec, const std::vector<std::string>& args);

// The help text of a subcommand.
std::string HelpText(const CommandSpec& spec);

// Parses a byte size with an optional suffix: 512, 64K, 512M, 4G, 1T (powers of 1024;
// "KiB"/"MB" spellings accepted too). InvalidArgument on anything else or overflow.
absl::StatusOr<uint64_t> ParseByteSize(std::string_view text);

// "1.23 MiB" style, for humans.
std::string FormatBytes(uint64_t bytes);

}  // namespace mnemo::cli
