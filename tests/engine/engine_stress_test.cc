// Stress: 64 sessions driven from 8 threads for several turns each, with random forks,
// rewinds, deletes, cancellations and interleaved stateless requests, under a KV budget
// small enough that requests compete for blocks (preemption, "cannot admit"), while every
// single request fits an empty pool.
//
// Checks: the test ends (a deadlock hangs it until ctest's timeout); every reply that
// completed equals a sequential greedy recomputation of its prompt (an independent
// Generator, after the threads joined); a cancelled or failed turn leaves its session's
// tokens as they were; rewinds and forks give back exactly the history of the turn they
// name; the engine's invariants hold; deleting every session returns every block.
//
// Each session is driven by one thread only, so its tokens read right after one of its
// turns are that turn's result: the turn's prompt is their first usage.prompt_tokens.
//
// Environment (tests only): MNEMO_STRESS_SCALE=N (default 1) runs N times as many rounds
// per thread; MNEMO_STRESS_SEED=S changes the random choices (the threads' interleaving is
// never reproducible). tools/tsan.sh runs this test under ThreadSanitizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/generate.h"
#include "engine/model/model.h"
#include "engine/model/test_model.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

constexpr int kThreads = 8;
constexpr int kSessionsPerThread = 8;
constexpr int kMaxSlotsPerThread = 12;  // forks add sessions; beyond this one is deleted
constexpr int kRoundsPerThread = 96;    // times MNEMO_STRESS_SCALE
constexpr int kBlockTokens = 16;
constexpr size_t kMaxHistory = 96;  // a longer session is rewound before its next turn
constexpr int kContext = 512;
// The pool: the largest single request (kMaxHistory + a turn's delta + kLongTurnTokens,
// about 11 blocks) fits it many times over, and so does the working set of the up to 24
// requests in flight; but the 64 to 96 idle sessions, once grown (kMaxHistory is 6 blocks,
// a turn may leave up to 11), fill it: running sequences are preempted and some requests
// cannot be admitted. (Default size: ~1000 turns, ~50 preemptions, ~50 ResourceExhausted.)
constexpr int kBudgetBlocks = 288;
constexpr int kLongTurnTokens = 40;  // turns that are cancelled after their first chunk

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? std::atoi(v) : fallback;
}

// A completed request, recomputed sequentially after the run.
struct Expected {
  std::string what;
  std::vector<TokenId> prompt;
  std::string chat_prompt;    // instead of `prompt`: one user message through the template
  int64_t prompt_tokens = 0;  // usage.prompt_tokens (checked against chat_prompt's ids)
  std::vector<TokenId> ids;
  StopParams stop;
};

struct Tally {
  int64_t turns = 0;  // session turns submitted (every kind of op)
  int64_t turns_ok = 0;
  int64_t exhausted = 0;  // ResourceExhausted results (turns, generates, forks)
  int64_t cancelled = 0;  // Cancelled results
  int64_t deleted_mid_turn = 0;
  int64_t forks = 0;
  int64_t rewinds = 0;
  int64_t deletes = 0;
  int64_t generates = 0;
  int64_t generates_ok = 0;

  void Add(const Tally& o) {
    turns += o.turns;
    turns_ok += o.turns_ok;
    exhausted += o.exhausted;
    cancelled += o.cancelled;
    deleted_mid_turn += o.deleted_mid_turn;
    forks += o.forks;
    rewinds += o.rewinds;
    deletes += o.deletes;
    generates += o.generates;
    generates_ok += o.generates_ok;
  }
};

enum class CancelMode : uint8_t { kNone, kAtOnce, kAfterFirstChunk };

// A session owned by one driver thread.
struct Slot {
  std::string id;
  bool chat = false;                          // message turns (ChatML) or raw-token turns
  std::vector<std::vector<TokenId>> history;  // [k]: its tokens with k turns; back(): now
  int64_t n_turns() const { return static_cast<int64_t>(history.size()) - 1; }
};

// A submitted session turn.
struct Pending {
  std::string session;       // the slot's id when submitted
  std::vector<TokenId> raw;  // the tokens of a raw turn
  StopParams stop;
  CancelMode cancel = CancelMode::kNone;
  StreamPtr stream;
};

