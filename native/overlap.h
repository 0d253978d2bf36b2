// Whether two strided views share a byte, exactly where that is cheap: views into one fused buffer (a
// framework's [B, N, 3, H, d] gradient holding dq, dk, dv; a [B, N, 3, H, d] qkv) have byte ranges that
// interleave while no element is shared, and must be accepted. Used by the C ABI layer's aliasing checks
// (api.cpp); tests/test_overlap.cpp compares it with enumerating every element on many random pairs.
#pragma once

#include <cstdint>

namespace fsig {

struct ViewShape {
    uintptr_t base;       // address of element 0
    int64_t esize;        // bytes per element
    int rank;             // <= 4
    int64_t shape[4];     // >= 1
    int64_t stride[4];    // elements, >= 0
    uintptr_t begin, end; // bytes reachable: [begin, end)
};

namespace detail {
// Is rem = Σ_{k >= i} c_k s_k for integers c_k in [lo_k, hi_k]? dims sorted by stride, largest first;
// reach[i] = the most |Σ_{k > i} c_k s_k| can be. Each s_i > reach[i], so at most two c_i fit.
inline bool lattice_hit(int64_t rem, int i, int n, const int64_t* s, const int64_t* lo, const int64_t* hi,
                        const int64_t* reach) {
    if (i == n) return rem == 0;
    auto floor_div = [](int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); };
    auto ceil_div = [&](int64_t a, int64_t b) { return -floor_div(-a, b); };
    int64_t first = ceil_div(rem - reach[i], s[i]), last = floor_div(rem + reach[i], s[i]);
    if (first < lo[i]) first = lo[i];
    if (last > hi[i]) last = hi[i];
    for (int64_t c = first; c <= last; ++c)
        if (lattice_hit(rem - c * s[i], i + 1, n, s, lo, hi, reach)) return true;
    return false;
}
}  // namespace detail

// Exact when both views have one element size, the same strides, bases a whole number of elements
// apart, and strides that nest (each, sorted, exceeds the reach of the smaller ones over both shapes);
// otherwise their byte ranges decide (never a false "disjoint").
inline bool views_overlap(const ViewShape& a, const ViewShape& b) {
    if (!(a.begin < b.end && b.begin < a.end)) return false;
    if (a.esize != b.esize || a.rank != b.rank || a.esize <= 0) return true;
    for (int k = 0; k < a.rank; ++k)
        if (a.stride[k] != b.stride[k]) return true;
    const int64_t diff = int64_t(b.base - a.base);  // bytes; two's complement gives the signed distance
    if (diff % a.esize != 0) return true;
    // element j of b at element i of a: Σ (i_k − j_k) s_k = diff / esize, c_k = i_k − j_k
    int64_t s[4], lo[4], hi[4], reach[4];
    int order[4], n = 0;
    for (int k = 0; k < a.rank; ++k)
        if (a.shape[k] > 1 || b.shape[k] > 1) order[n++] = k;
    for (int x = 1; x < n; ++x)  // by stride, largest first
        for (int y = x; y > 0 && a.stride[order[y]] > a.stride[order[y - 1]]; --y) {
            const int t = order[y];
            order[y] = order[y - 1], order[y - 1] = t;
        }
    for (int x = 0; x < n; ++x) {
        const int k = order[x];
        s[x] = a.stride[k], lo[x] = -(b.shape[k] - 1), hi[x] = a.shape[k] - 1;
    }
    int64_t below = 0;  // reach of the dims after x (smaller strides)
    for (int x = n - 1; x >= 0; --x) {
        reach[x] = below;
        if (s[x] <= below) return true;  // not nested: fall back to the byte ranges
        int64_t m = -lo[x] > hi[x] ? -lo[x] : hi[x];
        if (__builtin_mul_overflow(m, s[x], &m) || __builtin_add_overflow(below, m, &below)) return true;
    }
    return detail::lattice_hit(diff / a.esize, 0, n, s, lo, hi, reach);
}

}  // namespace fsig
