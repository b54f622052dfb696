// A real server on loopback for the server tests: an Engine on a random test model (or
// SmolLM2), a Server on a free port, and a cpp-httplib client. JSON helpers.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/model/model.h"
#include "engine/model/test_model.h"
#include "engine/server/server.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mnemo::server::testing {

using Json = nlohmann::json;

struct TestServer {
  std::unique_ptr<engine::Model> model;
  std::unique_ptr<engine::Engine> engine;
  std::unique_ptr<Server> server;
  std::unique_ptr<httplib::Client> client;

  // A server over a random llama test model (ChatML template) unless `model_path` is given.
  static std::unique_ptr<TestServer> Start(ServerOptions so = {}, engine::EngineOptions eo = {},
                                           const std::string& model_path = "") {
    auto t = std::make_unique<TestServer>();
    std::string path = model_path;
    if (path.empty()) {
      path = mnemo::testing::MakeTempDir() + "/server.gguf";
      EXPECT_TRUE(engine::WriteTestModel(
                      {.arch = engine::Architecture::kLlama, .dtype = kernels::DType::kF16}, path)
                      .ok());
    }
    auto m = engine::Model::Open(path);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return nullptr;
    t->model = std::move(*m);
    eo.threads = mnemo::testing::TestKernelThreads();
    if (eo.kv_budget_bytes == (uint64_t{1} << 30)) eo.kv_budget_bytes = 64 << 20;
    auto e = engine::Engine::Create(*t->model, eo);
    EXPECT_TRUE(e.ok()) << e.status();
    if (!e.ok()) return nullptr;
    t->engine = std::move(*e);
    so.port = 0;
    so.log_requests = false;
    if (so.model_name.empty()) so.model_name = "test-model";
    auto s = Server::Create(*t->engine, so);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return nullptr;
    t->server = std::move(*s);
    EXPECT_TRUE(t->server->Start().ok());
    t->client = std::make_unique<httplib::Client>("127.0.0.1", t->server->port());
    t->client->set_read_timeout(120, 0);
    return t;
  }

  ~TestServer() {
    if (server) server->Stop();
    server.reset();
    engine.reset();
  }

  // POST a JSON body; the response (status and body).
  httplib::Result Post(const std::string& path, const Json& body, const std::string& api_key = "") {
    httplib::Headers h;
    if (!api_key.empty()) h.emplace("Authorization", "Bearer " + api_key);
    return client->Post(path.c_str(), h, body.dump(), "application/json");
  }
  httplib::Result Get(const std::string& path, const std::string& api_key = "") {
    httplib::Headers h;
    if (!api_key.empty()) h.emplace("Authorization", "Bearer " + api_key);
    return client->Get(path.c_str(), h);
  }
  httplib::Result Delete(const std::string& path, const std::string& api_key = "") {
    httplib::Headers h;
    if (!api_key.empty()) h.emplace("Authorization", "Bearer " + api_key);
    return client->Delete(path.c_str(), h);
  }
};

inline Json ParseJson(const std::string& body) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << body.substr(0, 500);
  return j;
}

// The JSON payloads of a server-sent-events body ("data: {...}" lines; "[DONE]" as the
// string "[DONE]"), with each event's type for "event:" lines (else "").
struct SseEventData {
  std::string event;
  Json data;
};
inline std::vector<SseEventData> ParseSse(const std::string& body) {
  std::vector<SseEventData> out;
  std::istringstream in(body);
  std::string line, event;
  while (std::getline(in, line)) {
    if (line.starts_with("event: ")) {
      event = line.substr(7);
    } else if (line.starts_with("data: ")) {
      const std::string d = line.substr(6);
      out.push_back({event, d == "[DONE]" ? Json("[DONE]") : ParseJson(d)});
      event.clear();
    }
  }
  return out;
}

}  // namespace mnemo::server::testing
