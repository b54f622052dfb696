// Little-endian integer fields of the state files' fixed headers (docs/state-format.md).
// Internal to cache/.
#pragma once

#include <cstdint>

namespace mnemo::cache::state_internal {

inline void PutLe32(void* dst, uint32_t v) {
  auto* p = static_cast<uint8_t*>(dst);
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void PutLe64(void* dst, uint64_t v) {
  auto* p = static_cast<uint8_t*>(dst);
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint32_t GetLe32(const void* src) {
  const auto* p = static_cast<const uint8_t*>(src);
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{p[i]} << (8 * i);
  return v;
}
inline uint64_t GetLe64(const void* src) {
  const auto* p = static_cast<const uint8_t*>(src);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

}  // namespace mnemo::cache::state_internal
