// The tiers over a KV arena the CPU may not touch (a GPU's): every block byte that spills,
// restores, is written behind or exported must go through ArenaMemory::Copy. The arena here
// is host memory that says it is not host-accessible and counts the copies; an engine over
// it must do exactly what an engine over (equally zeroed) host memory does, byte for byte.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "cache/arena_memory.h"
#include "engine/engine.h"
#include "tests/engine/engine_test_util.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

// Host memory, zeroed when allocated (the unused rows of a session's last block are exported
// too, and must not depend on what the heap held before), that may say it is not
// host-accessible; counts the bytes that go through Copy.
class TestMemory final : public cache::ArenaMemory {
 public:
  explicit TestMemory(bool accessible) : accessible_(accessible) {}
  void* Allocate(size_t n) override {
    void* p = cache::HostArenaMemory().Allocate(n);
    if (p != nullptr) std::memset(p, 0, n);
    return p;
  }
  void Free(void* p) override { cache::HostArenaMemory().Free(p); }
  void Copy(void* dst, const void* src, size_t n) override {  // from the I/O workers too
    copies.fetch_add(1);
    bytes.fetch_add(static_cast<int64_t>(n));
    cache::HostArenaMemory().Copy(dst, src, n);
  }
  bool host_accessible() const override { return accessible_; }

  std::atomic<int64_t> copies{0};
  std::atomic<int64_t> bytes{0};

 private:
  const bool accessible_;
};

// What one scenario observed: the exported KV after every step and the turns' ids.
struct Trace {
  std::vector<std::string> kv;
  std::vector<std::vector<TokenId>> ids;
  EngineStats stats;
  std::vector<int64_t> copied;  // bytes through TestMemory::Copy at each mark
};

std::string Kv(Engine& e, const std::string& id) {
  auto b = e.SessionKvBytes("t", id);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : "";
}

// Two sessions; one goes device -> host -> device -> disk -> device (written behind on the
// way), both take another turn; then a new engine over plain memory resumes from disk.
Trace RunScenario(const Model& model, bool compress, TestMemory* memory) {
  Trace t;
  const auto mark = [&] { t.copied.push_back(memory != nullptr ? memory->bytes.load() : 0); };
  const std::string dir = testing::MakeTempDir();
  EngineOptions o;
  o.host_budget_bytes = 64 << 20;
  o.state_dir = dir + "/state";
  o.fsync = false;
  o.durability = Durability::kNone;  // only `moved` (sync) writes before shutdown, so every
                                     // copy between two marks is the step's own
  o.compress_cold = compress;
  o.prefix_cache = false;  // every block decoded on restore
  o.kv_memory = memory;
  std::string moved;
  {
    auto e = MakeEngine(model, o);
    EXPECT_NE(e, nullptr);
    if (e == nullptr) return t;
    moved = NewSession(*e, "t", {.system_prompt = "Be brief.", .durability = Durability::kSync});
    const std::string stayed = NewSession(*e, "t", {.system_prompt = "Be brief."});
    for (const std::string& id : {moved, stayed}) {
      const TurnResult r = Await(e->Continue("t", id, UserTurn("Tell me about the sea.", 9)));
      EXPECT_TRUE(r.status.ok()) << r.status;
      t.ids.push_back(r.ids);
    }
    mark();  // 0
    t.kv.push_back(Kv(*e, moved));
    mark();  // 1: + the export
    EXPECT_TRUE(e->Demote("t", moved, StorageTier::kHost).ok());
    mark();                         // 2: + the spill to the host tier
    t.kv.push_back(Kv(*e, moved));  // restored from the host tier
    mark();                         // 3: + the restore and the export
    EXPECT_TRUE(e->Demote("t", moved, StorageTier::kDisk).ok());
    mark();                         // 4: (on disk already: written behind, sync)
    t.kv.push_back(Kv(*e, moved));  // restored from disk
    mark();                         // 5: + the restore and the export
    for (const std::string& id : {moved, stayed}) {
      const TurnResult r = Await(e->Continue("t", id, UserTurn("And the mountains?", 12)));
      EXPECT_TRUE(r.status.ok()) << r.status;
      t.ids.push_back(r.ids);
    }
    t.kv.push_back(Kv(*e, moved));
    EXPECT_TRUE(e->CheckInvariants().ok()) << e->CheckInvariants();
    t.stats = e->Stats();
  }
  TestMemory plain(/*accessible=*/true);  // what was written behind reads back anywhere
  o.kv_memory = &plain;
  auto again = MakeEngine(model, o);
  EXPECT_NE(again, nullptr);
  if (again == nullptr) return t;
  const TurnResult r = Await(again->Continue("t", moved, UserTurn("And the rivers?", 8)));
  EXPECT_TRUE(r.status.ok()) << r.status;
  t.ids.push_back(r.ids);
  t.kv.push_back(Kv(*again, moved));
  return t;
}

