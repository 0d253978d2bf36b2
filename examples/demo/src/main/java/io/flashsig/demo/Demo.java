package io.flashsig.demo;

import io.flashsig.AttentionExtras;
import io.flashsig.AttentionSpec;
import io.flashsig.Cuda;
import io.flashsig.CudaStream;
import io.flashsig.Device;
import io.flashsig.DType;
import io.flashsig.FlashSig;
import io.flashsig.Score;
import io.flashsig.Tensor;

import java.lang.foreign.Arena;
import java.util.Arrays;
import java.util.Random;

/**
 * FlashSig from Java: attention with several score functions on heap arrays and on off-heap
 * memory, each checked against a small Java reference, then CPU throughput for B=1, H=8, N=1024,
 * d=64 fp32. Exits with status 1 if any result is wrong.
 */
public final class Demo {
    /** Every check so far passed. */
    static boolean ok = true;

    private Demo() {}

    public static void main(String[] args) {
        System.out.println("Java " + Runtime.version() + " (" + System.getProperty("java.home") + ")");
        FlashSig.Capabilities caps = FlashSig.capabilities();
        System.out.println("FlashSig " + FlashSig.version() + ": CPU kernels " + caps.cpuIsa() + ", "
                + caps.cpuThreads() + " threads, head dims " + caps.cpuMinHeadDim() + ".." + caps.cpuMaxHeadDim());

        System.out.println();
        System.out.println("Correctness (B=1, Nq=100, Nk=150, Hq=4, Hk=2, d=40, fp32; max |FlashSig - Java reference|):");
        for (Score score : Score.values()) {
            for (boolean causal : new boolean[] {false, true}) {
                AttentionSpec spec = AttentionSpec.of(score).causal(causal);
                ok &= check(spec, false);
                ok &= check(spec, true);
            }
        }
        if (!ok) {
            System.err.println("FAILED: FlashSig disagrees with the Java reference (see above)");
            System.exit(1);
        }

        System.out.println();
        int b = 1, h = 8, n = 1024, d = 64;
        double fwdFlops = 4.0 * b * h * n * n * d;
        System.out.printf("CPU throughput (B=%d, H=%d, N=%d, d=%d, fp32, not causal, off-heap; fwd %.2f GFLOP, bwd 2.5x):%n",
                b, h, n, d, fwdFlops / 1e9);
        try (Arena arena = Arena.ofConfined()) {
            Random r = new Random(1);
            long[] shape = {b, n, h, d};
            Tensor q = random(arena, r, shape), k = random(arena, r, shape), v = random(arena, r, shape);
            Tensor dout = random(arena, r, shape);
            Tensor out = Tensor.allocate(arena, DType.FP32, shape), lse = Tensor.allocate(arena, DType.FP32, b, h, n);
            Tensor dq = Tensor.allocate(arena, DType.FP32, shape), dk = Tensor.allocate(arena, DType.FP32, shape);
            Tensor dv = Tensor.allocate(arena, DType.FP32, shape);
            for (Score score : Score.values()) {
                AttentionSpec spec = AttentionSpec.of(score);
                Tensor l = score == Score.SOFTMAX ? lse : null;
                double fwd = medianSeconds(() -> FlashSig.forward(spec, q, k, v, out, l));
                double bwd = medianSeconds(() -> FlashSig.backward(spec, q, k, v, out, dout, l, dq, dk, dv));
                if (score.isLinear()) // O(N): the quadratic FLOP count does not apply, times only
                    System.out.printf("  %-10s forward %7.2f ms                 backward %7.2f ms%n",
                            score.name().toLowerCase(), fwd * 1e3, bwd * 1e3);
                else
                    System.out.printf("  %-10s forward %7.2f ms %6.1f GFLOP/s   backward %7.2f ms %6.1f GFLOP/s%n",
                            score.name().toLowerCase(), fwd * 1e3, fwdFlops / fwd / 1e9, bwd * 1e3,
                            2.5 * fwdFlops / bwd / 1e9);
            }
        }
        System.out.println();
        if (caps.cudaAvailable()) gpu();
        else System.out.println("GPU: no CUDA device" + (caps.cudaCompiled() ? "" : " (this build has no CUDA code)"));
        if (!ok) System.exit(1);
    }

