// Block-sparse attention time vs density on the CPU (issue 9): the kernels skip key tiles that the
// block layout leaves empty for a whole query tile, so time should fall in proportion to the density
// of allowed blocks, down to a floor (Q packing, O and LSE writes, the backward's row pass).
//
//   masks_density [N=4096] [threads=0] [reps=3]
//
// fp32, B = 1, H = 8, d = 64, softmax, not causal; layout blocks 64 × 128 (one kernel tile each), random
// with the given density (fixed seed); the median of `reps` forward and forward+backward runs per density.
// A row "alibi" (no layout; ALiBi with the standard slopes) gives issue 9's other target: ALiBi's cost over
// no bias (≤ 5 %). Rows "pad mask", "pad bias": key padding, the last half of the keys masked by a mask [1, 1, 1, N]
// or by an fp32 bias of −inf (both skip those key tiles: ≈ half the "no layout" time).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "flashsig.h"

namespace {

fsig_tensor dense(void* data, int64_t b, int64_t n, int64_t h, int64_t d) {
    fsig_tensor t;
    std::memset(&t, 0, sizeof t);
    t.data = data;
    t.capacity_bytes = b * n * h * d * 4;
    t.dtype = FSIG_DTYPE_FP32;
    t.ndim = 4;
    const int64_t shape[4] = {b, n, h, d}, strides[4] = {n * h * d, h * d, d, 1};
    for (int a = 0; a < 4; ++a) t.shape[a] = shape[a], t.strides[a] = strides[a];
    return t;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
    const int64_t N = argc > 1 ? std::atoll(argv[1]) : 4096;
    const int threads = argc > 2 ? std::atoi(argv[2]) : 0;
    const int reps = argc > 3 ? std::atoi(argv[3]) : 3;
    const int64_t B = 1, H = 8, d = 64, bm = 64, bn = 128;
    if (fsig_set_num_threads(threads) != FSIG_OK) return 1;
    std::vector<float> q(size_t(B * N * H * d)), k(q.size()), v(q.size()), out(q.size()), dout(q.size()), dq(q.size()),
        dk(q.size()), dv(q.size()), lse(size_t(B * H * N));
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    for (auto* x : {&q, &k, &v, &dout})
        for (float& e : *x) e = normal(rng);
    const fsig_tensor tq = dense(q.data(), B, N, H, d), tk = dense(k.data(), B, N, H, d), tv = dense(v.data(), B, N, H, d),
                      to = dense(out.data(), B, N, H, d), tg = dense(dout.data(), B, N, H, d),
                      tdq = dense(dq.data(), B, N, H, d), tdk = dense(dk.data(), B, N, H, d),
                      tdv = dense(dv.data(), B, N, H, d);
    fsig_tensor tl;
    std::memset(&tl, 0, sizeof tl);
    tl.data = lse.data(), tl.capacity_bytes = int64_t(lse.size()) * 4, tl.dtype = FSIG_DTYPE_FP32, tl.ndim = 3;
    tl.shape[0] = B, tl.shape[1] = H, tl.shape[2] = N, tl.strides[0] = H * N, tl.strides[1] = N, tl.strides[2] = 1;
    const int64_t rows = (N + bm - 1) / bm, cols = (N + bn - 1) / bn;
    std::vector<unsigned char> layout(size_t(rows * cols));
    fsig_tensor tlay;
    std::memset(&tlay, 0, sizeof tlay);
    tlay.data = layout.data(), tlay.capacity_bytes = int64_t(layout.size()), tlay.dtype = FSIG_DTYPE_BOOL, tlay.ndim = 3;
    tlay.shape[0] = 1, tlay.shape[1] = rows, tlay.shape[2] = cols, tlay.strides[0] = rows * cols, tlay.strides[1] = cols,
    tlay.strides[2] = 1;
    std::printf("N=%lld B=%lld H=%lld d=%lld fp32 softmax, blocks %lldx%lld, threads %d, median of %d\n", (long long)N,
                (long long)B, (long long)H, (long long)d, (long long)bm, (long long)bn, fsig_get_num_threads(), reps);
    std::vector<float> slopes(static_cast<size_t>(H));
    fsig_alibi_slopes(int32_t(H), slopes.data());
    fsig_tensor tslopes;
    std::memset(&tslopes, 0, sizeof tslopes);
    tslopes.data = slopes.data(), tslopes.capacity_bytes = H * 4, tslopes.dtype = FSIG_DTYPE_FP32, tslopes.ndim = 1;
    tslopes.shape[0] = H, tslopes.strides[0] = 1;
    // key padding: keys from N / 2 on masked, as a mask and as a bias of −inf, [1, 1, 1, N]
    std::vector<unsigned char> pad_mask(static_cast<size_t>(N));
    std::vector<float> pad_bias(static_cast<size_t>(N));
    for (int64_t j = 0; j < N; ++j) pad_mask[size_t(j)] = j < N / 2, pad_bias[size_t(j)] = j < N / 2 ? 0.f : -INFINITY;
    auto key_row = [&](void* data, int32_t dtype, int64_t bytes) {
        fsig_tensor t;
        std::memset(&t, 0, sizeof t);
        t.data = data, t.capacity_bytes = bytes, t.dtype = dtype, t.ndim = 4;
        for (int a = 0; a < 4; ++a) t.shape[a] = a == 3 ? N : 1, t.strides[a] = a == 3 ? 1 : N;
        return t;
    };
    const fsig_tensor tpad_mask = key_row(pad_mask.data(), FSIG_DTYPE_BOOL, N),
                      tpad_bias = key_row(pad_bias.data(), FSIG_DTYPE_FP32, 4 * N);
    std::printf("%-10s %10s %12s %12s %14s\n", "density", "blocks", "fwd ms", "fwd+bwd ms", "fwd GFLOP/s*");
    // -1: no layout, -2: no layout and ALiBi, -3 / -4: key padding of half the keys by a mask / a bias
    for (double density : {-1.0, -2.0, -3.0, -4.0, 1.0, 0.5, 0.25, 0.125, 0.0625, 0.0}) {
        fsig_attention_params p = fsig_attention_params_default();
        const fsig_tensor* alibi = density == -2.0 ? &tslopes : nullptr;
        const fsig_tensor* mask = density == -3.0 ? &tpad_mask : nullptr;
        const fsig_tensor* bias = density == -4.0 ? &tpad_bias : nullptr;
        int64_t allowed = density <= -3.0 ? rows * ((N / 2 + bn - 1) / bn) : rows * cols;
        if (density >= 0) {
            std::mt19937 lr(7);
            std::uniform_real_distribution<double> u(0, 1);
            allowed = 0;
            for (auto& x : layout) allowed += (x = u(lr) < density ? 1 : 0);
            p.sparse_block_m = bm, p.sparse_block_n = bn;
        }
        const fsig_tensor* lay = density >= 0 ? &tlay : nullptr;
        std::vector<double> tf, tb;
        for (int r = 0; r < reps; ++r) {
            auto t0 = std::chrono::steady_clock::now();
            if (fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, &tl, alibi, bias, mask, lay, nullptr) != FSIG_OK) {
                std::fprintf(stderr, "forward: %s\n", fsig_last_error());
                return 1;
            }
            tf.push_back(seconds_since(t0));
            t0 = std::chrono::steady_clock::now();
            if (fsig_attention_backward_ex(&p, &tq, &tk, &tv, &to, &tg, &tl, &tdq, &tdk, &tdv, alibi, bias, mask, lay,
                                           nullptr, nullptr) != FSIG_OK) {
                std::fprintf(stderr, "backward: %s\n", fsig_last_error());
                return 1;
            }
            tb.push_back(seconds_since(t0) + tf.back());
        }
        std::sort(tf.begin(), tf.end());
        std::sort(tb.begin(), tb.end());
        const double f = tf[tf.size() / 2], fb = tb[tb.size() / 2];
        // * work of the allowed blocks only: 4·B·H·(allowed elements)·d
        const double flops = 4.0 * double(B * H) * double(allowed) * double(bm * bn) * double(d);
        const std::string name = density == -1.0   ? "no layout"
                                 : density == -2.0 ? "alibi"
                                 : density == -3.0 ? "pad mask"
                                 : density == -4.0 ? "pad bias"
                                                   : std::to_string(density).substr(0, 6);
        std::printf("%-10s %10lld %12.1f %12.1f %14.1f\n", name.c_str(),
                    (long long)allowed, f * 1e3, fb * 1e3, f > 0 ? flops / f * 1e-9 : 0.0);
    }
    return 0;
}
