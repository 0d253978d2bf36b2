// The Hopper backward kernels (sm_90a): bwd_kernel.cuh's dK/dV and dQ kernels with their products on
// warpgroup MMA (wgmma). Included by the generated units bwd_wgmma[_ext].cu (dK/dV) and
// bwd_dq_wgmma[_ext].cu (dQ), each instantiating the 7 score policies; chosen on the host on an
// sm_90 device when the library was built for sm_90a (cuda_runtime.cu). The dK/dV kernel serves both paths:
// the fast one (it also adds dS K to the fp32 dQ workspace) and the deterministic one (then followed by the
// dQ kernel below, or bwd_kernel.cuh's where this one does not serve), so that dK and dV are the same bits
// on both. Same contract and the same math as bwd_kernel.cuh (probs_grads).
//
// Extended dK/dV kernels (kExt, d = 64 only: at d = 128 they spill, native/cuda/NOTES.md): the positions (log-n
// λ_i, ALiBi) in registers as bwd_kernel.cuh applies them, and no β per element — the host sends only calls
// whose β is one row per key tile (key padding: ext_key_beta with 64-row tiles; staged in shared memory one
// tile ahead; the query tiles of a head whose row masks all the block's keys skipped, one bit per head of the
// group scanned once per block) or none (a layout holding whole 64 × 128 tiles, applied by skipping the query
// tiles it leaves empty).
//
// dK/dV algorithm. One block of 2 warpgroups (256 threads) per (key tile of 128 keys, kv head, batch); warpgroup
// g owns keys 64g..64g+63 (warp w keys 16w..16w+15) and accumulates their dK and dV (64 × d each, fp32) in
// registers. K and V stay in shared memory for the whole block; the block loops over every query head of
// the group (extended: that its padding leaves a key of the block) and every query tile of 64 rows that may see
// its keys (query_range), Q, dO (softmax: O and
// the LSE) streaming through two cp.async stages. Per tile, in the transposed orientation as bwd_kernel.cuh:
//   Sᵀ = K_g Qᵀ and dPᵀ = V_g dOᵀ (64 keys × 64 queries): d / 16 wgmma m64n64k16 each, all operands read
//     from shared memory (K-major);
//   Pᵀ and dSᵀ elementwise in registers (the mask on boundary tiles only);
//   dV_g += Pᵀ dO and dK_g += dSᵀ Q: 4 wgmma m64n<d>k16 each, Pᵀ and dSᵀ from registers (the accumulator
//     layout is the A layout), dO and Q read N-major;
//   fast path: dSᵀ is also stored as dS [query][key] into shared memory; after a barrier warpgroup g
//     computes its share of the tile's dQ = dS K (dS K-major, K N-major) and adds it to dq_accum with fp32
//     atomics (pairs at once): d = 128, columns [64g, 64g + 64) over all 128 keys (8 wgmma m64n64k16);
//     d = 64, all columns over its own 64 keys (4 wgmma m64n64k16; twice the atomics, but no N-major
//     operand starting in the middle of a 128-byte swizzle row, which the PTX ISA's canonical layouts do
//     not describe).
// Both warpgroups run every query tile of the block's range (a wgmma in a branch that differs between the
// warpgroups makes ptxas serialise them all); the mask gives P = dS = 0 where a warp's keys see nothing.
//
// Shared memory (d = 128: 178 KiB, d = 64: 98 KiB), every tile in fwd_wgmma_kernel.cuh's 128-byte-swizzle
// layout (wg::offset) at a 1024-byte boundary: K, V [128][d]; two stages of Q, dO, O [64][d]; dS [64][128];
// the LSE of each stage and the tile's D (fp32, 64 each); extended: the tile's λ, two buffers of the keys' β and
// the group's heads' bits (256 bytes, in every instance's size; 1 KiB of slack aligns the base).
#pragma once

#include "bwd_kernel.cuh"
#include "fwd_wgmma_kernel.cuh"

namespace fsig::cuda {

// The fast path's dQ share of a Hopper dK/dV kernel's warpgroup: dQ_tile += dS K over kSteps k16 steps from
// step ks0 — dS [query][key] K-major at ds_at (a tile of kDsRows rows), K N-major at k_at (kKeyRows rows, from
// the warpgroup's first column block) — into kCols columns, then added to dq_accum (add_dq_rows; this warp's
// 16 rows from row0, columns from c0; times lam[r] for row row0 + r where given: log-n's λ_i).
#if defined(FSIG_HAVE_WGMMA) || defined(FSIG_CUDA_EMULATION)  // (where the kernels' bodies have wgmma)
template <class Elem, int kD, int kCols, int kSteps, int kDsRows, int kKeyRows>
__device__ __forceinline__ void add_dq_wgmma(const BwdParams& p, int64_t b, int h, int row0, int c0, int lane,
                                             uint32_t ds_at, uint32_t k_at, int ks0, const float* lam = nullptr) {
    float dq[kCols / 8][4];
#pragma unroll
    for (int nt = 0; nt < kCols / 8; ++nt) dq[nt][0] = dq[nt][1] = dq[nt][2] = dq[nt][3] = 0.f;
    wgmma_fence_operands(dq);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kSteps; ++ks)
        Wgmma<Elem, kCols>::ss_tb(dq, wg::k_major<kDsRows>(ds_at, ks0 + ks), wg::n_major<kKeyRows>(k_at, ks0 + ks),
                                  ks > 0);
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_fence_operands(dq);
    add_dq_rows<kD>(p, b, h, row0, c0, lane, dq, lam);
}
#endif

template <int kHeadDim_, class Elem_>
struct WgmmaBwdTraits {
    using Elem = Elem_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kWarpGroups = 2;
    static constexpr int kThreads = kWarpGroups * 128;
    static constexpr int kBlockN = 64 * kWarpGroups;  // keys per block
    static constexpr int kBlockM = 64;                 // query rows per tile
    static constexpr int kChunks = kHeadDim / 8;       // 16-byte chunks per row
    static constexpr int kKeyBytes = kBlockN * kHeadDim * 2;  // K or V
    static constexpr int kRowBytes = kBlockM * kHeadDim * 2;  // Q, dO or O
    static constexpr int kStageBytes = 3 * kRowBytes;
    // byte offsets from the 1024-byte-aligned base
    static constexpr int kStage0 = 2 * kKeyBytes;
    static constexpr int kStage1 = kStage0 + kStageBytes;
    static constexpr int kDs = kStage1 + kStageBytes;
    static constexpr int kDsBytes = kBlockM * kBlockN * 2;
    static constexpr int kLse = kDs + kDsBytes;  // stage 0's, then stage 1's
    static constexpr int kDsum = kLse + 2 * kBlockM * 4;
    static constexpr int kLambda = kDsum + kBlockM * 4;     // extended: the tile's λ (log-n),
    static constexpr int kKeyBeta = kLambda + kBlockM * 4;  // the keys' β of a tile, two buffers,
    static constexpr int kHeadBits = kKeyBeta + 2 * kBlockN * 4;  // key padding: the group's heads that see a key
    static constexpr int kSmemBytes = kHeadBits + kKeyTileWords * 4 + 1024;  // 1 KiB of slack to align the base
    static constexpr int kKSteps = kHeadDim / 16;  // k16 steps of Sᵀ, dPᵀ
    static constexpr int kMTiles = kBlockM / 8;    // n8 tiles of Sᵀ (query columns)
    static constexpr int kDTiles = kHeadDim / 8;   // n8 tiles of dK, dV
    static constexpr int kPSteps = kBlockM / 16;   // k16 steps of Pᵀ dO, dSᵀ Q
    // dS K split between the warpgroups into whole 64-column blocks of d (each over all 128 keys) or, at
    // d = 64, into the keys (each its own 64 keys, all of d; both add to dq_accum): K, read N-major, is then
    // never entered in the middle of a 128-byte swizzle row
    static constexpr bool kDqSplitKeys = kHeadDim / kWarpGroups < 64;
    static constexpr int kDqCols = kDqSplitKeys ? kHeadDim : kHeadDim / kWarpGroups;  // dQ columns per warpgroup
    static constexpr int kDqSteps = (kDqSplitKeys ? kBlockN / kWarpGroups : kBlockN) / 16;  // k16 steps of dS K
    static constexpr int kThreadsPerRow = kThreads / kBlockM;  // D: threads sharing one query row
    static constexpr int kChunksPerThread = kChunks / kThreadsPerRow;
    static_assert(kHeadDim % 64 == 0, "whole 128-byte swizzle rows");
    static_assert(kStage0 % 1024 == 0 && kStageBytes % 1024 == 0 && kRowBytes % 1024 == 0 && kDs % 1024 == 0,
                  "every wgmma operand tile at a 1024-byte boundary");
    static_assert(kDqCols % 64 == 0 && kDqCols <= 128, "a warpgroup's dQ: whole 64-column blocks, N <= 128");
    static_assert((kBlockN * kChunks) % kThreads == 0 && (kBlockM * kChunks) % kThreads == 0,
                  "tile loads split evenly over the threads");
    static_assert(kBlockM <= kThreads && kThreadsPerRow <= 32 && kChunks % kThreadsPerRow == 0,
                  "one thread per row loads the LSE; a row's D threads are adjacent lanes of one warp");
    static_assert(2 * kKeyBytes <= kStage0, "the epilogue stages dK, dV where K, V were");
    static_assert(kSmemBytes <= 227 * 1024, "shared memory of one block on sm_90");
};

