/*
 * flashsig.h — the only public header of FlashSig: fused attention kernels (softmax, sigmoid and
 * other pointwise scores) for CPU and CUDA behind one C ABI.
 *
 * Conventions
 *  - Every function returns an int status (FSIG_OK = 0). On error nothing is written to any output,
 *    and fsig_last_error() holds a message (per thread) that names the argument and the rule broken.
 *  - Tensors are described by fsig_tensor: dtype, device, shape, element strides and the number of
 *    bytes addressable from the data pointer, so no call ever reads or writes outside that range.
 *  - Layout BSHD: q [B, Nq, Hq, d], k and v [B, Nk, Hk, d], out [B, Nq, Hq, d], Hq % Hk == 0;
 *    lse is fp32 [B, Hq, Nq] (natural log). q, k, v, out (and dout, dq, dk, dv) share one dtype.
 *  - Parameters travel in fsig_attention_params, passed by pointer, struct_size first: initialise it
 *    with fsig_attention_params_default() so that fields added later get their defaults.
 */
#ifndef FLASHSIG_H
#define FLASHSIG_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define FSIG_API __declspec(dllexport)
#else
#define FSIG_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define FSIG_VERSION_MAJOR 0
#define FSIG_VERSION_MINOR 3
#define FSIG_VERSION_PATCH 0

/* ---- status codes ------------------------------------------------------------------------------ */
typedef enum fsig_status {
    FSIG_OK = 0,
    FSIG_ERROR_NULL_ARGUMENT = 1,   /* a required pointer (tensor, data, params) is NULL */
    FSIG_ERROR_INVALID_SHAPE = 2,   /* a dimension is < 1, rank is wrong or shapes disagree */
    FSIG_ERROR_INVALID_DTYPE = 3,   /* unknown dtype, or tensors that must share a dtype do not */
    FSIG_ERROR_INVALID_STRIDE = 4,  /* negative stride, overlapping output, overflowing extent */
    FSIG_ERROR_INVALID_DEVICE = 5,  /* unknown device, or tensors on different devices */
    FSIG_ERROR_BUFFER_TOO_SMALL = 6,/* shape and strides reach beyond capacity_bytes */
    FSIG_ERROR_MISALIGNED = 7,      /* data pointer not aligned to its element size (or GPU rule) */
    FSIG_ERROR_ALIASING = 8,        /* an output shares an element with an input or another output
                                       (views into one fused buffer that share none are fine) */
    FSIG_ERROR_INVALID_PARAMS = 9,  /* a parameter value is out of its range */
    FSIG_ERROR_UNSUPPORTED = 10,    /* valid, but this backend has no kernel for it (dtype, d, ...) */
    FSIG_ERROR_NO_DEVICE = 11,      /* a CUDA tensor but no CUDA device or driver is present */
    FSIG_ERROR_OUT_OF_MEMORY = 12,  /* an allocation failed: host scratch, or fsig_cuda_malloc */
    FSIG_ERROR_CUDA = 13,           /* the CUDA runtime reported an error */
    FSIG_ERROR_INTERNAL = 14        /* a bug in FlashSig: please report it with fsig_last_error() */
} fsig_status;

/* ---- tensors ----------------------------------------------------------------------------------- */
typedef enum fsig_dtype {
    FSIG_DTYPE_FP32 = 0,
    FSIG_DTYPE_FP16 = 1,  /* IEEE binary16 */
    FSIG_DTYPE_BF16 = 2,  /* bfloat16 */
    /* 1 byte, nonzero = true: the mask and block-layout tensors only (numbered apart from the float
     * types). q, k, v, out, lse, the gradients, bias and ALiBi slopes refuse it. */
    FSIG_DTYPE_BOOL = 16
} fsig_dtype;

typedef enum fsig_device_type {
    FSIG_DEVICE_CPU = 0,
    FSIG_DEVICE_CUDA = 1  /* device_index = CUDA ordinal */
} fsig_device_type;

#define FSIG_MAX_DIMS 4

