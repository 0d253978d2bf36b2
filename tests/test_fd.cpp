// Backward checked by finite differences (DESIGN.md §6): on small fp32 problems, central differences
// of the fp64 reference forward give dQ, dK, dV of L = <dO, O>. Both the reference's analytic fp64
// gradients (validating its formulas) and the library's fp32 gradients must match them.
// relu and relu2 have a kink at S = 0: inputs are redrawn until every allowed |S| > 1e-3, far beyond
// what a step of 1e-5 on one input moves S (|ΔS| ≤ 1e-5 · scale · |k| ≈ 1e-5).
#include <cmath>
#include <cstdio>

#include "harness.h"
#include "lib_util.h"

using namespace ref;

namespace {

struct FdCase {
    Spec s;
    const char* what;
};

std::vector<FdCase> fd_cases() {
    std::vector<FdCase> cases;
    for (int score = 0; score < kScoreCount; ++score) {
        FdCase a;
        a.s.B = 2, a.s.Nq = 6, a.s.Nk = 9, a.s.Hq = 2, a.s.Hk = 2, a.s.d = 8, a.s.score = score, a.what = "mha";
        cases.push_back(a);
        FdCase b = a;
        b.s.Hq = 4, b.s.Hk = 2, b.s.causal = true, b.s.window_left = 3, b.what = "gqa+causal+window_left";
        cases.push_back(b);
        FdCase c = a;  // Nq > Nk: causal leaves the first rows without keys
        c.s.B = 1, c.s.Nq = 10, c.s.Nk = 7, c.s.Hq = 3, c.s.Hk = 1, c.s.causal = true, c.s.window_right = 0;
        c.what = "mqa+causal+empty_rows";
        cases.push_back(c);
        FdCase e = a;
        e.s.Nq = 7, e.s.Nk = 12, e.s.Hq = 4, e.s.Hk = 1, e.s.window_left = 2, e.s.window_right = 4, e.s.scale = 0.45,
        e.s.alpha = 0.7, e.s.sigmoid_bias = -1.2, e.what = "window_both+scale+alpha+bias";
        cases.push_back(e);
    }
    return cases;
}

double max_abs(const std::vector<double>& x) {
    double m = 0;
    for (double e : x) m = std::max(m, std::fabs(e));
    return m;
}

// max |a − b| and where
template <class A>
double max_diff(const std::vector<A>& a, const std::vector<double>& b, size_t* at) {
    double m = 0;
    *at = 0;
    for (size_t i = 0; i < b.size(); ++i) {
        const double d = std::fabs(double(a[i]) - b[i]);
        if (!(d <= m)) m = d, *at = i;
    }
    return m;
}

}  // namespace

TEST(backward_matches_finite_differences) {
    int idx = 0;
    for (const FdCase& fc : fd_cases()) {
        const Spec& s = fc.s;
        const std::string name = th::format("fd%02d_%s_%s", idx, score_name(s.score), fc.what);
        Rng rng(7000 + idx++);
        std::vector<float> qf, kf;
        for (int attempt = 0;; ++attempt) {
            qf = random_values(rng, s.q_elems(), kFp32);
            kf = random_values(rng, s.kv_elems(), kFp32);
            const auto q = tu::to_double(qf), k = tu::to_double(kf);
            if (min_abs_score(s, q.data(), k.data()) > 1e-3) break;
            REQUIRE(attempt < 1000, "%s: no inputs with |S| > 1e-3 found", name.c_str());
        }
        const auto vf = random_values(rng, s.kv_elems(), kFp32), gf = random_values(rng, s.q_elems(), kFp32);
        const auto q = tu::to_double(qf), k = tu::to_double(kf), v = tu::to_double(vf), g = tu::to_double(gf);
        const Grads<double> fd = fd_grads(s, q.data(), k.data(), v.data(), g.data());
        const Grads<double> an = backward64(s, q.data(), k.data(), v.data(), g.data());
        const Forward<double> f = forward64(s, q.data(), k.data(), v.data());

        // the library, fp32, given O and LSE of the fp64 forward
        tu::View tq = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
                 tk = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
                 tv = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
                 to = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
                 tg = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
                 tl = tu::make_lse_view(tu::kContiguous, s.B, s.Hq, s.Nq),
                 dq = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
                 dk = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
                 dv = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, s.B, s.Nk, s.Hk, s.d);
        tq.store(qf), tk.store(kf), tv.store(vf), tg.store(gf);
        to.store(tu::to_float_rounded(f.out, kFp32));
        const bool softmax = s.score == kSoftmax;
        if (softmax) tl.store(std::vector<float>(f.lse.begin(), f.lse.end()));
        tu::poison(dq), tu::poison(dk), tu::poison(dv);
        const fsig_attention_params p = tu::params_for(s);
        const fsig_tensor a = tq.desc(), b = tk.desc(), c = tv.desc(), o = to.desc(), go = tg.desc(), l = tl.desc(),
                          gq = dq.desc(), gk = dk.desc(), gv = dv.desc();
        const int st = fsig_attention_backward(&p, &a, &b, &c, &o, &go, softmax ? &l : nullptr, &gq, &gk, &gv, nullptr);
        REQUIRE(st == FSIG_OK, "%s: backward returned %d: %s", name.c_str(), st, fsig_last_error());

        const char* names[3] = {"dq", "dk", "dv"};
        const std::vector<double>* fds[3] = {&fd.dq, &fd.dk, &fd.dv};
        const std::vector<double>* ans[3] = {&an.dq, &an.dk, &an.dv};
        const std::vector<float> lib[3] = {dq.load(), dk.load(), dv.load()};
        for (int t = 0; t < 3; ++t) {
            const double mag = std::max(1.0, max_abs(*fds[t]));
            size_t at;
            const double e_ref = max_diff(*ans[t], *fds[t], &at);
            EXPECT(e_ref <= 1e-7 * mag, "%s %s: reference analytic vs finite differences %.3g at %zu (%.10g vs %.10g) [%s]",
                   name.c_str(), names[t], e_ref, at, (*ans[t])[at], (*fds[t])[at], s.describe().c_str());
            const double e_lib = max_diff(lib[t], *fds[t], &at);
            // fp32 inputs and accumulation on sums of ≤ 12·4 terms: ~1e-6 relative; 2e-5 leaves room
            EXPECT(e_lib <= 2e-5 * mag, "%s %s: library vs finite differences %.3g at %zu (%.10g vs %.10g) [%s]",
                   name.c_str(), names[t], e_lib, at, double(lib[t][at]), (*fds[t])[at], s.describe().c_str());
        }
    }
}

int main(int argc, char** argv) {
    const int isa = tu::check_isa_env();
    if (isa != 0) return isa;
    return th::run_all(std::vector<std::string>(argv + 1, argv + argc));
}
