#include "cache/block_table.h"

#include <cstdint>
#include <optional>
#include <utility>

#include "kernels/base/check.h"

namespace mnemo::cache {

BlockTable::BlockTable(BlockTable&& other) noexcept
    : blocks_(std::exchange(other.blocks_, {})),
      n_tokens_(std::exchange(other.n_tokens_, 0)),
      capacity_tokens_(std::exchange(other.capacity_tokens_, 0)) {}

BlockTable& BlockTable::operator=(BlockTable&& other) noexcept {
  if (this != &other) {
    MNEMO_DCHECK(blocks_.empty()) << "a BlockTable holding blocks was overwritten (leak)";
    blocks_ = std::exchange(other.blocks_, {});
    n_tokens_ = std::exchange(other.n_tokens_, 0);
    capacity_tokens_ = std::exchange(other.capacity_tokens_, 0);
  }
  return *this;
}

BlockTable::~BlockTable() {
  MNEMO_DCHECK(blocks_.empty()) << "a BlockTable holding " << blocks_.size()
                                << " blocks was destroyed without Release (leak)";
}

bool BlockTable::Reserve(BlockPool& pool, int64_t n_tokens) {
  MNEMO_CHECK(n_tokens >= 0) << "n_tokens " << n_tokens;
  if (n_tokens <= n_tokens_) return true;
  const int64_t bt = pool.layout().block_tokens;
  const int64_t need = (n_tokens + bt - 1) / bt - static_cast<int64_t>(blocks_.size());
  // Checked up front so that a refusal leaves the pool's free queue exactly as it was.
  if (need > pool.num_free()) return false;
  const size_t old_blocks = blocks_.size();
  for (int64_t i = 0; i < need; ++i) {
    const std::optional<BlockId> id = pool.Allocate();
    if (!id) {  // only if the pool's count and its queue disagree; undo in allocation order
      for (size_t b = old_blocks; b < blocks_.size(); ++b) pool.Free(blocks_[b]);
      blocks_.resize(old_blocks);
      return false;
    }
    blocks_.push_back(*id);
  }
  n_tokens_ = n_tokens;
  capacity_tokens_ = static_cast<int64_t>(blocks_.size()) * bt;
  return true;
}

void BlockTable::Truncate(BlockPool& pool, int64_t n_tokens) {
  MNEMO_CHECK(n_tokens >= 0) << "n_tokens " << n_tokens;
  if (n_tokens >= n_tokens_) return;
  const int64_t bt = pool.layout().block_tokens;
  const size_t keep = static_cast<size_t>((n_tokens + bt - 1) / bt);
  while (blocks_.size() > keep) {
    pool.Free(blocks_.back());
    blocks_.pop_back();
  }
  n_tokens_ = n_tokens;
  capacity_tokens_ = static_cast<int64_t>(blocks_.size()) * bt;
}

// Frees the last block first, so that with the pool's FIFO free queue a sequence's tail
// is reused before its head (the order prefix caching wants: heads are shared more often).
void BlockTable::Release(BlockPool& pool) {
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) pool.Free(*it);
  blocks_.clear();
  n_tokens_ = 0;
  capacity_tokens_ = 0;
}

}  // namespace mnemo::cache
