#include "cache/prefix.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "kernels/base/check.h"

namespace mnemo::cache {
namespace {

// Checks what both functions require of a table and its chain; returns block_tokens.
int64_t CheckTableAndChain(const BlockPool& pool, std::span<const int32_t> tokens,
                           const BlockTable& table, const std::vector<BlockHash>& chain) {
  const int64_t bt = pool.layout().block_tokens;
  MNEMO_CHECK(static_cast<int64_t>(tokens.size()) >= table.n_tokens())
      << "a table of " << table.n_tokens() << " tokens for " << tokens.size() << " tokens";
  MNEMO_CHECK(static_cast<int64_t>(chain.size()) <= table.n_tokens() / bt)
      << "a chain of " << chain.size() << " hashes for " << table.n_tokens() / bt << " full blocks";
  return bt;
}

std::span<const int32_t> BlockTokens(std::span<const int32_t> tokens, size_t block, int64_t bt) {
  return tokens.subspan(block * static_cast<size_t>(bt), static_cast<size_t>(bt));
}

}  // namespace

int64_t AttachCachedPrefix(BlockPool& pool, const PrefixNamespace& ns,
                           std::span<const int32_t> tokens, int64_t max_tokens, BlockTable& table,
                           std::vector<BlockHash>& chain) {
  const int64_t bt = CheckTableAndChain(pool, tokens, table, chain);
  MNEMO_CHECK(table.n_tokens() % bt == 0)
      << "AttachCachedPrefix to a table with a partly used block (" << table.n_tokens()
      << " tokens)";
  MNEMO_CHECK(static_cast<int64_t>(chain.size()) == table.n_tokens() / bt)
      << "AttachCachedPrefix to a table whose chain (" << chain.size()
      << " hashes) does not cover its " << table.n_tokens() / bt << " blocks";
  const int64_t limit = std::min(max_tokens, static_cast<int64_t>(tokens.size()));
  while (table.n_tokens() + bt <= limit) {
    const BlockHash& parent = chain.empty() ? ns.root : chain.back();
    const std::span<const int32_t> block = BlockTokens(tokens, chain.size(), bt);
    std::optional<BlockId> id;
    BlockHash hash;
    if (ns.search_public) {
      hash = ChainHash(parent, kPublicSalt, block);
      id = pool.Acquire(hash);
    }
    if (!id && !(ns.search_public && ns.salt == kPublicSalt)) {
      hash = ChainHash(parent, ns.salt, block);
      id = pool.Acquire(hash);
    }
    if (!id) break;
    table.AppendShared(pool, *id);
    chain.push_back(hash);
  }
  return table.n_tokens();
}

// Publishes under ns.salt only, even where the block continues a public prefix: a
// tenant's own computation never enters the public namespace (only the operator's
// publishing with ns.salt == kPublicSalt does).
void PublishFullBlocks(BlockPool& pool, const PrefixNamespace& ns, std::span<const int32_t> tokens,
                       BlockTable& table, std::vector<BlockHash>& chain) {
  const int64_t bt = CheckTableAndChain(pool, tokens, table, chain);
  const size_t n_full = static_cast<size_t>(table.n_tokens() / bt);
  for (size_t i = chain.size(); i < n_full; ++i) {
    const BlockHash& parent = chain.empty() ? ns.root : chain.back();
    BlockHash hash = ChainHash(parent, ns.salt, BlockTokens(tokens, i, bt));
    const BlockId id = table.blocks()[i];
    if (pool.is_published(id)) {
      // Already published (by another holder of a forked table): its hash stays, and the
      // chain records it, so that chain[i] always names block i's published hash.
      hash = pool.hash(id);
    } else if (pool.refcount(id) == 1 && !pool.Publish(id, hash)) {
      // Another slot holds the same KV: share it and let the duplicate go.
      const std::optional<BlockId> existing = pool.Acquire(hash);
      MNEMO_CHECK(existing.has_value())
          << "Publish conflict on " << hash.ToString() << " but Acquire finds no slot";
      table.ReplaceBlock(pool, i, *existing);
    }
    chain.push_back(hash);
  }
}

}  // namespace mnemo::cache
