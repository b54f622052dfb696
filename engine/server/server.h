// mnemo's HTTP server (docs/api.md): the OpenAI-compatible API (/v1/models, /v1/chat/
// completions, /v1/completions), the stateful Responses API (/v1/responses) and the native
// session API (/v1/sessions...), over one Engine, with API-key tenants, per-tenant limits,
// Prometheus metrics and a graceful drain. Built on cpp-httplib (a thread per connection
// from its pool) and nlohmann-json; every engine call is thread-safe, so handlers call the
// Engine directly and stream from its ResponseStreams.
//
// Thread-safety: Start, Drain and Stop from one controlling thread; handlers run on
// cpp-httplib's worker threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine.h"

namespace mnemo::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (see Server::port())
  // Lines "KEY TENANT" ('#' starts a comment). Empty: no authentication, every request is
  // tenant "default", and only loopback hosts may be bound unless `insecure` is set.
  std::string api_keys_file;
  bool insecure = false;
  std::string model_name;  // the id /v1/models lists and responses report ("" : the file's)
  size_t max_body_bytes = size_t{8} << 20;  // larger bodies: 413
  int max_concurrent_per_tenant = 64;       // requests in flight per tenant; more: 429
  int max_sessions_per_tenant = 0;          // 0: no limit; more: 429 on creation
  // cpp-httplib workers: one per open connection (keep-alive connections hold theirs while
  // open; more connections wait). 0: max(128, 8 x hardware threads).
  int http_threads = 0;
  std::string audit_log;       // JSON lines appended here ("" : none)
  bool audit_prompts = false;  // include prompt text in the audit log
  bool log_requests = true;    // one structured line per request on stderr
};

class ServerState;

class Server {
 public:
  // InvalidArgument for a bad option (a non-loopback host without keys or `insecure`), the
  // keys file's errors naming the line.
  static absl::StatusOr<std::unique_ptr<Server>> Create(engine::Engine& engine,
                                                        const ServerOptions& options);
  ~Server();  // Stop()

  // Binds and starts serving on a background thread. Unavailable when the address cannot be
  // bound (naming it and errno's text).
  absl::Status Start();
  int port() const;
  // Stops accepting work (new requests get 503 and /ready says so), waits until the
  // requests in flight end or `deadline` passes (then cancels them), and stops listening.
  // Returns how many requests were cancelled. The caller then shuts the engine down
  // (Engine::Shutdown writes the sessions down).
  int64_t Drain(absl::Duration deadline);
  void Stop();

 private:
  Server(engine::Engine& engine, const ServerOptions& options);
  std::unique_ptr<ServerState> state_;
  std::thread listener_;
};

}  // namespace mnemo::server
