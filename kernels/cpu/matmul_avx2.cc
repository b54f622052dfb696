// AVX2 + FMA + F16C MatMul kernels (kernels/cpu/matmul_internal.h).
//
// Quantized weights: one step handles one 32-element block (half an ActGroup). vpmaddubsw
// multiplies unsigned weight quants with the signed activation quants into int16 pairs
// (no saturation: |pair| <= 2 * 63 * 127 for the <= 6-bit formats; Q8_0 uses |w| and
// sign-transferred activations, <= 2 * 128 * 127), vpmaddwd with ones widens to 8 int32
// lanes (lanes 4j..4j+3 cover bytes 16j..16j+15), the stored weight bias is removed with
// ActGroup::nsum, and per output, in this order:
//   acc = fmadd(cvt(lanes), w_scale * x_scale, acc)
//   acc = fmadd(w_offset, x_dsum, acc)                 (Q4_1 / Q4_K / Q5_K only)
// then y = sum of the 8 lanes in a fixed order (+ bias). Float weights: 8-lane FMAs.
// Tiles of R activation rows x C weight rows run the same sequence on every accumulator.
#include <algorithm>
#include <cstdint>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/quant_blocks.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define MNEMO_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MNEMO_AVX2_INLINE MNEMO_AVX2 inline __attribute__((always_inline))

namespace mnemo::kernels::internal {
namespace {

struct WeightBlock {
  __m256i q;
  __m256 step;
  __m256 offset;
};

MNEMO_AVX2_INLINE float ReduceAdd(__m256 v) {
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

MNEMO_AVX2_INLINE __m256 BroadcastF16(uint16_t h) { return _mm256_set1_ps(_cvtsh_ss(h)); }

// 16 nibble bytes -> 32 quants [low nibbles, high nibbles].
MNEMO_AVX2_INLINE __m256i UnpackNibbles(const uint8_t* p) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(0x0f);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(t, 4), mask), _mm_and_si128(t, mask));
}

struct Q8_0Avx2 {
  static constexpr int kBlocksPerStep = 1;
  static constexpr bool kSigned = true;  // quants are signed: use the sign trick
  static constexpr int kNsumShift = -1;
  static constexpr bool kHasOffset = false;
  using Step = const BlockQ8_0*;
  MNEMO_AVX2_INLINE static Step Load(const uint8_t* row, int64_t s) {
    return reinterpret_cast<const BlockQ8_0*>(row) + s;
  }
  MNEMO_AVX2_INLINE static WeightBlock Block(const Step& b, int) {
    return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qs)), BroadcastF16(b->d),
            _mm256_setzero_ps()};
  }
};

struct Q4_0Avx2 {
  static constexpr int kBlocksPerStep = 1;
  static constexpr bool kSigned = false;
  static constexpr int kNsumShift = 3;  // quants stored as q + 8
  static constexpr bool kHasOffset = false;
  using Step = const BlockQ4_0*;
  MNEMO_AVX2_INLINE static Step Load(const uint8_t* row, int64_t s) {
    return reinterpret_cast<const BlockQ4_0*>(row) + s;
  }
  MNEMO_AVX2_INLINE static WeightBlock Block(const Step& b, int) {
    return {UnpackNibbles(b->qs), BroadcastF16(b->d), _mm256_setzero_ps()};
  }
};

struct Q4_1Avx2 {
  static constexpr int kBlocksPerStep = 1;
  static constexpr bool kSigned = false;
  static constexpr int kNsumShift = -1;
  static constexpr bool kHasOffset = true;
  using Step = const BlockQ4_1*;
  MNEMO_AVX2_INLINE static Step Load(const uint8_t* row, int64_t s) {
    return reinterpret_cast<const BlockQ4_1*>(row) + s;
  }
  MNEMO_AVX2_INLINE static WeightBlock Block(const Step& b, int) {
    return {UnpackNibbles(b->qs), BroadcastF16(b->d), BroadcastF16(b->m)};
  }
};

// K-quants: a step is one 256-element super-block (eight 32-element blocks).
struct KScalesAvx2 {
  alignas(32) float step[8];
  alignas(32) float offset[8];
};

