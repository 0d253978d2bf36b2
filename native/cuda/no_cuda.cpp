// The CUDA backend of a build without nvcc: no devices, no kernels (api.cpp refuses CUDA tensors
// before it would call forward or backward).
#include <cstdio>

#include "cuda_backend.h"

namespace fsig::cuda {
bool compiled() { return false; }
int device_count() { return 0; }
const char* no_device_reason() { return "this build of libflashsig has no CUDA support"; }
uint32_t forward_dtypes() { return 0; }
int forward_head_dims(int32_t*, int) { return 0; }
int forward(const ForwardArgs&, int, void*, char* msg, size_t msg_size) {
    std::snprintf(msg, msg_size, "this build of libflashsig has no CUDA support");
    return FSIG_ERROR_NO_DEVICE;
}
int backward(const BackwardArgs&, int, void*, char* msg, size_t msg_size) {
    std::snprintf(msg, msg_size, "this build of libflashsig has no CUDA support");
    return FSIG_ERROR_NO_DEVICE;
}
int linear_forward(const ForwardArgs&, int64_t, float, int, void*, char* msg, size_t msg_size) {
    std::snprintf(msg, msg_size, "this build of libflashsig has no CUDA support");
    return FSIG_ERROR_NO_DEVICE;
}
int linear_backward(const BackwardArgs&, int64_t, float, int, void*, char* msg, size_t msg_size) {
    std::snprintf(msg, msg_size, "this build of libflashsig has no CUDA support");
    return FSIG_ERROR_NO_DEVICE;
}
namespace {
int no_cuda(char* msg, size_t msg_size) {
    std::snprintf(msg, msg_size, "this build of libflashsig has no CUDA support");
    return FSIG_ERROR_NO_DEVICE;
}
}  // namespace
int device_info(int, fsig_cuda_device_info&, char* msg, size_t msg_size) { return no_cuda(msg, msg_size); }
int malloc_device(int, int64_t, void**, char* msg, size_t msg_size) { return no_cuda(msg, msg_size); }
int free_device(int, void*, char* msg, size_t msg_size) { return no_cuda(msg, msg_size); }
int memcpy_async(int, void*, const void*, int64_t, void*, char* msg, size_t msg_size) { return no_cuda(msg, msg_size); }
int stream_create(int, void**, char* msg, size_t msg_size) { return no_cuda(msg, msg_size); }
int stream_destroy(int, void*, char* msg, size_t msg_size) { return no_cuda(msg, msg_size); }
int synchronize(int, void*, char* msg, size_t msg_size) { return no_cuda(msg, msg_size); }
}  // namespace fsig::cuda
