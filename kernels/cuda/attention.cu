// CUDA paged KV write and paged attention (decode and chunked prefill, GQA, sliding window).
// The launch configurations and the split plan come from kernels/cuda/attention_launch.h;
// the key ranges, KV addresses and softmax math from kernels/attention_math.h, shared with
// the CPU code and its tests.
#include <cuda_pipeline.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/attention.h"
#include "kernels/attention_math.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_launch.h"
#include "kernels/half.h"

namespace mnemo::kernels {
namespace {

constexpr int kWarp = 32;
constexpr int kMaxPerLane = cuda::kAttnMaxHeadDim / kWarp;  // head_dim elements per lane
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kAttendThreads = cuda::kAttnWarpsPerBlock * kWarp;

template <bool kF16>
__device__ __forceinline__ float KvToF32(uint16_t x) {
  return kF16 ? F16ToF32(x) : BF16ToF32(x);
}

template <bool kF16>
__device__ __forceinline__ uint16_t F32ToKv(float x) {
  return kF16 ? F32ToF16(x) : F32ToBF16(x);
}

// The sequence s with q_start[s] <= r < q_start[s + 1], or -1 when r is outside the batch.
// Binary search keeping q_start[lo] <= r < q_start[hi]; empty sequences are skipped over.
__device__ int SeqOfRow(const int32_t* q_start, int n_seqs, int64_t r) {
  if (n_seqs <= 0 || r < q_start[0] || r >= q_start[n_seqs]) return -1;
  int lo = 0;
  int hi = n_seqs;
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    if (q_start[mid] <= r) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Butterfly sum over the warp: every lane gets the same bits (each level adds two equal
// partial sums in both orders, and f32 addition is commutative).
__device__ __forceinline__ float WarpSum(float x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    x += __shfl_xor_sync(kFullMask, x, offset);
  }
  return x;
}

// KV write: thread (row, k|v, element) converts one f32 element (layout in
// attention_launch.h: KvWriteLaunch).
template <bool kF16>
__global__ void __launch_bounds__(cuda::kKvWriteThreads)
    KvWriteKernel(const KvWriteParams p, int64_t chunks) {
  const KvLayout& lay = p.kv.layout;
  const int64_t r = blockIdx.x;
  const int is_v = static_cast<int>(blockIdx.y / chunks);
  const int64_t e = (blockIdx.y % chunks) * cuda::kKvWriteThreads + threadIdx.x;
  if (e >= int64_t{lay.n_kv_heads} * lay.head_dim) return;
  const int s = SeqOfRow(p.seqs.q_start, p.seqs.n_seqs, r);
  if (s < 0) return;
  const int64_t pos = p.seqs.positions[r];
  const int32_t* table = p.seqs.block_table + p.seqs.table_start[s];
  const int64_t n_blocks = p.seqs.table_start[s + 1] - p.seqs.table_start[s];
  if (pos < 0 || pos / lay.block_tokens >= n_blocks) return;
  const int64_t slot = table[pos / lay.block_tokens];
  if (slot < 0 || slot >= p.kv.n_slots) return;
  const int h = static_cast<int>(e / lay.head_dim);
  const int d = static_cast<int>(e % lay.head_dim);
  const float x = is_v ? p.v[r * p.ldv + e] : p.k[r * p.ldk + e];
  auto* arena = reinterpret_cast<uint16_t*>(p.kv.base);
  arena[KvRowIndex(lay, table, p.layer, is_v, h, pos) + d] = F32ToKv<kF16>(x);
}

// The maximum over the warp, every lane the same bits (fmaxf is exact and commutative).
__device__ __forceinline__ float WarpMax(float x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    x = fmaxf(x, __shfl_xor_sync(kFullMask, x, offset));
  }
  return x;
}

// Loads 8 consecutive KV elements at `src` (16-byte aligned) as floats.
template <bool kF16>
__device__ __forceinline__ void Load8(const uint16_t* src, float* out) {
  const uint4 raw = *reinterpret_cast<const uint4*>(src);
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = KvToF32<kF16>(static_cast<uint16_t>(w[i] & 0xffffu));
    out[2 * i + 1] = KvToF32<kF16>(static_cast<uint16_t>(w[i] >> 16));
  }
}

// Attention: one warp per (row, head, split) item (numbering in attention_launch.h). The
// split's keys are taken kAttnKeyTile (= 32) at a time from its first key, lane t owning
// key j0 + tile * 32 + t:
//   1. each lane computes its key's score q . k (q pre-scaled, in shared memory; the dot
//      product in element order, 8 elements at a time when kVec8);
//   2. the tile's state: m_t = WarpMax(score), p_t = exp(score - m_t), l_t = WarpSum(p_t),
//      acc_t[d] = sum over the tile's keys in order of p_t * v[d] (lane owns d = lane + 32i);
//   3. the tile state is merged into the running one with MergeSoftmaxStates (the first
//      tile is taken as it is).
// A row's tiles depend only on its own key range, so its result is the same bits in any
// batch. scratch == nullptr: the output is written directly (one split); else the state
// (acc, m, l) goes to the scratch.
template <bool kF16, bool kVec8>
__global__ void __launch_bounds__(kAttendThreads)
    AttendKernel(const AttentionParams p, int64_t row0, int64_t rows, int64_t n_splits,
                 float* __restrict__ scratch) {
  extern __shared__ __align__(16) unsigned char attend_shared[];  // AttendSharedBytes
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  const int warp = static_cast<int>(threadIdx.x / kWarp);
  const int64_t item = static_cast<int64_t>(blockIdx.x) * cuda::kAttnWarpsPerBlock + warp;
  if (item >= rows * p.n_heads * n_splits) return;  // whole warps leave together
  const int64_t z = item % n_splits;
  const int h = static_cast<int>((item / n_splits) % p.n_heads);
  const int64_t r = row0 + item / n_splits / p.n_heads;
  const KvLayout& lay = p.kv.layout;
  const int hd = lay.head_dim;
  const int bt = lay.block_tokens;
  const int g = h / (p.n_heads / lay.n_kv_heads);

  float m = -INFINITY;
  float l = 0.0f;
  float acc[kMaxPerLane];
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) acc[i] = 0.0f;

