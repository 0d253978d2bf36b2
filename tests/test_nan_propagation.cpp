// A NaN in the inputs stays NaN where the math puts it and nowhere else (the CPU backend; the CUDA
// kernels' check is test_cuda_forward's nan_propagates): one NaN element of Q makes its query row of
// O NaN under every score function, as the fp64 reference (and PyTorch's relu) would, and leaves the other rows
// finite; one NaN element of K does the same to every row that may see its key. A min or max that drops a NaN
// (relu as max(x, 0) did) shows here as a finite row. In the backward one NaN element of dO reaches the
// gradients that depend on it and no other dQ or dK row: a masked dS computed from it instead of set to 0
// would show as a NaN row elsewhere.
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

// Random q, k, v in dtype with one NaN at q[0, nan_row, 0, 3] (nan_row ≥ 0) or k[0, nan_key, 0, 5], and the
// forward's O and LSE; out is empty when the call failed.
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
    if (nan_row >= 0) qv[size_t(nan_row * s.Hq * s.d + 3)] = nan;
    if (nan_key >= 0) kv[size_t(nan_key * s.Hk * s.d + 5)] = nan;
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

// O of the forward above in [B, N, H, d] order, or an empty vector when the call failed
std::vector<float> forward_out_with_nan(const Spec& s, int dtype, int64_t nan_row, int64_t nan_key) {
    const Problem pr = forward_problem(s, dtype, nan_row, nan_key);
    return pr.out.st ? pr.out.load() : std::vector<float>();
}

// Elements of O that break the rule: NaN exactly in the rows (query, head) that nan_at says, finite elsewhere
template <class NanAt>
int64_t wrong_elements(const Spec& s, const std::vector<float>& o, NanAt nan_at) {
    return tu::count_unexpected(o, s.Nq, s.Hq, s.d, [&](int64_t i, int64_t h, int64_t) {
        return nan_at(i, h) ? tu::Expect::kNan : tu::Expect::kFinite;
    });
}

}  // namespace

TEST(nan_query_makes_its_row_nan) {
    for (int dtype : {kFp32, kFp16, kBf16})
        for (int score : kScores) {
            const Spec s = spec(score);
            const int64_t row = 40;  // (query 40 sees keys 0..64 under bottom-right causal)
            const std::vector<float> o = forward_out_with_nan(s, dtype, row, -1);
            if (o.empty()) continue;
            const int64_t wrong = wrong_elements(s, o, [&](int64_t i, int64_t h) { return i == row && h == 0; });
            EXPECT(wrong == 0, "%s %s: %lld elements of O are not NaN in the NaN query's row or not finite elsewhere",
                   score_name(score), dtype_name(dtype), (long long)wrong);
        }
}

TEST(nan_key_makes_the_rows_that_see_it_nan) {
    for (int dtype : {kFp32, kFp16, kBf16})
        for (int score : kScores) {
            const Spec s = spec(score);
            const int64_t key = 60, first_row = key - (s.Nk - s.Nq);  // bottom-right causal: rows i ≥ j − (Nk − Nq)
            const std::vector<float> o = forward_out_with_nan(s, dtype, -1, key);
            if (o.empty()) continue;
            const int64_t wrong = wrong_elements(s, o, [&](int64_t i, int64_t) { return i >= first_row; });
            EXPECT(wrong == 0, "%s %s: %lld elements of O are not NaN in the rows that see the NaN key or not finite "
                   "elsewhere", score_name(score), dtype_name(dtype), (long long)wrong);
        }
}

