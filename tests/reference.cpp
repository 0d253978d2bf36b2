// Naive attention for tests: S materialised per (batch, head), the score of §4 applied element-wise,
// then plain matrix products. The loops run "k-outer, j-inner" (axpy form) so every element is
// accumulated sequentially — the order a naive fp32 GEMM uses — and the compiler still vectorises.
#include "reference.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>
#include <thread>
#include <type_traits>

namespace ref {

const char* dtype_name(int dtype) {
    switch (dtype) {
        case kFp32: return "fp32";
        case kFp16: return "fp16";
        case kBf16: return "bf16";
        default: return "?";
    }
}

const char* score_name(int score) {
    static const char* names[] = {"softmax", "sigmoid", "relu", "relu2", "gelu", "softplus", "identity"};
    return score >= 0 && score < kScoreCount ? names[score] : "?";
}

// ---- Spec -----------------------------------------------------------------------------------------

double Spec::eff_scale() const { return std::isnan(scale) ? 1.0 / std::sqrt(double(d)) : scale; }
double Spec::eff_bias() const { return std::isnan(sigmoid_bias) ? -std::log(double(Nk)) : sigmoid_bias; }
double Spec::pointwise_factor() const { return std::pow(double(Nk), -alpha); }

bool Spec::allowed(int64_t i, int64_t j) const {
    const int64_t diag = i + Nk - Nq;  // bottom-right alignment
    if (causal && j > diag) return false;
    if (window_left >= 0 && j < diag - window_left) return false;
    if (window_right >= 0 && j > diag + window_right) return false;
    return true;
}

void Spec::allowed_row(int64_t b, int64_t h, int64_t i, unsigned char* out) const {
    if (strided > 0 || block_m > 0 || !mask.empty() || !bias.empty()) {
        for (int64_t j = 0; j < Nk; ++j) out[j] = allowed_at(b, h, i, j);
        return;
    }
    for (int64_t j = 0; j < Nk; ++j) out[j] = allowed(i, j);  // causal and window alone: allowed_at's answer
}

// (a new kind of mask here joins allowed_row's guard above too)
bool Spec::allowed_at(int64_t b, int64_t h, int64_t i, int64_t j) const {
    const int64_t diag = i + Nk - Nq;
    if (causal && j > diag) return false;
    const bool window = window_left >= 0 || window_right >= 0;
    if (strided > 0) {
        const int64_t dist = diag > j ? diag - j : j - diag;
        // with a window, window ∪ strided is the one mask
        if (!(dist % strided == 0 || (window && allowed(i, j)))) return false;
    } else if (!allowed(i, j)) {
        return false;
    }
    if (block_m > 0) {
        const int64_t rows = (Nq + block_m - 1) / block_m, cols = (Nk + block_n - 1) / block_n;
        if (!layout[size_t(((layout_h == 1 ? 0 : h) * rows + i / block_m) * cols + j / block_n)]) return false;
    }
    if (!mask.empty() &&
        !mask[size_t((((mask_b == 1 ? 0 : b) * mask_h + (mask_h == 1 ? 0 : h)) * mask_q + (mask_q == 1 ? 0 : i)) * Nk + j)])
        return false;
    if (!bias.empty() && beta(b, h, i, j) == -std::numeric_limits<double>::infinity()) return false;
    return true;
}

double Spec::beta(int64_t b, int64_t h, int64_t i, int64_t j) const {
    double x = 0;
    if (!alibi_slopes.empty()) {
        const double slope = alibi_slopes[size_t(alibi_per_batch ? b * Hq + h : h)];
        const int64_t diag = i + Nk - Nq;
        x -= slope * double(diag > j ? diag - j : j - diag);
    }
    if (!bias.empty())
        x += bias[size_t((((bias_b == 1 ? 0 : b) * bias_h + (bias_h == 1 ? 0 : h)) * bias_q + (bias_q == 1 ? 0 : i)) * Nk + j)];
    return x;
}

double Spec::lambda(int64_t i) const {
    if (logn_train <= 0) return 1.0;
    int64_t n = 0;
    for (int64_t j = 0; j < Nk; ++j) n += allowed(i, j);
    if (n <= 1) return 1.0;
    return std::max(1.0, std::log(double(n)) / std::log(double(logn_train)));
}

std::string Spec::describe() const {
    char buf[256];
    std::snprintf(buf, sizeof buf, "B=%lld Nq=%lld Nk=%lld Hq=%lld Hk=%lld d=%lld %s%s wl=%lld wr=%lld",
                  (long long)B, (long long)Nq, (long long)Nk, (long long)Hq, (long long)Hk, (long long)d,
                  score_name(score), causal ? " causal" : "", (long long)window_left, (long long)window_right);
    std::string s = buf;
    if (!std::isnan(scale)) s += " scale=" + std::to_string(scale);
    if (!std::isnan(sigmoid_bias)) s += " bias=" + std::to_string(sigmoid_bias);
    if (alpha != 1.0) s += " alpha=" + std::to_string(alpha);
    if (!alibi_slopes.empty()) s += alibi_per_batch ? " alibi[B,H]" : " alibi[H]";
    if (!bias.empty()) s += " bias[" + std::to_string(bias_b) + "," + std::to_string(bias_h) + "," + std::to_string(bias_q) + ",Nk]";
    if (!mask.empty()) s += " mask[" + std::to_string(mask_b) + "," + std::to_string(mask_h) + "," + std::to_string(mask_q) + ",Nk]";
    if (strided > 0) s += " strided=" + std::to_string(strided);
    if (block_m > 0) s += " blocks=" + std::to_string(block_m) + "x" + std::to_string(block_n);
    if (logn_train > 0) s += " logn=" + std::to_string(logn_train);
    return s;
}

// ---- the core -------------------------------------------------------------------------------------
namespace {

template <class R>
R sigmoid(R x) {
    if (x >= 0) return R(1) / (R(1) + std::exp(-x));
    const R e = std::exp(x);
    return e / (R(1) + e);
}
template <class R>
R softplus(R x) {
    return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}
template <class R>
R gelu(R x) {
    return R(0.5) * x * (R(1) + std::erf(x * R(0.70710678118654752440)));
}
template <class R>
R gelu_grad(R x) {
    return R(0.5) * (R(1) + std::erf(x * R(0.70710678118654752440))) +
           x * std::exp(R(-0.5) * x * x) * R(0.39894228040143267794);
}

// out[j] += a[c]·bt[c·n + j] for c = 0 .. d−1 in that order, four c per pass over out: each out[j] gets the same
// products added in the same order as one c per pass (the same bits), with a quarter of the loads and stores of out
// (the row's stores bound the one-c loop)
template <class R>
void add_row_products(R* __restrict out, const R* __restrict a, const R* __restrict bt, int64_t d, int64_t n) {
    int64_t c = 0;
    for (; c + 4 <= d; c += 4) {
        const R a0 = a[c], a1 = a[c + 1], a2 = a[c + 2], a3 = a[c + 3];
        const R *b0 = bt + c * n, *b1 = b0 + n, *b2 = b1 + n, *b3 = b2 + n;
        for (int64_t j = 0; j < n; ++j) {
            R x = out[j];
            x += a0 * b0[j];
            x += a1 * b1[j];
            x += a2 * b2[j];
            x += a3 * b3[j];
            out[j] = x;
        }
    }
    for (; c < d; ++c) {
        const R ac = a[c];
        const R* b = bt + c * n;
        for (int64_t j = 0; j < n; ++j) out[j] += ac * b[j];
    }
}

// Buffers kept from one call to the next (every caller's, for the process's life, at the largest size asked):
// under ASan each large allocation is a fresh mapping whose pages fault in again. test_masks under the sanitizers
// (avx2): 44 s with fresh buffers per task, 41–43 s with one set per worker, 33–37 s with these kept (page faults
// 1.72 M → 0.84 M). Callers on several threads each take their own.
template <class T>
class Kept {
public:
    std::vector<T> take(size_t n) {
        std::vector<T> v;
        {
            const std::lock_guard<std::mutex> hold(lock_);
            while (v.size() < n && !free_.empty()) {
                v.push_back(std::move(free_.back()));
                free_.pop_back();
            }
        }
        v.resize(n);
        return v;
    }
    void give(std::vector<T>& v) {
        const std::lock_guard<std::mutex> hold(lock_);
        for (T& x : v) free_.push_back(std::move(x));
        v.clear();
    }

private:
    std::mutex lock_;
    std::vector<T> free_;
};

// R = double with dtype < 0: ref64. R = float: naive computation in dtype.
template <class R>
class Core {
public:
    Core(const Spec& s, int dtype) : s_(s), dtype_(dtype) {
        scale_ = R(s.eff_scale());
        bias_ = R(s.eff_bias());
        factor_ = R(s.pointwise_factor());
        ext_ = !s.alibi_slopes.empty() || !s.bias.empty();
    }

