#include "cpu_backend.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "block_cache.h"
#include "kernel_table.h"
#include "linear.h"
#include "thread_pool.h"
#include "work_counters.h"

namespace fsig::cpu {
namespace {

#if defined(__x86_64__)
bool cpu_has_avx512() {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return false;
    unsigned xcr0_lo, xcr0_hi;
    __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if ((xcr0_lo & 0xE6) != 0xE6) return false;  // XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM enabled by the OS
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const unsigned need = bit_AVX512F | bit_AVX512BW | bit_AVX512DQ | bit_AVX512VL;
    return (b & need) == need;
}

bool cpu_has_avx512_bf16() {
    unsigned a, b, c, d;
    if (!cpu_has_avx512() || !__get_cpuid_count(7, 0, &a, &b, &c, &d) || a < 1) return false;  // subleaf 1 exists
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & bit_AVX512BF16);
}

// AMX-TILE and AMX-BF16, their state enabled by the OS (XCR0 bits 17, 18), and the tile data granted to
// this process: Linux (5.16 on) hands it out on request only, and a thread touching the tiles without it
// dies by SIGILL. The request is for the whole process; it fails where a thread's alternate signal stack
// is too small for the larger signal frame, and the set is then not taken.
bool amx_usable() {
    unsigned a, b, c, d;
    if (!cpu_has_avx512_bf16() || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    constexpr unsigned kAmxBf16 = 1u << 22, kAmxTile = 1u << 24;  // CPUID.(7, 0):EDX
    if ((d & (kAmxBf16 | kAmxTile)) != (kAmxBf16 | kAmxTile)) return false;
    unsigned xcr0_lo, xcr0_hi;
    __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if ((xcr0_lo & 0x60000) != 0x60000) return false;
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

// Whether the bf16 products (vdpbf16ps: two products per fp32 lane) are faster than fp32 FMAs here: on AMD
// (Zen 4, Zen 5) the instruction issues at the FMA's rate, twice the multiply-adds; Intel's CPUs with
// AVX512-BF16 (Cooper Lake, Sapphire and Granite Rapids) issue it on one port where FMAs use two, so it
// brings no more multiply-adds and the bf16 set measured 3-20 % slower than fp32 products on a Xeon
// (benchmarks/NOTES.md, "AVX512-BF16 on an Intel Xeon").
bool bf16_products_pay_off() {
    unsigned a, vendor[3];
    if (!__get_cpuid(0, &a, &vendor[0], &vendor[2], &vendor[1])) return false;  // ebx, edx, ecx
    return std::memcmp(vendor, "AuthenticAMD", 12) == 0;
}

// The fastest kernels this CPU runs; FSIG_CPU_ISA=avx2|avx512|avx512bf16|amx picks another set the CPU
// has (tests run every set the CPU has).
const KernelTable& choose_kernels() {
    const char* force = std::getenv("FSIG_CPU_ISA");
    if (force && std::strcmp(force, "avx2") == 0) return kernels_avx2();
    if (!cpu_has_avx512()) return kernels_avx2();
    if (force && std::strcmp(force, "avx512") == 0) return kernels_avx512();
    if (!cpu_has_avx512_bf16()) return kernels_avx512();
    if (force && std::strcmp(force, "avx512bf16") == 0) return kernels_avx512bf16();
    if (amx_usable()) return kernels_amx();
    return bf16_products_pay_off() ? kernels_avx512bf16() : kernels_avx512();
}

// A call whose bf16 products were not exact (bf16_range_exact) runs again on these: fp32 products.
const KernelTable& fp32_product_kernels() { return kernels_avx512(); }
#elif defined(__aarch64__)
const KernelTable& choose_kernels() { return kernels_neon(); }
const KernelTable& fp32_product_kernels() { return kernels_neon(); }  // never used: no bf16 products
#endif

const KernelTable& kernels() {
    static const KernelTable& k = choose_kernels();
    return k;
}

struct FreeDeleter {
    void operator()(float* p) const { std::free(p); }
};

// Small calls reuse one scratch block per calling thread: a malloc/free pair of a few hundred KB costs
// glibc a heap consolidation per call, a quarter of a tiny call's time. Larger ones come from the block
// cache (block_cache.h); the per-thread block stays below kMinCachedBytes and is freed at thread exit.
struct ThreadScratch {
    std::unique_ptr<float, FreeDeleter> block;
    size_t bytes = 0;
};
thread_local ThreadScratch t_scratch;

class Scratch {
public:
    // floats_per_worker floats for each of `workers`, each worker's part 64-byte aligned
    Scratch(size_t floats_per_worker, int workers)
        : Scratch((floats_per_worker * sizeof(float) + 63) / 64 * 64 * size_t(workers)) {}
    float* get() const { return data_; }  // nullptr when the allocation failed

private:
    explicit Scratch(size_t bytes) : large_(bytes >= kMinCachedBytes ? bytes : 0) {
        if (bytes >= kMinCachedBytes) {
            data_ = large_.floats();
            return;
        }
        if (t_scratch.bytes < bytes) {
            t_scratch.block.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
            t_scratch.bytes = t_scratch.block ? bytes : 0;
        }
        data_ = t_scratch.block.get();
        poison_for_tests(data_, bytes);
    }

    CachedBlock large_;
    float* data_ = nullptr;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The per-wave buffers (forward: packed K and V; backward: dQ accumulators, packed Q and dO): 64 MB at
// most, except that the backward takes at least one (batch, kv head) pair (the forward then packs
// nothing). Tests set FSIG_CPU_WAVE_FLOATS lower to run many waves (tests/CMakeLists.txt; test_threads
// changes it between calls, so it is read per call).
int64_t wave_floats() {
    const char* env = std::getenv("FSIG_CPU_WAVE_FLOATS");
    const long long v = env != nullptr ? std::atoll(env) : 0;
    return v > 0 ? int64_t(v) : int64_t(16) << 20;
}

// No more workers (and worker scratch) than tasks.
int workers_for(int64_t tasks) { return int(std::min<int64_t>(num_threads(), std::max<int64_t>(tasks, 1))); }


}  // namespace

int32_t active_isa() { return kernels().isa; }
const char* active_isa_name() { return kernels().name; }

namespace {

int forward_with(const KernelTable& k, const ForwardArgs& a, Bf16Range& range) {
    const Problem& p = a.p;
    const int64_t tiles = ceil_div(p.seq_q, kBlockM), group = p.group(), pairs = p.batch * p.heads_k;
    const int64_t k_tiles = ceil_div(p.seq_k, block_n_for(p.head_dim));
    const int workers = workers_for(p.batch * p.heads_q * tiles);
    const size_t per_worker = (k.scratch_floats(p) + 15) / 16 * 16;
    const Scratch scratch(per_worker, workers);
    if (!scratch.get()) return FSIG_ERROR_OUT_OF_MEMORY;
    // K and V are packed once per wave of (batch, kv head) pairs (≤ wave_floats()) when more than one
    // query tile reads them. Otherwise — one query tile of one head per pair, a pair larger than the
    // budget (the forward needs no buffer of Nk's size: K, V may be long broadcasts), or waves too small
    // to give every worker a task — each task packs the key tiles it reads into its own scratch.
    const int64_t tile_floats = kv_k_tile_floats(p.head_dim) + kv_v_tile_floats(p.head_dim);
    bool shared = group * tiles > 1 && k_tiles <= wave_floats() / tile_floats;
    int64_t wave = shared ? std::min(wave_floats() / (k_tiles * tile_floats), pairs) : pairs;
    if (shared && wave < pairs && wave * group * tiles < int64_t(workers)) shared = false, wave = pairs;
    const int64_t pair_floats = shared ? k_tiles * tile_floats : 0;
    const CachedBlock packed(shared ? sizeof(float) * size_t(wave * pair_floats) : 0);
    // each packed key tile's largest |v|, whether its V is finite and its largest ‖k‖ (KvPack::v_max, v_finite,
    // k_norm); bf16 products also its smallest |k| (Bf16Range), its V's multiplier (AMX) and smallest scaled |v|
    const int64_t tile_stats = wave * k_tiles;
    const CachedBlock stats(shared ? sizeof(float) * size_t((k.bf16_products(p) ? 6 : 3) * tile_stats) : 0);
    if (shared && (!packed.floats() || !stats.floats())) return FSIG_ERROR_OUT_OF_MEMORY;
    float* const bf16_stats = shared && k.bf16_products(p) ? stats.floats() + 3 * tile_stats : nullptr;
    const double norm_gate = k.norm_gate_penalty(p);
    for (int64_t pair0 = 0; pair0 < pairs; pair0 += wave) {
        const int64_t count = std::min(wave, pairs - pair0);
        const KvPack kv{packed.floats(), shared ? packed.floats() + wave * k_tiles * kv_k_tile_floats(p.head_dim) : nullptr,
                        pair0, bf16_stats, bf16_stats ? bf16_stats + tile_stats : nullptr,
                        bf16_stats ? bf16_stats + 2 * tile_stats : nullptr, &range, stats.floats(),
                        shared ? stats.floats() + tile_stats : nullptr,
                        shared ? stats.floats() + 2 * tile_stats : nullptr, norm_gate};
        if (shared)
            parallel_for(count * k_tiles, workers, [&](int64_t t, int w) {
                const int64_t pair = pair0 + t / k_tiles;
                k.forward_pack_task(a, kv, pair / p.heads_k, pair % p.heads_k, t % k_tiles * block_n_for(p.head_dim),
                                    scratch.get() + size_t(w) * per_worker);
            });
        // a pair's query heads are consecutive (h = hk·group + g)
        parallel_for(count * group * tiles, workers, [&](int64_t t, int w) {
            const int64_t tile = t % tiles, rest = t / tiles, pair = pair0 + rest / group;
            k.forward_task(a, kv, pair / p.heads_k, pair % p.heads_k * group + rest % group, tile * kBlockM,
                           scratch.get() + size_t(w) * per_worker);
        });
    }
    return FSIG_OK;
}

// Whether bf16 products with operands of these smallest magnitudes were exact: no operand below 2^-126
// (read as 0), and every product at least 2^-110 — a bf16 product has at most 16 significant bits, so it
// is then a multiple of 2^-125, and so is every fp32 sum of such products: none can be a nonzero value
// below 2^-126, which the instruction would flush. Compared in double, where the products cannot
// underflow.
bool bf16_range_exact(double x_min, double y_min) {
    constexpr double kMinNormal = std::numeric_limits<float>::min();
    return x_min >= kMinNormal && y_min >= kMinNormal && x_min * y_min >= 0x1p-110;
}

// Whether the amx set's scaled operand tiles stayed within 2^100 of their largest (Bf16Range::scaled)
bool amx_scaled_in_range(const Bf16Range& r) { return r.scaled.load() >= 0x1p-100f; }

}  // namespace

int forward(const ForwardArgs& a) {
    Bf16Range range;
    const int status = forward_with(kernels(), a, range);
    if (status != FSIG_OK || !kernels().bf16_products(a.p) ||
        (bf16_range_exact(range.q.load(), range.k.load()) && amx_scaled_in_range(range)))
        return status;
    return forward_with(fp32_product_kernels(), a, range);
}

namespace {

int backward_with(const KernelTable& k, const BackwardArgs& a, Bf16Range& range) {
    const Problem& p = a.p;
    const int64_t q_tiles = ceil_div(p.seq_q, kBlockM);
    const int64_t bn = block_n_for(p.head_dim), k_tiles = ceil_div(p.seq_k, bn);
    const int workers = workers_for(std::max(p.batch * p.heads_q * q_tiles, p.batch * p.heads_k * k_tiles));
    const size_t per_worker = (k.scratch_floats(p) + 15) / 16 * 16;
    const Scratch scratch(per_worker, workers);
    const bool softmax = p.score == FSIG_SCORE_SOFTMAX;
    const CachedBlock D(softmax ? sizeof(float) * size_t(p.batch * p.heads_q * p.seq_q) : 0);
    // dbias broadcast over Nq: the key tasks leave dS summed over the query rows per (b, h, key)
    const bool dbias_cols = a.has_dbias && a.dbias.shape[2] != p.seq_q;
    const CachedBlock ds_cols(dbias_cols ? sizeof(float) * size_t(p.batch * p.heads_q * p.seq_k) : 0);
    if (!scratch.get() || (softmax && !D.floats()) || (dbias_cols && !ds_cols.floats())) return FSIG_ERROR_OUT_OF_MEMORY;

    if (softmax)
        parallel_for(p.batch * p.heads_q * q_tiles, workers, [&](int64_t t, int) {
            const int64_t tile = t % q_tiles, bh = t / q_tiles;
            k.backward_rowdot_task(a, bh / p.heads_q, bh % p.heads_q, tile * kBlockM, D.floats());
        });
    // One pass over the key tiles computes each tile product once; their dQ shares are summed in fp32
    // accumulators in key-tile order, for as many (batch, kv head) pairs at a time as wave_floats()
    // allows (at least one), then stored. Q·scale (bf16 products: Q·pow2, in bf16) and dO of the wave
    // are packed first, once: every key task reads every query tile of its pair, and packing them from
    // the tensors each time cost 15–25 % of the backward (benchmarks/NOTES.md).
    const int64_t group = p.group(), pairs = p.batch * p.heads_k;
    const int64_t pair_floats = group * p.seq_q * (ceil_div(p.head_dim, 16) * 16);
    // rows per pair: dQ in fp32, Q and dO in fp32 — or with bf16 products Q and dO in bf16 (each
    // bf16_row_pitch wide), and in the amx set also per query tile transposed, with a multiplier
    const bool bf16_rows = k.bf16_products(p), amx = bf16_rows && k.isa == FSIG_CPU_ISA_AMX;
    const int64_t bf16_pair = group * p.seq_q * bf16_row_pitch(k.isa, p.head_dim);  // uint16 elements
    const int64_t cols_pair = amx ? group * q_tiles * (ceil_div(p.head_dim, 16) * 16) * kBlockM : 0;
    const int64_t muls_pair = amx ? group * q_tiles : 0;
    const int64_t pair_cost = pair_floats + (bf16_rows ? bf16_pair + cols_pair + 2 * muls_pair : 2 * pair_floats);
    const int64_t wave = std::clamp<int64_t>(wave_floats() / pair_cost, 1, pairs);
    // the bf16 rows: a tile's rows of slack past the last pair (the tile products read whole tiles of 16 rows)
    const int64_t bf16_floats = bf16_rows ? wave * (bf16_pair + cols_pair + 2 * muls_pair) +
                                                16 * bf16_row_pitch(k.isa, p.head_dim)
                                          : 2 * wave * pair_floats;
    const CachedBlock wave_rows(sizeof(float) * size_t(wave * pair_floats + bf16_floats));
    std::unique_ptr<std::atomic<int32_t>[]> turns(new (std::nothrow) std::atomic<int32_t>[size_t(wave * group * q_tiles)]);
    std::unique_ptr<int32_t[]> exps(new (std::nothrow) int32_t[size_t(wave * group * q_tiles)]);
    std::unique_ptr<float[]> norms(new (std::nothrow) float[size_t(2 * wave * group * q_tiles)]);
    if (!wave_rows.floats() || !turns || !exps || !norms) return FSIG_ERROR_OUT_OF_MEMORY;
    float* const q_norms = norms.get();
    float* const dout_norms = q_norms + wave * group * q_tiles;
    const double norm_gate = k.norm_gate_penalty(p);
    float* const dq_rows = wave_rows.floats();
    for (int64_t pair0 = 0; pair0 < pairs; pair0 += wave) {
        const int64_t count = std::min(wave, pairs - pair0);
        std::memset(dq_rows, 0, sizeof(float) * size_t(count * pair_floats));
        for (int64_t t = 0; t < count * group * q_tiles; ++t)
            turns[size_t(t)].store(0, std::memory_order_relaxed), exps[size_t(t)] = kDqNoShare;
        float* const rest = dq_rows + wave * pair_floats;
        // bf16: the multipliers (floats), the transposed tiles, then Q and dO rows (slack at the very end)
        float* const muls = rest;
        uint16_t* const cols = reinterpret_cast<uint16_t*>(muls + 2 * wave * muls_pair);
        uint16_t* const bf16_q = cols + 2 * wave * cols_pair;
        const DqAccumulator acc =
            bf16_rows ? DqAccumulator{dq_rows, nullptr, nullptr, turns.get(), exps.get(), q_norms, dout_norms,
                                      norm_gate, pair0, bf16_q, bf16_q + wave * bf16_pair, &range, amx ? cols : nullptr,
                                      amx ? cols + wave * cols_pair : nullptr, amx ? muls : nullptr,
                                      amx ? muls + wave * muls_pair : nullptr}
                      : DqAccumulator{dq_rows, rest, rest + wave * pair_floats, turns.get(), exps.get(), q_norms,
                                      dout_norms, norm_gate, pair0, nullptr,
                                      nullptr, &range, nullptr, nullptr, nullptr, nullptr};
        parallel_for(count * group * q_tiles, workers, [&](int64_t t, int) {
            const int64_t tile = t % q_tiles, rest = t / q_tiles, pair = pair0 + rest / group;
            k.backward_pack_task(a, acc, pair / p.heads_k, pair % p.heads_k * group + rest % group, tile * kBlockM);
        });
        // tasks of one pair are consecutive, key tiles ascending: a task's earlier key tiles were taken first
        parallel_for(count * k_tiles, workers, [&](int64_t t, int w) {
            const int64_t tile = t % k_tiles, pair = pair0 + t / k_tiles;
            k.backward_key_task(a, D.floats(), pair / p.heads_k, pair % p.heads_k, tile * bn, ds_cols.floats(), acc,
                                scratch.get() + size_t(w) * per_worker);
        });
        parallel_for(count * group * q_tiles, workers, [&](int64_t t, int) {
            const int64_t tile = t % q_tiles, rest = t / q_tiles, pair = pair0 + rest / group;
            k.backward_dq_store_task(a, acc, pair / p.heads_k, pair % p.heads_k * group + rest % group, tile * kBlockM);
        });
    }
    // dbias broadcast over Nq: the column sums added over the broadcast batches and heads, by key tile
    const int64_t bias_b = a.has_dbias ? a.dbias.shape[0] : 0, bias_h = a.has_dbias ? a.dbias.shape[1] : 0;
    if (dbias_cols)
        parallel_for(bias_b * bias_h * k_tiles, workers, [&](int64_t t, int w) {
            const int64_t tile = t % k_tiles, bh = t / k_tiles;
            k.backward_dbias_cols_task(a, ds_cols.floats(), bh / bias_h, bh % bias_h, tile * bn,
                                       scratch.get() + size_t(w) * per_worker);
        });
    // dbias broadcast over batch or heads only (with none, the key tasks wrote it): tasks own whole rows
    else if (a.has_dbias && (bias_b != p.batch || bias_h != p.heads_q))
        parallel_for(bias_b * bias_h * q_tiles, workers, [&](int64_t t, int w) {
            const int64_t tile = t % q_tiles, bh = t / q_tiles;
            k.backward_dbias_task(a, D.floats(), bh / bias_h, bh % bias_h, tile * kBlockM,
                                  scratch.get() + size_t(w) * per_worker);
        });
    return FSIG_OK;
}

}  // namespace

int backward(const BackwardArgs& a) {
    Bf16Range range;
    const int status = backward_with(kernels(), a, range);
    if (status != FSIG_OK || !kernels().bf16_products(a.p) ||
        (bf16_range_exact(range.q.load(), range.k.load()) && bf16_range_exact(range.dout.load(), range.v.load()) &&
         amx_scaled_in_range(range)))
        return status;
    return backward_with(fp32_product_kernels(), a, range);
}

// ---- linear attention (cosFormer, elu + 1): linear.h, linear.inc -------------------------------------

namespace {

const LinearTable& linear_kernels() {
#if defined(__x86_64__)
    return kernels().isa == FSIG_CPU_ISA_AVX2 ? linear_avx2() : linear_avx512();
#elif defined(__aarch64__)
    return linear_neon();
#endif
}

// Segments of the position space: enough units for ~32 threads when B·Hk is small, whole chunks each,
// and a function of the problem alone (never of the thread count), so the sums' order is fixed.
LinearGeom linear_geometry(const Problem& p, const LinearOptions& o) {
    LinearGeom g;
    g.d = p.head_dim;
    g.dp = ceil_div(g.d, 16) * 16;
    g.cosformer = p.score == FSIG_SCORE_COSFORMER;
    g.F = g.cosformer ? 2 * g.dp : g.dp;
    g.dv = ceil_div(g.d + 1, 16) * 16;
    g.state_floats = g.F * g.dv;
    g.causal = p.causal;
    g.length = double(o.length);
    g.epsilon = o.epsilon;
    const int64_t positions = std::max(p.seq_q, p.seq_k), chunks = ceil_div(positions, g.C);
    const int64_t want = std::max<int64_t>(1, ceil_div(32, p.batch * p.heads_k));
    g.seg_len = ceil_div(chunks, std::min(chunks, want)) * g.C;
    g.nseg = ceil_div(positions, g.seg_len);
    return g;
}

// states[b][hk][·]: exclusive prefix (forward sweep), exclusive suffix (reverse sweep) or, non-causal,
// the total in slot nseg; each (b, hk) adds its segments in index order.
void combine_states(const LinearCall& c, bool reverse, int workers) {
    const LinearGeom& g = c.g;
    const int64_t n = g.state_floats;
    parallel_for(c.p->batch * c.p->heads_k, workers, [&](int64_t bh, int) {
        float* base = c.states + bh * (g.nseg + 1) * n;
        float* total = base + g.nseg * n;
        std::memset(total, 0, sizeof(float) * size_t(n));
        for (int64_t s = 0; s < g.nseg; ++s) {
            float* seg = base + (reverse ? g.nseg - 1 - s : s) * n;
            for (int64_t e = 0; e < n; ++e) {
                const float local = seg[e];
                if (g.causal) seg[e] = total[e];
                total[e] += local;
            }
        }
    });
}

struct LinearRun {
    LinearCall c;
    int64_t head_parts = 1;  // causal query pass: tasks per (batch, kv head, segment), each a part of the group
    int workers = 1;
    size_t per_worker = 0;
    std::unique_ptr<Scratch> scratch;
    float* worker(int w) const { return c.rowstats + ceil_div(c.p->batch * c.p->heads_q * c.p->seq_q * 2, 16) * 16 + size_t(w) * per_worker; }

    // One block: states | rowstats | per-worker scratch (small calls reuse the thread's cached block).
    bool allocate(const Problem& p, int64_t max_tasks) {
        workers = workers_for(max_tasks);
        per_worker = (linear_kernels().scratch_floats(c.g) + 15) / 16 * 16;
        const int64_t states = p.batch * p.heads_k * (c.g.nseg + 1) * c.g.state_floats;
        const int64_t rows = ceil_div(p.batch * p.heads_q * p.seq_q * 2, 16) * 16;
        scratch = std::make_unique<Scratch>(size_t(states + rows) + per_worker * size_t(workers), 1);
        if (!scratch->get()) return false;
        c.states = scratch->get();
        c.rowstats = c.states + states;
        return true;
    }

    // non-causal task units: tiles of C·4 rows
    int64_t tiles_of(int64_t rows) const { return ceil_div(rows, c.g.C * kLinearTileChunks); }

    // Tasks of the forward (dq = false) or dQ pass. Causal tasks scan one (batch, kv head, segment) for
    // the heads of the group, sharing the chunk's keys; with few kv heads and many threads the group is
    // split into head_parts tasks (every head computes the same either way, so results do not depend on
    // it). Non-causal tasks take one (batch, query head, tile).
    int64_t plan_query_tasks() {
        const Problem& p = *c.p;
        if (!p.causal) return p.batch * p.heads_q * tiles_of(p.seq_q);
        const int64_t scans = p.batch * p.heads_k * c.g.nseg;
        head_parts = std::clamp<int64_t>(ceil_div(2 * int64_t(num_threads()), scans), 1, p.group());
        return scans * head_parts;
    }

    void query_pass(bool dq) {
        const LinearTable& t = linear_kernels();
        const Problem& p = *c.p;
        if (p.causal) {
            const int64_t nseg = c.g.nseg, parts = head_parts, group = p.group();
            parallel_for(p.batch * p.heads_k * nseg * parts, workers, [&](int64_t task, int w) {
                const int64_t part = task % parts, seg = task / parts % nseg, bh = task / parts / nseg;
                const int64_t hk = bh % p.heads_k, h0 = hk * group;
                t.query_scan_task(c, dq, bh / p.heads_k, hk, seg, h0 + part * group / parts,
                                  h0 + (part + 1) * group / parts, worker(w));
            });
            return;
        }
        const int64_t tiles = tiles_of(p.seq_q);
        parallel_for(p.batch * p.heads_q * tiles, workers, [&](int64_t task, int w) {
            const int64_t tile = task % tiles, bh = task / tiles;
            t.query_tile_task(c, dq, bh / p.heads_q, bh % p.heads_q, tile, worker(w));
        });
    }

    void segment_states(bool keys) {
        const LinearTable& t = linear_kernels();
        const Problem& p = *c.p;
        const int64_t nseg = c.g.nseg;
        parallel_for(p.batch * p.heads_k * nseg, workers, [&](int64_t task, int w) {
            const int64_t seg = task % nseg, bh = task / nseg;
            t.segment_state(c, keys, bh / p.heads_k, bh % p.heads_k, seg, c.states + (bh * (nseg + 1) + seg) * c.g.state_floats,
                            worker(w));
        });
        combine_states(c, !keys, workers);
    }
};

}  // namespace

int linear_forward(const ForwardArgs& a, const LinearOptions& o) {
    const Problem& p = a.p;
    LinearRun run;
    run.c.p = &p;
    run.c.g = linear_geometry(p, o);
    run.c.q = a.q, run.c.k = a.k, run.c.v = a.v, run.c.out = a.out;
    if (!run.allocate(p, std::max(p.batch * p.heads_k * run.c.g.nseg, run.plan_query_tasks())))
        return FSIG_ERROR_OUT_OF_MEMORY;
    run.segment_states(true);
    run.query_pass(false);
    return FSIG_OK;
}

int linear_backward(const BackwardArgs& a, const LinearOptions& o) {
    const Problem& p = a.p;
    LinearRun run;
    run.c.p = &p;
    run.c.g = linear_geometry(p, o);
    run.c.q = a.q, run.c.k = a.k, run.c.v = a.v, run.c.dout = a.dout;
    run.c.dq = a.dq, run.c.dk = a.dk, run.c.dv = a.dv;
    const int64_t k_units = p.causal ? run.c.g.nseg : run.tiles_of(p.seq_k);
    if (!run.allocate(p, std::max({p.batch * p.heads_k * run.c.g.nseg, run.plan_query_tasks(), p.batch * p.heads_k * k_units})))
        return FSIG_ERROR_OUT_OF_MEMORY;
    const LinearTable& t = linear_kernels();
    // 1. key states; dQ by the forward sweep, which also leaves (n_i, r_i) per query row
    run.segment_states(true);
    run.query_pass(true);
    // 2. query states (summed over each GQA group); dK, dV by the reverse sweep
    run.segment_states(false);
    parallel_for(p.batch * p.heads_k * k_units, run.workers, [&](int64_t task, int w) {
        const int64_t unit = task % k_units, bh = task / k_units;
        t.key_task(run.c, bh / p.heads_k, bh % p.heads_k, unit, run.worker(w));
    });
    return FSIG_OK;
}

}  // namespace fsig::cpu

extern "C" int fsig_internal_cpu_work(uint64_t* counts, int count) {
    using fsig::cpu::TileWork;
    for (int i = 0; i < std::min(count, int(TileWork::kCount)); ++i)
        counts[i] = fsig::cpu::g_tile_work[i].load(std::memory_order_relaxed);
    return int(TileWork::kCount);
}
