// BlockPool: a fixed arena (host RAM, or device memory through ArenaMemory) of equal KV block slots
// (DESIGN.md 3), sized from a byte budget, with per-slot reference counts and the prefix index
// (content hash -> slot).
//
//   arena (64-byte aligned):  [ slot 0 | slot 1 | ... | slot n-1 ]   each layout.block_bytes()
//
// Every slot is in one of three states:
//
//   free     refcount 0, no hash        allocatable at once
//   in use   refcount >= 1              held by that many block tables (or other holders);
//                                       private while it has no hash, immutable once
//                                       published (a published block is never written)
//   cached   refcount 0, published      still findable by its hash (Acquire) until its slot
//                                       is needed: then it is evicted (hash dropped, reused)
//
//   Allocate: free -> in use (rc 1); when no slot is free, evicts the least recently
//             released cached slot (LRU on release time) and hands it out.
//   Retain / Release: rc +1 / -1; at rc 0 a published slot becomes cached (most recent end
//             of the LRU), an unpublished one becomes free.
//   Publish:  gives an in-use, unpublished slot its hash (the block is full and will not be
//             written again). Refused when another slot already has that hash.
//   Acquire:  looks a hash up; an in-use slot gets rc + 1, a cached one is revived (rc 1).
//
// Order: free slots first, in FIFO order of their freeing (a fresh pool hands out 0, 1,
// 2, ...); only then cached slots, least recently released first.
//
// Misuse (an id outside the pool, Retain/Release of a slot that is not in use, Publish of a
// slot that is not in use or already published) is a bug and aborts (MNEMO_CHECK, every
// build). The contents of a freshly allocated slot are unspecified.
//
// Thread-safety: none; the engine loop owns the pool (DESIGN.md 5). view() may be handed to
// kernels running on other threads while the loop does not allocate or free.
#pragma once

#include <compare>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "cache/arena_memory.h"
#include "cache/block_hash.h"
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
  // Where the arena lives (must outlive the pool); nullptr: host RAM (HostArenaMemory()).
  ArenaMemory* memory = nullptr;
};

struct BlockPoolStats {
  int64_t acquire_hits = 0;       // Acquire calls that found their hash
  int64_t acquire_misses = 0;     // ... and that did not
  int64_t evictions = 0;          // cached slots reused by Allocate
  int64_t publish_conflicts = 0;  // Publish refused: the hash was already taken
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

  // A private slot with refcount 1 (a free one, else the LRU cached one, evicted); nullopt
  // when every slot is in use.
  std::optional<BlockId> Allocate();
  // Refcount + 1 of an in-use slot.
  void Retain(BlockId id);
  // Refcount - 1 of an in-use slot; at 0 it becomes cached (published) or free.
  void Release(BlockId id);

  // Publishes in-use, unpublished slot `id` under `hash`. Returns false and changes nothing
  // when another slot already has that hash (the caller keeps its private copy, or swaps to
  // the other slot through Acquire).
  bool Publish(BlockId id, const BlockHash& hash);
  // The slot published under `hash`, with one more reference for the caller; nullopt (and a
  // miss counted) when there is none.
  std::optional<BlockId> Acquire(const BlockHash& hash);
  // Whether some slot is published under `hash` (changes nothing, counts nothing).
  bool Contains(const BlockHash& hash) const;

  int32_t refcount(BlockId id) const;
  bool is_published(BlockId id) const;
  // The hash of a published slot (which must be published).
  const BlockHash& hash(BlockId id) const;
  // Whether `id` names a slot of this pool that is in use (refcount >= 1); false for any
  // other id, including one outside the pool (so it can validate ids without aborting).
  bool IsAllocated(BlockId id) const {
    return id.value >= 0 && id.value < num_slots_ && slots_[id.value].refcount > 0;
  }

  // Slots Allocate can hand out now: free + cached.
  int64_t num_free() const { return num_plain_free_ + num_cached_; }
  int64_t num_cached() const { return num_cached_; }
  int64_t num_in_use() const { return num_slots_ - num_free(); }
  int64_t num_total() const { return num_slots_; }
  const BlockPoolStats& stats() const { return stats_; }
  const kernels::KvLayout& layout() const { return layout_; }
  int64_t block_bytes() const { return block_bytes_; }

  // The arena as the kernels see it (slot s at base + s * block_bytes).
  kernels::KvArenaView view() const;
  // The bytes of slot `id` (which must be a slot of this pool): a host pointer only when
  // memory().host_accessible(); otherwise move bytes with memory().Copy.
  uint8_t* BlockData(BlockId id) const;
  // Copies every byte of slot src to slot dst, through the arena's memory.
  void CopyBlockData(BlockId dst, BlockId src);
  ArenaMemory& memory() const { return *memory_; }

 private:
  BlockPool(const kernels::KvLayout& layout, int64_t block_bytes, int64_t num_slots,
            ArenaMemory* memory, uint8_t* arena);
  void CheckId(BlockId id) const;

  // Constant after construction.
  const kernels::KvLayout layout_;
  const int64_t block_bytes_;
  const int64_t num_slots_;
  ArenaMemory* const memory_;
  uint8_t* const arena_;  // owned (from memory_); 64-byte aligned, num_slots_ * block_bytes_ bytes

  struct Slot {
    int32_t refcount = 0;
    bool published = false;
    BlockHash hash;
    // Intrusive links of the free list or the LRU list (-1: none).
    int32_t prev = -1;
    int32_t next = -1;
  };
  std::vector<Slot> slots_;
  // Two intrusive doubly linked lists over slots_: plain free slots (FIFO) and cached slots
  // (LRU: head = least recently released). Heads/tails are slot indices or -1.
  struct List {
    int32_t head = -1;
    int32_t tail = -1;
  };
  void PushBack(List& list, int32_t s);
  void Unlink(List& list, int32_t s);
  List free_list_;
  List lru_list_;
  int64_t num_plain_free_ = 0;
  int64_t num_cached_ = 0;
  absl::flat_hash_map<BlockHash, int32_t> index_;  // published hash -> slot
  BlockPoolStats stats_;
};

}  // namespace mnemo::cache
