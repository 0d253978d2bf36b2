// The CUDA kernels' masks and positions (DESIGN.md §4: ALiBi, bias and mask tensors with broadcasting and
// dBias, strided, block-sparse, log-n) through the public C ABI (fsig_attention_forward_ex / backward_ex)
// against the fp64 reference under the §6 rule: every score × extension set × causal and windows × fp16/bf16
// × d 64/128 (and targeted cases of the 256-wide kernels) × ragged shapes, forward (out, LSE) and backward
// (dQ, dK, dV, dBias), outputs poisoned first and the bytes around each output's view checked untouched. On
// CUDA each backward runs twice: the deterministic kernels, then the fast path (a workspace: dK, dV the same
// bits, dQ by the rule; with dbias the deterministic kernels again: a full-shaped dBias leaves the workspace
// unused, a broadcast one sums its partial sums there, and must come out with the same bits).
//
//   test_cuda_masks [--quick] [--forward-only] [--device cpu] [--list] [--verbose] [name filters...]
//
// Exits 77 (CTest: skipped) with a message when the library has no CUDA or no device is present.
// --device cpu runs the same cases through the CPU backend: it checks this test on machines without a
// GPU. A broadcast dBias on CUDA needs the workspace of fsig_attention_backward_workspace_size_ex;
// cuda_refusals checks the calls without it (or with a bad one).
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
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
using gt::Tensor;

// A 1-byte (FSIG_DTYPE_BOOL) tensor, dense, mirrored on the device in cuda mode.
struct ByteTensor {
    std::vector<unsigned char> host;
    std::shared_ptr<void> dev;
    fsig_tensor t{};
    void make(int ndim, const int64_t* shape, const std::vector<unsigned char>& values) {
        host = values;
        std::memset(&t, 0, sizeof t);
        t.dtype = FSIG_DTYPE_BOOL, t.ndim = ndim, t.capacity_bytes = int64_t(host.size());
        int64_t stride = 1;
        for (int a = ndim; a-- > 0;) t.shape[a] = shape[a], t.strides[a] = stride, stride *= shape[a];
        t.data = host.data();
        if (g_cuda) {
            dev = gt::device_alloc(host.size());
            CUDA_OK(cudaMemcpy(dev.get(), host.data(), host.size(), cudaMemcpyHostToDevice));
            t.data = dev.get(), t.device_type = FSIG_DEVICE_CUDA;
        }
    }
};

// An n-d float tensor of dtype as a tu::View mirrored on the device: dense, or with `gapped` a last
// dimension of stride 2 and 3 spare elements after every row (so the kernels' strided reads and writes
// are exercised and stray writes land in bytes the test checks).
Tensor dense_tensor(int dtype, int ndim, const int64_t* shape, const std::vector<float>* values, bool gapped = false) {
    tu::View v;
    v.dtype = dtype, v.ndim = ndim;
    int64_t stride = gapped ? 2 : 1;
    for (int a = ndim; a-- > 0;) {
        v.shape[a] = shape[a], v.strides[a] = stride;
        stride *= shape[a];
        if (gapped && a == ndim - 1) stride += 3;
    }
    v.st = std::make_shared<tu::Storage>(size_t(v.extent_elems() + 3) * tu::esize(dtype));
    Tensor t = gt::mirror(v);
    if (values != nullptr) {
        t.host.store(*values);
        t.upload();
    }
    return t;
}

struct Case {
    std::string name;
    ref::Spec s;
    int dtype = ref::kBf16;
    int bias_dtype = ref::kFp32;
    bool gapped = false;  // bias and dBias with a last-dim stride of 2 and padded rows
    uint64_t seed = 1;
};

struct Extras {
    Tensor slopes, bias, dbias;
    ByteTensor mask, layout;
    bool has_slopes = false, has_bias = false, has_mask = false, has_layout = false;
    fsig_tensor ts{}, tb{}, tdb{};
    const fsig_tensor* slopes_t() const { return has_slopes ? &ts : nullptr; }
    const fsig_tensor* bias_t() const { return has_bias ? &tb : nullptr; }
    const fsig_tensor* mask_t() const { return has_mask ? &mask.t : nullptr; }
    const fsig_tensor* layout_t() const { return has_layout ? &layout.t : nullptr; }
    const fsig_tensor* dbias_t() const { return has_bias && tdb.data != nullptr ? &tdb : nullptr; }
};

Extras make_extras(const Case& c) {
    const ref::Spec& s = c.s;
    Extras e;
    if (!s.alibi_slopes.empty()) {
        const int64_t shape[2] = {s.B, s.Hq};
        const std::vector<float> v(s.alibi_slopes.begin(), s.alibi_slopes.end());
        e.slopes = s.alibi_per_batch ? dense_tensor(FSIG_DTYPE_FP32, 2, shape, &v)
                                     : dense_tensor(FSIG_DTYPE_FP32, 1, shape + 1, &v);
        e.has_slopes = true, e.ts = e.slopes.desc();
    }
    if (!s.bias.empty()) {
        const int64_t shape[4] = {s.bias_b, s.bias_h, s.bias_q, s.Nk};
        const std::vector<float> v(s.bias.begin(), s.bias.end());
        e.bias = dense_tensor(c.bias_dtype, 4, shape, &v, c.gapped);
        e.has_bias = true, e.tb = e.bias.desc();
        if (s.want_dbias) {
            e.dbias = dense_tensor(c.bias_dtype, 4, shape, nullptr, c.gapped);
            gt::poison(e.dbias);
            e.tdb = e.dbias.desc();
        }
    }
    if (!s.mask.empty()) {
        const int64_t shape[4] = {s.mask_b, s.mask_h, s.mask_q, s.Nk};
        e.mask.make(4, shape, s.mask);
        e.has_mask = true;
    }
    if (s.block_m > 0) {
        const int64_t shape[3] = {s.layout_h, (s.Nq + s.block_m - 1) / s.block_m, (s.Nk + s.block_n - 1) / s.block_n};
        e.layout.make(3, shape, s.layout);
        e.has_layout = true;
    }
    return e;
}

fsig_attention_params params_of(const ref::Spec& s) {
    fsig_attention_params p = tu::params_for(s);
    p.sparse_block_m = s.block_m, p.sparse_block_n = s.block_n;
    p.strided = s.strided;
    p.logn_train = s.logn_train;
    return p;
}

bool check(const Case& c, const char* what, const Tensor& t, const std::vector<double>& r64,
           const std::vector<float>& naive) {
    t.download();
    return tu::check_output(c.name, c.s.describe(), what, t.host, r64, naive);
}

void sync_or_die(const Case& c) {
    if (!g_cuda) return;
    const cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        std::fprintf(stderr, "%s: the kernel failed: %s (the CUDA context is lost; stopping)\n", c.name.c_str(),
                     cudaGetErrorString(e));
        std::exit(1);
    }
}

