// mnemo session ls|verify|rm|export|import --state-dir DIR ...
//
// The durable sessions of a state directory (docs/state-format.md, "Command line"). `ls`,
// `verify` and `export` open the directory read-only (StateDirOptions::read_only): they
// never create, quarantine or collect anything, so they are safe on a directory a running
// engine owns and work on a read-only mount. They therefore list the directory themselves
// instead of calling StateDir::Scan, which repairs as it goes.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "cache/session.h"
#include "cache/state_manifest.h"
#include "cache/state_store.h"
#include "nlohmann/json.hpp"
#include "tools/mnemo/cli.h"
#include "tools/mnemo/commands.h"

namespace mnemo::cli {
namespace {

using cache::SessionId;
using cache::SessionRecord;
using cache::StateDir;
using nlohmann::json;

constexpr int kNoLimit = std::numeric_limits<int>::max();
// The subdirectory where Scan moves corrupt sessions (cache/state_store.h): not a session.
constexpr char kQuarantineName[] = "quarantine";
// Characters of the model fingerprint shown by `ls` (the JSON has all of it).
constexpr size_t kShortFingerprint = 12;

const FlagSpec kStateDirFlag = {"state-dir", true, "DIR", "the state directory (required)"};

// The verbs of the family. Each spec's name is "session VERB", so that cli::Parse's usage
// errors read "usage: mnemo session VERB ...".
enum class Verb { kLs, kVerify, kRm, kExport, kImport };

struct VerbSpec {
  Verb verb;
  const char* word;
  CommandSpec spec;
};

const std::vector<VerbSpec>& Verbs() {
  static const std::vector<VerbSpec> verbs = {
      {Verb::kLs,
       "ls",
       {.name = "session ls",
        .usage = "--state-dir DIR [--json]",
        .summary = "Lists the sessions of DIR, one line each: id, tenant, tokens, tokens with\n"
                   "KV, turns, bytes of KV on disk, last use (UTC) and model fingerprint.\n"
                   "Entries that do not read as a session are reported on stderr; nothing\n"
                   "in DIR is changed.",
        .flags = {kStateDirFlag, {"json", false, "", "print a JSON array of sessions"}},
        .min_positionals = 0,
        .max_positionals = 0}},
      {Verb::kVerify,
       "verify",
       {.name = "session verify",
        .usage = "--state-dir DIR [ID...]",
        .summary = "Reads every block of the given sessions (default: all of DIR) and checks\n"
                   "its checksum. Prints 'ok ID' or 'FAILED ID: why' per session; exits 1 if\n"
                   "any failed. Nothing in DIR is changed.",
        .flags = {kStateDirFlag},
        .min_positionals = 0,
        .max_positionals = kNoLimit}},
      {Verb::kRm,
       "rm",
       {.name = "session rm",
        .usage = "--state-dir DIR ID...",
        .summary = "Deletes the sessions (manifest first, then their segments). Exits 1 if\n"
                   "any could not be removed; the others are removed all the same.",
        .flags = {kStateDirFlag},
        .min_positionals = 1,
        .max_positionals = kNoLimit}},
      {Verb::kExport,
       "export",
       {.name = "session export",
        .usage = "--state-dir DIR ID OUT_FILE",
        .summary = "Writes session ID as one portable bundle file, checksumming every block\n"
                   "on the way (nothing is written if one does not verify).",
        .flags = {kStateDirFlag},
        .min_positionals = 2,
        .max_positionals = 2}},
      {Verb::kImport,
       "import",
       {.name = "session import",
        .usage = "--state-dir DIR FILE",
        .summary = "Verifies the bundle FILE and adds its session to DIR (created if\n"
                   "missing); prints the session's id. Refuses an id DIR already has.",
        .flags = {kStateDirFlag},
        .min_positionals = 1,
        .max_positionals = 1}},
  };
  return verbs;
}

std::string FamilyHelp() {
  std::string s =
      "usage: mnemo session ls|verify|rm|export|import --state-dir DIR ...\n\n"
      "The durable sessions of a state directory (docs/state-format.md).\n\n";
  for (const VerbSpec& v : Verbs()) {
    s += absl::StrFormat("  mnemo session %-7s %s\n", v.word, v.spec.usage);
  }
  s += "\nmnemo session VERB --help describes one.\n";
  return s;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// Prints "mnemo session VERB: <text>" to stderr.
void Error(const char* verb, const std::string& text) {
  std::fprintf(stderr, "mnemo session %s: %s\n", verb, text.c_str());
}

std::string IsoTime(int64_t unix_us) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMicros(unix_us), absl::UTCTimeZone());
}

uint64_t DiskBytes(const SessionRecord& r) {
  uint64_t bytes = 0;
  for (const cache::DiskBlock& b : r.blocks) bytes += b.length;
  return bytes;
}

std::optional<SessionId> ParseId(const char* verb, const std::string& text) {
  std::optional<SessionId> id = SessionId::Parse(text);
  if (!id) {
    Error(verb, absl::StrCat("'", text, "' is not a session id (sess_ and 32 hex digits)"));
  }
  return id;
}

// The entries of the state directory, sorted by name, without the quarantine. The names that
// parse as session ids come with their id.
struct DirEntry {
  std::string name;
  std::optional<SessionId> id;
};

absl::StatusOr<std::vector<DirEntry>> ListEntries(const std::string& root) {
  std::error_code ec;
  std::filesystem::directory_iterator it(root, ec);
  if (ec) return absl::UnavailableError(absl::StrCat(root, ": cannot list: ", ec.message()));
  std::vector<DirEntry> entries;
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name == kQuarantineName || name == cache::kServerDirName) continue;
    std::optional<SessionId> id = SessionId::Parse(name);
    entries.push_back({std::move(name), id});
  }
  if (ec) return absl::UnavailableError(absl::StrCat(root, ": cannot list: ", ec.message()));
  std::sort(entries.begin(), entries.end(),
            [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  return entries;
}

// What ls and verify say about an entry that is not a session.
constexpr char kNotASession[] = "not a session (the name is not sess_ and 32 hex digits)";

// Quarantined sessions are not listed; say that there are some.
void NoteQuarantine(const char* verb, const std::string& root) {
  std::error_code ec;
  const std::filesystem::path q = std::filesystem::path(root) / kQuarantineName;
  if (!std::filesystem::is_directory(q, ec)) return;
  int n = 0;
  for (std::filesystem::directory_iterator it(q, ec), end; !ec && it != end; it.increment(ec)) {
    ++n;
  }
  if (n > 0) {
    Error(verb, absl::StrCat(n, " corrupt session", n == 1 ? "" : "s", " in ", q.string(),
                             " (not listed)"));
  }
}

void ReportProblems(const char* verb, int problems, const std::string& root) {
  if (problems == 0) return;
  Error(verb, absl::StrCat(problems, " entr", problems == 1 ? "y" : "ies", " of ", root,
                           " skipped (listed above)"));
}

absl::StatusOr<std::unique_ptr<StateDir>> OpenReadOnly(const std::string& root) {
  return StateDir::Open(root, {.read_only = true});
}

// Opens an existing directory for writing: unlike StateDir::Open, never creates it.
absl::StatusOr<std::unique_ptr<StateDir>> OpenExisting(const std::string& root) {
  std::error_code ec;
  if (!std::filesystem::exists(root, ec)) {
    return absl::NotFoundError(absl::StrCat("no state directory at ", root));
  }
  return StateDir::Open(root);
}

json RecordJson(const SessionRecord& r) {
  return {{"id", r.id.ToString()},
          {"tenant", r.tenant},
          {"tokens", r.tokens.size()},
          {"kv_tokens", r.kv_tokens},
          {"turns", r.turns.size()},
          {"messages", r.messages.size()},
          {"blocks", r.blocks.size()},
          {"bytes", DiskBytes(r)},
          {"created", IsoTime(r.created_unix_us)},
          {"last_used", IsoTime(r.last_used_unix_us)},
          {"last_used_unix_us", r.last_used_unix_us},
          {"ttl_us", r.ttl_us},
          {"model_fingerprint", r.model_fingerprint}};
}

int RunLs(const std::string& root, bool as_json) {
  auto dir = OpenReadOnly(root);
  if (!dir.ok()) {
    Error("ls", Message(dir.status()));
    return 1;
  }
  auto entries = ListEntries(root);
  if (!entries.ok()) {
    Error("ls", Message(entries.status()));
    return 1;
  }
  std::vector<SessionRecord> records;
  int problems = 0;
  for (const DirEntry& e : *entries) {
    if (!e.id) {
      Error("ls", absl::StrCat("skipped ", e.name, ": ", kNotASession));
      ++problems;
      continue;
    }
    absl::StatusOr<SessionRecord> r = (*dir)->ReadManifest(*e.id);
    if (!r.ok()) {
      Error("ls", absl::StrCat("skipped ", e.name, ": ", Message(r.status())));
      ++problems;
      continue;
    }
    records.push_back(*std::move(r));
  }
  if (as_json) {
    json out = json::array();
    for (const SessionRecord& r : records) out.push_back(RecordJson(r));
    std::printf("%s\n", out.dump(2, ' ', false, json::error_handler_t::replace).c_str());
  } else if (records.empty()) {
    std::printf("no sessions in %s\n", root.c_str());
  } else {
    std::printf("%-37s %-12s %8s %8s %5s %10s %-20s %s\n", "ID", "TENANT", "TOKENS", "KV", "TURNS",
                "BYTES", "LAST USED (UTC)", "MODEL");
    for (const SessionRecord& r : records) {
      std::printf("%-37s %-12s %8zu %8lld %5zu %10s %-20s %s\n", r.id.ToString().c_str(),
                  r.tenant.empty() ? "-" : r.tenant.c_str(), r.tokens.size(),
                  static_cast<long long>(r.kv_tokens), r.turns.size(),
                  FormatBytes(DiskBytes(r)).c_str(), IsoTime(r.last_used_unix_us).c_str(),
                  r.model_fingerprint.substr(0, kShortFingerprint).c_str());
    }
  }
  NoteQuarantine("ls", root);
  ReportProblems("ls", problems, root);
  return 0;
}

int RunVerify(const std::string& root, const std::vector<std::string>& ids) {
  auto dir = OpenReadOnly(root);
  if (!dir.ok()) {
    Error("verify", Message(dir.status()));
    return 1;
  }
  // (the name as given, its id if it parses)
  std::vector<DirEntry> targets;
  int problems = 0;
  if (ids.empty()) {
    auto entries = ListEntries(root);
    if (!entries.ok()) {
      Error("verify", Message(entries.status()));
      return 1;
    }
    for (DirEntry& e : *entries) {
      if (e.id) {
        targets.push_back(std::move(e));
      } else {
        Error("verify", absl::StrCat("skipped ", e.name, ": ", kNotASession));
        ++problems;
      }
    }
  } else {
    for (const std::string& text : ids) targets.push_back({text, SessionId::Parse(text)});
  }
  int failed = 0;
  for (const DirEntry& t : targets) {
    const absl::Status s =
        t.id ? (*dir)->Verify(*t.id)
             : absl::InvalidArgumentError("not a session id (sess_ and 32 hex digits)");
    if (s.ok()) {
      std::printf("ok %s\n", t.name.c_str());
    } else {
      std::printf("FAILED %s: %s\n", t.name.c_str(), Message(s).c_str());
      ++failed;
    }
  }
  if (targets.empty()) std::printf("no sessions in %s\n", root.c_str());
  ReportProblems("verify", problems, root);
  if (failed > 0) {
    Error("verify", absl::StrCat(failed, " of ", targets.size(), " session",
                                 targets.size() == 1 ? "" : "s", " failed"));
    return 1;
  }
  return 0;
}

int RunRm(const std::string& root, const std::vector<std::string>& ids) {
  auto dir = OpenExisting(root);
  if (!dir.ok()) {
    Error("rm", Message(dir.status()));
    return 1;
  }
  bool all_ok = true;
  for (const std::string& text : ids) {
    std::optional<SessionId> id = ParseId("rm", text);
    if (!id) {
      all_ok = false;
      continue;
    }
    if (absl::Status s = (*dir)->Remove(*id); !s.ok()) {
      Error("rm", Message(s));
      all_ok = false;
      continue;
    }
    std::printf("removed %s\n", text.c_str());
  }
  return all_ok ? 0 : 1;
}

int RunExport(const std::string& root, const std::string& id_text, const std::string& out_file) {
  std::optional<SessionId> id = ParseId("export", id_text);
  if (!id) return 1;
  auto dir = OpenReadOnly(root);
  if (!dir.ok()) {
    Error("export", Message(dir.status()));
    return 1;
  }
  if (absl::Status s = (*dir)->Export(*id, out_file); !s.ok()) {
    Error("export", Message(s));
    return 1;
  }
  std::error_code ec;
  const uintmax_t bytes = std::filesystem::file_size(out_file, ec);
  std::printf("exported %s to %s (%s)\n", id->ToString().c_str(), out_file.c_str(),
              ec ? "size unknown" : FormatBytes(bytes).c_str());
  return 0;
}

int RunImport(const std::string& root, const std::string& bundle) {
  auto dir = StateDir::Open(root);
  if (!dir.ok()) {
    Error("import", Message(dir.status()));
    return 1;
  }
  absl::StatusOr<SessionId> id = (*dir)->Import(bundle);
  if (!id.ok()) {
    Error("import", Message(id.status()));
    return 1;
  }
  std::printf("%s\n", id->ToString().c_str());
  return 0;
}

}  // namespace

