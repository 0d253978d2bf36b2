// The CUDA backward through the public C ABI, against the fp64 reference of tests/reference.h under the
// DESIGN §6 rule for dQ, dK and dV: every score × causal × window × MHA/GQA/MQA × fp16/bf16 × d 64/128/256
// on ragged shapes (Nq, Nk ∈ {1, 17, 129, 300}, Nq ≠ Nk), more shapes for a few configurations, then
// targeted cases (parameters off their defaults, width-0 and huge windows, rows that see no key,
// big GQA groups, exact tile multiples, strided LSE); determinism (two runs, same bits); refusals
// (which must write nothing); a created stream, CUDA-graph capture and the caller's current device;
// finite differences of the library's own forward on tiny fp16 problems; a NaN in dO, Q or K reaching the
// gradients that depend on it and no others (nan_backward). Every numerics case runs both CUDA paths: the
// deterministic kernels (no workspace) and the fast path (params.workspace: dQ by atomics), whose dK and dV
// must equal the deterministic ones bit for bit.
// out and lse come from ref64 (out rounded to the dtype), so the check isolates the backward (fp16 and bf16
// only: their naive error dwarfs S's rounding, which a foreign LSE leaves in P; tests/numerics.cpp hands
// the CPU backward the forward's own LSE, for fp32's sake).
//
//   test_cuda_backward [--quick] [--device cpu] [--list] [--verbose] [name filters...]
//
// Exits 77 (CTest: skipped) with a message when the library has no CUDA or no device is present.
// --quick: a small subset for compute-sanitizer (tests/gpu/run-compute-sanitizer.sh).
// --device cpu: the same numerics cases through the CPU backend — checks this test itself on a machine
//      without a GPU (the CUDA-only tests are left out).
// Inputs are drawn from a fixed seed per case (its name reproduces it: pass it as a filter); the
// references of a batch of cases are computed on all host threads before the device runs them.
// Outputs are poisoned with NaN before every call, and the bytes around each output's view must stay
// poisoned.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cuda_harness.h"
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
using gt::with_values;

using gt::untouched;

using gt::padded8_view;

enum Layout { kContig, kBhsd, kPadded8, kLayouts };
const char* kLayoutNames[] = {"contig", "bhsd", "padded8"};

tu::View make_layout(int layout, int dtype, int64_t B, int64_t N, int64_t H, int64_t d) {
    if (layout == kPadded8) return padded8_view(dtype, B, N, H, d);
    return tu::make_view(dtype, layout == kBhsd ? tu::kBHSD : tu::kContiguous, B, N, H, d);
}

struct Case {
    std::string name;
    ref::Spec s;
    int dtype = ref::kBf16;
    int layout = kContig;  // q, k, v, dout; the gradients take the next layout in turn
    bool lse_strided = false;
    bool pass_out = false;  // pointwise scores: pass out anyway (it must be ignored)
    uint64_t seed = 1;
};

// Inputs and references of a case, computed on a host thread.
struct Prepared {
    std::vector<float> q, k, v, dout, out;  // out: ref64's rounded to the dtype
    std::vector<float> lse;
    ref::Grads<double> g64;
    ref::Grads<float> gn;
};

// Random inputs of a case without references: out and lse left 0, for the library's forward to fill
// (Run::forward_out_lse).
Prepared random_inputs(const Case& c) {
    const ref::Spec& s = c.s;
    Prepared in;
    ref::Rng rng(c.seed);
    in.q = ref::random_values(rng, s.q_elems(), c.dtype);
    in.k = ref::random_values(rng, s.kv_elems(), c.dtype);
    in.v = ref::random_values(rng, s.kv_elems(), c.dtype);
    in.dout = ref::random_values(rng, s.q_elems(), c.dtype);
    in.out.assign(s.q_elems(), 0.f);
    in.lse.assign(s.lse_elems(), 0.f);
    return in;
}

// A case's random inputs with its references, out and lse from ref64
Prepared prepare(const Case& c) {
    const ref::Spec& s = c.s;
    Prepared r = random_inputs(c);
    const std::vector<double> q64 = tu::to_double(r.q), k64 = tu::to_double(r.k), v64 = tu::to_double(r.v),
                              g64 = tu::to_double(r.dout);
    const ref::Forward<double> f64 = ref::forward64(s, q64.data(), k64.data(), v64.data());
    r.out = tu::to_float_rounded(f64.out, c.dtype);
    if (s.score == ref::kSoftmax) r.lse.assign(f64.lse.begin(), f64.lse.end());
    const std::vector<double> out64 = tu::to_double(r.out);  // the O the kernel is handed (reference.h)
    r.g64 = ref::backward64(s, q64.data(), k64.data(), v64.data(), g64.data(), out64.data());
    r.gn = ref::backward_naive(s, c.dtype, r.q.data(), r.k.data(), r.v.data(), r.out.data(), r.dout.data());
    return r;
}

// The device tensors of one case, gradients poisoned.
struct Run {
    Tensor q, k, v, out, dout, lse, dq, dk, dv;
    bool softmax = false, pass_out = false;
    fsig_attention_params p;

