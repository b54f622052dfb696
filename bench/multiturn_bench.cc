// Multi-turn conversation replay (issue 4): what stateful sessions save over stateless
// recomputation, measured on the real engine in one run (DESIGN.md 8: ratios, not bare
// times).
//
// Part 1, time to first token by turn. `--conversations` seeded conversations of `--turns`
// turns, each user turn exactly `--ttft-tokens` tokens of English text, each reply 32..64
// tokens (greedy, the count exact). Every conversation is replayed in three modes, one
// conversation at a time, each mode on its own fresh Engine (the three are interleaved
// conversation by conversation, so that load from elsewhere hits every mode alike):
//
//   recompute     Engine::Generate with the whole conversation (system, every earlier user
//                 message and the reply actually produced, the new message); prefix_cache off
//   prefix_cache  the same requests with the prefix index on
//   stateful      CreateSession(system) once, then Continue with the new user message only
//
// TTFT is taken by the client (the call to the first streamed token, rendering and
// tokenization included); the table holds the median over conversations of each turn (and
// the ratio of each turn's fastest one). Beside the measured ratio turn N / turn 1 stands the
// ratio of the two prefills' flops (matrices and attention over the history): what the
// ratio would be if time followed the arithmetic.
//
// Part 2, throughput of stateful sessions: `--concurrency` conversations of
// `--throughput-turns` turns (user turns of 100..300 tokens, replies 32..64) served one at a
// time on one fresh Engine, then all at once (one client thread per conversation, each
// sending its next turn as soon as the last reply ends) on another; aggregate generated
// tokens/s and (computed prompt + generated) tokens/s, and their ratio. The ceiling, measured
// in the same run: the engine's rate on full max_batch_tokens steps. Three turns per session
// by default (not ten) to keep the default run near 5 minutes on 2 quiet vCPUs.
//
// User text: words of --text (default /usr/share/common-licenses/GPL-3, present on every
// Debian system; a public-domain paragraph is used when it cannot be read), from a seeded
// sentence start, cut to the drawn token count.
//
// Usage: mnemo_multiturn_bench [--model=PATH] [--conversations=N] [--turns=N]
//   [--concurrency=N] [--throughput-turns=N] [--ttft-tokens=N] [--seed=N] [--threads=N]
//   [--text=PATH] [--json] [--quick]
// --json prints one JSON object on stdout (progress goes to stderr); --quick shrinks every
// size for a CI smoke run (explicit flags still override it).
#include <oneapi/tbb/info.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <latch>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_main.h"
#include "bench/multiturn_workload.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "nlohmann/json.hpp"