typedef struct fsig_tensor {
    void* data;               /* first element; used by fsig_attention_forward/_backward */
    int64_t capacity_bytes;   /* bytes addressable from data (>= extent of shape and strides) */
    int32_t dtype;            /* fsig_dtype */
    int32_t device_type;      /* fsig_device_type */
    int32_t device_index;     /* CUDA ordinal; 0 for the CPU */
    int32_t ndim;             /* 4 for q, k, v, out and gradients; 3 for lse */
    int64_t shape[FSIG_MAX_DIMS];
    int64_t strides[FSIG_MAX_DIMS]; /* in elements, >= 0; outputs must not overlap themselves */
} fsig_tensor;

/* ---- attention parameters ---------------------------------------------------------------------- */
typedef enum fsig_score {
    FSIG_SCORE_SOFTMAX = 0,   /* exp(S - LSE) over allowed keys */
    FSIG_SCORE_SIGMOID = 1,   /* sigmoid(S + sigmoid_bias) */
    FSIG_SCORE_RELU = 2,      /* relu(S) * Nk^-alpha */
    FSIG_SCORE_RELU2 = 3,     /* relu(S)^2 * Nk^-alpha */
    FSIG_SCORE_GELU = 4,      /* gelu(S) * Nk^-alpha, erf form */
    FSIG_SCORE_SOFTPLUS = 5,  /* softplus(S) * Nk^-alpha */
    FSIG_SCORE_IDENTITY = 6,  /* S * Nk^-alpha */
    /* Linear attention, O(N) (DESIGN.md §4): O_i = sum_j (qf_i . kf_j) v_j / max(sum_j qf_i . kf_j, eps)
     * over all keys, or keys j <= i + Nk - Nq when causal. No window, no lse, scale NaN. */
    FSIG_SCORE_COSFORMER = 7, /* qf_i = relu(q_i) [sin, cos](pi p_i / 2M), p_i = i + Nk - Nq; kf_j likewise, p_j = j */
    FSIG_SCORE_LINEAR_ELU = 8 /* qf_i = elu(q_i) + 1, kf_j = elu(k_j) + 1 */
} fsig_score;

typedef struct fsig_attention_params {
    uint32_t struct_size;     /* sizeof(fsig_attention_params) of the caller's header */
    int32_t score;            /* fsig_score */
    float scale;              /* S = scale * q.k; NaN = 1/sqrt(d) */
    float sigmoid_bias;       /* sigmoid only; NaN = -ln(Nk) */
    float alpha;              /* pointwise scores are multiplied by Nk^-alpha; default 1 */
    int32_t causal;           /* 0 or 1: key j allowed for query i iff j <= i + Nk - Nq */
    int64_t window_left;      /* allowed iff i + Nk - Nq - window_left <= j; -1 = unbounded */
    int64_t window_right;     /* allowed iff j <= i + Nk - Nq + window_right; -1 = unbounded */
    int32_t deterministic;    /* backward: 1 = same bits every run. 0 with a workspace (CUDA): dq may differ
                                 in its last bits from run to run. The CPU is always deterministic */
    int32_t reserved0;        /* must be 0 */
    /* ---- added in 0.2 (a caller with the 0.1 struct, struct_size 48, gets the defaults) ---- */
    int64_t linear_length;    /* cosFormer's M: 0 = max(Nq, Nk); else >= max(Nq, Nk). cosFormer only */
    float linear_epsilon;     /* cosFormer, linear_elu: normaliser floor eps > 0; NaN = 1e-6 */
    int32_t reserved1;        /* must be 0 */
    /* ---- masks and positions (DESIGN.md §4 "Extensions"); a caller with struct_size 48 or 64 gets
     * them off. The tensor-valued ones (ALiBi slopes, bias, mask, block layout) are arguments of the
     * _ex calls below. CPU and CUDA (on CUDA a broadcast dbias needs params.workspace). ---- */
    int64_t sparse_block_m;   /* block-sparse: query rows per layout block >= 1; 0 = off (with sparse_block_n) */
    int64_t sparse_block_n;   /* block-sparse: keys per layout block >= 1; 0 = off */
    int64_t strided;          /* strided (atrous) mask: allowed iff |i + Nk - Nq - j| mod strided == 0; 0 = off.
                                 Given with a window, window OR strided is the one mask (then causal) */
    int64_t logn_train;       /* log-n scaling: S = scale * lambda_i * q.k (+ bias), lambda_i =
                                 max(1, ln n_i / ln logn_train), n_i = keys that causal and the window alone
                                 allow row i; 0 = off, else >= 2 */
    /* ---- added in 0.3: the backward's (and the linear scores') workspace (a caller with an older struct has none) ---- */
    void* workspace;          /* CUDA backward: the fast path's (deterministic 0, no dbias) or a broadcast
                                 dbias's (fsig_attention_backward_workspace_size_ex); the linear scores'
                                 forward and backward: the partial states of their segments. Device memory
                                 on q's device, 16-byte aligned, at least fsig_attention_backward_workspace_size()
                                 bytes, sharing no byte with a tensor of the call or with another call in
                                 flight; its content on entry does not matter, on return it is undefined.
                                 NULL: the deterministic kernels run instead (the linear scores: each segment
                                 recomputes the state before it, more work on long sequences). Used by the
                                 backward and the linear scores' forward (every call checks that workspace
                                 and workspace_bytes come together); the CPU ignores it */
    int64_t workspace_bytes;  /* bytes at workspace; 0 when workspace is NULL */
} fsig_attention_params;