    R rnd(R x) const {
        if constexpr (std::is_same_v<R, double>)
            return x;
        else
            return round_to(dtype_, x);  // (inline: fp32 returns x)
    }

    // A task's scratch: Q rows [r0, r1) of one head, its K, Kᵀ, V, Vᵀ, and S, P, dS (M2) of those rows; the
    // backward's dO, O, D and dQ row of them. One per worker, reused by its tasks (parallel_for).
    struct Head {
        int64_t r0 = 0, r1 = 0;
        std::vector<R> q, k, kt, v, vt, S, P, M2, lse, dO, o, D, dq_acc;
        std::vector<unsigned char> allowed;  // Spec::allowed_at of every (row, key), once per row
    };

    // S, P (and lse) of rows [r0, r1) of one (b, h); row i of the problem is row i − r0 here.
    void scores(const R* q, const R* k, const R* v, int64_t b, int64_t h, int64_t r0, int64_t r1, Head& w) const {
        const int64_t Nq = s_.Nq, Nk = s_.Nk, d = s_.d, hk = h / (s_.Hq / s_.Hk), m = r1 - r0;
        w.r0 = r0, w.r1 = r1;
        w.q.resize(m * d);
        w.k.resize(Nk * d);
        w.kt.resize(d * Nk);
        w.v.resize(Nk * d);
        w.vt.resize(d * Nk);
        w.S.assign(m * Nk, R(0));
        w.P.assign(m * Nk, R(0));
        w.lse.assign(m, R(0));
        w.allowed.resize(m * Nk);
        for (int64_t i = r0; i < r1; ++i) s_.allowed_row(b, h, i, w.allowed.data() + (i - r0) * Nk);
        for (int64_t i = r0; i < r1; ++i)
            std::copy_n(q + ((b * Nq + i) * s_.Hq + h) * d, d, w.q.data() + (i - r0) * d);
        for (int64_t j = 0; j < Nk; ++j) {
            const R* kr = k + ((b * Nk + j) * s_.Hk + hk) * d;
            const R* vr = v + ((b * Nk + j) * s_.Hk + hk) * d;
            for (int64_t c = 0; c < d; ++c) {
                w.kt[c * Nk + j] = kr[c];
                w.vt[c * Nk + j] = vr[c];
            }
            std::copy_n(kr, d, w.k.data() + j * d);
            std::copy_n(vr, d, w.v.data() + j * d);
        }
        for (int64_t i = r0; i < r1; ++i) {
            const int64_t r = i - r0;
            R* Srow = w.S.data() + r * Nk;
            add_row_products(Srow, w.q.data() + r * d, w.kt.data(), d, Nk);
            const R sl = R(scale_ * R(s_.lambda(i)));
            for (int64_t j = 0; j < Nk; ++j) Srow[j] = rnd(sl * Srow[j]);
            if (ext_)
                for (int64_t j = 0; j < Nk; ++j) Srow[j] = rnd(Srow[j] + R(s_.beta(b, h, i, j)));
            R* Prow = w.P.data() + r * Nk;
            const unsigned char* allowed = w.allowed.data() + r * Nk;
            if (s_.score == kSoftmax) {
                R mx = -std::numeric_limits<R>::infinity();
                for (int64_t j = 0; j < Nk; ++j)
                    if (allowed[j]) mx = std::max(mx, Srow[j]);
                if (mx == -std::numeric_limits<R>::infinity()) {  // no allowed key: O = 0, LSE = +inf
                    w.lse[r] = std::numeric_limits<R>::infinity();
                    continue;
                }
                R sum = 0;
                for (int64_t j = 0; j < Nk; ++j)
                    if (allowed[j]) {
                        Prow[j] = std::exp(Srow[j] - mx);
                        sum += Prow[j];
                    }
                for (int64_t j = 0; j < Nk; ++j) Prow[j] = rnd(Prow[j] / sum);
                w.lse[r] = mx + std::log(sum);
                continue;
            }
            for (int64_t j = 0; j < Nk; ++j) {
                if (!allowed[j]) continue;
                const R x = Srow[j];
                R pv;
                switch (s_.score) {
                    case kSigmoid: pv = sigmoid(x + bias_); break;
                    case kRelu: pv = std::max(x, R(0)) * factor_; break;
                    case kRelu2: pv = std::max(x, R(0)) * std::max(x, R(0)) * factor_; break;
                    case kGelu: pv = gelu(x) * factor_; break;
                    case kSoftplus: pv = softplus(x) * factor_; break;
                    default: pv = x * factor_; break;
                }
                Prow[j] = rnd(pv);
            }
        }
    }

