package io.flashsig;

import com.code_intelligence.jazzer.api.FuzzedDataProvider;
import com.code_intelligence.jazzer.junit.FuzzTest;
import org.junit.jupiter.api.Test;

import java.util.Random;

/**
 * Random calls of the Java API and, through it, of the C ABI, checked by {@link FuzzHarness}'s
 * property (refused with a message naming the argument, or done; never a write outside the outputs,
 * never a crash).
 * <ul>
 * <li>{@link #fuzzCall}: a Jazzer fuzz test. Under plain {@code mvn test} it runs as a regression test
 * over the inputs in {@code src/test/resources/io/flashsig/ApiFuzzTestInputs/fuzzCall/} (every finding
 * is kept there); {@code mvn verify} also fuzzes it for {@code flashsig.fuzz.duration} (60 s) in a JVM
 * of its own (see the pom). Longer: {@code mvn -B -pl java-bindings -am verify -DskipSanitize
 * -Dflashsig.fuzz.duration=2h}.</li>
 * <li>{@link #seededRandomCalls}: the same property over a fixed number of calls from a seeded
 * {@link Random}, so that every plain test run explores fresh-looking inputs deterministically, even
 * where Jazzer's fuzzing mode cannot run.</li>
 * </ul>
 */
class ApiFuzzTest {
    /** Calls of {@link #seededRandomCalls}; {@code -Dflashsig.fuzz.calls=N} to change. */
    static final int CALLS = Integer.getInteger("flashsig.fuzz.calls", 20_000);

    @FuzzTest(maxDuration = "60s")
    void fuzzCall(FuzzedDataProvider data) {
        FuzzHarness.run(FuzzHarness.of(data));
    }

    @Test
    void seededRandomCalls() {
        long seed = Long.getLong("flashsig.fuzz.seed", 20261124L);
        Random r = new Random(seed);
        FuzzHarness.Stats stats = new FuzzHarness.Stats();
        for (int i = 0; i < CALLS; i++) {
            long callSeed = r.nextLong();
            try {
                FuzzHarness.run(FuzzHarness.of(new Random(callSeed)), stats);
            } catch (AssertionError e) {
                throw new AssertionError("call " + i + " (replay: FuzzHarness.run(FuzzHarness.of(new Random("
                        + callSeed + "L)))): " + e.getMessage(), e);
            }
        }
        System.out.println("ApiFuzzTest.seededRandomCalls (seed " + seed + "): " + stats);
    }
}
