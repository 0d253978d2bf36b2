// CPU check of the CUDA kernel's fragment index math (native/cuda/fragment.h), runnable without a GPU.
// ldmatrix.x4 (plain and .trans) and mma.sync m16n8k16 are replayed lane by lane as the PTX ISA defines
// them (the layouts are restated independently below), and one warp's share of the forward kernel —
// Q fragments, S = Q Kᵀ, P from the accumulators as the A operand, O += P V, the O staging and the
// 16-byte copy-out — runs over swizzled shared-memory tiles exactly as fwd_kernel.cuh indexes them.
// The backward's dK/dV warp (transposed products: Sᵀ = K_w Qᵀ, dV_w += Sᵀ dO) is replayed the same way,
// and the fast path's dQ step of a whole dK/dV block (dSᵀ to shared memory, then dS K split over the warps).
// Small integers make every product exact, so any index slip shows as a wrong value. Also checks that
// the swizzle is a bijection that keeps 16-byte chunks whole, and that every ldmatrix phase (8 lanes,
// one 8x8 matrix) touches all 32 banks once (no bank conflicts).
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "fragment.h"
#include "harness.h"

namespace {

using fsig::cuda::frag::acc_col;
using fsig::cuda::frag::acc_row;
using fsig::cuda::frag::RowCol;

struct Reg {  // one 32-bit register holding two 16-bit elements (lo = lower index)
    float lo = 0, hi = 0;
};
using Frag4 = std::vector<std::array<Reg, 4>>;  // [lane][register]

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8m..8m+7 give the addresses (element
// offsets) of rows 0..7 of matrix m; register m of lane l receives, without .trans, row l/4, columns
// 2(l%4), 2(l%4)+1 of matrix m; with .trans, column l/4, rows 2(l%4), 2(l%4)+1.
Frag4 ldmatrix_x4(const std::vector<float>& smem, const std::vector<int>& addr, bool trans) {
    Frag4 r(32);
    for (int l = 0; l < 32; ++l)
        for (int m = 0; m < 4; ++m) {
            auto at = [&](int row, int col) { return smem[size_t(addr[8 * m + row] + col)]; };
            if (!trans) r[l][m] = {at(l / 4, 2 * (l % 4)), at(l / 4, 2 * (l % 4) + 1)};
            else r[l][m] = {at(2 * (l % 4), l / 4), at(2 * (l % 4) + 1, l / 4)};
        }
    return r;
}

// mma.sync.aligned.m16n8k16.row.col.f32 (PTX ISA "Matrix fragments for mma.m16n8k16"), g = lane/4,
// t = lane%4. A: a0,a1 (row g, col 2t+i), a2,a3 (row g+8, col 2t+i), a4,a5 (row g, col 2t+8+i), a6,a7
// (row g+8, col 2t+8+i), two per register in that order. B: b0,b1 (row 2t+i, col g), b2,b3 (row
// 2t+8+i, col g). C/D: c0,c1 (row g, col 2t+i), c2,c3 (row g+8, col 2t+i).
void mma(std::vector<std::array<float, 4>>& d, const std::vector<std::array<Reg, 4>>& a,
         const std::vector<std::array<Reg, 2>>& b) {
    double A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; ++l) {
        const int g = l / 4, t = l % 4;
        const Reg* ar = a[l].data();
        A[g][2 * t] = ar[0].lo, A[g][2 * t + 1] = ar[0].hi;
        A[g + 8][2 * t] = ar[1].lo, A[g + 8][2 * t + 1] = ar[1].hi;
        A[g][2 * t + 8] = ar[2].lo, A[g][2 * t + 9] = ar[2].hi;
        A[g + 8][2 * t + 8] = ar[3].lo, A[g + 8][2 * t + 9] = ar[3].hi;
        B[2 * t][g] = b[l][0].lo, B[2 * t + 1][g] = b[l][0].hi;
        B[2 * t + 8][g] = b[l][1].lo, B[2 * t + 9][g] = b[l][1].hi;
        C[g][2 * t] = d[l][0], C[g][2 * t + 1] = d[l][1], C[g + 8][2 * t] = d[l][2], C[g + 8][2 * t + 1] = d[l][3];
    }
    for (int l = 0; l < 32; ++l) {
        const int g = l / 4, t = l % 4;
        for (int e = 0; e < 4; ++e) {
            const int row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1);
            double acc = C[row][col];
            for (int kk = 0; kk < 16; ++kk) acc += A[row][kk] * B[kk][col];
            d[l][e] = float(acc);
        }
    }
}

