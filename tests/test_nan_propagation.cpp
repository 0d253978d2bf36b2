// A NaN in the inputs stays NaN where the math puts it and nowhere else (the CPU backend; the CUDA kernels'
// checks are test_cuda_forward's nan_propagates and test_cuda_backward's nan_backward, by the same rules:
// tu::NanRules). One NaN element of q, k or v in the forward, of dO, q, k or v in the backward, at a first, a
// middle and a last row or key, under every score and dtype, causal (so that a key's NaN reaches only the rows
// that see it) with GQA. A min or max that drops a NaN (relu as max(x, 0) did; softmax's P ≤ 1 clamp and its
// LSE of +inf for a NaN row did) shows as a finite element where NaN belongs; a masked dS or P computed from the
// NaN instead of set to 0, or V's NaN leaking into dV, as a NaN where a finite value belongs.
#include <array>
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "harness.h"
#include "lib_util.h"

using namespace ref;
using tu::NanIn;

namespace {

constexpr int kScores[] = {kSoftmax, kSigmoid, kRelu, kRelu2, kGelu, kSoftplus, kIdentity};
constexpr std::array<int64_t, 3> kRows{0, 40, 76}, kKeys{0, 60, 100};  // where the NaN goes: query (dO) rows, keys

// Spec of the problem: odd lengths spanning several tiles, GQA, causal
Spec spec(int score) {
    Spec s;
    s.B = 1, s.Nq = 77, s.Nk = 101, s.Hq = 2, s.Hk = 1, s.d = 64, s.score = score, s.causal = true;
    return s;
}

std::vector<float> normals(Rng& rng, size_t n) {
    std::vector<float> x(n);
    for (float& e : x) e = float(rng.normal());
    return x;
}

// Random inputs in dtype with one NaN in `source` at `at` (head 0, NanRules::column), the forward's O and LSE, and
// the rules (computed from the inputs without the NaN); out is empty when the forward failed.
struct Problem {
    Spec s;
    int dtype;
    NanIn source;
    int64_t at;
    tu::View q, k, v, out, lse;
    std::vector<float> dout;
    tu::NanRules rules;

