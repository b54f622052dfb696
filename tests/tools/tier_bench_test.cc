// `mnemo_tier_bench --quick --json` end to end on a random test model: every measurement is
// reported with positive figures, the disk restore matched its source (else the benchmark
// fails), and the work directory is removed. No timing is asserted.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "engine/model/test_model.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mnemo {
namespace {

using nlohmann::json;

// The {best, median} pair at `j`: both present and > 0.
void ExpectPositivePair(const json& j, const std::string& what) {
  ASSERT_TRUE(j.is_object()) << what;
  EXPECT_GT(j["best"].get<double>(), 0.0) << what;
  EXPECT_GT(j["median"].get<double>(), 0.0) << what;
}

TEST(TierBench, QuickJsonReportsEveryMeasurement) {
  const std::string binary = testing::BenchBinary("mnemo_tier_bench");
  if (!testing::FileExists(binary)) GTEST_SKIP() << "not built: " << binary;
  const std::string tmp = testing::MakeTempDir();
  const std::string model = tmp + "/model.gguf";
  ASSERT_TRUE(engine::WriteTestModel({}, model).ok());
  const std::string dir = tmp + "/disk";
  std::filesystem::create_directory(dir);

  const testing::CommandResult r = testing::RunCommand(
      {binary, "--quick", "--json", "--model=" + model, "--threads=1", "--dir=" + dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["bench"], "tier");
  EXPECT_EQ(j["quick"], true);
  EXPECT_EQ(j["reps"], 1);
  EXPECT_EQ(j["block_tokens"], 16);
  EXPECT_EQ(j["kv_dtype"], "f16");
  const int64_t blocks = j["session_blocks"].get<int64_t>();
  EXPECT_EQ(blocks, (j["tokens"].get<int64_t>() + 15) / 16);
  EXPECT_EQ(j["session_bytes"].get<int64_t>(), blocks * j["block_bytes"].get<int64_t>());

  ExpectPositivePair(j["recompute"]["s_per_token"], "recompute");
  ExpectPositivePair(j["host_restore"]["s_per_token"], "host restore");
  ExpectPositivePair(j["host_restore"]["gb_per_s"], "host restore");
  const json& disk = j["disk"];
  for (const char* op : {"write", "restore"}) {
    ExpectPositivePair(disk[op]["s_per_token"], op);
    ExpectPositivePair(disk[op]["gb_per_s"], op);
  }
  // The disk test covers at least --disk-mib (8 under --quick) in whole sessions.
  EXPECT_EQ(disk["bytes"].get<int64_t>(),
            disk["sessions"].get<int64_t>() * j["session_bytes"].get<int64_t>());
  EXPECT_GE(disk["bytes"].get<int64_t>(), int64_t{8} << 20);
  // Every session commits: one data fsync each, and directory/manifest fsyncs beside.
  EXPECT_EQ(disk["best_write_fsyncs"]["data_calls"], disk["sessions"]);
  EXPECT_GE(disk["best_write_fsyncs"]["metadata_calls"].get<int64_t>(),
            2 * disk["sessions"].get<int64_t>());
  for (const json* e : {&disk["eviction"], &j["dd"]["eviction"]}) {
    EXPECT_TRUE((*e)["evicted"].is_boolean());
    EXPECT_GE((*e)["resident_fraction_after"].get<double>(), 0.0);
  }
  EXPECT_GE(j["dd"]["bytes"].get<int64_t>(), disk["bytes"].get<int64_t>());
  ExpectPositivePair(j["dd"]["write_gb_per_s"], "dd write");
  ExpectPositivePair(j["dd"]["read_gb_per_s"], "dd read");
  ExpectPositivePair(j["dd"]["read_state_files_gb_per_s"], "plain read of the state files");
  for (const char* ratio :
       {"recompute_over_host_restore", "recompute_over_disk_restore", "disk_write_frac_of_dd",
        "disk_read_frac_of_dd", "disk_read_frac_of_plain_reads"}) {
    EXPECT_GT(j["ratios"][ratio].get<double>(), 0.0) << ratio;
    EXPECT_GT(j["ratios_median"][ratio].get<double>(), 0.0) << ratio;
  }
  for (const char* goal :
       {"disk_restore_20x_cheaper", "disk_write_70pct_of_dd", "disk_read_70pct_of_dd"}) {
    EXPECT_TRUE(j["goals"][goal].is_boolean()) << goal;
  }
  // The work directory under --dir is gone.
  EXPECT_TRUE(std::filesystem::is_empty(dir));
}

TEST(TierBench, RejectsUnknownFlags) {
  const std::string binary = testing::BenchBinary("mnemo_tier_bench");
  if (!testing::FileExists(binary)) GTEST_SKIP() << "not built: " << binary;
  const testing::CommandResult r = testing::RunCommand({binary, "--no-such-flag"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown flag --no-such-flag"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mnemo
