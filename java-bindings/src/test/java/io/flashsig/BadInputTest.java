package io.flashsig;

import io.flashsig.FlashSigException.Status;
import io.flashsig.TestSupport.Memory;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.concurrent.CompletableFuture;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Each bad call throws FlashSigException with the right status and a message naming the argument
 * and the rule, and leaves every output as it was.
 */
class BadInputTest {
    static final int B = 1, N = 16, H = 2, D = 8;
    static final long[] SHAPE = {B, N, H, D};
    static final float SENTINEL = 7f;

    /** A call's tensors; outputs are filled with a sentinel so that any write shows. */
    static final class Call {
        final Tensor q, k, v, out, lse, dout, dq, dk, dv;

        Call(Memory m, Arena arena, DType dtype) {
            q = filled(m, arena, dtype, 0.5f, SHAPE);
            k = filled(m, arena, dtype, 0.25f, SHAPE);
            v = filled(m, arena, dtype, 1f, SHAPE);
            dout = filled(m, arena, dtype, 1f, SHAPE);
            out = filled(m, arena, dtype, SENTINEL, SHAPE);
            lse = filled(m, arena, DType.FP32, SENTINEL, B, H, N);
            dq = filled(m, arena, dtype, SENTINEL, SHAPE);
            dk = filled(m, arena, dtype, SENTINEL, SHAPE);
            dv = filled(m, arena, dtype, SENTINEL, SHAPE);
        }

        static Tensor filled(Memory m, Arena arena, DType dtype, float value, long... shape) {
            Tensor t = TestSupport.tensor(m, arena, dtype, new double[(int) Arrays.stream(shape).reduce(1, (a, b) -> a * b)], shape);
            float[] f = new float[(int) t.elementCount()];
            Arrays.fill(f, value);
            t.copyFrom(f);
            return t;
        }

        void assertOutputsUntouched() {
            for (Tensor t : new Tensor[] {out, lse, dq, dk, dv}) {
                float[] f = t.toFloatArray();
                for (float x : f) assertEquals(SENTINEL, x, "an output was written by a failing call: " + t);
            }
        }
    }

    static void expect(Status status, Executable call, String... fragments) {
        FlashSigException e = assertThrows(FlashSigException.class, call);
        assertEquals(status, e.status(), e.getMessage());
        for (String f : fragments)
            assertTrue(e.getMessage().contains(f), "message '" + e.getMessage() + "' should contain '" + f + "'");
    }

    static AttentionSpec softmax = AttentionSpec.softmax();

    @ParameterizedTest
    @EnumSource(Memory.class)
    void nullTensorsAndSpec(Memory m) {
        try (Arena arena = Arena.ofConfined()) {
            Call c = new Call(m, arena, DType.FP32);
            TestSupport.withMemory(m, () -> {
                expect(Status.NULL_ARGUMENT, () -> FlashSig.forward(softmax, null, c.k, c.v, c.out), "q is null");
                expect(Status.NULL_ARGUMENT, () -> FlashSig.forward(softmax, c.q, c.k, c.v, null), "out is null");
                expect(Status.NULL_ARGUMENT, () -> FlashSig.forward(null, c.q, c.k, c.v, c.out), "spec is null");
                expect(Status.NULL_ARGUMENT, () -> FlashSig.backward(softmax, c.q, c.k, c.v, c.out, null, c.lse, c.dq,
                        c.dk, c.dv), "dout is null");
                expect(Status.NULL_ARGUMENT, () -> FlashSig.backward(softmax, c.q, c.k, c.v, c.out, c.dout, null, c.dq,
                        c.dk, c.dv), "lse", "softmax backward");
                expect(Status.NULL_ARGUMENT, () -> FlashSig.backward(softmax, c.q, c.k, c.v, null, c.dout, c.lse, c.dq,
                        c.dk, c.dv), "out", "softmax backward");
            });
            c.assertOutputsUntouched();
        }
    }

    @Test
    void closedArena() {
        try (Arena arena = Arena.ofConfined()) {
            Call c = new Call(Memory.OFF_HEAP, arena, DType.FP32);
            Tensor k;
            try (Arena closed = Arena.ofConfined()) {
                k = Tensor.allocate(closed, DType.FP32, SHAPE);
            }
            expect(Status.SEGMENT_NOT_ACCESSIBLE, () -> FlashSig.forward(softmax, c.q, k, c.v, c.out), "k: its arena is closed");
            c.assertOutputsUntouched();
        }
    }

