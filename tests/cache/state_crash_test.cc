// Crash safety of the state directory's write protocol: a child process writes turns
// (AppendBlocks + WriteManifest, fsync on) on the real file system and is SIGKILLed at a
// random point; the directory must then hold a complete turn — the last acknowledged one or
// the one being written — with every block verifying, never a torn state.
//
// The kill point is measured in the child's progress, not in time: the child reports each
// file operation it starts (one byte on a pipe, before the call) and each committed turn;
// the parent kills it after reading a random number of those bytes, so over the iterations
// the kill lands inside every step of the protocol. MNEMO_CRASH_ITERATIONS (default 20)
// sets how many kills one run makes; MNEMO_CRASH_SEED replays a run.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "cache/file_ops.h"
#include "cache/state_store.h"
#include "tests/cache/state_test_util.h"
#include "tests/test_util.h"

namespace mnemo::cache {
namespace {

using testing::FullRecord;
using testing::Payloads;
using testing::Spans;
using testing::TestId;

constexpr size_t kBlockBytes = 256;
constexpr char kOpByte = 'o';
constexpr char kTurnByte = 't';
constexpr char kErrorByte = 'E';

// New blocks of turn k (k >= 1), and blocks after turn k.
int NewBlocks(int k) { return 1 + k % 3; }
int BlocksAfter(int k) {
  int n = 0;
  for (int i = 1; i <= k; ++i) n += NewBlocks(i);
  return n;
}

// The payload of block j: a function of j alone (a block never changes once written).
std::vector<uint8_t> PayloadOf(int j) {
  std::mt19937 rng(static_cast<uint32_t>(j) * 7919u + 17u);
  std::vector<uint8_t> p(kBlockBytes);
  for (uint8_t& b : p) b = static_cast<uint8_t>(rng());
  return p;
}

// The record of turn k over `blocks`: everything but the block places follows from k.
SessionRecord RecordOf(int k, std::vector<DiskBlock> blocks) {
  SessionRecord r = FullRecord(TestId(1), std::move(blocks));
  r.metadata = "turn " + std::to_string(k);
  r.rng_state[2] = static_cast<uint64_t>(k);
  r.last_used_unix_us += k;
  return r;
}

// Forwards to the real file system, writing one progress byte before every call.
class ProgressFileOps final : public FileOps {
 public:
  explicit ProgressFileOps(int progress_fd) : fd_(progress_fd) {}
  void Tick(char c) const {
    if (write(fd_, &c, 1) != 1) _exit(3);
  }
  int Open(const std::string& p, int f, mode_t m) override {
    return Tick(kOpByte), base_.Open(p, f, m);
  }
  int Close(int fd) override { return Tick(kOpByte), base_.Close(fd); }
  int64_t Pwrite(int fd, const void* d, size_t n, int64_t o) override {
    return Tick(kOpByte), base_.Pwrite(fd, d, n, o);
  }
  int64_t Pread(int fd, void* d, size_t n, int64_t o) override {
    return Tick(kOpByte), base_.Pread(fd, d, n, o);
  }
  int Fsync(int fd) override { return Tick(kOpByte), base_.Fsync(fd); }
  int Fstat(int fd, struct stat* st) override { return Tick(kOpByte), base_.Fstat(fd, st); }
  int Stat(const std::string& p, struct stat* st) override {
    return Tick(kOpByte), base_.Stat(p, st);
  }
  int Rename(const std::string& a, const std::string& b) override {
    return Tick(kOpByte), base_.Rename(a, b);
  }
  int Unlink(const std::string& p) override { return Tick(kOpByte), base_.Unlink(p); }
  int Mkdir(const std::string& p, mode_t m) override { return Tick(kOpByte), base_.Mkdir(p, m); }
  int Rmdir(const std::string& p) override { return Tick(kOpByte), base_.Rmdir(p); }
  int ListDir(const std::string& p, std::vector<std::string>* n) override {
    return Tick(kOpByte), base_.ListDir(p, n);
  }

