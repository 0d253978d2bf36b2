// Test-side tensors for calling the C ABI: storage with exactly the bytes a layout spans (so ASan
// sees any access beyond it), strided views into it, dtype conversion, NaN poisoning of outputs and a
// check that nothing outside an output's view was written.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "flashsig.h"
#include "harness.h"
#include "reference.h"

namespace tu {

inline size_t esize(int dtype) { return dtype == FSIG_DTYPE_FP32 ? 4 : 2; }

// A NaN bit pattern per dtype that a kernel could not produce by accident (payload 0xA5...).
inline uint32_t poison_bits(int dtype) {
    return dtype == FSIG_DTYPE_FP32 ? 0x7fa5a5a5u : dtype == FSIG_DTYPE_FP16 ? 0x7da5u : 0x7fa5u;
}

struct Storage {
    unsigned char* mem = nullptr;
    size_t bytes = 0;
    explicit Storage(size_t n) : mem(static_cast<unsigned char*>(std::malloc(n ? n : 1))), bytes(n) {}
    ~Storage() { std::free(mem); }
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
};

struct View {
    std::shared_ptr<Storage> st;
    int dtype = FSIG_DTYPE_FP32;
    int ndim = 4;
    int64_t offset = 0;  // elements from the storage start to the first element
    int64_t shape[4] = {1, 1, 1, 1};
    int64_t strides[4] = {0, 0, 0, 0};

    void* data() const { return st->mem + offset * esize(dtype); }
    size_t numel() const {
        size_t n = 1;
        for (int a = 0; a < ndim; ++a) n *= size_t(shape[a]);
        return n;
    }
    int64_t extent_elems() const {  // offset of the last element + 1, from data()
        int64_t last = 0;
        for (int a = 0; a < ndim; ++a) last += (shape[a] - 1) * strides[a];
        return last + 1;
    }
    fsig_tensor desc() const {
        fsig_tensor t;
        std::memset(&t, 0, sizeof t);
        t.data = data();
        t.capacity_bytes = int64_t(st->bytes) - offset * int64_t(esize(dtype));
        t.dtype = dtype;
        t.device_type = FSIG_DEVICE_CPU;
        t.device_index = 0;
        t.ndim = ndim;
        for (int a = 0; a < ndim; ++a) {
            t.shape[a] = shape[a];
            t.strides[a] = strides[a];
        }
        return t;
    }
    // element offset (from data()) of the flat logical index (row-major over shape)
    int64_t offset_of(size_t idx) const {
        int64_t off = 0;
        for (int a = ndim; a-- > 0;) {
            off += int64_t(idx % size_t(shape[a])) * strides[a];
            idx /= size_t(shape[a]);
        }
        return off;
    }
    void store(const std::vector<float>& dense) const {
        unsigned char* base = static_cast<unsigned char*>(data());
        for (size_t i = 0; i < dense.size(); ++i) {
            const int64_t off = offset_of(i);
            if (dtype == FSIG_DTYPE_FP32) {
                std::memcpy(base + off * 4, &dense[i], 4);
            } else {
                const uint16_t h = dtype == FSIG_DTYPE_FP16 ? ref::float_to_half(dense[i]) : ref::float_to_bf16(dense[i]);
                std::memcpy(base + off * 2, &h, 2);
            }
        }
    }
    std::vector<float> load() const {
        std::vector<float> dense(numel());
        const unsigned char* base = static_cast<const unsigned char*>(data());
        for (size_t i = 0; i < dense.size(); ++i) {
            const int64_t off = offset_of(i);
            if (dtype == FSIG_DTYPE_FP32) {
                std::memcpy(&dense[i], base + off * 4, 4);
            } else {
                uint16_t h;
                std::memcpy(&h, base + off * 2, 2);
                dense[i] = dtype == FSIG_DTYPE_FP16 ? ref::half_to_float(h) : ref::bf16_to_float(h);
            }
        }
        return dense;
    }
};

// Fills the whole storage of an output with the poison NaN.
inline void poison(const View& v) {
    const size_t es = esize(v.dtype), n = v.st->bytes / es;
    const uint32_t bits = poison_bits(v.dtype);
    for (size_t i = 0; i < n; ++i) std::memcpy(v.st->mem + i * es, &bits, es);
}

// What an element of an output must be where an input holds a NaN (test_nan_propagation; test_cuda_backward's nan_backward)
enum class Expect { kFinite, kNan, kEither };

// Elements of a dense [1, n, heads, d] tensor x (View::load order) that break expect(row, head, column)
template <class ExpectAt>
int64_t count_unexpected(const std::vector<float>& x, int64_t n, int64_t heads, int64_t d, ExpectAt expect) {
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; ++i)
        for (int64_t h = 0; h < heads; ++h)
            for (int64_t c = 0; c < d; ++c) {
                const float e = x[size_t((i * heads + h) * d + c)];
                switch (expect(i, h, c)) {
                    case Expect::kFinite: wrong += !std::isfinite(e); break;
                    case Expect::kNan: wrong += !std::isnan(e); break;
                    case Expect::kEither: break;
                }
            }
    return wrong;
}

