// The CUDA forward through the public C ABI, against the fp64 reference of tests/reference.h under the
// DESIGN §6 rule: every score × causal × window × MHA/GQA/MQA × fp16/bf16 × d 64/128 on ragged shapes
// (Nq, Nk ∈ {1, 17, 128, 257, 1000}), out and LSE; strided layouts; refusals (which must write
// nothing); non-default streams, CUDA-graph capture and the caller's current device.
//
//   test_cuda_forward [--quick] [--device cpu] [--list] [--verbose] [name filters...]
//
// Exits 77 (CTest: skipped) with a message when the library has no CUDA or no device is present.
// --quick: a small subset for compute-sanitizer (tests/gpu/run-compute-sanitizer.sh).
// --device cpu: the same numerics cases through the CPU backend — checks this test itself on a machine
//      without a GPU (the CUDA-only tests are left out).
// Inputs are drawn from a fixed seed per case (its name reproduces it: pass it as a filter); outputs are
// poisoned with NaN before every call, and the bytes around each output's view must stay poisoned.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cuda_harness.h"
#include "driver_entry.h"
#include "flashsig.h"
#include "harness.h"
#include "lib_util.h"
#include "reference.h"

namespace {

using gt::g_cuda;
using gt::g_device_count;
using gt::g_filters;
using gt::g_list;
using gt::g_quick;
using gt::g_verbose;

using gt::device_alloc;
using gt::mirror;
using gt::poison;
using gt::Tensor;
using fsig::cuda::driver_entry;  // the test links no libcuda

using gt::padded8_view;

enum Layout { kContig, kBhsd, kPadded8, kPacked, kLayouts };
const char* kLayoutNames[] = {"contig", "bhsd", "padded8", "packed"};

tu::View make_layout(int layout, int dtype, int64_t B, int64_t N, int64_t H, int64_t d) {
    if (layout == kPadded8) return padded8_view(dtype, B, N, H, d);
    return tu::make_view(dtype, layout == kBhsd ? tu::kBHSD : tu::kContiguous, B, N, H, d);
}

struct Case {
    std::string name;
    ref::Spec s;
    int dtype = ref::kBf16;
    int layout = kContig;
    bool lse_strided = false;
    bool with_lse = true;
    uint64_t seed = 1;
};

// Runs one case; returns true when every check passed (failures are recorded in the harness).
bool run_case(const Case& c) {
    const int before = th::failures();
    const ref::Spec& s = c.s;
    const bool softmax = s.score == ref::kSoftmax;
    ref::Rng rng(c.seed);
    const std::vector<float> qf = ref::random_values(rng, s.q_elems(), c.dtype),
                             kf = ref::random_values(rng, s.kv_elems(), c.dtype),
                             vf = ref::random_values(rng, s.kv_elems(), c.dtype);
    const std::vector<double> q64 = tu::to_double(qf), k64 = tu::to_double(kf), v64 = tu::to_double(vf);
    const ref::Forward<double> r64 = ref::forward64(s, q64.data(), k64.data(), v64.data());
    const ref::Forward<float> rn = ref::forward_naive(s, c.dtype, qf.data(), kf.data(), vf.data());

    Tensor q, k, v;
    if (c.layout == kPacked && s.Nq == s.Nk) {
        tu::QKV packed = tu::make_qkv(c.dtype, tu::kPackedQKV, s);
        std::shared_ptr<void> dev = g_cuda ? device_alloc(packed.q.st->bytes) : nullptr;
        q = mirror(packed.q, dev), k = mirror(packed.k, dev), v = mirror(packed.v, dev);
    } else {
        const int l = c.layout == kPacked ? kContig : c.layout;
        q = mirror(make_layout(l, c.dtype, s.B, s.Nq, s.Hq, s.d));
        k = mirror(make_layout(l, c.dtype, s.B, s.Nk, s.Hk, s.d));
        v = mirror(make_layout(l, c.dtype, s.B, s.Nk, s.Hk, s.d));
    }
    q.host.store(qf), k.host.store(kf), v.host.store(vf);
    q.upload(), k.upload(), v.upload();  // (packed: the same storage three times, harmless)
    const int out_layout = c.layout == kPacked ? kPadded8 : c.layout;
    Tensor out = mirror(make_layout(out_layout, c.dtype, s.B, s.Nq, s.Hq, s.d));
    const bool want_lse = softmax && c.with_lse;
    Tensor lse;
    if (want_lse) lse = mirror(tu::make_lse_view(c.lse_strided ? tu::kPadded : tu::kContiguous, s.B, s.Hq, s.Nq));
    poison(out);
    if (want_lse) poison(lse);

    const fsig_attention_params p = tu::params_for(s);
    const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), to = out.desc();
    fsig_tensor tl;
    if (want_lse) tl = lse.desc();
    const int st = fsig_attention_forward(&p, &tq, &tk, &tv, &to, want_lse ? &tl : nullptr, nullptr);
    if (st != FSIG_OK) {
        EXPECT(false, "%s: forward returned %d (%s): %s", c.name.c_str(), st, fsig_status_string(st), fsig_last_error());
        return false;
    }
    if (g_cuda) {
        const cudaError_t e = cudaDeviceSynchronize();
        if (e != cudaSuccess) {
            std::fprintf(stderr, "%s: the kernel failed: %s (the CUDA context is lost; stopping)\n", c.name.c_str(),
                         cudaGetErrorString(e));
            std::exit(1);
        }
    }
    out.download();
    const std::vector<int64_t> oshape{s.B, s.Nq, s.Hq, s.d}, lshape{s.B, s.Hq, s.Nq};
    const std::vector<float> ours = out.host.load();
    const ref::RuleResult ro = ref::check_rule(c.name, "out", ours.data(), r64.out.data(), rn.out.data(), ours.size(), oshape);
    EXPECT(ro.ok, "%s: out breaks the §6 rule (%s)", c.name.c_str(), s.describe().c_str());
    EXPECT(tu::count_stray_writes(out.host) == 0, "%s: elements outside out's view were written", c.name.c_str());
    ref::RuleResult rl;
    if (want_lse) {
        lse.download();
        const std::vector<float> l = lse.host.load();
        rl = ref::check_rule(c.name, "lse", l.data(), r64.lse.data(), rn.lse.data(), l.size(), lshape);
        EXPECT(rl.ok, "%s: lse breaks the §6 rule (%s)", c.name.c_str(), s.describe().c_str());
        EXPECT(tu::count_stray_writes(lse.host) == 0, "%s: elements outside lse's view were written", c.name.c_str());
    }
    const bool ok = th::failures() == before;
    if (g_verbose || !ok)
        std::printf("  %s %s  out err %.3g / bound %.3g%s\n", ok ? "ok  " : "FAIL", c.name.c_str(), ro.our_err, ro.bound,
                    want_lse ? th::format("  lse err %.3g / bound %.3g", rl.our_err, rl.bound).c_str() : "");
    return ok;
}