#if defined(FSIG_TEST_ON_EMULATOR)
// Whether the Hopper (wgmma) kernels serve the case on this (emulated) device: opted in on an sm_90, and β
// the same for every row of a tile — no strided pattern, a bias or mask only if broadcast over the query
// rows, a block layout only if its block rows hold whole tiles (β of a key tile is then one row, or none
// when the layout alone holds whole tiles): the forward's and the deterministic dQ kernel's tiles have 128 rows,
// the backward dK/dV kernel's 64. The forward's exist at every width; the backward's up to 256 for plain calls,
// and for extended ones the dQ kernel's up to 128, the dK/dV kernel's at width 64 (d ≤ 64).
enum class Pass { kForward, kDkDv, kDq };
bool wgmma_serves(const ref::Spec& s, Pass pass) {
    const int64_t tile_rows = pass == Pass::kDkDv ? 64 : 128;
    const bool layout_ok = s.block_m == 0 || s.block_m % tile_rows == 0 || s.block_m >= s.Nq;
    const bool bias_ok = s.bias.empty() || s.bias_q == 1, mask_ok = s.mask.empty() || s.mask_q == 1;
    const bool built = pass == Pass::kForward || !s.extended() || s.d <= (pass == Pass::kDq ? 128 : 64);
    return gt::emulated_hopper() && bias_ok && mask_ok && s.strided <= 1 && layout_ok && built;  // (strided 1: off)
}
#endif

// Whether case c added no failure since `before`, printed when it failed or under --verbose
bool reported(const Case& c, int before) {
    const bool ok = th::failures() == before;
    if (g_verbose || !ok) std::printf("  %s %s  (%s)\n", ok ? "ok  " : "FAIL", c.name.c_str(), c.s.describe().c_str());
    return ok;
}

// Forward, then backward on the reference's out and LSE (as a framework passes its saved forward; --forward-only:
// the forward alone).
bool run_case(const Case& c) {
    const int before = th::failures();
    const ref::Spec& s = c.s;
    const bool softmax = s.score == ref::kSoftmax;
    ref::Rng rng(c.seed);
    const std::vector<float> qf = ref::random_values(rng, s.q_elems(), c.dtype),
                             kf = ref::random_values(rng, s.kv_elems(), c.dtype),
                             vf = ref::random_values(rng, s.kv_elems(), c.dtype),
                             gf = ref::random_values(rng, s.q_elems(), c.dtype);
    const std::vector<double> q64 = tu::to_double(qf), k64 = tu::to_double(kf), v64 = tu::to_double(vf),
                              g64v = tu::to_double(gf);
    const ref::Forward<double> f64 = ref::forward64(s, q64.data(), k64.data(), v64.data());
    const ref::Forward<float> fn = ref::forward_naive(s, c.dtype, qf.data(), kf.data(), vf.data());

    auto qkv_view = [&](int64_t n, int64_t h) { return tu::make_view(c.dtype, tu::kContiguous, s.B, n, h, s.d); };
    const Tensor q = gt::with_values(qkv_view(s.Nq, s.Hq), qf), k = gt::with_values(qkv_view(s.Nk, s.Hk), kf),
                 v = gt::with_values(qkv_view(s.Nk, s.Hk), vf), dout = gt::with_values(qkv_view(s.Nq, s.Hq), gf);
    const Tensor out = gt::mirror(qkv_view(s.Nq, s.Hq));
    const Tensor lse = gt::mirror(tu::make_lse_view(tu::kContiguous, s.B, s.Hq, s.Nq));
    gt::poison(out), gt::poison(lse);
    Extras e = make_extras(c);

    const fsig_attention_params p = params_of(s);
    const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), to = out.desc(), tl = lse.desc(), tg = dout.desc();
#if defined(FSIG_TEST_ON_EMULATOR)
    const uint64_t wgmma_before = fsig::emu::wgmma_operations();
#endif
    int st = fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, softmax ? &tl : nullptr, e.slopes_t(), e.bias_t(),
                                       e.mask_t(), e.layout_t(), nullptr);
    if (st != FSIG_OK) {
        EXPECT(false, "%s: forward_ex returned %d (%s): %s", c.name.c_str(), st, fsig_status_string(st),
               fsig_last_error());
        return false;
    }
    sync_or_die(c);
#if defined(FSIG_TEST_ON_EMULATOR)
    const uint64_t wgmma_forward_done = fsig::emu::wgmma_operations(),
                   wgmma_forward_kernels_done = fsig::emu::wgmma_kernel_launches();
    EXPECT((wgmma_forward_done > wgmma_before) == wgmma_serves(s, Pass::kForward), "%s ran the %s forward kernels",
           c.name.c_str(), wgmma_forward_done > wgmma_before ? "wgmma" : "mma.sync");
#endif
    check(c, "out", out, f64.out, fn.out);
    if (softmax) check(c, "lse", lse, f64.lse, fn.lse);
    if (gt::g_forward_only) return reported(c, before);
    if (g_cuda && s.d > 128 && gt::small_shared_memory()) {
        // a 99 KiB GPU runs this forward (the compact 256-wide kernel) but has no backward kernel for it:
        // refused as unsupported, naming the shared memory, nothing written
        const Tensor dq = gt::mirror(qkv_view(s.Nq, s.Hq)), dk = gt::mirror(qkv_view(s.Nk, s.Hk)),
                     dv = gt::mirror(qkv_view(s.Nk, s.Hk));
        gt::poison(dq), gt::poison(dk), gt::poison(dv);
        const fsig_tensor tdq = dq.desc(), tdk = dk.desc(), tdv = dv.desc();
        st = fsig_attention_backward_ex(&p, &tq, &tk, &tv, softmax ? &to : nullptr, &tg, softmax ? &tl : nullptr, &tdq,
                                        &tdk, &tdv, e.slopes_t(), e.bias_t(), e.mask_t(), e.layout_t(), nullptr, nullptr);
        gt::expect_shared_memory_refusal(st, dq, dk, dv, c.name);
        return reported(c, before);
    }

    const std::vector<float> out_in = tu::to_float_rounded(f64.out, c.dtype);
    const std::vector<double> out64 = tu::to_double(out_in);  // the O the kernel is handed (reference.h)
    const ref::Grads<double> g64 = ref::backward64(s, q64.data(), k64.data(), v64.data(), g64v.data(), out64.data());
    const ref::Grads<float> gn = ref::backward_naive(s, c.dtype, qf.data(), kf.data(), vf.data(), out_in.data(), gf.data());
    const Tensor o_in = gt::with_values(qkv_view(s.Nq, s.Hq), out_in);
    const std::vector<float> lse_in(f64.lse.begin(), f64.lse.end());
    const Tensor l_in = gt::with_values(tu::make_lse_view(tu::kContiguous, s.B, s.Hq, s.Nq), lse_in);
    const Tensor dq = gt::mirror(qkv_view(s.Nq, s.Hq)), dk = gt::mirror(qkv_view(s.Nk, s.Hk)),
                 dv = gt::mirror(qkv_view(s.Nk, s.Hk));
    gt::poison(dq), gt::poison(dk), gt::poison(dv);
    const fsig_tensor toi = o_in.desc(), tli = l_in.desc(), tdq = dq.desc(), tdk = dk.desc(), tdv = dv.desc();
    // a broadcast dbias on CUDA needs the workspace for its partial sums (deterministic mode included)
    fsig_attention_params pd = p;
    pd.deterministic = 1;
    const gt::Workspace dbias_ws(pd, tq, e.dbias_t());
    const bool dbias_sums = dbias_ws.bytes > 0;
    EXPECT(dbias_sums == (g_cuda && s.want_dbias && !(s.bias_b == s.B && s.bias_h == s.Hq && s.bias_q == s.Nq)),
           "%s: the workspace size query says %lld bytes for dbias", c.name.c_str(), (long long)dbias_ws.bytes);
    if (dbias_sums) {  // without it the call is refused, naming the size query
        st = fsig_attention_backward_ex(&p, &tq, &tk, &tv, softmax ? &toi : nullptr, &tg, softmax ? &tli : nullptr,
                                        &tdq, &tdk, &tdv, e.slopes_t(), e.bias_t(), e.mask_t(), e.layout_t(),
                                        e.dbias_t(), nullptr);
        EXPECT(st == FSIG_ERROR_BUFFER_TOO_SMALL && std::strstr(fsig_last_error(), "workspace_size_ex") != nullptr,
               "%s: broadcast dbias without a workspace: %d %s", c.name.c_str(), st, fsig_last_error());
    }
    const fsig_attention_params pw = dbias_ws.attach(p);
    st = fsig_attention_backward_ex(&pw, &tq, &tk, &tv, softmax ? &toi : nullptr, &tg, softmax ? &tli : nullptr, &tdq,
                                    &tdk, &tdv, e.slopes_t(), e.bias_t(), e.mask_t(), e.layout_t(), e.dbias_t(),
                                    nullptr);
    if (st != FSIG_OK) {
        EXPECT(false, "%s: backward_ex returned %d (%s): %s", c.name.c_str(), st, fsig_status_string(st),
               fsig_last_error());
        return false;
    }
    sync_or_die(c);
