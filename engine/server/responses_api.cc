// /v1/responses: OpenAI's Responses API over engine sessions (docs/api/responses.md).
//
// State model. Every stored response names (tenant, session, turns): the engine session that
// holds its conversation and that session's turn count right after it. A request without
// previous_response_id creates a session; one with it continues the previous response's
// session directly when that response is still the session's latest (the KV is reused, no
// recomputation), and otherwise forks the session at the response's turn count and continues
// the fork. A chain of responses is thus a tree of sessions whose branches share KV blocks.
//
//   r1 -> r2 -> r3 -> r4        session A (turns after r1..r4)
//          \-> r5 -> r6         session B = Fork(A, turns(r2)), r5 and r6 continue B
//
// Concurrency. ResponseStore keeps, per session, a reference count (stored responses plus
// requests using it) and a busy flag: a request holds its session exclusively while it
// forks or continues it. A request that finds the session of its previous response busy
// waits until it is free (the engine refuses to fork a session with a turn in flight), then
// continues it if the previous response is still the latest, else forks it. store: false
// never changes a stored chain: it always continues a new session or a fork, deleted after
// the reply.
//
// Truncation. `truncation` picks the turn's context compaction (cache/compaction.h): absent,
// the session's policy; "auto", the session's options, or the window policy with the
// server's settings when the session's policy is none; "disabled", none (a conversation
// that would overflow the context is refused). The response echoes the effective value.
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache/compaction.h"
#include "cache/state_store.h"
#include "engine/server/internal/common.h"

namespace mnemo::server {

namespace {

// "<prefix>" + 32 lowercase hex digits from a per-thread generator seeded by the OS.
std::string NewId(std::string_view prefix) {
  thread_local std::mt19937_64 rng = [] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }();
  const uint64_t hi = rng();
  const uint64_t lo = rng();
  return absl::StrCat(std::string(prefix), absl::StrFormat("%016x%016x", hi, lo));
}

// ---------------------------------------------------------------------------------------
// The request

struct ResponseRequest {
  std::string model;
  std::vector<engine::ChatMessage> input;
  std::optional<std::string> instructions;
  std::string previous_response_id;  // "" : none
  bool store = true;
  bool stream = false;
  std::optional<std::string> truncation;  // "auto" or "disabled"; nullopt: the session's
  engine::TurnParams params;              // sampling and stop; messages set later
  Json metadata = Json::object();
  Json temperature = 1.0;  // as echoed in the response object
  Json top_p = 1.0;
  Json max_output_tokens = nullptr;
  Json user = nullptr;
};

// Input items: {"role", "content"} with an optional "type": "message"; content a string or
// an array of {"type": "input_text" | "output_text", "text"} parts.
std::vector<engine::ChatMessage> ReadInput(FieldReader& f) {
  std::vector<engine::ChatMessage> out;
  const Json* v = f.Raw("input");
  if (!f.ok()) return out;
  if (v == nullptr) {
    f.Fail("input", "is required: a string or an array of input items");
    return out;
  }
  if (v->is_string()) {
    out.push_back({"user", v->get<std::string>()});
    return out;
  }
  if (!v->is_array() || v->empty()) {
    f.Fail("input", "must be a string or a non-empty array of input items");
    return out;
  }
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& m = (*v)[i];
    const std::string at = absl::StrCat("input[", i, "]");
    if (!m.is_object()) {
      f.Fail(at, "must be an object with role and content");
      return {};
    }
    if (auto t = m.find("type"); t != m.end() && (!t->is_string() || *t != "message")) {
      f.Fail(at + ".type", absl::StrCat("only \"message\" items are supported, got ", t->dump()));
      return {};
    }
    auto r = m.find("role");
    std::string role = r != m.end() && r->is_string() ? r->get<std::string>() : "";
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant") {
      f.Fail(at + ".role", absl::StrCat("must be user, assistant, system or developer, got ",
                                        r == m.end() ? "nothing" : r->dump()));
      return {};
    }
    std::string content;
    auto c = m.find("content");
    if (c != m.end() && c->is_string()) {
      content = c->get<std::string>();
    } else if (c != m.end() && c->is_array()) {
      for (const Json& part : *c) {
        const bool ok = part.is_object() && part.contains("type") && part.contains("text") &&
                        (part["type"] == "input_text" || part["type"] == "output_text") &&
                        part["text"].is_string();
        if (!ok) {
          f.Fail(at + ".content",
                 "content parts must be {\"type\": \"input_text\" or \"output_text\", "
                 "\"text\": string}");
          return {};
        }
        content += part["text"].get<std::string>();
      }
    } else {
      f.Fail(at + ".content", "must be a string or an array of input_text parts");
      return {};
    }
    out.push_back({std::move(role), std::move(content)});
  }
  return out;
}

