// The HTTP driver of `mnemo bench multiturn` (runner.h): any OpenAI-compatible server through
// /v1/chat/completions, or mnemo's own /v1/sessions and /v1/responses. Every request streams
// (server-sent events, parsed as they arrive) so that the time to the first token is the
// client's; the usage comes from the stream's last event.
//
// Counters and tier occupancy come from GET /metrics when it is mnemo's (Prometheus text).
// /metrics counts KV blocks, not bytes: the bytes of a block are learned once, at creation,
// from a probe session (POST /v1/sessions, its "bytes.device" over its blocks at mnemo
// serve's 16 tokens per block), then the probe is deleted.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/stateful/runner.h"
#include "cache/base/strings.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace mnemo::bench {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// "http://host:port[/prefix][/v1][/]" -> the client's "http://host:port" and the prefix.
struct BaseUrl {
  std::string origin;  // scheme://host:port
  std::string prefix;  // a path before /v1 ("" usually)
};

absl::StatusOr<BaseUrl> ParseBaseUrl(std::string url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("base URL \"", url, "\" must look like http://host:port[/v1]"));
  }
  const std::string scheme = url.substr(0, scheme_end);
#ifdef CPPHTTPLIB_OPENSSL_SUPPORT
  const bool supported = scheme == "http" || scheme == "https";
#else
  const bool supported = scheme == "http";
#endif
  if (!supported) {
    return absl::InvalidArgumentError(
        absl::StrCat("base URL \"", url, "\": scheme \"", scheme, "\" is not supported"));
  }
  while (!url.empty() && url.back() == '/') url.pop_back();
  if (url.ends_with("/v1")) url.resize(url.size() - 3);
  const size_t path = url.find('/', scheme_end + 3);
  BaseUrl b;
  b.origin = url.substr(0, path);
  if (path != std::string::npos) b.prefix = url.substr(path);
  if (b.origin.size() <= scheme_end + 3) {
    return absl::InvalidArgumentError(absl::StrCat("base URL \"", url, "\" has no host"));
  }
  return b;
}

// Incremental server-sent-events parser: bytes in, (event, data) pairs out.
class SseParser {
 public:
  // Returns false when `on_event` asked to stop.
  template <typename F>
  bool Feed(std::string_view bytes, F&& on_event) {
    buf_.append(bytes);
    for (;;) {
      const size_t end = buf_.find("\n\n");
      if (end == std::string::npos) return true;
      std::string event, data;
      size_t pos = 0;
      while (pos < end) {
        size_t eol = buf_.find('\n', pos);
        if (eol == std::string::npos || eol > end) eol = end;
        std::string_view line(buf_.data() + pos, eol - pos);
        if (line.ends_with('\r')) line.remove_suffix(1);
        if (line.starts_with("event:")) {
          event = std::string(Trim(line.substr(6)));
        } else if (line.starts_with("data:")) {
          if (!data.empty()) data += '\n';
          data += Trim(line.substr(5));
        }
        pos = eol + 1;
      }
      buf_.erase(0, end + 2);
      if (!data.empty() && !on_event(event, data)) return false;
    }
  }

 private:
  static std::string_view Trim(std::string_view s) {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    return s;
  }
  std::string buf_;
};

std::string ErrorMessage(const std::string& body) {
  const Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("error")) {
    const Json& e = j["error"];
    if (e.is_object() && e.contains("message") && e["message"].is_string()) {
      return e["message"].get<std::string>();
    }
    if (e.is_string()) return e.get<std::string>();
  }
  return body.substr(0, 500);
}

int64_t IntAt(const Json& j, std::initializer_list<const char*> path) {
  const Json* v = &j;
  for (const char* key : path) {
    if (!v->is_object() || !v->contains(key)) return 0;
    v = &(*v)[key];
  }
  return v->is_number_integer() ? v->get<int64_t>() : 0;
}

struct Connection {
  std::string url;  // for messages
  BaseUrl base;
  std::string api_key;
  double timeout_seconds = 600;

  std::unique_ptr<httplib::Client> NewClient() const {
    auto cli = std::make_unique<httplib::Client>(base.origin);
    const auto secs = static_cast<time_t>(std::max(1.0, timeout_seconds));
    cli->set_connection_timeout(std::min<time_t>(secs, 10), 0);
    cli->set_read_timeout(secs, 0);
    cli->set_write_timeout(secs, 0);
    if (!api_key.empty()) cli->set_default_headers({{"Authorization", "Bearer " + api_key}});
    return cli;
  }

