// Generation: streaming, stopping, batching (batch invariance), thread-count determinism,
// chunked prefill, log-probabilities and clear errors.
#include "engine/generate.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/model.h"
#include "engine/model/test_model.h"
#include "tests/engine/reference_forward.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Model> OpenStories() {
  auto m = Model::Open(testing::StoriesGgufPath());
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

std::unique_ptr<Model> OpenTestModel(kernels::DType dtype) {
  static int counter = 0;
  const std::string path = absl::StrCat(testing::MakeTempDir(), "/g", counter++, ".gguf");
  TestModelOptions o;
  o.dtype = dtype;
  o.arch = Architecture::kQwen2;
  EXPECT_TRUE(WriteTestModel(o, path).ok());
  auto m = Model::Open(path);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

GenerateRequest Greedy(std::string prompt, int max_tokens) {
  GenerateRequest r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.stop.max_tokens = max_tokens;
  return r;
}

GenerateRequest Sampled(std::string prompt, int max_tokens, uint64_t seed) {
  GenerateRequest r;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0.9f;
  r.sampling.top_p = 0.95f;
  r.sampling.seed = seed;
  r.stop.max_tokens = max_tokens;
  return r;
}

TEST(Generate, Stories260KStreamsTheKnownStory) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  auto model = OpenStories();
  auto gen = Generator::Create(*model, {.threads = 2});
  ASSERT_TRUE(gen.ok()) << gen.status();
  std::string streamed;
  int pieces = 0;
  auto r = (*gen)->Generate(Greedy("Once upon a time", 64), [&](size_t i, std::string_view t) {
    EXPECT_EQ(i, 0u);
    streamed += t;
    ++pieces;
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->text, ::testing::StartsWith(", there was a little girl named Lily. She loved to "
                                             "play outside in the park."));
  EXPECT_EQ(streamed, r->text);
  EXPECT_GT(pieces, 10);
  EXPECT_EQ(r->prompt_ids.front(), 1);  // BOS
  EXPECT_EQ(r->ids.size(), 64u);
  EXPECT_EQ(r->finish, FinishReason::kLength);
  EXPECT_EQ(r->logprobs.size(), 64u);
  EXPECT_TRUE(r->top_logprobs.empty());
  EXPECT_EQ(r->timings.prompt_tokens, static_cast<int64_t>(r->prompt_ids.size()));
  EXPECT_EQ(r->timings.decode_tokens, 63);  // the first token comes from the prefill
  EXPECT_GT(r->timings.prompt_tokens_per_second(), 0.0);
  EXPECT_GT(r->timings.decode_tokens_per_second(), 0.0);

  // The same ids as the independent float64 reference.
  auto ref = testing::ReferenceModel::Create(*model);
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(r->ids, (*ref)->Greedy(r->prompt_ids, 64));
}

TEST(Generate, BatchInvariance) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  auto model = OpenStories();
  auto gen = Generator::Create(*model, {.threads = 2, .prefill_chunk = 7});
  ASSERT_TRUE(gen.ok()) << gen.status();
  const std::vector<GenerateRequest> requests = {
      Greedy("Once upon a time", 48), Sampled("Tom had a red ball and a small", 40, 11),
      Greedy("The", 64), Sampled("Lily saw a bird in the sky. The bird was", 30, 12)};
  std::vector<std::string> streamed(requests.size());
  auto batch =
      (*gen)->GenerateBatch(requests, [&](size_t i, std::string_view t) { streamed[i] += t; });
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->size(), requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    auto alone = (*gen)->Generate(requests[i]);
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ((*batch)[i].ids, alone->ids) << "request " << i;
    EXPECT_EQ((*batch)[i].text, alone->text) << "request " << i;
    EXPECT_EQ(streamed[i], alone->text) << "request " << i;
    EXPECT_FALSE(alone->ids.empty());
  }
}

TEST(Generate, SameIdsAtAnyThreadCountAndPrefillChunk) {
  auto model = OpenTestModel(kernels::DType::kQ4_K);
  ASSERT_NE(model, nullptr);
  std::vector<std::vector<TokenId>> runs;
  for (GeneratorOptions o : {GeneratorOptions{.threads = 1}, GeneratorOptions{.threads = 2},
                             GeneratorOptions{.threads = 2, .prefill_chunk = 3}}) {
    auto gen = Generator::Create(*model, o);
    ASSERT_TRUE(gen.ok()) << gen.status();
    for (const GenerateRequest& req :
         {Greedy("hello world, this is a test of the", 40), Sampled("abc def", 40, 5)}) {
      auto r = (*gen)->Generate(req);
      ASSERT_TRUE(r.ok()) << r.status();
      runs.push_back(r->ids);
    }
  }
  for (size_t i = 2; i < runs.size(); ++i) EXPECT_EQ(runs[i], runs[i % 2]) << "run " << i;
}