// Where one NaN in an input must show in O, softmax's LSE, dQ, dK and dV, and where it must not
// (test_nan_propagation on the CPU; test_cuda_forward's nan_propagates and test_cuda_backward's nan_backward).
// The NaN is in q or dO at (row `at`, head 0, column(source)), or in k or v at (key `at`, column(source)): a
// different column per input, so that a NaN found in the wrong column shows; place() puts it there. One kv
// head (Hk = 1); causal or not decides which (row, key) pairs are seen. Rules:
// - a NaN score S reaches dS under softmax, sigmoid, gelu and softplus; relu and relu2 take dS = 0 where S is
//   not > 0 (the where-form; PyTorch's relu(S)² would pass a NaN S on), identity never reads S (`nan_s_to_ds`);
// - a NaN dP reaches dS = f'(S)·dP under every score but where relu and relu2 have S ≤ 0 (dS = 0 whatever dP);
//   a score within rounding of 0 (|q·k| ≤ 1e-3 |q| |k|, which a kernel's sum could put on either side) is open;
// - softmax's row statistics spread a NaN over its row: LSE (a NaN score; +inf would mean "no allowed key") and
//   D = rowsum(dO ∘ O) (a NaN in dO or O) make every dS of the row NaN;
// - a masked dS or P is 0, never 0 times a NaN; but a tile product takes 0 times a NaN operand where a masked
//   element shares a kernel tile with the NaN's row or key: those elements are open (kEither), as in
//   FlashAttention's kernels and PyTorch's math backend — and seen elements with P = 0 (relu) are NaN.
enum class NanIn { kDout, kQuery, kKey, kValue };

inline const char* nan_in_name(NanIn source) {
    switch (source) {
        case NanIn::kDout: return "dO";
        case NanIn::kQuery: return "q";
        case NanIn::kKey: return "k";
        case NanIn::kValue: return "v";
    }
    return "?";
}

class NanRules {
public:
    static int64_t column(NanIn source) { return source == NanIn::kKey ? 5 : source == NanIn::kValue ? 7 : 3; }

    // q, k: dense [1, Nq, Hq, d] and [1, Nk, 1, d] values without the NaN (they give relu's signs)
    NanRules(NanIn source, const ref::Spec& s, int64_t at, const std::vector<float>& q, const std::vector<float>& k)
        : source_(source), s_(s), at_(at), col_(column(source)),
          softmax_(s.score == ref::kSoftmax),
          nan_s_to_ds_(s.score != ref::kRelu && s.score != ref::kRelu2 && s.score != ref::kIdentity) {
        // (softmax's "every key" rules need a row that sees every key: bottom-right causal or none, Nk >= Nq;
        // relu's signs need x = scale·q·k alone)
        if (s.Hk != 1 || s.B != 1 || s.Nq > s.Nk || s.window_left >= 0 || s.window_right >= 0 || s.extended()) {
            std::fprintf(stderr, "NanRules: B = 1, Hk = 1, Nq <= Nk, no window and no extension only\n");
            std::abort();
        }
        // dS of the pairs whose dP holds the NaN: (row at, head 0) with every key (dO), every (row, head) with
        // key at (v)
        if (source == NanIn::kDout)
            for (int64_t j = 0; j < s.Nk; ++j) nan_dp_ds_.push_back(nan_dp_to_ds(q, k, at, 0, j));
        if (source == NanIn::kValue)
            for (int64_t i = 0; i < s.Nq; ++i)
                for (int64_t h = 0; h < s.Hq; ++h) nan_dp_ds_.push_back(nan_dp_to_ds(q, k, i, h, at));
    }