// One client thread: owns its slots and drives them with random operations.
class Driver {
 public:
  Driver(Engine& engine, int index, uint64_t seed)
      : e_(engine), index_(index), tenant_(absl::StrCat("t", index / 2)), rng_(seed) {}

  void Run(int rounds) {
    for (int i = 0; i < kSessionsPerThread; ++i) slots_.push_back(NewSlot());
    for (int round = 0; round < rounds; ++round) {
      const int op = Uniform(0, 99);
      if (op < 45) {
        TurnBatch();
      } else if (op < 55) {
        ForkAndContinue();
      } else if (op < 62) {
        RewindOne();
      } else if (op < 67) {
        DeleteOne();
      } else if (op < 72) {
        DeleteMidTurn();
      } else if (op < 90) {
        Generates();
      } else {
        BackToBack();
      }
      if (relieve_) Relieve();
    }
  }

  const std::vector<Slot>& slots() const { return slots_; }
  const std::string& tenant() const { return tenant_; }
  std::vector<Expected>& expected() { return expected_; }
  const Tally& tally() const { return tally_; }

 private:
  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool OneIn(int n) { return Uniform(0, n - 1) == 0; }

  std::vector<TokenId> Tokens(const std::string& id) {
    auto t = e_.SessionTokens(tenant_, id);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : std::vector<TokenId>{};
  }

  std::vector<TokenId> RandomBytes(int n) {
    std::vector<TokenId> ids;
    for (int i = 0; i < n; ++i) ids.push_back(static_cast<TokenId>(Uniform(0, 255)));
    return ids;
  }

  std::string RandomText() {
    static constexpr const char* kWords[] = {"the", "cat", "sat",  "on",   "a",     "mat",
                                             "why", "is",  "blue", "tell", "me",    "about",
                                             "dog", "and", "tree", "sky",  "hello", "?"};
    std::string text;
    const int n = Uniform(1, 6);
    for (int i = 0; i < n; ++i) {
      if (i > 0) text += ' ';
      text += kWords[Uniform(0, static_cast<int>(std::size(kWords)) - 1)];
    }
    return text;
  }

  Slot NewSlot() {
    Slot slot;
    slot.chat = OneIn(2);
    SessionParams p;
    p.seed = rng_();
    // Sessions of a tenant (two threads) share one of a few system prompts: prefix hits.
    if (slot.chat && !OneIn(3)) {
      p.system_prompt = absl::StrCat("You are helper number ", Uniform(0, 2), " of ", tenant_,
                                     ". Answer in few words.");
    }
    auto info = e_.CreateSession(tenant_, p);
    EXPECT_TRUE(info.ok()) << info.status();
    if (!info.ok()) return slot;
    EXPECT_FALSE(info->busy);  // CreateSession returns once a system prompt is in KV
    slot.id = info->id;
    slot.history.resize(static_cast<size_t>(info->n_turns) + 1);
    slot.history.back() = Tokens(slot.id);
    return slot;
  }

  // Deletes slot `i` and puts a new session in its place.
  void Replace(size_t i) {
    EXPECT_TRUE(e_.DeleteSession(tenant_, slots_[i].id).ok());
    EXPECT_EQ(e_.SessionTokens(tenant_, slots_[i].id).status().code(), absl::StatusCode::kNotFound);
    ++tally_.deletes;
    slots_[i] = NewSlot();
  }

  size_t AnySlot() { return static_cast<size_t>(Uniform(0, static_cast<int>(slots_.size()) - 1)); }

