// CudaGemm: the row-major MatMul contract mapped onto column-major cuBLAS, plus a tiny
// bias kernel.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <memory>
#include <string>

#include "kernels/cuda/convert.h"
#include "kernels/cuda/gemm.h"

namespace mnemo::kernels {
namespace {

constexpr int64_t kMaxInt = INT_MAX;  // cuBLAS (non-64-bit API) sizes and strides are int

cublasHandle_t Handle(void* h) { return static_cast<cublasHandle_t>(h); }

int CudaErrorOf(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return cudaSuccess;
    case CUBLAS_STATUS_INVALID_VALUE:
      return cudaErrorInvalidValue;
    case CUBLAS_STATUS_ALLOC_FAILED:
      return cudaErrorMemoryAllocation;
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return cudaErrorNotSupported;
    default:
      return cudaErrorUnknown;
  }
}

// y[m * ldy + j] += bias[j] for m < rows, j < n; e = m * n + j (grid stride).
__global__ void AddBiasKernel(float* __restrict__ y, int64_t ldy, const float* __restrict__ bias,
                              int64_t n, int64_t total) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += stride) {
    const int64_t m = e / n;
    const int64_t j = e - m * n;
    y[m * ldy + j] += bias[j];
  }
}

}  // namespace

std::string CublasStatusString(int status) {
  return cublasGetStatusName(static_cast<cublasStatus_t>(status));
}

std::unique_ptr<CudaGemm> CudaGemm::Create(const CudaGemmOptions& options, std::string* error) {
  std::string ignored;
  if (error == nullptr) error = &ignored;
  if (options.workspace_bytes < 0) {
    *error = "CudaGemm: negative workspace_bytes";
    return nullptr;
  }
  std::unique_ptr<CudaGemm> g(new CudaGemm());
  g->stream_ = options.stream;
  cublasHandle_t handle = nullptr;
  cublasStatus_t s = cublasCreate(&handle);
  if (s != CUBLAS_STATUS_SUCCESS) {
    (void)cudaGetLastError();  // do not leave a runtime error for unrelated later checks
    *error =
        "CudaGemm: cublasCreate failed: " + CublasStatusString(s) + " (no CUDA device or driver?)";
    return nullptr;
  }
  g->handle_ = handle;  // from here on the destructor cleans up
  if (options.workspace != nullptr) {
    g->workspace_ = options.workspace;
  } else if (options.workspace_bytes > 0) {
    const cudaError_t e = cudaMalloc(&g->workspace_, static_cast<size_t>(options.workspace_bytes));
    if (e != cudaSuccess) {
      g->workspace_ = nullptr;
      *error =
          std::string("CudaGemm: cannot allocate the cuBLAS workspace: ") + cudaGetErrorName(e);
      return nullptr;
    }
    g->owns_workspace_ = true;
  }
  // cublasSetStream resets the workspace to cuBLAS's default pool, so the workspace is set
  // after it. Pointer mode host: alpha and beta below are host floats.
  s = cublasSetStream(handle, static_cast<cudaStream_t>(options.stream));
  if (s == CUBLAS_STATUS_SUCCESS) {
    s = cublasSetWorkspace(handle, g->workspace_, static_cast<size_t>(options.workspace_bytes));
  }
  if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST);
  // Tensor cores allowed (the default for 16-bit inputs); any split-K reduction in f32.
  if (s == CUBLAS_STATUS_SUCCESS) {
    s = cublasSetMathMode(
        handle, static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                          CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION));
  }
  if (s != CUBLAS_STATUS_SUCCESS) {
    *error = "CudaGemm: configuring the cuBLAS handle failed: " + CublasStatusString(s);
    return nullptr;
  }
  return g;
}

CudaGemm::~CudaGemm() {
  if (handle_ != nullptr) (void)cublasDestroy(Handle(handle_));
  if (owns_workspace_) (void)cudaFree(workspace_);
}

int64_t CudaGemm::MatMulScratchBytes(int64_t rows, int64_t k) {
  if (rows <= 0 || k <= 0) return 0;
  return (rows * k * 2 + 255) / 256 * 256;
}

