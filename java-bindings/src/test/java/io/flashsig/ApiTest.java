package io.flashsig;

import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The small things: dtype conversion, tensor views, spec values, library info. */
class ApiTest {
    @Test
    void dtypeRounding() {
        assertEquals(1f, DType.BF16.round(1.00390625f)); // tie: to even
        assertEquals(1.0078125f, DType.BF16.round(1.005f));
        assertEquals(65504f, DType.FP16.round(65504f));
        assertEquals(Float.POSITIVE_INFINITY, DType.FP16.round(70000f));
        assertTrue(Float.isNaN(DType.BF16.round(Float.NaN)));
        assertEquals(Float.NEGATIVE_INFINITY, DType.BF16.round(Float.NEGATIVE_INFINITY));
        assertEquals(4, DType.FP32.byteSize());
        assertEquals(2, DType.BF16.byteSize());
        assertEquals(2, DType.BF16.nativeCode());
    }

    @Test
    void tensorElementsAndStrides() {
        short[] raw = new short[2 * 3];
        Tensor t = Tensor.of(raw, DType.BF16, 2, 3);
        t.set(1.5f, 1, 2);
        assertEquals(1.5f, t.get(1, 2));
        assertEquals((short) 0x3FC0, raw[5], "bf16 of 1.5 written to the array in place");
        t.copyFrom(new float[] {1, 2, 3, 4, 5, 6});
        assertArrayEquals(new float[] {1, 2, 3, 4, 5, 6}, t.toFloatArray());
        // a transposed view of the same memory
        Tensor tt = Tensor.wrap(t.segment(), DType.BF16, new long[] {3, 2}, new long[] {1, 3});
        assertArrayEquals(new float[] {1, 4, 2, 5, 3, 6}, tt.toFloatArray());
        assertFalse(tt.isContiguous());
        assertTrue(t.isContiguous());
        assertArrayEquals(new long[] {12, 4, 1}, Tensor.contiguousStrides(2, 3, 4));
        try (Arena arena = Arena.ofConfined()) {
            Tensor z = Tensor.allocate(arena, DType.FP16, 1, 2, 3, 4);
            assertTrue(z.segment().isNative());
            assertEquals(48, z.segment().byteSize());
            for (float x : z.toFloatArray()) assertEquals(0f, x);
            z.set(0.1f, 0, 1, 2, 3);
            assertEquals(DType.FP16.round(0.1f), z.get(0, 1, 2, 3));
            assertEquals(Device.CPU, z.device());
            assertArrayEquals(new long[] {1, 2, 3, 4}, z.shape());
        }
        Tensor f = Tensor.of(new float[4], 4);
        assertFalse(f.segment().isNative());
        assertEquals(MemorySegment.ofArray(new float[4]).byteSize(), f.segment().byteSize());
    }

    @Test
    void specValues() {
        AttentionSpec a = AttentionSpec.of(Score.SIGMOID).causal().window(64, 0).scale(0.125f);
        AttentionSpec b = AttentionSpec.of(Score.SIGMOID).scale(0.125f).window(64, 0).causal(true);
        assertEquals(a, b);
        assertEquals(a.hashCode(), b.hashCode());
        assertNotEquals(a, a.causal(false));
        assertEquals("AttentionSpec[SIGMOID, scale=0.125, causal, window=(64, 0)]", a.toString());
        assertEquals(AttentionSpec.softmax(), AttentionSpec.of(Score.SOFTMAX).scale(Float.NaN));
        assertTrue(Float.isNaN(AttentionSpec.softmax().scale()));
        assertEquals(-1, AttentionSpec.softmax().windowLeft());
        assertFalse(AttentionSpec.softmax().isCausal());
        assertEquals(1f, AttentionSpec.of(Score.RELU).alpha());
    }

    @Test
    void libraryInfo() {
        assertTrue(FlashSig.version().matches("\\d+\\.\\d+\\.\\d+"), FlashSig.version());
        FlashSig.Capabilities c = FlashSig.capabilities();
        assertTrue(c.cpuDtypes().contains(DType.FP32));
        assertTrue(c.cpuMaxHeadDim() >= 256, c.toString());
        List<String> isas = NativeLibrary.platform().endsWith("aarch64") ? List.of("neon")
                : List.of("avx2", "avx512", "avx512bf16", "amx");
        assertTrue(isas.contains(c.cpuIsa()), c.cpuIsa());
        assertTrue(c.cpuThreads() >= 1);
        assertEquals("cuda:3", Device.cuda(3).toString());
    }
}