  const int s = SeqOfRow(p.seqs.q_start, p.seqs.n_seqs, r);
  int64_t j0 = 0;
  int64_t j1 = -1;
  if (s >= 0) {
    const int64_t pos = p.seqs.positions[r];
    SplitKeyRange(AttnKeyLo(pos, p.sliding_window), AttnKeyHi(pos, p.seqs.kv_len[s]), z, n_splits,
                  &j0, &j1);
  }
  if (j0 <= j1) {
    float* qs = reinterpret_cast<float*>(attend_shared) + warp * hd;
    uint16_t* vs = reinterpret_cast<uint16_t*>(reinterpret_cast<float*>(attend_shared) +
                                               cuda::AttendSharedQueryFloats(hd)) +
                   warp * cuda::kAttnKeyTile * hd;
    const float* qrow = p.q + r * p.ldq + int64_t{h} * hd;
    for (int d = lane; d < hd; d += kWarp) qs[d] = qrow[d] * p.scale;
    __syncwarp();
    const int32_t* table = p.seqs.block_table + p.seqs.table_start[s];
    const int64_t n_blocks = p.seqs.table_start[s + 1] - p.seqs.table_start[s];
    const auto* arena = reinterpret_cast<const uint16_t*>(p.kv.base);
    bool have = false;
    for (int64_t t0 = j0; t0 <= j1; t0 += cuda::kAttnKeyTile) {
      const int n =
          static_cast<int>(j1 - t0 + 1 < cuda::kAttnKeyTile ? j1 - t0 + 1 : cuda::kAttnKeyTile);
      // 1. This lane's key: its V row copied to vs[lane] (asynchronously when kVec8), its
      //    score computed meanwhile.
      float score = -INFINITY;
      bool broken = false;
      __syncwarp();  // every lane is done reading the previous tile's vs
      if (lane < n) {
        const int64_t j = t0 + lane;
        const int64_t b = j / bt;
        const int64_t slot = b < n_blocks ? table[b] : -1;
        if (slot < 0 || slot >= p.kv.n_slots) {
          broken = true;
        } else {
          const int64_t row_off = (j % bt) * hd;
          const uint16_t* k = arena + KvTileIndex(lay, slot, p.layer, 0, g) + row_off;
          const uint16_t* v = arena + KvTileIndex(lay, slot, p.layer, 1, g) + row_off;
          uint16_t* v_dst = vs + lane * hd;
          if constexpr (kVec8) {
            for (int d = 0; d < hd; d += 8) __pipeline_memcpy_async(v_dst + d, v + d, 16);
            __pipeline_commit();
          } else {
            for (int d = 0; d < hd; ++d) v_dst[d] = v[d];
          }
          float dot = 0.0f;
          if constexpr (kVec8) {
            for (int d = 0; d < hd; d += 8) {
              float kv8[8];
              Load8<kF16>(k + d, kv8);
#pragma unroll
              for (int e = 0; e < 8; ++e) dot += qs[d + e] * kv8[e];
            }
          } else {
            for (int d = 0; d < hd; ++d) dot += qs[d] * KvToF32<kF16>(k[d]);
          }
          score = dot;
        }
      }
      if constexpr (kVec8) {
        if (lane < n && !broken) __pipeline_wait_prior(0);
      }
      __syncwarp();                         // the lanes' vs rows are visible to the whole warp
      if (__any_sync(kFullMask, broken)) {  // a broken table: make the result loudly wrong
        m = l = NAN;
#pragma unroll
        for (int i = 0; i < kMaxPerLane; ++i) acc[i] = NAN;
        break;
      }
      // 2. The tile's state.
      const float m_t = WarpMax(score);
      const float p_t = lane < n ? expf(score - m_t) : 0.0f;
      const float l_t = WarpSum(p_t);
      float acc_t[kMaxPerLane];
#pragma unroll
      for (int i = 0; i < kMaxPerLane; ++i) acc_t[i] = 0.0f;
      for (int t = 0; t < n; ++t) {
        const float w = __shfl_sync(kFullMask, p_t, t);
        const uint16_t* v = vs + t * hd;
#pragma unroll
        for (int i = 0; i < kMaxPerLane; ++i) {
          const int d = lane + kWarp * i;
          if (d < hd) acc_t[i] += w * KvToF32<kF16>(v[d]);
        }
      }
      // 3. Into the running state.
      if (!have) {
        m = m_t;
        l = l_t;
#pragma unroll
        for (int i = 0; i < kMaxPerLane; ++i) acc[i] = acc_t[i];
        have = true;
        continue;
      }
      float scale_a;
      float scale_b;
      MergeSoftmaxStates(&m, &l, m_t, l_t, &scale_a, &scale_b);
#pragma unroll
      for (int i = 0; i < kMaxPerLane; ++i) acc[i] = acc[i] * scale_a + acc_t[i] * scale_b;
    }
  }

