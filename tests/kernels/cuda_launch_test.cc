// CheckLaunch (kernels/cuda/launch.h): the host-side check every CUDA kernel's launch
// configuration goes through in the CPU tests (no GPU needed).
#include <gtest/gtest.h>

#include "kernels/cuda/launch.h"

namespace mnemo::kernels::cuda {
namespace {

LaunchConfig Config(int64_t grid, int64_t block, int64_t shared = 0) {
  LaunchConfig c;
  c.grid.x = grid;
  c.block.x = block;
  c.shared_bytes = shared;
  return c;
}

TEST(CudaLaunch, AcceptsValidConfigsOnBothArchitectures) {
  for (const ArchLimits& a : {kSm80, kSm90}) {
    EXPECT_EQ(CheckLaunch(Config(1, 32), a), "");
    EXPECT_EQ(CheckLaunch(Config(2147483647, 1024, 48 * 1024), a), "");
  }
  EXPECT_EQ(CheckLaunch(Config(1, 256, 163 * 1024), kSm80, /*optin=*/true), "");
  EXPECT_EQ(CheckLaunch(Config(1, 256, 227 * 1024), kSm90, /*optin=*/true), "");
}

TEST(CudaLaunch, NamesWhatIsWrong) {
  EXPECT_EQ(CheckLaunch(Config(1, 2048), kSm80), "block of 2048 threads exceeds 1024 on sm_80");
  EXPECT_EQ(CheckLaunch(Config(1, 100), kSm90),
            "block of 100 threads is not a whole number of warps");
  EXPECT_EQ(CheckLaunch(Config(0, 32), kSm80), "empty grid");
  EXPECT_EQ(CheckLaunch(Config(1, 0), kSm80), "empty block");
  EXPECT_EQ(CheckLaunch(Config(1, 128, 48 * 1024 + 1), kSm80),
            "dynamic shared memory of 49153 bytes exceeds 49152 on sm_80");
  EXPECT_EQ(CheckLaunch(Config(1, 128, 164 * 1024), kSm80, /*optin=*/true),
            "dynamic shared memory of 167936 bytes exceeds 166912 on sm_80");
  LaunchConfig tall = Config(1, 32);
  tall.grid.y = 65536;
  EXPECT_EQ(CheckLaunch(tall, kSm90), "grid dimension over the limit on sm_90");
  LaunchConfig deep = Config(1, 1);
  deep.block.z = 128;
  EXPECT_EQ(CheckLaunch(deep, kSm90), "block dimension over the limit on sm_90");
}

}  // namespace
}  // namespace mnemo::kernels::cuda
