// The CUDA forward pass (engine/forward/cuda_forward.h). Everything here needs the CUDA
// runtime, so the whole file is compiled only when the build has the CUDA backend.
#ifdef MNEMO_HAVE_CUDA

#include "engine/forward/cuda_forward.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cache/arena_memory.h"
#include "cache/base/strings.h"
#include "cache/host_tier.h"
#include "engine/forward/weights.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_launch.h"
#include "kernels/cuda/convert.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/device_pool.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/memory_plan.h"
#include "kernels/cuda/ops.h"
#include "kernels/dequant.h"

namespace mnemo::engine {
namespace {

using kernels::CudaWeight;
using kernels::WeightView;
using kernels::cuda::AlignUp;

// Internal naming the failed step and the CUDA error; OK for cudaSuccess.
absl::Status CudaStatus(int err, const char* what) {
  if (err == 0) return absl::OkStatus();
  if (err == cudaErrorMemoryAllocation) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": ", kernels::CudaErrorString(err)));
  }
  return absl::InternalError(absl::StrCat(what, ": ", kernels::CudaErrorString(err)));
}

#define MNEMO_CUDA_TRY(expr, what)                                                        \
  do {                                                                                    \
    if (absl::Status mnemo_st = CudaStatus(static_cast<int>(expr), what); !mnemo_st.ok()) \
      return mnemo_st;                                                                    \
  } while (0)

#define MNEMO_STATUS_TRY(expr)                                           \
  do {                                                                   \
    if (absl::Status mnemo_st = (expr); !mnemo_st.ok()) return mnemo_st; \
  } while (0)

// cuBLAS's workspace (kernels/cuda/gemm.h: 32 MiB serves Hopper and Ampere).
constexpr int64_t kGemmWorkspaceBytes = int64_t{32} << 20;
// The step size the scratch reserve of the memory plan is computed for (a prefill chunk);
// larger steps grow the scratch beyond the reserve.
constexpr int64_t kPlanRows = 512;
// The attention scratch is capped: the launcher runs row chunks through a smaller one
// (kernels/cuda/attention.h), with the same results.
constexpr int64_t kMaxAttentionScratchBytes = int64_t{256} << 20;

// Device memory that grows (never shrinks) and keeps no contents. Growing frees the old
// allocation, so the caller must have synchronized the work that used it (Forward ends
// synchronized).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { Release(); }

  int Reserve(uint64_t bytes) {
    if (bytes <= capacity_) return cudaSuccess;
    Release();
    const cudaError_t e = cudaMalloc(&data_, static_cast<size_t>(bytes));
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // an allocation failure is not sticky
      data_ = nullptr;
      return e;
    }
    capacity_ = bytes;
    return cudaSuccess;
  }
  void Release() {
    if (data_ != nullptr) (void)cudaFree(data_);
    data_ = nullptr;
    capacity_ = 0;
  }
  void* data() const { return data_; }
  uint64_t capacity() const { return capacity_; }

 private:
  void* data_ = nullptr;
  uint64_t capacity_ = 0;
};

// The KV arena in device memory of one device: the region of the forward pass's device
// allocation that the memory plan leaves for KV blocks. Copies run on their own non-blocking
// stream, so a spill or restore on an I/O worker overlaps the compute stream instead of waiting for
// it (the engine only moves blocks that no running step touches), and complete before Copy
// returns (the block pool's copy-on-write and the tiers expect that). From pinned host
// memory (the host tier's, PinnedHostAllocator) they are DMA at full bus speed.
class CudaArenaMemory : public cache::ArenaMemory {
 public:
  // The KV region [region, region + capacity) of the forward pass's one device allocation.
  CudaArenaMemory(int device, void* region, uint64_t capacity)
      : device_(device), region_(region), capacity_(capacity) {
    if (cudaSetDevice(device_) == cudaSuccess) {
      (void)cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking);
    }
  }
  ~CudaArenaMemory() override {
    if (copy_stream_ != nullptr) (void)cudaStreamDestroy(copy_stream_);
  }
  // The region, to one arena at a time (a Generator may replace its pool by a larger one).
  void* Allocate(size_t bytes) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (copy_stream_ == nullptr || in_use_ || bytes > capacity_) return nullptr;
    in_use_ = true;
    return region_;
  }
  void Free(void* p) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (p == region_) in_use_ = false;
  }
  void Copy(void* dst, const void* src, size_t n) override {
    (void)cudaSetDevice(device_);
    // cudaMemcpyDefault infers the direction from the unified address space. Copy has no way
    // to report an error: a failure is sticky and surfaces as Internal from the next Forward.
    // The stream is shared by the I/O workers: a worker may also wait for another's copy.
    (void)cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, copy_stream_);
    (void)cudaStreamSynchronize(copy_stream_);
  }
  bool host_accessible() const override { return false; }
  uint64_t capacity() const { return capacity_; }

 private:
  int device_;
  void* region_;
  uint64_t capacity_;
  cudaStream_t copy_stream_ = nullptr;
  std::mutex mu_;
  bool in_use_ = false;
};

