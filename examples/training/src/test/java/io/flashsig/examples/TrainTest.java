package io.flashsig.examples;

import io.flashsig.AttentionSpec;
import io.flashsig.CudaStream;
import io.flashsig.DType;
import io.flashsig.Device;
import io.flashsig.FlashSig;
import io.flashsig.Score;
import io.flashsig.examples.AttentionModel.Dims;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.util.List;
import java.util.Random;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The training example: the loss falls with the fp32 backend (the CPU run) and with the bf16 backend on
 * the CPU (the GPU run's conversions and copies, host memory standing in for the device's); one bf16
 * forward/backward agrees with fp32 within bf16 tolerance; the device choice; and, on a machine with a
 * CUDA device only (skipped elsewhere), the same bf16 checks on the GPU.
 */
class TrainTest {
    static final String[] NAMES = {"softmax", "sigmoid"};
    static final Score[] SCORES = {Score.SOFTMAX, Score.SIGMOID};

    /**
     * Whether the GPU run can run here. Where the system property {@code flashsig.test.requireCuda} is true
     * (the cuda-emulated surefire execution, on libflashsig_emu) a missing device fails instead of skipping.
     */
    static boolean gpu() {
        String why = Train.whyNoGpu(FlashSig.capabilities());
        if (why != null && Boolean.getBoolean("flashsig.test.requireCuda"))
            fail("flashsig.test.requireCuda is set, but the GPU run cannot run: " + why);
        return why == null;
    }

    /** 60 fp32 steps (at a larger learning rate than the example's 300) cut both losses by 4x or more. */
    @Test
    void lossFallsForSoftmaxAndSigmoid() {
        int steps = 60;
        float[][] curves = Train.train(steps, 7, 1e-2f, (s, a, b) -> {});
        assertFalls(curves, 4, "fp32 on the CPU");
    }

    /** The GPU run's configuration (bf16, d = 64) with host memory for device memory. */
    @Test
    void bf16BackendOnTheCpuLearns() {
        trainBf16(Device.CPU, null);
    }

    @Test
    void bf16StepAgreesWithFp32OnTheCpu() {
        agreesWithFp32(Device.CPU, null);
    }

    @Test
    void bf16BackendOnCudaLearns() {
        assumeTrue(gpu(), "no usable CUDA device: the GPU run is skipped");
        try (CudaStream stream = CudaStream.create(Device.cuda(0))) {
            trainBf16(Device.cuda(0), stream);
        }
    }

    @Test
    void bf16StepAgreesWithFp32OnCuda() {
        assumeTrue(gpu(), "no usable CUDA device: the GPU check is skipped");
        try (CudaStream stream = CudaStream.create(Device.cuda(0))) {
            agreesWithFp32(Device.cuda(0), stream);
        }
    }

    @Test
    void deviceChoice() {
        FlashSig.Capabilities none = caps(false, 0, Set.of(), List.of());
        FlashSig.Capabilities noDevice = caps(true, 0, Set.of(DType.FP16, DType.BF16), List.of(64, 128));
        FlashSig.Capabilities gpu = caps(true, 2, Set.of(DType.FP16, DType.BF16), List.of(64, 128));
        // kernels too narrow for d = 64 (a 128-wide one would run it: Capabilities.cudaRunsHeadDim), or no bf16
        FlashSig.Capabilities no64 = caps(true, 1, Set.of(DType.BF16), List.of(32));
        FlashSig.Capabilities noBf16 = caps(true, 1, Set.of(DType.FP16), List.of(64, 128));
        FlashSig.Capabilities only128 = caps(true, 1, Set.of(DType.BF16), List.of(128));
        // a forward that runs d = 64 but a backward that does not (a build whose backward stops below it)
        FlashSig.Capabilities noBackward64 = new FlashSig.Capabilities("avx2", 2, Set.of(DType.values()), 1, 256,
                true, 1, Set.of(DType.BF16), List.of(64, 128), 32);
        assertEquals(Device.CPU, Train.chooseDevice("auto", none).device());
        assertEquals(Device.CPU, Train.chooseDevice("auto", noDevice).device());
        assertEquals(Device.CPU, Train.chooseDevice("auto", no64).device());
        assertEquals(Device.CPU, Train.chooseDevice("auto", noBf16).device());
        assertEquals(Device.cuda(0), Train.chooseDevice("auto", only128).device());
        assertEquals(Device.CPU, Train.chooseDevice("auto", noBackward64).device());
        assertEquals(Device.cuda(0), Train.chooseDevice("auto", gpu).device());
        assertEquals(Device.cuda(0), Train.chooseDevice("cuda", gpu).device());
        assertEquals(Device.CPU, Train.chooseDevice("cpu", gpu).device());
        assertTrue(Train.chooseDevice("auto", noDevice).why().contains("no CUDA device"));
        assertTrue(Train.chooseDevice("auto", none).why().contains("without CUDA"));
        String msg = assertThrows(IllegalArgumentException.class, () -> Train.chooseDevice("cuda", noDevice)).getMessage();
        assertTrue(msg.contains("no CUDA device"), msg);
        msg = assertThrows(IllegalArgumentException.class, () -> Train.chooseDevice("gpu", gpu)).getMessage();
        assertTrue(msg.contains("cpu, cuda or auto"), msg);
    }

