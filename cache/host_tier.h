// HostTier: the host tier's block store (DESIGN.md 4). A RAM arena of equal block slots
// under its own byte budget, holding copies of device KV blocks of sessions that were
// demoted from the device tier. Unlike BlockPool it has no prefix index and no refcounts:
// a slot is free or holds one stored block, and its owner (the tier manager, through the
// session's residency record) frees it exactly once.
//
//   arena (4096-byte aligned):  [ slot 0 | slot 1 | ... | slot n-1 ]   each block_bytes
//
//   num_slots = floor(budget_bytes / block_bytes); the arena is num_slots * block_bytes
//   bytes, so capacity_bytes() <= budget_bytes always. When block_bytes is a multiple of
//   4096 every slot is page aligned too (what O_DIRECT writes to the disk tier and pinned
//   DMA transfers want).
//
//   Store: free -> stored (a copy of the caller's bytes); nullopt when no slot is free.
//   Load:  copies a stored slot out (the slot stays stored).
//   Free:  stored -> free.
//
// Slot order: a fresh tier hands out 0, 1, 2, ...; afterwards the most recently freed slot
// is reused first (LIFO: its lines are the likeliest to still be in cache).
//
// Memory: the arena comes from a HostArenaAllocator. The default one uses aligned
// operator new (4096). The CUDA backend will pass one that returns pinned (page-locked)
// memory (cudaHostAlloc / cudaFreeHost), so device<->host copies can be asynchronous DMA;
// cache/ itself never calls CUDA (STYLE.md seams).
//
// Misuse (an id outside the tier, Load/Free of a slot that holds nothing, a span whose size
// is not block_bytes) is a bug and aborts (MNEMO_CHECK, every build).
//
// Thread-safety: none; one owner (the engine loop, or the I/O worker it hands the tier to).
// BlockData() may be read by another thread while the owner neither stores nor frees that
// slot.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace mnemo::cache {

// A slot of a HostTier. Default-constructed ids are invalid (value -1).
struct HostBlockId {
  int32_t value = -1;

  bool valid() const { return value >= 0; }
  friend auto operator<=>(const HostBlockId&, const HostBlockId&) = default;
};

// Where a HostTier's arena comes from. Allocate returns memory aligned to at least
// kHostArenaAlign bytes, or nullptr when it cannot; Free gets back exactly what Allocate
// returned, with the same size. Implementations must be callable from the tier's owner
// thread; they must outlive every tier that uses them.
class HostArenaAllocator {
 public:
  virtual ~HostArenaAllocator() = default;
  virtual void* Allocate(size_t bytes) = 0;
  virtual void Free(void* p, size_t bytes) = 0;
};

inline constexpr size_t kHostArenaAlign = 4096;

// Aligned operator new / delete (alignment kHostArenaAlign). A process-wide instance.
HostArenaAllocator& DefaultHostArenaAllocator();

struct HostTierOptions {
  int64_t block_bytes = 0;    // size of every block (the device layout's block_bytes())
  uint64_t budget_bytes = 0;  // the tier holds floor(budget_bytes / block_bytes) slots
  // Not owned; nullptr means DefaultHostArenaAllocator().
  HostArenaAllocator* allocator = nullptr;
};

struct HostTierStats {
  int64_t stores = 0;          // blocks stored
  int64_t store_refusals = 0;  // Store calls that found no free slot
  int64_t loads = 0;           // blocks copied out
  int64_t frees = 0;           // slots freed
};

class HostTier {
 public:
  // InvalidArgument: block_bytes <= 0. ResourceExhausted: the budget does not hold one
  // block, or the allocator cannot provide the arena. At most INT32_MAX slots.
  static absl::StatusOr<std::unique_ptr<HostTier>> Create(const HostTierOptions& options);

  HostTier(const HostTier&) = delete;
  HostTier& operator=(const HostTier&) = delete;
  ~HostTier();  // returns the arena to its allocator; outstanding ids become dangling

  // Copies `block` (exactly block_bytes() bytes) into a free slot and returns it; nullopt
  // (and a refusal counted) when every slot is taken. "Full" is a normal result: the tier
  // manager demotes or drops something first.
  std::optional<HostBlockId> Store(std::span<const uint8_t> block);
  // Takes a free slot without writing it (its bytes are unspecified until the caller fills
  // them through MutableBlockData, e.g. from an I/O worker); nullopt when every slot is
  // taken. The slot counts as stored.
  std::optional<HostBlockId> Allocate();
  // Copies stored slot `id` into `out` (exactly block_bytes() bytes).
  void Load(HostBlockId id, std::span<uint8_t> out);
  // Frees stored slot `id`.
  void Free(HostBlockId id);

  // Whether `id` names a slot of this tier that holds a block; false for any other id,
  // including one outside the tier.
  bool IsStored(HostBlockId id) const {
    return id.value >= 0 && id.value < num_slots_ && stored_[id.value];
  }
  // The bytes of stored slot `id` (e.g. to write them to the disk tier without a copy).
  std::span<const uint8_t> BlockData(HostBlockId id) const;
  std::span<uint8_t> MutableBlockData(HostBlockId id);

  int64_t block_bytes() const { return block_bytes_; }
  int64_t num_slots() const { return num_slots_; }
  int64_t num_stored() const { return num_slots_ - static_cast<int64_t>(free_.size()); }
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
  // Bytes held by stored blocks, and the arena's size (both exact multiples of
  // block_bytes()); capacity_bytes() <= budget_bytes().
  uint64_t used_bytes() const { return static_cast<uint64_t>(num_stored() * block_bytes_); }
  uint64_t capacity_bytes() const { return static_cast<uint64_t>(num_slots_ * block_bytes_); }
  uint64_t budget_bytes() const { return budget_bytes_; }
  const HostTierStats& stats() const { return stats_; }

 private:
  HostTier(int64_t block_bytes, int64_t num_slots, uint64_t budget_bytes,
           HostArenaAllocator* allocator, uint8_t* arena);
  void CheckStored(HostBlockId id, const char* op) const;

  // Constant after construction.
  const int64_t block_bytes_;
  const int64_t num_slots_;
  const uint64_t budget_bytes_;
  HostArenaAllocator* const allocator_;  // not owned
  uint8_t* const arena_;                 // from allocator_; num_slots_ * block_bytes_ bytes

  std::vector<bool> stored_;   // per slot
  std::vector<int32_t> free_;  // free slots; back() is handed out next
  HostTierStats stats_;
};

}  // namespace mnemo::cache
