// A NaN in the inputs stays NaN where the math puts it and nowhere else (the CPU backend's forward; the CUDA
// kernels' check is test_cuda_forward's nan_propagates): one NaN element of Q makes its query row of
// O NaN under every score function, as the fp64 reference (and PyTorch's relu) would, and leaves the other rows
// finite; one NaN element of K does the same to every row that may see its key. A min or max that drops a NaN
// (relu as max(x, 0) did) shows here as a finite row.
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

// The forward with one NaN at q[0, nan_row, 0, 3] (nan_row ≥ 0) or k[0, nan_key, 0, 5]; returns O in [B, N, H, d]
// order, or an empty vector when the call failed.
std::vector<float> forward_with_nan(const Spec& s, int dtype, int64_t nan_row, int64_t nan_key) {
    Rng rng(11 + uint64_t(s.score) * 7 + uint64_t(dtype));
    tu::View q = tu::make_view(dtype, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
             k = tu::make_view(dtype, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
             v = tu::make_view(dtype, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
             out = tu::make_view(dtype, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
             lse = tu::make_lse_view(tu::kContiguous, s.B, s.Hq, s.Nq);
    auto normals = [&](size_t n) {
        std::vector<float> x(n);
        for (float& e : x) e = float(rng.normal());
        return x;
    };
    std::vector<float> qv = normals(size_t(s.q_elems())), kv = normals(size_t(s.kv_elems()));
    const float nan = std::numeric_limits<float>::quiet_NaN();
    if (nan_row >= 0) qv[size_t(nan_row * s.Hq * s.d + 3)] = nan;
    if (nan_key >= 0) kv[size_t(nan_key * s.Hk * s.d + 5)] = nan;
    q.store(qv), k.store(kv), v.store(normals(size_t(s.kv_elems())));
    tu::poison(out), tu::poison(lse);
    const fsig_attention_params p = tu::params_for(s);
    const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), to = out.desc(), tl = lse.desc();
    const int st = fsig_attention_forward(&p, &tq, &tk, &tv, &to, s.score == kSoftmax ? &tl : nullptr, nullptr);
    EXPECT(st == FSIG_OK, "%s %s: forward returned %d: %s", score_name(s.score), dtype_name(dtype), st,
           fsig_last_error());
    return st == FSIG_OK ? out.load() : std::vector<float>();
}

// Elements of O that break the rule: NaN exactly in the rows (query, head) that nan_at says, finite elsewhere
template <class NanAt>
int64_t wrong_elements(const Spec& s, const std::vector<float>& o, NanAt nan_at) {
    int64_t wrong = 0;
    for (int64_t i = 0; i < s.Nq; ++i)
        for (int64_t h = 0; h < s.Hq; ++h)
            for (int64_t c = 0; c < s.d; ++c) {
                const float x = o[size_t((i * s.Hq + h) * s.d + c)];
                wrong += nan_at(i, h) ? !std::isnan(x) : !std::isfinite(x);
            }
    return wrong;
}

}  // namespace

TEST(nan_query_makes_its_row_nan) {
    for (int dtype : {kFp32, kFp16, kBf16})
        for (int score : kScores) {
            const Spec s = spec(score);
            const int64_t row = 40;  // (query 40 sees keys 0..64 under bottom-right causal)
            const std::vector<float> o = forward_with_nan(s, dtype, row, -1);
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
            const std::vector<float> o = forward_with_nan(s, dtype, -1, key);
            if (o.empty()) continue;
            const int64_t wrong = wrong_elements(s, o, [&](int64_t i, int64_t) { return i >= first_row; });
            EXPECT(wrong == 0, "%s %s: %lld elements of O are not NaN in the rows that see the NaN key or not finite "
                   "elsewhere", score_name(score), dtype_name(dtype), (long long)wrong);
        }
}

int main(int argc, char** argv) {
    const int isa = tu::check_isa_env();
    if (isa != 0) return isa;
    return th::run_all(std::vector<std::string>(argv + 1, argv + argc));
}
