// The SIMT emulator's own checks: its tensor-core and ldmatrix replay against a plain product (layouts
// restated from the PTX ISA once more, independently of cuda_emu.cpp and native/cuda/fragment.h), the
// cp.async landing rule, stream capture, and that each of its detectors fires — a deadlock, divergent warp
// collectives, out-of-range or misaligned shared and global accesses, shared memory written past the
// launch's size, a write past the end of device memory (guard page), a big launch without its attribute;
// and sm_90a's wgmma (FSIG_EMU_SM=90): ss and rs_tb products against fp64, that an operation executes at
// its wait (accumulators poisoned until then, operands read then), and its detectors.
// A detector fires by failing the launch, which (as on a GPU) poisons the context: those scenarios run
// in a forked child each. Built with cuda_emu.h force-included, like libflashsig_emu's units.
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "harness.h"

namespace fsig::cuda {
extern unsigned char smem_raw[];
}
using fsig::cuda::smem_raw;

namespace {

template <class Kernel, class... Args>
cudaError_t run(Kernel kernel, unsigned threads, size_t smem, Args... args) {
    fsig::emu::launch(kernel, dim3(1), dim3(threads), smem, nullptr, args...);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    return cudaDeviceSynchronize();
}

uint16_t to_half(float x) {
    const __half h = __float2half_rn(x);
    uint16_t u;
    std::memcpy(&u, &h, 2);
    return u;
}

// ---- tensor cores: D = A B + C, fragments per the PTX ISA (g = lane / 4, t = lane % 4) ----
uint16_t to_bf16(float x) {
    const __nv_bfloat16 h = __float2bfloat16_rn(x);
    uint16_t u;
    std::memcpy(&u, &h, 2);
    return u;
}

struct MmaArgs {
    const float *a, *b, *c;  // A 16x16, B 16x8 (k x n), C 16x8, row-major
    float* d;
    bool bf16;
};
void mma_kernel(MmaArgs p) {
    const int lane = int(threadIdx.x), g = lane / 4, t = lane % 4;
    auto bits = [&](float x) { return uint32_t(p.bf16 ? to_bf16(x) : to_half(x)); };
    auto pack = [&](float lo, float hi) { return bits(lo) | bits(hi) << 16; };
    const uint32_t a[4] = {pack(p.a[g * 16 + 2 * t], p.a[g * 16 + 2 * t + 1]),
                           pack(p.a[(g + 8) * 16 + 2 * t], p.a[(g + 8) * 16 + 2 * t + 1]),
                           pack(p.a[g * 16 + 2 * t + 8], p.a[g * 16 + 2 * t + 9]),
                           pack(p.a[(g + 8) * 16 + 2 * t + 8], p.a[(g + 8) * 16 + 2 * t + 9])};
    const uint32_t b0 = pack(p.b[(2 * t) * 8 + g], p.b[(2 * t + 1) * 8 + g]);
    const uint32_t b1 = pack(p.b[(2 * t + 8) * 8 + g], p.b[(2 * t + 9) * 8 + g]);
    float d[4] = {p.c[g * 8 + 2 * t], p.c[g * 8 + 2 * t + 1], p.c[(g + 8) * 8 + 2 * t], p.c[(g + 8) * 8 + 2 * t + 1]};
    if (p.bf16) fsig::cuda::Mma<__nv_bfloat16>::run(d, a, b0, b1);
    else fsig::cuda::Mma<__half>::run(d, a, b0, b1);
    p.d[g * 8 + 2 * t] = d[0], p.d[g * 8 + 2 * t + 1] = d[1];
    p.d[(g + 8) * 8 + 2 * t] = d[2], p.d[(g + 8) * 8 + 2 * t + 1] = d[3];
}

void check_mma() {
    float *a, *b, *c, *d;
    cudaMalloc(reinterpret_cast<void**>(&a), 256 * 4);
    cudaMalloc(reinterpret_cast<void**>(&b), 128 * 4);
    cudaMalloc(reinterpret_cast<void**>(&c), 128 * 4);
    cudaMalloc(reinterpret_cast<void**>(&d), 128 * 4);
    for (int i = 0; i < 256; ++i) a[i] = float((i * 7) % 11 - 5);
    for (int i = 0; i < 128; ++i) b[i] = float((i * 5) % 9 - 4), c[i] = float(i % 3);
    for (bool bf16 : {false, true}) {
        const uint64_t flops_before = fsig::emu::work_counters().tensor_flops;
        EXPECT(run(mma_kernel, 32, 0, MmaArgs{a, b, c, d, bf16}) == cudaSuccess, "mma launch");
        EXPECT(fsig::emu::work_counters().tensor_flops - flops_before == 2 * 16 * 8 * 16,
               "one mma.sync m16n8k16 counted as %llu tensor FLOPs, not 4096",
               (unsigned long long)(fsig::emu::work_counters().tensor_flops - flops_before));
        for (int r = 0; r < 16; ++r)
            for (int n = 0; n < 8; ++n) {
                float want = c[r * 8 + n];
                for (int k = 0; k < 16; ++k) want += a[r * 16 + k] * b[k * 8 + n];
                EXPECT(d[r * 8 + n] == want, "mma (%s) D[%d][%d] = %g, want %g", bf16 ? "bf16" : "f16", r, n,
                      d[r * 8 + n], want);
            }
    }
    cudaFree(a), cudaFree(b), cudaFree(c), cudaFree(d);
}

// ---- ldmatrix.x4: lanes 8m..8m+7 address rows of matrix m; lane l gets (row l/4, cols 2(l%4)..+1) ----
struct LdsmArgs {
    uint32_t* out;  // [lane][4] plain, then [lane][4] .trans
};
void ldsm_kernel(LdsmArgs p) {
    const int lane = int(threadIdx.x);
    auto* tile = reinterpret_cast<uint16_t*>(smem_raw);  // 4 matrices of 8x8, matrix m at rows 8m.., value 100m + 10r + c
    for (int i = lane; i < 256; i += 32) tile[i] = uint16_t(100 * (i / 64) + 10 * (i / 8 % 8) + i % 8);
    __syncwarp();
    const uint32_t row_addr = uint32_t(__cvta_generic_to_shared(tile + (lane / 8) * 64 + (lane % 8) * 8));
    uint32_t r[4];
    fsig::cuda::ldsm_x4(r, row_addr);
    for (int m = 0; m < 4; ++m) p.out[lane * 4 + m] = r[m];
    fsig::cuda::ldsm_x4_trans(r, row_addr);
    for (int m = 0; m < 4; ++m) p.out[128 + lane * 4 + m] = r[m];
}

void check_ldmatrix() {
    uint32_t* out;
    cudaMalloc(reinterpret_cast<void**>(&out), 256 * 4);
    EXPECT(run(ldsm_kernel, 32, 512, LdsmArgs{out}) == cudaSuccess, "ldmatrix launch");
    auto value = [](int m, int row, int col) { return uint32_t(100 * m + 10 * row + col); };
    for (int l = 0; l < 32; ++l)
        for (int m = 0; m < 4; ++m) {
            const uint32_t plain = value(m, l / 4, 2 * (l % 4)) | value(m, l / 4, 2 * (l % 4) + 1) << 16;
            const uint32_t trans = value(m, 2 * (l % 4), l / 4) | value(m, 2 * (l % 4) + 1, l / 4) << 16;
            EXPECT(out[l * 4 + m] == plain, "ldmatrix lane %d reg %d: %#x, want %#x", l, m, out[l * 4 + m], plain);
            EXPECT(out[128 + l * 4 + m] == trans, "ldmatrix.trans lane %d reg %d: %#x, want %#x", l, m,
                  out[128 + l * 4 + m], trans);
        }
    cudaFree(out);
}

// ---- ldmatrix's shared-memory wavefronts (emu_counters.h): one per 8 × 8 matrix whose 8 rows lie in distinct
// bank quads (16-byte address / 16 mod 8), one more per further distinct row in the fullest quad ----
struct StrideArgs {
    uint32_t row_stride;  // bytes between the rows of a matrix (0: all 8 rows at one address, a broadcast)
};
void ldsm_stride_kernel(StrideArgs p) {
    const int lane = int(threadIdx.x);
    uint32_t r[4];
    fsig::cuda::ldsm_x4(r, uint32_t((lane / 8) * 2048 + (lane % 8) * p.row_stride));
}

void check_ldmatrix_wavefronts() {
    // row stride -> wavefronts of one .x4: 16 B (8 quads), 64 B (2 quads, 4 rows each), 128 B (one quad), 0
    const uint32_t strides[] = {16, 64, 128, 0, 144};
    const uint64_t expected[] = {4, 16, 32, 4, 4};
    for (int i = 0; i < 5; ++i) {
        const fsig::emu::WorkCounters before = fsig::emu::work_counters();
        EXPECT(run(ldsm_stride_kernel, 32, 8192, StrideArgs{strides[i]}) == cudaSuccess, "ldmatrix stride launch");
        const fsig::emu::WorkCounters after = fsig::emu::work_counters();
        EXPECT(after.ldmatrix_ops - before.ldmatrix_ops == 1, "one ldmatrix counted as %llu",
               (unsigned long long)(after.ldmatrix_ops - before.ldmatrix_ops));
        EXPECT(after.ldmatrix_wavefronts - before.ldmatrix_wavefronts == expected[i],
               "ldmatrix with rows %u bytes apart: %llu wavefronts, want %llu", strides[i],
               (unsigned long long)(after.ldmatrix_wavefronts - before.ldmatrix_wavefronts),
               (unsigned long long)expected[i]);
    }
}

// ---- cp.async: with FSIG_EMU_SEED=0 a copy lands at the wait, so a read before it sees the poison ----
struct CopyArgs {
    const uint32_t* src;
    uint32_t* out;  // [0]: read before the wait, [1]: after; [2]: a copy waited for but never committed;
                    // [3], [4]: the older and the newer of two groups after wait_group 1; [5]: the newer after 0
};
void copy_kernel(CopyArgs p) {
    if (threadIdx.x != 0) return;
    const uint32_t* words = reinterpret_cast<const uint32_t*>(smem_raw);
    fsig::cuda::cp_async_16(0, p.src, 16);
    fsig::cuda::cp_async_commit();
    p.out[0] = words[0];
    fsig::cuda::cp_async_wait_all();
    p.out[1] = words[0];
    fsig::cuda::cp_async_16(16, p.src, 16);  // no commit: wait_group 0 does not wait for it
    fsig::cuda::cp_async_wait_all();
    p.out[2] = words[4];
    fsig::cuda::cp_async_commit();  // (the copy above, now in its own group)
    fsig::cuda::cp_async_16(32, p.src, 16);
    fsig::cuda::cp_async_commit();
    fsig::cuda::cp_async_wait<1>();  // every group but the newest
    p.out[3] = words[4], p.out[4] = words[8];
    fsig::cuda::cp_async_wait<0>();
    p.out[5] = words[8];
}

void check_cp_async_late() {
    uint32_t *src, *out;
    cudaMalloc(reinterpret_cast<void**>(&src), 16);
    cudaMalloc(reinterpret_cast<void**>(&out), 24);
    src[0] = 0x12345678u;
    EXPECT(run(copy_kernel, 32, 64, CopyArgs{src, out}) == cudaSuccess, "cp.async launch");
    EXPECT(out[0] == 0xFFFFFFFFu, "before the wait shared memory holds the poison, not %#x", out[0]);
    EXPECT(out[1] == 0x12345678u, "after the wait the copy has landed (%#x)", out[1]);
    EXPECT(out[2] == 0xFFFFFFFFu, "an uncommitted copy landed at the wait (%#x)", out[2]);
    EXPECT(out[3] == 0x12345678u, "wait_group 1: the older group has not landed (%#x)", out[3]);
    EXPECT(out[4] == 0xFFFFFFFFu, "wait_group 1: the newest group landed (%#x)", out[4]);
    EXPECT(out[5] == 0x12345678u, "wait_group 0 after 1: the newest group has not landed (%#x)", out[5]);
    cudaFree(src), cudaFree(out);
}

// ---- stream capture: recorded, not run, until the graph is launched ----
struct AddArgs {
    float* x;
};
void add_kernel(AddArgs p) { atomicAdd(p.x, 1.f); }

void check_capture() {
    float* x;
    cudaMalloc(reinterpret_cast<void**>(&x), 4);
    *x = 0.f;
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess, "begin capture");
    fsig::emu::launch(add_kernel, dim3(2), dim3(64), 0, s, AddArgs{x});
    EXPECT(*x == 0.f, "a captured launch ran at capture time");
    cudaGraph_t g;
    EXPECT(cudaStreamEndCapture(s, &g) == cudaSuccess, "end capture");
    cudaGraphExec_t exec;
    EXPECT(cudaGraphInstantiate(&exec, g, 0) == cudaSuccess, "instantiate");
    EXPECT(cudaGraphLaunch(exec, s) == cudaSuccess && cudaStreamSynchronize(s) == cudaSuccess, "graph launch");
    EXPECT(cudaGraphLaunch(exec, s) == cudaSuccess && cudaStreamSynchronize(s) == cudaSuccess, "graph launch");
    EXPECT(*x == 256.f, "two replays of 2 x 64 threads add 256, not %g", *x);
    // a synchronous copy during a global capture is refused and invalidates it
    EXPECT(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess, "begin capture");
    float y = 0.f;
    EXPECT(cudaMemcpy(&y, x, 4, cudaMemcpyDeviceToHost) != cudaSuccess, "cudaMemcpy during a capture");
    cudaGraph_t g2;
    EXPECT(cudaStreamEndCapture(s, &g2) == cudaErrorStreamCaptureInvalidated, "the capture is invalidated");
    cudaGetLastError();
    cudaGraphExecDestroy(exec), cudaGraphDestroy(g), cudaStreamDestroy(s), cudaFree(x);
}