    Run(const Case& c, const Prepared& in) {
        const ref::Spec& s = c.s;
        softmax = s.score == ref::kSoftmax;
        pass_out = softmax || c.pass_out;
        const int l = c.layout, gl = (c.layout + 1) % kLayouts;
        q = with_values(make_layout(l, c.dtype, s.B, s.Nq, s.Hq, s.d), in.q);
        k = with_values(make_layout(l, c.dtype, s.B, s.Nk, s.Hk, s.d), in.k);
        v = with_values(make_layout(l, c.dtype, s.B, s.Nk, s.Hk, s.d), in.v);
        dout = with_values(make_layout(l, c.dtype, s.B, s.Nq, s.Hq, s.d), in.dout);
        if (pass_out) out = with_values(make_layout(gl, c.dtype, s.B, s.Nq, s.Hq, s.d), in.out);
        if (softmax)
            lse = with_values(tu::make_lse_view(c.lse_strided ? tu::kPadded : tu::kContiguous, s.B, s.Hq, s.Nq), in.lse);
        dq = mirror(make_layout(gl, c.dtype, s.B, s.Nq, s.Hq, s.d));
        dk = mirror(make_layout(gl, c.dtype, s.B, s.Nk, s.Hk, s.d));
        dv = mirror(make_layout(l, c.dtype, s.B, s.Nk, s.Hk, s.d));
        poison_grads();
        p = tu::params_for(s);
    }
    // the fast path's workspace (CUDA: the size fsig_attention_backward_workspace_size asks for; on the
    // CPU that is 0 and the call runs as without one), filled with 0xFF before each call by poison_grads
    gt::Workspace workspace;
    void use_workspace(bool fast, const ref::Spec& s) {
        p.workspace = nullptr, p.workspace_bytes = 0;
        if (!fast) return;
        if (workspace.bytes == 0) workspace = gt::Workspace(p, q.desc());
        const int64_t width = s.d <= 64 ? 64 : s.d <= 128 ? 128 : 256;  // the kernels' width: dQ rows of the workspace
        const int64_t expected = g_cuda ? s.B * s.Hq * s.Nq * width * 4 : 0;
        REQUIRE(workspace.bytes == expected, "workspace size %lld, expected %lld", (long long)workspace.bytes,
                (long long)expected);
        p = workspace.attach(p);
    }
    void poison_grads() { poison(dq), poison(dk), poison(dv), workspace.fill_ff(); }
    // one path's call: its workspace or none, the gradients poisoned first
    int backward_on(bool fast, const ref::Spec& s) {
        use_workspace(fast, s);
        poison_grads();
        return backward();
    }
    int backward(void* stream = nullptr) const {
        const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), tdo = dout.desc(), tdq = dq.desc(),
                          tdk = dk.desc(), tdv = dv.desc();
        fsig_tensor to, tl;
        if (pass_out) to = out.desc();
        if (softmax) tl = lse.desc();
        return fsig_attention_backward(&p, &tq, &tk, &tv, pass_out ? &to : nullptr, &tdo, softmax ? &tl : nullptr,
                                       &tdq, &tdk, &tdv, stream);
    }
    // softmax: out and lse from the library's own forward (the pointwise scores' backward needs neither)
    void forward_out_lse() const {
        if (!softmax) return;
        const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), to = out.desc(), tl = lse.desc();
        REQUIRE(fsig_attention_forward(&p, &tq, &tk, &tv, &to, &tl, nullptr) == FSIG_OK, "forward: %s",
                fsig_last_error());
    }
    std::vector<unsigned char> grad_bytes() const {
        dq.download(), dk.download(), dv.download();
        std::vector<unsigned char> b = tu::snapshot(dq.host), bk = tu::snapshot(dk.host), bv = tu::snapshot(dv.host);
        b.insert(b.end(), bk.begin(), bk.end());
        b.insert(b.end(), bv.begin(), bv.end());
        return b;
    }
};

void sync_or_die(const std::string& what) {
    if (!g_cuda) return;
    const cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        std::fprintf(stderr, "%s: the kernel failed: %s (the CUDA context is lost; stopping)\n", what.c_str(),
                     cudaGetErrorString(e));
        std::exit(1);
    }
}

// The gradients of r (after its backward) against the references by the §6 rule; a summary for the log.
std::string check_grads(const Case& c, const Prepared& in, const Run& r, const char* path) {
    const ref::Spec& s = c.s;
    const std::vector<int64_t> qshape{s.B, s.Nq, s.Hq, s.d}, kshape{s.B, s.Nk, s.Hk, s.d};
    const struct {
        const char* name;
        const Tensor* t;
        const std::vector<double>* r64;
        const std::vector<float>* naive;
        const std::vector<int64_t>* shape;
    } outs[] = {{"dq", &r.dq, &in.g64.dq, &in.gn.dq, &qshape},
                {"dk", &r.dk, &in.g64.dk, &in.gn.dk, &kshape},
                {"dv", &r.dv, &in.g64.dv, &in.gn.dv, &kshape}};
    std::string summary;
    for (const auto& o : outs) {
        o.t->download();
        const std::vector<float> ours = o.t->host.load();
        const ref::RuleResult rr =
            ref::check_rule(c.name, o.name, ours.data(), o.r64->data(), o.naive->data(), ours.size(), *o.shape);
        EXPECT(rr.ok, "%s (%s path): %s breaks the §6 rule (%s)", c.name.c_str(), path, o.name, s.describe().c_str());
        EXPECT(tu::count_stray_writes(o.t->host) == 0, "%s (%s path): elements outside %s's view were written",
               c.name.c_str(), path, o.name);
        summary += th::format("  %s %.3g/%.3g", o.name, rr.our_err, rr.bound);
    }
    return summary;
}

// One case by both paths: deterministic, then fast (on CUDA; the CPU has one path), whose dK and dV come
// from the same dK/dV kernel code and must be the same bits.
bool run_case(const Case& c, const Prepared& in) {
    const int before = th::failures();
    Run r(c, in);
    std::string summary;
    std::vector<unsigned char> dk_dv;
    for (bool fast : {false, true}) {
        if (fast && !g_cuda) break;
        r.use_workspace(fast, c.s);
        r.poison_grads();
#if defined(FSIG_TEST_ON_EMULATOR)
        const uint64_t wgmma_kernels_before = fsig::emu::wgmma_kernel_launches();
#endif
        const int st = r.backward();
        if (g_cuda && c.s.d > 128 && gt::small_shared_memory()) {
            // no kernel for d > 128 fits there (the pair kernels at 256: 133-149 KiB): refused, nothing written
            gt::expect_shared_memory_refusal(st, r.dq, r.dk, r.dv,
                                             c.name + (fast ? " (fast path)" : " (deterministic path)"));
            summary += fast ? " refused (fast)" : " refused: too little shared memory";
            continue;
        }
        if (st != FSIG_OK) {
            EXPECT(false, "%s: backward (%s path) returned %d (%s): %s", c.name.c_str(), fast ? "fast" : "deterministic",
                   st, fsig_status_string(st), fsig_last_error());
            return false;
        }
        sync_or_die(c.name);
        // the fast path ran (it wrote the workspace), and only then
        EXPECT(r.workspace.touched() == fast, "%s: the workspace was %s by the %s path", c.name.c_str(),
               fast ? "not written" : "written", fast ? "fast" : "deterministic");
#if defined(FSIG_TEST_ON_EMULATOR)
        // both paths' dK/dV and the deterministic path's dQ on the Hopper kernels exactly where they may run
        // (every case here is a plain call, which they serve at every width): kernels that issued wgmma
        const uint64_t wgmma_kernels = fsig::emu::wgmma_kernel_launches() - wgmma_kernels_before;
        EXPECT(wgmma_kernels == (gt::emulated_hopper() ? (fast ? 1u : 2u) : 0u),
               "%s: the %s path ran %llu kernels on wgmma", c.name.c_str(), fast ? "fast" : "deterministic",
               (unsigned long long)wgmma_kernels);
#endif
        summary += check_grads(c, in, r, fast ? "fast" : "deterministic");
        r.dk.download(), r.dv.download();
        std::vector<unsigned char> b = tu::snapshot(r.dk.host), bv = tu::snapshot(r.dv.host);
        b.insert(b.end(), bv.begin(), bv.end());
        if (!fast) dk_dv = b;
        else EXPECT(b == dk_dv, "%s: the fast path's dK, dV differ from the deterministic ones", c.name.c_str());
        if (fast) summary += " (fast)";
    }
    const bool ok = th::failures() == before;
    if (g_verbose || !ok) std::printf("  %s %s %s\n", ok ? "ok  " : "FAIL", c.name.c_str(), summary.c_str());
    return ok;
}