// Page-locked host memory for the host tier's arena, so that device<->host block copies
// are DMA (docs/cache.md: HostArenaAllocator). Portable: usable from any device's streams.
class PinnedHostAllocator : public cache::HostArenaAllocator {
 public:
  void* Allocate(size_t bytes) override {
    void* p = nullptr;
    if (cudaHostAlloc(&p, bytes, cudaHostAllocPortable) != cudaSuccess) {
      (void)cudaGetLastError();
      return nullptr;
    }
    return p;  // page aligned
  }
  void Free(void* p, size_t) override {
    if (p != nullptr) (void)cudaFreeHost(p);
  }
};

// A layer's weights on the device. A CudaWeight with data == nullptr is absent.
struct DeviceLayer {
  const float* attn_norm = nullptr;
  const float* ffn_norm = nullptr;
  const float* q_norm = nullptr;
  const float* k_norm = nullptr;
  CudaWeight qkv;  // fused Q|K|V, or absent: then q, k, v
  const float* qkv_bias = nullptr;
  CudaWeight q, k, v;
  const float* q_bias = nullptr;
  const float* k_bias = nullptr;
  const float* v_bias = nullptr;
  CudaWeight o;
  const float* o_bias = nullptr;
  CudaWeight gate_up;  // fused gate|up, or absent: then gate, up
  CudaWeight gate, up, down;
};

// Walks the weights twice: first counting the pool bytes they need (count_only), then
// uploading them into the pool. Matrices go through a staging buffer in their file dtype
// and CudaConvertWeight; everything is enqueued on one stream, whose order keeps the
// staging buffer's reuse safe.
struct Uploader {
  bool count_only = true;
  uint64_t pool_bytes = 0;     // aligned sum
  uint64_t staging_bytes = 0;  // the largest matrix in its file dtype
  kernels::cuda::DevicePool* pool = nullptr;
  void* staging = nullptr;
  cudaStream_t stream = nullptr;

  absl::Status Allocate(uint64_t bytes, void** out) {
    pool_bytes += AlignUp(bytes);
    if (count_only) return absl::OkStatus();
    MNEMO_CUDA_TRY(pool->Allocate(bytes, out), "device pool");
    return absl::OkStatus();
  }

  absl::Status Matrix(const WeightView& w, const std::string& name, CudaWeight* out) {
    *out = CudaWeight{};
    if (w.data == nullptr) return absl::OkStatus();
    if (!kernels::CanDequantize(w.dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": dtype ",
                                                     AsAbsl(kernels::DTypeName(w.dtype)),
                                                     " cannot be converted for the CUDA backend"));
    }
    const int64_t n = w.rows * w.cols;
    const uint64_t file_bytes = kernels::DTypeBytes(w.dtype, n).value_or(0);
    staging_bytes = std::max(staging_bytes, file_bytes);
    void* dst = nullptr;
    MNEMO_STATUS_TRY(Allocate(static_cast<uint64_t>(n) * 2, &dst));
    out->dtype = kernels::DeviceWeightDType(w.dtype);
    out->rows = w.rows;
    out->cols = w.cols;
    if (count_only) return absl::OkStatus();
    out->data = static_cast<const uint16_t*>(dst);
    MNEMO_CUDA_TRY(cudaMemcpyAsync(staging, w.data, file_bytes, cudaMemcpyHostToDevice, stream),
                   "weight upload");
    MNEMO_CUDA_TRY(
        kernels::CudaConvertWeight(w.dtype, staging, static_cast<uint16_t*>(dst), n, stream),
        "weight conversion");
    return absl::OkStatus();
  }

  // The token-embedding table as stored (CudaEmbedding reads every weight dtype).
  absl::Status Raw(const WeightView& w, WeightView* out) {
    *out = w;
    const uint64_t bytes = kernels::DTypeBytes(w.dtype, w.rows * w.cols).value_or(0);
    void* dst = nullptr;
    MNEMO_STATUS_TRY(Allocate(bytes, &dst));
    if (count_only) return absl::OkStatus();
    out->data = dst;
    MNEMO_CUDA_TRY(cudaMemcpyAsync(dst, w.data, bytes, cudaMemcpyHostToDevice, stream),
                   "embedding upload");
    return absl::OkStatus();
  }

  absl::Status Vector(const float* v, int64_t n, const float** out) {
    *out = nullptr;
    if (v == nullptr || n == 0) return absl::OkStatus();
    void* dst = nullptr;
    MNEMO_STATUS_TRY(Allocate(static_cast<uint64_t>(n) * 4, &dst));
    if (count_only) return absl::OkStatus();
    *out = static_cast<const float*>(dst);
    MNEMO_CUDA_TRY(
        cudaMemcpyAsync(dst, v, static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice, stream),
        "vector upload");
    return absl::OkStatus();
  }
};