#if defined(FSIG_TEST_ON_EMULATOR)
    // How many of a backward's kernels ran on wgmma: the dK/dV kernel (both paths) where it serves the backward's
    // 64-row tiles, the deterministic path's dQ kernel where it serves 128-row tiles and no dBias is asked for.
    // The fast path (dK/dV alone) pins the dK/dV kernel, the deterministic path's count then the dQ kernel.
    auto expect_backward_kernels = [&](uint64_t kernels_before, bool dq_kernel, const char* path) {
        const bool dkdv_wgmma = wgmma_serves(s, Pass::kDkDv),
                   dq_wgmma = dq_kernel && wgmma_serves(s, Pass::kDq) && !s.want_dbias;
        const uint64_t kernels = fsig::emu::wgmma_kernel_launches() - kernels_before;
        EXPECT(kernels == uint64_t(dkdv_wgmma) + uint64_t(dq_wgmma),
               "%s: the %s backward ran %llu kernels on wgmma, want dK/dV %d + dQ %d", c.name.c_str(), path,
               (unsigned long long)kernels, int(dkdv_wgmma), int(dq_wgmma));
    };
    expect_backward_kernels(wgmma_forward_kernels_done, true, "deterministic");
#endif
    check(c, "dq", dq, g64.dq, gn.dq);
    check(c, "dk", dk, g64.dk, gn.dk);
    check(c, "dv", dv, g64.dv, gn.dv);
    // (the naive reference rounds dBias to q's dtype; the library to the bias's, which may be coarser: bf16
    // under fp16 q, an error of up to half a bf16 ulp where |dBias| is large, which the naive one must share)
    std::vector<float> naive_dbias = gn.dbias;
    for (float& x : naive_dbias) x = ref::round_to(c.bias_dtype, x);
    if (s.want_dbias) check(c, "dbias", e.dbias, g64.dbias, naive_dbias);
    std::vector<unsigned char> dbias_bits;
    if (s.want_dbias) e.dbias.download(), dbias_bits = tu::snapshot(e.dbias.host);

    // the fast path (CUDA): the extended dK/dV kernel adding dQ into a workspace — dK, dV the same bits as
    // above, dQ by the rule; with dbias asked for the deterministic kernels run: a full-shaped dbias leaves
    // the (fast path's) workspace unused, a broadcast one fills its own with partial sums, same bits again
    if (g_cuda) {
        const gt::Workspace ws = dbias_sums ? gt::Workspace(p, tq, e.dbias_t()) : gt::Workspace(p, tq);
        const fsig_attention_params pf = ws.attach(p);
        dk.download(), dv.download();
        const std::vector<unsigned char> dk_bits = tu::snapshot(dk.host), dv_bits = tu::snapshot(dv.host);
        gt::poison(dq), gt::poison(dk), gt::poison(dv);
        if (s.want_dbias) gt::poison(e.dbias);
        ws.fill_ff();
#if defined(FSIG_TEST_ON_EMULATOR)
        const uint64_t wgmma_fast_kernels_before = fsig::emu::wgmma_kernel_launches();
#endif
        st = fsig_attention_backward_ex(&pf, &tq, &tk, &tv, softmax ? &toi : nullptr, &tg, softmax ? &tli : nullptr,
                                        &tdq, &tdk, &tdv, e.slopes_t(), e.bias_t(), e.mask_t(), e.layout_t(),
                                        e.dbias_t(), nullptr);
        EXPECT(st == FSIG_OK, "%s: fast backward_ex returned %d (%s): %s", c.name.c_str(), st, fsig_status_string(st),
               fsig_last_error());
        if (st == FSIG_OK) {
            sync_or_die(c);
#if defined(FSIG_TEST_ON_EMULATOR)
            // (with dbias the deterministic kernels run)
            expect_backward_kernels(wgmma_fast_kernels_before, s.want_dbias, "fast");
#endif
            EXPECT(ws.touched() == (!s.want_dbias || dbias_sums), "%s: the workspace was %s", c.name.c_str(),
                   ws.touched() ? "written although a full-shaped dbias was asked for" : "not written");
            check(c, "dq (fast path)", dq, g64.dq, gn.dq);
            dk.download(), dv.download();
            EXPECT(tu::snapshot(dk.host) == dk_bits && tu::snapshot(dv.host) == dv_bits,
                   "%s: the fast path's dK, dV differ from the deterministic ones", c.name.c_str());
            if (s.want_dbias) {
                check(c, "dbias (workspace given)", e.dbias, g64.dbias, naive_dbias);
                e.dbias.download();
                EXPECT(tu::snapshot(e.dbias.host) == dbias_bits, "%s: dbias differs between two runs", c.name.c_str());
            }
        }
    }
    return reported(c, before);
}

// ---- the cases --------------------------------------------------------------------------------------

