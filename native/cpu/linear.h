// Linear attention on the CPU (cosFormer and elu+1 linear attention, DESIGN.md §4): the interface
// between the dispatcher (cpu_backend.cpp) and the per-ISA kernels (linear.inc, compiled twice).
//
// Notation. Feature rows qf_i = φ(q_i)·[sin θ_i, cos θ_i] (cosFormer, θ = π p / 2M) or φ(q_i) (elu+1),
// padded to F floats: cosFormer keeps the sin half in [0, dp) and the cos half in [dp, 2dp), dp = d
// rounded up to 16 floats. The "augmented" value row va_j = [v_j, 1, 0…] (dv floats) makes the
// normaliser one more column of every product: Σ_j (qf_i·kf_j) va_j = [num_i, den_i].
// Backward rows ga_i = [dO_i / n_i, −r_i, 0…] with n_i = max(den_i, ε) and r_i = [den_i > ε]·(dO_i·O_i)/n_i.
//
// Every pass is the same sweep: rows X against columns Y with an allowed relation (all, or causal
// j ≤ δ_i), a state Σ_cols yf ⊗ b over the columns before the current chunk, and an exact quadratic
// part inside the chunk. Positions are split into segments of whole chunks; the state at the start
// of each segment comes from per-segment partial sums added in a fixed order, so results never
// depend on the thread count.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../internal.h"

namespace fsig::cpu {

// Resolved options of a linear-attention call (api.cpp resolves the defaults).
struct LinearOptions {
    int64_t length = 0;   // cosFormer's M (>= max(Nq, Nk))
    float epsilon = 1e-6f;
};

// Chunk of positions of the intra-chunk quadratic part (and rows per non-causal task unit).
constexpr int64_t kLinearChunk = 64;

struct LinearGeom {
    int64_t d = 0, dp = 0, F = 0, dv = 0;  // head dim, padded half, feature width, augmented value width
    int64_t C = kLinearChunk;
    int64_t seg_len = 0;   // positions per segment (a multiple of C)
    int64_t nseg = 0;      // segments of the position space of the state pass
    int64_t state_floats = 0;  // F * dv
    bool cosformer = false, causal = false;
    double length = 1;     // M
    float epsilon = 1e-6f;
};

// One call: the tensors, the geometry and the buffers shared by the tasks.
struct LinearCall {
    const Problem* p = nullptr;
    LinearGeom g;
    TensorView q, k, v, out, dout, dq, dk, dv;
    float* states = nullptr;    // [B][Hk][nseg + 1][F * dv]: per-segment sums, then their prefix / total
    float* rowstats = nullptr;  // backward: [B][Hq][Nq][2] = (n_i, r_i) from the dQ pass
};

struct LinearTable {
    // floats of per-worker scratch
    size_t (*scratch_floats)(const LinearGeom& g);
    // state pass, one (batch, kv head, segment): Σ kf_j ⊗ va_j over the keys of the segment (keys = true)
    // or Σ qf_i ⊗ ga_i over the query rows of the segment and of every head of the group (keys = false)
    void (*segment_state)(const LinearCall& c, bool keys, int64_t b, int64_t hk, int64_t seg, float* dst,
                          float* scratch);
    // forward (dq = false) or dQ pass (dq = true, also writes rowstats). Non-causal: one (batch, query
    // head, tile of C·4 query rows). Causal: one (batch, kv head, segment) for query heads [h_begin, h_end)
    // of the group, chunk by chunk, so the chunk's key features and the state are computed once for them.
    void (*query_tile_task)(const LinearCall& c, bool dq, int64_t b, int64_t h, int64_t tile, float* scratch);
    void (*query_scan_task)(const LinearCall& c, bool dq, int64_t b, int64_t hk, int64_t seg, int64_t h_begin,
                            int64_t h_end, float* scratch);
    // dK, dV pass, one (batch, kv head, unit): unit = segment (causal) or tile of C·4 key rows
    void (*key_task)(const LinearCall& c, int64_t b, int64_t hk, int64_t unit, float* scratch);
};

constexpr int64_t kLinearTileChunks = 4;  // non-causal task unit: 4 chunks of rows

#if defined(__x86_64__)
const LinearTable& linear_avx2();
const LinearTable& linear_avx512();
#elif defined(__aarch64__)
const LinearTable& linear_neon();
#endif

// Entry points used by api.cpp for FSIG_SCORE_COSFORMER and FSIG_SCORE_LINEAR_ELU.
int linear_forward(const ForwardArgs& a, const LinearOptions& o);
int linear_backward(const BackwardArgs& a, const LinearOptions& o);

}  // namespace fsig::cpu