// OpenAI's limits: at most 16 pairs, keys up to 64 characters, string values up to 512.
void ReadMetadata(FieldReader& f, Json& out) {
  const Json* m = f.Raw("metadata");
  if (!f.ok() || m == nullptr) return;
  if (!m->is_object() || m->size() > 16) {
    f.Fail("metadata", "must be an object of at most 16 string values");
    return;
  }
  for (auto it = m->begin(); it != m->end(); ++it) {
    if (it.key().size() > 64 || !it->is_string() || it->get<std::string>().size() > 512) {
      f.Fail("metadata", absl::StrCat("\"", it.key(),
                                      "\": keys up to 64 characters, values strings of up "
                                      "to 512 characters"));
      return;
    }
  }
  out = *m;
}

std::optional<ResponseRequest> ReadRequest(FieldReader& f) {
  ResponseRequest r;
  f.OnlyKnown({"model", "input", "instructions", "previous_response_id", "store", "stream",
               "max_output_tokens", "ignore_eos", "temperature", "top_p", "metadata", "truncation",
               "user"});
  auto model = f.String("model");
  if (f.ok() && !model) f.Fail("model", "is required");
  if (model) r.model = *model;
  r.input = ReadInput(f);
  r.instructions = f.String("instructions");
  if (auto p = f.String("previous_response_id")) r.previous_response_id = *p;
  if (auto s = f.Bool("store")) r.store = *s;
  r.truncation = f.String("truncation");
  if (r.truncation && *r.truncation != "auto" && *r.truncation != "disabled") {
    f.Fail("truncation",
           absl::StrCat("must be \"auto\" or \"disabled\", got \"", *r.truncation, "\""));
  }
  ReadMetadata(f, r.metadata);
  GenerationFields g = ReadGenerationFields(f);
  if (!f.ok()) return std::nullopt;
  r.params = std::move(g.params);
  r.stream = g.stream;
  r.temperature = f.Raw("temperature") ? *f.Raw("temperature") : Json(1.0);
  r.top_p = f.Raw("top_p") ? *f.Raw("top_p") : Json(1.0);
  if (const Json* m = f.Raw("max_output_tokens")) r.max_output_tokens = *m;
  if (!g.user.empty()) r.user = g.user;
  return r;
}

// ---------------------------------------------------------------------------------------
// The store

// The session a request generates into, held exclusively (busy) until Release.
struct Target {
  std::string session;
  bool forked = false;
};

