// MNEMO_HD marks a function callable from both host and device code.
//
// Per-element math that the CPU reference and the CUDA kernels share (dequantization,
// half-precision conversion, ...) is written once as MNEMO_HD inline functions in plain
// headers. Under nvcc (__CUDACC__) it expands to `__host__ __device__ inline`; for the C++
// compiler it is a plain `inline`, so these headers compile without any CUDA header.
#pragma once

#if defined(__CUDACC__)
#define MNEMO_HD __host__ __device__ inline
#else
#define MNEMO_HD inline
#endif