/* Defaults: softmax, scale NaN (1/sqrt(d)), sigmoid_bias NaN (-ln Nk), alpha 1, not causal,
 * windows -1, not deterministic, linear_length 0 (max(Nq, Nk)), linear_epsilon NaN (1e-6), no
 * workspace, struct_size = sizeof(fsig_attention_params).
 * The linear scores (cosFormer, linear_elu) are scale-free: scale and sigmoid_bias must stay NaN,
 * alpha 1 and the windows -1 (an error names the field otherwise). */
FSIG_API fsig_attention_params fsig_attention_params_default(void);
/* The same, written through a pointer (for callers that cannot receive structs by value). */
FSIG_API int fsig_attention_params_init(fsig_attention_params* params);

/* ---- attention --------------------------------------------------------------------------------- */
/* O = P V with P the score of DESIGN.md §4. lse may be NULL; when given the score must be softmax.
 * On CUDA: fp16 and bf16, head dims that are multiples of 8 up to 256 (fsig_capabilities.cuda_head_dims);
 * the linear scores at head dims 64 and 128 only, and with params.workspace when given (see there).
 * stream: a cudaStream_t for CUDA tensors (NULL = default stream); must be NULL for CPU tensors. */
FSIG_API int fsig_attention_forward(const fsig_attention_params* params,
                                    const fsig_tensor* q, const fsig_tensor* k, const fsig_tensor* v,
                                    const fsig_tensor* out, const fsig_tensor* lse, void* stream);

/* dQ, dK, dV from dO by recomputation. out and lse are required for softmax and may be NULL for
 * the pointwise and linear scores (which never read them). GQA: dk and dv are summed over the query heads of each group.
 * On CUDA two kernel paths give the same results within DESIGN.md §6:
 *  - fast (params.deterministic 0 and params.workspace given): one kernel per key tile computes dK, dV
 *    and adds each tile's share of dQ to an fp32 copy in the workspace with atomics (the order of those
 *    additions varies, so dq may differ in its last bits from run to run), then a small kernel writes dq;
 *  - deterministic (params.deterministic 1, or no workspace, or dbias asked for): dK/dV and dQ by two
 *    kernels that each recompute the scores, no atomics, the same bits on every run (a broadcast dbias
 *    then uses the workspace for its partial sums: fsig_attention_backward_workspace_size_ex).
 * The CPU backward is always deterministic. On CUDA: head dims that are multiples of 8 up to 256, as the
 * forward (fsig_capabilities.cuda_backward_max_head_dim). */
