// The Engine's tiers (docs/sessions.md, "Tiers"): spills and restores are byte-identical and
// continue token-identically, more sessions than the device tier holds all complete, restart
// from the state directory, durability modes, faults (disk full, read-only, corrupt files,
// another model's state), deletion from every tier, quotas, pins and lifetimes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cache/file_ops.h"
#include "engine/engine.h"
#include "engine/forward/llama_forward.h"
#include "kernels/kv_compress.h"
#include "tests/engine/engine_test_util.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

EngineOptions TierOptions(const std::string& state_dir, uint64_t host_budget = 64 << 20) {
  EngineOptions o;
  o.host_budget_bytes = host_budget;
  o.state_dir = state_dir;
  o.fsync = false;  // the process-crash tests below do not need power-loss safety
  return o;
}

// Device -> host -> device -> disk -> device -> host -> disk -> device: the KV comes back
// byte for byte, and the next turn equals that of a session that never left.
TEST(Tiers, RoundTripsAreByteIdenticalAndContinueTokenIdentically) {
  auto model = TestModel(Architecture::kLlama);
  const std::string dir = testing::MakeTempDir();
  auto e = MakeEngine(*model, TierOptions(dir + "/state"));
  ASSERT_NE(e, nullptr);
  const std::string moved = NewSession(*e, "t", {.system_prompt = "Be brief."});
  const std::string stayed = NewSession(*e, "t", {.system_prompt = "Be brief."});
  for (const std::string& id : {moved, stayed}) {
    ASSERT_TRUE(Await(e->Continue("t", id, UserTurn("Tell me about the sea.", 9))).status.ok());
  }
  const std::string before = KvBytes(*e, "t", moved);
  ASSERT_FALSE(before.empty());
  ASSERT_EQ(before.size() % static_cast<size_t>(e->block_bytes()), 0u);

  ASSERT_TRUE(e->Demote("t", moved, StorageTier::kHost).ok());
  SessionInfo info = Info(*e, "t", moved);
  EXPECT_EQ(info.tier, StorageTier::kHost);
  EXPECT_EQ(info.device_bytes, 0);
  EXPECT_EQ(info.host_bytes, static_cast<int64_t>(before.size()));
  EXPECT_GT(info.device_byte_seconds, 0.0);  // it was on the device tier for a while
  EXPECT_EQ(FirstDiff(KvBytes(*e, "t", moved), before), -1);  // restored from the host tier
  EXPECT_EQ(Info(*e, "t", moved).tier, StorageTier::kDevice);

  ASSERT_TRUE(e->Demote("t", moved, StorageTier::kDisk).ok());
  info = Info(*e, "t", moved);
  EXPECT_EQ(info.tier, StorageTier::kDisk);
  EXPECT_EQ(info.host_bytes, 0);
  EXPECT_EQ(info.disk_bytes, static_cast<int64_t>(before.size()));
  EXPECT_EQ(FirstDiff(KvBytes(*e, "t", moved), before), -1);  // restored from disk

  ASSERT_TRUE(e->Demote("t", moved, StorageTier::kHost).ok());
  ASSERT_TRUE(e->Demote("t", moved, StorageTier::kDisk).ok());  // host -> disk
  EXPECT_EQ(Info(*e, "t", moved).tier, StorageTier::kDisk);

  const EngineStats st = e->Stats();
  EXPECT_EQ(st.spills_to_host, 2);
  EXPECT_EQ(st.spills_to_disk, 2);
  EXPECT_EQ(st.restores_from_host, 1);
  EXPECT_EQ(st.restores_from_disk, 1);
  EXPECT_EQ(st.restore_failures, 0);
  EXPECT_EQ(st.host_bytes_used, 0);

  // The next turn restores by itself (the request is parked meanwhile).
  const TurnResult a = Await(e->Continue("t", moved, UserTurn("And the mountains?", 12)));
  const TurnResult b = Await(e->Continue("t", stayed, UserTurn("And the mountains?", 12)));
  ASSERT_TRUE(a.status.ok()) << a.status;
  ASSERT_TRUE(b.status.ok()) << b.status;
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.usage.cached_tokens, b.usage.cached_tokens);  // nothing recomputed
  EXPECT_EQ(e->Stats().restores_from_disk, 2);
  EXPECT_EQ(Tokens(*e, "t", moved), Tokens(*e, "t", stayed));
  EXPECT_TRUE(e->CheckInvariants().ok()) << e->CheckInvariants();
}

