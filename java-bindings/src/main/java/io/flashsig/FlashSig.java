package io.flashsig;

import io.flashsig.ffi.FlashSigNative;
import io.flashsig.ffi.fsig_capabilities;

import java.lang.foreign.Arena;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.util.ArrayList;
import java.util.Collections;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;

import static io.flashsig.FlashSigException.Status;

/**
 * Fused attention: forward and backward for softmax and pointwise scores (see {@link Score}), on
 * {@link Tensor}s in BSHD layout.
 * <pre>{@code
 * try (Arena arena = Arena.ofConfined()) {
 *     Tensor q = Tensor.allocate(arena, DType.BF16, 1, 1024, 8, 64), k = ..., v = ..., out = ...;
 *     FlashSig.forward(AttentionSpec.of(Score.SIGMOID).causal(), q, k, v, out);
 * }
 * }</pre>
 *
 * <h2>Memory</h2>
 * Every data buffer reaches the native call as a {@link MemorySegment} argument of the downcall
 * ({@code fsig_attention_forward_buffers}), never as an address stored in a struct: that keeps each
 * tensor's arena alive for the whole call and lets heap arrays take part.
 * <ul>
 * <li><b>Off-heap segments</b> (arenas, mapped files) are always used in place.</li>
 * <li><b>Heap arrays, short calls</b>: used in place through a {@code Linker.Option.critical(true)}
 * downcall, which pins them by holding off the garbage collector for the call's duration. That is
 * cheap for short calls only, so it applies while the call's work — 4·B·Hq·Nq·Nk·d FLOPs forward,
 * 2.5× that backward — is at most the system property {@value #CRITICAL_MAX_FLOPS_PROPERTY}
 * (default {@value #DEFAULT_CRITICAL_MAX_FLOPS}). Calls on off-heap memory under that size use the
 * critical downcall too (it skips the thread-state transition).</li>
 * <li><b>Heap arrays, longer calls</b>: each heap input is copied to off-heap scratch (a confined
 * arena freed when the call returns), the call runs as a normal downcall (the GC keeps running), and
 * the elements of each heap output are copied back — only after the call succeeded.</li>
 * </ul>
 * Results are the same either way. CUDA tensors pass through to the native library (which reports
 * {@code NO_DEVICE} without a GPU); Java-side CUDA memory management is not part of this version.
 *
 * <h2>Errors</h2>
 * Every failure is a {@link FlashSigException} whose message names the argument and the rule, and no
 * output element is written. Java checks what only Java can see (null tensors, closed arenas,
 * thread confinement, read-only output segments, heap alignment, overlap between heap arrays when
 * they are copied); the native library checks everything else (shapes, dtypes, strides, sizes,
 * parameters), so the rules live in one place. The calls are thread-safe; the thread count is process-wide.
 */
public final class FlashSig {
    /** System property: largest work (FLOPs) for which heap arrays are passed in place (critical downcall). */
    public static final String CRITICAL_MAX_FLOPS_PROPERTY = "io.flashsig.criticalMaxFlops";
    static final double DEFAULT_CRITICAL_MAX_FLOPS = 5e7;

    private static volatile double criticalMaxFlops = readCriticalMaxFlops();

    private FlashSig() {}

    /** Native functions, bound once after the library is loaded. */
    private static final class Handles {
        static final MethodHandle FORWARD;
        static final MethodHandle FORWARD_CRITICAL;
        static final MethodHandle BACKWARD;
        static final MethodHandle BACKWARD_CRITICAL;
        static final MethodHandle FORWARD_EX;
        static final MethodHandle FORWARD_EX_CRITICAL;
        static final MethodHandle BACKWARD_EX;
        static final MethodHandle BACKWARD_EX_CRITICAL;

