#include "engine/sampling.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <set>
#include <string>
#include <vector>

namespace mnemo::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Independent of the engine's code: splitmix64 and xoshiro256** written from the published
// descriptions, used to cross-check Rng (and cross-checked in turn against constants computed
// with a Python big-integer implementation).
uint64_t RefSplitMix(uint64_t& x) {
  x += 0x9E3779B97F4A7C15ULL;
  uint64_t z = x;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

struct RefXoshiro {
  uint64_t s[4];
  explicit RefXoshiro(uint64_t seed) {
    for (uint64_t& w : s) w = RefSplitMix(seed);
  }
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t Next() {
    const uint64_t out = Rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = Rotl(s[3], 45);
    return out;
  }
};

std::vector<double> LogSoftmax(const std::vector<double>& logits) {
  double m = -std::numeric_limits<double>::infinity();
  for (double v : logits) m = std::max(m, v);
  double sum = 0.0;
  for (double v : logits) sum += std::exp(v - m);
  std::vector<double> out;
  for (double v : logits) out.push_back(v - m - std::log(sum));
  return out;
}

std::vector<float> RandomLogits(int n, uint64_t seed, float scale) {
  Rng rng(seed);
  std::vector<float> out(static_cast<size_t>(n));
  for (float& v : out) v = static_cast<float>((rng.NextUniform() * 2.0 - 1.0) * scale);
  return out;
}

std::set<TokenId> CandidateIds(Sampler& sampler, const std::vector<float>& logits) {
  std::set<TokenId> ids;
  for (const TokenLogprob& c : sampler.Candidates(logits, {}, 0)) ids.insert(c.id);
  return ids;
}

// ---------------------------------------------------------------------------------------------
// Rng

TEST(RngTest, SeedsThroughSplitMix64) {
  // splitmix64's published first outputs for seed 0.
  EXPECT_THAT(Rng(0).state(), ElementsAre(0xe220a8397b1dcdafULL, 0x6e789e6aa1b965f4ULL,
                                          0x06c45d188009454fULL, 0xf88bb8a8724c81ecULL));
  EXPECT_THAT(Rng(42).state(), ElementsAre(0xbdd732262feb6e95ULL, 0x28efe333b266f103ULL,
                                           0x47526757130f9f52ULL, 0x581ce1ff0e4ae394ULL));
}

TEST(RngTest, KnownFirstOutputs) {
  Rng r0(0);
  EXPECT_EQ(r0.NextU64(), 0x99ec5f36cb75f2b4ULL);
  EXPECT_EQ(r0.NextU64(), 0xbf6e1f784956452aULL);
  EXPECT_EQ(r0.NextU64(), 0x1a5f849d4933e6e0ULL);
  Rng r42(42);
  EXPECT_EQ(r42.NextU64(), 0x15780b2e0c2ec716ULL);
  EXPECT_EQ(r42.NextU64(), 0x6104d9866d113a7eULL);
  EXPECT_EQ(r42.NextU64(), 0xae17533239e499a1ULL);
}

TEST(RngTest, MatchesIndependentImplementation) {
  for (uint64_t seed : {0ULL, 1ULL, 42ULL, 0xFFFFFFFFFFFFFFFFULL}) {
    Rng rng(seed);
    RefXoshiro ref(seed);
    for (int i = 0; i < 1000; ++i) ASSERT_EQ(rng.NextU64(), ref.Next()) << seed << " " << i;
  }
}

TEST(RngTest, UniformHas53BitsInUnitInterval) {
  Rng rng(42);
  EXPECT_DOUBLE_EQ(rng.NextUniform(), static_cast<double>(0x15780b2e0c2ec716ULL >> 11) / 0x1p53);
  double sum = 0.0;
  for (int i = 0; i < 100000; ++i) {
    const double u = rng.NextUniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    ASSERT_EQ(u, std::ldexp(std::floor(std::ldexp(u, 53)), -53));  // a multiple of 2^-53
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.005);
}

TEST(RngTest, StateRoundTripContinuesTheSequence) {
  Rng a(7);
  for (int i = 0; i < 13; ++i) a.NextU64();
  absl::StatusOr<Rng> b = Rng::FromState(a.state());
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*b, a);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(a.NextU64(), b->NextU64());
}

