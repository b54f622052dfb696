// Fast KvWrite: rows converted f32 -> f16/bf16 with SIMD (bit-identical to F32ToF16 /
// F32ToBF16: hardware f16 conversion rounds to nearest even and keeps NaN payload bits the
// same way; bf16 uses integer rounding, because vcvtneps2bf16 flushes subnormals), rows in
// parallel for large writes (prefill).
// GCC 12's AVX-512 intrinsics build their pass-through operands from a self-initialized
// "undefined" vector, which -Wmaybe-uninitialized flags at the header lines: silence it
// for the intrinsic headers only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#include "kernels/attention.h"
#include "kernels/base/check.h"
#include "kernels/cpu/attention_internal.h"
#include "kernels/half.h"
#include "kernels/ops.h"
#include "tbb/blocked_range.h"
#include "tbb/parallel_for.h"

namespace mnemo::kernels {
namespace {

using ConvertFn = void (*)(const float* x, uint16_t* y, int n);

void ToF16Scalar(const float* x, uint16_t* y, int n) {
  for (int i = 0; i < n; ++i) y[i] = F32ToF16(x[i]);
}

void ToBF16Scalar(const float* x, uint16_t* y, int n) {
  for (int i = 0; i < n; ++i) y[i] = F32ToBF16(x[i]);
}

__attribute__((target("avx2,fma,f16c"))) void ToF16Avx2(const float* x, uint16_t* y, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), h);
  }
  for (; i < n; ++i) y[i] = F32ToF16(x[i]);
}

// bf16 rounding on 8 f32 bit patterns: (x + 0x7fff + lsb) >> 16, NaN -> quiet NaN.
__attribute__((target("avx2,fma,f16c"))) __m256i RoundToBF16Avx2(__m256i x) {
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb), 16);
  const __m256i abs = _mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff));
  const __m256i is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(rounded, quiet, is_nan);
}

__attribute__((target("avx2,fma,f16c"))) void ToBF16Avx2(const float* x, uint16_t* y, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i r = RoundToBF16Avx2(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)));
    // packus interleaves 128-bit lanes: [r0-3, r0-3 | r4-7, r4-7]; gather qwords 0 and 2.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), _mm256_castsi256_si128(packed));
  }
  for (; i < n; ++i) y[i] = F32ToBF16(x[i]);
}

__attribute__((target("avx512f,avx2,fma,f16c"))) void ToF16Avx512(const float* x, uint16_t* y,
                                                                  int n) {
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), h);
  }
  ToF16Avx2(x + i, y + i, n - i);
}

__attribute__((target("avx512f,avx2,fma,f16c"))) void ToBF16Avx512(const float* x, uint16_t* y,
                                                                   int n) {
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i b = _mm512_loadu_si512(x + i);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __mmask16 is_nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_or_epi32(r, is_nan, _mm512_srli_epi32(b, 16), _mm512_set1_epi32(0x40));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), _mm512_cvtepi32_epi16(r));
  }
  ToBF16Avx2(x + i, y + i, n - i);
}

ConvertFn ConverterFor(CpuIsa isa, DType t) {
  const bool f16 = t == DType::kF16;
  switch (isa) {
    case CpuIsa::kAvx512:
      return f16 ? ToF16Avx512 : ToBF16Avx512;
    case CpuIsa::kAvx2:
      return f16 ? ToF16Avx2 : ToBF16Avx2;
    case CpuIsa::kScalar:
      break;
  }
  return f16 ? ToF16Scalar : ToBF16Scalar;
}

void RunKvWrite(const KvWriteParams& p, CpuIsa isa) {
  const KvLayout& l = p.kv.layout;
  MNEMO_CHECK(l.dtype == DType::kF16 || l.dtype == DType::kBF16) << "KV dtype must be f16/bf16";
  MNEMO_CHECK(p.layer >= 0 && p.layer < l.n_layers) << "layer " << p.layer;
  const ConvertFn convert = ConverterFor(isa, l.dtype);
  const int n_seqs = p.seqs.n_seqs;
  // Rows are independent; large writes (prefill) go over the rows in parallel.
  auto write_rows = [&](int s, int32_t r0, int32_t r1) {
    const int32_t* table = p.seqs.block_table + p.seqs.table_start[s];
    const int64_t n_blocks = p.seqs.table_start[s + 1] - p.seqs.table_start[s];
    for (int32_t r = r0; r < r1; ++r) {
      const int32_t pos = p.seqs.positions[r];
      MNEMO_CHECK(pos >= 0 && pos / l.block_tokens < n_blocks)
          << "position " << pos << " of sequence " << s << " is outside its block table";
      const int32_t slot = table[pos / l.block_tokens];
      MNEMO_CHECK(slot >= 0 && slot < p.kv.n_slots) << "slot " << slot;
      auto* block = reinterpret_cast<uint16_t*>(p.kv.base + slot * l.block_bytes());
      for (int h = 0; h < l.n_kv_heads; ++h) {
        const int64_t src = int64_t{h} * l.head_dim;
        const int row = pos % l.block_tokens;
        convert(p.k + r * p.ldk + src, block + l.ElemOffset(p.layer, 0, h, row), l.head_dim);
        convert(p.v + r * p.ldv + src, block + l.ElemOffset(p.layer, 1, h, row), l.head_dim);
      }
    }
  };
  constexpr int32_t kRowsPerTask = 16;
  for (int s = 0; s < n_seqs; ++s) {
    const int32_t begin = p.seqs.q_start[s];
    const int32_t end = p.seqs.q_start[s + 1];
    if (end - begin <= kRowsPerTask) {
      write_rows(s, begin, end);
    } else {
      tbb::parallel_for(tbb::blocked_range<int32_t>(begin, end, kRowsPerTask),
                        [&](const tbb::blocked_range<int32_t>& rows) {
                          write_rows(s, rows.begin(), rows.end());
                        });
    }
  }
}

}  // namespace

void KvWrite(const KvWriteParams& p) { RunKvWrite(p, attention_internal::BestCpuIsa()); }

bool KvWriteForIsa(const KvWriteParams& p, CpuIsa isa) {
  if (static_cast<int>(isa) > static_cast<int>(attention_internal::BestCpuIsa())) return false;
  RunKvWrite(p, isa);
  return true;
}

}  // namespace mnemo::kernels
