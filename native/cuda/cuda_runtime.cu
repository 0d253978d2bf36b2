// CUDA runtime queries. The kernels arrive with later versions; this unit proves the CUDA toolchain
// path of the build (static cudart, architectures from FSIG_CUDA_ARCHITECTURES) and lets the library
// report devices. cudaGetDeviceCount fails cleanly (no device / insufficient driver) without libcuda.
#include <cuda_runtime.h>

#include "cuda_backend.h"

namespace fsig::cuda {

bool compiled() { return true; }

int device_count() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky-free error so later runtime calls start clean
        return 0;
    }
    return count;
}

}  // namespace fsig::cuda