void ExpectSame(const Trace& got, const Trace& want) {
  ASSERT_EQ(got.kv.size(), want.kv.size());
  for (size_t i = 0; i < want.kv.size(); ++i) {
    ASSERT_FALSE(want.kv[i].empty()) << "step " << i;
    EXPECT_TRUE(got.kv[i] == want.kv[i]) << "exported KV differs at step " << i;
  }
  EXPECT_EQ(got.ids, want.ids);
  EXPECT_EQ(got.stats.spills_to_host, want.stats.spills_to_host);
  EXPECT_EQ(got.stats.restores_from_disk, want.stats.restores_from_disk);
  EXPECT_EQ(got.stats.restore_failures, 0);
}

TEST(TiersDeviceMemory, RawColdTiersMoveEveryByteThroughCopyAndMatchHostMemory) {
  auto model = TestModel(Architecture::kLlama);
  TestMemory host(/*accessible=*/true), opaque(/*accessible=*/false);
  const Trace want = RunScenario(*model, /*compress=*/false, &host);
  const Trace got = RunScenario(*model, /*compress=*/false, &opaque);
  ExpectSame(got, want);
  EXPECT_EQ(got.stats.spills_to_host, 1);
  EXPECT_EQ(got.stats.restores_from_host, 1);
  // Each step moved the session's blocks through Copy: exports, the spill, the restores
  // (raw: exactly the session's bytes each), and the sync session's writes behind before.
  const int64_t kv = static_cast<int64_t>(want.kv[0].size());
  ASSERT_EQ(got.copied.size(), 6u);
  EXPECT_GE(got.copied[0], kv);                      // written behind (sync) from device memory
  EXPECT_EQ(got.copied[1] - got.copied[0], kv);      // export
  EXPECT_EQ(got.copied[2] - got.copied[1], kv);      // spill to the host tier
  EXPECT_EQ(got.copied[3] - got.copied[2], 2 * kv);  // restore + export
  EXPECT_EQ(got.copied[5] - got.copied[4], 2 * kv);  // restore from disk + export
}

TEST(TiersDeviceMemory, CompressedColdTiersMatchHostMemory) {
  auto model = TestModel(Architecture::kLlama);
  TestMemory host(/*accessible=*/true), opaque(/*accessible=*/false);
  const Trace want = RunScenario(*model, /*compress=*/true, &host);
  const Trace got = RunScenario(*model, /*compress=*/true, &opaque);
  ExpectSame(got, want);
  EXPECT_NE(want.kv[0], want.kv[1]);  // int8 is lossy: the cold tiers really ran
  EXPECT_GT(opaque.copies.load(), 0);
}

// A window compaction over an arena the CPU may not touch reads the blocks holding kept rows
// and writes the new ones through Copy, nothing else, and leaves the same bytes as over
// host memory. 200 tokens keeping 60 (4 sinks): rows [0, 4) and [144, 200) are read from 5
// of the 13 blocks, 4 blocks are written.
TEST(TiersDeviceMemory, CompactionMovesBlockBytesOnlyThroughCopy) {
  auto model = TestModel(Architecture::kLlama, 256);
  std::string kv[2];
  for (bool accessible : {false, true}) {
    TestMemory memory(accessible);
    EngineOptions o;
    o.kv_memory = &memory;
    auto e = MakeEngine(*model, o);
    ASSERT_NE(e, nullptr);
    const std::string id = NewSession(*e, "t");
    ASSERT_TRUE(
        Await(e->Continue("t", id, TokenTurn(testing::SomeTokens(200, kTestModelVocabSize, 2), 0)))
            .status.ok());
    const int64_t before = memory.bytes.load();
    ASSERT_TRUE(e->Compact("t", id, cache::CompactionPolicy::kWindow, 60).ok());
    EXPECT_EQ(memory.bytes.load() - before, 9 * e->block_bytes()) << "accessible " << accessible;
    kv[accessible] = Kv(*e, id);
  }
  EXPECT_EQ(FirstDiff(kv[0], kv[1]), -1);
  EXPECT_EQ(kv[0].size(), 4u * static_cast<size_t>(16 * 2 * 2 * 2 * 64 * 2));
}

}  // namespace
}  // namespace mnemo::engine