const int64_t kLens[] = {1, 17, 129, 300};
const int64_t kHeads[][2] = {{4, 4}, {4, 2}, {4, 1}};  // MHA, GQA, MQA
const char* kHeadNames[] = {"mha", "gqa", "mqa"};
const int kDtypes[] = {ref::kFp16, ref::kBf16};
const int64_t kDims[] = {64, 128, 256};
const int64_t kWindows[][2] = {{40, 3}, {100, -1}, {-1, 20}};  // a two-sided band, left only, right only

std::string name_of(const char* prefix, int idx, const Case& c, const char* heads) {
    const ref::Spec& s = c.s;
    std::string n = th::format("%s%03d_%s_%s_d%lld_%lldx%lld_%s", prefix, idx, ref::score_name(s.score),
                               ref::dtype_name(c.dtype), (long long)s.d, (long long)s.Nq, (long long)s.Nk, heads);
    if (s.causal) n += "_causal";
    if (s.window_left >= 0) n += th::format("_wl%lld", (long long)s.window_left);
    if (s.window_right >= 0) n += th::format("_wr%lld", (long long)s.window_right);
    if (c.layout != kContig) n += std::string("_") + kLayoutNames[c.layout];
    if (c.lse_strided) n += "_lsestrided";
    if (c.pass_out) n += "_without";
    if (!std::isnan(s.scale)) n += "_scale";
    if (!std::isnan(s.sigmoid_bias)) n += "_bias";
    if (s.alpha != 1.0) n += "_alpha";
    return n;
}


bool selected(const std::string& name) {
    if (g_filters.empty()) return true;
    for (const std::string& f : g_filters)
        if (name.find(f) != std::string::npos) return true;
    return false;
}

// References in parallel batches on the host, device runs in order.
void run_cases(const std::vector<Case>& all) {
    std::vector<const Case*> cases;
    for (const Case& c : all)
        if (selected(c.name)) {
            if (g_list) std::printf("%s\n", c.name.c_str());
            else cases.push_back(&c);
        }
    if (g_list) return;
    const size_t batch = std::max(1u, std::thread::hardware_concurrency());
    int failed = 0;
    for (size_t first = 0; first < cases.size(); first += batch) {
        const size_t last = std::min(cases.size(), first + batch);
        std::vector<std::future<Prepared>> refs;
        for (size_t i = first; i < last; ++i) refs.push_back(std::async(std::launch::async, prepare, std::cref(*cases[i])));
        for (size_t i = first; i < last; ++i) failed += !run_case(*cases[i], refs[i - first].get());
    }
    std::printf("  %zu case(s), %d failed\n", cases.size(), failed);
}

// Every score × causal × window × heads × dtype × d (504 cases); the (Nq, Nk) pair turns with the case
// index so each pair of kLens² meets every factor value several times.
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
                            const int shape = (idx * 5 + idx / 16) % 16;
                            s.B = 1, s.Hq = kHeads[heads][0], s.Hk = kHeads[heads][1], s.d = d;
                            s.Nq = kLens[shape / 4], s.Nk = kLens[shape % 4];
                            s.score = score, s.causal = causal != 0;
                            if (window) s.window_left = kWindows[idx % 3][0], s.window_right = kWindows[idx % 3][1];
                            c.dtype = dtype;
                            c.layout = idx % 7 == 3 ? kBhsd : idx % 7 == 5 ? kPadded8 : kContig;
                            c.lse_strided = idx % 5 == 2;
                            c.pass_out = score != ref::kSoftmax && idx % 3 == 1;
                            c.seed = 2000 + uint64_t(idx);
                            c.name = name_of("matrix", idx, c, kHeadNames[heads]);
                            // (the quick set's 256-wide cases are targeted_cases')
                            const bool keep = !g_quick || (s.Nq * s.Nk <= 129 * 300 && idx % 12 == 0 && d <= 128);
                            ++idx;
                            if (keep) cases.push_back(c);
                        }
    return cases;
}

// More (Nq, Nk) pairs — tile multiples and one past them — for a few configurations.
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
    const int64_t lens[] = {1, 31, 64, 128, 129, 257};
    std::vector<Case> cases;
    int idx = 0;
    for (const Config& cf : configs)
        for (int64_t nq : lens)
            for (int64_t nk : lens) {
                Case c;
                ref::Spec& s = c.s;
                s.B = 1, s.Hq = kHeads[cf.heads][0], s.Hk = kHeads[cf.heads][1], s.d = cf.d;
                s.Nq = nq, s.Nk = nk, s.score = cf.score, s.causal = cf.causal;
                s.window_left = cf.wl, s.window_right = cf.wr;
                c.dtype = cf.dtype;
                c.seed = 6000 + uint64_t(idx);
                c.name = name_of("shapes", idx++, c, kHeadNames[cf.heads]);
                if (g_quick && ((nq != 31 && nq != 129) || (nk != 31 && nk != 129))) continue;
                cases.push_back(c);
            }
    return cases;
}

