#include "numerics.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "harness.h"
#include "lib_util.h"

namespace num {

using tu::View;

double reference_cost(const Case& c) {
    const ref::Spec& s = c.s;
    const double fwd = double(s.B) * s.Hq * s.Nq * s.Nk * s.d * 2;  // S and O
    return 2 * (fwd + (c.backward ? 2.5 * fwd : 0));                // ref64 and naive
}

namespace {

// Outputs may not use the packed-qkv layout (it belongs to the inputs); others they share.
int output_layout(int layout) { return layout == tu::kPackedQKV ? tu::kPadded : layout; }

bool check(const Case& c, const char* output, const View& v, const std::vector<double>& r64,
           const std::vector<float>& naive) {
    return tu::check_output(c.name, c.s.describe(), output, v, r64, naive);
}

// A case's references: fp64 and naive, forward and (where the case has one) backward
struct References {
    ref::Forward<double> f64;
    ref::Forward<float> fn;
    ref::Grads<double> g64;
    ref::Grads<float> gn;
};

// The vectors of References in file order (the backward's only where it is held)
template <class Fn>
void each_vector(References& r, bool backward, Fn&& fn) {
    fn(r.f64.out), fn(r.f64.lse), fn(r.fn.out), fn(r.fn.lse);
    if (backward) fn(r.g64.dq), fn(r.g64.dk), fn(r.g64.dv), fn(r.gn.dq), fn(r.gn.dk), fn(r.gn.dv);
}

// References shared by the processes of one CTest run: the numerics tiers run once per CPU kernel set and float
// mode on the same cases, and a run's time is the references' (≈ 80 % of numerics_ci_avx2's samples), not the
// library's. FSIG_TEST_REFERENCE_CACHE names the directory (tests/CMakeLists.txt: its fixture empties it before
// the run and removes it after, so no file outlives the binary that wrote it). A file is named by the case and a
// hash of its spec and inputs, written whole under another name and renamed, so a reader finds it complete or
// not at all; a missing or unreadable file means computing the references here.
const char* reference_cache_dir() {
    static const char* const dir = [] {
        const char* e = std::getenv("FSIG_TEST_REFERENCE_CACHE");
        if (e == nullptr || *e == '\0') return static_cast<const char*>(nullptr);
        mkdir(e, 0755);  // (made by the first process to ask: the others find it)
        return e;
    }();
    return dir;
}

uint64_t fnv1a(uint64_t h, const void* data, size_t bytes) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

std::string reference_file(const Case& c, std::initializer_list<const std::vector<float>*> inputs) {
    const std::string spec = c.s.describe();
    uint64_t h = fnv1a(0xcbf29ce484222325ull, spec.data(), spec.size());
    h = fnv1a(h, &c.dtype, sizeof c.dtype);
    for (const std::vector<float>* x : inputs) h = fnv1a(h, x->data(), x->size() * sizeof(float));
    return th::format("%s/%s_%016llx%s.ref", reference_cache_dir(), c.name.c_str(), (unsigned long long)h,
                      c.backward ? "_bwd" : "");
}

bool load_references(const std::string& path, bool backward, References& r) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) return false;
    bool ok = true;
    each_vector(r, backward, [&](auto& v) {
        uint64_t n = 0;
        ok = ok && std::fread(&n, sizeof n, 1, f) == 1 && n < (uint64_t(1) << 40);
        if (ok) v.resize(size_t(n)), ok = n == 0 || std::fread(v.data(), sizeof v[0], v.size(), f) == v.size();
    });
    std::fclose(f);
    return ok;
}

void store_references(const std::string& path, bool backward, References& r) {
    const std::string partial = th::format("%s.%ld.partial", path.c_str(), long(getpid()));
    FILE* f = std::fopen(partial.c_str(), "wb");
    if (f == nullptr) return;  // (no cache: the other processes compute their own)
    bool ok = true;
    each_vector(r, backward, [&](auto& v) {
        const uint64_t n = v.size();
        ok = ok && std::fwrite(&n, sizeof n, 1, f) == 1 && (n == 0 || std::fwrite(v.data(), sizeof v[0], n, f) == n);
    });
    ok = std::fclose(f) == 0 && ok;
    if (!ok || std::rename(partial.c_str(), path.c_str()) != 0) std::remove(partial.c_str());
}

