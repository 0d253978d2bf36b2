// The CUDA backend as the C ABI layer sees it. Built from cuda_runtime.cu (and the generated kernel
// units) when CMake finds nvcc — the CUDA runtime is linked statically, so the library still loads
// without a driver — otherwise from no_cuda.cpp.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../internal.h"

namespace fsig::cuda {

bool compiled();
// Usable CUDA devices now; 0 when no driver or device is present (never an error).
int device_count();
// Why device_count() is 0, for messages: no driver, a driver older than the runtime (with both
// versions), no device, or the runtime's error. Thread-local storage, valid until the next call.
const char* no_device_reason();

// dtypes (bit 1 << fsig_dtype) and head dims the CUDA forward has kernels for; dims receives at most
// max entries, the return value is their number.
uint32_t forward_dtypes();
int forward_head_dims(int32_t* dims, int max);
// The attention kernels run every head dim that is a multiple of 8 up to these (the widest kernels)
constexpr int kForwardMaxHeadDim = 256;
constexpr int kBackwardMaxHeadDim = 256;

// Runs a forward problem that the C ABI layer validated (shapes, dtypes, extents, aliasing, one
// device for all tensors, device index < device_count()) on the stream (NULL = default stream):
// checks what only the CUDA kernels need (dtype, head dim, alignment and strides of DESIGN §3,
// device-accessible pointers), launches asynchronously and restores the caller's current device.
// On error returns a status and writes a message naming the argument and the rule into msg.
int forward(const ForwardArgs& a, int device_index, void* stream, char* msg, size_t msg_size);

// Runs a backward problem that the C ABI layer validated (as forward; softmax comes with out and lse)
// on the stream: the same CUDA-only checks as forward for q, k, v, dout, dq, dk, dv (and out, lse for
// softmax), then, restoring the caller's current device, asynchronous work without allocation: with
// a.workspace (the fast path, which the C ABI layer chose and checked) a memset, the dK/dV kernel that
// also adds dQ into the workspace with atomics, and dq's conversion; without, the deterministic dK/dV
// and dQ kernels (no atomics, the same bits every run).
int backward(const BackwardArgs& a, int device_index, void* stream, char* msg, size_t msg_size);

// Linear attention (params.score cosformer / linear_elu, DESIGN.md §4) of a problem the C ABI layer
// validated, with M (length) and ε resolved: the same CUDA-only checks as forward/backward, then
// asynchronous launches on the stream (forward: one kernel; backward: five, dq's rows carrying the
// per-row statistics between them before they receive dq), no allocation, deterministic, the
// caller's current device restored. out, when given to the backward, is not read.
int linear_forward(const ForwardArgs& a, int64_t length, float epsilon, int device_index, void* stream, char* msg,
                   size_t msg_size);
int linear_backward(const BackwardArgs& a, int64_t length, float epsilon, int device_index, void* stream, char* msg,
                    size_t msg_size);

// What device `device` is and what runs on it (fsig_cuda_get_device_info; the C ABI layer checked the index
// and info's size), without making it current unless the Hopper kernels' check needs its loaded code.
int device_info(int device, fsig_cuda_device_info& info, char* msg, size_t msg_size);

// Memory, copies and streams for callers without a CUDA runtime of their own (the C ABI's fsig_cuda_*):
// the C ABI layer checked device < device_count() and the pointer and size arguments; each call keeps
// the caller's current device and writes a message on error.
int malloc_device(int device, int64_t bytes, void** ptr, char* msg, size_t msg_size);
int free_device(int device, void* ptr, char* msg, size_t msg_size);
int memcpy_async(int device, void* dst, const void* src, int64_t bytes, void* stream, char* msg, size_t msg_size);
int stream_create(int device, void** stream, char* msg, size_t msg_size);
int stream_destroy(int device, void* stream, char* msg, size_t msg_size);
int synchronize(int device, void* stream, char* msg, size_t msg_size);

}  // namespace fsig::cuda
