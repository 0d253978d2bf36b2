package io.flashsig.jmh;

import io.flashsig.AttentionSpec;
import io.flashsig.DType;
import io.flashsig.FlashSig;
import io.flashsig.Tensor;

import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Group;
import org.openjdk.jmh.annotations.GroupThreads;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import java.lang.foreign.Arena;
import java.util.concurrent.TimeUnit;

/**
 * Heap-array inputs through the critical downcall (in place, GC held off for the call) vs the copy
 * path (off-heap scratch, ordinary downcall, outputs copied back), with off-heap tensors as the
 * floor: B = 1, H = 8, d = 64, fp32 softmax, N = Nq = Nk across the default threshold
 * {@code io.flashsig.criticalMaxFlops} = 5e7 FLOPs (forward work 4·B·H·N²·d crosses it between N = 128
 * and N = 192; backward counts 2.5× that).
 *
 * <p>FlashSig reads the threshold once, at class initialisation, so each path is its own fork with
 * the property set: 1e300 = always critical, −1 = never (heap goes through the copy path, off-heap
 * through the ordinary downcall).
 *
 * <p>Two sides of the choice:
 * <ul>
 * <li>the main methods: what copying costs the caller (heapCopy − heapCritical, per call);</li>
 * <li>{@link GcStall}: what a critical call costs everyone else — a second thread that allocates
 * cannot get a GC (no safepoint is reached while a critical downcall runs), so its worst-case
 * latency grows with the call's length; with the copy path it does not.</li>
 * </ul>
 * The threshold should sit where the copy is still a noticeable share of the call while the stall is
 * still short (a fraction of a millisecond). Figures: benchmarks/NOTES.md.
 *
 * <pre>java -jar benchmarks/jmh/target/flashsig-jmh.jar HeapPaths [-p pass=fwd,bwd]</pre>
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsPrepend = {Fixtures.NATIVE_ACCESS, Fixtures.QUIET_UNSAFE})
@State(Scope.Thread)
public class HeapPaths {
    static final long B = 1, H = 8, D = 64;
    static final String ALWAYS_CRITICAL = "-Dio.flashsig.criticalMaxFlops=1e300";
    static final String NEVER_CRITICAL = "-Dio.flashsig.criticalMaxFlops=-1";
    static final String HEAP = "-Xmx512m", YOUNG = "-Xmn32m"; // GcStall: frequent young GCs

    @Param({"64", "128", "192", "256", "512", "1024", "2048"})
    public int n;

    /** fwd, or bwd (softmax backward, 9 tensors: more to copy, 2.5× the work). */
    @Param({"fwd"})
    public String pass;

    private final AttentionSpec spec = AttentionSpec.softmax();
    private Arena arena;
    private Problem heap, offHeap;

    /** The tensors of one call, heap or off-heap. */
    static final class Problem {
        final Tensor q, k, v, out, lse, dout, dq, dk, dv;

        Problem(Arena arena, int n, boolean backward) {
            long[] bshd = {B, n, H, D};
            long[] bhn = {B, H, n};
            boolean h = arena == null;
            q = h ? Fixtures.heap(1, bshd) : Fixtures.offHeap(arena, DType.FP32, 1, bshd);
            k = h ? Fixtures.heap(2, bshd) : Fixtures.offHeap(arena, DType.FP32, 2, bshd);
            v = h ? Fixtures.heap(3, bshd) : Fixtures.offHeap(arena, DType.FP32, 3, bshd);
            out = h ? Fixtures.heapOutput(bshd) : Fixtures.offHeapOutput(arena, DType.FP32, bshd);
            lse = h ? Fixtures.heapOutput(bhn) : Fixtures.offHeapOutput(arena, DType.FP32, bhn);
            dout = backward ? (h ? Fixtures.heap(4, bshd) : Fixtures.offHeap(arena, DType.FP32, 4, bshd)) : null;
            dq = backward ? (h ? Fixtures.heapOutput(bshd) : Fixtures.offHeapOutput(arena, DType.FP32, bshd)) : null;
            dk = backward ? (h ? Fixtures.heapOutput(bshd) : Fixtures.offHeapOutput(arena, DType.FP32, bshd)) : null;
            dv = backward ? (h ? Fixtures.heapOutput(bshd) : Fixtures.offHeapOutput(arena, DType.FP32, bshd)) : null;
        }

        void run(AttentionSpec spec, boolean backward) {
            if (backward) FlashSig.backward(spec, q, k, v, out, dout, lse, dq, dk, dv);
            else FlashSig.forward(spec, q, k, v, out, lse);
        }

        void requireFinite(boolean backward, String what) {
            Fixtures.requireFinite(out, what + " out");
            if (backward) Fixtures.requireFinite(dq, what + " dq");
        }
    }

    private boolean backward() {
        return switch (pass) {
            case "fwd" -> false;
            case "bwd" -> true;
            default -> throw new IllegalArgumentException("pass must be fwd or bwd, not " + pass);
        };
    }

    @Setup(Level.Trial)
    public void setup() {
        arena = Arena.ofConfined();
        heap = new Problem(null, n, backward());
        offHeap = new Problem(arena, n, backward());
        // backward needs the forward's out and lse (softmax); then one call of the pass on both, so
        // tearDown's check holds whichever of them the benchmark method uses
        heap.run(spec, false);
        offHeap.run(spec, false);
        heap.run(spec, backward());
        offHeap.run(spec, backward());
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        heap.requireFinite(backward(), "heap");
        offHeap.requireFinite(backward(), "off-heap");
        arena.close();
    }

    @Benchmark
    @Fork(value = 1, jvmArgsPrepend = {Fixtures.NATIVE_ACCESS, Fixtures.QUIET_UNSAFE},
            jvmArgsAppend = ALWAYS_CRITICAL)
    public void heapCritical() {
        heap.run(spec, backward());
    }

    @Benchmark
    @Fork(value = 1, jvmArgsPrepend = {Fixtures.NATIVE_ACCESS, Fixtures.QUIET_UNSAFE},
            jvmArgsAppend = NEVER_CRITICAL)
    public void heapCopy() {
        heap.run(spec, backward());
    }

    /** The floor: off-heap tensors, ordinary downcall, nothing copied. */
    @Benchmark
    @Fork(value = 1, jvmArgsPrepend = {Fixtures.NATIVE_ACCESS, Fixtures.QUIET_UNSAFE},
            jvmArgsAppend = NEVER_CRITICAL)
    public void offHeap() {
        offHeap.run(spec, backward());
    }

    /**
     * One thread runs heap-array forward calls back to back while another allocates 64 KiB arrays in a
     * small young generation (a young GC every few ms). The allocator's sampled latency — its p99.9 and
     * max — shows how long it waits for a GC the critical call holds off. The native library runs one
     * thread here so each Java thread has a core of a 2-core machine.
     */
    @BenchmarkMode(Mode.SampleTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    @Warmup(iterations = 2, time = 1)
    @Measurement(iterations = 5, time = 1)
    @State(Scope.Group)
    public static class GcStall {
        @Param({"128", "256", "512", "1024"})
        public int n;

        private final AttentionSpec spec = AttentionSpec.softmax();
        private Problem heap;

        @Setup(Level.Trial)
        public void setup() {
            FlashSig.setNumThreads(1);
            heap = new Problem(null, n, false);
        }

        @Benchmark
        @Group("critical")
        @GroupThreads(1)
        @Fork(value = 1, jvmArgsPrepend = {Fixtures.NATIVE_ACCESS, Fixtures.QUIET_UNSAFE},
                jvmArgsAppend = {ALWAYS_CRITICAL, HEAP, YOUNG})
        public void criticalCall() {
            heap.run(spec, false);
        }

        @Benchmark
        @Group("critical")
        @GroupThreads(1)
        @Fork(value = 1, jvmArgsPrepend = {Fixtures.NATIVE_ACCESS, Fixtures.QUIET_UNSAFE},
                jvmArgsAppend = {ALWAYS_CRITICAL, HEAP, YOUNG})
        public byte[] criticalAllocator() {
            return new byte[64 << 10];
        }

        @Benchmark
        @Group("copy")
        @GroupThreads(1)
        @Fork(value = 1, jvmArgsPrepend = {Fixtures.NATIVE_ACCESS, Fixtures.QUIET_UNSAFE},
                jvmArgsAppend = {NEVER_CRITICAL, HEAP, YOUNG})
        public void copyCall() {
            heap.run(spec, false);
        }

        @Benchmark
        @Group("copy")
        @GroupThreads(1)
        @Fork(value = 1, jvmArgsPrepend = {Fixtures.NATIVE_ACCESS, Fixtures.QUIET_UNSAFE},
                jvmArgsAppend = {NEVER_CRITICAL, HEAP, YOUNG})
        public byte[] copyAllocator() {
            return new byte[64 << 10];
        }
    }
}