std::vector<Case> targeted_cases() {
    std::vector<Case> cases;
    auto add = [&](int score, int dtype, int64_t d, int64_t nq, int64_t nk, bool causal, int64_t wl, int64_t wr,
                   int64_t hq = 4, int64_t hk = 2, int64_t batch = 2) -> Case& {
        Case c;
        c.s.B = batch, c.s.Hq = hq, c.s.Hk = hk, c.s.d = d, c.s.Nq = nq, c.s.Nk = nk;
        c.s.score = score, c.s.causal = causal, c.s.window_left = wl, c.s.window_right = wr;
        c.dtype = dtype;
        c.seed = 9500 + cases.size();
        cases.push_back(c);
        return cases.back();
    };
    add(ref::kSoftmax, ref::kBf16, 128, 256, 256, true, -1, -1);               // exact tile multiples
    add(ref::kSoftmax, ref::kFp16, 64, 128, 192, false, 0, 0);                 // only the diagonal
    add(ref::kIdentity, ref::kBf16, 128, 200, 64, true, 0, -1);
    add(ref::kSoftmax, ref::kBf16, 64, 300, 20, true, -1, -1);                 // most rows see no key (LSE inf)
    add(ref::kSigmoid, ref::kFp16, 64, 20, 300, true, -1, -1);                 // most keys seen by no row
    add(ref::kGelu, ref::kFp16, 128, 129, 65, false, 5000000000ll, 3);         // huge window = unbounded
    add(ref::kSoftmax, ref::kBf16, 64, 300, 129, false, -1, -1, 8, 1, 1);      // MQA, group of 8
    add(ref::kSoftplus, ref::kFp16, 128, 129, 300, true, 50, -1, 6, 2, 1);     // group of 3
    add(ref::kSoftmax, ref::kFp16, 128, 1, 300, false, -1, -1, 4, 1, 3);      // one query row
    add(ref::kRelu, ref::kBf16, 64, 300, 1, false, -1, -1);                    // one key
    {
        Case& c = add(ref::kSoftmax, ref::kFp16, 128, 77, 333, false, -1, -1);
        c.s.scale = -0.2;
    }
    for (int score : {ref::kSoftmax, ref::kSigmoid}) {  // negative scale with masks: masked stays masked
        Case& c = add(score, score == ref::kSoftmax ? ref::kBf16 : ref::kFp16, 64, 96, 80, true, 9, -1);
        c.s.scale = -0.75;
    }
    {
        Case& c = add(ref::kSigmoid, ref::kBf16, 64, 100, 700, true, -1, -1);
        c.s.sigmoid_bias = 1.5, c.s.scale = 0.3;
    }
    for (int score = ref::kRelu; score < ref::kScoreCount; ++score) {
        Case& c = add(score, ref::kBf16, 64, 65, 300, false, -1, -1);
        c.s.alpha = 0.5;
    }
    {
        Case& c = add(ref::kSoftmax, ref::kBf16, 128, 129, 129, true, 20, 20);
        c.lse_strided = true, c.layout = kPadded8;
    }
    // head dims below the kernels' widths (64, 128, 256): zero-filled columns, none stored; and the 256-wide
    // kernels (warp pairs trading P and dS); in the quick set too
    const size_t quick = 6, widths = cases.size();
    add(ref::kSoftmax, ref::kBf16, 96, 200, 300, false, -1, -1);
    add(ref::kSigmoid, ref::kFp16, 40, 130, 77, true, -1, -1);
    add(ref::kGelu, ref::kBf16, 8, 65, 129, false, 30, -1, 4, 1, 1);
    {
        Case& c = add(ref::kSoftmax, ref::kFp16, 72, 129, 100, true, -1, -1);
        c.lse_strided = true, c.layout = kPadded8;
    }
    add(ref::kSoftmax, ref::kBf16, 256, 100, 150, false, -1, -1);             // D (pairs: O one tile ahead; Hopper:
                                                                               // O copied beside P)
    add(ref::kSigmoid, ref::kFp16, 256, 130, 77, true, -1, -1, 6, 2, 1);      // causal, a group of 3
    add(ref::kSoftmax, ref::kFp16, 256, 150, 20, true, -1, -1, 2, 1, 1);      // rows that see no key
    {
        Case& c = add(ref::kRelu2, ref::kBf16, 200, 77, 129, false, 20, 5, 2, 2, 1);  // window: warps of a pair
        c.layout = kPadded8;                                                          // skip apart
    }
    add(ref::kGelu, ref::kFp16, 136, 40, 70, false, -1, -1, 2, 1, 1);
    add(ref::kSoftmax, ref::kFp16, 168, 90, 140, true, 40, -1, 4, 2, 1);      // D over zero-filled columns
    for (size_t i = 0; i < cases.size(); ++i) cases[i].name = name_of("target", int(i), cases[i], "h");
    if (g_quick) cases.erase(cases.begin() + quick, cases.begin() + widths);
    return cases;
}

TEST(numerics_matrix) { run_cases(matrix_cases()); }
TEST(numerics_shapes) { run_cases(shape_cases()); }
TEST(numerics_targeted) { run_cases(targeted_cases()); }

// ---- determinism and CUDA-only behaviour ----------------------------------------------------------

Case small_case(int score = ref::kSoftmax, int64_t d = 64, int dtype = ref::kBf16) {
    Case c;
    c.s.B = 1, c.s.Hq = 2, c.s.Hk = 1, c.s.Nq = 70, c.s.Nk = 90, c.s.d = d, c.s.score = score;
    c.dtype = dtype;
    c.seed = 77;
    c.name = "small";
    return c;
}

// Two runs of the same call with params.deterministic = 1 give the same bits (no atomics, fixed order):
// larger problems, every kernel path (softmax and pointwise, both head dims, GQA). A workspace is given
// and must stay unused.
TEST(determinism) {
    if (g_quick) return;
    struct D {
        int score;
        int64_t d, n;
        bool causal;
    };
    const D ds[] = {{ref::kSoftmax, 128, 1024, false}, {ref::kSoftmax, 64, 777, true}, {ref::kSigmoid, 128, 600, true},
                    {ref::kGelu, 64, 513, false},     {ref::kSoftmax, 256, 700, true},  {ref::kSigmoid, 200, 513, false}};
    for (const D& x : ds) {
        Case c;
        c.s.B = 2, c.s.Hq = 8, c.s.Hk = 2, c.s.Nq = x.n, c.s.Nk = x.n, c.s.d = x.d, c.s.score = x.score,
        c.s.causal = x.causal;
        c.dtype = ref::kBf16;
        c.seed = 4242;
        Run r(c, random_inputs(c));  // (no reference needed)
        // deterministic 1 with a workspace given: the workspace must stay unused
        if (g_cuda) {
            r.workspace = gt::Workspace(r.p, r.q.desc());  // (sized while deterministic is still 0)
            r.p = r.workspace.attach(r.p);
        }
        r.p.deterministic = 1;
        if (g_cuda && x.d > 128 && gt::small_shared_memory()) {  // (no kernel for it there)
            const int st = r.backward();
            gt::expect_shared_memory_refusal(st, r.dq, r.dk, r.dv, "determinism d" + std::to_string(x.d));
            std::printf("  %s d%lld: refused on this device, as expected\n", ref::score_name(x.score), (long long)x.d);
            continue;
        }
        r.forward_out_lse();
        r.poison_grads();
        REQUIRE(r.backward() == FSIG_OK, "backward: %s", fsig_last_error());
        sync_or_die("determinism");
        EXPECT(!r.workspace.touched(), "deterministic = 1 with a workspace: the workspace was written");
        const std::vector<unsigned char> first = r.grad_bytes();
        for (int rep = 0; rep < 2; ++rep) {
            r.poison_grads();
            REQUIRE(r.backward() == FSIG_OK, "backward: %s", fsig_last_error());
            sync_or_die("determinism");
            EXPECT(r.grad_bytes() == first, "%s d%lld n%lld: run %d gave other bits than the first",
                   ref::score_name(x.score), (long long)x.d, (long long)x.n, rep + 2);
        }
        std::printf("  %s d%lld n%lld%s: 3 runs, same bits\n", ref::score_name(x.score), (long long)x.d, (long long)x.n,
                    x.causal ? " causal" : "");
    }
}

