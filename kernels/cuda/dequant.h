// Weight dequantization on a CUDA device. Plain C++ header: no CUDA or Abseil includes, so
// host code and nvcc both compile it cheaply.
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace mnemo::kernels {

// Enqueues on `stream` (a cudaStream_t; nullptr for the legacy default stream) the
// dequantization of the n elements of type t at device address d_src into the n floats at
// device address d_dst, bit-identical to DequantizeRowRef (kernels/dequant.h): both use
// kernels/dequant_math.h.
//
// Returns 0 (cudaSuccess) once the work is enqueued, or the cudaError_t value:
// cudaErrorInvalidValue (1) when t is not a weight dtype (CanDequantize), n is negative or
// not a multiple of t's block size, a pointer is null while n > 0, or d_src is not 2-byte
// (4-byte for f32) or d_dst not 4-byte aligned; otherwise the launch error. n == 0 enqueues
// nothing. Errors of the kernel's execution surface on the stream's next synchronization.
// The buffers must not overlap and must stay valid until the work completes. Thread-safe.
int CudaDequantize(DType t, const void* d_src, float* d_dst, int64_t n, void* stream);

}  // namespace mnemo::kernels
