// The native session API, /v1/sessions... (docs/api/sessions.md): create, list, read, patch
// and delete sessions, chat turns on them (the chat.completion shape of RespondChat), fork,
// rewind, context compaction, tier moves (prefetch, demote, flush), metadata, and
// export/import of portable bundles. Every call is scoped to the caller's tenant: the engine
// answers another tenant's id exactly like an unknown one (NotFound, 404).
//
// Thread-safety: handlers run on cpp-httplib's workers; the only state kept here (per-session
// usage counters) is behind a mutex.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <mutex>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cache/base/strings.h"
#include "cache/compaction.h"
#include "engine/server/internal/common.h"

namespace mnemo::server {
namespace {

// An id path segment. Malformed ids are not rejected by the pattern: the engine answers them
// like unknown ids (404 in JSON) rather than cpp-httplib's bare 404.
constexpr char kId[] = "([^/]+)";

std::string SessionPath(std::string_view tail = "") {
  return absl::StrCat("/v1/sessions/", kId, AsAbsl(tail));
}

// Usage of one session's turns, as the object's "costs".
struct Costs {
  int64_t tokens_computed = 0;  // prompt tokens whose KV was computed
  int64_t tokens_reused = 0;    // prompt tokens whose KV was reused (session or prefix)
};

// Per-session costs, summed from each finished turn's TurnResult::usage. Turns are recorded
// when submitted and folded in once they have ended (when the session is next read or turned),
// so a streamed turn needs no callback. Failed and cancelled turns (rolled back) do not count.
// Keyed by tenant and id, so another tenant's requests never touch a session's counters.
class SessionCosts {
 public:
  void AddTurn(const std::string& tenant, const std::string& id, engine::StreamPtr turn) {
    std::lock_guard<std::mutex> lock(mu_);
    Entry& e = entries_[Key(tenant, id)];
    Fold(e);
    e.pending.push_back(std::move(turn));
  }
  Costs Get(const std::string& tenant, const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(Key(tenant, id));
    if (it == entries_.end()) return {};
    Fold(it->second);
    return it->second.costs;
  }
  // The session is gone (deleted, or expired: the engine answered NotFound).
  void Erase(const std::string& tenant, const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    entries_.erase(Key(tenant, id));
  }

 private:
  struct Entry {
    Costs costs;
    std::vector<engine::StreamPtr> pending;  // turns not folded in yet
  };
  static std::string Key(const std::string& tenant, const std::string& id) {
    return absl::StrCat(tenant, "\n", id);
  }
  static void Fold(Entry& e) {
    std::erase_if(e.pending, [&e](const engine::StreamPtr& s) {
      if (!s->done()) return false;
      const engine::TurnResult& r = s->Wait();
      if (r.status.ok()) {
        e.costs.tokens_computed += r.usage.prompt_tokens - r.usage.cached_tokens;
        e.costs.tokens_reused += r.usage.cached_tokens;
      }
      return true;
    });
  }

