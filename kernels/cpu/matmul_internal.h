// Internals of the fast CPU MatMul (kernels/cpu/matmul*.cc): the quantized activation
// layout, the job description handed to the per-ISA kernels, and their entry points.
//
// Quantized weights are multiplied with 16-bit activations: each row of x is cut into
// 32-element blocks, block b gets d_b = amax_b / 32767 and q = round-half-even(x * (1 / d_b)),
// so every block product is an exact integer sum and only the per-block scaling is in f32.
// Four consecutive blocks A, B, C, D (128 elements) form an ActGroup, laid out so that each
// 64-byte vector v (v = 0..3) holds quants 8v..8v+7 of every block:
//
//   qs       [128] int16  | A0..7 | B0..7 | C0..7 | D0..7 | A8..15 | ... | D24..31 |
//   nsum_lo  [16]  int32  lane 4j: minus the sum of block j's quants 0..15; 0 elsewhere
//   nsum_hi  [16]  int32  lane 4j: minus the sum of block j's quants 16..31
//   d        [16]  f32    lanes 4j..4j+3: d of block j
//   dsum     [16]  f32    lane 4j: d_j * (sum of block j's quants); 0 elsewhere
//
// A 16-bit dot product (vpdpwssd / vpmaddwd) of the weight quants widened to int16 and
// arranged the same way puts block j's partial sums in int32 lanes 4j..4j+3, so per-block
// scales are per-lane vectors. Block sums cannot overflow: |q_x| <= 32767 and the widened
// weights are at most 255 (32 * 255 * 32767 < 2^28). Weights stored as q + bias (Q8_0 as
// q + 128, Q4_0 as q + 8, Q6_K as q + 32) start the lanes at bias * nsum, which removes
// bias * sum(x quants) exactly; a weight block's offset (Q4_1 m, K-quant -dmin * m)
// multiplies dsum. Blocks past the end of a row are all zero and add exactly nothing. Fast
// kernels parallelise over output columns only; each (m, n) output is one function of row
// m of x and row n of w, whatever the tile it falls in (the tiled kernels run the same
// instruction sequence on every accumulator).
#pragma once

#include <cstdint>

#include "kernels/dequant_math.h"
#include "kernels/dtype.h"
#include "kernels/half.h"

namespace mnemo::kernels::internal {

struct alignas(64) ActGroup {
  int16_t qs[128];
  int32_t nsum_lo[16];
  int32_t nsum_hi[16];
  float d[16];
  float dsum[16];
};
static_assert(sizeof(ActGroup) == 512);

inline constexpr int kActGroupElems = 128;
inline constexpr int kActGroupBlocks = 4;

// Quant i (0..31) of block j (0..3) of a group.
inline int ActQuant(const ActGroup& g, int j, int i) { return g.qs[32 * (i / 8) + 8 * j + i % 8]; }

// The largest activation quant magnitude.
inline constexpr float kActQuantMax = 32767.0f;

// Groups per quantized activation row of k elements (k a multiple of 32).
inline int64_t ActGroupsPerRow(int64_t k) { return (k + kActGroupElems - 1) / kActGroupElems; }

// Quantizes one row of k floats (k a multiple of 32) into ActGroupsPerRow(k) groups. The
// result is the same bits on every code path.
void QuantizeActRow(const float* x, int64_t k, ActGroup* out);

struct MatMulJob {
  DType dtype = DType::kF32;
  const uint8_t* w = nullptr;  // row n at w + n * w_row_bytes
  int64_t w_row_bytes = 0;
  int64_t k = 0;
  int64_t rows = 0;
  const float* x = nullptr;  // f32/f16/bf16 weights: the activations as given
  int64_t ldx = 0;
  const ActGroup* xq = nullptr;  // quantized weights: row m at xq + m * xq_groups
  int64_t xq_groups = 0;
  const float* bias = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;
};

// The per-sub-block step d * sc[j] and offset -(dmin * m[j]) of a Q4_K / Q5_K super-block:
// weight i of sub-block j is step[j] * q + offset[j].
inline void KSubBlockScales(const uint8_t* scales, uint16_t d16, uint16_t dmin16, float* step,
                            float* offset) {
  const float d = F16ToF32(d16);
  const float dmin = F16ToF32(dmin16);
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    KScaleMin(scales, j, &sc, &m);
    step[j] = d * static_cast<float>(sc);
    offset[j] = -(dmin * static_cast<float>(m));
  }
}

