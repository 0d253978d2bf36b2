// The CUDA backward kernels (FlashAttention-2 design with recomputation, DESIGN.md §5) for sm_80 and
// later. Included by the generated units bwd_{dkdv,dq}[_ext].cu, one per (kernel, plain or extended)
// with every head dim, each instantiating the 7 score policies for fp16 and bf16: 2 × 2 × 3 × 2 × 7 = 168 kernels
// (widths 64 and 128 below; 256 in "the pair kernels"), plus the pair kernels at widths 64 and 128 in the
// units whose kernels may not fit a 99 KiB GPU (70 more: BwdSmemPlan); the fast path is a run-time
// branch of the dK/dV kernels (no further instantiations).
//
// Contract: the forward's (fwd_kernel.cuh) plus dO [B, Nq, Hq, d], dQ [B, Nq, Hq, d], dK, dV
// [B, Nk, Hk, d] in the same dtype and under the same layout rule (16-byte-aligned bases, last-dim
// stride 1, other strides multiples of 8 elements: every global access is one aligned 16-byte
// vector); softmax also reads O and the forward's LSE (fp32 [B, Hq, Nq], any strides).
// The math is DESIGN §4's table, exactly as the CPU backward (native/cpu/kernels.inc) computes it:
//   S = scale·q·k, P = score(S) (softmax: P = min(exp(S − LSE), 1), recomputed from the forward's LSE),
//   dP = dO Vᵀ, dS = grad(S, P, dP) (softmax: P ∘ (dP − D), D_i = Σ_c dO_ic O_ic), P = dS = 0 where
//   masked; dV = Pᵀ dO, dK = scale · dSᵀ Q (summed over the query heads of the kv head's group),
//   dQ = scale · dS K.
//
// Two paths. Deterministic (no workspace, no atomics): the dK/dV kernel, then the dQ kernel, each
// recomputing S and P — 7 tile products per (query tile, key tile) instead of 5. Fast (p.dq_accum, the
// caller's workspace): the dK/dV kernel alone, which also adds each tile's dS K to an fp32 dQ with
// atomics (accumulate_dq), then a conversion kernel (bwd_dq_convert.cu) — FlashAttention-2's design.
//  - dK/dV kernel: one block of 8 warps per (key tile of 128 keys, kv head, batch); warp w owns keys
//    16w..16w+15 and accumulates their dK, dV rows (16 × d each, fp32) in registers. The block loops
//    over every query head of the group and every query tile (kKvBlockM rows) that can see the key
//    tile (query_range of bwd_params.h); Q, dO (and for softmax O and LSE) tiles stream through
//    shared memory in two cp.async stages. Per tile and warp, in the transposed orientation so that no
//    value crosses warps: Sᵀ = K_w Qᵀ and dPᵀ = V_w dOᵀ (16 × kKvBlockM, K_w and V_w by ldmatrix as A
//    operands, Q and dO as B operands like K in the forward), Pᵀ and dSᵀ elementwise in registers,
//    then dV_w += Pᵀ dO and dK_w += dSᵀ Q with Pᵀ, dSᵀ repacked to 16-bit A operands and dO, Q as
//    B operands by ldmatrix.trans (like V in the forward). Softmax's D for a tile's rows is computed
//    once per tile by the whole block from the staged O and dO (O(d) per row) into shared memory.
//    dK, dV are written once, through shared memory, as 16-byte stores. Fast path: each warp also stores
//    its dSᵀ (16 keys × kKvBlockM) to shared memory; after a barrier the block computes the tile's
//    kKvBlockM × d share of dQ = dS K (the warps split it by rows and columns) and adds it to dq_accum.
//  - dQ kernel: one block of 8 warps per (query tile of 128 rows, query head, batch); warp w owns rows
//    16w..16w+15 and their dQ (16 × d, fp32) in registers, its D and LSE in registers. Key tiles of 64
//    stream through two cp.async stages as in the forward; per tile: S = Q_w Kᵀ, dP = dO_w Vᵀ, dS,
//    dQ_w += dS K (K by ldmatrix.trans). dQ is written once.
// The deterministic path has a fixed loop order and every output element written by one thread: the
// same bits on every run. The fast path's dq depends on the order of the atomics (dK, dV do not).
//
// Tiles no element of which is allowed are skipped (by the block's query range, then per warp); only
// boundary tiles (ragged Nq or Nk, causal diagonal, window edges) evaluate the per-element mask.
// Rows and keys past the ends are zero-filled in shared memory, so they hold finite values and the
// mask zeroes their P and dS.
//
// Extended kernels (kExt; fwd_kernel.cuh and ext_params.h): P and dS = ∂L/∂x are computed from
// x = λ_i·scale·q·k + β_ij, zero where an extension disallows the element; by the chain rule through x,
// dSᵀ·λ_i feeds dK, and dQ takes dS with λ_i on its fp32 sum (dq_row_scale). dBias = ∂L/∂x is written by the dQ kernel, which owns every (b, h, i, j) of
// its query tile: of the bias's full shape [B, Hq, Nq, Nk], each element once — dS where a warp
// computes the tile (0 where masked), 0 for keys of tiles it skips; broadcast over B, Hq or Nq, as
// fp32 partial sums in the caller's workspace that bwd_dbias_reduce.cu adds up (store_dbias_partial).
#pragma once

#include <cstring>

#include "bwd_launch.h"
#include "bwd_params.h"
#include "fwd_kernel.cuh"

namespace fsig::cuda {

// ---- tile configuration --------------------------------------------------------------------------
// Accumulator registers per thread (the compiler's counts are in native/cuda/NOTES.md):
//   dK/dV kernel: dK + dV (16 × d each per warp) = d, Sᵀ + dPᵀ (16 × kKvBlockM each) = kKvBlockM:
//   d = 64: 64 + 64; d = 128: 128 + 32 (at the 255 limit: int32 row indices and a rolled k-step loop
//   of Sᵀ keep it from spilling).
//   dQ kernel: dQ (16 × d) = d / 2, S + dP (16 × 64 each) = 64: 96 (d = 64), 128 (d = 128).
// 8 warps of 255 registers at most: one block per SM, as the forward.
template <int kHeadDim_, class Elem_>
struct BwdTraits {
    using Elem = Elem_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kWarps = 8;
    static constexpr int kThreads = kWarps * 32;
    static constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
    static constexpr int kKSteps = kHeadDim / 16;  // k16 steps of a product over d
    static constexpr int kDTiles = kHeadDim / 8;   // n8 tiles of a d-wide accumulator

    // dK/dV kernel: kKvBlockN keys per block (16 per warp), query tiles of kKvBlockM rows
    static constexpr int kKvBlockN = 16 * kWarps;
    static constexpr int kKvBlockM = kHeadDim <= 64 ? 64 : 32;
    static constexpr int kKvKeyBytes = kKvBlockN * kHeadDim * 2;  // one K or V tile
    static constexpr int kKvRowBytes = kKvBlockM * kHeadDim * 2;  // one Q, dO or O tile
    static constexpr int kKvStageBytes = 3 * kKvRowBytes;         // Q, dO, O
    static constexpr int kKvStage0 = 2 * kKvKeyBytes;             // byte offsets in shared memory
    static constexpr int kKvStage1 = kKvStage0 + kKvStageBytes;
    static constexpr int kKvLse0 = kKvStage1 + kKvStageBytes;     // fp32 LSE of stage 0, then stage 1
    static constexpr int kKvD = kKvLse0 + 2 * kKvBlockM * 4;      // fp32 D of the current tile
    static constexpr int kKvSmemBytes = kKvD + kKvBlockM * 4;
    // extended kernels, after those: λ of a query tile, then one β staging tile per warp
    static constexpr int kKvExtBytes = (kKvBlockM + kWarps * 16 * kBetaStride<kKvBlockM>) * 4;
    // fast path, last (allocated only when it runs): the tile's dSᵀ [key][query] (frag::ds_offset) and a
    // flag per warp, set when its 16 keys have dS
    static constexpr int kKvDsBytes = kKvBlockN * frag::kDsStride<kKvBlockM> * 2;
    static constexpr int kKvFastBytes = kKvDsBytes + kWarps * 4;
    // ... and dQ_tile += dS K split over the warps: 16 query rows × kKvDqCols columns each
    static constexpr int kKvDqRowGroups = kKvBlockM / 16;
    static constexpr int kKvDqCols = kHeadDim / (kWarps / kKvDqRowGroups);
    static constexpr int kKvMTiles = kKvBlockM / 8;  // n8 tiles of Sᵀ (query columns) per warp
    static constexpr int kKvKeyGroups = kWarps;      // warp w computes the dS of keys 16w..16w+15 ...
    static constexpr int kKvQuerySplit = 1;          // ... for every query row of the tile
    static constexpr int kKvThreadsPerRow = kThreads / kKvBlockM;  // D: threads sharing one query row
    static constexpr int kKvChunksPerThread = kChunks / kKvThreadsPerRow;

    // dQ kernel: kQBlockM query rows per block (16 per warp), key tiles of kQBlockN
    static constexpr int kQBlockM = 16 * kWarps;
    static constexpr int kQBlockN = 64;
    static constexpr int kQRowBytes = kQBlockM * kHeadDim * 2;  // Q or dO
    static constexpr int kQKeyBytes = kQBlockN * kHeadDim * 2;  // one K or V tile
    static constexpr int kQStage0 = 2 * kQRowBytes;             // K0, V0, then K1, V1
    static constexpr int kQStage1 = kQStage0 + 2 * kQKeyBytes;
    static constexpr int kQSmemBytes = kQStage1 + 2 * kQKeyBytes;
    // extended, after those: one β (and dBias) staging tile per warp, then per warp the first key from
    // which its rows' full-shaped dBias is not written yet
    static constexpr int kQDbiasNextAt = kQSmemBytes + kWarps * 16 * kBetaStride<kQBlockN> * 4;
    static constexpr int kQExtBytes = kQDbiasNextAt + kWarps * 4 - kQSmemBytes;
    static constexpr int kQNTiles = kQBlockN / 8;

