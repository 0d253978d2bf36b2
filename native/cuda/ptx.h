// The PTX instructions the tensor-core kernels use (forward, backward, linear attention), one wrapper
// each. The SIMT emulator (tests/emu/cuda_emu.h) supplies these same functions outside nvcc.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

// A device function kept out of line: nvcc's __noinline__ is a keyword, not a macro the emulator's g++
// build could see (and libstdc++ spells GCC's attribute with that same name)
#if defined(FSIG_CUDA_EMULATION)
#define FSIG_NOINLINE __attribute__((noinline))
#else
#define FSIG_NOINLINE __noinline__
#endif

namespace fsig::cuda {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

#if !defined(FSIG_CUDA_EMULATION)
template <class Elem>
struct Mma;
template <>
struct Mma<__half> {
    static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&h);
    }
};
template <>
struct Mma<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&h);
    }
};

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
// 16 bytes global -> shared, bypassing L1; src_bytes = 0 writes zeros and reads nothing.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// cp.async.wait_group kPending: returns once at most kPending of this thread's committed groups are pending
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { cp_async_wait<0>(); }

// ---- Hopper (sm_90a) warpgroup MMA: the wgmma kernels (fwd_wgmma_kernel.cuh, bwd_wgmma_kernel.cuh) ----
// wgmma.mma_async: D[64 x N] (+)= A[64 x 16] · B[16 x N] over the 128 threads of a warpgroup, fp32
// accumulators; d[i / 4][i % 4] is the PTX fragment's register d_i (warp w of the group: rows 16w..16w+15,
// the layout of mma.m16n8k16's C per n8 tile i / 4). ss: A and B from shared-memory descriptors, both
// K-major; ss_tb: the same with B N-major (imm-trans-b = 1); rs_tb: A from registers (mma.m16n8k16's A
// fragment for the warp's 16 rows), B N-major. Asynchronous: the accumulators and A registers belong to
// the tensor cores from the instruction until the wgmma.wait_group that retires its group — the A array
// must stay in scope and unchanged until then (the emulator checks it). Compiled only where the target has
// wgmma (sm_90a); elsewhere the kernel that calls them is never launched (the host checks).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FSIG_HAVE_WGMMA 1
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// the generic-proxy writes of this thread to shared memory (cp.async, stores) made visible to wgmma's reads
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

template <class Elem, int N>
struct Wgmma;

// The operand lists: the accumulators %0.. in fragment order, then A (registers or descriptor), B's
// descriptor and the scale-d flag (the predicate p: D = A·B + (p ? D : 0)).
#define FSIG_ACC4(t) "+f"(d[t][0]), "+f"(d[t][1]), "+f"(d[t][2]), "+f"(d[t][3])
#define FSIG_ACC_N32 FSIG_ACC4(0), FSIG_ACC4(1), FSIG_ACC4(2), FSIG_ACC4(3)
#define FSIG_ACC_N64 FSIG_ACC4(0), FSIG_ACC4(1), FSIG_ACC4(2), FSIG_ACC4(3), FSIG_ACC4(4), FSIG_ACC4(5), FSIG_ACC4(6), FSIG_ACC4(7)
#define FSIG_ACC_N128 \
    FSIG_ACC_N64, FSIG_ACC4(8), FSIG_ACC4(9), FSIG_ACC4(10), FSIG_ACC4(11), FSIG_ACC4(12), FSIG_ACC4(13), FSIG_ACC4(14), FSIG_ACC4(15)
#define FSIG_REGS_N32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define FSIG_REGS_N64 \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "   \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define FSIG_REGS_N128 \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "            \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "   \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "   \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define FSIG_ACC_N256 \
    FSIG_ACC_N128, FSIG_ACC4(16), FSIG_ACC4(17), FSIG_ACC4(18), FSIG_ACC4(19), FSIG_ACC4(20), FSIG_ACC4(21), FSIG_ACC4(22), FSIG_ACC4(23), \
    FSIG_ACC4(24), FSIG_ACC4(25), FSIG_ACC4(26), FSIG_ACC4(27), FSIG_ACC4(28), FSIG_ACC4(29), FSIG_ACC4(30), FSIG_ACC4(31)
#define FSIG_REGS_N256 \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, " \
    "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
    "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
    "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
    "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"
