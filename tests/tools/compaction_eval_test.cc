// `mnemo_compaction_eval --quick --json` end to end on SmolLM2 and the KJV text of the
// Debian packages (tools/setup.sh): every part reports, the scored-token counts and budgets
// are exact, the long sessions stayed within their window. No timing or quality is asserted.
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
  // Full KV, then at 0.25 and 0.5: window, score, summarize and recent-only.
  ASSERT_EQ(ppl.size(), 9u);
  EXPECT_EQ(ppl[0]["config"], "full KV");
  const int64_t want_kv[] = {512, 128, 128, 128, 128, 256, 256, 256, 256};
  for (size_t i = 0; i < ppl.size(); ++i) {
    // Every eval token but the first; summarize recomputes the history's recent tokens, so
    // the first eval token has its logits too.
    const bool summarize = ppl[i]["config"].get<std::string>().starts_with("summarize");
    EXPECT_EQ(ppl[i]["tokens"], summarize ? 32 : 31) << i;
    EXPECT_EQ(ppl[i]["kv_tokens"], want_kv[i]) << i;
    const double nll = ppl[i]["nll"].get<double>();
    EXPECT_TRUE(std::isfinite(nll) && nll > 0.0) << i << ": " << nll;
  }
  for (size_t i : {1, 5}) {
    EXPECT_TRUE(ppl[i]["config"].get<std::string>().starts_with("window")) << i;
    EXPECT_TRUE(ppl[i + 1]["config"].get<std::string>().starts_with("score")) << i;
    EXPECT_TRUE(ppl[i + 3]["config"].get<std::string>().starts_with("recent")) << i;
  }
  ASSERT_EQ(j["retrieval"].size(), 2u);
  for (const json& row : j["retrieval"]) {
    EXPECT_EQ(row["trials"], 1);
    for (const char* k : {"full KV", "window 0.25", "window 0.5", "score 0.25", "score 0.5",
                          "summarize 0.25", "summarize 0.5"}) {
      ASSERT_TRUE(row.contains(k)) << k;
      EXPECT_GE(row[k].get<int>(), 0);
      EXPECT_LE(row[k].get<int>(), 1);
    }
  }
  ASSERT_EQ(j["long"].size(), 3u);  // --quick leaves out policy none
  int64_t long_compactions = 0;
  const char* policies[] = {"window", "score", "summarize"};
  for (size_t i = 0; i < 3; ++i) {
    const json& lng = j["long"][i];
    EXPECT_EQ(lng["policy"], policies[i]);
    EXPECT_EQ(lng["stopped"], "");
    EXPECT_GE(lng["tokens_fed"].get<int64_t>(), 2 * 512);
    EXPECT_GE(lng["compactions"].get<int64_t>(), 1);
    EXPECT_LE(lng["max_history_tokens"].get<int64_t>(), 512);
    long_compactions += lng["compactions"].get<int64_t>();
  }
  // 6 perplexity compactions, 12 retrieval ones (each question's turn), the long sessions'.
  EXPECT_EQ(j["engine"]["compactions"].get<int64_t>(), 6 + 12 + long_compactions);
}

TEST(CompactionEval, BadFlagsAreClearErrors) {
  const std::string binary = testing::BenchBinary("mnemo_compaction_eval");
  ASSERT_TRUE(testing::FileExists(binary)) << "not built: " << binary;
  testing::CommandResult r = testing::RunCommand({binary, "--budgets=0.5,2"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("bad budget \"2\""), std::string::npos) << r.err;
  r = testing::RunCommand({binary, "--policies=window,none"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("bad policy \"none\""), std::string::npos) << r.err;
  r = testing::RunCommand({binary, "--parts=perplexity,speed"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("bad part \"speed\""), std::string::npos) << r.err;
  r = testing::RunCommand({binary, "--text=/nonexistent/text", "--quick"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/nonexistent/text"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mnemo