template <class T, class Score, bool kExt>
__global__ void __launch_bounds__(T::kThreads, 1) attention_bwd_wgmma_kernel(const __grid_constant__ BwdParams p) {
#if defined(FSIG_HAVE_WGMMA) || defined(FSIG_CUDA_EMULATION)
    using Elem = typename T::Elem;
    using M = Mma<Elem>;
    constexpr int kD = T::kHeadDim, kBlockN = T::kBlockN, kBlockM = T::kBlockM;
    const uint32_t smem_base = (smem_addr(smem_raw) + 1023u) & ~1023u;
    unsigned char* const smem = smem_raw + (smem_base - smem_addr(smem_raw));
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, group = warp / 4;
    const FwdParams& f = p.f;

    // block -> (key tile, kv head, batch) and its query tiles (bwd_kernel.cuh)
    const DkdvBlock<Elem, kBlockN, kBlockM> blk = dkdv_block<Elem, kBlockN, kBlockM>(p);
    const int hk = blk.hk, j0 = blk.j0, n_tiles = blk.n_tiles;
    const int64_t b = blk.b;
    const Elem *k = blk.k, *v = blk.v;
    const int jw = j0 + warp * 16;  // this warp's 16 keys (warpgroup g's rows 16w of its wgmma fragments)
    // tile t's Q, dO (softmax: O, LSE) into `stage`, its LSE at lse_at
    auto load_query = [&](int t, uint32_t stage, uint32_t lse_at) {
        load_query_tile<Score, true>(p, blk, t, stage, T::kRowBytes, lse_at, tid,
                                     [&](uint32_t tile, const Elem* base, int64_t row_stride, int i0) {
                                         wg::load_tile<T, kBlockM>(tile, base, row_stride, i0, f.seq_q, f.head_dim, tid);
                                     });
    };
    // extended: query tiles the block layout leaves empty are never visited (a warp collective: every lane
    // calls it; the same answer in every warp). With a layout constant over every tile (the host then sends
    // no β) this skipping is what applies it. With key padding, nor are the tiles of a query head whose row of β
    // masks all the block's keys (one bit per head of the group, scan_key_rows: a block of padding keys computes
    // nothing and stores dK = dV = 0).
    const bool key_padding = kExt && ext_key_padding(f.ext);
    uint32_t* const head_bits = reinterpret_cast<uint32_t*>(smem + T::kHeadBits);
    auto next_live = [&](int t) {
        return blk.template next_live<kExt>(f, t, lane, key_padding ? head_bits : nullptr);
    };

    // ---- prologue: K, V (resident), the first query tile ----
    const uint32_t k_tile = smem_base, v_tile = smem_base + T::kKeyBytes;
    wg::load_tile<T, kBlockN>(k_tile, k, f.k_row, j0, f.seq_k, f.head_dim, tid);
    wg::load_tile<T, kBlockN>(v_tile, v, f.v_row, j0, f.seq_k, f.head_dim, tid);
    // extended, key padding: β of the block's keys for tile u (the same on every row of a tile: the host's
    // ext_key_beta; from the tile's first row) into buffer buf, by the first warpgroup, one tile ahead
    float* const key_beta_sm = reinterpret_cast<float*>(smem + T::kKeyBeta);
    auto stage_key_beta = [&](int u, int buf) {
        if (kExt && f.ext.key_beta && tid < kBlockN) {
            const ExtBetaRow row = ext_beta_row(f.ext, b, blk.head(u), blk.row0(u), 0, f.seq_q, f.seq_k);
            key_beta_sm[buf * kBlockN + tid] = j0 + tid < f.seq_k ? ext_beta(f.ext, row, j0, tid) : -INFINITY;
        }
    };
    if (key_padding) {  // (while K and V load)
        scan_key_rows<T::kThreads / 32, kBlockN>(f.ext, b, hk * blk.group, 1, j0, 0, blk.group, f.seq_k, warp, lane,
                                                 head_bits);
        __syncthreads();
    }
    int t = next_live(0);
    if (t < n_tiles) load_query(t, smem_base + T::kStage0, smem_base + T::kLse), stage_key_beta(t, 0);
    cp_async_commit();

    float dk[T::kDTiles][4], dv[T::kDTiles][4];
#pragma unroll
    for (int dt = 0; dt < T::kDTiles; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) dk[dt][e] = dv[dt][e] = 0.f;
    const ScoreConsts sc = score_consts(f), sc_x = score_consts(f, 1.f);  // sc_x: extended, of x
    const bool fast = p.dq_accum != nullptr;
    // this warpgroup's 64 rows of K and V; its share of dS K: columns c0.. over every key, or all columns
    // over its own keys (from k16 step ks0 of dS and K, N-major B)
    const uint32_t k_group = k_tile + group * 64 * 128, v_group = v_tile + group * 64 * 128;
    const int c0 = T::kDqSplitKeys ? 0 : group * T::kDqCols, ks0 = T::kDqSplitKeys ? group * T::kDqSteps : 0;
    const uint32_t k_dq = k_tile + (c0 / 64) * kBlockN * 128;
    const uint32_t ds_tile = smem_base + T::kDs;
    const float* d_sm = reinterpret_cast<const float*>(smem + T::kDsum);

    for (int s = 0, t_next; t < n_tiles; s ^= 1, t = t_next) {  // s: the stage of tile t
        const uint32_t stage = smem_base + (s ? T::kStage1 : T::kStage0);
        cp_async_wait_all();  // tile t (and in the first, K and V) has landed ...
        fence_proxy_async();  // ... is visible to wgmma ...
        __syncthreads();      // ... for every thread; the other stage, dS, D and λ are no longer read
        t_next = next_live(t + 1);
        if (t_next < n_tiles)
            load_query(t_next, smem_base + (s ? T::kStage0 : T::kStage1), smem_base + T::kLse + (s ? 0 : 4 * kBlockM));
        cp_async_commit();
        const int h = blk.head(t), i0 = blk.row0(t);
        const uint32_t q_tile = stage, do_tile = stage + T::kRowBytes;
        const float* lse_sm = reinterpret_cast<const float*>(smem + T::kLse) + s * kBlockM;

        if constexpr (Score::kRowStats) {
            // D_i = Σ_c dO_ic O_ic of the tile's rows, kThreadsPerRow adjacent lanes per row
            constexpr int kTpr = T::kThreadsPerRow, kCpt = T::kChunksPerThread;
            const int r = tid / kTpr, part = tid % kTpr;
            const unsigned char* o_rows = smem + (stage - smem_base) + 2 * T::kRowBytes;
            const unsigned char* g_rows = smem + (stage - smem_base) + T::kRowBytes;
            float acc = 0.f;
#pragma unroll
            for (int c = 0; c < kCpt; ++c) {
                const uint32_t off = wg::offset<kBlockM>(r, (part * kCpt + c) * 8);
                acc = dot8<Elem>(*reinterpret_cast<const uint4*>(o_rows + off), *reinterpret_cast<const uint4*>(g_rows + off),
                                 acc);
            }
#pragma unroll
            for (int m = kTpr / 2; m >= 1; m /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, m);
            if (part == 0) reinterpret_cast<float*>(smem + T::kDsum)[r] = acc;
        }
        bool rows_staged = Score::kRowStats;
        if constexpr (kExt) {
            if (f.ext.logn_train > 0) {  // λ of the tile's rows
                if (tid < kBlockM)
                    reinterpret_cast<float*>(smem + T::kLambda)[tid] = logn_lambda(f.ext, i0 + tid + f.seq_k - f.seq_q, f.seq_k);
                rows_staged = true;
            }
        }
        if (rows_staged) __syncthreads();  // (a block-uniform condition)

        // ---- Sᵀ = K_g Qᵀ, dPᵀ = V_g dOᵀ (64 keys × 64 queries per warpgroup) ----
        // Sᵀ then Pᵀ, dPᵀ then dSᵀ: zeroed per tile (the first wgmma does not accumulate, but reads them), so
        // that they are dead once packed and dS K's accumulators take their registers (held across the loop,
        // the d = 128 kernels spilled)
        float st[T::kMTiles][4], dpt[T::kMTiles][4];
#pragma unroll
        for (int nt = 0; nt < T::kMTiles; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) st[nt][e] = dpt[nt][e] = 0.f;
        wgmma_fence_operands(st);
        wgmma_fence_operands(dpt);
        wgmma_fence();
        // the resident tiles' descriptors made per tile (opaque), not hoisted out of the loop into registers
        const uint32_t k_at = opaque(k_group), v_at = opaque(v_group);
#pragma unroll
        for (int ks = 0; ks < T::kKSteps; ++ks)
            Wgmma<Elem, kBlockM>::ss(st, wg::k_major<kBlockN>(k_at, ks), wg::k_major<kBlockM>(q_tile, ks), ks > 0);
#pragma unroll
        for (int ks = 0; ks < T::kKSteps; ++ks)
            Wgmma<Elem, kBlockM>::ss(dpt, wg::k_major<kBlockN>(v_at, ks), wg::k_major<kBlockM>(do_tile, ks), ks > 0);
        wgmma_commit();
        // the next tile's key β while the tensor cores work (read after the next tile's barrier; buffer s ^ 1
        // is not read in this one)
        if (t_next < n_tiles) stage_key_beta(t_next, s ^ 1);
        wgmma_wait<0>();
        wgmma_fence_operands(st);
        wgmma_fence_operands(dpt);

        // ---- Pᵀ and dSᵀ (element (key j, query i0 + col)), the mask on boundary tiles only; each k16 step's
        // packed into the A fragments of dV, dK at once (fewer fp32 values live at a time) ----
        const bool interior = tile_interior(f, i0, kBlockM, jw, 16);
        // boundary tiles: the tile columns that may see this thread's two keys, [col_lo, col_hi] (the rows
        // that may see one key form an interval: query_range; none for a key past Nk, none past Nq)
        int col_lo[2] = {0, 0}, col_hi[2] = {kBlockM - 1, kBlockM - 1};
        if (!interior) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int64_t j = jw + frag::acc_row(lane, 2 * r);
                int64_t lo, hi;
                query_range(f, j, j, &lo, &hi);
                col_lo[r] = int(lo) - i0, col_hi[r] = int(hi) - i0;
            }
        }
        // extended: the head's ALiBi slope; the distance δ_i − j of (key_j[r], column acc_col(lane, 0)), the
        // rest of a column's is an immediate; key padding's β of this thread's two keys
        float slope = 0.f, dist0[2] = {0.f, 0.f}, key_beta[2] = {0.f, 0.f};
        const float* lambda_sm = reinterpret_cast<const float*>(smem + T::kLambda);
        if constexpr (kExt) {
            slope = ext_alibi_slope(f.ext, b, h);
            const int64_t d0 = int64_t(i0) + f.seq_k - f.seq_q + frag::acc_col(lane, 0);
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int key = warp * 16 + frag::acc_row(lane, 2 * r);  // in the block
                dist0[r] = float(d0 - j0 - key);
                if (f.ext.key_beta) key_beta[r] = key_beta_sm[s * kBlockN + key];
            }
        }
        uint32_t pa[T::kPSteps][4], da[T::kPSteps][4];
        // fast path: dS [query][key] of k16 step kp for dS K, each 16-bit value of da[kp] where its key and query
        // put it
        auto store_ds = [&](int kp) {
#pragma unroll
            for (int u = 0; u < 2; ++u)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int query = (2 * kp + u) * 8 + frag::acc_col(lane, e), key = warp * 16 + frag::acc_row(lane, e);
                    const uint32_t word = da[kp][2 * u + e / 2] >> (16 * (e % 2));
                    *reinterpret_cast<uint16_t*>(smem + T::kDs + wg::offset<kBlockM>(query, key)) = uint16_t(word & 0xFFFFu);
                }
        };
