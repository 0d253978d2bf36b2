// A broadcast dBias's second step (BwdParams::dbias_partial): dbias[bo, ho, io, j] = the fp32 partial sums
// [B, Hq, G, Nk] that the dQ kernel wrote, added over every batch, head and row group the element stands
// for, in one fixed order (deterministic), in double, then rounded to the bias's dtype. A block takes 32
// consecutive dbias elements (keys fastest: coalesced reads of the partial sums, coalesced writes of a
// contiguous dbias); its 8 warps split each element's terms by index mod 8 and lane 0..31 of warp 0 adds
// the 8 slices in order — 8× the threads of one per element, which a key-padding dbias [B, 1, 1, Nk]
// (few elements, B·Hq·G terms each) needs.
#include "bwd_launch.h"
#include "bwd_params.h"
#include "launch.h"

namespace fsig::cuda {
namespace {

constexpr int kElements = 32, kSlices = 8;

__global__ void __launch_bounds__(kElements* kSlices) dbias_reduce_kernel(const __grid_constant__ BwdParams p) {
    double* slice_sums = reinterpret_cast<double*>(smem_raw);  // [kSlices][kElements]
    const FwdParams& f = p.f;
    const int64_t nk = f.seq_k, bb = p.dbias_shape[0], hb = p.dbias_shape[1], qb = p.dbias_shape[2];
    const int lane = int(threadIdx.x) % kElements, slice = int(threadIdx.x) / kElements;
    const int64_t e = int64_t(blockIdx.x) * kElements + lane;
    const bool real = e < bb * hb * qb * nk;
    int64_t j = 0, io = 0, ho = 0, bo = 0;
    double sum = 0.0;
    if (real) {
        j = e % nk, io = e / nk % qb, ho = e / (nk * qb) % hb, bo = e / (nk * qb * hb);
        // the summed ranges: a dim of size 1 stands for all of its indices
        const int64_t b_lo = bb == 1 ? 0 : bo, nb = bb == 1 ? f.batch : 1;
        const int64_t h_lo = hb == 1 ? 0 : ho, nh = hb == 1 ? f.heads_q : 1;
        const int64_t g_lo = p.dbias_group_rows == 1 ? io : 0, ng = p.dbias_group_rows == 1 ? 1 : p.dbias_groups;
        for (int64_t t = slice; t < nb * nh * ng; t += kSlices) {  // term t = (b, h, g), g fastest
            const int64_t g = g_lo + t % ng, h = h_lo + t / ng % nh, b = b_lo + t / (ng * nh);
            sum += p.dbias_partial[((b * f.heads_q + h) * p.dbias_groups + g) * nk + j];
        }
    }
    slice_sums[slice * kElements + lane] = sum;
    __syncthreads();
    if (slice == 0 && real) {
        double total = 0.0;
        for (int s = 0; s < kSlices; ++s) total += slice_sums[s * kElements + lane];
        store_dbias(f.ext, bo, ho, io, j, float(total));
    }
}

}  // namespace

cudaError_t launch_bwd_dbias_reduce(const BwdParams& p, cudaStream_t stream) {
    const int64_t elements = p.dbias_shape[0] * p.dbias_shape[1] * p.dbias_shape[2] * p.f.seq_k;
    const dim3 grid(unsigned((elements + kElements - 1) / kElements));
    FSIG_LAUNCH(dbias_reduce_kernel, grid, dim3(kElements * kSlices), kSlices * kElements * sizeof(double), stream, p);
    return cudaGetLastError();
}

}  // namespace fsig::cuda
