// mnemo chat MODEL [--system TEXT] [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]
//            [--min-p P] [--seed S] [--threads N] [--kv-budget BYTES] [--json]
//            [--compaction none|window|score|summarize] [--compaction-* ...]
//
// An interactive conversation on ONE engine session (tenant "local"): every input line is a
// user turn appended to the session, so each turn computes only its new tokens; the rest of
// the history's KV is reused. Replies stream to stdout; per-turn statistics, session ids and
// notices go to stderr (with --json, stdout carries one JSON object per input line instead).
// With --compaction window, score or summarize a turn that would overflow the context compacts
// the history first (docs/compaction.md); /compact does it on demand, with any of the three.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cache/base/strings.h"
#include "cache/compaction.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "nlohmann/json.hpp"
#include "tools/mnemo/cli.h"
#include "tools/mnemo/commands.h"
#include "tools/mnemo/engine_flags.h"
#include "tools/mnemo/sampling_flags.h"

namespace mnemo::cli {
namespace {

using nlohmann::json;

// The chat's own bookkeeping in the session's metadata (resuming needs it).
constexpr char kSystemTurnsKey[] = "mnemo-chat system_turns=";

constexpr std::string_view kTenant = "local";

constexpr const char kCommandHelp[] =
    "commands (anything else is a user message; start it with // to send a leading /):\n"
    "  /fork        fork the session (shares its KV) and continue on the fork\n"
    "  /rewind [N]  drop the last user turn and its reply, or keep only the first N turns\n"
    "  /reset       delete the session and start a fresh one with the same system prompt\n"
    "  /compact [N] [POLICY]\n"
    "               compact the context now to N tokens (default: the compaction target's\n"
    "               share) with POLICY: window (keep the first and the most recent tokens),\n"
    "               score (keep the tokens recent queries attend to most) or summarize (the\n"
    "               model summarizes the oldest turns; the summary is printed); default the\n"
    "               session's policy, else window. Earlier turns can no longer be rewound to\n"
    "  /help        this list\n"
    "  /quit        end the chat (so does end of input)\n";

const CommandSpec& Spec() {
  static const CommandSpec spec = {
      .name = "chat",
      .usage =
          "MODEL [--system TEXT] [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]\n"
          "       [--min-p P] [--seed S] [--threads N] [--kv-budget BYTES] [--json]\n"
          "       [--compaction none|window|score|summarize] [--compaction-* ...]",
      .summary = absl::StrCat(
          "An interactive multi-turn chat on one engine session (tenant \"local\"). Each\n"
          "line read from stdin is a user message; the reply streams to stdout and a line of\n"
          "statistics goes to stderr: prompt tokens reused from the session's KV vs computed,\n"
          "tokens generated, time to first token and decode speed. Models without a chat\n"
          "template get each line as raw tokens (BOS only at the start of the history).\n"
          "--json prints one JSON object per input line instead of the streamed text.\n"
          "With --state-dir the session is saved there (every turn, and at exit) and\n"
          "--session ID resumes it later, in this or another process.\n\n",
          kCommandHelp),
      .flags = JoinFlags(
          {{{"system", true, "TEXT", "the system prompt (needs a chat template)"},
            {"max-tokens", true, "N", "reply tokens per turn at most (default 256)"}},
           SamplingFlagSpecs(),
           {{"threads", true, "N", "CPU threads, 0 = all (default 0)"},
            {"device", true, "DEV", "cpu (default) or cuda[:N]"},
            {"kv-budget", true, "BYTES", "KV cache memory, e.g. 512M or 4G (default 1G)"},
            {"host-budget", true, "BYTES", "host tier for spilled sessions (default 0: none)"},
            {"state-dir", true, "DIR", "keep sessions durable in DIR (created if missing)"},
            {"session", true, "ID", "resume session ID from --state-dir"},
            {"durability", true, "MODE", "async (default), sync or none (with --state-dir)"},
            {"json", false, "", "one JSON object per input line (turns, commands, errors)"}},
           CompactionFlagSpecs()}),
      .min_positionals = 1,
      .max_positionals = 1,
  };
  return spec;
}

void PrintErr(std::string_view msg) {
  std::fprintf(stderr, "mnemo chat: %.*s\n", static_cast<int>(msg.size()), msg.data());
}

int Fail(std::string_view msg, int code) {
  PrintErr(msg);
  return code;
}

struct ChatOptions {
  std::string resume;  // --session
  std::string system_prompt;
  engine::SamplingParams sampling;
  int max_tokens = 256;
  bool json = false;
};

// The conversation: the current session and the commands that act on it. Every method runs
// on the main thread; the engine does the work on its own loop.
class Chat {
 public:
  Chat(engine::Engine& engine, ChatOptions opts)
      : engine_(engine),
        opts_(std::move(opts)),
        raw_tokens_(engine.chat_template().family() == engine::ChatTemplateFamily::kUnknown) {}

