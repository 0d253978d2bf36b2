// Masks and positions (DESIGN.md §4 "Extensions", issue 9): ALiBi, the bias and mask tensors with
// broadcasting and dBias, strided (atrous) and block-sparse masks, log-n scaling — through the public
// C ABI (fsig_attention_forward_ex / _backward_ex and their _buffers forms) against the fp64 reference
// under the §6 rule, plus finite differences, thread-count independence, the struct_size versions and
// every refusal (with nothing written).
//
//   test_masks [--list] [--verbose] [name filters...]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../native/cpu/kernel_table.h"
#include "../native/cpu/strided.h"
#include "../native/cpu/work_counters.h"
#include "harness.h"
#include "lib_util.h"

namespace {

using ref::Spec;
constexpr double kInf = std::numeric_limits<double>::infinity();
bool g_verbose = false;

// A 1-byte tensor (mask, block layout): storage of exactly its extent.
struct Bytes {
    std::shared_ptr<tu::Storage> st;
    fsig_tensor t{};
    void make(int ndim, const int64_t* shape, const int64_t* strides) {
        std::memset(&t, 0, sizeof t);
        int64_t last = 0;
        for (int a = 0; a < ndim; ++a) last += (shape[a] - 1) * strides[a];
        st = std::make_shared<tu::Storage>(size_t(last + 1));
        std::memset(st->mem, 0, st->bytes);
        t.data = st->mem;
        t.capacity_bytes = int64_t(st->bytes);
        t.dtype = FSIG_DTYPE_BOOL;
        t.ndim = ndim;
        for (int a = 0; a < ndim; ++a) t.shape[a] = shape[a], t.strides[a] = strides[a];
    }
    // dense row-major values into the strided storage
    void store(const std::vector<unsigned char>& dense) {
        for (size_t i = 0; i < dense.size(); ++i) {
            size_t idx = i;
            int64_t off = 0;
            for (int a = t.ndim; a-- > 0;) off += int64_t(idx % size_t(t.shape[a])) * t.strides[a], idx /= size_t(t.shape[a]);
            st->mem[off] = dense[i];
        }
    }
};

// A rank-n view of any float dtype, row-major with the last dimension padded by `pad` elements.
tu::View make_nd(int dtype, int ndim, const int64_t* shape, int64_t pad) {
    tu::View v;
    v.dtype = dtype;
    v.ndim = ndim;
    int64_t stride = 1;
    for (int a = ndim; a-- > 0;) {
        v.shape[a] = shape[a];
        v.strides[a] = stride;
        stride *= shape[a] + (a == ndim - 1 ? pad : 0);
    }
    v.st = std::make_shared<tu::Storage>(size_t(v.extent_elems()) * tu::esize(dtype));
    return v;
}

// One case: a Spec with its extensions; the test draws the tensors from the seed.
struct MCase {
    std::string name;
    Spec s;
    int dtype = ref::kFp32;
    int bias_dtype = -1;  // -1: the dtype of q
    bool buffers_api = false;
    bool backward = true;
    uint64_t seed = 1;
};

// What a case needs for the extension tensors, filled from Spec.
struct Extras {
    tu::View slopes, bias, dbias;
    Bytes mask, layout;
    bool has_slopes = false, has_bias = false, has_mask = false, has_layout = false;
    fsig_tensor ts{}, tb{}, tdb{};
    const fsig_tensor* slopes_t() const { return has_slopes ? &ts : nullptr; }
    const fsig_tensor* bias_t() const { return has_bias ? &tb : nullptr; }
    const fsig_tensor* mask_t() const { return has_mask ? &mask.t : nullptr; }
    const fsig_tensor* layout_t() const { return has_layout ? &layout.t : nullptr; }
    void* slopes_d() const { return has_slopes ? slopes.data() : nullptr; }
    void* bias_d() const { return has_bias ? bias.data() : nullptr; }
    void* mask_d() const { return has_mask ? mask.t.data : nullptr; }
    void* layout_d() const { return has_layout ? layout.t.data : nullptr; }
};

Extras make_extras(const Spec& s, int bias_dtype) {
    Extras e;
    if (!s.alibi_slopes.empty()) {
        const int64_t shape[2] = {s.B, s.Hq};
        e.slopes = s.alibi_per_batch ? make_nd(FSIG_DTYPE_FP32, 2, shape, 1) : make_nd(FSIG_DTYPE_FP32, 1, shape + 1, 0);
        e.slopes.store(std::vector<float>(s.alibi_slopes.begin(), s.alibi_slopes.end()));
        e.has_slopes = true;
        e.ts = e.slopes.desc();
    }
    if (!s.bias.empty()) {
        const int64_t shape[4] = {s.bias_b, s.bias_h, s.bias_q, s.Nk};
        e.bias = make_nd(bias_dtype, 4, shape, 3);
        e.bias.store(std::vector<float>(s.bias.begin(), s.bias.end()));
        e.has_bias = true;
        e.tb = e.bias.desc();
        if (s.want_dbias) {
            e.dbias = make_nd(bias_dtype, 4, shape, 0);
            tu::poison(e.dbias);
            e.tdb = e.dbias.desc();
        }
    }
    if (!s.mask.empty()) {
        const int64_t shape[4] = {s.mask_b, s.mask_h, s.mask_q, s.Nk};
        const int64_t strides[4] = {s.mask_h * s.mask_q * (s.Nk + 1), s.mask_q * (s.Nk + 1), s.Nk + 1, 1};
        e.mask.make(4, shape, strides);
        e.mask.store(s.mask);
        e.has_mask = true;
    }
    if (s.block_m > 0) {
        const int64_t rows = (s.Nq + s.block_m - 1) / s.block_m, cols = (s.Nk + s.block_n - 1) / s.block_n;
        const int64_t shape[3] = {s.layout_h, rows, cols}, strides[3] = {rows * cols, cols, 1};
        e.layout.make(3, shape, strides);
        e.layout.store(s.layout);
        e.has_layout = true;
    }
    return e;
}

fsig_attention_params params_of(const Spec& s) {
    fsig_attention_params p = tu::params_for(s);
    p.sparse_block_m = s.block_m;
    p.sparse_block_n = s.block_n;
    p.strided = s.strided;
    p.logn_train = s.logn_train;
    return p;
}

bool check_out(const MCase& c, const char* output, const tu::View& v, const std::vector<double>& r64,
               const std::vector<float>& naive) {
    return tu::check_output(c.name, c.s.describe(), output, v, r64, naive);
}

// Runs forward and backward of the case through the _ex C ABI and checks every output.
void run_case(const MCase& c) {
    const int before = th::failures();
    const Spec& s = c.s;
    const int bias_dtype = c.bias_dtype < 0 ? c.dtype : c.bias_dtype;
    const bool softmax = s.score == ref::kSoftmax;
    ref::Rng rng(c.seed);
    const std::vector<float> qf = ref::random_values(rng, s.q_elems(), c.dtype),
                             kf = ref::random_values(rng, s.kv_elems(), c.dtype),
                             vf = ref::random_values(rng, s.kv_elems(), c.dtype),
                             gf = ref::random_values(rng, s.q_elems(), c.dtype);
    const std::vector<double> q = tu::to_double(qf), k = tu::to_double(kf), v = tu::to_double(vf), g = tu::to_double(gf);
    const ref::Forward<double> f64 = ref::forward64(s, q.data(), k.data(), v.data());
    const ref::Forward<float> fn = ref::forward_naive(s, c.dtype, qf.data(), kf.data(), vf.data());

    tu::QKV in = tu::make_qkv(c.dtype, tu::kPadded, s);
    in.q.store(qf), in.k.store(kf), in.v.store(vf);
    tu::View out = tu::make_view(c.dtype, tu::kContiguous, s.B, s.Nq, s.Hq, s.d);
    tu::View lse = tu::make_lse_view(tu::kPadded, s.B, s.Hq, s.Nq);
    tu::poison(out), tu::poison(lse);
    Extras e = make_extras(s, bias_dtype);
    const fsig_attention_params p = params_of(s);
    const fsig_tensor tq = in.q.desc(), tk = in.k.desc(), tv = in.v.desc(), to = out.desc(), tl = lse.desc();
    int st = c.buffers_api
                 ? fsig_attention_forward_ex_buffers(&p, &tq, &tk, &tv, &to, softmax ? &tl : nullptr, e.slopes_t(),
                                                     e.bias_t(), e.mask_t(), e.layout_t(), nullptr, in.q.data(),
                                                     in.k.data(), in.v.data(), out.data(),
                                                     softmax ? lse.data() : nullptr, e.slopes_d(), e.bias_d(),
                                                     e.mask_d(), e.layout_d())
                 : fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, softmax ? &tl : nullptr, e.slopes_t(), e.bias_t(),
                                             e.mask_t(), e.layout_t(), nullptr);
    if (st != FSIG_OK) {
        EXPECT(false, "%s: forward_ex returned %d: %s", c.name.c_str(), st, fsig_last_error());
        return;
    }
    check_out(c, "out", out, f64.out, fn.out);
    if (softmax) check_out(c, "lse", lse, f64.lse, fn.lse);

