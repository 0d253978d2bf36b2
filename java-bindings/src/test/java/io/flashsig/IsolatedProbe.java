package io.flashsig;

import java.util.concurrent.Callable;

/**
 * Runs inside a class loader of its own (see ClassLoaderIsolationTest): version, a small forward,
 * and the file this loader's copy of the library came from.
 */
public final class IsolatedProbe implements Callable<String> {
    @Override
    public String call() {
        int n = 24, d = 16;
        float[] q = new float[n * d], k = new float[n * d], v = new float[n * d], out = new float[n * d];
        for (int i = 0; i < q.length; i++) {
            q[i] = (float) Math.sin(i);
            k[i] = (float) Math.cos(i);
            v[i] = (float) Math.sin(0.37 * i);
        }
        FlashSig.forward(AttentionSpec.of(Score.SIGMOID).causal(), Tensor.of(q, 1, n, 1, d), Tensor.of(k, 1, n, 1, d),
                Tensor.of(v, 1, n, 1, d), Tensor.of(out, 1, n, 1, d));
        double sum = 0;
        for (float x : out) sum += x;
        return FlashSig.version() + "|" + sum + "|" + NativeLibrary.path() + "|" + getClass().getClassLoader().hashCode();
    }
}
