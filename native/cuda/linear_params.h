// Parameters of the CUDA linear-attention kernels (cosFormer and elu+1, DESIGN.md §4): plain C++, shared
// by the kernels (linear_kernel.h), their host side (linear_runtime.cu) and the CPU emulation test
// (tests/gpu/test_linear_emulation.cpp).
#pragma once

#include <cstdint>

namespace fsig::cuda::lin {

// A BSHD tensor as the kernels see it: base pointer and element strides of batch, row, head (the last
// dimension has stride 1, DESIGN §3).
struct LinTensor {
    void* data = nullptr;
    int64_t sb = 0, sr = 0, sh = 0;
};

// The five kernels of one call. Forward: kFwd. Backward, in stream order: kStats (per-slice partial
// dO·num and den of every query row, written as fp32 into dq's rows), the row-statistics reduction
// (kReduce: n_i, r_i replicated into every dq column slice), kDv, kDk (read the replicas), kDq (reads its own
// slice's replica, then overwrites those columns with dq).
enum Role : int { kFwd = 0, kStats = 1, kDv = 2, kDk = 3, kDq = 4, kReduce = 5 };

struct LinParams {
    LinTensor q, k, v, dout, out, dq, dk, dv;
    int32_t batch = 0, seq_q = 0, seq_k = 0, heads_q = 0, heads_k = 0, group = 1;
    int32_t causal = 0;
    int32_t nseg = 1;      // segments of chunks per (slice, head, batch): thread blocks along the sequence
    double angle = 0;      // cosFormer: θ = π · angle · position, angle = 1 / (2M)
    float epsilon = 1e-6f;
};

}  // namespace fsig::cuda::lin
