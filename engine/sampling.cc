#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/base/check.h"

namespace mnemo::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kMaxFloat = std::numeric_limits<float>::max();

absl::Status FieldError(const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("sampling: ", field, " ", what));
}

// splitmix64 (Steele, Lea & Flood): the published seeding generator for the xoshiro family.
uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

constexpr uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

absl::Status SamplingParams::Validate(int vocab_size) const {
  if (vocab_size <= 0)
    return FieldError("vocab_size", absl::StrCat("must be > 0, got ", vocab_size));
  if (!std::isfinite(temperature) || temperature < 0.0f) {
    return FieldError("temperature", absl::StrCat("must be finite and >= 0, got ", temperature));
  }
  if (top_k < 0) return FieldError("top_k", absl::StrCat("must be >= 0, got ", top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return FieldError("top_p", absl::StrCat("must be in (0, 1], got ", top_p));
  }
  if (!(min_p >= 0.0f && min_p <= 1.0f)) {
    return FieldError("min_p", absl::StrCat("must be in [0, 1], got ", min_p));
  }
  if (!std::isfinite(repetition_penalty) || !(repetition_penalty > 0.0f)) {
    return FieldError("repetition_penalty",
                      absl::StrCat("must be finite and > 0, got ", repetition_penalty));
  }
  if (!std::isfinite(frequency_penalty)) {
    return FieldError("frequency_penalty", absl::StrCat("must be finite, got ", frequency_penalty));
  }
  if (!std::isfinite(presence_penalty)) {
    return FieldError("presence_penalty", absl::StrCat("must be finite, got ", presence_penalty));
  }
  if (penalty_last_n < -1) {
    return FieldError("penalty_last_n", absl::StrCat("must be >= -1, got ", penalty_last_n));
  }
  if (top_logprobs < 0 || top_logprobs > kMaxTopLogprobs) {
    return FieldError("top_logprobs",
                      absl::StrCat("must be in [0, ", kMaxTopLogprobs, "], got ", top_logprobs));
  }
  for (const auto& [id, bias] : logit_bias) {
    if (id < 0 || id >= vocab_size) {
      return FieldError("logit_bias",
                        absl::StrCat("token id ", id, " is outside [0, ", vocab_size, ")"));
    }
    if (std::isnan(bias) || bias == std::numeric_limits<float>::infinity()) {
      return FieldError("logit_bias",
                        absl::StrCat("bias of token ", id, " must be finite or -inf, got ", bias));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Rng

Rng::Rng(uint64_t seed) {
  uint64_t x = seed;
  for (uint64_t& word : s_) word = SplitMix64(x);
}

absl::StatusOr<Rng> Rng::FromState(const std::array<uint64_t, 4>& state) {
  if (state[0] == 0 && state[1] == 0 && state[2] == 0 && state[3] == 0) {
    return absl::InvalidArgumentError("rng: the all-zero state is not a valid xoshiro256 state");
  }
  Rng rng;
  rng.s_ = state;
  return rng;
}

uint64_t Rng::NextU64() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

// ---------------------------------------------------------------------------------------------
// Sampler

Sampler::Sampler(SamplingParams params, int vocab_size)
    : params_(std::move(params)), vocab_size_(vocab_size), rng_(params_.seed) {
  const absl::Status status = params_.Validate(vocab_size);
  MNEMO_CHECK(status.ok()) << status.ToString();
  work_.resize(static_cast<size_t>(vocab_size));
  count_.assign(static_cast<size_t>(vocab_size), 0);
}

void Sampler::PrepareLogits(std::span<const float> logits, std::span<const TokenId> history,
                            int64_t n_prompt) {
  MNEMO_CHECK(logits.size() == static_cast<size_t>(vocab_size_))
      << "got " << logits.size() << " logits for a vocabulary of " << vocab_size_;
  MNEMO_CHECK(n_prompt >= 0 && static_cast<size_t>(n_prompt) <= history.size())
      << "n_prompt " << n_prompt << " with a history of " << history.size();
  // NaN becomes -inf and +inf the largest float, so max-subtraction never makes a NaN.
  const float* in = logits.data();
  float* out = work_.data();
  for (size_t i = 0; i < work_.size(); ++i) {
    float v = in[i];
    v = v != v ? kNegInf : v;
    out[i] = v > kMaxFloat ? kMaxFloat : v;
  }
  for (const auto& [id, bias] : params_.logit_bias) out[id] += bias;

  auto valid = [this](TokenId t) { return t >= 0 && t < vocab_size_; };
  // Repetition: once per distinct token in the window (count_ marks the ones seen).
  if (params_.repetition_penalty != 1.0f && params_.penalty_last_n != 0) {
    const size_t n = history.size();
    const size_t window =
        params_.penalty_last_n < 0 ? n : std::min(n, static_cast<size_t>(params_.penalty_last_n));
    const std::span<const TokenId> recent = history.subspan(n - window);
    const float p = params_.repetition_penalty;
    for (TokenId t : recent) {
      if (!valid(t) || count_[t]++ != 0) continue;
      out[t] = out[t] > 0.0f ? out[t] / p : out[t] * p;
    }
    for (TokenId t : recent) {
      if (valid(t)) count_[t] = 0;
    }
  }
  // Frequency and presence: over the generated tokens.
  if (params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f) {
    const std::span<const TokenId> generated = history.subspan(static_cast<size_t>(n_prompt));
    for (TokenId t : generated) {
      if (valid(t)) ++count_[t];
    }
    for (TokenId t : generated) {
      if (!valid(t) || count_[t] == 0) continue;
      out[t] -=
          static_cast<float>(count_[t]) * params_.frequency_penalty + params_.presence_penalty;
      count_[t] = 0;
    }
  }
}

namespace {

// Draw order: logit descending, then id ascending (a strict total order).
template <typename C>
bool DrawsBefore(const C& a, const C& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

TokenId ArgMax(std::span<const float> v) {
  size_t best = 0;
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] > v[best]) best = i;
  }
  return static_cast<TokenId>(best);
}

}  // namespace

void Sampler::EnsureSorted(size_t n) {
  if (n <= sorted_) return;
  const auto first = cands_.begin() + static_cast<std::ptrdiff_t>(sorted_);
  const auto mid = cands_.begin() + static_cast<std::ptrdiff_t>(n);
  auto less = [](const Cand& a, const Cand& b) { return DrawsBefore(a, b); };
  if (mid != cands_.end()) std::nth_element(first, mid, cands_.end(), less);
  std::sort(first, mid, less);
  sorted_ = n;
}

size_t Sampler::FindMass(double mass) {
  double cum = 0.0;
  size_t chunk = 64;
  for (size_t i = 0; i < cands_.size(); ++i) {
    if (i == sorted_) {
      EnsureSorted(std::min(cands_.size(), sorted_ + chunk));
      chunk *= 4;
    }
    cum += cands_[i].weight;
    if (cum > mass) return i;
  }
  // Rounding (the total was summed in another order): the last token that can be drawn.
  EnsureSorted(cands_.size());
  size_t last = cands_.size() - 1;
  while (last > 0 && cands_[last].weight == 0.0f) --last;
  return last;
}

double Sampler::Truncate() {
  cands_.clear();
  sorted_ = 0;
  for (size_t i = 0; i < work_.size(); ++i) {
    if (work_[i] > kNegInf) cands_.push_back({work_[i], static_cast<TokenId>(i), 0.0f});
  }
  if (cands_.empty()) return 0.0;
  auto less = [](const Cand& a, const Cand& b) { return DrawsBefore(a, b); };

  const size_t k = static_cast<size_t>(params_.top_k);
  if (k > 0 && k < cands_.size()) {
    std::nth_element(cands_.begin(), cands_.begin() + static_cast<std::ptrdiff_t>(k), cands_.end(),
                     less);
    cands_.resize(k);
  }

  float max_logit = kNegInf;
  for (const Cand& c : cands_) max_logit = std::max(max_logit, c.logit);
  const float inv_t = 1.0f / params_.temperature;
  double total = 0.0;
  for (Cand& c : cands_) {
    c.weight = std::exp((c.logit - max_logit) * inv_t);
    total += c.weight;
  }

  if (params_.top_p < 1.0f) {
    const double target = static_cast<double>(params_.top_p) * total;
    const size_t i = FindMass(std::nextafter(target, 0.0));  // first cum >= target
    double kept = 0.0;
    for (size_t j = 0; j <= i; ++j) kept += cands_[j].weight;
    cands_.resize(i + 1);
    sorted_ = std::min(sorted_, cands_.size());
    total = kept;
  }

  if (params_.min_p > 0.0f) {
    // weight = p / p_max, since the most likely token has weight exp(0) = 1. The kept tokens
    // are a prefix of the draw order, so the sorted head stays sorted.
    const float min_p = params_.min_p;
    const auto end = std::remove_if(cands_.begin(), cands_.end(),
                                    [min_p](const Cand& c) { return c.weight < min_p; });
    if (end != cands_.end()) {
      cands_.erase(end, cands_.end());
      sorted_ = std::min(sorted_, cands_.size());
      total = 0.0;
      for (const Cand& c : cands_) total += c.weight;
    }
  }
  return total;
}

void Sampler::FillLogprobs(TokenId chosen, SampleResult& result) const {
  const float max_logit = *std::max_element(work_.begin(), work_.end());
  if (max_logit == kNegInf) {
    result.logprob = kNegInf;
  } else {
    double sum = 0.0;
    for (float v : work_) sum += std::exp(v - max_logit);
    const double log_z = static_cast<double>(max_logit) + std::log(sum);
    result.logprob = static_cast<float>(static_cast<double>(work_[chosen]) - log_z);
    if (params_.top_logprobs > 0) {
      // A small sorted buffer: scanning ids in ascending order, a later id enters only with a
      // strictly larger logit than the current last, which keeps ties by lower id.
      const size_t n = static_cast<size_t>(params_.top_logprobs);
      std::vector<TokenLogprob> top;
      top.reserve(n + 1);
      for (size_t i = 0; i < work_.size(); ++i) {
        const float v = work_[i];
        if (top.size() == n && !(v > top.back().logprob)) continue;
        auto pos =
            std::upper_bound(top.begin(), top.end(), v,
                             [](float value, const TokenLogprob& e) { return value > e.logprob; });
        top.insert(pos, {static_cast<TokenId>(i), v});
        if (top.size() > n) top.pop_back();
      }
      for (TokenLogprob& e : top) {
        e.logprob = static_cast<float>(static_cast<double>(e.logprob) - log_z);
      }
      result.top = std::move(top);
    }
  }
}

SampleResult Sampler::Sample(std::span<const float> logits, std::span<const TokenId> history,
                             int64_t n_prompt) {
  PrepareLogits(logits, history, n_prompt);
  SampleResult result;
  if (params_.temperature == 0.0f) {
    result.id = ArgMax(work_);
  } else {
    const double total = Truncate();
    const double u = rng_.NextUniform();
    result.id = cands_.empty() ? ArgMax(work_) : cands_[FindMass(u * total)].id;
  }
  FillLogprobs(result.id, result);
  return result;
}

std::vector<TokenLogprob> Sampler::Candidates(std::span<const float> logits,
                                              std::span<const TokenId> history, int64_t n_prompt) {
  PrepareLogits(logits, history, n_prompt);
  std::vector<TokenLogprob> out;
  if (params_.temperature == 0.0f) return out;
  const double total = Truncate();
  EnsureSorted(cands_.size());
  out.reserve(cands_.size());
  for (const Cand& c : cands_) {
    out.push_back({c.id, static_cast<float>(std::log(static_cast<double>(c.weight) / total))});
  }
  return out;
}

}  // namespace mnemo::engine