class ResponseStore {
 public:
  // Finds the session `r` continues and claims it: a new session, the previous response's
  // session (still at that response) or a fork of it. NotFound (unknown previous response,
  // or another tenant's), ResourceExhausted (the tenant's session limit), engine errors.
  absl::StatusOr<Target> Acquire(engine::Engine& engine, const std::string& tenant,
                                 const ResponseRequest& r, int max_sessions) {
    if (r.previous_response_id.empty()) {
      absl::Status limit = CheckSessionLimit(engine, tenant, max_sessions);
      if (!limit.ok()) return limit;
      engine::SessionParams sp;
      if (r.instructions) sp.system_prompt = *r.instructions;
      auto info = engine.CreateSession(tenant, sp);
      if (!info.ok()) return info.status();
      std::lock_guard<std::mutex> lock(mu_);
      sessions_[info->id] = {.refs = 1, .busy = true, .turns = info->n_turns};
      return Target{.session = info->id};
    }
    std::unique_lock<std::mutex> lock(mu_);
    auto it = responses_.find(r.previous_response_id);
    if (it == responses_.end() || it->second.tenant != tenant) {
      return absl::NotFoundError(
          absl::StrCat("no response with id ", r.previous_response_id, " (previous_response_id)"));
    }
    const std::string source = it->second.session;
    const int64_t turns = it->second.turns;
    SessionEntry& src = sessions_.at(source);
    ++src.refs;  // kept while waiting, so that a DELETE cannot delete the session meanwhile
    cv_.wait(lock, [&] { return !src.busy; });
    src.busy = true;
    if (r.store && src.turns == turns) return Target{.session = source};
    lock.unlock();
    absl::Status can_fork = CheckSessionLimit(engine, tenant, max_sessions);
    if (can_fork.ok()) {
      can_fork = CheckNotCompactedAway(engine, tenant, source, turns, r.previous_response_id);
    }
    absl::StatusOr<engine::SessionInfo> fork = can_fork.ok()
                                                   ? engine.Fork(tenant, source, turns)
                                                   : absl::StatusOr<engine::SessionInfo>(can_fork);
    Release(engine, tenant, source, std::nullopt);
    if (!fork.ok()) return fork.status();
    lock.lock();
    sessions_[fork->id] = {.refs = 1, .busy = true, .turns = fork->n_turns};
    return Target{.session = fork->id, .forked = true};
  }

