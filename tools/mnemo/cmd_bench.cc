// mnemo bench multiturn MODEL [--workload chat|agent|FILE.jsonl] [--conversations N]
//     [--turns T] [--concurrency C] [--modes stateless,prefix,stateful,spill] [--target URL]
//     [--seed S] --out DIR ...
// mnemo bench kernels [ARGS...]
//
// `multiturn` replays a seeded (or saved) workload in every requested mode and writes
// DIR/workload.jsonl, DIR/result.json, DIR/result.csv, DIR/report.md and the PNG plots
// (tools/bench_plots.py); docs/benchmarks.md explains the method. `kernels` runs the
// Google Benchmark micro-benchmarks and then the end-to-end decode/prefill benchmark.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/multiturn_workload.h"
#include "bench/stateful/report.h"
#include "bench/stateful/runner.h"
#include "bench/stateful/workload.h"
#include "cache/base/strings.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "engine/model/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tools/mnemo/cli.h"
#include "tools/mnemo/commands.h"
#include "tools/mnemo/engine_flags.h"
#include "tools/mnemo/sampling_flags.h"

#ifndef MNEMO_SOURCE_DIR
#define MNEMO_SOURCE_DIR ""
#endif

namespace mnemo::cli {
namespace {

using bench::BenchMode;
using nlohmann::json;

const CommandSpec& MultiturnSpec() {
  static const CommandSpec spec = {
      .name = "bench multiturn",
      .usage =
          "MODEL --out DIR [--workload chat|agent|FILE.jsonl] [--conversations N] [--turns T]\n"
          "       [--concurrency C] [--modes stateless,prefix,stateful,spill] [--target URL]\n"
          "       [--seed S] [...]",
      .summary =
          "Replays multi-turn conversations (or agentic tool loops) in each mode and reports\n"
          "what keeping session state saves over recomputing it: time to first token by\n"
          "turn, throughput, prefill tokens computed vs reused, bytes per tier and a cost\n"
          "model. MODEL is the model file (its tokenizer cuts the text to token counts; it\n"
          "is served in-process unless --target is given). Writes DIR/workload.jsonl,\n"
          "result.json, result.csv, report.md and the PNG plots (docs/benchmarks.md).",
      .flags = JoinFlags(
          {{{"out", true, "DIR", "the output directory (required)"},
            {"workload", true, "W", "chat (default), agent, or a saved FILE.jsonl"},
            {"conversations", true, "N", "conversations to generate (default 16 chat, 8 agent)"},
            {"turns", true, "T",
             "turns per chat conversation / tool steps per agent run "
             "(default: drawn, mean 3.5 for chat)"},
            {"user-tokens", true, "N", "every user message exactly N tokens (default: drawn)"},
            {"reply-tokens", true, "N", "every reply exactly N tokens (default: drawn)"},
            {"concurrency", true, "C", "simulated users (default 4)"},
            {"open-loop", false, "", "start conversations at their arrival times"},
            {"think-scale", true, "X",
             "multiply the think times by X while running (default 0: no pauses; the cost "
             "model prices think time either way)"},
            {"modes", true, "LIST",
             "comma-separated: stateless,prefix,stateful,spill (default all; with --target: "
             "stateless,stateful)"},
            {"target", true, "URL", "drive an OpenAI-compatible server instead of the engine"},
            {"stateful-api", true, "API", "with --target: sessions (default) or responses"},
            {"api-key", true, "KEY", "with --target: the bearer token"},
            {"no-ignore-eos", false, "",
             "with --target: do not send ignore_eos (for servers that refuse unknown fields)"},
            {"served-model", true, "NAME",
             "with --target: the request's model (default: the server's first /v1/models id)"},
            {"seed", true, "S", "workload seed (default 1)"},
            {"text", true, "PATH", "user text (default /usr/share/common-licenses/GPL-3)"},
            {"tool-text", true, "PATH", "agent tool-output text (default /usr/include/stdlib.h)"},
            {"threads", true, "N", "engine threads, 0 = all (default 0)"},
            {"device", true, "DEV", "in-process engine: cpu (default) or cuda[:N]"},
            {"max-batch-tokens", true, "N", "tokens per engine step (default 512)"},
            {"spill-fraction", true, "F",
             "spill mode: device budget as a fraction of the workload's resident KV (0.25)"},
            {"price-compute", true, "P", "cost model: compute per busy hour (default 2.0)"},
            {"price-device", true, "P", "cost model: device memory per GB-hour (0.025)"},
            {"price-host", true, "P", "cost model: host memory per GB-hour (0.005)"},
            {"price-disk", true, "P", "cost model: disk per GB-hour (0.0001)"},
            {"no-plots", false, "", "skip the PNG plots"},
            {"quiet", false, "", "no progress bar"}},
           CompactionFlagSpecs()}),
      .min_positionals = 1,
      .max_positionals = 1,
  };
  return spec;
}

int Fail(std::string_view msg, int code = 1) {
  std::fprintf(stderr, "mnemo bench: %.*s\n", static_cast<int>(msg.size()), msg.data());
  return code;
}

std::string ExeDir() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

// Runs argv and waits; the exit code, or -1 when it could not start.
int RunProgram(const std::vector<std::string>& argv) {
  std::vector<char*> cargv;
  for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    execvp(cargv[0], cargv.data());
    std::fprintf(stderr, "mnemo bench: cannot run %s\n", cargv[0]);
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// tools/bench_plots.py: $MNEMO_BENCH_PLOTS, beside the source tree this binary was built
// from, or ../tools relative to the binary.
std::string PlotScript() {
  if (const char* env = std::getenv("MNEMO_BENCH_PLOTS")) return env;
  for (const std::string& dir : {std::string(MNEMO_SOURCE_DIR), ExeDir() + "/.."}) {
    const std::string path = dir + "/tools/bench_plots.py";
    if (!dir.empty() && std::filesystem::exists(path)) return path;
  }
  return "";
}

// The Python that draws the plots: $MNEMO_PYTHON, else Debian's /usr/bin/python3 (where
// python3-matplotlib installs; a python3 earlier on PATH may be another one), else python3.
std::string Python() {
  if (const char* env = std::getenv("MNEMO_PYTHON")) return env;
  return std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("model name")) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

double LoadAverage() {
  double load = 0.0;
  return getloadavg(&load, 1) == 1 ? load : -1.0;
}

std::string Now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// The fixed-value distribution (for --turns / --user-tokens / --reply-tokens).
bench::LogNormal Fixed(double v) { return {v, v, v, v}; }

struct Settings {
  std::string model_path, out, workload = "chat", target, stateful_api = "sessions";
  std::string api_key, served_model, text, tool_text;
  int64_t conversations = -1, turns = -1, user_tokens = -1, reply_tokens = -1;
  int64_t concurrency = 4, seed = 1, threads = 0, max_batch_tokens = 512;
  double think_scale = 0, spill_fraction = 0.25;
  bool open_loop = false, plots = true, quiet = false, ignore_eos = true;
  std::vector<BenchMode> modes;
  bench::CostInputs prices;
  engine::Device device;
  cache::CompactionOptions compaction;  // the in-process engine's sessions
};

absl::StatusOr<Settings> ReadSettings(const ParsedArgs& p) {
  Settings s;
  s.model_path = p.positionals()[0];
  if (!p.Has("out")) return absl::InvalidArgumentError("--out DIR is required");
  s.out = *p.Get("out");
  if (auto device = p.Get("device")) {
    auto d = engine::Device::Parse(*device);
    if (!d.ok()) return absl::InvalidArgumentError(absl::StrCat("--", d.status().message()));
    s.device = *d;
  }
  s.workload = p.Get("workload").value_or("chat");
  s.target = p.Get("target").value_or("");
  s.stateful_api = p.Get("stateful-api").value_or("sessions");
  if (s.stateful_api != "sessions" && s.stateful_api != "responses") {
    return absl::InvalidArgumentError(
        absl::StrCat("--stateful-api: expected sessions or responses, got '", s.stateful_api, "'"));
  }
  s.api_key = p.Get("api-key").value_or("");
  s.served_model = p.Get("served-model").value_or("");
  s.text = p.Get("text").value_or("/usr/share/common-licenses/GPL-3");
  s.tool_text = p.Get("tool-text").value_or("/usr/include/stdlib.h");
  s.open_loop = p.Has("open-loop");
  s.ignore_eos = !p.Has("no-ignore-eos");
  s.plots = !p.Has("no-plots");
  s.quiet = p.Has("quiet");
  if (absl::Status st = ApplyCompactionFlags(p, &s.compaction); !st.ok()) return st;
  if (!s.target.empty()) {
    for (const FlagSpec& f : CompactionFlagSpecs()) {
      if (p.Has(f.name)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", f.name,
                         " configures the in-process engine; with --target start the server "
                         "with it"));
      }
    }
  }

