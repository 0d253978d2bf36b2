// Index math of the tensor-core fragments and the shared-memory tiles, in one place, shared by the
// kernel (fwd_kernel.cuh) and its CPU-side check (tests/gpu/test_fragment_layout.cpp), which replays
// ldmatrix and mma.sync m16n8k16 as the PTX ISA defines them and compares with plain matrix products.
//
// PTX ISA, "Matrix fragments for mma.m16n8k16 with floating point type" (groupID = lane / 4,
// tid = lane % 4; 16-bit elements two per 32-bit register, the lower index in the low half):
//   A 16x16 (row): reg0 = (g, 2t..2t+1), reg1 = (g+8, 2t..), reg2 = (g, 2t+8..), reg3 = (g+8, 2t+8..)
//   B 16x8  (col): reg0 = (k 2t..2t+1, n g), reg1 = (k 2t+8..2t+9, n g)
//   C/D 16x8 f32 : c0, c1 = (g, 2t..2t+1), c2, c3 = (g+8, 2t..2t+1)
// ldmatrix.x4: lanes 8m..8m+7 give the row addresses of 8x8 matrix m, which lands in register m;
// without .trans lane l receives row l/4, columns 2(l%4)..+1; with .trans, column l/4, rows 2(l%4)..+1.
#pragma once

#if defined(__CUDACC__)
#define FSIG_FRAG_HD __host__ __device__ __forceinline__
#else
#define FSIG_FRAG_HD inline
#endif

namespace fsig::cuda::frag {

// A [rows][kCols] tile of 16-bit elements in shared memory, kCols a multiple of 64, stored as 16-byte
// chunks of 8 elements with chunk c of row r at chunk c ^ (r % 8) of that row. ldmatrix reads 8 rows
// at one logical chunk; with rows 128 or 256 bytes long, unswizzled they would all hit the same 4
// banks (8-way conflict); swizzled they cover all 32 banks. cp.async writes whole chunks, so the
// swizzle costs nothing there.
template <int kCols>
FSIG_FRAG_HD int swizzle(int row, int col) {
    static_assert(kCols % 64 == 0, "rows must be whole 128-byte lines for the XOR swizzle");
    return row * kCols + ((((col >> 3) ^ row) & 7) | ((col >> 3) & ~7)) * 8 + (col & 7);
}

struct RowCol {
    int row, col;
};

// A lane's ldmatrix row addresses (element offsets) at (rc.row + 16 i, rc.col + 16 j) of a swizzled
// [rows][kCols] tile, j known at compile time (an index into base_). The swizzle of such a point depends on
// j mod 4 alone (16 i keeps row % 8; four steps of j move a whole 128-byte line), so four per-lane offsets
// plus a constant give every address: the XOR is done four times, not per ldmatrix (the forward's SASS
// spent ≈ 4.5 integer instructions on each of its 64 ldmatrix per key tile; native/cuda/NOTES.md).
template <int kCols>
class SwizzledRows {
public:
    FSIG_FRAG_HD explicit SwizzledRows(RowCol rc)
        : base_{swizzle<kCols>(rc.row, rc.col), swizzle<kCols>(rc.row, 16 + rc.col),
                swizzle<kCols>(rc.row, 32 + rc.col), swizzle<kCols>(rc.row, 48 + rc.col)} {}
    FSIG_FRAG_HD int at(int i, int j) const { return base_[j & 3] + 16 * i * kCols + 64 * (j >> 2); }

private:
    int base_[4];
};

// Lane's ldmatrix.x4 row address for an A operand (16x16 at the origin of a row-major tile):
// matrices (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15) = a0..a3.
// The same pattern with .trans gives B operands from a [k][n] tile (V): matrices (k 0-7, n 0-7),
// (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15) = b0, b1 of n-tile 0, then b0, b1 of n-tile 1.
FSIG_FRAG_HD RowCol ldsm_a(int lane) { return {((lane >> 3) & 1) * 8 + (lane & 7), (lane >> 4) * 8}; }
FSIG_FRAG_HD RowCol ldsm_bt(int lane) { return ldsm_a(lane); }
// Without .trans from an [n][k] tile (K, so that B = Kᵀ): matrices (n 0-7, k 0-7), (n 0-7, k 8-15),
// (n 8-15, k 0-7), (n 8-15, k 8-15) = b0, b1 of n-tile 0, then b0, b1 of n-tile 1.
FSIG_FRAG_HD RowCol ldsm_b(int lane) { return {(lane >> 4) * 8 + (lane & 7), ((lane >> 3) & 1) * 8}; }
// With .trans from a [k][m] tile (the backward's dSᵀ, so that A = dS): matrices (k 0-7, m 0-7),
// (k 0-7, m 8-15), (k 8-15, m 0-7), (k 8-15, m 8-15) = a0..a3 — row k, column m: ldsm_b's pattern.
FSIG_FRAG_HD RowCol ldsm_at(int lane) { return ldsm_b(lane); }

// The fast backward's dSᵀ tile [key][query] of 16-bit elements, kRows queries per row padded by 8
// elements (16 bytes), so that ldmatrix phases and 32-bit stores of accumulator pairs each hit every
// bank once: the element offset of (key, query).
template <int kRows>
constexpr int kDsStride = kRows + 8;
template <int kRows>
FSIG_FRAG_HD int ds_offset(int key, int query) { return key * kDsStride<kRows> + query; }

// Row and column of accumulator element e (0..3) of a lane inside its 16x8 C tile.
FSIG_FRAG_HD int acc_row(int lane, int e) { return (lane >> 2) + (e >> 1) * 8; }
FSIG_FRAG_HD int acc_col(int lane, int e) { return (lane & 3) * 2 + (e & 1); }

// Two 16x8 accumulator tiles side by side packed into one A operand (registers: tile 0 rows g, tile 0
// rows g + 8, tile 1 rows g, tile 1 rows g + 8): the row and first column of the element pair that
// register reg holds, inside the 16x16 block.
FSIG_FRAG_HD RowCol a_pack_pos(int lane, int reg) {
    return {acc_row(lane, 0) + (reg & 1) * 8, acc_col(lane, 0) + (reg >> 1) * 8};
}

}  // namespace fsig::cuda::frag
