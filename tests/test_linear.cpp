// Linear attention (cosFormer, elu + 1; DESIGN.md §4) through the public C ABI: forward and backward by
// the §6 rule against the fp64 quadratic form of tests/linear_reference.h (causal and not, Nq ≠ Nk,
// lengths 1 … 600 spanning several chunks and segments, MHA/GQA/MQA, every dtype, strided layouts and
// [B, H, d, N] (bitwise the contiguous layout's results),
// M and ε given), finite differences on tiny problems (ε binding on some rows), bitwise independence
// of the thread count, the 0.1-sized params struct, and the argument errors. Outputs are poisoned
// before each run; nothing outside an output's view may change, inputs must come back unchanged.
// Registered once per CPU ISA (FSIG_CPU_ISA=avx2 / avx512).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "harness.h"
#include "lib_util.h"
#include "linear_reference.h"

using ref::Rng;

namespace {

struct LCase {
    std::string name;
    lref::Spec s;
    int dtype = FSIG_DTYPE_FP32;
    int layout_q = tu::kContiguous, layout_k = tu::kContiguous;
    bool all_bhdn = false;  // every tensor [B, H, d, N] (positions contiguous), overriding the layouts above
    bool buffers_api = false;
    bool out_in_backward = false;  // pass the (optional, unused) forward output to the backward
    double sigma = 1.0;
    uint64_t seed = 1;
};

fsig_attention_params params_for(const lref::Spec& s) {
    fsig_attention_params p = fsig_attention_params_default();
    p.score = s.map == lref::kCosformer ? FSIG_SCORE_COSFORMER : FSIG_SCORE_LINEAR_ELU;
    p.causal = s.causal ? 1 : 0;
    p.linear_length = s.length;
    p.linear_epsilon = s.epsilon == 1e-6 ? NAN : float(s.epsilon);
    return p;
}

struct Inputs {
    std::vector<float> q, k, v, g;
};

Inputs random_inputs(const LCase& c) {
    Rng rng(c.seed);
    Inputs in;
    in.q = ref::random_values(rng, c.s.q_elems(), c.dtype, c.sigma);
    in.k = ref::random_values(rng, c.s.kv_elems(), c.dtype, c.sigma);
    in.v = ref::random_values(rng, c.s.kv_elems(), c.dtype);
    in.g = ref::random_values(rng, c.s.q_elems(), c.dtype);
    return in;
}

struct Run {
    int fwd_status = -1, bwd_status = -1;
    std::vector<float> out, dq, dk, dv;
    std::vector<unsigned char> out_bits, dq_bits, dk_bits, dv_bits;
};

// Forward and backward of the case through the library, with every memory check.
Run run_library(const LCase& c, const Inputs& in) {
    const lref::Spec& s = c.s;
    Run r;
    const auto layout = [&](int chosen) { return c.all_bhdn ? int(tu::kBHDN) : chosen; };
    tu::View q = tu::make_view(c.dtype, layout(c.layout_q), s.B, s.Nq, s.Hq, s.d),
             k = tu::make_view(c.dtype, layout(c.layout_k), s.B, s.Nk, s.Hk, s.d),
             v = tu::make_view(c.dtype, layout(tu::kContiguous), s.B, s.Nk, s.Hk, s.d),
             out = tu::make_view(c.dtype, layout(c.layout_q == tu::kContiguous ? tu::kContiguous : tu::kPadded), s.B,
                                 s.Nq, s.Hq, s.d),
             dout = tu::make_view(c.dtype, layout(tu::kBHSD), s.B, s.Nq, s.Hq, s.d),
             dq = tu::make_view(c.dtype, layout(tu::kContiguous), s.B, s.Nq, s.Hq, s.d),
             dk = tu::make_view(c.dtype, layout(c.layout_k == tu::kStrideD2 ? tu::kPadded : tu::kContiguous), s.B, s.Nk,
                                s.Hk, s.d),
             dv = tu::make_view(c.dtype, layout(tu::kContiguous), s.B, s.Nk, s.Hk, s.d);
    q.store(in.q), k.store(in.k), v.store(in.v), dout.store(in.g);
    tu::poison(out), tu::poison(dq), tu::poison(dk), tu::poison(dv);
    const auto sq = tu::snapshot(q), sk = tu::snapshot(k), sv = tu::snapshot(v), sg = tu::snapshot(dout);
    const fsig_attention_params p = params_for(s);
    const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), to = out.desc(), tg = dout.desc(), tdq = dq.desc(),
                      tdk = dk.desc(), tdv = dv.desc();
    r.fwd_status = c.buffers_api
                       ? fsig_attention_forward_buffers(&p, &tq, &tk, &tv, &to, nullptr, nullptr, q.data(), k.data(),
                                                        v.data(), out.data(), nullptr)
                       : fsig_attention_forward(&p, &tq, &tk, &tv, &to, nullptr, nullptr);
    EXPECT(r.fwd_status == FSIG_OK, "%s: forward returned %d: %s", c.name.c_str(), r.fwd_status, fsig_last_error());
    const fsig_tensor* o = c.out_in_backward ? &to : nullptr;
    r.bwd_status = c.buffers_api
                       ? fsig_attention_backward_buffers(&p, &tq, &tk, &tv, o, &tg, nullptr, &tdq, &tdk, &tdv, nullptr,
                                                         q.data(), k.data(), v.data(), o ? out.data() : nullptr,
                                                         dout.data(), nullptr, dq.data(), dk.data(), dv.data())
                       : fsig_attention_backward(&p, &tq, &tk, &tv, o, &tg, nullptr, &tdq, &tdk, &tdv, nullptr);
    EXPECT(r.bwd_status == FSIG_OK, "%s: backward returned %d: %s", c.name.c_str(), r.bwd_status, fsig_last_error());
    for (const tu::View* view : {&out, &dq, &dk, &dv})
        EXPECT(tu::count_stray_writes(*view) == 0, "%s: %zu elements written outside an output's view", c.name.c_str(),
               tu::count_stray_writes(*view));
    EXPECT(tu::unchanged(q, sq) && tu::unchanged(k, sk) && tu::unchanged(v, sv) && tu::unchanged(dout, sg),
           "%s: an input changed", c.name.c_str());
    r.out = out.load(), r.dq = dq.load(), r.dk = dk.load(), r.dv = dv.load();
    auto bits = [](const tu::View& view) { return std::vector<unsigned char>(view.st->mem, view.st->mem + view.st->bytes); };
    r.out_bits = bits(out), r.dq_bits = bits(dq), r.dk_bits = bits(dk), r.dv_bits = bits(dv);
    return r;
}

