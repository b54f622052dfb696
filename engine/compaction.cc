// Context compaction of sessions (cache/compaction.h, docs/compaction.md): when a turn
// triggers one, and the window policy's KV rewrite — the kept rows gathered into fresh
// private blocks, the keys that moved re-rotated by the position shift — on the engine loop.
#include "cache/compaction.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/internal/engine_impl.h"
#include "kernels/half.h"
#include "kernels/ops.h"

namespace mnemo::engine {
namespace {

using cache::CompactionOptions;
using cache::CompactionPolicy;
using cache::TokenRange;

// Rotates the keys of `rows` rows of a host copy of a block by `shift` positions: RoPE at
// position `shift` composes with the rotation at p into the one at p + shift (the angles
// add; the magnitude scale, already in the stored key, is not applied again).
void RerotateKeys(const kernels::KvLayout& lay, const ModelConfig& c,
                  const kernels::RopeTable& rope, int64_t shift, int row0, int rows,
                  uint8_t* block) {
  if (rows <= 0 || shift == 0) return;
  const int width = lay.n_kv_heads * lay.head_dim;
  std::vector<float> k(static_cast<size_t>(rows) * width);
  const std::vector<int32_t> positions(static_cast<size_t>(rows), static_cast<int32_t>(shift));
  auto* elems = reinterpret_cast<uint16_t*>(block);
  const bool f16 = lay.dtype == kernels::DType::kF16;
  for (int layer = 0; layer < lay.n_layers; ++layer) {
    for (int r = 0; r < rows; ++r) {
      for (int h = 0; h < lay.n_kv_heads; ++h) {
        const uint16_t* src = elems + lay.ElemOffset(layer, 0, h, row0 + r);
        float* dst =
            k.data() + static_cast<size_t>(r) * width + static_cast<size_t>(h) * lay.head_dim;
        for (int d = 0; d < lay.head_dim; ++d) {
          dst[d] = f16 ? kernels::F16ToF32(src[d]) : kernels::BF16ToF32(src[d]);
        }
      }
    }
    kernels::Rope({.x = k.data(),
                   .ld = width,
                   .rows = rows,
                   .n_heads = lay.n_kv_heads,
                   .head_dim = lay.head_dim,
                   .rotary_dims = c.rope.rotary_dims,
                   .mode = c.rope.style == RopeStyle::kNeox ? kernels::RopeMode::kNeox
                                                            : kernels::RopeMode::kNormal,
                   .positions = positions.data(),
                   .theta = rope.theta.data(),
                   .mscale = 1.0f});
    for (int r = 0; r < rows; ++r) {
      for (int h = 0; h < lay.n_kv_heads; ++h) {
        uint16_t* dst = elems + lay.ElemOffset(layer, 0, h, row0 + r);
        const float* src =
            k.data() + static_cast<size_t>(r) * width + static_cast<size_t>(h) * lay.head_dim;
        for (int d = 0; d < lay.head_dim; ++d) {
          dst[d] = f16 ? kernels::F32ToF16(src[d]) : kernels::F32ToBF16(src[d]);
        }
      }
    }
  }
}

}  // namespace

CompactionOptions Engine::Impl::CompactionFor(const SessionState& s, const TurnParams* turn) const {
  if (turn != nullptr && turn->compaction) return *turn->compaction;
  const auto it = residency.find(s.id);
  if (it != residency.end() && it->second.compaction) return *it->second.compaction;
  return opts.compaction;
}

absl::Status Engine::Impl::PlanTurnCompaction(Seq& seq, int64_t history, int64_t n_delta) {
  const SessionState& s = *seq.session;
  const CompactionOptions o = CompactionFor(s, &seq.params);
  const int64_t n = history + n_delta;
  // Room for the reply (none for a turn that only computes KV).
  const int64_t reply = seq.generate ? std::max<int64_t>(seq.params.stop.max_tokens, 1) : 0;
  const auto overflow = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("the turn would overflow the context: ", history, " tokens of history + ",
                     n_delta, " new + max_tokens ", reply, " > context length ", ctx,
                     o.policy == CompactionPolicy::kNone ? " (compaction policy none)" : ""));
  };
  seq.compact_keep = 0;
  if (o.policy == CompactionPolicy::kNone) {
    return n + reply > ctx ? overflow() : absl::OkStatus();
  }
  // The limit that triggers (the smallest one passed) and what a compaction keeps of it.
  int64_t limit = ctx;
  bool trigger = n + reply > ctx;
  const int64_t token_limit =
      o.trigger_tokens > 0
          ? std::min(o.trigger_tokens, ctx)
          : static_cast<int64_t>(std::floor(o.trigger_fraction * static_cast<double>(ctx)));
  if (n > token_limit) {
    trigger = true;
    limit = std::min(limit, token_limit);
  }
  if (o.max_session_bytes > 0) {
    const int64_t bt = opts.block_tokens;
    const int64_t byte_tokens = o.max_session_bytes / pool->block_bytes() * bt;
    if ((n + reply + bt - 1) / bt * pool->block_bytes() > o.max_session_bytes) {
      trigger = true;
      limit = std::min(limit, byte_tokens);
    }
  }
  if (!trigger) return absl::OkStatus();
  // The turn itself, the sinks and one recent token must fit with the reply.
  const int64_t floor_keep = o.sink_tokens + 1 + n_delta;
  if (floor_keep + reply > ctx) return overflow();
  int64_t keep = static_cast<int64_t>(std::floor(o.target_fraction * static_cast<double>(limit)));
  keep = std::clamp<int64_t>(keep, floor_keep, ctx - reply);
  if (keep < n) seq.compact_keep = keep;
  return absl::OkStatus();
}

