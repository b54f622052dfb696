// Fast PagedAttention: validation, the work split, run-time ISA dispatch, oneTBB over work
// items, and the portable (scalar) item kernel. The AVX2 and AVX-512 item kernels are in
// attention_avx2.cc / attention_avx512.cc; all three share attention_driver.inc.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/base/check.h"
#include "kernels/cpu/attention_internal.h"
#include "kernels/half.h"
#include "kernels/ops.h"
#include "tbb/blocked_range.h"
#include "tbb/parallel_for.h"

namespace mnemo::kernels {
namespace attention_internal {
namespace {

// Portable primitives: plain loops (the compiler may vectorize the element-wise ones; the
// dot product keeps 4 partial sums in a fixed order).
struct ScalarOps {
  static constexpr int kLanes = 4;

  static void LoadRows(const uint16_t* src, int64_t n, int hd, DType t, float* dst, int hdp) {
    for (int64_t r = 0; r < n; ++r) {
      const uint16_t* s = src + r * hd;
      float* o = dst + r * hdp;
      if (t == DType::kF16) {
        for (int d = 0; d < hd; ++d) o[d] = F16ToF32(s[d]);
      } else {
        for (int d = 0; d < hd; ++d) o[d] = BF16ToF32(s[d]);
      }
      for (int d = hd; d < hdp; ++d) o[d] = 0.0f;
    }
  }

  static float Dot(const float* a, const float* b, int hdp) {
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int d = 0; d < hdp; d += 4) {
      for (int i = 0; i < 4; ++i) s[i] += a[d + i] * b[d + i];
    }
    return (s[0] + s[1]) + (s[2] + s[3]);
  }

  static float Scores(const float* q, const float* k, int n, int hdp, float* s) {
    float mx = -std::numeric_limits<float>::infinity();
    for (int i = 0; i < n; ++i) {
      s[i] = Dot(q, k + static_cast<int64_t>(i) * hdp, hdp);
      mx = std::max(mx, s[i]);
    }
    return mx;
  }

  static float ExpShifted(const float* s, int n, float m, float* out) {
    float sum = 0.0f;
    for (int i = 0; i < n; ++i) {
      out[i] = std::exp(s[i] - m);
      sum += out[i];
    }
    return sum;
  }

  static void ScaleAddRows(float* acc, float alpha, const float* p, const float* v, int n,
                           int hdp) {
    if (alpha != 1.0f) {
      for (int d = 0; d < hdp; ++d) acc[d] *= alpha;
    }
    for (int i = 0; i < n; ++i) {
      const float* vi = v + static_cast<int64_t>(i) * hdp;
      for (int d = 0; d < hdp; ++d) acc[d] += p[i] * vi[d];
    }
  }
};

#include "kernels/cpu/attention_driver.inc"

}  // namespace

void AttendItemScalar(const AttentionParams& p, const WorkItem& w) { AttendItem<ScalarOps>(p, w); }

std::vector<WorkItem> PlanWork(const AttentionParams& p) {
  const KvLayout& l = p.kv.layout;
  MNEMO_CHECK(l.dtype == DType::kF16 || l.dtype == DType::kBF16) << "KV dtype must be f16/bf16";
  MNEMO_CHECK(p.layer >= 0 && p.layer < l.n_layers) << "layer " << p.layer;
  MNEMO_CHECK(l.head_dim > 0 && l.block_tokens > 0) << "empty KV layout";
  MNEMO_CHECK(l.n_kv_heads > 0 && p.n_heads % l.n_kv_heads == 0)
      << "n_heads " << p.n_heads << " is not a multiple of n_kv_heads " << l.n_kv_heads;
  const int group = p.n_heads / l.n_kv_heads;
  // Rows per item: enough to reuse each converted K/V tile across rows during prefill,
  // few enough that the item's states stay in L2 and a long prefill splits across cores.
  const int rows_per_item = std::clamp(48 / group, 1, 16);
  std::vector<WorkItem> items;
  for (int s = 0; s < p.seqs.n_seqs; ++s) {
    const int64_t n_blocks = p.seqs.table_start[s + 1] - p.seqs.table_start[s];
    MNEMO_CHECK(p.seqs.kv_len[s] >= 0 && p.seqs.kv_len[s] <= n_blocks * l.block_tokens)
        << "kv_len " << p.seqs.kv_len[s] << " exceeds the block table of sequence " << s;
#ifndef NDEBUG
    for (int64_t b = 0; b * l.block_tokens < p.seqs.kv_len[s]; ++b) {
      const int32_t slot = p.seqs.block_table[p.seqs.table_start[s] + b];
      MNEMO_DCHECK(slot >= 0 && slot < p.kv.n_slots) << "slot " << slot;
    }
#endif
    for (int32_t r0 = p.seqs.q_start[s]; r0 < p.seqs.q_start[s + 1]; r0 += rows_per_item) {
      const int32_t r1 = std::min(p.seqs.q_start[s + 1], r0 + rows_per_item);
      for (int g = 0; g < l.n_kv_heads; ++g) items.push_back(WorkItem{s, g, r0, r1});
    }
  }
  return items;
}

// One detection for every op: the dispatch of kernels/ops.h (capped by SetMaxCpuIsa).
CpuIsa BestCpuIsa() { return ActiveCpuIsa(); }

}  // namespace attention_internal

namespace {

using attention_internal::BestCpuIsa;
using attention_internal::ItemKernel;

bool Supported(CpuIsa isa) { return static_cast<int>(isa) <= static_cast<int>(BestCpuIsa()); }

ItemKernel KernelFor(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return attention_internal::AttendItemAvx512;
    case CpuIsa::kAvx2:
      return attention_internal::AttendItemAvx2;
    case CpuIsa::kScalar:
      break;
  }
  return attention_internal::AttendItemScalar;
}

void RunAttention(const AttentionParams& p, CpuIsa isa) {
  const std::vector<attention_internal::WorkItem> items = attention_internal::PlanWork(p);
  const ItemKernel kernel = KernelFor(isa);
  tbb::parallel_for(tbb::blocked_range<size_t>(0, items.size(), 1),
                    [&](const tbb::blocked_range<size_t>& range) {
                      for (size_t i = range.begin(); i != range.end(); ++i) kernel(p, items[i]);
                    });
}

}  // namespace

void PagedAttention(const AttentionParams& p) { RunAttention(p, BestCpuIsa()); }

bool PagedAttentionForIsa(const AttentionParams& p, CpuIsa isa) {
  if (!Supported(isa)) return false;
  RunAttention(p, isa);
  return true;
}

}  // namespace mnemo::kernels