int RunSession(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::fprintf(stderr,
                 "mnemo session: usage: mnemo session ls|verify|rm|export|import --state-dir DIR "
                 "... (mnemo session --help)\n");
    return 2;
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::printf("%s", FamilyHelp().c_str());
    return 0;
  }
  const VerbSpec* verb = nullptr;
  for (const VerbSpec& v : Verbs()) {
    if (args[0] == v.word) verb = &v;
  }
  if (verb == nullptr) {
    std::fprintf(stderr,
                 "mnemo session: unknown verb '%s' (one of ls, verify, rm, export, import)\n",
                 args[0].c_str());
    return 2;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  auto parsed = Parse(verb->spec, rest);
  if (!parsed.ok()) {
    Error(verb->word, Message(parsed.status()));
    return 2;
  }
  if (parsed->Has("help")) {
    std::printf("%s", HelpText(verb->spec).c_str());
    return 0;
  }
  std::optional<std::string> root = parsed->Get("state-dir");
  // "dir/" and "dir" name one directory; messages show the latter.
  while (root && root->size() > 1 && root->back() == '/') root->pop_back();
  if (!root || root->empty()) {
    Error(verb->word, absl::StrCat("--state-dir DIR is required (usage: mnemo ", verb->spec.name,
                                   " ", verb->spec.usage, ")"));
    return 2;
  }
  const std::vector<std::string>& pos = parsed->positionals();
  switch (verb->verb) {
    case Verb::kLs:
      return RunLs(*root, parsed->Has("json"));
    case Verb::kVerify:
      return RunVerify(*root, pos);
    case Verb::kRm:
      return RunRm(*root, pos);
    case Verb::kExport:
      return RunExport(*root, pos[0], pos[1]);
    case Verb::kImport:
      return RunImport(*root, pos[0]);
  }
  return 2;
}

}  // namespace mnemo::cli