bool Engine::Impl::CompactForTurn(Seq& seq) {
  if (seq.compact_keep == 0 || seq.session == nullptr) return true;
  SessionState* s = seq.session;
  auto dropped = CompactSession(s, CompactionFor(*s, &seq.params), seq.compact_keep,
                                seq.rollback_tokens, static_cast<int64_t>(seq.rollback_turns));
  if (!dropped.ok() && absl::IsResourceExhausted(dropped.status())) return false;
  // Any other error cannot happen for a planned keep; the turn then runs uncompacted and
  // fails on the context length rather than here.
  seq.compact_keep = 0;
  if (dropped.ok()) {
    seq.rollback_tokens -= *dropped;
    seq.n_prompt -= *dropped;
    seq.result.usage.compacted_tokens += *dropped;
  }
  return true;
}

absl::StatusOr<int64_t> Engine::Impl::CompactSession(SessionState* s, const CompactionOptions& o,
                                                     int64_t keep, int64_t protect_from,
                                                     int64_t turns_seen) {
  KvSequence& kv = s->kv;
  const int64_t n = static_cast<int64_t>(kv.tokens.size());
  if (o.policy == CompactionPolicy::kNone) {
    return absl::InvalidArgumentError("compaction policy none: nothing to compact with");
  }
  const int64_t sinks = std::min<int64_t>(o.sink_tokens, std::max<int64_t>(keep - 1, 0));
  absl::StatusOr<TokenRange> cut = cache::WindowCut(n, sinks, keep);
  if (!cut.ok()) return cut.status();
  if (cut->end > protect_from) {
    return absl::InvalidArgumentError(
        absl::StrCat("keeping ", keep, " of ", n, " tokens would drop part of the new turn"));
  }
  const int64_t n_kv = kv.table.n_tokens();
  if (cut->end <= n_kv) {
    if (absl::Status st = RewriteKvWindow(s, *cut); !st.ok()) return st;
  } else {
    // The dropped tokens reach past the KV (it was dropped, or lags): keep the KV before the
    // cut; the kept tokens after it are computed again at their new positions.
    const int64_t kept = kv.table.Truncate(*pool, std::min(n_kv, cut->begin));
    kv.chain.resize(
        std::min<size_t>(kv.chain.size(), static_cast<size_t>(kept / opts.block_tokens)));
  }
  // The durable copy's blocks from the cut on no longer hold this KV (as after a truncation).
  Residency& r = Res(*s);
  const int64_t unchanged = cut->begin / opts.block_tokens;
  r.disk_valid_full = std::min(r.disk_valid_full, unchanged);
  r.trunc_floor = std::min(r.trunc_floor, unchanged);
  kv.tokens.erase(kv.tokens.begin() + cut->begin, kv.tokens.begin() + cut->end);
  const std::vector<TokenRange> dropped = {*cut};
  cache::MapTurns(dropped, &s->turns);
  s->compaction_log.push_back({.unix_us = absl::ToUnixMicros(Now()),
                               .policy = std::string(cache::CompactionPolicyName(o.policy)),
                               .dropped = dropped,
                               .summarized = {},
                               .position_shift = -cut->size(),
                               .turns = turns_seen});
  ++stats.compactions;
  stats.compacted_tokens += cut->size();
  MarkChanged(s);
  return cut->size();
}

