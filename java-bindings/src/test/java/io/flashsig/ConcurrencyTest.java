package io.flashsig;

import io.flashsig.FlashSigException.Status;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Many Java threads at once: results bitwise equal to the same calls made serially, per-thread error
 * messages, an arena closed by another thread while calls run on it, and no native memory growth.
 */
class ConcurrencyTest {
    static final int THREADS = 16;

    /** One call of the mixed workload: everything it needs is derived from its index. */
    record Job(int id, Score score, DType dtype, boolean offHeap, boolean backward, boolean causal, int b, int nq,
               int nk, int hq, int hk, int d) {
        static Job of(int id) {
            Random r = new Random(1000 + id);
            Score score = Score.values()[id % 7];  // the quadratic scores (the linear ones: LinearAttentionTest)
            DType dtype = DType.values()[(id / 7) % 3];
            int hk = 1 + r.nextInt(2);
            return new Job(id, score, dtype, id % 2 == 0, id % 3 != 0, r.nextBoolean(), 1 + r.nextInt(2),
                    1 + r.nextInt(40), 1 + r.nextInt(40), hk * (1 + r.nextInt(2)), hk, 1 + r.nextInt(48));
        }

        AttentionSpec spec() {
            AttentionSpec s = AttentionSpec.of(score).causal(causal);
            return id % 5 == 0 ? s.window(7, 2) : s;
        }

        /** Runs the call on fresh inputs; returns the raw bytes of every output. */
        byte[][] run() {
            Random r = new Random(id);
            long[] qs = {b, nq, hq, d}, ks = {b, nk, hk, d};
            try (Arena arena = Arena.ofConfined()) {
                Tensor q = make(arena, r, qs, true), k = make(arena, r, ks, true), v = make(arena, r, ks, true);
                Tensor out = make(arena, r, qs, !backward);
                boolean softmax = score == Score.SOFTMAX;
                Tensor lse = softmax ? makeF32(arena, b, hq, nq) : null;
                AttentionSpec spec = spec();
                FlashSig.forward(spec, q, k, v, out, lse);
                if (!backward) return new byte[][] {bytes(out), lse == null ? new byte[0] : bytes(lse)};
                Tensor dout = make(arena, r, qs, true), dq = make(arena, r, qs, false);
                Tensor dk = make(arena, r, ks, false), dv = make(arena, r, ks, false);
                FlashSig.backward(spec, q, k, v, softmax ? out : null, dout, lse, dq, dk, dv);
                return new byte[][] {bytes(out), lse == null ? new byte[0] : bytes(lse), bytes(dq), bytes(dk), bytes(dv)};
            }
        }

        private Tensor make(Arena arena, Random r, long[] shape, boolean random) {
            int n = (int) Arrays.stream(shape).reduce(1, (x, y) -> x * y);
            Tensor t = offHeap ? Tensor.allocate(arena, dtype, shape)
                    : dtype == DType.FP32 ? Tensor.of(new float[n], shape) : Tensor.of(new short[n], dtype, shape);
            if (random) t.copyFrom(TestSupport.toFloats(TestSupport.randn(r, dtype, n)));
            return t;
        }

        private Tensor makeF32(Arena arena, long... shape) {
            int n = (int) Arrays.stream(shape).reduce(1, (x, y) -> x * y);
            return offHeap ? Tensor.allocate(arena, DType.FP32, shape) : Tensor.of(new float[n], shape);
        }

        private static byte[] bytes(Tensor t) {
            return t.segment().toArray(ValueLayout.JAVA_BYTE);
        }
    }

    @Test
    void sixteenThreadsMatchSerialBitwise() throws Exception {
        int jobs = 64;
        byte[][][] serial = new byte[jobs][][];
        for (int i = 0; i < jobs; i++) serial[i] = Job.of(i).run();
        ExecutorService pool = Executors.newFixedThreadPool(THREADS);
        try {
            List<Future<Integer>> futures = new ArrayList<>();
            for (int t = 0; t < THREADS; t++) {
                int tid = t;
                futures.add(pool.submit(() -> {
                    int done = 0;
                    for (int it = 0; it < 24; it++) {
                        int j = (tid * 7 + it * 5) % jobs;
                        byte[][] got = Job.of(j).run();
                        for (int o = 0; o < got.length; o++)
                            if (!Arrays.equals(serial[j][o], got[o]))
                                fail("thread " + tid + ", job " + Job.of(j) + ": output " + o + " differs from the serial run");
                        // an error on this thread names this thread's argument, and does not outlive the next call
                        String bad = tid % 3 == 0 ? "k" : tid % 3 == 1 ? "v" : "out";
                        FlashSigException e = badCall(bad, tid);
                        assertEquals(Status.INVALID_SHAPE, e.status());
                        assertTrue(e.getMessage().startsWith(bad + ".shape[3] (head_dim) is " + (50 + tid)),
                                "thread " + tid + " got '" + e.getMessage() + "'");
                        done++;
                    }
                    return done;
                }));
            }
            int total = 0;
            for (Future<Integer> f : futures) total += f.get();
            assertEquals(THREADS * 24, total);
        } finally {
            pool.shutdownNow();
        }
    }

