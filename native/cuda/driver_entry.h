// A CUDA driver function by name, through the runtime (DESIGN §5: the build machine has no libcuda, so
// nothing links -lcuda). Shared by the host side (cuda_runtime.cu) and the device tests, which see only
// the exported fsig_ ABI otherwise.
#pragma once

#include <cuda_runtime.h>

namespace fsig::cuda {

// nullptr where the driver lacks the symbol at that ABI version; the runtime's error is cleared so that
// the next runtime call starts clean.
inline void* driver_entry(const char* symbol, unsigned version) {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion(symbol, &fn, version, cudaEnableDefault, &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
        cudaGetLastError();
        return nullptr;
    }
    return fn;
}

}  // namespace fsig::cuda
