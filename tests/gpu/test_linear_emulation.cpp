// The CUDA linear-attention kernels (native/cuda/linear_kernel.h) on the SIMT emulator (tests/emu): every
// kernel of a call (forward: kFwd; backward: kStats, the row-statistics reduction, kDv, kDk, kDq) launched
// with a segment count chosen by the test, on tensors with padded strides, checked against the fp64
// quadratic form of tests/linear_reference.h by the DESIGN §6 rule. test_cuda_linear_emu runs the same
// kernels through the C ABI; this test reaches what the ABI does not choose: the segment count.
//
// Against false confidence: the emulator runs blocks and threads in a random order and NaN-fills shared
// memory per block; outputs are poisoned and the bytes around every view must stay poisoned; the segment
// count is varied (without a workspace results must be bit-identical for 1, 2, 3, 5 segments; with one,
// whose content on entry is NaN, each count within the rule and a second schedule of the same count
// bit-identical), and a negative control (a wrong M) must break the rule.
//
//   test_linear_emulation [--verbose] [name filters...]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "harness.h"
#include "linear_kernels.cuh"
#include "linear_reference.h"
#include "reference.h"

namespace lin = fsig::cuda::lin;

namespace {

bool g_verbose = false;
std::vector<std::string> g_filters;

constexpr uint16_t kPoison16 = 0x7da5;  // an fp16 NaN (bf16 tensors use 0x7fa5)

// A [B, N, H, d] 16-bit tensor in storage with padding around every row (strides multiples of 8, the
// CUDA rule), poisoned outside the view.
struct Tensor {
    std::vector<uint16_t> mem;
    int64_t B = 1, N = 1, H = 1, d = 1, sb = 0, sr = 0, sh = 0, base = 8;
    bool bf16 = false;

