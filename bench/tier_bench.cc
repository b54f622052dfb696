// Restore vs recompute (issue 5): the per-token cost of bringing a session's KV back from
// the host tier or the disk tier against recomputing it, and the disk tier against the file
// system's own sequential rate, measured in one run (DESIGN.md 8). f16 KV, 16-token blocks.
//
//   recompute     prefill of an N-token history (English text) with LlamaForward, in chunks
//                 of the engine's max_batch_tokens: what a stateless server pays per turn
//   host restore  copy of the blocks from a cache::HostTier into BlockPool slots (what a
//                 restore does on the CPU backend)
//   disk write    cache::StateDir::AppendBlocks (one segment, fsync on) + WriteManifest
//   disk restore  ReadManifest + ReadBlocks into BlockPool slots, after the files were
//                 evicted from the page cache (posix_fadvise(POSIX_FADV_DONTNEED) after the
//                 fsyncs; mincore() reports what stayed. No drop_caches: a shared machine)
//   dd ceiling    the same directory, the same total bytes: one file written in 1 MiB
//                 pwrites + fsync, evicted the same way, read back in 1 MiB reads
//   plain read    mnemo's state files, evicted again and read whole in 1 MiB reads: what
//                 their layout allows, to tell it apart from the cost of mnemo's code
// The disk tier's fsyncs go through a FileOps that times them: those of segments (the
// data) apart from directories and manifests (the write protocol's metadata commits).
//
// Why several sessions on disk: one 1024-token session of SmolLM2-135M is 64 blocks of
// 360 KiB (23.6 MB), so small that fixed costs (file creation, the fsyncs of segment,
// manifest and directories) and the device's write cache would dominate. The disk test
// writes the session's blocks as ceil(--disk-mib / session bytes) distinct sessions (each
// its own directory, segment and manifest: 12 sessions, 283 MB, by default), restores them
// all and divides by their total tokens: the per-token cost of a server restoring many
// sessions, on as many bytes as the dd file, so the fractions compare like with like. Every
// repetition writes fresh sessions (the previous ones are removed, untimed).
//
// Every measurement runs --reps times (3): best (the least disturbed run on a shared
// machine) and median. Ratios use the best runs (the JSON has the medians' too). Restores
// are checked byte for byte against the source.
//
// Usage: mnemo_tier_bench [--model=PATH] [--tokens=N] [--disk-mib=N] [--reps=N]
//   [--dir=PATH] [--threads=N] [--text=PATH] [--seed=N] [--json] [--quick]
// --dir: the disk test runs in a fresh directory under it (removed at the end); default
// $TMPDIR, else /var/tmp. --json prints one JSON object on stdout (progress on stderr);
// --quick: 64 tokens, 8 MiB on disk, one repetition (explicit flags override it).
#include <oneapi/tbb/info.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_main.h"
#include "bench/multiturn_workload.h"
#include "bench/tier_bench_util.h"
#include "cache/block_pool.h"
#include "cache/block_table.h"
#include "cache/host_tier.h"
#include "cache/state_store.h"
#include "engine/engine.h"
#include "engine/forward/llama_forward.h"
#include "engine/model/model.h"
#include "nlohmann/json.hpp"