    /** A call whose {@code name} tensor has head_dim 50 + tid (wrong): the message carries both. */
    static FlashSigException badCall(String name, int tid) {
        int wrong = 50 + tid;
        Tensor q = Tensor.of(new float[4 * 8], 1, 4, 1, 8), k = Tensor.of(new float[6 * 8], 1, 6, 1, 8);
        Tensor out = Tensor.of(new float[4 * 8], 1, 4, 1, 8);
        Tensor bad = name.equals("out") ? Tensor.of(new float[4 * wrong], 1, 4, 1, wrong) : Tensor.of(new float[6 * wrong], 1, 6, 1, wrong);
        try {
            switch (name) {
                case "k" -> FlashSig.forward(AttentionSpec.softmax(), q, bad, k, out);
                case "v" -> FlashSig.forward(AttentionSpec.softmax(), q, k, bad, out);
                default -> FlashSig.forward(AttentionSpec.softmax(), q, k, k, bad);
            }
        } catch (FlashSigException e) {
            return e;
        }
        throw new AssertionError(name + ": the bad call succeeded");
    }

    /**
     * An Arena.ofShared() closed by another thread while calls run on its tensors: each call holds the
     * arena for its duration (its segments are downcall arguments), so close() fails while one runs and
     * succeeds between calls; afterwards calls are refused. Nothing else may happen (no crash, no other
     * exception).
     */
    @Test
    void sharedArenaClosedWhileCallsRun() throws Exception {
        for (int round = 0; round < 3; round++) {
            Arena shared = Arena.ofShared();
            int n = 96, h = 2, d = 32;
            Tensor q = Tensor.allocate(shared, DType.FP32, 1, n, h, d), k = Tensor.allocate(shared, DType.FP32, 1, n, h, d);
            Tensor v = Tensor.allocate(shared, DType.FP32, 1, n, h, d);
            q.copyFrom(TestSupport.toFloats(TestSupport.randn(new Random(round), DType.FP32, n * h * d)));
            AtomicInteger ok = new AtomicInteger(), refused = new AtomicInteger();
            AtomicBoolean closed = new AtomicBoolean(), pause = new AtomicBoolean();
            ExecutorService pool = Executors.newFixedThreadPool(8);
            List<Future<?>> futures = new ArrayList<>();
            int heapOut = round; // round 1+: some outputs on the heap (they stay valid after the close)
            for (int t = 0; t < 8; t++) {
                int tid = t;
                futures.add(pool.submit(() -> {
                    float[] heap = new float[n * h * d];
                    Tensor out;
                    try {
                        out = heapOut > 0 && tid % 2 == 0 ? Tensor.of(heap, 1, n, h, d) : Tensor.allocate(shared, DType.FP32, 1, n, h, d);
                    } catch (IllegalStateException e) {
                        refused.incrementAndGet(); // the arena closed before this thread allocated
                        return null;
                    }
                    for (int i = 0; ; i++) {
                        // every thread calls until it is refused; if close() has found no gap between
                        // calls for a while (a loaded machine), the closer asks the callers to pause
                        while (pause.get() && !closed.get()) Thread.onSpinWait();
                        boolean closedBefore = closed.get();
                        try {
                            FlashSig.forward(AttentionSpec.of(Score.values()[(tid + i) % 7]).causal(tid % 2 == 0), q, k, v, out);
                            assertFalse(closedBefore, "a call succeeded on a closed arena");
                            ok.incrementAndGet();
                        } catch (FlashSigException e) {
                            assertEquals(Status.SEGMENT_NOT_ACCESSIBLE, e.status(), e.getMessage());
                            assertTrue(e.getMessage().contains("its arena is closed"), e.getMessage());
                            refused.incrementAndGet();
                            return null;
                        } catch (IllegalStateException e) {
                            assertTrue(closed.get() || e.getMessage().contains("closed"), e.toString());
                            refused.incrementAndGet(); // closed between the liveness check and the downcall
                            return null;
                        }
                    }
                }));
            }
            Thread.sleep(30);
            int attempts = 0;
            long giveUpRacing = System.nanoTime() + 200_000_000L;
            while (true) {
                try {
                    shared.close();
                    closed.set(true);
                    break;
                } catch (IllegalStateException e) {
                    attempts++; // a call holds the arena: try again
                    if (System.nanoTime() > giveUpRacing) pause.set(true);
                    Thread.onSpinWait();
                }
            }
            for (Future<?> f : futures) f.get();
            pool.shutdown();
            assertEquals(8, refused.get(), "threads refused after the close (" + ok.get() + " calls, " + attempts + " close attempts)");
        }
    }