  // Ends a claim. With `stored`, the response is recorded (it keeps the claim's reference)
  // and the session's latest turn count is the response's; without, the reference is dropped
  // and the session deleted when nothing refers to it any more.
  struct Stored {
    std::string id;
    std::string tenant;
    std::string session;
    int64_t turns = 0;
    Json body;
  };
  void Release(engine::Engine& engine, const std::string& tenant, const std::string& session,
               std::optional<Stored> stored) {
    bool remove = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      SessionEntry& e = sessions_.at(session);
      e.busy = false;
      if (stored) {
        e.turns = stored->turns;
        if (journal_ != nullptr) WriteRecord(journal_, PutRecord(*stored));
        responses_[stored->id] = std::move(*stored);
      } else {
        remove = --e.refs == 0;
        if (remove) sessions_.erase(session);
      }
    }
    cv_.notify_all();
    if (remove) engine.DeleteSession(tenant, session).IgnoreError();  // may have expired
  }

  // Makes the stored responses durable in `path` (JSON lines: {"op": "put", id, tenant,
  // session, turns, body} and {"op": "del", id}): replays it — keeping the responses whose
  // session the engine still has — rewrites it compacted, and appends to it from then on.
  // Without a state directory the responses live in memory only.
  void OpenJournal(engine::Engine& engine, const std::string& dir) {
    std::lock_guard<std::mutex> lock(mu_);
    std::filesystem::create_directories(dir);
    const std::string path = dir + "/responses.jsonl";
    {
      std::ifstream in(path);
      for (std::string line; std::getline(in, line);) {
        const Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded() || !j.is_object()) continue;  // a torn last line
        const std::string id = j.value("id", "");
        if (j.value("op", "") == "del") {
          responses_.erase(id);
        } else if (j.value("op", "") == "put" && j.contains("body")) {
          responses_[id] = {.id = id,
                            .tenant = j.value("tenant", ""),
                            .session = j.value("session", ""),
                            .turns = j.value("turns", int64_t{0}),
                            .body = j["body"]};
        }
      }
    }
    for (auto it = responses_.begin(); it != responses_.end();) {
      const Stored& s = it->second;
      auto info = engine.GetSession(s.tenant, s.session);
      if (!info.ok()) {  // deleted or expired meanwhile
        it = responses_.erase(it);
        continue;
      }
      SessionEntry& e = sessions_[s.session];
      ++e.refs;
      e.turns = info->n_turns;  // a response at this count is the session's latest
      ++it;
    }
    const std::string tmp = path + ".tmp";
    if (FILE* out = std::fopen(tmp.c_str(), "w")) {
      for (const auto& [id, s] : responses_) WriteRecord(out, PutRecord(s));
      std::fclose(out);
      std::rename(tmp.c_str(), path.c_str());
    }
    journal_ = std::fopen(path.c_str(), "a");
  }
  ~ResponseStore() {
    if (journal_ != nullptr) std::fclose(journal_);
  }

  // The stored response object; nullopt when unknown or another tenant's.
  std::optional<Json> Get(const std::string& tenant, const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = responses_.find(id);
    if (it == responses_.end() || it->second.tenant != tenant) return std::nullopt;
    return it->second.body;
  }

  // Forgets the response; its session is deleted when no other response (or request) refers
  // to it. False when unknown or another tenant's.
  bool Delete(engine::Engine& engine, const std::string& tenant, const std::string& id) {
    std::string session;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = responses_.find(id);
      if (it == responses_.end() || it->second.tenant != tenant) return false;
      session = it->second.session;
      responses_.erase(it);
      if (journal_ != nullptr) WriteRecord(journal_, {{"op", "del"}, {"id", id}});
      SessionEntry& e = sessions_.at(session);
      if (--e.refs > 0) return true;
      sessions_.erase(session);
    }
    engine.DeleteSession(tenant, session).IgnoreError();
    return true;
  }

 private:
  static Json PutRecord(const Stored& s) {
    return {{"op", "put"},          {"id", s.id},       {"tenant", s.tenant},
            {"session", s.session}, {"turns", s.turns}, {"body", s.body}};
  }
  // One line, flushed (a process crash keeps it; the sessions' own durability is the
  // engine's).
  static void WriteRecord(FILE* f, const Json& j) {
    const std::string line = j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
    std::fwrite(line.data(), 1, line.size(), f);
    std::fflush(f);
  }

  struct SessionEntry {
    int64_t refs = 0;   // stored responses naming it + requests holding or waiting for it
    bool busy = false;  // a request forks or continues it
    int64_t turns = 0;  // the turn count after its latest stored response
  };

  // A response older than the session's latest compaction cannot be continued: the state
  // after it is gone (a fork at its turn count would mix compacted and uncompacted history).
  static absl::Status CheckNotCompactedAway(engine::Engine& engine, const std::string& tenant,
                                            const std::string& session, int64_t turns,
                                            const std::string& response) {
    auto info = engine.GetSession(tenant, session);
    if (!info.ok()) return info.status();
    if (turns >= info->rewind_floor) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("response ", response,
                     " cannot be continued: its conversation was compacted (truncation) after "
                     "it and the state it ended with is gone; continue the latest response"));
  }

  static absl::Status CheckSessionLimit(engine::Engine& engine, const std::string& tenant,
                                        int max_sessions) {
    if (max_sessions <= 0) return absl::OkStatus();
    if (static_cast<int64_t>(engine.ListSessions(tenant).size()) < max_sessions) {
      return absl::OkStatus();
    }
    return absl::ResourceExhaustedError(
        absl::StrCat("tenant \"", tenant, "\" has ", max_sessions, " sessions (its limit)"));
  }

  std::mutex mu_;
  std::condition_variable cv_;                    // a session stopped being busy
  std::map<std::string, Stored> responses_;       // guarded by mu_
  std::map<std::string, SessionEntry> sessions_;  // guarded by mu_
  FILE* journal_ = nullptr;                       // guarded by mu_
};

