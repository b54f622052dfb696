// What context compaction costs (issue 9, docs/compaction.md), measured through the Engine:
//
//   perplexity  a C-token context of long English text, then M held-back tokens scored by
//               teacher forcing (TurnParams::prompt_logprobs): with the full KV; compacted by
//               each policy to a budget of b*C tokens (before the scored text arrives, so
//               the score policy observes the context's end, not the text it is scored on);
//               and a "recent" baseline that recomputes only the last b*C tokens (what a
//               stateless client that drops old messages pays for). Mean negative
//               log-likelihood per token and perplexity over --samples windows of the text.
//   retrieval   "The secret number is NNNN." stated early (after a short lead-in) or late in
//               a context of ~0.9*C tokens, then asked for; correct when the greedy reply
//               contains the number. Full KV against each policy at each budget, the
//               compaction run by the question's turn (as a session would).
//   long        one session fed --long-factor times the context in turns of --turn-tokens
//               (each with a short reply) under each policy (and under none, which refuses
//               once the context is full): time per turn, KV bytes held, compactions.
//
// Usage: mnemo_compaction_eval [--model=PATH] [--text=PATH] [--context=N] [--eval-tokens=N]
//   [--samples=N] [--budgets=0.25,0.5] [--policies=window,score,summarize] [--trials=N]
//   [--long-factor=N] [--turn-tokens=N] [--parts=perplexity,retrieval,long] [--threads=N]
//   [--json] [--quick]
// --text: plain English text (default: the King James Bible's Genesis as `bible` from the
// Debian packages bible-kjv and bible-kjv-text prints it; tools/setup.sh installs them).
// --context: tokens of context (default: the model's context length - eval tokens). --quick:
// a small smoke run (512-token context, 32 scored tokens, 1 sample, 1 trial, factor 2).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_main.h"
#include "cache/base/strings.h"
#include "cache/compaction.h"
#include "engine/engine.h"
#include "engine/model/model.h"
#include "nlohmann/json.hpp"