  // A slot with at least one turn, if any.
  std::optional<size_t> SlotWithTurns() {
    std::vector<size_t> ok;
    for (size_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i].n_turns() >= 1) ok.push_back(i);
    }
    if (ok.empty()) return std::nullopt;
    return ok[static_cast<size_t>(Uniform(0, static_cast<int>(ok.size()) - 1))];
  }

  // Keeps slot `i` under kMaxHistory tokens before a turn: rewinds it to an earlier turn,
  // or replaces it when no earlier turn is short enough.
  void Trim(size_t i) {
    Slot& s = slots_[i];
    if (s.history.back().size() <= kMaxHistory) return;
    int64_t keep = s.n_turns();
    while (keep > 0 && s.history[static_cast<size_t>(keep)].size() > kMaxHistory / 2) --keep;
    if (keep == 0) {
      Replace(i);
      return;
    }
    Rewind(i, keep);
  }

  void Rewind(size_t i, int64_t keep) {
    Slot& s = slots_[i];
    const absl::Status st = e_.Rewind(tenant_, s.id, keep);
    ASSERT_TRUE(st.ok()) << st;
    ++tally_.rewinds;
    EXPECT_EQ(Tokens(s.id), s.history[static_cast<size_t>(keep)]) << "rewind to " << keep;
    s.history.resize(static_cast<size_t>(keep) + 1);
    auto info = e_.GetSession(tenant_, s.id);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->n_turns, keep);
    EXPECT_LE(info->kv_tokens, info->n_tokens);
  }

  TurnParams NewTurn(const Slot& s, bool long_turn, std::vector<TokenId>* raw) {
    TurnParams p;
    if (s.chat) {
      p.messages.push_back({.role = "user", .content = RandomText()});
    } else {
      p.tokens = RandomBytes(Uniform(1, 20));
      *raw = p.tokens;
    }
    p.sampling.temperature = 0.0f;
    // Mostly short replies; some long ones grow their tables while others run (preemption).
    p.stop.max_tokens = long_turn ? kLongTurnTokens : OneIn(6) ? Uniform(16, 32) : Uniform(1, 8);
    p.stop.ignore_eos = long_turn || OneIn(3);
    return p;
  }

  std::optional<Pending> Submit(size_t i, CancelMode cancel) {
    Trim(i);
    const Slot& s = slots_[i];
    Pending p;
    p.session = s.id;
    p.cancel = cancel;
    TurnParams tp = NewTurn(s, cancel == CancelMode::kAfterFirstChunk, &p.raw);
    p.stop = tp.stop;
    auto stream = e_.Continue(tenant_, s.id, std::move(tp));
    EXPECT_TRUE(stream.ok()) << stream.status();
    if (!stream.ok()) return std::nullopt;
    p.stream = std::move(*stream);
    ++tally_.turns;
    if (cancel == CancelMode::kAtOnce) p.stream->Cancel();
    return p;
  }

  CancelMode RandomCancel() {
    const int c = Uniform(0, 99);
    return c < 8 ? CancelMode::kAtOnce : c < 20 ? CancelMode::kAfterFirstChunk : CancelMode::kNone;
  }

  // Waits for the turn and checks and records its outcome. Returns its result.
  TurnResult Settle(Pending& p) {
    if (p.cancel == CancelMode::kAfterFirstChunk) {
      StreamChunk chunk;
      if (p.stream->Next(&chunk)) p.stream->Cancel();
    }
    TurnResult r = p.stream->Wait();
    auto it = std::find_if(slots_.begin(), slots_.end(),
                           [&](const Slot& s) { return s.id == p.session; });
    EXPECT_TRUE(it != slots_.end()) << "session " << p.session << " is not this thread's";
    if (it == slots_.end()) return r;
    Slot& s = *it;
    const std::vector<TokenId> before = s.history.back();
    const std::vector<TokenId> now = Tokens(s.id);
    if (r.status.ok()) {
      ++tally_.turns_ok;
      EXPECT_EQ(r.turn, s.n_turns());
      EXPECT_TRUE(now.size() >= before.size() &&
                  std::equal(before.begin(), before.end(), now.begin()))
          << "the turn changed the history before it";
      EXPECT_GT(r.usage.prompt_tokens, static_cast<int64_t>(before.size()));
      EXPECT_LE(r.usage.prompt_tokens, static_cast<int64_t>(now.size()));
      if (!s.chat) {  // a raw turn leaves exactly prompt + reply
        std::vector<TokenId> want = before;
        want.insert(want.end(), p.raw.begin(), p.raw.end());
        want.insert(want.end(), r.ids.begin(), r.ids.end());
        EXPECT_EQ(now, want);
      }
      const size_t n = std::min(now.size(), static_cast<size_t>(r.usage.prompt_tokens));
      expected_.push_back(
          {.what = absl::StrCat("thread ", index_, " session ", s.id, " turn ", r.turn),
           .prompt = std::vector<TokenId>(now.begin(), now.begin() + n),
           .ids = r.ids,
           .stop = p.stop});
      s.history.push_back(now);
      return r;
    }
    EXPECT_EQ(now, before) << "a " << r.status << " turn changed the session";
    Count(r.status);
    return r;
  }

  void Count(const absl::Status& st) {
    if (st.code() == absl::StatusCode::kCancelled) {
      ++tally_.cancelled;
    } else if (st.code() == absl::StatusCode::kResourceExhausted) {
      ++tally_.exhausted;
      relieve_ = true;
    } else {
      ADD_FAILURE() << "unexpected result " << st;
    }
  }

  // After a ResourceExhausted: idle sessions hold the pool, so this client deletes its
  // longest session (what engine.h's error message advises).
  void Relieve() {
    relieve_ = false;
    size_t longest = 0;
    for (size_t i = 1; i < slots_.size(); ++i) {
      if (slots_[i].history.back().size() > slots_[longest].history.back().size()) longest = i;
    }
    Replace(longest);
  }

  // Turns on 1-3 distinct sessions at once, some cancelled.
  void TurnBatch() {
    std::vector<size_t> picked;
    const int n = Uniform(1, 3);
    for (int k = 0; k < n; ++k) {
      const size_t i = AnySlot();
      if (std::find(picked.begin(), picked.end(), i) == picked.end()) picked.push_back(i);
    }
    std::vector<Pending> pending;
    for (size_t i : picked) {
      if (auto p = Submit(i, RandomCancel())) pending.push_back(std::move(*p));
    }
    for (Pending& p : pending) Settle(p);
  }

  // Forks a session (whole, or at an earlier turn) and continues both branches at once.
  void ForkAndContinue() {
    const std::optional<size_t> src = SlotWithTurns();
    if (!src) return TurnBatch();
    Slot& s = slots_[*src];
    std::optional<int64_t> at;
    if (OneIn(3)) at = Uniform(0, static_cast<int>(s.n_turns()));
    auto info = e_.Fork(tenant_, s.id, at);
    if (!info.ok()) {
      EXPECT_EQ(info.status().code(), absl::StatusCode::kResourceExhausted) << info.status();
      Count(info.status());
      return;
    }
    ++tally_.forks;
    const size_t keep = static_cast<size_t>(at.value_or(s.n_turns()));
    Slot f;
    f.id = info->id;
    f.chat = s.chat;
    f.history.assign(s.history.begin(), s.history.begin() + static_cast<ptrdiff_t>(keep) + 1);
    EXPECT_EQ(info->n_turns, static_cast<int64_t>(keep));
    EXPECT_EQ(Tokens(f.id), f.history.back()) << "fork at " << keep;
    const std::string src_id = s.id;
    slots_.push_back(std::move(f));
    if (slots_.size() > kMaxSlotsPerThread) {
      // Make room: delete one session that is neither branch.
      size_t victim = AnySlot();
      while (victim == slots_.size() - 1 || slots_[victim].id == src_id) victim = AnySlot();
      EXPECT_TRUE(e_.DeleteSession(tenant_, slots_[victim].id).ok());
      ++tally_.deletes;
      slots_.erase(slots_.begin() + static_cast<ptrdiff_t>(victim));
    }
    std::vector<Pending> pending;
    for (size_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i].id != src_id && i != slots_.size() - 1) continue;
      if (auto p = Submit(i, OneIn(5) ? RandomCancel() : CancelMode::kNone)) {
        pending.push_back(std::move(*p));
      }
    }
    for (Pending& p : pending) Settle(p);
  }

  void RewindOne() {
    const std::optional<size_t> i = SlotWithTurns();
    if (!i) return TurnBatch();
    Rewind(*i, Uniform(0, static_cast<int>(slots_[*i].n_turns()) - 1));
  }

  void DeleteOne() { Replace(AnySlot()); }

  // Deletes a session while its turn runs: the turn ends with NotFound (or had ended).
  void DeleteMidTurn() {
    const size_t i = AnySlot();
    std::optional<Pending> p = Submit(i, CancelMode::kNone);
    if (!p) return;
    EXPECT_TRUE(e_.DeleteSession(tenant_, slots_[i].id).ok());
    ++tally_.deletes;
    const TurnResult& r = p->stream->Wait();
    if (r.status.ok()) {
      ++tally_.turns_ok;
    } else if (r.status.code() == absl::StatusCode::kNotFound) {
      ++tally_.deleted_mid_turn;
    } else {
      Count(r.status);
    }
    if (r.status.ok() && !slots_[i].chat) {  // a raw turn's prompt is known without the session
      RecordRawTurn(slots_[i].history.back(), *p, r);
    }
    slots_[i] = NewSlot();
  }

  // 1-2 stateless requests starting with the tenant's common prefix (prefix hits): raw
  // tokens, or one user message (rendered and tokenized on this thread, while the loop
  // renders turns).
  void Generates() {
    struct Gen {
      Expected x;
      CancelMode cancel;
      StreamPtr stream;
    };
    std::vector<Gen> gens;
    const int n = Uniform(1, 2);
    for (int k = 0; k < n; ++k) {
      Gen g;
      g.cancel = RandomCancel();
      TurnParams p;
      if (OneIn(2)) {
        g.x.chat_prompt =
            absl::StrCat("Dear helper of ", tenant_, ", I have a question: ", RandomText());
        p.messages.push_back({.role = "user", .content = g.x.chat_prompt});
      } else {
        for (int t = 0; t < 40; ++t) {
          g.x.prompt.push_back(static_cast<TokenId>((t * 7 + index_ / 2) % 256));
        }
        const std::vector<TokenId> tail = RandomBytes(Uniform(1, 20));
        g.x.prompt.insert(g.x.prompt.end(), tail.begin(), tail.end());
        p.tokens = g.x.prompt;
      }
      p.sampling.temperature = 0.0f;
      p.stop.max_tokens =
          g.cancel == CancelMode::kAfterFirstChunk ? kLongTurnTokens : Uniform(1, 24);
      p.stop.ignore_eos = g.cancel == CancelMode::kAfterFirstChunk || OneIn(2);
      g.x.stop = p.stop;
      auto stream = e_.Generate(tenant_, std::move(p));
      EXPECT_TRUE(stream.ok()) << stream.status();
      if (!stream.ok()) continue;
      g.stream = std::move(*stream);
      if (g.cancel == CancelMode::kAtOnce) g.stream->Cancel();
      ++tally_.generates;
      gens.push_back(std::move(g));
    }
    for (Gen& g : gens) {
      if (g.cancel == CancelMode::kAfterFirstChunk) {
        StreamChunk chunk;
        if (g.stream->Next(&chunk)) g.stream->Cancel();
      }
      const TurnResult& r = g.stream->Wait();
      if (!r.status.ok()) {
        Count(r.status);
        continue;
      }
      ++tally_.generates_ok;
      EXPECT_EQ(r.turn, -1);
      if (g.x.chat_prompt.empty()) {
        EXPECT_EQ(r.usage.prompt_tokens, static_cast<int64_t>(g.x.prompt.size()));
      }
      g.x.what = absl::StrCat("thread ", index_, " generate");
      g.x.prompt_tokens = r.usage.prompt_tokens;
      g.x.ids = r.ids;
      expected_.push_back(std::move(g.x));
    }
  }

  // Two raw turns of one session submitted at once: the second waits for the first and
  // continues whatever the first left (its reply, or the rolled-back history).
  void BackToBack() {
    std::vector<size_t> raw;
    for (size_t i = 0; i < slots_.size(); ++i) {
      if (!slots_[i].chat) raw.push_back(i);
    }
    if (raw.empty()) return TurnBatch();
    const size_t i = raw[static_cast<size_t>(Uniform(0, static_cast<int>(raw.size()) - 1))];
    Trim(i);                     // now: it must not run between the two submissions
    if (slots_[i].chat) return;  // Trim replaced it by a chat session
    std::optional<Pending> a = Submit(i, CancelMode::kNone);
    if (!a) return;
    Pending b;
    b.session = slots_[i].id;
    TurnParams tp = NewTurn(slots_[i], /*long_turn=*/false, &b.raw);
    b.stop = tp.stop;
    auto stream = e_.Continue(tenant_, b.session, std::move(tp));
    ASSERT_TRUE(stream.ok()) << stream.status();
    b.stream = std::move(*stream);
    ++tally_.turns;
    // Both end before the session is read: when the first ends the second has begun.
    const TurnResult ra = a->stream->Wait();
    const TurnResult rb = b.stream->Wait();
    Slot& s = slots_[i];
    for (const auto& [turn, r] : {std::pair{&*a, &ra}, std::pair{&b, &rb}}) {
      if (!r->status.ok()) {
        Count(r->status);
        continue;
      }
      ++tally_.turns_ok;
      EXPECT_EQ(r->turn, s.n_turns());
      s.history.push_back(RecordRawTurn(s.history.back(), *turn, *r));
    }
    EXPECT_EQ(Tokens(s.id), s.history.back());
  }

  // Records the completed raw turn `p` of a session whose tokens were `before`; returns
  // the tokens it leaves: before + the turn's tokens (its prompt) + the reply.
  std::vector<TokenId> RecordRawTurn(std::vector<TokenId> before, const Pending& p,
                                     const TurnResult& r) {
    std::vector<TokenId> tokens = std::move(before);
    tokens.insert(tokens.end(), p.raw.begin(), p.raw.end());
    EXPECT_EQ(r.usage.prompt_tokens, static_cast<int64_t>(tokens.size()));
    expected_.push_back(
        {.what = absl::StrCat("thread ", index_, " session ", p.session, " raw turn ", r.turn),
         .prompt = tokens,
         .ids = r.ids,
         .stop = p.stop});
    tokens.insert(tokens.end(), r.ids.begin(), r.ids.end());
    return tokens;
  }

  Engine& e_;
  const int index_;
  const std::string tenant_;
  std::mt19937_64 rng_;
  std::vector<Slot> slots_;
  std::vector<Expected> expected_;
  Tally tally_;
  bool relieve_ = false;
};