// ---------------------------------------------------------------------------------------
// The response object

// OpenAI's usage, with mnemo's compacted_tokens: the history tokens a compaction before the
// response dropped (truncation).
Json UsageJson(const engine::Usage& u) {
  return {{"input_tokens", u.prompt_tokens},
          {"input_tokens_details", {{"cached_tokens", u.cached_tokens}}},
          {"output_tokens", u.completion_tokens},
          {"output_tokens_details", {{"reasoning_tokens", 0}}},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"compacted_tokens", u.compacted_tokens}};
}

Json OutputPart(const std::string& text) {
  return {{"type", "output_text"}, {"text", text}, {"annotations", Json::array()}};
}

Json MessageItem(const std::string& id, const char* status, Json content) {
  return {{"type", "message"},
          {"id", id},
          {"status", status},
          {"role", "assistant"},
          {"content", std::move(content)}};
}

// The response object before generation (status "in_progress", no output yet); `truncation`
// is the effective value ("auto" or "disabled").
Json PendingResponse(const ResponseRequest& r, const std::string& id, const std::string& model,
                     const std::string& truncation) {
  return {{"id", id},
          {"object", "response"},
          {"created_at", absl::ToUnixSeconds(absl::Now())},
          {"status", "in_progress"},
          {"error", nullptr},
          {"incomplete_details", nullptr},
          {"instructions", r.instructions ? Json(*r.instructions) : Json(nullptr)},
          {"max_output_tokens", r.max_output_tokens},
          {"model", model},
          {"output", Json::array()},
          {"output_text", ""},
          {"parallel_tool_calls", false},
          {"previous_response_id",
           r.previous_response_id.empty() ? Json(nullptr) : Json(r.previous_response_id)},
          {"store", r.store},
          {"temperature", r.temperature},
          {"text", {{"format", {{"type", "text"}}}}},
          {"tool_choice", "none"},
          {"tools", Json::array()},
          {"top_p", r.top_p},
          {"truncation", truncation},
          {"usage", nullptr},
          {"user", r.user},
          {"metadata", r.metadata}};
}

// One response being generated: the claim on its session, the engine stream, the response
// object. Finish runs exactly once (from the handler or the SSE callbacks, one thread).
struct Generation {
  std::shared_ptr<ResponseStore> store;
  ServerState* server = nullptr;
  std::string tenant;
  Target target;
  bool store_response = true;
  Json response;
  std::string message_id = NewId("msg_");
  engine::StreamPtr stream;
  bool finished = false;
  // Streaming.
  int phase = 0;  // 0: nothing sent, 1: the opening events sent, 2: ended
  int64_t sequence = 0;
  std::string streamed_text;

  // Completes the response object from the result, records metrics and the audit line, and
  // releases the session (recording the response when stored and successful).
  void Finish(const engine::TurnResult& r) {
    finished = true;
    server->Untrack(stream);
    std::optional<ResponseStore::Stored> stored;
    if (r.status.ok()) {
      const bool incomplete = r.finish == engine::FinishReason::kLength;
      response["status"] = incomplete ? "incomplete" : "completed";
      if (incomplete) response["incomplete_details"] = {{"reason", "max_output_tokens"}};
      response["output"] = Json::array({MessageItem(
          message_id, incomplete ? "incomplete" : "completed", Json::array({OutputPart(r.text)}))});
      response["output_text"] = r.text;
      response["usage"] = UsageJson(r.usage);
      server->metrics.ObserveTurn(r);
      server->Audit(tenant, "response",
                    {{"session", target.session},
                     {"response", response["id"]},
                     {"forked", target.forked},
                     {"store", store_response},
                     {"input_tokens", r.usage.prompt_tokens},
                     {"output_tokens", r.usage.completion_tokens}});
      if (store_response) {
        stored = ResponseStore::Stored{.id = response["id"].get<std::string>(),
                                       .tenant = tenant,
                                       .session = target.session,
                                       .turns = r.turn + 1,
                                       .body = response};
      }
    } else {
      response["status"] = "failed";
      const ApiError e = FromStatus(r.status);
      response["error"] = {{"code", e.type}, {"message", e.message}};
    }
    store->Release(server->engine, tenant, target.session, std::move(stored));
  }

