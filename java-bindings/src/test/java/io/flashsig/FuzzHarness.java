package io.flashsig;

import com.code_intelligence.jazzer.api.FuzzedDataProvider;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.regex.Pattern;

/**
 * One random call of the Java API (and through it the C ABI), and the property every call must keep:
 * <ul>
 * <li>it returns, or throws {@link FlashSigException} (status not INTERNAL, message naming an argument)
 * or IllegalArgumentException / NullPointerException / IllegalStateException with a message; any
 * other throwable is a finding;</li>
 * <li>after a throw, no byte of any buffer changed (inputs, outputs, and the guard bytes around them);</li>
 * <li>after a success, only the bytes of output elements changed (no guard byte, no gap between
 * strided elements, no input byte), no output overlaps another tensor, and outputs are finite where the
 * math is (moderate parameters), softmax rows without an allowed key give out = 0 and LSE = +inf.</li>
 * </ul>
 * Inputs come from a {@link Source}: Jazzer's {@link FuzzedDataProvider} (ApiFuzzTest#fuzzCall) or a
 * seeded {@link Random} (ApiFuzzTest#seededRandomCalls). Every buffer is small (≤ ~1 MB), whatever
 * the shape claims: huge and overflowing shapes travel in descriptors over small segments.
 */
final class FuzzHarness {
    private FuzzHarness() {}

    /** Where the random decisions come from. */
    interface Source {
        /** Uniform-ish in [min, max]. */
        int intIn(int min, int max);

        long anyLong();

        /** Any float, NaN and infinities included. */
        float anyFloat();

        boolean bool();

        default <T> T pick(T[] a) {
            return a[intIn(0, a.length - 1)];
        }
    }

    static Source of(FuzzedDataProvider d) {
        return new Source() {
            public int intIn(int min, int max) { return d.consumeInt(min, max); }
            public long anyLong() { return d.consumeLong(); }
            public float anyFloat() { return d.consumeFloat(); }
            public boolean bool() { return d.consumeBoolean(); }
        };
    }

    static Source of(Random r) {
        return new Source() {
            public int intIn(int min, int max) { return min + r.nextInt(max - min + 1); }
            public long anyLong() { return r.nextLong(); }
            public float anyFloat() {
                return switch (r.nextInt(8)) {
                    case 0 -> SPECIAL_FLOATS[r.nextInt(SPECIAL_FLOATS.length)];
                    case 1 -> Float.intBitsToFloat(r.nextInt());
                    default -> (float) (r.nextGaussian() * 3);
                };
            }
            public boolean bool() { return r.nextBoolean(); }
        };
    }

    static final float[] SPECIAL_FLOATS = {Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, 0f, -0f,
            Float.MIN_VALUE, -Float.MIN_VALUE, Float.MAX_VALUE, -Float.MAX_VALUE, 1e-30f, 1e30f, -1e30f, 65504f, 1f, -1f};
    static final long[] SPECIAL_DIMS = {0, -1, -7, 1L << 31, (1L << 31) - 1, 1L << 32, 1L << 40, 1L << 62,
            Long.MAX_VALUE, Long.MIN_VALUE, Long.MAX_VALUE / 2 + 1, 3037000500L /* √2^63 */};
    static final long[] SPECIAL_STRIDES = {0, -1, -8, 1L << 31, 1L << 40, Long.MAX_VALUE, Long.MIN_VALUE,
            Long.MAX_VALUE / 3, 3037000500L};
    static final long[] SPECIAL_WINDOWS = {-1, -1, 0, 0, 1, 3, 17, -2, -1000, Long.MIN_VALUE, Long.MAX_VALUE,
            Integer.MAX_VALUE, 1L << 40};

    private static final int GUARD = 64;                      // guard bytes on each side of a buffer
    private static final long MAX_BUFFER = 1 << 20;          // bytes; larger extents get small segments
    private static final byte POISON = (byte) 0xCD;          // fp32 −4.3e8, fp16 −23.2, bf16 −4.3e8
    private static final Pattern NAMES_ARGUMENT = Pattern.compile(
            "\\b(q|k|v|out|lse|dout|dq|dk|dv|spec|params|score|data|segment|shape|strides|dtype|device)\\b");

