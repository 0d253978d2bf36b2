package io.flashsig;

import io.flashsig.FlashSigException.Status;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Results do not depend on the thread count, and calls from many threads at once are independent. */
class ThreadingTest {
    /** forward out + lse and backward dq, dk, dv of one fixed problem, as float arrays. */
    static float[][] run(AttentionSpec spec, long seed) {
        return run(spec, seed, 77, 131, 48);
    }

    static float[][] run(AttentionSpec spec, long seed, int nq, int nk, int d) {
        int b = 1, hq = 4, hk = 2;
        Random r = new Random(seed);
        float[] q = TestSupport.toFloats(TestSupport.randn(r, DType.FP32, b * nq * hq * d));
        float[] k = TestSupport.toFloats(TestSupport.randn(r, DType.FP32, b * nk * hk * d));
        float[] v = TestSupport.toFloats(TestSupport.randn(r, DType.FP32, b * nk * hk * d));
        float[] dout = TestSupport.toFloats(TestSupport.randn(r, DType.FP32, b * nq * hq * d));
        float[] out = new float[q.length], dq = new float[q.length], dk = new float[k.length], dv = new float[v.length];
        boolean softmax = spec.score() == Score.SOFTMAX;
        float[] lse = new float[b * hq * nq];
        Tensor tq = Tensor.of(q, b, nq, hq, d), tk = Tensor.of(k, b, nk, hk, d), tv = Tensor.of(v, b, nk, hk, d);
        Tensor tout = Tensor.of(out, b, nq, hq, d), tlse = softmax ? Tensor.of(lse, b, hq, nq) : null;
        FlashSig.forward(spec, tq, tk, tv, tout, tlse);
        FlashSig.backward(spec, tq, tk, tv, tout, Tensor.of(dout, b, nq, hq, d), tlse, Tensor.of(dq, b, nq, hq, d),
                Tensor.of(dk, b, nk, hk, d), Tensor.of(dv, b, nk, hk, d));
        return new float[][] {out, lse, dq, dk, dv};
    }

    static final AttentionSpec[] SPECS = {AttentionSpec.softmax().causal(), AttentionSpec.of(Score.SIGMOID).window(20, 3),
            AttentionSpec.of(Score.GELU)};

    @Test
    void resultsDoNotDependOnThreadCount() {
        try {
            for (AttentionSpec spec : SPECS) {
                FlashSig.setNumThreads(1);
                assertEquals(1, FlashSig.numThreads());
                float[][] one = run(spec, 3);
                for (int n : new int[] {2, 3, 5}) {
                    FlashSig.setNumThreads(n);
                    assertEquals(n, FlashSig.numThreads());
                    float[][] many = run(spec, 3);
                    for (int i = 0; i < one.length; i++)
                        assertArrayEquals(one[i], many[i], spec + ": output " + i + " differs with " + n + " threads");
                }
            }
        } finally {
            FlashSig.setNumThreads(0);
        }
        assertTrue(FlashSig.numThreads() >= 1);
    }

