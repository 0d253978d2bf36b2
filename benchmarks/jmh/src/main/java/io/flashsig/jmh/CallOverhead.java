package io.flashsig.jmh;

import io.flashsig.AttentionExtras;
import io.flashsig.AttentionSpec;
import io.flashsig.DType;
import io.flashsig.FlashSig;
import io.flashsig.Score;
import io.flashsig.Tensor;

import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import java.lang.foreign.Arena;
import java.util.concurrent.TimeUnit;

/**
 * Cost of one Java call for the tiniest attention (B = H = Nq = Nk = 1, d = 8, fp32, sigmoid), i.e.
 * the Java layer + FFM downcall + the library's validation, with next to no kernel work. Compare with
 * the same call from C++, {@code flashsig-bench --overhead} (which prints the same three calls:
 * forward, forward_ex_buffers as Java calls it, and fsig_get_num_threads as a floor). DESIGN.md §7 target:
 * at most 100 ns over C++.
 *
 * <p>The default threshold (5e7 FLOPs) sends a 32-FLOP call through the critical downcall for both
 * off-heap and heap tensors; the {@code *Plain*} and {@code heapCopyPath} methods fork with the
 * threshold below any work ({@code -Dio.flashsig.criticalMaxFlops=-1}, read once at class init) to
 * show the price of the ordinary downcall (thread-state transition) and of the copy path.
 *
 * <pre>java -jar benchmarks/jmh/target/flashsig-jmh.jar CallOverhead [-prof gc]</pre>
 * {@code -prof gc} should show ~0 B/op for every critical path, with or without extensions.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsPrepend = {Fixtures.NATIVE_ACCESS, Fixtures.QUIET_UNSAFE})
@State(Scope.Thread)
public class CallOverhead {
    static final long D = 8;

    private Arena arena;
    private Tensor q, k, v, out;              // off-heap (confined arena of the benchmark thread)
    private Tensor hq, hk, hv, hout;          // heap float[]
    private Tensor dout, dq, dk, dv;          // off-heap, for backward
    private AttentionExtras alibi;            // one off-heap extension tensor: ALiBi slope [1]
    private final AttentionSpec spec = AttentionSpec.of(Score.SIGMOID);

    @Setup(Level.Trial)
    public void setup() {
        arena = Arena.ofConfined(); // JMH runs Thread-scoped setup on the benchmark thread
        q = Fixtures.offHeap(arena, DType.FP32, 1, 1, 1, 1, D);
        k = Fixtures.offHeap(arena, DType.FP32, 2, 1, 1, 1, D);
        v = Fixtures.offHeap(arena, DType.FP32, 3, 1, 1, 1, D);
        out = Fixtures.offHeapOutput(arena, DType.FP32, 1, 1, 1, D);
        hq = Fixtures.heap(1, 1, 1, 1, D);
        hk = Fixtures.heap(2, 1, 1, 1, D);
        hv = Fixtures.heap(3, 1, 1, 1, D);
        hout = Fixtures.heapOutput(1, 1, 1, D);
        dout = Fixtures.offHeap(arena, DType.FP32, 4, 1, 1, 1, D);
        dq = Fixtures.offHeapOutput(arena, DType.FP32, 1, 1, 1, D);
        dk = Fixtures.offHeapOutput(arena, DType.FP32, 1, 1, 1, D);
        dv = Fixtures.offHeapOutput(arena, DType.FP32, 1, 1, 1, D);
        Tensor slope = Tensor.allocate(arena, DType.FP32, 1);
        slope.set(0.5f, 0);
        alibi = AttentionExtras.none().alibi(slope);
        FlashSig.forward(spec, q, k, v, out);        // loads the library, binds the handles
        FlashSig.forward(spec, hq, hk, hv, hout);
        FlashSig.backward(spec, q, k, v, null, dout, null, dq, dk, dv); // so every trial's tearDown finds dq, dk, dv set
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        Fixtures.requireFinite(out, "off-heap out");
        Fixtures.requireFinite(hout, "heap out");
        Fixtures.requireFinite(dq, "dq");
        Fixtures.requireFinite(dk, "dk");
        Fixtures.requireFinite(dv, "dv");
        arena.close();
    }

    /** Off-heap tensors, critical downcall (the default for a call this small). */
    @Benchmark
    public void offHeap() {
        FlashSig.forward(spec, q, k, v, out);
    }

    /** The same with an extension tensor (ALiBi slopes): the extended call. */
    @Benchmark
    public void offHeapAlibi() {
        FlashSig.forward(spec, alibi, q, k, v, out, null);
    }

    /** Backward of the same call (sigmoid: no out, no lse), off-heap, critical downcall. */
    @Benchmark
    public void offHeapBackward() {
        FlashSig.backward(spec, q, k, v, null, dout, null, dq, dk, dv);
    }

    /** Heap arrays passed in place by the critical downcall. */
    @Benchmark
    public void heap() {
        FlashSig.forward(spec, hq, hk, hv, hout);
    }

    /** Off-heap tensors through the ordinary (non-critical) downcall. */
    @Benchmark
    @Fork(value = 1, jvmArgsPrepend = {Fixtures.NATIVE_ACCESS, Fixtures.QUIET_UNSAFE},
            jvmArgsAppend = "-Dio.flashsig.criticalMaxFlops=-1")
    public void offHeapPlainDowncall() {
        FlashSig.forward(spec, q, k, v, out);
    }

    /** Heap arrays through the copy path: scratch arena, copy in, ordinary downcall, copy out. */
    @Benchmark
    @Fork(value = 1, jvmArgsPrepend = {Fixtures.NATIVE_ACCESS, Fixtures.QUIET_UNSAFE},
            jvmArgsAppend = "-Dio.flashsig.criticalMaxFlops=-1")
    public void heapCopyPath() {
        FlashSig.forward(spec, hq, hk, hv, hout);
    }

    /** A downcall that does nothing (fsig_get_num_threads): the FFM floor under the numbers above. */
    @Benchmark
    public int libraryFloor() {
        return FlashSig.numThreads();
    }
}