// One NaN at dO[0, row, 0, 3], for a first, a middle and the last query row. dQ: the row (head 0) is NaN, every
// dS of it holds the NaN (dP, and softmax's D), and every other row is finite. dK: the keys the row sees are NaN,
// the others finite (a masked dS is 0, not 0·dP). dV = Pᵀ dO: column 3 of the seen keys is NaN, every other
// column finite. Left open: column 3 of a masked key that shares a kernel tile with the row, where the product
// takes P = 0 times NaN (NaN by IEEE, as in FlashAttention's kernels and PyTorch's math backend), and under relu
// and relu2 the dK and dV column 3 of a seen key whose score is ≤ 0, where P and the gradient are 0 and 0 times
// NaN may give NaN (IEEE: relu2's 2·max(x, 0)·dP, the dense Pᵀ dO) or 0 (PyTorch's where-form: relu's dS).
TEST(nan_dout_reaches_the_gradients_that_depend_on_it) {
    for (int dtype : {kFp32, kFp16, kBf16})
        for (int score : kScores)
            for (int64_t row : {0, 40, 76}) {
                const Spec s = spec(score);
                const int64_t last_key = row + (s.Nk - s.Nq), col = 3;  // bottom-right causal: keys 0..last_key
                Problem pr = forward_problem(s, dtype, -1, -1);  // (no NaN in Q or K)
                if (!pr.out.st) continue;
                tu::View dout = tu::make_view(dtype, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
                         dq = tu::make_view(dtype, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
                         dk = tu::make_view(dtype, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
                         dv = tu::make_view(dtype, tu::kContiguous, s.B, s.Nk, s.Hk, s.d);
                Rng rng(29 + uint64_t(score));
                std::vector<float> g(size_t(s.q_elems()));
                for (float& e : g) e = float(rng.normal());
                g[size_t(row * s.Hq * s.d + col)] = std::numeric_limits<float>::quiet_NaN();
                dout.store(g);
                tu::poison(dq), tu::poison(dk), tu::poison(dv);
                const fsig_attention_params p = tu::params_for(s);
                const fsig_tensor tq = pr.q.desc(), tk = pr.k.desc(), tv = pr.v.desc(), to = pr.out.desc(),
                                  tl = pr.lse.desc(), tg = dout.desc(), tdq = dq.desc(), tdk = dk.desc(),
                                  tdv = dv.desc();
                const int st = fsig_attention_backward(&p, &tq, &tk, &tv, &to, &tg, score == kSoftmax ? &tl : nullptr,
                                                       &tdq, &tdk, &tdv, nullptr);
                EXPECT(st == FSIG_OK, "%s %s: backward returned %d: %s", score_name(score), dtype_name(dtype), st,
                       fsig_last_error());
                if (st != FSIG_OK) continue;
                using tu::Expect;
                // seen key j: NaN, but where relu's or relu2's P is 0 (the score's sign from the stored inputs)
                const std::vector<float> qv = pr.q.load(), kv = pr.k.load();
                auto seen = [&](int64_t j) {
                    if (score != kRelu && score != kRelu2) return Expect::kNan;
                    double dot = 0;
                    for (int64_t c = 0; c < s.d; ++c)
                        dot += double(qv[size_t(row * s.Hq * s.d + c)]) * kv[size_t(j * s.d + c)];
                    return dot > 0 ? Expect::kNan : Expect::kEither;
                };
                const int64_t wrong_dq =
                    tu::count_unexpected(dq.load(), s.Nq, s.Hq, s.d, [&](int64_t i, int64_t h, int64_t) {
                        return i == row && h == 0 ? Expect::kNan : Expect::kFinite;
                    });
                const int64_t wrong_dk = tu::count_unexpected(dk.load(), s.Nk, s.Hk, s.d, [&](int64_t j, int64_t, int64_t) {
                    return j <= last_key ? seen(j) : Expect::kFinite;
                });
                const int64_t wrong_dv =
                    tu::count_unexpected(dv.load(), s.Nk, s.Hk, s.d, [&](int64_t j, int64_t, int64_t c) {
                        return c != col ? Expect::kFinite : j <= last_key ? seen(j) : Expect::kEither;
                    });
                EXPECT(wrong_dq + wrong_dk + wrong_dv == 0,
                       "%s %s, NaN in dO row %lld: %lld elements of dQ, %lld of dK, %lld of dV NaN where they should "
                       "be finite or the reverse", score_name(score), dtype_name(dtype), (long long)row,
                       (long long)wrong_dq, (long long)wrong_dk, (long long)wrong_dv);
            }
}

int main(int argc, char** argv) {
    const int isa = tu::check_isa_env();
    if (isa != 0) return isa;
    return th::run_all(std::vector<std::string>(argv + 1, argv + argc));
}
