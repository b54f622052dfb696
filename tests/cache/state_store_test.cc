#include "cache/state_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/cache/state_test_util.h"
#include "tests/test_util.h"

namespace mnemo::cache {
namespace {

using testing::CommitTurn;
using testing::Entries;
using testing::FileSize;
using testing::FlipBit;
using testing::FullRecord;
using testing::OpenDir;
using testing::Payloads;
using testing::RandomPayloads;
using testing::ReadBytes;
using testing::Spans;
using testing::TestId;
using testing::Truncate;

constexpr size_t kBlockBytes = 256;  // StateLayout()

bool Contains(absl::string_view haystack, absl::string_view needle) {
  return haystack.find(needle) != absl::string_view::npos;
}

// The payloads of `blocks`, read back one by one.
Payloads ReadAll(const StateDir& dir, const SessionId& id, const std::vector<DiskBlock>& blocks) {
  Payloads out;
  for (const DiskBlock& b : blocks) {
    std::vector<uint8_t> p(b.length);
    const absl::Status s = dir.ReadBlock(id, b, p);
    EXPECT_TRUE(s.ok()) << s;
    out.push_back(std::move(p));
  }
  return out;
}

Payloads Concat(const Payloads& a, const Payloads& b) {
  Payloads out = a;
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

// A fresh state directory (fsync off) per test.
class StateDirTest : public ::testing::Test {
 protected:
  // <root_>/<id>/<name>
  std::string PathOf(const SessionId& id, const std::string& name) const {
    return root_ + "/" + id.ToString() + "/" + name;
  }
  // Commits one turn of `n_blocks` random blocks (seeded by the id) for session TestId(seed).
  SessionRecord Commit(uint8_t seed, size_t n_blocks) {
    return CommitTurn(*dir_, TestId(seed), {}, RandomPayloads(n_blocks, kBlockBytes, seed));
  }

  const std::string root_ = mnemo::testing::MakeTempDir();
  std::unique_ptr<StateDir> dir_ = OpenDir(root_);
};

TEST(StateDirOpenTest, CreatesMissingDirectoriesAndRefusesFiles) {
  const std::string root = mnemo::testing::MakeTempDir();
  auto dir = StateDir::Open(root + "/a/b/state/");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ((*dir)->path(), root + "/a/b/state");
  EXPECT_TRUE(std::filesystem::is_directory(root + "/a/b/state"));
  EXPECT_TRUE(Entries(root + "/a/b/state").empty());  // the write probe is gone

  testing::WriteBytes(root + "/file", "x");
  auto not_dir = StateDir::Open(root + "/file");
  ASSERT_TRUE(absl::IsInvalidArgument(not_dir.status())) << not_dir.status();
  EXPECT_TRUE(Contains(not_dir.status().message(), root + "/file: not a directory"));
  EXPECT_FALSE(StateDir::Open(root + "/file/sub").ok());
}

TEST(StateDirOpenTest, ReadOnlyCreatesNothingAndRefusesEveryWrite) {
  namespace fs = std::filesystem;
  const std::string root = mnemo::testing::MakeTempDir();
  auto missing = StateDir::Open(root + "/absent", {.read_only = true});
  ASSERT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  EXPECT_EQ(missing.status().message(), "no state directory at " + root + "/absent");
  EXPECT_FALSE(fs::exists(root + "/absent"));

  const SessionId id = TestId(5);
  const SessionRecord r =
      CommitTurn(*OpenDir(root + "/s"), id, {}, RandomPayloads(2, kBlockBytes, 5));
  auto bundle_writer = OpenDir(root + "/s");
  ASSERT_TRUE(bundle_writer->Export(id, root + "/b.bundle").ok());
  fs::create_directory(root + "/s/" + TestId(6).ToString());  // garbage Scan would remove
  const std::vector<std::string> before = Entries(root + "/s");

  auto dir = StateDir::Open(root + "/s", {.read_only = true});
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto read = (*dir)->ReadManifest(id);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(*read == r);
  EXPECT_TRUE((*dir)->Verify(id).ok());
  EXPECT_TRUE((*dir)->Export(id, root + "/c.bundle").ok());

  const Payloads p = RandomPayloads(1, kBlockBytes, 7);
  const std::vector<absl::Status> refused = {(*dir)->AppendBlocks(id, Spans(p)).status(),
                                             (*dir)->WriteManifest(r),
                                             (*dir)->CollectGarbage(id).status(),
                                             (*dir)->Scan().status(),
                                             (*dir)->Remove(id),
                                             (*dir)->Import(root + "/b.bundle").status()};
  for (const absl::Status& s : refused) {
    EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
    EXPECT_TRUE(Contains(s.message(), "was opened read-only")) << s;
  }
  EXPECT_EQ(Entries(root + "/s"), before);
  EXPECT_EQ(Entries(root + "/s/" + id.ToString()),
            (std::vector<std::string>{"manifest", "seg-000001.kv"}));
}

TEST_F(StateDirTest, RoundTripsARecordAndItsBlocksByteForByte) {
  const std::string root = mnemo::testing::MakeTempDir();
  const SessionId id = TestId(1);
  const Payloads payloads = RandomPayloads(9, kBlockBytes, 42);
  SessionRecord written;
  {
    auto dir = OpenDir(root, /*fsync=*/true);
    written = CommitTurn(*dir, id, {}, payloads);
  }
  for (const DiskBlock& b : written.blocks) {
    EXPECT_EQ(b.segment, 1u);
    EXPECT_EQ(b.offset % kStateAlignment, 0u);
    EXPECT_GE(b.offset, kStateAlignment);
    EXPECT_EQ(b.length, kBlockBytes);
  }
  EXPECT_EQ(Entries(root + "/" + id.ToString()),
            (std::vector<std::string>{"manifest", "seg-000001.kv"}));

  auto dir = OpenDir(root);  // a fresh object: nothing cached
  auto back = dir->ReadManifest(id);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == written);
  EXPECT_EQ(ReadAll(*dir, id, back->blocks), payloads);
  std::vector<uint8_t> packed(kBlockBytes * payloads.size());
  ASSERT_TRUE(dir->ReadBlocks(id, back->blocks, packed).ok());
  for (size_t i = 0; i < payloads.size(); ++i) {
    EXPECT_TRUE(
        std::equal(payloads[i].begin(), payloads[i].end(), packed.begin() + i * kBlockBytes));
  }
  EXPECT_TRUE(dir->Verify(id).ok());
  std::vector<uint8_t> wrong(kBlockBytes - 1);
  EXPECT_TRUE(absl::IsInvalidArgument(dir->ReadBlock(id, back->blocks[0], wrong)));
  EXPECT_TRUE(absl::IsNotFound(dir->ReadManifest(TestId(99)).status()));
}

TEST_F(StateDirTest, ASecondTurnWritesOnlyItsNewBlocks) {
  const std::string root = mnemo::testing::MakeTempDir();
  auto dir = OpenDir(root);
  const SessionId id = TestId(2);
  const std::string sdir = root + "/" + id.ToString();
  const Payloads first = RandomPayloads(40, kBlockBytes, 1);
  const SessionRecord turn1 = CommitTurn(*dir, id, {}, first);
  const std::string seg1_before = ReadBytes(sdir + "/seg-000001.kv");

  const Payloads second = RandomPayloads(2, kBlockBytes, 2);
  const SessionRecord turn2 = CommitTurn(*dir, id, turn1.blocks, second);
  // One new segment holding exactly the 2 new blocks (header page + 2 aligned payloads);
  // the first segment is untouched.
  EXPECT_EQ(Entries(sdir),
            (std::vector<std::string>{"manifest", "seg-000001.kv", "seg-000002.kv"}));
  EXPECT_EQ(FileSize(sdir + "/seg-000002.kv"), 2 * kStateAlignment + kBlockBytes);
  EXPECT_EQ(FileSize(sdir + "/seg-000001.kv"), 40 * kStateAlignment + kBlockBytes);
  EXPECT_EQ(ReadBytes(sdir + "/seg-000001.kv"), seg1_before);
  EXPECT_EQ(turn2.blocks[40].segment, 2u);
  EXPECT_EQ(turn2.blocks[41].offset, 2 * kStateAlignment);

  auto back = OpenDir(root)->ReadManifest(id);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == turn2);
  EXPECT_EQ(ReadAll(*dir, id, back->blocks), Concat(first, second));

