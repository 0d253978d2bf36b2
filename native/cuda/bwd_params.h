// The backward kernels' parameters (bwd_kernel.cuh): the forward's FwdParams (inputs, strides, the
// mask, the score constants — the backward reads `out` and `lse` instead of writing them) plus dO and
// the three gradients. Plain C++ so host code, kernels and the CPU-side test share one definition.
#pragma once

#include <cstdint>

#include "fwd_params.h"

namespace fsig::cuda {

struct BwdParams {
    FwdParams f;       // q, k, v, out (softmax: read for D = rowsum(dO∘O)), lse (softmax: read), strides,
                       // shapes, mask, score constants; f.m_blocks = query tiles of the dQ kernel
    const void* dout;  // [B, Nq, Hq, d]
    void* dq;          // [B, Nq, Hq, d]
    void* dk;          // [B, Nk, Hk, d]
    void* dv;          // [B, Nk, Hk, d]
    int64_t do_batch, do_row, do_head;
    int64_t dq_batch, dq_row, dq_head;
    int64_t dk_batch, dk_row, dk_head;
    int64_t dv_batch, dv_row, dv_head;
    int32_t heads_k;   // Hk
    int32_t n_blocks;  // key tiles of the dK/dV kernel, set by its launcher
    // fast path: the dK/dV kernel also adds each tile's dS·K (λ applied, scale not) to this fp32
    // [B, Hq, Nq, kernel width 64, 128 or 256] (zeroed before it) with atomics, and launch_bwd_dq_convert writes dq from it;
    // nullptr: the deterministic dQ kernel computes dq
    float* dq_accum;
    // a dbias broadcast over B, Hq or Nq (internal.h, dbias_row_groups): the dQ kernel writes fp32 partial
    // sums [B, Hq, dbias_groups, Nk] here (zeroed before it; dbias_group_rows = 1 or kDbiasGroupRows query
    // rows per group), and launch_bwd_dbias_reduce adds them into f.ext.dbias, whose first three dims are
    // dbias_shape; nullptr: the dQ kernel writes the full-shaped dbias itself
    float* dbias_partial;
    int64_t dbias_groups;
    int32_t dbias_group_rows;
    int64_t dbias_shape[3];
};

// Query rows whose allowed keys meet [j_lo, j_hi] (0 <= j_lo <= j_hi): the rows i with
// last_key(i) >= j_lo and first_key(i) <= j_hi, which form one interval [*first, *last] because
// first_key and last_key are both non-decreasing in i (empty when *last < *first; *first in
// [0, Nq], *last in [-1, Nq - 1]). The same rows as the CPU backward's binary search
// (native/cpu/kernels.inc query_range), here in closed form:
//   last_key(i) >= j_lo  <=>  j_lo <= Nk - 1, and i + off >= j_lo (causal), and i + off + wr >= j_lo
//   first_key(i) <= j_hi <=>  i + off - wl <= j_hi (window left; j_hi >= 0 always)
// with off = Nk - Nq. tests/gpu/test_bwd_index.cpp compares it with a scan of Problem::first_key/
// last_key over many shapes, masks and key ranges.
FSIG_HD void query_range(const FwdParams& p, int64_t j_lo, int64_t j_hi, int64_t* first, int64_t* last) {
    int64_t lo = 0;
    if (p.causal && j_lo - p.diag_offset > lo) lo = j_lo - p.diag_offset;
    if (p.window_right >= 0 && j_lo - p.diag_offset - p.window_right > lo) lo = j_lo - p.diag_offset - p.window_right;
    if (j_lo > p.seq_k - 1 || lo > p.seq_q) lo = p.seq_q;
    int64_t hi = p.seq_q - 1;
    if (p.window_left >= 0 && j_hi - p.diag_offset + p.window_left < hi) hi = j_hi - p.diag_offset + p.window_left;
    if (hi < -1) hi = -1;
    *first = lo;
    *last = hi;
}

// Every element of the tile — query rows [i0, i0 + rows), keys [j0, j0 + cols) — exists and is
// allowed, so the kernels skip the per-element mask (first_key, last_key non-decreasing in i).
FSIG_HD bool tile_interior(const FwdParams& p, int64_t i0, int64_t rows, int64_t j0, int64_t cols) {
    return i0 + rows <= p.seq_q && j0 + cols <= p.seq_k && first_key(p, i0 + rows - 1) <= j0 &&
           last_key(p, i0) >= j0 + cols - 1;
}

}  // namespace fsig::cuda