    /** Memory a tensor can live in. */
    enum Kind { OFF_HEAP, HEAP, FOREIGN, MISALIGNED, READ_ONLY, NULL, CLOSED, OTHER_THREAD, CUDA, ALIAS }

    /** A segment confined to a thread that has ended, and one whose arena is closed (both 64 KiB). */
    private static MemorySegment otherThreadSegment, closedSegment;

    /** Made on first use, not in the class initialiser (the helper thread's lambda needs this class initialised). */
    private static synchronized void foreignSegments() {
        if (otherThreadSegment != null) return;
        MemorySegment[] box = new MemorySegment[1];
        Thread t = Thread.ofPlatform().start(() -> box[0] = Arena.ofConfined().allocate(1 << 16, 64));
        try {
            t.join();
        } catch (InterruptedException e) {
            throw new AssertionError(e);
        }
        otherThreadSegment = box[0];
        Arena closed = Arena.ofShared();
        closedSegment = closed.allocate(1 << 16, 64);
        closed.close();
    }

    /** A buffer we own: the whole block (guards included), bytes before the call, and the data slice. */
    private static final class Block {
        final MemorySegment whole;
        final long dataOffset;
        byte[] before;

        Block(MemorySegment whole, long dataOffset) {
            this.whole = whole;
            this.dataOffset = dataOffset;
        }
    }

    /** One tensor argument as generated. */
    private static final class Arg {
        final String name;
        final boolean output;
        Tensor tensor;
        Block block;          // null for memory we do not own (NULL, closed, other thread)
        long extent = -1;     // bytes reached by shape and strides, -1 when invalid
        Kind kind;

        Arg(String name, boolean output) {
            this.name = name;
            this.output = output;
        }
    }

    /** Counts, for the report of a seeded run. */
    static final class Stats {
        long calls, successes, failures;
        final Map<String, Long> byStatus = new java.util.TreeMap<>();

        void failure(String key) {
            failures++;
            byStatus.merge(key, 1L, Long::sum);
        }

        @Override
        public String toString() {
            return calls + " calls: " + successes + " succeeded, " + failures + " refused " + byStatus;
        }
    }

    static void run(Source s) {
        run(s, new Stats());
    }