// ---- detectors: each scenario must fail its launch (or fault), in a child process ----
struct NoArgs {
    int unused;
};
void divergent_kernel(NoArgs) {
    if (threadIdx.x % 32 < 16) (void)__shfl_xor_sync(0xffffffffu, 1.f, 1);
    else __syncwarp();
}
void divergent_site_kernel(NoArgs) {  // the same collective at two call sites
    if (threadIdx.x % 32 < 16) (void)__shfl_xor_sync(0xffffffffu, 1.f, 1);
    else (void)__shfl_xor_sync(0xffffffffu, 2.f, 2);
}
void deadlock_kernel(NoArgs) {
    if (threadIdx.x == 0) __syncthreads();
    else __syncwarp();
}
void smem_overrun_kernel(NoArgs) {
    if (threadIdx.x == 0) smem_raw[1024] = 1;  // the launch asks for 1024 bytes
}
void ldsm_misaligned_kernel(NoArgs) {
    uint32_t r[4];
    fsig::cuda::ldsm_x4(r, 8);
}
void ldsm_outside_kernel(NoArgs) {
    uint32_t r[4];
    fsig::cuda::ldsm_x4(r, 1024);  // past the launch's 1024 bytes
}
struct PtrArgs {
    const void* p;
};
void cp_async_wild_kernel(PtrArgs a) {
    fsig::cuda::cp_async_16(16 * threadIdx.x, a.p, 16);
    fsig::cuda::cp_async_wait_all();
}
void global_overrun_kernel(PtrArgs a) {
    if (threadIdx.x == 0) const_cast<unsigned char*>(static_cast<const unsigned char*>(a.p))[4096] = 1;
}

