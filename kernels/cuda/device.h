// The CUDA devices of this machine. Plain C++ header (no CUDA includes); used by
// `mnemo inspect --devices` and by the GPU tests to skip when there is no device.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mnemo::kernels {

struct CudaDeviceInfo {
  int index = 0;                    // the CUDA device ordinal
  std::string name;                 // e.g. "NVIDIA H100 80GB HBM3"
  uint64_t total_memory_bytes = 0;  // global memory
  int compute_major = 0;            // compute capability, e.g. 9.0 for sm_90
  int compute_minor = 0;
  int multiprocessor_count = 0;
};

// The number of usable CUDA devices. Any error of the runtime (no driver, a driver older
// than the runtime: error 35, no device: error 100, ...) counts as zero devices. Never fails.
int CudaDeviceCount();

// One entry per device, in ordinal order; empty when CudaDeviceCount() is 0. A device whose
// properties cannot be read is left out.
std::vector<CudaDeviceInfo> ListCudaDevices();

// The runtime's name and description of a cudaError_t value returned by the launchers
// (e.g. "cudaErrorInvalidValue: invalid argument"), for error messages.
std::string CudaErrorString(int error);

}  // namespace mnemo::kernels