  // A fresh StateDir continues the numbering (no collision with existing segments).
  auto reopened = OpenDir(root);
  auto third = reopened->AppendBlocks(id, Spans(RandomPayloads(1, kBlockBytes, 3)));
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ((*third)[0].segment, 3u);
  // No payloads: nothing written.
  auto none = reopened->AppendBlocks(id, {});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(Entries(sdir).size(), 4u);
}

// A damaged manifest is a clear error naming the file: truncated or bit-flipped (DataLoss),
// or of a format version this build does not read (FailedPrecondition).
TEST_F(StateDirTest, DamagedManifestIsAClearError) {
  struct Case {
    const char* want;  // in the message, after "<path>: "
    absl::StatusCode code;
    void (*damage)(const std::string& path);
  };
  const Case cases[] = {
      {"manifest is", absl::StatusCode::kDataLoss,
       [](const std::string& path) { Truncate(path, FileSize(path) / 2); }},
      {"manifest checksum mismatch", absl::StatusCode::kDataLoss,
       [](const std::string& path) { FlipBit(path, FileSize(path) - 9, 3); }},
      {"manifest format version 2", absl::StatusCode::kFailedPrecondition,
       [](const std::string& path) {
         std::string bytes = ReadBytes(path);
         bytes[8] = 2;
         testing::WriteBytes(path, bytes);
       }},
  };
  uint8_t seed = 3;
  for (const Case& c : cases) {
    Commit(seed, 3);
    const std::string manifest = PathOf(TestId(seed), "manifest");
    c.damage(manifest);
    auto r = dir_->ReadManifest(TestId(seed));
    EXPECT_EQ(r.status().code(), c.code) << r.status();
    EXPECT_TRUE(Contains(r.status().message(), manifest + ": " + c.want)) << r.status();
    ++seed;
  }
}

TEST_F(StateDirTest, BitFlippedBlockIsDataLossOnRead) {
  const SessionId id = TestId(5);
  const SessionRecord r = Commit(5, 3);
  const std::string seg = PathOf(id, "seg-000001.kv");
  FlipBit(seg, r.blocks[1].offset + 100, 6);
  ASSERT_TRUE(dir_->ReadManifest(id).ok());  // blocks are checked when read
  std::vector<uint8_t> out(kBlockBytes);
  EXPECT_TRUE(dir_->ReadBlock(id, r.blocks[0], out).ok());
  const absl::Status s = dir_->ReadBlock(id, r.blocks[1], out);
  ASSERT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_TRUE(Contains(s.message(), seg + ": block at offset 8192")) << s;
  EXPECT_TRUE(Contains(s.message(), "checksum")) << s;
  EXPECT_TRUE(absl::IsDataLoss(dir_->Verify(id)));
}

TEST_F(StateDirTest, ManifestReferencingPastASegmentsEndIsDataLoss) {
  const SessionId id = TestId(7);
  const SessionRecord r = Commit(7, 4);
  const std::string seg = PathOf(id, "seg-000001.kv");
  Truncate(seg, r.blocks[3].offset + 10);
  auto read = dir_->ReadManifest(id);
  ASSERT_TRUE(absl::IsDataLoss(read.status())) << read.status();
  EXPECT_TRUE(Contains(read.status().message(), seg)) << read.status();
  EXPECT_TRUE(Contains(read.status().message(), "ends past the end of the segment file"))
      << read.status();

  std::filesystem::remove(seg);
  read = dir_->ReadManifest(id);
  ASSERT_TRUE(absl::IsDataLoss(read.status())) << read.status();
  EXPECT_TRUE(Contains(read.status().message(), seg + ": segment file is missing"));
}

TEST_F(StateDirTest, SegmentOfAnotherSessionIsDataLoss) {
  Commit(8, 2);
  Commit(9, 2);
  std::filesystem::copy_file(PathOf(TestId(9), "seg-000001.kv"), PathOf(TestId(8), "seg-000001.kv"),
                             std::filesystem::copy_options::overwrite_existing);
  auto read = dir_->ReadManifest(TestId(8));
  ASSERT_TRUE(absl::IsDataLoss(read.status())) << read.status();
  EXPECT_TRUE(Contains(read.status().message(), "another session")) << read.status();
}

TEST_F(StateDirTest, ScanQuarantinesTheCorruptKeepsTheGoodAndCollectsGarbage) {
  const std::string root = mnemo::testing::MakeTempDir();
  std::vector<SessionRecord> good;
  {
    auto dir = OpenDir(root);
    for (uint8_t s = 10; s < 13; ++s) {
      good.push_back(CommitTurn(*dir, TestId(s), {}, RandomPayloads(2, kBlockBytes, s)));
    }
    // Garbage in a good session: an unreferenced segment and a stale temporary manifest.
    ASSERT_TRUE(dir->AppendBlocks(TestId(10), Spans(RandomPayloads(1, kBlockBytes, 1))).ok());
    testing::WriteBytes(root + "/" + TestId(10).ToString() + "/manifest.tmp", "partial");
    CommitTurn(*dir, TestId(20), {}, RandomPayloads(2, kBlockBytes, 20));  // bit flip
    const SessionRecord short_seg =
        CommitTurn(*dir, TestId(21), {}, RandomPayloads(2, kBlockBytes, 21));
    CommitTurn(*dir, TestId(22), {}, RandomPayloads(1, kBlockBytes, 22));  // version 9
    // A session whose first manifest was never written.
    ASSERT_TRUE(dir->AppendBlocks(TestId(23), Spans(RandomPayloads(1, kBlockBytes, 23))).ok());
    FlipBit(root + "/" + TestId(20).ToString() + "/manifest", 40);
    Truncate(root + "/" + TestId(21).ToString() + "/seg-000001.kv", short_seg.blocks[1].offset);
    std::string v9 = ReadBytes(root + "/" + TestId(22).ToString() + "/manifest");
    v9[8] = 9;
    testing::WriteBytes(root + "/" + TestId(22).ToString() + "/manifest", v9);
    testing::WriteBytes(root + "/notes.txt", "not a session");
  }
  auto dir = OpenDir(root);
  auto scan = dir->Scan();
  ASSERT_TRUE(scan.ok()) << scan.status();
  ASSERT_EQ(scan->sessions.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(scan->sessions[i] == good[i]) << i;

  ASSERT_EQ(scan->quarantined.size(), 2u);
  EXPECT_EQ(scan->quarantined[0].path, root + "/" + TestId(20).ToString());
  EXPECT_EQ(scan->quarantined[0].moved_to, root + "/quarantine/" + TestId(20).ToString());
  EXPECT_TRUE(absl::IsDataLoss(scan->quarantined[0].status));
  EXPECT_TRUE(Contains(scan->quarantined[1].status.message(), "ends past the end"));
  EXPECT_TRUE(std::filesystem::exists(scan->quarantined[0].moved_to + "/manifest"));
  EXPECT_TRUE(std::filesystem::exists(scan->quarantined[1].moved_to + "/seg-000001.kv"));
  EXPECT_FALSE(std::filesystem::exists(scan->quarantined[0].path));

  ASSERT_EQ(scan->skipped.size(), 2u);
  EXPECT_EQ(scan->skipped[0].path, root + "/notes.txt");
  EXPECT_EQ(scan->skipped[1].path, root + "/" + TestId(22).ToString());
  EXPECT_TRUE(absl::IsFailedPrecondition(scan->skipped[1].status)) << scan->skipped[1].status;
  EXPECT_TRUE(std::filesystem::exists(scan->skipped[1].path + "/manifest"));  // left in place

  EXPECT_FALSE(std::filesystem::exists(root + "/" + TestId(23).ToString()));
  EXPECT_EQ(Entries(root + "/" + TestId(10).ToString()),
            (std::vector<std::string>{"manifest", "seg-000001.kv"}));
  EXPECT_FALSE(scan->removed.empty());

  // A second scan finds the same sessions and nothing more to do.
  auto again = dir->Scan();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->sessions.size(), 3u);
  EXPECT_TRUE(again->quarantined.empty());
  EXPECT_TRUE(again->removed.empty());
  // The quarantine keeps both, never deleted.
  EXPECT_EQ(Entries(root + "/quarantine").size(), 2u);
}

TEST_F(StateDirTest, CollectGarbageRemovesOnlyUnreferencedSegments) {
  const SessionId id = TestId(30);
  const SessionRecord r = Commit(30, 2);
  StateDir* dir = dir_.get();
  const std::string& root = root_;
  // A turn whose manifest never came (a crash between the two steps).
  ASSERT_TRUE(dir->AppendBlocks(id, Spans(RandomPayloads(3, kBlockBytes, 31))).ok());
  auto removed = dir->CollectGarbage(id);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 1);
  EXPECT_EQ(Entries(root + "/" + id.ToString()),
            (std::vector<std::string>{"manifest", "seg-000001.kv"}));
  EXPECT_TRUE(dir->Verify(id).ok());
  EXPECT_EQ(*dir->CollectGarbage(id), 0);
  EXPECT_TRUE(*dir->ReadManifest(id) == r);
}

