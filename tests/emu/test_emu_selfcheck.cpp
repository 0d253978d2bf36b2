// The SIMT emulator's own checks: its tensor-core and ldmatrix replay against a plain product (layouts
// restated from the PTX ISA once more, independently of cuda_emu.cpp and native/cuda/fragment.h), the
// cp.async landing rule, stream capture, and that each of its detectors fires — a deadlock, divergent warp
// collectives, out-of-range or misaligned shared and global accesses, shared memory written past the
// launch's size, a write past the end of device memory (guard page), a big launch without its attribute.
// A detector fires by failing the launch, which (as on a GPU) poisons the context: those scenarios run
// in a forked child each. Built with cuda_emu.h force-included, like libflashsig_emu's units.
#include <sys/wait.h>
#include <unistd.h>

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
        EXPECT(run(mma_kernel, 32, 0, MmaArgs{a, b, c, d, bf16}) == cudaSuccess, "mma launch");
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

// ---- cp.async: with FSIG_EMU_SEED=0 a copy lands at the wait, so a read before it sees the poison ----
struct CopyArgs {
    const uint32_t* src;
    uint32_t* out;  // [0]: read before the wait, [1]: after; [2]: a copy waited for but never committed
};
void copy_kernel(CopyArgs p) {
    if (threadIdx.x != 0) return;
    fsig::cuda::cp_async_16(0, p.src, 16);
    fsig::cuda::cp_async_commit();
    p.out[0] = reinterpret_cast<const uint32_t*>(smem_raw)[0];
    fsig::cuda::cp_async_wait_all();
    p.out[1] = reinterpret_cast<const uint32_t*>(smem_raw)[0];
    fsig::cuda::cp_async_16(16, p.src, 16);  // no commit: wait_group 0 does not wait for it
    fsig::cuda::cp_async_wait_all();
    p.out[2] = reinterpret_cast<const uint32_t*>(smem_raw)[4];
}

void check_cp_async_late() {
    uint32_t *src, *out;
    cudaMalloc(reinterpret_cast<void**>(&src), 16);
    cudaMalloc(reinterpret_cast<void**>(&out), 12);
    src[0] = 0x12345678u;
    EXPECT(run(copy_kernel, 32, 64, CopyArgs{src, out}) == cudaSuccess, "cp.async launch");
    EXPECT(out[0] == 0xFFFFFFFFu, "before the wait shared memory holds the poison, not %#x", out[0]);
    EXPECT(out[1] == 0x12345678u, "after the wait the copy has landed (%#x)", out[1]);
    EXPECT(out[2] == 0xFFFFFFFFu, "an uncommitted copy landed at the wait (%#x)", out[2]);
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

}  // namespace

int main() {
    setenv("FSIG_EMU_SEED", "0", 1);  // fixed order, copies land at the wait (read before the emulator starts)
    check_mma();
    check_ldmatrix();
    check_cp_async_late();
    check_capture();
    check_detectors();
    if (th::failures() != 0) {
        std::printf("%d check(s) failed\n", th::failures());
        return 1;
    }
    std::printf("emulator self-check: tensor cores (f16, bf16), ldmatrix, cp.async, capture and 9 detectors ok\n");
    return 0;
}
