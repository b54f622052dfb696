#include "cache/block_hash.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"

namespace mnemo::cache {
namespace {

TEST(BlockHashTest, ToStringIsHiThenLoIn32LowercaseHexDigits) {
  const BlockHash h{.lo = 0x0123456789abcdefULL, .hi = 0xfedcba9876543210ULL};
  EXPECT_EQ(h.ToString(), "fedcba98765432100123456789abcdef");
  EXPECT_EQ(BlockHash{}.ToString(), std::string(32, '0'));
  EXPECT_EQ((BlockHash{.lo = 1, .hi = 0}).ToString(), std::string(31, '0') + "1");
}

TEST(BlockHashTest, TenantSaltIsXxh3OfTheNameAndNeverPublic) {
  EXPECT_EQ(TenantSalt("acme"), XXH3_64bits("acme", 4));
  EXPECT_NE(TenantSalt("acme"), TenantSalt("acme2"));
  EXPECT_NE(TenantSalt(""), kPublicSalt);
  std::set<uint64_t> salts;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t s = TenantSalt("tenant-" + std::to_string(i));
    EXPECT_NE(s, kPublicSalt);
    salts.insert(s);
  }
  EXPECT_EQ(salts.size(), 1000u);
}

// The serialization is part of the format (hashes are stable across processes and
// machines): the hash of a block is XXH3-128 of these exact little-endian bytes.
TEST(BlockHashTest, ChainHashIsXxh3128OfTheDocumentedBytes) {
  const BlockHash parent{.lo = 0x1122334455667788ULL, .hi = 0x99aabbccddeeff00ULL};
  const uint64_t salt = 0x0102030405060708ULL;
  const std::vector<int32_t> tokens = {1, -2, 0x01020304};
  const uint8_t bytes[] = {
      0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,  // parent.lo
      0x00, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99,  // parent.hi
      0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // salt
      0x01, 0x00, 0x00, 0x00,                          // 1
      0xfe, 0xff, 0xff, 0xff,                          // -2
      0x04, 0x03, 0x02, 0x01,                          // 0x01020304
  };
  const XXH128_hash_t want = XXH3_128bits(bytes, sizeof(bytes));
  const BlockHash got = ChainHash(parent, salt, tokens);
  EXPECT_EQ(got.lo, want.low64);
  EXPECT_EQ(got.hi, want.high64);

  const std::string root_bytes = std::string("mnemo.kv-chain.v1") + '\0' + "model-fp";
  const XXH128_hash_t want_root = XXH3_128bits(root_bytes.data(), root_bytes.size());
  EXPECT_EQ(ChainRoot("model-fp"), (BlockHash{.lo = want_root.low64, .hi = want_root.high64}));
}

TEST(BlockHashTest, ChainHashIsDeterministicAndSensitiveToEveryInput) {
  const BlockHash root = ChainRoot("fp-a");
  EXPECT_EQ(root, ChainRoot("fp-a"));
  EXPECT_NE(root, ChainRoot("fp-b"));  // fingerprint
  EXPECT_NE(root, ChainRoot(""));
  const std::vector<int32_t> toks = {5, 6, 7, 8};
  const BlockHash h = ChainHash(root, kPublicSalt, toks);
  EXPECT_EQ(h, ChainHash(root, kPublicSalt, toks));
  EXPECT_EQ(h, ChainHash(ChainRoot("fp-a"), kPublicSalt, std::vector<int32_t>{5, 6, 7, 8}));

  absl::flat_hash_set<BlockHash> seen = {h};
  EXPECT_TRUE(seen.insert(ChainHash(ChainRoot("fp-b"), kPublicSalt, toks)).second);  // model
  EXPECT_TRUE(seen.insert(ChainHash(root, TenantSalt("t"), toks)).second);           // salt
  EXPECT_TRUE(seen.insert(ChainHash(root, 1, toks)).second);
  EXPECT_TRUE(seen.insert(ChainHash(h, kPublicSalt, toks)).second);  // parent
  BlockHash flipped = root;
  flipped.hi ^= 1;  // a single bit of the parent
  EXPECT_TRUE(seen.insert(ChainHash(flipped, kPublicSalt, toks)).second);
  for (size_t i = 0; i < toks.size(); ++i) {  // each token
    std::vector<int32_t> t = toks;
    t[i] += 1;
    EXPECT_TRUE(seen.insert(ChainHash(root, kPublicSalt, t)).second) << i;
  }
  // Order and length count too.
  EXPECT_TRUE(seen.insert(ChainHash(root, kPublicSalt, std::vector<int32_t>{8, 7, 6, 5})).second);
  EXPECT_TRUE(seen.insert(ChainHash(root, kPublicSalt, std::vector<int32_t>{5, 6, 7})).second);
}

}  // namespace
}  // namespace mnemo::cache
