// The device side of the SIMT emulator (tests/emu): force-included (g++ -include) into the CUDA units when
// they are compiled as plain C++ for libflashsig_emu, so that the unchanged kernels run on the CPU, one
// fiber per CUDA thread, under the emulated runtime of cuda_emu.cpp. It supplies what nvcc would: the
// built-in indices, __syncthreads and the warp intrinsics, atomics, and — in place of the inline PTX that
// fwd_kernel.cuh and bwd_kernel.cuh compile only under nvcc — ldmatrix, mma.sync m16n8k16, cp.async,
// ex2/rcp.approx, and sm_90a's wgmma (fence, mma_async m64nNk16 from 128-byte-swizzle descriptors or A
// registers, commit_group, wait_group) and fence.proxy.async, each replayed as the PTX ISA defines it
// (restated in cuda_emu.cpp, not taken from native/cuda, so that the kernel's own index math is checked,
// not assumed).
//
// What it checks beyond the numbers (each a launch failure, reported with the thread and the reason):
// __syncthreads that not every live thread reaches (deadlock), warp collectives reached by only part
// of a warp or at different collectives (kind or call site), ldmatrix/cp.async addresses outside the
// launch's dynamic shared memory or misaligned, cp.async reads outside every allocation, shared memory
// written past the launch's size, launches above 48 KiB of shared memory without cudaFuncSetAttribute,
// writes past a device allocation (guard pages: the process faults). Shared memory is poisoned
// (0xFF: NaN in fp16, bf16 and fp32) before every block, device memory at allocation; a cp.async copy
// lands either when issued or at the cp.async.wait_group that retires its group (chosen at random per copy);
// blocks, and threads between synchronisation points, run in a random order (FSIG_EMU_SEED; 0: fixed
// order, late copies), so a missing wait, commit or barrier changes the result. The emulated device has
// sm_80's 163 KiB of shared memory per block (FSIG_EMU_SM=89: an sm_89's 99 KiB); FSIG_EMU_SM=90 makes it an
// sm_90a device with 227 KiB, on which alone wgmma runs: each operation executes at issue or at the wait
// that retires it (its accumulators a NaN poison until then), and the launch fails on warpgroups that
// diverge, accumulators changed in flight, a missing wgmma.fence, commit or wait, operands the generic
// proxy wrote without fence.proxy.async, and descriptors it does not emulate (see cuda_emu.cpp).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "emu_counters.h"

#define __launch_bounds__(...)
// A static __shared__ variable would become a per-thread local here: the kernels use the dynamic shared
// memory only (native/cuda/launch.h: smem_raw), and this makes any other a compile error.
#undef __shared__
#define __shared__ static_shared_memory_is_not_emulated_use_smem_raw

namespace fsig::emu {

// ---- the running thread (cuda_emu.cpp) ----
uint3 thread_idx();
uint3 block_idx();
dim3 block_dim();
dim3 grid_dim();
void sync_threads();
void sync_warp(unsigned mask);
float shfl_xor(unsigned mask, float value, int lane_mask);
bool any(unsigned mask, bool predicate);
bool all(unsigned mask, bool predicate);
unsigned ballot(unsigned mask, bool predicate);
// the block's dynamic shared memory: fsig::cuda::smem_raw (defined in cuda_emu.cpp)
uint32_t shared_offset(const void* p);
// warp-collective PTX (elements are 16-bit: bf16 selects the format of mma's inputs)
void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr, bool trans);
void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, bool bf16);
void cp_async(uint32_t dst, const void* src, int bytes, int src_bytes);
void cp_async_commit();
void cp_async_wait(int pending);
// sm_90a: warpgroup MMA and the generic-to-async proxy fence (the call site is the caller's return address)
void wgmma_fence();
void wgmma_commit();
void wgmma_wait(int pending);
void wgmma_mma(float* d, int n, const uint32_t* a_regs, uint64_t desc_a, uint64_t desc_b, bool trans_b, bool bf16,
               bool accumulate);
void fence_proxy_async();

// ---- launches (FSIG_LAUNCH in native/cuda/launch.h) ----
cudaError_t submit(const void* kernel, dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
                   std::function<void()> thread_body);

template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
            Args&&... args) {
    std::tuple<std::decay_t<Params>...> bound(std::forward<Args>(args)...);
    submit(reinterpret_cast<const void*>(kernel), grid, block, smem_bytes, stream,
           [kernel, bound] { std::apply(kernel, bound); });
}

}  // namespace fsig::emu

// ---- CUDA built-ins ----
#define threadIdx (::fsig::emu::thread_idx())
#define blockIdx (::fsig::emu::block_idx())
#define blockDim (::fsig::emu::block_dim())
#define gridDim (::fsig::emu::grid_dim())

