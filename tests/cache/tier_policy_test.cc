#include "cache/tier_policy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/cache/cache_test_util.h"

namespace mnemo::cache {
namespace {

SessionId Sid(uint8_t n) {
  SessionId id;
  id.bytes[15] = n;
  return id;
}

TierCandidate Cand(uint8_t n, uint64_t bytes, int64_t idle_s, int64_t tokens = 100,
                   double reload = 1e-3, double recompute = 1e-2) {
  TierCandidate c;
  c.id = Sid(n);
  c.bytes_held = bytes;
  c.idle = absl::Seconds(idle_s);
  c.tokens = tokens;
  c.reload_seconds_per_token = reload;
  c.recompute_seconds_per_token = recompute;
  return c;
}

TierUsage Usage(uint64_t used, uint64_t budget, double high, double low) {
  return TierUsage{
      .used_bytes = used, .budget_bytes = budget, .high_watermark = high, .low_watermark = low};
}

std::vector<SessionId> Ids(std::initializer_list<uint8_t> ns) {
  std::vector<SessionId> v;
  for (uint8_t n : ns) v.push_back(Sid(n));
  return v;
}

DemotionPlan Choose(TierPolicy p, const TierUsage& u, const std::vector<TierCandidate>& c) {
  absl::StatusOr<DemotionPlan> plan = ChooseDemotions(p, u, c);
  EXPECT_TRUE(plan.ok()) << plan.status();
  return plan.ok() ? *plan : DemotionPlan{};
}

constexpr TierPolicy kBoth[] = {TierPolicy::kLru, TierPolicy::kCostAware};

TEST(TierPolicyTest, WatermarksInBytes) {
  const TierUsage u = Usage(0, 1000, 0.9, 0.5);
  EXPECT_EQ(HighWatermarkBytes(u), 900u);
  EXPECT_EQ(LowWatermarkBytes(u), 500u);
  const uint64_t big = std::numeric_limits<uint64_t>::max() - 7;
  EXPECT_EQ(HighWatermarkBytes(Usage(0, big, 1.0, 0.0)), big);
  EXPECT_EQ(LowWatermarkBytes(Usage(0, big, 1.0, 0.0)), 0u);
}

TEST(TierPolicyTest, NothingChosenAtOrBelowTheHighWatermark) {
  const std::vector<TierCandidate> c = {Cand(1, 400, 30), Cand(2, 400, 20)};
  for (TierPolicy p : kBoth) {
    for (uint64_t used : {0u, 500u, 899u, 900u}) {
      const DemotionPlan plan = Choose(p, Usage(used, 1000, 0.9, 0.5), c);
      EXPECT_TRUE(plan.victims.empty()) << used;
      EXPECT_EQ(plan.bytes_freed, 0u);
      EXPECT_TRUE(plan.reaches_low_watermark);
    }
    // One byte over: demotion runs, down to the low watermark (901 - 400 = 501 <= 550).
    const DemotionPlan plan = Choose(p, Usage(901, 1000, 0.9, 0.55), c);
    EXPECT_EQ(plan.victims, Ids({1}));
    EXPECT_EQ(plan.bytes_freed, 400u);
    EXPECT_TRUE(plan.reaches_low_watermark);
  }
}

TEST(TierPolicyTest, ChosenUntilUnderTheLowWatermark) {
  // used 1000, low 500: after 1 and 2 usage is 600 (> 500), after 3 it is 400.
  const std::vector<TierCandidate> c = {Cand(4, 200, 5), Cand(2, 200, 20), Cand(1, 200, 30),
                                        Cand(3, 200, 10)};
  for (TierPolicy p : kBoth) {
    const DemotionPlan plan = Choose(p, Usage(1000, 1000, 0.9, 0.5), c);
    EXPECT_EQ(plan.victims, Ids({1, 2, 3}));
    EXPECT_EQ(plan.bytes_freed, 600u);
    EXPECT_TRUE(plan.reaches_low_watermark);
  }
  // Landing exactly on the low watermark is enough: 1000 - 500 = 500.
  const std::vector<TierCandidate> exact = {Cand(1, 250, 30), Cand(2, 250, 20), Cand(3, 250, 10)};
  for (TierPolicy p : kBoth) {
    const DemotionPlan plan = Choose(p, Usage(1000, 1000, 0.9, 0.5), exact);
    EXPECT_EQ(plan.victims, Ids({1, 2}));
    EXPECT_EQ(plan.bytes_freed, 500u);
  }
}

TEST(TierPolicyTest, BusyPinnedAndEmptySessionsAreNeverChosen) {
  std::vector<TierCandidate> c = {Cand(1, 300, 100), Cand(2, 300, 90), Cand(3, 0, 80),
                                  Cand(4, 100, 1)};
  c[0].busy = true;
  c[1].pinned = true;
  for (TierPolicy p : kBoth) {
    // Even when the target cannot be reached without them.
    const DemotionPlan plan = Choose(p, Usage(1000, 1000, 0.9, 0.1), c);
    EXPECT_EQ(plan.victims, Ids({4}));
    EXPECT_EQ(plan.bytes_freed, 100u);
    EXPECT_FALSE(plan.reaches_low_watermark);
  }
  c[1].pinned = false;
  c[1].busy = true;
  for (TierPolicy p : kBoth) {
    EXPECT_EQ(Choose(p, Usage(1000, 1000, 0.9, 0.1), c).victims, Ids({4}));
  }
}

TEST(TierPolicyTest, LruAndCostAwareDisagreeWhereCostsDiffer) {
  // 1: oldest, but small and slow to bring back (disk reload 1 s/token, recompute 0.5):
  //    score = 100 x 200 / (100 x 0.5) = 400.
  // 2: 100 bytes, idle 100 s, reload 1 ms/token: 100 x 100 / (100 x 1e-3) = 1e5.
  // 3: big (a private copy of every block), idle 50 s: 1000 x 50 / 0.1 = 5e5.
  // 4: newest, but already has a copy below (reload 1 us/token): 100 x 10 / 1e-4 = 1e7.
  const std::vector<TierCandidate> c = {Cand(1, 100, 200, 100, 1.0, 0.5),
                                        Cand(2, 100, 100, 100, 1e-3), Cand(3, 1000, 50, 100, 1e-3),
                                        Cand(4, 100, 10, 100, 1e-6)};
  EXPECT_DOUBLE_EQ(CostAwareScore(c[0]), 400);
  EXPECT_DOUBLE_EQ(CostAwareScore(c[1]), 1e5);
  EXPECT_DOUBLE_EQ(CostAwareScore(c[2]), 5e5);
  EXPECT_DOUBLE_EQ(CostAwareScore(c[3]), 1e7);
  const TierUsage all = Usage(1300, 1300, 0.9, 0.0);  // everything must go: the full order
  EXPECT_EQ(Choose(TierPolicy::kLru, all, c).victims, Ids({1, 2, 3, 4}));
  EXPECT_EQ(Choose(TierPolicy::kCostAware, all, c).victims, Ids({4, 3, 2, 1}));
  // Needing 1000 bytes back (low 300 of 1300): LRU takes 1, 2, 3 (1200 bytes); cost-aware
  // takes 4 and 3 (1100 bytes) and leaves the expensive oldest session alone.
  const TierUsage some = Usage(1300, 1300, 0.9, 300.0 / 1300);
  const DemotionPlan lru = Choose(TierPolicy::kLru, some, c);
  EXPECT_EQ(lru.victims, Ids({1, 2, 3}));
  EXPECT_EQ(lru.bytes_freed, 1200u);
  const DemotionPlan cost = Choose(TierPolicy::kCostAware, some, c);
  EXPECT_EQ(cost.victims, Ids({4, 3}));
  EXPECT_EQ(cost.bytes_freed, 1100u);
}

TEST(TierPolicyTest, CostAwareCapsReloadAtRecomputeAndPutsFreeSessionsFirst) {
  // Reload slower than recompute: the engine would recompute, so recompute is the penalty.
  EXPECT_DOUBLE_EQ(CostAwareScore(Cand(1, 100, 10, 10, 5.0, 0.5)),
                   CostAwareScore(Cand(1, 100, 10, 10, 0.5, 5.0)));
  // No lower copy at all (reload impossible): recompute alone.
  EXPECT_DOUBLE_EQ(
      CostAwareScore(Cand(1, 100, 10, 10, std::numeric_limits<double>::infinity(), 0.5)), 200);
  EXPECT_TRUE(std::isinf(CostAwareScore(Cand(1, 100, 10, 0))));           // no tokens
  EXPECT_TRUE(std::isinf(CostAwareScore(Cand(1, 100, 10, 10, 0.0, 1))));  // free reload
  EXPECT_EQ(CostAwareScore(Cand(1, 100, 0, 10)), 0);                      // just used
  const std::vector<TierCandidate> c = {Cand(1, 100, 1000), Cand(2, 100, 1, 0)};
  EXPECT_EQ(Choose(TierPolicy::kCostAware, Usage(200, 200, 0.5, 0.0), c).victims, Ids({2, 1}));
}

TEST(TierPolicyTest, TiesBreakByIdleTimeThenId) {
  // Equal scores (200): 2 and 3 are older than 1; 2 and 3 tie on idle, so by id.
  const std::vector<TierCandidate> c = {Cand(1, 200, 10, 10, 1), Cand(3, 100, 20, 10, 1),
                                        Cand(2, 100, 20, 10, 1)};
  ASSERT_EQ(CostAwareScore(c[0]), CostAwareScore(c[1]));
  const TierUsage all = Usage(400, 400, 0.5, 0.0);
  EXPECT_EQ(Choose(TierPolicy::kCostAware, all, c).victims, Ids({2, 3, 1}));
  EXPECT_EQ(Choose(TierPolicy::kLru, all, c).victims, Ids({2, 3, 1}));
}

TEST(TierPolicyTest, RejectsBadInput) {
  const std::vector<TierCandidate> ok = {Cand(1, 100, 10)};
  for (auto [hi, lo] : {std::pair{0.5, 0.6}, std::pair{1.1, 0.5}, std::pair{0.9, -0.1},
                        std::pair{std::nan(""), 0.5}, std::pair{0.9, std::nan("")}}) {
    EXPECT_EQ(ChooseDemotions(TierPolicy::kLru, Usage(100, 100, hi, lo), ok).status().code(),
              absl::StatusCode::kInvalidArgument)
        << hi << " " << lo;
  }
  const TierUsage u = Usage(100, 100, 0.9, 0.5);
  EXPECT_EQ(ChooseDemotions(TierPolicy::kLru, u, {Cand(1, 1, 1), Cand(1, 2, 2)}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ChooseDemotions(TierPolicy::kCostAware, u, {Cand(1, 1, 1, -1)}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ChooseDemotions(TierPolicy::kCostAware, u, {Cand(1, 1, 1, 1, -1e-3)}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ChooseDemotions(TierPolicy::kCostAware, u, {Cand(1, 1, 1, 1, 1, std::nan(""))})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TierPolicyTest, RandomPlansFreeExactlyWhatTheyClaimAndNoMore) {
  std::mt19937_64 rng(7);
  for (int iter = 0; iter < 500; ++iter) {
    std::vector<TierCandidate> c;
    const int n = static_cast<int>(rng() % 20);
    uint64_t held = 0;
    for (int i = 0; i < n; ++i) {
      TierCandidate x =
          Cand(static_cast<uint8_t>(i), rng() % 5000, static_cast<int64_t>(rng() % 50),
               static_cast<int64_t>(rng() % 300), (rng() % 100) * 1e-5, (rng() % 100) * 1e-4);
      x.busy = rng() % 7 == 0;
      x.pinned = rng() % 7 == 0;
      held += x.bytes_held;
      c.push_back(x);
    }
    const uint64_t budget = 20000;
    const TierUsage u = Usage(held + rng() % 5000, budget, 0.8, 0.4);
    absl::flat_hash_map<SessionId, const TierCandidate*> by_id;
    for (const TierCandidate& x : c) by_id[x.id] = &x;
    for (TierPolicy p : kBoth) {
      const DemotionPlan plan = Choose(p, u, c);
      if (u.used_bytes <= HighWatermarkBytes(u)) {
        EXPECT_TRUE(plan.victims.empty());
        continue;
      }
      uint64_t sum = 0;
      uint64_t used = u.used_bytes;
      for (const SessionId& id : plan.victims) {
        const TierCandidate& x = *by_id.at(id);
        EXPECT_FALSE(x.busy || x.pinned || x.bytes_held == 0);
        EXPECT_GT(used, LowWatermarkBytes(u)) << "a victim taken after the target was met";
        sum += x.bytes_held;
        used -= x.bytes_held;
      }
      EXPECT_EQ(plan.bytes_freed, sum);
      EXPECT_EQ(plan.reaches_low_watermark, used <= LowWatermarkBytes(u));
      if (!plan.reaches_low_watermark) {
        size_t eligible = 0;
        for (const TierCandidate& x : c) eligible += !(x.busy || x.pinned || x.bytes_held == 0);
        EXPECT_EQ(plan.victims.size(), eligible);
      }
    }
  }
}

TEST(TierCostModelTest, PerTokenCostsFollowDesignSection8) {
  const kernels::KvLayout l = testing::TinyLayout();  // 256-byte blocks of 4 tokens
  EXPECT_DOUBLE_EQ(KvBytesPerToken(l), 64);
  TierCostModel m;
  m.kv_bytes_per_token = KvBytesPerToken(l);
  m.parameters = 135e6;
  m.reload_bytes_per_second = 2e9;
  m.compute_flops_per_second = 1e11;
  EXPECT_DOUBLE_EQ(m.ReloadSecondsPerToken(), 64 / 2e9);
  EXPECT_DOUBLE_EQ(m.RecomputeSecondsPerToken(), 2 * 135e6 / 1e11);
  m.reload_bytes_per_second = 0;
  m.compute_flops_per_second = -1;
  EXPECT_TRUE(std::isinf(m.ReloadSecondsPerToken()));
  EXPECT_TRUE(std::isinf(m.RecomputeSecondsPerToken()));
  // The defaults are the documented placeholders.
  EXPECT_EQ(TierCostModel{}.reload_bytes_per_second, TierCostModel::kDefaultDiskBytesPerSecond);
  EXPECT_EQ(TierCostModel{}.compute_flops_per_second, TierCostModel::kDefaultCpuFlopsPerSecond);
}

}  // namespace
}  // namespace mnemo::cache
