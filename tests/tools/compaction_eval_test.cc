// `mnemo_compaction_eval --quick --json` end to end on SmolLM2 and the KJV text of the
// Debian packages (tools/setup.sh): every part reports, the scored-token counts and budgets
// are exact, the long session stayed within its window. No timing or quality is asserted.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mnemo {
namespace {

using nlohmann::json;

TEST(CompactionEval, QuickJsonReportsEveryPart) {
  const std::string binary = testing::BenchBinary("mnemo_compaction_eval");
  ASSERT_TRUE(testing::FileExists(binary)) << "not built: " << binary;
  MNEMO_REQUIRE_FILE(testing::SmolLm2GgufPath());
  const testing::CommandResult r = testing::RunCommand(
      {binary, "--quick", "--json", "--model=" + testing::SmolLm2GgufPath(), "--threads=2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["bench"], "compaction");
  EXPECT_EQ(j["context"], 512);
  EXPECT_EQ(j["eval_tokens"], 32);
  const json& ppl = j["perplexity"];
  ASSERT_EQ(ppl.size(), 5u);  // full KV, then window and recent-only at 0.25 and 0.5
  EXPECT_EQ(ppl[0]["config"], "full KV");
  const int64_t want_kv[] = {512, 128, 128, 256, 256};
  for (size_t i = 0; i < ppl.size(); ++i) {
    EXPECT_EQ(ppl[i]["tokens"], 31) << i;  // every eval token but the first
    EXPECT_EQ(ppl[i]["kv_tokens"], want_kv[i]) << i;
    const double nll = ppl[i]["nll"].get<double>();
    EXPECT_TRUE(std::isfinite(nll) && nll > 0.0) << i << ": " << nll;
  }
  ASSERT_EQ(j["retrieval"].size(), 2u);
  for (const json& row : j["retrieval"]) {
    EXPECT_EQ(row["trials"], 1);
    for (const char* k : {"full KV", "window 0.25", "window 0.5"}) {
      EXPECT_GE(row[k].get<int>(), 0);
      EXPECT_LE(row[k].get<int>(), 1);
    }
  }
  ASSERT_EQ(j["long"].size(), 1u);  // --quick leaves out policy none
  const json& lng = j["long"][0];
  EXPECT_EQ(lng["policy"], "window");
  EXPECT_EQ(lng["stopped"], "");
  EXPECT_GE(lng["tokens_fed"].get<int64_t>(), 2 * 512);
  EXPECT_GE(lng["compactions"].get<int64_t>(), 1);
  EXPECT_LE(lng["max_history_tokens"].get<int64_t>(), 512);
  // 2 perplexity compactions, 4 retrieval ones, and the long session's.
  EXPECT_EQ(j["engine"]["compactions"].get<int64_t>(), 6 + lng["compactions"].get<int64_t>());
}

TEST(CompactionEval, BadFlagsAreClearErrors) {
  const std::string binary = testing::BenchBinary("mnemo_compaction_eval");
  ASSERT_TRUE(testing::FileExists(binary)) << "not built: " << binary;
  testing::CommandResult r = testing::RunCommand({binary, "--budgets=0.5,2"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("bad budget \"2\""), std::string::npos) << r.err;
  r = testing::RunCommand({binary, "--text=/nonexistent/text", "--quick"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/nonexistent/text"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mnemo
