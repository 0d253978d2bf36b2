// A broadcast dBias's second step (BwdParams::dbias_partial): dbias[bo, ho, io, j] = the fp32 partial sums
// [B, Hq, G, Nk] that the dQ kernel wrote, added over every batch, head and row group the element stands
// for, in one fixed order (deterministic), in double, then rounded to the bias's dtype. One thread per dbias
// element, keys fastest: reads of the partial sums and writes of a contiguous dbias are coalesced.
#include "bwd_launch.h"
#include "bwd_params.h"
#include "launch.h"

namespace fsig::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) dbias_reduce_kernel(const __grid_constant__ BwdParams p) {
    const FwdParams& f = p.f;
    const int64_t nk = f.seq_k, bb = p.dbias_shape[0], hb = p.dbias_shape[1], qb = p.dbias_shape[2];
    const int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x;
    if (e >= bb * hb * qb * nk) return;
    const int64_t j = e % nk, io = e / nk % qb, ho = e / (nk * qb) % hb, bo = e / (nk * qb * hb);
    // the summed ranges: a dim of size 1 stands for all of its indices
    const int64_t b_lo = bb == 1 ? 0 : bo, b_hi = bb == 1 ? f.batch : bo + 1;
    const int64_t h_lo = hb == 1 ? 0 : ho, h_hi = hb == 1 ? f.heads_q : ho + 1;
    const int64_t g_lo = p.dbias_group_rows == 1 ? io : 0, g_hi = p.dbias_group_rows == 1 ? io + 1 : p.dbias_groups;
    double sum = 0.0;
    for (int64_t b = b_lo; b < b_hi; ++b)
        for (int64_t h = h_lo; h < h_hi; ++h) {
            const float* groups = p.dbias_partial + ((b * f.heads_q + h) * p.dbias_groups) * nk + j;
            for (int64_t g = g_lo; g < g_hi; ++g) sum += groups[g * nk];
        }
    store_dbias(f.ext, bo, ho, io, j, float(sum));
}

}  // namespace

cudaError_t launch_bwd_dbias_reduce(const BwdParams& p, cudaStream_t stream) {
    const int64_t elements = p.dbias_shape[0] * p.dbias_shape[1] * p.dbias_shape[2] * p.f.seq_k;
    const dim3 grid(unsigned((elements + kThreads - 1) / kThreads));
    FSIG_LAUNCH(dbias_reduce_kernel, grid, dim3(kThreads), 0, stream, p);
    return cudaGetLastError();
}

}  // namespace fsig::cuda
