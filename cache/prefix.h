// Prefix sharing over a BlockPool's index (DESIGN.md 3): attach the longest cached prefix of
// a token sequence to an empty block table, and publish a table's newly filled blocks.
//
// A sequence's chain (`std::vector<BlockHash>`, chain[i] = hash of full block i) is kept by
// its owner next to its table; both functions extend it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "cache/block_hash.h"
#include "cache/block_pool.h"
#include "cache/block_table.h"

namespace mnemo::cache {

struct PrefixNamespace {
  BlockHash root;               // ChainRoot(model fingerprint)
  uint64_t salt = kPublicSalt;  // the namespace new blocks are published under
  bool search_public = true;    // lookups also try kPublicSalt (first)
};

// For a table whose n_tokens() is a multiple of block_tokens and whose chain covers its
// blocks (a fresh table: both empty): appends the cached full blocks that continue `tokens`
// (one reference each), as long as they are found and cover at most max_tokens tokens in
// all. Returns the tokens the table now holds.
int64_t AttachCachedPrefix(BlockPool& pool, const PrefixNamespace& ns,
                           std::span<const int32_t> tokens, int64_t max_tokens, BlockTable& table,
                           std::vector<BlockHash>& chain);

// After the KV of tokens[0, table.n_tokens()) has been written: hashes every full block
// past chain.size() under ns.salt, extends the chain and publishes the block. A block whose
// hash another slot already has is replaced by that slot (the duplicate is released). A
// block that is not private (shared or already published) is only hashed; an already
// published one keeps its hash and the chain records that hash, so chain[i] names block
// i's published hash. Blocks are published under ns.salt only, never under kPublicSalt
// on the strength of ns.search_public.
void PublishFullBlocks(BlockPool& pool, const PrefixNamespace& ns, std::span<const int32_t> tokens,
                       BlockTable& table, std::vector<BlockHash>& chain);

}  // namespace mnemo::cache
