// End-to-end tests of the `mnemo` binary: real models, real processes.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "engine/model/model.h"
#include "engine/model/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace mnemo {
namespace {

using nlohmann::json;
using testing::MnemoBinary;
using testing::RunCommand;

json RunJson(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {MnemoBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = RunCommand(argv);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return json::parse(r.out, nullptr, /*allow_exceptions=*/false);
}

TEST(MnemoInspect, Stories260KFacts) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  json j = RunJson({"inspect", testing::StoriesGgufPath(), "--json"});
  ASSERT_FALSE(j.is_discarded());
  const json& c = j["config"];
  EXPECT_EQ(j["format"], "gguf");
  EXPECT_EQ(j["gguf_version"], 3);
  EXPECT_EQ(c["architecture"], "llama");
  EXPECT_EQ(c["n_layers"], 5);
  EXPECT_EQ(c["d_model"], 64);
  EXPECT_EQ(c["n_heads"], 8);
  EXPECT_EQ(c["n_kv_heads"], 4);
  EXPECT_EQ(c["head_dim"], 8);
  EXPECT_EQ(c["d_ff"], 172);
  EXPECT_EQ(c["vocab_size"], 512);
  EXPECT_EQ(c["context_length"], 2048);
  EXPECT_EQ(c["rope"]["rotary_dims"], 8);
  EXPECT_EQ(c["rope"]["style"], "normal");
  EXPECT_DOUBLE_EQ(c["rope"]["base"].get<double>(), 10000.0);
  EXPECT_NEAR(c["norm_eps"].get<double>(), 1e-5, 1e-9);
  EXPECT_EQ(c["tied_embeddings"], false);
  EXPECT_EQ(j["tokenizer"]["kind"], "sentencepiece");
  EXPECT_EQ(j["tokenizer"]["n_tokens"], 512);
  EXPECT_EQ(j["tokenizer"]["special"]["bos"]["id"], 1);
  EXPECT_EQ(j["tokenizer"]["special"]["eos"]["id"], 2);
  EXPECT_EQ(j["chat_template"]["present"], false);
  EXPECT_EQ(j["totals"]["tensors"], 48);
  EXPECT_EQ(j["totals"]["params"], 292800);
  EXPECT_EQ(j["totals"]["bytes"], 292800 * 4);
  EXPECT_EQ(j["tensors"].size(), 48u);
  EXPECT_EQ(j["fingerprint"].get<std::string>().size(), 32u);
  // Row-major shapes: the token embedding is [vocab, d_model].
  for (const json& t : j["tensors"]) {
    if (t["name"] == "token_embd.weight") {
      EXPECT_EQ(t["shape"], json::array({512, 64}));
    }
    if (t["name"] == "blk.0.attn_k.weight") {
      EXPECT_EQ(t["shape"], json::array({32, 64}));
    }
  }
}

TEST(MnemoInspect, SmolLm2Facts) {
  MNEMO_REQUIRE_FILE(testing::SmolLm2GgufPath());
  json j = RunJson({"inspect", testing::SmolLm2GgufPath(), "--json"});
  ASSERT_FALSE(j.is_discarded());
  const json& c = j["config"];
  EXPECT_EQ(c["n_layers"], 30);
  EXPECT_EQ(c["d_model"], 576);
  EXPECT_EQ(c["n_heads"], 9);
  EXPECT_EQ(c["n_kv_heads"], 3);
  EXPECT_EQ(c["head_dim"], 64);
  EXPECT_EQ(c["d_ff"], 1536);
  EXPECT_EQ(c["vocab_size"], 49152);
  EXPECT_EQ(c["context_length"], 8192);
  EXPECT_DOUBLE_EQ(c["rope"]["base"].get<double>(), 100000.0);
  EXPECT_EQ(c["tied_embeddings"], true);
  EXPECT_EQ(j["tokenizer"]["kind"], "bpe");
  EXPECT_EQ(j["tokenizer"]["pre"], "smollm");
  EXPECT_EQ(j["tokenizer"]["n_merges"], 48900);
  EXPECT_EQ(j["chat_template"]["family"], "chatml");
  EXPECT_EQ(j["totals"]["tensors"], 272);
  EXPECT_EQ(j["totals"]["by_dtype"]["q4_1"]["tensors"], 210);
  EXPECT_EQ(j["totals"]["by_dtype"]["q8_0"]["tensors"], 1);
  EXPECT_EQ(j["totals"]["by_dtype"]["f32"]["tensors"], 61);
}

TEST(MnemoInspect, TextOutputNamesTheFacts) {
  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  auto r = RunCommand({MnemoBinary(), "inspect", testing::StoriesGgufPath()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("blk.4.ffn_down.weight"), std::string::npos);
  EXPECT_NE(r.out.find("8 query, 4 key/value"), std::string::npos);
  EXPECT_NE(r.out.find("sentencepiece"), std::string::npos);
}

TEST(MnemoInspect, BadFilesGiveOneLineErrors) {
  auto missing = RunCommand({MnemoBinary(), "inspect", "/nonexistent/model.gguf"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("/nonexistent/model.gguf"), std::string::npos) << missing.err;

  MNEMO_REQUIRE_FILE(testing::StoriesGgufPath());
  const std::string dir = testing::MakeTempDir();
  const std::string truncated = dir + "/truncated.gguf";
  {
    std::ifstream in(testing::StoriesGgufPath(), std::ios::binary);
    std::vector<char> head(100000);
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    std::ofstream out(truncated, std::ios::binary);
    out.write(head.data(), static_cast<std::streamsize>(head.size()));
  }
  auto r = RunCommand({MnemoBinary(), "inspect", truncated});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("gguf"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(MnemoCommand, UsageErrorsAndHelp) {
  EXPECT_EQ(RunCommand({MnemoBinary()}).exit_code, 2);
  EXPECT_EQ(RunCommand({MnemoBinary(), "frobnicate"}).exit_code, 2);
  for (const char* cmd : {"inspect", "tokenize", "make-test-model"}) {
    auto r = RunCommand({MnemoBinary(), cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.out.find("usage: mnemo"), std::string::npos) << cmd;
  }
  auto bad_flag = RunCommand({MnemoBinary(), "inspect", "x.gguf", "--jsn"});
  EXPECT_EQ(bad_flag.exit_code, 2);
  EXPECT_NE(bad_flag.err.find("--jsn"), std::string::npos);
}

TEST(MnemoTokenize, MatchesTheLibrary) {
  MNEMO_REQUIRE_FILE(testing::SmolLm2GgufPath());
  const std::string text = "<|im_start|>user\nHello, world! 12345 naïve 日本語<|im_end|>";
  for (bool special : {false, true}) {
    std::vector<std::string> args = {"tokenize", testing::SmolLm2GgufPath(), "--json", text};
    if (special) args.push_back("--special");
    json j = RunJson(args);
    ASSERT_FALSE(j.is_discarded());
    auto model = engine::Model::Open(testing::SmolLm2GgufPath());
    ASSERT_TRUE(model.ok()) << model.status();
    auto tok = engine::Tokenizer::Create((*model)->tokenizer_data());
    ASSERT_TRUE(tok.ok()) << tok.status();
    engine::EncodeOptions opts;
    opts.parse_special = special;
    const auto ids = (*tok)->Encode(text, opts);
    EXPECT_EQ(j["ids"].get<std::vector<int>>(), std::vector<int>(ids.begin(), ids.end()));
    EXPECT_EQ(j["pieces"].size(), ids.size());
    // With --special the markers are single tokens.
    const bool has_im_start = std::find(ids.begin(), ids.end(), 1) != ids.end();
    EXPECT_EQ(has_im_start, special);
  }
}

TEST(MnemoMakeTestModel, WritesModelsThatInspectReads) {
  const std::string dir = testing::MakeTempDir();
  const std::string gguf = dir + "/qwen2.gguf";
  auto w = RunCommand({MnemoBinary(), "make-test-model", "--arch", "qwen2", "--dtype", "q4_k",
                       "--seed", "7", gguf});
  ASSERT_EQ(w.exit_code, 0) << w.err;
  json j = RunJson({"inspect", gguf, "--json"});
  EXPECT_EQ(j["config"]["architecture"], "qwen2");
  EXPECT_EQ(j["config"]["qkv_bias"], true);
  EXPECT_EQ(j["config"]["rope"]["style"], "neox");
  EXPECT_GT(j["totals"]["by_dtype"]["q4_k"]["tensors"].get<int>(), 0);

  const std::string st = dir + "/qwen3-st";
  w = RunCommand({MnemoBinary(), "make-test-model", "--arch", "qwen3", "--dtype", "bf16",
                  "--format", "safetensors", st});
  ASSERT_EQ(w.exit_code, 0) << w.err;
  json s = RunJson({"inspect", st, "--json"});
  EXPECT_EQ(s["format"], "safetensors");
  EXPECT_EQ(s["config"]["architecture"], "qwen3");
  EXPECT_EQ(s["config"]["qk_norm"], true);
  EXPECT_EQ(s["chat_template"]["family"], "chatml");

  // Same seed, same bytes: the fingerprint is a function of the content.
  const std::string again = dir + "/qwen2-again.gguf";
  ASSERT_EQ(RunCommand({MnemoBinary(), "make-test-model", "--arch", "qwen2", "--dtype", "q4_k",
                        "--seed", "7", again})
                .exit_code,
            0);
  EXPECT_EQ(RunJson({"inspect", again, "--json"})["fingerprint"], j["fingerprint"]);

  auto bad = RunCommand(
      {MnemoBinary(), "make-test-model", "--arch", "gpt5", "--dtype", "f32", dir + "/x.gguf"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("gpt5"), std::string::npos);
  auto bad_st = RunCommand({MnemoBinary(), "make-test-model", "--arch", "llama", "--dtype", "q4_k",
                            "--format", "safetensors", dir + "/y"});
  EXPECT_EQ(bad_st.exit_code, 1);
  EXPECT_FALSE(testing::FileExists(dir + "/x.gguf"));
}

}  // namespace
}  // namespace mnemo
