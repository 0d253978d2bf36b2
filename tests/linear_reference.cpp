#include "linear_reference.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace lref {

namespace {

constexpr double kPi = 3.14159265358979323846;

// Arithmetic in R with a rounding step after every operation a framework would materialise:
// R = double with identity rounding (ref64), or float rounded to the dtype (naive).
template <class R>
struct Num {
    int dtype;
    // A value beyond the dtype's range stays in fp32: rows whose floor ε binds have dO/ε ≈ 1e6, which
    // fp16 cannot hold, and the inf · 0 = NaN that follows would make the §6 bound meaningless.
    R rnd(R x) const {
        if constexpr (sizeof(R) == sizeof(double)) return x;
        else {
            const float r = ref::round_to(dtype, x);
            return std::isinf(r) && std::isfinite(x) ? x : r;
        }
    }
};

template <class R>
R phi(int map, R x) {
    if (map == kCosformer) return x > 0 ? x : R(0);
    return x > 0 ? x + R(1) : R(std::exp(x));  // elu(x) + 1
}
template <class R>
R phi_grad(int map, R x) {
    if (map == kCosformer) return x > 0 ? R(1) : R(0);
    return x > 0 ? R(1) : R(std::exp(x));
}

struct Index {
    const Spec& s;
    size_t q(int64_t b, int64_t i, int64_t h, int64_t c) const { return size_t(((b * s.Nq + i) * s.Hq + h) * s.d + c); }
    size_t k(int64_t b, int64_t j, int64_t h, int64_t c) const { return size_t(((b * s.Nk + j) * s.Hk + h) * s.d + c); }
};

// Per (b, h): features of every query and key row as the two halves [φ sin θ, φ cos θ] (cosFormer) or
// φ (elu), rounded; S, num, den, O; and, when dout is given, every gradient.
template <class R>
void core(const Spec& s, int dtype, const R* q, const R* k, const R* v, const R* dout, std::vector<R>* out,
          Grads<R>* grads, std::vector<double>* dens) {
    const Num<R> n{dtype};
    const Index ix{s};
    const int64_t group = s.Hq / s.Hk, F = s.map == kCosformer ? 2 * s.d : s.d;
    const double M = s.eff_length();
    if (out) out->assign(s.q_elems(), R(0));
    if (grads) {
        grads->dq.assign(s.q_elems(), R(0));
        grads->dk.assign(s.kv_elems(), R(0));
        grads->dv.assign(s.kv_elems(), R(0));
    }
    // one (batch, kv head) unit: its query heads, its dK and dV, and its denominators in row order
    auto unit = [&](int64_t b, int64_t hk, std::vector<double>* unit_dens) {
        std::vector<R> fq(size_t(s.Nq * F)), fk(size_t(s.Nk * F)), S(size_t(s.Nq * s.Nk)), dS(size_t(s.Nq * s.Nk));
        std::vector<R> O(size_t(s.Nq * s.d)), den(size_t(s.Nq)), nrm(size_t(s.Nq)), dnum(size_t(s.Nq * s.d));
        std::vector<R> rr(size_t(s.Nq));
        std::vector<R> dfq(size_t(s.Nq * F)), dfk(size_t(s.Nk * F));
        std::vector<R> dk_acc(size_t(s.Nk * s.d)), dv_acc(size_t(s.Nk * s.d));
        auto features = [&](const R* x, bool query, int64_t b, int64_t h, int64_t rows, R* f) {
            for (int64_t r = 0; r < rows; ++r) {
                const int64_t pos = query ? r + s.Nk - s.Nq : r;
                const double th = kPi * double(pos) / (2 * M);
                for (int64_t c = 0; c < s.d; ++c) {
                    const R xv = x[query ? ix.q(b, r, h, c) : ix.k(b, r, h, c)];
                    const R p = n.rnd(phi(s.map, xv));
                    if (s.map == kCosformer) {
                        f[r * F + c] = n.rnd(p * R(std::sin(th)));
                        f[r * F + s.d + c] = n.rnd(p * R(std::cos(th)));
                    } else {
                        f[r * F + c] = p;
                    }
                }
            }
        };
        // fp64: φ of every element once, for the written-out quadratic form below
        std::vector<double> phi_q, phi_k;
        auto phi_rows = [&](const R* x, bool query, int64_t h, int64_t rows, std::vector<double>& f) {
            f.resize(size_t(rows * s.d));
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t c = 0; c < s.d; ++c)
                    f[size_t(r * s.d + c)] = phi(s.map, double(x[query ? ix.q(b, r, h, c) : ix.k(b, r, h, c)]));
        };
        features(k, false, b, hk, s.Nk, fk.data());
        if constexpr (sizeof(R) == sizeof(double)) phi_rows(k, false, hk, s.Nk, phi_k);
        for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
            features(q, true, b, h, s.Nq, fq.data());
            if constexpr (sizeof(R) == sizeof(double)) phi_rows(q, true, h, s.Nq, phi_q);
            for (int64_t i = 0; i < s.Nq; ++i) {
                R sum = 0;  // den, accumulated as a framework's rowsum (fp32 for the naive)
                for (int64_t j = 0; j < s.Nk; ++j) {
                    R x = 0;
                    if (s.allowed(i, j)) {
                        if constexpr (sizeof(R) == sizeof(double)) {
                            // fp64: the quadratic form with the cosine of the difference, written out
                            double dot = 0;
                            for (int64_t c = 0; c < s.d; ++c)
                                dot += phi_q[size_t(i * s.d + c)] * phi_k[size_t(j * s.d + c)];
                            const double w = s.map == kCosformer
                                                 ? std::cos(kPi * double(i + s.Nk - s.Nq - j) / (2 * M))
                                                 : 1.0;
                            x = dot * w;
                        } else {
                            for (int64_t c = 0; c < F; ++c) x += fq[i * F + c] * fk[j * F + c];
                            x = n.rnd(x);
                        }
                    }
                    S[i * s.Nk + j] = x;
                    sum += x;
                }
                den[i] = n.rnd(sum);
                nrm[i] = den[i] > R(s.epsilon) ? den[i] : R(s.epsilon);
                for (int64_t c = 0; c < s.d; ++c) {
                    R acc = 0;
                    for (int64_t j = 0; j < s.Nk; ++j) acc += S[i * s.Nk + j] * v[ix.k(b, j, hk, c)];
                    O[i * s.d + c] = n.rnd(n.rnd(acc) / nrm[i]);
                    if (out) (*out)[ix.q(b, i, h, c)] = O[i * s.d + c];
                }
                if (unit_dens) unit_dens->push_back(double(den[i]));
            }
            if (!grads) continue;
            // L = Σ_i g_i·O_i, O_i = num_i / n_i, n_i = max(den_i, ε):
            // ∂L/∂S_ij = (g_i·v_j)/n_i − [den_i > ε](g_i·O_i)/n_i
            for (int64_t i = 0; i < s.Nq; ++i) {
                R u = 0;
                for (int64_t c = 0; c < s.d; ++c) u += dout[ix.q(b, i, h, c)] * O[i * s.d + c];
                rr[i] = den[i] > R(s.epsilon) ? n.rnd(n.rnd(u) / nrm[i]) : R(0);
                for (int64_t c = 0; c < s.d; ++c) dnum[i * s.d + c] = n.rnd(dout[ix.q(b, i, h, c)] / nrm[i]);
                for (int64_t j = 0; j < s.Nk; ++j) {
                    R x = 0;
                    if (s.allowed(i, j)) {
                        for (int64_t c = 0; c < s.d; ++c) x += dnum[i * s.d + c] * v[ix.k(b, j, hk, c)];
                        x = n.rnd(n.rnd(x) - rr[i]);
                    }
                    dS[i * s.Nk + j] = x;
                }
            }
            // dV_j += Σ_i S_ij dnum_i ; df̃q = dS f̃k ; df̃k = dSᵀ f̃q (features of the rounded path;
            // for fp64 rebuilt from the same φ and angles, so equal to the written-out form)
            if constexpr (sizeof(R) == sizeof(double)) features(q, true, b, h, s.Nq, fq.data());
            for (int64_t j = 0; j < s.Nk; ++j)
                for (int64_t c = 0; c < s.d; ++c) {
                    R acc = 0;
                    for (int64_t i = 0; i < s.Nq; ++i) acc += S[i * s.Nk + j] * dnum[i * s.d + c];
                    dv_acc[j * s.d + c] += n.rnd(acc);
                }
            for (int64_t i = 0; i < s.Nq; ++i)
                for (int64_t c = 0; c < F; ++c) {
                    R acc = 0;
                    for (int64_t j = 0; j < s.Nk; ++j) acc += dS[i * s.Nk + j] * fk[j * F + c];
                    dfq[i * F + c] = n.rnd(acc);
                }
            for (int64_t j = 0; j < s.Nk; ++j)
                for (int64_t c = 0; c < F; ++c) {
                    R acc = 0;
                    for (int64_t i = 0; i < s.Nq; ++i) acc += dS[i * s.Nk + j] * fq[i * F + c];
                    dfk[j * F + c] = n.rnd(acc);
                }
            // through the feature map: df̃ → dφ (sin, cos halves) → dx = φ'(x) dφ
            for (int64_t i = 0; i < s.Nq; ++i) {
                const double th = kPi * double(i + s.Nk - s.Nq) / (2 * M);
                for (int64_t c = 0; c < s.d; ++c) {
                    const R x = q[ix.q(b, i, h, c)];
                    const R dphi = s.map == kCosformer
                                       ? dfq[i * F + c] * R(std::sin(th)) + dfq[i * F + s.d + c] * R(std::cos(th))
                                       : dfq[i * F + c];
                    grads->dq[ix.q(b, i, h, c)] = n.rnd(phi_grad(s.map, x) * n.rnd(dphi));
                }
            }
            for (int64_t j = 0; j < s.Nk; ++j) {
                const double th = kPi * double(j) / (2 * M);
                for (int64_t c = 0; c < s.d; ++c) {
                    const R x = k[ix.k(b, j, hk, c)];
                    const R dphi = s.map == kCosformer
                                       ? dfk[j * F + c] * R(std::sin(th)) + dfk[j * F + s.d + c] * R(std::cos(th))
                                       : dfk[j * F + c];
                    dk_acc[j * s.d + c] += phi_grad(s.map, x) * n.rnd(dphi);
                }
            }
        }
        if (!grads) return;
        for (int64_t j = 0; j < s.Nk; ++j)
            for (int64_t c = 0; c < s.d; ++c) {
                grads->dk[ix.k(b, j, hk, c)] = n.rnd(dk_acc[j * s.d + c]);
                grads->dv[ix.k(b, j, hk, c)] = n.rnd(dv_acc[j * s.d + c]);
            }
    };
    // Units write disjoint heads, so they run on all hardware threads (the quadratic form of a 1000-row case
    // took seconds on one core); the same sums in the same order, so the same bits as one thread.
    const int64_t units = s.B * s.Hk;
    std::vector<std::vector<double>> unit_dens(size_t(dens ? units : 0));
    ref::parallel_for(units, [&](int64_t u) { unit(u / s.Hk, u % s.Hk, dens ? &unit_dens[size_t(u)] : nullptr); });
    for (const std::vector<double>& d : unit_dens) dens->insert(dens->end(), d.begin(), d.end());
}

}  // namespace

