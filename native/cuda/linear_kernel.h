// CUDA linear attention (cosFormer, elu+1; DESIGN.md §4), forward and backward, written as one thread
// block's program of barrier-separated phases so that the same code runs on the GPU (DeviceExec: the
// phase body on threadIdx.x, then __syncthreads) and on the CPU (HostExec: the body for every thread
// index in turn — tests/gpu/test_linear_emulation.cpp replays whole grids that way against the fp64
// reference). Plain C++ outside nvcc; no tensor cores in this first version (fp32 FMA on shared memory).
//
// Notation as native/cpu/linear.h: feature rows qf_i = φ(q_i)·[sin θ_i, cos θ_i] (cosFormer, θ = π p / 2M,
// p_i = δ_i = i + Nk − Nq, p_j = j) or φ(q_i) (elu+1), F = 2d or d floats; va_j = [v_j, 1];
// backward rows ga_i = [dO_i / n_i, −r_i], n_i = max(den_i, ε), r_i = [den_i > ε] (dO_i·num_i) / n_i².
//
// One primitive serves all five kernels: rows X against columns Y,
//     out_r = Σ_{c allowed for r} (a_r · b_c) u_c,      a, b: K-wide feature rows, u: 32-wide value rows,
// computed chunk by chunk (C = 32 positions) as an inter-chunk part a_r·S with the running state
// S = Σ_{c in earlier chunks} b_c ⊗ u_c (K × 32, fp32, shared memory) and an exact intra-chunk part
// (P = A Bᵀ masked, then P U). The kernels differ in what a, b, u are and what is done with out:
//   kFwd   rows queries, a = qf, b = kf, u = v[32-column slice] (+ den column): out = num / max(den, ε)
//   kStats the same, writes Σ_slice dO·num and den as fp32 into dq's row (reduced by reduce_row)
//   kDv    rows keys (reverse scan), a = kf, b = qf, u = ga[slice]: dV = Σ_i (qf_i·kf_j) dO_i / n_i
//   kDk    rows keys (reverse), a = va, b = ga, u = qf[q-dim slice]: dkf_j = Σ_i (ga_i·va_j) qf_i
//   kDq    rows queries, a = ga, b = va, u = kf[q-dim slice]: dqf_i = Σ_j (ga_i·va_j) kf_j
// (ga_i·va_j = dP_ij = dO_i·v_j / n_i − r_i). dk, dq = φ'(x) ∘ (sin θ dF_sin + cos θ dF_cos).
// GQA: kDv/kDk columns are the queries of every head of the kv head's group, summed in the state and
// in the chunk. Causal: forward-direction chunk t holds keys [tC, tC + C) and the queries whose δ_i
// lies in that range (rows with δ_i < 0 see no key: 0); reverse-direction kernels visit the chunks last
// to first. Segments: a block scans the chunks before its own range as state updates only, in the same
// order as a block starting at chunk 0, so results do not depend on the segment count (bit for bit).
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
#else
#define FSIG_LIN_HD inline
#define FSIG_LIN_UNROLL
#endif

