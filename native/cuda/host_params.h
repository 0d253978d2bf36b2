// The kernels' parameters from a validated problem, on the host: FwdParams (fwd_params.h) with its
// extensions (ext_params.h; the key interval widened to causal alone where strided ∪ window reaches
// past the window). Shared by cuda_runtime.cu and the CPU-side check tests/gpu/test_ext_math.cpp.
#pragma once

#include <cmath>
#include <cstdint>

#include "../internal.h"
#include "fwd_params.h"

namespace fsig::cuda {

// p.ext and, for strided ∪ window, p.window_left/right (the interval becomes Problem::first_key/
// last_key: causal alone). dbias: the backward's gradient of the bias, or nullptr.
inline void fill_ext(const Problem& pr, const TensorView* dbias, FwdParams* p) {
    ExtParams& e = p->ext;
    e = ExtParams{};
    e.on = pr.has_extensions() ? 1 : 0;
    if (!e.on) return;
    e.elementwise = pr.elementwise() ? 1 : 0;
    if (pr.alibi != nullptr) e.alibi = pr.alibi, e.alibi_b = pr.alibi_stride_b, e.alibi_h = pr.alibi_stride_h;
    if (pr.has_bias) {
        e.bias = pr.bias.data;
        e.bias_dtype = pr.bias.dtype;
        for (int d = 0; d < 4; ++d) e.bias_stride[d] = pr.bias.stride[d];
    }
    if (pr.has_mask) {
        e.mask = static_cast<const uint8_t*>(pr.mask.data);
        for (int d = 0; d < 4; ++d) e.mask_stride[d] = pr.mask.stride[d];
    }
    if (pr.block_m > 0) {
        e.layout = static_cast<const uint8_t*>(pr.block_layout.data);
        for (int d = 0; d < 3; ++d) e.layout_stride[d] = pr.block_layout.stride[d];
        e.block_m = int32_t(pr.block_m < pr.seq_q ? pr.block_m : pr.seq_q);
        e.block_n = int32_t(pr.block_n < pr.seq_k ? pr.block_n : pr.seq_k);
    }
    // s = 1 allows every key (the union with a window as well); s beyond every |δ_i − j| (< max(Nq, Nk),
    // both < 2^31 on CUDA) allows the diagonal alone, as 2^31 − 1 does
    if (pr.strided > 1) {
        e.strided = pr.strided < INT32_MAX ? pr.strided : INT32_MAX;
        e.strided_magic = uint32_t((uint64_t(1) << 32) / uint64_t(e.strided) + 1);
    }
    e.causal = pr.causal ? 1 : 0;
    e.window_left = pr.window_left, e.window_right = pr.window_right;
    if (pr.logn_train > 0) {
        e.logn_train = pr.logn_train;
        e.inv_ln_train = float(1.0 / std::log(double(pr.logn_train)));
    }
    if (dbias != nullptr) {
        e.dbias = dbias->data;
        for (int d = 0; d < 4; ++d) e.dbias_stride[d] = dbias->stride[d];
    }
    if (pr.strided_with_window()) p->window_left = p->window_right = -1;
}

// True when, inside each of such a kernel's tiles, β depends on the key alone: β alike on the rows
// (ext_beta_rows_alike: key padding), a layout only if each tile's rows lie in one of its block rows. The Hopper
// kernels then stage one row of β per key tile (ExtParams::key_beta), from the tile's first row.
inline bool ext_key_beta(const ExtParams& e, int64_t tile_m, int64_t seq_q) {
    const bool layout_rows = e.layout == nullptr || blocks_hold_tiles(e.block_m, tile_m, seq_q);
    return e.elementwise && ext_beta_rows_alike(e) && layout_rows;
}

// The kernel parameters of q, k, v, out (lse, dbias when given), the problem and its extensions.
inline FwdParams make_params(const Problem& pr, const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& out, const TensorView* lse, const TensorView* dbias = nullptr) {
    FwdParams p{};
    p.q = q.data, p.k = k.data, p.v = v.data, p.out = out.data;
    p.lse = lse != nullptr ? static_cast<float*>(lse->data) : nullptr;
    p.q_batch = q.stride[0], p.q_row = q.stride[1], p.q_head = q.stride[2];
    p.k_batch = k.stride[0], p.k_row = k.stride[1], p.k_head = k.stride[2];
    p.v_batch = v.stride[0], p.v_row = v.stride[1], p.v_head = v.stride[2];
    p.o_batch = out.stride[0], p.o_row = out.stride[1], p.o_head = out.stride[2];
    if (lse != nullptr) p.lse_batch = lse->stride[0], p.lse_head = lse->stride[1], p.lse_row = lse->stride[2];
    p.batch = pr.batch, p.seq_q = pr.seq_q, p.seq_k = pr.seq_k;
    p.diag_offset = pr.seq_k - pr.seq_q;
    // the C ABI layer clamped the windows to Nq + Nk (check_qkv), so i + Nk - Nq -/+ w stays in int64
    p.window_left = pr.window_left;
    p.window_right = pr.window_right;
    p.causal = pr.causal ? 1 : 0;
    p.heads_q = int32_t(pr.heads_q);
    p.group = int32_t(pr.group());
    p.score = pr.score;
    p.head_dim = int32_t(pr.head_dim);
    p.scale = pr.scale;
    p.scale_log2 = pr.scale * 1.4426950408889634f;
    p.factor = pr.pointwise_factor;
    p.sigmoid_bias = pr.sigmoid_bias;
    fill_ext(pr, dbias, &p);
    return p;
}

}  // namespace fsig::cuda
