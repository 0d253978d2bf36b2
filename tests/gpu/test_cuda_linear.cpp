// cosFormer and elu+1 linear attention on CUDA tensors through the public C ABI, forward and backward,
// against the fp64 quadratic form of tests/linear_reference.h under the DESIGN §6 rule: every
// map × causal × MHA/GQA/MQA × fp16/bf16 × d 64/128, the lengths turning over ragged pairs (one chunk,
// several, Nq < Nk, Nq > Nk); strided (padded) layouts; M and ε given; with and without a workspace
// (params.workspace: the segments' partial states, NaN on entry); refusals that must write nothing; a
// created stream, CUDA-graph capture and the caller's current device.
//
//   test_cuda_linear [--quick] [--device cpu] [--verbose] [name filters...]
//
// Exits 77 (CTest: skipped) with a message when the library has no CUDA or no device is present.
// --device cpu: the same numerics cases on CPU tensors (checks this test itself where there is no GPU).
// Outputs are poisoned with NaN before every call and the bytes around each output's view must stay
// poisoned; inputs are drawn from a fixed seed per case.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "cuda_harness.h"
#include "flashsig.h"
#include "harness.h"
#include "lib_util.h"
#include "linear_reference.h"
#include "reference.h"

namespace {

using gt::g_cuda;
using gt::g_device_count;
using gt::g_filters;
using gt::g_quick;
using gt::g_verbose;

using gt::mirror;
using gt::poison;
using gt::Tensor;

struct Case {
    std::string name;
    lref::Spec s;
    int dtype = ref::kBf16;
    bool padded = false;
    bool workspace = false;       // params.workspace from the size query, 0xFF (NaN) on entry
    bool expect_partials = false;  // ... and the kernels must have used it (several segments, on a GPU)
    uint64_t seed = 1;
};

// The linear scores' workspace for p and q: the size query's (on CUDA the fixed size of the header), 0xFF
// bytes on entry.
gt::Workspace linear_workspace(const fsig_attention_params& p, const fsig_tensor& q, int64_t d, bool cosformer) {
    gt::Workspace ws(p, q);
    const int64_t kd = d < 128 ? d : 128;  // (a wider head dim, refused by the call, is sized as 128)
    const int64_t want = g_cuda ? 526 * (33 * (cosformer ? 2 * kd : kd) + 32) * 4 : 0;
    EXPECT(ws.bytes == want, "the workspace size query gave %lld bytes, the header says %lld", (long long)ws.bytes,
           (long long)want);
    ws.fill_ff();
    return ws;
}

fsig_attention_params params_for(const lref::Spec& s) {
    fsig_attention_params p = fsig_attention_params_default();
    p.score = s.map == lref::kCosformer ? FSIG_SCORE_COSFORMER : FSIG_SCORE_LINEAR_ELU;
    p.causal = s.causal ? 1 : 0;
    p.linear_length = s.length;
    p.linear_epsilon = s.epsilon == 1e-6 ? NAN : float(s.epsilon);
    return p;
}

tu::View layout(const Case& c, int64_t N, int64_t H) {
    return c.padded ? gt::padded8_view(c.dtype, c.s.B, N, H, c.s.d) : tu::make_view(c.dtype, tu::kContiguous, c.s.B, N, H, c.s.d);
}

void synchronize_or_die(const std::string& name) {
    if (!g_cuda) return;
    const cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        std::fprintf(stderr, "%s: a kernel failed: %s (the CUDA context is lost; stopping)\n", name.c_str(),
                     cudaGetErrorString(e));
        std::exit(1);
    }
}

