#include "tests/engine/reference_forward.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "kernels/dequant.h"

namespace mnemo::testing {
namespace {

using engine::ModelConfig;
using engine::RopeScalingKind;
using engine::RopeStyle;
using engine::TensorRef;
using engine::TokenId;

absl::StatusOr<std::vector<float>> Dequantize(const TensorRef& t) {
  if (!kernels::CanDequantize(t.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("reference: cannot dequantize ", t.name,
                                                   " of dtype ", AsAbsl(DTypeName(t.dtype))));
  }
  const int64_t cols = t.shape.back();
  const int64_t rows = t.n_elements() / cols;
  const uint64_t row_bytes = *kernels::DTypeBytes(t.dtype, cols);
  std::vector<float> out(static_cast<size_t>(rows * cols));
  // Safetensors data may be unaligned: copy each row to an aligned buffer first.
  std::vector<uint64_t> row(row_bytes / 8 + 1);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(t.data + r * row_bytes, row_bytes, reinterpret_cast<uint8_t*>(row.data()));
    kernels::DequantizeRowRef(t.dtype, row.data(), out.data() + r * cols, cols);
  }
  return out;
}

// x rounded as 16-bit blocks of 32 (ReferenceOptions::int16_activations).
std::vector<double> RoundInt16(const double* x, int64_t n) {
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t b = 0; b < n; b += 32) {
    const int64_t e = std::min(n, b + 32);
    float amax = 0.0f;
    for (int64_t i = b; i < e; ++i) amax = std::max(amax, std::abs(static_cast<float>(x[i])));
    const float d = amax / 32767.0f;
    const float inv = d > 0.0f ? 1.0f / d : 0.0f;
    for (int64_t i = b; i < e; ++i) {
      const float q = std::nearbyint(static_cast<float>(x[i]) * inv);  // ties to even
      out[i] = static_cast<double>(q) * static_cast<double>(d);
    }
  }
  return out;
}

}  // namespace

// out[r] = sum_c m[r][c] * x[c] (+ bias[r]), in double.
void ReferenceModel::MatVec(const Matrix& m, const double* x, const std::vector<float>& bias,
                            double* out) {
  std::vector<double> rounded;
  if (m.round_input) {
    rounded = RoundInt16(x, m.cols);
    x = rounded.data();
  }
  const int64_t rows = m.rows;
  const int64_t cols = m.cols;
  for (int64_t r = 0; r < rows; ++r) {
    const float* w = m.w.data() + r * cols;
    // Four interleaved partial sums (independent dependency chains: ~4x faster in double).
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    int64_t c = 0;
    for (; c + 4 <= cols; c += 4) {
      for (int j = 0; j < 4; ++j) acc[j] += static_cast<double>(w[c + j]) * x[c + j];
    }
    for (; c < cols; ++c) acc[0] += static_cast<double>(w[c]) * x[c];
    const double sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    out[r] = sum + (bias.empty() ? 0.0 : static_cast<double>(bias[r]));
  }
}

namespace {

// y = x / sqrt(mean(x^2) + eps) * weight, n values.
void RmsNorm(const double* x, const std::vector<float>& weight, double eps, int64_t n, double* y) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv * static_cast<double>(weight[i]);
}

