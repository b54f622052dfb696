// Element types of weights and activations, and the block-quantized formats.
//
// A quantized type stores `block_elems` consecutive elements of a row in one block of
// `block_bytes` bytes; a row's element count must be a multiple of block_elems. The
// block layouts themselves are in kernels/quant_blocks.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace mnemo::kernels {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kQ8_0,
  kQ4_0,
  kQ4_1,
  kQ4_K,
  kQ5_K,
  kQ6_K,
  kI8,
  kI16,
  kI32,
  kI64,
  kF64,
};

inline constexpr int kNumDTypes = 14;

struct DTypeInfo {
  std::string_view name;  // "f32", "q4_k", ... (lower case, as users type them)
  int block_elems;        // elements per block (1 for plain types)
  int block_bytes;        // bytes per block
  bool quantized;
};

// Facts about `t`. Total over the enum.
const DTypeInfo& GetDTypeInfo(DType t);

inline std::string_view DTypeName(DType t) { return GetDTypeInfo(t).name; }

// Parses a name produced by DTypeName (case-insensitive). nullopt if unknown.
std::optional<DType> DTypeFromName(std::string_view name);

// Bytes that `n_elems` elements of type `t` occupy, or nullopt if n_elems is negative,
// not a multiple of the block size, or the result overflows uint64.
std::optional<uint64_t> DTypeBytes(DType t, int64_t n_elems);

}  // namespace mnemo::kernels