    /**
     * The CPU backend keeps buffers of 1 MiB and more between calls (here packed K and V of two kv heads,
     * 700 keys at d = 128): results are the same from fresh buffers and from ones another problem wrote,
     * and releasing them while other threads' calls run changes nothing either.
     */
    @Test
    void releasingCachedMemoryChangesNoResult() throws Exception {
        AttentionSpec spec = AttentionSpec.softmax().causal();
        FlashSig.releaseCachedMemory();
        float[][] fresh = run(spec, 7, 300, 700, 128);
        run(AttentionSpec.of(Score.SIGMOID), 8, 500, 900, 112);
        float[][] reused = run(spec, 7, 300, 700, 128);
        for (int i = 0; i < fresh.length; i++) assertArrayEquals(fresh[i], reused[i], "output " + i + " differs when reused");
        ExecutorService pool = Executors.newFixedThreadPool(3);
        try {
            List<Future<float[][]>> calls = new ArrayList<>();
            for (int t = 0; t < 3; t++) calls.add(pool.submit(() -> run(spec, 7, 300, 700, 128)));
            while (!calls.stream().allMatch(Future::isDone)) FlashSig.releaseCachedMemory();
            for (Future<float[][]> call : calls) {
                float[][] got = call.get();
                for (int i = 0; i < fresh.length; i++) assertArrayEquals(fresh[i], got[i], "output " + i + " differs");
            }
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void eightThreadsAtOnce() throws Exception {
        float[][][] expected = new float[SPECS.length][][];
        for (int s = 0; s < SPECS.length; s++) expected[s] = run(SPECS[s], 100 + s);
        ExecutorService pool = Executors.newFixedThreadPool(8);
        try (Arena shared = Arena.ofShared()) {
            Tensor sharedBad = Tensor.allocate(shared, DType.FP16, 1, 4, 1, 8); // fp16 next to fp32: an error
            List<Future<?>> futures = new ArrayList<>();
            for (int t = 0; t < 8; t++) {
                int id = t;
                futures.add(pool.submit(() -> {
                    for (int it = 0; it < 6; it++) {
                        int s = (id + it) % SPECS.length;
                        float[][] got = run(SPECS[s], 100 + s);
                        for (int i = 0; i < got.length; i++)
                            assertArrayEquals(expected[s][i], got[i], "thread " + id + " " + SPECS[s] + " output " + i);
                        // errors are per thread: this thread's message names this thread's argument
                        String name = id % 2 == 0 ? "k" : "v";
                        Tensor ok = Tensor.of(new float[32], 1, 4, 1, 8);
                        FlashSigException e = assertThrows(FlashSigException.class, () -> FlashSig.forward(
                                AttentionSpec.softmax(), ok, name.equals("k") ? sharedBad : ok,
                                name.equals("v") ? sharedBad : ok, Tensor.of(new float[32], 1, 4, 1, 8)));
                        assertEquals(Status.INVALID_DTYPE, e.status());
                        assertTrue(e.getMessage().contains(name + " is fp16"), e.getMessage());
                    }
                    return null;
                }));
            }
            for (Future<?> f : futures) f.get();
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void heapPathsAgree() {
        // the critical and the copy path give the same bits
        float[][] crit = new float[0][], copy = new float[0][];
        double old = FlashSig.criticalMaxFlops(Double.MAX_VALUE);
        try {
            crit = run(SPECS[0], 9);
            FlashSig.criticalMaxFlops(-1);
            copy = run(SPECS[0], 9);
        } finally {
            FlashSig.criticalMaxFlops(old);
        }
        for (int i = 0; i < crit.length; i++) assertTrue(Arrays.equals(crit[i], copy[i]), "output " + i);
    }

    /**
     * Tensors and specs made inline become unreachable during the call; their native descriptors must
     * stay valid until it returns (FlashSig fences them) while the GC runs.
     */
    @Test
    void inlineTensorsSurviveGc() throws Exception {
        Thread gc = Thread.ofPlatform().daemon().start(() -> {
            while (!Thread.currentThread().isInterrupted()) System.gc();
        });
        try {
            float[] expected = null;
            for (int i = 0; i < 100; i++) {
                float[] q = new float[64 * 16], out = new float[64 * 16];
                for (int j = 0; j < q.length; j++) q[j] = (float) Math.sin(j);
                FlashSig.forward(AttentionSpec.of(Score.SIGMOID).scale(0.5f), Tensor.of(q, 1, 64, 1, 16),
                        Tensor.of(q, 1, 64, 1, 16), Tensor.of(q, 1, 64, 1, 16), Tensor.of(out, 1, 64, 1, 16));
                if (expected == null) expected = out;
                else assertArrayEquals(expected, out, "iteration " + i);
            }
        } finally {
            gc.interrupt();
            gc.join();
        }
    }
}