// Sessions whose KV is at least four times the device tier: every turn of every session
// completes with the output of an engine that holds them all, with spills and restores.
TEST(Tiers, FourTimesTheDeviceBudgetAllCompleteExactly) {
  auto model = TestModel(Architecture::kLlama);
  const std::string dir = testing::MakeTempDir();
  auto big = MakeEngine(*model);
  ASSERT_NE(big, nullptr);
  const int64_t bb = big->block_bytes();
  constexpr int kSessions = 8;
  constexpr int kTurns = 3;
  // About 12 blocks of KV per session after three turns; the device tier holds 24 blocks.
  EngineOptions o = TierOptions(dir + "/state", /*host_budget=*/static_cast<uint64_t>(bb) * 30);
  o.kv_budget_bytes = static_cast<uint64_t>(bb) * 24;
  o.max_batch_tokens = 64;
  o.max_seqs = 4;
  auto small = MakeEngine(*model, o);
  ASSERT_NE(small, nullptr);
  std::vector<std::string> ids_big, ids_small;
  for (int i = 0; i < kSessions; ++i) {
    ids_big.push_back(NewSession(*big, "t"));
    ids_small.push_back(NewSession(*small, "t"));
  }
  for (int turn = 0; turn < kTurns; ++turn) {
    for (int i = 0; i < kSessions; ++i) {
      const std::string text = absl::StrCat("Session ", i, " turn ", turn,
                                            ": tell me something about the number ", i * 7 + turn);
      const TurnResult want = Await(big->Continue("t", ids_big[i], UserTurn(text, 24)));
      const TurnResult got = Await(small->Continue("t", ids_small[i], UserTurn(text, 24)));
      ASSERT_TRUE(want.status.ok()) << want.status;
      ASSERT_TRUE(got.status.ok()) << got.status;
      EXPECT_EQ(got.ids, want.ids) << "session " << i << " turn " << turn;
    }
  }
  int64_t total_kv = 0;
  for (int i = 0; i < kSessions; ++i) {
    EXPECT_EQ(Tokens(*small, "t", ids_small[i]), Tokens(*big, "t", ids_big[i]));
    total_kv += Info(*big, "t", ids_big[i]).kv_bytes;
  }
  EXPECT_GE(total_kv, 4 * static_cast<int64_t>(o.kv_budget_bytes));
  const EngineStats st = small->Stats();
  EXPECT_GT(st.spills_to_host, 0);
  EXPECT_GT(st.spills_to_disk, 0);
  EXPECT_GT(st.restores_from_host + st.restores_from_disk, 0);
  EXPECT_EQ(st.restore_failures, 0);
  EXPECT_TRUE(small->CheckInvariants().ok()) << small->CheckInvariants();
}