TEST_F(StateDirTest, RemoveDeletesEverything) {
  const std::string root = mnemo::testing::MakeTempDir();
  auto dir = OpenDir(root, /*fsync=*/true);
  const SessionId id = TestId(31);
  CommitTurn(*dir, id, {}, RandomPayloads(2, kBlockBytes, 31));
  CommitTurn(*dir, TestId(32), {}, RandomPayloads(2, kBlockBytes, 32));
  ASSERT_TRUE(dir->Remove(id).ok());
  EXPECT_FALSE(std::filesystem::exists(root + "/" + id.ToString()));
  EXPECT_TRUE(absl::IsNotFound(dir->ReadManifest(id).status()));
  EXPECT_TRUE(absl::IsNotFound(dir->Remove(id)));
  EXPECT_TRUE(dir->Verify(TestId(32)).ok());  // others untouched
  // The id can be used again, from segment 1.
  auto again = dir->AppendBlocks(id, Spans(RandomPayloads(1, kBlockBytes, 1)));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)[0].segment, 1u);
}

TEST_F(StateDirTest, ExportImportRoundTrip) {
  const std::string src_root = mnemo::testing::MakeTempDir();
  const std::string dst_root = mnemo::testing::MakeTempDir();
  auto src = OpenDir(src_root);
  const SessionId id = TestId(40);
  const Payloads p1 = RandomPayloads(3, kBlockBytes, 40);
  const Payloads p2 = RandomPayloads(2, kBlockBytes, 41);
  const SessionRecord t1 = CommitTurn(*src, id, {}, p1);
  const SessionRecord t2 = CommitTurn(*src, id, t1.blocks, p2);
  const std::string bundle = src_root + "/export.mnemo";
  ASSERT_TRUE(src->Export(id, bundle).ok());
  EXPECT_FALSE(std::filesystem::exists(bundle + ".tmp"));

  auto dst = OpenDir(dst_root, /*fsync=*/true);
  auto imported = dst->Import(bundle);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(*imported, id);
  auto back = dst->ReadManifest(id);
  ASSERT_TRUE(back.ok()) << back.status();
  // Everything equal but where the blocks are: one segment in the new directory.
  SessionRecord want = t2;
  for (size_t i = 0; i < want.blocks.size(); ++i) {
    EXPECT_EQ(back->blocks[i].segment, 1u);
    want.blocks[i].segment = back->blocks[i].segment;
    want.blocks[i].offset = back->blocks[i].offset;
  }
  EXPECT_TRUE(*back == want);
  EXPECT_EQ(ReadAll(*dst, id, back->blocks), Concat(p1, p2));
  EXPECT_TRUE(dst->Verify(id).ok());

  auto twice = dst->Import(bundle);
  EXPECT_TRUE(absl::IsAlreadyExists(twice.status())) << twice.status();
  EXPECT_EQ(Entries(dst_root), (std::vector<std::string>{id.ToString()}));
  EXPECT_TRUE(absl::IsNotFound(src->Export(TestId(77), bundle)));
}

