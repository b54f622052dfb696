// Context compaction of sessions (cache/compaction.h, docs/compaction.md), on the engine loop:
// when a turn triggers one; the window and score policies' KV rewrite (the kept rows
// gathered into fresh private blocks, each moved key re-rotated by its position shift); the
// score policy's probe of the attention an observation window gives the other tokens; and
// the summarize policy's summary, written by the model on the loop, and rebuild.
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
#include "absl/strings/ascii.h"
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

// Rotates the keys of rows row0, row0 + 1, ... of a host copy of a block by shifts[0],
// shifts[1], ... positions: RoPE at position `shift` composes with the rotation at p into the
// one at p + shift (the angles add; the magnitude scale, already in the stored key, is not
// applied again).
void RerotateKeys(const kernels::KvLayout& lay, const ModelConfig& c,
                  const kernels::RopeTable& rope, std::span<const int32_t> shifts, int row0,
                  uint8_t* block) {
  const int rows = static_cast<int>(shifts.size());
  if (rows == 0) return;
  const int width = lay.n_kv_heads * lay.head_dim;
  std::vector<float> k(static_cast<size_t>(rows) * width);
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
                   .positions = shifts.data(),
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
  // The turn itself and what the policy always keeps must fit with the reply: the sinks and
  // a recent token; for score, its observation window from a block boundary and the tokens
  // whose KV lags (a few, after a reply) — the window is the turn's end when the turn is
  // longer; for summarize, the head and the summary's room.
  int64_t floor_keep = o.sink_tokens + 1 + n_delta;
  if (o.policy == CompactionPolicy::kScore) {
    floor_keep = o.sink_tokens + n_delta + o.observe_tokens + opts.block_tokens + kLagTokens;
  } else if (o.policy == CompactionPolicy::kSummarize) {
    floor_keep = SummaryHead(s, o) + SummaryRoom(s, o) + n_delta + 1;
  }
  if (floor_keep + reply > ctx) return overflow();
  int64_t keep = static_cast<int64_t>(std::floor(o.target_fraction * static_cast<double>(limit)));
  keep = std::clamp<int64_t>(keep, floor_keep, ctx - reply);
  if (keep < n) seq.compact_keep = keep;
  return absl::OkStatus();
}

absl::Status Engine::Impl::CompactForTurn(Seq& seq) {
  if (seq.compact_keep == 0 || seq.session == nullptr) return absl::OkStatus();
  SessionState* s = seq.session;
  auto done = CompactSession(s, CompactionFor(*s, &seq.params), seq.compact_keep,
                             seq.rollback_tokens, static_cast<int64_t>(seq.rollback_turns));
  if (!done.ok()) return done.status();
  seq.compact_keep = 0;
  seq.rollback_tokens -= done->removed;
  seq.n_prompt -= done->removed;
  seq.result.usage.compacted_tokens += done->compacted;
  return absl::OkStatus();
}

absl::StatusOr<Engine::Impl::Compacted> Engine::Impl::CompactSession(SessionState* s,
                                                                     const CompactionOptions& o,
                                                                     int64_t keep,
                                                                     int64_t protect_from,
                                                                     int64_t turns_seen) {
  SessionState* kept = nullptr;
  if (o.keep_history && o.policy != CompactionPolicy::kNone) {
    // The state before the turn that compacts (all of it for an explicit compaction).
    absl::StatusOr<SessionState*> k = CopySession(*s, turns_seen, KeptStateTenant(s->tenant));
    if (!k.ok()) return k.status();
    kept = *k;
    MaybeWrite(kept, /*force=*/false);
  }
  absl::StatusOr<Compacted> done = CompactWithPolicy(s, o, keep, protect_from, turns_seen);
  if (kept == nullptr) return done;
  if (!done.ok()) {
    DeleteSessionNow(kept, absl::CancelledError("the compaction it was kept for failed"));
    return done;
  }
  s->compaction_log.back().kept = kept->id.ToString();
  // Down to the lowest tier there is (it stays on the device tier without one), once its
  // first write is done.
  if (disk || host) {
    const StorageTier to = disk ? StorageTier::kDisk : StorageTier::kHost;
    WhenReady(kept, Need::kNoIo, [this, kept, to](absl::Status ready) {
      if (ready.ok()) StartSpill(kept, to, [](absl::Status) {});
    });
  }
  return done;
}

