package io.flashsig.nd4j;

import io.flashsig.DType;
import io.flashsig.nd4j.FlashSigNd4j.Layout;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

/** Test helpers: BSHD double[] to and from INDArrays in any layout and order, and the §6 tolerance check. */
final class Nd4jSupport {
    private Nd4jSupport() {}

    static DType fsig(DataType t) {
        return FlashSigNd4j.dtype(t, "t");
    }

    /** Standard normal values already rounded to {@code t}. */
    static double[] randn(Random r, DataType t, int n) {
        double[] a = new double[n];
        for (int i = 0; i < n; i++) a[i] = fsig(t).round((float) r.nextGaussian());
        return a;
    }

    /** The array dims of BSHD dims {@code bshd} in layout l. */
    static long[] shape(Layout l, long b, long n, long h, long d) {
        return switch (l) {
            case BHDN -> new long[] {b, h, d, n};
            case BNHD -> new long[] {b, n, h, d};
            case BHND -> new long[] {b, h, n, d};
        };
    }

    /** The array index of BSHD element (b, n, h, c) in layout l. */
    static long[] index(Layout l, long b, long n, long h, long c) {
        return shape(l, b, n, h, c);
    }

    /** A new array in layout l and order {@code order}, holding BSHD values {@code x} of dims [b, n, h, d]. */
    static INDArray array(Layout l, DataType t, char order, double[] x, int b, int n, int h, int d) {
        INDArray a = Nd4j.create(t, shape(l, b, n, h, d), order);
        int i = 0;
        for (int bb = 0; bb < b; bb++)
            for (int s = 0; s < n; s++)
                for (int hh = 0; hh < h; hh++)
                    for (int c = 0; c < d; c++) a.putScalar(index(l, bb, s, hh, c), x[i++]);
        return a;
    }

    /** An array of NaNs (unwritten elements then fail). */
    static INDArray poisoned(Layout l, DataType t, char order, int b, int n, int h, int d) {
        INDArray a = Nd4j.create(t, shape(l, b, n, h, d), order);
        a.assign(Double.NaN);
        return a;
    }

    /** The BSHD values of an array in layout l. */
    static double[] values(Layout l, INDArray a) {
        long[] s = a.shape();
        long b = s[0], n, h, d;
        switch (l) {
            case BHDN -> { h = s[1]; d = s[2]; n = s[3]; }
            case BNHD -> { n = s[1]; h = s[2]; d = s[3]; }
            default -> { h = s[1]; n = s[2]; d = s[3]; }
        }
        double[] x = new double[(int) (b * n * h * d)];
        int i = 0;
        for (int bb = 0; bb < b; bb++)
            for (int ss = 0; ss < n; ss++)
                for (int hh = 0; hh < h; hh++)
                    for (int c = 0; c < d; c++) x[i++] = a.getDouble(index(l, bb, ss, hh, c));
        return x;
    }

    /** DESIGN.md §6: max|ours − ref64| ≤ 2·max|naive − ref64| + 1e-5; NaN where ref64 is finite fails. */
    static void assertClose(String what, double[] ours, double[] ref64, double[] naive) {
        assertEquals(ref64.length, ours.length, what + ": length");
        double errOurs = 0, errNaive = 0;
        int worst = -1;
        for (int i = 0; i < ref64.length; i++) {
            if (!Double.isFinite(ref64[i])) {
                if (Double.compare(ours[i], ref64[i]) != 0) fail(what + "[" + i + "] is " + ours[i] + " but ref64 is "
                        + ref64[i]);
                continue;
            }
            double e = Math.abs(ours[i] - ref64[i]);
            if (Double.isNaN(e)) fail(what + "[" + i + "] is NaN (ref64 " + ref64[i] + ")");
            if (e > errOurs) {
                errOurs = e;
                worst = i;
            }
            errNaive = Math.max(errNaive, Math.abs(naive[i] - ref64[i]));
        }
        double tol = 2 * errNaive + 1e-5;
        if (errOurs > tol)
            fail(what + ": max|ours - ref64| = " + errOurs + " at " + worst + " (ours " + ours[worst] + ", ref64 "
                    + ref64[worst] + ") > 2 * " + errNaive + " + 1e-5");
    }
}
