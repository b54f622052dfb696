#include "cache/block_pool.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/base/check.h"

namespace mnemo::cache {
namespace {

constexpr std::align_val_t kArenaAlign{64};

}  // namespace

absl::StatusOr<std::unique_ptr<BlockPool>> BlockPool::Create(const BlockPoolOptions& options) {
  const kernels::KvLayout& l = options.layout;
  if (l.n_layers <= 0 || l.n_kv_heads <= 0 || l.head_dim <= 0 || l.block_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV layout sizes must be positive: n_layers ", l.n_layers, ", n_kv_heads ",
                     l.n_kv_heads, ", head_dim ", l.head_dim, ", block_tokens ", l.block_tokens));
  }
  if (l.dtype != kernels::DType::kF16 && l.dtype != kernels::DType::kBF16) {
    return absl::InvalidArgumentError("KV blocks must be f16 or bf16");
  }
  // block_bytes = n_layers * 2 * n_kv_heads * block_tokens * head_dim * 2, checked for
  // overflow: each factor is < 2^31, so the product may not fit int64.
  int64_t block_bytes = 2 * 2;
  for (int64_t f :
       {int64_t{l.n_layers}, int64_t{l.n_kv_heads}, int64_t{l.block_tokens}, int64_t{l.head_dim}}) {
    if (__builtin_mul_overflow(block_bytes, f, &block_bytes)) {
      return absl::InvalidArgumentError("KV block size overflows");
    }
  }
  const uint64_t slots = options.budget_bytes / static_cast<uint64_t>(block_bytes);
  if (slots == 0) {
    return absl::ResourceExhaustedError(absl::StrCat("a budget of ", options.budget_bytes,
                                                     " bytes holds no KV block of ", block_bytes,
                                                     " bytes"));
  }
  const int64_t num_slots =
      static_cast<int64_t>(std::min<uint64_t>(slots, std::numeric_limits<int32_t>::max()));
  // Rounded up to a whole number of 64-byte lines.
  const uint64_t bytes = (static_cast<uint64_t>(num_slots) * block_bytes + 63) / 64 * 64;
  ArenaMemory* memory = options.memory != nullptr ? options.memory : &HostArenaMemory();
  auto* arena = static_cast<uint8_t*>(memory->Allocate(bytes));
  if (arena == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate a KV arena of ", bytes, " bytes"));
  }
  return std::unique_ptr<BlockPool>(new BlockPool(l, block_bytes, num_slots, memory, arena));
}

BlockPool::BlockPool(const kernels::KvLayout& layout, int64_t block_bytes, int64_t num_slots,
                     ArenaMemory* memory, uint8_t* arena)
    : layout_(layout),
      block_bytes_(block_bytes),
      num_slots_(num_slots),
      memory_(memory),
      arena_(arena),
      slots_(static_cast<size_t>(num_slots)) {
  for (int64_t s = 0; s < num_slots; ++s) PushBack(free_list_, static_cast<int32_t>(s));
  num_plain_free_ = num_slots;
}

BlockPool::~BlockPool() { memory_->Free(arena_); }

void BlockPool::CopyBlockData(BlockId dst, BlockId src) {
  memory_->Copy(BlockData(dst), BlockData(src), static_cast<size_t>(block_bytes_));
}

namespace {

class HostMemory final : public ArenaMemory {
 public:
  void* Allocate(size_t bytes) override { return ::operator new(bytes, kArenaAlign, std::nothrow); }
  void Free(void* p) override { ::operator delete(p, kArenaAlign); }
  void Copy(void* dst, const void* src, size_t n) override { std::memcpy(dst, src, n); }
  bool host_accessible() const override { return true; }
};

}  // namespace

ArenaMemory& HostArenaMemory() {
  static HostMemory memory;
  return memory;
}

void BlockPool::CheckId(BlockId id) const {
  MNEMO_CHECK(id.value >= 0 && id.value < num_slots_)
      << "block " << id.value << " outside a pool of " << num_slots_;
}

