// BlockTable: one sequence's KV blocks in token order and its token count (DESIGN.md 3).
//
//   token t of the sequence  ->  row t % block_tokens of blocks()[t / block_tokens]
//
//   blocks():   [ b0 | b1 | b2 ]            capacity_tokens() = 3 * block_tokens
//   n_tokens(): |<------ 2.5 blocks ---->|   (the last block is partly used)
//
// The table owns its blocks (it allocated them from the pool it is given and frees them
// back there); it does not remember the pool, so every call that allocates or frees takes
// it, and it must always be the same pool. Release before destruction: destroying a table
// that still holds blocks leaks them and is a bug (MNEMO_DCHECK).
//
// Invariant: blocks().size() == ceil(n_tokens() / block_tokens) — no spare blocks are kept
// past the last token (Truncate frees them, Reserve allocates only what it needs).
//
// Thread-safety: none; owned by the engine loop. Move-only (a copy would own blocks twice).
#pragma once

#include <cstdint>
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

  // Makes the table hold n_tokens tokens: allocates the blocks needed so that positions
  // [0, n_tokens) fit and sets n_tokens(). All or nothing: when the pool runs out, frees
  // the blocks it took, leaves the table unchanged and returns false ("cannot allocate now",
  // a normal result). n_tokens <= n_tokens() changes nothing and returns true (use Truncate
  // to shrink). n_tokens must be >= 0.
  bool Reserve(BlockPool& pool, int64_t n_tokens);

  // Shrinks the table to its first n_tokens tokens, freeing whole blocks past them (a
  // partly kept block stays). n_tokens >= n_tokens() changes nothing. n_tokens >= 0.
  void Truncate(BlockPool& pool, int64_t n_tokens);

  // Frees every block; the table becomes empty.
  void Release(BlockPool& pool);

  std::span<const BlockId> blocks() const { return blocks_; }
  int64_t n_tokens() const { return n_tokens_; }
  // Tokens the held blocks have room for (blocks().size() * block_tokens).
  int64_t capacity_tokens() const { return capacity_tokens_; }

 private:
  std::vector<BlockId> blocks_;
  int64_t n_tokens_ = 0;
  int64_t capacity_tokens_ = 0;
};

}  // namespace mnemo::cache