std::string KeptStateTenant(std::string_view tenant) {
  return absl::StrCat("\x1fkept:", AsAbsl(tenant));
}

SessionState* Engine::Impl::FindKeptState(const SessionState& s, const cache::CompactionRecord& r) {
  if (r.kept.empty()) return nullptr;
  const std::optional<SessionId> id = SessionId::Parse(r.kept);
  if (!id) return nullptr;
  SessionState* k = sessions.Find(KeptStateTenant(s.tenant), *id);
  return k != nullptr && !Res(*k).deleting ? k : nullptr;
}

void Engine::Impl::DeleteKeptStates(const SessionState& s, size_t from) {
  for (size_t i = from; i < s.compaction_log.size(); ++i) {
    if (SessionState* k = FindKeptState(s, s.compaction_log[i]); k != nullptr) {
      DeleteSessionNow(k, absl::NotFoundError("the session it was kept for moved on"));
    }
  }
}

std::optional<size_t> Engine::Impl::KeptStateFor(const SessionState& s, int64_t turns) {
  const std::vector<cache::CompactionRecord>& log = s.compaction_log;
  for (size_t k = log.size(); k-- > 0;) {
    const int64_t floor = k == 0 ? 0 : log[k - 1].turns;
    if (floor <= turns && turns <= log[k].turns && FindKeptState(s, log[k]) != nullptr) return k;
  }
  return std::nullopt;
}

absl::Status Engine::Impl::RestoreKeptState(SessionState* s, size_t k) {
  SessionState* kept = FindKeptState(*s, s->compaction_log[k]);
  if (kept == nullptr || !Resident(*kept) || !Resident(*s)) {
    return absl::AbortedError("the kept state moved while it was restored; try again");
  }
  std::optional<cache::BlockTable> table = kept->kv.table.Fork(*pool);
  if (!table) return absl::ResourceExhaustedError("no free KV block to restore the kept state");
  DeleteKeptStates(*s, k + 1);
  Account(*s);
  s->kv.table.Release(*pool);
  s->kv.table = std::move(*table);
  s->kv.tokens = kept->kv.tokens;
  s->kv.chain = kept->kv.chain;
  s->turns = kept->turns;
  s->messages = kept->messages;
  s->rng_state = kept->rng_state;
  s->compaction_log.resize(k);  // the kept state's own log
  DeleteSessionNow(kept, absl::NotFoundError("restored into the session it was kept for"));
  Residency& r = Res(*s);
  r.disk_valid_full = 0;
  r.trunc_floor = 0;
  MarkChanged(s);
  return absl::OkStatus();
}

absl::StatusOr<Engine::Impl::Compacted> Engine::Impl::CompactWithPolicy(SessionState* s,
                                                                        const CompactionOptions& o,
                                                                        int64_t keep,
                                                                        int64_t protect_from,
                                                                        int64_t turns_seen) {
  KvSequence& kv = s->kv;
  const int64_t n = static_cast<int64_t>(kv.tokens.size());
  std::vector<TokenRange> dropped;
  switch (o.policy) {
    case CompactionPolicy::kNone:
      return absl::InvalidArgumentError("compaction policy none: nothing to compact with");
    case CompactionPolicy::kSummarize:
      return SummarizeSession(s, o, keep, protect_from, turns_seen);
    case CompactionPolicy::kWindow: {
      const int64_t sinks = std::min<int64_t>(o.sink_tokens, std::max<int64_t>(keep - 1, 0));
      absl::StatusOr<TokenRange> cut = cache::WindowCut(n, sinks, keep);
      if (!cut.ok()) return cut.status();
      dropped = {*cut};
      break;
    }
    case CompactionPolicy::kScore: {
      auto ranges = ScoreRanges(s, o, keep);
      if (!ranges.ok()) return ranges.status();
      dropped = std::move(*ranges);
      break;
    }
  }
  if (dropped.empty()) return absl::InvalidArgumentError("the compaction would drop nothing");
  if (dropped.back().end > protect_from) {
    return absl::InvalidArgumentError(
        absl::StrCat("keeping ", keep, " of ", n, " tokens would drop part of the new turn"));
  }
  const int64_t n_kv = kv.table.n_tokens();
  if (dropped.back().end <= n_kv) {
    if (absl::Status st = RewriteKv(s, dropped); !st.ok()) return st;
  } else {
    // The dropped tokens reach past the KV (it was dropped, or lags): keep the KV before the
    // first dropped token; the kept tokens after it are computed again at their new positions.
    const int64_t kept = kv.table.Truncate(*pool, std::min(n_kv, dropped.front().begin));
    kv.chain.resize(
        std::min<size_t>(kv.chain.size(), static_cast<size_t>(kept / opts.block_tokens)));
  }
  int64_t total = 0;
  for (const TokenRange& r : dropped) total += r.size();
  for (auto r = dropped.rbegin(); r != dropped.rend(); ++r) {
    kv.tokens.erase(kv.tokens.begin() + r->begin, kv.tokens.begin() + r->end);
  }
  cache::MapTurns(dropped, &s->turns);
  LogCompaction(s, {.unix_us = absl::ToUnixMicros(Now()),
                    .policy = std::string(cache::CompactionPolicyName(o.policy)),
                    .dropped = std::move(dropped),
                    .summarized = {},
                    .position_shift = -total,
                    .turns = turns_seen});
  return Compacted{.removed = total, .compacted = total};
}

