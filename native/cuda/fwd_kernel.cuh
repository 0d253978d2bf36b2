// The CUDA forward kernel (FlashAttention-2 design, DESIGN.md §5) for sm_80 and later (sm_90a runs
// the same mma.sync code). Included by the generated units fwd.cu and fwd_ext.cu (plain, extended), each
// instantiating the 7 score policies for fp16 and bf16 at kernel widths 64, 128 and 256: 84 kernels, 56 more
// tall ones at widths 64 and 128, and 28 more at width 256 for GPUs with 99 KiB per block
// (FwdSmemPlan) — width 256: attention_fwd_wide_kernel, Q in shared memory.
//
// Contract: q [B, Nq, Hq, d], k/v [B, Nk, Hk, d], out [B, Nq, Hq, d] in fp16 or bf16, last-dim stride 1,
// other strides multiples of 8 elements, base pointers 16-byte aligned (validated on the host, so every
// global access below is one aligned 16-byte cp.async or store); lse fp32 [B, Hq, Nq], any strides.
// The math is exactly §4 as the CPU kernels compute it: S = scale·q·k, the mask an interval of keys
// per row (causal and window, bottom-right aligned), P = score(S) (0 where masked), O = P V; softmax
// divides by the row sum and writes LSE = ln Σ exp(S) (O = 0, LSE = +inf on a row with no allowed key).
//
// Algorithm (widths 64 and 128; the 256-wide kernel differs as attention_fwd_wide_kernel says). One block
// of 8 warps per (query tile, head, batch). Regular kernel (calls with a strided pattern, a bias or mask that differs
// from row to row, or a layout whose blocks are not multiples of 32 rows × 64 keys, and the others with Nq <= 128, on
// a grid of one wave or where the tall one does not fit: launch_fwd): 128 rows, warp w owns rows 16w..16w+15, its Q
// fragments stay in registers for the whole block. Tall kernel (the other plain and extended calls: tall_serves_ext;
// FwdTallTraits): 256 rows, warp w owns two 16-row tiles, 32w..32w+31, and every K and V fragment it reads serves
// both — 39 instead of 62.5 bytes of shared-memory reads per kFLOP, which bound the regular kernel
// (native/cuda/NOTES.md, "The tall forward") — with Q resident in shared memory, read at each k-step.
// Key tiles of 64 rows stream through shared memory in two stages (cp.async: tile t+1 loads while tile t
// computes). Per tile and row tile:
// S (16 x 64) = Q Kᵀ on tensor cores (ldmatrix + mma.sync m16n8k16, fp32 accumulate), the
// score policy applied to the accumulator registers, P packed to 16-bit in registers as the A operand
// of O += P V (V fragments by ldmatrix.trans). Tiles no row of the block may see (tall: nor its layout, nor its key
// padding) are never visited; inside the range, a warp whose rows see nothing of a tile (or lie past Nq, or, tall,
// whose block row the layout leaves empty there) skips it, and only boundary tiles
// (ragged Nk, causal diagonal, window edges) evaluate the per-element mask. O is written once, staged
// through shared memory as 16-byte stores.
//
// Extended kernels (kExt, chosen when the call has masks or positions, DESIGN §4): S becomes
// x = λ_i·scale·q·k − slope·|δ_i − j| + β_ij, with β the bias tensor or −inf where the strided pattern,
// the block layout, the mask tensor or a bias of −inf disallows the key (ext_params.h); the score is
// applied to x and a masked element gets P = 0 explicitly. λ and ALiBi are applied in registers (the tall
// kernel reads μ = λ·scale, ·log2e for softmax, of its rows from shared memory, staged once per block). The regular
// kernel stages β per warp and tile in shared memory by a rolled loop; the tall one serves only calls whose β is
// alike on every row (key padding) besides a layout it applies by skipping tiles, and for key padding (an instance
// of its own, kKeyBeta) stages one row of β per key tile (ext_key_beta_at), two buffers beside μ, and never loads a
// tile that row masks whole (scan_key_rows). Key tiles the layout or the strided pattern leave empty for all the
// block's rows are never loaded; a warp whose β is all −inf skips the tile.
//
// Softmax is online in the log2 domain: m = running max of S·log2e, l = running Σ 2^(S·log2e − m); each
// thread keeps partial sums over its own columns (the 4 threads of a row share m, so the partial sums
// rescale alike) and reduces them once at the end. A row whose scores so far are all masked has
// m = −inf; the exponent base is then 0, so no −inf − (−inf) = NaN ever forms (as on the CPU).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "flashsig.h"
#include "fragment.h"
#include "fwd_launch.h"
#include "fwd_params.h"
#include "launch.h"
#include "ptx.h"
#include "warp_search.h"

