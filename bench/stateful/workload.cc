// Workloads of `mnemo bench multiturn` (bench/stateful/workload.h).
#include "bench/stateful/workload.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <numbers>
#include <system_error>
#include <unordered_map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace mnemo::bench {
namespace {

// Salts of the generators' random streams: one stream per (seed, salt, conversation index),
// so conversation i is the same whether 4 or 400 conversations are generated. Salts fit in
// 32 bits (std::seed_seq keeps only the low 32 bits of each value).
constexpr uint64_t kChatSalt = 0x63686174;          // "chat"
constexpr uint64_t kAgentSalt = 0x61676e74;         // "agnt"
constexpr uint64_t kChatArrivalSalt = 0x63617272;   // "carr"
constexpr uint64_t kAgentArrivalSalt = 0x61617272;  // "aarr"
constexpr uint64_t kChatSharedSalt = 0x63736873;    // "cshs"
constexpr uint64_t kAgentSharedSalt = 0x61736873;   // "ashs"

// System prompts: the shared one is a lead and drawn text; a conversation's own prompt
// names the conversation in its first sentence, so that no two are alike (drawn text alone
// may repeat: it starts at one of the text's sentences) and a prefix cache can share no more
// than the few tokens before the name.
constexpr char kChatRole[] = "You are a helpful assistant";
constexpr char kAgentRole[] =
    "You are a coding agent: you call tools, read their output and reply briefly";
constexpr char kBackground[] = ". Background: ";
constexpr char kTaskLead[] = "Task: ";
constexpr char kToolLead[] = "Tool output (read_file):\n";

constexpr int kMaxReplyTokens = 1000000;

// A uniform in the open interval (0, 1) from the top 53 bits of one draw: the +0.5 keeps it
// away from 0 and 1, where the inverse CDFs are infinite.
double Uniform01(std::mt19937_64& rng) {
  return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53;
}

// The standard normal CDF; erfc keeps full relative precision in the lower tail.
double NormalCdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

int DrawInt(const LogNormal& d, std::mt19937_64& rng) {
  const double v = std::round(DrawLogNormal(d, rng));
  return static_cast<int>(std::clamp(v, 0.0, static_cast<double>(std::numeric_limits<int>::max())));
}

// The random stream (seed, salt, index). std::seed_seq keeps 32 bits of each value, so the
// seed goes in as its two halves: seeds that differ only in the high half differ.
std::mt19937_64 Stream(uint64_t seed, uint64_t salt, uint64_t index) {
  std::seed_seq seq{seed & 0xffffffffu, seed >> 32, salt, index};
  return std::mt19937_64(seq);
}

// Seconds are kept to the millisecond: shorter JSON, and still exact on a round trip.
double Millis(double seconds) { return std::round(seconds * 1000.0) / 1000.0; }

std::string ConversationId(std::string_view kind, int index) {
  return absl::StrFormat("%s-%04d", std::string(kind), index);
}

// The arrival time of each of `n` conversations of a Poisson process of `rate` per second:
// the first at 0, then exponential gaps drawn by inverse CDF, -ln(1 - u) / rate, gap i from
// stream (seed, salt, i) so that a prefix of the conversations keeps its arrivals.
std::vector<double> Arrivals(uint64_t seed, uint64_t salt, int n, double rate) {
  std::vector<double> out(static_cast<size_t>(std::max(n, 0)), 0.0);
  double t = 0;
  for (int i = 1; i < n; ++i) {
    std::mt19937_64 rng = Stream(seed, salt, static_cast<uint64_t>(i));
    const double u = Uniform01(rng);
    if (rate > 0) t += -std::log1p(-u) / rate;
    out[static_cast<size_t>(i)] = Millis(t);
  }
  return out;
}

// The shared system prompt of a workload: the same string for every conversation that uses
// it (its own stream, independent of the conversation index).
std::string SharedSystem(const TextSource& text, uint64_t seed, uint64_t salt, int tokens,
                         const char* role) {
  if (tokens <= 0) return "";
  std::mt19937_64 rng = Stream(seed, salt, 0);
  return absl::StrCat(role, kBackground, text.Draw(rng, tokens));
}

// Picks the conversation's system prompt: shared with probability `fraction` (one uniform
// from the conversation's stream), else its own, `own_tokens` tokens of drawn text after
// "<role> in conversation <id>. Background: ". Its id must be set.
// Conversation `index` of `kind` arriving at `arrival`, with its system prompt: `shared` with
// probability `fraction`, else its own prompt of `own_tokens` tokens naming it.
WorkloadConversation NewConversation(std::string_view kind, int index, double arrival,
                                     std::mt19937_64& rng, const TextSource& text, double fraction,
                                     const std::string& shared, int own_tokens, const char* role) {
  WorkloadConversation c;
  c.id = ConversationId(kind, index);
  c.kind = std::string(kind);
  c.arrival_seconds = arrival;
  if (Uniform01(rng) < fraction) {
    c.system = shared;
    c.shared_system = !shared.empty();
  } else if (own_tokens > 0) {
    c.system =
        absl::StrCat(role, " in conversation ", c.id, kBackground, text.Draw(rng, own_tokens));
  }
  return c;
}

// ---- JSON lines ----

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

absl::Status LineError(int line, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", what));
}

absl::Status FieldError(int line, const std::string& field, const std::string& what) {
  return LineError(line, absl::StrCat("field ", field, " ", what));
}

std::string Quoted(const std::string& s) { return absl::StrCat("\"", s, "\""); }

absl::Status ParseTurn(const Json& j, int line, size_t index, WorkloadTurn* turn) {
  const std::string where = absl::StrCat("\"turns\"[", index, "]");
  if (!j.is_object()) return FieldError(line, where, "must be an object");
  const std::string user = where + ".\"user\"";
  auto it = j.find("user");
  if (it == j.end()) return FieldError(line, user, "is missing");
  if (!it->is_string()) return FieldError(line, user, "must be a string");
  turn->user = it->get<std::string>();

  const std::string reply = where + ".\"reply_tokens\"";
  it = j.find("reply_tokens");
  if (it == j.end()) return FieldError(line, reply, "is missing");
  const std::string range = absl::StrCat("must be an integer in [1, ", kMaxReplyTokens, "]");
  if (!it->is_number_integer()) return FieldError(line, reply, range);
  if (it->is_number_unsigned()) {
    const uint64_t v = it->get<uint64_t>();
    if (v < 1 || v > static_cast<uint64_t>(kMaxReplyTokens)) {
      return FieldError(line, reply, range);
    }
    turn->reply_tokens = static_cast<int>(v);
  } else {
    const int64_t v = it->get<int64_t>();
    if (v < 1 || v > kMaxReplyTokens) return FieldError(line, reply, range);
    turn->reply_tokens = static_cast<int>(v);
  }

  it = j.find("think");
  if (it != j.end()) {
    const std::string think = where + ".\"think\"";
    if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() < 0) {
      return FieldError(line, think, "must be a finite number >= 0");
    }
    turn->think_seconds = it->get<double>();
  }
  return absl::OkStatus();
}