    Tensor(bool is_bf16, int64_t b, int64_t n, int64_t h, int64_t dd, bool padded) : B(b), N(n), H(h), d(dd), bf16(is_bf16) {
        sh = padded ? d + 8 : d;
        sr = H * sh;
        sb = N * sr + (padded ? 16 : 0);
        mem.assign(size_t(base + B * sb + 8), poison());
    }
    uint16_t poison() const { return bf16 ? 0x7fa5 : kPoison16; }
    int64_t at(int64_t b, int64_t n, int64_t h, int64_t c) const { return base + b * sb + n * sr + h * sh + c; }
    lin::LinTensor view() {
        lin::LinTensor t;
        t.data = mem.data() + base;
        t.sb = sb, t.sr = sr, t.sh = sh;
        return t;
    }
    void store(const std::vector<float>& x) {  // dense BSHD values (already representable in the dtype)
        size_t i = 0;
        for (int64_t b = 0; b < B; ++b)
            for (int64_t n = 0; n < N; ++n)
                for (int64_t h = 0; h < H; ++h)
                    for (int64_t c = 0; c < d; ++c) {
                        if (bf16) lin::store16<true>(mem.data(), at(b, n, h, c), x[i++]);
                        else lin::store16<false>(mem.data(), at(b, n, h, c), x[i++]);
                    }
    }
    std::vector<float> load() const {
        std::vector<float> x;
        x.reserve(size_t(B * N * H * d));
        for (int64_t b = 0; b < B; ++b)
            for (int64_t n = 0; n < N; ++n)
                for (int64_t h = 0; h < H; ++h)
                    for (int64_t c = 0; c < d; ++c)
                        x.push_back(bf16 ? lin::load16<true>(mem.data(), at(b, n, h, c))
                                         : lin::load16<false>(mem.data(), at(b, n, h, c)));
        return x;
    }
    void poison_all() { std::fill(mem.begin(), mem.end(), poison()); }
    // elements outside the view that are no longer the poison
    size_t stray() const {
        std::vector<char> in(mem.size(), 0);
        for (int64_t b = 0; b < B; ++b)
            for (int64_t n = 0; n < N; ++n)
                for (int64_t h = 0; h < H; ++h)
                    for (int64_t c = 0; c < d; ++c) in[size_t(at(b, n, h, c))] = 1;
        size_t k = 0;
        for (size_t i = 0; i < mem.size(); ++i) k += !in[i] && mem[i] != poison();
        return k;
    }
};

struct Case {
    std::string name;
    lref::Spec s;
    bool bf16 = false;
    bool padded = false;
    int nseg = 0;  // 0: choose_segments, as the launcher does
    bool partials = false;  // a workspace: the segments' partial states (kPartial, kCombine)
    uint64_t seed = 1;
};

struct Tensors {
    Tensor q, k, v, dout, out, dq, dk, dv;
    Tensors(const Case& c)
        : q(c.bf16, c.s.B, c.s.Nq, c.s.Hq, c.s.d, c.padded), k(c.bf16, c.s.B, c.s.Nk, c.s.Hk, c.s.d, false),
          v(c.bf16, c.s.B, c.s.Nk, c.s.Hk, c.s.d, c.padded), dout(c.bf16, c.s.B, c.s.Nq, c.s.Hq, c.s.d, c.padded),
          out(c.bf16, c.s.B, c.s.Nq, c.s.Hq, c.s.d, c.padded), dq(c.bf16, c.s.B, c.s.Nq, c.s.Hq, c.s.d, c.padded),
          dk(c.bf16, c.s.B, c.s.Nk, c.s.Hk, c.s.d, c.padded), dv(c.bf16, c.s.B, c.s.Nk, c.s.Hk, c.s.d, false) {}
};

// What linear_runtime.cu's linear_params does, from the test's spec.
lin::LinParams params_of(const Case& c, Tensors& t) {
    const lref::Spec& s = c.s;
    lin::LinParams p;
    p.q = t.q.view(), p.k = t.k.view(), p.v = t.v.view(), p.dout = t.dout.view();
    p.out = t.out.view(), p.dq = t.dq.view(), p.dk = t.dk.view(), p.dv = t.dv.view();
    p.batch = int32_t(s.B), p.seq_q = int32_t(s.Nq), p.seq_k = int32_t(s.Nk);
    p.heads_q = int32_t(s.Hq), p.heads_k = int32_t(s.Hk), p.group = int32_t(s.Hq / s.Hk);
    p.causal = s.causal ? 1 : 0;
    p.angle = 1.0 / (2.0 * s.eff_length());
    p.epsilon = float(s.epsilon);
    return p;
}

// One kernel's whole grid on the emulated device (blocks in the emulator's random order).
template <int Role, int D, bool COS, bool BF16>
void emulate_kernel(lin::LinParams p, int nseg) {
    using G = lin::Cfg<Role, D, COS>;
    p.nseg = nseg > 0 ? nseg : lin::choose_segments(p, G::kSlices, lin::block_heads<Role>(p), G::kReverse ? p.seq_k : p.seq_q);
    const int64_t blocks = int64_t(p.nseg) * G::kSlices * lin::block_heads<Role>(p) * p.batch;
    REQUIRE(p.partials == nullptr || p.nseg == 1 || blocks <= lin::kMaxSegmentedBlocks,
            "%lld blocks need more workspace than the size query gives", (long long)blocks);
    cudaError_t e = lin::launch_segments<Role, D, COS, BF16>(p, nullptr);
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    REQUIRE(e == cudaSuccess, "kernel %d failed: %s", Role, cudaGetErrorString(e));
}

template <int D, bool COS, bool BF16>
void emulate_call(const lin::LinParams& p, bool backward, int nseg) {
    if (!backward) {
        emulate_kernel<lin::kFwd, D, COS, BF16>(p, nseg);
        return;
    }
    emulate_kernel<lin::kStats, D, COS, BF16>(p, nseg);
    cudaError_t e = lin::launch_by_role<D, COS, BF16>(lin::kReduce, p, nullptr);
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    REQUIRE(e == cudaSuccess, "row statistics reduction failed: %s", cudaGetErrorString(e));
    emulate_kernel<lin::kDv, D, COS, BF16>(p, nseg);
    emulate_kernel<lin::kDk, D, COS, BF16>(p, nseg);
    emulate_kernel<lin::kDq, D, COS, BF16>(p, nseg);
}

void emulate(const Case& c, const lin::LinParams& p, bool backward) {
    const bool cos = c.s.map == lref::kCosformer;
    const int d = int(c.s.d);
#define FSIG_EMU(D, COS, BF)                                                         \
    if (d == D && cos == COS && c.bf16 == BF) return emulate_call<D, COS, BF>(p, backward, c.nseg);
    FSIG_EMU(64, true, false) FSIG_EMU(64, true, true) FSIG_EMU(64, false, false) FSIG_EMU(64, false, true)
    FSIG_EMU(128, true, false) FSIG_EMU(128, true, true) FSIG_EMU(128, false, false) FSIG_EMU(128, false, true)
#undef FSIG_EMU
    REQUIRE(false, "no kernel for d = %d", d);
}

struct Result {
    std::vector<float> out, dq, dk, dv;
};

struct Inputs {
    std::vector<float> q, k, v, g;
};

Inputs inputs_of(const Case& c) {
    ref::Rng rng(c.seed);
    const int dt = c.bf16 ? ref::kBf16 : ref::kFp16;
    Inputs in;
    in.q = ref::random_values(rng, c.s.q_elems(), dt);
    in.k = ref::random_values(rng, c.s.kv_elems(), dt);
    in.v = ref::random_values(rng, c.s.kv_elems(), dt);
    in.g = ref::random_values(rng, c.s.q_elems(), dt);
    return in;
}

// Forward, then backward, emulated; inputs must come back unchanged and nothing outside a view written.
Result run(const Case& c, const Inputs& in, double angle_factor = 1.0) {
    Tensors t(c);
    t.q.store(in.q), t.k.store(in.k), t.v.store(in.v), t.dout.store(in.g);
    const std::vector<uint16_t> q0 = t.q.mem, k0 = t.k.mem, v0 = t.v.mem, g0 = t.dout.mem;
    lin::LinParams p = params_of(c, t);
    p.angle *= angle_factor;
    std::vector<float> workspace;  // its content on entry must not matter: NaN
    if (c.partials) {
        workspace.assign(size_t(lin::linear_workspace_bytes(c.s.d, c.s.map == lref::kCosformer) / 4), NAN);
        p.partials = workspace.data();
    }
    emulate(c, p, false);
    emulate(c, p, true);
    EXPECT(t.q.mem == q0 && t.k.mem == k0 && t.v.mem == v0 && t.dout.mem == g0, "%s: an input changed", c.name.c_str());
    for (const Tensor* o : {&t.out, &t.dq, &t.dk, &t.dv})
        EXPECT(o->stray() == 0, "%s: %zu element(s) outside an output's view were written", c.name.c_str(), o->stray());
    return Result{t.out.load(), t.dq.load(), t.dk.load(), t.dv.load()};
}

bool selected(const std::string& name) {
    if (g_filters.empty()) return true;
    for (const std::string& f : g_filters)
        if (name.find(f) != std::string::npos) return true;
    return false;
}

// Runs case c and checks its outputs by the rule; returns them (nothing where a filter leaves c out). edit:
// changes the random inputs first (kept representable in the dtype)
Result check_case(const Case& c, const std::function<void(Inputs&)>& edit = {}) {
    if (!selected(c.name)) return {};
    const lref::Spec& s = c.s;
    Inputs in = inputs_of(c);
    if (edit) edit(in);
    const Result r = run(c, in);
    const int dt = c.bf16 ? ref::kBf16 : ref::kFp16;
    std::vector<double> q(in.q.begin(), in.q.end()), k(in.k.begin(), in.k.end()), v(in.v.begin(), in.v.end()),
        g(in.g.begin(), in.g.end());
    const std::vector<double> o64 = lref::forward64(s, q.data(), k.data(), v.data());
    const std::vector<float> onv = lref::forward_naive(s, dt, in.q.data(), in.k.data(), in.v.data());
    const lref::Grads<double> g64 = lref::backward64(s, q.data(), k.data(), v.data(), g.data());
    const lref::Grads<float> gnv = lref::backward_naive(s, dt, in.q.data(), in.k.data(), in.v.data(), in.g.data());
    const std::vector<int64_t> qs = {s.B, s.Nq, s.Hq, s.d}, ks = {s.B, s.Nk, s.Hk, s.d};
    const std::string name = c.name + " [" + s.describe() + (c.bf16 ? " bf16]" : " fp16]");
    const ref::RuleResult ro = ref::check_rule(name, "out", r.out.data(), o64.data(), onv.data(), o64.size(), qs);
    const ref::RuleResult rq = ref::check_rule(name, "dq", r.dq.data(), g64.dq.data(), gnv.dq.data(), g64.dq.size(), qs);
    const ref::RuleResult rk = ref::check_rule(name, "dk", r.dk.data(), g64.dk.data(), gnv.dk.data(), g64.dk.size(), ks);
    const ref::RuleResult rv = ref::check_rule(name, "dv", r.dv.data(), g64.dv.data(), gnv.dv.data(), g64.dv.size(), ks);
    EXPECT(ro.ok, "%s: out breaks the §6 rule", name.c_str());
    EXPECT(rq.ok, "%s: dq breaks the §6 rule", name.c_str());
    EXPECT(rk.ok, "%s: dk breaks the §6 rule", name.c_str());
    EXPECT(rv.ok, "%s: dv breaks the §6 rule", name.c_str());
    if (g_verbose || !(ro.ok && rq.ok && rk.ok && rv.ok))
        std::printf("  %s %s  err/bound out %.2g/%.2g dq %.2g/%.2g dk %.2g/%.2g dv %.2g/%.2g\n",
                    ro.ok && rq.ok && rk.ok && rv.ok ? "ok  " : "FAIL", name.c_str(), ro.our_err, ro.bound, rq.our_err,
                    rq.bound, rk.our_err, rk.bound, rv.our_err, rv.bound);
    return r;
}

const char* map_name(int map) { return map == lref::kCosformer ? "cosformer" : "linear_elu"; }

// map × causal × heads (MHA, GQA, MQA) × dtype × d, the shape turning with the index: odd lengths, Nq < Nk
// and Nq > Nk (rows with δ_i < 0), one chunk and several, a partial last chunk.
std::vector<Case> matrix() {
    struct Shape { int64_t Nq, Nk; };
    const Shape shapes[] = {{1, 1}, {37, 37}, {33, 95}, {101, 45}, {130, 131}, {1, 70}, {70, 1}, {96, 64}};
    const int64_t heads[][2] = {{2, 2}, {4, 2}, {3, 1}};
    const char* head_names[] = {"mha", "gqa", "mqa"};
    std::vector<Case> cases;
    int idx = 0;
    for (int map = 0; map < 2; ++map)
        for (int causal = 0; causal < 2; ++causal)
            for (int d : {64, 128})
                for (int bf = 0; bf < 2; ++bf, ++idx) {
                    Case c;
                    const Shape sh = shapes[idx % 8];
                    const int hh = idx % 3;
                    c.s.B = 1 + idx % 2, c.s.Nq = sh.Nq, c.s.Nk = sh.Nk, c.s.Hq = heads[hh][0], c.s.Hk = heads[hh][1];
                    c.s.d = d, c.s.map = map, c.s.causal = causal;
                    c.bf16 = bf, c.padded = idx % 4 == 1, c.seed = 300 + idx;
                    c.nseg = idx % 5 == 2 || idx % 5 == 4 ? 3 : 0;
                    c.partials = idx % 5 == 4;
                    c.name = th::format("emu%02d_%s%s_d%d_%s_%lldx%lld_%s%s%s%s", idx, map_name(map), causal ? "_causal" : "",
                                        d, bf ? "bf16" : "fp16", (long long)sh.Nq, (long long)sh.Nk, head_names[hh],
                                        c.padded ? "_padded8" : "", c.nseg ? "_seg3" : "", c.partials ? "_partials" : "");
                    cases.push_back(c);
                }
    return cases;
}

}  // namespace