namespace fsig::cuda {

// ---- tile configuration --------------------------------------------------------------------------
// 128 x 64 tiles with 8 warps of 16 query rows: each K/V tile read from global memory serves 128
// query rows. Registers per thread for d = 128: Q 32 + O 64 + S 32; the compiler report is in
// native/cuda/NOTES.md. Shared memory: K and V of two stages (d = 64: 32 KiB, d = 128: 64 KiB). The Q tile
// is first staged in stage 1 (it is as large as one stage's K + V) and O is staged through the K/V stages at
// the end. Tall (kRowTiles 2, FA2's forward layout: 4 warps of 32 rows there, 8 here): 256 x 64 tiles, O 128 +
// S 64 registers at d = 128, Q resident after the stages (d = 64: 64 KiB in all, d = 128: 128 KiB; extended 1 KiB
// more for μ per row, position_tile, and with key padding 0.75 KiB more: two rows of β, the key tiles' bits). d = 256
// (kQInSmem): the same 128 KiB hold one K, one V and Q for the whole block (attention_fwd_wide_kernel).
// kWarps_, kBlockN_: 4 and 32 give the 256-wide kernel of GPUs with 99 KiB per block (FwdSmemPlan).
// kRowTiles_ = 2 gives the tall kernel of plain calls and of extended calls without β per row (positions, key
// padding, a block layout constant over each warp's 32 rows × 64 keys: tall_serves_ext) at widths 64 and 128
// (FwdTallTraits below).
template <int kHeadDim_, class Elem_, int kWarps_ = 8, int kBlockN_ = 64, int kRowTiles_ = 1>
struct FwdTraits {
    using Elem = Elem_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kWarps = kWarps_;
    static constexpr int kThreads = kWarps * 32;
    static constexpr int kRowTiles = kRowTiles_;  // m16 row tiles per warp, each K and V fragment used for all
    static constexpr int kBlockM = 16 * kRowTiles * kWarps;
    static constexpr int kBlockN = kBlockN_;
    static constexpr int kChunks = kHeadDim / 8;           // 16-byte chunks per row
    static constexpr int kTileElems = kBlockN * kHeadDim;  // one K or V tile
    // two row tiles' Q fragments (64 registers at d = 128) would not fit beside their O and S: Q stays in
    // shared memory after the stages, read by ldmatrix at each k-step of S = Q Kᵀ
    static constexpr bool kQResident = kRowTiles > 1;
    static constexpr int kSmemElems = 4 * kTileElems + (kQResident ? kBlockM * kHeadDim : 0);  // K0, V0, K1, V1[, Q]
    static constexpr int kSmemBytes = kSmemElems * 2;
    static constexpr int kNTiles = kBlockN / 8;    // n8 tiles of S per warp
    static constexpr int kKSteps = kHeadDim / 16;  // k16 steps of Q Kᵀ
    static constexpr int kDTiles = kHeadDim / 8;   // n8 tiles of O per warp
    static constexpr int kPSteps = kBlockN / 16;   // k16 steps of P V
    // d = 256: Q's fragments (64 registers) would not fit beside O's 128, so Q stays in shared memory
    // and K and V get one buffer each (attention_fwd_wide_kernel)
    static constexpr bool kQInSmem = kHeadDim > 128;
    static_assert(kHeadDim % 64 == 0, "the swizzle needs rows of whole 128-byte lines");
    static_assert(kQResident || kBlockM * kHeadDim <= 2 * kTileElems, "the Q tile must fit in stage 1");
    static_assert(kBlockM * kHeadDim <= kSmemElems, "the O tile must fit in the buffer");
    static_assert(!(kQResident && kQInSmem), "one place for Q: the 256-wide kernel has its own");
    static_assert((kBlockN * kChunks) % kThreads == 0 && (kBlockM * kChunks) % kThreads == 0,
                  "tile loads split evenly over the threads");
};

constexpr float kLog2e = 1.4426950408889634f;

#if !defined(FSIG_CUDA_EMULATION)
__device__ __forceinline__ float ex2(float x) {  // 2^x, one MUFU op; ex2(-inf) = +0
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ float rcp(float x) {  // 1/x, one MUFU op; rcp(inf) = 0
    float y;
    asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
#endif

// ---- score policies (DESIGN.md §4; the CPU's are in native/cpu/kernels.inc) -----------------------
// apply(acc, c): P from the raw accumulator q.k (scale not yet applied). Softmax is not pointwise: the
// tile code runs its online statistics when kRowStats is set. With kApplyTile the forward's score_tile
// hands the score the warp's whole tile of plain scores (apply_tile) instead of calling apply per element.

struct ScoreConsts {
    float scale, factor;
    float sig_mul, sig_add;  // sigmoid: see SigmoidScore
};

// scale = 1 gives the constants of a score applied to x = scale·q·k itself (the extended kernels, which
// add the extensions to x before the score)
inline __device__ ScoreConsts score_consts(const FwdParams& p, float scale) {
#if FSIG_CUDA_SIGMOID_TANH
    return {scale, p.factor, 0.5f * scale, 0.5f * p.sigmoid_bias};  // tanh(x/2)
#else
    return {scale, p.factor, -scale * kLog2e, -p.sigmoid_bias * kLog2e};  // -x log2e
#endif
}
inline __device__ ScoreConsts score_consts(const FwdParams& p) { return score_consts(p, p.scale); }

struct SoftmaxScore {
    static constexpr bool kRowStats = true;
    static constexpr bool kApplyTile = false;
};

// Sigmoid σ(x), x = scale·acc + b, as 1 / (1 + 2^(−x·log2e)): one FFMA, two MUFU ops, relative error
// a few ulp everywhere — also deep in the tail, where b = −ln Nk puts most scores. DESIGN §5 allows
// 0.5·tanh.approx(x/2) + 0.5 only if it passes §6 at the default bias; its absolute error (~2^-11
// relative to tanh) is of the order of σ itself there, so it is compiled only with
// -DFSIG_CUDA_SIGMOID_TANH=1 for that measurement.
struct SigmoidScore {
    static constexpr bool kRowStats = false;
#if FSIG_CUDA_SIGMOID_TANH
    static constexpr bool kApplyTile = false;
#else
    static constexpr bool kApplyTile = true;  // score_tile calls apply_tile (below) for plain calls
#endif
    static __device__ __forceinline__ float apply(float acc, const ScoreConsts& c) {
#if FSIG_CUDA_SIGMOID_TANH
        float t;
        asm("tanh.approx.f32 %0, %1;\n" : "=f"(t) : "f"(fmaf(acc, c.sig_mul, c.sig_add)));
        return fmaf(0.5f, t, 0.5f);
#else
        return rcp(1.f + ex2(fmaf(acc, c.sig_mul, c.sig_add)));
#endif
    }
#if !FSIG_CUDA_SIGMOID_TANH
    // A warp's tile of plain scores in place (the forward's score_tile), with one MUFU op per element where
    // apply takes two: u = e^x first (x = scale·acc + b), then σ(x) = u / (1 + u). At the default bias −ln Nk
    // nearly every score lies deep in the tail, so when every u of the warp's tile is ≤ 2^-6 the reciprocal is
    // replaced by its series, σ = u (1 − u (1 − u (1 − u))), exact to a relative u⁴ ≤ 2^-24 (three FMAs on the
    // pipe 8× as wide as MUFU's); a tile with any larger u takes u · rcp(1 + u), u capped at 2^100 so that
    // e^x = inf still gives 1. The H200 run measured this kernel's sigmoid 5–10 % slower than softmax, the cost
    // of the second MUFU op (benchmarks/NOTES.md, "First GPU run").
    template <int kNTiles>
    static __device__ __forceinline__ void apply_tile(float (&s)[kNTiles][4], const ScoreConsts& c) {
        bool tail = true;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[nt][e] = ex2(fmaf(s[nt][e], -c.sig_mul, -c.sig_add));  // e^x: sig_mul, sig_add give −x·log2e
                tail = tail && s[nt][e] <= 0x1p-6f;
            }
        if (__all_sync(0xffffffffu, tail)) {
#pragma unroll
            for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const float u = s[nt][e];
                    s[nt][e] = u * fmaf(-u, fmaf(-u, 1.f - u, 1.f), 1.f);
                }
        } else {
#pragma unroll
            for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const float u = s[nt][e] > 0x1p100f ? 0x1p100f : s[nt][e];  // fminf would turn NaN into 2^100
                    s[nt][e] = u * rcp(1.f + u);
                }
        }
    }
#endif
};
// relu that keeps a NaN score NaN, as the CPU backend and the reference do (fmaxf returns 0 for it; no
// comparison is true for NaN)
__device__ __forceinline__ float relu_keep_nan(float x) { return x <= 0.f ? 0.f : x; }
struct ReluScore {
    static constexpr bool kRowStats = false;
    static constexpr bool kApplyTile = false;
    static __device__ __forceinline__ float apply(float acc, const ScoreConsts& c) {
        return relu_keep_nan(acc * c.scale) * c.factor;
    }
};
struct Relu2Score {
    static constexpr bool kRowStats = false;
    static constexpr bool kApplyTile = false;
    static __device__ __forceinline__ float apply(float acc, const ScoreConsts& c) {
        const float r = relu_keep_nan(acc * c.scale);
        return r * r * c.factor;
    }
};
// gelu(x) = x Φ(x), erf form, with the CPU's Φ (native/cpu/simd.h: Abramowitz & Stegun 7.1.26,
// |error| <= 1.5e-7 on erf): Φ(x) = 1 − t P(t) exp(−x²/2) for x >= 0 and t P(t) exp(−x²/2) below,
// t = 1 / (1 + 0.2316419 |x|). A few FFMAs and two MUFU ops; normcdff cost 30 more registers.
struct GeluScore {
    static constexpr bool kRowStats = false;
    static constexpr bool kApplyTile = false;
    static __device__ __forceinline__ float apply(float acc, const ScoreConsts& c) {
        const float x = acc * c.scale;
        const float e = ex2(x * x * -0.72134752044448170f);  // exp(−x²/2)
        const float t = rcp(fmaf(0.23164188826636040f, fabsf(x), 1.f));
        float poly = fmaf(0.5307027145f, t, -0.7265760135f);
        poly = fmaf(poly, t, 0.7107068705f);
        poly = fmaf(poly, t, -0.1422483680f);
        poly = fmaf(poly, t, 0.1274147960f);
        const float half_erfc = poly * t * e;
        return x * (x >= 0.f ? 1.f - half_erfc : half_erfc) * c.factor;
    }
};
// softplus(x) = max(x, 0) + ln(1 + exp(−|x|)): no overflow; the log's absolute error (~1e-7) is far
// below the 16-bit rounding of P.
struct SoftplusScore {
    static constexpr bool kRowStats = false;
    static constexpr bool kApplyTile = false;
    static __device__ __forceinline__ float apply(float acc, const ScoreConsts& c) {
        const float x = acc * c.scale;
        return (fmaxf(x, 0.f) + __logf(1.f + ex2(fabsf(x) * -kLog2e))) * c.factor;
    }
};
struct IdentityScore {
    static constexpr bool kRowStats = false;
    static constexpr bool kApplyTile = false;
    static __device__ __forceinline__ float apply(float acc, const ScoreConsts& c) { return acc * c.scale * c.factor; }
};

// ---- the kernel ----------------------------------------------------------------------------------

// Rows [row0, row0 + kRows) of a [rows][d] global matrix (row stride in elements) into a shared tile whose
// byte offset of (row, col) is offset(row, col), one 16-byte cp.async per chunk; rows at or past n_rows
// and columns at or past cols (a head dim d below the kernel's width: FwdParams::head_dim) are zero-filled
// (so ragged edges hold finite zeros, never garbage that 0 · NaN would spread). kRolled:
// a rolled loop — unrolled, the compiler keeps every chunk's address live across the tile loop (the
// wgmma kernel spilled 156 bytes that way).
// (Chunk c = tid + it·kThreads, row c / kChunks: the 256-wide Hopper backward's D relies on this order — each
// thread reads back only the chunks it copied itself.)
template <class T, int kRows, bool kRolled = false, class Offset>
__device__ __forceinline__ void load_rows(uint32_t tile, const typename T::Elem* base, int64_t row_stride,
                                          int64_t row0, int64_t n_rows, int cols, int tid, Offset offset) {
    constexpr int kIters = kRows * T::kChunks / T::kThreads;
#pragma unroll(kRolled ? 1 : kIters)
    for (int it = 0; it < kIters; ++it) {
        const int c = tid + it * T::kThreads;
        const int r = c / T::kChunks, col = (c % T::kChunks) * 8;
        const bool ok = row0 + r < n_rows && col < cols;
        const typename T::Elem* src = ok ? base + (row0 + r) * row_stride + col : base;
        cp_async_16(tile + offset(r, col), src, ok ? 16 : 0);
    }
}
// the same into a tile of frag::swizzle's layout (the mma.sync kernels)
template <class T, int kRows, bool kRolled = false>
__device__ __forceinline__ void load_tile(uint32_t tile, const typename T::Elem* base, int64_t row_stride,
                                          int64_t row0, int64_t n_rows, int cols, int tid) {
    load_rows<T, kRows, kRolled>(tile, base, row_stride, row0, n_rows, cols, tid,
                        [](int r, int col) { return uint32_t(2 * frag::swizzle<T::kHeadDim>(r, col)); });
}

