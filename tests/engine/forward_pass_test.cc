// The backend-independent parts of the forward pass (engine/forward/forward.h): device
// names, the step plan both backends build, and the backend factory's errors.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cache/block_pool.h"
#include "cache/block_table.h"
#include "engine/forward/forward.h"
#include "engine/model/model.h"
#include "tests/test_util.h"

#ifdef MNEMO_HAVE_CUDA
#include "kernels/cuda/device.h"
#endif

namespace mnemo::engine {
namespace {

TEST(DeviceTest, ParsesCpuAndCudaOrdinals) {
  auto cpu = Device::Parse("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ(cpu->kind, Device::Kind::kCpu);
  EXPECT_EQ(cpu->ToString(), "cpu");
  auto cuda = Device::Parse("cuda");
  ASSERT_TRUE(cuda.ok());
  EXPECT_EQ(cuda->kind, Device::Kind::kCuda);
  EXPECT_EQ(cuda->index, 0);
  EXPECT_EQ(cuda->ToString(), "cuda:0");
  auto third = Device::Parse("cuda:3");
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->index, 3);
  EXPECT_EQ(third->ToString(), "cuda:3");
}

TEST(DeviceTest, RefusesAnythingElseNamingIt) {
  for (const char* bad : {"", "gpu", "CPU", "cuda:", "cuda:-1", "cuda:1x", "cuda:x", " cuda"}) {
    auto d = Device::Parse(bad);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_TRUE(absl::IsInvalidArgument(d.status())) << bad;
    EXPECT_NE(std::string(d.status().message()).find("'" + std::string(bad) + "'"),
              std::string::npos)
        << d.status();
  }
}

TEST(StepPlanTest, FlattensTheBatchInOrder) {
  auto pool = cache::BlockPool::Create(
      {.layout = {.n_layers = 1, .n_kv_heads = 1, .head_dim = 4, .block_tokens = 4},
       .budget_bytes = 1 << 16});
  ASSERT_TRUE(pool.ok()) << pool.status();
  cache::BlockTable a, b;
  ASSERT_TRUE(a.Reserve(**pool, 7));  // 2 blocks
  ASSERT_TRUE(b.Reserve(**pool, 3));  // 1 block
  const std::vector<TokenId> ta = {5, 6};
  const std::vector<TokenId> tb = {7, 8, 9};
  const SeqBatchEntry batch[] = {
      {.tokens = ta, .start_pos = 5, .table = &a, .logits = LogitRows::kLast},
      {.tokens = tb, .start_pos = 0, .table = &b, .logits = LogitRows::kAll}};
  StepPlan p;
  p.Build(batch);
  EXPECT_EQ(p.rows(), 5);
  EXPECT_EQ(p.n_seqs(), 2);
  EXPECT_EQ(p.tokens, (std::vector<int32_t>{5, 6, 7, 8, 9}));
  EXPECT_EQ(p.positions, (std::vector<int32_t>{5, 6, 0, 1, 2}));
  EXPECT_EQ(p.q_start, (std::vector<int32_t>{0, 2, 5}));
  EXPECT_EQ(p.kv_len, (std::vector<int32_t>{7, 3}));
  EXPECT_EQ(p.table_start, (std::vector<int32_t>{0, 2, 3}));
  ASSERT_EQ(p.block_table.size(), 3u);
  EXPECT_EQ(p.block_table[0], a.blocks()[0].value);
  EXPECT_EQ(p.block_table[1], a.blocks()[1].value);
  EXPECT_EQ(p.block_table[2], b.blocks()[0].value);
  EXPECT_EQ(p.logit_rows, (std::vector<int32_t>{1, 2, 3, 4}));
  EXPECT_EQ(LogitRowCount(batch), 4);
  const kernels::BatchSeqs seqs = p.Seqs();
  EXPECT_EQ(seqs.n_seqs, 2);
  EXPECT_EQ(seqs.q_start, p.q_start.data());
  EXPECT_EQ(seqs.block_table, p.block_table.data());
  // Building again replaces the plan.
  p.Build(std::span(batch, 1));
  EXPECT_EQ(p.tokens, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(p.logit_rows, (std::vector<int32_t>{1}));
  a.Release(**pool);
  b.Release(**pool);
}

TEST(CreateForwardPassTest, CpuByDefaultAndCudaRefusedClearlyWithoutADevice) {
  auto model = Model::Open(testing::StoriesGgufPath());
  ASSERT_TRUE(model.ok()) << model.status();
  auto cpu = CreateForwardPass(**model);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ((*cpu)->device().kind, Device::Kind::kCpu);
  EXPECT_EQ((*cpu)->config().vocab_size, (*model)->config().vocab_size);
#ifdef MNEMO_HAVE_CUDA
  if (kernels::CudaDeviceCount() > 0) {
    GTEST_SKIP() << "a CUDA device is present: tests/gpu covers the CUDA forward pass";
  }
  const std::string expect = "no CUDA device is present";
#else
  const std::string expect = "this mnemo was built without the CUDA backend";
#endif
  auto cuda = CreateForwardPass(**model, {.device = {.kind = Device::Kind::kCuda, .index = 1}});
  ASSERT_FALSE(cuda.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(cuda.status())) << cuda.status();
  EXPECT_NE(std::string(cuda.status().message()).find("device cuda:1: " + expect),
            std::string::npos)
      << cuda.status();
}

}  // namespace
}  // namespace mnemo::engine