namespace mnemo::bench {
namespace {

using nlohmann::json;

constexpr int kBlockTokens = 16;
constexpr size_t kDdChunk = size_t{1} << 20;

struct Flags {
  std::string model;
  std::string text = "/usr/share/common-licenses/GPL-3";
  std::string dir;  // empty: $TMPDIR or /var/tmp
  int tokens = 1024;
  int disk_mib = 256;
  int reps = 3;
  int threads = 0;  // 0: every hardware thread
  uint64_t seed = 1;
  bool json = false;
  bool quick = false;
};

// {best, median} of `per_unit` = seconds / units (smaller is better).
json PerUnit(const Timing& t, double units) {
  return {{"best", t.best / units}, {"median", t.median / units}};
}
// {best, median} of a rate = units / seconds (larger is better; best from the best time).
json Rate(const Timing& t, double units) {
  return {{"best", units / t.best}, {"median", units / t.median}};
}

struct Setup {
  std::unique_ptr<engine::Model> model;
  std::unique_ptr<engine::LlamaForward> fwd;
  std::unique_ptr<cache::BlockPool> pool;
  std::vector<engine::TokenId> tokens;  // the history, exactly N tokens
  std::string text;                     // its text (the manifest's one message)
  std::string text_used;                // where the words came from
};

absl::StatusOr<Setup> Load(const Flags& f) {
  Setup s;
  absl::StatusOr<std::unique_ptr<engine::Model>> model = engine::Model::Open(f.model);
  if (!model.ok()) return model.status();
  s.model = *std::move(model);
  if (f.tokens > s.model->config().context_length) {
    return absl::InvalidArgumentError(absl::StrCat("--tokens=", f.tokens, " is past the model's ",
                                                   s.model->config().context_length,
                                                   "-token context"));
  }
  absl::StatusOr<std::unique_ptr<engine::LlamaForward>> fwd =
      engine::LlamaForward::Create(*s.model, {.threads = f.threads});
  if (!fwd.ok()) return fwd.status();
  s.fwd = *std::move(fwd);
  // Two sessions' blocks: the recomputed one (the source) and a restore target.
  const kernels::KvLayout layout = s.fwd->KvLayoutFor(kernels::DType::kF16, kBlockTokens);
  const int64_t blocks = (f.tokens + kBlockTokens - 1) / kBlockTokens;
  absl::StatusOr<std::unique_ptr<cache::BlockPool>> pool = cache::BlockPool::Create(
      {.layout = layout, .budget_bytes = static_cast<uint64_t>(2 * blocks * layout.block_bytes())});
  if (!pool.ok()) return pool.status();
  s.pool = *std::move(pool);

  absl::StatusOr<std::unique_ptr<engine::Tokenizer>> tokenizer =
      engine::Tokenizer::Create(s.model->tokenizer_data());
  if (!tokenizer.ok()) return tokenizer.status();
  const TextSource source(TextSource::LoadWords(f.text, &s.text_used), **tokenizer);
  std::mt19937_64 rng(f.seed);
  // Draw may run over by a word's tokens, never under by more than that: draw a little
  // more, then cut the tokens to N exactly.
  while (static_cast<int>(s.tokens.size()) < f.tokens) {
    const std::string piece = source.Draw(rng, f.tokens + 16);
    s.text += piece;
    std::vector<engine::TokenId> t =
        (*tokenizer)->Encode(piece, {.add_bos = false, .add_eos = false});
    s.tokens.insert(s.tokens.end(), t.begin(), t.end());
  }
  s.tokens.resize(static_cast<size_t>(f.tokens));
  return s;
}

// Prefills `tokens` into `table` in chunks of the engine's max_batch_tokens; seconds.
absl::StatusOr<double> Recompute(Setup& s, const cache::BlockTable& table,
                                 std::vector<float>& logits) {
  const int chunk = engine::EngineOptions{}.max_batch_tokens;
  const std::span<const engine::TokenId> all(s.tokens);
  const Clock::time_point t0 = Clock::now();
  for (size_t pos = 0; pos < all.size(); pos += static_cast<size_t>(chunk)) {
    const size_t n = std::min(all.size() - pos, static_cast<size_t>(chunk));
    const engine::SeqBatchEntry e{
        .tokens = all.subspan(pos, n),
        .start_pos = static_cast<int32_t>(pos),
        .table = &table,
        .logits = pos + n == all.size() ? engine::LogitRows::kLast : engine::LogitRows::kNone};
    absl::Status st = s.fwd->Forward(s.pool->view(), std::span(&e, 1), logits.data());
    if (!st.ok()) return st;
  }
  return Since(t0);
}

cache::SessionRecord MakeRecord(const Setup& s, const cache::SessionId& id,
                                std::vector<cache::DiskBlock> blocks) {
  cache::SessionRecord r;
  r.id = id;
  r.tenant = "bench";
  r.model_fingerprint = "tier_bench";
  r.layout = s.pool->layout();
  r.tokens.assign(s.tokens.begin(), s.tokens.end());
  r.kv_tokens = static_cast<int64_t>(s.tokens.size());
  r.turns = {{0, 0}};
  r.messages = {{"user", s.text}};
  r.created_unix_us = r.last_used_unix_us = 1700000000000000;
  r.blocks = std::move(blocks);
  return r;
}

cache::SessionId BenchId(int rep, int64_t session) {
  cache::SessionId id;  // 7b <rep> 00.. <session, 8 bytes LE>
  id.bytes[0] = 0x7b;
  id.bytes[1] = static_cast<uint8_t>(rep);
  for (int i = 0; i < 8; ++i) id.bytes[8 + i] = static_cast<uint8_t>(session >> (8 * i));
  return id;
}

// The recomputed session: N tokens prefilled into `src`, and a restore target `dst`.
struct Session {
  cache::BlockTable src, dst;
  int64_t tokens = 0;
  int64_t bytes = 0;  // of its blocks
};

// 1. Recompute (one untimed pass first: the first steps size scratch buffers, start threads).
absl::StatusOr<Timing> MeasureRecompute(const Flags& f, Setup& s, Session& ses) {
  std::vector<float> logits(static_cast<size_t>(s.fwd->config().vocab_size));
  std::vector<double> times;
  for (int r = -1; r < f.reps; ++r) {
    absl::StatusOr<double> t = Recompute(s, ses.src, logits);
    if (!t.ok()) return t.status();
    if (r < 0) continue;
    times.push_back(*t);
    Progress(absl::StrFormat("recompute %d tokens: %.3f s", ses.tokens, *t));
  }
  return Summarize(times);
}

// 2. Host restore: HostTier -> pool slots (one untimed pass first: a restore lands in a pool
// that is already in use, not in fresh pages).
absl::StatusOr<Timing> MeasureHostRestore(const Flags& f, cache::BlockPool& pool, Session& ses) {
  const size_t bb = static_cast<size_t>(pool.block_bytes());
  absl::StatusOr<std::unique_ptr<cache::HostTier>> host = cache::HostTier::Create(
      {.block_bytes = pool.block_bytes(), .budget_bytes = static_cast<uint64_t>(ses.bytes)});
  if (!host.ok()) return host.status();
  std::vector<cache::HostBlockId> ids;
  for (cache::BlockId b : ses.src.blocks()) ids.push_back(*(*host)->Store({pool.BlockData(b), bb}));
  auto restore = [&] {
    const Clock::time_point t0 = Clock::now();
    for (size_t i = 0; i < ids.size(); ++i) {
      (*host)->Load(ids[i], {pool.BlockData(ses.dst.blocks()[i]), bb});
    }
    return Since(t0);
  };
  restore();
  if (!SameBytes(pool, ses.src, ses.dst)) return absl::InternalError("host restore: bytes differ");
  std::vector<double> times;
  for (int r = 0; r < f.reps; ++r) times.push_back(restore());
  Progress(absl::StrFormat("host restore: %.6f s", Summarize(times).best));
  return Summarize(times);
}

json Eviction(const Residency& res) {
  return json{{"method", "posix_fadvise(POSIX_FADV_DONTNEED) after fsync"},
              {"advice_ok", res.advice_ok},
              {"resident_fraction_after", res.fraction()},
              {"evicted", res.advice_ok && res.fraction() < 0.01}};
}

struct DiskResult {
  Timing dd_write, dd_read, write, restore;
  Timing plain_read;  // seconds to read the disk test's bytes plainly from its own files
  int64_t sessions = 0, bytes = 0, dd_bytes = 0;
  json j;
};

// 3 and 4. The disk tier and the dd-style ceiling, interleaved repetition by repetition.
absl::StatusOr<DiskResult> MeasureDisk(const Flags& f, Setup& s, Session& ses,
                                       const std::string& work) {
  cache::BlockPool& pool = *s.pool;
  DiskResult d;
  d.sessions = std::max<int64_t>(1, ((int64_t{f.disk_mib} << 20) + ses.bytes - 1) / ses.bytes);
  d.bytes = d.sessions * ses.bytes;
  d.dd_bytes = (std::max(d.bytes, int64_t{f.disk_mib} << 20) + int64_t{kDdChunk} - 1) /
               int64_t{kDdChunk} * int64_t{kDdChunk};
  const std::string state_path = work + "/state", dd_path = work + "/dd.bin";
  FsyncTimingFileOps ops;
  absl::StatusOr<std::unique_ptr<cache::StateDir>> state =
      cache::StateDir::Open(state_path, {.fsync = true, .file_ops = &ops});
  if (!state.ok()) return state.status();
  std::vector<std::span<const uint8_t>> payloads;
  for (cache::BlockId b : ses.src.blocks()) {
    payloads.emplace_back(pool.BlockData(b), pool.block_bytes());
  }
  std::vector<uint8_t> chunk(kDdChunk);
  std::mt19937_64 rng(f.seed);
  for (uint8_t& c : chunk) c = static_cast<uint8_t>(rng());

  std::vector<double> dd_w, dd_r, disk_w, disk_r, plain_r;
  std::vector<FsyncTimingFileOps::Fsyncs> fsyncs;
  Residency dd_res, disk_res;
  for (int r = 0; r < f.reps; ++r) {
    absl::StatusOr<double> t = DdWrite(dd_path, d.dd_bytes, chunk);
    if (!t.ok()) return t.status();
    dd_w.push_back(*t);
    dd_res = Residency();
    EvictFromPageCache(dd_path, &dd_res);
    t = DdRead(dd_path, d.dd_bytes, std::span(chunk));
    if (!t.ok()) return t.status();
    dd_r.push_back(*t);
    unlink(dd_path.c_str());

    ops.fsyncs = {};
    Clock::time_point t0 = Clock::now();
    for (int64_t k = 0; k < d.sessions; ++k) {
      const cache::SessionId id = BenchId(r, k);
      absl::StatusOr<std::vector<cache::DiskBlock>> blocks = (*state)->AppendBlocks(id, payloads);
      if (!blocks.ok()) return blocks.status();
      absl::Status st = (*state)->WriteManifest(MakeRecord(s, id, *std::move(blocks)));
      if (!st.ok()) return st;
    }
    disk_w.push_back(Since(t0));
    fsyncs.push_back(ops.fsyncs);
    disk_res = Residency();
    EvictFromPageCache(state_path, &disk_res);
    // Poison the target so that the check below sees what the restore wrote.
    for (cache::BlockId b : ses.dst.blocks()) {
      std::memset(pool.BlockData(b), 0xff, pool.block_bytes());
    }
    t0 = Clock::now();
    for (int64_t k = 0; k < d.sessions; ++k) {
      const cache::SessionId id = BenchId(r, k);
      absl::StatusOr<cache::SessionRecord> rec = (*state)->ReadManifest(id);
      if (!rec.ok()) return rec.status();
      absl::Status st = ReadIntoSlots(**state, id, rec->blocks, pool, ses.dst.blocks());
      if (!st.ok()) return st;
    }
    disk_r.push_back(Since(t0));
    if (!SameBytes(pool, ses.src, ses.dst)) return absl::InternalError("disk: bytes differ");
    // The same files read plainly: what their layout allows, apart from mnemo's code.
    Residency again;
    EvictFromPageCache(state_path, &again);
    int64_t plain_bytes = 0;
    t = ReadTree(state_path, std::span(chunk), &plain_bytes);
    if (!t.ok()) return t.status();
    plain_r.push_back(d.bytes / (plain_bytes / *t));  // time for d.bytes at that rate
    for (int64_t k = 0; k < d.sessions; ++k) {
      if (absl::Status st = (*state)->Remove(BenchId(r, k)); !st.ok()) return st;
    }
    const FsyncTimingFileOps::Fsyncs& w = fsyncs.back();
    Progress(absl::StrFormat(
        "rep %d: dd write %.3f s, read %.3f s; mnemo write %.3f s "
        "(fsyncs: %lld data %.3f s, %lld metadata %.3f s), restore %.3f s",
        r + 1, dd_w.back(), dd_r.back(), disk_w.back(), static_cast<long long>(w.data_calls),
        w.data_s, static_cast<long long>(w.meta_calls), w.meta_s, disk_r.back()));
  }
  d.dd_write = Summarize(dd_w);
  d.dd_read = Summarize(dd_r);
  d.write = Summarize(disk_w);
  d.restore = Summarize(disk_r);
  d.plain_read = Summarize(plain_r);
  const double tokens = static_cast<double>(d.sessions * ses.tokens);
  // The write protocol's bound: the best write without its metadata commits (directory and
  // manifest fsyncs), as a fraction of dd's rate.
  const size_t best =
      static_cast<size_t>(std::min_element(disk_w.begin(), disk_w.end()) - disk_w.begin());
  const FsyncTimingFileOps::Fsyncs& fb = fsyncs[best];
  const double dd_rate = d.dd_bytes / d.dd_write.best;
  d.j["disk"] = {
      {"sessions", d.sessions},
      {"bytes", d.bytes},
      {"fsync", true},
      {"write",
       {{"s_per_token", PerUnit(d.write, tokens)}, {"gb_per_s", Rate(d.write, d.bytes / 1e9)}}},
      {"restore",
       {{"s_per_token", PerUnit(d.restore, tokens)}, {"gb_per_s", Rate(d.restore, d.bytes / 1e9)}}},
      {"eviction", Eviction(disk_res)},
      {"best_write_fsyncs",
       {{"data_calls", fb.data_calls},
        {"data_s", fb.data_s},
        {"metadata_calls", fb.meta_calls},
        {"metadata_s", fb.meta_s},
        {"write_frac_of_dd_without_metadata_commits",
         d.bytes / (d.write.best - fb.meta_s) / dd_rate}}}};
  d.j["dd"] = {{"bytes", d.dd_bytes},
               {"chunk_bytes", kDdChunk},
               {"write_gb_per_s", Rate(d.dd_write, d.dd_bytes / 1e9)},
               {"read_gb_per_s", Rate(d.dd_read, d.dd_bytes / 1e9)},
               {"read_state_files_gb_per_s", Rate(d.plain_read, d.bytes / 1e9)},
               {"eviction", Eviction(dd_res)}};
  return d;
}

absl::StatusOr<json> Measure(const Flags& f, Setup& s, const std::string& work) {
  cache::BlockPool& pool = *s.pool;
  Session ses;
  ses.tokens = f.tokens;
  if (!ses.src.Reserve(pool, ses.tokens) || !ses.dst.Reserve(pool, ses.tokens)) {
    return absl::ResourceExhaustedError("KV pool too small");
  }
  const int64_t n_blocks = static_cast<int64_t>(ses.src.blocks().size());
  ses.bytes = n_blocks * pool.block_bytes();
  absl::StatusOr<Timing> recompute = MeasureRecompute(f, s, ses);
  if (!recompute.ok()) return recompute.status();
  absl::StatusOr<Timing> host = MeasureHostRestore(f, pool, ses);
  if (!host.ok()) return host.status();
  absl::StatusOr<DiskResult> disk = MeasureDisk(f, s, ses, work);
  if (!disk.ok()) return disk.status();
  ses.src.Release(pool);
  ses.dst.Release(pool);

  json j = disk->j;
  j["block_bytes"] = pool.block_bytes();
  j["session_blocks"] = n_blocks;
  j["session_bytes"] = ses.bytes;
  j["recompute"] = {{"chunk_tokens", engine::EngineOptions{}.max_batch_tokens},
                    {"s_per_token", PerUnit(*recompute, ses.tokens)},
                    {"tokens_per_s", Rate(*recompute, ses.tokens)}};
  j["host_restore"] = {{"s_per_token", PerUnit(*host, ses.tokens)},
                       {"gb_per_s", Rate(*host, ses.bytes / 1e9)}};
  // Per-token recompute over per-token restore; mnemo's disk rates over dd's.
  const double disk_tokens = static_cast<double>(disk->sessions * ses.tokens);
  auto ratios = [&](auto pick) {
    const double rec = pick(*recompute) / ses.tokens;
    return json{{"recompute_over_host_restore", rec / (pick(*host) / ses.tokens)},
                {"recompute_over_disk_restore", rec / (pick(disk->restore) / disk_tokens)},
                {"disk_write_frac_of_dd",
                 (disk->bytes / pick(disk->write)) / (disk->dd_bytes / pick(disk->dd_write))},
                {"disk_read_frac_of_dd",
                 (disk->bytes / pick(disk->restore)) / (disk->dd_bytes / pick(disk->dd_read))},
                {"disk_read_frac_of_plain_reads", pick(disk->plain_read) / pick(disk->restore)}};
  };
  j["ratios"] = ratios([](const Timing& t) { return t.best; });
  j["ratios_median"] = ratios([](const Timing& t) { return t.median; });
  const json& best = j["ratios"];
  j["goals"] = {{"disk_restore_20x_cheaper", best["recompute_over_disk_restore"] >= 20.0},
                {"disk_write_70pct_of_dd", best["disk_write_frac_of_dd"] >= 0.7},
                {"disk_read_70pct_of_dd", best["disk_read_frac_of_dd"] >= 0.7}};
  return j;
}

void PrintText(const json& j) {
  auto num = [](const json& v) { return v.get<double>(); };
  std::printf("\n== restore vs recompute (%s, %d threads, f16 KV, %d-token blocks) ==\n",
              j["model"].get<std::string>().c_str(), j["threads"].get<int>(), kBlockTokens);
  std::printf("session: %d tokens = %lld blocks of %lld bytes = %.1f MB; %d repetitions\n",
              j["tokens"].get<int>(), j["session_blocks"].get<long long>(),
              j["block_bytes"].get<long long>(), num(j["session_bytes"]) / 1e6,
              j["reps"].get<int>());
  const json& d = j["disk"];
  std::printf("disk: %s, %lld sessions = %.1f MB, fsync on; dd file %.1f MB\n",
              j["dir"].get<std::string>().c_str(), d["sessions"].get<long long>(),
              num(d["bytes"]) / 1e6, num(j["dd"]["bytes"]) / 1e6);
  auto cell = [&](const json* o, const char* k, double scale) {
    return o == nullptr ? std::string("-") : absl::StrFormat("%.3f", num((*o)[k]) * scale);
  };
  auto row = [&](const char* name, const json* per_token, const json* rate) {
    std::printf("%-26s %14s %14s %11s %11s\n", name, cell(per_token, "best", 1e6).c_str(),
                cell(per_token, "median", 1e6).c_str(), cell(rate, "best", 1).c_str(),
                cell(rate, "median", 1).c_str());
  };
  std::printf("\n%-26s %14s %14s %11s %11s\n", "", "us/token best", "us/token med", "GB/s best",
              "GB/s med");
  row("recompute (prefill)", &j["recompute"]["s_per_token"], nullptr);
  row("host restore (RAM copy)", &j["host_restore"]["s_per_token"], &j["host_restore"]["gb_per_s"]);
  row("mnemo disk write", &d["write"]["s_per_token"], &d["write"]["gb_per_s"]);
  row("mnemo disk restore", &d["restore"]["s_per_token"], &d["restore"]["gb_per_s"]);
  row("dd write (1 MiB + fsync)", nullptr, &j["dd"]["write_gb_per_s"]);
  row("dd read (1 MiB)", nullptr, &j["dd"]["read_gb_per_s"]);
  row("plain read of mnemo files", nullptr, &j["dd"]["read_state_files_gb_per_s"]);
  const json& r = j["ratios"];
  std::printf("\nrecompute / host restore   %10.1fx\n", num(r["recompute_over_host_restore"]));
  std::printf("recompute / disk restore   %10.1fx   (goal >= 20x)\n",
              num(r["recompute_over_disk_restore"]));
  std::printf("disk write / dd write      %10.1f%%   (goal >= 70%%)\n",
              100 * num(r["disk_write_frac_of_dd"]));
  std::printf("disk read / dd read        %10.1f%%   (goal >= 70%%)\n",
              100 * num(r["disk_read_frac_of_dd"]));
  std::printf("disk read / plain read     %10.1f%%   (of the same files, 1 MiB reads)\n",
              100 * num(r["disk_read_frac_of_plain_reads"]));
  const json& fs = d["best_write_fsyncs"];
  std::printf(
      "best write: %lld data fsyncs in %.3f s, %lld metadata fsyncs (directories, manifests) "
      "in %.3f s; without the latter %.1f%% of dd\n",
      fs["data_calls"].get<long long>(), num(fs["data_s"]), fs["metadata_calls"].get<long long>(),
      num(fs["metadata_s"]), 100 * num(fs["write_frac_of_dd_without_metadata_commits"]));
  auto ev = [&](const json& e) {
    return absl::StrFormat("%s, %.1f%% resident after",
                           e["evicted"].get<bool>() ? "evicted" : "NOT evicted",
                           100 * num(e["resident_fraction_after"]));
  };
  std::printf("page cache: mnemo files %s; dd file %s\n", ev(d["eviction"]).c_str(),
              ev(j["dd"]["eviction"]).c_str());
  std::printf("load average: %.2f at start, %.2f at end\n", num(j["load_average_start"]),
              num(j["load_average_end"]));
}

constexpr char kUsage[] =
    "usage: mnemo_tier_bench [--model=PATH] [--tokens=N] [--disk-mib=N] [--reps=N]\n"
    "  [--dir=PATH] [--threads=N] [--text=PATH] [--seed=N] [--json] [--quick]\n";

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags f;
  f.model = DefaultModelPath(MNEMO_SOURCE_DIR);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (std::find(args.begin(), args.end(), "--quick") != args.end()) {
    f.quick = true;
    f.tokens = 64;
    f.disk_mib = 8;
    f.reps = 1;
  }
  const std::pair<std::string_view, int*> ints[] = {{"--tokens", &f.tokens},
                                                    {"--disk-mib", &f.disk_mib},
                                                    {"--reps", &f.reps},
                                                    {"--threads", &f.threads}};
  for (const std::string& a : args) {
    const size_t eq = a.find('=');
    const std::string name = a.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : a.substr(eq + 1);
    char* end = nullptr;
    const long long v = std::strtoll(value.c_str(), &end, 10);
    const bool numeric = !value.empty() && *end == '\0' && v >= 0 && v <= (1ll << 30);
    if (a == "--json") {
      f.json = true;
    } else if (a == "--quick") {
    } else if (a == "--help" || a == "-h") {
      return absl::CancelledError(std::string(kUsage));
    } else if ((name == "--model" || name == "--text" || name == "--dir") &&
               eq != std::string::npos) {
      (name == "--model" ? f.model : name == "--text" ? f.text : f.dir) = value;
    } else if (name == "--seed" && numeric) {
      f.seed = static_cast<uint64_t>(v);
    } else {
      auto it = std::find_if(std::begin(ints), std::end(ints),
                             [&](const auto& i) { return i.first == name; });
      if (it == std::end(ints)) {
        return absl::InvalidArgumentError(absl::StrCat("unknown flag ", a, "\n", kUsage));
      }
      if (!numeric) return absl::InvalidArgumentError(absl::StrCat("bad value in ", a));
      *it->second = static_cast<int>(v);
    }
  }
  if (f.tokens < 1 || f.disk_mib < 1 || f.reps < 1) {
    return absl::InvalidArgumentError("--tokens, --disk-mib and --reps must be >= 1");
  }
  if (f.reps > 255) return absl::InvalidArgumentError("--reps must be <= 255");
  if (f.dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    f.dir = tmp != nullptr && *tmp != '\0' ? tmp : "/var/tmp";
  }
  return f;
}

absl::Status Run(const Flags& f) {
  const double load_start = LoadAverage();
  absl::StatusOr<Setup> setup = Load(f);
  if (!setup.ok()) return setup.status();
  std::string work = f.dir + "/mnemo-tier-bench.XXXXXX";
  if (mkdtemp(work.data()) == nullptr) {
    return absl::UnavailableError(absl::StrCat("mkdtemp ", work, ": ", std::strerror(errno)));
  }
  Progress(absl::StrCat("model ", f.model, "; text from ", setup->text_used, "; disk in ", work));
  absl::StatusOr<json> m = Measure(f, *setup, work);
  std::error_code ec;
  std::filesystem::remove_all(work, ec);
  if (!m.ok()) return m.status();
  json j = {{"bench", "tier"},
            {"model", f.model},
            {"text", setup->text_used},
            {"threads", setup->fwd->threads()},
            {"quick", f.quick},
            {"reps", f.reps},
            {"tokens", f.tokens},
            {"block_tokens", kBlockTokens},
            {"kv_dtype", "f16"},
            {"dir", f.dir},
            {"load_average_start", load_start}};
  j.update(*m);
  j["load_average_end"] = LoadAverage();
  PrintReport(j, f.json, PrintText);
  return absl::OkStatus();
}

}  // namespace
}  // namespace mnemo::bench

int main(int argc, char** argv) {
  return mnemo::bench::BenchMain("mnemo_tier_bench", mnemo::bench::ParseFlags(argc, argv),
                                 mnemo::bench::Run);
}