int CudaGemm::CheckMatMulArgs(const CudaWeight& w, const float* d_x, int64_t rows, int64_t ldx,
                              const float* d_y, int64_t ldy, const void* d_scratch,
                              int64_t scratch_bytes) {
  const int64_t n = w.rows;
  const int64_t k = w.cols;
  if (w.dtype != DType::kBF16 && w.dtype != DType::kF16) return cudaErrorInvalidValue;
  if (rows < 0 || n < 1 || k < 1 || n > kMaxInt || k > kMaxInt || rows > kMaxInt) {
    return cudaErrorInvalidValue;
  }
  if (ldx < k || ldy < n || ldy > kMaxInt) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  if (w.data == nullptr || d_x == nullptr || d_y == nullptr || d_scratch == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (scratch_bytes < MatMulScratchBytes(rows, k)) return cudaErrorInvalidValue;
  if (reinterpret_cast<uintptr_t>(w.data) % 2 != 0 ||
      reinterpret_cast<uintptr_t>(d_scratch) % 2 != 0 ||
      reinterpret_cast<uintptr_t>(d_x) % 4 != 0 || reinterpret_cast<uintptr_t>(d_y) % 4 != 0) {
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

int CudaGemm::MatMul(const CudaWeight& w, const float* d_x, int64_t rows, int64_t ldx, float* d_y,
                     int64_t ldy, const float* d_bias, void* d_scratch, int64_t scratch_bytes) {
  int err = CheckMatMulArgs(w, d_x, rows, ldx, d_y, ldy, d_scratch, scratch_bytes);
  if (err != cudaSuccess || rows == 0) return err;
  const int64_t n = w.rows;
  const int64_t k = w.cols;

  // x (f32, row stride ldx) -> xh, packed [rows][k] in the weight's 16-bit type.
  auto* xh = static_cast<uint16_t*>(d_scratch);
  const bool f16 = w.dtype == DType::kF16;
  err = f16 ? CudaF32ToF16(d_x, rows, k, ldx, xh, stream_)
            : CudaF32ToBf16(d_x, rows, k, ldx, xh, stream_);
  if (err != cudaSuccess) return err;

  // cuBLAS is column-major: a row-major matrix [R][C] with row stride ld is, to cuBLAS, its
  // transpose, a column-major C x R matrix with leading dimension ld. So
  //   W  row-major [n][k], ld k     is  W^T  (k x n, ld k) to cuBLAS
  //   xh row-major [rows][k], ld k  is  xh^T (k x rows, ld k)
  //   y  row-major [rows][n], ld ldy is y^T (n x rows, ld ldy)
  // and y = xh W^T  <=>  y^T = W xh^T = (W^T)^T xh^T: cuBLAS's C (m = n, n = rows) is
  // op(A) * op(B) with A = the weight buffer, op(A) = T (turning its k x n view back into
  // W), and B = xh's buffer, op(B) = N; inner dimension k. y is written in place with
  // ldc = ldy, so columns n..ldy of each row are untouched.
  const cudaDataType_t in_type = f16 ? CUDA_R_16F : CUDA_R_16BF;
  const float alpha = 1.0f;
  const float beta = 0.0f;
  const cublasStatus_t s =
      cublasGemmEx(Handle(handle_), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n),
                   static_cast<int>(rows), static_cast<int>(k), &alpha, w.data, in_type,
                   static_cast<int>(k), xh, in_type, static_cast<int>(k), &beta, d_y, CUDA_R_32F,
                   static_cast<int>(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (s != CUBLAS_STATUS_SUCCESS) {
    last_cublas_status_ = static_cast<int>(s);
    return CudaErrorOf(s);
  }

  if (d_bias != nullptr) {
    const int64_t total = rows * n;
    const cuda::LaunchConfig c = cuda::ElementwiseLaunch(total);
    AddBiasKernel<<<static_cast<unsigned>(c.grid.x), static_cast<unsigned>(c.block.x), 0,
                    static_cast<cudaStream_t>(stream_)>>>(d_y, ldy, d_bias, n, total);
    err = static_cast<int>(cudaGetLastError());
  }
  return err;
}

}  // namespace mnemo::kernels