namespace mnemo::bench {
namespace {

using engine::Engine;
using engine::TokenId;
using engine::TurnParams;
using engine::TurnResult;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Flags {
  std::string model;
  std::string text;
  int64_t context = 0;  // 0: the model's context length - eval_tokens
  int eval_tokens = 256;
  int samples = 3;
  std::vector<double> budgets = {0.25, 0.5};
  std::vector<cache::CompactionPolicy> policies = {cache::CompactionPolicy::kWindow,
                                                   cache::CompactionPolicy::kScore,
                                                   cache::CompactionPolicy::kSummarize};
  int trials = 4;
  std::vector<std::string> parts = {"perplexity", "retrieval", "long"};
  int long_factor = 4;
  int turn_tokens = 256;
  int threads = 0;
  bool json = false;
  bool quick = false;
};

constexpr char kUsage[] =
    "usage: mnemo_compaction_eval [--model=PATH] [--text=PATH] [--context=N] [--eval-tokens=N]\n"
    "  [--samples=N] [--budgets=0.25,0.5] [--policies=window,score,summarize] [--trials=N]\n"
    "  [--long-factor=N] [--turn-tokens=N] [--parts=perplexity,retrieval,long] [--threads=N]\n"
    "  [--json] [--quick]\n";

void Progress(const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); }

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  f.model = DefaultModelPath(MNEMO_SOURCE_DIR);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (std::find(args.begin(), args.end(), "--quick") != args.end()) {
    f.quick = true;
    f.context = 512;
    f.eval_tokens = 32;
    f.samples = 1;
    f.trials = 1;
    f.long_factor = 2;
    f.turn_tokens = 128;
  }
  for (const std::string& a : args) {
    const size_t eq = a.find('=');
    const std::string name = a.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : a.substr(eq + 1);
    int64_t v = 0;
    const bool numeric = absl::SimpleAtoi(value, &v) && v >= 0 && v <= (int64_t{1} << 30);
    if (a == "--json") {
      f.json = true;
    } else if (a == "--quick") {
    } else if (a == "--help" || a == "-h") {
      return absl::CancelledError(std::string(kUsage));
    } else if ((name == "--model" || name == "--text") && eq != std::string::npos) {
      (name == "--model" ? f.model : f.text) = value;
    } else if (name == "--budgets" && eq != std::string::npos) {
      f.budgets.clear();
      for (const std::string& part : std::vector<std::string>(absl::StrSplit(value, ','))) {
        double b = 0.0;
        if (!absl::SimpleAtod(part, &b) || !(b > 0.0 && b < 1.0)) {
          return absl::InvalidArgumentError(
              absl::StrCat("bad budget \"", part, "\" in ", a, " (want fractions in (0, 1))"));
        }
        f.budgets.push_back(b);
      }
    } else if (name == "--policies" && eq != std::string::npos) {
      f.policies.clear();
      for (const std::string& part : std::vector<std::string>(absl::StrSplit(value, ','))) {
        auto p = cache::ParseCompactionPolicy(part);
        if (!p.ok() || *p == cache::CompactionPolicy::kNone) {
          return absl::InvalidArgumentError(absl::StrCat("bad policy \"", part, "\" in ", a,
                                                         " (want window, score or summarize)"));
        }
        f.policies.push_back(*p);
      }
    } else if (name == "--parts" && eq != std::string::npos) {
      f.parts = absl::StrSplit(value, ',');
      for (const std::string& part : f.parts) {
        if (part != "perplexity" && part != "retrieval" && part != "long") {
          return absl::InvalidArgumentError(absl::StrCat("bad part \"", part, "\" in ", a,
                                                         " (want perplexity, retrieval or long)"));
        }
      }
    } else if (name == "--context" && numeric) {
      f.context = v;
    } else if (name == "--eval-tokens" && numeric && v >= 2) {
      f.eval_tokens = static_cast<int>(v);
    } else if (name == "--samples" && numeric && v >= 1) {
      f.samples = static_cast<int>(v);
    } else if (name == "--trials" && numeric) {
      f.trials = static_cast<int>(v);
    } else if (name == "--long-factor" && numeric) {
      f.long_factor = static_cast<int>(v);
    } else if (name == "--turn-tokens" && numeric && v >= 1) {
      f.turn_tokens = static_cast<int>(v);
    } else if (name == "--threads" && numeric) {
      f.threads = static_cast<int>(v);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag or bad value: ", a, "\n", kUsage));
    }
  }
  return f;
}