// Shutdown writes every session down (durability none included); a new engine on the same
// directory registers them and continues each token-identically.
TEST(Tiers, RestartContinuesEverySessionTokenIdentically) {
  auto model = TestModel(Architecture::kLlama);
  const std::string dir = testing::MakeTempDir() + "/state";
  auto control = MakeEngine(*model);
  std::vector<std::string> ids;
  std::vector<std::string> ctl;
  std::vector<std::string> metadata;
  {
    auto e = MakeEngine(*model, TierOptions(dir));
    ASSERT_NE(e, nullptr);
    int i = 0;
    for (Durability d : {Durability::kAsync, Durability::kSync, Durability::kNone}) {
      SessionParams p{.system_prompt = "Answer.", .metadata = absl::StrCat("m", i), .seed = 5};
      p.durability = d;
      ids.push_back(NewSession(*e, "acme", p));
      p.durability.reset();  // the control engine has no state directory
      ctl.push_back(NewSession(*control, "acme", p));
      for (int turn = 0; turn < 2; ++turn) {
        const auto text = absl::StrCat("Question ", i, ".", turn);
        ASSERT_TRUE(Await(e->Continue("acme", ids.back(), UserTurn(text, 8))).status.ok());
        ASSERT_TRUE(Await(control->Continue("acme", ctl.back(), UserTurn(text, 8))).status.ok());
      }
      ++i;
    }
    EXPECT_TRUE(Info(*e, "acme", ids[1]).durable);  // sync: durable when the turn returned
    EXPECT_GT(e->Stats().writes, 0);
    EXPECT_GT(e->Stats().write_lag_max_seconds, 0.0);
    const ShutdownReport rep = e->Shutdown();
    EXPECT_EQ(rep.written, 3);
    EXPECT_EQ(rep.failed, 0);
    EXPECT_EQ(rep.timed_out, 0);
  }
  auto e = MakeEngine(*model, TierOptions(dir));
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->recovery().sessions, 3);
  EXPECT_TRUE(e->recovery().quarantined.empty());
  for (size_t i = 0; i < ids.size(); ++i) {
    const SessionInfo info = Info(*e, "acme", ids[i]);
    EXPECT_EQ(info.tier, StorageTier::kDisk);  // lazy: KV still on disk
    EXPECT_EQ(info.n_turns, 3);
    EXPECT_EQ(*e->GetMetadata("acme", ids[i]), absl::StrCat("m", i));
    EXPECT_EQ(Tokens(*e, "acme", ids[i]), Tokens(*control, "acme", ctl[i]));
    EXPECT_EQ(e->GetSession("other", ids[i]).status().code(), absl::StatusCode::kNotFound);
    // Sampled (seeded RNG restored) rather than greedy: the RNG state came back too.
    TurnParams p = UserTurn("One more?", 10);
    p.sampling.temperature = 0.9f;
    const TurnResult a = Await(e->Continue("acme", ids[i], p));
    const TurnResult b = Await(control->Continue("acme", ctl[i], p));
    ASSERT_TRUE(a.status.ok()) << a.status;
    EXPECT_EQ(a.ids, b.ids) << "session " << i;
    EXPECT_GT(a.usage.cached_tokens, 0);
  }
  EXPECT_EQ(e->Stats().restores_from_disk, 3);
  EXPECT_TRUE(e->CheckInvariants().ok()) << e->CheckInvariants();
}

// Disk full: a sync turn fails with the write's error and is rolled back; the session stays
// usable in memory, and once the disk has room again its turns are durable.
TEST(Tiers, DiskFullFailsTheSyncTurnAndKeepsTheSession) {
  auto model = TestModel(Architecture::kLlama);
  const std::string dir = testing::MakeTempDir() + "/state";
  cache::FaultInjectingFileOps faults;
  EngineOptions o = TierOptions(dir);
  o.file_ops = &faults;
  o.durability = Durability::kSync;
  auto e = MakeEngine(*model, o);
  ASSERT_NE(e, nullptr);
  const std::string id = NewSession(*e, "t");
  const std::string other = NewSession(*e, "t");
  ASSERT_TRUE(Await(e->Continue("t", id, UserTurn("First.", 6))).status.ok());
  const std::vector<TokenId> before = Tokens(*e, "t", id);
  faults.SetOptions({.fail_after_bytes = 0, .write_errno = ENOSPC});
  const TurnResult r = Await(e->Continue("t", id, UserTurn("Second.", 6)));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kResourceExhausted) << r.status;
  EXPECT_THAT(r.status.message(), HasSubstr("could not be made durable"));
  EXPECT_EQ(Tokens(*e, "t", id), before);  // rolled back
  EXPECT_THAT(Info(*e, "t", id).last_write_error, HasSubstr("seg-"));
  EXPECT_GE(e->Stats().write_failures, 1);
  faults.SetOptions({});
  const TurnResult again = Await(e->Continue("t", id, UserTurn("Second.", 6)));
  ASSERT_TRUE(again.status.ok()) << again.status;
  EXPECT_TRUE(Info(*e, "t", id).durable);
  ASSERT_TRUE(Await(e->Continue("t", other, UserTurn("Unharmed.", 4))).status.ok());
  EXPECT_TRUE(e->CheckInvariants().ok()) << e->CheckInvariants();
}

// A read-only file system (EROFS from every open for writing, injected: root ignores
// permissions) is a clear error at startup naming the directory.
TEST(Tiers, ReadOnlyStateDirectoryIsAClearError) {
  auto model = TestModel(Architecture::kLlama);
  const std::string dir = testing::MakeTempDir() + "/ro";
  fs::create_directories(dir);
  cache::FaultInjectingFileOps faults(
      {.fail_op = cache::FileOp::kOpen, .fail_call_index = 0, .call_errno = EROFS, .sticky = true});
  EngineOptions o = TierOptions(dir);
  o.threads = testing::TestKernelThreads();
  o.file_ops = &faults;
  auto e = Engine::Create(*model, o);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kPermissionDenied) << e.status();
  EXPECT_THAT(e.status().message(), HasSubstr(dir));
}