template <int kD>
int swz(int row, int col) {
    return fsig::cuda::frag::swizzle<kD>(row, col);
}

// Bytes of 8 rows' 16-byte reads of one ldmatrix phase: all 32 banks exactly once.
bool conflict_free(const std::vector<int>& addr, int first_lane) {
    int hits[32] = {};
    for (int r = 0; r < 8; ++r)
        for (int w = 0; w < 4; ++w) ++hits[(addr[first_lane + r] * 2 / 4 + w) % 32];
    for (int b = 0; b < 32; ++b)
        if (hits[b] != 1) return false;
    return true;
}

template <int kD>
void check_head_dim() {
    constexpr int kBlockM = 128, kBlockN = 64, kChunks = kD / 8;
    const int warp = 5;  // any warp: its rows are warp*16 ..
    std::srand(kD);
    auto rnd = [] { return float(std::rand() % 7 - 3); };
    std::vector<float> Q(kBlockM * kD), K(kBlockN * kD), V(kBlockN * kD);
    for (float& x : Q) x = rnd();
    for (float& x : K) x = rnd();
    for (float& x : V) x = rnd();

    // swizzle: a bijection on the tile that keeps each 16-byte chunk contiguous and aligned
    {
        std::vector<int> seen(kBlockM * kD, 0);
        bool chunks_ok = true;
        for (int r = 0; r < kBlockM; ++r)
            for (int c = 0; c < kD; ++c) {
                const int o = swz<kD>(r, c);
                if (o >= 0 && o < kBlockM * kD) ++seen[size_t(o)];
                if (o - swz<kD>(r, c & ~7) != (c & 7) || swz<kD>(r, c & ~7) % 8 != 0 || o / kD != r) chunks_ok = false;
            }
        bool bij = true;
        for (int x : seen) bij = bij && x == 1;
        EXPECT(bij, "d=%d: the swizzle is not a bijection on the tile", kD);
        EXPECT(chunks_ok, "d=%d: the swizzle splits a 16-byte chunk or moves it to another row", kD);
    }
    // tiles in shared memory as load_tile writes them (chunk by chunk at swizzled positions)
    auto to_smem = [](const std::vector<float>& m, int rows) {
        std::vector<float> s(size_t(rows) * kD, NAN);
        for (int c = 0; c < rows * kChunks; ++c) {
            const int r = c / kChunks, col = (c % kChunks) * 8;
            for (int e = 0; e < 8; ++e) s[size_t(swz<kD>(r, col) + e)] = m[size_t(r * kD + col + e)];
        }
        return s;
    };
    const std::vector<float> sQ = to_smem(Q, kBlockM), sK = to_smem(K, kBlockN), sV = to_smem(V, kBlockN);

    // Q fragments: ldsm_a at (warp*16 + row, ks*16 + col)
    std::vector<Frag4> qf(kD / 16);
    bool banks = true;
    for (int ks = 0; ks < kD / 16; ++ks) {
        std::vector<int> addr(32);
        for (int l = 0; l < 32; ++l) {
            const RowCol a = fsig::cuda::frag::ldsm_a(l);
            addr[l] = swz<kD>(warp * 16 + a.row, ks * 16 + a.col);
        }
        for (int m = 0; m < 4; ++m) banks = banks && conflict_free(addr, 8 * m);
        qf[ks] = ldmatrix_x4(sQ, addr, false);
    }
    // S = Q Kᵀ
    std::vector<std::vector<std::array<float, 4>>> s(kBlockN / 8, std::vector<std::array<float, 4>>(32, {0, 0, 0, 0}));
    for (int ks = 0; ks < kD / 16; ++ks)
        for (int np = 0; np < kBlockN / 16; ++np) {
            std::vector<int> addr(32);
            for (int l = 0; l < 32; ++l) {
                const RowCol b = fsig::cuda::frag::ldsm_b(l);
                addr[l] = swz<kD>(np * 16 + b.row, ks * 16 + b.col);
            }
            for (int m = 0; m < 4; ++m) banks = banks && conflict_free(addr, 8 * m);
            const Frag4 kb = ldmatrix_x4(sK, addr, false);
            std::vector<std::array<Reg, 2>> b0(32), b1(32);
            for (int l = 0; l < 32; ++l) b0[l] = {kb[l][0], kb[l][1]}, b1[l] = {kb[l][2], kb[l][3]};
            mma(s[2 * np], qf[ks], b0);
            mma(s[2 * np + 1], qf[ks], b1);
        }
    int bad_s = 0;
    for (int nt = 0; nt < kBlockN / 8; ++nt)
        for (int l = 0; l < 32; ++l)
            for (int e = 0; e < 4; ++e) {
                const int row = warp * 16 + acc_row(l, e), col = nt * 8 + acc_col(l, e);
                double want = 0;
                for (int c = 0; c < kD; ++c) want += double(Q[size_t(row * kD + c)]) * K[size_t(col * kD + c)];
                bad_s += s[nt][size_t(l)][size_t(e)] != float(want);
            }
    EXPECT(bad_s == 0, "d=%d: %d elements of S = Q Kᵀ are wrong", kD, bad_s);

    // P = S (kept exact here; the kernel rounds to 16 bits), packed as the A operand; O += P V
    std::vector<std::vector<std::array<float, 4>>> o(kD / 8, std::vector<std::array<float, 4>>(32, {0, 0, 0, 0}));
    for (int kp = 0; kp < kBlockN / 16; ++kp) {
        std::vector<std::array<Reg, 4>> pa(32);
        for (int l = 0; l < 32; ++l) {
            const auto &s0 = s[2 * kp][size_t(l)], &s1 = s[2 * kp + 1][size_t(l)];
            pa[l] = {Reg{s0[0], s0[1]}, Reg{s0[2], s0[3]}, Reg{s1[0], s1[1]}, Reg{s1[2], s1[3]}};
        }
        for (int dp = 0; dp < kD / 16; ++dp) {
            std::vector<int> addr(32);
            for (int l = 0; l < 32; ++l) {
                const RowCol b = fsig::cuda::frag::ldsm_bt(l);
                addr[l] = swz<kD>(kp * 16 + b.row, dp * 16 + b.col);
            }
            for (int m = 0; m < 4; ++m) banks = banks && conflict_free(addr, 8 * m);
            const Frag4 vb = ldmatrix_x4(sV, addr, true);
            std::vector<std::array<Reg, 2>> b0(32), b1(32);
            for (int l = 0; l < 32; ++l) b0[l] = {vb[l][0], vb[l][1]}, b1[l] = {vb[l][2], vb[l][3]};
            mma(o[2 * dp], pa, b0);
            mma(o[2 * dp + 1], pa, b1);
        }
    }
    std::vector<double> want_o(16 * kD, 0);
    for (int r = 0; r < 16; ++r)
        for (int j = 0; j < kBlockN; ++j) {
            double sv = 0;
            for (int c = 0; c < kD; ++c) sv += double(Q[size_t((warp * 16 + r) * kD + c)]) * K[size_t(j * kD + c)];
            for (int c = 0; c < kD; ++c) want_o[size_t(r * kD + c)] += sv * V[size_t(j * kD + c)];
        }
    int bad_o = 0;
    for (int dt = 0; dt < kD / 8; ++dt)
        for (int l = 0; l < 32; ++l)
            for (int e = 0; e < 4; ++e)
                bad_o += o[dt][size_t(l)][size_t(e)] != float(want_o[size_t(acc_row(l, e) * kD + dt * 8 + acc_col(l, e))]);
    EXPECT(bad_o == 0, "d=%d: %d elements of O = P V are wrong", kD, bad_o);
    EXPECT(banks, "d=%d: an ldmatrix phase has a shared-memory bank conflict", kD);

    // epilogue: pairs into the staging tile at swizzled positions, then 16-byte chunks out per warp
    std::vector<float> stage(size_t(kBlockM) * kD, NAN);
    for (int dt = 0; dt < kD / 8; ++dt)
        for (int l = 0; l < 32; ++l)
            for (int r = 0; r < 2; ++r) {
                const int row = warp * 16 + acc_row(l, 2 * r), col = dt * 8 + acc_col(l, 0);
                stage[size_t(swz<kD>(row, col))] = o[dt][size_t(l)][size_t(2 * r)];
                stage[size_t(swz<kD>(row, col)) + 1] = o[dt][size_t(l)][size_t(2 * r + 1)];
            }
    std::vector<float> out(16 * kD, NAN);
    for (int it = 0; it < 16 * kChunks / 32; ++it)
        for (int l = 0; l < 32; ++l) {
            const int c = l + it * 32;
            const int row = warp * 16 + c / kChunks, col = (c % kChunks) * 8;
            for (int e = 0; e < 8; ++e) out[size_t((row - warp * 16) * kD + col + e)] = stage[size_t(swz<kD>(row, col) + e)];
        }
    int bad_out = 0;
    for (size_t i = 0; i < out.size(); ++i) bad_out += !(out[i] == float(want_o[i]));
    EXPECT(bad_out == 0, "d=%d: %d elements of the stored O tile are wrong", kD, bad_out);
}

