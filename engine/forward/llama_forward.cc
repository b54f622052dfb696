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

kernels::RopeScaling ToKernel(RopeScalingKind k) {
  switch (k) {
    case RopeScalingKind::kNone:
      return kernels::RopeScaling::kNone;
    case RopeScalingKind::kLinear:
      return kernels::RopeScaling::kLinear;
    case RopeScalingKind::kLlama3:
      return kernels::RopeScaling::kLlama3;
    case RopeScalingKind::kYarn:
      return kernels::RopeScaling::kYarn;
  }
  return kernels::RopeScaling::kNone;
}

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
const LlamaForward::Ops LlamaForward::kReferenceOps = {
    kernels::EmbeddingRef, kernels::RmsNormRef, kernels::RopeRef,          kernels::MatMulRef,
    kernels::SwiGluRef,    kernels::KvWriteRef, kernels::PagedAttentionRef};

// Buffers reused across steps, sized to the largest step so far.
struct LlamaForward::Scratch {
  explicit Scratch(int threads) : arena(threads) {}
  tbb::task_arena arena;
  // The plan of the current step.
  std::vector<int32_t> tokens;       // [T]
  std::vector<int32_t> q_start;      // [n_seqs + 1]
  std::vector<int32_t> positions;    // [T]
  std::vector<int32_t> kv_len;       // [n_seqs]
  std::vector<int32_t> table_start;  // [n_seqs + 1]
  std::vector<int32_t> block_table;
  std::vector<int32_t> logit_rows;  // rows of x whose logits are wanted
  kernels::BatchSeqs seqs;
  int64_t rows = 0;
  // Activations.
  Buffer x;         // [T, d_model] residual stream
  Buffer h;         // [T, max(d_model, q_dim)] normalised input / attention output
  Buffer q;         // [T, q_dim]
  Buffer k;         // [T, kv_dim]
  Buffer v;         // [T, kv_dim]
  Buffer proj;      // [T, d_model]
  Buffer gate;      // [T, d_ff]
  Buffer up;        // [T, d_ff]
  Buffer out_rows;  // [n_logits, d_model]
};

LlamaForward::~LlamaForward() = default;

absl::StatusOr<std::unique_ptr<LlamaForward>> LlamaForward::Create(const Model& model,
                                                                   const ForwardOptions& opts) {
  if (opts.threads < 0) {
    return absl::InvalidArgumentError(absl::StrCat("threads must be >= 0, got ", opts.threads));
  }
  auto weights = ModelWeights::Create(model);
  if (!weights.ok()) return weights.status();
  std::unique_ptr<LlamaForward> f(new LlamaForward());
  f->weights_ = std::move(*weights);
  f->threads_ = opts.threads > 0 ? opts.threads : tbb::info::default_concurrency();
  f->scratch_ = std::make_unique<Scratch>(f->threads_);
  f->ops_ = opts.reference_kernels ? &kReferenceOps : &kFastOps;

  const ModelConfig& c = f->config();
  kernels::RopeFreqConfig rc;
  rc.base = c.rope.base;
  rc.rotary_dims = c.rope.rotary_dims;
  rc.scaling = ToKernel(c.rope.scaling);
  // GGUF llama3 models store the llama3 divisors precomputed (rope_freqs): apply those only.
  if (c.rope.has_freq_factors && c.rope.scaling == RopeScalingKind::kLlama3) {
    rc.scaling = kernels::RopeScaling::kNone;
  }
  rc.factor = c.rope.factor;
  rc.original_context = c.rope.original_context > 0 ? c.rope.original_context : c.context_length;
  rc.low_freq_factor = c.rope.low_freq_factor;
  rc.high_freq_factor = c.rope.high_freq_factor;
  rc.beta_fast = c.rope.beta_fast;
  rc.beta_slow = c.rope.beta_slow;
  const std::span<const float> ff = f->weights_->rope_freq_factors();
  rc.freq_factors = ff.empty() ? nullptr : ff.data();
  f->rope_ = kernels::ComputeRopeTable(rc);
  // The config's attn_factor is yarn's whole cos/sin scale (engine/model/model_config.h).
  f->rope_.mscale = c.rope.scaling == RopeScalingKind::kYarn ? c.rope.attn_factor : 1.0f;
  return f;
}

kernels::KvLayout LlamaForward::KvLayoutFor(kernels::DType kv_dtype, int block_tokens) const {
  kernels::KvLayout l;
  l.n_layers = config().n_layers;
  l.n_kv_heads = config().n_kv_heads;
  l.head_dim = config().head_dim;
  l.block_tokens = block_tokens;
  l.dtype = kv_dtype;
  return l;
}

