// The in-process driver of `mnemo bench multiturn` (runner.h): one fresh Engine per mode.
//
//   kStateless / kPrefix   Engine::Generate with the whole history every turn (system, each
//                          earlier user message and the reply actually produced, the new
//                          message); prefix_cache off / on.
//   kStateful / kSpill     CreateSession(system) on Open, Continue with the new message per
//                          turn, DeleteSession on End. kSpill adds a host tier and a state
//                          directory and shrinks the device tier (see SpillBudget below).
//
// Replies are greedy and exactly reply_tokens long: end-of-generation tokens neither stop a
// reply (ignore_eos) nor appear in it (their logits are banned), so that the history the
// stateless modes resend and the session's history hold the same conversation.
#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "bench/stateful/runner.h"
#include "cache/base/strings.h"
#include "engine/engine.h"
#include "engine/model/tokenizer.h"

namespace mnemo::bench {
namespace {

using engine::ChatMessage;
using engine::Engine;
using engine::EngineStats;
using engine::StreamPtr;
using engine::TurnParams;
using Clock = std::chrono::steady_clock;

// Tokens the chat template adds around one message (ChatML: "<|im_start|>role\n" and
// "<|im_end|>\n"; Llama 3's headers are about as long), generously: only for sizing.
constexpr int64_t kTemplateTokensPerMessage = 8;

// One token's K and V over every layer, as the block pool lays them out (f16/bf16).
int64_t KvBytesPerToken(const engine::Model& model) {
  const engine::ModelConfig& cfg = model.config();
  return int64_t{2} * 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim;
}

int64_t RoundUp(int64_t x, int64_t multiple) { return (x + multiple - 1) / multiple * multiple; }

// The device and host budgets of kSpill, in bytes (see EngineDriverOptions): every
// conversation's final length is estimated as its system prompt and user messages (tokenized
// with the model's tokenizer), every reply's exact length and the template's tokens.
// Spilling needs idle sessions (between turns, or thinking): when more turns are queued at
// once than the device tier holds and none is running, the engine refuses the first with
// ResourceExhausted (a queued session's KV is not a spill candidate), which the records show.
struct SpillBudget {
  uint64_t device_bytes = 0;
  uint64_t host_bytes = 0;
};

absl::StatusOr<SpillBudget> SizeSpill(const engine::Model& model, const Workload& w,
                                      const EngineDriverOptions& opts) {
  auto tokenizer = engine::Tokenizer::Create(model.tokenizer_data());
  if (!tokenizer.ok()) return tokenizer.status();
  auto count = [&](const std::string& text) {
    return static_cast<int64_t>((*tokenizer)->Encode(text, {}).size());
  };
  int64_t total = 0, longest = 0;
  for (const WorkloadConversation& c : w.conversations) {
    int64_t n = c.system.empty() ? 0 : count(c.system) + kTemplateTokensPerMessage;
    for (const WorkloadTurn& t : c.turns) {
      n += count(t.user) + t.reply_tokens + 2 * kTemplateTokensPerMessage;
    }
    total += n;
    longest = std::max(longest, n);
  }
  const int64_t block_tokens = opts.engine.block_tokens;
  const double fraction = std::clamp(opts.spill_device_fraction, 0.0, 1.0);
  // The floor: `concurrency` of the longest conversation (the turns in flight at once must
  // fit together), one full step of prefill chunks, and a partial block for each of a few
  // other sequences.
  const int64_t floor_tokens =
      std::max(1, opts.concurrency) * longest + opts.engine.max_batch_tokens + 4 * block_tokens;
  const int64_t tokens =
      std::max(static_cast<int64_t>(fraction * static_cast<double>(total)), floor_tokens);
  const int64_t bytes = RoundUp(tokens, block_tokens) * KvBytesPerToken(model);
  return SpillBudget{.device_bytes = static_cast<uint64_t>(bytes),
                     .host_bytes = static_cast<uint64_t>(bytes)};
}

absl::StatusOr<std::string> MakeStateDir() {
  const char* tmp = getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/var/tmp", "/mnemo-bench-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot create a temporary state directory ",
                                               pattern, ": ", std::strerror(errno)));
  }
  return pattern;
}

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Greedy, exactly `max_tokens` tokens, end-of-generation tokens banned.
TurnParams ReplyParams(const Engine& engine, int max_tokens) {
  TurnParams p;
  p.sampling.temperature = 0.0f;
  for (engine::TokenId id : engine.tokenizer().data().eog) {
    p.sampling.logit_bias.emplace_back(id, -std::numeric_limits<float>::infinity());
  }
  p.stop.max_tokens = max_tokens;
  p.stop.ignore_eos = true;
  return p;
}

