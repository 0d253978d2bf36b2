// S = Q Kᵀ for bf16 tensors on CPUs with AVX512-BF16. vdpbf16ps adds two bf16 products per fp32 lane
// to the accumulator — twice the multiply-adds of an fp32 FMA per instruction, at the same rate on Zen 4/5
// (Intel's CPUs issue it at half the FMA's rate: no gain there, so the dispatcher leaves this set to AMD,
// cpu_backend.cpp). The operands are the tensors' own bf16 values (Q times the power-of-two part of the
// scale), so every product is exact and only the fp32 sums round, as in the fp32 product; P V stays an
// fp32 product: rounding P to bf16 for it (as the GPU kernels do) failed the DESIGN.md §6 rule on short
// rows, where it rounds twice (P, then O) what the naive computation rounds about once. The backward's
// dP = dO Vᵀ is such a product too. The instruction reads subnormal operands as 0 and flushes subnormal
// products and sums: the tasks record the operands' smallest magnitudes (Bf16Range) and a call that
// could meet either, or a sum that cancels below 2^-126 (products under 2^-110), is computed again by
// the fp32 products (cpu_backend.cpp, bf16_range_exact).
// Included by kernels.inc inside its ISA namespace, only where the unit is compiled with -mavx512bf16
// (kernels_avx512bf16.cpp).
//
// Layouts (uint16 elements; a "pair" is two bf16 in one 32-bit lane, the lower index in the low half):
//   rows:   [r][c] bf16 of a row-major fp32 tile, c padded with zeros to a whole pair count;
//   panels: the S micro-kernel's Kᵀ: panel p of kPanel keys as [c2][key][2] = k(key, 2·c2 + {0, 1}).
#pragma once

#if !defined(__AVX512BF16__)
#error "bf16_dot.h needs -mavx512bf16"
#endif

// The bf16 bits of two fp32 vectors whose values are bf16 already (tensor values, times a power of two):
// lane i = lo[i] in its low half, hi[i] in its high half. Truncation is exact for such values.
inline __m512i pair_bits(vf lo, vf hi) {
    return _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(hi), _mm512_set1_epi32(int(0xffff0000u))),
                           _mm512_srli_epi32(_mm512_castps_si512(lo), 16));
}

// dst[c] = the bf16 bits of src[c], c < n (a multiple of W), for values that are bf16 already (tensor
// values times a power of two): exact, subnormals included (vcvtneps2bf16 would flush those).
inline void to_bf16(const float* src, int64_t n, uint16_t* dst) {
    for (int64_t c = 0; c < n; c += W)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c),
                            _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(vload(src + c)), 16)));
}

// fp32 panels of pack_panels ([p][c][kPanel], c < d) of n keys -> bf16 panels ([p][c2][kPanel][2],
// c2 < d2, d2 >= ⌈d/2⌉: pairs past d zero)
void panels_to_bf16(const float* src, int64_t n, int64_t d, int64_t d2, uint16_t* dst) {
    for (int64_t p = 0; p * kPanel < n; ++p) {
        const float* s = src + p * d * kPanel;
        uint16_t* t = dst + p * d2 * 2 * kPanel;
        for (int64_t c2 = 0; c2 < d2; ++c2)
            for (int64_t half = 0; half < kPanel; half += W) {
                const vf lo = 2 * c2 < d ? vload(s + 2 * c2 * kPanel + half) : vzero();
                const vf hi = 2 * c2 + 1 < d ? vload(s + (2 * c2 + 1) * kPanel + half) : vzero();
                _mm512_storeu_si512(t + (c2 * kPanel + half) * 2, pair_bits(lo, hi));
            }
    }
}

// The smallest nonzero |x| of x[0, n) (n a multiple of W; NaN ignored, +inf when none): the operand
// range the bf16 products must stay in (Bf16Range, kernel_table.h).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"  // (GCC 12's false positive on the reductions: simd.h, vhmax)
inline float min_magnitude(const float* x, int64_t n) {
    vf lo = vset(std::numeric_limits<float>::infinity());
    for (int64_t c = 0; c < n; c += W) {
        const vf v = vload(x + c);
        lo = _mm512_mask_min_ps(lo, _mm512_cmp_ps_mask(v, vzero(), _CMP_NEQ_OQ), lo, vabs(v));
    }
    return _mm512_reduce_min_ps(lo);
}
#pragma GCC diagnostic pop

