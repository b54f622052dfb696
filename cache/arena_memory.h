// Where a BlockPool's arena lives (DESIGN.md 3, 4): host RAM for the CPU backend, device
// memory for the CUDA backend (which supplies its own ArenaMemory). cache/ never calls CUDA;
// code that touches block bytes either checks host_accessible() or goes through Copy().
#pragma once

#include <cstddef>

namespace mnemo::cache {

class ArenaMemory {
 public:
  virtual ~ArenaMemory() = default;

  // `bytes` of arena memory aligned to at least 64 bytes, or nullptr when they cannot be had.
  virtual void* Allocate(size_t bytes) = 0;
  // Frees what Allocate returned (nullptr: nothing).
  virtual void Free(void* p) = 0;
  // Copies n bytes between any two of arena memory and host memory; complete on return.
  virtual void Copy(void* dst, const void* src, size_t n) = 0;
  // Whether the CPU may read and write arena memory through plain pointers.
  virtual bool host_accessible() const = 0;
};

// Host RAM (aligned operator new, memcpy): the default. One process-wide instance.
ArenaMemory& HostArenaMemory();

}  // namespace mnemo::cache
