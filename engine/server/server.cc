// The Server (engine/server/server.h): options, API keys, binding, the operational routes
// (/health, /ready, /metrics) and the drain.
#include "engine/server/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cache/base/strings.h"
#include "engine/server/internal/common.h"

namespace mnemo::server {

namespace {

bool IsLoopback(const std::string& host) {
  if (host == "localhost") return true;
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return false;
}

absl::StatusOr<absl::flat_hash_map<std::string, std::string>> ReadKeys(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read the API keys file ", path, ": ", std::strerror(errno)));
  }
  absl::flat_hash_map<std::string, std::string> keys;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    std::string_view body = line;
    if (const size_t hash = body.find('#'); hash != std::string_view::npos) {
      body = body.substr(0, hash);
    }
    std::vector<std::string> parts =
        absl::StrSplit(AsAbsl(body), absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (parts.empty()) continue;
    if (parts.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", n, ": want \"KEY TENANT\" (two words), got ", parts.size(), " words"));
    }
    if (!keys.emplace(parts[0], parts[1]).second) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": this key is listed twice"));
    }
  }
  if (keys.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no keys (lines \"KEY TENANT\")"));
  }
  return keys;
}

}  // namespace

Server::Server(engine::Engine& engine, const ServerOptions& options)
    : state_(std::make_unique<ServerState>(engine, options)) {}

Server::~Server() { Stop(); }

absl::StatusOr<std::unique_ptr<Server>> Server::Create(engine::Engine& engine,
                                                       const ServerOptions& options) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("port must be in [0, 65535], got ", options.port));
  }
  if (options.api_keys_file.empty() && !options.insecure && !IsLoopback(options.host)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "refusing to serve ", options.host,
        " without API keys: give --api-keys FILE, bind a loopback address, or pass --insecure"));
  }
  std::unique_ptr<Server> s(new Server(engine, options));
  ServerState& st = *s->state_;
  if (!options.api_keys_file.empty()) {
    auto keys = ReadKeys(options.api_keys_file);
    if (!keys.ok()) return keys.status();
    st.keys = std::move(*keys);
  }
  if (!options.audit_log.empty()) {
    st.audit_ = std::fopen(options.audit_log.c_str(), "a");
    if (st.audit_ == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot open the audit log ", options.audit_log, ": ", std::strerror(errno)));
    }
  }
  st.model_name = options.model_name;
  st.http.set_payload_max_length(options.max_body_bytes);
  // cpp-httplib's 5 s read and write timeouts would drop a client that is slow to send or to
  // read on a loaded machine; a minute, like common reverse proxies.
  st.http.set_read_timeout(60, 0);
  st.http.set_write_timeout(60, 0);
  st.http.set_keep_alive_timeout(30);
  st.http.set_keep_alive_max_count(10000);  // (default 5: clients would reconnect constantly)
  const int threads =
      options.http_threads > 0
          ? options.http_threads
          : std::max(128, 8 * static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  st.http.new_task_queue = [threads] {
    return new httplib::ThreadPool(static_cast<size_t>(threads));
  };
  // Bodies over the limit: cpp-httplib answers 413 itself; give it OpenAI's shape.
  st.http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;  // a handler's own error (cpp-httplib calls this for any >= 400)
    ApiError e;
    e.status = res.status;
    if (res.status == 413) {
      e.message = "the request body is too large";
    } else if (res.status == 404) {
      e.type = "not_found_error";
      e.message = "no such endpoint";
    } else {
      e.message = absl::StrCat("HTTP ", res.status);
    }
    res.set_content(ErrorBody(e).dump(), "application/json");
  });
  Router router(st);
  RegisterOpsRoutes(router);
  RegisterOpenAiRoutes(router);
  RegisterResponsesRoutes(router);
  RegisterSessionRoutes(router);
  return s;
}

absl::Status Server::Start() {
  ServerState& st = *state_;
  int port = st.options.port;
  if (port == 0) {
    port = st.http.bind_to_any_port(st.options.host);
    if (port < 0) port = -1;
  } else if (!st.http.bind_to_port(st.options.host, port)) {
    port = -1;
  }
  if (port < 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", st.options.host, ":",
                                               st.options.port, ": ", std::strerror(errno)));
  }
  st.options.port = port;
  ::listen(st.http.listening_socket(), 1024);  // a larger backlog (capped by somaxconn)
  auto ended = std::make_shared<std::atomic<bool>>(false);
  listener_ = std::thread([&st, ended] {
    st.http.listen_after_bind();
    ended->store(true);
  });
  // Return once the listener runs: a Stop() before that would find nothing to stop, and the
  // listener would then serve forever (cpp-httplib's stop() only acts on a running server).
  while (!st.http.is_running() && !ended->load()) std::this_thread::yield();
  if (ended->load() && !st.http.is_running()) {
    listener_.join();
    return absl::UnavailableError(
        absl::StrCat("cannot serve on ", st.options.host, ":", port, " (the listener ended)"));
  }
  return absl::OkStatus();
}

int Server::port() const { return state_->options.port; }

int64_t Server::Drain(absl::Duration deadline) {
  ServerState& st = *state_;
  st.draining.store(true);
  int64_t cancelled = 0;
  if (st.WaitIdle(absl::Now() + deadline) > 0) {
    cancelled = st.CancelAll();
    st.WaitIdle(absl::Now() + absl::Seconds(5));
  }
  Stop();
  return cancelled;
}

void Server::Stop() {
  ServerState& st = *state_;
  if (st.http.is_running()) st.http.stop();
  if (listener_.joinable()) listener_.join();
  if (st.audit_ != nullptr) {
    std::fclose(st.audit_);
    st.audit_ = nullptr;
  }
}

// ---------------------------------------------------------------------------------------
// /health, /ready, /metrics

void RegisterOpsRoutes(Router& r) {
  r.Get(
      "/health", "/health",
      [](Call& c) {
        c.SendJson(200, {{"status", "ok"}});
      },
      /*auth=*/false);
  r.Get(
      "/ready", "/ready",
      [](Call& c) {
        if (c.server.draining.load()) {
          c.SendJson(503, {{"status", "draining"}});
        } else {
          c.SendJson(200, {{"status", "ready"}});
        }
      },
      /*auth=*/false);
  r.Get(
      "/metrics", "/metrics",
      [](Call& c) {
        c.res.status = 200;
        c.res.set_content(c.server.metrics.Render(c.engine().Stats(), c.server.in_flight(),
                                                  c.server.draining.load()),
                          "text/plain; version=0.0.4");
      },
      /*auth=*/false);
}

}  // namespace mnemo::server
