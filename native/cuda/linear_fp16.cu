// The linear-attention kernels for fp16 storage (linear_kernels.cuh).
#include "linear_kernels.cuh"

namespace fsig::cuda {
cudaError_t launch_linear_fp16(int role, int d, bool cosformer, const lin::LinParams& p, cudaStream_t stream) {
    return lin::launch_linear_dtype<false>(role, d, cosformer, p, stream);
}
}  // namespace fsig::cuda
