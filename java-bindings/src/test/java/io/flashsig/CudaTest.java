package io.flashsig;

import io.flashsig.FlashSigException.Status;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;

import static io.flashsig.BadInputTest.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The device half of the Java API (Cuda, CudaStream, AttentionExtras.stream): its refusals everywhere,
 * and on a machine with a CUDA device a round trip host → device → attention → host against the CPU.
 */
class CudaTest {
    static final Device GPU = Device.cuda(0);
    static final long[] SHAPE = {1, 100, 2, 64};

    static boolean gpu() {
        return FlashSig.capabilities().cudaAvailable();
    }

    @Test
    void withoutADeviceEveryCallSaysSo() {
        assumeTrue(!gpu(), "a CUDA device is present: the no-device refusals do not apply");
        String why = FlashSig.capabilities().cudaCompiled() ? "no CUDA device or driver" : "no CUDA support";
        try (Arena arena = Arena.ofConfined()) {
            expect(Status.NO_DEVICE, () -> Cuda.allocate(arena, DType.BF16, GPU, SHAPE), why);
            expect(Status.NO_DEVICE, () -> CudaStream.create(GPU), why);
            expect(Status.NO_DEVICE, () -> Cuda.synchronize(GPU), why);
            // a device tensor wrapping a foreign address: refused before anything touches it
            Tensor foreign = Tensor.wrap(MemorySegment.ofAddress(1 << 20).reinterpret(1 << 16), DType.BF16, GPU,
                    SHAPE, Tensor.contiguousStrides(SHAPE));
            Tensor host = Tensor.allocate(arena, DType.BF16, SHAPE);
            expect(Status.NO_DEVICE, () -> Cuda.copy(host, foreign, null), why);
        }
    }

    @Test
    void refusalsThatNeedNoDevice() {
        try (Arena arena = Arena.ofConfined()) {
            Tensor host = Tensor.allocate(arena, DType.BF16, SHAPE), host2 = Tensor.allocate(arena, DType.BF16, SHAPE);
            Tensor heap = Tensor.of(new short[100 * 2 * 64], DType.BF16, SHAPE);
            Tensor dev = Tensor.wrap(MemorySegment.ofAddress(1 << 20).reinterpret(1 << 16), DType.BF16, GPU, SHAPE,
                    Tensor.contiguousStrides(SHAPE));
            expect(Status.INVALID_DEVICE, () -> CudaStream.create(Device.CPU), "needs a CUDA device");
            expect(Status.NULL_ARGUMENT, () -> CudaStream.wrap(GPU, 0), "cudaStream is 0");
            expect(Status.INVALID_DEVICE, () -> Cuda.copy(host, host2, null), "both host tensors");
            expect(Status.INVALID_DEVICE, () -> Cuda.copy(heap, dev, null), "src is a heap tensor");
            expect(Status.INVALID_DTYPE, () -> Cuda.copy(Tensor.allocate(arena, DType.FP16, SHAPE), dev, null), "FP16");
            expect(Status.INVALID_SHAPE, () -> Cuda.copy(Tensor.allocate(arena, DType.BF16, 1, 100, 2, 32), dev, null),
                    "shape");
            expect(Status.INVALID_DEVICE, () -> dev.toFloatArray(), "host memory");
            expect(Status.NULL_ARGUMENT, () -> Cuda.allocate(arena, DType.BF16, null, SHAPE), "device is null");
            expect(Status.INVALID_SHAPE, () -> Cuda.allocate(arena, DType.BF16, GPU, 1, 0, 2, 64), "dimension < 1");
            // a stream with CPU tensors: the C ABI refuses it, nothing written
            CudaStream foreignStream = CudaStream.wrap(GPU, 0x1000);
            Tensor q = Tensor.allocate(arena, DType.FP32, SHAPE), out = Tensor.allocate(arena, DType.FP32, SHAPE);
            out.copyFrom(filled(q.elementCount(), 7f));
            expect(Status.INVALID_DEVICE, () -> FlashSig.forward(AttentionSpec.of(Score.SIGMOID),
                    AttentionExtras.none().stream(foreignStream), q, q, q, out, null), "stream must be NULL");
            for (float x : out.toFloatArray()) assertEquals(7f, x);
            foreignStream.close(); // wrapped: not destroyed, nothing to report
        }
    }