#pragma unroll
        for (int kp = 0; kp < T::kPSteps; ++kp) {
#pragma unroll
            for (int nt = 2 * kp; nt < 2 * kp + 2; ++nt)
#pragma unroll
                for (int c = 0; c < 2; ++c) {
                    const int col = nt * 8 + frag::acc_col(lane, c);
                    float nl = 0.f, dd = 0.f;
                    if constexpr (Score::kRowStats) nl = -lse_sm[col] * kLog2e, dd = d_sm[col];
                    if constexpr (kExt) {
                        // x = λ_i·scale·q·k − slope·|δ_i − j| + β_j (−inf where disallowed); P, dS = ∂L/∂x
                        // (λ_i below for dK; for dQ on its fp32 partials, add_dq_wgmma's lam)
                        const float lambda = f.ext.logn_train > 0 ? lambda_sm[col] : 1.f;
#pragma unroll
                        for (int e = c; e < 4; e += 2) {
                            const float x = ext_position_at(slope, lambda, dist0[e / 2] + float(nt * 8 + c),
                                                            st[nt][e] * f.scale) + key_beta[e / 2];
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
#pragma unroll
                    for (int e = c; e < 4; e += 2)
                        if (!interior && (col < col_lo[e / 2] || col > col_hi[e / 2])) st[nt][e] = dpt[nt][e] = 0.f;
                }
            // the accumulator layout of two adjacent n8 tiles is the A layout of a k16 step
            pa[kp][0] = M::pack(st[2 * kp][0], st[2 * kp][1]);
            pa[kp][1] = M::pack(st[2 * kp][2], st[2 * kp][3]);
            pa[kp][2] = M::pack(st[2 * kp + 1][0], st[2 * kp + 1][1]);
            pa[kp][3] = M::pack(st[2 * kp + 1][2], st[2 * kp + 1][3]);
            da[kp][0] = M::pack(dpt[2 * kp][0], dpt[2 * kp][1]);
            da[kp][1] = M::pack(dpt[2 * kp][2], dpt[2 * kp][3]);
            da[kp][2] = M::pack(dpt[2 * kp + 1][0], dpt[2 * kp + 1][1]);
            da[kp][3] = M::pack(dpt[2 * kp + 1][2], dpt[2 * kp + 1][3]);
            if constexpr (kExt) {
                if (f.ext.logn_train > 0) {  // dS for dQ as it is; dSᵀ·λ_i for dK
                    if (fast) store_ds(kp);
#pragma unroll
                    for (int u = 0; u < 2; ++u)
                        pack_times_lambda<M>(dpt[2 * kp + u], lambda_sm + (2 * kp + u) * 8, lane, da[kp][2 * u],
                                             da[kp][2 * u + 1]);
                }
            }
        }

        // ---- dV_g += Pᵀ dO, dK_g += dSᵀ Q (k = query rows), Pᵀ and dSᵀ the A fragments ----
        if (fast && !(kExt && f.ext.logn_train > 0)) {
#pragma unroll
            for (int kp = 0; kp < T::kPSteps; ++kp) store_ds(kp);
        }
        wgmma_fence_operands(dv);
        wgmma_fence_operands(dk);
        wgmma_fence_operands(pa);
        wgmma_fence_operands(da);
        wgmma_fence();
#pragma unroll
        for (int kp = 0; kp < T::kPSteps; ++kp)
            Wgmma<Elem, kD>::rs_tb(dv, pa[kp], wg::n_major<kBlockM>(do_tile, kp), true);
#pragma unroll
        for (int kp = 0; kp < T::kPSteps; ++kp)
            Wgmma<Elem, kD>::rs_tb(dk, da[kp], wg::n_major<kBlockM>(q_tile, kp), true);
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_fence_operands(dv);  // dV, dK and the A fragments are this thread's again
        wgmma_fence_operands(dk);
        wgmma_fence_operands(pa);
        wgmma_fence_operands(da);

        // ---- fast path: this warpgroup's share of dQ_tile += dS K, into dq_accum ----
        if (fast) {
            fence_proxy_async();  // this thread's dS stores, for wgmma ...
            __syncthreads();      // ... of both warpgroups
            add_dq_wgmma<Elem, kD, T::kDqCols, T::kDqSteps, kBlockM, kBlockN>(
                p, b, h, i0 + (warp % 4) * 16, c0, lane, opaque(ds_tile), opaque(k_dq), ks0,
                kExt && f.ext.logn_train > 0 ? lambda_sm + (warp % 4) * 16 : nullptr);
        }
    }

    // ---- epilogue: dK (× scale) and dV through shared memory where K and V were (bwd_kernel.cuh) ----
    cp_async_wait_all();  // with no query tile the K, V copies were never waited for
    __syncthreads();      // every wgmma reading K or V has retired
    store_dk_dv<T>(p, b, hk, j0, warp, lane, dk, dv, smem);
#elif defined(__CUDA_ARCH__)
    __trap();  // no wgmma on this target: the host never launches it here
#endif
}

