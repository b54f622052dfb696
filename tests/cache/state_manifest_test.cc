#include "cache/state_manifest.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kernels/kv_compress.h"
#include "tests/cache/state_test_util.h"

namespace mnemo::cache {
namespace {

using testing::FullRecord;
using testing::TestId;

std::vector<DiskBlock> Blocks(int n) {
  std::vector<DiskBlock> blocks;
  for (int i = 0; i < n; ++i) {
    blocks.push_back({static_cast<uint32_t>(1 + i / 3),
                      kStateAlignment * (1 + i % 3),
                      256,
                      0x9e3779b97f4a7c15ull * static_cast<uint64_t>(i + 1),
                      {}});
  }
  return blocks;
}

std::span<const uint8_t> Span(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(StateManifestTest, RoundTripsEveryField) {
  const SessionRecord r = FullRecord(TestId(7), Blocks(5));
  auto bytes = SerializeManifest(r);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(bytes->substr(0, 8), "MNEMOMAN");
  auto back = ParseManifest(Span(*bytes), "m");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == r);
  EXPECT_EQ(back->metadata, r.metadata);  // binary bytes, NUL included
  EXPECT_EQ(back->blocks[0].hash, (BlockHash{0x1111, 0x2222}));
  EXPECT_EQ(back->blocks[1].hash, BlockHash{});
  ASSERT_EQ(back->compaction_log.size(), 1u);
  EXPECT_EQ(back->compaction_log[0].summarized.size(), 2u);
  EXPECT_EQ(back->compaction_log[0].summary, r.compaction_log[0].summary);
  EXPECT_EQ(back->compaction->summary_prompt, "Summarize, briefly.");
  EXPECT_EQ(back->compaction->observe_tokens, 48);
  EXPECT_EQ(back->layout.dtype, kernels::DType::kBF16);

  // A record with nothing optional survives too (no KV, no turns, no blocks, no TTL).
  SessionRecord empty;
  empty.id = TestId(9);
  empty.layout = testing::StateLayout();
  auto empty_bytes = SerializeManifest(empty);
  ASSERT_TRUE(empty_bytes.ok()) << empty_bytes.status();
  auto empty_back = ParseManifest(Span(*empty_bytes), "m");
  ASSERT_TRUE(empty_back.ok()) << empty_back.status();
  EXPECT_TRUE(*empty_back == empty);
  EXPECT_EQ(empty_back->ttl_us, -1);
}

// The int8 cold encoding: its blocks are CompressedBlockBytes long; an unknown encoding, or
// raw-length blocks under int8, are refused.
TEST(StateManifestTest, KvEncodingRoundTripsAndFixesTheBlockLength) {
  SessionRecord r = FullRecord(TestId(8), Blocks(3));
  r.kv_encoding = std::string(kKvEncodingInt8);
  EXPECT_EQ(ValidateRecord(r).code(), absl::StatusCode::kInvalidArgument);  // 256-byte blocks
  const uint64_t packed = EncodedBlockBytes(r.layout, kKvEncodingInt8);
  EXPECT_EQ(packed, static_cast<uint64_t>(kernels::CompressedBlockBytes(r.layout)));
  EXPECT_LT(packed, static_cast<uint64_t>(r.layout.block_bytes()));
  for (DiskBlock& b : r.blocks) b.length = packed;
  auto bytes = SerializeManifest(r);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto back = ParseManifest(Span(*bytes), "m");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == r);
  EXPECT_EQ(back->kv_encoding, "int8");
  r.kv_encoding = "zstd";
  const absl::Status st = ValidateRecord(r);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("zstd"), std::string::npos) << st;
}

TEST(StateManifestTest, ValidateRecordNamesTheBrokenField) {
  const SessionRecord good = FullRecord(TestId(1), Blocks(4));
  ASSERT_TRUE(ValidateRecord(good).ok());
  struct Case {
    const char* want;
    void (*edit)(SessionRecord&);
  };
  const Case cases[] = {
      {"blocks for", [](SessionRecord& r) { r.blocks.pop_back(); }},
      {"kv_tokens",
       [](SessionRecord& r) { r.kv_tokens = static_cast<int64_t>(r.tokens.size()) + 1; }},
      {"offset", [](SessionRecord& r) { r.blocks[1].offset += 512; }},
      {"offset", [](SessionRecord& r) { r.blocks[1].offset = 0; }},
      {"segment 0", [](SessionRecord& r) { r.blocks[2].segment = 0; }},
      {"has 255 bytes", [](SessionRecord& r) { r.blocks[3].length = 255; }},
      {"turn 1", [](SessionRecord& r) { r.turns[1].token_start = -1; }},
      {"turn 1", [](SessionRecord& r) { r.turns[1].message_start = 99; }},
      {"turn 0", [](SessionRecord& r) { r.turns[0].token_start = 1; }},
      {"ttl_us", [](SessionRecord& r) { r.ttl_us = -2; }},
      {"partly filled",
       [](SessionRecord& r) {
         r.kv_tokens -= 1;
         r.blocks.back().hash = {1, 2};
       }},
      {"dtype f32", [](SessionRecord& r) { r.layout.dtype = kernels::DType::kF32; }},
      {"sizes must be > 0", [](SessionRecord& r) { r.layout.head_dim = 0; }},
      {"larger than 1 GiB", [](SessionRecord& r) { r.layout.n_layers = 1 << 30; }},
      {"compaction entry 0",
       [](SessionRecord& r) {
         r.compaction_log[0].dropped[0] = {5, 4};
       }},
      {"records 3 turns", [](SessionRecord& r) { r.compaction_log[0].turns = 3; }},
      {"compaction: target_fraction", [](SessionRecord& r) { r.compaction->target_fraction = 2; }},
      {"compaction: observe_tokens", [](SessionRecord& r) { r.compaction->observe_tokens = 0; }},
      {"compaction: summary_prompt is empty",
       [](SessionRecord& r) { r.compaction->summary_prompt.clear(); }},
  };
  for (const Case& c : cases) {
    SessionRecord r = good;
    c.edit(r);
    const absl::Status s = ValidateRecord(r);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << c.want << ": " << s;
    EXPECT_NE(s.message().find(c.want), absl::string_view::npos) << s;
    EXPECT_TRUE(absl::IsInvalidArgument(SerializeManifest(r).status())) << c.want;
  }
}

