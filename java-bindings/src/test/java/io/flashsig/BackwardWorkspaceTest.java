package io.flashsig;

import io.flashsig.FlashSigException.Status;
import io.flashsig.TestSupport.Memory;
import io.flashsig.ffi.fsig_attention_params;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicBoolean;

import static io.flashsig.BadInputTest.expect;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The fast CUDA backward's workspace through the Java API, as far as a machine without a GPU can see it:
 * the size query (with and without a bias gradient), empty workspaces, the CPU ignoring a workspace
 * (results bit for bit those of a call without one, through every downcall path), the per-call params
 * that carry it, and the refusals. The device half is in {@link CudaTest}, a broadcast dbias's in
 * {@link CudaMaskTest}.
 */
class BackwardWorkspaceTest {
    static final Device GPU = Device.cuda(0);
    static final int B = 2, NQ = 33, NK = 47, HQ = 4, HK = 2, D = 16;

    /** A CUDA tensor over a foreign address: enough for the size query and the Java checks, never touched. */
    static Tensor foreignDeviceTensor(DType dtype, long... shape) {
        return Tensor.wrap(MemorySegment.ofAddress(1 << 20).reinterpret(Long.MAX_VALUE >> 8), dtype, GPU, shape,
                Tensor.contiguousStrides(shape));
    }

    /**
     * A workspace of host memory with {@code bytes} > 0: the public API gives CPU devices an empty one, but
     * this one takes the path of a CUDA workspace in Java (its own params, with workspace set), which the
     * CPU backend then ignores.
     */
    static BackwardWorkspace hostWorkspace(Arena arena, long bytes) {
        MemorySegment params = BackwardWorkspace.newParams(arena);
        return BackwardWorkspace.of(Device.CPU, arena.allocate(bytes, 16), params);
    }

    @Test
    void sizeQuery() {
        long[] shape = {2, 100, 4, 64};
        long fp32Dq = 2L * 4 * 100 * 64 * 4; // B * Hq * Nq * d * 4
        Tensor dev = foreignDeviceTensor(DType.BF16, shape);
        try (Arena arena = Arena.ofConfined()) {
            Tensor cpu = Tensor.allocate(arena, DType.FP32, shape);
            for (Score s : new Score[] {Score.SOFTMAX, Score.SIGMOID, Score.RELU, Score.IDENTITY}) {
                AttentionSpec spec = AttentionSpec.of(s);
                assertEquals(fp32Dq, FlashSig.backwardWorkspaceBytes(spec, dev), spec.toString());
                assertEquals(fp32Dq, FlashSig.backwardWorkspaceBytes(spec.causal().window(16, 0), dev), spec.toString());
                assertEquals(0, FlashSig.backwardWorkspaceBytes(spec, cpu), "the CPU needs none: " + spec);
                assertEquals(0, FlashSig.backwardWorkspaceBytes(spec.deterministic(true), dev),
                        "a deterministic spec needs none: " + spec);
            }
            // the dtype and GQA do not change it: an fp32 dQ of q's shape
            assertEquals(fp32Dq, FlashSig.backwardWorkspaceBytes(AttentionSpec.softmax(),
                    foreignDeviceTensor(DType.FP16, shape)));
            // the linear scores: the partial states of up to 526 blocks, 33K + 32 floats each (K = 2d, d)
            assertEquals(526L * (33 * 128 + 32) * 4, FlashSig.backwardWorkspaceBytes(AttentionSpec.of(Score.COSFORMER), dev));
            assertEquals(526L * (33 * 64 + 32) * 4,
                    FlashSig.backwardWorkspaceBytes(AttentionSpec.of(Score.LINEAR_ELU).causal().deterministic(true), dev));
            assertEquals(0, FlashSig.backwardWorkspaceBytes(AttentionSpec.of(Score.COSFORMER), cpu));
            // q's data are not read: its arena may be closed
            Tensor closed;
            try (Arena a = Arena.ofConfined()) {
                closed = Tensor.allocate(a, DType.FP32, shape);
            }
            assertEquals(0, FlashSig.backwardWorkspaceBytes(AttentionSpec.softmax(), closed));
        }
        expect(Status.NULL_ARGUMENT, () -> FlashSig.backwardWorkspaceBytes(null, dev), "spec is null");
        expect(Status.NULL_ARGUMENT, () -> FlashSig.backwardWorkspaceBytes(AttentionSpec.softmax(), null), "q is null");
        expect(Status.INVALID_SHAPE, () -> FlashSig.backwardWorkspaceBytes(AttentionSpec.softmax(),
                foreignDeviceTensor(DType.BF16, 100, 4, 64)), "q.ndim is 3");
        expect(Status.INVALID_PARAMS, () -> FlashSig.backwardWorkspaceBytes(AttentionSpec.softmax().window(-5, 0), dev),
                "params.window_left");
    }

