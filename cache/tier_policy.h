// The tier manager's victim choice (DESIGN.md 4), as pure logic with no state: given the
// idle sessions a tier holds, its usage, its budget and its watermarks, which sessions to
// demote to the next tier down, in order.
//
//   0 ............ low ........ high ....... budget      (bytes; low/high = fraction x budget)
//                   ^ target      ^ trigger
//
// Nothing is chosen while used_bytes <= high. Above it, victims are taken in policy order
// until used_bytes - (their bytes) <= low. Busy and pinned sessions are never chosen, nor
// sessions that hold no bytes in the tier (demoting them frees nothing). When the eligible
// sessions cannot bring usage down to low, all of them are chosen and the plan says so.
//
// Policies (an ordering over eligible candidates, within each priority; lower priorities go
// first):
//   kLru        oldest idle first; ties by id (bytewise).
//   kCostAware  highest score first, ties by idle time (older first), then id, where
//
//                            bytes_held x idle_seconds
//     score = --------------------------------------------------------------
//             tokens x min(reload_seconds_per_token, recompute_seconds_per_token)
//
//   Why: this is GreedyDual-Size with aging. Demoting a session frees bytes_held now; what
//   it costs is paid only if the session comes back, and then it costs bringing its tokens
//   back from where demotion put it (reload), or recomputing them when that is cheaper
//   (the engine may always prefill instead). Idle time stands in for the chance it does not
//   come back soon. So the score is "bytes freed per second of expected penalty", and the
//   tier prefers big, long-idle sessions that are cheap to bring back. A session whose
//   penalty is zero (no tokens, or free reload) scores +infinity: it goes first. With equal
//   per-token costs and bytes proportional to tokens, the score is proportional to idle
//   time and the policy is LRU; it differs where sessions share prefix blocks (fewer bytes
//   held for the same tokens), where a lower-tier copy already exists (cheap reload), or
//   where a session is small enough that recompute is nearly free.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cache/session.h"
#include "kernels/attention.h"

namespace mnemo::cache {

enum class TierPolicy { kLru, kCostAware };

// One idle session that a tier holds, as the tier manager sees it.
struct TierCandidate {
  SessionId id;
  uint64_t bytes_held = 0;  // bytes its demotion frees in this tier (blocks only it holds)
  absl::Duration idle = absl::ZeroDuration();  // since its last use
  int64_t tokens = 0;                          // tokens whose KV must come back if it is used again
  // Per-token cost of bringing it back from where demotion puts it, and of recomputing it
  // (TierCostModel gives both). Seconds per token, >= 0.
  double reload_seconds_per_token = 0;
  double recompute_seconds_per_token = 0;
  bool busy = false;    // a request runs or waits on it: never demoted
  bool pinned = false;  // a retention pin holds it in this tier: never demoted
  int priority = 0;     // lower priorities are demoted first, whatever the policy says
};

struct TierUsage {
  uint64_t used_bytes = 0;
  uint64_t budget_bytes = 0;
  double high_watermark = 0.9;  // fraction of budget_bytes that triggers demotion
  double low_watermark = 0.7;   // fraction of budget_bytes that demotion brings usage to
};

struct DemotionPlan {
  std::vector<SessionId> victims;  // in the order to demote them
  uint64_t bytes_freed = 0;        // exact sum of the victims' bytes_held
  // Whether used_bytes - bytes_freed <= the low watermark (true when nothing was needed).
  bool reaches_low_watermark = true;
};

// The high and low watermarks in bytes: floor(fraction x budget_bytes).
uint64_t HighWatermarkBytes(const TierUsage& usage);
uint64_t LowWatermarkBytes(const TierUsage& usage);

// The cost-aware score above (+infinity when the penalty is zero). Exposed for tests and
// for the tier manager's metrics.
double CostAwareScore(const TierCandidate& c);

// InvalidArgument: watermarks outside 0 <= low <= high <= 1 (or NaN), a negative or NaN
// per-token cost, negative tokens, or two candidates with the same id.
absl::StatusOr<DemotionPlan> ChooseDemotions(TierPolicy policy, const TierUsage& usage,
                                             const std::vector<TierCandidate>& candidates);

// Per-token restore and recompute costs from DESIGN.md 8:
//   reload    = KV bytes per token / tier bandwidth          (seconds per token)
//   recompute = 2 x parameters / compute rate                (seconds per token)
// Every number is an input: benchmarks measure bandwidths and compute rate on the machine
// (bench/, docs/performance.md); the defaults are order-of-magnitude placeholders for a
// CPU host until they do.
struct TierCostModel {
  double kv_bytes_per_token = 0;                                // KvBytesPerToken(layout)
  double parameters = 0;                                        // the model's parameter count
  double reload_bytes_per_second = kDefaultDiskBytesPerSecond;  // of the tier reloaded from
  double compute_flops_per_second = kDefaultCpuFlopsPerSecond;

  static constexpr double kDefaultHostBytesPerSecond = 10e9;  // memcpy / PCIe-class
  static constexpr double kDefaultDiskBytesPerSecond = 2e9;   // NVMe sequential read
  static constexpr double kDefaultCpuFlopsPerSecond = 1e11;   // a few cores' f32 GEMM

  // +infinity when the rate is not positive (the tier cannot bring it back).
  double ReloadSecondsPerToken() const;
  double RecomputeSecondsPerToken() const;
};

// Bytes of K and V one token occupies in a layout: block_bytes / block_tokens.
double KvBytesPerToken(const kernels::KvLayout& layout);

}  // namespace mnemo::cache