bool run_case(const Case& c) {
    const int before = th::failures();
    const lref::Spec& s = c.s;
    ref::Rng rng(c.seed);
    const std::vector<float> qf = ref::random_values(rng, s.q_elems(), c.dtype),
                             kf = ref::random_values(rng, s.kv_elems(), c.dtype),
                             vf = ref::random_values(rng, s.kv_elems(), c.dtype),
                             gf = ref::random_values(rng, s.q_elems(), c.dtype);
    Tensor q = mirror(layout(c, s.Nq, s.Hq)), k = mirror(layout(c, s.Nk, s.Hk)), v = mirror(layout(c, s.Nk, s.Hk)),
           g = mirror(layout(c, s.Nq, s.Hq)), out = mirror(layout(c, s.Nq, s.Hq)), dq = mirror(layout(c, s.Nq, s.Hq)),
           dk = mirror(layout(c, s.Nk, s.Hk)), dv = mirror(layout(c, s.Nk, s.Hk));
    q.host.store(qf), k.host.store(kf), v.host.store(vf), g.host.store(gf);
    for (const Tensor* t : {&q, &k, &v, &g}) t->upload();
    for (const Tensor* t : {&out, &dq, &dk, &dv}) poison(*t);
    fsig_attention_params p = params_for(s);
    const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), tg = g.desc(), to = out.desc(), tdq = dq.desc(),
                      tdk = dk.desc(), tdv = dv.desc();
    gt::Workspace ws;
    if (c.workspace) ws = linear_workspace(p, tq, s.d, s.map == lref::kCosformer), p = ws.attach(p);
    int st = fsig_attention_forward(&p, &tq, &tk, &tv, &to, nullptr, nullptr);
    EXPECT(st == FSIG_OK, "%s: forward returned %d: %s", c.name.c_str(), st, fsig_last_error());
    if (st != FSIG_OK) return false;
    st = fsig_attention_backward(&p, &tq, &tk, &tv, nullptr, &tg, nullptr, &tdq, &tdk, &tdv, nullptr);
    EXPECT(st == FSIG_OK, "%s: backward returned %d: %s", c.name.c_str(), st, fsig_last_error());
    if (st != FSIG_OK) return false;
    synchronize_or_die(c.name);
    for (const Tensor* t : {&out, &dq, &dk, &dv}) t->download();
    if (c.expect_partials && g_cuda)
        EXPECT(ws.touched(), "%s: the kernels left the workspace unused (one segment each?)", c.name.c_str());

    const auto q64 = tu::to_double(qf), k64 = tu::to_double(kf), v64 = tu::to_double(vf), g64v = tu::to_double(gf);
    // the four references at once (each spreads over its (batch, kv head) units too): on one thread they
    // were most of this test's time on a GPU machine
    auto o64_job = std::async(std::launch::async,
                              [&] { return lref::forward64(s, q64.data(), k64.data(), v64.data()); });
    auto onv_job = std::async(std::launch::async,
                              [&] { return lref::forward_naive(s, c.dtype, qf.data(), kf.data(), vf.data()); });
    auto g64_job = std::async(std::launch::async,
                              [&] { return lref::backward64(s, q64.data(), k64.data(), v64.data(), g64v.data()); });
    const lref::Grads<float> gnv = lref::backward_naive(s, c.dtype, qf.data(), kf.data(), vf.data(), gf.data());
    const std::vector<double> o64 = o64_job.get();
    const std::vector<float> onv = onv_job.get();
    const lref::Grads<double> g64 = g64_job.get();
    const std::string spec = s.describe();
    tu::check_output(c.name, spec, "out", out.host, o64, onv);
    tu::check_output(c.name, spec, "dq", dq.host, g64.dq, gnv.dq);
    tu::check_output(c.name, spec, "dk", dk.host, g64.dk, gnv.dk);
    tu::check_output(c.name, spec, "dv", dv.host, g64.dv, gnv.dv);
    const bool ok = th::failures() == before;
    if (g_verbose || !ok) std::printf("  %s %s\n", ok ? "ok  " : "FAIL", c.name.c_str());
    return ok;
}

bool selected(const std::string& name) {
    if (g_filters.empty()) return true;
    for (const std::string& f : g_filters)
        if (name.find(f) != std::string::npos) return true;
    return false;
}

const char* map_name(int map) { return map == lref::kCosformer ? "cosformer" : "linear_elu"; }

