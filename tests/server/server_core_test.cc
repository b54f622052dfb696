// The server core (engine/server/server.cc, common.cc): operations endpoints, API keys,
// malformed bodies, limits (413, 429), draining (503), errors in OpenAI's shape.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <thread>

#include "engine/server/internal/common.h"
#include "tests/server/server_test_util.h"

namespace mnemo::server::testing {
namespace {

using ::testing::HasSubstr;

std::string KeysFile() {
  const std::string path = mnemo::testing::MakeTempDir() + "/keys";
  std::ofstream(path) << "# key tenant\nkey-alice alice\nkey-bob bob  # a comment\n";
  return path;
}

Json Chat(bool stream) {
  return {{"model", "test-model"},
          {"messages", {{{"role", "user"}, {"content", "Hello"}}}},
          {"max_tokens", 4},
          {"stream", stream}};
}

void ExpectError(const httplib::Result& r, int status, const std::string& type,
                 const std::string& message_part) {
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, status) << r->body;
  const Json j = ParseJson(r->body);
  ASSERT_TRUE(j.contains("error")) << r->body;
  EXPECT_EQ(j["error"]["type"], type) << r->body;
  EXPECT_THAT(j["error"]["message"].get<std::string>(), HasSubstr(message_part));
  EXPECT_TRUE(j["error"].contains("param") && j["error"].contains("code"));
}

// Spins until /metrics shows `n` requests in flight (no sleeping: it polls the server).
void WaitInFlight(TestServer& t, int n) {
  const std::string want = "mnemo_requests_in_flight " + std::to_string(n) + "\n";
  for (;;) {
    auto m = t.Get("/metrics");
    ASSERT_TRUE(m);
    if (m->body.find(want) != std::string::npos) return;
    std::this_thread::yield();
  }
}

TEST(ServerCore, OperationsEndpointsNeedNoKeyAndApiCallsDo) {
  auto t = TestServer::Start({.api_keys_file = KeysFile()});
  ASSERT_NE(t, nullptr);
  auto health = t->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(ParseJson(health->body)["status"], "ok");
  EXPECT_EQ(t->Get("/ready")->status, 200);
  ExpectError(t->Get("/v1/models"), 401, "authentication_error", "missing API key");
  ExpectError(t->Get("/v1/models", "key-eve"), 401, "authentication_error", "invalid API key");
  auto ok = t->Get("/v1/models", "key-alice");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  auto metrics = t->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_THAT(metrics->body,
              HasSubstr("mnemo_http_requests_total{route=\"/health\",status=\"200\"} 1"));
  EXPECT_THAT(metrics->body, HasSubstr("mnemo_sessions 0"));
  EXPECT_THAT(metrics->body, HasSubstr("# TYPE mnemo_ttft_seconds histogram"));
}

TEST(ServerCore, KeysFileAndHostChecksAreClearErrors) {
  auto model_server = TestServer::Start();
  ASSERT_NE(model_server, nullptr);
  engine::Engine& e = *model_server->engine;
  const std::string bad = mnemo::testing::MakeTempDir() + "/bad";
  std::ofstream(bad) << "onlyonefield\n";
  auto s = Server::Create(e, {.api_keys_file = bad});
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr(bad + ":1"));
  s = Server::Create(e, {.host = "0.0.0.0"});
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("--api-keys"));
  EXPECT_TRUE(Server::Create(e, {.host = "0.0.0.0", .insecure = true}).ok());
}

TEST(ServerCore, MalformedBodiesAreClearErrors) {
  auto t = TestServer::Start({.max_body_bytes = 4096});
  ASSERT_NE(t, nullptr);
  auto post = [&](const std::string& body) {
    return t->client->Post("/v1/chat/completions", body, "application/json");
  };
  ExpectError(post(""), 400, "invalid_request_error", "empty");
  ExpectError(post("{\"model\": "), 400, "invalid_request_error", "not valid JSON");
  ExpectError(post("{\"model\": \"\xff\xfe\"}"), 400, "invalid_request_error", "not valid UTF-8");
  ExpectError(post("[1, 2]"), 400, "invalid_request_error", "must be a JSON object");
  ExpectError(post(std::string(8192, ' ') + "{}"), 413, "invalid_request_error", "too large");
  ExpectError(t->Get("/v1/nothing-here"), 404, "not_found_error", "no such endpoint");
}

