// The CUDA backend as the C ABI layer sees it. Built from cuda_runtime.cu when CMake finds nvcc
// (the CUDA runtime is linked statically, so the library still loads without a driver), otherwise
// from no_cuda.cpp.
#pragma once

namespace fsig::cuda {

bool compiled();
// Usable CUDA devices now; 0 when no driver or device is present (never an error).
int device_count();

}  // namespace fsig::cuda
