// The Hopper forward kernel (sm_90a): the FlashAttention-2 design of fwd_kernel.cuh with both products on
// warpgroup MMA (wgmma) instead of mma.sync. Included by the generated units fwd_wgmma[_ext].cu,
// each instantiating the 7 score policies, chosen on the host for an sm_90 device when the library was
// built for sm_90a (cuda_runtime.cu). Same contract, same math and the same score, mask, softmax and
// epilogue code as fwd_kernel.cuh.
//
// Extended kernels (kExt): the positions (log-n λ_i, ALiBi) in registers as fwd_kernel.cuh applies them,
// and key tiles the block layout leaves empty for all 128 rows never visited. No β per row (staging it per
// warp takes 64 KiB of shared memory, which d = 256 has not left). So the host sends here only calls whose
// β is the same for every row of a 128-row tile (host_params.h): none at all when a block layout holding
// every 128 x 128 tile is the only element-wise extension (ext_layout_tile_uniform: the tile skipping
// applies it exactly; d = 256's 128 x 64 tiles nest in those); else, with no strided pattern, a bias and a
// mask broadcast over the query rows (key padding) and a layout whose block rows hold whole tiles
// (ext_key_beta, p.ext.key_beta), β of a key tile is one row of kBlockN floats, staged by the first
// warpgroup for the next tile while this one computes (two buffers after the K and V ones), and with a bias or
// mask the key tiles it masks whole are never visited either (one bit per tile, scanned once per block:
// stage_key_tile_bits). Other calls take the mma.sync kernels.
//
// Algorithm. One block of 2 warpgroups (256 threads) per (query tile of 128 rows, head, batch); warpgroup
// g owns rows 64g..64g+63 and warp w rows 16w..16w+15, as in fwd_kernel.cuh. Q stays in shared memory for
// the whole block; key tiles of kBlockN rows (128; 64 at d = 256) stream through two K and two V buffers
// (cp.async: K one tile ahead of its S, V one tile ahead of its P V). Per tile and warpgroup: S (64 x
// kBlockN) = Q Kᵀ by wgmma with both operands read from shared memory (kHeadDim / 16 instructions
// m64n<kBlockN>k16), then the previous tile's O += P V (kBlockN / 16 instructions m64n<d>k16, P from registers,
// V read N-major); waiting for S alone lets the score run while that P V runs on the tensor cores (the
// intra-warpgroup overlap of FlashAttention-3); then O is rescaled (softmax) and this tile's P packed.
// Both warpgroups compute every tile of the block's key range (P = 0 where the mask says so): a wgmma in
// a branch makes ptxas serialise all of them. Only boundary tiles evaluate the per-element mask (per warp).
//
// Shared memory: every tile [rows][d] is stored as d / 64 column blocks [rows][64] of 128-byte rows, each
// row's eight 16-byte chunks XOR-swizzled by row % 8 — wgmma's 128-byte swizzle layout, which the
// hardware applies to address bits 4-6 from bits 7-9, so every tile starts 1024-byte aligned. In those
// units one 8-row group is 1024 bytes (the stride-byte offset) and a k16 step is 32 bytes inside a row
// (K-major Q and K); for V (N-major B: d contiguous) a k16 step is 16 rows, 2048 bytes, and the next 64
// columns of d are one column block further (the leading-byte offset). Extended: after the 1 KiB of slack that
// aligns them, two rows of key β (kBlockN floats each), the key tiles' bits and their origin (260 bytes).
#pragma once

#include "fwd_kernel.cuh"