void check_case(const LCase& c) {
    const lref::Spec& s = c.s;
    const Inputs in = random_inputs(c);
    const Run r = run_library(c, in);
    if (r.fwd_status != FSIG_OK || r.bwd_status != FSIG_OK) return;
    const auto q = tu::to_double(in.q), k = tu::to_double(in.k), v = tu::to_double(in.v), g = tu::to_double(in.g);
    const std::vector<double> o64 = lref::forward64(s, q.data(), k.data(), v.data());
    const std::vector<float> onv = lref::forward_naive(s, c.dtype, in.q.data(), in.k.data(), in.v.data());
    const lref::Grads<double> g64 = lref::backward64(s, q.data(), k.data(), v.data(), g.data());
    const lref::Grads<float> gnv = lref::backward_naive(s, c.dtype, in.q.data(), in.k.data(), in.v.data(), in.g.data());
    const std::vector<int64_t> qshape = {s.B, s.Nq, s.Hq, s.d}, kshape = {s.B, s.Nk, s.Hk, s.d};
    const std::string name = c.name + " [" + s.describe() + " " + ref::dtype_name(c.dtype) + "]";
    EXPECT(ref::check_rule(name, "out", r.out.data(), o64.data(), onv.data(), o64.size(), qshape).ok, "%s: out", name.c_str());
    EXPECT(ref::check_rule(name, "dq", r.dq.data(), g64.dq.data(), gnv.dq.data(), g64.dq.size(), qshape).ok, "%s: dq",
           name.c_str());
    EXPECT(ref::check_rule(name, "dk", r.dk.data(), g64.dk.data(), gnv.dk.data(), g64.dk.size(), kshape).ok, "%s: dk",
           name.c_str());
    EXPECT(ref::check_rule(name, "dv", r.dv.data(), g64.dv.data(), gnv.dv.data(), g64.dv.size(), kshape).ok, "%s: dv",
           name.c_str());
}