    static_assert(kHeadDim % 64 == 0, "the swizzle needs rows of whole 128-byte lines");
    static_assert(kKvBlockM % 16 == 0 && kQBlockN % 16 == 0, "k16 steps over the tiles");
    static_assert((kKvBlockN * kChunks) % kThreads == 0 && (kKvBlockM * kChunks) % kThreads == 0 &&
                      (kQBlockM * kChunks) % kThreads == 0 && (kQBlockN * kChunks) % kThreads == 0,
                  "tile loads split evenly over the threads");
    static_assert(kKvBlockM <= kThreads, "one thread per row loads the LSE");
    static_assert(kWarps % kKvDqRowGroups == 0 && kKvDqCols % 16 == 0,
                  "fast dQ: the warps split the tile into whole 16-row groups and n16 column pairs");
    static_assert(kThreads % kKvBlockM == 0 && kKvThreadsPerRow <= 32 && kChunks % kKvThreadsPerRow == 0,
                  "D: the threads of a row are adjacent lanes of one warp and split its chunks evenly");
    static_assert(kKvSmemBytes + kKvExtBytes + kKvFastBytes <= 163 * 1024 && kQSmemBytes <= 227 * 1024,
                  "shared memory of one block (the dK/dV kernel's on sm_80 too)");
};

// ---- helpers -------------------------------------------------------------------------------------

// 4 bytes global -> shared (the LSE, whose strides are arbitrary); src_bytes = 0 writes a zero.
#if !defined(FSIG_CUDA_EMULATION)  // (the emulator supplies it, tests/emu/cuda_emu.h)
__device__ __forceinline__ void cp_async_4(uint32_t dst, const void* src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
#endif

template <class Elem>
struct Cvt;
template <>
struct Cvt<__half> {
    static __device__ __forceinline__ float2 f2(uint32_t w) {
        __half2 h;
        memcpy(&h, &w, 4);
        return __half22float2(h);
    }
};
template <>
struct Cvt<__nv_bfloat16> {
    static __device__ __forceinline__ float2 f2(uint32_t w) {
        __nv_bfloat162 h;
        memcpy(&h, &w, 4);
        return __bfloat1622float2(h);
    }
};

// acc + Σ of the 8 products of two 16-byte vectors of 16-bit elements
template <class Elem>
__device__ __forceinline__ float dot8(uint4 a, uint4 b, float acc) {
    const uint32_t aw[4] = {a.x, a.y, a.z, a.w}, bw[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int w = 0; w < 4; ++w) {
        const float2 x = Cvt<Elem>::f2(aw[w]), y = Cvt<Elem>::f2(bw[w]);
        acc = fmaf(x.x, y.x, acc);
        acc = fmaf(x.y, y.y, acc);
    }
    return acc;
}

// ---- score gradients (DESIGN §4 table; the CPU's grad of native/cpu/kernels.inc) -------------------
// eval(acc, dp, c, p, ds): P and dS from the raw accumulator q·k (scale not applied) and dP, with P
// exactly the forward policy's value. Softmax (row statistics) is in the kernels.
template <class Score>
struct BwdScore;
template <>
struct BwdScore<SigmoidScore> {
    static __device__ __forceinline__ void eval(float acc, float dp, const ScoreConsts& c, float& p, float& ds) {
        p = SigmoidScore::apply(acc, c);
        ds = p * (1.f - p) * dp;
    }
};
template <>
struct BwdScore<ReluScore> {
    static __device__ __forceinline__ void eval(float acc, float dp, const ScoreConsts& c, float& p, float& ds) {
        const float x = acc * c.scale;
        p = relu_keep_nan(x) * c.factor;
        ds = x > 0.f ? c.factor * dp : 0.f;
    }
};
template <>
struct BwdScore<Relu2Score> {
    static __device__ __forceinline__ void eval(float acc, float dp, const ScoreConsts& c, float& p, float& ds) {
        const float x = acc * c.scale, r = relu_keep_nan(x);
        p = r * r * c.factor;
        ds = x > 0.f ? 2.f * x * (c.factor * dp) : 0.f;  // where-form, as relu's: 0 where S <= 0 whatever dP
    }
};
// gelu′(x) = Φ(x) + x φ(x), φ(x) = exp(−x²/2)/√(2π): Φ and exp(−x²/2) as in GeluScore::apply, shared.
template <>
struct BwdScore<GeluScore> {
    static __device__ __forceinline__ void eval(float acc, float dp, const ScoreConsts& c, float& p, float& ds) {
        const float x = acc * c.scale;
        const float e = ex2(x * x * -0.72134752044448170f);  // exp(−x²/2)
        const float t = rcp(fmaf(0.23164188826636040f, fabsf(x), 1.f));
        float poly = fmaf(0.5307027145f, t, -0.7265760135f);
        poly = fmaf(poly, t, 0.7107068705f);
        poly = fmaf(poly, t, -0.1422483680f);
        poly = fmaf(poly, t, 0.1274147960f);
        const float half_erfc = poly * t * e;
        const float cdf = x >= 0.f ? 1.f - half_erfc : half_erfc;
        p = x * cdf * c.factor;
        ds = fmaf(x * 0.39894228040143268f, e, cdf) * (c.factor * dp);
    }
};
// softplus′(x) = σ(x) = (x >= 0 ? 1 : u) / (1 + u), u = exp(−|x|): the value's exp, shared.
template <>
struct BwdScore<SoftplusScore> {
    static __device__ __forceinline__ void eval(float acc, float dp, const ScoreConsts& c, float& p, float& ds) {
        const float x = acc * c.scale;
        const float u = ex2(fabsf(x) * -kLog2e);
        p = (fmaxf(x, 0.f) + __logf(1.f + u)) * c.factor;
        ds = (x >= 0.f ? 1.f : u) * rcp(1.f + u) * (c.factor * dp);
    }
};
template <>
struct BwdScore<IdentityScore> {
    static __device__ __forceinline__ void eval(float acc, float dp, const ScoreConsts& c, float& p, float& ds) {
        p = acc * c.scale * c.factor;
        ds = c.factor * dp;
    }
};

// P and dS of one element; nl = −LSE·log2e and dd = D of its query row (softmax only).
template <class Score>
__device__ __forceinline__ void probs_grads(float acc, float dp, const ScoreConsts& c, float scale_log2, float nl,
                                            float dd, float& p, float& ds) {
    if constexpr (Score::kRowStats) {
        // LSE = +inf (a row with no allowed key) gives P = 0; P <= 1 always, as on the CPU (an ulp of
        // difference between the forward's S and this one must not push it past 1 where |S| is huge). Not
        // fminf: it would turn a NaN S or LSE into P = 1.
        const float e = ex2(fmaf(acc, scale_log2, nl));
        p = e > 1.f ? 1.f : e;
        ds = p * (dp - dd);
    } else {
        BwdScore<Score>::eval(acc, dp, c, p, ds);
    }
}


// A broadcast dBias's partial sums (BwdParams::dbias_partial) of this warp's 16 rows [w0, w0 + 16) and
// keys [j0, j0 + kCols), from dS staged in the warp's tile (rows past Nq hold no allowed key): each row its
// own group, or the 16 rows (one group, w0 a multiple of 16) summed in order; lanes along the keys.
template <int kCols>
__device__ __forceinline__ void store_dbias_partial(const BwdParams& p, int64_t b, int h, int64_t w0, int64_t j0,
                                                    int lane, const float* ds_tile) {
    const FwdParams& f = p.f;
    if (w0 >= f.seq_q) return;  // (such a warp stages no allowed key; its group index would be >= G)
    float* rows = p.dbias_partial + (b * f.heads_q + h) * p.dbias_groups * f.seq_k;
#pragma unroll 1
    for (int c = lane; c < kCols; c += 32) {
        if (j0 + c >= f.seq_k) break;
        if (p.dbias_group_rows == 1) {
#pragma unroll 1
            for (int r = 0; r < 16 && w0 + r < f.seq_q; ++r)
                rows[(w0 + r) * f.seq_k + j0 + c] = ds_tile[r * kBetaStride<kCols> + c];
        } else {
            float sum = 0.f;
#pragma unroll 1
            for (int r = 0; r < 16 && w0 + r < f.seq_q; ++r) sum += ds_tile[r * kBetaStride<kCols> + c];
            rows[(w0 / 16) * f.seq_k + j0 + c] = sum;
        }
    }
}

// A full-shaped dBias's rows [w0, w0 + 16) (those below Nq), keys [from, to): 0, lanes along the keys.
// Out of line, as stage_beta (fwd_kernel.cuh).
inline __device__ FSIG_NOINLINE void zero_dbias_keys(const FwdParams& f, int64_t b, int h, int w0, int from, int to,
                                                     int lane) {
#pragma unroll 1
    for (int r = 0; r < 16 && w0 + r < f.seq_q; ++r)
#pragma unroll 1
        for (int j = from + lane; j < to; j += 32) store_dbias(f.ext, b, h, w0 + r, j, 0.f);
}

// dK/dV orientation of fwd_kernel.cuh's stage_beta: β of keys [jw, jw + 16) × query rows [i0, i0 + kRows)
// into the warp's staging tile β[key][query] (row stride kBetaStride<kRows>); the two half-warps take
// alternate query rows, the 16 lanes of a half the keys. Returns, warp-uniform, whether any is allowed.
// Out of line, as stage_beta.
template <int kRows>
inline __device__ FSIG_NOINLINE bool stage_beta_keys(const FwdParams& f, int64_t b, int h, int64_t i0, int64_t jw,
                                                     int lane, float* beta) {
    const int r = lane & 15;
    int q = lane >> 4;
    uint32_t phase = strided_phase(f.ext, i0 + q + f.seq_k - f.seq_q, jw);
    bool any = false;
#pragma unroll 1
    for (; q < kRows; q += 2) {
        const int64_t i = i0 + q;
        const ExtBetaRow row = ext_beta_row(f.ext, b, h, i, phase, f.seq_q, f.seq_k);
        const float x = i < f.seq_q && jw + r < f.seq_k ? ext_beta(f.ext, row, jw, r) : -INFINITY;
        beta[r * kBetaStride<kRows> + q] = x;
        any |= x != -INFINITY;
        phase = strided_phase_next(f.ext, strided_phase_next(f.ext, phase));  // row i + 2
    }
    __syncwarp();  // the tile is read by other lanes of the warp
    return __any_sync(0xffffffffu, any);
}

// The fast path's dQ: a warp's 16 rows of a tile's dS K (mma accumulator layout, n8 tiles from column c0; rows
// from row0) added to dq_accum (rows kD floats long) with fp32 atomics, in pairs on sm_90; rows from Nq on and
// columns from the head dim on (zeros) skipped. Shared by every dK/dV kernel of the fast path. lam: λ_i of the
// 16 rows (lam[r] row row0 + r) where the kernel's dS for dQ left it out (dq_row_scale), else nullptr.
template <int kD, int kNTiles>
__device__ __forceinline__ void add_dq_rows(const BwdParams& p, int64_t b, int h, int row0, int c0, int lane,
                                            const float (&acc)[kNTiles][4], const float* lam = nullptr) {
    float* rows = p.dq_accum + (b * p.f.heads_q + h) * p.f.seq_q * kD;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int i = row0 + frag::acc_row(lane, 2 * r);
        if (i >= p.f.seq_q) continue;
        const float m = lam != nullptr ? lam[frag::acc_row(lane, 2 * r)] : 1.f;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
            if (c0 + nt * 8 >= p.f.head_dim) break;  // columns past the head dim hold zeros
            float* at = rows + int64_t(i) * kD + c0 + nt * 8 + frag::acc_col(lane, 0);
#if __CUDA_ARCH__ >= 900
            atomicAdd(reinterpret_cast<float2*>(at), make_float2(acc[nt][2 * r] * m, acc[nt][2 * r + 1] * m));
#else
            atomicAdd(at, acc[nt][2 * r] * m);
            atomicAdd(at + 1, acc[nt][2 * r + 1] * m);
#endif
        }
    }
}

// Fast path (p.dq_accum): dQ rows [i0, i0 + kKvBlockM) of query head h += dS K over the block's keys,
// from the dSᵀ tile the warps left in shared memory (A operands by ldmatrix.trans) and the resident K
// tile (B operands by ldmatrix.trans, like V in the forward). Warp w takes 16 rows × kKvDqCols columns
// and skips the k16 steps (one per group of 16 keys) whose dS the warp that computes it had none of this
// tile (live_sm: a flag per warp; warp w computes key group w % kKvKeyGroups for all the tile's query rows,
// or, where kKvQuerySplit warps share a key group, for part w / kKvKeyGroups of them). The sums go to
// dq_accum with fp32 atomics — pairs at once on sm_90, whose vector atomics halve their number. lam: λ_i of
// the tile's rows (lam[r] row i0 + r) where the dS tile left it out, else nullptr.
template <class T>
__device__ __forceinline__ void accumulate_dq(const BwdParams& p, int64_t b, int h, int i0, uint32_t ds_tile,
                                              const int* live_sm, uint32_t k_tile, int lane, int warp,
                                              const float* lam = nullptr) {
    using M = Mma<typename T::Elem>;
    constexpr int kD = T::kHeadDim, kNTiles = T::kKvDqCols / 8;
    const int rg = warp % T::kKvDqRowGroups, c0 = (warp / T::kKvDqRowGroups) * T::kKvDqCols;
    const frag::RowCol fat = frag::ldsm_at(lane), fbt = frag::ldsm_bt(lane);
    const frag::SwizzledRows<kD> kt(frag::RowCol{fbt.row, c0 + fbt.col});
    float acc[kNTiles][4];
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
    bool any = false;
    // rolled: unrolled, its hoisted fragments made the extended kernels spill (d = 64: 32–60 bytes; 0–12
    // rolled)
    // the warp that computed dS of key group ks for this warp's rows
    const int* live_of_rows = live_sm + T::kKvKeyGroups * (rg * T::kKvQuerySplit / T::kKvDqRowGroups);
#pragma unroll 1
    for (int ks = 0; ks < T::kKvKeyGroups; ++ks) {
        if (!live_of_rows[ks]) continue;  // (the same for every lane)
        any = true;
        uint32_t a[4];
        ldsm_x4_trans(a, ds_tile + 2 * frag::ds_offset<T::kKvBlockM>(ks * 16 + fat.row, rg * 16 + fat.col));
#pragma unroll
        for (int np = 0; np < kNTiles / 2; ++np) {
            uint32_t kb[4];
            ldsm_x4_trans(kb, k_tile + 2 * kt.at(ks, np));
            M::run(acc[2 * np], a, kb[0], kb[1]);
            M::run(acc[2 * np + 1], a, kb[2], kb[3]);
        }
    }
    if (any) add_dq_rows<kD>(p, b, h, i0 + rg * 16, c0, lane, acc, lam != nullptr ? lam + rg * 16 : nullptr);
}

// The dK/dV kernels' epilogue (this file's and bwd_wgmma_kernel.cuh's): dK (× scale) and dV of key rows
// 16·warp.. of the block's tile at j0 (columns col0.. as store_acc_rows), from accumulators in the mma.sync C
// layout per n8 tile, staged as swizzled [kRows][d] tiles at `smem` (where K and V were: every read of them
// done) and written as 16-byte stores (columns below the head dim).
template <class T, int kDTiles, int kRows = kBwdKvBlockN>
__device__ __forceinline__ void store_dk_dv(const BwdParams& p, int64_t b, int hk, int j0, int warp, int lane,
                                            const float (&dk)[kDTiles][4], const float (&dv)[kDTiles][4],
                                            unsigned char* smem, int col0 = 0) {
    using Elem = typename T::Elem;
    constexpr int kD = T::kHeadDim;
    const FwdParams& f = p.f;
    Elem* k_sm = reinterpret_cast<Elem*>(smem);
    const float dk_mul[2] = {f.scale, f.scale}, dv_mul[2] = {1.f, 1.f};
    store_acc_rows<kD>(static_cast<Elem*>(p.dk) + b * p.dk_batch + hk * p.dk_head, p.dk_row, f.seq_k, f.head_dim, j0,
                       warp, lane, dk, dk_mul, k_sm, col0);
    store_acc_rows<kD>(static_cast<Elem*>(p.dv) + b * p.dv_batch + hk * p.dv_head, p.dv_row, f.seq_k, f.head_dim, j0,
                       warp, lane, dv, dv_mul, k_sm + kRows * kD, col0);
}

