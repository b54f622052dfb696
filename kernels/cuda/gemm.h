// Matrix products on a CUDA device through cuBLAS: the kernels/ops.h MatMul contract with
// 16-bit weights (bf16 or f16, as kernels/cuda/convert.h uploads them) and f32 activations.
// Plain C++ header: no CUDA, cuBLAS or Abseil includes.
//
// Numerics: x is rounded to the weight's 16-bit type (round to nearest even), every product
// of two 16-bit values is exact in f32, and cuBLAS accumulates in f32 (CUBLAS_COMPUTE_32F)
// on tensor cores; the bias is added in f32 afterwards. tests/gpu/gemm_gpu_test.cc states
// the tolerance against MatMulRef on the rounded inputs.
//
// Determinism: cuBLAS gives the same bits run to run for the same shape on the same GPU
// model (with the fixed workspace set here), but it picks its algorithm (tile sizes,
// split-K) by shape, so a row's outputs may differ in the last bits when the number of rows
// in the call changes: unlike the CPU MatMul, this path is NOT batch invariant.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kernels/dtype.h"

namespace mnemo::kernels {

// A weight matrix on the device, row-major [rows = n = out features][cols = k = in
// features], packed (row r at data + r * cols), in its 16-bit device dtype. Non-owning.
struct CudaWeight {
  const uint16_t* data = nullptr;  // device address, 2-byte aligned (256 from DevicePool)
  DType dtype = DType::kBF16;      // kBF16 or kF16
  int64_t rows = 0;
  int64_t cols = 0;
};

struct CudaGemmOptions {
  void* stream = nullptr;  // the cudaStream_t every call is enqueued on; nullptr: legacy
  // cuBLAS's workspace (its kernels never allocate during a call). NVIDIA recommends
  // 32 MiB on Hopper and 4 MiB before it; more does not help.
  int64_t workspace_bytes = int64_t{32} << 20;
  // A caller-owned device workspace of workspace_bytes (e.g. from DevicePool), or nullptr:
  // Create allocates one and the destructor frees it.
  void* workspace = nullptr;
};

// One cuBLAS handle bound to one stream. Not thread-safe: one thread (the engine's) uses an
// instance; distinct instances may be used concurrently.
class CudaGemm {
 public:
  // A ready instance, or nullptr with *error saying why (no device or driver: cublasCreate
  // fails with CUBLAS_STATUS_NOT_INITIALIZED; workspace allocation failure; bad options).
  // Never throws or aborts.
  static std::unique_ptr<CudaGemm> Create(const CudaGemmOptions& options, std::string* error);
  ~CudaGemm();
  CudaGemm(const CudaGemm&) = delete;
  CudaGemm& operator=(const CudaGemm&) = delete;

  // The scratch MatMul needs for `rows` activation rows of k elements (their 16-bit copy),
  // rounded up to 256 bytes. 0 when rows or k is 0.
  static int64_t MatMulScratchBytes(int64_t rows, int64_t k);

  // Enqueues y[m][n] = sum_k x[m][k] * w[n][k] (+ bias[n]) for m < rows, n < w.rows,
  // k < w.cols. All pointers are device addresses: x [rows, ldx] f32, y [rows, ldy] f32
  // (only the first w.rows of each row are written), bias [w.rows] f32 or nullptr, scratch of
  // scratch_bytes >= MatMulScratchBytes(rows, w.cols), 2-byte aligned (16 or more for the
  // fastest tensor-core paths). y must not alias x, bias or scratch.
  //
  // Returns 0 (cudaSuccess) once enqueued, or a cudaError_t value: cudaErrorInvalidValue
  // when w is not kBF16/kF16, a size is negative, w.rows or w.cols is 0 or exceeds 2^31 - 1,
  // ldx < w.cols, ldy < w.rows, a needed pointer is null or the scratch too small; a launch
  // error; or, when cuBLAS fails, its status mapped to a cudaError_t (INVALID_VALUE ->
  // cudaErrorInvalidValue, ALLOC_FAILED -> cudaErrorMemoryAllocation, NOT_SUPPORTED and
  // ARCH_MISMATCH -> cudaErrorNotSupported, others -> cudaErrorUnknown), the exact status
  // then in last_cublas_status(). rows == 0 enqueues nothing.
  int MatMul(const CudaWeight& w, const float* d_x, int64_t rows, int64_t ldx, float* d_y,
             int64_t ldy, const float* d_bias, void* d_scratch, int64_t scratch_bytes);

  // The argument checks of MatMul, without touching the device: 0 when MatMul would
  // enqueue work (or nothing, for rows == 0), else cudaErrorInvalidValue (1).
  static int CheckMatMulArgs(const CudaWeight& w, const float* d_x, int64_t rows, int64_t ldx,
                             const float* d_y, int64_t ldy, const void* d_scratch,
                             int64_t scratch_bytes);

  // The cublasStatus_t of the last cuBLAS call that failed (0 when none has).
  int last_cublas_status() const { return last_cublas_status_; }

 private:
  CudaGemm() = default;

  void* handle_ = nullptr;     // cublasHandle_t
  void* stream_ = nullptr;     // cudaStream_t
  void* workspace_ = nullptr;  // device
  bool owns_workspace_ = false;
  int last_cublas_status_ = 0;
};

// The name of a cublasStatus_t value (e.g. "CUBLAS_STATUS_NOT_INITIALIZED").
std::string CublasStatusString(int status);

}  // namespace mnemo::kernels
