// CUDA linear attention (cosFormer, elu+1; DESIGN.md §4), forward and backward, on tensor cores
// (mma.sync m16n8k16 with ldmatrix, fp32 accumulation). Compiled by nvcc, and by g++ for the SIMT
// emulator (tests/emu), where tests/gpu/test_cuda_linear_emu and test_linear_emulation run it.
//
// Notation as native/cpu/linear.h: feature rows qf_i = φ(q_i)·[sin θ_i, cos θ_i] (cosFormer, θ = π p / 2M,
// p_i = δ_i = i + Nk − Nq, p_j = j) or φ(q_i) (elu+1), F = 2d or d floats; n_i = max(den_i, ε);
// s_i = [den_i > ε] (dO_i·num_i) / n_i, so that dP_ij = (dO_i·v_j − s_i) / n_i.
//
// One primitive serves all five kernels: rows X against columns Y,
//     out_r = Σ_{c allowed for r} (a_r · b_c) u_c,      a, b: K-wide feature rows, u: 32-wide value rows,
// computed chunk by chunk (C = 32 positions) as an inter-chunk part a_r·S with the running state
// S = Σ_{c in earlier chunks} b_c ⊗ u_c (K × 32) and an exact intra-chunk part (P = A Bᵀ masked, then
// P U). The kernels differ in what a, b, u are and what is done with out:
//   kFwd   rows queries, a = qf, b = kf, u = v[32-column slice] (+ den): out = num / max(den, ε)
//   kStats the same, writes Σ_slice dO·num and den as fp32 into dq's row (reduced by reduce_row)
//   kDv    rows keys (reverse scan), a = kf, b = qf·n1, u = dO[slice]·n2: dV_j = Σ_i (qf_i·kf_j) dO_i / n_i
//   kDk    rows keys (reverse), a = v, b = dO·n1, pair −s_i·n1, u = qf[q-dim slice]·n2: dkf_j = Σ_i dP_ij qf_i
//   kDq    rows queries, a = dO, b = v, u = kf[q-dim slice], pair −s_i, out / n_i: dqf_i = Σ_j dP_ij kf_j
// dk, dq = φ'(x) ∘ (sin θ dF_sin + cos θ dF_cos). 1/n_i = n1_i·n2_i, split between the two 16-bit operands
// by powers of two (fill_info), or applied in fp32 (kDq): on rows where ε binds 1/n is 10^6, and any
// operand carrying all of it would overflow fp16 (q̃/n, dO/n), while the products stay bounded. The −s_i of dP stays fp32:
// inside the pair before P is rounded (intra), and as an fp32 offset state w = Σ_c u_c (kDq, times
// s_r) or Σ_c s_c u_c (kDk) subtracted from A·S (inter) — dO·v − s cancels (exactly, with one key),
// and a 16-bit s would leave its rounding error in the gradient.
//
// Precision, against the naive same-dtype computation of DESIGN §6 (tests/linear_reference.h): a, b, u
// are rounded to the storage dtype (as the naive rounds the features), P to the dtype (as the naive
// rounds its scores) after scaling each row by a power of two (exact) so that fp16 cannot overflow —
// scores and the backward's pairs dO·v are unbounded; the state S is fp32 in registers and enters A·S as
// two 16-bit terms (hi + lo, each n-tile of 8 columns scaled the same way): about 16 significant bits
// with bf16, 22 with fp16, more than the naive's 16-bit scores carry; den is fp32 (A·z + rowsum P).
//
// A block (4 warps) works on one (value or q-dim slice, head, batch, segment of chunks). Per chunk: the
// row and column operands land in shared memory as 16-bit tiles (A, B as [position][feature], U as
// [position][u]); warp w computes P and O for rows 16·(w % 2) and columns 16·(w / 2) (P from A·Bᵀ,
// then O = A·S + P·U), and updates columns 8w..8w+7 of the state for all K rows (Bᵀ by ldmatrix.trans).
// GQA: kDv/kDk columns are the queries of every head of the kv head's group, summed in the state and
// in the chunk. Causal: forward-direction chunk t holds keys [tC, tC + C) and the queries whose δ_i
// lies in that range (rows with δ_i < 0 see no key: 0); reverse-direction kernels visit the chunks last
// to first. Segments (several blocks along the sequence): the state before a segment's chunks is
// recomputed by the block (no workspace) or added up from the other segments' partial sums in the
// workspace (linear_params.h, Phase).
// Every output element is written by exactly one thread of one block; every sum in a fixed order.
#pragma once

#include <cstdint>
#include <cstring>
#include <cmath>

#include "linear_params.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define FSIG_LIN_HD __host__ __device__ __forceinline__
#define FSIG_LIN_UNROLL _Pragma("unroll")
#define FSIG_LIN_UNROLL_1 _Pragma("unroll 1")
#else
#define FSIG_LIN_HD inline
#define FSIG_LIN_UNROLL
#define FSIG_LIN_UNROLL_1
#endif

#if defined(__CUDACC__) || defined(FSIG_CUDA_EMULATION)
#include <type_traits>

#include "fragment.h"
#include "ptx.h"
#define FSIG_LIN_DEVICE_CODE 1
#endif

