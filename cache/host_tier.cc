#include "cache/host_tier.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/base/check.h"

namespace mnemo::cache {
namespace {

class AlignedNewAllocator final : public HostArenaAllocator {
 public:
  void* Allocate(size_t bytes) override {
    return ::operator new (bytes, std::align_val_t{kHostArenaAlign}, std::nothrow);
  }
  void Free(void* p, size_t /*bytes*/) override {
    ::operator delete (p, std::align_val_t{kHostArenaAlign});
  }
};

}  // namespace

HostArenaAllocator& DefaultHostArenaAllocator() {
  static AlignedNewAllocator* const allocator = new AlignedNewAllocator();
  return *allocator;
}

absl::StatusOr<std::unique_ptr<HostTier>> HostTier::Create(const HostTierOptions& options) {
  if (options.block_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("host tier block size must be positive, not ", options.block_bytes));
  }
  const uint64_t slots = options.budget_bytes / static_cast<uint64_t>(options.block_bytes);
  if (slots == 0) {
    return absl::ResourceExhaustedError(absl::StrCat("a host tier budget of ", options.budget_bytes,
                                                     " bytes holds no block of ",
                                                     options.block_bytes, " bytes"));
  }
  const int64_t num_slots =
      static_cast<int64_t>(std::min<uint64_t>(slots, std::numeric_limits<int32_t>::max()));
  // num_slots * block_bytes <= budget_bytes, so it fits in 64 bits.
  const size_t bytes = static_cast<size_t>(num_slots) * static_cast<size_t>(options.block_bytes);
  HostArenaAllocator* allocator =
      options.allocator != nullptr ? options.allocator : &DefaultHostArenaAllocator();
  auto* arena = static_cast<uint8_t*>(allocator->Allocate(bytes));
  if (arena == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate a host tier arena of ", bytes, " bytes"));
  }
  MNEMO_CHECK(reinterpret_cast<uintptr_t>(arena) % kHostArenaAlign == 0)
      << "host arena allocator returned memory not aligned to " << kHostArenaAlign;
  return std::unique_ptr<HostTier>(
      new HostTier(options.block_bytes, num_slots, options.budget_bytes, allocator, arena));
}

HostTier::HostTier(int64_t block_bytes, int64_t num_slots, uint64_t budget_bytes,
                   HostArenaAllocator* allocator, uint8_t* arena)
    : block_bytes_(block_bytes),
      num_slots_(num_slots),
      budget_bytes_(budget_bytes),
      allocator_(allocator),
      arena_(arena),
      stored_(static_cast<size_t>(num_slots), false) {
  // back() is handed out first: slot 0, then 1, ...
  free_.reserve(static_cast<size_t>(num_slots));
  for (int64_t s = num_slots - 1; s >= 0; --s) free_.push_back(static_cast<int32_t>(s));
}

HostTier::~HostTier() {
  allocator_->Free(arena_, static_cast<size_t>(num_slots_) * static_cast<size_t>(block_bytes_));
}

void HostTier::CheckStored(HostBlockId id, const char* op) const {
  MNEMO_CHECK(id.value >= 0 && id.value < num_slots_)
      << op << " of host block " << id.value << " outside a tier of " << num_slots_;
  MNEMO_CHECK(stored_[id.value]) << op << " of host block " << id.value << ", which holds nothing";
}

std::optional<HostBlockId> HostTier::Allocate() {
  if (free_.empty()) {
    ++stats_.store_refusals;
    return std::nullopt;
  }
  const int32_t s = free_.back();
  free_.pop_back();
  stored_[s] = true;
  ++stats_.stores;
  return HostBlockId{s};
}

std::optional<HostBlockId> HostTier::Store(std::span<const uint8_t> block) {
  MNEMO_CHECK(static_cast<int64_t>(block.size()) == block_bytes_)
      << "Store of " << block.size() << " bytes into a tier of " << block_bytes_ << "-byte blocks";
  const std::optional<HostBlockId> id = Allocate();
  if (id) std::memcpy(MutableBlockData(*id).data(), block.data(), block.size());
  return id;
}

void HostTier::Load(HostBlockId id, std::span<uint8_t> out) {
  CheckStored(id, "Load");
  MNEMO_CHECK(static_cast<int64_t>(out.size()) == block_bytes_)
      << "Load into " << out.size() << " bytes from a tier of " << block_bytes_ << "-byte blocks";
  std::memcpy(out.data(), arena_ + static_cast<int64_t>(id.value) * block_bytes_, out.size());
  ++stats_.loads;
}

void HostTier::Free(HostBlockId id) {
  CheckStored(id, "Free");
  stored_[id.value] = false;
  free_.push_back(id.value);
  ++stats_.frees;
}

std::span<const uint8_t> HostTier::BlockData(HostBlockId id) const {
  CheckStored(id, "BlockData");
  return {arena_ + static_cast<int64_t>(id.value) * block_bytes_,
          static_cast<size_t>(block_bytes_)};
}

std::span<uint8_t> HostTier::MutableBlockData(HostBlockId id) {
  CheckStored(id, "MutableBlockData");
  return {arena_ + static_cast<int64_t>(id.value) * block_bytes_,
          static_cast<size_t>(block_bytes_)};
}

}  // namespace mnemo::cache
