// The C ABI: every argument is validated here, before any backend runs, so that a bad call returns
// a status and a message naming the argument and the rule, and writes nothing.
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <iterator>

#include "cpu/block_cache.h"
#include "cpu/cpu_backend.h"
#include "cpu/linear.h"
#include "cpu/thread_pool.h"
#include "cuda/cuda_backend.h"
#include "cuda/linear_params.h"
#include "flashsig.h"
#include "float_mode.h"
#include "internal.h"
#include "overlap.h"

namespace fsig {
namespace {

// A plain buffer, not a std::string: a thread_local with a destructor would tie every thread that
// ever called FlashSig to this library's code at thread exit.
thread_local char t_last_error[512];

void clear_error() { t_last_error[0] = '\0'; }

// Records the message for fsig_last_error() and returns the status.
[[gnu::format(printf, 2, 3)]] int fail(int status, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(t_last_error, sizeof t_last_error, fmt, ap);
    va_end(ap);
    return status;
}

const char* dtype_name(int32_t dtype) {
    switch (dtype) {
        case FSIG_DTYPE_FP32: return "fp32";
        case FSIG_DTYPE_FP16: return "fp16";
        case FSIG_DTYPE_BF16: return "bf16";
        case FSIG_DTYPE_BOOL: return "bool";
        default: return "unknown";
    }
}

int64_t dtype_size(int32_t dtype) { return dtype == FSIG_DTYPE_FP32 ? 4 : dtype == FSIG_DTYPE_BOOL ? 1 : 2; }

// A tensor argument after its own checks: the view the kernels use and the bytes it spans.
struct Checked {
    TensorView view;
    const char* name = "";
    int32_t device_type = FSIG_DEVICE_CPU, device_index = 0;
    uintptr_t begin = 0, end = 0;  // byte range [begin, end) reachable through shape and strides
};

// Checks one descriptor and its data pointer: rank, dims, dtype, device, strides, extent within
// capacity_bytes (with overflow checks), alignment.
// bytes: the tensor must be FSIG_DTYPE_BOOL (mask, block layout); otherwise a float dtype.
int check_tensor(const char* name, const fsig_tensor* t, const void* data, int rank, Checked* out, bool bytes = false) {
    out->name = name;
    if (t == nullptr) return fail(FSIG_ERROR_NULL_ARGUMENT, "%s is NULL", name);
    if (data == nullptr) return fail(FSIG_ERROR_NULL_ARGUMENT, "%s: data pointer is NULL", name);
    if (t->dtype != FSIG_DTYPE_FP32 && t->dtype != FSIG_DTYPE_FP16 && t->dtype != FSIG_DTYPE_BF16 &&
        t->dtype != FSIG_DTYPE_BOOL)
        return fail(FSIG_ERROR_INVALID_DTYPE, "%s.dtype %d is not a fsig_dtype (fp32 = 0, fp16 = 1, bf16 = 2)", name,
                    t->dtype);
    if (bytes && t->dtype != FSIG_DTYPE_BOOL)
        return fail(FSIG_ERROR_INVALID_DTYPE, "%s is %s but must be bool (FSIG_DTYPE_BOOL: 1 byte, nonzero = allowed)",
                    name, dtype_name(t->dtype));
    if (!bytes && t->dtype == FSIG_DTYPE_BOOL)
        return fail(FSIG_ERROR_INVALID_DTYPE, "%s is bool but must be fp32, fp16 or bf16 (bool is for mask and block_layout)",
                    name);
    if (t->device_type != FSIG_DEVICE_CPU && t->device_type != FSIG_DEVICE_CUDA)
        return fail(FSIG_ERROR_INVALID_DEVICE, "%s.device_type %d is not a fsig_device_type (CPU = 0, CUDA = 1)",
                    name, t->device_type);
    if (t->device_index < 0 || (t->device_type == FSIG_DEVICE_CPU && t->device_index != 0))
        return fail(FSIG_ERROR_INVALID_DEVICE, "%s.device_index %d is invalid (0 for the CPU, a CUDA ordinal >= 0)",
                    name, t->device_index);
    if (t->ndim != rank)
        return fail(FSIG_ERROR_INVALID_SHAPE, "%s.ndim is %d but must be %d", name, t->ndim, rank);
    const int64_t esize = dtype_size(t->dtype);
    int64_t last = 0;  // offset of the last element, in elements
    for (int i = 0; i < rank; ++i) {
        if (t->shape[i] < 1)
            return fail(FSIG_ERROR_INVALID_SHAPE, "%s.shape[%d] is %lld but every dimension must be >= 1", name, i,
                        (long long)t->shape[i]);
        if (t->strides[i] < 0)
            return fail(FSIG_ERROR_INVALID_STRIDE, "%s.strides[%d] is %lld but strides must be >= 0", name, i,
                        (long long)t->strides[i]);
        int64_t span;
        if (__builtin_mul_overflow(t->shape[i] - 1, t->strides[i], &span) || __builtin_add_overflow(last, span, &last))
            return fail(FSIG_ERROR_INVALID_STRIDE, "%s: shape and strides address more than 2^63 elements", name);
    }
    int64_t extent_bytes;
    if (__builtin_add_overflow(last, int64_t(1), &extent_bytes) ||
        __builtin_mul_overflow(extent_bytes, esize, &extent_bytes))
        return fail(FSIG_ERROR_INVALID_STRIDE, "%s: shape and strides address more than 2^63 bytes", name);
    if (t->capacity_bytes < extent_bytes)
        return fail(FSIG_ERROR_BUFFER_TOO_SMALL,
                    "%s: shape and strides reach %lld bytes but capacity_bytes is %lld", name,
                    (long long)extent_bytes, (long long)t->capacity_bytes);
    const uintptr_t addr = reinterpret_cast<uintptr_t>(data);
    if (addr % uintptr_t(esize) != 0)
        return fail(FSIG_ERROR_MISALIGNED, "%s: data address %p is not aligned to its %s element size (%lld bytes)",
                    name, data, dtype_name(t->dtype), (long long)esize);
    if (addr > UINTPTR_MAX - uintptr_t(extent_bytes))
        return fail(FSIG_ERROR_INVALID_STRIDE, "%s: data address plus extent wraps around", name);
    out->view.data = const_cast<void*>(data);
    out->view.dtype = t->dtype;
    for (int i = 0; i < rank; ++i) {
        out->view.shape[i] = t->shape[i];
        out->view.stride[i] = t->strides[i];
    }
    out->device_type = t->device_type;
    out->device_index = t->device_index;
    out->begin = addr;
    out->end = addr + uintptr_t(extent_bytes);
    return FSIG_OK;
}

// An output must not write one element twice: with dims sorted by stride, each stride must step
// over everything the smaller dims span (sufficient, and true of every dense or sliced layout).
int check_no_self_overlap(const Checked& c, int rank) {
    int order[4] = {0, 1, 2, 3};
    for (int i = 1; i < rank; ++i)
        for (int j = i; j > 0 && c.view.stride[order[j]] < c.view.stride[order[j - 1]]; --j) std::swap(order[j], order[j - 1]);
    int64_t span = 0;  // elements spanned by the dims so far, minus one
    for (int i = 0; i < rank; ++i) {
        const int dim = order[i];
        if (c.view.shape[dim] == 1) continue;
        if (c.view.stride[dim] <= span)
            return fail(FSIG_ERROR_INVALID_STRIDE,
                        "%s.strides[%d] = %lld makes elements overlap: an output needs strides that step over "
                        "the smaller dimensions (dense or sliced layouts)",
                        c.name, dim, (long long)c.view.stride[dim]);
        span += (c.view.shape[dim] - 1) * c.view.stride[dim];
    }
    return FSIG_OK;
}

ViewShape view_shape(const Checked& c) {
    ViewShape v{};
    v.base = reinterpret_cast<uintptr_t>(c.view.data);
    v.esize = c.view.data != nullptr ? dtype_size(c.view.dtype) : 0;  // 0: a raw byte range (the workspace)
    v.rank = 4;
    for (int i = 0; i < 4; ++i) v.shape[i] = c.view.shape[i], v.stride[i] = c.view.stride[i];
    v.begin = c.begin, v.end = c.end;
    return v;
}

// No shared byte (overlap.h: exact for views into one fused buffer, else by byte range).
int check_disjoint(const Checked& out, const Checked& other) {
    if (views_overlap(view_shape(out), view_shape(other)))
        return fail(FSIG_ERROR_ALIASING, "%s overlaps %s in memory: outputs must not share bytes with any other tensor",
                    out.name, other.name);
    return FSIG_OK;
}

int check_same_dtype(const Checked& a, const Checked& b) {
    if (a.view.dtype != b.view.dtype)
        return fail(FSIG_ERROR_INVALID_DTYPE, "%s is %s but %s is %s: q, k, v, out and the gradients share one dtype",
                    b.name, dtype_name(b.view.dtype), a.name, dtype_name(a.view.dtype));
    return FSIG_OK;
}

int check_same_device(const Checked& a, const Checked& b) {
    if (a.device_type != b.device_type || a.device_index != b.device_index)
        return fail(FSIG_ERROR_INVALID_DEVICE, "%s is on %s:%d but %s is on %s:%d: all tensors of a call share a device",
                    b.name, b.device_type == FSIG_DEVICE_CPU ? "cpu" : "cuda", b.device_index, a.name,
                    a.device_type == FSIG_DEVICE_CPU ? "cpu" : "cuda", a.device_index);
    return FSIG_OK;
}

int check_dim(const Checked& t, int dim, int64_t expected, const char* what, const char* source) {
    if (t.view.shape[dim] != expected)
        return fail(FSIG_ERROR_INVALID_SHAPE, "%s.shape[%d] (%s) is %lld but must be %lld, as %s", t.name, dim, what,
                    (long long)t.view.shape[dim], (long long)expected, source);
    return FSIG_OK;
}

#define FSIG_CHECK(expr)              \
    do {                              \
        int fsig_status_ = (expr);    \
        if (fsig_status_ != FSIG_OK) return fsig_status_; \
    } while (0)

bool is_linear(int32_t score) { return score == FSIG_SCORE_COSFORMER || score == FSIG_SCORE_LINEAR_ELU; }

const char* score_name(int32_t score) {
    static const char* names[] = {"softmax", "sigmoid", "relu", "relu2", "gelu", "softplus", "identity", "cosformer",
                                  "linear_elu"};
    return score >= 0 && score <= FSIG_SCORE_LINEAR_ELU ? names[score] : "unknown";
}

// Masks and positions: the scalar parameters alone.
int check_extension_params(const fsig_attention_params& prm) {
    if (prm.sparse_block_m < 0)
        return fail(FSIG_ERROR_INVALID_PARAMS,
                    "params.sparse_block_m is %lld but must be >= 1, or 0 for no block-sparse layout",
                    (long long)prm.sparse_block_m);
    if (prm.sparse_block_n < 0)
        return fail(FSIG_ERROR_INVALID_PARAMS,
                    "params.sparse_block_n is %lld but must be >= 1, or 0 for no block-sparse layout",
                    (long long)prm.sparse_block_n);
    if ((prm.sparse_block_m == 0) != (prm.sparse_block_n == 0))
        return fail(FSIG_ERROR_INVALID_PARAMS,
                    "params.sparse_block_m is %lld and params.sparse_block_n is %lld: set both (>= 1) or neither (0)",
                    (long long)prm.sparse_block_m, (long long)prm.sparse_block_n);
    if (prm.strided < 0)
        return fail(FSIG_ERROR_INVALID_PARAMS, "params.strided is %lld but must be >= 1, or 0 for no strided mask",
                    (long long)prm.strided);
    if (prm.logn_train < 0 || prm.logn_train == 1)
        return fail(FSIG_ERROR_INVALID_PARAMS,
                    "params.logn_train is %lld but must be >= 2 (lambda divides by ln logn_train), or 0 for no log-n "
                    "scaling",
                    (long long)prm.logn_train);
    return FSIG_OK;
}

// The size of fsig_attention_params in FlashSig 0.1 (before the linear-attention fields): callers
// compiled against that header keep working, the new fields taking their defaults.
constexpr size_t kParamsSizeV01 = offsetof(fsig_attention_params, linear_length);
static_assert(kParamsSizeV01 == 48, "the 0.1 layout of fsig_attention_params must not change");
// ... and with the linear-attention fields, before the masks-and-positions ones
constexpr size_t kParamsSizeV02 = offsetof(fsig_attention_params, sparse_block_m);
static_assert(kParamsSizeV02 == 64, "the 0.2 layout of fsig_attention_params must not change");
// ... and with masks and positions, before the backward's workspace (0.3)
constexpr size_t kParamsSizeMasks = offsetof(fsig_attention_params, workspace);
static_assert(kParamsSizeMasks == 96, "the layout with masks and positions must not change");

// Params: size-versioned, every value in range; resolves the defaults that depend on the shapes.
// *out receives the caller's struct over the defaults (fields of an older, smaller struct keep them).
int check_params(const fsig_attention_params* params_in, fsig_attention_params* out, Problem* p) {
    if (params_in == nullptr) return fail(FSIG_ERROR_NULL_ARGUMENT, "params is NULL");
    const uint32_t size = params_in->struct_size;
    if (size < kParamsSizeV01)
        return fail(FSIG_ERROR_INVALID_PARAMS,
                    "params.struct_size is %u but this library needs at least %zu: initialise params with "
                    "fsig_attention_params_default()",
                    size, kParamsSizeV01);
    if (size > kParamsSizeV01 && size != kParamsSizeV02 && size != kParamsSizeMasks && size < sizeof(fsig_attention_params))
        return fail(FSIG_ERROR_INVALID_PARAMS,
                    "params.struct_size is %u, which is no version of fsig_attention_params (%zu, %zu or %zu before, "
                    "%zu now): initialise params with fsig_attention_params_default()",
                    size, kParamsSizeV01, kParamsSizeV02, kParamsSizeMasks, sizeof(fsig_attention_params));
    // a newer caller's extra fields are fine as long as they hold their "off" value (zero)
    const unsigned char* bytes = reinterpret_cast<const unsigned char*>(params_in);
    for (size_t i = sizeof(fsig_attention_params); i < size; ++i)
        if (bytes[i] != 0)
            return fail(FSIG_ERROR_UNSUPPORTED,
                        "params sets a field at byte %zu that this library version (%s) does not know", i,
                        fsig_version_string());
    *out = fsig_attention_params_default();
    std::memcpy(out, params_in, size < sizeof(fsig_attention_params) ? size : sizeof(fsig_attention_params));
    out->struct_size = sizeof(fsig_attention_params);
    const fsig_attention_params* params = out;
    if (params->score < FSIG_SCORE_SOFTMAX || params->score > FSIG_SCORE_LINEAR_ELU)
        return fail(FSIG_ERROR_INVALID_PARAMS, "params.score %d is not a fsig_score (0..8)", params->score);
    if (!std::isnan(params->scale) && !std::isfinite(params->scale))
        return fail(FSIG_ERROR_INVALID_PARAMS, "params.scale must be finite (or NaN for 1/sqrt(d))");
    if (!std::isnan(params->sigmoid_bias) && !std::isfinite(params->sigmoid_bias))
        return fail(FSIG_ERROR_INVALID_PARAMS, "params.sigmoid_bias must be finite (or NaN for -ln Nk)");
    if (!std::isfinite(params->alpha))
        return fail(FSIG_ERROR_INVALID_PARAMS, "params.alpha must be finite (default 1)");
    if (params->causal != 0 && params->causal != 1)
        return fail(FSIG_ERROR_INVALID_PARAMS, "params.causal is %d but must be 0 or 1", params->causal);
    if (params->window_left < -1)
        return fail(FSIG_ERROR_INVALID_PARAMS, "params.window_left is %lld but must be >= 0, or -1 for unbounded",
                    (long long)params->window_left);
    if (params->window_right < -1)
        return fail(FSIG_ERROR_INVALID_PARAMS, "params.window_right is %lld but must be >= 0, or -1 for unbounded",
                    (long long)params->window_right);
    if (params->deterministic != 0 && params->deterministic != 1)
        return fail(FSIG_ERROR_INVALID_PARAMS, "params.deterministic is %d but must be 0 or 1", params->deterministic);
    if (params->reserved0 != 0)
        return fail(FSIG_ERROR_INVALID_PARAMS, "params.reserved0 is %d but must be 0", params->reserved0);
    if (params->reserved1 != 0)
        return fail(FSIG_ERROR_INVALID_PARAMS, "params.reserved1 is %d but must be 0", params->reserved1);
    if (params->workspace_bytes < 0)
        return fail(FSIG_ERROR_INVALID_PARAMS, "params.workspace_bytes is %lld but must be >= 0",
                    (long long)params->workspace_bytes);
    if ((params->workspace == nullptr) != (params->workspace_bytes == 0))
        return fail(FSIG_ERROR_INVALID_PARAMS,
                    "params.workspace is %p but params.workspace_bytes is %lld: give both (the CUDA workspace's "
                    "memory and its size) or neither",
                    params->workspace, (long long)params->workspace_bytes);
    FSIG_CHECK(check_extension_params(*params));
    if (params->linear_length < 0)
        return fail(FSIG_ERROR_INVALID_PARAMS,
                    "params.linear_length is %lld but must be >= max(Nq, Nk), or 0 for the default max(Nq, Nk)",
                    (long long)params->linear_length);
    if (!std::isnan(params->linear_epsilon) && !(std::isfinite(params->linear_epsilon) && params->linear_epsilon > 0))
        return fail(FSIG_ERROR_INVALID_PARAMS, "params.linear_epsilon is %g but must be finite and > 0 (or NaN for 1e-6)",
                    double(params->linear_epsilon));
    const char* name = score_name(params->score);
    if (is_linear(params->score)) {
        // The linear scores are scale-free (O is a ratio of sums of φ(q)·φ(k)) and take no mask but causal.
        if (!std::isnan(params->scale))
            return fail(FSIG_ERROR_INVALID_PARAMS,
                        "params.scale is %g but params.score = %s has no scale: leave it NaN (the default)",
                        double(params->scale), name);
        if (!std::isnan(params->sigmoid_bias))
            return fail(FSIG_ERROR_INVALID_PARAMS,
                        "params.sigmoid_bias is %g but it is for the sigmoid score only (params.score = %s): leave it NaN",
                        double(params->sigmoid_bias), name);
        if (params->alpha != 1.f)
            return fail(FSIG_ERROR_INVALID_PARAMS,
                        "params.alpha is %g but it is for the pointwise scores only (params.score = %s): leave it 1",
                        double(params->alpha), name);
        if (params->window_left != -1 || params->window_right != -1)
            return fail(FSIG_ERROR_INVALID_PARAMS,
                        "params.window_left/window_right are %lld/%lld but params.score = %s takes no window (only "
                        "causal): leave them -1",
                        (long long)params->window_left, (long long)params->window_right, name);
        if (params->score == FSIG_SCORE_LINEAR_ELU && params->linear_length != 0)
            return fail(FSIG_ERROR_INVALID_PARAMS,
                        "params.linear_length is %lld but only cosformer re-weights by position (params.score = "
                        "linear_elu): leave it 0",
                        (long long)params->linear_length);
    } else {
        if (params->linear_length != 0)
            return fail(FSIG_ERROR_INVALID_PARAMS,
                        "params.linear_length is %lld but it is for params.score = cosformer only (score is %s): leave it 0",
                        (long long)params->linear_length, name);
        if (!std::isnan(params->linear_epsilon))
            return fail(FSIG_ERROR_INVALID_PARAMS,
                        "params.linear_epsilon is %g but it is for the linear scores only (score is %s): leave it NaN",
                        double(params->linear_epsilon), name);
    }
    p->score = params->score;
    p->causal = params->causal == 1;
    p->window_left = params->window_left;
    p->window_right = params->window_right;
    p->deterministic = params->deterministic == 1;
    return FSIG_OK;
}

// cosFormer's M >= max(Nq, Nk) keeps |p_i - p_j| < M, so every cos(pi (p_i - p_j) / 2M) > 0.
int check_linear(const fsig_attention_params& params, const Problem& p, cpu::LinearOptions* o) {
    const int64_t longest = p.seq_q > p.seq_k ? p.seq_q : p.seq_k;
    if (params.linear_length != 0 && params.linear_length < longest)
        return fail(FSIG_ERROR_INVALID_PARAMS,
                    "params.linear_length (M) is %lld but must be >= max(Nq, Nk) = %lld (Nq = %lld, Nk = %lld), or 0 "
                    "for that default",
                    (long long)params.linear_length, (long long)longest, (long long)p.seq_q, (long long)p.seq_k);
    o->length = params.linear_length != 0 ? params.linear_length : longest;
    o->epsilon = std::isnan(params.linear_epsilon) ? 1e-6f : params.linear_epsilon;
    return FSIG_OK;
}

// q [B, Nq, Hq, d], k and v [B, Nk, Hk, d]: the problem's sizes and its shape-dependent defaults.
int check_qkv(const fsig_attention_params* params, const Checked& q, const Checked& k, const Checked& v, Problem* p) {
    FSIG_CHECK(check_same_dtype(q, k));
    FSIG_CHECK(check_same_dtype(q, v));
    FSIG_CHECK(check_same_device(q, k));
    FSIG_CHECK(check_same_device(q, v));
    FSIG_CHECK(check_dim(k, 0, q.view.shape[0], "batch", "in q"));
    FSIG_CHECK(check_dim(k, 3, q.view.shape[3], "head_dim", "in q"));
    for (int dim = 0; dim < 4; ++dim) {
        static const char* what[4] = {"batch", "seq_k", "heads_k", "head_dim"};
        FSIG_CHECK(check_dim(v, dim, k.view.shape[dim], what[dim], "in k"));
    }
    if (q.view.shape[2] % k.view.shape[2] != 0)
        return fail(FSIG_ERROR_INVALID_SHAPE,
                    "q.shape[2] (heads_q = %lld) must be a multiple of k.shape[2] (heads_k = %lld) for GQA/MQA",
                    (long long)q.view.shape[2], (long long)k.view.shape[2]);
    p->batch = q.view.shape[0];
    p->seq_q = q.view.shape[1];
    p->heads_q = q.view.shape[2];
    p->head_dim = q.view.shape[3];
    p->seq_k = k.view.shape[1];
    p->heads_k = k.view.shape[2];
    p->dtype = q.view.dtype;
    // A window of Nq + Nk or more bounds nothing; clamping it keeps diag ± window inside int64.
    const int64_t no_bound = p->seq_q + p->seq_k;
    if (p->window_left > no_bound) p->window_left = no_bound;
    if (p->window_right > no_bound) p->window_right = no_bound;
    p->scale = std::isnan(params->scale) ? float(1.0 / std::sqrt(double(p->head_dim))) : params->scale;
    p->sigmoid_bias = std::isnan(params->sigmoid_bias) ? float(-std::log(double(p->seq_k))) : params->sigmoid_bias;
    p->pointwise_factor = float(std::pow(double(p->seq_k), -double(params->alpha)));
    if (!std::isfinite(p->pointwise_factor))
        return fail(FSIG_ERROR_INVALID_PARAMS, "params.alpha %g makes Nk^-alpha overflow for Nk = %lld",
                    double(params->alpha), (long long)p->seq_k);
    return FSIG_OK;
}

// Bytes of the fast CUDA backward's workspace, an fp32 dQ: B * Hq * Nq * w * 4 from q's shape [B, Nq, Hq, d]
// (all >= 1), w the width of the kernels that run d (64, 128 or 256, the narrowest that holds d; their dQ
// rows are that long, the columns past d staying 0; d itself above 256, which no CUDA kernel runs); false
// when that does not fit in int64 (q may broadcast with stride 0, so its extent does not bound it).
bool workspace_bytes_needed(const int64_t shape[4], int64_t* bytes) {
    const int64_t d = shape[3], width = d <= 64 ? 64 : d <= 128 ? 128 : d <= 256 ? 256 : d;
    const int64_t dims[4] = {shape[0], shape[1], shape[2], width};
    int64_t n = 4;
    for (int i = 0; i < 4; ++i)
        if (__builtin_mul_overflow(n, dims[i], &n)) return false;
    *bytes = n;
    return true;
}

// Bytes of a CUDA dbias's partial sums (internal.h, dbias_row_groups): B * Hq * G * Nk * 4; 0 when dbias
// has the full shape [B, Hq, Nq, Nk] (the dQ kernel writes it directly); false when that overflows int64.
bool dbias_workspace_bytes(int64_t batch, int64_t heads_q, int64_t seq_q, const int64_t dbias_shape[4],
                           int64_t* bytes) {
    *bytes = 0;
    if (dbias_shape[0] == batch && dbias_shape[1] == heads_q && dbias_shape[2] == seq_q) return true;
    const int64_t factors[4] = {batch, heads_q, dbias_row_groups(seq_q, dbias_shape[2]), dbias_shape[3]};
    int64_t n = 4;
    for (int64_t f : factors)
        if (__builtin_mul_overflow(n, f, &n)) return false;
    *bytes = n;
    return true;
}

// A workspace of at least `need` bytes: big enough, aligned and disjoint from every tensor of the call;
// what the kernels get.
int claim_workspace(const fsig_attention_params& params, int64_t need, const char* size_query,
                    const Checked* const* tensors, int n, void** workspace, int64_t* workspace_bytes) {
    if (params.workspace_bytes < need)
        return fail(FSIG_ERROR_BUFFER_TOO_SMALL, "params.workspace_bytes is %lld but this call needs %lld (%s)",
                    (long long)params.workspace_bytes, (long long)need, size_query);
    if (reinterpret_cast<uintptr_t>(params.workspace) % 16 != 0)
        return fail(FSIG_ERROR_MISALIGNED, "params.workspace (%p) must be 16-byte aligned", params.workspace);
    Checked ws;
    ws.name = "params.workspace";
    ws.begin = reinterpret_cast<uintptr_t>(params.workspace);
    ws.end = ws.begin + uintptr_t(need);
    for (int i = 0; i < n; ++i) FSIG_CHECK(check_disjoint(ws, *tensors[i]));
    *workspace = params.workspace;
    *workspace_bytes = need;
    return FSIG_OK;
}

// params.workspace of a linear-attention call on CUDA (forward or backward): the segments' partial states,
// used when given.
int check_linear_workspace(const fsig_attention_params& params, const Checked& q, const Problem& p,
                           const Checked* const* tensors, int n, void** workspace, int64_t* workspace_bytes) {
    if (q.device_type != FSIG_DEVICE_CUDA || params.workspace == nullptr) return FSIG_OK;
    const int64_t need = cuda::lin::linear_workspace_bytes(p.head_dim, p.score == FSIG_SCORE_COSFORMER);
    return claim_workspace(params, need, "fsig_attention_backward_workspace_size", tensors, n, workspace,
                           workspace_bytes);
}

// params.workspace of a backward on CUDA: the fast backward's fp32 dQ when asked for (not deterministic) and
// possible (attention scores, no dbias); the partial sums of a broadcast dbias, which need it; the linear
// scores' partial states.
int check_workspace(const fsig_attention_params& params, const Checked& q, const Checked* const* tensors, int n,
                    BackwardArgs* a) {
    if (is_linear(a->p.score))
        return check_linear_workspace(params, q, a->p, tensors, n, &a->workspace, &a->workspace_bytes);
    if (q.device_type != FSIG_DEVICE_CUDA) return FSIG_OK;
    int64_t need = 0;
    if (a->has_dbias) {
        if (!dbias_workspace_bytes(a->p.batch, a->p.heads_q, a->p.seq_q, a->dbias.shape, &need))
            return fail(FSIG_ERROR_INVALID_SHAPE, "dbias's partial sums have more bytes than int64 can count");
        if (need == 0) return FSIG_OK;  // full-shaped dbias: no workspace used
        if (params.workspace == nullptr)
            return fail(FSIG_ERROR_BUFFER_TOO_SMALL,
                        "dbias of shape [%lld, %lld, %lld, %lld] broadcasts over batch, heads or queries; on CUDA its "
                        "sums need params.workspace of %lld bytes (fsig_attention_backward_workspace_size_ex)",
                        (long long)a->dbias.shape[0], (long long)a->dbias.shape[1], (long long)a->dbias.shape[2],
                        (long long)a->dbias.shape[3], (long long)need);
    } else {
        if (params.workspace == nullptr || a->p.deterministic) return FSIG_OK;
        const int64_t shape[4] = {a->p.batch, a->p.seq_q, a->p.heads_q, a->p.head_dim};
        if (!workspace_bytes_needed(shape, &need))
            return fail(FSIG_ERROR_INVALID_SHAPE, "q's shape has more elements than int64 can count in workspace bytes");
    }
    return claim_workspace(params, need,
                           a->has_dbias ? "fsig_attention_backward_workspace_size_ex" : "fsig_attention_backward_workspace_size",
                           tensors, n, &a->workspace, &a->workspace_bytes);
}

// The device every tensor shares: which backend runs, or why none can.
int check_backend(const Checked& q, const void* stream, const Problem& p) {
    if (q.device_type == FSIG_DEVICE_CUDA) {
        if (!cuda::compiled())
            return fail(FSIG_ERROR_NO_DEVICE, "q is a CUDA tensor but this build of libflashsig has no CUDA support");
        const int devices = cuda::device_count();
        if (devices <= 0)
            return fail(FSIG_ERROR_NO_DEVICE, "q is on cuda:%d but no CUDA device or driver is present (%s)",
                        q.device_index, cuda::no_device_reason());
        if (q.device_index >= devices)
            return fail(FSIG_ERROR_INVALID_DEVICE, "q is on cuda:%d but only %d CUDA device(s) exist", q.device_index,
                        devices);
        return FSIG_OK;  // what only the CUDA kernels need is checked by cuda::forward
    }
    if (stream != nullptr) return fail(FSIG_ERROR_INVALID_DEVICE, "stream must be NULL for CPU tensors");
    if (p.head_dim > cpu::kMaxHeadDim)
        return fail(FSIG_ERROR_UNSUPPORTED, "q.shape[3] (head_dim) is %lld but the CPU backend supports 1..%lld",
                    (long long)p.head_dim, (long long)cpu::kMaxHeadDim);
    return FSIG_OK;
}

// The tensor-valued extensions of a call (NULL descriptor and NULL data = absent).
struct ExtensionArgs {
    const fsig_tensor* slopes = nullptr;
    const fsig_tensor* bias = nullptr;
    const fsig_tensor* mask = nullptr;
    const fsig_tensor* layout = nullptr;
    const fsig_tensor* dbias = nullptr;
    const void* slopes_data = nullptr;
    const void* bias_data = nullptr;
    const void* mask_data = nullptr;
    const void* layout_data = nullptr;
    void* dbias_data = nullptr;
};

// The checked extension inputs (for the aliasing checks of the outputs).
struct ExtensionInputs {
    Checked t[4];
    int n = 0;
};

// [B|1, Hq|1, Nq|1, Nk]: a size-1 dim broadcasts (its stride becomes 0 in the view).
int check_broadcast_shape(Checked* c, const Problem& p) {
    const int64_t full[4] = {p.batch, p.heads_q, p.seq_q, p.seq_k};
    static const char* what[4] = {"batch", "heads_q", "seq_q", "seq_k"};
    for (int dim = 0; dim < 3; ++dim)
        if (c->view.shape[dim] != 1 && c->view.shape[dim] != full[dim])
            return fail(FSIG_ERROR_INVALID_SHAPE,
                        "%s.shape[%d] is %lld but must be 1 (broadcast) or %s = %lld: %s is [B|1, Hq|1, Nq|1, Nk]",
                        c->name, dim, (long long)c->view.shape[dim], what[dim], (long long)full[dim], c->name);
    if (c->view.shape[3] != p.seq_k)
        return fail(FSIG_ERROR_INVALID_SHAPE, "%s.shape[3] is %lld but must be seq_k = %lld (Nk of k)", c->name,
                    (long long)c->view.shape[3], (long long)p.seq_k);
    for (int dim = 0; dim < 4; ++dim)
        if (c->view.shape[dim] == 1) c->view.stride[dim] = 0;
    return FSIG_OK;
}

int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }

// Validates the extension tensors against the problem and fills its extension fields.
int check_extensions(const fsig_attention_params& prm, const ExtensionArgs& x, const Checked& q, Problem* p,
                     ExtensionInputs* in) {
    const bool has_slopes = x.slopes != nullptr || x.slopes_data != nullptr;
    const bool has_bias = x.bias != nullptr || x.bias_data != nullptr;
    const bool has_mask = x.mask != nullptr || x.mask_data != nullptr;
    const bool has_layout = x.layout != nullptr || x.layout_data != nullptr;
    const bool any = has_slopes || has_bias || has_mask || has_layout || prm.sparse_block_m != 0 || prm.strided != 0 ||
                     prm.logn_train != 0;
    if (!any) return FSIG_OK;
    if (is_linear(p->score))
        return fail(FSIG_ERROR_INVALID_PARAMS,
                    "params.score = %s takes none of the masks-and-positions extensions (alibi_slopes, bias, mask, "
                    "block_layout, params.sparse_block_m/n, params.strided, params.logn_train): they are for the "
                    "softmax and pointwise scores",
                    score_name(p->score));
    if (has_slopes) {
        Checked& c = in->t[in->n++];
        const int rank = x.slopes != nullptr && x.slopes->ndim == 2 ? 2 : 1;
        if (x.slopes != nullptr && x.slopes->ndim != 1 && x.slopes->ndim != 2)
            return fail(FSIG_ERROR_INVALID_SHAPE, "alibi_slopes.ndim is %d but must be 1 ([Hq]) or 2 ([B, Hq])",
                        x.slopes->ndim);
        FSIG_CHECK(check_tensor("alibi_slopes", x.slopes, x.slopes_data, rank, &c));
        if (c.view.dtype != FSIG_DTYPE_FP32)
            return fail(FSIG_ERROR_INVALID_DTYPE, "alibi_slopes is %s but must be fp32", dtype_name(c.view.dtype));
        FSIG_CHECK(check_same_device(q, c));
        if (rank == 2 && c.view.shape[0] != p->batch)
            return fail(FSIG_ERROR_INVALID_SHAPE, "alibi_slopes.shape[0] is %lld but must be batch = %lld ([B, Hq])",
                        (long long)c.view.shape[0], (long long)p->batch);
        if (c.view.shape[rank - 1] != p->heads_q)
            return fail(FSIG_ERROR_INVALID_SHAPE, "alibi_slopes.shape[%d] is %lld but must be heads_q = %lld", rank - 1,
                        (long long)c.view.shape[rank - 1], (long long)p->heads_q);
        p->alibi = static_cast<const float*>(c.view.data);
        p->alibi_stride_b = rank == 2 ? c.view.stride[0] : 0;
        p->alibi_stride_h = c.view.stride[rank - 1];
    }
    if (has_bias) {
        Checked& c = in->t[in->n++];
        FSIG_CHECK(check_tensor("bias", x.bias, x.bias_data, 4, &c));
        FSIG_CHECK(check_same_device(q, c));
        FSIG_CHECK(check_broadcast_shape(&c, *p));
        p->has_bias = true;
        p->bias = c.view;
    }
    if (has_mask) {
        Checked& c = in->t[in->n++];
        FSIG_CHECK(check_tensor("mask", x.mask, x.mask_data, 4, &c, true));
        FSIG_CHECK(check_same_device(q, c));
        FSIG_CHECK(check_broadcast_shape(&c, *p));
        p->has_mask = true;
        p->mask = c.view;
    }
    if (has_layout && prm.sparse_block_m == 0)
        return fail(FSIG_ERROR_INVALID_PARAMS,
                    "block_layout is given but params.sparse_block_m/n are 0: set the block sizes or pass no layout");
    if (prm.sparse_block_m != 0) {
        if (!has_layout)
            return fail(FSIG_ERROR_NULL_ARGUMENT,
                        "block_layout is NULL but params.sparse_block_m/n are %lld/%lld: pass the layout [1 or Hq, "
                        "ceil(Nq/bm), ceil(Nk/bn)]",
                        (long long)prm.sparse_block_m, (long long)prm.sparse_block_n);
        Checked& c = in->t[in->n++];
        FSIG_CHECK(check_tensor("block_layout", x.layout, x.layout_data, 3, &c, true));
        FSIG_CHECK(check_same_device(q, c));
        const int64_t rows = ceil_div(p->seq_q, prm.sparse_block_m), cols = ceil_div(p->seq_k, prm.sparse_block_n);
        if (c.view.shape[0] != 1 && c.view.shape[0] != p->heads_q)
            return fail(FSIG_ERROR_INVALID_SHAPE, "block_layout.shape[0] is %lld but must be 1 (every head) or heads_q = %lld",
                        (long long)c.view.shape[0], (long long)p->heads_q);
        if (c.view.shape[1] != rows)
            return fail(FSIG_ERROR_INVALID_SHAPE,
                        "block_layout.shape[1] is %lld but must be ceil(Nq / sparse_block_m) = ceil(%lld / %lld) = %lld",
                        (long long)c.view.shape[1], (long long)p->seq_q, (long long)prm.sparse_block_m, (long long)rows);
        if (c.view.shape[2] != cols)
            return fail(FSIG_ERROR_INVALID_SHAPE,
                        "block_layout.shape[2] is %lld but must be ceil(Nk / sparse_block_n) = ceil(%lld / %lld) = %lld",
                        (long long)c.view.shape[2], (long long)p->seq_k, (long long)prm.sparse_block_n, (long long)cols);
        if (c.view.shape[0] == 1) c.view.stride[0] = 0;
        p->block_m = prm.sparse_block_m;
        p->block_n = prm.sparse_block_n;
        p->block_layout = c.view;
    }
    p->strided = prm.strided;
    p->logn_train = prm.logn_train;
    return FSIG_OK;
}

int check_lse(const Checked& lse, const Problem& p, const Checked& q) {
    if (lse.view.dtype != FSIG_DTYPE_FP32)
        return fail(FSIG_ERROR_INVALID_DTYPE, "lse is %s but must be fp32", dtype_name(lse.view.dtype));
    FSIG_CHECK(check_same_device(q, lse));
    FSIG_CHECK(check_dim(lse, 0, p.batch, "batch", "in q"));
    FSIG_CHECK(check_dim(lse, 1, p.heads_q, "heads_q", "in q"));
    FSIG_CHECK(check_dim(lse, 2, p.seq_q, "seq_q", "in q"));
    return FSIG_OK;
}

int check_like_q(const Checked& t, const Checked& q) {
    FSIG_CHECK(check_same_dtype(q, t));
    FSIG_CHECK(check_same_device(q, t));
    static const char* what[4] = {"batch", "seq_q", "heads_q", "head_dim"};
    for (int dim = 0; dim < 4; ++dim) FSIG_CHECK(check_dim(t, dim, q.view.shape[dim], what[dim], "in q"));
    return FSIG_OK;
}

int check_like_k(const Checked& t, const Checked& k) {
    FSIG_CHECK(check_same_dtype(k, t));
    FSIG_CHECK(check_same_device(k, t));
    static const char* what[4] = {"batch", "seq_k", "heads_k", "head_dim"};
    for (int dim = 0; dim < 4; ++dim) FSIG_CHECK(check_dim(t, dim, k.view.shape[dim], what[dim], "in k"));
    return FSIG_OK;
}

int forward_impl(const fsig_attention_params* params, const fsig_tensor* qd, const fsig_tensor* kd,
                 const fsig_tensor* vd, const fsig_tensor* outd, const fsig_tensor* lsed, void* stream,
                 const void* q_data, const void* k_data, const void* v_data, void* out_data, void* lse_data,
                 const ExtensionArgs& ext = ExtensionArgs()) {
    clear_error();
    DefaultFloatMode float_mode;
    ForwardArgs a;
    fsig_attention_params resolved;
    FSIG_CHECK(check_params(params, &resolved, &a.p));
    params = &resolved;
    Checked q, k, v, out, lse;
    FSIG_CHECK(check_tensor("q", qd, q_data, 4, &q));
    FSIG_CHECK(check_tensor("k", kd, k_data, 4, &k));
    FSIG_CHECK(check_tensor("v", vd, v_data, 4, &v));
    FSIG_CHECK(check_tensor("out", outd, out_data, 4, &out));
    FSIG_CHECK(check_qkv(params, q, k, v, &a.p));
    cpu::LinearOptions linear;
    if (is_linear(a.p.score)) FSIG_CHECK(check_linear(*params, a.p, &linear));
    FSIG_CHECK(check_like_q(out, q));
    FSIG_CHECK(check_no_self_overlap(out, 4));
    for (const Checked* in : {&q, &k, &v}) FSIG_CHECK(check_disjoint(out, *in));
    if (lsed != nullptr || lse_data != nullptr) {
        if (a.p.score != FSIG_SCORE_SOFTMAX)
            return fail(FSIG_ERROR_INVALID_PARAMS, "lse is given but params.score is not softmax (only softmax has an LSE)");
        FSIG_CHECK(check_tensor("lse", lsed, lse_data, 3, &lse));
        FSIG_CHECK(check_lse(lse, a.p, q));
        FSIG_CHECK(check_no_self_overlap(lse, 3));
        for (const Checked* other : {&q, &k, &v, &out}) FSIG_CHECK(check_disjoint(lse, *other));
        a.has_lse = true;
        a.lse = lse.view;
    }
    ExtensionInputs ext_in;
    FSIG_CHECK(check_extensions(*params, ext, q, &a.p, &ext_in));
    for (int e = 0; e < ext_in.n; ++e) {
        FSIG_CHECK(check_disjoint(out, ext_in.t[e]));
        if (a.has_lse) FSIG_CHECK(check_disjoint(lse, ext_in.t[e]));
    }
    FSIG_CHECK(check_backend(q, stream, a.p));
    if (is_linear(a.p.score)) {  // the other scores' forward uses no workspace
        const Checked* all[] = {&q, &k, &v, &out};
        FSIG_CHECK(check_linear_workspace(*params, q, a.p, all, 4, &a.workspace, &a.workspace_bytes));
    }
    a.q = q.view;
    a.k = k.view;
    a.v = v.view;
    a.out = out.view;
    if (q.device_type == FSIG_DEVICE_CUDA) {
        char message[sizeof t_last_error];
        const int status = is_linear(a.p.score) ? cuda::linear_forward(a, linear.length, linear.epsilon, q.device_index,
                                                                       stream, message, sizeof message)
                                                : cuda::forward(a, q.device_index, stream, message, sizeof message);
        return status == FSIG_OK ? FSIG_OK : fail(status, "%s", message);
    }
    const int status = is_linear(a.p.score) ? cpu::linear_forward(a, linear) : cpu::forward(a);
    if (status == FSIG_ERROR_OUT_OF_MEMORY) return fail(status, "the CPU backend could not allocate its scratch memory");
    return status;
}

int backward_impl(const fsig_attention_params* params, const fsig_tensor* qd, const fsig_tensor* kd,
                  const fsig_tensor* vd, const fsig_tensor* outd, const fsig_tensor* doutd, const fsig_tensor* lsed,
                  const fsig_tensor* dqd, const fsig_tensor* dkd, const fsig_tensor* dvd, void* stream,
                  const void* q_data, const void* k_data, const void* v_data, const void* out_data,
                  const void* dout_data, const void* lse_data, void* dq_data, void* dk_data, void* dv_data,
                  const ExtensionArgs& ext = ExtensionArgs()) {
    clear_error();
    DefaultFloatMode float_mode;
    BackwardArgs a;
    fsig_attention_params resolved;
    FSIG_CHECK(check_params(params, &resolved, &a.p));
    params = &resolved;
    Checked q, k, v, out, dout, lse, dq, dk, dv;
    FSIG_CHECK(check_tensor("q", qd, q_data, 4, &q));
    FSIG_CHECK(check_tensor("k", kd, k_data, 4, &k));
    FSIG_CHECK(check_tensor("v", vd, v_data, 4, &v));
    FSIG_CHECK(check_tensor("dout", doutd, dout_data, 4, &dout));
    FSIG_CHECK(check_tensor("dq", dqd, dq_data, 4, &dq));
    FSIG_CHECK(check_tensor("dk", dkd, dk_data, 4, &dk));
    FSIG_CHECK(check_tensor("dv", dvd, dv_data, 4, &dv));
    FSIG_CHECK(check_qkv(params, q, k, v, &a.p));
    cpu::LinearOptions linear;
    if (is_linear(a.p.score)) FSIG_CHECK(check_linear(*params, a.p, &linear));
    const bool softmax = a.p.score == FSIG_SCORE_SOFTMAX;
    if (softmax && (outd == nullptr || out_data == nullptr))
        return fail(FSIG_ERROR_NULL_ARGUMENT, "out is NULL but softmax backward needs the forward output");
    if (softmax && (lsed == nullptr || lse_data == nullptr))
        return fail(FSIG_ERROR_NULL_ARGUMENT, "lse is NULL but softmax backward needs the forward LSE");
    FSIG_CHECK(check_like_q(dout, q));
    FSIG_CHECK(check_like_q(dq, q));
    FSIG_CHECK(check_like_k(dk, k));
    FSIG_CHECK(check_like_k(dv, k));
    if (outd != nullptr || out_data != nullptr) {
        FSIG_CHECK(check_tensor("out", outd, out_data, 4, &out));
        FSIG_CHECK(check_like_q(out, q));
        a.has_out = true;
    }
    if (lsed != nullptr || lse_data != nullptr) {
        if (!softmax)
            return fail(FSIG_ERROR_INVALID_PARAMS, "lse is given but params.score is not softmax (only softmax has an LSE)");
        FSIG_CHECK(check_tensor("lse", lsed, lse_data, 3, &lse));
        FSIG_CHECK(check_lse(lse, a.p, q));
        a.has_lse = true;
    }
    ExtensionInputs ext_in;
    FSIG_CHECK(check_extensions(*params, ext, q, &a.p, &ext_in));
    Checked dbias;
    if (ext.dbias != nullptr || ext.dbias_data != nullptr) {
        if (!a.p.has_bias)
            return fail(FSIG_ERROR_INVALID_PARAMS, "dbias is given but bias is NULL: dbias is the gradient of the bias");
        FSIG_CHECK(check_tensor("dbias", ext.dbias, ext.dbias_data, 4, &dbias));
        FSIG_CHECK(check_same_device(q, dbias));
        const Checked* b = nullptr;
        for (int e = 0; e < ext_in.n; ++e)
            if (std::strcmp(ext_in.t[e].name, "bias") == 0) b = &ext_in.t[e];
        for (int dim = 0; dim < 4; ++dim)
            FSIG_CHECK(check_dim(dbias, dim, b->view.shape[dim], "the bias's shape", "in bias"));
        if (dbias.view.dtype != b->view.dtype)
            return fail(FSIG_ERROR_INVALID_DTYPE, "dbias is %s but bias is %s: dbias has the bias's dtype",
                        dtype_name(dbias.view.dtype), dtype_name(b->view.dtype));
        FSIG_CHECK(check_no_self_overlap(dbias, 4));
        a.has_dbias = true;
        a.dbias = dbias.view;
    }
    const Checked* inputs[11] = {&q, &k, &v, &dout};
    int n_inputs = 4;
    if (a.has_out) inputs[n_inputs++] = &out;
    if (a.has_lse) inputs[n_inputs++] = &lse;
    for (int e = 0; e < ext_in.n; ++e) inputs[n_inputs++] = &ext_in.t[e];
    for (const Checked* g : {&dq, &dk, &dv}) {
        FSIG_CHECK(check_no_self_overlap(*g, 4));
        for (int i = 0; i < n_inputs; ++i) FSIG_CHECK(check_disjoint(*g, *inputs[i]));
    }
    FSIG_CHECK(check_disjoint(dq, dk));
    FSIG_CHECK(check_disjoint(dq, dv));
    FSIG_CHECK(check_disjoint(dk, dv));
    if (a.has_dbias) {
        for (int i = 0; i < n_inputs; ++i) FSIG_CHECK(check_disjoint(dbias, *inputs[i]));
        for (const Checked* g : {&dq, &dk, &dv}) FSIG_CHECK(check_disjoint(dbias, *g));
    }
    FSIG_CHECK(check_backend(q, stream, a.p));
    {
        const Checked* all[std::size(inputs) + 4];
        int n = 0;
        for (int i = 0; i < n_inputs; ++i) all[n++] = inputs[i];
        for (const Checked* g : {&dq, &dk, &dv}) all[n++] = g;
        if (a.has_dbias) all[n++] = &dbias;
        FSIG_CHECK(check_workspace(*params, q, all, n, &a));
    }
    a.q = q.view;
    a.k = k.view;
    a.v = v.view;
    a.dout = dout.view;
    a.dq = dq.view;
    a.dk = dk.view;
    a.dv = dv.view;
    if (a.has_out) a.out = out.view;
    if (a.has_lse) a.lse = lse.view;
    if (q.device_type == FSIG_DEVICE_CUDA) {
        char message[sizeof t_last_error];
        const int status = is_linear(a.p.score) ? cuda::linear_backward(a, linear.length, linear.epsilon,
                                                                        q.device_index, stream, message, sizeof message)
                                                : cuda::backward(a, q.device_index, stream, message, sizeof message);
        return status == FSIG_OK ? FSIG_OK : fail(status, "%s", message);
    }
    const int status = is_linear(a.p.score) ? cpu::linear_backward(a, linear) : cpu::backward(a);
    if (status == FSIG_ERROR_OUT_OF_MEMORY) return fail(status, "the CPU backend could not allocate its scratch memory");
    return status;
}

}  // namespace
}  // namespace fsig

