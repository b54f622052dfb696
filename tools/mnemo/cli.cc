#include "tools/mnemo/cli.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mnemo::cli {
namespace {

const FlagSpec* FindFlag(const CommandSpec& spec, const std::string& name) {
  for (const FlagSpec& f : spec.flags) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

}  // namespace

std::optional<std::string> ParsedArgs::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<int64_t> ParsedArgs::GetInt(const std::string& name, int64_t fallback) const {
  auto v = Get(name);
  if (!v) return fallback;
  errno = 0;
  char* end = nullptr;
  long long x = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || errno == ERANGE) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": not an integer: '", *v, "'"));
  }
  return static_cast<int64_t>(x);
}

absl::StatusOr<double> ParsedArgs::GetDouble(const std::string& name, double fallback) const {
  auto v = Get(name);
  if (!v) return fallback;
  errno = 0;
  char* end = nullptr;
  double x = std::strtod(v->c_str(), &end);
  if (v->empty() || *end != '\0' || errno == ERANGE) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": not a number: '", *v, "'"));
  }
  return x;
}

absl::StatusOr<ParsedArgs> Parse(const CommandSpec& spec, const std::vector<std::string>& args) {
  ParsedArgs out;
  bool flags_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (flags_done || a.size() < 2 || a[0] != '-' || a[1] != '-') {
      if (!flags_done && a.size() > 1 && a[0] == '-' && a != "-") {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown option '", a, "' (options are spelled --name)"));
      }
      out.positionals_.push_back(a);
      continue;
    }
    if (a == "--") {
      flags_done = true;
      continue;
    }
    std::string name = a.substr(2);
    std::optional<std::string> inline_value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (name == "help") {
      out.values_["help"] = "";
      continue;
    }
    const FlagSpec* f = FindFlag(spec, name);
    if (f == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option '--", name, "' for 'mnemo ", spec.name, "'"));
    }
    if (!f->takes_value) {
      if (inline_value) {
        return absl::InvalidArgumentError(absl::StrCat("option '--", name, "' takes no value"));
      }
      out.values_[name] = "";
      continue;
    }
    if (inline_value) {
      out.values_[name] = *inline_value;
    } else if (i + 1 < args.size()) {
      out.values_[name] = args[++i];
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("option '--", name, "' needs a value (", f->value_name, ")"));
    }
  }
  if (!out.Has("help")) {
    const int n = static_cast<int>(out.positionals_.size());
    if (n < spec.min_positionals || n > spec.max_positionals) {
      // Errors are one line: a usage of several lines is cut after its first.
      const size_t eol = spec.usage.find('\n');
      return absl::InvalidArgumentError(
          absl::StrCat("usage: mnemo ", spec.name, " ", spec.usage.substr(0, eol),
                       eol == std::string::npos
                           ? ""
                           : absl::StrCat(" ... (mnemo ", spec.name, " --help lists them all)")));
    }
  }
  return out;
}

std::string HelpText(const CommandSpec& spec) {
  std::string s =
      absl::StrCat("usage: mnemo ", spec.name, " ", spec.usage, "\n\n", spec.summary, "\n");
  if (!spec.flags.empty()) s += "\noptions:\n";
  for (const FlagSpec& f : spec.flags) {
    std::string left = absl::StrCat("--", f.name, f.takes_value ? " " + f.value_name : "");
    s += absl::StrFormat("  %-24s %s\n", left, f.help);
  }
  s += absl::StrFormat("  %-24s %s\n", "--help", "show this help");
  return s;
}

absl::StatusOr<uint64_t> ParseByteSize(std::string_view text) {
  size_t i = 0;
  uint64_t value = 0;
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a byte size: '", std::string(text), "' (e.g. 512M, 4G)"));
  }
  for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i) {
    const uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - d) / 10) {
      return absl::InvalidArgumentError(
          absl::StrCat("byte size too large: '", std::string(text), "'"));
    }
    value = value * 10 + d;
  }
  std::string suffix;
  for (; i < text.size(); ++i) suffix += static_cast<char>(std::toupper(text[i]));
  int shift = 0;
  if (suffix.empty() || suffix == "B") {
    shift = 0;
  } else if (suffix == "K" || suffix == "KB" || suffix == "KIB") {
    shift = 10;
  } else if (suffix == "M" || suffix == "MB" || suffix == "MIB") {
    shift = 20;
  } else if (suffix == "G" || suffix == "GB" || suffix == "GIB") {
    shift = 30;
  } else if (suffix == "T" || suffix == "TB" || suffix == "TIB") {
    shift = 40;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown size suffix in '", std::string(text), "' (use K, M, G or T)"));
  }
  if (shift > 0 && value > (std::numeric_limits<uint64_t>::max() >> shift)) {
    return absl::InvalidArgumentError(
        absl::StrCat("byte size too large: '", std::string(text), "'"));
  }
  return value << shift;
}

std::string FormatBytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  if (u == 0) return absl::StrCat(bytes, " B");
  return absl::StrFormat("%.2f %s", v, units[u]);
}

}  // namespace mnemo::cli
