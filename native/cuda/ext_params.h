// The masks-and-positions extensions of DESIGN.md §4 as the CUDA kernels evaluate them: ALiBi, the
// additive bias and boolean mask tensors, the strided (atrous) pattern, the block-sparse layout and
// log-n scaling. Plain C++ with __host__ __device__ functions, so the kernels and their CPU-side check
// (tests/gpu/test_ext_math.cpp, against the fp64 reference) run the same code. The host fills ExtParams
// from a validated Problem (fill_ext, native/cuda/host_params.h).
//
// Per element (query row i, key j, bottom-right diagonal δ_i = i + Nk − Nq), with x = scale·q_i·k_j:
//   x ← λ_i·x − slope·|δ_i − j| + bias_ij, or −inf where the strided pattern (|δ_i − j| mod s ≠ 0 and,
//   when a window is given, j outside row i's causal/window interval), the block layout or the mask
//   tensor disallows (i, j).
// Causal and window alone stay the kernels' interval [first_key, last_key] of fwd_params.h; with
// strided and a window together the host widens that interval to causal alone (Problem::first_key).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "flashsig.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define FSIG_EXT_HD __host__ __device__ __forceinline__
#define FSIG_EXT_ROLLED _Pragma("unroll 1")  // a loop nvcc should not unroll (a rarely taken path: code size)
#else
#define FSIG_EXT_HD inline
#define FSIG_EXT_ROLLED
#endif

namespace fsig::cuda {

struct ExtParams {
    int32_t on;           // any extension: selects the extended instantiation on the host
    int32_t elementwise;  // bias, mask, strided or layout: the kernels stage β (ext_beta) per tile (the tall
                          // forward never per element: one row per key tile, ext_key_beta_at)
    int32_t key_beta;     // (the Hopper forward, elementwise 0) β the same on every row of a tile: one row per tile
    // ALiBi: slope(b, h) = alibi[b·alibi_b + h·alibi_h] (fp32), nullptr = off
    const float* alibi;
    int64_t alibi_b, alibi_h;
    // additive bias [B|1, Hq|1, Nq|1, Nk], element strides (0 on broadcast dims), nullptr = off
    const void* bias;
    int32_t bias_dtype;  // fsig_dtype: fp32, fp16 or bf16
    int64_t bias_stride[4];
    // boolean mask (1 byte, nonzero = allowed), same broadcasting, nullptr = off
    const uint8_t* mask;
    int64_t mask_stride[4];
    // block-sparse layout [1|Hq, ⌈Nq/bm⌉, ⌈Nk/bn⌉] (stride[0] = 0 when shared by the heads), nullptr = off
    const uint8_t* layout;
    int64_t layout_stride[3];
    int32_t block_m, block_n;  // clamped to Nq, Nk (a larger block is the same single block)
    // strided pattern: s in [2, 2^31) (1 allows everything and is passed as 0 = off); magic =
    // ⌊2^32 / s⌋ + 1 divides exactly by s every n < 2^16 (strided_hit)
    int64_t strided;
    uint32_t strided_magic;
    // the caller's causal and window (the strided union and log-n's n_i use them, whatever interval
    // the kernel iterates)
    int32_t causal;
    int64_t window_left, window_right;  // -1 = unbounded
    // log-n: λ_i = max(1, ln n_i / ln n_train) with n_i = keys of row i by causal and window alone; 0 = off
    int64_t logn_train;
    float inv_ln_train;
    // dBias (backward only): the bias's shape [B, Hq, Nq, Nk] (no broadcast on CUDA), element strides
    void* dbias;
    int64_t dbias_stride[4];
};

// ---- 16-bit floats (the bias tensor's storage) ----
FSIG_EXT_HD float half_bits_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
    return __half2float(__ushort_as_half(h));
#else
    const uint32_t sign = uint32_t(h >> 15) << 31, exp = (h >> 10) & 31u, man = h & 1023u;
    float f;
    if (exp == 31) {
        const uint32_t bits = sign | 0x7f800000u | (man << 13);
        std::memcpy(&f, &bits, 4);
    } else if (exp == 0) {
        f = std::ldexp(float(man), -24);  // zero or subnormal
        if (sign) f = -f;
    } else {
        const uint32_t bits = sign | ((exp + 112u) << 23) | (man << 13);
        std::memcpy(&f, &bits, 4);
    }
    return f;
#endif
}
FSIG_EXT_HD float fp32_bits_to_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(bits);
#else
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
#endif
}
FSIG_EXT_HD float bf16_bits_to_float(uint16_t h) { return fp32_bits_to_float(uint32_t(h) << 16); }
FSIG_EXT_HD uint16_t float_to_half_bits(float x) {
#if defined(__CUDA_ARCH__) || defined(FSIG_CUDA_EMULATION)  // (cuda_fp16.h's host versions)
    return __half_as_ushort(__float2half_rn(x));
#else
    (void)x;
    return 0;  // the host never writes dBias (the CPU backend has its own conversions)
#endif
}
FSIG_EXT_HD uint16_t float_to_bf16_bits(float x) {
#if defined(__CUDA_ARCH__) || defined(FSIG_CUDA_EMULATION)  // (cuda_fp16.h's host versions)
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
#else
    (void)x;
    return 0;
#endif
}