    // The NaN into the source's dense values ([1, Nq, Hq, d] for q and dO, [1, Nk, 1, d] for k and v)
    void place(std::vector<float>& values) const {
        const bool kv = source_ == NanIn::kKey || source_ == NanIn::kValue;
        values.at(size_t(at_ * (kv ? s_.Hk : s_.Hq) * s_.d + col_)) = std::numeric_limits<float>::quiet_NaN();
    }

    Expect out(int64_t i, int64_t h, int64_t c) const {
        switch (source_) {
            case NanIn::kQuery: return is_nan_row(i, h) ? Expect::kNan : Expect::kFinite;
            case NanIn::kKey: return sees(i, h, at_) ? Expect::kNan : Expect::kFinite;
            case NanIn::kValue:
                if (c != col_) return Expect::kFinite;
                return sees(i, h, at_) ? Expect::kNan : Expect::kEither;
            case NanIn::kDout: break;
        }
        return Expect::kFinite;
    }
    // softmax's LSE: its scores' NaN only
    Expect lse(int64_t i, int64_t h) const {
        if (source_ == NanIn::kQuery) return is_nan_row(i, h) ? Expect::kNan : Expect::kFinite;
        if (source_ == NanIn::kKey) return sees(i, h, at_) ? Expect::kNan : Expect::kFinite;
        return Expect::kFinite;
    }