// A forward block's (query tile, head, batch), the last query tiles (the most keys under causal) first,
// and the block's base pointers into q, k, v (its kv head: GQA/MQA) and out.
template <class Elem>
struct FwdBlock {
    int m_block, h;
    int64_t b;
    const Elem *q, *k, *v;
    Elem* out;
};
template <class Elem>
__device__ __forceinline__ FwdBlock<Elem> fwd_block(const FwdParams& p) {
    FwdBlock<Elem> blk;
    int64_t bid = blockIdx.x;
    blk.m_block = p.m_blocks - 1 - int(bid % p.m_blocks);
    bid /= p.m_blocks;
    blk.h = int(bid % p.heads_q);
    blk.b = bid / p.heads_q;
    const int hk = blk.h / p.group;
    blk.q = static_cast<const Elem*>(p.q) + blk.b * p.q_batch + blk.h * p.q_head;
    blk.k = static_cast<const Elem*>(p.k) + blk.b * p.k_batch + hk * p.k_head;
    blk.v = static_cast<const Elem*>(p.v) + blk.b * p.v_batch + hk * p.v_head;
    blk.out = static_cast<Elem*>(p.out) + blk.b * p.o_batch + blk.h * p.o_head;
    return blk;
}

// ---- the extensions (ext_params.h) -----------------------------------------------------------------

// Row stride (floats) of a warp's β staging tile: even, so a lane's two adjacent columns are one 8-byte
// load; 4 more than the columns, which leaves at most 2-way bank conflicts on those loads.
template <int kCols>
constexpr int kBetaStride = kCols + 4;

// β (ext_beta) of rows [w0, w0 + 16) × keys [j0, j0 + kCols) into this warp's staging tile, lanes along
// the keys (coalesced bias and mask reads), one row at a time (a rolled loop: small code); −inf past Nq
// or Nk. Returns, warp-uniform, whether any element is allowed (false: the warp skips the tile).
// Out of line, as the backward's β staging and dBias zeroing: inlined, their loops' state pushed the
// extended d = 128 kernels at 255 registers into spills (native/cuda/NOTES.md).
template <int kCols>
inline __device__ FSIG_NOINLINE bool stage_beta(const FwdParams& p, int64_t b, int h, int64_t w0, int64_t j0,
                                                int lane, float* beta) {
    uint32_t phase = strided_phase(p.ext, w0 + p.seq_k - p.seq_q, j0);
    bool any = false;
#pragma unroll 1
    for (int r = 0; r < 16; ++r, phase = strided_phase_next(p.ext, phase)) {
        const int64_t i = w0 + r;
        const ExtBetaRow row = ext_beta_row(p.ext, b, h, i, phase, p.seq_q, p.seq_k);
#pragma unroll 1
        for (int c = lane; c < kCols; c += 32) {
            const float x = i < p.seq_q && j0 + c < p.seq_k ? ext_beta(p.ext, row, j0, c) : -INFINITY;
            beta[r * kBetaStride<kCols> + c] = x;
            any |= x != -INFINITY;
        }
    }
    __syncwarp();  // the tile is read by other lanes of the warp
    return __any_sync(0xffffffffu, any);
}

// x = scale·acc of the thread's elements of a 16-row tile with the positions (λ, ALiBi) applied and,
// when the call has element-wise extensions, β added from the warp's staging tile (nullptr: none; row
// stride kBetaRowStride floats, 0 for one row of β that every row shares).
template <int kNTiles, int kBetaRowStride = kBetaStride<kNTiles * 8>>
__device__ __forceinline__ void extend_tile(const FwdParams& p, int64_t b, int h, const int (&row_i)[2], int j0,
                                            int lane, const float* beta, float (&s)[kNTiles][4]) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        // positions relative to the lane's first column, so that an element's offset nt·8 + e is an
        // immediate (a float(column) per element, hoisted out of the tile loop, made the d = 128 kernels spill)
        const int lane_col = frag::acc_col(lane, 0);
        const ExtRow row = ext_row(p.ext, b, h, row_i[r], j0 + lane_col, p.seq_q, p.seq_k);
        const int srow = frag::acc_row(lane, 2 * r);
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
            float x0 = ext_position(row, nt * 8, s[nt][2 * r] * p.scale);
            float x1 = ext_position(row, nt * 8 + 1, s[nt][2 * r + 1] * p.scale);
            if (beta != nullptr) {
                const int c = nt * 8 + lane_col;
                const float2 bb = *reinterpret_cast<const float2*>(beta + srow * kBetaRowStride + c);
                x0 += bb.x, x1 += bb.y;
            }
            s[nt][2 * r] = x0, s[nt][2 * r + 1] = x1;
        }
    }
}

// The tall kernel's extensions: x·u = μ_i·acc − u·slope·|δ_i − j| + u·β_j of the thread's elements of a 16-row tile,
// with μ_i = λ_i·scale·u as the kernel staged it once per block (mu: the thread's two rows), u = log2e for softmax,
// whose statistics then take the tile as it is (score_tile's kLog2Ready), 1 otherwise, and, kKeyBeta, u·β_j from the
// key tile's row of β alike on every row, staged times u (key_beta_u: kBlockN floats from j0) — the regular kernel's
// extend_tile with the per-row factors folded: two operations per element fewer for softmax. With key padding and
// without ALiBi (slope 0, the same for the whole block) the distance terms vanish: one FFMA per element, as the plain
// kernel's scale is one FMUL.
template <bool kKeyBeta, int kNTiles>
__device__ __forceinline__ void position_tile(const FwdParams& p, int64_t b, int h, const int (&row_i)[2], int j0,
                                              int lane, const float (&mu)[2], float u, const float* key_beta_u,
                                              float (&s)[kNTiles][4]) {
    const float slope = u * ext_alibi_slope(p.ext, b, h);
    const int lane_col = frag::acc_col(lane, 0);
    auto positions = [&](auto alibi) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            // δ_i − j of the lane's first column (int32: rows and keys < 2^30, so every partial sum fits), an
            // element's offset nt·8 + e then an immediate
            const float dist0 = float(row_i[r] - j0 - lane_col + int(p.seq_k - p.seq_q));
#pragma unroll
            for (int nt = 0; nt < kNTiles; ++nt) {
                float2 beta = make_float2(0.f, 0.f);
                if constexpr (kKeyBeta)  // (one load per n8 tile and row: the lane's two keys, alike on every row)
                    beta = *reinterpret_cast<const float2*>(key_beta_u + nt * 8 + lane_col);
                float& x0 = s[nt][2 * r];
                float& x1 = s[nt][2 * r + 1];
                if constexpr (decltype(alibi)::value) {
                    x0 = ext_position_at(slope, mu[r], dist0 - float(nt * 8), x0);
                    x1 = ext_position_at(slope, mu[r], dist0 - float(nt * 8 + 1), x1);
                    if constexpr (kKeyBeta) x0 += beta.x, x1 += beta.y;
                } else if constexpr (kKeyBeta) {
                    x0 = fmaf(x0, mu[r], beta.x), x1 = fmaf(x1, mu[r], beta.y);
                } else {
                    x0 *= mu[r], x1 *= mu[r];
                }
            }
        }
    };
    if (!kKeyBeta || slope != 0.f)  // (the positions-only instance keeps one form: a second one spilled on sm_80)
        positions(std::true_type{});
    else
        positions(std::false_type{});
}

// Key padding: words of one bit per row of β alike on the query rows (ext_key_beta_at) — a key tile of a block's
// key range (the forward kernels, the Hopper dQ kernel) or a query head of a key tile's group (the Hopper dK/dV
// kernel) —, from the range's first on; rows past 2048 of them (131072 keys of 64-key tiles) count as live (their β
// still masks their keys).
constexpr int kKeyTileWords = 64;

// Bit t of bits (t < count, at most kKeyTileWords words) set where the row of β of (b, h0 + t·h_step) allows one of
// the kKeys keys from j0 + t·j_step: the kernels' searches then never load a tile that the padding masks whole.
// Warp w builds words w, w + kWarps, ..., kKeys / 32 adjacent keys per lane, so every word has one writer. Once per
// block; out of line (its loop's state stays out of the kernel's registers).
template <int kWarps, int kKeys>
inline __device__ FSIG_NOINLINE void scan_key_rows(const ExtParams& e, int64_t b, int h0, int h_step, int64_t j0,
                                                   int j_step, int count, int64_t seq_k, int warp, int lane,
                                                   uint32_t* bits) {
    static_assert(kKeys % 32 == 0, "whole keys per lane");
    constexpr int kPerLane = kKeys / 32;
    const int words = min((max(count, 0) + 31) / 32, kKeyTileWords);
    for (int word = warp; word < words; word += kWarps) {
        uint32_t found = 0;
#pragma unroll 4
        for (int t = 0; t < 32; ++t) {
            const int row = word * 32 + t;  // (rows past count: none of their keys is read, bit clear)
            const int64_t h = h0 + int64_t(row) * h_step, j = j0 + int64_t(row) * j_step + kPerLane * lane;
            bool allowed = false;
            if (row < count) {
#pragma unroll
                for (int c = 0; c < kPerLane; ++c)  // (|: the keys' loads in flight together)
                    allowed |= ext_key_beta_at(e, b, h, j + c, seq_k) != -INFINITY;
            }
            if (__any_sync(0xffffffffu, allowed)) found |= 1u << t;
        }
        if (lane == 0) bits[word] = found;
    }
}

