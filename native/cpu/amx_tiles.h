// Tile products for bf16 tensors on CPUs with AMX (Intel Sapphire Rapids and later): every product of
// the attention kernels as TDPBF16PS, which multiplies a 16 × 32 bf16 tile by a 32 × 16 one into 16 × 16
// fp32 sums — 16 times the multiply-adds per cycle of the two AVX-512 FMA ports, at the same exactness
// as vdpbf16ps (bf16_dot.h): the products of bf16 values are exact, only the fp32 sums round. Operands that
// are bf16 values already (Q times the power-of-two part of the scale, K, V, dO) enter as they are;
// operands computed in fp32 (P, dS) enter as two bf16 terms, hi + lo (split_bf16), which carry 16 bits of
// each value where rounding it to bf16 kept 8: the §6 rule failed on short rows for the one rounding
// (bf16_dot.h), and the two terms leave an error 128 times smaller. Like vdpbf16ps the instruction reads
// subnormal operands as 0 and flushes subnormal results: for the tensors' operands the Bf16Range rule
// (kernel_table.h) sends a call that meets one to the fp32 products; for the split terms the loss is
// absolute, below 2^-126 per product times the other operand.
// Included by kernels.inc inside its ISA namespace, only where the unit is compiled with -mamx-tile
// -mamx-bf16 (kernels_amx.cpp). The OS must have granted the process the tile data state
// (cpu_backend.cpp, amx_usable) before a task runs.
//
// Layouts (uint16 elements, a "pair" two bf16 of consecutive K-indices in one 32-bit lane, the lower
// index in the low half):
//   A operands: bf16 rows [M][lda], K along the row, lda a multiple of 32 with zeros past K;
//   B operands, "pair rows" [K/2][ldb][2]: row k2 holds the pairs (b[2·k2][c], b[2·k2+1][c]) of every
//   column c; and the S product's key panels (bf16_dot.h) [p][k2][kPanel][2], which are pair rows of
//   kPanel columns, one block per panel.
#pragma once

#if !defined(__AMX_BF16__) || !defined(__AMX_TILE__)
#error "amx_tiles.h needs -mamx-tile -mamx-bf16"
#endif

// Tiles: C00, C01, C10, C11 = tmm0..3 (a 2 × 2 block of 16 × 16 fp32 sums), A0, A1 = tmm4, 5 (16 rows
// × 32 bf16), B0, B1 = tmm6, 7 (16 pair rows × 16 columns). Every tile is 16 rows of 64 bytes; a ragged
// edge is computed whole from the zero padding the layouts carry (rows of A past M are read but their
// sums are never used).
constexpr int64_t kTileRows = 16;   // rows of A and C per tile
constexpr int64_t kTileK = 32;      // bf16 K-indices per tile product
constexpr int64_t kTileCols = 16;   // fp32 columns of C (and B's pair columns) per tile

struct alignas(64) TileConfig {
    uint8_t palette = 1;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
};

// The tile configuration for one task, released at its end: a thread carries no tile state between
// tasks (nor back to a caller's thread that ran one), so its context switches save 8 KiB less.
class AmxScope {
  public:
    explicit AmxScope(bool active) : active_(active) {
        if (!active_) return;
        TileConfig c;
        for (int t = 0; t < 8; ++t) c.colsb[t] = 64, c.rows[t] = kTileRows;
        _tile_loadconfig(&c);
    }
    ~AmxScope() {
        if (active_) _tile_release();
    }
    AmxScope(const AmxScope&) = delete;
    AmxScope& operator=(const AmxScope&) = delete;

  private:
    bool active_;
};

// a's and b's 16 values x each as x = hi + lo + e with |e| ≤ 2^-16·|x| (and e = 0 for 0, ±inf and NaN): hi is x
// rounded to the nearest bf16 (even on a tie), lo the rest so rounded (vcvtne2ps2bf16; the bits' arithmetic this
// replaces took 12 instructions a vector, this 4); hi and lo as 32 bf16 each, a's then b's. A NaN stays a NaN;
// subnormal values, which the tile products read as 0, are 0 here too (so is lo where it would be one: |x| below
// about 2^-110, an absolute loss below 2^-126, as the products' own); |x| at bf16's largest finite value or more
// (none: callers scale by pow2_near_one or p_mul first) would give hi = ±inf, lo = 0.
inline void split_bf16(vf a, vf b, __m512i& hi, __m512i& lo) {
    hi = (__m512i)_mm512_cvtne2ps_pbh(b, a);
    // each half of hi back in fp32 lanes (a bf16 is the upper half of its fp32), by one permute each
    const __m512i from_a = _mm512_set_epi16(15, 0, 14, 0, 13, 0, 12, 0, 11, 0, 10, 0, 9, 0, 8, 0, 7, 0, 6, 0, 5, 0, 4, 0,
                                            3, 0, 2, 0, 1, 0, 0, 0);
    const __m512i from_b = _mm512_add_epi16(from_a, _mm512_set1_epi32(16 << 16));
    const vf ha = _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xaaaaaaaau, from_a, hi));
    const vf hb = _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xaaaaaaaau, from_b, hi));
    // x − hi, exact; 0 where hi is ±inf or NaN (fpclass: QNaN, ±inf, SNaN)
    const vf ra = _mm512_maskz_sub_ps(_mm512_knot(_mm512_fpclass_ps_mask(ha, 0x99)), a, ha);
    const vf rb = _mm512_maskz_sub_ps(_mm512_knot(_mm512_fpclass_ps_mask(hb, 0x99)), b, hb);
    lo = (__m512i)_mm512_cvtne2ps_pbh(rb, ra);
}