namespace mnemo::bench {
namespace {

using engine::ChatMessage;
using engine::Engine;
using engine::EngineOptions;
using engine::EngineStats;
using engine::StreamPtr;
using engine::TurnParams;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr char kSystemPrompt[] =
    "You are a helpful assistant. The user shares passages of a text one after another; "
    "comment briefly on each.";

struct Flags {
  std::string model;
  std::string text = "/usr/share/common-licenses/GPL-3";
  int conversations = 3;                             // part 1
  int turns = 10;                                    // part 1
  int ttft_tokens = 200;                             // part 1: user tokens of every turn
  int concurrency = 32;                              // part 2: sessions
  int throughput_turns = 3;                          // part 2: turns of each session
  int min_user_tokens = 100, max_user_tokens = 300;  // part 2
  int min_reply_tokens = 32, max_reply_tokens = 64;  // both parts
  uint64_t seed = 1;
  int threads = 0;  // 0: every hardware thread
  bool json = false;
  bool quick = false;
};

void Progress(const std::string& line) {
  std::fprintf(stderr, "multiturn_bench: %s\n", line.c_str());
  std::fflush(stderr);
}

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double LoadAverage() {
  double load = 0.0;
  return getloadavg(&load, 1) == 1 ? load : -1.0;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// ---- running conversations -------------------------------------------------------------

enum class Mode { kRecompute, kPrefixCache, kStateful };
constexpr Mode kModes[] = {Mode::kRecompute, Mode::kPrefixCache, Mode::kStateful};

const char* ModeName(Mode m) {
  switch (m) {
    case Mode::kRecompute:
      return "recompute";
    case Mode::kPrefixCache:
      return "prefix_cache";
    case Mode::kStateful:
      return "stateful";
  }
  return "?";
}

struct TurnSample {
  double ttft = 0.0;         // client: the call to the first token
  double engine_ttft = 0.0;  // TurnResult::ttft_seconds (submission to the first token)
  double seconds = 0.0;      // client: the call to the end of the reply
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;
  int64_t completion_tokens = 0;
};

// Greedy, exactly `max_tokens` tokens: end-of-generation tokens neither stop the reply
// (ignore_eos) nor appear in it (banned), so that the transcript the stateless modes resend
// and the session's history hold the same conversation.
TurnParams ReplyParams(const Engine& engine, std::string user, int max_tokens) {
  TurnParams p;
  p.messages.push_back({.role = "user", .content = std::move(user)});
  p.sampling.temperature = 0.0f;
  for (engine::TokenId id : engine.tokenizer().data().eog) {
    p.sampling.logit_bias.emplace_back(id, -std::numeric_limits<float>::infinity());
  }
  p.stop.max_tokens = max_tokens;
  p.stop.ignore_eos = true;
  return p;
}

absl::StatusOr<TurnSample> RunTurn(const std::function<absl::StatusOr<StreamPtr>()>& submit,
                                   std::string* reply) {
  const Clock::time_point t0 = Clock::now();
  absl::StatusOr<StreamPtr> stream = submit();
  if (!stream.ok()) return stream.status();
  TurnSample s;
  engine::StreamChunk first;
  if ((*stream)->Next(&first)) s.ttft = Since(t0);
  const engine::TurnResult& r = (*stream)->Wait();
  s.seconds = Since(t0);
  if (!r.status.ok()) return r.status;
  s.engine_ttft = r.ttft_seconds;
  s.prompt_tokens = r.usage.prompt_tokens;
  s.cached_tokens = r.usage.cached_tokens;
  s.completion_tokens = r.usage.completion_tokens;
  *reply = r.text;
  return s;
}

// Replays `c` on `engine` in `mode`; one sample per turn. (CreateSession returns once the
// system prompt is in KV, so turn 1's time to first token is its own.)
absl::StatusOr<std::vector<TurnSample>> RunConversation(Engine& engine, Mode mode,
                                                        const Conversation& c) {
  std::vector<TurnSample> samples;
  const int turns = static_cast<int>(c.user.size());
  if (mode == Mode::kStateful) {
    engine::SessionParams sp;
    sp.system_prompt = std::string(kSystemPrompt);
    absl::StatusOr<engine::SessionInfo> session = engine.CreateSession("", sp);
    if (!session.ok()) return session.status();
    for (int t = 0; t < turns; ++t) {
      std::string reply;
      absl::StatusOr<TurnSample> s = RunTurn(
          [&] {
            return engine.Continue("", session->id,
                                   ReplyParams(engine, c.user[t], c.reply_tokens[t]));
          },
          &reply);
      if (!s.ok()) return s.status();
      samples.push_back(*s);
    }
    if (absl::Status st = engine.DeleteSession("", session->id); !st.ok()) return st;
    return samples;
  }
  std::vector<ChatMessage> history = {{.role = "system", .content = std::string(kSystemPrompt)}};
  for (int t = 0; t < turns; ++t) {
    history.push_back({.role = "user", .content = c.user[t]});
    std::string reply;
    absl::StatusOr<TurnSample> s = RunTurn(
        [&] {
          TurnParams p = ReplyParams(engine, c.user[t], c.reply_tokens[t]);
          p.messages = history;
          return engine.Generate("", std::move(p));
        },
        &reply);
    if (!s.ok()) return s.status();
    samples.push_back(*s);
    history.push_back({.role = "assistant", .content = std::move(reply)});
  }
  return samples;
}

// ---- engines -------------------------------------------------------------------------

struct EngineCounters {
  int64_t computed = 0, cached = 0, generated = 0, prefix_hits = 0, preemptions = 0, steps = 0;
  double busy_seconds = 0.0;  // in forward steps and sampling
};

EngineCounters Delta(const EngineStats& before, const EngineStats& after) {
  return {.computed = after.tokens_computed - before.tokens_computed,
          .cached = after.tokens_cached - before.tokens_cached,
          .generated = after.tokens_generated - before.tokens_generated,
          .prefix_hits = after.prefix_hits - before.prefix_hits,
          .preemptions = after.preemptions - before.preemptions,
          .steps = after.steps - before.steps,
          .busy_seconds = after.busy_seconds - before.busy_seconds};
}

json CountersJson(const EngineCounters& c) {
  return {{"tokens_computed", c.computed},   {"tokens_cached", c.cached},
          {"tokens_generated", c.generated}, {"prefix_hits", c.prefix_hits},
          {"preemptions", c.preemptions},    {"steps", c.steps},
          {"busy_seconds", c.busy_seconds}};
}

// A fresh engine with room for `live_tokens` tokens of KV at once (plus a partial block per
// session and a margin), warmed up by one short request of raw tokens (thread pool start,
// first touch of the pool) that shares no prefix with the workload.
absl::StatusOr<std::unique_ptr<Engine>> StartEngine(const engine::Model& model, const Flags& f,
                                                    bool prefix_cache, int64_t live_tokens,
                                                    int sessions) {
  const engine::ModelConfig& cfg = model.config();
  const uint64_t kv_bytes_per_token = uint64_t{2} * 2 * static_cast<uint64_t>(cfg.n_layers) *
                                      static_cast<uint64_t>(cfg.n_kv_heads) *
                                      static_cast<uint64_t>(cfg.head_dim);  // K and V in f16
  EngineOptions opts;
  opts.threads = f.threads;
  opts.prefix_cache = prefix_cache;
  opts.max_seqs = std::max(opts.max_seqs, sessions);
  opts.max_batch_tokens = std::max(opts.max_batch_tokens, opts.max_seqs);
  const uint64_t tokens =
      static_cast<uint64_t>(live_tokens + int64_t{2} * sessions * opts.block_tokens);
  opts.kv_budget_bytes = std::max<uint64_t>(tokens * kv_bytes_per_token * 5 / 4, 64u << 20);
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(model, opts);
  if (!engine.ok()) return engine.status();
  TurnParams warm;
  for (int i = 0; i < 64; ++i) warm.tokens.push_back((i * 7919 + 13) % cfg.vocab_size);
  warm.sampling.temperature = 0.0f;
  warm.stop.max_tokens = 4;
  warm.stop.ignore_eos = true;
  absl::StatusOr<StreamPtr> s = (*engine)->Generate("warm-up", std::move(warm));
  if (!s.ok()) return s.status();
  if (absl::Status st = (*s)->Wait().status; !st.ok()) return st;
  return engine;
}

// Tokens a conversation can hold at most (system prompt and template overhead generously).
int64_t ConversationTokens(int turns, int max_user, int max_reply) {
  return 128 + int64_t{turns} * (max_user + 32 + max_reply);
}

// ---- part 1: time to first token by turn -------------------------------------------------

// Flops of a prefill that computes `n` new tokens after `c` tokens of history: every matrix
// once per token (the embedding lookup is free, the output head runs for the last token
// only), and attention, whose q.k and p.v cost 4 * n_heads * head_dim per layer and per
// attended position (token c + i attends c + i + 1 positions).
double PrefillFlops(const engine::Model& model, double c, double n) {
  const engine::ModelConfig& cfg = model.config();
  const double table = double{1} * cfg.vocab_size * cfg.d_model;
  const double matmul_params =
      static_cast<double>(model.n_params()) - table * (cfg.tied_embeddings ? 1 : 2);
  const double attention = 4.0 * cfg.n_heads * cfg.head_dim * cfg.n_layers;
  return 2.0 * matmul_params * n + 2.0 * table + attention * (n * c + n * (n + 1) / 2);
}

absl::StatusOr<json> RunTtftPart(const engine::Model& model, const TextSource& text,
                                 const Flags& f) {
  const int64_t conv_tokens = ConversationTokens(f.turns, f.ttft_tokens, f.max_reply_tokens);
  std::vector<std::unique_ptr<Engine>> engines;
  std::vector<EngineStats> before;
  for (Mode m : kModes) {
    // Twice a conversation: room for the prefix index to keep what the last turn published.
    auto e = StartEngine(model, f, m != Mode::kRecompute, 2 * conv_tokens, 1);
    if (!e.ok()) return e.status();
    before.push_back((*e)->Stats());
    engines.push_back(std::move(*e));
  }
  // samples[mode][conversation][turn]
  std::vector<std::vector<std::vector<TurnSample>>> samples(std::size(kModes));
  std::vector<double> mode_seconds(std::size(kModes), 0.0);
  for (int c = 0; c < f.conversations; ++c) {
    const Conversation conv = MakeConversation(text, f.seed, /*salt=*/1, c,
                                               {.turns = f.turns,
                                                .min_user_tokens = f.ttft_tokens,
                                                .max_user_tokens = f.ttft_tokens,
                                                .min_reply_tokens = f.min_reply_tokens,
                                                .max_reply_tokens = f.max_reply_tokens});
    for (size_t m = 0; m < std::size(kModes); ++m) {
      const Clock::time_point t0 = Clock::now();
      auto s = RunConversation(*engines[m], kModes[m], conv);
      if (!s.ok()) return s.status();
      mode_seconds[m] += Since(t0);
      samples[m].push_back(std::move(*s));
      Progress(absl::StrFormat("ttft: conversation %d/%d, %-12s %6.1f s (load %.2f)", c + 1,
                               f.conversations, ModeName(kModes[m]), Since(t0), LoadAverage()));
    }
  }
  json modes = json::object();
  for (size_t m = 0; m < std::size(kModes); ++m) {
    json by_turn = json::array(), engine_by_turn = json::array(), new_tokens = json::array(),
         prompt_tokens = json::array(), decode_rate = json::array(), best = json::array();
    std::vector<double> firsts;
    for (int t = 0; t < f.turns; ++t) {
      std::vector<double> ttft, engine_ttft, fresh, prompt, rate;
      for (const auto& conv : samples[m]) {
        // Tokens after the first, over the time after the first.
        rate.push_back(static_cast<double>(conv[t].completion_tokens - 1) /
                       std::max(conv[t].seconds - conv[t].ttft, 1e-9));
        ttft.push_back(conv[t].ttft);
        engine_ttft.push_back(conv[t].engine_ttft);
        fresh.push_back(static_cast<double>(conv[t].prompt_tokens - conv[t].cached_tokens));
        prompt.push_back(static_cast<double>(conv[t].prompt_tokens));
      }
      by_turn.push_back(1e3 * Median(ttft));
      best.push_back(1e3 * *std::min_element(ttft.begin(), ttft.end()));
      engine_by_turn.push_back(1e3 * Median(engine_ttft));
      new_tokens.push_back(Median(fresh));
      prompt_tokens.push_back(Median(prompt));
      decode_rate.push_back(Median(rate));
    }
    const double first = by_turn.front().get<double>(), last = by_turn.back().get<double>();
    auto flops = [&](size_t t) {
      const double n = new_tokens[t].get<double>();
      return PrefillFlops(model, prompt_tokens[t].get<double>() - n, n);
    };
    json entry = CountersJson(Delta(before[m], engines[m]->Stats()));
    entry["prefix_cache"] = kModes[m] != Mode::kRecompute;
    entry["sessions"] = kModes[m] == Mode::kStateful;
    entry["ttft_ms_by_turn"] = by_turn;
    entry["engine_ttft_ms_by_turn"] = engine_by_turn;
    entry["computed_tokens_by_turn"] = new_tokens;
    entry["prompt_tokens_by_turn"] = prompt_tokens;
    entry["decode_tokens_per_s_by_turn"] = decode_rate;
    entry["ttft_ratio_last_first"] = first > 0 ? last / first : 0.0;
    // The fastest conversation of each turn: on a shared machine, the least disturbed.
    entry["ttft_min_ms_by_turn"] = best;
    entry["ttft_min_ratio_last_first"] = best.back().get<double>() / best.front().get<double>();
    // What the ratio would be if time followed the model's flops (matrices and attention at
    // the same rate): the part of the growth that no kernel speed removes.
    entry["flops_ratio_last_first"] = flops(by_turn.size() - 1) / flops(0);
    entry["seconds"] = mode_seconds[m];
    modes[ModeName(kModes[m])] = entry;
  }
  return modes;
}

// ---- part 2: throughput of concurrent sessions -------------------------------------------

struct ServeResult {
  double seconds = 0.0;
  double ttft_seconds = 0.0;  // summed over turns (client)
  EngineCounters counters;
  double load_after = 0.0;  // the 1-minute load average at the end
};

json ServeJson(const ServeResult& r) {
  json j = CountersJson(r.counters);
  j["seconds"] = r.seconds;
  j["generated_tokens_per_s"] = static_cast<double>(r.counters.generated) / r.seconds;
  j["total_tokens_per_s"] =
      static_cast<double>(r.counters.computed + r.counters.generated) / r.seconds;
  j["ttft_seconds_sum"] = r.ttft_seconds;
  j["load_average_after"] = r.load_after;
  return j;
}

// Serves every conversation as a stateful session on a fresh engine: one after another
// (`concurrent` false) or each on its own client thread, all at once.
absl::StatusOr<ServeResult> Serve(const engine::Model& model, const Flags& f,
                                  const std::vector<Conversation>& convs, bool concurrent) {
  const int n = static_cast<int>(convs.size());
  const int64_t conv_tokens =
      ConversationTokens(f.throughput_turns, f.max_user_tokens, f.max_reply_tokens);
  auto engine = StartEngine(model, f, /*prefix_cache=*/true, (concurrent ? n : 1) * conv_tokens,
                            concurrent ? n : 1);
  if (!engine.ok()) return engine.status();
  const EngineStats before = (*engine)->Stats();
  std::vector<absl::StatusOr<std::vector<TurnSample>>> out(static_cast<size_t>(n));
  const Clock::time_point t0 = Clock::now();
  if (concurrent) {
    std::latch start(n + 1);
    std::vector<std::thread> clients;
    for (int i = 0; i < n; ++i) {
      clients.emplace_back([&, i] {
        start.arrive_and_wait();
        out[i] = RunConversation(**engine, Mode::kStateful, convs[i]);
      });
    }
    start.arrive_and_wait();
    for (std::thread& t : clients) t.join();
  } else {
    for (int i = 0; i < n; ++i) {
      out[i] = RunConversation(**engine, Mode::kStateful, convs[i]);
    }
  }
  ServeResult r;
  r.seconds = Since(t0);
  r.counters = Delta(before, (*engine)->Stats());
  r.load_after = LoadAverage();
  for (const auto& o : out) {
    if (!o.ok()) return o.status();
    for (const TurnSample& s : *o) r.ttft_seconds += s.ttft;
  }
  return r;
}

// The ceiling of (prompt + generated) tokens/s: the engine's rate on full steps, i.e. one
// stateless prompt of max_batch_tokens tokens (no prefix index), best of three. Every token
// of a step costs the same matrix work, decode or prefill, so no mix of sessions runs
// faster than this (their attention over longer histories makes them slower still).
absl::StatusOr<double> FullStepTokensPerSecond(const engine::Model& model, const Flags& f,
                                               int* tokens) {
  auto engine = StartEngine(model, f, /*prefix_cache=*/false, 1024, 1);
  if (!engine.ok()) return engine.status();
  const int n = static_cast<int>(
      std::min<int64_t>((*engine)->options().max_batch_tokens, (*engine)->context_length() / 2));
  *tokens = n;
  const int vocab = model.config().vocab_size;
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    TurnParams p;
    for (int i = 0; i < n; ++i) p.tokens.push_back((i * 7919 + rep * 104729 + 17) % vocab);
    p.sampling.temperature = 0.0f;
    p.stop.max_tokens = 1;
    absl::StatusOr<StreamPtr> s = (*engine)->Generate("", std::move(p));
    if (!s.ok()) return s.status();
    const engine::TurnResult& r = (*s)->Wait();
    if (!r.status.ok()) return r.status;
    best = std::max(best, n / std::max(r.ttft_seconds, 1e-9));
  }
  return best;
}

absl::StatusOr<json> RunThroughputPart(const engine::Model& model, const TextSource& text,
                                       const Flags& f) {
  std::vector<Conversation> convs;
  for (int i = 0; i < f.concurrency; ++i) {
    convs.push_back(MakeConversation(text, f.seed, /*salt=*/2, i,
                                     {.turns = f.throughput_turns,
                                      .min_user_tokens = f.min_user_tokens,
                                      .max_user_tokens = f.max_user_tokens,
                                      .min_reply_tokens = f.min_reply_tokens,
                                      .max_reply_tokens = f.max_reply_tokens}));
  }
  json j;
  j["sessions"] = f.concurrency;
  j["turns"] = f.throughput_turns;
  j["user_tokens"] = {f.min_user_tokens, f.max_user_tokens};
  j["reply_tokens"] = {f.min_reply_tokens, f.max_reply_tokens};
  ServeResult results[2];
  for (int concurrent = 0; concurrent < 2; ++concurrent) {
    absl::StatusOr<ServeResult> r = Serve(model, f, convs, concurrent == 1);
    if (!r.ok()) return r.status();
    results[concurrent] = *r;
    Progress(absl::StrFormat("throughput: %d sessions %s: %.1f s (load %.2f)", f.concurrency,
                             concurrent ? "concurrently" : "one at a time", r->seconds,
                             LoadAverage()));
  }
  const ServeResult& serial = results[0];
  const ServeResult& both = results[1];
  j["serial"] = ServeJson(serial);
  j["concurrent"] = ServeJson(both);
  j["ratio_generated_tokens_per_s"] = serial.seconds / both.seconds *
                                      static_cast<double>(both.counters.generated) /
                                      static_cast<double>(serial.counters.generated);
  j["ratio_total_tokens_per_s"] =
      serial.seconds / both.seconds *
      static_cast<double>(both.counters.computed + both.counters.generated) /
      static_cast<double>(serial.counters.computed + serial.counters.generated);
  // Served one at a time, the time to first token is (nearly) all prefill, the rest decode.
  // Batching cannot make compute-bound prefill faster than it already is in 100..300-token
  // chunks, so even free decoding would leave the ratio at most serial / its prefill share.
  j["serial_prefill_share"] = serial.ttft_seconds / serial.seconds;
  j["ratio_bound_if_prefill_unchanged"] = serial.seconds / serial.ttft_seconds;
  int step_tokens = 0;
  absl::StatusOr<double> ceiling = FullStepTokensPerSecond(model, f, &step_tokens);
  if (!ceiling.ok()) return ceiling.status();
  const double serial_total = j["serial"]["total_tokens_per_s"].get<double>();
  j["full_step_tokens"] = step_tokens;
  j["full_step_tokens_per_s"] = *ceiling;
  j["ratio_bound_full_steps"] = *ceiling / serial_total;
  j["concurrent_fraction_of_full_steps"] =
      j["concurrent"]["total_tokens_per_s"].get<double>() / *ceiling;
  return j;
}

// ---- output ------------------------------------------------------------------------------

void PrintText(const json& j) {
  const json& modes = j["modes"];
  std::printf(
      "\n== time to first token by turn (ms, median of %d conversations, %d user "
      "tokens per turn) ==\n",
      j["ttft_conversations"].get<int>(), j["ttft_user_tokens"].get<int>());
  std::printf("%5s", "turn");
  for (Mode m : kModes) std::printf(" %14s %8s", ModeName(m), "computed");
  std::printf("\n");
  const size_t turns = modes["stateful"]["ttft_ms_by_turn"].size();
  for (size_t t = 0; t < turns; ++t) {
    std::printf("%5zu", t + 1);
    for (Mode m : kModes) {
      const json& e = modes[ModeName(m)];
      std::printf(" %14.1f %8.0f", e["ttft_ms_by_turn"][t].get<double>(),
                  e["computed_tokens_by_turn"][t].get<double>());
    }
    std::printf("\n");
  }
  for (const char* key :
       {"ttft_ratio_last_first", "ttft_min_ratio_last_first", "flops_ratio_last_first"}) {
    const std::string k = key;
    std::printf("%-6s", k == "flops_ratio_last_first"  ? "flops"
                        : k == "ttft_ratio_last_first" ? "last/1"
                                                       : "min");
    for (Mode m : kModes) std::printf("%14.2fx %8s", modes[ModeName(m)][key].get<double>(), "");
    std::printf("\n");
  }
  std::printf("%-6s", "decode");
  for (Mode m : kModes) {
    const json& rate = modes[ModeName(m)]["decode_tokens_per_s_by_turn"];
    std::printf(
        "%15s %8s",
        absl::StrFormat("%.0f..%.0f/s", rate.front().get<double>(), rate.back().get<double>())
            .c_str(),
        "");
  }
  std::printf(
      "\n(last/1: of the medians; min: of each turn's fastest conversation; flops: the "
      "ratio if time followed the model's flops, attention included; decode: tokens/s "
      "after the first token, turn 1..last)\n");
  std::printf("\n%-14s %16s %16s %16s\n", "mode", "tokens computed", "tokens reused",
              "tokens generated");
  for (Mode m : kModes) {
    const json& e = modes[ModeName(m)];
    std::printf("%-14s %16lld %16lld %16lld\n", ModeName(m),
                static_cast<long long>(e["tokens_computed"].get<int64_t>()),
                static_cast<long long>(e["tokens_cached"].get<int64_t>()),
                static_cast<long long>(e["tokens_generated"].get<int64_t>()));
  }
  const json& tp = j["throughput"];
  std::printf("\n== throughput: %d stateful sessions of %d turns ==\n", tp["sessions"].get<int>(),
              tp["turns"].get<int>());
  std::printf("%-14s %10s %10s %10s %14s %14s\n", "served", "seconds", "busy s", "tok/step",
              "generated/s", "total/s");
  for (const char* k : {"serial", "concurrent"}) {
    const json& r = tp[k];
    const double tokens = r["tokens_computed"].get<double>() + r["tokens_generated"].get<double>();
    std::printf("%-14s %10.1f %10.1f %10.1f %14.1f %14.1f\n", k, r["seconds"].get<double>(),
                r["busy_seconds"].get<double>(), tokens / r["steps"].get<double>(),
                r["generated_tokens_per_s"].get<double>(), r["total_tokens_per_s"].get<double>());
  }
  std::printf("%-14s %10s %10s %10s %13.2fx %13.2fx\n", "ratio", "", "", "",
              tp["ratio_generated_tokens_per_s"].get<double>(),
              tp["ratio_total_tokens_per_s"].get<double>());
  std::printf(
      "serial: prefill (time to first token) is %.0f%% of the time: a bound of %.2fx "
      "if batching made decoding free\n",
      100.0 * tp["serial_prefill_share"].get<double>(),
      tp["ratio_bound_if_prefill_unchanged"].get<double>());
  std::printf(
      "full %d-token steps run %.1f tokens/s: a bound of %.2fx over serial; concurrent "
      "reached %.0f%% of it\n",
      tp["full_step_tokens"].get<int>(), tp["full_step_tokens_per_s"].get<double>(),
      tp["ratio_bound_full_steps"].get<double>(),
      100.0 * tp["concurrent_fraction_of_full_steps"].get<double>());
  std::printf("load average %.2f at the start, %.2f at the end; %d threads\n",
              j["load_average_start"].get<double>(), j["load_average_end"].get<double>(),
              j["threads"].get<int>());
}

// ---- flags -------------------------------------------------------------------------------

constexpr char kUsage[] =
    "usage: mnemo_multiturn_bench [--model=PATH] [--conversations=N] [--turns=N]\n"
    "  [--concurrency=N] [--throughput-turns=N] [--ttft-tokens=N] [--seed=N] [--threads=N]\n"
    "  [--text=PATH] [--json] [--quick]\n";

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  f.model = DefaultModelPath(MNEMO_SOURCE_DIR);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (std::find(args.begin(), args.end(), "--quick") != args.end()) {
    f.quick = true;
    f.conversations = 2;
    f.turns = 3;
    f.ttft_tokens = 24;
    f.concurrency = 4;
    f.throughput_turns = 2;
    f.min_user_tokens = 16;
    f.max_user_tokens = 32;
    f.min_reply_tokens = 4;
    f.max_reply_tokens = 8;
  }
  struct IntFlag {
    std::string_view name;
    int* value;
  };
  const IntFlag ints[] = {
      {"--conversations", &f.conversations},       {"--turns", &f.turns},
      {"--ttft-tokens", &f.ttft_tokens},           {"--concurrency", &f.concurrency},
      {"--throughput-turns", &f.throughput_turns}, {"--threads", &f.threads}};
  for (const std::string& a : args) {
    const size_t eq = a.find('=');
    const std::string name = a.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : a.substr(eq + 1);
    auto number = [&]() -> absl::StatusOr<long long> {
      char* end = nullptr;
      const long long v = std::strtoll(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || v < 0 || v > (1ll << 40)) {
        return absl::InvalidArgumentError(absl::StrCat("bad value in ", a));
      }
      return v;
    };
    if (a == "--json") {
      f.json = true;
    } else if (a == "--quick") {
    } else if (a == "--help" || a == "-h") {
      return absl::CancelledError(std::string(kUsage));
    } else if (name == "--model" && eq != std::string::npos) {
      f.model = value;
    } else if (name == "--text" && eq != std::string::npos) {
      f.text = value;
    } else if (name == "--seed") {
      absl::StatusOr<long long> v = number();
      if (!v.ok()) return v.status();
      f.seed = static_cast<uint64_t>(*v);
    } else {
      auto it = std::find_if(std::begin(ints), std::end(ints),
                             [&](const IntFlag& i) { return i.name == name; });
      if (it == std::end(ints)) {
        return absl::InvalidArgumentError(absl::StrCat("unknown flag ", a, "\n", kUsage));
      }
      absl::StatusOr<long long> v = number();
      if (!v.ok()) return v.status();
      *it->value = static_cast<int>(*v);
    }
  }
  if (f.conversations < 1 || f.turns < 1 || f.concurrency < 1 || f.throughput_turns < 1 ||
      f.ttft_tokens < 1) {
    return absl::InvalidArgumentError(
        "--conversations, --turns, --concurrency, --throughput-turns and --ttft-tokens must be "
        ">= 1");
  }
  return f;
}

absl::Status Run(const Flags& f) {
  const double load_start = LoadAverage();
  absl::StatusOr<std::unique_ptr<engine::Model>> model = engine::Model::Open(f.model);
  if (!model.ok()) return model.status();
  const int64_t ctx = (*model)->config().context_length;
  for (int64_t need :
       {ConversationTokens(f.turns, f.ttft_tokens, f.max_reply_tokens),
        ConversationTokens(f.throughput_turns, f.max_user_tokens, f.max_reply_tokens)}) {
    if (need > ctx) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a conversation may need ", need, " tokens, more than the model's context of ", ctx,
          ": use fewer --turns / --throughput-turns or fewer --ttft-tokens"));
    }
  }
  // The model's tokenizer (the engine's is built from the same data) cuts the user text.
  absl::StatusOr<std::unique_ptr<engine::Tokenizer>> tokenizer =
      engine::Tokenizer::Create((*model)->tokenizer_data());
  if (!tokenizer.ok()) return tokenizer.status();
  std::string text_used;
  const TextSource text(TextSource::LoadWords(f.text, &text_used), **tokenizer);

  json j;
  j["bench"] = "multiturn";
  j["model"] = f.model;
  j["text"] = text_used;
  j["threads"] = f.threads > 0 ? f.threads : tbb::info::default_concurrency();
  j["seed"] = f.seed;
  j["quick"] = f.quick;
  j["ttft_conversations"] = f.conversations;
  j["ttft_turns"] = f.turns;
  j["ttft_user_tokens"] = f.ttft_tokens;
  j["reply_tokens"] = {f.min_reply_tokens, f.max_reply_tokens};
  j["load_average_start"] = load_start;
  Progress(absl::StrCat("model ", f.model, "; user text from ", text_used));
  absl::StatusOr<json> modes = RunTtftPart(**model, text, f);
  if (!modes.ok()) return modes.status();
  j["modes"] = *modes;
  absl::StatusOr<json> throughput = RunThroughputPart(**model, text, f);
  if (!throughput.ok()) return throughput.status();
  j["throughput"] = *throughput;
  j["load_average_end"] = LoadAverage();
  PrintReport(j, f.json, PrintText);
  return absl::OkStatus();
}

}  // namespace
}  // namespace mnemo::bench

int main(int argc, char** argv) {
  return mnemo::bench::BenchMain("mnemo_multiturn_bench", mnemo::bench::ParseFlags(argc, argv),
                                 mnemo::bench::Run);
}