// One NaN (bf16, causal, GQA, every score, d = 64 and 128 — 64 under --quick —, both paths) in dO, q, k or v
// reaches the gradients that depend on it and no others, by the rules of the CPU's test_nan_propagation
// (tu::NanRules: where a NaN score or dP reaches dS, softmax's LSE and D spreading it over a row, a masked dS
// set to 0 and never 0 times a NaN, V's NaN never in dV). O and LSE come from the library's forward of the same
// inputs. (A softmax P clamped by fminf turned a NaN into 1; an LSE of +inf for a NaN row gave P = 0.)
TEST(nan_backward) {
    using tu::NanIn;
    for (NanIn source : {NanIn::kDout, NanIn::kQuery, NanIn::kKey, NanIn::kValue})
        for (int64_t d : {64, 128}) {
            if (g_quick && d > 64) continue;
            for (int score = 0; score < ref::kScoreCount; ++score)
                for (int64_t at : {3, 100}) {  // dO's or q's row, or k's or v's key
                    Case c;
                    c.s.B = 1, c.s.Hq = 2, c.s.Hk = 1, c.s.Nq = 150, c.s.Nk = 200, c.s.d = d, c.s.score = score;
                    c.s.causal = true;
                    c.seed = 900 + uint64_t(score);
                    const ref::Spec& s = c.s;
                    Prepared in = random_inputs(c);
                    const tu::NanRules rules(source, s, at, in.q, in.k);  // (from the inputs without the NaN)
                    const auto dq_rule = [&](int64_t i, int64_t h, int64_t e) { return rules.dq(i, h, e); };
                    const auto dk_rule = [&](int64_t j, int64_t, int64_t e) { return rules.dk(j, e); };
                    const auto dv_rule = [&](int64_t j, int64_t, int64_t e) { return rules.dv(j, e); };
                    rules.place(source == NanIn::kDout    ? in.dout
                                : source == NanIn::kQuery ? in.q
                                : source == NanIn::kKey   ? in.k : in.v);
                    Run r(c, in);
                    r.forward_out_lse();
                    for (bool fast : {false, true}) {
                        if (fast && !g_cuda) break;
                        const int st = r.backward_on(fast, s);
                        const std::string name =
                            th::format("nan_backward, NaN in %s at %lld, %s d%lld (%s path)", tu::nan_in_name(source),
                                       (long long)at, ref::score_name(score), (long long)d,
                                       fast ? "fast" : "deterministic");
                        EXPECT(st == FSIG_OK, "%s: backward returned %d: %s", name.c_str(), st, fsig_last_error());
                        if (st != FSIG_OK) continue;
                        sync_or_die(name);
                        r.dq.download(), r.dk.download(), r.dv.download();
                        const int64_t wrong_dq = tu::count_unexpected(r.dq.host.load(), s.Nq, s.Hq, d, dq_rule),
                                      wrong_dk = tu::count_unexpected(r.dk.host.load(), s.Nk, s.Hk, d, dk_rule),
                                      wrong_dv = tu::count_unexpected(r.dv.host.load(), s.Nk, s.Hk, d, dv_rule);
                        EXPECT(wrong_dq + wrong_dk + wrong_dv == 0,
                               "%s: %lld elements of dQ, %lld of dK, %lld of dV NaN where they should be finite or "
                               "the reverse", name.c_str(), (long long)wrong_dq, (long long)wrong_dk,
                               (long long)wrong_dv);
                    }
                }
        }
}

