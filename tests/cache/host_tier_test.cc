#include "cache/host_tier.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace mnemo::cache {
namespace {

std::unique_ptr<HostTier> MakeTier(int64_t block_bytes, uint64_t budget,
                                   HostArenaAllocator* allocator = nullptr) {
  auto tier = HostTier::Create({block_bytes, budget, allocator});
  EXPECT_TRUE(tier.ok()) << tier.status();
  return *std::move(tier);
}

std::vector<uint8_t> RandomBlock(std::mt19937_64& rng, int64_t bytes) {
  std::vector<uint8_t> b(static_cast<size_t>(bytes));
  for (uint8_t& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

// Counts allocations and checks that every Free matches an Allocate (pointer and size).
class CountingAllocator final : public HostArenaAllocator {
 public:
  void* Allocate(size_t bytes) override {
    if (refuse) return nullptr;
    ++allocations;
    last_bytes = bytes;
    last_ptr = DefaultHostArenaAllocator().Allocate(bytes);
    return last_ptr;
  }
  void Free(void* p, size_t bytes) override {
    EXPECT_EQ(p, last_ptr);
    EXPECT_EQ(bytes, last_bytes);
    ++frees;
    DefaultHostArenaAllocator().Free(p, bytes);
  }
  bool refuse = false;
  int allocations = 0;
  int frees = 0;
  size_t last_bytes = 0;
  void* last_ptr = nullptr;
};

TEST(HostTierTest, RejectsBadOptions) {
  EXPECT_EQ(HostTier::Create({0, 1 << 20}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(HostTier::Create({-4096, 1 << 20}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(HostTier::Create({4096, 4095}).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(HostTier::Create({4096, 0}).status().code(), absl::StatusCode::kResourceExhausted);
  CountingAllocator refusing;
  refusing.refuse = true;
  EXPECT_EQ(HostTier::Create({4096, 1 << 20, &refusing}).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(HostTierTest, SlotsAndBytesFollowTheBudgetExactly) {
  // 1000-byte blocks, a budget of 5.7 blocks: 5 slots, 5000 arena bytes.
  CountingAllocator alloc;
  {
    auto tier = MakeTier(1000, 5700, &alloc);
    EXPECT_EQ(tier->num_slots(), 5);
    EXPECT_EQ(tier->capacity_bytes(), 5000u);
    EXPECT_EQ(tier->budget_bytes(), 5700u);
    EXPECT_LE(tier->capacity_bytes(), tier->budget_bytes());
    EXPECT_EQ(alloc.allocations, 1);
    EXPECT_EQ(alloc.last_bytes, 5000u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(alloc.last_ptr) % kHostArenaAlign, 0u);
    EXPECT_EQ(tier->num_free(), 5);
    EXPECT_EQ(tier->num_stored(), 0);
    EXPECT_EQ(tier->used_bytes(), 0u);
    EXPECT_EQ(alloc.frees, 0);
  }
  EXPECT_EQ(alloc.frees, 1);  // the destructor gave the arena back
}

TEST(HostTierTest, StoreUntilFullThenFreeAndReuse) {
  auto tier = MakeTier(64, 4 * 64);
  const std::vector<uint8_t> block(64, 7);
  std::vector<HostBlockId> ids;
  for (int i = 0; i < 4; ++i) {
    std::optional<HostBlockId> id = tier->Store(block);
    ASSERT_TRUE(id.has_value());
    EXPECT_EQ(id->value, i);  // a fresh tier hands out 0, 1, 2, ...
    ids.push_back(*id);
    EXPECT_EQ(tier->num_stored(), i + 1);
    EXPECT_EQ(tier->used_bytes(), static_cast<uint64_t>((i + 1) * 64));
  }
  // Full: a normal refusal, counted; nothing changes.
  EXPECT_EQ(tier->Store(block), std::nullopt);
  EXPECT_EQ(tier->stats().store_refusals, 1);
  EXPECT_EQ(tier->num_stored(), 4);
  EXPECT_EQ(tier->used_bytes(), tier->capacity_bytes());

  tier->Free(ids[2]);
  tier->Free(ids[0]);
  EXPECT_FALSE(tier->IsStored(ids[0]));
  EXPECT_TRUE(tier->IsStored(ids[1]));
  EXPECT_EQ(tier->num_stored(), 2);
  EXPECT_EQ(tier->num_free(), 2);
  EXPECT_EQ(tier->used_bytes(), 128u);
  // LIFO reuse: the last freed slot first.
  EXPECT_EQ(tier->Store(block)->value, 0);
  EXPECT_EQ(tier->Store(block)->value, 2);
  EXPECT_EQ(tier->Store(block), std::nullopt);
  EXPECT_EQ(tier->stats().stores, 6);
  EXPECT_EQ(tier->stats().frees, 2);
  EXPECT_EQ(tier->stats().store_refusals, 2);
  EXPECT_FALSE(tier->IsStored(HostBlockId{}));
  EXPECT_FALSE(tier->IsStored(HostBlockId{4}));
}

TEST(HostTierTest, StoreLoadIsByteIdenticalUnderChurn) {
  // A block size that is not a power of two, random contents, random store/free churn: every
  // stored block reads back exactly, and no store disturbs another slot.
  constexpr int64_t kBytes = 4096 + 24;
  auto tier = MakeTier(kBytes, 9 * kBytes + 100);
  ASSERT_EQ(tier->num_slots(), 9);
  std::mt19937_64 rng(42);
  std::vector<std::pair<HostBlockId, std::vector<uint8_t>>> live;
  std::vector<uint8_t> out(kBytes);
  for (int step = 0; step < 2000; ++step) {
    const bool store = live.empty() || (live.size() < 9 && rng() % 3 != 0);
    if (store) {
      std::vector<uint8_t> b = RandomBlock(rng, kBytes);
      std::optional<HostBlockId> id = tier->Store(b);
      ASSERT_TRUE(id.has_value()) << step;
      live.emplace_back(*id, std::move(b));
    } else {
      const size_t i = rng() % live.size();
      tier->Load(live[i].first, out);
      ASSERT_EQ(out, live[i].second) << step;
      std::span<const uint8_t> direct = tier->BlockData(live[i].first);
      ASSERT_EQ(std::memcmp(direct.data(), live[i].second.data(), kBytes), 0);
      tier->Free(live[i].first);
      live.erase(live.begin() + static_cast<ptrdiff_t>(i));
    }
    ASSERT_EQ(tier->num_stored(), static_cast<int64_t>(live.size()));
    ASSERT_EQ(tier->used_bytes(), live.size() * static_cast<uint64_t>(kBytes));
  }
  for (const auto& [id, bytes] : live) {
    tier->Load(id, out);
    EXPECT_EQ(out, bytes);
  }
}

TEST(HostTierDeathTest, MisuseAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto tier = MakeTier(64, 2 * 64);
  std::vector<uint8_t> block(64, 1);
  std::vector<uint8_t> small(63);
  EXPECT_DEATH(tier->Store(small), "Store of 63 bytes into a tier of 64-byte blocks");
  const HostBlockId id = *tier->Store(block);
  EXPECT_DEATH(tier->Load(id, small), "Load into 63 bytes");
  EXPECT_DEATH(tier->Load(HostBlockId{1}, block), "Load of host block 1, which holds nothing");
  EXPECT_DEATH(tier->Free(HostBlockId{2}), "Free of host block 2 outside a tier of 2");
  EXPECT_DEATH(tier->Free(HostBlockId{}), "outside a tier of 2");
  EXPECT_DEATH(tier->BlockData(HostBlockId{1}), "which holds nothing");
  tier->Free(id);
  EXPECT_DEATH(tier->Free(id), "Free of host block 0, which holds nothing");
}

}  // namespace
}  // namespace mnemo::cache