enum Ext : int {
    kAlibi,        // ALiBi per head
    kAlibiBatch,   // ALiBi per batch × head, causal
    kBiasFull,     // bias [B, Hq, Nq, Nk] with −inf entries, and its dBias
    kBiasHeads,    // bias [1, Hq, Nq, Nk] (relative-position style), fp16/bf16 storage
    kKeyPadBias,   // bias [B, 1, 1, Nk]: 0 or −inf (a key-padding bias)
    kKeyPadMask,   // mask [B, 1, 1, Nk]
    kMaskFull,     // mask [B, Hq, Nq, Nk], sparse
    kStrided,      // strided pattern alone
    kStridedWin,   // window ∪ strided, causal
    kLayoutHeads,  // block layout per head, blocks that do not divide the tiles
    kLayoutShared, // one layout for every head, 64 × 64 blocks (whole kernel tiles skip)
    kLogn,         // log-n scaling with a window
    kAll,          // ALiBi + full bias (dBias) + mask + layout + log-n, causal
    kStridedWide,  // stride 200–400 at N = 1024: whole tiles skipped unloaded, warps skipped
    kLayoutRuns,   // 64 × 64 layout at density ~1/4 in runs, first block column empty, N = 1024
    kBiasWindow,   // full bias and its dBias with a sliding window at N = 1024: keys before and after
                   // a warp's computed tiles (the dQ kernel writes those dBias elements 0)
    kBiasLayout,   // full bias and its dBias under kLayoutRuns' layout at N = 1024: tiles skipped by the
                   // whole block, and keys between a warp's computed tiles
    kLayoutTiles,  // layout per head of 128 × 256 blocks: every forward tile inside one block (no β)
    kAlibiLayout,  // ALiBi + log-n + a shared layout of 256 × 128 blocks at density ~1/2, causal, N = 1024
    kPadLayout,    // key padding as fp16/bf16 bias [B, 1, 1, Nk] and mask [1, Hq, 1, Nk], a 128 × 64 layout
                   // per head and ALiBi, N = 1000 (the Hopper kernels' key-row β, layout columns inside it)
    kExtCount
};
const char* kExtNames[] = {"alibi", "alibih", "biasfull", "biasheads", "keypadbias", "keypadmask", "maskfull",
                           "strided", "stridedwin", "layouth", "layout", "logn", "all", "stridedwide",
                           "layoutruns", "biaswindow", "biaslayout", "layouttiles", "alibilayout", "padlayout"};
static_assert(sizeof(kExtNames) / sizeof(kExtNames[0]) == kExtCount, "a name per extension set");

void add_extension(ref::Spec& s, int ext, ref::Rng& rng, int* bias_dtype) {
    auto slopes = [&](bool per_batch) {
        s.alibi_per_batch = per_batch;
        s.alibi_slopes.clear();
        const int64_t n = per_batch ? s.B * s.Hq : s.Hq;
        for (int64_t h = 0; h < n; ++h) s.alibi_slopes.push_back(std::ldexp(1.0, -int(1 + h % 8)) * (1 + 0.1 * (h / 8)));
    };
    auto bias = [&](int64_t bb, int64_t bh, int64_t bq, bool pad) {
        s.bias_b = bb, s.bias_h = bh, s.bias_q = bq;
        s.bias.clear();
        for (size_t i = 0; i < s.bias_elems(); ++i) {
            double x = pad ? (rng.below(4) == 0 ? -INFINITY : 0.0) : rng.below(16) == 0 ? -INFINITY : rng.normal();
            s.bias.push_back(ref::round_to(*bias_dtype, float(x)));
        }
        // keep a key allowed in every row, so every row is exercised (rows with none are tested elsewhere)
        if (pad) for (int64_t b = 0; b < bb; ++b) s.bias[size_t(b * s.Nk + s.Nk - 1)] = 0;
    };
    auto mask = [&](int64_t mb, int64_t mh, int64_t mq, int density) {
        s.mask_b = mb, s.mask_h = mh, s.mask_q = mq;
        s.mask.clear();
        for (int64_t i = 0; i < mb * mh * mq * s.Nk; ++i) s.mask.push_back(rng.below(8) < density ? 1 : 0);
    };
    auto layout = [&](int64_t bm, int64_t bn, int64_t lh) {
        s.block_m = bm, s.block_n = bn, s.layout_h = lh;
        const int64_t rows = (s.Nq + bm - 1) / bm, cols = (s.Nk + bn - 1) / bn;
        s.layout.clear();
        for (int64_t i = 0; i < lh * rows * cols; ++i) s.layout.push_back(rng.below(3) != 0 ? 1 : 0);
    };
    auto layout_runs = [&] {
        layout(64, 64, 1);
        const int64_t rows = (s.Nq + 63) / 64, cols = (s.Nk + 63) / 64;
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t q = 0; q < cols; ++q)  // runs of 3 empty columns in 4, shifted by row; column 0 empty
                s.layout[size_t(r * cols + q)] = q != 0 && (q + r) % 4 == 0 ? 1 : 0;
    };
    switch (ext) {
        case kAlibi: slopes(false); break;
        case kAlibiBatch: slopes(true), s.causal = true; break;
        case kBiasFull: bias(s.B, s.Hq, s.Nq, false), s.want_dbias = true; break;
        case kBiasHeads:  // dBias summed over the batch (on CUDA: per-row partial sums, then the reduction)
            *bias_dtype = s.score % 2 == 0 ? ref::kFp16 : ref::kBf16, bias(1, s.Hq, s.Nq, false), s.want_dbias = true;
            break;
        case kKeyPadBias: bias(s.B, 1, 1, true), s.want_dbias = true; break;  // summed over heads and queries
        case kKeyPadMask: mask(s.B, 1, 1, 6); break;
        case kMaskFull: mask(s.B, s.Hq, s.Nq, 3); break;
        case kStrided: s.strided = 3 + rng.below(9); break;
        case kStridedWin: s.strided = 16 + rng.below(40), s.causal = true, s.window_left = 20; break;
        case kLayoutHeads: layout(24 + rng.below(20), 40 + rng.below(50), s.Hq); break;
        case kLayoutShared: layout(64, 64, 1); break;
        case kLogn: s.logn_train = 16, s.window_left = 50, s.window_right = 10; break;
        case kStridedWide: s.strided = 200 + rng.below(201); break;
        case kLayoutRuns: layout_runs(); break;
        case kLayoutTiles: layout(128, 256, s.Hq); break;
        case kAlibiLayout:
            slopes(false), s.logn_train = 64, s.causal = true;
            layout(256, 128, 1);
            for (size_t i = 0; i < s.layout.size(); ++i) s.layout[i] = (i * 7 + i / 8) % 2 == 0 ? 1 : 0;
            break;
        case kPadLayout:
            *bias_dtype = s.score % 2 == 0 ? ref::kFp16 : ref::kBf16, bias(s.B, 1, 1, true), s.want_dbias = true;
            mask(1, s.Hq, 1, 7);
            layout(128, 64, s.Hq);
            slopes(false);
            break;
        case kBiasLayout: bias(s.B, s.Hq, s.Nq, false), s.want_dbias = true, layout_runs(); break;
        case kBiasWindow:
            bias(s.B, s.Hq, s.Nq, false), s.want_dbias = true;
            s.window_left = 70, s.window_right = s.causal ? -1 : 30;
            break;
        case kAll:
            s.causal = true;
            slopes(false);
            bias(s.B, s.Hq, s.Nq, false), s.want_dbias = true;
            mask(s.B, 1, 1, 7);
            layout(32, 48, s.Hq);
            s.logn_train = 32;
            break;
    }
}

