// cache/compaction.h: policy names, options validation, the window cut, position and turn
// mapping, the rewind floor.
#include "cache/compaction.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

namespace mnemo::cache {
namespace {

using ::testing::HasSubstr;

TEST(CompactionTest, PolicyNamesRoundTripAndBadNamesSayWhatIsAccepted) {
  for (CompactionPolicy p : {CompactionPolicy::kNone, CompactionPolicy::kWindow,
                             CompactionPolicy::kScore, CompactionPolicy::kSummarize}) {
    auto back = ParseCompactionPolicy(CompactionPolicyName(p));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, p);
  }
  auto bad = ParseCompactionPolicy("sliding");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("\"sliding\""));
  EXPECT_THAT(bad.status().message(), HasSubstr("window, score or summarize"));
}

TEST(CompactionTest, OptionsValidationNamesTheField) {
  EXPECT_TRUE(ValidateCompactionOptions({}).ok());
  struct Case {
    CompactionOptions o;
    const char* field;
  };
  const std::vector<Case> cases = {
      {{.sink_tokens = -1}, "sink_tokens"},
      {{.trigger_fraction = 0.0}, "trigger_fraction"},
      {{.trigger_fraction = 1.5}, "trigger_fraction"},
      {{.trigger_tokens = -3}, "trigger_tokens"},
      {{.max_session_bytes = -1}, "max_session_bytes"},
      {{.target_fraction = 1.0}, "target_fraction"},
      {{.target_fraction = 0.0}, "target_fraction"},
      {{.observe_tokens = 0}, "observe_tokens"},
      {{.summary_prompt = ""}, "summary_prompt"},
      {{.summary_max_tokens = 0}, "summary_max_tokens"},
  };
  for (const Case& c : cases) {
    const absl::Status st = ValidateCompactionOptions(c.o);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(st.message(), HasSubstr(c.field));
  }
}

TEST(CompactionTest, WindowCutKeepsSinksAndTheMostRecent) {
  auto cut = WindowCut(100, 4, 30);
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(*cut, (TokenRange{4, 74}));  // keeps [0, 4) and [74, 100): 4 + 26 = 30
  auto no_sinks = WindowCut(10, 0, 3);
  ASSERT_TRUE(no_sinks.ok());
  EXPECT_EQ(*no_sinks, (TokenRange{0, 7}));
  EXPECT_FALSE(WindowCut(100, 4, 4).ok());    // no recent token left
  EXPECT_FALSE(WindowCut(100, 4, 100).ok());  // nothing dropped
  EXPECT_FALSE(WindowCut(100, -1, 10).ok());
}

TEST(CompactionTest, PositionsAndTurnsFollowTheDroppedRanges) {
  const std::vector<TokenRange> dropped = {{4, 10}, {20, 25}};
  EXPECT_EQ(MapPosition(dropped, 0), 0);
  EXPECT_EQ(MapPosition(dropped, 3), 3);
  EXPECT_EQ(MapPosition(dropped, 4), -1);
  EXPECT_EQ(MapPosition(dropped, 9), -1);
  EXPECT_EQ(MapPosition(dropped, 10), 4);
  EXPECT_EQ(MapPosition(dropped, 19), 13);
  EXPECT_EQ(MapPosition(dropped, 24), -1);
  EXPECT_EQ(MapPosition(dropped, 25), 14);
  std::vector<SessionTurn> turns = {{0, 0}, {2, 1}, {6, 2}, {10, 3}, {22, 4}, {30, 5}};
  MapTurns(dropped, &turns);
  const std::vector<int64_t> want = {0, 2, 4, 4, 14, 19};
  for (size_t i = 0; i < turns.size(); ++i) {
    EXPECT_EQ(turns[i].token_start, want[i]) << "turn " << i;
    EXPECT_EQ(turns[i].message_start, static_cast<int64_t>(i));
  }
}

// The score cut keeps the sinks, the recent tokens, and the best-scored of the rest after the
// max-pool over neighbours; what it drops comes back as merged, sorted ranges.
TEST(CompactionTest, ScoreCutKeepsSinksRecentAndTheMostAttended) {
  std::vector<float> mass(40, 0.0f);
  mass[10] = 5.0f;  // pooled: 8..12 score 5
  mass[25] = 3.0f;  // pooled: 23..27 score 3
  mass[2] = 9.0f;   // a sink: pools onto 3 and 4 too (4 is a candidate)
  auto dropped = ScoreCut(mass, /*sinks=*/4, /*recent=*/6, /*keep=*/4 + 6 + 7);
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  // 7 kept between: 4 (pooled 9), then 8..12 (5), then 23 (3, the earliest of 23..27).
  const std::vector<TokenRange> want = {{5, 8}, {13, 23}, {24, 34}};
  EXPECT_EQ(*dropped, want);
  int64_t kept = 40;
  for (const TokenRange& r : *dropped) kept -= r.size();
  EXPECT_EQ(kept, 17);
  // Nothing to choose: everything between the sinks and the recent tokens dropped.
  auto all = ScoreCut(mass, 4, 6, 10);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all, (std::vector<TokenRange>{{4, 34}}));
  EXPECT_FALSE(ScoreCut(mass, 4, 6, 9).ok());   // sinks + recent do not fit
  EXPECT_FALSE(ScoreCut(mass, 4, 6, 40).ok());  // nothing dropped
}

TEST(CompactionTest, ReplacedRangeMovesTheTurnsAfterIt) {
  std::vector<SessionTurn> turns = {{0, 0}, {5, 1}, {12, 2}, {30, 3}, {41, 4}};
  MapTurnsReplaced({5, 30}, 7, &turns);  // 25 tokens become 7
  const std::vector<int64_t> want = {0, 5, 5, 12, 23};
  for (size_t i = 0; i < turns.size(); ++i) EXPECT_EQ(turns[i].token_start, want[i]) << i;
}

TEST(CompactionTest, RewindFloorIsTheLatestCompactionsTurns) {
  std::vector<CompactionRecord> log;
  EXPECT_EQ(RewindFloor(log), 0);
  EXPECT_EQ(CompactedTokens(log), 0);
  log.push_back({.policy = "window", .dropped = {{4, 10}}, .position_shift = -6, .turns = 3});
  log.push_back({.policy = "window", .dropped = {{4, 8}}, .summarized = {{8, 9}}, .turns = 5});
  EXPECT_EQ(RewindFloor(log), 5);
  EXPECT_EQ(CompactedTokens(log), 6 + 4 + 1);
}

}  // namespace
}  // namespace mnemo::cache
