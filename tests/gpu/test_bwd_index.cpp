// CPU check of the CUDA backward kernels' index math (native/cuda/bwd_params.h, bwd_kernel.cuh),
// runnable without a GPU:
//  - query_range (the query rows a key range may see, closed form) against a scan of
//    fsig::Problem::first_key/last_key, and fwd_params.h's first_key/last_key against Problem's;
//  - tile_interior against an element-by-element scan;
//  - the two kernels' tile plans replayed exactly as the kernels walk them (dK/dV: key tile of 128,
//    query tiles of 64 or 32 rows over the group's heads, per-warp skips of 16 keys; dQ: query tile of
//    128, key tiles of 64, per-warp skips of 16 rows): every allowed (i, j) is visited exactly once per
//    query head by each kernel, a skipped (warp, tile) holds no allowed element, and a tile taken as
//    interior holds only existing, allowed elements;
//  - the forward kernel's plan (fwd_kernel.cuh: the dQ kernel's walk with fwd_warp_interior, which looks
//    at a warp's real rows only) the same way.
// Over causal × window (both sides, one side, width 0, wider than the sequences) × many (Nq, Nk).
#include <algorithm>
#include <cstdio>
#include <vector>

#include "bwd_params.h"
#include "harness.h"
#include "internal.h"

