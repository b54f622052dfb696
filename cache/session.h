// Session state (DESIGN.md 3): everything that makes a conversation or an agent run
// resumable — its identity, its token history with turn boundaries, its KV (block table
// and chain hashes), the sampling RNG state and the client's metadata — and the store that
// owns every live session.
//
//   tokens:      [ t0 t1 ... | turn 1 ... | turn 2 .................. ]
//   turns:         ^start 0    ^start 1     ^start 2
//   KV computed: [0, table.n_tokens())  <=  tokens.size()
//
// The KV may lag the tokens: a turn's last sampled token (and the template's closing text)
// is in the history before its KV is computed; the next turn computes it first. Rewinding to
// turn k truncates the tokens to turns[k].token_start and the table to at most that.
//
// Thread-safety: none; the engine loop owns every session (DESIGN.md 5).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cache/block_hash.h"
#include "cache/block_pool.h"
#include "cache/block_table.h"

namespace mnemo::cache {

// A random 128-bit session id. Printed as "sess_" + 32 lowercase hex digits.
struct SessionId {
  std::array<uint8_t, 16> bytes{};

  // 128 bits from the operating system's random source (std::random_device).
  static SessionId Random();
  // The printed form back; nullopt for anything else (wrong prefix, length or digit).
  static std::optional<SessionId> Parse(std::string_view text);
  std::string ToString() const;

  friend bool operator==(const SessionId&, const SessionId&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const SessionId& id) {
    return H::combine_contiguous(std::move(h), id.bytes.data(), id.bytes.size());
  }
};

// One chat message of the session's transcript (what the template renders from).
struct SessionMessage {
  std::string role;
  std::string content;
};

struct SessionTurn {
  int64_t token_start = 0;    // tokens[token_start..] belong to this turn and later ones
  int64_t message_start = 0;  // messages[message_start..] likewise
};

// Tokens [begin, end) of the history before a compaction.
struct TokenRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  friend bool operator==(const TokenRange&, const TokenRange&) = default;
};

// One compaction of the session's context (cache/compaction.h): when, by which policy, which
// tokens of the history as it was then were dropped or summarized, and how far the tokens
// after the last dropped range moved (position_shift, negative: towards 0).
struct CompactionRecord {
  int64_t unix_us = 0;
  std::string policy;
  std::vector<TokenRange> dropped;
  std::vector<TokenRange> summarized;
  int64_t position_shift = 0;
  // The session's turns when it was compacted: rewinding to fewer is refused (their state
  // is gone). 0 in records written before the field existed.
  int64_t turns = 0;
  // summarize: the summary's text (it replaced the summarized range).
  std::string summary;
  // The id of the session state as it was before this compaction, when it was kept
  // (CompactionOptions::keep_history); "" otherwise.
  std::string kept;
  friend bool operator==(const CompactionRecord&, const CompactionRecord&) = default;
};

// The KV of one sequence: history, blocks, and the chain hashes of its full blocks
// (chain.size() <= table.n_tokens() / block_tokens).
struct KvSequence {
  std::vector<int32_t> tokens;
  BlockTable table;
  std::vector<BlockHash> chain;

  // Drops history and KV past n_tokens (chain and table follow; the table may keep fewer
  // tokens, see BlockTable::Truncate).
  void Truncate(BlockPool& pool, int64_t n_tokens);
  // Releases the blocks; tokens are kept.
  void ReleaseKv(BlockPool& pool);
};

struct SessionState {
  SessionId id;
  std::string tenant;
  std::string model_fingerprint;
  KvSequence kv;
  std::vector<SessionTurn> turns;        // in order; turns[0].token_start == 0
  std::vector<SessionMessage> messages;  // the chat transcript (empty for raw-token use)
  std::array<uint64_t, 4> rng_state{};   // the sampler's Rng after the last turn (0: none yet)
  std::string metadata;                  // opaque client blob
  // Every compaction, oldest first. A compacted session's KV past its chain is not what a
  // fresh computation of its tokens would give (re-rotated keys that attended to dropped
  // tokens), so such a session never publishes blocks (cache/compaction.h).
  std::vector<CompactionRecord> compaction_log;
  absl::Time created;
  absl::Time last_used;
  absl::Duration ttl = absl::InfiniteDuration();  // idle time after which it expires

  absl::Time expires() const { return last_used + ttl; }
  // Bytes of KV the session's table references (whole blocks, shared ones included).
  int64_t kv_bytes(const BlockPool& pool) const;
  // OK, or Internal naming the broken invariant: turns ordered and within the history,
  // KV no longer than the history, blocks == ceil(KV tokens / block_tokens), chain no longer
  // than the full blocks, every block in use, a partly used last block private, a published
  // block's hash equal to its chain entry.
  absl::Status CheckInvariants(const BlockPool& pool) const;
};

// Owns the live sessions. Lookups are tenant-scoped: a session of another tenant is
// indistinguishable from an unknown id.
class SessionStore {
 public:
  // Takes ownership; the id must not be in the store already (MNEMO_CHECK).
  SessionState* Insert(std::unique_ptr<SessionState> session);
  SessionState* Find(std::string_view tenant, const SessionId& id);
  // Removes and returns the session (its blocks still referenced: the caller releases them).
  std::unique_ptr<SessionState> Remove(const SessionId& id);
  // By creation time, then id (a total order: listings are deterministic).
  std::vector<SessionState*> List(std::string_view tenant);
  std::vector<SessionState*> All();  // every tenant's, in the same order
  size_t size() const { return sessions_.size(); }

 private:
  absl::flat_hash_map<SessionId, std::unique_ptr<SessionState>> sessions_;
};

// Checks the pool-wide invariant over every holder of references: each block's refcount
// equals the number of tables that hold it (so an in-use block no table holds is a leak),
// and no table holds a block that is not in use. `tables` lists every live holder: an
// extra holder (e.g. a pinned shared prefix) is passed as a table too. Internal naming the
// first block (lowest slot) whose count disagrees.
absl::Status CheckRefcounts(const BlockPool& pool, std::span<const BlockTable* const> tables);

}  // namespace mnemo::cache