const char* map_name(int map) { return map == lref::kCosformer ? "cosformer" : "linear_elu"; }

std::vector<LCase> rule_cases() {
    struct Shape { int64_t Nq, Nk; };
    const Shape shapes[] = {{1, 1}, {7, 33}, {33, 7}, {130, 130}, {1, 257}, {200, 131}, {131, 200}};
    const int64_t heads[][2] = {{2, 2}, {4, 2}, {3, 1}};
    const int64_t dims[] = {8, 40, 64, 17, 1};
    const int dtypes[] = {FSIG_DTYPE_FP32, FSIG_DTYPE_FP16, FSIG_DTYPE_BF16};
    std::vector<LCase> cases;
    int idx = 0;
    for (const Shape& sh : shapes)
        for (int map = 0; map < 2; ++map)
            for (int causal = 0; causal < 2; ++causal, ++idx) {
                LCase c;
                c.s.B = 1 + idx % 2, c.s.Nq = sh.Nq, c.s.Nk = sh.Nk, c.s.map = map, c.s.causal = causal;
                c.s.Hq = heads[idx % 3][0], c.s.Hk = heads[idx % 3][1], c.s.d = dims[idx % 5];
                c.dtype = dtypes[idx % 3];
                c.layout_q = idx % 4 == 1 ? tu::kPadded : tu::kContiguous;
                c.layout_k = idx % 4 == 2 ? tu::kBHSD : idx % 4 == 3 ? tu::kStrideD2 : tu::kContiguous;
                c.buffers_api = idx % 2 == 1;
                c.out_in_backward = idx % 3 == 2;
                c.seed = 100 + idx;
                c.name = th::format("rule%02d_%s%s_%lldx%lld", idx, map_name(map), causal ? "_causal" : "",
                                    (long long)sh.Nq, (long long)sh.Nk);
                cases.push_back(c);
            }
    // several chunks per segment and several segments (B·Hk = 8: 4 segments of 3 chunks), ragged ends
    for (int map = 0; map < 2; ++map)
        for (int causal = 0; causal < 2; ++causal) {
            LCase c;
            c.s.B = 2, c.s.Nq = 600, c.s.Nk = 590, c.s.Hq = 4, c.s.Hk = 4, c.s.d = 16, c.s.map = map, c.s.causal = causal;
            c.dtype = FSIG_DTYPE_FP32;
            c.seed = 900 + map * 2 + causal;
            c.name = th::format("segments_%s%s_600x590", map_name(map), causal ? "_causal" : "");
            cases.push_back(c);
        }
    // M given (three times the default, and exactly max(Nq, Nk)); ε given, large enough to bind on some rows
    for (int causal = 0; causal < 2; ++causal) {
        LCase c;
        c.s.B = 1, c.s.Nq = 70, c.s.Nk = 90, c.s.Hq = 2, c.s.Hk = 1, c.s.d = 24, c.s.causal = causal, c.s.length = 270;
        c.seed = 950 + causal;
        c.name = th::format("length_M270%s", causal ? "_causal" : "");
        cases.push_back(c);
        c.s.length = 90, c.seed = 952 + causal, c.dtype = FSIG_DTYPE_BF16;
        c.name = th::format("length_M90%s", causal ? "_causal" : "");
        cases.push_back(c);
        for (int map = 0; map < 2; ++map) {
            LCase e;
            e.s.B = 1, e.s.Nq = 9, e.s.Nk = 33, e.s.Hq = 2, e.s.Hk = 2, e.s.d = 8, e.s.causal = causal, e.s.map = map;
            e.s.epsilon = map == lref::kCosformer ? 24.0 : 150.0;  // binds where few keys or small features
            e.seed = 960 + causal * 2 + map;
            e.name = th::format("epsilon_%s%s", map_name(map), causal ? "_causal" : "");
            cases.push_back(e);
        }
    }
    return cases;
}

}  // namespace

