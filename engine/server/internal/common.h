// Internals shared by the server's API files (engine/server/*.cc): errors in OpenAI's shape,
// request-field validation that names the field, the request parameters common to every
// generating endpoint, the router (auth, limits, metrics, draining) and server-sent events.
// Nothing outside engine/server/ includes this.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "engine/engine.h"
#include "engine/server/server.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace mnemo::server {

using Json = nlohmann::json;

// ---------------------------------------------------------------------------------------
// Errors: {"error": {"message", "type", "param", "code"}} with an HTTP status.

struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  // the offending field; "" : null
  std::string code;   // "" : null
};

ApiError BadRequest(std::string message, std::string param = "");
ApiError NotFound(std::string message);  // 404, type "not_found_error"
// The HTTP form of an engine status: InvalidArgument 400, NotFound 404, FailedPrecondition
// 409 (a session busy, pinned, ...), ResourceExhausted 429, Unavailable 503, Cancelled 499,
// DataLoss/Internal/other 500.
ApiError FromStatus(const absl::Status& status, std::string param = "");
Json ErrorBody(const ApiError& e);

// ---------------------------------------------------------------------------------------
// Field validation

// Reads fields of a JSON object; the first problem is recorded (naming the field) and every
// later read returns nullopt. Absent and null fields are nullopt without an error.
class FieldReader {
 public:
  explicit FieldReader(const Json& object, std::string prefix = "")
      : obj_(object), prefix_(std::move(prefix)) {}

  std::optional<std::string> String(std::string_view name);
  std::optional<int64_t> Int(std::string_view name, int64_t min, int64_t max);
  std::optional<double> Number(std::string_view name, double min, double max);
  std::optional<bool> Bool(std::string_view name);
  // The raw value (any type) or nullptr when absent/null.
  const Json* Raw(std::string_view name) const;
  // Fails unless every key of the object is in `known` (for objects where a typo matters).
  void OnlyKnown(std::initializer_list<std::string_view> known);
  void Fail(std::string_view name, std::string message);

  bool ok() const { return !error_.has_value(); }
  const ApiError& error() const { return *error_; }
  std::string Param(std::string_view name) const { return prefix_ + std::string(name); }

 private:
  const Json& obj_;
  std::string prefix_;
  std::optional<ApiError> error_;
};

// What every generating request shares: sampling, stop conditions, streaming, n.
struct GenerationFields {
  engine::TurnParams params;  // sampling and stop filled; messages/tokens by the endpoint
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int n = 1;
  bool logprobs = false;
  std::string user;
  // Session turns: the usage object also reports compacted_tokens (the history tokens a
  // compaction before the turn dropped), mnemo's extension.
  bool report_compaction = false;
};

// Reads temperature [0, 2], top_p (0, 1], seed, stop (string or array of at most 4),
// max_tokens / max_completion_tokens / max_output_tokens (>= 1; the first of them present),
// presence_penalty and frequency_penalty [-2, 2], logit_bias ({"id": -100..100}), logprobs
// (bool; or, with `completions_logprobs`, an int 0..5 that also sets the top count),
// top_logprobs 0..20, n 1..16, stream, stream_options.include_usage, user, and ignore_eos
// (bool; vLLM's extension: end-of-generation tokens do not stop the reply). Greedy when
// temperature is 0. Defaults as OpenAI's: temperature 1, top_p 1, no limit but the context.
GenerationFields ReadGenerationFields(FieldReader& f, bool completions_logprobs = false);

// Reads a chat `messages` array: objects with role system|developer|user|assistant (developer
// is rendered as system) and content a string or an array of {"type": "text", "text"} parts.
std::vector<engine::ChatMessage> ReadMessages(FieldReader& f, std::string_view name);

// True if `s` is valid UTF-8 (nlohmann-json rejects invalid UTF-8 while parsing, this is for
// bodies read otherwise).
bool ValidUtf8(std::string_view s);

// ---------------------------------------------------------------------------------------
// Metrics (Prometheus text format, rendered by /metrics)

class Metrics {
 public:
  void ObserveRequest(const std::string& route, int status, double seconds);
  // A finished generation: its time to first token, time per later token, prompt tokens
  // computed and reused, tokens generated.
  void ObserveTurn(const engine::TurnResult& r);
  std::string Render(const engine::EngineStats& stats, int64_t in_flight, bool draining);

 private:
  struct Histogram {
    std::vector<double> bounds;
    std::vector<int64_t> counts;  // one per bound, plus +Inf
    double sum = 0.0;
    int64_t count = 0;
    void Observe(double v);
  };
  static Histogram LatencyHistogram();
  std::mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  std::map<std::string, Histogram> latency_;
  Histogram ttft_ = LatencyHistogram();
  Histogram per_token_ = LatencyHistogram();
  int64_t tokens_computed_ = 0;
  int64_t tokens_reused_ = 0;
  int64_t tokens_generated_ = 0;
};

// ---------------------------------------------------------------------------------------
// The server's shared state, the router and one call

// cpp-httplib's Server with its listening socket reachable: Debian's compiled library listens
// with a backlog of 5, which a burst of new connections overflows (clients then see resets);
// Server::Start raises it.
class HttpServer : public httplib::Server {
 public:
  int listening_socket() const { return svr_sock_; }
};

