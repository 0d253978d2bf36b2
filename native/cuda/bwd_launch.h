// The launchers of the generated units bwd_{dkdv,dq}[_ext].cu, bwd_wgmma[_ext].cu and bwd_dq_wgmma[_ext].cu (one
// per kind, plain or extended: every head dim it has, fp16 and bf16 in each; CMake writes them from
// native/cuda/kernel_instance.cu.in). Host code calls these; only the units see the kernels.
#pragma once

#include <cuda_runtime.h>

#include "bwd_params.h"

namespace fsig::cuda {

constexpr int kBwdKvBlockN = 128;  // keys per block of the dK/dV kernel (BwdTraits::kKvBlockN)
constexpr int kBwdQBlockM = 128;   // query rows per block of the dQ kernel (BwdTraits::kQBlockM)
constexpr int kBwdPairKvBlockN = 64;  // ... of the pair kernels (BwdPairTraits::kKvBlockN, kQBlockM): d > 128,
constexpr int kBwdPairQBlockM = 64;   // or GPUs with 99 KiB per block; the host checks the grids with these
constexpr int kWgmmaBwdBlockM = 64;  // query rows per tile of the Hopper dK/dV kernel (WgmmaBwdTraits::kBlockM)
constexpr int kWgmmaDqBlockN = 64;   // keys per tile of the Hopper dQ kernel (WgmmaDqTraits::kBlockN)

cudaError_t launch_bwd_dkdv_fp16_hd64(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dkdv_fp16_hd128(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dkdv_fp16_hd256(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dkdv_bf16_hd64(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dkdv_bf16_hd128(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dkdv_bf16_hd256(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_fp16_hd64(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_fp16_hd128(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_fp16_hd256(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_bf16_hd64(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_bf16_hd128(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_bf16_hd256(const BwdParams& p, cudaStream_t stream);
// the extended kernels (masks and positions, p.f.ext.on), units bwd_{dkdv,dq}_ext.cu
cudaError_t launch_bwd_dkdv_ext_fp16_hd64(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dkdv_ext_fp16_hd128(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dkdv_ext_fp16_hd256(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dkdv_ext_bf16_hd64(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dkdv_ext_bf16_hd128(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dkdv_ext_bf16_hd256(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_ext_fp16_hd64(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_ext_fp16_hd128(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_ext_fp16_hd256(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_ext_bf16_hd64(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_ext_bf16_hd128(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_ext_bf16_hd256(const BwdParams& p, cudaStream_t stream);
// the Hopper (wgmma, sm_90 only) dK/dV kernels, fast or deterministic path, unit bwd_wgmma.cu
cudaError_t launch_bwd_wgmma_fp16_hd64(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_wgmma_fp16_hd128(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_wgmma_bf16_hd64(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_wgmma_bf16_hd128(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_wgmma_fp16_hd256(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_wgmma_bf16_hd256(const BwdParams& p, cudaStream_t stream);
// ... extended (positions, key padding, layouts constant over its tiles), d = 64 only, unit
// bwd_wgmma_ext.cu
cudaError_t launch_bwd_wgmma_ext_fp16_hd64(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_wgmma_ext_bf16_hd64(const BwdParams& p, cudaStream_t stream);
// the Hopper dQ kernels of the deterministic path, units bwd_dq_wgmma[_ext].cu
cudaError_t launch_bwd_dq_wgmma_fp16_hd64(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_wgmma_fp16_hd128(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_wgmma_bf16_hd64(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_wgmma_bf16_hd128(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_wgmma_fp16_hd256(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_wgmma_bf16_hd256(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_wgmma_ext_fp16_hd64(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_wgmma_ext_fp16_hd128(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_wgmma_ext_bf16_hd64(const BwdParams& p, cudaStream_t stream);
cudaError_t launch_bwd_dq_wgmma_ext_bf16_hd128(const BwdParams& p, cudaStream_t stream);
// the fast path's last step (p.dq_accum set): dq = Elem(scale · dq_accum), native/cuda/bwd_dq_convert.cu;
// kernel_width: the backward kernels' head dim (64, 128 or 256), the row length of dq_accum
cudaError_t launch_bwd_dq_convert_fp16(const BwdParams& p, int kernel_width, cudaStream_t stream);
cudaError_t launch_bwd_dq_convert_bf16(const BwdParams& p, int kernel_width, cudaStream_t stream);
// a broadcast dbias's last step (p.dbias_partial set): the partial sums added into dbias,
// native/cuda/bwd_dbias_reduce.cu
cudaError_t launch_bwd_dbias_reduce(const BwdParams& p, cudaStream_t stream);

}  // namespace fsig::cuda
