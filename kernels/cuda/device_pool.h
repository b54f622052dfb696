// DevicePool: the one device allocation of a model (its size from kernels/cuda/memory_plan.h),
// handed out by bump sub-allocation to the weights, the KV arena and scratch. Plain C++
// header: no CUDA includes.
//
//   base                                                          base + capacity
//   | weight 0 |pad| weight 1 |pad| ... | scratch |pad| KV arena |      free      |
//   each sub-allocation starts at a multiple of kPoolAlignment (256) from base
//
// Nothing is freed individually: everything lives as long as the model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kernels/cuda/memory_plan.h"  // kPoolAlignment, AlignUp

namespace mnemo::kernels::cuda {

// The bump arithmetic of DevicePool over any address range, so that it is tested without a
// device. Not thread-safe.
class BumpAllocator {
 public:
  BumpAllocator() = default;
  // `base` must be kPoolAlignment-aligned (cudaMalloc's pointers are).
  BumpAllocator(uintptr_t base, uint64_t capacity) : base_(base), capacity_(capacity) {}

  // On success *offset is the byte offset of `bytes` fresh bytes, a multiple of
  // kPoolAlignment, and the call returns true. False (and nothing changes) when bytes is 0
  // or the rest of the range cannot hold it.
  bool Allocate(uint64_t bytes, uint64_t* offset) {
    const uint64_t start = AlignUp(used_);
    if (bytes == 0 || start > capacity_ || bytes > capacity_ - start) return false;
    *offset = start;
    used_ = start + bytes;
    return true;
  }

  uintptr_t base() const { return base_; }
  uint64_t capacity() const { return capacity_; }
  uint64_t used() const { return used_; }  // including padding before the last allocation
  uint64_t remaining() const { return capacity_ - used_; }

 private:
  uintptr_t base_ = 0;
  uint64_t capacity_ = 0;
  uint64_t used_ = 0;
};

// Owns one cudaMalloc of the planned size. Not thread-safe (the engine thread allocates at
// load time).
class DevicePool {
 public:
  // A pool of `bytes` (> 0) on the current device, or nullptr with *error naming the CUDA
  // error and the size (e.g. "cudaMalloc of 71.23 GiB failed: cudaErrorMemoryAllocation").
  static std::unique_ptr<DevicePool> Create(uint64_t bytes, std::string* error);
  ~DevicePool();  // cudaFree; the caller must have finished all work using the pool
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;

  // *out = a device pointer to `bytes` fresh bytes, 256-aligned. Returns 0 (cudaSuccess),
  // cudaErrorInvalidValue when out is null or bytes is 0, cudaErrorMemoryAllocation when the
  // pool has no room left (*out = nullptr and the pool is unchanged).
  int Allocate(uint64_t bytes, void** out);

  void* base() const { return base_; }
  uint64_t capacity() const { return bump_.capacity(); }
  uint64_t used() const { return bump_.used(); }
  uint64_t remaining() const { return bump_.remaining(); }

 private:
  DevicePool() = default;

  void* base_ = nullptr;
  BumpAllocator bump_;
};

}  // namespace mnemo::kernels::cuda