    static void run(Source s, Stats stats) {
        foreignSegments();
        stats.calls++;
        boolean backward = s.bool();
        Score score = s.pick(Score.values());
        DType dtype = s.pick(DType.values());
        int chaos = s.intIn(0, 3);            // 0: every tensor well formed; higher: more broken tensors
        AttentionSpec spec = spec(s, score);
        boolean moderate = moderate(spec);

        long b = dim(s, 1, 2), nq = dim(s, 1, 33), nk = dim(s, 1, 33), hk = dim(s, 1, 3), d;
        long hq = s.intIn(0, 7) == 0 ? dim(s, 1, 6) : hk * s.intIn(1, 3);
        d = switch (s.intIn(0, 9)) {
            case 0 -> s.pick(new Long[] {256L, 257L, 300L, 1L, 2L});
            case 1 -> dim(s, 1, 300);
            default -> s.intIn(1, 40);
        };
        if (s.intIn(0, 5) == 0) {             // occasionally one dimension from the special list
            long x = s.pick(toBoxed(SPECIAL_DIMS));
            switch (s.intIn(0, 5)) {
                case 0 -> b = x;
                case 1 -> nq = x;
                case 2 -> nk = x;
                case 3 -> hk = x;
                case 4 -> hq = x;
                default -> d = x;
            }
        }
        long[] qShape = {b, nq, hq, d}, kShape = {b, nk, hk, d}, lseShape = {b, hq, nq};
        boolean softmax = score == Score.SOFTMAX;
        boolean withLse = softmax ? s.intIn(0, 5) != 0 : s.intIn(0, 9) == 0;
        boolean withOut = !backward || (softmax ? s.intIn(0, 9) != 0 : s.intIn(0, 3) == 0);

        List<Arg> args = new ArrayList<>();
        Arg q = new Arg("q", false), k = new Arg("k", false), v = new Arg("v", false);
        Arg out = new Arg("out", !backward), lse = new Arg("lse", !backward);
        Arg dout = new Arg("dout", false), dq = new Arg("dq", true), dk = new Arg("dk", true), dv = new Arg("dv", true);

        double threshold = switch (s.intIn(0, 2)) {
            case 0 -> Double.MAX_VALUE;       // heap arrays in place (critical downcall)
            case 1 -> -1;                     // heap arrays copied
            default -> FlashSig.DEFAULT_CRITICAL_MAX_FLOPS;
        };
        double oldThreshold = FlashSig.criticalMaxFlops(threshold);
        try (Arena arena = Arena.ofConfined()) {
            Throwable thrown = null;
            Map<Block, Boolean> blocks = new IdentityHashMap<>();
            try {
                make(s, arena, q, qShape, dtype, chaos, args);
                make(s, arena, k, kShape, dtype, chaos, args);
                make(s, arena, v, kShape, dtype, chaos, args);
                if (withOut) make(s, arena, out, qShape, dtype, chaos, args);
                if (withLse) make(s, arena, lse, lseShape, DType.FP32, chaos, args);
                if (backward) {
                    make(s, arena, dout, qShape, dtype, chaos, args);
                    make(s, arena, dq, qShape, dtype, chaos, args);
                    make(s, arena, dk, kShape, dtype, chaos, args);
                    make(s, arena, dv, kShape, dtype, chaos, args);
                }
            } catch (RuntimeException e) {
                acceptable(e, null);          // a factory refused a descriptor: nothing to call
                stats.failure("factory " + describe(e));
                return;
            }
            boolean lseConsistent = false;
            if (backward && softmax && withOut && withLse) {
                // a real forward fills out and lse, so that softmax backward has a finite answer
                try {
                    FlashSig.forward(spec, q.tensor, k.tensor, v.tensor, out.tensor, lse.tensor);
                    lseConsistent = true;
                } catch (RuntimeException e) {
                    acceptable(e, null);
                }
            }
            for (Arg a : args) if (a.block != null && blocks.put(a.block, Boolean.TRUE) == null)
                a.block.before = a.block.whole.toArray(ValueLayout.JAVA_BYTE);

            try {
                if (backward)
                    FlashSig.backward(spec, q.tensor, k.tensor, v.tensor, withOut ? out.tensor : null, dout.tensor,
                            withLse ? lse.tensor : null, dq.tensor, dk.tensor, dv.tensor);
                else
                    FlashSig.forward(spec, q.tensor, k.tensor, v.tensor, out.tensor, withLse ? lse.tensor : null);
            } catch (Throwable e) {
                thrown = e;
            }
            String call = (backward ? "backward" : "forward") + " " + spec + " " + describe(args);
            if (thrown != null) {
                acceptable(thrown, call);
                stats.failure(describe(thrown));
                for (Block blk : blocks.keySet()) unchanged(blk, null, call + " threw " + thrown);
                return;
            }
            stats.successes++;
            List<Arg> outputs = new ArrayList<>();
            for (Arg a : args) if (a.output) outputs.add(a);
            // an output sharing bytes with another tensor must have been refused
            for (Arg o : outputs)
                for (Arg a : args)
                    if (a != o && a.block != null && a.block == o.block && overlap(o, a))
                        throw new AssertionError(call + ": succeeded although " + o.name + " overlaps " + a.name);
            for (Block blk : blocks.keySet()) {
                boolean[] writable = new boolean[(int) blk.whole.byteSize()];
                for (Arg o : outputs) if (o.block == blk) markElements(o, writable);
                unchanged(blk, writable, call);
            }
            boolean aliased = args.stream().anyMatch(a -> a.kind == Kind.ALIAS); // inputs may read poison
            if (moderate && !aliased)
                checkValues(call, spec, backward, q.tensor.dtype(), lseConsistent, withLse, q.tensor.shape(),
                        k.tensor.shape(), out, lse, dq, dk, dv);
        } finally {
            FlashSig.criticalMaxFlops(oldThreshold);
        }
    }