// ---- the 256-wide dK/dV kernel (d in (128, 256], plain calls) ---------------------------------------
// The dK/dV kernel above at width 256, where a warpgroup's dK and dV over all 256 columns (2 × 128 accumulator
// registers) do not fit: warpgroup c owns columns [128c, 128c + 128) of dK and dV for all 64 keys of the block
// (64 + 64 registers), as bwd_kernel.cuh's pair kernels split them. Sᵀ and dPᵀ are split by query instead, so
// that no product is computed twice and no fp32 tile is traded: warpgroup c computes Sᵀ = K Q_cᵀ and dPᵀ =
// V dO_cᵀ for the tile's queries [32c, 32c + 32) over the whole head dim (16 wgmma m64n32k16 each, both
// operands from shared memory), Pᵀ and dSᵀ elementwise, and stores them as 16-bit values into shared [key]
// [query] tiles; after a barrier each warpgroup adds Pᵀ dO and dSᵀ Q over all 64 queries to its columns (4
// wgmma m64n128k16 each, A from those tiles). Fast path: dS [query][key] as well, then warpgroup c adds its
// columns of dQ = dS K (4 m64n128k16) to dq_accum with fp32 atomics.
// Softmax's D = rowsum(dO∘O) needs the tile's O, which has no room beside two stages of Q and dO, nor in
// registers beside dK and dV (32 per thread: they spilled 100–388 bytes wherever held, native/cuda/NOTES.md).
// So O_t is copied into the region of Pᵀ, dSᵀ and dS, free from the tile's first barrier until they are
// written: issued right after that barrier (ahead of the next stage's copies), landing while Sᵀ and dPᵀ run;
// each thread then sums D over the chunks of O and dO it copied itself (a row's 32 chunks are one warp's
// lanes), and one more barrier publishes D and frees the region.
// One block of 2 warpgroups per (64 keys, kv head, batch); query tiles of 64 rows through two cp.async stages.
// Shared memory (226 KiB): K, V [64][256]; two stages of Q, dO [64][256]; Pᵀ, dSᵀ [64][64] (fast: dS), or
// softmax's O [64][256] before them; the LSE of each stage and the tile's D.
template <int kHeadDim_, class Elem_>
struct WgmmaBwdWideTraits {
    using Elem = Elem_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kWarpGroups = 2;
    static constexpr int kThreads = kWarpGroups * 128;
    static constexpr int kBlockN = 64;  // keys per block: every warpgroup's M
    static constexpr int kBlockM = 64;  // query rows per tile
    static constexpr int kQueryPart = kBlockM / kWarpGroups;  // queries of a warpgroup's Sᵀ, dPᵀ
    static constexpr int kCols = kHeadDim / kWarpGroups;      // columns of a warpgroup's dK, dV (and dQ)
    static constexpr int kChunks = kHeadDim / 8;               // 16-byte chunks per row
    static constexpr int kKeyBytes = kBlockN * kHeadDim * 2;  // K or V
    static constexpr int kRowBytes = kBlockM * kHeadDim * 2;  // Q or dO
    static constexpr int kStageBytes = 2 * kRowBytes;
    static constexpr int kPairBytes = kBlockN * kBlockM * 2;  // a 16-bit [64][64] tile
    // byte offsets from the 1024-byte-aligned base
    static constexpr int kStage0 = 2 * kKeyBytes;
    static constexpr int kStage1 = kStage0 + kStageBytes;
    static constexpr int kPt = kStage1 + kStageBytes;  // Pᵀ [key][query]
    static constexpr int kDst = kPt + kPairBytes;      // dSᵀ [key][query]
    static constexpr int kDs = kDst + kPairBytes;      // fast path: dS [query][key]
    static constexpr int kOut = kPt;                   // softmax: the tile's O, until Pᵀ, dSᵀ, dS are written
    static constexpr int kLse = kOut + (kRowBytes > 3 * kPairBytes ? kRowBytes : 3 * kPairBytes);  // stage 0's, 1's
    static constexpr int kDsum = kLse + 2 * kBlockM * 4;
    static constexpr int kSmemBytes = kDsum + kBlockM * 4 + 1024;  // 1 KiB of slack to align the base
    static constexpr int kKSteps = kHeadDim / 16;    // k16 steps of Sᵀ, dPᵀ
    static constexpr int kMTiles = kQueryPart / 8;   // n8 tiles of Sᵀ (query columns)
    static constexpr int kDTiles = kCols / 8;        // n8 tiles of dK, dV, dQ
    static constexpr int kPSteps = kBlockM / 16;     // k16 steps of Pᵀ dO, dSᵀ Q
    static constexpr int kDqSteps = kBlockN / 16;    // k16 steps of dS K
    static_assert(kHeadDim == 256 && kCols == 128, "the width the d <= 128 kernel cannot hold");
    static_assert(kQueryPart % 8 == 0 && (kQueryPart * 128) % 1024 == 0,
                  "a warpgroup's queries start on a swizzle atom: Q_c, dO_c are B operands of their own");
    static_assert(kKeyBytes % 1024 == 0 && kStage0 % 1024 == 0 && kRowBytes % 1024 == 0 && kPt % 1024 == 0 &&
                      kPairBytes % 1024 == 0,
                  "every wgmma operand tile at a 1024-byte boundary");
    static_assert((kBlockN * kChunks) % kThreads == 0 && (kBlockM * kChunks) % kThreads == 0,
                  "tile loads split evenly over the threads");
    static_assert(kChunks == 32 && kThreads % kChunks == 0 && kBlockM <= kThreads,
                  "D: a row's 16-byte chunks are one warp's lanes (load_rows' order); one thread per row loads the LSE");
    static_assert(2 * kKeyBytes <= kStage0, "the epilogue stages dK, dV where K, V were");
    static_assert(kSmemBytes <= 227 * 1024, "shared memory of one block on sm_90");
};