 private:
  const int fd_;
  FileOps& base_ = PosixFileOps();
};

// The child: writes turns 1, 2, ... until it is killed. Never returns.
[[noreturn]] void WriteTurnsForever(const std::string& root, int progress_fd) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a failed parent
  ProgressFileOps ops(progress_fd);
  const auto fail = [&](const absl::Status& s) {
    const std::string msg = std::string(1, kErrorByte) + s.ToString();
    (void)!write(progress_fd, msg.data(), msg.size());
    _exit(1);
  };
  auto dir = StateDir::Open(root, {.fsync = true, .file_ops = &ops});
  if (!dir.ok()) fail(dir.status());
  std::vector<DiskBlock> blocks;
  for (int k = 1;; ++k) {
    Payloads payloads;
    for (int j = BlocksAfter(k - 1); j < BlocksAfter(k); ++j) payloads.push_back(PayloadOf(j));
    auto added = (*dir)->AppendBlocks(TestId(1), Spans(payloads));
    if (!added.ok()) fail(added.status());
    blocks.insert(blocks.end(), added->begin(), added->end());
    if (absl::Status s = (*dir)->WriteManifest(RecordOf(k, blocks)); !s.ok()) fail(s);
    ops.Tick(kTurnByte);
  }
}

struct Outcome {
  int acknowledged = 0;  // turns the child reported committed
  int found = 0;         // the turn the directory holds (0: none)
  size_t garbage = 0;    // files Scan removed
};

// Checks the directory after a kill; the child had acknowledged `acknowledged` turns.
void CheckAfterCrash(const std::string& root, Outcome& out) {
  auto dir = StateDir::Open(root, {.fsync = false});
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto record = (*dir)->ReadManifest(TestId(1));
  if (absl::IsNotFound(record.status())) {
    ASSERT_EQ(out.acknowledged, 0) << "an acknowledged turn is lost";
    out.found = 0;
  } else {
    ASSERT_TRUE(record.ok()) << record.status();
    const int k = static_cast<int>(record->rng_state[2]);
    out.found = k;
    ASSERT_TRUE(k == out.acknowledged || k == out.acknowledged + 1)
        << "found turn " << k << " after " << out.acknowledged << " acknowledged";
    ASSERT_EQ(static_cast<int>(record->blocks.size()), BlocksAfter(k));
    EXPECT_TRUE(*record == RecordOf(k, record->blocks)) << "turn " << k << " is not intact";
    for (size_t j = 0; j < record->blocks.size(); ++j) {
      std::vector<uint8_t> p(kBlockBytes);
      ASSERT_TRUE((*dir)->ReadBlock(TestId(1), record->blocks[j], p).ok()) << "block " << j;
      ASSERT_EQ(p, PayloadOf(static_cast<int>(j))) << "block " << j << " of turn " << k;
    }
  }
  // Recovery: Scan loads it (or removes a never-committed directory) and collects garbage;
  // nothing is quarantined; the session can go on.
  auto scan = (*dir)->Scan();
  ASSERT_TRUE(scan.ok()) << scan.status();
  EXPECT_TRUE(scan->quarantined.empty()) << scan->quarantined[0].status;
  EXPECT_TRUE(scan->skipped.empty()) << scan->skipped[0].status;
  ASSERT_EQ(scan->sessions.size(), out.found > 0 ? 1u : 0u);
  out.garbage = scan->removed.size();
  if (out.found > 0) {
    const int k = out.found + 1;
    std::vector<DiskBlock> blocks = scan->sessions[0].blocks;
    Payloads payloads;
    for (int j = BlocksAfter(k - 1); j < BlocksAfter(k); ++j) payloads.push_back(PayloadOf(j));
    auto added = (*dir)->AppendBlocks(TestId(1), Spans(payloads));
    ASSERT_TRUE(added.ok()) << added.status();
    blocks.insert(blocks.end(), added->begin(), added->end());
    ASSERT_TRUE((*dir)->WriteManifest(RecordOf(k, blocks)).ok());
    ASSERT_TRUE((*dir)->Verify(TestId(1)).ok());
  }
}

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

TEST(StateCrashTest, KilledWriterLeavesACompleteTurn) {
  const int iterations = EnvInt("MNEMO_CRASH_ITERATIONS", 20);
  const uint32_t seed = static_cast<uint32_t>(EnvInt("MNEMO_CRASH_SEED", 0)) != 0
                            ? static_cast<uint32_t>(EnvInt("MNEMO_CRASH_SEED", 0))
                            : std::random_device()();
  SCOPED_TRACE(::testing::Message() << "MNEMO_CRASH_SEED=" << seed);
  std::mt19937 rng(seed);
  // About 20 file operations per turn: kill within the first few turns, anywhere.
  std::uniform_int_distribution<int> kill_after(1, 120);
  std::map<std::string, int> outcomes;
  for (int it = 0; it < iterations; ++it) {
    SCOPED_TRACE(::testing::Message() << "iteration " << it);
    const std::string root = mnemo::testing::MakeTempDir();
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      WriteTurnsForever(root, fds[1]);
    }
    close(fds[1]);
    const int n = kill_after(rng);
    Outcome out;
    std::string error;
    int seen = 0;
    char c;
    while (seen < n && read(fds[0], &c, 1) == 1) {
      if (c == kErrorByte) {
        error = "child failed: ";
        for (char e; read(fds[0], &e, 1) == 1;) error.push_back(e);
        break;
      }
      out.acknowledged += c == kTurnByte;
      ++seen;
    }
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    // What the child wrote before it died still counts (a turn it acknowledged is durable).
    while (read(fds[0], &c, 1) == 1) out.acknowledged += c == kTurnByte;
    close(fds[0]);
    ASSERT_EQ(error, "");
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
    CheckAfterCrash(root, out);
    if (::testing::Test::HasFatalFailure()) return;
    const std::string key = out.found == 0 ? "no turn committed yet"
                            : out.found == out.acknowledged
                                ? "last acknowledged turn"
                                : "turn committed, not yet acknowledged";
    ++outcomes[key + (out.garbage > 0 ? " (+garbage collected)" : "")];
    std::filesystem::remove_all(root);
  }
  for (const auto& [what, count] : outcomes) {
    std::printf("[crash] %d x %s\n", count, what.c_str());
  }
}

}  // namespace
}  // namespace mnemo::cache
