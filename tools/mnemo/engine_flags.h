// The engine flags that `mnemo chat` and `mnemo serve` share: memory budgets of the tiers,
// the state directory and the durability mode.
#pragma once

#include "absl/status/status.h"
#include "engine/engine.h"
#include "tools/mnemo/cli.h"

namespace mnemo::cli {

// Reads, where given: the byte sizes --kv-budget / --device-budget (the device tier),
// --host-budget, --disk-budget, --tenant-host-quota, --tenant-disk-quota; --state-dir; and
// --durability async|sync|none (which needs --state-dir). A command declares the flags it
// offers; absent ones keep `eo`'s values. InvalidArgument naming the flag otherwise.
absl::Status ApplyEngineFlags(const ParsedArgs& args, engine::EngineOptions* eo);

}  // namespace mnemo::cli
