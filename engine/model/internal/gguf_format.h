// Constants and small helpers shared by the GGUF reader (gguf.cc) and builder
// (gguf_builder.cc). Internal to engine/model.
#pragma once

#include <bit>
#include <cstdint>
#include <optional>

#include "engine/model/gguf.h"

namespace mnemo::engine::gguf_internal {

static_assert(std::endian::native == std::endian::little,
              "the GGUF reader and writer assume a little-endian host");

inline constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
inline constexpr uint32_t kWriteVersion = 3;
inline constexpr uint64_t kDefaultAlignment = 32;
inline constexpr const char* kAlignmentKey = "general.alignment";
inline constexpr uint32_t kMaxDims = 4;
inline constexpr int kMaxArrayDepth = 8;  // arrays of arrays, at most this many levels
inline constexpr uint32_t kNumValueTypes = 13;

// Size in bytes of a fixed-size value type, 0 for kString and kArray.
inline uint64_t FixedSize(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
      return 8;
    case GgufType::kString:
    case GgufType::kArray:
      return 0;
  }
  return 0;
}

// The fewest bytes one encoded value of type `t` can take (used to reject counts that cannot
// fit in the rest of the file before anything is allocated).
inline uint64_t MinEncodedSize(GgufType t) {
  if (t == GgufType::kString) return 8;     // u64 length
  if (t == GgufType::kArray) return 4 + 8;  // u32 element type + u64 count
  return FixedSize(t);
}

inline bool IsUnsignedType(GgufType t) {
  return t == GgufType::kUint8 || t == GgufType::kUint16 || t == GgufType::kUint32 ||
         t == GgufType::kUint64;
}
inline bool IsSignedType(GgufType t) {
  return t == GgufType::kInt8 || t == GgufType::kInt16 || t == GgufType::kInt32 ||
         t == GgufType::kInt64;
}

inline bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// `v` rounded up to a multiple of `align` (a power of two); nullopt on overflow.
inline std::optional<uint64_t> AlignUp(uint64_t v, uint64_t align) {
  const uint64_t mask = align - 1;
  if (v > UINT64_MAX - mask) return std::nullopt;
  return (v + mask) & ~mask;
}

}  // namespace mnemo::engine::gguf_internal