// Float offsets of the activations of a step of T rows with n_out logit rows, each buffer
// starting 256-byte aligned, in one device allocation.
struct ActivationLayout {
  int64_t x = 0, h = 0, qkv = 0, proj = 0, gate_up = 0, fin = 0, logits = 0, total = 0;

  ActivationLayout(const ModelConfig& c, int64_t T, int64_t n_out) {
    const int64_t d = c.d_model;
    const int64_t q_dim = int64_t{c.n_heads} * c.head_dim;
    const int64_t kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
    int64_t at = 0;
    auto take = [&](int64_t floats) {
      const int64_t start = at;
      at += (floats + 63) / 64 * 64;
      return start;
    };
    x = take(T * d);                               // residual stream
    h = take(T * std::max(d, q_dim));              // normalised input / attention output
    qkv = take(T * (q_dim + 2 * kv_dim));          // q, k, v
    proj = take(T * d);                            // projections before the residual add
    gate_up = take(T * 2 * int64_t{c.d_ff});       // gate | up, then SwiGLU in gate
    fin = take(n_out * d);                         // the wanted rows, normalised
    logits = take(n_out * int64_t{c.vocab_size});  // before the copy to the host
    total = at;
  }
};

int64_t MaxMatMulK(const ModelConfig& c) {
  return std::max({int64_t{c.d_model}, int64_t{c.n_heads} * c.head_dim, int64_t{c.d_ff}});
}

int64_t AttentionScratchFor(const ModelConfig& c, int64_t rows, int64_t max_kv_len) {
  const int64_t per_row =
      kernels::cuda::AttentionScratchBytesPerRow(c.n_heads, c.head_dim, max_kv_len);
  if (per_row == 0) return 0;
  const int64_t all = kernels::cuda::AttentionScratchBytes(rows, c.n_heads, c.head_dim, max_kv_len);
  return std::max(per_row, std::min(all, kMaxAttentionScratchBytes));
}

class CudaForward : public ForwardPass {
 public:
  static absl::StatusOr<std::unique_ptr<ForwardPass>> Create(const Model& model,
                                                             const ForwardOptions& opts);
  ~CudaForward() override;

  const ModelConfig& config() const override { return config_; }
  const Device& device() const override { return device_; }
  cache::ArenaMemory* kv_memory() override { return arena_memory_.get(); }
  const kernels::RopeTable& rope_table() const override { return rope_; }
  cache::HostArenaAllocator* host_allocator() override { return &pinned_; }
  uint64_t kv_capacity_bytes() const override { return arena_memory_->capacity(); }
  absl::Status Forward(const kernels::KvArenaView& kv, std::span<const SeqBatchEntry> batch,
                       float* logits) override;
  absl::Status ObserveAttention(const kernels::KvArenaView& kv, const SeqBatchEntry& entry,
                                int64_t observe_from, std::span<float> mass) override;

 private:
  CudaForward() = default;
  absl::Status Walk(const ModelWeights& w, Uploader& up);
  // Enqueues the step (plan_ built and uploaded) on stream_; the caller synchronizes.
  absl::Status Enqueue(const kernels::KvArenaView& kv, float* logits);
  absl::Status Reserve(DeviceBuffer& b, uint64_t bytes, const char* what) {
    const int e = b.Reserve(bytes);
    if (e == 0) return absl::OkStatus();
    return absl::ResourceExhaustedError(absl::StrCat("device scratch (", what, ") of ", bytes,
                                                     " bytes: ", kernels::CudaErrorString(e)));
  }