    static Problem make(int score, int dtype, NanIn source, int64_t at) {
        const Spec s = spec(score);
        Rng rng(11 + uint64_t(s.score) * 7 + uint64_t(dtype));
        std::vector<float> qv = normals(rng, s.q_elems()), kv = normals(rng, s.kv_elems()),
                           vv = normals(rng, s.kv_elems()), g = normals(rng, s.q_elems());
        // as the library sees them: the rules' score signs (relu) come from the rounded values
        for (std::vector<float>* x : {&qv, &kv, &vv, &g})
            for (float& e : *x) e = ref::round_to(dtype, e);
        Problem pr{s, dtype, source, at,
                   tu::make_view(dtype, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
                   tu::make_view(dtype, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
                   tu::make_view(dtype, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
                   tu::make_view(dtype, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
                   tu::make_lse_view(tu::kContiguous, s.B, s.Hq, s.Nq), {},
                   tu::NanRules(source, s, at, qv, kv)};
        pr.rules.place(source == NanIn::kDout ? g : source == NanIn::kQuery ? qv : source == NanIn::kKey ? kv : vv);
        pr.q.store(qv), pr.k.store(kv), pr.v.store(vv), pr.dout = std::move(g);
        tu::poison(pr.out), tu::poison(pr.lse);
        const fsig_attention_params p = tu::params_for(s);
        const fsig_tensor tq = pr.q.desc(), tk = pr.k.desc(), tv = pr.v.desc(), to = pr.out.desc(),
                          tl = pr.lse.desc();
        const int st = fsig_attention_forward(&p, &tq, &tk, &tv, &to, s.score == kSoftmax ? &tl : nullptr, nullptr);
        EXPECT(st == FSIG_OK, "%s: forward returned %d: %s", pr.name().c_str(), st, fsig_last_error());
        if (st != FSIG_OK) pr.out = tu::View();
        return pr;
    }

    std::string name() const {
        return th::format("NaN in %s at %lld, %s %s", tu::nan_in_name(source), (long long)at, score_name(s.score),
                          dtype_name(dtype));
    }
};

// Every case: each source at each of its positions, every score and dtype
template <class Check>
void for_each_case(std::initializer_list<NanIn> sources, Check check) {
    for (NanIn source : sources)
        for (int dtype : {kFp32, kFp16, kBf16})
            for (int score : kScores)
                for (int64_t at : source == NanIn::kKey || source == NanIn::kValue ? kKeys : kRows) {
                    Problem pr = Problem::make(score, dtype, source, at);
                    if (pr.out.st) check(pr);  // (a failed forward is reported)
                }
}

}  // namespace

// O (and softmax's LSE) NaN exactly where the rules say: a NaN in q makes its row NaN, one in k every row that
// sees the key (softmax's LSE too, as NaN: +inf would mean "no allowed key"), one in v that column of those rows
// (relu's P = 0 as well: 0 times NaN).
TEST(nan_in_the_forward_inputs) {
    for_each_case({NanIn::kQuery, NanIn::kKey, NanIn::kValue}, [](const Problem& pr) {
        const Spec& s = pr.s;
        int64_t wrong = tu::count_unexpected(pr.out.load(), s.Nq, s.Hq, s.d,
                                             [&](int64_t i, int64_t h, int64_t c) { return pr.rules.out(i, h, c); });
        if (s.score == kSoftmax)  // [1, Hq, Nq]
            wrong += tu::count_unexpected(pr.lse.load(), s.Hq, s.Nq, 1,
                                          [&](int64_t h, int64_t i, int64_t) { return pr.rules.lse(i, h); });
        EXPECT(wrong == 0, "%s: %lld elements of O (LSE) NaN where they should be finite or the reverse",
               pr.name().c_str(), (long long)wrong);
    });
}

// dQ, dK and dV NaN exactly where the rules say, for a NaN in dO, q, k or v (O and LSE from the forward of
// the same inputs, as a training step hands them over)
TEST(nan_in_the_backward_inputs) {
    for_each_case({NanIn::kDout, NanIn::kQuery, NanIn::kKey, NanIn::kValue}, [](const Problem& pr) {
        const Spec& s = pr.s;
        tu::View dout = tu::make_view(pr.dtype, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
                 dq = tu::make_view(pr.dtype, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
                 dk = tu::make_view(pr.dtype, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
                 dv = tu::make_view(pr.dtype, tu::kContiguous, s.B, s.Nk, s.Hk, s.d);
        dout.store(pr.dout);
        tu::poison(dq), tu::poison(dk), tu::poison(dv);
        const fsig_attention_params p = tu::params_for(s);
        const fsig_tensor tq = pr.q.desc(), tk = pr.k.desc(), tv = pr.v.desc(), to = pr.out.desc(),
                          tl = pr.lse.desc(), tg = dout.desc(), tdq = dq.desc(), tdk = dk.desc(), tdv = dv.desc();
        const int st = fsig_attention_backward(&p, &tq, &tk, &tv, &to, &tg, s.score == kSoftmax ? &tl : nullptr,
                                               &tdq, &tdk, &tdv, nullptr);
        EXPECT(st == FSIG_OK, "%s: backward returned %d: %s", pr.name().c_str(), st, fsig_last_error());
        if (st != FSIG_OK) return;
        const tu::NanRules& r = pr.rules;
        const int64_t wrong_dq = tu::count_unexpected(dq.load(), s.Nq, s.Hq, s.d,
                                                      [&](int64_t i, int64_t h, int64_t c) { return r.dq(i, h, c); }),
                      wrong_dk = tu::count_unexpected(dk.load(), s.Nk, s.Hk, s.d,
                                                      [&](int64_t j, int64_t, int64_t c) { return r.dk(j, c); }),
                      wrong_dv = tu::count_unexpected(dv.load(), s.Nk, s.Hk, s.d,
                                                      [&](int64_t j, int64_t, int64_t c) { return r.dv(j, c); });
        EXPECT(wrong_dq + wrong_dk + wrong_dv == 0,
               "%s: %lld elements of dQ, %lld of dK, %lld of dV NaN where they should be finite or the reverse",
               pr.name().c_str(), (long long)wrong_dq, (long long)wrong_dk, (long long)wrong_dv);
    });
}

int main(int argc, char** argv) {
    const int isa = tu::check_isa_env();
    if (isa != 0) return isa;
    return th::run_all(std::vector<std::string>(argv + 1, argv + argc));
}
