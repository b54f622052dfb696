// Token sampling: the parameters of a request, a portable PRNG whose state persists with a
// session, and a per-sequence Sampler that turns one row of logits into one token.
//
// The pipeline (llama.cpp order), applied to a private copy of the logits:
//
//   1. logit bias           logit[id] += bias (a bias of -inf bans the token)
//   2. penalties            repetition (over the last penalty_last_n tokens of the history,
//                           prompt included), then frequency/presence (over generated tokens)
//   -- the model's distribution: SampleResult::logprob and ::top are log-softmax of these --
//   3. temperature == 0     greedy: argmax, ties to the lowest id (exactly deterministic, no
//                           RNG draw)
//   4. temperature          logit / T
//   5. top-k                the k most likely
//   6. top-p                the shortest most-likely prefix whose mass (renormalised over what
//                           top-k kept) reaches top_p
//   7. min-p                those with p >= min_p * p_max
//   8. softmax + draw       one NextUniform() u; candidates in order of probability
//                           descending, then id ascending; the first whose cumulative mass
//                           exceeds u * (total mass) is chosen (inverse CDF)
//
// "Order of probability" is logit descending (exact, before any rounding of exp), then id
// ascending; steps 5-7 each keep a prefix of that one order. Weights are exp((logit - max)/T)
// from the sampler's own vectorised exp (about 1 ulp; IEEE float arithmetic only, so the
// same on every platform) with sums in double, so for a seed the tokens depend only on the
// logits and the history, never on threads or the machine.
//
// Cost is O(V) typical: two or three vector passes over the logits (copy, max, weights; one
// more for the log-sum-exp when T != 1 or greedy), then only a head of the distribution
// (the tokens within a fixed probability ratio of the most likely that hold the mass needed)
// is gathered and partially sorted: top-k by selection, top-p and the draw by sorting until
// the cumulative mass is reached. Flat distributions (a 0.95 nucleus of thousands of tokens)
// sort more; see bench/sampling_bench.cc.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/tokenizer.h"

namespace mnemo::engine {

struct SamplingParams {
  float temperature = 1.0f;  // >= 0; 0 = greedy
  int top_k = 0;             // 0 = off; >= vocab size is off too
  float top_p = 1.0f;        // (0, 1]; 1 = off
  float min_p = 0.0f;        // [0, 1]; 0 = off
  // llama.cpp / Hugging Face style, > 0; 1 = off. Each distinct token in the window:
  // logit > 0 ? logit / p : logit * p.
  float repetition_penalty = 1.0f;
  // OpenAI style, over the generated tokens: logit -= count * frequency_penalty +
  // (count > 0) * presence_penalty. 0 = off; finite.
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  // Window of the repetition penalty: the last penalty_last_n tokens of the whole history
  // (prompt + generated). 0 = off, -1 = the whole history.
  int penalty_last_n = 64;
  // Added to the logits first. Ids in [0, vocab); a bias is finite or -inf (bans the token).
  std::vector<std::pair<TokenId, float>> logit_bias;
  uint64_t seed = 0;     // seeds the Rng (any value, 0 included, is a valid seed)
  int top_logprobs = 0;  // 0..20: how many entries SampleResult::top gets

  // OK, or InvalidArgument naming the field: NaN/infinite or negative temperature, negative
  // top_k, top_p outside (0, 1], min_p outside [0, 1], repetition_penalty not > 0 or not
  // finite, non-finite frequency/presence penalties, penalty_last_n < -1, top_logprobs outside
  // [0, 20], a logit_bias id outside [0, vocab_size) or bias NaN or +inf, vocab_size <= 0.
  absl::Status Validate(int vocab_size) const;
};

inline constexpr int kMaxTopLogprobs = 20;

// xoshiro256** (Blackman & Vigna), seeded by four outputs of splitmix64. Integer arithmetic
// only, so a seed gives the same sequence on every platform and compiler. The whole state is
// four words, saved with state() and restored with FromState(). Not thread-safe; cheap to copy.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0);

  // InvalidArgument for the all-zero state (xoshiro's one fixed point; no seed produces it).
  static absl::StatusOr<Rng> FromState(const std::array<uint64_t, 4>& state);
  const std::array<uint64_t, 4>& state() const { return s_; }

  uint64_t NextU64();
  // Uniform in [0, 1): the top 53 bits of NextU64() times 2^-53.
  double NextUniform() { return static_cast<double>(NextU64() >> 11) * 0x1.0p-53; }

  friend bool operator==(const Rng&, const Rng&) = default;

 private:
  std::array<uint64_t, 4> s_;
};

struct TokenLogprob {
  TokenId id;
  float logprob;
};

