// mnemo inspect MODEL [--json] [--devices]
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/model/chat_template.h"
#include "engine/model/model.h"
#include "engine/model/model_config.h"
#include "engine/model/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tools/mnemo/cli.h"
#include "tools/mnemo/commands.h"
#include "tools/mnemo/inspect_json.h"

#ifdef MNEMO_HAVE_CUDA
#include "kernels/cuda/device.h"
#endif

namespace mnemo::cli {
namespace {

using engine::Model;
using nlohmann::json;

const CommandSpec& Spec() {
  static const CommandSpec spec = {
      .name = "inspect",
      .usage = "MODEL [--json] [--devices] [--no-tensors]",
      .summary =
          "Shows what mnemo reads from MODEL (a .gguf file or a safetensors folder):\n"
          "config, tensor table, tokenizer, chat template family, totals and the\n"
          "model fingerprint. With --devices (and no MODEL), lists CUDA devices.",
      .flags = {{"json", false, "", "print one JSON object instead of text"},
                {"devices", false, "", "list CUDA devices (name, memory, compute capability)"},
                {"no-tensors", false, "", "omit the per-tensor table"}},
      .min_positionals = 0,
      .max_positionals = 1,
  };
  return spec;
}

json DevicesJson() {
  json devices = json::array();
#ifdef MNEMO_HAVE_CUDA
  for (const kernels::CudaDeviceInfo& d : kernels::ListCudaDevices()) {
    devices.push_back({{"index", d.index},
                       {"name", d.name},
                       {"total_memory_bytes", d.total_memory_bytes},
                       {"compute_capability", absl::StrCat(d.compute_major, ".", d.compute_minor)},
                       {"multiprocessors", d.multiprocessor_count}});
  }
#endif
  return devices;
}

void PrintDevicesText(const json& devices) {
#ifndef MNEMO_HAVE_CUDA
  std::printf("devices: none (this mnemo was built without CUDA); the CPU backend is available\n");
  return;
#endif
  if (devices.empty()) {
    std::printf("devices: no CUDA device present; the CPU backend is available\n");
    return;
  }
  for (const json& d : devices) {
    std::printf("cuda:%d  %s  %s  compute capability %s\n", d["index"].get<int>(),
                d["name"].get<std::string>().c_str(),
                FormatBytes(d["total_memory_bytes"].get<uint64_t>()).c_str(),
                d["compute_capability"].get<std::string>().c_str());
  }
}

void PrintText(const json& j, bool with_tensors) {
  const json& c = j["config"];
  const json& r = c["rope"];
  const json& t = j["tokenizer"];
  std::printf(
      "model        %s (%s%s, %s)\n", j["path"].get<std::string>().c_str(),
      j["format"].get<std::string>().c_str(),
      j.contains("gguf_version") ? absl::StrCat(" v", j["gguf_version"].get<int>()).c_str() : "",
      FormatBytes(j["file_bytes"].get<uint64_t>()).c_str());
  if (!c["name"].get<std::string>().empty()) {
    std::printf("name         %s\n", c["name"].get<std::string>().c_str());
  }
  std::printf("architecture %s (%s)\n", c["architecture"].get<std::string>().c_str(),
              c["arch_name"].get<std::string>().c_str());
  std::printf("layers       %d\n", c["n_layers"].get<int>());
  std::printf("embedding    %d\n", c["d_model"].get<int>());
  std::printf("heads        %d query, %d key/value (GQA %d:1), head dim %d\n",
              c["n_heads"].get<int>(), c["n_kv_heads"].get<int>(),
              c["n_heads"].get<int>() / std::max(1, c["n_kv_heads"].get<int>()),
              c["head_dim"].get<int>());
  std::printf("ffn          %d\n", c["d_ff"].get<int>());
  std::printf("vocabulary   %d\n", c["vocab_size"].get<int>());
  std::printf("context      %d\n", c["context_length"].get<int>());
  std::printf("rope         base %g, %d rotary dims, %s style, scaling %s", r["base"].get<double>(),
              r["rotary_dims"].get<int>(), r["style"].get<std::string>().c_str(),
              r["scaling"].get<std::string>().c_str());
  if (r["scaling"] != "none") std::printf(" (factor %g)", r["factor"].get<double>());
  std::printf("\n");
  std::printf("norm         RMSNorm, epsilon %g\n", c["norm_eps"].get<double>());
  std::printf("embeddings   %s\n", c["tied_embeddings"].get<bool>() ? "tied" : "untied");
  std::printf("attention    qkv bias %s, qk norm %s, sliding window %s\n",
              c["qkv_bias"].get<bool>() ? "yes" : "no", c["qk_norm"].get<bool>() ? "yes" : "no",
              c["sliding_window"].get<int>() > 0
                  ? std::to_string(c["sliding_window"].get<int>()).c_str()
                  : "none");
  std::printf("tokenizer    %s (model %s, pre %s), %d tokens", t["kind"].get<std::string>().c_str(),
              t["model"].get<std::string>().c_str(), t["pre"].get<std::string>().c_str(),
              t["n_tokens"].get<int>());
  if (t["n_merges"].get<int>() > 0) std::printf(", %d merges", t["n_merges"].get<int>());
  std::printf("\n");
  std::string specials;
  for (const char* k : {"bos", "eos", "eot", "unk", "pad"}) {
    if (t["special"].contains(k)) {
      const json& s = t["special"][k];
      specials +=
          absl::StrCat(k, " ", s["id"].get<int>(), " ", s["piece"].get<std::string>(), "  ");
    }
  }
  std::printf("special      %s\n", specials.c_str());
  std::printf("add bos/eos  %s / %s\n", t["add_bos"].get<bool>() ? "yes" : "no",
              t["add_eos"].get<bool>() ? "yes" : "no");
  if (j["chat_template"]["present"].get<bool>()) {
    std::printf("chat         %s\n", j["chat_template"]["family"].get<std::string>().c_str());
  } else {
    std::printf("chat         none (the model has no chat template)\n");
  }
  std::printf("fingerprint  %s\n", j["fingerprint"].get<std::string>().c_str());

  const json& tot = j["totals"];
  if (with_tensors) {
    std::printf("\n%-36s %-20s %-6s %12s\n", "tensor", "shape", "dtype", "bytes");
    for (const json& x : j["tensors"]) {
      std::vector<std::string> dims;
      for (const json& d : x["shape"]) dims.push_back(std::to_string(d.get<int64_t>()));
      std::printf("%-36s %-20s %-6s %12llu\n", x["name"].get<std::string>().c_str(),
                  absl::StrCat("[", absl::StrJoin(dims, ", "), "]").c_str(),
                  x["dtype"].get<std::string>().c_str(),
                  static_cast<unsigned long long>(x["bytes"].get<uint64_t>()));
    }
  }
  std::printf("\ntotals       %d tensors, %s parameters, %s of weights\n",
              tot["tensors"].get<int>(),
              absl::StrFormat("%.2fM", tot["params"].get<uint64_t>() / 1e6).c_str(),
              FormatBytes(tot["bytes"].get<uint64_t>()).c_str());
  for (const auto& [dtype, v] : tot["by_dtype"].items()) {
    std::printf("             %-6s %4d tensors %12s params %12s\n", dtype.c_str(),
                v["tensors"].get<int>(),
                absl::StrFormat("%.2fM", v["params"].get<uint64_t>() / 1e6).c_str(),
                FormatBytes(v["bytes"].get<uint64_t>()).c_str());
  }
}

}  // namespace

int RunInspect(const std::vector<std::string>& args) {
  auto parsed = Parse(Spec(), args);
  if (!parsed.ok()) {
    std::fprintf(stderr, "mnemo inspect: %s\n", std::string(parsed.status().message()).c_str());
    return 2;
  }
  if (parsed->Has("help")) {
    std::printf("%s", HelpText(Spec()).c_str());
    return 0;
  }
  const bool as_json = parsed->Has("json");
  const bool devices = parsed->Has("devices");
  if (parsed->positionals().empty() && !devices) {
    std::fprintf(stderr, "mnemo inspect: usage: mnemo inspect %s\n", Spec().usage.c_str());
    return 2;
  }

  json out = json::object();
  if (devices) out["devices"] = DevicesJson();
  if (!parsed->positionals().empty()) {
    const std::string& path = parsed->positionals()[0];
    auto model = Model::Open(path);
    if (!model.ok()) {
      std::fprintf(stderr, "mnemo inspect: %s\n", std::string(model.status().message()).c_str());
      return 1;
    }
    json j = InspectJson(**model, path, !parsed->Has("no-tensors"));
    if (as_json) {
      for (auto& [k, v] : j.items()) out[k] = v;
    } else {
      PrintText(j, !parsed->Has("no-tensors"));
    }
  }
  if (as_json) {
    std::printf("%s\n", out.dump(2).c_str());
  } else if (devices) {
    PrintDevicesText(out["devices"]);
  }
  return 0;
}

}  // namespace mnemo::cli
