// CPU check of the CUDA kernels' masks and positions (native/cuda/ext_params.h, host_params.h),
// runnable without a GPU: the kernels call these same functions, so what is checked here is their
// arithmetic, exactly as compiled for the device up to the float intrinsics.
//  - the bias tensor's 16-bit conversions, over every bit pattern, against tests/reference;
//  - strided_hit (the magic-number divisibility test) against 64-bit division over many strides and
//    the whole range of phases and key offsets a kernel can produce;
//  - every element of random problems (ALiBi per head or per batch × head, bias of every broadcast
//    shape with −inf entries in fp32, fp16 and bf16, mask tensors, strided with and without a window,
//    block layouts per head or shared, log-n, causal and windows, odd lengths), evaluated as the
//    kernels do (make_params, then the interval of fwd_params.h, ext_row and ext_position, and β by
//    ext_beta_row / ext_beta with the strided phase carried row to row as each kernel's staging loop
//    carries it): allowed exactly where the fp64 reference's Spec::allowed_at says, and the value
//    λ_i·x + β_ij of the reference;
//  - ext_tile_live, the test that skips a whole tile without loading it, against a scan of the tile:
//    never false on a tile with an allowed element (that would drop keys), and exact where it can be
//    (a layout alone, or strided alone without a window);
//  - the host's rules for the forward kernels' tiles: ext_layout_tile_uniform (a layout applied by tile
//    skipping alone), ext_key_beta (the Hopper forward staging one row of β per key tile) and
//    ext_beta_by_key_rows (the tall forward's row of β per key tile, its layout applied by tile skipping).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "harness.h"
#include "host_params.h"
#include "internal.h"
#include "reference.h"