struct Q4_KAvx2 {
  static constexpr int kBlocksPerStep = 8;
  static constexpr bool kSigned = false;
  static constexpr int kNsumShift = -1;
  static constexpr bool kHasOffset = true;
  struct Step {
    const uint8_t* qs;
    KScalesAvx2 s;
  };
  MNEMO_AVX2_INLINE static Step Load(const uint8_t* row, int64_t s) {
    const BlockQ4_K& b = reinterpret_cast<const BlockQ4_K*>(row)[s];
    Step st;
    st.qs = b.qs;
    KSubBlockScales(b.scales, b.d, b.dmin, st.s.step, st.s.offset);
    return st;
  }
  MNEMO_AVX2_INLINE static __m256i Nibbles(const uint8_t* qs, int j) {
    const __m256i t = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * (j / 2)));
    const __m256i v = (j % 2 == 0) ? t : _mm256_srli_epi16(t, 4);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
  }
  MNEMO_AVX2_INLINE static WeightBlock Block(const Step& st, int j) {
    return {Nibbles(st.qs, j), _mm256_set1_ps(st.s.step[j]), _mm256_set1_ps(st.s.offset[j])};
  }
};

struct Q5_KAvx2 {
  static constexpr int kBlocksPerStep = 8;
  static constexpr bool kSigned = false;
  static constexpr int kNsumShift = -1;
  static constexpr bool kHasOffset = true;
  struct Step {
    const uint8_t* qs;
    const uint8_t* qh;
    KScalesAvx2 s;
  };
  MNEMO_AVX2_INLINE static Step Load(const uint8_t* row, int64_t s) {
    const BlockQ5_K& b = reinterpret_cast<const BlockQ5_K*>(row)[s];
    Step st;
    st.qs = b.qs;
    st.qh = b.qh;
    KSubBlockScales(b.scales, b.d, b.dmin, st.s.step, st.s.offset);
    return st;
  }
  MNEMO_AVX2_INLINE static WeightBlock Block(const Step& st, int j) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(st.qh));
    const __m256i bit = _mm256_set1_epi8(static_cast<char>(1 << j));
    const __m256i high =
        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit), _mm256_set1_epi8(16));
    return {_mm256_or_si256(Q4_KAvx2::Nibbles(st.qs, j), high), _mm256_set1_ps(st.s.step[j]),
            _mm256_set1_ps(st.s.offset[j])};
  }
};

struct Q6_KAvx2 {
  static constexpr int kBlocksPerStep = 8;
  static constexpr bool kSigned = false;
  static constexpr int kNsumShift = 5;  // quants stored as q + 32
  static constexpr bool kHasOffset = false;
  struct Step {
    const BlockQ6_K* b;
    alignas(32) float scales[16];  // d * scales[j]
  };
  MNEMO_AVX2_INLINE static Step Load(const uint8_t* row, int64_t s) {
    Step st;
    st.b = reinterpret_cast<const BlockQ6_K*>(row) + s;
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(st.b->d));
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(st.b->scales));
    _mm256_store_ps(st.scales, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))));
    _mm256_store_ps(
        st.scales + 8,
        _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)))));
    return st;
  }
  MNEMO_AVX2_INLINE static WeightBlock Block(const Step& st, int j) {
    // Block j = elements 32j .. 32j + 31: half h = j / 4, k = j % 4 (quant_blocks.h).
    const int h = j / 4;
    const int k = j % 4;
    const __m256i ql =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(st.b->ql + 64 * h + 32 * (k % 2)));
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(st.b->qh + 32 * h));
    const __m256i low =
        _mm256_and_si256(k < 2 ? ql : _mm256_srli_epi16(ql, 4), _mm256_set1_epi8(0x0f));
    // bits 2k+1..2k of qh moved to bits 5..4
    __m256i high;
    if (k < 2) {
      high = _mm256_slli_epi16(qh, 4 - 2 * k);
    } else {
      high = _mm256_srli_epi16(qh, 2 * k - 4);
    }
    high = _mm256_and_si256(high, _mm256_set1_epi8(0x30));
    const __m128 lo_scale = _mm_set1_ps(st.scales[2 * j]);
    const __m128 hi_scale = _mm_set1_ps(st.scales[2 * j + 1]);
    return {_mm256_or_si256(low, high), _mm256_set_m128(hi_scale, lo_scale), _mm256_setzero_ps()};
  }
};

