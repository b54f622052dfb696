#include "tools/mnemo/sampling_flags.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>

namespace mnemo::cli {

std::vector<FlagSpec> SamplingFlagSpecs() {
  return {{"temperature", true, "T", "sampling temperature, 0 = greedy (default 0.8)"},
          {"top-k", true, "K", "keep the K most likely tokens, 0 = off (default 40)"},
          {"top-p", true, "P", "nucleus sampling mass, 1 = off (default 0.95)"},
          {"min-p", true, "P", "drop tokens below P x the best one (default 0.05)"},
          {"seed", true, "S", "sampling seed (default: random)"}};
}

std::vector<FlagSpec> JoinFlags(std::initializer_list<std::vector<FlagSpec>> groups) {
  std::vector<FlagSpec> out;
  for (const std::vector<FlagSpec>& g : groups) out.insert(out.end(), g.begin(), g.end());
  return out;
}

absl::StatusOr<engine::SamplingParams> SamplingFromFlags(const ParsedArgs& args) {
  auto temperature = args.GetDouble("temperature", 0.8);
  auto top_k = args.GetInt("top-k", 40);
  auto top_p = args.GetDouble("top-p", 0.95);
  auto min_p = args.GetDouble("min-p", 0.05);
  auto seed = args.GetInt("seed", -1);
  for (const absl::Status& s :
       {temperature.status(), top_k.status(), top_p.status(), min_p.status(), seed.status()}) {
    if (!s.ok()) return s;
  }
  engine::SamplingParams p;
  p.temperature = static_cast<float>(*temperature);
  // Negative values are left for Validate to name; any k beyond the vocabulary is "off".
  p.top_k = static_cast<int>(std::min<int64_t>(*top_k, std::numeric_limits<int>::max()));
  p.top_p = static_cast<float>(*top_p);
  p.min_p = static_cast<float>(*min_p);
  p.seed = *seed >= 0 ? static_cast<uint64_t>(*seed)
                      : (uint64_t{std::random_device()()} << 32) | std::random_device()();
  return p;
}

}  // namespace mnemo::cli
