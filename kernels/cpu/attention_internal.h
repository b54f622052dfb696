// Internal to kernels/cpu/attention*.cc: how the fast PagedAttention splits a call into
// work items and the per-instruction-set item kernels (kernels/cpu/attention_driver.inc
// instantiated once per ISA).
//
// Work split: one item = (sequence, kv head, a chunk of that sequence's query rows). It
// computes every query head of that kv head's group for those rows, so each K/V tile is
// converted to f32 once and used by all of them. Items never share an output element and
// each output is reduced entirely inside one item, in key order: results do not depend on
// the split (see "batch invariance" in kernels/attention.h).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/attention.h"
#include "kernels/ops.h"

namespace mnemo::kernels::attention_internal {

struct WorkItem {
  int32_t seq = 0;
  int32_t kv_head = 0;
  int32_t row_begin = 0;  // flattened query rows [row_begin, row_end) of `seq`
  int32_t row_end = 0;
};

// The instruction-set path the attention kernels use: kernels/ops.h's ActiveCpuIsa.
CpuIsa BestCpuIsa();

// Validates p (MNEMO_CHECK) and lists its work items.
std::vector<WorkItem> PlanWork(const AttentionParams& p);

using ItemKernel = void (*)(const AttentionParams& p, const WorkItem& w);
void AttendItemScalar(const AttentionParams& p, const WorkItem& w);
void AttendItemAvx2(const AttentionParams& p, const WorkItem& w);
void AttendItemAvx512(const AttentionParams& p, const WorkItem& w);

// The allowed key positions [lo, hi] of a query row at `pos` (hi < lo: none).
inline void KeyRange(int64_t pos, int64_t kv_len, int window, int64_t* lo, int64_t* hi) {
  *lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
  *hi = pos < kv_len - 1 ? pos : kv_len - 1;
}

}  // namespace mnemo::kernels::attention_internal