const int64_t kLens[] = {1, 17, 128, 257, 1000};
const int64_t kHeads[][2] = {{4, 4}, {4, 2}, {4, 1}};  // MHA, GQA, MQA
const char* kHeadNames[] = {"mha", "gqa", "mqa"};
const int kDtypes[] = {ref::kFp16, ref::kBf16};
const int64_t kDims[] = {64, 128};
// windows (left, right): a two-sided band, left only, right only
const int64_t kWindows[][2] = {{40, 3}, {100, -1}, {-1, 20}};

std::string name_of(const char* prefix, int idx, const Case& c, int heads) {
    const ref::Spec& s = c.s;
    std::string n = th::format("%s%03d_%s_%s_d%lld_%lldx%lld_%s", prefix, idx, ref::score_name(s.score),
                               ref::dtype_name(c.dtype), (long long)s.d, (long long)s.Nq, (long long)s.Nk,
                               heads >= 0 ? kHeadNames[heads] : "h");
    if (s.causal) n += "_causal";
    if (s.window_left >= 0) n += th::format("_wl%lld", (long long)s.window_left);
    if (s.window_right >= 0) n += th::format("_wr%lld", (long long)s.window_right);
    if (c.layout != kContig) n += std::string("_") + kLayoutNames[c.layout];
    if (c.lse_strided) n += "_lsestrided";
    if (!std::isnan(s.scale)) n += "_scale";
    if (!std::isnan(s.sigmoid_bias)) n += "_bias";
    if (s.alpha != 1.0) n += "_alpha";
    return n;
}

bool selected(const std::string& name, const std::vector<std::string>& filters) {
    if (filters.empty()) return true;
    for (const std::string& f : filters)
        if (name.find(f) != std::string::npos) return true;
    return false;
}


void run_cases(const std::vector<Case>& cases) {
    int ran = 0, failed = 0;
    for (const Case& c : cases) {
        if (!selected(c.name, g_filters)) continue;
        if (g_list) {
            std::printf("%s\n", c.name.c_str());
            continue;
        }
        ++ran;
        failed += !run_case(c);
    }
    if (!g_list) std::printf("  %d case(s), %d failed\n", ran, failed);
}

// Every score × causal × window × heads × dtype × d (336 cases); the shape pair turns with the case
// index so each (Nq, Nk) of kLens² meets every factor value several times.
std::vector<Case> matrix_cases() {
    std::vector<Case> cases;
    int idx = 0;
    for (int score = 0; score < ref::kScoreCount; ++score)
        for (int causal = 0; causal < 2; ++causal)
            for (int window = 0; window < 2; ++window)
                for (int heads = 0; heads < 3; ++heads)
                    for (int dtype : kDtypes)
                        for (int64_t d : kDims) {
                            Case c;
                            ref::Spec& s = c.s;
                            const int shape = (idx * 7 + idx / 25) % 25;
                            s.B = 2, s.Hq = kHeads[heads][0], s.Hk = kHeads[heads][1], s.d = d;
                            s.Nq = kLens[shape / 5], s.Nk = kLens[shape % 5];
                            s.score = score, s.causal = causal != 0;
                            if (window) s.window_left = kWindows[idx % 3][0], s.window_right = kWindows[idx % 3][1];
                            c.dtype = dtype;
                            c.layout = idx % 11 == 3 ? kBhsd : idx % 11 == 7 ? kPadded8 : kContig;
                            c.lse_strided = idx % 5 == 2;
                            c.seed = 1000 + uint64_t(idx);
                            c.name = name_of("matrix", idx, c, heads);
                            if (g_quick && (s.Nq * s.Nk > 257 * 257 || idx % 16 != 0)) {
                                ++idx;
                                continue;
                            }
                            if (g_quick) s.B = 1;
                            cases.push_back(c);
                            ++idx;
                        }
    return cases;
}

// Every (Nq, Nk) of kLens² for a few configurations, one head per kv head group to keep it fast.
std::vector<Case> shape_cases() {
    struct Config {
        int score, dtype, heads;
        int64_t d;
        bool causal;
        int64_t wl, wr;
    };
    const Config configs[] = {{ref::kSoftmax, ref::kBf16, 1, 128, true, -1, -1},
                              {ref::kSoftmax, ref::kFp16, 0, 64, false, 64, 64},
                              {ref::kSigmoid, ref::kFp16, 2, 64, false, -1, -1},
                              {ref::kRelu2, ref::kBf16, 1, 128, true, 30, -1}};
    std::vector<Case> cases;
    int idx = 0;
    for (const Config& cf : configs)
        for (int64_t nq : kLens)
            for (int64_t nk : kLens) {
                Case c;
                ref::Spec& s = c.s;
                s.B = 1, s.Hq = kHeads[cf.heads][0], s.Hk = kHeads[cf.heads][1], s.d = cf.d;
                s.Nq = nq, s.Nk = nk, s.score = cf.score, s.causal = cf.causal;
                s.window_left = cf.wl, s.window_right = cf.wr;
                c.dtype = cf.dtype;
                c.seed = 5000 + uint64_t(idx);
                c.name = name_of("shapes", idx++, c, cf.heads);
                if (g_quick && ((nq != 17 && nq != 257) || (nk != 17 && nk != 257))) continue;
                cases.push_back(c);
            }
    return cases;
}

