#include "cache/tier_policy.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace mnemo::cache {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

uint64_t FractionOf(double fraction, uint64_t bytes) {
  // long double keeps budgets up to 2^64 exact enough that 1.0 x budget == budget.
  return static_cast<uint64_t>(std::floor(static_cast<long double>(fraction) * bytes));
}

bool ValidCost(double c) { return !std::isnan(c) && c >= 0; }

// Older idle first, then smaller id: the order both policies fall back to.
bool OlderThenId(const TierCandidate& a, const TierCandidate& b) {
  if (a.idle != b.idle) return a.idle > b.idle;
  return a.id.bytes < b.id.bytes;
}

}  // namespace

uint64_t HighWatermarkBytes(const TierUsage& usage) {
  return FractionOf(usage.high_watermark, usage.budget_bytes);
}

uint64_t LowWatermarkBytes(const TierUsage& usage) {
  return FractionOf(usage.low_watermark, usage.budget_bytes);
}

double CostAwareScore(const TierCandidate& c) {
  const double per_token = std::min(c.reload_seconds_per_token, c.recompute_seconds_per_token);
  if (c.tokens == 0 || per_token == 0) return kInf;  // (0 x inf would be NaN)
  const double gain = static_cast<double>(c.bytes_held) * absl::ToDoubleSeconds(c.idle);
  return gain / (static_cast<double>(c.tokens) * per_token);
}

absl::StatusOr<DemotionPlan> ChooseDemotions(TierPolicy policy, const TierUsage& usage,
                                             const std::vector<TierCandidate>& candidates) {
  const double lo = usage.low_watermark;
  const double hi = usage.high_watermark;
  if (!(lo >= 0 && lo <= hi && hi <= 1)) {  // also false for NaN
    return absl::InvalidArgumentError(absl::StrCat(
        "tier watermarks must satisfy 0 <= low <= high <= 1, not low ", lo, ", high ", hi));
  }
  absl::flat_hash_set<SessionId> seen;
  std::vector<const TierCandidate*> eligible;
  for (const TierCandidate& c : candidates) {
    if (!seen.insert(c.id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tier candidate ", c.id.ToString(), " is listed twice"));
    }
    if (c.tokens < 0 || !ValidCost(c.reload_seconds_per_token) ||
        !ValidCost(c.recompute_seconds_per_token)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tier candidate ", c.id.ToString(), " has negative tokens or a bad per-token cost"));
    }
    if (c.busy || c.pinned || c.bytes_held == 0) continue;
    eligible.push_back(&c);
  }

  DemotionPlan plan;
  if (usage.used_bytes <= HighWatermarkBytes(usage)) return plan;
  const uint64_t low = LowWatermarkBytes(usage);

  switch (policy) {
    case TierPolicy::kLru:
      std::sort(eligible.begin(), eligible.end(),
                [](const TierCandidate* a, const TierCandidate* b) { return OlderThenId(*a, *b); });
      break;
    case TierPolicy::kCostAware: {
      // Scores computed once (a comparator that recomputes doubles could be inconsistent).
      std::vector<std::pair<double, const TierCandidate*>> scored;
      scored.reserve(eligible.size());
      for (const TierCandidate* c : eligible) scored.emplace_back(CostAwareScore(*c), c);
      std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) {
        if (a.first != b.first) return a.first > b.first;
        return OlderThenId(*a.second, *b.second);
      });
      for (size_t i = 0; i < scored.size(); ++i) eligible[i] = scored[i].second;
      break;
    }
  }

  std::stable_sort(
      eligible.begin(), eligible.end(),
      [](const TierCandidate* a, const TierCandidate* b) { return a->priority < b->priority; });
  uint64_t used = usage.used_bytes;
  for (const TierCandidate* c : eligible) {
    if (used <= low) break;
    plan.victims.push_back(c->id);
    // bytes_held is clamped so that a caller's over-count cannot wrap the usage around.
    const uint64_t freed = std::min(c->bytes_held, used);
    plan.bytes_freed += c->bytes_held;
    used -= freed;
  }
  plan.reaches_low_watermark = used <= low;
  return plan;
}

double TierCostModel::ReloadSecondsPerToken() const {
  if (!(reload_bytes_per_second > 0)) return kInf;
  return kv_bytes_per_token / reload_bytes_per_second;
}

double TierCostModel::RecomputeSecondsPerToken() const {
  if (!(compute_flops_per_second > 0)) return kInf;
  return 2.0 * parameters / compute_flops_per_second;
}

double KvBytesPerToken(const kernels::KvLayout& layout) {
  return static_cast<double>(layout.block_bytes()) / layout.block_tokens;
}

}  // namespace mnemo::cache