    // ---- spec ------------------------------------------------------------------------------------------

    private static AttentionSpec spec(Source s, Score score) {
        AttentionSpec spec = AttentionSpec.of(score);
        if (s.intIn(0, 2) == 0) spec = spec.scale(param(s));
        if (s.intIn(0, 3) == 0) spec = spec.sigmoidBias(param(s));
        if (s.intIn(0, 3) == 0) spec = spec.alpha(param(s));
        if (s.bool()) spec = spec.causal();
        if (s.intIn(0, 2) == 0) spec = spec.window(s.pick(toBoxed(SPECIAL_WINDOWS)), s.pick(toBoxed(SPECIAL_WINDOWS)));
        if (s.intIn(0, 7) == 0) spec = spec.deterministic(true);
        return spec;
    }

    private static float param(Source s) {
        return switch (s.intIn(0, 3)) {
            case 0 -> s.anyFloat();
            case 1 -> SPECIAL_FLOATS[s.intIn(0, SPECIAL_FLOATS.length - 1)];
            default -> s.intIn(-300, 300) / 100f;
        };
    }

    /** Parameters for which every output of every score is finite in fp32/bf16 with inputs in [−4, 4]. */
    private static boolean moderate(AttentionSpec spec) {
        float sc = spec.scale(), bias = spec.sigmoidBias(), alpha = spec.alpha();
        return (Float.isNaN(sc) || Math.abs(sc) <= 10) && (Float.isNaN(bias) || Math.abs(bias) <= 100)
                && alpha >= -2 && alpha <= 8;
    }

    // ---- tensors -----------------------------------------------------------------------------------------

    private static long dim(Source s, int lo, int hi) {
        return s.intIn(0, 15) == 0 ? s.pick(toBoxed(SPECIAL_DIMS)) : s.intIn(lo, hi);
    }

    private static void make(Source s, Arena arena, Arg a, long[] nominal, DType nominalType, int chaos,
                             List<Arg> args) {
        args.add(a);
        boolean broken = chaos > 0 && s.intIn(0, 15) < chaos;
        long[] shape = nominal.clone();
        DType dtype = nominalType;
        Kind kind = s.intIn(0, 3) == 0 ? Kind.HEAP : Kind.OFF_HEAP;
        int layout = s.intIn(0, 5) == 0 ? 1 : 0;    // 0 contiguous, 1 padded/permuted, 2 random strides
        long sizeDelta = 0;
        if (broken) {
            switch (s.intIn(0, 8)) {
                case 0 -> shape[s.intIn(0, shape.length - 1)] = s.pick(toBoxed(SPECIAL_DIMS));
                case 1 -> shape[s.intIn(0, shape.length - 1)] += s.intIn(-2, 2);
                case 2 -> dtype = s.pick(DType.values());
                case 3 -> shape = Arrays.copyOf(shape, s.intIn(1, 5)); // other rank (5 is refused by Tensor.wrap)
                case 4 -> layout = 2;
                case 5 -> sizeDelta = s.pick(new Long[] {-1L, -2L, -4L, (long) -dtype.byteSize(), -64L});
                case 6 -> kind = s.pick(Kind.values());
                default -> {
                    kind = s.pick(Kind.values());
                    sizeDelta = s.intIn(-8, 8);
                }
            }
        }
        if (kind == Kind.ALIAS && args.size() < 2) kind = Kind.OFF_HEAP;
        for (int i = 0; i < shape.length; i++) if (shape[i] == 0 && !broken) shape[i] = 1;
        long[] strides = strides(s, shape, layout);
        int esz = dtype.byteSize();
        long extent = extent(shape, strides, esz);
        a.extent = extent;
        long size = extent >= 0 && extent <= MAX_BUFFER ? extent : s.intIn(0, 256);
        size = Math.max(0, size + sizeDelta);

        MemorySegment data;
        switch (kind) {
            case NULL -> data = MemorySegment.NULL;
            case CLOSED -> data = closedSegment.asSlice(0, Math.min(size, closedSegment.byteSize()));
            case OTHER_THREAD -> data = otherThreadSegment.asSlice(0, Math.min(size, otherThreadSegment.byteSize()));
            case ALIAS -> {
                // the memory of an earlier tensor, from its start or a few elements in
                Arg other = args.get(s.intIn(0, args.size() - 2));
                if (other.block == null) {
                    kind = Kind.OFF_HEAP;
                    data = allocate(s, arena, a, kind, size, esz, broken);
                } else {
                    a.block = other.block;
                    long off = Math.min(other.block.dataOffset + s.intIn(0, 3) * (long) esz, other.block.whole.byteSize());
                    data = other.block.whole.asSlice(off, Math.min(size, other.block.whole.byteSize() - off));
                }
            }
            default -> data = allocate(s, arena, a, kind, size, esz, broken);
        }
        a.kind = kind;
        Device device = kind == Kind.CUDA ? Device.cuda(s.intIn(0, 1)) : Device.CPU;
        if (a.block != null && !a.output && kind != Kind.ALIAS) fillInput(a.block, data, dtype, s);
        a.tensor = Tensor.wrap(data, dtype, device, shape, strides);
    }