absl::Status ParseConversation(const Json& j, int line, WorkloadConversation* c) {
  if (!j.is_object()) return LineError(line, "a conversation must be a JSON object");
  auto it = j.find("id");
  if (it == j.end()) return FieldError(line, "\"id\"", "is missing");
  if (!it->is_string() || it->get<std::string>().empty()) {
    return FieldError(line, "\"id\"", "must be a non-empty string");
  }
  c->id = it->get<std::string>();

  c->kind = "chat";
  it = j.find("kind");
  if (it != j.end()) {
    if (!it->is_string() || (*it != "chat" && *it != "agent")) {
      return FieldError(line, "\"kind\"", "must be \"chat\" or \"agent\"");
    }
    c->kind = it->get<std::string>();
  }
  it = j.find("system");
  if (it != j.end()) {
    if (!it->is_string()) return FieldError(line, "\"system\"", "must be a string");
    c->system = it->get<std::string>();
  }
  it = j.find("shared_system");
  if (it != j.end()) {
    if (!it->is_boolean()) return FieldError(line, "\"shared_system\"", "must be a boolean");
    c->shared_system = it->get<bool>();
  }
  it = j.find("arrival");
  if (it != j.end()) {
    if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() < 0) {
      return FieldError(line, "\"arrival\"", "must be a finite number >= 0");
    }
    c->arrival_seconds = it->get<double>();
  }

  it = j.find("turns");
  if (it == j.end()) return FieldError(line, "\"turns\"", "is missing");
  if (!it->is_array() || it->empty()) {
    return FieldError(line, "\"turns\"", "must be a non-empty array");
  }
  c->turns.resize(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    absl::Status s = ParseTurn((*it)[i], line, i, &c->turns[i]);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

bool IsBlank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char ch) {
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\f' || ch == '\v';
  });
}

