// `mnemo session ls|verify|rm|export|import` end to end: the real binary over state
// directories written with StateDir (the records of tests/cache/state_test_util.h).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cache/state_manifest.h"
#include "cache/state_store.h"
#include "nlohmann/json.hpp"
#include "tests/cache/state_test_util.h"
#include "tests/test_util.h"

namespace mnemo::cli {
namespace {

namespace fs = std::filesystem;
using cache::SessionId;
using cache::SessionRecord;
using cache::StateDir;
using cache::testing::CommitTurn;
using cache::testing::RandomPayloads;
using cache::testing::TestId;
using mnemo::testing::CommandResult;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

// StateLayout(): 1 layer * 2 (k, v) * 2 kv heads * 4 tokens * 8 dims * 2 bytes.
constexpr uint64_t kBlockBytes = 256;

CommandResult Mnemo(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {mnemo::testing::MnemoBinary(), "session"};
  argv.insert(argv.end(), args.begin(), args.end());
  return mnemo::testing::RunCommand(argv);
}

int Lines(const std::string& text) {
  return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

// Every path under `root` with its size and checksum ("<dir>" for directories): a snapshot
// to compare.
std::map<std::string, std::string> Tree(const std::string& root) {
  std::map<std::string, std::string> tree;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.is_directory()) {
      tree[e.path().string()] = "<dir>";
      continue;
    }
    const std::string bytes = cache::testing::ReadBytes(e.path().string());
    tree[e.path().string()] = absl::StrCat(
        bytes.size(), " bytes, xxh3 ",
        cache::StateChecksum({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}));
  }
  return tree;
}

class SessionCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = cache::testing::OpenDir(root_);
    ASSERT_NE(dir, nullptr);
    a_ = CommitTurn(*dir, TestId(1), {}, RandomPayloads(3, kBlockBytes, 1));
    b_ = CommitTurn(*dir, TestId(40), {}, RandomPayloads(2, kBlockBytes, 40));
    b_.tenant = "tenant-b";
    b_.last_used_unix_us = 1710000000500000;  // 2024-03-09T16:00:00.5Z
    ASSERT_TRUE(dir->WriteManifest(b_).ok());
  }

  std::string SessionDir(const SessionId& id) const { return root_ + "/" + id.ToString(); }

  // `mnemo session ls --json` parsed; the exit code is checked.
  json LsJson(const std::string& root) {
    const CommandResult r = Mnemo({"ls", "--state-dir", root, "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    json j = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    EXPECT_TRUE(j.is_array()) << r.out;
    return j;
  }

  const std::string root_ = mnemo::testing::MakeTempDir() + "/state";
  SessionRecord a_;
  SessionRecord b_;
};

TEST_F(SessionCliTest, LsListsEverySessionWithItsFields) {
  const json j = LsJson(root_);
  ASSERT_EQ(j.size(), 2u);
  // Ordered by id: TestId(1) < TestId(40).
  const json& a = j[0];
  EXPECT_EQ(a["id"], a_.id.ToString());
  EXPECT_EQ(a["tenant"], "tenant-a");
  EXPECT_EQ(a["tokens"], 3 * 4 + 2);
  EXPECT_EQ(a["kv_tokens"], 3 * 4);
  EXPECT_EQ(a["turns"], 2);
  EXPECT_EQ(a["blocks"], 3);
  EXPECT_EQ(a["bytes"], 3 * kBlockBytes);
  EXPECT_EQ(a["last_used"], "2023-11-14T22:15:23Z");  // 1700000123.456789 s
  EXPECT_EQ(a["last_used_unix_us"], 1700000123456789);
  EXPECT_EQ(a["model_fingerprint"], "llama:stories260K:f32:0123456789abcdef");
  const json& b = j[1];
  EXPECT_EQ(b["id"], b_.id.ToString());
  EXPECT_EQ(b["tenant"], "tenant-b");
  EXPECT_EQ(b["tokens"], 2 * 4 + 2);
  EXPECT_EQ(b["kv_tokens"], 2 * 4);
  EXPECT_EQ(b["bytes"], 2 * kBlockBytes);
  EXPECT_EQ(b["last_used"], "2024-03-09T16:00:00Z");

  // The text form: a header and one line per session, the fingerprint shortened.
  const CommandResult text = Mnemo({"ls", "--state-dir", root_});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.err, "");
  EXPECT_EQ(Lines(text.out), 3) << text.out;
  EXPECT_THAT(text.out, HasSubstr(a_.id.ToString() + " tenant-a"));
  EXPECT_THAT(text.out, HasSubstr("2024-03-09T16:00:00Z llama:storie\n"));
  EXPECT_THAT(text.out, HasSubstr("768 B"));
  EXPECT_THAT(text.out, Not(HasSubstr("0123456789abcdef")));
}