    // O rows of the task (unrounded accumulators) into o [m × d].
    void pv(const Head& w, std::vector<R>& o) const {
        const int64_t m = w.r1 - w.r0, Nk = s_.Nk, d = s_.d;
        o.assign(m * d, R(0));
        for (int64_t r = 0; r < m; ++r)
            for (int64_t j = 0; j < Nk; ++j) {
                const R p = w.P[r * Nk + j];
                if (p == R(0)) continue;  // skipping exact zeros changes no sum
                const R* vr = w.v.data() + j * d;
                R* orow = o.data() + r * d;
                for (int64_t c = 0; c < d; ++c) orow[c] += p * vr[c];
            }
    }

    // Tasks: (b, h, row chunk); a head is split into chunks only when there are fewer heads than
    // threads (the big single-head shapes), and never below 64 rows a chunk.
    // Tiny problems (finite differences call forward thousands of times) run on the calling thread.
    bool serial() const { return double(s_.B) * s_.Hq * s_.Nq * s_.Nk * s_.d < 2e5; }

    int64_t chunks_per_head() const {
        const int64_t threads = std::max(1u, std::thread::hardware_concurrency());
        const int64_t heads = s_.B * s_.Hq;
        int64_t c = heads >= threads ? 1 : (threads + heads - 1) / heads;
        return std::max<int64_t>(1, std::min(c, s_.Nq / 64));
    }
    void chunk_rows(int64_t chunk, int64_t chunks, int64_t* r0, int64_t* r1) const {
        *r0 = s_.Nq * chunk / chunks;
        *r1 = s_.Nq * (chunk + 1) / chunks;
    }