    // dQ_i = Σ_j dS_ij k_j
    Expect dq(int64_t i, int64_t h, int64_t c) const {
        switch (source_) {
            case NanIn::kDout: {  // NaN if one of the row's dS is (relu: a seen key with S > 0)
                if (!is_nan_row(i, h)) return Expect::kFinite;
                Expect any = Expect::kFinite;
                for (int64_t j = 0; j < s_.Nk; ++j)
                    if (sees(at_, 0, j)) any = worse(any, nan_dp_ds_[size_t(j)]);
                return any;
            }
            case NanIn::kQuery: return is_nan_row(i, h) ? through_s() : Expect::kFinite;
            case NanIn::kKey:  // dS of the key times the NaN in its column, the NaN score in the rest
                if (!sees(i, h, at_)) return c == col_ ? Expect::kEither : Expect::kFinite;
                return c == col_ ? Expect::kNan : through_s();
            case NanIn::kValue:  // dP of the key; softmax's D of a row whose O took 0 times the NaN is open
                if (!sees(i, h, at_)) return softmax_ ? Expect::kEither : Expect::kFinite;
                return softmax_ ? Expect::kNan : nan_dp_ds_[size_t(i * s_.Hq + h)];
        }
        return Expect::kFinite;
    }
    // dK_j = Σ_i dS_ij q_i
    Expect dk(int64_t j, int64_t c) const {
        switch (source_) {
            case NanIn::kDout:
                if (!sees(at_, 0, j)) return Expect::kFinite;
                return nan_dp_ds_[size_t(j)];
            case NanIn::kQuery:  // the row's dS times the NaN in its column, its NaN score in the rest
                if (!sees(at_, 0, j)) return c == col_ ? Expect::kEither : Expect::kFinite;
                return c == col_ ? Expect::kNan : through_s();
            case NanIn::kKey:  // softmax: every key is seen by a row whose dS are all NaN (the last row sees all)
                if (softmax_) return Expect::kNan;
                return j == at_ ? through_s() : Expect::kFinite;
            case NanIn::kValue: {
                if (softmax_) return Expect::kNan;  // as for k, through D
                if (j != at_) return Expect::kFinite;
                Expect any = Expect::kFinite;  // NaN if one seen row's dS is
                for (int64_t i = 0; i < s_.Nq; ++i)
                    for (int64_t h = 0; h < s_.Hq; ++h)
                        if (sees(i, h, at_)) any = worse(any, nan_dp_ds_[size_t(i * s_.Hq + h)]);
                return any;
            }
        }
        return Expect::kFinite;
    }
    // dV_j = Σ_i P_ij dO_i (V itself never enters it)
    Expect dv(int64_t j, int64_t c) const {
        switch (source_) {
            case NanIn::kDout:  // relu's P = 0 too: 0 times the NaN in the tile product
                if (c != col_) return Expect::kFinite;
                return sees(at_, 0, j) ? Expect::kNan : Expect::kEither;
            case NanIn::kQuery: return sees(at_, 0, j) ? Expect::kNan : Expect::kFinite;
            case NanIn::kKey: return softmax_ || j == at_ ? Expect::kNan : Expect::kFinite;
            case NanIn::kValue: return Expect::kFinite;
        }
        return Expect::kFinite;
    }

private:
    bool sees(int64_t i, int64_t h, int64_t j) const { return s_.allowed_at(0, h, i, j); }
    bool is_nan_row(int64_t i, int64_t h) const { return i == at_ && h == 0; }
    Expect through_s() const { return nan_s_to_ds_ ? Expect::kNan : Expect::kFinite; }
    // a sum's expectation from its terms': NaN if one term is, open if one may be, else finite
    static Expect worse(Expect a, Expect b) {
        if (a == Expect::kNan || b == Expect::kNan) return Expect::kNan;
        return a == Expect::kEither || b == Expect::kEither ? Expect::kEither : Expect::kFinite;
    }
    Expect nan_dp_to_ds(const std::vector<float>& q, const std::vector<float>& k, int64_t i, int64_t h,
                        int64_t j) const {
        if (s_.score != ref::kRelu && s_.score != ref::kRelu2) return Expect::kNan;
        double dot = 0, qq = 0, kk = 0;
        for (int64_t c = 0; c < s_.d; ++c) {
            const double a = q[size_t((i * s_.Hq + h) * s_.d + c)], b = k[size_t(j * s_.d + c)];
            dot += a * b, qq += a * a, kk += b * b;
        }
        if (std::fabs(dot) <= 1e-3 * std::sqrt(qq * kk)) return Expect::kEither;
        return dot > 0 ? Expect::kNan : Expect::kFinite;
    }

    NanIn source_;
    ref::Spec s_;
    int64_t at_, col_;
    bool softmax_, nan_s_to_ds_;
    std::vector<Expect> nan_dp_ds_;
};

// Elements of the storage outside the view must still hold the poison (no stray writes). Returns the
// number of changed elements.
inline size_t count_stray_writes(const View& v) {
    const size_t es = esize(v.dtype), n = v.st->bytes / es;
    std::vector<char> in_view(n, 0);
    for (size_t i = 0; i < v.numel(); ++i) in_view[size_t(v.offset + v.offset_of(i))] = 1;
    const uint32_t bits = poison_bits(v.dtype);
    size_t changed = 0;
    for (size_t i = 0; i < n; ++i)
        if (!in_view[i] && std::memcmp(v.st->mem + i * es, &bits, es) != 0) ++changed;
    return changed;
}

// One output of a case against its references: the §6 rule and no stray writes. `spec` describes the
// problem for the message.
inline bool check_output(const std::string& case_name, const std::string& spec, const char* output, const View& v,
                         const std::vector<double>& r64, const std::vector<float>& naive) {
    const std::vector<float> ours = v.load();
    std::vector<int64_t> shape(v.shape, v.shape + v.ndim);
    const ref::RuleResult r = ref::check_rule(case_name, output, ours.data(), r64.data(), naive.data(), ours.size(), shape);
    EXPECT(r.ok, "%s: %s breaks the §6 rule (%s)", case_name.c_str(), output, spec.c_str());
    const size_t stray = count_stray_writes(v);
    EXPECT(stray == 0, "%s: %zu element(s) outside the %s view were written", case_name.c_str(), stray, output);
    return r.ok && stray == 0;
}

