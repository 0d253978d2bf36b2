// Self-checks of the test reference, without the library: 16-bit conversions against the CPU's own
// (x86-64: F16C; AArch64: FCVT) and a nearest-value search, forward64 against a second,
// element-by-element formula, backward64 against finite differences, the naive computation against ref64,
// and the §6 checker itself.
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstring>
#include <limits>

#include "harness.h"
#include "reference.h"

using namespace ref;

namespace {

uint32_t bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
float from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

std::vector<double> to_double(const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); }

// Every score × a few mask / head layouts, with empty softmax rows (Nq > Nk with causal).
std::vector<Spec> small_specs() {
    std::vector<Spec> specs;
    for (int score = 0; score < kScoreCount; ++score) {
        Spec a;
        a.B = 2, a.Nq = 5, a.Nk = 7, a.Hq = 2, a.Hk = 2, a.d = 6, a.score = score;
        specs.push_back(a);
        Spec b = a;
        b.Nq = 9, b.Nk = 6, b.Hq = 4, b.Hk = 2, b.causal = true, b.window_left = 2;  // rows 0..2 have no key
        specs.push_back(b);
        Spec c = a;
        c.B = 1, c.Nq = 6, c.Nk = 8, c.Hq = 3, c.Hk = 1, c.window_left = 1, c.window_right = 2, c.scale = 0.3,
        c.sigmoid_bias = 0.7, c.alpha = 0.5;
        specs.push_back(c);
    }
    return specs;
}

}  // namespace