inline void __syncthreads() { fsig::emu::sync_threads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { fsig::emu::sync_warp(mask); }
inline float __shfl_xor_sync(unsigned mask, float value, int lane_mask, int width = 32) {
    (void)width;
    return fsig::emu::shfl_xor(mask, value, lane_mask);
}
inline int __any_sync(unsigned mask, int predicate) { return fsig::emu::any(mask, predicate != 0) ? 1 : 0; }
inline int __all_sync(unsigned mask, int predicate) { return fsig::emu::all(mask, predicate != 0) ? 1 : 0; }
inline unsigned __ballot_sync(unsigned mask, int predicate) { return fsig::emu::ballot(mask, predicate != 0); }
inline int __ffs(int x) { return __builtin_ffs(x); }  // 1 + the index of the lowest set bit; 0 for 0
// one OS thread runs every fiber, switching only at synchronisation points: a plain add is atomic
inline float atomicAdd(float* address, float value) {
    const float old = *address;
    *address = old + value;
    return old;
}
// cuda_runtime.h's typed overload, which it declares under nvcc only
template <class... Params>
inline cudaError_t cudaFuncSetAttribute(void (*kernel)(Params...), cudaFuncAttribute attr, int value) {
    return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
template <class... Params>
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, void (*kernel)(Params...)) {
    return ::cudaFuncGetAttributes(attr, reinterpret_cast<const void*>(kernel));
}
inline size_t __cvta_generic_to_shared(const void* p) { return fsig::emu::shared_offset(p); }
inline float __logf(float x) { return std::log(x); }
template <class A, class B>
inline std::common_type_t<A, B> min(A a, B b) {
    return b < a ? b : a;
}
template <class A, class B>
inline std::common_type_t<A, B> max(A a, B b) {
    return a < b ? b : a;
}

// ---- the PTX wrappers of fwd_kernel.cuh / bwd_kernel.cuh ----
namespace fsig::cuda {

// mma.sync and the packing of two floats into one 16-bit pair register, for __half or __nv_bfloat16
template <class Elem>
struct Mma {
    static constexpr bool kBf16 = std::is_same_v<Elem, __nv_bfloat16>;
    static void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        emu::mma_m16n8k16(d, a, b0, b1, kBf16);
    }
    static uint32_t pack(float lo, float hi) {
        uint32_t u;
        if constexpr (kBf16) {
            const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
            std::memcpy(&u, &h, 4);
        } else {
            const __half2 h = __floats2half2_rn(lo, hi);
            std::memcpy(&u, &h, 4);
        }
        return u;
    }
};

inline void ldsm_x4(uint32_t (&r)[4], uint32_t addr) { emu::ldmatrix_x4(r, addr, false); }
inline void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) { emu::ldmatrix_x4(r, addr, true); }
inline void cp_async_16(uint32_t dst, const void* src, int src_bytes) { emu::cp_async(dst, src, 16, src_bytes); }
inline void cp_async_4(uint32_t dst, const void* src, int src_bytes) { emu::cp_async(dst, src, 4, src_bytes); }
inline void cp_async_commit() { emu::cp_async_commit(); }
inline void cp_async_wait_all() { emu::cp_async_wait(0); }
template <int kPending>
inline void cp_async_wait() {
    static_assert(kPending >= 0, "cp.async.wait_group takes a non-negative count");
    emu::cp_async_wait(kPending);
}

// sm_90a warpgroup MMA (cuda_emu.cpp restates the PTX ISA). Always inlined, so that the emulator's call-site
// check sees the kernel's own call site, not one shared wrapper.
// wgmma.fence.sync.aligned
[[gnu::always_inline]] inline void wgmma_fence() { emu::wgmma_fence(); }
// wgmma.commit_group.sync.aligned
[[gnu::always_inline]] inline void wgmma_commit() { emu::wgmma_commit(); }
// wgmma.wait_group.sync.aligned kPending
template <int kPending>
[[gnu::always_inline]] inline void wgmma_wait() {
    static_assert(kPending >= 0, "wgmma.wait_group takes a non-negative count");
    emu::wgmma_wait(kPending);
}
// fence.proxy.async.shared::cta: this thread's generic-proxy writes to shared memory (stores, landed
// cp.async) become visible to the async proxy that wgmma reads through
[[gnu::always_inline]] inline void fence_proxy_async() { emu::fence_proxy_async(); }

// D[64 x N] = (accumulate ? D : 0) + A[64 x 16] B[16 x N], fp32 accumulators, Elem = __half or __nv_bfloat16;
// d[i / 4][i % 4] is PTX's register d_i of the .m64nNk16 f32 D fragment
template <class Elem, int N>
struct Wgmma {
    static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma .m64nNk16: N is a multiple of 8 in [8, 256]");
    static constexpr bool kBf16 = std::is_same_v<Elem, __nv_bfloat16>;
    // wgmma.mma_async.sync.aligned.m64nNk16.f32.<t>.<t> d, a-desc, b-desc, scale-d, 1, 1, 0, 0 (both K-major)
    [[gnu::always_inline]] static void ss(float (&d)[N / 8][4], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
        emu::wgmma_mma(&d[0][0], N, nullptr, desc_a, desc_b, false, kBf16, accumulate);
    }
    // wgmma.mma_async ... d, a-desc, b-desc, scale-d, 1, 1, 0, 1 (A K-major, B N-major)
    [[gnu::always_inline]] static void ss_tb(float (&d)[N / 8][4], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
        emu::wgmma_mma(&d[0][0], N, nullptr, desc_a, desc_b, true, kBf16, accumulate);
    }
    // wgmma.mma_async ... d, {a0, a1, a2, a3}, b-desc, scale-d, 1, 1, 1 (A from registers, B N-major)
    [[gnu::always_inline]] static void rs_tb(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t desc_b,
                                             bool accumulate) {
        emu::wgmma_mma(&d[0][0], N, a, 0, desc_b, true, kBf16, accumulate);
    }
};

// ex2.approx.ftz / rcp.approx.ftz: the exact values (the hardware's error, ~2 ulp, is far below the
// 16-bit rounding of P) with subnormal results flushed to zero, as .ftz does
inline float ftz(float x) { return std::fabs(x) < 1.17549435e-38f ? std::copysign(0.f, x) : x; }
inline float ex2(float x) { return ftz(std::exp2(ftz(x))); }
inline float rcp(float x) { return ftz(1.f / ftz(x)); }

}  // namespace fsig::cuda
