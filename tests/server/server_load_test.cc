// The server under load and across a drain:
//  - 64 concurrent streaming clients on loopback for a bounded time (MNEMO_LOAD_SECONDS,
//    default 30) over many sessions and stateless requests: zero failed requests, and
//    afterwards no leaked blocks or file descriptors and bounded memory;
//  - `mnemo serve` (the real binary) killed with SIGTERM while streams run: it drains (the
//    streams end with [DONE]), exits 0, and its sessions are there after a restart.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/server/server_test_util.h"

namespace mnemo::server::testing {
namespace {

int CountFds() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d) != nullptr) ++n;
    closedir(d);
  }
  return n;
}

int64_t RssBytes() {
  std::ifstream in("/proc/self/statm");
  int64_t pages = 0, rss = 0;
  in >> pages >> rss;
  return rss * sysconf(_SC_PAGESIZE);
}

// The first failures, reported at the end.
std::mutex failures_mu;
std::vector<std::string> failures;
void Failed(const std::string& what) {
  std::lock_guard<std::mutex> lock(failures_mu);
  if (failures.size() < 8) failures.push_back(what.substr(0, 300));
}

// One streamed request: true if it answered 200 and ended with [DONE] after content.
bool Streamed(httplib::Client& cli, const std::string& path, const Json& body) {
  auto res = cli.Post(path.c_str(), body.dump(), "application/json");
  if (!res) {
    Failed(path + ": " + httplib::to_string(res.error()));
    return false;
  }
  const std::vector<SseEventData> events = ParseSse(res->body);
  const bool ok = res->status == 200 && !events.empty() && events.back().data == Json("[DONE]") &&
                  res->body.find("\"error\"") == std::string::npos;
  if (!ok) Failed(absl::StrCat(path, ": ", res->status, " ", res->body));
  return ok;
}

TEST(ServerLoad, SixtyFourStreamingClientsFailNothingAndLeakNothing) {
  const char* env = std::getenv("MNEMO_LOAD_SECONDS");
  const int seconds = env != nullptr ? std::atoi(env) : 30;
  const int fds_before = CountFds();
  engine::EngineOptions eo;
  eo.max_seqs = 32;
  eo.max_batch_tokens = 256;
  eo.kv_budget_bytes = 32 << 20;
  auto t = TestServer::Start({.max_concurrent_per_tenant = 128}, eo);
  ASSERT_NE(t, nullptr);
  const int port = t->server->port();
  std::atomic<int64_t> ok{0}, failed{0};
  std::atomic<int64_t> rss_after_warmup{0};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  std::vector<std::thread> clients;
  for (int c = 0; c < 64; ++c) {
    clients.emplace_back([&, c] {
      httplib::Client cli("127.0.0.1", port);
      cli.set_read_timeout(300, 0);
      cli.set_write_timeout(300, 0);
      // Keep-alive, as real clients do (a new connection per request would also exhaust the
      // loopback's ephemeral ports at this rate).
      cli.set_keep_alive(true);
      int round = 0;
      while (std::chrono::steady_clock::now() < deadline) {
        ++round;
        // A session of three streamed turns, then deleted; every other round a stateless
        // streamed chat completion.
        auto created = cli.Post("/v1/sessions", Json({{"system_prompt", "Be brief."}}).dump(),
                                "application/json");
        if (!created || created->status != 201) {
          Failed(created ? absl::StrCat("create: ", created->status, " ", created->body)
                         : absl::StrCat("create (round ", round,
                                        "): ", httplib::to_string(created.error())));
          ++failed;
          continue;
        }
        const std::string id = ParseJson(created->body).value("id", "");
        for (int turn = 0; turn < 3; ++turn) {
          const Json body = {
              {"messages",
               {{{"role", "user"},
                 {"content", absl::StrCat("client ", c, " round ", round, " turn ", turn)}}}},
              {"max_tokens", 6},
              {"stream", true}};
          (Streamed(cli, "/v1/sessions/" + id + "/messages", body) ? ok : failed)++;
        }
        auto del = cli.Delete(("/v1/sessions/" + id).c_str());
        (del && del->status == 200 ? ok : failed)++;
        if (round % 2 == 0) {
          const Json body = {{"model", "test-model"},
                             {"messages", {{{"role", "user"}, {"content", "Say something."}}}},
                             {"max_tokens", 6},
                             {"stream", true}};
          (Streamed(cli, "/v1/chat/completions", body) ? ok : failed)++;
        }
        if (c == 0 && round == 2) rss_after_warmup = RssBytes();
      }
    });
  }
  for (std::thread& th : clients) th.join();
  std::printf("load: %lld requests ok, %lld failed in %d s\n", static_cast<long long>(ok.load()),
              static_cast<long long>(failed.load()), seconds);
  EXPECT_EQ(failed.load(), 0);
  for (const std::string& f : failures) std::printf("failure: %s\n", f.c_str());
  EXPECT_GT(ok.load(), 64);
  EXPECT_TRUE(t->engine->CheckInvariants().ok()) << t->engine->CheckInvariants();
  const engine::EngineStats st = t->engine->Stats();
  EXPECT_EQ(st.sessions, 0);
  EXPECT_EQ(st.blocks_in_use, 0);  // cached prefix blocks may stay; none is held
  if (rss_after_warmup.load() > 0) {
    // Bounded memory: no growth with the number of requests (a leak of a few KB per request
    // would show as hundreds of MB over thousands of requests).
    EXPECT_LT(RssBytes() - rss_after_warmup.load(), int64_t{256} << 20);
  }
  t.reset();
  EXPECT_EQ(CountFds(), fds_before);
}