std::string Spec::describe() const {
    char buf[256];
    std::snprintf(buf, sizeof buf, "B=%lld Nq=%lld Nk=%lld Hq=%lld Hk=%lld d=%lld %s%s M=%g eps=%g", (long long)B,
                  (long long)Nq, (long long)Nk, (long long)Hq, (long long)Hk, (long long)d,
                  map == kCosformer ? "cosformer" : "linear_elu", causal ? " causal" : "", eff_length(), epsilon);
    return buf;
}

std::vector<double> forward64(const Spec& s, const double* q, const double* k, const double* v) {
    std::vector<double> out;
    core<double>(s, 0, q, k, v, nullptr, &out, nullptr, nullptr);
    return out;
}

Grads<double> backward64(const Spec& s, const double* q, const double* k, const double* v, const double* dout) {
    Grads<double> g;
    core<double>(s, 0, q, k, v, dout, nullptr, &g, nullptr);
    return g;
}

std::vector<float> forward_naive(const Spec& s, int dtype, const float* q, const float* k, const float* v) {
    std::vector<float> out;
    core<float>(s, dtype, q, k, v, nullptr, &out, nullptr, nullptr);
    return out;
}

Grads<float> backward_naive(const Spec& s, int dtype, const float* q, const float* k, const float* v,
                            const float* dout) {
    Grads<float> g;
    core<float>(s, dtype, q, k, v, dout, nullptr, &g, nullptr);
    return g;
}

