#include "engine/sampling.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
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
// Vector helpers (GNU vector extensions: SSE2 on x86-64, NEON on arm64). Every weight is
// computed by the same code, so results do not depend on where a token falls in a vector.

namespace {

using F4 = float __attribute__((vector_size(16)));
using I4 = int32_t __attribute__((vector_size(16)));
using U4 = uint32_t __attribute__((vector_size(16)));

F4 Splat(float x) { return F4{x, x, x, x}; }
F4 Load(const float* p) {
  F4 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
void Store(float* p, F4 v) { std::memcpy(p, &v, sizeof(v)); }
float HorizontalSum(F4 v) { return (v[0] + v[1]) + (v[2] + v[3]); }

// e^x for x <= 0, to about 1 ulp; exactly 0 for x < -87 (and -inf), so no result is
// subnormal. x = n ln2 + r with |r| <= ln2/2 (n by the 1.5 * 2^23 rounding trick, ln2 split in
// two so n * ln2_hi is exact), e^r by its Taylor polynomial to degree 7 (truncation error
// below 6e-9), then 2^n added to the exponent bits.
[[gnu::always_inline]] inline F4 ExpNonPositive(F4 x) {
  const I4 underflow = x < Splat(-87.0f);
  x = underflow ? Splat(-87.0f) : x;
  constexpr float kMagic = 12582912.0f;
  const F4 t = x * Splat(1.44269504088896341f) + Splat(kMagic);
  const U4 n = std::bit_cast<U4>(t) - std::bit_cast<U4>(Splat(kMagic));
  const F4 fn = t - Splat(kMagic);
  F4 r = x - fn * Splat(0.693145751953125f);
  r = r - fn * Splat(1.428606765330187045e-06f);
  F4 p = Splat(1.0f / 5040.0f);
  p = p * r + Splat(1.0f / 720.0f);
  p = p * r + Splat(1.0f / 120.0f);
  p = p * r + Splat(1.0f / 24.0f);
  p = p * r + Splat(1.0f / 6.0f);
  p = p * r + Splat(0.5f);
  p = p * r + Splat(1.0f);
  p = p * r + Splat(1.0f);
  const F4 scaled = std::bit_cast<F4>(std::bit_cast<U4>(p) + (n << 23));
  return underflow ? Splat(0.0f) : scaled;
}

// Vectors per partial sum: float lanes add at most 16 terms before they are folded into a
// double, which keeps the sums accurate to ~1e-7 relative over any vocabulary size.
constexpr size_t kFoldVectors = 16;

// The maximum of v and the lowest index holding it (v.size() % 4 == 0, no NaN). Each lane
// keeps its first maximum (strict >); among lanes the lowest index wins.
std::pair<float, size_t> MaxAndArgMax(std::span<const float> v) {
  F4 best = Splat(kNegInf);
  I4 best_index = {0, 1, 2, 3};
  I4 index = {0, 1, 2, 3};
  for (size_t i = 0; i < v.size(); i += 4) {
    const F4 x = Load(v.data() + i);
    const I4 greater = x > best;
    best = greater ? x : best;
    best_index = greater ? index : best_index;
    index += 4;
  }
  float max = best[0];
  int32_t arg = best_index[0];
  for (int lane = 1; lane < 4; ++lane) {
    if (best[lane] > max || (best[lane] == max && best_index[lane] < arg)) {
      max = best[lane];
      arg = best_index[lane];
    }
  }
  return {max, static_cast<size_t>(arg)};
}

// Draw order: logit descending, then id ascending (a strict total order).
template <typename C>
bool DrawsBefore(const C& a, const C& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

size_t RoundUp4(int n) { return (static_cast<size_t>(n) + 3) & ~size_t{3}; }

// The fixed levels: heads with probabilities down to 2^-2, 2^-5, 2^-9, 2^-14, 2^-20 of the
// maximum.
constexpr std::array<double, 5> kLevelRatios = {0x1p-2, 0x1p-5, 0x1p-9, 0x1p-14, 0x1p-20};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Sampler

Sampler::Sampler(SamplingParams params, int vocab_size)
    : params_(std::move(params)), vocab_size_(vocab_size), rng_(params_.seed) {
  const absl::Status status = params_.Validate(vocab_size);
  MNEMO_CHECK(status.ok()) << status.ToString();
  work_.assign(RoundUp4(vocab_size), kNegInf);
  weight_.assign(RoundUp4(vocab_size), 0.0f);
  count_.assign(static_cast<size_t>(vocab_size), 0);
  static_assert(kLevelRatios.size() == kFloor);
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
  const size_t n = logits.size();
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    F4 v = Load(in + i);
    v = v != v ? Splat(kNegInf) : v;
    v = v > Splat(kMaxFloat) ? Splat(kMaxFloat) : v;
    Store(out + i, v);
  }
  for (; i < n; ++i) {
    const float v = in[i];
    out[i] = v != v ? kNegInf : std::min(v, kMaxFloat);
  }
  for (const auto& [id, bias] : params_.logit_bias) out[id] += bias;

  auto valid = [this](TokenId t) { return t >= 0 && t < vocab_size_; };
  // Repetition: once per distinct token in the window (count_ marks the ones seen).
  if (params_.repetition_penalty != 1.0f && params_.penalty_last_n != 0) {
    const size_t len = history.size();
    const size_t window = params_.penalty_last_n < 0
                              ? len
                              : std::min(len, static_cast<size_t>(params_.penalty_last_n));
    const std::span<const TokenId> recent = history.subspan(len - window);
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
  const auto [max, arg_max] = MaxAndArgMax(work_);
  max_logit_ = max;
  arg_max_ = static_cast<TokenId>(arg_max);
}

void Sampler::ComputeWeights() {
  // p / p_max >= ratio  <=>  (logit - max) / T >= ln(ratio). Cutting by logit makes every
  // head exactly a prefix of the draw order.
  const double t = params_.temperature;
  for (int j = 0; j < kFloor; ++j) {
    cutoff_[j] = static_cast<float>(max_logit_ + t * std::log(kLevelRatios[j]));
  }
  cutoff_[kFloor] =
      params_.min_p > 0.0f ? static_cast<float>(max_logit_ + t * std::log(params_.min_p)) : kNegInf;
  // Top-k needs the heads' sizes; top-p and the draw need their weights.
  if (top_k_active()) {
    WeighHeads<true>();
  } else {
    WeighHeads<false>();
  }
}

template <bool kCount>
void Sampler::WeighHeads() {
  const F4 max4 = Splat(max_logit_);
  const F4 inv_t = Splat(1.0f / params_.temperature);
  F4 cutoffs[kLevels];
  for (int j = 0; j < kLevels; ++j) cutoffs[j] = Splat(cutoff_[j]);
  I4 counts[kLevels] = {};
  double total = 0.0;
  double mass[kLevels] = {};
  const size_t n = work_.size();
  for (size_t i = 0; i < n;) {
    const size_t end = std::min(n, i + 4 * kFoldVectors);
    F4 part_total = {};
    F4 part_mass[kLevels] = {};
    for (; i < end; i += 4) {
      const F4 logit = Load(work_.data() + i);
      const F4 w = ExpNonPositive((logit - max4) * inv_t);
      Store(weight_.data() + i, w);
      part_total += w;
      for (int j = 0; j < kLevels; ++j) {
        const I4 in_head = logit >= cutoffs[j];
        if constexpr (kCount) {
          counts[j] -= in_head;  // a true lane is -1
        } else {
          part_mass[j] += in_head ? w : Splat(0.0f);
        }
      }
    }
    total += HorizontalSum(part_total);
    for (int j = 0; j < kLevels; ++j) mass[j] += HorizontalSum(part_mass[j]);
  }
  total_weight_ = total;
  for (int j = 0; j < kLevels; ++j) {
    level_mass_[j] = mass[j];
    level_count_[j] = int64_t{counts[j][0]} + counts[j][1] + counts[j][2] + counts[j][3];
  }
}

void Sampler::Gather(float cutoff) {
  cands_.clear();
  sorted_ = 0;
  for (size_t i = 0; i < static_cast<size_t>(vocab_size_); ++i) {
    const float logit = work_[i];
    if (logit >= cutoff && logit > kNegInf) {
      cands_.push_back({logit, static_cast<TokenId>(i), weight_[i]});
    }
  }
}

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
  size_t chunk = 32;
  for (size_t i = 0; i < cands_.size(); ++i) {
    if (i == sorted_) {
      EnsureSorted(std::min(cands_.size(), sorted_ + chunk));
      chunk *= 4;
    }
    cum += cands_[i].weight;
    if (cum > mass) return i;
  }
  return cands_.size();
}

size_t Sampler::LastDrawable() {
  EnsureSorted(cands_.size());
  size_t last = cands_.size() - 1;
  while (last > 0 && cands_[last].weight == 0.0f) --last;
  return last;
}

double Sampler::CandsWeight() const {
  double total = 0.0;
  for (const Cand& c : cands_) total += c.weight;
  return total;
}

TokenId Sampler::Truncate(const double* u) {
  if (max_logit_ == kNegInf) {  // every token banned
    cands_.clear();
    return kNoToken;
  }
  ComputeWeights();

  // cands_ holds the whole set kept so far once top-k or top-p has cut it.
  bool cut = false;
  const int64_t k = params_.top_k;
  if (top_k_active()) {
    int level = 0;
    while (level < kFloor && level_count_[level] < k) ++level;
    Gather(level < kFloor ? cutoff_[level] : kNegInf);
    auto less = [](const Cand& a, const Cand& b) { return DrawsBefore(a, b); };
    if (static_cast<int64_t>(cands_.size()) > k) {
      std::nth_element(cands_.begin(), cands_.begin() + k, cands_.end(), less);
      cands_.resize(static_cast<size_t>(k));
    }
    cut = true;
  }

  if (params_.top_p < 1.0f) {
    // The first index whose cumulative weight reaches top_p of the total.
    size_t last = 0;
    if (cut) {
      const double target = static_cast<double>(params_.top_p) * CandsWeight();
      last = FindMass(std::nextafter(target, 0.0));
      if (last == cands_.size()) last = LastDrawable();
    } else {
      const double target = static_cast<double>(params_.top_p) * total_weight_;
      for (int level = 0;; ++level) {
        if (level < kFloor && level_mass_[level] < target) continue;
        Gather(level < kFloor ? cutoff_[level] : kNegInf);
        last = FindMass(std::nextafter(target, 0.0));
        if (last < cands_.size()) break;
        if (level >= kFloor) {
          last = LastDrawable();
          break;
        }
      }
    }
    cands_.resize(last + 1);
    sorted_ = std::min(sorted_, cands_.size());
    cut = true;
  }

  if (cut) {
    if (params_.min_p > 0.0f) {
      // The kept tokens are a prefix of the draw order, so the sorted head stays sorted.
      const float cutoff = cutoff_[kFloor];
      cands_.erase(std::remove_if(cands_.begin(), cands_.end(),
                                  [cutoff](const Cand& c) { return c.logit < cutoff; }),
                   cands_.end());
      sorted_ = std::min(sorted_, cands_.size());
    }
    if (u == nullptr) {
      EnsureSorted(cands_.size());
      return kNoToken;
    }
    size_t i = FindMass(*u * CandsWeight());
    if (i == cands_.size()) i = LastDrawable();
    return cands_[i].id;
  }

  // Only min-p, or nothing: the kept set is the head above the floor, but the draw usually
  // needs only a smaller head; gather the smallest one that holds the mass it needs.
  const float floor = cutoff_[kFloor];
  if (u == nullptr) {
    Gather(floor);
    EnsureSorted(cands_.size());
    return kNoToken;
  }
  const double mass = *u * level_mass_[kFloor];
  for (int level = 0; level < kFloor; ++level) {
    if (cutoff_[level] <= floor || level_mass_[level] <= mass) continue;
    Gather(cutoff_[level]);
    const size_t i = FindMass(mass);
    if (i < cands_.size()) return cands_[i].id;
  }
  Gather(floor);
  size_t i = FindMass(mass);
  if (i == cands_.size()) i = LastDrawable();
  return cands_[i].id;
}

double Sampler::LogSumExp() const { return engine::LogSumExp(work_, max_logit_); }

double LogSumExp(std::span<const float> x, float max_x) {
  const F4 max4 = Splat(max_x);
  double total = 0.0;
  const size_t n4 = x.size() / 4 * 4;
  for (size_t i = 0; i < n4;) {
    const size_t end = std::min(n4, i + 4 * kFoldVectors);
    F4 part = {};
    for (; i < end; i += 4) part += ExpNonPositive(Load(x.data() + i) - max4);
    total += HorizontalSum(part);
  }
  if (n4 < x.size()) {  // the tail, padded with -inf (whose exp is 0)
    F4 tail = Splat(kNegInf);
    for (size_t i = n4; i < x.size(); ++i) tail[i - n4] = x[i];
    total += HorizontalSum(ExpNonPositive(tail - max4));
  }
  return static_cast<double>(max_x) + std::log(total);
}

void Sampler::FillLogprobs(TokenId chosen, double log_z, SampleResult& result) const {
  if (max_logit_ == kNegInf) {
    result.logprob = kNegInf;
    return;
  }
  result.logprob = static_cast<float>(static_cast<double>(work_[chosen]) - log_z);
  if (params_.top_logprobs == 0) return;
  // A small sorted buffer: scanning ids in ascending order, a later id enters only with a
  // strictly larger logit than the current last, which keeps ties by lower id.
  const size_t n = static_cast<size_t>(params_.top_logprobs);
  std::vector<TokenLogprob> top;
  top.reserve(n + 1);
  for (size_t i = 0; i < static_cast<size_t>(vocab_size_); ++i) {
    const float v = work_[i];
    if (top.size() == n && !(v > top.back().logprob)) continue;
    auto pos = std::upper_bound(top.begin(), top.end(), v, [](float value, const TokenLogprob& e) {
      return value > e.logprob;
    });
    top.insert(pos, {static_cast<TokenId>(i), v});
    if (top.size() > n) top.pop_back();
  }
  for (TokenLogprob& e : top) {
    e.logprob = static_cast<float>(static_cast<double>(e.logprob) - log_z);
  }
  result.top = std::move(top);
}

SampleResult Sampler::Sample(std::span<const float> logits, std::span<const TokenId> history,
                             int64_t n_prompt) {
  PrepareLogits(logits, history, n_prompt);
  SampleResult result;
  if (params_.temperature == 0.0f) {
    result.id = arg_max_;
    FillLogprobs(result.id, LogSumExp(), result);
    return result;
  }
  const double u = rng_.NextUniform();
  const TokenId id = Truncate(&u);
  result.id = id == kNoToken ? arg_max_ : id;
  // At T = 1 the weights are exactly the terms of the model's log-sum-exp.
  const bool reuse = params_.temperature == 1.0f && max_logit_ != kNegInf;
  FillLogprobs(result.id,
               reuse ? static_cast<double>(max_logit_) + std::log(total_weight_) : LogSumExp(),
               result);
  return result;
}

std::vector<TokenLogprob> Sampler::Candidates(std::span<const float> logits,
                                              std::span<const TokenId> history, int64_t n_prompt) {
  PrepareLogits(logits, history, n_prompt);
  std::vector<TokenLogprob> out;
  if (params_.temperature == 0.0f) return out;
  Truncate(nullptr);
  const double total = CandsWeight();
  out.reserve(cands_.size());
  for (const Cand& c : cands_) {
    out.push_back({c.id, static_cast<float>(std::log(static_cast<double>(c.weight) / total))});
  }
  return out;
}

}  // namespace mnemo::engine
