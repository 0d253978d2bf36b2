// The strided (atrous) mask of DESIGN.md §4 at tile granularity: which (query tile × key tile) blocks it
// leaves empty, so the kernels skip them. Shared by the per-ISA kernels (kernels.inc) and the unit test
// in tests/test_masks.cpp, which checks it against a scan of every element.
//
// In an unnamed namespace on purpose: the two kernel translation units are compiled for different ISAs,
// and an inline function with external linkage would be merged into one copy at link time — possibly
// the AVX-512 one, run on an AVX2-only CPU. Each includer gets its own copy.
#pragma once

#include <cstdint>

#include "../internal.h"

namespace fsig::cpu {
namespace {

// floor(a / b) for b > 0
inline int64_t floor_div(int64_t a, int64_t b) { return a / b - (a % b != 0 && a < 0 ? 1 : 0); }

// True when the strided mask (window ∪ strided when a window is given, intersected with causal) allows
// no element of rows [i0, i0 + m) × keys [j0, j0 + n), m, n >= 1. Every element depends on the row only
// through the difference t = δ_i − j (δ_i = i + Nk − Nq), and a rectangle of rows and keys covers every
// integer t of [δ_i0 − (j0 + n − 1), δ_(i0+m−1) − j0] — sums of two runs of consecutive integers. Element
// (i, j) is allowed iff t is a multiple of the stride or t lies in the window's range [−wr, wl]
// (a bound of −1 is none), and with causal t >= 0. So: the tile is empty iff [lo, hi] (with causal
// clipped to t >= 0) holds neither a multiple of the stride nor a point of the window's range.
inline bool strided_tile_empty(const Problem& p, int64_t i0, int64_t m, int64_t j0, int64_t n) {
    if (p.strided <= 0) return false;
    const int64_t shift = p.seq_k - p.seq_q;
    int64_t lo = i0 + shift - (j0 + n - 1);
    const int64_t hi = i0 + m - 1 + shift - j0;
    if (p.causal && lo < 0) lo = 0;
    if (lo > hi) return true;
    if (p.window_given()) {
        const int64_t w_lo = p.window_right >= 0 ? -p.window_right : lo;
        const int64_t w_hi = p.window_left >= 0 ? p.window_left : hi;
        if ((lo > w_lo ? lo : w_lo) <= (hi < w_hi ? hi : w_hi)) return false;
    }
    return floor_div(hi, p.strided) * p.strided < lo;  // the largest multiple <= hi lies below lo
}

}  // namespace
}  // namespace fsig::cpu