// ---- the dK/dV and dQ kernels' shared parts ------------------------------------------------------

// A dK/dV kernel's block (this file's two and bwd_wgmma_kernel.cuh's): (key tile of kBlockN keys from j0, kv
// head hk, batch b), its kv head's K and V, and the query tiles of kBlockM rows that any of its keys may see,
// for each query head of the group: tile t < n_tiles is query head head(t), rows from row0(t). Row and key
// indices and tile counts are int32 (Nq, Nk <= kMaxCudaSeq and Hq·⌈Nq/16⌉ < 2^31 are checked on the host):
// fewer live 64-bit values keep the d = 128 kernel from spilling.
template <class Elem_, int kBlockN_, int kBlockM_>
struct DkdvBlock {
    using Elem = Elem_;
    static constexpr int kBlockN = kBlockN_, kBlockM = kBlockM_;
    int j0, hk, group, m_first, n_m, n_tiles;
    int64_t b;
    const Elem *k, *v;
    __device__ __forceinline__ int head(int t) const { return hk * group + t / n_m; }
    __device__ __forceinline__ int row0(int t) const { return (m_first + t % n_m) * kBlockM; }
    // the first tile from t on (n_tiles when none) that the block layout or the strided pattern leave some
    // element of, and with key padding (head_bits: scan_key_rows' bits of the group's query heads over the block's
    // keys; nullptr without) whose head's row of β allows one of the block's keys: extended, empty tiles are never
    // loaded; plain, t. A warp collective (every lane calls it); every warp gets the same answer.
    template <bool kExt>
    __device__ __forceinline__ int next_live(const FwdParams& f, int t, int lane,
                                             const uint32_t* head_bits = nullptr) const {
        if constexpr (kExt)
            return first_live_index(t, n_tiles - 1, lane, [&](int u) {
                const int i0 = row0(u);
                return (head_bits == nullptr || key_row_live(head_bits, u / n_m)) &&
                       ext_tile_live(f.ext, head(u), i0, min(int64_t(i0) + kBlockM, f.seq_q) - 1, j0,
                                     min(int64_t(j0) + kBlockN, f.seq_k) - 1, f.seq_q, f.seq_k);
            });
        return t;
    }
};
template <class Elem, int kBlockN, int kBlockM>
__device__ __forceinline__ DkdvBlock<Elem, kBlockN, kBlockM> dkdv_block(const BwdParams& p) {
    const FwdParams& f = p.f;
    DkdvBlock<Elem, kBlockN, kBlockM> blk;
    int64_t bid = blockIdx.x;
    const int n_block = int(bid % p.n_blocks);
    bid /= p.n_blocks;
    blk.hk = int(bid % p.heads_k);
    blk.b = bid / p.heads_k;
    blk.group = f.group;
    blk.k = static_cast<const Elem*>(f.k) + blk.b * f.k_batch + blk.hk * f.k_head;
    blk.v = static_cast<const Elem*>(f.v) + blk.b * f.v_batch + blk.hk * f.v_head;
    blk.j0 = n_block * kBlockN;
    int64_t q_first, q_last;
    query_range(f, blk.j0, min(int64_t(blk.j0) + kBlockN, f.seq_k) - 1, &q_first, &q_last);
    blk.m_first = int(q_first / kBlockM);
    blk.n_m = q_last >= q_first ? int(q_last / kBlockM) - blk.m_first + 1 : 0;
    blk.n_tiles = blk.n_m * blk.group;
    return blk;
}

// The query rows [first, last] that keys [jw, jw + 15] (those below Nk) may see; none (last < first) when
// jw >= Nk.
__device__ __forceinline__ void warp_query_range(const FwdParams& f, int jw, int& first, int& last) {
    first = 0, last = -1;
    if (jw < f.seq_k) {
        int64_t lo, hi;
        query_range(f, jw, min(int64_t(jw) + 15, f.seq_k - 1), &lo, &hi);
        first = int(lo), last = int(hi);
    }
}

// Query tile t of a dK/dV block into the stage at shared-memory address `stage`: Q, then dO (and, with
// kWithO, softmax's O) row_bytes apart, each by load(tile, base, row_stride, first_row) in the kernel's tile
// layout; softmax's LSE of the tile's rows at lse_at (4 bytes a row, 0 past Nq). It commits no cp.async group
// (the caller does: the 256-wide Hopper backward counts its groups).
template <class Score, bool kWithO, class Blk, class Load>
__device__ __forceinline__ void load_query_tile(const BwdParams& p, const Blk& blk, int t, uint32_t stage,
                                                uint32_t row_bytes, uint32_t lse_at, int tid, Load load) {
    using Elem = typename Blk::Elem;
    const FwdParams& f = p.f;
    const int h = blk.head(t), i0 = blk.row0(t);
    const int64_t b = blk.b;
    load(stage, static_cast<const Elem*>(f.q) + b * f.q_batch + h * f.q_head, f.q_row, i0);
    load(stage + row_bytes, static_cast<const Elem*>(p.dout) + b * p.do_batch + h * p.do_head, p.do_row, i0);
    if constexpr (Score::kRowStats) {
        if constexpr (kWithO)
            load(stage + 2 * row_bytes, static_cast<const Elem*>(f.out) + b * f.o_batch + h * f.o_head, f.o_row, i0);
        if (tid < Blk::kBlockM) {
            const float* lse = f.lse + b * f.lse_batch + h * f.lse_head;
            const bool ok = i0 + tid < f.seq_q;
            cp_async_4(lse_at + 4 * tid, ok ? lse + (i0 + tid) * f.lse_row : lse, ok ? 4 : 0);
        }
    }
}

// Pᵀ and dSᵀ of a dK/dV kernel's warp tile, in place (st: Sᵀ = K_w Qᵀ → Pᵀ; dpt: dPᵀ → dSᵀ = ∂L/∂x, before
// λ_i: dK takes dSᵀ·λ_i, dQ dS alone, dq_row_scale), for keys key_j (the thread's two rows, of the 16 from jw)
// × queries iw + nt·8 + acc_col (kNTiles n8 tiles): softmax's −LSE and D and the extended λ of query iw + c at
// index c0 + c of lse_sm, d_sm and lambda_sm, β at beta[key row · kBetaRowStride + c] when the call has
// element-wise extensions; x = λ_i·scale·q·k − slope·|δ_i − j| + β, P = dS = 0 where an extension disallows the
// element. The mask on boundary tiles only (element (key j, query i)).
template <class Score, bool kExt, int kNTiles, int kBetaRowStride>
__device__ __forceinline__ void dkdv_scores(const FwdParams& f, const ScoreConsts& sc, const ScoreConsts& sc_x,
                                            int64_t b, int h, int iw, int jw, int c0, const int (&key_j)[2],
                                            int lane, const float* lse_sm, const float* d_sm,
                                            const float* lambda_sm, const float* beta, float (&st)[kNTiles][4],
                                            float (&dpt)[kNTiles][4]) {
    const bool interior = tile_interior(f, iw, kNTiles * 8, jw, 16);
    // extended: ALiBi |δ_i − j| = |dist0[r] + nt·8 + c| for key key_j[r] and query iw + col, col = nt·8 +
    // acc_col(lane, c) (the lane's part of col is in dist0, so the rest is an immediate: float(col) per
    // element, hoisted out of the loop by the compiler, made the d = 128 kernels spill)
    float slope = 0.f, dist0[2] = {0.f, 0.f};
    if constexpr (kExt) {
        slope = ext_alibi_slope(f.ext, b, h);
        const int64_t d0 = int64_t(iw) + f.seq_k - f.seq_q + frag::acc_col(lane, 0);
        dist0[0] = float(d0 - key_j[0]);
        dist0[1] = float(d0 - key_j[1]);
    }
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
            const int col = nt * 8 + frag::acc_col(lane, c);  // query iw + col
            float nl = 0.f, dd = 0.f;
            if constexpr (Score::kRowStats) nl = -lse_sm[c0 + col] * kLog2e, dd = d_sm[c0 + col];
            if constexpr (kExt) {
                const float lambda = f.ext.logn_train > 0 ? lambda_sm[c0 + col] : 1.f;
#pragma unroll
                for (int e = c; e < 4; e += 2) {
                    float x = ext_position_at(slope, lambda, dist0[e >> 1] + float(nt * 8 + c), st[nt][e] * f.scale);
                    if (f.ext.elementwise) x += beta[frag::acc_row(lane, e) * kBetaRowStride + col];
                    float pr, ds;
                    probs_grads<Score>(x, dpt[nt][e], sc_x, kLog2e, nl, dd, pr, ds);
                    st[nt][e] = x == -INFINITY ? 0.f : pr;
                    dpt[nt][e] = x == -INFINITY ? 0.f : ds;
                }
            } else {
#pragma unroll
                for (int e = c; e < 4; e += 2)
                    probs_grads<Score>(st[nt][e], dpt[nt][e], sc, f.scale_log2, nl, dd, st[nt][e], dpt[nt][e]);
            }
            if (!interior) {
                const int i = iw + col;
                const int64_t lo = first_key(f, i), hi = last_key(f, i);
                const bool row_ok = i < f.seq_q;
#pragma unroll
                for (int r = 0; r < 2; ++r)
                    if (!row_ok || key_j[r] < lo || key_j[r] > hi) st[nt][c + 2 * r] = dpt[nt][c + 2 * r] = 0.f;
            }
        }
}

// dQ_i = scale·λ_i·Σ_j dS_ij k_j: log-n's λ_i is a factor of the whole row of dQ, so the dQ products take
// the 16-bit dS itself and λ_i goes onto the fp32 sum, as a framework's autograd does: with scale in the dQ
// kernels' epilogues (here), on the fast path onto each tile's fp32 partials before their atomics
// (add_dq_rows' lam; dq_convert then multiplies by scale). Multiplying dS by λ_i before
// its rounding gives the same error statistics but rounds a value the reference never forms; on one
// dominant key its rounding alone then decides an element (127_alibilayout). dK keeps dSᵀ·λ_i: λ varies
// along its sum.
template <bool kExt>
__device__ __forceinline__ float dq_row_scale(const FwdParams& f, int64_t row) {
    if constexpr (kExt) return f.scale * logn_lambda(f.ext, row + f.seq_k - f.seq_q, f.seq_k);
    return f.scale;
}

// dK's 16-bit A words under log-n: dSᵀ·λ_i of one n8 accumulator tile of a dK/dV kernel (dS before λ, element
// (key, query column acc_col)), λ of the tile's 8 query columns from lam; words (elements 0, 1) and (2, 3).
template <class M>
__device__ __forceinline__ void pack_times_lambda(const float (&ds)[4], const float* lam, int lane, uint32_t& w01,
                                                  uint32_t& w23) {
    const int c = frag::acc_col(lane, 0);
    w01 = M::pack(ds[0] * lam[c], ds[1] * lam[c + 1]);
    w23 = M::pack(ds[2] * lam[c], ds[3] * lam[c + 1]);
}

// dS = ∂L/∂x of a dQ kernel's warp tile, in place (s: S = Q_w Kᵀ, x when extended; dps: dP → dS, before
// λ_i), for rows row_i (the thread's two, of the 16 from w0) × keys j0 + nt·8 + acc_col (kNTiles n8 tiles):
// nl, dd are softmax's −LSE·log2e and D of the two rows, beta the warp's β staging tile (row stride
// kBetaStride<kNTiles·8>). The mask on boundary tiles only; dS = 0 where an extension disallows the element.
template <class Score, bool kExt, int kNTiles>
__device__ __forceinline__ void dq_scores(const FwdParams& f, const ScoreConsts& sc, const ScoreConsts& sc_x,
                                          int64_t b, int h, const int (&row_i)[2], int w0, int j0, int lane,
                                          const float (&nl)[2], const float (&dd)[2], const float* beta,
                                          float (&s)[kNTiles][4], float (&dps)[kNTiles][4]) {
    constexpr int kCols = kNTiles * 8;
    if constexpr (kExt) extend_tile<kNTiles>(f, b, h, row_i, j0, lane, f.ext.elementwise ? beta : nullptr, s);
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            float pr;
            if constexpr (kExt) {
                probs_grads<Score>(s[nt][e], dps[nt][e], sc_x, kLog2e, nl[e >> 1], dd[e >> 1], pr, dps[nt][e]);
                if (s[nt][e] == -INFINITY) dps[nt][e] = 0.f;
            } else {
                probs_grads<Score>(s[nt][e], dps[nt][e], sc, f.scale_log2, nl[e >> 1], dd[e >> 1], pr, dps[nt][e]);
            }
        }
    if (!tile_interior(f, w0, 16, j0, kCols)) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int64_t lo = first_key(f, row_i[r]) - j0, hi = last_key(f, row_i[r]) - j0;
            const int col_lo = int(max(min(lo, int64_t(kCols)), int64_t(-1)));
            const int col_hi = int(max(min(hi, int64_t(kCols)), int64_t(-1)));
#pragma unroll
            for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
                for (int e = 2 * r; e < 2 * r + 2; ++e) {
                    const int col = nt * 8 + frag::acc_col(lane, e);
                    if (col < col_lo || col > col_hi) dps[nt][e] = 0.f;
                }
        }
    }
}