        static {
            Linker linker = Linker.nativeLinker();
            var critical = Linker.Option.critical(true);
            FORWARD = linker.downcallHandle(FlashSigNative.fsig_attention_forward_buffers$address(),
                    FlashSigNative.fsig_attention_forward_buffers$descriptor());
            FORWARD_CRITICAL = linker.downcallHandle(FlashSigNative.fsig_attention_forward_buffers$address(),
                    FlashSigNative.fsig_attention_forward_buffers$descriptor(), critical);
            BACKWARD = linker.downcallHandle(FlashSigNative.fsig_attention_backward_buffers$address(),
                    FlashSigNative.fsig_attention_backward_buffers$descriptor());
            BACKWARD_CRITICAL = linker.downcallHandle(FlashSigNative.fsig_attention_backward_buffers$address(),
                    FlashSigNative.fsig_attention_backward_buffers$descriptor(), critical);
            FORWARD_EX = linker.downcallHandle(FlashSigNative.fsig_attention_forward_ex_buffers$address(),
                    FlashSigNative.fsig_attention_forward_ex_buffers$descriptor());
            FORWARD_EX_CRITICAL = linker.downcallHandle(FlashSigNative.fsig_attention_forward_ex_buffers$address(),
                    FlashSigNative.fsig_attention_forward_ex_buffers$descriptor(), critical);
            BACKWARD_EX = linker.downcallHandle(FlashSigNative.fsig_attention_backward_ex_buffers$address(),
                    FlashSigNative.fsig_attention_backward_ex_buffers$descriptor());
            BACKWARD_EX_CRITICAL = linker.downcallHandle(FlashSigNative.fsig_attention_backward_ex_buffers$address(),
                    FlashSigNative.fsig_attention_backward_ex_buffers$descriptor(), critical);
        }
    }

    // ---- attention ---------------------------------------------------------------------------------

    /** {@code out = attention(q, k, v)}. */
    public static void forward(AttentionSpec spec, Tensor q, Tensor k, Tensor v, Tensor out) {
        forward(spec, q, k, v, out, null);
    }

    /**
     * {@code out = attention(q, k, v)}; for softmax, also the row log-sum-exp into {@code lse}
     * (fp32 {@code [B, Hq, Nq]}, +inf for rows with no allowed key), which backward needs.
     * {@code lse} may be null; it must be null for the other scores.
     */
    public static void forward(AttentionSpec spec, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse) {
        NativeLibrary.load();
        checkSpec(spec);
        usable(q, "q");
        usable(k, "k");
        usable(v, "v");
        usable(out, "out");
        if (lse != null) usable(lse, "lse");
        writable(out, "out");
        if (lse != null) writable(lse, "lse");
        boolean heap = !q.segment().isNative() || !k.segment().isNative() || !v.segment().isNative()
                || !out.segment().isNative() || (lse != null && !lse.segment().isNative());
        double work = forwardFlops(q, k);
        int status;
        if (work <= criticalMaxFlops) {
            status = invokeForward(true, spec, q, k, v, out, lse, q.segment(), k.segment(), v.segment(),
                    out.segment(), data(lse));
        } else if (!heap) {
            status = invokeForward(false, spec, q, k, v, out, lse, q.segment(), k.segment(), v.segment(),
                    out.segment(), data(lse));
        } else {
            status = viaScratch(false, spec, new Tensor[] {q, k, v, out, lse}, 3,
                    new String[] {"q", "k", "v", "out", "lse"});
        }
        if (status != 0) throw nativeError(status);
    }