    /**
     * The size query with a bias gradient: on CUDA a dbias broadcast over B, Hq or Nq needs B·Hq·G·Nk·4
     * bytes of partial sums (G = Nq when dbias keeps Nq, ⌈Nq/16⌉ when it broadcasts it), deterministic spec
     * or not; a full-shaped dbias and CPU tensors need none; dbias null is the query without it.
     */
    @Test
    void sizeQueryWithDbias() {
        long b = 2, nq = 100, hq = 4, nk = 47, groups = (nq + 15) / 16; // 7 groups of 16 query rows
        long[] shape = {b, nq, hq, 64};
        Tensor dev = foreignDeviceTensor(DType.BF16, shape);
        long[][] dbiasShapes = {{b, 1, 1, nk}, {1, 1, 1, nk}, {b, hq, 1, nk}, {1, hq, nq, nk}, {b, 1, nq, nk},
                {1, 1, nq, nk}, {b, hq, nq, nk}};
        long[] want = {b * hq * groups * nk * 4, b * hq * groups * nk * 4, b * hq * groups * nk * 4,
                b * hq * nq * nk * 4, b * hq * nq * nk * 4, b * hq * nq * nk * 4, 0};
        try (Arena arena = Arena.ofConfined()) {
            Tensor cpu = Tensor.allocate(arena, DType.FP32, shape);
            for (int i = 0; i < dbiasShapes.length; i++) {
                String what = "dbias " + java.util.Arrays.toString(dbiasShapes[i]);
                Tensor dbias = foreignDeviceTensor(DType.FP32, dbiasShapes[i]);
                for (AttentionSpec spec : new AttentionSpec[] {AttentionSpec.softmax(),
                        AttentionSpec.softmax().deterministic(true), AttentionSpec.of(Score.SIGMOID).causal()}) {
                    assertEquals(want[i], FlashSig.backwardWorkspaceBytes(spec, dev, dbias), what + ", " + spec);
                    assertEquals(0, FlashSig.backwardWorkspaceBytes(spec, cpu, Tensor.allocate(arena, DType.FP32,
                            dbiasShapes[i])), "the CPU needs none: " + what + ", " + spec);
                }
                // the dtype of dbias does not change it
                assertEquals(want[i], FlashSig.backwardWorkspaceBytes(AttentionSpec.softmax(), dev,
                        foreignDeviceTensor(DType.BF16, dbiasShapes[i])), what + " bf16");
            }
            // dbias null: the query without it (the fast backward's fp32 dQ, or 0 when deterministic)
            assertEquals(b * hq * nq * 64 * 4, FlashSig.backwardWorkspaceBytes(AttentionSpec.softmax(), dev, null));
            assertEquals(0, FlashSig.backwardWorkspaceBytes(AttentionSpec.softmax().deterministic(true), dev, null));
            // dbias's data are not read: its arena may be closed
            Tensor closed;
            try (Arena a = Arena.ofConfined()) {
                closed = Tensor.allocate(a, DType.FP32, b, 1, 1, nk);
            }
            assertEquals(0, FlashSig.backwardWorkspaceBytes(AttentionSpec.softmax(), cpu, closed));
        }
        Tensor keyPadding = foreignDeviceTensor(DType.FP32, b, 1, 1, nk);
        expect(Status.NULL_ARGUMENT, () -> FlashSig.backwardWorkspaceBytes(null, dev, keyPadding), "spec is null");
        expect(Status.NULL_ARGUMENT, () -> FlashSig.backwardWorkspaceBytes(AttentionSpec.softmax(), null, keyPadding),
                "q is null");
        expect(Status.INVALID_SHAPE, () -> FlashSig.backwardWorkspaceBytes(AttentionSpec.softmax(), dev,
                foreignDeviceTensor(DType.FP32, b, 1, nk)), "dbias.ndim is 3");
        expect(Status.INVALID_SHAPE, () -> FlashSig.backwardWorkspaceBytes(AttentionSpec.softmax(), dev,
                foreignDeviceTensor(DType.FP32, b, 3, 1, nk)), "dbias.shape[1] is 3 but must be 1 or Hq = 4");
        expect(Status.INVALID_SHAPE, () -> FlashSig.backwardWorkspaceBytes(AttentionSpec.softmax(), dev,
                foreignDeviceTensor(DType.FP32, b, hq, nq + 1, nk)), "dbias.shape[2] is 101 but must be 1 or Nq = 100");
        try (Arena arena = Arena.ofConfined()) {
            // the factory: the query's bytes on q's device; nothing allocated where it is 0
            BackwardWorkspace full = Cuda.allocateBackwardWorkspace(arena, AttentionSpec.softmax(), dev,
                    foreignDeviceTensor(DType.FP32, b, hq, nq, nk));
            assertEquals(0, full.byteSize(), "a full-shaped dbias needs no workspace");
            assertEquals(GPU, full.device());
            Tensor cpu = Tensor.allocate(arena, DType.FP32, shape);
            BackwardWorkspace onCpu = Cuda.allocateBackwardWorkspace(arena, AttentionSpec.softmax(), cpu,
                    Tensor.allocate(arena, DType.FP32, b, 1, 1, nk));
            assertEquals(0, onCpu.byteSize());
            assertEquals(Device.CPU, onCpu.device());
            expect(Status.NULL_ARGUMENT, () -> Cuda.allocateBackwardWorkspace(arena, null, dev, keyPadding),
                    "spec is null");
            expect(Status.NULL_ARGUMENT, () -> Cuda.allocateBackwardWorkspace(arena, AttentionSpec.softmax(), null,
                    keyPadding), "q is null");
            expect(Status.INVALID_SHAPE, () -> Cuda.allocateBackwardWorkspace(arena, AttentionSpec.softmax(), dev,
                    foreignDeviceTensor(DType.FP32, b, 3, 1, nk)), "dbias.shape[1] is 3");
            assertThrows(NullPointerException.class, () -> Cuda.allocateBackwardWorkspace(null,
                    AttentionSpec.softmax(), dev, keyPadding));
        }
    }