    if (c.backward) {
        const std::vector<float> out_in = tu::to_float_rounded(f64.out, c.dtype);
        const std::vector<double> out64 = tu::to_double(out_in);  // the O the library is handed (reference.h)
        const ref::Grads<double> g64 = ref::backward64(s, q.data(), k.data(), v.data(), g.data(), out64.data());
        const ref::Grads<float> gn = ref::backward_naive(s, c.dtype, qf.data(), kf.data(), vf.data(), out_in.data(), gf.data());
        tu::View o_in = tu::make_view(c.dtype, tu::kContiguous, s.B, s.Nq, s.Hq, s.d);
        o_in.store(out_in);
        // fp32 softmax takes the forward's own LSE, as a training step does (an exact one would leave S's
        // rounding in P, beyond fp32's bound: tests/numerics.cpp); fp16/bf16 take ref64's, which their
        // bound covers, so the backward is also checked against an LSE from elsewhere
        tu::View l_in = tu::make_lse_view(tu::kContiguous, s.B, s.Hq, s.Nq);
        l_in.store(softmax && c.dtype == ref::kFp32 ? lse.load()
                                                     : std::vector<float>(f64.lse.begin(), f64.lse.end()));
        tu::View dout = tu::make_view(c.dtype, tu::kBHSD, s.B, s.Nq, s.Hq, s.d);
        dout.store(gf);
        tu::View dq = tu::make_view(c.dtype, tu::kPadded, s.B, s.Nq, s.Hq, s.d),
                 dk = tu::make_view(c.dtype, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
                 dv = tu::make_view(c.dtype, tu::kBHSD, s.B, s.Nk, s.Hk, s.d);
        tu::poison(dq), tu::poison(dk), tu::poison(dv);
        const fsig_tensor toi = o_in.desc(), tli = l_in.desc(), tdo = dout.desc(), tdq = dq.desc(), tdk = dk.desc(),
                          tdv = dv.desc();
        const fsig_tensor* tdb = s.want_dbias ? &e.tdb : nullptr;
        st = c.buffers_api
                 ? fsig_attention_backward_ex_buffers(
                       &p, &tq, &tk, &tv, softmax ? &toi : nullptr, &tdo, softmax ? &tli : nullptr, &tdq, &tdk, &tdv,
                       e.slopes_t(), e.bias_t(), e.mask_t(), e.layout_t(), tdb, nullptr, in.q.data(), in.k.data(),
                       in.v.data(), softmax ? o_in.data() : nullptr, dout.data(), softmax ? l_in.data() : nullptr,
                       dq.data(), dk.data(), dv.data(), e.slopes_d(), e.bias_d(), e.mask_d(), e.layout_d(),
                       s.want_dbias ? e.dbias.data() : nullptr)
                 : fsig_attention_backward_ex(&p, &tq, &tk, &tv, softmax ? &toi : nullptr, &tdo,
                                              softmax ? &tli : nullptr, &tdq, &tdk, &tdv, e.slopes_t(), e.bias_t(),
                                              e.mask_t(), e.layout_t(), tdb, nullptr);
        if (st != FSIG_OK) {
            EXPECT(false, "%s: backward_ex returned %d: %s", c.name.c_str(), st, fsig_last_error());
            return;
        }
        check_out(c, "dq", dq, g64.dq, gn.dq);
        check_out(c, "dk", dk, g64.dk, gn.dk);
        check_out(c, "dv", dv, g64.dv, gn.dv);
        if (s.want_dbias) check_out(c, "dbias", e.dbias, g64.dbias, gn.dbias);
    }
    const bool ok = th::failures() == before;
    if (g_verbose || !ok) std::printf("  %s %s\n", ok ? "ok  " : "FAIL", c.name.c_str());
}

// ---- building cases ----------------------------------------------------------------------------------

enum Option { kAlibiH, kAlibiBH, kBias, kMask, kStrided, kBlock, kLogn, kAll, kOptionCount };
const char* kOptionNames[] = {"alibiH", "alibiBH", "bias", "mask", "strided", "blocks", "logn", "all"};
enum MaskMode { kPlain, kCausal, kWindow, kCausalWindow, kModeCount };
const char* kModeNames[] = {"plain", "causal", "window", "causalwindow"};

// Odd shapes crossing the 64-row and 128-key tiles: (B, Nq, Nk, Hq, Hk, d)
const int64_t kShapes[][6] = {{2, 37, 150, 4, 2, 24}, {1, 130, 300, 3, 1, 40}, {2, 65, 64, 2, 2, 59},
                              {1, 200, 131, 2, 1, 32}, {1, 1, 257, 4, 4, 16}};

void add_bias(Spec& s, ref::Rng& rng, int64_t bb, int64_t bh, int64_t bq, int dtype, double masked_fraction) {
    s.bias_b = bb, s.bias_h = bh, s.bias_q = bq;
    s.bias.resize(s.bias_elems());
    for (double& x : s.bias) {
        x = ref::round_to(dtype, float(rng.normal()));
        if (rng.uniform() < masked_fraction) x = -kInf;
    }
}

void add_mask(Spec& s, ref::Rng& rng, int64_t mb, int64_t mh, int64_t mq, double density) {
    s.mask_b = mb, s.mask_h = mh, s.mask_q = mq;
    s.mask.resize(size_t(mb * mh * mq * s.Nk));
    for (auto& x : s.mask) x = rng.uniform() < density ? (unsigned char)(1 + rng.below(255)) : 0;
}

void add_blocks(Spec& s, ref::Rng& rng, int64_t bm, int64_t bn, bool per_head, double density) {
    s.block_m = bm, s.block_n = bn, s.layout_h = per_head ? s.Hq : 1;
    const int64_t rows = (s.Nq + bm - 1) / bm, cols = (s.Nk + bn - 1) / bn;
    s.layout.resize(size_t(s.layout_h * rows * cols));
    for (auto& x : s.layout) x = rng.uniform() < density ? 1 : 0;
}

void add_alibi(Spec& s, bool per_batch) {
    const int64_t n = per_batch ? s.B * s.Hq : s.Hq;
    std::vector<float> geo(size_t(s.Hq));
    fsig_alibi_slopes(s.Hq, geo.data());
    s.alibi_per_batch = per_batch;
    s.alibi_slopes.resize(size_t(n));
    for (int64_t e = 0; e < n; ++e) s.alibi_slopes[size_t(e)] = geo[size_t(e % s.Hq)] * (1.0 + 0.25 * double(e / s.Hq));
}

MCase make_case(int option, int score, int mode, int idx) {
    MCase c;
    c.seed = 1000 + uint64_t(idx);
    ref::Rng rng(c.seed * 7919);
    const int64_t* sh = kShapes[idx % 5];
    Spec& s = c.s;
    s.B = sh[0], s.Nq = sh[1], s.Nk = sh[2], s.Hq = sh[3], s.Hk = sh[4], s.d = sh[5];
    s.score = score;
    s.causal = mode == kCausal || mode == kCausalWindow;
    if (mode == kWindow || mode == kCausalWindow) s.window_left = 9 + idx % 20, s.window_right = mode == kWindow ? 5 : -1;
    c.dtype = (idx / 3) % 3;
    c.buffers_api = idx % 2 == 1;
    const int o = option;
    if (o == kAlibiH || o == kAll) add_alibi(s, false);
    if (o == kAlibiBH) add_alibi(s, true);
    if (o == kBias || o == kAll) {
        // the broadcast shapes in turn, each with its dBias
        const int form = idx % 5;
        const int64_t bb = form == 1 || form == 3 ? 1 : s.B, bh = form == 2 || form == 3 ? 1 : s.Hq,
                      bq = form == 4 ? 1 : s.Nq;
        if (idx % 7 == 3) c.bias_dtype = ref::kFp32;  // a bias dtype other than q's
        add_bias(s, rng, bb, bh, bq, c.bias_dtype < 0 ? c.dtype : c.bias_dtype, idx % 3 == 0 ? 0.05 : 0.0);
        s.want_dbias = true;
    }
    if (o == kMask || o == kAll) {
        const int form = idx % 3;  // key padding [B,1,1,Nk], per head [1,H,Nq,Nk], full
        if (form == 0) add_mask(s, rng, s.B, 1, 1, 0.8);
        else if (form == 1) add_mask(s, rng, 1, s.Hq, s.Nq, 0.7);
        else add_mask(s, rng, s.B, s.Hq, s.Nq, 0.6);
    }
    if (o == kStrided || o == kAll) s.strided = 2 + idx % 5;
    if (o == kBlock || o == kAll) {
        const int64_t bms[] = {16, 7, 64, 48, 100}, bns[] = {32, 128, 5, 77, 64};
        add_blocks(s, rng, bms[idx % 5], bns[(idx / 5) % 5], idx % 2 == 0, 0.55);
    }
    if (o == kLogn || o == kAll) s.logn_train = 2 + idx % 40;
    if (score == ref::kRelu || score == ref::kIdentity) s.alpha = 0.5;  // keep pointwise outputs O(1)
    c.name = th::format("%s_%s_%s_%s_%lldx%lld_%03d", kOptionNames[option], ref::score_name(score), kModeNames[mode],
                        ref::dtype_name(c.dtype), (long long)s.Nq, (long long)s.Nk, idx);
    return c;
}

// Every option × score × causal/window, forward and backward (the "all" option combines them).
TEST(options_scores_masks) {
    int idx = 0;
    for (int option = 0; option < kOptionCount; ++option)
        for (int score = 0; score < ref::kScoreCount; ++score)
            for (int mode = 0; mode < kModeCount; ++mode) run_case(make_case(option, score, mode, idx++));
}

// A bias of -inf masks; rows whose every key is masked give O = 0 and LSE = +inf (softmax) or O = 0.
TEST(fully_masked_rows) {
    for (int score : {int(ref::kSoftmax), int(ref::kSigmoid), int(ref::kGelu)}) {
        MCase c;
        Spec& s = c.s;
        s.B = 1, s.Nq = 70, s.Nk = 140, s.Hq = 2, s.Hk = 1, s.d = 32, s.score = score;
        ref::Rng rng(5);
        add_bias(s, rng, 1, s.Hq, s.Nq, ref::kFp32, 0.0);
        for (int64_t i = 0; i < s.Nq; i += 3)
            for (int64_t j = 0; j < s.Nk; ++j) s.bias[size_t(i * s.Nk + j)] = -kInf;  // head 0: rows 0, 3, ...
        add_mask(s, rng, 1, 1, s.Nq, 1.0);
        for (int64_t j = 0; j < s.Nk; ++j) s.mask[size_t(1 * s.Nk + j)] = 0;  // row 1 of every head
        s.want_dbias = true;
        c.name = th::format("fully_masked_%s", ref::score_name(score));
        run_case(c);
    }
}

// Key padding by a bias [B, 1, 1, Nk] of −inf past each element's length (0, 130 and 300 of 420 keys): whole key tiles
// of it skipped (tile_empty reads the bias), the rest computed; every score, the bias in each dtype, alone and under
// a mask with a row dimension, with its gradient. And a forward with NaN k at the keys the bias masks, in a key tile
// that is computed (S = NaN there): the bias masks them as a mask would, so the output is the same bits as with those
// k zero (the backward's dQ = dS·k still takes 0·NaN, as with a mask).
TEST(key_padding_bias_skips_tiles) {
    const int64_t lengths[3] = {0, 130, 300};
    int idx = 0;
    for (int score = 0; score < ref::kScoreCount; ++score)
        for (bool row_mask : {false, true}) {
            MCase c;
            c.seed = 4100 + uint64_t(idx);
            ref::Rng rng(c.seed * 17);
            Spec& s = c.s;
            s.B = 3, s.Nq = 70, s.Nk = 420, s.Hq = 2, s.Hk = 1, s.d = 32, s.score = score;
            if (score == ref::kRelu || score == ref::kIdentity) s.alpha = 0.5;
            c.dtype = idx % 3;
            c.bias_dtype = idx % 2 == 0 ? c.dtype : int(ref::kFp32);  // (q's or fp32: the reference rounds dS to q's)
            add_bias(s, rng, s.B, 1, 1, c.bias_dtype, 0.0);
            for (int64_t b = 0; b < s.B; ++b)
                for (int64_t j = lengths[b]; j < s.Nk; ++j) s.bias[size_t(b * s.Nk + j)] = -kInf;
            if (row_mask) add_mask(s, rng, s.B, 1, s.Nq, 0.8);
            s.want_dbias = true;
            c.name = th::format("keypad_bias_%s_%s%s_%03d", ref::score_name(score), ref::dtype_name(c.bias_dtype),
                                row_mask ? "_rowmask" : "", idx);
            ++idx;
            run_case(c);
        }
    for (int score : {int(ref::kSoftmax), int(ref::kSigmoid)}) {  // [1, 5, 1, 8] q, [1, 200, 1, 8] k and v
        const int64_t nq = 5, nk = 200, d = 8, length = 150;
        ref::Rng rng(77);
        const std::vector<float> q = ref::random_values(rng, size_t(nq * d), ref::kFp32),
                                 v = ref::random_values(rng, size_t(nk * d), ref::kFp32);
        std::vector<float> k = ref::random_values(rng, size_t(nk * d), ref::kFp32), bias(size_t(nk), 0.f);
        for (int64_t j = length; j < nk; ++j) bias[size_t(j)] = -kInf;
        auto forward = [&](float padded_k) {
            for (int64_t j = length; j < nk; ++j) std::fill_n(k.begin() + j * d, d, padded_k);
            tu::View tq = tu::make_view(ref::kFp32, tu::kContiguous, 1, nq, 1, d),
                     tk = tu::make_view(ref::kFp32, tu::kContiguous, 1, nk, 1, d),
                     tv = tu::make_view(ref::kFp32, tu::kContiguous, 1, nk, 1, d),
                     to = tu::make_view(ref::kFp32, tu::kContiguous, 1, nq, 1, d),
                     tb = tu::make_view(ref::kFp32, tu::kContiguous, 1, 1, 1, nk);
            tq.store(q), tk.store(k), tv.store(v), tb.store(bias);
            fsig_attention_params p = fsig_attention_params_default();
            p.score = score;
            const fsig_tensor dq = tq.desc(), dk = tk.desc(), dv = tv.desc(), dout = to.desc(), db = tb.desc();
            EXPECT(fsig_attention_forward_ex(&p, &dq, &dk, &dv, &dout, nullptr, nullptr, &db, nullptr, nullptr,
                                             nullptr) == FSIG_OK, "forward: %s", fsig_last_error());
            return to.load();
        };
        const std::vector<float> zero_k = forward(0.f), nan_k = forward(std::nanf(""));
        EXPECT(std::memcmp(zero_k.data(), nan_k.data(), zero_k.size() * 4) == 0,
               "%s: NaN k at keys a bias of -inf masks changed the output (first: %g against %g)",
               ref::score_name(score), double(nan_k[0]), double(zero_k[0]));
    }
}

// Block layouts at the extremes: all allowed (= no layout), none allowed, and a diagonal band.
TEST(block_sparse_extremes) {
    int idx = 0;
    for (double density : {1.0, 0.0}) {
        for (int score : {int(ref::kSoftmax), int(ref::kRelu2)}) {
            MCase c;
            Spec& s = c.s;
            s.B = 1, s.Nq = 150, s.Nk = 260, s.Hq = 2, s.Hk = 2, s.d = 32, s.score = score, s.causal = idx % 2 == 1;
            ref::Rng rng(9 + uint64_t(idx));
            add_blocks(s, rng, 64, 128, true, density);
            c.name = th::format("blocks_density%.0f_%s_%d", density, ref::score_name(score), idx++);
            run_case(c);
        }
    }
}

// Strided 1 allows everything; strided with a window is the union; strided alone, causal; a stride of
// 2^62 (only the diagonal; no overflow stepping from one kept key to the next).
TEST(strided_forms) {
    int idx = 0;
    for (int64_t stride : {int64_t(1), int64_t(3), int64_t(64), int64_t(1000), int64_t(1) << 62})
        for (int64_t wl : {-1, 0, 10}) {
            MCase c;
            Spec& s = c.s;
            s.B = 1, s.Nq = 100, s.Nk = 180, s.Hq = 2, s.Hk = 1, s.d = 40, s.score = idx % 2 ? ref::kSigmoid : ref::kSoftmax;
            s.causal = true, s.strided = stride, s.window_left = wl;
            c.dtype = idx % 3;
            c.name = th::format("strided%lld_wl%lld", (long long)stride, (long long)wl);
            ++idx;
            run_case(c);
        }
}

// The tile predicate of the strided pattern (native/cpu/strided.h) against a scan of every element with
// the reference's mask, over random lengths, strides, causal and window bounds and tiles of any size:
// it must be exact (a tile it calls empty has no allowed element, and every tile without one is called
// empty), whatever the stride is next to the tile.
TEST(strided_tile_predicate) {
    ref::Rng rng(2024);
    int64_t empty = 0, nonempty = 0;
    const int64_t bounds[] = {-1, -1, 0, 1, 3, 17, 60, 200};
    for (int trial = 0; trial < 3000; ++trial) {
        Spec s;
        s.Nq = 1 + rng.below(trial % 3 == 0 ? 9 : 260), s.Nk = 1 + rng.below(trial % 5 == 0 ? 9 : 300);
        s.strided = 1 + rng.below(trial % 2 ? 40 : 500);
        s.causal = rng.below(2) == 1;
        s.window_left = bounds[rng.below(8)], s.window_right = bounds[rng.below(8)];
        fsig::Problem p;
        p.seq_q = s.Nq, p.seq_k = s.Nk, p.causal = s.causal, p.strided = s.strided;
        p.window_left = s.window_left, p.window_right = s.window_right;
        for (int tile = 0; tile < 8; ++tile) {
            const int64_t i0 = rng.below(s.Nq), j0 = rng.below(s.Nk);
            const int64_t m = 1 + rng.below(std::min<int64_t>(s.Nq - i0, tile % 2 ? 64 : 7));
            const int64_t n = 1 + rng.below(std::min<int64_t>(s.Nk - j0, tile % 2 ? 128 : 9));
            bool any = false;
            for (int64_t i = i0; i < i0 + m && !any; ++i)
                for (int64_t j = j0; j < j0 + n && !any; ++j) any = s.allowed_at(0, 0, i, j);
            const bool said_empty = fsig::cpu::strided_tile_empty(p, i0, m, j0, n);
            (any ? nonempty : empty) += 1;
            EXPECT(said_empty == !any, "%s: tile rows [%lld, %lld) keys [%lld, %lld): predicate says %s, the scan %s",
                   s.describe().c_str(), (long long)i0, (long long)(i0 + m), (long long)j0, (long long)(j0 + n),
                   said_empty ? "empty" : "not empty", any ? "finds an allowed element" : "finds none");
        }
    }
    EXPECT(empty > 2000 && nonempty > 2000, "the random tiles must cover both answers: %lld empty, %lld not",
           (long long)empty, (long long)nonempty);
}

// Strides larger than the kernel tiles (64 query rows × 128 keys, 64 keys for d > 128), so whole key tiles
// are skipped in the forward, the dK/dV and the dQ pass: alone, causal, with a window (the union) and
// with a bias broadcast over Nq (its dBias built from the dK/dV pass's column sums, skipped tiles 0).
// Rows without any allowed key occur (stride > Nk). §6 rule against the fp64 reference.
TEST(strided_tile_skipping) {
    int idx = 0;
    for (int64_t stride : {150, 200, 333, 700, 5000})
        for (int mode = 0; mode < kModeCount; ++mode) {
            MCase c;
            Spec& s = c.s;
            const bool wide = idx % 3 == 2;  // d > 128: 64-key tiles
            s.B = 1 + idx % 2, s.Nq = 300 + 37 * (idx % 4), s.Nk = 420 + 53 * (idx % 3), s.Hq = 2, s.Hk = 1 + idx % 2;
            s.d = wide ? 144 : 24 + 8 * (idx % 3);
            const int scores[] = {ref::kSoftmax, ref::kSigmoid, ref::kRelu2, ref::kSoftmax, ref::kGelu};
            s.score = scores[idx % 5];
            s.causal = mode == kCausal || mode == kCausalWindow;
            if (mode == kWindow || mode == kCausalWindow) s.window_left = 5 + idx % 11, s.window_right = mode == kWindow ? 3 : -1;
            s.strided = stride;
            c.dtype = idx % 3;
            if (idx % 4 == 1) {
                ref::Rng rng(600 + uint64_t(idx));
                add_bias(s, rng, s.B, 1, 1, c.dtype, 0.0);  // a key-padding bias, with its gradient
                s.want_dbias = true;
            }
            c.seed = 500 + uint64_t(idx);
            c.name = th::format("strided%lld_%s_%s_%s_d%lld_%03d", (long long)stride, kModeNames[mode],
                                ref::score_name(s.score), ref::dtype_name(c.dtype), (long long)s.d, idx);
            ++idx;
            run_case(c);
        }
}

// The strided pattern (its tiles skipped by the analytic predicate) gives bitwise the results of the
// same pattern written out as a boolean mask tensor (its tiles skipped by scanning the mask): a tile
// skipped wrongly, or an empty one computed with a different result, would show.
TEST(strided_equals_mask_tensor) {
    int idx = 0;
    for (int64_t stride : {3, 130, 250, 1000})
        for (int mode = 0; mode < kModeCount; ++mode) {
            Spec s;
            s.B = 1, s.Nq = 260, s.Nk = 390, s.Hq = 2, s.Hk = 1, s.d = 32, s.score = idx % 2 ? ref::kSigmoid : ref::kSoftmax;
            s.causal = mode == kCausal || mode == kCausalWindow;
            if (mode == kWindow || mode == kCausalWindow) s.window_left = 7, s.window_right = mode == kWindow ? 2 : -1;
            s.strided = stride;
            Spec m = s;  // the same allowed set: strided (∪ window) as a mask, causal kept as causal
            m.strided = 0, m.window_left = -1, m.window_right = -1;
            m.mask_b = m.mask_h = 1, m.mask_q = m.Nq;
            m.mask.assign(size_t(m.Nq * m.Nk), 0);
            for (int64_t i = 0; i < s.Nq; ++i)
                for (int64_t j = 0; j < s.Nk; ++j) m.mask[size_t(i * s.Nk + j)] = s.allowed_at(0, 0, i, j) ? 1 : 0;
            std::vector<std::vector<unsigned char>> results;
            for (const Spec* x : {&s, &m}) {
                ref::Rng r2(77 + uint64_t(idx));
                const int dt = FSIG_DTYPE_FP32;
                tu::View q = tu::make_view(dt, tu::kContiguous, x->B, x->Nq, x->Hq, x->d),
                         k = tu::make_view(dt, tu::kContiguous, x->B, x->Nk, x->Hk, x->d),
                         v = tu::make_view(dt, tu::kContiguous, x->B, x->Nk, x->Hk, x->d),
                         out = tu::make_view(dt, tu::kContiguous, x->B, x->Nq, x->Hq, x->d),
                         g = tu::make_view(dt, tu::kContiguous, x->B, x->Nq, x->Hq, x->d),
                         dq = tu::make_view(dt, tu::kContiguous, x->B, x->Nq, x->Hq, x->d),
                         dk = tu::make_view(dt, tu::kContiguous, x->B, x->Nk, x->Hk, x->d),
                         dv = tu::make_view(dt, tu::kContiguous, x->B, x->Nk, x->Hk, x->d);
                tu::View lse = tu::make_lse_view(tu::kContiguous, x->B, x->Hq, x->Nq);
                q.store(ref::random_values(r2, x->q_elems(), dt)), k.store(ref::random_values(r2, x->kv_elems(), dt));
                v.store(ref::random_values(r2, x->kv_elems(), dt)), g.store(ref::random_values(r2, x->q_elems(), dt));
                tu::poison(out), tu::poison(lse), tu::poison(dq), tu::poison(dk), tu::poison(dv);
                Extras e = make_extras(*x, dt);
                const fsig_attention_params p = params_of(*x);
                const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), to = out.desc(), tl = lse.desc(),
                                  tg = g.desc(), tdq = dq.desc(), tdk = dk.desc(), tdv = dv.desc();
                const bool sm = x->score == ref::kSoftmax;
                REQUIRE(fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, sm ? &tl : nullptr, nullptr, nullptr, e.mask_t(),
                                                  nullptr, nullptr) == FSIG_OK,
                        "forward_ex: %s", fsig_last_error());
                REQUIRE(fsig_attention_backward_ex(&p, &tq, &tk, &tv, &to, &tg, sm ? &tl : nullptr, &tdq, &tdk, &tdv, nullptr,
                                                   nullptr, e.mask_t(), nullptr, nullptr, nullptr) == FSIG_OK,
                        "backward_ex: %s", fsig_last_error());
                results.emplace_back();
                for (const tu::View* y : {&out, &lse, &dq, &dk, &dv}) {
                    const auto snap = tu::snapshot(*y);
                    results.back().insert(results.back().end(), snap.begin(), snap.end());
                }
            }
            EXPECT(results[0] == results[1], "%s: strided and the same mask tensor differ", s.describe().c_str());
            ++idx;
        }
}

