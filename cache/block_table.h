// BlockTable: one sequence's KV blocks in token order and its KV token count (DESIGN.md 3).
//
//   token t of the sequence  ->  row t % block_tokens of blocks()[t / block_tokens]
//
//   blocks():   [ b0 | b1 | b2 ]            capacity_tokens() = 3 * block_tokens
//   n_tokens(): |<------ 2.5 blocks ---->|   (the last block is partly used)
//
// The table holds one reference (BlockPool refcount) on each of its blocks. Full blocks may
// be shared with other tables (prefix sharing, fork); a block the sequence will still write
// (the one holding position n_tokens(), when it is partly used) is always private: refcount
// 1 and unpublished. Every call that takes or drops references takes the pool, and it must
// always be the same pool. Release before destruction: destroying a table that still holds
// blocks leaks them and is a bug (MNEMO_DCHECK).
//
// Invariant: blocks().size() == ceil(n_tokens() / block_tokens) — no spare blocks are kept
// past the last token (Truncate frees them, Reserve allocates only what it needs).
//
// Thread-safety: none; owned by the engine loop. Move-only (a copy would hold references
// it did not take; use Fork).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "cache/block_pool.h"

namespace mnemo::cache {

class BlockTable {
 public:
  BlockTable() = default;
  BlockTable(BlockTable&& other) noexcept;
  BlockTable& operator=(BlockTable&& other) noexcept;
  BlockTable(const BlockTable&) = delete;
  BlockTable& operator=(const BlockTable&) = delete;
  ~BlockTable();

  // Makes the table hold n_tokens tokens: allocates the private blocks needed so that
  // positions [0, n_tokens) fit and sets n_tokens(). All or nothing: when the pool cannot
  // hand out enough slots (free + cached), changes nothing and returns false ("cannot
  // allocate now", a normal result). n_tokens <= n_tokens() changes nothing and returns true
  // (use Truncate to shrink). n_tokens must be >= 0.
  bool Reserve(BlockPool& pool, int64_t n_tokens);

  // Appends a full block that the caller already holds a reference to (from
  // BlockPool::Acquire), handing that reference to the table. n_tokens() must be a multiple
  // of block_tokens (checked); it grows by block_tokens.
  void AppendShared(const BlockPool& pool, BlockId id);

  // Shrinks the table to its first n_tokens tokens, releasing whole blocks past them. If
  // the kept last block is then partly used and not private (shared or published), it is
  // copied into a fresh private block first (copy-on-write); when no slot is left for that
  // copy, the block is released too and the table keeps only the whole blocks before it.
  // Returns the new n_tokens() (n_tokens, or less in that last case). n_tokens >=
  // n_tokens() changes nothing. n_tokens >= 0.
  int64_t Truncate(BlockPool& pool, int64_t n_tokens);

  // A table with the same tokens: full blocks shared (one more reference each), a partly
  // used last block copied into a private block. nullopt (nothing changed) when no slot is
  // left for that copy.
  std::optional<BlockTable> Fork(BlockPool& pool) const;

  // Swaps block `index` (which must be full) for `id`, whose reference the caller hands
  // over, and releases the old one. For deduplication: a freshly filled private block whose
  // hash another slot already has is replaced by that slot.
  void ReplaceBlock(BlockPool& pool, size_t index, BlockId id);

  // Releases every block; the table becomes empty.
  void Release(BlockPool& pool);

  std::span<const BlockId> blocks() const { return blocks_; }
  int64_t n_tokens() const { return n_tokens_; }
  // Tokens the held blocks have room for (blocks().size() * block_tokens).
  int64_t capacity_tokens() const { return capacity_tokens_; }

 private:
  // Records (and in debug builds checks) the pool's block_tokens; returns it.
  int32_t LearnBlockTokens(const BlockPool& pool);
  // Sets n_tokens_ and recomputes capacity_tokens_ from blocks_.
  void SetTokens(int64_t n_tokens);

  std::vector<BlockId> blocks_;
  int64_t n_tokens_ = 0;
  int64_t capacity_tokens_ = 0;
  int32_t block_tokens_ = 0;  // learnt from the pool on first use (0 while empty)
};

}  // namespace mnemo::cache
