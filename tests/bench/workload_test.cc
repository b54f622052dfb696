// The workload generators and the JSON-lines form of `mnemo bench multiturn`
// (bench/stateful/workload.h): determinism, the drawn distributions, the token counts of the
// messages, the round trip and the reader's errors.
#include "bench/stateful/workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/gguf.h"
#include "engine/model/test_model.h"
#include "engine/model/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace mnemo::bench {
namespace {

using ::testing::AllOf;
using ::testing::Ge;
using ::testing::HasSubstr;
using ::testing::Le;
using ::testing::StartsWith;

constexpr char kToolLead[] = "Tool output (read_file):\n";

std::unique_ptr<engine::Tokenizer> LoadTokenizer(const std::string& gguf) {
  auto file = engine::GgufFile::Open(gguf);
  if (!file.ok()) return nullptr;
  auto data = engine::TokenizerDataFromGguf(**file);
  if (!data.ok()) return nullptr;
  auto tok = engine::Tokenizer::Create(std::move(*data));
  return tok.ok() ? std::move(*tok) : nullptr;
}

// The random test model's tokenizer (byte-level BPE with few merges: cheap to encode), with
// English user text and C-header tool text; built once for the whole file.
struct Env {
  std::unique_ptr<engine::Tokenizer> tokenizer;
  std::unique_ptr<TextSource> user, tool;