  absl::Status Unreachable(httplib::Error e) const {
    return absl::UnavailableError(absl::StrCat("cannot reach ", url, ": ", httplib::to_string(e)));
  }
};

// What one streamed request produced.
struct StreamReply {
  int status = 0;
  std::string error_body;  // the body of a non-2xx answer
  double ttft_seconds = -1;
  std::string text;
  Json usage;               // the last usage seen (null: none)
  std::string response_id;  // /v1/responses
  std::string error;        // an error event in the stream
};

// POSTs `body` to `path` and parses the event stream; `on_event` reads each (event, data
// JSON) into the reply and returns the text delta it carried ("" if none).
template <typename F>
absl::StatusOr<StreamReply> PostStream(const Connection& conn, httplib::Client& cli,
                                       const std::string& path, const Json& body, F&& on_event) {
  StreamReply reply;
  SseParser parser;
  const Clock::time_point t0 = Clock::now();
  httplib::Request req;
  req.method = "POST";
  req.path = conn.base.prefix + path;
  req.headers = {{"Content-Type", "application/json"}, {"Accept", "text/event-stream"}};
  req.body = body.dump();
  req.response_handler = [&](const httplib::Response& r) {
    reply.status = r.status;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (reply.status < 200 || reply.status >= 300) {
      reply.error_body.append(data, n);
      return true;
    }
    return parser.Feed(std::string_view(data, n),
                       [&](const std::string& event, const std::string& payload) {
                         if (payload == "[DONE]") return true;
                         const Json j = Json::parse(payload, nullptr, /*allow_exceptions=*/false);
                         if (!j.is_object()) return true;
                         if (j.contains("error") && !j["error"].is_null()) {
                           reply.error = ErrorMessage(payload);
                           return true;
                         }
                         const std::string delta = on_event(event, j, reply);
                         if (!delta.empty() && reply.ttft_seconds < 0)
                           reply.ttft_seconds = Since(t0);
                         reply.text += delta;
                         return true;
                       });
  };
  httplib::Result res = cli.send(req);
  if (!res) return conn.Unreachable(res.error());
  if (reply.status == 0) reply.status = res->status;
  if ((reply.status < 200 || reply.status >= 300) && reply.error_body.empty()) {
    reply.error_body = res->body;
  }
  if (reply.ttft_seconds < 0) reply.ttft_seconds = Since(t0);
  return reply;
}

// The record of a finished stream (usage in chat form: prompt/completion tokens).
TurnRecord ChatRecord(const StreamReply& r) {
  TurnRecord rec;
  rec.context_tokens = -1;
  if (r.status < 200 || r.status >= 300) {
    rec.error = absl::StrCat("HTTP ", r.status, ": ", ErrorMessage(r.error_body));
    return rec;
  }
  if (!r.error.empty()) {
    rec.error = r.error;
    return rec;
  }
  rec.ttft_seconds = r.ttft_seconds;
  if (r.usage.is_object()) {
    rec.prompt_tokens = IntAt(r.usage, {"prompt_tokens"});
    rec.cached_tokens = IntAt(r.usage, {"prompt_tokens_details", "cached_tokens"});
    rec.generated_tokens = IntAt(r.usage, {"completion_tokens"});
    rec.context_tokens = rec.prompt_tokens + rec.generated_tokens;
  }
  return rec;
}

// chat.completion.chunk events: choices[0].delta.content, and the usage chunk.
std::string ChatEvent(const std::string&, const Json& j, StreamReply& reply) {
  if (j.contains("usage") && j["usage"].is_object()) reply.usage = j["usage"];
  if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) return "";
  const Json& choice = j["choices"][0];
  if (!choice.is_object() || !choice.contains("delta")) return "";
  const Json& delta = choice["delta"];
  if (!delta.is_object() || !delta.contains("content") || !delta["content"].is_string()) {
    return "";
  }
  return delta["content"].get<std::string>();
}

// ---- conversations ---------------------------------------------------------------------

class HttpConversation : public ConversationClient {
 public:
  HttpConversation(const Connection& conn, const HttpDriverOptions& opts, WorkloadConversation c)
      : conn_(conn), opts_(opts), c_(std::move(c)), cli_(conn.NewClient()) {}