// Parameters away from their defaults, packed qkv, tiles at exact multiples, windows of width 0.
std::vector<Case> targeted_cases() {
    std::vector<Case> cases;
    auto add = [&](const char* tag, int score, int dtype, int64_t d, int64_t nq, int64_t nk, bool causal, int64_t wl,
                   int64_t wr, int layout = kContig) -> Case& {
        Case c;
        c.s.B = 2, c.s.Hq = 4, c.s.Hk = 2, c.s.d = d, c.s.Nq = nq, c.s.Nk = nk;
        c.s.score = score, c.s.causal = causal, c.s.window_left = wl, c.s.window_right = wr;
        c.dtype = dtype, c.layout = layout;
        c.seed = 9000 + cases.size();
        c.name = name_of(tag, int(cases.size()), c, 1);
        cases.push_back(c);
        return cases.back();
    };
    add("target", ref::kSoftmax, ref::kBf16, 128, 256, 256, true, -1, -1, kPacked);
    add("target", ref::kSigmoid, ref::kFp16, 64, 128, 128, false, -1, -1, kPacked);
    add("target", ref::kSoftmax, ref::kFp16, 64, 128, 192, false, 0, 0);  // only the diagonal
    add("target", ref::kIdentity, ref::kBf16, 128, 200, 64, true, 0, -1);
    add("target", ref::kSoftmax, ref::kBf16, 64, 300, 20, true, -1, -1);   // most rows see no key
    add("target", ref::kGelu, ref::kFp16, 128, 129, 65, false, 5000000000ll, 3);  // huge window = unbounded
    {
        Case& c = add("target", ref::kSoftmax, ref::kFp16, 128, 77, 333, false, -1, -1);
        c.s.scale = -0.2;  // negative scale: the running max must be taken after scaling
        c.name = name_of("target", int(cases.size()) - 1, c, 1);
    }
    for (int score : {ref::kSoftmax, ref::kSigmoid}) {  // negative scale with masks: masked stays masked
        Case& c = add("target", score, score == ref::kSoftmax ? ref::kBf16 : ref::kFp16, 64, 96, 80, true, 9, -1);
        c.s.scale = -0.75;
        c.name = name_of("target", int(cases.size()) - 1, c, 1);
    }
    {
        Case& c = add("target", ref::kSigmoid, ref::kBf16, 64, 100, 700, true, -1, -1);
        c.s.sigmoid_bias = 1.5, c.s.scale = 0.3;
        c.name = name_of("target", int(cases.size()) - 1, c, 1);
    }
    for (int score = ref::kRelu; score < ref::kScoreCount; ++score) {
        Case& c = add("target", score, ref::kBf16, 64, 65, 300, false, -1, -1);
        c.s.alpha = 0.5;
        c.name = name_of("target", int(cases.size()) - 1, c, 1);
    }
    {
        Case& c = add("target", ref::kSoftmax, ref::kBf16, 64, 100, 100, false, -1, -1);
        c.with_lse = false;
        c.name += "_nolse";
    }
    // head dims below the kernels' widths (64, 128): zero-filled columns, none stored; in the quick set too
    const size_t quick = 6, widths = cases.size();
    add("width", ref::kSoftmax, ref::kBf16, 96, 200, 300, false, -1, -1);
    add("width", ref::kSigmoid, ref::kFp16, 40, 130, 77, true, -1, -1);
    add("width", ref::kGelu, ref::kBf16, 8, 65, 129, false, 30, -1);
    add("width", ref::kSoftmax, ref::kFp16, 72, 257, 100, false, -1, -1, kPadded8);
    // the 256-wide kernel (Q in shared memory, K and V in separate cp.async groups): several key tiles,
    // causal, a block that sees no key tile (rows of a causal 300 x 20), d below its width (200, 136)
    add("width", ref::kSoftmax, ref::kBf16, 256, 200, 300, false, -1, -1);
    add("width", ref::kSigmoid, ref::kFp16, 256, 130, 77, true, -1, -1);
    add("width", ref::kSoftmax, ref::kBf16, 256, 300, 20, true, -1, -1);
    add("width", ref::kGelu, ref::kBf16, 200, 65, 129, false, 30, -1, kPadded8);
    add("width", ref::kRelu2, ref::kFp16, 136, 129, 129, false, -1, -1, kPacked);
    // every score in the sigmoid's tail (e^x <= 2^-6 for all 512 keys of every row: scale·q·k has a standard
    // deviation of 0.01·√d <= 0.12, so |x − b| < 0.6), where the plain kernels take the reciprocal's series
    // (SigmoidScore::apply_tile; the default bias mostly does not here: a few hundred keys of unit-variance
    // scores); fp16 keeps O far from its subnormals (P ≈ e^-5, O of order 0.1), so a series that drops its
    // correction (σ = u, 0.7 % off) fails; in the quick set too
    for (int64_t d : {64, 128}) {
        Case& c = add("tail", ref::kSigmoid, ref::kFp16, d, 200, 512, false, -1, -1);
        c.s.sigmoid_bias = -5.0, c.s.scale = 0.01;
        c.name = name_of("tail", int(cases.size()) - 1, c, 1);
    }
    {  // and scores far above it: e^x overflows to inf for x > 88 (scale·q·k of standard deviation 40), σ = 1
        Case& c = add("tail", ref::kSigmoid, ref::kBf16, 64, 100, 200, true, -1, -1);
        c.s.scale = 5.0;
        c.name = name_of("tail", int(cases.size()) - 1, c, 1);
    }
    // the tall kernel (plain calls, Nq > 128: a warp owns two 16-row tiles): at a left window of 20 the rows 64..79
    // see all of key tile 64..127 and rows 85..95 do not, so the mask must follow each row tile, not the warp's
    // first; in the second block warp 1 holds rows 288..299 and past Nq, warps 2..7 only rows past Nq (they skip);
    // in the quick set too
    for (int64_t d : {64, 128})
        add("tall", d == 64 ? ref::kSigmoid : ref::kSoftmax, ref::kBf16, d, 300, 300, false, 20, -1);
    if (g_quick) cases.erase(cases.begin() + quick, cases.begin() + widths);
    return cases;
}

