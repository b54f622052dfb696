// The llama-family forward pass on a CUDA device (docs/cuda.md "Forward pass"): the same
// sequence of ops as LlamaForward (engine/forward/llama_forward.h), run by the kernels of
// kernels/cuda/ on one compute stream, with the weights uploaded once as 16-bit matrices and
// the KV arena in device memory (kv_memory()). Plain C++ header: no CUDA includes, so every
// build compiles it; the implementation exists only in builds with MNEMO_HAVE_CUDA.
//
// Thread-safety: like LlamaForward, Forward() is not reentrant (device scratch is reused
// across steps); call it from one thread.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/forward/forward.h"
#include "engine/model/model.h"

namespace mnemo::engine {

// The CUDA forward pass of `model` (which must outlive it) on device opts.device.index
// (the caller checked that it exists). Errors, never an abort:
//   InvalidArgument  a weight dtype the device path cannot convert (naming the tensor);
//   ResourceExhausted  the device budget (opts.device_budget_bytes, or the free memory when
//     0) cannot hold the weights and the scratch reserve (naming the sizes), or an
//     allocation failed;
//   Internal  any other CUDA or cuBLAS failure, with its error string.
// Only builds with MNEMO_HAVE_CUDA define it.
absl::StatusOr<std::unique_ptr<ForwardPass>> CreateCudaForward(const Model& model,
                                                               const ForwardOptions& opts);

}  // namespace mnemo::engine
