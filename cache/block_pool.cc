#include "cache/block_pool.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <optional>

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
  auto* arena = static_cast<uint8_t*>(::operator new(bytes, kArenaAlign, std::nothrow));
  if (arena == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate a KV arena of ", bytes, " bytes"));
  }
  return std::unique_ptr<BlockPool>(new BlockPool(l, block_bytes, num_slots, arena));
}

BlockPool::BlockPool(const kernels::KvLayout& layout, int64_t block_bytes, int64_t num_slots,
                     uint8_t* arena)
    : layout_(layout),
      block_bytes_(block_bytes),
      num_slots_(num_slots),
      arena_(arena),
      in_use_(static_cast<size_t>(num_slots), 0) {
  for (int64_t s = 0; s < num_slots; ++s) free_.push_back(BlockId{static_cast<int32_t>(s)});
}

BlockPool::~BlockPool() { ::operator delete(arena_, kArenaAlign); }

std::optional<BlockId> BlockPool::Allocate() {
  if (free_.empty()) return std::nullopt;
  const BlockId id = free_.front();
  free_.pop_front();
  MNEMO_DCHECK(!in_use_[id.value]) << "free list holds allocated slot " << id.value;
  in_use_[id.value] = 1;
  return id;
}

void BlockPool::Free(BlockId id) {
  MNEMO_CHECK(id.value >= 0 && id.value < num_slots_)
      << "freeing block " << id.value << " outside a pool of " << num_slots_;
  MNEMO_CHECK(in_use_[id.value]) << "double free of block " << id.value;
  in_use_[id.value] = 0;
  free_.push_back(id);
}

bool BlockPool::IsAllocated(BlockId id) const {
  return id.value >= 0 && id.value < num_slots_ && in_use_[id.value] != 0;
}

kernels::KvArenaView BlockPool::view() const {
  return kernels::KvArenaView{layout_, arena_, num_slots_};
}

uint8_t* BlockPool::BlockData(BlockId id) const {
  MNEMO_CHECK(id.value >= 0 && id.value < num_slots_) << "block " << id.value;
  return arena_ + id.value * block_bytes_;
}

}  // namespace mnemo::cache