TEST(RngTest, RejectsAllZeroState) {
  absl::StatusOr<Rng> r = Rng::FromState({0, 0, 0, 0});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Rng::FromState({0, 0, 0, 1}).ok());
}

// ---------------------------------------------------------------------------------------------
// Validate

TEST(SamplingParamsTest, DefaultsAreValid) { EXPECT_TRUE(SamplingParams{}.Validate(10).ok()); }

TEST(SamplingParamsTest, ErrorsNameTheField) {
  struct Case {
    std::string field;
    void (*mutate)(SamplingParams&);
  };
  const Case cases[] = {
      {"temperature", [](SamplingParams& p) { p.temperature = -0.5f; }},
      {"temperature", [](SamplingParams& p) { p.temperature = kNaN; }},
      {"temperature", [](SamplingParams& p) { p.temperature = kInf; }},
      {"top_k", [](SamplingParams& p) { p.top_k = -1; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 0.0f; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 1.5f; }},
      {"top_p", [](SamplingParams& p) { p.top_p = kNaN; }},
      {"min_p", [](SamplingParams& p) { p.min_p = -0.1f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = 1.01f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = kNaN; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0.0f; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = kNaN; }},
      {"frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = kNaN; }},
      {"presence_penalty", [](SamplingParams& p) { p.presence_penalty = -kInf; }},
      {"penalty_last_n", [](SamplingParams& p) { p.penalty_last_n = -2; }},
      {"top_logprobs", [](SamplingParams& p) { p.top_logprobs = 21; }},
      {"top_logprobs", [](SamplingParams& p) { p.top_logprobs = -1; }},
      {"logit_bias",
       [](SamplingParams& p) {
         p.logit_bias = {{10, 1.0f}};
       }},
      {"logit_bias",
       [](SamplingParams& p) {
         p.logit_bias = {{-1, 1.0f}};
       }},
      {"logit_bias",
       [](SamplingParams& p) {
         p.logit_bias = {{3, kNaN}};
       }},
      {"logit_bias",
       [](SamplingParams& p) {
         p.logit_bias = {{3, kInf}};
       }},
  };
  for (const Case& c : cases) {
    SamplingParams p;
    c.mutate(p);
    const absl::Status status = p.Validate(10);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.field));
  }
  SamplingParams ok;
  ok.temperature = 0.0f;
  ok.top_p = 1.0f;
  ok.min_p = 1.0f;
  ok.top_logprobs = 20;
  ok.penalty_last_n = -1;
  ok.logit_bias = {{0, -kInf}, {9, 100.0f}};
  EXPECT_TRUE(ok.Validate(10).ok());
  EXPECT_THAT(std::string(SamplingParams{}.Validate(0).message()), HasSubstr("vocab_size"));
}

// ---------------------------------------------------------------------------------------------
// Greedy

SamplingParams Greedy() {
  SamplingParams p;
  p.temperature = 0.0f;
  return p;
}

TEST(SamplerTest, GreedyIsArgmaxWithTiesToLowestId) {
  Sampler sampler(Greedy(), 6);
  const std::vector<float> logits = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f, 3.0f};
  const Rng before = sampler.rng();
  EXPECT_EQ(sampler.Sample(logits, {}, 0).id, 1);
  EXPECT_EQ(sampler.rng(), before);  // greedy draws nothing
  Sampler big(Greedy(), 1000);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const std::vector<float> r = RandomLogits(1000, seed, 5.0f);
    const auto it = std::max_element(r.begin(), r.end());  // the first maximum
    EXPECT_EQ(big.Sample(r, {}, 0).id, it - r.begin());
  }
}

TEST(SamplerTest, NanLogitsCountAsMinusInfinity) {
  Sampler sampler(Greedy(), 3);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(sampler.Sample(std::vector<float>{nan, -5.0f, nan}, {}, 0).id, 1);
  SamplingParams p;
  p.seed = 3;
  Sampler random(p, 3);
  for (int i = 0; i < 200; ++i) {
    ASSERT_EQ(random.Sample(std::vector<float>{nan, -5.0f, nan}, {}, 0).id, 1);
  }
}