// The references of case c on these inputs (the doubles are the same values as the floats): from the cache
// where it holds them, else computed (and stored there)
References references_of(const Case& c, const std::vector<float>& qf, const std::vector<float>& kf,
                         const std::vector<float>& vf, const std::vector<float>& gf, const std::vector<double>& q,
                         const std::vector<double>& k, const std::vector<double>& v, const std::vector<double>& g) {
    References r;
    const std::string path = reference_cache_dir() != nullptr ? reference_file(c, {&qf, &kf, &vf, &gf}) : "";
    if (!path.empty() && load_references(path, c.backward, r)) return r;
    const ref::Spec& s = c.s;
    r.f64 = ref::forward64(s, q.data(), k.data(), v.data());
    r.fn = ref::forward_naive(s, c.dtype, qf.data(), kf.data(), vf.data());
    if (c.backward) {
        // (the O the library is handed: ref64's rounded to the dtype, reference.h)
        const std::vector<float> out_in = tu::to_float_rounded(r.f64.out, c.dtype);
        const std::vector<double> out64 = tu::to_double(out_in);
        r.g64 = ref::backward64(s, q.data(), k.data(), v.data(), g.data(), out64.data());
        r.gn = ref::backward_naive(s, c.dtype, qf.data(), kf.data(), vf.data(), out_in.data(), gf.data());
    }
    if (!path.empty()) store_references(path, c.backward, r);
    return r;
}

}  // namespace

