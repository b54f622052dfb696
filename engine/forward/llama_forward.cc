#include "engine/forward/llama_forward.h"

#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache/block_table.h"
#include "kernels/base/check.h"

namespace mnemo::engine {
namespace {

// A float buffer aligned to 64 bytes that grows (never shrinks) and keeps no contents.
class Buffer {
 public:
  float* Reserve(int64_t n) {
    if (n > capacity_) {
      const int64_t bytes = ((n * 4 + 63) / 64) * 64;
      data_.reset(static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(bytes))));
      MNEMO_CHECK(data_ != nullptr) << "out of memory for " << bytes << " bytes of scratch";
      capacity_ = n;
    }
    return data_.get();
  }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> data_;
  int64_t capacity_ = 0;
};

// x[r][c] += y[r][c] over a [rows, cols] block (both with stride cols).
void AddInPlace(float* x, const float* y, int64_t rows, int64_t cols) {
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, rows, 16),
                    [&](const tbb::blocked_range<int64_t>& r) {
                      for (int64_t i = r.begin(); i < r.end(); ++i) {
                        float* xi = x + i * cols;
                        const float* yi = y + i * cols;
                        for (int64_t c = 0; c < cols; ++c) xi[c] += yi[c];
                      }
                    });
}

}  // namespace

// The op implementations one LlamaForward calls: the fast twins or the references.
struct LlamaForward::Ops {
  void (*embedding)(const kernels::EmbeddingParams&);
  void (*rms_norm)(const kernels::RmsNormParams&);
  void (*rope)(const kernels::RopeParams&);
  void (*matmul)(const kernels::MatMulParams&);
  void (*swiglu)(const kernels::SwiGluParams&);
  void (*kv_write)(const kernels::KvWriteParams&);
  void (*attention)(const kernels::AttentionParams&);
};

const LlamaForward::Ops LlamaForward::kFastOps = {
    kernels::Embedding, kernels::RmsNorm, kernels::Rope,          kernels::MatMul,
    kernels::SwiGlu,    kernels::KvWrite, kernels::PagedAttention};
namespace {
// MatMulRef over blocks of output features in parallel: each output is computed by the same
// scalar code as one MatMulRef call over the whole matrix would compute it.
void ParallelMatMulRef(const kernels::MatMulParams& p) {
  const int64_t row_bytes = static_cast<int64_t>(*kernels::DTypeBytes(p.w.dtype, p.w.cols));
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, p.w.rows, 64),
                    [&](const tbb::blocked_range<int64_t>& r) {
                      kernels::MatMulParams q = p;
                      q.w.data = static_cast<const uint8_t*>(p.w.data) + r.begin() * row_bytes;
                      q.w.rows = r.end() - r.begin();
                      q.bias = p.bias != nullptr ? p.bias + r.begin() : nullptr;
                      q.y = p.y + r.begin();
                      kernels::MatMulRef(q);
                    });
}
}  // namespace

const LlamaForward::Ops LlamaForward::kReferenceOps = {
    kernels::EmbeddingRef, kernels::RmsNormRef, kernels::RopeRef,          ParallelMatMulRef,
    kernels::SwiGluRef,    kernels::KvWriteRef, kernels::PagedAttentionRef};

// Buffers reused across steps, sized to the largest step so far.
struct LlamaForward::Scratch {
  explicit Scratch(int threads) : arena(threads) {}
  tbb::task_arena arena;
  StepPlan plan;  // the current step
  kernels::BatchSeqs seqs;
  // Activations.
  Buffer x;         // [T, d_model] residual stream
  Buffer h;         // [T, max(d_model, q_dim)] normalised input / attention output
  Buffer qkv;       // [T, q_dim + 2 * kv_dim]: q | k | v of each row
  Buffer proj;      // [T, d_model]
  Buffer gate_up;   // [T, 2 * d_ff]: gate | up of each row
  Buffer out_rows;  // [n_logits, d_model]
};

LlamaForward::~LlamaForward() = default;