using fsig::fail;

extern "C" {

FSIG_API fsig_attention_params fsig_attention_params_default(void) {
    fsig_attention_params p;
    std::memset(&p, 0, sizeof p);
    p.struct_size = sizeof(fsig_attention_params);
    p.score = FSIG_SCORE_SOFTMAX;
    p.scale = NAN;
    p.sigmoid_bias = NAN;
    p.alpha = 1.f;
    p.causal = 0;
    p.window_left = -1;
    p.window_right = -1;
    p.deterministic = 0;
    p.linear_length = 0;
    p.linear_epsilon = NAN;
    return p;
}

FSIG_API int fsig_attention_backward_workspace_size(const fsig_attention_params* params, const fsig_tensor* q,
                                                    int64_t* bytes) {
    fsig::clear_error();
    if (bytes == nullptr) return fail(FSIG_ERROR_NULL_ARGUMENT, "bytes is NULL");
    fsig_attention_params resolved;
    fsig::Problem p;
    FSIG_CHECK(fsig::check_params(params, &resolved, &p));
    if (q == nullptr) return fail(FSIG_ERROR_NULL_ARGUMENT, "q is NULL");
    if (q->ndim != 4) return fail(FSIG_ERROR_INVALID_SHAPE, "q.ndim is %d but must be 4 ([B, Nq, Hq, d])", q->ndim);
    if (q->device_type != FSIG_DEVICE_CPU && q->device_type != FSIG_DEVICE_CUDA)
        return fail(FSIG_ERROR_INVALID_DEVICE, "q.device_type %d is not a fsig_device_type", q->device_type);
    for (int i = 0; i < 4; ++i)
        if (q->shape[i] < 1)
            return fail(FSIG_ERROR_INVALID_SHAPE, "q.shape[%d] is %lld but must be >= 1", i, (long long)q->shape[i]);
    *bytes = 0;
    if (q->device_type != FSIG_DEVICE_CUDA) return FSIG_OK;
    if (fsig::is_linear(p.score)) {
        *bytes = fsig::cuda::lin::linear_workspace_bytes(q->shape[3], p.score == FSIG_SCORE_COSFORMER);
        return FSIG_OK;
    }
    int64_t need = 0;
    if (!fsig::workspace_bytes_needed(q->shape, &need))
        return fail(FSIG_ERROR_INVALID_SHAPE, "q's shape has more elements than int64 can count in workspace bytes");
    *bytes = p.deterministic ? 0 : need;
    return FSIG_OK;
}

FSIG_API int fsig_attention_backward_workspace_size_ex(const fsig_attention_params* params, const fsig_tensor* q,
                                                       const fsig_tensor* dbias, int64_t* bytes) {
    FSIG_CHECK(fsig_attention_backward_workspace_size(params, q, bytes));
    if (dbias == nullptr) return FSIG_OK;
    const int64_t without_dbias = *bytes;
    *bytes = 0;
    if (dbias->ndim != 4)
        return fail(FSIG_ERROR_INVALID_SHAPE, "dbias.ndim is %d but must be 4 ([B|1, Hq|1, Nq|1, Nk])", dbias->ndim);
    const int64_t full[3] = {q->shape[0], q->shape[2], q->shape[1]};  // B, Hq, Nq
    static const char* const kDims[3] = {"B", "Hq", "Nq"};
    for (int i = 0; i < 3; ++i)
        if (dbias->shape[i] != 1 && dbias->shape[i] != full[i])
            return fail(FSIG_ERROR_INVALID_SHAPE, "dbias.shape[%d] is %lld but must be 1 or %s = %lld (from q)", i,
                        (long long)dbias->shape[i], kDims[i], (long long)full[i]);
    if (dbias->shape[3] < 1)
        return fail(FSIG_ERROR_INVALID_SHAPE, "dbias.shape[3] (Nk) is %lld but must be >= 1", (long long)dbias->shape[3]);
    if (q->device_type != FSIG_DEVICE_CUDA) return FSIG_OK;
    if (fsig::is_linear(params->score)) {  // (they take no dbias: the call refuses one; the size is theirs)
        *bytes = without_dbias;
        return FSIG_OK;
    }
    if (!fsig::dbias_workspace_bytes(full[0], full[1], full[2], dbias->shape, bytes))
        return fail(FSIG_ERROR_INVALID_SHAPE, "dbias's partial sums have more bytes than int64 can count");
    return FSIG_OK;
}

FSIG_API int fsig_attention_params_init(fsig_attention_params* params) {
    fsig::clear_error();
    if (params == nullptr) return fail(FSIG_ERROR_NULL_ARGUMENT, "params is NULL");
    *params = fsig_attention_params_default();
    return FSIG_OK;
}

FSIG_API int fsig_attention_forward(const fsig_attention_params* params, const fsig_tensor* q, const fsig_tensor* k,
                                    const fsig_tensor* v, const fsig_tensor* out, const fsig_tensor* lse,
                                    void* stream) {
    return fsig::forward_impl(params, q, k, v, out, lse, stream, q ? q->data : nullptr, k ? k->data : nullptr,
                              v ? v->data : nullptr, out ? out->data : nullptr, lse ? lse->data : nullptr);
}

FSIG_API int fsig_attention_forward_buffers(const fsig_attention_params* params, const fsig_tensor* q,
                                            const fsig_tensor* k, const fsig_tensor* v, const fsig_tensor* out,
                                            const fsig_tensor* lse, void* stream, const void* q_data,
                                            const void* k_data, const void* v_data, void* out_data,
                                            void* lse_data) {
    return fsig::forward_impl(params, q, k, v, out, lse, stream, q_data, k_data, v_data, out_data, lse_data);
}

FSIG_API int fsig_attention_backward(const fsig_attention_params* params, const fsig_tensor* q, const fsig_tensor* k,
                                     const fsig_tensor* v, const fsig_tensor* out, const fsig_tensor* dout,
                                     const fsig_tensor* lse, const fsig_tensor* dq, const fsig_tensor* dk,
                                     const fsig_tensor* dv, void* stream) {
    auto data = [](const fsig_tensor* t) -> void* { return t ? t->data : nullptr; };
    return fsig::backward_impl(params, q, k, v, out, dout, lse, dq, dk, dv, stream, data(q), data(k), data(v),
                               data(out), data(dout), data(lse), data(dq), data(dk), data(dv));
}

FSIG_API int fsig_attention_backward_buffers(const fsig_attention_params* params, const fsig_tensor* q,
                                             const fsig_tensor* k, const fsig_tensor* v, const fsig_tensor* out,
                                             const fsig_tensor* dout, const fsig_tensor* lse, const fsig_tensor* dq,
                                             const fsig_tensor* dk, const fsig_tensor* dv, void* stream,
                                             const void* q_data, const void* k_data, const void* v_data,
                                             const void* out_data, const void* dout_data, const void* lse_data,
                                             void* dq_data, void* dk_data, void* dv_data) {
    return fsig::backward_impl(params, q, k, v, out, dout, lse, dq, dk, dv, stream, q_data, k_data, v_data, out_data,
                               dout_data, lse_data, dq_data, dk_data, dv_data);
}

FSIG_API int fsig_attention_forward_ex(const fsig_attention_params* params, const fsig_tensor* q, const fsig_tensor* k,
                                       const fsig_tensor* v, const fsig_tensor* out, const fsig_tensor* lse,
                                       const fsig_tensor* alibi_slopes, const fsig_tensor* bias, const fsig_tensor* mask,
                                       const fsig_tensor* block_layout, void* stream) {
    auto data = [](const fsig_tensor* t) -> void* { return t ? t->data : nullptr; };
    fsig::ExtensionArgs x;
    x.slopes = alibi_slopes, x.bias = bias, x.mask = mask, x.layout = block_layout;
    x.slopes_data = data(alibi_slopes), x.bias_data = data(bias), x.mask_data = data(mask), x.layout_data = data(block_layout);
    return fsig::forward_impl(params, q, k, v, out, lse, stream, data(q), data(k), data(v), data(out), data(lse), x);
}

FSIG_API int fsig_attention_forward_ex_buffers(const fsig_attention_params* params, const fsig_tensor* q,
                                               const fsig_tensor* k, const fsig_tensor* v, const fsig_tensor* out,
                                               const fsig_tensor* lse, const fsig_tensor* alibi_slopes,
                                               const fsig_tensor* bias, const fsig_tensor* mask,
                                               const fsig_tensor* block_layout, void* stream, const void* q_data,
                                               const void* k_data, const void* v_data, void* out_data, void* lse_data,
                                               const void* alibi_slopes_data, const void* bias_data,
                                               const void* mask_data, const void* block_layout_data) {
    fsig::ExtensionArgs x;
    x.slopes = alibi_slopes, x.bias = bias, x.mask = mask, x.layout = block_layout;
    x.slopes_data = alibi_slopes_data, x.bias_data = bias_data, x.mask_data = mask_data, x.layout_data = block_layout_data;
    return fsig::forward_impl(params, q, k, v, out, lse, stream, q_data, k_data, v_data, out_data, lse_data, x);
}

FSIG_API int fsig_attention_backward_ex(const fsig_attention_params* params, const fsig_tensor* q, const fsig_tensor* k,
                                        const fsig_tensor* v, const fsig_tensor* out, const fsig_tensor* dout,
                                        const fsig_tensor* lse, const fsig_tensor* dq, const fsig_tensor* dk,
                                        const fsig_tensor* dv, const fsig_tensor* alibi_slopes, const fsig_tensor* bias,
                                        const fsig_tensor* mask, const fsig_tensor* block_layout,
                                        const fsig_tensor* dbias, void* stream) {
    auto data = [](const fsig_tensor* t) -> void* { return t ? t->data : nullptr; };
    fsig::ExtensionArgs x;
    x.slopes = alibi_slopes, x.bias = bias, x.mask = mask, x.layout = block_layout, x.dbias = dbias;
    x.slopes_data = data(alibi_slopes), x.bias_data = data(bias), x.mask_data = data(mask), x.layout_data = data(block_layout);
    x.dbias_data = data(dbias);
    return fsig::backward_impl(params, q, k, v, out, dout, lse, dq, dk, dv, stream, data(q), data(k), data(v),
                               data(out), data(dout), data(lse), data(dq), data(dk), data(dv), x);
}

FSIG_API int fsig_attention_backward_ex_buffers(
    const fsig_attention_params* params, const fsig_tensor* q, const fsig_tensor* k, const fsig_tensor* v,
    const fsig_tensor* out, const fsig_tensor* dout, const fsig_tensor* lse, const fsig_tensor* dq,
    const fsig_tensor* dk, const fsig_tensor* dv, const fsig_tensor* alibi_slopes, const fsig_tensor* bias,
    const fsig_tensor* mask, const fsig_tensor* block_layout, const fsig_tensor* dbias, void* stream,
    const void* q_data, const void* k_data, const void* v_data, const void* out_data, const void* dout_data,
    const void* lse_data, void* dq_data, void* dk_data, void* dv_data, const void* alibi_slopes_data,
    const void* bias_data, const void* mask_data, const void* block_layout_data, void* dbias_data) {
    fsig::ExtensionArgs x;
    x.slopes = alibi_slopes, x.bias = bias, x.mask = mask, x.layout = block_layout, x.dbias = dbias;
    x.slopes_data = alibi_slopes_data, x.bias_data = bias_data, x.mask_data = mask_data, x.layout_data = block_layout_data;
    x.dbias_data = dbias_data;
    return fsig::backward_impl(params, q, k, v, out, dout, lse, dq, dk, dv, stream, q_data, k_data, v_data, out_data,
                               dout_data, lse_data, dq_data, dk_data, dv_data, x);
}

FSIG_API int fsig_alibi_slopes(int64_t heads, float* slopes) {
    fsig::clear_error();
    if (slopes == nullptr) return fail(FSIG_ERROR_NULL_ARGUMENT, "slopes is NULL");
    if (heads < 1 || heads > (int64_t(1) << 40))
        return fail(FSIG_ERROR_INVALID_PARAMS, "heads is %lld but must be >= 1", (long long)heads);
    int64_t n = 1;  // the largest power of two <= heads
    while (n * 2 <= heads) n *= 2;
    fsig::DefaultFloatMode float_mode;  // the slopes must not depend on the caller's rounding
    for (int64_t h = 0; h < heads; ++h) {
        // the first n heads: 2^(-8 (h+1) / n); the rest: the odd steps of the 2n schedule
        const double e = h < n ? -8.0 * double(h + 1) / double(n) : -8.0 * double(2 * (h - n) + 1) / double(2 * n);
        slopes[h] = float(std::exp2(e));
    }
    return FSIG_OK;
}

FSIG_API int fsig_version(void) {
    return FSIG_VERSION_MAJOR * 10000 + FSIG_VERSION_MINOR * 100 + FSIG_VERSION_PATCH;
}

#define FSIG_STR2(x) #x
#define FSIG_STR(x) FSIG_STR2(x)
FSIG_API const char* fsig_version_string(void) {
    return FSIG_STR(FSIG_VERSION_MAJOR) "." FSIG_STR(FSIG_VERSION_MINOR) "." FSIG_STR(FSIG_VERSION_PATCH);
}

FSIG_API int fsig_get_capabilities(fsig_capabilities* caps) {
    fsig::clear_error();
    if (caps == nullptr) return fail(FSIG_ERROR_NULL_ARGUMENT, "caps is NULL");
    // a caller built before cuda_backward_max_head_dim passes the size of the struct up to it
    constexpr size_t kOldSize = offsetof(fsig_capabilities, cuda_backward_max_head_dim);
    if (caps->struct_size < kOldSize)
        return fail(FSIG_ERROR_INVALID_PARAMS,
                    "caps->struct_size is %u but must be at least %zu (set it to sizeof(fsig_capabilities))",
                    caps->struct_size, kOldSize);
    const uint32_t size = caps->struct_size;
    std::memset(caps, 0, size);  // fields of a newer header that this library does not know read as 0
    caps->struct_size = size;
    caps->cpu_isa = fsig::cpu::active_isa();
    caps->cpu_threads = fsig::cpu::num_threads();
    caps->cpu_dtypes = (1u << FSIG_DTYPE_FP32) | (1u << FSIG_DTYPE_FP16) | (1u << FSIG_DTYPE_BF16);
    caps->cpu_min_head_dim = 1;
    caps->cpu_max_head_dim = int32_t(fsig::cpu::kMaxHeadDim);
    caps->cuda_compiled = fsig::cuda::compiled() ? 1 : 0;
    caps->cuda_device_count = fsig::cuda::compiled() ? fsig::cuda::device_count() : 0;
    caps->cuda_dtypes = fsig::cuda::forward_dtypes();  // 0 in a build without CUDA
    caps->cuda_head_dim_count = fsig::cuda::forward_head_dims(caps->cuda_head_dims, FSIG_MAX_HEAD_DIM_LIST);
    if (size >= offsetof(fsig_capabilities, cuda_backward_max_head_dim) + sizeof(int32_t))
        caps->cuda_backward_max_head_dim = fsig::cuda::compiled() ? fsig::cuda::kBackwardMaxHeadDim : 0;
    return FSIG_OK;
}

// ---- CUDA memory and streams ----

namespace {
// The device of an fsig_cuda_* call: compiled in, present, in range.
int check_cuda_device(int32_t device_index) {
    if (!fsig::cuda::compiled())
        return fail(FSIG_ERROR_NO_DEVICE, "this build of libflashsig has no CUDA support");
    const int devices = fsig::cuda::device_count();
    if (device_index < 0)
        return fail(FSIG_ERROR_INVALID_DEVICE, "device_index is %d but must be a CUDA ordinal >= 0", device_index);
    if (devices <= 0)
        return fail(FSIG_ERROR_NO_DEVICE, "cuda:%d was asked for but no CUDA device or driver is present (%s)",
                    device_index, fsig::cuda::no_device_reason());
    if (device_index >= devices)
        return fail(FSIG_ERROR_INVALID_DEVICE, "device_index is %d but only %d CUDA device(s) exist", device_index,
                    devices);
    return FSIG_OK;
}

// A backend status with its message recorded for fsig_last_error().
int cuda_result(int status, const char* msg) { return status == FSIG_OK ? FSIG_OK : fail(status, "%s", msg); }
}  // namespace

FSIG_API int fsig_cuda_malloc(int32_t device_index, int64_t bytes, void** ptr) {
    fsig::clear_error();
    if (ptr == nullptr) return fail(FSIG_ERROR_NULL_ARGUMENT, "ptr is NULL");
    *ptr = nullptr;
    if (bytes < 1) return fail(FSIG_ERROR_INVALID_PARAMS, "bytes is %lld but must be >= 1", (long long)bytes);
    FSIG_CHECK(check_cuda_device(device_index));
    char msg[256];
    return cuda_result(fsig::cuda::malloc_device(device_index, bytes, ptr, msg, sizeof msg), msg);
}

FSIG_API int fsig_cuda_free(int32_t device_index, void* ptr) {
    fsig::clear_error();
    if (ptr == nullptr) return FSIG_OK;
    FSIG_CHECK(check_cuda_device(device_index));
    char msg[256];
    return cuda_result(fsig::cuda::free_device(device_index, ptr, msg, sizeof msg), msg);
}

FSIG_API int fsig_cuda_memcpy(int32_t device_index, void* dst, const void* src, int64_t bytes, void* stream) {
    fsig::clear_error();
    if (dst == nullptr) return fail(FSIG_ERROR_NULL_ARGUMENT, "dst is NULL");
    if (src == nullptr) return fail(FSIG_ERROR_NULL_ARGUMENT, "src is NULL");
    if (bytes < 1) return fail(FSIG_ERROR_INVALID_PARAMS, "bytes is %lld but must be >= 1", (long long)bytes);
    const uintptr_t d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
    if (d > UINTPTR_MAX - uint64_t(bytes) || s > UINTPTR_MAX - uint64_t(bytes))
        return fail(FSIG_ERROR_INVALID_PARAMS, "bytes is %lld: the range wraps around the address space",
                    (long long)bytes);
    if (d < s + uint64_t(bytes) && s < d + uint64_t(bytes))
        return fail(FSIG_ERROR_ALIASING, "dst and src overlap (%lld bytes)", (long long)bytes);
    FSIG_CHECK(check_cuda_device(device_index));
    char msg[256];
    return cuda_result(fsig::cuda::memcpy_async(device_index, dst, src, bytes, stream, msg, sizeof msg), msg);
}

FSIG_API int fsig_cuda_stream_create(int32_t device_index, void** stream) {
    fsig::clear_error();
    if (stream == nullptr) return fail(FSIG_ERROR_NULL_ARGUMENT, "stream is NULL");
    *stream = nullptr;
    FSIG_CHECK(check_cuda_device(device_index));
    char msg[256];
    return cuda_result(fsig::cuda::stream_create(device_index, stream, msg, sizeof msg), msg);
}

FSIG_API int fsig_cuda_stream_destroy(int32_t device_index, void* stream) {
    fsig::clear_error();
    if (stream == nullptr) return fail(FSIG_ERROR_NULL_ARGUMENT, "stream is NULL (the default stream is not destroyed)");
    FSIG_CHECK(check_cuda_device(device_index));
    char msg[256];
    return cuda_result(fsig::cuda::stream_destroy(device_index, stream, msg, sizeof msg), msg);
}

FSIG_API int fsig_cuda_synchronize(int32_t device_index, void* stream) {
    fsig::clear_error();
    FSIG_CHECK(check_cuda_device(device_index));
    char msg[256];
    return cuda_result(fsig::cuda::synchronize(device_index, stream, msg, sizeof msg), msg);
}

FSIG_API int fsig_cuda_get_device_info(int32_t device_index, fsig_cuda_device_info* info) {
    fsig::clear_error();
    if (info == nullptr) return fail(FSIG_ERROR_NULL_ARGUMENT, "info is NULL");
    if (info->struct_size < sizeof(fsig_cuda_device_info))
        return fail(FSIG_ERROR_INVALID_PARAMS,
                    "info->struct_size is %u but must be at least %zu (set it to sizeof(fsig_cuda_device_info))",
                    info->struct_size, sizeof(fsig_cuda_device_info));
    FSIG_CHECK(check_cuda_device(device_index));
    fsig_cuda_device_info got{};
    char msg[256];
    if (int st = fsig::cuda::device_info(device_index, got, msg, sizeof msg); st != FSIG_OK) return cuda_result(st, msg);
    const uint32_t size = info->struct_size;
    std::memset(info, 0, size);  // fields of a newer header that this library does not know read as 0
    std::memcpy(info, &got, sizeof got);
    info->struct_size = size;
    return FSIG_OK;
}

FSIG_API int fsig_set_num_threads(int n) {
    fsig::clear_error();
    if (n < 0 || n > 4096)
        return fail(FSIG_ERROR_INVALID_PARAMS, "n is %d but must be in 1..4096, or 0 for the default", n);
    fsig::cpu::set_num_threads(n);
    return FSIG_OK;
}

FSIG_API int fsig_get_num_threads(void) { return fsig::cpu::num_threads(); }

FSIG_API int fsig_release_cached_memory(void) {
    fsig::clear_error();
    fsig::cpu::release_idle_blocks();
    return FSIG_OK;
}

FSIG_API const char* fsig_status_string(int status) {
    switch (status) {
        case FSIG_OK: return "ok";
        case FSIG_ERROR_NULL_ARGUMENT: return "a required argument is NULL";
        case FSIG_ERROR_INVALID_SHAPE: return "invalid shape";
        case FSIG_ERROR_INVALID_DTYPE: return "invalid dtype";
        case FSIG_ERROR_INVALID_STRIDE: return "invalid strides";
        case FSIG_ERROR_INVALID_DEVICE: return "invalid device";
        case FSIG_ERROR_BUFFER_TOO_SMALL: return "buffer too small for its shape and strides";
        case FSIG_ERROR_MISALIGNED: return "misaligned data pointer";
        case FSIG_ERROR_ALIASING: return "an output overlaps another tensor";
        case FSIG_ERROR_INVALID_PARAMS: return "invalid parameter value";
        case FSIG_ERROR_UNSUPPORTED: return "not supported by this backend";
        case FSIG_ERROR_NO_DEVICE: return "no CUDA device";
        case FSIG_ERROR_OUT_OF_MEMORY: return "out of memory";
        case FSIG_ERROR_CUDA: return "CUDA error";
        case FSIG_ERROR_INTERNAL: return "internal error";
        default: return "unknown status";
    }
}

FSIG_API const char* fsig_last_error(void) { return fsig::t_last_error; }

}  // extern "C"