    @Test
    void emptyWorkspaces() {
        try (Arena arena = Arena.ofConfined()) {
            Tensor cpuQ = Tensor.allocate(arena, DType.FP32, B, NQ, HQ, D);
            BackwardWorkspace a = Cuda.allocateBackwardWorkspace(arena, AttentionSpec.softmax(), cpuQ);
            assertEquals(0, a.byteSize());
            assertEquals(Device.CPU, a.device());
            BackwardWorkspace b = Cuda.allocateBackwardWorkspace(arena, Device.CPU, 1 << 20);
            assertEquals(0, b.byteSize(), "the CPU needs no workspace: its bytes are not allocated");
            // on a CUDA device, 0 bytes allocate nothing (so no device is needed)
            BackwardWorkspace c = Cuda.allocateBackwardWorkspace(arena, AttentionSpec.softmax().deterministic(true),
                    foreignDeviceTensor(DType.BF16, 1, 64, 2, 64));
            assertEquals(0, c.byteSize());
            assertEquals(GPU, c.device());
            assertEquals(0, Cuda.allocateBackwardWorkspace(arena, GPU, 0).byteSize());
            assertTrue(a.isAlive());
            assertEquals("BackwardWorkspace[cuda:0, 0 bytes]", c.toString());
        }
    }

