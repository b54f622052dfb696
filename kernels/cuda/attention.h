// Paged KV write and paged attention on a CUDA device: the twins of KvWrite and
// PagedAttention (kernels/attention.h), taking the same Params structs with every pointer
// in them (arena base, q_start, positions, kv_len, table_start, block_table, k, v, q, out)
// a DEVICE address. Plain C++ header: no CUDA or Abseil includes.
//
// Both launchers enqueue on `stream` (a cudaStream_t; nullptr for the legacy default
// stream) and return 0 (cudaSuccess) once the work is enqueued, or a cudaError_t value:
// cudaErrorInvalidValue (1) for bad arguments (checked on the host before any launch; the
// device arrays are never read on the host), otherwise the launch error. Errors of the
// kernels' execution surface on the stream's next synchronization. All buffers must stay
// valid until the work completes. Thread-safe (no global state).
#pragma once

#include <cstdint>

#include "kernels/attention.h"

namespace mnemo::kernels {

// KvWrite on the device, bit-identical to KvWriteRef (both convert with kernels/half.h).
// total_rows: the number of k/v rows, i.e. q_start[n_seqs] (a host copy of it).
// Invalid: dtype not f16/bf16, layer out of range, an empty layout, total_rows < 0,
// ldk/ldv < n_kv_heads * head_dim, a null pointer while total_rows > 0, the arena not
// 2-byte or k/v not 4-byte aligned. Device-side, a row whose position lies outside its
// sequence's block table or whose slot is outside [0, n_slots) is not written (the CPU
// versions abort on such rows). total_rows == 0 enqueues nothing.
int CudaKvWrite(const KvWriteParams& p, int64_t total_rows, void* stream);

// PagedAttention on the device, with the contract and tolerance of the CPU fast path
// (kernels/attention.h): f32 online softmax per (row, head) in key order within each
// context split of kAttnSplitKeys keys (kernels/attention_math.h), then the splits merged in
// split order. A row's result depends only on its own q, position, window and KV, not on
// the rest of the batch nor on the scratch size (batch invariance on a given device).
//
// Host-side arguments:
//   total_rows   the number of query rows, q_start[n_seqs] (a host copy of it).
//   max_kv_len   an upper bound of every kv_len[s]; it sets the number of context splits
//                (kernels/cuda/attention_launch.h: AttentionSplits). A smaller value still
//                gives correct results (the last split takes the rest of a row's keys) but
//                breaks batch invariance.
//   scratch      device buffer of scratch_bytes bytes (4-byte aligned) for the partial
//                states of the splits. Not used (may be null) when max_kv_len <=
//                kAttnSplitKeys; otherwise it must hold at least
//                AttentionScratchBytesPerRow(n_heads, head_dim, max_kv_len) bytes, and
//                AttentionScratchBytes(total_rows, ...) lets the call run in one pass
//                (smaller buffers make the launcher loop over row chunks). It must not be
//                used by other work until this call's work completes.
// Invalid: the KvWrite conditions above for the layout, head_dim > 256 (kAttnMaxHeadDim),
// n_heads < 1 or not a multiple of n_kv_heads, n_seqs < 0, max_kv_len < 0, ldq/ldo <
// n_heads * head_dim, a null pointer while total_rows > 0, q/out not 4-byte aligned, or a
// scratch too small. Device-side, a block table entry outside [0, n_slots) for a needed
// key (or a kv_len beyond the sequence's table) makes that (row, head)'s output NaN.
// total_rows == 0 enqueues nothing.
int CudaPagedAttention(const AttentionParams& p, int64_t total_rows, int64_t max_kv_len,
                       void* scratch, int64_t scratch_bytes, void* stream);

// AttentionMass on the device (kernels/attention.h): adds to mass[pos] (a DEVICE array of
// at least the largest kv_len floats) the softmax weights that every query row from
// first_row to total_rows - 1 and every head give each key, f32 throughout; the additions
// are atomic, so the last bits vary from run to run. Invalid as CudaPagedAttention's
// arguments (no `out`), a null or unaligned mass, or first_row < 0; first_row >= total_rows
// enqueues nothing.
int CudaAttentionMass(const AttentionParams& p, int64_t first_row, int64_t total_rows, float* mass,
                      void* stream);

}  // namespace mnemo::kernels