std::vector<double> denominators(const Spec& s, const double* q, const double* k) {
    std::vector<double> dens;
    core<double>(s, 0, q, k, k, nullptr, nullptr, nullptr, &dens);
    return dens;
}

Grads<double> fd_grads(const Spec& s, const double* q, const double* k, const double* v, const double* dout,
                       double h) {
    std::vector<double> x[3] = {std::vector<double>(q, q + s.q_elems()), std::vector<double>(k, k + s.kv_elems()),
                                std::vector<double>(v, v + s.kv_elems())};
    Grads<double> g;
    std::vector<double>* dst[3] = {&g.dq, &g.dk, &g.dv};
    auto loss = [&]() {
        const std::vector<double> o = forward64(s, x[0].data(), x[1].data(), x[2].data());
        double l = 0;
        for (size_t i = 0; i < o.size(); ++i) l += o[i] * dout[i];
        return l;
    };
    for (int t = 0; t < 3; ++t) {
        dst[t]->resize(x[t].size());
        for (size_t e = 0; e < x[t].size(); ++e) {
            const double keep = x[t][e];
            x[t][e] = keep + h;
            const double lp = loss();
            x[t][e] = keep - h;
            const double lm = loss();
            x[t][e] = keep;
            (*dst[t])[e] = (lp - lm) / (2 * h);
        }
    }
    return g;
}

}  // namespace lref
