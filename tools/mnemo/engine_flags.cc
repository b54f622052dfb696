#include "tools/mnemo/engine_flags.h"

#include <cstdint>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace mnemo::cli {

std::vector<FlagSpec> CompactionFlagSpecs() {
  return {
      {"compaction", true, "POLICY",
       "sessions' context compaction: none (default: a full context refuses the turn), "
       "window (keep the first and the most recent tokens), score (keep the tokens recent "
       "queries attend to most) or summarize (the model summarizes the oldest turns)"},
      {"compaction-sinks", true, "N", "window and score: the first tokens always kept (default 4)"},
      {"compaction-trigger", true, "F",
       "compact once a turn passes F x the context length, 0 < F <= 1 (default 1)"},
      {"compaction-trigger-tokens", true, "N",
       "compact once a turn passes N tokens (default 0: off)"},
      {"compaction-target", true, "F",
       "keep F of the limit that triggered, 0 < F < 1 (default 0.5)"},
      {"compaction-max-session-bytes", true, "BYTES",
       "compact once a session's KV passes BYTES (default 0: off)"},
      {"compaction-observe", true, "N",
       "score: the last N tokens, whose queries score the others (default 32)"},
      {"compaction-summary-prompt", true, "TEXT",
       "summarize: the instruction the model is given to write the summary"},
      {"compaction-summary-tokens", true, "N",
       "summarize: the longest summary, in tokens (default 256)"},
      {"compaction-keep-history", false, "",
       "keep the state before each compaction on the lowest tier, so that a rewind can go "
       "back past it"}};
}

absl::Status ApplyCompactionFlags(const ParsedArgs& args, cache::CompactionOptions* o) {
  if (auto policy = args.Get("compaction")) {
    auto p = cache::ParseCompactionPolicy(*policy);
    if (!p.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--compaction must be none, window, score or summarize, got \"", *policy, "\""));
    }
    o->policy = *p;
  }
  // Token counts: at least `min` (and at most 2^40).
  struct TokenFlag {
    const char* name;
    int64_t min;
    int64_t* into;
  };
  for (const TokenFlag& t : {TokenFlag{"compaction-sinks", 0, &o->sink_tokens},
                             TokenFlag{"compaction-trigger-tokens", 0, &o->trigger_tokens},
                             TokenFlag{"compaction-observe", 1, &o->observe_tokens},
                             TokenFlag{"compaction-summary-tokens", 1, &o->summary_max_tokens}}) {
    if (!args.Has(t.name)) continue;
    auto v = args.GetInt(t.name, 0);
    if (!v.ok()) return v.status();
    if (*v < t.min || *v > (int64_t{1} << 40)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", t.name, " must be >= ", t.min, ", got ", *v));
    }
    *t.into = *v;
  }
  if (args.Has("compaction-keep-history")) o->keep_history = true;
  if (auto prompt = args.Get("compaction-summary-prompt")) {
    if (prompt->empty()) {
      return absl::InvalidArgumentError("--compaction-summary-prompt must not be empty");
    }
    o->summary_prompt = *prompt;
  }
  if (auto text = args.Get("compaction-max-session-bytes")) {
    auto bytes = ParseByteSize(*text);
    if (!bytes.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--compaction-max-session-bytes: ", bytes.status().message()));
    }
    if (*bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat("--compaction-max-session-bytes: too large: '", *text, "'"));
    }
    o->max_session_bytes = static_cast<int64_t>(*bytes);
  }
  if (args.Has("compaction-trigger")) {
    auto f = args.GetDouble("compaction-trigger", 1.0);
    if (!f.ok()) return f.status();
    if (!(*f > 0.0 && *f <= 1.0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--compaction-trigger must be in (0, 1], got ", *f));
    }
    o->trigger_fraction = *f;
  }
  if (args.Has("compaction-target")) {
    auto f = args.GetDouble("compaction-target", 0.5);
    if (!f.ok()) return f.status();
    if (!(*f > 0.0 && *f < 1.0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--compaction-target must be in (0, 1), got ", *f));
    }
    o->target_fraction = *f;
  }
  // The checks above cover every field; this keeps the flags and the engine in step.
  if (absl::Status st = cache::ValidateCompactionOptions(*o); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--compaction*: ", st.message()));
  }
  return absl::OkStatus();
}

absl::Status ApplyEngineFlags(const ParsedArgs& args, engine::EngineOptions* eo) {
  for (auto [flag, into] : {std::pair{"kv-budget", &eo->kv_budget_bytes},
                            std::pair{"device-budget", &eo->kv_budget_bytes},
                            std::pair{"host-budget", &eo->host_budget_bytes},
                            std::pair{"disk-budget", &eo->disk_budget_bytes},
                            std::pair{"tenant-host-quota", &eo->tenant_host_quota_bytes},
                            std::pair{"tenant-disk-quota", &eo->tenant_disk_quota_bytes}}) {
    if (auto text = args.Get(flag)) {
      auto bytes = ParseByteSize(*text);
      if (!bytes.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", bytes.status().message()));
      }
      *into = *bytes;
    }
  }
  // On a GPU the device budget is the whole device allocation (weights, scratch, KV).
  eo->device_budget_bytes = args.Has("device-budget") ? eo->kv_budget_bytes : 0;
  if (auto dir = args.Get("state-dir")) eo->state_dir = *dir;
  if (auto device = args.Get("device")) {
    auto d = engine::Device::Parse(*device);
    if (!d.ok()) return absl::InvalidArgumentError(absl::StrCat("--", d.status().message()));
    eo->device = *d;
  }
  if (auto mode = args.Get("durability")) {
    if (eo->state_dir.empty()) return absl::InvalidArgumentError("--durability needs --state-dir");
    if (*mode == "async") {
      eo->durability = engine::Durability::kAsync;
    } else if (*mode == "sync") {
      eo->durability = engine::Durability::kSync;
    } else if (*mode == "none") {
      eo->durability = engine::Durability::kNone;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--durability must be async, sync or none, got \"", *mode, "\""));
    }
  }
  return ApplyCompactionFlags(args, &eo->compaction);
}

}  // namespace mnemo::cli