namespace {

using fsig::cuda::FwdParams;

struct Mask {
    bool causal;
    int64_t wl, wr;
};

fsig::Problem problem_of(int64_t nq, int64_t nk, const Mask& m) {
    fsig::Problem p;
    p.batch = 1, p.seq_q = nq, p.seq_k = nk, p.heads_q = 2, p.heads_k = 1, p.head_dim = 64;
    p.causal = m.causal, p.window_left = m.wl, p.window_right = m.wr;
    return p;
}

// As cuda_runtime.cu fills them (windows clamped to Nq + Nk).
FwdParams params_of(const fsig::Problem& pr) {
    FwdParams f{};
    f.seq_q = pr.seq_q, f.seq_k = pr.seq_k, f.diag_offset = pr.seq_k - pr.seq_q;
    const int64_t lim = pr.seq_q + pr.seq_k;
    f.window_left = pr.window_left > lim ? lim : pr.window_left;
    f.window_right = pr.window_right > lim ? lim : pr.window_right;
    f.causal = pr.causal ? 1 : 0;
    f.heads_q = int32_t(pr.heads_q), f.group = int32_t(pr.group());
    return f;
}

// The keys each row may see, from fsig::Problem's first_key/last_key once per problem (the scans below ask for
// every element of every tile): (i, j) is allowed where both exist and j lies in [first_key(i), last_key(i)].
struct Allowed {
    int64_t seq_q, seq_k;
    std::vector<int64_t> lo, hi;  // per row: the keys [lo, hi] that exist and it may see (lo > hi: none)
    explicit Allowed(const fsig::Problem& p) : seq_q(p.seq_q), seq_k(p.seq_k) {
        for (int64_t i = 0; i < seq_q; ++i) {
            lo.push_back(std::max<int64_t>(p.first_key(i), 0));
            hi.push_back(std::min<int64_t>(p.last_key(i), seq_k - 1));
        }
    }
    bool operator()(int64_t i, int64_t j) const {
        return i >= 0 && i < seq_q && j >= lo[size_t(i)] && j <= hi[size_t(i)];
    }
    // whether row i may see a key of [j_lo, j_hi]
    bool reaches(int64_t i, int64_t j_lo, int64_t j_hi) const {
        return i >= 0 && i < seq_q && std::max(j_lo, lo[size_t(i)]) <= std::min(j_hi, hi[size_t(i)]);
    }
};

std::vector<Mask> masks() {
    std::vector<Mask> m;
    for (int causal = 0; causal < 2; ++causal)
        for (int64_t wl : {int64_t(-1), int64_t(0), int64_t(3), int64_t(40), int64_t(100), int64_t(5000000000)})
            for (int64_t wr : {int64_t(-1), int64_t(0), int64_t(20), int64_t(130)}) m.push_back({causal != 0, wl, wr});
    return m;
}

const int64_t kLens[] = {1, 2, 15, 16, 17, 31, 33, 64, 65, 127, 128, 129, 200, 257, 300};

TEST(key_bounds_match_problem) {
    for (const Mask& m : masks())
        for (int64_t nq : kLens)
            for (int64_t nk : kLens) {
                const fsig::Problem pr = problem_of(nq, nk, m);
                const FwdParams f = params_of(pr);
                for (int64_t i = 0; i < nq; ++i) {
                    EXPECT(fsig::cuda::first_key(f, i) == pr.first_key(i) && fsig::cuda::last_key(f, i) == pr.last_key(i),
                           "first/last_key differ at i=%lld (Nq %lld Nk %lld causal %d wl %lld wr %lld)", (long long)i,
                           (long long)nq, (long long)nk, m.causal, (long long)m.wl, (long long)m.wr);
                }
            }
}

TEST(query_range_matches_scan) {
    int checked = 0;
    for (const Mask& m : masks())
        for (int64_t nq : kLens)
            for (int64_t nk : kLens) {
                const fsig::Problem pr = problem_of(nq, nk, m);
                const FwdParams f = params_of(pr);
                const Allowed allowed(pr);
                for (int64_t j_lo = 0; j_lo < nk; j_lo += (j_lo < 20 ? 1 : 7))
                    for (int64_t width : {int64_t(1), int64_t(16), int64_t(128)}) {
                        const int64_t j_hi = j_lo + width - 1 < nk - 1 ? j_lo + width - 1 : nk - 1;
                        // the scan: the rows whose key interval [first_key, last_key] reaches the keys
                        int64_t first = nq, last = -1;
                        for (int64_t i = 0; i < nq; ++i)
                            if (pr.last_key(i) >= j_lo && first == nq) first = i;
                        for (int64_t i = 0; i < nq; ++i)
                            if (pr.first_key(i) <= j_hi) last = i;
                        int64_t a, b;
                        fsig::cuda::query_range(f, j_lo, j_hi, &a, &b);
                        ++checked;
                        if (a != first || b != last) {
                            EXPECT(false,
                                   "query_range(%lld, %lld) = [%lld, %lld] but the scan gives [%lld, %lld] (Nq %lld Nk "
                                   "%lld causal %d wl %lld wr %lld)",
                                   (long long)j_lo, (long long)j_hi, (long long)a, (long long)b, (long long)first,
                                   (long long)last, (long long)nq, (long long)nk, m.causal, (long long)m.wl,
                                   (long long)m.wr);
                            return;
                        }
                        // and it contains every row that sees a key of the range
                        for (int64_t i = 0; i < nq; ++i)
                            if (allowed.reaches(i, j_lo, j_hi) && (i < a || i > b)) {
                                EXPECT(false, "row %lld sees a key of [%lld, %lld] but lies outside query_range",
                                       (long long)i, (long long)j_lo, (long long)j_hi);
                                return;
                            }
                    }
            }
    std::printf("  %d key ranges checked\n", checked);
}

bool interior_scan(const Allowed& allowed, int64_t i0, int64_t rows, int64_t j0, int64_t cols) {
    for (int64_t i = i0; i < i0 + rows; ++i)
        for (int64_t j = j0; j < j0 + cols; ++j)
            if (!allowed(i, j)) return false;
    return true;
}

TEST(tile_interior_matches_scan) {
    for (const Mask& m : masks())
        for (int64_t nq : {int64_t(17), int64_t(64), int64_t(129)})
            for (int64_t nk : {int64_t(16), int64_t(65), int64_t(200)}) {
                const fsig::Problem pr = problem_of(nq, nk, m);
                const FwdParams f = params_of(pr);
                const Allowed allowed(pr);
                for (int64_t i0 = 0; i0 < nq; i0 += 16)
                    for (int64_t j0 = 0; j0 < nk; j0 += 16)
                        for (int64_t rows : {int64_t(16), int64_t(32)}) {
                            const bool got = fsig::cuda::tile_interior(f, i0, rows, j0, 16);
                            EXPECT(got == interior_scan(allowed, i0, rows, j0, 16),
                                   "tile_interior(%lld, %lld, %lld, 16) = %d (Nq %lld Nk %lld causal %d wl %lld wr %lld)",
                                   (long long)i0, (long long)rows, (long long)j0, got, (long long)nq, (long long)nk,
                                   m.causal, (long long)m.wl, (long long)m.wr);
                        }
            }
}

// Visits of each (query head, i, j) by one kernel's plan; checks skipped and interior tiles on the way.
struct Coverage {
    const fsig::Problem& p;
    const Allowed allowed;
    std::vector<int> visits;  // [h][i][j]
    bool ok = true;
    explicit Coverage(const fsig::Problem& pr)
        : p(pr), allowed(pr), visits(size_t(pr.heads_q * pr.seq_q * pr.seq_k), 0) {}