TEST(linear_forward_backward_rule) {
    for (const LCase& c : rule_cases()) check_case(c);
}

// Backward of the library and of the fp64 reference against central differences of the fp64 forward.
TEST(linear_backward_matches_finite_differences) {
    int idx = 0;
    for (int map = 0; map < 2; ++map)
        for (int variant = 0; variant < 4; ++variant, ++idx) {
            lref::Spec s;
            s.B = 1, s.Nq = 5, s.Nk = 7, s.Hq = 2, s.Hk = 1, s.d = 4, s.map = map;
            s.causal = variant != 0;
            if (variant == 2) s.Nq = 7, s.Nk = 5;  // Nq > Nk: the first rows see no key
            Rng rng(4000 + idx);
            std::vector<float> qf = ref::random_values(rng, s.q_elems(), ref::kFp32),
                               kf = ref::random_values(rng, s.kv_elems(), ref::kFp32),
                               vf = ref::random_values(rng, s.kv_elems(), ref::kFp32),
                               gf = ref::random_values(rng, s.q_elems(), ref::kFp32);
            for (std::vector<float>* x : {&qf, &kf})  // keep relu's kink at 0 far from every input
                for (float& e : *x)
                    if (std::fabs(e) < 0.05f) e = e < 0 ? -0.05f : 0.05f;
            const auto q = tu::to_double(qf), k = tu::to_double(kf), v = tu::to_double(vf), g = tu::to_double(gf);
            if (variant == 3) {  // ε between two denominators, far from both: the floor binds on some rows only
                std::vector<double> dens = lref::denominators(s, q.data(), k.data());
                std::sort(dens.begin(), dens.end());
                double best = -1, eps = 0;
                for (size_t i = 0; i + 1 < dens.size(); ++i)
                    if (dens[i] > 0.05 && dens[i + 1] - dens[i] > best) best = dens[i + 1] - dens[i], eps = (dens[i] + dens[i + 1]) / 2;
                s.epsilon = double(float(eps));
            }
            const std::string name = th::format("fd%d_%s_%s", idx, map_name(map), s.describe().c_str());
            const lref::Grads<double> fd = lref::fd_grads(s, q.data(), k.data(), v.data(), g.data());
            const lref::Grads<double> an = lref::backward64(s, q.data(), k.data(), v.data(), g.data());
            LCase c;
            c.s = s, c.name = name;
            Inputs in{qf, kf, vf, gf};
            const Run r = run_library(c, in);
            if (r.bwd_status != FSIG_OK) continue;
            const char* names[3] = {"dq", "dk", "dv"};
            const std::vector<double>* fds[3] = {&fd.dq, &fd.dk, &fd.dv};
            const std::vector<double>* ans[3] = {&an.dq, &an.dk, &an.dv};
            const std::vector<float>* lib[3] = {&r.dq, &r.dk, &r.dv};
            for (int t = 0; t < 3; ++t) {
                double mag = 1, e_ref = 0, e_lib = 0;
                for (double x : *fds[t]) mag = std::max(mag, std::fabs(x));
                for (size_t i = 0; i < fds[t]->size(); ++i) {
                    e_ref = std::max(e_ref, std::fabs((*ans[t])[i] - (*fds[t])[i]));
                    const double e = std::fabs(double((*lib[t])[i]) - (*fds[t])[i]);
                    e_lib = std::isnan(e) ? e : std::max(e_lib, e);
                }
                // central differences with h = 1e-6 on fp64: ~1e-9 relative truncation + rounding
                EXPECT(e_ref <= 1e-6 * mag, "%s %s: reference analytic vs finite differences %.3g", name.c_str(), names[t], e_ref);
                EXPECT(e_lib <= 2e-5 * mag, "%s %s: library vs finite differences %.3g", name.c_str(), names[t], e_lib);
            }
        }
}

