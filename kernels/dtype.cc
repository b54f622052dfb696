#include "kernels/dtype.h"

#include <array>
#include <cctype>
#include <limits>

namespace mnemo::kernels {
namespace {

// Indexed by DType. Block sizes of the quantized formats: see kernels/quant_blocks.h.
constexpr std::array<DTypeInfo, kNumDTypes> kInfo = {{
    {"f32", 1, 4, false},
    {"f16", 1, 2, false},
    {"bf16", 1, 2, false},
    {"q8_0", 32, 34, true},
    {"q4_0", 32, 18, true},
    {"q4_1", 32, 20, true},
    {"q4_k", 256, 144, true},
    {"q5_k", 256, 176, true},
    {"q6_k", 256, 210, true},
    {"i8", 1, 1, false},
    {"i16", 1, 2, false},
    {"i32", 1, 4, false},
    {"i64", 1, 8, false},
    {"f64", 1, 8, false},
}};

}  // namespace

const DTypeInfo& GetDTypeInfo(DType t) { return kInfo[static_cast<size_t>(t)]; }

std::optional<DType> DTypeFromName(std::string_view name) {
  for (size_t i = 0; i < kInfo.size(); ++i) {
    std::string_view n = kInfo[i].name;
    if (n.size() != name.size()) continue;
    bool eq = true;
    for (size_t j = 0; j < n.size(); ++j) {
      if (std::tolower(static_cast<unsigned char>(name[j])) != n[j]) {
        eq = false;
        break;
      }
    }
    if (eq) return static_cast<DType>(i);
  }
  return std::nullopt;
}

std::optional<uint64_t> DTypeBytes(DType t, int64_t n_elems) {
  const DTypeInfo& info = GetDTypeInfo(t);
  if (n_elems < 0 || n_elems % info.block_elems != 0) return std::nullopt;
  const uint64_t blocks = static_cast<uint64_t>(n_elems / info.block_elems);
  if (blocks > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(info.block_bytes)) {
    return std::nullopt;
  }
  return blocks * static_cast<uint64_t>(info.block_bytes);
}

}  // namespace mnemo::kernels