    private static MemorySegment allocate(Source s, Arena arena, Arg a, Kind kind, long size, int esz, boolean broken) {
        long offset = GUARD + (kind == Kind.MISALIGNED ? s.pick(new Long[] {1L, 2L, 3L, 6L}) : 0);
        long total = offset + size + GUARD;
        MemorySegment whole;
        boolean heap = kind == Kind.HEAP || (kind == Kind.MISALIGNED || kind == Kind.READ_ONLY) && s.bool();
        if (heap) {
            int n = (int) ((total + 7) / 8);
            whole = switch (s.intIn(broken ? 0 : 1, 5)) {
                case 0 -> MemorySegment.ofArray(new byte[n * 8]);   // 1-byte aligned: refused in Java
                case 1 -> MemorySegment.ofArray(new long[n]);
                case 2 -> MemorySegment.ofArray(new int[n * 2]);
                case 3 -> MemorySegment.ofArray(new double[n]);
                default -> esz == 4 ? MemorySegment.ofArray(new float[n * 2]) : MemorySegment.ofArray(new short[n * 4]);
            };
        } else {
            whole = arena.allocate(total, 64);
        }
        whole.fill(POISON);
        a.block = new Block(whole, offset);
        MemorySegment data = whole.asSlice(offset, size);
        if (kind == Kind.FOREIGN) data = MemorySegment.ofAddress(data.address()).reinterpret(size);
        if (kind == Kind.READ_ONLY) data = data.asReadOnly();
        return data;
    }

    /** Finite values in [−4, 4] at every element-sized position of the data (not in the guards). */
    private static void fillInput(Block blk, MemorySegment data, DType dtype, Source s) {
        MemorySegment w = blk.whole.asSlice(blk.dataOffset, data.byteSize());
        int esz = dtype.byteSize();
        int seed = s.intIn(0, 1 << 20);
        for (long off = 0; off + esz <= w.byteSize(); off += esz) {
            seed = seed * 1103515245 + 12345;
            float x = ((seed >>> 8) % 8001 - 4000) / 1000f;
            switch (dtype) {
                case FP32 -> w.set(ValueLayout.JAVA_FLOAT_UNALIGNED, off, x);
                case FP16 -> w.set(ValueLayout.JAVA_SHORT_UNALIGNED, off, Float.floatToFloat16(x));
                case BF16 -> w.set(ValueLayout.JAVA_SHORT_UNALIGNED, off, DType.floatToBf16(x));
            }
        }
    }