// dBias (the bias's dtype, its strides) of element (b, h, i, j): the backward's dQ kernel, or for a broadcast
// dbias the reduction of its partial sums (bwd_dbias_reduce.cu)
FSIG_EXT_HD void store_dbias(const ExtParams& e, int64_t b, int64_t h, int64_t i, int64_t j, float v) {
    const int64_t at = b * e.dbias_stride[0] + h * e.dbias_stride[1] + i * e.dbias_stride[2] + j * e.dbias_stride[3];
    if (e.bias_dtype == FSIG_DTYPE_FP32) static_cast<float*>(e.dbias)[at] = v;
    else if (e.bias_dtype == FSIG_DTYPE_FP16) static_cast<uint16_t*>(e.dbias)[at] = float_to_half_bits(v);
    else static_cast<uint16_t*>(e.dbias)[at] = float_to_bf16_bits(v);
}

FSIG_EXT_HD int64_t ext_min(int64_t a, int64_t b) { return a < b ? a : b; }
FSIG_EXT_HD int64_t ext_max(int64_t a, int64_t b) { return a > b ? a : b; }
// ⌊a / b⌋ for b > 0 and any sign of a
FSIG_EXT_HD int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Causal and window alone: row i's interval [cw_first, cw_last] (Problem::cw_first/cw_last).
FSIG_EXT_HD int64_t cw_first(const ExtParams& e, int64_t diag) {
    return e.window_left >= 0 ? ext_max(diag - e.window_left, 0) : 0;
}
FSIG_EXT_HD int64_t cw_last(const ExtParams& e, int64_t diag, int64_t seq_k) {
    int64_t hi = seq_k - 1;
    if (e.causal && diag < hi) hi = diag;
    if (e.window_right >= 0 && diag + e.window_right < hi) hi = diag + e.window_right;
    return hi;
}

// The kernels split the extensions in two. Positions (log-n λ_i and ALiBi) are per row or linear in the
// key, so they are applied to the accumulators in registers at a few operations per element:
//   x ← λ_i·x − slope·|δ_i − j|                                          (ext_position)
// Everything element-wise (bias tensor, mask tensor, strided pattern, block layout) is one additive term
//   β_ij = bias_ij, or −inf where a mask disallows (i, j)                  (ext_beta)
// that a warp computes in a rolled loop into shared memory, lanes along the keys (coalesced reads of
// the bias and mask rows), and adds from there: small code, whatever the number of elements per thread. Where β is
// alike on every row (key padding: ext_beta_rows_alike) the tall forward and the Hopper kernels stage one row of it
// per key tile instead: the tall forward without the layout, which its tiles of 32 rows apply by skipping
// (ext_key_beta_at, ext_beta_by_key_rows); the Hopper kernels, with no warp test of their own, with it, from the
// tile's first row (ext_beta; ext_key_beta, host_params.h).

