// The linear-attention kernels (linear_kernel.h's block program on the GPU) and their launch, included
// by the two units linear_fp16.cu and linear_bf16.cu (20 block kernels each: 5 roles x head dim 64/128 x
// cosFormer/elu+1, plus the row-statistics reduction).
#pragma once

#include <cuda_runtime.h>

#include "linear_kernel.h"
#include "launch.h"
#include "linear_launch.h"

namespace fsig::cuda::lin {
namespace {

// (kThreads, 1): the state takes up to 64 registers per thread; without the minimum-blocks hint ptxas
// would hold the kernel to 128 registers and spill. Shared memory bounds the blocks per SM anyway.
template <int Role, int D, bool COS, bool BF16>
__global__ void __launch_bounds__(kThreads, 1) linear_kernel(const LinParams p) {
    run_block<Role, D, COS, BF16>(p, smem_raw);
}

constexpr int kReduceThreads = 256;

template <int D, bool COS>
__global__ void __launch_bounds__(kReduceThreads) linear_reduce_kernel(const LinParams p, int64_t rows) {
    const int64_t row = int64_t(blockIdx.x) * kReduceThreads + threadIdx.x;
    if (row < rows) reduce_row<D, COS>(p, row);
}

// One kernel with p.nseg segments as given (test_linear_emulation varies it): with p.partials (the
// workspace) and several segments two launches, kPartial then kCombine; else one, kRecompute.
template <int Role, int D, bool COS, bool BF16>
cudaError_t launch_segments(LinParams p, cudaStream_t stream) {
    using G = Cfg<Role, D, COS>;
    const int64_t blocks = int64_t(p.nseg) * G::kSlices * block_heads<Role>(p) * p.batch;
    auto kernel = linear_kernel<Role, D, COS, BF16>;
    if (const cudaError_t e = allow_dynamic_smem(kernel, G::kBytes); e != cudaSuccess) return e;
    auto run = [&](int phase) {
        p.phase = phase;
        FSIG_LAUNCH(kernel, unsigned(blocks), kThreads, G::kBytes, stream, p);
        return cudaGetLastError();
    };
    // (the workspace holds kMaxSegmentedBlocks partials: choose_segments never asks for more)
    if (p.partials == nullptr || p.nseg == 1 || blocks > kMaxSegmentedBlocks) return run(kRecompute);
    if (const cudaError_t e = run(kPartial); e != cudaSuccess) return e;
    return run(kCombine);
}

template <int Role, int D, bool COS, bool BF16>
cudaError_t launch_role(LinParams p, cudaStream_t stream) {
    using G = Cfg<Role, D, COS>;
    p.nseg = choose_segments(p, G::kSlices, block_heads<Role>(p), G::kReverse ? p.seq_k : p.seq_q);
    return launch_segments<Role, D, COS, BF16>(p, stream);
}

template <int D, bool COS, bool BF16>
cudaError_t launch_by_role(int role, const LinParams& p, cudaStream_t stream) {
    switch (role) {
        case kFwd: return launch_role<kFwd, D, COS, BF16>(p, stream);
        case kStats: return launch_role<kStats, D, COS, BF16>(p, stream);
        case kDv: return launch_role<kDv, D, COS, BF16>(p, stream);
        case kDk: return launch_role<kDk, D, COS, BF16>(p, stream);
        case kDq: return launch_role<kDq, D, COS, BF16>(p, stream);
        case kReduce: {
            const int64_t rows = int64_t(p.batch) * p.seq_q * p.heads_q;
            auto kernel = linear_reduce_kernel<D, COS>;
            FSIG_LAUNCH(kernel, unsigned((rows + kReduceThreads - 1) / kReduceThreads), kReduceThreads, 0, stream, p, rows);
            return cudaGetLastError();
        }
        default: return cudaErrorInvalidValue;
    }
}

template <bool BF16>
cudaError_t launch_linear_dtype(int role, int d, bool cosformer, const LinParams& p, cudaStream_t stream) {
    if (d == 64) return cosformer ? launch_by_role<64, true, BF16>(role, p, stream) : launch_by_role<64, false, BF16>(role, p, stream);
    if (d == 128)
        return cosformer ? launch_by_role<128, true, BF16>(role, p, stream) : launch_by_role<128, false, BF16>(role, p, stream);
    return cudaErrorInvalidValue;
}

}  // namespace
}  // namespace fsig::cuda::lin