template <class T, class Score>
__global__ void __launch_bounds__(T::kThreads, 1) attention_bwd_wgmma_wide_kernel(const __grid_constant__ BwdParams p) {
#if defined(FSIG_HAVE_WGMMA) || defined(FSIG_CUDA_EMULATION)
    using Elem = typename T::Elem;
    using M = Mma<Elem>;
    constexpr int kD = T::kHeadDim, kBlockN = T::kBlockN, kBlockM = T::kBlockM;
    const uint32_t smem_base = (smem_addr(smem_raw) + 1023u) & ~1023u;
    unsigned char* const smem = smem_raw + (smem_base - smem_addr(smem_raw));
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, group = warp / 4;
    const FwdParams& f = p.f;

    const DkdvBlock<Elem, kBlockN, kBlockM> blk = dkdv_block<Elem, kBlockN, kBlockM>(p);
    const int hk = blk.hk, j0 = blk.j0, n_tiles = blk.n_tiles;
    const int64_t b = blk.b;
    const int jw = j0 + (warp % 4) * 16;  // this warp's 16 keys (rows 16·(warp % 4) of its warpgroup's fragments)
    auto load_query = [&](int t, uint32_t stage, uint32_t lse_at) {
        load_query_tile<Score, false>(p, blk, t, stage, T::kRowBytes, lse_at, tid,
                                      [&](uint32_t tile, const Elem* base, int64_t row_stride, int i0) {
                                          wg::load_tile<T, kBlockM>(tile, base, row_stride, i0, f.seq_q, f.head_dim, tid);
                                      });
    };
    // ---- prologue: K, V (resident), the first query tile ----
    const uint32_t k_tile = smem_base, v_tile = smem_base + T::kKeyBytes;
    wg::load_tile<T, kBlockN>(k_tile, blk.k, f.k_row, j0, f.seq_k, f.head_dim, tid);
    wg::load_tile<T, kBlockN>(v_tile, blk.v, f.v_row, j0, f.seq_k, f.head_dim, tid);
    int t = 0;
    if (t < n_tiles) load_query(t, smem_base + T::kStage0, smem_base + T::kLse);
    cp_async_commit();

    float dk[T::kDTiles][4], dv[T::kDTiles][4];
#pragma unroll
    for (int dt = 0; dt < T::kDTiles; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) dk[dt][e] = dv[dt][e] = 0.f;
    const ScoreConsts sc = score_consts(f);
    const bool fast = p.dq_accum != nullptr;
    const int q_col0 = group * T::kQueryPart;  // this warpgroup's queries in the tile (Sᵀ, dPᵀ)
    const int c0 = group * T::kCols;           // ... and its columns of dK, dV, dQ
    // the column block of c0 in a [rows][kD] tile of kRows rows: 64 columns a block
    auto cols_at = [&](uint32_t tile, int rows) { return tile + (c0 / 64) * rows * 128; };

    for (int s = 0; t < n_tiles; s ^= 1, ++t) {  // s: the stage of tile t
        const uint32_t stage = smem_base + (s ? T::kStage1 : T::kStage0);
        cp_async_wait_all();  // tile t (and in the first, K and V) has landed ...
        fence_proxy_async();  // ... is visible to wgmma ...
        __syncthreads();      // ... for every thread; the other stage, Pᵀ, dSᵀ and dS are no longer read
        const int h = blk.head(t), i0 = blk.row0(t);
        if constexpr (Score::kRowStats) {  // the tile's O, into the region of Pᵀ, dSᵀ, dS (its own group, first)
            // (its base made per tile from opaque values: hoisted out of the loop, it cost softmax 12 bytes of spills)
            const Elem* o = static_cast<const Elem*>(f.out) + int64_t(opaque(int(b))) * f.o_batch + opaque(h) * f.o_head;
            wg::load_tile<T, kBlockM>(smem_base + T::kOut, o, f.o_row, i0, f.seq_q, f.head_dim, tid);
            cp_async_commit();
        }
        if (t + 1 < n_tiles)
            load_query(t + 1, smem_base + (s ? T::kStage0 : T::kStage1), smem_base + T::kLse + (s ? 0 : 4 * kBlockM));
        cp_async_commit();
        const uint32_t q_tile = stage, do_tile = stage + T::kRowBytes;

        // ---- Sᵀ = K Q_cᵀ, dPᵀ = V dO_cᵀ (64 keys × this warpgroup's 32 queries, over all of d) ----
        float st[T::kMTiles][4], dpt[T::kMTiles][4];
#pragma unroll
        for (int nt = 0; nt < T::kMTiles; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) st[nt][e] = dpt[nt][e] = 0.f;
        wgmma_fence_operands(st);
        wgmma_fence_operands(dpt);
        wgmma_fence();
        // descriptors made per tile from opaque bases (not hoisted out of the loop into registers); Q_c and dO_c
        // start q_col0 rows into each 64-column block of their [64][kD] tiles
        const uint32_t k_at = opaque(k_tile), v_at = opaque(v_tile);
        const uint32_t q_at = opaque(q_tile + q_col0 * 128), do_at = opaque(do_tile + q_col0 * 128);
#pragma unroll
        for (int ks = 0; ks < T::kKSteps; ++ks)
            Wgmma<Elem, T::kQueryPart>::ss(st, wg::k_major<kBlockN>(k_at, ks), wg::k_major<kBlockM>(q_at, ks), ks > 0);
#pragma unroll
        for (int ks = 0; ks < T::kKSteps; ++ks)
            Wgmma<Elem, T::kQueryPart>::ss(dpt, wg::k_major<kBlockN>(v_at, ks), wg::k_major<kBlockM>(do_at, ks), ks > 0);
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_fence_operands(st);
        wgmma_fence_operands(dpt);

        float* const d_sm = reinterpret_cast<float*>(smem + T::kDsum);
        if constexpr (Score::kRowStats) {
            // D_i = Σ_c dO_ic O_ic over the chunks this thread copied of O and dO (load_rows: rows tid / 32 +
            // 8·it, column (tid % 32)·8), once its copies of O have landed; a row's chunks are this warp's lanes.
            // wait_group 1: the next stage's group, committed after O's, may still fly (load_query_tile commits
            // none of its own)
            cp_async_wait<1>();
            const int col = (tid % T::kChunks) * 8;
#pragma unroll 1
            for (int r = tid / T::kChunks; r < kBlockM; r += T::kThreads / T::kChunks) {
                const uint32_t off = wg::offset<kBlockM>(r, col);
                float acc = dot8<Elem>(*reinterpret_cast<const uint4*>(smem + T::kOut + off),
                                       *reinterpret_cast<const uint4*>(smem + (do_tile - smem_base) + off), 0.f);
#pragma unroll
                for (int m = 16; m >= 1; m /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, m);
                if (lane == 0) d_sm[r] = acc;
            }
            __syncthreads();  // D of every row; O is no longer read (Pᵀ, dSᵀ, dS go there next)
        }
        const float* lse_sm = reinterpret_cast<const float*>(smem + T::kLse) + s * kBlockM;

        // ---- Pᵀ and dSᵀ (element (key, query i0 + col)), the mask on boundary tiles only, stored as 16-bit
        // [key][query] tiles (fast path: also dS [query][key]) ----
        const bool interior = tile_interior(f, i0, kBlockM, jw, 16);
        int col_lo[2] = {0, 0}, col_hi[2] = {kBlockM - 1, kBlockM - 1};
        if (!interior) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int64_t j = jw + frag::acc_row(lane, 2 * r);
                int64_t lo, hi;
                query_range(f, j, j, &lo, &hi);
                col_lo[r] = int(lo) - i0, col_hi[r] = int(hi) - i0;
            }
        }