    /** The tensors of one backward, and its results as arrays. */
    static final class Problem {
        final Tensor q, k, v, out, dout, lse, dq, dk, dv;
        final AttentionSpec spec;

        Problem(Memory m, Arena arena, AttentionSpec spec, AttentionExtras x, long seed) {
            this.spec = spec;
            Random r = new Random(seed);
            q = TestSupport.tensor(m, arena, DType.FP32, TestSupport.randn(r, DType.FP32, B * NQ * HQ * D), B, NQ, HQ, D);
            k = TestSupport.tensor(m, arena, DType.FP32, TestSupport.randn(r, DType.FP32, B * NK * HK * D), B, NK, HK, D);
            v = TestSupport.tensor(m, arena, DType.FP32, TestSupport.randn(r, DType.FP32, B * NK * HK * D), B, NK, HK, D);
            dout = TestSupport.tensor(m, arena, DType.FP32, TestSupport.randn(r, DType.FP32, B * NQ * HQ * D), B, NQ, HQ, D);
            out = TestSupport.tensor(m, arena, DType.FP32, null, B, NQ, HQ, D);
            boolean softmax = spec.score() == Score.SOFTMAX;
            lse = softmax ? TestSupport.tensor(m, arena, DType.FP32, null, B, HQ, NQ) : null;
            dq = TestSupport.tensor(m, arena, DType.FP32, null, B, NQ, HQ, D);
            dk = TestSupport.tensor(m, arena, DType.FP32, null, B, NK, HK, D);
            dv = TestSupport.tensor(m, arena, DType.FP32, null, B, NK, HK, D);
            FlashSig.forward(spec, x, q, k, v, out, lse);
        }

        float[][] backward(AttentionExtras x) {
            FlashSig.backward(spec, x, q, k, v, out, dout, lse, dq, dk, dv, null);
            return new float[][] {dq.toFloatArray(), dk.toFloatArray(), dv.toFloatArray()};
        }
    }

    static List<AttentionSpec> specs() {
        return List.of(AttentionSpec.softmax().causal().window(20, 0),
                AttentionSpec.of(Score.SIGMOID).scale(0.3f).lognScaling(8),
                AttentionSpec.of(Score.RELU).alpha(0.5f).strided(3),
                AttentionSpec.of(Score.GELU).blockSparse(8, 16),
                AttentionSpec.of(Score.COSFORMER).causal());
    }

    /** Extension tensors for some specs, so that the _ex backward is taken too; none for the linear score. */
    static AttentionExtras extrasFor(AttentionSpec spec, Arena arena) {
        if (spec.score() == Score.COSFORMER) return AttentionExtras.none();
        if (spec.score() == Score.GELU) {
            Mask layout = Mask.allocate(arena, 1, (NQ + 7) / 8, (NK + 15) / 16);
            for (long i = 0; i < (NQ + 7) / 8; i++)
                for (long j = 0; j < (NK + 15) / 16; j++) layout.set((i + j) % 2 == 0, 0, i, j);
            return AttentionExtras.none().blockLayout(layout);
        }
        return spec.score() == Score.SIGMOID ? AttentionExtras.none().alibi(FlashSig.alibiSlopes(HQ))
                : AttentionExtras.none();
    }

