// The GPU's ceilings, measured the way bench/e2e_bench.cc measures the CPU's (DESIGN.md 8):
// what the CUDA backend's decode and prefill will be reported against.
//
//   BM_Cuda_HbmRead       sum of a buffer of 1/4 of free device memory (at most 8 GiB),
//                         16-byte loads, grid-stride: the read bandwidth (bytes/s)
//   BM_Cuda_GemmBf16/N    cublasGemmEx N x N x N, BF16 in, F32 compute (tensor cores):
//                         the matrix rate (flop/s)
//
// Times are CUDA events around the kernels on one stream (Google Benchmark's manual time).
// Without a device the binary says so and exits 0 (tools/gpu-check.sh runs it on a GPU).
// Usage: mnemo_cuda_ceiling_bench [Google Benchmark flags]
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

#define CHECK_CUDA(expr)                                                      \
  do {                                                                        \
    const cudaError_t mnemo_err = (expr);                                     \
    if (mnemo_err != cudaSuccess) {                                           \
      std::fprintf(stderr, "%s: %s\n", #expr, cudaGetErrorString(mnemo_err)); \
      std::exit(1);                                                           \
    }                                                                         \
  } while (0)

// Each thread sums 16-byte words at a grid stride; one atomic per thread keeps the result
// live (the compiler cannot drop the loads) at a negligible cost.
__global__ void ReadKernel(const uint4* __restrict__ p, int64_t n, unsigned long long* sink) {
  unsigned int acc = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const uint4 v = p[i];
    acc += v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) atomicAdd(sink, 1ull);  // practically never taken
}

class Timer {
 public:
  Timer() {
    CHECK_CUDA(cudaEventCreate(&start_));
    CHECK_CUDA(cudaEventCreate(&stop_));
  }
  ~Timer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  void Start(cudaStream_t s) { CHECK_CUDA(cudaEventRecord(start_, s)); }
  double StopSeconds(cudaStream_t s) {
    CHECK_CUDA(cudaEventRecord(stop_, s));
    CHECK_CUDA(cudaEventSynchronize(stop_));
    float ms = 0.0f;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start_, stop_));
    return ms / 1e3;
  }

 private:
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
};

void BM_Cuda_HbmRead(benchmark::State& state) {
  size_t free_bytes = 0, total_bytes = 0;
  CHECK_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
  const int64_t bytes = std::min<int64_t>(static_cast<int64_t>(free_bytes / 4), int64_t{8} << 30) /
                        (1 << 20) * (1 << 20);
  void* buf = nullptr;
  unsigned long long* sink = nullptr;
  CHECK_CUDA(cudaMalloc(&buf, bytes));
  CHECK_CUDA(cudaMalloc(&sink, sizeof(*sink)));
  CHECK_CUDA(cudaMemset(buf, 0x5a, bytes));
  int sms = 0;
  CHECK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int threads = 512;
  const int blocks = sms * 8;  // enough resident warps to keep every SM's loads in flight
  cudaStream_t stream = nullptr;
  CHECK_CUDA(cudaStreamCreate(&stream));
  Timer timer;
  for (auto _ : state) {
    timer.Start(stream);
    ReadKernel<<<blocks, threads, 0, stream>>>(static_cast<const uint4*>(buf), bytes / 16, sink);
    CHECK_CUDA(cudaGetLastError());
    state.SetIterationTime(timer.StopSeconds(stream));
  }
  state.SetBytesProcessed(state.iterations() * bytes);
  state.counters["buffer_GiB"] = static_cast<double>(bytes) / (1 << 30);
  CHECK_CUDA(cudaStreamDestroy(stream));
  CHECK_CUDA(cudaFree(sink));
  CHECK_CUDA(cudaFree(buf));
}

void BM_Cuda_GemmBf16(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const size_t elems = static_cast<size_t>(n) * n;
  std::vector<__nv_bfloat16> host(elems);
  for (size_t i = 0; i < elems; ++i) host[i] = __float2bfloat16(static_cast<float>(i % 13) - 6.0f);
  __nv_bfloat16 *a = nullptr, *b = nullptr;
  float* c = nullptr;
  CHECK_CUDA(cudaMalloc(&a, elems * sizeof(*a)));
  CHECK_CUDA(cudaMalloc(&b, elems * sizeof(*b)));
  CHECK_CUDA(cudaMalloc(&c, elems * sizeof(*c)));
  CHECK_CUDA(cudaMemcpy(a, host.data(), elems * sizeof(*a), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(b, host.data(), elems * sizeof(*b), cudaMemcpyHostToDevice));
  cudaStream_t stream = nullptr;
  CHECK_CUDA(cudaStreamCreate(&stream));
  cublasHandle_t handle = nullptr;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    state.SkipWithError("cublasCreate failed");
    return;
  }
  cublasSetStream(handle, stream);
  const float alpha = 1.0f, beta = 0.0f;
  Timer timer;
  for (auto _ : state) {
    timer.Start(stream);
    const cublasStatus_t st = cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, a,
                                           CUDA_R_16BF, n, b, CUDA_R_16BF, n, &beta, c, CUDA_R_32F,
                                           n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) {
      state.SkipWithError("cublasGemmEx failed");
      break;
    }
    state.SetIterationTime(timer.StopSeconds(stream));
  }
  state.counters["TFLOP/s"] = benchmark::Counter(2.0 * n * n * static_cast<double>(n) / 1e12,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  cublasDestroy(handle);
  CHECK_CUDA(cudaStreamDestroy(stream));
  CHECK_CUDA(cudaFree(c));
  CHECK_CUDA(cudaFree(b));
  CHECK_CUDA(cudaFree(a));
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("mnemo_cuda_ceiling_bench: no CUDA device present; nothing to measure\n");
    return 0;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device 0: %s, %.1f GiB, sm_%d%d, %d SMs\n", prop.name,
              static_cast<double>(prop.totalGlobalMem) / (1 << 30), prop.major, prop.minor,
              prop.multiProcessorCount);
  benchmark::RegisterBenchmark("BM_Cuda_HbmRead", BM_Cuda_HbmRead)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_Cuda_GemmBf16", BM_Cuda_GemmBf16)
      ->Arg(4096)
      ->Arg(8192)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
