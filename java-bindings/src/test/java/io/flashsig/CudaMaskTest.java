package io.flashsig;

import io.flashsig.FlashSigException.Status;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.Random;

import static io.flashsig.BadInputTest.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Masks and block layouts in device memory ({@link Cuda#allocateMask}, {@link Cuda#copy(Mask, Mask, CudaStream)},
 * {@link Mask#wrap(MemorySegment, Device, long[], long[])}): their refusals everywhere, and on a machine
 * with a CUDA device a masked, block-sparse forward and backward against the same call on the CPU, and
 * the gradient of a bias broadcast over B, Hq or Nq (which needs the workspace) against the CPU's.
 */
class CudaMaskTest {
    static final Device GPU = Device.cuda(0);
    static final int B = 1, N = 100, H = 2, D = 64, BLOCK = 32, BLOCKS = (N + BLOCK - 1) / BLOCK;
    static final long[] QKV = {B, N, H, D};
    static final long[] MASK = {B, H, N, N};
    static final long[] LAYOUT = {H, BLOCKS, BLOCKS};
    static final long[] LSE = {B, H, N};
    static final long MASK_BYTES = (long) B * H * N * N;

    static boolean gpu() {
        return TestSupport.cudaDevice();
    }

    static float[] filled(long n, float x) {
        float[] a = new float[(int) n];
        Arrays.fill(a, x);
        return a;
    }

    /** A device mask over a made-up address: fine as long as nothing dereferences it. */
    static Mask fakeDeviceMask(long[] shape, long bytes) {
        return Mask.wrap(MemorySegment.ofAddress(1 << 20).reinterpret(bytes), GPU, shape,
                Tensor.contiguousStrides(shape));
    }

    @Test
    void withoutADeviceAllocateMaskAndCopySaySo() {
        assumeTrue(!gpu(), "a CUDA device is present: the no-device refusals do not apply");
        String why = FlashSig.capabilities().cudaCompiled() ? "no CUDA device or driver" : "no CUDA support";
        try (Arena arena = Arena.ofConfined()) {
            expect(Status.NO_DEVICE, () -> Cuda.allocateMask(arena, GPU, MASK), why);
            Mask host = Mask.allocate(arena, MASK), dev = fakeDeviceMask(MASK, MASK_BYTES);
            expect(Status.NO_DEVICE, () -> Cuda.copy(host, dev, null), why);
            expect(Status.NO_DEVICE, () -> Cuda.copy(dev, host, null), why);
        }
    }

    @Test
    void aWrappedDeviceMaskRefusesElementAccess() {
        Mask dev = fakeDeviceMask(MASK, MASK_BYTES);
        assertEquals(GPU, dev.device());
        assertTrue(dev.toString().contains("on cuda:0"), dev.toString());
        expect(Status.INVALID_DEVICE, () -> dev.get(0, 0, 0, 0), "element access needs host memory",
                "this mask is on cuda:0");
        expect(Status.INVALID_DEVICE, () -> dev.set(true, 0, 1, 2, 3), "this mask is on cuda:0");
        expect(Status.INVALID_SHAPE, () -> dev.get(0, 0, 0, N), "outside shape"); // the index is checked first
        try (Arena arena = Arena.ofConfined()) {
            // host masks keep working, whichever way they are made
            Mask host = Cuda.allocateMask(arena, Device.CPU, MASK);
            assertEquals(Device.CPU, host.device());
            assertTrue(host.toString().contains("on cpu"), host.toString());
            host.set(true, 0, 1, 2, 3);
            assertTrue(host.get(0, 1, 2, 3));
            Mask wrapped = Mask.wrap(host.segment(), MASK, Tensor.contiguousStrides(MASK));
            assertEquals(Device.CPU, wrapped.device());
            assertTrue(wrapped.get(0, 1, 2, 3));
        }
    }

    /** A device mask or layout with CPU tensors: the C ABI refuses it by name, and nothing is written. */
    @Test
    void deviceMasksWithCpuTensorsAreRefusedByName() {
        AttentionSpec spec = AttentionSpec.of(Score.SIGMOID), sparse = spec.blockSparse(BLOCK, BLOCK);
        try (Arena arena = Arena.ofConfined()) {
            Tensor q = Tensor.allocate(arena, DType.FP32, QKV), out = Tensor.allocate(arena, DType.FP32, QKV);
            Tensor dq = Tensor.allocate(arena, DType.FP32, QKV), dk = Tensor.allocate(arena, DType.FP32, QKV),
                    dv = Tensor.allocate(arena, DType.FP32, QKV);
            for (Tensor t : new Tensor[] {out, dq, dk, dv}) t.copyFrom(filled(t.elementCount(), 7f));
            AttentionExtras mask = AttentionExtras.none().mask(fakeDeviceMask(MASK, MASK_BYTES));
            AttentionExtras layout = AttentionExtras.none().blockLayout(fakeDeviceMask(LAYOUT, H * BLOCKS * BLOCKS));
            expect(Status.INVALID_DEVICE, () -> FlashSig.forward(spec, mask, q, q, q, out, null),
                    "mask is on cuda:0 but q is on cpu");
            expect(Status.INVALID_DEVICE, () -> FlashSig.forward(sparse, layout, q, q, q, out, null),
                    "block_layout is on cuda:0 but q is on cpu");
            expect(Status.INVALID_DEVICE, () -> FlashSig.backward(spec, mask, q, q, q, null, q, null, dq, dk, dv, null),
                    "mask is on cuda:0 but q is on cpu");
            for (Tensor t : new Tensor[] {out, dq, dk, dv})
                for (float x : t.toFloatArray()) assertEquals(7f, x);
            // a device mask whose arena has closed: refused in Java, before the native call
            Mask closed;
            try (Arena gone = Arena.ofConfined()) {
                closed = Mask.wrap(MemorySegment.ofAddress(1 << 20).reinterpret(MASK_BYTES, gone, null), GPU, MASK,
                        Tensor.contiguousStrides(MASK));
            }
            expect(Status.SEGMENT_NOT_ACCESSIBLE, () -> FlashSig.forward(spec, AttentionExtras.none().mask(closed),
                    q, q, q, out, null), "mask: its arena is closed");
            for (float x : out.toFloatArray()) assertEquals(7f, x);
        }
    }

    @Test
    void wrapAndAllocateRefuseBadArguments() {
        MemorySegment address = MemorySegment.ofAddress(1 << 20).reinterpret(MASK_BYTES);
        long[] st = Tensor.contiguousStrides(MASK);
        expect(Status.NULL_ARGUMENT, () -> Mask.wrap(null, GPU, MASK, st), "segment is null");
        expect(Status.NULL_ARGUMENT, () -> Mask.wrap(address, null, MASK, st), "device is null");
        expect(Status.NULL_ARGUMENT, () -> Mask.wrap(address, GPU, null, st), "shape is null");
        expect(Status.NULL_ARGUMENT, () -> Mask.wrap(address, GPU, MASK, null), "strides is null");
        expect(Status.INVALID_SHAPE, () -> Mask.wrap(address, GPU, new long[0], new long[0]), "rank is 0");
        expect(Status.INVALID_SHAPE, () -> Mask.wrap(address, GPU, new long[] {1, -2, 3}, new long[] {6, 3, 1}),
                "negative dimension");
        expect(Status.INVALID_SHAPE, () -> Mask.wrap(address, GPU, MASK, new long[] {1, 1, 1}),
                "strides has 3 entries but shape has 4");
        expect(Status.INVALID_DEVICE, () -> Mask.wrap(MemorySegment.ofArray(new byte[16]), GPU, new long[] {16},
                new long[] {1}), "a heap segment cannot be a cuda:0 mask");
        try (Arena arena = Arena.ofConfined()) {
            expect(Status.NULL_ARGUMENT, () -> Cuda.allocateMask(arena, null, MASK), "device is null");
            expect(Status.INVALID_SHAPE, () -> Cuda.allocateMask(arena, GPU, 1, 0, N, N), "dimension < 1");
            expect(Status.INVALID_SHAPE, () -> Cuda.allocateMask(arena, GPU, 1, 2, 3, 4, 5), "rank is 5");
        }
    }

    @Test
    void copyRefusesWhatTensorCopyRefuses() {
        try (Arena arena = Arena.ofConfined()) {
            Mask host = Mask.allocate(arena, MASK), host2 = Mask.allocate(arena, MASK);
            Mask dev = fakeDeviceMask(MASK, MASK_BYTES);
            expect(Status.NULL_ARGUMENT, () -> Cuda.copy((Mask) null, dev, null), "src is null");
            expect(Status.NULL_ARGUMENT, () -> Cuda.copy(host, (Mask) null, null), "dst is null");
            expect(Status.INVALID_DEVICE, () -> Cuda.copy(host, host2, null), "both host masks");
            expect(Status.INVALID_DEVICE, () -> Cuda.copy(Mask.of(new byte[(int) MASK_BYTES], MASK), dev, null),
                    "src is a heap mask", "off-heap");
            expect(Status.INVALID_DEVICE, () -> Cuda.copy(dev, Mask.of(new byte[(int) MASK_BYTES], MASK), null),
                    "dst is a heap mask");
            expect(Status.INVALID_SHAPE, () -> Cuda.copy(Mask.allocate(arena, 1, 1, N, N), dev, null),
                    "src has shape [1, 1, 100, 100] but dst has [1, 2, 100, 100]");
            // every other key of a wider host row: not contiguous
            Mask strided = Mask.wrap(arena.allocate(2 * MASK_BYTES), MASK, new long[] {2L * H * N * N, 2L * N * N,
                    2L * N, 2});
            expect(Status.INVALID_STRIDE, () -> Cuda.copy(strided, dev, null), "src is not contiguous");
            expect(Status.INVALID_STRIDE, () -> Cuda.copy(host, Mask.wrap(MemorySegment.ofAddress(1 << 20)
                    .reinterpret(2 * MASK_BYTES), GPU, MASK, strided.strides()), null), "dst is not contiguous");
            expect(Status.INVALID_DEVICE, () -> Cuda.copy(dev, Mask.wrap(MemorySegment.ofAddress(1 << 24)
                    .reinterpret(MASK_BYTES), Device.cuda(1), MASK, Tensor.contiguousStrides(MASK)), null),
                    "src is on cuda:0 but dst on cuda:1");
            expect(Status.BUFFER_TOO_SMALL, () -> Cuda.copy(host, fakeDeviceMask(MASK, MASK_BYTES - 1), null),
                    "dst's segment is smaller than its " + MASK_BYTES + " bytes");
            expect(Status.BUFFER_TOO_SMALL, () -> Cuda.copy(Mask.wrap(arena.allocate(10), MASK,
                    Tensor.contiguousStrides(MASK)), dev, null), "src's segment is smaller");
            CudaStream other = CudaStream.wrap(Device.cuda(1), 0x1000);
            expect(Status.INVALID_DEVICE, () -> Cuda.copy(host, dev, other),
                    "stream is on cuda:1 but the copy on cuda:0");
            other.close();
            Mask closed;
            try (Arena gone = Arena.ofConfined()) {
                closed = Mask.allocate(gone, MASK);
            }
            expect(Status.SEGMENT_NOT_ACCESSIBLE, () -> Cuda.copy(closed, dev, null), "src: its arena is closed");
        }
    }

    /**
     * A random mask and block layout copied host → device (and back, byte for byte), then forward and
     * backward on the device with both against the same call on the CPU with the host copies.
     */
    @ParameterizedTest
    @EnumSource(value = Score.class, names = {"SOFTMAX", "SIGMOID"})
    void masksOnTheDeviceAgreeWithTheCpu(Score score) {
        assumeTrue(gpu(), "no CUDA device: the device round trip is skipped");
        Random r = new Random(11);
        AttentionSpec spec = AttentionSpec.of(score).blockSparse(BLOCK, BLOCK);
        boolean softmax = score == Score.SOFTMAX; // only softmax has an LSE
        try (Arena arena = Arena.ofConfined(); CudaStream stream = CudaStream.create(GPU)) {
            Mask hostMask = Mask.allocate(arena, MASK), hostLayout = Mask.allocate(arena, LAYOUT);
            for (int h = 0; h < H; h++) {
                for (int i = 0; i < N; i++)
                    for (int j = 0; j < N; j++) hostMask.set(i == j || r.nextInt(10) < 6, 0, h, i, j);
                for (int bi = 0; bi < BLOCKS; bi++)
                    for (int bj = 0; bj < BLOCKS; bj++) hostLayout.set(bi == bj || r.nextBoolean(), h, bi, bj);
            }
            Mask devMask = Cuda.allocateMask(arena, GPU, MASK), devLayout = Cuda.allocateMask(arena, GPU, LAYOUT);
            Cuda.copy(hostMask, devMask, stream);
            Cuda.copy(hostLayout, devLayout, stream);
            Mask backMask = Mask.allocate(arena, MASK);
            Cuda.copy(devMask, backMask, stream);

            Tensor[] host = new Tensor[4]; // q, k, v, dout
            for (int i = 0; i < 4; i++) {
                host[i] = Tensor.allocate(arena, DType.BF16, QKV);
                host[i].copyFrom(TestSupport.toFloats(TestSupport.randn(r, DType.BF16, (int) host[i].elementCount())));
            }
            Tensor[] dev = new Tensor[8]; // q, k, v, dout, out, dq, dk, dv
            for (int i = 0; i < 8; i++) dev[i] = Cuda.allocate(arena, DType.BF16, GPU, QKV);
            for (int i = 0; i < 4; i++) Cuda.copy(host[i], dev[i], stream);
            Tensor devLse = softmax ? Cuda.allocate(arena, DType.FP32, GPU, LSE) : null;
            AttentionExtras onDevice = AttentionExtras.none().mask(devMask).blockLayout(devLayout).stream(stream);
            FlashSig.forward(spec, onDevice, dev[0], dev[1], dev[2], dev[4], devLse);
            FlashSig.backward(spec, onDevice, dev[0], dev[1], dev[2], softmax ? dev[4] : null, dev[3], devLse, dev[5],
                    dev[6], dev[7], null);
            Tensor[] back = new Tensor[4]; // out, dq, dk, dv
            for (int i = 0; i < 4; i++) {
                back[i] = Tensor.allocate(arena, DType.BF16, QKV);
                Cuda.copy(dev[4 + i], back[i], stream);
            }
            stream.synchronize();
            assertEquals(-1L, hostMask.segment().mismatch(backMask.segment()), "mask host -> device -> host");

            AttentionExtras onCpu = AttentionExtras.none().mask(hostMask).blockLayout(hostLayout);
            Tensor[] cpu = new Tensor[4];
            for (int i = 0; i < 4; i++) cpu[i] = Tensor.allocate(arena, DType.BF16, QKV);
            Tensor cpuLse = softmax ? Tensor.allocate(arena, DType.FP32, LSE) : null;
            FlashSig.forward(spec, onCpu, host[0], host[1], host[2], cpu[0], cpuLse);
            FlashSig.backward(spec, onCpu, host[0], host[1], host[2], softmax ? cpu[0] : null, host[3], cpuLse, cpu[1],
                    cpu[2], cpu[3], null);
            String[] names = {"out", "dq", "dk", "dv"};
            for (int i = 0; i < 4; i++) {
                float[] g = back[i].toFloatArray(), c = cpu[i].toFloatArray();
                for (int j = 0; j < g.length; j++)
                    assertTrue(Math.abs(g[j] - c[j]) <= 2e-2 * (1 + Math.abs(c[j])),
                            score + " " + names[i] + "[" + j + "]: gpu " + g[j] + ", cpu " + c[j]);
            }
        }
        Cuda.synchronize(GPU);
    }

    /** The broadcast biases whose gradient the device sums through the workspace: shape, dtype, score. */
    enum BroadcastBias {
        /** [B, 1, 1, Nk], fp32, the last keys of batch 1 padded (−∞): dbias sums dS over Hq and every query row. */
        KEY_PADDING(new long[] {DB, 1, 1, DNK}, DType.FP32, AttentionSpec.softmax().causal()),
        /** [1, Hq, Nq, Nk], bf16 as q: dbias sums dS over the batch. */
        PER_HEAD(new long[] {1, H, DNQ, DNK}, DType.BF16, AttentionSpec.of(Score.SIGMOID));

        final long[] shape;
        final DType dtype;
        final AttentionSpec spec;

        BroadcastBias(long[] shape, DType dtype, AttentionSpec spec) {
            this.shape = shape;
            this.dtype = dtype;
            this.spec = spec;
        }

        /** The workspace the header promises: B·Hq·G·Nk·4, G = Nq when dbias keeps Nq, else ⌈Nq/16⌉. */
        long workspaceBytes() {
            long groups = shape[2] == DNQ ? DNQ : (DNQ + 15) / 16;
            return (long) DB * H * groups * DNK * 4;
        }
    }

    // the dbias problem: Nq = 40 (three groups of 16 query rows, the last one partial), Nk = 56, two batches
    static final int DB = 2, DNQ = 40, DNK = 56;

    /**
     * A bias broadcast over B, Hq or Nq on the device, with its gradient: the size query gives the header's
     * bytes (0 for a full-shaped dbias and for CPU tensors); without a workspace — or with one too small,
     * deterministic spec or not — the backward is refused by name and writes nothing; with
     * {@link Cuda#allocateBackwardWorkspace(Arena, AttentionSpec, Tensor, Tensor)}'s it runs, and dq, dk, dv
     * and dbias agree with the CPU backward of the same inputs (the device forward's out and lse too).
     */
    @ParameterizedTest
    @EnumSource(BroadcastBias.class)
    void broadcastDbiasOnTheDeviceAgreesWithTheCpu(BroadcastBias c) {
        assumeTrue(gpu(), "no CUDA device: the device dbias is skipped");
        Random r = new Random(23);
        AttentionSpec spec = c.spec;
        boolean softmax = spec.score() == Score.SOFTMAX;
        long[] qShape = {DB, DNQ, H, D}, kvShape = {DB, DNK, H, D}, lseShape = {DB, H, DNQ};
        try (Arena arena = Arena.ofConfined(); CudaStream stream = CudaStream.create(GPU)) {
            long[][] inShapes = {qShape, kvShape, kvShape, qShape}; // q, k, v, dout
            Tensor[] host = new Tensor[4], dev = new Tensor[4];
            for (int i = 0; i < 4; i++) {
                host[i] = Tensor.allocate(arena, DType.BF16, inShapes[i]);
                host[i].copyFrom(TestSupport.toFloats(TestSupport.randn(r, DType.BF16, (int) host[i].elementCount())));
                dev[i] = Cuda.allocate(arena, DType.BF16, GPU, inShapes[i]);
                Cuda.copy(host[i], dev[i], stream);
            }
            Tensor hostBias = Tensor.allocate(arena, c.dtype, c.shape);
            float[] bias = TestSupport.toFloats(TestSupport.randn(r, c.dtype, (int) hostBias.elementCount()));
            if (c == BroadcastBias.KEY_PADDING)
                for (int j = DNK - 6; j < DNK; j++) bias[DNK + j] = Float.NEGATIVE_INFINITY; // batch 1's padding
            hostBias.copyFrom(bias);
            Tensor devBias = Cuda.allocate(arena, c.dtype, GPU, c.shape);
            Cuda.copy(hostBias, devBias, stream);
            Tensor out = Cuda.allocate(arena, DType.BF16, GPU, qShape);
            Tensor lse = softmax ? Cuda.allocate(arena, DType.FP32, GPU, lseShape) : null;
            AttentionExtras onDevice = AttentionExtras.none().bias(devBias).stream(stream);
            FlashSig.forward(spec, onDevice, dev[0], dev[1], dev[2], out, lse);

            // outputs filled with 7, so that a refused call is seen to write nothing
            long[][] outShapes = {qShape, kvShape, kvShape, c.shape}; // dq, dk, dv, dbias
            DType[] outTypes = {DType.BF16, DType.BF16, DType.BF16, c.dtype};
            Tensor[] grads = new Tensor[4], back = new Tensor[4];
            for (int i = 0; i < 4; i++) {
                back[i] = Tensor.allocate(arena, outTypes[i], outShapes[i]);
                back[i].copyFrom(filled(back[i].elementCount(), 7f));
                grads[i] = Cuda.allocate(arena, outTypes[i], GPU, outShapes[i]);
                Cuda.copy(back[i], grads[i], stream);
            }

            long need = c.workspaceBytes();
            assertEquals(need, FlashSig.backwardWorkspaceBytes(spec, dev[0], grads[3]), c + ": the size query");
            assertEquals(need, FlashSig.backwardWorkspaceBytes(spec.deterministic(true), dev[0], grads[3]),
                    c + ": the size query, deterministic");
            assertEquals(0, FlashSig.backwardWorkspaceBytes(spec, dev[0],
                    Cuda.allocate(arena, c.dtype, GPU, DB, H, DNQ, DNK)), c + ": a full-shaped dbias needs none");
            assertEquals(0, FlashSig.backwardWorkspaceBytes(spec, host[0], hostBias), c + ": the CPU needs none");

            BackwardWorkspace short16 = Cuda.allocateBackwardWorkspace(arena, GPU, need - 16);
            for (AttentionSpec s : new AttentionSpec[] {spec, spec.deterministic(true)}) {
                expect(Status.BUFFER_TOO_SMALL, () -> FlashSig.backward(s, onDevice, dev[0], dev[1], dev[2],
                        softmax ? out : null, dev[3], lse, grads[0], grads[1], grads[2], grads[3]),
                        "dbias of shape " + java.util.Arrays.toString(c.shape),
                        "params.workspace of " + need + " bytes", "fsig_attention_backward_workspace_size_ex");
                expect(Status.BUFFER_TOO_SMALL, () -> FlashSig.backward(s, onDevice.workspace(short16), dev[0], dev[1],
                        dev[2], softmax ? out : null, dev[3], lse, grads[0], grads[1], grads[2], grads[3]),
                        "params.workspace_bytes is " + (need - 16) + " but this call needs " + need,
                        "fsig_attention_backward_workspace_size_ex");
            }
            for (int i = 0; i < 4; i++) Cuda.copy(grads[i], back[i], stream);
            stream.synchronize();
            for (int i = 0; i < 4; i++)
                for (float x : back[i].toFloatArray()) assertEquals(7f, x, c + ": a refused call wrote output " + i);

            BackwardWorkspace ws = Cuda.allocateBackwardWorkspace(arena, spec, dev[0], grads[3]);
            assertEquals(need, ws.byteSize());
            assertEquals(GPU, ws.device());
            FlashSig.backward(spec, onDevice.workspace(ws), dev[0], dev[1], dev[2], softmax ? out : null, dev[3], lse,
                    grads[0], grads[1], grads[2], grads[3]);
            for (int i = 0; i < 4; i++) Cuda.copy(grads[i], back[i], stream);
            Tensor hostOut = Tensor.allocate(arena, DType.BF16, qShape);
            Tensor hostLse = softmax ? Tensor.allocate(arena, DType.FP32, lseShape) : null;
            Cuda.copy(out, hostOut, stream);
            if (softmax) Cuda.copy(lse, hostLse, stream);
            stream.synchronize();

            // the CPU backward of the same inputs, the device forward's out and lse among them
            Tensor[] cpu = new Tensor[4];
            for (int i = 0; i < 4; i++) cpu[i] = Tensor.allocate(arena, outTypes[i], outShapes[i]);
            FlashSig.backward(spec, AttentionExtras.none().bias(hostBias), host[0], host[1], host[2],
                    softmax ? hostOut : null, host[3], hostLse, cpu[0], cpu[1], cpu[2], cpu[3]);
            String[] names = {"dq", "dk", "dv", "dbias"};
            for (int i = 0; i < 4; i++)
                CudaTest.assertClose(back[i].toFloatArray(), cpu[i].toFloatArray(), c + " " + spec + " " + names[i]);
            if (c == BroadcastBias.KEY_PADDING) {
                float[] g = back[3].toFloatArray();
                for (int j = DNK - 6; j < DNK; j++) assertEquals(0f, g[DNK + j], "dbias of a padded key");
            }
        }
        Cuda.synchronize(GPU);
    }
}