  struct IntFlag {
    const char* name;
    int64_t* v;
    int64_t lo, hi;
  };
  for (const IntFlag& f :
       {IntFlag{"conversations", &s.conversations, 1, 100000}, IntFlag{"turns", &s.turns, 1, 1000},
        IntFlag{"user-tokens", &s.user_tokens, 1, 1000000},
        IntFlag{"reply-tokens", &s.reply_tokens, 1, 1000000},
        IntFlag{"concurrency", &s.concurrency, 1, 4096}, IntFlag{"seed", &s.seed, 0, INT64_MAX},
        IntFlag{"threads", &s.threads, 0, 4096},
        IntFlag{"max-batch-tokens", &s.max_batch_tokens, 1, 1 << 20}}) {
    if (!p.Has(f.name)) continue;
    absl::StatusOr<int64_t> v = p.GetInt(f.name, *f.v);
    if (!v.ok()) return v.status();
    if (*v < f.lo || *v > f.hi) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", f.name, " must be in [", f.lo, ", ", f.hi, "], got ", *v));
    }
    *f.v = *v;
  }
  struct DoubleFlag {
    const char* name;
    double* v;
    double lo, hi;
  };
  for (const DoubleFlag& f : {DoubleFlag{"think-scale", &s.think_scale, 0, 1000},
                              DoubleFlag{"spill-fraction", &s.spill_fraction, 0.001, 1},
                              DoubleFlag{"price-compute", &s.prices.compute_per_hour, 0, 1e9},
                              DoubleFlag{"price-device", &s.prices.device_gb_hour, 0, 1e9},
                              DoubleFlag{"price-host", &s.prices.host_gb_hour, 0, 1e9},
                              DoubleFlag{"price-disk", &s.prices.disk_gb_hour, 0, 1e9}}) {
    if (!p.Has(f.name)) continue;
    absl::StatusOr<double> v = p.GetDouble(f.name, *f.v);
    if (!v.ok()) return v.status();
    if (!(*v >= f.lo && *v <= f.hi)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", f.name, " must be in [", f.lo, ", ", f.hi, "], got ", *v));
    }
    *f.v = *v;
  }

