// Masks and positions on CUDA (issue 9's targets): what ALiBi costs over no bias, and block-sparse
// time against the density of allowed blocks, forward and forward+backward, timed with CUDA events.
//
//   cuda-masks-bench [N=16384] [reps=10] [block_n=128] [hidden=2048] [batch=16384/N]
//
// bf16, d = 128, hidden 2048 (H = 16), batch 16384 / N (DESIGN §7), sigmoid and softmax, not causal (a small
// hidden and batch are for the emulator's smoke run, CTest cuda_masks_bench_emu).
// Rows: plain (no extension: the plain kernels), ALiBi (the extended kernels, ALiBi alone), key padding (a boolean
// mask [B, 1, 1, N]: all ones — the cost of its row of β per key tile — and its last quarter masked, whose key tiles
// are never loaded: ≈ 3/4 of the time), an all-ones block layout (the extended kernels with nothing masked: their own
// overhead; with block_n = 64 on the Hopper kernels, the mma.sync kernels' β staging too), then random layouts of
// 128 × block_n blocks at densities 1/2 … 1/16. 128 × 128 blocks hold whole forward tiles of both kernel
// families, so neither stages β (the tile skipping applies the layout); 128 × 64 are the mma.sync
// kernels' tiles, which the Hopper kernels (FSIG_CUDA_WGMMA) leave to them. The targets: ALiBi <= 1.05×
// plain; a layout of density ρ <= ρ × dense + 10 %. Prints one table; needs a GPU (exit 77 without).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "flashsig.h"
#include "parallel_chunks.h"

namespace {

#define CUDA_OK(call)                                                                                   \
    do {                                                                                                \
        cudaError_t e_ = (call);                                                                        \
        if (e_ != cudaSuccess) {                                                                        \
            std::fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(e_));                    \
            std::exit(1);                                                                               \
        }                                                                                               \
    } while (0)

fsig_tensor device_tensor(void* data, int dtype, int ndim, const int64_t* shape) {
    fsig_tensor t;
    std::memset(&t, 0, sizeof t);
    t.data = data, t.dtype = dtype, t.ndim = ndim, t.device_type = FSIG_DEVICE_CUDA;
    int64_t stride = 1;
    for (int a = ndim; a-- > 0;) t.shape[a] = shape[a], t.strides[a] = stride, stride *= shape[a];
    t.capacity_bytes = stride * (dtype == FSIG_DTYPE_FP32 ? 4 : dtype == FSIG_DTYPE_BOOL ? 1 : 2);
    return t;
}

// bf16 normals, drawn in chunks on every hardware thread; a chunk's values depend on the seed and its index only
void* device_random(size_t elems, uint64_t seed) {
    std::vector<uint16_t> h(elems);
    for_chunks(elems, [&](size_t begin, size_t end, size_t chunk) {
        std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + chunk);
        std::normal_distribution<float> normal;
        for (size_t i = begin; i < end; ++i) {
            const float f = normal(rng);
            uint32_t bits;
            std::memcpy(&bits, &f, 4);
            h[i] = uint16_t((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
        }
    });
    void* p = nullptr;
    CUDA_OK(cudaMalloc(&p, elems * 2));
    CUDA_OK(cudaMemcpy(p, h.data(), elems * 2, cudaMemcpyHostToDevice));
    return p;
}

}  // namespace

