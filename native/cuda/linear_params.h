// Parameters of the CUDA linear-attention kernels (cosFormer and elu+1, DESIGN.md §4): plain C++, shared
// by the kernels (linear_kernel.h), their host side (linear_runtime.cu), the C ABI layer's workspace size
// (native/api.cpp) and the CPU emulation test (tests/gpu/test_linear_emulation.cpp).
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

// How a kernel with several segments per (slice, head, batch) gets the state before a segment's chunks:
//   kRecompute (no workspace): each segment scans the chunks before its own as state updates, in the order
//     of one scan from chunk 0, so the bits do not depend on the segment count; costs (nseg + 2)/3 of the
//     minimal work without causal, ≈ ((nseg + 1)/2 + 3.3)/4.3 with (benchmarks/NOTES.md);
//   kPartial then kCombine (a workspace): one launch writes each segment's own state sum (fp32) into the
//     workspace, the next starts each segment from the sum of the partials before it (non-causal: of all),
//     added in segment order — deterministic, and at most one extra update pass: 1 + (nseg − 1)/(4.3 nseg)
//     of the minimum causal, 1 without; the bits then depend on the segment count (within DESIGN §6).
enum Phase : int { kRecompute = 0, kPartial = 1, kCombine = 2 };

// choose_segments aims at this many thread blocks per launch (2 per SM of an H100) and uses several
// segments only where fewer blocks would run: so a launch with nseg > 1 has base < kTargetBlocks blocks per
// segment and at most ceil(kTargetBlocks / base) · base ≤ 2 kTargetBlocks − 2 blocks in all.
constexpr int64_t kTargetBlocks = 264;
constexpr int64_t kMaxSegmentedBlocks = 2 * kTargetBlocks - 2;

// fp32 values of one block's partial state: S (K × 32, in the registers' fragment order), z (K), w (32).
constexpr int64_t partial_floats(int64_t k) { return 33 * k + 32; }

// The widest head dim of the linear kernels (linear_kernels.cuh instantiates 64 and 128).
constexpr int64_t kMaxHeadDim = 128;

// Bytes of the workspace that lets every kernel of a linear-attention call (forward or backward) use the
// kPartial/kCombine scan: the largest K is the feature width (2d cosFormer, d elu+1). A function of the
// head dim and the map alone (≤ 17.8 MB, at d = 128 cosFormer), so that q's shape need not be known. A
// wider head dim counts as kMaxHeadDim: the call refuses it by its head dim, not by its workspace.
constexpr int64_t linear_workspace_bytes(int64_t head_dim, bool cosformer) {
    const int64_t d = head_dim < kMaxHeadDim ? head_dim : kMaxHeadDim;
    return kMaxSegmentedBlocks * partial_floats(cosformer ? 2 * d : d) * 4;
}

struct LinParams {
    LinTensor q, k, v, dout, out, dq, dk, dv;
    int32_t batch = 0, seq_q = 0, seq_k = 0, heads_q = 0, heads_k = 0, group = 1;
    int32_t causal = 0;
    int32_t nseg = 1;      // segments of chunks per (slice, head, batch): thread blocks along the sequence
    int32_t phase = kRecompute;
    float* partials = nullptr;  // the workspace (16-byte aligned), or NULL: kRecompute
    double angle = 0;      // cosFormer: θ = π · angle · position, angle = 1 / (2M)
    float epsilon = 1e-6f;
};

}  // namespace fsig::cuda::lin
