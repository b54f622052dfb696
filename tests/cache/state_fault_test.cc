// Fault injection into the state directory's file operations (FaultInjectingFileOps): a full
// disk and I/O errors at every call of a turn's write. Whatever fails, the state on disk
// reads back as the last committed turn or the new one, never anything else.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "cache/file_ops.h"
#include "cache/state_store.h"
#include "tests/cache/state_test_util.h"
#include "tests/test_util.h"

namespace mnemo::cache {
namespace {

using testing::CommitTurn;
using testing::Entries;
using testing::FullRecord;
using testing::OpenDir;
using testing::Payloads;
using testing::RandomPayloads;
using testing::Spans;
using testing::TestId;

constexpr size_t kBlockBytes = 256;

bool Contains(absl::string_view haystack, absl::string_view needle) {
  return haystack.find(needle) != absl::string_view::npos;
}

// Committed turn 1 (3 blocks) of TestId(1) in a fresh directory; returns its record.
SessionRecord SetUpTurn1(const std::string& root) {
  return CommitTurn(*OpenDir(root), TestId(1), {}, RandomPayloads(3, kBlockBytes, 1));
}

// What a clean StateDir reads back for TestId(1), with every block checked.
absl::StatusOr<SessionRecord> ReadBack(const std::string& root) {
  auto dir = OpenDir(root);
  if (dir == nullptr) return absl::InternalError("cannot open");
  auto r = dir->ReadManifest(TestId(1));
  if (!r.ok()) return r.status();
  if (absl::Status s = dir->Verify(TestId(1)); !s.ok()) return s;
  return r;
}

TEST(StateFaultTest, DiskFullDuringAppendBlocksKeepsTheOldState) {
  const std::string root = mnemo::testing::MakeTempDir();
  const SessionRecord turn1 = SetUpTurn1(root);
  // The 48-byte header and one payload fit; the second (at 8192) is cut short after 96 bytes.
  FaultInjectingFileOps faulty({.fail_after_bytes = 400});
  auto dir = OpenDir(root, /*fsync=*/true, &faulty);
  const Payloads p = RandomPayloads(4, kBlockBytes, 2);
  auto added = dir->AppendBlocks(TestId(1), Spans(p));
  ASSERT_TRUE(absl::IsResourceExhausted(added.status())) << added.status();
  const std::string seg = root + "/" + TestId(1).ToString() + "/seg-000002.kv";
  EXPECT_TRUE(Contains(added.status().message(), seg + ": write at offset 8288 failed"))
      << added.status();
  EXPECT_TRUE(Contains(added.status().message(), "No space left on device")) << added.status();
  EXPECT_GT(faulty.faults(), 0);
  // The half-written segment is gone; the committed turn reads back.
  EXPECT_EQ(Entries(root + "/" + TestId(1).ToString()),
            (std::vector<std::string>{"manifest", "seg-000001.kv"}));
  auto back = ReadBack(root);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == turn1);

  // Space again: the next attempt succeeds.
  faulty.SetOptions({});
  SessionRecord turn2 = CommitTurn(*dir, TestId(1), turn1.blocks, p);
  back = ReadBack(root);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == turn2);
}

TEST(StateFaultTest, DiskFullDuringWriteManifestKeepsTheOldManifest) {
  const std::string root = mnemo::testing::MakeTempDir();
  const SessionRecord turn1 = SetUpTurn1(root);
  FaultInjectingFileOps faulty;
  auto dir = OpenDir(root, /*fsync=*/true, &faulty);
  auto added = dir->AppendBlocks(TestId(1), Spans(RandomPayloads(2, kBlockBytes, 2)));
  ASSERT_TRUE(added.ok()) << added.status();
  std::vector<DiskBlock> blocks = turn1.blocks;
  blocks.insert(blocks.end(), added->begin(), added->end());
  faulty.ResetCounters();
  faulty.SetOptions({.fail_after_bytes = 100});
  const absl::Status s = dir->WriteManifest(FullRecord(TestId(1), blocks));
  ASSERT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_TRUE(Contains(s.message(), "/manifest.tmp: write at offset 100 failed")) << s;
  auto back = ReadBack(root);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == turn1);
  // The turn's segment is unreferenced garbage; no temporary manifest is left.
  faulty.SetOptions({});
  EXPECT_EQ(*dir->CollectGarbage(TestId(1)), 1);
  EXPECT_EQ(Entries(root + "/" + TestId(1).ToString()),
            (std::vector<std::string>{"manifest", "seg-000001.kv"}));
}