TEST(SamplerTest, TemperatureToZeroAgreesWithGreedy) {
  Sampler greedy(Greedy(), 500);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const std::vector<float> logits = RandomLogits(500, 100 + seed, 3.0f);
    std::vector<float> sorted = logits;
    std::sort(sorted.rbegin(), sorted.rend());
    // At T = gap / 50 the runner-up has probability below e^-50 relative to the best.
    SamplingParams p;
    p.temperature = (sorted[0] - sorted[1]) / 50.0f;
    p.seed = seed;
    Sampler cold(p, 500);
    const TokenId want = greedy.Sample(logits, {}, 0).id;
    for (int i = 0; i < 20; ++i) ASSERT_EQ(cold.Sample(logits, {}, 0).id, want) << seed;
  }
}

TEST(SamplerTest, TopKOneIsGreedy) {
  Sampler greedy(Greedy(), 300);
  SamplingParams p;
  p.top_k = 1;
  p.temperature = 2.0f;
  Sampler top1(p, 300);
  for (uint64_t seed = 0; seed < 50; ++seed) {
    std::vector<float> logits = RandomLogits(300, seed, 1.0f);
    // Quantize so that ties at the maximum are common.
    for (float& v : logits) v = std::round(v * 4.0f) / 4.0f;
    ASSERT_EQ(top1.Sample(logits, {}, 0).id, greedy.Sample(logits, {}, 0).id) << seed;
  }
}

// ---------------------------------------------------------------------------------------------
// Truncation: the kept sets on hand-built logits

// Probabilities 0.05, 0.5, 0.1, 0.25, 0.1 (ids in no particular order).
const std::vector<float> kHandLogits = {std::log(0.05f), std::log(0.5f), std::log(0.1f),
                                        std::log(0.25f), std::log(0.1f)};

std::set<TokenId> Kept(SamplingParams p) {
  Sampler sampler(p, static_cast<int>(kHandLogits.size()));
  return CandidateIds(sampler, kHandLogits);
}

TEST(SamplerTest, TopKKeepsTheKMostLikelyTiesByLowerId) {
  SamplingParams p;
  p.top_k = 3;
  EXPECT_EQ(Kept(p), (std::set<TokenId>{1, 3, 2}));  // 2 and 4 tie: the lower id wins
  p.top_k = 2;
  EXPECT_EQ(Kept(p), (std::set<TokenId>{1, 3}));
  p.top_k = 5;
  EXPECT_EQ(Kept(p).size(), 5u);
  p.top_k = 100;
  EXPECT_EQ(Kept(p).size(), 5u);
}

TEST(SamplerTest, TopPKeepsTheShortestPrefixReachingP) {
  SamplingParams p;
  p.top_p = 0.4f;
  EXPECT_EQ(Kept(p), (std::set<TokenId>{1}));
  p.top_p = 0.6f;
  EXPECT_EQ(Kept(p), (std::set<TokenId>{1, 3}));
  p.top_p = 0.8f;
  EXPECT_EQ(Kept(p), (std::set<TokenId>{1, 3, 2}));
  p.top_p = 0.9f;
  EXPECT_EQ(Kept(p), (std::set<TokenId>{1, 3, 2, 4}));
  p.top_p = 0.99f;
  EXPECT_EQ(Kept(p).size(), 5u);
  // After top-k = 2 the mass is renormalised: 0.5/0.75 = 0.667 < 0.7.
  p.top_k = 2;
  p.top_p = 0.6f;
  EXPECT_EQ(Kept(p), (std::set<TokenId>{1}));
  p.top_p = 0.7f;
  EXPECT_EQ(Kept(p), (std::set<TokenId>{1, 3}));
}

TEST(SamplerTest, MinPKeepsThoseAboveAFractionOfTheMax) {
  SamplingParams p;
  p.min_p = 0.15f;  // p >= 0.075
  EXPECT_EQ(Kept(p), (std::set<TokenId>{1, 3, 2, 4}));
  p.min_p = 0.3f;  // p >= 0.15
  EXPECT_EQ(Kept(p), (std::set<TokenId>{1, 3}));
  p.min_p = 0.6f;
  EXPECT_EQ(Kept(p), (std::set<TokenId>{1}));
  p.min_p = 1.0f;
  EXPECT_EQ(Kept(p), (std::set<TokenId>{1}));
  // Temperature sharpens first: at T = 0.5 the ratios square (0.25, 0.04).
  p.min_p = 0.2f;
  p.temperature = 0.5f;
  EXPECT_EQ(Kept(p), (std::set<TokenId>{1, 3}));
  // After top-p.
  p.temperature = 1.0f;
  p.min_p = 0.15f;
  p.top_p = 0.6f;
  EXPECT_EQ(Kept(p), (std::set<TokenId>{1, 3}));
}