std::vector<Case> all_cases() {
    const int64_t shapes[][2] = {{257, 257}, {130, 300}, {17, 200}, {300, 129}, {1, 64}, {200, 17}};
    std::vector<Case> cases;
    for (int ext = 0; ext < kExtCount; ++ext)
        for (int score = 0; score < ref::kScoreCount; ++score) {
            const int n = int(cases.size());
            Case c;
            c.seed = 4000 + uint64_t(n);
            ref::Rng rng(c.seed * 7919);
            ref::Spec& s = c.s;
            s.score = score;
            // independent digits of n choose d, dtype, shape, heads and causal, so every extended unit
            // (dtype × d) meets every shape and mask
            s.B = 2, s.Hq = 4, s.Hk = (n / 3) % 3 == 0 ? 4 : (n / 3) % 3 == 1 ? 2 : 1;
            s.d = n % 2 == 0 ? 64 : 128;
            c.dtype = (n / 2) % 2 == 0 ? ref::kBf16 : ref::kFp16;
            s.Nq = shapes[(n / 4) % 6][0], s.Nk = shapes[(n / 4) % 6][1];
            s.causal = (n / 5) % 2 == 1;
            if (ext == kStridedWide || ext == kLayoutRuns || ext == kBiasWindow || ext == kBiasLayout ||
                ext == kAlibiLayout)
                s.B = 1, s.Hq = 2, s.Hk = 1, s.Nq = s.Nk = 1024;
            if (ext == kPadLayout) s.B = 2, s.Hq = 2, s.Hk = 1, s.Nq = s.Nk = 1000;
            c.bias_dtype = ref::kFp32;
            c.gapped = ext == kBiasFull || (ext == kBiasHeads && score % 2 == 1);
            add_extension(s, ext, rng, &c.bias_dtype);
            // the reference rounds dBias to q's dtype: a 16-bit bias of the other kind is checked without it
            if (c.bias_dtype != ref::kFp32 && c.bias_dtype != c.dtype) s.want_dbias = false;
            c.name = th::format("%03d_%s_%s_%s_d%lld_%lldx%lld_hk%lld%s", n, kExtNames[ext], ref::score_name(score),
                                ref::dtype_name(c.dtype), (long long)s.d, (long long)s.Nq, (long long)s.Nk,
                                (long long)s.Hk, s.causal ? "_causal" : "");
            cases.push_back(c);
        }
    if (g_quick) {  // one score per extension set, turning (the sets the Hopper kernels serve: at d = 128)
        std::vector<Case> few;
        for (size_t i = 0; i < cases.size(); ++i) {
            const int set = int(i / ref::kScoreCount), turn = set >= kLayoutTiles ? 1 : 0;
            if (int(i % ref::kScoreCount) == (set + turn) % ref::kScoreCount) few.push_back(cases[i]);
        }
        cases = few;
    }
    // head dims below the kernels' widths (64, 128) through the extended kernels, in the quick set too: on an
    // sm_90 ALiBi at d = 96 has its forward and dQ on wgmma, key padding at d = 40 its dK/dV
    struct Width {
        int ext, score, dtype;
        int64_t d, nq, nk;
        bool causal;
    };
    const Width widths[] = {{kAlibi, ref::kSigmoid, ref::kBf16, 96, 130, 300, true},
                            {kKeyPadBias, ref::kSoftmax, ref::kFp16, 40, 257, 129, false},
                            {kAll, ref::kGelu, ref::kBf16, 72, 200, 170, true},
                            // the 256-wide kernels: positions; every extension with a full-shaped dBias;
                            // broadcast dBias as per-row and 16-row partial sums; a layout that splits tiles
                            {kAlibi, ref::kSoftmax, ref::kFp16, 256, 130, 300, true},
                            {kAll, ref::kSigmoid, ref::kBf16, 200, 200, 170, true},
                            {kBiasHeads, ref::kRelu2, ref::kFp16, 136, 129, 100, false},
                            {kKeyPadBias, ref::kSoftmax, ref::kBf16, 256, 100, 129, false},
                            {kLayoutHeads, ref::kIdentity, ref::kFp16, 256, 90, 170, false},
                            // a layout of 128 x 256 blocks (uniform over every tile: no β staged), several blocks
                            // of the compact 256-wide forward (64 x 32 tiles) per layout block on a 99 KiB GPU
                            {kLayoutTiles, ref::kSoftmax, ref::kBf16, 256, 150, 300, true}};
    for (const Width& w : widths) {
        const int n = int(&w - widths);
        Case c;
        c.seed = 7000 + uint64_t(n);
        ref::Rng rng(c.seed * 7919);
        ref::Spec& s = c.s;
        s.B = 2, s.Hq = 4, s.Hk = 2, s.d = w.d, s.Nq = w.nq, s.Nk = w.nk, s.score = w.score, s.causal = w.causal;
        c.dtype = w.dtype;
        add_extension(s, w.ext, rng, &c.bias_dtype);
        c.name = th::format("w%02d_%s_%s_%s_d%lld_%lldx%lld%s", n, kExtNames[w.ext], ref::score_name(w.score),
                            ref::dtype_name(c.dtype), (long long)s.d, (long long)s.Nq, (long long)s.Nk,
                            s.causal ? "_causal" : "");
        cases.push_back(c);
    }
    // calls without β per row (positions: λ, ALiBi; a block layout constant over a warp's 32 rows and 64 keys; key
    // padding, a bias or mask broadcast over the rows) with Nq > 128: the mma.sync forward's tall kernel (256 rows,
    // two 16-row tiles per warp, λ staged once per block, one row of β per key tile, the layout applied by skipping
    // tiles: the block's over its rows, each warp's by its own block row), in the quick set too. λ that differs from
    // row to row (causal with Nq ≈ Nk, no window — the sets above give most rows the same n_i), rows on both sides of
    // a block's and a warp's tiles; layouts of 32 × 64 blocks (every warp its own block row: each warp skips tiles the
    // others compute), 96 × 192 (block rows across a kernel block's edge), and one block row taller than Nq (block_m ≥
    // Nq); key padding (pad: 1 an fp32 bias [B, 1, 1, Nk], 2 a mask [B, 1, 1, Nk], 3 a bf16 bias [1, Hq, 1, Nk] and
    // that mask) that masks whole key tiles inside and at the end of the keys (the block skips them, unloaded) but
    // the last key (a ragged last tile live by it alone), and, with the mask, every key of batch 1 (rows with no key);
    // t11: more key tiles than the block's bits cover (2048: tiles past them are computed, one of them masked whole;
    // Nq = 40, so on the tall kernel only under FSIG_CUDA_FWD_TALL=always; not in the quick set); t12, t13 (pad 4): an
    // fp32 bias [B, Hq, 1, Nk] whose every (b, h) has its own length, multiples of 90 keys short of Nk in a shuffled
    // order (whole 128-key tiles masked for one head of a GQA group and not for the other: the Hopper dK/dV kernel's
    // bits per head, read for the wrong head or batch by any index slip; the last (b, h) no key at all), on the
    // Hopper kernels at d = 64 (forward, dK/dV, dQ) and d = 128.
    struct Tall {
        int score, dtype;
        int64_t d, nq, nk, window_left, window_right;
        bool causal, alibi, per_batch;
        int64_t logn_train, block_m, block_n, layout_h;
        int pad;
    };
    const Tall talls[] = {{ref::kSoftmax, ref::kBf16, 128, 300, 300, -1, -1, true, false, false, 16, 0, 0, 0, 0},
                          {ref::kSigmoid, ref::kFp16, 64, 520, 500, -1, -1, true, true, false, 8, 0, 0, 0, 0},
                          {ref::kGelu, ref::kBf16, 104, 333, 400, 90, 20, false, true, true, 32, 0, 0, 0, 0},
                          {ref::kRelu2, ref::kFp16, 128, 290, 150, 40, -1, false, false, false, 4, 0, 0, 0, 0},
                          {ref::kSoftmax, ref::kBf16, 128, 300, 333, -1, -1, false, false, false, 0, 32, 64, 4, 0},
                          {ref::kSigmoid, ref::kFp16, 64, 520, 500, -1, -1, true, true, false, 8, 96, 192, 1, 0},
                          {ref::kIdentity, ref::kBf16, 128, 290, 400, 60, 30, false, false, false, 0, 600, 128, 4, 0},
                          {ref::kSoftmax, ref::kBf16, 128, 300, 333, -1, -1, false, true, false, 0, 0, 0, 0, 1},
                          {ref::kSigmoid, ref::kFp16, 64, 520, 500, -1, -1, true, false, false, 8, 32, 64, 4, 2},
                          {ref::kGelu, ref::kBf16, 128, 290, 400, 60, 30, false, true, true, 0, 0, 0, 0, 3},
                          {ref::kSoftmax, ref::kFp16, 64, 257, 129, -1, -1, true, false, false, 0, 0, 0, 0, 3},
                          {ref::kSoftmax, ref::kBf16, 64, 40, 2048 * 64 + 200, -1, -1, false, false, false, 0, 0, 0, 0,
                           2},
                          {ref::kSoftmax, ref::kBf16, 64, 300, 700, -1, -1, false, false, false, 0, 0, 0, 0, 4},
                          {ref::kSigmoid, ref::kFp16, 128, 260, 700, -1, -1, true, true, false, 0, 0, 0, 0, 4}};
    for (const Tall& t : talls) {
        const int n = int(&t - talls);
        if (g_quick && t.nk > 100000) continue;  // (t11, ≈ 20 s on the emulator: the full set and the targeted runs)
        Case c;
        c.seed = 7100 + uint64_t(n);
        ref::Rng rng(c.seed * 7919);
        ref::Spec& s = c.s;
        s.B = 2, s.Hq = 4, s.Hk = 2, s.d = t.d, s.Nq = t.nq, s.Nk = t.nk, s.score = t.score, s.causal = t.causal;
        if (s.Nk > 100000) s.B = 1, s.Hq = 1, s.Hk = 1;  // (t11: its length is the point, not its heads)
        s.window_left = t.window_left, s.window_right = t.window_right, s.logn_train = t.logn_train;
        if (t.alibi) {
            s.alibi_per_batch = t.per_batch;
            for (int64_t h = 0; h < (t.per_batch ? s.B * s.Hq : s.Hq); ++h)
                s.alibi_slopes.push_back(std::ldexp(1.0, -int(2 + h % 6)));
        }
        // key padding: whole 64-key tiles masked at [64, 128) and from Nk − 100 on but the last key in batch 0, a
        // quarter of the keys at random in batch 1 (bias) or all of them (mask)
        auto padded = [&](int64_t b, int64_t j, bool mask) {
            return b == 0 ? (j >= 64 && j < 128) || (j >= s.Nk - 100 && j != s.Nk - 1) : mask || rng.below(4) == 0;
        };
        if (t.pad == 1 || t.pad == 3) {
            const bool per_head = t.pad == 3;
            c.bias_dtype = per_head ? ref::kBf16 : ref::kFp32;
            s.bias_b = per_head ? 1 : s.B, s.bias_h = per_head ? s.Hq : 1, s.bias_q = 1;
            for (int64_t x = 0; x < s.bias_b * s.bias_h; ++x)
                for (int64_t j = 0; j < s.Nk; ++j)
                    s.bias.push_back(!per_head && padded(x, j, false) ? -INFINITY
                                                                      : ref::round_to(c.bias_dtype, float(rng.normal())));
        }
        if (t.pad == 4) {
            c.bias_dtype = ref::kFp32;
            s.bias_b = s.B, s.bias_h = s.Hq, s.bias_q = 1;
            for (int64_t x = 0; x < s.B * s.Hq; ++x) {
                const int64_t length = x == s.B * s.Hq - 1 ? 0 : s.Nk - 90 * ((3 * x + 1) % 8);
                for (int64_t j = 0; j < s.Nk; ++j) s.bias.push_back(j >= length ? -INFINITY : float(rng.normal()));
            }
        }
        if (t.pad == 2 || t.pad == 3) {
            s.mask_b = s.B, s.mask_h = 1, s.mask_q = 1;
            for (int64_t b = 0; b < s.B; ++b)
                for (int64_t j = 0; j < s.Nk; ++j) s.mask.push_back(padded(b, j, true) ? 0 : 1);
        }
        if (t.block_m > 0) {  // two blocks in three allowed; head 0's second block row none (rows with no key)
            s.block_m = t.block_m, s.block_n = t.block_n, s.layout_h = t.layout_h;
            const int64_t rows = (s.Nq + t.block_m - 1) / t.block_m, cols = (s.Nk + t.block_n - 1) / t.block_n;
            for (int64_t i = 0; i < t.layout_h * rows * cols; ++i)
                s.layout.push_back(i / cols != 1 && rng.below(3) != 0 ? 1 : 0);
        }
        c.dtype = t.dtype;
        c.name = th::format("t%02d_%s%s%s%s_%s_%s_d%lld_%lldx%lld%s", n, t.alibi ? "alibi" : "",
                            t.logn_train ? "logn" : "", t.block_m > 0 ? "layout" : "", t.pad > 0 ? "keypad" : "",
                            ref::score_name(t.score),
                            ref::dtype_name(c.dtype), (long long)s.d, (long long)s.Nq, (long long)s.Nk,
                            s.causal ? "_causal" : "");
        cases.push_back(c);
    }
    return cases;
}