    /**
     * On the CPU a workspace changes nothing: an empty one (what the API gives the CPU) and one with memory
     * (the CUDA path of the Java layer: its own params with the workspace set, which the CPU backend
     * ignores) give the bits of a call without one — for every kind of memory and downcall, plain and _ex,
     * so the params a workspace carries are the spec's.
     */
    @ParameterizedTest
    @EnumSource(Memory.class)
    void theCpuBackwardIgnoresAWorkspace(Memory m) {
        TestSupport.withMemory(m, () -> {
            try (Arena arena = Arena.ofConfined()) {
                BackwardWorkspace host = hostWorkspace(arena, 4096);
                int seed = 0;
                for (AttentionSpec spec : specs()) {
                    AttentionExtras x = extrasFor(spec, arena);
                    Problem p = new Problem(m, arena, spec, x, seed++);
                    BackwardWorkspace empty = Cuda.allocateBackwardWorkspace(arena, spec, p.q);
                    assertEquals(0, empty.byteSize());
                    float[][] without = p.backward(x);
                    float[] out = p.out.toFloatArray();
                    for (BackwardWorkspace ws : new BackwardWorkspace[] {empty, host}) {
                        float[][] with = p.backward(x.workspace(ws));
                        for (int i = 0; i < 3; i++)
                            assertArrayEquals(without[i], with[i], spec + " with " + ws + ": " + "dq dk dv".split(" ")[i]);
                        // the forward ignores it
                        FlashSig.forward(spec, x.workspace(ws), p.q, p.k, p.v, p.out, p.lse);
                        assertArrayEquals(out, p.out.toFloatArray(), spec + " forward with " + ws);
                    }
                }
            }
        });
    }

    /** The params a workspace passes: the spec's, byte for byte, with workspace and workspace_bytes set. */
    @Test
    void theWorkspacesParamsAreTheSpecsWithTheWorkspace() {
        assertEquals(112, fsig_attention_params.sizeof(), "fsig_attention_params of 0.3");
        try (Arena arena = Arena.ofConfined()) {
            BackwardWorkspace ws = hostWorkspace(arena, 4096);
            for (AttentionSpec spec : specs()) {
                MemorySegment specParams = spec.nativeParams();
                MemorySegment p = ws.params(specParams);
                long before = fsig_attention_params.workspace$offset();
                assertEquals(-1, specParams.asSlice(0, before).mismatch(p.asSlice(0, before)), spec.toString());
                assertEquals(MemorySegment.NULL, fsig_attention_params.workspace(specParams), "the spec's own has none");
                assertEquals(0, fsig_attention_params.workspace_bytes(specParams));
                assertEquals(4096, fsig_attention_params.workspace_bytes(p));
                assertTrue(fsig_attention_params.workspace(p).address() != 0);
                assertEquals(0, fsig_attention_params.workspace(p).address() % 16);
                assertEquals(fsig_attention_params.sizeof(), fsig_attention_params.struct_size(p));
            }
        }
    }

    /** Threads sharing one workspace (its params are filled per call) get the results of serial calls. */
    @Test
    void threadsMayShareAWorkspace() throws Exception {
        try (Arena shared = Arena.ofShared()) {
            BackwardWorkspace ws = hostWorkspace(shared, 4096);
            List<AttentionSpec> specs = specs();
            List<Problem> problems = new ArrayList<>();
            List<float[][]> serial = new ArrayList<>();
            for (int i = 0; i < specs.size(); i++) {
                problems.add(new Problem(Memory.OFF_HEAP, shared, specs.get(i), extrasFor(specs.get(i), shared), 10 + i));
                serial.add(problems.get(i).backward(extrasFor(specs.get(i), shared)));
            }
            ExecutorService pool = Executors.newFixedThreadPool(specs.size());
            try {
                List<Future<?>> futures = new ArrayList<>();
                for (int t = 0; t < specs.size(); t++) {
                    int i = t;
                    AttentionExtras x = extrasFor(specs.get(i), shared).workspace(ws);
                    futures.add(pool.submit(() -> {
                        for (int rep = 0; rep < 20; rep++) {
                            float[][] got = problems.get(i).backward(x);
                            for (int j = 0; j < 3; j++)
                                assertArrayEquals(serial.get(i)[j], got[j], specs.get(i) + " on a shared workspace");
                        }
                        return null;
                    }));
                }
                for (Future<?> f : futures) f.get();
            } finally {
                pool.shutdown();
            }
        }
    }

