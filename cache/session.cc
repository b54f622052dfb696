#include "cache/session.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/base/check.h"

namespace mnemo::cache {
namespace {

constexpr std::string_view kSessionPrefix = "sess_";
constexpr char kHexDigits[] = "0123456789abcdef";

// The value of lowercase hex digit `c`, or -1.
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Creation time, then id bytes: a total order, so listings are deterministic.
void SortByCreation(std::vector<SessionState*>& sessions) {
  std::sort(sessions.begin(), sessions.end(), [](const SessionState* a, const SessionState* b) {
    return std::tie(a->created, a->id.bytes) < std::tie(b->created, b->id.bytes);
  });
}

}  // namespace

SessionId SessionId::Random() {
  std::random_device rd;
  SessionId id;
  for (size_t i = 0; i < id.bytes.size(); i += 4) {
    const uint32_t r = rd();
    for (size_t j = 0; j < 4; ++j) id.bytes[i + j] = static_cast<uint8_t>(r >> (8 * j));
  }
  return id;
}

std::optional<SessionId> SessionId::Parse(std::string_view text) {
  if (text.size() != kSessionPrefix.size() + 32 || !text.starts_with(kSessionPrefix)) {
    return std::nullopt;
  }
  text.remove_prefix(kSessionPrefix.size());
  SessionId id;
  for (size_t i = 0; i < id.bytes.size(); ++i) {
    const int hi = HexValue(text[2 * i]);
    const int lo = HexValue(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    id.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return id;
}

std::string SessionId::ToString() const {
  std::string s(kSessionPrefix);
  for (uint8_t b : bytes) {
    s.push_back(kHexDigits[b >> 4]);
    s.push_back(kHexDigits[b & 0xf]);
  }
  return s;
}

void KvSequence::Truncate(BlockPool& pool, int64_t n_tokens) {
  MNEMO_CHECK(n_tokens >= 0) << "n_tokens " << n_tokens;
  if (static_cast<int64_t>(tokens.size()) > n_tokens) tokens.resize(static_cast<size_t>(n_tokens));
  const int64_t kept = table.Truncate(pool, n_tokens);
  const size_t full_blocks = static_cast<size_t>(kept / pool.layout().block_tokens);
  if (chain.size() > full_blocks) chain.resize(full_blocks);
}

void KvSequence::ReleaseKv(BlockPool& pool) {
  table.Release(pool);
  chain.clear();
}

int64_t SessionState::kv_bytes(const BlockPool& pool) const {
  return static_cast<int64_t>(kv.table.blocks().size()) * pool.block_bytes();
}

absl::Status SessionState::CheckInvariants(const BlockPool& pool) const {
  const auto broken = [this](auto&&... parts) {
    return absl::InternalError(absl::StrCat("session ", id.ToString(), ": ", parts...));
  };
  const int64_t n_history = static_cast<int64_t>(kv.tokens.size());
  const int64_t n_messages = static_cast<int64_t>(messages.size());
  if (!turns.empty() && turns[0].token_start != 0) {
    return broken("turn 0 starts at token ", turns[0].token_start, ", not 0");
  }
  for (size_t t = 0; t < turns.size(); ++t) {
    const SessionTurn& turn = turns[t];
    if (turn.token_start < 0 || turn.token_start > n_history) {
      return broken("turn ", t, " starts at token ", turn.token_start, ", outside the history of ",
                    n_history, " tokens");
    }
    if (turn.message_start < 0 || turn.message_start > n_messages) {
      return broken("turn ", t, " starts at message ", turn.message_start, " of ", n_messages);
    }
    if (t > 0 && (turn.token_start < turns[t - 1].token_start ||
                  turn.message_start < turns[t - 1].message_start)) {
      return broken("turn ", t, " (token ", turn.token_start, ", message ", turn.message_start,
                    ") starts before turn ", t - 1, " (token ", turns[t - 1].token_start,
                    ", message ", turns[t - 1].message_start, ")");
    }
  }

  const BlockTable& table = kv.table;
  const int64_t bt = pool.layout().block_tokens;
  const int64_t n_kv = table.n_tokens();
  if (n_kv > n_history) {
    return broken("KV of ", n_kv, " tokens is longer than the history of ", n_history);
  }
  const std::span<const BlockId> blocks = table.blocks();
  const int64_t want_blocks = (n_kv + bt - 1) / bt;
  if (static_cast<int64_t>(blocks.size()) != want_blocks) {
    return broken("table holds ", blocks.size(), " blocks for ", n_kv, " KV tokens (", want_blocks,
                  " needed)");
  }
  if (static_cast<int64_t>(kv.chain.size()) > n_kv / bt) {
    return broken("chain of ", kv.chain.size(), " hashes is longer than the ", n_kv / bt,
                  " full blocks");
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (!pool.IsAllocated(blocks[i])) {
      return broken("block ", i, " (slot ", blocks[i].value, ") is not in use");
    }
    if (i < kv.chain.size() && pool.is_published(blocks[i]) &&
        pool.hash(blocks[i]) != kv.chain[i]) {
      return broken("block ", i, " (slot ", blocks[i].value, ") is published as ",
                    pool.hash(blocks[i]).ToString(), " but its chain entry is ",
                    kv.chain[i].ToString());
    }
  }
  if (n_kv % bt != 0) {
    const BlockId last = blocks.back();
    if (pool.refcount(last) != 1 || pool.is_published(last)) {
      return broken("partly used last block (slot ", last.value, ") is not private: refcount ",
                    pool.refcount(last), pool.is_published(last) ? ", published" : "");
    }
  }
  return absl::OkStatus();
}

SessionState* SessionStore::Insert(std::unique_ptr<SessionState> session) {
  MNEMO_CHECK(session != nullptr) << "inserting a null session";
  const SessionId id = session->id;
  auto [it, inserted] = sessions_.try_emplace(id, std::move(session));
  MNEMO_CHECK(inserted) << "session " << id.ToString() << " inserted twice";
  return it->second.get();
}

SessionState* SessionStore::Find(std::string_view tenant, const SessionId& id) {
  const auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second->tenant != tenant) return nullptr;
  return it->second.get();
}

std::unique_ptr<SessionState> SessionStore::Remove(const SessionId& id) {
  const auto it = sessions_.find(id);
  if (it == sessions_.end()) return nullptr;
  std::unique_ptr<SessionState> session = std::move(it->second);
  sessions_.erase(it);
  return session;
}

std::vector<SessionState*> SessionStore::List(std::string_view tenant) {
  std::vector<SessionState*> out;
  for (auto& [id, session] : sessions_) {
    if (session->tenant == tenant) out.push_back(session.get());
  }
  SortByCreation(out);
  return out;
}

std::vector<SessionState*> SessionStore::All() {
  std::vector<SessionState*> out;
  out.reserve(sessions_.size());
  for (auto& [id, session] : sessions_) out.push_back(session.get());
  SortByCreation(out);
  return out;
}

absl::Status CheckRefcounts(const BlockPool& pool, std::span<const BlockTable* const> tables) {
  std::vector<int32_t> held(static_cast<size_t>(pool.num_total()), 0);
  for (size_t t = 0; t < tables.size(); ++t) {
    MNEMO_CHECK(tables[t] != nullptr) << "table " << t << " is null";
    for (BlockId id : tables[t]->blocks()) {
      if (id.value < 0 || id.value >= pool.num_total()) {
        return absl::InternalError(absl::StrCat("table ", t, " holds block ", id.value,
                                                ", outside a pool of ", pool.num_total()));
      }
      ++held[static_cast<size_t>(id.value)];
    }
  }
  for (int32_t s = 0; s < static_cast<int32_t>(held.size()); ++s) {
    const int32_t rc = pool.refcount(BlockId{s});
    if (rc != held[static_cast<size_t>(s)]) {
      return absl::InternalError(absl::StrCat("block ", s, " has refcount ", rc, " but ",
                                              held[static_cast<size_t>(s)], " table(s) hold it"));
    }
  }
  return absl::OkStatus();
}

}  // namespace mnemo::cache