// A corrupt manifest is quarantined at startup; a corrupt block is found when restoring and
// the KV is recomputed (same output); another model's state is refused with a clear error.
TEST(Tiers, CorruptAndForeignStateNeverLoads) {
  auto model = TestModel(Architecture::kLlama);
  auto other_model = TestModel(Architecture::kQwen2);
  const std::string dir = testing::MakeTempDir() + "/state";
  std::string bad_manifest, bad_block, good;
  std::vector<TokenId> good_tokens;
  TurnResult good_next;
  {
    auto e = MakeEngine(*model, TierOptions(dir));
    bad_manifest = NewSession(*e, "t");
    bad_block = NewSession(*e, "t");
    good = NewSession(*e, "t");
    for (const std::string& id : {bad_manifest, bad_block, good}) {
      ASSERT_TRUE(Await(e->Continue("t", id, UserTurn("Hello there.", 6))).status.ok());
    }
    auto fork = e->Fork("t", good);
    ASSERT_TRUE(fork.ok());
    good_next = Await(e->Continue("t", fork->id, UserTurn("Next?", 8)));
    ASSERT_TRUE(e->DeleteSession("t", fork->id).ok());
    EXPECT_EQ(e->Shutdown().written, 3);
  }
  {  // flip a byte of the manifest body, and of the first block's payload
    std::fstream m(dir + "/" + bad_manifest + "/manifest",
                   std::ios::in | std::ios::out | std::ios::binary);
    m.seekp(40);
    m.put('\x5a');
  }
  {
    std::fstream seg(dir + "/" + bad_block + "/seg-000001.kv",
                     std::ios::in | std::ios::out | std::ios::binary);
    seg.seekg(4096 + 100);
    const char c = static_cast<char>(seg.get());
    seg.seekp(4096 + 100);
    seg.put(static_cast<char>(c ^ 1));
  }
  {
    auto e = MakeEngine(*model, TierOptions(dir));
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->recovery().sessions, 2);
    ASSERT_EQ(e->recovery().quarantined.size(), 1u);
    EXPECT_THAT(e->recovery().quarantined[0], HasSubstr(bad_manifest));
    EXPECT_EQ(e->GetSession("t", bad_manifest).status().code(), absl::StatusCode::kNotFound);
    const TurnResult r = Await(e->Continue("t", bad_block, UserTurn("Next?", 8)));
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(e->Stats().restore_failures, 1);
    EXPECT_EQ(r.ids, good_next.ids);  // the same history, recomputed
    const TurnResult g = Await(e->Continue("t", good, UserTurn("Next?", 8)));
    EXPECT_EQ(g.ids, good_next.ids);
    EXPECT_EQ(e->Stats().restores_from_disk, 1);
  }
  auto foreign = MakeEngine(*other_model, TierOptions(dir));
  ASSERT_NE(foreign, nullptr);
  EXPECT_EQ(foreign->recovery().sessions, 0);
  EXPECT_EQ(foreign->recovery().refused.size(), 2u);
  const auto r = foreign->Continue("t", good, UserTurn("Hi", 2));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("fingerprint"));
  // Another tenant learns nothing about it.
  EXPECT_EQ(foreign->GetSession("u", good).status().code(), absl::StatusCode::kNotFound);
}

