#include "cache/compaction.h"

#include <algorithm>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"

namespace mnemo::cache {

std::string_view CompactionPolicyName(CompactionPolicy p) {
  switch (p) {
    case CompactionPolicy::kNone:
      return "none";
    case CompactionPolicy::kWindow:
      return "window";
    case CompactionPolicy::kScore:
      return "score";
    case CompactionPolicy::kSummarize:
      return "summarize";
  }
  return "?";
}

absl::StatusOr<CompactionPolicy> ParseCompactionPolicy(std::string_view name) {
  for (CompactionPolicy p : {CompactionPolicy::kNone, CompactionPolicy::kWindow,
                             CompactionPolicy::kScore, CompactionPolicy::kSummarize}) {
    if (name == CompactionPolicyName(p)) return p;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown compaction policy \"", AsAbsl(name),
                                                 "\" (want none, window, score or summarize)"));
}

absl::Status ValidateCompactionOptions(const CompactionOptions& o) {
  if (o.sink_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("sink_tokens ", o.sink_tokens, " < 0"));
  }
  if (!(o.trigger_fraction > 0.0 && o.trigger_fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("trigger_fraction ", o.trigger_fraction, " is not in (0, 1]"));
  }
  if (o.trigger_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("trigger_tokens ", o.trigger_tokens, " < 0"));
  }
  if (o.max_session_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_session_bytes ", o.max_session_bytes, " < 0"));
  }
  if (!(o.target_fraction > 0.0 && o.target_fraction < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("target_fraction ", o.target_fraction, " is not in (0, 1)"));
  }
  if (o.observe_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("observe_tokens ", o.observe_tokens, " < 1"));
  }
  if (o.summary_max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("summary_max_tokens ", o.summary_max_tokens, " < 1"));
  }
  if (o.summary_prompt.empty()) return absl::InvalidArgumentError("summary_prompt is empty");
  return absl::OkStatus();
}

absl::StatusOr<TokenRange> WindowCut(int64_t n, int64_t sinks, int64_t keep) {
  if (sinks < 0 || keep <= sinks || keep >= n) {
    return absl::InvalidArgumentError(absl::StrCat("cannot keep ", keep, " of ", n, " tokens with ",
                                                   sinks, " sinks (want sinks < keep < n)"));
  }
  return TokenRange{.begin = sinks, .end = n - (keep - sinks)};
}

absl::StatusOr<std::vector<TokenRange>> ScoreCut(std::span<const float> mass, int64_t sinks,
                                                 int64_t recent, int64_t keep) {
  const auto n = static_cast<int64_t>(mass.size());
  if (sinks < 0 || recent < 0 || sinks + recent > keep || keep >= n) {
    return absl::InvalidArgumentError(absl::StrCat("cannot keep ", keep, " of ", n, " tokens with ",
                                                   sinks, " sinks and ", recent,
                                                   " recent (want sinks + recent <= keep < n)"));
  }
  // The candidates [sinks, n - recent), scored by the largest mass within 2 positions.
  constexpr int64_t kRadius = 2;
  const int64_t lo = sinks;
  const int64_t hi = n - recent;
  std::vector<std::pair<float, int64_t>> order;
  order.reserve(static_cast<size_t>(hi - lo));
  for (int64_t p = lo; p < hi; ++p) {
    float pooled = mass[static_cast<size_t>(p)];
    for (int64_t q = std::max<int64_t>(0, p - kRadius); q <= std::min(n - 1, p + kRadius); ++q) {
      pooled = std::max(pooled, mass[static_cast<size_t>(q)]);
    }
    order.emplace_back(pooled, p);
  }
  const int64_t take = keep - sinks - recent;
  std::partial_sort(order.begin(), order.begin() + take, order.end(),
                    [](const auto& a, const auto& b) {
                      return a.first != b.first ? a.first > b.first : a.second < b.second;
                    });
  std::vector<bool> kept(static_cast<size_t>(hi - lo), false);
  for (int64_t i = 0; i < take; ++i)
    kept[static_cast<size_t>(order[static_cast<size_t>(i)].second - lo)] = true;
  std::vector<TokenRange> dropped;
  for (int64_t p = lo; p < hi; ++p) {
    if (kept[static_cast<size_t>(p - lo)]) continue;
    if (!dropped.empty() && dropped.back().end == p) {
      ++dropped.back().end;
    } else {
      dropped.push_back({p, p + 1});
    }
  }
  return dropped;
}

int64_t MapPosition(std::span<const TokenRange> dropped, int64_t p) {
  int64_t before = 0;
  for (const TokenRange& r : dropped) {
    if (p < r.begin) break;
    if (p < r.end) return -1;
    before += r.size();
  }
  return p - before;
}

void MapTurns(std::span<const TokenRange> dropped, std::vector<SessionTurn>* turns) {
  for (SessionTurn& t : *turns) {
    int64_t p = t.token_start;
    for (const TokenRange& r : dropped) {
      if (p >= r.begin && p < r.end) p = r.end;
    }
    t.token_start = MapPosition(dropped, p);
  }
}

void MapTurnsReplaced(TokenRange summarized, int64_t replacement, std::vector<SessionTurn>* turns) {
  for (SessionTurn& t : *turns) {
    if (t.token_start >= summarized.end) {
      t.token_start += replacement - summarized.size();
    } else if (t.token_start > summarized.begin) {
      t.token_start = summarized.begin;
    }
  }
}

int64_t RewindFloor(std::span<const CompactionRecord> log) {
  return log.empty() ? 0 : log.back().turns;
}

int64_t CompactedTokens(std::span<const CompactionRecord> log) {
  int64_t n = 0;
  for (const CompactionRecord& c : log) {
    for (const TokenRange& r : c.dropped) n += r.size();
    for (const TokenRange& r : c.summarized) n += r.size();
  }
  return n;
}

}  // namespace mnemo::cache
