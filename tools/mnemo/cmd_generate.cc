// mnemo generate MODEL --prompt TEXT [--chat] [--max-tokens N] [--temperature T] [--top-k K]
//                [--top-p P] [--min-p P] [--seed S] [--threads N] [--device cpu|cuda[:N]]
//                [--json] [--top-logprobs K]
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "engine/generate.h"
#include "engine/model/model.h"
#include "nlohmann/json.hpp"
#include "tools/mnemo/cli.h"
#include "tools/mnemo/commands.h"
#include "tools/mnemo/sampling_flags.h"

namespace mnemo::cli {
namespace {

using nlohmann::json;

const CommandSpec& Spec() {
  static const CommandSpec spec = {
      .name = "generate",
      .usage =
          "MODEL --prompt TEXT [--chat] [--max-tokens N] [--temperature T] [--top-k K]\n"
          "       [--top-p P] [--min-p P] [--seed S] [--threads N] [--device cpu|cuda[:N]]\n"
          "       [--json] [--top-logprobs K]",
      .summary =
          "Generates a continuation of TEXT and streams it to stdout; prompt and\n"
          "generation speeds go to stderr at the end. --temperature 0 is greedy and\n"
          "deterministic (the same ids at any thread count).",
      .flags =
          JoinFlags({{{"prompt", true, "TEXT", "the prompt (required)"},
                      {"chat", false, "", "render TEXT as a user message with the chat template"},
                      {"max-tokens", true, "N", "generate at most N tokens (default 128)"}},
                     SamplingFlagSpecs(),
                     {{"threads", true, "N", "CPU threads, 0 = all (default 0)"},
                      {"device", true, "DEV", "cpu (default) or cuda[:N]"},
                      {"json", false, "", "print one JSON object with ids, text and timings"},
                      {"top-logprobs", true, "K",
                       "with --json: the K most likely ids per position (0-20)"}}}),
      .min_positionals = 1,
      .max_positionals = 1,
  };
  return spec;
}

int Fail(std::string_view msg, int code = 1) {
  std::fprintf(stderr, "mnemo generate: %.*s\n", static_cast<int>(msg.size()), msg.data());
  return code;
}

json TimingsJson(const engine::GenerateTimings& t) {
  return {{"prompt_tokens", t.prompt_tokens},
          {"prompt_seconds", t.prompt_seconds},
          {"prompt_tokens_per_second", t.prompt_tokens_per_second()},
          {"generated_tokens", t.decode_tokens},
          {"generation_seconds", t.decode_seconds},
          {"generation_tokens_per_second", t.decode_tokens_per_second()}};
}

}  // namespace

int RunGenerate(const std::vector<std::string>& args) {
  auto parsed = Parse(Spec(), args);
  if (!parsed.ok()) return Fail(AsStd(parsed.status().message()), 2);
  if (parsed->Has("help")) {
    std::printf("%s", HelpText(Spec()).c_str());
    return 0;
  }
  if (!parsed->Has("prompt")) return Fail("--prompt TEXT is required", 2);

  engine::GenerateRequest req;
  req.prompt = *parsed->Get("prompt");
  req.chat = parsed->Has("chat");
  auto max_tokens = parsed->GetInt("max-tokens", 128);
  auto sampling = SamplingFromFlags(*parsed);
  auto threads = parsed->GetInt("threads", 0);
  auto top_logprobs = parsed->GetInt("top-logprobs", 0);
  for (const absl::Status& s :
       {max_tokens.status(), sampling.status(), threads.status(), top_logprobs.status()}) {
    if (!s.ok()) return Fail(AsStd(s.message()), 2);
  }
  if (*max_tokens < 0) return Fail("--max-tokens must be >= 0", 2);
  if (*threads < 0 || *threads > 4096) return Fail("--threads must be in [0, 4096]", 2);
  if (*top_logprobs < 0 || *top_logprobs > engine::kMaxTopLogprobs) {
    return Fail(absl::StrCat("--top-logprobs must be in [0, ", engine::kMaxTopLogprobs, "]"), 2);
  }
  if (*top_logprobs > 0 && !parsed->Has("json")) return Fail("--top-logprobs needs --json", 2);
  req.stop.max_tokens = static_cast<int>(*max_tokens);
  req.sampling = *sampling;
  req.sampling.top_logprobs = static_cast<int>(*top_logprobs);
  auto device = engine::Device::Parse(parsed->Get("device").value_or("cpu"));
  if (!device.ok()) return Fail(absl::StrCat("--", device.status().message()), 2);

  auto model = engine::Model::Open(parsed->positionals()[0]);
  if (!model.ok()) return Fail(AsStd(model.status().message()));
  auto gen = engine::Generator::Create(**model,
                                       {.device = *device, .threads = static_cast<int>(*threads)});
  if (!gen.ok()) return Fail(AsStd(gen.status().message()));

  const bool as_json = parsed->Has("json");
  auto stream = [&](size_t, std::string_view text) {
    if (as_json) return;
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  };
  auto result = (*gen)->Generate(req, stream);
  if (!result.ok()) {
    if (!as_json) std::fflush(stdout);
    return Fail(AsStd(result.status().message()));
  }
  const engine::GenerateTimings& t = result->timings;
  if (as_json) {
    json j;
    j["prompt_ids"] = result->prompt_ids;
    j["ids"] = result->ids;
    j["text"] = result->text;
    j["finish_reason"] = std::string(engine::FinishReasonName(result->finish));
    j["seed"] = req.sampling.seed;
    j["timings"] = TimingsJson(t);
    if (*top_logprobs > 0) {
      json top = json::array();
      for (const auto& position : result->top_logprobs) {
        json list = json::array();
        for (const engine::TokenLogprob& tl : position) {
          list.push_back({{"id", tl.id}, {"logprob", tl.logprob}});
        }
        top.push_back(std::move(list));
      }
      j["top_logprobs"] = std::move(top);
    }
    std::printf("%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
  } else {
    std::printf("\n");
  }
  std::fflush(stdout);  // the text ends before the timings line on a shared terminal
  std::fprintf(stderr,
               "mnemo generate: prompt %lld tokens, %.1f tokens/s; generation %lld tokens, "
               "%.1f tokens/s (%s)\n",
               static_cast<long long>(t.prompt_tokens), t.prompt_tokens_per_second(),
               static_cast<long long>(t.decode_tokens), t.decode_tokens_per_second(),
               std::string(engine::FinishReasonName(result->finish)).c_str());
  return 0;
}

}  // namespace mnemo::cli