    /** On cuda:0 through the Java device API: a check against the CPU, then forward TFLOP/s in bf16. */
    static void gpu() {
        Device gpu = Device.cuda(0);
        System.out.println("GPU (cuda:0, bf16, d=128, through Cuda / CudaStream):");
        try (Arena arena = Arena.ofConfined(); CudaStream stream = CudaStream.create(gpu)) {
            AttentionExtras onStream = AttentionExtras.none().stream(stream);
            Random r = new Random(2);
            for (Score score : new Score[] {Score.SOFTMAX, Score.SIGMOID}) {
                // check: N = 512 against the CPU on the same bf16 inputs
                long[] small = {1, 512, 4, 128};
                Tensor[] host = new Tensor[3];
                Tensor[] dev = new Tensor[4];
                for (int i = 0; i < 3; i++) {
                    host[i] = Tensor.allocate(arena, DType.BF16, small);
                    host[i].copyFrom(randn(r, (int) host[i].elementCount()));
                    dev[i] = Cuda.allocate(arena, DType.BF16, gpu, small);
                    Cuda.copy(host[i], dev[i], stream);
                }
                dev[3] = Cuda.allocate(arena, DType.BF16, gpu, small);
                AttentionSpec spec = AttentionSpec.of(score).causal();
                FlashSig.forward(spec, onStream, dev[0], dev[1], dev[2], dev[3], null);
                Tensor fromGpu = Tensor.allocate(arena, DType.BF16, small), cpu = Tensor.allocate(arena, DType.BF16, small);
                Cuda.copy(dev[3], fromGpu, stream);
                stream.synchronize();
                FlashSig.forward(spec, host[0], host[1], host[2], cpu);
                float[] g = fromGpu.toFloatArray(), c = cpu.toFloatArray();
                double err = 0;
                for (int i = 0; i < g.length; i++) err = Math.max(err, Math.abs(g[i] - c[i]) / (1 + Math.abs(c[i])));
                boolean pass = err <= 2e-2;
                ok &= pass;
                System.out.printf("  %-8s causal, N=512: max rel. difference to the CPU %.2e  %s%n",
                        score.name().toLowerCase(), err, pass ? "ok" : "WRONG");

                // throughput: B=1, H=16, N=4096, not causal; the stream is synchronised after each call
                long[] big = {1, 4096, 16, 128};
                Tensor q = Cuda.allocate(arena, DType.BF16, gpu, big), k = Cuda.allocate(arena, DType.BF16, gpu, big);
                Tensor v = Cuda.allocate(arena, DType.BF16, gpu, big), out = Cuda.allocate(arena, DType.BF16, gpu, big);
                AttentionSpec full = AttentionSpec.of(score);
                double t = medianSeconds(() -> {
                    FlashSig.forward(full, onStream, q, k, v, out, null);
                    stream.synchronize();
                });
                double flops = 4.0 * 16 * 4096.0 * 4096.0 * 128;
                System.out.printf("  %-8s forward B=1 H=16 N=4096: %7.3f ms %7.1f TFLOP/s%n", score.name().toLowerCase(),
                        t * 1e3, flops / t / 1e12);
            }
            stream.synchronize();
        }
    }

    /** One forward on heap arrays or off-heap memory against the reference; prints and returns pass/fail. */
    static boolean check(AttentionSpec spec, boolean offHeap) {
        int b = 1, nq = 100, nk = 150, hq = 4, hk = 2, d = 40;
        Random r = new Random(spec.hashCode());
        float[] q = randn(r, b * nq * hq * d), k = randn(r, b * nk * hk * d), v = randn(r, b * nk * hk * d);
        float[] out = new float[q.length];
        Arrays.fill(out, Float.NaN); // anything not written shows up as an error
        long[] qs = {b, nq, hq, d}, ks = {b, nk, hk, d};
        if (offHeap) {
            try (Arena arena = Arena.ofConfined()) {
                Tensor tq = Tensor.allocate(arena, DType.FP32, qs), tk = Tensor.allocate(arena, DType.FP32, ks);
                Tensor tv = Tensor.allocate(arena, DType.FP32, ks), to = Tensor.allocate(arena, DType.FP32, qs);
                tq.copyFrom(q);
                tk.copyFrom(k);
                tv.copyFrom(v);
                to.copyFrom(out);
                FlashSig.forward(spec, tq, tk, tv, to);
                out = to.toFloatArray();
            }
        } else {
            FlashSig.forward(spec, Tensor.of(q, qs), Tensor.of(k, ks), Tensor.of(v, ks), Tensor.of(out, qs));
        }
        double[] ref = reference(spec, q, k, v, b, nq, nk, hq, hk, d);
        double err = 0;
        for (int i = 0; i < out.length; i++) {
            double e = Math.abs(out[i] - ref[i]);
            err = Double.isNaN(e) ? Double.POSITIVE_INFINITY : Math.max(err, e);
        }
        boolean pass = err <= 1e-4;
        System.out.printf("  %-45s %-8s max error %.2e  %s%n", spec, offHeap ? "off-heap" : "heap", err,
                pass ? "ok" : "WRONG");
        return pass;
    }