    Forward<R> forward(const R* q, const R* k, const R* v) const {
        Forward<R> f;
        f.out.assign(s_.q_elems(), R(0));
        if (s_.score == kSoftmax) f.lse.assign(s_.lse_elems(), R(0));
        const int64_t chunks = chunks_per_head(), tasks = s_.B * s_.Hq * chunks;
        std::vector<Head> scratch = kept_heads().take(size_t(parallel_threads(tasks, serial())));
        parallel_for(tasks, [&](int64_t t, int64_t worker) {
            const int64_t b = t / (s_.Hq * chunks), h = t / chunks % s_.Hq;
            int64_t r0, r1;
            chunk_rows(t % chunks, chunks, &r0, &r1);
            Head& w = scratch[worker];
            std::vector<R>& o = w.o;
            scores(q, k, v, b, h, r0, r1, w);
            pv(w, o);
            for (int64_t i = r0; i < r1; ++i) {
                R* dst = f.out.data() + ((b * s_.Nq + i) * s_.Hq + h) * s_.d;
                for (int64_t c = 0; c < s_.d; ++c) dst[c] = rnd(o[(i - r0) * s_.d + c]);
                if (s_.score == kSoftmax) f.lse[(b * s_.Hq + h) * s_.Nq + i] = w.lse[i - r0];
            }
        }, serial());
        kept_heads().give(scratch);
        return f;
    }