// dBias of a bias broadcast over Nq ([B|1, Hq|1, 1, Nk]: a key-padding bias and its relatives) is dS
// summed over every query row and the broadcast batches and heads: every score × causal/window, odd
// shapes, each dtype (also an fp32 bias on 16-bit q), masked keys (-inf), GQA; and long query
// sides, where the sum runs over a thousand rows.
TEST(dbias_broadcast_over_nq) {
    int idx = 0;
    for (int score = 0; score < ref::kScoreCount; ++score)
        for (int mode = 0; mode < kModeCount; ++mode) {
            MCase c;
            c.seed = 3000 + uint64_t(idx);
            ref::Rng rng(c.seed * 31);
            const int64_t* sh = kShapes[idx % 5];
            Spec& s = c.s;
            s.B = sh[0], s.Nq = sh[1], s.Nk = sh[2], s.Hq = sh[3], s.Hk = sh[4], s.d = sh[5];
            s.score = score;
            s.causal = mode == kCausal || mode == kCausalWindow;
            if (mode == kWindow || mode == kCausalWindow) s.window_left = 6 + idx % 30, s.window_right = mode == kWindow ? 4 : -1;
            if (score == ref::kRelu || score == ref::kIdentity) s.alpha = 0.5;
            c.dtype = idx % 3;
            c.buffers_api = idx % 2 == 0;
            if (idx % 5 == 2) c.bias_dtype = ref::kFp32;  // a bias dtype other than q's (the reference rounds dS to q's)
            const int form = idx % 4;  // [B,1,1,Nk] (key padding), [1,1,1,Nk], [1,Hq,1,Nk], [B,Hq,1,Nk]
            add_bias(s, rng, form == 0 || form == 3 ? s.B : 1, form >= 2 ? s.Hq : 1, 1,
                     c.bias_dtype < 0 ? c.dtype : c.bias_dtype, idx % 3 == 1 ? 0.1 : 0.0);
            s.want_dbias = true;
            c.name = th::format("dbias_q1_form%d_%s_%s_%s_%lldx%lld_%03d", form, ref::score_name(score), kModeNames[mode],
                                ref::dtype_name(c.dtype), (long long)s.Nq, (long long)s.Nk, idx);
            ++idx;
            run_case(c);
        }
    for (int dtype : {int(ref::kFp32), int(ref::kBf16)}) {
        MCase c;
        Spec& s = c.s;
        s.B = 2, s.Nq = 1023, s.Nk = 300, s.Hq = 2, s.Hk = 1, s.d = 32, s.score = dtype == ref::kFp32 ? ref::kSoftmax : ref::kSigmoid;
        s.causal = dtype == ref::kBf16;
        ref::Rng rng(91);
        add_bias(s, rng, s.B, 1, 1, dtype, 0.05);
        s.want_dbias = true;
        c.dtype = dtype;
        c.name = th::format("dbias_q1_long_%s", ref::dtype_name(dtype));
        run_case(c);
    }
}

// log-n: n_train below, at and above the row lengths (lambda = 1 everywhere when n_train >= Nk).
TEST(logn_values) {
    int idx = 0;
    for (int64_t n_train : {2, 16, 100, 10000})
        for (int mode : {kPlain, kCausal, kCausalWindow}) {
            MCase c;
            Spec& s = c.s;
            // lambda up to ln 200 / ln 2 = 7.6 multiplies |S| by 7.6: in fp32 the softmax backward's
            // P = exp(S - LSE) then loses ~1.3x more than the naive computation (as it does for an
            // explicit scale 7.6/sqrt(d) without log-n), so the extreme n_train = 2 runs pointwise only.
            s.B = 2, s.Nq = 90, s.Nk = 200, s.Hq = 2, s.Hk = 2, s.d = 32;
            s.score = idx % 3 == 0 && n_train > 2 ? ref::kSoftmax : ref::kSoftplus;
            s.causal = mode != kPlain;
            if (mode == kCausalWindow) s.window_left = 30;
            s.logn_train = n_train;
            c.name = th::format("logn%lld_%s", (long long)n_train, kModeNames[mode]);
            ++idx;
            run_case(c);
        }
}

// ALiBi where distances reach 2^24 (above it float no longer holds every integer): the kernels' float
// penalties cover tiles whose distances are all below 2^24, the int64 form the others. Nk = 2^24 + 2048
// keys through one broadcast key and value row (sequence stride 0: 64 bytes, not a gigabyte), so only
// the positions make the scores differ; a negative slope puts the softmax weight on the farthest keys,
// about 12 % of it on the 2048 keys beyond 2^24 — which the LSE shows (missing there, it falls by 0.12;
// a distance off by a unit or two would not show). 2^17 key tiles also check that the forward's
// normalised O does not drift tile by tile. The backward: alibi_beyond_float_integers_backward, below.
TEST(alibi_beyond_float_integers) {
    constexpr int64_t d = 8, nq = 3, nk = (int64_t(1) << 24) + 2048, heads = 1;
    const float slope = -1.f / 16384.f;  // penalties up to 1024: LSE near 1024, fp32 S steps of 2^-13
    std::vector<float> q(nq * d);
    for (int64_t e = 0; e < nq * d; ++e) q[size_t(e)] = float(e % 5) * 0.125f;  // exact in fp32
    tu::View vq = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, nq, 1, d),
             kv = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, 1, 1, d),
             vout = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, nq, 1, d),
             vlse = tu::make_lse_view(tu::kContiguous, 1, 1, nq), vslope = make_nd(FSIG_DTYPE_FP32, 1, &heads, 0);
    vq.store(q), kv.store(std::vector<float>(d, 0.25f)), vslope.store({slope});
    tu::poison(vout), tu::poison(vlse);
    fsig_tensor tk = kv.desc();  // one key and value row for all nk keys
    tk.shape[1] = nk, tk.strides[1] = 0;
    const fsig_tensor tq = vq.desc(), to = vout.desc(), tl = vlse.desc(), ts = vslope.desc();
    fsig_attention_params p = fsig_attention_params_default();
    p.score = FSIG_SCORE_SOFTMAX;
    REQUIRE(fsig_attention_forward_ex(&p, &tq, &tk, &tk, &to, &tl, &ts, nullptr, nullptr, nullptr, nullptr) == FSIG_OK,
            "%s", fsig_last_error());
    const std::vector<float> out = vout.load(), lse = vlse.load();
    const double scale = 1.0 / std::sqrt(double(d));
    for (int64_t i = 0; i < nq; ++i) {
        double s0 = 0;
        for (int64_t c = 0; c < d; ++c) s0 += double(q[size_t(i * d + c)]) * 0.25 * scale;
        const int64_t diag = i + nk - nq;
        const double top = s0 - double(slope) * double(diag);  // key 0, the farthest, scores highest
        double sum = 0;
        for (int64_t j = 0; j < nk; ++j) sum += std::exp(s0 - double(slope) * double(diag - j) - top);
        const double want = top + std::log(sum);
        // fp32: S near 1024 in steps of 2^-13, row sums over a few hundred tiles (~1e-5 relative)
        EXPECT(std::fabs(double(lse[size_t(i)]) - want) <= 1e-3, "row %lld: lse %.6f, fp64 %.6f", (long long)i,
               double(lse[size_t(i)]), want);
        // every key's value row is the same: out = v, whatever the weights, to a few roundings (an O summed
        // key by key into its normalised accumulator lost 5e-4 of itself here)
        for (int64_t c = 0; c < d; ++c)
            EXPECT(std::fabs(double(out[size_t(i * d + c)]) - 0.25) <= 0.25 * 1e-5, "row %lld: out[%lld] = %.8f, want 0.25",
                   (long long)i, (long long)c, double(out[size_t(i * d + c)]));
    }
}

// The backward's int64 ALiBi path (key tiles at distances of 2^24 and more). d = 1 so that k, v, dk and
// dv, each Nk = 2^24 + 2048 rows, are 64 MiB apiece (outputs cannot broadcast). The same negative slope
// as above puts about 12 % of each row's weight on the 2048 keys beyond 2^24: without the penalty there,
// their P, and so their dV and dK, would be 0. k and v vary with j (exact in fp32), so that dS and with
// it dK and dQ are not zero. Bounds per element from P's fp32 error (S near 1024 in steps of 2^-13, the
// forward's LSE within 1e-3): 3e-3 of the sum of the magnitudes each gradient adds up.
TEST(alibi_beyond_float_integers_backward) {
    constexpr int64_t nq = 3, nk = (int64_t(1) << 24) + 2048, heads = 1;
    const float slope = -1.f / 16384.f;
    auto key = [](int64_t j) { return float(j % 7 - 3) * 0.015625f; };
    auto value = [](int64_t j) { return float(j % 5 - 2) * 0.25f; };
    const std::vector<float> q = {0.5f, -0.75f, 1.0f}, dout = {1.0f, 0.5f, -0.25f};
    std::vector<float> kh(static_cast<size_t>(nk)), vh(static_cast<size_t>(nk));
    for (int64_t j = 0; j < nk; ++j) kh[size_t(j)] = key(j), vh[size_t(j)] = value(j);
    tu::View vq = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, nq, 1, 1),
             vk = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, nk, 1, 1),
             vv = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, nk, 1, 1),
             vo = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, nq, 1, 1),
             vdo = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, nq, 1, 1),
             vdq = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, nq, 1, 1),
             vdk = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, nk, 1, 1),
             vdv = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, 1, nk, 1, 1),
             vlse = tu::make_lse_view(tu::kContiguous, 1, 1, nq), vslope = make_nd(FSIG_DTYPE_FP32, 1, &heads, 0);
    vq.store(q), vk.store(kh), vv.store(vh), vdo.store(dout), vslope.store({slope});
    tu::poison(vo), tu::poison(vlse), tu::poison(vdq), tu::poison(vdk), tu::poison(vdv);
    const fsig_tensor tq = vq.desc(), tk = vk.desc(), tv = vv.desc(), to = vo.desc(), tdo = vdo.desc(),
                      tl = vlse.desc(), tdq = vdq.desc(), tdk = vdk.desc(), tdv = vdv.desc(), ts = vslope.desc();
    fsig_attention_params p = fsig_attention_params_default();
    p.score = FSIG_SCORE_SOFTMAX;
    REQUIRE(fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, &tl, &ts, nullptr, nullptr, nullptr, nullptr) == FSIG_OK,
            "%s", fsig_last_error());
    REQUIRE(fsig_attention_backward_ex(&p, &tq, &tk, &tv, &to, &tdo, &tl, &tdq, &tdk, &tdv, &ts, nullptr, nullptr,
                                       nullptr, nullptr, nullptr) == FSIG_OK,
            "%s", fsig_last_error());
    const std::vector<float> dq = vdq.load(), dk = vdk.load(), dv = vdv.load();
    // fp64: S_ij = q_i k_j − slope·|δ_i − j| (scale 1 at d = 1); two passes, the second per key
    double lse[nq], o[nq];
    for (int64_t i = 0; i < nq; ++i) {
        const int64_t diag = i + nk - nq;
        const double top = -double(slope) * double(diag) + 0.1;  // above every S_ij of the row
        double sum = 0, num = 0;
        for (int64_t j = 0; j < nk; ++j) {
            const double e = std::exp(double(q[size_t(i)]) * key(j) - double(slope) * double(diag - j) - top);
            sum += e, num += e * value(j);
        }
        lse[i] = top + std::log(sum), o[i] = num / sum;
    }
    double dq_want[nq] = {}, dq_size[nq] = {};
    int64_t far_keys_checked = 0;
    for (int64_t j = 0; j < nk; ++j) {
        double dk_want = 0, dk_size = 0, dv_want = 0, dv_size = 0;
        for (int64_t i = 0; i < nq; ++i) {
            const int64_t dist = i + nk - nq - j;
            const double pr = std::exp(double(q[size_t(i)]) * key(j) - double(slope) * double(std::llabs(dist)) - lse[i]);
            const double g = dout[size_t(i)], ds = pr * g * (value(j) - o[i]), ds_size = pr * std::fabs(g) * (std::fabs(value(j)) + std::fabs(o[i]));
            dv_want += pr * g, dv_size += pr * std::fabs(g);
            dk_want += ds * q[size_t(i)], dk_size += ds_size * std::fabs(q[size_t(i)]);
            dq_want[i] += ds * key(j), dq_size[i] += ds_size * std::fabs(key(j));
        }
        const double dv_err = std::fabs(double(dv[size_t(j)]) - dv_want), dk_err = std::fabs(double(dk[size_t(j)]) - dk_want);
        if (!(dv_err <= 3e-3 * dv_size + 1e-30) || !(dk_err <= 3e-3 * dk_size + 1e-30)) {
            EXPECT(false, "key %lld: dv %.8g (fp64 %.8g), dk %.8g (fp64 %.8g)", (long long)j, double(dv[size_t(j)]),
                   dv_want, double(dk[size_t(j)]), dk_want);
            return;
        }
        far_keys_checked += (nk - nq - j >= (int64_t(1) << 24)) && dv_size > 1e-6;
    }
    EXPECT(far_keys_checked >= 2000, "%lld keys beyond 2^24 with weight, want >= 2000", (long long)far_keys_checked);
    for (int64_t i = 0; i < nq; ++i)
        EXPECT(std::fabs(double(dq[size_t(i)]) - dq_want[i]) <= 3e-3 * dq_size[i] + 1e-30, "row %lld: dq %.8g, fp64 %.8g",
               (long long)i, double(dq[size_t(i)]), dq_want[i]);
}

// The far-weight tests (alibi_far_weights_count, alibi_far_weights_backward): ALiBi drives weights far below 2^-126
// and values up to 1/w bring them back to terms of size ~1, so that a far weight flushed, not scaled back or scaled by
// the wrong power of two shows. Each runs in three variants: fp32; bf16 storage (the bf16 sets' products: P and dS
// rounded to 8 bits); fp32 GQA, two query heads (each its own q) on one kv head, with a key padding mask (every 7th
// key) and log-n (λ = ln 400 / ln 64 ≈ 1.44, on q·k only). The bound is a fraction of the sum of the result's terms' magnitudes: fp32
// 1e-4 (the weights' own error is ~2e-5: x ≈ −200 in steps of 2^-16), bf16 1e-2 (P, dS and the output rounded to
// 2^-9; a far key tile of ~64 terms of size ~1 among ~180 off by a power of two still misses by ~4 %).
struct FarVariant {
    const char* name;
    int dtype;
    int64_t hq, hk;
    bool key_mask;
    int64_t logn_train;
    double bound;
};
const FarVariant kFarVariants[] = {{"fp32", FSIG_DTYPE_FP32, 1, 1, false, 0, 1e-4},
                                   {"bf16", FSIG_DTYPE_BF16, 1, 1, false, 0, 1e-2},
                                   {"fp32 gqa mask logn", FSIG_DTYPE_FP32, 2, 1, true, 64, 1e-4}};

// Uniform numbers in [-0.5, 0.5) from a seed.
struct Uniform {
    uint32_t state;
    float operator()() {
        state = state * 1664525u + 1013904223u;
        return float(state >> 8) / float(1u << 24) - 0.5f;
    }
};

// One far-weight problem (B = 1, BSHD): q and k uniform, as stored in the variant's dtype; v for the caller to design.
// x(h, i, j) = scale·λ·q_i·k_j − slope·|δ_i − j| in fp64 (bottom-right aligned positions).
struct FarProblem {
    const FarVariant& var;
    int64_t nq, nk, d;
    double slope = 0;
    std::vector<double> head_slopes;  // per query head, where given; else every head's is `slope`
    std::vector<float> q, k, v;
    Uniform uniform;

    FarProblem(const FarVariant& variant, int64_t nq_, int64_t nk_, int64_t d_, uint32_t seed)
        : var(variant), nq(nq_), nk(nk_), d(d_), q(size_t(nq * variant.hq * d)), k(size_t(nk * variant.hk * d)),
          v(size_t(nk * variant.hk * d)), uniform{seed} {
        for (float& x : q) x = uniform();
        for (float& x : k) x = uniform();
        q = view_of(nq, var.hq, q).load(), k = view_of(nk, var.hk, k).load();  // rounded to the dtype
    }
    tu::View view_of(int64_t n, int64_t heads, const std::vector<float>& values) const {
        tu::View view = tu::make_view(var.dtype, tu::kContiguous, 1, n, heads, d);
        view.store(values);
        return view;
    }
    tu::View poisoned(int64_t n, int64_t heads) const {
        tu::View view = tu::make_view(var.dtype, tu::kContiguous, 1, n, heads, d);
        tu::poison(view);
        return view;
    }
    int64_t kv_head(int64_t h) const { return h / (var.hq / var.hk); }
    float& q_at(int64_t i, int64_t h, int64_t c) { return q[size_t((i * var.hq + h) * d + c)]; }
    float& k_at(int64_t j, int64_t h, int64_t c) { return k[size_t((j * var.hk + kv_head(h)) * d + c)]; }
    float& v_at(int64_t j, int64_t h, int64_t c) { return v[size_t((j * var.hk + kv_head(h)) * d + c)]; }
    bool allowed(int64_t j) const { return !var.key_mask || j % 7 != 3; }
    double scale() const { return 1.0 / std::sqrt(double(d)); }
    double lambda() const {  // n_i counts the keys causal and window allow (DESIGN.md §4): all nk, the mask aside
        return var.logn_train > 0 ? std::max(1.0, std::log(double(nk)) / std::log(double(var.logn_train))) : 1.0;
    }
    double slope_of(int64_t h) const { return head_slopes.empty() ? slope : head_slopes[size_t(h)]; }
    double x(int64_t h, int64_t i, int64_t j) {
        double s = 0;
        for (int64_t c = 0; c < d; ++c) s += double(q_at(i, h, c)) * double(k_at(j, h, c));
        return s * scale() * lambda() - slope_of(h) * double(std::llabs(i + nk - nq - j));
    }
    // v_j = ±min(cap, max(1, 1/|w_j|)) for the weights w_j of query head 0's row `row`, rounded to the dtype
    template <class Weight>
    void design_values(int64_t row, double cap, Weight weight) {
        for (int64_t j = 0; j < nk; ++j) {
            const double w = std::fabs(weight(x(0, row, j)));
            const double mag = std::min(cap, std::max(1.0, w > 0 ? 1.0 / w : cap));
            for (int64_t c = 0; c < d; ++c) v_at(j, 0, c) = float(mag * (uniform() < 0 ? -1.0 : 1.0));
        }
        v = view_of(nk, var.hk, v).load();
    }
    // the forward_ex/backward_ex extension tensors: the slopes (one per query head, slope_of) and the mask
    struct Extensions {
        tu::View slopes;
        Bytes mask;
        fsig_tensor ts{};
        bool has_mask = false;
        const fsig_tensor* mask_t() const { return has_mask ? &mask.t : nullptr; }
    };
    Extensions extensions() const {
        Extensions e;
        e.slopes = make_nd(FSIG_DTYPE_FP32, 1, &var.hq, 0);
        std::vector<float> slopes(static_cast<size_t>(var.hq));
        for (int64_t h = 0; h < var.hq; ++h) slopes[size_t(h)] = float(slope_of(h));
        e.slopes.store(slopes);
        e.ts = e.slopes.desc();
        if (var.key_mask) {
            const int64_t shape[4] = {1, 1, 1, nk}, strides[4] = {nk, nk, nk, 1};
            std::vector<unsigned char> keep(static_cast<size_t>(nk));
            for (int64_t j = 0; j < nk; ++j) keep[size_t(j)] = allowed(j);
            e.mask.make(4, shape, strides);
            e.mask.store(keep);
            e.has_mask = true;
        }
        return e;
    }
    fsig_attention_params params(int score) const {
        fsig_attention_params p = fsig_attention_params_default();
        p.score = score;
        p.logn_train = var.logn_train;
        return p;
    }
};