TEST(numerics_matrix) { run_cases(matrix_cases()); }
TEST(numerics_shapes) { run_cases(shape_cases()); }
TEST(numerics_targeted) { run_cases(targeted_cases()); }

// ---- CUDA-only behaviour --------------------------------------------------------------------------

struct Problem {
    ref::Spec s;
    int dtype = ref::kBf16;
    Tensor q, k, v, out, lse;
    fsig_attention_params p;

    explicit Problem(int64_t d = 64, int dt = ref::kBf16, int score = ref::kSoftmax) {
        s.B = 1, s.Hq = 2, s.Hk = 1, s.Nq = 70, s.Nk = 90, s.d = d, s.score = score;
        dtype = dt;
        ref::Rng rng(77);
        q = mirror(tu::make_view(dt, tu::kContiguous, s.B, s.Nq, s.Hq, d));
        k = mirror(tu::make_view(dt, tu::kContiguous, s.B, s.Nk, s.Hk, d));
        v = mirror(tu::make_view(dt, tu::kContiguous, s.B, s.Nk, s.Hk, d));
        out = mirror(tu::make_view(dt, tu::kContiguous, s.B, s.Nq, s.Hq, d));
        lse = mirror(tu::make_lse_view(tu::kContiguous, s.B, s.Hq, s.Nq));
        for (Tensor* t : {&q, &k, &v}) {
            t->host.store(ref::random_values(rng, t->host.numel(), dt));
            t->upload();
        }
        poison(out), poison(lse);
        p = tu::params_for(s);
    }
    int forward(const fsig_tensor& tq, const fsig_tensor& tk, const fsig_tensor& tv, const fsig_tensor& to,
                const fsig_tensor* tl, void* stream = nullptr) {
        return fsig_attention_forward(&p, &tq, &tk, &tv, &to, tl, stream);
    }
    int forward(void* stream = nullptr) {
        const fsig_tensor tl = lse.desc();
        return forward(q.desc(), k.desc(), v.desc(), out.desc(), s.score == ref::kSoftmax ? &tl : nullptr, stream);
    }
    std::vector<unsigned char> out_bytes() {
        out.download();
        return tu::snapshot(out.host);
    }
    bool out_untouched() {
        const std::vector<unsigned char> b = out_bytes();
        std::vector<unsigned char> poisoned(b.size());
        const uint32_t bits = tu::poison_bits(dtype);
        const size_t es = tu::esize(dtype);
        for (size_t i = 0; i < b.size(); i += es) std::memcpy(&poisoned[i], &bits, es);
        return b == poisoned;
    }
};

// One NaN in q, k or v (causal, bottom-right) shows in O and softmax's LSE exactly where the CPU's
// test_nan_propagation wants it (tu::NanRules), on both kernel families, under every score: a NaN in q makes its
// row NaN, one in k the rows that see the key, one in v that column of those rows. (The sigmoid's tile form caps
// e^x with a comparison and relu keeps NaN: fminf and fmaxf would turn NaN into a number; softmax's row maximum
// passes over a NaN score, its exponential does not, and the LSE of such a row is NaN, not +inf.)
TEST(nan_propagates) {
    if (!g_cuda) return;
    using tu::NanIn;
    for (NanIn source : {NanIn::kQuery, NanIn::kKey, NanIn::kValue})
        for (int score : {ref::kSoftmax, ref::kSigmoid, ref::kRelu, ref::kRelu2, ref::kGelu, ref::kSoftplus, ref::kIdentity}) {
            Problem pr(64, ref::kBf16, score);
            pr.s.causal = true, pr.p = tu::params_for(pr.s);
            const int64_t at = source == NanIn::kQuery ? 5 : 60, d = pr.s.d;
            Tensor& poisoned = source == NanIn::kQuery ? pr.q : source == NanIn::kKey ? pr.k : pr.v;
            const tu::NanRules rules(source, pr.s, at, pr.q.host.load(), pr.k.host.load());
            std::vector<float> x = poisoned.host.load();
            rules.place(x);
            poisoned.host.store(x);
            poisoned.upload();
            const int st = pr.forward();
            EXPECT(st == FSIG_OK, "NaN in %s, %s: forward returned %d: %s", tu::nan_in_name(source),
                   ref::score_name(score), st, fsig_last_error());
            if (st != FSIG_OK) continue;
            CUDA_OK(cudaDeviceSynchronize());
            pr.out.download(), pr.lse.download();
            int64_t wrong = tu::count_unexpected(pr.out.host.load(), pr.s.Nq, pr.s.Hq, d,
                                                 [&](int64_t i, int64_t h, int64_t c) { return rules.out(i, h, c); });
            if (score == ref::kSoftmax)  // lse: [1, Hq, Nq]
                wrong += tu::count_unexpected(pr.lse.host.load(), pr.s.Hq, pr.s.Nq, 1,
                                              [&](int64_t h, int64_t i, int64_t) { return rules.lse(i, h); });
            EXPECT(wrong == 0, "NaN in %s, %s: %lld elements of O (LSE) NaN where they should be finite or the "
                   "reverse", tu::nan_in_name(source), ref::score_name(score), (long long)wrong);
        }
}

