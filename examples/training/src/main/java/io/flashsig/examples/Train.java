package io.flashsig.examples;

import io.flashsig.CudaStream;
import io.flashsig.DType;
import io.flashsig.Device;
import io.flashsig.FlashSig;
import io.flashsig.Score;
import io.flashsig.examples.AttentionModel.Dims;

import java.lang.foreign.Arena;
import java.util.Random;

/**
 * Trains {@link AttentionModel} to reverse sequences of random tokens, once with softmax attention and
 * once with sigmoid attention (b = −ln N), on the same batches, and prints both losses as they fall.
 * <pre>
 *   mvn -B -q -Ptrain -DskipTests -pl examples/training -am verify      (from the repository root)
 *   java -jar examples/training/target/flashsig-training.jar [steps] [--device cpu|cuda|auto] [--bf16]
 * </pre>
 * Reversal needs position-to-position attention (query i looks at key N−1−i), which one attention
 * layer over learned position embeddings can learn; chance level is ln(vocab).
 *
 * <p><b>Device.</b> {@code --device auto} (the default) takes CUDA device 0 when
 * {@link FlashSig#capabilities()} reports one with bf16 kernels for d = 64, and the CPU otherwise;
 * {@code cpu} and {@code cuda} force one ({@code cuda} fails without a usable device). On the CPU the
 * attention runs in fp32 at d = 16 ({@link Fp32Attention}); on CUDA in bf16 at d = 64, the kernels' smallest
 * head dim ({@link Bf16Attention}: Q, K, V rounded to bf16, copied to device tensors allocated once, forward
 * with LSE, fast backward with one workspace, on one stream, results copied back and widened). The rest of
 * the model — embeddings, projections, loss, Adam — stays in fp32 on the CPU heap either way.
 * {@code --bf16} runs that GPU configuration (bf16, d = 64) on the CPU, with host memory for device memory.
 */
public final class Train {
    static final int VOCAB = 16, N = 16, BATCH = 32;
    /** The CPU run: fp32, small enough for a few seconds on 2 cores. */
    static final Dims CPU_DIMS = new Dims(VOCAB, N, BATCH, 2, 16);
    /** The GPU run (and {@code --bf16}): bf16, d = 64, the narrower of the CUDA kernels' widths. */
    static final Dims GPU_DIMS = new Dims(VOCAB, N, BATCH, 2, 64);
    static final float LR = 3e-3f;
    static final String USAGE = "usage: Train [steps] [--device cpu|cuda|auto] [--bf16]";

    private Train() {}