TEST(emulated_linear_matrix) {
    for (const Case& c : matrix()) check_case(c);
}

// Several segments per row of blocks: the state before each recomputed by the segment, or added up from
// partial sums in a workspace; M and ε given (ε binding on some rows).
TEST(emulated_linear_segments_and_options) {
    int idx = 0;
    for (int map = 0; map < 2; ++map)
        for (int causal = 0; causal < 2; ++causal, ++idx) {
            Case c;
            c.s.B = 1, c.s.Nq = 300, c.s.Nk = 290, c.s.Hq = 2, c.s.Hk = 1, c.s.d = 64, c.s.map = map, c.s.causal = causal;
            c.bf16 = idx % 2, c.nseg = 4, c.seed = 700 + idx;
            c.name = th::format("segments4_%s%s_300x290", map_name(map), causal ? "_causal" : "");
            check_case(c);
            c.partials = true;
            c.name += "_partials";
            check_case(c);
            c.partials = false;
            Case e = c;
            e.s.Nq = 40, e.s.Nk = 75, e.s.length = map == lref::kCosformer ? 200 : 0, e.nseg = 2;
            e.s.epsilon = map == lref::kCosformer ? 40.0 : 120.0;
            e.seed = 720 + idx;
            e.name = th::format("options_%s%s_M%lld_eps%g", map_name(map), causal ? "_causal" : "", (long long)e.s.length,
                                e.s.epsilon);
            check_case(e);
        }
}

