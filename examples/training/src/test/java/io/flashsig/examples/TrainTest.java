package io.flashsig.examples;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertTrue;

/** Smoke test: 60 steps (at a larger learning rate than the example's 300) cut both losses by 4x or more. */
class TrainTest {
    @Test
    void lossFallsForSoftmaxAndSigmoid() {
        int steps = 60;
        float[][] curves = Train.train(steps, 7, 1e-2f, (s, a, b) -> {});
        String[] names = {"softmax", "sigmoid"};
        for (int m = 0; m < 2; m++) {
            float first = (curves[m][0] + curves[m][1] + curves[m][2]) / 3, last = Train.tailMean(curves[m]);
            assertTrue(Float.isFinite(last), names[m] + ": loss is " + last);
            assertTrue(last < first / 4, names[m] + ": loss went from " + first + " to " + last + " in " + steps
                    + " steps; expected at least a 4x fall");
        }
    }
}