// `mnemo serve` drains on SIGTERM: streams in flight finish with [DONE], the process exits
// 0, and a restart on the same state directory serves the sessions again.
TEST(ServerDrain, SigtermFinishesStreamsAndKeepsSessions) {
  const std::string dir = mnemo::testing::MakeTempDir();
  const std::string model = dir + "/m.gguf";
  ASSERT_TRUE(engine::WriteTestModel(
                  {.arch = engine::Architecture::kLlama, .dtype = kernels::DType::kF16}, model)
                  .ok());
  const std::string state = dir + "/state";
  auto start = [&](int* port) -> pid_t {
    int err[2];
    EXPECT_EQ(pipe(err), 0);
    const std::vector<std::string> args = {mnemo::testing::MnemoBinary(),
                                           "serve",
                                           model,
                                           "--port",
                                           "0",
                                           "--threads",
                                           "1",
                                           "--state-dir",
                                           state,
                                           "--model-name",
                                           "test-model"};
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
      dup2(err[1], 2);
      close(err[0]);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(err[1]);
    FILE* in = fdopen(err[0], "r");
    char line[4096];
    *port = -1;
    while (std::fgets(line, sizeof(line), in) != nullptr) {
      const std::string l = line;
      const size_t at = l.find("http://127.0.0.1:");
      if (at != std::string::npos) {
        *port = std::atoi(l.c_str() + at + 17);
        break;
      }
    }
    // Keep reading stderr in the background so the server never blocks on a full pipe.
    std::thread([in] {
      char buf[4096];
      while (std::fgets(buf, sizeof(buf), in) != nullptr) {
      }
      std::fclose(in);
    }).detach();
    return pid;
  };
  int port = -1;
  const pid_t pid = start(&port);
  ASSERT_GT(port, 0);
  httplib::Client cli("127.0.0.1", port);
  cli.set_read_timeout(300, 0);
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    auto r =
        cli.Post("/v1/sessions", Json({{"system_prompt", "Hello."}}).dump(), "application/json");
    ASSERT_TRUE(r && r->status == 201);
    ids.push_back(ParseJson(r->body)["id"]);
  }
  std::atomic<int> streams_ok{0};
  std::vector<std::thread> streams;
  for (const std::string& id : ids) {
    streams.emplace_back([&, id] {
      httplib::Client c("127.0.0.1", port);
      c.set_read_timeout(300, 0);
      const Json body = {{"messages", {{{"role", "user"}, {"content", "Tell me a long story."}}}},
                         {"max_tokens", 64},
                         {"stream", true}};
      if (Streamed(c, "/v1/sessions/" + id + "/messages", body)) ++streams_ok;
    });
  }
  // SIGTERM once every stream is admitted (each has produced its first event).
  for (;;) {
    auto m = cli.Get("/metrics");
    ASSERT_TRUE(m);
    if (m->body.find("mnemo_requests_in_flight 4") != std::string::npos) break;
    std::this_thread::yield();
  }
  kill(pid, SIGTERM);
  for (std::thread& th : streams) th.join();
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(streams_ok.load(), 4);

  int port2 = -1;
  const pid_t pid2 = start(&port2);
  ASSERT_GT(port2, 0);
  httplib::Client cli2("127.0.0.1", port2);
  for (const std::string& id : ids) {
    auto r = cli2.Get(("/v1/sessions/" + id).c_str());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
    EXPECT_GE(ParseJson(r->body).value("turns", 0), 2) << id;  // system prompt + the story
  }
  kill(pid2, SIGTERM);
  waitpid(pid2, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace mnemo::server::testing