    /**
     * Gradients {@code dq, dk, dv} of the attention output, given {@code dout}, by recomputation.
     * Softmax needs the forward's {@code out} and {@code lse}; the pointwise scores need neither (pass
     * null). GQA/MQA: dk and dv are summed over the query heads of each group.
     */
    public static void backward(AttentionSpec spec, Tensor q, Tensor k, Tensor v, Tensor out, Tensor dout,
                                Tensor lse, Tensor dq, Tensor dk, Tensor dv) {
        NativeLibrary.load();
        checkSpec(spec);
        usable(q, "q");
        usable(k, "k");
        usable(v, "v");
        if (out != null) usable(out, "out");
        usable(dout, "dout");
        if (lse != null) usable(lse, "lse");
        usable(dq, "dq");
        usable(dk, "dk");
        usable(dv, "dv");
        writable(dq, "dq");
        writable(dk, "dk");
        writable(dv, "dv");
        boolean heap = !q.segment().isNative() || !k.segment().isNative() || !v.segment().isNative()
                || (out != null && !out.segment().isNative()) || !dout.segment().isNative()
                || (lse != null && !lse.segment().isNative()) || !dq.segment().isNative()
                || !dk.segment().isNative() || !dv.segment().isNative();
        double work = 2.5 * forwardFlops(q, k);
        int status;
        if (work <= criticalMaxFlops) {
            status = invokeBackward(true, spec, q, k, v, out, dout, lse, dq, dk, dv, q.segment(), k.segment(),
                    v.segment(), data(out), dout.segment(), data(lse), dq.segment(), dk.segment(), dv.segment());
        } else if (!heap) {
            status = invokeBackward(false, spec, q, k, v, out, dout, lse, dq, dk, dv, q.segment(), k.segment(),
                    v.segment(), data(out), dout.segment(), data(lse), dq.segment(), dk.segment(), dv.segment());
        } else {
            status = viaScratch(true, spec, new Tensor[] {q, k, v, out, dout, lse, dq, dk, dv}, 6,
                    new String[] {"q", "k", "v", "out", "dout", "lse", "dq", "dk", "dv"});
        }
        if (status != 0) throw nativeError(status);
    }

    // ---- masks and positions (DESIGN.md §4 "Extensions") ---------------------------------------------

    /**
     * {@link #forward(AttentionSpec, Tensor, Tensor, Tensor, Tensor, Tensor)} with the ALiBi slopes,
     * bias, mask and block layout of {@code extras} (each optional; see {@link AttentionExtras}); the
     * scalar options (block sizes, strided, log-n) come from {@code spec}. The extension tensors are on
     * q's device (CPU or CUDA); {@code extras.stream()} queues a CUDA call on that stream.
     */
    public static void forward(AttentionSpec spec, AttentionExtras extras, Tensor q, Tensor k, Tensor v, Tensor out,
                               Tensor lse) {
        NativeLibrary.load();
        checkSpec(spec);
        AttentionExtras x = extras == null ? AttentionExtras.none() : extras;
        usable(q, "q");
        usable(k, "k");
        usable(v, "v");
        usable(out, "out");
        if (lse != null) usable(lse, "lse");
        usableExtras(x);
        writable(out, "out");
        if (lse != null) writable(lse, "lse");
        Object[] args = {q, k, v, out, lse, x.alibi(), x.bias(), x.mask(), x.blockLayout()};
        int status = callEx(false, spec, args, streamOf(x), new int[] {3, 4}, forwardFlops(q, k),
                new String[] {"q", "k", "v", "out", "lse", "alibi_slopes", "bias", "mask", "block_layout"});
        if (status != 0) throw nativeError(status);
    }

    /**
     * {@link #backward(AttentionSpec, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)}
     * with the tensors of {@code extras}, and the bias gradient: {@code dbias} (may be null) receives
     * dL/dbias = dS summed over the bias's broadcast dimensions (over every query row too for a bias
     * broadcast over Nq, such as a key-padding bias) — the bias's shape and dtype; every element is
     * written (0 where masked); deterministic. On a CUDA device {@code dbias} needs the bias's full shape
     * {@code [B, Hq, Nq, Nk]} (a broadcast one gives {@link Status#UNSUPPORTED}; the CPU takes it).
     */
    public static void backward(AttentionSpec spec, AttentionExtras extras, Tensor q, Tensor k, Tensor v, Tensor out,
                                Tensor dout, Tensor lse, Tensor dq, Tensor dk, Tensor dv, Tensor dbias) {
        NativeLibrary.load();
        checkSpec(spec);
        AttentionExtras x = extras == null ? AttentionExtras.none() : extras;
        usable(q, "q");
        usable(k, "k");
        usable(v, "v");
        if (out != null) usable(out, "out");
        usable(dout, "dout");
        if (lse != null) usable(lse, "lse");
        usable(dq, "dq");
        usable(dk, "dk");
        usable(dv, "dv");
        if (dbias != null) usable(dbias, "dbias");
        usableExtras(x);
        writable(dq, "dq");
        writable(dk, "dk");
        writable(dv, "dv");
        if (dbias != null) writable(dbias, "dbias");
        Object[] args = {q, k, v, out, dout, lse, dq, dk, dv, x.alibi(), x.bias(), x.mask(), x.blockLayout(), dbias};
        int status = callEx(true, spec, args, streamOf(x), new int[] {6, 7, 8, 13}, 2.5 * forwardFlops(q, k),
                new String[] {"q", "k", "v", "out", "dout", "lse", "dq", "dk", "dv", "alibi_slopes", "bias", "mask",
                        "block_layout", "dbias"});
        if (status != 0) throw nativeError(status);
    }