  // Creates the first session and announces it.
  absl::Status Start() {
    const bool resumed = !opts_.resume.empty();
    if (resumed) {
      auto info = engine_.GetSession(kTenant, opts_.resume);
      if (!info.ok()) return info.status();
      session_ = info->id;
      // The chat keeps the count of system-prompt turns in the session's metadata.
      auto meta = engine_.GetMetadata(kTenant, session_);
      if (meta.ok() && meta->starts_with(kSystemTurnsKey)) {
        system_turns_ = std::atoi(meta->c_str() + std::strlen(kSystemTurnsKey));
      }
    } else if (absl::Status s = NewSession(); !s.ok()) {
      return s;
    }
    if (opts_.json) {
      Emit({{"event", "session"},
            {"id", session_},
            {"raw_tokens", raw_tokens_},
            {"resumed", resumed}});
    } else {
      Notice(absl::StrCat(resumed ? "resumed session " : "session ", session_, " (tenant local",
                          raw_tokens_ ? "; no chat template: lines are sent as raw tokens" : "",
                          "; /help lists the commands)"));
    }
    return absl::OkStatus();
  }

  // One input line. False when the chat should end (/quit).
  bool Handle(std::string line) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) return true;
    if (line.starts_with("//")) {
      Report(Turn(line.substr(1)));
      return true;
    }
    if (!line.starts_with("/")) {
      Report(Turn(line));
      return true;
    }
    const size_t space = line.find(' ');
    const std::string cmd = line.substr(0, space);
    const std::string arg = space == std::string::npos ? "" : line.substr(space + 1);
    if (cmd == "/quit" || cmd == "/exit") return false;
    if (cmd == "/help") {
      if (opts_.json) {
        Emit({{"event", "help"}, {"text", kCommandHelp}});
      } else {
        std::fprintf(stderr, "%s", kCommandHelp);
      }
    } else if (cmd == "/fork") {
      Report(Fork());
    } else if (cmd == "/rewind") {
      Report(Rewind(arg));
    } else if (cmd == "/reset") {
      Report(Reset());
    } else if (cmd == "/compact") {
      Report(Compact(arg));
    } else {
      Report(absl::InvalidArgumentError(
          absl::StrCat("unknown command ", cmd, " (/help lists them; // sends a leading /)")));
    }
    return true;
  }

  bool failed() const { return failed_; }

 private:
  absl::Status NewSession() {
    engine::SessionParams params;
    params.system_prompt = opts_.system_prompt;
    params.seed = opts_.sampling.seed;  // the session's RNG
    auto info = engine_.CreateSession(kTenant, params);
    if (!info.ok()) return info.status();
    session_ = info->id;
    // The system prompt's own turn (when the template renders it alone) is not a user turn.
    system_turns_ = info->n_turns;
    return engine_.SetMetadata(kTenant, session_, absl::StrCat(kSystemTurnsKey, system_turns_));
  }

  // The user turns of the session (its turns less the system prompt's).
  absl::StatusOr<int64_t> UserTurns() {
    // Nothing is in flight between turns: CreateSession returns with the system prompt
    // prefilled, and each turn is waited for.
    auto info = engine_.GetSession(kTenant, session_);
    if (!info.ok()) return info.status();
    return info->n_turns - system_turns_;
  }

