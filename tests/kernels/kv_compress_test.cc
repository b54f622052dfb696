// KV int8 compression (kernels/kv_compress.h): the per-element math (ties to even, clamps),
// the compressed layout (scales first, tiles in block order, exact size, no write past it),
// the per-element round-trip error bound on random blocks at awkward layouts and both
// dtypes, all-zero tiles, a tile with one outlier, and deterministic bytes.
#include "kernels/kv_compress.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/half.h"

namespace mnemo::kernels {
namespace {

constexpr uint8_t kGuard = 0x5a;
constexpr size_t kGuardBytes = 64;

KvLayout Layout(int layers, int heads, int head_dim, int block_tokens, DType t) {
  return KvLayout{.n_layers = layers,
                  .n_kv_heads = heads,
                  .head_dim = head_dim,
                  .block_tokens = block_tokens,
                  .dtype = t};
}

uint16_t ToBits(float x, DType t) { return t == DType::kF16 ? F32ToF16(x) : F32ToBF16(x); }
float FromBits(uint16_t b, DType t) { return t == DType::kF16 ? F16ToF32(b) : BF16ToF32(b); }

std::string Name(const KvLayout& l) {
  return std::string(l.dtype == DType::kF16 ? "f16" : "bf16") + " layers " +
         std::to_string(l.n_layers) + " heads " + std::to_string(l.n_kv_heads) + " head_dim " +
         std::to_string(l.head_dim) + " block_tokens " + std::to_string(l.block_tokens);
}

// A random block: every tile normal with its own magnitude (10^-3 .. 10^2, so both f16's
// subnormal-adjacent range and large values appear), never an exact zero.
std::vector<uint16_t> RandomBlock(const KvLayout& l, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> log_mag(-3.0f, 2.0f);
  std::vector<uint16_t> block(static_cast<size_t>(l.block_elems()));
  for (int64_t t = 0; t < KvCompressedTiles(l); ++t) {
    const float mag = std::pow(10.0f, log_mag(rng));
    for (int64_t i = 0; i < l.tile_elems(); ++i) {
      float x = normal(rng) * mag;
      if (FromBits(ToBits(x, l.dtype), l.dtype) == 0.0f) x = mag;
      block[static_cast<size_t>(t * l.tile_elems() + i)] = ToBits(x, l.dtype);
    }
  }
  return block;
}

// Compressed bytes followed by kGuardBytes guard bytes, which must stay untouched.
std::vector<uint8_t> Compress(const KvLayout& l, const std::vector<uint16_t>& block,
                              uint8_t fill = 0xee) {
  std::vector<uint8_t> out(static_cast<size_t>(CompressedBlockBytes(l)) + kGuardBytes, fill);
  std::fill(out.end() - kGuardBytes, out.end(), kGuard);
  CompressKvBlock(l, reinterpret_cast<const uint8_t*>(block.data()), out.data());
  for (size_t i = out.size() - kGuardBytes; i < out.size(); ++i) {
    EXPECT_EQ(out[i], kGuard) << "write past the compressed block at byte " << i;
  }
  out.resize(out.size() - kGuardBytes);
  return out;
}

std::vector<uint16_t> Decompress(const KvLayout& l, const std::vector<uint8_t>& c) {
  std::vector<uint16_t> block(static_cast<size_t>(l.block_elems()) + kGuardBytes / 2, 0xabcd);
  DecompressKvBlock(l, c.data(), reinterpret_cast<uint8_t*>(block.data()));
  for (size_t i = static_cast<size_t>(l.block_elems()); i < block.size(); ++i) {
    EXPECT_EQ(block[i], 0xabcd) << "write past the block at element " << i;
  }
  block.resize(static_cast<size_t>(l.block_elems()));
  return block;
}

float ScaleOf(const std::vector<uint8_t>& c, int64_t tile) {
  float s;
  std::memcpy(&s, c.data() + tile * 4, 4);
  return s;
}

// Half an ulp of |v| in the output dtype (f16: 2^-11 relative, 2^-25 absolute for
// subnormals; bf16: 2^-8 relative).
double OutputRounding(double v, DType t) {
  return t == DType::kF16 ? std::abs(v) * 0x1p-11 + 0x1p-25 : std::abs(v) * 0x1p-8;
}

// Checks every element of a round trip against the contract's bound; returns the largest
// |error| / scale seen (excluding the output rounding).
double CheckRoundTrip(const KvLayout& l, const std::vector<uint16_t>& in,
                      const std::vector<uint8_t>& c, const std::vector<uint16_t>& out) {
  double worst = 0.0;
  const int64_t n_tiles = KvCompressedTiles(l);
  for (int64_t t = 0; t < n_tiles; ++t) {
    float amax = 0.0f;
    for (int64_t i = 0; i < l.tile_elems(); ++i) {
      amax = std::max(amax,
                      std::abs(FromBits(in[static_cast<size_t>(t * l.tile_elems() + i)], l.dtype)));
    }
    const float scale = ScaleOf(c, t);
    EXPECT_EQ(scale, amax / 127.0f) << Name(l) << " tile " << t;
    for (int64_t i = 0; i < l.tile_elems(); ++i) {
      const size_t e = static_cast<size_t>(t * l.tile_elems() + i);
      const double x = FromBits(in[e], l.dtype);
      const double y = FromBits(out[e], l.dtype);
      const double err = std::abs(x - y);
      const double bound = double{scale} * (0.5 + 0x1p-16) +
                           OutputRounding(std::max(std::abs(x), std::abs(y)), l.dtype);
      const auto q = static_cast<int8_t>(c[static_cast<size_t>(n_tiles * 4) + e]);
      if (err > bound || q < -127) {  // one report per call, not one per element
        ADD_FAILURE() << Name(l) << " tile " << t << " element " << i << " x " << x << " y " << y
                      << " q " << int{q} << " scale " << scale << " error " << err << " > "
                      << bound;
        return worst;
      }
      if (scale > 0.0f) worst = std::max(worst, std::abs(x - q * double{scale}) / scale);
    }
  }
  return worst;
}

TEST(KvInt8Math, QuantizeRoundsToNearestEvenAndClamps) {
  EXPECT_EQ(KvInt8Quantize(2.5f, 1.0f), 2);
  EXPECT_EQ(KvInt8Quantize(3.5f, 1.0f), 4);
  EXPECT_EQ(KvInt8Quantize(-2.5f, 1.0f), -2);
  EXPECT_EQ(KvInt8Quantize(-3.5f, 1.0f), -4);
  EXPECT_EQ(KvInt8Quantize(0.49999997f, 1.0f), 0);
  EXPECT_EQ(KvInt8Quantize(1.25f, 2.0f), 2);  // 2.5 -> 2
  EXPECT_EQ(KvInt8Quantize(126.5f, 1.0f), 126);
  EXPECT_EQ(KvInt8Quantize(127.4f, 1.0f), 127);
  EXPECT_EQ(KvInt8Quantize(1e9f, 1.0f), 127);
  EXPECT_EQ(KvInt8Quantize(-1e9f, 1.0f), -127);
  EXPECT_EQ(KvInt8Quantize(-0.0f, 1.0f), 0);
  EXPECT_EQ(KvInt8Quantize(std::numeric_limits<float>::quiet_NaN(), 1.0f), -127);
  EXPECT_EQ(KvInt8Quantize(5.0f, 0.0f), 0);  // an all-zero tile's multiplier
  EXPECT_EQ(KvInt8Dequantize(-127, 0.5f), -63.5f);
  EXPECT_EQ(KvInt8Scale(127.0f), 1.0f);
  EXPECT_EQ(KvInt8InvScale(0.0f), 0.0f);
  EXPECT_EQ(KvInt8InvScale(254.0f), 0.5f);
}

TEST(KvCompress, SizeAndLayoutAreAsDocumented) {
  // 3 layers x 2 (k|v) x 2 heads = 12 tiles of 7 x 40 = 280 elements:
  // 12 * 4 bytes of scales + 12 * 280 bytes of quants.
  const KvLayout l = Layout(3, 2, 40, 7, DType::kF16);
  EXPECT_EQ(KvCompressedTiles(l), 12);
  EXPECT_EQ(CompressedBlockBytes(l), 48 + 3360);
  EXPECT_EQ(CompressedBlockBytes(Layout(30, 3, 64, 16, DType::kBF16)), 180 * 4 + 180 * 1024);

  const std::vector<uint16_t> block = RandomBlock(l, 1);
  const std::vector<uint8_t> c = Compress(l, block);
  // Element (layer 1, v, head 1, token 3, d 5): tile (1 * 2 + 1) * 2 + 1 = 7, element
  // 7 * 280 + 3 * 40 + 5 = 2085 of the block, byte 48 + 2085 of the compressed block.
  const int64_t e = l.ElemOffset(1, 1, 1, 3) + 5;
  ASSERT_EQ(e, 2085);
  float amax = 0.0f;
  for (int i = 0; i < 280; ++i) amax = std::max(amax, std::abs(F16ToF32(block[7 * 280 + i])));
  ASSERT_GT(amax, 0.0f);
  EXPECT_EQ(ScaleOf(c, 7), amax / 127.0f);
  const float x = F16ToF32(block[2085]);
  EXPECT_EQ(static_cast<int8_t>(c[48 + 2085]),
            static_cast<int8_t>(std::nearbyint(std::clamp(x * (127.0f / amax), -127.0f, 127.0f))));
}

TEST(KvCompress, RoundTripWithinBoundAtAwkwardLayouts) {
  uint32_t seed = 10;
  double worst = 0.0;
  for (DType t : {DType::kF16, DType::kBF16}) {
    for (int head_dim : {40, 64, 80}) {
      for (int block_tokens : {16, 7}) {
        for (auto [layers, heads] : {std::pair{1, 1}, std::pair{3, 2}, std::pair{2, 5}}) {
          const KvLayout l = Layout(layers, heads, head_dim, block_tokens, t);
          const std::vector<uint16_t> in = RandomBlock(l, ++seed);
          const std::vector<uint8_t> c = Compress(l, in);
          const std::vector<uint16_t> out = Decompress(l, c);
          worst = std::max(worst, CheckRoundTrip(l, in, c, out));
          // Every tile uses the full range: its largest element quantizes to +-127.
          for (int64_t tile = 0; tile < KvCompressedTiles(l); ++tile) {
            int peak = 0;
            for (int64_t i = 0; i < l.tile_elems(); ++i) {
              const auto q = static_cast<int8_t>(
                  c[static_cast<size_t>(KvCompressedTiles(l) * 4 + tile * l.tile_elems() + i)]);
              peak = std::max(peak, std::abs(int{q}));
            }
            EXPECT_EQ(peak, 127) << Name(l) << " tile " << tile;
          }
        }
      }
    }
  }
  std::printf("[ worst |x - q * scale| / scale over random blocks: %.6f ]\n", worst);
  EXPECT_LE(worst, 0.5 + 0x1p-16);
  EXPECT_GT(worst, 0.49);  // the bound is tight: the grid's half step is reached
}

TEST(KvCompress, ZeroTilesGiveZeroScaleAndPositiveZeros) {
  for (DType t : {DType::kF16, DType::kBF16}) {
    const KvLayout l = Layout(2, 3, 40, 7, t);
    std::vector<uint16_t> in = RandomBlock(l, 77);
    // Tiles 0 (+0 everywhere) and 4 (-0 everywhere) are zero; the others are random.
    std::fill(in.begin(), in.begin() + l.tile_elems(), uint16_t{0});
    std::fill(in.begin() + 4 * l.tile_elems(), in.begin() + 5 * l.tile_elems(), uint16_t{0x8000});
    const std::vector<uint8_t> c = Compress(l, in);
    const std::vector<uint16_t> out = Decompress(l, c);
    for (int64_t tile : {0, 4}) {
      EXPECT_EQ(ScaleOf(c, tile), 0.0f);
      EXPECT_EQ(std::signbit(ScaleOf(c, tile)), false);
      for (int64_t i = 0; i < l.tile_elems(); ++i) {
        const size_t e = static_cast<size_t>(tile * l.tile_elems() + i);
        EXPECT_EQ(c[static_cast<size_t>(KvCompressedTiles(l) * 4) + e], 0);
        EXPECT_EQ(out[e], 0) << "tile " << tile << " element " << i;  // +0 bits
      }
    }
    CheckRoundTrip(l, in, c, out);
  }
}

// One outlier of 1000 among N(0, 1) values: the step becomes 1000 / 127 ~ 7.9, so most
// values quantize to 0 or +-1, coarsely but within the bound; the outlier itself is exact
// up to the output rounding.
TEST(KvCompress, OutlierCoarsensItsTileOnly) {
  for (DType t : {DType::kF16, DType::kBF16}) {
    const KvLayout l = Layout(2, 2, 64, 16, t);
    std::vector<uint16_t> in = RandomBlock(l, 99);
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int64_t tile = 5;
    for (int64_t i = 0; i < l.tile_elems(); ++i) {
      in[static_cast<size_t>(tile * l.tile_elems() + i)] = ToBits(normal(rng) + 0.01f, t);
    }
    const size_t outlier = static_cast<size_t>(tile * l.tile_elems() + 333);
    in[outlier] = ToBits(1000.0f, t);
    const std::vector<uint8_t> c = Compress(l, in);
    const std::vector<uint16_t> out = Decompress(l, c);
    CheckRoundTrip(l, in, c, out);
    EXPECT_EQ(ScaleOf(c, tile), 1000.0f / 127.0f);
    EXPECT_EQ(static_cast<int8_t>(c[static_cast<size_t>(KvCompressedTiles(l) * 4) + outlier]), 127);
    EXPECT_NEAR(FromBits(out[outlier], t), 1000.0, OutputRounding(1000.0, t));
    int zeros = 0;
    for (int64_t i = 0; i < l.tile_elems(); ++i) {
      zeros += c[static_cast<size_t>(KvCompressedTiles(l) * 4 + tile * l.tile_elems() + i)] == 0;
    }
    EXPECT_GT(zeros, l.tile_elems() / 2);  // |x| < 3.9 quantizes to 0
    // The neighbouring tile (not coarsened) keeps its own fine step.
    EXPECT_LT(ScaleOf(c, tile - 1), 1000.0f / 127.0f);
  }
}

TEST(KvCompress, BytesAreDeterministic) {
  const KvLayout l = Layout(3, 3, 80, 7, DType::kBF16);
  const std::vector<uint16_t> in = RandomBlock(l, 123);
  const std::vector<uint8_t> a = Compress(l, in, 0x00);
  const std::vector<uint8_t> b = Compress(l, in, 0xff);  // other prior contents
  EXPECT_EQ(a, b);
  EXPECT_EQ(Decompress(l, a), Decompress(l, b));
  // Compressing the round trip again gives the same scales' quants within one step.
  const std::vector<uint8_t> again = Compress(l, Decompress(l, a));
  for (size_t i = static_cast<size_t>(KvCompressedTiles(l) * 4); i < a.size(); ++i) {
    ASSERT_LE(std::abs(int{static_cast<int8_t>(a[i])} - int{static_cast<int8_t>(again[i])}), 1)
        << "byte " << i;
  }
}

}  // namespace
}  // namespace mnemo::kernels