// Same bits for 1, 2 and 3 threads (segments and chunks are fixed by the problem, sums in a fixed order).
// The MQA cases are short enough that the causal query pass splits the group's heads into 1, 2 and 3
// tasks for 1, 2 and 3 threads.
TEST(linear_thread_count_independence) {
    const int before = fsig_get_num_threads();
    for (int map = 0; map < 2; ++map)
        for (int shape = 0; shape < 3; ++shape) {
            const int causal = shape > 0;
            LCase c;
            c.s.B = 2, c.s.Nq = 333, c.s.Nk = 300, c.s.Hq = 4, c.s.Hk = 2, c.s.d = 20, c.s.map = map, c.s.causal = causal;
            if (shape == 2) c.s.B = 1, c.s.Nq = 100, c.s.Nk = 120, c.s.Hk = 1;
            c.dtype = causal ? FSIG_DTYPE_BF16 : FSIG_DTYPE_FP32;
            c.seed = 77 + map + (shape == 2 ? 4 : 0);
            c.name = th::format("threads_%s%s%s", map_name(map), causal ? "_causal" : "", shape == 2 ? "_mqa" : "");
            const Inputs in = random_inputs(c);
            Run runs[3];
            for (int t = 0; t < 3; ++t) {
                REQUIRE(fsig_set_num_threads(t + 1) == FSIG_OK, "fsig_set_num_threads: %s", fsig_last_error());
                runs[t] = run_library(c, in);
            }
            for (int t = 1; t < 3; ++t) {
                EXPECT(runs[t].out_bits == runs[0].out_bits, "%s: out differs with %d threads", c.name.c_str(), t + 1);
                EXPECT(runs[t].dq_bits == runs[0].dq_bits, "%s: dq differs with %d threads", c.name.c_str(), t + 1);
                EXPECT(runs[t].dk_bits == runs[0].dk_bits, "%s: dk differs with %d threads", c.name.c_str(), t + 1);
                EXPECT(runs[t].dv_bits == runs[0].dv_bits, "%s: dv differs with %d threads", c.name.c_str(), t + 1);
            }
        }
    fsig_set_num_threads(before);
}

// [B, H, d, N] tensors (positions contiguous: rows are packed and stored along positions) give the same
// bits as the contiguous layout, and pass the rule; ragged chunks, GQA, several segments, every dtype.
TEST(linear_layout_bhdn) {
    int idx = 0;
    for (int map = 0; map < 2; ++map)
        for (int causal = 0; causal < 2; ++causal)
            for (int dtype : {FSIG_DTYPE_FP32, FSIG_DTYPE_BF16, FSIG_DTYPE_FP16}) {
                LCase c;
                c.s.B = 2, c.s.Nq = 150 + 37 * (idx % 2), c.s.Nk = 170, c.s.Hq = 4, c.s.Hk = idx % 3 == 0 ? 1 : 2;
                c.s.d = idx % 2 ? 24 : 5, c.s.map = map, c.s.causal = causal;
                c.dtype = dtype;
                c.seed = 500 + idx++;
                c.name = th::format("bhdn_%s%s_%s", map_name(map), causal ? "_causal" : "", ref::dtype_name(dtype));
                const Inputs in = random_inputs(c);
                const Run contiguous = run_library(c, in);
                c.all_bhdn = true;
                check_case(c);
                const Run bhdn = run_library(c, in);
                const auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
                    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
                };
                EXPECT(same(bhdn.out, contiguous.out), "%s: out differs from the contiguous layout", c.name.c_str());
                EXPECT(same(bhdn.dq, contiguous.dq), "%s: dq differs from the contiguous layout", c.name.c_str());
                EXPECT(same(bhdn.dk, contiguous.dk), "%s: dk differs from the contiguous layout", c.name.c_str());
                EXPECT(same(bhdn.dv, contiguous.dv), "%s: dv differs from the contiguous layout", c.name.c_str());
            }
}