namespace fsig::cuda::lin {

constexpr int kC = 32;         // positions per chunk
constexpr int kThreads = 128;  // 4 warps
constexpr int kU = 32;         // value columns per block
constexpr int kValSlice = 32;  // kFwd, kStats, kDv: value columns per block

template <int D, bool COS>
struct Dims {
    static constexpr int F = COS ? 2 * D : D;        // feature width
    static constexpr int QSlice = COS ? 16 : 32;     // kDq, kDk: columns of q/k per block (u = sin | cos halves)
    static constexpr int kValSlices = D / kValSlice; // stats slots before the den slot in a dq row
    static constexpr int kQSlices = D / QSlice;      // replicas of (1/n, s) in a dq row
    static constexpr int kRepFloats = QSlice / 2;    // fp32 spacing of the replicas (their slice's columns)
};

// Row stride in 16-bit elements of a tile with `cols` columns: an odd number of 16-byte chunks, so that
// the 8 row addresses of one ldmatrix phase fall in 8 different chunks of the 128-byte bank line.
constexpr int ld16(int cols) { return (cols / 8) % 2 == 0 ? cols + 8 : cols + 16; }

// Everything derived from (role, head dim, map) in one place: the shared-memory layout in bytes.
template <int Role, int D, bool COS>
struct Cfg {
    using Dm = Dims<D, COS>;
    static constexpr bool kReverse = Role == kDv || Role == kDk;  // rows are keys, columns queries
    static constexpr bool kOffset = Role == kDq || Role == kDk;  // dP's −s_i term (q-dim slices)
    static constexpr int K = kOffset ? D : Dm::F;
    static constexpr int kSlices = kOffset ? Dm::kQSlices : Dm::kValSlices;
    static constexpr bool kDen = Role == kFwd || Role == kStats;
    static constexpr int kKTiles = K / 16;                      // k16 steps of A·Bᵀ and A·S; m16 tiles of S
    static constexpr int kLdK = ld16(K), kLdU = ld16(kU), kLdC = ld16(kC), kLdO = kU + 1;
    static constexpr int kA = 0;                                // A [kC][kLdK] 16-bit row operands
    static constexpr int kB = kA + kC * kLdK * 2;               // B [kC][kLdK] 16-bit column operands
    static constexpr int kUo = kB + kC * kLdK * 2;              // U [kC][kLdU] 16-bit column values
    static constexpr int kP = kUo + kC * kLdU * 2;              // P [kC][kLdC] 16-bit, masked
    static constexpr int kShi = kP + kC * kLdC * 2;             // S hi [K][kLdU] 16-bit, scaled per n-tile
    static constexpr int kSlo = kShi + K * kLdU * 2;            // S lo
    static constexpr int kO = kSlo + K * kLdU * 2;              // O [kC][kLdO] fp32 (column kU: den)
    static constexpr int kZ = kO + kC * kLdO * 4;               // z [K] fp32 = Σ b (den's state)
    static constexpr int kW = kZ + K * 4;                       // w [kU] fp32: the offset state (kOffset)
    static constexpr int kRow = kW + kU * 4;                    // row info [5][kC] fp32 (fill_info)
    static constexpr int kCol = kRow + 5 * kC * 4;              // column info [5][kC]
    static constexpr int kScale = kCol + 5 * kC * 4;            // [4] fp32: 2^e of each state n-tile
    static constexpr int kRowMax = kScale + 4 * 4;              // [2][kC] fp32: |P| row maxima per column half
    static constexpr int kRowScale = kRowMax + 2 * kC * 4;      // [kC] fp32: 2^e of each row of P
    static constexpr int kBytes = kRowScale + kC * 4;
    // one block's partial state in the workspace: S in the registers' fragment order, then z, then w
    static constexpr int kPartialZ = 32 * K, kPartialW = kPartialZ + K;
    static constexpr int64_t kPartialFloats = partial_floats(K);
    static_assert(kPartialW + kU == kPartialFloats, "linear_params.h's partial_floats is this layout's size");
    static_assert(K % 32 == 0, "features must fill whole k16 steps, and den's a·z takes 4 groups of 8 a row");
    static_assert(kZ % 16 == 0 && kLdK % 8 == 0 && kLdC % 8 == 0, "den's 16-byte loads of z, A and P rows");
    static_assert(kShi % 16 == 0 && kSlo % 16 == 0 && kP % 16 == 0 && kUo % 16 == 0 && kB % 16 == 0,
                  "ldmatrix rows start on 16-byte boundaries");
    static_assert(kC == 32 && kThreads == 128 && kU == 32, "the warp mappings assume 4 warps, C = 32, 32 value columns");
    static_assert(D % 32 == 0, "head dim must be a multiple of 32");
};

// ---- 16-bit storage --------------------------------------------------------------------------------

FSIG_LIN_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, 4);
    return f;
#endif
}
FSIG_LIN_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
#endif
}

template <bool BF16>
FSIG_LIN_HD float from16(uint16_t h) {
    if (BF16) return bits_to_float(uint32_t(h) << 16);
#if defined(__CUDA_ARCH__)
    return __half2float(__ushort_as_half(h));
#else
    const uint32_t sign = uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        const float f = float(m) * 5.9604644775390625e-8f;  // m · 2^-24
        return sign ? -f : f;
    }
    if (e == 31) return bits_to_float(sign | 0x7f800000u | (m << 13));
    return bits_to_float(sign | ((e + 112u) << 23) | (m << 13));
#endif
}

