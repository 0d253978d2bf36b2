// sgemm-anchor: the fp32 GEMM rate of this machine measured the way flashsig-bench measures
// attention (steady_clock, warm-up, median of timed runs, random inputs), so the CPU kernel's GFLOP/s
// can be read against it. OpenBLAS only; an optional target (never needed by the library or CI).
//   sgemm-anchor [--threads N]        (default: OpenBLAS's own thread count)
// OpenBLAS picks its kernels by CPUID; where it does not know the CPU, OPENBLAS_CORETYPE=SkylakeX (or
// Haswell) forces a kernel family, and the corename line of the output says which one ran.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<float> random_matrix(size_t n, unsigned seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> m(n);
    for (auto& x : m) x = dist(gen);
    return m;
}

// Times `reps` back-to-back products C[i] = A[i]·op(B[i]) (row-major; B transposed when transB) as
// one run; reports the median over runs filling >= 1 s (at least 5).
void time_gemm(const char* label, int M, int N, int K, bool transB, int reps) {
    std::vector<std::vector<float>> A, B, C;
    for (int r = 0; r < reps; ++r) {
        A.push_back(random_matrix(size_t(M) * K, 1 + r));
        B.push_back(random_matrix(size_t(K) * N, 101 + r));
        C.emplace_back(size_t(M) * N, NAN);
    }
    auto run = [&] {
        for (int r = 0; r < reps; ++r)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A[r].data(),
                        K, B[r].data(), transB ? K : N, 0.0f, C[r].data(), N);
    };
    run();  // warm-up: thread start, page faults
    std::vector<double> ms;
    auto start = Clock::now();
    while (ms.size() < 5 || std::chrono::duration<double>(Clock::now() - start).count() < 1.0) {
        auto t0 = Clock::now();
        run();
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        if (ms.size() >= 2000) break;
    }
    for (auto& c : C)
        for (float x : c)
            if (!std::isfinite(x)) {
                std::fprintf(stderr, "sgemm-anchor: %s wrote a non-finite value\n", label);
                std::exit(1);
            }
    double flops = 2.0 * M * N * K * reps;
    double med = median(ms);
    std::printf("%-44s %5d %5d %5d %4d %10.3f %10.3f %9.1f\n", label, M, N, K, reps, med,
                *std::min_element(ms.begin(), ms.end()), flops / (med * 1e-3) / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            openblas_set_num_threads(std::atoi(argv[++i]));
        } else {
            std::fprintf(stderr, "usage: sgemm-anchor [--threads N]\n");
            return 2;
        }
    }
    std::printf("OpenBLAS %s; corename %s; %d threads\n", openblas_get_config(), openblas_get_corename(),
                openblas_get_num_threads());
    std::printf("%-44s %5s %5s %5s %4s %10s %10s %9s\n", "product (row-major)", "M", "N", "K", "reps", "median ms",
                "min ms", "GFLOP/s");
    time_gemm("square 2048^3", 2048, 2048, 2048, false, 1);
    // The two products of attention per head at B=1, H=8, N=1024, d=64 (S = Q·Kᵀ, O = P·V), eight
    // heads per run: together 2.15 GFLOP, the same count as the attention benchmark's forward.
    time_gemm("attention S = Q K^T, 8 heads", 1024, 1024, 64, true, 8);
    time_gemm("attention O = P V, 8 heads", 1024, 64, 1024, false, 8);
    time_gemm("attention-shaped 4096x4096x64 (S, N=4096)", 4096, 4096, 64, true, 1);
    time_gemm("attention-shaped d=128: 1024x1024x128", 1024, 1024, 128, true, 8);
    return 0;
}