    /**
     * 1e5 small calls (fresh tensors, heap and off-heap, errors too) after as many for warm-up: RSS, less
     * what the Java heap committed meanwhile (the JVM may size its heap up on a loaded machine), grows
     * < 64 MiB.
     */
    @Test
    void noNativeMemoryGrowth() throws Exception {
        Runnable batch = () -> {
            for (int i = 0; i < 1000; i++) smallCall(i);
        };
        for (int i = 0; i < 100; i++) batch.run(); // warm-up: JIT, thread pool, heap sizing, malloc arenas
        System.gc();
        long before = rssKib(), heapBefore = heapCommittedKib();
        for (int i = 0; i < 100; i++) batch.run();
        System.gc();
        Thread.sleep(100); // let the cleaners of the automatic arenas run
        long after = rssKib(), heapGrowth = Math.max(0, heapCommittedKib() - heapBefore);
        long nativeGrowth = after - before - heapGrowth;
        assertTrue(nativeGrowth < 64 * 1024, "RSS grew by " + (after - before) + " KiB over 1e5 calls (" + before
                + " -> " + after + "), of which the Java heap committed " + heapGrowth + " KiB");
    }

    static long heapCommittedKib() {
        return java.lang.management.ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getCommitted() / 1024;
    }

    private static final float[] SMALL = new float[4 * 2 * 8];

    static {
        for (int i = 0; i < SMALL.length; i++) SMALL[i] = (float) Math.sin(i);
    }

    static void smallCall(int i) {
        switch (i % 4) {
            case 0 -> FlashSig.forward(AttentionSpec.softmax(), Tensor.of(SMALL, 1, 4, 2, 8), Tensor.of(SMALL, 1, 4, 2, 8),
                    Tensor.of(SMALL, 1, 4, 2, 8), Tensor.of(new float[64], 1, 4, 2, 8), Tensor.of(new float[8], 1, 2, 4));
            case 1 -> {
                try (Arena a = Arena.ofConfined()) {
                    Tensor q = Tensor.allocate(a, DType.BF16, 1, 4, 2, 8);
                    FlashSig.backward(AttentionSpec.of(Score.GELU), q, q, q, null, q, null, Tensor.allocate(a, DType.BF16, 1, 4, 2, 8),
                            Tensor.allocate(a, DType.BF16, 1, 4, 2, 8), Tensor.allocate(a, DType.BF16, 1, 4, 2, 8));
                }
            }
            case 2 -> {
                try {
                    FlashSig.forward(AttentionSpec.softmax(), Tensor.of(SMALL, 1, 4, 2, 8), Tensor.of(SMALL, 1, 8, 1, 8),
                            Tensor.of(SMALL, 1, 4, 2, 8), Tensor.of(new float[64], 1, 4, 2, 8));
                    throw new AssertionError("expected a refusal");
                } catch (FlashSigException e) {
                    assertEquals(Status.INVALID_SHAPE, e.status());
                }
            }
            default -> {
                try (Arena a = Arena.ofConfined()) {
                    MemorySegment s = a.allocate(64 * 2, 64);
                    Tensor t = Tensor.wrap(s, DType.FP16, new long[] {1, 4, 2, 8}, Tensor.contiguousStrides(1, 4, 2, 8));
                    FlashSig.forward(AttentionSpec.of(Score.SIGMOID).window(1, 0), Tensor.of(new short[64], DType.FP16, 1, 4, 2, 8),
                            Tensor.of(new short[64], DType.FP16, 1, 4, 2, 8), Tensor.of(new short[64], DType.FP16, 1, 4, 2, 8), t);
                }
            }
        }
    }

    static long rssKib() throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status")))
            if (line.startsWith("VmRSS:")) return Long.parseLong(line.replaceAll("[^0-9]", ""));
        throw new IOException("no VmRSS in /proc/self/status");
    }
}