// Values far beyond fp16's range inside the computation while inputs and outputs are in range: v × 4096
// makes the state Σ k̃ ⊗ v ≈ 10^6 and the backward's pairs dO·v ≈ 10^5; q, k × 64 make the scores
// q̃·k̃ ≈ 10^5. The state enters the tensor cores scaled per n-tile and P scaled per row by powers of
// two, so fp16 must still pass (unscaled, those 16-bit terms would be inf).
TEST(emulated_linear_large_values) {
    int idx = 0;
    for (int map = 0; map < 2; ++map)
        for (int causal = 0; causal < 2; ++causal)
            for (int big_scores = 0; big_scores < 2; ++big_scores, ++idx) {
                Case c;
                c.s.B = 1, c.s.Nq = 200, c.s.Nk = 600, c.s.Hq = 2, c.s.Hk = 1, c.s.d = 64, c.s.map = map;
                c.s.causal = causal, c.bf16 = false, c.seed = 760 + idx;
                c.name = th::format("large_%s_%s%s_fp16", big_scores ? "qk_x64" : "v_x4096", map_name(map),
                                    causal ? "_causal" : "");
                check_case(c, [&](Inputs& in) {  // powers of two: exact in fp16
                    for (std::vector<float>* x : {&in.q, &in.k})
                        for (float& e : *x) e *= big_scores ? 64.f : 1.f;
                    for (float& e : in.v) e *= big_scores ? 1.f : 4096.f;
                });
            }
}