  if (scratch == nullptr) {
    float* out = p.out + r * p.ldo + int64_t{h} * hd;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int d = lane + kWarp * i;
      if (d < hd) out[d] = SoftmaxOutput(acc[i], l);
    }
    return;
  }
  float* state = scratch + item * (int64_t{hd} + 2);  // items are numbered within the chunk
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int d = lane + kWarp * i;
    if (d < hd) state[d] = acc[i];
  }
  if (lane == 0) {
    state[hd] = m;
    state[hd + 1] = l;
  }
}

// Merge: block (row_local, head) combines the n_splits states of scratch[row_local][head]
// in split order, skipping empty ones (m == -inf), and writes the output row.
__global__ void __launch_bounds__(cuda::kAttnMergeThreads)
    MergeKernel(const float* __restrict__ scratch, float* __restrict__ out, int64_t ldo,
                int64_t row0, int n_heads, int hd, int64_t n_splits) {
  const int64_t rh = blockIdx.x;
  const int64_t r = row0 + rh / n_heads;
  const int h = static_cast<int>(rh % n_heads);
  const int64_t stride = int64_t{hd} + 2;
  const float* states = scratch + rh * n_splits * stride;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float m = -INFINITY;
    float l = 0.0f;
    float acc = 0.0f;
    bool have = false;
    for (int64_t z = 0; z < n_splits; ++z) {
      const float* st = states + z * stride;
      const float m_z = st[hd];
      if (m_z == -INFINITY) continue;
      if (!have) {
        m = m_z;
        l = st[hd + 1];
        acc = st[d];
        have = true;
        continue;
      }
      float scale_a;
      float scale_b;
      MergeSoftmaxStates(&m, &l, m_z, st[hd + 1], &scale_a, &scale_b);
      acc = acc * scale_a + st[d] * scale_b;
    }
    out[r * ldo + int64_t{h} * hd + d] = SoftmaxOutput(acc, l);
  }
}

bool Aligned(const void* ptr, uintptr_t a) { return reinterpret_cast<uintptr_t>(ptr) % a == 0; }

// The layout and layer checks both launchers share.
bool ValidLayout(const KvArenaView& kv, int layer) {
  const KvLayout& l = kv.layout;
  return (l.dtype == DType::kF16 || l.dtype == DType::kBF16) && l.n_layers > 0 && layer >= 0 &&
         layer < l.n_layers && l.n_kv_heads > 0 && l.head_dim > 0 && l.block_tokens > 0 &&
         kv.n_slots > 0 && kv.base != nullptr && Aligned(kv.base, 2);
}

bool ValidSeqs(const BatchSeqs& s) {
  return s.n_seqs >= 0 && s.q_start != nullptr && s.positions != nullptr &&
         s.table_start != nullptr && s.block_table != nullptr;
}