    // one warp's (rows × keys) piece of one tile, taken (computed) or skipped
    void piece(int64_t h, int64_t i0, int64_t rows, int64_t j0, int64_t keys, bool taken, bool interior,
               const char* kernel) {
        for (int64_t i = i0; i < i0 + rows; ++i)
            for (int64_t j = j0; j < j0 + keys; ++j) {
                const bool a = allowed(i, j);
                if (!taken && a && ok) {
                    EXPECT(false, "%s: allowed (%lld, %lld) lies in a skipped tile", kernel, (long long)i, (long long)j);
                    ok = false;
                }
                if (taken && interior && !a && ok) {
                    EXPECT(false, "%s: (%lld, %lld) is masked or out of range but its tile was taken as interior",
                           kernel, (long long)i, (long long)j);
                    ok = false;
                }
                if (taken && a) ++visits[size_t((h * p.seq_q + i) * p.seq_k + j)];
            }
    }
    void expect_once(const char* kernel) {
        for (int64_t h = 0; h < p.heads_q && ok; ++h)
            for (int64_t i = 0; i < p.seq_q && ok; ++i)
                for (int64_t j = 0; j < p.seq_k && ok; ++j) {
                    const int n = visits[size_t((h * p.seq_q + i) * p.seq_k + j)];
                    if (n != (allowed(i, j) ? 1 : 0)) {
                        EXPECT(false, "%s: (h %lld, i %lld, j %lld) visited %d times", kernel, (long long)h,
                               (long long)i, (long long)j, n);
                        ok = false;
                    }
                }
    }
};

// attention_bwd_dkdv_kernel's walk (kBlockN = 128 keys, 8 warps of 16 keys, query tiles of kBlockM)
void replay_dkdv(const fsig::Problem& pr, int64_t kBlockM, Coverage& cov) {
    const FwdParams f = params_of(pr);
    constexpr int64_t kBlockN = 128;
    const int64_t n_blocks = (pr.seq_k + kBlockN - 1) / kBlockN;
    for (int64_t hk = 0; hk < pr.heads_k; ++hk)
        for (int64_t nb = 0; nb < n_blocks; ++nb) {
            const int64_t j0 = nb * kBlockN;
            int64_t q_first, q_last;
            fsig::cuda::query_range(f, j0, (j0 + kBlockN < pr.seq_k ? j0 + kBlockN : pr.seq_k) - 1, &q_first, &q_last);
            const int64_t m_first = q_first / kBlockM;
            const int64_t n_m = q_last >= q_first ? q_last / kBlockM - m_first + 1 : 0;
            const int64_t n_tiles = n_m * pr.group();
            for (int64_t t = 0; t < n_tiles; ++t) {
                const int64_t h = hk * pr.group() + t / n_m, i0 = (m_first + t % n_m) * kBlockM;
                for (int warp = 0; warp < 8; ++warp) {
                    const int64_t jw = j0 + warp * 16;
                    int64_t wq_first = 0, wq_last = -1;
                    if (jw < pr.seq_k)
                        fsig::cuda::query_range(f, jw, (jw + 15 < pr.seq_k - 1 ? jw + 15 : pr.seq_k - 1), &wq_first,
                                                &wq_last);
                    const bool taken = !(i0 > wq_last || i0 + kBlockM - 1 < wq_first);
                    cov.piece(h, i0, kBlockM, jw, 16, taken, fsig::cuda::tile_interior(f, i0, kBlockM, jw, 16), "dkdv");
                }
            }
            // query tiles outside [m_first, m_first + n_m) are never visited: none may hold an allowed pair
            for (int64_t h = hk * pr.group(); h < (hk + 1) * pr.group(); ++h)
                for (int64_t i0 = 0; i0 < pr.seq_q; i0 += kBlockM)
                    if (i0 / kBlockM < m_first || i0 / kBlockM >= m_first + n_m)
                        cov.piece(h, i0, kBlockM, j0, kBlockN, false, false, "dkdv (block range)");
        }
}

// attention_bwd_dq_kernel's walk (kBlockM = 128 rows, 8 warps of 16 rows, key tiles of 64)
void replay_dq(const fsig::Problem& pr, Coverage& cov) {
    const FwdParams f = params_of(pr);
    constexpr int64_t kBlockM = 128, kBlockN = 64;
    for (int64_t h = 0; h < pr.heads_q; ++h)
        for (int64_t i0 = 0; i0 < pr.seq_q; i0 += kBlockM) {
            const int64_t i_end = i0 + kBlockM < pr.seq_q ? i0 + kBlockM : pr.seq_q;
            const int64_t key_lo = fsig::cuda::first_key(f, i0), key_hi = fsig::cuda::last_key(f, i_end - 1);
            const int64_t n_first = key_lo / kBlockN;
            const int64_t n_last = key_hi >= key_lo ? key_hi / kBlockN : n_first - 1;
            for (int64_t nb = 0; nb * kBlockN < pr.seq_k; ++nb) {
                const int64_t j0 = nb * kBlockN;
                for (int warp = 0; warp < 8; ++warp) {
                    const int64_t w0 = i0 + warp * 16;
                    const int64_t warp_lo = fsig::cuda::first_key(f, w0),
                                  warp_hi = fsig::cuda::last_key(f, w0 + 15 < pr.seq_q - 1 ? w0 + 15 : pr.seq_q - 1);
                    const bool in_block = nb >= n_first && nb <= n_last;
                    const bool taken = in_block && warp_lo <= j0 + kBlockN - 1 && warp_hi >= j0 && warp_lo <= warp_hi;
                    cov.piece(h, w0, 16, j0, kBlockN, taken, fsig::cuda::tile_interior(f, w0, 16, j0, kBlockN), "dq");
                }
            }
        }
}

// attention_fwd_kernel's walk (fwd_kernel.cuh: 8 warps of row_tiles 16-row tiles — the regular kernel 1, 128-row
// blocks; the tall kernel 2, 256-row blocks — key tiles of 64): the dQ kernel's plan, but a warp whose rows all
// lie past Nq skips every tile, the warp's key range spans all its rows, and the per-element mask is skipped by
// fwd_warp_interior per row tile, which looks at the tile's real rows only (rows past Nq beside real ones are
// computed on zero Q and never stored), so the pieces given to the coverage check are the real rows.
void replay_fwd(const fsig::Problem& pr, int64_t row_tiles, Coverage& cov) {
    const FwdParams f = params_of(pr);
    const int64_t block_m = 128 * row_tiles, warp_rows = 16 * row_tiles;
    constexpr int64_t kBlockN = 64;
    for (int64_t h = 0; h < pr.heads_q; ++h)
        for (int64_t i0 = 0; i0 < pr.seq_q; i0 += block_m) {
            const int64_t i_end = i0 + block_m < pr.seq_q ? i0 + block_m : pr.seq_q;
            const int64_t key_lo = fsig::cuda::first_key(f, i0), key_hi = fsig::cuda::last_key(f, i_end - 1);
            const int64_t n_first = key_lo / kBlockN;
            const int64_t n_last = key_hi >= key_lo ? key_hi / kBlockN : n_first - 1;
            for (int64_t nb = 0; nb * kBlockN < pr.seq_k; ++nb) {
                const int64_t j0 = nb * kBlockN;
                for (int warp = 0; warp < 8; ++warp) {
                    const int64_t w0 = i0 + warp * warp_rows;
                    const int64_t w_last = w0 + warp_rows - 1 < pr.seq_q - 1 ? w0 + warp_rows - 1 : pr.seq_q - 1;
                    const int64_t warp_lo = fsig::cuda::first_key(f, w0),
                                  warp_hi = w0 < pr.seq_q ? fsig::cuda::last_key(f, w_last) : -1;
                    const bool in_block = nb >= n_first && nb <= n_last;
                    const bool taken = in_block && warp_lo <= j0 + kBlockN - 1 && warp_hi >= j0 && warp_lo <= warp_hi;
                    for (int64_t g = 0; g < row_tiles; ++g) {
                        const int64_t t0 = w0 + 16 * g, real_rows = pr.seq_q - t0 < 16 ? pr.seq_q - t0 : 16;
                        if (real_rows <= 0) continue;
                        const int64_t keys = pr.seq_k - j0 < kBlockN ? pr.seq_k - j0 : kBlockN;
                        const bool interior = fsig::cuda::fwd_warp_interior(f, t0, j0, kBlockN);
                        // an interior tile's keys must all exist (the kernel leaves keys past Nk unmasked there)
                        if (taken && interior && keys < kBlockN && cov.ok) {
                            EXPECT(false, "fwd: tile at key %lld taken as interior but only %lld of its keys exist",
                                   (long long)j0, (long long)keys);
                            cov.ok = false;
                        }
                        cov.piece(h, t0, real_rows, j0, keys, taken, interior, "fwd");
                    }
                }
            }
        }
}

TEST(fwd_warp_interior_matches_scan) {
    for (const Mask& m : masks())
        for (int64_t nq : {int64_t(1), int64_t(17), int64_t(64), int64_t(129)})
            for (int64_t nk : {int64_t(16), int64_t(65), int64_t(200)}) {
                const fsig::Problem pr = problem_of(nq, nk, m);
                const FwdParams f = params_of(pr);
                const Allowed allowed(pr);
                for (int64_t w0 = 0; w0 < nq; w0 += 16)
                    for (int64_t j0 = 0; j0 < nk; j0 += 16)
                        for (int64_t cols : {int64_t(16), int64_t(64)}) {
                            const int64_t rows = nq - w0 < 16 ? nq - w0 : 16;
                            const bool got = fsig::cuda::fwd_warp_interior(f, w0, j0, cols);
                            EXPECT(got == interior_scan(allowed, w0, rows, j0, cols),
                                   "fwd_warp_interior(%lld, %lld, %lld) = %d (Nq %lld Nk %lld causal %d wl %lld wr %lld)",
                                   (long long)w0, (long long)j0, (long long)cols, got, (long long)nq, (long long)nk,
                                   m.causal, (long long)m.wl, (long long)m.wr);
                        }
            }
}

TEST(tile_plans_cover_every_allowed_pair_once) {
    int problems = 0;
    const int64_t lens[] = {1, 17, 64, 129, 200, 300};
    for (const Mask& m : masks())
        for (int64_t nq : lens)
            for (int64_t nk : lens)
                for (int64_t group : {int64_t(1), int64_t(3)}) {
                    fsig::Problem pr = problem_of(nq, nk, m);
                    pr.heads_q = 2 * group, pr.heads_k = 2;
                    for (int64_t kv_rows : {int64_t(64), int64_t(32)}) {  // d = 64, d = 128
                        Coverage cov(pr);
                        replay_dkdv(pr, kv_rows, cov);
                        if (cov.ok) cov.expect_once("dkdv");
                        if (!cov.ok) {
                            std::printf("  failing problem: Nq %lld Nk %lld group %lld causal %d wl %lld wr %lld "
                                        "rows %lld\n",
                                        (long long)nq, (long long)nk, (long long)group, m.causal, (long long)m.wl,
                                        (long long)m.wr, (long long)kv_rows);
                            return;
                        }
                    }
                    for (int plan = 0; plan < 3; ++plan) {  // dQ, the regular forward, the tall forward
                        static const char* const kPlans[3] = {"dq", "fwd", "fwd tall"};
                        Coverage cov(pr);
                        if (plan) replay_fwd(pr, plan, cov);
                        else replay_dq(pr, cov);
                        if (cov.ok) cov.expect_once(kPlans[plan]);
                        if (!cov.ok) {
                            std::printf("  failing problem (%s): Nq %lld Nk %lld causal %d wl %lld wr %lld\n",
                                        kPlans[plan], (long long)nq, (long long)nk, m.causal, (long long)m.wl,
                                        (long long)m.wr);
                            return;
                        }
                    }
                    ++problems;
                }
    std::printf("  %d problems replayed\n", problems);
}

}  // namespace

int main() { return th::run_all({}); }