  int Count(const std::string& text) const {
    engine::EncodeOptions eo;
    eo.add_bos = false;
    eo.add_eos = false;
    return static_cast<int>(tokenizer->Encode(text, eo).size());
  }
};

const Env& TestEnv() {
  static const Env* env = [] {
    auto* e = new Env;
    const std::string path = testing::MakeTempDir() + "/model.gguf";
    EXPECT_TRUE(engine::WriteTestModel({}, path).ok());
    e->tokenizer = LoadTokenizer(path);
    EXPECT_NE(e->tokenizer, nullptr);
    std::string used;
    e->user = std::make_unique<TextSource>(
        TextSource::LoadWords("/usr/share/common-licenses/GPL-3", &used), *e->tokenizer);
    e->tool = std::make_unique<TextSource>(TextSource::LoadWords("/usr/include/stdlib.h", &used),
                                           *e->tokenizer);
    return e;
  }();
  return *env;
}

WorkloadText Text() { return {TestEnv().user.get(), TestEnv().tool.get()}; }

// Chat options that keep a conversation to a few short messages.
ChatOptions SmallChat(int conversations) {
  ChatOptions o;
  o.conversations = conversations;
  o.turns = {2, 4, 1, 5};
  o.user_tokens = {16, 40, 4, 64};
  o.shared_system_tokens = 60;
  o.own_system_tokens = 12;
  return o;
}

std::vector<std::string> Lines(const std::string& jsonl) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < jsonl.size()) {
    size_t end = jsonl.find('\n', pos);
    if (end == std::string::npos) end = jsonl.size();
    out.push_back(jsonl.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

void ExpectSameWorkload(const Workload& a, const Workload& b) {
  ASSERT_EQ(a.conversations.size(), b.conversations.size());
  for (size_t i = 0; i < a.conversations.size(); ++i) {
    const WorkloadConversation& x = a.conversations[i];
    const WorkloadConversation& y = b.conversations[i];
    EXPECT_EQ(x.id, y.id);
    EXPECT_EQ(x.kind, y.kind);
    EXPECT_EQ(x.system, y.system);
    EXPECT_EQ(x.shared_system, y.shared_system);
    EXPECT_EQ(x.arrival_seconds, y.arrival_seconds) << x.id;  // exact, not near
    ASSERT_EQ(x.turns.size(), y.turns.size()) << x.id;
    for (size_t t = 0; t < x.turns.size(); ++t) {
      EXPECT_EQ(x.turns[t].user, y.turns[t].user);
      EXPECT_EQ(x.turns[t].reply_tokens, y.turns[t].reply_tokens);
      EXPECT_EQ(x.turns[t].think_seconds, y.turns[t].think_seconds);
    }
  }
}

// ---- numerics ----

TEST(WorkloadNumerics, InverseNormalCdfMatchesHighPrecisionValues) {
  // Reference values: the exact inverse of each double p, computed with mpmath at 60 digits.
  const struct {
    double p, x;
  } kCases[] = {
      {0.975, 1.9599639845400542355},
      {0.9, 1.281551565544600467},
      {0.5, 0.0},
      {0.3, -0.52440051270804078404},
      {0.001, -3.0902323061678135415},
      {1e-10, -6.3613409024040562047},
      {1e-20, -9.2623400897984075796},
      {1e-300, -37.047096299361199237},
      {0.02425, -1.9729610513118848376},
      {0.97575, 1.9729610513118849594},
      {0.999999, 4.7534243088170877657},
      {1 - 1e-12, 7.0344869100478352057},
  };
  for (const auto& c : kCases) {
    EXPECT_NEAR(InverseNormalCdf(c.p), c.x, 1e-12) << "p = " << c.p;
  }
  EXPECT_NEAR(InverseNormalCdf(0.975), 1.959963984540054, 1e-14);
  EXPECT_EQ(InverseNormalCdf(0.0), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(InverseNormalCdf(1.0), std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(InverseNormalCdf(-0.1)));
  EXPECT_TRUE(std::isnan(InverseNormalCdf(1.5)));
  // Monotone and odd across the region boundaries and the whole range.
  double prev = -std::numeric_limits<double>::infinity();
  for (int i = 1; i < 1000; ++i) {
    const double p = i / 1000.0;
    const double x = InverseNormalCdf(p);
    EXPECT_GT(x, prev) << p;
    EXPECT_NEAR(x, -InverseNormalCdf(1 - p), 1e-12) << p;
    prev = x;
  }
}

TEST(WorkloadNumerics, LogNormalHasTheStatedMedianAndP90) {
  const LogNormal d{80, 400, 0, 1e18};
  std::mt19937_64 rng(12345);
  constexpr int kN = 20000;
  std::vector<double> v;
  for (int i = 0; i < kN; ++i) v.push_back(DrawLogNormal(d, rng));
  std::sort(v.begin(), v.end());
  // Standard errors at n = 20000: ~1.1% on the median, 0.2 points on the fraction.
  EXPECT_NEAR(v[kN / 2], 80, 80 * 0.05);
  const double below =
      static_cast<double>(std::lower_bound(v.begin(), v.end(), 400.0) - v.begin()) / kN;
  EXPECT_NEAR(below, 0.9, 0.015);
  EXPECT_GT(v.front(), 0);
}

TEST(WorkloadNumerics, LogNormalClipsAndUsesOneDrawPerValue) {
  const LogNormal d{3.5, 8, 1, 16};
  std::mt19937_64 rng(7);
  int at_min = 0, at_max = 0;
  for (int i = 0; i < 5000; ++i) {
    std::mt19937_64 expected = rng;
    expected.discard(1);
    const double x = DrawLogNormal(d, rng);
    ASSERT_EQ(rng, expected);
    ASSERT_GE(x, 1);
    ASSERT_LE(x, 16);
    at_min += x == 1;
    at_max += x == 16;
  }
  // P(X < 1) = Phi(-ln 3.5 / 0.6449) ~ 2.6%; P(X > 16) ~ 0.9%.
  EXPECT_GT(at_min, 50);
  EXPECT_GT(at_max, 10);
  // A degenerate spread (p90 <= median) is the median itself.
  EXPECT_EQ(DrawLogNormal({5, 5, 0, 100}, rng), 5);
  EXPECT_EQ(DrawLogNormal({5, 2, 0, 100}, rng), 5);
}

// ---- chat ----

TEST(WorkloadChat, SameSeedSameBytesOtherSeedOtherBytes) {
  const std::string a = WorkloadToJsonl(MakeChatWorkload(Text(), 42, SmallChat(6)));
  const std::string b = WorkloadToJsonl(MakeChatWorkload(Text(), 42, SmallChat(6)));
  const std::string c = WorkloadToJsonl(MakeChatWorkload(Text(), 43, SmallChat(6)));
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(Lines(a).size(), 6u);
  // The seed's high half counts too.
  const uint64_t high = 42 + (uint64_t{1} << 40);
  EXPECT_NE(a, WorkloadToJsonl(MakeChatWorkload(Text(), high, SmallChat(6))));
}

TEST(WorkloadChat, ConversationIsTheSameWhateverTheCount) {
  const std::vector<std::string> four =
      Lines(WorkloadToJsonl(MakeChatWorkload(Text(), 9, SmallChat(4))));
  const std::vector<std::string> eight =
      Lines(WorkloadToJsonl(MakeChatWorkload(Text(), 9, SmallChat(8))));
  ASSERT_EQ(four.size(), 4u);
  ASSERT_EQ(eight.size(), 8u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(four[i], eight[i]) << i;
  // The same holds for agents.
  AgentOptions ao;
  ao.steps = {2, 3, 1, 3};
  ao.tool_tokens = {30, 60, 20, 80};
  ao.shared_system_tokens = 30;
  ao.conversations = 2;
  const Workload two = MakeAgentWorkload(Text(), 9, ao);
  ao.conversations = 3;
  Workload three = MakeAgentWorkload(Text(), 9, ao);
  three.conversations.pop_back();
  ExpectSameWorkload(two, three);
}

TEST(WorkloadChat, SharedSystemPromptIsOneStringAndItsFractionHolds) {
  ChatOptions o = SmallChat(200);
  o.turns = {1, 1, 1, 1};
  o.user_tokens = {4, 4, 4, 4};
  const Workload w = MakeChatWorkload(Text(), 5, o);
  ASSERT_EQ(w.conversations.size(), 200u);
  std::set<std::string> shared, own;
  int n_shared = 0;
  for (const WorkloadConversation& c : w.conversations) {
    if (c.shared_system) {
      EXPECT_THAT(c.system, StartsWith("You are a helpful assistant. Background: "));
      ++n_shared;
      shared.insert(c.system);
    } else {
      EXPECT_THAT(c.system, StartsWith("You are a helpful assistant in conversation " + c.id +
                                       ". Background: "));
      own.insert(c.system);
    }
  }
  ASSERT_EQ(shared.size(), 1u);
  EXPECT_EQ(own.size(), static_cast<size_t>(200 - n_shared));  // all different
  EXPECT_EQ(own.count(*shared.begin()), 0u);
  // Binomial(200, 0.5): standard deviation 7.
  EXPECT_GE(n_shared, 70);
  EXPECT_LE(n_shared, 130);
  // Draw is exact but for a last word that cannot be cut (then it runs over by that word).
  auto background = [](const std::string& s) {
    const std::string lead = ". Background: ";
    return TestEnv().Count(s.substr(s.find(lead) + lead.size()));
  };
  EXPECT_THAT(background(*shared.begin()), AllOf(Ge(60), Le(68)));
  for (const std::string& s : own) EXPECT_THAT(background(s), AllOf(Ge(12), Le(20)));

  o.shared_system_fraction = 0;
  for (const auto& c : MakeChatWorkload(Text(), 5, o).conversations) {
    EXPECT_FALSE(c.shared_system);
  }
  o.shared_system_fraction = 1;
  for (const auto& c : MakeChatWorkload(Text(), 5, o).conversations) {
    EXPECT_TRUE(c.shared_system);
  }
}

TEST(WorkloadChat, DrawnQuantitiesStayInTheirRanges) {
  ChatOptions o;  // the defaults
  o.conversations = 12;
  const Workload w = MakeChatWorkload(Text(), 1, o);
  EXPECT_EQ(w.name, "chat");
  ASSERT_EQ(w.conversations.size(), 12u);
  EXPECT_EQ(w.conversations[0].id, "chat-0000");
  EXPECT_EQ(w.conversations[11].id, "chat-0011");
  EXPECT_EQ(w.conversations[0].arrival_seconds, 0.0);
  std::set<int> turn_counts;
  for (size_t i = 0; i < w.conversations.size(); ++i) {
    const WorkloadConversation& c = w.conversations[i];
    EXPECT_EQ(c.kind, "chat");
    if (i > 0) {
      EXPECT_GE(c.arrival_seconds, w.conversations[i - 1].arrival_seconds);
    }
    ASSERT_GE(c.turns.size(), 1u);
    ASSERT_LE(c.turns.size(), 16u);
    turn_counts.insert(static_cast<int>(c.turns.size()));
    for (size_t t = 0; t < c.turns.size(); ++t) {
      const WorkloadTurn& turn = c.turns[t];
      const int tokens = TestEnv().Count(turn.user);
      EXPECT_GE(tokens, 8) << c.id << " turn " << t;
      EXPECT_LE(tokens, 1024 + 8) << c.id << " turn " << t;  // a word's tokens over at most
      EXPECT_GE(turn.reply_tokens, 8);
      EXPECT_LE(turn.reply_tokens, 1024);
      if (t == 0) {
        EXPECT_EQ(turn.think_seconds, 0.0);
      } else {
        EXPECT_GE(turn.think_seconds, 2.0);
        EXPECT_LE(turn.think_seconds, 600.0);
      }
    }
  }
  EXPECT_GT(turn_counts.size(), 1u);  // the count is drawn, not fixed
  // Poisson at 0.5/s: the 11 gaps average 2 s; far from 0 and far from 20 s.
  EXPECT_GT(w.conversations.back().arrival_seconds, 2.0);
  EXPECT_LT(w.conversations.back().arrival_seconds, 80.0);
}

// ---- agent ----

TEST(WorkloadAgent, ATaskThenToolOutputsOfTheDrawnSizes) {
  AgentOptions o;  // the defaults, fewer runs
  o.conversations = 3;
  const Workload w = MakeAgentWorkload(Text(), 3, o);
  EXPECT_EQ(w.name, "agent");
  ASSERT_EQ(w.conversations.size(), 3u);
  EXPECT_EQ(w.conversations[2].id, "agent-0002");
  for (const WorkloadConversation& c : w.conversations) {
    EXPECT_EQ(c.kind, "agent");
    EXPECT_TRUE(c.shared_system);  // fraction 1.0
    EXPECT_EQ(c.system, w.conversations[0].system);
    ASSERT_GE(c.turns.size(), 3u);  // the task and at least 2 steps
    ASSERT_LE(c.turns.size(), 41u);
    EXPECT_THAT(c.turns[0].user, StartsWith("Task: "));
    EXPECT_THAT(TestEnv().Count(c.turns[0].user.substr(6)), AllOf(Ge(120), Le(128)));
    EXPECT_EQ(c.turns[0].think_seconds, 0.0);
    for (size_t t = 0; t < c.turns.size(); ++t) {
      const WorkloadTurn& turn = c.turns[t];
      EXPECT_GE(turn.reply_tokens, 8);
      EXPECT_LE(turn.reply_tokens, 256);
      if (t == 0) continue;
      ASSERT_THAT(turn.user, StartsWith(kToolLead));
      const std::string tool_text = turn.user.substr(sizeof(kToolLead) - 1);
      const int tokens = TestEnv().Count(tool_text);
      EXPECT_GE(tokens, 200) << c.id << " turn " << t;
      EXPECT_LE(tokens, 2000 + 8) << c.id << " turn " << t;
      EXPECT_GE(turn.think_seconds, 0.1);
      EXPECT_LE(turn.think_seconds, 30.0);
    }
  }
  // The tool outputs come from the tool text (stdlib.h), not the user text (GPL-3).
  std::string outputs;
  for (size_t t = 1; t < w.conversations[0].turns.size(); ++t) {
    outputs += w.conversations[0].turns[t].user;
  }
  EXPECT_NE(outputs.find("extern"), std::string::npos);
  EXPECT_EQ(outputs.find("GNU General Public License"), std::string::npos);
}

// Token counts as the real model counts them (skipped without the model).
TEST(WorkloadAgent, RealTokenizerCountsTheDrawnLengths) {
  const std::string model = testing::SmolLm2GgufPath();
  MNEMO_REQUIRE_FILE(model);
  std::unique_ptr<engine::Tokenizer> tok = LoadTokenizer(model);
  ASSERT_NE(tok, nullptr);
  std::string used;
  TextSource tool(TextSource::LoadWords("/usr/include/stdlib.h", &used), *tok);
  AgentOptions o;
  o.conversations = 1;
  o.steps = {4, 6, 4, 6};
  const Workload w = MakeAgentWorkload({&tool, nullptr}, 11, o);
  engine::EncodeOptions eo;
  eo.add_bos = false;
  eo.add_eos = false;
  const WorkloadConversation& c = w.conversations.at(0);
  ASSERT_GE(c.turns.size(), 5u);
  for (size_t t = 1; t < c.turns.size(); ++t) {
    const int n =
        static_cast<int>(tok->Encode(c.turns[t].user.substr(sizeof(kToolLead) - 1), eo).size());
    EXPECT_GE(n, 200);
    EXPECT_LE(n, 2000 + 16);
  }
}

// ---- JSON lines ----

TEST(WorkloadJsonl, RoundTripIsExact) {
  Workload hand;
  hand.name = "hand";
  WorkloadConversation c;
  c.id = "x \"quoted\" \\ id";
  c.kind = "agent";
  c.system = "line one\nline two\ttab \u00e9\u65e5\U0001F600 \x01";
  c.shared_system = true;
  c.arrival_seconds = 0.1 + 0.2;  // 0.30000000000000004
  c.turns = {{"", 1, 0}, {"{\"json\": [1]}", 1000000, 1e-300}, {"x", 7, 123.45678901234567}};
  hand.conversations.push_back(c);
  c.id = "second";
  c.kind = "chat";
  c.shared_system = false;
  c.arrival_seconds = 1e300;
  hand.conversations.push_back(c);

  ChatOptions co = SmallChat(5);
  AgentOptions ao;
  ao.conversations = 2;
  ao.steps = {2, 3, 1, 3};
  ao.tool_tokens = {30, 60, 20, 80};
  for (const Workload& w :
       {hand, MakeChatWorkload(Text(), 17, co), MakeAgentWorkload(Text(), 17, ao)}) {
    const std::string jsonl = WorkloadToJsonl(w);
    absl::StatusOr<Workload> back = WorkloadFromJsonl(jsonl, w.name);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->name, w.name);
    ExpectSameWorkload(w, *back);
    EXPECT_EQ(WorkloadToJsonl(*back), jsonl);
  }

  const std::string path = testing::MakeTempDir() + "/mine.jsonl";
  ASSERT_TRUE(WriteWorkloadFile(hand, path).ok());
  EXPECT_EQ(testing::ReadFile(path), WorkloadToJsonl(hand));
  absl::StatusOr<Workload> read = ReadWorkloadFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->name, "mine.jsonl");
  ExpectSameWorkload(hand, *read);
  EXPECT_FALSE(testing::FileExists(path + ".tmp"));
  EXPECT_EQ(ReadWorkloadFile(path + ".absent").status().code(), absl::StatusCode::kNotFound);
}

TEST(WorkloadJsonl, OptionalFieldsDefaultAndUnknownFieldsAreIgnored) {
  const std::string text =
      "\n"
      "{\"id\": \"a\", \"turns\": [{\"user\": \"hi\", \"reply_tokens\": 3, \"extra\": 1}],"
      " \"future\": {\"x\": [1, 2]}}\r\n"
      "   \n"
      "{\"id\": \"b\", \"kind\": \"agent\", \"system\": \"s\", \"shared_system\": true,"
      " \"arrival\": 2, \"turns\": [{\"user\": \"u\", \"reply_tokens\": 1, \"think\": 0.5}]}";
  absl::StatusOr<Workload> w = WorkloadFromJsonl(text, "n");
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->conversations.size(), 2u);
  const WorkloadConversation& a = w->conversations[0];
  EXPECT_EQ(a.id, "a");
  EXPECT_EQ(a.kind, "chat");
  EXPECT_EQ(a.system, "");
  EXPECT_FALSE(a.shared_system);
  EXPECT_EQ(a.arrival_seconds, 0.0);
  ASSERT_EQ(a.turns.size(), 1u);
  EXPECT_EQ(a.turns[0].user, "hi");
  EXPECT_EQ(a.turns[0].reply_tokens, 3);
  EXPECT_EQ(a.turns[0].think_seconds, 0.0);
  const WorkloadConversation& b = w->conversations[1];
  EXPECT_EQ(b.kind, "agent");
  EXPECT_EQ(b.system, "s");
  EXPECT_TRUE(b.shared_system);
  EXPECT_EQ(b.arrival_seconds, 2.0);
  EXPECT_EQ(b.turns[0].think_seconds, 0.5);
}

TEST(WorkloadJsonl, ErrorsNameTheLineAndTheField) {
  const std::string good = R"({"id": "ok", "turns": [{"user": "u", "reply_tokens": 4}]})";
  const struct {
    std::string text;
    std::vector<std::string> expect;  // substrings of the message
  } kCases[] = {
      {"", {"empty"}},
      {"\n  \n", {"empty"}},
      {good + "\n{\"id\": \"a\", \"turns\": [", {"line 2", "invalid JSON"}},
      {good + "\n\n[1, 2]", {"line 3", "object"}},
      {R"({"turns": [{"user": "u", "reply_tokens": 4}]})", {"line 1", "\"id\"", "missing"}},
      {R"({"id": 7, "turns": [{"user": "u", "reply_tokens": 4}]})", {"line 1", "\"id\""}},
      {good + "\n" + good, {"line 2", "\"id\"", "\"ok\"", "first on line 1"}},
      {R"({"id": "a"})", {"line 1", "\"turns\"", "missing"}},
      {R"({"id": "a", "turns": []})", {"line 1", "\"turns\"", "non-empty array"}},
      {R"({"id": "a", "turns": [{"user": "u", "reply_tokens": 4},)"
       R"( {"user": "v", "reply_tokens": 0}]})",
       {"line 1", "\"turns\"[1].\"reply_tokens\"", "integer in [1, 1000000]"}},
      {R"({"id": "a", "turns": [{"user": "u", "reply_tokens": 1000001}]})",
       {"\"turns\"[0].\"reply_tokens\""}},
      {R"({"id": "a", "turns": [{"user": "u", "reply_tokens": 2.5}]})",
       {"\"turns\"[0].\"reply_tokens\""}},
      {R"({"id": "a", "turns": [{"user": "u", "reply_tokens": "4"}]})",
       {"\"turns\"[0].\"reply_tokens\""}},
      {R"({"id": "a", "turns": [{"user": "u"}]})", {"\"turns\"[0].\"reply_tokens\"", "missing"}},
      {good + "\n" + R"({"id": "a", "turns": [{"user": 5, "reply_tokens": 4}]})",
       {"line 2", "\"turns\"[0].\"user\"", "must be a string"}},
      {R"({"id": "a", "turns": [{"reply_tokens": 4}]})", {"\"turns\"[0].\"user\"", "missing"}},
      {R"({"id": "a", "turns": ["u"]})", {"\"turns\"[0]", "object"}},
      {R"({"id": "a", "turns": [{"user": "u", "reply_tokens": 4, "think": -1}]})",
       {"\"turns\"[0].\"think\""}},
      {R"({"id": "a", "kind": "batch", "turns": [{"user": "u", "reply_tokens": 4}]})",
       {"line 1", "\"kind\""}},
      {R"({"id": "a", "system": 1, "turns": [{"user": "u", "reply_tokens": 4}]})", {"\"system\""}},
      {R"({"id": "a", "shared_system": 1, "turns": [{"user": "u", "reply_tokens": 4}]})",
       {"\"shared_system\""}},
      {R"({"id": "a", "arrival": "soon", "turns": [{"user": "u", "reply_tokens": 4}]})",
       {"\"arrival\""}},
  };
  for (const auto& c : kCases) {
    absl::StatusOr<Workload> w = WorkloadFromJsonl(c.text, "bad");
    ASSERT_FALSE(w.ok()) << c.text;
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    for (const std::string& s : c.expect) {
      EXPECT_THAT(std::string(w.status().message()), HasSubstr(s)) << c.text;
    }
  }
  // A file's errors also name the file.
  const std::string path = testing::MakeTempDir() + "/bad.jsonl";
  std::ofstream(path) << good << "\n{\"id\": \"a\", \"turns\": []}\n";
  absl::StatusOr<Workload> w = ReadWorkloadFile(path);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr(path + ": line 2"));
}

