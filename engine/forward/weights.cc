#include "engine/forward/weights.h"

#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "kernels/dequant.h"

namespace mnemo::engine {
namespace {

// The alignment the dequantizers require of a row: 4 bytes for f32, 2 for the others.
uintptr_t RequiredAlignment(kernels::DType t) { return t == kernels::DType::kF32 ? 4 : 2; }

}  // namespace

absl::StatusOr<kernels::WeightView> ModelWeights::Matrix(const Model& model,
                                                         const std::string& name, bool to_f32) {
  const TensorRef* t = model.FindTensor(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("model has no tensor ", name));
  if (t->shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " is not a matrix"));
  }
  if (!kernels::CanDequantize(t->dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", name, " has dtype ", AsAbsl(kernels::DTypeName(t->dtype)),
                     ", which the forward pass does not support (weight dtypes: f32 f16 "
                     "bf16 q8_0 q4_0 q4_1 q4_k q5_k q6_k)"));
  }
  kernels::WeightView w;
  w.dtype = t->dtype;
  w.rows = t->shape[0];
  w.cols = t->shape[1];
  w.data = t->data;
  if (to_f32 && t->dtype != kernels::DType::kF32) {
    std::vector<uint64_t> aligned(t->bytes / 8 + 1);
    std::memcpy(aligned.data(), t->data, t->bytes);
    std::vector<float>& f = vectors_.emplace_back(static_cast<size_t>(w.rows * w.cols));
    kernels::DequantizeRows(t->dtype, aligned.data(), f.data(), w.rows, w.cols);
    w.dtype = kernels::DType::kF32;
    w.data = f.data();
    return w;
  }
  if (reinterpret_cast<uintptr_t>(t->data) % RequiredAlignment(t->dtype) != 0) {
    realigned_.emplace_back(new uint64_t[t->bytes / 8 + 1]);
    std::memcpy(realigned_.back().get(), t->data, t->bytes);
    w.data = realigned_.back().get();
  }
  return w;
}

absl::StatusOr<const float*> ModelWeights::Vector(const Model& model, const std::string& name) {
  const TensorRef* t = model.FindTensor(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat("model has no tensor ", name));
  if (!kernels::CanDequantize(t->dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has dtype ",
                                                   AsAbsl(kernels::DTypeName(t->dtype)),
                                                   ", which the forward pass does not support"));
  }
  const int64_t n = t->n_elements();
  std::vector<uint64_t> aligned(t->bytes / 8 + 1);
  std::memcpy(aligned.data(), t->data, t->bytes);
  std::vector<float>& out = vectors_.emplace_back(static_cast<size_t>(n));
  kernels::DequantizeRowRef(t->dtype, aligned.data(), out.data(), n);
  return out.data();
}

kernels::WeightView ModelWeights::Concatenate(std::initializer_list<kernels::WeightView> parts) {
  kernels::WeightView out = *parts.begin();
  out.rows = 0;
  uint64_t bytes = 0;
  for (const kernels::WeightView& p : parts) {
    out.rows += p.rows;
    bytes += *kernels::DTypeBytes(p.dtype, p.rows * p.cols);
  }
  realigned_.emplace_back(new uint64_t[bytes / 8 + 1]);
  uint8_t* dst = reinterpret_cast<uint8_t*>(realigned_.back().get());
  out.data = dst;
  for (const kernels::WeightView& p : parts) {
    const uint64_t n = *kernels::DTypeBytes(p.dtype, p.rows * p.cols);
    std::memcpy(dst, p.data, n);
    dst += n;
  }
  return out;
}

