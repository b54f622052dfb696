// The forward pass as the engine sees it, whatever the device: one step over a batch of
// sequences whose KV lives in paged blocks of an arena in the backend's memory (host RAM for
// the CPU backend, device memory for the CUDA one), logits returned in host memory.
//
// What both backends share lives here too: the batch description, its validation, the
// flattened step plan (host arrays the CPU uses directly and the CUDA backend uploads), and
// the model's RoPE table.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/forward/weights.h"
#include "engine/model/model.h"
#include "kernels/attention.h"
#include "kernels/ops.h"

namespace mnemo::cache {
class ArenaMemory;
class BlockTable;
class HostArenaAllocator;
}  // namespace mnemo::cache

namespace mnemo::engine {

// Which of a sequence's new tokens get logits.
enum class LogitRows : uint8_t {
  kNone,  // prefill chunk that samples nothing
  kLast,  // the last new token (a sampled position)
  kAll,   // every new token (scoring a text, tests)
};

// One sequence of a step: `tokens` are appended at positions start_pos, start_pos + 1, ...
// and attend to the sequence's positions [0, start_pos) already in its blocks.
struct SeqBatchEntry {
  std::span<const TokenId> tokens;
  int32_t start_pos = 0;
  // Must hold blocks for at least start_pos + tokens.size() tokens (reserve them first).
  const cache::BlockTable* table = nullptr;
  LogitRows logits = LogitRows::kLast;
};

// Where the forward pass runs: "cpu", "cuda" (device 0) or "cuda:N".
struct Device {
  enum class Kind : uint8_t { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = 0;  // the CUDA device ordinal

  // InvalidArgument naming the text for anything but cpu, cuda, cuda:N (N >= 0).
  static absl::StatusOr<Device> Parse(std::string_view text);
  std::string ToString() const;
};

struct ForwardOptions {
  Device device;
  int threads = 0;  // oneTBB threads for the CPU kernels; 0: every hardware thread
  // CPU only: run the scalar reference twins of the ops (kernels/ops.h `<Op>Ref`: no 16-bit
  // activation rounding, attention softmax in double; MatMulRef split over output rows
  // across threads) instead of the fast ones. Slow; for validating the forward pass itself
  // against an independent implementation.
  bool reference_kernels = false;
  // Multiply with the fused Q|K|V and gate|up copies where the weights allow it
  // (WeightOptions::fuse). The same bits either way; off only to test that.
  bool fuse_matrices = true;
  // CUDA only: bytes of device memory for the weights, the scratch reserve and the KV
  // region together (one allocation); 0: 0.9 of the free memory.
  uint64_t device_budget_bytes = 0;
};

// Rows of logits a step over `batch` produces.
int64_t LogitRowCount(std::span<const SeqBatchEntry> batch);

// The KV block layout a model needs (kv_dtype: kF16 or kBF16).
kernels::KvLayout KvLayoutForModel(const ModelConfig& c, kernels::DType kv_dtype,
                                   int block_tokens = 16);

// The checks every backend makes before a step (nothing is written to the KV on error):
//   InvalidArgument: empty batch or entry, a token id outside the vocabulary, a position
//     past the model's context length, a layout that does not match the model, a block id
//     outside the arena;
//   FailedPrecondition: a table without blocks for all of its entry's tokens.
absl::Status ValidateBatch(const ModelConfig& c, const kernels::KvArenaView& kv,
                           std::span<const SeqBatchEntry> batch);

// A step flattened: the new tokens of all sequences as rows, in batch order.
struct StepPlan {
  std::vector<int32_t> tokens;       // [T]
  std::vector<int32_t> q_start;      // [n_seqs + 1]
  std::vector<int32_t> positions;    // [T]
  std::vector<int32_t> kv_len;       // [n_seqs]
  std::vector<int32_t> table_start;  // [n_seqs + 1]
  std::vector<int32_t> block_table;  // every sequence's block ids, concatenated
  std::vector<int32_t> logit_rows;   // rows whose logits are wanted, in output order

  void Build(std::span<const SeqBatchEntry> batch);
  int64_t rows() const { return static_cast<int64_t>(tokens.size()); }
  int n_seqs() const { return static_cast<int>(kv_len.size()); }
  // The plan as the kernels take it (pointers into this plan's vectors).
  kernels::BatchSeqs Seqs() const;
};

// ForwardPass::ObserveAttention's argument checks (InvalidArgument naming the bad one).
absl::Status ValidateObserve(const SeqBatchEntry& entry, int64_t observe_from, size_t mass_size);

// The model's RoPE frequencies and magnitude scale (kernels/ops.h RopeTable).
kernels::RopeTable ModelRopeTable(const ModelConfig& c, const ModelWeights& w);

class ForwardPass {
 public:
  virtual ~ForwardPass() = default;

  virtual const ModelConfig& config() const = 0;
  virtual const Device& device() const = 0;
  // The memory the KV arena passed to Forward must live in (a BlockPool's
  // BlockPoolOptions::memory); nullptr: host RAM.
  virtual cache::ArenaMemory* kv_memory() { return nullptr; }
  // The allocator of the host tier's arena (page-locked memory for a GPU); nullptr: the
  // default (aligned operator new).
  virtual cache::HostArenaAllocator* host_allocator() { return nullptr; }
  // Bytes of KV arena kv_memory() can provide (the device memory plan's KV region); 0: no
  // fixed limit (host RAM: the caller's budget decides).
  virtual uint64_t kv_capacity_bytes() const { return 0; }
  // The rotary embedding's frequencies (ModelRopeTable), for re-rotating stored keys.
  virtual const kernels::RopeTable& rope_table() const = 0;

  // The KV block layout this model needs (kv_dtype: kF16 or kBF16).
  kernels::KvLayout KvLayoutFor(kernels::DType kv_dtype, int block_tokens = 16) const {
    return KvLayoutForModel(config(), kv_dtype, block_tokens);
  }

  // Runs one step. `kv` is the arena the tables' block ids index, in this backend's memory;
  // its layout must equal KvLayoutFor(its dtype, its block_tokens). Writes the logits of the
  // wanted rows, in batch order (a sequence's rows in position order), to the host buffer
  // logits[LogitRowCount(batch), vocab]. Errors: those of ValidateBatch (nothing written to
  // the KV then); a device error as Internal.
  virtual absl::Status Forward(const kernels::KvArenaView& kv, std::span<const SeqBatchEntry> batch,
                               float* logits) = 0;

  // The score compaction policy's probe (cache/compaction.h): runs `entry` alone as a step
  // (its KV written as Forward writes it, no logits) and adds to mass[pos] the attention
  // that the queries of entry.tokens[observe_from..], in every layer and head, give each
  // position pos (kernels::AttentionMass). mass.size() must be at least entry.start_pos +
  // entry.tokens.size(). Errors: those of Forward; InvalidArgument for a short `mass` or an
  // observe_from outside the tokens (ValidateObserve).
  virtual absl::Status ObserveAttention(const kernels::KvArenaView& kv, const SeqBatchEntry& entry,
                                        int64_t observe_from, std::span<float> mass) = 0;
};

// The forward pass of `opts.device` for `model` (which must outlive it). InvalidArgument
// naming the tensor for an unsupported weight dtype; FailedPrecondition for a CUDA device
// this build or machine does not have (naming it and what is present).
absl::StatusOr<std::unique_ptr<ForwardPass>> CreateForwardPass(const Model& model,
                                                               const ForwardOptions& opts = {});

}  // namespace mnemo::engine