FSIG_API int fsig_attention_backward(const fsig_attention_params* params,
                                     const fsig_tensor* q, const fsig_tensor* k, const fsig_tensor* v,
                                     const fsig_tensor* out, const fsig_tensor* dout,
                                     const fsig_tensor* lse, const fsig_tensor* dq,
                                     const fsig_tensor* dk, const fsig_tensor* dv, void* stream);

/* The same two calls with every buffer passed as an argument; the descriptors' data fields are
 * ignored. Managed runtimes use these: a buffer that is a call argument stays alive (and a pinned
 * heap array has no address before the call), which a pointer stored inside a struct cannot promise.
 * A NULL buffer means "tensor absent" exactly where the descriptor may be NULL. */
FSIG_API int fsig_attention_forward_buffers(const fsig_attention_params* params,
                                            const fsig_tensor* q, const fsig_tensor* k,
                                            const fsig_tensor* v, const fsig_tensor* out,
                                            const fsig_tensor* lse, void* stream,
                                            const void* q_data, const void* k_data,
                                            const void* v_data, void* out_data, void* lse_data);

FSIG_API int fsig_attention_backward_buffers(const fsig_attention_params* params,
                                             const fsig_tensor* q, const fsig_tensor* k,
                                             const fsig_tensor* v, const fsig_tensor* out,
                                             const fsig_tensor* dout, const fsig_tensor* lse,
                                             const fsig_tensor* dq, const fsig_tensor* dk,
                                             const fsig_tensor* dv, void* stream,
                                             const void* q_data, const void* k_data,
                                             const void* v_data, const void* out_data,
                                             const void* dout_data, const void* lse_data,
                                             void* dq_data, void* dk_data, void* dv_data);

/* Bytes of params.workspace that the fast CUDA backward needs for this problem: B * Hq * Nq * w * 4 (an
 * fp32 dQ, w the width of the kernels that run head dim d: 64 for d <= 64, 128 for d <= 128, 256 for
 * d <= 256; no CUDA backward takes a larger d) for CUDA tensors and the softmax or pointwise scores with
 * params.deterministic 0; 0 when the call would not use a workspace (CPU tensors, deterministic). The
 * linear scores on CUDA: 526 * (33 K + 32) * 4 whatever the shape (K = 2d cosFormer, d linear_elu; 17.8 MB
 * at d = 128 cosFormer), for their forward and backward alike: the partial states of up to 526 thread
 * blocks (the kernels split a sequence into segments only where fewer blocks would fill the GPU). A
 * workspace given to a linear call must have at least that size (earlier builds of 0.3 ignored it there), so
 * one shared with other calls takes the larger of their sizes.
 * q is the call's q descriptor (its shape and device are read, its data pointer is not). It does
 * not know the rest of the call: a backward with dbias runs the deterministic kernels and leaves the
 * workspace unused, and a dtype or head dim the CUDA kernels lack is refused by the call itself. */
FSIG_API int fsig_attention_backward_workspace_size(const fsig_attention_params* params, const fsig_tensor* q,
                                                    int64_t* bytes);

/* The same for a backward with dbias (fsig_attention_backward_ex; dbias NULL: as above). On CUDA a dbias
 * broadcast over B, Hq or Nq is summed in two deterministic steps through params.workspace, which it then
 * requires (any params.deterministic): B * Hq * G * Nk * 4 bytes of fp32 partial sums, G = Nq when dbias
 * keeps Nq and ceil(Nq / 16) when it broadcasts Nq (so a key-padding dbias [B, 1, 1, Nk] needs
 * B * Hq * ceil(Nq / 16) * Nk * 4). A full-shaped dbias [B, Hq, Nq, Nk], and any dbias on the CPU, needs
 * none (0). dbias's shape is read (rank 4, each of its first three dims 1 or q's), its data pointer is not. */
FSIG_API int fsig_attention_backward_workspace_size_ex(const fsig_attention_params* params, const fsig_tensor* q,
                                                       const fsig_tensor* dbias, int64_t* bytes);

