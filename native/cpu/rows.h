// Rows of the tensors as fp32: dtype conversion, loads and stores of one row, and whole tiles packed
// or stored along positions when a tensor's positions are contiguous ([B, H, d, N]). Shared by the
// attention kernels (kernels.inc) and the linear-attention kernels (linear.inc). Included (like simd.h)
// inside each ISA namespace, and there inside an anonymous namespace, after simd.h and the standard
// headers it uses (<cstring>, <cstdint>): every ISA gets its own internal copy.
#pragma once

#if defined(__aarch64__)
inline float half_to_float(uint16_t h) {
    __fp16 x;
    std::memcpy(&x, &h, 2);
    return float(x);
}
inline uint16_t float_to_half(float f) {  // to nearest even: calls run under the default FPCR (float_mode.h)
    const __fp16 x = __fp16(f);
    uint16_t h;
    std::memcpy(&h, &x, 2);
    return h;
}
#else
inline float half_to_float(uint16_t h) { return _cvtsh_ss(h); }
inline uint16_t float_to_half(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
#endif
inline float bf16_to_float(uint16_t h) {
    uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline uint16_t float_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
    return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// dst[c] = mul * src[c * stride], c < n; then zeros up to n_pad
void load_row(const void* src, int32_t dtype, int64_t stride, int64_t n, int64_t n_pad, float mul,
              float* dst) {
    int64_t c = 0;
    if (dtype == FSIG_DTYPE_FP32) {
        const float* s = static_cast<const float*>(src);
        if (stride == 1)
            for (; c + W <= n; c += W) vstore(dst + c, vmul(vload(s + c), vset(mul)));
        for (; c < n; ++c) dst[c] = mul * s[c * stride];
    } else {
        const uint16_t* s = static_cast<const uint16_t*>(src);
        bool half = dtype == FSIG_DTYPE_FP16;
        if (stride == 1)
            for (; c + W <= n; c += W)
                vstore(dst + c, vmul(half ? vload_fp16(s + c) : vload_bf16(s + c), vset(mul)));
        for (; c < n; ++c) dst[c] = mul * (half ? half_to_float(s[c * stride]) : bf16_to_float(s[c * stride]));
    }
    for (; c < n_pad; ++c) dst[c] = 0.f;
}

// dst[c * stride] = mul * src[c], c < n, rounded to the dtype
void store_row(const float* src, int64_t n, float mul, int32_t dtype, int64_t stride, void* dst) {
    int64_t c = 0;
    if (dtype == FSIG_DTYPE_FP32) {
        float* d = static_cast<float*>(dst);
        if (stride == 1)
            for (; c + W <= n; c += W) vstore(d + c, vmul(vload(src + c), vset(mul)));
        for (; c < n; ++c) d[c * stride] = mul * src[c];
    } else {
        uint16_t* d = static_cast<uint16_t*>(dst);
        bool half = dtype == FSIG_DTYPE_FP16;
        if (stride == 1)
            for (; c + W <= n; c += W) {
                vf x = vmul(vload(src + c), vset(mul));
                if (half) vstore_fp16(d + c, x); else vstore_bf16(d + c, x);
            }
        for (; c < n; ++c) d[c * stride] = half ? float_to_half(mul * src[c]) : float_to_bf16(mul * src[c]);
    }
}

inline size_t elem_size(int32_t dtype) { return dtype == FSIG_DTYPE_FP32 ? 4 : 2; }

// Address of element (b, s, h, 0) of a BSHD tensor.
inline const void* row_ptr(const TensorView& t, int64_t b, int64_t s, int64_t h) {
    int64_t off = b * t.stride[0] + s * t.stride[1] + h * t.stride[2];
    return static_cast<const char*>(t.data) + off * int64_t(elem_size(t.dtype));
}
inline void* row_ptr_mut(const TensorView& t, int64_t b, int64_t s, int64_t h) {
    return const_cast<void*>(row_ptr(t, b, s, h));
}

// Positions contiguous and the head dim strided — features before timesteps, [B, H, d, N] as a JVM
// framework hands it over (ND4J's attention layout): the packers then read along positions, one
// vector load per W positions, instead of gathering each row element by element.
inline bool positions_contiguous(const TensorView& t) { return t.stride[1] == 1 && t.stride[3] != 1; }

// element (b, s, h, c)
inline const void* elem_ptr(const TensorView& t, int64_t b, int64_t s, int64_t h, int64_t c) {
    return static_cast<const char*>(row_ptr(t, b, s, h)) + c * t.stride[3] * int64_t(elem_size(t.dtype));
}
inline void* elem_ptr_mut(const TensorView& t, int64_t b, int64_t s, int64_t h, int64_t c) {
    return const_cast<void*>(elem_ptr(t, b, s, h, c));
}

// rows [r0, r0 + m) of (b, ·, h) into dst[m][ld], scaled, zero-padded to ld (m <= 256)
void pack_rows(const TensorView& t, int64_t b, int64_t h, int64_t r0, int64_t m, int64_t d, int64_t ld,
               float mul, float* dst) {
    if (!positions_contiguous(t) || m > 256) {
        for (int64_t r = 0; r < m; ++r) load_row(row_ptr(t, b, r0 + r, h), t.dtype, t.stride[3], d, ld, mul, dst + r * ld);
        return;
    }
    float column[256];
    for (int64_t c = 0; c < d; ++c) {
        load_row(elem_ptr(t, b, r0, h, c), t.dtype, 1, m, m, mul, column);
        for (int64_t r = 0; r < m; ++r) dst[r * ld + c] = column[r];
    }
    for (int64_t r = 0; r < m; ++r)
        for (int64_t c = d; c < ld; ++c) dst[r * ld + c] = 0.f;
}

// rows r < m of src[m][ld] into rows [r0, r0 + m) of (b, ·, h), row r multiplied by row_mul(r) and
// rounded to the dtype — pack_rows' counterpart: with positions contiguous, column c of the tile is one
// contiguous run of the destination (stored W positions per vector instead of one element per row).
template <class RowMul>
void store_rows(const float* src, int64_t ld, int64_t m, int64_t d, RowMul row_mul, const TensorView& t, int64_t b,
                int64_t h, int64_t r0) {
    if (!positions_contiguous(t) || m > 256) {
        for (int64_t r = 0; r < m; ++r)
            store_row(src + r * ld, d, row_mul(r), t.dtype, t.stride[3], row_ptr_mut(t, b, r0 + r, h));
        return;
    }
    float mul[256], column[256];
    for (int64_t r = 0; r < m; ++r) mul[r] = row_mul(r);
    for (int64_t c = 0; c < d; ++c) {
        for (int64_t r = 0; r < m; ++r) column[r] = mul[r] * src[r * ld + c];
        store_row(column, m, 1.f, t.dtype, 1, elem_ptr_mut(t, b, r0, h, c));
    }
}
inline float unit_row_mul(int64_t) { return 1.f; }
