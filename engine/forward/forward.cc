#include "engine/forward/forward.h"

#include <charconv>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache/base/strings.h"
#include "cache/block_table.h"
#include "engine/forward/cuda_forward.h"
#include "engine/forward/llama_forward.h"

#ifdef MNEMO_HAVE_CUDA
#include "kernels/cuda/device.h"
#endif

namespace mnemo::engine {
namespace {

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

}  // namespace

absl::StatusOr<Device> Device::Parse(std::string_view text) {
  if (text == "cpu") return Device{};
  if (text == "cuda") return Device{.kind = Kind::kCuda, .index = 0};
  if (text.starts_with("cuda:")) {
    const std::string_view n = text.substr(5);
    int index = -1;
    const auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), index);
    if (ec == std::errc() && end == n.data() + n.size() && !n.empty() && index >= 0) {
      return Device{.kind = Kind::kCuda, .index = index};
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device: expected cpu, cuda or cuda:N, got '", AsAbsl(text), "'"));
}

std::string Device::ToString() const {
  return kind == Kind::kCpu ? "cpu" : absl::StrCat("cuda:", index);
}

kernels::KvLayout KvLayoutForModel(const ModelConfig& c, kernels::DType kv_dtype,
                                   int block_tokens) {
  kernels::KvLayout l;
  l.n_layers = c.n_layers;
  l.n_kv_heads = c.n_kv_heads;
  l.head_dim = c.head_dim;
  l.block_tokens = block_tokens;
  l.dtype = kv_dtype;
  return l;
}

int64_t LogitRowCount(std::span<const SeqBatchEntry> batch) {
  int64_t n = 0;
  for (const SeqBatchEntry& e : batch) {
    if (e.logits == LogitRows::kLast) n += 1;
    if (e.logits == LogitRows::kAll) n += static_cast<int64_t>(e.tokens.size());
  }
  return n;
}

absl::Status ValidateBatch(const ModelConfig& c, const kernels::KvArenaView& kv,
                           std::span<const SeqBatchEntry> batch) {
  const kernels::KvLayout want = KvLayoutForModel(c, kv.layout.dtype, kv.layout.block_tokens);
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

void StepPlan::Build(std::span<const SeqBatchEntry> batch) {
  StepPlan& s = *this;
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
}

kernels::BatchSeqs StepPlan::Seqs() const {
  kernels::BatchSeqs seqs;
  seqs.n_seqs = n_seqs();
  seqs.q_start = q_start.data();
  seqs.positions = positions.data();
  seqs.kv_len = kv_len.data();
  seqs.table_start = table_start.data();
  seqs.block_table = block_table.data();
  return seqs;
}

kernels::RopeTable ModelRopeTable(const ModelConfig& c, const ModelWeights& w) {
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
  const std::span<const float> ff = w.rope_freq_factors();
  rc.freq_factors = ff.empty() ? nullptr : ff.data();
  kernels::RopeTable table = kernels::ComputeRopeTable(rc);
  // The config's attn_factor is yarn's whole cos/sin scale (engine/model/model_config.h).
  table.mscale = c.rope.scaling == RopeScalingKind::kYarn ? c.rope.attn_factor : 1.0f;
  return table;
}

absl::StatusOr<std::unique_ptr<ForwardPass>> CreateForwardPass(const Model& model,
                                                               const ForwardOptions& opts) {
  if (opts.device.kind == Device::Kind::kCpu) {
    auto f = LlamaForward::Create(model, opts);
    if (!f.ok()) return f.status();
    return std::unique_ptr<ForwardPass>(std::move(*f));
  }
#ifdef MNEMO_HAVE_CUDA
  const int count = kernels::CudaDeviceCount();
  if (count == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", opts.device.ToString(),
                     ": no CUDA device is present (mnemo inspect --devices)"));
  }
  if (opts.device.index >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", opts.device.ToString(), ": this machine has ", count,
                     " CUDA device(s), cuda:0 .. cuda:", count - 1));
  }
  return CreateCudaForward(model, opts);
#else
  return absl::FailedPreconditionError(absl::StrCat(
      "device ", opts.device.ToString(), ": this mnemo was built without the CUDA backend"));
#endif
}

absl::Status ValidateObserve(const SeqBatchEntry& entry, int64_t observe_from, size_t mass_size) {
  const auto n = static_cast<int64_t>(entry.tokens.size());
  if (observe_from < 0 || observe_from >= n) {
    return absl::InvalidArgumentError(
        absl::StrCat("observe_from ", observe_from, " is outside the entry's ", n, " tokens"));
  }
  if (static_cast<int64_t>(mass_size) < entry.start_pos + n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention mass holds ", mass_size, " positions, the entry reaches ", entry.start_pos + n));
  }
  return absl::OkStatus();
}

}  // namespace mnemo::engine