TEST(SamplerTest, CandidatesAreInDrawOrderAndRenormalised) {
  SamplingParams p;
  p.top_p = 0.9f;
  Sampler sampler(p, 5);
  const std::vector<TokenLogprob> c = sampler.Candidates(kHandLogits, {}, 0);
  ASSERT_EQ(c.size(), 4u);
  EXPECT_EQ(c[0].id, 1);
  EXPECT_EQ(c[1].id, 3);
  EXPECT_EQ(c[2].id, 2);
  EXPECT_EQ(c[3].id, 4);
  EXPECT_NEAR(std::exp(c[0].logprob), 0.5 / 0.95, 1e-6);
  EXPECT_NEAR(std::exp(c[3].logprob), 0.1 / 0.95, 1e-6);
}

TEST(SamplerTest, DrawsStayInsideTheKeptSet) {
  SamplingParams p;
  p.top_p = 0.8f;
  p.seed = 11;
  Sampler sampler(p, 5);
  std::set<TokenId> seen;
  for (int i = 0; i < 5000; ++i) seen.insert(sampler.Sample(kHandLogits, {}, 0).id);
  EXPECT_EQ(seen, (std::set<TokenId>{1, 3, 2}));
}

// The reference: full sort in draw order, double cumulative sums.
std::set<TokenId> RefTopP(const std::vector<float>& logits, double top_p, bool* ambiguous) {
  std::vector<TokenId> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](TokenId a, TokenId b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  std::vector<double> lsm = LogSoftmax(std::vector<double>(logits.begin(), logits.end()));
  std::set<TokenId> kept;
  double cum = 0.0;
  *ambiguous = false;
  for (TokenId id : order) {
    kept.insert(id);
    cum += std::exp(lsm[id]);
    if (std::abs(cum - top_p) < 1e-5) *ambiguous = true;
    if (cum >= top_p) break;
  }
  return kept;
}

TEST(SamplerTest, TopPOnLargeFlatVocabularyMatchesReference) {
  // Flat distributions make the nucleus thousands of tokens long, so the head is sorted in
  // several rounds.
  for (float p : {0.3f, 0.9f, 0.999f}) {
    for (uint64_t seed = 0; seed < 3; ++seed) {
      const std::vector<float> logits = RandomLogits(20000, seed, 1.0f);
      bool ambiguous = false;
      const std::set<TokenId> want = RefTopP(logits, p, &ambiguous);
      if (ambiguous) continue;
      SamplingParams params;
      params.top_p = p;
      Sampler sampler(params, 20000);
      EXPECT_EQ(CandidateIds(sampler, logits), want) << p << " " << seed;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The distribution of draws

// Pearson's chi-square of `counts` against the probabilities softmax(logits / t).
double ChiSquare(const std::vector<int>& counts, const std::vector<float>& logits, double t) {
  std::vector<double> scaled;
  for (float v : logits) scaled.push_back(v / t);
  const std::vector<double> lsm = LogSoftmax(scaled);
  double n = 0;
  for (int c : counts) n += c;
  double chi2 = 0.0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double e = n * std::exp(lsm[i]);
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
  }
  return chi2;
}

TEST(SamplerTest, EmpiricalDistributionMatchesSoftmaxOverTemperature) {
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.25f, -0.5f};
  for (float t : {0.5f, 1.0f, 2.0f}) {
    SamplingParams p;
    p.temperature = t;
    p.seed = 2024;
    Sampler sampler(p, 8);
    std::vector<int> counts(8, 0);
    for (int i = 0; i < 20000; ++i) ++counts[static_cast<size_t>(sampler.Sample(logits, {}, 0).id)];
    // 7 degrees of freedom: P(chi2 > 24.32) = 0.001 for a correct sampler.
    EXPECT_LT(ChiSquare(counts, logits, t), 24.32) << "T=" << t;
    // A sampler that ignored the temperature would be far off.
    if (t != 1.0f) {
      EXPECT_GT(ChiSquare(counts, logits, 1.0), 200.0) << "T=" << t;
    }
  }
}

TEST(SamplerTest, EmpiricalDistributionAfterTopKIsRenormalised) {
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.25f, -0.5f};
  SamplingParams p;
  p.top_k = 4;  // keeps 2, 5, 1, 3
  p.seed = 99;
  Sampler sampler(p, 8);
  std::vector<int> counts(8, 0);
  for (int i = 0; i < 20000; ++i) ++counts[static_cast<size_t>(sampler.Sample(logits, {}, 0).id)];
  EXPECT_EQ(counts[0] + counts[4] + counts[6] + counts[7], 0);
  const std::vector<int> kept = {counts[2], counts[5], counts[1], counts[3]};
  EXPECT_LT(ChiSquare(kept, {2.0f, 1.5f, 1.0f, 0.5f}, 1.0), 16.27);  // 3 dof, p = 0.001
}