  ModelConfig config_;
  Device device_;
  float rope_mscale_ = 1.0f;
  kernels::RopeTable rope_;  // host copy (rope_table())
  int rotary_dims_ = 0;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<kernels::cuda::DevicePool> pool_;
  std::unique_ptr<kernels::CudaGemm> gemm_;
  std::unique_ptr<CudaArenaMemory> arena_memory_;
  PinnedHostAllocator pinned_;
  // Device weights (into pool_).
  WeightView embedding_;  // in its file dtype, for CudaEmbedding
  CudaWeight output_;
  const float* output_norm_ = nullptr;
  const float* theta_ = nullptr;
  std::vector<DeviceLayer> layers_;
  // Per-step state.
  StepPlan plan_;
  std::vector<int32_t> host_ints_;
  DeviceBuffer ints_;  // the plan's int arrays
  DeviceBuffer act_;   // ActivationLayout
  DeviceBuffer gemm_scratch_;
  DeviceBuffer attn_scratch_;
  // Set only during ObserveAttention: the first observed row and the device mass array.
  int64_t observe_from_ = 0;
  float* observe_mass_ = nullptr;
  DeviceBuffer mass_;
};

absl::Status CudaForward::Walk(const ModelWeights& w, Uploader& up) {
  const ModelConfig& c = w.config();
  MNEMO_STATUS_TRY(up.Raw(w.token_embedding(), &embedding_));
  MNEMO_STATUS_TRY(up.Matrix(w.output(), "output.weight", &output_));
  MNEMO_STATUS_TRY(up.Vector(w.output_norm(), c.d_model, &output_norm_));
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim;
  const int64_t kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  layers_.assign(static_cast<size_t>(c.n_layers), DeviceLayer{});
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layer(l);
    DeviceLayer& D = layers_[static_cast<size_t>(l)];
    const std::string p = absl::StrCat("blk.", l, ".");
    MNEMO_STATUS_TRY(up.Vector(L.attn_norm, c.d_model, &D.attn_norm));
    MNEMO_STATUS_TRY(up.Vector(L.ffn_norm, c.d_model, &D.ffn_norm));
    MNEMO_STATUS_TRY(up.Vector(L.q_norm, c.head_dim, &D.q_norm));
    MNEMO_STATUS_TRY(up.Vector(L.k_norm, c.head_dim, &D.k_norm));
    // With QK-norm, q and k are written to packed buffers of their own (see Enqueue), so
    // the fused product is not used.
    if (L.attn_qkv.data != nullptr && !c.qk_norm) {
      MNEMO_STATUS_TRY(up.Matrix(L.attn_qkv, p + "attn_qkv", &D.qkv));
      MNEMO_STATUS_TRY(up.Vector(L.qkv_bias, q_dim + 2 * kv_dim, &D.qkv_bias));
    } else {
      MNEMO_STATUS_TRY(up.Matrix(L.attn_q, p + "attn_q.weight", &D.q));
      MNEMO_STATUS_TRY(up.Matrix(L.attn_k, p + "attn_k.weight", &D.k));
      MNEMO_STATUS_TRY(up.Matrix(L.attn_v, p + "attn_v.weight", &D.v));
      MNEMO_STATUS_TRY(up.Vector(L.q_bias, q_dim, &D.q_bias));
      MNEMO_STATUS_TRY(up.Vector(L.k_bias, kv_dim, &D.k_bias));
      MNEMO_STATUS_TRY(up.Vector(L.v_bias, kv_dim, &D.v_bias));
    }
    MNEMO_STATUS_TRY(up.Matrix(L.attn_output, p + "attn_output.weight", &D.o));
    MNEMO_STATUS_TRY(up.Vector(L.o_bias, c.d_model, &D.o_bias));
    if (L.ffn_gate_up.data != nullptr) {
      MNEMO_STATUS_TRY(up.Matrix(L.ffn_gate_up, p + "ffn_gate_up", &D.gate_up));
    } else {
      MNEMO_STATUS_TRY(up.Matrix(L.ffn_gate, p + "ffn_gate.weight", &D.gate));
      MNEMO_STATUS_TRY(up.Matrix(L.ffn_up, p + "ffn_up.weight", &D.up));
    }
    MNEMO_STATUS_TRY(up.Matrix(L.ffn_down, p + "ffn_down.weight", &D.down));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ForwardPass>> CudaForward::Create(const Model& model,
                                                                 const ForwardOptions& opts) {
  std::unique_ptr<CudaForward> f(new CudaForward());
  f->device_ = opts.device;
  MNEMO_CUDA_TRY(cudaSetDevice(opts.device.index), "cudaSetDevice");
  // The host view of the weights is needed only while uploading.
  auto weights = ModelWeights::Create(model, {.f32_matrices = false, .fuse = opts.fuse_matrices});
  if (!weights.ok()) return weights.status();
  const ModelWeights& w = **weights;
  f->config_ = w.config();
  const ModelConfig& c = f->config_;
  const kernels::RopeTable rope = ModelRopeTable(c, w);
  f->rope_mscale_ = rope.mscale;
  f->rope_ = rope;
  f->rotary_dims_ = c.rope.rotary_dims;

  Uploader up;
  MNEMO_STATUS_TRY(f->Walk(w, up));
  MNEMO_STATUS_TRY(
      up.Vector(rope.theta.data(), static_cast<int64_t>(rope.theta.size()), &f->theta_));
  const uint64_t weight_bytes = up.pool_bytes;

  // The memory plan (docs/cuda.md): one device allocation of the budget (bytes, or 0.9 of the
  // free memory) holds the weights, a scratch reserve for a kPlanRows-row step (the
  // activations themselves grow outside it) and the KV region the block pool gets through
  // kv_memory().
  const int64_t plan_rows = std::min<int64_t>(kPlanRows, std::max(1, c.context_length));
  const uint64_t reserve =
      AlignUp(kGemmWorkspaceBytes) +
      static_cast<uint64_t>(ActivationLayout(c, plan_rows, plan_rows).total) * 4 +
      static_cast<uint64_t>(kernels::CudaGemm::MatMulScratchBytes(plan_rows, MaxMatMulK(c))) +
      static_cast<uint64_t>(AttentionScratchFor(c, plan_rows, c.context_length));
  size_t free_bytes = 0, total_bytes = 0;
  MNEMO_CUDA_TRY(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  kernels::cuda::MemoryPlanOptions po;
  po.device_free_bytes = free_bytes;
  po.device_total_bytes = total_bytes;
  po.budget_bytes = opts.device_budget_bytes;
  po.budget_fraction = 0.9;  // no budget given: headroom for cuBLAS and the driver
  po.weight_bytes = weight_bytes;
  po.reserve_bytes = reserve;
  po.kv_block_bytes =
      static_cast<uint64_t>(KvLayoutForModel(c, kernels::DType::kBF16).block_bytes());
  po.min_kv_blocks = 1;
  const kernels::cuda::MemoryPlan plan = kernels::cuda::PlanDeviceMemory(po);
  if (!plan.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("device ", opts.device.ToString(), ": ", plan.error));
  }

  MNEMO_CUDA_TRY(cudaStreamCreateWithFlags(&f->stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  std::string error;
  f->pool_ = kernels::cuda::DevicePool::Create(
      weight_bytes + AlignUp(kGemmWorkspaceBytes) + plan.kv_bytes, &error);
  if (f->pool_ == nullptr) return absl::ResourceExhaustedError(error);
  void* workspace = nullptr;
  MNEMO_CUDA_TRY(f->pool_->Allocate(kGemmWorkspaceBytes, &workspace), "cuBLAS workspace");
  f->gemm_ = kernels::CudaGemm::Create(
      {.stream = f->stream_, .workspace_bytes = kGemmWorkspaceBytes, .workspace = workspace},
      &error);
  if (f->gemm_ == nullptr) return absl::InternalError(absl::StrCat("cuBLAS: ", error));

  DeviceBuffer staging;
  MNEMO_STATUS_TRY(f->Reserve(staging, std::max<uint64_t>(up.staging_bytes, 256), "staging"));
  up.count_only = false;
  up.pool_bytes = 0;
  up.pool = f->pool_.get();
  up.staging = staging.data();
  up.stream = f->stream_;
  absl::Status st = f->Walk(w, up);
  if (st.ok()) {
    st = up.Vector(rope.theta.data(), static_cast<int64_t>(rope.theta.size()), &f->theta_);
  }
  // Wait for every copy and conversion before the host weights and the staging go away.
  const absl::Status sync = CudaStatus(cudaStreamSynchronize(f->stream_), "weight upload");
  if (!st.ok()) return st;
  if (!sync.ok()) return sync;
  void* kv_region = nullptr;
  MNEMO_CUDA_TRY(f->pool_->Allocate(plan.kv_bytes, &kv_region), "KV region");
  f->arena_memory_ = std::make_unique<CudaArenaMemory>(opts.device.index, kv_region, plan.kv_bytes);
  return std::unique_ptr<ForwardPass>(std::move(f));
}

CudaForward::~CudaForward() {
  if (stream_ != nullptr) (void)cudaStreamSynchronize(stream_);
  gemm_.reset();
  ints_.Release();
  act_.Release();
  gemm_scratch_.Release();
  attn_scratch_.Release();
  pool_.reset();
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
}

absl::Status CudaForward::Forward(const kernels::KvArenaView& kv,
                                  std::span<const SeqBatchEntry> batch, float* logits) {
  if (absl::Status st = ValidateBatch(config_, kv, batch); !st.ok()) return st;
  MNEMO_CUDA_TRY(cudaSetDevice(device_.index), "cudaSetDevice");
  plan_.Build(batch);
  const absl::Status st = Enqueue(kv, logits);
  // Always wait: on an enqueue error earlier work may still be running on the scratch.
  const absl::Status sync = CudaStatus(cudaStreamSynchronize(stream_), "forward step");
  if (!st.ok()) return st;
  return sync;
}

absl::Status CudaForward::ObserveAttention(const kernels::KvArenaView& kv,
                                           const SeqBatchEntry& entry, int64_t observe_from,
                                           std::span<float> mass) {
  if (absl::Status st = ValidateObserve(entry, observe_from, mass.size()); !st.ok()) return st;
  MNEMO_CUDA_TRY(cudaSetDevice(device_.index), "cudaSetDevice");
  const size_t bytes = mass.size() * sizeof(float);
  MNEMO_STATUS_TRY(Reserve(mass_, bytes, "attention mass"));
  MNEMO_CUDA_TRY(cudaMemsetAsync(mass_.data(), 0, bytes, stream_), "mass reset");
  SeqBatchEntry e = entry;
  e.logits = LogitRows::kNone;
  observe_from_ = observe_from;
  observe_mass_ = static_cast<float*>(mass_.data());
  const absl::Status st = Forward(kv, std::span<const SeqBatchEntry>(&e, 1), nullptr);
  observe_mass_ = nullptr;
  if (!st.ok()) return st;
  std::vector<float> got(mass.size());
  MNEMO_CUDA_TRY(cudaMemcpy(got.data(), mass_.data(), bytes, cudaMemcpyDeviceToHost), "mass copy");
  for (size_t i = 0; i < got.size(); ++i) mass[i] += got[i];
  return absl::OkStatus();
}

absl::Status CudaForward::Enqueue(const kernels::KvArenaView& kv, float* logits) {
  const ModelConfig& c = config_;
  const int64_t T = plan_.rows();
  const int n_seqs = plan_.n_seqs();
  const int64_t n_out = static_cast<int64_t>(plan_.logit_rows.size());
  const int64_t d = c.d_model;
  const int hd = c.head_dim;
  const int64_t q_dim = int64_t{c.n_heads} * hd;
  const int64_t kv_dim = int64_t{c.n_kv_heads} * hd;
  const int64_t ff = c.d_ff;
  int64_t max_kv_len = 0;
  for (int32_t n : plan_.kv_len) max_kv_len = std::max<int64_t>(max_kv_len, n);

  // The plan's int arrays, one upload: tokens | q_start | positions | kv_len | table_start |
  // block_table.
  host_ints_.clear();
  auto append = [&](const std::vector<int32_t>& v) {
    const size_t at = host_ints_.size();
    host_ints_.insert(host_ints_.end(), v.begin(), v.end());
    return at;
  };
  const size_t o_tokens = append(plan_.tokens);
  const size_t o_q_start = append(plan_.q_start);
  const size_t o_positions = append(plan_.positions);
  const size_t o_kv_len = append(plan_.kv_len);
  const size_t o_table_start = append(plan_.table_start);
  const size_t o_block_table = append(plan_.block_table);
  host_ints_.push_back(0);  // keeps the block table pointer valid when it is empty
  MNEMO_STATUS_TRY(Reserve(ints_, host_ints_.size() * 4, "step plan"));
  int32_t* d_ints = static_cast<int32_t*>(ints_.data());
  MNEMO_CUDA_TRY(cudaMemcpyAsync(d_ints, host_ints_.data(), host_ints_.size() * 4,
                                 cudaMemcpyHostToDevice, stream_),
                 "step plan upload");
  kernels::BatchSeqs seqs;
  seqs.n_seqs = n_seqs;
  seqs.q_start = d_ints + o_q_start;
  seqs.positions = d_ints + o_positions;
  seqs.kv_len = d_ints + o_kv_len;
  seqs.table_start = d_ints + o_table_start;
  seqs.block_table = d_ints + o_block_table;
  const int32_t* d_tokens = d_ints + o_tokens;

  const ActivationLayout lay(c, T, n_out);
  MNEMO_STATUS_TRY(Reserve(act_, static_cast<uint64_t>(lay.total) * 4, "activations"));
  float* base = static_cast<float*>(act_.data());
  float* x = base + lay.x;
  float* h = base + lay.h;
  float* proj = base + lay.proj;
  float* gate = base + lay.gate_up;
  float* up = gate + ff;
  float* fin = base + lay.fin;
  float* d_logits = base + lay.logits;
  // Q, K, V side by side in each row (one fused product writes them all), except with
  // QK-norm: then each is a packed [T, heads * head_dim] matrix, so that the per-head norm is
  // one RmsNorm over T * heads rows of head_dim.
  float* q = base + lay.qkv;
  float *k, *v;
  int64_t ldq, ldkv;
  if (c.qk_norm) {
    k = q + T * q_dim;
    v = k + T * kv_dim;
    ldq = q_dim;
    ldkv = kv_dim;
  } else {
    k = q + q_dim;
    v = k + kv_dim;
    ldq = ldkv = q_dim + 2 * kv_dim;
  }

  const int64_t gemm_bytes = kernels::CudaGemm::MatMulScratchBytes(T, MaxMatMulK(c));
  MNEMO_STATUS_TRY(Reserve(gemm_scratch_, static_cast<uint64_t>(gemm_bytes), "gemm"));
  const int64_t attn_bytes = AttentionScratchFor(c, T, max_kv_len);
  if (attn_bytes > 0) {
    MNEMO_STATUS_TRY(Reserve(attn_scratch_, static_cast<uint64_t>(attn_bytes), "attention"));
  }
  void* attn_scratch = attn_bytes > 0 ? attn_scratch_.data() : nullptr;

  auto matmul = [&](const CudaWeight& w, const float* in, int64_t rows, int64_t ld_in,
                    const float* bias, float* out, int64_t ld_out) {
    return CudaStatus(gemm_->MatMul(w, in, rows, ld_in, out, ld_out, bias, gemm_scratch_.data(),
                                    static_cast<int64_t>(gemm_scratch_.capacity())),
                      "cuBLAS matmul");
  };
  auto rms_norm = [&](const float* in, float* out, int64_t rows, int64_t cols,
                      const float* weight) {
    return CudaStatus(kernels::CudaRmsNorm({.x = in,
                                            .ldx = cols,
                                            .weight = weight,
                                            .y = out,
                                            .ldy = cols,
                                            .rows = rows,
                                            .cols = cols,
                                            .eps = c.norm_eps},
                                           stream_),
                      "RmsNorm");
  };
  auto rope = [&](float* t, int64_t ld, int n_heads) {
    return CudaStatus(
        kernels::CudaRope({.x = t,
                           .ld = ld,
                           .rows = T,
                           .n_heads = n_heads,
                           .head_dim = hd,
                           .rotary_dims = rotary_dims_,
                           .mode = c.rope.style == RopeStyle::kNeox ? kernels::RopeMode::kNeox
                                                                    : kernels::RopeMode::kNormal,
                           .positions = seqs.positions,
                           .theta = theta_,
                           .mscale = rope_mscale_},
                          stream_),
        "Rope");
  };
  auto add = [&](const float* in, float* acc) {
    return CudaStatus(
        kernels::CudaAdd({.x = in, .ldx = d, .y = acc, .ldy = d, .rows = T, .cols = d}, stream_),
        "Add");
  };

  MNEMO_CUDA_TRY(
      kernels::CudaEmbedding({.table = embedding_, .ids = d_tokens, .n = T, .out = x, .ld_out = d},
                             stream_),
      "Embedding");
  for (int l = 0; l < c.n_layers; ++l) {
    const DeviceLayer& L = layers_[static_cast<size_t>(l)];
    MNEMO_STATUS_TRY(rms_norm(x, h, T, d, L.attn_norm));
    if (L.qkv.data != nullptr) {
      MNEMO_STATUS_TRY(matmul(L.qkv, h, T, d, L.qkv_bias, q, ldq));
    } else {
      MNEMO_STATUS_TRY(matmul(L.q, h, T, d, L.q_bias, q, ldq));
      MNEMO_STATUS_TRY(matmul(L.k, h, T, d, L.k_bias, k, ldkv));
      MNEMO_STATUS_TRY(matmul(L.v, h, T, d, L.v_bias, v, ldkv));
    }
    if (c.qk_norm) {
      MNEMO_STATUS_TRY(rms_norm(q, q, T * c.n_heads, hd, L.q_norm));
      MNEMO_STATUS_TRY(rms_norm(k, k, T * c.n_kv_heads, hd, L.k_norm));
    }
    MNEMO_STATUS_TRY(rope(q, ldq, c.n_heads));
    MNEMO_STATUS_TRY(rope(k, ldkv, c.n_kv_heads));
    MNEMO_CUDA_TRY(
        kernels::CudaKvWrite(
            {.kv = kv, .layer = l, .seqs = seqs, .k = k, .ldk = ldkv, .v = v, .ldv = ldkv}, T,
            stream_),
        "KvWrite");
    const kernels::AttentionParams attention = {.kv = kv,
                                                .layer = l,
                                                .seqs = seqs,
                                                .n_heads = c.n_heads,
                                                .q = q,
                                                .ldq = ldq,
                                                .out = h,
                                                .ldo = q_dim,
                                                .scale = 1.0f / std::sqrt(static_cast<float>(hd)),
                                                .sliding_window = c.sliding_window};
    MNEMO_CUDA_TRY(
        kernels::CudaPagedAttention(attention, T, max_kv_len, attn_scratch, attn_bytes, stream_),
        "PagedAttention");
    if (observe_mass_ != nullptr) {
      MNEMO_CUDA_TRY(
          kernels::CudaAttentionMass(attention, observe_from_, T, observe_mass_, stream_),
          "AttentionMass");
    }
    MNEMO_STATUS_TRY(matmul(L.o, h, T, q_dim, L.o_bias, proj, d));
    MNEMO_STATUS_TRY(add(proj, x));

    MNEMO_STATUS_TRY(rms_norm(x, h, T, d, L.ffn_norm));
    if (L.gate_up.data != nullptr) {
      MNEMO_STATUS_TRY(matmul(L.gate_up, h, T, d, nullptr, gate, 2 * ff));
    } else {
      MNEMO_STATUS_TRY(matmul(L.gate, h, T, d, nullptr, gate, 2 * ff));
      MNEMO_STATUS_TRY(matmul(L.up, h, T, d, nullptr, up, 2 * ff));
    }
    MNEMO_CUDA_TRY(kernels::CudaSwiGlu({.gate = gate,
                                        .ld_gate = 2 * ff,
                                        .up = up,
                                        .ld_up = 2 * ff,
                                        .out = gate,
                                        .ld_out = 2 * ff,
                                        .rows = T,
                                        .cols = ff},
                                       stream_),
                   "SwiGlu");
    MNEMO_STATUS_TRY(matmul(L.down, gate, T, 2 * ff, nullptr, proj, d));
    MNEMO_STATUS_TRY(add(proj, x));
  }

  if (n_out == 0) return absl::OkStatus();
  // Gather the wanted rows, one copy per run of consecutive rows.
  for (int64_t i = 0; i < n_out;) {
    int64_t j = i + 1;
    while (j < n_out && plan_.logit_rows[j] == plan_.logit_rows[j - 1] + 1) ++j;
    MNEMO_CUDA_TRY(
        cudaMemcpyAsync(fin + i * d, x + int64_t{plan_.logit_rows[i]} * d,
                        static_cast<size_t>((j - i) * d) * 4, cudaMemcpyDeviceToDevice, stream_),
        "row gather");
    i = j;
  }
  MNEMO_STATUS_TRY(rms_norm(fin, fin, n_out, d, output_norm_));
  MNEMO_STATUS_TRY(matmul(output_, fin, n_out, d, nullptr, d_logits, c.vocab_size));
  MNEMO_CUDA_TRY(cudaMemcpyAsync(logits, d_logits,
                                 static_cast<size_t>(n_out) * static_cast<size_t>(c.vocab_size) * 4,
                                 cudaMemcpyDeviceToHost, stream_),
                 "logits copy");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ForwardPass>> CreateCudaForward(const Model& model,
                                                               const ForwardOptions& opts) {
  return CudaForward::Create(model, opts);
}

}  // namespace mnemo::engine

#endif  // MNEMO_HAVE_CUDA