    /** Naive attention in double (DESIGN.md §4): S = scale·q·k, P = score(S) over allowed keys, O = P·V. */
    static double[] reference(AttentionSpec spec, float[] q, float[] k, float[] v, int b, int nq, int nk, int hq,
                              int hk, int d) {
        double scale = 1 / Math.sqrt(d), bias = -Math.log(nk), factor = 1.0 / nk;
        double[] out = new double[q.length];
        double[] s = new double[nk];
        for (int bb = 0; bb < b; bb++)
            for (int h = 0; h < hq; h++)
                for (int i = 0; i < nq; i++) {
                    int kh = h / (hq / hk), qi = ((bb * nq + i) * hq + h) * d;
                    int last = spec.isCausal() ? Math.min(nk - 1, i + nk - nq) : nk - 1; // bottom-right causal
                    double max = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j <= last; j++) {
                        double dot = 0;
                        for (int c = 0; c < d; c++) dot += (double) q[qi + c] * k[((bb * nk + j) * hk + kh) * d + c];
                        s[j] = scale * dot;
                        max = Math.max(max, s[j]);
                    }
                    double sum = 0;
                    for (int j = 0; j <= last; j++) {
                        double x = s[j];
                        s[j] = switch (spec.score()) {
                            case SOFTMAX -> Math.exp(x - max);
                            case SIGMOID -> 1 / (1 + Math.exp(-(x + bias)));
                            case RELU -> Math.max(x, 0) * factor;
                            case RELU2 -> Math.max(x, 0) * Math.max(x, 0) * factor;
                            case GELU -> 0.5 * x * (1 + erf(x / Math.sqrt(2))) * factor;
                            case SOFTPLUS -> (Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)))) * factor;
                            case IDENTITY -> x * factor;
                            case COSFORMER, LINEAR_ELU -> linearWeight(spec.score(), q, qi, k,
                                    ((bb * nk + j) * hk + kh) * d, d, i + nk - nq, j, Math.max(nq, nk));
                        };
                        sum += s[j];
                    }
                    double norm = spec.score() == Score.SOFTMAX ? 1 / sum
                            : spec.score().isLinear() ? 1 / Math.max(sum, 1e-6) : 1;
                    for (int c = 0; c < d; c++) {
                        double acc = 0;
                        for (int j = 0; j <= last; j++) acc += s[j] * v[((bb * nk + j) * hk + kh) * d + c];
                        out[qi + c] = last < 0 ? 0 : acc * norm;
                    }
                }
        return out;
    }

    /**
     * The weight of key j for query i in linear attention, written quadratically: φ(q)·φ(k), times
     * cos(π(p_i − p_j)/2M) for cosFormer (φ = relu, p_i = i + Nk − Nq, p_j = j); φ = elu + 1 otherwise.
     */
    static double linearWeight(Score score, float[] q, int qi, float[] k, int kj, int d, int pi, int pj, int m) {
        double dot = 0;
        for (int c = 0; c < d; c++) {
            double a = q[qi + c], b = k[kj + c];
            dot += score == Score.COSFORMER ? Math.max(a, 0) * Math.max(b, 0)
                    : (a > 0 ? a + 1 : Math.exp(a)) * (b > 0 ? b + 1 : Math.exp(b));
        }
        return score == Score.COSFORMER ? dot * Math.cos(Math.PI * (pi - pj) / (2.0 * m)) : dot;
    }

    /** erf by its everywhere-positive series, ample for a check at 1e-4. */
    static double erf(double x) {
        double ax = Math.abs(x);
        if (ax > 6) return Math.signum(x);
        double term = ax, sum = ax;
        for (int n = 1; n < 200 && term > 1e-17 * sum; n++) {
            term *= 2 * ax * ax / (2 * n + 1);
            sum += term;
        }
        return Math.copySign(2 / Math.sqrt(Math.PI) * Math.exp(-ax * ax) * sum, x);
    }

    static float[] randn(Random r, int n) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) r.nextGaussian();
        return a;
    }

    static Tensor random(Arena arena, Random r, long[] shape) {
        Tensor t = Tensor.allocate(arena, DType.FP32, shape);
        t.copyFrom(randn(r, (int) t.elementCount()));
        return t;
    }

    /** Median of 5 timed runs after one warm-up run. */
    static double medianSeconds(Runnable call) {
        call.run();
        double[] t = new double[5];
        for (int i = 0; i < t.length; i++) {
            long t0 = System.nanoTime();
            call.run();
            t[i] = (System.nanoTime() - t0) / 1e9;
        }
        Arrays.sort(t);
        return t[t.length / 2];
    }
}