    @Test
    void segmentConfinedToAnotherThread() throws Exception {
        try (Arena arena = Arena.ofConfined()) {
            Call c = new Call(Memory.OFF_HEAP, arena, DType.FP32);
            FlashSigException e = CompletableFuture.supplyAsync(() -> assertThrows(FlashSigException.class,
                    () -> FlashSig.forward(softmax, c.q, c.k, c.v, c.out))).get();
            assertEquals(Status.SEGMENT_NOT_ACCESSIBLE, e.status());
            assertTrue(e.getMessage().startsWith("q: ") && e.getMessage().contains("another thread"), e.getMessage());
            c.assertOutputsUntouched();
        }
    }

    @ParameterizedTest
    @EnumSource(Memory.class)
    void nativeRules(Memory m) {
        try (Arena arena = Arena.ofConfined()) {
            Call c = new Call(m, arena, DType.FP32);
            TestSupport.withMemory(m, () -> {
                // segment smaller than shape and strides reach
                Tensor smallV = Tensor.wrap(c.v.segment().asSlice(0, c.v.segment().byteSize() - 4), DType.FP32, SHAPE,
                        Tensor.contiguousStrides(SHAPE));
                expect(Status.BUFFER_TOO_SMALL, () -> FlashSig.forward(softmax, c.q, c.k, smallV, c.out), "v:",
                        "capacity_bytes");
                // dtype mix
                Tensor k16 = Call.filled(m, arena, DType.FP16, 1f, SHAPE);
                expect(Status.INVALID_DTYPE, () -> FlashSig.forward(softmax, c.q, k16, c.v, c.out), "k is fp16", "share one dtype");
                // shapes that disagree
                Tensor kShort = Call.filled(m, arena, DType.FP32, 1f, B, N, H, D - 1);
                expect(Status.INVALID_SHAPE, () -> FlashSig.forward(softmax, c.q, kShort, c.v, c.out), "k.shape[3]", "head_dim");
                Tensor k3 = Call.filled(m, arena, DType.FP32, 1f, B, N, H * D);
                expect(Status.INVALID_SHAPE, () -> FlashSig.forward(softmax, c.q, k3, c.v, c.out), "k.ndim is 3");
                Tensor kHeads = Call.filled(m, arena, DType.FP32, 1f, B, N, 3, D);
                expect(Status.INVALID_SHAPE, () -> FlashSig.forward(softmax, c.q, kHeads, kHeads, c.out), "heads");
                // strides: negative, and an output that writes one element twice
                Tensor qNeg = Tensor.wrap(c.q.segment(), DType.FP32, SHAPE, new long[] {0, H * D, -D, 1});
                expect(Status.INVALID_STRIDE, () -> FlashSig.forward(softmax, qNeg, c.k, c.v, c.out), "q.strides[2]", ">= 0");
                Tensor outOverlap = Tensor.wrap(c.out.segment(), DType.FP32, SHAPE, new long[] {0, D, 0, 1});
                expect(Status.INVALID_STRIDE, () -> FlashSig.forward(softmax, c.q, c.k, c.v, outOverlap), "out.strides", "overlap");
                // lse only for softmax
                expect(Status.INVALID_PARAMS, () -> FlashSig.forward(AttentionSpec.of(Score.SIGMOID), c.q, c.k, c.v, c.out,
                        c.lse), "lse", "softmax");
                // lse of the wrong shape / dtype
                Tensor lseBad = Call.filled(m, arena, DType.FP32, SENTINEL, B, N, H);
                expect(Status.INVALID_SHAPE, () -> FlashSig.forward(softmax, c.q, c.k, c.v, c.out, lseBad), "lse.shape");
                // parameter values
                expect(Status.INVALID_PARAMS, () -> FlashSig.forward(softmax.window(-5, 0), c.q, c.k, c.v, c.out), "window_left");
                expect(Status.INVALID_PARAMS, () -> FlashSig.forward(softmax.scale(Float.POSITIVE_INFINITY), c.q, c.k, c.v,
                        c.out), "scale");
                // an output aliasing an input: native check on the in-place paths, Java check on the copy path
                expect(Status.ALIASING, () -> FlashSig.forward(softmax, c.q, c.k, c.v, c.q), "out overlaps q");
                expect(Status.ALIASING, () -> FlashSig.backward(AttentionSpec.of(Score.RELU), c.q, c.k, c.v, null, c.dout,
                        null, c.dq, c.dq, c.dv), "overlaps", "dq", "dk");
            });
            c.assertOutputsUntouched();
            assertArrayEquals(filledArray(0.5f), c.q.toFloatArray(), "q was written by a failing call");
        }
    }