// map × causal × heads × dtype × d (48 cases), the length pair turning with the index.
std::vector<Case> matrix_cases() {
    struct Shape { int64_t Nq, Nk; };
    const Shape shapes[] = {{1, 1}, {17, 17}, {128, 257}, {257, 128}, {1000, 1000}, {1, 257}, {333, 31}, {96, 1000}};
    const int64_t heads[][2] = {{4, 4}, {4, 2}, {4, 1}};
    const char* head_names[] = {"mha", "gqa", "mqa"};
    std::vector<Case> cases;
    int idx = 0;
    for (int map = 0; map < 2; ++map)
        for (int causal = 0; causal < 2; ++causal)
            for (int hh = 0; hh < 3; ++hh)
                for (int dtype : {ref::kFp16, ref::kBf16})
                    for (int64_t d : {64, 128}) {
                        Case c;
                        const Shape sh = shapes[idx % 8];
                        c.s.B = 1 + idx % 2, c.s.Nq = sh.Nq, c.s.Nk = sh.Nk, c.s.Hq = heads[hh][0], c.s.Hk = heads[hh][1];
                        c.s.d = d, c.s.map = map, c.s.causal = causal;
                        c.dtype = dtype, c.padded = idx % 5 == 3, c.workspace = idx / 8 % 2 == 1, c.seed = 1000 + idx;  // (every shape both ways)
                        c.name = th::format("lin%02d_%s%s_%s_d%lld_%lldx%lld_%s%s%s", idx, map_name(map),
                                            causal ? "_causal" : "", ref::dtype_name(dtype), (long long)d,
                                            (long long)sh.Nq, (long long)sh.Nk, head_names[hh], c.padded ? "_padded8" : "",
                                            c.workspace ? "_workspace" : "");
                        ++idx;
                        if (g_quick && idx % 6 != 1) continue;
                        cases.push_back(c);
                    }
    // M and ε given (ε binding on some rows), and long cases spanning many segments (the partial states
    // in a workspace; causal and not)
    for (int map = 0; map < 2; ++map) {
        Case c;
        c.s.B = 1, c.s.Nq = 200, c.s.Nk = 300, c.s.Hq = 2, c.s.Hk = 1, c.s.d = 64, c.s.map = map, c.s.causal = 1;
        c.s.length = map == lref::kCosformer ? 900 : 0, c.s.epsilon = map == lref::kCosformer ? 40.0 : 150.0;
        c.seed = 2000 + map, c.dtype = ref::kFp16;
        c.name = th::format("options_%s_M%lld_eps", map_name(map), (long long)c.s.length);
        cases.push_back(c);
        Case l;
        l.s.B = 1, l.s.Nq = 2048, l.s.Nk = 2048, l.s.Hq = 2, l.s.Hk = 2, l.s.d = 128, l.s.map = map, l.s.causal = 1;
        l.seed = 2100 + map, l.dtype = ref::kBf16, l.workspace = l.expect_partials = true;
        l.name = th::format("long_%s_causal_2048_workspace", map_name(map));
        if (!g_quick) cases.push_back(l);
        l.s.causal = 0, l.s.Nq = 1500, l.s.Hk = 1, l.seed = 2200 + map, l.dtype = ref::kFp16;
        l.name = th::format("long_%s_1500x2048_mqa_workspace", map_name(map));
        if (!g_quick) cases.push_back(l);
    }
    return cases;
}

TEST(linear_numerics) {
    int ran = 0, failed = 0;
    for (const Case& c : matrix_cases()) {
        if (!selected(c.name)) continue;
        ++ran;
        failed += !run_case(c);
    }
    std::printf("  %d case(s), %d failed\n", ran, failed);
}