// The Hopper kernels' key-tile bits in shared memory: kKeyTileWords words of scan_key_rows over a block's key tiles
// from tile_lo on where the call has key padding, then the first tile they describe (bits[kKeyTileWords]) — without
// key padding an origin so far below every tile that each counts as live (key_row_live). Their search reads both
// from there, holding neither a flag nor the origin in registers across the tile loop (at 255 registers those made
// the gelu and softplus kernels spill). Every thread; a barrier publishes them.
constexpr int kNoKeyBitsOrigin = -(1 << 30);
template <int kWarps, int kBlockN>
__device__ __forceinline__ void stage_key_tile_bits(const FwdParams& p, bool key_padding, int64_t b, int h,
                                                    int tile_lo, int n_last, int warp, int lane, uint32_t* bits) {
    if (key_padding)
        scan_key_rows<kWarps, kBlockN>(p.ext, b, h, 0, int64_t(tile_lo) * kBlockN, kBlockN, n_last - tile_lo + 1,
                                       p.seq_k, warp, lane, bits);
    if (warp == 0 && lane == 0) bits[kKeyTileWords] = uint32_t(key_padding ? tile_lo : kNoKeyBitsOrigin);
    __syncthreads();
}

// Whether row r of scan_key_rows' bits may allow a key: its bit, or r past the bits. A search without bits passes
// nullptr (the tall kernel: a template instance of its own) or, in the Hopper kernels, an origin so low that every
// r is past them (stage_key_tile_bits: read from shared memory, not held in registers)
__device__ __forceinline__ bool key_row_live(const uint32_t* bits, int r) {
    return r >= kKeyTileWords * 32 || ((bits[r >> 5] >> (r & 31)) & 1u) != 0;
}

// The first key tile from nb on (up to n_last, past it when none) that is not empty for rows [i0, i1]:
// extended, tiles the block layout or the strided pattern leave empty for every row are skipped without
// being loaded (every thread gets the same answer), and with key padding (key_bits: scan_key_rows' bits from tile
// tile_lo on; nullptr without) tiles whose row of β masks every key; plain, nb itself. The forward and dQ kernels
// (key bits: the Hopper ones). A warp collective (warp_search.h): call it with every lane.
template <bool kExt, int kBlockN>
__device__ __forceinline__ int next_live_key_tile(const FwdParams& p, int h, int i0, int i1, int nb, int n_last,
                                                  int lane, const uint32_t* key_bits = nullptr, int tile_lo = 0) {
    if constexpr (kExt)
        return first_live_index(nb, n_last, lane, [&](int t) {
            const int64_t j0 = int64_t(t) * kBlockN;
            return (key_bits == nullptr || key_row_live(key_bits, t - tile_lo)) &&
                   ext_tile_live(p.ext, h, i0, i1, j0, min(j0 + kBlockN, p.seq_k) - 1, p.seq_q, p.seq_k);
        });
    return nb;
}

// The tall kernel's search (a layout constant over each warp's 32 rows and key tile, key padding: tall_serves_ext):
// the first key tile from nb on (up to n_last, past it when none) that any block row of the block's rows [i0, i1]
// allows — exact for them, since a tile lies in one key block — and, with key padding (key_bits: scan_key_rows'
// bits from tile tile_lo on; nullptr without), whose row of β allows a key; nb itself with neither. A warp
// collective, as above.
template <int kBlockN>
__device__ __forceinline__ int next_tall_key_tile(const FwdParams& p, int h, int i0, int i1, int nb, int n_last,
                                                  int lane, const uint32_t* key_bits, int tile_lo) {
    if (p.ext.layout == nullptr && key_bits == nullptr) return nb;
    return first_live_index(nb, n_last, lane, [&](int t) {
        return (key_bits == nullptr || key_row_live(key_bits, t - tile_lo)) &&
               ext_layout_rows_allow(p.ext, h, i0, i1, t * kBlockN);
    });
}

// ---- one warp's tile: score, mask, softmax statistics; the epilogue (both forward kernels) ---------

// The score on a warp's S tile (16 rows x kNTiles·8 keys from key j0; row_i: the thread's two rows) in
// place: s holds q·k without the scale (plain) or x (extended: scale and extensions applied, −inf where
// masked; kLog2Ready: softmax's x already times log2e, by position_tile). Softmax runs its online statistics and
// calls rescale_o(r, factor) for each of the thread's two rows (the caller scales O's row r by factor, now or once
// O is its own again); a pointwise score is applied per element. Boundary tiles (interior false, a warp-uniform branch) then mask by the rows' key
// intervals: −inf before softmax's statistics, 0 after a pointwise score.
template <class Score, bool kExt, bool kLog2Ready = false, int kNTiles, class RescaleO>
__device__ __forceinline__ void score_tile(const FwdParams& p, const ScoreConsts& sc, const int (&row_i)[2], int j0,
                                           bool interior, int lane, float (&s)[kNTiles][4], float (&row_max)[2],
                                           float (&row_sum)[2], const RescaleO& rescale_o) {
    constexpr int kCols = kNTiles * 8;
    auto apply_mask = [&](float masked_value) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int64_t lo = first_key(p, row_i[r]) - j0, hi = last_key(p, row_i[r]) - j0;
            // allowed columns [col_lo, col_hi] of this tile, clamped into [-1, kCols]
            const int col_lo = int(max(min(lo, int64_t(kCols)), int64_t(-1)));
            const int col_hi = int(max(min(hi, int64_t(kCols)), int64_t(-1)));
#pragma unroll
            for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
                for (int e = 2 * r; e < 2 * r + 2; ++e) {
                    const int col = nt * 8 + frag::acc_col(lane, e);
                    if (col < col_lo || col > col_hi) s[nt][e] = masked_value;
                }
        }
    };
    if constexpr (Score::kRowStats) {
        const float to_log2 = kExt ? kLog2e : p.scale_log2;
        if constexpr (!kLog2Ready) {
#pragma unroll
            for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[nt][e] *= to_log2;
        }
        if (!interior) apply_mask(-INFINITY);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float mx = row_max[r];
#pragma unroll
            for (int nt = 0; nt < kNTiles; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float base = mx == -INFINITY ? 0.f : mx;  // all masked so far: keep exponents finite
            const float rescale = ex2(row_max[r] - base);
            row_max[r] = mx;
            float sum = 0.f;
#pragma unroll
            for (int nt = 0; nt < kNTiles; ++nt) {
                s[nt][2 * r] = ex2(s[nt][2 * r] - base);
                s[nt][2 * r + 1] = ex2(s[nt][2 * r + 1] - base);
                sum += s[nt][2 * r] + s[nt][2 * r + 1];
            }
            row_sum[r] = row_sum[r] * rescale + sum;
            rescale_o(r, rescale);
        }
    } else if constexpr (Score::kApplyTile && !kExt) {
        Score::apply_tile(s, sc);
        if (!interior) apply_mask(0.f);
    } else {
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                if constexpr (kExt)  // masked: P = 0 explicitly (gelu(−inf), identity(−inf) are not 0)
                    // (the constants are rebuilt from the grid constants here rather than held across
                    // the loop: the d = 128 kernels have no register to spare)
                    s[nt][e] = s[nt][e] == -INFINITY ? 0.f : Score::apply(s[nt][e], score_consts(p, 1.f));
                else
                    s[nt][e] = Score::apply(s[nt][e], sc);
            }
        if (!interior) apply_mask(0.f);
    }
}

// After the last tile: softmax's row sums reduced over each row's 4 threads, LSE written (when asked for),
// and the factors that normalise the thread's two rows of O (0 for a row with no allowed key); 1 for a
// pointwise score.
template <class Score>
__device__ __forceinline__ void finish_rows(const FwdParams& p, int64_t b, int h, const int (&row_i)[2], int lane,
                                            const float (&row_max)[2], const float (&row_sum)[2], float (&mul)[2]) {
    mul[0] = mul[1] = 1.f;
    if constexpr (Score::kRowStats) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float sum = row_sum[r];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            mul[r] = sum > 0.f ? 1.f / sum : 0.f;
            if (p.lse != nullptr && (lane & 3) == 0 && row_i[r] < p.seq_q) {
                // no allowed key: +inf (FA2's convention); a NaN score: a NaN sum and LSE (not +inf, which
                // would tell the backward that the row sees no key)
                const float lse = sum == 0.f ? INFINITY : (row_max[r] + log2f(sum)) * 0.6931471805599453f;
                p.lse[b * p.lse_batch + h * p.lse_head + row_i[r] * p.lse_row] = lse;
            }
        }
    }
}

// This warp's 16 rows of an accumulator (O, or the backward's dQ, dK, dV; rows warp·16.. of the block's tile
// from i0; columns col0 .. col0 + 8·kDTiles of a [rows][kD] tile: all of them, or the half a warp of the
// backward's pair kernels owns — the swizzle maps each (row, column) to its own place, so the two warps'
// parts of the same rows never meet), each row r times mul[r], to out (row_stride elements apart): staged
// through the warp's own part of the shared buffer (free: the caller passed a barrier after its last read of
// it), then written as 16-byte stores; rows from n_rows on and columns from cols on (the head dim) are not
// stored.
template <int kD, class Elem, int kDTiles>
__device__ __forceinline__ void store_acc_rows(Elem* out, int64_t row_stride, int64_t n_rows, int cols, int i0,
                                               int warp, int lane, const float (&o)[kDTiles][4], const float (&mul)[2],
                                               Elem* smem, int col0 = 0) {
    static_assert(kDTiles * 8 <= kD && (16 * kDTiles) % 32 == 0, "n8 tiles of the accumulator inside the tile");
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const uint32_t packed = Mma<Elem>::pack(o[dt][2 * r] * mul[r], o[dt][2 * r + 1] * mul[r]);
            const int row = warp * 16 + frag::acc_row(lane, 2 * r), col = col0 + dt * 8 + frag::acc_col(lane, 0);
            *reinterpret_cast<uint32_t*>(smem + frag::swizzle<kD>(row, col)) = packed;
        }
    __syncwarp();  // each warp stores its own part