void Engine::Impl::LogCompaction(SessionState* s, cache::CompactionRecord record) {
  // The durable copy's blocks from the first changed token on no longer hold this KV (as
  // after a truncation).
  int64_t first = static_cast<int64_t>(s->kv.tokens.size());
  for (const auto* ranges : {&record.dropped, &record.summarized}) {
    if (!ranges->empty()) first = std::min(first, ranges->front().begin);
  }
  Residency& r = Res(*s);
  const int64_t unchanged = first / opts.block_tokens;
  r.disk_valid_full = std::min(r.disk_valid_full, unchanged);
  r.trunc_floor = std::min(r.trunc_floor, unchanged);
  ++stats.compactions;
  stats.compacted_tokens += cache::CompactedTokens(std::span(&record, 1));
  s->compaction_log.push_back(std::move(record));
  MarkChanged(s);
}

absl::StatusOr<std::vector<TokenRange>> Engine::Impl::ScoreRanges(SessionState* s,
                                                                  const CompactionOptions& o,
                                                                  int64_t keep) {
  KvSequence& kv = s->kv;
  const int64_t bt = opts.block_tokens;
  const int64_t n = static_cast<int64_t>(kv.tokens.size());
  const int64_t n_kv = kv.table.n_tokens();
  // The observation window is the last `observe` tokens of the history — at a turn's
  // compaction, the end of the new turn, whose KV is not computed yet (SnapKV: the question
  // picks what to keep). The probe computes the tokens from p0 (a block boundary within the
  // KV) to the end in fresh blocks, so that the window's queries score every token before.
  const int64_t end = std::min(n, ctx);
  const int64_t observe = std::min(o.observe_tokens, end);
  const int64_t p0 = std::min((end - observe) / bt, n_kv / bt) * bt;
  const int64_t sinks = std::min(o.sink_tokens, p0);
  const int64_t recent = n - p0;
  if (observe == 0 || sinks + recent > keep) {
    return absl::InvalidArgumentError(absl::StrCat(
        "keeping ", keep, " of ", n, " tokens leaves no room to choose: the score policy keeps ",
        sinks, " sink tokens and the last ", recent, " (its observation window of ", observe,
        " from a block boundary, and the tokens whose KV is not computed yet)"));
  }
  cache::BlockTable probe;
  for (int64_t i = 0; i < p0 / bt; ++i) {
    pool->Retain(kv.table.blocks()[static_cast<size_t>(i)]);
    probe.AppendShared(*pool, kv.table.blocks()[static_cast<size_t>(i)]);
  }
  if (!probe.Reserve(*pool, end)) {
    probe.Release(*pool);
    return absl::ResourceExhaustedError(
        absl::StrCat("no free KV blocks for the score probe of session ", s->id.ToString()));
  }
  std::vector<float> mass(static_cast<size_t>(n), 0.0f);
  const SeqBatchEntry entry = {.tokens = std::span<const TokenId>(kv.tokens).subspan(
                                   static_cast<size_t>(p0), static_cast<size_t>(end - p0)),
                               .start_pos = static_cast<int32_t>(p0),
                               .table = &probe,
                               .logits = LogitRows::kNone};
  const absl::Status st = forward->ObserveAttention(pool->view(), entry, end - observe - p0, mass);
  probe.Release(*pool);
  if (!st.ok()) return st;
  stats.tokens_computed += end - p0;
  return cache::ScoreCut(mass, sinks, recent, keep);
}