  absl::Status Open() {
    if (!c_.system.empty()) history_.push_back({{"role", "system"}, {"content", c_.system}});
    if (opts_.api != HttpApi::kSessions) return absl::OkStatus();
    Json body = Json::object();
    if (!c_.system.empty()) body["system_prompt"] = c_.system;
    httplib::Result res =
        cli_->Post((conn_.base.prefix + "/v1/sessions").c_str(), body.dump(), "application/json");
    if (!res) return conn_.Unreachable(res.error());
    if (res->status < 200 || res->status >= 300) {
      return absl::UnavailableError(absl::StrCat("POST ", conn_.url, "/v1/sessions: HTTP ",
                                                 res->status, ": ", ErrorMessage(res->body)));
    }
    const Json j = Json::parse(res->body, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("id") || !j["id"].is_string()) {
      return absl::DataLossError(
          absl::StrCat("POST ", conn_.url, "/v1/sessions answered without a session id"));
    }
    session_ = j["id"].get<std::string>();
    return absl::OkStatus();
  }

  absl::StatusOr<TurnRecord> Turn(int t) override {
    if (t < 0 || t >= static_cast<int>(c_.turns.size())) {
      return absl::InvalidArgumentError(absl::StrCat("conversation ", c_.id, " has no turn ", t));
    }
    const WorkloadTurn& turn = c_.turns[static_cast<size_t>(t)];
    const Json user = {{"role", "user"}, {"content", turn.user}};
    absl::StatusOr<TurnRecord> rec;
    switch (opts_.api) {
      case HttpApi::kChat: {
        Json messages = history_;
        messages.push_back(user);
        Json body = {{"model", opts_.model},
                     {"messages", messages},
                     {"max_tokens", turn.reply_tokens},
                     {"temperature", 0},
                     {"stream", true},
                     {"stream_options", {{"include_usage", true}}}};
        if (opts_.ignore_eos) body["ignore_eos"] = true;
        auto r = PostStream(conn_, *cli_, "/v1/chat/completions", body, ChatEvent);
        if (!r.ok()) return r.status();
        rec = ChatRecord(*r);
        if (rec->error.empty()) {
          history_.push_back(user);
          history_.push_back({{"role", "assistant"}, {"content", r->text}});
        }
        break;
      }
      case HttpApi::kSessions: {
        Json body = {{"messages", Json::array({user})},
                     {"max_tokens", turn.reply_tokens},
                     {"temperature", 0},
                     {"stream", true},
                     {"stream_options", {{"include_usage", true}}}};
        if (opts_.ignore_eos) body["ignore_eos"] = true;
        auto r = PostStream(conn_, *cli_, absl::StrCat("/v1/sessions/", session_, "/messages"),
                            body, ChatEvent);
        if (!r.ok()) return r.status();
        rec = ChatRecord(*r);
        break;
      }
      case HttpApi::kResponses:
        rec = ResponsesTurn(turn);
        break;
    }
    if (rec.ok()) rec->turn = t;
    return rec;
  }

