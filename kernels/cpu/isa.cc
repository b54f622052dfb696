// Run-time selection of the CPU code path (kernels/ops.h: ActiveCpuIsa, SetMaxCpuIsa).
//
// The build targets any x86-64-v2 processor; the AVX2 and AVX-512 kernels are compiled per
// function with __attribute__((target(...))) and chosen here from CPUID (libgcc's
// __builtin_cpu_supports also checks that the OS saves the wider registers).
#include <atomic>

#include "kernels/ops.h"

namespace mnemo::kernels {
namespace {

CpuIsa DetectCpuIsa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  // The AVX-512 path uses F/BW/VL for the float and integer work and VNNI (vpdpbusd) for
  // the 8-bit dot products.
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512vnni");
  if (avx512) return CpuIsa::kAvx512;
  if (avx2) return CpuIsa::kAvx2;
#endif
  return CpuIsa::kScalar;
}

std::atomic<CpuIsa>& MaxIsa() {
  static std::atomic<CpuIsa> max_isa{CpuIsa::kAvx512};
  return max_isa;
}

}  // namespace

CpuIsa ActiveCpuIsa() {
  static const CpuIsa detected = DetectCpuIsa();
  const CpuIsa cap = MaxIsa().load(std::memory_order_relaxed);
  return static_cast<uint8_t>(cap) < static_cast<uint8_t>(detected) ? cap : detected;
}

void SetMaxCpuIsa(CpuIsa isa) { MaxIsa().store(isa, std::memory_order_relaxed); }

const char* CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kScalar:
      return "scalar";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

}  // namespace mnemo::kernels
