// Internal types shared by the C ABI layer and the backends. Nothing here is exported.
#pragma once

#include <cstdint>

#include "flashsig.h"

namespace fsig {

// A validated 4-d (or 3-d for LSE) tensor: dims and element strides, base pointer, dtype.
struct TensorView {
    void* data = nullptr;
    int32_t dtype = FSIG_DTYPE_FP32;
    int64_t shape[4] = {1, 1, 1, 1};
    int64_t stride[4] = {0, 0, 0, 0};
};

// One attention problem after validation, with every default resolved.
struct Problem {
    int64_t batch = 0, seq_q = 0, seq_k = 0, heads_q = 0, heads_k = 0, head_dim = 0;
    int32_t dtype = FSIG_DTYPE_FP32;
    int32_t score = FSIG_SCORE_SOFTMAX;
    float scale = 0.f;         // resolved: 1/sqrt(d) unless given
    float sigmoid_bias = 0.f;  // resolved: -ln(Nk) unless given
    float pointwise_factor = 1.f;  // Nk^-alpha for relu, relu2, gelu, softplus, identity
    bool causal = false;
    int64_t window_left = -1, window_right = -1;
    bool deterministic = false;

    // ---- extensions (DESIGN.md §4); all off by default ----
    // ALiBi: beta_ij -= slope(b, h) * |delta_i - j|, slope = alibi[b * alibi_stride_b + h * alibi_stride_h]
    const float* alibi = nullptr;
    int64_t alibi_stride_b = 0, alibi_stride_h = 0;
    // Additive bias (fp32/fp16/bf16) and boolean mask (1 byte, nonzero = allowed), both logically
    // [B, Hq, Nq, Nk] with stride 0 on every broadcast dimension.
    bool has_bias = false, has_mask = false;
    TensorView bias, mask;
    int64_t strided = 0;           // strided (atrous) mask |delta_i - j| mod strided == 0; 0 = off
    int64_t block_m = 0, block_n = 0;  // block-sparse: 0 = off; layout 1 byte [1|Hq, ceil(Nq/bm), ceil(Nk/bn)]
    TensorView block_layout;       // stride[0] = 0 when the layout is shared by every head
    int64_t logn_train = 0;        // log-n scaling: lambda_i = max(1, ln n_i / ln logn_train); 0 = off

    int64_t group() const { return heads_q / heads_k; }
    bool window_given() const { return window_left >= 0 || window_right >= 0; }
    // window ∪ strided counts as one mask when both are given (DESIGN.md §4)
    bool strided_with_window() const { return strided > 0 && window_given(); }
    // masks that are not an interval of keys per row: checked element by element inside a tile
    bool elementwise() const { return strided > 0 || block_m > 0 || has_mask || has_bias; }
    bool has_extensions() const { return elementwise() || alibi != nullptr || logn_train > 0; }

    // Causal and window alone allow query row i the interval [cw_first, cw_last] (empty when
    // last < first): both are bounds around the bottom-right diagonal delta_i = i + Nk - Nq.
    int64_t cw_first(int64_t i) const {
        int64_t diag = i + seq_k - seq_q;
        int64_t lo = window_left >= 0 ? diag - window_left : 0;
        return lo > 0 ? lo : 0;
    }
    int64_t cw_last(int64_t i) const {
        int64_t diag = i + seq_k - seq_q;
        int64_t hi = seq_k - 1;
        if (causal && diag < hi) hi = diag;
        if (window_right >= 0 && diag + window_right < hi) hi = diag + window_right;
        return hi;
    }
    // Every key allowed to row i lies in [first_key, last_key]; both are non-decreasing in i. Without
    // extensions that is exactly the allowed set; with strided + window the window is no bound (the
    // union reaches past it), only causal is.
    int64_t first_key(int64_t i) const { return strided_with_window() ? 0 : cw_first(i); }
    int64_t last_key(int64_t i) const {
        if (!strided_with_window()) return cw_last(i);
        const int64_t diag = i + seq_k - seq_q;
        return causal && diag < seq_k - 1 ? diag : seq_k - 1;
    }
};

struct ForwardArgs {
    Problem p;
    TensorView q, k, v, out;
    bool has_lse = false;
    TensorView lse;  // fp32 [B, Hq, Nq]
    // CUDA linear scores, checked by the C ABI layer: the segments' partial states (linear_params.h); NULL:
    // each segment recomputes the state before it
    void* workspace = nullptr;
    int64_t workspace_bytes = 0;
};

struct BackwardArgs {
    Problem p;
    TensorView q, k, v, out, dout, dq, dk, dv;
    bool has_out = false, has_lse = false;
    TensorView lse;
    // dBias = dS summed over the bias's broadcast dims; the bias's shape and dtype, strides of the caller
    bool has_dbias = false;
    TensorView dbias;
    // CUDA, checked by the C ABI layer: the fast backward's fp32 dQ (B * Hq * Nq * w * 4 bytes, w the kernels' width 64, 128 or 256), or with a
    // broadcast dbias its fp32 partial sums (dbias_row_groups); NULL: the deterministic kernels run. The
    // linear scores: as ForwardArgs::workspace
    void* workspace = nullptr;
    int64_t workspace_bytes = 0;
};

// A dbias broadcast over B, Hq or Nq is summed on CUDA in two deterministic steps: the dQ kernel writes
// fp32 partial sums [B, Hq, G, Nk] into the workspace, G row groups per (batch, head) — every query row
// its own group when dbias keeps Nq, groups of kDbiasGroupRows rows (one warp's) when it broadcasts Nq —
// and a reduction kernel adds them up in a fixed order. dbias_rows: dbias.shape[2] (1 or Nq).
constexpr int64_t kDbiasGroupRows = 16;
// query rows per group: 1 when dbias keeps Nq, else kDbiasGroupRows
inline int64_t dbias_group_rows(int64_t seq_q, int64_t dbias_rows) {
    return dbias_rows == seq_q ? 1 : kDbiasGroupRows;
}
inline int64_t dbias_row_groups(int64_t seq_q, int64_t dbias_rows) {
    const int64_t rows = dbias_group_rows(seq_q, dbias_rows);
    return (seq_q + rows - 1) / rows;
}

}  // namespace fsig