const float* ModelWeights::ConcatenateVectors(
    std::initializer_list<std::pair<const float*, int64_t>> parts) {
  std::vector<float>& out = vectors_.emplace_back();
  for (const auto& [data, n] : parts) out.insert(out.end(), data, data + n);
  return out.data();
}

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Create(const Model& model,
                                                                   const WeightOptions& opts) {
  const bool f32_matrices = opts.f32_matrices;
  std::unique_ptr<ModelWeights> w(new ModelWeights());
  w->config_ = model.config();
  const ModelConfig& c = w->config_;
  absl::Status status;
  // Assigns the matrix or vector `name` to `out`, remembering the first error.
  auto matrix = [&](const std::string& name, kernels::WeightView* out) {
    if (!status.ok()) return;
    auto m = w->Matrix(model, name, f32_matrices);
    if (!m.ok()) {
      status = m.status();
      return;
    }
    *out = *m;
    w->decode_bytes_per_token_ += *kernels::DTypeBytes(out->dtype, out->rows * out->cols);
    w->matmul_params_ += out->rows * out->cols;
  };
  auto vector = [&](const std::string& name, const float** out) {
    if (!status.ok()) return;
    auto v = w->Vector(model, name);
    if (!v.ok()) {
      status = v.status();
      return;
    }
    *out = *v;
  };

  matrix("token_embd.weight", &w->token_embedding_);
  if (!status.ok()) return status;
  // Decode reads one embedding row unless the embedding is also the output projection.
  const kernels::WeightView& e = w->token_embedding_;
  w->decode_bytes_per_token_ -= *kernels::DTypeBytes(e.dtype, e.rows * e.cols);
  w->matmul_params_ -= e.rows * e.cols;
  w->decode_bytes_per_token_ += *kernels::DTypeBytes(e.dtype, e.cols);
  if (c.tied_embeddings) {
    w->output_ = e;
    w->decode_bytes_per_token_ += *kernels::DTypeBytes(e.dtype, e.rows * e.cols);
    w->matmul_params_ += e.rows * e.cols;
  } else {
    matrix("output.weight", &w->output_);
  }
  vector("output_norm.weight", &w->output_norm_);

  w->layers_.resize(static_cast<size_t>(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights& L = w->layers_[static_cast<size_t>(l)];
    const std::string p = absl::StrCat("blk.", l, ".");
    vector(p + "attn_norm.weight", &L.attn_norm);
    matrix(p + "attn_q.weight", &L.attn_q);
    matrix(p + "attn_k.weight", &L.attn_k);
    matrix(p + "attn_v.weight", &L.attn_v);
    if (c.qkv_bias) {
      vector(p + "attn_q.bias", &L.q_bias);
      vector(p + "attn_k.bias", &L.k_bias);
      vector(p + "attn_v.bias", &L.v_bias);
    }
    if (c.qk_norm) {
      vector(p + "attn_q_norm.weight", &L.q_norm);
      vector(p + "attn_k_norm.weight", &L.k_norm);
    }
    matrix(p + "attn_output.weight", &L.attn_output);
    if (c.attn_output_bias) vector(p + "attn_output.bias", &L.o_bias);
    vector(p + "ffn_norm.weight", &L.ffn_norm);
    matrix(p + "ffn_gate.weight", &L.ffn_gate);
    matrix(p + "ffn_up.weight", &L.ffn_up);
    matrix(p + "ffn_down.weight", &L.ffn_down);
    if (!status.ok()) return status;
    if (opts.fuse && L.attn_q.dtype == L.attn_k.dtype && L.attn_q.dtype == L.attn_v.dtype) {
      L.attn_qkv = w->Concatenate({L.attn_q, L.attn_k, L.attn_v});
      if (c.qkv_bias) {
        L.qkv_bias = w->ConcatenateVectors(
            {{L.q_bias, L.attn_q.rows}, {L.k_bias, L.attn_k.rows}, {L.v_bias, L.attn_v.rows}});
      }
    }
    if (opts.fuse && L.ffn_gate.dtype == L.ffn_up.dtype) {
      L.ffn_gate_up = w->Concatenate({L.ffn_gate, L.ffn_up});
    }
  }
  if (c.rope.has_freq_factors) {
    const float* f = nullptr;
    vector("rope_freqs.weight", &f);
    if (status.ok()) w->rope_freq_factors_.assign(f, f + c.rope.rotary_dims / 2);
  }
  if (!status.ok()) return status;
  return w;
}

}  // namespace mnemo::engine