absl::StatusOr<std::unique_ptr<LlamaForward>> LlamaForward::Create(const Model& model,
                                                                   const ForwardOptions& opts) {
  if (opts.threads < 0) {
    return absl::InvalidArgumentError(absl::StrCat("threads must be >= 0, got ", opts.threads));
  }
  auto weights = ModelWeights::Create(
      model, {.f32_matrices = opts.reference_kernels, .fuse = opts.fuse_matrices});
  if (!weights.ok()) return weights.status();
  std::unique_ptr<LlamaForward> f(new LlamaForward());
  f->weights_ = std::move(*weights);
  f->threads_ = opts.threads > 0 ? opts.threads : tbb::info::default_concurrency();
  f->scratch_ = std::make_unique<Scratch>(f->threads_);
  f->ops_ = opts.reference_kernels ? &kReferenceOps : &kFastOps;

  f->rope_ = ModelRopeTable(f->config(), *f->weights_);
  return f;
}

absl::Status LlamaForward::Forward(const kernels::KvArenaView& kv,
                                   std::span<const SeqBatchEntry> batch, float* logits) {
  if (absl::Status st = ValidateBatch(config(), kv, batch); !st.ok()) return st;
  scratch_->plan.Build(batch);
  scratch_->seqs = scratch_->plan.Seqs();
  scratch_->arena.execute([&] { RunLayers(kv, logits); });
  return absl::OkStatus();
}

absl::Status LlamaForward::ObserveAttention(const kernels::KvArenaView& kv,
                                            const SeqBatchEntry& entry, int64_t observe_from,
                                            std::span<float> mass) {
  if (absl::Status st = ValidateObserve(entry, observe_from, mass.size()); !st.ok()) return st;
  SeqBatchEntry e = entry;
  e.logits = LogitRows::kNone;
  observe_from_ = observe_from;
  observe_mass_ = mass.data();
  const absl::Status st = Forward(kv, std::span<const SeqBatchEntry>(&e, 1), nullptr);
  observe_mass_ = nullptr;
  return st;
}

