// mnemo make-test-model --arch A --dtype D [--format gguf|safetensors] [--seed S] ... OUT
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/model_config.h"
#include "engine/model/test_model.h"
#include "kernels/dtype.h"
#include "tools/mnemo/cli.h"
#include "tools/mnemo/commands.h"

namespace mnemo::cli {
namespace {

const CommandSpec& Spec() {
  static const CommandSpec spec = {
      .name = "make-test-model",
      .usage =
          "--arch llama|mistral|qwen2|qwen3 --dtype D [--format gguf|safetensors] "
          "[--seed S] [--layers N] [--tied] OUT",
      .summary =
          "Writes a tiny random-weight model with a small real byte-level BPE tokenizer\n"
          "and a ChatML template, for tests. OUT is a .gguf file, or a folder for\n"
          "safetensors. D: f32 f16 bf16 q8_0 q4_0 q4_1 q4_k q5_k q6_k (GGUF), f32 f16\n"
          "bf16 (safetensors).",
      .flags = {{"arch", true, "A", "architecture (llama, mistral, qwen2, qwen3)"},
                {"dtype", true, "D", "weight dtype of the matrices"},
                {"format", true, "F", "gguf (default) or safetensors"},
                {"seed", true, "S", "random seed (default 1)"},
                {"layers", true, "N", "number of layers (default 2)"},
                {"tied", false, "", "tie the output projection to the token embedding"}},
      .min_positionals = 1,
      .max_positionals = 1,
  };
  return spec;
}

absl::StatusOr<engine::Architecture> ParseArch(const std::string& s) {
  if (s == "llama") return engine::Architecture::kLlama;
  if (s == "mistral") return engine::Architecture::kMistral;
  if (s == "qwen2") return engine::Architecture::kQwen2;
  if (s == "qwen3") return engine::Architecture::kQwen3;
  return absl::InvalidArgumentError(
      absl::StrCat("--arch: unknown architecture '", s, "' (llama, mistral, qwen2, qwen3)"));
}

absl::Status Run(const ParsedArgs& args) {
  engine::TestModelOptions opts;
  if (!args.Has("arch")) return absl::InvalidArgumentError("--arch is required");
  if (!args.Has("dtype")) return absl::InvalidArgumentError("--dtype is required");
  auto arch = ParseArch(*args.Get("arch"));
  if (!arch.ok()) return arch.status();
  opts.arch = *arch;
  auto dtype = kernels::DTypeFromName(*args.Get("dtype"));
  if (!dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dtype: unknown dtype '", *args.Get("dtype"), "'"));
  }
  opts.dtype = *dtype;
  const std::string format = args.Get("format").value_or("gguf");
  if (format == "gguf") {
    opts.format = engine::TestModelFormat::kGguf;
  } else if (format == "safetensors") {
    opts.format = engine::TestModelFormat::kSafetensors;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--format: '", format, "' (expected gguf or safetensors)"));
  }
  auto seed = args.GetInt("seed", 1);
  if (!seed.ok()) return seed.status();
  opts.seed = static_cast<uint64_t>(*seed);
  auto layers = args.GetInt("layers", opts.n_layers);
  if (!layers.ok()) return layers.status();
  if (*layers < 1 || *layers > 64) return absl::InvalidArgumentError("--layers: must be 1..64");
  opts.n_layers = static_cast<int>(*layers);
  opts.tied_embeddings = args.Has("tied");
  return engine::WriteTestModel(opts, args.positionals()[0]);
}

}  // namespace

int RunMakeTestModel(const std::vector<std::string>& args) {
  auto parsed = Parse(Spec(), args);
  if (!parsed.ok()) {
    std::fprintf(stderr, "mnemo make-test-model: %s\n",
                 std::string(parsed.status().message()).c_str());
    return 2;
  }
  if (parsed->Has("help")) {
    std::printf("%s", HelpText(Spec()).c_str());
    return 0;
  }
  absl::Status s = Run(*parsed);
  if (!s.ok()) {
    std::fprintf(stderr, "mnemo make-test-model: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("wrote %s\n", parsed->positionals()[0].c_str());
  return 0;
}

}  // namespace mnemo::cli