/* ---- masks and positions (DESIGN.md §4 "Extensions") --------------------------------------------
 * The same calls with four optional input tensors (NULL = absent), and dbias as an output of backward:
 *  - alibi_slopes: fp32 [Hq] or [B, Hq]; adds -slope(b, h) * |i + Nk - Nq - j| to S (ALiBi, FA2 convention).
 *    Slopes must be finite; they are not read before the kernels run (on CUDA they are device memory),
 *    so an inf or NaN slope is not refused; the outputs are then undefined (NaN, inf or 0).
 *  - bias: fp32, fp16 or bf16 (any of them, whatever q's dtype), rank 4 [B|1, Hq|1, Nq|1, Nk]: a dim of
 *    size 1 broadcasts (so a key-padding bias is [B, 1, 1, Nk]); a stride of 0 broadcasts too. Added to
 *    S after the scale; -inf masks the element (dS = 0 there).
 *  - mask: FSIG_DTYPE_BOOL, the bias's shape rule; nonzero = allowed.
 *  - block_layout: FSIG_DTYPE_BOOL [1 or Hq, ceil(Nq / sparse_block_m), ceil(Nk / sparse_block_n)];
 *    nonzero = the block is allowed. Given exactly when params.sparse_block_m/n are set.
 * Every mask given (causal, window, strided, block layout, mask tensor, bias -inf) is intersected, except
 * window and strided together, which are one mask (their union). Key tiles that the block layout, the
 * mask or the strided pattern leave empty for a whole query tile are skipped, so time falls with density.
 * dbias (backward, optional): dL/dbias = dS summed over the bias's broadcast dims, deterministic; the
 * bias's shape and dtype, its own strides; requires bias. A bias broadcast over Nq ([B|1, Hq|1, 1, Nk],
 * e.g. key padding) gets dS summed over every query row. Every element is written (0 where masked).
 * fsig_attention_forward(...) is fsig_attention_forward_ex(...) with every extension NULL, and likewise
 * for backward. The linear scores take none of these (FSIG_ERROR_INVALID_PARAMS). */
FSIG_API int fsig_attention_forward_ex(const fsig_attention_params* params,
                                       const fsig_tensor* q, const fsig_tensor* k, const fsig_tensor* v,
                                       const fsig_tensor* out, const fsig_tensor* lse,
                                       const fsig_tensor* alibi_slopes, const fsig_tensor* bias,
                                       const fsig_tensor* mask, const fsig_tensor* block_layout, void* stream);

FSIG_API int fsig_attention_backward_ex(const fsig_attention_params* params,
                                        const fsig_tensor* q, const fsig_tensor* k, const fsig_tensor* v,
                                        const fsig_tensor* out, const fsig_tensor* dout,
                                        const fsig_tensor* lse, const fsig_tensor* dq,
                                        const fsig_tensor* dk, const fsig_tensor* dv,
                                        const fsig_tensor* alibi_slopes, const fsig_tensor* bias,
                                        const fsig_tensor* mask, const fsig_tensor* block_layout,
                                        const fsig_tensor* dbias, void* stream);

/* Every buffer as an argument (see fsig_attention_forward_buffers); NULL data = tensor absent. */
FSIG_API int fsig_attention_forward_ex_buffers(const fsig_attention_params* params,
                                               const fsig_tensor* q, const fsig_tensor* k,
                                               const fsig_tensor* v, const fsig_tensor* out,
                                               const fsig_tensor* lse, const fsig_tensor* alibi_slopes,
                                               const fsig_tensor* bias, const fsig_tensor* mask,
                                               const fsig_tensor* block_layout, void* stream,
                                               const void* q_data, const void* k_data,
                                               const void* v_data, void* out_data, void* lse_data,
                                               const void* alibi_slopes_data, const void* bias_data,
                                               const void* mask_data, const void* block_layout_data);

FSIG_API int fsig_attention_backward_ex_buffers(const fsig_attention_params* params,
                                                const fsig_tensor* q, const fsig_tensor* k,
                                                const fsig_tensor* v, const fsig_tensor* out,
                                                const fsig_tensor* dout, const fsig_tensor* lse,
                                                const fsig_tensor* dq, const fsig_tensor* dk,
                                                const fsig_tensor* dv, const fsig_tensor* alibi_slopes,
                                                const fsig_tensor* bias, const fsig_tensor* mask,
                                                const fsig_tensor* block_layout, const fsig_tensor* dbias,
                                                void* stream, const void* q_data, const void* k_data,
                                                const void* v_data, const void* out_data,
                                                const void* dout_data, const void* lse_data,
                                                void* dq_data, void* dk_data, void* dv_data,
                                                const void* alibi_slopes_data, const void* bias_data,
                                                const void* mask_data, const void* block_layout_data,
                                                void* dbias_data);