void LlamaForward::RunLayers(const kernels::KvArenaView& kv, float* logits) {
  Scratch& s = *scratch_;
  const ModelConfig& c = config();
  const ModelWeights& w = *weights_;
  const Ops& ops = *ops_;
  const int64_t T = s.plan.rows();
  const int64_t d = c.d_model;
  const int hd = c.head_dim;
  const int64_t q_dim = int64_t{c.n_heads} * hd;
  const int64_t kv_dim = int64_t{c.n_kv_heads} * hd;
  const int64_t ff = c.d_ff;
  float* x = s.x.Reserve(T * d);
  float* h = s.h.Reserve(T * std::max(d, q_dim));
  // Q, K and V of a row side by side (one fused product writes them all); gate and up too.
  const int64_t qkv_dim = q_dim + 2 * kv_dim;
  float* q = s.qkv.Reserve(T * qkv_dim);
  float* k = q + q_dim;
  float* v = k + kv_dim;
  float* proj = s.proj.Reserve(T * d);
  float* gate = s.gate_up.Reserve(T * 2 * ff);
  float* up = gate + ff;

  ops.embedding(
      {.table = w.token_embedding(), .ids = s.plan.tokens.data(), .n = T, .out = x, .ld_out = d});
  auto matmul = [&](const kernels::WeightView& m, const float* in, int64_t ld_in, const float* bias,
                    float* out, int64_t ld_out) {
    ops.matmul({.w = m, .x = in, .ldx = ld_in, .bias = bias, .y = out, .ldy = ld_out, .rows = T});
  };
  auto rope = [&](float* t, int n_heads) {
    ops.rope({.x = t,
              .ld = qkv_dim,
              .rows = T,
              .n_heads = n_heads,
              .head_dim = hd,
              .rotary_dims = c.rope.rotary_dims,
              .mode = c.rope.style == RopeStyle::kNeox ? kernels::RopeMode::kNeox
                                                       : kernels::RopeMode::kNormal,
              .positions = s.plan.positions.data(),
              .theta = rope_.theta.data(),
              .mscale = rope_.mscale});
  };
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layer(l);
    ops.rms_norm({.x = x,
                  .ldx = d,
                  .weight = L.attn_norm,
                  .y = h,
                  .ldy = d,
                  .rows = T,
                  .cols = d,
                  .eps = c.norm_eps});
    if (L.attn_qkv.data != nullptr) {
      matmul(L.attn_qkv, h, d, L.qkv_bias, q, qkv_dim);
    } else {
      matmul(L.attn_q, h, d, L.q_bias, q, qkv_dim);
      matmul(L.attn_k, h, d, L.k_bias, k, qkv_dim);
      matmul(L.attn_v, h, d, L.v_bias, v, qkv_dim);
    }
    if (c.qk_norm) {
      // Each head of a row is one RMSNorm row of head_dim values.
      for (int64_t t = 0; t < T; ++t) {
        ops.rms_norm({.x = q + t * qkv_dim,
                      .ldx = hd,
                      .weight = L.q_norm,
                      .y = q + t * qkv_dim,
                      .ldy = hd,
                      .rows = c.n_heads,
                      .cols = hd,
                      .eps = c.norm_eps});
        ops.rms_norm({.x = k + t * qkv_dim,
                      .ldx = hd,
                      .weight = L.k_norm,
                      .y = k + t * qkv_dim,
                      .ldy = hd,
                      .rows = c.n_kv_heads,
                      .cols = hd,
                      .eps = c.norm_eps});
      }
    }
    rope(q, c.n_heads);
    rope(k, c.n_kv_heads);
    ops.kv_write(
        {.kv = kv, .layer = l, .seqs = s.seqs, .k = k, .ldk = qkv_dim, .v = v, .ldv = qkv_dim});
    const kernels::AttentionParams attention = {.kv = kv,
                                                .layer = l,
                                                .seqs = s.seqs,
                                                .n_heads = c.n_heads,
                                                .q = q,
                                                .ldq = qkv_dim,
                                                .out = h,
                                                .ldo = q_dim,
                                                .scale = 1.0f / std::sqrt(static_cast<float>(hd)),
                                                .sliding_window = c.sliding_window};
    ops.attention(attention);
    if (observe_mass_ != nullptr) {
      kernels::AttentionMass(attention, static_cast<int>(observe_from_), observe_mass_);
    }
    matmul(L.attn_output, h, q_dim, L.o_bias, proj, d);
    AddInPlace(x, proj, T, d);

    ops.rms_norm({.x = x,
                  .ldx = d,
                  .weight = L.ffn_norm,
                  .y = h,
                  .ldy = d,
                  .rows = T,
                  .cols = d,
                  .eps = c.norm_eps});
    if (L.ffn_gate_up.data != nullptr) {
      matmul(L.ffn_gate_up, h, d, nullptr, gate, 2 * ff);
    } else {
      matmul(L.ffn_gate, h, d, nullptr, gate, 2 * ff);
      matmul(L.ffn_up, h, d, nullptr, up, 2 * ff);
    }
    ops.swiglu({.gate = gate,
                .ld_gate = 2 * ff,
                .up = up,
                .ld_up = 2 * ff,
                .out = gate,
                .ld_out = 2 * ff,
                .rows = T,
                .cols = ff});
    matmul(L.ffn_down, gate, 2 * ff, nullptr, proj, d);
    AddInPlace(x, proj, T, d);
  }

  const int64_t n_out = static_cast<int64_t>(s.plan.logit_rows.size());
  if (n_out == 0) return;
  float* fin = s.out_rows.Reserve(n_out * d);
  for (int64_t i = 0; i < n_out; ++i) {
    std::memcpy(fin + i * d, x + int64_t{s.plan.logit_rows[i]} * d, static_cast<size_t>(d) * 4);
  }
  ops.rms_norm({.x = fin,
                .ldx = d,
                .weight = w.output_norm(),
                .y = fin,
                .ldy = d,
                .rows = n_out,
                .cols = d,
                .eps = c.norm_eps});
  ops.matmul({.w = w.output(),
              .x = fin,
              .ldx = d,
              .bias = nullptr,
              .y = logits,
              .ldy = c.vocab_size,
              .rows = n_out});
}

}  // namespace mnemo::engine