TEST_F(StateDirTest, ImportRefusesACorruptBundleAndLeavesNothing) {
  const std::string src_root = mnemo::testing::MakeTempDir();
  auto src = OpenDir(src_root);
  const SessionId id = TestId(50);
  CommitTurn(*src, id, {}, RandomPayloads(3, kBlockBytes, 50));
  const std::string bundle = src_root + "/b.mnemo";
  ASSERT_TRUE(src->Export(id, bundle).ok());
  const std::string good = ReadBytes(bundle);

  struct Case {
    const char* what;
    std::string bytes;
  };
  std::vector<Case> cases;
  std::string flipped_payload = good;
  flipped_payload[good.size() - 10] ^= 1;
  cases.push_back({"fails its checksum", flipped_payload});
  std::string flipped_manifest = good;
  flipped_manifest[64 + 40] ^= 0x20;
  cases.push_back({"manifest checksum mismatch", flipped_manifest});
  std::string flipped_record = good;
  flipped_record[good.size() - kBlockBytes - 3] ^= 0x4;  // the last record's checksum
  cases.push_back({"disagrees with the manifest", flipped_record});
  cases.push_back({"truncated", good.substr(0, good.size() - 1)});
  cases.push_back({"truncated", good + "extra"});
  cases.push_back({"shorter than its header", good.substr(0, 10)});
  std::string flipped_header = good;
  flipped_header[20] ^= 1;
  cases.push_back({"header checksum mismatch", flipped_header});

  for (const Case& c : cases) {
    const std::string dst_root = mnemo::testing::MakeTempDir();
    auto dst = OpenDir(dst_root);
    const std::string path = dst_root + "/in.mnemo";
    testing::WriteBytes(path, c.bytes);
    auto r = dst->Import(path);
    ASSERT_TRUE(absl::IsDataLoss(r.status())) << c.what << ": " << r.status();
    EXPECT_TRUE(Contains(r.status().message(), c.what)) << r.status();
    EXPECT_TRUE(Contains(r.status().message(), path)) << r.status();
    EXPECT_EQ(Entries(dst_root), (std::vector<std::string>{"in.mnemo"})) << c.what;
  }
}