/* The standard ALiBi slopes (Press et al.) for `heads` heads into slopes[0 .. heads): with n the
 * largest power of two <= heads, slope_h = 2^(-8 (h + 1) / n) for h < n, and the remaining heads take
 * 2^(-8 (2 (h - n) + 1) / 2n) (every other slope of the 2n schedule). heads >= 1. */
FSIG_API int fsig_alibi_slopes(int64_t heads, float* slopes);

/* ---- CUDA memory and streams -------------------------------------------------------------------- */
/* For callers without a CUDA runtime of their own (the JVM): device memory, copies and streams on
 * cuda:device_index. Each keeps the caller's current device, and fails with FSIG_ERROR_NO_DEVICE in a
 * build without CUDA or on a machine without a device. Memory from fsig_cuda_malloc is 256-byte
 * aligned and freed only by fsig_cuda_free; streams are non-blocking (they do not wait for the
 * legacy default stream). */
FSIG_API int fsig_cuda_malloc(int32_t device_index, int64_t bytes, void** ptr);
FSIG_API int fsig_cuda_free(int32_t device_index, void* ptr); /* ptr NULL: nothing to do */
/* Copies bytes from src to dst, either of them host or device memory (unified addressing), in stream
 * order (NULL = the default stream). With ordinary (pageable) host memory the call returns once the
 * host side is done with it; page-locked host memory must stay valid until the stream has reached the
 * copy (fsig_cuda_synchronize). src and dst must not overlap. */
FSIG_API int fsig_cuda_memcpy(int32_t device_index, void* dst, const void* src, int64_t bytes, void* stream);
FSIG_API int fsig_cuda_stream_create(int32_t device_index, void** stream);
FSIG_API int fsig_cuda_stream_destroy(int32_t device_index, void* stream);
/* Waits until stream (NULL: the whole device) has finished, and reports an asynchronous error of the
 * work before it (a kernel fault) with a message: FSIG_ERROR_CUDA. */
FSIG_API int fsig_cuda_synchronize(int32_t device_index, void* stream);

/* What one device is and what runs on it (fsig_capabilities lists what the build has): added in 0.3; a
 * later version accepts this version's struct_size. */
typedef struct fsig_cuda_device_info {
    uint32_t struct_size;             /* set by the caller to sizeof(fsig_cuda_device_info) */
    int32_t compute_capability;       /* major * 10 + minor: 80 A100, 86/89 A10/L4/L40S/RTX, 90 H100/H200 */
    int32_t multiprocessors;
    int32_t shared_memory_per_block;  /* bytes a kernel may take per block (the opt-in limit; where the
                                         environment variable FSIG_CUDA_SMEM_LIMIT_KIB is set, capped at that
                                         for the choice among the mma.sync kernels: a test setting) */
    int64_t memory_bytes;             /* global memory */
    int32_t forward_max_head_dim;     /* every attention call (softmax and pointwise scores, masks and
                                         positions included) with a head dim that is a multiple of 8 up to
                                         this runs forward on this device; larger ones are refused (0: none) */
    int32_t backward_max_head_dim;    /* the same for the backward (99 KiB GPUs: forward 256, backward 128) */
    int32_t hopper_kernels;           /* 1 when calls take the Hopper (wgmma) kernels here where they apply:
                                         a 9.0 device, sm_90a code in this build, and the environment variable
                                         that opts in set to 1 or "require"; answering makes the device's
                                         context on such a device (it reads the code loaded there) */
    char name[256];                   /* the device's name, NUL-terminated */
} fsig_cuda_device_info;