class ServerState {
 public:
  ServerState(engine::Engine& engine, const ServerOptions& options);

  engine::Engine& engine;
  ServerOptions options;
  std::string model_name;
  absl::flat_hash_map<std::string, std::string> keys;  // API key -> tenant
  Metrics metrics;
  HttpServer http;
  std::atomic<bool> draining{false};

  // Requests in flight (streams count until they end), per tenant and in total.
  bool Enter(const std::string& tenant);  // false: the tenant is at its limit
  void Leave(const std::string& tenant);
  int64_t in_flight() const;
  // Blocks until nothing is in flight or `deadline` passes; returns what is still in flight.
  int64_t WaitIdle(absl::Time deadline);
  // Engine streams in flight, cancelled when a drain's deadline passes.
  void Track(const engine::StreamPtr& s);
  void Untrack(const engine::StreamPtr& s);
  int64_t CancelAll();

  // One audit record (JSON line) when an audit log is configured.
  void Audit(const std::string& tenant, std::string_view action, const Json& details);

 private:
  mutable std::mutex mu_;
  std::condition_variable idle_;
  absl::flat_hash_map<std::string, int> tenant_in_flight_;
  int64_t in_flight_ = 0;
  std::vector<engine::StreamPtr> streams_;
  std::mutex audit_mu_;
  FILE* audit_ = nullptr;

  friend class Server;
};

// One request being handled.
struct Call {
  const httplib::Request& req;
  httplib::Response& res;
  std::string tenant;
  ServerState& server;
  std::string route;
  bool streaming = false;  // StreamSse took over: the router does not finish it

  engine::Engine& engine() const { return server.engine; }
  // The body as a JSON object; nullopt after a 400 was sent (invalid JSON or UTF-8, not an
  // object, empty).
  std::optional<Json> Body();
  void Error(const ApiError& e);
  void SendJson(int status, const Json& body);
  // Streams server-sent events: `next(out)` appends the next events' text ("data: ...\n\n")
  // to `out` and returns false after the last one (it may block). `on_close(completed)`
  // runs once when the stream ends, `completed` false when the client went away (cancel the
  // engine request then). The request counts as in flight until then.
  void StreamSse(std::function<bool(std::string& out)> next,
                 std::function<void(bool completed)> on_close);
};

// "data: <json>\n\n" and the Responses API's "event: <type>\ndata: <json>\n\n".
std::string SseData(const Json& j);
std::string SseEvent(std::string_view type, const Json& j);

class Router {
 public:
  explicit Router(ServerState& server) : server_(server) {}
  ServerState& server() const { return server_; }
  using Handler = std::function<void(Call&)>;
  // `route` names the endpoint in metrics and logs (e.g. "/v1/sessions/{id}"). Handlers
  // without `auth` (health, readiness, metrics) run for anyone, also while draining.
  void Get(const std::string& pattern, const std::string& route, Handler h, bool auth = true);
  void Post(const std::string& pattern, const std::string& route, Handler h, bool auth = true);
  void Put(const std::string& pattern, const std::string& route, Handler h);
  void Patch(const std::string& pattern, const std::string& route, Handler h);
  void Delete(const std::string& pattern, const std::string& route, Handler h);

 private:
  httplib::Server::Handler Wrap(const std::string& route, Handler h, bool auth);
  ServerState& server_;
};

// The route groups (each in its own file).
void RegisterOpsRoutes(Router& r);        // /health, /ready, /metrics (server.cc)
void RegisterOpenAiRoutes(Router& r);     // /v1/models, /v1/chat/completions, /v1/completions
void RegisterResponsesRoutes(Router& r);  // /v1/responses...
void RegisterSessionRoutes(Router& r);    // /v1/sessions...

}  // namespace mnemo::server

namespace mnemo::server {

// ---------------------------------------------------------------------------------------
// The chat.completion answer (engine/server/chat_response.cc), shared by
// /v1/chat/completions and /v1/sessions/{id}/messages.

// Answers `c` with the n choices whose engine streams are `streams` (already started, one
// per choice, in choice order): a "chat.completion" object, or with g.stream a stream of
// "chat.completion.chunk" events (choice after choice; a usage chunk when
// g.include_usage) ending with "data: [DONE]". An engine error of the first choice becomes
// the HTTP error (not streaming) or an error event (streaming). `extra` is merged into the
// top-level object (e.g. {"session_id": ...}); `id` is its id ("chatcmpl-...").
void RespondChat(Call& c, std::vector<engine::StreamPtr> streams, const GenerationFields& g,
                 const std::string& id, const Json& extra);

// The logprobs object of one choice ({"content": [{token, logprob, bytes, top_logprobs}]}).
Json ChatLogprobs(const engine::Tokenizer& tok, const engine::TurnResult& r);
// The usage object of a request whose choices ended with `results`; with
// `report_compaction`, also compacted_tokens (GenerationFields::report_compaction).
Json ChatUsage(const std::vector<const engine::TurnResult*>& results,
               bool report_compaction = false);
// The end of a chat/completions event stream: `base` with the usage of `streams` when
// `include_usage`, then "data: [DONE]".
std::string StreamTail(const std::vector<engine::StreamPtr>& streams, bool include_usage, Json base,
                       bool report_compaction = false);
// "<prefix>" + 24 random hex digits.
std::string RandomId(std::string_view prefix);

}  // namespace mnemo::server