// g(x) and g'(x) in fp64 as the kernels define them: softmax e^x (normalised by the caller), sigmoid with the bias
// −ln Nk, gelu and softplus with the factor 1/Nk; gelu's Φ for x < 0 is the kernels' (simd.h: Abramowitz & Stegun
// 7.1.26, whose relative error grows to 4 % by x = −14, where only values as large as these tests' make it visible).
struct FarScore {
    int score;
    double nk;
    static double gelu_tail(double x) {
        const double t = 1.0 / (1.0 + 0.23164188826636040 * std::fabs(x));
        double poly = 0.5307027145;
        for (double c : {-0.7265760135, 0.7107068705, -0.1422483680, 0.1274147960}) poly = poly * t + c;
        return poly * t * std::exp(-0.5 * x * x);
    }
    double weight(double x) const {
        switch (score) {
            case ref::kSigmoid: return 1.0 / (1.0 + std::exp(-(x - std::log(nk))));
            case ref::kGelu: return x * (x >= 0 ? 1.0 - gelu_tail(x) : gelu_tail(x)) / nk;
            case ref::kSoftplus: return std::log1p(std::exp(x)) / nk;
            default: return std::exp(x);
        }
    }
    double derivative(double x) const {  // not softmax's
        switch (score) {
            case ref::kSigmoid: { const double sg = weight(x); return sg * (1.0 - sg); }
            case ref::kGelu:
                return ((x >= 0 ? 1.0 - gelu_tail(x) : gelu_tail(x)) + x * 0.39894228040143268 * std::exp(-0.5 * x * x)) / nk;
            case ref::kSoftplus: return 1.0 / (1.0 + std::exp(-x)) / nk;
            default: return 0.0;
        }
    }
};
constexpr int kFarScores[] = {ref::kSoftmax, ref::kSigmoid, ref::kGelu, ref::kSoftplus};

// Each element of got within bound times the magnitude of its fp64 sum's terms (size) of want, plus slack
void expect_within_terms(const char* variant, int score, const char* what, const std::vector<float>& got,
                         const std::vector<double>& want, const std::vector<double>& size, double bound, double slack) {
    for (size_t e = 0; e < got.size(); ++e)
        EXPECT(std::fabs(double(got[e]) - want[e]) <= bound * size[e] + slack,
               "%s %s: %s[%zu] = %.9g, fp64 %.9g (terms %.3g)", variant, ref::score_name(score), what, e,
               double(got[e]), want[e], size[e]);
}

// Far rows (the CPU forward's far_exponent): slope 0.5 (e^-0.5 per key) and values of up to 2^126, so that every key
// within ~180 of the designed row adds about as much to O as a near one. A weight that the exp flushes (below 2^-127
// unscaled, as it was before the rows were scaled), a row not scaled back, or a floor set in the wrong scale each leave
// out or inflate terms of size ~1 among ~180. Then one NaN in a far key's k: every row of O NaN (the key is allowed
// to every row, README "NaN in, NaN out").
TEST(alibi_far_weights_count) {
    // (nq, the row v is made for, rows checked from, how many): the last rows, whose keys all come before them; the
    // first rows of a square call, whose far keys come after the near ones (softmax's far rows, whichever order its
    // key tiles take: forward_task visits ALiBi's near ones first); and rows 58–63 of Nq = 730 > Nk (bottom-right:
    // every key 262 or more away; sigmoid's weights below 2^-200 for the whole first query tile, which must not be
    // skipped: kNothingLog2 is 2^-228), v = 2^126 bringing them to terms near 2^-77
    const struct { int64_t nq, design_row, first, checked; } layouts[] = {{5, 4, 0, 5}, {400, 0, 0, 6}, {730, 63, 58, 6}};
    for (const FarVariant& var : kFarVariants)
        for (const auto& layout : layouts) {
            FarProblem fp(var, layout.nq, 400, 8, 12345);
            fp.slope = 0.5;
            for (int score : kFarScores) {
                const FarScore g{score, double(fp.nk)};
                fp.design_values(layout.design_row, 0x1p126, [&](double x) { return g.weight(x); });
                for (bool with_nan : {false, layout.nq == 5}) {
                    std::vector<float> k_stored = fp.k;
                    if (with_nan) k_stored[size_t(151 * var.hk * fp.d + 3)] = std::numeric_limits<float>::quiet_NaN();
                    const tu::View vq = fp.view_of(fp.nq, var.hq, fp.q), vk = fp.view_of(fp.nk, var.hk, k_stored),
                                   vv = fp.view_of(fp.nk, var.hk, fp.v), vo = fp.poisoned(fp.nq, var.hq);
                    const FarProblem::Extensions ext = fp.extensions();
                    const fsig_tensor tq = vq.desc(), tk = vk.desc(), tv = vv.desc(), to = vo.desc();
                    const fsig_attention_params p = fp.params(score);
                    REQUIRE(fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, nullptr, &ext.ts, nullptr, ext.mask_t(),
                                                      nullptr, nullptr) == FSIG_OK,
                            "%s", fsig_last_error());
                    const std::vector<float> out = vo.load();
                    for (int64_t h = 0; h < var.hq; ++h)
                        for (int64_t i = layout.first; i < layout.first + layout.checked; ++i) {
                            std::vector<double> w(static_cast<size_t>(fp.nk), 0.0);
                            double top = -kInf, sum = 0;
                            for (int64_t j = 0; j < fp.nk; ++j)
                                if (fp.allowed(j)) top = std::max(top, fp.x(h, i, j));
                            for (int64_t j = 0; j < fp.nk; ++j)
                                if (fp.allowed(j)) {
                                    const double x = fp.x(h, i, j);
                                    w[size_t(j)] = score == ref::kSoftmax ? std::exp(x - top) : g.weight(x);
                                    sum += w[size_t(j)];
                                }
                            for (int64_t c = 0; c < fp.d; ++c) {
                                const double got = out[size_t((i * var.hq + h) * fp.d + c)];
                                if (with_nan) {
                                    EXPECT(std::isnan(got), "%s %s, NaN in key 151: head %lld row %lld col %lld = %g, want NaN",
                                           var.name, ref::score_name(score), (long long)h, (long long)i, (long long)c, got);
                                    continue;
                                }
                                double want = 0, size = 0;
                                for (int64_t j = 0; j < fp.nk; ++j) {
                                    const double t = w[size_t(j)] * double(fp.v_at(j, h, c)) / (score == ref::kSoftmax ? sum : 1.0);
                                    want += t, size += std::fabs(t);
                                }
                                EXPECT(std::fabs(got - want) <= var.bound * size,
                                       "%s %s: head %lld row %lld col %lld = %.9g, fp64 %.9g (terms %.3g)", var.name,
                                       ref::score_name(score), (long long)h, (long long)i, (long long)c, got, want, size);
                            }
                        }
                }
            }
        }
}

// The backward's far tiles (probs_and_grads, far_tile_exponent: one 2^E per query tile × key tile): the last rows as in
// alibi_far_weights_count, d = 192 (key tiles of 64) and slopes (1/4, gelu 1/16) such that the key tile 144–207 keys
// before the last row is far with weights from 2^-52 (gelu 2^-60) down; v_j up to 2^60 (≈ 1 / w_j of the last row)
// and dO ±1, so that dP = dO·v brings those keys' dS back to terms of size ~1 in dK and dQ. Against fp64, per element,
// within the variant's bound of the sum of the magnitudes of its terms, + 1e-16: the terms of exponentials below
// 2^-127, which the exp flushes, are 0, and with |dP| up to 192·2^60 each is below 2^-59 (dV's far terms are far
// smaller: checked only against that slack).
// A tile's products not scaled back, or scaled by another tile's factor, miss by 2^27 or more.
TEST(alibi_far_weights_backward) {
    for (const FarVariant& var : kFarVariants) {
        FarProblem fp(var, 5, 400, 192, 777);
        const int64_t nq = fp.nq, nk = fp.nk, d = fp.d, hq = var.hq, hk = var.hk;
        std::vector<float> dout(size_t(nq * hq * d));
        for (float& x : dout) x = fp.uniform() < 0 ? -1.f : 1.f;
        for (int score : kFarScores) {
            const FarScore g{score, double(nk)};
            fp.slope = score == ref::kGelu ? 0.0625 : 0.25;
            fp.design_values(nq - 1, 0x1p60, [&](double x) { return g.weight(x); });
            const tu::View vq = fp.view_of(nq, hq, fp.q), vk = fp.view_of(nk, hk, fp.k), vv = fp.view_of(nk, hk, fp.v),
                           vdo = fp.view_of(nq, hq, dout), vo = fp.poisoned(nq, hq), vdq = fp.poisoned(nq, hq),
                           vdk = fp.poisoned(nk, hk), vdv = fp.poisoned(nk, hk);
            tu::View vlse = tu::make_lse_view(tu::kContiguous, 1, hq, nq);
            tu::poison(vlse);
            const FarProblem::Extensions ext = fp.extensions();
            const fsig_tensor tq = vq.desc(), tk = vk.desc(), tv = vv.desc(), to = vo.desc(), tdo = vdo.desc(),
                              tl = vlse.desc(), tdq = vdq.desc(), tdk = vdk.desc(), tdv = vdv.desc();
            const fsig_tensor* lse_arg = score == ref::kSoftmax ? &tl : nullptr;
            const fsig_attention_params p = fp.params(score);
            REQUIRE(fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, lse_arg, &ext.ts, nullptr, ext.mask_t(), nullptr,
                                              nullptr) == FSIG_OK,
                    "%s", fsig_last_error());
            REQUIRE(fsig_attention_backward_ex(&p, &tq, &tk, &tv, &to, &tdo, lse_arg, &tdq, &tdk, &tdv, &ext.ts, nullptr,
                                               ext.mask_t(), nullptr, nullptr, nullptr) == FSIG_OK,
                    "%s", fsig_last_error());
            const std::vector<float> dq = vdq.load(), dk = vdk.load(), dv = vdv.load();
            // fp64: P, dP, dS per (h, i, j); the gradients (BSHD) and the sums of their terms' magnitudes
            std::vector<double> dq_w(dq.size()), dq_s(dq.size()), dk_w(dk.size()), dk_s(dk.size()), dv_w(dv.size()),
                dv_s(dv.size());
            const double sl = fp.scale() * fp.lambda();
            for (int64_t h = 0; h < hq; ++h)
                for (int64_t i = 0; i < nq; ++i) {
                    std::vector<double> P(static_cast<size_t>(nk), 0.0), dP(static_cast<size_t>(nk), 0.0);
                    double top = -kInf, sum = 0;
                    for (int64_t j = 0; j < nk; ++j)
                        if (fp.allowed(j)) top = std::max(top, fp.x(h, i, j));
                    for (int64_t j = 0; j < nk; ++j) {
                        if (!fp.allowed(j)) continue;
                        const double x = fp.x(h, i, j);
                        P[size_t(j)] = score == ref::kSoftmax ? std::exp(x - top) : g.weight(x);
                        sum += P[size_t(j)];
                        for (int64_t c = 0; c < d; ++c)
                            dP[size_t(j)] += double(dout[size_t((i * hq + h) * d + c)]) * double(fp.v_at(j, h, c));
                    }
                    double D = 0, D_size = 0;
                    if (score == ref::kSoftmax)
                        for (int64_t j = 0; j < nk; ++j)
                            P[size_t(j)] /= sum, D += P[size_t(j)] * dP[size_t(j)], D_size += P[size_t(j)] * std::fabs(dP[size_t(j)]);
                    for (int64_t j = 0; j < nk; ++j) {
                        if (!fp.allowed(j)) continue;
                        const double pj = P[size_t(j)], dpj = dP[size_t(j)];
                        const double ds = score == ref::kSoftmax ? pj * (dpj - D) : g.derivative(fp.x(h, i, j)) * dpj;
                        const double ds_size = score == ref::kSoftmax ? pj * (std::fabs(dpj) + D_size) : std::fabs(ds);
                        for (int64_t c = 0; c < d; ++c) {
                            const size_t qe = size_t((i * hq + h) * d + c), ke = size_t((j * hk + fp.kv_head(h)) * d + c);
                            const double qc = fp.q[qe], kc = fp.k[ke], gc = dout[qe];
                            dv_w[ke] += pj * gc, dv_s[ke] += std::fabs(pj * gc);
                            dk_w[ke] += sl * ds * qc, dk_s[ke] += sl * ds_size * std::fabs(qc);
                            dq_w[qe] += sl * ds * kc, dq_s[qe] += sl * ds_size * std::fabs(kc);
                        }
                    }
                }
            expect_within_terms(var.name, score, "dq", dq, dq_w, dq_s, var.bound, 1e-16);
            expect_within_terms(var.name, score, "dk", dk, dk_w, dk_s, var.bound, 1e-16);
            expect_within_terms(var.name, score, "dv", dv, dv_w, dv_s, var.bound, 1e-16);
        }
    }
}

// fp's forward and backward (one head) with an additive bias [1, 1, nq, nk] and the factor 1 (alpha 0, sigmoid bias
// 0: FarScore{score, 1}); O, dQ, dK, dV against fp64 per element, within the variant's bound of the sum of their terms'
// magnitudes (expect_within_terms)
void check_far_bias_call(FarProblem& fp, int score, const std::vector<float>& bias, const std::vector<float>& dout) {
    const FarVariant& var = fp.var;
    REQUIRE(var.hq == 1 && var.hk == 1 && !var.key_mask && var.logn_train == 0 && fp.slope == 0,
            "check_far_bias_call: one head, no mask, log-n or slope");
    const int64_t nq = fp.nq, nk = fp.nk, d = fp.d;
    const FarScore g{score, 1.0};
    const int64_t bias_shape[4] = {1, 1, nq, nk};
    tu::View vb = make_nd(FSIG_DTYPE_FP32, 4, bias_shape, 0);
    vb.store(bias);
    const tu::View vq = fp.view_of(nq, 1, fp.q), vk = fp.view_of(nk, 1, fp.k), vv = fp.view_of(nk, 1, fp.v),
                   vdo = fp.view_of(nq, 1, dout), vo = fp.poisoned(nq, 1), vdq = fp.poisoned(nq, 1),
                   vdk = fp.poisoned(nk, 1), vdv = fp.poisoned(nk, 1);
    const fsig_tensor tq = vq.desc(), tk = vk.desc(), tv = vv.desc(), to = vo.desc(), tdo = vdo.desc(), tb = vb.desc(),
                      tdq = vdq.desc(), tdk = vdk.desc(), tdv = vdv.desc();
    fsig_attention_params p = fp.params(score);
    if (score == ref::kSigmoid) p.sigmoid_bias = 0.f;
    else p.alpha = 0.f;
    REQUIRE(fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, nullptr, nullptr, &tb, nullptr, nullptr, nullptr) == FSIG_OK,
            "%s", fsig_last_error());
    REQUIRE(fsig_attention_backward_ex(&p, &tq, &tk, &tv, &to, &tdo, nullptr, &tdq, &tdk, &tdv, nullptr, &tb, nullptr,
                                       nullptr, nullptr, nullptr) == FSIG_OK,
            "%s", fsig_last_error());
    const std::vector<float> out = vo.load(), dq = vdq.load(), dk = vdk.load(), dv = vdv.load();
    std::vector<double> o_w(out.size()), o_s(out.size()), dq_w(dq.size()), dq_s(dq.size()), dk_w(dk.size()),
        dk_s(dk.size()), dv_w(dv.size()), dv_s(dv.size());
    const double sc = fp.scale();
    for (int64_t i = 0; i < nq; ++i)
        for (int64_t j = 0; j < nk; ++j) {
            const double x = fp.x(0, i, j) + double(bias[size_t(i * nk + j)]), w = g.weight(x);
            double dp = 0;
            for (int64_t c = 0; c < d; ++c) dp += double(dout[size_t(i * d + c)]) * double(fp.v_at(j, 0, c));
            const double ds = g.derivative(x) * dp;
            for (int64_t c = 0; c < d; ++c) {
                const size_t qe = size_t(i * d + c), ke = size_t(j * d + c);
                const double terms[4] = {w * fp.v_at(j, 0, c), w * dout[qe], sc * ds * fp.q[qe], sc * ds * fp.k[ke]};
                o_w[qe] += terms[0], o_s[qe] += std::fabs(terms[0]);
                dv_w[ke] += terms[1], dv_s[ke] += std::fabs(terms[1]);
                dk_w[ke] += terms[2], dk_s[ke] += std::fabs(terms[2]);
                dq_w[qe] += terms[3], dq_s[qe] += std::fabs(terms[3]);
            }
        }
    expect_within_terms(var.name, score, "out", out, o_w, o_s, var.bound, 1e-30);
    expect_within_terms(var.name, score, "dq", dq, dq_w, dq_s, var.bound, 1e-30);
    expect_within_terms(var.name, score, "dk", dk, dk_w, dk_s, var.bound, 1e-30);
    expect_within_terms(var.name, score, "dv", dv, dv_w, dv_s, var.bound, 1e-30);
}