/* Fills info for cuda:device_index (FSIG_ERROR_NO_DEVICE without CUDA or a device). */
FSIG_API int fsig_cuda_get_device_info(int32_t device_index, fsig_cuda_device_info* info);

/* ---- library ----------------------------------------------------------------------------------- */
typedef enum fsig_cpu_isa {
    FSIG_CPU_ISA_AVX2 = 2,    /* x86-64-v3 baseline: AVX2 + FMA + F16C */
    FSIG_CPU_ISA_AVX512 = 3,  /* AVX-512 F/BW/DQ/VL kernels, chosen at run time by CPUID */
    FSIG_CPU_ISA_AVX512_BF16 = 4, /* the AVX-512 kernels, and bf16 tensors' Q K^T (and dO V^T) by AVX512-BF16 */
    FSIG_CPU_ISA_NEON = 5,    /* AArch64 (Advanced SIMD), the one set of a library built for that architecture */
    FSIG_CPU_ISA_AMX = 6      /* the AVX512-BF16 kernels, and bf16 tensors' products by AMX tiles (Intel, Sapphire Rapids on) */
} fsig_cpu_isa;

#define FSIG_MAX_HEAD_DIM_LIST 8

typedef struct fsig_capabilities {
    uint32_t struct_size;           /* set by the caller to sizeof(fsig_capabilities) */
    int32_t cpu_isa;                /* fsig_cpu_isa of the kernels in use */
    int32_t cpu_threads;            /* threads the CPU backend uses now */
    uint32_t cpu_dtypes;            /* bit (1 << fsig_dtype) per supported dtype */
    int32_t cpu_min_head_dim;       /* the CPU supports every d in [min, max] */
    int32_t cpu_max_head_dim;
    int32_t cuda_compiled;          /* 1 when this build contains CUDA code */
    int32_t cuda_device_count;      /* usable CUDA devices now (0 without a driver) */
    uint32_t cuda_dtypes;           /* bit (1 << fsig_dtype) per dtype with CUDA kernels */
    int32_t cuda_head_dim_count;    /* entries used in cuda_head_dims */
    int32_t cuda_head_dims[FSIG_MAX_HEAD_DIM_LIST]; /* the CUDA forward kernels' widths (64, 128, 256);
                                       every multiple of 8 up to the largest runs, on the narrowest that
                                       holds it (its columns past d zero-filled: d = 96 costs what d = 128
                                       does); linear attention runs at 64 and 128 */
    /* ---- added in 0.3 (a struct_size that ends before it is accepted: the fields it has are filled) ---- */
    int32_t cuda_backward_max_head_dim; /* the CUDA backward runs every multiple of 8 up to this (256,
                                       as the forward; 0 without CUDA) */
} fsig_capabilities;

/* Version as MAJOR * 10000 + MINOR * 100 + PATCH, and as "MAJOR.MINOR.PATCH". */
FSIG_API int fsig_version(void);
FSIG_API const char* fsig_version_string(void);

FSIG_API int fsig_get_capabilities(fsig_capabilities* caps);

/* Threads of the CPU backend: n >= 1, or 0 for the default (the CPUs this process may run on).
 * Results never depend on the thread count. */
FSIG_API int fsig_set_num_threads(int n);
FSIG_API int fsig_get_num_threads(void);

/* The CPU backend's working buffers of 1 MiB or more (packed K and V, dQ accumulators, row statistics,
 * worker scratch, linear-attention state) are kept for the next call, process-wide, at most 256 MiB of them
 * idle: allocating them afresh costs a page fault per page on every call. This frees the idle ones now;
 * those of calls still running join the cache when the calls end. Each calling thread also keeps one
 * scratch block under 1 MiB until it exits, which this does not free. Added in 0.3. Always FSIG_OK. */
FSIG_API int fsig_release_cached_memory(void);

/* A constant string for a status code ("unknown status" for codes not listed above). */
FSIG_API const char* fsig_status_string(int status);
/* The message of this thread's most recent call that can fail ("" if it succeeded); valid until the
 * thread's next FlashSig call. */
FSIG_API const char* fsig_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* FLASHSIG_H */