void expect_refusal(const char* what, int status, int expected, const char* word, Problem& pr) {
    EXPECT(status == expected, "%s: status %d (%s) but expected %d (%s); message: %s", what, status,
           fsig_status_string(status), expected, fsig_status_string(expected), fsig_last_error());
    EXPECT(std::strstr(fsig_last_error(), word) != nullptr, "%s: the message does not name '%s': %s", what, word,
           fsig_last_error());
    EXPECT(pr.out_untouched(), "%s: a refused call wrote to out", what);
    std::printf("  refused as expected: %s -> %s\n", what, fsig_last_error());
}

// Which forward kernels serve plain calls: the Hopper (wgmma) ones exactly when FSIG_CUDA_WGMMA is 1 or
// require and the device has compute capability 9.0; with require elsewhere the call is refused, writing
// nothing. The emulator counts wgmma instructions, so there the choice itself is checked (CTest runs
// this on an emulated sm_90 with FSIG_CUDA_WGMMA=1, and on sm_80 with require); on a GPU, require makes
// a passing run the proof (gpu-session.sh). Which extended calls take them: test_cuda_masks.
TEST(hopper_kernel_choice) {
    if (!g_cuda) return;
    int major = 0, minor = 0;
    CUDA_OK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
    CUDA_OK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0));
    const char* setting = std::getenv("FSIG_CUDA_WGMMA");
    const bool required = setting != nullptr && std::strcmp(setting, "require") == 0;
    const bool opted_in = required || (setting != nullptr && std::strcmp(setting, "1") == 0);
    bool expect_wgmma = opted_in && major == 9 && minor == 0;
    const char* emulated_ptx = nullptr;
#if defined(FSIG_TEST_ON_EMULATOR)
    // the emulator's stand-in for compute_80 PTX JIT-compiled for a 9.0 device: the kernels are traps there
    emulated_ptx = std::getenv("FSIG_EMU_PTX");
    if (emulated_ptx != nullptr && std::atoi(emulated_ptx) < 90) expect_wgmma = false;
#endif
    std::printf("  compute capability %d.%d, FSIG_CUDA_WGMMA=%s: plain calls %s\n", major, minor,
                setting != nullptr ? setting : "(unset)",
                expect_wgmma ? "run the wgmma kernels" : required ? "are refused" : "run the mma.sync kernels");
    if (required && !expect_wgmma) {
        Problem pr;
        expect_refusal("FSIG_CUDA_WGMMA=require where the wgmma kernels cannot run", pr.forward(),
                       FSIG_ERROR_UNSUPPORTED, emulated_ptx != nullptr ? "is not sm_90a's" : "compute capability", pr);
        return;
    }
    for (int score : {ref::kSoftmax, ref::kSigmoid})
        for (int64_t d : {64, 128, 200}) {  // every width: 200 on the 256-wide kernels
            Case c;
            c.s.B = 1, c.s.Hq = 2, c.s.Hk = 1, c.s.d = d, c.s.Nq = 70, c.s.Nk = 200, c.s.score = score;
            c.s.causal = true;
            c.name = std::string("choice_") + ref::score_name(score) + "_d" + std::to_string(d);
#if defined(FSIG_TEST_ON_EMULATOR)
            const uint64_t before = fsig::emu::wgmma_operations();
#endif
            EXPECT(run_case(c), "%s failed", c.name.c_str());
#if defined(FSIG_TEST_ON_EMULATOR)
            const bool ran_wgmma = fsig::emu::wgmma_operations() > before;
            EXPECT(ran_wgmma == expect_wgmma, "%s ran the %s kernels", c.name.c_str(), ran_wgmma ? "wgmma" : "mma.sync");
#endif
        }
}

// A device that allows less shared memory per block than a kernel needs (sm_86/sm_89: 99 KiB; on the
// emulator FSIG_EMU_SM=89): d = 64 and 128 run on the regular kernels (32 and 64 KiB; extended at d = 128
// 98 KiB), d in (128, 256] on the compact 256-wide kernel (4 warps, 32-key tiles: 64 KiB, extended 73; the
// regular one needs 128 and 162). On a device with 128 KiB or more every forward kernel fits and this has
// nothing to check (the numerics sets run there).
TEST(small_shared_memory) {
    if (!g_cuda) return;
    const int allowed = gt::small_shared_memory_device("forward");
    if (allowed == 0) return;
    const struct {
        int64_t d;
        int score;
        bool causal;
    } runs[] = {{64, ref::kSoftmax, false}, {128, ref::kSoftmax, false}, {256, ref::kSoftmax, true},
                {200, ref::kSigmoid, false}, {136, ref::kGelu, true}};
    for (const auto& run : runs) {
        Case c;
        c.s.B = 2, c.s.Hq = 4, c.s.Hk = 2, c.s.d = run.d, c.s.Nq = 70, c.s.Nk = 200, c.s.score = run.score;
        c.s.causal = run.causal;
        c.name = th::format("small_smem_%s_d%lld", ref::score_name(run.score), (long long)run.d);
        EXPECT(run_case(c), "%s failed on a device with %d KiB per block", c.name.c_str(), allowed / 1024);
    }
}