#pragma unroll
        for (int nt = 0; nt < T::kMTiles; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int col = q_col0 + nt * 8 + frag::acc_col(lane, e);
                float nl = 0.f, dd = 0.f;
                if constexpr (Score::kRowStats) nl = -lse_sm[col] * kLog2e, dd = d_sm[col];
                probs_grads<Score>(st[nt][e], dpt[nt][e], sc, f.scale_log2, nl, dd, st[nt][e], dpt[nt][e]);
                if (!interior && (col < col_lo[e / 2] || col > col_hi[e / 2])) st[nt][e] = dpt[nt][e] = 0.f;
            }
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int key = (warp % 4) * 16 + frag::acc_row(lane, 2 * r), col = q_col0 + nt * 8 + frag::acc_col(lane, 0);
                const uint32_t off = wg::offset<kBlockN>(key, col);
                const uint32_t pw = M::pack(st[nt][2 * r], st[nt][2 * r + 1]), dw = M::pack(dpt[nt][2 * r], dpt[nt][2 * r + 1]);
                *reinterpret_cast<uint32_t*>(smem + T::kPt + off) = pw;
                *reinterpret_cast<uint32_t*>(smem + T::kDst + off) = dw;
                if (fast) {
                    *reinterpret_cast<uint16_t*>(smem + T::kDs + wg::offset<kBlockM>(col, key)) = uint16_t(dw & 0xFFFFu);
                    *reinterpret_cast<uint16_t*>(smem + T::kDs + wg::offset<kBlockM>(col + 1, key)) = uint16_t(dw >> 16);
                }
            }
        }
        fence_proxy_async();  // this thread's Pᵀ, dSᵀ, dS stores, for wgmma ...
        __syncthreads();      // ... of both warpgroups

        // ---- dV_c += Pᵀ dO[:, c0..], dK_c += dSᵀ Q[:, c0..] over the tile's 64 queries ----
        wgmma_fence_operands(dv);
        wgmma_fence_operands(dk);
        wgmma_fence();
        const uint32_t pt_at = opaque(smem_base + T::kPt), dst_at = opaque(smem_base + T::kDst);
        const uint32_t do_c = opaque(cols_at(do_tile, kBlockM)), q_c = opaque(cols_at(q_tile, kBlockM));
#pragma unroll
        for (int kp = 0; kp < T::kPSteps; ++kp)
            Wgmma<Elem, T::kCols>::ss_tb(dv, wg::k_major<kBlockN>(pt_at, kp), wg::n_major<kBlockM>(do_c, kp), true);
#pragma unroll
        for (int kp = 0; kp < T::kPSteps; ++kp)
            Wgmma<Elem, T::kCols>::ss_tb(dk, wg::k_major<kBlockN>(dst_at, kp), wg::n_major<kBlockM>(q_c, kp), true);
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_fence_operands(dv);
        wgmma_fence_operands(dk);

        // ---- fast path: this warpgroup's columns of dQ_tile += dS K, into dq_accum ----
        if (fast) {
            add_dq_wgmma<Elem, kD, T::kCols, T::kDqSteps, kBlockM, kBlockN>(p, b, h, i0 + (warp % 4) * 16, c0, lane,
                                                                            opaque(smem_base + T::kDs),
                                                                            opaque(cols_at(k_tile, kBlockN)), 0);
        }
    }

    // ---- epilogue: dK (× scale) and dV of keys 16·(warp % 4).., columns c0.., where K and V were ----
    cp_async_wait_all();  // with no query tile the K, V copies were never waited for
    __syncthreads();      // every wgmma reading K or V has retired
    store_dk_dv<T, T::kDTiles, kBlockN>(p, b, hk, j0, warp % 4, lane, dk, dv, smem, c0);
#elif defined(__CUDA_ARCH__)
    __trap();  // no wgmma on this target: the host never launches it here
#endif
}

// ---- the deterministic path's dQ kernel on wgmma ----------------------------------------------------
// bwd_kernel.cuh's dQ kernel with its three products on warpgroup MMA: one block of 2 warpgroups per (query
// tile of 128 rows, query head, batch), warpgroup g owning rows 64g..64g+63 (warp w rows 16w..16w+15, as
// there) and their dQ (64 × d, fp32) in registers; Q and dO stay in shared memory, key tiles of 64 (K, V)
// stream through two cp.async stages. Per tile: S = Q_g Kᵀ and dP = dO_g Vᵀ (d / 16 wgmma m64n64k16 each,
// both operands K-major from shared memory), dS in registers (the mask on boundary tiles, per warp), then
// dQ_g += dS K (4 wgmma m64n<d>k16, dS from registers, K read N-major as the forward reads V). A fixed
// loop order and no atomics: the same bits every run. Registers at d = 128: dQ 64, S and dP 32 each.
// Shared memory: Q, dO [128][d], two stages of K, V [64][d] (d = 128: 129 KiB); extended: two key β rows, the
// key tiles' bits and their origin.
// Width 256 (plain calls): key tiles of 32 (S, dP by m64n32k16, dQ by m64n256k16): dQ's 128 registers leave
// room for 16 + 16 of S and dP, and Q, dO (128 KiB) room for two stages of 32-key K, V tiles (193 KiB).
// Extended kernels (kExt): the positions (λ, ALiBi) in registers and β as one row per key tile, staged one
// tile ahead, as the Hopper forward takes them — the host sends only calls whose β is the same on every
// row of a 128 × 64 tile (key padding, whose key tiles masked whole are skipped as the forward skips them; a
// layout holding whole tiles, applied by skipping the key tiles it leaves empty) and no dBias (bwd_kernel.cuh's dQ
// kernel owns it).
template <int kHeadDim_, class Elem_>
struct WgmmaDqTraits {
    using Elem = Elem_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kWarpGroups = 2;
    static constexpr int kThreads = kWarpGroups * 128;
    static constexpr int kBlockM = 64 * kWarpGroups;  // query rows per block
    static constexpr int kBlockN = kHeadDim > 128 ? 32 : 64;  // keys per tile
    static constexpr int kChunks = kHeadDim / 8;       // 16-byte chunks per row
    static constexpr int kRowBytes = kBlockM * kHeadDim * 2;  // Q or dO
    static constexpr int kKeyBytes = kBlockN * kHeadDim * 2;  // K or V of one tile
    // byte offsets from the 1024-byte-aligned base: Q, dO, then two stages of K and V, then (extended) two
    // rows of the keys' β
    static constexpr int kDout = kRowBytes;
    static constexpr int kStage0 = 2 * kRowBytes;
    static constexpr int kStageBytes = 2 * kKeyBytes;
    static constexpr int kKeyBeta = kStage0 + 2 * kStageBytes;
    static constexpr int kKeyBetaSlots = kThreads / kWarpGroups;  // per β buffer: a thread of the first warpgroup each
    static constexpr int kKeyBetaBytes = 2 * kKeyBetaSlots * 4;
    static constexpr int kSmemBytes = kKeyBeta + 1024;  // 1 KiB of slack to align the base (extended: + kExtBytes)
    // key padding: one bit per key tile of the block's range and its first tile, after the β rows (from the
    // unaligned base: its offset is then a constant)
    static constexpr int kKeyBits = kSmemBytes + kKeyBetaBytes;
    static constexpr int kExtBytes = kKeyBetaBytes + (kKeyTileWords + 1) * 4;
    static constexpr int kNTiles = kBlockN / 8;    // n8 tiles of S, dP per warp
    static constexpr int kKSteps = kHeadDim / 16;  // k16 steps of S, dP
    static constexpr int kDTiles = kHeadDim / 8;   // n8 tiles of dQ
    static constexpr int kPSteps = kBlockN / 16;   // k16 steps of dS K
    static_assert(kHeadDim % 64 == 0, "whole 128-byte swizzle rows");
    static_assert(kRowBytes % 1024 == 0 && kKeyBytes % 1024 == 0, "every wgmma operand tile at a 1024-byte boundary");
    static_assert((kBlockN * kChunks) % kThreads == 0 && (kBlockM * kChunks) % kThreads == 0,
                  "tile loads split evenly over the threads");
    static_assert(kBlockN <= kKeyBetaSlots, "a thread per key stages its β");
    static_assert(kBlockM * kHeadDim * 2 <= kDout, "store_acc_rows stages the dQ tile where Q was");
    static_assert(kSmemBytes + kExtBytes <= 227 * 1024, "shared memory of one block on sm_90");
};

