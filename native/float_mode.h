// The floating-point mode every computation of the library runs in: round to nearest, no flush to zero,
// exceptions masked (x86-64: MXCSR 0x1F80; AArch64: FPCR 0, which also means IEEE half precision and no
// default NaN). A thread's mode would otherwise make results depend on the caller and on which thread ran
// a task: each call runs under DefaultFloatMode, and each pool worker sets the mode when it starts (a new
// thread inherits its creator's, and fsig_set_num_threads may be called from any thread in any mode).
#pragma once

#include <cstdint>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

namespace fsig {

#if defined(__x86_64__)
class DefaultFloatMode {
public:
    DefaultFloatMode() : saved_(_mm_getcsr()) { _mm_setcsr(kDefault | (saved_ & kFlags)); }
    ~DefaultFloatMode() { _mm_setcsr(saved_); }  // the caller's mode and sticky flags, as they were
    static void set() { _mm_setcsr(kDefault); }

private:
    static constexpr unsigned kDefault = 0x1F80;  // all exceptions masked, round to nearest, no FTZ/DAZ
    static constexpr unsigned kFlags = 0x3F;      // sticky exception flags
    const unsigned saved_;
};
#elif defined(__aarch64__)
class DefaultFloatMode {
public:
    DefaultFloatMode() : fpcr_(read_fpcr()), fpsr_(read_fpsr()) { set(); }
    ~DefaultFloatMode() {  // the caller's mode and sticky flags (FPSR), as they were
        write_fpcr(fpcr_);
        write_fpsr(fpsr_);
    }
    static void set() { write_fpcr(0); }

private:
    // "memory": no load, store or call moves across the switch
    static uint64_t read_fpcr() {
        uint64_t v;
        __asm__ __volatile__("mrs %0, fpcr" : "=r"(v) : : "memory");
        return v;
    }
    static uint64_t read_fpsr() {
        uint64_t v;
        __asm__ __volatile__("mrs %0, fpsr" : "=r"(v) : : "memory");
        return v;
    }
    static void write_fpcr(uint64_t v) { __asm__ __volatile__("msr fpcr, %0" : : "r"(v) : "memory"); }
    static void write_fpsr(uint64_t v) { __asm__ __volatile__("msr fpsr, %0" : : "r"(v) : "memory"); }
    const uint64_t fpcr_, fpsr_;
};
#endif

}  // namespace fsig