// The angular frequency of each rotated pair, with the config's scaling.
std::vector<double> RopeTheta(const engine::RopeConfig& rope, int context_length,
                              const std::vector<float>& freq_factors) {
  const int d = rope.rotary_dims;
  const double base = rope.base;
  std::vector<double> theta(static_cast<size_t>(d / 2));
  for (int i = 0; i < d / 2; ++i) theta[i] = std::pow(base, -2.0 * i / d);
  if (!freq_factors.empty()) {
    for (int i = 0; i < d / 2; ++i) theta[i] /= static_cast<double>(freq_factors[i]);
  }
  const double factor = rope.factor;
  const double two_pi = 2.0 * std::numbers::pi;
  const double original = rope.original_context > 0 ? rope.original_context : context_length;
  switch (rope.scaling) {
    case RopeScalingKind::kNone:
      break;
    case RopeScalingKind::kLinear:
      for (double& t : theta) t /= factor;
      break;
    case RopeScalingKind::kLlama3: {
      if (!freq_factors.empty()) break;  // GGUF stores the llama3 divisors precomputed
      const double low_wavelen = original / rope.low_freq_factor;
      const double high_wavelen = original / rope.high_freq_factor;
      for (double& t : theta) {
        const double wavelen = two_pi / t;
        if (wavelen < high_wavelen) continue;  // high frequency: unchanged
        if (wavelen > low_wavelen) {           // low frequency: interpolated
          t /= factor;
          continue;
        }
        const double smooth = (original / wavelen - rope.low_freq_factor) /
                              (rope.high_freq_factor - rope.low_freq_factor);
        t = (1.0 - smooth) * t / factor + smooth * t;
      }
      break;
    }
    case RopeScalingKind::kYarn: {
      // The dimension index at which a frequency makes `rotations` turns over the original
      // context; pairs below `low` keep their frequency, above `high` are interpolated.
      auto correction_dim = [&](double rotations) {
        return d * std::log(original / (rotations * two_pi)) / (2.0 * std::log(base));
      };
      const double low = std::max(0.0, std::floor(correction_dim(rope.beta_fast)));
      double high = std::min(d - 1.0, std::ceil(correction_dim(rope.beta_slow)));
      if (high == low) high += 0.001;
      for (int i = 0; i < d / 2; ++i) {
        const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
        const double keep = 1.0 - ramp;  // weight of the unscaled frequency
        theta[i] = theta[i] / factor * (1.0 - keep) + theta[i] * keep;
      }
      break;
    }
  }
  return theta;
}

