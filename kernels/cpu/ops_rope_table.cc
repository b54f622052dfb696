// RoPE frequencies (kernels/ops.h: ComputeRopeTable), computed in double and rounded once.
//
// Base frequencies theta_i = base^(-2i / rotary_dims), i < rotary_dims / 2, each divided by
// freq_factors[i] when given (GGUF rope_freqs.weight), then scaled:
//   linear  theta_i / factor
//   llama3  Meta's smoothing: wavelength lambda_i = 2 pi / theta_i against the original
//           context L: lambda < L / high_freq_factor keeps theta (high frequencies),
//           lambda > L / low_freq_factor uses theta / factor, in between the two are mixed
//           with s = (L / lambda - low) / (high - low): (1 - s) theta / factor + s theta.
//   yarn    (Peng et al., as in ggml and Hugging Face) the dimension index at which a pair
//           turns r times over the original context is d(r) = R ln(L / (2 pi r)) / (2 ln base)
//           (R = rotary_dims). low = floor(d(beta_fast)), high = ceil(d(beta_slow)), clamped
//           to [0, R - 1]; ramp_i = 1 - clamp((i - low) / max(0.001, high - low), 0, 1);
//           theta_i = theta_i / factor * (1 - ramp_i) + theta_i * ramp_i, and
//           mscale = (0.1 ln(factor) + 1) * attn_factor (the first term only when factor > 1).
#include <algorithm>
#include <cmath>

#include "kernels/base/check.h"
#include "kernels/ops.h"

namespace mnemo::kernels {
namespace {

constexpr double kPi = 3.14159265358979323846;

double YarnCorrectionDim(int rotary_dims, int original_context, double base, double rotations) {
  return rotary_dims * std::log(original_context / (rotations * 2.0 * kPi)) /
         (2.0 * std::log(base));
}

}  // namespace

RopeTable ComputeRopeTable(const RopeFreqConfig& c) {
  MNEMO_CHECK(c.rotary_dims >= 0 && c.rotary_dims % 2 == 0)
      << "rotary_dims " << c.rotary_dims << " must be even";
  MNEMO_CHECK(c.base > 0.0f) << "rope base " << c.base;
  const bool scaled = c.scaling != RopeScaling::kNone;
  MNEMO_CHECK(!scaled || c.factor > 0.0f) << "rope scaling factor " << c.factor;
  const bool needs_context = c.scaling == RopeScaling::kLlama3 || c.scaling == RopeScaling::kYarn;
  MNEMO_CHECK(!needs_context || c.original_context > 0)
      << "llama3/yarn rope scaling needs original_context";
  MNEMO_CHECK(c.scaling != RopeScaling::kLlama3 || c.high_freq_factor > c.low_freq_factor)
      << "llama3 rope needs high_freq_factor > low_freq_factor";

  const int half = c.rotary_dims / 2;
  RopeTable table;
  table.theta.resize(static_cast<size_t>(half));
  const double factor = c.factor;

  double yarn_low = 0.0;
  double yarn_high = 0.0;
  if (c.scaling == RopeScaling::kYarn) {
    yarn_low =
        std::floor(YarnCorrectionDim(c.rotary_dims, c.original_context, c.base, c.beta_fast));
    yarn_high =
        std::ceil(YarnCorrectionDim(c.rotary_dims, c.original_context, c.base, c.beta_slow));
    yarn_low = std::max(0.0, yarn_low);
    yarn_high = std::min(static_cast<double>(c.rotary_dims - 1), yarn_high);
    table.mscale = static_cast<float>((factor > 1.0 ? 0.1 * std::log(factor) + 1.0 : 1.0) *
                                      static_cast<double>(c.attn_factor));
  }

  for (int i = 0; i < half; ++i) {
    double theta = std::pow(static_cast<double>(c.base), -2.0 * i / c.rotary_dims);
    if (c.freq_factors != nullptr) theta /= c.freq_factors[i];
    switch (c.scaling) {
      case RopeScaling::kNone:
        break;
      case RopeScaling::kLinear:
        theta /= factor;
        break;
      case RopeScaling::kLlama3: {
        const double wavelen = 2.0 * kPi / theta;
        const double low_wavelen = c.original_context / static_cast<double>(c.low_freq_factor);
        const double high_wavelen = c.original_context / static_cast<double>(c.high_freq_factor);
        if (wavelen > low_wavelen) {
          theta /= factor;
        } else if (wavelen >= high_wavelen) {
          const double smooth = (c.original_context / wavelen - c.low_freq_factor) /
                                (static_cast<double>(c.high_freq_factor) - c.low_freq_factor);
          theta = (1.0 - smooth) * theta / factor + smooth * theta;
        }
        break;
      }
      case RopeScaling::kYarn: {
        const double y = (i - yarn_low) / std::max(0.001, yarn_high - yarn_low);
        const double ramp = 1.0 - std::clamp(y, 0.0, 1.0);
        theta = theta / factor * (1.0 - ramp) + theta * ramp;
        break;
      }
    }
    table.theta[static_cast<size_t>(i)] = static_cast<float>(theta);
  }
  return table;
}

}  // namespace mnemo::kernels