TEST(ServerCore, TenantLimitIs429WithRetryAfter) {
  auto t = TestServer::Start({.max_concurrent_per_tenant = 1});
  ASSERT_NE(t, nullptr);
  t->engine->Pause();  // the first request stays in flight
  std::thread first([&] {
    httplib::Client c("127.0.0.1", t->server->port());
    auto r = c.Post("/v1/chat/completions", Chat(true).dump(), "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(ParseSse(r->body).back().data, Json("[DONE]"));
  });
  WaitInFlight(*t, 1);
  auto second = t->Post("/v1/chat/completions", Chat(false));
  ExpectError(second, 429, "rate_limit_error", "requests in flight");
  EXPECT_EQ(second->get_header_value("Retry-After"), "1");
  t->engine->Resume();
  first.join();
  auto third = t->Post("/v1/chat/completions", Chat(false));
  ASSERT_TRUE(third);
  EXPECT_EQ(third->status, 200) << third->body;
}

TEST(ServerCore, DrainRefusesNewWorkAndFinishesStreams) {
  auto t = TestServer::Start();
  ASSERT_NE(t, nullptr);
  t->engine->Pause();
  std::thread first([&] {
    httplib::Client c("127.0.0.1", t->server->port());
    auto r = c.Post("/v1/chat/completions", Chat(true).dump(), "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(ParseSse(r->body).back().data, Json("[DONE]"));
  });
  WaitInFlight(*t, 1);
  int64_t cancelled = -1;
  std::thread drain([&] { cancelled = t->server->Drain(absl::Seconds(120)); });
  for (;;) {  // /ready turns 503 as soon as the drain starts
    auto r = t->Get("/ready");
    ASSERT_TRUE(r);
    if (r->status == 503) break;
    std::this_thread::yield();
  }
  ExpectError(t->Post("/v1/chat/completions", Chat(false)), 503, "service_unavailable", "draining");
  t->engine->Resume();
  first.join();
  drain.join();
  EXPECT_EQ(cancelled, 0);
}

TEST(ServerCore, StatusCodesMapToHttp) {
  EXPECT_EQ(FromStatus(absl::InvalidArgumentError("x")).status, 400);
  EXPECT_EQ(FromStatus(absl::NotFoundError("x")).status, 404);
  EXPECT_EQ(FromStatus(absl::FailedPreconditionError("x")).status, 409);
  EXPECT_EQ(FromStatus(absl::ResourceExhaustedError("x")).status, 429);
  EXPECT_EQ(FromStatus(absl::UnavailableError("x")).status, 503);
  EXPECT_EQ(FromStatus(absl::DataLossError("x")).status, 500);
  const Json body = ErrorBody(BadRequest("temperature: bad", "temperature"));
  EXPECT_EQ(body["error"]["param"], "temperature");
  EXPECT_TRUE(body["error"]["code"].is_null());
}

TEST(ServerCore, FieldReaderNamesTheField) {
  const Json j = {{"temperature", "hot"}, {"n", 0}, {"stop", {1, 2}}};
  FieldReader f(j);
  ReadGenerationFields(f);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.error().param, "temperature");
  const Json k = {{"top_p", 0}, {"max_tokens", 5}};
  FieldReader g(k);
  ReadGenerationFields(g);
  EXPECT_EQ(g.error().param, "top_p");
  const Json m = {{"messages", {{{"role", "robot"}, {"content", "x"}}}}};
  FieldReader h(m);
  EXPECT_TRUE(ReadMessages(h, "messages").empty());
  EXPECT_EQ(h.error().param, "messages[0].role");
  EXPECT_TRUE(ValidUtf8("h\xc3\xa9llo"));
  EXPECT_FALSE(ValidUtf8("\xc3"));
  EXPECT_FALSE(ValidUtf8("\xed\xa0\x80"));  // a surrogate
  EXPECT_FALSE(ValidUtf8("\xc0\xaf"));      // overlong
}

}  // namespace
}  // namespace mnemo::server::testing