namespace {

// the CPU's own conversions, to nearest even
#if defined(__x86_64__)
float hw_half_to_float(uint16_t h) { return _cvtsh_ss(h); }
uint16_t hw_float_to_half(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
#else
float hw_half_to_float(uint16_t h) {
    __fp16 x;
    std::memcpy(&x, &h, 2);
    return float(x);
}
uint16_t hw_float_to_half(float f) {
    const __fp16 x = __fp16(f);
    uint16_t h;
    std::memcpy(&h, &x, 2);
    return h;
}
#endif

}  // namespace

TEST(half_conversion_matches_hardware) {
    // every half → float exactly
    for (uint32_t h = 0; h < 65536; ++h) {
        const float a = half_to_float(uint16_t(h)), b = hw_half_to_float(uint16_t(h));
        if (std::isnan(b)) {
            EXPECT(std::isnan(a), "half %04x: expected NaN", h);
        } else {
            EXPECT(bits(a) == bits(b), "half %04x: %g vs the CPU's %g", h, a, b);
        }
    }
    // float → half: edges (ties, subnormals, overflow) and random bit patterns
    std::vector<uint32_t> probes = {0x00000000, 0x80000000, 0x3f800000, 0x477fe000, 0x477ff000, 0x477fefff,
                                    0x7f800000, 0xff800000, 0x33000000, 0x33000001, 0x32ffffff, 0x38800000,
                                    0x387fc000, 0x387fe000, 0x3a001000, 0x3a003000, 0x00000001, 0x7f7fffff};
    Rng rng(1);
    for (int i = 0; i < 2000000; ++i) probes.push_back(uint32_t(rng.next_u64()));
    for (uint32_t u : probes) {
        const float f = from_bits(u);
        const uint16_t ours = float_to_half(f), hw = hw_float_to_half(f);
        if (std::isnan(f)) {
            EXPECT((ours & 0x7c00) == 0x7c00 && (ours & 0x3ff) != 0, "float %08x: NaN must stay NaN", u);
        } else {
            EXPECT(ours == hw, "float %08x (%g): half %04x vs the CPU's %04x", u, f, ours, hw);
        }
    }
}

TEST(bf16_conversion_is_nearest_even) {
    Rng rng(2);
    for (int i = 0; i < 2000000; ++i) {
        const uint32_t u = uint32_t(rng.next_u64());
        const float f = from_bits(u);
        const uint16_t ours = float_to_bf16(f);
        if (std::isnan(f)) {
            EXPECT(std::isnan(bf16_to_float(ours)), "float %08x: NaN must stay NaN", u);
            continue;
        }
        // the two bf16 neighbours of f, nearest by exact double distance, ties to the even one
        const uint16_t lo = uint16_t(u >> 16), hi = uint16_t(lo + 1);
        const double dl = std::fabs(double(f) - double(bf16_to_float(lo)));
        const double dh = (hi & 0x7f80) == 0x7f80 && (lo & 0x7f80) != 0x7f80
                              ? std::fabs(double(f) - std::ldexp(1.0, 128) * (f < 0 ? -1 : 1))  // overflow limit
                              : std::fabs(double(f) - double(bf16_to_float(hi)));
        uint16_t want = dl < dh ? lo : dh < dl ? hi : ((lo & 1) ? hi : lo);
        if ((lo & 0x7fff) == 0x7f80) want = lo;  // infinity itself
        EXPECT(ours == want, "float %08x (%.9g): bf16 %04x, expected %04x", u, f, ours, want);
    }
    EXPECT(float_to_bf16(1.0f) == 0x3f80, "bf16(1)");
    EXPECT(float_to_bf16(from_bits(0x3f808000)) == 0x3f80, "tie to even (down)");
    EXPECT(float_to_bf16(from_bits(0x3f818000)) == 0x3f82, "tie to even (up)");
    EXPECT(float_to_bf16(from_bits(0x7f7fffff)) == 0x7f80, "overflow rounds to inf");
}

// A second formula: one element at a time, dot products as plain sums, softmax without the max shift.
TEST(forward64_matches_elementwise_formula) {
    int idx = 0;
    for (const Spec& s : small_specs()) {
        Rng rng(100 + idx++);
        const auto q = to_double(random_values(rng, s.q_elems(), kFp32));
        const auto k = to_double(random_values(rng, s.kv_elems(), kFp32));
        const auto v = to_double(random_values(rng, s.kv_elems(), kFp32));
        const Forward<double> f = forward64(s, q.data(), k.data(), v.data());
        const double scale = std::isnan(s.scale) ? 1 / std::sqrt(double(s.d)) : s.scale;
        const double bias = std::isnan(s.sigmoid_bias) ? -std::log(double(s.Nk)) : s.sigmoid_bias;
        const double fac = std::pow(double(s.Nk), -s.alpha);
        for (int64_t b = 0; b < s.B; ++b)
            for (int64_t h = 0; h < s.Hq; ++h) {
                const int64_t hk = h * s.Hk / s.Hq;  // same as h / (Hq / Hk)
                for (int64_t i = 0; i < s.Nq; ++i) {
                    std::vector<double> p(s.Nk, 0.0);
                    double z = 0;
                    bool any = false;
                    for (int64_t j = 0; j < s.Nk; ++j) {
                        const int64_t diag = i + s.Nk - s.Nq;
                        const bool ok = (!s.causal || j <= diag) &&
                                        (s.window_left < 0 || j >= diag - s.window_left) &&
                                        (s.window_right < 0 || j <= diag + s.window_right);
                        if (!ok) continue;
                        any = true;
                        double dot = 0;
                        for (int64_t c = 0; c < s.d; ++c)
                            dot += q[((b * s.Nq + i) * s.Hq + h) * s.d + c] * k[((b * s.Nk + j) * s.Hk + hk) * s.d + c];
                        const double x = scale * dot;
                        switch (s.score) {
                            case kSoftmax: p[j] = std::exp(x), z += p[j]; break;
                            case kSigmoid: p[j] = 1 / (1 + std::exp(-(x + bias))); break;
                            case kRelu: p[j] = (x > 0 ? x : 0) * fac; break;
                            case kRelu2: p[j] = (x > 0 ? x * x : 0) * fac; break;
                            case kGelu: p[j] = x * 0.5 * std::erfc(-x / std::sqrt(2.0)) * fac; break;
                            case kSoftplus: p[j] = std::log(1 + std::exp(x)) * fac; break;
                            default: p[j] = x * fac; break;
                        }
                    }
                    if (s.score == kSoftmax) {
                        const double lse = f.lse[(b * s.Hq + h) * s.Nq + i];
                        if (!any) {
                            EXPECT(lse == std::numeric_limits<double>::infinity(), "%s row %lld: LSE %g, want +inf",
                                   s.describe().c_str(), (long long)i, lse);
                        } else {
                            EXPECT(std::fabs(lse - std::log(z)) < 1e-12, "%s: LSE %g vs %g", s.describe().c_str(), lse,
                                   std::log(z));
                            for (auto& e : p) e /= z;
                        }
                    }
                    for (int64_t c = 0; c < s.d; ++c) {
                        double o = 0;
                        for (int64_t j = 0; j < s.Nk; ++j) o += p[j] * v[((b * s.Nk + j) * s.Hk + hk) * s.d + c];
                        const double got = f.out[((b * s.Nq + i) * s.Hq + h) * s.d + c];
                        EXPECT(std::fabs(got - o) <= 1e-12 * (1 + std::fabs(o)), "%s: out[%lld,%lld,%lld,%lld] %.17g vs %.17g",
                               s.describe().c_str(), (long long)b, (long long)i, (long long)h, (long long)c, got, o);
                    }
                }
            }
    }
}

// backward64 against central differences of forward64: validates the dS formulas of §4.
TEST(backward64_matches_finite_differences) {
    int idx = 0;
    for (const Spec& s : small_specs()) {
        Rng rng(200 + idx++);
        std::vector<double> q, k, v, dout;
        for (int attempt = 0;; ++attempt) {  // relu/relu2: keep every allowed S away from the kink
            q = to_double(random_values(rng, s.q_elems(), kFp32));
            k = to_double(random_values(rng, s.kv_elems(), kFp32));
            if (min_abs_score(s, q.data(), k.data()) > 1e-3 || attempt > 1000) break;
        }
        v = to_double(random_values(rng, s.kv_elems(), kFp32));
        dout = to_double(random_values(rng, s.q_elems(), kFp32));
        const Grads<double> g = backward64(s, q.data(), k.data(), v.data(), dout.data());
        const Grads<double> fd = fd_grads(s, q.data(), k.data(), v.data(), dout.data());
        const char* names[3] = {"dq", "dk", "dv"};
        const std::vector<double>* a[3] = {&g.dq, &g.dk, &g.dv};
        const std::vector<double>* e[3] = {&fd.dq, &fd.dk, &fd.dv};
        for (int t = 0; t < 3; ++t) {
            double mag = 1, err = 0;
            size_t at = 0;
            for (size_t i = 0; i < e[t]->size(); ++i) mag = std::max(mag, std::fabs((*e[t])[i]));
            for (size_t i = 0; i < e[t]->size(); ++i) {
                const double d = std::fabs((*a[t])[i] - (*e[t])[i]);
                if (!(d <= err)) err = d, at = i;
            }
            EXPECT(err <= 1e-7 * mag, "%s %s: analytic vs finite differences differ by %.3g at %zu (%.12g vs %.12g)",
                   s.describe().c_str(), names[t], err, at, (*a[t])[at], (*e[t])[at]);
        }
    }
}

// The naive computation must be close to ref64 in fp32 and visibly rounded in bf16/fp16 (a naive error
// of 0 would make the §6 bound vacuous-ly tight; an error of 1 would make it vacuous).
TEST(naive_same_dtype_is_sane) {
    int idx = 0;
    for (const Spec& s : small_specs()) {
        for (int dtype : {kFp32, kFp16, kBf16}) {
            Rng rng(300 + idx++);
            const auto qf = random_values(rng, s.q_elems(), dtype), kf = random_values(rng, s.kv_elems(), dtype),
                       vf = random_values(rng, s.kv_elems(), dtype), gf = random_values(rng, s.q_elems(), dtype);
            const auto q = to_double(qf), k = to_double(kf), v = to_double(vf), g = to_double(gf);
            const Forward<double> f64 = forward64(s, q.data(), k.data(), v.data());
            const Forward<float> fn = forward_naive(s, dtype, qf.data(), kf.data(), vf.data());
            const Grads<double> g64 = backward64(s, q.data(), k.data(), v.data(), g.data());
            const Grads<float> gn = backward_naive(s, dtype, qf.data(), kf.data(), vf.data(), fn.out.data(), gf.data());
            const double tol = dtype == kFp32 ? 1e-5 : dtype == kFp16 ? 2e-2 : 1.5e-1;
            auto maxdiff = [](const std::vector<float>& a, const std::vector<double>& b) {
                double m = 0;
                for (size_t i = 0; i < a.size(); ++i)
                    if (std::isfinite(b[i])) m = std::max(m, std::fabs(double(a[i]) - b[i]));
                    else if (double(a[i]) != b[i]) m = std::numeric_limits<double>::infinity();
                return m;
            };
            const double eo = maxdiff(fn.out, f64.out), eq = maxdiff(gn.dq, g64.dq), ek = maxdiff(gn.dk, g64.dk),
                         ev = maxdiff(gn.dv, g64.dv);
            EXPECT(eo < tol && eq < tol && ek < tol && ev < tol, "%s %s: naive errors out %.3g dq %.3g dk %.3g dv %.3g",
                   s.describe().c_str(), dtype_name(dtype), eo, eq, ek, ev);
            if (s.score == kSoftmax) EXPECT(maxdiff(fn.lse, f64.lse) < tol, "%s: naive lse", s.describe().c_str());
            if (dtype != kFp32) EXPECT(eo > 0, "%s %s: naive out exactly equals ref64", s.describe().c_str(), dtype_name(dtype));
        }
    }
}

TEST(check_rule_catches_what_it_must) {
    const double inf = std::numeric_limits<double>::infinity();
    const std::vector<double> ref = {1.0, 2.0, inf, -0.5};
    const std::vector<float> naive = {1.001f, 2.0f, float(inf), -0.5f};  // naive error 1e-3: bound ≈ 2e-3
    auto run = [&](std::vector<float> ours) {
        return check_rule("selftest", "x", ours.data(), ref.data(), naive.data(), ref.size(), {2, 2}).ok;
    };
    std::fprintf(stderr, "  (the RULE FAIL lines below are expected)\n");
    EXPECT(run({1.0f, 2.0f, float(inf), -0.5f}), "exact must pass");
    EXPECT(run({1.0019f, 2.0f, float(inf), -0.5f}), "within 2x naive must pass");
    EXPECT(!run({1.0025f, 2.0f, float(inf), -0.5f}), "beyond 2x naive + 1e-5 must fail");
    EXPECT(!run({1.0f, NAN, float(inf), -0.5f}), "NaN where ref64 is finite must fail");
    EXPECT(!run({1.0f, 2.0f, NAN, -0.5f}), "NaN where ref64 is inf must fail");
    EXPECT(!run({1.0f, 2.0f, float(-inf), -0.5f}), "wrong infinity must fail");
    EXPECT(!run({1.0f, 2.0f, 3.0f, -0.5f}), "finite where ref64 is inf must fail");
    EXPECT(!run({1.0f, 2.0f, float(inf), float(inf)}), "inf where ref64 is finite must fail");
    const std::vector<double> r0 = {0.0};
    const std::vector<float> n0 = {0.0f}, o0 = {2e-5f};
    EXPECT(!check_rule("selftest", "y", o0.data(), r0.data(), n0.data(), 1).ok, "1e-5 absolute slack only");
}

int main(int argc, char** argv) { return th::run_all(std::vector<std::string>(argv + 1, argv + argc)); }