std::string ErrnoText(int err) { return std::strerror(err); }

}  // namespace

double InverseNormalCdf(double p) {
  if (std::isnan(p) || p < 0 || p > 1) return std::numeric_limits<double>::quiet_NaN();
  if (p == 0) return -std::numeric_limits<double>::infinity();
  if (p == 1) return std::numeric_limits<double>::infinity();
  // The upper half by symmetry: 1 - p is exact for p >= 0.5 (Sterbenz), and the lower tail
  // is where the refinement below has full relative precision.
  if (p > 0.5) return -InverseNormalCdf(1.0 - p);

  // P. J. Acklam's rational approximation (relative error below 1.15e-9): a rational
  // function of (p - 0.5) in the central region, of sqrt(-2 ln p) in the tail.
  static constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                                 -2.759285104469687e+02, 1.383577518672690e+02,
                                 -3.066479806614716e+01, 2.506628277459239e+00};
  static constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                                 -1.556989798598866e+02, 6.680131188771972e+01,
                                 -1.328068155288572e+01};
  static constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                                 -2.400758277161838e+00, -2.549732539343734e+00,
                                 4.374664141464968e+00,  2.938163982698783e+00};
  static constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                                 2.445134137142996e+00, 3.754408661907416e+00};
  constexpr double kLowBreak = 0.02425;
  double x;
  if (p < kLowBreak) {
    const double q = std::sqrt(-2.0 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
  } else {
    const double q = p - 0.5;
    const double r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
  }
  // One Halley step on f(x) = Phi(x) - p (f' = phi(x), f'' = -x phi(x)): cubic convergence
  // takes the 1e-9 start to the precision of erfc. Skipped in the far tail where
  // exp(x^2 / 2) would overflow (below p ~ 1e-307, the start is then kept).
  const double e = NormalCdf(x) - p;
  const double u = e * std::sqrt(2.0 * std::numbers::pi) * std::exp(0.5 * x * x);
  if (std::isfinite(u)) x -= u / (1.0 + 0.5 * x * u);
  return x;
}

double DrawLogNormal(const LogNormal& d, std::mt19937_64& rng) {
  // Phi^-1(0.9): a log-normal's 90th percentile is exp(mu + sigma * z90).
  constexpr double kZ90 = 1.2815515655446004;
  const double z = InverseNormalCdf(Uniform01(rng));
  if (!(d.median > 0)) return d.min;
  const double mu = std::log(d.median);
  const double v = d.p90 > d.median ? std::exp(mu + (std::log(d.p90) - mu) / kZ90 * z) : d.median;
  return std::clamp(v, d.min, std::max(d.min, d.max));
}

