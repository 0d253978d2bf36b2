// The launchers of the generated units fwd[_wgmma][_ext].cu (one per kind, plain or extended: every head dim, fp16
// and bf16 in each; CMake writes them from native/cuda/kernel_instance.cu.in). Host code calls these; only the
// units see the kernels.
#pragma once

#include <cuda_runtime.h>

#include "fwd_params.h"

namespace fsig::cuda {

constexpr int kFwdBlockM = 128;       // query rows per thread block (FwdTraits::kBlockM, WgmmaFwdTraits::kBlockM;
                                      // the tall kernel's: 256, whose layouts are judged by its warps' 32 rows)
constexpr int kFwdSmallBlockM = 64;   // ... of the 256-wide kernel on GPUs with 99 KiB per block (FwdSmemPlan);
                                      // the host checks the grid with these
constexpr int kFwdBlockN = 64;        // keys per tile of the mma.sync kernels (FwdTraits::kBlockN)
constexpr int kWgmmaFwdBlockN = 128;  // ... of the Hopper kernels (WgmmaFwdTraits::kBlockN; at d = 256 64-key
                                      // tiles, nested in these)

cudaError_t launch_fwd_fp16_hd64(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_fp16_hd128(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_bf16_hd64(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_bf16_hd128(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_fp16_hd256(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_bf16_hd256(const FwdParams& p, cudaStream_t stream);
// the extended kernels (masks and positions, p.ext.on), unit fwd_ext.cu
cudaError_t launch_fwd_ext_fp16_hd64(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_ext_fp16_hd128(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_ext_bf16_hd64(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_ext_bf16_hd128(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_ext_fp16_hd256(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_ext_bf16_hd256(const FwdParams& p, cudaStream_t stream);
// the Hopper kernels (wgmma, sm_90 only), unit fwd_wgmma.cu
cudaError_t launch_fwd_wgmma_fp16_hd64(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_wgmma_fp16_hd128(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_wgmma_fp16_hd256(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_wgmma_bf16_hd64(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_wgmma_bf16_hd128(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_wgmma_bf16_hd256(const FwdParams& p, cudaStream_t stream);
// ... extended (positions; a layout constant over each tile), unit fwd_wgmma_ext.cu
cudaError_t launch_fwd_wgmma_ext_fp16_hd64(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_wgmma_ext_fp16_hd128(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_wgmma_ext_bf16_hd64(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_wgmma_ext_bf16_hd128(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_wgmma_ext_fp16_hd256(const FwdParams& p, cudaStream_t stream);
cudaError_t launch_fwd_wgmma_ext_bf16_hd256(const FwdParams& p, cudaStream_t stream);

}  // namespace fsig::cuda