// Rows where ε binds at its default (1e-6): 1/n = 10^6. Causal: key 0 all zeros (a zeroed padding
// token), so query row 0 (δ = 0) sees one key with q̃·k̃ = 0. Non-causal: query 0 positive only on the
// first half of the dims, every key non-positive there, so relu makes q̃_0·k̃_j = 0 for all j. The
// gradients stay finite (each q̃·k̃ / n ≤ 1); an operand carrying all of 1/n (q̃/n) overflows fp16.
TEST(emulated_linear_epsilon_rows) {
    int idx = 0;
    for (int causal = 0; causal < 2; ++causal)
        for (int bf = 0; bf < 2; ++bf, ++idx) {
            Case c;
            c.s.B = 1, c.s.Nq = 70, c.s.Nk = 70, c.s.Hq = 2, c.s.Hk = 1, c.s.d = 64, c.s.map = lref::kCosformer;
            c.s.causal = causal, c.bf16 = bf, c.seed = 780 + idx;
            c.name = th::format("epsilon_rows_cosformer%s_%s", causal ? "_causal_zero_key0" : "_disjoint_query0",
                                bf ? "bf16" : "fp16");
            const lref::Spec s = c.s;
            check_case(c, [&](Inputs& in) {
                for (int64_t h = 0; h < s.Hk; ++h)
                    for (int64_t e = 0; e < s.d; ++e) {
                        const size_t k0 = size_t(h * s.d + e);  // key 0 of head h (B = 1, [B, N, H, d])
                        if (causal) in.k[k0] = 0.f;
                        else
                            for (int64_t j = 0; j < s.Nk; ++j)
                                if (e < s.d / 2) in.k[size_t((j * s.Hk + h) * s.d + e)] = -std::fabs(in.k[size_t((j * s.Hk + h) * s.d + e)]);
                    }
                if (!causal)
                    for (int64_t h = 0; h < s.Hq; ++h)
                        for (int64_t e = 0; e < s.d; ++e) {
                            float& x = in.q[size_t(h * s.d + e)];  // query 0
                            x = e < s.d / 2 ? std::fabs(x) + 0.25f : -std::fabs(x);
                        }
            });
        }
}