Workload MakeChatWorkload(const WorkloadText& text, uint64_t seed, const ChatOptions& opts) {
  const TextSource& user = *text.user;
  Workload w;
  w.name = "chat";
  const std::vector<double> arrivals =
      Arrivals(seed, kChatArrivalSalt, opts.conversations, opts.arrival_rate);
  const std::string shared =
      SharedSystem(user, seed, kChatSharedSalt, opts.shared_system_tokens, kChatRole);
  for (int i = 0; i < opts.conversations; ++i) {
    std::mt19937_64 rng = Stream(seed, kChatSalt, static_cast<uint64_t>(i));
    WorkloadConversation c =
        NewConversation("chat", i, arrivals[static_cast<size_t>(i)], rng, user,
                        opts.shared_system_fraction, shared, opts.own_system_tokens, kChatRole);
    const int turns = std::max(1, DrawInt(opts.turns, rng));
    for (int t = 0; t < turns; ++t) {
      WorkloadTurn turn;
      turn.user = user.Draw(rng, std::max(1, DrawInt(opts.user_tokens, rng)));
      turn.reply_tokens = std::clamp(DrawInt(opts.reply_tokens, rng), 1, kMaxReplyTokens);
      if (t > 0) turn.think_seconds = Millis(DrawLogNormal(opts.think_seconds, rng));
      c.turns.push_back(std::move(turn));
    }
    w.conversations.push_back(std::move(c));
  }
  return w;
}

Workload MakeAgentWorkload(const WorkloadText& text, uint64_t seed, const AgentOptions& opts) {
  const TextSource& user = *text.user;
  const TextSource& tool = text.tool != nullptr ? *text.tool : user;
  Workload w;
  w.name = "agent";
  const std::vector<double> arrivals =
      Arrivals(seed, kAgentArrivalSalt, opts.conversations, opts.arrival_rate);
  const std::string shared =
      SharedSystem(user, seed, kAgentSharedSalt, opts.shared_system_tokens, kAgentRole);
  for (int i = 0; i < opts.conversations; ++i) {
    std::mt19937_64 rng = Stream(seed, kAgentSalt, static_cast<uint64_t>(i));
    WorkloadConversation c =
        NewConversation("agent", i, arrivals[static_cast<size_t>(i)], rng, user,
                        opts.shared_system_fraction, shared, opts.own_system_tokens, kAgentRole);
    const int steps = DrawInt(opts.steps, rng);
    // Turn 0 is the task; turns 1..steps carry one tool output each.
    WorkloadTurn task;
    task.user = kTaskLead + user.Draw(rng, std::max(1, opts.task_tokens));
    task.reply_tokens = std::clamp(DrawInt(opts.reply_tokens, rng), 1, kMaxReplyTokens);
    c.turns.push_back(std::move(task));
    for (int s = 0; s < steps; ++s) {
      WorkloadTurn turn;
      turn.user = kToolLead + tool.Draw(rng, std::max(1, DrawInt(opts.tool_tokens, rng)));
      turn.reply_tokens = std::clamp(DrawInt(opts.reply_tokens, rng), 1, kMaxReplyTokens);
      turn.think_seconds = Millis(DrawLogNormal(opts.think_seconds, rng));
      c.turns.push_back(std::move(turn));
    }
    w.conversations.push_back(std::move(c));
  }
  return w;
}

std::string WorkloadToJsonl(const Workload& w) {
  std::string out;
  for (const WorkloadConversation& c : w.conversations) {
    OrderedJson j;
    j["id"] = c.id;
    j["kind"] = c.kind;
    j["system"] = c.system;
    j["shared_system"] = c.shared_system;
    j["arrival"] = c.arrival_seconds;
    OrderedJson turns = OrderedJson::array();
    for (const WorkloadTurn& t : c.turns) {
      OrderedJson tj;
      tj["user"] = t.user;
      tj["reply_tokens"] = t.reply_tokens;
      tj["think"] = t.think_seconds;
      turns.push_back(std::move(tj));
    }
    j["turns"] = std::move(turns);
    // Doubles are written in their shortest round-trip form. Text that is not valid UTF-8
    // (a message cut inside a character) cannot be JSON: such bytes become U+FFFD instead
    // of throwing, so only such a text fails to round-trip exactly.
    out += j.dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
    out += '\n';
  }
  return out;
}