    // out_given: the forward output used by softmax's D (naive); nullptr = recompute exactly (ref64).
    // dQ rows belong to one task; dK, dV are accumulated per task and summed afterwards in task order
    // (fixed, so results do not depend on the thread count).
    Grads<R> backward(const R* q, const R* k, const R* v, const R* out_given, const R* dout) const {
        const int64_t Nq = s_.Nq, Nk = s_.Nk, d = s_.d, group = s_.Hq / s_.Hk, chunks = chunks_per_head();
        Grads<R> g;
        g.dq.assign(s_.q_elems(), R(0));
        g.dk.assign(s_.kv_elems(), R(0));
        g.dv.assign(s_.kv_elems(), R(0));
        const int64_t tasks = s_.B * s_.Hq * chunks;
        std::vector<std::vector<R>> dk_part = kept_rows().take(size_t(tasks));
        std::vector<std::vector<R>> dv_part = kept_rows().take(size_t(tasks));
        std::vector<R> ds_all(s_.want_dbias ? size_t(s_.B * s_.Hq * Nq * Nk) : 0);
        std::vector<Head> scratch = kept_heads().take(size_t(parallel_threads(tasks, serial())));
        parallel_for(tasks, [&](int64_t t, int64_t worker) {
            const int64_t b = t / (s_.Hq * chunks), h = t / chunks % s_.Hq;
            int64_t r0, r1;
            chunk_rows(t % chunks, chunks, &r0, &r1);
            const int64_t m = r1 - r0;
            std::vector<R>& dk_acc = dk_part[t];
            std::vector<R>& dv_acc = dv_part[t];
            dk_acc.assign(Nk * d, R(0));
            dv_acc.assign(Nk * d, R(0));
            Head& w = scratch[worker];
            std::vector<R>& dO = w.dO;
            std::vector<R>& o = w.o;
            std::vector<R>& D = w.D;
            std::vector<R>& dq_acc = w.dq_acc;
            dO.resize(m * d);
            D.resize(m);
            dq_acc.resize(d);
            scores(q, k, v, b, h, r0, r1, w);
            for (int64_t i = r0; i < r1; ++i)
                std::copy_n(dout + ((b * Nq + i) * s_.Hq + h) * d, d, dO.data() + (i - r0) * d);
            if (s_.score == kSoftmax) {
                if (out_given == nullptr) {
                    pv(w, o);
                } else {
                    o.resize(m * d);
                    for (int64_t i = r0; i < r1; ++i)
                        std::copy_n(out_given + ((b * Nq + i) * s_.Hq + h) * d, d, o.data() + (i - r0) * d);
                }
                for (int64_t r = 0; r < m; ++r) {
                    R acc = 0;
                    for (int64_t c = 0; c < d; ++c) acc += dO[r * d + c] * o[r * d + c];
                    D[r] = acc;
                }
            }
            // dS (in M2) from dP = dO Vᵀ
            w.M2.assign(m * Nk, R(0));
            for (int64_t r = 0; r < m; ++r) {
                R* row = w.M2.data() + r * Nk;
                add_row_products(row, dO.data() + r * d, w.vt.data(), d, Nk);
                for (int64_t j = 0; j < Nk; ++j) {
                    if (!w.allowed[r * Nk + j]) {
                        row[j] = 0;  // dS = 0 where masked
                        continue;
                    }
                    const R dp = rnd(row[j]), p = w.P[r * Nk + j], x = w.S[r * Nk + j];
                    R ds;
                    switch (s_.score) {
                        case kSoftmax: ds = p * (dp - D[r]); break;
                        case kSigmoid: ds = p * (R(1) - p) * dp; break;
                        case kRelu: ds = x > 0 ? factor_ * dp : R(0); break;  // where-forms: 0 whatever dP
                        case kRelu2: ds = x > 0 ? R(2) * x * factor_ * dp : R(0); break;
                        case kGelu: ds = gelu_grad(x) * factor_ * dp; break;
                        case kSoftplus: ds = sigmoid(x) * factor_ * dp; break;
                        default: ds = factor_ * dp; break;
                    }
                    row[j] = rnd(ds);
                }
            }
            if (s_.want_dbias)  // dS rows of (b, h): reduced over the broadcast dims after the tasks
                std::copy_n(w.M2.data(), m * Nk, ds_all.data() + ((b * s_.Hq + h) * Nq + r0) * Nk);
            for (int64_t r = 0; r < m; ++r) {
                const R* dsrow = w.M2.data() + r * Nk;
                const R* prow = w.P.data() + r * Nk;
                const R lam = R(s_.lambda(r0 + r));
                std::fill(dq_acc.begin(), dq_acc.end(), R(0));
                for (int64_t j = 0; j < Nk; ++j) {
                    const R ds = dsrow[j], p = prow[j];
                    if (ds != R(0)) {
                        const R* kj = w.k.data() + j * d;
                        for (int64_t c = 0; c < d; ++c) dq_acc[c] += ds * kj[c];
                        R* dk = dk_acc.data() + j * d;
                        const R* qi = w.q.data() + r * d;
                        const R dsl = ds * lam;  // dK_j = scale·sum_i lambda_i dS_ij q_i
                        for (int64_t c = 0; c < d; ++c) dk[c] += dsl * qi[c];
                    }
                    if (p != R(0)) {
                        R* dvr = dv_acc.data() + j * d;
                        const R* g0 = dO.data() + r * d;
                        for (int64_t c = 0; c < d; ++c) dvr[c] += p * g0[c];
                    }
                }
                R* dst = g.dq.data() + ((b * Nq + r0 + r) * s_.Hq + h) * d;
                const R sl = R(scale_ * lam);  // dQ_i = scale·lambda_i·sum_j dS_ij k_j
                for (int64_t c = 0; c < d; ++c) dst[c] = rnd(sl * dq_acc[c]);
            }
        }, serial());
        // dK, dV of kv head hk: the partials of its group's heads and chunks, in order
        parallel_for(s_.B * s_.Hk, [&](int64_t t) {
            const int64_t b = t / s_.Hk, hk = t % s_.Hk;
            std::vector<R> dk(Nk * d, R(0)), dv(Nk * d, R(0));
            for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
                for (int64_t ch = 0; ch < chunks; ++ch) {
                    const int64_t task = (b * s_.Hq + h) * chunks + ch;
                    for (size_t e = 0; e < dk.size(); ++e) {
                        dk[e] += dk_part[task][e];
                        dv[e] += dv_part[task][e];
                    }
                }
            for (int64_t j = 0; j < Nk; ++j) {
                R* dkd = g.dk.data() + ((b * Nk + j) * s_.Hk + hk) * d;
                R* dvd = g.dv.data() + ((b * Nk + j) * s_.Hk + hk) * d;
                for (int64_t c = 0; c < d; ++c) {
                    dkd[c] = rnd(scale_ * dk[j * d + c]);
                    dvd[c] = rnd(dv[j * d + c]);
                }
            }
        }, serial());
        if (s_.want_dbias) {  // dBias = dS summed over the broadcast dims, in index order
            std::vector<R> acc(s_.bias_elems(), R(0));
            for (int64_t b = 0; b < s_.B; ++b)
                for (int64_t h = 0; h < s_.Hq; ++h)
                    for (int64_t i = 0; i < Nq; ++i) {
                        R* dst = acc.data() + (((s_.bias_b == 1 ? 0 : b) * s_.bias_h + (s_.bias_h == 1 ? 0 : h)) * s_.bias_q +
                                               (s_.bias_q == 1 ? 0 : i)) * Nk;
                        const R* src = ds_all.data() + ((b * s_.Hq + h) * Nq + i) * Nk;
                        for (int64_t j = 0; j < Nk; ++j) dst[j] += src[j];
                    }
            g.dbias.resize(acc.size());
            for (size_t e = 0; e < acc.size(); ++e) g.dbias[e] = rnd(acc[e]);
        }
        kept_heads().give(scratch);
        kept_rows().give(dk_part);
        kept_rows().give(dv_part);
        return g;
    }

private:
    static Kept<Head>& kept_heads() {
        static Kept<Head> k;
        return k;
    }
    static Kept<std::vector<R>>& kept_rows() {
        static Kept<std::vector<R>> k;
        return k;
    }