// SwizzledRows (the kernels' ldmatrix addresses from four per-lane offsets) gives swizzle's offset at every
// (row + 16 i, col + 16 j) the kernels read: each lane pattern, rows offset by a warp's 16 or a k-step's,
// columns from 0 or from a warp's first column (the backward's c0: 16 to 192), every column step.
template <int kD>
void check_swizzled_rows() {
    using fsig::cuda::frag::RowCol;
    int wrong = 0, checked = 0;
    for (int lane = 0; lane < 32; ++lane)
        for (const RowCol rc : {fsig::cuda::frag::ldsm_a(lane), fsig::cuda::frag::ldsm_b(lane)})
            for (int row0 : {0, 16, 80, 112})
                for (int col0 : {0, 16, 32, 48, 64, 96, 128, 192}) {
                    if (col0 >= kD) continue;
                    const RowCol at{row0 + rc.row, col0 + rc.col};
                    const fsig::cuda::frag::SwizzledRows<kD> rows(at);
                    for (int i = 0; i < 8; ++i)
                        for (int j = 0; (col0 + 16 * j) < kD; ++j, ++checked)
                            wrong += rows.at(i, j) != swz<kD>(at.row + 16 * i, at.col + 16 * j);
                }
    EXPECT(wrong == 0, "d=%d: SwizzledRows differs from swizzle at %d of %d points", kD, wrong, checked);
}
TEST(swizzled_rows) {
    check_swizzled_rows<64>();
    check_swizzled_rows<128>();
    check_swizzled_rows<256>();
}

