// A small float-vector vocabulary for the CPU kernels, one definition per ISA. This header is only
// included from the per-ISA kernel translation units, inside their ISA namespace, so that no inline
// function compiled with AVX-512 flags can be picked by the linker for the AVX2 path (SIGILL).
// Everything here is exact to about 1 ulp where the math asks for it (DESIGN.md §5: "CPU: exact
// functions"): exp2 by a degree-7 Taylor polynomial on [-0.5, 0.5], log1p by the atanh series.
// Where the instructions differ, the NEON branch is written to give x86's result for the same lanes
// (max/min of a NaN give the second operand, as MAXPS/MINPS; conversions round to nearest even); left
// as the hardware does it: the sign of a NaN that arithmetic creates (x86 -NaN, NEON +NaN), which of two
// NaN operands propagates, and — as between AVX2 and AVX-512 — the order of lane sums (vhsum) with W.
// The includer includes isa_headers.h first, at global scope.
#pragma once

#if defined(__AVX512F__)
using vf = __m512;
using vi = __m512i;
constexpr int W = 16;
static inline vf vzero() { return _mm512_setzero_ps(); }
static inline vf vset(float x) { return _mm512_set1_ps(x); }
static inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
static inline void vstore(float* p, vf x) { _mm512_storeu_ps(p, x); }
static inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
static inline vf vabs(vf a) { return _mm512_abs_ps(a); }
static inline vf vround(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// (GCC 12 warns that the undefined upper half of the reductions' extract is used uninitialized, wherever it inlines
// them into a small function: a false positive)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
static inline float vhmax(vf a) { return _mm512_reduce_max_ps(a); }
static inline float vhsum(vf a) { return _mm512_reduce_add_ps(a); }
#pragma GCC diagnostic pop
// a > 0 ? b : 0
static inline vf vselect_pos(vf a, vf b) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ), b);
}
// c >= 0 ? a : b
static inline vf vselect_nonneg(vf c, vf a, vf b) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(c, _mm512_setzero_ps(), _CMP_GE_OQ), b, a);
}
// x where x is NaN, else r
static inline vf vkeep_nan(vf x, vf r) { return _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x); }
static inline vf vzero_below(vf x, vf t) {  // 0 where |x| < t; NaN kept
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(vabs(x), t, _CMP_NLT_UQ), x);
}
// x where x is finite, else r
static inline vf vfinite_or(vf x, vf r) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(vabs(x), _mm512_set1_ps(3.40282347e38f), _CMP_LE_OQ), r, x);
}
static inline vf vpow2i(vf n) {  // 2^n for integral n in [-127, 128]; -127 gives 0, 128 gives inf
    vi e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_castsi512_ps(e);
}
// fp16 / bf16 rows: 16 elements at a time
static inline vf vload_fp16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); }
static inline void vstore_fp16(uint16_t* p, vf x) {
    _mm256_storeu_si256((__m256i*)p, _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
static inline vf vload_bf16(const uint16_t* p) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
static inline void vstore_bf16(uint16_t* p, vf x) {  // round to nearest even; NaN stays NaN
    __m512i b = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7fc0));
    _mm256_storeu_si256((__m256i*)p, _mm512_cvtepi32_epi16(r));
}
#elif defined(__AVX2__)
using vf = __m256;
using vi = __m256i;
constexpr int W = 8;
static inline vf vzero() { return _mm256_setzero_ps(); }
static inline vf vset(float x) { return _mm256_set1_ps(x); }
static inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
static inline void vstore(float* p, vf x) { _mm256_storeu_ps(p, x); }
static inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
static inline vf vabs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
static inline vf vround(vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline float vhmax(vf a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}
static inline float vhsum(vf a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline vf vselect_pos(vf a, vf b) {
    return _mm256_and_ps(_mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_GT_OQ), b);
}
static inline vf vselect_nonneg(vf c, vf a, vf b) {
    return _mm256_blendv_ps(b, a, _mm256_cmp_ps(c, _mm256_setzero_ps(), _CMP_GE_OQ));
}
static inline vf vkeep_nan(vf x, vf r) { return _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); }
static inline vf vzero_below(vf x, vf t) { return _mm256_and_ps(x, _mm256_cmp_ps(vabs(x), t, _CMP_NLT_UQ)); }
static inline vf vfinite_or(vf x, vf r) {
    return _mm256_blendv_ps(r, x, _mm256_cmp_ps(vabs(x), _mm256_set1_ps(3.40282347e38f), _CMP_LE_OQ));
}
static inline vf vpow2i(vf n) {
    vi e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_castsi256_ps(e);
}
static inline vf vload_fp16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }
static inline void vstore_fp16(uint16_t* p, vf x) {
    _mm_storeu_si128((__m128i*)p, _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
static inline vf vload_bf16(const uint16_t* p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
static inline void vstore_bf16(uint16_t* p, vf x) {
    __m256i b = _mm256_castps_si256(x);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0), nan);
    // pack 8 x u32 (all < 65536) to 8 x u16
    __m128i lo = _mm256_castsi256_si128(r), hi = _mm256_extracti128_si256(r, 1);
    _mm_storeu_si128((__m128i*)p, _mm_packus_epi32(lo, hi));
}
#elif defined(__ARM_NEON) && defined(__aarch64__)
using vf = float32x4_t;
using vi = int32x4_t;
constexpr int W = 4;
static inline vf vzero() { return vdupq_n_f32(0.f); }
static inline vf vset(float x) { return vdupq_n_f32(x); }
static inline vf vload(const float* p) { return vld1q_f32(p); }
static inline void vstore(float* p, vf x) { vst1q_f32(p, x); }
static inline vf vfma(vf a, vf b, vf c) { return vfmaq_f32(c, a, b); }
static inline vf vadd(vf a, vf b) { return vaddq_f32(a, b); }
static inline vf vsub(vf a, vf b) { return vsubq_f32(a, b); }
static inline vf vmul(vf a, vf b) { return vmulq_f32(a, b); }
static inline vf vdiv(vf a, vf b) { return vdivq_f32(a, b); }
// x86's MAXPS/MINPS: a > b ? a : b (a NaN in either gives b), not NEON's NaN-propagating fmax
static inline vf vmax(vf a, vf b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
static inline vf vmin(vf a, vf b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
static inline vf vabs(vf a) { return vabsq_f32(a); }
static inline vf vround(vf a) { return vrndnq_f32(a); }  // to nearest, ties to even
static inline float vhmax(vf a) {
    vf m = vmax(a, vextq_f32(a, a, 2));
    m = vmax(m, vextq_f32(m, m, 1));
    return vgetq_lane_f32(m, 0);
}
static inline float vhsum(vf a) {
    vf s = vaddq_f32(a, vextq_f32(a, a, 2));
    s = vaddq_f32(s, vextq_f32(s, s, 1));
    return vgetq_lane_f32(s, 0);
}
static inline vf vselect_pos(vf a, vf b) { return vbslq_f32(vcgtq_f32(a, vzero()), b, vzero()); }
static inline vf vselect_nonneg(vf c, vf a, vf b) { return vbslq_f32(vcgeq_f32(c, vzero()), a, b); }
static inline vf vkeep_nan(vf x, vf r) { return vbslq_f32(vceqq_f32(x, x), r, x); }
static inline vf vzero_below(vf x, vf t) { return vbslq_f32(vcltq_f32(vabsq_f32(x), t), vdupq_n_f32(0.f), x); }
static inline vf vfinite_or(vf x, vf r) { return vbslq_f32(vcleq_f32(vabsq_f32(x), vdupq_n_f32(3.40282347e38f)), x, r); }
static inline vf vpow2i(vf n) {
    vi e = vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vreinterpretq_f32_s32(e);
}
static inline vf vload_fp16(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
static inline void vstore_fp16(uint16_t* p, vf x) { vst1_u16(p, vreinterpret_u16_f16(vcvt_f16_f32(x))); }
static inline vf vload_bf16(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
static inline void vstore_bf16(uint16_t* p, vf x) {
    uint32x4_t b = vreinterpretq_u32_f32(x);
    uint32x4_t lsb = vandq_u32(vshrq_n_u32(b, 16), vdupq_n_u32(1));
    uint32x4_t r = vshrq_n_u32(vaddq_u32(b, vaddq_u32(lsb, vdupq_n_u32(0x7fff))), 16);
    r = vbslq_u32(vceqq_f32(x, x), r, vdupq_n_u32(0x7fc0));
    vst1_u16(p, vmovn_u32(r));
}
#else
#error "simd.h: no vector ISA (x86-64 with AVX2, or AArch64 with NEON)"
#endif

// 2^x, |rel err| ~ 1e-7; x = -inf or x < -126.5 gives 0, NaN stays NaN; x ≥ 128 gives inf, and so does x in
// [127.5, 128) but on AVX-512, whose last step scales without the overflowing 2^128 (there 2^x, finite).
static inline vf vexp2(vf x) {
#if defined(__AVX512F__)
    // (vmax and vmin give their second operand, x, for a NaN: kept)
    const vf xc = vmin(vset(129.f), vmax(vset(-127.f), x));
#else
    const vf xc = vmin(vmax(x, vset(-127.f)), vset(128.f));
#endif
    const vf n = vround(xc);
    const vf f = vsub(xc, n);  // [-0.5, 0.5]
    // Taylor series of 2^f = e^(f ln2) to degree 7: truncation < 6e-9 on [-0.5, 0.5]
    vf p = vset(1.5252733804059841e-05f);
    p = vfma(p, f, vset(1.5403530393381606e-04f));
    p = vfma(p, f, vset(1.3333558146428443e-03f));
    p = vfma(p, f, vset(9.6181291076284772e-03f));
    p = vfma(p, f, vset(5.5504108664821580e-02f));
    p = vfma(p, f, vset(2.4022650695910071e-01f));
    p = vfma(p, f, vset(6.9314718055994531e-01f));
    p = vfma(p, f, vset(1.0f));
#if defined(__AVX512F__)
    // p·2^n in one instruction (vscalefps: the same rounding as p times the exact 2^n), 0 where n = -127, as vpow2i
    // gives it (a NaN kept: the compare is unordered); n up to 129 overflows by itself
    return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(n, vset(-127.f), _CMP_NEQ_UQ), p, n);
#else
    vf r = vmul(p, vpow2i(n));
    return vkeep_nan(x, r);  // min/max above turned a NaN into a number
#endif
}

static inline vf vexp(vf x) { return vexp2(vmul(x, vset(1.4426950408889634f))); }

// r where x is not below lo (x NaN included), else 0
static inline vf vzero_where_below(vf x, vf lo, vf r) {
#if defined(__AVX512F__)
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ), r);
#elif defined(__aarch64__)
    return vbslq_f32(vcltq_f32(x, lo), vdupq_n_f32(0.f), r);
#else
    return _mm256_and_ps(_mm256_cmp_ps(x, lo, _CMP_NLT_UQ), r);
#endif
}

// 2^x for x >= lo (and NaN), 0 below lo (lo >= -126): no lane computes a subnormal number on the way
static inline vf vexp2_above(vf x, vf lo) {
    return vzero_where_below(x, lo, vexp2(vmax(lo, x)));  // (vmax gives its second operand, x, for a NaN)
}

// The tiny floor (kTiny = true below): the exponentials that the sigmoid, softplus and gelu are made of (e^x, e^-|x|,
// e^(-x^2/2)) set to 0 below 2^lo — sigmoid's lo is kTinyLog2; softplus' and gelu's (kernels.inc, Consts::tiny_lo)
// kTinyLog2 less log2 of their factor where it is below 1 — so that neither they nor the values and gradients made
// from them are subnormal numbers (each instruction that meets one costs an Intel core a microcode assist); the
// values and derivatives so dropped are below 2^-120 and 2^-116 (times the factor where it exceeds 1: kernels.inc,
// tiny_floor_ok).
constexpr float kTinyLog2 = -120.f;
template <bool kTiny>
static inline vf vexp2_tiny(vf x, vf lo) {
    if constexpr (kTiny) return vexp2_above(x, lo);
    else return (void)lo, vexp2(x);
}

// log1p(u) for u in [0, 1] as u Q(u): Q a degree-8 least-squares fit of log1p(u)/u in Chebyshev
// nodes (relative error < 2e-7 in fp32, exact at u = 0, no division).
static inline vf vlog1p_unit(vf u) {
    vf q = vset(5.2534644492e-03f);
    q = vfma(q, u, vset(-2.9588544741e-02f));
    q = vfma(q, u, vset(7.8361749649e-02f));
    q = vfma(q, u, vset(-1.3674779236e-01f));
    q = vfma(q, u, vset(1.9111436605e-01f));
    q = vfma(q, u, vset(-2.4844372272e-01f));
    q = vfma(q, u, vset(3.3319270611e-01f));
    q = vfma(q, u, vset(-4.9999502301e-01f));
    q = vfma(q, u, vset(1.f));
    return vmul(u, q);
}

// sigmoid(x) = 1 / (1 + e^-x); kTiny: 0 where e^x < 2^kTinyLog2 (1 / (1 + e^-x) then below 2^-120)
template <bool kTiny = false>
static inline vf vsigmoid(vf x) {
    const vf a = vmul(vsub(vzero(), x), vset(1.4426950408889634f));  // e^-x = 2^a
    if constexpr (!kTiny) return vdiv(vset(1.f), vadd(vset(1.f), vexp2(a)));
    // (vmin gives its second operand, a NaN a)
    else return vzero_where_below(vsub(vzero(), a), vset(kTinyLog2),
                                  vdiv(vset(1.f), vadd(vset(1.f), vexp2(vmin(vset(-kTinyLog2), a)))));
}

// softplus(x) = max(x, 0) + log1p(u) and sigmoid(x) = (x >= 0 ? 1 : u) / (1 + u), u = e^-|x|:
// stable for every x, and the gradient shares the value's one exp.
// (kTiny: u below 2^lo set to 0)
template <bool kTiny = false>
static inline vf vsoftplus_u(vf x, vf lo = vzero()) {
    return vexp2_tiny<kTiny>(vmul(vsub(vzero(), vabs(x)), vset(1.4426950408889634f)), lo);
}
template <bool kTiny = false>
static inline vf vsoftplus(vf x, vf lo = vzero()) { return vadd(vmax(x, vzero()), vlog1p_unit(vsoftplus_u<kTiny>(x, lo))); }
template <bool kTiny = false>
static inline vf vsoftplus_grad(vf x, vf lo = vzero()) {
    vf u = vsoftplus_u<kTiny>(x, lo);
    return vdiv(vselect_nonneg(x, vset(1.f), u), vadd(vset(1.f), u));
}

// GELU (erf form). Phi(x) = 1 - erfc(x/sqrt2)/2 for x >= 0 and erfc(|x|/sqrt2)/2 below, with
// erfc(z) = t P(t) exp(-z^2), t = 1/(1 + p z) (Abramowitz & Stegun 7.1.26, |abs err| <= 1.5e-7 on
// erf). exp(-z^2) = exp(-x^2/2) is also the normal density's exponent, so the gradient shares the one
// exp with the value. The coefficients carry the 1/2 of erfc/2; p carries the 1/sqrt2 of z.
// Phi(x) from e = exp(-x^2/2), or for x < 0 e·2^k and then Phi(x)·2^k (the kernels' far rows)
static inline vf vgelu_cdf(vf x, vf e) {
    vf t = vdiv(vset(1.f), vfma(vset(0.23164188826636040f), vabs(x), vset(1.f)));
    vf p = vset(0.5307027145f);
    p = vfma(p, t, vset(-0.7265760135f));
    p = vfma(p, t, vset(0.7107068705f));
    p = vfma(p, t, vset(-0.1422483680f));
    p = vfma(p, t, vset(0.1274147960f));
    vf half_erfc = vmul(vmul(p, t), e);
    return vselect_nonneg(x, vsub(vset(1.f), half_erfc), half_erfc);
}
static constexpr float kGeluExp2 = -0.72134752044448170f;  // -log2(e)/2: exp(-x^2/2) = 2^(x^2 kGeluExp2)
// exp(-x^2/2) (kTiny: below 2^lo set to 0)
template <bool kTiny = false>
static inline vf vgelu_exp(vf x, vf lo) { return vexp2_tiny<kTiny>(vmul(vmul(x, x), vset(kGeluExp2)), lo); }

// gelu(x) = x Phi(x); gelu'(x) = Phi(x) + x phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi)
template <bool kTiny = false>
static inline vf vgelu(vf x, vf lo = vzero()) { return vmul(x, vgelu_cdf(x, vgelu_exp<kTiny>(x, lo))); }
template <bool kTiny = false>
static inline vf vgelu_grad(vf x, vf lo = vzero()) {
    const vf e = vgelu_exp<kTiny>(x, lo);
    return vfma(vmul(x, vset(0.39894228040143268f)), e, vgelu_cdf(x, e));
}
