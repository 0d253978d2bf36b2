// Tile products for bf16 tensors on CPUs with AMX (Intel Sapphire Rapids and later): every product of
// the attention kernels as TDPBF16PS, which multiplies a 16 × 32 bf16 tile by a 32 × 16 one into 16 × 16
// fp32 sums — 16 times the multiply-adds per cycle of the two AVX-512 FMA ports, at the same exactness
// as vdpbf16ps (bf16_dot.h): the products of bf16 values are exact, only the fp32 sums round. Operands that
// are bf16 values already (Q times the power-of-two part of the scale, K, V, dO) enter as they are;
// operands computed in fp32 (P, dS) enter as two bf16 terms, hi + lo (split_bf16), which carry 15 bits of
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

// x = hi + lo + e with |e| < 2^-15·|x| (and e = 0 for 0, ±inf and NaN): hi is x truncated to bf16 (never
// rounded up to inf; a NaN stays a NaN, whose payload could lie in the dropped half alone), lo the rest
// rounded to nearest even. Both are fp32 vectors whose values are bf16, ready for pair_bits / to_bf16.
inline void split_bf16(vf x, vf& hi, vf& lo) {
    const __m512i top = _mm512_set1_epi32(int(0xffff0000u));
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    const __m512i h = _mm512_mask_mov_epi32(_mm512_and_si512(_mm512_castps_si512(x), top), nan,
                                            _mm512_set1_epi32(0x7fc00000));
    hi = _mm512_castsi512_ps(h);
    const __mmask16 finite = _mm512_cmp_ps_mask(vabs(x), vset(3.40282347e38f), _CMP_LE_OQ);
    const __m512i rest = _mm512_castps_si512(_mm512_maskz_sub_ps(finite, x, hi));  // exact: x's low 16 bits
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(rest, 16), _mm512_set1_epi32(1));
    lo = _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_add_epi32(rest, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), top));
}

// The power of two that brings max_abs (the largest |x| of a tile or row of an operand) into [1, 2),
// within [2^-100, 2^100]; 1 for 0, inf and NaN. The tile products scale their operands by it: a
// product is flushed only below 2^-126 of the largest, and the result is scaled back exactly
// (unscale) — so subnormal tensor values and tiny P or dS lose nothing the fp32 products keep.
inline float pow2_near_one(float max_abs) {
    if (!(max_abs > 0.f) || !std::isfinite(max_abs)) return 1.f;
    int e;
    std::frexp(max_abs, &e);  // max_abs in [2^(e-1), 2^e)
    return std::ldexp(1.f, std::clamp(1 - e, -100, 100));
}

// 32 bf16 from two fp32 vectors whose values are bf16: a's 16 then b's 16
inline __m512i bf16_of(vf a, vf b) {
    const __m512i idx = _mm512_set_epi16(31 + 32, 29 + 32, 27 + 32, 25 + 32, 23 + 32, 21 + 32, 19 + 32, 17 + 32,
                                         15 + 32, 13 + 32, 11 + 32, 9 + 32, 7 + 32, 5 + 32, 3 + 32, 1 + 32, 31, 29,
                                         27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    return _mm512_permutex2var_epi16(_mm512_castps_si512(a), idx, _mm512_castps_si512(b));
}

// 2·W values, a's then b's, as 32 hi and 32 lo bf16 (split_bf16) at hi and lo
inline void store_split(vf a, vf b, uint16_t* hi, uint16_t* lo) {
    vf h0, l0, h1, l1;
    split_bf16(a, h0, l0);
    split_bf16(b, h1, l1);
    _mm512_storeu_si512(hi, bf16_of(h0, h1));
    _mm512_storeu_si512(lo, bf16_of(l0, l1));
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
            vf ha, la, hb, lb;
            split_bf16(va, ha, la);
            split_bf16(vb, hb, lb);
            _mm512_storeu_si512(hi + (k2 * ld + c) * 2, pair_bits(ha, hb));
            _mm512_storeu_si512(lo + (k2 * ld + c) * 2, pair_bits(la, lb));
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
