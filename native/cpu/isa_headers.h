// The vector intrinsics headers of the target, included at global scope by the per-ISA kernel files
// before they open their ISA namespace (simd.h and rows.h are included inside it).
#pragma once
#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif
