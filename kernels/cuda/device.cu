#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "kernels/cuda/device.h"

namespace mnemo::kernels {

int CudaDeviceCount() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    // The runtime leaves the count untouched on error (35 without a usable driver). Clear
    // the thread's last error where it is not sticky, so that it does not surface in an
    // unrelated later cudaGetLastError() (initialization errors are reported again anyway).
    (void)cudaGetLastError();
    return 0;
  }
  return count < 0 ? 0 : count;
}

std::vector<CudaDeviceInfo> ListCudaDevices() {
  std::vector<CudaDeviceInfo> devices;
  const int count = CudaDeviceCount();
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    CudaDeviceInfo info;
    info.index = i;
    info.name = prop.name;
    info.total_memory_bytes = static_cast<uint64_t>(prop.totalGlobalMem);
    info.compute_major = prop.major;
    info.compute_minor = prop.minor;
    info.multiprocessor_count = prop.multiProcessorCount;
    devices.push_back(std::move(info));
  }
  return devices;
}

std::string CudaErrorString(int error) {
  const auto err = static_cast<cudaError_t>(error);
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

}  // namespace mnemo::kernels
