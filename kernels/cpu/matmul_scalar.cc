// The portable MatMul path (kernels/cpu/matmul_internal.h): plain C++, for processors
// without AVX2. Each weight row is decoded once per call into integer quants and per-block
// scales, then multiplied with every activation row.
#include <cstdint>
#include <vector>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/dequant_math.h"
#include "kernels/half.h"
#include "kernels/quant_blocks.h"

namespace mnemo::kernels::internal {
namespace {

// One weight row as 32-element blocks: value i = dw[b] * q[i] + mw[b] (mw is applied per
// block through the activations' dsum).
struct DecodedRow {
  std::vector<int32_t> q;
  std::vector<float> dw;
  std::vector<float> mw;
};

void DecodeRow(DType t, const uint8_t* src, int64_t k, DecodedRow* out) {
  const int64_t blocks = k / 32;
  out->q.assign(static_cast<size_t>(k), 0);
  out->dw.assign(static_cast<size_t>(blocks), 0.0f);
  out->mw.assign(static_cast<size_t>(blocks), 0.0f);
  int32_t* q = out->q.data();
  switch (t) {
    case DType::kQ8_0:
      for (int64_t b = 0; b < blocks; ++b) {
        const auto& blk = reinterpret_cast<const BlockQ8_0*>(src)[b];
        out->dw[b] = F16ToF32(blk.d);
        for (int i = 0; i < 32; ++i) q[32 * b + i] = blk.qs[i];
      }
      break;
    case DType::kQ4_0:
      for (int64_t b = 0; b < blocks; ++b) {
        const auto& blk = reinterpret_cast<const BlockQ4_0*>(src)[b];
        out->dw[b] = F16ToF32(blk.d);
        for (int i = 0; i < 32; ++i) q[32 * b + i] = Q4_0Format::Quant(blk, i) - 8;
      }
      break;
    case DType::kQ4_1:
      for (int64_t b = 0; b < blocks; ++b) {
        const auto& blk = reinterpret_cast<const BlockQ4_1*>(src)[b];
        out->dw[b] = F16ToF32(blk.d);
        out->mw[b] = F16ToF32(blk.m);
        for (int i = 0; i < 32; ++i) q[32 * b + i] = Q4_1Format::Quant(blk, i);
      }
      break;
    case DType::kQ4_K:
    case DType::kQ5_K:
      for (int64_t s = 0; s < blocks / 8; ++s) {
        const uint8_t* scales;
        float d, dmin;
        if (t == DType::kQ4_K) {
          const auto& blk = reinterpret_cast<const BlockQ4_K*>(src)[s];
          scales = blk.scales;
          d = F16ToF32(blk.d);
          dmin = F16ToF32(blk.dmin);
          for (int i = 0; i < 256; ++i) q[256 * s + i] = Q4_KFormat::Quant(blk, i);
        } else {
          const auto& blk = reinterpret_cast<const BlockQ5_K*>(src)[s];
          scales = blk.scales;
          d = F16ToF32(blk.d);
          dmin = F16ToF32(blk.dmin);
          for (int i = 0; i < 256; ++i) q[256 * s + i] = Q5_KFormat::Quant(blk, i);
        }
        for (int j = 0; j < 8; ++j) {
          int sc, m;
          KScaleMin(scales, j, &sc, &m);
          out->dw[8 * s + j] = d * static_cast<float>(sc);
          out->mw[8 * s + j] = -(dmin * static_cast<float>(m));
        }
      }
      break;
    case DType::kQ6_K:
      // The 16-element sub-block scales are folded into the integer quants.
      for (int64_t s = 0; s < blocks / 8; ++s) {
        const auto& blk = reinterpret_cast<const BlockQ6_K*>(src)[s];
        for (int j = 0; j < 8; ++j) out->dw[8 * s + j] = F16ToF32(blk.d);
        for (int i = 0; i < 256; ++i) {
          q[256 * s + i] = (Q6_KFormat::Quant(blk, i) - 32) * blk.scales[i / 16];
        }
      }
      break;
    default:
      break;
  }
}

void QuantizedColumns(const MatMulJob& job, int64_t n_begin, int64_t n_end) {
  DecodedRow row;
  const int64_t blocks = job.k / 32;
  for (int64_t n = n_begin; n < n_end; ++n) {
    DecodeRow(job.dtype, job.w + n * job.w_row_bytes, job.k, &row);
    for (int64_t m = 0; m < job.rows; ++m) {
      const ActGroup* xg = job.xq + m * job.xq_groups;
      float acc = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) {
        const ActGroup& g = xg[b / kActGroupBlocks];
        const int j = static_cast<int>(b % kActGroupBlocks);
        const int32_t* qw = row.q.data() + 32 * b;
        // int64: Q6_K's folded quants reach 32 * 128, times 32 quants of up to 32767.
        int64_t isum = 0;
        for (int i = 0; i < 32; ++i) isum += int64_t{qw[i]} * ActQuant(g, j, i);
        const float scale = row.dw[b] * g.d[4 * j];
        acc += scale * static_cast<float>(isum);
        acc += row.mw[b] * g.dsum[4 * j];
      }
      if (job.bias != nullptr) acc += job.bias[n];
      job.y[m * job.ldy + n] = acc;
    }
  }
}

void FloatColumns(const MatMulJob& job, int64_t n_begin, int64_t n_end) {
  std::vector<float> w(static_cast<size_t>(job.k));
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* src = job.w + n * job.w_row_bytes;
    for (int64_t i = 0; i < job.k; ++i) {
      if (job.dtype == DType::kF32) {
        w[i] = reinterpret_cast<const float*>(src)[i];
      } else if (job.dtype == DType::kF16) {
        w[i] = F16ToF32(reinterpret_cast<const uint16_t*>(src)[i]);
      } else {
        w[i] = BF16ToF32(reinterpret_cast<const uint16_t*>(src)[i]);
      }
    }
    for (int64_t m = 0; m < job.rows; ++m) {
      const float* x = job.x + m * job.ldx;
      // Four interleaved partial sums (lane i % 4), combined in a fixed order.
      float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int64_t i = 0; i < job.k; ++i) part[i % 4] += x[i] * w[i];
      float acc = (part[0] + part[1]) + (part[2] + part[3]);
      if (job.bias != nullptr) acc += job.bias[n];
      job.y[m * job.ldy + n] = acc;
    }
  }
}

}  // namespace

void MatMulColumnsScalar(const MatMulJob& job, int64_t n_begin, int64_t n_end) {
  if (GetDTypeInfo(job.dtype).quantized) {
    QuantizedColumns(job, n_begin, n_end);
  } else {
    FloatColumns(job, n_begin, n_end);
  }
}

}  // namespace mnemo::kernels::internal