  const std::string modes = p.Get("modes").value_or(
      s.target.empty() ? "stateless,prefix,stateful,spill" : "stateless,stateful");
  const std::vector<std::string> names = absl::StrSplit(modes, ',', absl::SkipEmpty());
  for (const std::string& name : names) {
    std::optional<BenchMode> m = bench::ParseMode(name);
    if (!m) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--modes: unknown mode '", name, "' (expected stateless, prefix, stateful, spill)"));
    }
    if (!s.target.empty() && (*m == BenchMode::kPrefix || *m == BenchMode::kSpill)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--modes: '", name,
          "' is a server configuration; with --target only stateless and "
          "stateful are driven (start the server with the prefix index or small budgets)"));
    }
    for (BenchMode seen : s.modes) {
      if (seen == *m) {
        return absl::InvalidArgumentError(absl::StrCat("--modes: '", name, "' given twice"));
      }
    }
    s.modes.push_back(*m);
  }
  if (s.modes.empty()) return absl::InvalidArgumentError("--modes: no mode given");
  return s;
}

absl::StatusOr<bench::Workload> MakeWorkload(const Settings& s, const engine::Tokenizer& tokenizer,
                                             json* text_used) {
  if (s.workload != "chat" && s.workload != "agent") {
    return bench::ReadWorkloadFile(s.workload);
  }
  std::string user_used, tool_used;
  const bench::TextSource user(bench::TextSource::LoadWords(s.text, &user_used), tokenizer);
  const bench::TextSource tool(bench::TextSource::LoadWords(s.tool_text, &tool_used), tokenizer);
  (*text_used)["user_text"] = user_used;
  const bench::WorkloadText text{&user, &tool};
  if (s.workload == "chat") {
    bench::ChatOptions o;
    if (s.conversations > 0) o.conversations = static_cast<int>(s.conversations);
    if (s.turns > 0) o.turns = Fixed(static_cast<double>(s.turns));
    if (s.user_tokens > 0) o.user_tokens = Fixed(static_cast<double>(s.user_tokens));
    if (s.reply_tokens > 0) o.reply_tokens = Fixed(static_cast<double>(s.reply_tokens));
    return bench::MakeChatWorkload(text, static_cast<uint64_t>(s.seed), o);
  }
  (*text_used)["tool_text"] = tool_used;
  bench::AgentOptions o;
  if (s.conversations > 0) o.conversations = static_cast<int>(s.conversations);
  if (s.turns > 0) o.steps = Fixed(static_cast<double>(s.turns));
  if (s.user_tokens > 0) o.tool_tokens = Fixed(static_cast<double>(s.user_tokens));
  if (s.reply_tokens > 0) o.reply_tokens = Fixed(static_cast<double>(s.reply_tokens));
  return bench::MakeAgentWorkload(text, static_cast<uint64_t>(s.seed), o);
}

