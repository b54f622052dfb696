// `mnemo_multiturn_bench --quick --json` end to end on a random test model: every mode is
// reported, and the token accounting shows what each mode reuses. No timing is asserted.
#include <gtest/gtest.h>

#include <string>

#include "engine/model/test_model.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mnemo {
namespace {

using nlohmann::json;

TEST(MultiturnBench, QuickJsonReportsEveryModeAndWhatItReused) {
  const std::string binary = testing::BenchBinary("mnemo_multiturn_bench");
  if (!testing::FileExists(binary)) GTEST_SKIP() << "not built: " << binary;
  const std::string model = testing::MakeTempDir() + "/model.gguf";
  ASSERT_TRUE(engine::WriteTestModel({}, model).ok());

  const testing::CommandResult r = testing::RunCommand(
      {binary, "--quick", "--json", "--model=" + model, "--threads=1", "--seed=7"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["quick"], true);
  const int turns = j["ttft_turns"].get<int>();
  ASSERT_GE(turns, 2);

  const json& modes = j["modes"];
  for (const char* mode : {"recompute", "prefix_cache", "stateful"}) {
    ASSERT_TRUE(modes.contains(mode)) << mode;
    const json& m = modes[mode];
    ASSERT_EQ(m["ttft_ms_by_turn"].size(), static_cast<size_t>(turns)) << mode;
    ASSERT_EQ(m["computed_tokens_by_turn"].size(), static_cast<size_t>(turns)) << mode;
    EXPECT_TRUE(m.contains("ttft_ratio_last_first")) << mode;
    EXPECT_GT(m["tokens_computed"].get<int64_t>(), 0) << mode;
    // Every mode replays the same conversations, replies of exact lengths included.
    EXPECT_EQ(m["tokens_generated"], modes["recompute"]["tokens_generated"]) << mode;
  }
  EXPECT_EQ(modes["recompute"]["tokens_cached"].get<int64_t>(), 0);
  EXPECT_GT(modes["prefix_cache"]["tokens_cached"].get<int64_t>(), 0);
  EXPECT_GT(modes["stateful"]["tokens_cached"].get<int64_t>(), 0);
  // A session computes only the new turn; recomputation computes the whole history again.
  EXPECT_LT(modes["stateful"]["tokens_computed"].get<int64_t>(),
            modes["recompute"]["tokens_computed"].get<int64_t>());
  const int last = turns - 1;
  EXPECT_LT(modes["stateful"]["computed_tokens_by_turn"][last].get<double>(),
            modes["recompute"]["computed_tokens_by_turn"][last].get<double>());

  const json& tp = j["throughput"];
  for (const char* served : {"serial", "concurrent"}) {
    ASSERT_TRUE(tp.contains(served)) << served;
    EXPECT_GT(tp[served]["tokens_generated"].get<int64_t>(), 0) << served;
    EXPECT_GT(tp[served]["tokens_cached"].get<int64_t>(), 0) << served;
  }
  EXPECT_EQ(tp["serial"]["tokens_generated"], tp["concurrent"]["tokens_generated"]);
  EXPECT_GT(tp["ratio_generated_tokens_per_s"].get<double>(), 0.0);
}

TEST(MultiturnBench, RejectsUnknownFlags) {
  const std::string binary = testing::BenchBinary("mnemo_multiturn_bench");
  if (!testing::FileExists(binary)) GTEST_SKIP() << "not built: " << binary;
  const testing::CommandResult r = testing::RunCommand({binary, "--no-such-flag"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown flag --no-such-flag"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mnemo
