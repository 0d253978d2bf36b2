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

    int64_t group() const { return heads_q / heads_k; }

    // Keys allowed to query row i form one interval [first, last] (empty when last < first):
    // causal and window are both bounds around the bottom-right diagonal delta_i = i + Nk - Nq.
    int64_t first_key(int64_t i) const {
        int64_t diag = i + seq_k - seq_q;
        int64_t lo = window_left >= 0 ? diag - window_left : 0;
        return lo > 0 ? lo : 0;
    }
    int64_t last_key(int64_t i) const {
        int64_t diag = i + seq_k - seq_q;
        int64_t hi = seq_k - 1;
        if (causal && diag < hi) hi = diag;
        if (window_right >= 0 && diag + window_right < hi) hi = diag + window_right;
        return hi;
    }
};

struct ForwardArgs {
    Problem p;
    TensorView q, k, v, out;
    bool has_lse = false;
    TensorView lse;  // fp32 [B, Hq, Nq]
};

struct BackwardArgs {
    Problem p;
    TensorView q, k, v, out, dout, dq, dk, dv;
    bool has_out = false, has_lse = false;
    TensorView lse;
};

}  // namespace fsig