namespace fsig::cuda {

template <int kHeadDim_, class Elem_>
struct WgmmaFwdTraits {
    using Elem = Elem_;
    static constexpr int kHeadDim = kHeadDim_;
    static constexpr int kWarpGroups = 2;
    static constexpr int kThreads = kWarpGroups * 128;
    static constexpr int kBlockM = 64 * kWarpGroups;
    // key tiles of 128 rows; of 64 at d = 256, where Q and four 128-row buffers would need 320 KiB (64-row
    // ones 192) and the accumulators of O (128 registers per thread) leave room for a 64-key S only
    static constexpr int kBlockN = kHeadDim <= 128 ? 128 : 64;
    static constexpr int kChunks = kHeadDim / 8;          // 16-byte chunks per row
    static constexpr int kQBytes = kBlockM * kHeadDim * 2;
    static constexpr int kTileBytes = kBlockN * kHeadDim * 2;  // one K or V tile
    // Q, then two K and two V buffers (the pipeline in the header comment); 1 KiB of slack to align the
    // base to 1024 bytes
    static constexpr int kSmemBytes = kQBytes + 4 * kTileBytes + 1024;
    // extended, from the unaligned base after those: two rows of key β, then the key tiles' bits and their origin
    // (stage_key_tile_bits)
    static constexpr int kKeyBetaBytes = 2 * kBlockN * 4;
    static constexpr int kKeyBits = kSmemBytes + kKeyBetaBytes;
    static constexpr int kExtBytes = kKeyBetaBytes + (kKeyTileWords + 1) * 4;
    static constexpr int kNTiles = kBlockN / 8;    // n8 tiles of S per warp
    static constexpr int kKSteps = kHeadDim / 16;  // k16 steps of Q Kᵀ
    static constexpr int kDTiles = kHeadDim / 8;   // n8 tiles of O per warp
    static constexpr int kPSteps = kBlockN / 16;   // k16 steps of P V
    static_assert(kHeadDim % 64 == 0, "whole 128-byte swizzle rows");
    static_assert(kBlockM * kHeadDim * 2 <= kSmemBytes - 1024, "store_acc_rows stages the O tile at the aligned base");
    static_assert(kQBytes % 1024 == 0 && kTileBytes % 1024 == 0, "every wgmma operand tile at a 1024-byte boundary");
    static_assert((kBlockN * kChunks) % kThreads == 0 && (kBlockM * kChunks) % kThreads == 0,
                  "tile loads split evenly over the threads");
};

namespace wg {

// Byte offset of element (row, col) in a swizzled tile of kRows rows (see the header comment).
template <int kRows>
__device__ __forceinline__ uint32_t offset(int row, int col) {
    return uint32_t((col / 64) * kRows * 128 + row * 128 + ((((col % 64) / 8) ^ (row % 8)) * 16) + (col % 8) * 2);
}

// Shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format"): start address, leading- and
// stride-byte offsets in 16-byte units, layout type 1 = 128-byte swizzle (bits 62-63), base offset 0.
__device__ __forceinline__ uint64_t descriptor(uint32_t addr, uint32_t leading_bytes, uint32_t stride_bytes) {
    return uint64_t((addr >> 4) & 0x3FFF) | uint64_t((leading_bytes >> 4) & 0x3FFF) << 16 |
           uint64_t((stride_bytes >> 4) & 0x3FFF) << 32 | uint64_t(1) << 62;
}
// K-major operand (Q as A, K as B) of k16 step ks from a tile at base: the step's column block, then 32
// bytes per step inside the 128-byte rows (the leading offset is unused by K-major swizzled layouts)
template <int kRows>
__device__ __forceinline__ uint64_t k_major(uint32_t base, int ks) {
    return descriptor(base + (ks / 4) * kRows * 128 + (ks % 4) * 32, 16, 1024);
}
// N-major B (V: keys x d, d contiguous) of k16 step kp: 16 key rows per step; the next 64 columns of d
// one column block (kRows rows) further
template <int kRows>
__device__ __forceinline__ uint64_t n_major(uint32_t base, int kp) {
    static_assert(kRows * 128 < (1 << 18), "the leading-byte offset fits the descriptor's 14-bit field");
    return descriptor(base + kp * 16 * 128, kRows * 128, 1024);
}

// Rows [row0, row0 + kRows) of a [rows][d] global matrix into a tile of that layout (load_rows, rolled)
template <class T, int kRows>
__device__ __forceinline__ void load_tile(uint32_t tile, const typename T::Elem* base, int64_t row_stride,
                                          int64_t row0, int64_t n_rows, int cols, int tid) {
    load_rows<T, kRows, true>(tile, base, row_stride, row0, n_rows, cols, tid,
                              [](int r, int col) { return offset<kRows>(r, col); });
}

}  // namespace wg

template <class T, class Score, bool kExt>
__global__ void __launch_bounds__(T::kThreads, 1) attention_fwd_wgmma_kernel(const __grid_constant__ FwdParams p) {
#if defined(FSIG_HAVE_WGMMA) || defined(FSIG_CUDA_EMULATION)
    using Elem = typename T::Elem;
    constexpr int kD = T::kHeadDim, kBlockM = T::kBlockM, kBlockN = T::kBlockN;
    const uint32_t smem_base = (smem_addr(smem_raw) + 1023u) & ~1023u;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, group = warp / 4;

    const FwdBlock<Elem> blk = fwd_block<Elem>(p);
    const int m_block = blk.m_block, h = blk.h;
    const int64_t b = blk.b;
    const Elem *q = blk.q, *k = blk.k, *v = blk.v;
    Elem* out = blk.out;

    // int32 rows and keys (Nq, Nk <= kMaxCudaSeq, fwd_params.h)
    const int i0 = m_block * kBlockM;
    const int i_end = int(min(int64_t(i0) + kBlockM, p.seq_q));  // rows [i0, i_end) are real
    const int64_t key_lo = first_key(p, i0), key_hi = last_key(p, i_end - 1);
    const int n_last = int(key_hi >= key_lo ? key_hi / kBlockN : key_lo / kBlockN - 1);
    const int tile_lo = int(key_lo / kBlockN);
    // kExt: after the two key β buffers (key_beta_row), with key padding one bit per key tile of the block's range
    // from tile_lo on, whether its row of β allows a key, and their origin (stage_key_tile_bits: a tile the padding
    // masks whole is never loaded or computed)
    auto key_tile_bits = [&] { return reinterpret_cast<uint32_t*>(smem_raw + T::kKeyBits); };
    // the next tile from nb on that any row of the block may see (every thread gets the same answer);
    // (its loop invariants made again per tile: held across the loop they cost the d = 128 kernels spills)
    auto next_live = [&](int nb) {
        // (plain instances: no bits, never read past their shared memory)
        return next_live_key_tile<kExt, kBlockN>(p, opaque(h), opaque(i0), opaque(i_end - 1), nb, n_last, lane,
                                                 kExt ? key_tile_bits() : nullptr,
                                                 kExt ? int(key_tile_bits()[kKeyTileWords]) : 0);
    };
    // this warp's rows (rows past Nq compute on zero Q and are never stored)
    const int w0 = i0 + warp * 16;
    const int row_i[2] = {w0 + frag::acc_row(lane, 0), w0 + frag::acc_row(lane, 2)};

    // ---- prologue: Q, and the first K tile (waited for at the top of the first tile) ----
    // two K and two V buffers: during tile t, K_t (its S) and V_{t−1} (its P V, running during tile t's
    // score) are read while K_{t+1} and V_t load into the others — the loads of the top of tile t, each
    // with a whole tile's time to land (V_t is first read during tile t+1)
    // (buffers by the parity of the tile's visit, not four pointers held in registers: the extended d = 256
    // kernels have none to spare)
    const uint32_t q_tile = smem_base, k_buffers = smem_base + T::kQBytes;
    int parity = 0;
    auto k_cur = [&] { return k_buffers + uint32_t(parity) * T::kTileBytes; };        // K_t
    auto k_free = [&] { return k_buffers + uint32_t(parity ^ 1) * T::kTileBytes; };   // K_{t−1}'s, then K_{t+1}'s
    auto v_prev = [&] { return k_buffers + uint32_t(2 + (parity ^ 1)) * T::kTileBytes; };  // V_{t−1}
    auto v_free = [&] { return k_buffers + uint32_t(2 + parity) * T::kTileBytes; };   // V_{t−2}'s, then V_t's
    wg::load_tile<T, kBlockM>(q_tile, q, p.q_row, i0, p.seq_q, p.head_dim, tid);
    if constexpr (kExt)  // (while Q loads)
        stage_key_tile_bits<T::kThreads / 32, kBlockN>(p, ext_key_padding(p.ext), b, h, tile_lo,
                                                       n_last, warp, lane, key_tile_bits());
    const int n_first = next_live(tile_lo);
    if (n_first <= n_last)
        wg::load_tile<T, kBlockN>(k_cur(), k, p.k_row, int64_t(n_first) * kBlockN, p.seq_k, p.head_dim, tid);
    cp_async_commit();

    float o[T::kDTiles][4];
#pragma unroll
    for (int dt = 0; dt < T::kDTiles; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY};  // log2 domain (softmax)
    float row_sum[2] = {0.f, 0.f};              // this thread's columns only, until the end
    const ScoreConsts sc = score_consts(p);
    const uint32_t q_group = q_tile + group * 64 * 128;  // this warpgroup's 64 rows of Q (8 row groups)
    // kExt: key β buffer 0 or 1, after the K and V buffers (kSmemBytes; launch_wgmma_score adds their bytes)
    auto key_beta_row = [&](int buf) { return reinterpret_cast<float*>(smem_raw + T::kSmemBytes) + buf * kBlockN; };
    float s[T::kNTiles][4];  // (zeroed once: the first S instruction does not accumulate, but reads them)
#pragma unroll
    for (int nt = 0; nt < T::kNTiles; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    uint32_t pa[T::kPSteps][4];  // P of the previous tile, until its product with V has run

    // Every warpgroup computes every tile of the block's key range (the per-element mask gives P = 0 where
    // its rows see nothing), so no branch differs between the warpgroups around a wgmma — such a branch
    // makes ptxas serialise them all (its warning C7520). The price: at most one fully masked tile per
    // warpgroup at a block's edge (causal or a right window ending in the first half of the block's last
    // 128-key tile for warpgroup 0 — at d = 256, with 64-key tiles, every causal diagonal block's last tile —
    // a left window starting in the second half of its first tile for warpgroup 1).
    auto land_loads = [&] {
        cp_async_wait_all();  // this thread's copies have landed ...
        fence_proxy_async();  // ... are visible to wgmma ...
        __syncthreads();      // ... for every thread's reads
    };
    auto begin_tile = [&](int nb, int nb_next) {
        land_loads();  // K_t and V_{t−1}; every warpgroup has retired its reads of k_free and v_free
        if (nb_next <= n_last)
            wg::load_tile<T, kBlockN>(k_free(), k, p.k_row, int64_t(nb_next) * kBlockN, p.seq_k, p.head_dim, tid);
        wg::load_tile<T, kBlockN>(v_free(), v, p.v_row, int64_t(nb) * kBlockN, p.seq_k, p.head_dim, tid);
        cp_async_commit();
        wgmma_fence_operands(o);  // O (rescaled) and P (packed) are complete before the fence hands them
        wgmma_fence_operands(pa);  // to the tensor cores
        wgmma_fence();
        const uint32_t q_at = opaque(q_group);  // Q's descriptors made per tile, not held in 16 registers
#pragma unroll
        for (int ks = 0; ks < T::kKSteps; ++ks)
            Wgmma<Elem, kBlockN>::ss(s, wg::k_major<kBlockM>(q_at, ks), wg::k_major<kBlockN>(k_cur(), ks), ks > 0);
        wgmma_commit();
    };
    auto issue_pv = [&] {  // O += P V for the previous tile (its V in v_prev)
#pragma unroll
        for (int kp = 0; kp < T::kPSteps; ++kp)
            Wgmma<Elem, kD>::rs_tb(o, pa[kp], wg::n_major<kBlockN>(v_prev(), kp), true);
        wgmma_commit();
    };
    // S is complete: score and mask it (per warp), then — once the previous P V is done (wait_pv), O and
    // P's registers being this thread's again — rescale O (softmax) and pack this tile's P
    auto finish_tile = [&](int nb, int buf, auto wait_pv) {
        wgmma_fence_operands(s);
        const int j0 = nb * kBlockN;
        const int rows[2] = {opaque(row_i[0]), opaque(row_i[1])};
        if constexpr (kExt) {  // s = x: scale, λ, ALiBi and a key row's β (the rows' λ and slope made again
                               // per tile, as next_live)
            extend_tile<T::kNTiles, 0>(p, b, opaque(h), rows, j0, lane, p.ext.key_beta ? key_beta_row(buf) : nullptr, s);
        }
        float rescale[2] = {1.f, 1.f};
        score_tile<Score, kExt>(p, sc, rows, j0, fwd_warp_interior(p, opaque(w0), j0, kBlockN), lane, s, row_max, row_sum,
                                 [&](int r, float factor) { rescale[r] = factor; });
        wait_pv();
        if constexpr (Score::kRowStats) {
#pragma unroll
            for (int dt = 0; dt < T::kDTiles; ++dt)
#pragma unroll
                for (int e = 0; e < 4; ++e) o[dt][e] *= rescale[e / 2];
        }
        // P's accumulator layout is the A-operand layout of two adjacent n8 tiles
#pragma unroll
        for (int kp = 0; kp < T::kPSteps; ++kp) {
            pa[kp][0] = Mma<Elem>::pack(s[2 * kp][0], s[2 * kp][1]);
            pa[kp][1] = Mma<Elem>::pack(s[2 * kp][2], s[2 * kp][3]);
            pa[kp][2] = Mma<Elem>::pack(s[2 * kp + 1][0], s[2 * kp + 1][1]);
            pa[kp][3] = Mma<Elem>::pack(s[2 * kp + 1][2], s[2 * kp + 1][3]);
        }
    };
    auto retire_pv = [&] {  // the previous tile's P V is done: O and P's registers are this thread's again
        wgmma_wait<0>();
        wgmma_fence_operands(o);
        wgmma_fence_operands(pa);
    };
    // kExt, key_beta: β of key tile nb (keys j0 + tid, −inf past Nk) into buffer buf, by the first warpgroup
    // (inline: a call with wgmma in flight would make ptxas serialise them); the block's row i0 stands for
    // every row (the same β on every row of the tile: ext_key_beta)
    auto stage_key_beta = [&](int nb, int buf) {
        if (kExt && p.ext.key_beta && tid < kBlockN) {
            const int64_t j0 = int64_t(nb) * kBlockN;
            const ExtBetaRow row = ext_beta_row(p.ext, b, opaque(h), opaque(i0), 0, p.seq_q, p.seq_k);
            key_beta_row(buf)[tid] = j0 + tid < p.seq_k ? ext_beta(p.ext, row, j0, tid) : -INFINITY;
        }
    };
    // the next tile's: this tile's K and the previous V are free once the next barrier passed
    auto rotate_buffers = [&] { parity ^= 1; };

    if (n_first <= n_last) {
        // key β: this tile's in buffer buf, the next tile's staged into the other during this one (read
        // after the next barrier; the other buffer's last reads were before this tile's barrier)
        int buf = 0;
        stage_key_beta(n_first, buf);
        int nb_next = next_live(n_first + 1);
        begin_tile(n_first, nb_next);
        if (nb_next <= n_last) stage_key_beta(nb_next, buf ^ 1);
        wgmma_wait<0>();
        finish_tile(n_first, buf, [] {});
        rotate_buffers();
        for (int nb = nb_next; nb <= n_last; nb = nb_next) {
            buf ^= 1;
            nb_next = next_live(nb + 1);  // (no wgmma in flight here)
            begin_tile(nb, nb_next);  // S of this tile first, then the previous tile's P V: waiting for S
            issue_pv();               // leaves P V running on the tensor cores during this tile's score
            if (nb_next <= n_last) stage_key_beta(nb_next, buf ^ 1);
            wgmma_wait<1>();
            finish_tile(nb, buf, retire_pv);
            rotate_buffers();
        }
        land_loads();  // the last tile's V
        wgmma_fence_operands(o);
        wgmma_fence_operands(pa);
        wgmma_fence();
        issue_pv();  // the last tile's
        retire_pv();
    }

    // ---- epilogue: normalise (softmax), LSE, O through shared memory as 16-byte stores ----
    float mul[2];
    finish_rows<Score>(p, b, h, row_i, lane, row_max, row_sum, mul);
    cp_async_wait_all();  // (a block with no key tile still has Q's copies in flight)
    __syncthreads();      // the other warpgroup's last S may still read its Q rows, where O is staged
    Elem* smem = reinterpret_cast<Elem*>(smem_raw + (smem_base - smem_addr(smem_raw)));
    store_acc_rows<kD, Elem>(out, p.o_row, p.seq_q, p.head_dim, i0, warp, lane, o, mul, smem);
#elif defined(__CUDA_ARCH__)
    __trap();  // no wgmma on this target: the host never launches it here
#endif
}

// Launches a Hopper kernel (forward or backward) with `smem` bytes of dynamic shared memory, or returns
// cudaErrorNoKernelImageForDevice, launching nothing, when the code loaded for the device is not sm_90a's
// (e.g. the compute_80 PTX compiled for it, CUDA_FORCE_PTX_JIT=1): there the kernel is a trap. (The host
// asks wgmma_unavailable first; this is the backstop.)
template <class Params>
cudaError_t launch_sm90a(void (*kernel)(Params), int smem, int64_t blocks, int threads, cudaStream_t stream,
                         const Params& p) {
    // host queries per function and device, not stream operations: a graph capture may contain them
    cudaFuncAttributes attr;
    cudaError_t e = cudaFuncGetAttributes(&attr, kernel);
    if (e != cudaSuccess) return e;
    if (attr.ptxVersion < 90) return cudaErrorNoKernelImageForDevice;
    e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return e;
    FSIG_LAUNCH(kernel, dim3(unsigned(blocks)), dim3(threads), smem, stream, p);
    return cudaGetLastError();
}

template <class T, class Score, bool kExt>
cudaError_t launch_wgmma_score(const FwdParams& p, int64_t blocks, cudaStream_t stream) {
    constexpr int kSmem = T::kSmemBytes + (kExt ? T::kExtBytes : 0);
    static_assert(kSmem <= 227 * 1024, "shared memory of one block on sm_90");
    return launch_sm90a(attention_fwd_wgmma_kernel<T, Score, kExt>, kSmem, blocks, T::kThreads, stream, p);
}

// kExt: the extended kernels (p.ext.on, no β per row), generated in their own unit fwd_wgmma_ext.cu
template <int kHeadDim, class Elem, bool kExt>
cudaError_t launch_fwd_wgmma(const FwdParams& params, cudaStream_t stream) {
    using T = WgmmaFwdTraits<kHeadDim, Elem>;
    static_assert(T::kBlockM == kFwdBlockM && T::kBlockM >= kFwdSmallBlockM,
                  "the host judges tiles of kFwdBlockM rows, and checks the grid with the finer compact blocks");
    // a layout the host judged constant over kFwdBlockM x kWgmmaFwdBlockN tiles is so over these, which nest in them
    static_assert(kWgmmaFwdBlockN % T::kBlockN == 0, "the host judges a layout's tiles by kWgmmaFwdBlockN");
    if (params.ext.elementwise || bool(params.ext.on) != kExt) return cudaErrorInvalidValue;  // (never asked)
    FwdParams p = params;
    p.m_blocks = int32_t((p.seq_q + T::kBlockM - 1) / T::kBlockM);
    const int64_t blocks = int64_t(p.m_blocks) * p.heads_q * p.batch;  // < 2^31, checked on the host
    return with_score_policy(p.score, [&](auto score) {
        return launch_wgmma_score<T, decltype(score), kExt>(p, blocks, stream);
    });
}

}  // namespace fsig::cuda
