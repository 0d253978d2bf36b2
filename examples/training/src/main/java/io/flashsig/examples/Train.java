package io.flashsig.examples;

import io.flashsig.FlashSig;
import io.flashsig.Score;

import java.util.Random;

/**
 * Trains {@link AttentionModel} to reverse sequences of random tokens, once with softmax attention and
 * once with sigmoid attention (b = −ln N), on the same batches, and prints both losses as they fall.
 * <pre>
 *   mvn -B -q -Ptrain -DskipTests -pl examples/training -am verify      (from the repository root)
 *   java -jar examples/training/target/flashsig-training.jar [steps]
 * </pre>
 * Reversal needs position-to-position attention (query i looks at key N−1−i), which one attention
 * layer over learned position embeddings can learn; chance level is ln(vocab).
 */
public final class Train {
    static final int VOCAB = 16, N = 16, HEADS = 2, HEAD_DIM = 16, BATCH = 32;
    static final float LR = 3e-3f;

    private Train() {}

    public static void main(String[] args) {
        int steps = args.length > 0 ? Integer.parseInt(args[0]) : 300;
        System.out.printf("FlashSig %s, %d CPU threads: one attention layer (H=%d, d=%d) learns to reverse %d tokens"
                        + " (vocab %d, batch %d, Adam lr %.0e); chance loss ln %d = %.3f%n", FlashSig.version(),
                FlashSig.numThreads(), HEADS, HEAD_DIM, N, VOCAB, BATCH, LR, VOCAB, Math.log(VOCAB));
        long t0 = System.nanoTime();
        float[][] curves = train(steps, 42, LR, (step, sm, sg) -> {
            if (step % 25 == 0 || step == steps - 1)
                System.out.printf("step %4d   softmax loss %.4f   sigmoid loss %.4f%n", step, sm, sg);
        });
        double secs = (System.nanoTime() - t0) / 1e9;
        System.out.printf("%d steps in %.1f s; mean loss over the last 10 steps: softmax %.4f, sigmoid %.4f%n", steps,
                secs, tailMean(curves[0]), tailMean(curves[1]));
    }

    /** Per-step progress of both runs. */
    interface Progress {
        void step(int step, float softmaxLoss, float sigmoidLoss);
    }

    /** Trains both models for {@code steps} steps on the same batches; returns {softmax losses, sigmoid losses}. */
    static float[][] train(int steps, long seed, float lr, Progress progress) {
        AttentionModel softmax = new AttentionModel(Score.SOFTMAX, VOCAB, N, HEADS, HEAD_DIM, lr, seed);
        AttentionModel sigmoid = new AttentionModel(Score.SIGMOID, VOCAB, N, HEADS, HEAD_DIM, lr, seed);
        Random data = new Random(seed + 1);
        float[][] curves = new float[2][steps];
        for (int s = 0; s < steps; s++) {
            int[][][] batch = AttentionModel.reverseBatch(data, BATCH, N, VOCAB);
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
