// Test helpers for the dense ops (kernels/ops.h): the CPU paths to force in turn, random
// inputs, and NaN-poisoned output buffers with guard elements.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/ops.h"

namespace mnemo::testing {

// The code paths this processor can run, scalar first.
inline std::vector<kernels::CpuIsa> SupportedIsas() {
  using kernels::CpuIsa;
  kernels::SetMaxCpuIsa(CpuIsa::kAvx512);
  const CpuIsa best = kernels::ActiveCpuIsa();
  std::vector<CpuIsa> out;
  for (CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (static_cast<int>(isa) <= static_cast<int>(best)) out.push_back(isa);
  }
  return out;
}

// Caps the dispatch for the lifetime of the guard.
class ScopedMaxIsa {
 public:
  explicit ScopedMaxIsa(kernels::CpuIsa isa) { kernels::SetMaxCpuIsa(isa); }
  ~ScopedMaxIsa() { kernels::SetMaxCpuIsa(kernels::CpuIsa::kAvx512); }
  ScopedMaxIsa(const ScopedMaxIsa&) = delete;
  ScopedMaxIsa& operator=(const ScopedMaxIsa&) = delete;
};

// A NaN with a payload no computation produces: a guard element still holding these bits
// was never written.
inline float PoisonNaN() {
  const uint32_t bits = 0x7fa5a5a5u;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline bool IsPoison(float f) { return FloatBits(f) == FloatBits(PoisonNaN()); }

// rows x ld floats, all poison.
inline std::vector<float> PoisonedMatrix(int64_t rows, int64_t ld) {
  return std::vector<float>(static_cast<size_t>(rows * ld), PoisonNaN());
}

// rows x ld floats: the first cols of each row random non-zero (normal * scale, never
// exactly zero), the rest poison.
inline std::vector<float> RandomMatrix(int64_t rows, int64_t cols, int64_t ld, std::mt19937& rng,
                                       float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> m = PoisonedMatrix(rows, ld);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      float v = normal(rng);
      if (v == 0.0f) v = scale;
      m[static_cast<size_t>(r * ld + c)] = v;
    }
  }
  return m;
}

// The number of guard elements (c >= cols) of a rows x ld matrix that lost their poison.
inline int64_t TouchedGuards(const std::vector<float>& m, int64_t rows, int64_t cols, int64_t ld) {
  int64_t touched = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = cols; c < ld; ++c) touched += !IsPoison(m[static_cast<size_t>(r * ld + c)]);
  }
  return touched;
}

inline std::string IsaName(kernels::CpuIsa isa) { return kernels::CpuIsaName(isa); }

}  // namespace mnemo::testing