// round to nearest even, as __float2half_rn / __float2bfloat16_rn
template <bool BF16>
FSIG_LIN_HD uint16_t to16(float f) {
    uint16_t h;
#if defined(__CUDA_ARCH__)
    if (BF16) h = __bfloat16_as_ushort(__float2bfloat16_rn(f));
    else h = __half_as_ushort(__float2half_rn(f));
#else
    const uint32_t u = float_to_bits(f);
    if (BF16) {
        if ((u & 0x7fffffffu) > 0x7f800000u) h = uint16_t((u >> 16) | 0x40u);
        else h = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    } else {
        const uint32_t sign = (u >> 16) & 0x8000u, x = u & 0x7fffffffu;
        if (x >= 0x7f800000u) h = uint16_t(sign | (x > 0x7f800000u ? 0x7e00u | ((x >> 13) & 0x3ffu) : 0x7c00u));
        else if (x >= 0x477ff000u) h = uint16_t(sign | 0x7c00u);  // rounds to inf
        else if (x < 0x38800000u) {                              // half subnormal (or zero)
            const int shift = 126 - int(x >> 23);
            if (shift > 24) h = uint16_t(sign);
            else {
                const uint32_t m = (x & 0x7fffffu) | 0x800000u, r = m >> shift, rem = m & ((1u << shift) - 1u),
                               half = 1u << (shift - 1);
                h = uint16_t(sign | (r + ((rem > half || (rem == half && (r & 1u))) ? 1u : 0u)));
            }
        } else {
            const uint32_t r = ((((x >> 23) - 112u) << 10) | ((x & 0x7fffffu) >> 13)), rem = x & 0x1fffu;
            h = uint16_t(sign | (r + ((rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ? 1u : 0u)));
        }
    }
#endif
    return h;
}

template <bool BF16>
FSIG_LIN_HD float load16(const void* base, int64_t off) {
    return from16<BF16>(static_cast<const uint16_t*>(base)[off]);
}

// the 2 16-bit values of one 32-bit word (the lower address in its low half)
template <bool BF16>
FSIG_LIN_HD void unpack2(uint32_t word, float& first, float& second) {
    first = from16<BF16>(uint16_t(word & 0xffffu));
    second = from16<BF16>(uint16_t(word >> 16));
}
// the 8 16-bit values of one 16-byte group
template <bool BF16>
FSIG_LIN_HD void unpack8(uint4 raw, float (&x)[8]) {
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
FSIG_LIN_UNROLL
    for (int e = 0; e < 4; ++e) unpack2<BF16>(words[e], x[2 * e], x[2 * e + 1]);
}
template <bool BF16>
FSIG_LIN_HD void store16(void* base, int64_t off, float f) {
    static_cast<uint16_t*>(base)[off] = to16<BF16>(f);
}

// f rounded to the storage dtype, as a float
template <bool BF16>
FSIG_LIN_HD float round16(float f) {
    return from16<BF16>(to16<BF16>(f));
}

// ---- the feature map ---------------------------------------------------------------------------------

// relu or elu + 1 (NaN stays NaN: no comparison is true for it)
template <bool COS>
FSIG_LIN_HD float phi(float x) {
    if (COS) return x <= 0.f ? 0.f : x;
    return x > 0.f ? 1.f + x : expf(x);
}
template <bool COS>
FSIG_LIN_HD float phi_grad(float x) {
    if (x != x) return x;
    if (COS) return x > 0.f ? 1.f : 0.f;
    return x > 0.f ? 1.f : expf(x);
}
// max(x, floor) keeping a NaN x
FSIG_LIN_HD float floor_max(float x, float floor) { return x != x ? x : (x > floor ? x : floor); }

// ---- one block ---------------------------------------------------------------------------------------

struct BlockId {
    int seg, slice, head, b;
};

// Block index = ((b · heads + head) · slices + slice) · nseg + seg (grid.x only: no 65535 limit).
FSIG_LIN_HD BlockId decode_block(int64_t bid, int nseg, int slices, int heads) {
    BlockId id;
    id.seg = int(bid % nseg);
    bid /= nseg;
    id.slice = int(bid % slices);
    bid /= slices;
    id.head = int(bid % heads);
    id.b = int(bid / heads);
    return id;
}

template <int Role>
FSIG_LIN_HD int block_heads(const LinParams& p) {
    return Role == kDv || Role == kDk ? p.heads_k : p.heads_q;
}

// Rows and columns of one chunk: first index, count, and the position (δ for queries, j for keys) of
// index 0 of the range.
struct Chunk {
    int r0 = 0, nr = 0, c0 = 0, nc = 0;
    int rpos0 = 0, cpos0 = 0;
};

FSIG_LIN_HD int imin(int a, int b) { return a < b ? a : b; }
FSIG_LIN_HD int imax(int a, int b) { return a > b ? a : b; }

// Causal chunk t: keys [tC, tC + C) and the queries with δ_i in that range.
FSIG_LIN_HD void causal_chunk(const LinParams& p, int t, bool reverse, Chunk* ch) {
    const int off = p.seq_k - p.seq_q, j0 = t * kC;
    const int nk = imin(kC, p.seq_k - j0);
    const int i0 = imax(j0 - off, 0), i1 = imin(j0 + kC - off, p.seq_q), nq = imax(i1 - i0, 0);
    if (!reverse) ch->r0 = i0, ch->nr = nq, ch->rpos0 = i0 + off, ch->c0 = j0, ch->nc = nk, ch->cpos0 = j0;
    else ch->r0 = j0, ch->nr = nk, ch->rpos0 = j0, ch->c0 = i0, ch->nc = nq, ch->cpos0 = i0 + off;
}

#if defined(FSIG_LIN_DEVICE_CODE)

// What a side of the primitive loads (see the header comment).
// kQn, kGn: × n1 (the first factor of 1/n); kGs, kQq: × n2 (the second) — see fill_info.
enum Kind : int { kQf, kQn, kKf, kV, kG, kGn, kVs, kGs, kKq, kQq };

FSIG_LIN_HD bool needs_stats(int kind) { return kind == kQn || kind == kG || kind == kGn || kind == kGs || kind == kQq; }

template <int Role>
struct Kinds {
    static constexpr int A = Role == kFwd || Role == kStats ? kQf : Role == kDq ? kG : Role == kDv ? kKf : kV;
    static constexpr int B = Role == kFwd || Role == kStats ? kKf : Role == kDq ? kV : Role == kDv ? kQn : kGn;
    static constexpr int U = Role == kFwd || Role == kStats ? kVs : Role == kDq ? kKq : Role == kDv ? kGs : kQq;
};

FSIG_LIN_HD int64_t row_off(const LinTensor& t, int b, int pos, int h) {
    return int64_t(b) * t.sb + int64_t(pos) * t.sr + int64_t(h) * t.sh;
}

// The fp32 words at the start of dq's row (b, i, h): scratch for the row statistics (backward only).
FSIG_LIN_HD float* stats_row(const LinParams& p, int b, int i, int h) {
    return reinterpret_cast<float*>(static_cast<uint16_t*>(p.dq.data) + row_off(p.dq, b, i, h));
}

// 16-byte groups of the source row behind an operand row of kind `kind`: d (features, v, dO), 32 (value
// slices) or the q-dim slice's columns
template <int D, bool COS>
__host__ __device__ constexpr int source_groups(int kind) {
    return kind == kVs || kind == kGs ? kValSlice / 8 : kind == kKq || kind == kQq ? Dims<D, COS>::QSlice / 8 : D / 8;
}

// Group g (8 elements, one 16-byte load: strides and bases are multiples of 8 elements, DESIGN §3) of
// the source row of the operand row `kind` at index idx of head h, as raw 16-bit values; zeros where not
// valid (nothing read). A thread fetches all its groups of a chunk before staging any (load in run_block),
// so that their memory latencies overlap.
template <int D, bool COS>
__device__ __forceinline__ uint4 fetch8(const LinParams& p, int kind, int b, int h, int idx, int g, int slice,
                                        bool valid) {
    if (!valid) return make_uint4(0u, 0u, 0u, 0u);
    const bool qslice = kind == kKq || kind == kQq;
    const LinTensor& t = kind == kKf || kind == kKq ? p.k
                         : kind == kV || kind == kVs ? p.v
                         : kind == kG || kind == kGn || kind == kGs ? p.dout
                                                                    : p.q;
    const int col = 8 * g + (kind == kVs || kind == kGs ? slice * kValSlice : qslice ? slice * Dims<D, COS>::QSlice : 0);
    return *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(t.data) + row_off(t, b, idx, h) + col);
}

// Group g of an operand row of kind `kind` from its fetched values `raw`, transformed and written into the
// operand row dst (16-bit): features write φ(x)·sin θ at 8g and φ(x)·cos θ at D + 8g (cosFormer), the
// q-dim slice's u the halves at 8g and QSlice + 8g; kQn, kGn are scaled by n1, kGs, kQq by n2 (fill_info).
// valid = false: zeros (φ(0) is 1 for elu+1, so not from raw's zeros).
// info = that row's fill_info values at stride kC.
template <int D, bool COS, bool BF16>
__device__ __forceinline__ void stage8(int kind, uint4 raw, int g, const float* info, uint16_t* dst, bool valid) {
    using Dm = Dims<D, COS>;
    const bool feature = kind == kQf || kind == kQn || kind == kKf;
    const bool qslice = kind == kKq || kind == kQq;
    const bool mapped = feature || qslice;  // φ and the angles apply
    float x[8];
    if (valid) {
        unpack8<BF16>(raw, x);
        const float scale = kind == kQn || kind == kGn ? info[2 * kC] : kind == kGs || kind == kQq ? info[4 * kC] : 1.f;
FSIG_LIN_UNROLL
        for (int e = 0; e < 8; ++e) x[e] = (mapped ? phi<COS>(x[e]) : x[e]) * scale;
    } else {
FSIG_LIN_UNROLL
        for (int e = 0; e < 8; ++e) x[e] = 0.f;
    }
    auto put = [&](int at, float factor) {
        uint4 packed;
        packed.x = uint32_t(to16<BF16>(x[0] * factor)) | uint32_t(to16<BF16>(x[1] * factor)) << 16;
        packed.y = uint32_t(to16<BF16>(x[2] * factor)) | uint32_t(to16<BF16>(x[3] * factor)) << 16;
        packed.z = uint32_t(to16<BF16>(x[4] * factor)) | uint32_t(to16<BF16>(x[5] * factor)) << 16;
        packed.w = uint32_t(to16<BF16>(x[6] * factor)) | uint32_t(to16<BF16>(x[7] * factor)) << 16;
        *reinterpret_cast<uint4*>(dst + at) = packed;
    };
    if (COS && mapped) {
        const int half = feature ? D : Dm::QSlice;
        put(8 * g, valid ? info[0] : 0.f);
        put(half + 8 * g, valid ? info[kC] : 0.f);
    } else {
        put(8 * g, 1.f);
    }
}