bool same_bits(const Result& a, const Result& b) {
    auto same = [](const std::vector<float>& x, const std::vector<float>& y) {
        return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
    };
    return same(a.out, b.out) && same(a.dq, b.dq) && same(a.dk, b.dk) && same(a.dv, b.dv);
}

Case segment_case(int map, int causal, const char* what) {
    Case c;
    c.s.B = 1, c.s.Nq = 250, c.s.Nk = 230, c.s.Hq = 4, c.s.Hk = 2, c.s.d = 64, c.s.map = map, c.s.causal = causal;
    c.bf16 = causal, c.seed = 800 + map * 2 + causal;
    c.name = th::format("%s_%s%s", what, map_name(map), causal ? "_causal" : "");
    return c;
}

// Without a workspace the segment count changes which block computes what, never a bit of the result;
// nor does the order in which blocks and threads run (the emulator's schedule differs on every launch: a
// thread reading what another writes without a barrier between them would make the result depend on it).
TEST(emulated_linear_segment_count_independence) {
    for (int map = 0; map < 2; ++map)
        for (int causal = 0; causal < 2; ++causal) {
            Case c = segment_case(map, causal, "segcount");
            if (!selected(c.name)) continue;
            const Inputs in = inputs_of(c);
            c.nseg = 1;
            const Result r1 = run(c, in);
            for (int nseg : {2, 3, 5}) {
                c.nseg = nseg;
                EXPECT(same_bits(r1, run(c, in)), "%s: %d segments give other bits than 1", c.name.c_str(), nseg);
            }
            c.nseg = 1;
            EXPECT(same_bits(r1, run(c, in)), "%s: another schedule of the same launch gives other bits", c.name.c_str());
        }
}

// With a workspace (NaN on entry: a value read but never written would show) each segment count is within
// the rule, and the same count gives the same bits under another schedule: the partials are added in a fixed
// order.
TEST(emulated_linear_partials) {
    for (int map = 0; map < 2; ++map)
        for (int causal = 0; causal < 2; ++causal)
            for (int nseg : {2, 3, 5}) {
                Case c = segment_case(map, causal, "partials");
                c.partials = true, c.nseg = nseg;
                c.name += th::format("_seg%d", nseg);
                if (!selected(c.name)) continue;
                const Result checked = check_case(c);
                EXPECT(same_bits(checked, run(c, inputs_of(c))), "%s: another schedule gives other bits",
                       c.name.c_str());
            }
}

// The work the segments cost (tensor-core FLOPs as the emulator counts them, forward and backward), against
// one segment: with a workspace, causal, (nseg − 1)(per_seg − 1) more state updates than one scan (the
// partial pass updates every chunk but the last segment's, each segment's scan all but its last chunk), an
// update being ≈ 1/4.3 of a chunk's products: here 7 of 16 chunks, ≈ 1.10×, and never above 1 + 1/4.3; not
// causal, nothing more. Recomputing the state before each segment costs more as the count grows (printed).
TEST(emulated_linear_partials_work) {
    for (int map = 0; map < 2; ++map)
        for (int causal = 0; causal < 2; ++causal) {
            Case c = segment_case(map, causal, "partials_work");
            c.s.Nq = c.s.Nk = 512;  // 16 chunks: 8 segments of 2
            if (!selected(c.name)) continue;
            const Inputs in = inputs_of(c);
            auto work = [&](int nseg, bool partials) {
                c.nseg = nseg, c.partials = partials;
                const uint64_t before = fsig::emu::work_counters().tensor_flops;
                run(c, in);
                return double(fsig::emu::work_counters().tensor_flops - before);
            };
            const double one = work(1, false), with = work(8, true) / one, without = work(8, false) / one;
            std::printf("  %-32s 8 segments: %.3f x the work of one with a workspace, %.3f x without\n", c.name.c_str(),
                        with, without);
            const double bound = causal ? 1.0 + 1.0 / 4.3 : 1.0;
            EXPECT(with <= bound + 1e-9 && with >= 1.0, "%s: 8 segments with a workspace take %.3f x the work of one "
                   "(expected 1 .. %.3f)", c.name.c_str(), with, bound);
        }
}