// Per row and key tile, in registers (positions only).
struct ExtRow {
    float lambda;  // λ_i (1 without log-n)
    float slope;   // ALiBi slope of (b, h) (0 without ALiBi)
    float dist0;   // δ_i − j0: key j0 + c is |dist0 − c| from the diagonal (exact below 2^24)
};

FSIG_EXT_HD float logn_lambda(const ExtParams& e, int64_t diag, int64_t seq_k) {
    if (e.logn_train <= 0) return 1.f;
    const int64_t n = cw_last(e, diag, seq_k) - cw_first(e, diag) + 1;
    if (n <= 1) return 1.f;
    const float l = logf(float(n)) * e.inv_ln_train;
    return l > 1.f ? l : 1.f;
}

// ALiBi's slope of (b, h): 0 without ALiBi
FSIG_EXT_HD float ext_alibi_slope(const ExtParams& e, int64_t b, int64_t h) {
    return e.alibi != nullptr ? e.alibi[b * e.alibi_b + h * e.alibi_h] : 0.f;
}

// Row i of (b, h) for the key tile starting at j0 (seq_q, seq_k: the problem's lengths).
FSIG_EXT_HD ExtRow ext_row(const ExtParams& e, int64_t b, int64_t h, int64_t i, int64_t j0, int64_t seq_q,
                           int64_t seq_k) {
    const int64_t diag = i + seq_k - seq_q;
    ExtRow r;
    r.lambda = logn_lambda(e, diag, seq_k);
    r.slope = ext_alibi_slope(e, b, h);
    r.dist0 = float(diag - j0);
    return r;
}

// x = scale·q·k with the positions applied, dist = δ_i − j (no branch: slope 0 and λ 1 when off).
FSIG_EXT_HD float ext_position_at(float slope, float lambda, float dist, float x) {
    return fmaf(-slope, fabsf(dist), x * lambda);
}
// ... of key j0 + c of a row (the forward and dQ kernels; the dK/dV kernel, whose rows are keys, calls
// ext_position_at with its own dist)
FSIG_EXT_HD float ext_position(const ExtRow& r, int c, float x) {
    return ext_position_at(r.slope, r.lambda, r.dist0 - float(c), x);
}

// Per row and key tile, for the element-wise part. Positions are int32 (Nq, Nk <= 2^30 on CUDA: kMaxCudaSeq).
struct ExtBetaRow {
    int64_t bias_off;    // element offset of (b, h, i, j = 0) in the bias
    int64_t mask_off;    // byte offset of (b, h, i, j = 0) in the mask
    int64_t layout_off;  // byte offset of row block ⌊i / bm⌋ of head h
    int32_t w_lo, w_hi;  // the window part of the strided union: j in [w_lo, w_hi] (empty: w_hi < w_lo)
    uint32_t phase;      // (j0 − δ_i) mod s: key j0 + c is on the strided pattern iff (c + phase) mod s = 0
};

// (j0 − δ_i) mod s in [0, s). Row i + 1 has phase − 1 (mod s): strided_phase_next.
FSIG_EXT_HD uint32_t strided_phase(const ExtParams& e, int64_t diag, int64_t j0) {
    if (e.strided <= 0) return 0;
    const int64_t m = (j0 - diag) % e.strided;
    return uint32_t(m < 0 ? m + e.strided : m);
}
FSIG_EXT_HD uint32_t strided_phase_next(const ExtParams& e, uint32_t phase) {
    return phase == 0 ? uint32_t(e.strided > 0 ? e.strided - 1 : 0) : phase - 1;
}