// A thread's 16-byte groups of one operand of a chunk: groups e = tid + i·kThreads of its kC·n (row e / n,
// group e mod n of that row).
template <int D, bool COS>
__host__ __device__ constexpr int groups_per_thread(int kind) {
    return (kC * source_groups<D, COS>(kind) + kThreads - 1) / kThreads;
}

// Fetches them for the operand rows idx0 + r, r < count, of head h (zeros past count; nothing read unless
// `enabled`).
template <int D, bool COS, int kKind>
__device__ __forceinline__ void fetch_groups(const LinParams& p, uint4 (&raw)[groups_per_thread<D, COS>(kKind)],
                                             int tid, int b, int h, int idx0, int count, int slice, bool enabled) {
    constexpr int n = source_groups<D, COS>(kKind);
FSIG_LIN_UNROLL
    for (int i = 0; i < groups_per_thread<D, COS>(kKind); ++i) {
        const int e = tid + i * kThreads, r = e / n;
        raw[i] = fetch8<D, COS>(p, kKind, b, h, idx0 + r, e - r * n, slice, enabled && e < kC * n && r < count);
    }
}

// ... and stages them into the operand tile dst (row stride ld) with the rows' fill_info values `info`.
template <int D, bool COS, bool BF16, int kKind>
__device__ __forceinline__ void stage_groups(const uint4 (&raw)[groups_per_thread<D, COS>(kKind)], int tid,
                                             const float* info, uint16_t* dst, int ld, int count) {
    constexpr int n = source_groups<D, COS>(kKind);
FSIG_LIN_UNROLL
    for (int i = 0; i < groups_per_thread<D, COS>(kKind); ++i) {
        const int e = tid + i * kThreads, r = e / n;
        if (e < kC * n) stage8<D, COS, BF16>(kKind, raw[i], e - r * n, info + r, dst + r * ld, r < count);
    }
}

// info[·kC + x] of row or column x: [0] sin θ, [1] cos θ; from the (b, i, h) replica `rep` when the side
// needs them: [3] s, and 1/n as two factors, [2] n1 = 2^⌊e/2⌋ and [4] n2 = the rest (1/n = m·2^e). kDv and
// kDk put n1 into one 16-bit operand and n2 into the other: 1/n alone would overflow fp16 where ε binds
// (1/ε = 10^6 times a query's features) although every product it scales, q̃·k̃ / n, stays ≤ 1 there.
template <int D, bool COS>
__device__ __forceinline__ void fill_info(const LinParams& p, float* info, int x, int pos, bool stats, int b, int i,
                                          int h, int rep) {
    if (COS) {
        // θ = π · pos / 2M, |θ| ≤ π/2. The argument is one fp64 product rounded to fp32 (half turns < 1/2:
        // off by ≤ 2^-26, θ by ≤ 5e-8), sin and cos by sincospif (≤ 1 ulp, no slow-path reduction): absolute
        // errors ≈ 1e-7, so a score moves by ≈ 1e-7·|φ(q)|·|φ(k)|, far below what rounding its 16-bit features
        // does. fp64 sincospi put 32 DFMA and 10 DMUL (SASS) before every chunk step's first barrier.
        const float half_turns = float(double(pos) * p.angle);
#if defined(__CUDA_ARCH__)
        float sn, cs;
        sincospif(half_turns, &sn, &cs);
#else
        const float sn = float(std::sin(3.14159265358979323846 * double(half_turns))),
                    cs = float(std::cos(3.14159265358979323846 * double(half_turns)));
#endif
        info[x] = sn;
        info[kC + x] = cs;
    }
    if (stats) {
        const float* st = stats_row(p, b, i, h) + rep * Dims<D, COS>::kRepFloats;
        int e = 0;
        const float m = frexpf(st[0], &e);  // st[0] = 1/n > 0, finite
        const int e1 = e >= 0 ? e / 2 : -((1 - e) / 2);  // ⌊e/2⌋
        info[2 * kC + x] = ldexpf(1.f, e1);
        info[3 * kC + x] = st[1];
        info[4 * kC + x] = ldexpf(m, e - e1);
    }
}

// For values of largest magnitude mx: the power of two that brings them below 2^14 (fp16 cannot
// overflow, and scaling by it is exact); its inverse goes to *up when `store`. NaN and inf keep 2^0.
__device__ __forceinline__ float pow2_scale(float mx, float* up, bool store) {
    int ex = 14;
    if (mx > 0.f && mx <= 3.4e38f) frexpf(mx, &ex);  // mx < 2^ex
    ex = ex < -100 ? -100 : ex;                       // 2^(14 - ex) stays finite
    if (store) *up = ldexpf(1.f, ex - 14);
    return ldexpf(1.f, 14 - ex);
}

// A chunk step's parts: which products run (see run_block).
struct Step {
    bool rows = false;    // this chunk's rows produce output: the inter part (A·S)
    bool intra = false;   // ... and the intra part (P·U; causal: the chunk's own columns)
    bool update = false;  // the chunk's columns enter the state
    bool publish = false; // the state is written to shared memory for a later chunk's rows
};

