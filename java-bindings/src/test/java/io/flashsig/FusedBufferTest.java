package io.flashsig;

import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * A framework's fused layouts, zero-copy: q, k, v read from one {@code [B, N, 3, H, d]} projection
 * output and dq, dk, dv written into one {@code [B, N, 3, H, d]} gradient buffer, as strided views of
 * one segment each. The library judges aliasing per element (native/overlap.h), so these views, whose
 * byte ranges interleave, are accepted; the results equal those of separate tensors bit for bit.
 */
class FusedBufferTest {
    private static final long B = 2, N = 45, H = 3, D = 16;

    /** Part {@code which} (0 = q, 1 = k, 2 = v) of a fused [B, N, 3, H, d] fp32 segment. */
    private static Tensor part(MemorySegment fused, int which) {
        long offset = which * H * D * 4;
        return Tensor.wrap(fused.asSlice(offset), DType.FP32, new long[] {B, N, H, D},
                new long[] {N * 3 * H * D, 3 * H * D, D, 1});
    }

    /** Where the test's segments live: off-heap (an arena) or in float arrays. */
    private interface Storage {
        MemorySegment floats(long count);
    }

    @Test
    void fusedQkvAndFusedGradientsMatchSeparateTensors() {
        try (Arena arena = Arena.ofConfined()) {
            check(count -> arena.allocate(count * 4, 64));
        }
    }

    /**
     * The same on float arrays: through the critical downcall the native check sees the arrays
     * themselves; on the copy path, views of one array share one scratch region at their offsets, so
     * the per-element rule decides there too.
     */
    @Test
    void fusedHeapArraysOnBothHeapPaths() {
        for (TestSupport.Memory m : new TestSupport.Memory[] {TestSupport.Memory.HEAP_CRITICAL, TestSupport.Memory.HEAP_COPY})
            TestSupport.withMemory(m, () -> check(count -> MemorySegment.ofArray(new float[Math.toIntExact(count)])));
    }

    private static void check(Storage storage) {
        Random r = new Random(11);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment qkv = storage.floats(B * N * 3 * H * D);
            for (long i = 0; i < qkv.byteSize() / 4; ++i) qkv.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) r.nextGaussian());
            Tensor q = part(qkv, 0), k = part(qkv, 1), v = part(qkv, 2);
            Tensor dout = Tensor.allocate(arena, DType.FP32, B, N, H, D);
            dout.copyFrom(TestSupport.toFloats(TestSupport.randn(r, DType.FP32, (int) (B * N * H * D))));
            AttentionSpec spec = AttentionSpec.of(Score.SIGMOID).causal();

            // separate tensors: contiguous copies of q, k, v and three gradient buffers
            Tensor qs = Tensor.allocate(arena, DType.FP32, B, N, H, D), ks = Tensor.allocate(arena, DType.FP32, B, N, H, D),
                    vs = Tensor.allocate(arena, DType.FP32, B, N, H, D);
            qs.copyFrom(q.toFloatArray());
            ks.copyFrom(k.toFloatArray());
            vs.copyFrom(v.toFloatArray());
            Tensor dq = Tensor.allocate(arena, DType.FP32, B, N, H, D), dk = Tensor.allocate(arena, DType.FP32, B, N, H, D),
                    dv = Tensor.allocate(arena, DType.FP32, B, N, H, D);
            FlashSig.backward(spec, qs, ks, vs, null, dout, null, dq, dk, dv);

            // fused: inputs from the qkv segment, gradients into one dqkv segment
            MemorySegment dqkv = storage.floats(B * N * 3 * H * D);
            FlashSig.backward(spec, q, k, v, null, dout, null, part(dqkv, 0), part(dqkv, 1), part(dqkv, 2));
            assertArrayEquals(dq.toFloatArray(), part(dqkv, 0).toFloatArray(), "dq");
            assertArrayEquals(dk.toFloatArray(), part(dqkv, 1).toFloatArray(), "dk");
            assertArrayEquals(dv.toFloatArray(), part(dqkv, 2).toFloatArray(), "dv");

            // dk shifted by one element onto dq's elements: refused, nothing written
            MemorySegment bad = storage.floats(B * N * 3 * H * D + 1);
            Tensor shifted = Tensor.wrap(bad.asSlice(4), DType.FP32, new long[] {B, N, H, D},
                    new long[] {N * 3 * H * D, 3 * H * D, D, 1});
            FlashSigException e = assertThrows(FlashSigException.class,
                    () -> FlashSig.backward(spec, q, k, v, null, dout, null, part(bad, 0), shifted, part(bad, 2)));
            assertEquals(FlashSigException.Status.ALIASING, e.status(), e.getMessage());
            for (long i = 0; i < bad.byteSize(); ++i) assertEquals(0, bad.get(ValueLayout.JAVA_BYTE, i), "a refused call wrote");
        }
    }
}
