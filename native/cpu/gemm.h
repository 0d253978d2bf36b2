// The accumulating register-blocked product C += A · B shared by the attention kernels (O += P V,
// dK, dV, dQ) and the linear-attention kernels (states and chunk products). Included like rows.h:
// inside an anonymous namespace of an ISA namespace, after simd.h.
#pragma once

#include <type_traits>

#if defined(__AVX512F__)
constexpr int kAccRows = 6;   // 24 accumulators + 4 B vectors + 1 broadcast of 32 zmm
constexpr int kAccVecs = 4;
#elif defined(__aarch64__)
constexpr int kAccRows = 6;   // the same of 32 NEON registers
constexpr int kAccVecs = 4;
#else
constexpr int kAccRows = 6;   // 12 accumulators + 2 B vectors + 1 broadcast of 16 ymm
constexpr int kAccVecs = 2;
#endif

// B's rows in fp32, or in bf16 (widened in the loop: the bf16 backward's Q and dO rows, half the bytes)
inline vf vload_b(const float* p) { return vload(p); }
inline vf vload_b(const uint16_t* p) { return vload_bf16(p); }

// C[R][V·W] += A[R][K] · B[K][V·W], A with any strides (so Aᵀ costs nothing), B row-major (ldb); with
// row_w, C ← C·(1 − w_r) + A·B as C + (A·B − w_r·C), or where w_r > 1/2 (the tile outweighs what C held) as
// C·row_keep[r] + A·B, row_keep[r] = 1 − w_r computed without the cancellation (the forward: old sum · rescale / new
// sum), whose rounding would otherwise lose C's part wherever C is far larger than the result. The product is
// summed from zero and added to C
// once: summed into C key by key, terms below half an ulp of C were each rounded away (the forward's
// normalised O lost 5e-4 of itself over 2^13 key tiles of small weights). Where the difference form
// is not finite (C and A·B of opposite signs beyond FLT_MAX / 2, or an inf in C) C·(1 − w_r) + A·B is
// taken, which overflows only where the result does. With row_unscale, a row r whose row_unscale[r] = u is not 1
// (the forward's far rows: A's row is P·2^E, u = 2^-E, and row_w[r] = w·2^E in A's scale, w < 2^-25 so that
// 1 − w rounds to 1; the backward's far tiles: dV's and dK's key rows, u the tile's 2^-E, no row_w) gets C + (A·B − row_w[r]·C)·u, in fused multiply-adds whose operands and results are normal
// numbers where C and A·B are: their tiny products by u are never a result of their own (no subnormal operand,
// which costs an Intel core a microcode assist per instruction).
// kRowForms: with row_w or row_unscale (their own instances, so that the plain sum's code stays as lean as it was).
template <int R, int V, class TB, bool kRowForms>
void micro_acc(const float* A, int64_t a_row, int64_t a_col, const TB* B, int64_t ldb, int64_t K, float* C,
               int64_t ldc, const float* row_w, const float* row_keep, const float* row_unscale) {
    vf acc[R][V];
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < V; ++v) acc[r][v] = vzero();
    for (int64_t k = 0; k < K; ++k) {
        vf bv[V];
        for (int v = 0; v < V; ++v) bv[v] = vload_b(B + k * ldb + v * W);
        for (int r = 0; r < R; ++r) {
            vf a = vset(A[r * a_row + k * a_col]);
            for (int v = 0; v < V; ++v) acc[r][v] = vfma(a, bv[v], acc[r][v]);
        }
    }
    if constexpr (!kRowForms) {
        for (int r = 0; r < R; ++r)
            for (int v = 0; v < V; ++v) vstore(C + r * ldc + v * W, vadd(vload(C + r * ldc + v * W), acc[r][v]));
        return;
    }
    for (int r = 0; r < R; ++r) {
        float* c_row = C + r * ldc;
        if (row_unscale != nullptr && row_unscale[r] != 1.f) {
            const vf u = vset(row_unscale[r]), minus_w = vset(row_w != nullptr ? -row_w[r] : 0.f);
            for (int v = 0; v < V; ++v) {
                const vf c = vload(c_row + v * W);
                vstore(c_row + v * W, vfinite_or(vfma(vfma(minus_w, c, acc[r][v]), u, c), vfma(acc[r][v], u, c)));
            }
            continue;
        }
        if (row_w == nullptr) {
            for (int v = 0; v < V; ++v) vstore(c_row + v * W, vadd(vload(c_row + v * W), acc[r][v]));
            continue;
        }
        const vf minus_w = vset(-row_w[r]), keep = vset(row_keep[r]);
        if (row_w[r] > 0.5f) {
            for (int v = 0; v < V; ++v) vstore(c_row + v * W, vfma(vload(c_row + v * W), keep, acc[r][v]));
            continue;
        }
        for (int v = 0; v < V; ++v) {
            const vf c = vload(c_row + v * W);
            vstore(c_row + v * W, vfinite_or(vadd(c, vfma(minus_w, c, acc[r][v])), vfma(c, keep, acc[r][v])));
        }
    }
}

