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
  for (CompactionPolicy p : {CompactionPolicy::kNone, CompactionPolicy::kWindow}) {
    auto back = ParseCompactionPolicy(CompactionPolicyName(p));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, p);
  }
  auto bad = ParseCompactionPolicy("sliding");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("\"sliding\""));
  EXPECT_THAT(bad.status().message(), HasSubstr("window"));
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