bool run_case(const Case& c, bool verbose) {
    const auto t0 = std::chrono::steady_clock::now();
    const int before = th::failures();
    const ref::Spec& s = c.s;
    const bool softmax = s.score == ref::kSoftmax;
    ref::Rng rng(c.seed);
    std::vector<float> qf = ref::random_values(rng, s.q_elems(), c.dtype);
    const std::vector<float> kf = ref::random_values(rng, s.kv_elems(), c.dtype),
                             vf = ref::random_values(rng, s.kv_elems(), c.dtype),
                             gf = ref::random_values(rng, s.q_elems(), c.dtype);
    // relu's derivative jumps at S = 0: a score within fp32 rounding of 0 (seen: |S| = 2e-8) can take
    // either side in our fp32 sum and in the fp64 reference, and dQ, dK then differ by a whole dP·k — a
    // property of the function, not an error. The q rows holding an allowed |S| <= 1e-5 are redrawn (a
    // few times at most) until every allowed |S| clears the accumulation error by far. Row by row, not
    // all of q: S ~ N(0, 1) puts ~0.8e-5 of the scores within 1e-5 of 0, so a big case (256×512 causal,
    // 4 heads: ~4e5 scores) almost never gets a whole q without one, and redrawing all of q ran out of
    // attempts (full5_806 kept S64 = -9.4e-9, +7.8e-8 in fp32); a row of <= 2048 keys holds one with
    // probability <= 2 %, so a redraw or two clears it.
    for (int attempt = 0; s.score == ref::kRelu && attempt < 8; ++attempt) {
        const std::vector<double> q64 = tu::to_double(qf), k64 = tu::to_double(kf);
        const std::vector<double> row_min = ref::min_abs_score_rows(s, q64.data(), k64.data());
        bool redrawn = false;
        for (size_t r = 0; r < row_min.size(); ++r)
            if (row_min[r] <= 1e-5) {
                const std::vector<float> fresh = ref::random_values(rng, size_t(s.d), c.dtype);
                std::copy(fresh.begin(), fresh.end(), qf.begin() + std::ptrdiff_t(r * size_t(s.d)));
                redrawn = true;
            }
        if (!redrawn) break;
    }
    const std::vector<double> q = tu::to_double(qf), k = tu::to_double(kf), v = tu::to_double(vf),
                              g = tu::to_double(gf);

    const References refs = references_of(c, qf, kf, vf, gf, q, k, v, g);
    const ref::Forward<double>& f64 = refs.f64;
    const ref::Forward<float>& fn = refs.fn;

    // ---- forward ----
    tu::QKV in = tu::make_qkv(c.dtype, c.layout, s);
    in.q.store(qf), in.k.store(kf), in.v.store(vf);
    View out = tu::make_view(c.dtype, output_layout(c.layout), s.B, s.Nq, s.Hq, s.d);
    const bool want_lse = softmax && c.with_lse;
    View lse;
    if (want_lse) lse = tu::make_lse_view(c.layout, s.B, s.Hq, s.Nq);
    tu::poison(out);
    if (want_lse) tu::poison(lse);
    const auto snap_q = tu::snapshot(in.q), snap_k = tu::snapshot(in.k), snap_v = tu::snapshot(in.v);
    const fsig_attention_params p = tu::params_for(s);
    const fsig_tensor tq = in.q.desc(), tk = in.k.desc(), tv = in.v.desc(), to = out.desc();
    fsig_tensor tl;
    if (want_lse) tl = lse.desc();
    int st = c.buffers_api
                 ? fsig_attention_forward_buffers(&p, &tq, &tk, &tv, &to, want_lse ? &tl : nullptr, nullptr,
                                                  in.q.data(), in.k.data(), in.v.data(), out.data(),
                                                  want_lse ? lse.data() : nullptr)
                 : fsig_attention_forward(&p, &tq, &tk, &tv, &to, want_lse ? &tl : nullptr, nullptr);
    if (st != FSIG_OK) {
        EXPECT(false, "%s: forward returned %d (%s): %s", c.name.c_str(), st, fsig_status_string(st), fsig_last_error());
        return false;
    }
    check(c, "out", out, f64.out, fn.out);
    if (want_lse) check(c, "lse", lse, f64.lse, fn.lse);
    EXPECT(tu::unchanged(in.q, snap_q) && tu::unchanged(in.k, snap_k) && tu::unchanged(in.v, snap_v),
           "%s: forward modified an input", c.name.c_str());

    // ---- backward: out from ref64 (rounded to the dtype); softmax's LSE from this forward, as a training
    // step passes it (ref64's where the forward was asked for none). The backward recomputes S exactly as
    // the forward did, so S's rounding cancels in P = exp(S - LSE) as it does in a naive softmax; against
    // an LSE from elsewhere P would keep it (fp32: |S| ~ 20 over d ~ 128 costs ~1e-5 in dV) ----
    if (c.backward) {
        const std::vector<float> out_in = tu::to_float_rounded(f64.out, c.dtype);  // the O the library is handed
        const ref::Grads<double>& g64 = refs.g64;
        const ref::Grads<float>& gn = refs.gn;
        const int ol = output_layout(c.layout);
        const bool pass_out = softmax || c.out_for_pointwise;
        View o_in, l_in;
        if (pass_out) {
            o_in = tu::make_view(c.dtype, ol, s.B, s.Nq, s.Hq, s.d);
            o_in.store(out_in);
        }
        if (softmax) {
            l_in = tu::make_lse_view(c.layout, s.B, s.Hq, s.Nq);
            l_in.store(want_lse ? lse.load() : std::vector<float>(f64.lse.begin(), f64.lse.end()));
        }
        View dout = tu::make_view(c.dtype, c.layout == tu::kPackedQKV ? tu::kBHSD : c.layout, s.B, s.Nq, s.Hq, s.d);
        dout.store(gf);
        View dq = tu::make_view(c.dtype, ol, s.B, s.Nq, s.Hq, s.d), dk = tu::make_view(c.dtype, ol, s.B, s.Nk, s.Hk, s.d),
             dv = tu::make_view(c.dtype, tu::kContiguous, s.B, s.Nk, s.Hk, s.d);
        tu::poison(dq), tu::poison(dk), tu::poison(dv);
        const auto snap_o = pass_out ? tu::snapshot(o_in) : std::vector<unsigned char>();
        const auto snap_g = tu::snapshot(dout);
        fsig_tensor tdo = dout.desc(), tdq = dq.desc(), tdk = dk.desc(), tdv = dv.desc(), toi, tli;
        if (pass_out) toi = o_in.desc();
        if (softmax) tli = l_in.desc();
        st = c.buffers_api
                 ? fsig_attention_backward_buffers(&p, &tq, &tk, &tv, pass_out ? &toi : nullptr, &tdo,
                                                   softmax ? &tli : nullptr, &tdq, &tdk, &tdv, nullptr, in.q.data(),
                                                   in.k.data(), in.v.data(), pass_out ? o_in.data() : nullptr,
                                                   dout.data(), softmax ? l_in.data() : nullptr, dq.data(), dk.data(),
                                                   dv.data())
                 : fsig_attention_backward(&p, &tq, &tk, &tv, pass_out ? &toi : nullptr, &tdo,
                                           softmax ? &tli : nullptr, &tdq, &tdk, &tdv, nullptr);
        if (st != FSIG_OK) {
            EXPECT(false, "%s: backward returned %d (%s): %s", c.name.c_str(), st, fsig_status_string(st),
                   fsig_last_error());
            return false;
        }
        check(c, "dq", dq, g64.dq, gn.dq);
        check(c, "dk", dk, g64.dk, gn.dk);
        check(c, "dv", dv, g64.dv, gn.dv);
        EXPECT(tu::unchanged(in.q, snap_q) && tu::unchanged(in.k, snap_k) && tu::unchanged(in.v, snap_v) &&
                   tu::unchanged(dout, snap_g) && (!pass_out || tu::unchanged(o_in, snap_o)),
               "%s: backward modified an input", c.name.c_str());
    }
    const bool ok = th::failures() == before;
    if (verbose || !ok) {
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("  %s %s (%.2fs)\n", ok ? "ok  " : "FAIL", c.name.c_str(), secs);
        std::fflush(stdout);
    }
    return ok;
}

}  // namespace num
