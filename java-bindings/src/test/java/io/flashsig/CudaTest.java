package io.flashsig;

import io.flashsig.FlashSigException.Status;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;

import static io.flashsig.BadInputTest.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The device half of the Java API (Cuda, CudaStream, AttentionExtras.stream, BackwardWorkspace): its
 * refusals everywhere, and on a machine with a CUDA device a round trip host → device → attention → host
 * against the CPU, another framework's device memory and stream used in place, and the fast backward (with a
 * workspace) against the deterministic one. The cuda-emulated surefire execution runs it on libflashsig_emu.
 */
class CudaTest {
    static final Device GPU = Device.cuda(0);
    static final long[] SHAPE = {1, 100, 2, 64};

    static boolean gpu() {
        return TestSupport.cudaDevice();
    }

    @Test
    void withoutADeviceEveryCallSaysSo() {
        assumeTrue(!gpu(), "a CUDA device is present: the no-device refusals do not apply");
        String why = FlashSig.capabilities().cudaCompiled() ? "no CUDA device or driver" : "no CUDA support";
        try (Arena arena = Arena.ofConfined()) {
            expect(Status.NO_DEVICE, () -> Cuda.allocate(arena, DType.BF16, GPU, SHAPE), why);
            expect(Status.NO_DEVICE, () -> CudaStream.create(GPU), why);
            expect(Status.NO_DEVICE, () -> Cuda.synchronize(GPU), why);
            expect(Status.NO_DEVICE, () -> Cuda.deviceInfo(GPU), why);
            // a device tensor wrapping a foreign address: refused before anything touches it
            Tensor foreign = Tensor.wrap(MemorySegment.ofAddress(1 << 20).reinterpret(1 << 16), DType.BF16, GPU,
                    SHAPE, Tensor.contiguousStrides(SHAPE));
            Tensor host = Tensor.allocate(arena, DType.BF16, SHAPE);
            expect(Status.NO_DEVICE, () -> Cuda.copy(host, foreign, null), why);
            // a workspace with bytes needs the device; the size query does not
            expect(Status.NO_DEVICE, () -> Cuda.allocateBackwardWorkspace(arena, GPU, 1 << 20), why);
            expect(Status.NO_DEVICE, () -> Cuda.allocateBackwardWorkspace(arena, AttentionSpec.softmax(), foreign), why);
            assertEquals(SHAPE[0] * SHAPE[1] * SHAPE[2] * SHAPE[3] * 4,
                    FlashSig.backwardWorkspaceBytes(AttentionSpec.softmax(), foreign));
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
            expect(Status.NULL_ARGUMENT, () -> Cuda.deviceInfo(null), "device is null");
            expect(Status.INVALID_DEVICE, () -> Cuda.deviceInfo(Device.CPU), "must be a CUDA device");
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

    /**
     * The head-dim rule of the CUDA kernels (multiples of 8 up to the widest kernel) and the fast backward's
     * workspace, whose fp32 dQ rows have the kernel's width: no device needed (the size query reads shapes).
     */
    @Test
    void headDimRuleAndWorkspaceWidth() {
        FlashSig.Capabilities caps = FlashSig.capabilities();
        if (caps.cudaCompiled()) {
            assertEquals(256, caps.cudaBackwardMaxHeadDim());
            for (int d : new int[] {8, 40, 64, 72, 96, 128, 136, 200, 256}) {
                assertTrue(caps.cudaRunsHeadDim(d), "d = " + d);
                assertTrue(caps.cudaRunsBackwardHeadDim(d), "backward d = " + d);
            }
            for (int d : new int[] {0, 4, 100, 264}) {
                assertFalse(caps.cudaRunsHeadDim(d), "d = " + d);
                assertFalse(caps.cudaRunsBackwardHeadDim(d), "backward d = " + d);
            }
        } else {
            assertEquals(0, caps.cudaBackwardMaxHeadDim());
        }
        long[][] shapes = {{1, 100, 2, 40}, {1, 100, 2, 96}, {1, 100, 2, 128}, {1, 100, 2, 200}, {1, 100, 2, 256}};
        long[] widths = {64, 128, 128, 256, 256};
        for (int i = 0; i < shapes.length; i++) {
            Tensor foreign = Tensor.wrap(MemorySegment.ofAddress(1 << 20).reinterpret(1 << 20), DType.BF16, GPU,
                    shapes[i], Tensor.contiguousStrides(shapes[i]));
            assertEquals(shapes[i][0] * shapes[i][1] * shapes[i][2] * widths[i] * 4,
                    FlashSig.backwardWorkspaceBytes(AttentionSpec.softmax(), foreign), "d = " + shapes[i][3]);
        }
    }

    /** Head dims below the kernels' widths (64, 128) run on the next wider kernel: d = 96 and d = 40. */
    @Test
    void headDimsBelowTheKernelWidthsAgreeWithTheCpu() {
        assumeTrue(gpu(), "no CUDA device: the device round trip is skipped");
        roundTrip(AttentionSpec.of(Score.SOFTMAX), false, new long[] {1, 70, 2, 96});
        roundTrip(AttentionSpec.of(Score.GELU).causal(), false, new long[] {2, 33, 2, 40});
    }

    /**
     * The device's info says what runs there: forward and backward at its largest backward head dim agree with
     * the CPU (on a GPU with 99 KiB per block: d = 128, on the backward's narrower kernels), and where that is
     * below 256 a backward 8 wider is refused as unsupported while its forward runs (the compact 256-wide
     * forward of those GPUs).
     */
    @Test
    void deviceInfoSaysWhatRuns() {
        assumeTrue(gpu(), "no CUDA device: the device info is skipped");
        Cuda.DeviceInfo info = Cuda.deviceInfo(GPU);
        assertFalse(info.name().isEmpty());
        assertTrue(info.computeCapability() >= 80 && info.multiprocessors() > 0 && info.memoryBytes() > 0, info.toString());
        assertTrue(info.sharedMemoryPerBlock() >= 99 * 1024, info.toString());
        assertEquals(256, info.forwardMaxHeadDim(), info.toString());
        int d = info.backwardMaxHeadDim();
        assertTrue(d == 128 || d == 256, info.toString());
        assertTrue(info.trainsHeadDim(d) && !info.trainsHeadDim(d + 8) && !info.trainsHeadDim(d - 4), info.toString());
        roundTrip(AttentionSpec.of(Score.SOFTMAX).causal(), true, new long[] {1, 40, 2, d});
        if (d < 256) {
            long[] wider = {1, 40, 2, d + 8};
            AttentionSpec spec = AttentionSpec.of(Score.SIGMOID);
            try (Arena arena = Arena.ofConfined()) {
                Tensor[] t = new Tensor[8]; // q, k, v, out, dout, dq, dk, dv
                for (int i = 0; i < t.length; i++) t[i] = Cuda.allocate(arena, DType.BF16, GPU, wider);
                FlashSig.forward(spec, AttentionExtras.none(), t[0], t[1], t[2], t[3], null);
                expect(Status.UNSUPPORTED, () -> FlashSig.backward(spec, AttentionExtras.none(), t[0], t[1], t[2], t[3],
                        t[4], null, t[5], t[6], t[7], null), "KiB of shared memory");
                Cuda.synchronize(GPU);
            }
        }
    }

    /** The 256-wide kernels, forward and backward: d = 256, and d = 200 below it (ALiBi: the extended kernels). */
    @Test
    void headDimsUpTo256AgreeWithTheCpu() {
        assumeTrue(gpu(), "no CUDA device: the device round trip is skipped");
        assumeTrue(Cuda.deviceInfo(GPU).trainsHeadDim(256), "this device trains head dims up to 128 (deviceInfoSaysWhatRuns)");
        roundTrip(AttentionSpec.of(Score.SIGMOID).causal(), false, new long[] {1, 70, 2, 256});
        roundTrip(AttentionSpec.of(Score.SOFTMAX), true, new long[] {2, 45, 2, 200});
    }

    /**
     * The linear scores with a workspace (the size query's: the segments' partial states) in both directions:
     * long enough for two segments per kernel, causal cosFormer and non-causal elu+1 against the CPU.
     */
    @Test
    void linearScoresWithAWorkspaceAgreeWithTheCpu() {
        assumeTrue(gpu(), "no CUDA device: the device round trip is skipped");
        roundTrip(AttentionSpec.of(Score.COSFORMER).causal(), false, new long[] {1, 600, 2, 64}, true);
        roundTrip(AttentionSpec.of(Score.LINEAR_ELU), false, new long[] {1, 520, 2, 64}, true);
    }

    private static void roundTrip(AttentionSpec spec, boolean alibi) {
        roundTrip(spec, alibi, SHAPE, false);
    }

    private static void roundTrip(AttentionSpec spec, boolean alibi, long[] shape) {
        roundTrip(spec, alibi, shape, false);
    }

    private static void roundTrip(AttentionSpec spec, boolean alibi, long[] shape, boolean workspace) {
        Random r = new Random(3);
        long[] lseShape = {shape[0], shape[2], shape[1]};
        try (Arena arena = Arena.ofConfined(); CudaStream stream = CudaStream.create(GPU)) {
            Tensor[] host = new Tensor[4]; // q, k, v, dout
            for (int i = 0; i < 4; i++) {
                host[i] = Tensor.allocate(arena, DType.BF16, shape);
                host[i].copyFrom(TestSupport.toFloats(TestSupport.randn(r, DType.BF16, (int) host[i].elementCount())));
            }
            Tensor[] dev = new Tensor[8]; // q, k, v, dout, out, dq, dk, dv
            for (int i = 0; i < 8; i++) dev[i] = Cuda.allocate(arena, DType.BF16, GPU, shape);
            boolean softmax = spec.score() == Score.SOFTMAX; // only softmax has an LSE
            Tensor devLse = softmax ? Cuda.allocate(arena, DType.FP32, GPU, lseShape) : null;
            for (int i = 0; i < 4; i++) Cuda.copy(host[i], dev[i], stream);
            AttentionExtras onDevice = AttentionExtras.none().stream(stream), onCpu = AttentionExtras.none();
            if (workspace) onDevice = onDevice.workspace(Cuda.allocateBackwardWorkspace(arena, spec, dev[0]));
            if (alibi) {
                float[] slopes = FlashSig.alibiSlopes((int) shape[2]);
                Tensor hostSlopes = Tensor.allocate(arena, DType.FP32, shape[2]);
                hostSlopes.copyFrom(slopes);
                Tensor devSlopes = Cuda.allocate(arena, DType.FP32, GPU, shape[2]);
                Cuda.copy(hostSlopes, devSlopes, stream);
                onDevice = onDevice.alibi(devSlopes);
                onCpu = onCpu.alibi(slopes);
            }
            FlashSig.forward(spec, onDevice, dev[0], dev[1], dev[2], dev[4], devLse);
            FlashSig.backward(spec, onDevice, dev[0], dev[1], dev[2], dev[4], dev[3], devLse, dev[5], dev[6], dev[7],
                    null);
            Tensor[] back = new Tensor[4]; // out, dq, dk, dv
            for (int i = 0; i < 4; i++) {
                back[i] = Tensor.allocate(arena, DType.BF16, shape);
                Cuda.copy(dev[4 + i], back[i], stream);
            }
            stream.synchronize();

            Tensor[] cpu = new Tensor[4];
            for (int i = 0; i < 4; i++) cpu[i] = Tensor.allocate(arena, DType.BF16, shape);
            Tensor cpuLse = softmax ? Tensor.allocate(arena, DType.FP32, lseShape) : null;
            FlashSig.forward(spec, onCpu, host[0], host[1], host[2], cpu[0], cpuLse);
            FlashSig.backward(spec, onCpu, host[0], host[1], host[2], cpu[0], host[3], cpuLse, cpu[1], cpu[2], cpu[3],
                    null);
            String[] names = {"out", "dq", "dk", "dv"};
            for (int i = 0; i < 4; i++)
                assertClose(back[i].toFloatArray(), cpu[i].toFloatArray(), spec + " " + names[i]);
        }
        Cuda.synchronize(GPU);
    }

    /**
     * Another framework's device memory and stream, used in place (Tensor.wrap over a raw device address,
     * CudaStream.wrap over a raw cudaStream_t), forward and backward on the wrapped stream against the CPU:
     * q, k and v are strided views into one fused QKV buffer [B, N, 3·H, d] (as a fused projection writes
     * them), dq a strided view into the first half of a [B, N, 2·H, d] buffer whose other half must stay
     * untouched (zero), the rest bare addresses. A view's byte size bounds every access (one 2 bytes short
     * is refused by name), and closing the wrapped stream leaves it to its owner. The "framework" is
     * FlashSig's own allocator, known to this test only by the raw addresses it hands out.
     */
    @Test
    void foreignDeviceMemoryAndStreamAreUsedInPlace() {
        assumeTrue(gpu(), "no CUDA device: foreign device memory is skipped");
        long b = SHAPE[0], n = SHAPE[1], h = SHAPE[2], d = SHAPE[3];
        long[] fused = {b, n, 3 * h, d}, padded = {b, n, 2 * h, d}, lseShape = {b, h, n};
        long[] qkvStrides = Tensor.contiguousStrides(fused), dqStrides = Tensor.contiguousStrides(padded);
        long fusedBytes = Tensor.byteSize(DType.BF16, fused), paddedBytes = Tensor.byteSize(DType.BF16, padded);
        long bytes = Tensor.byteSize(DType.BF16, SHAPE), group = h * d * 2; // bytes of one head group
        AttentionSpec spec = AttentionSpec.softmax().causal();
        Random r = new Random(5);
        try (Arena arena = Arena.ofConfined(); CudaStream owner = CudaStream.create(GPU)) {
            Tensor hostFused = Tensor.allocate(arena, DType.BF16, fused);
            Tensor hostDout = Tensor.allocate(arena, DType.BF16, SHAPE);
            hostFused.copyFrom(TestSupport.toFloats(TestSupport.randn(r, DType.BF16, (int) hostFused.elementCount())));
            hostDout.copyFrom(TestSupport.toFloats(TestSupport.randn(r, DType.BF16, (int) hostDout.elementCount())));
            // the framework's allocations and stream, seen from here as addresses only
            long qkvPtr = Cuda.allocate(arena, DType.BF16, GPU, fused).segment().address();
            long dqPtr = Cuda.allocate(arena, DType.BF16, GPU, padded).segment().address();
            long[] ptrs = new long[4]; // out, dout, dk, dv
            for (int i = 0; i < 4; i++) ptrs[i] = Cuda.allocate(arena, DType.BF16, GPU, SHAPE).segment().address();
            long lsePtr = Cuda.allocate(arena, DType.FP32, GPU, lseShape).segment().address();
            CudaStream stream = CudaStream.wrap(GPU, owner.handle().address());

            Tensor[] qkv = new Tensor[3];
            for (int i = 0; i < 3; i++)
                qkv[i] = Tensor.wrap(MemorySegment.ofAddress(qkvPtr + i * group).reinterpret(fusedBytes - i * group),
                        DType.BF16, GPU, SHAPE, qkvStrides);
            Tensor dq = Tensor.wrap(MemorySegment.ofAddress(dqPtr).reinterpret(paddedBytes), DType.BF16, GPU, SHAPE,
                    dqStrides);
            Tensor[] t = new Tensor[4]; // out, dout, dk, dv
            for (int i = 0; i < 4; i++)
                t[i] = Tensor.wrap(MemorySegment.ofAddress(ptrs[i]).reinterpret(bytes), DType.BF16, GPU, SHAPE,
                        Tensor.contiguousStrides(SHAPE));
            Tensor lse = Tensor.wrap(MemorySegment.ofAddress(lsePtr).reinterpret(b * h * n * 4), DType.FP32, GPU,
                    lseShape, Tensor.contiguousStrides(lseShape));
            Cuda.copy(hostFused, Tensor.wrap(MemorySegment.ofAddress(qkvPtr).reinterpret(fusedBytes), DType.BF16, GPU,
                    fused, qkvStrides), stream);
            Cuda.copy(hostDout, t[1], stream);

            AttentionExtras onStream = AttentionExtras.none().stream(stream);
            long vBytes = fusedBytes - 2 * group; // v's view, from its first element to the buffer's end
            Tensor shortV = Tensor.wrap(MemorySegment.ofAddress(qkvPtr + 2 * group).reinterpret(vBytes - 2), DType.BF16,
                    GPU, SHAPE, qkvStrides);
            expect(Status.BUFFER_TOO_SMALL, () -> FlashSig.forward(spec, onStream, qkv[0], qkv[1], shortV, t[0], lse),
                    "v:", "capacity_bytes");
            FlashSig.forward(spec, onStream, qkv[0], qkv[1], qkv[2], t[0], lse);
            FlashSig.backward(spec, onStream, qkv[0], qkv[1], qkv[2], t[0], t[1], lse, dq, t[2], t[3], null);
            Tensor[] back = new Tensor[3]; // out, dk, dv
            for (int i = 0; i < 3; i++) {
                back[i] = Tensor.allocate(arena, DType.BF16, SHAPE);
                Cuda.copy(t[i == 0 ? 0 : i + 1], back[i], stream);
            }
            Tensor backDq = Tensor.allocate(arena, DType.BF16, padded);
            Cuda.copy(Tensor.wrap(MemorySegment.ofAddress(dqPtr).reinterpret(paddedBytes), DType.BF16, GPU, padded,
                    dqStrides), backDq, stream);
            stream.close(); // wrapped: not destroyed, the owner's stream goes on
            owner.synchronize();

            // the CPU on host views of the same layouts
            Tensor[] hostQkv = new Tensor[3];
            for (int i = 0; i < 3; i++)
                hostQkv[i] = Tensor.wrap(hostFused.segment().asSlice(i * group), DType.BF16, SHAPE, qkvStrides);
            Tensor cpuDqPadded = Tensor.allocate(arena, DType.BF16, padded);
            Tensor cpuDq = Tensor.wrap(cpuDqPadded.segment(), DType.BF16, SHAPE, dqStrides);
            Tensor[] cpu = new Tensor[3]; // out, dk, dv
            for (int i = 0; i < 3; i++) cpu[i] = Tensor.allocate(arena, DType.BF16, SHAPE);
            Tensor cpuLse = Tensor.allocate(arena, DType.FP32, lseShape);
            FlashSig.forward(spec, hostQkv[0], hostQkv[1], hostQkv[2], cpu[0], cpuLse);
            FlashSig.backward(spec, hostQkv[0], hostQkv[1], hostQkv[2], cpu[0], hostDout, cpuLse, cpuDq, cpu[1],
                    cpu[2]);
            String[] names = {"out", "dk", "dv"};
            for (int i = 0; i < 3; i++)
                assertClose(back[i].toFloatArray(), cpu[i].toFloatArray(), spec + " " + names[i]);
            // the padded dq buffer: its first half against the CPU's, its second half still zero
            assertClose(backDq.toFloatArray(), cpuDqPadded.toFloatArray(), spec + " dq (padded buffer)");
        }
        Cuda.synchronize(GPU);
    }

    /** The round trips' tolerance: |gpu - cpu| <= 2e-2 (1 + |cpu|) elementwise. */
    static void assertClose(float[] gpu, float[] cpu, String what) {
        assertEquals(cpu.length, gpu.length, what);
        for (int j = 0; j < gpu.length; j++)
            assertTrue(Math.abs(gpu[j] - cpu[j]) <= 2e-2 * (1 + Math.abs(cpu[j])),
                    what + "[" + j + "]: gpu " + gpu[j] + ", cpu " + cpu[j]);
    }

    /**
     * The fast backward (a workspace, one dK/dV kernel adding dQ with atomics) against the deterministic
     * one on the same device data: dK and dV bit for bit, dQ within the tolerance of the round trip above;
     * twice on one stream with the same workspace (each call clears it), for softmax (GQA) and sigmoid.
     */
    @Test
    void fastBackwardMatchesTheDeterministicOne() {
        assumeTrue(gpu(), "no CUDA device: the fast backward is skipped");
        fastVsDeterministic(AttentionSpec.softmax().causal(), new long[] {2, 200, 4, 64}, 2, DType.BF16);
        fastVsDeterministic(AttentionSpec.of(Score.SIGMOID), new long[] {1, 129, 2, 128}, 2, DType.FP16);
    }

    private static void fastVsDeterministic(AttentionSpec spec, long[] qShape, long hk, DType dtype) {
        long[] kvShape = {qShape[0], qShape[1], hk, qShape[3]};
        long[] lseShape = {qShape[0], qShape[2], qShape[1]};
        Random r = new Random(11);
        try (Arena arena = Arena.ofConfined(); CudaStream stream = CudaStream.create(GPU)) {
            long[][] shapes = {qShape, kvShape, kvShape, qShape}; // q, k, v, dout
            Tensor[] dev = new Tensor[4];
            for (int i = 0; i < 4; i++) {
                Tensor host = Tensor.allocate(arena, dtype, shapes[i]);
                host.copyFrom(TestSupport.toFloats(TestSupport.randn(r, dtype, (int) host.elementCount())));
                dev[i] = Cuda.allocate(arena, dtype, GPU, shapes[i]);
                Cuda.copy(host, dev[i], stream);
            }
            Tensor out = Cuda.allocate(arena, dtype, GPU, qShape);
            Tensor lse = spec.score() == Score.SOFTMAX ? Cuda.allocate(arena, DType.FP32, GPU, lseShape) : null;
            AttentionExtras onStream = AttentionExtras.none().stream(stream);
            FlashSig.forward(spec, onStream, dev[0], dev[1], dev[2], out, lse);

            long need = qShape[0] * qShape[2] * qShape[1] * qShape[3] * 4;
            assertEquals(need, FlashSig.backwardWorkspaceBytes(spec, dev[0]));
            assertEquals(0, FlashSig.backwardWorkspaceBytes(spec.deterministic(true), dev[0]));
            BackwardWorkspace ws = Cuda.allocateBackwardWorkspace(arena, spec, dev[0]);
            assertEquals(need, ws.byteSize());
            assertEquals(GPU, ws.device());

            // [run][dq, dk, dv]: the deterministic run, then the fast one twice
            float[][][] got = new float[3][][];
            for (int run = 0; run < 3; run++) {
                Tensor dq = Cuda.allocate(arena, dtype, GPU, qShape), dk = Cuda.allocate(arena, dtype, GPU, kvShape);
                Tensor dv = Cuda.allocate(arena, dtype, GPU, kvShape);
                if (run == 0)
                    FlashSig.backward(spec.deterministic(true), onStream.workspace(ws), dev[0], dev[1], dev[2], out,
                            dev[3], lse, dq, dk, dv, null);
                else
                    FlashSig.backward(spec, onStream.workspace(ws), dev[0], dev[1], dev[2], out, dev[3], lse, dq, dk,
                            dv, null);
                Tensor[] back = {Tensor.allocate(arena, dtype, qShape), Tensor.allocate(arena, dtype, kvShape),
                        Tensor.allocate(arena, dtype, kvShape)};
                Cuda.copy(dq, back[0], stream);
                Cuda.copy(dk, back[1], stream);
                Cuda.copy(dv, back[2], stream);
                stream.synchronize();
                got[run] = new float[][] {back[0].toFloatArray(), back[1].toFloatArray(), back[2].toFloatArray()};
            }
            for (int run = 1; run < 3; run++) {
                org.junit.jupiter.api.Assertions.assertArrayEquals(got[0][1], got[run][1], spec + " dk: fast run " + run);
                org.junit.jupiter.api.Assertions.assertArrayEquals(got[0][2], got[run][2], spec + " dv: fast run " + run);
                float[] det = got[0][0], fast = got[run][0];
                for (int j = 0; j < det.length; j++)
                    assertTrue(Math.abs(fast[j] - det[j]) <= 2e-2 * (1 + Math.abs(det[j])),
                            spec + " dq[" + j + "]: fast " + fast[j] + ", deterministic " + det[j] + " (run " + run + ")");
            }

            // too small a workspace: the native check names it, nothing runs
            BackwardWorkspace small = Cuda.allocateBackwardWorkspace(arena, GPU, need - 256);
            Tensor dq = Cuda.allocate(arena, dtype, GPU, qShape), dk = Cuda.allocate(arena, dtype, GPU, kvShape);
            Tensor dv = Cuda.allocate(arena, dtype, GPU, kvShape);
            expect(Status.BUFFER_TOO_SMALL, () -> FlashSig.backward(spec, onStream.workspace(small), dev[0], dev[1],
                    dev[2], out, dev[3], lse, dq, dk, dv, null), "params.workspace_bytes");
            stream.synchronize();
        }
        Cuda.synchronize(GPU);
    }

    static float[] filled(long n, float x) {
        float[] a = new float[(int) n];
        java.util.Arrays.fill(a, x);
        return a;
    }
}