bool selected(const std::string& name) {
    if (g_filters.empty()) return true;
    for (const std::string& f : g_filters)
        if (name.find(f) != std::string::npos) return true;
    return false;
}

TEST(masks_numerics) {
    int ran = 0, failed = 0;
    for (const Case& c : all_cases()) {
        if (!selected(c.name)) continue;
        if (g_list) {
            std::printf("%s\n", c.name.c_str());
            continue;
        }
        ++ran;
        failed += !run_case(c);  // (on the emulator it also checks which kernels ran)
    }
    if (!g_list) std::printf("  %d case(s), %d failed\n", ran, failed);
    EXPECT(g_list || ran > 0, "no case ran (filters that match no case name?)");
}

// Three runs of the same extended backward with params.deterministic = 1 give the same bits: dQ, dK, dV and
// dBias, through the kernels that serve these calls on the device at hand (on an emulated sm_90 with wgmma
// opted in: dK/dV on wgmma at d = 64, dQ at 64 and 128; elsewhere mma.sync), a broadcast dBias through its
// partial sums in the workspace. The emulator runs each launch's blocks and threads in another random order
// and lands copies early or late, so an order-dependent sum (an atomic, a race) shows as other bits.
// A device with 99 KiB of shared memory per block (sm_86/sm_89; on the emulator FSIG_EMU_SM=89): the
// extended forward at d = 128 (98 KiB, the tightest fit) runs, and the extended backward at d = 128 and 64
// on the pair kernels (the regular dK/dV kernel needs 115 KiB at d = 64 and 131 at 128; the pairs 58 and
// 90 KiB at most) — ALiBi, every extension at once with a full-shaped dBias, and a broadcast dBias — each
// agreeing with the reference by both paths. On a device with 128 KiB or more every extended kernel fits and
// this has nothing to check.
TEST(small_shared_memory) {
    if (!g_cuda) return;
    const int allowed = gt::small_shared_memory_device("extended");
    if (allowed == 0) return;
    const struct {
        int ext, score;
        int64_t d;
    } runs[] = {{kAlibi, ref::kSoftmax, 128}, {kAlibi, ref::kSoftmax, 64}, {kAll, ref::kSigmoid, 128},
                {kAll, ref::kSoftmax, 40}, {kBiasHeads, ref::kRelu2, 96}};
    for (const auto& run : runs) {
        Case c;
        c.seed = 7100 + uint64_t(run.d) + uint64_t(run.ext);
        ref::Rng rng(c.seed * 7919);
        ref::Spec& s = c.s;
        s.B = 2, s.Hq = 2, s.Hk = 1, s.d = run.d, s.Nq = 70, s.Nk = 200, s.score = run.score, s.causal = true;
        add_extension(s, run.ext, rng, &c.bias_dtype);
        c.name = th::format("small_smem_%s_d%lld", kExtNames[run.ext], (long long)run.d);
        EXPECT(run_case(c), "%s failed on a device with %d KiB per block", c.name.c_str(), allowed / 1024);
    }
}