absl::Status Engine::Impl::RewriteKv(SessionState* s, std::span<const TokenRange> dropped) {
  KvSequence& kv = s->kv;
  const kernels::KvLayout& lay = pool->layout();
  const int64_t bt = lay.block_tokens;
  const int64_t bb = pool->block_bytes();
  const int64_t n_kv = kv.table.n_tokens();
  const int64_t same = dropped.front().begin / bt;  // whole blocks before it: shared as they are
  // Where each new position from the first rewritten block on comes from.
  std::vector<int64_t> from;
  for (int64_t p = same * bt, i = 0; p < n_kv; ++p) {
    while (i < static_cast<int64_t>(dropped.size()) && p >= dropped[static_cast<size_t>(i)].end) {
      ++i;
    }
    if (i < static_cast<int64_t>(dropped.size()) && p >= dropped[static_cast<size_t>(i)].begin) {
      continue;
    }
    from.push_back(p);
  }
  const int64_t n_new = same * bt + static_cast<int64_t>(from.size());
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
  std::vector<int32_t> shifts;
  const size_t row_bytes = static_cast<size_t>(lay.head_dim) * 2;
  for (int64_t j = same; j < static_cast<int64_t>(table.blocks().size()); ++j) {
    std::fill(out.begin(), out.end(), uint8_t{0});
    shifts.clear();
    int first_moved = static_cast<int>(bt);
    for (int r = 0; r < bt && j * bt + r < n_new; ++r) {
      const int64_t p_new = j * bt + r;
      const int64_t p_old = from[static_cast<size_t>(p_new - same * bt)];
      if (p_old != p_new && first_moved == bt) first_moved = r;
      if (first_moved < bt) shifts.push_back(static_cast<int32_t>(p_new - p_old));
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
    // Rows before the first dropped token (sinks) kept their positions; each one after it
    // moved back by the tokens dropped before it.
    RerotateKeys(lay, c, forward->rope_table(), shifts, first_moved, out.data());
    pool->memory().Copy(pool->BlockData(table.blocks()[static_cast<size_t>(j)]), out.data(),
                        static_cast<size_t>(bb));
  }
  Account(*s);
  kv.table.Release(*pool);
  kv.table = std::move(table);
  kv.chain.resize(std::min<size_t>(kv.chain.size(), static_cast<size_t>(same)));
  return absl::OkStatus();
}

int64_t Engine::Impl::SummaryHead(const SessionState& s, const CompactionOptions& o) const {
  const auto n = static_cast<int64_t>(s.kv.tokens.size());
  if (tmpl.family() == ChatTemplateFamily::kUnknown || s.messages.empty()) {
    return std::min(o.sink_tokens, n);
  }
  return s.messages.front().role == "system" && s.turns.size() > 1 && s.turns[1].message_start == 1
             ? s.turns[1].token_start
             : 0;
}

int64_t Engine::Impl::SummaryRoom(const SessionState& s, const CompactionOptions& o) const {
  // The framing of an empty summary, and a few tokens for the text to tokenize differently
  // inside it than alone.
  return o.summary_max_tokens + static_cast<int64_t>(FrameSummary(s, "").size()) + 4;
}

absl::StatusOr<Engine::Impl::Compacted> Engine::Impl::SummarizeSession(SessionState* s,
                                                                       const CompactionOptions& o,
                                                                       int64_t keep,
                                                                       int64_t protect_from,
                                                                       int64_t turns_seen) {
  KvSequence& kv = s->kv;
  const int64_t n = static_cast<int64_t>(kv.tokens.size());
  const int64_t head = SummaryHead(*s, o);
  // The summary and its framing take at most `room` tokens of the rebuilt history; the
  // oldest turns from the head on are summarized, up to a turn boundary where one fits.
  const int64_t room = SummaryRoom(*s, o);
  const int64_t bound = n - (keep - head - room);
  if (keep - head - room < 0 || bound > protect_from || bound <= head) {
    return absl::InvalidArgumentError(absl::StrCat(
        "keeping ", keep, " of ", n, " tokens leaves no room to summarize: the head (", head,
        " tokens), up to ", room, " tokens of summary and the new turn must fit"));
  }
  // The model reads the history up to the cut and the instruction, and writes after them:
  // the cut leaves room in the context for the whole summary if it can, else for some.
  const std::vector<TokenId> ask = SummaryInstruction(*s, o);
  const auto ask_n = static_cast<int64_t>(ask.size());
  int64_t last = std::min(protect_from, ctx - ask_n - o.summary_max_tokens);
  if (last < bound) last = std::min(protect_from, ctx - ask_n - 1);
  if (last < bound) {
    return absl::InvalidArgumentError(absl::StrCat("no room in the context to summarize ", bound,
                                                   " tokens (the instruction takes ", ask_n,
                                                   ", context length ", ctx, ")"));
  }
  // At a turn boundary if one is near: it may take at most half of what the recent part
  // would keep (a long single turn is cut inside, not summarized whole).
  int64_t cut = bound;
  const int64_t near = std::min(last, bound + (n - bound) / 2);
  for (const cache::SessionTurn& t : s->turns) {
    if (t.token_start >= bound && t.token_start <= near) {
      cut = t.token_start;
      break;
    }
  }
  absl::StatusOr<std::vector<TokenId>> ids = WriteSummary(*s, ask, o, cut);
  if (!ids.ok()) return ids.status();
  // Its text (UTF-8-safe, as replies are), framed; the framing tokenizes the text anew, so
  // the summary's last tokens are given up while it takes more than its room.
  std::string summary;
  std::vector<TokenId> framed;
  for (;;) {
    StreamingDetokenizer detok(
        *tokenizer, DecodeOptions{.render_special = false, .strip_leading_space = false});
    summary.clear();
    for (TokenId id : *ids) summary += detok.Push(id);
    summary += detok.Flush();
    summary = std::string(absl::StripAsciiWhitespace(summary));
    framed = FrameSummary(*s, summary);
    const auto over = static_cast<int64_t>(framed.size()) - room;
    if (over <= 0) break;
    if (ids->empty()) {
      return absl::InternalError(absl::StrCat("the summary's framing alone takes ", framed.size(),
                                              " tokens, more than ", room));
    }
    ids->resize(ids->size() - std::min<size_t>(ids->size(), static_cast<size_t>(over)));
  }
  // The rebuilt history: head + summary + the turns after the cut, whose KV is computed
  // again after the summary (by the next turn's prefill).
  const int64_t kept = kv.table.Truncate(*pool, std::min(kv.table.n_tokens(), head));
  kv.chain.resize(std::min<size_t>(kv.chain.size(), static_cast<size_t>(kept / opts.block_tokens)));
  kv.tokens.erase(kv.tokens.begin() + head, kv.tokens.begin() + cut);
  kv.tokens.insert(kv.tokens.begin() + head, framed.begin(), framed.end());
  const TokenRange summarized = {head, cut};
  const auto f = static_cast<int64_t>(framed.size());
  cache::MapTurnsReplaced(summarized, f, &s->turns);
  LogCompaction(s, {.unix_us = absl::ToUnixMicros(Now()),
                    .policy = std::string(cache::CompactionPolicyName(o.policy)),
                    .dropped = {},
                    .summarized = {summarized},
                    .position_shift = f - summarized.size(),
                    .turns = turns_seen,
                    .summary = std::move(summary)});
  return Compacted{.removed = summarized.size() - f, .compacted = summarized.size()};
}

std::vector<TokenId> Engine::Impl::SummaryInstruction(const SessionState& s,
                                                      const CompactionOptions& o) const {
  // A user message for a chat session, plain text otherwise.
  if (tmpl.family() != ChatTemplateFamily::kUnknown && !s.messages.empty()) {
    const ChatMessage m = {.role = "user", .content = o.summary_prompt};
    auto ids = RenderTurn(&s, std::span(&m, 1), /*add_generation_prompt=*/true);
    if (ids.ok()) return *std::move(ids);
  }
  return tokenizer->Encode(absl::StrCat("\n\n", o.summary_prompt, "\n"),
                           EncodeOptions{.add_bos = false, .parse_special = false});
}

absl::StatusOr<std::vector<TokenId>> Engine::Impl::WriteSummary(const SessionState& s,
                                                                std::span<const TokenId> ask,
                                                                const CompactionOptions& o,
                                                                int64_t cut) {
  const KvSequence& kv = s.kv;
  const int64_t bt = opts.block_tokens;
  std::vector<TokenId> tokens(kv.tokens.begin(), kv.tokens.begin() + cut);
  tokens.insert(tokens.end(), ask.begin(), ask.end());
  const int64_t max_new = std::min(o.summary_max_tokens, ctx - static_cast<int64_t>(tokens.size()));
  if (max_new < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("no room in the context to write a summary of ", cut, " tokens (",
                     tokens.size(), " with the instruction, context length ", ctx, ")"));
  }
  // The session's whole blocks before the cut are shared; the rest is computed in a scratch
  // table, then the summary is decoded greedily until an end-of-generation token.
  cache::BlockTable t;
  const int64_t shared = std::min(cut, kv.table.n_tokens()) / bt;
  for (int64_t i = 0; i < shared; ++i) {
    pool->Retain(kv.table.blocks()[static_cast<size_t>(i)]);
    t.AppendShared(*pool, kv.table.blocks()[static_cast<size_t>(i)]);
  }
  std::vector<TokenId> out;
  std::vector<float> row(static_cast<size_t>(vocab));
  absl::Status st;
  for (int64_t pos = shared * bt; st.ok();) {
    while (pos < static_cast<int64_t>(tokens.size()) && st.ok()) {
      const int64_t take =
          std::min<int64_t>(static_cast<int64_t>(tokens.size()) - pos, opts.max_batch_tokens);
      if (!t.Reserve(*pool, pos + take)) {
        st = absl::ResourceExhaustedError(
            absl::StrCat("no free KV blocks to write the summary of session ", s.id.ToString()));
        break;
      }
      const bool last = pos + take == static_cast<int64_t>(tokens.size());
      const SeqBatchEntry e = {.tokens = std::span<const TokenId>(tokens).subspan(
                                   static_cast<size_t>(pos), static_cast<size_t>(take)),
                               .start_pos = static_cast<int32_t>(pos),
                               .table = &t,
                               .logits = last ? LogitRows::kLast : LogitRows::kNone};
      st = forward->Forward(pool->view(), std::span(&e, 1), row.data());
      stats.tokens_computed += take;
      pos += take;
    }
    if (!st.ok()) break;
    const auto id = static_cast<TokenId>(std::max_element(row.begin(), row.end()) - row.begin());
    if (tokenizer->IsEog(id)) break;
    out.push_back(id);
    if (static_cast<int64_t>(out.size()) == max_new) break;
    tokens.push_back(id);
  }
  t.Release(*pool);
  if (!st.ok()) return st;
  stats.tokens_generated += static_cast<int64_t>(out.size());
  return out;
}

std::vector<TokenId> Engine::Impl::FrameSummary(const SessionState& s,
                                                std::string_view summary) const {
  const std::string text = absl::StrCat("Summary of the earlier conversation: ", AsAbsl(summary));
  if (tmpl.family() != ChatTemplateFamily::kUnknown && !s.messages.empty()) {
    // A system message where the template takes one there, else a user message.
    for (const char* role : {"system", "user"}) {
      const ChatMessage m = {.role = role, .content = text};
      auto ids = RenderTurn(&s, std::span(&m, 1), /*add_generation_prompt=*/false);
      if (ids.ok()) return *std::move(ids);
    }
  }
  return tokenizer->Encode(absl::StrCat(text, "\n\n"),
                           EncodeOptions{.add_bos = false, .parse_special = false});
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
        m.WhenReady(*s, Impl::Need::kResident,
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
                      const int64_t keep = keep_tokens.value_or(static_cast<int64_t>(
                          std::floor(o.target_fraction * static_cast<double>(n))));
                      auto compacted =
                          m.CompactSession(s, o, keep, n, static_cast<int64_t>(s->turns.size()));
                      if (!compacted.ok()) {
                        reply(compacted.status());
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
