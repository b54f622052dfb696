// mnemo serve MODEL [--host H] [--port P] [--state-dir DIR] [--device-budget B]
//                   [--host-budget B] [--disk-budget B] [--api-keys FILE] [--threads N]
//                   [--config FILE] ...
//
// Serves the model over HTTP (docs/api.md) until SIGTERM or SIGINT, then drains: stops
// accepting, lets requests in flight finish (or cancels them at --drain-timeout), writes
// every session down (with --state-dir) and exits 0. A config file (JSON) holds the same
// settings as the flags, by the flags' names ({"port": 8080, "state-dir": "/var/lib/mnemo"});
// flags given on the command line win.
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "engine/server/server.h"
#include "nlohmann/json.hpp"
#include "tools/mnemo/cli.h"
#include "tools/mnemo/commands.h"
#include "tools/mnemo/engine_flags.h"
#include "tools/mnemo/sampling_flags.h"

namespace mnemo::cli {
namespace {

const CommandSpec& Spec() {
  static const CommandSpec spec = {
      .name = "serve",
      .usage =
          "MODEL [--host H] [--port P] [--state-dir DIR] [--device-budget BYTES]\n"
          "       [--host-budget BYTES] [--disk-budget BYTES] [--api-keys FILE] [--threads N]\n"
          "       [--config FILE] [--durability MODE] [--insecure] [--audit-log FILE]\n"
          "       [--compaction none|window|score|summarize] [--compaction-* ...]",
      .summary =
          "Serves MODEL over HTTP: the OpenAI API (/v1/chat/completions, /v1/completions,\n"
          "/v1/responses), mnemo's session API (/v1/sessions) and /metrics (docs/api.md).\n"
          "SIGTERM or SIGINT drains and exits 0. Defaults serve on 127.0.0.1:8080.\n",
      .flags = JoinFlags(
          {{{"host", true, "H", "address to bind (default 127.0.0.1)"},
            {"port", true, "P", "port (default 8080; 0 = any free port)"},
            {"state-dir", true, "DIR", "durable sessions and the disk tier"},
            {"device-budget", true, "BYTES", "KV memory of the device tier (default 1G)"},
            {"host-budget", true, "BYTES", "host tier for spilled sessions (default 0)"},
            {"disk-budget", true, "BYTES", "bytes of blocks in --state-dir (default: any)"},
            {"api-keys", true, "FILE", "lines \"KEY TENANT\"; without it, loopback only"},
            {"threads", true, "N", "CPU threads for the model, 0 = all (default 0)"},
            {"device", true, "DEV", "cpu (default) or cuda[:N]"},
            {"config", true, "FILE", "a JSON object of these settings"},
            {"durability", true, "MODE", "async (default), sync or none"},
            {"insecure", false, "", "allow a non-loopback --host without --api-keys"},
            {"audit-log", true, "FILE", "append one JSON line per action"},
            {"model-name", true, "NAME", "the model id clients use (default: the file's)"},
            {"max-concurrent", true, "N", "requests in flight per tenant (default 64)"},
            {"max-sessions", true, "N", "sessions per tenant (default 0: no limit)"},
            {"tenant-host-quota", true, "BYTES", "host-tier bytes per tenant (default: none)"},
            {"tenant-disk-quota", true, "BYTES", "disk-tier bytes per tenant (default: none)"},
            {"drain-timeout", true, "SECONDS", "how long a drain waits (default 30)"}},
           CompactionFlagSpecs()}),
      .min_positionals = 1,
      .max_positionals = 1,
  };
  return spec;
}

int Fail(std::string_view msg, int code) {
  std::fprintf(stderr, "mnemo serve: %.*s\n", static_cast<int>(msg.size()), msg.data());
  return code;
}

// The config file's settings become flags placed before the command line's (which win).
absl::StatusOr<std::vector<std::string>> ConfigArgs(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read the config file ", path));
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  std::vector<std::string> args;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const FlagSpec* flag = nullptr;
    for (const FlagSpec& f : Spec().flags) {
      if (f.name == it.key()) flag = &f;
    }
    if (flag == nullptr || it.key() == "config") {
      return absl::InvalidArgumentError(absl::StrCat(path, ": unknown setting \"", it.key(), "\""));
    }
    if (!flag->takes_value) {
      if (!it->is_boolean()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": \"", it.key(), "\" must be true or false"));
      }
      if (it->get<bool>()) args.push_back("--" + it.key());
      continue;
    }
    if (it->is_string()) {
      args.push_back(absl::StrCat("--", it.key(), "=", it->get<std::string>()));
    } else if (it->is_number()) {
      args.push_back(absl::StrCat("--", it.key(), "=", it->dump()));
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": \"", it.key(), "\" must be a string or a number"));
    }
  }
  return args;
}

}  // namespace