// Memory layouts of a [B, N, H, d] tensor (BSHD logical order); see make_view.
enum Layout : int {
    kContiguous = 0,  // dense BSHD
    kBHSD,            // heads-major memory [B, H, N, d], viewed as BSHD (transposed heads)
    kPadded,          // rows padded: d+3 per head, H·(d+3) per token, 5 extra elements per batch
    kPackedQKV,       // q, k, v heads of one token side by side in one buffer [B, N, Hq+2Hk, d]
    kStrideD2,        // every other element: the last dimension has stride 2
    kBHDN,            // features before positions [B, H, d, N] (ND4J's attention layout): positions contiguous
    kLayoutCount
};
inline const char* layout_name(int l) {
    static const char* names[] = {"contig", "bhsd", "padded", "packedqkv", "dstride2", "bhdn"};
    return names[l];
}

inline void set_strides(View& v, int layout, int64_t B, int64_t N, int64_t H, int64_t d) {
    v.ndim = 4;
    v.shape[0] = B, v.shape[1] = N, v.shape[2] = H, v.shape[3] = d;
    int64_t* s = v.strides;
    switch (layout) {
        case kBHSD: s[0] = H * N * d, s[1] = d, s[2] = N * d, s[3] = 1; break;
        case kPadded: s[3] = 1, s[2] = d + 3, s[1] = H * (d + 3), s[0] = N * H * (d + 3) + 5; break;
        case kStrideD2: s[3] = 2, s[2] = 2 * d, s[1] = 2 * d * H, s[0] = 2 * d * H * N; break;
        case kBHDN: s[1] = 1, s[3] = N, s[2] = d * N, s[0] = H * d * N; break;
        default: s[3] = 1, s[2] = d, s[1] = H * d, s[0] = N * H * d; break;
    }
}

// A [B, N, H, d] view in its own storage of exactly the bytes the layout spans.
inline View make_view(int dtype, int layout, int64_t B, int64_t N, int64_t H, int64_t d) {
    View v;
    v.dtype = dtype;
    set_strides(v, layout == kPackedQKV ? kPadded : layout, B, N, H, d);
    v.st = std::make_shared<Storage>(size_t(v.extent_elems()) * esize(dtype));
    return v;
}

inline View make_lse_view(int layout, int64_t B, int64_t Hq, int64_t Nq) {
    View v;
    v.dtype = FSIG_DTYPE_FP32;
    v.ndim = 3;
    v.shape[0] = B, v.shape[1] = Hq, v.shape[2] = Nq;
    const int64_t row = layout == kContiguous ? Nq : Nq + 1;
    v.strides[2] = 1, v.strides[1] = row, v.strides[0] = Hq * row;
    v.st = std::make_shared<Storage>(size_t(v.extent_elems()) * 4);
    return v;
}

// q, k, v for a layout; packed-qkv needs Nq == Nk (otherwise padded is used).
struct QKV {
    View q, k, v;
};
inline QKV make_qkv(int dtype, int layout, const ref::Spec& s) {
    QKV r;
    if (layout == kPackedQKV && s.Nq == s.Nk) {
        const int64_t H = s.Hq + 2 * s.Hk, d = s.d, N = s.Nq;
        auto st = std::make_shared<Storage>(size_t(s.B * N * H * d) * esize(dtype));
        View* views[3] = {&r.q, &r.k, &r.v};
        const int64_t heads[3] = {s.Hq, s.Hk, s.Hk}, first[3] = {0, s.Hq, s.Hq + s.Hk};
        for (int t = 0; t < 3; ++t) {
            View& v = *views[t];
            v.st = st;
            v.dtype = dtype;
            v.offset = first[t] * d;
            v.shape[0] = s.B, v.shape[1] = N, v.shape[2] = heads[t], v.shape[3] = d;
            v.strides[0] = N * H * d, v.strides[1] = H * d, v.strides[2] = d, v.strides[3] = 1;
        }
        return r;
    }
    r.q = make_view(dtype, layout, s.B, s.Nq, s.Hq, s.d);
    r.k = make_view(dtype, layout, s.B, s.Nk, s.Hk, s.d);
    r.v = make_view(dtype, layout, s.B, s.Nk, s.Hk, s.d);
    return r;
}

