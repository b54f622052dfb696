// The engine flags that `mnemo chat`, `mnemo serve` and `mnemo bench` share: memory budgets
// of the tiers, the state directory, the durability mode and context compaction.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "cache/compaction.h"
#include "engine/engine.h"
#include "tools/mnemo/cli.h"

namespace mnemo::cli {

// Reads, where given: the byte sizes --kv-budget / --device-budget (the device tier),
// --host-budget, --disk-budget, --tenant-host-quota, --tenant-disk-quota; --state-dir;
// --durability async|sync|none (which needs --state-dir); and the compaction flags below
// (ApplyCompactionFlags). A command declares the flags it offers; absent ones keep `eo`'s
// values. InvalidArgument naming the flag otherwise.
absl::Status ApplyEngineFlags(const ParsedArgs& args, engine::EngineOptions* eo);

// The sessions' default context compaction (cache/compaction.h, docs/compaction.md):
// --compaction none|window|score|summarize, --compaction-sinks N, --compaction-trigger F (a
// fraction of the context length), --compaction-trigger-tokens N, --compaction-target F,
// --compaction-max-session-bytes BYTES, --compaction-observe N (score: the observation
// window), --compaction-summary-prompt TEXT and --compaction-summary-tokens N (summarize).
std::vector<FlagSpec> CompactionFlagSpecs();

// Applies the compaction flags that are given over `o`. InvalidArgument naming the flag for
// a value that does not parse or is out of range (the ranges of ValidateCompactionOptions).
absl::Status ApplyCompactionFlags(const ParsedArgs& args, cache::CompactionOptions* o);

}  // namespace mnemo::cli