// The tiny floor (kernels.inc, tiny_floor_ok): a tile that is not far whose odd keys' exponentials (sigmoid's e^y,
// softplus' e^x, gelu's e^(-x²/2)) lie between 2^-124 and 2^-121 — a bias puts them there, beside even keys of weight
// ~2^-30 (so that the tile is not far) — and one operand large enough that those keys add terms of size ~1: values of
// ±2^121 on them (±2^22 on the others: a span the bf16 products take) to O, dK and dQ; or dO of ±2^121 to dV (values
// ±2^-100, so that dP stays small); or q of up to 2^108 (k below 2^-113) to dK — the odd keys' dV and dK rows are
// made of those terms alone. The operands' bound must send such a call to the exact weights: a floor taken regardless
// drops those terms. fp32 (and bf16 for large values: the bf16 sets' products), 100 queries (two query tiles: the
// forward's shared packing), 100 keys (one key tile), d = 8, |scale·q·k| < 0.03, with large q < 0.07 (the
// exponentials stay within 2^-125 .. 2^-120), the factor 1 (alpha 0, sigmoid bias 0). Against fp64 per element, within the variant's bound
// (alibi_far_weights_count) of the sum of its terms' magnitudes.
TEST(tiny_floor_exact_for_large_values) {
    const int64_t nq = 100, nk = 100, d = 8;
    enum Large { kValues, kGradients, kQueries };
    const struct { const FarVariant& var; Large large; } cases[] = {
        {kFarVariants[0], kValues}, {kFarVariants[1], kValues}, {kFarVariants[0], kGradients}, {kFarVariants[0], kQueries}};
    for (const auto& tc : cases)
        for (int score : {ref::kSigmoid, ref::kGelu, ref::kSoftplus}) {
            const FarVariant& var = tc.var;
            FarProblem fp(var, nq, nk, d, 4242);
            const float q_mul = tc.large == kQueries ? 0x1p109f : 0.2f, k_mul = tc.large == kQueries ? 0x1p-110f * 0.2f : 0.2f;
            for (float& x : fp.q) x *= q_mul;
            for (float& x : fp.k) x *= k_mul;
            fp.q = fp.view_of(nq, 1, fp.q).load(), fp.k = fp.view_of(nk, 1, fp.k).load();  // rounded to the dtype
            const double x_tiny = score == ref::kGelu ? -13.03 : -84.9;  // exponential 2^-122.5
            const double x_near = score == ref::kGelu ? -6.4 : -20.8;    // weight ~2^-30
            std::vector<float> bias(size_t(nq * nk)), dout(size_t(nq * d));
            for (int64_t i = 0; i < nq; ++i)
                for (int64_t j = 0; j < nk; ++j) bias[size_t(i * nk + j)] = float(j % 2 == 1 ? x_tiny : x_near);
            for (int64_t j = 0; j < nk; ++j)
                for (int64_t c = 0; c < d; ++c) {
                    const double mag = tc.large == kGradients ? 0x1p-100 : tc.large != kValues ? 1.0 : j % 2 == 1 ? 0x1p121 : 0x1p22;
                    fp.v_at(j, 0, c) = float(mag * (fp.uniform() < 0 ? -1.0 : 1.0));
                }
            for (float& x : dout) x = float((tc.large == kGradients ? 0x1p121 : 1.0) * (fp.uniform() < 0 ? -1.0 : 1.0));
            check_far_bias_call(fp, score, bias, dout);
        }
}

// The backward's dQ accumulator sums each query tile's shares in the scale of the least far exponent E added so far
// (kernels.inc, DqAccumulator::exps). A bias [Nq, Nk] sets x per key tile (128 keys) — weights ~2^-72 ("far", E ~65),
// ~2^-100 ("farther", E ~93) or x ~0 ("near") — the same for every query row, one call per pattern: far, far, far (the
// sums kept in E's scale and scaled back when stored); far, near, farther (scaled down when the near share comes, the
// farther one added times 2^-93); farther, far, farther (scaled from 93 to 65, stored from 65). The values' magnitude per
// key tile about 1 over its weights (1 on the near tile), so that every share is of about the same size. Nq = 130 (a
// ragged query tile), Nk = 384 (whole key tiles: a ragged one is never far in a bias call, its padding columns counting
// in the bound). fp32 and bf16, sigmoid, gelu, softplus, against fp64 per element: a share left out, or a share or
// the sums in the wrong scale, miss by far more than the bound.
TEST(dq_far_shares_in_their_scale) {
    const int64_t nq = 130, nk = 384, d = 16;
    enum Kind { kNear, kFar, kFarther };
    const Kind patterns[3][3] = {{kFar, kFar, kFar}, {kFar, kNear, kFarther}, {kFarther, kFar, kFarther}};
    const double value_mag[3] = {1.0, 0x1p72, 0x1p100};  // (per Kind)
    for (const FarVariant* var : {&kFarVariants[0], &kFarVariants[1]})
        for (const auto& pattern : patterns)
            for (int score : {ref::kSigmoid, ref::kGelu, ref::kSoftplus}) {
                FarProblem fp(*var, nq, nk, d, 515);
                const bool gelu = score == ref::kGelu;
                const double x_of[3] = {0.0, gelu ? -10.0 : -50.0, gelu ? -11.8 : -69.0};  // (per Kind)
                std::vector<float> bias(size_t(nq * nk)), dout(size_t(nq * d));
                for (int64_t i = 0; i < nq; ++i)
                    for (int64_t j = 0; j < nk; ++j) bias[size_t(i * nk + j)] = float(x_of[pattern[j / 128]]);
                for (int64_t j = 0; j < nk; ++j)
                    for (int64_t c = 0; c < d; ++c)
                        fp.v_at(j, 0, c) = float(value_mag[pattern[j / 128]] * (fp.uniform() < 0 ? -1.0 : 1.0));
                for (float& x : dout) x = fp.uniform() < 0 ? -1.f : 1.f;
                check_far_bias_call(fp, score, bias, dout);
            }
}

// ALiBi's tiles that add nothing (kernels.inc kNothingLog2: every weight below 2^-228, so that the far rows' and tiles'
// scaling sets every P and dS to 0; relu's and relu2's: every x <= 0) are skipped: the forward's P V, the backward's
// dV, dK and dQ products. Slopes 1 and 1/2 over 600 keys leave most tiles so. Against fp64 (run_case, the §6 rule), forward and
// backward; then the same call with one NaN in a far key's v (key 20, column 5), where the tiles holding that key
// must be computed: O's column 5 NaN in every row that may see the key, dK's row 20 and dQ's rows that see it NaN,
// and every other element the bits of the call without the NaN (a skipped tile adds what the computed one does); a
// NaN in that key's k instead: O's rows that see it NaN, the others their bits —
// but where the tile products take 0 times the NaN (tu::NanRules: O's column 5 in rows that share a tile with the key
// without seeing it; softmax's dQ in those rows, through D = rowsum(dO ∘ O)). Softmax's NaN rows of O make D, and
// so every dS of theirs, NaN: dK NaN throughout (the last rows see every key), far tiles included.
struct AlibiGrads {
    std::vector<float> out, dq, dk, dv;
};
// forward, then backward with its O and LSE (where nan_row >= 0, with a NaN at that row, head 0: O's column 3, or
// with nan_lse the LSE)
AlibiGrads alibi_call(const Spec& s, int dtype, const std::vector<float>& q, const std::vector<float>& k,
                      const std::vector<float>& v, const std::vector<float>& dout, int64_t nan_row = -1,
                      bool nan_lse = false) {
    const bool softmax = s.score == ref::kSoftmax;
    auto view = [&](int64_t n, int64_t heads, const std::vector<float>* values) {
        tu::View x = tu::make_view(dtype, tu::kContiguous, s.B, n, heads, s.d);
        if (values != nullptr) x.store(*values);
        else tu::poison(x);
        return x;
    };
    const tu::View vq = view(s.Nq, s.Hq, &q), vk = view(s.Nk, s.Hk, &k), vv = view(s.Nk, s.Hk, &v),
                   vdo = view(s.Nq, s.Hq, &dout), vo = view(s.Nq, s.Hq, nullptr), vdq = view(s.Nq, s.Hq, nullptr),
                   vdk = view(s.Nk, s.Hk, nullptr), vdv = view(s.Nk, s.Hk, nullptr);
    tu::View vl = tu::make_lse_view(tu::kContiguous, s.B, s.Hq, s.Nq);
    tu::poison(vl);
    const Extras e = make_extras(s, dtype);
    const fsig_tensor tq = vq.desc(), tk = vk.desc(), tv = vv.desc(), to = vo.desc(), tdo = vdo.desc(),
                      tl = vl.desc(), tdq = vdq.desc(), tdk = vdk.desc(), tdv = vdv.desc();
    const fsig_attention_params p = params_of(s);
    const fsig_tensor* lse = softmax ? &tl : nullptr;
    AlibiGrads r;
    const bool forward_ok =
        fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, lse, e.slopes_t(), nullptr, e.mask_t(), nullptr, nullptr) == FSIG_OK;
    if (forward_ok && nan_row >= 0) {
        const tu::View& x = nan_lse ? vl : vo;
        std::vector<float> values = x.load();
        values[size_t(nan_lse ? nan_row : nan_row * s.Hq * s.d + 3)] = std::numeric_limits<float>::quiet_NaN();
        x.store(values);
    }
    if (!forward_ok || fsig_attention_backward_ex(&p, &tq, &tk, &tv, &to, &tdo, lse, &tdq, &tdk, &tdv, e.slopes_t(),
                                                  nullptr, e.mask_t(), nullptr, nullptr, nullptr) != FSIG_OK) {
        EXPECT(false, "%s", fsig_last_error());
        return r;
    }
    r.out = vo.load(), r.dq = vdq.load(), r.dk = vdk.load(), r.dv = vdv.load();
    return r;
}

// The norm bound (kernels.inc, largest_norm): relu with q of size ~1e-24, whose squares lie below fp32's range, and
// ALiBi slopes of the scores' own size (1e-26 a key), so that keys tens of tiles from the diagonal still score above
// 0: a norm summed without scaling (0, or its floor 2^-100) finds those tiles adding nothing. Against fp64.
TEST(norm_bound_tiny_rows) {
    for (int64_t d : {int64_t(8), int64_t(64)}) {
        FarProblem fp(kFarVariants[0], 160, 160, d, 4242);
        fp.slope = 1e-26;
        for (float& x : fp.q) x *= 1e-24f;
        for (float& x : fp.v) x = fp.uniform();
        const tu::View vq = fp.view_of(fp.nq, 1, fp.q), vk = fp.view_of(fp.nk, 1, fp.k), vv = fp.view_of(fp.nk, 1, fp.v),
                       vo = fp.poisoned(fp.nq, 1);
        const FarProblem::Extensions ext = fp.extensions();
        const fsig_tensor tq = vq.desc(), tk = vk.desc(), tv = vv.desc(), to = vo.desc();
        const fsig_attention_params p = fp.params(ref::kRelu);
        REQUIRE(fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, nullptr, &ext.ts, nullptr, nullptr, nullptr, nullptr) ==
                    FSIG_OK,
                "%s", fsig_last_error());
        std::vector<double> want(fp.q.size(), 0.0), size(fp.q.size(), 0.0);
        int64_t positive = 0;
        for (int64_t i = 0; i < fp.nq; ++i)
            for (int64_t j = 0; j < fp.nk; ++j) {
                const double w = std::max(0.0, fp.x(0, i, j)) / double(fp.nk);
                positive += w > 0;
                for (int64_t c = 0; c < d; ++c) {
                    const double t = w * double(fp.v_at(j, 0, c));
                    want[size_t(i * d + c)] += t, size[size_t(i * d + c)] += std::fabs(t);
                }
            }
        EXPECT(positive >= 500, "d = %lld: %lld positive scores, want >= 500", (long long)d, (long long)positive);
        expect_within_terms("fp32 tiny q", ref::kRelu, "out", vo.load(), want, size, 1e-4, 0.0);
    }
}

// The norm bound where it is tight: every q and k a multiple of one vector u, so that s_ij = ‖q_i‖‖k_j‖·scale, with
// one heavy query row late in each tile (‖q‖ 3.2× the others') and heavy keys (20×) at one lane of each panel and
// the last key (lane 30 of the ragged tile's last panel), so that the norms must cover every row and lane; relu's
// tiles whose least penalty lies within 30 % of their largest s (a bound of 0.7 times the norms would skip them)
// hold positive scores that must be added, forward and backward. GQA: two query heads of one kv head, the second
// with a smaller slope (a bound from the group's first slope would skip its tiles). (No x lies near 0 at an integer
// distance, where relu's derivative would jump with the rounding.)
TEST(norm_bound_aligned_rows) {
    const FarVariant gqa{"fp32 gqa", FSIG_DTYPE_FP32, 2, 1, false, 0, 1e-4};
    for (const FarVariant* var : {&kFarVariants[0], &kFarVariants[1], &gqa})
        for (int64_t d : {int64_t(40), int64_t(64)}) {
            FarProblem fp(*var, 300, 287, d, 5151 + uint32_t(d));
            const int64_t hq = var->hq;
            fp.head_slopes = hq == 1 ? std::vector<double>{0.7} : std::vector<double>{0.7, 0.27};
            std::vector<double> u(static_cast<size_t>(d));
            double uu = 0;
            for (double& x : u) x = 2.0 + fp.uniform(), uu += x * x;
            const double to_sixty = std::sqrt(60.0 / (uu * fp.scale()));  // s = 60 for a = b = 1
            for (int64_t i = 0; i < fp.nq; ++i)
                for (int64_t h = 0; h < hq; ++h)
                    for (int64_t c = 0; c < d; ++c)
                        fp.q_at(i, h, c) = float((i % 64 == 60 ? 1.0 : 0.31) * to_sixty * u[size_t(c)]);
            // heavy keys at lane 1 of the panels of keys [128, 256), lane 29 elsewhere (a tile's or a panel's first
            // lanes alone miss them), and the last key
            auto heavy_key = [&](int64_t j) { return j % 32 == (j >= 128 && j < 256 ? 1 : 29) || j == fp.nk - 1; };
            for (int64_t j = 0; j < fp.nk; ++j)
                for (int64_t c = 0; c < d; ++c) fp.k_at(j, 0, c) = float((heavy_key(j) ? 1.0 : 0.05) * to_sixty * u[size_t(c)]);
            for (float& x : fp.v) x = fp.uniform();
            fp.q = fp.view_of(fp.nq, hq, fp.q).load();  // rounded to the dtype
            fp.k = fp.view_of(fp.nk, 1, fp.k).load();
            fp.v = fp.view_of(fp.nk, 1, fp.v).load();
            std::vector<float> dout(fp.q.size());
            for (float& x : dout) x = fp.uniform();
            dout = fp.view_of(fp.nq, hq, dout).load();
            const tu::View vq = fp.view_of(fp.nq, hq, fp.q), vk = fp.view_of(fp.nk, 1, fp.k),
                           vv = fp.view_of(fp.nk, 1, fp.v), vdo = fp.view_of(fp.nq, hq, dout),
                           vo = fp.poisoned(fp.nq, hq), vdq = fp.poisoned(fp.nq, hq), vdk = fp.poisoned(fp.nk, 1),
                           vdv = fp.poisoned(fp.nk, 1);
            const FarProblem::Extensions ext = fp.extensions();
            const fsig_tensor tq = vq.desc(), tk = vk.desc(), tv = vv.desc(), to = vo.desc(), tdo = vdo.desc(),
                              tdq = vdq.desc(), tdk = vdk.desc(), tdv = vdv.desc();
            const fsig_attention_params p = fp.params(ref::kRelu);
            REQUIRE(fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, nullptr, &ext.ts, nullptr, nullptr, nullptr,
                                              nullptr) == FSIG_OK,
                    "%s", fsig_last_error());
            REQUIRE(fsig_attention_backward_ex(&p, &tq, &tk, &tv, &to, &tdo, nullptr, &tdq, &tdk, &tdv, &ext.ts, nullptr,
                                               nullptr, nullptr, nullptr, nullptr) == FSIG_OK,
                    "%s", fsig_last_error());
            // fp64: out, and dQ, dK, dV (relu's where-form: dS = dP / Nk where x > 0; dK, dV summed over the heads),
            // with their terms' magnitudes
            std::vector<double> want(fp.q.size(), 0.0), size(fp.q.size(), 0.0), dq_w(fp.q.size(), 0.0),
                dq_s(fp.q.size(), 0.0), dk_w(fp.k.size(), 0.0), dk_s(fp.k.size(), 0.0), dv_w(fp.k.size(), 0.0),
                dv_s(fp.k.size(), 0.0);
            std::vector<int64_t> beyond(static_cast<size_t>(hq), 0);  // per head: positive scores past 0.7 of the bound
            for (int64_t h = 0; h < hq; ++h)
                for (int64_t i = 0; i < fp.nq; ++i)
                    for (int64_t j = 0; j < fp.nk; ++j) {
                        const double x = fp.x(h, i, j), w = std::max(0.0, x) / double(fp.nk);
                        const double penalty = fp.slope_of(h) * double(std::llabs(i + fp.nk - fp.nq - j));
                        beyond[size_t(h)] += x > 0 && penalty > 0.7 * (x + penalty);
                        if (!(x > 0)) continue;
                        const size_t q0 = size_t((i * hq + h) * d), k0 = size_t(j * d);
                        double dp = 0;
                        for (int64_t c = 0; c < d; ++c)
                            dp += double(dout[q0 + size_t(c)]) * double(fp.v[k0 + size_t(c)]);
                        const double ds = dp / double(fp.nk) * fp.scale();
                        for (int64_t c = 0; c < d; ++c) {
                            const size_t qe = q0 + size_t(c), ke = k0 + size_t(c);
                            const double t = w * double(fp.v[ke]);
                            want[qe] += t, size[qe] += std::fabs(t);
                            dv_w[ke] += w * dout[qe], dv_s[ke] += std::fabs(w * dout[qe]);
                            dk_w[ke] += ds * fp.q[qe], dk_s[ke] += std::fabs(ds * fp.q[qe]);
                            dq_w[qe] += ds * fp.k[ke], dq_s[qe] += std::fabs(ds * fp.k[ke]);
                        }
                    }
            for (int64_t h = 0; h < hq; ++h)
                EXPECT(beyond[size_t(h)] >= 500,
                       "%s, d = %lld, head %lld: %lld positive scores past 0.7 of the bound, want >= 500", var->name,
                       (long long)d, (long long)h, (long long)beyond[size_t(h)]);
            expect_within_terms(var->name, ref::kRelu, "out", vo.load(), want, size, var->bound, 0.0);
            expect_within_terms(var->name, ref::kRelu, "dq", vdq.load(), dq_w, dq_s, var->bound, 1e-16);
            expect_within_terms(var->name, ref::kRelu, "dk", vdk.load(), dk_w, dk_s, var->bound, 1e-16);
            expect_within_terms(var->name, ref::kRelu, "dv", vdv.load(), dv_w, dv_s, var->bound, 1e-16);
        }
}