inline std::vector<double> to_double(const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); }

inline std::vector<float> to_float_rounded(const std::vector<double>& x, int dtype) {
    std::vector<float> r(x.size());
    for (size_t i = 0; i < x.size(); ++i) r[i] = ref::round_to(dtype, float(x[i]));
    return r;
}

// Byte snapshot of a storage (inputs must come back unchanged).
inline std::vector<unsigned char> snapshot(const View& v) {
    return std::vector<unsigned char>(v.st->mem, v.st->mem + v.st->bytes);
}
inline bool unchanged(const View& v, const std::vector<unsigned char>& snap) {
    return snap.size() == v.st->bytes && std::memcmp(snap.data(), v.st->mem, snap.size()) == 0;
}

inline fsig_attention_params params_for(const ref::Spec& s) {
    fsig_attention_params p = fsig_attention_params_default();
    p.score = s.score;
    p.causal = s.causal ? 1 : 0;
    p.window_left = s.window_left;
    p.window_right = s.window_right;
    p.scale = float(s.scale);
    p.sigmoid_bias = float(s.sigmoid_bias);
    p.alpha = float(s.alpha);
    return p;
}

#if defined(__x86_64__)
// AMX-TILE and AMX-BF16 (CPUID.(7, 0):EDX bits 22, 24) with their state enabled (XCR0 bits 17, 18) and
// granted to this process: cpu_backend.cpp's amx_usable, asked independently of the library (the caller
// also requires AVX512-BF16, as the library does)
inline bool amx_usable_here() {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || (d & (5u << 22)) != (5u << 22)) return false;
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0x60000) == 0x60000 && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}
#endif

// FSIG_CPU_ISA=avx512 (or avx512bf16, amx) on a CPU without AVX-512 F/BW/DQ/VL (or without AVX512-BF16,
// AMX): the caller skips. Otherwise checks that the library runs the ISA the environment asks for. Returns
// th::kSkip, 1 (wrong ISA) or 0.
inline int check_isa_env() {
    const char* want = std::getenv("FSIG_CPU_ISA");
    if (want == nullptr) return 0;
#if defined(__x86_64__)
    __builtin_cpu_init();
    const bool has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    const bool has_bf16 = has512 && __builtin_cpu_supports("avx512bf16");
    const bool has_amx = has_bf16 && amx_usable_here();
#endif
    fsig_capabilities caps;
    std::memset(&caps, 0, sizeof caps);
    caps.struct_size = sizeof caps;
    if (fsig_get_capabilities(&caps) != FSIG_OK) {
        std::fprintf(stderr, "fsig_get_capabilities failed: %s\n", fsig_last_error());
        return 1;
    }
    struct Isa {
        const char* name;
        int32_t id;
        bool present;
    };
#if defined(__x86_64__)
    const Isa isas[] = {{"avx2", FSIG_CPU_ISA_AVX2, true},
                        {"avx512", FSIG_CPU_ISA_AVX512, has512},
                        {"avx512bf16", FSIG_CPU_ISA_AVX512_BF16, has_bf16},
                        {"amx", FSIG_CPU_ISA_AMX, has_amx}};
#else
    const Isa isas[] = {{"neon", FSIG_CPU_ISA_NEON, true}};
#endif
    const char* running = "?";
    for (const Isa& isa : isas) {
        if (caps.cpu_isa == isa.id) running = isa.name;
        if (std::strcmp(want, isa.name) != 0) continue;
        if (!isa.present) {
            std::printf("SKIP: FSIG_CPU_ISA=%s but this CPU lacks it\n", want);
            return th::kSkip;
        }
        if (caps.cpu_isa != isa.id) {
            std::fprintf(stderr, "FSIG_CPU_ISA=%s on a CPU that has it, but the library runs ISA %d\n", want,
                         caps.cpu_isa);
            return 1;
        }
    }
    std::printf("library CPU ISA: %s\n", running);
    return 0;
}

}  // namespace tu