// runs fn in a child: true when it failed (non-zero exit or a signal)
bool child_fails(const std::function<cudaError_t()>& fn) {
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
        const cudaError_t e = fn();
        std::_Exit(e == cudaSuccess ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

void check_detectors() {
    EXPECT(child_fails([] { return run(divergent_kernel, 64, 0, NoArgs{}); }), "divergent collectives not reported");
    EXPECT(child_fails([] { return run(divergent_site_kernel, 64, 0, NoArgs{}); }),
          "one collective at two call sites not reported");
    EXPECT(child_fails([] { return run(deadlock_kernel, 64, 0, NoArgs{}); }), "deadlock not reported");
    EXPECT(child_fails([] { return run(smem_overrun_kernel, 32, 1024, NoArgs{}); }),
          "shared memory written past the launch's size not reported");
    EXPECT(child_fails([] { return run(ldsm_misaligned_kernel, 32, 1024, NoArgs{}); }), "misaligned ldmatrix not reported");
    EXPECT(child_fails([] { return run(ldsm_outside_kernel, 32, 1024, NoArgs{}); }), "ldmatrix past shared memory not reported");
    static std::vector<unsigned char> host(64);
    EXPECT(child_fails([] { return run(cp_async_wild_kernel, 4, 64, PtrArgs{host.data()}); }),
          "cp.async from memory outside every allocation not reported");
    EXPECT(child_fails([] {
              void* p;
              cudaMalloc(&p, 4096);
              return run(global_overrun_kernel, 32, 0, PtrArgs{p});
          }),
          "a write past the end of device memory did not fault");
    // and the same launches done right succeed
    EXPECT(!child_fails([] {
              void* p;
              cudaMalloc(&p, 64);
              return run(cp_async_wild_kernel, 4, 64, PtrArgs{p});
          }),
          "cp.async from device memory failed");
    EXPECT(!child_fails([] { return run(smem_overrun_kernel, 32, 1025, NoArgs{}); }), "in-range shared store failed");
    // above 48 KiB of dynamic shared memory a launch needs the function's attribute
    EXPECT(run(smem_overrun_kernel, 32, 64 * 1024, NoArgs{}) != cudaSuccess, "64 KiB launch without the attribute ran");
    cudaGetLastError();
    EXPECT(cudaFuncSetAttribute(smem_overrun_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) ==
              cudaSuccess, "set the attribute");
    EXPECT(run(smem_overrun_kernel, 32, 64 * 1024, NoArgs{}) == cudaSuccess, "64 KiB launch with the attribute");
}


// ---- wgmma (sm_90a): random A, B tiles in the 128-byte-swizzle canonical layouts, restated from the PTX
// ISA (9.7.15.5.1.2): K-major, row r of M or N at (r / 8) 1024 + (r % 8) 128 with K contiguous in it;
// MN-major, K row k at (k / 8) 1024 + (k % 8) 128 with 64 M|N elements contiguous in it and the next 64
// at + LBO; then byte-address bits [4,7) ^= bits [7,10). A k16 step moves a K-major start by 32 bytes, an
// MN-major one by two 8-row groups (2 SBO). Fragments: thread t, w = t / 32, g = t % 32 / 4, q = t % 4 —
// A register j holds row 16w + g + 8(j % 2), columns 2q + 8(j / 2) and +1; d_i is row 16w + g + 8((i / 2) % 2),
// column 8(i / 4) + 2q + i % 2. ----
constexpr uint32_t kTileA = 0, kTileB = 8192;  // A: 64 rows of 128 bytes; B after it, 1024-aligned

uint32_t swizzle128(uint32_t a) { return a ^ (((a >> 7) & 7) << 4); }
uint32_t k_major(uint32_t base, int row, int k) {
    return swizzle128(base + uint32_t(row / 8 * 1024 + row % 8 * 128 + 2 * k));
}
uint32_t mn_major(uint32_t base, int k, int col, uint32_t lbo) {
    return swizzle128(base + uint32_t(col / 64) * lbo + uint32_t(k / 8 * 1024 + k % 8 * 128 + 2 * (col % 64)));
}
uint64_t sw128_desc(uint32_t start, uint32_t lbo, uint32_t sbo) {
    return uint64_t((start >> 4) & 0x3FFF) | uint64_t((lbo >> 4) & 0x3FFF) << 16 | uint64_t((sbo >> 4) & 0x3FFF) << 32 |
           1ull << 62;
}

// where thread t's d_i lies in the row-major 64 x n D
int d_at(int t, int i, int n) {
    const int w = t / 32, g = t % 32 / 4, q = t % 4;
    return (16 * w + g + 8 * (i / 2 % 2)) * n + 8 * (i / 4) + 2 * q + i % 2;
}

enum WgVariant {
    kWgPlain, kWgReadEarly, kWgWriteEarly, kWgNoWait, kWgNoCommit, kWgOverwriteFenced, kWgOverwriteUnfenced,
    kWgNoProxyFence, kWgStoresNoProxyFence, kWgDiverge, kWgDescDiffers, kWgNoFence, kWgWriteAccNoFence,
    kWgLayoutNone, kWgBaseOffset, kWgStartRow1, kWgPastEnd, kWgARegsReused
};
struct WgArgs {
    const uint16_t *a, *b;  // A 64 x K, B as N x K (B^T), row-major, 16-bit patterns
    const float* c;         // 64 x N
    float* d;               // 64 x N
    int k;                  // 32 or 64
    bool rs, zero_init;     // rs: A from registers, B N-major (rs_tb); else ss, both K-major
    int variant;
};

template <class Elem, int N>
void wgmma_kernel(WgArgs p) {
    using fsig::cuda::Wgmma;
    const int t = int(threadIdx.x) % 128, w = t / 32, g = t % 32 / 4, q = t % 4, K = p.k;
    const uint32_t lbo_b = uint32_t(K) * 128;  // MN-major B: the next 64 columns after all K rows of these
    // A K-major through cp.async, 8 K elements (16 bytes) per copy; B with plain stores
    for (int c = t; c < 64 * K / 8; c += 128) {
        const int r = c / (K / 8), k = c % (K / 8) * 8;
        if (p.variant == kWgStoresNoProxyFence) std::memcpy(smem_raw + k_major(kTileA, r, k), p.a + r * K + k, 16);
        else fsig::cuda::cp_async_16(k_major(kTileA, r, k), p.a + r * K + k, 16);
    }
    fsig::cuda::cp_async_commit();
    for (int e = t; e < N * K; e += 128) {
        const int n = e / K, k = e % K;
        std::memcpy(smem_raw + (p.rs ? mn_major(kTileB, k, n, lbo_b) : k_major(kTileB, n, k)), p.b + e, 2);
    }
    fsig::cuda::cp_async_wait_all();
    if (p.variant != kWgNoProxyFence && p.variant != kWgStoresNoProxyFence) fsig::cuda::fence_proxy_async();
    __syncthreads();
    if (p.variant == kWgNoProxyFence) {  // a fence, but not by the threads whose cp.async wrote the data
        if (t == 0) fsig::cuda::fence_proxy_async();
        __syncthreads();
    }
    float d[N / 8][4];
    for (int i = 0; i < N / 2; ++i) d[i / 4][i % 4] = p.c[d_at(t, i, N)];
    if (p.variant != kWgNoFence) fsig::cuda::wgmma_fence();
    uint32_t a_frag[4][4];  // rs: A of each k16 step (K <= 64)
    for (int s = 0; s < K / 16; ++s) {
        const bool acc = s > 0 || !p.zero_init;
        if (p.variant == kWgWriteAccNoFence && s == 1) {  // a batch waited for, then the registers changed
            fsig::cuda::wgmma_commit();
            fsig::cuda::wgmma_wait<0>();
            d[0][0] += 1.f;
        }
        if (p.rs) {
            // each step's fragment in registers of its own until the wait (kWgARegsReused: one set for all
            // steps, rewritten while the earlier steps are in flight)
            uint32_t(&a)[4] = a_frag[p.variant == kWgARegsReused ? 0 : s];
            for (int j = 0; j < 4; ++j) {
                const int row = 16 * w + g + 8 * (j % 2), col = 16 * s + 2 * q + 8 * (j / 2);
                a[j] = uint32_t(p.a[row * K + col]) | uint32_t(p.a[row * K + col + 1]) << 16;
            }
            Wgmma<Elem, N>::rs_tb(d, a, sw128_desc(kTileB + uint32_t(s) * 2048, lbo_b, 1024), acc);
            continue;
        }
        uint64_t desc_a = sw128_desc(kTileA + uint32_t(s) * 32, 16, 1024);
        uint64_t desc_b = sw128_desc(kTileB + uint32_t(s) * 32, 16, 1024);
        if (p.variant == kWgLayoutNone) desc_b &= ~(3ull << 62);
        if (p.variant == kWgBaseOffset) desc_b |= 1ull << 49;
        if (p.variant == kWgStartRow1) desc_b += 128 >> 4;
        if (p.variant == kWgPastEnd) desc_b += 24576 >> 4;
        if (p.variant == kWgDescDiffers && w == 3) desc_b += 32 >> 4;
        if (p.variant == kWgDiverge && w == 3) Wgmma<Elem, N>::ss(d, desc_a, desc_b, acc);  // another call site
        else Wgmma<Elem, N>::ss(d, desc_a, desc_b, acc);
    }
    if (p.variant != kWgNoCommit) fsig::cuda::wgmma_commit();
    if (p.variant == kWgReadEarly)
        for (int i = 0; i < N / 2; ++i) p.d[d_at(t, i, N)] = d[i / 4][i % 4];
    if (p.variant == kWgWriteEarly) d[0][1] = 0.f;
    if (p.variant == kWgOverwriteFenced || p.variant == kWgOverwriteUnfenced) {  // A's tile reused too early
        for (int b = t; b < 64 * 128; b += 128) smem_raw[kTileA + uint32_t(b)] = 0;
        if (p.variant == kWgOverwriteFenced) fsig::cuda::fence_proxy_async();
        __syncthreads();
    }
    if (p.variant != kWgNoWait) fsig::cuda::wgmma_wait<0>();
    if (p.variant == kWgReadEarly) return;
    for (int i = 0; i < N / 2; ++i) p.d[d_at(t, i, N)] = d[i / 4][i % 4];
}

struct WgmmaCase {
    std::vector<uint16_t> a, b;
    std::vector<float> af, bf, c;
    float *dev_c, *dev_d;
    uint16_t *dev_a, *dev_b;
    int n, k;
    bool bf16;
};

WgmmaCase make_wgmma_case(int n, int k, bool bf16, unsigned seed) {
    WgmmaCase w{};
    w.n = n, w.k = k, w.bf16 = bf16;
    std::srand(seed);
    auto small = [] { return float(std::rand() % 7 - 3); };  // exact in f16 and bf16, exact sums
    for (int i = 0; i < 64 * k; ++i) w.af.push_back(small());
    for (int i = 0; i < n * k; ++i) w.bf.push_back(small());
    for (int i = 0; i < 64 * n; ++i) w.c.push_back(float(std::rand() % 17 - 8));
    for (float x : w.af) w.a.push_back(bf16 ? to_bf16(x) : to_half(x));
    for (float x : w.bf) w.b.push_back(bf16 ? to_bf16(x) : to_half(x));
    cudaMalloc(reinterpret_cast<void**>(&w.dev_a), w.a.size() * 2);
    cudaMalloc(reinterpret_cast<void**>(&w.dev_b), w.b.size() * 2);
    cudaMalloc(reinterpret_cast<void**>(&w.dev_c), w.c.size() * 4);
    cudaMalloc(reinterpret_cast<void**>(&w.dev_d), w.c.size() * 4);
    std::memcpy(w.dev_a, w.a.data(), w.a.size() * 2);
    std::memcpy(w.dev_b, w.b.data(), w.b.size() * 2);
    std::memcpy(w.dev_c, w.c.data(), w.c.size() * 4);
    return w;
}

cudaError_t run_wgmma(const WgmmaCase& w, bool rs, bool zero_init, int variant, unsigned threads = 128,
                      size_t smem = 32768) {
    const WgArgs args{w.dev_a, w.dev_b, w.dev_c, w.dev_d, w.k, rs, zero_init, variant};
    if (w.n == 64)
        return w.bf16 ? run(wgmma_kernel<__nv_bfloat16, 64>, threads, smem, args)
                      : run(wgmma_kernel<__half, 64>, threads, smem, args);
    return w.bf16 ? run(wgmma_kernel<__nv_bfloat16, 128>, threads, smem, args)
                  : run(wgmma_kernel<__half, 128>, threads, smem, args);
}

// D = (zero_init ? 0 : C) + A B in fp64, with the A of the case or zero
double wgmma_want(const WgmmaCase& w, int row, int col, bool zero_init, bool a_zero = false) {
    double acc = zero_init ? 0.0 : double(w.c[size_t(row * w.n + col)]);
    if (!a_zero)
        for (int k = 0; k < w.k; ++k) acc += double(w.af[size_t(row * w.k + k)]) * double(w.bf[size_t(col * w.k + k)]);
    return acc;
}

void check_wgmma() {
    setenv("FSIG_EMU_SM", "90", 1);
    for (int n : {64, 128})
        for (int k : {32, 64})
            for (bool bf16 : {false, true})
                for (bool rs : {false, true})
                    for (bool zero_init : {false, true}) {
                        const unsigned seed = unsigned(n + k + bf16 * 7 + rs * 13 + zero_init * 29);
                        WgmmaCase w = make_wgmma_case(n, k, bf16, seed);
                        const uint64_t flops_before = fsig::emu::work_counters().tensor_flops;
                        EXPECT(run_wgmma(w, rs, zero_init, kWgPlain) == cudaSuccess, "wgmma launch");
                        EXPECT(fsig::emu::work_counters().tensor_flops - flops_before == uint64_t(2 * 64 * n * k),
                               "wgmma m64n%dk16 x %d counted as %llu tensor FLOPs", n, k / 16,
                               (unsigned long long)(fsig::emu::work_counters().tensor_flops - flops_before));
                        int bad = 0;
                        for (int r = 0; r < 64; ++r)
                            for (int c = 0; c < n; ++c) {
                                const double want = wgmma_want(w, r, c, zero_init);
                                if (double(w.dev_d[r * n + c]) != want && bad++ < 3)
                                    EXPECT(false, "wgmma %s N=%d K=%d %s%s: D[%d][%d] = %g, want %g",
                                           rs ? "rs_tb" : "ss", n, k, bf16 ? "bf16" : "f16",
                                           zero_init ? " scale-d 0" : "", r, c, double(w.dev_d[r * n + c]), want);
                            }
                    }
    unsetenv("FSIG_EMU_SM");
}

// with FSIG_EMU_SEED=0 every wgmma executes at its wait: what the accumulators and operands then show
void check_wgmma_late() {
    setenv("FSIG_EMU_SM", "90", 1);
    WgmmaCase w = make_wgmma_case(64, 32, false, 3);
    EXPECT(run_wgmma(w, false, false, kWgReadEarly) == cudaSuccess, "wgmma launch");
    bool all_nan = true;
    for (int i = 0; i < 64 * 64; ++i) all_nan = all_nan && std::isnan(w.dev_d[i]);
    EXPECT(all_nan, "accumulators read before the wgmma.wait_group hold the NaN poison");
    EXPECT(run_wgmma(w, false, false, kWgOverwriteFenced) == cudaSuccess, "wgmma launch");
    int changed = 0;
    for (int r = 0; r < 64; ++r)
        for (int c = 0; c < 64; ++c) changed += double(w.dev_d[r * 64 + c]) == wgmma_want(w, r, c, false, true);
    EXPECT(changed == 64 * 64, "a wgmma reads its operands when it executes (at the wait): A overwritten with "
           "zeros before the wait gives D = C (%d of %d)", changed, 64 * 64);
    // the device: sm_90 with 227 KiB per block, which launches may use
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    EXPECT(prop.major == 9 && prop.minor == 0 && prop.sharedMemPerBlockOptin == 232448,
           "FSIG_EMU_SM=90: sm_%d%d, %zu bytes", prop.major, prop.minor, prop.sharedMemPerBlockOptin);
    int major = 0, optin = 0;
    EXPECT(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) == cudaSuccess && major == 9 &&
               cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0) == cudaSuccess &&
               optin == 232448, "cudaDeviceGetAttribute on sm_90: major %d, %d bytes", major, optin);
    EXPECT(cudaFuncSetAttribute(smem_overrun_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 232448) ==
               cudaSuccess && run(smem_overrun_kernel, 32, 232448, NoArgs{}) == cudaSuccess,
           "a 227 KiB launch on sm_90");
    unsetenv("FSIG_EMU_SM");
    cudaGetDeviceProperties(&prop, 0);
    EXPECT(prop.major == 8 && prop.sharedMemPerBlockOptin == 163 * 1024, "default: sm_%d%d, %zu bytes", prop.major,
           prop.minor, prop.sharedMemPerBlockOptin);
    EXPECT(run(smem_overrun_kernel, 32, 232448, NoArgs{}) != cudaSuccess, "a 227 KiB launch on sm_80 ran");
    cudaGetLastError();
}

