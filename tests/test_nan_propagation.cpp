// A NaN in the inputs stays NaN where the math puts it and nowhere else (the CPU backend; the CUDA kernels'
// checks are test_cuda_forward's nan_propagates and test_cuda_backward's nan_backward): one NaN element of Q
// makes its query row of O (and softmax's LSE) NaN under every score function, as the fp64 reference (and
// PyTorch's relu) would, and leaves the other rows finite; one NaN element of K does the same to every row that
// may see its key. A min or max that drops a NaN (relu as max(x, 0) did) shows here as a finite row. In the
// backward one NaN element of dO, Q or K reaches the gradients that depend on it and no others: a masked dS
// computed from it instead of set to 0 would show as a NaN row elsewhere, a clamp that drops a NaN (softmax's
// P <= 1 did, and its LSE of +inf for a NaN row) as a finite one.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "harness.h"
#include "lib_util.h"

using namespace ref;

namespace {

constexpr int kScores[] = {kSoftmax, kSigmoid, kRelu, kRelu2, kGelu, kSoftplus, kIdentity};
constexpr int64_t kQueryCol = 3, kKeyCol = 5, kDoutCol = 3;  // the column of the NaN in q, k or dO

// Spec of the problem: odd lengths spanning several tiles, GQA, causal (so a key's NaN reaches only the rows
// that see it)
Spec spec(int score) {
    Spec s;
    s.B = 1, s.Nq = 77, s.Nk = 101, s.Hq = 2, s.Hk = 1, s.d = 64, s.score = score, s.causal = true;
    return s;
}

struct Problem {
    tu::View q, k, v, out, lse;
};

// Random q, k, v in dtype with one NaN at q[0, nan_row, 0, kQueryCol] (nan_row ≥ 0) or k[0, nan_key, 0, kKeyCol],
// and the forward's O and LSE; out is empty when the call failed.
Problem forward_problem(const Spec& s, int dtype, int64_t nan_row, int64_t nan_key) {
    Rng rng(11 + uint64_t(s.score) * 7 + uint64_t(dtype));
    Problem pr{tu::make_view(dtype, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
               tu::make_view(dtype, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
               tu::make_view(dtype, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
               tu::make_view(dtype, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
               tu::make_lse_view(tu::kContiguous, s.B, s.Hq, s.Nq)};
    auto normals = [&](size_t n) {
        std::vector<float> x(n);
        for (float& e : x) e = float(rng.normal());
        return x;
    };
    std::vector<float> qv = normals(size_t(s.q_elems())), kv = normals(size_t(s.kv_elems()));
    const float nan = std::numeric_limits<float>::quiet_NaN();
    if (nan_row >= 0) qv[size_t(nan_row * s.Hq * s.d + kQueryCol)] = nan;
    if (nan_key >= 0) kv[size_t(nan_key * s.Hk * s.d + kKeyCol)] = nan;
    pr.q.store(qv), pr.k.store(kv), pr.v.store(normals(size_t(s.kv_elems())));
    tu::poison(pr.out), tu::poison(pr.lse);
    const fsig_attention_params p = tu::params_for(s);
    const fsig_tensor tq = pr.q.desc(), tk = pr.k.desc(), tv = pr.v.desc(), to = pr.out.desc(), tl = pr.lse.desc();
    const int st = fsig_attention_forward(&p, &tq, &tk, &tv, &to, s.score == kSoftmax ? &tl : nullptr, nullptr);
    EXPECT(st == FSIG_OK, "%s %s: forward returned %d: %s", score_name(s.score), dtype_name(dtype), st,
           fsig_last_error());
    if (st != FSIG_OK) pr.out = tu::View();
    return pr;
}

// Elements of the forward's O, and of softmax's LSE, that break the rule: NaN exactly in the rows (query, head)
// that nan_at says, finite elsewhere (an LSE of +inf, "no allowed key", for a NaN row counts as wrong)
template <class NanAt>
int64_t wrong_outputs(const Spec& s, const Problem& pr, NanAt nan_at) {
    const auto expect = [&](int64_t i, int64_t h) { return nan_at(i, h) ? tu::Expect::kNan : tu::Expect::kFinite; };
    int64_t wrong = tu::count_unexpected(pr.out.load(), s.Nq, s.Hq, s.d,
                                         [&](int64_t i, int64_t h, int64_t) { return expect(i, h); });
    if (s.score == kSoftmax)  // [1, Hq, Nq]
        wrong += tu::count_unexpected(pr.lse.load(), s.Hq, s.Nq, 1,
                                      [&](int64_t h, int64_t i, int64_t) { return expect(i, h); });
    return wrong;
}

}  // namespace

TEST(nan_query_makes_its_row_nan) {
    for (int dtype : {kFp32, kFp16, kBf16})
        for (int score : kScores) {
            const Spec s = spec(score);
            const int64_t row = 40;  // (query 40 sees keys 0..64 under bottom-right causal)
            const Problem pr = forward_problem(s, dtype, row, -1);
            if (!pr.out.st) continue;
            const int64_t wrong = wrong_outputs(s, pr, [&](int64_t i, int64_t h) { return i == row && h == 0; });
            EXPECT(wrong == 0, "%s %s: %lld elements of O (LSE) are not NaN in the NaN query's row or not finite "
                   "elsewhere", score_name(score), dtype_name(dtype), (long long)wrong);
        }
}

TEST(nan_key_makes_the_rows_that_see_it_nan) {
    for (int dtype : {kFp32, kFp16, kBf16})
        for (int score : kScores) {
            const Spec s = spec(score);
            const int64_t key = 60, first_row = key - (s.Nk - s.Nq);  // bottom-right causal: rows i ≥ j − (Nk − Nq)
            const Problem pr = forward_problem(s, dtype, -1, key);
            if (!pr.out.st) continue;
            const int64_t wrong = wrong_outputs(s, pr, [&](int64_t i, int64_t) { return i >= first_row; });
            EXPECT(wrong == 0, "%s %s: %lld elements of O (LSE) are not NaN in the rows that see the NaN key or not "
                   "finite elsewhere", score_name(score), dtype_name(dtype), (long long)wrong);
        }
}

namespace {

// The backward of pr (forward_problem: O and LSE from its forward) with a finite dO but for a NaN at
// dO[0, dout_row, 0, kDoutCol] (dout_row ≥ 0); counts the elements of dQ, dK and dV (Hk = 1) that break
// expect_dq(i, h, c), expect_dk(j, c), expect_dv(j, c) and reports them under `what`.
template <class ExpectDq, class ExpectDk, class ExpectDv>
void check_backward_nan(const Spec& s, int dtype, const Problem& pr, int64_t dout_row, const std::string& what,
                        ExpectDq expect_dq, ExpectDk expect_dk, ExpectDv expect_dv) {
    if (!pr.out.st) return;  // (the forward's failure is reported)
    tu::View dout = tu::make_view(dtype, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
             dq = tu::make_view(dtype, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
             dk = tu::make_view(dtype, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
             dv = tu::make_view(dtype, tu::kContiguous, s.B, s.Nk, s.Hk, s.d);
    Rng rng(29 + uint64_t(s.score));
    std::vector<float> g(size_t(s.q_elems()));
    for (float& e : g) e = float(rng.normal());
    if (dout_row >= 0) g[size_t(dout_row * s.Hq * s.d + kDoutCol)] = std::numeric_limits<float>::quiet_NaN();
    dout.store(g);
    tu::poison(dq), tu::poison(dk), tu::poison(dv);
    const fsig_attention_params p = tu::params_for(s);
    const fsig_tensor tq = pr.q.desc(), tk = pr.k.desc(), tv = pr.v.desc(), to = pr.out.desc(), tl = pr.lse.desc(),
                      tg = dout.desc(), tdq = dq.desc(), tdk = dk.desc(), tdv = dv.desc();
    const int st = fsig_attention_backward(&p, &tq, &tk, &tv, &to, &tg, s.score == kSoftmax ? &tl : nullptr, &tdq,
                                           &tdk, &tdv, nullptr);
    EXPECT(st == FSIG_OK, "%s: backward returned %d: %s", what.c_str(), st, fsig_last_error());
    if (st != FSIG_OK) return;
    const int64_t wrong_dq = tu::count_unexpected(dq.load(), s.Nq, s.Hq, s.d, expect_dq),
                  wrong_dk = tu::count_unexpected(dk.load(), s.Nk, s.Hk, s.d,
                                                  [&](int64_t j, int64_t, int64_t c) { return expect_dk(j, c); }),
                  wrong_dv = tu::count_unexpected(dv.load(), s.Nk, s.Hk, s.d,
                                                  [&](int64_t j, int64_t, int64_t c) { return expect_dv(j, c); });
    EXPECT(wrong_dq + wrong_dk + wrong_dv == 0,
           "%s: %lld elements of dQ, %lld of dK, %lld of dV NaN where they should be finite or the reverse",
           what.c_str(), (long long)wrong_dq, (long long)wrong_dk, (long long)wrong_dv);
}

std::string case_name(const char* where, int64_t at, int score, int dtype) {
    return th::format("NaN in %s %lld, %s %s", where, (long long)at, score_name(score), dtype_name(dtype));
}

}  // namespace

// One NaN at dO[0, row, 0, kDoutCol], for a first, a middle and the last query row. dQ: the row (head 0) is NaN,
// every dS of it holds the NaN (dP, and softmax's D), and every other row is finite. dK: the keys the row sees
// are NaN, the others finite (a masked dS is 0, not 0·dP), but under relu and relu2 a seen key whose score is
// ≤ 0 has dS = 0: finite (tu::seen_key_dk_after_nan_dout). dV = Pᵀ dO: that column of the seen keys is NaN
// (relu's P = 0 too: the tile product takes 0 times NaN), every other column finite. Left open: that column of
// a masked key that shares a kernel tile with the row (NaN by IEEE, as in FlashAttention's kernels and
// PyTorch's math backend).
TEST(nan_dout_reaches_the_gradients_that_depend_on_it) {
    using tu::Expect;
    for (int dtype : {kFp32, kFp16, kBf16})
        for (int score : kScores)
            for (int64_t row : {0, 40, 76}) {
                const Spec s = spec(score);
                const int64_t last_key = row + (s.Nk - s.Nq);  // bottom-right causal: keys 0..last_key
                const Problem pr = forward_problem(s, dtype, -1, -1);
                if (!pr.out.st) continue;
                const std::vector<float> qv = pr.q.load(), kv = pr.k.load();
                const std::vector<Expect> seen_dk = tu::seen_key_dk_after_nan_dout(
                    score, &qv[size_t(row * s.Hq * s.d)], kv.data(), last_key + 1, s.Hk * s.d, s.d);
                check_backward_nan(
                    s, dtype, pr, row, case_name("dO row", row, score, dtype),
                    [&](int64_t i, int64_t h, int64_t) { return i == row && h == 0 ? Expect::kNan : Expect::kFinite; },
                    [&](int64_t j, int64_t) { return j <= last_key ? seen_dk[size_t(j)] : Expect::kFinite; },
                    [&](int64_t j, int64_t c) {
                        if (c != kDoutCol) return Expect::kFinite;
                        return j <= last_key ? Expect::kNan : Expect::kEither;
                    });
            }
}

// One NaN at q[0, row, 0, kQueryCol]. dV = Pᵀ dO: the keys the row sees are NaN (their P is), the others finite.
// dQ of the row is NaN where dS takes the NaN score (tu::ds_takes_nan_score) and finite where not; every other row
// finite. dK = dSᵀ Q: that column of the seen keys NaN under every score (the row's dS, finite or not, times the
// NaN), their other columns as the row's dQ; unseen keys finite, but that column is left open (a masked dS is 0,
// times the NaN where the key shares a tile with the row). (Softmax's P clamped to ≤ 1 by a min that drops a
// NaN gave P = 1: dV finite.)
TEST(nan_query_reaches_the_gradients_that_depend_on_it) {
    using tu::Expect;
    for (int dtype : {kFp32, kFp16, kBf16})
        for (int score : kScores)
            for (int64_t row : {0, 40, 76}) {
                const Spec s = spec(score);
                const int64_t last_key = row + (s.Nk - s.Nq);
                const Expect through_ds = tu::ds_takes_nan_score(score) ? Expect::kNan : Expect::kFinite;
                check_backward_nan(
                    s, dtype, forward_problem(s, dtype, row, -1), -1, case_name("Q row", row, score, dtype),
                    [&](int64_t i, int64_t h, int64_t) { return i == row && h == 0 ? through_ds : Expect::kFinite; },
                    [&](int64_t j, int64_t c) {
                        if (j > last_key) return c == kQueryCol ? Expect::kEither : Expect::kFinite;
                        return c == kQueryCol ? Expect::kNan : through_ds;
                    },
                    [&](int64_t j, int64_t) { return j <= last_key ? Expect::kNan : Expect::kFinite; });
            }
}

// One NaN at k[0, key, 0, kKeyCol], seen by the rows from first_row on (both query heads: Hk = 1). Pointwise scores:
// P of that key is NaN in those rows, so its dV is NaN and every other key's finite; its dK is NaN where dS
// takes the NaN score and finite where not (dS · Q), every other key's finite (their dS and Q are). dQ = dS K:
// that column of the rows that see the key NaN (their dS of it, finite or not, times the NaN), their other columns
// as that dS; the other rows finite, that column open (a masked dS is 0, times the NaN in a shared tile). Softmax:
// the key's NaN reaches each such row's LSE and D, so every P and dS of the row: their dQ is NaN, and every key
// is seen by one of them (the last row sees all), so all of dK and dV is NaN.
TEST(nan_key_reaches_the_gradients_that_depend_on_it) {
    using tu::Expect;
    for (int dtype : {kFp32, kFp16, kBf16})
        for (int score : kScores)
            for (int64_t key : {0, 60, 100}) {
                const Spec s = spec(score);
                const int64_t first_row = std::max<int64_t>(0, key - (s.Nk - s.Nq));
                const bool softmax = score == kSoftmax;
                const Expect through_ds = tu::ds_takes_nan_score(score) ? Expect::kNan : Expect::kFinite;
                check_backward_nan(
                    s, dtype, forward_problem(s, dtype, -1, key), -1, case_name("K row", key, score, dtype),
                    [&](int64_t i, int64_t, int64_t c) {
                        if (i < first_row) return c == kKeyCol ? Expect::kEither : Expect::kFinite;
                        return c == kKeyCol ? Expect::kNan : through_ds;
                    },
                    [&](int64_t j, int64_t) {
                        if (softmax) return Expect::kNan;
                        return j == key ? through_ds : Expect::kFinite;
                    },
                    [&](int64_t j, int64_t) { return softmax || j == key ? Expect::kNan : Expect::kFinite; });
            }
}

int main(int argc, char** argv) {
    const int isa = tu::check_isa_env();
    if (isa != 0) return isa;
    return th::run_all(std::vector<std::string>(argv + 1, argv + argc));
}