// Finite differences on tiny fp16 problems, one per score (causal on every other): the directional
// derivative of L = Σ dO ∘ O along u = sign(grad) for q, k and v — every element's gradient counts with
// its full size (a random ±1 direction would cancel to ≈ 1/√n of it, hiding a wrong magnitude), a wrong
// sign flips its term — from central differences of the library's own forward (fp16 O summed in fp64;
// X± = X ± h u rounded to fp16, so the step taken is exactly X+ − X−), against Σ grad ∘ (X+ − X−) from
// its backward, both CUDA paths. Independent of the fp64 reference: it checks the gradient against the
// forward it belongs to. h = 1/64 moves each score by ≈ 0.015: relu's kink crossings (all pushed the same
// way by this u: an error ∝ h, 2.6 % at h = 1/16), O's fp16 rounding (∝ 1/h) and the O(h³) term each stay
// under 1 % of the difference (--device cpu, fp16: largest 0.7 %).
TEST(finite_differences) {
    constexpr double kH = 1.0 / 64, kTol = 0.02;
    double worst = 0;
    for (int score = 0; score < ref::kScoreCount; ++score) {
        Case c;
        c.s.B = 1, c.s.Hq = 2, c.s.Hk = 1, c.s.Nq = 33, c.s.Nk = 40, c.s.d = 64, c.s.score = score;
        c.s.causal = score % 2 == 1;
        c.dtype = ref::kFp16;
        c.seed = 31000 + uint64_t(score);
        const ref::Spec& s = c.s;
        const Prepared in = random_inputs(c);
        // L at (q, k, v) by the library's forward
        auto loss = [&](const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v) -> double {
            const Tensor tq = with_values(make_layout(kContig, c.dtype, s.B, s.Nq, s.Hq, s.d), q),
                         tk = with_values(make_layout(kContig, c.dtype, s.B, s.Nk, s.Hk, s.d), k),
                         tv = with_values(make_layout(kContig, c.dtype, s.B, s.Nk, s.Hk, s.d), v),
                         to = mirror(make_layout(kContig, c.dtype, s.B, s.Nq, s.Hq, s.d));
            const fsig_attention_params p = tu::params_for(s);
            const fsig_tensor dq = tq.desc(), dk = tk.desc(), dv = tv.desc(), d_o = to.desc();
            const int st = fsig_attention_forward(&p, &dq, &dk, &dv, &d_o, nullptr, nullptr);
            EXPECT(st == FSIG_OK, "forward: %s", fsig_last_error());
            if (st != FSIG_OK) return NAN;  // (fails the comparison below)
            sync_or_die("finite differences");
            to.download();
            const std::vector<float> o = to.host.load();
            double l = 0;
            for (size_t i = 0; i < o.size(); ++i) l += double(o[i]) * in.dout[i];
            return l;
        };
        // the gradients at (q, k, v): out and lse from the library's forward, then each path's backward
        Run r(c, in);
        r.forward_out_lse();
        for (bool fast : {false, true}) {
            if (fast && !g_cuda) break;
            REQUIRE(r.backward_on(fast, s) == FSIG_OK, "backward: %s", fsig_last_error());
            sync_or_die("finite differences");
            std::string line;
            for (int which = 0; which < 3; ++which) {  // q, k, v
                const std::vector<float>& x = which == 0 ? in.q : which == 1 ? in.k : in.v;
                const Tensor& grad = which == 0 ? r.dq : which == 1 ? r.dk : r.dv;
                grad.download();
                const std::vector<float> g = grad.host.load();
                std::vector<double> plus(x.size()), minus(x.size());
                for (size_t i = 0; i < x.size(); ++i) {
                    const double u = g[i] < 0 ? -1.0 : 1.0;
                    plus[i] = x[i] + kH * u, minus[i] = x[i] - kH * u;
                }
                const std::vector<float> xp = tu::to_float_rounded(plus, c.dtype), xm = tu::to_float_rounded(minus, c.dtype);
                double analytic = 0;
                for (size_t i = 0; i < x.size(); ++i) analytic += double(g[i]) * (double(xp[i]) - xm[i]);
                const double numeric = which == 0 ? loss(xp, in.k, in.v) - loss(xm, in.k, in.v)
                                       : which == 1 ? loss(in.q, xp, in.v) - loss(in.q, xm, in.v)
                                                    : loss(in.q, in.k, xp) - loss(in.q, in.k, xm);
                const double rel = std::fabs(numeric - analytic) / std::fabs(analytic);
                worst = std::max(worst, rel);
                const char* name = which == 0 ? "dq" : which == 1 ? "dk" : "dv";
                EXPECT(rel <= kTol, "%s %s (%s path): directional derivative %.6g by differences, %.6g by the backward "
                       "(relative difference %.3g > %.2g)", ref::score_name(score), name, fast ? "fast" : "deterministic",
                       numeric, analytic, rel, kTol);
                line += th::format("  %s %.2e", name, rel);
            }
            if (g_verbose) std::printf("  %s%s%s:%s\n", ref::score_name(score), s.causal ? " causal" : "",
                                       fast ? " (fast)" : "", line.c_str());
        }
    }
    std::printf("  7 scores x q, k, v: largest relative difference %.3g (tolerance %.2g)\n", worst, kTol);
}

// CUDA: the call is refused with `expected`, a message naming `word`, and no gradient byte written.
// --device cpu: the same descriptors on CPU tensors pass the C ABI layer and the CPU backend (so on a
// GPU the refusal can only come from the CUDA rule under test, not from an earlier check); rules of the
// C ABI layer itself (expected_on_cpu != FSIG_OK) are refused there too.
void expect_refusal(const char* what, int status, int expected, const char* word, const Run& r,
                    int expected_on_cpu = FSIG_OK) {
    if (!g_cuda) {
        EXPECT(status == expected_on_cpu, "%s on CPU tensors: status %d (%s), expected %d; message: %s", what, status,
               fsig_status_string(status), expected_on_cpu, fsig_last_error());
        std::printf("  CPU tensors: %s -> %s\n", what, status == FSIG_OK ? "accepted" : fsig_last_error());
        return;
    }
    EXPECT(status == expected, "%s: status %d (%s) but expected %d (%s); message: %s", what, status,
           fsig_status_string(status), expected, fsig_status_string(expected), fsig_last_error());
    EXPECT(std::strstr(fsig_last_error(), word) != nullptr, "%s: the message does not name '%s': %s", what, word,
           fsig_last_error());
    EXPECT(untouched(r.dq) && untouched(r.dk) && untouched(r.dv), "%s: a refused call wrote a gradient", what);
    std::printf("  refused as expected: %s -> %s\n", what, fsig_last_error());
}

struct Descs {
    fsig_tensor q, k, v, out, dout, lse, dq, dk, dv;
    explicit Descs(const Run& r)
        : q(r.q.desc()), k(r.k.desc()), v(r.v.desc()), out(r.out.desc()), dout(r.dout.desc()), lse(r.lse.desc()),
          dq(r.dq.desc()), dk(r.dk.desc()), dv(r.dv.desc()) {}
    int call(const Run& r) const {
        return fsig_attention_backward(&r.p, &q, &k, &v, &out, &dout, &lse, &dq, &dk, &dv, nullptr);
    }
};