// Row i of (b, h) for the key tile at j0, given its strided phase.
FSIG_EXT_HD ExtBetaRow ext_beta_row(const ExtParams& e, int64_t b, int64_t h, int64_t i, uint32_t phase,
                                    int64_t seq_q, int64_t seq_k) {
    ExtBetaRow r;
    const int64_t diag = i + seq_k - seq_q;
    r.bias_off = b * e.bias_stride[0] + h * e.bias_stride[1] + i * e.bias_stride[2];
    r.mask_off = b * e.mask_stride[0] + h * e.mask_stride[1] + i * e.mask_stride[2];
    r.layout_off = e.layout != nullptr ? h * e.layout_stride[0] + (i / e.block_m) * e.layout_stride[1] : 0;
    const bool window = e.window_left >= 0 || e.window_right >= 0;
    // cw_first, cw_last lie in [0, Nk] and [-1, Nk - 1] (clamped by the window arithmetic)
    r.w_lo = window ? int32_t(ext_min(cw_first(e, diag), seq_k)) : 0;
    r.w_hi = window ? int32_t(ext_max(cw_last(e, diag, seq_k), -1)) : -1;
    r.phase = phase;
    return r;
}

// n ≡ 0 (mod s) for n = c + phase, c < 2^15 (a key's offset inside its tile) and phase < s < 2^31: for
// s < 2^16 − 2^15 every such n is below 2^16, where the magic multiply is exact (its error
// n·(magic − 2^32/s)/2^32 < 2^-16 < 1/s cannot reach the next integer); for larger s, n < 2s so
// the only multiples are 0 and s.
FSIG_EXT_HD bool strided_hit(const ExtParams& e, uint32_t n) {
    if (e.strided >= 32768) return n == 0 || n == uint32_t(e.strided);
#if defined(__CUDA_ARCH__)
    const uint32_t q = __umulhi(n, e.strided_magic);
#else
    const uint32_t q = uint32_t((uint64_t(n) * e.strided_magic) >> 32);
#endif
    return n == q * uint32_t(e.strided);
}

// The bias tensor's element at (element offset) at as stored (fp32 bits, or 16 bits), and its value in fp32: two
// steps, so that a kernel can load a value early and decode it where it is used (the tall forward's key rows)
FSIG_EXT_HD uint32_t ext_bias_bits_at(const ExtParams& e, int64_t at) {
    if (e.bias_dtype == FSIG_DTYPE_FP32) return static_cast<const uint32_t*>(e.bias)[at];
    return static_cast<const uint16_t*>(e.bias)[at];
}
FSIG_EXT_HD float ext_bias_value(const ExtParams& e, uint32_t bits) {
    if (e.bias_dtype == FSIG_DTYPE_FP32) return fp32_bits_to_float(bits);
    return e.bias_dtype == FSIG_DTYPE_FP16 ? half_bits_to_float(uint16_t(bits)) : bf16_bits_to_float(uint16_t(bits));
}
FSIG_EXT_HD float ext_bias_at(const ExtParams& e, int64_t at) { return ext_bias_value(e, ext_bias_bits_at(e, at)); }

// β of key j = j0 + c (c < 2^15, j < Nk, row i < Nq): the bias, or −inf where the strided pattern, the
// block layout or the mask tensor disallows the key (a bias of −inf masks as well). 0 with none of them.
// No branch depends on a value read, so the layout, mask and bias loads are in flight together (every
// element of them is in bounds for such i and j).
FSIG_EXT_HD float ext_beta(const ExtParams& e, const ExtBetaRow& r, int64_t j0, int c) {
    const int32_t j = int32_t(j0) + c;
    bool allowed = !(e.strided > 0 && !strided_hit(e, uint32_t(c) + r.phase) && !(j >= r.w_lo && j <= r.w_hi));
    if (e.layout != nullptr) allowed &= e.layout[r.layout_off + (j / e.block_n) * e.layout_stride[2]] != 0;
    if (e.mask != nullptr) allowed &= e.mask[r.mask_off + j * e.mask_stride[3]] != 0;
    const float bias = e.bias != nullptr ? ext_bias_at(e, r.bias_off + j * e.bias_stride[3]) : 0.f;
    return allowed ? bias : -INFINITY;
}