// Reads the stream to its end; ttft from `t0` to the first chunk holding a token.
TurnRecord ReadReply(const StreamPtr& stream, Clock::time_point t0, std::string* reply) {
  TurnRecord rec;
  engine::StreamChunk chunk;
  bool first = true;
  while (stream->Next(&chunk)) {
    if (first && !chunk.ids.empty()) {
      rec.ttft_seconds = Since(t0);
      first = false;
    }
  }
  const engine::TurnResult& r = stream->Wait();
  if (!r.status.ok()) {
    rec.error = r.status.ToString();
    return rec;
  }
  rec.prompt_tokens = r.usage.prompt_tokens;
  rec.cached_tokens = r.usage.cached_tokens;
  rec.generated_tokens = r.usage.completion_tokens;
  *reply = r.text;
  return rec;
}

// ---- conversations ---------------------------------------------------------------------

class EngineConversation : public ConversationClient {
 public:
  EngineConversation(Engine& engine, BenchMode mode, WorkloadConversation c,
                     EngineDriverOptions::ReplyHook on_reply)
      : engine_(engine), mode_(mode), c_(std::move(c)), on_reply_(std::move(on_reply)) {}

  absl::Status Open() {
    if (!stateful()) {
      if (!c_.system.empty()) history_.push_back({.role = "system", .content = c_.system});
      return absl::OkStatus();
    }
    engine::SessionParams sp;
    sp.system_prompt = c_.system;
    auto info = engine_.CreateSession("", sp);
    if (!info.ok()) return info.status();
    session_ = info->id;
    return absl::OkStatus();
  }

  absl::StatusOr<TurnRecord> Turn(int t) override {
    if (t < 0 || t >= static_cast<int>(c_.turns.size())) {
      return absl::InvalidArgumentError(absl::StrCat("conversation ", c_.id, " has no turn ", t));
    }
    const WorkloadTurn& turn = c_.turns[static_cast<size_t>(t)];
    TurnParams p = ReplyParams(engine_, turn.reply_tokens);
    const ChatMessage user{.role = "user", .content = turn.user};
    const Clock::time_point t0 = Clock::now();
    absl::StatusOr<StreamPtr> stream;
    if (stateful()) {
      p.messages.push_back(user);
      stream = engine_.Continue("", session_, std::move(p));
    } else {
      p.messages = history_;
      p.messages.push_back(user);
      stream = engine_.Generate("", std::move(p));
    }
    TurnRecord rec;
    std::string reply;
    if (stream.ok()) {
      rec = ReadReply(*stream, t0, &reply);
    } else {
      rec.error = stream.status().ToString();
    }
    rec.turn = t;
    rec.context_tokens = -1;
    if (!rec.error.empty()) return rec;
    if (stateful()) {
      auto info = engine_.GetSession("", session_);
      if (info.ok()) rec.context_tokens = info->n_tokens;
    } else {
      rec.context_tokens = rec.prompt_tokens + rec.generated_tokens;
      history_.push_back(user);
      history_.push_back({.role = "assistant", .content = reply});
    }
    if (on_reply_) on_reply_(c_.id, t, reply);
    return rec;
  }

  absl::Status End() override {
    if (session_.empty()) return absl::OkStatus();
    absl::Status st = engine_.DeleteSession("", session_);
    session_.clear();
    return st;
  }

  ~EngineConversation() override {
    if (!session_.empty()) engine_.DeleteSession("", session_).IgnoreError();
  }

 private:
  bool stateful() const { return mode_ == BenchMode::kStateful || mode_ == BenchMode::kSpill; }

  Engine& engine_;
  const BenchMode mode_;
  const WorkloadConversation c_;
  const EngineDriverOptions::ReplyHook on_reply_;
  std::vector<ChatMessage> history_;  // stateless modes: every message so far
  std::string session_;               // stateful modes: the live session ("" once ended)
};