struct SampleResult {
  TokenId id = kNoToken;
  // log p(id) under the model's distribution after bias and penalties, BEFORE temperature
  // and truncation (what OpenAI reports). -inf if the token was banned (only possible when
  // every token is banned).
  float logprob = 0.0f;
  // The top_logprobs most likely tokens of that same distribution, most likely first, ties
  // by lower id.
  std::vector<TokenLogprob> top;
};

// log(sum_i exp(x[i])) with the sampler's vectorised exp (sums in double): `max_x` must be
// max(x), finite. A token's log-probability under logits x is x[id] - LogSumExp(x, max).
double LogSumExp(std::span<const float> x, float max_x);

// One per sequence. Holds scratch buffers sized to the vocabulary (no allocation per token
// after the first) and the sequence's Rng. Not thread-safe.
class Sampler {
 public:
  // Precondition: params.Validate(vocab_size).ok() (checked).
  Sampler(SamplingParams params, int vocab_size);

  // Samples one token. logits.size() == vocab_size (checked). history holds the prompt and
  // the generated tokens, history[n_prompt..] being the generated ones (0 <= n_prompt <=
  // history.size(), checked); ids outside the vocabulary are ignored. NaN logits count as
  // -inf. Draws exactly one NextUniform() when temperature > 0 (even if one candidate is
  // left, so the RNG position depends only on the number of tokens), none when greedy.
  // If every token is banned, returns the lowest id with logprob -inf.
  SampleResult Sample(std::span<const float> logits, std::span<const TokenId> history,
                      int64_t n_prompt);

  // The tokens that steps 5-7 keep for these logits, in draw order (probability descending,
  // then id ascending), with their probabilities renormalised over the kept set. Uses the
  // same code as Sample() but draws nothing; for tests and debugging. Empty when greedy.
  std::vector<TokenLogprob> Candidates(std::span<const float> logits,
                                       std::span<const TokenId> history, int64_t n_prompt);

  const SamplingParams& params() const { return params_; }
  int vocab_size() const { return vocab_size_; }
  const Rng& rng() const { return rng_; }
  void set_rng(const Rng& rng) { rng_ = rng; }

 private:
  struct Cand {
    float logit;  // after bias and penalties (not divided by T)
    TokenId id;
    float weight;  // exp((logit - max) / T): unnormalised probability, 1 for the most likely
  };
  // Logit cutoffs that split the vocabulary into nested heads (logit >= cutoff), each a prefix
  // of the draw order: fixed probability ratios to the maximum, and last the min-p floor
  // (-inf when min-p is off). They let top-k, top-p and the draw gather and sort only the
  // head that holds what they need.
  static constexpr int kLevels = 6;
  static constexpr int kFloor = kLevels - 1;

  // Copies logits into work_ and applies bias and penalties (steps 1-2); sets max_logit_ and
  // arg_max_.
  void PrepareLogits(std::span<const float> logits, std::span<const TokenId> history,
                     int64_t n_prompt);
  // weight_ for every token; per level its cutoff and the weight (without top-k) or the
  // count (with top-k) of its head.
  void ComputeWeights();
  template <bool kCount>
  void WeighHeads();
  bool top_k_active() const { return params_.top_k > 0 && params_.top_k < vocab_size_; }
  // cands_ = the tokens that are not banned with logit >= cutoff, unsorted.
  void Gather(float cutoff);
  // Steps 5-8 over work_. With `u`, returns the drawn token; without, leaves the kept set in
  // cands_, sorted, and returns kNoToken. kNoToken also when every token is banned.
  TokenId Truncate(const double* u);
  // Makes cands_[0, n) sorted in draw order and the n best (n <= cands_.size()).
  void EnsureSorted(size_t n);
  // The first index in cands_ (sorting as needed) where the cumulative weight exceeds `mass`,
  // or cands_.size() if it never does.
  size_t FindMass(double mass);
  // The last index in cands_ whose weight is positive (sorts cands_ completely).
  size_t LastDrawable();
  double CandsWeight() const;
  void FillLogprobs(TokenId chosen, double log_z, SampleResult& result) const;
  double LogSumExp() const;  // over work_, with max_logit_

  SamplingParams params_;
  int vocab_size_;
  Rng rng_;
  // Per-call scratch. work_ and weight_ are padded to a multiple of 4 entries (padding
  // logits are -inf, weights 0) so that the vector loops need no tail.
  std::vector<float> work_;     // [vocab + pad] logits after bias and penalties
  std::vector<float> weight_;   // [vocab + pad]
  std::vector<int32_t> count_;  // [vocab], all zero between calls
  std::vector<Cand> cands_;
  size_t sorted_ = 0;
  float max_logit_ = 0.0f;
  TokenId arg_max_ = 0;  // the lowest id with max_logit_
  double total_weight_ = 0.0;
  std::array<float, kLevels> cutoff_{};
  std::array<double, kLevels> level_mass_{};
  std::array<int64_t, kLevels> level_count_{};
};

}  // namespace mnemo::engine