// 2·W values, a's then b's, as 32 hi and 32 lo bf16 (split_bf16) at hi and lo
inline void store_split(vf a, vf b, uint16_t* hi, uint16_t* lo) {
    __m512i h, l;
    split_bf16(a, b, h, l);
    _mm512_storeu_si512(hi, h);
    _mm512_storeu_si512(lo, l);
}

// One row's x[c]·mul, c < n_valid (a multiple of W), as hi and lo bf16 rows (split_bf16) of n columns (a
// multiple of kTileK), zero from n_valid.
inline void split_row(const float* x, int64_t n_valid, int64_t n, float mul, uint16_t* hi, uint16_t* lo) {
    const vf vm = vset(mul);
    for (int64_t c = 0; c < n; c += 2 * W)
        store_split(c < n_valid ? vmul(vload(x + c), vm) : vzero(),
                    c + W < n_valid ? vmul(vload(x + c + W), vm) : vzero(), hi + c, lo + c);
}

// Rows [from, to) of the bf16 row tiles hi, lo [·][ld]: n columns of zeros
inline void zero_rows(int64_t from, int64_t to, int64_t n, uint16_t* hi, uint16_t* lo, int64_t ld) {
    for (int64_t r = from; r < to; ++r) {
        std::memset(hi + r * ld, 0, size_t(n) * 2);
        std::memset(lo + r * ld, 0, size_t(n) * 2);
    }
}

// Rows r < m of the fp32 tile src [·][lds], columns [0, n_valid) (a multiple of W), times row_mul[r], as
// two bf16 row tiles hi, lo [·][ld] (split_bf16) of n columns (a multiple of kTileK): columns
// [n_valid, n) and rows [m, round_up(m, kTileRows)) zero — the products' K padding, whatever src holds.
void split_rows(const float* src, int64_t lds, int64_t m, int64_t n_valid, int64_t n, const float* row_mul,
                uint16_t* hi, uint16_t* lo, int64_t ld) {
    for (int64_t r = 0; r < m; ++r) split_row(src + r * lds, n_valid, n, row_mul[r], hi + r * ld, lo + r * ld);
    zero_rows(m, round_up(m, kTileRows), n, hi, lo, ld);
}

// Rows r < m of src [·][lds], columns [0, n_valid) (a multiple of W), times mul, as pair rows dst [k2][ld][2]
// over the row index of n columns (a multiple of W), split into hi and lo (split_bf16) when lo is given,
// else for values that are bf16 already (truncated, exact); pair rows up to k_pad / 2 (k_pad even; rows
// past m and columns past n_valid zero).
void pair_rows(const float* src, int64_t lds, int64_t m, int64_t n_valid, int64_t n, int64_t k_pad, float mul,
               uint16_t* hi, uint16_t* lo, int64_t ld) {
    const vf vm = vset(mul);
    for (int64_t k2 = 0; 2 * k2 < k_pad; ++k2) {
        const float* a = src + 2 * k2 * lds;
        const float* b = a + lds;
        const bool has_a = 2 * k2 < m, has_b = 2 * k2 + 1 < m;
        for (int64_t c = 0; c < n; c += W) {
            const bool in = c < n_valid;
            const vf va = has_a && in ? vmul(vload(a + c), vm) : vzero(), vb = has_b && in ? vmul(vload(b + c), vm) : vzero();
            if (lo == nullptr) {
                _mm512_storeu_si512(hi + (k2 * ld + c) * 2, pair_bits(va, vb));
                continue;
            }
            __m512i h, l;  // a's 16 then b's: interleaved into pairs
            split_bf16(va, vb, h, l);
            const __m512i pairs = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                                   6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
            _mm512_storeu_si512(hi + (k2 * ld + c) * 2, _mm512_permutexvar_epi16(pairs, h));
            _mm512_storeu_si512(lo + (k2 * ld + c) * 2, _mm512_permutexvar_epi16(pairs, l));
        }
    }
}

