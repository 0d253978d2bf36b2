// The floating-point mode every computation of the library runs in: round to nearest, no flush to zero,
// exceptions masked (x86-64: MXCSR 0x1F80; AArch64: FPCR 0, which also means IEEE half precision and no
// default NaN). A thread's mode would otherwise make results depend on the caller and on which thread ran
// a task: each call runs under DefaultFloatMode, and each pool worker sets the mode when it starts (a new
// thread inherits its creator's, and fsig_set_num_threads may be called from any thread in any mode).
// x86-64 only, opt-in: FSIG_CPU_FLUSH_SUBNORMALS=1 (read once per process) adds flush to zero and
// denormals are zero (MXCSR 0x9FC0). Every instruction that reads or writes a subnormal costs an Intel core a
// microcode assist, and far keys' weights are subnormal by the million with ALiBi and the exponentially
// decaying scores (1.2x to 2.7x slower calls on a Xeon: benchmarks/NOTES.md, "ALiBi on an Intel Xeon"). The
// price: subnormal inputs read as 0 and results below 2^-126 become 0 — invisible beside normal values, not
// where subnormals are the answer (tests/hardening: denormal inputs, dS times a q near bf16's maximum).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

namespace fsig {

#if defined(__x86_64__)
// MXCSR = kMode() for the object's lifetime (the caller's sticky exception flags carried in), then the
// caller's register again
template <unsigned (*kMode)()>
class MxcsrScope {
public:
    MxcsrScope() : saved_(_mm_getcsr()) { _mm_setcsr(kMode() | (saved_ & kFlags)); }
    ~MxcsrScope() { _mm_setcsr(saved_); }  // the caller's mode and sticky flags, as they were
    static void set() { _mm_setcsr(kMode()); }

private:
    static constexpr unsigned kFlags = 0x3F;  // sticky exception flags
    const unsigned saved_;
};
// all exceptions masked, round to nearest; no FTZ/DAZ unless FSIG_CPU_FLUSH_SUBNORMALS=1
inline unsigned library_mxcsr() {
    static const unsigned mode = [] {
        const char* e = std::getenv("FSIG_CPU_FLUSH_SUBNORMALS");
        return e != nullptr && std::strcmp(e, "1") == 0 ? 0x9FC0u : 0x1F80u;
    }();
    return mode;
}
// IEEE fp32 with subnormals, as a GPU thread computes without .ftz: the SIMT emulator's (tests/emu), whatever the
// setting above
inline unsigned ieee_mxcsr() { return 0x1F80u; }
using DefaultFloatMode = MxcsrScope<library_mxcsr>;
using IeeeFloatMode = MxcsrScope<ieee_mxcsr>;
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
using IeeeFloatMode = DefaultFloatMode;  // (the flush setting is x86-64's: subnormals not measured on Arm)
#endif

}  // namespace fsig