int64_t LlamaForward::LogitRowCount(std::span<const SeqBatchEntry> batch) {
  int64_t n = 0;
  for (const SeqBatchEntry& e : batch) {
    if (e.logits == LogitRows::kLast) n += 1;
    if (e.logits == LogitRows::kAll) n += static_cast<int64_t>(e.tokens.size());
  }
  return n;
}

absl::Status LlamaForward::Validate(const kernels::KvArenaView& kv,
                                    std::span<const SeqBatchEntry> batch) const {
  const ModelConfig& c = config();
  const kernels::KvLayout want = KvLayoutFor(kv.layout.dtype, kv.layout.block_tokens);
  if (kv.layout.n_layers != want.n_layers || kv.layout.n_kv_heads != want.n_kv_heads ||
      kv.layout.head_dim != want.head_dim || kv.layout.block_tokens <= 0 ||
      (kv.layout.dtype != kernels::DType::kF16 && kv.layout.dtype != kernels::DType::kBF16)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KV layout (layers %d, kv heads %d, head dim %d, block %d) does not match the model "
        "(layers %d, kv heads %d, head dim %d)",
        kv.layout.n_layers, kv.layout.n_kv_heads, kv.layout.head_dim, kv.layout.block_tokens,
        want.n_layers, want.n_kv_heads, want.head_dim));
  }
  if (batch.empty()) return absl::InvalidArgumentError("empty batch");
  for (size_t s = 0; s < batch.size(); ++s) {
    const SeqBatchEntry& e = batch[s];
    if (e.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("batch entry ", s, " has no tokens"));
    }
    if (e.start_pos < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch entry ", s, " starts at negative position ", e.start_pos));
    }
    const int64_t end = int64_t{e.start_pos} + static_cast<int64_t>(e.tokens.size());
    if (end > c.context_length) {
      return absl::InvalidArgumentError(absl::StrCat("batch entry ", s, " reaches position ", end,
                                                     ", past the model's context length ",
                                                     c.context_length));
    }
    for (TokenId t : e.tokens) {
      if (t < 0 || t >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("batch entry ", s, ": token id ", t,
                                                       " outside the vocabulary [0, ", c.vocab_size,
                                                       ")"));
      }
    }
    if (e.table == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("batch entry ", s, " has no block table"));
    }
    const int64_t capacity =
        static_cast<int64_t>(e.table->blocks().size()) * kv.layout.block_tokens;
    if (capacity < end) {
      return absl::FailedPreconditionError(
          absl::StrCat("batch entry ", s, ": its block table holds ", capacity,
                       " tokens, the step needs ", end, " (reserve blocks first)"));
    }
    for (const cache::BlockId& b : e.table->blocks()) {
      if (b.value < 0 || b.value >= kv.n_slots) {
        return absl::InvalidArgumentError(
            absl::StrCat("batch entry ", s, ": block ", b.value, " outside the arena"));
      }
    }
  }
  return absl::OkStatus();
}

void LlamaForward::Plan(std::span<const SeqBatchEntry> batch) {
  Scratch& s = *scratch_;
  s.tokens.clear();
  s.positions.clear();
  s.block_table.clear();
  s.logit_rows.clear();
  s.q_start.assign(1, 0);
  s.table_start.assign(1, 0);
  s.kv_len.clear();
  for (const SeqBatchEntry& e : batch) {
    const int32_t first_row = static_cast<int32_t>(s.tokens.size());
    const int32_t n = static_cast<int32_t>(e.tokens.size());
    s.tokens.insert(s.tokens.end(), e.tokens.begin(), e.tokens.end());
    for (int32_t i = 0; i < n; ++i) s.positions.push_back(e.start_pos + i);
    s.q_start.push_back(first_row + n);
    s.kv_len.push_back(e.start_pos + n);
    for (const cache::BlockId& b : e.table->blocks()) s.block_table.push_back(b.value);
    s.table_start.push_back(static_cast<int32_t>(s.block_table.size()));
    if (e.logits == LogitRows::kLast) s.logit_rows.push_back(first_row + n - 1);
    if (e.logits == LogitRows::kAll) {
      for (int32_t i = 0; i < n; ++i) s.logit_rows.push_back(first_row + i);
    }
  }
  s.rows = static_cast<int64_t>(s.tokens.size());
  s.seqs.n_seqs = static_cast<int>(batch.size());
  s.seqs.q_start = s.q_start.data();
  s.seqs.positions = s.positions.data();
  s.seqs.kv_len = s.kv_len.data();
  s.seqs.table_start = s.table_start.data();
  s.seqs.block_table = s.block_table.data();
}

