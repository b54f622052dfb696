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
// Errors

ApiError BadRequest(std::string message, std::string param) {
  return {.status = 400, .message = std::move(message), .param = std::move(param)};
}

ApiError NotFound(std::string message) {
  return {.status = 404, .type = "not_found_error", .message = std::move(message)};
}

ApiError FromStatus(const absl::Status& status, std::string param) {
  ApiError e{.message = std::string(AsStd(status.message())), .param = std::move(param)};
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      e.status = 400;
      break;
    case absl::StatusCode::kNotFound:
      e.status = 404;
      e.type = "not_found_error";
      break;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted:
      e.status = 409;
      e.type = "conflict_error";
      break;
    case absl::StatusCode::kResourceExhausted:
      e.status = 429;
      e.type = "rate_limit_error";
      break;
    case absl::StatusCode::kUnavailable:
      e.status = 503;
      e.type = "service_unavailable";
      break;
    case absl::StatusCode::kCancelled:
      e.status = 499;
      e.type = "cancelled";
      break;
    case absl::StatusCode::kPermissionDenied:
      e.status = 403;
      e.type = "permission_error";
      break;
    default:
      e.status = 500;
      e.type = "server_error";
      break;
  }
  return e;
}

Json ErrorBody(const ApiError& e) {
  return {{"error",
           {{"message", e.message},
            {"type", e.type},
            {"param", e.param.empty() ? Json(nullptr) : Json(e.param)},
            {"code", e.code.empty() ? Json(nullptr) : Json(e.code)}}}};
}

// ---------------------------------------------------------------------------------------
// Fields

const Json* FieldReader::Raw(std::string_view name) const {
  auto it = obj_.find(std::string(name));
  if (it == obj_.end() || it->is_null()) return nullptr;
  return &*it;
}

void FieldReader::Fail(std::string_view name, std::string message) {
  if (error_) return;
  error_ = BadRequest(absl::StrCat(Param(name), ": ", message), Param(name));
}

std::optional<std::string> FieldReader::String(std::string_view name) {
  const Json* v = Raw(name);
  if (!ok() || v == nullptr) return std::nullopt;
  if (!v->is_string()) {
    Fail(name, absl::StrCat("must be a string, got ", v->type_name()));
    return std::nullopt;
  }
  return v->get<std::string>();
}

std::optional<int64_t> FieldReader::Int(std::string_view name, int64_t min, int64_t max) {
  const Json* v = Raw(name);
  if (!ok() || v == nullptr) return std::nullopt;
  if (!v->is_number_integer()) {
    Fail(name, absl::StrCat("must be an integer, got ", v->type_name()));
    return std::nullopt;
  }
  // Unsigned values above INT64_MAX are out of range whatever max is.
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    Fail(name, absl::StrCat("must be in [", min, ", ", max, "]"));
    return std::nullopt;
  }
  const int64_t x = v->get<int64_t>();
  if (x < min || x > max) {
    Fail(name, absl::StrCat("must be in [", min, ", ", max, "], got ", x));
    return std::nullopt;
  }
  return x;
}

std::optional<double> FieldReader::Number(std::string_view name, double min, double max) {
  const Json* v = Raw(name);
  if (!ok() || v == nullptr) return std::nullopt;
  if (!v->is_number()) {
    Fail(name, absl::StrCat("must be a number, got ", v->type_name()));
    return std::nullopt;
  }
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < min || x > max) {
    Fail(name, absl::StrCat("must be in [", min, ", ", max, "], got ", v->dump()));
    return std::nullopt;
  }
  return x;
}

std::optional<bool> FieldReader::Bool(std::string_view name) {
  const Json* v = Raw(name);
  if (!ok() || v == nullptr) return std::nullopt;
  if (!v->is_boolean()) {
    Fail(name, absl::StrCat("must be a boolean, got ", v->type_name()));
    return std::nullopt;
  }
  return v->get<bool>();
}