// β broadcast over the query rows, the block layout aside: no strided pattern, and a bias and a mask only if their
// row stride is 0 (key padding; the C ABI layer gives every size-1 dimension stride 0)
FSIG_EXT_HD bool ext_beta_rows_alike(const ExtParams& e) {
    return e.strided <= 0 && (e.bias == nullptr || e.bias_stride[2] == 0) &&
           (e.mask == nullptr || e.mask_stride[2] == 0);
}

// Whether a Hopper kernel's call (β one row per tile: key_beta) has a bias or mask — key padding, whose key tiles those
// kernels test once per block (scan_key_rows); a layout alone is applied by their tile search
FSIG_EXT_HD bool ext_key_padding(const ExtParams& e) { return e.key_beta && (e.bias != nullptr || e.mask != nullptr); }

// β of key j of (b, h) on every query row of a call whose β is alike on the rows (ext_beta_rows_alike), the block
// layout left out: the bias, or −inf where the mask disallows the key or j >= Nk (0 with neither) — the tall
// forward's row of β per key tile (its tile skipping applies the layout). In two steps, the loads
// (ext_key_beta_load) and their value (ext_key_beta_value), so that the kernel can issue the loads a tile ahead.
struct KeyBetaLoad {
    uint32_t allowed;    // the mask's byte (1 without a mask, 0 past Nk)
    uint32_t bias_bits;  // ext_bias_bits_at (0 without a bias)
};
FSIG_EXT_HD KeyBetaLoad ext_key_beta_load(const ExtParams& e, int64_t b, int64_t h, int64_t j, int64_t seq_k) {
    KeyBetaLoad l{0, 0};
    if (j < seq_k) {
        l.allowed = e.mask != nullptr ? e.mask[b * e.mask_stride[0] + h * e.mask_stride[1] + j * e.mask_stride[3]] : 1;
        if (e.bias != nullptr)
            l.bias_bits = ext_bias_bits_at(e, b * e.bias_stride[0] + h * e.bias_stride[1] + j * e.bias_stride[3]);
    }
    return l;
}
FSIG_EXT_HD float ext_key_beta_value(const ExtParams& e, const KeyBetaLoad& l) {
    return l.allowed == 0 ? -INFINITY : e.bias != nullptr ? ext_bias_value(e, l.bias_bits) : 0.f;
}
FSIG_EXT_HD float ext_key_beta_at(const ExtParams& e, int64_t b, int64_t h, int64_t j, int64_t seq_k) {
    return ext_key_beta_value(e, ext_key_beta_load(e, b, h, j, seq_k));
}

// Layout blocks a tile may span before ext_tile_live stops reading them (every thread of a block reads
// them; with tiny blocks the warps' β staging skips what is empty instead).
constexpr int64_t kMaxLayoutBlocksPerTile = 64;

// False only when neither the block layout nor the strided pattern allows any element of rows
// [i0, i1] × keys [j0, j1] (inclusive, inside the problem): the kernels then skip the tile without
// loading it. Conservative otherwise (true may still hold no allowed element; the elements decide),
// and for a layout only when the tile spans at most kMaxLayoutBlocksPerTile of its blocks.
FSIG_EXT_HD bool ext_tile_live(const ExtParams& e, int64_t h, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                               int64_t seq_q, int64_t seq_k) {
    if (e.layout != nullptr &&
        (i1 / e.block_m - i0 / e.block_m + 1) * (j1 / e.block_n - j0 / e.block_n + 1) <= kMaxLayoutBlocksPerTile) {
        bool any = false;
        for (int64_t br = i0 / e.block_m; br <= i1 / e.block_m && !any; ++br)
            for (int64_t bc = j0 / e.block_n; bc <= j1 / e.block_n; ++bc)
                if (e.layout[h * e.layout_stride[0] + br * e.layout_stride[1] + bc * e.layout_stride[2]] != 0) {
                    any = true;
                    break;
                }
        if (!any) return false;
    }
    if (e.strided > 0) {
        // δ_i − j over the tile is every integer of [lo, hi]; it holds a multiple of s iff ⌊hi/s⌋·s >= lo
        const int64_t off = seq_k - seq_q, lo = i0 + off - j1, hi = i1 + off - j0;
        const bool hit = floor_div(hi, e.strided) * e.strided >= lo;
        // the window part: cw_first and cw_last are non-decreasing in i, so some row's window meets
        // [j0, j1] only if the first row's window starts by j1 and the last row's ends at j0 or later
        const bool window = (e.window_left >= 0 || e.window_right >= 0) && cw_first(e, i0 + off) <= j1 &&
                            cw_last(e, i1 + off, seq_k) >= j0;
        if (!hit && !window) return false;
    }
    return true;
}