  absl::Status End() override {
    std::vector<std::string> paths;
    if (!session_.empty()) paths.push_back(absl::StrCat("/v1/sessions/", session_));
    // A response's session is deleted once no stored response refers to it: forget them all.
    for (auto it = responses_.rbegin(); it != responses_.rend(); ++it) {
      paths.push_back(absl::StrCat("/v1/responses/", *it));
    }
    session_.clear();
    responses_.clear();
    for (const std::string& p : paths) {
      httplib::Result res = cli_->Delete((conn_.base.prefix + p).c_str());
      if (!res) return conn_.Unreachable(res.error());
      if (res->status != 200 && res->status != 404) {
        return absl::UnavailableError(absl::StrCat("DELETE ", conn_.url, p, ": HTTP ", res->status,
                                                   ": ", ErrorMessage(res->body)));
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<TurnRecord> ResponsesTurn(const WorkloadTurn& turn) {
    Json body = {{"model", opts_.model},
                 {"input", turn.user},
                 {"max_output_tokens", turn.reply_tokens},
                 {"temperature", 0},
                 {"stream", true}};
    if (opts_.ignore_eos) body["ignore_eos"] = true;
    // mnemo appends `instructions` as a new system message on a continuation: send it once.
    if (responses_.empty()) {
      if (!c_.system.empty()) body["instructions"] = c_.system;
    } else {
      body["previous_response_id"] = responses_.back();
    }
    auto r =
        PostStream(conn_, *cli_, "/v1/responses", body,
                   [](const std::string& event, const Json& j, StreamReply& reply) -> std::string {
                     const std::string type =
                         !event.empty() ? event : (j.contains("type") ? j.value("type", "") : "");
                     if (type == "response.output_text.delta") return j.value("delta", "");
                     if (type == "response.completed" || type == "response.incomplete" ||
                         type == "response.failed") {
                       const Json& resp = j.contains("response") ? j["response"] : Json::object();
                       if (!resp.is_object()) return "";
                       if (resp.contains("usage") && resp["usage"].is_object())
                         reply.usage = resp["usage"];
                       if (resp.contains("id") && resp["id"].is_string())
                         reply.response_id = resp["id"];
                       if (type == "response.failed") {
                         reply.error = resp.contains("error") && resp["error"].is_object()
                                           ? resp["error"].value("message", "response failed")
                                           : "response failed";
                       }
                     }
                     return "";
                   });
    if (!r.ok()) return r.status();
    TurnRecord rec;
    rec.context_tokens = -1;
    if (r->status < 200 || r->status >= 300) {
      rec.error = absl::StrCat("HTTP ", r->status, ": ", ErrorMessage(r->error_body));
      return rec;
    }
    if (!r->error.empty()) {
      rec.error = r->error;
      return rec;
    }
    if (r->response_id.empty()) {
      rec.error = "the response stream ended without response.completed";
      return rec;
    }
    responses_.push_back(r->response_id);
    rec.ttft_seconds = r->ttft_seconds;
    if (r->usage.is_object()) {
      rec.prompt_tokens = IntAt(r->usage, {"input_tokens"});
      rec.cached_tokens = IntAt(r->usage, {"input_tokens_details", "cached_tokens"});
      rec.generated_tokens = IntAt(r->usage, {"output_tokens"});
      rec.context_tokens = rec.prompt_tokens + rec.generated_tokens;
    }
    return rec;
  }

  const Connection conn_;
  const HttpDriverOptions opts_;
  const WorkloadConversation c_;
  std::unique_ptr<httplib::Client> cli_;
  Json history_ = Json::array();        // kChat: every message so far
  std::string session_;                 // kSessions: the live session
  std::vector<std::string> responses_;  // kResponses: the chain's response ids
};

// ---- the driver ------------------------------------------------------------------------

using Metrics = std::map<std::string, double>;

class HttpDriver : public Driver {
 public:
  HttpDriver(HttpDriverOptions opts, Connection conn)
      : opts_(std::move(opts)), conn_(std::move(conn)), metrics_cli_(conn_.NewClient()) {}

  // Learns the block size (mnemo only) and takes the counters' starting values.
  void Start() {
    start_ = ReadMetrics();
    if (!start_) return;
    auto get = [&](const char* name) {
      auto it = start_->find(name);
      return it == start_->end() ? int64_t{0} : static_cast<int64_t>(it->second);
    };
    block_bytes_ = get("mnemo_device_block_bytes");
    block_tokens_ = get("mnemo_device_block_tokens");
  }

  std::string name() const override {
    switch (opts_.api) {
      case HttpApi::kChat:
        return "http-chat";
      case HttpApi::kSessions:
        return "http-sessions";
      case HttpApi::kResponses:
        return "http-responses";
    }
    return "http";
  }

  absl::StatusOr<std::unique_ptr<ConversationClient>> Open(const WorkloadConversation& c) override {
    auto conv = std::make_unique<HttpConversation>(conn_, opts_, c);
    if (absl::Status st = conv->Open(); !st.ok()) return st;
    return std::unique_ptr<ConversationClient>(std::move(conv));
  }

  ServerCounters Counters() override {
    ServerCounters out;
    std::optional<Metrics> now = ReadMetrics();
    if (!now || !start_) return out;
    auto diff = [&](const char* name) -> double {
      auto a = start_->find(name), b = now->find(name);
      return a == start_->end() || b == now->end() ? -1.0 : b->second - a->second;
    };
    auto count = [&](const char* name) {
      const double d = diff(name);
      return d < 0 ? int64_t{-1} : static_cast<int64_t>(d + 0.5);
    };
    out.busy_seconds = diff("mnemo_engine_busy_seconds_total");
    out.tokens_computed = count("mnemo_prompt_tokens_computed_total");
    out.tokens_reused = count("mnemo_prompt_tokens_reused_total");
    out.tokens_generated = count("mnemo_generated_tokens_total");
    out.spills_to_host = count("mnemo_spills_to_host_total");
    out.spills_to_disk = count("mnemo_spills_to_disk_total");
    out.restores_from_host = count("mnemo_restores_from_host_total");
    out.restores_from_disk = count("mnemo_restores_from_disk_total");
    out.bytes_to_host = count("mnemo_bytes_to_host_total");
    out.bytes_from_host = count("mnemo_bytes_from_host_total");
    out.bytes_to_disk = count("mnemo_bytes_to_disk_total");
    out.bytes_from_disk = count("mnemo_bytes_from_disk_total");
    return out;
  }

  std::optional<TierSample> Tiers() override {
    if (block_bytes_ <= 0) return std::nullopt;
    std::optional<Metrics> m = ReadMetrics();
    if (!m) return std::nullopt;
    auto get = [&](const char* name) {
      auto it = m->find(name);
      return it == m->end() ? int64_t{0} : static_cast<int64_t>(it->second);
    };
    return TierSample{.device_bytes = get("mnemo_device_blocks_in_use") * block_bytes_,
                      .host_bytes = get("mnemo_host_bytes_used"),
                      .disk_bytes = get("mnemo_disk_bytes_used")};
  }

  int64_t kv_bytes_per_token() const override {
    return block_tokens_ > 0 ? block_bytes_ / block_tokens_ : 0;
  }

 private:
  // mnemo's metrics (unlabelled samples only), or nullopt when /metrics is absent or not
  // mnemo's.
  std::optional<Metrics> ReadMetrics() {
    std::lock_guard<std::mutex> lock(mu_);
    httplib::Result res = metrics_cli_->Get((conn_.base.prefix + "/metrics").c_str());
    if (!res || res->status != 200) return std::nullopt;
    Metrics m;
    std::string_view body = res->body;
    while (!body.empty()) {
      const size_t eol = body.find('\n');
      std::string_view line = body.substr(0, eol);
      body = eol == std::string_view::npos ? std::string_view() : body.substr(eol + 1);
      if (!line.starts_with("mnemo_")) continue;
      const size_t sp = line.find(' ');
      if (sp == std::string_view::npos || line.substr(0, sp).find('{') != std::string_view::npos) {
        continue;
      }
      double v = 0;
      if (absl::SimpleAtod(AsAbsl(line.substr(sp + 1)), &v)) m[std::string(line.substr(0, sp))] = v;
    }
    if (m.empty()) return std::nullopt;
    return m;
  }

  const HttpDriverOptions opts_;
  const Connection conn_;
  std::mutex mu_;                                 // serializes metrics_cli_
  std::unique_ptr<httplib::Client> metrics_cli_;  // guarded by mu_
  int64_t block_bytes_ = 0;                       // from /metrics (set by Start); 0: unknown
  int64_t block_tokens_ = 0;                      // likewise
  std::optional<Metrics> start_;                  // set by Start
};

}  // namespace

absl::StatusOr<std::unique_ptr<Driver>> MakeHttpDriver(const HttpDriverOptions& opts) {
  auto base = ParseBaseUrl(opts.base_url);
  if (!base.ok()) return base.status();
  Connection conn{.url = opts.base_url,
                  .base = *base,
                  .api_key = opts.api_key,
                  .timeout_seconds = opts.timeout_seconds};
  // Fail now, naming the URL, when nothing answers there; without a model name, use the
  // first one the server lists.
  HttpDriverOptions o = opts;
  {
    std::unique_ptr<httplib::Client> cli = conn.NewClient();
    httplib::Result res = cli->Get((base->prefix + "/v1/models").c_str());
    if (!res) return conn.Unreachable(res.error());
    if (o.model.empty()) {
      const Json j = Json::parse(res->body, nullptr, /*allow_exceptions=*/false);
      const Json* data = j.is_object() && j.contains("data") ? &j["data"] : nullptr;
      if (res->status != 200 || data == nullptr || !data->is_array() || data->empty() ||
          !(*data)[0].is_object() || !(*data)[0].contains("id") || !(*data)[0]["id"].is_string()) {
        return absl::FailedPreconditionError(
            absl::StrCat("GET ", opts.base_url, "/v1/models (HTTP ", res->status,
                         ") lists no model; name the served model (--served-model)"));
      }
      o.model = (*data)[0]["id"].get<std::string>();
    }
  }
  auto driver = std::make_unique<HttpDriver>(o, std::move(conn));
  driver->Start();
  return std::unique_ptr<Driver>(std::move(driver));
}

}  // namespace mnemo::bench