template <int R, int C, class W>
MNEMO_AVX2_INLINE void Accumulate(const ActGroup* const* x, int64_t block, const WeightBlock* w,
                                  __m256 (&acc)[R][C]) {
  const int64_t g = block / 2;
  const int half = static_cast<int>(block % 2);
  const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const ActGroup& a = x[r][g];
    const __m256i qx = _mm256_load_si256(reinterpret_cast<const __m256i*>(a.qs + 32 * half));
    const __m256 dx = _mm256_load_ps(a.d + 8 * half);
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      __m256i pairs;
      if constexpr (W::kSigned) {
        pairs =
            _mm256_maddubs_epi16(_mm256_sign_epi8(w[c].q, w[c].q), _mm256_sign_epi8(qx, w[c].q));
      } else {
        pairs = _mm256_maddubs_epi16(w[c].q, qx);
      }
      __m256i dot = _mm256_madd_epi16(pairs, ones);
      if constexpr (W::kNsumShift >= 0) {
        const __m256i nsum = _mm256_load_si256(reinterpret_cast<const __m256i*>(a.nsum + 8 * half));
        dot = _mm256_add_epi32(dot, _mm256_slli_epi32(nsum, W::kNsumShift));
      }
      acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(w[c].step, dx), acc[r][c]);
      if constexpr (W::kHasOffset) {
        acc[r][c] = _mm256_fmadd_ps(w[c].offset, _mm256_load_ps(a.dsum + 8 * half), acc[r][c]);
      }
    }
  }
}

template <int R, int C, class W>
MNEMO_AVX2 void QuantTile(const MatMulJob& job, int64_t m0, int64_t n0) {
  const uint8_t* wrow[C];
  for (int c = 0; c < C; ++c) wrow[c] = job.w + (n0 + c) * job.w_row_bytes;
  const ActGroup* x[R];
  for (int r = 0; r < R; ++r) x[r] = job.xq + (m0 + r) * job.xq_groups;
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  }
  const int64_t steps = job.k / 32 / W::kBlocksPerStep;
  for (int64_t s = 0; s < steps; ++s) {
    typename W::Step st[C];
    for (int c = 0; c < C; ++c) st[c] = W::Load(wrow[c], s);
#pragma GCC unroll 8
    for (int j = 0; j < W::kBlocksPerStep; ++j) {
      WeightBlock w[C];
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) w[c] = W::Block(st[c], j);
      Accumulate<R, C, W>(x, s * W::kBlocksPerStep + j, w, acc);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      float v = ReduceAdd(acc[r][c]);
      if (job.bias != nullptr) v += job.bias[n0 + c];
      job.y[(m0 + r) * job.ldy + n0 + c] = v;
    }
  }
}

struct F32Avx2 {
  using T = float;
  MNEMO_AVX2_INLINE static __m256 Load(const float* p) { return _mm256_loadu_ps(p); }
};