absl::Status LlamaForward::Forward(const kernels::KvArenaView& kv,
                                   std::span<const SeqBatchEntry> batch, float* logits) {
  if (absl::Status st = Validate(kv, batch); !st.ok()) return st;
  Plan(batch);
  scratch_->arena.execute([&] { RunLayers(kv, logits); });
  return absl::OkStatus();
}

void LlamaForward::RunLayers(const kernels::KvArenaView& kv, float* logits) {
  Scratch& s = *scratch_;
  const ModelConfig& c = config();
  const ModelWeights& w = *weights_;
  const Ops& ops = *ops_;
  const int64_t T = s.rows;
  const int64_t d = c.d_model;
  const int hd = c.head_dim;
  const int64_t q_dim = int64_t{c.n_heads} * hd;
  const int64_t kv_dim = int64_t{c.n_kv_heads} * hd;
  const int64_t ff = c.d_ff;
  float* x = s.x.Reserve(T * d);
  float* h = s.h.Reserve(T * std::max(d, q_dim));
  float* q = s.q.Reserve(T * q_dim);
  float* k = s.k.Reserve(T * kv_dim);
  float* v = s.v.Reserve(T * kv_dim);
  float* proj = s.proj.Reserve(T * d);
  float* gate = s.gate.Reserve(T * ff);
  float* up = s.up.Reserve(T * ff);

  ops.embedding(
      {.table = w.token_embedding(), .ids = s.tokens.data(), .n = T, .out = x, .ld_out = d});
  auto matmul = [&](const kernels::WeightView& m, const float* in, int64_t ld_in, const float* bias,
                    float* out, int64_t ld_out) {
    ops.matmul({.w = m, .x = in, .ldx = ld_in, .bias = bias, .y = out, .ldy = ld_out, .rows = T});
  };
  auto rope = [&](float* t, int n_heads) {
    ops.rope({.x = t,
              .ld = int64_t{n_heads} * hd,
              .rows = T,
              .n_heads = n_heads,
              .head_dim = hd,
              .rotary_dims = c.rope.rotary_dims,
              .mode = c.rope.style == RopeStyle::kNeox ? kernels::RopeMode::kNeox
                                                       : kernels::RopeMode::kNormal,
              .positions = s.positions.data(),
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
    matmul(L.attn_q, h, d, L.q_bias, q, q_dim);
    matmul(L.attn_k, h, d, L.k_bias, k, kv_dim);
    matmul(L.attn_v, h, d, L.v_bias, v, kv_dim);
    if (c.qk_norm) {
      // Each head of each row is one RMSNorm row of head_dim values.
      ops.rms_norm({.x = q,
                    .ldx = hd,
                    .weight = L.q_norm,
                    .y = q,
                    .ldy = hd,
                    .rows = T * c.n_heads,
                    .cols = hd,
                    .eps = c.norm_eps});
      ops.rms_norm({.x = k,
                    .ldx = hd,
                    .weight = L.k_norm,
                    .y = k,
                    .ldy = hd,
                    .rows = T * c.n_kv_heads,
                    .cols = hd,
                    .eps = c.norm_eps});
    }
    rope(q, c.n_heads);
    rope(k, c.n_kv_heads);
    ops.kv_write(
        {.kv = kv, .layer = l, .seqs = s.seqs, .k = k, .ldk = kv_dim, .v = v, .ldv = kv_dim});
    ops.attention({.kv = kv,
                   .layer = l,
                   .seqs = s.seqs,
                   .n_heads = c.n_heads,
                   .q = q,
                   .ldq = q_dim,
                   .out = h,
                   .ldo = q_dim,
                   .scale = 1.0f / std::sqrt(static_cast<float>(hd)),
                   .sliding_window = c.sliding_window});
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
    matmul(L.ffn_gate, h, d, nullptr, gate, ff);
    matmul(L.ffn_up, h, d, nullptr, up, ff);
    ops.swiglu({.gate = gate,
                .ld_gate = ff,
                .up = up,
                .ld_up = ff,
                .out = gate,
                .ld_out = ff,
                .rows = T,
                .cols = ff});
    matmul(L.ffn_down, gate, ff, nullptr, proj, d);
    AddInPlace(x, proj, T, d);
  }

  const int64_t n_out = static_cast<int64_t>(s.logit_rows.size());
  if (n_out == 0) return;
  float* fin = s.out_rows.Reserve(n_out * d);
  for (int64_t i = 0; i < n_out; ++i) {
    std::memcpy(fin + i * d, x + int64_t{s.logit_rows[i]} * d, static_cast<size_t>(d) * 4);
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