namespace {

// A small valid call whose params (and tensors) a test edits to break one rule.
struct BadCall {
    lref::Spec s;
    tu::View q, k, v, out, lse, dout, dq, dk, dv;
    fsig_attention_params p;
    BadCall() {
        s.B = 1, s.Nq = 6, s.Nk = 9, s.Hq = 2, s.Hk = 1, s.d = 8;
        q = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, 6, 2, 8);
        out = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, 6, 2, 8);
        dout = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, 6, 2, 8);
        dq = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, 6, 2, 8);
        k = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, 9, 1, 8);
        v = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, 9, 1, 8);
        dk = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, 9, 1, 8);
        dv = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, 9, 1, 8);
        lse = tu::make_lse_view(tu::kContiguous, 1, 2, 6);
        Rng rng(5);
        q.store(ref::random_values(rng, 96, ref::kFp32));
        k.store(ref::random_values(rng, 72, ref::kFp32));
        v.store(ref::random_values(rng, 72, ref::kFp32));
        dout.store(ref::random_values(rng, 96, ref::kFp32));
        p = params_for(s);
    }
    // forward (and backward) must fail with status, write nothing, and name `needle` in the message
    void expect_error(const char* what, int status, const char* needle, bool with_lse = false,
                      bool cuda = false) {
        for (int pass = 0; pass < 2; ++pass) {
            tu::poison(out), tu::poison(dq), tu::poison(dk), tu::poison(dv), tu::poison(lse);
            fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), to = out.desc(), tl = lse.desc(), tg = dout.desc(),
                        tdq = dq.desc(), tdk = dk.desc(), tdv = dv.desc();
            if (cuda)
                for (fsig_tensor* t : {&tq, &tk, &tv, &to, &tg, &tdq, &tdk, &tdv}) t->device_type = FSIG_DEVICE_CUDA;
            const int st = pass == 0 ? fsig_attention_forward(&p, &tq, &tk, &tv, &to, with_lse ? &tl : nullptr, nullptr)
                                     : fsig_attention_backward(&p, &tq, &tk, &tv, nullptr, &tg, with_lse ? &tl : nullptr,
                                                               &tdq, &tdk, &tdv, nullptr);
            const char* msg = fsig_last_error();
            EXPECT(st == status, "%s (%s): status %d, expected %d (%s)", what, pass ? "backward" : "forward", st, status, msg);
            EXPECT(std::strstr(msg, needle) != nullptr, "%s (%s): message \"%s\" does not name \"%s\"", what,
                   pass ? "backward" : "forward", msg, needle);
            for (const tu::View* o : {&out, &dq, &dk, &dv, &lse})
                EXPECT(tu::count_stray_writes(*o) == 0 && tu::count_stray_writes(*o) + 0 == 0,
                       "%s: an output was written", what);
            EXPECT(std::isnan(out.load()[0]) && std::isnan(dq.load()[0]), "%s: an output was written", what);
        }
    }
};

}  // namespace

