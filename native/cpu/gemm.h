// The accumulating register-blocked product C += A · B shared by the attention kernels (O += P V,
// dK, dV, dQ) and the linear-attention kernels (states and chunk products). Included like rows.h:
// inside an anonymous namespace of an ISA namespace, after simd.h.
#pragma once

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
// row_w, C ← C·(1 − w_r) + A·B as C + (A·B − w_r·C). The product is summed from zero and added to C
// once: summed into C key by key, terms below half an ulp of C were each rounded away (the forward's
// normalised O lost 5e-4 of itself over 2^13 key tiles of small weights). Where the difference form
// is not finite (C and A·B of opposite signs beyond FLT_MAX / 2, or an inf in C) C·(1 − w_r) + A·B is
// taken, which overflows only where the result does.
template <int R, int V, class TB>
void micro_acc(const float* A, int64_t a_row, int64_t a_col, const TB* B, int64_t ldb, int64_t K, float* C,
               int64_t ldc, const float* row_w) {
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
    for (int r = 0; r < R; ++r) {
        float* c_row = C + r * ldc;
        if (row_w == nullptr) {
            for (int v = 0; v < V; ++v) vstore(c_row + v * W, vadd(vload(c_row + v * W), acc[r][v]));
            continue;
        }
        const vf minus_w = vset(-row_w[r]), keep = vset(1.f - row_w[r]);
        for (int v = 0; v < V; ++v) {
            const vf c = vload(c_row + v * W);
            vstore(c_row + v * W, vfinite_or(vadd(c, vfma(minus_w, c, acc[r][v])), vfma(c, keep, acc[r][v])));
        }
    }
}

template <int R, class TB>
void acc_rows(const float* A, int64_t a_row, int64_t a_col, const TB* B, int64_t ldb, int64_t K, float* C,
              int64_t ldc, int64_t width, const float* row_w) {
    int64_t c = 0;
    for (; c + kAccVecs * W <= width; c += kAccVecs * W)
        micro_acc<R, kAccVecs, TB>(A, a_row, a_col, B + c, ldb, K, C + c, ldc, row_w);
    switch ((width - c) / W) {
        case 1: micro_acc<R, 1, TB>(A, a_row, a_col, B + c, ldb, K, C + c, ldc, row_w); break;
        case 2: if constexpr (kAccVecs > 2) micro_acc<R, 2, TB>(A, a_row, a_col, B + c, ldb, K, C + c, ldc, row_w); break;
        case 3: if constexpr (kAccVecs > 3) micro_acc<R, 3, TB>(A, a_row, a_col, B + c, ldb, K, C + c, ldc, row_w); break;
        default: break;
    }
}

// C[m][width] += A[m][K] · B[K][width], or with row_w (m weights) C ← C·(1 − w_r) + A·B (micro_acc);
// width a multiple of W
template <class TB>
void gemm_acc(const float* A, int64_t a_row, int64_t a_col, int64_t m, const TB* B, int64_t ldb, int64_t K,
              float* C, int64_t ldc, int64_t width, const float* row_w = nullptr) {
    int64_t r = 0;
    for (; r + kAccRows <= m; r += kAccRows)
        acc_rows<kAccRows, TB>(A + r * a_row, a_row, a_col, B, ldb, K, C + r * ldc, ldc, width,
                               row_w != nullptr ? row_w + r : nullptr);
    const float* tail_w = row_w != nullptr ? row_w + r : nullptr;
    switch (m - r) {
#define FSIG_ACC_TAIL(k) case k: acc_rows<k, TB>(A + r * a_row, a_row, a_col, B, ldb, K, C + r * ldc, ldc, width, tail_w); break;
        FSIG_ACC_TAIL(1) FSIG_ACC_TAIL(2) FSIG_ACC_TAIL(3) FSIG_ACC_TAIL(4) FSIG_ACC_TAIL(5)
#undef FSIG_ACC_TAIL
        default: break;
    }
    static_assert(kAccRows <= 6, "extend the tail switch");
}