int RunServe(const std::vector<std::string>& argv) {
  auto first = Parse(Spec(), argv);
  if (!first.ok()) return Fail(AsStd(first.status().message()), 2);
  if (first->Has("help")) {
    std::printf("%s", HelpText(Spec()).c_str());
    return 0;
  }
  std::vector<std::string> args = argv;
  if (auto config = first->Get("config")) {
    auto extra = ConfigArgs(*config);
    if (!extra.ok()) return Fail(AsStd(extra.status().message()), 2);
    args.insert(args.begin(), extra->begin(), extra->end());
  }
  auto parsed = Parse(Spec(), args);
  if (!parsed.ok()) return Fail(AsStd(parsed.status().message()), 2);

  engine::EngineOptions eo;
  if (absl::Status st = ApplyEngineFlags(*parsed, &eo); !st.ok())
    return Fail(AsStd(st.message()), 2);
  auto threads = parsed->GetInt("threads", 0);
  auto port = parsed->GetInt("port", 8080);
  auto max_concurrent = parsed->GetInt("max-concurrent", 64);
  auto max_sessions = parsed->GetInt("max-sessions", 0);
  auto drain = parsed->GetDouble("drain-timeout", 30.0);
  for (const absl::Status& s : {threads.status(), port.status(), max_concurrent.status(),
                                max_sessions.status(), drain.status()}) {
    if (!s.ok()) return Fail(AsStd(s.message()), 2);
  }
  if (*threads < 0 || *threads > 4096) return Fail("--threads must be in [0, 4096]", 2);
  if (*port < 0 || *port > 65535) return Fail("--port must be in [0, 65535]", 2);
  if (*max_concurrent < 1 || *max_concurrent > 100000) {
    return Fail("--max-concurrent must be in [1, 100000]", 2);
  }
  if (*max_sessions < 0 || *max_sessions > (int64_t{1} << 30)) {
    return Fail("--max-sessions must be >= 0", 2);
  }
  if (!(*drain >= 0)) return Fail("--drain-timeout must be >= 0", 2);
  eo.threads = static_cast<int>(*threads);

  server::ServerOptions so;
  so.host = parsed->Get("host").value_or("127.0.0.1");
  so.port = static_cast<int>(*port);
  so.api_keys_file = parsed->Get("api-keys").value_or("");
  so.insecure = parsed->Has("insecure");
  so.audit_log = parsed->Get("audit-log").value_or("");
  so.max_concurrent_per_tenant = static_cast<int>(*max_concurrent);
  so.max_sessions_per_tenant = static_cast<int>(*max_sessions);

  // SIGTERM and SIGINT are taken by sigwait below: block them before any thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  const std::string model_path = parsed->positionals()[0];
  auto model = engine::Model::Open(model_path);
  if (!model.ok()) return Fail(AsStd(model.status().message()), 1);
  so.model_name = parsed->Get("model-name").value_or("");
  if (so.model_name.empty()) {
    const size_t slash = model_path.find_last_of('/');
    so.model_name = slash == std::string::npos ? model_path : model_path.substr(slash + 1);
  }
  auto engine = engine::Engine::Create(**model, eo);
  if (!engine.ok()) return Fail(AsStd(engine.status().message()), 1);
  for (const auto& list : {(*engine)->recovery().quarantined, (*engine)->recovery().skipped,
                           (*engine)->recovery().refused}) {
    for (const std::string& p : list)
      std::fprintf(stderr, "mnemo serve: state directory: %s\n", p.c_str());
  }
  auto server = server::Server::Create(**engine, so);
  if (!server.ok()) return Fail(AsStd(server.status().message()), 2);
  if (absl::Status st = (*server)->Start(); !st.ok()) return Fail(AsStd(st.message()), 1);
  std::fprintf(
      stderr,
      "mnemo serve: %s on http://%s:%d (%lld sessions recovered)\n"
      "  try: curl http://%s:%d/v1/chat/completions -H 'Content-Type: application/json' "
      "-d '{\"model\": \"%s\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'\n",
      so.model_name.c_str(), so.host.c_str(), (*server)->port(),
      static_cast<long long>((*engine)->recovery().sessions), so.host.c_str(), (*server)->port(),
      so.model_name.c_str());
  std::fflush(stderr);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::fprintf(stderr, "mnemo serve: %s: draining\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  const int64_t cancelled = (*server)->Drain(absl::Seconds(*drain));
  const engine::ShutdownReport report = (*engine)->Shutdown();
  std::fprintf(stderr,
               "mnemo serve: stopped (%lld requests cancelled at the deadline; %lld sessions "
               "written, %lld failed, %lld timed out, %.2f s)\n",
               static_cast<long long>(cancelled), static_cast<long long>(report.written),
               static_cast<long long>(report.failed), static_cast<long long>(report.timed_out),
               report.seconds);
  for (const std::string& e : report.errors)
    std::fprintf(stderr, "mnemo serve: not saved: %s\n", e.c_str());
  return report.failed > 0 || report.timed_out > 0 ? 1 : 0;
}

}  // namespace mnemo::cli
