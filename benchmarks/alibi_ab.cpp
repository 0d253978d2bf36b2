// ALiBi's cost on the CPU: plain and ALiBi calls interleaved (so that the host's drift falls on both alike), the
// median of each and their ratio, per score, forward and forward+backward (issue 9: ALiBi ≤ 5 % slower than no
// bias). The slopes are the standard schedule times `slope_mul`: with small slopes the penalties never reach the
// subnormal range, which separates ALiBi's arithmetic from the far keys' subnormal weights (benchmarks/NOTES.md,
// "ALiBi on an Intel Xeon").
//
//   alibi-ab [N=2048] [slope_mul=1] [pairs=9] [threads=0] [fp32|bf16]
//
// B = 1, H = 8, d = 64, not causal; softmax, sigmoid, gelu, softplus, relu, relu2; q, k, v, out, dout and the
// gradients in the dtype given (the LSE and slopes fp32).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "flashsig.h"

namespace {

// A dense row-major tensor over data
fsig_tensor tensor(void* data, int dtype, const std::vector<int64_t>& shape) {
    fsig_tensor t;
    std::memset(&t, 0, sizeof t);
    t.data = data, t.dtype = dtype, t.ndim = int32_t(shape.size());
    int64_t stride = 1;
    for (int a = t.ndim - 1; a >= 0; --a) t.shape[a] = shape[size_t(a)], t.strides[a] = stride, stride *= shape[size_t(a)];
    t.capacity_bytes = stride * (dtype == FSIG_DTYPE_FP32 ? 4 : 2);
    return t;
}

// Storage for n elements of dtype: fp32 values as they are, bf16 values rounded to nearest even
struct Buffer {
    std::vector<uint32_t> words;
    Buffer(const std::vector<float>& values, int dtype) : words((values.size() * (dtype == FSIG_DTYPE_FP32 ? 4 : 2) + 3) / 4) {
        if (dtype == FSIG_DTYPE_FP32) {
            std::memcpy(words.data(), values.data(), values.size() * 4);
            return;
        }
        std::vector<uint16_t> half(values.size());
        for (size_t i = 0; i < values.size(); ++i) {
            uint32_t u;
            std::memcpy(&u, &values[i], 4);
            half[i] = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
        }
        std::memcpy(words.data(), half.data(), half.size() * 2);
    }
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    const int64_t N = argc > 1 ? std::atoll(argv[1]) : 2048, B = 1, H = 8, d = 64;
    const float slope_mul = argc > 2 ? float(std::atof(argv[2])) : 1.f;
    const int pairs = argc > 3 ? std::atoi(argv[3]) : 9;
    const bool bf16 = argc > 5 && std::strcmp(argv[5], "bf16") == 0;
    if (N < 1 || pairs < 1 || fsig_set_num_threads(argc > 4 ? std::atoi(argv[4]) : 0) != FSIG_OK ||
        (argc > 5 && !bf16 && std::strcmp(argv[5], "fp32") != 0))
        return 2;
    const int dt = bf16 ? FSIG_DTYPE_BF16 : FSIG_DTYPE_FP32;
    const size_t elems = size_t(B * N * H * d);
    std::vector<float> values[4], lse(static_cast<size_t>(B * H * N)), slopes(static_cast<size_t>(H));
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    for (auto& x : values) {
        x.resize(elems);
        for (float& e : x) e = normal(rng);
    }
    Buffer q(values[0], dt), k(values[1], dt), v(values[2], dt), dout(values[3], dt), out(values[0], dt),
        dq(values[0], dt), dk(values[0], dt), dv(values[0], dt);
    fsig_alibi_slopes(int32_t(H), slopes.data());
    for (float& s : slopes) s *= slope_mul;
    const std::vector<int64_t> bnhd = {B, N, H, d};
    const fsig_tensor tq = tensor(q.words.data(), dt, bnhd), tk = tensor(k.words.data(), dt, bnhd),
                      tv = tensor(v.words.data(), dt, bnhd), tg = tensor(dout.words.data(), dt, bnhd),
                      to = tensor(out.words.data(), dt, bnhd), tdq = tensor(dq.words.data(), dt, bnhd),
                      tdk = tensor(dk.words.data(), dt, bnhd), tdv = tensor(dv.words.data(), dt, bnhd),
                      tl = tensor(lse.data(), FSIG_DTYPE_FP32, {B, H, N}),
                      ts = tensor(slopes.data(), FSIG_DTYPE_FP32, {H});
    std::printf("N=%lld B=%lld H=%lld d=%lld %s, slopes x %g, threads %d, medians of %d interleaved pairs\n",
                (long long)N, (long long)B, (long long)H, (long long)d, bf16 ? "bf16" : "fp32", double(slope_mul),
                fsig_get_num_threads(), pairs);
    std::printf("%-9s %-7s %10s %10s %8s\n", "score", "pass", "plain ms", "alibi ms", "ratio");
    const struct {
        int score;
        const char* name;
    } scores[] = {{FSIG_SCORE_SOFTMAX, "softmax"}, {FSIG_SCORE_SIGMOID, "sigmoid"}, {FSIG_SCORE_GELU, "gelu"},
                  {FSIG_SCORE_SOFTPLUS, "softplus"}, {FSIG_SCORE_RELU, "relu"}, {FSIG_SCORE_RELU2, "relu2"}};
    for (const auto& s : scores)
        for (bool backward : {false, true}) {
            fsig_attention_params p = fsig_attention_params_default();
            p.score = s.score;
            const fsig_tensor* lse_arg = s.score == FSIG_SCORE_SOFTMAX ? &tl : nullptr;
            std::vector<double> times[2];
            for (int r = 0; r < pairs; ++r)
                for (int alibi = 0; alibi < 2; ++alibi) {
                    const fsig_tensor* slopes_arg = alibi ? &ts : nullptr;
                    const auto t0 = std::chrono::steady_clock::now();
                    int st = fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, lse_arg, slopes_arg, nullptr, nullptr,
                                                       nullptr, nullptr);
                    if (st == FSIG_OK && backward)
                        st = fsig_attention_backward_ex(&p, &tq, &tk, &tv, &to, &tg, lse_arg, &tdq, &tdk, &tdv, slopes_arg,
                                                        nullptr, nullptr, nullptr, nullptr, nullptr);
                    if (st != FSIG_OK) {
                        std::fprintf(stderr, "%s: %s\n", s.name, fsig_last_error());
                        return 1;
                    }
                    times[alibi].push_back(
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
                }
            const double plain = median(times[0]), alibi = median(times[1]);
            std::printf("%-9s %-7s %10.1f %10.1f %8.3f\n", s.name, backward ? "fwd+bwd" : "fwd", plain * 1e3, alibi * 1e3,
                        alibi / plain);
        }
    return 0;
}