TEST(StateManifestTest, EveryTruncationIsDataLoss) {
  auto bytes = SerializeManifest(FullRecord(TestId(2), Blocks(3)));
  ASSERT_TRUE(bytes.ok());
  for (size_t n = 0; n < bytes->size(); ++n) {
    auto r = ParseManifest(Span(bytes->substr(0, n)), "dir/manifest");
    ASSERT_TRUE(absl::IsDataLoss(r.status())) << n << ": " << r.status();
    EXPECT_NE(r.status().message().find("dir/manifest"), absl::string_view::npos);
    EXPECT_NE(r.status().message().find("truncated"), absl::string_view::npos) << r.status();
  }
  auto padded = ParseManifest(Span(*bytes + "x"), "m");
  EXPECT_TRUE(absl::IsDataLoss(padded.status())) << padded.status();
}

// Every single-bit flip anywhere in the file is caught: by the magic, the version, the
// header size, the length, or the body checksum.
TEST(StateManifestTest, EveryBitFlipIsRefused) {
  auto bytes = SerializeManifest(FullRecord(TestId(3), Blocks(2)));
  ASSERT_TRUE(bytes.ok());
  for (size_t i = 0; i < bytes->size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string flipped = *bytes;
      flipped[i] = static_cast<char>(flipped[i] ^ (1 << bit));
      auto r = ParseManifest(Span(flipped), "m");
      ASSERT_FALSE(r.ok()) << "byte " << i << " bit " << bit;
      const bool version_field = i >= 8 && i < 12;
      EXPECT_TRUE(version_field ? absl::IsFailedPrecondition(r.status())
                                : absl::IsDataLoss(r.status()))
          << "byte " << i << ": " << r.status();
    }
  }
}

TEST(StateManifestTest, BodyChecksumMismatchIsNamed) {
  auto bytes = SerializeManifest(FullRecord(TestId(4), Blocks(1)));
  ASSERT_TRUE(bytes.ok());
  (*bytes)[kManifestHeaderBytes + 20] ^= 0x10;
  auto r = ParseManifest(Span(*bytes), "x/manifest");
  ASSERT_TRUE(absl::IsDataLoss(r.status()));
  EXPECT_NE(r.status().message().find("checksum mismatch"), absl::string_view::npos) << r.status();
}

TEST(StateManifestTest, UnknownVersionIsFailedPreconditionNamingIt) {
  auto bytes = SerializeManifest(FullRecord(TestId(5), Blocks(1)));
  ASSERT_TRUE(bytes.ok());
  (*bytes)[8] = 7;
  auto r = ParseManifest(Span(*bytes), "x/manifest");
  ASSERT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("format version 7"), absl::string_view::npos) << r.status();
  EXPECT_NE(r.status().message().find("reads version 1"), absl::string_view::npos);
}

TEST(StateManifestTest, GarbageIsRefused) {
  EXPECT_TRUE(absl::IsDataLoss(ParseManifest({}, "m").status()));
  const std::string zeros(4096, '\0');
  EXPECT_TRUE(absl::IsDataLoss(ParseManifest(Span(zeros), "m").status()));
  // A valid header over a body that is not a Manifest: the verifier refuses it.
  auto bytes = SerializeManifest(FullRecord(TestId(6), Blocks(1)));
  ASSERT_TRUE(bytes.ok());
  std::string body(bytes->size() - kManifestHeaderBytes, '\x5a');
  std::string forged = bytes->substr(0, kManifestHeaderBytes) + body;
  const uint64_t sum = StateChecksum(Span(body));
  for (int i = 0; i < 8; ++i) forged[24 + i] = static_cast<char>(sum >> (8 * i));
  auto r = ParseManifest(Span(forged), "m");
  ASSERT_TRUE(absl::IsDataLoss(r.status()));
  EXPECT_NE(r.status().message().find("verifier"), absl::string_view::npos) << r.status();
  // A correct header over an empty body (found by the fuzzer).
  std::string header_only = bytes->substr(0, kManifestHeaderBytes);
  const uint64_t empty_sum = StateChecksum({});
  for (int i = 0; i < 8; ++i) {
    header_only[16 + i] = 0;
    header_only[24 + i] = static_cast<char>(empty_sum >> (8 * i));
  }
  auto empty = ParseManifest(Span(header_only), "m");
  ASSERT_TRUE(absl::IsDataLoss(empty.status())) << empty.status();
  EXPECT_NE(empty.status().message().find("body is empty"), absl::string_view::npos);
}

}  // namespace
}  // namespace mnemo::cache
