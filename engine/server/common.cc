// Shared server internals (engine/server/internal/common.h): errors, field validation,
// generation fields, metrics, the router and server-sent events.
#include "engine/server/internal/common.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache/base/strings.h"

namespace mnemo::server {

// ---------------------------------------------------------------------------------------
// Metrics

Metrics::Histogram Metrics::LatencyHistogram() {
  Histogram h;
  h.bounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  h.counts.assign(h.bounds.size() + 1, 0);
  return h;
}

void Metrics::Histogram::Observe(double v) {
  size_t i = 0;
  while (i < bounds.size() && v > bounds[i]) ++i;
  ++counts[i];
  sum += v;
  ++count;
}

void Metrics::ObserveRequest(const std::string& route, int status, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{route, status}];
  auto it = latency_.find(route);
  if (it == latency_.end()) it = latency_.emplace(route, LatencyHistogram()).first;
  it->second.Observe(seconds);
}

void Metrics::ObserveTurn(const engine::TurnResult& r) {
  const int64_t generated = r.usage.completion_tokens;
  std::lock_guard<std::mutex> lock(mu_);
  ttft_.Observe(r.ttft_seconds);
  if (generated > 1) {
    per_token_.Observe((r.total_seconds - r.ttft_seconds) / static_cast<double>(generated - 1));
  }
  tokens_computed_ += r.usage.prompt_tokens - r.usage.cached_tokens;
  tokens_reused_ += r.usage.cached_tokens;
  tokens_generated_ += generated;
}

namespace {

void RenderHistogram(std::string& out, const std::string& name, const std::string& labels,
                     const std::vector<double>& bounds, const std::vector<int64_t>& counts,
                     double sum, int64_t count) {
  int64_t cum = 0;
  const std::string sep = labels.empty() ? "" : ",";
  for (size_t i = 0; i < bounds.size(); ++i) {
    cum += counts[i];
    absl::StrAppend(&out, name, "_bucket{", labels, sep, "le=\"", bounds[i], "\"} ", cum, "\n");
  }
  cum += counts.back();
  absl::StrAppend(&out, name, "_bucket{", labels, sep, "le=\"+Inf\"} ", cum, "\n");
  absl::StrAppend(&out, name, "_sum", labels.empty() ? "" : "{" + labels + "}", " ",
                  absl::StrFormat("%.6f", sum), "\n");
  absl::StrAppend(&out, name, "_count", labels.empty() ? "" : "{" + labels + "}", " ", count, "\n");
}

void Gauge(std::string& out, const char* name, const char* help, double v,
           const char* type = "gauge") {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ",
                  v, "\n");
}

}  // namespace

