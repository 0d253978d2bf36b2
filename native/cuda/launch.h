// FSIG_LAUNCH(kernel, grid, block, smem, stream, args...): kernel<<<grid, block, smem, stream>>>(args...)
// under nvcc; in the SIMT emulator's g++ build (tests/emu, FSIG_CUDA_EMULATION) a call into it, since
// g++ cannot parse <<<>>>. kernel must be one token or parenthesised (no bare template commas).
// smem_raw: the dynamic shared memory (the launch's smem bytes) of every kernel, declared once here at
// namespace scope so that the emulator can supply, poison and bound-check it (a block-scope declaration
// inside an unnamed namespace would have internal linkage outside nvcc).
#pragma once

#include <atomic>
#include <climits>
#include <cstdlib>

#include <cuda_runtime.h>

namespace fsig::cuda {
#if defined(FSIG_CUDA_EMULATION)
extern unsigned char smem_raw[];  // defined by tests/emu/cuda_emu.cpp
#else
extern __shared__ __align__(128) unsigned char smem_raw[];
#endif

// The shared memory per block a launch needed and the current device allows (opt-in limit), recorded by
// allow_dynamic_smem when it refuses; per thread, read by the host's message (cuda_runtime.cu)
struct SmemShortfall {
    int needed = 0, allowed = 0;
};
inline SmemShortfall& smem_shortfall() {
    static thread_local SmemShortfall shortfall;
    return shortfall;
}

// The least shared memory per block (opt-in) of the GPUs the library runs on (sm_80 or later): 99 KiB on
// sm_86, sm_89 and sm_120; a kernel that needs more has a narrower fallback or is refused there
constexpr int kLeastSmemOptin = 99 * 1024;

// The current device's value of a (positive) device attribute, asked once per device: host queries, not stream
// operations, made by launchers that choose between kernels
template <cudaDeviceAttr kAttr>
inline cudaError_t cached_device_attribute(int& value) {
    constexpr int kCachedDevices = 64;
    static std::atomic<int> cached[kCachedDevices] = {};  // 0: not asked yet
    int device = 0;
    cudaError_t e = cudaGetDevice(&device);
    if (e != cudaSuccess) return e;
    const bool cacheable = device >= 0 && device < kCachedDevices;
    if (cacheable && (value = cached[device].load(std::memory_order_relaxed)) > 0) return cudaSuccess;
    e = cudaDeviceGetAttribute(&value, kAttr, device);
    if (e != cudaSuccess) return e;
    if (cacheable) cached[device].store(value, std::memory_order_relaxed);
    return cudaSuccess;
}

// A device's opt-in shared memory per block as the library uses it: capped at FSIG_CUDA_SMEM_LIMIT_KIB KiB
// where that is set (read once), so that a larger GPU takes the kernels a smaller one would (an H100 then
// checks the 99 KiB GPUs' kernels, tests/gpu/gpu-session.sh); device_smem_optin: the current device's
inline int capped_smem(int optin) {
    static const int cap = [] {
        const char* e = std::getenv("FSIG_CUDA_SMEM_LIMIT_KIB");
        const long kib = e != nullptr ? std::strtol(e, nullptr, 10) : 0;
        return kib > 0 && kib < 1024 ? int(kib) * 1024 : INT_MAX;
    }();
    return optin < cap ? optin : cap;
}
inline cudaError_t device_smem_optin(int& allowed) {
    const cudaError_t e = cached_device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>(allowed);
    if (e == cudaSuccess) allowed = capped_smem(allowed);
    return e;
}

// Dynamic shared memory above 48 KiB needs the kernel's attribute raised (per function and device, not a
// stream operation: a graph capture may contain it). It is raised to `limit` (the kernel's largest need,
// so that another thread's smaller setting cannot fail this launch) where the device allows that, else to
// this launch's `bytes`. A device that allows less than `bytes` per block (sm_86/sm_89: 99 KiB) gets
// cudaErrorLaunchOutOfResources, nothing launched, and the sizes in smem_shortfall().
template <class Kernel>
cudaError_t allow_dynamic_smem(Kernel kernel, int bytes, int limit) {
    if (bytes <= 48 * 1024) return cudaSuccess;
    int allowed = 0;
    if (const cudaError_t e = device_smem_optin(allowed); e != cudaSuccess) return e;
    if (bytes > allowed) {
        smem_shortfall() = SmemShortfall{bytes, allowed};
        return cudaErrorLaunchOutOfResources;
    }
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, limit <= allowed ? limit : bytes);
}
template <class Kernel>
cudaError_t allow_dynamic_smem(Kernel kernel, int bytes) {
    return allow_dynamic_smem(kernel, bytes, bytes);
}
}  // namespace fsig::cuda

#if defined(FSIG_CUDA_EMULATION)
#define FSIG_LAUNCH(kernel, grid, block, smem, stream, ...) \
    ::fsig::emu::launch(kernel, dim3(grid), dim3(block), size_t(smem), stream, __VA_ARGS__)
#else
#define FSIG_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#endif