TEST(StateFaultTest, FsyncErrorsAreReportedWithThePath) {
  const std::string root = mnemo::testing::MakeTempDir();
  const SessionRecord turn1 = SetUpTurn1(root);
  FaultInjectingFileOps faulty({.fail_op = FileOp::kFsync, .fail_call_index = 0});
  auto dir = OpenDir(root, /*fsync=*/true, &faulty);
  auto added = dir->AppendBlocks(TestId(1), Spans(RandomPayloads(1, kBlockBytes, 2)));
  ASSERT_TRUE(absl::IsUnavailable(added.status())) << added.status();
  EXPECT_TRUE(Contains(added.status().message(), "seg-000002.kv: fsync failed: Input/output error"))
      << added.status();
  EXPECT_EQ(Entries(root + "/" + TestId(1).ToString()),
            (std::vector<std::string>{"manifest", "seg-000001.kv"}));
  EXPECT_TRUE(*ReadBack(root) == turn1);
}

TEST(StateFaultTest, ReadErrorsAreReported) {
  const std::string root = mnemo::testing::MakeTempDir();
  const SessionRecord turn1 = SetUpTurn1(root);
  FaultInjectingFileOps faulty({.fail_op = FileOp::kPread, .fail_call_index = 0, .sticky = true});
  auto dir = OpenDir(root, /*fsync=*/false, &faulty);
  auto r = dir->ReadManifest(TestId(1));
  ASSERT_TRUE(absl::IsUnavailable(r.status())) << r.status();
  EXPECT_TRUE(Contains(r.status().message(), "/manifest: read at offset 0 failed")) << r.status();
  std::vector<uint8_t> out(kBlockBytes);
  EXPECT_TRUE(absl::IsUnavailable(dir->ReadBlock(TestId(1), turn1.blocks[0], out)));
  // An I/O error is not corruption: Scan reports the session but does not quarantine it.
  auto scan = dir->Scan();
  ASSERT_TRUE(scan.ok()) << scan.status();
  EXPECT_TRUE(scan->sessions.empty());
  EXPECT_TRUE(scan->quarantined.empty());
  ASSERT_EQ(scan->skipped.size(), 1u);
  EXPECT_TRUE(absl::IsUnavailable(scan->skipped[0].status));
}

// Every call of a turn (AppendBlocks + WriteManifest, with fsync), failed in turn: the call
// reports an error (or, for a failure after the commit point, may still report one), and the
// directory reads back as turn 1 or turn 2 — never torn, never unreadable.
TEST(StateFaultTest, AFailureAtAnyCallLeavesTheOldOrTheNewTurn) {
  const Payloads p2 = RandomPayloads(3, kBlockBytes, 2);
  // Count the calls of a clean turn.
  FaultInjectingFileOps counting;
  {
    const std::string root = mnemo::testing::MakeTempDir();
    const SessionRecord turn1 = SetUpTurn1(root);
    auto dir = OpenDir(root, /*fsync=*/true, &counting);
    counting.ResetCounters();  // count the turn only, not Open
    CommitTurn(*dir, TestId(1), turn1.blocks, p2);
  }
  int cases = 0;
  for (int op = 0; op < kNumFileOps; ++op) {
    const int64_t n_calls = counting.calls(static_cast<FileOp>(op));
    for (int64_t k = 0; k < n_calls; ++k) {
      SCOPED_TRACE(::testing::Message() << "op " << op << " call " << k);
      const std::string root = mnemo::testing::MakeTempDir();
      const SessionRecord turn1 = SetUpTurn1(root);
      FaultInjectingFileOps faulty;
      auto dir = OpenDir(root, /*fsync=*/true, &faulty);
      faulty.ResetCounters();
      faulty.SetOptions(
          {.fail_op = static_cast<FileOp>(op), .fail_call_index = k, .call_errno = EIO});
      auto added = dir->AppendBlocks(TestId(1), Spans(p2));
      SessionRecord turn2;
      bool committed = false;
      if (added.ok()) {
        std::vector<DiskBlock> blocks = turn1.blocks;
        blocks.insert(blocks.end(), added->begin(), added->end());
        turn2 = FullRecord(TestId(1), blocks);
        committed = dir->WriteManifest(turn2).ok();
      } else {
        EXPECT_TRUE(Contains(added.status().message(), root)) << added.status();
      }
      EXPECT_EQ(faulty.faults(), 1);
      auto back = ReadBack(root);
      ASSERT_TRUE(back.ok()) << back.status();
      if (committed) {
        EXPECT_TRUE(*back == turn2);
      } else {
        EXPECT_TRUE(*back == turn1 || (added.ok() && *back == turn2));
      }
      // Nothing but garbage is ever left, and it is collectable.
      EXPECT_TRUE(OpenDir(root)->Scan().ok());
      ++cases;
    }
  }
  EXPECT_GT(cases, 15);
}

}  // namespace
}  // namespace mnemo::cache