// Negative control: the same harness must see a wrong kernel. A cosFormer angle for M · 1.5 instead of M
// (a plausible bug: the wrong length) breaks the §6 rule on out.
TEST(emulated_linear_negative_control) {
    Case c;
    c.s.B = 1, c.s.Nq = 90, c.s.Nk = 90, c.s.Hq = 2, c.s.Hk = 2, c.s.d = 64, c.s.map = lref::kCosformer, c.s.causal = 1;
    c.seed = 900, c.name = "negative_control";
    if (!selected(c.name)) return;
    const Inputs in = inputs_of(c);
    const Result r = run(c, in, 1.0 / 1.5);
    std::vector<double> q(in.q.begin(), in.q.end()), k(in.k.begin(), in.k.end()), v(in.v.begin(), in.v.end());
    const std::vector<double> o64 = lref::forward64(c.s, q.data(), k.data(), v.data());
    const std::vector<float> onv = lref::forward_naive(c.s, ref::kFp16, in.q.data(), in.k.data(), in.v.data());
    double naive = 0, ours = 0;
    for (size_t i = 0; i < o64.size(); ++i) {
        naive = std::max(naive, std::fabs(double(onv[i]) - o64[i]));
        ours = std::max(ours, std::fabs(double(r.out[i]) - o64[i]));
    }
    EXPECT(ours > 2 * naive + 1e-5, "a wrong M passed the §6 rule (err %.3g, bound %.3g): the check cannot fail", ours,
           2 * naive + 1e-5);
    std::printf("  negative control: wrong M gives err %.3g against the bound %.3g (must exceed it)\n", ours,
                2 * naive + 1e-5);
}

// The host-side 16-bit conversions (the emulation's stand-ins for __float2half_rn / __float2bfloat16_rn)
// against the test reference's.
TEST(emulated_linear_conversions) {
    ref::Rng rng(5);
    for (int i = 0; i < 200000; ++i) {
        uint32_t u = uint32_t(rng.next_u64());
        if (i % 3 == 0) u = (u & 0x807fffffu) | (uint32_t(100 + i % 60) << 23);  // the fp16 range and its edges
        float f;
        std::memcpy(&f, &u, 4);
        if (std::isnan(f)) continue;
        uint16_t h = 0, b = 0;
        lin::store16<false>(&h, 0, f);
        lin::store16<true>(&b, 0, f);
        const float hf = lin::load16<false>(&h, 0), bf = lin::load16<true>(&b, 0);
        const float want_h = ref::half_to_float(ref::float_to_half(f)), want_b = ref::bf16_to_float(ref::float_to_bf16(f));
        if (!(hf == want_h || (std::isnan(hf) && std::isnan(want_h))) || !(bf == want_b)) {
            EXPECT(false, "%a: fp16 %a (want %a), bf16 %a (want %a)", double(f), double(hf), double(want_h), double(bf),
                   double(want_b));
            break;
        }
    }
}

int main(int argc, char** argv) {
    std::vector<std::string> tests;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--verbose") g_verbose = true;
        else g_filters.push_back(a);
    }
    for (const std::string& f : g_filters)
        for (const th::Test& t : th::registry())
            if (f == t.name) tests.push_back(f);
    if (!tests.empty()) g_filters.clear();
    return th::run_all(tests);
}