// A warp's 16 × kNTiles·8 fp32 accumulator tile (dS, for dBias) into its staging tile (row stride
// kBetaStride<kNTiles·8>), after every lane has read the β there; readable by every lane on return.
template <int kNTiles>
__device__ __forceinline__ void stage_acc_tile(float* tile, const float (&acc)[kNTiles][4], int lane) {
    __syncwarp();
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int r = 0; r < 2; ++r)
            *reinterpret_cast<float2*>(tile + frag::acc_row(lane, 2 * r) * kBetaStride<kNTiles * 8> + nt * 8 +
                                       frag::acc_col(lane, 0)) = make_float2(acc[nt][2 * r], acc[nt][2 * r + 1]);
    __syncwarp();
}

// ---- kernel 1: dK, dV ----------------------------------------------------------------------------

template <class T, class Score, bool kExt>
__global__ void __launch_bounds__(T::kThreads, 1) attention_bwd_dkdv_kernel(const __grid_constant__ BwdParams p) {
    using Elem = typename T::Elem;
    using M = Mma<Elem>;
    constexpr int kD = T::kHeadDim, kBlockN = T::kKvBlockN, kBlockM = T::kKvBlockM;
    const uint32_t smem_base = smem_addr(smem_raw);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const FwdParams& f = p.f;

    // block -> (key tile, kv head, batch); this warp's keys and the query rows they may see
    const DkdvBlock<Elem, kBlockN, kBlockM> blk = dkdv_block<Elem, kBlockN, kBlockM>(p);
    const int hk = blk.hk, j0 = blk.j0, n_tiles = blk.n_tiles;
    const int64_t b = blk.b;
    const int jw = j0 + warp * 16;
    int wq_first, wq_last;
    warp_query_range(f, jw, wq_first, wq_last);
    // tile t's Q, dO (softmax: O, LSE) into the stage at byte offset `stage`, its LSE at lse_off
    auto load_query = [&](int t, uint32_t stage, uint32_t lse_off) {
        load_query_tile<Score, true>(p, blk, t, smem_base + stage, T::kKvRowBytes, smem_base + lse_off, tid,
                                     [&](uint32_t tile, const Elem* base, int64_t row_stride, int i0) {
                                         load_tile<T, kBlockM>(tile, base, row_stride, i0, f.seq_q, f.head_dim, tid);
                                     });
    };
    auto next_live = [&](int t) { return blk.template next_live<kExt>(f, t, lane); };

    // ---- prologue: K, V of this key tile (resident for the whole block), the first query tile ----
    load_tile<T, kBlockN>(smem_base, blk.k, f.k_row, j0, f.seq_k, f.head_dim, tid);
    load_tile<T, kBlockN>(smem_base + T::kKvKeyBytes, blk.v, f.v_row, j0, f.seq_k, f.head_dim, tid);
    int t = next_live(0);
    if (t < n_tiles) load_query(t, T::kKvStage0, T::kKvLse0);
    cp_async_commit();

    float dk[T::kDTiles][4], dv[T::kDTiles][4];
#pragma unroll
    for (int dt = 0; dt < T::kDTiles; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) dk[dt][e] = dv[dt][e] = 0.f;
    const ScoreConsts sc = score_consts(f), sc_x = score_consts(f, 1.f);  // sc_x: extended, of x
    const float* lse_sm0 = reinterpret_cast<const float*>(smem_raw + T::kKvLse0);
    float* d_sm = reinterpret_cast<float*>(smem_raw + T::kKvD);
    // extended: λ of the tile's query rows (log-n), then this warp's β staging tile
    float* lambda_sm = reinterpret_cast<float*>(smem_raw + T::kKvSmemBytes);
    float* beta_tile = lambda_sm + kBlockM + warp * 16 * kBetaStride<kBlockM>;
    const frag::RowCol fa = frag::ldsm_a(lane), fb = frag::ldsm_b(lane), fbt = frag::ldsm_bt(lane);
    const int key_j[2] = {jw + frag::acc_row(lane, 0), jw + frag::acc_row(lane, 2)};
    // fast path: this tile's dSᵀ (32-bit pairs of 16-bit elements) and the warps' flags for accumulate_dq,
    // after everything else
    const bool fast = p.dq_accum != nullptr;
    constexpr int kDsAt = T::kKvSmemBytes + (kExt ? T::kKvExtBytes : 0);
    uint32_t* ds_sm = reinterpret_cast<uint32_t*>(smem_raw + kDsAt);
    int* live_sm = reinterpret_cast<int*>(smem_raw + kDsAt + T::kKvDsBytes);

    for (int s = 0, t_next; t < n_tiles; s ^= 1, t = t_next) {  // s: the stage of tile t
        const uint32_t stage = s ? T::kKvStage1 : T::kKvStage0;
        cp_async_wait_all();  // tile t has landed ...
        __syncthreads();      // ... for every thread, and nobody reads the previous tile (the other stage) any more
        t_next = next_live(t + 1);
        if (t_next < n_tiles) load_query(t_next, s ? T::kKvStage0 : T::kKvStage1, T::kKvLse0 + (s ? 0 : 4 * kBlockM));
        cp_async_commit();
        const int i0 = blk.row0(t), h = blk.head(t);
        const uint32_t q_tile = smem_base + stage, do_tile = q_tile + T::kKvRowBytes;
        const float* lse_sm = lse_sm0 + s * kBlockM;

        if constexpr (Score::kRowStats) {
            // D_i = Σ_c dO_ic O_ic of the tile's rows, kKvThreadsPerRow adjacent lanes per row
            constexpr int kTpr = T::kKvThreadsPerRow, kCpt = T::kKvChunksPerThread;
            const int r = tid / kTpr, part = tid % kTpr;
            const unsigned char* o_tile = smem_raw + stage + 2 * T::kKvRowBytes;
            const unsigned char* g_tile = smem_raw + stage + T::kKvRowBytes;
            float acc = 0.f;
#pragma unroll
            for (int c = 0; c < kCpt; ++c) {
                const int off = 2 * frag::swizzle<kD>(r, (part * kCpt + c) * 8);
                acc = dot8<Elem>(*reinterpret_cast<const uint4*>(o_tile + off),
                                 *reinterpret_cast<const uint4*>(g_tile + off), acc);
            }
#pragma unroll
            for (int m = kTpr / 2; m >= 1; m /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, m);
            if (part == 0) d_sm[r] = acc;
        }
        bool rows_staged = Score::kRowStats;
        if constexpr (kExt) {
            if (f.ext.logn_train > 0) {  // λ of the tile's rows, once per tile for every warp
                if (tid < kBlockM) lambda_sm[tid] = logn_lambda(f.ext, i0 + tid + f.seq_k - f.seq_q, f.seq_k);
                rows_staged = true;
            }
        }
        if (rows_staged) __syncthreads();  // (a block-uniform condition)

        // warp-uniform: a tile none of this warp's keys may see is skipped (by the interval; extended, also
        // when the element-wise extensions leave none of its elements: β all −inf)
        bool live = i0 <= wq_last && i0 + kBlockM - 1 >= wq_first;
        if constexpr (kExt) {
            if (live && f.ext.elementwise) live = stage_beta_keys<kBlockM>(f, b, h, i0, jw, lane, beta_tile);
        }
        if (live) {
            // ---- Sᵀ = K_w Qᵀ and dPᵀ = V_w dOᵀ (16 keys × kBlockM queries) ----
            float st_[T::kKvMTiles][4], dpt[T::kKvMTiles][4];
#pragma unroll
            for (int nt = 0; nt < T::kKvMTiles; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) st_[nt][e] = dpt[nt][e] = 0.f;
            // not unrolled: with every k-step's fragments hoisted the d = 128 kernel spilled (NOTES.md)
#pragma unroll 1
            for (int ks = 0; ks < T::kKSteps; ++ks) {
                uint32_t ka[4], va[4];
                ldsm_x4(ka, smem_base + 2 * frag::swizzle<kD>(warp * 16 + fa.row, ks * 16 + fa.col));
                ldsm_x4(va, smem_base + T::kKvKeyBytes + 2 * frag::swizzle<kD>(warp * 16 + fa.row, ks * 16 + fa.col));
                // one column step: rows 16 np keep the swizzle of row fb.row
                const int qrow0 = frag::swizzle<kD>(fb.row, ks * 16 + fb.col);
#pragma unroll
                for (int np = 0; np < kBlockM / 16; ++np) {
                    uint32_t qb[4], gb[4];
                    const int off = 2 * (qrow0 + 16 * np * kD);
                    ldsm_x4(qb, q_tile + off);
                    M::run(st_[2 * np], ka, qb[0], qb[1]);
                    M::run(st_[2 * np + 1], ka, qb[2], qb[3]);
                    ldsm_x4(gb, do_tile + off);
                    M::run(dpt[2 * np], va, gb[0], gb[1]);
                    M::run(dpt[2 * np + 1], va, gb[2], gb[3]);
                }
            }

            // ---- Pᵀ and dSᵀ (before λ_i: the fast path's dQ takes it so, dK times λ_i below); the mask on
            // boundary tiles only ----
            dkdv_scores<Score, kExt, T::kKvMTiles, kBetaStride<kBlockM>>(f, sc, sc_x, b, h, i0, jw, 0, key_j, lane, lse_sm,
                                                                         d_sm, lambda_sm, beta_tile, st_, dpt);

            // ---- dV_w += Pᵀ dO, dK_w += dSᵀ Q: the accumulators are the A operands (k = query rows) ----
            const frag::SwizzledRows<kD> gq(fbt);
#pragma unroll
            for (int kp = 0; kp < kBlockM / 16; ++kp) {
                const uint32_t pa[4] = {M::pack(st_[2 * kp][0], st_[2 * kp][1]), M::pack(st_[2 * kp][2], st_[2 * kp][3]),
                                        M::pack(st_[2 * kp + 1][0], st_[2 * kp + 1][1]),
                                        M::pack(st_[2 * kp + 1][2], st_[2 * kp + 1][3])};
                uint32_t da[4] = {M::pack(dpt[2 * kp][0], dpt[2 * kp][1]), M::pack(dpt[2 * kp][2], dpt[2 * kp][3]),
                                  M::pack(dpt[2 * kp + 1][0], dpt[2 * kp + 1][1]),
                                  M::pack(dpt[2 * kp + 1][2], dpt[2 * kp + 1][3])};
                if (fast) {  // dSᵀ [key][query] for accumulate_dq (λ_i there): each register's pair where it came from
#pragma unroll
                    for (int reg = 0; reg < 4; ++reg) {
                        const frag::RowCol at = frag::a_pack_pos(lane, reg);
                        ds_sm[frag::ds_offset<kBlockM>(warp * 16 + at.row, kp * 16 + at.col) / 2] = da[reg];
                    }
                }
                if constexpr (kExt) {
                    if (f.ext.logn_train > 0) {  // dK_j = scale·Σ_i λ_i dS_ij q_i
#pragma unroll
                        for (int u = 0; u < 2; ++u)
                            pack_times_lambda<M>(dpt[2 * kp + u], lambda_sm + (2 * kp + u) * 8, lane, da[2 * u], da[2 * u + 1]);
                    }
                }
#pragma unroll
                for (int dp = 0; dp < T::kDTiles / 2; ++dp) {
                    uint32_t gb[4], qb[4];
                    const int off = 2 * gq.at(kp, dp);
                    ldsm_x4_trans(gb, do_tile + off);
                    M::run(dv[2 * dp], pa, gb[0], gb[1]);
                    M::run(dv[2 * dp + 1], pa, gb[2], gb[3]);
                    ldsm_x4_trans(qb, q_tile + off);
                    M::run(dk[2 * dp], da, qb[0], qb[1]);
                    M::run(dk[2 * dp + 1], da, qb[2], qb[3]);
                }
            }
        }

        // ---- fast path: dQ_tile += dS K over the warps' live keys, added to dq_accum with atomics ----
        if (fast) {
            if (lane == 0) live_sm[warp] = live;
            __syncthreads();  // every warp's dSᵀ and flag are in shared memory
            accumulate_dq<T>(p, b, h, i0, smem_base + kDsAt, live_sm, smem_base, lane, warp,
                             kExt && f.ext.logn_train > 0 ? lambda_sm : nullptr);
        }
    }

    // ---- epilogue: dK (× scale) and dV through shared memory (each warp its own K, V rows) ----
    cp_async_wait_all();  // with no query tile the K, V copies were never waited for
    __syncthreads();
    store_dk_dv<T>(p, b, hk, j0, warp, lane, dk, dv, smem_raw);
}

// ---- kernel 2: dQ --------------------------------------------------------------------------------

