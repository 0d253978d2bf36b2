// ALiBi's cost on the CPU: plain and ALiBi calls interleaved (so that the host's drift falls on both alike), the
// median of each and their ratio, per score, forward and forward+backward (issue 9: ALiBi ≤ 5 % slower than no
// bias). The slopes are the standard schedule times `slope_mul`: with small slopes the penalties never reach the
// subnormal range, which separates ALiBi's arithmetic from the far keys' subnormal weights (benchmarks/NOTES.md,
// "ALiBi on an Intel Xeon").
//
//   alibi-ab [N=2048] [slope_mul=1] [pairs=9] [threads=0]
//
// fp32, B = 1, H = 8, d = 64, not causal; softmax, sigmoid, gelu, softplus.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "flashsig.h"

namespace {

// A dense row-major fp32 tensor over data
fsig_tensor tensor(float* data, const std::vector<int64_t>& shape) {
    fsig_tensor t;
    std::memset(&t, 0, sizeof t);
    t.data = data, t.dtype = FSIG_DTYPE_FP32, t.ndim = int32_t(shape.size());
    int64_t stride = 1;
    for (int a = t.ndim - 1; a >= 0; --a) t.shape[a] = shape[size_t(a)], t.strides[a] = stride, stride *= shape[size_t(a)];
    t.capacity_bytes = stride * 4;
    return t;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    const int64_t N = argc > 1 ? std::atoll(argv[1]) : 2048, B = 1, H = 8, d = 64;
    const float slope_mul = argc > 2 ? float(std::atof(argv[2])) : 1.f;
    const int pairs = argc > 3 ? std::atoi(argv[3]) : 9;
    if (N < 1 || pairs < 1 || fsig_set_num_threads(argc > 4 ? std::atoi(argv[4]) : 0) != FSIG_OK) return 2;
    const size_t elems = size_t(B * N * H * d);
    std::vector<float> q(elems), k(elems), v(elems), dout(elems), out(elems), dq(elems), dk(elems), dv(elems),
        lse(static_cast<size_t>(B * H * N)), slopes(static_cast<size_t>(H));
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    for (auto* x : {&q, &k, &v, &dout})
        for (float& e : *x) e = normal(rng);
    fsig_alibi_slopes(int32_t(H), slopes.data());
    for (float& s : slopes) s *= slope_mul;
    const fsig_tensor tq = tensor(q.data(), {B, N, H, d}), tk = tensor(k.data(), {B, N, H, d}),
                      tv = tensor(v.data(), {B, N, H, d}), tg = tensor(dout.data(), {B, N, H, d}),
                      to = tensor(out.data(), {B, N, H, d}), tdq = tensor(dq.data(), {B, N, H, d}),
                      tdk = tensor(dk.data(), {B, N, H, d}), tdv = tensor(dv.data(), {B, N, H, d}),
                      tl = tensor(lse.data(), {B, H, N}), ts = tensor(slopes.data(), {H});
    std::printf("N=%lld B=%lld H=%lld d=%lld fp32, slopes x %g, threads %d, medians of %d interleaved pairs\n",
                (long long)N, (long long)B, (long long)H, (long long)d, double(slope_mul), fsig_get_num_threads(), pairs);
    std::printf("%-9s %-7s %10s %10s %8s\n", "score", "pass", "plain ms", "alibi ms", "ratio");
    const struct {
        int score;
        const char* name;
    } scores[] = {{FSIG_SCORE_SOFTMAX, "softmax"}, {FSIG_SCORE_SIGMOID, "sigmoid"}, {FSIG_SCORE_GELU, "gelu"},
                  {FSIG_SCORE_SOFTPLUS, "softplus"}};
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