// ELEM/TYPE: the element type and its PTX name; N; A0..A5: the operand numbers after the N / 2
// accumulators (N / 2 .. N / 2 + 5; the emulator never reads these strings: checked in the generated PTX)
#define FSIG_WGMMA(ELEM, TYPE, N, A0, A1, A2, A3, A4, A5)                                                    \
    template <>                                                                                              \
    struct Wgmma<ELEM, N> {                                                                                  \
        static __device__ __forceinline__ void ss(float (&d)[N / 8][4], uint64_t desc_a, uint64_t desc_b,   \
                                                  bool accumulate) {                                         \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #A2 ", 0;\n"                                  \
                         "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TYPE "." TYPE " " FSIG_REGS_N##N  \
                         ", %" #A0 ", %" #A1 ", p, 1, 1, 0, 0;\n}\n"                                         \
                         : FSIG_ACC_N##N                                                                     \
                         : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)));                                  \
        }                                                                                                    \
        static __device__ __forceinline__ void ss_tb(float (&d)[N / 8][4], uint64_t desc_a, uint64_t desc_b,\
                                                     bool accumulate) {                                      \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #A2 ", 0;\n"                                  \
                         "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TYPE "." TYPE " " FSIG_REGS_N##N  \
                         ", %" #A0 ", %" #A1 ", p, 1, 1, 0, 1;\n}\n"                                         \
                         : FSIG_ACC_N##N                                                                     \
                         : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)));                                  \
        }                                                                                                    \
        static __device__ __forceinline__ void rs_tb(float (&d)[N / 8][4], const uint32_t (&a)[4],          \
                                                     uint64_t desc_b, bool accumulate) {                     \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #A5 ", 0;\n"                                  \
                         "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TYPE "." TYPE " " FSIG_REGS_N##N  \
                         ", {%" #A0 ", %" #A1 ", %" #A2 ", %" #A3 "}, %" #A4 ", p, 1, 1, 1;\n}\n"                \
                         : FSIG_ACC_N##N                                                                     \
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int(accumulate)));   \
        }                                                                                                    \
    };
// N = 32: Sᵀ and dPᵀ of the 256-wide backward, each warpgroup's half of the query tile (ss)
FSIG_WGMMA(__half, "f16", 32, 16, 17, 18, 19, 20, 21)
FSIG_WGMMA(__nv_bfloat16, "bf16", 32, 16, 17, 18, 19, 20, 21)
FSIG_WGMMA(__half, "f16", 64, 32, 33, 34, 35, 36, 37)
FSIG_WGMMA(__half, "f16", 128, 64, 65, 66, 67, 68, 69)
FSIG_WGMMA(__nv_bfloat16, "bf16", 64, 32, 33, 34, 35, 36, 37)
FSIG_WGMMA(__nv_bfloat16, "bf16", 128, 64, 65, 66, 67, 68, 69)
// N = 256: O += P V of the 256-wide forward (rs_tb)
FSIG_WGMMA(__half, "f16", 256, 128, 129, 130, 131, 132, 133)
FSIG_WGMMA(__nv_bfloat16, "bf16", 256, 128, 129, 130, 131, 132, 133)
#undef FSIG_WGMMA
#undef FSIG_REGS_N32
#undef FSIG_REGS_N64
#undef FSIG_REGS_N128
#undef FSIG_REGS_N256
#undef FSIG_ACC_N32
#undef FSIG_ACC_N64
#undef FSIG_ACC_N128
#undef FSIG_ACC_N256
#undef FSIG_ACC4
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
#endif

// Keeps the compiler from moving reads or writes of registers that wgmma owns while in flight (its
// accumulators, its A fragment) across the instructions that hand them to the tensor cores and back:
// an empty asm that "changes" each one.
template <class Reg, int kTiles>
__device__ __forceinline__ void wgmma_fence_operands(Reg (&regs)[kTiles][4]) {
    static_assert(std::is_same_v<Reg, float> || std::is_same_v<Reg, uint32_t>, "accumulators or A fragments");
#if !defined(FSIG_CUDA_EMULATION)
#pragma unroll
    for (int t = 0; t < kTiles; ++t)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            if constexpr (std::is_same_v<Reg, float>) asm volatile("" : "+f"(regs[t][e])::"memory");
            else asm volatile("" : "+r"(regs[t][e])::"memory");
        }
#else
    (void)regs;
#endif
}

// x, which the compiler can no longer see through: values derived from it are computed where used instead
// of hoisted out of a loop and kept in registers (the wgmma kernels at 255 registers)
template <class Int>
__device__ __forceinline__ Int opaque(Int x) {
    static_assert(sizeof(Int) == 4, "a 32-bit register");
#if !defined(FSIG_CUDA_EMULATION)
    asm volatile("" : "+r"(x));
#endif
    return x;
}

}  // namespace fsig::cuda
