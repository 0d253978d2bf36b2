// The forward kernel's parameters: one plain struct, filled once on the host from a validated
// ForwardArgs and passed to the kernel by value as a __grid_constant__ argument. Plain C++ (no CUDA
// types) so host code, the kernels and the CPU-side layout test all see the same definition.
#pragma once

#include <cstdint>

#include "ext_params.h"

namespace fsig::cuda {

// The longest Nq and Nk the CUDA kernels take: their row and key indices are int32, and a row or key
// plus a tile's extent (at most a few hundred) stays below 2^31 (checked on the host, check_problem).
constexpr int64_t kMaxCudaSeq = int64_t(1) << 30;

struct FwdParams {
    const void* q;  // [B, Nq, Hq, d], element strides below, last-dim stride 1
    const void* k;  // [B, Nk, Hk, d]
    const void* v;  // [B, Nk, Hk, d]
    void* out;      // [B, Nq, Hq, d]
    float* lse;     // fp32 [B, Hq, Nq] or nullptr (softmax only)
    int64_t q_batch, q_row, q_head;
    int64_t k_batch, k_row, k_head;
    int64_t v_batch, v_row, v_head;
    int64_t o_batch, o_row, o_head;
    int64_t lse_batch, lse_head, lse_row;
    int64_t batch;          // B
    int64_t seq_q, seq_k;   // both <= kMaxCudaSeq (checked on the host)
    int64_t diag_offset;    // Nk - Nq: the diagonal of row i is i + diag_offset (bottom-right aligned)
    int64_t window_left;    // -1 = unbounded; else clamped to <= Nq + Nk so no bound arithmetic overflows;
                            // with strided ∪ window both are -1 here (the union is wider; ext has them)
    int64_t window_right;   // likewise
    int32_t causal;         // 0 or 1
    int32_t heads_q;        // Hq
    int32_t group;          // Hq / Hk: kv head = q head / group
    int32_t m_blocks;       // ceil(Nq / kBlockM), set by the launcher
    int32_t score;          // fsig_score, selects the instantiation on the host
    int32_t head_dim;       // d, a multiple of 8 up to the kernel's width (64, 128 or 256): the kernels load the
                            // columns from d on as zeros (adding 0 to every product) and store none of them
    float scale;            // S = scale * q.k
    float scale_log2;       // scale * log2(e): softmax works in the log2 domain
    float factor;           // Nk^-alpha (relu, relu2, gelu, softplus, identity)
    float sigmoid_bias;     // b of sigmoid(S + b)
    ExtParams ext;          // masks and positions (ext_params.h); ext.on = 0: none, the plain kernels run
};

// Keys allowed to query row i form one interval [first_key, last_key] (empty when last < first):
// exactly fsig::Problem::first_key/last_key of native/internal.h, in the same int64 arithmetic.
#if defined(__CUDACC__)
#define FSIG_HD __host__ __device__ __forceinline__
#else
#define FSIG_HD inline
#endif

FSIG_HD int64_t first_key(const FwdParams& p, int64_t i) {
    const int64_t lo = p.window_left >= 0 ? i + p.diag_offset - p.window_left : 0;
    return lo > 0 ? lo : 0;
}
FSIG_HD int64_t last_key(const FwdParams& p, int64_t i) {
    const int64_t diag = i + p.diag_offset;
    int64_t hi = p.seq_k - 1;
    if (p.causal && diag < hi) hi = diag;
    if (p.window_right >= 0 && diag + p.window_right < hi) hi = diag + p.window_right;
    return hi;
}

// The forward's (fwd_kernel.cuh) per-row-tile test that skips the per-element mask: every real row of the
// 16 from w0 (rows [w0, min(w0 + 16, Nq)); rows past Nq are computed on zero Q but never stored) may see
// every key of [j0, j0 + cols), and all those keys exist. tests/gpu/test_bwd_index.cpp checks it against
// an element scan and replays the forward's whole tile plan.
FSIG_HD bool fwd_warp_interior(const FwdParams& p, int64_t w0, int64_t j0, int64_t cols) {
    const int64_t w_last = w0 + 15 < p.seq_q - 1 ? w0 + 15 : p.seq_q - 1;
    return j0 + cols <= p.seq_k && first_key(p, w_last) <= j0 && last_key(p, w0) >= j0 + cols - 1;
}

}  // namespace fsig::cuda