std::string Metrics::Render(const engine::EngineStats& st, int64_t in_flight, bool draining) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out += "# HELP mnemo_http_requests_total HTTP requests by route and status.\n";
  out += "# TYPE mnemo_http_requests_total counter\n";
  for (const auto& [key, n] : requests_) {
    absl::StrAppend(&out, "mnemo_http_requests_total{route=\"", key.first, "\",status=\"",
                    key.second, "\"} ", n, "\n");
  }
  out += "# HELP mnemo_http_request_seconds HTTP request latency (streams: until the end).\n";
  out += "# TYPE mnemo_http_request_seconds histogram\n";
  for (const auto& [route, h] : latency_) {
    RenderHistogram(out, "mnemo_http_request_seconds", absl::StrCat("route=\"", route, "\""),
                    h.bounds, h.counts, h.sum, h.count);
  }
  out += "# HELP mnemo_ttft_seconds Time to the first generated token.\n";
  out += "# TYPE mnemo_ttft_seconds histogram\n";
  RenderHistogram(out, "mnemo_ttft_seconds", "", ttft_.bounds, ttft_.counts, ttft_.sum,
                  ttft_.count);
  out += "# HELP mnemo_token_seconds Time per generated token after the first.\n";
  out += "# TYPE mnemo_token_seconds histogram\n";
  RenderHistogram(out, "mnemo_token_seconds", "", per_token_.bounds, per_token_.counts,
                  per_token_.sum, per_token_.count);
  Gauge(out, "mnemo_prompt_tokens_computed_total", "Prompt tokens whose KV was computed.",
        static_cast<double>(st.tokens_computed), "counter");
  Gauge(out, "mnemo_prompt_tokens_reused_total", "Prompt tokens whose KV was reused.",
        static_cast<double>(st.tokens_cached), "counter");
  Gauge(out, "mnemo_generated_tokens_total", "Tokens generated.",
        static_cast<double>(st.tokens_generated), "counter");
  Gauge(out, "mnemo_requests_in_flight", "HTTP requests in flight.",
        static_cast<double>(in_flight));
  Gauge(out, "mnemo_draining", "1 while the server drains.", draining ? 1 : 0);
  Gauge(out, "mnemo_queue_waiting", "Requests waiting for admission.",
        static_cast<double>(st.waiting));
  Gauge(out, "mnemo_queue_running", "Sequences running.", static_cast<double>(st.running));
  Gauge(out, "mnemo_queue_parked", "Requests waiting for their session's restore.",
        static_cast<double>(st.parked));
  Gauge(out, "mnemo_sessions", "Live sessions.", static_cast<double>(st.sessions));
  Gauge(out, "mnemo_device_blocks_in_use", "KV blocks in use on the device tier.",
        static_cast<double>(st.blocks_in_use));
  Gauge(out, "mnemo_device_blocks_total", "KV blocks of the device tier.",
        static_cast<double>(st.blocks_total));
  Gauge(out, "mnemo_host_bytes_used", "Bytes of the host tier in use.",
        static_cast<double>(st.host_bytes_used));
  Gauge(out, "mnemo_disk_bytes_used", "Bytes of blocks in the state directory.",
        static_cast<double>(st.disk_bytes_used));
  Gauge(out, "mnemo_device_block_bytes", "Bytes of one KV block (all layers, K and V).",
        static_cast<double>(st.block_bytes));
  Gauge(out, "mnemo_device_block_tokens", "Tokens per KV block.",
        static_cast<double>(st.block_tokens));
  Gauge(out, "mnemo_bytes_to_host_total", "KV bytes copied device -> host.",
        static_cast<double>(st.bytes_to_host), "counter");
  Gauge(out, "mnemo_bytes_from_host_total", "KV bytes copied host -> device.",
        static_cast<double>(st.bytes_from_host), "counter");
  Gauge(out, "mnemo_bytes_to_disk_total", "KV bytes written to the state directory.",
        static_cast<double>(st.bytes_to_disk), "counter");
  Gauge(out, "mnemo_bytes_from_disk_total", "KV bytes read back from the state directory.",
        static_cast<double>(st.bytes_from_disk), "counter");
  Gauge(out, "mnemo_spills_to_host_total", "Sessions moved device -> host.",
        static_cast<double>(st.spills_to_host), "counter");
  Gauge(out, "mnemo_spills_to_disk_total", "Sessions moved to the disk tier.",
        static_cast<double>(st.spills_to_disk), "counter");
  Gauge(out, "mnemo_restores_from_host_total", "Sessions restored from the host tier.",
        static_cast<double>(st.restores_from_host), "counter");
  Gauge(out, "mnemo_restores_from_disk_total", "Sessions restored from disk.",
        static_cast<double>(st.restores_from_disk), "counter");
  Gauge(out, "mnemo_evictions_total", "Cached prefix blocks evicted.",
        static_cast<double>(st.evictions), "counter");
  Gauge(out, "mnemo_preemptions_total", "Sequences preempted.", static_cast<double>(st.preemptions),
        "counter");
  Gauge(out, "mnemo_engine_busy_seconds_total", "Time in forward steps and sampling.",
        st.busy_seconds, "counter");
  return out;
}

// ---------------------------------------------------------------------------------------
// Server state

ServerState::ServerState(engine::Engine& e, const ServerOptions& o) : engine(e), options(o) {}

bool ServerState::Enter(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  int& n = tenant_in_flight_[tenant];
  if (options.max_concurrent_per_tenant > 0 && n >= options.max_concurrent_per_tenant) {
    return false;
  }
  ++n;
  ++in_flight_;
  return true;
}

void ServerState::Leave(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  --tenant_in_flight_[tenant];
  --in_flight_;
  idle_.notify_all();
}

int64_t ServerState::in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_flight_;
}

int64_t ServerState::WaitIdle(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait_until(lock, absl::ToChronoTime(deadline), [&] { return in_flight_ == 0; });
  return in_flight_;
}

void ServerState::Track(const engine::StreamPtr& s) {
  std::lock_guard<std::mutex> lock(mu_);
  streams_.push_back(s);
}

void ServerState::Untrack(const engine::StreamPtr& s) {
  std::lock_guard<std::mutex> lock(mu_);
  std::erase(streams_, s);
}

int64_t ServerState::CancelAll() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const engine::StreamPtr& s : streams_) s->Cancel();
  return static_cast<int64_t>(streams_.size());
}

void ServerState::Audit(const std::string& tenant, std::string_view action, const Json& details) {
  std::lock_guard<std::mutex> lock(audit_mu_);
  if (audit_ == nullptr) return;
  Json j = details;
  j["time"] = absl::FormatTime(absl::RFC3339_full, absl::Now(), absl::UTCTimeZone());
  j["tenant"] = tenant;
  j["action"] = std::string(action);
  const std::string line = j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
  std::fwrite(line.data(), 1, line.size(), audit_);
  std::fflush(audit_);
}

// ---------------------------------------------------------------------------------------
// Calls and the router

std::optional<Json> Call::Body() {
  if (req.body.empty()) {
    Error(BadRequest("the request body is empty; send a JSON object"));
    return std::nullopt;
  }
  Json j = Json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    Error(BadRequest(ValidUtf8(req.body) ? "the request body is not valid JSON"
                                         : "the request body is not valid UTF-8"));
    return std::nullopt;
  }
  if (!j.is_object()) {
    Error(BadRequest("the request body must be a JSON object"));
    return std::nullopt;
  }
  return j;
}