template <class T, class Score, bool kExt>
__global__ void __launch_bounds__(T::kThreads, 1) attention_bwd_dq_wgmma_kernel(const __grid_constant__ BwdParams p) {
#if defined(FSIG_HAVE_WGMMA) || defined(FSIG_CUDA_EMULATION)
    using Elem = typename T::Elem;
    using M = Mma<Elem>;
    constexpr int kD = T::kHeadDim, kBlockM = T::kBlockM, kBlockN = T::kBlockN;
    const uint32_t smem_base = (smem_addr(smem_raw) + 1023u) & ~1023u;
    unsigned char* const smem = smem_raw + (smem_base - smem_addr(smem_raw));
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, group = warp / 4;
    const FwdParams& f = p.f;

    const DqBlock<Elem> blk = dq_block<Elem>(p);
    const int m_block = blk.m_block, h = blk.h;
    const int64_t b = blk.b;
    const Elem *q = blk.q, *dout = blk.dout, *k = blk.k, *v = blk.v;

    // int32 rows and keys, as in the forward (Nq, Nk <= kMaxCudaSeq); the key tiles any row may see, those a
    // block layout or the key padding leaves empty skipped (extended; a warp collective: every lane calls it)
    const int i0 = m_block * kBlockM;
    const int i_end = int(min(int64_t(i0) + kBlockM, f.seq_q));
    const int64_t key_lo = first_key(f, i0), key_hi = last_key(f, i_end - 1);
    const int n_last = int(key_hi >= key_lo ? key_hi / kBlockN : key_lo / kBlockN - 1);
    const int tile_lo = int(key_lo / kBlockN);
    // extended: with key padding one bit per key tile of the range from tile_lo on, whether its row of β allows a
    // key, and their origin (stage_key_tile_bits: a tile the padding masks whole is never loaded or computed)
    auto key_tile_bits = [&] { return reinterpret_cast<uint32_t*>(smem_raw + T::kKeyBits); };
    auto next_live = [&](int nb) {
        // (plain instances: no bits, never read past their shared memory)
        return next_live_key_tile<kExt, kBlockN>(f, opaque(h), opaque(i0), opaque(i_end - 1), nb, n_last, lane,
                                                 kExt ? key_tile_bits() : nullptr,
                                                 kExt ? int(key_tile_bits()[kKeyTileWords]) : 0);
    };
    const int w0 = i0 + warp * 16;  // this warp's rows (rows past Nq compute on zero Q, dO and are not stored)
    const int row_i[2] = {w0 + frag::acc_row(lane, 0), w0 + frag::acc_row(lane, 2)};

    // extended, key padding: β of key tile nb (keys j0 + c, −inf past Nk) into slots [0, kBlockN) of buffer
    // buf, one tile ahead; the block's row i0 stands for every row (the host's ext_key_beta). Staged by the
    // whole first warpgroup (its second half computing the same keys again into slots kBlockN..), so that no
    // warp diverges between wgmma's commit and wait. Not required (the branch reconverges before the wait:
    // the forward stages with half a warpgroup at d = 256, and ptxas serialises neither), but free here.
    float* const key_beta_sm = reinterpret_cast<float*>(smem + T::kKeyBeta);
    auto stage_key_beta = [&](int nb, int buf) {
        if (kExt && f.ext.key_beta && tid < T::kKeyBetaSlots) {
            const int64_t j0 = int64_t(nb) * kBlockN;
            const int c = tid % kBlockN;
            const ExtBetaRow row = ext_beta_row(f.ext, b, opaque(h), opaque(i0), 0, f.seq_q, f.seq_k);
            key_beta_sm[buf * T::kKeyBetaSlots + tid] = j0 + c < f.seq_k ? ext_beta(f.ext, row, j0, c) : -INFINITY;
        }
    };

    // ---- prologue: Q, dO (resident), the first K/V tile into stage 0 (and its β into buffer 0) ----
    const uint32_t q_tile = smem_base, do_tile = smem_base + T::kDout;
    wg::load_tile<T, kBlockM>(q_tile, q, f.q_row, i0, f.seq_q, f.head_dim, tid);
    wg::load_tile<T, kBlockM>(do_tile, dout, p.do_row, i0, f.seq_q, f.head_dim, tid);
    if constexpr (kExt)  // (while Q and dO load)
        stage_key_tile_bits<T::kThreads / 32, kBlockN>(f, ext_key_padding(f.ext), b, h, tile_lo,
                                                       n_last, warp, lane, key_tile_bits());
    const int n_first = next_live(tile_lo);
    if (n_first <= n_last) {
        wg::load_tile<T, kBlockN>(smem_base + T::kStage0, k, f.k_row, int64_t(n_first) * kBlockN, f.seq_k, f.head_dim, tid);
        wg::load_tile<T, kBlockN>(smem_base + T::kStage0 + T::kKeyBytes, v, f.v_row, int64_t(n_first) * kBlockN,
                                  f.seq_k, f.head_dim, tid);
        stage_key_beta(n_first, 0);
    }
    cp_async_commit();

    // softmax: −LSE·log2e and D of this thread's two rows, from global memory while the copies fly
    float nl[2] = {0.f, 0.f}, dd[2] = {0.f, 0.f};
    if constexpr (Score::kRowStats) dq_row_stats<kD>(p, b, h, dout, row_i, lane, nl, dd);

    float dq[T::kDTiles][4];
#pragma unroll
    for (int dt = 0; dt < T::kDTiles; ++dt) dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.f;
    const ScoreConsts sc = score_consts(f), sc_x = score_consts(f, 1.f);  // sc_x: extended, of x
    // this warpgroup's 64 rows of Q and dO (8 row groups of the 128-row tiles)
    const uint32_t q_group = q_tile + group * 64 * 128, do_group = do_tile + group * 64 * 128;

    // Both warpgroups compute every tile of the block's key range (a wgmma in a branch that differs between
    // them makes ptxas serialise them all); the mask gives dS = 0 where a warp's rows see nothing.
    for (int nb = n_first, nb_next, s = 0; nb <= n_last; nb = nb_next, s ^= 1) {
        const uint32_t k_at = smem_base + T::kStage0 + s * T::kStageBytes, v_at = k_at + T::kKeyBytes;
        cp_async_wait_all();  // tile nb has landed ...
        fence_proxy_async();  // ... is visible to wgmma ...
        __syncthreads();      // ... for every thread (and its β); the other stage's last reads (the previous
                              // tile's) have retired, and the other β buffer's
        nb_next = next_live(nb + 1);
        if (nb_next <= n_last) {
            const uint32_t next = smem_base + T::kStage0 + (s ^ 1) * T::kStageBytes;
            wg::load_tile<T, kBlockN>(next, k, f.k_row, int64_t(nb_next) * kBlockN, f.seq_k, f.head_dim, tid);
            wg::load_tile<T, kBlockN>(next + T::kKeyBytes, v, f.v_row, int64_t(nb_next) * kBlockN, f.seq_k, f.head_dim, tid);
        }
        cp_async_commit();
        const int j0 = nb * kBlockN;

        // ---- S = Q_g Kᵀ, dP = dO_g Vᵀ (64 rows × 64 keys per warpgroup) ----
        // zeroed per tile (the first wgmma does not accumulate, but reads them): dead once dS is packed
        float st[T::kNTiles][4], dp[T::kNTiles][4];
#pragma unroll
        for (int nt = 0; nt < T::kNTiles; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) st[nt][e] = dp[nt][e] = 0.f;
        wgmma_fence_operands(st);
        wgmma_fence_operands(dp);
        wgmma_fence();
        const uint32_t q_at = opaque(q_group), do_at = opaque(do_group);  // descriptors made per tile
#pragma unroll
        for (int ks = 0; ks < T::kKSteps; ++ks)
            Wgmma<Elem, kBlockN>::ss(st, wg::k_major<kBlockM>(q_at, ks), wg::k_major<kBlockN>(k_at, ks), ks > 0);
#pragma unroll
        for (int ks = 0; ks < T::kKSteps; ++ks)
            Wgmma<Elem, kBlockN>::ss(dp, wg::k_major<kBlockM>(do_at, ks), wg::k_major<kBlockN>(v_at, ks), ks > 0);
        wgmma_commit();
        // the next tile's β while the tensor cores work (read after the next tile's barrier)
        if (nb_next <= n_last) stage_key_beta(nb_next, s ^ 1);
        wgmma_wait<0>();
        wgmma_fence_operands(st);
        wgmma_fence_operands(dp);

        // ---- dS (element (query row_i[e / 2], key j0 + col)), the mask on boundary tiles only; each k16
        // step's packed into the A fragments of dS K at once ----
        if constexpr (kExt) {  // st = x = λ_i·scale·q·k − ALiBi + β_j, −inf where disallowed; dS = ∂L/∂x
            const int rows[2] = {opaque(row_i[0]), opaque(row_i[1])};
            const float* beta = f.ext.key_beta ? key_beta_sm + s * T::kKeyBetaSlots : nullptr;
            extend_tile<T::kNTiles, 0>(f, b, opaque(h), rows, j0, lane, beta, st);
        }
        const bool interior = tile_interior(f, w0, 16, j0, kBlockN);
        int col_lo[2] = {0, 0}, col_hi[2] = {kBlockN - 1, kBlockN - 1};
        if (!interior) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int64_t lo = first_key(f, row_i[r]) - j0, hi = last_key(f, row_i[r]) - j0;
                col_lo[r] = int(max(min(lo, int64_t(kBlockN)), int64_t(-1)));
                col_hi[r] = int(max(min(hi, int64_t(kBlockN)), int64_t(-1)));
            }
        }
        uint32_t da[T::kPSteps][4];