// The default text: Genesis from the bible-kjv packages.
absl::StatusOr<std::string> ReadText(const Flags& f) {
  if (!f.text.empty()) {
    std::ifstream in(f.text, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read --text ", f.text));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  FILE* p = popen("bible -f 'Genesis1:1-50:26' 2>/dev/null", "r");
  std::string out;
  if (p != nullptr) {
    char buf[65536];
    size_t n = 0;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    pclose(p);
  }
  if (out.size() < 10000) {
    return absl::NotFoundError(
        "no --text given and `bible` (Debian packages bible-kjv, bible-kjv-text; "
        "tools/setup.sh) printed no text");
  }
  return out;
}

absl::StatusOr<TurnResult> Run(Engine& e, const std::string& id, TurnParams p) {
  auto stream = e.Continue("b", id, std::move(p));
  if (!stream.ok()) return stream.status();
  TurnResult r = (*stream)->Wait();
  if (!r.status.ok()) return r.status;
  return r;
}

TurnParams Tokens(std::vector<TokenId> ids, int max_tokens) {
  TurnParams p;
  p.tokens = std::move(ids);
  p.sampling.temperature = 0.0f;
  p.stop.max_tokens = max_tokens;
  p.stop.ignore_eos = true;
  return p;
}

absl::StatusOr<std::string> SessionWith(Engine& e, const std::vector<TokenId>& tokens) {
  auto info = e.CreateSession("b", {});
  if (!info.ok()) return info.status();
  if (auto r = Run(e, info->id, Tokens(tokens, 0)); !r.ok()) return r.status();
  return info->id;
}

// Sum of -logprob over the scored tokens (the first has no logits in the turn) and count.
struct Nll {
  double sum = 0.0;
  int64_t n = 0;
  double mean() const { return n > 0 ? sum / static_cast<double>(n) : 0.0; }
};

absl::Status Score(Engine& e, const std::string& id, const std::vector<TokenId>& eval, Nll* nll) {
  TurnParams p = Tokens(eval, 0);
  p.prompt_logprobs = true;
  auto r = Run(e, id, p);
  if (!r.ok()) return r.status();
  for (float lp : r->prompt_logprobs) {
    if (std::isnan(lp)) continue;
    nll->sum -= lp;
    ++nll->n;
  }
  return absl::OkStatus();
}

std::string PolicyLabel(cache::CompactionPolicy p) {
  switch (p) {
    case cache::CompactionPolicy::kWindow:
      return "window (4 sinks)";
    case cache::CompactionPolicy::kScore:
      return "score (32 observed)";
    case cache::CompactionPolicy::kSummarize:
      return "summarize (summary + recent, recomputed)";
    case cache::CompactionPolicy::kNone:
      break;
  }
  return "none";
}

absl::StatusOr<json> Perplexity(Engine& e, const Flags& f, const std::vector<TokenId>& text,
                                int64_t C) {
  const int64_t M = f.eval_tokens;
  const int64_t span = C + M;
  if (static_cast<int64_t>(text.size()) < span) {
    return absl::InvalidArgumentError(
        absl::StrCat("the text has ", text.size(), " tokens; ", span, " are needed"));
  }
  Nll full;
  // compacted[i][k]: budget i, policy k.
  std::vector<std::vector<Nll>> compacted(f.budgets.size(), std::vector<Nll>(f.policies.size()));
  std::vector<Nll> recent(f.budgets.size());
  for (int s = 0; s < f.samples; ++s) {
    const int64_t at =
        f.samples == 1 ? 0 : (static_cast<int64_t>(text.size()) - span) * s / (f.samples - 1);
    const std::vector<TokenId> ctx(text.begin() + at, text.begin() + at + C);
    const std::vector<TokenId> eval(text.begin() + at + C, text.begin() + at + span);
    Progress(absl::StrCat("perplexity sample ", s + 1, "/", f.samples, " at token ", at));
    auto base = SessionWith(e, ctx);
    if (!base.ok()) return base.status();
    auto fork = e.Fork("b", *base);
    if (!fork.ok()) return fork.status();
    if (absl::Status st = Score(e, fork->id, eval, &full); !st.ok()) return st;
    (void)e.DeleteSession("b", fork->id);
    for (size_t i = 0; i < f.budgets.size(); ++i) {
      const int64_t keep =
          static_cast<int64_t>(std::llround(f.budgets[i] * static_cast<double>(C)));
      for (size_t k = 0; k < f.policies.size(); ++k) {
        auto w = e.Fork("b", *base);
        if (!w.ok()) return w.status();
        auto c = e.Compact("b", w->id, f.policies[k], keep);
        if (!c.ok()) return c.status();
        if (absl::Status st = Score(e, w->id, eval, &compacted[i][k]); !st.ok()) return st;
        (void)e.DeleteSession("b", w->id);
      }
      auto r = SessionWith(e, std::vector<TokenId>(ctx.end() - keep, ctx.end()));
      if (!r.ok()) return r.status();
      if (absl::Status st = Score(e, *r, eval, &recent[i]); !st.ok()) return st;
      (void)e.DeleteSession("b", *r);
    }
    (void)e.DeleteSession("b", *base);
  }
  json rows = json::array();
  const auto row = [&](const std::string& config, double budget, int64_t kv, const Nll& nll) {
    rows.push_back({{"config", config},
                    {"budget", budget},
                    {"kv_tokens", kv},
                    {"nll", nll.mean()},
                    {"ppl", std::exp(nll.mean())},
                    {"tokens", nll.n}});
  };
  row("full KV", 1.0, C, full);
  for (size_t i = 0; i < f.budgets.size(); ++i) {
    const int64_t keep = static_cast<int64_t>(std::llround(f.budgets[i] * static_cast<double>(C)));
    for (size_t k = 0; k < f.policies.size(); ++k) {
      row(PolicyLabel(f.policies[k]), f.budgets[i], keep, compacted[i][k]);
    }
    row("recent only, recomputed", f.budgets[i], keep, recent[i]);
  }
  return rows;
}

// Whether the greedy reply to the question, asked in a fork of session `base`, contains the
// number; with a policy, the question's turn compacts the history to `keep` tokens first.
absl::StatusOr<bool> AskNumber(Engine& e, const std::string& base,
                               std::optional<cache::CompactionPolicy> policy, int64_t keep,
                               const std::vector<TokenId>& question, const std::string& number) {
  auto fork = e.Fork("b", base);
  if (!fork.ok()) return fork.status();
  TurnParams p = Tokens(question, 8);
  if (policy) {
    // A token trigger just below the history, keeping `keep` of it.
    p.compaction = e.options().compaction;
    p.compaction->policy = *policy;
    p.compaction->trigger_tokens = keep + 1;
    p.compaction->target_fraction =
        (static_cast<double>(keep) + 0.5) / static_cast<double>(keep + 1);
  }
  auto r = Run(e, fork->id, p);
  (void)e.DeleteSession("b", fork->id);
  if (!r.ok()) return r.status();
  return r->text.find(number) != std::string::npos;
}

absl::StatusOr<json> Retrieval(Engine& e, const Flags& f, const std::vector<TokenId>& text,
                               int64_t C) {
  const engine::Tokenizer& tok = e.tokenizer();
  engine::EncodeOptions eo;
  eo.add_bos = false;
  const std::vector<TokenId> question =
      tok.Encode("\n\nQuestion: What is the secret number? Answer: The secret number is", eo);
  const int64_t filler = static_cast<int64_t>(0.9 * static_cast<double>(C)) - 40;
  json out = json::array();
  for (const char* where : {"early", "late"}) {
    int full_ok = 0;
    std::vector<std::vector<int>> ok(f.budgets.size(), std::vector<int>(f.policies.size(), 0));
    for (int t = 0; t < f.trials; ++t) {
      const std::string number = absl::StrCat(1000 + (7919 * (t + 1)) % 9000);
      const std::vector<TokenId> fact =
          tok.Encode(absl::StrCat(" The secret number is ", number, ". "), eo);
      const int64_t at = (static_cast<int64_t>(text.size()) - filler) * t / std::max(1, f.trials);
      std::vector<TokenId> ctx(text.begin() + at, text.begin() + at + filler);
      // Early: after a 64-token lead-in (past the sinks); late: 64 tokens before the end.
      const int64_t pos = std::string_view(where) == "early" ? 64 : filler - 64;
      ctx.insert(ctx.begin() + pos, fact.begin(), fact.end());
      Progress(absl::StrCat("retrieval (", where, ") trial ", t + 1, "/", f.trials));
      auto base = SessionWith(e, ctx);
      if (!base.ok()) return base.status();
      auto a = AskNumber(e, *base, std::nullopt, 0, question, number);
      if (!a.ok()) return a.status();
      full_ok += *a;
      for (size_t i = 0; i < f.budgets.size(); ++i) {
        const int64_t keep =
            static_cast<int64_t>(std::llround(f.budgets[i] * static_cast<double>(C)));
        for (size_t k = 0; k < f.policies.size(); ++k) {
          auto w = AskNumber(e, *base, f.policies[k], keep, question, number);
          if (!w.ok()) return w.status();
          ok[i][k] += *w;
        }
      }
      (void)e.DeleteSession("b", *base);
    }
    json row = {{"fact", where}, {"trials", f.trials}, {"full KV", full_ok}};
    for (size_t i = 0; i < f.budgets.size(); ++i) {
      for (size_t k = 0; k < f.policies.size(); ++k) {
        row[absl::StrCat(AsAbsl(cache::CompactionPolicyName(f.policies[k])), " ", f.budgets[i])] =
            ok[i][k];
      }
    }
    out.push_back(row);
  }
  return out;
}

// The session's window is the eval's context C (a token trigger at C; the model's own context
// when C is all of it).
absl::StatusOr<json> LongSession(Engine& e, const Flags& f, const std::vector<TokenId>& text,
                                 cache::CompactionPolicy policy, int64_t C) {
  const int64_t total = f.long_factor * C;
  engine::SessionParams sp;
  sp.compaction = e.options().compaction;
  sp.compaction->policy = policy;
  sp.compaction->trigger_tokens = C;
  auto info = e.CreateSession("b", sp);
  if (!info.ok()) return info.status();
  std::vector<double> ms;
  int64_t fed = 0;
  int64_t max_bytes = 0;
  int64_t max_tokens = 0;
  std::string stopped;
  for (int64_t turn = 0; fed < total; ++turn) {
    const int64_t at = fed % (static_cast<int64_t>(text.size()) - f.turn_tokens);
    const std::vector<TokenId> delta(text.begin() + at, text.begin() + at + f.turn_tokens);
    const auto t0 = Clock::now();
    auto r = Run(e, info->id, Tokens(delta, 16));
    if (!r.ok()) {
      stopped = absl::StrCat("turn ", turn, " refused: ", r.status().message());
      break;
    }
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    fed += f.turn_tokens + 16;
    auto s = e.GetSession("b", info->id);
    if (!s.ok()) return s.status();
    max_bytes = std::max(max_bytes, s->kv_bytes);
    max_tokens = std::max(max_tokens, s->n_tokens);
  }
  auto s = e.GetSession("b", info->id);
  if (!s.ok()) return s.status();
  (void)e.DeleteSession("b", info->id);
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  const auto pct = [&](double q) {
    return sorted.empty() ? 0.0
                          : sorted[static_cast<size_t>(q * static_cast<double>(sorted.size() - 1))];
  };
  double mean = 0.0;
  for (double x : ms) mean += x / static_cast<double>(std::max<size_t>(ms.size(), 1));
  return json{{"policy", cache::CompactionPolicyName(policy)},
              {"tokens_fed", fed},
              {"turns", ms.size()},
              {"stopped", stopped},
              {"compactions", s->compactions},
              {"compacted_tokens", s->compacted_tokens},
              {"max_history_tokens", max_tokens},
              {"max_kv_bytes", max_bytes},
              {"turn_ms_mean", mean},
              {"turn_ms_p50", pct(0.5)},
              {"turn_ms_p90", pct(0.9)},
              {"turn_ms_max", pct(1.0)}};
}

void PrintText(const json& j) {
  std::printf("# mnemo compaction eval\n\nmodel %s, text %s, context %lld tokens, %lld scored\n\n",
              j["model"].get<std::string>().c_str(), j["text"].get<std::string>().c_str(),
              static_cast<long long>(j["context"].get<int64_t>()),
              static_cast<long long>(j["eval_tokens"].get<int64_t>()));
  std::printf(
      "| config | budget | KV tokens | NLL/token | perplexity | scored "
      "|\n|---|---|---|---|---|---|\n");
  for (const json& r : j["perplexity"]) {
    std::printf("| %s | %.2f | %lld | %.4f | %.2f | %lld |\n",
                r["config"].get<std::string>().c_str(), r["budget"].get<double>(),
                static_cast<long long>(r["kv_tokens"].get<int64_t>()), r["nll"].get<double>(),
                r["ppl"].get<double>(), static_cast<long long>(r["tokens"].get<int64_t>()));
  }
  std::printf("\nretrieval (correct of trials): %s\n", j["retrieval"].dump().c_str());
  std::printf("long sessions: %s\n", j["long"].dump().c_str());
}

absl::Status RunEval(const Flags& f) {
  auto model = engine::Model::Open(f.model);
  if (!model.ok()) return model.status();
  engine::EngineOptions o;
  o.threads = f.threads;
  o.kv_budget_bytes = uint64_t{2} << 30;
  if (f.quick) o.compaction.summary_max_tokens = 32;  // room in --quick's small budgets
  auto e = Engine::Create(**model, o);
  if (!e.ok()) return e.status();
  const int64_t C = f.context > 0 ? f.context : (*e)->context_length() - f.eval_tokens;
  if (C + f.eval_tokens > (*e)->context_length() || C < 64) {
    return absl::InvalidArgumentError(absl::StrCat("--context ", C, " + --eval-tokens ",
                                                   f.eval_tokens, " must fit the context length ",
                                                   (*e)->context_length(), " (and be >= 64)"));
  }
  auto raw = ReadText(f);
  if (!raw.ok()) return raw.status();
  engine::EncodeOptions eo;
  eo.add_bos = false;
  const std::vector<TokenId> text = (*e)->tokenizer().Encode(*raw, eo);
  Progress(absl::StrCat("text: ", raw->size(), " bytes, ", text.size(), " tokens; context ", C));
  json j = {
      {"bench", "compaction"},
      {"model", f.model},
      {"text", f.text.empty() ? "bible -f 'Genesis1:1-50:26' (Debian bible-kjv-text)" : f.text},
      {"context", C},
      {"eval_tokens", f.eval_tokens},
      {"samples", f.samples},
      {"trials", f.trials},
      {"quick", f.quick}};
  const auto wanted = [&](const char* part) {
    return std::find(f.parts.begin(), f.parts.end(), part) != f.parts.end();
  };
  j["perplexity"] = json::array();
  j["retrieval"] = json::array();
  j["long"] = json::array();
  if (wanted("perplexity")) {
    auto ppl = Perplexity(**e, f, text, C);
    if (!ppl.ok()) return ppl.status();
    j["perplexity"] = *ppl;
  }
  if (wanted("retrieval")) {
    auto ret = Retrieval(**e, f, text, C);
    if (!ret.ok()) return ret.status();
    j["retrieval"] = *ret;
  }
  // (Policy none runs until the model's context is full: left out of --quick.)
  std::vector<cache::CompactionPolicy> long_policies = f.policies;
  if (!f.quick) long_policies.push_back(cache::CompactionPolicy::kNone);
  for (auto p : wanted("long") ? long_policies : std::vector<cache::CompactionPolicy>{}) {
    Progress(absl::StrCat("long session, policy ", AsAbsl(cache::CompactionPolicyName(p))));
    auto l = LongSession(**e, f, text, p, C);
    if (!l.ok()) return l.status();
    j["long"].push_back(*l);
  }
  j["engine"] = {{"compactions", (*e)->Stats().compactions},
                 {"compacted_tokens", (*e)->Stats().compacted_tokens},
                 {"block_bytes", (*e)->block_bytes()}};
  PrintReport(j, f.json, PrintText);
  return absl::OkStatus();
}

}  // namespace
}  // namespace mnemo::bench

int main(int argc, char** argv) {
  return mnemo::bench::BenchMain("mnemo_compaction_eval", mnemo::bench::ParseFlags(argc, argv),
                                 mnemo::bench::RunEval);
}