    /** Host → device → forward and backward on a stream → host, against the same call on the CPU. */
    @Test
    void roundTripAgreesWithTheCpu() {
        assumeTrue(gpu(), "no CUDA device: the device round trip is skipped");
        roundTrip(AttentionSpec.of(Score.SIGMOID).causal(), false);
    }

    /** The same with masks and positions: ALiBi slopes in device memory and log-n scaling, softmax. */
    @Test
    void alibiAndLognOnTheDeviceAgreeWithTheCpu() {
        assumeTrue(gpu(), "no CUDA device: the device round trip is skipped");
        roundTrip(AttentionSpec.of(Score.SOFTMAX).causal().lognScaling(32), true);
    }

    private static void roundTrip(AttentionSpec spec, boolean alibi) {
        Random r = new Random(3);
        long[] lseShape = {SHAPE[0], SHAPE[2], SHAPE[1]};
        try (Arena arena = Arena.ofConfined(); CudaStream stream = CudaStream.create(GPU)) {
            Tensor[] host = new Tensor[4]; // q, k, v, dout
            for (int i = 0; i < 4; i++) {
                host[i] = Tensor.allocate(arena, DType.BF16, SHAPE);
                host[i].copyFrom(TestSupport.toFloats(TestSupport.randn(r, DType.BF16, (int) host[i].elementCount())));
            }
            Tensor[] dev = new Tensor[8]; // q, k, v, dout, out, dq, dk, dv
            for (int i = 0; i < 8; i++) dev[i] = Cuda.allocate(arena, DType.BF16, GPU, SHAPE);
            boolean softmax = spec.score() == Score.SOFTMAX; // only softmax has an LSE
            Tensor devLse = softmax ? Cuda.allocate(arena, DType.FP32, GPU, lseShape) : null;
            for (int i = 0; i < 4; i++) Cuda.copy(host[i], dev[i], stream);
            AttentionExtras onDevice = AttentionExtras.none().stream(stream), onCpu = AttentionExtras.none();
            if (alibi) {
                float[] slopes = FlashSig.alibiSlopes((int) SHAPE[2]);
                Tensor hostSlopes = Tensor.allocate(arena, DType.FP32, SHAPE[2]);
                hostSlopes.copyFrom(slopes);
                Tensor devSlopes = Cuda.allocate(arena, DType.FP32, GPU, SHAPE[2]);
                Cuda.copy(hostSlopes, devSlopes, stream);
                onDevice = onDevice.alibi(devSlopes);
                onCpu = onCpu.alibi(slopes);
            }
            FlashSig.forward(spec, onDevice, dev[0], dev[1], dev[2], dev[4], devLse);
            FlashSig.backward(spec, onDevice, dev[0], dev[1], dev[2], dev[4], dev[3], devLse, dev[5], dev[6], dev[7],
                    null);
            Tensor[] back = new Tensor[4]; // out, dq, dk, dv
            for (int i = 0; i < 4; i++) {
                back[i] = Tensor.allocate(arena, DType.BF16, SHAPE);
                Cuda.copy(dev[4 + i], back[i], stream);
            }
            stream.synchronize();

            Tensor[] cpu = new Tensor[4];
            for (int i = 0; i < 4; i++) cpu[i] = Tensor.allocate(arena, DType.BF16, SHAPE);
            Tensor cpuLse = softmax ? Tensor.allocate(arena, DType.FP32, lseShape) : null;
            FlashSig.forward(spec, onCpu, host[0], host[1], host[2], cpu[0], cpuLse);
            FlashSig.backward(spec, onCpu, host[0], host[1], host[2], cpu[0], host[3], cpuLse, cpu[1], cpu[2], cpu[3],
                    null);
            String[] names = {"out", "dq", "dk", "dv"};
            for (int i = 0; i < 4; i++) {
                float[] g = back[i].toFloatArray(), c = cpu[i].toFloatArray();
                for (int j = 0; j < g.length; j++)
                    assertTrue(Math.abs(g[j] - c[j]) <= 2e-2 * (1 + Math.abs(c[j])),
                            spec + " " + names[i] + "[" + j + "]: gpu " + g[j] + ", cpu " + c[j]);
            }
        }
        Cuda.synchronize(GPU);
    }

    static float[] filled(long n, float x) {
        float[] a = new float[(int) n];
        java.util.Arrays.fill(a, x);
        return a;
    }
}