// Rows far for their scores, not their penalties: q_i = c·u, k_j = −c·u, so every x of the last row lies near
// −85 (gelu: −12) while the slopes are small (0.04, 0.015) — tiles whose penalties alone never make a row far. The
// row's weights (below 2^-120) must still be summed exactly: far_rows is called where a row's probe shows it not near.
TEST(far_rows_for_their_scores) {
    for (int score : {ref::kSigmoid, ref::kSoftplus, ref::kGelu}) {
        const int64_t d = 64;
        FarProblem fp(kFarVariants[0], 128, 256, d, 99);
        fp.slope = score == ref::kGelu ? 0.015 : 0.04;
        const double s0 = score == ref::kGelu ? 12.0 : 85.0;
        std::vector<double> u(static_cast<size_t>(d));
        double uu = 0;
        for (double& x : u) x = 2.0 + fp.uniform(), uu += x * x;
        const double c = std::sqrt(s0 / (uu * fp.scale()));
        for (int64_t i = 0; i < fp.nq; ++i)
            for (int64_t e = 0; e < d; ++e) fp.q_at(i, 0, e) = float(c * u[size_t(e)]);
        for (int64_t j = 0; j < fp.nk; ++j)
            for (int64_t e = 0; e < d; ++e) fp.k_at(j, 0, e) = float(-c * u[size_t(e)]);
        fp.q = fp.view_of(fp.nq, 1, fp.q).load(), fp.k = fp.view_of(fp.nk, 1, fp.k).load();
        const FarScore g{score, double(fp.nk)};
        fp.design_values(fp.nq - 1, 0x1p126, [&](double x) { return g.weight(x); });
        const tu::View vq = fp.view_of(fp.nq, 1, fp.q), vk = fp.view_of(fp.nk, 1, fp.k), vv = fp.view_of(fp.nk, 1, fp.v),
                       vo = fp.poisoned(fp.nq, 1);
        const FarProblem::Extensions ext = fp.extensions();
        const fsig_tensor tq = vq.desc(), tk = vk.desc(), tv = vv.desc(), to = vo.desc();
        const fsig_attention_params p = fp.params(score);
        REQUIRE(fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, nullptr, &ext.ts, nullptr, nullptr, nullptr,
                                          nullptr) == FSIG_OK,
                "%s", fsig_last_error());
        const std::vector<float> out = vo.load();
        const int64_t i = fp.nq - 1;
        std::vector<float> row_got(static_cast<size_t>(d));
        std::vector<double> row_want(static_cast<size_t>(d), 0.0), row_size(static_cast<size_t>(d), 0.0);
        for (int64_t e = 0; e < d; ++e) {
            for (int64_t j = 0; j < fp.nk; ++j) {
                const double t = g.weight(fp.x(0, i, j)) * double(fp.v_at(j, 0, e));
                row_want[size_t(e)] += t, row_size[size_t(e)] += std::fabs(t);
            }
            row_got[size_t(e)] = out[size_t(i * d + e)];
        }
        EXPECT(row_size[0] > 0, "%s: the row's terms are 0", ref::score_name(score));
        expect_within_terms("fp32 far scores", score, "out (last row)", row_got, row_want, row_size, 1e-4, 0.0);
    }
}

TEST(alibi_skipped_tiles) {
    constexpr int64_t kNanKey = 20, kNanCol = 5;
    int idx = 0;
    for (int dtype : {ref::kFp32, ref::kBf16})
        for (int score : {ref::kSoftmax, ref::kSigmoid, ref::kGelu, ref::kSoftplus, ref::kRelu, ref::kRelu2})
            for (bool causal : {false, true}) {
                MCase c;
                Spec& s = c.s;
                s.B = 1, s.Nq = 600, s.Nk = 600, s.Hq = 2, s.Hk = 1, s.d = 32, s.score = score, s.causal = causal;
                s.alibi_slopes = {1.0, 0.5};
                // fp32 causal calls also with a key padding mask (every 5th key from key 3; key 20 stays): its -inf
                // scores, which no longer keep a tile from being skipped, against fp64 and the NaN rules
                const bool padded = causal && dtype == ref::kFp32;
                if (padded) {
                    s.mask_b = s.mask_h = s.mask_q = 1;
                    s.mask.resize(static_cast<size_t>(s.Nk));
                    for (int64_t j = 0; j < s.Nk; ++j) s.mask[size_t(j)] = j % 5 != 3;
                }
                auto allowed = [&](int64_t j) { return !padded || j % 5 != 3; };
                c.dtype = dtype;
                c.seed = 4000 + uint64_t(idx++);
                c.name = th::format("alibi_skipped_%s_%s%s%s", ref::dtype_name(dtype), ref::score_name(score),
                                    causal ? "_causal" : "", padded ? "_padded" : "");
                run_case(c);

                ref::Rng rng(c.seed);
                auto draw = [&](int64_t n) { return ref::random_values(rng, n, dtype); };
                const std::vector<float> q = draw(s.q_elems()), k = draw(s.kv_elems()), dout = draw(s.q_elems());
                std::vector<float> v = draw(s.kv_elems());
                const AlibiGrads clean = alibi_call(s, dtype, q, k, v, dout);
                v[size_t(kNanKey * s.Hk * s.d + kNanCol)] = std::numeric_limits<float>::quiet_NaN();
                const AlibiGrads nan = alibi_call(s, dtype, q, k, v, dout);
                if (clean.out.empty() || nan.out.empty()) continue;
                // row i sees key 20 unless causal puts it after i (Nq = Nk: δ_i = i)
                auto sees = [&](int64_t i) { return !causal || i >= kNanKey; };
                const bool softmax = score == ref::kSoftmax;
                // relu, relu2: dS = 0 where x <= 0 whatever dP (the where-form), so a NaN in dP reaches dQ and dK only
                // through the pairs with x > 0 (tu::NanRules): open
                const bool clipped = score == ref::kRelu || score == ref::kRelu2;
                enum Want { kSameBits, kNan, kOpen };
                // a key the mask hides: softmax's dS there is P·(dP − D) = 0 times a NaN D (as PyTorch's formula gives)
                auto masked_softmax = [&](int64_t j, Want want) { return allowed(j) ? want : kOpen; };
                auto same_bits = [](float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; };
                int misses = 0;
                auto expect = [&](const char* what, const std::vector<float>& got, const std::vector<float>& base,
                                  size_t e, Want want) {
                    if (want == kOpen) return;
                    const bool want_nan = want == kNan;
                    const bool ok = want_nan ? std::isnan(got[e]) : same_bits(got[e], base[e]);
                    if (!ok && ++misses <= 5)
                        EXPECT(false, "%s: %s[%zu] = %.9g, want %s (%.9g without the NaN)", c.name.c_str(), what, e,
                               double(got[e]), want_nan ? "NaN" : "its bits", double(base[e]));
                };
                for (int64_t i = 0; i < s.Nq; ++i)
                    for (int64_t h = 0; h < s.Hq; ++h)
                        for (int64_t col = 0; col < s.d; ++col) {
                            const size_t e = size_t((i * s.Hq + h) * s.d + col);
                            expect("out", nan.out, clean.out, e, col != kNanCol ? kSameBits : sees(i) ? kNan : kOpen);
                            expect("dq", nan.dq, clean.dq, e, sees(i) ? (clipped ? kOpen : kNan) : softmax ? kOpen : kSameBits);
                        }
                for (int64_t j = 0; j < s.Nk; ++j)
                    for (int64_t col = 0; col < s.d; ++col) {
                        const size_t e = size_t(j * s.d + col);  // (Hk = 1)
                        expect("dk", nan.dk, clean.dk, e,
                               j == kNanKey && clipped ? kOpen : j == kNanKey || softmax ? masked_softmax(j, kNan) : kSameBits);
                        expect("dv", nan.dv, clean.dv, e, kSameBits);
                    }
                EXPECT(misses == 0, "%s: %d elements wrong with the NaN", c.name.c_str(), misses);
                // the NaN in k instead (its S): O's rows that see key 20 NaN, the others their bits
                v[size_t(kNanKey * s.Hk * s.d + kNanCol)] = v[size_t(kNanKey * s.Hk * s.d + kNanCol + 1)];
                std::vector<float> k_nan = k;
                k_nan[size_t(kNanKey * s.Hk * s.d + kNanCol)] = std::numeric_limits<float>::quiet_NaN();
                const AlibiGrads base_k = alibi_call(s, dtype, q, k, v, dout), nan_k = alibi_call(s, dtype, q, k_nan, v, dout);
                if (base_k.out.empty() || nan_k.out.empty()) continue;
                misses = 0;
                for (int64_t i = 0; i < s.Nq; ++i)
                    for (int64_t e = i * s.Hq * s.d; e < (i + 1) * s.Hq * s.d; ++e)
                        expect("out (NaN in k)", nan_k.out, base_k.out, size_t(e), sees(i) ? kNan : kSameBits);
                EXPECT(misses == 0, "%s: %d elements wrong with the NaN in k", c.name.c_str(), misses);
                if (!softmax) continue;
                // softmax: a NaN handed to the backward at row 300, head 0 — in O, so D of that row alone: its dS NaN
                // in every tile, far ones too, dK NaN wherever the row sees; or in the LSE (D finite): that row's P
                // NaN, dK and dV NaN wherever it sees. Its dQ row NaN, the rest unchanged either way.
                const AlibiGrads base = alibi_call(s, dtype, q, k, v, dout);
                if (base.out.empty()) continue;
                for (bool in_lse : {false, true}) {
                    const AlibiGrads got = alibi_call(s, dtype, q, k, v, dout, 300, in_lse);
                    if (got.out.empty()) continue;
                    const char* where = in_lse ? "the LSE" : "O";
                    misses = 0;
                    for (int64_t i = 0; i < s.Nq; ++i)
                        for (int64_t h = 0; h < s.Hq; ++h)
                            for (int64_t col = 0; col < s.d; ++col)
                                expect("dq", got.dq, base.dq, size_t((i * s.Hq + h) * s.d + col),
                                       i == 300 && h == 0 ? kNan : kSameBits);
                    for (int64_t j = 0; j < s.Nk; ++j)
                        for (int64_t col = 0; col < s.d; ++col) {
                            const size_t e = size_t(j * s.d + col);
                            const Want seen = !causal || j <= 300 ? masked_softmax(j, kNan) : kSameBits;
                            expect("dk", got.dk, base.dk, e, seen);
                            expect("dv", got.dv, base.dv, e, in_lse ? seen : kSameBits);
                        }
                    EXPECT(misses == 0, "%s: %d elements wrong with the NaN in %s", c.name.c_str(), misses, where);
                }
            }
}

// The tiles the norm bound skips (kernels.inc: norm_bound_ok, its gate norm_wanted and the reaches), counted by the
// kernels (native/cpu/work_counters.h): a skip changes no result, so no test above sees a lost one. Steep slopes (2 and
// 1 with GQA; 2 for one head) put most tile pairs far beyond any score: each allowed pair whose least penalty, less the
// product of its tiles' largest ‖q_i·scale‖ and ‖k_j‖, exceeds 170 (e^-170 < 2^-245: every score adds nothing;
// softmax's less also its rows' maxima, each at least −max‖q·scale‖·max‖k‖ at the diagonal key) must be skipped before
// its product, forward and backward. Softmax's forward visits a query tile's key tiles from the one of its middle
// diagonal, then those right of it, then those left of it backwards (near_first): with Nq = Nk a query tile's diagonals
// lie in that one tile, and a causal call has no tile right of it, so each row has its maximum before any far tile is
// met (with Nq ≠ Nk and no causal mask a row whose diagonal lies left of that tile would not; at 64 × 1600 the rows'
// diagonals, keys 1536-1599, fill the last key tile). With log-n scaling the bound does not apply: those tiles are then
// skipped after their product (far_rows, softmax's rows), which the last case checks.
TEST(alibi_bound_skip_counts) {
    struct Shape {
        int64_t nq, nk;
        bool causal;
        int64_t window;  // -1: none
        int64_t logn_train;
        int64_t hq;  // query heads (one kv head): 1 with one query tile leaves K and V unpacked (forward_with)
    };
    const Shape shapes[] = {{640, 640, false, -1, 0, 2},  {640, 640, true, -1, 0, 2}, {640, 640, false, 200, 0, 2},
                            {300, 650, true, -1, 0, 2},   {640, 640, true, -1, 320, 2}, {64, 1600, false, -1, 0, 1},
                            {64, 1600, true, -1, 0, 1}};
    auto counters = [] {
        std::vector<uint64_t> c(static_cast<size_t>(fsig::cpu::TileWork::kCount));
        fsig_internal_cpu_work(c.data(), int(c.size()));
        return c;
    };
    using W = fsig::cpu::TileWork;
    // The forward's K and V packed once per wave and unpacked — one query tile of one head per kv head (the last two
    // shapes), or a wave budget too small for one pair's K and V (cpu_waves) — both skip far tiles by the bound: the
    // packed tiles carry their norms, a task that packs its own tiles takes their norms as it does
    int idx = 0;
    for (const Shape& sh : shapes)
        for (int dtype : {ref::kFp32, ref::kBf16})
            for (int score : {ref::kSoftmax, ref::kSigmoid, ref::kRelu, ref::kRelu2, ref::kGelu, ref::kSoftplus}) {
                Spec s;
                s.B = 1, s.Nq = sh.nq, s.Nk = sh.nk, s.Hq = sh.hq, s.Hk = 1, s.d = 64, s.score = score;
                s.causal = sh.causal;
                if (sh.window >= 0) s.window_left = s.window_right = sh.window;
                s.logn_train = sh.logn_train;
                s.alibi_slopes = sh.hq == 2 ? std::vector<double>{2.0, 1.0} : std::vector<double>{2.0};
                ref::Rng rng(7000 + uint64_t(idx++));
                auto draw = [&](size_t n) { return ref::random_values(rng, n, dtype); };
                const std::vector<float> q = draw(s.q_elems()), k = draw(s.kv_elems()), v = draw(s.kv_elems()),
                                         dout = draw(s.q_elems());
                const std::vector<uint64_t> before = counters();
                if (alibi_call(s, dtype, q, k, v, dout).out.empty()) continue;
                const std::vector<uint64_t> after = counters();
                auto got = [&](W w) { return after[size_t(w)] - before[size_t(w)]; };

                // the tiles the kernels must skip, from each element
                const int64_t bm = fsig::cpu::kBlockM, bn = fsig::cpu::block_n_for(s.d);
                const double scale = 1.0 / std::sqrt(double(s.d));
                double lambda = 1.0;
                for (int64_t i = 0; i < s.Nq; ++i) lambda = std::max(lambda, s.lambda(i));
                auto norm = [&](const std::vector<float>& x, int64_t row, int64_t heads, int64_t h) {
                    double sum = 0;
                    for (int64_t c = 0; c < s.d; ++c) {
                        const double e = x[size_t((row * heads + h) * s.d + c)];
                        sum += e * e;
                    }
                    return std::sqrt(sum);
                };
                std::vector<double> k_norm(static_cast<size_t>(s.Nk));
                double k_max = 0;
                for (int64_t j = 0; j < s.Nk; ++j) k_max = std::max(k_max, k_norm[size_t(j)] = norm(k, j, s.Hk, 0));
                int64_t far = 0, allowed_tiles = 0;
                for (int64_t h = 0; h < s.Hq; ++h) {
                    std::vector<double> q_norm(static_cast<size_t>(s.Nq));
                    double q_max = 0;
                    for (int64_t i = 0; i < s.Nq; ++i)
                        q_max = std::max(q_max, q_norm[size_t(i)] = norm(q, i, s.Hq, h) * scale * lambda);
                    const double row_floor = score == ref::kSoftmax ? q_max * k_max : 0.0;
                    for (int64_t i0 = 0; i0 < s.Nq; i0 += bm)
                        for (int64_t j0 = 0; j0 < s.Nk; j0 += bn) {
                            bool any = false;
                            int64_t least = INT64_MAX;
                            double qn = 0, kn = 0;
                            for (int64_t i = i0; i < std::min(i0 + bm, s.Nq); ++i) {
                                qn = std::max(qn, q_norm[size_t(i)]);
                                for (int64_t j = j0; j < std::min(j0 + bn, s.Nk); ++j) {
                                    any = any || s.allowed(i, j);
                                    least = std::min(least, int64_t(std::llabs(i + s.Nk - s.Nq - j)));
                                }
                            }
                            for (int64_t j = j0; j < std::min(j0 + bn, s.Nk); ++j) kn = std::max(kn, k_norm[size_t(j)]);
                            allowed_tiles += any;
                            far += any && s.alibi_slopes[size_t(h)] * double(least) - qn * kn - row_floor > 170.0;
                        }
                }
                const std::string name =
                    th::format("%s %s %lldx%lld%s%s%s", ref::dtype_name(dtype), ref::score_name(score), (long long)s.Nq,
                               (long long)s.Nk, s.causal ? " causal" : "", sh.window >= 0 ? " window" : "",
                               sh.logn_train > 0 ? " logn" : "");
                auto n = [&](W w) { return (unsigned long long)got(w); };
                if (g_verbose)
                    std::printf("  %s: %lld tiles, %lld far; forward %llu/%llu/%llu, backward %llu/%llu/%llu\n",
                                name.c_str(), (long long)allowed_tiles, (long long)far, n(W::kForwardTiles),
                                n(W::kForwardBoundSkips), n(W::kForwardNothingSkips), n(W::kBackwardTiles),
                                n(W::kBackwardBoundSkips), n(W::kBackwardNothingSkips));
                EXPECT(far >= 10, "%s: %lld of %lld tiles far: the case tests little", name.c_str(), (long long)far,
                       (long long)allowed_tiles);
                // (bf16 calls may run a second time with fp32 products: at least the call's tiles)
                const uint64_t tiles = uint64_t(allowed_tiles);
                EXPECT(n(W::kForwardTiles) >= tiles && n(W::kBackwardTiles) >= tiles,
                       "%s: forward met %llu tiles, backward %llu, of %lld allowed", name.c_str(), n(W::kForwardTiles),
                       n(W::kBackwardTiles), (long long)allowed_tiles);
                const bool bound = sh.logn_train == 0;
                const W fwd = bound ? W::kForwardBoundSkips : W::kForwardNothingSkips;
                const W bwd = bound ? W::kBackwardBoundSkips : W::kBackwardNothingSkips;
                auto how = [](W w) {
                    return w == W::kForwardBoundSkips || w == W::kBackwardBoundSkips ? "by the norm bound"
                                                                                     : "after their product";
                };
                EXPECT(n(fwd) >= uint64_t(far) && n(bwd) >= uint64_t(far),
                       "%s: the forward skipped %llu tiles %s, the backward %llu %s; %lld are far", name.c_str(),
                       n(fwd), how(fwd), n(bwd), how(bwd), (long long)far);
                if (!bound)
                    EXPECT(n(W::kForwardBoundSkips) == 0 && n(W::kBackwardBoundSkips) == 0,
                           "%s: the norm bound skipped tiles under log-n scaling", name.c_str());
            }
}

