// The Engine on a CUDA device: KV blocks in device memory, spills to the (pinned) host tier
// and to disk and restores through the arena's copy stream, byte-identical round trips, and
// a session written behind on the GPU resumed by a CPU engine. Skips without a device.
// (tests/engine/tiers_device_memory_test.cc checks the same paths on the CPU with an arena
// that is not host-accessible.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/engine.h"
#include "tests/engine/engine_test_util.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

std::string Kv(Engine& e, const std::string& id) {
  auto b = e.SessionKvBytes("t", id);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : "";
}

EngineOptions GpuOptions(const std::string& state_dir) {
  EngineOptions o;
  o.device = {.kind = Device::Kind::kCuda, .index = 0};
  o.device_budget_bytes = uint64_t{512} << 20;  // weights, scratch and KV: small and quick
  o.host_budget_bytes = 64 << 20;
  o.state_dir = state_dir;
  o.fsync = false;
  o.prefix_cache = false;  // every block really moves
  return o;
}

TEST(CudaEngineTest, TierRoundTripsAreByteIdenticalAndContinueIdentically) {
  REQUIRE_CUDA_DEVICE();
  auto model = TestModel(Architecture::kLlama);
  const std::string dir = testing::MakeTempDir();
  auto e = MakeEngine(*model, GpuOptions(dir + "/state"));
  ASSERT_NE(e, nullptr);
  const std::string moved = NewSession(*e, "t", {.system_prompt = "Be brief."});
  const std::string stayed = NewSession(*e, "t", {.system_prompt = "Be brief."});
  std::vector<std::vector<TokenId>> first;
  for (const std::string& id : {moved, stayed}) {
    const TurnResult r = Await(e->Continue("t", id, UserTurn("Tell me about the sea.", 9)));
    ASSERT_TRUE(r.status.ok()) << r.status;
    first.push_back(r.ids);
  }
  // The same history computed twice by the same kernels: the same ids and KV bytes.
  EXPECT_EQ(first[0], first[1]);
  const std::string before = Kv(*e, moved);
  ASSERT_FALSE(before.empty());
  EXPECT_TRUE(before == Kv(*e, stayed));

  ASSERT_TRUE(e->Demote("t", moved, StorageTier::kHost).ok());
  EXPECT_EQ(e->GetSession("t", moved)->tier, StorageTier::kHost);
  EXPECT_TRUE(Kv(*e, moved) == before);  // restored from the pinned host tier
  ASSERT_TRUE(e->Demote("t", moved, StorageTier::kDisk).ok());
  EXPECT_TRUE(Kv(*e, moved) == before);                         // restored from disk
  ASSERT_TRUE(e->Demote("t", moved, StorageTier::kDisk).ok());  // the next turn restores

  const TurnResult a = Await(e->Continue("t", moved, UserTurn("And the mountains?", 12)));
  const TurnResult b = Await(e->Continue("t", stayed, UserTurn("And the mountains?", 12)));
  ASSERT_TRUE(a.status.ok()) << a.status;
  ASSERT_TRUE(b.status.ok()) << b.status;
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.usage.cached_tokens, b.usage.cached_tokens);  // restored, not recomputed
  const EngineStats st = e->Stats();
  EXPECT_EQ(st.spills_to_host, 1);
  EXPECT_EQ(st.restores_from_host, 1);
  EXPECT_GE(st.restores_from_disk, 2);
  EXPECT_EQ(st.restore_failures, 0);
  EXPECT_TRUE(e->CheckInvariants().ok()) << e->CheckInvariants();
  ASSERT_TRUE(e->Flush("t", moved).ok());
  const std::string after = Kv(*e, moved);
  e.reset();

  // The KV the GPU engine wrote is the CPU's format: a CPU engine resumes the session.
  EngineOptions cpu = GpuOptions(dir + "/state");
  cpu.device = {};
  cpu.device_budget_bytes = 0;
  auto c = MakeEngine(*model, cpu);
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(Kv(*c, moved) == after);
  const TurnResult r = Await(c->Continue("t", moved, UserTurn("And the rivers?", 8)));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_GT(r.usage.cached_tokens, 0);  // the stored KV, not a recomputation
}

TEST(CudaEngineTest, ABudgetTooSmallForTheWeightsIsAClearError) {
  REQUIRE_CUDA_DEVICE();
  auto model = TestModel(Architecture::kLlama);
  EngineOptions o = GpuOptions(testing::MakeTempDir() + "/state");
  o.device_budget_bytes = 4096;
  o.threads = 1;
  auto e = Engine::Create(*model, o);
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(e.status())) << e.status();
  EXPECT_NE(std::string(e.status().message()).find("device cuda:0"), std::string::npos)
      << e.status();
}

}  // namespace
}  // namespace mnemo::engine