    private static long[] strides(Source s, long[] shape, int layout) {
        long[] st = Tensor.contiguousStrides(shape);
        if (layout == 1 && shape.length == 4) {
            // BHSD storage with the last dim padded: a common non-contiguous layout
            long pad = s.intIn(0, 3);
            long dd = Math.max(shape[3], 1) + pad;
            st = new long[] {shape[2] * shape[1] * dd, dd, shape[1] * dd, 1};
        } else if (layout == 2) {
            for (int i = 0; i < st.length; i++)
                if (s.intIn(0, 2) == 0) st[i] = s.intIn(0, 1) == 0 ? s.pick(toBoxed(SPECIAL_STRIDES)) : s.intIn(0, 70);
        }
        return st;
    }

    /** Bytes reached by shape and strides, or −1 when a dim is < 1, a stride < 0, or it overflows. */
    static long extent(long[] shape, long[] strides, int esz) {
        try {
            long last = 0;
            for (int i = 0; i < shape.length; i++) {
                if (shape[i] < 1 || strides[i] < 0) return -1;
                last = Math.addExact(last, Math.multiplyExact(shape[i] - 1, strides[i]));
            }
            return Math.multiplyExact(last + 1, (long) esz);
        } catch (ArithmeticException e) {
            return -1;
        }
    }

    // ---- the property ------------------------------------------------------------------------------------

    /** Throws AssertionError unless {@code t} is one of the exceptions a bad call may throw. */
    static void acceptable(Throwable t, String call) {
        String where = call == null ? "" : call + ": ";
        String msg = t.getMessage();
        if (t instanceof FlashSigException e) {
            if (e.status() == FlashSigException.Status.INTERNAL || e.status() == FlashSigException.Status.OUT_OF_MEMORY)
                throw new AssertionError(where + "status " + e.status() + ": " + msg, t);
            if (msg == null || !NAMES_ARGUMENT.matcher(msg).find())
                throw new AssertionError(where + "message names no argument: " + msg, t);
            return;
        }
        if (t instanceof IllegalArgumentException || t instanceof NullPointerException
                || t instanceof IllegalStateException) {
            if (msg == null || msg.isBlank()) throw new AssertionError(where + "exception without a message", t);
            return;
        }
        throw new AssertionError(where + "unexpected " + t, t);
    }

    private static void unchanged(Block blk, boolean[] writable, String call) {
        byte[] now = blk.whole.toArray(ValueLayout.JAVA_BYTE);
        for (int i = 0; i < now.length; i++) {
            if (now[i] != blk.before[i] && (writable == null || !writable[i]))
                throw new AssertionError(call + ": byte " + (i - blk.dataOffset) + " relative to the data start changed ("
                        + (writable == null ? "call failed" : "not an output element") + ")");
        }
    }

    private static void markElements(Arg o, boolean[] writable) {
        Tensor t = o.tensor;
        // heap segments: address() is the offset in the array, as it is for the whole block
        long base = t.segment().address() - o.block.whole.address();
        long esz = t.dtype().byteSize();
        t.forEachOffset((i, off) -> {
            for (long j = 0; j < esz; j++) writable[(int) (base + off + j)] = true;
        });
    }

    private static boolean overlap(Arg o, Arg a) {
        if (o.extent <= 0 || a.extent <= 0) return false;
        long ob = o.tensor.segment().address(), ab = a.tensor.segment().address();
        return ob < ab + a.extent && ab < ob + o.extent;
    }