struct F16Avx2 {
  using T = uint16_t;
  MNEMO_AVX2_INLINE static __m256 Load(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
};

struct BF16Avx2 {
  using T = uint16_t;
  MNEMO_AVX2_INLINE static __m256 Load(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
};

// The float tile's last partial step: the k % 8 remaining elements, zero-padded.
template <class W>
MNEMO_AVX2_INLINE __m256 LoadTail(const typename W::T* p, int64_t n) {
  alignas(32) typename W::T buf[8] = {};
  for (int64_t i = 0; i < n; ++i) buf[i] = p[i];
  return W::Load(buf);
}

template <int R, int C, class W>
MNEMO_AVX2 void FloatTile(const MatMulJob& job, int64_t m0, int64_t n0) {
  using T = typename W::T;
  const T* wrow[C];
  for (int c = 0; c < C; ++c)
    wrow[c] = reinterpret_cast<const T*>(job.w + (n0 + c) * job.w_row_bytes);
  const float* x[R];
  for (int r = 0; r < R; ++r) x[r] = job.x + (m0 + r) * job.ldx;
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  }
  const int64_t k = job.k;
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    __m256 w[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) w[c] = W::Load(wrow[c] + i);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_loadu_ps(x[r] + i);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(xv, w[c], acc[r][c]);
    }
  }
  if (i < k) {
    __m256 w[C];
    for (int c = 0; c < C; ++c) w[c] = LoadTail<W>(wrow[c] + i, k - i);
    for (int r = 0; r < R; ++r) {
      const __m256 xv = LoadTail<F32Avx2>(x[r] + i, k - i);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(xv, w[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      float v = ReduceAdd(acc[r][c]);
      if (job.bias != nullptr) v += job.bias[n0 + c];
      job.y[(m0 + r) * job.ldy + n0 + c] = v;
    }
  }
}

template <class W>
concept FloatWeights = requires {
  typename W::T;
};

template <int R, int C, class W>
MNEMO_AVX2_INLINE void Tile(const MatMulJob& job, int64_t m0, int64_t n0) {
  if constexpr (FloatWeights<W>) {
    FloatTile<R, C, W>(job, m0, n0);
  } else {
    QuantTile<R, C, W>(job, m0, n0);
  }
}

constexpr int kTileRows = 4;
constexpr int kTileCols = 2;
constexpr int64_t kRowBlock = 64;

template <class W, int R>
MNEMO_AVX2 void TileRow(const MatMulJob& job, int64_t m0, int64_t n0, int64_t cols) {
  if (cols == 2) return Tile<R, 2, W>(job, m0, n0);
  Tile<R, 1, W>(job, m0, n0);
}

template <class W>
MNEMO_AVX2 void Columns(const MatMulJob& job, int64_t n_begin, int64_t n_end) {
  for (int64_t mb = 0; mb < job.rows; mb += kRowBlock) {
    const int64_t mb_end = std::min(job.rows, mb + kRowBlock);
    for (int64_t n = n_begin; n < n_end; n += kTileCols) {
      const int64_t cols = std::min<int64_t>(kTileCols, n_end - n);
      int64_t m = mb;
      for (; m + kTileRows <= mb_end; m += kTileRows) TileRow<W, 4>(job, m, n, cols);
      switch (mb_end - m) {
        case 3:
          TileRow<W, 3>(job, m, n, cols);
          break;
        case 2:
          TileRow<W, 2>(job, m, n, cols);
          break;
        case 1:
          TileRow<W, 1>(job, m, n, cols);
          break;
        default:
          break;
      }
    }
  }
}

}  // namespace

void MatMulColumnsAvx2(const MatMulJob& job, int64_t n_begin, int64_t n_end) {
  switch (job.dtype) {
    case DType::kF32:
      return Columns<F32Avx2>(job, n_begin, n_end);
    case DType::kF16:
      return Columns<F16Avx2>(job, n_begin, n_end);
    case DType::kBF16:
      return Columns<BF16Avx2>(job, n_begin, n_end);
    case DType::kQ8_0:
      return Columns<Q8_0Avx2>(job, n_begin, n_end);
    case DType::kQ4_0:
      return Columns<Q4_0Avx2>(job, n_begin, n_end);
    case DType::kQ4_1:
      return Columns<Q4_1Avx2>(job, n_begin, n_end);
    case DType::kQ4_K:
      return Columns<Q4_KAvx2>(job, n_begin, n_end);
    case DType::kQ5_K:
      return Columns<Q5_KAvx2>(job, n_begin, n_end);
    case DType::kQ6_K:
      return Columns<Q6_KAvx2>(job, n_begin, n_end);
    default:
      return MatMulColumnsScalar(job, n_begin, n_end);
  }
}

}  // namespace mnemo::kernels::internal

#else  // not x86-64: never selected (ActiveCpuIsa() is kScalar)

namespace mnemo::kernels::internal {
void MatMulColumnsAvx2(const MatMulJob& job, int64_t n_begin, int64_t n_end) {
  MatMulColumnsScalar(job, n_begin, n_end);
}
}  // namespace mnemo::kernels::internal

#endif
