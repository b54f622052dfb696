#include "engine/stop.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/model/test_model.h"
#include "engine/model/tokenizer.h"
#include "engine/model/unicode.h"

namespace mnemo::engine {
namespace {

constexpr TokenId kEos = 2;
constexpr TokenId kEot = 7;

StopParams Params(std::vector<std::string> stops, int max_tokens = -1) {
  StopParams p;
  p.stop_strings = std::move(stops);
  p.max_tokens = max_tokens;
  return p;
}

// Feeds (id, delta) pairs; returns everything emitted (including a final Flush when the
// checker has not finished).
struct FedRun {
  std::string text;
  std::vector<std::string> pieces;  // what each Push returned
  FinishReason finish;
};

FedRun Feed(StopChecker& stop, const std::vector<std::pair<TokenId, std::string>>& tokens) {
  FedRun run;
  for (const auto& [id, delta] : tokens) {
    if (stop.finish() != FinishReason::kNone) break;
    run.pieces.push_back(stop.Push(id, delta));
    run.text += run.pieces.back();
  }
  run.finish = stop.finish();
  if (run.finish == FinishReason::kNone) run.text += stop.Flush();
  return run;
}

TEST(StopTest, NoStopStringsEmitsEverythingAtOnce) {
  StopChecker stop(Params({}), {kEos});
  EXPECT_EQ(stop.Push(10, "Hello"), "Hello");
  EXPECT_EQ(stop.Push(11, " world"), " world");
  EXPECT_EQ(stop.finish(), FinishReason::kNone);
  EXPECT_EQ(stop.Flush(), "");
}

TEST(StopTest, StopStringSplitOverThreeTokens) {
  StopChecker stop(Params({"STOP"}), {kEos});
  const FedRun run = Feed(stop, {{1, "abc S"}, {1, "T"}, {1, "OP tail"}, {1, "never"}});
  EXPECT_EQ(run.finish, FinishReason::kStop);
  EXPECT_EQ(run.text, "abc ");
  ASSERT_EQ(run.pieces.size(), 3u);
  EXPECT_EQ(run.pieces[0], "abc ");  // "S" is held
  EXPECT_EQ(run.pieces[1], "");      // "ST" is held
  EXPECT_EQ(run.pieces[2], "");      // the stop string and what follows are dropped
  EXPECT_EQ(stop.matched_stop(), "STOP");
  EXPECT_EQ(stop.num_tokens(), 3);
  EXPECT_EQ(stop.Push(1, "more"), "");
  EXPECT_EQ(stop.num_tokens(), 3);
}

TEST(StopTest, PartialMatchThatDivergesIsReleased) {
  StopChecker stop(Params({"</answer>"}), {kEos});
  EXPECT_EQ(stop.Push(1, "x </an"), "x ");
  EXPECT_EQ(stop.Push(1, "swer"), "");
  // Diverges: everything held comes out, except a new possible start ("<").
  EXPECT_EQ(stop.Push(1, "s> <"), "</answers> ");
  EXPECT_EQ(stop.Push(1, "b>"), "<b>");
  EXPECT_EQ(stop.finish(), FinishReason::kNone);
}

TEST(StopTest, OverlappingPrefixesHoldTheLongestPossibleStart) {
  // "aab": after "aa" both "a" positions could start it.
  StopChecker stop(Params({"aab"}), {});
  EXPECT_EQ(stop.Push(1, "xaa"), "x");
  EXPECT_EQ(stop.Push(1, "a"), "a");  // "aaa": only the last two can still start "aab"
  EXPECT_EQ(stop.Push(1, "b!"), "");
  EXPECT_EQ(stop.finish(), FinishReason::kStop);
}

TEST(StopTest, MultipleStopStringsFirstOccurrenceWins) {
  StopChecker stop(Params({"World", "lo W", "\n\n"}), {kEos});
  const FedRun run = Feed(stop, {{1, "Hel"}, {1, "lo Wor"}, {1, "ld\n\n"}});
  EXPECT_EQ(run.finish, FinishReason::kStop);
  EXPECT_EQ(run.text, "Hel");
  EXPECT_EQ(stop.matched_stop(), "lo W");

  StopChecker other(Params({"World", "\n\n"}), {kEos});
  const FedRun second = Feed(other, {{1, "a\n"}, {1, "\nWorld"}});
  EXPECT_EQ(second.text, "a");
  EXPECT_EQ(other.matched_stop(), "\n\n");
}

TEST(StopTest, StopStringInsideOneToken) {
  StopChecker stop(Params({"##"}), {kEos});
  EXPECT_EQ(stop.Push(1, "one ## two"), "one ");
  EXPECT_EQ(stop.finish(), FinishReason::kStop);
}

TEST(StopTest, MaxTokensReleasesHeldText) {
  StopChecker stop(Params({"STOP"}, 3), {kEos});
  EXPECT_EQ(stop.Push(1, "a"), "a");
  EXPECT_EQ(stop.Push(1, "b"), "b");
  EXPECT_EQ(stop.finish(), FinishReason::kNone);
  EXPECT_EQ(stop.Push(1, "ST"), "ST");  // the last token: nothing is held
  EXPECT_EQ(stop.finish(), FinishReason::kLength);
  EXPECT_EQ(FinishReasonName(stop.finish()), "length");
  EXPECT_EQ(stop.Push(1, "x"), "");
  EXPECT_EQ(stop.num_tokens(), 3);
}

TEST(StopTest, StopStringOnTheLastAllowedTokenIsStop) {
  StopChecker stop(Params({"END"}, 2), {kEos});
  EXPECT_EQ(stop.Push(1, "xE"), "x");
  EXPECT_EQ(stop.Push(1, "ND"), "");
  EXPECT_EQ(stop.finish(), FinishReason::kStop);
}

TEST(StopTest, MaxTokensZeroIsFinishedAtOnce) {
  StopChecker stop(Params({}, 0), {kEos});
  EXPECT_EQ(stop.finish(), FinishReason::kLength);
}

TEST(StopTest, EogTokenStopsAndReleasesHeldText) {
  StopChecker stop(Params({"STOP"}), {kEot, kEos});
  EXPECT_EQ(stop.Push(1, "hi S"), "hi ");
  EXPECT_EQ(stop.Push(kEot, "<|im_end|>"), "S");  // held text released, eog text dropped
  EXPECT_EQ(stop.finish(), FinishReason::kStop);
  EXPECT_EQ(FinishReasonName(stop.finish()), "stop");
  EXPECT_EQ(stop.matched_stop(), "");

  StopChecker eos(Params({}), {kEot, kEos});
  EXPECT_EQ(eos.Push(kEos, ""), "");
  EXPECT_EQ(eos.finish(), FinishReason::kStop);
}

TEST(StopTest, IgnoreEosKeepsGoing) {
  StopParams p = Params({}, 3);
  p.ignore_eos = true;
  StopChecker stop(p, {kEos});
  EXPECT_EQ(stop.Push(kEos, ""), "");
  EXPECT_EQ(stop.finish(), FinishReason::kNone);
  stop.Push(1, "a");
  stop.Push(kEos, "");
  EXPECT_EQ(stop.finish(), FinishReason::kLength);
}

TEST(StopTest, Utf8MultibyteTextAndStopStrings) {
  // "。" is E3 80 82 and "é" is C3 A9; the stop string starts with a multibyte character.
  StopChecker stop(Params({"。终"}), {kEos});
  const FedRun run = Feed(stop, {{1, "café "}, {1, "日本。"}, {1, "x。"}, {1, "终わり"}});
  EXPECT_EQ(run.finish, FinishReason::kStop);
  EXPECT_EQ(run.text, "café 日本。x");
  ASSERT_EQ(run.pieces.size(), 4u);
  EXPECT_EQ(run.pieces[0], "café ");
  EXPECT_EQ(run.pieces[1], "日本");  // "。" held: a possible start
  EXPECT_EQ(run.pieces[2], "。x");   // released; the new "。" held
  EXPECT_EQ(run.pieces[3], "");
  // Every piece is whole characters.
  for (const std::string& piece : run.pieces) EXPECT_TRUE(unicode::IsValidUtf8(piece)) << piece;
}

// End to end with a real byte-level BPE tokenizer: token pieces split multibyte characters,
// the StreamingDetokenizer reassembles them, the StopChecker cuts at the stop string.
TEST(StopTest, WithTokenizerAndStreamingDetokenizer) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      Tokenizer::Create(TestModelTokenizerData());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::string text = "naïve café — 日本語 END of text";
  std::vector<TokenId> ids = (*tokenizer)->Encode(text, EncodeOptions{.add_bos = false});
  ASSERT_GT(ids.size(), 5u);
  for (const char* stop_string : {"END", "日本", "é —"}) {
    StopChecker stop(Params({stop_string}), **tokenizer);
    StreamingDetokenizer detok(**tokenizer);
    std::string out;
    for (TokenId id : ids) {
      if (stop.finish() != FinishReason::kNone) break;
      const std::string piece = stop.Push(id, detok.Push(id));
      EXPECT_TRUE(unicode::IsValidUtf8(piece));
      out += piece;
    }
    EXPECT_EQ(stop.finish(), FinishReason::kStop) << stop_string;
    EXPECT_EQ(out, text.substr(0, text.find(stop_string)));
  }
  // <|endoftext|> is one of the tokenizer's end-of-generation tokens (listed after
  // <|im_end|> in TokenizerData::eog, which the checker does not require to be sorted).
  ASSERT_EQ((*tokenizer)->data().eog.size(), 2u);
  StopChecker stop(Params({"zzz"}), **tokenizer);
  StreamingDetokenizer detok(**tokenizer);
  std::string out;
  ids.push_back(kTestModelEndOfText);
  ids.push_back(ids.front());
  for (TokenId id : ids) {
    if (stop.finish() != FinishReason::kNone) break;
    out += stop.Push(id, detok.Push(id));
  }
  EXPECT_EQ(stop.finish(), FinishReason::kStop);
  EXPECT_EQ(out, text);
  EXPECT_EQ(stop.num_tokens(), static_cast<int64_t>(ids.size()) - 1);
}

TEST(StopTest, FlushReleasesHeldTextOnce) {
  StopChecker stop(Params({"abc"}), {kEos});
  EXPECT_EQ(stop.Push(1, "xab"), "x");
  EXPECT_EQ(stop.Flush(), "ab");
  EXPECT_EQ(stop.Flush(), "");
  EXPECT_EQ(stop.finish(), FinishReason::kNone);
}

TEST(StopTest, ValidateNamesTheField) {
  EXPECT_TRUE(Params({"a", "b"}).Validate().ok());
  const absl::Status empty = Params({"a", ""}).Validate();
  EXPECT_EQ(empty.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(empty.message().find("stop_strings[1]"), absl::string_view::npos);
  const absl::Status many = Params(std::vector<std::string>(kMaxStopStrings + 1, "x")).Validate();
  EXPECT_EQ(many.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(many.message().find("stop_strings"), absl::string_view::npos);
  const absl::Status bad_utf8 = Params({"ok", "\x80x"}).Validate();
  EXPECT_EQ(bad_utf8.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_utf8.message().find("stop_strings[1]"), absl::string_view::npos);
}

}  // namespace
}  // namespace mnemo::engine
