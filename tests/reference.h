// The naive attention of DESIGN.md §4 that materialises S — for tests only, never in the library.
//
// One templated core computes two things:
//  - ref64: everything in fp64 (the exact math up to ~1e-15);
//  - naive same dtype (§6): the computation as a framework does it in the dtype — inputs in the dtype,
//    S by a matmul with fp32 accumulation rounded to the dtype, P in fp32 from that S rounded to the
//    dtype, O by an fp32-accumulated matmul rounded to the dtype; backward likewise (dP, dS, dQ, dK,
//    dV each fp32-accumulated, then rounded to the dtype). For fp32 "rounded" is the identity.
// Dense tensors are contiguous BSHD: q/out/dout [B, Nq, Hq, d], k/v [B, Nk, Hk, d]; lse [B, Hq, Nq].
// The §6 rule itself is check_rule below.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace ref {

enum Dtype : int { kFp32 = 0, kFp16 = 1, kBf16 = 2 };
enum Score : int { kSoftmax = 0, kSigmoid, kRelu, kRelu2, kGelu, kSoftplus, kIdentity, kScoreCount };

const char* dtype_name(int dtype);
const char* score_name(int score);

// ---- 16-bit float conversions (round to nearest even; NaN stays NaN, overflow goes to inf) ----
// (inline: the naive 16-bit references round every intermediate; the out-of-line call was 9 % of
// `test_attention --tier ci`)
inline uint16_t float_to_half(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // NaN, quiet
    if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
    const int exp = int(ax >> 23) - 127;
    if (exp >= -14) {  // normal half: drop 13 mantissa bits, round half to even
        uint32_t h = ((uint32_t(exp + 15) << 10) | ((ax >> 13) & 0x3ffu));
        const uint32_t rest = ax & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
        return uint16_t(sign | h);
    }
    if (exp < -25) return sign;  // below half the smallest subnormal: zero
    // subnormal half: value = m · 2^-24 with m = round(mant · 2^(exp + 24))
    const uint32_t mant = (ax & 0x7fffffu) | 0x800000u;  // 24 significant bits, value = mant · 2^(exp−23)
    const int shift = -exp - 1;                          // 2^(exp−23) / 2^−24 = 2^(exp+1): shift right by −exp−1
    uint32_t m = mant >> shift;
    const uint32_t rest = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (m & 1u))) ++m;
    return uint16_t(sign | m);
}

inline float half_to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    float f;
    if (exp == 0) {
        f = std::ldexp(float(mant), -24);
        uint32_t x;
        std::memcpy(&x, &f, 4);
        x |= sign;
        std::memcpy(&f, &x, 4);
        return f;
    }
    uint32_t x = exp == 31 ? (sign | 0x7f800000u | (mant << 13)) : (sign | ((exp + 112) << 23) | (mant << 13));
    std::memcpy(&f, &x, 4);
    return f;
}

inline uint16_t float_to_bf16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // NaN stays NaN (quiet)
    const uint32_t rest = x & 0xffffu;
    uint32_t h = x >> 16;
    if (rest > 0x8000u || (rest == 0x8000u && (h & 1u))) ++h;  // overflow carries into inf, as it should
    return uint16_t(h);
}

inline float bf16_to_float(uint16_t h) {
    uint32_t x = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
}

// f rounded to the nearest value of dtype, returned as float (the identity for fp32).
inline float round_to(int dtype, float f) {
    switch (dtype) {
        case kFp16: return half_to_float(float_to_half(f));
        case kBf16: return bf16_to_float(float_to_bf16(f));
        default: return f;
    }
}

// ---- one attention problem (the math of §4; no memory layout) ----
struct Spec {
    int64_t B = 1, Nq = 1, Nk = 1, Hq = 1, Hk = 1, d = 1;
    int score = kSoftmax;
    bool causal = false;
    int64_t window_left = -1, window_right = -1;  // -1 = unbounded
    double scale = 0.0 / 0.0;         // NaN = 1/sqrt(d)
    double sigmoid_bias = 0.0 / 0.0;  // NaN = -ln Nk
    double alpha = 1.0;

    // ---- extensions of DESIGN.md §4 (tests/test_masks.cpp); all off by default ----
    std::vector<double> alibi_slopes;    // [Hq], or [B, Hq] when alibi_per_batch; empty = no ALiBi
    bool alibi_per_batch = false;
    std::vector<double> bias;            // dense [bias_b, bias_h, bias_q, Nk]; empty = none; -inf masks
    int64_t bias_b = 1, bias_h = 1, bias_q = 1;  // each 1 (broadcast) or B, Hq, Nq
    std::vector<unsigned char> mask;     // dense [mask_b, mask_h, mask_q, Nk], nonzero = allowed; empty = none
    int64_t mask_b = 1, mask_h = 1, mask_q = 1;
    int64_t strided = 0;                 // |δ_i − j| mod strided = 0; given with a window: window ∪ strided
    int64_t block_m = 0, block_n = 0;    // block-sparse: layout [layout_h, ⌈Nq/bm⌉, ⌈Nk/bn⌉], nonzero = allowed
    std::vector<unsigned char> layout;
    int64_t layout_h = 1;
    int64_t logn_train = 0;              // λ_i = max(1, ln n_i / ln logn_train), n_i by causal and window; 0 = off
    bool want_dbias = false;             // backward also returns dBias (needs a bias)