TEST(EngineStress, ManySessionsFromManyThreadsEqualSequentialRecomputation) {
  const int scale = std::max(1, EnvInt("MNEMO_STRESS_SCALE", 1));
  const uint64_t seed = static_cast<uint64_t>(EnvInt("MNEMO_STRESS_SEED", 1));
  const std::string path = testing::MakeTempDir() + "/stress.gguf";
  TestModelOptions mo;
  mo.arch = Architecture::kLlama;
  mo.dtype = kernels::DType::kF16;
  mo.n_layers = 2;  // smaller than the default test model: ~1000 recomputations follow
  mo.d_model = 128;
  mo.n_heads = 2;
  mo.n_kv_heads = 1;
  mo.head_dim = 64;
  mo.d_ff = 256;
  mo.context_length = kContext;
  ASSERT_TRUE(WriteTestModel(mo, path).ok());
  auto model = Model::Open(path);
  ASSERT_TRUE(model.ok()) << model.status();

  EngineOptions o;
  o.threads = testing::TestKernelThreads();  // 1 under TSan (test_util.h)
  o.block_tokens = kBlockTokens;
  o.max_seqs = 12;
  o.max_batch_tokens = 96;
  int64_t block_bytes = 0;
  {
    EngineOptions probe = o;
    probe.kv_budget_bytes = uint64_t{1} << 24;
    auto e = Engine::Create(**model, probe);
    ASSERT_TRUE(e.ok()) << e.status();
    block_bytes = (*e)->block_bytes();
  }
  o.kv_budget_bytes = static_cast<uint64_t>(block_bytes) * kBudgetBlocks;
  auto engine = Engine::Create(**model, o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  Engine& e = **engine;

  std::vector<std::unique_ptr<Driver>> drivers;
  for (int t = 0; t < kThreads; ++t) {
    drivers.push_back(std::make_unique<Driver>(e, t, seed * 1000003 + static_cast<uint64_t>(t)));
  }
  const auto t0 = std::chrono::steady_clock::now();
  {
    std::vector<std::thread> threads;
    for (auto& d : drivers) threads.emplace_back([&d, scale] { d->Run(kRoundsPerThread * scale); });
    for (std::thread& t : threads) t.join();
  }
  const double run_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  Tally tally;
  std::vector<Expected> expected;
  for (auto& d : drivers) {
    tally.Add(d->tally());
    for (Expected& x : d->expected()) expected.push_back(std::move(x));
  }
  const EngineStats stats = e.Stats();
  const absl::Status inv = e.CheckInvariants();
  EXPECT_TRUE(inv.ok()) << inv;

  // Sequential recomputation of every completed reply.
  auto gen = Generator::Create(
      **model, {.threads = testing::TestKernelThreads(), .block_tokens = kBlockTokens});
  ASSERT_TRUE(gen.ok()) << gen.status();
  int mismatches = 0;
  for (const Expected& x : expected) {
    GenerateRequest r;
    r.prompt_ids = x.prompt;
    r.prompt = x.chat_prompt;
    r.chat = !x.chat_prompt.empty();
    r.sampling.temperature = 0.0f;
    r.stop = x.stop;
    if (r.chat) {
      auto ids = (*gen)->PromptIds(r);
      ASSERT_TRUE(ids.ok()) << ids.status();
      EXPECT_EQ(static_cast<int64_t>(ids->size()), x.prompt_tokens) << x.what;
    }
    auto out = (*gen)->Generate(r);
    ASSERT_TRUE(out.ok()) << out.status() << " (" << x.what << ")";
    if (out->ids != x.ids && ++mismatches <= 10) {
      ADD_FAILURE() << x.what << ": the engine's reply differs from its recomputation ("
                    << out->prompt_ids.size() << " prompt tokens)";
    }
  }
  EXPECT_EQ(mismatches, 0);

  std::cout << "stress: " << kThreads << " threads x " << kRoundsPerThread * scale << " rounds in "
            << run_seconds << " s; turns " << tally.turns << " (ok " << tally.turns_ok
            << "), generates " << tally.generates << " (ok " << tally.generates_ok
            << "), ResourceExhausted " << tally.exhausted << ", cancelled " << tally.cancelled
            << ", deleted mid-turn " << tally.deleted_mid_turn << ", forks " << tally.forks
            << ", rewinds " << tally.rewinds << ", deletes " << tally.deletes << "; engine: steps "
            << stats.steps << ", preemptions " << stats.preemptions << ", prefix hits "
            << stats.prefix_hits << ", evictions " << stats.evictions << ", blocks "
            << stats.blocks_total << "; recomputed " << expected.size() << "\n";

  // Outcomes: most turns complete, and the small pool made the scheduler preempt.
  EXPECT_GT(2 * tally.turns_ok, tally.turns);
  EXPECT_GT(2 * tally.generates_ok, tally.generates);
  EXPECT_GT(stats.preemptions, 0);
  EXPECT_GT(tally.cancelled, 0);
  EXPECT_GT(tally.forks, 0);
  EXPECT_GT(tally.rewinds, 0);

  // No leak: deleting every session returns every block.
  for (auto& d : drivers) {
    for (const Slot& s : d->slots()) EXPECT_TRUE(e.DeleteSession(d->tenant(), s.id).ok());
  }
  for (auto& d : drivers) EXPECT_TRUE(e.ListSessions(d->tenant()).empty());
  const EngineStats end = e.Stats();
  EXPECT_EQ(end.sessions, 0);
  EXPECT_EQ(end.blocks_in_use, 0);
  EXPECT_EQ(end.blocks_free, end.blocks_total);
  EXPECT_EQ(end.running + end.waiting, 0);
  const absl::Status inv_end = e.CheckInvariants();
  EXPECT_TRUE(inv_end.ok()) << inv_end;
}

}  // namespace
}  // namespace mnemo::engine