void check_wgmma_detectors() {
    struct Scenario {
        int variant;
        const char* what;
    };
    const Scenario scenarios[] = {
        {kWgWriteEarly, "accumulators written while the wgmma is in flight"},
        {kWgNoWait, "a thread exiting with its wgmma committed, never waited for"},
        {kWgNoCommit, "a thread exiting with its wgmma never committed (the wait has nothing to wait for)"},
        {kWgOverwriteUnfenced, "an operand overwritten (no proxy fence) before the wait"},
        {kWgNoProxyFence, "cp.async data read by wgmma without its writers' fence.proxy.async"},
        {kWgStoresNoProxyFence, "stored data read by wgmma without fence.proxy.async"},
        {kWgDiverge, "a warpgroup at two wgmma call sites"},
        {kWgDescDiffers, "different descriptors in one warpgroup"},
        {kWgNoFence, "wgmma.mma_async without a wgmma.fence before it"},
        {kWgWriteAccNoFence, "accumulators written after a wait, then a wgmma without wgmma.fence"},
        {kWgLayoutNone, "a descriptor without the 128-byte swizzle"},
        {kWgBaseOffset, "a descriptor with a nonzero base offset"},
        {kWgStartRow1, "a SW128 start inside a swizzle pattern"},
        {kWgPastEnd, "a wgmma operand past the launch's shared memory"},
        {kWgARegsReused, "A-fragment registers rewritten while an earlier wgmma reading them is in flight"},
    };
    for (const Scenario& sc : scenarios)
        EXPECT(child_fails([&] {
                  setenv("FSIG_EMU_SM", "90", 1);
                  return run_wgmma(make_wgmma_case(64, 32, true, 5), sc.variant == kWgARegsReused, false, sc.variant);
              }),
              "wgmma detector did not fire: %s", sc.what);
    EXPECT(child_fails([] {
              setenv("FSIG_EMU_SM", "90", 1);
              return run_wgmma(make_wgmma_case(64, 32, true, 5), false, false, kWgPlain, 96);
          }),
          "wgmma in a block that is not whole warpgroups not reported");
    EXPECT(child_fails([] { return run_wgmma(make_wgmma_case(64, 32, true, 5), false, false, kWgStoresNoProxyFence); }),
          "wgmma on the sm_80 device not reported");
    // and the same scenario done right passes in a child too
    EXPECT(!child_fails([] {
              setenv("FSIG_EMU_SM", "90", 1);
              return run_wgmma(make_wgmma_case(64, 32, true, 5), true, false, kWgPlain);
          }),
          "a correct wgmma failed in a child");
}

}  // namespace

int main() {
    // the wgmma products once more with each operation executing at its issue or at its wait at random, in
    // a child whose emulator starts afresh with seed 2
    std::fflush(nullptr);
    const pid_t mixed = fork();
    if (mixed == 0) {
        setenv("FSIG_EMU_SEED", "2", 1);
        check_wgmma();
        std::_Exit(th::failures() != 0 ? 1 : 0);
    }
    int status = 0;
    waitpid(mixed, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "wgmma with seed 2 (execution at issue or at the wait) failed");
    setenv("FSIG_EMU_SEED", "0", 1);  // fixed order, copies land at the wait (read before the emulator starts)
    check_mma();
    check_ldmatrix();
    check_ldmatrix_wavefronts();
    check_cp_async_late();
    check_capture();
    check_detectors();
    check_wgmma();
    check_wgmma_late();
    check_wgmma_detectors();
    if (th::failures() != 0) {
        std::printf("%d check(s) failed\n", th::failures());
        return 1;
    }
    std::printf("emulator self-check: tensor cores (f16, bf16; mma.sync and wgmma ss / rs_tb), ldmatrix and its bank "
                "conflicts, cp.async, "
                "capture, 9 detectors and 17 wgmma ones ok\n");
    return 0;
}