// Delete removes a session from every tier: host slots freed, files unlinked.
TEST(Tiers, DeleteRemovesEveryTier) {
  auto model = TestModel(Architecture::kLlama);
  const std::string dir = testing::MakeTempDir() + "/state";
  auto e = MakeEngine(*model, TierOptions(dir));
  const std::string on_host = NewSession(*e, "t");
  const std::string on_disk = NewSession(*e, "t");
  for (const std::string& id : {on_host, on_disk}) {
    ASSERT_TRUE(Await(e->Continue("t", id, UserTurn("Something.", 5))).status.ok());
    ASSERT_TRUE(e->Flush("t", id).ok());
    EXPECT_TRUE(fs::exists(dir + "/" + id + "/manifest"));
  }
  ASSERT_TRUE(e->Demote("t", on_host, StorageTier::kHost).ok());
  ASSERT_TRUE(e->Demote("t", on_disk, StorageTier::kDisk).ok());
  EXPECT_GT(e->Stats().host_bytes_used, 0);
  ASSERT_TRUE(e->DeleteSession("t", on_host).ok());
  ASSERT_TRUE(e->DeleteSession("t", on_disk).ok());
  EXPECT_EQ(e->Stats().host_bytes_used, 0);
  EXPECT_EQ(e->Stats().disk_bytes_used, 0);
  EXPECT_FALSE(fs::exists(dir + "/" + on_host));
  EXPECT_FALSE(fs::exists(dir + "/" + on_disk));
  EXPECT_EQ(e->GetSession("t", on_disk).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(e->Stats().blocks_in_use, 0);
}

TEST(Tiers, QuotasPinsAndLifetimes) {
  auto model = TestModel(Architecture::kLlama);
  const std::string dir = testing::MakeTempDir() + "/state";
  absl::Time now = absl::FromUnixSeconds(1'000'000);
  EngineOptions o = TierOptions(dir);
  o.clock = [&now] { return now; };
  auto probe = MakeEngine(*model);
  const int64_t bb = probe->block_bytes();
  probe.reset();
  o.tenant_host_quota_bytes = static_cast<uint64_t>(bb);  // one block
  o.tenant_disk_quota_bytes = static_cast<uint64_t>(bb) * 3;
  o.durability = Durability::kNone;
  auto e = MakeEngine(*model, o);
  const std::string id = NewSession(*e, "t");
  ASSERT_TRUE(
      Await(e->Continue("t", id, UserTurn("A long enough question, please.", 20))).status.ok());
  ASSERT_GT(Info(*e, "t", id).kv_bytes, bb);
  absl::Status st = e->Demote("t", id, StorageTier::kHost);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_THAT(st.message(), HasSubstr("host quota"));
  ASSERT_TRUE(
      Await(e->Continue("t", id, UserTurn("More words to make it longer still.", 20))).status.ok());
  st = e->Flush("t", id);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_THAT(st.message(), HasSubstr("disk quota"));
  EXPECT_TRUE(Info(*e, "t", id).durable == false);
  e.reset();

  // A pin keeps it on the device tier; idle demotion happens once the pin ends.
  o.tenant_host_quota_bytes = o.tenant_disk_quota_bytes = 0;
  e = MakeEngine(*model, o);
  const std::string pinned = NewSession(
      *e, "u", {.retention = {.pin = absl::Seconds(30), .demote_after_idle = absl::Seconds(5)}});
  ASSERT_TRUE(Await(e->Continue("u", pinned, UserTurn("Wait for the tool.", 4))).status.ok());
  EXPECT_EQ(e->Demote("u", pinned, StorageTier::kHost).code(),
            absl::StatusCode::kFailedPrecondition);
  now += absl::Seconds(10);
  e->MaintainTiers();
  EXPECT_EQ(Info(*e, "u", pinned).tier, StorageTier::kDevice);
  now += absl::Seconds(30);
  e->MaintainTiers();
  EXPECT_EQ(Info(*e, "u", pinned).tier, StorageTier::kHost);
  ASSERT_TRUE(e->SetRetention("u", pinned, {.max_lifetime = absl::Minutes(1)}).ok());
  now += absl::Minutes(1);
  e->MaintainTiers();
  EXPECT_EQ(e->GetSession("u", pinned).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(e->Stats().host_bytes_used, 0);
}

// Export from one engine, import into another (another tenant): the same continuation.
TEST(Tiers, ExportImportContinuesIdentically) {
  auto model = TestModel(Architecture::kLlama);
  const std::string root = testing::MakeTempDir();
  auto a = MakeEngine(*model, TierOptions(root + "/a"));
  auto b = MakeEngine(*model, TierOptions(root + "/b"));
  const std::string id = NewSession(*a, "t", {.system_prompt = "Hi."});
  ASSERT_TRUE(Await(a->Continue("t", id, UserTurn("Portable?", 7))).status.ok());
  ASSERT_TRUE(a->ExportSession("t", id, root + "/s.mnemo").ok());
  auto imported = b->ImportSession("other", root + "/s.mnemo");
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->id, id);
  EXPECT_EQ(b->ImportSession("other", root + "/s.mnemo").status().code(),
            absl::StatusCode::kAlreadyExists);
  const TurnResult x = Await(a->Continue("t", id, UserTurn("Next?", 9)));
  const TurnResult y = Await(b->Continue("other", id, UserTurn("Next?", 9)));
  ASSERT_TRUE(y.status.ok()) << y.status;
  EXPECT_EQ(x.ids, y.ids);
  EXPECT_GT(y.usage.cached_tokens, 0);
}

// compress_cold: the host and disk tiers hold int8 blocks (about half the bytes); what comes
// back is exactly Decompress(Compress(block)) of what left (the rows past the last token
// zeroed first), and the restored session continues.
TEST(Tiers, CompressedColdTiersRestoreTheInt8RoundTrip) {
  auto model = TestModel(Architecture::kLlama);
  const std::string dir = testing::MakeTempDir();
  EngineOptions o = TierOptions(dir + "/state");
  o.compress_cold = true;
  // Without the prefix index, so that every block is decoded (with it, full blocks whose
  // hash is still cached on the device tier come back from there, exact).
  o.prefix_cache = false;
  auto e = MakeEngine(*model, o);
  ASSERT_NE(e, nullptr);
  const std::string via_host = NewSession(*e, "t", {.system_prompt = "Be brief."});
  const std::string via_disk = NewSession(*e, "t", {.system_prompt = "Be brief."});
  for (const std::string& id : {via_host, via_disk}) {
    ASSERT_TRUE(Await(e->Continue("t", id, UserTurn("Tell me about the sea.", 9))).status.ok());
  }
  const std::string before = KvBytes(*e, "t", via_host);
  ASSERT_EQ(FirstDiff(before, KvBytes(*e, "t", via_disk)), -1);  // same history, same KV
  const int64_t kv_tokens = Info(*e, "t", via_host).kv_tokens;

  // What a round trip must give: each block compressed and decompressed, the unused rows
  // of the last block zeroed before.
  auto fwd = LlamaForward::Create(*model, {.threads = 1});
  ASSERT_TRUE(fwd.ok());
  const kernels::KvLayout layout = (*fwd)->KvLayoutFor(kernels::DType::kF16, 16);
  const size_t bb = static_cast<size_t>(layout.block_bytes());
  std::string want = before;
  std::vector<uint8_t> packed(static_cast<size_t>(kernels::CompressedBlockBytes(layout)));
  for (size_t b = 0; b * bb < want.size(); ++b) {
    auto* block = reinterpret_cast<uint8_t*>(want.data() + b * bb);
    const int64_t rows = std::min<int64_t>(16, kv_tokens - static_cast<int64_t>(b) * 16);
    for (int64_t t = 0; t < kernels::KvCompressedTiles(layout) && rows < 16; ++t) {
      uint8_t* tile = block + t * layout.tile_elems() * 2;
      std::fill(tile + rows * layout.head_dim * 2, tile + layout.tile_elems() * 2, 0);
    }
    kernels::CompressKvBlock(layout, block, packed.data());
    kernels::DecompressKvBlock(layout, packed.data(), block);
  }
  ASSERT_NE(FirstDiff(want, before), -1);  // int8 is lossy

  ASSERT_TRUE(e->Demote("t", via_host, StorageTier::kHost).ok());
  const int64_t blocks = static_cast<int64_t>(before.size() / bb);
  EXPECT_EQ(Info(*e, "t", via_host).host_bytes, blocks * kernels::CompressedBlockBytes(layout));
  EXPECT_LT(2 * Info(*e, "t", via_host).host_bytes, 3 * static_cast<int64_t>(before.size()) / 2);
  EXPECT_EQ(FirstDiff(KvBytes(*e, "t", via_host), want), -1);

  ASSERT_TRUE(e->Demote("t", via_disk, StorageTier::kDisk).ok());
  EXPECT_EQ(Info(*e, "t", via_disk).disk_bytes, blocks * kernels::CompressedBlockBytes(layout));
  EXPECT_EQ(FirstDiff(KvBytes(*e, "t", via_disk), want), -1);
  const TurnResult r = Await(e->Continue("t", via_disk, UserTurn("And the mountains?", 12)));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.usage.cached_tokens, kv_tokens);  // restored, not recomputed
  EXPECT_TRUE(e->CheckInvariants().ok()) << e->CheckInvariants();
}

}  // namespace
}  // namespace mnemo::engine
