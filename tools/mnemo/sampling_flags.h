// The sampling flags that `mnemo generate` and `mnemo chat` share, with one set of
// defaults: --temperature 0.8, --top-k 40, --top-p 0.95, --min-p 0.05, --seed (random).
#pragma once

#include <initializer_list>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/sampling.h"
#include "tools/mnemo/cli.h"

namespace mnemo::cli {

// --temperature T, --top-k K, --top-p P, --min-p P, --seed S.
std::vector<FlagSpec> SamplingFlagSpecs();

// The flag lists joined in order (a command's own flags around a shared group).
std::vector<FlagSpec> JoinFlags(std::initializer_list<std::vector<FlagSpec>> groups);

// SamplingParams from the flags above: the defaults where absent, a random seed without
// --seed. InvalidArgument naming a flag whose value does not parse; ranges are left to
// SamplingParams::Validate.
absl::StatusOr<engine::SamplingParams> SamplingFromFlags(const ParsedArgs& args);

}  // namespace mnemo::cli