void FieldReader::OnlyKnown(std::initializer_list<std::string_view> known) {
  if (!ok()) return;
  for (auto it = obj_.begin(); it != obj_.end(); ++it) {
    bool found = false;
    for (std::string_view k : known) found |= it.key() == k;
    if (!found) {
      Fail(it.key(), "unknown field");
      return;
    }
  }
}

GenerationFields ReadGenerationFields(FieldReader& f, bool completions_logprobs) {
  GenerationFields g;
  engine::SamplingParams& s = g.params.sampling;
  engine::StopParams& stop = g.params.stop;
  s.penalty_last_n = 0;  // OpenAI has no repetition penalty
  if (auto t = f.Number("temperature", 0.0, 2.0)) s.temperature = static_cast<float>(*t);
  if (const Json* tp = f.Raw("top_p"); tp != nullptr && f.ok()) {
    auto p = f.Number("top_p", 0.0, 1.0);
    if (p && *p == 0.0) f.Fail("top_p", "must be in (0, 1], got 0");
    if (p && *p > 0.0) s.top_p = static_cast<float>(*p);
  }
  if (auto seed = f.Int("seed", INT64_MIN, INT64_MAX)) s.seed = static_cast<uint64_t>(*seed);
  for (const char* name : {"max_tokens", "max_completion_tokens", "max_output_tokens"}) {
    if (auto m = f.Int(name, 1, 1 << 30)) {
      stop.max_tokens = static_cast<int>(*m);
      break;
    }
  }
  if (auto p = f.Number("presence_penalty", -2.0, 2.0)) s.presence_penalty = static_cast<float>(*p);
  if (auto p = f.Number("frequency_penalty", -2.0, 2.0)) {
    s.frequency_penalty = static_cast<float>(*p);
  }
  if (const Json* stops = f.Raw("stop"); stops != nullptr && f.ok()) {
    if (stops->is_string()) {
      stop.stop_strings.push_back(stops->get<std::string>());
    } else if (stops->is_array() && stops->size() <= 4) {
      for (const Json& x : *stops) {
        if (!x.is_string()) {
          f.Fail("stop", "must be a string or an array of up to 4 strings");
          break;
        }
        stop.stop_strings.push_back(x.get<std::string>());
      }
    } else {
      f.Fail("stop", "must be a string or an array of up to 4 strings");
    }
    for (const std::string& x : stop.stop_strings) {
      if (x.empty()) f.Fail("stop", "stop strings must not be empty");
    }
  }
  if (const Json* bias = f.Raw("logit_bias"); bias != nullptr && f.ok()) {
    if (!bias->is_object()) {
      f.Fail("logit_bias", "must be an object mapping token ids to biases");
    } else {
      for (auto it = bias->begin(); it != bias->end() && f.ok(); ++it) {
        const std::string& key = it.key();
        const bool digits =
            !key.empty() && key.size() <= 9 &&
            std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
        const int64_t id = digits ? std::stoll(key) : -1;  // the engine checks the vocabulary
        if (id < 0) {
          f.Fail("logit_bias", absl::StrCat("key \"", key, "\" is not a token id"));
          break;
        }
        if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() < -100 ||
            it->get<double>() > 100) {
          f.Fail("logit_bias", absl::StrCat("the bias of token ", key, " must be in [-100, 100]"));
          break;
        }
        s.logit_bias.emplace_back(static_cast<engine::TokenId>(id), it->get<float>());
      }
    }
  }
  if (completions_logprobs) {
    if (auto lp = f.Int("logprobs", 0, 5)) {
      g.logprobs = true;
      s.top_logprobs = static_cast<int>(*lp);
    }
  } else {
    if (auto lp = f.Bool("logprobs")) g.logprobs = *lp;
    if (auto top = f.Int("top_logprobs", 0, engine::kMaxTopLogprobs)) {
      if (!g.logprobs) f.Fail("top_logprobs", "needs logprobs: true");
      s.top_logprobs = static_cast<int>(*top);
    }
  }
  if (auto n = f.Int("n", 1, 16)) g.n = static_cast<int>(*n);
  if (auto st = f.Bool("stream")) g.stream = *st;
  if (const Json* so = f.Raw("stream_options"); so != nullptr && f.ok()) {
    if (!so->is_object()) {
      f.Fail("stream_options", "must be an object");
    } else {
      FieldReader sf(*so, "stream_options.");
      if (auto u = sf.Bool("include_usage")) g.include_usage = *u;
      if (!sf.ok()) f.Fail("stream_options", sf.error().message);
    }
  }
  if (auto u = f.String("user")) g.user = *u;
  return g;
}