// The forward's own-packed tiles (one query tile of one head per kv head: K and V not packed for the wave) are skipped
// by the norm bound only where their V is finite: a NaN in a far key's V (key 5 of 1600, a penalty of 2 · 1531 or more)
// must reach every row's output at its column (P V = 0 · NaN), every other column staying finite.
TEST(alibi_far_nan_unpacked) {
    constexpr int64_t kNanKey = 5, kNanCol = 3;
    int idx = 0;
    for (int dtype : {ref::kFp32, ref::kBf16})
        for (int score : {ref::kSoftmax, ref::kSigmoid, ref::kRelu, ref::kRelu2, ref::kGelu, ref::kSoftplus})
            for (bool causal : {false, true}) {
                Spec s;
                s.B = 1, s.Nq = 64, s.Nk = 1600, s.Hq = 1, s.Hk = 1, s.d = 64, s.score = score, s.causal = causal;
                s.alibi_slopes = {2.0};
                ref::Rng rng(7500 + uint64_t(idx++));
                auto draw = [&](size_t n) { return ref::random_values(rng, n, dtype); };
                const std::vector<float> q = draw(s.q_elems()), k = draw(s.kv_elems()), dout = draw(s.q_elems());
                std::vector<float> v = draw(s.kv_elems());
                v[size_t(kNanKey * s.d + kNanCol)] = std::numeric_limits<float>::quiet_NaN();
                const AlibiGrads r = alibi_call(s, dtype, q, k, v, dout);
                const std::string name = th::format("%s %s%s", ref::dtype_name(dtype), ref::score_name(score),
                                                    causal ? " causal" : "");
                if (r.out.empty()) continue;  // (alibi_call reported the failure)
                int64_t wrong = 0;
                for (int64_t i = 0; i < s.Nq; ++i)  // (bottom-right causal: every row sees keys up to 1536 + i)
                    for (int64_t c = 0; c < s.d; ++c)
                        wrong += std::isnan(r.out[size_t(i * s.d + c)]) != (c == kNanCol);
                EXPECT(wrong == 0, "%s: %lld outputs of %lld with the wrong NaN-ness (want NaN at column %lld only)",
                       name.c_str(), (long long)wrong, (long long)(s.Nq * s.d), (long long)kNanCol);
            }
}

// The fp64 reference's dBias and lambda against central differences (tiny fp64 cases), which
// validates the formulas the library is checked against above.
TEST(finite_differences) {
    for (int score : {int(ref::kSoftmax), int(ref::kSigmoid), int(ref::kGelu)}) {
        Spec s;
        s.B = 2, s.Nq = 5, s.Nk = 7, s.Hq = 2, s.Hk = 1, s.d = 3, s.score = score, s.causal = true, s.window_left = 4;
        ref::Rng rng(77 + uint64_t(score));
        add_bias(s, rng, 1, s.Hq, s.Nq, ref::kFp32, 0.1);  // broadcast over batch, some -inf
        add_alibi(s, true);
        add_mask(s, rng, s.B, 1, 1, 0.9);
        s.strided = 3;
        s.logn_train = 2;  // lambda_i > 1 on the longer rows
        s.want_dbias = true;
        std::vector<double> q(s.q_elems()), k(s.kv_elems()), v(s.kv_elems()), g(s.q_elems());
        for (auto* x : {&q, &k, &v, &g})
            for (double& e : *x) e = rng.normal();
        const ref::Grads<double> an = ref::backward64(s, q.data(), k.data(), v.data(), g.data());
        const ref::Grads<double> fd = ref::fd_grads(s, q.data(), k.data(), v.data(), g.data());
        const std::vector<double> fdb = ref::fd_dbias(s, q.data(), k.data(), v.data(), g.data());
        auto max_err = [](const std::vector<double>& a, const std::vector<double>& b) {
            double m = 0;
            for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
            return m;
        };
        EXPECT(max_err(an.dq, fd.dq) < 1e-6, "%s: dq vs finite differences %.3g", s.describe().c_str(), max_err(an.dq, fd.dq));
        EXPECT(max_err(an.dk, fd.dk) < 1e-6, "%s: dk vs finite differences %.3g", s.describe().c_str(), max_err(an.dk, fd.dk));
        EXPECT(max_err(an.dv, fd.dv) < 1e-6, "%s: dv vs finite differences %.3g", s.describe().c_str(), max_err(an.dv, fd.dv));
        EXPECT(max_err(an.dbias, fdb) < 1e-6, "%s: dbias vs finite differences %.3g", s.describe().c_str(), max_err(an.dbias, fdb));
        bool lambda_used = false;
        for (int64_t i = 0; i < s.Nq; ++i) lambda_used |= s.lambda(i) > 1.0;
        EXPECT(lambda_used, "the finite-difference case must have a lambda > 1");
        // and the library on the same tiny case (fp32) under the §6 rule
        MCase c;
        c.s = s;
        c.name = th::format("fd_tiny_%s", ref::score_name(score));
        run_case(c);
    }
}

// Bitwise the same results at 1, 2, 3 and 5 threads, dBias broadcast over batch, over heads and over Nq
// (a key-padding bias [B, 1, 1, Nk], and [1, 1, 1, Nk]) included.
TEST(thread_count_independence) {
    for (int form = 0; form < 6; ++form) {
        Spec s;
        s.B = 2, s.Nq = 150, s.Nk = 270, s.Hq = 4, s.Hk = 2, s.d = 40;
        s.score = form == 1 || form == 4 || form == 5 ? ref::kSigmoid : ref::kSoftmax;
        s.causal = form != 2 && form != 5;
        ref::Rng rng(31 + uint64_t(form));
        if (form == 5) {  // ALiBi alone, steep, no dbias: far tiles, near-first order and dQ's far-first sums
            add_alibi(s, false);
            for (double& slope : s.alibi_slopes) slope *= 4.0;
        } else {
            add_bias(s, rng, form == 0 || form == 4 ? 1 : s.B, form == 1 || form >= 3 ? 1 : s.Hq,
                     form >= 3 ? 1 : s.Nq, ref::kFp32, 0.02);
            add_alibi(s, false);
            add_blocks(s, rng, 32, 64, true, 0.7);
            add_mask(s, rng, s.B, 1, 1, 0.9);
            s.logn_train = 32;
            s.strided = form == 2 || form == 4 ? 4 : 0;
            s.window_left = form == 2 || form == 4 ? 20 : -1;
            s.want_dbias = true;
        }
        std::vector<std::vector<unsigned char>> first;
        for (int threads : {1, 2, 3, 5, 8}) {
            REQUIRE(fsig_set_num_threads(threads) == FSIG_OK, "set threads");
            ref::Rng r2(4);
            const int dt = FSIG_DTYPE_FP32;
            tu::View q = tu::make_view(dt, tu::kContiguous, s.B, s.Nq, s.Hq, s.d), k = tu::make_view(dt, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
                     v = tu::make_view(dt, tu::kContiguous, s.B, s.Nk, s.Hk, s.d), out = tu::make_view(dt, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
                     g = tu::make_view(dt, tu::kContiguous, s.B, s.Nq, s.Hq, s.d), dq = tu::make_view(dt, tu::kContiguous, s.B, s.Nq, s.Hq, s.d),
                     dk = tu::make_view(dt, tu::kContiguous, s.B, s.Nk, s.Hk, s.d), dv = tu::make_view(dt, tu::kContiguous, s.B, s.Nk, s.Hk, s.d);
            tu::View lse = tu::make_lse_view(tu::kContiguous, s.B, s.Hq, s.Nq);
            q.store(ref::random_values(r2, s.q_elems(), dt)), k.store(ref::random_values(r2, s.kv_elems(), dt));
            v.store(ref::random_values(r2, s.kv_elems(), dt)), g.store(ref::random_values(r2, s.q_elems(), dt));
            tu::poison(out), tu::poison(lse), tu::poison(dq), tu::poison(dk), tu::poison(dv);
            Extras e = make_extras(s, dt);
            const fsig_attention_params p = params_of(s);
            const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), to = out.desc(), tl = lse.desc(), tg = g.desc(),
                              tdq = dq.desc(), tdk = dk.desc(), tdv = dv.desc();
            const bool sm = s.score == ref::kSoftmax;
            REQUIRE(fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, sm ? &tl : nullptr, e.slopes_t(), e.bias_t(), e.mask_t(),
                                              e.layout_t(), nullptr) == FSIG_OK,
                    "forward_ex: %s", fsig_last_error());
            REQUIRE(fsig_attention_backward_ex(&p, &tq, &tk, &tv, &to, &tg, sm ? &tl : nullptr, &tdq, &tdk, &tdv, e.slopes_t(),
                                               e.bias_t(), e.mask_t(), e.layout_t(), s.want_dbias ? &e.tdb : nullptr,
                                               nullptr) == FSIG_OK,
                    "backward_ex: %s", fsig_last_error());
            std::vector<std::vector<unsigned char>> now = {tu::snapshot(out), tu::snapshot(lse), tu::snapshot(dq),
                                                          tu::snapshot(dk), tu::snapshot(dv)};
            if (s.want_dbias) now.push_back(tu::snapshot(e.dbias));
            if (first.empty()) first = now;
            const char* names[] = {"out", "lse", "dq", "dk", "dv", "dbias"};
            for (size_t t = 0; t < now.size(); ++t)
                EXPECT(now[t] == first[t], "form %d: %s differs between 1 and %d threads", form, names[t], threads);
        }
    }
    fsig_set_num_threads(0);
}

// The helper's schedule (Press et al.): 2^(-8h/n) for n a power of two; otherwise the power of two
// below n, then every other slope of twice that.
TEST(alibi_slopes_helper) {
    float s8[8];
    REQUIRE(fsig_alibi_slopes(8, s8) == FSIG_OK, "fsig_alibi_slopes(8): %s", fsig_last_error());
    for (int h = 0; h < 8; ++h) EXPECT(s8[h] == std::ldexp(1.0f, -(h + 1)), "8 heads: slope %d is %g", h, double(s8[h]));
    float s12[12];
    REQUIRE(fsig_alibi_slopes(12, s12) == FSIG_OK, "fsig_alibi_slopes(12)");
    const double want12[12] = {std::pow(2, -1), std::pow(2, -2), std::pow(2, -3), std::pow(2, -4), std::pow(2, -5),
                               std::pow(2, -6), std::pow(2, -7), std::pow(2, -8), std::pow(2, -0.5), std::pow(2, -1.5),
                               std::pow(2, -2.5), std::pow(2, -3.5)};
    for (int h = 0; h < 12; ++h)
        EXPECT(std::fabs(s12[h] - want12[h]) <= 1e-7 * want12[h], "12 heads: slope %d is %.9g, want %.9g", h, double(s12[h]), want12[h]);
    float one;
    EXPECT(fsig_alibi_slopes(1, &one) == FSIG_OK && one == 0.00390625f, "1 head: slope %g (want 2^-8)", double(one));
    EXPECT(fsig_alibi_slopes(0, s8) == FSIG_ERROR_INVALID_PARAMS, "0 heads must be refused");
    EXPECT(fsig_alibi_slopes(4, nullptr) == FSIG_ERROR_NULL_ARGUMENT, "NULL slopes must be refused");
}

// The old entry points equal the _ex ones with no extensions, and callers with the 0.1 and 0.2 params
// struct (struct_size 48, 64) keep working with every extension off.
TEST(old_entry_points_and_struct_sizes) {
    Spec s;
    s.B = 2, s.Nq = 70, s.Nk = 130, s.Hq = 2, s.Hk = 1, s.d = 32, s.causal = true;
    ref::Rng rng(3);
    const int dt = FSIG_DTYPE_FP32;
    tu::View q = tu::make_view(dt, tu::kContiguous, s.B, s.Nq, s.Hq, s.d), k = tu::make_view(dt, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
             v = tu::make_view(dt, tu::kContiguous, s.B, s.Nk, s.Hk, s.d), g = tu::make_view(dt, tu::kContiguous, s.B, s.Nq, s.Hq, s.d);
    q.store(ref::random_values(rng, s.q_elems(), dt)), k.store(ref::random_values(rng, s.kv_elems(), dt));
    v.store(ref::random_values(rng, s.kv_elems(), dt)), g.store(ref::random_values(rng, s.q_elems(), dt));
    const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), tg = g.desc();
    std::vector<std::vector<unsigned char>> results;
    for (int variant = 0; variant < 4; ++variant) {
        fsig_attention_params p = tu::params_for(s);
        if (variant == 2) p.struct_size = 48;  // a 0.1 caller
        if (variant == 3) p.struct_size = 64;  // a 0.2 caller (linear-attention fields, no extensions)
        tu::View out = tu::make_view(dt, tu::kContiguous, s.B, s.Nq, s.Hq, s.d), lse = tu::make_lse_view(tu::kContiguous, s.B, s.Hq, s.Nq),
                 dq = tu::make_view(dt, tu::kContiguous, s.B, s.Nq, s.Hq, s.d), dk = tu::make_view(dt, tu::kContiguous, s.B, s.Nk, s.Hk, s.d),
                 dv = tu::make_view(dt, tu::kContiguous, s.B, s.Nk, s.Hk, s.d);
        tu::poison(out), tu::poison(lse), tu::poison(dq), tu::poison(dk), tu::poison(dv);
        const fsig_tensor to = out.desc(), tl = lse.desc(), tdq = dq.desc(), tdk = dk.desc(), tdv = dv.desc();
        int st;
        if (variant == 0) {
            st = fsig_attention_forward(&p, &tq, &tk, &tv, &to, &tl, nullptr);
            if (st == FSIG_OK) st = fsig_attention_backward(&p, &tq, &tk, &tv, &to, &tg, &tl, &tdq, &tdk, &tdv, nullptr);
        } else {
            st = fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, &tl, nullptr, nullptr, nullptr, nullptr, nullptr);
            if (st == FSIG_OK)
                st = fsig_attention_backward_ex(&p, &tq, &tk, &tv, &to, &tg, &tl, &tdq, &tdk, &tdv, nullptr, nullptr, nullptr,
                                                nullptr, nullptr, nullptr);
        }
        EXPECT(st == FSIG_OK, "variant %d: %s", variant, fsig_last_error());
        results.push_back(tu::snapshot(out));
        for (const tu::View* x : {&lse, &dq, &dk, &dv}) {
            const auto snap = tu::snapshot(*x);
            results.back().insert(results.back().end(), snap.begin(), snap.end());
        }
    }
    for (size_t r = 1; r < results.size(); ++r) EXPECT(results[r] == results[0], "variant %zu differs from the old entry points", r);
}