  std::mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_;  // guarded by mu_
};

struct RouteState {
  SessionCosts costs;
  // Serializes "count, then create" while ServerOptions::max_sessions_per_tenant applies, so
  // concurrent creations cannot overshoot the limit.
  std::mutex create_mu;
};

// ---------------------------------------------------------------------------------------
// The session object

Json UnixSeconds(absl::Time t) {
  if (t == absl::InfiniteFuture() || t == absl::InfinitePast()) return nullptr;
  return absl::ToUnixSeconds(t);
}

// Seconds of a duration; null for an infinite one ("never").
Json DurationSeconds(absl::Duration d) {
  if (d == absl::InfiniteDuration()) return nullptr;
  return absl::ToDoubleSeconds(d);
}

Json RetentionObject(const engine::Retention& r) {
  return {{"priority", r.priority},
          {"pin_seconds", absl::ToDoubleSeconds(r.pin)},
          {"demote_after_idle_seconds", DurationSeconds(r.demote_after_idle)},
          {"max_lifetime_seconds", DurationSeconds(r.max_lifetime)}};
}

// Token ranges [begin, end) as [[begin, end], ...].
Json RangesArray(const std::vector<cache::TokenRange>& ranges) {
  Json out = Json::array();
  for (const cache::TokenRange& r : ranges) out.push_back(Json::array({r.begin, r.end}));
  return out;
}

// One compaction of the log: the ranges are of the history as it was before it.
Json CompactionLogEntry(const cache::CompactionRecord& r) {
  Json e = {{"policy", r.policy},
            {"created_at", UnixSeconds(absl::FromUnixMicros(r.unix_us))},
            {"dropped", RangesArray(r.dropped)},
            {"summarized", RangesArray(r.summarized)},
            {"position_shift", r.position_shift},
            {"turns", r.turns}};
  if (!r.summary.empty()) e["summary"] = r.summary;
  e["kept"] = !r.kept.empty();  // the state before it is kept (a rewind can go back past it)
  return e;
}

// The options the session's turns compact with (the fields session creation takes).
Json CompactionOptionsObject(const cache::CompactionOptions& o) {
  return {{"policy", std::string(cache::CompactionPolicyName(o.policy))},
          {"sink_tokens", o.sink_tokens},
          {"trigger_fraction", o.trigger_fraction},
          {"trigger_tokens", o.trigger_tokens},
          {"max_session_bytes", o.max_session_bytes},
          {"target_fraction", o.target_fraction},
          {"observe_tokens", o.observe_tokens},
          {"summary_prompt", o.summary_prompt},
          {"summary_max_tokens", o.summary_max_tokens},
          {"keep_history", o.keep_history}};
}

Json CompactionObject(const engine::SessionInfo& s) {
  Json log = Json::array();
  for (const cache::CompactionRecord& r : s.compaction_log) log.push_back(CompactionLogEntry(r));
  return {{"policy", std::string(cache::CompactionPolicyName(s.compaction_policy))},
          {"compactions", s.compactions},
          {"compacted_tokens", s.compacted_tokens},
          {"rewind_floor", s.rewind_floor},
          {"options", CompactionOptionsObject(s.compaction)},
          {"log", std::move(log)}};
}

Json SessionObject(const engine::SessionInfo& s, const Costs& costs) {
  return {
      {"id", s.id},
      {"object", "session"},
      {"created_at", UnixSeconds(s.created)},
      {"last_used_at", UnixSeconds(s.last_used)},
      {"expires_at", UnixSeconds(s.expires)},
      {"tokens", s.n_tokens},
      {"kv_tokens", s.kv_tokens},
      {"turns", s.n_turns},
      {"messages", s.n_messages},
      {"tier", std::string(engine::TierName(s.tier))},
      {"bytes", {{"device", s.device_bytes}, {"host", s.host_bytes}, {"disk", s.disk_bytes}}},
      {"busy", s.busy},
      {"moving", s.moving},
      {"durability", std::string(engine::DurabilityName(s.durability))},
      {"durable", s.durable},
      {"last_write_error", s.last_write_error.empty() ? Json(nullptr) : Json(s.last_write_error)},
      {"retention", RetentionObject(s.retention)},
      {"pinned_until", UnixSeconds(s.pinned_until)},
      {"compaction", CompactionObject(s)},
      {"costs",
       {{"tokens_computed", costs.tokens_computed},
        {"tokens_reused", costs.tokens_reused},
        {"byte_seconds",
         {{"device", s.device_byte_seconds},
          {"host", s.host_byte_seconds},
          {"disk", s.disk_byte_seconds}}}}}};
}

// ---------------------------------------------------------------------------------------
// Helpers

// Answers `c` with the error of a failed engine call (and forgets an id the engine does not
// know). Returns true if `st` was an error.
bool Failed(Call& c, RouteState& rs, const std::string& id, const absl::Status& st,
            std::string param = "") {
  if (st.ok()) return false;
  if (st.code() == absl::StatusCode::kNotFound && !id.empty()) rs.costs.Erase(c.tenant, id);
  c.Error(FromStatus(st, std::move(param)));
  return true;
}

// `param` for a client's mistake (InvalidArgument), none for other errors (busy, unknown).
std::string ParamIfInvalid(const absl::Status& st, std::string param) {
  return st.code() == absl::StatusCode::kInvalidArgument ? std::move(param) : "";
}

// Answers with the session object of `id` (after a successful change).
void SendSession(Call& c, RouteState& rs, const std::string& id, int status = 200) {
  auto info = c.engine().GetSession(c.tenant, id);
  if (Failed(c, rs, id, info.status())) return;
  c.SendJson(status, SessionObject(*info, rs.costs.Get(c.tenant, id)));
}

// The body as a JSON object, {} when it is empty (endpoints whose fields are all optional).
std::optional<Json> OptionalBody(Call& c) {
  if (c.req.body.empty()) return Json::object();
  return c.Body();
}

bool Invalid(Call& c, const FieldReader& f) {
  if (f.ok()) return false;
  c.Error(f.error());
  return true;
}

std::optional<engine::Durability> ReadDurability(FieldReader& f, std::string_view name) {
  const std::optional<std::string> d = f.String(name);
  if (!d) return std::nullopt;
  if (*d == "async") return engine::Durability::kAsync;
  if (*d == "sync") return engine::Durability::kSync;
  if (*d == "none") return engine::Durability::kNone;
  f.Fail(name, absl::StrCat("must be \"async\", \"sync\" or \"none\", got \"", *d, "\""));
  return std::nullopt;
}

// A number of seconds in [0, 1e12] (positive unless allow_zero); nullopt when absent.
std::optional<absl::Duration> ReadSeconds(FieldReader& f, std::string_view name, bool allow_zero) {
  const Json* v = f.Raw(name);
  if (!f.ok() || v == nullptr) return std::nullopt;
  const std::optional<double> x = f.Number(name, 0.0, 1e12);
  if (!x) return std::nullopt;
  if (!allow_zero && *x == 0.0) {
    f.Fail(name, "must be positive");
    return std::nullopt;
  }
  return absl::Seconds(*x);
}

// Reads body["retention"] ({priority, pin_seconds, demote_after_idle_seconds,
// max_lifetime_seconds}) over `base`: absent fields keep base's values, and a null
// demote_after_idle_seconds / max_lifetime_seconds means "never". `value` is nullopt when the
// field is absent; `error` names the bad field.
struct RetentionField {
  std::optional<engine::Retention> value;
  std::optional<ApiError> error;
};
RetentionField ReadRetention(const Json& body, const engine::Retention& base) {
  RetentionField out;
  auto it = body.find("retention");
  if (it == body.end() || it->is_null()) return out;
  if (!it->is_object()) {
    out.error = BadRequest("retention: must be an object", "retention");
    return out;
  }
  FieldReader rf(*it, "retention.");
  rf.OnlyKnown({"priority", "pin_seconds", "demote_after_idle_seconds", "max_lifetime_seconds"});
  engine::Retention r = base;
  if (auto p = rf.Int("priority", -1000000, 1000000)) r.priority = static_cast<int>(*p);
  if (auto pin = ReadSeconds(rf, "pin_seconds", /*allow_zero=*/true)) r.pin = *pin;
  for (auto [name, field] : {std::pair{"demote_after_idle_seconds", &r.demote_after_idle},
                             std::pair{"max_lifetime_seconds", &r.max_lifetime}}) {
    if (it->contains(name) && (*it)[name].is_null()) {
      *field = absl::InfiniteDuration();
    } else if (auto d = ReadSeconds(rf, name, /*allow_zero=*/false)) {
      *field = *d;
    }
  }
  if (!rf.ok()) {
    out.error = rf.error();
  } else {
    out.value = r;
  }
  return out;
}

// Reads body["compaction"] ({policy, sink_tokens, trigger_fraction, trigger_tokens,
// max_session_bytes, target_fraction, observe_tokens, summary_prompt, summary_max_tokens},
// all optional) over `base` (the server's default):
// absent fields keep base's values. `value` is nullopt when the field is absent; `error`
// names the bad field ("compaction.target_fraction").
struct CompactionField {
  std::optional<cache::CompactionOptions> value;
  std::optional<ApiError> error;
};
CompactionField ReadCompaction(const Json& body, const cache::CompactionOptions& base) {
  CompactionField out;
  auto it = body.find("compaction");
  if (it == body.end() || it->is_null()) return out;
  if (!it->is_object()) {
    out.error = BadRequest("compaction: must be an object", "compaction");
    return out;
  }
  FieldReader rf(*it, "compaction.");
  rf.OnlyKnown({"policy", "sink_tokens", "trigger_fraction", "trigger_tokens", "max_session_bytes",
                "target_fraction", "observe_tokens", "summary_prompt", "summary_max_tokens",
                "keep_history"});
  cache::CompactionOptions o = base;
  if (auto name = rf.String("policy")) {
    auto policy = cache::ParseCompactionPolicy(*name);
    if (policy.ok()) {
      o.policy = *policy;
    } else {
      rf.Fail("policy", absl::StrCat("must be \"none\", \"window\", \"score\" or \"summarize\", "
                                     "got \"",
                                     *name, "\""));
    }
  }
  constexpr int64_t kMaxTokens = int64_t{1} << 40;
  if (auto n = rf.Int("sink_tokens", 0, kMaxTokens)) o.sink_tokens = *n;
  if (auto n = rf.Int("trigger_tokens", 0, kMaxTokens)) o.trigger_tokens = *n;
  if (auto n = rf.Int("observe_tokens", 1, kMaxTokens)) o.observe_tokens = *n;
  if (auto keep = rf.Bool("keep_history")) o.keep_history = *keep;
  if (auto n = rf.Int("summary_max_tokens", 1, kMaxTokens)) o.summary_max_tokens = *n;
  if (auto prompt = rf.String("summary_prompt")) {
    if (prompt->empty()) rf.Fail("summary_prompt", "must not be empty");
    o.summary_prompt = *std::move(prompt);
  }
  if (auto n = rf.Int("max_session_bytes", 0, std::numeric_limits<int64_t>::max())) {
    o.max_session_bytes = *n;
  }
  // Fractions: trigger_fraction in (0, 1], target_fraction in (0, 1).
  if (auto x = rf.Number("trigger_fraction", 0.0, 1.0)) {
    if (*x == 0.0) rf.Fail("trigger_fraction", "must be in (0, 1], got 0");
    o.trigger_fraction = *x;
  }
  if (auto x = rf.Number("target_fraction", 0.0, 1.0)) {
    if (*x == 0.0 || *x == 1.0) {
      rf.Fail("target_fraction", absl::StrCat("must be in (0, 1), got ", *x));
    }
    o.target_fraction = *x;
  }
  if (!rf.ok()) {
    out.error = rf.error();
    return out;
  }
  // Every field was checked above; the engine's own check keeps the two in step.
  if (absl::Status st = cache::ValidateCompactionOptions(o); !st.ok()) {
    out.error = BadRequest(absl::StrCat("compaction: ", st.message()), "compaction");
    return out;
  }
  out.value = o;
  return out;
}

// The retention a PATCH starts from: the session's, with the pin reduced to what is left of
// it (so changing another field does not extend a pin).
engine::Retention CurrentRetention(const engine::SessionInfo& s) {
  engine::Retention r = s.retention;
  const absl::Time now = absl::Now();
  r.pin = s.pinned_until > now ? s.pinned_until - now : absl::ZeroDuration();
  return r;
}

Json Details(const std::string& session, const engine::SessionInfo* info = nullptr) {
  Json d = {{"session", session}};
  if (info != nullptr) {
    d["tokens"] = info->n_tokens;
    d["kv_tokens"] = info->kv_tokens;
    d["turns"] = info->n_turns;
  }
  return d;
}

// A file name under the system's temp directory for one export or import.
std::string TempBundlePath() {
  std::error_code ec;
  std::filesystem::path dir = std::filesystem::temp_directory_path(ec);
  if (ec) dir = "/tmp";
  return (dir / RandomId("mnemo-bundle-")).string() + ".mnemo";
}

// `st` with the temp file's path (a server detail) replaced by "the bundle".
absl::Status WithoutPath(const absl::Status& st, const std::string& path) {
  if (st.ok()) return st;
  return absl::Status(st.code(), absl::StrReplaceAll(st.message(), {{path, "the bundle"}}));
}

}  // namespace

void RegisterSessionRoutes(Router& r) {
  auto rs = std::make_shared<RouteState>();

  // POST /v1/sessions
  r.Post("/v1/sessions", "/v1/sessions", [rs](Call& c) {
    auto body = OptionalBody(c);
    if (!body) return;
    FieldReader f(*body);
    f.OnlyKnown({"system_prompt", "metadata", "seed", "durability", "ttl_seconds", "retention",
                 "compaction"});
    engine::SessionParams p;
    if (auto s = f.String("system_prompt")) p.system_prompt = *s;
    if (auto m = f.String("metadata")) p.metadata = *m;
    if (auto seed = f.Int("seed", 0, std::numeric_limits<int64_t>::max())) {
      p.seed = static_cast<uint64_t>(*seed);
    }
    p.durability = ReadDurability(f, "durability");
    p.ttl = ReadSeconds(f, "ttl_seconds", /*allow_zero=*/false);
    if (Invalid(c, f)) return;
    RetentionField ret = ReadRetention(*body, {});
    if (ret.error) return c.Error(*ret.error);
    if (ret.value) p.retention = *ret.value;
    CompactionField comp = ReadCompaction(*body, c.engine().options().compaction);
    if (comp.error) return c.Error(*comp.error);
    p.compaction = comp.value;

    const int limit = c.server.options.max_sessions_per_tenant;
    std::unique_lock<std::mutex> lock(rs->create_mu, std::defer_lock);
    if (limit > 0) {
      lock.lock();
      const size_t have = c.engine().ListSessions(c.tenant).size();
      if (have >= static_cast<size_t>(limit)) {
        c.res.set_header("Retry-After", "10");
        return c.Error({.status = 429,
                        .type = "rate_limit_error",
                        .message = absl::StrCat("tenant \"", c.tenant, "\" has ", have,
                                                " sessions (its limit is ", limit,
                                                "); delete one or let one expire"),
                        .code = "session_limit_exceeded"});
      }
    }
    auto info = c.engine().CreateSession(c.tenant, p);
    if (lock.owns_lock()) lock.unlock();
    if (Failed(c, *rs, "", info.status())) return;
    Json d = Details(info->id, &*info);
    if (c.server.options.audit_prompts) d["system_prompt"] = p.system_prompt;
    c.server.Audit(c.tenant, "session.create", d);
    c.SendJson(201, SessionObject(*info, {}));
  });

  // GET /v1/sessions
  r.Get("/v1/sessions", "/v1/sessions", [rs](Call& c) {
    std::vector<engine::SessionInfo> all = c.engine().ListSessions(c.tenant);
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
      return a.created != b.created ? a.created < b.created : a.id < b.id;
    });
    Json data = Json::array();
    for (const engine::SessionInfo& s : all)
      data.push_back(SessionObject(s, rs->costs.Get(c.tenant, s.id)));
    c.SendJson(200, {{"object", "list"}, {"data", data}, {"has_more", false}});
  });

  // POST /v1/sessions/import: the body is a bundle written by export.
  r.Post("/v1/sessions/import", "/v1/sessions/import", [rs](Call& c) {
    if (c.req.body.empty()) {
      return c.Error(BadRequest("the request body is empty; send an exported session bundle"));
    }
    const std::string path = TempBundlePath();
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(c.req.body.data(), static_cast<std::streamsize>(c.req.body.size()));
      if (!out.good()) {
        std::filesystem::remove(path);
        return c.Error(
            FromStatus(absl::UnavailableError("cannot write the bundle to a temp file")));
      }
    }
    absl::StatusOr<engine::SessionInfo> info = c.engine().ImportSession(c.tenant, path);
    if (!info.ok()) info = WithoutPath(info.status(), path);
    std::error_code ec;
    std::filesystem::remove(path, ec);
    if (info.status().code() == absl::StatusCode::kDataLoss) {  // the client sent a bad bundle
      return c.Error(BadRequest(std::string(AsStd(info.status().message()))));
    }
    if (Failed(c, *rs, "", info.status())) return;
    c.server.Audit(c.tenant, "session.import", Details(info->id, &*info));
    c.SendJson(201, SessionObject(*info, {}));
  });

  // GET /v1/sessions/{id}
  r.Get(SessionPath(), "/v1/sessions/{id}",
        [rs](Call& c) { SendSession(c, *rs, c.req.matches[1].str()); });

  // DELETE /v1/sessions/{id}
  r.Delete(SessionPath(), "/v1/sessions/{id}", [rs](Call& c) {
    const std::string id = c.req.matches[1].str();
    auto info = c.engine().GetSession(c.tenant, id);
    if (Failed(c, *rs, id, info.status())) return;
    if (Failed(c, *rs, id, c.engine().DeleteSession(c.tenant, id))) return;
    rs->costs.Erase(c.tenant, id);
    c.server.Audit(c.tenant, "session.delete", Details(id, &*info));
    c.SendJson(200, {{"id", id}, {"object", "session"}, {"deleted", true}});
  });

  // PATCH /v1/sessions/{id} {retention?, metadata?}
  r.Patch(SessionPath(), "/v1/sessions/{id}", [rs](Call& c) {
    const std::string id = c.req.matches[1].str();
    auto body = c.Body();
    if (!body) return;
    FieldReader f(*body);
    f.OnlyKnown({"retention", "metadata"});
    const std::optional<std::string> metadata = f.String("metadata");
    if (Invalid(c, f)) return;
    auto info = c.engine().GetSession(c.tenant, id);
    if (Failed(c, *rs, id, info.status())) return;
    RetentionField ret = ReadRetention(*body, CurrentRetention(*info));
    if (ret.error) return c.Error(*ret.error);
    if (ret.value) {
      const absl::Status st = c.engine().SetRetention(c.tenant, id, *ret.value);
      if (Failed(c, *rs, id, st, ParamIfInvalid(st, "retention"))) return;
    }
    if (metadata && Failed(c, *rs, id, c.engine().SetMetadata(c.tenant, id, *metadata))) return;
    Json d = Details(id);
    if (ret.value) d["retention"] = RetentionObject(*ret.value);
    d["metadata_changed"] = metadata.has_value();
    c.server.Audit(c.tenant, "session.update", d);
    SendSession(c, *rs, id);
  });

  // POST /v1/sessions/{id}/messages: one chat turn.
  r.Post(SessionPath("/messages"), "/v1/sessions/{id}/messages", [rs](Call& c) {
    const std::string id = c.req.matches[1].str();
    auto body = c.Body();
    if (!body) return;
    FieldReader f(*body);
    GenerationFields g = ReadGenerationFields(f);
    g.params.messages = ReadMessages(f, "messages");
    const bool wait = f.Bool("wait").value_or(false);
    if (f.ok() && g.n != 1) f.Fail("n", "must be 1 for a session turn (fork to branch)");
    if (Invalid(c, f)) return;
    g.params.wait_if_busy = wait;
    g.report_compaction = true;
    g.params.reseed = f.Raw("seed") != nullptr;  // a seed restarts the session's RNG from it

    auto before = c.engine().GetSession(c.tenant, id);
    if (Failed(c, *rs, id, before.status())) return;
    const size_t n_messages = g.params.messages.size();
    Json audit = Details(id, &*before);
    if (c.server.options.audit_prompts) {
      Json msgs = Json::array();
      for (const engine::ChatMessage& m : g.params.messages) {
        msgs.push_back({{"role", m.role}, {"content", m.content}});
      }
      audit["messages"] = msgs;
    }
    auto stream = c.engine().Continue(c.tenant, id, std::move(g.params));
    if (!stream.ok()) {
      if (stream.status().code() == absl::StatusCode::kFailedPrecondition && !wait) {
        ApiError e = FromStatus(stream.status());
        e.message = absl::StrCat("session busy: ", e.message,
                                 " (send \"wait\": true to queue behind the turn in flight)");
        e.code = "session_busy";
        return c.Error(e);
      }
      Failed(c, *rs, id, stream.status(), ParamIfInvalid(stream.status(), "messages"));
      return;
    }
    const engine::StreamPtr s = *stream;
    // The turn's index: exact once it ended; while streaming, the count of turns when it was
    // submitted (another turn queued ahead of it with wait: true would shift it).
    int64_t turn = before->n_turns;
    if (!g.stream) {
      c.server.Track(s);
      const engine::TurnResult& result = s->Wait();
      c.server.Untrack(s);
      if (result.status.ok()) turn = result.turn;
      audit["prompt_tokens"] = result.usage.prompt_tokens;
      audit["cached_tokens"] = result.usage.cached_tokens;
      audit["completion_tokens"] = result.usage.completion_tokens;
      audit["compacted_tokens"] = result.usage.compacted_tokens;
      audit["status"] = result.status.ok() ? "ok" : std::string(AsStd(result.status.message()));
    }
    audit["turn"] = turn;
    audit["new_messages"] = n_messages;
    audit["stream"] = g.stream;
    c.server.Audit(c.tenant, "session.turn", audit);
    rs->costs.AddTurn(c.tenant, id, s);
    RespondChat(c, {s}, g, RandomId("chatcmpl-"), {{"session_id", id}, {"turn", turn}});
  });

  // POST /v1/sessions/{id}/fork {turns?}
  r.Post(SessionPath("/fork"), "/v1/sessions/{id}/fork", [rs](Call& c) {
    const std::string id = c.req.matches[1].str();
    auto body = OptionalBody(c);
    if (!body) return;
    FieldReader f(*body);
    f.OnlyKnown({"turns"});
    const std::optional<int64_t> turns = f.Int("turns", 0, std::numeric_limits<int64_t>::max());
    if (Invalid(c, f)) return;
    // (Below a compaction's rewind floor the engine refuses: FailedPrecondition, 409.)
    auto info = c.engine().Fork(c.tenant, id, turns);
    if (Failed(c, *rs, id, info.status(), ParamIfInvalid(info.status(), "turns"))) return;
    Json d = Details(info->id, &*info);
    d["source"] = id;
    c.server.Audit(c.tenant, "session.fork", d);
    c.SendJson(201, SessionObject(*info, {}));
  });

  // POST /v1/sessions/{id}/rewind {turns}
  r.Post(SessionPath("/rewind"), "/v1/sessions/{id}/rewind", [rs](Call& c) {
    const std::string id = c.req.matches[1].str();
    auto body = c.Body();
    if (!body) return;
    FieldReader f(*body);
    f.OnlyKnown({"turns"});
    const std::optional<int64_t> turns = f.Int("turns", 0, std::numeric_limits<int64_t>::max());
    if (f.ok() && !turns) f.Fail("turns", "is required");
    if (Invalid(c, f)) return;
    const absl::Status st = c.engine().Rewind(c.tenant, id, *turns);
    if (Failed(c, *rs, id, st, ParamIfInvalid(st, "turns"))) return;
    Json d = Details(id);
    d["turns"] = *turns;
    c.server.Audit(c.tenant, "session.rewind", d);
    SendSession(c, *rs, id);
  });

  // POST /v1/sessions/{id}/compact {policy?, keep_tokens?}: the session object, whose
  // compaction log's last entry is this compaction (a summary's text included).
  r.Post(SessionPath("/compact"), "/v1/sessions/{id}/compact", [rs](Call& c) {
    const std::string id = c.req.matches[1].str();
    auto body = OptionalBody(c);
    if (!body) return;
    FieldReader f(*body);
    f.OnlyKnown({"policy", "keep_tokens"});
    std::optional<cache::CompactionPolicy> policy;
    if (auto name = f.String("policy")) {
      auto p = cache::ParseCompactionPolicy(*name);
      if (!p.ok()) {
        f.Fail("policy",
               absl::StrCat("must be \"window\", \"score\" or \"summarize\", got \"", *name, "\""));
      } else if (*p == cache::CompactionPolicy::kNone) {
        f.Fail("policy",
               "\"none\" compacts nothing; send \"window\", \"score\" or \"summarize\" (or leave "
               "it out)");
      } else {
        policy = *p;
      }
    }
    const std::optional<int64_t> keep =
        f.Int("keep_tokens", 1, std::numeric_limits<int64_t>::max());
    if (Invalid(c, f)) return;
    auto before = c.engine().GetSession(c.tenant, id);
    if (Failed(c, *rs, id, before.status())) return;
    auto after = c.engine().Compact(c.tenant, id, policy, keep);
    if (!after.ok()) {
      // A client's mistake is the policy (the session's is none and none was sent) or the
      // keep (it would drop nothing, or too much).
      const bool no_policy = !policy && before->compaction_policy == cache::CompactionPolicy::kNone;
      Failed(c, *rs, id, after.status(),
             ParamIfInvalid(after.status(), no_policy ? "policy" : "keep_tokens"));
      return;
    }
    Json d = Details(id, &*after);
    d["tokens_before"] = before->n_tokens;
    d["dropped_tokens"] = before->n_tokens - after->n_tokens;
    d["compactions"] = after->compactions;
    if (!after->compaction_log.empty()) d["policy"] = after->compaction_log.back().policy;
    c.server.Audit(c.tenant, "session.compact", d);
    c.SendJson(200, SessionObject(*after, rs->costs.Get(c.tenant, id)));
  });

  // POST /v1/sessions/{id}/prefetch
  r.Post(SessionPath("/prefetch"), "/v1/sessions/{id}/prefetch", [rs](Call& c) {
    const std::string id = c.req.matches[1].str();
    if (Failed(c, *rs, id, c.engine().Prefetch(c.tenant, id))) return;
    auto info = c.engine().GetSession(c.tenant, id);
    if (Failed(c, *rs, id, info.status())) return;
    c.server.Audit(c.tenant, "session.prefetch", Details(id, &*info));
    c.SendJson(202, {{"id", id}, {"tier", std::string(engine::TierName(info->tier))}});
  });

  // POST /v1/sessions/{id}/demote {tier}
  r.Post(SessionPath("/demote"), "/v1/sessions/{id}/demote", [rs](Call& c) {
    const std::string id = c.req.matches[1].str();
    auto body = c.Body();
    if (!body) return;
    FieldReader f(*body);
    f.OnlyKnown({"tier"});
    const std::optional<std::string> tier = f.String("tier");
    if (f.ok() && (!tier || (*tier != "host" && *tier != "disk"))) {
      f.Fail("tier", "must be \"host\" or \"disk\"");
    }
    if (Invalid(c, f)) return;
    const engine::StorageTier to =
        *tier == "host" ? engine::StorageTier::kHost : engine::StorageTier::kDisk;
    if (Failed(c, *rs, id, c.engine().Demote(c.tenant, id, to))) return;
    Json d = Details(id);
    d["tier"] = *tier;
    c.server.Audit(c.tenant, "session.demote", d);
    SendSession(c, *rs, id);
  });

  // POST /v1/sessions/{id}/flush
  r.Post(SessionPath("/flush"), "/v1/sessions/{id}/flush", [rs](Call& c) {
    const std::string id = c.req.matches[1].str();
    if (Failed(c, *rs, id, c.engine().Flush(c.tenant, id))) return;
    c.server.Audit(c.tenant, "session.flush", Details(id));
    SendSession(c, *rs, id);
  });

  // GET/PUT /v1/sessions/{id}/metadata
  r.Get(SessionPath("/metadata"), "/v1/sessions/{id}/metadata", [rs](Call& c) {
    const std::string id = c.req.matches[1].str();
    auto m = c.engine().GetMetadata(c.tenant, id);
    if (Failed(c, *rs, id, m.status())) return;
    c.SendJson(200, {{"metadata", *m}});
  });
  r.Put(SessionPath("/metadata"), "/v1/sessions/{id}/metadata", [rs](Call& c) {
    const std::string id = c.req.matches[1].str();
    auto body = c.Body();
    if (!body) return;
    FieldReader f(*body);
    f.OnlyKnown({"metadata"});
    std::optional<std::string> m = f.String("metadata");
    if (f.ok() && !m) f.Fail("metadata", "is required (a string)");
    if (Invalid(c, f)) return;
    if (Failed(c, *rs, id, c.engine().SetMetadata(c.tenant, id, *m))) return;
    Json d = Details(id);
    d["metadata_bytes"] = m->size();
    c.server.Audit(c.tenant, "session.metadata", d);
    c.SendJson(200, {{"metadata", *m}});
  });

  // GET /v1/sessions/{id}/export: the portable bundle.
  r.Get(SessionPath("/export"), "/v1/sessions/{id}/export", [rs](Call& c) {
    const std::string id = c.req.matches[1].str();
    const std::string path = TempBundlePath();
    absl::Status st = WithoutPath(c.engine().ExportSession(c.tenant, id, path), path);
    std::string bytes;
    if (st.ok()) {
      std::ifstream in(path, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      if (!in.good() && !in.eof()) st = absl::UnavailableError("cannot read the exported bundle");
    }
    std::error_code ec;
    std::filesystem::remove(path, ec);
    if (Failed(c, *rs, id, st)) return;
    Json d = Details(id);
    d["bytes"] = bytes.size();
    c.server.Audit(c.tenant, "session.export", d);
    c.res.status = 200;
    c.res.set_header("Content-Disposition",
                     absl::StrCat("attachment; filename=\"", id, ".mnemo\""));
    c.res.set_content(std::move(bytes), "application/octet-stream");
  });
}

}  // namespace mnemo::server
