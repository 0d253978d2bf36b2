// fma-peak: the fp32 FMA throughput of this CPU, per thread and with all threads, from register-only
// FMA chains (no memory traffic). Two uses: the arithmetic ceiling of the CPU kernels, and whether
// two vCPUs are separate cores (the rate doubles with 2 threads) or SMT siblings sharing one core's
// FMA pipes (it does not). x86-64: AVX-512 when the CPU has it, else AVX2; AArch64: NEON.
//   fma-peak [seconds per measurement, default 1]
#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <utility>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kChains = 12;   // independent accumulators: covers FMA latency (4) × pipes (2) with room
constexpr long kInner = 1 << 16;

// Returns FLOPs done (2 per lane per FMA). The result is kept live through `sink`.
#if defined(__x86_64__)
__attribute__((target("avx512f"))) double fma512(double seconds, float* sink) {
    __m512 acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(0.001f * c);
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    double flops = 0;
    auto t0 = Clock::now();
    do {
        for (long i = 0; i < kInner; ++i)
            // unrolled, or -O2 keeps the accumulators in memory and measures the stores
#pragma GCC unroll 16
            for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
        flops += 2.0 * 16 * kChains * kInner;
    } while (std::chrono::duration<double>(Clock::now() - t0).count() < seconds);
    __m512 s = acc[0];
    for (int c = 1; c < kChains; ++c) s = _mm512_add_ps(s, acc[c]);
    float lanes[16];
    _mm512_storeu_ps(lanes, s);  // not _mm512_reduce_add_ps: GCC 12 warns inside its own header
    *sink = lanes[0];
    return flops;
}

__attribute__((target("avx2,fma"))) double fma256(double seconds, float* sink) {
    __m256 acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_ps(0.001f * c);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    double flops = 0;
    auto t0 = Clock::now();
    do {
        for (long i = 0; i < kInner; ++i)
            // unrolled, or -O2 keeps the accumulators in memory and measures the stores
#pragma GCC unroll 16
            for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
        flops += 2.0 * 8 * kChains * kInner;
    } while (std::chrono::duration<double>(Clock::now() - t0).count() < seconds);
    __m256 s = acc[0];
    for (int c = 1; c < kChains; ++c) s = _mm256_add_ps(s, acc[c]);
    float lanes[8];
    _mm256_storeu_ps(lanes, s);
    *sink = lanes[0];
    return flops;
}
#elif defined(__aarch64__)
// kInner steps of one FMA per chain (acc += a·b, FMLA's own form). A block of its own, with no call
// inside: across the clock call every vector register is caller-saved, and GCC then kept the chains in
// memory for the whole loop.
template <size_t... C>
__attribute__((noinline)) void fma_neon_block(float32x4_t* chains, float32x4_t a, float32x4_t b,
                                              std::index_sequence<C...>) {
    float32x4_t acc[] = {chains[C]...};
    for (long i = 0; i < kInner; ++i) ((acc[C] = vfmaq_f32(acc[C], a, b)), ...);
    ((chains[C] = acc[C]), ...);
}

// 24 chains: up to 4 FMA pipes (Neoverse V1/V2) × 4 cycles of latency, with room
double fma_neon(double seconds, float* sink) {
    constexpr int kNeonChains = 24;
    float32x4_t chains[kNeonChains];
    for (int c = 0; c < kNeonChains; ++c) chains[c] = vdupq_n_f32(0.001f * c);
    const float32x4_t a = vdupq_n_f32(0.999999f), b = vdupq_n_f32(1e-7f);
    double flops = 0;
    auto t0 = Clock::now();
    do {
        fma_neon_block(chains, a, b, std::make_index_sequence<kNeonChains>());
        flops += 2.0 * 4 * kNeonChains * kInner;
    } while (std::chrono::duration<double>(Clock::now() - t0).count() < seconds);
    float32x4_t s = chains[0];
    for (int c = 1; c < kNeonChains; ++c) s = vaddq_f32(s, chains[c]);
    *sink = vgetq_lane_f32(s, 0);
    return flops;
}
#endif

// This CPU's widest FMA: 512-bit (AVX-512F), 256-bit (AVX2) or 128-bit (NEON).
struct Fma {
    const char* name;
    double (*run)(double seconds, float* sink);
};
Fma widest_fma() {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return {"512-bit (AVX-512F)", fma512};
    return {"256-bit (AVX2+FMA)", fma256};
#else
    return {"128-bit (NEON)", fma_neon};
#endif
}

// GFLOP/s of `threads` threads running at once (total over threads).
double measure(int threads, const Fma& fma, double seconds) {
    std::vector<double> flops(threads);
    std::vector<float> sinks(threads);
    std::atomic<int> ready{0};
    std::vector<std::thread> pool;
    auto t0 = Clock::now();
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            ready.fetch_add(1);
            while (ready.load() < threads) {
            }
            flops[t] = fma.run(seconds, &sinks[t]);
        });
    for (auto& th : pool) th.join();
    double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    double total = 0;
    for (double f : flops) total += f;
    if (sinks[0] == 12345.678f) std::printf(" ");  // keeps the chains live
    return total / elapsed / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
    double seconds = argc > 1 ? std::atof(argv[1]) : 1.0;
    if (seconds <= 0) seconds = 1.0;
    const Fma fma = widest_fma();
    const int hw = int(std::max(1u, std::thread::hardware_concurrency()));
    std::printf("fp32 FMA, %s, %.1f s per measurement (3 measurements, best kept)\n", fma.name, seconds);
    double one = 0;
    std::vector<int> counts;
    for (int t = 1; t < hw; t *= 2) counts.push_back(t);
    counts.push_back(hw);
    for (int threads : counts) {
        double best = 0;
        for (int r = 0; r < 3; ++r) best = std::max(best, measure(threads, fma, seconds));
        if (threads == 1) one = best;
        std::printf("threads %2d: %8.1f GFLOP/s total, %7.1f per thread, %.2fx one thread\n", threads, best,
                    best / threads, best / one);
    }
    return 0;
}