    @Test
    void refusals() throws Exception {
        try (Arena arena = Arena.ofConfined()) {
            BadInputTest.Call c = new BadInputTest.Call(Memory.OFF_HEAP, arena, DType.FP32);
            AttentionSpec sigmoid = AttentionSpec.of(Score.SIGMOID);
            // a workspace whose arena is closed: refused by the backward, empty or not
            BackwardWorkspace closedEmpty, closedHost;
            try (Arena a = Arena.ofConfined()) {
                closedEmpty = Cuda.allocateBackwardWorkspace(a, sigmoid, c.q);
                closedHost = hostWorkspace(a, 4096);
            }
            assertFalse(closedEmpty.isAlive());
            assertEquals("BackwardWorkspace[cpu, 0 bytes, closed]", closedEmpty.toString());
            for (BackwardWorkspace ws : new BackwardWorkspace[] {closedEmpty, closedHost})
                expect(Status.SEGMENT_NOT_ACCESSIBLE, () -> FlashSig.backward(sigmoid, AttentionExtras.none().workspace(ws),
                        c.q, c.k, c.v, null, c.dout, null, c.dq, c.dk, c.dv, null), "workspace: its arena is closed");
            // another thread's confined workspace
            BackwardWorkspace mine = hostWorkspace(arena, 4096);
            try (Arena shared = Arena.ofShared()) {
                BadInputTest.Call s = new BadInputTest.Call(Memory.OFF_HEAP, shared, DType.FP32);
                ExecutorService other = Executors.newSingleThreadExecutor();
                try {
                    other.submit(() -> expect(Status.SEGMENT_NOT_ACCESSIBLE, () -> FlashSig.backward(sigmoid,
                            AttentionExtras.none().workspace(mine), s.q, s.k, s.v, null, s.dout, null, s.dq, s.dk, s.dv,
                            null), "workspace: its segment is confined to another thread")).get();
                } finally {
                    other.shutdown();
                }
                s.assertOutputsUntouched();
            }
            // a workspace of another device
            BackwardWorkspace onGpu = Cuda.allocateBackwardWorkspace(arena, GPU, 0);
            expect(Status.INVALID_DEVICE, () -> FlashSig.backward(sigmoid, AttentionExtras.none().workspace(onGpu), c.q,
                    c.k, c.v, null, c.dout, null, c.dq, c.dk, c.dv, null), "workspace is on cuda:0 but q is on cpu");
            Tensor devQ = foreignDeviceTensor(DType.BF16, BadInputTest.SHAPE);
            BackwardWorkspace onCpu = Cuda.allocateBackwardWorkspace(arena, Device.CPU, 0);
            expect(Status.INVALID_DEVICE, () -> FlashSig.backward(sigmoid, AttentionExtras.none().workspace(onCpu), devQ,
                    devQ, devQ, null, devQ, null, devQ, devQ, devQ, null), "workspace is on cpu but q is on cuda:0");
            c.assertOutputsUntouched();
            // the factories
            expect(Status.INVALID_PARAMS, () -> Cuda.allocateBackwardWorkspace(arena, GPU, -1), "bytes is -1");
            expect(Status.NULL_ARGUMENT, () -> Cuda.allocateBackwardWorkspace(arena, (Device) null, 0), "device is null");
            expect(Status.NULL_ARGUMENT, () -> Cuda.allocateBackwardWorkspace(arena, null, c.q), "spec is null");
            expect(Status.NULL_ARGUMENT, () -> Cuda.allocateBackwardWorkspace(arena, sigmoid, null), "q is null");
            assertThrows(NullPointerException.class, () -> Cuda.allocateBackwardWorkspace(null, sigmoid, c.q));
        }
    }