TEST(fragment_layout_d64) { check_head_dim<64>(); }
TEST(fragment_layout_d128) { check_head_dim<128>(); }

// One warp of the backward's dK/dV kernel (bwd_kernel.cuh), transposed orientation: Sᵀ = K_w Qᵀ with K_w
// (the warp's 16 keys of a 128-key tile) by ldsm_a and Q (kRowsQ query rows) by ldsm_b, then
// dV_w += Sᵀ dO with Sᵀ's accumulators packed as the A operand and dO by ldsm_bt (.trans).
template <int kD, int kRowsQ>
void check_dkdv_warp() {
    constexpr int kKeys = 128;
    const int warp = 6;
    std::srand(kD * 3 + kRowsQ);
    auto rnd = [] { return float(std::rand() % 7 - 3); };
    std::vector<float> K(kKeys * kD), Q(kRowsQ * kD), G(kRowsQ * kD);
    for (float& x : K) x = rnd();
    for (float& x : Q) x = rnd();
    for (float& x : G) x = rnd();
    auto to_smem = [](const std::vector<float>& m, int rows) {
        std::vector<float> sm(size_t(rows) * kD, NAN);
        for (int r = 0; r < rows; ++r)
            for (int c = 0; c < kD; ++c) sm[size_t(swz<kD>(r, c))] = m[size_t(r * kD + c)];
        return sm;
    };
    const std::vector<float> sK = to_smem(K, kKeys), sQ = to_smem(Q, kRowsQ), sG = to_smem(G, kRowsQ);
    auto split = [](const Frag4& f, std::vector<std::array<Reg, 2>>& b0, std::vector<std::array<Reg, 2>>& b1) {
        b0.resize(32), b1.resize(32);
        for (int l = 0; l < 32; ++l) b0[l] = {f[l][0], f[l][1]}, b1[l] = {f[l][2], f[l][3]};
    };
    std::vector<std::vector<std::array<float, 4>>> st(kRowsQ / 8, std::vector<std::array<float, 4>>(32, {0, 0, 0, 0}));
    for (int ks = 0; ks < kD / 16; ++ks) {
        std::vector<int> aaddr(32);
        for (int l = 0; l < 32; ++l) {
            const RowCol a = fsig::cuda::frag::ldsm_a(l);
            aaddr[l] = swz<kD>(warp * 16 + a.row, ks * 16 + a.col);
        }
        const Frag4 ka = ldmatrix_x4(sK, aaddr, false);
        for (int np = 0; np < kRowsQ / 16; ++np) {
            std::vector<int> addr(32);
            for (int l = 0; l < 32; ++l) {
                const RowCol b = fsig::cuda::frag::ldsm_b(l);
                addr[l] = swz<kD>(np * 16 + b.row, ks * 16 + b.col);
            }
            std::vector<std::array<Reg, 2>> b0, b1;
            split(ldmatrix_x4(sQ, addr, false), b0, b1);
            mma(st[2 * np], ka, b0);
            mma(st[2 * np + 1], ka, b1);
        }
    }
    int bad_s = 0;
    for (int nt = 0; nt < kRowsQ / 8; ++nt)
        for (int l = 0; l < 32; ++l)
            for (int e = 0; e < 4; ++e) {
                const int key = warp * 16 + acc_row(l, e), qi = nt * 8 + acc_col(l, e);
                double want = 0;
                for (int c = 0; c < kD; ++c) want += double(K[size_t(key * kD + c)]) * Q[size_t(qi * kD + c)];
                bad_s += st[nt][size_t(l)][size_t(e)] != float(want);
            }
    EXPECT(bad_s == 0, "d=%d rows=%d: %d elements of Sᵀ = K_w Qᵀ are wrong", kD, kRowsQ, bad_s);

    std::vector<std::vector<std::array<float, 4>>> dv(kD / 8, std::vector<std::array<float, 4>>(32, {0, 0, 0, 0}));
    for (int kp = 0; kp < kRowsQ / 16; ++kp) {
        std::vector<std::array<Reg, 4>> pa(32);
        for (int l = 0; l < 32; ++l) {
            const auto &s0 = st[2 * kp][size_t(l)], &s1 = st[2 * kp + 1][size_t(l)];
            pa[l] = {Reg{s0[0], s0[1]}, Reg{s0[2], s0[3]}, Reg{s1[0], s1[1]}, Reg{s1[2], s1[3]}};
        }
        for (int dp = 0; dp < kD / 16; ++dp) {
            std::vector<int> addr(32);
            for (int l = 0; l < 32; ++l) {
                const RowCol b = fsig::cuda::frag::ldsm_bt(l);
                addr[l] = swz<kD>(kp * 16 + b.row, dp * 16 + b.col);
            }
            std::vector<std::array<Reg, 2>> b0, b1;
            split(ldmatrix_x4(sG, addr, true), b0, b1);
            mma(dv[2 * dp], pa, b0);
            mma(dv[2 * dp + 1], pa, b1);
        }
    }
    int bad_dv = 0;
    for (int dt = 0; dt < kD / 8; ++dt)
        for (int l = 0; l < 32; ++l)
            for (int e = 0; e < 4; ++e) {
                const int key = warp * 16 + acc_row(l, e), c = dt * 8 + acc_col(l, e);
                double want = 0;
                for (int i = 0; i < kRowsQ; ++i) {
                    double sv = 0;
                    for (int x = 0; x < kD; ++x) sv += double(K[size_t(key * kD + x)]) * Q[size_t(i * kD + x)];
                    want += sv * G[size_t(i * kD + c)];
                }
                bad_dv += dv[dt][size_t(l)][size_t(e)] != float(want);
            }
    EXPECT(bad_dv == 0, "d=%d rows=%d: %d elements of dV_w = Sᵀ dO are wrong", kD, kRowsQ, bad_dv);
}

