// The Engine on a CUDA device: KV blocks in device memory, spills to the (pinned) host tier
// and to disk and restores through the arena's copy stream, byte-identical round trips, and
// a session written behind on the GPU resumed by a CPU engine. Skips without a device.
// (tests/engine/tiers_device_memory_test.cc checks the same paths on the CPU with an arena
// that is not host-accessible.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
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

// A window compaction of a session whose KV is in device memory: the kept rows are copied
// through the arena's copy stream, sinks and values bit for bit, the moved keys of layer 0
// equal to keys computed on the device at the new positions within f16 rounding; the
// session then goes on.
TEST(CudaEngineTest, WindowCompactionOnTheDevice) {
  REQUIRE_CUDA_DEVICE();
  auto model = TestModel(Architecture::kLlama, 256);
  EngineOptions o = GpuOptions(testing::MakeTempDir() + "/state");
  o.compaction.policy = cache::CompactionPolicy::kWindow;
  auto e = MakeEngine(*model, o);
  ASSERT_NE(e, nullptr);
  const std::vector<TokenId> all = testing::SomeTokens(200, kTestModelVocabSize, 7);
  const std::string id = NewSession(*e, "t");
  ASSERT_TRUE(Await(e->Continue("t", id, TokenTurn(all, 0))).status.ok());
  const std::string before = Kv(*e, id);
  auto info = e->Compact("t", id, std::nullopt, 60);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->n_tokens, 60);
  const std::string after = Kv(*e, id);
  std::vector<TokenId> kept(all.begin(), all.begin() + 4);
  kept.insert(kept.end(), all.end() - 56, all.end());
  const std::string direct = NewSession(*e, "t");
  ASSERT_TRUE(Await(e->Continue("t", direct, TokenTurn(kept, 0))).status.ok());
  const std::string kd = Kv(*e, direct);
  const kernels::KvLayout lay = LayoutOf(*model);
  double worst = 0.0;
  for (int64_t p = 0; p < 60; ++p) {
    const int64_t old = p < 4 ? p : p + 140;
    for (int h = 0; h < lay.n_kv_heads; ++h) {
      for (int layer = 0; layer < lay.n_layers; ++layer) {
        EXPECT_EQ(Row(after, lay, layer, 1, h, p), Row(before, lay, layer, 1, h, old)) << p;
        if (p < 4) {
          EXPECT_EQ(Row(after, lay, layer, 0, h, p), Row(before, lay, layer, 0, h, p));
        }
      }
      const std::vector<float> got = Row(after, lay, 0, 0, h, p);
      const std::vector<float> want = Row(kd, lay, 0, 0, h, p);
      float scale = 0.0f;
      for (float x : want) scale = std::max(scale, std::fabs(x));
      for (size_t d = 0; d < got.size(); ++d) {
        worst = std::max(worst, static_cast<double>(std::fabs(got[d] - want[d]) / scale));
      }
    }
  }
  EXPECT_LT(worst, 2e-3);
  const TurnResult r =
      Await(e->Continue("t", id, TokenTurn(testing::SomeTokens(20, kTestModelVocabSize, 8), 4)));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_TRUE(e->CheckInvariants().ok()) << e->CheckInvariants();
}

// Score and summarize compactions of a session in device memory. Score: the device probe's
// attention mass (f32, atomic sums) picks the same tokens as a CPU engine's up to near-ties
// (at least 90 % of the kept tokens in common), and the moved keys sit at their new
// positions; summarize: the summary is the same greedy text as a CPU engine writes (the
// forward passes agree on the greedy token, CudaForwardTest), and the session goes on.
TEST(CudaEngineTest, ScoreAndSummarizeOnTheDevice) {
  REQUIRE_CUDA_DEVICE();
  auto model = TestModel(Architecture::kLlama, 256);
  EngineOptions o = GpuOptions(testing::MakeTempDir() + "/state");
  o.compaction.summary_max_tokens = 12;
  o.compaction.summary_prompt = "Summary:";
  auto e = MakeEngine(*model, o);
  ASSERT_NE(e, nullptr);
  EngineOptions cpu_options = o;
  cpu_options.device = {};
  cpu_options.state_dir = testing::MakeTempDir() + "/cpu";
  auto cpu = MakeEngine(*model, cpu_options);
  ASSERT_NE(cpu, nullptr);
  const std::vector<TokenId> all = testing::SomeTokens(200, kTestModelVocabSize, 17);
  std::vector<std::vector<TokenId>> kept;
  for (Engine* engine : {e.get(), cpu.get()}) {
    const std::string id = SessionWithKv(*engine, all);
    auto info = engine->Compact("t", id, cache::CompactionPolicy::kScore, 70);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->n_tokens, 70);
    kept.push_back(Tokens(*engine, "t", id));
  }
  int64_t common = 0;
  for (size_t i = 0; i < kept[0].size(); ++i) {
    common += std::find(kept[1].begin(), kept[1].end(), kept[0][i]) != kept[1].end();
  }
  EXPECT_GE(common, 63) << "of 70 kept tokens";
  const std::string on_gpu = SessionWithKv(*e, all);
  ASSERT_TRUE(e->Compact("t", on_gpu, cache::CompactionPolicy::kScore, 70).ok());
  ExpectKeysAtTheirNewPositions(*e, *model, on_gpu, 70, 4);

  std::vector<std::string> summaries;
  for (Engine* engine : {e.get(), cpu.get()}) {
    const std::string id = SessionWithKv(*engine, all);
    auto info = engine->Compact("t", id, cache::CompactionPolicy::kSummarize, 120);
    ASSERT_TRUE(info.ok()) << info.status();
    summaries.push_back(info->compaction_log.at(0).summary);
    const TurnResult r = Await(
        engine->Continue("t", id, TokenTurn(testing::SomeTokens(20, kTestModelVocabSize, 8), 4)));
    ASSERT_TRUE(r.status.ok()) << r.status;
  }
  EXPECT_EQ(summaries[0], summaries[1]);
  EXPECT_TRUE(e->CheckInvariants().ok()) << e->CheckInvariants();
}

}  // namespace
}  // namespace mnemo::engine