// Where a B operand's tiles lie: pair rows [K/2][ld][2] (column tile j at 2·16·j, K step s 16 pair rows
// further per step), or the S product's key panels (column tiles 2p, 2p + 1 in panel p of k2_rows pair rows).
struct PairRowsB {
    const uint16_t* base;
    int64_t ld;  // columns per pair row
    const uint16_t* tile(int64_t j, int64_t s) const { return base + (s * kTileRows * ld + j * kTileCols) * 2; }
    int64_t stride() const { return ld * 4; }
};
struct PanelsB {
    const uint16_t* base;
    int64_t k2_rows;  // pair rows per panel (d2)
    static_assert(kPanel == 2 * kTileCols, "a panel holds two column tiles");
    const uint16_t* tile(int64_t j, int64_t s) const {
        return base + ((j / 2) * k2_rows * kPanel + s * kTileRows * kPanel + (j % 2) * kTileCols) * 2;
    }
    int64_t stride() const { return kPanel * 4; }
};

// One term of a product: A (bf16 rows, lda) times B. A second term (t1) has the first's B layout.
template <class B>
struct Term {
    const uint16_t* a;
    int64_t lda;
    B b;
};

template <int MR, int NR, class B>
inline void tile_block(const Term<B>& t0, const Term<B>* t1, int64_t i, int64_t j, int64_t k_steps, float* C,
                       int64_t ldc, bool accumulate) {
    float* c0 = C + i * kTileRows * ldc + j * kTileCols;
    float* c1 = c0 + kTileRows * ldc;
    const int64_t cs = ldc * 4;
    if (accumulate) {
        _tile_loadd(0, c0, cs);
        if constexpr (NR == 2) _tile_loadd(1, c0 + kTileCols, cs);
        if constexpr (MR == 2) _tile_loadd(2, c1, cs);
        if constexpr (MR == 2 && NR == 2) _tile_loadd(3, c1 + kTileCols, cs);
    } else {
        _tile_zero(0);
        if constexpr (NR == 2) _tile_zero(1);
        if constexpr (MR == 2) _tile_zero(2);
        if constexpr (MR == 2 && NR == 2) _tile_zero(3);
    }
    auto run = [&](const auto& t) {
        for (int64_t s = 0; s < k_steps; ++s) {
            const uint16_t* a = t.a + i * kTileRows * t.lda + s * kTileK;
            _tile_loadd(4, a, t.lda * 2);
            if constexpr (MR == 2) _tile_loadd(5, a + kTileRows * t.lda, t.lda * 2);
            _tile_loadd(6, t.b.tile(j, s), t.b.stride());
            if constexpr (NR == 2) _tile_loadd(7, t.b.tile(j + 1, s), t.b.stride());
            _tile_dpbf16ps(0, 4, 6);
            if constexpr (NR == 2) _tile_dpbf16ps(1, 4, 7);
            if constexpr (MR == 2) _tile_dpbf16ps(2, 5, 6);
            if constexpr (MR == 2 && NR == 2) _tile_dpbf16ps(3, 5, 7);
        }
    };
    run(t0);
    if (t1 != nullptr) run(*t1);
    _tile_stored(0, c0, cs);
    if constexpr (NR == 2) _tile_stored(1, c0 + kTileCols, cs);
    if constexpr (MR == 2) _tile_stored(2, c1, cs);
    if constexpr (MR == 2 && NR == 2) _tile_stored(3, c1 + kTileCols, cs);
}

// C[row_tiles·16][col_tiles·16] (=, or += with accumulate) t0.a · t0.b (+ t1->a · t1->b), K = k_steps·32.
// Inside an AmxScope.
template <class T>
struct NotDeduced {  // std::type_identity (C++20): t1 may be nullptr
    using type = T;
};
template <class B>
void tile_product(const Term<B>& t0, const typename NotDeduced<Term<B>>::type* t1, int64_t row_tiles,
                  int64_t col_tiles, int64_t k_steps, float* C, int64_t ldc, bool accumulate) {
    // column pairs outside: a pair's B (K steps × 2 tiles) stays in L1 while every row pair reads it
    int64_t j = 0;
    for (; j + 2 <= col_tiles; j += 2) {
        int64_t i = 0;
        for (; i + 2 <= row_tiles; i += 2) tile_block<2, 2>(t0, t1, i, j, k_steps, C, ldc, accumulate);
        if (i < row_tiles) tile_block<1, 2>(t0, t1, i, j, k_steps, C, ldc, accumulate);
    }
    if (j < col_tiles) {
        int64_t i = 0;
        for (; i + 2 <= row_tiles; i += 2) tile_block<2, 1>(t0, t1, i, j, k_steps, C, ldc, accumulate);
        if (i < row_tiles) tile_block<1, 1>(t0, t1, i, j, k_steps, C, ldc, accumulate);
    }
}
