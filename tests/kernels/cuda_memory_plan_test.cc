// The device memory plan (kernels/cuda/memory_plan.h) on model shapes: Llama-3-8B-like on an
// 80 GB H100 and SmolLM2-135M. Expected values are recomputed here from the definitions
// (budget = fraction * free; blocks = floor((budget - weights - reserve) / block_bytes)),
// and the plan's invariants are checked: it fits the budget, and one more block would not.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>

#include "kernels/attention.h"
#include "kernels/cuda/memory_plan.h"

namespace mnemo::kernels::cuda {
namespace {

// cudaMemGetInfo's total on an H100 80GB HBM3 (81559 MiB), and free after creating the
// context (about 512 MiB less).
constexpr uint64_t kH100Total = uint64_t{81559} << 20;
constexpr uint64_t kH100Free = kH100Total - (uint64_t{512} << 20);
// Activations of a 2048-token prefill step of an 8B model (~1 GiB, logits included) plus
// cuBLAS's 32 MiB workspace.
constexpr uint64_t kReserve = (uint64_t{1} << 30) + (uint64_t{32} << 20);
constexpr uint64_t kLlama8BWeights = 16'060'000'000;  // bf16

KvLayout Llama8BLayout() {
  return KvLayout{
      .n_layers = 32, .n_kv_heads = 8, .head_dim = 128, .block_tokens = 16, .dtype = DType::kBF16};
}

KvLayout SmolLm135MLayout() {
  return KvLayout{
      .n_layers = 30, .n_kv_heads = 3, .head_dim = 64, .block_tokens = 16, .dtype = DType::kBF16};
}

MemoryPlanOptions Llama8BOn80GB() {
  MemoryPlanOptions o;
  o.device_free_bytes = kH100Free;
  o.device_total_bytes = kH100Total;
  o.weight_bytes = kLlama8BWeights;
  o.reserve_bytes = kReserve;
  o.kv_block_bytes = static_cast<uint64_t>(Llama8BLayout().block_bytes());
  return o;
}

// The invariants of every usable plan.
void ExpectConsistent(const MemoryPlan& p, const MemoryPlanOptions& o) {
  ASSERT_TRUE(p.ok()) << p.error;
  EXPECT_EQ(p.weight_bytes % kPoolAlignment, 0u);
  EXPECT_EQ(p.scratch_bytes % kPoolAlignment, 0u);
  EXPECT_EQ(p.kv_bytes % kPoolAlignment, 0u);
  EXPECT_GE(p.weight_bytes, o.weight_bytes);
  EXPECT_GE(p.scratch_bytes, o.reserve_bytes);
  EXPECT_GE(p.kv_bytes, static_cast<uint64_t>(p.kv_blocks) * o.kv_block_bytes);
  EXPECT_LE(p.total_bytes(), p.budget_bytes);
  EXPECT_LE(p.budget_bytes, o.device_free_bytes);
  // Maximal: one more block does not fit.
  EXPECT_GT(p.weight_bytes + p.scratch_bytes + (p.kv_blocks + 1) * o.kv_block_bytes,
            p.budget_bytes);
}

TEST(CudaMemoryPlan, Llama8BOnH100) {
  const KvLayout l = Llama8BLayout();
  // 32 layers * (K + V) * 8 heads * 16 tokens * 128 dims * 2 bytes = 2 MiB per block.
  ASSERT_EQ(l.block_bytes(), int64_t{32} * 2 * 8 * 16 * 128 * 2);
  EXPECT_EQ(KvBytesPerToken(l), uint64_t{32} * 2 * 8 * 128 * 2);  // 128 KiB

  const MemoryPlanOptions o = Llama8BOn80GB();
  const MemoryPlan p = PlanDeviceMemory(o);
  ExpectConsistent(p, o);
  const auto budget = static_cast<uint64_t>(static_cast<double>(kH100Free) * 0.9);
  EXPECT_EQ(p.budget_bytes, budget);
  const uint64_t block = static_cast<uint64_t>(l.block_bytes());
  EXPECT_EQ(static_cast<uint64_t>(p.kv_blocks),
            (budget - kLlama8BWeights - kReserve) / block);  // both already 256-aligned

  // A 4k-token session needs 256 blocks, a 32k one 2048.
  EXPECT_EQ(KvBlocksPerSession(4096, 16), 256);
  EXPECT_EQ(KvBlocksPerSession(32768, 16), 2048);
  EXPECT_EQ(KvBlocksPerSession(4097, 16), 257);
  const int64_t s4k = ResidentSessions(p, l, 4096);
  const int64_t s32k = ResidentSessions(p, l, 32768);
  EXPECT_EQ(s4k, p.kv_blocks / 256);
  EXPECT_EQ(s32k, p.kv_blocks / 2048);
  // About 55 GiB of KV at 512 MiB (4k) and 4 GiB (32k) a session.
  EXPECT_GT(s4k, 100);
  EXPECT_LT(s4k, 120);
  EXPECT_GT(s32k, 12);
  EXPECT_LT(s32k, 15);
  std::printf(
      "8B on H100 80GB: free %s, budget %s, weights %s, scratch %s, KV %lld blocks (%s, %lld "
      "tokens), sessions resident: %lld of 4k, %lld of 32k, pool %s\n",
      FormatGib(kH100Free).c_str(), FormatGib(p.budget_bytes).c_str(),
      FormatGib(p.weight_bytes).c_str(), FormatGib(p.scratch_bytes).c_str(),
      static_cast<long long>(p.kv_blocks), FormatGib(p.kv_bytes).c_str(),
      static_cast<long long>(p.kv_blocks * l.block_tokens), static_cast<long long>(s4k),
      static_cast<long long>(s32k), FormatGib(p.total_bytes()).c_str());
}

TEST(CudaMemoryPlan, BudgetAsBytesOrFraction) {
  MemoryPlanOptions o = Llama8BOn80GB();
  o.budget_bytes = 40'000'000'000;
  const MemoryPlan bytes = PlanDeviceMemory(o);
  ExpectConsistent(bytes, o);
  EXPECT_EQ(bytes.budget_bytes, 40'000'000'000u);
  const uint64_t block = o.kv_block_bytes;
  EXPECT_EQ(static_cast<uint64_t>(bytes.kv_blocks),
            (40'000'000'000u - kLlama8BWeights - kReserve) / block);

  // The same budget as a fraction of the free memory gives the same plan.
  o.budget_bytes = 0;
  o.budget_fraction = 40'000'000'000.0 / static_cast<double>(kH100Free);
  const MemoryPlan fraction = PlanDeviceMemory(o);
  ExpectConsistent(fraction, o);
  EXPECT_NEAR(static_cast<double>(fraction.budget_bytes), 40e9, 1.0);
  EXPECT_NEAR(static_cast<double>(fraction.kv_blocks), static_cast<double>(bytes.kv_blocks), 1);

  // A quarter of the free memory: fewer blocks, by the same formula.
  o.budget_fraction = 0.25;
  const MemoryPlan quarter = PlanDeviceMemory(o);
  ExpectConsistent(quarter, o);
  EXPECT_LT(quarter.kv_blocks, fraction.kv_blocks);
  EXPECT_EQ(static_cast<uint64_t>(quarter.kv_blocks),
            (kH100Free / 4 - kLlama8BWeights - kReserve) / block);
}

TEST(CudaMemoryPlan, TooSmallBudgetSaysWhatIsNeeded) {
  MemoryPlanOptions o = Llama8BOn80GB();
  o.budget_bytes = uint64_t{8} << 30;
  // 16.06e9 bytes = 14.957 GiB.
  EXPECT_EQ(PlanDeviceMemory(o).error, "model needs 14.96 GiB of weights, device budget 8.00 GiB");

  // Weights fit but not weights + scratch.
  o.budget_bytes = kLlama8BWeights + kReserve / 2;
  EXPECT_EQ(PlanDeviceMemory(o).error.rfind("model needs 14.96 GiB of weights + 1.03 GiB of "
                                            "scratch, device budget ",
                                            0),
            0u)
      << PlanDeviceMemory(o).error;

  // Weights and scratch fit, but not a single KV block.
  o.budget_bytes = kLlama8BWeights + kReserve + o.kv_block_bytes - 1;
  const MemoryPlan none = PlanDeviceMemory(o);
  EXPECT_NE(none.error.find("no room for the KV cache"), std::string::npos) << none.error;
  o.budget_bytes += 1;
  const MemoryPlan one = PlanDeviceMemory(o);
  ASSERT_TRUE(one.ok()) << one.error;
  EXPECT_EQ(one.kv_blocks, 1);

  // A budget above the free memory, and bad inputs.
  o.budget_bytes = kH100Free + 1;
  EXPECT_NE(PlanDeviceMemory(o).error.find("exceeds the free device memory"), std::string::npos);
  o.budget_bytes = 0;
  o.budget_fraction = 1.5;
  EXPECT_EQ(PlanDeviceMemory(o).error, "device budget fraction must be in (0, 1]");
  o.budget_fraction = 0.0;
  EXPECT_FALSE(PlanDeviceMemory(o).ok());
  o = Llama8BOn80GB();
  o.device_total_bytes = 0;
  EXPECT_NE(PlanDeviceMemory(o).error.find("device memory unknown"), std::string::npos);
  o = Llama8BOn80GB();
  o.kv_block_bytes = 0;
  EXPECT_FALSE(PlanDeviceMemory(o).ok());
}

TEST(CudaMemoryPlan, SmolLm135M) {
  const KvLayout l = SmolLm135MLayout();
  // 30 layers * 2 * 3 heads * 16 tokens * 64 dims * 2 bytes = 360 KiB per block.
  ASSERT_EQ(l.block_bytes(), int64_t{30} * 2 * 3 * 16 * 64 * 2);
  EXPECT_EQ(KvBytesPerToken(l), uint64_t{23040});

  MemoryPlanOptions o;
  o.device_free_bytes = kH100Free;
  o.device_total_bytes = kH100Total;
  o.weight_bytes = AlignUp(134'515'008u * 2);  // bf16 parameters
  o.reserve_bytes = uint64_t{256} << 20;
  o.kv_block_bytes = static_cast<uint64_t>(l.block_bytes());
  const MemoryPlan p = PlanDeviceMemory(o);
  ExpectConsistent(p, o);
  const uint64_t left = p.budget_bytes - o.weight_bytes - o.reserve_bytes;
  // Blocks whose padded pool still fits: floor(left / block), less one if the padding of
  // that count would cross `left` (block_bytes is a multiple of 256 here, so it never does).
  EXPECT_EQ(static_cast<uint64_t>(p.kv_blocks), left / o.kv_block_bytes);
  EXPECT_EQ(ResidentSessions(p, l, 8192), p.kv_blocks / 512);
  EXPECT_GT(ResidentSessions(p, l, 8192), 300);  // ~75 GiB of KV at 180 MiB a session

  // On a 4 GiB budget: still room for hundreds of 2k-token sessions.
  o.budget_bytes = uint64_t{4} << 30;
  const MemoryPlan small = PlanDeviceMemory(o);
  ExpectConsistent(small, o);
  EXPECT_EQ(ResidentSessions(small, l, 2048), small.kv_blocks / 128);
  EXPECT_GT(ResidentSessions(small, l, 2048), 60);
}

TEST(CudaMemoryPlan, BlockCountDropsWhenPaddingWouldCrossTheBudget) {
  MemoryPlanOptions o;
  o.device_total_bytes = o.device_free_bytes = 1 << 20;
  o.budget_bytes = 1000;
  // 10, 9 and 8 blocks of 100 bytes pad to 1024 > 1000; 7 blocks pad to 768.
  o.kv_block_bytes = 100;
  const MemoryPlan p = PlanDeviceMemory(o);
  ASSERT_TRUE(p.ok()) << p.error;
  EXPECT_EQ(p.kv_blocks, 7);
  EXPECT_EQ(p.kv_bytes, 768u);
  EXPECT_LE(p.total_bytes(), 1000u);
}

}  // namespace
}  // namespace mnemo::kernels::cuda