// A small problem on the device, with helpers for the stream / graph test: long enough for two segments
// per kernel, whose partial states go through a workspace (two launches per kernel).
struct Small {
    static constexpr int64_t kNq = 600, kNk = 577;
    Case c;
    Tensor q, k, v, g, out, dq, dk, dv;
    fsig_attention_params p;
    gt::Workspace ws;
    explicit Small(int dtype, int64_t d) {
        c.s.B = 1, c.s.Nq = kNq, c.s.Nk = kNk, c.s.Hq = 4, c.s.Hk = 2, c.s.d = d, c.s.causal = 1, c.dtype = dtype;
        q = mirror(layout(c, kNq, 4)), g = mirror(layout(c, kNq, 4)), out = mirror(layout(c, kNq, 4));
        dq = mirror(layout(c, kNq, 4));
        k = mirror(layout(c, kNk, 2)), v = mirror(layout(c, kNk, 2)), dk = mirror(layout(c, kNk, 2)), dv = mirror(layout(c, kNk, 2));
        ref::Rng rng(99);
        q.host.store(ref::random_values(rng, c.s.q_elems(), dtype));
        k.host.store(ref::random_values(rng, c.s.kv_elems(), dtype));
        v.host.store(ref::random_values(rng, c.s.kv_elems(), dtype));
        g.host.store(ref::random_values(rng, c.s.q_elems(), dtype));
        for (const Tensor* t : {&q, &k, &v, &g}) t->upload();
        p = params_for(c.s);
        if (dtype != ref::kFp32 && d % 64 == 0) ws = linear_workspace(p, q.desc(), d, true), p = ws.attach(p);
    }
    void poison_outputs() {
        for (const Tensor* t : {&out, &dq, &dk, &dv}) poison(*t);
        ws.fill_ff();
    }
    int call(cudaStream_t stream) {
        const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), tg = g.desc(), to = out.desc(), tdq = dq.desc(),
                          tdk = dk.desc(), tdv = dv.desc();
        const int st = fsig_attention_forward(&p, &tq, &tk, &tv, &to, nullptr, stream);
        if (st != FSIG_OK) return st;
        return fsig_attention_backward(&p, &tq, &tk, &tv, nullptr, &tg, nullptr, &tdq, &tdk, &tdv, stream);
    }
    std::vector<unsigned char> all_bytes() const {
        std::vector<unsigned char> b;
        for (const Tensor* t : {&out, &dq, &dk, &dv}) {
            const auto x = t->bytes();
            b.insert(b.end(), x.begin(), x.end());
        }
        return b;
    }
};

// Default stream, created stream, graph replay: the same bits; the caller's device unchanged; a
// second call is bit-identical (deterministic).
TEST(linear_streams_graphs_device) {
    if (!g_cuda) return;
    Small s(ref::kBf16, 128);
    int before = -1, after = -2;
    CUDA_OK(cudaGetDevice(&before));
    s.poison_outputs();
    REQUIRE(s.call(nullptr) == FSIG_OK, "default stream: %s", fsig_last_error());
    CUDA_OK(cudaDeviceSynchronize());
    const std::vector<unsigned char> want = s.all_bytes();
    EXPECT(s.ws.touched(), "two segments per kernel left the workspace unused");
    CUDA_OK(cudaGetDevice(&after));
    EXPECT(before == after, "the current device changed from %d to %d", before, after);
    s.poison_outputs();
    REQUIRE(s.call(nullptr) == FSIG_OK, "second call: %s", fsig_last_error());
    CUDA_OK(cudaDeviceSynchronize());
    EXPECT(s.all_bytes() == want, "a second call gave other bits (not deterministic)");

    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    s.poison_outputs();
    REQUIRE(s.call(stream) == FSIG_OK, "created stream: %s", fsig_last_error());
    CUDA_OK(cudaStreamSynchronize(stream));
    EXPECT(s.all_bytes() == want, "a created stream gave other bits");

    s.poison_outputs();
    const std::vector<unsigned char> poisoned = s.all_bytes();
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    const int st = s.call(stream);
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    REQUIRE(st == FSIG_OK, "forward + backward during graph capture: %s", fsig_last_error());
    REQUIRE(end == cudaSuccess, "cudaStreamEndCapture: %s", cudaGetErrorString(end));
    EXPECT(s.all_bytes() == poisoned, "capturing ran a kernel");
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    for (int rep = 0; rep < 2; ++rep) {
        s.poison_outputs();
        CUDA_OK(cudaGraphLaunch(exec, stream));
        CUDA_OK(cudaStreamSynchronize(stream));
        EXPECT(s.all_bytes() == want, "graph replay %d gave other bits than the direct call", rep);
    }
    CUDA_OK(cudaGraphExecDestroy(exec));
    CUDA_OK(cudaGraphDestroy(graph));
    CUDA_OK(cudaStreamDestroy(stream));
    if (g_device_count >= 2) {
        CUDA_OK(cudaSetDevice(1));
        s.poison_outputs();
        REQUIRE(s.call(nullptr) == FSIG_OK, "call from cuda:1: %s", fsig_last_error());
        int now = -1;
        CUDA_OK(cudaGetDevice(&now));
        EXPECT(now == 1, "the call did not restore the caller's device (cuda:1), now cuda:%d", now);
        CUDA_OK(cudaSetDevice(0));
        CUDA_OK(cudaDeviceSynchronize());
        EXPECT(s.all_bytes() == want, "the call from another current device gave other bits");
    }
}