namespace fsig::cuda::lin {

constexpr int kC = 32;         // positions per chunk
constexpr int kThreads = 128;  // 4 warps
constexpr int kU = 32;         // value columns per block
constexpr int kValSlice = 32;  // kFwd, kStats, kDv: value columns per block

template <int D, bool COS>
struct Dims {
    static constexpr int F = COS ? 2 * D : D;        // feature width
    static constexpr int KAug = D + 8;               // [x, ±1 or −r, 0…], a multiple of 8
    static constexpr int QSlice = COS ? 16 : 32;     // kDq, kDk: columns of q/k per block (u = sin | cos halves)
    static constexpr int kValSlices = D / kValSlice; // stats slots before the den slot in a dq row
    static constexpr int kQSlices = D / QSlice;      // replicas of (n, r) in a dq row
    static constexpr int kRepFloats = QSlice / 2;    // fp32 spacing of the replicas (their slice's columns)
};

// Everything derived from (role, head dim, map) in one place: shared-memory layout in floats.
template <int Role, int D, bool COS>
struct Cfg {
    using Dm = Dims<D, COS>;
    static constexpr bool kReverse = Role == kDv || Role == kDk;  // rows are keys, columns queries
    static constexpr bool kAugmented = Role == kDq || Role == kDk;
    static constexpr int K = kAugmented ? Dm::KAug : Dm::F;
    static constexpr int kSlices = kAugmented ? Dm::kQSlices : Dm::kValSlices;
    static constexpr bool kDen = Role == kFwd || Role == kStats;
    static constexpr int kLdA = K + 1, kLdB = kC + 1, kLdP = kC + 1, kLdO = kU + 1;  // +1: no bank conflicts
    static constexpr int kA = 0;                      // A [kC][K] row features
    static constexpr int kB = kA + kC * kLdA;         // Bt [K][kC] column features, transposed
    static constexpr int kUo = kB + K * kLdB;         // U [kC][kU] column values
    static constexpr int kP = kUo + kC * kU;          // P [kC][kC]
    static constexpr int kO = kP + kC * kLdP;         // O [kC][kU + 1] (column kU: den)
    static constexpr int kS = kO + kC * kLdO;         // S [K][kU]
    static constexpr int kZ = kS + K * kU;            // z [K] = Σ b (den's state)
    static constexpr int kRow = kZ + K;               // row info [4][kC]: sin, cos, 1/n, r
    static constexpr int kCol = kRow + 4 * kC;        // column info [4][kC]
    static constexpr int kFloats = kCol + 4 * kC;
    static constexpr int kBytes = kFloats * 4;
    static_assert(K % 8 == 0, "the state update takes 8 state rows per warp");
    static_assert(kC == 32 && kThreads == 128 && kU == 32, "the phase mappings assume 4 warps of 32 lanes, C = 32");
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
FSIG_LIN_HD float load16(const void* base, int64_t off) {
    const uint16_t h = static_cast<const uint16_t*>(base)[off];
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
FSIG_LIN_HD void store16(void* base, int64_t off, float f) {
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
    static_cast<uint16_t*>(base)[off] = h;
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

// ---- executors -----------------------------------------------------------------------------------------

#if defined(__CUDACC__) || defined(FSIG_CUDA_EMULATION)
struct DeviceExec {
    template <class Body>
    __device__ __forceinline__ void phase(const Body& body) {
        body(int(threadIdx.x));
        __syncthreads();
    }
};
#endif

struct HostExec {
    bool reverse = false;  // thread indices last to first: a write-read hazard inside a phase changes bits
    template <class Body>
    void phase(const Body& body) {
        for (int i = 0; i < kThreads; ++i) body(reverse ? kThreads - 1 - i : i);
    }
};

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

// What a side of the primitive loads (see the header comment).
enum Kind : int { kQf, kKf, kVa, kGa, kVs, kGs, kKq, kQq };

FSIG_LIN_HD bool query_side(int kind) { return kind == kQf || kind == kGa || kind == kGs || kind == kQq; }
FSIG_LIN_HD bool needs_stats(int kind) { return kind == kGa || kind == kGs; }

template <int Role>
struct Kinds {
    static constexpr int A = Role == kFwd || Role == kStats ? kQf : Role == kDq ? kGa : Role == kDv ? kKf : kVa;
    static constexpr int B = Role == kFwd || Role == kStats ? kKf : Role == kDq ? kVa : Role == kDv ? kQf : kGa;
    static constexpr int U = Role == kFwd || Role == kStats ? kVs : Role == kDq ? kKq : Role == kDv ? kGs : kQq;
};

FSIG_LIN_HD int64_t row_off(const LinTensor& t, int b, int pos, int h) {
    return int64_t(b) * t.sb + int64_t(pos) * t.sr + int64_t(h) * t.sh;
}

// The fp32 words at the start of dq's row (b, i, h): scratch for the row statistics (backward only).
FSIG_LIN_HD float* stats_row(const LinParams& p, int b, int i, int h) {
    return reinterpret_cast<float*>(static_cast<uint16_t*>(p.dq.data) + row_off(p.dq, b, i, h));
}

// Element k of the feature / value row of kind `kind` at index idx (query i or key j) of head h;
// info = that row's [sin, cos, 1/n, r] at stride kC.
template <int D, bool COS, bool BF16>
FSIG_LIN_HD float element(const LinParams& p, int kind, int b, int h, int idx, int k, int slice, const float* info) {
    using Dm = Dims<D, COS>;
    switch (kind) {
        case kQf:
        case kKf: {
            const LinTensor& t = kind == kQf ? p.q : p.k;
            const int c = COS && k >= D ? k - D : k;
            const float f = phi<COS>(load16<BF16>(t.data, row_off(t, b, idx, h) + c));
            return COS ? f * info[k >= D ? kC : 0] : f;
        }
        case kVa:
            return k < D ? load16<BF16>(p.v.data, row_off(p.v, b, idx, h) + k) : (k == D ? 1.f : 0.f);
        case kGa:
            return k < D ? load16<BF16>(p.dout.data, row_off(p.dout, b, idx, h) + k) * info[2 * kC]
                         : (k == D ? -info[3 * kC] : 0.f);
        case kVs:
            return load16<BF16>(p.v.data, row_off(p.v, b, idx, h) + slice * kValSlice + k);
        case kGs:
            return load16<BF16>(p.dout.data, row_off(p.dout, b, idx, h) + slice * kValSlice + k) * info[2 * kC];
        default: {  // kKq, kQq: u = [φ(x) sin θ | φ(x) cos θ] over the slice's columns, or φ(x)
            const LinTensor& t = kind == kQq ? p.q : p.k;
            const int c = slice * Dm::QSlice + (COS && k >= Dm::QSlice ? k - Dm::QSlice : k);
            const float f = phi<COS>(load16<BF16>(t.data, row_off(t, b, idx, h) + c));
            return COS ? f * info[k >= Dm::QSlice ? kC : 0] : f;
        }
    }
}

// sin, cos of the position; 1/n and r from the (b, i, h) replica `rep` when the side needs them
template <int D, bool COS>
FSIG_LIN_HD void fill_info(const LinParams& p, float* info, int x, int pos, bool stats, int b, int i, int h, int rep) {
    if (COS) {  // θ = π · pos / 2M, |θ| ≤ π/2; sincospi needs no slow-path argument reduction (local memory)
        const double half_turns = double(pos) * p.angle;
#if defined(__CUDA_ARCH__)
        double sn, cs;
        sincospi(half_turns, &sn, &cs);
#else
        const double sn = sin(3.14159265358979323846 * half_turns), cs = cos(3.14159265358979323846 * half_turns);
#endif
        info[x] = float(sn);
        info[kC + x] = float(cs);
    }
    if (stats) {
        const float* st = stats_row(p, b, i, h) + rep * Dims<D, COS>::kRepFloats;
        info[2 * kC + x] = 1.f / st[0];
        info[3 * kC + x] = st[1];
    }
}

#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <int Role, int D, bool COS, bool BF16, class Exec>
FSIG_LIN_HD void run_block(const LinParams& p, int64_t bid, float* sm, Exec& ex) {
    using G = Cfg<Role, D, COS>;
    using Dm = Dims<D, COS>;
    using Kd = Kinds<Role>;
    constexpr int K = G::K;
    constexpr bool kRev = G::kReverse;
    const BlockId id = decode_block(bid, p.nseg, G::kSlices, block_heads<Role>(p));
    const int b = id.b, slice = id.slice;
    const int off = p.seq_k - p.seq_q;
    const int ngroups = kRev ? p.group : 1;
    // heads of the row side and of column group g
    const int row_head = id.head;
    float* A = sm + G::kA;
    float* Bt = sm + G::kB;
    float* U = sm + G::kUo;
    float* P = sm + G::kP;
    float* O = sm + G::kO;
    float* S = sm + G::kS;
    float* z = sm + G::kZ;
    float* rinfo = sm + G::kRow;
    float* cinfo = sm + G::kCol;
    const int rep = Role == kDq ? slice : 0;  // which (n, r) replica this kernel reads

    auto col_head = [&](int g) { return kRev ? row_head * p.group + g : row_head / p.group; };

    // ---- the phases -----------------------------------------------------------------------------------
    auto prep = [&](const Chunk& ch, bool rows, int g) {
        ex.phase([&](int t) {
            if (t < kC) {
                if (rows && t < ch.nr) {
                    const int idx = ch.r0 + t;
                    fill_info<D, COS>(p, rinfo, t, ch.rpos0 + t, needs_stats(Kd::A), b, idx, row_head, rep);
                }
            } else if (t < 2 * kC) {
                const int c = t - kC;
                if (c < ch.nc)
                    fill_info<D, COS>(p, cinfo, c, ch.cpos0 + c, needs_stats(Kd::B) || needs_stats(Kd::U), b,
                                      ch.c0 + c, col_head(g), rep);
            }
        });
    };
    auto load = [&](const Chunk& ch, bool rows, bool cols, int g) {
        ex.phase([&](int t) {
            if (rows)
                for (int e = t; e < kC * K; e += kThreads) {
                    const int r = e / K, k = e - r * K;
                    A[r * G::kLdA + k] =
                        r < ch.nr ? element<D, COS, BF16>(p, Kd::A, b, row_head, ch.r0 + r, k, slice, rinfo + r) : 0.f;
                }
            if (cols) {
                const int hc = col_head(g);
                for (int e = t; e < kC * K; e += kThreads) {
                    const int c = e / K, k = e - c * K;
                    Bt[k * G::kLdB + c] =
                        c < ch.nc ? element<D, COS, BF16>(p, Kd::B, b, hc, ch.c0 + c, k, slice, cinfo + c) : 0.f;
                }
                for (int e = t; e < kC * kU; e += kThreads) {
                    const int c = e / kU, u = e - c * kU;
                    U[c * kU + u] =
                        c < ch.nc ? element<D, COS, BF16>(p, Kd::U, b, hc, ch.c0 + c, u, slice, cinfo + c) : 0.f;
                }
            }
        });
    };
    // O = A S (inter-chunk, with den = A z) and/or P = A Btᵀ masked (intra-chunk scores)
    auto multiply = [&](const Chunk& ch, bool inter, bool scores) {
        if (!inter && !scores) return;
        ex.phase([&](int t) {
            const int lane = t & 31, warp = t >> 5, rd = warp + 4 * (lane & 7);
            if (inter) {
                float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
                float accd = 0.f;
                for (int k = 0; k < K; ++k) {
                    const float s = S[k * kU + lane];
FSIG_LIN_UNROLL
                    for (int m = 0; m < 8; ++m) acc[m] += A[(warp + 4 * m) * G::kLdA + k] * s;
                    if (G::kDen) accd += A[rd * G::kLdA + k] * z[k];
                }
FSIG_LIN_UNROLL
                for (int m = 0; m < 8; ++m) O[(warp + 4 * m) * G::kLdO + lane] = acc[m];
                if (G::kDen && lane < 8) O[rd * G::kLdO + kU] = accd;
            }
            if (scores) {
                float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
                for (int k = 0; k < K; ++k) {
                    const float bb = Bt[k * G::kLdB + lane];
FSIG_LIN_UNROLL
                    for (int m = 0; m < 8; ++m) acc[m] += A[(warp + 4 * m) * G::kLdA + k] * bb;
                }
FSIG_LIN_UNROLL
                for (int m = 0; m < 8; ++m) {
                    const int r = warp + 4 * m;
                    const int rpos = ch.rpos0 + r, cpos = ch.cpos0 + lane;
                    const bool ok = r < ch.nr && lane < ch.nc && (kRev ? rpos <= cpos : cpos <= rpos);
                    P[r * G::kLdP + lane] = ok ? acc[m] : 0.f;
                }
            }
        });
    };
    // O += P U (and den += rowsum P); S += Btᵀ U (and z += Σ_c Bt)
    auto accumulate = [&](bool intra, bool update) {
        if (!intra && !update) return;
        ex.phase([&](int t) {
            const int lane = t & 31, warp = t >> 5, rd = warp + 4 * (lane & 7);
            if (intra) {
                float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
                float accd = 0.f;
                for (int c = 0; c < kC; ++c) {
                    const float uu = U[c * kU + lane];
FSIG_LIN_UNROLL
                    for (int m = 0; m < 8; ++m) acc[m] += P[(warp + 4 * m) * G::kLdP + c] * uu;
                    if (G::kDen) accd += P[rd * G::kLdP + c];
                }
FSIG_LIN_UNROLL
                for (int m = 0; m < 8; ++m) O[(warp + 4 * m) * G::kLdO + lane] += acc[m];
                if (G::kDen && lane < 8) O[rd * G::kLdO + kU] += accd;
            }
            if (update)
                for (int k0 = warp * 8; k0 < K; k0 += 32) {
                    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
                    float zd = 0.f;
                    for (int c = 0; c < kC; ++c) {
                        const float uu = U[c * kU + lane];
FSIG_LIN_UNROLL
                        for (int m = 0; m < 8; ++m) acc[m] += Bt[(k0 + m) * G::kLdB + c] * uu;
                        if (G::kDen) zd += Bt[(k0 + (lane & 7)) * G::kLdB + c];
                    }
FSIG_LIN_UNROLL
                    for (int m = 0; m < 8; ++m) S[(k0 + m) * kU + lane] += acc[m];
                    if (G::kDen && lane < 8) z[k0 + lane] += zd;
                }
        });
    };
    // rows of the chunk from O to global memory
    auto finalize = [&](const Chunk& ch) {
        ex.phase([&](int t) {
            if (Role == kFwd) {
                for (int e = t; e < ch.nr * kU; e += kThreads) {
                    const int r = e / kU, u = e - r * kU;
                    const float val = O[r * G::kLdO + u] / floor_max(O[r * G::kLdO + kU], p.epsilon);
                    store16<BF16>(p.out.data, row_off(p.out, b, ch.r0 + r, row_head) + slice * kValSlice + u, val);
                }
            } else if (Role == kStats) {
                if (t < ch.nr) {
                    const int i = ch.r0 + t;
                    const int64_t go = row_off(p.dout, b, i, row_head) + slice * kValSlice;
                    float dot = 0.f;
                    for (int u = 0; u < kU; ++u) dot += load16<BF16>(p.dout.data, go + u) * O[t * G::kLdO + u];
                    float* st = stats_row(p, b, i, row_head);
                    st[slice] = dot;
                    if (slice == 0) st[Dm::kValSlices] = O[t * G::kLdO + kU];
                }
            } else if (Role == kDv) {
                for (int e = t; e < ch.nr * kU; e += kThreads) {
                    const int r = e / kU, u = e - r * kU;
                    store16<BF16>(p.dv.data, row_off(p.dv, b, ch.r0 + r, row_head) + slice * kValSlice + u,
                                  O[r * G::kLdO + u]);
                }
            } else {  // kDk, kDq: dx = φ'(x) ∘ (sin θ dF_sin + cos θ dF_cos) over the slice's columns
                const LinTensor& x = Role == kDk ? p.k : p.q;
                const LinTensor& dx = Role == kDk ? p.dk : p.dq;
                for (int e = t; e < ch.nr * Dm::QSlice; e += kThreads) {
                    const int r = e / Dm::QSlice, c = e - r * Dm::QSlice;
                    const int col = slice * Dm::QSlice + c;
                    const float xv = load16<BF16>(x.data, row_off(x, b, ch.r0 + r, row_head) + col);
                    const float df = COS ? rinfo[r] * O[r * G::kLdO + c] + rinfo[kC + r] * O[r * G::kLdO + Dm::QSlice + c]
                                         : O[r * G::kLdO + c];
                    store16<BF16>(dx.data, row_off(dx, b, ch.r0 + r, row_head) + col, phi_grad<COS>(xv) * df);
                }
            }
        });
    };

    // ---- the scan -----------------------------------------------------------------------------------
    ex.phase([&](int t) {
        for (int e = t; e < K * kU; e += kThreads) S[e] = 0.f;
        for (int e = t; e < K; e += kThreads) z[e] = 0.f;
    });
    if (p.causal) {
        const int nchunks = (p.seq_k + kC - 1) / kC;
        const int per_seg = (nchunks + p.nseg - 1) / p.nseg;
        const int t_begin = id.seg * per_seg, t_end = imin(nchunks, t_begin + per_seg);
        if (!kRev && id.seg == 0 && off < 0) {  // query rows with δ_i < 0: no key
            const int nzero = imin(-off, p.seq_q);
            ex.phase([&](int t) {
                if (Role == kFwd)
                    for (int e = t; e < nzero * kU; e += kThreads)
                        store16<BF16>(p.out.data, row_off(p.out, b, e / kU, row_head) + slice * kValSlice + e % kU, 0.f);
                else if (Role == kStats)
                    for (int i = t; i < nzero; i += kThreads) {
                        float* st = stats_row(p, b, i, row_head);
                        st[slice] = 0.f;
                        if (slice == 0) st[Dm::kValSlices] = 0.f;
                    }
                else if (Role == kDq)
                    for (int e = t; e < nzero * Dm::QSlice; e += kThreads)
                        store16<BF16>(p.dq.data,
                                      row_off(p.dq, b, e / Dm::QSlice, row_head) + slice * Dm::QSlice + e % Dm::QSlice, 0.f);
            });
        }
        for (int v = 0; v < t_end; ++v) {
            Chunk ch;
            causal_chunk(p, kRev ? nchunks - 1 - v : v, kRev, &ch);
            const bool rows = v >= t_begin && ch.nr > 0, update = v + 1 < t_end;
            for (int g = 0; g < ngroups; ++g) {
                prep(ch, rows && g == 0, g);
                load(ch, rows && g == 0, true, g);
                multiply(ch, rows && g == 0, rows);
                accumulate(rows, update);
            }
            if (rows) finalize(ch);
        }
        return;
    }
    // non-causal: the whole state first, then this segment's row chunks
    const int nrows = kRev ? p.seq_k : p.seq_q, ncols = kRev ? p.seq_q : p.seq_k;
    const int nrc = (nrows + kC - 1) / kC, per_seg = (nrc + p.nseg - 1) / p.nseg;
    const int t_begin = id.seg * per_seg, t_end = imin(nrc, t_begin + per_seg);
    if (t_begin >= t_end) return;
    for (int g = 0; g < ngroups; ++g)
        for (int c0 = 0; c0 < ncols; c0 += kC) {
            Chunk ch;
            ch.c0 = c0, ch.nc = imin(kC, ncols - c0), ch.cpos0 = kRev ? c0 + off : c0;
            prep(ch, false, g);
            load(ch, false, true, g);
            accumulate(false, true);
        }
    for (int t = t_begin; t < t_end; ++t) {
        Chunk ch;
        ch.r0 = t * kC, ch.nr = imin(kC, nrows - t * kC), ch.rpos0 = kRev ? ch.r0 : ch.r0 + off;
        prep(ch, true, 0);
        load(ch, true, false, 0);
        multiply(ch, true, false);
        finalize(ch);
    }
}

// Between kStats and kDv: n_i = max(den_i, ε), r_i = [den_i > ε] (dO_i·num_i) / n_i², written as
// (n_i, r_i) at the start of every q-dim slice's columns of dq's row (row = (b · Nq + i) · Hq + h).
template <int D, bool COS>
FSIG_LIN_HD void reduce_row(const LinParams& p, int64_t row) {
    using Dm = Dims<D, COS>;
    const int h = int(row % p.heads_q);
    row /= p.heads_q;
    const int i = int(row % p.seq_q), b = int(row / p.seq_q);
    float* st = stats_row(p, b, i, h);
    float dot = 0.f;
    for (int s = 0; s < Dm::kValSlices; ++s) dot += st[s];
    const float den = st[Dm::kValSlices];
    const float n = floor_max(den, p.epsilon);
    const float r = den > p.epsilon ? dot / n / n : 0.f;
    for (int s = 0; s < Dm::kQSlices; ++s) {
        st[s * Dm::kRepFloats] = n;
        st[s * Dm::kRepFloats + 1] = r;
    }
}

// Segments per (slice, head, batch): enough thread blocks for a large GPU (≈ 264 = 2 per SM of an
// H100), at least 8 chunks per segment, at most 16 segments. A function of the problem alone.
// rows: the row count of the kernel (Nq, or Nk for kDv/kDk); a non-causal segment recomputes the whole
// state, a causal one the state before its chunks.
FSIG_LIN_HD int choose_segments(const LinParams& p, int slices, int heads, int rows) {
    const int64_t base = int64_t(slices) * heads * p.batch;
    const int units = p.causal ? (p.seq_k + kC - 1) / kC : (rows + kC - 1) / kC;
    int64_t want = (264 + base - 1) / base;
    const int64_t cap = units / 8 > 1 ? units / 8 : 1;
    if (want > cap) want = cap;
    if (want > 16) want = 16;
    return want < 1 ? 1 : int(want);
}

}  // namespace fsig::cuda::lin