TEST(determinism_extended) {
    if (!g_cuda || g_list) return;  // the CPU backend's bits are checked across threads in test_threads and test_masks
    struct D {
        int ext, score;
        int64_t d;
    };
    // first the two of the quick set: dQ on the Hopper kernel at d = 128 (dK/dV not), both kernels at d = 64
    const D full[] = {{kAlibiLayout, ref::kGelu, 128},   {kKeyPadMask, ref::kSoftmax, 64}, {kPadLayout, ref::kSoftmax, 128},
                      {kAll, ref::kSigmoid, 64},         {kBiasHeads, ref::kSoftplus, 128}, {kKeyPadBias, ref::kRelu2, 64},
                      {kAll, ref::kSoftmax, 256},        {kKeyPadBias, ref::kSigmoid, 200}};
    const size_t count = g_quick ? 2 : sizeof full / sizeof full[0];
    for (size_t i = 0; i < count; ++i) {
        const D& x = full[i];
        Case c;
        ref::Spec& s = c.s;
        s.B = 2, s.Hq = 4, s.Hk = 2, s.Nq = 300, s.Nk = 333, s.d = x.d, s.score = x.score;
        ref::Rng rng(9000 + i);
        add_extension(s, x.ext, rng, &c.bias_dtype);
        c.dtype = c.bias_dtype == ref::kFp16 ? ref::kFp16 : ref::kBf16;  // dBias in q's dtype
        // named like the cases, so that gpu-session's case filters (_alibi, _keypad, ...) select them too
        const std::string name = th::format("det_%s_%s_d%lld", kExtNames[x.ext], ref::score_name(x.score), (long long)x.d);
        if (!selected(name)) continue;
        const bool softmax = s.score == ref::kSoftmax;
        auto view = [&](int64_t n, int64_t h) { return tu::make_view(c.dtype, tu::kContiguous, s.B, n, h, s.d); };
        const Tensor q = gt::with_values(view(s.Nq, s.Hq), ref::random_values(rng, s.q_elems(), c.dtype)),
                     k = gt::with_values(view(s.Nk, s.Hk), ref::random_values(rng, s.kv_elems(), c.dtype)),
                     v = gt::with_values(view(s.Nk, s.Hk), ref::random_values(rng, s.kv_elems(), c.dtype)),
                     dout = gt::with_values(view(s.Nq, s.Hq), ref::random_values(rng, s.q_elems(), c.dtype));
        const Tensor out = gt::mirror(view(s.Nq, s.Hq)), lse = gt::mirror(tu::make_lse_view(tu::kContiguous, s.B, s.Hq, s.Nq)),
                     dq = gt::mirror(view(s.Nq, s.Hq)), dk = gt::mirror(view(s.Nk, s.Hk)), dv = gt::mirror(view(s.Nk, s.Hk));
        Extras e = make_extras(c);
        fsig_attention_params p = params_of(s);
        p.deterministic = 1;
        const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), to = out.desc(), tl = lse.desc(), tg = dout.desc(),
                          tdq = dq.desc(), tdk = dk.desc(), tdv = dv.desc();
        REQUIRE(fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, softmax ? &tl : nullptr, e.slopes_t(), e.bias_t(),
                                          e.mask_t(), e.layout_t(), nullptr) == FSIG_OK,
                "%s: forward_ex: %s", name.c_str(), fsig_last_error());
        const gt::Workspace ws(p, tq, e.dbias_t());  // a broadcast dBias's partial sums (none otherwise)
        const fsig_attention_params pw = ws.attach(p);
        if (g_cuda && s.d > 128 && gt::small_shared_memory()) {  // (no backward kernel for it there)
            gt::poison(dq), gt::poison(dk), gt::poison(dv);
            const int st = fsig_attention_backward_ex(&pw, &tq, &tk, &tv, softmax ? &to : nullptr, &tg,
                                                      softmax ? &tl : nullptr, &tdq, &tdk, &tdv, e.slopes_t(), e.bias_t(),
                                                      e.mask_t(), e.layout_t(), e.dbias_t(), nullptr);
            gt::expect_shared_memory_refusal(st, dq, dk, dv, name);
            std::printf("  %s: refused on this device, as expected\n", name.c_str());
            continue;
        }
        std::vector<unsigned char> first;
        for (int run = 0; run < 3; ++run) {
            gt::poison(dq), gt::poison(dk), gt::poison(dv);
            if (s.want_dbias) gt::poison(e.dbias);
            REQUIRE(fsig_attention_backward_ex(&pw, &tq, &tk, &tv, softmax ? &to : nullptr, &tg, softmax ? &tl : nullptr,
                                               &tdq, &tdk, &tdv, e.slopes_t(), e.bias_t(), e.mask_t(), e.layout_t(),
                                               e.dbias_t(), nullptr) == FSIG_OK,
                    "%s: backward_ex: %s", name.c_str(), fsig_last_error());
            sync_or_die(c);
            std::vector<unsigned char> bits;
            for (const Tensor* t : {&dq, &dk, &dv, s.want_dbias ? &e.dbias : static_cast<const Tensor*>(nullptr)}) {
                if (t == nullptr) continue;
                t->download();
                const std::vector<unsigned char> b = tu::snapshot(t->host);
                bits.insert(bits.end(), b.begin(), b.end());
            }
            if (run == 0) first = bits;
            else EXPECT(bits == first, "%s: run %d gave other bits than the first", name.c_str(), run + 1);
        }
        std::printf("  %s%s: 3 runs, same bits\n", name.c_str(), s.want_dbias ? " (dbias too)" : "");
    }
}