TEST(cuda_refusals) {
    if (!g_cuda) return;
    {
        Problem pr(64, ref::kFp32);
        expect_refusal("fp32 tensors", pr.forward(), FSIG_ERROR_UNSUPPORTED, "fp32", pr);
    }
    {
        for (int64_t d : {100, 264}) {  // not a multiple of 8; above the widest kernel
            Problem pr(d);
            expect_refusal(th::format("head_dim %lld", (long long)d).c_str(), pr.forward(), FSIG_ERROR_UNSUPPORTED,
                           "head_dim", pr);
        }
    }
    {  // longer than the kernels' int32 indices allow (kMaxCudaSeq): 2^30 + 1 queries and keys, refused
       // before any pointer is looked at. out claims 2^30 + 1 rows of twice its width (capacities that are
       // lies); q, k and v are the same strides shifted into the gaps, sharing none of out's elements, so the
       // aliasing rule passes and the length is what is refused.
        Problem pr;
        constexpr int64_t kRows = (int64_t(1) << 30) + 1;
        fsig_tensor to = pr.out.desc();
        const int64_t width = to.shape[2] * to.shape[3];  // elements of one row of out
        to.shape[1] = kRows;
        to.strides[1] = 2 * width;
        to.strides[0] = kRows * to.strides[1];
        to.capacity_bytes = kRows * to.strides[1] * 2;
        auto in_gaps = [&](fsig_tensor t) {
            t.data = static_cast<unsigned char*>(to.data) + width * 2;
            t.shape[1] = kRows;
            for (int i = 0; i < 4; ++i) t.strides[i] = to.strides[i];
            t.capacity_bytes = to.capacity_bytes - width * 2;
            return t;
        };
        const fsig_tensor tq = in_gaps(pr.q.desc()), tk = in_gaps(pr.k.desc()), tv = in_gaps(pr.v.desc());
        expect_refusal("seq_q = seq_k = 2^30 + 1", pr.forward(tq, tk, tv, to, nullptr), FSIG_ERROR_UNSUPPORTED, "2^30",
                       pr);
    }
    {
        Problem pr;
        fsig_tensor tq = pr.q.desc();
        tq.data = static_cast<unsigned char*>(tq.data) + 8;  // element-aligned, not 16-byte aligned
        tq.capacity_bytes -= 8;
        tq.shape[1] -= 1;
        fsig_tensor to = pr.out.desc();
        to.shape[1] -= 1;
        expect_refusal("q misaligned by 8 bytes", pr.forward(tq, pr.k.desc(), pr.v.desc(), to, nullptr),
                       FSIG_ERROR_MISALIGNED, "16-byte", pr);
    }
    {
        Problem pr;
        fsig_tensor tk = pr.k.desc();
        // row stride d + 4 (Hk = 1): not a multiple of 8; 8 rows fewer keep the extent inside the buffer
        tk.strides[1] = pr.s.d + 4, tk.shape[1] = pr.s.Nk - 8;
        fsig_tensor tv = pr.v.desc();
        tv.shape[1] = tk.shape[1];
        expect_refusal("k row stride d + 4", pr.forward(pr.q.desc(), tk, tv, pr.out.desc(), nullptr),
                       FSIG_ERROR_INVALID_STRIDE, "strides[1]", pr);
    }
    {
        Problem pr(128);  // d 128 viewed as 64 elements with stride 2: a valid CPU layout, not a CUDA one
        fsig_tensor q2 = pr.q.desc(), k2 = pr.k.desc(), v2 = pr.v.desc(), o2 = pr.out.desc();
        for (fsig_tensor* t : {&q2, &k2, &v2, &o2}) t->shape[3] = 64, t->strides[3] = 2;
        expect_refusal("last-dim stride 2", pr.forward(q2, k2, v2, o2, nullptr), FSIG_ERROR_INVALID_STRIDE,
                       "strides[3]", pr);
    }
    {
        Problem pr;
        std::vector<unsigned char> host(pr.q.host.st->bytes);
        fsig_tensor tq = pr.q.desc();
        tq.data = host.data() + (16 - reinterpret_cast<uintptr_t>(host.data()) % 16) % 16;
        tq.capacity_bytes = int64_t(host.size()) - 16;
        tq.shape[1] = pr.s.Nq - 1;
        fsig_tensor to = pr.out.desc();
        to.shape[1] = tq.shape[1];
        expect_refusal("a plain host pointer as a CUDA tensor", pr.forward(tq, pr.k.desc(), pr.v.desc(), to, nullptr),
                       FSIG_ERROR_INVALID_DEVICE, "host memory", pr);
    }
    {
        // Every tensor of the call in one allocation, k last and described (with a capacity to match: the
        // caller's word) twice as long as what is left: the kernel would read past the allocation's end and
        // fault, poisoning the context. No tensor of the call lies past the end, so no other rule applies.
        // Device memory (refused by the allocation's range), then page-locked host memory (by the range
        // where the driver gives one, else because the last byte is not memory of the same kind).
        Problem pr;
        const auto refused_past_end = [&pr](const char* what, void* one, const char* word) {
            fsig_tensor tq = pr.q.desc(), tk = pr.k.desc(), tv = pr.v.desc(), to = pr.out.desc();
            unsigned char* at = static_cast<unsigned char*>(one);
            for (fsig_tensor* t : {&tq, &tv, &to}) t->data = at, at += t->capacity_bytes;
            tk.data = at;
            expect_refusal(what, pr.forward(tq, tk, tv, to, nullptr), FSIG_ERROR_BUFFER_TOO_SMALL, word, pr);
        };
        const fsig_tensor tk = pr.k.desc();
        const size_t bytes =
            size_t(pr.q.desc().capacity_bytes + pr.v.desc().capacity_bytes + pr.out.desc().capacity_bytes) +
            size_t(tk.capacity_bytes / 2);
        const std::shared_ptr<void> one = device_alloc(bytes);
        refused_past_end("k past the end of its CUDA allocation", one.get(), "past the end of its CUDA allocation");
        void* pinned = nullptr;
        CUDA_OK(cudaHostAlloc(&pinned, bytes, cudaHostAllocMapped));
        refused_past_end("k past the end of its page-locked allocation", pinned, "its elements span");
        CUDA_OK(cudaFreeHost(pinned));
    }
    {
        Problem pr;
        fsig_tensor tq = pr.q.desc(), tk = pr.k.desc(), tv = pr.v.desc(), to = pr.out.desc();
        for (fsig_tensor* t : {&tq, &tk, &tv, &to}) t->device_index = g_device_count;
        expect_refusal("device index = device count", pr.forward(tq, tk, tv, to, nullptr), FSIG_ERROR_INVALID_DEVICE,
                       "cuda:", pr);
    }
    {
        Problem pr;
        fsig_tensor to = pr.out.desc();
        to.device_index = 1;
        expect_refusal("out on another device index", pr.forward(pr.q.desc(), pr.k.desc(), pr.v.desc(), to, nullptr),
                       FSIG_ERROR_INVALID_DEVICE, "share a device", pr);
    }
}