  Json Event(std::string_view type) {
    return {{"type", std::string(type)}, {"sequence_number", sequence++}};
  }
  Json PartEvent(std::string_view type) {
    Json j = Event(type);
    j["item_id"] = message_id;
    j["output_index"] = 0;
    j["content_index"] = 0;
    return j;
  }
  void Emit(std::string& out, std::string_view type, Json j) {
    absl::StrAppend(&out, SseEvent(type, j));
  }

  // The next server-sent events (see docs/api/responses.md, "Streaming"); false after the
  // last one.
  bool NextEvents(std::string& out) {
    if (phase == 2) return false;
    if (phase == 0) {
      phase = 1;
      for (const char* type : {"response.created", "response.in_progress"}) {
        Json j = Event(type);
        j["response"] = response;
        Emit(out, type, std::move(j));
      }
      Json added = Event("response.output_item.added");
      added["output_index"] = 0;
      added["item"] = MessageItem(message_id, "in_progress", Json::array());
      Emit(out, "response.output_item.added", std::move(added));
      Json part = PartEvent("response.content_part.added");
      part["part"] = OutputPart("");
      Emit(out, "response.content_part.added", std::move(part));
      return true;
    }
    engine::StreamChunk chunk;
    if (stream->Next(&chunk)) {
      if (!chunk.text.empty()) {
        streamed_text += chunk.text;
        Json delta = PartEvent("response.output_text.delta");
        delta["delta"] = chunk.text;
        Emit(out, "response.output_text.delta", std::move(delta));
      }
      return true;
    }
    phase = 2;
    Finish(stream->Wait());
    if (response["status"] == "failed") {
      Json failed = Event("response.failed");
      failed["response"] = response;
      Emit(out, "response.failed", std::move(failed));
      return false;
    }
    const std::string& text = response["output_text"].get_ref<const std::string&>();
    Json text_done = PartEvent("response.output_text.done");
    text_done["text"] = text;
    Emit(out, "response.output_text.done", std::move(text_done));
    Json part_done = PartEvent("response.content_part.done");
    part_done["part"] = OutputPart(text);
    Emit(out, "response.content_part.done", std::move(part_done));
    Json item_done = Event("response.output_item.done");
    item_done["output_index"] = 0;
    item_done["item"] = response["output"][0];
    Emit(out, "response.output_item.done", std::move(item_done));
    // OpenAI ends an incomplete response with response.incomplete.
    const char* last =
        response["status"] == "incomplete" ? "response.incomplete" : "response.completed";
    Json end = Event(last);
    end["response"] = response;
    Emit(out, last, std::move(end));
    return false;
  }
};

// ---------------------------------------------------------------------------------------
// Handlers