// A dQ kernel's block (this file's and bwd_wgmma_kernel.cuh's): (query tile, head, batch), the last query
// tiles (the most keys under causal) first; its head's Q, dO and its kv head's K, V.
template <class Elem>
struct DqBlock {
    int m_block, h;
    int64_t b;
    const Elem *q, *dout, *k, *v;
};
template <class Elem>
__device__ __forceinline__ DqBlock<Elem> dq_block(const BwdParams& p) {
    const FwdParams& f = p.f;
    DqBlock<Elem> blk;
    int64_t bid = blockIdx.x;
    blk.m_block = f.m_blocks - 1 - int(bid % f.m_blocks);
    bid /= f.m_blocks;
    blk.h = int(bid % f.heads_q);
    blk.b = bid / f.heads_q;
    const int hk = blk.h / f.group;
    blk.q = static_cast<const Elem*>(f.q) + blk.b * f.q_batch + blk.h * f.q_head;
    blk.dout = static_cast<const Elem*>(p.dout) + blk.b * p.do_batch + blk.h * p.do_head;
    blk.k = static_cast<const Elem*>(f.k) + blk.b * f.k_batch + hk * f.k_head;
    blk.v = static_cast<const Elem*>(f.v) + blk.b * f.v_batch + hk * f.v_head;
    return blk;
}

// Softmax's row statistics for a dQ kernel (query rows fixed per block): nl = −LSE·log2e and D = Σ_c dO_ic
// O_ic of this thread's two rows row_i (0 past Nq), from global memory; the 4 lanes of a row (a quad of the
// accumulator layout) take a quarter of d each.
template <int kD, class Elem>
__device__ __forceinline__ void dq_row_stats(const BwdParams& p, int64_t b, int h, const Elem* dout,
                                             const int (&row_i)[2], int lane, float (&nl)[2], float (&dd)[2]) {
    const FwdParams& f = p.f;
    const Elem* o = static_cast<const Elem*>(f.out) + b * f.o_batch + h * f.o_head;
    constexpr int kPart = kD / 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float acc = 0.f;
        if (row_i[r] < f.seq_q) {
            nl[r] = -f.lse[b * f.lse_batch + h * f.lse_head + row_i[r] * f.lse_row] * kLog2e;
            const Elem* orow = o + row_i[r] * f.o_row + (lane & 3) * kPart;
            const Elem* grow = dout + row_i[r] * p.do_row + (lane & 3) * kPart;
#pragma unroll
            for (int c = 0; c < kPart; c += 8)
                if ((lane & 3) * kPart + c < f.head_dim)  // (columns past the head dim are not there)
                    acc = dot8<Elem>(*reinterpret_cast<const uint4*>(orow + c),
                                     *reinterpret_cast<const uint4*>(grow + c), acc);
        }
        acc += __shfl_xor_sync(0xffffffffu, acc, 1);
        acc += __shfl_xor_sync(0xffffffffu, acc, 2);
        dd[r] = acc;
    }
}