void BlockPool::PushBack(List& list, int32_t s) {
  Slot& slot = slots_[s];
  slot.prev = list.tail;
  slot.next = -1;
  if (list.tail >= 0) {
    slots_[list.tail].next = s;
  } else {
    list.head = s;
  }
  list.tail = s;
}

void BlockPool::Unlink(List& list, int32_t s) {
  Slot& slot = slots_[s];
  if (slot.prev >= 0) {
    slots_[slot.prev].next = slot.next;
  } else {
    list.head = slot.next;
  }
  if (slot.next >= 0) {
    slots_[slot.next].prev = slot.prev;
  } else {
    list.tail = slot.prev;
  }
  slot.prev = slot.next = -1;
}

std::optional<BlockId> BlockPool::Allocate() {
  int32_t s = free_list_.head;
  if (s >= 0) {
    Unlink(free_list_, s);
    --num_plain_free_;
  } else {
    s = lru_list_.head;
    if (s < 0) return std::nullopt;
    // Evict the least recently released cached block: its hash stops naming it.
    Unlink(lru_list_, s);
    --num_cached_;
    Slot& slot = slots_[s];
    MNEMO_DCHECK(slot.published) << "LRU list holds unpublished slot " << s;
    index_.erase(slot.hash);
    slot.published = false;
    slot.hash = BlockHash{};
    ++stats_.evictions;
  }
  Slot& slot = slots_[s];
  MNEMO_DCHECK(slot.refcount == 0 && !slot.published) << "handing out slot " << s << " in use";
  slot.refcount = 1;
  return BlockId{s};
}

void BlockPool::Retain(BlockId id) {
  CheckId(id);
  Slot& slot = slots_[id.value];
  MNEMO_CHECK(slot.refcount > 0) << "Retain of block " << id.value << ", which is not in use";
  ++slot.refcount;
}

void BlockPool::Release(BlockId id) {
  CheckId(id);
  Slot& slot = slots_[id.value];
  MNEMO_CHECK(slot.refcount > 0) << "Release of block " << id.value
                                 << ", which is not in use (double release)";
  if (--slot.refcount > 0) return;
  if (slot.published) {
    PushBack(lru_list_, id.value);
    ++num_cached_;
  } else {
    PushBack(free_list_, id.value);
    ++num_plain_free_;
  }
}

bool BlockPool::Publish(BlockId id, const BlockHash& hash) {
  CheckId(id);
  Slot& slot = slots_[id.value];
  MNEMO_CHECK(slot.refcount > 0) << "Publish of block " << id.value << ", which is not in use";
  MNEMO_CHECK(!slot.published) << "Publish of block " << id.value
                               << ", which is already published as " << slot.hash.ToString();
  if (!index_.try_emplace(hash, id.value).second) {
    ++stats_.publish_conflicts;
    return false;
  }
  slot.published = true;
  slot.hash = hash;
  return true;
}

std::optional<BlockId> BlockPool::Acquire(const BlockHash& hash) {
  const auto it = index_.find(hash);
  if (it == index_.end()) {
    ++stats_.acquire_misses;
    return std::nullopt;
  }
  ++stats_.acquire_hits;
  const int32_t s = it->second;
  Slot& slot = slots_[s];
  if (slot.refcount == 0) {  // cached: revive it
    Unlink(lru_list_, s);
    --num_cached_;
  }
  ++slot.refcount;
  return BlockId{s};
}

bool BlockPool::Contains(const BlockHash& hash) const { return index_.contains(hash); }

int32_t BlockPool::refcount(BlockId id) const {
  CheckId(id);
  return slots_[id.value].refcount;
}

bool BlockPool::is_published(BlockId id) const {
  CheckId(id);
  return slots_[id.value].published;
}

const BlockHash& BlockPool::hash(BlockId id) const {
  CheckId(id);
  MNEMO_CHECK(slots_[id.value].published)
      << "hash of block " << id.value << ", which is not published";
  return slots_[id.value].hash;
}

kernels::KvArenaView BlockPool::view() const {
  return kernels::KvArenaView{layout_, arena_, num_slots_};
}

uint8_t* BlockPool::BlockData(BlockId id) const {
  CheckId(id);
  return arena_ + id.value * block_bytes_;
}

}  // namespace mnemo::cache
