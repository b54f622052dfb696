// TurnParams::prompt_logprobs: a turn's own tokens scored by teacher forcing equal the
// log-probabilities the sampler reported when the same tokens were generated.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "engine/engine.h"
#include "tests/engine/engine_test_util.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

TEST(PromptLogprobs, EqualTheSampledTokensLogprobs) {
  auto model = TestModel(Architecture::kLlama, 256);
  auto e = MakeEngine(*model);
  const std::vector<TokenId> prompt = testing::SomeTokens(37, kTestModelVocabSize, 4);
  TurnParams gen = TokenTurn(prompt, 6);
  gen.stop.ignore_eos = true;
  const TurnResult g = Await(e->Generate("t", gen));
  ASSERT_TRUE(g.status.ok()) << g.status;
  ASSERT_EQ(g.ids.size(), 6u);

  // A stateless request scoring prompt + the first five generated tokens.
  std::vector<TokenId> text = prompt;
  text.insert(text.end(), g.ids.begin(), g.ids.end() - 1);
  TurnParams score = TokenTurn(text, 1);
  score.stop.ignore_eos = true;
  score.prompt_logprobs = true;
  const TurnResult s = Await(e->Generate("u", score));
  ASSERT_TRUE(s.status.ok()) << s.status;
  ASSERT_EQ(s.prompt_logprobs.size(), text.size());
  EXPECT_TRUE(std::isnan(s.prompt_logprobs[0]));
  for (size_t i = 1; i < text.size(); ++i) {
    EXPECT_LE(s.prompt_logprobs[i], 0.0f) << i;
  }
  for (size_t i = 0; i + 1 < g.ids.size(); ++i) {
    EXPECT_NEAR(s.prompt_logprobs[prompt.size() + i], g.logprobs[i], 1e-4) << "token " << i;
  }
  // The sixth token is sampled from the last row, as without scoring.
  ASSERT_EQ(s.ids.size(), 1u);
  EXPECT_EQ(s.ids[0], g.ids.back());

  // A session turn scores its own tokens; the first one's logits belong to the history.
  const std::string id = NewSession(*e, "t");
  ASSERT_TRUE(Await(e->Continue("t", id, TokenTurn(prompt, 0))).status.ok());
  TurnParams turn = TokenTurn(std::vector<TokenId>(g.ids.begin(), g.ids.end() - 1), 0);
  turn.prompt_logprobs = true;
  const TurnResult t = Await(e->Continue("t", id, turn));
  ASSERT_TRUE(t.status.ok()) << t.status;
  ASSERT_EQ(t.prompt_logprobs.size(), 5u);
  EXPECT_TRUE(std::isnan(t.prompt_logprobs[0]));
  for (size_t i = 1; i < 5; ++i) EXPECT_NEAR(t.prompt_logprobs[i], g.logprobs[i], 1e-4) << i;
}

}  // namespace
}  // namespace mnemo::engine
