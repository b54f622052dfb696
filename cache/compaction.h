// Context compaction (DESIGN.md 3, docs/compaction.md): the policies a session's context is
// compacted with, what triggers a compaction, which tokens a policy keeps, and the
// bookkeeping of what was dropped. The KV work — the kept rows gathered into fresh private
// blocks, their keys re-rotated to their new positions — is the engine's
// (engine/compaction.cc), which needs the model's rotary embedding.
//
//   window, sinks S, keeping K of n tokens:
//     before  [ 0 .. S | S ............. n-(K-S) | n-(K-S) ........ n ]
//                sinks        dropped                   recent
//     after   [ 0 .. S | S ........ K ]   positions contiguous again: the recent tokens'
//                                         keys rotated by position_shift = -(n - K)
//
//   score: the sinks, the observation window (the last observe_tokens) and, of the tokens
//   between, those the window's queries attend to most (summed over layers, heads and
//   queries, max-pooled over neighbours) — many dropped ranges; each kept key is rotated by
//   its own shift to its rank among the kept tokens.
//
//   summarize: [ head | summarized .......... | recent ]  ->  [ head | summary | recent ]
//   the model writes a summary of the summarized turns; the recent tokens' KV is computed
//   again after the summary (the head's is kept).
//
// Thread-safety: free functions without shared state.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache/session.h"

namespace mnemo::cache {

enum class CompactionPolicy : uint8_t {
  kNone,       // a turn that would overflow the context is refused
  kWindow,     // keep the first sink_tokens and the most recent tokens (StreamingLLM)
  kScore,      // keep the tokens recent queries attend to most (SnapKV/H2O-style)
  kSummarize,  // replace the oldest turns by a summary the model writes
};
// "none", "window", "score", "summarize".
std::string_view CompactionPolicyName(CompactionPolicy p);
// InvalidArgument naming the accepted names for anything else.
absl::StatusOr<CompactionPolicy> ParseCompactionPolicy(std::string_view name);

struct CompactionOptions {
  CompactionPolicy policy = CompactionPolicy::kNone;
  int64_t sink_tokens = 4;  // window: the first tokens, always kept (attention sinks)
  // Triggers, checked when a turn starts (a turn that would overflow the context always
  // triggers): the history plus the new turn would pass trigger_fraction of the context
  // length, or trigger_tokens when > 0, or the session's KV would pass max_session_bytes
  // when > 0.
  double trigger_fraction = 1.0;
  int64_t trigger_tokens = 0;
  int64_t max_session_bytes = 0;
  // A compaction keeps target_fraction of the limit that triggered it (the context, the
  // token trigger, or the byte budget's tokens), and always room for the turn.
  double target_fraction = 0.5;
  // score: the observation window — the last tokens whose queries score the others (always
  // kept).
  int64_t observe_tokens = 32;
  // summarize: the instruction the model is given after the turns it summarizes, and the
  // longest summary in tokens.
  std::string summary_prompt = std::string(kDefaultSummaryPrompt);
  int64_t summary_max_tokens = 256;
  // Keep the state before each compaction (a hidden copy of the session, moved to the lowest
  // tier there is) so that a rewind can go back past the compaction.
  bool keep_history = false;

  static constexpr std::string_view kDefaultSummaryPrompt =
      "Summarize the conversation so far in a few sentences. Keep every name, number and "
      "fact that may matter later.";
  friend bool operator==(const CompactionOptions&, const CompactionOptions&) = default;
};

// OK, or InvalidArgument naming the bad field: sink_tokens >= 0, 0 < trigger_fraction <= 1,
// trigger_tokens >= 0, max_session_bytes >= 0, 0 < target_fraction < 1, observe_tokens >= 1,
// summary_max_tokens >= 1, summary_prompt not empty.
absl::Status ValidateCompactionOptions(const CompactionOptions& o);

// The range the window policy drops from a history of n tokens to keep `keep` of them:
// [sinks, n - (keep - sinks)). InvalidArgument unless sinks < keep < n (there must be
// recent tokens to keep and something to drop).
absl::StatusOr<TokenRange> WindowCut(int64_t n, int64_t sinks, int64_t keep);

// The ranges the score policy drops from a history of mass.size() tokens to keep `keep`:
// it keeps [0, sinks), the last `recent` tokens, and the keep - sinks - recent tokens
// between with the highest mass after a max-pool over each token's neighbours (radius 2,
// so that a kept token brings its context; ties go to the earlier token). Sorted, disjoint,
// merged. InvalidArgument unless sinks + recent <= keep < mass.size().
absl::StatusOr<std::vector<TokenRange>> ScoreCut(std::span<const float> mass, int64_t sinks,
                                                 int64_t recent, int64_t keep);

// Where token p of the history before a compaction that dropped `dropped` (sorted,
// disjoint) is after it: p minus the dropped tokens before it; -1 when p was dropped.
int64_t MapPosition(std::span<const TokenRange> dropped, int64_t p);

// Maps every turn's token_start through the compaction; a start inside a dropped range
// moves to where the range's end went. Turn order is kept.
void MapTurns(std::span<const TokenRange> dropped, std::vector<SessionTurn>* turns);

// Maps every turn's token_start through the replacement of `summarized` by `replacement`
// tokens (a summary): starts before it stay, starts inside it move to its beginning, starts
// after it move by replacement - summarized.size().
void MapTurnsReplaced(TokenRange summarized, int64_t replacement, std::vector<SessionTurn>* turns);

// The fewest turns a rewind may keep: the turns the latest compaction saw (0 without one).
// The state of an earlier turn is gone unless that compaction kept it (the engine checks).
int64_t RewindFloor(std::span<const CompactionRecord> log);

// Tokens dropped or summarized over the whole log.
int64_t CompactedTokens(std::span<const CompactionRecord> log);

}  // namespace mnemo::cache
