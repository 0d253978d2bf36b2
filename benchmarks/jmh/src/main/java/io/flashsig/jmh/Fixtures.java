package io.flashsig.jmh;

import io.flashsig.DType;
import io.flashsig.Tensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

/**
 * Inputs for the benchmarks: fixed-seed normal values (never zeros, which would flatter nothing but
 * could hide a skipped call), BSHD shapes, off-heap or on heap. Not a benchmark itself.
 */
final class Fixtures {
    private Fixtures() {}

    /**
     * JMH forks run the benchmarks with -cp, where the jar manifest's Enable-Native-Access does not
     * apply: every @Fork passes the flag itself (else the JDK warns, and a future JDK refuses).
     */
    static final String NATIVE_ACCESS = "--enable-native-access=ALL-UNNAMED";
    /** JMH 1.37 itself uses sun.misc.Unsafe, which JDK 24+ warns about in every fork. */
    static final String QUIET_UNSAFE = "--sun-misc-unsafe-memory-access=allow";

    /** Forward FLOPs of attention, 4·B·H·Nq·Nk·d (DESIGN.md §7; no mask here). Backward is 2.5× this. */
    static double forwardFlops(long b, long h, long nq, long nk, long d) {
        return 4.0 * b * h * nq * nk * d;
    }

    static float[] normal(long count, long seed) {
        if (count > Integer.MAX_VALUE - 8) throw new IllegalArgumentException("too many elements: " + count);
        SplittableRandom rng = new SplittableRandom(seed);
        float[] r = new float[(int) count];
        for (int i = 0; i < r.length; i++) r[i] = (float) rng.nextGaussian();
        return r;
    }

    /** Off-heap tensor of {@code shape} owned by {@code arena}, filled with normals (rounded to dtype). */
    static Tensor offHeap(Arena arena, DType dtype, long seed, long... shape) {
        Tensor t = Tensor.allocate(arena, dtype, shape);
        t.copyFrom(normal(t.elementCount(), seed));
        return t;
    }

    /** Off-heap output tensor, filled with NaN so an unwritten element would stay visible. */
    static Tensor offHeapOutput(Arena arena, DType dtype, long... shape) {
        Tensor t = Tensor.allocate(arena, dtype, shape);
        float[] nan = new float[(int) t.elementCount()];
        java.util.Arrays.fill(nan, Float.NaN);
        t.copyFrom(nan);
        return t;
    }

    /** fp32 tensor over a fresh heap array, filled with normals. */
    static Tensor heap(long seed, long... shape) {
        long n = 1;
        for (long s : shape) n *= s;
        return Tensor.of(normal(n, seed), shape);
    }

    /** fp32 heap output tensor, NaN-filled. */
    static Tensor heapOutput(long... shape) {
        long n = 1;
        for (long s : shape) n *= s;
        float[] a = new float[(int) n];
        java.util.Arrays.fill(a, Float.NaN);
        return Tensor.of(a, shape);
    }

    /** Fails loudly if the call left a NaN in {@code out} (checked once per trial, outside timing). */
    static void requireFinite(Tensor out, String what) {
        float[] v = out.toFloatArray();
        for (int i = 0; i < v.length; i++)
            if (!Float.isFinite(v[i]))
                throw new IllegalStateException(what + ": element " + i + " is " + v[i] + " after the benchmark");
    }
}