    private static void checkValues(String call, AttentionSpec spec, boolean backward, DType dtype,
                                    boolean lseConsistent, boolean withLse, long[] qShape, long[] kShape, Arg out,
                                    Arg lse, Arg dq, Arg dk, Arg dv) {
        Score score = spec.score();
        // softmax: |out| ≤ max|v| = 4; sigmoid: |out| ≤ Nk·max|v| (P ≤ 1): finite in any dtype for Nk ≤ 33
        boolean bounded = score == Score.SOFTMAX || score == Score.SIGMOID;
        if (!backward) {
            float[] o = out.tensor.toFloatArray();
            if (dtype != DType.FP16 || bounded) allFinite(call, "out", o);
            float bound = score == Score.SOFTMAX ? 4.01f : 4.01f * kShape[1];
            if (bounded) for (int i = 0; i < o.length; i++)
                if (Math.abs(o[i]) > bound) throw new AssertionError(call + ": out[" + i + "] = " + o[i]
                        + " exceeds its bound " + bound + " (unwritten?)");
            if (score == Score.SOFTMAX)
                checkEmptyRows(call, spec, qShape, kShape, o, withLse ? lse.tensor.toFloatArray() : null);
        } else if (dtype != DType.FP16 && (score != Score.SOFTMAX || lseConsistent)) {
            allFinite(call, "dq", dq.tensor.toFloatArray());
            allFinite(call, "dk", dk.tensor.toFloatArray());
            allFinite(call, "dv", dv.tensor.toFloatArray());
        }
    }

    /** Softmax rows with no allowed key: out = 0 and LSE = +inf; other rows: finite LSE. */
    private static void checkEmptyRows(String call, AttentionSpec spec, long[] qs, long[] ks, float[] o, float[] l) {
        int b = (int) qs[0], nq = (int) qs[1], hq = (int) qs[2], d = (int) qs[3], nk = (int) ks[1];
        for (int i = 0; i < nq; i++) {
            boolean any = false;
            for (int j = 0; j < nk && !any; j++) any = allowed(spec, i, j, nq, nk);
            for (int bb = 0; bb < b; bb++)
                for (int h = 0; h < hq; h++) {
                    if (l != null) {
                        float x = l[(bb * hq + h) * nq + i];
                        if (any ? !Float.isFinite(x) : x != Float.POSITIVE_INFINITY)
                            throw new AssertionError(call + ": lse row " + i + " = " + x + (any ? " (has keys)" : " (no key)"));
                    }
                    if (!any)
                        for (int c = 0; c < d; c++)
                            if (o[((bb * nq + i) * hq + h) * d + c] != 0f)
                                throw new AssertionError(call + ": out row " + i + " has no key but is not 0");
                }
        }
    }

    /** DESIGN §4's mask, in arithmetic that cannot overflow for any window value. */
    static boolean allowed(AttentionSpec spec, long i, long j, long nq, long nk) {
        long diag = i + nk - nq;             // small: the shapes of a successful call
        long ahead = j - diag;               // key position relative to the diagonal
        if (spec.isCausal() && ahead > 0) return false;
        if (spec.windowLeft() >= 0 && -ahead > spec.windowLeft()) return false;
        return spec.windowRight() < 0 || ahead <= spec.windowRight();
    }

    private static void allFinite(String call, String what, float[] a) {
        for (int i = 0; i < a.length; i++)
            if (!Float.isFinite(a[i])) throw new AssertionError(call + ": " + what + "[" + i + "] = " + a[i]);
    }

    // ---- small things ------------------------------------------------------------------------------------

    private static Long[] toBoxed(long[] a) {
        Long[] r = new Long[a.length];
        for (int i = 0; i < a.length; i++) r[i] = a[i];
        return r;
    }

    private static String describe(Throwable t) {
        return t instanceof FlashSigException e ? e.status().toString() : t.getClass().getSimpleName();
    }

    private static String describe(List<Arg> args) {
        StringBuilder b = new StringBuilder();
        for (Arg a : args)
            b.append(' ').append(a.name).append('=').append(a.tensor == null ? "-" : a.tensor.dtype() + Arrays.toString(
                    a.tensor.shape()) + Arrays.toString(a.tensor.strides()) + "/" + a.tensor.segment().byteSize() + "B"
                    + (a.tensor.segment().isNative() ? "" : "(heap)") + (a.tensor.segment().isReadOnly() ? "(ro)" : ""));
        return b.toString();
    }
}