std::vector<engine::ChatMessage> ReadMessages(FieldReader& f, std::string_view name) {
  std::vector<engine::ChatMessage> out;
  const Json* v = f.Raw(name);
  if (!f.ok()) return out;
  if (v == nullptr || !v->is_array() || v->empty()) {
    f.Fail(name, "must be a non-empty array of messages");
    return out;
  }
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& m = (*v)[i];
    const std::string at = absl::StrCat(AsAbsl(name), "[", i, "]");
    if (!m.is_object()) {
      f.Fail(at, "must be an object with role and content");
      return {};
    }
    FieldReader mf(m);
    std::optional<std::string> role = mf.String("role");
    if (!mf.ok() || !role) {
      f.Fail(absl::StrCat(at, ".role"), "must be a string");
      return {};
    }
    if (*role == "developer") role = "system";
    if (*role != "system" && *role != "user" && *role != "assistant") {
      f.Fail(absl::StrCat(at, ".role"),
             absl::StrCat("must be system, developer, user or assistant, got \"", *role, "\""));
      return {};
    }
    std::string content;
    const Json* c = mf.Raw("content");
    if (c != nullptr && c->is_string()) {
      content = c->get<std::string>();
    } else if (c != nullptr && c->is_array()) {
      for (const Json& part : *c) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          f.Fail(absl::StrCat(at, ".content"),
                 "content parts must be {\"type\": \"text\", \"text\": string}");
          return {};
        }
        content += part["text"].get<std::string>();
      }
    } else {
      f.Fail(absl::StrCat(at, ".content"), "must be a string or an array of text parts");
      return {};
    }
    out.push_back({std::move(*role), std::move(content)});
  }
  return out;
}

bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n = 0;
    uint32_t cp = 0;
    if ((c >> 5) == 0x6) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c >> 4) == 0xE) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c >> 3) == 0x1E) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 0x2) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    const uint32_t min = n == 1 ? 0x80 : n == 2 ? 0x800 : 0x10000;
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

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

void Metrics::ObserveTurn(double ttft_seconds, double per_token_seconds, int64_t computed,
                          int64_t reused, int64_t generated) {
  std::lock_guard<std::mutex> lock(mu_);
  ttft_.Observe(ttft_seconds);
  if (generated > 1) per_token_.Observe(per_token_seconds);
  tokens_computed_ += computed;
  tokens_reused_ += reused;
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
  struct Done {
    bool finished = false;
  };
  auto done = std::make_shared<Done>();
  ServerState* server_ptr = &server;
  const std::string tenant_copy = tenant;
  const std::string route_copy = route;
  const auto t0 = std::chrono::steady_clock::now();
  res.set_chunked_content_provider(
      "text/event-stream",
      [next = std::move(next), done](size_t, httplib::DataSink& sink) {
        std::string out;
        const bool more = next(out);
        if (!out.empty() && !sink.write(out.data(), out.size())) return false;
        if (!more) {
          done->finished = true;
          sink.done();
        }
        return true;
      },
      [on_close = std::move(on_close), done, server_ptr, tenant_copy, route_copy,
       t0](bool success) {
        on_close(success && done->finished);
        server_ptr->metrics.ObserveRequest(
            route_copy, 200,
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        server_ptr->Leave(tenant_copy);
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
