// The fast backward's last step (bwd_kernel.cuh, p.dq_accum): dq[b, i, h, :] = Elem(scale · dq_accum[b, h, i, :]),
// dq_accum being the fp32 [B, Hq, Nq, kHeadDim] the dK/dV kernel's atomics summed into (the kernel's width; a
// smaller head dim d leaves columns d.. at 0, not stored). Memory-bound: 8 elements per thread — two 16-byte
// loads, one 16-byte store in dq's layout (DESIGN §3 strides).
#include "bwd_launch.h"
#include "fwd_kernel.cuh"  // Mma<Elem>::pack

namespace fsig::cuda {
namespace {

template <class Elem, int kHeadDim>
__global__ void __launch_bounds__(256) dq_convert_kernel(const __grid_constant__ BwdParams p) {
    using M = Mma<Elem>;
    constexpr int kChunks = kHeadDim / 8;
    const FwdParams& f = p.f;
    const int64_t chunk = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // over [B, Hq, Nq, kHeadDim / 8]
    if (chunk >= f.batch * f.heads_q * f.seq_q * kChunks) return;
    const int c = int(chunk % kChunks) * 8;
    if (c >= f.head_dim) return;
    int64_t rest = chunk / kChunks;
    const int64_t i = rest % f.seq_q;
    rest /= f.seq_q;
    const int64_t h = rest % f.heads_q, b = rest / f.heads_q;
    const float4* src = reinterpret_cast<const float4*>(p.dq_accum + chunk * 8);
    const float4 x = src[0], y = src[1];
    const uint4 packed = {M::pack(x.x * f.scale, x.y * f.scale), M::pack(x.z * f.scale, x.w * f.scale),
                          M::pack(y.x * f.scale, y.y * f.scale), M::pack(y.z * f.scale, y.w * f.scale)};
    Elem* dq = static_cast<Elem*>(p.dq) + b * p.dq_batch + i * p.dq_row + h * p.dq_head + c;
    *reinterpret_cast<uint4*>(dq) = packed;
}

template <class Elem>
cudaError_t launch(const BwdParams& p, int kernel_width, cudaStream_t stream) {
    const int64_t chunks = p.f.batch * p.f.heads_q * p.f.seq_q * (kernel_width / 8);
    const dim3 grid(unsigned((chunks + 255) / 256));  // < 2^31 - 1 blocks for any dq that fits in memory
    if (kernel_width != 64 && kernel_width != 128 && kernel_width != 256) return cudaErrorInvalidValue;
    auto kernel = kernel_width == 64    ? dq_convert_kernel<Elem, 64>
                  : kernel_width == 128 ? dq_convert_kernel<Elem, 128>
                                        : dq_convert_kernel<Elem, 256>;
    FSIG_LAUNCH(kernel, grid, dim3(256), 0, stream, p);
    return cudaGetLastError();
}

}  // namespace

cudaError_t launch_bwd_dq_convert_fp16(const BwdParams& p, int kernel_width, cudaStream_t stream) {
    return launch<__half>(p, kernel_width, stream);
}
cudaError_t launch_bwd_dq_convert_bf16(const BwdParams& p, int kernel_width, cudaStream_t stream) {
    return launch<__nv_bfloat16>(p, kernel_width, stream);
}

}  // namespace fsig::cuda
