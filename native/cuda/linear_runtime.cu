// Host side of the linear-attention kernels: parameters from a checked problem and the launch
// sequence. The checks (dtype, head dim, layout, pointers, device) are cuda_runtime.cu's, in
// linear_forward / linear_backward there.
#include <cmath>

#include "linear_launch.h"

namespace fsig::cuda {

namespace {
lin::LinTensor tensor(const TensorView& t) {
    lin::LinTensor x;
    x.data = t.data;
    x.sb = t.stride[0], x.sr = t.stride[1], x.sh = t.stride[2];
    return x;
}

cudaError_t launch(const Problem& pr, int role, const lin::LinParams& p, cudaStream_t s) {
    const bool cosformer = pr.score == FSIG_SCORE_COSFORMER;
    return pr.dtype == FSIG_DTYPE_BF16 ? launch_linear_bf16(role, int(pr.head_dim), cosformer, p, s)
                                       : launch_linear_fp16(role, int(pr.head_dim), cosformer, p, s);
}
}  // namespace

lin::LinParams linear_params(const Problem& pr, int64_t length, float epsilon) {
    lin::LinParams p;
    p.batch = int32_t(pr.batch), p.seq_q = int32_t(pr.seq_q), p.seq_k = int32_t(pr.seq_k);
    p.heads_q = int32_t(pr.heads_q), p.heads_k = int32_t(pr.heads_k), p.group = int32_t(pr.group());
    p.causal = pr.causal ? 1 : 0;
    p.angle = 1.0 / (2.0 * double(length));
    p.epsilon = epsilon;
    return p;
}

int64_t linear_max_blocks(const Problem& pr) {
    // ≤ 16 segments x ≤ 8 slices per head, and the reduction's rows / 256
    const int64_t heads = pr.heads_q > pr.heads_k ? pr.heads_q : pr.heads_k;
    const int64_t blocks = 16 * 8 * heads * pr.batch;
    const int64_t reduce = (pr.batch * pr.seq_q * pr.heads_q + 255) / 256;
    return blocks > reduce ? blocks : reduce;
}

cudaError_t launch_linear_forward(const ForwardArgs& a, int64_t length, float epsilon, cudaStream_t stream) {
    lin::LinParams p = linear_params(a.p, length, epsilon);
    p.q = tensor(a.q), p.k = tensor(a.k), p.v = tensor(a.v), p.out = tensor(a.out);
    p.partials = static_cast<float*>(a.workspace);
    return launch(a.p, lin::kFwd, p, stream);
}

cudaError_t launch_linear_backward(const BackwardArgs& a, int64_t length, float epsilon, cudaStream_t stream,
                                   const char** which) {
    lin::LinParams p = linear_params(a.p, length, epsilon);
    p.q = tensor(a.q), p.k = tensor(a.k), p.v = tensor(a.v), p.dout = tensor(a.dout);
    p.dq = tensor(a.dq), p.dk = tensor(a.dk), p.dv = tensor(a.dv);
    p.partials = static_cast<float*>(a.workspace);  // each kernel of the sequence overwrites it
    static const struct {
        int role;
        const char* name;
    } kSequence[] = {{lin::kStats, "row statistics"}, {lin::kReduce, "row statistics reduction"},
                     {lin::kDv, "dV"}, {lin::kDk, "dK"}, {lin::kDq, "dQ"}};
    for (const auto& k : kSequence) {
        *which = k.name;
        if (const cudaError_t e = launch(a.p, k.role, p, stream); e != cudaSuccess) return e;
    }
    return cudaSuccess;
}

}  // namespace fsig::cuda
