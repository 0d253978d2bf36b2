package io.flashsig.jmh;

import io.flashsig.AttentionSpec;
import io.flashsig.DType;
import io.flashsig.FlashSig;
import io.flashsig.Score;
import io.flashsig.Tensor;

import org.openjdk.jmh.annotations.AuxCounters;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
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
 * CPU kernel throughput seen from Java: B = 1, H = 8, d = 64, Nq = Nk = N, off-heap tensors, no mask,
 * the library's default thread count (all CPUs of the process). Same cases as
 * {@code flashsig-bench --seq 512,1024,4096 --dtype fp32,bf16 --score softmax,sigmoid --pass fwd,bwd}.
 *
 * <p>FLOPs per call (DESIGN.md §7, FlashAttention's count):
 * <pre>
 *   forward  = 4 · B · H · N · N · d          (two matmuls, 2 FLOPs per multiply-add; 2.15e9 at N = 1024)
 *   backward = 2.5 · forward                 (five matmuls of that size, counting the recomputed S)
 * </pre>
 * The primary score is calls/s; the secondary {@code gflop} counter accumulates those FLOPs / 1e9
 * per call, so JMH prints it as GFLOP/s directly ("Throughput.run:gflop ... ops/s" reads GFLOP/s).
 * Softmax forward writes LSE, as training does; softmax backward gets O and LSE from one forward in
 * setup. Sigmoid uses the default bias −ln N.
 *
 * <pre>java -jar benchmarks/jmh/target/flashsig-jmh.jar Throughput [-p n=1024 -p dtype=fp32]</pre>
 */
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@Warmup(iterations = 2, time = 2)
@Measurement(iterations = 3, time = 2)
@Fork(value = 1, jvmArgsPrepend = {Fixtures.NATIVE_ACCESS, Fixtures.QUIET_UNSAFE})
@State(Scope.Thread)
public class Throughput {
    static final long B = 1, H = 8, D = 64;

    @Param({"512", "1024", "4096"})
    public int n;

    @Param({"fp32", "bf16"})
    public String dtype;

    @Param({"softmax", "sigmoid"})
    public String score;

    @Param({"fwd", "bwd"})
    public String pass;

    private Arena arena;
    private AttentionSpec spec;
    private boolean backward, softmax;
    private double gflopPerCall;
    private Tensor q, k, v, out, lse, dout, dq, dk, dv;

    /** FLOPs done, in units of 1e9; a rate in the output (GFLOP/s). */
    @AuxCounters(AuxCounters.Type.OPERATIONS)
    @State(Scope.Thread)
    public static class Flops {
        public double gflop;

        @Setup(Level.Iteration)
        public void reset() {
            gflop = 0;
        }
    }

    @Setup(Level.Trial)
    public void setup() {
        DType t = switch (dtype) {
            case "fp32" -> DType.FP32;
            case "bf16" -> DType.BF16;
            case "fp16" -> DType.FP16;
            default -> throw new IllegalArgumentException("dtype: fp32, bf16 or fp16, not " + dtype);
        };
        Score s = Score.valueOf(score.toUpperCase(java.util.Locale.ROOT));
        backward = switch (pass) {
            case "fwd" -> false;
            case "bwd" -> true;
            default -> throw new IllegalArgumentException("pass: fwd or bwd, not " + pass);
        };
        softmax = s == Score.SOFTMAX;
        spec = AttentionSpec.of(s);
        gflopPerCall = Fixtures.forwardFlops(B, H, n, n, D) * (backward ? 2.5 : 1.0) / 1e9;

        arena = Arena.ofConfined();
        long[] bshd = {B, n, H, D};
        q = Fixtures.offHeap(arena, t, 1, bshd);
        k = Fixtures.offHeap(arena, t, 2, bshd);
        v = Fixtures.offHeap(arena, t, 3, bshd);
        out = Fixtures.offHeapOutput(arena, t, bshd);
        lse = softmax ? Fixtures.offHeapOutput(arena, DType.FP32, B, H, n) : null;
        if (backward) {
            dout = Fixtures.offHeap(arena, t, 4, bshd);
            dq = Fixtures.offHeapOutput(arena, t, bshd);
            dk = Fixtures.offHeapOutput(arena, t, bshd);
            dv = Fixtures.offHeapOutput(arena, t, bshd);
        }
        FlashSig.forward(spec, q, k, v, out, lse); // backward's O and LSE; also the library load
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        Fixtures.requireFinite(out, "out");
        if (backward) {
            Fixtures.requireFinite(dq, "dq");
            Fixtures.requireFinite(dk, "dk");
            Fixtures.requireFinite(dv, "dv");
        }
        arena.close();
    }

    @Benchmark
    public void run(Flops flops) {
        if (backward) FlashSig.backward(spec, q, k, v, softmax ? out : null, dout, lse, dq, dk, dv);
        else FlashSig.forward(spec, q, k, v, out, lse);
        flops.gflop += gflopPerCall;
    }
}