TEST_F(SessionCliTest, LsAndVerifyChangeNothingAndReportProblems) {
  // A corrupt manifest (Scan would quarantine it), a session directory without a manifest
  // and an interrupted import (Scan would delete them), a stray file.
  const std::string manifest = SessionDir(b_.id) + "/manifest";
  cache::testing::FlipBit(manifest, cache::kManifestHeaderBytes + 20);
  fs::create_directory(SessionDir(TestId(70)));
  fs::create_directory(root_ + "/.import-" + TestId(80).ToString());
  cache::testing::WriteBytes(root_ + "/notes.txt", "x");
  fs::create_directories(root_ + "/quarantine/" + TestId(90).ToString());  // not listed
  const auto before = Tree(root_);

  const CommandResult ls = Mnemo({"ls", "--state-dir", root_ + "/", "--json"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  const json j = json::parse(ls.out, nullptr, false);
  ASSERT_TRUE(j.is_array()) << ls.out;
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["id"], a_.id.ToString());
  EXPECT_THAT(ls.err, HasSubstr("skipped " + b_.id.ToString() + ": " + manifest));
  EXPECT_THAT(ls.err, HasSubstr("skipped " + TestId(70).ToString() + ": no session"));
  EXPECT_THAT(ls.err, HasSubstr("skipped notes.txt: not a session"));
  EXPECT_THAT(ls.err, HasSubstr("skipped .import-"));
  EXPECT_THAT(ls.err, HasSubstr("4 entries of " + root_ + " skipped (listed above)"));
  EXPECT_THAT(ls.err, HasSubstr("1 corrupt session in " + root_ + "/quarantine (not listed)"));
  EXPECT_EQ(Tree(root_), before);

  const CommandResult verify = Mnemo({"verify", "--state-dir", root_});
  EXPECT_EQ(verify.exit_code, 1);
  EXPECT_THAT(verify.out, HasSubstr("ok " + a_.id.ToString() + "\n"));
  EXPECT_THAT(verify.out, HasSubstr("FAILED " + b_.id.ToString() + ": " + manifest));
  EXPECT_THAT(verify.out, HasSubstr("FAILED " + TestId(70).ToString() + ": no session"));
  EXPECT_EQ(Tree(root_), before);
}

TEST_F(SessionCliTest, VerifyFailsABitFlippedBlock) {
  const CommandResult clean = Mnemo({"verify", "--state-dir", root_});
  EXPECT_EQ(clean.exit_code, 0) << clean.out << clean.err;
  EXPECT_EQ(clean.out, "ok " + a_.id.ToString() + "\nok " + b_.id.ToString() + "\n");

  // The second block's payload, in the middle.
  const std::string segment = SessionDir(b_.id) + "/seg-000001.kv";
  cache::testing::FlipBit(segment, b_.blocks[1].offset + 100, 3);
  const CommandResult all = Mnemo({"verify", "--state-dir", root_});
  EXPECT_EQ(all.exit_code, 1);
  EXPECT_EQ(Lines(all.out), 2) << all.out;
  EXPECT_THAT(all.out, HasSubstr("ok " + a_.id.ToString() + "\n"));
  EXPECT_THAT(all.out, HasSubstr("FAILED " + b_.id.ToString() + ": " + segment));
  EXPECT_THAT(all.err, HasSubstr("1 of 2 sessions failed"));

  // Named sessions only.
  const CommandResult one = Mnemo({"verify", "--state-dir", root_, a_.id.ToString()});
  EXPECT_EQ(one.exit_code, 0) << one.out;
  EXPECT_EQ(one.out, "ok " + a_.id.ToString() + "\n");
  const CommandResult bad = Mnemo({"verify", "--state-dir", root_, b_.id.ToString()});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.out, HasSubstr("FAILED " + b_.id.ToString()));
}

TEST_F(SessionCliTest, RmRemovesAndContinuesPastErrors) {
  const CommandResult rm = Mnemo({"rm", "--state-dir", root_, a_.id.ToString()});
  ASSERT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_EQ(rm.out, "removed " + a_.id.ToString() + "\n");
  EXPECT_FALSE(fs::exists(SessionDir(a_.id)));
  const json j = LsJson(root_);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["id"], b_.id.ToString());

  // A missing session and a malformed id are errors; the session after them still goes.
  const CommandResult mixed =
      Mnemo({"rm", "--state-dir", root_, a_.id.ToString(), "sess_123", b_.id.ToString()});
  EXPECT_EQ(mixed.exit_code, 1);
  EXPECT_THAT(mixed.err, HasSubstr("no session " + a_.id.ToString() + " in " + root_));
  EXPECT_THAT(mixed.err, HasSubstr("'sess_123' is not a session id"));
  EXPECT_EQ(mixed.out, "removed " + b_.id.ToString() + "\n");
  EXPECT_FALSE(fs::exists(SessionDir(b_.id)));
  EXPECT_TRUE(LsJson(root_).empty());
  const CommandResult text = Mnemo({"ls", "--state-dir", root_});
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_EQ(text.out, "no sessions in " + root_ + "\n");
}