template <int R, class TB, bool kRowForms>
void acc_rows(const float* A, int64_t a_row, int64_t a_col, const TB* B, int64_t ldb, int64_t K, float* C,
              int64_t ldc, int64_t width, const float* row_w, const float* row_keep, const float* row_unscale) {
    int64_t c = 0;
    for (; c + kAccVecs * W <= width; c += kAccVecs * W)
        micro_acc<R, kAccVecs, TB, kRowForms>(A, a_row, a_col, B + c, ldb, K, C + c, ldc, row_w, row_keep, row_unscale);
    switch ((width - c) / W) {
        case 1: micro_acc<R, 1, TB, kRowForms>(A, a_row, a_col, B + c, ldb, K, C + c, ldc, row_w, row_keep, row_unscale); break;
        case 2: if constexpr (kAccVecs > 2) micro_acc<R, 2, TB, kRowForms>(A, a_row, a_col, B + c, ldb, K, C + c, ldc, row_w, row_keep, row_unscale); break;
        case 3: if constexpr (kAccVecs > 3) micro_acc<R, 3, TB, kRowForms>(A, a_row, a_col, B + c, ldb, K, C + c, ldc, row_w, row_keep, row_unscale); break;
        default: break;
    }
}

// C[m][width] += A[m][K] · B[K][width], or with row_w and row_keep (m weights each) C ← C·(1 − w_r) + A·B
// (micro_acc), A·B's rows times row_unscale's where given; width a multiple of W
template <class TB>
void gemm_acc(const float* A, int64_t a_row, int64_t a_col, int64_t m, const TB* B, int64_t ldb, int64_t K,
              float* C, int64_t ldc, int64_t width, const float* row_w = nullptr, const float* row_keep = nullptr,
              const float* row_unscale = nullptr) {
    auto rows = [&](auto row_forms) {
        constexpr bool kForms = decltype(row_forms)::value;
        auto from = [](const float* v, int64_t r) { return v != nullptr ? v + r : nullptr; };
        int64_t r = 0;
        for (; r + kAccRows <= m; r += kAccRows)
            acc_rows<kAccRows, TB, kForms>(A + r * a_row, a_row, a_col, B, ldb, K, C + r * ldc, ldc, width,
                                           from(row_w, r), from(row_keep, r), from(row_unscale, r));
        const float *tail_w = from(row_w, r), *tail_keep = from(row_keep, r), *tail_unscale = from(row_unscale, r);
        switch (m - r) {
#define FSIG_ACC_TAIL(k) case k: acc_rows<k, TB, kForms>(A + r * a_row, a_row, a_col, B, ldb, K, C + r * ldc, ldc, width, tail_w, tail_keep, tail_unscale); break;
            FSIG_ACC_TAIL(1) FSIG_ACC_TAIL(2) FSIG_ACC_TAIL(3) FSIG_ACC_TAIL(4) FSIG_ACC_TAIL(5)
#undef FSIG_ACC_TAIL
            default: break;
        }
    };
    if (row_w == nullptr && row_unscale == nullptr)
        rows(std::false_type{});
    else
        rows(std::true_type{});
    static_assert(kAccRows <= 6, "extend the tail switch");
}