void Call::Error(const ApiError& e) { SendJson(e.status, ErrorBody(e)); }

void Call::SendJson(int status, const Json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, Json::error_handler_t::replace), "application/json");
}

std::string SseData(const Json& j) {
  return absl::StrCat("data: ", j.dump(-1, ' ', false, Json::error_handler_t::replace), "\n\n");
}

std::string SseEvent(std::string_view type, const Json& j) {
  return absl::StrCat("event: ", AsAbsl(type),
                      "\ndata: ", j.dump(-1, ' ', false, Json::error_handler_t::replace), "\n\n");
}

void Call::StreamSse(std::function<bool(std::string& out)> next,
                     std::function<void(bool completed)> on_close) {
  streaming = true;
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  // The request stops counting as in flight when its last event is written — before the
  // stream's end reaches the client, so that a client's next request never finds it still
  // counted — or, if the stream breaks off, when cpp-httplib releases it.
  struct Done {
    bool finished = false;
    bool left = false;
  };
  auto done = std::make_shared<Done>();
  ServerState* server_ptr = &server;
  auto leave = [done, server_ptr, tenant_copy = tenant, route_copy = route,
                t0 = std::chrono::steady_clock::now()] {
    if (done->left) return;
    done->left = true;
    server_ptr->metrics.ObserveRequest(
        route_copy, 200,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    server_ptr->Leave(tenant_copy);
  };
  res.set_chunked_content_provider(
      "text/event-stream",
      [next = std::move(next), done, leave](size_t, httplib::DataSink& sink) {
        std::string out;
        const bool more = next(out);
        if (!out.empty() && !sink.write(out.data(), out.size())) return false;
        if (!more) {
          done->finished = true;
          leave();
          sink.done();
        }
        return true;
      },
      [on_close = std::move(on_close), done, leave](bool success) {
        on_close(success && done->finished);
        leave();
      });
}

httplib::Server::Handler Router::Wrap(const std::string& route, Handler h, bool auth) {
  ServerState* server = &server_;
  return
      [server, route, h = std::move(h), auth](const httplib::Request& req, httplib::Response& res) {
        const auto t0 = std::chrono::steady_clock::now();
        Call call{.req = req, .res = res, .server = *server, .route = route};
        bool entered = false;
        const auto finish = [&] {
          if (call.streaming) return;  // the stream's releaser accounts for it
          const double secs =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          server->metrics.ObserveRequest(route, res.status, secs);
          if (entered) server->Leave(call.tenant);
          if (server->options.log_requests) {
            std::fprintf(stderr, "%s\n",
                         Json({{"method", req.method},
                               {"route", route},
                               {"status", res.status},
                               {"tenant", call.tenant},
                               {"seconds", secs}})
                             .dump()
                             .c_str());
          }
        };
        if (auth) {
          if (server->keys.empty()) {
            call.tenant = "default";
          } else {
            const std::string header = req.get_header_value("Authorization");
            const std::string key = header.starts_with("Bearer ") ? header.substr(7) : "";
            auto it = server->keys.find(key);
            if (it == server->keys.end()) {
              call.Error({.status = 401,
                          .type = "authentication_error",
                          .message = key.empty() ? "missing API key (Authorization: Bearer KEY)"
                                                 : "invalid API key",
                          .code = "invalid_api_key"});
              finish();
              return;
            }
            call.tenant = it->second;
          }
          if (server->draining.load()) {
            call.Error({.status = 503,
                        .type = "service_unavailable",
                        .message = "the server is draining; retry on another instance"});
            finish();
            return;
          }
          if (!server->Enter(call.tenant)) {
            res.set_header("Retry-After", "1");
            call.Error({.status = 429,
                        .type = "rate_limit_error",
                        .message = absl::StrCat("tenant \"", call.tenant, "\" has ",
                                                server->options.max_concurrent_per_tenant,
                                                " requests in flight (its limit)"),
                        .code = "rate_limit_exceeded"});
            finish();
            return;
          }
          entered = true;
        }
        try {
          h(call);
        } catch (const std::exception& e) {  // a bug: answer 500 rather than dropping the socket
          call.streaming = false;
          call.Error({.status = 500, .type = "server_error", .message = e.what()});
        }
        finish();
      };
}

void Router::Get(const std::string& pattern, const std::string& route, Handler h, bool auth) {
  server_.http.Get(pattern, Wrap(route, std::move(h), auth));
}
void Router::Post(const std::string& pattern, const std::string& route, Handler h, bool auth) {
  server_.http.Post(pattern, Wrap(route, std::move(h), auth));
}
void Router::Put(const std::string& pattern, const std::string& route, Handler h) {
  server_.http.Put(pattern, Wrap(route, std::move(h), true));
}
void Router::Patch(const std::string& pattern, const std::string& route, Handler h) {
  server_.http.Patch(pattern, Wrap(route, std::move(h), true));
}
void Router::Delete(const std::string& pattern, const std::string& route, Handler h) {
  server_.http.Delete(pattern, Wrap(route, std::move(h), true));
}

}  // namespace mnemo::server
