// The linear-attention launchers (cosFormer, elu+1): the per-dtype units linear_fp16.cu / linear_bf16.cu
// and the call-level sequence of linear_runtime.cu. Host code calls these; only the units see the kernels.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../internal.h"
#include "linear_params.h"

namespace fsig::cuda {

// One kernel of lin::Role (kReduce included) for head dim d (64, 128) on the stream.
cudaError_t launch_linear_fp16(int role, int d, bool cosformer, const lin::LinParams& p, cudaStream_t stream);
cudaError_t launch_linear_bf16(int role, int d, bool cosformer, const lin::LinParams& p, cudaStream_t stream);

// The kernel parameters of a checked problem (M = length, ε = epsilon resolved by the C ABI layer).
lin::LinParams linear_params(const Problem& pr, int64_t length, float epsilon);
// The most thread blocks (or reduction blocks) one launch of this problem's forward or backward takes.
int64_t linear_max_blocks(const Problem& pr);

// Forward: one kernel. Backward: kStats, kReduce, kDv, kDk, kDq in stream order (dq's rows carry the row
// statistics between them, then receive dq). On failure *which names the kernel.
cudaError_t launch_linear_forward(const ForwardArgs& a, int64_t length, float epsilon, cudaStream_t stream);
cudaError_t launch_linear_backward(const BackwardArgs& a, int64_t length, float epsilon, cudaStream_t stream,
                                   const char** which);

}  // namespace fsig::cuda