// The draw is the inverse CDF over the draw order with one NextUniform(); a reference
// written independently (double precision, full sort) reproduces the tokens over a
// 151936-token vocabulary, with temperature, min-p, top-p and top-k.
struct DrawCase {
  float temperature;
  float min_p;
  float top_p;
  int top_k;
};

TEST(SamplerTest, DrawIsInverseCdfInDrawOrder) {
  const int vocab = 151936;
  const std::vector<float> logits = RandomLogits(vocab, 5, 4.0f);
  std::vector<TokenId> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](TokenId a, TokenId b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  const double m = logits[order[0]];
  for (const DrawCase& c : {DrawCase{1.0f, 0.0f, 1.0f, 0}, DrawCase{0.7f, 0.0f, 1.0f, 0},
                            DrawCase{1.3f, 0.001f, 1.0f, 0}, DrawCase{1.0f, 0.0f, 0.9f, 0},
                            DrawCase{0.9f, 0.01f, 0.95f, 2000}}) {
    // The kept prefix of `order` and its weights.
    std::vector<double> w;
    double total = 0.0;
    for (TokenId id : order) {
      const double weight = std::exp((logits[id] - m) / c.temperature);
      if (weight < c.min_p) break;
      if (c.top_k > 0 && static_cast<int>(w.size()) == c.top_k) break;
      w.push_back(weight);
      total += weight;
    }
    if (c.top_p < 1.0f) {
      double cum = 0.0;
      for (size_t i = 0; i < w.size(); ++i) {
        cum += w[i];
        if (cum >= c.top_p * total) {
          w.resize(i + 1);
          break;
        }
      }
      total = cum;
    }
    SamplingParams p;
    p.temperature = c.temperature;
    p.min_p = c.min_p;
    p.top_p = c.top_p;
    p.top_k = c.top_k;
    p.seed = 77;
    Sampler sampler(p, vocab);
    Rng ref(77);
    int mismatches = 0;
    std::set<TokenId> seen;
    for (int i = 0; i < 50; ++i) {
      const double target = ref.NextUniform() * total;
      double cum = 0.0;
      TokenId want = order[w.size() - 1];
      for (size_t j = 0; j < w.size(); ++j) {
        cum += w[j];
        if (cum > target) {
          want = order[j];
          break;
        }
      }
      const TokenId got = sampler.Sample(logits, {}, 0).id;
      mismatches += got != want;
      seen.insert(got);
    }
    // float vs double weights may move a draw that lands within ~1e-6 of a boundary.
    EXPECT_LE(mismatches, 1) << c.temperature << " " << c.min_p << " " << c.top_p;
    EXPECT_GT(seen.size(), 10u);
    EXPECT_EQ(sampler.rng(), ref);  // exactly one uniform per token
  }
}

TEST(SamplerTest, TopKOnLargeVocabularyMatchesReference) {
  const int vocab = 30000;
  std::vector<float> logits = RandomLogits(vocab, 12, 8.0f);
  for (int i = 0; i < vocab; i += 7) logits[i] = std::round(logits[i]);  // ties
  std::vector<TokenId> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](TokenId a, TokenId b) { return logits[a] > logits[b]; });
  for (int k : {1, 2, 40, 1000, 25000, vocab - 1}) {
    SamplingParams p;
    p.top_k = k;
    p.temperature = 0.5f;
    Sampler sampler(p, vocab);
    const std::vector<TokenLogprob> c = sampler.Candidates(logits, {}, 0);
    ASSERT_EQ(c.size(), static_cast<size_t>(k));
    for (int i = 0; i < k; ++i) ASSERT_EQ(c[i].id, order[i]) << k << " " << i;
  }
}