// The same call on the default stream, a created stream and a CUDA graph replay gives the same bits;
// the caller's current device is unchanged afterwards.
TEST(cuda_streams_graphs_device) {
    if (!g_cuda) return;
    Problem pr(128, ref::kBf16, ref::kSoftmax);
    int before = -1, after = -2;
    CUDA_OK(cudaGetDevice(&before));
    REQUIRE(pr.forward() == FSIG_OK, "default stream: %s", fsig_last_error());
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<unsigned char> ref_bytes = pr.out_bytes();
    CUDA_OK(cudaGetDevice(&after));
    EXPECT(before == after, "the current device changed from %d to %d", before, after);

    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    poison(pr.out);
    REQUIRE(pr.forward(stream) == FSIG_OK, "created stream: %s", fsig_last_error());
    CUDA_OK(cudaStreamSynchronize(stream));
    EXPECT(pr.out_bytes() == ref_bytes, "a created stream gave other bits than the default stream");

    poison(pr.out);
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    const int st = pr.forward(stream);
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    REQUIRE(st == FSIG_OK, "forward during graph capture: %s", fsig_last_error());
    REQUIRE(end == cudaSuccess, "cudaStreamEndCapture: %s", cudaGetErrorString(end));
    EXPECT(pr.out_untouched(), "capturing ran the kernel (out was written before the graph was launched)");
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    for (int rep = 0; rep < 3; ++rep) {
        poison(pr.out);
        CUDA_OK(cudaGraphLaunch(exec, stream));
        CUDA_OK(cudaStreamSynchronize(stream));
        EXPECT(pr.out_bytes() == ref_bytes, "graph replay %d gave other bits than the direct call", rep);
    }
    CUDA_OK(cudaGraphExecDestroy(exec));
    CUDA_OK(cudaGraphDestroy(graph));
    CUDA_OK(cudaStreamDestroy(stream));

    if (g_device_count >= 2) {  // tensors on cuda:0 while cuda:1 is current
        CUDA_OK(cudaSetDevice(1));
        poison(pr.out);  // (cudaMemcpy to cuda:0 memory works from any current device)
        REQUIRE(pr.forward() == FSIG_OK, "call from cuda:1: %s", fsig_last_error());
        int now = -1;
        CUDA_OK(cudaGetDevice(&now));
        EXPECT(now == 1, "the call did not restore the caller's device (cuda:1), now cuda:%d", now);
        CUDA_OK(cudaSetDevice(0));
        CUDA_OK(cudaDeviceSynchronize());
        EXPECT(pr.out_bytes() == ref_bytes, "the call from another current device gave other bits");
    } else {
        std::printf("  one device: the other-current-device case is not run\n");
    }
}

// A graph capture that is the process's first use of its kernel: with lazy module loading (the CUDA 12+
// default) the kernel is loaded, and for d = 128 its shared-memory limit raised by cudaFuncSetAttribute,
// inside the capture. Run it alone in a fresh process to make it cold (gpu-session.sh does):
//   test_cuda_forward cuda_graph_capture_cold
// (in a full run other tests have loaded the kernels before it; it still checks graph == direct then).
TEST(cuda_graph_capture_cold) {
    if (!g_cuda) return;
    Problem pr(128, ref::kFp16, ref::kRelu2);
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    const int st = pr.forward(stream);
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    REQUIRE(st == FSIG_OK, "forward as the first call, during graph capture: %s", fsig_last_error());
    REQUIRE(end == cudaSuccess, "cudaStreamEndCapture: %s", cudaGetErrorString(end));
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    const std::vector<unsigned char> graph_bytes = pr.out_bytes();
    poison(pr.out);
    REQUIRE(pr.forward(stream) == FSIG_OK, "direct call: %s", fsig_last_error());
    CUDA_OK(cudaStreamSynchronize(stream));
    EXPECT(pr.out_bytes() == graph_bytes, "the cold graph replay gave other bits than the direct call");
    EXPECT(!pr.out_untouched(), "the direct call wrote nothing");
    CUDA_OK(cudaGraphExecDestroy(exec));
    CUDA_OK(cudaGraphDestroy(graph));
    CUDA_OK(cudaStreamDestroy(stream));
}

// The caller's CUDA context comes back as it was. A thread that never used CUDA (every Java thread) has
// none, and must have none after a call: giving "device 0" back with cudaSetDevice would create device
// 0's primary context there (CUDA 12+), on a GPU the caller may not use. A thread with a current context
// keeps it.
TEST(caller_context_given_back) {
    if (!g_cuda) return;
    const auto get_current = reinterpret_cast<PFN_cuCtxGetCurrent_v4000>(driver_entry("cuCtxGetCurrent", 4000));
    REQUIRE(get_current != nullptr, "the driver has no cuCtxGetCurrent");
    Problem pr(64, ref::kBf16, ref::kSigmoid);
    CUcontext before = nullptr, after = nullptr;
    int status = -1;
    std::thread fresh([&] {
        get_current(&before);
        status = pr.forward();
        get_current(&after);
    });
    fresh.join();
    REQUIRE(before == nullptr, "a new thread already had a current context");
    REQUIRE(status == FSIG_OK, "forward from a new thread: %s", fsig_last_error());
    EXPECT(after == nullptr, "the call left a CUDA context current on a thread that had none");
    CUcontext mine = nullptr, now = nullptr;
    get_current(&mine);
    REQUIRE(pr.forward() == FSIG_OK, "forward: %s", fsig_last_error());
    get_current(&now);
    EXPECT(mine != nullptr && now == mine, "the calling thread's current context changed");
    CUDA_OK(cudaDeviceSynchronize());
    EXPECT(!pr.out_untouched(), "the calls wrote nothing");
}

