// `mnemo generate` end to end: real processes, real models.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/model/test_model.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mnemo {
namespace {

using nlohmann::json;
using testing::CommandResult;
using ::testing::HasSubstr;

CommandResult Generate(std::vector<std::string> args) {
  args.insert(args.begin(), {testing::MnemoBinary(), "generate"});
  return testing::RunCommand(args);
}

TEST(MnemoGenerate, Stories260KTellsAStoryAboutLily) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  CommandResult r = Generate({testing::StoriesGgufPath(), "--prompt", "Once upon a time",
                              "--temperature", "0", "--max-tokens", "48"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::StartsWith(", there was a little girl named Lily."));
  EXPECT_THAT(r.err, HasSubstr("tokens/s"));
  EXPECT_THAT(r.err, HasSubstr("prompt 5 tokens"));
}

TEST(MnemoGenerate, JsonHasIdsTextTimingsAndTopLogprobs) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  CommandResult r =
      Generate({testing::StoriesGgufPath(), "--prompt", "Once upon a time", "--temperature", "0",
                "--max-tokens", "20", "--json", "--top-logprobs", "4", "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  ASSERT_TRUE(j["prompt_ids"].is_array());
  EXPECT_EQ(j["prompt_ids"][0], 1);
  EXPECT_EQ(j["prompt_ids"].size(), 5u);
  ASSERT_EQ(j["ids"].size(), 20u);
  EXPECT_THAT(j["text"].get<std::string>(), HasSubstr("Lily"));
  EXPECT_EQ(j["finish_reason"], "length");
  const json& t = j["timings"];
  for (const char* key :
       {"prompt_tokens", "prompt_seconds", "prompt_tokens_per_second", "generated_tokens",
        "generation_seconds", "generation_tokens_per_second"}) {
    EXPECT_TRUE(t.contains(key)) << key;
  }
  EXPECT_EQ(t["prompt_tokens"], 5);
  const json& top = j["top_logprobs"];
  ASSERT_EQ(top.size(), 20u);
  for (size_t i = 0; i < top.size(); ++i) {
    ASSERT_EQ(top[i].size(), 4u);
    EXPECT_EQ(top[i][0]["id"], j["ids"][i]);  // greedy: the most likely
    for (size_t k = 1; k < 4; ++k) {
      EXPECT_GE(top[i][k - 1]["logprob"].get<double>(), top[i][k]["logprob"].get<double>());
    }
  }

  // Greedy is deterministic across thread counts.
  CommandResult r2 =
      Generate({testing::StoriesGgufPath(), "--prompt", "Once upon a time", "--temperature", "0",
                "--max-tokens", "20", "--json", "--threads", "2"});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ(json::parse(r2.out)["ids"], j["ids"]);
}

TEST(MnemoGenerate, SeededSamplingIsReproducible) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  std::vector<std::string> args = {testing::StoriesGgufPath(),
                                   "--prompt",
                                   "Tom was",
                                   "--temperature",
                                   "1.0",
                                   "--top-k",
                                   "20",
                                   "--top-p",
                                   "0.9",
                                   "--min-p",
                                   "0.01",
                                   "--seed",
                                   "42",
                                   "--max-tokens",
                                   "30",
                                   "--json"};
  CommandResult a = Generate(args);
  CommandResult b = Generate(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(json::parse(a.out)["ids"], json::parse(b.out)["ids"]);
  EXPECT_EQ(json::parse(a.out)["seed"], 42);
}

TEST(MnemoGenerate, ChatOnATestModel) {
  const std::string path = testing::MakeTempDir() + "/chat.gguf";
  ASSERT_EQ(testing::RunCommand({testing::MnemoBinary(), "make-test-model", "--arch", "qwen3",
                                 "--dtype", "q8_0", path})
                .exit_code,
            0);
  CommandResult r = Generate(
      {path, "--prompt", "hello", "--chat", "--temperature", "0", "--max-tokens", "5", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["prompt_ids"][0], engine::kTestModelImStart);
  EXPECT_LE(j["ids"].size(), 5u);
}

TEST(MnemoGenerate, ErrorsAreOneLineAndNonZero) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  const std::string m = testing::StoriesGgufPath();
  struct Case {
    std::vector<std::string> args;
    int code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{m}, 2, "--prompt"},
      {{m, "--prompt", ""}, 1, "empty prompt"},
      {{m, "--prompt", "x", "--device", "cuda"}, 1, "device cuda:0: "},
      {{m, "--prompt", "x", "--device", "cuda:1"}, 1, "device cuda:1: "},
      {{m, "--prompt", "x", "--device", "tpu"}, 2, "--device"},
      {{m, "--prompt", "x", "--max-tokens", "5000"}, 1, "context length"},
      {{m, "--prompt", "x", "--temperature", "-1"}, 1, "temperature"},
      {{m, "--prompt", "x", "--top-logprobs", "3"}, 2, "--json"},
      {{m, "--prompt", "x", "--chat"}, 1, "chat template"},
      {{"/nonexistent.gguf", "--prompt", "x"}, 1, "nonexistent"},
  };
  for (const Case& c : cases) {
    CommandResult r = Generate(c.args);
    EXPECT_EQ(r.exit_code, c.code) << c.args.back() << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.message)) << c.args.back();
    EXPECT_THAT(r.err, ::testing::StartsWith("mnemo generate: "));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  CommandResult help = Generate({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("--top-logprobs"));
}

TEST(MnemoGenerate, SmolLm2AnswersInEnglish) {
  MNEMO_REQUIRE_FILE(testing::SmolLm2GgufPath());
  CommandResult r = Generate({testing::SmolLm2GgufPath(), "--prompt", "The capital of France is",
                              "--temperature", "0", "--max-tokens", "8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Paris"));
  CommandResult chat =
      Generate({testing::SmolLm2GgufPath(), "--prompt", "What is the capital of France?", "--chat",
                "--temperature", "0", "--max-tokens", "16"});
  ASSERT_EQ(chat.exit_code, 0) << chat.err;
  EXPECT_EQ(chat.out, "The capital of France is Paris.\n");
  EXPECT_THAT(chat.err, HasSubstr("(stop)"));
}

}  // namespace
}  // namespace mnemo