absl::StatusOr<std::unique_ptr<bench::Driver>> MakeDriver(const Settings& s,
                                                          const engine::Model& model,
                                                          const bench::Workload& w,
                                                          BenchMode mode) {
  if (!s.target.empty()) {
    bench::HttpDriverOptions o;
    o.base_url = s.target;
    o.api_key = s.api_key;
    o.model = s.served_model;
    o.ignore_eos = s.ignore_eos;
    o.api = mode == BenchMode::kStateless   ? bench::HttpApi::kChat
            : s.stateful_api == "responses" ? bench::HttpApi::kResponses
                                            : bench::HttpApi::kSessions;
    return bench::MakeHttpDriver(o);
  }
  bench::EngineDriverOptions o;
  o.mode = mode;
  o.engine.device = s.device;
  o.engine.threads = static_cast<int>(s.threads);
  o.engine.max_batch_tokens = static_cast<int>(s.max_batch_tokens);
  o.engine.compaction = s.compaction;
  o.spill_device_fraction = s.spill_fraction;
  o.concurrency = static_cast<int>(s.concurrency);
  return bench::MakeEngineDriver(model, w, o);
}

int RunMultiturn(const std::vector<std::string>& args) {
  auto parsed = Parse(MultiturnSpec(), args);
  if (!parsed.ok()) return Fail(AsStd(parsed.status().message()), 2);
  if (parsed->Has("help")) {
    std::printf("%s", HelpText(MultiturnSpec()).c_str());
    return 0;
  }
  absl::StatusOr<Settings> settings = ReadSettings(*parsed);
  if (!settings.ok()) return Fail(AsStd(settings.status().message()), 2);
  const Settings& s = *settings;

  auto model = engine::Model::Open(s.model_path);
  if (!model.ok()) return Fail(AsStd(model.status().message()));
  auto tokenizer = engine::Tokenizer::Create((*model)->tokenizer_data());
  if (!tokenizer.ok()) return Fail(AsStd(tokenizer.status().message()));

  std::error_code ec;
  std::filesystem::create_directories(s.out, ec);
  if (ec) return Fail(absl::StrCat("--out ", s.out, ": ", ec.message()));

  bench::BenchResult result;
  json text_used = json::object();
  absl::StatusOr<bench::Workload> workload = MakeWorkload(s, **tokenizer, &text_used);
  if (!workload.ok()) return Fail(AsStd(workload.status().message()));
  if (absl::Status st = bench::WriteWorkloadFile(*workload, s.out + "/workload.jsonl"); !st.ok()) {
    return Fail(AsStd(st.message()));
  }
  result.workload = std::move(*workload);
  result.workload_stats = bench::ComputeWorkloadStats(result.workload, **tokenizer);
  result.prices = s.prices;

  json modes = json::array();
  for (BenchMode m : s.modes) modes.push_back(std::string(bench::ModeName(m)));
  result.config = {
      {"command", absl::StrCat("mnemo bench multiturn ", absl::StrJoin(args, " "))},
      {"date", Now()},
      {"model", s.model_path},
      {"model_arch", (*model)->config().arch_name},
      {"model_params", (*model)->n_params()},
      {"workload", s.workload},
      {"seed", s.seed},
      {"modes", modes},
      {"concurrency", s.concurrency},
      {"open_loop", s.open_loop},
      {"think_scale", s.think_scale},
      {"threads", s.threads},
      {"device", s.device.ToString()},
      {"max_batch_tokens", s.max_batch_tokens},
      {"compaction", std::string(cache::CompactionPolicyName(s.compaction.policy))},
      {"spill_fraction", s.spill_fraction},
      {"target", s.target.empty() ? json(nullptr) : json(s.target)},
      {"stateful_api", s.target.empty() ? json(nullptr) : json(s.stateful_api)},
      {"machine",
       {{"cpu", CpuModel()},
        {"hardware_threads", std::thread::hardware_concurrency()},
        {"load_average_start", LoadAverage()}}},
  };
  result.config.update(text_used);

  for (BenchMode mode : s.modes) {
    auto driver = MakeDriver(s, **model, result.workload, mode);
    if (!driver.ok()) return Fail(AsStd(driver.status().message()));
    bench::RunOptions ro;
    ro.concurrency = static_cast<int>(s.concurrency);
    ro.open_loop = s.open_loop;
    ro.think_scale = s.think_scale;
    ro.progress = !s.quiet;
    ro.label = std::string(bench::ModeName(mode));
    absl::StatusOr<bench::ModeRun> run = bench::RunWorkload(**driver, result.workload, ro);
    if (!run.ok()) {
      return Fail(absl::StrCat(std::string(bench::ModeName(mode)), ": ", run.status().message()));
    }
    run->mode = mode;
    result.runs.push_back(std::move(*run));
  }
  result.config["machine"]["load_average_end"] = LoadAverage();
  for (const bench::ModeRun& run : result.runs) {
    result.summaries.push_back(bench::SummarizeRun(run, result.workload, result.prices));
  }
  if (absl::Status st = bench::WriteReport(result, s.out); !st.ok()) {
    return Fail(AsStd(st.message()));
  }
  std::fprintf(stderr, "mnemo bench: wrote %s/{workload.jsonl,result.json,result.csv,report.md}\n",
               s.out.c_str());
  if (s.plots) {
    const std::string script = PlotScript();
    if (script.empty()) {
      return Fail("plots not drawn: tools/bench_plots.py not found (set MNEMO_BENCH_PLOTS)");
    }
    const int rc = RunProgram({Python(), script, s.out});
    if (rc != 0) {
      return Fail(absl::StrCat("plots not drawn: python3 ", script, " exited with ", rc,
                               " (Debian's python3-matplotlib is needed; --no-plots skips them)"));
    }
    std::fprintf(stderr, "mnemo bench: plots in %s/*.png\n", s.out.c_str());
  }
  return 0;
}

