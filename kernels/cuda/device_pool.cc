#include "kernels/cuda/device_pool.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>

namespace mnemo::kernels::cuda {

std::unique_ptr<DevicePool> DevicePool::Create(uint64_t bytes, std::string* error) {
  std::string ignored;
  if (error == nullptr) error = &ignored;
  if (bytes == 0) {
    *error = "DevicePool: a pool of 0 bytes";
    return nullptr;
  }
  void* base = nullptr;
  const cudaError_t e = cudaMalloc(&base, static_cast<size_t>(bytes));
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // an allocation failure is not sticky: clear it
    *error = "cudaMalloc of " + FormatGib(bytes) + " (" + std::to_string(bytes) +
             " bytes) failed: " + cudaGetErrorName(e);
    return nullptr;
  }
  std::unique_ptr<DevicePool> pool(new DevicePool());
  pool->base_ = base;
  pool->bump_ = BumpAllocator(reinterpret_cast<uintptr_t>(base), bytes);
  return pool;
}

DevicePool::~DevicePool() {
  if (base_ != nullptr) (void)cudaFree(base_);
}

int DevicePool::Allocate(uint64_t bytes, void** out) {
  if (out == nullptr || bytes == 0) return cudaErrorInvalidValue;
  uint64_t offset = 0;
  if (!bump_.Allocate(bytes, &offset)) {
    *out = nullptr;
    return cudaErrorMemoryAllocation;
  }
  *out = static_cast<uint8_t*>(base_) + offset;
  return cudaSuccess;
}

}  // namespace mnemo::kernels::cuda