// Runs `check` as an unprivileged user when this process is root (root ignores permission
// bits), else directly. Returns check's message ("" = passed).
std::string AsUnprivileged(std::string (*check)(const std::string&), const std::string& root) {
  if (geteuid() != 0) return check(root);
  int fds[2];
  if (pipe(fds) != 0) return "pipe failed";
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    std::string msg;
    if (setgid(65534) != 0 || setuid(65534) != 0) {
      msg = "could not drop privileges";
    } else {
      msg = check(root);
    }
    if (!msg.empty()) (void)!write(fds[1], msg.data(), msg.size());
    _exit(0);
  }
  close(fds[1]);
  std::string msg;
  char buf[256];
  for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) > 0;)
    msg.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) msg += " (child did not exit cleanly)";
  return msg;
}

// `root`/ro is read-only; `root`/rw is writable but its session TestId(60)'s directory is not.
std::string CheckReadOnly(const std::string& root) {
  // Opening a read-only state directory is refused, naming it and the errno text.
  auto ro = StateDir::Open(root + "/ro");
  if (!absl::IsPermissionDenied(ro.status())) return "Open(ro): " + ro.status().ToString();
  if (!Contains(ro.status().message(), "state directory " + root + "/ro is not writable") ||
      !Contains(ro.status().message(), "Permission denied")) {
    return "Open(ro) message: " + ro.status().ToString();
  }
  // A reader opens it all the same (and writes no probe).
  auto reader = StateDir::Open(root + "/ro", {.read_only = true});
  if (!reader.ok()) return "Open(ro, read_only): " + reader.status().ToString();
  // Writes into a read-only session directory fail clearly; what was there still reads.
  auto rw = StateDir::Open(root + "/rw", {.fsync = false});
  if (!rw.ok()) return "Open(rw): " + rw.status().ToString();
  const SessionId id = TestId(60);
  auto before = (*rw)->ReadManifest(id);
  if (!before.ok()) return "ReadManifest: " + before.status().ToString();
  const Payloads p = RandomPayloads(1, kBlockBytes, 61);
  auto append = (*rw)->AppendBlocks(id, Spans(p));
  const std::string seg = root + "/rw/" + id.ToString() + "/seg-000002.kv";
  if (!absl::IsPermissionDenied(append.status()) ||
      !Contains(append.status().message(), seg + ": open failed: Permission denied")) {
    return "AppendBlocks: " + append.status().ToString();
  }
  SessionRecord next = *before;
  next.metadata = "changed";
  const absl::Status write = (*rw)->WriteManifest(next);
  if (!absl::IsPermissionDenied(write) || !Contains(write.message(), "manifest.tmp")) {
    return "WriteManifest: " + write.ToString();
  }
  auto after = (*rw)->ReadManifest(id);
  if (!after.ok() || !(*after == *before)) return "the old state does not read back";
  return "";
}