int main(int argc, char** argv) {
    const int64_t N = argc > 1 ? std::atoll(argv[1]) : 16384;
    const int reps = argc > 2 ? std::atoi(argv[2]) : 10;
    const int64_t bn = argc > 3 ? std::atoll(argv[3]) : 128;
    const int64_t hidden = argc > 4 ? std::atoll(argv[4]) : 2048, d = 128;
    const int64_t B = argc > 5 ? std::atoll(argv[5]) : std::max<int64_t>(1, 16384 / std::max<int64_t>(N, 1));
    if (N < 1 || reps < 1 || bn < 1 || hidden < d || hidden % d != 0 || B < 1) {
        std::fprintf(stderr, "usage: cuda-masks-bench [N >= 1] [reps >= 1] [block_n >= 1] [hidden: a multiple of "
                             "128] [batch >= 1]\n");
        return 2;
    }
    fsig_capabilities caps;
    std::memset(&caps, 0, sizeof caps);
    caps.struct_size = sizeof caps;
    if (fsig_get_capabilities(&caps) != FSIG_OK || !caps.cuda_compiled || caps.cuda_device_count < 1) {
        std::printf("SKIP: no CUDA device (or no CUDA in this build)\n");
        return 77;
    }
    const int64_t H = hidden / d, bm = 128;
    const int64_t qshape[4] = {B, N, H, d}, lshape[3] = {B, H, N}, sshape[1] = {H};
    const size_t elems = size_t(B * N * H * d);
    void *q = device_random(elems, 1), *k = device_random(elems, 2), *v = device_random(elems, 3), *g = device_random(elems, 4);
    void *out = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr, *lse = nullptr, *slopes = nullptr,
         *layout = nullptr, *key_mask = nullptr;
    for (void** p : {&out, &dq, &dk, &dv}) CUDA_OK(cudaMalloc(p, elems * 2));
    CUDA_OK(cudaMalloc(&lse, size_t(B * H * N) * 4));
    std::vector<float> slope_host(static_cast<size_t>(H));
    fsig_alibi_slopes(int32_t(H), slope_host.data());
    CUDA_OK(cudaMalloc(&slopes, size_t(H) * 4));
    CUDA_OK(cudaMemcpy(slopes, slope_host.data(), size_t(H) * 4, cudaMemcpyHostToDevice));
    const int64_t rows = (N + bm - 1) / bm, cols = (N + bn - 1) / bn, lay_shape[3] = {1, rows, cols};
    CUDA_OK(cudaMalloc(&layout, size_t(rows * cols)));
    const int64_t mask_shape[4] = {B, 1, 1, N};
    CUDA_OK(cudaMalloc(&key_mask, size_t(B * N)));
    const fsig_tensor tq = device_tensor(q, FSIG_DTYPE_BF16, 4, qshape), tk = device_tensor(k, FSIG_DTYPE_BF16, 4, qshape),
                      tv = device_tensor(v, FSIG_DTYPE_BF16, 4, qshape), tg = device_tensor(g, FSIG_DTYPE_BF16, 4, qshape),
                      to = device_tensor(out, FSIG_DTYPE_BF16, 4, qshape), tdq = device_tensor(dq, FSIG_DTYPE_BF16, 4, qshape),
                      tdk = device_tensor(dk, FSIG_DTYPE_BF16, 4, qshape), tdv = device_tensor(dv, FSIG_DTYPE_BF16, 4, qshape),
                      tl = device_tensor(lse, FSIG_DTYPE_FP32, 3, lshape), ts = device_tensor(slopes, FSIG_DTYPE_FP32, 1, sshape),
                      tlay = device_tensor(layout, FSIG_DTYPE_BOOL, 3, lay_shape),
                      tmask = device_tensor(key_mask, FSIG_DTYPE_BOOL, 4, mask_shape);
    cudaEvent_t e0, e1;
    CUDA_OK(cudaEventCreate(&e0));
    CUDA_OK(cudaEventCreate(&e1));

    std::printf("bf16 B=%lld H=%lld N=%lld d=%lld, not causal, layout blocks %lld x %lld, median of %d (ms; TFLOP/s "
                "counts the dense work)\n",
                (long long)B, (long long)H, (long long)N, (long long)d, (long long)bm, (long long)bn, reps);
    std::printf("%-8s %-14s %10s %10s %8s %10s %8s\n", "score", "variant", "allowed", "fwd ms", "TFLOP/s",
                "fwdbwd ms", "vs plain");
    const double fwd_flops = 4.0 * double(B * H) * double(N) * double(N) * double(d);
    for (int score : {FSIG_SCORE_SIGMOID, FSIG_SCORE_SOFTMAX}) {
        double plain_fwd = 0, plain_fb = 0;
        // -2 plain, -1 ALiBi, -3 and -4 key padding: no key masked, the last quarter masked
        const double densities[] = {-2, -1, -3, -4, 1.0, 0.5, 0.25, 0.125, 0.0625};
        for (double rho : densities) {
            fsig_attention_params p = fsig_attention_params_default();
            p.score = score;
            const fsig_tensor* alibi = rho == -1 ? &ts : nullptr;
            const fsig_tensor* lay = rho >= 0 ? &tlay : nullptr;
            const fsig_tensor* mask = rho == -3 || rho == -4 ? &tmask : nullptr;
            double allowed_fraction = 1;
            if (mask != nullptr) {
                const int64_t valid = rho == -3 ? N : N - N / 4;
                std::vector<unsigned char> h(size_t(B * N));
                for (int64_t i = 0; i < B * N; ++i) h[size_t(i)] = i % N < valid ? 1 : 0;
                CUDA_OK(cudaMemcpy(key_mask, h.data(), h.size(), cudaMemcpyHostToDevice));
                allowed_fraction = double(valid) / double(N);
            }
            if (rho >= 0) {
                p.sparse_block_m = bm, p.sparse_block_n = bn;
                std::vector<unsigned char> h(size_t(rows * cols));
                std::mt19937 rng(7);
                std::uniform_real_distribution<double> u;
                int64_t allowed = 0;
                for (auto& x : h) allowed += (x = u(rng) < rho ? 1 : 0);
                allowed_fraction = double(allowed) / double(rows * cols);
                CUDA_OK(cudaMemcpy(layout, h.data(), h.size(), cudaMemcpyHostToDevice));
            }
            // softmax's forward writes the LSE that its backward reads, with O; the other scores take neither
            const bool softmax = score == FSIG_SCORE_SOFTMAX;
            const fsig_tensor* lse_arg = softmax ? &tl : nullptr;
            const fsig_tensor* fwd_out = softmax ? &to : nullptr;
            auto time = [&](bool backward) {
                std::vector<float> ms;
                for (int r = -2; r < reps; ++r) {  // two warm-up runs
                    CUDA_OK(cudaEventRecord(e0));
                    int st = fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, lse_arg, alibi, nullptr, mask, lay, nullptr);
                    if (st == FSIG_OK && backward)
                        st = fsig_attention_backward_ex(&p, &tq, &tk, &tv, fwd_out, &tg, lse_arg, &tdq, &tdk, &tdv, alibi, nullptr,
                                                        mask, lay, nullptr, nullptr);
                    if (st != FSIG_OK) {
                        std::fprintf(stderr, "call failed: %s\n", fsig_last_error());
                        std::exit(1);
                    }
                    CUDA_OK(cudaEventRecord(e1));
                    CUDA_OK(cudaEventSynchronize(e1));
                    float t = 0;
                    CUDA_OK(cudaEventElapsedTime(&t, e0, e1));
                    if (r >= 0) ms.push_back(t);
                }
                std::sort(ms.begin(), ms.end());
                return double(ms[ms.size() / 2]);
            };
            const double fwd = time(false), fb = time(true);
            if (rho == -2) plain_fwd = fwd, plain_fb = fb;
            const char* name = rho == -2   ? "plain"
                               : rho == -1 ? "alibi"
                               : rho == -3 ? "keypad none"
                               : rho == -4 ? "keypad 1/4"
                                           : nullptr;
            char label[32];
            if (name == nullptr) std::snprintf(label, sizeof label, "layout %.4g", rho), name = label;
            std::printf("%-8s %-14s %10.4f %10.3f %8.1f %10.3f %5.3f/%5.3f\n", score == FSIG_SCORE_SIGMOID ? "sigmoid" : "softmax",
                        name, allowed_fraction, fwd, fwd_flops / fwd / 1e9, fb, fwd / plain_fwd,
                        fb / plain_fb);
        }
    }
    return 0;
}