TEST(bwd_dkdv_warp_d64) { check_dkdv_warp<64, 64>(); }
TEST(bwd_dkdv_warp_d128) { check_dkdv_warp<128, 32>(); }

// The fast backward's dQ step (bwd_kernel.cuh: the dSᵀ stores, then accumulate_dq), for a whole block.
// Each live warp stores its dSᵀ accumulators (16 keys × kRowsQ queries; registers packed as for dK) into
// the padded [key][query] tile at a_pack_pos; then warp w computes rows 16 (w % groups).., columns
// kCols (w / groups).. of dS K, dS by ldsm_at (.trans), K by ldsm_bt (.trans), skipping the k16 steps
// of warps without dS, whose part of the tile holds stale values (NaN here). Checked against the plain
// product over the live keys; every element of the tile is computed by exactly one warp; the ldmatrix
// phases and the 32-bit stores are bank-conflict free. The tile's addressing is the kernel's own
// (frag::ds_offset); the split constants restate BwdTraits (kKvBlockN, kKvDqRowGroups, kKvDqCols).
template <int kD, int kRowsQ>
void check_fast_dq() {
    constexpr int kKeys = 128, kWarps = 8;
    using fsig::cuda::frag::ds_offset;
    constexpr int kGroups = kRowsQ / 16, kCols = kD / (kWarps / kGroups);
    const bool live[kWarps] = {true, true, false, true, true, true, false, true};
    std::srand(kD * 7 + kRowsQ);
    auto rnd = [] { return float(std::rand() % 7 - 3); };
    std::vector<float> K(kKeys * kD), dS(kRowsQ * kKeys);  // dS [query][key]
    for (float& x : K) x = rnd();
    for (float& x : dS) x = rnd();
    std::vector<float> sK(size_t(kKeys) * kD, NAN);
    for (int r = 0; r < kKeys; ++r)
        for (int c = 0; c < kD; ++c) sK[size_t(swz<kD>(r, c))] = K[size_t(r * kD + c)];

    // the stores: accumulator pairs of dSᵀ (tile nt: keys acc_row, queries nt·8 + acc_col) as A registers
    std::vector<float> sDs(size_t(kKeys) * fsig::cuda::frag::kDsStride<kRowsQ>, NAN);
    bool banks = true;
    for (int w = 0; w < kWarps; ++w) {
        if (!live[w]) continue;
        for (int kp = 0; kp < kRowsQ / 16; ++kp)
            for (int reg = 0; reg < 4; ++reg) {
                int hits[32] = {};
                for (int l = 0; l < 32; ++l) {
                    const int nt = 2 * kp + (reg >> 1), e = (reg & 1) * 2;  // da[reg] = pack(dpt[nt][e], dpt[nt][e + 1])
                    const float lo = dS[size_t((nt * 8 + acc_col(l, e)) * kKeys + w * 16 + acc_row(l, e))];
                    const float hi = dS[size_t((nt * 8 + acc_col(l, e + 1)) * kKeys + w * 16 + acc_row(l, e + 1))];
                    const RowCol at = fsig::cuda::frag::a_pack_pos(l, reg);
                    const int elem = ds_offset<kRowsQ>(w * 16 + at.row, kp * 16 + at.col);
                    EXPECT(elem % 2 == 0, "d=%d: a dSᵀ pair at an odd element offset", kD);
                    sDs[size_t(elem)] = lo, sDs[size_t(elem) + 1] = hi;
                    ++hits[(elem / 2) % 32];
                }
                for (int b = 0; b < 32; ++b) banks = banks && hits[b] == 1;
            }
    }
    EXPECT(banks, "d=%d rows=%d: the dSᵀ stores have a shared-memory bank conflict", kD, kRowsQ);

    // the block's dQ tile, warp by warp
    std::vector<int> covered(kRowsQ * kD, 0);
    int bad = 0;
    bool ld_banks = true;
    for (int w = 0; w < kWarps; ++w) {
        const int rg = w % kGroups, c0 = (w / kGroups) * kCols;
        std::vector<std::vector<std::array<float, 4>>> acc(kCols / 8, std::vector<std::array<float, 4>>(32, {0, 0, 0, 0}));
        for (int ks = 0; ks < kWarps; ++ks) {
            if (!live[ks]) continue;
            std::vector<int> addr(32);
            for (int l = 0; l < 32; ++l) {
                const RowCol a = fsig::cuda::frag::ldsm_at(l);
                addr[l] = ds_offset<kRowsQ>(ks * 16 + a.row, rg * 16 + a.col);
            }
            for (int m = 0; m < 4; ++m) ld_banks = ld_banks && conflict_free(addr, 8 * m);
            const Frag4 a = ldmatrix_x4(sDs, addr, true);
            for (int np = 0; np < kCols / 16; ++np) {
                for (int l = 0; l < 32; ++l) {
                    const RowCol b = fsig::cuda::frag::ldsm_bt(l);
                    addr[l] = swz<kD>(ks * 16 + b.row, c0 + np * 16 + b.col);
                }
                for (int m = 0; m < 4; ++m) ld_banks = ld_banks && conflict_free(addr, 8 * m);
                const Frag4 kb = ldmatrix_x4(sK, addr, true);
                std::vector<std::array<Reg, 2>> b0(32), b1(32);
                for (int l = 0; l < 32; ++l) b0[l] = {kb[l][0], kb[l][1]}, b1[l] = {kb[l][2], kb[l][3]};
                mma(acc[2 * np], a, b0);
                mma(acc[2 * np + 1], a, b1);
            }
        }
        for (int nt = 0; nt < kCols / 8; ++nt)
            for (int l = 0; l < 32; ++l)
                for (int e = 0; e < 4; ++e) {
                    const int i = rg * 16 + acc_row(l, e), c = c0 + nt * 8 + acc_col(l, e);
                    double want = 0;
                    for (int j = 0; j < kKeys; ++j)
                        if (live[j / 16]) want += double(dS[size_t(i * kKeys + j)]) * K[size_t(j * kD + c)];
                    bad += !(acc[nt][size_t(l)][size_t(e)] == float(want));
                    ++covered[size_t(i * kD + c)];
                }
    }
    int cover_bad = 0;
    for (int x : covered) cover_bad += x != 1;
    EXPECT(bad == 0, "d=%d rows=%d: %d elements of the dQ tile dS K are wrong", kD, kRowsQ, bad);
    EXPECT(cover_bad == 0, "d=%d rows=%d: %d elements of the dQ tile are computed by no warp or by several", kD,
           kRowsQ, cover_bad);
    EXPECT(ld_banks, "d=%d rows=%d: an ldmatrix phase of the dQ step has a bank conflict", kD, kRowsQ);
}

TEST(bwd_fast_dq_d64) { check_fast_dq<64, 64>(); }
TEST(bwd_fast_dq_d128) { check_fast_dq<128, 32>(); }

}  // namespace

int main(int argc, char** argv) { return th::run_all(std::vector<std::string>(argv + 1, argv + argc)); }