// Whether every tile of `tile` rows (or keys), at multiples of its size, lies inside one layout block of
// `block` (clamped to the length n): a whole multiple of the tile, or the whole length.
FSIG_EXT_HD bool blocks_hold_tiles(int64_t block, int64_t tile, int64_t n) { return block % tile == 0 || block >= n; }

// Whether the call has a block layout and every tile_m x tile_n tile (at multiples of its size) lies inside one of
// its blocks: skipping the tiles the layout leaves empty (ext_tile_live, exact for such a tile;
// ext_layout_rows_allow) then applies the layout in full.
FSIG_EXT_HD bool ext_layout_holds_tiles(const ExtParams& e, int64_t tile_m, int64_t tile_n, int64_t seq_q,
                                        int64_t seq_k) {
    return e.layout != nullptr && blocks_hold_tiles(e.block_m, tile_m, seq_q) &&
           blocks_hold_tiles(e.block_n, tile_n, seq_k);
}

// True when a forward kernel whose tiles are tile_m x tile_n needs no β: the block layout is the only
// element-wise extension and holds the tiles (ext_layout_holds_tiles).
FSIG_EXT_HD bool ext_layout_tile_uniform(const ExtParams& e, int64_t tile_m, int64_t tile_n, int64_t seq_q,
                                         int64_t seq_k) {
    return e.bias == nullptr && e.mask == nullptr && e.strided <= 0 &&
           ext_layout_holds_tiles(e, tile_m, tile_n, seq_q, seq_k);
}

// True when a kernel whose warps own tile_m x tile_n tiles can apply the call's element-wise extensions with one row
// of β per key tile (ext_key_beta_at) and tile skipping: β alike on the rows (key padding) and a block layout, if
// any, that holds the tiles (the tall forward: tall_serves_ext).
FSIG_EXT_HD bool ext_beta_by_key_rows(const ExtParams& e, int64_t tile_m, int64_t tile_n, int64_t seq_q,
                                      int64_t seq_k) {
    return ext_beta_rows_alike(e) && (e.layout == nullptr || ext_layout_holds_tiles(e, tile_m, tile_n, seq_q, seq_k));
}

// Whether the layout allows key j on any row of [i0, i1] of head h (true without a layout), exactly. On a tile for
// which ext_layout_holds_tiles holds, the answer for the tile's first key and rows is the answer for each of its
// elements (the tall forward's test: rows and keys < 2^30, so int32 — a 64-bit division is a call, whose saved
// registers made that kernel spill). One load per block row in [i0, i1], none depending on another.
FSIG_EXT_HD bool ext_layout_rows_allow(const ExtParams& e, int64_t h, int32_t i0, int32_t i1, int32_t j) {
    if (e.layout == nullptr) return true;
    const uint8_t* column = e.layout + h * e.layout_stride[0] + int64_t(j / e.block_n) * e.layout_stride[2];
    bool any = false;
    FSIG_EXT_ROLLED
    for (int32_t r = i0 / e.block_m; r <= i1 / e.block_m; ++r) any |= column[int64_t(r) * e.layout_stride[1]] != 0;
    return any;
}

}  // namespace fsig::cuda