// ---- the driver ------------------------------------------------------------------------

class EngineDriver : public Driver {
 public:
  EngineDriver(EngineDriverOptions opts, std::unique_ptr<Engine> engine, std::string owned_dir)
      : opts_(std::move(opts)), engine_(std::move(engine)), owned_dir_(std::move(owned_dir)) {
    start_ = engine_->Stats();
  }

  ~EngineDriver() override {
    engine_.reset();  // stops the loop and its I/O before the directory goes
    if (!owned_dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(owned_dir_, ec);
    }
  }

  std::string name() const override { return "engine"; }

  absl::StatusOr<std::unique_ptr<ConversationClient>> Open(const WorkloadConversation& c) override {
    auto conv = std::make_unique<EngineConversation>(*engine_, opts_.mode, c, opts_.on_reply);
    if (absl::Status st = conv->Open(); !st.ok()) return st;
    return std::unique_ptr<ConversationClient>(std::move(conv));
  }

  ServerCounters Counters() override {
    const EngineStats now = engine_->Stats();
    return {.busy_seconds = now.busy_seconds - start_.busy_seconds,
            .tokens_computed = now.tokens_computed - start_.tokens_computed,
            .tokens_reused = now.tokens_cached - start_.tokens_cached,
            .tokens_generated = now.tokens_generated - start_.tokens_generated,
            .bytes_to_host = now.bytes_to_host - start_.bytes_to_host,
            .bytes_from_host = now.bytes_from_host - start_.bytes_from_host,
            .bytes_to_disk = now.bytes_to_disk - start_.bytes_to_disk,
            .bytes_from_disk = now.bytes_from_disk - start_.bytes_from_disk,
            .spills_to_host = now.spills_to_host - start_.spills_to_host,
            .spills_to_disk = now.spills_to_disk - start_.spills_to_disk,
            .restores_from_host = now.restores_from_host - start_.restores_from_host,
            .restores_from_disk = now.restores_from_disk - start_.restores_from_disk};
  }

  std::optional<TierSample> Tiers() override {
    const EngineStats now = engine_->Stats();
    return TierSample{.device_bytes = now.blocks_in_use * engine_->block_bytes(),
                      .host_bytes = now.host_bytes_used,
                      .disk_bytes = now.disk_bytes_used};
  }

  int64_t kv_bytes_per_token() const override {
    return engine_->block_bytes() / engine_->options().block_tokens;
  }
  int64_t device_budget_bytes() const override {
    return static_cast<int64_t>(engine_->options().kv_budget_bytes);
  }
  int64_t host_budget_bytes() const override {
    return static_cast<int64_t>(engine_->options().host_budget_bytes);
  }

 private:
  const EngineDriverOptions opts_;
  std::unique_ptr<Engine> engine_;
  const std::string owned_dir_;  // a temporary state directory to remove ("" if none)
  EngineStats start_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Driver>> MakeEngineDriver(const engine::Model& model,
                                                         const Workload& w,
                                                         const EngineDriverOptions& opts) {
  engine::EngineOptions eo = opts.engine;
  std::string owned_dir;
  switch (opts.mode) {
    case BenchMode::kStateless:
      eo.prefix_cache = false;
      break;
    case BenchMode::kPrefix:
    case BenchMode::kStateful:
      eo.prefix_cache = true;
      break;
    case BenchMode::kSpill: {
      eo.prefix_cache = true;
      auto budget = SizeSpill(model, w, opts);
      if (!budget.ok()) return budget.status();
      eo.kv_budget_bytes = budget->device_bytes;
      eo.host_budget_bytes = budget->host_bytes;
      eo.state_dir = opts.state_dir;
      if (eo.state_dir.empty()) {
        auto dir = MakeStateDir();
        if (!dir.ok()) return dir.status();
        eo.state_dir = owned_dir = *dir;
      }
      // Writes are spills only: nothing is written behind after each turn.
      eo.durability = engine::Durability::kNone;
      break;
    }
  }
  auto engine = Engine::Create(model, eo);
  if (!engine.ok()) {
    if (!owned_dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(owned_dir, ec);
    }
    return engine.status();
  }
  return std::unique_ptr<Driver>(
      std::make_unique<EngineDriver>(opts, std::move(*engine), std::move(owned_dir)));
}

}  // namespace mnemo::bench