// ---- refusals: the status, a message naming the rule, and nothing written --------------------------

struct BadCall {
    Spec s;
    fsig_attention_params p;
    tu::View q, k, v, out, lse, g, dq, dk, dv, slopes, bias, dbias;
    Bytes mask, layout;
    const fsig_tensor* ts = nullptr;
    const fsig_tensor* tb = nullptr;
    const fsig_tensor* tm = nullptr;
    const fsig_tensor* tlay = nullptr;
    const fsig_tensor* tdb = nullptr;
    fsig_tensor d_slopes{}, d_bias{}, d_dbias{};
    BadCall() {
        s.B = 2, s.Nq = 40, s.Nk = 70, s.Hq = 4, s.Hk = 2, s.d = 16;
        p = fsig_attention_params_default();
        const int dt = FSIG_DTYPE_FP32;
        q = tu::make_view(dt, tu::kContiguous, s.B, s.Nq, s.Hq, s.d), k = tu::make_view(dt, tu::kContiguous, s.B, s.Nk, s.Hk, s.d);
        v = tu::make_view(dt, tu::kContiguous, s.B, s.Nk, s.Hk, s.d), g = tu::make_view(dt, tu::kContiguous, s.B, s.Nq, s.Hq, s.d);
        out = tu::make_view(dt, tu::kContiguous, s.B, s.Nq, s.Hq, s.d), lse = tu::make_lse_view(tu::kContiguous, s.B, s.Hq, s.Nq);
        dq = tu::make_view(dt, tu::kContiguous, s.B, s.Nq, s.Hq, s.d), dk = tu::make_view(dt, tu::kContiguous, s.B, s.Nk, s.Hk, s.d);
        dv = tu::make_view(dt, tu::kContiguous, s.B, s.Nk, s.Hk, s.d);
        ref::Rng rng(1);
        for (tu::View* x : {&q, &k, &v, &g}) x->store(ref::random_values(rng, x->numel(), dt));
        out.store(ref::random_values(rng, out.numel(), dt));
        lse.store(ref::random_values(rng, lse.numel(), dt));
    }
    void set_slopes(int ndim, const int64_t* shape, int dtype = FSIG_DTYPE_FP32) {
        slopes = make_nd(dtype, ndim, shape, 0);
        slopes.store(std::vector<float>(slopes.numel(), 0.5f));
        d_slopes = slopes.desc();
        ts = &d_slopes;
    }
    void set_bias(const int64_t* shape, int dtype = FSIG_DTYPE_FP32, int ndim = 4) {
        bias = make_nd(dtype, ndim, shape, 0);
        bias.store(std::vector<float>(bias.numel(), 0.25f));
        d_bias = bias.desc();
        tb = &d_bias;
    }
    void set_dbias(const int64_t* shape, int dtype = FSIG_DTYPE_FP32) {
        dbias = make_nd(dtype, 4, shape, 0);
        tu::poison(dbias);
        d_dbias = dbias.desc();
        tdb = &d_dbias;
    }
    void set_mask(const int64_t* shape, int ndim = 4) {
        int64_t strides[4], st = 1;
        for (int a = ndim; a-- > 0;) strides[a] = st, st *= shape[a];
        mask.make(ndim, shape, strides);
        std::memset(mask.st->mem, 1, mask.st->bytes);
        tm = &mask.t;
    }
    void set_layout(const int64_t* shape) {
        const int64_t strides[3] = {shape[1] * shape[2], shape[2], 1};
        layout.make(3, shape, strides);
        std::memset(layout.st->mem, 1, layout.st->bytes);
        tlay = &layout.t;
    }
    // forward (backward when `backward`) must fail with `status` and a message containing `needle`;
    // every output keeps its poison.
    void expect(const char* what, bool backward, int status, const char* needle) {
        for (tu::View* x : {&out, &lse, &dq, &dk, &dv}) tu::poison(*x);
        if (tdb) tu::poison(dbias);
        const auto snaps = std::vector<std::vector<unsigned char>>{tu::snapshot(out), tu::snapshot(lse), tu::snapshot(dq),
                                                                  tu::snapshot(dk), tu::snapshot(dv)};
        const auto snap_db = tdb ? tu::snapshot(dbias) : std::vector<unsigned char>();
        const fsig_tensor tq = q.desc(), tk = k.desc(), tv = v.desc(), to = out.desc(), tl = lse.desc(), tg = g.desc(),
                          tdq = dq.desc(), tdk = dk.desc(), tdv = dv.desc();
        int st;
        if (!backward) {
            st = fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, p.score == FSIG_SCORE_SOFTMAX ? &tl : nullptr, ts, tb, tm,
                                           tlay, nullptr);
        } else {
            tu::View o2 = tu::make_view(FSIG_DTYPE_FP32, tu::kContiguous, s.B, s.Nq, s.Hq, s.d);
            tu::View l2 = tu::make_lse_view(tu::kContiguous, s.B, s.Hq, s.Nq);
            o2.store(std::vector<float>(o2.numel(), 0.f));
            l2.store(std::vector<float>(l2.numel(), 1.f));
            const fsig_tensor to2 = o2.desc(), tl2 = l2.desc();
            st = fsig_attention_backward_ex(&p, &tq, &tk, &tv, &to2, &tg, &tl2, &tdq, &tdk, &tdv, ts, tb, tm, tlay, tdb,
                                            nullptr);
        }
        const char* msg = fsig_last_error();
        EXPECT(st == status, "%s: status %d, want %d (%s)", what, st, status, msg);
        EXPECT(std::strstr(msg, needle) != nullptr, "%s: message \"%s\" lacks \"%s\"", what, msg, needle);
        const std::vector<std::vector<unsigned char>> after = {tu::snapshot(out), tu::snapshot(lse), tu::snapshot(dq),
                                                               tu::snapshot(dk), tu::snapshot(dv)};
        EXPECT(after == snaps, "%s: an output was written on error", what);
        if (tdb) EXPECT(tu::snapshot(dbias) == snap_db, "%s: dbias was written on error", what);
        if (g_verbose) std::printf("  %s -> %s\n", what, msg);
    }
};

TEST(refusals) {
    {
        BadCall c;
        const int64_t sh[1] = {3};
        c.set_slopes(1, sh);
        c.expect("slopes [3] for Hq 4", false, FSIG_ERROR_INVALID_SHAPE, "alibi_slopes");
    }
    {
        BadCall c;
        const int64_t sh[2] = {1, 4};
        c.set_slopes(2, sh);
        c.expect("slopes [1, 4] for B 2", false, FSIG_ERROR_INVALID_SHAPE, "alibi_slopes.shape[0]");
    }
    {
        BadCall c;
        const int64_t sh[1] = {4};
        c.set_slopes(1, sh, FSIG_DTYPE_FP16);
        c.expect("fp16 slopes", false, FSIG_ERROR_INVALID_DTYPE, "alibi_slopes is fp16 but must be fp32");
    }
    {
        BadCall c;
        const int64_t sh[4] = {2, 4, 40, 71};
        c.set_bias(sh);
        c.expect("bias Nk wrong", false, FSIG_ERROR_INVALID_SHAPE, "bias.shape[3]");
    }
    {
        BadCall c;
        const int64_t sh[4] = {2, 2, 40, 70};
        c.set_bias(sh);
        c.expect("bias heads 2 of 4", false, FSIG_ERROR_INVALID_SHAPE, "bias.shape[1]");
    }
    {
        BadCall c;
        const int64_t sh[4] = {3, 4, 40, 70};
        c.set_bias(sh);
        c.expect("bias batch 3", false, FSIG_ERROR_INVALID_SHAPE, "bias.shape[0]");
    }
    {
        BadCall c;
        const int64_t sh[4] = {2, 4, 39, 70};
        c.set_bias(sh);
        c.expect("bias Nq 39", false, FSIG_ERROR_INVALID_SHAPE, "bias.shape[2]");
    }
    {
        BadCall c;
        const int64_t sh[3] = {4, 40, 70};
        c.set_bias(sh, FSIG_DTYPE_FP32, 3);
        c.expect("bias rank 3", false, FSIG_ERROR_INVALID_SHAPE, "bias.ndim");
    }
    {
        BadCall c;
        const int64_t sh[4] = {1, 1, 1, 70};
        c.set_mask(sh);
        c.mask.t.dtype = FSIG_DTYPE_FP32;
        c.mask.t.capacity_bytes = 4 * 70;
        c.expect("mask fp32", false, FSIG_ERROR_INVALID_DTYPE, "mask is fp32 but must be bool");
    }
    {
        BadCall c;
        const int64_t sh[4] = {2, 1, 1, 70};
        c.set_bias(sh);
        c.bias.dtype = FSIG_DTYPE_FP32;
        c.d_bias.dtype = FSIG_DTYPE_BOOL;
        c.expect("bias bool", false, FSIG_ERROR_INVALID_DTYPE, "bias is bool");
    }
    {
        BadCall c;
        const int64_t sh[4] = {2, 1, 1, 69};
        c.set_mask(sh);
        c.expect("mask Nk wrong", false, FSIG_ERROR_INVALID_SHAPE, "mask.shape[3]");
    }
    {
        BadCall c;
        const int64_t sh[4] = {1, 1, 1, 70};
        c.set_mask(sh);
        c.set_bias(sh);
        c.p.score = FSIG_SCORE_LINEAR_ELU;
        c.expect("linear score with a mask", false, FSIG_ERROR_INVALID_PARAMS, "linear_elu");
    }
    {
        BadCall c;
        const int64_t sh[3] = {1, 3, 5};
        c.set_layout(sh);
        c.expect("layout without block sizes", false, FSIG_ERROR_INVALID_PARAMS, "sparse_block_m");
    }
    {
        BadCall c;
        c.p.sparse_block_m = 16, c.p.sparse_block_n = 16;
        c.expect("block sizes without layout", false, FSIG_ERROR_NULL_ARGUMENT, "block_layout is NULL");
    }
    {
        BadCall c;
        c.p.sparse_block_m = 16, c.p.sparse_block_n = 0;
        const int64_t sh[3] = {1, 3, 5};
        c.set_layout(sh);
        c.expect("block_n 0", false, FSIG_ERROR_INVALID_PARAMS, "sparse_block_n");
    }
    {
        BadCall c;
        c.p.sparse_block_m = -4, c.p.sparse_block_n = 16;
        const int64_t sh[3] = {1, 3, 5};
        c.set_layout(sh);
        c.expect("block_m negative", false, FSIG_ERROR_INVALID_PARAMS, "sparse_block_m");
    }
    {
        BadCall c;
        c.p.sparse_block_m = 16, c.p.sparse_block_n = 16;
        const int64_t sh[3] = {1, 3, 4};  // ceil(70 / 16) = 5
        c.set_layout(sh);
        c.expect("layout columns", false, FSIG_ERROR_INVALID_SHAPE, "block_layout.shape[2]");
    }
    {
        BadCall c;
        c.p.sparse_block_m = 16, c.p.sparse_block_n = 16;
        const int64_t sh[3] = {2, 3, 5};  // 1 or Hq = 4
        c.set_layout(sh);
        c.expect("layout heads", false, FSIG_ERROR_INVALID_SHAPE, "block_layout.shape[0]");
    }
    {
        BadCall c;
        c.p.strided = -1;
        c.expect("strided < 0", false, FSIG_ERROR_INVALID_PARAMS, "params.strided");
    }
    {
        BadCall c;
        c.p.logn_train = 1;
        c.expect("logn_train 1", false, FSIG_ERROR_INVALID_PARAMS, "params.logn_train");
    }
    {
        BadCall c;
        c.p.logn_train = -5;
        c.expect("logn_train < 0", false, FSIG_ERROR_INVALID_PARAMS, "params.logn_train");
    }
    {
        BadCall c;
        const int64_t sh[4] = {1, 4, 40, 70};
        c.set_dbias(sh);
        c.expect("dbias without bias", true, FSIG_ERROR_INVALID_PARAMS, "dbias is given but bias is NULL");
    }
    {
        BadCall c;
        const int64_t sh[4] = {1, 4, 40, 70}, sh2[4] = {2, 4, 40, 70};
        c.set_bias(sh);
        c.set_dbias(sh2);
        c.expect("dbias shape", true, FSIG_ERROR_INVALID_SHAPE, "dbias.shape[0]");
    }
    {
        BadCall c;
        const int64_t sh[4] = {1, 4, 40, 70};
        c.set_bias(sh);
        c.set_dbias(sh, FSIG_DTYPE_BF16);
        c.expect("dbias dtype", true, FSIG_ERROR_INVALID_DTYPE, "dbias is bf16 but bias is fp32");
    }
    {
        BadCall c;
        const int64_t sh[4] = {1, 4, 40, 70};
        c.set_bias(sh);
        c.set_dbias(sh);
        c.d_dbias.data = c.bias.data();  // dbias overlapping the bias
        c.d_dbias.capacity_bytes = c.d_bias.capacity_bytes;
        c.tdb = &c.d_dbias;
        c.dbias = c.bias;
        c.expect("dbias aliasing bias", true, FSIG_ERROR_ALIASING, "dbias overlaps bias");
    }
    {
        BadCall c;
        const int64_t sh[4] = {1, 4, 40, 70};
        c.set_bias(sh);
        c.d_bias.strides[3] = 0;  // fine for an input (stride-0 broadcast)...
        c.set_dbias(sh);
        c.d_dbias.strides[3] = 0;  // ...but an output may not overlap itself
        c.expect("dbias self-overlap", true, FSIG_ERROR_INVALID_STRIDE, "dbias.strides[3]");
    }
}

// CUDA tensors with an extension pass the C ABI's checks and reach the CUDA backend: here, with no GPU
// (or no CUDA in the build), it answers NO_DEVICE; on a GPU machine these host pointers are refused as
// not device memory (INVALID_DEVICE). Never "not yet": the extensions run on CUDA.
TEST(cuda_reaches_backend) {
    BadCall c;
    const int64_t sh[4] = {1, 1, 1, 70};
    c.set_bias(sh);
    fsig_tensor tq = c.q.desc(), tk = c.k.desc(), tv = c.v.desc(), to = c.out.desc(), tg = c.g.desc(), tdq = c.dq.desc(),
                tdk = c.dk.desc(), tdv = c.dv.desc(), tb = c.d_bias;
    for (fsig_tensor* t : {&tq, &tk, &tv, &to, &tg, &tdq, &tdk, &tdv, &tb}) t->device_type = FSIG_DEVICE_CUDA;
    fsig_attention_params p = c.p;
    p.score = FSIG_SCORE_SIGMOID;
    auto reached = [](int st) {
        return (st == FSIG_ERROR_NO_DEVICE || st == FSIG_ERROR_INVALID_DEVICE) &&
               std::strstr(fsig_last_error(), "not yet") == nullptr;
    };
    int st = fsig_attention_forward_ex(&p, &tq, &tk, &tv, &to, nullptr, nullptr, &tb, nullptr, nullptr, nullptr);
    EXPECT(reached(st), "forward: status %d, message %s", st, fsig_last_error());
    p.strided = 2;
    st = fsig_attention_backward_ex(&p, &tq, &tk, &tv, nullptr, &tg, nullptr, &tdq, &tdk, &tdv, nullptr, nullptr, nullptr,
                                    nullptr, nullptr, nullptr);
    EXPECT(reached(st), "backward: status %d, message %s", st, fsig_last_error());
}

// Forward on a bias given with stride 0 on a full-size dimension (broadcast by stride) equals the
// same bias given with size 1.
TEST(stride_zero_broadcast) {
    BadCall c;  // the fixture's tensors, valid this time
    const int64_t one[4] = {1, 1, c.s.Nq, c.s.Nk};
    c.set_bias(one);
    const fsig_tensor tq = c.q.desc(), tk = c.k.desc(), tv = c.v.desc(), to = c.out.desc();
    REQUIRE(fsig_attention_forward_ex(&c.p, &tq, &tk, &tv, &to, nullptr, nullptr, c.tb, nullptr, nullptr, nullptr) == FSIG_OK,
            "%s", fsig_last_error());
    const auto a = tu::snapshot(c.out);
    fsig_tensor wide = c.d_bias;
    wide.shape[0] = c.s.B, wide.shape[1] = c.s.Hq, wide.strides[0] = 0, wide.strides[1] = 0;
    tu::poison(c.out);
    REQUIRE(fsig_attention_forward_ex(&c.p, &tq, &tk, &tv, &to, nullptr, nullptr, &wide, nullptr, nullptr, nullptr) == FSIG_OK,
            "%s", fsig_last_error());
    EXPECT(tu::snapshot(c.out) == a, "a stride-0 broadcast bias differs from the size-1 one");
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> filters;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--verbose") == 0) g_verbose = true;
        else if (std::strcmp(argv[i], "--list") == 0) {
            for (const th::Test& t : th::registry()) std::printf("%s\n", t.name);
            return 0;
        } else filters.push_back(argv[i]);
    }
    const int isa = tu::check_isa_env();
    if (isa != 0) return isa;
    return th::run_all(filters);
}