absl::Status Engine::Impl::RewriteKvWindow(SessionState* s, TokenRange cut) {
  KvSequence& kv = s->kv;
  const kernels::KvLayout& lay = pool->layout();
  const int64_t bt = lay.block_tokens;
  const int64_t bb = pool->block_bytes();
  const int64_t n_kv = kv.table.n_tokens();
  const int64_t n_new = n_kv - cut.size();
  const int64_t same = cut.begin / bt;  // whole blocks before the cut: shared as they are
  const std::span<const cache::BlockId> old = kv.table.blocks();
  cache::BlockTable table;
  for (int64_t i = 0; i < same; ++i) {
    pool->Retain(old[static_cast<size_t>(i)]);
    table.AppendShared(*pool, old[static_cast<size_t>(i)]);
  }
  if (!table.Reserve(*pool, n_new)) {
    table.Release(*pool);
    return absl::ResourceExhaustedError(
        absl::StrCat("no free KV blocks for the compacted copy of session ", s->id.ToString()));
  }
  // Host copies of the old blocks the kept rows come from, read once each.
  std::vector<std::vector<uint8_t>> copies(old.size());
  auto source = [&](int64_t index) -> const uint8_t* {
    std::vector<uint8_t>& b = copies[static_cast<size_t>(index)];
    if (b.empty()) {
      b.resize(static_cast<size_t>(bb));
      pool->memory().Copy(b.data(), pool->BlockData(old[static_cast<size_t>(index)]),
                          static_cast<size_t>(bb));
    }
    return b.data();
  };
  const ModelConfig& c = forward->config();
  std::vector<uint8_t> out(static_cast<size_t>(bb));
  const size_t row_bytes = static_cast<size_t>(lay.head_dim) * 2;
  for (int64_t j = same; j < static_cast<int64_t>(table.blocks().size()); ++j) {
    std::fill(out.begin(), out.end(), uint8_t{0});
    int first_moved = static_cast<int>(bt);
    int rows = 0;
    for (int r = 0; r < bt && j * bt + r < n_new; ++r, ++rows) {
      const int64_t p_new = j * bt + r;
      const int64_t p_old = p_new < cut.begin ? p_new : p_new + cut.size();
      if (p_new >= cut.begin) first_moved = std::min(first_moved, r);
      const uint8_t* src = source(p_old / bt);
      const int src_row = static_cast<int>(p_old % bt);
      for (int layer = 0; layer < lay.n_layers; ++layer) {
        for (int kv_i = 0; kv_i < 2; ++kv_i) {
          for (int h = 0; h < lay.n_kv_heads; ++h) {
            std::memcpy(out.data() + lay.ElemOffset(layer, kv_i, h, r) * 2,
                        src + lay.ElemOffset(layer, kv_i, h, src_row) * 2, row_bytes);
          }
        }
      }
    }
    // Rows past the cut moved by -cut.size() positions; rows before it (sinks) did not.
    RerotateKeys(lay, c, forward->rope_table(), -cut.size(), first_moved, rows - first_moved,
                 out.data());
    pool->memory().Copy(pool->BlockData(table.blocks()[static_cast<size_t>(j)]), out.data(),
                        static_cast<size_t>(bb));
  }
  Account(*s);
  kv.table.Release(*pool);
  kv.table = std::move(table);
  kv.chain.resize(std::min<size_t>(kv.chain.size(), static_cast<size_t>(same)));
  return absl::OkStatus();
}

absl::StatusOr<SessionInfo> Engine::Compact(std::string_view tenant, std::string_view session_id,
                                            std::optional<cache::CompactionPolicy> policy,
                                            std::optional<int64_t> keep_tokens) {
  Impl& m = *impl_;
  auto done = m.Await<absl::StatusOr<SessionInfo>>(
      [&](absl::AnyInvocable<void(absl::StatusOr<SessionInfo>)> reply) {
        auto s = m.FindSession(tenant, session_id);
        if (!s.ok()) {
          reply(s.status());
          return;
        }
        if (m.Busy((*s)->id)) {
          reply(absl::FailedPreconditionError(
              absl::StrCat("session ", AsAbsl(session_id), " has a turn in flight")));
          return;
        }
        m.WhenReady(
            *s, Impl::Need::kResident,
            [&m, s = *s, policy, keep_tokens, session_id = std::string(session_id),
             reply = std::move(reply)](absl::Status ready) mutable {
              if (!ready.ok()) {
                reply(ready);
                return;
              }
              if (m.Busy(s->id)) {
                reply(absl::FailedPreconditionError(
                    absl::StrCat("session ", session_id, " has a turn in flight")));
                return;
              }
              cache::CompactionOptions o = m.CompactionFor(*s, nullptr);
              if (policy) o.policy = *policy;
              const int64_t n = static_cast<int64_t>(s->kv.tokens.size());
              const int64_t keep = keep_tokens.value_or(
                  static_cast<int64_t>(std::floor(o.target_fraction * static_cast<double>(n))));
              auto dropped = m.CompactSession(s, o, keep, n, static_cast<int64_t>(s->turns.size()));
              if (!dropped.ok()) {
                reply(dropped.status());
                return;
              }
              s->last_used = m.Now();
              m.MaybeWrite(s, /*force=*/false);
              reply(m.Info(*s));
            });
      });
  if (!done.ok()) return done;
  return SyncedInfo(tenant, session_id);
}

}  // namespace mnemo::engine