    const Spec& s_;
    int dtype_;
    R scale_, bias_, factor_;
    bool ext_ = false;  // beta (ALiBi, bias) is added to S
};

}  // namespace

Forward<double> forward64(const Spec& s, const double* q, const double* k, const double* v) {
    return Core<double>(s, -1).forward(q, k, v);
}

Grads<double> backward64(const Spec& s, const double* q, const double* k, const double* v, const double* dout,
                         const double* out_given) {
    return Core<double>(s, -1).backward(q, k, v, out_given, dout);
}

Forward<float> forward_naive(const Spec& s, int dtype, const float* q, const float* k, const float* v) {
    return Core<float>(s, dtype).forward(q, k, v);
}

Grads<float> backward_naive(const Spec& s, int dtype, const float* q, const float* k, const float* v,
                            const float* out, const float* dout) {
    return Core<float>(s, dtype).backward(q, k, v, out, dout);
}

Grads<double> fd_grads(const Spec& s, const double* q, const double* k, const double* v, const double* dout,
                       double h) {
    std::vector<double> x[3] = {std::vector<double>(q, q + s.q_elems()), std::vector<double>(k, k + s.kv_elems()),
                                std::vector<double>(v, v + s.kv_elems())};
    auto loss = [&] {
        const Forward<double> f = forward64(s, x[0].data(), x[1].data(), x[2].data());
        double l = 0;
        for (size_t i = 0; i < f.out.size(); ++i) l += dout[i] * f.out[i];
        return l;
    };
    Grads<double> g;
    std::vector<double>* dst[3] = {&g.dq, &g.dk, &g.dv};
    for (int t = 0; t < 3; ++t) {
        dst[t]->resize(x[t].size());
        for (size_t i = 0; i < x[t].size(); ++i) {
            const double x0 = x[t][i];
            x[t][i] = x0 + h;
            const double lp = loss();
            x[t][i] = x0 - h;
            const double lm = loss();
            x[t][i] = x0;
            (*dst[t])[i] = (lp - lm) / (2 * h);
        }
    }
    return g;
}

std::vector<double> fd_dbias(const Spec& s, const double* q, const double* k, const double* v, const double* dout,
                             double h) {
    Spec t = s;
    auto loss = [&] {
        const Forward<double> f = forward64(t, q, k, v);
        double l = 0;
        for (size_t i = 0; i < f.out.size(); ++i) l += dout[i] * f.out[i];
        return l;
    };
    std::vector<double> g(s.bias.size());
    for (size_t e = 0; e < g.size(); ++e) {
        const double x0 = t.bias[e];
        if (!std::isfinite(x0)) continue;  // a masked element has no gradient: 0
        t.bias[e] = x0 + h;
        const double lp = loss();
        t.bias[e] = x0 - h;
        const double lm = loss();
        t.bias[e] = x0;
        g[e] = (lp - lm) / (2 * h);
    }
    return g;
}

std::vector<double> min_abs_score_rows(const Spec& s, const double* q, const double* k) {
    std::vector<double> m(size_t(s.B * s.Nq * s.Hq), std::numeric_limits<double>::infinity());
    const double scale = s.eff_scale();
    for (int64_t b = 0; b < s.B; ++b)
        for (int64_t h = 0; h < s.Hq; ++h)
            for (int64_t i = 0; i < s.Nq; ++i) {
                double& row_min = m[size_t((b * s.Nq + i) * s.Hq + h)];
                const double* qi = q + ((b * s.Nq + i) * s.Hq + h) * s.d;
                for (int64_t j = 0; j < s.Nk; ++j) {
                    if (!s.allowed_at(b, h, i, j)) continue;
                    const double* kj = k + ((b * s.Nk + j) * s.Hk + h / (s.Hq / s.Hk)) * s.d;
                    double dot = 0;
                    for (int64_t c = 0; c < s.d; ++c) dot += qi[c] * kj[c];
                    row_min = std::min(row_min, std::fabs(scale * s.lambda(i) * dot + s.beta(b, h, i, j)));
                }
            }
    return m;
}

double min_abs_score(const Spec& s, const double* q, const double* k) {
    const std::vector<double> rows = min_abs_score_rows(s, q, k);
    double m = std::numeric_limits<double>::infinity();
    for (double r : rows) m = std::min(m, r);
    return m;
}

// ---- the §6 rule ----------------------------------------------------------------------------------

namespace {
std::string index_string(size_t idx, const std::vector<int64_t>& shape) {
    if (shape.empty()) return std::to_string(idx);
    std::vector<int64_t> coords(shape.size());
    for (size_t a = shape.size(); a-- > 0;) {
        coords[a] = int64_t(idx % size_t(shape[a]));
        idx /= size_t(shape[a]);
    }
    std::string s = "[";
    for (size_t a = 0; a < coords.size(); ++a) s += (a ? "," : "") + std::to_string(coords[a]);
    return s + "]";
}
}  // namespace

RuleResult check_rule(const std::string& case_name, const char* output, const float* ours, const double* ref64,
                      const float* naive, size_t n, const std::vector<int64_t>& shape) {
    RuleResult r;
    size_t worst = 0;
    for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(ref64[i])) continue;
        const double e = std::fabs(double(naive[i]) - ref64[i]);
        if (!(e <= r.naive_err)) r.naive_err = e;  // a NaN in naive makes the bound NaN: nothing passes
    }
    r.bound = 2 * r.naive_err + 1e-5;
    long first_bad = -1;
    for (size_t i = 0; i < n; ++i) {
        bool bad;
        if (!std::isfinite(ref64[i])) {
            bad = !(double(ours[i]) == ref64[i]);  // same infinity (a NaN in ref64 would fail here: never expected)
        } else {
            const double e = std::fabs(double(ours[i]) - ref64[i]);
            const bool worst_is_nan = std::isnan(r.our_err);
            if (!worst_is_nan && (std::isnan(e) || e > r.our_err)) {  // the first NaN is the worst
                r.our_err = e;
                worst = i;
            }
            bad = !(e <= r.bound);
        }
        if (bad && first_bad < 0) first_bad = long(i);
    }
    r.ok = first_bad < 0;
    if (!r.ok) {
        // the rule bounds the maximum only; the spread of the errors says whether ours is worse than the
        // naive computation in general or only on its worst element (a tail the bound happens to be tight at)
        double ours_sq = 0, naive_sq = 0;
        size_t finite = 0, ours_farther = 0;
        for (size_t i = 0; i < n; ++i) {
            if (!std::isfinite(ref64[i])) continue;
            const double eo = std::fabs(double(ours[i]) - ref64[i]), en = std::fabs(double(naive[i]) - ref64[i]);
            ours_sq += eo * eo, naive_sq += en * en, ++finite;
            if (!(eo <= en)) ++ours_farther;
        }
        const double rms_div = finite > 0 ? double(finite) : 1.0;
        const size_t fb = size_t(first_bad);
        std::fprintf(stderr,
                     "  RULE FAIL case=%s output=%s: max|ours-ref64| = %.3g at %s (ours %.9g, ref64 %.9g); bound "
                     "2*%.3g + 1e-5 = %.3g; first bad index %s (ours %.9g, ref64 %.9g, naive %.9g); rms error "
                     "ours %.3g, naive %.3g; ours farther from ref64 than naive on %zu of %zu elements\n",
                     case_name.c_str(), output, r.our_err, index_string(worst, shape).c_str(), double(ours[worst]),
                     ref64[worst], r.naive_err, r.bound, index_string(fb, shape).c_str(), double(ours[fb]),
                     ref64[fb], double(naive[fb]), std::sqrt(ours_sq / rms_div), std::sqrt(naive_sq / rms_div),
                     ours_farther, finite);
    }
    return r;
}

// ---- random numbers -------------------------------------------------------------------------------

namespace {
uint64_t splitmix_finalise(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
}  // namespace

// The seed is hashed (a bijection) so that neighbouring seeds start unrelated streams: with the state
// seed·γ, seed + 1 gave seed's stream shifted by one draw.
Rng::Rng(uint64_t seed) : state_(splitmix_finalise(seed + 0x632BE59BD9B4E019ull)) {}

uint64_t Rng::next_u64() { return splitmix_finalise(state_ += 0x9E3779B97F4A7C15ull); }

double Rng::uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }

double Rng::normal() {
    if (have_spare_) {
        have_spare_ = false;
        return spare_;
    }
    double u1;
    do u1 = uniform();
    while (u1 <= 0);
    const double u2 = uniform(), r = std::sqrt(-2 * std::log(u1)), a = 6.283185307179586 * u2;
    spare_ = r * std::sin(a);
    have_spare_ = true;
    return r * std::cos(a);
}

std::vector<float> random_values(Rng& rng, size_t n, int dtype, double sigma) {
    std::vector<float> x(n);
    for (auto& e : x) e = round_to(dtype, float(sigma * rng.normal()));
    return x;
}

}  // namespace ref
