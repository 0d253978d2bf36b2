// The naive quadratic form of linear attention (cosFormer, elu + 1; DESIGN.md §4) — tests only.
// It materialises every pair (i, j) with the cosine of the position difference written out
// directly, cos(π(p_i − p_j)/2M), not through the sin/cos expansion the library's O(N) states use.
//  - ref64: everything in fp64;
//  - naive same dtype (§6): features φ(x)·sin/cos rounded to the dtype, S = q̃ k̃ᵀ by fp32 accumulation
//    rounded to the dtype, num = S V and den = rowsum(S) likewise, O = num / max(den, ε) rounded;
//    backward the same way, each product fp32-accumulated then rounded (a value beyond the 16-bit range,
//    such as dO/ε on a row where the floor binds, stays fp32 instead of becoming inf and then NaN).
// Dense BSHD tensors as in reference.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "reference.h"

namespace lref {

enum Map : int { kCosformer = 0, kLinearElu = 1 };

struct Spec {
    int64_t B = 1, Nq = 1, Nk = 1, Hq = 1, Hk = 1, d = 1;
    int map = kCosformer;
    bool causal = false;
    int64_t length = 0;       // M; 0 = max(Nq, Nk)
    double epsilon = 1e-6;

    double eff_length() const { return double(length ? length : (Nq > Nk ? Nq : Nk)); }
    bool allowed(int64_t i, int64_t j) const { return !causal || j <= i + Nk - Nq; }
    size_t q_elems() const { return size_t(B * Nq * Hq * d); }
    size_t kv_elems() const { return size_t(B * Nk * Hk * d); }
    std::string describe() const;
};

template <class R>
struct Grads {
    std::vector<R> dq, dk, dv;
};

std::vector<double> forward64(const Spec& s, const double* q, const double* k, const double* v);
// Gradients of L = <dout, out>, through the normaliser and the max(·, ε) floor (zero where it binds).
Grads<double> backward64(const Spec& s, const double* q, const double* k, const double* v, const double* dout);
std::vector<float> forward_naive(const Spec& s, int dtype, const float* q, const float* k, const float* v);
Grads<float> backward_naive(const Spec& s, int dtype, const float* q, const float* k, const float* v,
                            const float* dout);
// Central differences of forward64 (step h on each input element).
Grads<double> fd_grads(const Spec& s, const double* q, const double* k, const double* v, const double* dout,
                       double h = 1e-6);
// The denominators Σ_j q̃_i·k̃_j of every (b, h, i) row, fp64 (to place ε and to avoid kinks in tests).
std::vector<double> denominators(const Spec& s, const double* q, const double* k);

}  // namespace lref