#pragma unroll
    for (int it = 0; it < 16 * kDTiles / 32; ++it) {
        const int c = lane + it * 32;  // 16-byte chunk c of the warp's 16 rows x kDTiles chunks
        const int row = warp * 16 + c / kDTiles, col = col0 + (c % kDTiles) * 8;
        if (i0 + row < n_rows && col < cols)
            *reinterpret_cast<uint4*>(out + (i0 + row) * row_stride + col) =
                *reinterpret_cast<const uint4*>(smem + frag::swizzle<kD>(row, col));
    }
}

// kKeyBeta (the tall kernel's extended calls with a bias or mask, key padding: tall_serves_ext): a row of β per key
// tile, an instantiation of its own, so that calls without one keep their registers
template <class T, class Score, bool kExt, bool kKeyBeta = false>
__global__ void __launch_bounds__(T::kThreads, 1) attention_fwd_kernel(const __grid_constant__ FwdParams p) {
    using Elem = typename T::Elem;
    using M = Mma<Elem>;
    constexpr int kD = T::kHeadDim, kBlockM = T::kBlockM, kBlockN = T::kBlockN, kR = T::kRowTiles;
    // the tall kernel serves extended calls without β per row (tall_serves_ext: positions, key padding, and a block
    // layout constant over each warp's rows and key tile, which its tile skipping applies), so it stages no β tile;
    // it stages μ of its rows once (position_tile), one per thread, and kKeyBeta a row of β per key tile
    constexpr bool kBeta = kExt && kR == 1, kTallExt = kExt && kR > 1;
    static_assert(!kTallExt || T::kThreads == kBlockM, "a row's μ per thread");
    static_assert(!kKeyBeta || kTallExt, "key rows of β on the tall extended kernel");
    Elem* smem = reinterpret_cast<Elem*>(smem_raw);
    const uint32_t smem_base = smem_addr(smem);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

    const FwdBlock<Elem> blk = fwd_block<Elem>(p);
    const int m_block = blk.m_block, h = blk.h;
    const int64_t b = blk.b;
    const Elem *q = blk.q, *k = blk.k, *v = blk.v;
    Elem* out = blk.out;

    // Row and key indices and tile counts are int32 (Nq, Nk <= kMaxCudaSeq = 2^30, checked on the host, so
    // a row or key plus a tile's extent cannot overflow): fewer live 64-bit values keep the extended
    // d = 128 kernels from spilling.
    const int i0 = m_block * kBlockM;
    const int i_end = int(min(int64_t(i0) + kBlockM, p.seq_q));  // rows [i0, i_end) are real
    // keys any row of the block may see; first/last_key are monotone in i
    const int64_t key_lo = first_key(p, i0), key_hi = last_key(p, i_end - 1);
    const int n_last = int(key_hi >= key_lo ? key_hi / kBlockN : key_lo / kBlockN - 1);
    // extended tall (shared memory after the K/V stages and Q; recomputed where used, as beta_tile): μ_i =
    // λ_i·scale·u of the block's rows (position_tile); with key padding (a bias or mask alike on every row:
    // tall_serves_ext) two rows of a key tile's u·β, one per K/V stage, and one bit per key tile of the block's
    // range from tile_lo on: whether that row of β allows any of the tile's keys (scan_key_rows)
    auto block_mu = [&] { return reinterpret_cast<float*>(smem_raw + T::kSmemBytes); };
    auto key_beta_row = [&](uint32_t stage) { return block_mu() + kBlockM + (stage == smem_base ? 0 : kBlockN); };
    auto key_tile_bits = [&] { return reinterpret_cast<uint32_t*>(block_mu() + kBlockM + 2 * kBlockN); };
    const int tile_lo = int(key_lo / kBlockN);
    if constexpr (kKeyBeta) {
        scan_key_rows<T::kWarps, kBlockN>(p.ext, b, h, 0, int64_t(tile_lo) * kBlockN, kBlockN, n_last - tile_lo + 1,
                                          p.seq_k, warp, lane, key_tile_bits());
        __syncthreads();
    }
    auto next_live = [&](int nb) {
        if constexpr (kTallExt)
            return next_tall_key_tile<kBlockN>(p, h, i0, i_end - 1, nb, n_last, lane,
                                               kKeyBeta ? key_tile_bits() : nullptr, tile_lo);
        else
            return next_live_key_tile<kBeta, kBlockN>(p, h, i0, i_end - 1, nb, n_last, lane);
    };
    const int n_first = next_live(tile_lo);
    // this warp's rows [w0, w0 + 16·kR) and their key range (rows past Nq beside real ones compute harmlessly on
    // zero Q and are not stored); row tile g holds rows w0 + 16g ..
    const int w0 = i0 + warp * 16 * kR;
    const int warp_lo = int(first_key(p, w0));
    // (−1: a warp whose rows all lie past Nq sees no key and skips every tile)
    const int warp_hi = w0 < p.seq_q ? int(last_key(p, min(int64_t(w0) + 16 * kR - 1, p.seq_q - 1))) : -1;
    // the two rows of this thread's accumulator elements in row tile g: held across the loop by the regular
    // kernel, recomputed where used by the tall one (it has no registers to hold them)
    const int held_rows[2] = {w0 + frag::acc_row(lane, 0), w0 + frag::acc_row(lane, 2)};
    auto rows_of = [&](int g, int (&rows)[2]) {
        rows[0] = T::kQResident ? w0 + 16 * g + frag::acc_row(lane, 0) : held_rows[0];
        rows[1] = T::kQResident ? w0 + 16 * g + frag::acc_row(lane, 2) : held_rows[1];
    };

    // ---- prologue: Q into stage 1 (resident: its own region after the stages), the first K/V tile into
    // stage 0 ----
    // stage s: K at smem_base + s·kStageBytes, V kTileBytes after it (no arrays: a run-time index
    // into a register array would put it in local memory)
    constexpr uint32_t kTileBytes = 2u * T::kTileElems, kStageBytes = 2u * kTileBytes;
    const uint32_t stage1 = smem_base + kStageBytes;
    const uint32_t q_tile = T::kQResident ? smem_base + 2 * kStageBytes : stage1;
    load_tile<T, kBlockM>(q_tile, q, p.q_row, i0, p.seq_q, p.head_dim, tid);
    if (n_first <= n_last) {
        load_tile<T, kBlockN>(smem_base, k, p.k_row, n_first * kBlockN, p.seq_k, p.head_dim, tid);
        load_tile<T, kBlockN>(smem_base + kTileBytes, v, p.v_row, n_first * kBlockN, p.seq_k, p.head_dim, tid);
    }
    constexpr float kPositionUnit = Score::kRowStats ? kLog2e : 1.f;
    // key padding: β of key tile nb (keys j0 + tid, by the first kBlockN threads) for the buffer of the stage its K and
    // V load into, in two steps — in the tile loop the loads issued before the previous tile's P V, their value
    // stored after it, so that no warp waits for them at the barrier that publishes the row
    auto load_key_beta = [&](int nb) {
        return tid < kBlockN ? ext_key_beta_load(p.ext, b, h, int64_t(nb) * kBlockN + tid, p.seq_k) : KeyBetaLoad{};
    };
    auto store_key_beta = [&](const KeyBetaLoad& l, uint32_t stage) {
        if (tid < kBlockN) key_beta_row(stage)[tid] = ext_key_beta_value(p.ext, l) * kPositionUnit;
    };
    if constexpr (kTallExt) {
        block_mu()[tid] =
            logn_lambda(p.ext, int64_t(i0) + tid + p.seq_k - p.seq_q, p.seq_k) * p.scale * kPositionUnit;
        if (kKeyBeta && n_first <= n_last) store_key_beta(load_key_beta(n_first), smem_base);
    }
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();  // (also publishes μ and β)

    // one row tile: Q's fragments in registers for the whole block; resident: read at each k-step
    auto q_rows = [&](int ln) {
        return frag::SwizzledRows<kD>(frag::RowCol{warp * 16 * kR + frag::ldsm_a(ln).row, frag::ldsm_a(ln).col});
    };
    uint32_t qf[T::kQResident ? 1 : T::kKSteps][4];
    if constexpr (!T::kQResident) {
        const frag::SwizzledRows<kD> qa = q_rows(lane);
#pragma unroll
        for (int ks = 0; ks < T::kKSteps; ++ks) ldsm_x4(qf[ks], q_tile + 2 * qa.at(0, ks));
        __syncthreads();  // stage 1 is free for the second key tile
    }

    float o[kR][T::kDTiles][4];
#pragma unroll
    for (int g = 0; g < kR; ++g)
#pragma unroll
        for (int dt = 0; dt < T::kDTiles; ++dt) o[g][dt][0] = o[g][dt][1] = o[g][dt][2] = o[g][dt][3] = 0.f;
    float row_max[kR][2], row_sum[kR][2];  // log2 domain (softmax); this thread's columns only, until the end
#pragma unroll
    for (int g = 0; g < kR; ++g) row_max[g][0] = row_max[g][1] = -INFINITY, row_sum[g][0] = row_sum[g][1] = 0.f;
    const ScoreConsts sc = score_consts(p);

    // extended: this warp's β staging tile, after the K/V stages (FwdTraits::kSmemBytes); recomputed
    // where used (a pointer live across the loop costs the d = 128 kernel two of its last registers)
    auto beta_tile = [&] {
        return reinterpret_cast<float*>(smem_raw + T::kSmemBytes) + warp * 16 * kBetaStride<kBlockN>;
    };

    uint32_t tile_k = smem_base, next_k = stage1;  // this tile's K (V follows it) and the other stage's
    for (int nb = n_first, nb_next; nb <= n_last; nb = nb_next) {
        const int j0 = nb * kBlockN;
        nb_next = next_live(nb + 1);
        if (nb_next <= n_last) {  // prefetch the next tile into the other stage (free since the last barrier);
            // tall: rolled loops, whose chunk addresses are not held across the tile loop
            load_tile<T, kBlockN, T::kQResident>(next_k, k, p.k_row, nb_next * kBlockN, p.seq_k, p.head_dim, tid);
            load_tile<T, kBlockN, T::kQResident>(next_k + kTileBytes, v, p.v_row, nb_next * kBlockN, p.seq_k,
                                                 p.head_dim, tid);
        }
        cp_async_commit();
        // key padding: the next tile's β loaded before this one's P V (whose products hide the loads' latency, and
        // which needs fewer registers than S), or at once by a warp that skips the tile
        KeyBetaLoad next_beta{};
        auto load_next_beta = [&] {
            if (kKeyBeta && nb_next <= n_last) next_beta = load_key_beta(nb_next);
        };

        // warp-uniform: skip a tile none of this warp's rows may see (P = 0 there changes nothing),
        // by the interval and, extended, by the element-wise extensions (β all −inf)
        bool warp_live = warp_lo <= j0 + kBlockN - 1 && warp_hi >= j0 && warp_lo <= warp_hi;
        if constexpr (kBeta) {
            if (p.ext.elementwise && warp_live) warp_live = stage_beta<kBlockN>(p, b, h, w0, j0, lane, beta_tile());
        } else if constexpr (kTallExt) {  // the layout is one block's over the warp's rows and the tile: one entry
            // (key padding needs none: the block's search visits only tiles whose row of β allows a key)
            if (warp_live) warp_live = ext_layout_rows_allow(p.ext, h, w0, w0, j0);
        }
        if (warp_live) {
            // ---- S = Q Kᵀ: each K fragment serves every row tile ----
            float s[kR][T::kNTiles][4];
#pragma unroll
            for (int g = 0; g < kR; ++g)
#pragma unroll
                for (int nt = 0; nt < T::kNTiles; ++nt) s[g][nt][0] = s[g][nt][1] = s[g][nt][2] = s[g][nt][3] = 0.f;
            // tall: the ldmatrix offsets made per tile (opaque lane), not held across the loop in 12 registers
            const int tile_lane = T::kQResident ? opaque(lane) : lane;
            const frag::SwizzledRows<kD> bk(frag::ldsm_b(tile_lane)), qa = q_rows(tile_lane);
#pragma unroll
            for (int ks = 0; ks < T::kKSteps; ++ks) {
                uint32_t qs[kR][4];
#pragma unroll
                for (int g = 0; g < kR; ++g) {
                    if constexpr (T::kQResident)
                        ldsm_x4(qs[g], q_tile + 2 * qa.at(g, ks));
                    else
                        qs[g][0] = qf[ks][0], qs[g][1] = qf[ks][1], qs[g][2] = qf[ks][2], qs[g][3] = qf[ks][3];
                }
#pragma unroll
                for (int np = 0; np < T::kNTiles / 2; ++np) {
                    uint32_t kb[4];
                    ldsm_x4(kb, tile_k + 2 * bk.at(np, ks));
#pragma unroll
                    for (int g = 0; g < kR; ++g) {
                        M::run(s[g][2 * np], qs[g], kb[0], kb[1]);
                        M::run(s[g][2 * np + 1], qs[g], kb[2], kb[3]);
                    }
                }
            }

#pragma unroll
            for (int g = 0; g < kR; ++g) {
                // ---- mask: only tiles that cross a row's bounds or the end of the keys ----
                const bool interior = fwd_warp_interior(p, w0 + 16 * g, j0, kBlockN);
                int row_i[2];
                rows_of(g, row_i);
                if constexpr (kBeta) {  // s = x: scale, λ, ALiBi, β (−inf where an extension masks)
                    extend_tile<T::kNTiles>(p, b, h, row_i, j0, lane, p.ext.elementwise ? beta_tile() : nullptr, s[g]);
                } else if constexpr (kTallExt) {  // s = x·u: scale, λ, ALiBi, key β
                    const float mu[2] = {block_mu()[row_i[0] - i0], block_mu()[row_i[1] - i0]};
                    position_tile<kKeyBeta, T::kNTiles>(p, b, h, row_i, j0, lane, mu, kPositionUnit,
                                                        key_beta_row(tile_k), s[g]);
                }
                score_tile<Score, kExt, kTallExt>(p, sc, row_i, j0, interior, lane, s[g], row_max[g], row_sum[g],
                                        [&](int r, float factor) {
#pragma unroll
                                            for (int dt = 0; dt < T::kDTiles; ++dt)
                                                o[g][dt][2 * r] *= factor, o[g][dt][2 * r + 1] *= factor;
                                        });
            }

            load_next_beta();
            // ---- O += P V: P's accumulator layout is the A-operand layout of two adjacent n8 tiles; each
            // V fragment serves every row tile ----
            const frag::SwizzledRows<kD> bv(frag::ldsm_bt(tile_lane));
#pragma unroll
            for (int kp = 0; kp < T::kPSteps; ++kp) {
                uint32_t pa[kR][4];
#pragma unroll
                for (int g = 0; g < kR; ++g) {
                    pa[g][0] = M::pack(s[g][2 * kp][0], s[g][2 * kp][1]);
                    pa[g][1] = M::pack(s[g][2 * kp][2], s[g][2 * kp][3]);
                    pa[g][2] = M::pack(s[g][2 * kp + 1][0], s[g][2 * kp + 1][1]);
                    pa[g][3] = M::pack(s[g][2 * kp + 1][2], s[g][2 * kp + 1][3]);
                }
#pragma unroll
                for (int dp = 0; dp < T::kDTiles / 2; ++dp) {
                    uint32_t vb[4];
                    ldsm_x4_trans(vb, tile_k + kTileBytes + 2 * bv.at(kp, dp));
#pragma unroll
                    for (int g = 0; g < kR; ++g) {
                        M::run(o[g][2 * dp], pa[g], vb[0], vb[1]);
                        M::run(o[g][2 * dp + 1], pa[g], vb[2], vb[3]);
                    }
                }
            }
        } else {
            load_next_beta();
        }
        // (its buffer's last reads were before the last barrier; read after the next)
        if (kKeyBeta && nb_next <= n_last) store_key_beta(next_beta, next_k);
        cp_async_wait_all();  // the next tile has landed ...
        __syncthreads();      // ... for every thread, and nobody reads this stage any more
        const uint32_t t = tile_k;
        tile_k = next_k, next_k = t;
    }

    // ---- epilogue: normalise (softmax), LSE, O through shared memory as 16-byte stores ----
    // every thread passed a barrier after its last read of K, V or Q: the K/V stages are free for O
#pragma unroll
    for (int g = 0; g < kR; ++g) {
        float mul[2];
        int row_i[2];
        rows_of(g, row_i);
        finish_rows<Score>(p, b, h, row_i, lane, row_max[g], row_sum[g], mul);
        store_acc_rows<kD, Elem>(out, p.o_row, p.seq_q, p.head_dim, i0, warp * kR + g, lane, o[g], mul, smem);
    }
}