TEST(linear_bad_inputs) {
    {
        BadCall c;
        c.p.linear_length = 8;  // < max(Nq, Nk) = 9
        c.expect_error("M too small", FSIG_ERROR_INVALID_PARAMS, "linear_length");
    }
    {
        BadCall c;
        c.p.linear_length = -3;
        c.expect_error("M negative", FSIG_ERROR_INVALID_PARAMS, "linear_length");
    }
    {
        BadCall c;
        c.p.window_left = 4;
        c.expect_error("window given", FSIG_ERROR_INVALID_PARAMS, "window");
    }
    {
        BadCall c;
        c.p.window_right = 0, c.p.causal = 1;
        c.expect_error("window_right given", FSIG_ERROR_INVALID_PARAMS, "window");
    }
    {
        BadCall c;
        c.expect_error("lse given", FSIG_ERROR_INVALID_PARAMS, "lse", true);
    }
    {
        BadCall c;
        c.p.scale = 0.5f;
        c.expect_error("scale given", FSIG_ERROR_INVALID_PARAMS, "params.scale");
    }
    {
        BadCall c;
        c.p.sigmoid_bias = -2.f;
        c.expect_error("sigmoid_bias given", FSIG_ERROR_INVALID_PARAMS, "sigmoid_bias");
    }
    {
        BadCall c;
        c.p.alpha = 0.5f;
        c.expect_error("alpha given", FSIG_ERROR_INVALID_PARAMS, "alpha");
    }
    for (float eps : {0.f, -1.f, INFINITY}) {
        BadCall c;
        c.p.linear_epsilon = eps;
        c.expect_error("epsilon out of range", FSIG_ERROR_INVALID_PARAMS, "linear_epsilon");
    }
    {
        BadCall c;
        c.p.score = FSIG_SCORE_LINEAR_ELU, c.p.linear_length = 20;
        c.expect_error("M for linear_elu", FSIG_ERROR_INVALID_PARAMS, "linear_length");
    }
    {
        BadCall c;
        c.p.score = FSIG_SCORE_SIGMOID, c.p.linear_length = 20;
        c.expect_error("M for sigmoid", FSIG_ERROR_INVALID_PARAMS, "linear_length");
    }
    {
        BadCall c;
        c.p.score = FSIG_SCORE_RELU, c.p.linear_epsilon = 1e-3f;
        c.expect_error("epsilon for relu", FSIG_ERROR_INVALID_PARAMS, "linear_epsilon");
    }
    {
        BadCall c;
        c.p.score = 9;
        c.expect_error("score 9", FSIG_ERROR_INVALID_PARAMS, "params.score");
    }
    {
        BadCall c;
        c.p.reserved1 = 1;
        c.expect_error("reserved1", FSIG_ERROR_INVALID_PARAMS, "reserved1");
    }
    {
        BadCall c;
        c.p.struct_size = 56;  // neither the 0.1 size (48) nor the current one
        c.expect_error("struct_size between versions", FSIG_ERROR_INVALID_PARAMS, "struct_size");
    }
    {
        // CUDA tensors reach the CUDA backend (native/cuda/linear_kernel.h): here host fp32 memory labelled
        // as CUDA, refused without a device (no driver / no CUDA build) and, on a GPU machine, for fp32
        fsig_capabilities caps;
        std::memset(&caps, 0, sizeof caps);
        caps.struct_size = sizeof caps;
        REQUIRE(fsig_get_capabilities(&caps) == FSIG_OK, "%s", fsig_last_error());
        const int expected = caps.cuda_device_count > 0 ? FSIG_ERROR_UNSUPPORTED : FSIG_ERROR_NO_DEVICE;
        BadCall c;
        c.expect_error("cuda tensors", expected, "CUDA", false, true);
        c.p.score = FSIG_SCORE_LINEAR_ELU;
        c.expect_error("cuda tensors (linear_elu)", expected, "CUDA", false, true);
    }
}

// A caller compiled against the 0.1 header (struct_size 48, no linear fields) keeps working: its
// calls give the same bits as today's defaults, and bytes past its struct are never read.
TEST(linear_params_struct_from_0_1) {
    for (int score : {FSIG_SCORE_SIGMOID, FSIG_SCORE_COSFORMER}) {
        BadCall c;
        unsigned char block[sizeof(fsig_attention_params)];
        std::memset(block, 0xA5, sizeof block);  // what lies past an old caller's struct: garbage
        fsig_attention_params p = fsig_attention_params_default();
        p.score = score;
        p.struct_size = 48;
        std::memcpy(block, &p, 48);
        fsig_attention_params cur = fsig_attention_params_default();
        cur.score = score;
        const fsig_tensor tq = c.q.desc(), tk = c.k.desc(), tv = c.v.desc(), to = c.out.desc();
        tu::poison(c.out);
        int st = fsig_attention_forward(reinterpret_cast<const fsig_attention_params*>(block), &tq, &tk, &tv, &to,
                                        nullptr, nullptr);
        REQUIRE(st == FSIG_OK, "0.1-sized params, score %d: %d %s", score, st, fsig_last_error());
        const auto old_bits = tu::snapshot(c.out);
        tu::poison(c.out);
        st = fsig_attention_forward(&cur, &tq, &tk, &tv, &to, nullptr, nullptr);
        REQUIRE(st == FSIG_OK, "current params: %s", fsig_last_error());
        EXPECT(tu::unchanged(c.out, old_bits), "score %d: the 0.1-sized params give other results", score);
    }
}

int main(int argc, char** argv) {
    const int isa = tu::check_isa_env();
    if (isa != 0) return isa;
    return th::run_all(std::vector<std::string>(argv + 1, argv + argc));
}
