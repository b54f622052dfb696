// The native session API (engine/server/sessions_api.cc, docs/api/sessions.md) over a real
// server on loopback: replies checked against sessions driven directly through the Engine.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "cache/compaction.h"
#include "tests/server/server_test_util.h"

namespace mnemo::server::testing {
namespace {

constexpr int kMaxTokens = 6;

Json UserTurn(const std::string& text, int max_tokens = kMaxTokens) {
  return {{"messages", Json::array({{{"role", "user"}, {"content", text}}})},
          {"temperature", 0},
          {"max_tokens", max_tokens}};
}

// The same turn through the Engine directly (greedy, no penalties, as the server reads it).
engine::TurnResult DirectTurn(engine::Engine& e, const std::string& tenant, const std::string& id,
                              const std::string& text) {
  engine::TurnParams p;
  p.messages = {{"user", text}};
  p.sampling.temperature = 0.0f;
  p.sampling.penalty_last_n = 0;
  p.stop.max_tokens = kMaxTokens;
  auto s = e.Continue(tenant, id, p);
  EXPECT_TRUE(s.ok()) << s.status();
  if (!s.ok()) return {};
  return (*s)->Wait();
}

// Creates a session through the API; its object.
Json Create(TestServer& t, const Json& body = Json::object(), const std::string& key = "") {
  auto r = t.Post("/v1/sessions", body, key);
  EXPECT_TRUE(r) << "no response";
  if (!r) return {};
  EXPECT_EQ(r->status, 201) << r->body;
  return ParseJson(r->body);
}

// One turn through the API; the chat.completion object.
Json Turn(TestServer& t, const std::string& id, const std::string& text) {
  auto r = t.Post("/v1/sessions/" + id + "/messages", UserTurn(text));
  EXPECT_TRUE(r);
  if (!r) return {};
  EXPECT_EQ(r->status, 200) << r->body;
  return ParseJson(r->body);
}

std::string Reply(const Json& completion) {
  return completion["choices"][0]["message"]["content"].get<std::string>();
}

// The status, and the error body's param ("" : null). The body reaches the client only while
// server.cc's error handler leaves bodies that handlers set alone.
void ExpectError(const httplib::Result& r, int status, const std::string& param) {
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, status) << r->body;
  const Json j = ParseJson(r->body);
  ASSERT_TRUE(j.contains("error")) << r->body;
  if (param.empty()) {
    EXPECT_TRUE(j["error"]["param"].is_null()) << r->body;
  } else {
    EXPECT_EQ(j["error"]["param"], param) << r->body;
  }
}

std::string WriteModel() {
  const std::string path = mnemo::testing::MakeTempDir() + "/sessions.gguf";
  EXPECT_TRUE(engine::WriteTestModel(
                  {.arch = engine::Architecture::kLlama, .dtype = kernels::DType::kF16}, path)
                  .ok());
  return path;
}

TEST(SessionsApiTest, TurnsMatchTheEngineAndReuseTheSessionKv) {
  auto t = TestServer::Start();
  ASSERT_NE(t, nullptr);
  const Json s = Create(*t, {{"system_prompt", "You are terse."}});
  const std::string id = s["id"];
  EXPECT_TRUE(id.starts_with("sess_")) << id;
  EXPECT_EQ(s["object"], "session");
  EXPECT_EQ(s["turns"], 1);  // the system prompt is turn 0
  EXPECT_GT(s["tokens"].get<int64_t>(), 0);
  EXPECT_TRUE(s["expires_at"].is_null());

  auto direct = t->engine->CreateSession("direct", {.system_prompt = "You are terse."});
  ASSERT_TRUE(direct.ok()) << direct.status();
  const std::vector<std::string> questions = {"Hello there", "What is a cat?", "And a dog?"};
  std::vector<Json> replies;
  int64_t computed = 0, reused = 0;
  for (size_t i = 0; i < questions.size(); ++i) {
    const Json c = Turn(*t, id, questions[i]);
    const engine::TurnResult want = DirectTurn(*t->engine, "direct", direct->id, questions[i]);
    ASSERT_TRUE(want.status.ok()) << want.status;
    EXPECT_EQ(c["object"], "chat.completion");
    EXPECT_EQ(c["session_id"], id);
    EXPECT_EQ(c["turn"], static_cast<int64_t>(i) + 1);
    EXPECT_EQ(c["turn"], want.turn);
    EXPECT_EQ(Reply(c), want.text) << "turn " << i;
    EXPECT_EQ(c["usage"]["completion_tokens"], want.usage.completion_tokens);
    const Json& u = c["usage"];
    const int64_t cached = u["prompt_tokens_details"]["cached_tokens"];
    computed += u["prompt_tokens"].get<int64_t>() - cached;
    reused += cached;
    replies.push_back(c);
  }
  // The second turn reuses the whole history of the first: more than the first fed at all.
  EXPECT_GT(replies[1]["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>(),
            replies[0]["usage"]["prompt_tokens"].get<int64_t>());

  auto got = t->Get("/v1/sessions/" + id);
  ASSERT_TRUE(got);
  ASSERT_EQ(got->status, 200) << got->body;
  const Json obj = ParseJson(got->body);
  auto want = t->engine->GetSession("direct", direct->id);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(obj["turns"], 4);
  EXPECT_EQ(obj["tokens"], want->n_tokens);
  EXPECT_EQ(obj["messages"], want->n_messages);
  EXPECT_EQ(obj["tier"], "device");
  EXPECT_EQ(obj["busy"], false);
  EXPECT_EQ(obj["costs"]["tokens_computed"], computed);
  EXPECT_EQ(obj["costs"]["tokens_reused"], reused);
  EXPECT_GT(obj["bytes"]["device"].get<int64_t>(), 0);

  auto list = t->Get("/v1/sessions");
  ASSERT_TRUE(list);
  const Json l = ParseJson(list->body);
  EXPECT_EQ(l["object"], "list");
  ASSERT_EQ(l["data"].size(), 1u);  // the "direct" tenant's session is not listed
  EXPECT_EQ(l["data"][0]["id"], id);

  auto del = t->Delete("/v1/sessions/" + id);
  ASSERT_TRUE(del);
  EXPECT_EQ(ParseJson(del->body), Json({{"id", id}, {"object", "session"}, {"deleted", true}}));
  ExpectError(t->Get("/v1/sessions/" + id), 404, "");
  EXPECT_FALSE(t->engine->GetSession("default", id).ok());
}

TEST(SessionsApiTest, ForkAndRewindContinueLikeAFreshSession) {
  auto t = TestServer::Start();
  ASSERT_NE(t, nullptr);
  const std::string id = Create(*t)["id"];
  Turn(*t, id, "First question");
  Turn(*t, id, "Second question");

  auto fork = t->Post("/v1/sessions/" + id + "/fork", {{"turns", 1}});
  ASSERT_TRUE(fork);
  ASSERT_EQ(fork->status, 201) << fork->body;
  const Json f = ParseJson(fork->body);
  const std::string fid = f["id"];
  EXPECT_NE(fid, id);
  EXPECT_EQ(f["turns"], 1);

  // A fresh session with only the first turn, continued: the fork's reply.
  const std::string fresh = Create(*t)["id"];
  Turn(*t, fresh, "First question");
  EXPECT_EQ(f["tokens"], t->engine->GetSession("default", fresh)->n_tokens);
  const std::string want = Reply(Turn(*t, fresh, "Another question"));
  const Json on_fork = Turn(*t, fid, "Another question");
  EXPECT_EQ(Reply(on_fork), want);
  EXPECT_EQ(on_fork["turn"], 1);

  // A fork without a body takes every turn.
  auto all = t->Post("/v1/sessions/" + id + "/fork", Json::object());
  ASSERT_TRUE(all);
  ASSERT_EQ(all->status, 201) << all->body;
  EXPECT_EQ(ParseJson(all->body)["turns"], 2);

  // Rewinding the source to one turn makes it continue like the fork.
  auto rw = t->Post("/v1/sessions/" + id + "/rewind", {{"turns", 1}});
  ASSERT_TRUE(rw);
  ASSERT_EQ(rw->status, 200) << rw->body;
  const Json after = ParseJson(rw->body);
  EXPECT_EQ(after["turns"], 1);
  EXPECT_EQ(after["tokens"], f["tokens"]);
  EXPECT_EQ(Reply(Turn(*t, id, "Another question")), want);
  // The histories, token for token (a random model's replies alone may not tell them apart).
  auto fresh_tokens = t->engine->SessionTokens("default", fresh);
  ASSERT_TRUE(fresh_tokens.ok());
  EXPECT_EQ(*t->engine->SessionTokens("default", fid), *fresh_tokens);
  EXPECT_EQ(*t->engine->SessionTokens("default", id), *fresh_tokens);
}

TEST(SessionsApiTest, StreamedTurnConcatenatesToTheNonStreamedReply) {
  auto t = TestServer::Start();
  ASSERT_NE(t, nullptr);
  const std::string a = Create(*t)["id"];
  const std::string b = Create(*t)["id"];
  Turn(*t, a, "Hello");
  Turn(*t, b, "Hello");
  const std::string want = Reply(Turn(*t, a, "Tell me a story"));
  ASSERT_FALSE(want.empty());

  Json body = UserTurn("Tell me a story");
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  auto r = t->Post("/v1/sessions/" + b + "/messages", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const std::vector<SseEventData> events = ParseSse(r->body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back().data, "[DONE]");
  std::string text;
  bool usage = false;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const Json& e = events[i].data;
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    EXPECT_EQ(e["session_id"], b);
    EXPECT_EQ(e["turn"], 1);
    if (e.contains("usage")) usage = true;
    if (e["choices"].empty()) continue;
    const Json& d = e["choices"][0]["delta"];
    if (d.contains("content")) text += d["content"].get<std::string>();
  }
  EXPECT_EQ(text, want);
  EXPECT_TRUE(usage);
  // The streamed turn counts in the session's costs once it has ended.
  const Json obj = ParseJson(t->Get("/v1/sessions/" + b)->body);
  EXPECT_EQ(obj["turns"], 2);
  EXPECT_GT(obj["costs"]["tokens_reused"].get<int64_t>(), 0);
}

TEST(SessionsApiTest, MetadataAndRetention) {
  auto t = TestServer::Start();
  ASSERT_NE(t, nullptr);
  const std::string id = Create(*t, {{"metadata", "m0"}, {"ttl_seconds", 3600}})["id"];
  const std::string path = "/v1/sessions/" + id;
  EXPECT_EQ(ParseJson(t->Get(path + "/metadata")->body), Json({{"metadata", "m0"}}));
  auto put =
      t->client->Put((path + "/metadata").c_str(), R"({"metadata": "m1"})", "application/json");
  ASSERT_TRUE(put);
  EXPECT_EQ(put->status, 200) << put->body;
  EXPECT_EQ(ParseJson(put->body), Json({{"metadata", "m1"}}));
  EXPECT_EQ(ParseJson(t->Get(path + "/metadata")->body)["metadata"], "m1");
  ExpectError(
      t->client->Put((path + "/metadata").c_str(), R"({"metadata": 5})", "application/json"), 400,
      "metadata");

  const Json before = ParseJson(t->Get(path)->body);
  EXPECT_FALSE(before["expires_at"].is_null());  // ttl_seconds
  EXPECT_TRUE(before["pinned_until"].is_null());
  EXPECT_EQ(before["retention"]["priority"], 0);
  EXPECT_TRUE(before["retention"]["demote_after_idle_seconds"].is_null());

  auto patch = t->client->Patch(
      path.c_str(),
      R"({"retention": {"priority": 3, "pin_seconds": 60, "demote_after_idle_seconds": 120}})",
      "application/json");
  ASSERT_TRUE(patch);
  ASSERT_EQ(patch->status, 200) << patch->body;
  const Json p = ParseJson(patch->body);
  EXPECT_EQ(p["id"], id);
  EXPECT_EQ(p["retention"]["priority"], 3);
  EXPECT_EQ(p["retention"]["pin_seconds"], 60.0);
  EXPECT_EQ(p["retention"]["demote_after_idle_seconds"], 120.0);
  EXPECT_TRUE(p["retention"]["max_lifetime_seconds"].is_null());
  EXPECT_FALSE(p["pinned_until"].is_null());

  // Changing only the metadata keeps the retention (and does not extend the pin).
  auto patch2 = t->client->Patch(path.c_str(), R"({"metadata": "m2"})", "application/json");
  ASSERT_TRUE(patch2);
  ASSERT_EQ(patch2->status, 200) << patch2->body;
  const Json p2 = ParseJson(patch2->body);
  EXPECT_EQ(p2["retention"]["priority"], 3);
  EXPECT_EQ(p2["retention"]["demote_after_idle_seconds"], 120.0);
  EXPECT_LE(p2["retention"]["pin_seconds"].get<double>(), 60.0);
  EXPECT_LE(p2["pinned_until"].get<int64_t>(), p["pinned_until"].get<int64_t>());
  EXPECT_EQ(ParseJson(t->Get(path + "/metadata")->body)["metadata"], "m2");

  ExpectError(
      t->client->Patch(path.c_str(), R"({"retention": {"priority": "high"}})", "application/json"),
      400, "retention.priority");
  ExpectError(t->client->Patch(path.c_str(), R"({"retention": {"pin": 5}})", "application/json"),
              400, "retention.pin");
  ExpectError(t->client->Patch(path.c_str(), R"({"ttl": 5})", "application/json"), 400, "ttl");
}

TEST(SessionsApiTest, TiersFlushExportAndImport) {
  const std::string model = WriteModel();
  engine::EngineOptions eo;
  eo.state_dir = mnemo::testing::MakeTempDir();
  eo.host_budget_bytes = 16 << 20;
  auto t = TestServer::Start({}, eo, model);
  ASSERT_NE(t, nullptr);
  const std::string id = Create(*t, {{"durability", "none"}})["id"];
  const std::string twin = Create(*t, {{"durability", "none"}})["id"];
  Turn(*t, id, "Hello");
  Turn(*t, twin, "Hello");

  auto demoted = t->Post("/v1/sessions/" + id + "/demote", {{"tier", "disk"}});
  ASSERT_TRUE(demoted);
  ASSERT_EQ(demoted->status, 200) << demoted->body;
  const Json d = ParseJson(demoted->body);
  EXPECT_EQ(d["tier"], "disk");
  EXPECT_EQ(d["bytes"]["device"], 0);
  EXPECT_GT(d["bytes"]["disk"].get<int64_t>(), 0);
  EXPECT_EQ(d["durability"], "none");
  // /metrics counts the bytes moved, and says how large a block is.
  const std::string metrics = t->Get("/metrics")->body;
  auto metric = [&](const std::string& name) {
    const size_t at = metrics.find("\n" + name + " ");
    return at == std::string::npos ? -1.0 : std::stod(metrics.substr(at + name.size() + 2));
  };
  EXPECT_GT(metric("mnemo_bytes_to_disk_total"), 0.0);
  EXPECT_EQ(metric("mnemo_bytes_from_disk_total"), 0.0);
  EXPECT_EQ(metric("mnemo_device_block_bytes"), static_cast<double>(t->engine->block_bytes()));
  EXPECT_EQ(metric("mnemo_device_block_tokens"), 16.0);

  auto pre = t->Post("/v1/sessions/" + id + "/prefetch", Json::object());
  ASSERT_TRUE(pre);
  EXPECT_EQ(pre->status, 202) << pre->body;
  EXPECT_EQ(ParseJson(pre->body)["id"], id);

  // The restored session continues exactly like one that never moved.
  const std::string want = Reply(Turn(*t, twin, "Go on"));
  EXPECT_EQ(Reply(Turn(*t, id, "Go on")), want);
  EXPECT_EQ(ParseJson(t->Get("/v1/sessions/" + id)->body)["tier"], "device");

  auto flushed = t->Post("/v1/sessions/" + id + "/flush", Json::object());
  ASSERT_TRUE(flushed);
  ASSERT_EQ(flushed->status, 200) << flushed->body;
  EXPECT_EQ(ParseJson(flushed->body)["durable"], true);

  auto bundle = t->Get("/v1/sessions/" + id + "/export");
  ASSERT_TRUE(bundle);
  ASSERT_EQ(bundle->status, 200) << bundle->body.substr(0, 300);
  EXPECT_EQ(bundle->get_header_value("Content-Type"), "application/octet-stream");
  ASSERT_FALSE(bundle->body.empty());

  engine::EngineOptions eo2;
  eo2.state_dir = mnemo::testing::MakeTempDir();
  auto t2 = TestServer::Start({}, eo2, model);
  ASSERT_NE(t2, nullptr);
  auto imported = t2->client->Post("/v1/sessions/import", bundle->body, "application/octet-stream");
  ASSERT_TRUE(imported);
  ASSERT_EQ(imported->status, 201) << imported->body;
  const Json im = ParseJson(imported->body);
  EXPECT_EQ(im["id"], id);
  EXPECT_EQ(im["turns"], 2);
  EXPECT_EQ(Reply(Turn(*t2, id, "And then?")), Reply(Turn(*t, id, "And then?")));

  // Importing it again: the id is there already.
  auto again = t2->client->Post("/v1/sessions/import", bundle->body, "application/octet-stream");
  ExpectError(again, 409, "");
  ExpectError(t2->client->Post("/v1/sessions/import", "not a bundle", "application/octet-stream"),
              400, "");
  // Without a state directory neither works.
  auto t3 = TestServer::Start({}, {}, model);
  ASSERT_NE(t3, nullptr);
  ExpectError(t3->client->Post("/v1/sessions/import", bundle->body, "application/octet-stream"),
              409, "");
}

TEST(SessionsApiTest, TenantsSeeOnlyTheirOwnSessions) {
  const std::string keys = mnemo::testing::MakeTempDir() + "/keys";
  std::ofstream(keys) << "KEY1 alice\nKEY2 bob\n";
  auto t = TestServer::Start({.api_keys_file = keys});
  ASSERT_NE(t, nullptr);
  const std::string id = Create(*t, {{"metadata", "secret"}}, "KEY1")["id"];
  ASSERT_FALSE(id.empty());
  const std::string unknown = "sess_00000000000000000000000000000000";

  auto mine = t->Get("/v1/sessions/" + id, "KEY1");
  ASSERT_TRUE(mine);
  EXPECT_EQ(mine->status, 200);
  for (const std::string tail : {"", "/metadata"}) {
    auto theirs = t->Get("/v1/sessions/" + id + tail, "KEY2");
    auto none = t->Get("/v1/sessions/" + unknown + tail, "KEY2");
    ExpectError(theirs, 404, "");
    ExpectError(none, 404, "");
    EXPECT_EQ(ParseJson(theirs->body)["error"]["type"], ParseJson(none->body)["error"]["type"]);
  }
  ExpectError(t->Post("/v1/sessions/" + id + "/messages", UserTurn("hi"), "KEY2"), 404, "");
  ExpectError(t->Post("/v1/sessions/" + id + "/fork", Json::object(), "KEY2"), 404, "");
  ExpectError(t->Delete("/v1/sessions/" + id, "KEY2"), 404, "");
  EXPECT_TRUE(ParseJson(t->Get("/v1/sessions", "KEY2")->body)["data"].empty());
  EXPECT_EQ(ParseJson(t->Get("/v1/sessions", "KEY1")->body)["data"].size(), 1u);
  EXPECT_EQ(ParseJson(t->Get("/v1/sessions/" + id + "/metadata", "KEY1")->body)["metadata"],
            "secret");

  auto anonymous = t->Get("/v1/sessions/" + id);
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->status, 401);
  EXPECT_EQ(t->Post("/v1/sessions", Json::object())->status, 401);
}

TEST(SessionsApiTest, ErrorsNameTheFieldAndTheState) {
  auto t = TestServer::Start({.max_sessions_per_tenant = 2});
  ASSERT_NE(t, nullptr);
  const std::string id = Create(*t)["id"];
  const std::string path = "/v1/sessions/" + id;

  ExpectError(t->Get("/v1/sessions/sess_00000000000000000000000000000000"), 404, "");
  ExpectError(t->Get("/v1/sessions/garbage"), 404, "");
  ExpectError(t->Post(path + "/fork", {{"turns", -1}}), 400, "turns");
  ExpectError(t->Post(path + "/fork", {{"turns", 5}}), 400, "turns");
  ExpectError(t->Post(path + "/rewind", Json::object()), 400, "turns");
  ExpectError(t->Post(path + "/messages", {{"temperature", 0}}), 400, "messages");
  Json two = UserTurn("hi");
  two["n"] = 2;
  ExpectError(t->Post(path + "/messages", two), 400, "n");
  ExpectError(t->Post("/v1/sessions", {{"durability", "often"}}), 400, "durability");
  ExpectError(t->Post("/v1/sessions", {{"ttl_seconds", 0}}), 400, "ttl_seconds");
  ExpectError(t->Post("/v1/sessions", {{"system_promt", "x"}}), 400, "system_promt");
  ExpectError(t->Post(path + "/demote", {{"tier", "device"}}), 400, "tier");
  ExpectError(t->Post(path + "/flush", Json::object()), 409, "");  // no state directory
  ExpectError(t->Get(path + "/export"), 409, "");
  EXPECT_EQ(ParseJson(t->Get(path)->body)["turns"], 0);  // nothing above changed it

  // Busy: a turn queued on a paused engine holds the session.
  t->engine->Pause();
  Json slow = UserTurn("Tell me everything", 32);
  slow["stream"] = true;
  int first_status = 0;
  std::string first_body;
  std::thread streamer([&] {
    httplib::Client c("127.0.0.1", t->server->port());
    c.set_read_timeout(120, 0);
    auto r = c.Post((path + "/messages").c_str(), slow.dump(), "application/json");
    if (r) {
      first_status = r->status;
      first_body = r->body;
    }
  });
  for (int i = 0; i < 1000000 && !t->engine->GetSession("default", id)->busy; ++i) {
    std::this_thread::yield();
  }
  auto busy = t->Post(path + "/messages", UserTurn("Me too"));
  ExpectError(busy, 409, "");
  EXPECT_EQ(ParseJson(busy->body)["error"]["code"], "session_busy");
  EXPECT_EQ(ParseJson(t->Get(path)->body)["busy"], true);
  t->engine->Resume();
  streamer.join();
  EXPECT_EQ(first_status, 200);
  const std::vector<SseEventData> events = ParseSse(first_body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().data, "[DONE]");
  EXPECT_EQ(ParseJson(t->Get(path)->body)["turns"], 1);  // the busy turn left no trace

  // Two sessions per tenant.
  Create(*t);
  auto third = t->Post("/v1/sessions", Json::object());
  ExpectError(third, 429, "");
  EXPECT_FALSE(third->get_header_value("Retry-After").empty());
  ASSERT_EQ(t->Delete(path)->status, 200);
  EXPECT_EQ(t->Post("/v1/sessions", Json::object())->status, 201);
}

// ---------------------------------------------------------------------------------------
// Context compaction (docs/api/sessions.md, "Compaction")

// A server over a llama test model whose context is 256 tokens.
std::unique_ptr<TestServer> SmallContextServer(engine::EngineOptions eo = {}) {
  const std::string path = mnemo::testing::MakeTempDir() + "/ctx256.gguf";
  EXPECT_TRUE(engine::WriteTestModel({.arch = engine::Architecture::kLlama,
                                      .dtype = kernels::DType::kF16,
                                      .context_length = 256},
                                     path)
                  .ok());
  return TestServer::Start({}, eo, path);
}

// About one token per character on the test model's byte-level tokenizer.
std::string Words(int n_chars, char first = 'a') {
  std::string s;
  for (int i = 0; static_cast<int>(s.size()) < n_chars; ++i) {
    s += static_cast<char>('a' + (first - 'a' + i) % 26);
    if (i % 5 == 4) s += ' ';
  }
  return s;
}

TEST(SessionsApiTest, CompactDropsHistoryAndTheSessionGoesOn) {
  auto t = SmallContextServer();
  ASSERT_NE(t, nullptr);
  const Json created = Create(*t);
  Json compaction = created["compaction"];
  EXPECT_EQ(compaction["options"]["policy"], "none");
  compaction.erase("options");
  EXPECT_EQ(compaction, Json({{"policy", "none"},
                              {"compactions", 0},
                              {"compacted_tokens", 0},
                              {"rewind_floor", 0},
                              {"log", Json::array()}}));
  const std::string id = created["id"];
  const std::string path = "/v1/sessions/" + id;
  const Json first = Turn(*t, id, Words(120));
  EXPECT_EQ(first["usage"]["compacted_tokens"], 0);
  auto tokens = t->engine->SessionTokens("default", id);
  ASSERT_TRUE(tokens.ok());
  const int64_t before = static_cast<int64_t>(tokens->size());
  ASSERT_GT(before, 100);

  // The session's policy is none: compacting needs one in the body.
  ExpectError(t->Post(path + "/compact", Json::object()), 400, "policy");
  auto r = t->Post(path + "/compact", {{"policy", "window"}, {"keep_tokens", 40}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const Json obj = ParseJson(r->body);
  EXPECT_EQ(obj["id"], id);
  EXPECT_EQ(obj["tokens"], 40);
  EXPECT_EQ(obj["compaction"]["policy"], "none");  // the session's own policy is unchanged
  EXPECT_EQ(obj["compaction"]["compactions"], 1);
  EXPECT_EQ(obj["compaction"]["compacted_tokens"], before - 40);
  EXPECT_EQ(obj["compaction"]["rewind_floor"], 1);
  // The log's entry: the window's one dropped range, [sinks, before - 36).
  ASSERT_EQ(obj["compaction"]["log"].size(), 1u) << obj["compaction"].dump();
  const Json& entry = obj["compaction"]["log"][0];
  EXPECT_EQ(entry["policy"], "window");
  EXPECT_EQ(entry["dropped"], Json::array({Json::array({4, before - 36})}));
  EXPECT_EQ(entry["summarized"], Json::array());
  EXPECT_EQ(entry["position_shift"], -(before - 40));
  EXPECT_EQ(entry["turns"], 1);
  EXPECT_FALSE(entry.contains("summary"));
  EXPECT_GE(entry["created_at"].get<int64_t>(), created["created_at"].get<int64_t>());
  EXPECT_LE(entry["created_at"].get<int64_t>(), obj["last_used_at"].get<int64_t>());
  // The window: the 4 sink tokens and the 36 most recent ones.
  auto after = t->engine->SessionTokens("default", id);
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), 40u);
  EXPECT_TRUE(std::equal(after->begin(), after->begin() + 4, tokens->begin()));
  EXPECT_TRUE(std::equal(after->begin() + 4, after->end(), tokens->end() - 36));
  EXPECT_EQ(ParseJson(t->Get(path)->body)["compaction"], obj["compaction"]);

  // A turn after it runs on the compacted history.
  const Json second = Turn(*t, id, "And then?");
  EXPECT_EQ(second["turn"], 1);
  EXPECT_EQ(second["usage"]["compacted_tokens"], 0);
  // The kept history's KV was reused (but for the first turn's tokens that were never
  // computed: its last sampled token and the end-of-turn marker).
  const int64_t cached = second["usage"]["prompt_tokens_details"]["cached_tokens"];
  EXPECT_GE(cached, 35);
  EXPECT_LE(cached, 40);
  const Json now = ParseJson(t->Get(path)->body);
  EXPECT_EQ(now["turns"], 2);
  EXPECT_GT(now["tokens"].get<int64_t>(), 40);

  // The turn before the compaction is gone: rewinding (or forking) below the floor is 409;
  // at the floor it works.
  ExpectError(t->Post(path + "/rewind", {{"turns", 0}}), 409, "");
  ExpectError(t->Post(path + "/fork", {{"turns", 0}}), 409, "");
  EXPECT_THAT(ParseJson(t->Post(path + "/rewind", {{"turns", 0}})->body)["error"]["message"]
                  .get<std::string>(),
              ::testing::HasSubstr("compacted"));
  auto rewound = t->Post(path + "/rewind", {{"turns", 1}});
  ASSERT_EQ(rewound->status, 200) << rewound->body;
  EXPECT_EQ(ParseJson(rewound->body)["tokens"], 40);
}

TEST(SessionsApiTest, CompactErrorsNameTheField) {
  auto t = SmallContextServer();
  ASSERT_NE(t, nullptr);
  const std::string id = Create(*t, {{"compaction", {{"policy", "window"}}}})["id"];
  const std::string path = "/v1/sessions/" + id;
  Turn(*t, id, Words(60));
  const Json before = ParseJson(t->Get(path)->body);
  const int64_t n = before["tokens"];

  ExpectError(t->Post(path + "/compact", {{"policy", "lru"}}), 400, "policy");
  ExpectError(t->Post(path + "/compact", {{"policy", "none"}}), 400, "policy");
  ExpectError(t->Post(path + "/compact", {{"keep_tokens", n}}), 400, "keep_tokens");
  ExpectError(t->Post(path + "/compact", {{"keep_tokens", n + 100}}), 400, "keep_tokens");
  ExpectError(t->Post(path + "/compact", {{"keep_tokens", 0}}), 400, "keep_tokens");
  ExpectError(t->Post(path + "/compact", {{"keep_tokens", "ten"}}), 400, "keep_tokens");
  ExpectError(t->Post(path + "/compact", {{"keep", 10}}), 400, "keep");
  ExpectError(t->Post("/v1/sessions/sess_00000000000000000000000000000000/compact", Json::object()),
              404, "");
  const Json unchanged = ParseJson(t->Get(path)->body);
  EXPECT_EQ(unchanged["tokens"], n);
  EXPECT_EQ(unchanged["compaction"]["compactions"], 0);

  // The session's own policy (window) and target (half) without a body.
  auto r = t->client->Post((path + "/compact").c_str(), "", "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(ParseJson(r->body)["tokens"], n / 2);
  EXPECT_EQ(ParseJson(r->body)["compaction"]["policy"], "window");

  // Busy: a turn queued on a paused engine holds the session.
  t->engine->Pause();
  Json slow = UserTurn("More", 4);
  slow["wait"] = true;
  int status = 0;
  std::thread turn([&] {
    httplib::Client c("127.0.0.1", t->server->port());
    c.set_read_timeout(120, 0);
    auto res = c.Post((path + "/messages").c_str(), slow.dump(), "application/json");
    if (res) status = res->status;
  });
  for (int i = 0; i < 1000000 && !t->engine->GetSession("default", id)->busy; ++i) {
    std::this_thread::yield();
  }
  ExpectError(t->Post(path + "/compact", {{"keep_tokens", 10}}), 409, "");
  t->engine->Resume();
  turn.join();
  EXPECT_EQ(status, 200);
}

TEST(SessionsApiTest, CreationTakesCompactionOptions) {
  auto t = SmallContextServer();
  ASSERT_NE(t, nullptr);
  // A token trigger of 100: the turn that passes it compacts the history first, though the
  // context (256) has room; the server's default (policy none) would not.
  const Json s = Create(*t, {{"compaction",
                              {{"policy", "window"},
                               {"sink_tokens", 2},
                               {"trigger_fraction", 0.9},
                               {"trigger_tokens", 100},
                               {"max_session_bytes", 0},
                               {"target_fraction", 0.25},
                               {"keep_history", true}}}});
  EXPECT_EQ(s["compaction"]["policy"], "window");
  // The session object says what it compacts with: what was sent, the rest the defaults.
  const Json& opts = s["compaction"]["options"];
  EXPECT_EQ(opts["sink_tokens"], 2);
  EXPECT_EQ(opts["trigger_tokens"], 100);
  EXPECT_EQ(opts["target_fraction"], 0.25);
  EXPECT_EQ(opts["keep_history"], true);
  EXPECT_EQ(opts["observe_tokens"], 32);
  EXPECT_EQ(opts["summary_max_tokens"], 256);
  const std::string id = s["id"];
  const Json first = Turn(*t, id, Words(60));
  EXPECT_EQ(first["usage"]["compacted_tokens"], 0);
  const Json second = Turn(*t, id, Words(60, 'k'));
  EXPECT_GT(second["usage"]["compacted_tokens"].get<int64_t>(), 0) << second["usage"].dump();
  EXPECT_LE(second["usage"]["prompt_tokens"].get<int64_t>(), 100);
  const Json obj = ParseJson(t->Get("/v1/sessions/" + id)->body);
  EXPECT_EQ(obj["compaction"]["compactions"], 1);
  EXPECT_EQ(obj["compaction"]["compacted_tokens"], second["usage"]["compacted_tokens"]);
  // The state before the compaction was kept: the session can still go back to turn 0.
  EXPECT_EQ(obj["compaction"]["rewind_floor"], 0);
  EXPECT_EQ(obj["compaction"]["log"][0]["kept"], true);

  const Json plain = Create(*t);
  Turn(*t, plain["id"], Words(60));
  EXPECT_EQ(Turn(*t, plain["id"], Words(60, 'k'))["usage"]["compacted_tokens"], 0);

  struct Case {
    Json compaction;
    std::string param;
  };
  const std::vector<Case> cases = {
      {"window", "compaction"},
      {{{"policy", "lru"}}, "compaction.policy"},
      {{{"policy", 1}}, "compaction.policy"},
      {{{"sink_tokens", -1}}, "compaction.sink_tokens"},
      {{{"sink_tokens", 1.5}}, "compaction.sink_tokens"},
      {{{"trigger_fraction", 0}}, "compaction.trigger_fraction"},
      {{{"trigger_fraction", 1.5}}, "compaction.trigger_fraction"},
      {{{"trigger_tokens", -1}}, "compaction.trigger_tokens"},
      {{{"max_session_bytes", -5}}, "compaction.max_session_bytes"},
      {{{"target_fraction", 1}}, "compaction.target_fraction"},
      {{{"target_fraction", 0}}, "compaction.target_fraction"},
      {{{"target_fraction", "half"}}, "compaction.target_fraction"},
      {{{"sinks", 4}}, "compaction.sinks"},
      {{{"keep_history", "yes"}}, "compaction.keep_history"},
      {{{"observe_tokens", 0}}, "compaction.observe_tokens"},
      {{{"observe_tokens", -3}}, "compaction.observe_tokens"},
      {{{"observe_tokens", "all"}}, "compaction.observe_tokens"},
      {{{"summary_prompt", ""}}, "compaction.summary_prompt"},
      {{{"summary_prompt", 7}}, "compaction.summary_prompt"},
      {{{"summary_max_tokens", 0}}, "compaction.summary_max_tokens"},
      {{{"summary_max_tokens", 2.5}}, "compaction.summary_max_tokens"},
      {{{"summary_tokens", 8}}, "compaction.summary_tokens"},
  };
  for (const Case& c : cases) {
    ExpectError(t->Post("/v1/sessions", {{"compaction", c.compaction}}), 400, c.param);
  }
  EXPECT_EQ(t->engine->ListSessions("default").size(), 2u);  // no failure created one
  // The policy's error lists every policy.
  auto lru = t->Post("/v1/sessions", {{"compaction", {{"policy", "lru"}}}});
  ASSERT_TRUE(lru);
  EXPECT_THAT(ParseJson(lru->body)["error"]["message"].get<std::string>(),
              ::testing::HasSubstr("\"none\", \"window\", \"score\" or \"summarize\""));
}

// The entry of the latest compaction in a session object, with every field checked for its
// type; the ranges as TokenRanges.
struct LogEntry {
  Json json;
  std::vector<cache::TokenRange> dropped, summarized;
};
LogEntry LatestLogEntry(const Json& session) {
  LogEntry out;
  const Json& log = session["compaction"]["log"];
  EXPECT_TRUE(log.is_array() && !log.empty()) << session["compaction"].dump();
  if (!log.is_array() || log.empty()) return out;
  out.json = log.back();
  for (const char* key : {"created_at", "position_shift", "turns"}) {
    EXPECT_TRUE(out.json[key].is_number_integer()) << key << ": " << out.json.dump();
  }
  for (auto [key, into] :
       {std::pair{"dropped", &out.dropped}, std::pair{"summarized", &out.summarized}}) {
    for (const Json& r : out.json[key]) {
      EXPECT_TRUE(r.is_array() && r.size() == 2) << out.json.dump();
      if (r.is_array() && r.size() == 2) into->push_back({r[0], r[1]});
    }
  }
  return out;
}

// The score policy: the sinks, the observation window and the tokens between it attends to
// most survive; the rest is dropped in several ranges, and the history keeps exactly the
// tokens outside them.
TEST(SessionsApiTest, CompactWithTheScorePolicy) {
  auto t = SmallContextServer();
  ASSERT_NE(t, nullptr);
  const Json created = Create(*t, {{"compaction", {{"policy", "score"}, {"observe_tokens", 8}}}});
  EXPECT_EQ(created["compaction"]["policy"], "score");
  const std::string id = created["id"];
  const std::string path = "/v1/sessions/" + id;
  Turn(*t, id, Words(120));
  auto tokens = t->engine->SessionTokens("default", id);
  ASSERT_TRUE(tokens.ok());
  const int64_t before = static_cast<int64_t>(tokens->size());
  ASSERT_GT(before, 100);

  // 34 tokens: more than the sinks (4) and the tokens from the observation window's block
  // boundary on (at most 8 + 15 and a few whose KV lags), less than they would be with the
  // default window of 32 (at least 4 + 32).
  auto r = t->Post(path + "/compact", {{"policy", "score"}, {"keep_tokens", 34}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const Json obj = ParseJson(r->body);
  EXPECT_EQ(obj["tokens"], 34);
  EXPECT_EQ(obj["compaction"]["compactions"], 1);
  EXPECT_EQ(obj["compaction"]["compacted_tokens"], before - 34);
  const LogEntry e = LatestLogEntry(obj);
  EXPECT_EQ(e.json["policy"], "score");
  EXPECT_TRUE(e.summarized.empty());
  EXPECT_FALSE(e.json.contains("summary"));
  EXPECT_EQ(e.json["turns"], 1);
  EXPECT_EQ(e.json["position_shift"], -(before - 34));
  // Several ranges, sorted and disjoint, after the 4 sinks and before the observation window
  // (the last 8 tokens at least).
  EXPECT_GE(e.dropped.size(), 2u) << e.json.dump();
  int64_t total = 0, end = 4;
  for (const cache::TokenRange& d : e.dropped) {
    EXPECT_GE(d.begin, end) << e.json.dump();
    EXPECT_LT(d.begin, d.end) << e.json.dump();
    end = d.end;
    total += d.size();
  }
  EXPECT_LE(end, before - 8);
  EXPECT_EQ(total, before - 34);
  std::vector<int32_t> kept;
  for (int64_t p = 0; p < before; ++p) {
    if (cache::MapPosition(e.dropped, p) >= 0) kept.push_back((*tokens)[static_cast<size_t>(p)]);
  }
  auto after = t->engine->SessionTokens("default", id);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, kept);
  EXPECT_EQ(ParseJson(t->Get(path)->body)["compaction"], obj["compaction"]);

  // The session goes on from the 34 tokens.
  const Json next = Turn(*t, id, "And then?");
  EXPECT_EQ(next["turn"], 1);
  EXPECT_GE(next["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>(), 28);

  // Keeping less than the sinks and the observation window leaves the policy no choice.
  ExpectError(t->Post(path + "/compact", {{"policy", "score"}, {"keep_tokens", 6}}), 400,
              "keep_tokens");
}

// The summarize policy with the session's own summary options: the model's summary (the same
// as the Engine writes for a session with those options) replaces the oldest turns after the
// system prompt, and the log keeps its text.
TEST(SessionsApiTest, CompactWithTheSummarizePolicy) {
  auto t = SmallContextServer();
  ASSERT_NE(t, nullptr);
  const std::string prompt = "Summarize the talk so far.";
  const Json options = {{"policy", "summarize"},
                        {"summary_prompt", prompt},
                        {"summary_max_tokens", 24},
                        {"observe_tokens", 16}};
  const Json created = Create(*t, {{"system_prompt", "Be brief."}, {"compaction", options}});
  EXPECT_EQ(created["compaction"]["policy"], "summarize");
  EXPECT_EQ(created["compaction"]["log"], Json::array());
  const std::string id = created["id"];
  const std::string path = "/v1/sessions/" + id;
  const int64_t head = created["tokens"];  // the system prompt's turn is kept
  ASSERT_GT(head, 0);

  // The same conversation driven through the Engine, with the options set directly.
  cache::CompactionOptions direct_options;
  direct_options.policy = cache::CompactionPolicy::kSummarize;
  direct_options.summary_prompt = prompt;
  direct_options.summary_max_tokens = 24;
  direct_options.observe_tokens = 16;
  auto direct = t->engine->CreateSession(
      "direct", {.system_prompt = "Be brief.", .compaction = direct_options});
  ASSERT_TRUE(direct.ok()) << direct.status();
  // And one whose summaries may take 256 tokens (the default).
  const Json roomy =
      Create(*t, {{"system_prompt", "Be brief."}, {"compaction", {{"policy", "summarize"}}}});
  for (const std::string& text : {Words(40), Words(40, 'n'), Words(30, 'f')}) {
    Turn(*t, id, text);
    Turn(*t, roomy["id"], text);
    ASSERT_TRUE(DirectTurn(*t->engine, "direct", direct->id, text).status.ok());
  }
  const int64_t before = ParseJson(t->Get(path)->body)["tokens"];
  ASSERT_GT(before, head + 100);

  // Keep the head, up to 24 + 32 tokens of framed summary, and about 30 recent tokens.
  const int64_t keep = head + 24 + 32 + 30;
  // 256 tokens of summary do not fit in that keep.
  ExpectError(t->Post("/v1/sessions/" + roomy["id"].get<std::string>() + "/compact",
                      {{"keep_tokens", keep}}),
              400, "keep_tokens");
  auto r = t->Post(path + "/compact", {{"keep_tokens", keep}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const Json obj = ParseJson(r->body);
  EXPECT_EQ(obj["compaction"]["compactions"], 1);
  const LogEntry e = LatestLogEntry(obj);
  EXPECT_EQ(e.json["policy"], "summarize");
  EXPECT_TRUE(e.dropped.empty());
  EXPECT_EQ(e.json["turns"], 4);
  ASSERT_EQ(e.summarized.size(), 1u) << e.json.dump();
  const cache::TokenRange s = e.summarized[0];
  EXPECT_EQ(s.begin, head);
  EXPECT_GE(s.end, before - 30);  // at or after the bound, up to a turn boundary
  EXPECT_LE(s.end, before);
  EXPECT_EQ(obj["compaction"]["compacted_tokens"], s.size());
  // The history: head + the framed summary + the tokens after the summarized range.
  const int64_t shift = e.json["position_shift"];
  EXPECT_EQ(obj["tokens"], before + shift);
  EXPECT_GT(shift + s.size(), 0);  // the framed summary is there, however short the summary
  EXPECT_LE(shift + s.size(), 24 + 32);

  // The summary is the Engine's for the same options and history; present exactly when it
  // has text.
  auto want = t->engine->Compact("direct", direct->id, std::nullopt, keep);
  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_EQ(want->compaction_log.size(), 1u);
  const cache::CompactionRecord& w = want->compaction_log[0];
  EXPECT_EQ(e.json.contains("summary"), !w.summary.empty()) << e.json.dump();
  // (The server writes invalid UTF-8, as a random model's bytes may be, as U+FFFD.)
  const std::string served =
      ParseJson(Json(w.summary).dump(-1, ' ', false, Json::error_handler_t::replace));
  EXPECT_EQ(e.json.value("summary", ""), served);
  EXPECT_FALSE(w.summary.empty()) << "the test model wrote no summary";
  EXPECT_EQ(e.summarized, w.summarized);
  EXPECT_EQ(e.json["position_shift"], w.position_shift);
  EXPECT_EQ(ParseJson(t->Get(path)->body)["compaction"], obj["compaction"]);

  // The session goes on after the summary; rewinding below the compaction is refused.
  const Json next = Turn(*t, id, "And then?");
  EXPECT_EQ(next["turn"], 4);
  ExpectError(t->Post(path + "/rewind", {{"turns", 2}}), 409, "");
}

}  // namespace
}  // namespace mnemo::server::testing