// FSIG_CUDA_WGMMA=require: an extended call that the Hopper kernels serve runs on a 9.0 device (sm_90a code)
// and is refused elsewhere before anything is written — ALiBi at d = 128, whose forward and deterministic dQ
// they serve (its dK/dV kernel is mma.sync's even there); calls they serve in no kernel run everywhere: the
// fast path of the same call (dK/dV and dQ in mma.sync's one kernel) and a strided pattern.
TEST(hopper_require) {
    const char* setting = std::getenv("FSIG_CUDA_WGMMA");
    if (!g_cuda || g_list || setting == nullptr || std::strcmp(setting, "require") != 0) return;
    const bool hopper = gt::hopper_kernels_run_for_require();
    for (int ext : {int(kAlibi), int(kStrided)}) {
        Case c;
        ref::Spec& s = c.s;
        s.B = 1, s.Hq = 2, s.Hk = 1, s.Nq = 70, s.Nk = 90, s.d = 128, s.score = ref::kSigmoid;
        ref::Rng rng(31);
        add_extension(s, ext, rng, &c.bias_dtype);
        const bool served = ext == kAlibi;  // (forward and deterministic dQ)
        auto view = [&](int64_t n) { return tu::make_view(c.dtype, tu::kContiguous, s.B, n, s.Hq, s.d); };
        const Tensor q = gt::with_values(view(s.Nq), ref::random_values(rng, s.q_elems(), c.dtype)),
                     k = gt::with_values(view(s.Nk), ref::random_values(rng, s.kv_elems(), c.dtype)),
                     v = gt::with_values(view(s.Nk), ref::random_values(rng, s.kv_elems(), c.dtype)),
                     g = gt::with_values(view(s.Nq), ref::random_values(rng, s.q_elems(), c.dtype));
        const Tensor out = gt::mirror(view(s.Nq)), dq = gt::mirror(view(s.Nq)), dk = gt::mirror(view(s.Nk)),
                     dv = gt::mirror(view(s.Nk));
        const Extras e = make_extras(c);
        const fsig_attention_params p = params_of(s);
        const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), tg = g.desc(), to = out.desc(), tdq = dq.desc(),
                          tdk = dk.desc(), tdv = dv.desc();
        const gt::Workspace ws(p, tq);
        for (int call = 0; call < 3; ++call) {  // forward, deterministic backward, fast backward
            const Tensor* outputs[] = {&out, &dq, &dk, &dv};
            std::vector<std::vector<unsigned char>> before;
            for (const Tensor* t : outputs) gt::poison(*t), before.push_back(tu::snapshot(t->host));
            const fsig_attention_params pw = call == 2 ? ws.attach(p) : p;
            const int st = call == 0 ? fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, nullptr, e.slopes_t(), nullptr,
                                                                 nullptr, nullptr, nullptr)
                                     : fsig_attention_backward_ex(&pw, &tq, &tk, &tv, nullptr, &tg, nullptr, &tdq, &tdk,
                                                                  &tdv, e.slopes_t(), nullptr, nullptr, nullptr, nullptr,
                                                                  nullptr);
            const char* what = call == 0 ? "forward" : call == 1 ? "deterministic backward" : "fast backward";
            const bool refuse = served && call < 2 && !hopper;
            sync_or_die(c);
            if (refuse) {
                EXPECT(st == FSIG_ERROR_UNSUPPORTED && std::strstr(fsig_last_error(), "FSIG_CUDA_WGMMA=require") != nullptr,
                       "%s %s: status %d (%s), want a refusal naming FSIG_CUDA_WGMMA=require", kExtNames[ext], what, st,
                       fsig_last_error());
                for (size_t i = 0; i < 4; ++i) {
                    outputs[i]->download();
                    EXPECT(tu::unchanged(outputs[i]->host, before[i]), "%s %s: a refused call wrote output %zu",
                           kExtNames[ext], what, i);
                }
            } else {
                EXPECT(st == FSIG_OK, "%s %s: status %d (%s)", kExtNames[ext], what, st, fsig_last_error());
            }
            if (g_verbose) std::printf("  %s %s: %s\n", kExtNames[ext], what, st == FSIG_OK ? "ran" : fsig_last_error());
        }
    }
}

// A broadcast dBias on CUDA without the workspace its partial sums need (or with a bad one) is refused.
TEST(cuda_refusals) {
    if (!g_cuda) return;
    Case c;
    ref::Spec& s = c.s;
    s.B = 2, s.Hq = 2, s.Hk = 2, s.d = 64, s.Nq = 40, s.Nk = 70, s.score = ref::kSigmoid;
    ref::Rng rng(5);
    int bias_dtype = ref::kFp32;
    add_extension(s, kBiasHeads, rng, &bias_dtype);
    c.bias_dtype = bias_dtype;
    s.want_dbias = true;
    Extras e = make_extras(c);
    auto view = [&](int64_t n) { return gt::mirror(tu::make_view(c.dtype, tu::kContiguous, s.B, n, s.Hq, s.d)); };
    const Tensor q = view(s.Nq), k = view(s.Nk), v = view(s.Nk), g = view(s.Nq), dq = view(s.Nq), dk = view(s.Nk),
                 dv = view(s.Nk);
    gt::poison(dq);
    const std::vector<unsigned char> before = tu::snapshot(dq.host);
    const fsig_attention_params p = params_of(s);
    const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), tg = g.desc(), tdq = dq.desc(), tdk = dk.desc(),
                      tdv = dv.desc();
    const gt::Workspace ws(p, tq, e.dbias_t());
    EXPECT(ws.bytes == s.B * s.Hq * s.Nq * s.Nk * 4, "dbias [1, Hq, Nq, Nk] partial sums: %lld bytes",
           (long long)ws.bytes);
    std::vector<unsigned char> host_ws(size_t(ws.bytes) + 16);
    struct Refusal {
        const char* what;
        void* workspace;
        int64_t bytes;
        int status;
        const char* names;
    } refusals[] = {
        {"no workspace", nullptr, 0, FSIG_ERROR_BUFFER_TOO_SMALL, "workspace_size_ex"},
        {"workspace one byte short", ws.mem.get(), ws.bytes - 1, FSIG_ERROR_BUFFER_TOO_SMALL, "workspace_bytes"},
        {"workspace in host memory", host_ws.data(), ws.bytes, FSIG_ERROR_INVALID_DEVICE, "params.workspace"},
        {"workspace overlapping dbias", e.dbias.data(), ws.bytes, FSIG_ERROR_ALIASING, "params.workspace overlaps"},
    };
    for (const Refusal& r : refusals) {
        fsig_attention_params pw = p;
        pw.workspace = r.workspace, pw.workspace_bytes = r.bytes;
        const int st = fsig_attention_backward_ex(&pw, &tq, &tk, &tv, nullptr, &tg, nullptr, &tdq, &tdk, &tdv, nullptr,
                                                  e.bias_t(), nullptr, nullptr, e.dbias_t(), nullptr);
        EXPECT(st == r.status && std::strstr(fsig_last_error(), r.names) != nullptr,
               "broadcast dbias on CUDA, %s: status %d, %s", r.what, st, fsig_last_error());
        if (g_verbose) std::printf("  refused as expected: %s -> %s\n", r.what, fsig_last_error());
    }
    dq.download();
    EXPECT(tu::unchanged(dq.host, before), "a refused call wrote dq");
}

}  // namespace

int main(int argc, char** argv) { return gt::run_main(argc, argv, "masks-and-positions path"); }