    // ---- helpers -------------------------------------------------------------------------------------

    static FlashSig.Capabilities caps(boolean compiled, int devices, Set<DType> dtypes, List<Integer> dims) {
        int backwardMax = dims.stream().mapToInt(Integer::intValue).map(d -> Math.min(d, 128)).max().orElse(0);
        return new FlashSig.Capabilities("avx2", 2, Set.of(DType.values()), 1, 256, compiled, devices, dtypes, dims,
                backwardMax);
    }

    /**
     * Trains both models at the GPU run's size with the bf16 backend on {@code device} for 20 steps (at a
     * larger learning rate than the example's); both losses fall 4x or more (on the CPU: softmax 3.0 to
     * 1e-2, sigmoid 3.0 to 0.1; the bf16 curves follow the fp32 ones to 1e-3).
     */
    static void trainBf16(Device device, CudaStream stream) {
        int steps = 20;
        long t0 = System.nanoTime();
        float[][] curves;
        try (Arena arena = Arena.ofConfined()) {
            curves = Train.train(Train.GPU_DIMS, Bf16Attention.on(arena, device, stream), steps, 7, 1e-2f,
                    (s, a, b) -> {});
        }
        System.out.printf("bf16 on %s: %d steps in %.1f s; softmax %.3f -> %.3f, sigmoid %.3f -> %.3f%n", device,
                steps, (System.nanoTime() - t0) / 1e9, curves[0][0], Train.tailMean(curves[0]), curves[1][0],
                Train.tailMean(curves[1]));
        assertFalls(curves, 4, "bf16 on " + device);
    }

    /** Each score: the mean of the last 10 losses is {@code factor} times below the mean of the first 3. */
    static void assertFalls(float[][] curves, float factor, String what) {
        for (int m = 0; m < 2; m++) {
            float first = (curves[m][0] + curves[m][1] + curves[m][2]) / 3, last = Train.tailMean(curves[m]);
            assertTrue(Float.isFinite(last), NAMES[m] + ", " + what + ": loss is " + last);
            assertTrue(last < first / factor, NAMES[m] + ", " + what + ": loss went from " + first + " to " + last
                    + " in " + curves[m].length + " steps; expected at least a " + factor + "x fall");
        }
    }

    /** bf16's unit roundoff, 2^-9. */
    static final double BF16_U = 0x1p-9;

    /**
     * One forward and backward of the bf16 backend on {@code device} against the fp32 backend on the same
     * inputs rounded to bf16 (so both see the same Q, K, V, dA), at the GPU run's shape: the normwise
     * relative error of A, dQ, dK, dV is at most 4u on the CPU, whose kernels round only what they store
     * (measured 1.7–2.7e-3, 0.9–1.4u), and 8u on CUDA, whose kernels also round P and dS to bf16 for the
     * tensor-core products (not yet measured: no session had a GPU).
     */
    static void agreesWithFp32(Device device, CudaStream stream) {
        double tolerance = (device.isCpu() ? 4 : 8) * BF16_U;
        Dims dims = Train.GPU_DIMS;
        long[] shape = dims.attentionShape();
        int size = dims.batch() * dims.n() * dims.heads() * dims.headDim();
        Random r = new Random(11);
        for (Score score : SCORES) {
            float[] q = bf16Gaussian(r, size, 1.5), k = bf16Gaussian(r, size, 1.5), v = bf16Gaussian(r, size, 1),
                    da = bf16Gaussian(r, size, 1);
            float[][] ref = run(new Fp32Attention(AttentionSpec.of(score), shape), q, k, v, da);
            float[][] got;
            try (Arena arena = Arena.ofConfined()) {
                got = run(new Bf16Attention(arena, device, stream, AttentionSpec.of(score), shape), q, k, v, da);
            }
            String[] what = {"A", "dQ", "dK", "dV"};
            for (int i = 0; i < 4; i++) {
                double err = relativeError(got[i], ref[i]);
                System.out.printf("bf16 %s on %s, %s: relative error %.2e (tolerance %.2e)%n", score, device, what[i],
                        err, tolerance);
                assertTrue(err <= tolerance, "bf16 " + score + " on " + device + ": " + what[i] + " is " + err
                        + " from fp32 (normwise relative), more than " + tolerance);
            }
        }
    }

    static float[][] run(AttentionBackend b, float[] q, float[] k, float[] v, float[] da) {
        float[] a = new float[q.length], dq = new float[q.length], dk = new float[q.length], dv = new float[q.length];
        b.forward(q, k, v, a);
        b.backward(da, dq, dk, dv);
        return new float[][] {a, dq, dk, dv};
    }

    static float[] bf16Gaussian(Random r, int n, double std) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = DType.BF16.round((float) (std * r.nextGaussian()));
        return x;
    }

    /** ‖got − ref‖₂ / ‖ref‖₂. */
    static double relativeError(float[] got, float[] ref) {
        double num = 0, den = 0;
        for (int i = 0; i < ref.length; i++) {
            double d = got[i] - ref[i];
            num += d * d;
            den += (double) ref[i] * ref[i];
        }
        return Math.sqrt(num / den);
    }
}