// Virtual-memory allocators (PyTorch's expandable segments, for one) map physical pieces one after
// another into a reserved range, so a tensor may straddle two pieces: cudaPointerGetAttributes must call
// it device memory and the allocation-range check must accept the crossing (native/cuda/NOTES.md,
// "Second review"). k straddles two pieces here; the result must be the bits of the same call on
// cudaMalloc memory. Needs the driver's virtual-memory API (the emulator has none: the case says so).
TEST(virtual_memory_mappings) {
    if (!g_cuda) return;
    const auto entry = [](const char* symbol) { return driver_entry(symbol, 10020); };
    const auto granularity = reinterpret_cast<PFN_cuMemGetAllocationGranularity_v10020>(
        entry("cuMemGetAllocationGranularity"));
    const auto reserve = reinterpret_cast<PFN_cuMemAddressReserve_v10020>(entry("cuMemAddressReserve"));
    const auto create = reinterpret_cast<PFN_cuMemCreate_v10020>(entry("cuMemCreate"));
    const auto map = reinterpret_cast<PFN_cuMemMap_v10020>(entry("cuMemMap"));
    const auto set_access = reinterpret_cast<PFN_cuMemSetAccess_v10020>(entry("cuMemSetAccess"));
    const auto unmap = reinterpret_cast<PFN_cuMemUnmap_v10020>(entry("cuMemUnmap"));
    const auto release = reinterpret_cast<PFN_cuMemRelease_v10020>(entry("cuMemRelease"));
    const auto address_free = reinterpret_cast<PFN_cuMemAddressFree_v10020>(entry("cuMemAddressFree"));
    if (!granularity || !reserve || !create || !map || !set_access || !unmap || !release || !address_free) {
        std::printf("  no virtual-memory driver API here: not run\n");
        return;
    }
    CUmemAllocationProp prop{};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = 0;
    size_t piece = 0;
    REQUIRE(granularity(&piece, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM) == CUDA_SUCCESS && piece >= 65536,
            "cuMemGetAllocationGranularity");
    CUdeviceptr va = 0;
    REQUIRE(reserve(&va, 2 * piece, 0, 0, 0) == CUDA_SUCCESS, "cuMemAddressReserve");
    CUmemGenericAllocationHandle handle[2] = {};
    for (int i = 0; i < 2; ++i) {
        REQUIRE(create(&handle[i], piece, &prop, 0) == CUDA_SUCCESS, "cuMemCreate");
        REQUIRE(map(va + i * piece, piece, 0, handle[i], 0) == CUDA_SUCCESS, "cuMemMap");
    }
    CUmemAccessDesc access{};
    access.location = prop.location;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    REQUIRE(set_access(va, 2 * piece, &access, 1) == CUDA_SUCCESS, "cuMemSetAccess");

    Problem pr;
    REQUIRE(pr.forward() == FSIG_OK, "forward on cudaMalloc memory: %s", fsig_last_error());
    const std::vector<unsigned char> ref_bytes = pr.out_bytes();
    poison(pr.out);
    const auto place = [](const Tensor& t, CUdeviceptr at) {  // a copy of t's storage at `at`
        Tensor c = t;
        c.dev = std::shared_ptr<void>(reinterpret_cast<void*>(at), [](void*) {});
        c.upload();
        return c;
    };
    const size_t k_bytes = pr.k.host.st->bytes;
    const Tensor q = place(pr.q, va), v = place(pr.v, va + 65536 / 2), out = place(pr.out, va + piece + 65536 / 2);
    const Tensor k = place(pr.k, va + piece - ((k_bytes / 2) & ~size_t(255)));  // across the two pieces
    const fsig_tensor tl = pr.lse.desc();
    const int st = pr.forward(q.desc(), k.desc(), v.desc(), out.desc(), &tl);
    EXPECT(st == FSIG_OK, "forward with k across two mapped pieces: %s", fsig_last_error());
    if (st == FSIG_OK) {
        CUDA_OK(cudaDeviceSynchronize());
        out.download();
        EXPECT(tu::snapshot(out.host) == ref_bytes,
               "the call on mapped pieces gave other bits than on cudaMalloc memory");
    }
    CUDA_OK(cudaDeviceSynchronize());
    unmap(va, 2 * piece);
    for (CUmemGenericAllocationHandle h : handle) release(h);
    address_free(va, 2 * piece);
}

TEST(cuda_capabilities) {
    if (!g_cuda) return;
    fsig_capabilities caps;
    std::memset(&caps, 0, sizeof caps);
    caps.struct_size = sizeof caps;
    REQUIRE(fsig_get_capabilities(&caps) == FSIG_OK, "%s", fsig_last_error());
    EXPECT(caps.cuda_dtypes == ((1u << FSIG_DTYPE_FP16) | (1u << FSIG_DTYPE_BF16)), "cuda_dtypes is %u", caps.cuda_dtypes);
    EXPECT(caps.cuda_head_dim_count == 3 && caps.cuda_head_dims[0] == 64 && caps.cuda_head_dims[1] == 128 &&
               caps.cuda_head_dims[2] == 256,
           "cuda_head_dims are not {64, 128, 256}");
    EXPECT(caps.cuda_backward_max_head_dim == 256, "cuda_backward_max_head_dim is %d", caps.cuda_backward_max_head_dim);
}

}  // namespace

int main(int argc, char** argv) { return gt::run_main(argc, argv, "forward"); }
