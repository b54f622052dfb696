// BlockPool: a fixed RAM arena of equal KV block slots (DESIGN.md 3), sized from a byte
// budget, with a free list.
//
//   arena (64-byte aligned):  [ slot 0 | slot 1 | ... | slot n-1 ]   each layout.block_bytes()
//
// A BlockId names one slot of one pool. Allocate hands out a free slot (or nullopt when
// none is free: "cannot allocate now" is a normal result, not an error); Free returns it.
// Every slot is either free or owned by exactly one holder; freeing a free slot or an id
// outside the pool is a bug and aborts (MNEMO_CHECK, in every build).
//
// Free-list order: FIFO. Allocate takes the slot freed longest ago, Free appends at the
// back; a fresh pool hands out slots 0, 1, 2, ... in order. The later prefix-caching work
// turns this queue into the eviction order (a refcount-0 cached block is appended on its
// last release and stays findable until its slot reaches the front and is reused), so the
// pool keeps per-slot state in a vector indexed by slot, ready for refcounts and hashes.
//
// The contents of a freshly allocated slot are unspecified (the arena is not cleared).
//
// Thread-safety: none; the engine loop owns the pool (DESIGN.md 5). view() may be handed to
// kernels running on other threads while the loop does not allocate or free.
#pragma once

#include <compare>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/attention.h"

namespace mnemo::cache {

// A slot of a BlockPool. Default-constructed ids are invalid (value -1).
struct BlockId {
  int32_t value = -1;

  bool valid() const { return value >= 0; }
  friend auto operator<=>(const BlockId&, const BlockId&) = default;
};

struct BlockPoolOptions {
  kernels::KvLayout layout;
  uint64_t budget_bytes = 0;  // the pool holds floor(budget_bytes / block_bytes) slots
};

class BlockPool {
 public:
  // InvalidArgument: a layout size <= 0, a dtype other than f16/bf16, or a block too large
  // to address. ResourceExhausted: the budget does not hold one block (or the arena cannot
  // be allocated). At most INT32_MAX slots.
  static absl::StatusOr<std::unique_ptr<BlockPool>> Create(const BlockPoolOptions& options);

  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;
  ~BlockPool();  // releases the arena; outstanding ids become dangling

  // A free slot, now owned by the caller; nullopt when every slot is in use.
  std::optional<BlockId> Allocate();
  // Returns an allocated slot to the pool. Aborts if `id` is not an allocated slot of this
  // pool (a double free or a foreign id).
  void Free(BlockId id);

  // Whether `id` names a slot of this pool that is currently allocated.
  bool IsAllocated(BlockId id) const;

  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
  int64_t num_total() const { return num_slots_; }
  const kernels::KvLayout& layout() const { return layout_; }
  int64_t block_bytes() const { return block_bytes_; }

  // The arena as the kernels see it (slot s at base + s * block_bytes).
  kernels::KvArenaView view() const;
  // The bytes of slot `id` (which must be a slot of this pool).
  uint8_t* BlockData(BlockId id) const;

 private:
  BlockPool(const kernels::KvLayout& layout, int64_t block_bytes, int64_t num_slots,
            uint8_t* arena);

  // Constant after construction.
  const kernels::KvLayout layout_;
  const int64_t block_bytes_;
  const int64_t num_slots_;
  uint8_t* const arena_;  // owned; 64-byte aligned, num_slots_ * block_bytes_ bytes

  std::deque<BlockId> free_;     // FIFO: front is allocated next
  std::vector<uint8_t> in_use_;  // [num_slots_]: 1 while the slot is allocated
};

}  // namespace mnemo::cache
