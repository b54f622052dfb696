#include "cache/block_hash.h"

#include <xxhash.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_format.h"

namespace mnemo::cache {
namespace {

// The bytes one hash is computed over; inline room for a 24-byte header and 64 tokens
// (typical blocks have 16 or 32), so hashing a block does not allocate.
using HashInput = absl::InlinedVector<uint8_t, 24 + 4 * 64>;

// Little-endian on every host, so that the hash of a block is the same on every machine.
void AppendLe(HashInput& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

BlockHash Hash128(const HashInput& in) {
  const XXH128_hash_t h = XXH3_128bits(in.data(), in.size());
  return BlockHash{.lo = h.low64, .hi = h.high64};
}

}  // namespace

std::string BlockHash::ToString() const { return absl::StrFormat("%016x%016x", hi, lo); }

uint64_t TenantSalt(std::string_view tenant) {
  const uint64_t salt = XXH3_64bits(tenant.data(), tenant.size());
  // A tenant must never land in the public namespace, whatever its name.
  return salt == kPublicSalt ? 1 : salt;
}

// H(tag, fingerprint): the tag's bytes with its terminating NUL, then the fingerprint's
// bytes. The tag is a constant, so the fingerprint alone tells roots apart; the NUL keeps
// the tag's end explicit should a later version change it.
BlockHash ChainRoot(std::string_view model_fingerprint) {
  static constexpr char kTag[] = "mnemo.kv-chain.v1";
  HashInput in(kTag, kTag + sizeof(kTag));
  in.insert(in.end(), model_fingerprint.begin(), model_fingerprint.end());
  return Hash128(in);
}

// H(parent.lo, parent.hi, salt as 8 bytes each, then each token id as 4 bytes), all
// little-endian.
BlockHash ChainHash(const BlockHash& parent, uint64_t salt, std::span<const int32_t> tokens) {
  HashInput in;
  in.reserve(24 + 4 * tokens.size());
  AppendLe(in, parent.lo, 8);
  AppendLe(in, parent.hi, 8);
  AppendLe(in, salt, 8);
  for (int32_t t : tokens) AppendLe(in, static_cast<uint32_t>(t), 4);
  return Hash128(in);
}

}  // namespace mnemo::cache