    private static float[] filledArray(float v) {
        float[] f = new float[B * N * H * D];
        Arrays.fill(f, v);
        return f;
    }

    @Test
    void unsupportedHeadDim() {
        int d = FlashSig.capabilities().cpuMaxHeadDim() + 1;
        try (Arena arena = Arena.ofConfined()) {
            Tensor q = Call.filled(Memory.OFF_HEAP, arena, DType.FP32, 1f, 1, 4, 1, d);
            Tensor out = Call.filled(Memory.OFF_HEAP, arena, DType.FP32, SENTINEL, 1, 4, 1, d);
            Tensor k = Call.filled(Memory.OFF_HEAP, arena, DType.FP32, 1f, 1, 4, 1, d);
            expect(Status.UNSUPPORTED, () -> FlashSig.forward(softmax, q, k, k, out), "head_dim", String.valueOf(d));
            for (float x : out.toFloatArray()) assertEquals(SENTINEL, x);
        }
    }

    @Test
    void misalignedHeapSegment() {
        byte[] bytes = new byte[B * N * H * D * 4 + 1];
        Tensor q = Tensor.wrap(MemorySegment.ofArray(bytes).asSlice(1), DType.FP32, SHAPE, Tensor.contiguousStrides(SHAPE));
        try (Arena arena = Arena.ofConfined()) {
            Call c = new Call(Memory.OFF_HEAP, arena, DType.FP32);
            expect(Status.MISALIGNED, () -> FlashSig.forward(softmax, q, c.k, c.v, c.out), "q:", "aligned");
            c.assertOutputsUntouched();
        }
    }

    @Test
    void cudaTensors() {
        expect(Status.INVALID_DEVICE, () -> Tensor.wrap(MemorySegment.ofArray(new float[8]), DType.FP16, Device.cuda(0),
                new long[] {1, 1, 1, 8}, new long[] {8, 8, 8, 1}), "heap segment", "cuda:0");
        try (Arena arena = Arena.ofConfined()) {
            // device pointers are never dereferenced on the host: without a GPU the library says so
            MemorySegment fake = arena.allocate(B * N * H * D * 2L);
            Tensor g = Tensor.wrap(fake, DType.FP16, Device.cuda(0), SHAPE, Tensor.contiguousStrides(SHAPE));
            Tensor g2 = Tensor.wrap(arena.allocate(B * N * H * D * 2L), DType.FP16, Device.cuda(0), SHAPE,
                    Tensor.contiguousStrides(SHAPE));
            if (!FlashSig.capabilities().cudaAvailable())
                expect(Status.NO_DEVICE, () -> FlashSig.forward(softmax, g, g, g, g2), "CUDA"); // builds with and without CUDA
            Call c = new Call(Memory.OFF_HEAP, arena, DType.FP16);
            expect(Status.INVALID_DEVICE, () -> FlashSig.forward(softmax, c.q, g, c.v, c.out), "k is on cuda:0");
            c.assertOutputsUntouched();
        }
        expect(Status.INVALID_DEVICE, () -> Device.cuda(-1), "device index -1");
    }

    @Test
    void threadCountOutOfRange() {
        expect(Status.INVALID_PARAMS, () -> FlashSig.setNumThreads(-1), "n is -1");
    }

    @Test
    void tensorFactoryChecks() {
        expect(Status.INVALID_SHAPE, () -> Tensor.of(new float[10], 1, 2, 3), "data has 10 elements", "needs 6");
        expect(Status.INVALID_DTYPE, () -> Tensor.of(new short[4], DType.FP32, 4), "FP16 or BF16");
        expect(Status.INVALID_SHAPE, () -> Tensor.of(new float[1], 1, 1, 1, 1, 1), "rank is 5");
        expect(Status.NULL_ARGUMENT, () -> Tensor.of((float[]) null, 1), "data is null");
    }
}