TEST(Generate, TopLogprobsAreSortedAndGreedyPicksTheFirst) {
  auto model = OpenTestModel(kernels::DType::kF32);
  auto gen = Generator::Create(*model, {.threads = 2});
  ASSERT_TRUE(gen.ok()) << gen.status();
  GenerateRequest req = Greedy("some text", 12);
  req.sampling.top_logprobs = 5;
  auto r = (*gen)->Generate(req);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->top_logprobs.size(), r->ids.size());
  for (size_t i = 0; i < r->ids.size(); ++i) {
    const auto& top = r->top_logprobs[i];
    ASSERT_EQ(top.size(), 5u);
    EXPECT_EQ(top[0].id, r->ids[i]);
    EXPECT_FLOAT_EQ(top[0].logprob, r->logprobs[i]);
    for (size_t j = 1; j < top.size(); ++j) EXPECT_GE(top[j - 1].logprob, top[j].logprob);
    EXPECT_LE(top[0].logprob, 0.0f);
  }
}

TEST(Generate, StopsAtStopStringsAndMaxTokens) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  auto model = OpenStories();
  auto gen = Generator::Create(*model, {.threads = 2});
  ASSERT_TRUE(gen.ok());
  GenerateRequest req = Greedy("Once upon a time", 64);
  req.stop.stop_strings = {"Lily"};
  auto r = (*gen)->Generate(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, ", there was a little girl named ");
  EXPECT_EQ(r->finish, FinishReason::kStop);
  auto r0 = (*gen)->Generate(Greedy("Once upon a time", 0));
  ASSERT_TRUE(r0.ok()) << r0.status();
  EXPECT_TRUE(r0->ids.empty());
  EXPECT_EQ(r0->finish, FinishReason::kLength);
}

TEST(Generate, ChatUsesTheModelTemplate) {
  auto model = OpenTestModel(kernels::DType::kF16);
  auto gen = Generator::Create(*model, {.threads = 2});
  ASSERT_TRUE(gen.ok());
  GenerateRequest req = Greedy("hi there", 8);
  req.chat = true;
  auto ids = (*gen)->PromptIds(req);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->front(), kTestModelImStart);
  EXPECT_EQ(std::count(ids->begin(), ids->end(), kTestModelImStart), 2);
  auto r = (*gen)->Generate(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->prompt_ids, *ids);
}

TEST(Generate, BadInputIsAClearError) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  auto model = OpenStories();
  auto gen = Generator::Create(*model, {.threads = 1});
  ASSERT_TRUE(gen.ok());
  auto empty = (*gen)->Generate(Greedy("", 4));
  EXPECT_TRUE(absl::IsInvalidArgument(empty.status())) << empty.status();
  EXPECT_THAT(std::string(empty.status().message()), HasSubstr("empty prompt"));

  auto too_long = (*gen)->Generate(Greedy("Once upon a time", 2047));
  EXPECT_TRUE(absl::IsInvalidArgument(too_long.status())) << too_long.status();
  EXPECT_THAT(std::string(too_long.status().message()), HasSubstr("context length 2048"));
  std::string long_prompt;
  for (int i = 0; i < 700; ++i) long_prompt += "the cat sat. ";
  auto over = (*gen)->Generate(Greedy(long_prompt, 1));
  EXPECT_TRUE(absl::IsInvalidArgument(over.status())) << over.status();

  GenerateRequest chat = Greedy("hi", 4);
  chat.chat = true;
  auto no_template = (*gen)->Generate(chat);
  EXPECT_TRUE(absl::IsInvalidArgument(no_template.status())) << no_template.status();
  EXPECT_THAT(std::string(no_template.status().message()), HasSubstr("chat template"));

  GenerateRequest bad_sampling = Greedy("Once", 4);
  bad_sampling.sampling.temperature = -1.0f;
  EXPECT_TRUE(absl::IsInvalidArgument((*gen)->Generate(bad_sampling).status()));

  GenerateRequest bad_id = Greedy("", 4);
  bad_id.prompt_ids = {1, 512};
  EXPECT_TRUE(absl::IsInvalidArgument((*gen)->Generate(bad_id).status()));

  EXPECT_TRUE(
      absl::IsInvalidArgument((*gen)->GenerateBatch(std::span<const GenerateRequest>()).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      Generator::Create(*model, {.kv_dtype = kernels::DType::kQ8_0}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Generator::Create(*model, {.prefill_chunk = 0}).status()));

  // The generator still works after all of these.
  EXPECT_TRUE((*gen)->Generate(Greedy("Once", 4)).ok());
}

TEST(Generate, KvBudgetExhaustedIsResourceExhausted) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  auto model = OpenStories();
  // stories260K: 5 layers x 2 x 4 heads x 16 tokens x 8 dims x 2 bytes = 10 KiB per block.
  auto gen = Generator::Create(*model, {.threads = 1, .kv_budget_bytes = 4 * 10240});
  ASSERT_TRUE(gen.ok()) << gen.status();
  auto fits = (*gen)->Generate(Greedy("Once upon a time", 40));  // 45 tokens: 3 blocks
  EXPECT_TRUE(fits.ok()) << fits.status();
  auto r = (*gen)->Generate(Greedy("Once upon a time", 100));
  EXPECT_TRUE(absl::IsResourceExhausted(r.status())) << r.status();
  const std::vector<GenerateRequest> two = {Greedy("Once upon a time", 40),
                                            Greedy("Once upon a time", 40)};
  EXPECT_TRUE(absl::IsResourceExhausted((*gen)->GenerateBatch(two).status()));
  // Nothing leaked: the budget still serves a request that fits.
  EXPECT_TRUE((*gen)->Generate(Greedy("Once upon a time", 40)).ok());
}

}  // namespace
}  // namespace mnemo::engine