// Rotates the first rotary_dims of one head at `pos`.
void ApplyRope(double* head, int rotary_dims, RopeStyle style, const std::vector<double>& theta,
               double scale, int64_t pos) {
  const int half = rotary_dims / 2;
  for (int i = 0; i < half; ++i) {
    const double angle = static_cast<double>(pos) * theta[i];
    const double c = std::cos(angle) * scale;
    const double s = std::sin(angle) * scale;
    double& a = style == RopeStyle::kNormal ? head[2 * i] : head[i];
    double& b = style == RopeStyle::kNormal ? head[2 * i + 1] : head[i + half];
    const double a0 = a;
    const double b0 = b;
    a = a0 * c - b0 * s;
    b = a0 * s + b0 * c;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<ReferenceModel>> ReferenceModel::Create(
    const engine::Model& model, const ReferenceOptions& opts) {
  std::unique_ptr<ReferenceModel> m(new ReferenceModel());
  m->config_ = model.config();
  const ModelConfig& c = m->config_;
  auto vec = [&](const std::string& name, std::vector<float>* out) -> absl::Status {
    const TensorRef* t = model.FindTensor(name);
    if (t == nullptr) return absl::NotFoundError(absl::StrCat("reference: no tensor ", name));
    auto v = Dequantize(*t);
    if (!v.ok()) return v.status();
    *out = std::move(*v);
    return absl::OkStatus();
  };
  auto mat = [&](const std::string& name, Matrix* out) -> absl::Status {
    const TensorRef* t = model.FindTensor(name);
    if (t == nullptr) return absl::NotFoundError(absl::StrCat("reference: no tensor ", name));
    out->rows = t->shape[0];
    out->cols = t->shape[1];
    out->round_input = opts.int16_activations && kernels::GetDTypeInfo(t->dtype).quantized;
    return vec(name, &out->w);
  };
  absl::Status s = mat("token_embd.weight", &m->embedding_);
  if (s.ok() && !c.tied_embeddings) s = mat("output.weight", &m->output_);
  if (s.ok()) s = vec("output_norm.weight", &m->output_norm_);
  if (!s.ok()) return s;
  m->layers_.resize(static_cast<size_t>(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) {
    Layer& L = m->layers_[static_cast<size_t>(l)];
    const std::string p = absl::StrCat("blk.", l, ".");
    for (auto [name, out] : {std::pair{"attn_q", &L.q},
                             {"attn_k", &L.k},
                             {"attn_v", &L.v},
                             {"attn_output", &L.o},
                             {"ffn_gate", &L.gate},
                             {"ffn_up", &L.up},
                             {"ffn_down", &L.down}}) {
      if (s.ok()) s = mat(p + name + ".weight", out);
    }
    if (s.ok()) s = vec(p + "attn_norm.weight", &L.attn_norm);
    if (s.ok()) s = vec(p + "ffn_norm.weight", &L.ffn_norm);
    if (c.qkv_bias) {
      if (s.ok()) s = vec(p + "attn_q.bias", &L.q_bias);
      if (s.ok()) s = vec(p + "attn_k.bias", &L.k_bias);
      if (s.ok()) s = vec(p + "attn_v.bias", &L.v_bias);
    }
    if (c.attn_output_bias && s.ok()) s = vec(p + "attn_output.bias", &L.o_bias);
    if (c.qk_norm) {
      if (s.ok()) s = vec(p + "attn_q_norm.weight", &L.q_norm);
      if (s.ok()) s = vec(p + "attn_k_norm.weight", &L.k_norm);
    }
    if (!s.ok()) return s;
  }
  std::vector<float> freq_factors;
  if (c.rope.has_freq_factors) {
    s = vec("rope_freqs.weight", &freq_factors);
    if (!s.ok()) return s;
  }
  m->theta_ = RopeTheta(c.rope, c.context_length, freq_factors);
  m->f16_kv_ = opts.f16_kv;
  m->rope_scale_ = c.rope.scaling == RopeScalingKind::kYarn ? c.rope.attn_factor : 1.0;
  return m;
}

std::vector<std::vector<double>> ReferenceModel::Logits(std::span<const TokenId> tokens) const {
  ReferenceSequence seq(*this);
  std::vector<std::vector<double>> out;
  out.reserve(tokens.size());
  for (TokenId t : tokens) out.push_back(seq.Step(t));
  return out;
}

std::vector<TokenId> ReferenceModel::Greedy(std::span<const TokenId> prompt, int n,
                                            std::vector<std::vector<double>>* all) const {
  ReferenceSequence seq(*this);
  std::vector<double> logits;
  auto step = [&](TokenId t) {
    logits = seq.Step(t);
    if (all != nullptr) all->push_back(logits);
  };
  for (TokenId t : prompt) step(t);
  std::vector<TokenId> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(static_cast<TokenId>(ArgMax(logits)));
    if (i + 1 < n) step(out.back());
  }
  return out;
}

ReferenceSequence::ReferenceSequence(const ReferenceModel& model)
    : m_(model),
      k_cache_(static_cast<size_t>(model.config_.n_layers)),
      v_cache_(static_cast<size_t>(model.config_.n_layers)) {}

std::vector<double> ReferenceSequence::Step(TokenId token) {
  const ModelConfig& c = m_.config_;
  const int64_t d = c.d_model;
  const int hd = c.head_dim;
  const int64_t q_dim = int64_t{c.n_heads} * hd;
  const int64_t kv_dim = int64_t{c.n_kv_heads} * hd;
  const int group = c.n_heads / c.n_kv_heads;
  const double eps = c.norm_eps;
  const int64_t pos = n_tokens_++;
  const int64_t n_ctx = pos + 1;

  std::vector<double> x(static_cast<size_t>(d));
  const float* e = m_.embedding_.w.data() + int64_t{token} * d;
  for (int64_t i = 0; i < d; ++i) x[i] = e[i];

  std::vector<double> h(static_cast<size_t>(d)), q(static_cast<size_t>(q_dim)),
      k(static_cast<size_t>(kv_dim)), v(static_cast<size_t>(kv_dim)),
      attn(static_cast<size_t>(q_dim)), proj(static_cast<size_t>(d)),
      gate(static_cast<size_t>(c.d_ff)), up(static_cast<size_t>(c.d_ff)),
      scores(static_cast<size_t>(n_ctx));
  for (int l = 0; l < c.n_layers; ++l) {
    const ReferenceModel::Layer& L = m_.layers_[static_cast<size_t>(l)];
    RmsNorm(x.data(), L.attn_norm, eps, d, h.data());
    ReferenceModel::MatVec(L.q, h.data(), L.q_bias, q.data());
    ReferenceModel::MatVec(L.k, h.data(), L.k_bias, k.data());
    ReferenceModel::MatVec(L.v, h.data(), L.v_bias, v.data());
    if (c.qk_norm) {
      for (int hh = 0; hh < c.n_heads; ++hh) {
        RmsNorm(&q[hh * hd], L.q_norm, eps, hd, &q[hh * hd]);
      }
      for (int hh = 0; hh < c.n_kv_heads; ++hh) {
        RmsNorm(&k[hh * hd], L.k_norm, eps, hd, &k[hh * hd]);
      }
    }
    for (int hh = 0; hh < c.n_heads; ++hh) {
      ApplyRope(&q[hh * hd], c.rope.rotary_dims, c.rope.style, m_.theta_, m_.rope_scale_, pos);
    }
    for (int hh = 0; hh < c.n_kv_heads; ++hh) {
      ApplyRope(&k[hh * hd], c.rope.rotary_dims, c.rope.style, m_.theta_, m_.rope_scale_, pos);
    }
    std::vector<double>& kc = k_cache_[static_cast<size_t>(l)];
    std::vector<double>& vc = v_cache_[static_cast<size_t>(l)];
    if (m_.f16_kv_) {
      for (double& x16 : k)
        x16 = static_cast<double>(static_cast<_Float16>(static_cast<float>(x16)));
      for (double& x16 : v)
        x16 = static_cast<double>(static_cast<_Float16>(static_cast<float>(x16)));
    }
    kc.insert(kc.end(), k.begin(), k.end());
    vc.insert(vc.end(), v.begin(), v.end());

    // Causal attention over positions [first, pos].
    const int64_t first =
        c.sliding_window > 0 ? std::max<int64_t>(0, pos - c.sliding_window + 1) : 0;
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    for (int hh = 0; hh < c.n_heads; ++hh) {
      const int kvh = hh / group;
      const double* qh = &q[hh * hd];
      double max_score = -INFINITY;
      for (int64_t j = first; j < n_ctx; ++j) {
        const double* kj = &kc[j * kv_dim + kvh * hd];
        double dot = 0.0;
        for (int i = 0; i < hd; ++i) dot += qh[i] * kj[i];
        scores[j] = dot * scale;
        max_score = std::max(max_score, scores[j]);
      }
      double sum = 0.0;
      for (int64_t j = first; j < n_ctx; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        sum += scores[j];
      }
      double* oh = &attn[hh * hd];
      std::fill(oh, oh + hd, 0.0);
      for (int64_t j = first; j < n_ctx; ++j) {
        const double* vj = &vc[j * kv_dim + kvh * hd];
        const double p = scores[j] / sum;
        for (int i = 0; i < hd; ++i) oh[i] += p * vj[i];
      }
    }
    ReferenceModel::MatVec(L.o, attn.data(), L.o_bias, proj.data());
    for (int64_t i = 0; i < d; ++i) x[i] += proj[i];

    RmsNorm(x.data(), L.ffn_norm, eps, d, h.data());
    ReferenceModel::MatVec(L.gate, h.data(), {}, gate.data());
    ReferenceModel::MatVec(L.up, h.data(), {}, up.data());
    for (int64_t i = 0; i < c.d_ff; ++i) gate[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
    ReferenceModel::MatVec(L.down, gate.data(), {}, proj.data());
    for (int64_t i = 0; i < d; ++i) x[i] += proj[i];
  }
  RmsNorm(x.data(), m_.output_norm_, eps, d, h.data());
  const ReferenceModel::Matrix& out = c.tied_embeddings ? m_.embedding_ : m_.output_;
  std::vector<double> logits(static_cast<size_t>(out.rows));
  ReferenceModel::MatVec(out, h.data(), {}, logits.data());
  return logits;
}

int64_t ArgMax(std::span<const double> values) {
  int64_t best = 0;
  for (int64_t i = 1; i < static_cast<int64_t>(values.size()); ++i) {
    if (values[i] > values[best]) best = i;
  }
  return best;
}

}  // namespace mnemo::testing