// FSIG_CUDA_WGMMA=require where the Hopper backward cannot run (not a 9.0 device, or on the emulator code
// JIT-compiled from compute_80 PTX: FSIG_EMU_PTX): refused before anything is written, by both paths; where
// it can, a plain backward runs (and on the emulator every numerics case checks that both paths took it,
// the deterministic path's dQ kernel too, exactly when gt::emulated_hopper() says so: run_case).
TEST(hopper_kernel_choice) {
    if (!g_cuda) return;
    const char* setting = std::getenv("FSIG_CUDA_WGMMA");
    if (setting == nullptr || std::strcmp(setting, "require") != 0) return;
    if (gt::hopper_kernels_run_for_require()) {
        // (d = 256: the 256-wide dK/dV kernel, softmax's D from O staged in its own shared memory; the dQ
        // kernel's 32-key tiles)
        for (const Case& c : {small_case(ref::kSigmoid, 128), small_case(ref::kSoftmax, 256), small_case(ref::kSigmoid, 256)})
            EXPECT(run_case(c, prepare(c)), "a plain backward at d = %lld on the Hopper kernels failed", (long long)c.s.d);
        return;
    }
    const char* jit_word = "compute capability";  // (the refusal's reason: the device, or JIT-compiled PTX)
#if defined(FSIG_TEST_ON_EMULATOR)
    if (const char* ptx = std::getenv("FSIG_EMU_PTX"); ptx != nullptr && std::atoi(ptx) < 90)
        jit_word = "is not sm_90a's";
#endif
    for (int64_t d : {64, 256}) {  // (each width's Hopper kernels)
        const Case c = small_case(ref::kSoftmax, d);
        const Prepared in = prepare(c);
        for (bool fast : {false, true}) {
            Run r(c, in);
            r.use_workspace(fast, c.s);
            const std::string what = th::format("FSIG_CUDA_WGMMA=require, no Hopper kernel (d = %lld%s)", (long long)d,
                                                fast ? ", fast path" : "");
            expect_refusal(what.c_str(), r.backward(), FSIG_ERROR_UNSUPPORTED, jit_word, r);
            EXPECT(!r.workspace.touched(), "the refused call wrote its workspace");
        }
    }
}

// A device that allows less shared memory per block than a kernel needs (sm_86/sm_89: 99 KiB; on the
// emulator FSIG_EMU_SM=89): d = 64 runs on the regular kernels (dK/dV 81 KiB, on the fast path 99 KiB; dQ
// 64 KiB), d = 128 on the pair kernels (the regular ones need 112-128 KiB; the pairs 74 and 69 KiB), by both
// paths with the same dK, dV bits (run_case); d = 256 (pair kernels of 133 KiB and more) is refused as
// unsupported, naming the shared memory, before anything is written, by both paths (run_case checks the
// refusal for every case with d > 128 there). On a device with 128 KiB or more every backward kernel fits
// and this has nothing to check.
TEST(small_shared_memory) {
    if (!g_cuda) return;
    const int allowed = gt::small_shared_memory_device("backward");
    if (allowed == 0) return;
    for (const Case& c : {small_case(ref::kSigmoid, 64), small_case(ref::kSoftmax, 128),
                          small_case(ref::kGelu, 96, ref::kFp16), small_case(ref::kSoftmax, 256)})
        EXPECT(run_case(c, prepare(c)), "d = %lld failed on a device with %d KiB per block", (long long)c.s.d,
               allowed / 1024);
}

TEST(cuda_refusals) {
    const Case c = small_case();
    const Prepared in = prepare(c);
    {
        Case c32 = c;
        c32.dtype = ref::kFp32;
        const Prepared in32 = prepare(c32);
        Run r(c32, in32);
        expect_refusal("fp32 tensors", r.backward(), FSIG_ERROR_UNSUPPORTED, "fp32", r);
    }
    {
        // not a multiple of 8; above the widest kernel (256: the CPU's limit too)
        for (int64_t d : {100, 264}) {
            Case cd = c;
            cd.s.d = d;
            const Prepared in_d = prepare(cd);
            Run r(cd, in_d);
            expect_refusal(th::format("head_dim %lld", (long long)d).c_str(), r.backward(), FSIG_ERROR_UNSUPPORTED,
                           "multiples of 8 up to 256", r, d > 256 ? FSIG_ERROR_UNSUPPORTED : FSIG_OK);
        }
    }
    {
        Run r(c, in);
        Descs t(r);
        t.dq.data = static_cast<unsigned char*>(t.dq.data) + 8;  // element-aligned, not 16-byte aligned
        t.dq.capacity_bytes -= 8;
        t.dq.shape[1] -= 1, t.q.shape[1] -= 1, t.out.shape[1] -= 1, t.dout.shape[1] -= 1, t.lse.shape[2] -= 1;
        expect_refusal("dq misaligned by 8 bytes", t.call(r), FSIG_ERROR_MISALIGNED, "16-byte", r);
    }
    {
        Run r(c, in);
        Descs t(r);
        t.dout.data = static_cast<unsigned char*>(t.dout.data) + 8;
        t.dout.capacity_bytes -= 8;
        t.dout.shape[1] -= 1, t.q.shape[1] -= 1, t.out.shape[1] -= 1, t.dq.shape[1] -= 1, t.lse.shape[2] -= 1;
        expect_refusal("dout misaligned by 8 bytes", t.call(r), FSIG_ERROR_MISALIGNED, "dout", r);
    }
    {
        Run r(c, in);
        Descs t(r);
        // row stride d + 4 (Hk = 1): not a multiple of 8; 8 rows fewer keep the extent inside the buffer
        for (fsig_tensor* x : {&t.dk, &t.k, &t.v, &t.dv}) x->shape[1] = c.s.Nk - 8;
        t.dk.strides[1] = c.s.d + 4;
        expect_refusal("dk row stride d + 4", t.call(r), FSIG_ERROR_INVALID_STRIDE, "dk.strides[1]", r);
    }
    {
        Run r(c, in);
        Descs t(r);
        for (fsig_tensor* x : {&t.out, &t.q, &t.dout, &t.dq}) x->shape[1] = c.s.Nq - 8;
        t.lse.shape[2] = c.s.Nq - 8;
        // out is heads-major here (row stride d): d + 4 is no multiple of 8, and 8 rows fewer keep the
        // extent inside the buffer
        t.out.strides[1] = c.s.d + 4;
        expect_refusal("out row stride d + 4", t.call(r), FSIG_ERROR_INVALID_STRIDE, "out.strides[1]", r);
    }
    {
        Case c128 = c;
        c128.s.d = 128;
        const Prepared in128 = prepare(c128);
        Run r(c128, in128);  // d 128 viewed as 64 elements with stride 2: a valid CPU layout, not a CUDA one
        Descs t(r);
        for (fsig_tensor* x : {&t.q, &t.k, &t.v, &t.out, &t.dout, &t.dq, &t.dk, &t.dv}) x->shape[3] = 64, x->strides[3] = 2;
        expect_refusal("last-dim stride 2", t.call(r), FSIG_ERROR_INVALID_STRIDE, "strides[3]", r);
    }
    {
        Run r(c, in);
        Descs t(r);
        std::vector<unsigned char> host(r.dv.host.st->bytes + 16);
        t.dv.data = host.data() + (16 - reinterpret_cast<uintptr_t>(host.data()) % 16) % 16;
        t.dv.capacity_bytes = int64_t(r.dv.host.st->bytes);
        expect_refusal("a plain host pointer as a CUDA dv", t.call(r), FSIG_ERROR_INVALID_DEVICE, "host memory", r);
    }
    {  // the fast path's workspace: one byte short, misaligned, overlapping dq, host memory (all CUDA-only
       // rules: the CPU ignores a workspace)
        const int64_t need = c.s.B * c.s.Hq * c.s.Nq * c.s.d * 4;
        std::vector<float> host_ws(size_t(need / 4) + 16);  // (--device cpu: any memory does)
        std::shared_ptr<void> ws = g_cuda ? gt::device_alloc(size_t(need) + 64) : nullptr;
        void* base = g_cuda ? ws.get() : host_ws.data() + (4 - reinterpret_cast<uintptr_t>(host_ws.data()) / 4 % 4) % 4;
        Run r(c, in);
        Descs t(r);
        r.p.workspace = base, r.p.workspace_bytes = need - 1;
        expect_refusal("workspace one byte short", t.call(r), FSIG_ERROR_BUFFER_TOO_SMALL, "params.workspace_bytes", r);
        r.p.workspace = static_cast<unsigned char*>(base) + 8, r.p.workspace_bytes = need;
        expect_refusal("workspace misaligned by 8 bytes", t.call(r), FSIG_ERROR_MISALIGNED, "params.workspace", r);
        r.p.workspace = t.dq.data, r.p.workspace_bytes = need;
        expect_refusal("workspace overlapping dq", t.call(r), FSIG_ERROR_ALIASING, "params.workspace", r);
        std::vector<float> host(size_t(need / 4) + 4);
        r.p.workspace = host.data() + (4 - reinterpret_cast<uintptr_t>(host.data()) / 4 % 4) % 4;
        r.p.workspace_bytes = need;
        expect_refusal("workspace in plain host memory", t.call(r), FSIG_ERROR_INVALID_DEVICE, "params.workspace", r);
    }
    {
        Run r(c, in);
        Descs t(r);
        t.lse.data = nullptr;  // (the C ABI layer's rule; listed so the CUDA path is seen to keep it)
        expect_refusal("softmax without lse", t.call(r), FSIG_ERROR_NULL_ARGUMENT, "lse", r, FSIG_ERROR_NULL_ARGUMENT);
    }
}