    public static void main(String[] args) {
        int steps = 300;
        String deviceFlag = "auto";
        boolean bf16 = false;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("--device") && i + 1 < args.length) deviceFlag = args[++i];
            else if (a.startsWith("--device=")) deviceFlag = a.substring("--device=".length());
            else if (a.equals("--bf16")) bf16 = true;
            else if (a.matches("\\d+")) steps = Integer.parseInt(a);
            else exit(a + " is not an argument here; " + USAGE);
        }
        Choice choice;
        try {
            choice = chooseDevice(deviceFlag, FlashSig.capabilities());
        } catch (IllegalArgumentException e) {
            exit(e.getMessage());
            return;
        }
        Device device = choice.device();
        bf16 |= !device.isCpu();
        Dims dims = bf16 ? GPU_DIMS : CPU_DIMS;
        System.out.printf("FlashSig %s (%d CPU threads); device %s (%s)%n", FlashSig.version(), FlashSig.numThreads(),
                device, choice.why());
        System.out.printf("one attention layer (H=%d, d=%d) learns to reverse %d tokens (vocab %d, batch %d, Adam lr"
                        + " %.0e); chance loss ln %d = %.3f%n", dims.heads(), dims.headDim(), N, VOCAB, BATCH, LR, VOCAB,
                Math.log(VOCAB));
        // the arena holds every tensor of the run and closes after the stream (resources close in reverse)
        try (Arena arena = Arena.ofConfined(); CudaStream stream = device.isCpu() ? null : CudaStream.create(device)) {
            AttentionBackend.Factory backends = bf16 ? Bf16Attention.on(arena, device, stream) : Fp32Attention::new;
            long t0 = System.nanoTime();
            int total = steps;
            float[][] curves = train(dims, backends, steps, 42, LR, new Progress() {
                @Override
                public void started(String attention) {
                    System.out.println("attention: " + attention);
                }

                @Override
                public void step(int step, float sm, float sg) {
                    // every 5th step up to 25 (the d = 64 run learns within them), then every 25th
                    if (step % (step < 25 ? 5 : 25) == 0 || step == total - 1)
                        System.out.printf("step %4d   softmax loss %.4f   sigmoid loss %.4f%n", step, sm, sg);
                }
            });
            double secs = (System.nanoTime() - t0) / 1e9;
            System.out.printf("%d steps in %.1f s on %s; mean loss over the last 10 steps: softmax %.4f, sigmoid %.4f%n",
                    steps, secs, device, tailMean(curves[0]), tailMean(curves[1]));
        }
    }

    private static void exit(String message) {
        System.err.println(message);
        System.exit(2);
    }

    /** The device of a run and why it was taken. */
    record Choice(Device device, String why) {}

    /**
     * The device for {@code --device flag} ({@code cpu}, {@code cuda} or {@code auto}) on a machine with
     * {@code caps}; an {@link IllegalArgumentException} saying why for {@code cuda} without a usable device
     * or an unknown flag.
     */
    static Choice chooseDevice(String flag, FlashSig.Capabilities caps) {
        String noGpu = whyNoGpu(caps);
        return switch (flag) {
            case "cpu" -> new Choice(Device.CPU, "--device cpu");
            case "cuda" -> {
                if (noGpu != null) throw new IllegalArgumentException("--device cuda: " + noGpu);
                yield new Choice(Device.cuda(0), "--device cuda");
            }
            case "auto" -> noGpu == null
                    ? new Choice(Device.cuda(0), "auto: " + caps.cudaDeviceCount() + " CUDA device(s)")
                    : new Choice(Device.CPU, "auto: " + noGpu);
            default -> throw new IllegalArgumentException("--device is " + flag + " but must be cpu, cuda or auto");
        };
    }

    /** Why the GPU run cannot run on {@code caps}'s machine; null when it can. */
    static String whyNoGpu(FlashSig.Capabilities caps) {
        if (!caps.cudaCompiled()) return "this libflashsig was built without CUDA";
        if (caps.cudaDeviceCount() == 0) return "no CUDA device or driver";
        if (!caps.cudaDtypes().contains(DType.BF16) || !caps.cudaRunsBackwardHeadDim(GPU_DIMS.headDim()))
            return "the CUDA kernels lack bf16 or a backward at d = " + GPU_DIMS.headDim() + " (dtypes "
                    + caps.cudaDtypes() + ", backward head dims up to " + caps.cudaBackwardMaxHeadDim() + ")";
        return null;
    }

    /** Per-step progress of both runs. */
    interface Progress {
        void step(int step, float softmaxLoss, float sigmoidLoss);

        /** Once, before the first step: where the attention runs. */
        default void started(String attention) {}
    }

    /** The CPU run: fp32 attention at {@link #CPU_DIMS}. */
    static float[][] train(int steps, long seed, float lr, Progress progress) {
        return train(CPU_DIMS, Fp32Attention::new, steps, seed, lr, progress);
    }

    /**
     * Trains a softmax and a sigmoid model of {@code dims}, their attention from {@code backends}, for
     * {@code steps} steps on the same batches; returns {softmax losses, sigmoid losses}.
     */
    static float[][] train(Dims dims, AttentionBackend.Factory backends, int steps, long seed, float lr,
                           Progress progress) {
        AttentionModel softmax = new AttentionModel(Score.SOFTMAX, dims, lr, seed, backends);
        AttentionModel sigmoid = new AttentionModel(Score.SIGMOID, dims, lr, seed, backends);
        progress.started(softmax.attentionDescription());
        Random data = new Random(seed + 1);
        float[][] curves = new float[2][steps];
        for (int s = 0; s < steps; s++) {
            int[][][] batch = AttentionModel.reverseBatch(data, dims.batch(), dims.n(), dims.vocab());
            curves[0][s] = softmax.step(batch[0], batch[1]);
            curves[1][s] = sigmoid.step(batch[0], batch[1]);
            progress.step(s, curves[0][s], curves[1][s]);
        }
        return curves;
    }

    static float tailMean(float[] curve) {
        int from = Math.max(0, curve.length - 10);
        float s = 0;
        for (int i = from; i < curve.length; i++) s += curve[i];
        return s / (curve.length - from);
    }
}