    /**
     * A call holds its workspace's arena open: a shared arena closed by another thread during a call fails
     * to close (IllegalStateException) rather than freeing the workspace under the call, and a call after
     * the close is refused. The workspace is the arena's only memory, so only the workspace can hold it
     * (the Java layer's liveness check holds nothing: without the hold every close would succeed at once).
     */
    @Test
    void aCallHoldsItsWorkspacesArenaOpen() throws Exception {
        int n = 1024, h = 4, d = 64; // a CPU backward of 2.7 GFLOP: 100 ms or more on 2 cores
        try (Arena arena = Arena.ofShared()) {
            Random r = new Random(5);
            Tensor q = Tensor.allocate(arena, DType.FP32, 1, n, h, d), k = Tensor.allocate(arena, DType.FP32, 1, n, h, d);
            Tensor v = Tensor.allocate(arena, DType.FP32, 1, n, h, d), dout = Tensor.allocate(arena, DType.FP32, 1, n, h, d);
            for (Tensor t : new Tensor[] {q, k, v, dout}) t.copyFrom(TestSupport.toFloats(TestSupport.randn(r, DType.FP32, n * h * d)));
            Tensor dq = Tensor.allocate(arena, DType.FP32, 1, n, h, d), dk = Tensor.allocate(arena, DType.FP32, 1, n, h, d);
            Tensor dv = Tensor.allocate(arena, DType.FP32, 1, n, h, d);
            AttentionSpec spec = AttentionSpec.of(Score.SIGMOID);
            int refusedCloses = 0;
            for (int round = 0; round < 3; round++) {
                Arena wsArena = Arena.ofShared();
                AttentionExtras x = AttentionExtras.none().workspace(hostWorkspace(wsArena, 4096));
                AtomicBoolean calling = new AtomicBoolean();
                ExecutorService caller = Executors.newSingleThreadExecutor();
                try {
                    Future<?> call = caller.submit(() -> {
                        calling.set(true);
                        FlashSig.backward(spec, x, q, k, v, null, dout, null, dq, dk, dv, null);
                        return null;
                    });
                    while (!calling.get()) Thread.onSpinWait();
                    Thread.sleep(2);
                    while (true) {
                        try {
                            wsArena.close();
                            break;
                        } catch (IllegalStateException e) {
                            refusedCloses++; // the call holds it: try again
                            Thread.sleep(1);
                        }
                    }
                    try {
                        call.get(); // ran with the arena held, or ...
                    } catch (java.util.concurrent.ExecutionException e) {
                        // ... was refused: the close came first (between the liveness check and the downcall:
                        // the downcall's IllegalStateException)
                        assertTrue(e.getCause() instanceof FlashSigException || e.getCause() instanceof IllegalStateException,
                                e.toString());
                        assertTrue(e.getCause().getMessage().contains("closed"), e.getCause().getMessage());
                    }
                    expect(Status.SEGMENT_NOT_ACCESSIBLE, () -> FlashSig.backward(spec, x, q, k, v, null, dout, null,
                            dq, dk, dv, null), "workspace: its arena is closed");
                } finally {
                    caller.shutdown();
                }
            }
            assertTrue(refusedCloses > 0, "no close overlapped a call in 3 rounds: the calls do not hold the arena");
        }
    }

    /** The workspace travels in AttentionExtras: value semantics as for its other members. */
    @Test
    void extrasCarryTheWorkspace() {
        try (Arena arena = Arena.ofConfined()) {
            BackwardWorkspace ws = hostWorkspace(arena, 64);
            AttentionExtras x = AttentionExtras.none().workspace(ws);
            assertEquals(ws, x.workspace());
            assertEquals(x, AttentionExtras.none().workspace(ws));
            assertEquals(x.hashCode(), AttentionExtras.none().workspace(ws).hashCode());
            assertEquals(AttentionExtras.none(), x.workspace(null));
            assertTrue(x.alibi(new float[] {0.5f}).workspace() == ws, "other members keep it");
            assertTrue(x.toString().contains("workspace=BackwardWorkspace[cpu, 64 bytes]"), x.toString());
        }
    }
}