template <int Role, int D, bool COS, bool BF16>
__device__ __forceinline__ void run_block(const LinParams& p, unsigned char* smem) {
    using G = Cfg<Role, D, COS>;
    using Dm = Dims<D, COS>;
    using Kd = Kinds<Role>;
    using M = Mma<std::conditional_t<BF16, __nv_bfloat16, __half>>;
    constexpr int K = G::K, kT = G::kKTiles;
    constexpr bool kRev = G::kReverse;
    const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
    const int mt = warp & 1, nh = warp >> 1;  // this warp's P / O tile: rows 16·mt, columns 16·nh
    const BlockId id = decode_block(int64_t(blockIdx.x), p.nseg, G::kSlices, block_heads<Role>(p));
    const int b = id.b, slice = id.slice, row_head = id.head;
    const int off = p.seq_k - p.seq_q;
    const int ngroups = kRev ? p.group : 1;
    uint16_t* A = reinterpret_cast<uint16_t*>(smem + G::kA);
    uint16_t* Bm = reinterpret_cast<uint16_t*>(smem + G::kB);
    uint16_t* U = reinterpret_cast<uint16_t*>(smem + G::kUo);
    uint16_t* P = reinterpret_cast<uint16_t*>(smem + G::kP);
    uint16_t* Shi = reinterpret_cast<uint16_t*>(smem + G::kShi);
    uint16_t* Slo = reinterpret_cast<uint16_t*>(smem + G::kSlo);
    float* O = reinterpret_cast<float*>(smem + G::kO);
    float* z = reinterpret_cast<float*>(smem + G::kZ);
    float* w = reinterpret_cast<float*>(smem + G::kW);
    float* rinfo = reinterpret_cast<float*>(smem + G::kRow);
    float* cinfo = reinterpret_cast<float*>(smem + G::kCol);
    float* scale = reinterpret_cast<float*>(smem + G::kScale);
    float* rowmax = reinterpret_cast<float*>(smem + G::kRowMax);
    float* rowscale = reinterpret_cast<float*>(smem + G::kRowScale);
    const uint32_t sA = smem_addr(A), sB = smem_addr(Bm), sU = smem_addr(U), sP = smem_addr(P);
    const uint32_t sShi = smem_addr(Shi), sSlo = smem_addr(Slo);
    const frag::RowCol fa = frag::ldsm_a(lane), fb = frag::ldsm_b(lane), fbt = frag::ldsm_bt(lane),
                       fat = frag::ldsm_at(lane);
    const int rep = Role == kDq ? slice : 0;  // which (1/n, s) replica this kernel reads

    float sacc[kT][4];  // the state, rows 16·m.., columns 8·warp.. (fp32 for the whole scan)
    float oacc[2][4];   // O of this warp's tile
    float den = 0.f;    // quarter of den of row tid / 4 (kDen roles)
FSIG_LIN_UNROLL
    for (int m = 0; m < kT; ++m) sacc[m][0] = sacc[m][1] = sacc[m][2] = sacc[m][3] = 0.f;
    for (int e = tid; e < K; e += kThreads) z[e] = 0.f;
    if (tid < kU) w[tid] = 0.f;

    auto col_head = [&](int g) { return kRev ? row_head * p.group + g : row_head / p.group; };

    // The 16-bit operand tiles (zero past the chunk's end, so that ragged rows and columns contribute exact
    // zeros). Each thread first fetches every 16-byte group it stages, all in flight at once, then fills the
    // row and column information (its sines, cosines and the backward's row statistics: their latency
    // overlaps the fetches'), then stages after the barrier. (Fetched and staged one group at a time, as in
    // version 2, a chunk waited out up to 9 memory round trips in a row.)
    auto load = [&](const Chunk& ch, bool rows, bool cols, int g) {
        const int hc = col_head(g);
        uint4 ra[groups_per_thread<D, COS>(Kd::A)], rb[groups_per_thread<D, COS>(Kd::B)],
            ru[groups_per_thread<D, COS>(Kd::U)];
        fetch_groups<D, COS, Kd::A>(p, ra, tid, b, row_head, ch.r0, ch.nr, slice, rows);
        fetch_groups<D, COS, Kd::B>(p, rb, tid, b, hc, ch.c0, ch.nc, slice, cols);
        fetch_groups<D, COS, Kd::U>(p, ru, tid, b, hc, ch.c0, ch.nc, slice, cols);
        if (tid < kC) {
            if (rows && tid < ch.nr)
                fill_info<D, COS>(p, rinfo, tid, ch.rpos0 + tid, needs_stats(Kd::A), b, ch.r0 + tid, row_head, rep);
        } else if (tid < 2 * kC) {
            const int c = tid - kC;
            if (c < ch.nc)
                fill_info<D, COS>(p, cinfo, c, ch.cpos0 + c, needs_stats(Kd::B) || needs_stats(Kd::U), b, ch.c0 + c,
                                  hc, rep);
        }
        __syncthreads();
        if (rows) stage_groups<D, COS, BF16, Kd::A>(ra, tid, rinfo, A, G::kLdK, ch.nr);
        if (cols) {
            stage_groups<D, COS, BF16, Kd::B>(rb, tid, cinfo, Bm, G::kLdK, ch.nc);
            stage_groups<D, COS, BF16, Kd::U>(ru, tid, cinfo, U, G::kLdU, ch.nc);
        }
        __syncthreads();
    };

    // O = A·S (inter, g = 0) and P = A·Bᵀ masked (intra), sharing each A fragment; the state update
    // S += Bᵀ U in registers; den's inter part A·z. S and z in shared memory hold the state before
    // this chunk and are not written here.
    auto products = [&](const Chunk& ch, bool inter, bool intra, bool update) {
        float pacc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
        // A·S_lo in its own accumulators: with hi and lo into oacc, each k-step made two dependent mma in
        // a chain of 2·kT (32 in cosFormer d = 128's kFwd, kStats, kDv; ≈ 30 cycles each by published
        // microbenchmarks)
        float olo[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
        if (inter || intra) {
            // kFwd and kStats (den's registers) take 8 k-steps at a time: fully unrolled, ptxas hoisted enough
            // fragments to spill the cosFormer d = 128 forward on sm_90a (8 bytes); 8 at a time in every role
            // spilled kDv on sm_80 (24)
            constexpr int kStepsAtOnce = G::kDen && kT > 8 ? 8 : kT;
            static_assert(kT % kStepsAtOnce == 0, "the k-steps in whole groups");
FSIG_LIN_UNROLL_1
            for (int k0 = 0; k0 < kT; k0 += kStepsAtOnce) {
FSIG_LIN_UNROLL
                for (int k1 = 0; k1 < kStepsAtOnce; ++k1) {
                    const int ks = k0 + k1;
                    uint32_t a[4];
                    ldsm_x4(a, sA + 2 * ((16 * mt + fa.row) * G::kLdK + 16 * ks + fa.col));
                    if (intra) {
                        uint32_t bb[4];
                        ldsm_x4(bb, sB + 2 * ((16 * nh + fb.row) * G::kLdK + 16 * ks + fb.col));
                        M::run(pacc[0], a, bb[0], bb[1]);
                        M::run(pacc[1], a, bb[2], bb[3]);
                    }
                    if (inter) {
                        const uint32_t s_off = 2 * ((16 * ks + fbt.row) * G::kLdU + 16 * nh + fbt.col);
                        uint32_t hi[4], lo[4];
                        ldsm_x4_trans(hi, sShi + s_off);
                        ldsm_x4_trans(lo, sSlo + s_off);
                        M::run(oacc[0], a, hi[0], hi[1]);
                        M::run(oacc[1], a, hi[2], hi[3]);
                        M::run(olo[0], a, lo[0], lo[1]);
                        M::run(olo[1], a, lo[2], lo[3]);
                    }
                }
            }
            if (inter) {
FSIG_LIN_UNROLL
                for (int j = 0; j < 2; ++j)
FSIG_LIN_UNROLL
                    for (int e = 0; e < 4; ++e) {
                        oacc[j][e] = (oacc[j][e] + olo[j][e]) * scale[2 * nh + j];
                        if (G::kOffset) {
                            const float sr = Role == kDq ? rinfo[3 * kC + 16 * mt + frag::acc_row(lane, e)] : 1.f;
                            oacc[j][e] -= sr * w[16 * nh + 8 * j + frag::acc_col(lane, e)];
                        }
                    }
            }
            if (intra) {  // the pair offset and the mask, then this warp's share of the row maxima
                float mx[2] = {0.f, 0.f};
FSIG_LIN_UNROLL
                for (int j = 0; j < 2; ++j)
FSIG_LIN_UNROLL
                    for (int e = 0; e < 4; ++e) {
                        const int r = 16 * mt + frag::acc_row(lane, e), c = 16 * nh + 8 * j + frag::acc_col(lane, e);
                        const int rpos = ch.rpos0 + r, cpos = ch.cpos0 + c;
                        const bool ok = r < ch.nr && c < ch.nc && (kRev ? rpos <= cpos : cpos <= rpos);
                        float pv = pacc[j][e];
                        if (G::kOffset) pv -= Role == kDq ? rinfo[3 * kC + r] : cinfo[3 * kC + c] * cinfo[2 * kC + c];
                        pacc[j][e] = ok ? pv : 0.f;
                        mx[e >> 1] = fmaxf(mx[e >> 1], fabsf(pacc[j][e]));
                    }
FSIG_LIN_UNROLL
                for (int h2 = 0; h2 < 2; ++h2) {  // the 4 lanes of a row
                    mx[h2] = fmaxf(mx[h2], __shfl_xor_sync(0xffffffffu, mx[h2], 1));
                    mx[h2] = fmaxf(mx[h2], __shfl_xor_sync(0xffffffffu, mx[h2], 2));
                    if ((lane & 3) == 0) rowmax[nh * kC + 16 * mt + frag::acc_row(lane, 2 * h2)] = mx[h2];
                }
            }
        }
        if (G::kDen && inter) {  // a_r·z: 4 threads per row, 16-byte groups 4i + tid % 4, 4 partial sums
            const int r = tid >> 2;
            float acc[4] = {0.f, 0.f, 0.f, 0.f};
FSIG_LIN_UNROLL
            for (int i = 0; i < K / 32; ++i) {
                const int k = 8 * (4 * i + (tid & 3));
                float a8[8];
                unpack8<BF16>(*reinterpret_cast<const uint4*>(A + r * G::kLdK + k), a8);
                const float4 z0 = *reinterpret_cast<const float4*>(z + k),
                             z1 = *reinterpret_cast<const float4*>(z + k + 4);
                acc[0] += a8[0] * z0.x + a8[4] * z1.x;
                acc[1] += a8[1] * z0.y + a8[5] * z1.y;
                acc[2] += a8[2] * z0.z + a8[6] * z1.z;
                acc[3] += a8[3] * z0.w + a8[7] * z1.w;
            }
            den += (acc[0] + acc[1]) + (acc[2] + acc[3]);
        }
        if (update) {
            uint32_t ub[4];  // U rows 0..31, columns 8·warp..: b0, b1 of k-step 0, then of k-step 1
            ldsm_x4_trans(ub, sU + 2 * (lane * G::kLdU + 8 * warp));
FSIG_LIN_UNROLL
            for (int m = 0; m < kT; ++m)
FSIG_LIN_UNROLL
                for (int ks = 0; ks < 2; ++ks) {
                    uint32_t a[4];
                    ldsm_x4_trans(a, sB + 2 * ((16 * ks + fat.row) * G::kLdK + 16 * m + fat.col));
                    M::run(sacc[m], a, ub[2 * ks], ub[2 * ks + 1]);
                }
        }
        __syncthreads();  // the row maxima
        if (intra) {  // P to 16 bits, each row scaled by a power of two from its largest magnitude
FSIG_LIN_UNROLL
            for (int h2 = 0; h2 < 2; ++h2) {
                const int r = 16 * mt + frag::acc_row(lane, 2 * h2);
                const float down = pow2_scale(fmaxf(rowmax[r], rowmax[kC + r]), &rowscale[r], nh == 0 && (lane & 3) == 0);
FSIG_LIN_UNROLL
                for (int j = 0; j < 2; ++j) {
                    const int c = 16 * nh + 8 * j + frag::acc_col(lane, 0);
                    *reinterpret_cast<uint32_t*>(P + r * G::kLdC + c) =
                        M::pack(pacc[j][2 * h2] * down, pacc[j][2 * h2 + 1] * down);
                }
            }
        }
        __syncthreads();
    };

    // O += P·U (intra), den's intra part rowsum P, z += Σ b, w += Σ (s) u.
    auto accumulate = [&](const Chunk& ch, bool intra, bool update) {
        if (intra) {
            float pu[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
FSIG_LIN_UNROLL
            for (int ks = 0; ks < 2; ++ks) {
                uint32_t a[4], ub[4];
                ldsm_x4(a, sP + 2 * ((16 * mt + fa.row) * G::kLdC + 16 * ks + fa.col));
                ldsm_x4_trans(ub, sU + 2 * ((16 * ks + fbt.row) * G::kLdU + 16 * nh + fbt.col));
                M::run(pu[0], a, ub[0], ub[1]);
                M::run(pu[1], a, ub[2], ub[3]);
            }
FSIG_LIN_UNROLL
            for (int j = 0; j < 2; ++j)
FSIG_LIN_UNROLL
                for (int e = 0; e < 4; ++e) oacc[j][e] += pu[j][e] * rowscale[16 * mt + frag::acc_row(lane, e)];
            if (G::kDen) {  // rowsum P: 8 columns per thread
                const int r = tid >> 2;
                float p8[8];
                unpack8<BF16>(*reinterpret_cast<const uint4*>(P + r * G::kLdC + 8 * (tid & 3)), p8);
                den += (((p8[0] + p8[1]) + (p8[2] + p8[3])) + ((p8[4] + p8[5]) + (p8[6] + p8[7]))) * rowscale[r];
            }
        }
        if (G::kDen && update)  // z += Σ_c b_c: two adjacent features per thread, one 32-bit load per row
            for (int k = 2 * tid; k < K; k += 2 * kThreads) {
                float acc[2][2] = {{0.f, 0.f}, {0.f, 0.f}};  // [feature][row parity]: shorter add chains
FSIG_LIN_UNROLL
                for (int c = 0; c < kC; ++c) {
                    float first, second;
                    unpack2<BF16>(*reinterpret_cast<const uint32_t*>(Bm + c * G::kLdK + k), first, second);
                    acc[0][c & 1] += first;
                    acc[1][c & 1] += second;
                }
                z[k] += acc[0][0] + acc[0][1];
                z[k + 1] += acc[1][0] + acc[1][1];
            }
        if (G::kOffset && update && tid < kU) {
            float acc = 0.f;
            for (int c = 0; c < ch.nc; ++c)
                acc += (Role == kDk ? cinfo[3 * kC + c] * cinfo[2 * kC + c] : 1.f) * load16<BF16>(U, c * G::kLdU + tid);
            w[tid] += acc;
        }
        __syncthreads();
    };

    // The state to shared memory as scaled hi + lo 16-bit terms (this warp's 8 columns: the scale is a
    // power of two from their largest magnitude, so scaling is exact and fp16 cannot overflow); the
    // chunk's O (and den) to shared memory for the row writer.
    auto publish = [&](bool state, bool rows) {
        if (state) {
            float mx = 0.f;
FSIG_LIN_UNROLL
            for (int m = 0; m < kT; ++m)
FSIG_LIN_UNROLL
                for (int e = 0; e < 4; ++e) mx = fmaxf(mx, fabsf(sacc[m][e]));
            for (int x = 16; x > 0; x >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, x));
            const float down = pow2_scale(mx, &scale[warp], lane == 0);
FSIG_LIN_UNROLL
            for (int m = 0; m < kT; ++m)
FSIG_LIN_UNROLL
                for (int h2 = 0; h2 < 2; ++h2) {
                    const int k = 16 * m + frag::acc_row(lane, 2 * h2), c = 8 * warp + frag::acc_col(lane, 0);
                    const float x0 = sacc[m][2 * h2] * down, x1 = sacc[m][2 * h2 + 1] * down;
                    const float h0 = round16<BF16>(x0), h1 = round16<BF16>(x1);
                    *reinterpret_cast<uint32_t*>(Shi + k * G::kLdU + c) = M::pack(h0, h1);
                    *reinterpret_cast<uint32_t*>(Slo + k * G::kLdU + c) = M::pack(x0 - h0, x1 - h1);
                }
        }
        if (rows) {
FSIG_LIN_UNROLL
            for (int j = 0; j < 2; ++j)
FSIG_LIN_UNROLL
                for (int e = 0; e < 4; ++e)
                    O[(16 * mt + frag::acc_row(lane, e)) * G::kLdO + 16 * nh + 8 * j + frag::acc_col(lane, e)] = oacc[j][e];
            if (G::kDen) {
                den += __shfl_xor_sync(0xffffffffu, den, 1);
                den += __shfl_xor_sync(0xffffffffu, den, 2);
                if ((tid & 3) == 0) O[(tid >> 2) * G::kLdO + kU] = den;
            }
        }
        __syncthreads();
    };

    // rows of the chunk from O to global memory
    auto finalize = [&](const Chunk& ch) {
        if (Role == kFwd) {
            for (int e = tid; e < ch.nr * kU; e += kThreads) {
                const int r = e / kU, u = e - r * kU;
                const float val = O[r * G::kLdO + u] / floor_max(O[r * G::kLdO + kU], p.epsilon);
                store16<BF16>(p.out.data, row_off(p.out, b, ch.r0 + r, row_head) + slice * kValSlice + u, val);
            }
        } else if (Role == kStats) {
            if (tid < ch.nr) {
                const int i = ch.r0 + tid;
                const int64_t go = row_off(p.dout, b, i, row_head) + slice * kValSlice;
                float dot = 0.f;
                for (int u = 0; u < kU; ++u) dot += load16<BF16>(p.dout.data, go + u) * O[tid * G::kLdO + u];
                float* st = stats_row(p, b, i, row_head);
                st[slice] = dot;
                if (slice == 0) st[Dm::kValSlices] = O[tid * G::kLdO + kU];
            }
        } else if (Role == kDv) {
            for (int e = tid; e < ch.nr * kU; e += kThreads) {
                const int r = e / kU, u = e - r * kU;
                store16<BF16>(p.dv.data, row_off(p.dv, b, ch.r0 + r, row_head) + slice * kValSlice + u,
                              O[r * G::kLdO + u]);
            }
        } else {  // kDk, kDq: dx = φ'(x) ∘ (sin θ dF_sin + cos θ dF_cos) over the slice's columns (kDq: / n)
            const LinTensor& x = Role == kDk ? p.k : p.q;
            const LinTensor& dx = Role == kDk ? p.dk : p.dq;
            for (int e = tid; e < ch.nr * Dm::QSlice; e += kThreads) {
                const int r = e / Dm::QSlice, c = e - r * Dm::QSlice;
                const int col = slice * Dm::QSlice + c;
                const float xv = load16<BF16>(x.data, row_off(x, b, ch.r0 + r, row_head) + col);
                float df = COS ? rinfo[r] * O[r * G::kLdO + c] + rinfo[kC + r] * O[r * G::kLdO + Dm::QSlice + c]
                               : O[r * G::kLdO + c];
                if (Role == kDq) df *= rinfo[2 * kC + r] * rinfo[4 * kC + r];
                store16<BF16>(dx.data, row_off(dx, b, ch.r0 + r, row_head) + col, phi_grad<COS>(xv) * df);
            }
        }
        __syncthreads();
    };

    // One chunk: for each column group, operands in, products, accumulation; then publish and write.
    auto chunk_step = [&](const Chunk& ch, const Step& st) {
FSIG_LIN_UNROLL
        for (int j = 0; j < 2; ++j) oacc[j][0] = oacc[j][1] = oacc[j][2] = oacc[j][3] = 0.f;
        den = 0.f;
        // the column groups (GQA, kDv/kDk) matter only where columns are used
        const int groups = st.intra || st.update ? ngroups : 1;
        for (int g = 0; g < groups; ++g) {
            load(ch, st.rows && g == 0, st.intra || st.update, g);
            products(ch, st.rows && g == 0, st.intra, st.update);
            accumulate(ch, st.intra, st.update);
        }
        if (st.publish || st.rows) publish(st.publish, st.rows);
        if (st.rows) finalize(ch);
    };

    // The workspace's partial state of segment `seg` of this block's (slice, head, batch).
    auto partial_of = [&](int seg) {
        return p.partials + (int64_t(blockIdx.x) - id.seg + seg) * G::kPartialFloats;
    };
    auto save_partial = [&]() {
        float* dst = partial_of(id.seg);
FSIG_LIN_UNROLL
        for (int m = 0; m < kT; ++m)
FSIG_LIN_UNROLL
            for (int e = 0; e < 4; ++e) dst[(4 * m + e) * kThreads + tid] = sacc[m][e];
        if (G::kDen)
            for (int k = tid; k < K; k += kThreads) dst[G::kPartialZ + k] = z[k];
        if (G::kOffset && tid < kU) dst[G::kPartialW + tid] = w[tid];
    };
    // the state before this segment: the partials of segments [0, nparts) added in order
    auto load_prefix = [&](int nparts) {
        for (int s = 0; s < nparts; ++s) {
            const float* src = partial_of(s);
FSIG_LIN_UNROLL
            for (int m = 0; m < kT; ++m)
FSIG_LIN_UNROLL
                for (int e = 0; e < 4; ++e) sacc[m][e] += src[(4 * m + e) * kThreads + tid];
            if (G::kDen)
                for (int k = tid; k < K; k += kThreads) z[k] += src[G::kPartialZ + k];
            if (G::kOffset && tid < kU) w[tid] += src[G::kPartialW + tid];
        }
    };

    __syncthreads();  // z
    if (p.causal) {
        const int nchunks = (p.seq_k + kC - 1) / kC;
        const int per_seg = (nchunks + p.nseg - 1) / p.nseg;
        const int t_begin = id.seg * per_seg, t_end = imin(nchunks, t_begin + per_seg);
        if (t_begin >= t_end) return;  // a trailing segment with no chunk (segment 0 always has one)
        auto chunk_at = [&](int v, Chunk* ch) { causal_chunk(p, kRev ? nchunks - 1 - v : v, kRev, ch); };
        if (p.phase == kPartial) {  // this segment's chunks as state updates (no later segment reads the last one's)
            if (t_end == nchunks) return;
            for (int v = t_begin; v < t_end; ++v) {
                Chunk ch;
                chunk_at(v, &ch);
                Step st;
                st.update = true;
                chunk_step(ch, st);
            }
            save_partial();
            return;
        }
        if (!kRev && id.seg == 0 && off < 0) {  // query rows with δ_i < 0: no key
            const int nzero = imin(-off, p.seq_q);
            if (Role == kFwd)
                for (int e = tid; e < nzero * kU; e += kThreads)
                    store16<BF16>(p.out.data, row_off(p.out, b, e / kU, row_head) + slice * kValSlice + e % kU, 0.f);
            else if (Role == kStats)
                for (int i = tid; i < nzero; i += kThreads) {
                    float* st = stats_row(p, b, i, row_head);
                    st[slice] = 0.f;
                    if (slice == 0) st[Dm::kValSlices] = 0.f;
                }
            else if (Role == kDq)
                for (int e = tid; e < nzero * Dm::QSlice; e += kThreads)
                    store16<BF16>(p.dq.data, row_off(p.dq, b, e / Dm::QSlice, row_head) + slice * Dm::QSlice + e % Dm::QSlice,
                                  0.f);
        }
        // kRecompute scans from chunk 0; kCombine starts at its own chunks from the partials before them
        int v_first = 0;
        if (p.phase == kCombine) {
            load_prefix(id.seg);
            v_first = t_begin;
        }
        // the state before chunk t_begin is published before the first chunk with rows
        if (v_first == t_begin) publish(true, false);
        for (int v = v_first; v < t_end; ++v) {
            Chunk ch;
            chunk_at(v, &ch);
            Step st;
            st.rows = st.intra = v >= t_begin && ch.nr > 0;
            st.update = v + 1 < t_end;
            st.publish = st.update && v + 1 >= t_begin;
            chunk_step(ch, st);
        }
        return;
    }
    // non-causal: the whole state, then this segment's row chunks
    const int nrows = kRev ? p.seq_k : p.seq_q, ncols = kRev ? p.seq_q : p.seq_k;
    auto column_chunk = [&](int c0) {
        Chunk ch;
        ch.c0 = c0, ch.nc = imin(kC, ncols - c0), ch.cpos0 = kRev ? c0 + off : c0;
        return ch;
    };
    if (p.phase == kPartial) {  // this segment's share of the columns (possibly none: a zero partial)
        const int ncc = (ncols + kC - 1) / kC, per_c = (ncc + p.nseg - 1) / p.nseg;
        const int c_end = imin(ncc, (id.seg + 1) * per_c);
        for (int t = id.seg * per_c; t < c_end; ++t) {
            Step st;
            st.update = true;
            chunk_step(column_chunk(t * kC), st);
        }
        save_partial();
        return;
    }
    const int nrc = (nrows + kC - 1) / kC, per_seg = (nrc + p.nseg - 1) / p.nseg;
    const int t_begin = id.seg * per_seg, t_end = imin(nrc, t_begin + per_seg);
    if (t_begin >= t_end) return;
    if (p.phase == kCombine) {
        load_prefix(p.nseg);
        publish(true, false);
    } else {
        for (int c0 = 0; c0 < ncols; c0 += kC) {
            Step st;
            st.update = true;
            st.publish = c0 + kC >= ncols;
            chunk_step(column_chunk(c0), st);
        }
    }
    for (int t = t_begin; t < t_end; ++t) {
        Chunk ch;
        ch.r0 = t * kC, ch.nr = imin(kC, nrows - t * kC), ch.rpos0 = kRev ? ch.r0 : ch.r0 + off;
        Step st;
        st.rows = true;
        chunk_step(ch, st);
    }
}

// Between kStats and kDv: n_i = max(den_i, ε), s_i = [den_i > ε] (dO_i·num_i) / n_i, written as
// (1/n_i, s_i) at the start of every q-dim slice's columns of dq's row (row = (b · Nq + i) · Hq + h).
template <int D, bool COS>
__device__ __forceinline__ void reduce_row(const LinParams& p, int64_t row) {
    using Dm = Dims<D, COS>;
    const int h = int(row % p.heads_q);
    row /= p.heads_q;
    const int i = int(row % p.seq_q), b = int(row / p.seq_q);
    float* st = stats_row(p, b, i, h);
    float dot = 0.f;
    for (int s = 0; s < Dm::kValSlices; ++s) dot += st[s];
    const float den = st[Dm::kValSlices];
    const float n = floor_max(den, p.epsilon);
    const float s = den > p.epsilon ? dot / n : 0.f;
    for (int k = 0; k < Dm::kQSlices; ++k) {
        st[k * Dm::kRepFloats] = 1.f / n;
        st[k * Dm::kRepFloats + 1] = s;
    }
}

#endif  // FSIG_LIN_DEVICE_CODE

// Segments per (slice, head, batch): enough thread blocks for a large GPU (kTargetBlocks = 2 per SM of an
// H100), at least 8 chunks per segment, at most 16 segments. A function of the problem alone.
// rows: the row count of the kernel (Nq, or Nk for kDv/kDk). Without a workspace a non-causal segment
// recomputes the whole state, a causal one the state before its chunks (linear_params.h, Phase).
FSIG_LIN_HD int choose_segments(const LinParams& p, int slices, int heads, int rows) {
    const int64_t base = int64_t(slices) * heads * p.batch;
    const int units = p.causal ? (p.seq_k + kC - 1) / kC : (rows + kC - 1) / kC;
    int64_t want = (kTargetBlocks + base - 1) / base;
    const int64_t cap = units / 8 > 1 ? units / 8 : 1;
    if (want > cap) want = cap;
    if (want > 16) want = 16;
    return want < 1 ? 1 : int(want);
}

}  // namespace fsig::cuda::lin