template <class T, class Score, bool kExt>
__global__ void __launch_bounds__(T::kThreads, 1) attention_bwd_dq_kernel(const __grid_constant__ BwdParams p) {
    using Elem = typename T::Elem;
    using M = Mma<Elem>;
    constexpr int kD = T::kHeadDim, kBlockM = T::kQBlockM, kBlockN = T::kQBlockN;
    const uint32_t smem_base = smem_addr(smem_raw);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const FwdParams& f = p.f;

    const DqBlock<Elem> blk = dq_block<Elem>(p);
    const int m_block = blk.m_block, h = blk.h;
    const int64_t b = blk.b;
    const Elem *q = blk.q, *dout = blk.dout, *k = blk.k, *v = blk.v;

    // int32 row and key indices and tile counts, as in the forward (Nq, Nk <= kMaxCudaSeq)
    const int i0 = m_block * kBlockM;
    const int i_end = int(min(int64_t(i0) + kBlockM, f.seq_q));
    const int64_t key_lo = first_key(f, i0), key_hi = last_key(f, i_end - 1);
    const int n_last = int(key_hi >= key_lo ? key_hi / kBlockN : key_lo / kBlockN - 1);
    auto next_live = [&](int nb) { return next_live_key_tile<kExt, kBlockN>(f, h, i0, i_end - 1, nb, n_last, lane); };
    const int n_first = next_live(int(key_lo / kBlockN));
    const int w0 = i0 + warp * 16;
    const int warp_lo = int(first_key(f, w0)), warp_hi = int(last_key(f, min(int64_t(w0) + 15, f.seq_q - 1)));
    const int row_i[2] = {w0 + frag::acc_row(lane, 0), w0 + frag::acc_row(lane, 2)};

    // ---- prologue: Q, dO (resident), the first K/V tile into stage 0 ----
    const uint32_t q_tile = smem_base, do_tile = smem_base + T::kQRowBytes;
    load_tile<T, kBlockM>(q_tile, q, f.q_row, i0, f.seq_q, f.head_dim, tid);
    load_tile<T, kBlockM>(do_tile, dout, p.do_row, i0, f.seq_q, f.head_dim, tid);
    if (n_first <= n_last) {
        load_tile<T, kBlockN>(smem_base + T::kQStage0, k, f.k_row, n_first * kBlockN, f.seq_k, f.head_dim, tid);
        load_tile<T, kBlockN>(smem_base + T::kQStage0 + T::kQKeyBytes, v, f.v_row, n_first * kBlockN, f.seq_k, f.head_dim, tid);
    }
    cp_async_commit();

    // softmax: −LSE·log2e and D of this thread's two rows, from global memory while the copies fly
    float nl[2] = {0.f, 0.f}, dd[2] = {0.f, 0.f};
    if constexpr (Score::kRowStats) dq_row_stats<kD>(p, b, h, dout, row_i, lane, nl, dd);
    // dBias in the full shape: this block owns rows [i0, i_end) of (b, h), each warp its 16, and writes each
    // element once — a tile the warp computes with its dS (0 where masked), every other key with 0: here
    // the keys before any tile the warp can compute (all warps at once, while the copies fly), in the loop
    // those from the warp's cursor up to each computed tile, and after the last one at the end. The cursor
    // lives in shared memory (no register to spare) and is recomputed where used. (Partial sums: the host
    // zeroes them.)
    const bool dbias_full = kExt && f.ext.dbias != nullptr && p.dbias_partial == nullptr;  // (grid constants)
    auto dbias_next = [&] { return reinterpret_cast<int*>(smem_raw + T::kQDbiasNextAt) + warp; };
    if (dbias_full) {
        // a warp computes no tile before n_first, nor one that ends before its first key warp_lo
        const int lead = int(min(int64_t(max(n_first, warp_lo / kBlockN)) * kBlockN, f.seq_k));
        zero_dbias_keys(f, b, h, w0, 0, lead, lane);
        if (lane == 0) *dbias_next() = lead;
    }
    cp_async_wait_all();
    __syncthreads();

    float dq[T::kDTiles][4];
#pragma unroll
    for (int dt = 0; dt < T::kDTiles; ++dt) dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.f;
    const ScoreConsts sc = score_consts(f), sc_x = score_consts(f, 1.f);  // sc_x: extended, of x
    const frag::RowCol fa = frag::ldsm_a(lane), fb = frag::ldsm_b(lane), fbt = frag::ldsm_bt(lane);
    // extended: this warp's β (and dBias) staging tile, after the Q, dO and K/V buffers
    float* beta_tile = reinterpret_cast<float*>(smem_raw + T::kQSmemBytes) + warp * 16 * kBetaStride<kBlockN>;

    uint32_t tile_k = smem_base + T::kQStage0, next_k = smem_base + T::kQStage1;  // V follows K in a stage
    for (int nb = n_first, nb_next; nb <= n_last; nb = nb_next) {
        const int j0 = nb * kBlockN;
        nb_next = next_live(nb + 1);
        if (nb_next <= n_last) {
            load_tile<T, kBlockN>(next_k, k, f.k_row, nb_next * kBlockN, f.seq_k, f.head_dim, tid);
            load_tile<T, kBlockN>(next_k + T::kQKeyBytes, v, f.v_row, nb_next * kBlockN, f.seq_k, f.head_dim, tid);
        }
        cp_async_commit();

        bool warp_live = warp_lo <= j0 + kBlockN - 1 && warp_hi >= j0 && warp_lo <= warp_hi;
        if constexpr (kExt) {  // as in the forward: β staged, a warp with none allowed skips the tile
            if (f.ext.elementwise && warp_live) warp_live = stage_beta<kBlockN>(f, b, h, w0, j0, lane, beta_tile);
        }
        if (warp_live) {
            // ---- S = Q_w Kᵀ, dP = dO_w Vᵀ (16 rows × kBlockN keys) ----
            float s[T::kQNTiles][4], dps[T::kQNTiles][4];
#pragma unroll
            for (int nt = 0; nt < T::kQNTiles; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[nt][e] = dps[nt][e] = 0.f;
            // not unrolled, as in the dK/dV kernel: d = 128 sigmoid spilled with every k-step hoisted
#pragma unroll 1
            for (int ks = 0; ks < T::kKSteps; ++ks) {
                uint32_t qa[4], ga[4];
                const int aoff = 2 * frag::swizzle<kD>(warp * 16 + fa.row, ks * 16 + fa.col);
                ldsm_x4(qa, q_tile + aoff);
                ldsm_x4(ga, do_tile + aoff);
                const int krow0 = frag::swizzle<kD>(fb.row, ks * 16 + fb.col);  // as qrow0 in the dK/dV kernel
#pragma unroll
                for (int np = 0; np < kBlockN / 16; ++np) {
                    uint32_t kb[4], vb[4];
                    const int off = 2 * (krow0 + 16 * np * kD);
                    ldsm_x4(kb, tile_k + off);
                    M::run(s[2 * np], qa, kb[0], kb[1]);
                    M::run(s[2 * np + 1], qa, kb[2], kb[3]);
                    ldsm_x4(vb, tile_k + T::kQKeyBytes + off);
                    M::run(dps[2 * np], ga, vb[0], vb[1]);
                    M::run(dps[2 * np + 1], ga, vb[2], vb[3]);
                }
            }

            // ---- dS (into dps); the mask on boundary tiles only ----
            dq_scores<Score, kExt, T::kQNTiles>(f, sc, sc_x, b, h, row_i, w0, j0, lane, nl, dd, beta_tile, s, dps);
            if constexpr (kExt) {
                // dBias = ∂L/∂x: through the warp's staging tile (β was read), then stored row by row with
                // lanes along the keys (dQ's λ_i: in the epilogue, dq_row_scale)
                if (f.ext.dbias != nullptr) {
                    stage_acc_tile(beta_tile, dps, lane);
                    if (dbias_full) {
                        zero_dbias_keys(f, b, h, w0, *dbias_next(), j0, lane);
#pragma unroll 1
                        for (int r = 0; r < 16; ++r)
#pragma unroll 1
                            for (int c = lane; c < kBlockN; c += 32)
                                if (w0 + r < f.seq_q && j0 + c < f.seq_k)
                                    store_dbias(f.ext, b, h, w0 + r, j0 + c, beta_tile[r * kBetaStride<kBlockN> + c]);
                        __syncwarp();  // every lane has read the cursor
                        if (lane == 0) *dbias_next() = j0 + kBlockN;
                    } else {
                        store_dbias_partial<kBlockN>(p, b, h, w0, j0, lane, beta_tile);
                    }
                }
            }

            // ---- dQ_w += dS K: dS's accumulators are the A operand (k = keys), K by ldmatrix.trans ----
            const frag::SwizzledRows<kD> kt(fbt);
#pragma unroll
            for (int kp = 0; kp < kBlockN / 16; ++kp) {
                const uint32_t da[4] = {M::pack(dps[2 * kp][0], dps[2 * kp][1]), M::pack(dps[2 * kp][2], dps[2 * kp][3]),
                                        M::pack(dps[2 * kp + 1][0], dps[2 * kp + 1][1]),
                                        M::pack(dps[2 * kp + 1][2], dps[2 * kp + 1][3])};
#pragma unroll
                for (int dp = 0; dp < T::kDTiles / 2; ++dp) {
                    uint32_t kb[4];
                    ldsm_x4_trans(kb, tile_k + 2 * kt.at(kp, dp));
                    M::run(dq[2 * dp], da, kb[0], kb[1]);
                    M::run(dq[2 * dp + 1], da, kb[2], kb[3]);
                }
            }
        }
        cp_async_wait_all();
        __syncthreads();
        const uint32_t t = tile_k;
        tile_k = next_k, next_k = t;
    }

    if (dbias_full) zero_dbias_keys(f, b, h, w0, *dbias_next(), int(f.seq_k), lane);  // keys after the last tile

    // ---- epilogue: dQ × scale·λ_i through this warp's own Q rows in shared memory, 16-byte stores ----
    const float mul[2] = {dq_row_scale<kExt>(f, row_i[0]), dq_row_scale<kExt>(f, row_i[1])};
    store_acc_rows<kD>(static_cast<Elem*>(p.dq) + b * p.dq_batch + h * p.dq_head, p.dq_row, f.seq_q, f.head_dim, i0,
                       warp, lane, dq, mul, reinterpret_cast<Elem*>(smem_raw));
}

// ---- the pair kernels (head dims in (128, 256]; narrower ones on GPUs with 99 KiB per block) --------
// A warp's dK and dV rows over 256 columns would take 256 accumulator registers (dQ's 128 beside S and dP),
// so the warps work in pairs that split the columns of what they accumulate: warp w belongs to group
// g = w % 4 (16 keys of the dK/dV block, 16 rows of the dQ block) and half c = w / 4 (columns c·d/2..).
// The score tile of a group is split between its pair the other way — by queries (dK/dV) or keys (dQ) —
// so that each warp computes its part of S and dP over the whole head dim (no partial sums) and the score
// function once per element; the pair then trades the 16-bit P and dS it feeds the tensor cores through
// shared memory (FlashAttention-2's d = 256 kernels stage P and dS likewise). Per pair and tile this is
// the same tensor-core work as the 128-wide kernels, with one more barrier.
//  - dK/dV: one block per (64 keys, kv head, batch); query tiles of 32 rows, warp (g, c) computing Sᵀ and
//    dPᵀ for keys 16g.. × queries 16c.., then dV, dK of keys 16g.. × columns c·d/2.. from both warps' Pᵀ,
//    dSᵀ. Softmax's O is read straight from global memory one tile ahead into registers (D of the tile's
//    rows): a third staged tile would not fit in sm_80's 163 KiB.
//  - dQ: one block per (64 query rows, head, batch); key tiles of 32, warp (g, c) computing S, dP for rows
//    16g.. × keys 16c.., then dQ of rows 16g.. × columns c·d/2.. from both warps' dS.
// A warp none of whose elements is allowed writes no P or dS; its flag makes its pair skip that k-step.
// Their tiles (64 keys or rows, 32 of the other) are smaller than the regular kernels', so at widths 64 and
// 128 they serve GPUs that allow 99 KiB per block (sm_86, sm_89, sm_120), where the regular kernels need
// 115-133 KiB (d = 64 extended) and 112-162 KiB (d = 128): the pairs 58-90 KiB (BwdSmemPlan picks).
template <int kHeadDim_, class Elem_>
struct BwdPairTraits {
    using Elem = Elem_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kWarps = 8;
    static constexpr int kThreads = kWarps * 32;
    static constexpr int kGroups = kWarps / 2;        // warp w: group w % kGroups, half w / kGroups
    static constexpr int kChunks = kHeadDim / 8;      // 16-byte chunks per row
    static constexpr int kKSteps = kHeadDim / 16;     // k16 steps of a product over d
    static constexpr int kHalfCols = kHeadDim / 2;    // columns of dK, dV or dQ per warp
    static constexpr int kHalfDTiles = kHalfCols / 8;

    // dK/dV kernel: K, V (resident), two stages of Q, dO (and LSE), D, then Pᵀ and dSᵀ [key][query]
    // (frag::ds_offset) and a flag per warp
    static constexpr int kKvBlockN = 16 * kGroups;
    static constexpr int kKvBlockM = 32;
    static constexpr int kKvKeyBytes = kKvBlockN * kHeadDim * 2;
    static constexpr int kKvRowBytes = kKvBlockM * kHeadDim * 2;
    static constexpr int kKvStage0 = 2 * kKvKeyBytes;  // Q, then dO
    static constexpr int kKvStage1 = kKvStage0 + 2 * kKvRowBytes;
    static constexpr int kKvLse0 = kKvStage1 + 2 * kKvRowBytes;
    static constexpr int kKvD = kKvLse0 + 2 * kKvBlockM * 4;
    static constexpr int kKvDsBytes = kKvBlockN * frag::kDsStride<kKvBlockM> * 2;
    static constexpr int kKvPt = kKvD + kKvBlockM * 4;
    static constexpr int kKvDst = kKvPt + kKvDsBytes;
    static constexpr int kKvLive = kKvDst + kKvDsBytes;
    static constexpr int kKvSmemBytes = kKvLive + kWarps * 4;
    // extended, after those: λ of a query tile, one β staging tile per warp (its 16 keys × 16 queries), then the
    // fast path's dSᵀ before λ_i under log-n (the dSᵀ tile holds dSᵀ·λ_i for dK)
    static constexpr int kKvExtDst = kKvSmemBytes + (kKvBlockM + kWarps * 16 * kBetaStride<16>) * 4;
    static constexpr int kKvExtBytes = kKvExtDst + kKvDsBytes - kKvSmemBytes;
    // fast path (accumulate_dq on the dSᵀ tile): 16 query rows × kKvDqCols columns per warp
    static constexpr int kKvKeyGroups = kGroups;
    static constexpr int kKvQuerySplit = 2;  // warp (g, c) computes dS of key group g for queries 16c..
    static constexpr int kKvDqRowGroups = kKvBlockM / 16;
    static constexpr int kKvDqCols = kHeadDim / (kWarps / kKvDqRowGroups);
    static constexpr int kKvThreadsPerRow = kThreads / kKvBlockM;  // D: threads sharing one query row
    static constexpr int kKvChunksPerThread = kChunks / kKvThreadsPerRow;

    // dQ kernel: Q, dO (resident), two stages of K, V, then dS [row][key] and a flag per warp
    static constexpr int kQBlockM = 16 * kGroups;
    static constexpr int kQBlockN = 32;
    static constexpr int kQRowBytes = kQBlockM * kHeadDim * 2;
    static constexpr int kQKeyBytes = kQBlockN * kHeadDim * 2;
    static constexpr int kQStage0 = 2 * kQRowBytes;  // K, then V
    static constexpr int kQStage1 = kQStage0 + 2 * kQKeyBytes;
    static constexpr int kQDs = kQStage1 + 2 * kQKeyBytes;
    static constexpr int kQLive = kQDs + kQBlockM * frag::kDsStride<kQBlockN> * 2;
    static constexpr int kQSmemBytes = kQLive + kWarps * 4;
    static constexpr int kQExtBytes = kWarps * 16 * kBetaStride<16> * 4;  // a β (and dBias) tile per warp

    static_assert(kHeadDim == 64 || kHeadDim == 128 || kHeadDim == 256,
                  "the pairs split the columns into two halves of whole n16 pairs");
    static_assert(kKvBlockM == 16 * 2 && kQBlockN == 16 * 2, "each warp of a pair takes 16 of the tile");
    static_assert((kKvBlockN * kChunks) % kThreads == 0 && (kKvBlockM * kChunks) % kThreads == 0 &&
                      (kQBlockM * kChunks) % kThreads == 0 && (kQBlockN * kChunks) % kThreads == 0,
                  "tile loads split evenly over the threads");
    static_assert(kKvBlockM <= kThreads && kThreads % kKvBlockM == 0 && kKvThreadsPerRow <= 32 &&
                      kChunks % kKvThreadsPerRow == 0,
                  "LSE: a thread per row; D: the threads of a row are adjacent lanes of one warp");
    static_assert(kWarps % kKvDqRowGroups == 0 && kKvDqCols % 16 == 0, "fast dQ: whole 16-row groups, n16 pairs");
    static_assert(kKvSmemBytes + kKvExtBytes <= 163 * 1024 && kQSmemBytes + kQExtBytes <= 163 * 1024,
                  "shared memory of one block on sm_80");
};

// A pair kernel's warp tile's two products over the head dim: acc0 = A0 B0ᵀ and acc1 = A1 B1ᵀ, 16 × 16 each (two
// n8 tiles), from rows a_row.. of the swizzled [rows][kD] tiles at shared-memory addresses a0, a1 (A operands)
// and rows b_row.. of b0, b1 (B = those rows transposed: ldmatrix without .trans, as K in the forward). The
// dK/dV kernel's Sᵀ = K_w Qᵀ and dPᵀ = V_w dOᵀ; the dQ kernel's S = Q_w Kᵀ and dP = dO_w Vᵀ. A rolled loop, as
// in the 128-wide kernels.
template <class T>
__device__ __forceinline__ void pair_tile_products(uint32_t a0, uint32_t b0, uint32_t a1, uint32_t b1, int a_row,
                                                   int b_row, int lane, float (&acc0)[2][4], float (&acc1)[2][4]) {
    using M = Mma<typename T::Elem>;
    constexpr int kD = T::kHeadDim;
    const frag::RowCol fa = frag::ldsm_a(lane), fb = frag::ldsm_b(lane);
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc0[nt][e] = acc1[nt][e] = 0.f;
#pragma unroll 1
    for (int ks = 0; ks < T::kKSteps; ++ks) {
        uint32_t a[4], bm[4];
        const int aoff = 2 * frag::swizzle<kD>(a_row + fa.row, ks * 16 + fa.col);
        const int boff = 2 * frag::swizzle<kD>(b_row + fb.row, ks * 16 + fb.col);
        ldsm_x4(a, a0 + aoff);
        ldsm_x4(bm, b0 + boff);
        M::run(acc0[0], a, bm[0], bm[1]);
        M::run(acc0[1], a, bm[2], bm[3]);
        ldsm_x4(a, a1 + aoff);
        ldsm_x4(bm, b1 + boff);
        M::run(acc1[0], a, bm[0], bm[1]);
        M::run(acc1[1], a, bm[2], bm[3]);
    }
}

template <class T, class Score, bool kExt>
__global__ void __launch_bounds__(T::kThreads, 1) attention_bwd_dkdv_pair_kernel(const __grid_constant__ BwdParams p) {
    using Elem = typename T::Elem;
    using M = Mma<Elem>;
    constexpr int kD = T::kHeadDim, kBlockN = T::kKvBlockN, kBlockM = T::kKvBlockM;
    const uint32_t smem_base = smem_addr(smem_raw);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int group = warp % T::kGroups, half = warp / T::kGroups;
    const FwdParams& f = p.f;

    // block -> (key tile, kv head, batch); this warp's keys and the query rows they may see
    const DkdvBlock<Elem, kBlockN, kBlockM> blk = dkdv_block<Elem, kBlockN, kBlockM>(p);
    const int hk = blk.hk, j0 = blk.j0, n_tiles = blk.n_tiles;
    const int64_t b = blk.b;
    const int jw = j0 + group * 16;
    int wq_first, wq_last;
    warp_query_range(f, jw, wq_first, wq_last);
    // tile t's Q, dO (softmax: LSE) into the stage at byte offset `stage`, its LSE at lse_off
    auto load_query = [&](int t, uint32_t stage, uint32_t lse_off) {
        load_query_tile<Score, false>(p, blk, t, smem_base + stage, T::kKvRowBytes, smem_base + lse_off, tid,
                                      [&](uint32_t tile, const Elem* base, int64_t row_stride, int i0) {
                                          load_tile<T, kBlockM>(tile, base, row_stride, i0, f.seq_q, f.head_dim, tid);
                                      });
    };
    // softmax: this thread's chunks of O for D (row tid / kTpr, chunks from (tid % kTpr)·kCpt), zero past
    // Nq and the head dim
    constexpr int kTpr = T::kKvThreadsPerRow, kCpt = T::kKvChunksPerThread;
    uint4 o_part[kCpt];
    auto load_o_part = [&](int t) {
        const int i = blk.row0(t) + tid / kTpr;
        const Elem* o = static_cast<const Elem*>(f.out) + b * f.o_batch + blk.head(t) * f.o_head + int64_t(i) * f.o_row;
#pragma unroll
        for (int c = 0; c < kCpt; ++c) {
            const int col = ((tid % kTpr) * kCpt + c) * 8;
            o_part[c] = i < f.seq_q && col < f.head_dim ? *reinterpret_cast<const uint4*>(o + col) : uint4{0, 0, 0, 0};
        }
    };
    auto next_live = [&](int t) { return blk.template next_live<kExt>(f, t, lane); };

    // ---- prologue: K, V (resident), the first query tile ----
    load_tile<T, kBlockN>(smem_base, blk.k, f.k_row, j0, f.seq_k, f.head_dim, tid);
    load_tile<T, kBlockN>(smem_base + T::kKvKeyBytes, blk.v, f.v_row, j0, f.seq_k, f.head_dim, tid);
    int t = next_live(0);
    if (t < n_tiles) load_query(t, T::kKvStage0, T::kKvLse0);
    cp_async_commit();
    if constexpr (Score::kRowStats) {
        if (t < n_tiles) load_o_part(t);
    }

    float dk[T::kHalfDTiles][4], dv[T::kHalfDTiles][4];
#pragma unroll
    for (int dt = 0; dt < T::kHalfDTiles; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) dk[dt][e] = dv[dt][e] = 0.f;
    const ScoreConsts sc = score_consts(f), sc_x = score_consts(f, 1.f);
    const float* lse_sm0 = reinterpret_cast<const float*>(smem_raw + T::kKvLse0);
    float* d_sm = reinterpret_cast<float*>(smem_raw + T::kKvD);
    float* lambda_sm = reinterpret_cast<float*>(smem_raw + T::kKvSmemBytes);
    float* beta_tile = lambda_sm + kBlockM + warp * 16 * kBetaStride<16>;
    uint32_t* pt_sm = reinterpret_cast<uint32_t*>(smem_raw + T::kKvPt);
    uint32_t* dst_sm = reinterpret_cast<uint32_t*>(smem_raw + T::kKvDst);
    uint32_t* dq_ds_sm = reinterpret_cast<uint32_t*>(smem_raw + T::kKvExtDst);  // (extended, log-n, fast)
    int* live_sm = reinterpret_cast<int*>(smem_raw + T::kKvLive);
    const bool fast = p.dq_accum != nullptr;
    const frag::RowCol fa = frag::ldsm_a(lane), fbt = frag::ldsm_bt(lane);
    const int key_j[2] = {jw + frag::acc_row(lane, 0), jw + frag::acc_row(lane, 2)};
    const int q_col0 = half * 16;   // this warp's queries in the tile
    const int c0 = half * T::kHalfCols;  // this warp's columns of dK, dV

    for (int s = 0, t_next; t < n_tiles; s ^= 1, t = t_next) {  // s: the stage of tile t
        const uint32_t stage = s ? T::kKvStage1 : T::kKvStage0;
        cp_async_wait_all();  // tile t has landed ...
        __syncthreads();      // ... for every thread; nobody reads the other stage, Pᵀ, dSᵀ or the flags any more
        t_next = next_live(t + 1);
        if (t_next < n_tiles) load_query(t_next, s ? T::kKvStage0 : T::kKvStage1, T::kKvLse0 + (s ? 0 : 4 * kBlockM));
        cp_async_commit();
        const int i0 = blk.row0(t), h = blk.head(t), iw = i0 + q_col0;
        const uint32_t q_tile = smem_base + stage, do_tile = q_tile + T::kKvRowBytes;
        const float* lse_sm = lse_sm0 + s * kBlockM;

        if constexpr (Score::kRowStats) {
            // D_i = Σ_c dO_ic O_ic: O from this thread's registers, dO from the stage; then the next tile's O
            const int r = tid / kTpr, part = tid % kTpr;
            float acc = 0.f;
#pragma unroll
            for (int c = 0; c < kCpt; ++c) {
                const int off = 2 * frag::swizzle<kD>(r, (part * kCpt + c) * 8);
                acc = dot8<Elem>(o_part[c], *reinterpret_cast<const uint4*>(smem_raw + stage + T::kKvRowBytes + off), acc);
            }
#pragma unroll
            for (int m = kTpr / 2; m >= 1; m /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, m);
            if (part == 0) d_sm[r] = acc;
            if (t_next < n_tiles) load_o_part(t_next);
        }
        bool rows_staged = Score::kRowStats;
        if constexpr (kExt) {
            if (f.ext.logn_train > 0) {
                if (tid < kBlockM) lambda_sm[tid] = logn_lambda(f.ext, i0 + tid + f.seq_k - f.seq_q, f.seq_k);
                rows_staged = true;
            }
        }
        if (rows_staged) __syncthreads();  // (a block-uniform condition)

        // ---- this warp's Sᵀ = K_w Q_cᵀ, dPᵀ = V_w dO_cᵀ (16 keys × 16 queries), Pᵀ and dSᵀ ----
        bool live = iw <= wq_last && iw + 15 >= wq_first;
        if constexpr (kExt) {
            if (live && f.ext.elementwise) live = stage_beta_keys<16>(f, b, h, iw, jw, lane, beta_tile);
        }
        if (live) {
            float st_[2][4], dpt[2][4];
            pair_tile_products<T>(smem_base, q_tile, smem_base + T::kKvKeyBytes, do_tile, group * 16, q_col0, lane, st_,
                                  dpt);
            dkdv_scores<Score, kExt, 2, kBetaStride<16>>(f, sc, sc_x, b, h, iw, jw, q_col0, key_j, lane, lse_sm, d_sm,
                                                         lambda_sm, beta_tile, st_, dpt);
            // the 16-bit Pᵀ and dSᵀ the products take, each register's pair where it came from; under log-n
            // dSᵀ·λ_i for dK, and for the fast path's dQ dSᵀ itself in a tile of its own
            uint32_t da[4] = {M::pack(dpt[0][0], dpt[0][1]), M::pack(dpt[0][2], dpt[0][3]), M::pack(dpt[1][0], dpt[1][1]),
                              M::pack(dpt[1][2], dpt[1][3])};
            if constexpr (kExt) {
                if (f.ext.logn_train > 0) {
                    if (fast) {
#pragma unroll
                        for (int reg = 0; reg < 4; ++reg) {
                            const frag::RowCol at = frag::a_pack_pos(lane, reg);
                            dq_ds_sm[frag::ds_offset<kBlockM>(group * 16 + at.row, q_col0 + at.col) / 2] = da[reg];
                        }
                    }
#pragma unroll
                    for (int nt = 0; nt < 2; ++nt)
                        pack_times_lambda<M>(dpt[nt], lambda_sm + q_col0 + nt * 8, lane, da[2 * nt], da[2 * nt + 1]);
                }
            }
#pragma unroll
            for (int reg = 0; reg < 4; ++reg) {
                const frag::RowCol at = frag::a_pack_pos(lane, reg);
                const int nt = reg >> 1, e = (reg & 1) * 2;
                const int off = frag::ds_offset<kBlockM>(group * 16 + at.row, q_col0 + at.col) / 2;
                pt_sm[off] = M::pack(st_[nt][e], st_[nt][e + 1]);
                dst_sm[off] = da[reg];
            }
        }
        if (lane == 0) live_sm[warp] = live;
        __syncthreads();  // both warps' Pᵀ, dSᵀ and flags of every group

        // ---- dV_w += Pᵀ dO, dK_w += dSᵀ Q over the tile's queries, columns c0.. ----
#pragma unroll 1
        for (int kp = 0; kp < 2; ++kp) {  // the queries of half kp, from the warp that computed them
            if (!live_sm[group + kp * T::kGroups]) continue;  // (warp-uniform)
            uint32_t pa[4], da[4];
            const int aoff = 2 * frag::ds_offset<kBlockM>(group * 16 + fa.row, kp * 16 + fa.col);
            ldsm_x4(pa, smem_base + T::kKvPt + aoff);
            ldsm_x4(da, smem_base + T::kKvDst + aoff);
#pragma unroll
            for (int dp = 0; dp < T::kHalfDTiles / 2; ++dp) {
                uint32_t gb[4], qb[4];
                const int off = 2 * frag::swizzle<kD>(kp * 16 + fbt.row, c0 + dp * 16 + fbt.col);
                ldsm_x4_trans(gb, do_tile + off);
                M::run(dv[2 * dp], pa, gb[0], gb[1]);
                M::run(dv[2 * dp + 1], pa, gb[2], gb[3]);
                ldsm_x4_trans(qb, q_tile + off);
                M::run(dk[2 * dp], da, qb[0], qb[1]);
                M::run(dk[2 * dp + 1], da, qb[2], qb[3]);
            }
        }
        // ---- fast path: dQ_tile += dS K, added to dq_accum with atomics ----
        if (fast) {
            const bool logn = kExt && f.ext.logn_train > 0;
            accumulate_dq<T>(p, b, h, i0, smem_base + (logn ? T::kKvExtDst : T::kKvDst), live_sm, smem_base, lane, warp,
                             logn ? lambda_sm : nullptr);
        }
    }

    // ---- epilogue: dK (× scale) and dV of keys 16·group.., columns c0.., through shared memory ----
    cp_async_wait_all();
    __syncthreads();
    store_dk_dv<T, T::kHalfDTiles, kBlockN>(p, b, hk, j0, group, lane, dk, dv, smem_raw, c0);
}

template <class T, class Score, bool kExt>
__global__ void __launch_bounds__(T::kThreads, 1) attention_bwd_dq_pair_kernel(const __grid_constant__ BwdParams p) {
    using Elem = typename T::Elem;
    using M = Mma<Elem>;
    constexpr int kD = T::kHeadDim, kBlockM = T::kQBlockM, kBlockN = T::kQBlockN;
    const uint32_t smem_base = smem_addr(smem_raw);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int group = warp % T::kGroups, half = warp / T::kGroups;
    const FwdParams& f = p.f;

    const DqBlock<Elem> blk = dq_block<Elem>(p);
    const int m_block = blk.m_block, h = blk.h;
    const int64_t b = blk.b;
    const Elem *q = blk.q, *dout = blk.dout, *k = blk.k, *v = blk.v;

    const int i0 = m_block * kBlockM;
    const int i_end = int(min(int64_t(i0) + kBlockM, f.seq_q));
    const int64_t key_lo = first_key(f, i0), key_hi = last_key(f, i_end - 1);
    const int n_last = int(key_hi >= key_lo ? key_hi / kBlockN : key_lo / kBlockN - 1);
    auto next_live = [&](int nb) { return next_live_key_tile<kExt, kBlockN>(f, h, i0, i_end - 1, nb, n_last, lane); };
    const int n_first = next_live(int(key_lo / kBlockN));
    const int w0 = i0 + group * 16;  // this warp's rows
    const int warp_lo = int(first_key(f, w0)), warp_hi = int(last_key(f, min(int64_t(w0) + 15, f.seq_q - 1)));
    const int row_i[2] = {w0 + frag::acc_row(lane, 0), w0 + frag::acc_row(lane, 2)};
    const int k_col0 = half * 16;         // this warp's keys in the tile
    const int c0 = half * T::kHalfCols;  // this warp's columns of dQ

    // ---- prologue: Q, dO (resident), the first K/V tile into stage 0 ----
    const uint32_t q_tile = smem_base, do_tile = smem_base + T::kQRowBytes;
    load_tile<T, kBlockM>(q_tile, q, f.q_row, i0, f.seq_q, f.head_dim, tid);
    load_tile<T, kBlockM>(do_tile, dout, p.do_row, i0, f.seq_q, f.head_dim, tid);
    if (n_first <= n_last) {
        load_tile<T, kBlockN>(smem_base + T::kQStage0, k, f.k_row, n_first * kBlockN, f.seq_k, f.head_dim, tid);
        load_tile<T, kBlockN>(smem_base + T::kQStage0 + T::kQKeyBytes, v, f.v_row, n_first * kBlockN, f.seq_k,
                              f.head_dim, tid);
    }
    cp_async_commit();
    float nl[2] = {0.f, 0.f}, dd[2] = {0.f, 0.f};
    if constexpr (Score::kRowStats) dq_row_stats<kD>(p, b, h, dout, row_i, lane, nl, dd);
    // dBias in the full shape: every warp writes its 16 rows × 16 keys of each tile the block computes (0
    // where masked or where the warp has no allowed element); the keys of tiles the block skips are zeroed
    // by the half-0 warps (all 16 keys of their rows), from a block-uniform cursor
    const bool dbias_full = kExt && f.ext.dbias != nullptr && p.dbias_partial == nullptr;
    int dbias_next = int(min(int64_t(n_first) * kBlockN, f.seq_k));
    if (dbias_full && half == 0) zero_dbias_keys(f, b, h, w0, 0, dbias_next, lane);
    cp_async_wait_all();
    __syncthreads();

    float dq[T::kHalfDTiles][4];
#pragma unroll
    for (int dt = 0; dt < T::kHalfDTiles; ++dt) dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.f;
    const ScoreConsts sc = score_consts(f), sc_x = score_consts(f, 1.f);
    const frag::RowCol fa = frag::ldsm_a(lane), fbt = frag::ldsm_bt(lane);
    float* beta_tile = reinterpret_cast<float*>(smem_raw + T::kQSmemBytes) + warp * 16 * kBetaStride<16>;
    uint32_t* ds_sm = reinterpret_cast<uint32_t*>(smem_raw + T::kQDs);
    int* live_sm = reinterpret_cast<int*>(smem_raw + T::kQLive);

    uint32_t tile_k = smem_base + T::kQStage0, next_k = smem_base + T::kQStage1;  // V follows K in a stage
    for (int nb = n_first, nb_next; nb <= n_last; nb = nb_next) {
        const int j0 = nb * kBlockN, jw = j0 + k_col0;
        nb_next = next_live(nb + 1);
        if (nb_next <= n_last) {
            load_tile<T, kBlockN>(next_k, k, f.k_row, nb_next * kBlockN, f.seq_k, f.head_dim, tid);
            load_tile<T, kBlockN>(next_k + T::kQKeyBytes, v, f.v_row, nb_next * kBlockN, f.seq_k, f.head_dim, tid);
        }
        cp_async_commit();
        if (dbias_full && half == 0) zero_dbias_keys(f, b, h, w0, dbias_next, j0, lane);
        dbias_next = j0 + kBlockN;

        // ---- this warp's S = Q_w K_cᵀ, dP = dO_w V_cᵀ (16 rows × 16 keys), dS ----
        bool live = warp_lo <= jw + 15 && warp_hi >= jw && warp_lo <= warp_hi;
        if constexpr (kExt) {
            if (f.ext.elementwise && live) live = stage_beta<16>(f, b, h, w0, jw, lane, beta_tile);
        }
        if (live) {
            float s[2][4], dps[2][4];
            pair_tile_products<T>(q_tile, tile_k, do_tile, tile_k + T::kQKeyBytes, group * 16, k_col0, lane, s, dps);
            dq_scores<Score, kExt, 2>(f, sc, sc_x, b, h, row_i, w0, jw, lane, nl, dd, beta_tile, s, dps);
            if constexpr (kExt) {
                if (f.ext.dbias != nullptr) {  // dBias = ∂L/∂x through the staging tile, as attention_bwd_dq_kernel
                    stage_acc_tile(beta_tile, dps, lane);
                    if (dbias_full) {
#pragma unroll 1
                        for (int r = lane >> 4; r < 16; r += 2) {  // half-warps on alternate rows, lanes on keys
                            const int c = lane & 15;
                            if (w0 + r < f.seq_q && jw + c < f.seq_k)
                                store_dbias(f.ext, b, h, w0 + r, jw + c, beta_tile[r * kBetaStride<16> + c]);
                        }
                    } else {
                        store_dbias_partial<16>(p, b, h, w0, jw, lane, beta_tile);
                    }
                }
            }
#pragma unroll
            for (int reg = 0; reg < 4; ++reg) {  // the 16-bit dS the product takes
                const frag::RowCol at = frag::a_pack_pos(lane, reg);
                const int nt = reg >> 1, e = (reg & 1) * 2;
                ds_sm[frag::ds_offset<kBlockN>(group * 16 + at.row, k_col0 + at.col) / 2] =
                    M::pack(dps[nt][e], dps[nt][e + 1]);
            }
        } else if (dbias_full) {
            zero_dbias_keys(f, b, h, w0, jw, int(min(int64_t(jw) + 16, f.seq_k)), lane);
        }
        if (lane == 0) live_sm[warp] = live;
        __syncthreads();  // both warps' dS and flags of every group

        // ---- dQ_w += dS K over the tile's keys, columns c0.. (K by ldmatrix.trans) ----
#pragma unroll 1
        for (int kk = 0; kk < 2; ++kk) {  // the keys of half kk, from the warp that computed their dS
            if (!live_sm[group + kk * T::kGroups]) continue;  // (warp-uniform)
            uint32_t da[4];
            ldsm_x4(da, smem_base + T::kQDs + 2 * frag::ds_offset<kBlockN>(group * 16 + fa.row, kk * 16 + fa.col));
#pragma unroll
            for (int dp = 0; dp < T::kHalfDTiles / 2; ++dp) {
                uint32_t kb[4];
                ldsm_x4_trans(kb, tile_k + 2 * frag::swizzle<kD>(kk * 16 + fbt.row, c0 + dp * 16 + fbt.col));
                M::run(dq[2 * dp], da, kb[0], kb[1]);
                M::run(dq[2 * dp + 1], da, kb[2], kb[3]);
            }
        }
        cp_async_wait_all();
        __syncthreads();  // the next K/V has landed; nobody reads this one, dS or the flags any more
        const uint32_t t = tile_k;
        tile_k = next_k, next_k = t;
    }

    if (dbias_full && half == 0) zero_dbias_keys(f, b, h, w0, dbias_next, int(f.seq_k), lane);  // after the last tile

    // ---- epilogue: dQ × scale·λ_i, rows 16·group.., columns c0.., through shared memory where Q was ----
    const float mul[2] = {dq_row_scale<kExt>(f, row_i[0]), dq_row_scale<kExt>(f, row_i[1])};
    store_acc_rows<kD>(static_cast<Elem*>(p.dq) + b * p.dq_batch + h * p.dq_head, p.dq_row, f.seq_q, f.head_dim, i0,
                       group, lane, dq, mul, reinterpret_cast<Elem*>(smem_raw), c0);
}

// ---- launch --------------------------------------------------------------------------------------

// Shared memory of one launch: `bytes` for this launch, `limit` the most any launch of the kernel asks for.
struct BwdSmem {
    int bytes, limit;
};

template <class Kernel>
cudaError_t launch_kernel(Kernel kernel, BwdSmem smem, const BwdParams& p, int64_t blocks, int threads,
                          cudaStream_t stream) {
    // (the fast and the deterministic dK/dV launches differ in size: the attribute is the kernel's largest)
    if (const cudaError_t e = allow_dynamic_smem(kernel, smem.bytes, smem.limit); e != cudaSuccess) return e;
    FSIG_LAUNCH(kernel, dim3(unsigned(blocks)), dim3(threads), smem.bytes, stream, p);
    return cudaGetLastError();
}

template <class T, bool kExt, template <class, class, bool> class KernelOf>
cudaError_t with_bwd_score(const BwdParams& p, BwdSmem smem, int64_t blocks, cudaStream_t stream) {
    switch (p.f.score) {
        case FSIG_SCORE_SOFTMAX: return launch_kernel(KernelOf<T, SoftmaxScore, kExt>::get(), smem, p, blocks, T::kThreads, stream);
        case FSIG_SCORE_SIGMOID: return launch_kernel(KernelOf<T, SigmoidScore, kExt>::get(), smem, p, blocks, T::kThreads, stream);
        case FSIG_SCORE_RELU: return launch_kernel(KernelOf<T, ReluScore, kExt>::get(), smem, p, blocks, T::kThreads, stream);
        case FSIG_SCORE_RELU2: return launch_kernel(KernelOf<T, Relu2Score, kExt>::get(), smem, p, blocks, T::kThreads, stream);
        case FSIG_SCORE_GELU: return launch_kernel(KernelOf<T, GeluScore, kExt>::get(), smem, p, blocks, T::kThreads, stream);
        case FSIG_SCORE_SOFTPLUS: return launch_kernel(KernelOf<T, SoftplusScore, kExt>::get(), smem, p, blocks, T::kThreads, stream);
        case FSIG_SCORE_IDENTITY: return launch_kernel(KernelOf<T, IdentityScore, kExt>::get(), smem, p, blocks, T::kThreads, stream);
        default: return cudaErrorInvalidValue;
    }
}

template <class T, class Score, bool kExt>
struct DkDvKernel {
    static auto get() { return attention_bwd_dkdv_kernel<T, Score, kExt>; }
};
template <class T, class Score, bool kExt>
struct DqKernel {
    static auto get() { return attention_bwd_dq_kernel<T, Score, kExt>; }
};
template <class T, class Score, bool kExt>
struct DkDvPairKernel {
    static auto get() { return attention_bwd_dkdv_pair_kernel<T, Score, kExt>; }
};
template <class T, class Score, bool kExt>
struct DqPairKernel {
    static auto get() { return attention_bwd_dq_pair_kernel<T, Score, kExt>; }
};

// The shared memory of the backward's launches at a width (bytes; the dtype does not change it) and the rule
// that picks a kernel by the device's opt-in limit `allowed`: the regular dK/dV or dQ kernel (widths 64 and
// 128) where its largest launch fits — dK/dV by its fast path's size, so that both paths take the same
// kernel and give the same dK, dV bits — else the pair kernel of the same width, compiled only beside the
// regular kernels that may need more than a GPU with the least shared memory allows; at 256 the pair kernels
// alone. The launchers below and the device query (cuda_runtime.cu) both follow it.
template <int kHeadDim, bool kExt>
struct BwdSmemPlan {
    using Pair = BwdPairTraits<kHeadDim, __half>;
    static constexpr bool kRegular = kHeadDim <= 128;
    static constexpr int regular_dkdv(bool fast) {
        if constexpr (kRegular) {
            using T = BwdTraits<kHeadDim, __half>;
            return T::kKvSmemBytes + (kExt ? T::kKvExtBytes : 0) + (fast ? T::kKvFastBytes : 0);
        } else {
            return 0;
        }
    }
    static constexpr int regular_dq() {
        if constexpr (kRegular) {
            using T = BwdTraits<kHeadDim, __half>;
            return T::kQSmemBytes + (kExt ? T::kQExtBytes : 0);
        } else {
            return 0;
        }
    }
    static constexpr int kPairDkdv = Pair::kKvSmemBytes + (kExt ? Pair::kKvExtBytes : 0);
    static constexpr int kPairDq = Pair::kQSmemBytes + (kExt ? Pair::kQExtBytes : 0);
    static constexpr bool kHasPairDkdv = !kRegular || regular_dkdv(true) > kLeastSmemOptin;
    static constexpr bool kHasPairDq = !kRegular || regular_dq() > kLeastSmemOptin;
    static_assert(regular_dq() <= 163 * 1024 && (kRegular || kPairDkdv <= 163 * 1024),
                  "shared memory of one block on sm_80");
    static_assert(!kRegular || (kPairDkdv <= kLeastSmemOptin && kPairDq <= kLeastSmemOptin),
                  "the narrower pair kernels fit every GPU");
    static bool pair_dkdv(int allowed) { return kHasPairDkdv && (!kRegular || regular_dkdv(true) > allowed); }
    static bool pair_dq(int allowed) { return kHasPairDq && (!kRegular || regular_dq() > allowed); }
    // the most any launch of this width takes on that device (both paths; the device query's bound)
    static int most(int allowed) {
        const int dkdv = pair_dkdv(allowed) ? kPairDkdv : regular_dkdv(true);
        const int dq = pair_dq(allowed) ? kPairDq : regular_dq();
        return dkdv > dq ? dkdv : dq;
    }
};

// The pair kernels' launches
template <class T, bool kExt>
cudaError_t launch_bwd_dkdv_pair(BwdParams p, cudaStream_t stream) {
    static_assert(T::kKvBlockN == kBwdPairKvBlockN, "the host checks the grid with kBwdPairKvBlockN");
    p.n_blocks = int32_t((p.f.seq_k + T::kKvBlockN - 1) / T::kKvBlockN);
    const int64_t blocks = int64_t(p.n_blocks) * p.heads_k * p.f.batch;  // < 2^31, checked on the host
    constexpr int kSmem = BwdSmemPlan<T::kHeadDim, kExt>::kPairDkdv;
    return with_bwd_score<T, kExt, DkDvPairKernel>(p, BwdSmem{kSmem, kSmem}, blocks, stream);
}
template <class T, bool kExt>
cudaError_t launch_bwd_dq_pair(BwdParams p, cudaStream_t stream) {
    static_assert(T::kQBlockM == kBwdPairQBlockM, "the host checks the grid with kBwdPairQBlockM");
    p.f.m_blocks = int32_t((p.f.seq_q + T::kQBlockM - 1) / T::kQBlockM);
    const int64_t blocks = int64_t(p.f.m_blocks) * p.f.heads_q * p.f.batch;  // < 2^31, checked on the host
    constexpr int kSmem = BwdSmemPlan<T::kHeadDim, kExt>::kPairDq;
    return with_bwd_score<T, kExt, DqPairKernel>(p, BwdSmem{kSmem, kSmem}, blocks, stream);
}

template <int kHeadDim, class Elem, bool kExt>
cudaError_t launch_bwd_dkdv(const BwdParams& params, cudaStream_t stream) {
    using Plan = BwdSmemPlan<kHeadDim, kExt>;
    if constexpr (!Plan::kRegular) {
        return launch_bwd_dkdv_pair<BwdPairTraits<kHeadDim, Elem>, kExt>(params, stream);
    } else {
        if constexpr (Plan::kHasPairDkdv) {
            int allowed = 0;
            if (const cudaError_t e = device_smem_optin(allowed); e != cudaSuccess) return e;
            if (Plan::pair_dkdv(allowed)) return launch_bwd_dkdv_pair<BwdPairTraits<kHeadDim, Elem>, kExt>(params, stream);
        }
        using T = BwdTraits<kHeadDim, Elem>;
        static_assert(T::kKvBlockN == kBwdKvBlockN, "store_dk_dv stages V after kBwdKvBlockN rows");
        static_assert(T::kKvBlockN >= kBwdPairKvBlockN, "the host checks the grid with the finer pair blocks");
        BwdParams p = params;
        p.n_blocks = int32_t((p.f.seq_k + T::kKvBlockN - 1) / T::kKvBlockN);
        const int64_t blocks = int64_t(p.n_blocks) * p.heads_k * p.f.batch;  // < 2^31, checked on the host
        // the fast path's dSᵀ tile is asked for only where it runs (the deterministic launches stay smaller)
        const BwdSmem smem{Plan::regular_dkdv(p.dq_accum != nullptr), Plan::regular_dkdv(true)};
        return with_bwd_score<T, kExt, DkDvKernel>(p, smem, blocks, stream);
    }
}

template <int kHeadDim, class Elem, bool kExt>
cudaError_t launch_bwd_dq(const BwdParams& params, cudaStream_t stream) {
    using Plan = BwdSmemPlan<kHeadDim, kExt>;
    if constexpr (!Plan::kRegular) {
        return launch_bwd_dq_pair<BwdPairTraits<kHeadDim, Elem>, kExt>(params, stream);
    } else {
        if constexpr (Plan::kHasPairDq) {
            int allowed = 0;
            if (const cudaError_t e = device_smem_optin(allowed); e != cudaSuccess) return e;
            if (Plan::pair_dq(allowed)) return launch_bwd_dq_pair<BwdPairTraits<kHeadDim, Elem>, kExt>(params, stream);
        }
        using T = BwdTraits<kHeadDim, Elem>;
        static_assert(T::kQBlockM == kBwdQBlockM && T::kQBlockM >= kBwdPairQBlockM,
                      "kBwdQBlockM names these rows; the host checks the grid with the finer pair blocks");
        BwdParams p = params;
        p.f.m_blocks = int32_t((p.f.seq_q + T::kQBlockM - 1) / T::kQBlockM);
        const int64_t blocks = int64_t(p.f.m_blocks) * p.f.heads_q * p.f.batch;
        return with_bwd_score<T, kExt, DqKernel>(p, BwdSmem{Plan::regular_dq(), Plan::regular_dq()}, blocks, stream);
    }
}

}  // namespace fsig::cuda