  absl::Status Turn(const std::string& text) {
    auto info = engine_.GetSession(kTenant, session_);
    if (!info.ok()) return info.status();
    engine::TurnParams params;
    params.sampling = opts_.sampling;
    int64_t new_tokens = 0;  // an estimate, for the room left in the context
    if (raw_tokens_) {
      engine::EncodeOptions eo;
      if (info->n_tokens > 0) eo.add_bos = false;  // BOS starts the history only
      params.tokens = engine_.tokenizer().Encode(text, eo);
      if (params.tokens.empty()) return absl::InvalidArgumentError("the line has no tokens");
      new_tokens = static_cast<int64_t>(params.tokens.size());
    } else {
      params.messages.push_back({.role = "user", .content = text});
      // The message rendered alone (with any default system prompt and BOS): at least as
      // long as what the engine appends to a history that is already there.
      auto alone = engine_.chat_template().Render(params.messages, true);
      if (alone.ok()) {
        new_tokens = static_cast<int64_t>(
            engine_.tokenizer().Encode(*alone, {.add_bos = false, .parse_special = true}).size());
      }
    }
    const int64_t ctx = engine_.context_length();
    int64_t room = ctx - info->n_tokens - new_tokens;
    if (info->compaction_policy != cache::CompactionPolicy::kNone) {
      // The engine compacts the history to make room; the turn itself, the sinks and one
      // recent token must still fit with the reply.
      room = ctx - new_tokens - engine_.options().compaction.sink_tokens - 1;
      if (room < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("the message alone fills the context (", ctx, " tokens)"));
      }
    } else if (room < 1) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the conversation fills the context (", info->n_tokens, " of ", ctx,
                       " tokens): /compact, /rewind or /reset to make room"));
    }
    params.stop.max_tokens = static_cast<int>(std::min<int64_t>(opts_.max_tokens, room));

    auto stream = engine_.Continue(kTenant, session_, std::move(params));
    if (!stream.ok()) return stream.status();
    engine::StreamChunk chunk;
    while ((*stream)->Next(&chunk)) {
      if (opts_.json || chunk.text.empty()) continue;
      std::fwrite(chunk.text.data(), 1, chunk.text.size(), stdout);
      std::fflush(stdout);
    }
    const engine::TurnResult& r = (*stream)->Wait();
    if (!opts_.json) {
      std::printf("\n");
      std::fflush(stdout);  // the reply ends before the statistics on a shared terminal
    }
    if (!r.status.ok()) return r.status;

    const engine::Usage& u = r.usage;
    const int64_t computed = u.prompt_tokens - u.cached_tokens;
    const double decode_seconds = r.total_seconds - r.ttft_seconds;
    const double decode_tps = u.completion_tokens > 1 && decode_seconds > 0.0
                                  ? static_cast<double>(u.completion_tokens - 1) / decode_seconds
                                  : 0.0;
    const std::string finish(engine::FinishReasonName(r.finish));
    if (opts_.json) {
      Emit({{"event", "turn"},
            {"id", session_},
            {"turn", r.turn - system_turns_ + 1},
            {"text", r.text},
            {"ids", r.ids},
            {"finish_reason", finish},
            {"usage",
             {{"prompt_tokens", u.prompt_tokens},
              {"cached_tokens", u.cached_tokens},
              {"computed_tokens", computed},
              {"completion_tokens", u.completion_tokens},
              {"compacted_tokens", u.compacted_tokens}}},
            {"ttft", r.ttft_seconds},
            {"seconds", r.total_seconds},
            {"decode_tokens_per_second", decode_tps}});
    } else {
      std::fprintf(stderr,
                   "[prompt %lld tokens: %lld reused, %lld computed; generated %lld (%s); "
                   "ttft %.3f s; decode %.1f tokens/s]\n",
                   static_cast<long long>(u.prompt_tokens), static_cast<long long>(u.cached_tokens),
                   static_cast<long long>(computed), static_cast<long long>(u.completion_tokens),
                   finish.c_str(), r.ttft_seconds, decode_tps);
      if (u.compacted_tokens > 0) {
        Notice(absl::StrCat("the context was compacted before this turn: ", u.compacted_tokens,
                            " history tokens dropped"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Fork() {
    auto info = engine_.Fork(kTenant, session_);
    if (!info.ok()) return info.status();
    const std::string from = std::exchange(session_, info->id);
    if (opts_.json) {
      Emit({{"event", "fork"}, {"id", session_}, {"from", from}});
    } else {
      Notice(absl::StrCat("forked ", from, " into session ", session_, " (now current)"));
    }
    return absl::OkStatus();
  }

  absl::Status Rewind(const std::string& arg) {
    auto turns = UserTurns();
    if (!turns.ok()) return turns.status();
    int64_t keep = *turns - 1;
    if (!arg.empty()) {
      if (!absl::SimpleAtoi(AsAbsl(arg), &keep)) {
        return absl::InvalidArgumentError(
            absl::StrCat("/rewind takes a number of turns to keep, got '", arg, "'"));
      }
    } else if (*turns == 0) {
      return absl::FailedPreconditionError("nothing to rewind: the session has no user turn");
    }
    if (keep < 0 || keep > *turns) {
      return absl::InvalidArgumentError(
          absl::StrCat("/rewind N: N must be in [0, ", *turns, "], got ", keep));
    }
    if (absl::Status s = engine_.Rewind(kTenant, session_, system_turns_ + keep); !s.ok()) {
      return s;
    }
    if (opts_.json) {
      Emit({{"event", "rewind"}, {"id", session_}, {"turns", keep}});
    } else {
      Notice(absl::StrCat("rewound to ", keep, keep == 1 ? " turn" : " turns"));
    }
    return absl::OkStatus();
  }

  // Compacts the session now (`arg`: "[N] [POLICY]", in either order): with POLICY, else its
  // own policy, else the window policy (the user asked for a compaction); keeping N tokens,
  // else the policy's target share.
  absl::Status Compact(const std::string& arg) {
    std::optional<int64_t> keep;
    std::optional<cache::CompactionPolicy> policy;
    for (absl::string_view word : absl::StrSplit(AsAbsl(arg), ' ', absl::SkipEmpty())) {
      int64_t n = 0;
      if (absl::SimpleAtoi(word, &n)) {
        if (keep || n < 1) {
          return absl::InvalidArgumentError(
              absl::StrCat("/compact takes one number of tokens to keep (>= 1), got '", arg, "'"));
        }
        keep = n;
        continue;
      }
      auto p = cache::ParseCompactionPolicy(AsStd(word));
      if (!p.ok() || *p == cache::CompactionPolicy::kNone || policy) {
        return absl::InvalidArgumentError(
            absl::StrCat("/compact [N] [POLICY]: N a number of tokens to keep (>= 1), POLICY "
                         "window, score or summarize; got '",
                         arg, "'"));
      }
      policy = *p;
    }
    auto before = engine_.GetSession(kTenant, session_);
    if (!before.ok()) return before.status();
    if (!policy && before->compaction_policy == cache::CompactionPolicy::kNone) {
      policy = cache::CompactionPolicy::kWindow;
    }
    auto after = engine_.Compact(kTenant, session_, policy, keep);
    if (!after.ok()) return after.status();
    if (after->compaction_log.empty()) {
      return absl::InternalError("the compaction left no entry in the session's log");
    }
    const cache::CompactionRecord& done = after->compaction_log.back();
    int64_t summarized = 0;
    for (const cache::TokenRange& r : done.summarized) summarized += r.size();
    const int64_t shrunk = before->n_tokens - after->n_tokens;
    if (opts_.json) {
      json event = {{"event", "compact"},
                    {"id", session_},
                    {"policy", done.policy},
                    {"tokens_before", before->n_tokens},
                    {"tokens_after", after->n_tokens},
                    {"dropped_tokens", shrunk},
                    {"summarized_tokens", summarized},
                    {"compactions", after->compactions},
                    {"compacted_tokens", after->compacted_tokens},
                    {"rewind_floor", std::max<int64_t>(after->rewind_floor - system_turns_, 0)}};
      if (!done.summarized.empty()) event["summary"] = done.summary;
      Emit(event);
    } else {
      const std::string what =
          done.summarized.empty()
              ? absl::StrCat(shrunk, " dropped")
              : absl::StrCat(summarized, " summarized into ", summarized - shrunk);
      Notice(absl::StrCat("compacted ", before->n_tokens, " -> ", after->n_tokens, " tokens (",
                          done.policy, ": ", what, "; ", after->compactions,
                          after->compactions == 1 ? " compaction" : " compactions", ", ",
                          after->compacted_tokens, " tokens compacted so far)"));
      if (!done.summarized.empty()) {
        Notice(absl::StrCat("summary: ", done.summary.empty() ? "(empty)" : done.summary));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Reset() {
    const std::string old = session_;
    if (absl::Status s = engine_.DeleteSession(kTenant, old); !s.ok()) return s;
    if (absl::Status s = NewSession(); !s.ok()) return s;
    if (opts_.json) {
      Emit({{"event", "reset"}, {"id", session_}, {"from", old}});
    } else {
      Notice(absl::StrCat("deleted ", old, "; new session ", session_));
    }
    return absl::OkStatus();
  }

  void Report(const absl::Status& s) {
    if (s.ok()) return;
    failed_ = true;
    PrintErr(AsStd(s.message()));
    if (opts_.json) Emit({{"event", "error"}, {"message", std::string(AsStd(s.message()))}});
  }

  void Emit(const json& j) {
    std::printf("%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    std::fflush(stdout);
  }

  void Notice(const std::string& text) { PrintErr(text); }

  engine::Engine& engine_;
  const ChatOptions opts_;
  const bool raw_tokens_;     // the model has no chat template mnemo renders
  std::string session_;       // the current session's id
  int64_t system_turns_ = 0;  // the session's turns before the first user turn
  bool failed_ = false;       // a turn or command failed
};

}  // namespace

int RunChat(const std::vector<std::string>& args) {
  auto parsed = Parse(Spec(), args);
  if (!parsed.ok()) return Fail(AsStd(parsed.status().message()), 2);
  if (parsed->Has("help")) {
    std::printf("%s", HelpText(Spec()).c_str());
    return 0;
  }
  ChatOptions opts;
  opts.system_prompt = parsed->Get("system").value_or("");
  opts.json = parsed->Has("json");
  auto max_tokens = parsed->GetInt("max-tokens", 256);
  auto sampling = SamplingFromFlags(*parsed);
  auto threads = parsed->GetInt("threads", 0);
  for (const absl::Status& s : {max_tokens.status(), sampling.status(), threads.status()}) {
    if (!s.ok()) return Fail(AsStd(s.message()), 2);
  }
  engine::EngineOptions eo;
  if (absl::Status st = ApplyEngineFlags(*parsed, &eo); !st.ok())
    return Fail(AsStd(st.message()), 2);
  opts.resume = parsed->Get("session").value_or("");
  if (!opts.resume.empty() && eo.state_dir.empty()) {
    return Fail("--session needs --state-dir (the directory the session was saved in)", 2);
  }
  if (*max_tokens < 1 || *max_tokens > std::numeric_limits<int>::max()) {
    return Fail("--max-tokens must be >= 1", 2);
  }
  if (*threads < 0 || *threads > 4096) return Fail("--threads must be in [0, 4096]", 2);
  opts.max_tokens = static_cast<int>(*max_tokens);
  opts.sampling = *sampling;

  auto model = engine::Model::Open(parsed->positionals()[0]);
  if (!model.ok()) return Fail(AsStd(model.status().message()), 1);
  if (absl::Status s = opts.sampling.Validate((*model)->config().vocab_size); !s.ok()) {
    return Fail(AsStd(s.message()), 2);
  }
  eo.threads = static_cast<int>(*threads);
  auto engine = engine::Engine::Create(**model, eo);
  if (!engine.ok()) return Fail(AsStd(engine.status().message()), 1);
  for (const auto& list : {(*engine)->recovery().quarantined, (*engine)->recovery().skipped,
                           (*engine)->recovery().refused}) {
    for (const std::string& problem : list) PrintErr(absl::StrCat("state directory: ", problem));
  }

  Chat chat(**engine, std::move(opts));
  if (absl::Status s = chat.Start(); !s.ok()) return Fail(AsStd(s.message()), 1);
  const bool prompt = isatty(STDIN_FILENO) != 0;
  std::string line;
  for (;;) {
    if (prompt) std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line)) {
      if (prompt) std::fprintf(stderr, "\n");  // the shell's prompt starts on a new line
      break;
    }
    if (!chat.Handle(line)) break;
  }
  if (!eo.state_dir.empty()) {
    const engine::ShutdownReport r = (*engine)->Shutdown();
    for (const std::string& e : r.errors) PrintErr(absl::StrCat("not saved: ", e));
    if (r.failed > 0 || r.timed_out > 0) return 1;
  }
  return chat.failed() ? 1 : 0;
}

}  // namespace mnemo::cli
