// The interface between the CPU dispatcher (baseline ISA) and the per-ISA kernel translation units.
// Each ISA unit fills one KernelTable; the dispatcher picks one at load time by CPUID.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>

#include "../internal.h"

namespace fsig::cpu {

// The operand magnitudes met by the bf16 products (AVX512-BF16, bf16_dot.h): the smallest nonzero |x| of
// each operand they multiply (Q times the power-of-two part of the scale, K; backward also dO, V), kept
// by the tasks with an order-independent minimum. vdpbf16ps reads subnormal operands as 0 and flushes
// subnormal products and sums: a call whose operands reach below 2^-126, or whose smallest magnitudes
// could multiply to below 2^-110, is computed again with fp32 products (cpu_backend.cpp,
// bf16_range_exact). In the forward only the key tiles some query tile reads count, so the choice does
// not depend on how the keys were packed.
struct Bf16Range {
    std::atomic<float> q{std::numeric_limits<float>::infinity()};
    std::atomic<float> k{std::numeric_limits<float>::infinity()};
    std::atomic<float> dout{std::numeric_limits<float>::infinity()};
    std::atomic<float> v{std::numeric_limits<float>::infinity()};
    // the amx set: the smallest nonzero |x·mul| of the tensors' operand tiles that the tile products
    // scale (amx_tiles.h, pow2_near_one: V, and the backward's K, Qᵀ, dOᵀ): a call where it falls below
    // 2^-100 — a tile spanning more than 2^100, whose smallest values the products could flush — is
    // computed again with fp32 products
    std::atomic<float> scaled{std::numeric_limits<float>::infinity()};
};

// Query rows per forward task and per query tile of the backward.
constexpr int64_t kBlockM = 64;

// The bf16 products' row pitch of Q and dO (elements): whole 32-wide tile K-steps in the amx set (zeros
// past d), else d rounded to 16.
inline int64_t bf16_row_pitch(int32_t isa, int64_t head_dim) {
    return isa == FSIG_CPU_ISA_AMX ? (head_dim + 31) / 32 * 32 : (head_dim + 15) / 16 * 16;
}

// Keys per tile: 128 keeps K, V, S tiles of one task inside L2 up to d = 128; larger d halves it.
constexpr int64_t kMaxBlockN = 128;  // the most keys a tile holds (block_n_for)
constexpr int64_t block_n_for(int64_t head_dim) { return head_dim <= 128 ? kMaxBlockN : 64; }

// Distances |i + Nk − Nq − j| between query rows and keys, for ALiBi's penalties (kernels.inc: the norm bound, its
// gate, far tiles). The least over query rows [i0, i0 + m) and keys [j0, j0 + n):
inline int64_t least_distance(const Problem& p, int64_t i0, int64_t m, int64_t j0, int64_t n) {
    const int64_t diag_lo = i0 + p.seq_k - p.seq_q, diag_hi = diag_lo + m - 1;
    return j0 > diag_hi ? j0 - diag_hi : diag_lo > j0 + n - 1 ? diag_lo - (j0 + n - 1) : 0;
}
// the largest over the same (at a corner)
inline int64_t largest_distance(const Problem& p, int64_t i0, int64_t m, int64_t j0, int64_t n) {
    const int64_t diag_lo = i0 + p.seq_k - p.seq_q, diag_hi = diag_lo + m - 1;
    return std::max(std::max(std::abs(diag_lo - j0), std::abs(diag_lo - (j0 + n - 1))),
                    std::max(std::abs(diag_hi - j0), std::abs(diag_hi - (j0 + n - 1))));
}
// The largest least distance between keys [j0, j0 + n) and a query tile (kBlockM rows from 0), and between query rows
// [i0, i0 + m) and a key tile (block_n keys from 0): the largest penalty per unit slope that a norm bound of theirs
// may meet. (The least distance is convex in a tile's position: largest at the first or last; tests/test_tile_reach.)
inline int64_t query_tiles_reach(const Problem& p, int64_t j0, int64_t n) {
    const int64_t last = (p.seq_q - 1) / kBlockM * kBlockM;
    return std::max(least_distance(p, 0, std::min(kBlockM, p.seq_q), j0, n),
                    least_distance(p, last, p.seq_q - last, j0, n));
}
inline int64_t key_tiles_reach(const Problem& p, int64_t i0, int64_t m) {
    const int64_t bn = block_n_for(p.head_dim), last = (p.seq_k - 1) / bn * bn;
    return std::max(least_distance(p, i0, m, 0, std::min(bn, p.seq_k)), least_distance(p, i0, m, last, p.seq_k - last));
}

// The forward's K and V for the (batch, kv head) pairs [pair0, pair0 + count), packed once per wave
// (every query tile of every head of a group reads all of its keys: packing them from the tensors each
// time was half of the forward at N = 4096). Per pair and key tile of block_n keys: K as transposed
// panels in kv_k_tile_floats, V as rows of dp floats in kv_v_tile_floats. k_panels == nullptr: no pack,
// each task packs its own tiles (cpu_backend.cpp's forward says when).
struct KvPack {
    float* k_panels;
    float* v_rows;
    int64_t pair0;
    // bf16 products: per packed key tile (k_panels != nullptr) its smallest nonzero |k|; AMX: the power of
    // two its V was packed times (amx_tiles.h, pow2_near_one) and the smallest nonzero |v| times it; the
    // call's range
    float* k_min;
    float* v_mul;
    float* v_scaled_min;
    Bf16Range* range;
    // per packed key tile its largest |v| (NaN ignored): the tiny floor's bound (kernels.inc, tiny_floor_ok); and
    // 1 where its V is finite, else 0 (a tile that adds nothing is skipped only then: once per wave, not per query tile)
    float* v_max;
    float* v_finite;
    // per packed key tile its largest ‖k_j‖ (inf or NaN where a k is not finite), in calls with ALiBi alone (kernels.inc,
    // norm_bound_ok): with ‖q_i‖ it bounds every score of a tile before its product
    float* k_norm;
    // the least penalty at which a tile's norms may serve (kernels.inc, norm_gate_penalty), once per call
    double norm_gate;
};
// block_n is a multiple of every ISA's panel width (16 or 32 keys; kernels.inc asserts it), so the
// panels need no padding.
// (At least 16 floats per key: the AMX set's bf16 panels hold whole 32-wide K-steps of the head dim.)
inline int64_t kv_k_tile_floats(int64_t head_dim) { return block_n_for(head_dim) * (head_dim < 16 ? 16 : head_dim); }
inline int64_t kv_v_tile_floats(int64_t head_dim) { return block_n_for(head_dim) * ((head_dim + 15) / 16 * 16); }

// One wave of the backward: the (batch, kv head) pairs [pair0, pair0 + count). Per query head of those
// pairs, fp32 rows [slot][Nq][dp] with slot = (b·Hk + hk − pair0)·group + h % group and dp = the head
// dim rounded up to the ISA's vector width (allocate for 16), zero past d: rows, the key tiles' dQ
// shares summed in key-tile order; q_rows and dout_rows, Q·scale and dO packed once for the whole wave
// (every key task reads every query tile of its pair: from these, not from the tensors). turns[slot][query
// tile] = the key tiles of that query tile's range that have added so far; exps[slot][query tile]: the tile's
// rows hold dQ's sums times 2^exp, exp the least far exponent E (far_exponent) among the shares added so far
// (kDqNoShare before the first), so that a query tile whose first key tiles are far (ALiBi's keys before it) sums
// their shares P·2^E in their own scale, not as subnormal numbers (read and written by the task holding the turn).
constexpr int32_t kDqNoShare = INT32_MAX;
struct DqAccumulator {
    float* rows;
    float* q_rows;
    float* dout_rows;
    std::atomic<int32_t>* turns;
    int32_t* exps;
    // the norm bound (kernels.inc, norm_bound_ok), per [slot][query tile]: the largest ‖q_i·scale‖ and ‖dO_i‖ (inf
    // where not taken)
    float* q_norms;
    float* dout_norms;
    double norm_gate;  // as KvPack::norm_gate
    int64_t pair0;
    // bf16 products (KernelTable::bf16_products; else nullptr): Q times the power-of-two part of the scale
    // and dO as bf16 rows [slot][Nq][bf16_row_pitch] (and a tile's rows of slack past the last), in place
    // of q_rows and dout_rows (which are then nullptr)
    uint16_t* q_bf16;
    uint16_t* dout_bf16;
    Bf16Range* range;
    // the amx set: per slot and query tile, the same transposed ([dp][kBlockM], queries past the tile
    // zero: the dK and dV products' A) times a power of two (amx_tiles.h, pow2_near_one), and that power
    uint16_t* q_cols;
    uint16_t* dout_cols;
    float* q_cols_mul;
    float* dout_cols_mul;
};

struct KernelTable {
    const char* name;
    int32_t isa;  // fsig_cpu_isa
    // whether this call's S = Q Kᵀ (and the backward's dP = dO Vᵀ) are AVX512-BF16 products (bf16_dot.h):
    // bf16 tensors and a normal scale, in the avx512bf16 set; the backward then needs
    // DqAccumulator::q_bf16 and dout_bf16, the forward KvPack::k_min
    bool (*bf16_products)(const Problem& p);
    // floats of per-thread scratch that the tasks below need for this problem
    size_t (*scratch_floats)(const Problem& p);
    // the norm bound's gate for this call (KvPack::norm_gate; inf where the bound does not apply)
    double (*norm_gate_penalty)(const Problem& p);
    // one (batch, kv head, key tile) of kv's pairs: K panels and V rows of keys [j0, j0 + block_n) into kv
    void (*forward_pack_task)(const ForwardArgs& a, const KvPack& kv, int64_t b, int64_t hk, int64_t j0, float* scratch);
    // one (batch, query head, query tile): out rows [i0, i0 + kBlockM) and their LSE
    void (*forward_task)(const ForwardArgs& a, const KvPack& kv, int64_t b, int64_t h, int64_t i0, float* scratch);
    // softmax only: D[b, h, i] = sum_c dO * O for one (batch, query head, query tile)
    void (*backward_rowdot_task)(const BackwardArgs& a, int64_t b, int64_t h, int64_t i0, float* D);
    // one (batch, query head, query tile) of acc's pairs: its Q·scale and dO rows into acc.q_rows, acc.dout_rows
    // (bf16 products: Q·pow2 and dO into acc.q_bf16, acc.dout_bf16)
    void (*backward_pack_task)(const BackwardArgs& a, const DqAccumulator& acc, int64_t b, int64_t h, int64_t i0);
    // one (batch, kv head, key tile): dK, dV rows [j0, j0 + block_n) summed over the group's heads, and
    // the tile's share of dQ added into acc (in key-tile order); ds_cols (nullptr unless dbias is
    // broadcast over Nq): [B, Hq, Nk], gets dS summed over every query row for keys [j0, j0 + block_n)
    // of each head of the group; a dbias that broadcasts nothing gets those keys' columns
    void (*backward_key_task)(const BackwardArgs& a, const float* D, int64_t b, int64_t hk, int64_t j0,
                              float* ds_cols, const DqAccumulator& acc, float* scratch);
    // after every key task of acc's pairs: one (batch, query head, query tile): dQ rows [i0, i0 + kBlockM)
    void (*backward_dq_store_task)(const BackwardArgs& a, const DqAccumulator& acc, int64_t b, int64_t h,
                                   int64_t i0);
    // dbias broadcast over batch and/or heads: one (dbias batch, dbias head, query tile) — rows
    // [i0, i0 + kBlockM) of dbias, dS summed over the batches and heads they stand for
    void (*backward_dbias_task)(const BackwardArgs& a, const float* D, int64_t bo, int64_t ho, int64_t i0,
                                float* scratch);
    // dbias broadcast over Nq: one (dbias batch, dbias head, key tile) — dbias(bo, ho, 0, [j0, j0 +
    // block_n)) = ds_cols summed over the batches and heads it stands for
    void (*backward_dbias_cols_task)(const BackwardArgs& a, const float* ds_cols, int64_t bo, int64_t ho, int64_t j0,
                                     float* scratch);
};

#if defined(__x86_64__)
const KernelTable& kernels_avx2();
const KernelTable& kernels_avx512();
const KernelTable& kernels_avx512bf16();
const KernelTable& kernels_amx();
#elif defined(__aarch64__)
const KernelTable& kernels_neon();
#endif

}  // namespace fsig::cpu