namespace {

using fsig::cuda::ExtParams;
using fsig::cuda::ExtRow;
using fsig::cuda::FwdParams;

TEST(sixteen_bit_conversions) {
    for (uint32_t bits = 0; bits < 65536; ++bits) {
        const uint16_t h = uint16_t(bits);
        const float ours = fsig::cuda::half_bits_to_float(h), ref = ref::half_to_float(h);
        EXPECT(std::isnan(ours) ? std::isnan(ref) : ours == ref, "fp16 0x%04x: %g vs %g", bits, ours, ref);
        const float ours_b = fsig::cuda::bf16_bits_to_float(h), ref_b = ref::bf16_to_float(h);
        EXPECT(std::isnan(ours_b) ? std::isnan(ref_b) : ours_b == ref_b, "bf16 0x%04x: %g vs %g", bits, ours_b, ref_b);
    }
}

TEST(strided_hit_divides_exactly) {
    ref::Rng rng(11);
    std::vector<int64_t> strides;
    for (int64_t s = 2; s <= 300; ++s) strides.push_back(s);
    for (int64_t s : {int64_t(1000), int64_t(4095), int64_t(4096), int64_t(32767), int64_t(32768), int64_t(32769),
                      int64_t(65535), int64_t(65536), int64_t(1) << 20, int64_t(INT32_MAX)})
        strides.push_back(s);
    for (int k = 0; k < 200; ++k) strides.push_back(2 + rng.below(INT32_MAX - 2));
    for (int64_t s : strides) {
        ExtParams e{};
        e.strided = s;
        e.strided_magic = uint32_t((uint64_t(1) << 32) / uint64_t(s) + 1);  // as fill_ext
        std::vector<int64_t> phases = {0, 1, s - 1, s / 2};
        for (int k = 0; k < 8; ++k) phases.push_back(rng.below(s));
        for (int64_t phase : phases) {
            if (phase < 0 || phase >= s) continue;
            for (int c = 0; c < 128; ++c) {  // a key's offset in its tile: < 64 (fwd, dQ), < 128 (dK/dV)
                const uint32_t n = uint32_t(c + phase);
                const bool want = (int64_t(c) + phase) % s == 0;
                EXPECT(fsig::cuda::strided_hit(e, n) == want, "s=%lld phase=%lld c=%d: got %d", (long long)s,
                       (long long)phase, c, int(!want));
            }
        }
    }
}

// One random problem with extensions, as ref::Spec (the reference) and as the library's validated
// Problem over the same buffers (what api.cpp builds from the C ABI).
struct Case {
    ref::Spec s;
    int bias_dtype = FSIG_DTYPE_FP32;
    std::vector<float> alibi;           // fp32 slopes as the kernel reads them
    std::vector<float> bias32;          // bias storage, fp32 ...
    std::vector<uint16_t> bias16;       // ... or 16-bit bits
    std::vector<uint8_t> mask, layout;  // 1 byte per element
    fsig::Problem pr;
};

// (tiles_only: no bias, mask, positions; tall_layout too: a layout of 32 × 64 multiples or blocks past the lengths,
// no strided pattern — the calls the tall forward serves with a layout)
Case random_case(ref::Rng& rng, bool tiles_only, bool tall_layout = false) {
    Case c;
    ref::Spec& s = c.s;
    s.B = 1 + rng.below(2);
    s.Hk = 1 + rng.below(2);
    s.Hq = s.Hk * (1 + rng.below(2));
    s.Nq = 1 + rng.below(tiles_only ? 400 : 150);
    s.Nk = 1 + rng.below(tiles_only ? 400 : 150);
    s.d = 64;
    s.causal = rng.below(2) == 0;
    if (rng.below(2) == 0) s.window_left = rng.below(3) == 0 ? 0 : rng.below(80);
    if (rng.below(3) == 0) s.window_right = rng.below(3) == 0 ? 0 : rng.below(80);

    const bool want_alibi = !tiles_only && rng.below(2) == 0, want_bias = !tiles_only && rng.below(2) == 0,
               want_mask = !tiles_only && rng.below(3) == 0;
    bool want_strided = rng.below(2) == 0, want_layout = rng.below(2) == 0;
    const bool want_logn = !tiles_only && rng.below(3) == 0;
    if (tiles_only && !want_strided && !want_layout) want_layout = true;
    if (tall_layout) want_strided = false, want_layout = true;

    if (want_alibi) {
        s.alibi_per_batch = rng.below(2) == 0;
        const size_t n = size_t(s.alibi_per_batch ? s.B * s.Hq : s.Hq);
        for (size_t k = 0; k < n; ++k) {
            c.alibi.push_back(float(0.01 + 0.5 * rng.uniform()));
            s.alibi_slopes.push_back(c.alibi.back());
        }
    }
    if (want_bias) {
        c.bias_dtype = int(rng.below(3));
        s.bias_b = rng.below(2) == 0 ? 1 : s.B;
        s.bias_h = rng.below(2) == 0 ? 1 : s.Hq;
        s.bias_q = rng.below(2) == 0 ? 1 : s.Nq;
        const size_t n = s.bias_elems();
        for (size_t k = 0; k < n; ++k) {
            float x = rng.below(20) == 0 ? -std::numeric_limits<float>::infinity() : float(rng.normal());
            x = ref::round_to(c.bias_dtype, x);
            s.bias.push_back(x);
            c.bias32.push_back(x);
            c.bias16.push_back(c.bias_dtype == FSIG_DTYPE_FP16 ? ref::float_to_half(x) : ref::float_to_bf16(x));
        }
    }
    if (want_mask) {
        s.mask_b = rng.below(2) == 0 ? 1 : s.B;
        s.mask_h = rng.below(2) == 0 ? 1 : s.Hq;
        s.mask_q = rng.below(2) == 0 ? 1 : s.Nq;
        const size_t n = size_t(s.mask_b * s.mask_h * s.mask_q * s.Nk);
        const int64_t density = 1 + rng.below(4);  // of 4
        for (size_t k = 0; k < n; ++k) s.mask.push_back(rng.below(4) < density ? 1 : 0);
        c.mask.assign(s.mask.begin(), s.mask.end());
    }
    if (want_strided) {
        const int64_t r = rng.below(10);
        s.strided = r == 0 ? 1 : r == 1 ? 100000 + rng.below(INT32_MAX) : 2 + rng.below(r < 6 ? 12 : 200);
    }
    if (want_layout) {
        s.block_m = 1 + rng.below(rng.below(2) == 0 ? 20 : 150);
        s.block_n = 1 + rng.below(rng.below(2) == 0 ? 20 : 150);
        if (tall_layout) {
            const int64_t rows[] = {32, 64, 96, 128, 160, 1000}, cols[] = {64, 128, 192, 1000};
            s.block_m = rows[rng.below(6)], s.block_n = cols[rng.below(4)];
        }
        s.layout_h = rng.below(2) == 0 ? 1 : s.Hq;
        const int64_t rows = (s.Nq + s.block_m - 1) / s.block_m, cols = (s.Nk + s.block_n - 1) / s.block_n;
        const int64_t density = 1 + rng.below(4);
        for (int64_t k = 0; k < s.layout_h * rows * cols; ++k) s.layout.push_back(rng.below(5) < density ? 1 : 0);
        c.layout.assign(s.layout.begin(), s.layout.end());
    }
    if (want_logn) s.logn_train = 2 + rng.below(60);

    // the validated Problem (api.cpp: broadcast dims get stride 0, dense otherwise)
    fsig::Problem& p = c.pr;
    p.batch = s.B, p.seq_q = s.Nq, p.seq_k = s.Nk, p.heads_q = s.Hq, p.heads_k = s.Hk, p.head_dim = s.d;
    p.dtype = FSIG_DTYPE_FP16;
    p.score = FSIG_SCORE_SIGMOID;
    p.scale = 0.125f;
    p.causal = s.causal;
    const int64_t lim = s.Nq + s.Nk;  // the C ABI layer clamps the windows (check_qkv)
    p.window_left = s.window_left > lim ? lim : s.window_left;
    p.window_right = s.window_right > lim ? lim : s.window_right;
    if (!c.alibi.empty()) {
        p.alibi = c.alibi.data();
        p.alibi_stride_b = s.alibi_per_batch ? s.Hq : 0;
        p.alibi_stride_h = 1;
    }
    auto view4 = [&](void* data, int dtype, int64_t nb, int64_t nh, int64_t nq) {
        fsig::TensorView t;
        t.data = data;
        t.dtype = dtype;
        const int64_t dims[4] = {nb, nh, nq, s.Nk};
        int64_t stride = 1;
        for (int d = 3; d >= 0; --d) {
            t.shape[d] = dims[d];
            t.stride[d] = dims[d] == 1 && d < 3 ? 0 : stride;
            stride *= dims[d];
        }
        return t;
    };
    if (!s.bias.empty()) {
        p.has_bias = true;
        void* data = c.bias_dtype == FSIG_DTYPE_FP32 ? static_cast<void*>(c.bias32.data()) : c.bias16.data();
        p.bias = view4(data, c.bias_dtype, s.bias_b, s.bias_h, s.bias_q);
    }
    if (!s.mask.empty()) {
        p.has_mask = true;
        p.mask = view4(c.mask.data(), FSIG_DTYPE_BOOL, s.mask_b, s.mask_h, s.mask_q);
    }
    if (s.block_m > 0) {
        const int64_t rows = (s.Nq + s.block_m - 1) / s.block_m, cols = (s.Nk + s.block_n - 1) / s.block_n;
        p.block_m = s.block_m, p.block_n = s.block_n;
        p.block_layout.data = c.layout.data();
        p.block_layout.dtype = FSIG_DTYPE_BOOL;
        p.block_layout.shape[0] = s.layout_h, p.block_layout.shape[1] = rows, p.block_layout.shape[2] = cols;
        p.block_layout.stride[0] = s.layout_h == 1 ? 0 : rows * cols;
        p.block_layout.stride[1] = cols, p.block_layout.stride[2] = 1;
    }
    p.strided = s.strided;
    p.logn_train = s.logn_train;
    return c;
}

FwdParams params_of(const fsig::Problem& pr) {
    fsig::TensorView none;
    return fsig::cuda::make_params(pr, none, none, none, none, nullptr);
}

// How a kernel walks its β staging: rows from `row0` in steps of `step` (the strided phase carried by
// strided_phase_next), keys from `key0` (the phase's j0).
struct Walk {
    int64_t row_tile, step, key_tile;
};
// fwd and dQ: a warp's 16 rows one by one, key tiles of 64; dK/dV: query tiles of 64 or 32 rows in two
// interleaved halves (step 2), a warp's 16 keys
const Walk kWalks[] = {{16, 1, 64}, {64, 2, 16}, {32, 2, 16}};

// Element (b, h, i, j) as a kernel sees it: the interval of fwd_params.h, the positions (ext_row and
// ext_position) and, element-wise, β (ext_beta_row with the phase carried as the kernel carries it).
bool kernel_element(const FwdParams& f, const Walk& w, int64_t b, int64_t h, int64_t i, int64_t j, float x,
                    float* value) {
    if (j < fsig::cuda::first_key(f, i) || j > fsig::cuda::last_key(f, i)) return false;
    const ExtParams& e = f.ext;
    const int64_t j0 = j / w.key_tile * w.key_tile, off = f.seq_k - f.seq_q;
    float v;
    if (w.step == 1) {  // fwd, dQ: rows are queries, ext_row per row and key tile
        const ExtRow row = fsig::cuda::ext_row(e, b, h, i, j0, f.seq_q, f.seq_k);
        v = fsig::cuda::ext_position(row, int(j - j0), x);
    } else {  // dK/dV: rows are keys; λ per query, |δ_i − j| = |dist0(key) + column| from the query tile's start
        const int64_t i0 = i / w.row_tile * w.row_tile;
        const float slope = e.alibi != nullptr ? e.alibi[b * e.alibi_b + h * e.alibi_h] : 0.f;
        const float lambda = fsig::cuda::logn_lambda(e, i + off, f.seq_k);
        v = fsig::cuda::ext_position_at(slope, lambda, float(i0 + off - j) + float(i - i0), x);
    }
    if (e.elementwise) {
        const int64_t first = i / w.row_tile * w.row_tile + (i % w.row_tile) % w.step;  // the lane's first row
        uint32_t phase = fsig::cuda::strided_phase(e, first + off, j0);
        for (int64_t r = first; r < i; r += w.step)
            for (int64_t k = 0; k < w.step; ++k) phase = fsig::cuda::strided_phase_next(e, phase);
        const fsig::cuda::ExtBetaRow br = fsig::cuda::ext_beta_row(e, b, h, i, phase, f.seq_q, f.seq_k);
        v += fsig::cuda::ext_beta(e, br, j0, int(j - j0));
    }
    *value = v;
    return v != -INFINITY;
}

TEST(elements_match_the_reference) {
    ref::Rng rng(2024);
    for (int n = 0; n < 400; ++n) {
        const Case c = random_case(rng, false);
        const ref::Spec& s = c.s;
        const FwdParams f = params_of(c.pr);
        EXPECT(f.ext.on == (s.extended() ? 1 : 0), "%s: ext.on = %d", s.describe().c_str(), f.ext.on);
        const Walk& walk = kWalks[rng.below(3)];
        int bad = 0;
        for (int64_t b = 0; b < s.B; ++b)
            for (int64_t h = 0; h < s.Hq; ++h)
                for (int64_t i = 0; i < s.Nq; ++i) {
                    const double lambda = s.lambda(i);
                    for (int64_t j = 0; j < s.Nk; ++j) {
                        const float x = float(0.7 * std::sin(double(i * 31 + j * 7 + h)));
                        float got = 0;
                        const bool ok = kernel_element(f, walk, b, h, i, j, x, &got);
                        const bool want = s.allowed_at(b, h, i, j);
                        if (ok != want) {
                            if (bad++ < 3)
                                EXPECT(false, "%s walk %lld/%lld/%lld: (b %lld, h %lld, i %lld, j %lld) allowed %d, "
                                       "reference %d", s.describe().c_str(), (long long)walk.row_tile,
                                       (long long)walk.step, (long long)walk.key_tile, (long long)b, (long long)h,
                                       (long long)i, (long long)j, int(ok), int(want));
                            continue;
                        }
                        if (!ok) continue;
                        const double expect = lambda * double(x) + s.beta(b, h, i, j);
                        if (!(std::fabs(double(got) - expect) <= 1e-5 * (1 + std::fabs(expect))) && bad++ < 3)
                            EXPECT(false, "%s: (b %lld, h %lld, i %lld, j %lld) value %.9g, reference %.9g",
                                   s.describe().c_str(), (long long)b, (long long)h, (long long)i, (long long)j,
                                   double(got), expect);
                    }
                }
        EXPECT(bad == 0, "%s: %d element(s) differ", s.describe().c_str(), bad);
    }
}

TEST(tile_skipping_never_drops_a_key) {
    ref::Rng rng(77);
    int live_tiles = 0, dead_tiles = 0;
    for (int n = 0; n < 300; ++n) {
        const Case c = random_case(rng, true);
        const ref::Spec& s = c.s;
        FwdParams f = params_of(c.pr);
        ExtParams e = f.ext;
        const bool window = c.pr.window_given();
        // exact when one necessary condition decides alone (a layout: for tiles of few enough blocks)
        const bool exact_kind = (e.layout != nullptr) != (e.strided > 0) && !(e.strided > 0 && window);
        // the kernels' tiles: fwd/dQ 128 × 64, dK/dV 64 or 32 query rows × 128 keys, and odd ones
        const int64_t shapes[][2] = {{128, 64}, {64, 128}, {32, 128}, {16, 64}, {1 + rng.below(50), 1 + rng.below(50)}};
        for (const auto& shape : shapes)
            for (int64_t h = 0; h < s.Hq; ++h)
                for (int64_t i0 = 0; i0 < s.Nq; i0 += shape[0])
                    for (int64_t j0 = 0; j0 < s.Nk; j0 += shape[1]) {
                        const int64_t i1 = std::min(i0 + shape[0], s.Nq) - 1, j1 = std::min(j0 + shape[1], s.Nk) - 1;
                        bool any = false;  // by the layout and the strided pattern (with its window) alone
                        for (int64_t i = i0; i <= i1 && !any; ++i) {
                            const uint32_t phase = fsig::cuda::strided_phase(e, i + s.Nk - s.Nq, j0);
                            const fsig::cuda::ExtBetaRow row = fsig::cuda::ext_beta_row(e, 0, h, i, phase, s.Nq, s.Nk);
                            for (int64_t j = j0; j <= j1 && !any; ++j)
                                any = fsig::cuda::ext_beta(e, row, j0, int(j - j0)) != -INFINITY;
                        }
                        const bool live = fsig::cuda::ext_tile_live(e, h, i0, i1, j0, j1, s.Nq, s.Nk);
                        const bool exact =
                            exact_kind && (e.layout == nullptr || (i1 / e.block_m - i0 / e.block_m + 1) *
                                                                          (j1 / e.block_n - j0 / e.block_n + 1) <=
                                                                      fsig::cuda::kMaxLayoutBlocksPerTile);
                        (live ? live_tiles : dead_tiles)++;
                        if (any && !live)
                            EXPECT(false, "%s: tile rows [%lld, %lld] keys [%lld, %lld] head %lld skipped but has "
                                   "an allowed element", s.describe().c_str(), (long long)i0, (long long)i1,
                                   (long long)j0, (long long)j1, (long long)h);
                        if (exact && live && !any)
                            EXPECT(false, "%s: tile rows [%lld, %lld] keys [%lld, %lld] head %lld is empty but not "
                                   "skipped", s.describe().c_str(), (long long)i0, (long long)i1, (long long)j0,
                                   (long long)j1, (long long)h);
                    }
    }
    // the cases must exercise both answers, or this test proves nothing
    EXPECT(live_tiles > 1000 && dead_tiles > 1000, "live %d, dead %d tiles", live_tiles, dead_tiles);
}

// The host's two rules for a forward kernel's tiles (ext_params.h, host_params.h), checked against ext_beta itself
// on every tile of random problems. Tile shapes: the kernels' (128 × 64, 128 × 128, the tall forward's warps'
// 32 × 64), the layout's own blocks, half of them, and odd ones.
//  - ext_layout_tile_uniform (a call runs without β): β is the same on every element of each tile — 0 on
//    the tiles ext_tile_live keeps, −inf on those it skips — so the skipping alone applies the layout; and
//    ext_layout_rows_allow (the tall forward's test) gives ext_tile_live's answer there;
//  - ext_key_beta (the Hopper forward stages one row of β per key tile): on every tile ext_tile_live
//    keeps, β of each element equals β of the same key in the tile's first row (the row staged).
TEST(forward_tile_rules) {
    ref::Rng rng(99);
    int uniform = 0, key_rows = 0, neither = 0, skipped = 0;
    for (int n = 0; n < 600; ++n) {
        const Case c = random_case(rng, n % 3 == 0);
        const ref::Spec& s = c.s;
        const ExtParams e = params_of(c.pr).ext;
        const int64_t bm = e.block_m > 0 ? e.block_m : 1 + rng.below(64), bn = e.block_n > 0 ? e.block_n : 1 + rng.below(64);
        const int64_t shapes[][2] = {{128, 64}, {128, 128}, {32, 64}, {bm, bn},
                                     {bm % 2 == 0 ? bm / 2 : bm, bn % 2 == 0 ? bn / 2 : bn},
                                     {1 + rng.below(150), 1 + rng.below(150)}};
        for (const auto& shape : shapes) {
            const int64_t tm = shape[0], tn = shape[1];
            const bool no_beta = fsig::cuda::ext_layout_tile_uniform(e, tm, tn, s.Nq, s.Nk);
            const bool key_beta = fsig::cuda::ext_key_beta(e, tm, s.Nq);
            uniform += no_beta, key_rows += key_beta, neither += !no_beta && !key_beta;
            if (!no_beta && !key_beta) continue;
            int bad = 0;
            for (int64_t b = 0; b < s.B; ++b)
                for (int64_t h = 0; h < s.Hq; ++h)
                    for (int64_t i0 = 0; i0 < s.Nq; i0 += tm)
                        for (int64_t j0 = 0; j0 < s.Nk; j0 += tn) {
                            const int64_t i1 = std::min(i0 + tm, s.Nq) - 1, j1 = std::min(j0 + tn, s.Nk) - 1;
                            const bool live = fsig::cuda::ext_tile_live(e, h, i0, i1, j0, j1, s.Nq, s.Nk);
                            skipped += no_beta && !live;
                            // the tall forward warp's test for such a tile: its first row's layout at its first key
                            if (no_beta && fsig::cuda::ext_layout_rows_allow(e, h, int32_t(i0), int32_t(i0),
                                                                             int32_t(j0)) != live && bad++ < 3)
                                EXPECT(false, "%s, tiles %lld x %lld: ext_layout_rows_allow at (%lld, %lld) h %lld "
                                       "is not ext_tile_live's %d", s.describe().c_str(), (long long)tm, (long long)tn,
                                       (long long)i0, (long long)j0, (long long)h, int(live));
                            if (key_beta && !live) continue;  // (never visited)
                            const fsig::cuda::ExtBetaRow first = fsig::cuda::ext_beta_row(e, b, h, i0, 0, s.Nq, s.Nk);
                            for (int64_t i = i0; i <= i1; ++i) {
                                const fsig::cuda::ExtBetaRow row = fsig::cuda::ext_beta_row(e, b, h, i, 0, s.Nq, s.Nk);
                                for (int64_t j = j0; j <= j1; ++j) {
                                    const int col = int(j - j0);
                                    const float beta = fsig::cuda::ext_beta(e, row, j0, col);
                                    const float want = no_beta ? (live ? 0.f : -INFINITY) : fsig::cuda::ext_beta(e, first, j0, col);
                                    if (!(beta == want) && bad++ < 3)
                                        EXPECT(false, "%s, tiles %lld x %lld (%s): β(%lld, %lld) b %lld h %lld = %g, "
                                               "expected %g", s.describe().c_str(), (long long)tm, (long long)tn,
                                               no_beta ? "no β" : "key β", (long long)i, (long long)j, (long long)b,
                                               (long long)h, double(beta), double(want));
                                }
                            }
                        }
        }
    }
    // each answer of the rules, and skipped tiles among the uniform ones, or this test proves nothing
    EXPECT(uniform > 100 && key_rows > 100 && neither > 100 && skipped > 100,
           "no β %d, key β %d, neither %d, skipped tiles %d", uniform, key_rows, neither, skipped);
}

// The tall forward's block search (fwd_kernel.cuh, next_tall_key_tile) on the calls it serves with a layout
// (ext_layout_tile_uniform over its warps' 32 × 64 tiles): ext_layout_rows_allow over a block's 256 rows at a tile's
// first key equals ext_tile_live of the 256 × 64 tile — exact there, since the tile spans at most 8 × 1 layout blocks
// — so the block skips exactly the tiles none of its block rows allows.
TEST(tall_forward_layout_search) {
    ref::Rng rng(101);
    constexpr int kLayouts = 600;
    int live_tiles = 0, skipped = 0;
    for (int n = 0; n < kLayouts; ++n) {
        const Case c = random_case(rng, true, true);
        const ref::Spec& s = c.s;
        const ExtParams e = params_of(c.pr).ext;
        EXPECT(fsig::cuda::ext_layout_tile_uniform(e, 32, 64, s.Nq, s.Nk), "%s: blocks %lld x %lld not served",
               s.describe().c_str(), (long long)s.block_m, (long long)s.block_n);
        int bad = 0;
        for (int64_t h = 0; h < s.Hq; ++h)
            for (int64_t i0 = 0; i0 < s.Nq; i0 += 256)
                for (int64_t j0 = 0; j0 < s.Nk; j0 += 64) {
                    const int64_t i1 = std::min(i0 + 256, s.Nq) - 1, j1 = std::min(j0 + 64, s.Nk) - 1;
                    const bool live = fsig::cuda::ext_tile_live(e, h, i0, i1, j0, j1, s.Nq, s.Nk);
                    const bool found = fsig::cuda::ext_layout_rows_allow(e, h, int32_t(i0), int32_t(i1), int32_t(j0));
                    live_tiles += live, skipped += !live;
                    if (found != live && bad++ < 3)
                        EXPECT(false, "%s: the block search at rows [%lld, %lld], key %lld, head %lld says %d, "
                               "ext_tile_live %d", s.describe().c_str(), (long long)i0, (long long)i1, (long long)j0,
                               (long long)h, int(found), int(live));
                }
    }
    EXPECT(live_tiles > 100 && skipped > 100, "%d layouts: live tiles %d, skipped %d: too few to prove anything",
           kLayouts, live_tiles, skipped);
}

// The tall forward's row of β per key tile (fwd_kernel.cuh: tall_serves_ext is ext_beta_by_key_rows over its warps'
// 32 × 64 tiles) on random calls it serves with a bias or a mask: on every warp tile its layout test allows
// (ext_layout_rows_allow at the tile's first row and key), β of each element (ext_beta) equals ext_key_beta_at of its
// key — the value staged for the whole block, layout left out; on every other tile each element is −inf.
TEST(tall_forward_key_beta) {
    ref::Rng rng(103);
    int served = 0, tiles = 0, skipped = 0, masked = 0, bad = 0;
    for (int n = 0; n < 4000 && served < 300; ++n) {
        const Case c = random_case(rng, false, n % 2 == 0);
        const ref::Spec& s = c.s;
        const ExtParams e = params_of(c.pr).ext;
        if (!fsig::cuda::ext_beta_by_key_rows(e, 32, 64, s.Nq, s.Nk) || (e.bias == nullptr && e.mask == nullptr)) continue;
        ++served;
        for (int64_t b = 0; b < s.B; ++b)
            for (int64_t h = 0; h < s.Hq; ++h)
                for (int64_t i0 = 0; i0 < s.Nq; i0 += 32)
                    for (int64_t j0 = 0; j0 < s.Nk; j0 += 64) {
                        const bool allowed =
                            fsig::cuda::ext_layout_rows_allow(e, h, int32_t(i0), int32_t(i0), int32_t(j0));
                        ++tiles, skipped += !allowed;
                        for (int64_t i = i0; i < std::min(i0 + 32, s.Nq); ++i) {
                            const fsig::cuda::ExtBetaRow row = fsig::cuda::ext_beta_row(e, b, h, i, 0, s.Nq, s.Nk);
                            for (int64_t j = j0; j < std::min(j0 + 64, s.Nk); ++j) {
                                const float beta = fsig::cuda::ext_beta(e, row, j0, int(j - j0));
                                const float want = allowed ? fsig::cuda::ext_key_beta_at(e, b, h, j, s.Nk) : -INFINITY;
                                masked += allowed && want == -INFINITY;
                                if (!(beta == want) && bad++ < 3)
                                    EXPECT(false, "%s: β(%lld, %lld) b %lld h %lld = %g, the tall kernel's %g",
                                           s.describe().c_str(), (long long)i, (long long)j, (long long)b, (long long)h,
                                           double(beta), double(want));
                            }
                        }
                    }
    }
    // calls served, tiles the layout skips and keys the staged row masks, or this test proves nothing
    EXPECT(served >= 300 && skipped > 100 && masked > 1000, "%d calls served with β, %d of %d tiles skipped, %d "
           "masked keys on the others", served, skipped, tiles, masked);
}

// With strided ∪ window the kernels' interval widens to causal alone; without it, it stays the
// caller's, and a problem with no extension leaves ext off.
TEST(interval_and_ext_on) {
    fsig::Problem p;
    p.batch = 1, p.seq_q = 100, p.seq_k = 120, p.heads_q = 1, p.heads_k = 1, p.head_dim = 64;
    p.window_left = 5, p.window_right = 3;
    FwdParams f = params_of(p);
    EXPECT(f.ext.on == 0 && f.window_left == 5 && f.window_right == 3, "plain: on %d wl %lld wr %lld", f.ext.on,
           (long long)f.window_left, (long long)f.window_right);
    p.strided = 7;
    f = params_of(p);
    EXPECT(f.ext.on == 1 && f.window_left == -1 && f.window_right == -1 && f.ext.window_left == 5 &&
               f.ext.window_right == 3,
           "strided with window: on %d wl %lld wr %lld", f.ext.on, (long long)f.window_left,
           (long long)f.window_right);
    p.window_left = p.window_right = -1;
    p.strided = 1;  // every key: the pattern is off, the extension flag stays on
    f = params_of(p);
    EXPECT(f.ext.on == 1 && f.ext.strided == 0, "strided 1: on %d strided %lld", f.ext.on, (long long)f.ext.strided);
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> filters(argv + 1, argv + argc);
    return th::run_all(filters);
}