// Rows [r0, r0 + m) of bf16 tensor t times mul (a power of two) as bf16 rows [m][dp], zero-padded,
// through a stack chunk of fp32 rows (pack_rows). Returns their smallest nonzero |x| (a product that
// fell below 2^-126 may have lost bits: Bf16Range then sends the call to the fp32 products).
float pack_rows_bf16(const TensorView& t, int64_t b, int64_t h, int64_t r0, int64_t m, int64_t d, int64_t dp, float mul,
                     uint16_t* dst) {
    constexpr int64_t kChunk = 16;
    float rows[kChunk * 256];  // dp <= 256 (the C ABI's head-dim limit)
    float lo = std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < m; c += kChunk) {
        const int64_t n = std::min(kChunk, m - c);
        pack_rows(t, b, h, r0 + c, n, d, dp, mul, rows);
        lo = std::min(lo, min_magnitude(rows, n * dp));
        to_bf16(rows, n * dp, dst + c * dp);
    }
    return lo;
}

inline void atomic_min(std::atomic<float>& a, float x) {
    float seen = a.load(std::memory_order_relaxed);
    while (x < seen && !a.compare_exchange_weak(seen, x, std::memory_order_relaxed)) {
    }
}

inline __m512bh bcast_pair(const uint16_t* p) {
    uint32_t bits;
    std::memcpy(&bits, p, 4);
    return reinterpret_cast<__m512bh>(_mm512_set1_epi32(int(bits)));
}
inline __m512bh load_pairs(const uint16_t* p) { return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p)); }

// C[R][kPanel] = mul · A[R][2·d2] · panel  (A: bf16 rows, lda elements)
template <int R>
void micro_abt_bf16(const uint16_t* A, int64_t lda, const uint16_t* panel, int64_t d2, float mul, float* C,
                    int64_t ldc) {
    vf acc0[R], acc1[R];
    for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = vzero();
    for (int64_t c2 = 0; c2 < d2; ++c2) {
        const __m512bh b0 = load_pairs(panel + c2 * 2 * kPanel), b1 = load_pairs(panel + c2 * 2 * kPanel + 2 * W);
        for (int r = 0; r < R; ++r) {
            const __m512bh a = bcast_pair(A + r * lda + 2 * c2);
            acc0[r] = _mm512_dpbf16_ps(acc0[r], a, b0);
            acc1[r] = _mm512_dpbf16_ps(acc1[r], a, b1);
        }
    }
    const vf vm = vset(mul);
    for (int r = 0; r < R; ++r) {
        vstore(C + r * ldc, vmul(acc0[r], vm));
        vstore(C + r * ldc + W, vmul(acc1[r], vm));
    }
}

template <int R>
void abt_rows_bf16(const uint16_t* A, int64_t lda, const uint16_t* panels, int64_t n, int64_t d2, float mul, float* C,
                   int64_t ldc) {
    for (int64_t p = 0; p * kPanel < n; ++p)
        micro_abt_bf16<R>(A, lda, panels + p * d2 * 2 * kPanel, d2, mul, C + p * kPanel, ldc);
}

// C[m][round_up(n, kPanel)] = mul · A[m][d] · Kᵀ, K as bf16 panels of d2 >= ⌈d/2⌉ pairs (unused by the amx
// set, whose products are tile products)
[[maybe_unused]] void gemm_abt_bf16(const uint16_t* A, int64_t lda, int64_t m, const uint16_t* panels, int64_t n, int64_t d2, float mul,
                   float* C, int64_t ldc) {
    int64_t r = 0;
    for (; r + kAbtRows <= m; r += kAbtRows) abt_rows_bf16<kAbtRows>(A + r * lda, lda, panels, n, d2, mul, C + r * ldc, ldc);
    switch (m - r) {
#define FSIG_ABT_TAIL(k) case k: abt_rows_bf16<k>(A + r * lda, lda, panels, n, d2, mul, C + r * ldc, ldc); break;
        FSIG_ABT_TAIL(1) FSIG_ABT_TAIL(2) FSIG_ABT_TAIL(3) FSIG_ABT_TAIL(4) FSIG_ABT_TAIL(5)
        FSIG_ABT_TAIL(6) FSIG_ABT_TAIL(7)
#undef FSIG_ABT_TAIL
        default: break;
    }
    static_assert(kAbtRows <= 8, "extend the tail switch");
}