    // every mask of §4 (a bias of −inf included); allowed() is causal and window alone
    bool allowed_at(int64_t b, int64_t h, int64_t i, int64_t j) const;
    void allowed_row(int64_t b, int64_t h, int64_t i, unsigned char* out) const;  // out[j] = allowed_at(b, h, i, j)
    double beta(int64_t b, int64_t h, int64_t i, int64_t j) const;  // ALiBi + bias
    double lambda(int64_t i) const;                                  // log-n factor (1 when off)
    size_t bias_elems() const { return size_t(bias_b * bias_h * bias_q * Nk); }
    bool extended() const {
        return !alibi_slopes.empty() || !bias.empty() || !mask.empty() || strided > 0 || block_m > 0 || logn_train > 0;
    }

    double eff_scale() const;
    double eff_bias() const;
    double pointwise_factor() const;  // Nk^-alpha
    bool allowed(int64_t i, int64_t j) const;
    size_t q_elems() const { return size_t(B * Nq * Hq * d); }
    size_t kv_elems() const { return size_t(B * Nk * Hk * d); }
    size_t lse_elems() const { return size_t(B * Hq * Nq); }
    std::string describe() const;
};

template <class R>
struct Forward {
    std::vector<R> out, lse;  // lse only for softmax (+inf on a row with no allowed key)
};

template <class R>
struct Grads {
    std::vector<R> dq, dk, dv;
    std::vector<R> dbias;  // Spec::want_dbias: dS summed over the bias's broadcast dims, the bias's shape
};

// fp64 reference. Inputs are dense BSHD doubles.
Forward<double> forward64(const Spec& s, const double* q, const double* k, const double* v);
// Backward of L = <dout, out>: recomputes S, P (and O, LSE for softmax) exactly. With out_given, softmax's
// D = rowsum(dO ∘ O) comes from it: the checks pass the O they hand the library, so its rounding to the
// dtype counts as an input, not as the kernel's error.
Grads<double> backward64(const Spec& s, const double* q, const double* k, const double* v, const double* dout,
                         const double* out_given = nullptr);

// Naive same-dtype computation; inputs hold values representable in dtype. backward_naive uses the
// given out (in the dtype, as a framework's autograd would keep it) for softmax's D = rowsum(dO ∘ O).
Forward<float> forward_naive(const Spec& s, int dtype, const float* q, const float* k, const float* v);
Grads<float> backward_naive(const Spec& s, int dtype, const float* q, const float* k, const float* v,
                            const float* out, const float* dout);

// Gradients of L = <dout, out> by central differences of forward64 (step h on each input element).
// Independent of the backward formulas: it validates backward64 and, through it, the library.
Grads<double> fd_grads(const Spec& s, const double* q, const double* k, const double* v, const double* dout,
                       double h = 1e-5);
// dL/dbias by central differences of forward64 (Spec::bias perturbed element by element).
std::vector<double> fd_dbias(const Spec& s, const double* q, const double* k, const double* v, const double* dout,
                             double h = 1e-5);
// min |S_ij| over allowed pairs (relu and relu2 have a kink at S = 0 that finite differences must avoid).
double min_abs_score(const Spec& s, const double* q, const double* k);
// The same per query row: element (b * Nq + i) * Hq + h is min_j |S_ij| of row i of head h in batch b
// (+inf where the row allows no key), indexed like q's rows, so a caller can redraw just those rows.
std::vector<double> min_abs_score_rows(const Spec& s, const double* q, const double* k);

// ---- the §6 rule ----
// max|ours − ref64| ≤ 2·max|naive − ref64| + 1e-5; a NaN (or inf) in ours where ref64 is finite fails;
// where ref64 is not finite, ours must be the same value. Prints a diagnostic naming the case, the
// output, our error, the bound and the first offending index (decoded with shape when given).
struct RuleResult {
    bool ok = true;
    double our_err = 0, naive_err = 0, bound = 0;
};
RuleResult check_rule(const std::string& case_name, const char* output, const float* ours, const double* ref64,
                      const float* naive, size_t n, const std::vector<int64_t>& shape = {});

// Deterministic pseudo-random numbers (splitmix64 + Box–Muller) so a failing case reproduces from its seed.
class Rng {
public:
    explicit Rng(uint64_t seed);
    uint64_t next_u64();
    double uniform();  // [0, 1)
    double normal();
    int64_t below(int64_t n) { return int64_t(next_u64() % uint64_t(n)); }

private:
    uint64_t state_;
    bool have_spare_ = false;
    double spare_ = 0;
};

// n normal values scaled by sigma and rounded to dtype (returned as float).
std::vector<float> random_values(Rng& rng, size_t n, int dtype, double sigma = 1.0);

// Threads parallel_for(n, fn, serial) runs on.
inline int64_t parallel_threads(int64_t n, bool serial = false) {
    return serial ? 1 : std::max<int64_t>(1, std::min<int64_t>(n, std::max(1u, std::thread::hardware_concurrency())));
}

// Runs fn(t) or fn(t, worker) for t in [0, n) on parallel_threads(n, serial) threads (the fp64 references are
// the slow part of the numerics tests); the caller makes the tasks independent, so results do not depend on the
// thread count. Worker w runs t = w, w + threads, ... one after another, so scratch indexed by worker serves all
// its tasks (reference.cpp, Kept: why).
template <class F>
void parallel_for(int64_t n, F fn, bool serial = false) {
    const int64_t threads = parallel_threads(n, serial);
    auto run = [&](int64_t t, int64_t worker) {
        if constexpr (std::is_invocable_v<F&, int64_t, int64_t>)
            fn(t, worker);
        else
            fn(t);
    };
    if (threads <= 1) {
        for (int64_t t = 0; t < n; ++t) run(t, 0);
        return;
    }
    std::vector<std::thread> pool;
    for (int64_t w = 0; w < threads; ++w)
        pool.emplace_back([&, w] {
            for (int64_t t = w; t < n; t += threads) run(t, w);
        });
    for (auto& th : pool) th.join();
}

}  // namespace ref