// Software prefetch for a tile that streams its weight rows once (few activation rows): the
// C rows of a tile are adjacent, so while it runs its `steps` steps, step s prefetches its
// share of the next tile's bytes, starting kPrefetchBytes past that tile's start. The
// hardware prefetchers stop at every 4 KiB page; on the AVX-512 path this took batch-1
// decode from 43 % to 61 % of the bandwidth bound (0, 1024, 2048 and 4096 bytes tried;
// bench/e2e_bench.cc). Prefetching past the end of the weights is harmless.
class TilePrefetch {
 public:
  static constexpr int64_t kPrefetchBytes = 1024;

  TilePrefetch(const uint8_t* tile, int64_t tile_bytes, int64_t steps)
      : ahead_(tile + tile_bytes + kPrefetchBytes),
        share_(steps > 0 ? (tile_bytes + steps - 1) / steps : 0) {}

  void Step(int64_t s) const {
    for (int64_t off = 0; off < share_; off += 64) {
      __builtin_prefetch(ahead_ + s * share_ + off, /*rw=*/0, /*locality=*/3);
    }
  }

 private:
  const uint8_t* ahead_;
  int64_t share_;
};

// A register-blocked kernel computing the r x c outputs y[m0 .. m0+r)[n0 .. n0+c).
using TileFn = void (*)(const MatMulJob& job, int64_t m0, int64_t n0);

// The tile kernels of one path and weight dtype: fn[r][c] for 1 <= r <= rows and
// 1 <= c <= cols (the largest tile, used wherever it fits).
inline constexpr int kMaxTileDim = 8;
struct TileSet {
  int rows = 1;
  int cols = 1;
  TileFn fn[kMaxTileDim + 1][kMaxTileDim + 1] = {};
  // When set, runs columns [n_begin, n_end) instead of RunTiles (e.g. decoding the
  // weights once for many rows); it must produce the same bits as RunTiles.
  void (*columns)(const TileSet& tiles, const MatMulJob& job, int64_t n_begin,
                  int64_t n_end) = nullptr;
};

// Fills fn[r][c] for every r <= R, c <= C with Tile<W, r, c> (Tile a class template with
// a static Run).
template <template <class, int, int> class Tile, class W, int R, int C, int kCols>
void FillTiles(TileSet& t) {
  t.fn[R][C] = &Tile<W, R, C>::Run;
  if constexpr (C > 1) {
    FillTiles<Tile, W, R, C - 1, kCols>(t);
  } else if constexpr (R > 1) {
    FillTiles<Tile, W, R - 1, kCols, kCols>(t);
  }
}

template <template <class, int, int> class Tile, class W, int R, int C>
TileSet MakeTileSet() {
  static_assert(R <= kMaxTileDim && C <= kMaxTileDim);
  TileSet t;
  t.rows = R;
  t.cols = C;
  FillTiles<Tile, W, R, C, C>(t);
  return t;
}

// Runs the tiles over all rows and the columns [n_begin, n_end): activation rows in blocks
// that stay in cache while the block's weight columns stream past, full tiles wherever
// they fit and smaller ones at the edges.
void RunTiles(const TileSet& tiles, const MatMulJob& job, int64_t n_begin, int64_t n_end);

// The tile kernels of the SIMD paths for dtype t (x86-64 only).
const TileSet& TilesAvx2(DType t);
const TileSet& TilesAvx512(DType t);
const TileSet& QuantTilesAvx2(DType t);
const TileSet& QuantTilesAvx512(DType t);

// The portable path: computes y[m][n] for every m < job.rows and n in [n_begin, n_end).
void MatMulColumnsScalar(const MatMulJob& job, int64_t n_begin, int64_t n_end);

}  // namespace mnemo::kernels::internal