// Refused with a message naming the rule, nothing written: fp32, head dims 96 and 256 (the latter with the
// workspace its size query gives: refused by its head dim, not by the workspace), a stride not a multiple of
// 8, a misaligned base, a short, misaligned or overlapping workspace.
TEST(linear_refusals) {
    if (!g_cuda) return;
    struct Bad {
        const char* what;
        int dtype;
        int64_t d;
        int tweak;  // 0 none, 1 q row stride 4 elements off, 2 q base + 2 bytes; the workspace: 3 16 bytes
                    // short, 4 its base + 8 bytes, 5 q's memory
        int status;
        const char* word;
    } bads[] = {{"fp32", ref::kFp32, 64, 0, FSIG_ERROR_UNSUPPORTED, "fp32"},
                {"head dim 96", ref::kFp16, 96, 0, FSIG_ERROR_UNSUPPORTED, "head_dim"},
                {"head dim 256", ref::kBf16, 256, 0, FSIG_ERROR_UNSUPPORTED, "head_dim"},
                {"head stride", ref::kBf16, 64, 1, FSIG_ERROR_INVALID_STRIDE, "multiples of 8"},
                {"misaligned q", ref::kBf16, 64, 2, FSIG_ERROR_MISALIGNED, "16-byte"},
                {"short workspace", ref::kBf16, 64, 3, FSIG_ERROR_BUFFER_TOO_SMALL, "params.workspace_bytes"},
                {"misaligned workspace", ref::kFp16, 64, 4, FSIG_ERROR_MISALIGNED, "params.workspace ("},
                {"workspace on q", ref::kBf16, 128, 5, FSIG_ERROR_ALIASING, "params.workspace overlaps"}};
    for (const Bad& b : bads) {
        Small s(b.dtype, b.d);
        fsig_tensor tq = s.q.desc();
        if (b.tweak == 1) tq.strides[2] = b.d + 4, tq.strides[1] = 4 * (b.d + 4), tq.shape[1] = 50;
        if (b.tweak == 2) tq.data = static_cast<char*>(tq.data) + 2, tq.shape[1] = 50, tq.capacity_bytes -= 2;
        const fsig_tensor tk = s.k.desc(), tv = s.v.desc(), tg = s.g.desc(), to = s.out.desc(), tdq = s.dq.desc(),
                          tdk = s.dk.desc(), tdv = s.dv.desc();
        fsig_tensor to2 = to, tg2 = tg, tdq2 = tdq;
        if (b.tweak == 1 || b.tweak == 2) to2.shape[1] = tg2.shape[1] = tdq2.shape[1] = 50;
        if (b.tweak == 3) s.p.workspace_bytes -= 16;
        if (b.tweak == 4) s.p.workspace = static_cast<char*>(s.p.workspace) + 8;  // (refused before its extent)
        if (b.tweak == 5) s.p.workspace = s.q.dev.get();
        s.poison_outputs();
        const std::vector<unsigned char> poisoned = s.all_bytes();
        int st = fsig_attention_forward(&s.p, &tq, &tk, &tv, &to2, nullptr, nullptr);
        EXPECT(st == b.status && std::strstr(fsig_last_error(), b.word) != nullptr,
               "%s (forward): status %d, message \"%s\" (want %d naming \"%s\")", b.what, st, fsig_last_error(), b.status,
               b.word);
        st = fsig_attention_backward(&s.p, &tq, &tk, &tv, nullptr, &tg2, nullptr, &tdq2, &tdk, &tdv, nullptr);
        EXPECT(st == b.status && std::strstr(fsig_last_error(), b.word) != nullptr,
               "%s (backward): status %d, message \"%s\" (want %d naming \"%s\")", b.what, st, fsig_last_error(),
               b.status, b.word);
        CUDA_OK(cudaDeviceSynchronize());
        EXPECT(s.all_bytes() == poisoned, "%s: a refused call wrote an output", b.what);
    }
}

}  // namespace

int main(int argc, char** argv) { return gt::run_main(argc, argv, "linear attention"); }