    /**
     * The standard ALiBi slopes (Press et al.) for {@code heads} heads: with n the largest power of two
     * ≤ heads, 2^(−8(h+1)/n) for the first n heads, then every other slope of the 2n schedule.
     */
    public static float[] alibiSlopes(int heads) {
        NativeLibrary.load();
        if (heads < 1) throw new FlashSigException(Status.INVALID_PARAMS, "heads is " + heads + " but must be >= 1");
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = arena.allocate(ValueLayout.JAVA_FLOAT, heads);
            int status = FlashSigNative.fsig_alibi_slopes(heads, s);
            if (status != 0) throw nativeError(status);
            return s.toArray(ValueLayout.JAVA_FLOAT);
        }
    }

    private static void usableExtras(AttentionExtras x) {
        if (x.alibi() != null) usable(x.alibi(), "alibi_slopes");
        if (x.bias() != null) usable(x.bias(), "bias");
        if (x.mask() != null) usableMask(x.mask(), "mask");
        if (x.blockLayout() != null) usableMask(x.blockLayout(), "block_layout");
    }

    private static void usableMask(Mask m, String name) {
        usableSegment(m.segment(), name);
    }

    private static MemorySegment segOf(Object o) {
        return o == null ? MemorySegment.NULL : o instanceof Tensor t ? t.segment() : ((Mask) o).segment();
    }

    private static MemorySegment descOf(Object o) {
        return o == null ? MemorySegment.NULL : o instanceof Tensor t ? t.descriptor : ((Mask) o).descriptor;
    }

    /**
     * An _ex call with the same three memory paths as the plain calls: critical downcall for short
     * calls, a normal one for off-heap memory, and heap arrays copied through off-heap scratch
     * otherwise (inputs in, then the outputs' elements back after success). {@code outputs}: indexes of
     * the output arguments.
     */
    /** The extras' CUDA stream handle, or NULL (the default stream; CPU calls need NULL). */
    private static MemorySegment streamOf(AttentionExtras x) {
        return x.stream() == null ? MemorySegment.NULL : x.stream().handle();
    }

    private static int callEx(boolean backward, AttentionSpec spec, Object[] args, MemorySegment stream, int[] outputs,
                              double work,
                              String[] names) {
        boolean heap = false;
        for (Object o : args) heap |= o != null && !segOf(o).isNative();
        MemorySegment[] d = new MemorySegment[args.length];
        if (work <= criticalMaxFlops || !heap) {
            for (int i = 0; i < args.length; i++) d[i] = segOf(args[i]);
            return invokeEx(backward, work <= criticalMaxFlops, spec, args, d, stream);
        }
        boolean[] isOut = new boolean[args.length];
        for (int o : outputs) isOut[o] = true;
        Tensor[] ts = new Tensor[args.length];
        for (int i = 0; i < args.length; i++) if (args[i] instanceof Tensor t) ts[i] = t;
        checkHeapOverlapEx(ts, isOut, names);
        try (Arena scratch = Arena.ofConfined()) {
            for (int i = 0; i < args.length; i++) {
                MemorySegment s = segOf(args[i]);
                if (args[i] == null || s.isNative()) {
                    d[i] = s;
                } else {
                    d[i] = scratch.allocate(s.byteSize(), 64);
                    if (!isOut[i]) d[i].copyFrom(s);
                }
            }
            int status = invokeEx(backward, false, spec, args, d, stream);
            if (status == 0)
                for (int o : outputs) {
                    Tensor t = ts[o];
                    if (t != null && !t.segment().isNative()) t.copyElements(d[o], t.segment());
                }
            return status;
        }
    }

    /** As checkHeapOverlap, for outputs marked in isOut (Masks are inputs; the native check sees off-heap ones). */
    private static void checkHeapOverlapEx(Tensor[] ts, boolean[] isOut, String[] names) {
        for (int o = 0; o < ts.length; o++) {
            Tensor out = ts[o];
            if (!isOut[o] || out == null || out.segment().isNative()) continue;
            MemorySegment ob = reach(out);
            if (ob == null) continue;
            for (int i = 0; i < ts.length; i++) {
                Tensor t = ts[i];
                if (i == o || t == null || t.segment().isNative()) continue;
                MemorySegment tb = reach(t);
                if (tb != null && ob.asOverlappingSlice(tb).isPresent())
                    throw new FlashSigException(Status.ALIASING, names[o] + " overlaps " + names[i]
                            + " in memory: outputs must not share bytes with any other tensor");
            }
        }
    }

    private static int invokeEx(boolean backward, boolean critical, AttentionSpec spec, Object[] a, MemorySegment[] d,
                                MemorySegment stream) {
        try {
            if (!backward) {
                MethodHandle h = critical ? Handles.FORWARD_EX_CRITICAL : Handles.FORWARD_EX;
                return (int) h.invokeExact(spec.nativeParams(), descOf(a[0]), descOf(a[1]), descOf(a[2]), descOf(a[3]),
                        descOf(a[4]), descOf(a[5]), descOf(a[6]), descOf(a[7]), descOf(a[8]), stream,
                        d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8]);
            }
            MethodHandle h = critical ? Handles.BACKWARD_EX_CRITICAL : Handles.BACKWARD_EX;
            return (int) h.invokeExact(spec.nativeParams(), descOf(a[0]), descOf(a[1]), descOf(a[2]), descOf(a[3]),
                    descOf(a[4]), descOf(a[5]), descOf(a[6]), descOf(a[7]), descOf(a[8]), descOf(a[9]), descOf(a[10]),
                    descOf(a[11]), descOf(a[12]), descOf(a[13]), stream, d[0], d[1], d[2], d[3], d[4], d[5],
                    d[6], d[7], d[8], d[9], d[10], d[11], d[12], d[13]);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new AssertionError(t);
        } finally {
            // descriptors and params are unscoped views of memory these objects own
            java.lang.ref.Reference.reachabilityFence(spec);
            java.lang.ref.Reference.reachabilityFence(a);
        }
    }

    // ---- library -----------------------------------------------------------------------------------

    /**
     * What this build and machine support.
     *
     * @param cpuIsa          "avx2" or "avx512": the CPU kernels in use
     * @param cpuThreads      threads the CPU backend uses now
     * @param cpuDtypes       dtypes with CPU kernels
     * @param cpuMinHeadDim   the CPU supports every head dim in [min, max]
     * @param cpuMaxHeadDim   see cpuMinHeadDim
     * @param cudaCompiled    whether the library contains CUDA code
     * @param cudaDeviceCount usable CUDA devices now (0 without a driver)
     * @param cudaDtypes      dtypes with CUDA kernels
     * @param cudaHeadDims    head dims with CUDA kernels
     */
    public record Capabilities(String cpuIsa, int cpuThreads, Set<DType> cpuDtypes, int cpuMinHeadDim,
                               int cpuMaxHeadDim, boolean cudaCompiled, int cudaDeviceCount, Set<DType> cudaDtypes,
                               List<Integer> cudaHeadDims) {
        /** Whether attention can run on a CUDA device now. */
        public boolean cudaAvailable() {
            return cudaDeviceCount > 0 && !cudaDtypes.isEmpty();
        }
    }

    public static Capabilities capabilities() {
        NativeLibrary.load();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment c = arena.allocate(fsig_capabilities.layout());
            fsig_capabilities.struct_size(c, (int) fsig_capabilities.sizeof());
            int status = FlashSigNative.fsig_get_capabilities(c);
            if (status != 0) throw nativeError(status);
            int isa = fsig_capabilities.cpu_isa(c);
            String isaName = isa == FlashSigNative.FSIG_CPU_ISA_AVX512() ? "avx512"
                    : isa == FlashSigNative.FSIG_CPU_ISA_AVX2() ? "avx2" : "isa" + isa;
            List<Integer> dims = new ArrayList<>();
            for (int i = 0; i < fsig_capabilities.cuda_head_dim_count(c); i++)
                dims.add(fsig_capabilities.cuda_head_dims(c, i));
            return new Capabilities(isaName, fsig_capabilities.cpu_threads(c),
                    dtypes(fsig_capabilities.cpu_dtypes(c)), fsig_capabilities.cpu_min_head_dim(c),
                    fsig_capabilities.cpu_max_head_dim(c), fsig_capabilities.cuda_compiled(c) != 0,
                    fsig_capabilities.cuda_device_count(c), dtypes(fsig_capabilities.cuda_dtypes(c)),
                    Collections.unmodifiableList(dims));
        }
    }

    /** Threads of the CPU backend for the whole process: n ≥ 1, or 0 for the default (one per available CPU). */
    public static void setNumThreads(int n) {
        NativeLibrary.load();
        int status = FlashSigNative.fsig_set_num_threads(n);
        if (status != 0) throw nativeError(status);
    }

    public static int numThreads() {
        NativeLibrary.load();
        return FlashSigNative.fsig_get_num_threads();
    }

    /** The native library's version, "MAJOR.MINOR.PATCH". */
    public static String version() {
        NativeLibrary.load();
        return FlashSigNative.fsig_version_string().getString(0);
    }

    // ---- internals ---------------------------------------------------------------------------------

    /** Test hook: sets the critical-downcall threshold (FLOPs); returns the previous value. */
    static double criticalMaxFlops(double flops) {
        double old = criticalMaxFlops;
        criticalMaxFlops = flops;
        return old;
    }

    private static double readCriticalMaxFlops() {
        String s = System.getProperty(CRITICAL_MAX_FLOPS_PROPERTY);
        if (s == null || s.isBlank()) return DEFAULT_CRITICAL_MAX_FLOPS;
        try {
            return Double.parseDouble(s.trim());
        } catch (NumberFormatException e) {
            System.err.println("FlashSig: ignoring -D" + CRITICAL_MAX_FLOPS_PROPERTY + "=" + s
                    + " (not a number); using " + DEFAULT_CRITICAL_MAX_FLOPS);
            return DEFAULT_CRITICAL_MAX_FLOPS;
        }
    }

    private static void checkSpec(AttentionSpec spec) {
        if (spec == null) throw new FlashSigException(Status.NULL_ARGUMENT, "spec is null");
        spec.nativeParams(); // built here, so that a failure to build it comes before any copying
    }

    /** Only what the native side cannot see: null, liveness, confinement, heap alignment. */
    private static void usable(Tensor t, String name) {
        if (t == null) throw new FlashSigException(Status.NULL_ARGUMENT, name + " is null");
        MemorySegment s = t.segment();
        usableSegment(s, name);
        if (!s.isNative() && s.maxByteAlignment() < t.dtype().byteSize())
            throw new FlashSigException(Status.MISALIGNED, name + ": the heap segment is " + s.maxByteAlignment()
                    + "-byte aligned but " + t.dtype() + " needs " + t.dtype().byteSize()
                    + " (wrap a float[] for FP32, a short[] for FP16/BF16)");
    }

    /** The segment of a tensor or mask can be passed now: its arena is open and this thread may use it. */
    static void usableSegment(MemorySegment s, String name) {
        if (!s.scope().isAlive())
            throw new FlashSigException(Status.SEGMENT_NOT_ACCESSIBLE, name + ": its arena is closed");
        if (!s.isAccessibleBy(Thread.currentThread()))
            throw new FlashSigException(Status.SEGMENT_NOT_ACCESSIBLE, name
                    + ": its segment is confined to another thread (use a shared arena to call from several threads)");
    }

    /** An output's segment must accept writes: the native code would otherwise write through a read-only view. */
    private static void writable(Tensor t, String name) {
        if (t.segment().isReadOnly())
            throw new FlashSigException(Status.SEGMENT_NOT_ACCESSIBLE, name
                    + ": its segment is read-only but " + name + " is an output");
    }

    private static MemorySegment data(Tensor t) {
        return t == null ? MemorySegment.NULL : t.segment();
    }

    private static MemorySegment desc(Tensor t) {
        return t == null ? MemorySegment.NULL : t.descriptor;
    }

    /** 4·B·Hq·Nq·Nk·d, or 0 when the shapes are not attention shapes (the native call then says why). */
    private static double forwardFlops(Tensor q, Tensor k) {
        if (q.rank() != 4 || k.rank() != 4) return 0;
        return 4.0 * q.shape(0) * q.shape(2) * q.shape(1) * k.shape(1) * q.shape(3);
    }

    private static int invokeForward(boolean critical, AttentionSpec spec, Tensor q, Tensor k, Tensor v, Tensor out,
                                     Tensor lse, MemorySegment qd, MemorySegment kd, MemorySegment vd,
                                     MemorySegment outd, MemorySegment lsed) {
        try {
            return critical
                    ? (int) Handles.FORWARD_CRITICAL.invokeExact(spec.nativeParams(), q.descriptor, k.descriptor, v.descriptor,
                            out.descriptor, desc(lse), MemorySegment.NULL, qd, kd, vd, outd, lsed)
                    : (int) Handles.FORWARD.invokeExact(spec.nativeParams(), q.descriptor, k.descriptor, v.descriptor,
                            out.descriptor, desc(lse), MemorySegment.NULL, qd, kd, vd, outd, lsed);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new AssertionError(t);
        } finally {
            // the descriptors (and params) are unscoped views of memory these objects own
            java.lang.ref.Reference.reachabilityFence(spec);
            java.lang.ref.Reference.reachabilityFence(q);
            java.lang.ref.Reference.reachabilityFence(k);
            java.lang.ref.Reference.reachabilityFence(v);
            java.lang.ref.Reference.reachabilityFence(out);
            java.lang.ref.Reference.reachabilityFence(lse);
        }
    }

    private static int invokeBackward(boolean critical, AttentionSpec spec, Tensor q, Tensor k, Tensor v, Tensor out,
                                      Tensor dout, Tensor lse, Tensor dq, Tensor dk, Tensor dv, MemorySegment qd,
                                      MemorySegment kd, MemorySegment vd, MemorySegment outd, MemorySegment doutd,
                                      MemorySegment lsed, MemorySegment dqd, MemorySegment dkd, MemorySegment dvd) {
        try {
            return critical
                    ? (int) Handles.BACKWARD_CRITICAL.invokeExact(spec.nativeParams(), q.descriptor, k.descriptor, v.descriptor,
                            desc(out), dout.descriptor, desc(lse), dq.descriptor, dk.descriptor, dv.descriptor,
                            MemorySegment.NULL, qd, kd, vd, outd, doutd, lsed, dqd, dkd, dvd)
                    : (int) Handles.BACKWARD.invokeExact(spec.nativeParams(), q.descriptor, k.descriptor, v.descriptor,
                            desc(out), dout.descriptor, desc(lse), dq.descriptor, dk.descriptor, dv.descriptor,
                            MemorySegment.NULL, qd, kd, vd, outd, doutd, lsed, dqd, dkd, dvd);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new AssertionError(t);
        } finally {
            java.lang.ref.Reference.reachabilityFence(spec);
            java.lang.ref.Reference.reachabilityFence(q);
            java.lang.ref.Reference.reachabilityFence(k);
            java.lang.ref.Reference.reachabilityFence(v);
            java.lang.ref.Reference.reachabilityFence(out);
            java.lang.ref.Reference.reachabilityFence(dout);
            java.lang.ref.Reference.reachabilityFence(lse);
            java.lang.ref.Reference.reachabilityFence(dq);
            java.lang.ref.Reference.reachabilityFence(dk);
            java.lang.ref.Reference.reachabilityFence(dv);
        }
    }

    /**
     * The copy path for heap arrays in long calls: inputs to off-heap scratch, a normal downcall, then
     * the elements of heap outputs back. {@code ts[firstOutput..]} are the outputs; null = absent.
     */
    private static int viaScratch(boolean backward, AttentionSpec spec, Tensor[] ts, int firstOutput,
                                  String[] names) {
        checkHeapOverlap(ts, firstOutput, names);
        try (Arena scratch = Arena.ofConfined()) {
            MemorySegment[] d = new MemorySegment[ts.length];
            for (int i = 0; i < ts.length; i++) {
                Tensor t = ts[i];
                if (t == null) {
                    d[i] = MemorySegment.NULL;
                } else if (t.segment().isNative()) {
                    d[i] = t.segment();
                } else {
                    d[i] = scratch.allocate(t.segment().byteSize(), 64);
                    if (i < firstOutput) d[i].copyFrom(t.segment());
                }
            }
            int status = backward
                    ? invokeBackward(false, spec, ts[0], ts[1], ts[2], ts[3], ts[4], ts[5], ts[6], ts[7], ts[8],
                            d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8])
                    : invokeForward(false, spec, ts[0], ts[1], ts[2], ts[3], ts[4], d[0], d[1], d[2], d[3], d[4]);
            if (status == 0) {
                for (int i = firstOutput; i < ts.length; i++) {
                    Tensor t = ts[i];
                    if (t != null && !t.segment().isNative()) t.copyElements(d[i], t.segment());
                }
            }
            return status;
        }
    }

    /**
     * Copies hide overlap between heap arrays from the native aliasing check, so it is repeated here:
     * an output may not share bytes with any other tensor on the same array.
     */
    private static void checkHeapOverlap(Tensor[] ts, int firstOutput, String[] names) {
        for (int o = firstOutput; o < ts.length; o++) {
            Tensor out = ts[o];
            if (out == null || out.segment().isNative()) continue;
            MemorySegment ob = reach(out);
            if (ob == null) continue; // the native check reports the bad strides or size
            for (int i = 0; i < ts.length; i++) {
                Tensor t = ts[i];
                if (i == o || t == null || t.segment().isNative()) continue;
                MemorySegment tb = reach(t);
                // asOverlappingSlice compares the backing arrays; it works on read-only views too
                // (heapBase() does not: it is empty for them)
                if (tb != null && ob.asOverlappingSlice(tb).isPresent())
                    throw new FlashSigException(Status.ALIASING, names[o] + " overlaps " + names[i]
                            + " in memory: outputs must not share bytes with any other tensor");
            }
        }
    }

    /** The bytes a tensor's shape and strides reach in its segment, or null when they do not fit (or are empty). */
    private static MemorySegment reach(Tensor t) {
        long e = t.extentBytes();
        if (e <= 0 || e > t.segment().byteSize()) return null;
        return t.segment().asSlice(0, e);
    }

    /** The exception for a failed native call; reads this thread's fsig_last_error() at once. */
    static FlashSigException nativeError(int status) {
        String msg = FlashSigNative.fsig_last_error().getString(0);
        if (msg.isEmpty()) msg = FlashSigNative.fsig_status_string(status).getString(0);
        return new FlashSigException(Status.of(status), msg);
    }

    private static Set<DType> dtypes(int mask) {
        Set<DType> s = EnumSet.noneOf(DType.class);
        for (DType t : DType.values()) if ((mask & (1 << t.nativeCode())) != 0) s.add(t);
        return Collections.unmodifiableSet(s);
    }
}
