package io.flashsig;

import java.lang.foreign.Arena;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.fail;

/** Shared test helpers: random inputs, tensors in each kind of memory, and the §6 comparison. */
final class TestSupport {
    private TestSupport() {}

    /** Where a test's tensors live and which downcall the heap ones take. */
    enum Memory {
        /** Heap arrays through the critical (pinning) downcall. */
        HEAP_CRITICAL,
        /** Heap arrays copied to off-heap scratch and back. */
        HEAP_COPY,
        /** Off-heap segments from an arena. */
        OFF_HEAP
    }

    /**
     * Whether FlashSig reports a CUDA device, for the device tests' assumptions. Where the system property
     * {@code flashsig.test.requireCuda} is true (the cuda-emulated surefire execution, on libflashsig_emu) a
     * missing device fails instead of skipping: that run is there to run the device tests.
     */
    static boolean cudaDevice() {
        FlashSig.Capabilities caps = FlashSig.capabilities();
        if (!caps.cudaAvailable() && Boolean.getBoolean("flashsig.test.requireCuda"))
            fail("flashsig.test.requireCuda is set, but " + NativeLibrary.path() + " reports no CUDA device ("
                    + caps + ")");
        return caps.cudaAvailable();
    }

    /** Random N(0, 1) values, already representable in {@code dtype}. */
    static double[] randn(Random r, DType dtype, int n) {
        double[] a = new double[n];
        for (int i = 0; i < n; i++) a[i] = dtype.round((float) r.nextGaussian());
        return a;
    }

    static float[] toFloats(double[] a) {
        float[] f = new float[a.length];
        for (int i = 0; i < a.length; i++) f[i] = (float) a[i];
        return f;
    }

    static double[] toDoubles(float[] a) {
        double[] d = new double[a.length];
        for (int i = 0; i < a.length; i++) d[i] = a[i];
        return d;
    }

    /** A contiguous tensor holding {@code values} (NaN-poisoned when values is null) in the given memory. */
    static Tensor tensor(Memory m, Arena arena, DType dtype, double[] values, long... shape) {
        int n = 1;
        for (long s : shape) n *= (int) s;
        float[] f = new float[n];
        if (values == null) java.util.Arrays.fill(f, Float.NaN);
        else for (int i = 0; i < n; i++) f[i] = (float) values[i];
        Tensor t;
        if (m == Memory.OFF_HEAP) t = Tensor.allocate(arena, dtype, shape);
        else if (dtype == DType.FP32) t = Tensor.of(new float[n], shape);
        else t = Tensor.of(new short[n], dtype, shape);
        t.copyFrom(f);
        return t;
    }

    /** Runs {@code body} with the heap downcall path of {@code m} forced, restoring the threshold after. */
    static void withMemory(Memory m, Runnable body) {
        double threshold = switch (m) {
            case HEAP_CRITICAL -> Double.MAX_VALUE;
            case HEAP_COPY -> -1;
            case OFF_HEAP -> FlashSig.DEFAULT_CRITICAL_MAX_FLOPS;
        };
        double old = FlashSig.criticalMaxFlops(threshold);
        try {
            body.run();
        } finally {
            FlashSig.criticalMaxFlops(old);
        }
    }

    /**
     * DESIGN.md §6: max|ours − ref64| ≤ 2·max|naive − ref64| + 1e-5; non-finite ref64 must be matched
     * exactly; NaN where ref64 is finite fails.
     */
    static void assertClose(String what, float[] ours, double[] ref64, double[] naive) {
        if (ours.length != ref64.length) fail(what + ": length " + ours.length + " != " + ref64.length);
        double naiveErr = 0;
        for (int i = 0; i < ref64.length; i++)
            if (Double.isFinite(ref64[i])) naiveErr = Math.max(naiveErr, Math.abs(naive[i] - ref64[i]));
        double tol = 2 * naiveErr + 1e-5;
        double worst = 0;
        int worstAt = -1;
        for (int i = 0; i < ref64.length; i++) {
            double o = ours[i], r = ref64[i];
            if (!Double.isFinite(r)) {
                if (Double.compare(o, r) != 0)
                    fail(what + "[" + i + "] = " + o + " but the fp64 reference is " + r + " (must match exactly)");
                continue;
            }
            double e = Math.abs(o - r);
            if (Double.isNaN(o) || e > worst) {
                worst = Double.isNaN(o) ? Double.POSITIVE_INFINITY : e;
                worstAt = i;
                if (Double.isNaN(o)) break;
            }
        }
        if (worst > tol)
            fail(String.format("%s: max|ours - ref64| = %.3g at [%d] (ours %s, ref64 %s, naive %s) exceeds 2 * %.3g + 1e-5",
                    what, worst, worstAt, ours[worstAt], ref64[worstAt], naive[worstAt], naiveErr));
    }
}