#pragma unroll
        for (int kp = 0; kp < T::kPSteps; ++kp) {
#pragma unroll
            for (int nt = 2 * kp; nt < 2 * kp + 2; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    float pr;
                    if constexpr (kExt) {
                        probs_grads<Score>(st[nt][e], dp[nt][e], sc_x, kLog2e, nl[e / 2], dd[e / 2], pr, dp[nt][e]);
                        if (st[nt][e] == -INFINITY) dp[nt][e] = 0.f;  // (λ_i in the epilogue: dq_row_scale)
                    } else {
                        probs_grads<Score>(st[nt][e], dp[nt][e], sc, f.scale_log2, nl[e / 2], dd[e / 2], pr, dp[nt][e]);
                    }
                    const int col = nt * 8 + frag::acc_col(lane, e);
                    if (!interior && (col < col_lo[e / 2] || col > col_hi[e / 2])) dp[nt][e] = 0.f;
                }
            // the accumulator layout of two adjacent n8 tiles is the A layout of a k16 step
            da[kp][0] = M::pack(dp[2 * kp][0], dp[2 * kp][1]);
            da[kp][1] = M::pack(dp[2 * kp][2], dp[2 * kp][3]);
            da[kp][2] = M::pack(dp[2 * kp + 1][0], dp[2 * kp + 1][1]);
            da[kp][3] = M::pack(dp[2 * kp + 1][2], dp[2 * kp + 1][3]);
        }

        // ---- dQ_g += dS K (k = keys), dS the A fragments, K N-major ----
        wgmma_fence_operands(dq);
        wgmma_fence_operands(da);
        wgmma_fence();
#pragma unroll
        for (int kp = 0; kp < T::kPSteps; ++kp)
            Wgmma<Elem, kD>::rs_tb(dq, da[kp], wg::n_major<kBlockN>(k_at, kp), true);
        wgmma_commit();
        wgmma_wait<0>();  // before the next tile's barrier, after which its stage is reloaded
        wgmma_fence_operands(dq);
        wgmma_fence_operands(da);
    }

    // ---- epilogue: dQ × scale staged over the Q tile (row-major, 16 rows per warp), 16-byte stores ----
    cp_async_wait_all();  // (a block with no key tile still has Q's and dO's copies in flight)
    __syncthreads();      // every copy has landed and no wgmma still reads Q (at d = 128 a warp's staged rows
                          // overlap the other warpgroup's Q rows)
    const float mul[2] = {dq_row_scale<kExt>(f, row_i[0]), dq_row_scale<kExt>(f, row_i[1])};
    store_acc_rows<kD>(static_cast<Elem*>(p.dq) + b * p.dq_batch + h * p.dq_head, p.dq_row, f.seq_q, f.head_dim, i0,
                       warp, lane, dq, mul, reinterpret_cast<Elem*>(smem));
#elif defined(__CUDA_ARCH__)
    __trap();  // no wgmma on this target: the host never launches it here
#endif
}

template <class T, class Score, bool kExt>
cudaError_t launch_bwd_wgmma_score(const BwdParams& p, int64_t blocks, cudaStream_t stream) {
    return launch_sm90a(attention_bwd_wgmma_kernel<T, Score, kExt>, T::kSmemBytes, blocks, T::kThreads, stream, p);
}

// d in (128, 256], plain calls: the 256-wide kernel, 64 keys per block
template <class Elem>
cudaError_t launch_bwd_wgmma_wide(const BwdParams& params, cudaStream_t stream) {
    using T = WgmmaBwdWideTraits<256, Elem>;
    static_assert(T::kBlockN == kBwdPairKvBlockN, "the host checks the grid with the pair kernels' blocks");
    if (params.f.ext.on) return cudaErrorInvalidValue;  // (never asked)
    BwdParams p = params;
    p.n_blocks = int32_t((p.f.seq_k + T::kBlockN - 1) / T::kBlockN);
    const int64_t blocks = int64_t(p.n_blocks) * p.heads_k * p.f.batch;  // < 2^31, checked on the host
    return with_score_policy(p.f.score, [&](auto score) {
        return launch_sm90a(attention_bwd_wgmma_wide_kernel<T, decltype(score)>, T::kSmemBytes, blocks, T::kThreads,
                            stream, p);
    });
}

// kExt: the extended kernels (p.f.ext.on, no β per element: the host's ext_key_beta or a layout constant
// over every tile), generated in their own unit bwd_wgmma_ext.cu; width 256: plain only
template <int kHeadDim, class Elem, bool kExt>
cudaError_t launch_bwd_wgmma(const BwdParams& params, cudaStream_t stream) {
    if constexpr (kHeadDim == 256) {
        static_assert(!kExt, "the 256-wide Hopper backward serves plain calls");
        return launch_bwd_wgmma_wide<Elem>(params, stream);
    } else {
        using T = WgmmaBwdTraits<kHeadDim, Elem>;
        static_assert(T::kBlockN == kBwdKvBlockN && T::kBlockN >= kBwdPairKvBlockN,
                      "store_dk_dv and the host's layout rule take kBwdKvBlockN keys; the grid check the finer pair blocks");
        static_assert(T::kBlockM == kWgmmaBwdBlockM, "the host judges a layout's tiles by kWgmmaBwdBlockM");
        if (params.f.ext.elementwise || bool(params.f.ext.on) != kExt) return cudaErrorInvalidValue;  // (never asked)
        BwdParams p = params;
        p.n_blocks = int32_t((p.f.seq_k + T::kBlockN - 1) / T::kBlockN);
        const int64_t blocks = int64_t(p.n_blocks) * p.heads_k * p.f.batch;  // < 2^31, checked on the host
        return with_score_policy(p.f.score, [&](auto score) {
            return launch_bwd_wgmma_score<T, decltype(score), kExt>(p, blocks, stream);
        });
    }
}

// The deterministic path's dQ kernel (kExt: p.f.ext.on, β one row per 128 × 64 tile or none, no dBias: the
// others keep bwd_kernel.cuh's), generated in the units bwd_dq_wgmma[_ext].cu
template <int kHeadDim, class Elem, bool kExt>
cudaError_t launch_bwd_dq_wgmma(const BwdParams& params, cudaStream_t stream) {
    using T = WgmmaDqTraits<kHeadDim, Elem>;
    static_assert(T::kBlockM == kBwdQBlockM && T::kBlockM >= kBwdPairQBlockM,
                  "the host's layout rule takes kBwdQBlockM rows; the grid check the finer pair blocks");
    static_assert(T::kBlockN == kWgmmaDqBlockN || (kHeadDim > 128 && !kExt),
                  "the host judges a layout's tiles by kWgmmaDqBlockN (width 256: plain calls only)");
    const ExtParams& e = params.f.ext;
    if (bool(e.on) != kExt || e.elementwise || e.dbias != nullptr || params.dq_accum != nullptr)
        return cudaErrorInvalidValue;  // (never asked)
    BwdParams p = params;
    p.f.m_blocks = int32_t((p.f.seq_q + T::kBlockM - 1) / T::kBlockM);
    const int64_t blocks = int64_t(p.f.m_blocks) * p.f.heads_q * p.f.batch;  // < 2^31, checked on the host
    return with_score_policy(p.f.score, [&](auto score) {
        return launch_sm90a(attention_bwd_dq_wgmma_kernel<T, decltype(score), kExt>,
                            T::kSmemBytes + (kExt ? T::kExtBytes : 0), blocks, T::kThreads, stream, p);
    });
}

}  // namespace fsig::cuda