// mnemo bench kernels [ARGS...]: the Google Benchmark micro-benchmarks (ARGS passed on,
// e.g. --benchmark_filter=MatMul), then the end-to-end decode/prefill benchmark.
int RunKernels(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::printf(
        "usage: mnemo bench kernels [GOOGLE-BENCHMARK-ARGS...]\n\n"
        "Runs bench/mnemo_bench (every kernel's micro-benchmark; the arguments are passed\n"
        "to it, e.g. --benchmark_filter=MatMul) and then bench/mnemo_e2e_bench (this\n"
        "machine's bandwidth and GEMM ceilings, and decode/prefill against them;\n"
        "docs/performance.md). Both are built with the project (MNEMO_BUILD_BENCH=ON).\n");
    return 0;
  }
  const std::string dir = ExeDir() + "/bench/";
  for (const char* name : {"mnemo_bench", "mnemo_e2e_bench"}) {
    if (!std::filesystem::exists(dir + name)) {
      return Fail(absl::StrCat(dir, name, " not found (build with -DMNEMO_BUILD_BENCH=ON)"));
    }
  }
  std::vector<std::string> micro = {dir + "mnemo_bench"};
  micro.insert(micro.end(), args.begin(), args.end());
  if (const int rc = RunProgram(micro); rc != 0) {
    return Fail(absl::StrCat("mnemo_bench exited with ", rc));
  }
  if (const int rc = RunProgram({dir + "mnemo_e2e_bench"}); rc != 0) {
    return Fail(absl::StrCat("mnemo_e2e_bench exited with ", rc));
  }
  return 0;
}

}  // namespace

int RunBench(const std::vector<std::string>& args) {
  const char* usage =
      "usage: mnemo bench multiturn MODEL --out DIR [...]   (mnemo bench multiturn --help)\n"
      "       mnemo bench kernels [ARGS...]                 (mnemo bench kernels --help)\n";
  if (args.empty()) {
    std::fprintf(stderr, "%s", usage);
    return 2;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "multiturn") return RunMultiturn(rest);
  if (args[0] == "kernels") return RunKernels(rest);
  if (args[0] == "--help" || args[0] == "-h") {
    std::printf("%s", usage);
    return 0;
  }
  return Fail(absl::StrCat("unknown benchmark '", args[0], "' (expected multiturn or kernels)"), 2);
}

}  // namespace mnemo::cli