// The same call on the default stream, a created stream and a CUDA graph replay gives the same bits;
// the caller's current device is unchanged afterwards.
TEST(cuda_streams_graphs_device) {
    if (!g_cuda) return;
    const Case c = small_case(ref::kSoftmax, 128);
    const Prepared in = prepare(c);
    Run r(c, in);
    int before = -1, after = -2;
    CUDA_OK(cudaGetDevice(&before));
    REQUIRE(r.backward() == FSIG_OK, "default stream: %s", fsig_last_error());
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<unsigned char> ref_bytes = r.grad_bytes();
    CUDA_OK(cudaGetDevice(&after));
    EXPECT(before == after, "the current device changed from %d to %d", before, after);

    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    r.poison_grads();
    REQUIRE(r.backward(stream) == FSIG_OK, "created stream: %s", fsig_last_error());
    CUDA_OK(cudaStreamSynchronize(stream));
    EXPECT(r.grad_bytes() == ref_bytes, "a created stream gave other bits than the default stream");

    r.poison_grads();
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    const int st = r.backward(stream);
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    REQUIRE(st == FSIG_OK, "backward during graph capture: %s", fsig_last_error());
    REQUIRE(end == cudaSuccess, "cudaStreamEndCapture: %s", cudaGetErrorString(end));
    EXPECT(untouched(r.dq) && untouched(r.dk) && untouched(r.dv),
           "capturing ran the kernels (a gradient was written before the graph was launched)");
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    for (int rep = 0; rep < 3; ++rep) {
        r.poison_grads();
        CUDA_OK(cudaGraphLaunch(exec, stream));
        CUDA_OK(cudaStreamSynchronize(stream));
        EXPECT(r.grad_bytes() == ref_bytes, "graph replay %d gave other bits than the direct call", rep);
    }
    CUDA_OK(cudaGraphExecDestroy(exec));
    CUDA_OK(cudaGraphDestroy(graph));
    CUDA_OK(cudaStreamDestroy(stream));

    {  // the fast path (memset, dK/dV kernel with atomics, conversion) captured and replayed: dK, dV the same
       // bits as the deterministic path, dQ by the §6 rule
        r.use_workspace(true, c.s);
        CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
        CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
        const int st_fast = r.backward(stream);
        const cudaError_t end_fast = cudaStreamEndCapture(stream, &graph);
        REQUIRE(st_fast == FSIG_OK, "fast backward during graph capture: %s", fsig_last_error());
        REQUIRE(end_fast == cudaSuccess, "cudaStreamEndCapture: %s", cudaGetErrorString(end_fast));
        CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
        for (int rep = 0; rep < 2; ++rep) {
            r.poison_grads();
            CUDA_OK(cudaGraphLaunch(exec, stream));
            CUDA_OK(cudaStreamSynchronize(stream));
            const std::vector<unsigned char> b = r.grad_bytes();
            const size_t dq_bytes = r.dq.host.st->bytes;
            EXPECT(std::equal(b.begin() + dq_bytes, b.end(), ref_bytes.begin() + dq_bytes),
                   "fast graph replay %d: dK, dV differ from the deterministic path", rep);
            check_grads(c, in, r, "fast, graph replay");
        }
        CUDA_OK(cudaGraphExecDestroy(exec));
        CUDA_OK(cudaGraphDestroy(graph));
        CUDA_OK(cudaStreamDestroy(stream));
        r.use_workspace(false, c.s);
    }

    if (g_device_count >= 2) {  // tensors on cuda:0 while cuda:1 is current
        CUDA_OK(cudaSetDevice(1));
        r.poison_grads();
        REQUIRE(r.backward() == FSIG_OK, "call from cuda:1: %s", fsig_last_error());
        int now = -1;
        CUDA_OK(cudaGetDevice(&now));
        EXPECT(now == 1, "the call did not restore the caller's device (cuda:1), now cuda:%d", now);
        CUDA_OK(cudaSetDevice(0));
        CUDA_OK(cudaDeviceSynchronize());
        EXPECT(r.grad_bytes() == ref_bytes, "the call from another current device gave other bits");
    } else {
        std::printf("  one device: the other-current-device case is not run\n");
    }
}

}  // namespace

int main(int argc, char** argv) { return gt::run_main(argc, argv, "backward"); }