void CreateResponse(Call& c, const std::shared_ptr<ResponseStore>& store) {
  std::optional<Json> body = c.Body();
  if (!body) return;
  FieldReader f(*body);
  std::optional<ResponseRequest> r = ReadRequest(f);
  if (!r) return c.Error(f.error());

  absl::StatusOr<Target> target =
      store->Acquire(c.engine(), c.tenant, *r, c.server.options.max_sessions_per_tenant);
  if (!target.ok()) {
    const bool unknown_previous =
        target.status().code() == absl::StatusCode::kNotFound && !r->previous_response_id.empty();
    return c.Error(FromStatus(target.status(), unknown_previous ? "previous_response_id" : ""));
  }
  // Instructions are not carried over from earlier responses (OpenAI's semantics); on a
  // new conversation they are the session's system prompt, on a continuation a system
  // message before this response's input.
  engine::TurnParams params = std::move(r->params);
  if (r->instructions && !r->previous_response_id.empty()) {
    params.messages.push_back({"system", *r->instructions});
  }
  for (engine::ChatMessage& m : r->input) params.messages.push_back(std::move(m));
  params.wait_if_busy = true;  // the claim makes this request the session's only user

  // The turn's compaction, and the truncation value the response reports.
  auto session = c.engine().GetSession(c.tenant, target->session);
  if (!session.ok()) {
    store->Release(c.engine(), c.tenant, target->session, std::nullopt);
    return c.Error(FromStatus(session.status()));
  }
  const bool session_compacts = session->compaction_policy != cache::CompactionPolicy::kNone;
  std::string truncation = session_compacts ? "auto" : "disabled";
  if (r->truncation == "auto") {
    truncation = "auto";
    if (!session_compacts) {
      params.compaction = c.engine().options().compaction;
      params.compaction->policy = cache::CompactionPolicy::kWindow;
    }
  } else if (r->truncation == "disabled") {
    truncation = "disabled";
    params.compaction = c.engine().options().compaction;
    params.compaction->policy = cache::CompactionPolicy::kNone;
  }

  auto gen = std::make_shared<Generation>();
  gen->store = store;
  gen->server = &c.server;
  gen->tenant = c.tenant;
  gen->target = *target;
  gen->store_response = r->store;
  gen->response = PendingResponse(
      *r, NewId("resp_"), c.server.model_name.empty() ? r->model : c.server.model_name, truncation);

  absl::StatusOr<engine::StreamPtr> stream =
      c.engine().Continue(c.tenant, target->session, std::move(params));
  if (!stream.ok()) {
    store->Release(c.engine(), c.tenant, target->session, std::nullopt);
    return c.Error(FromStatus(stream.status(), "input"));
  }
  gen->stream = *stream;
  c.server.Track(gen->stream);

  if (!r->stream) {
    gen->Finish(gen->stream->Wait());
    if (gen->response["status"] == "failed") {
      const absl::Status& st = gen->stream->Wait().status;
      return c.Error(FromStatus(st, absl::IsInvalidArgument(st) ? "input" : ""));
    }
    return c.SendJson(200, gen->response);
  }
  c.StreamSse([gen](std::string& out) { return gen->NextEvents(out); },
              [gen](bool) {
                if (gen->finished) return;
                gen->stream->Cancel();  // the client went away
                gen->Finish(gen->stream->Wait());
              });
}

}  // namespace

void RegisterResponsesRoutes(Router& r) {
  auto store = std::make_shared<ResponseStore>();
  const std::string& state_dir = r.server().engine.options().state_dir;
  if (!state_dir.empty()) {
    store->OpenJournal(r.server().engine, state_dir + "/" + cache::kServerDirName);
  }
  r.Post("/v1/responses", "/v1/responses", [store](Call& c) { CreateResponse(c, store); });
  r.Get(R"(/v1/responses/([^/]+))", "/v1/responses/{id}", [store](Call& c) {
    const std::string id = c.req.matches[1];
    std::optional<Json> body = store->Get(c.tenant, id);
    if (!body) return c.Error(NotFound(absl::StrCat("no response with id ", id)));
    c.SendJson(200, *body);
  });
  r.Delete(R"(/v1/responses/([^/]+))", "/v1/responses/{id}", [store](Call& c) {
    const std::string id = c.req.matches[1];
    if (!store->Delete(c.engine(), c.tenant, id)) {
      return c.Error(NotFound(absl::StrCat("no response with id ", id)));
    }
    c.server.Audit(c.tenant, "response.delete", {{"response", id}});
    c.SendJson(200, {{"id", id}, {"object", "response"}, {"deleted", true}});
  });
}

}  // namespace mnemo::server
