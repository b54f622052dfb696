// Content addresses of full KV blocks (DESIGN.md 3): a chained hash, so that a block's hash
// names its whole prefix, not just its own tokens.
//
//   root     = H("mnemo.kv-chain.v1", model fingerprint)
//   block 0  = H(root,      salt, its block_tokens token ids)
//   block i  = H(block i-1, salt, its block_tokens token ids)
//
// H is XXH3-128 over a little-endian serialization (parent hash lo, hi, salt, then the
// token ids as int32). Two sequences share block i only if they agree on every token up to
// the end of block i, on the model, and on the namespace of every block on the way.
//
// Namespaces keep tenants apart: every tenant hashes the blocks it computes under its own
// salt, so one tenant's requests can never hit (or time) another tenant's cached blocks.
// kPublicSalt is the namespace of prefixes the operator publishes for everyone (a shared
// system prompt): a lookup tries the public hash of a block, then the tenant's, so a tenant
// continues a public prefix with blocks of its own namespace.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace mnemo::cache {

struct BlockHash {
  uint64_t lo = 0;
  uint64_t hi = 0;

  friend bool operator==(const BlockHash&, const BlockHash&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const BlockHash& b) {
    return H::combine(std::move(h), b.lo, b.hi);
  }
  // 32 lowercase hex digits (hi, then lo).
  std::string ToString() const;
};

inline constexpr uint64_t kPublicSalt = 0;

// The salt of a tenant's namespace: XXH3-64 of its name, never kPublicSalt.
uint64_t TenantSalt(std::string_view tenant);

// The root of every chain of `model_fingerprint` (Model::fingerprint()).
BlockHash ChainRoot(std::string_view model_fingerprint);

// The hash of a full block in namespace `salt` whose predecessor has hash `parent` (the
// root for block 0).
BlockHash ChainHash(const BlockHash& parent, uint64_t salt, std::span<const int32_t> tokens);

}  // namespace mnemo::cache
