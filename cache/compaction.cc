#include "cache/compaction.h"

#include <algorithm>
#include <cstdint>
#include <span>
#include <string_view>
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
  }
  return "?";
}

absl::StatusOr<CompactionPolicy> ParseCompactionPolicy(std::string_view name) {
  for (CompactionPolicy p : {CompactionPolicy::kNone, CompactionPolicy::kWindow}) {
    if (name == CompactionPolicyName(p)) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown compaction policy \"", AsAbsl(name), "\" (want none or window)"));
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
  return absl::OkStatus();
}

absl::StatusOr<TokenRange> WindowCut(int64_t n, int64_t sinks, int64_t keep) {
  if (sinks < 0 || keep <= sinks || keep >= n) {
    return absl::InvalidArgumentError(absl::StrCat("cannot keep ", keep, " of ", n, " tokens with ",
                                                   sinks, " sinks (want sinks < keep < n)"));
  }
  return TokenRange{.begin = sinks, .end = n - (keep - sinks)};
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