// The d = 256 forward (T::kQInSmem): the same block, warps, tiles and per-tile math as
// attention_fwd_kernel, but Q stays in shared memory and is read by ldmatrix at each k-step of S = Q Kᵀ
// (FlashAttention-2's d = 256 layout): O alone takes 128 registers per thread. Shared memory is
// K (32 KiB), V (32 KiB), Q (64 KiB) — two K/V stages would not fit beside Q in sm_80's 163 KiB — so
// K and V are separate cp.async groups: the next tile's K loads while this tile's P V runs, its V while
// the next S = Q Kᵀ runs. Three barriers per tile: K landed; V landed (and every warp done with K);
// every warp done with V. The compact instance for GPUs with 99 KiB per block (FwdTraits<256, Elem, 4, 32>):
// 4 warps (64 rows), 32-key tiles, K 16 KiB, V 16 KiB, Q 32 KiB.
template <class T, class Score, bool kExt>
__global__ void __launch_bounds__(T::kThreads, 1) attention_fwd_wide_kernel(const __grid_constant__ FwdParams p) {
    using Elem = typename T::Elem;
    using M = Mma<Elem>;
    constexpr int kD = T::kHeadDim, kBlockM = T::kBlockM, kBlockN = T::kBlockN;
    static_assert(T::kQInSmem && kBlockM * kD == 2 * T::kTileElems, "K, V, then Q fill the buffer");
    Elem* smem = reinterpret_cast<Elem*>(smem_raw);
    const uint32_t smem_base = smem_addr(smem);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

    const FwdBlock<Elem> blk = fwd_block<Elem>(p);
    const int m_block = blk.m_block, h = blk.h;
    const int64_t b = blk.b;
    const Elem *q = blk.q, *k = blk.k, *v = blk.v;
    Elem* out = blk.out;

    // as attention_fwd_kernel: int32 rows and keys, the block's key range, this warp's rows
    const int i0 = m_block * kBlockM;
    const int i_end = int(min(int64_t(i0) + kBlockM, p.seq_q));
    const int64_t key_lo = first_key(p, i0), key_hi = last_key(p, i_end - 1);
    const int n_last = int(key_hi >= key_lo ? key_hi / kBlockN : key_lo / kBlockN - 1);
    auto next_live = [&](int nb) { return next_live_key_tile<kExt, kBlockN>(p, h, i0, i_end - 1, nb, n_last, lane); };
    const int n_first = next_live(int(key_lo / kBlockN));
    const int w0 = i0 + warp * 16;
    const int warp_lo = int(first_key(p, w0));
    const int warp_hi = int(last_key(p, min(int64_t(w0) + 15, p.seq_q - 1)));
    const int row_i[2] = {w0 + frag::acc_row(lane, 0), w0 + frag::acc_row(lane, 2)};

    constexpr uint32_t kTileBytes = 2u * T::kTileElems;
    const uint32_t k_tile = smem_base, v_tile = smem_base + kTileBytes, q_tile = smem_base + 2 * kTileBytes;
    // prologue: the groups {Q, first K} and {first V}
    load_tile<T, kBlockM>(q_tile, q, p.q_row, i0, p.seq_q, p.head_dim, tid);
    if (n_first <= n_last) load_tile<T, kBlockN>(k_tile, k, p.k_row, n_first * kBlockN, p.seq_k, p.head_dim, tid);
    cp_async_commit();
    if (n_first <= n_last) load_tile<T, kBlockN>(v_tile, v, p.v_row, n_first * kBlockN, p.seq_k, p.head_dim, tid);
    cp_async_commit();

    float o[T::kDTiles][4];
#pragma unroll
    for (int dt = 0; dt < T::kDTiles; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY};
    float row_sum[2] = {0.f, 0.f};
    const ScoreConsts sc = score_consts(p);
    auto beta_tile = [&] {
        return reinterpret_cast<float*>(smem_raw + T::kSmemBytes) + warp * 16 * kBetaStride<kBlockN>;
    };
    const frag::RowCol qa = frag::ldsm_a(lane);

    for (int nb = n_first, nb_next; nb <= n_last; nb = nb_next) {
        const int j0 = nb * kBlockN;
        nb_next = next_live(nb + 1);
        cp_async_wait<1>();  // Q and this tile's K have landed (its V may still be in flight) ...
        __syncthreads();     // ... for every thread

        bool warp_live = warp_lo <= j0 + kBlockN - 1 && warp_hi >= j0 && warp_lo <= warp_hi;
        if constexpr (kExt) {
            if (p.ext.elementwise && warp_live) warp_live = stage_beta<kBlockN>(p, b, h, w0, j0, lane, beta_tile());
        }
        float s[T::kNTiles][4];
        if (warp_live) {
            // ---- S = Q Kᵀ, Q's fragment of each k-step from shared memory ----
#pragma unroll
            for (int nt = 0; nt < T::kNTiles; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
            const frag::SwizzledRows<kD> bk(frag::ldsm_b(lane)), qrows(frag::RowCol{warp * 16 + qa.row, qa.col});
#pragma unroll
            for (int ks = 0; ks < T::kKSteps; ++ks) {
                uint32_t qf[4];
                ldsm_x4(qf, q_tile + 2 * qrows.at(0, ks));
#pragma unroll
                for (int np = 0; np < T::kNTiles / 2; ++np) {
                    uint32_t kb[4];
                    ldsm_x4(kb, k_tile + 2 * bk.at(np, ks));
                    M::run(s[2 * np], qf, kb[0], kb[1]);
                    M::run(s[2 * np + 1], qf, kb[2], kb[3]);
                }
            }
            const bool interior = fwd_warp_interior(p, w0, j0, kBlockN);
            if constexpr (kExt) extend_tile<T::kNTiles>(p, b, h, row_i, j0, lane, p.ext.elementwise ? beta_tile() : nullptr, s);
            score_tile<Score, kExt>(p, sc, row_i, j0, interior, lane, s, row_max, row_sum, [&](int r, float factor) {
#pragma unroll
                for (int dt = 0; dt < T::kDTiles; ++dt) o[dt][2 * r] *= factor, o[dt][2 * r + 1] *= factor;
            });
        }
        cp_async_wait<0>();  // this tile's V has landed ...
        __syncthreads();     // ... for every thread, and no warp reads K any more
        if (nb_next <= n_last)  // (rolled: unrolled, the chunks' addresses stay live across the loop and spill)
            load_tile<T, kBlockN, true>(k_tile, k, p.k_row, nb_next * kBlockN, p.seq_k, p.head_dim, tid);
        cp_async_commit();

        if (warp_live) {
            // ---- O += P V ----
            const frag::SwizzledRows<kD> bv(frag::ldsm_bt(lane));
#pragma unroll
            for (int kp = 0; kp < T::kPSteps; ++kp) {
                const uint32_t pa[4] = {M::pack(s[2 * kp][0], s[2 * kp][1]), M::pack(s[2 * kp][2], s[2 * kp][3]),
                                        M::pack(s[2 * kp + 1][0], s[2 * kp + 1][1]),
                                        M::pack(s[2 * kp + 1][2], s[2 * kp + 1][3])};
#pragma unroll
                for (int dp = 0; dp < T::kDTiles / 2; ++dp) {
                    uint32_t vb[4];
                    ldsm_x4_trans(vb, v_tile + 2 * bv.at(kp, dp));
                    M::run(o[2 * dp], pa, vb[0], vb[1]);
                    M::run(o[2 * dp + 1], pa, vb[2], vb[3]);
                }
            }
        }
        __syncthreads();  // no warp reads V any more
        if (nb_next <= n_last)
            load_tile<T, kBlockN, true>(v_tile, v, p.v_row, nb_next * kBlockN, p.seq_k, p.head_dim, tid);
        cp_async_commit();
    }
    // a block with no key tile still has Q's copies in flight; after the loop none is pending (its last
    // tile issued nothing) and every thread passed a barrier after its last read of K or V, the part of
    // the buffer O is staged through
    cp_async_wait<0>();

    float mul[2];
    finish_rows<Score>(p, b, h, row_i, lane, row_max, row_sum, mul);
    static_assert(kBlockM * kD <= 2 * T::kTileElems, "O is staged through K and V's buffers, not Q's");
    store_acc_rows<kD, Elem>(out, p.o_row, p.seq_q, p.head_dim, i0, warp, lane, o, mul, smem);
}

// ---- launch --------------------------------------------------------------------------------------

template <class T, class Score, bool kExt, bool kKeyBeta>
constexpr auto fwd_kernel_of() {
    if constexpr (T::kQInSmem)
        return attention_fwd_wide_kernel<T, Score, kExt>;
    else
        return attention_fwd_kernel<T, Score, kExt, kKeyBeta>;
}

// Shared memory of a forward launch (bytes; the dtype does not change it): the K/V stages (at 256: Q, K and V; tall:
// and Q), and when extended one β staging tile per warp after them (tall: μ of the block's rows instead, and with key
// padding two rows of β and the key tiles' bits)
template <class T, bool kExt, bool kKeyBeta = false>
constexpr int fwd_smem_bytes() {
    constexpr int kExtBytes = T::kRowTiles > 1 ? (T::kBlockM + (kKeyBeta ? 2 * T::kBlockN + kKeyTileWords : 0)) * 4
                                               : T::kWarps * 16 * kBetaStride<T::kBlockN> * 4;
    return T::kSmemBytes + (kExt ? kExtBytes : 0);
}

// Plain calls, and extended calls without β per row (tall_serves_ext), at widths 64 and 128 (FA2's forward layout):
// 8 warps of two 16-row tiles (256 query rows a block), each K and V fragment read by ldmatrix serving both: 39
// instead of 62.5 bytes of ldmatrix per kFLOP (native/cuda/NOTES.md, "The tall forward"); Q resident in shared
// memory. d = 64: 64 KiB, d = 128: 128 KiB (extended: 1 KiB more for μ, key padding 1.75 KiB: attention_fwd_kernel).
template <int kHeadDim, class Elem>
using FwdTallTraits = FwdTraits<kHeadDim, Elem, 8, 64, 2>;

// FSIG_CUDA_FWD_TALL (read once): 0 — the regular kernel for every forward (the tall kernel's before and after on
// one GPU: tests/gpu/gpu-session.sh, steps bench_tall and bench_masks; a way back while it has not run on a GPU);
// always — the tall kernel for every call it serves and fits, whatever Nq and the grid (the device tests, whose
// grids hold fewer blocks than a GPU has SMs: gpu-session.sh, step tall_always); otherwise launch_fwd's rule.
enum class FwdTall { kOff, kRule, kAlways };
inline FwdTall fwd_tall_setting() {
    static const FwdTall setting = [] {
        const char* e = std::getenv("FSIG_CUDA_FWD_TALL");
        return e == nullptr ? FwdTall::kRule
               : std::strcmp(e, "0") == 0      ? FwdTall::kOff
               : std::strcmp(e, "always") == 0 ? FwdTall::kAlways
                                               : FwdTall::kRule;
    }();
    return setting;
}

// The forward's kernel at a width on a device that allows `allowed` bytes per block: plain calls and extended calls
// without β per row (tall_serves_ext) at 64 and 128 with Nq > 128 take the tall kernel where it fits (at 64 always:
// 64–65.75 KiB) and the regular grid would exceed the SM count (launch_fwd), else the regular one; at 256 the
// regular one where it fits, else (128 KiB, extended 162) the compact one — 4 warps of 16 rows and 32-key tiles,
// 64 KiB (extended 73) — which only the units whose regular kernel may not fit a 99 KiB GPU carry. The launcher
// and the device query (cuda_runtime.cu) both follow it.
template <int kHeadDim, bool kExt>
struct FwdSmemPlan {
    static constexpr int kRegular = fwd_smem_bytes<FwdTraits<kHeadDim, __half>, kExt>();
    static constexpr bool kHasTall = kHeadDim <= 128;
    static constexpr int tall_bytes() {
        if constexpr (kHasTall)
            return fwd_smem_bytes<FwdTallTraits<kHeadDim, __half>, kExt, kExt>();  // (extended: the larger, kKeyBeta)
        else
            return 0;
    }
    static constexpr bool kTallFitsEvery = kHasTall && tall_bytes() <= kLeastSmemOptin;
    static constexpr bool kHasCompact = kRegular > kLeastSmemOptin;
    static constexpr int compact_bytes() {
        if constexpr (kHasCompact)
            return fwd_smem_bytes<FwdTraits<kHeadDim, __half, 4, 32>, kExt>();
        else
            return 0;
    }
    static_assert(kRegular <= 163 * 1024 && tall_bytes() <= 163 * 1024, "shared memory of one block on sm_80");
    static_assert(!kHasCompact || (kHeadDim > 128 && compact_bytes() <= kLeastSmemOptin),
                  "the compact kernel (256 wide) fits every GPU");
    static bool tall(int allowed) { return kHasTall && tall_bytes() <= allowed; }
    static bool compact(int allowed) { return kHasCompact && kRegular > allowed; }
    // (the regular kernel still serves some calls where the tall one fits; extended at 64 it is the larger)
    static int most(int allowed) {
        const int other = compact(allowed) ? compact_bytes() : kRegular;
        return tall(allowed) && tall_bytes() > other ? tall_bytes() : other;
    }
};

template <class T, class Score, bool kExt, bool kKeyBeta = false>
cudaError_t launch_score(const FwdParams& p, int64_t blocks, cudaStream_t stream) {
    auto kernel = fwd_kernel_of<T, Score, kExt, kKeyBeta>();
    constexpr int kSmem = fwd_smem_bytes<T, kExt, kKeyBeta>();
    if (const cudaError_t e = allow_dynamic_smem(kernel, kSmem); e != cudaSuccess) return e;
    FSIG_LAUNCH(kernel, dim3(unsigned(blocks)), dim3(T::kThreads), kSmem, stream, p);
    return cudaGetLastError();
}

// f(Score{}) for the score policy of p.score (both forward kernels' launchers)
template <class F>
cudaError_t with_score_policy(int32_t score, const F& f) {
    switch (score) {
        case FSIG_SCORE_SOFTMAX: return f(SoftmaxScore{});
        case FSIG_SCORE_SIGMOID: return f(SigmoidScore{});
        case FSIG_SCORE_RELU: return f(ReluScore{});
        case FSIG_SCORE_RELU2: return f(Relu2Score{});
        case FSIG_SCORE_GELU: return f(GeluScore{});
        case FSIG_SCORE_SOFTPLUS: return f(SoftplusScore{});
        case FSIG_SCORE_IDENTITY: return f(IdentityScore{});
        default: return cudaErrorInvalidValue;
    }
}

// Rows of a warp of the tall kernel (its two m16 row tiles), aligned to them in the problem
constexpr int kTallWarpRows = 32;

// The extended calls the tall kernel serves: positions (λ, ALiBi); β alike on every row (ext_beta_rows_alike: a bias
// and a mask broadcast over the query rows, key padding), one row per key tile; a block layout constant over every
// warp's 32 rows and key tile, so that skipping tiles (the block's search over its 256 rows, then each warp by its
// layout entry) applies it in full. Any of them together.
inline bool tall_serves_ext(const FwdParams& p) {
    return ext_beta_by_key_rows(p.ext, kTallWarpRows, kFwdBlockN, p.seq_q, p.seq_k);
}

template <class T, bool kExt>
cudaError_t launch_fwd_tiles(FwdParams p, cudaStream_t stream) {
    if constexpr (kExt && T::kRowTiles > 1) {  // (launch_fwd's rule; a β per row would be dropped here)
        static_assert(16 * T::kRowTiles == kTallWarpRows && T::kBlockN == kFwdBlockN,
                      "the warp tiles tall_serves_ext judges");
        if (!tall_serves_ext(p)) return cudaErrorInvalidValue;
    }
    // a layout (extended calls) the host judged constant over kFwdBlockM x kFwdBlockN tiles is so over these,
    // which nest in them (the tall kernel judges its own: tall_serves_ext)
    static_assert(!kExt || T::kRowTiles > 1 || (kFwdBlockM % T::kBlockM == 0 && kFwdBlockN % T::kBlockN == 0),
                  "tiles inside the host's tiles");
    static_assert(T::kBlockM >= kFwdSmallBlockM, "the host checks the grid with the finer compact blocks");
    p.m_blocks = int32_t((p.seq_q + T::kBlockM - 1) / T::kBlockM);
    const int64_t blocks = int64_t(p.m_blocks) * p.heads_q * p.batch;  // < 2^31, checked on the host
    return with_score_policy(p.score, [&](auto score) {
        if constexpr (kExt && T::kRowTiles > 1) {  // key padding: the tall kernel's instance with rows of β
            if (p.ext.bias != nullptr || p.ext.mask != nullptr)
                return launch_score<T, decltype(score), kExt, true>(p, blocks, stream);
        }
        return launch_score<T, decltype(score), kExt>(p, blocks, stream);
    });
}

// kExt: the extended kernels (p.ext.on), generated in their own unit fwd_ext.cu
template <int kHeadDim, class Elem, bool kExt>
cudaError_t launch_fwd(const FwdParams& params, cudaStream_t stream) {
    using Plan = FwdSmemPlan<kHeadDim, kExt>;
    using T = FwdTraits<kHeadDim, Elem>;
    static_assert(T::kBlockM == kFwdBlockM && T::kBlockN == kFwdBlockN, "the host's tiles are these");
    int allowed = 0;
    if constexpr (Plan::kHasTall) {
        // The tall kernel where the regular grid has more than one block of rows per head and more blocks than the
        // GPU has SMs. A regular grid of one wave is done sooner by its twice as many blocks of half the rows (the
        // tall kernel's ceiling is 1.33x the regular one's, not 2x), and at Nq <= 128 a tall block would compute
        // half its rows for nothing (FSIG_CUDA_FWD_TALL=always: whatever the grid). Extended calls only without β per
        // row (tall_serves_ext): positions, key padding, a block layout its warps' tile skipping applies.
        const FwdTall setting = fwd_tall_setting();
        if (setting != FwdTall::kOff && (!kExt || tall_serves_ext(params))) {
            bool tall = setting == FwdTall::kAlways;
            if (!tall && params.seq_q > kFwdBlockM) {
                int sms = 0;
                const cudaError_t e = cached_device_attribute<cudaDevAttrMultiProcessorCount>(sms);
                if (e != cudaSuccess) return e;
                tall = (params.seq_q + kFwdBlockM - 1) / kFwdBlockM * params.heads_q * params.batch > sms;
            }
            if (tall) {
                if constexpr (!Plan::kTallFitsEvery) {
                    if (const cudaError_t e = device_smem_optin(allowed); e != cudaSuccess) return e;
                }
                if (Plan::kTallFitsEvery || Plan::tall(allowed))
                    return launch_fwd_tiles<FwdTallTraits<kHeadDim, Elem>, kExt>(params, stream);
            }
        }
    }
    if constexpr (Plan::kHasCompact) {
        if (const cudaError_t e = device_smem_optin(allowed); e != cudaSuccess) return e;
        if (Plan::compact(allowed)) return launch_fwd_tiles<FwdTraits<kHeadDim, Elem, 4, 32>, kExt>(params, stream);
    }
    return launch_fwd_tiles<T, kExt>(params, stream);
}

}  // namespace fsig::cuda