TEST_F(StateDirTest, ReadOnlyDirectoryIsAClearErrorAndKeepsItsState) {
  namespace fs = std::filesystem;
  const std::string root = mnemo::testing::MakeTempDir();
  const SessionId id = TestId(60);
  const SessionRecord r =
      CommitTurn(*OpenDir(root + "/rw"), id, {}, RandomPayloads(2, kBlockBytes, 60));
  fs::create_directory(root + "/ro");
  const fs::perms read_only = fs::perms::owner_read | fs::perms::owner_exec |
                              fs::perms::others_read | fs::perms::others_exec;
  fs::permissions(root, fs::perms::all);  // reachable by anyone
  fs::permissions(root + "/ro", read_only);
  fs::permissions(root + "/" + "rw/" + id.ToString(), read_only);
  if (geteuid() == 0) {
    // The unprivileged user owns rw/ (so it may open it) but not the session inside it.
    ASSERT_EQ(chown((root + "/rw").c_str(), 65534, 65534), 0);
    fs::permissions(root + "/rw",
                    fs::perms::owner_all | fs::perms::others_read | fs::perms::others_exec);
  }
  EXPECT_EQ(AsUnprivileged(CheckReadOnly, root), "");
  fs::permissions(root + "/rw/" + id.ToString(), fs::perms::owner_all);
  EXPECT_TRUE(*OpenDir(root + "/rw")->ReadManifest(id) == r);
}

}  // namespace
}  // namespace mnemo::cache