// ---- statistics ----

TEST(WorkloadStats, CountsTokensTurnsAndContexts) {
  const Env& env = TestEnv();
  Workload w;
  WorkloadConversation a;
  a.id = "a";
  a.system = "You are terse.";
  a.shared_system = true;
  a.turns = {{"Hello there, how are you?", 10, 0}, {"Tell me more.", 30, 4}};
  WorkloadConversation b;
  b.id = "b";
  b.turns = {{"One question only.", 5, 0}, {"two", 7, 1}, {"three things", 9, 3}};
  w.conversations = {a, b};

  const WorkloadStats st = ComputeWorkloadStats(w, *env.tokenizer);
  const int64_t ctx_a =
      env.Count(a.system) + env.Count(a.turns[0].user) + env.Count(a.turns[1].user) + 10 + 30;
  const int64_t ctx_b = env.Count(b.turns[0].user) + env.Count(b.turns[1].user) +
                        env.Count(b.turns[2].user) + 5 + 7 + 9;
  const double user = env.Count(a.turns[0].user) + env.Count(a.turns[1].user) +
                      env.Count(b.turns[0].user) + env.Count(b.turns[1].user) +
                      env.Count(b.turns[2].user);
  EXPECT_EQ(st.conversations, 2);
  EXPECT_EQ(st.turns, 5);
  EXPECT_DOUBLE_EQ(st.mean_turns, 2.5);
  EXPECT_DOUBLE_EQ(st.mean_user_tokens, user / 5);
  EXPECT_DOUBLE_EQ(st.mean_reply_tokens, (10 + 30 + 5 + 7 + 9) / 5.0);
  EXPECT_DOUBLE_EQ(st.mean_think_seconds, (4 + 1 + 3) / 3.0);  // pauses only
  EXPECT_DOUBLE_EQ(st.mean_final_context, (ctx_a + ctx_b) / 2.0);
  EXPECT_EQ(st.max_final_context, std::max(ctx_a, ctx_b));
  EXPECT_DOUBLE_EQ(st.shared_system_fraction, 0.5);
  EXPECT_GT(env.Count(a.system), 0);

  const WorkloadStats empty = ComputeWorkloadStats(Workload{}, *env.tokenizer);
  EXPECT_EQ(empty.conversations, 0);
  EXPECT_EQ(empty.mean_turns, 0.0);
}

}  // namespace
}  // namespace mnemo::bench
