// Launch configurations of the CUDA kernels, computed and checked on the host. Plain C++
// (header-only, no CUDA headers): the CPU test binary checks every kernel's configuration
// against the limits of the architectures CI compiles for, without a GPU.
//
// Each kernel family has a `<Kernel>Launch(...)` function (in its own plain header next to
// the .cu file) that returns the grid, block and dynamic shared memory it will launch with;
// the .cu launcher uses exactly that function, so what the tests check is what runs.
#pragma once

#include <cstdint>
#include <string>

namespace mnemo::kernels::cuda {

struct Dim3 {
  int64_t x = 1, y = 1, z = 1;
};

struct LaunchConfig {
  Dim3 grid;
  Dim3 block;
  int64_t shared_bytes = 0;  // dynamic shared memory per block
};

// The limits of one compute capability that a launch must respect (CUDA C Programming
// Guide, "Technical Specifications per Compute Capability").
struct ArchLimits {
  const char* name = "";
  int64_t max_threads_per_block = 1024;
  int64_t max_block_x = 1024, max_block_y = 1024, max_block_z = 64;
  int64_t max_grid_x = 2147483647, max_grid_y = 65535, max_grid_z = 65535;
  // Dynamic shared memory one block may use after opting in with
  // cudaFuncAttributeMaxDynamicSharedMemorySize (48 KiB without opting in).
  int64_t max_shared_optin_bytes = 0;
  int64_t max_shared_default_bytes = 48 * 1024;
  int warp_size = 32;
};

inline constexpr ArchLimits kSm80{.name = "sm_80", .max_shared_optin_bytes = 163 * 1024};
inline constexpr ArchLimits kSm90{.name = "sm_90", .max_shared_optin_bytes = 227 * 1024};

// An empty string when `c` is valid on `a`, else what is wrong (e.g. "block of 2048 threads
// exceeds 1024 on sm_80"). Also requires a whole number of warps per block and non-empty
// grids. `optin`: whether the launcher raises the kernel's shared-memory limit.
inline std::string CheckLaunch(const LaunchConfig& c, const ArchLimits& a, bool optin = false) {
  const auto str = [](int64_t v) { return std::to_string(v); };
  const int64_t threads = c.block.x * c.block.y * c.block.z;
  if (c.block.x < 1 || c.block.y < 1 || c.block.z < 1) return "empty block";
  if (c.grid.x < 1 || c.grid.y < 1 || c.grid.z < 1) return "empty grid";
  if (threads > a.max_threads_per_block) {
    return "block of " + str(threads) + " threads exceeds " + str(a.max_threads_per_block) +
           " on " + a.name;
  }
  if (threads % a.warp_size != 0) {
    return "block of " + str(threads) + " threads is not a whole number of warps";
  }
  if (c.block.x > a.max_block_x || c.block.y > a.max_block_y || c.block.z > a.max_block_z) {
    return std::string("block dimension over the limit on ") + a.name;
  }
  if (c.grid.x > a.max_grid_x || c.grid.y > a.max_grid_y || c.grid.z > a.max_grid_z) {
    return std::string("grid dimension over the limit on ") + a.name;
  }
  const int64_t shared_max = optin ? a.max_shared_optin_bytes : a.max_shared_default_bytes;
  if (c.shared_bytes < 0 || c.shared_bytes > shared_max) {
    return "dynamic shared memory of " + str(c.shared_bytes) + " bytes exceeds " + str(shared_max) +
           " on " + a.name;
  }
  return "";
}

inline constexpr int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace mnemo::kernels::cuda