absl::StatusOr<Workload> WorkloadFromJsonl(std::string_view text, std::string name) {
  Workload w;
  w.name = std::move(name);
  std::unordered_map<std::string, int> first_line;  // id -> the line it first appeared on
  int line = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view raw = text.substr(pos, end - pos);
    pos = end + 1;
    ++line;
    if (IsBlank(raw)) continue;
    Json j;
    try {
      j = Json::parse(raw.begin(), raw.end());
    } catch (const Json::exception& e) {
      return LineError(line, absl::StrCat("invalid JSON: ", e.what()));
    }
    WorkloadConversation c;
    absl::Status s = ParseConversation(j, line, &c);
    if (!s.ok()) return s;
    auto [it, inserted] = first_line.emplace(c.id, line);
    if (!inserted) {
      return FieldError(
          line, "\"id\"",
          absl::StrCat("duplicates ", Quoted(c.id), " (first on line ", it->second, ")"));
    }
    w.conversations.push_back(std::move(c));
  }
  if (w.conversations.empty()) {
    return absl::InvalidArgumentError("empty workload: no conversation (one JSON object a line)");
  }
  return w;
}

absl::Status WriteWorkloadFile(const Workload& w, const std::string& path) {
  const std::string bytes = WorkloadToJsonl(w);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      return absl::UnavailableError(absl::StrCat("cannot create ", tmp, ": ", ErrnoText(errno)));
    }
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) {
      const int err = errno;
      out.close();
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      return absl::UnavailableError(absl::StrCat("cannot write ", tmp, ": ", ErrnoText(err)));
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    return absl::UnavailableError(
        absl::StrCat("cannot rename ", tmp, " to ", path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<Workload> ReadWorkloadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string msg = absl::StrCat("cannot open workload ", path, ": ", ErrnoText(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::UnavailableError(msg);
  }
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::UnavailableError(absl::StrCat("cannot read workload ", path));
  absl::StatusOr<Workload> w =
      WorkloadFromJsonl(bytes, std::filesystem::path(path).filename().string());
  if (!w.ok()) {
    return absl::Status(w.status().code(), absl::StrCat(path, ": ", w.status().message()));
  }
  return w;
}

WorkloadStats ComputeWorkloadStats(const Workload& w, const engine::Tokenizer& tokenizer) {
  engine::EncodeOptions eo;
  eo.add_bos = false;
  eo.add_eos = false;
  auto count = [&](const std::string& s) -> int64_t {
    return s.empty() ? 0 : static_cast<int64_t>(tokenizer.Encode(s, eo).size());
  };
  WorkloadStats st;
  st.conversations = static_cast<int>(w.conversations.size());
  int64_t user_tokens = 0, reply_tokens = 0, context_sum = 0, shared = 0, pauses = 0;
  double think = 0;
  for (const WorkloadConversation& c : w.conversations) {
    int64_t context = count(c.system);
    for (const WorkloadTurn& t : c.turns) {
      const int64_t u = count(t.user);
      user_tokens += u;
      reply_tokens += t.reply_tokens;
      if (&t != &c.turns.front()) {
        think += t.think_seconds;
        ++pauses;
      }
      context += u + t.reply_tokens;
    }
    st.turns += static_cast<int64_t>(c.turns.size());
    context_sum += context;
    st.max_final_context = std::max(st.max_final_context, context);
    if (c.shared_system) ++shared;
  }
  if (st.conversations > 0) {
    const double n = st.conversations;
    st.mean_turns = static_cast<double>(st.turns) / n;
    st.mean_final_context = static_cast<double>(context_sum) / n;
    st.shared_system_fraction = static_cast<double>(shared) / n;
  }
  if (st.turns > 0) {
    const double n = static_cast<double>(st.turns);
    st.mean_user_tokens = static_cast<double>(user_tokens) / n;
    st.mean_reply_tokens = static_cast<double>(reply_tokens) / n;
  }
  if (pauses > 0) st.mean_think_seconds = think / static_cast<double>(pauses);
  return st;
}

}  // namespace mnemo::bench