TEST_F(SessionCliTest, ExportImportRoundTripsAndRefusesADuplicate) {
  const std::string bundle = mnemo::testing::MakeTempDir() + "/a.mnemo";
  const CommandResult exp = Mnemo({"export", "--state-dir", root_, a_.id.ToString(), bundle});
  ASSERT_EQ(exp.exit_code, 0) << exp.err;
  EXPECT_THAT(exp.out, HasSubstr("exported " + a_.id.ToString() + " to " + bundle));
  ASSERT_TRUE(fs::exists(bundle));

  // import creates a missing directory.
  const std::string other = mnemo::testing::MakeTempDir() + "/x/other";
  const CommandResult imp = Mnemo({"import", "--state-dir", other, bundle});
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  EXPECT_EQ(imp.out, a_.id.ToString() + "\n");
  {
    auto dir = cache::testing::OpenDir(other);
    ASSERT_NE(dir, nullptr);
    auto back = dir->ReadManifest(a_.id);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_TRUE(*back == a_);
    EXPECT_TRUE(dir->Verify(a_.id).ok());
  }
  const json j = LsJson(other);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["id"], a_.id.ToString());

  const auto before = Tree(other);
  const CommandResult again = Mnemo({"import", "--state-dir", other, bundle});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_EQ(again.out, "");
  EXPECT_THAT(again.err, HasSubstr("session " + a_.id.ToString() + " already exists in " + other));
  EXPECT_EQ(Tree(other), before);

  // Exporting a session that is not there writes nothing.
  const std::string none = bundle + ".none";
  const CommandResult missing = Mnemo({"export", "--state-dir", root_, TestId(9).ToString(), none});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("no session " + TestId(9).ToString()));
  EXPECT_FALSE(fs::exists(none));
}

TEST_F(SessionCliTest, MalformedIdIsAClearError) {
  for (const char* verb : {"verify", "rm", "export"}) {
    std::vector<std::string> args = {verb, "--state-dir", root_, "sess_xyz"};
    if (std::string(verb) == "export") args.push_back(root_ + "/out.bundle");
    const CommandResult r = Mnemo(args);
    EXPECT_EQ(r.exit_code, 1) << verb;
    EXPECT_THAT(r.out + r.err, HasSubstr("sess_xyz")) << verb;
    EXPECT_THAT(r.out + r.err, HasSubstr("not a session id")) << verb;
  }
  EXPECT_FALSE(fs::exists(root_ + "/out.bundle"));
  EXPECT_EQ(LsJson(root_).size(), 2u);
}

TEST_F(SessionCliTest, MissingDirectoryIsAClearErrorAndStaysMissing) {
  const std::string missing = mnemo::testing::MakeTempDir() + "/nothing";
  const std::string id = a_.id.ToString();
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"ls", "--state-dir", missing},
           {"verify", "--state-dir", missing},
           {"rm", "--state-dir", missing, id},
           {"export", "--state-dir", missing, id, root_ + "/b"}}) {
    const CommandResult r = Mnemo(args);
    EXPECT_EQ(r.exit_code, 1) << args[0];
    EXPECT_EQ(r.err, "mnemo session " + args[0] + ": no state directory at " + missing + "\n");
    EXPECT_FALSE(fs::exists(missing)) << args[0];
  }
}

TEST(SessionCliUsageTest, UsageErrorsAreOneLineAndExitTwo) {
  const std::string dir = mnemo::testing::MakeTempDir();
  struct Case {
    std::vector<std::string> args;
    std::string expected;  // a part of the one-line error
  };
  const std::vector<Case> cases = {
      {{}, "usage: mnemo session ls|verify|rm|export|import"},
      {{"list", "--state-dir", dir}, "unknown verb 'list'"},
      {{"ls"}, "mnemo session ls: --state-dir DIR is required"},
      {{"verify", "x"}, "--state-dir DIR is required"},
      {{"ls", "--state-dir", dir, "extra"}, "usage: mnemo session ls --state-dir DIR [--json]"},
      {{"rm", "--state-dir", dir}, "usage: mnemo session rm --state-dir DIR ID..."},
      {{"export", "--state-dir", dir, "sess_0"}, "usage: mnemo session export"},
      {{"import", "--state-dir", dir}, "usage: mnemo session import --state-dir DIR FILE"},
      {{"ls", "--state-dir", dir, "--bogus"}, "unknown option '--bogus'"},
      {{"ls", "--state-dir"}, "option '--state-dir' needs a value"},
  };
  for (const Case& c : cases) {
    const CommandResult r = Mnemo(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.expected;
    EXPECT_EQ(r.out, "") << c.expected;
    EXPECT_EQ(Lines(r.err), 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.expected));
  }
  EXPECT_TRUE(fs::is_empty(dir));

  const CommandResult help = Mnemo({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* verb : {"ls", "verify", "rm", "export", "import"}) {
    EXPECT_THAT(help.out, HasSubstr(std::string("mnemo session ") + verb)) << verb;
  }
  const CommandResult verb_help = Mnemo({"ls", "--help"});
  EXPECT_EQ(verb_help.exit_code, 0);
  EXPECT_THAT(verb_help.out, HasSubstr("usage: mnemo session ls --state-dir DIR [--json]"));
  const CommandResult top = mnemo::testing::RunCommand({mnemo::testing::MnemoBinary(), "--help"});
  EXPECT_THAT(top.out, HasSubstr("session"));
}

}  // namespace
}  // namespace mnemo::cli
