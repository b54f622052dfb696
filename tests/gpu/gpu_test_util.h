// What every GPU test file needs: skipping without a device, and asserting on the
// cudaError_t values the launchers return, with the runtime's name for them.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "kernels/cuda/device.h"

// Skips the test (with the reason) when no CUDA device is usable.
#define REQUIRE_CUDA_DEVICE()                                                             \
  do {                                                                                    \
    if (::mnemo::kernels::CudaDeviceCount() == 0) {                                       \
      GTEST_SKIP() << "no CUDA device: cudaGetDeviceCount found none (no GPU or driver)"; \
    }                                                                                     \
  } while (0)

// Asserts that a cudaError_t (or a launcher's int result) is cudaSuccess.
#define ASSERT_CUDA_OK(expr)                                                 \
  do {                                                                       \
    const int mnemo_err = static_cast<int>(expr);                            \
    ASSERT_EQ(mnemo_err, 0) << ::mnemo::kernels::CudaErrorString(mnemo_err); \
  } while (0)

namespace mnemo::kernels {

// What launchers return for bad arguments.
inline constexpr int kInvalid = static_cast<int>(cudaErrorInvalidValue);

}  // namespace mnemo::kernels