dim3 ToDim3(const cuda::Dim3& d) {
  return dim3(static_cast<unsigned>(d.x), static_cast<unsigned>(d.y), static_cast<unsigned>(d.z));
}

// AttentionMass: one block per (observed row, head). Three passes over the row's keys, each
// thread taking every kMassThreads-th key: the largest score, the softmax's sum, then each
// key's weight added to mass[key] (float atomics: the sum's order, and so its last bits,
// vary from run to run, unlike the CPU version's).
constexpr int kMassThreads = 256;

__device__ float BlockReduce(float v, float* shared, bool take_max) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kMassThreads / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride) {
      const float a = shared[threadIdx.x];
      const float b = shared[threadIdx.x + stride];
      shared[threadIdx.x] = take_max ? fmaxf(a, b) : a + b;
    }
    __syncthreads();
  }
  const float out = shared[0];
  __syncthreads();
  return out;
}

template <bool kF16>
__global__ void __launch_bounds__(kMassThreads)
    AttentionMassKernel(AttentionParams p, int64_t first_row, float* mass) {
  __shared__ float q[cuda::kAttnMaxHeadDim];
  __shared__ float reduce[kMassThreads];
  const int64_t r = first_row + blockIdx.x;
  const int h = static_cast<int>(blockIdx.y);
  const int s = SeqOfRow(p.seqs.q_start, p.seqs.n_seqs, r);
  if (s < 0) return;  // the same for the whole block
  const KvLayout& l = p.kv.layout;
  const int hd = l.head_dim;
  const int g = h / (p.n_heads / l.n_kv_heads);
  const int64_t pos = p.seqs.positions[r];
  const int64_t lo = AttnKeyLo(pos, p.sliding_window);
  const int64_t hi = AttnKeyHi(pos, p.seqs.kv_len[s]);
  if (hi < lo) return;
  for (int d = threadIdx.x; d < hd; d += kMassThreads) q[d] = p.q[r * p.ldq + int64_t{h} * hd + d];
  __syncthreads();
  const int32_t* table = p.seqs.block_table + p.seqs.table_start[s];
  const auto* arena = reinterpret_cast<const uint16_t*>(p.kv.base);
  auto score = [&](int64_t j) {
    const uint16_t* k = arena + KvRowIndex(l, table, p.layer, 0, g, j);
    float dot = 0.0f;
    for (int d = 0; d < hd; ++d) dot += q[d] * KvToF32<kF16>(k[d]);
    return p.scale * dot;
  };
  float m = -INFINITY;
  for (int64_t j = lo + threadIdx.x; j <= hi; j += kMassThreads) m = fmaxf(m, score(j));
  m = BlockReduce(m, reduce, /*take_max=*/true);
  float sum = 0.0f;
  for (int64_t j = lo + threadIdx.x; j <= hi; j += kMassThreads) sum += __expf(score(j) - m);
  sum = BlockReduce(sum, reduce, /*take_max=*/false);
  for (int64_t j = lo + threadIdx.x; j <= hi; j += kMassThreads) {
    atomicAdd(mass + j, __expf(score(j) - m) / sum);
  }
}

}  // namespace

int CudaKvWrite(const KvWriteParams& p, int64_t total_rows, void* stream) {
  if (total_rows < 0) return cudaErrorInvalidValue;
  if (total_rows == 0) return cudaSuccess;
  const KvLayout& l = p.kv.layout;
  if (!ValidLayout(p.kv, p.layer) || !ValidSeqs(p.seqs)) return cudaErrorInvalidValue;
  const int64_t width = int64_t{l.n_kv_heads} * l.head_dim;
  if (p.k == nullptr || p.v == nullptr || p.ldk < width || p.ldv < width) {
    return cudaErrorInvalidValue;
  }
  if (!Aligned(p.k, 4) || !Aligned(p.v, 4)) return cudaErrorInvalidValue;
  const cuda::LaunchConfig c = cuda::KvWriteLaunch(total_rows, l.n_kv_heads, l.head_dim);
  const auto s = static_cast<cudaStream_t>(stream);
  const int64_t chunks = cuda::KvWriteChunks(l.n_kv_heads, l.head_dim);
  if (l.dtype == DType::kF16) {
    KvWriteKernel<true><<<ToDim3(c.grid), ToDim3(c.block), 0, s>>>(p, chunks);
  } else {
    KvWriteKernel<false><<<ToDim3(c.grid), ToDim3(c.block), 0, s>>>(p, chunks);
  }
  return static_cast<int>(cudaGetLastError());
}

