#include "cache/block_table.h"

#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>

#include "kernels/base/check.h"

namespace mnemo::cache {
namespace {

// A private copy of `src` (all of its bytes), or nullopt when the pool has no slot left.
std::optional<BlockId> CopyBlock(BlockPool& pool, BlockId src) {
  const std::optional<BlockId> copy = pool.Allocate();
  if (copy) pool.CopyBlockData(*copy, src);
  return copy;
}

}  // namespace

BlockTable::BlockTable(BlockTable&& other) noexcept
    : blocks_(std::exchange(other.blocks_, {})),
      n_tokens_(std::exchange(other.n_tokens_, 0)),
      capacity_tokens_(std::exchange(other.capacity_tokens_, 0)),
      block_tokens_(std::exchange(other.block_tokens_, 0)) {}

BlockTable& BlockTable::operator=(BlockTable&& other) noexcept {
  if (this != &other) {
    MNEMO_DCHECK(blocks_.empty()) << "a BlockTable holding blocks was overwritten (leak)";
    blocks_ = std::exchange(other.blocks_, {});
    n_tokens_ = std::exchange(other.n_tokens_, 0);
    capacity_tokens_ = std::exchange(other.capacity_tokens_, 0);
    block_tokens_ = std::exchange(other.block_tokens_, 0);
  }
  return *this;
}

BlockTable::~BlockTable() {
  MNEMO_DCHECK(blocks_.empty()) << "a BlockTable holding " << blocks_.size()
                                << " blocks was destroyed without Release (leak)";
}

int32_t BlockTable::LearnBlockTokens(const BlockPool& pool) {
  const int32_t bt = pool.layout().block_tokens;
  MNEMO_DCHECK(blocks_.empty() || block_tokens_ == bt)
      << "a table of " << block_tokens_ << "-token blocks used with a pool of " << bt
      << "-token blocks (a different pool)";
  block_tokens_ = bt;
  return bt;
}

void BlockTable::SetTokens(int64_t n_tokens) {
  n_tokens_ = n_tokens;
  capacity_tokens_ = static_cast<int64_t>(blocks_.size()) * block_tokens_;
}

bool BlockTable::Reserve(BlockPool& pool, int64_t n_tokens) {
  MNEMO_CHECK(n_tokens >= 0) << "n_tokens " << n_tokens;
  if (n_tokens <= n_tokens_) return true;
  const int64_t bt = LearnBlockTokens(pool);
  const int64_t need = (n_tokens + bt - 1) / bt - static_cast<int64_t>(blocks_.size());
  // Checked up front: a refusal must not touch the pool (no eviction of cached blocks).
  if (need > pool.num_free()) return false;
  for (int64_t i = 0; i < need; ++i) {
    const std::optional<BlockId> id = pool.Allocate();
    MNEMO_CHECK(id.has_value()) << "the pool counted " << pool.num_free()
                                << " allocatable slots but handed out none";
    blocks_.push_back(*id);
  }
  SetTokens(n_tokens);
  return true;
}

void BlockTable::AppendShared(const BlockPool& pool, BlockId id) {
  const int64_t bt = LearnBlockTokens(pool);
  MNEMO_CHECK(n_tokens_ % bt == 0) << "AppendShared after a partly used block: n_tokens "
                                   << n_tokens_ << ", block_tokens " << bt;
  MNEMO_CHECK(pool.IsAllocated(id))
      << "AppendShared of block " << id.value << ", which the caller holds no reference to";
  blocks_.push_back(id);
  SetTokens(n_tokens_ + bt);
}

int64_t BlockTable::Truncate(BlockPool& pool, int64_t n_tokens) {
  MNEMO_CHECK(n_tokens >= 0) << "n_tokens " << n_tokens;
  if (n_tokens >= n_tokens_) return n_tokens_;
  const int64_t bt = LearnBlockTokens(pool);
  const size_t keep = static_cast<size_t>((n_tokens + bt - 1) / bt);
  while (blocks_.size() > keep) {
    pool.Release(blocks_.back());
    blocks_.pop_back();
  }
  // The kept last block is partly used and will be written again: it must be private.
  if (n_tokens % bt != 0) {
    const BlockId last = blocks_.back();
    if (pool.refcount(last) > 1 || pool.is_published(last)) {
      const std::optional<BlockId> copy = CopyBlock(pool, last);
      pool.Release(last);
      if (copy) {
        blocks_.back() = *copy;
      } else {  // no slot for the copy: keep the whole blocks before it
        blocks_.pop_back();
        n_tokens = n_tokens / bt * bt;
      }
    }
  }
  SetTokens(n_tokens);
  if (blocks_.empty()) block_tokens_ = 0;
  return n_tokens_;
}

std::optional<BlockTable> BlockTable::Fork(BlockPool& pool) const {
  const int32_t bt = pool.layout().block_tokens;
  MNEMO_DCHECK(blocks_.empty() || block_tokens_ == bt) << "Fork with a different pool";
  BlockTable out;
  if (blocks_.empty()) return out;
  const bool partial = n_tokens_ % bt != 0;
  std::optional<BlockId> copy;
  if (partial) {
    copy = CopyBlock(pool, blocks_.back());
    if (!copy) return std::nullopt;
  }
  const size_t n_shared = blocks_.size() - (partial ? 1 : 0);
  out.blocks_.reserve(blocks_.size());
  for (size_t i = 0; i < n_shared; ++i) {
    pool.Retain(blocks_[i]);
    out.blocks_.push_back(blocks_[i]);
  }
  if (copy) out.blocks_.push_back(*copy);
  out.block_tokens_ = bt;
  out.SetTokens(n_tokens_);
  return out;
}

void BlockTable::ReplaceBlock(BlockPool& pool, size_t index, BlockId id) {
  const int64_t bt = LearnBlockTokens(pool);
  MNEMO_CHECK(index < blocks_.size())
      << "ReplaceBlock of block " << index << " of a table of " << blocks_.size();
  MNEMO_CHECK(static_cast<int64_t>(index + 1) * bt <= n_tokens_)
      << "ReplaceBlock of block " << index << ", which is partly used (n_tokens " << n_tokens_
      << ")";
  MNEMO_CHECK(pool.IsAllocated(id))
      << "ReplaceBlock with block " << id.value << ", which the caller holds no reference to";
  const BlockId old = std::exchange(blocks_[index], id);
  pool.Release(old);
}

// Releases the last block first: with the pool's FIFO free list and LRU cached list, a
// sequence's tail is then reused before its head (heads are shared more often).
void BlockTable::Release(BlockPool& pool) {
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) pool.Release(*it);
  blocks_.clear();
  n_tokens_ = 0;
  capacity_tokens_ = 0;
  block_tokens_ = 0;
}

}  // namespace mnemo::cache