TEST(SamplerTest, AllEqualLogitsKeepTheLowestIds) {
  const std::vector<float> logits(1000, 0.5f);
  SamplingParams p;
  p.top_k = 10;
  Sampler sampler(p, 1000);
  EXPECT_EQ(CandidateIds(sampler, logits), (std::set<TokenId>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  p.top_k = 0;
  p.top_p = 0.0105f;  // 11 tokens of 0.001 each
  Sampler top_p(p, 1000);
  EXPECT_EQ(CandidateIds(top_p, logits).size(), 11u);
  EXPECT_EQ(*CandidateIds(top_p, logits).rbegin(), 10);
}

TEST(SamplerTest, MinPOnLargeVocabularyMatchesReference) {
  const int vocab = 50000;
  const std::vector<float> logits = RandomLogits(vocab, 3, 10.0f);
  const float m = *std::max_element(logits.begin(), logits.end());
  for (float min_p : {0.5f, 0.01f, 1e-5f}) {
    std::set<TokenId> want;
    for (int i = 0; i < vocab; ++i) {
      const double ratio = std::exp((logits[i] - m) / 1.5);
      if (std::abs(ratio - min_p) < 1e-5 * min_p) GTEST_SKIP() << "ambiguous";
      if (ratio >= min_p) want.insert(i);
    }
    SamplingParams p;
    p.min_p = min_p;
    p.temperature = 1.5f;
    Sampler sampler(p, vocab);
    EXPECT_EQ(CandidateIds(sampler, logits), want) << min_p;
  }
}

// Random configurations: the drawn token is always one that Candidates() keeps (the draw
// path gathers smaller heads than Candidates does), and it is the inverse CDF over that list.
TEST(SamplerTest, RandomConfigurationsDrawFromTheKeptSet) {
  Rng rng(2718);
  int mismatches = 0;
  const int kCases = 300;
  for (int c = 0; c < kCases; ++c) {
    const int vocab = 1 + static_cast<int>(rng.NextU64() % 3000);
    std::vector<float> logits =
        RandomLogits(vocab, rng.NextU64(), 1.0f + 10.0f * static_cast<float>(rng.NextUniform()));
    for (float& v : logits) {
      const double r = rng.NextUniform();
      if (r < 0.05) v = -kInf;
      if (r > 0.99) v = kNaN;
    }
    SamplingParams p;
    p.temperature = 0.2f + 2.0f * static_cast<float>(rng.NextUniform());
    if (rng.NextUniform() < 0.5) p.top_k = static_cast<int>(rng.NextU64() % (vocab + 1));
    if (rng.NextUniform() < 0.5) p.top_p = 0.05f + 0.95f * static_cast<float>(rng.NextUniform());
    if (rng.NextUniform() < 0.5) p.min_p = static_cast<float>(std::pow(rng.NextUniform(), 4));
    p.seed = rng.NextU64();
    Sampler sampler(p, vocab);
    const std::vector<TokenLogprob> kept = sampler.Candidates(logits, {}, 0);
    Rng draw = sampler.rng();
    const TokenId got = sampler.Sample(logits, {}, 0).id;
    if (kept.empty()) {  // everything banned
      EXPECT_EQ(got, 0);
      continue;
    }
    const double u = draw.NextUniform();
    double cum = 0.0;
    TokenId want = kept.back().id;
    for (const TokenLogprob& k : kept) {
      cum += std::exp(static_cast<double>(k.logprob));
      if (cum > u) {
        want = k.id;
        break;
      }
    }
    bool in_kept = false;
    for (const TokenLogprob& k : kept) in_kept |= k.id == got;
    ASSERT_TRUE(in_kept) << "case " << c << " token " << got;
    mismatches += got != want;
  }
  EXPECT_LE(mismatches, kCases / 100);  // rounding at a boundary only
}

TEST(SamplerTest, SameSeedSameTokens) {
  const std::vector<float> logits = RandomLogits(1000, 1, 3.0f);
  SamplingParams p;
  p.top_k = 50;
  p.top_p = 0.9f;
  p.seed = 5;
  Sampler a(p, 1000), b(p, 1000);
  for (int i = 0; i < 200; ++i) ASSERT_EQ(a.Sample(logits, {}, 0).id, b.Sample(logits, {}, 0).id);
}

TEST(SamplerTest, RngSaveRestoreReproducesTheContinuation) {
  const std::vector<float> logits = RandomLogits(2000, 2, 2.0f);
  SamplingParams p;
  p.seed = 31337;
  p.min_p = 0.05f;
  Sampler a(p, 2000);
  for (int i = 0; i < 10; ++i) a.Sample(logits, {}, 0);
  const std::array<uint64_t, 4> saved = a.rng().state();
  std::vector<TokenId> first;
  for (int i = 0; i < 30; ++i) first.push_back(a.Sample(logits, {}, 0).id);

  p.seed = 1;  // a different seed: the restored state decides
  Sampler b(p, 2000);
  absl::StatusOr<Rng> rng = Rng::FromState(saved);
  ASSERT_TRUE(rng.ok());
  b.set_rng(*rng);
  std::vector<TokenId> second;
  for (int i = 0; i < 30; ++i) second.push_back(b.Sample(logits, {}, 0).id);
  EXPECT_EQ(first, second);
  EXPECT_GT(std::set<TokenId>(first.begin(), first.end()).size(), 5u);  // really random
}

// ---------------------------------------------------------------------------------------------
// Bias and penalties: the logits they change, seen through the logprobs

std::vector<double> ModelLogprobs(const SamplingParams& base, const std::vector<float>& logits,
                                  const std::vector<TokenId>& history, int64_t n_prompt) {
  SamplingParams p = base;
  p.temperature = 0.0f;
  p.top_logprobs = static_cast<int>(logits.size());
  Sampler sampler(p, static_cast<int>(logits.size()));
  const SampleResult r = sampler.Sample(logits, history, n_prompt);
  std::vector<double> out(logits.size());
  for (const TokenLogprob& e : r.top) out[static_cast<size_t>(e.id)] = e.logprob;
  return out;
}

void ExpectLogprobsOf(const std::vector<double>& got, const std::vector<double>& want_logits) {
  const std::vector<double> want = LogSoftmax(want_logits);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << "token " << i;
}

TEST(SamplerTest, PenaltiesChangeExactlyTheExpectedLogits) {
  const std::vector<float> logits = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 1.0f};
  const std::vector<TokenId> history = {0, 1, 5, /*generated:*/ 3, 3, 1};
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  // Repetition over {0, 1, 5, 3}: positive logits halve, negative double. Then generated
  // counts {3: 2, 1: 1}: minus count * 0.5 + 0.25.
  ExpectLogprobsOf(ModelLogprobs(p, logits, history, 3),
                   {1.0, -2.0 - 0.75, 0.5, 1.5 - 1.25, -2.0, 0.5});
  // The window is the last 2 tokens (3, 1); token 0 and 5 are outside it.
  p.penalty_last_n = 2;
  ExpectLogprobsOf(ModelLogprobs(p, logits, history, 3),
                   {2.0, -2.0 - 0.75, 0.5, 1.5 - 1.25, -2.0, 1.0});
  // penalty_last_n = 0 turns repetition off; frequency/presence still apply.
  p.penalty_last_n = 0;
  ExpectLogprobsOf(ModelLogprobs(p, logits, history, 3),
                   {2.0, -1.0 - 0.75, 0.5, 3.0 - 1.25, -2.0, 1.0});
  // Frequency/presence see only generated tokens: none when everything is prompt.
  ExpectLogprobsOf(ModelLogprobs(p, logits, history, 6), {2.0, -1.0, 0.5, 3.0, -2.0, 1.0});
  // -1: the whole history. Out-of-range ids in the history are ignored.
  SamplingParams rep;
  rep.repetition_penalty = 1.5f;
  rep.penalty_last_n = -1;
  ExpectLogprobsOf(ModelLogprobs(rep, logits, {4, 99, -3, 0, 4}, 5),
                   {2.0 / 1.5, -1.0, 0.5, 3.0, -3.0, 1.0});
}

TEST(SamplerTest, LogitBiasAddsAndMinusInfinityBans) {
  const std::vector<float> logits = {1.0f, 4.0f, 2.0f, 0.0f};
  SamplingParams p;
  p.logit_bias = {{0, 0.5f}, {1, -kInf}, {3, -1.0f}};
  std::vector<double> got = ModelLogprobs(p, logits, {}, 0);
  EXPECT_EQ(got[1], -std::numeric_limits<double>::infinity());
  const std::vector<double> want = LogSoftmax({1.5, -1e300, 2.0, -1.0});
  EXPECT_NEAR(got[0], want[0], 1e-5);
  EXPECT_NEAR(got[2], want[2], 1e-5);
  EXPECT_NEAR(got[3], want[3], 1e-5);

  SamplingParams g = p;
  g.temperature = 0.0f;
  Sampler greedy(g, 4);
  EXPECT_EQ(greedy.Sample(logits, {}, 0).id, 2);
  p.seed = 8;
  p.temperature = 5.0f;
  Sampler hot(p, 4);
  std::set<TokenId> seen;
  for (int i = 0; i < 3000; ++i) seen.insert(hot.Sample(logits, {}, 0).id);
  EXPECT_EQ(seen, (std::set<TokenId>{0, 2, 3}));
}

TEST(SamplerTest, EveryTokenBannedGivesLowestIdWithMinusInfinity) {
  SamplingParams p;
  p.logit_bias = {{0, -kInf}, {1, -kInf}};
  Sampler sampler(p, 2);
  const SampleResult r = sampler.Sample(std::vector<float>{1.0f, 2.0f}, {}, 0);
  EXPECT_EQ(r.id, 0);
  EXPECT_EQ(r.logprob, -kInf);
}

// ---------------------------------------------------------------------------------------------
// Logprobs

TEST(SamplerTest, LogprobsAreLogSoftmaxBeforeTemperature) {
  std::vector<float> logits = RandomLogits(5000, 9, 6.0f);
  logits[17] = logits[4000] = 7.0f;  // a tie at the top: the lower id is listed first
  const std::vector<double> want = LogSoftmax(std::vector<double>(logits.begin(), logits.end()));
  for (float t : {0.0f, 0.7f, 1.3f}) {
    SamplingParams p;
    p.temperature = t;
    p.top_k = 40;
    p.top_logprobs = 20;
    p.seed = 4;
    Sampler sampler(p, 5000);
    const SampleResult r = sampler.Sample(logits, {}, 0);
    EXPECT_NEAR(r.logprob, want[static_cast<size_t>(r.id)], 1e-4);
    ASSERT_EQ(r.top.size(), 20u);
    EXPECT_EQ(r.top[0].id, 17);
    EXPECT_EQ(r.top[1].id, 4000);
    std::vector<TokenId> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](TokenId a, TokenId b) { return logits[a] > logits[b]; });
    for (size_t i = 0; i < 20; ++i) {
      EXPECT_EQ(r.top[i].id, order[i]) << i;
      EXPECT_NEAR(r.top[i].logprob, want[static_cast<size_t>(order[i])], 1e-4) << i;
    }
  }
  SamplingParams none;
  Sampler sampler(none, 5000);
  EXPECT_TRUE(sampler.Sample(logits, {}, 0).top.empty());
}

// The free LogSumExp over any length (tails that are not a multiple of 4 included) against a
// float64 reference, with -inf entries contributing nothing.
TEST(SamplingTest, LogSumExpMatchesDoubleAtEveryLength) {
  for (size_t n : {1u, 3u, 4u, 5u, 63u, 64u, 65u, 1001u}) {
    std::vector<float> x(n);
    uint32_t state = 12345u + static_cast<uint32_t>(n);
    for (float& v : x) {
      state = state * 1664525u + 1013904223u;
      v = static_cast<float>(state >> 8) / static_cast<float>(1 << 24) * 40.0f - 30.0f;
    }
    if (n > 2) x[1] = -std::numeric_limits<float>::infinity();
    const float m = *std::max_element(x.begin(), x.end());
    double sum = 0.0;
    for (float v : x) sum += std::exp(static_cast<double>(v) - m);
    EXPECT_NEAR(LogSumExp(x, m), m + std::log(sum), 1e-6 * (1.0 + std::fabs(m))) << "n " << n;
  }
}

}  // namespace
}  // namespace mnemo::engine