int CudaPagedAttention(const AttentionParams& p, int64_t total_rows, int64_t max_kv_len,
                       void* scratch, int64_t scratch_bytes, void* stream) {
  if (total_rows < 0 || max_kv_len < 0) return cudaErrorInvalidValue;
  if (total_rows == 0) return cudaSuccess;
  const KvLayout& l = p.kv.layout;
  if (!ValidLayout(p.kv, p.layer) || !ValidSeqs(p.seqs) || p.seqs.kv_len == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (l.head_dim > cuda::kAttnMaxHeadDim || p.n_heads < 1 || p.n_heads % l.n_kv_heads != 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t width = int64_t{p.n_heads} * l.head_dim;
  if (p.q == nullptr || p.out == nullptr || p.ldq < width || p.ldo < width) {
    return cudaErrorInvalidValue;
  }
  if (!Aligned(p.q, 4) || !Aligned(p.out, 4)) return cudaErrorInvalidValue;
  const cuda::AttentionPlan plan =
      cuda::PlanAttention(total_rows, p.n_heads, l.head_dim, max_kv_len, scratch_bytes);
  float* states = nullptr;
  if (plan.n_splits > 1) {
    if (scratch == nullptr || scratch_bytes < 0 || !Aligned(scratch, 4)) {
      return cudaErrorInvalidValue;
    }
    states = static_cast<float*>(scratch);
  }
  if (plan.rows_per_launch < 1) return cudaErrorInvalidValue;

  // 16-byte key loads when every K row starts 16-byte aligned: head_dim a multiple of 8
  // elements (every tile and row offset is a multiple of head_dim) and an aligned arena.
  const bool vec8 = l.head_dim % 8 == 0 && Aligned(p.kv.base, 16);
  const auto s = static_cast<cudaStream_t>(stream);
  for (int64_t row0 = 0; row0 < total_rows; row0 += plan.rows_per_launch) {
    const int64_t rows =
        total_rows - row0 < plan.rows_per_launch ? total_rows - row0 : plan.rows_per_launch;
    const cuda::LaunchConfig a = cuda::AttendLaunch(rows, p.n_heads, plan.n_splits, l.head_dim);
    int err = cudaSuccess;
    auto launch = [&](auto kernel) {
      if (a.shared_bytes > 48 * 1024) {
        err = static_cast<int>(cudaFuncSetAttribute(
            kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(a.shared_bytes)));
        if (err != cudaSuccess) return;
      }
      kernel<<<ToDim3(a.grid), ToDim3(a.block), static_cast<size_t>(a.shared_bytes), s>>>(
          p, row0, rows, plan.n_splits, states);
      err = static_cast<int>(cudaGetLastError());
    };
    if (l.dtype == DType::kF16) {
      vec8 ? launch(AttendKernel<true, true>) : launch(AttendKernel<true, false>);
    } else {
      vec8 ? launch(AttendKernel<false, true>) : launch(AttendKernel<false, false>);
    }
    if (err != cudaSuccess) return err;
    if (states == nullptr) continue;
    const cuda::LaunchConfig mc = cuda::MergeLaunch(rows, p.n_heads);
    MergeKernel<<<ToDim3(mc.grid), ToDim3(mc.block), 0, s>>>(states, p.out, p.ldo, row0, p.n_heads,
                                                             l.head_dim, plan.n_splits);
    err = static_cast<int>(cudaGetLastError());
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

int CudaAttentionMass(const AttentionParams& p, int64_t first_row, int64_t total_rows, float* mass,
                      void* stream) {
  if (total_rows < 0 || first_row < 0) return cudaErrorInvalidValue;
  if (first_row >= total_rows) return cudaSuccess;
  const KvLayout& l = p.kv.layout;
  if (!ValidLayout(p.kv, p.layer) || !ValidSeqs(p.seqs) || p.seqs.kv_len == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (l.head_dim > cuda::kAttnMaxHeadDim || p.n_heads < 1 || p.n_heads % l.n_kv_heads != 0) {
    return cudaErrorInvalidValue;
  }
  if (p.q == nullptr || mass == nullptr || p.ldq < int64_t{p.n_heads} * l.head_dim ||
      !Aligned(p.q, 4) || !Aligned(mass, 4)) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid(static_cast<unsigned>(total_rows - first_row), static_cast<unsigned>(p.n_heads));
  auto* st = static_cast<cudaStream_t>(stream);
  if (l.dtype == DType::kF16) {
    AttentionMassKernel<true><<<grid, kMassThreads, 0, st>>>(p, first_row, mass);
  } else {
    AttentionMassKernel<false><<<grid, kMassThreads, 0, st>>>(p, first_row, mass);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace mnemo::kernels
