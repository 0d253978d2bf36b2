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
 * ({@code fsig_attention_forward_ex_buffers}), never as an address stored in a struct: that keeps each
 * tensor's arena alive for the whole call and lets heap arrays take part.
 * <ul>
 * <li><b>Off-heap segments</b> (arenas, mapped files) are always used in place.</li>
 * <li><b>Heap arrays, short calls</b>: used in place through a {@code Linker.Option.critical(true)}
 * downcall, which pins them by holding off the garbage collector for the call's duration. That is
 * cheap for short calls only, so it applies while the call's work — 4·B·Hq·Nq·Nk·d FLOPs forward,
 * 2.5× that backward — is at most the system property {@value #CRITICAL_MAX_FLOPS_PROPERTY}
 * (default {@value #DEFAULT_CRITICAL_MAX_FLOPS}). Calls on off-heap memory under that size use the
 * critical downcall too (it skips the thread-state transition). CUDA calls never do: they may block
 * (runtime setup on first use, a full launch queue).</li>
 * <li><b>Heap arrays, longer calls</b>: each heap input is copied to off-heap scratch (a confined
 * arena freed when the call returns), the call runs as a normal downcall (the GC keeps running), and
 * the elements of each heap output are copied back — only after the call succeeded.</li>
 * </ul>
 * Results are the same either way. CUDA tensors pass through to the native library (which reports
 * {@code NO_DEVICE} without a GPU); device memory, copies and streams are {@link Cuda}'s, and the fast
 * CUDA backward's scratch memory (and that of a broadcast bias gradient) is a {@link BackwardWorkspace}.
 *
 * <h2>Errors</h2>
 * Every failure is a {@link FlashSigException} whose message names the argument and the rule, and no
 * output element is written. Java checks what only Java can see (null tensors, closed arenas,
 * thread confinement, read-only output segments, heap alignment); the native library checks everything
 * else (shapes, dtypes, strides, sizes, parameters, aliasing — heap views of one array reach it through
 * one scratch region at their offsets), so the rules live in one place. The calls are thread-safe; the thread count is process-wide.
 */
public final class FlashSig {
    /** System property: largest work (FLOPs) of a CPU call for which heap arrays are passed in place (critical downcall). */
    public static final String CRITICAL_MAX_FLOPS_PROPERTY = "io.flashsig.criticalMaxFlops";
    static final double DEFAULT_CRITICAL_MAX_FLOPS = 5e7;

    private static volatile double criticalMaxFlops = readCriticalMaxFlops();

    private FlashSig() {}

    /**
     * Native functions, bound once after the library is loaded, each as a critical and a normal downcall.
     * Every call goes through the _ex_buffers entry points (the C ABI's plain calls are these with NULL
     * extensions) except a backward without extensions, which takes fsig_attention_backward_buffers: C2
     * on JDK 25 will not compile a method holding the critical (heap-access) downcall with the _ex
     * backward's 30 pointers ("COMPILE SKIPPED: unsupported calling sequence"), and the C1 code it falls
     * back to cost 0.5–1 µs more per tiny call (CallOverhead.offHeapBackward, 2026-11-30).
     */
    private static final class Handles {
        static final MethodHandle FORWARD;
        static final MethodHandle FORWARD_CRITICAL;
        static final MethodHandle BACKWARD;
        static final MethodHandle BACKWARD_CRITICAL;
        static final MethodHandle BACKWARD_EX;
        static final MethodHandle BACKWARD_EX_CRITICAL;

        static {
            Linker linker = Linker.nativeLinker();
            var critical = Linker.Option.critical(true);
            FORWARD = linker.downcallHandle(FlashSigNative.fsig_attention_forward_ex_buffers$address(),
                    FlashSigNative.fsig_attention_forward_ex_buffers$descriptor());
            FORWARD_CRITICAL = linker.downcallHandle(FlashSigNative.fsig_attention_forward_ex_buffers$address(),
                    FlashSigNative.fsig_attention_forward_ex_buffers$descriptor(), critical);
            BACKWARD = linker.downcallHandle(FlashSigNative.fsig_attention_backward_buffers$address(),
                    FlashSigNative.fsig_attention_backward_buffers$descriptor());
            BACKWARD_CRITICAL = linker.downcallHandle(FlashSigNative.fsig_attention_backward_buffers$address(),
                    FlashSigNative.fsig_attention_backward_buffers$descriptor(), critical);
            BACKWARD_EX = linker.downcallHandle(FlashSigNative.fsig_attention_backward_ex_buffers$address(),
                    FlashSigNative.fsig_attention_backward_ex_buffers$descriptor());
            BACKWARD_EX_CRITICAL = linker.downcallHandle(FlashSigNative.fsig_attention_backward_ex_buffers$address(),
                    FlashSigNative.fsig_attention_backward_ex_buffers$descriptor(), critical);
        }
    }

    // ---- attention ---------------------------------------------------------------------------------

    /** {@code out = attention(q, k, v)}. */
    public static void forward(AttentionSpec spec, Tensor q, Tensor k, Tensor v, Tensor out) {
        forward(spec, AttentionExtras.none(), q, k, v, out, null);
    }

    /**
     * {@code out = attention(q, k, v)}; for softmax, also the row log-sum-exp into {@code lse}
     * (fp32 {@code [B, Hq, Nq]}, +inf for rows with no allowed key), which backward needs.
     * {@code lse} may be null; it must be null for the other scores.
     */
    public static void forward(AttentionSpec spec, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse) {
        forward(spec, AttentionExtras.none(), q, k, v, out, lse);
    }

    /**
     * Gradients {@code dq, dk, dv} of the attention output, given {@code dout}, by recomputation.
     * Softmax needs the forward's {@code out} and {@code lse}; the pointwise scores need neither (pass
     * null). GQA/MQA: dk and dv are summed over the query heads of each group.
     */
    public static void backward(AttentionSpec spec, Tensor q, Tensor k, Tensor v, Tensor out, Tensor dout,
                                Tensor lse, Tensor dq, Tensor dk, Tensor dv) {
        backward(spec, AttentionExtras.none(), q, k, v, out, dout, lse, dq, dk, dv, null);
    }

    // ---- masks and positions (DESIGN.md §4 "Extensions") ---------------------------------------------

    /**
     * {@link #forward(AttentionSpec, Tensor, Tensor, Tensor, Tensor, Tensor)} with the ALiBi slopes,
     * bias, mask and block layout of {@code extras} (each optional; see {@link AttentionExtras}); the
     * scalar options (block sizes, strided, log-n) come from {@code spec}. The extension tensors are on
     * q's device (CPU or CUDA); {@code extras.stream()} queues a CUDA call on that stream. The linear scores
     * on CUDA use {@code extras.workspace()} when given (their segments' partial states: less work on long
     * sequences; see {@link BackwardWorkspace}); every other forward ignores it.
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
        // only the linear scores' forward uses a workspace (their segments' partial states)
        BackwardWorkspace ws = spec.score().isLinear() ? x.workspace() : null;
        if (ws != null) usableWorkspace(ws, q);
        writable(out, "out");
        if (lse != null) writable(lse, "lse");
        MemorySegment stream = streamOf(x);
        int status;
        if (ws == null || ws.byteSize() == 0) {
            status = forwardCall(spec.nativeParams(), spec, x, stream, q, k, v, out, lse);
        } else {
            synchronized (ws) { // the workspace's params slot, as in backward
                status = forwardCall(ws.params(spec.nativeParams()), spec, x, stream, q, k, v, out, lse);
            }
        }
        if (status != 0) throw nativeError(status);
    }

    /** The forward with params {@code p} (the spec's, or a workspace's copy): in place, or by the copy path. */
    private static int forwardCall(MemorySegment p, AttentionSpec spec, AttentionExtras x, MemorySegment stream,
                                   Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse) {
        boolean critical = critical(q, forwardFlops(q, k));
        if (critical || !(onHeap(q) || onHeap(k) || onHeap(v) || onHeap(out) || onHeap(lse) || onHeap(x)))
            return invokeForward(critical, p, spec, x, stream, q, k, v, out, lse, null);
        Object[] args = {q, k, v, out, lse, x.alibi(), x.bias(), x.mask(), x.blockLayout()};
        try (Arena scratch = Arena.ofConfined()) {
            MemorySegment[] d = scratchCopies(scratch, args, FORWARD_OUTPUTS);
            int status = invokeForward(false, p, spec, x, stream, q, k, v, out, lse, d);
            if (status == 0) copyBack(args, d, FORWARD_OUTPUTS);
            return status;
        }
    }

    /**
     * {@link #backward(AttentionSpec, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)}
     * with the tensors of {@code extras}, and the bias gradient: {@code dbias} (may be null) receives
     * dL/dbias = dS summed over the bias's broadcast dimensions (over every query row too for a bias
     * broadcast over Nq, such as a key-padding bias) — the bias's shape and dtype; every element is
     * written (0 where masked); deterministic. On a CUDA device a {@code dbias} broadcast over B, Hq or Nq
     * (any shape but the full {@code [B, Hq, Nq, Nk]}) is summed through {@code extras.workspace()}, which it
     * then needs: {@link #backwardWorkspaceBytes(AttentionSpec, Tensor, Tensor)} bytes, whatever the spec's
     * determinism; without it the call fails with {@link Status#BUFFER_TOO_SMALL} and writes nothing.
     *
     * <p>On CUDA, {@code extras.workspace()} selects the fast backward (one dK/dV kernel adding dQ with
     * atomics; see {@link BackwardWorkspace}) unless the spec is deterministic or {@code dbias} is given;
     * without it the two deterministic kernels run. The linear scores use it for their segments' partial
     * states (deterministic either way). The CPU ignores a workspace.
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
        BackwardWorkspace ws = x.workspace();
        if (ws != null) usableWorkspace(ws, q);
        writable(dq, "dq");
        writable(dk, "dk");
        writable(dv, "dv");
        if (dbias != null) writable(dbias, "dbias");
        MemorySegment stream = streamOf(x);
        int status;
        if (ws == null || ws.byteSize() == 0) {
            status = backwardCall(spec.nativeParams(), spec, x, stream, q, k, v, out, dout, lse, dq, dk, dv, dbias);
        } else {
            // the workspace's params slot is filled per call; one call at a time uses it (see BackwardWorkspace)
            synchronized (ws) {
                status = backwardCall(ws.params(spec.nativeParams()), spec, x, stream, q, k, v, out, dout, lse, dq, dk,
                        dv, dbias);
            }
        }
        if (status != 0) throw nativeError(status);
    }

    /**
     * Bytes of the workspace that the fast CUDA backward needs for problems like {@code q}'s under {@code spec}:
     * B·Hq·Nq·w·4 (an fp32 dQ, w = 64, 128 or 256: the narrowest kernel width ≥ d) for a CUDA q, a softmax or
     * pointwise score and a non-deterministic spec; 0 where a backward would use none (a CPU q, a deterministic
     * spec). The linear scores on CUDA: 526·(33K + 32)·4 bytes whatever the shape (K = 2d cosFormer, d
     * elu+1; 17.8 MB at d = 128 cosFormer), which serves their forward too. Reads q's shape, dtype and device only. See {@link BackwardWorkspace} and
     * {@link Cuda#allocateBackwardWorkspace(Arena, AttentionSpec, Tensor)}. The same as
     * {@link #backwardWorkspaceBytes(AttentionSpec, Tensor, Tensor)} with {@code dbias} null.
     */
    public static long backwardWorkspaceBytes(AttentionSpec spec, Tensor q) {
        return backwardWorkspaceBytes(spec, q, null);
    }

    /**
     * Bytes of the workspace a backward with the bias gradient {@code dbias} needs for problems like
     * {@code q}'s under {@code spec} ({@code dbias} null: {@link #backwardWorkspaceBytes(AttentionSpec,
     * Tensor)}). On CUDA a {@code dbias} broadcast over B, Hq or Nq is summed in two deterministic steps
     * through the workspace, whatever the spec's determinism: B·Hq·G·Nk·4 bytes of fp32 partial sums, G = Nq
     * when dbias keeps Nq and ⌈Nq/16⌉ when it broadcasts Nq (a key-padding dbias {@code [B, 1, 1, Nk]} needs
     * B·Hq·⌈Nq/16⌉·Nk·4). A full-shaped dbias {@code [B, Hq, Nq, Nk]}, and any dbias with a CPU q, needs
     * none: 0. Reads q's and dbias's shapes and q's device only (not their data); a dbias that is not
     * {@code [B|1, Hq|1, Nq|1, Nk]} for q fails with {@link Status#INVALID_SHAPE} naming it.
     */
    public static long backwardWorkspaceBytes(AttentionSpec spec, Tensor q, Tensor dbias) {
        NativeLibrary.load();
        checkSpec(spec);
        if (q == null) throw new FlashSigException(Status.NULL_ARGUMENT, "q is null");
        try (Arena tmp = Arena.ofConfined()) {
            MemorySegment bytes = tmp.allocate(ValueLayout.JAVA_LONG);
            int status;
            try {
                status = FlashSigNative.fsig_attention_backward_workspace_size_ex(spec.nativeParams(), q.descriptor,
                        dbias == null ? MemorySegment.NULL : dbias.descriptor, bytes);
            } finally {
                java.lang.ref.Reference.reachabilityFence(spec);
                java.lang.ref.Reference.reachabilityFence(q);
                java.lang.ref.Reference.reachabilityFence(dbias);
            }
            if (status != 0) throw nativeError(status);
            return bytes.get(ValueLayout.JAVA_LONG, 0);
        }
    }

    /** The backward with params {@code p} (the spec's, or a workspace's copy): in place, or by the copy path. */
    private static int backwardCall(MemorySegment p, AttentionSpec spec, AttentionExtras x, MemorySegment stream,
                                    Tensor q, Tensor k, Tensor v, Tensor out, Tensor dout, Tensor lse, Tensor dq,
                                    Tensor dk, Tensor dv, Tensor dbias) {
        boolean critical = critical(q, 2.5 * forwardFlops(q, k));
        if (critical || !(onHeap(q) || onHeap(k) || onHeap(v) || onHeap(out) || onHeap(dout) || onHeap(lse)
                || onHeap(dq) || onHeap(dk) || onHeap(dv) || onHeap(dbias) || onHeap(x)))
            return invokeBackward(critical, p, spec, x, stream, q, k, v, out, dout, lse, dq, dk, dv, dbias, null);
        Object[] args = {q, k, v, out, dout, lse, dq, dk, dv, x.alibi(), x.bias(), x.mask(), x.blockLayout(), dbias};
        try (Arena scratch = Arena.ofConfined()) {
            MemorySegment[] d = scratchCopies(scratch, args, BACKWARD_OUTPUTS);
            int status = invokeBackward(false, p, spec, x, stream, q, k, v, out, dout, lse, dq, dk, dv, dbias, d);
            if (status == 0) copyBack(args, d, BACKWARD_OUTPUTS);
            return status;
        }
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
        if (x.mask() != null) usableSegment(x.mask().segment(), "mask");
        if (x.blockLayout() != null) usableSegment(x.blockLayout().segment(), "block_layout");
    }

    /**
     * What Java can see about a workspace: its arena is open and usable by this thread, and it is on the
     * call's device. Its size, alignment and disjointness are the native library's to check.
     */
    private static void usableWorkspace(BackwardWorkspace ws, Tensor q) {
        usableSegment(ws.scopeSegment(), "workspace");
        if (!ws.device().equals(q.device()))
            throw new FlashSigException(Status.INVALID_DEVICE, "workspace is on " + ws.device() + " but q is on "
                    + q.device() + ": a workspace serves calls on its own device");
    }

    /** The extras' CUDA stream handle, or NULL (the default stream; CPU calls need NULL). */
    private static MemorySegment streamOf(AttentionExtras x) {
        return x.stream() == null ? MemorySegment.NULL : x.stream().handle();
    }

    // ---- library -----------------------------------------------------------------------------------

    /**
     * What this build and machine support.
     *
     * @param cpuIsa          "avx2", "avx512", "avx512bf16" (AVX-512 with bf16 dot products for bf16
     *                        tensors) or "amx" (bf16 tensors' products by AMX tiles) on x86-64, "neon" on
     *                        AArch64: the CPU kernels in use
     * @param cpuThreads      threads the CPU backend uses now
     * @param cpuDtypes       dtypes with CPU kernels
     * @param cpuMinHeadDim   the CPU supports every head dim in [min, max]
     * @param cpuMaxHeadDim   see cpuMinHeadDim
     * @param cudaCompiled    whether the library contains CUDA code
     * @param cudaDeviceCount usable CUDA devices now (0 without a driver)
     * @param cudaDtypes      dtypes with CUDA kernels
     * @param cudaHeadDims    the CUDA forward kernels' head dims (64, 128, 256); every multiple of 8 up to the
     *                        largest runs, on the narrowest kernel that holds it (d = 96 costs what d = 128 does)
     * @param cudaBackwardMaxHeadDim the CUDA backward runs every multiple of 8 up to this (256, as the forward; 0
     *                        without CUDA)
     */
    public record Capabilities(String cpuIsa, int cpuThreads, Set<DType> cpuDtypes, int cpuMinHeadDim,
                               int cpuMaxHeadDim, boolean cudaCompiled, int cudaDeviceCount, Set<DType> cudaDtypes,
                               List<Integer> cudaHeadDims, int cudaBackwardMaxHeadDim) {
        /** Whether attention can run on a CUDA device now. */
        public boolean cudaAvailable() {
            return cudaDeviceCount > 0 && !cudaDtypes.isEmpty();
        }

        /**
         * Whether this build's CUDA attention forward (softmax and pointwise scores) takes head dim {@code d}:
         * a multiple of 8 up to the largest of {@link #cudaHeadDims()} (the linear scores take 64 and 128).
         * Says nothing of a device being present ({@link #cudaAvailable()}).
         */
        public boolean cudaRunsHeadDim(int d) {
            return d > 0 && d % 8 == 0 && cudaHeadDims.stream().anyMatch(width -> d <= width);
        }

        /**
         * Whether this build's CUDA attention backward takes head dim {@code d}: a multiple of 8 up to
         * {@link #cudaBackwardMaxHeadDim()} (a separate bound: a build whose backward is narrower than its forward
         * runs the wider head dims' backward on CPU tensors only).
         */
        public boolean cudaRunsBackwardHeadDim(int d) {
            return cudaRunsHeadDim(d) && d <= cudaBackwardMaxHeadDim;
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
            String isaName = isa == FlashSigNative.FSIG_CPU_ISA_AMX() ? "amx"
                    : isa == FlashSigNative.FSIG_CPU_ISA_AVX512_BF16() ? "avx512bf16"
                    : isa == FlashSigNative.FSIG_CPU_ISA_AVX512() ? "avx512"
                    : isa == FlashSigNative.FSIG_CPU_ISA_AVX2() ? "avx2"
                    : isa == FlashSigNative.FSIG_CPU_ISA_NEON() ? "neon" : "isa" + isa;
            List<Integer> dims = new ArrayList<>();
            for (int i = 0; i < fsig_capabilities.cuda_head_dim_count(c); i++)
                dims.add(fsig_capabilities.cuda_head_dims(c, i));
            return new Capabilities(isaName, fsig_capabilities.cpu_threads(c),
                    dtypes(fsig_capabilities.cpu_dtypes(c)), fsig_capabilities.cpu_min_head_dim(c),
                    fsig_capabilities.cpu_max_head_dim(c), fsig_capabilities.cuda_compiled(c) != 0,
                    fsig_capabilities.cuda_device_count(c), dtypes(fsig_capabilities.cuda_dtypes(c)),
                    Collections.unmodifiableList(dims), fsig_capabilities.cuda_backward_max_head_dim(c));
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

    /**
     * Frees the CPU backend's idle working buffers now. Buffers of 1 MiB or more (packed K and V, dQ
     * accumulators, worker scratch) are kept for the next call, process-wide, at most 256 MiB of them idle,
     * since allocating them afresh costs a page fault per page on every call; those of calls still running
     * join the cache when the calls end. Each calling thread's scratch block under 1 MiB stays until the
     * thread ends.
     */
    public static void releaseCachedMemory() {
        NativeLibrary.load();
        int status = FlashSigNative.fsig_release_cached_memory();
        if (status != 0) throw nativeError(status);
    }

    /** The native library's version, "MAJOR.MINOR.PATCH". */
    public static String version() {
        NativeLibrary.load();
        return FlashSigNative.fsig_version_string().getString(0);
    }

    // ---- internals ---------------------------------------------------------------------------------

    /**
     * Whether a call runs as a critical downcall (heap arrays in place, the garbage collector held off): CPU
     * calls of at most {@code criticalMaxFlops}. Never a CUDA call: its first use sets up the runtime and
     * loads kernels, and any launch may wait for room in the stream's queue — far from the "extremely short"
     * that {@link java.lang.foreign.Linker.Option#critical} requires.
     */
    private static boolean critical(Tensor q, double work) {
        return q.device().isCpu() && work <= criticalMaxFlops;
    }

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

    /** Whether an argument (null = absent) lives on the Java heap, so the copy path may need to copy it. */
    private static boolean onHeap(Tensor t) {
        return t != null && !t.segment().isNative();
    }

    private static boolean onHeap(Mask m) {
        return m != null && !m.segment().isNative();
    }

    private static boolean onHeap(AttentionExtras x) {
        return onHeap(x.alibi()) || onHeap(x.bias()) || onHeap(x.mask()) || onHeap(x.blockLayout());
    }

    private static MemorySegment desc(Tensor t) {
        return t == null ? MemorySegment.NULL : t.descriptor;
    }

    private static MemorySegment desc(Mask m) {
        return m == null ? MemorySegment.NULL : m.descriptor;
    }

    /** Argument {@code i}'s data: its own segment, or its stand-in in {@code scratch} (the copy path). */
    private static MemorySegment data(Tensor t, MemorySegment[] scratch, int i) {
        return scratch != null ? scratch[i] : t == null ? MemorySegment.NULL : t.segment();
    }

    private static MemorySegment data(Mask m, MemorySegment[] scratch, int i) {
        return scratch != null ? scratch[i] : m == null ? MemorySegment.NULL : m.segment();
    }

    /** 4·B·Hq·Nq·Nk·d, or 0 when the shapes are not attention shapes (the native call then says why). */
    private static double forwardFlops(Tensor q, Tensor k) {
        if (q.rank() != 4 || k.rank() != 4) return 0;
        return 4.0 * q.shape(0) * q.shape(2) * q.shape(1) * k.shape(1) * q.shape(3);
    }

    // The copy path's Object[] follows the argument orders of the _ex_buffers entry points — forward:
    // q, k, v, out, lse, alibi_slopes, bias, mask, block_layout; backward: q, k, v, out, dout, lse, dq,
    // dk, dv, alibi_slopes, bias, mask, block_layout, dbias. The outputs' indices:
    private static final int[] FORWARD_OUTPUTS = {3, 4};
    private static final int[] BACKWARD_OUTPUTS = {6, 7, 8, 13};

    /**
     * The one forward downcall (the plain call is this with no extensions). Arguments are passed one by
     * one and each handle is a constant at its call site, so a call allocates nothing and the JIT can
     * inline the downcall; {@code scratch} (the copy path) replaces every data segment, else null.
     */
    private static int invokeForward(boolean critical, MemorySegment p, AttentionSpec spec, AttentionExtras x,
                                     MemorySegment stream, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse,
                                     MemorySegment[] scratch) {
        MemorySegment qd = data(q, scratch, 0), kd = data(k, scratch, 1), vd = data(v, scratch, 2);
        MemorySegment outd = data(out, scratch, 3), lsed = data(lse, scratch, 4);
        MemorySegment alibid = data(x.alibi(), scratch, 5), biasd = data(x.bias(), scratch, 6);
        MemorySegment maskd = data(x.mask(), scratch, 7), layoutd = data(x.blockLayout(), scratch, 8);
        try {
            return critical
                    ? (int) Handles.FORWARD_CRITICAL.invokeExact(p, q.descriptor, k.descriptor, v.descriptor,
                            out.descriptor, desc(lse), desc(x.alibi()), desc(x.bias()), desc(x.mask()),
                            desc(x.blockLayout()), stream, qd, kd, vd, outd, lsed, alibid, biasd, maskd, layoutd)
                    : (int) Handles.FORWARD.invokeExact(p, q.descriptor, k.descriptor, v.descriptor,
                            out.descriptor, desc(lse), desc(x.alibi()), desc(x.bias()), desc(x.mask()),
                            desc(x.blockLayout()), stream, qd, kd, vd, outd, lsed, alibid, biasd, maskd, layoutd);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new AssertionError(t);
        } finally {
            // the descriptors (and params) are unscoped views of memory these objects own (x holds its tensors)
            java.lang.ref.Reference.reachabilityFence(spec);
            java.lang.ref.Reference.reachabilityFence(x);
            java.lang.ref.Reference.reachabilityFence(q);
            java.lang.ref.Reference.reachabilityFence(k);
            java.lang.ref.Reference.reachabilityFence(v);
            java.lang.ref.Reference.reachabilityFence(out);
            java.lang.ref.Reference.reachabilityFence(lse);
        }
    }

    /**
     * The one backward downcall, as {@link #invokeForward} (for the two entry points see Handles), with
     * params {@code p}: the spec's, or a workspace's slot (an arena segment: the downcall holds its arena open).
     */
    private static int invokeBackward(boolean critical, MemorySegment p, AttentionSpec spec, AttentionExtras x,
                                      MemorySegment stream, Tensor q, Tensor k, Tensor v, Tensor out, Tensor dout,
                                      Tensor lse, Tensor dq, Tensor dk, Tensor dv, Tensor dbias,
                                      MemorySegment[] scratch) {
        MemorySegment qd = data(q, scratch, 0), kd = data(k, scratch, 1), vd = data(v, scratch, 2);
        MemorySegment outd = data(out, scratch, 3), doutd = data(dout, scratch, 4), lsed = data(lse, scratch, 5);
        MemorySegment dqd = data(dq, scratch, 6), dkd = data(dk, scratch, 7), dvd = data(dv, scratch, 8);
        MemorySegment alibid = data(x.alibi(), scratch, 9), biasd = data(x.bias(), scratch, 10);
        MemorySegment maskd = data(x.mask(), scratch, 11), layoutd = data(x.blockLayout(), scratch, 12);
        MemorySegment dbiasd = data(dbias, scratch, 13);
        try {
            if (x.isEmpty() && dbias == null) // see Handles
                return critical
                        ? (int) Handles.BACKWARD_CRITICAL.invokeExact(p, q.descriptor, k.descriptor, v.descriptor,
                                desc(out), dout.descriptor, desc(lse), dq.descriptor, dk.descriptor, dv.descriptor,
                                stream, qd, kd, vd, outd, doutd, lsed, dqd, dkd, dvd)
                        : (int) Handles.BACKWARD.invokeExact(p, q.descriptor, k.descriptor, v.descriptor,
                                desc(out), dout.descriptor, desc(lse), dq.descriptor, dk.descriptor, dv.descriptor,
                                stream, qd, kd, vd, outd, doutd, lsed, dqd, dkd, dvd);
            return backwardEx(critical ? Handles.BACKWARD_EX_CRITICAL : Handles.BACKWARD_EX, p, q.descriptor,
                    k.descriptor, v.descriptor, desc(out), dout.descriptor, desc(lse), dq.descriptor, dk.descriptor,
                    dv.descriptor, desc(x.alibi()), desc(x.bias()), desc(x.mask()), desc(x.blockLayout()),
                    desc(dbias), stream, qd, kd, vd, outd, doutd, lsed, dqd, dkd, dvd, alibid, biasd, maskd, layoutd,
                    dbiasd);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new AssertionError(t);
        } finally {
            java.lang.ref.Reference.reachabilityFence(spec);
            java.lang.ref.Reference.reachabilityFence(x);
            java.lang.ref.Reference.reachabilityFence(q);
            java.lang.ref.Reference.reachabilityFence(k);
            java.lang.ref.Reference.reachabilityFence(v);
            java.lang.ref.Reference.reachabilityFence(out);
            java.lang.ref.Reference.reachabilityFence(dout);
            java.lang.ref.Reference.reachabilityFence(lse);
            java.lang.ref.Reference.reachabilityFence(dq);
            java.lang.ref.Reference.reachabilityFence(dk);
            java.lang.ref.Reference.reachabilityFence(dv);
            java.lang.ref.Reference.reachabilityFence(dbias);
        }
    }

    /** The _ex backward downcall, in a method of its own so that C2 failing on it (see Handles) spares invokeBackward. */
    private static int backwardEx(MethodHandle h, MemorySegment p, MemorySegment q, MemorySegment k, MemorySegment v,
                                  MemorySegment out, MemorySegment dout, MemorySegment lse, MemorySegment dq,
                                  MemorySegment dk, MemorySegment dv, MemorySegment alibi, MemorySegment bias,
                                  MemorySegment mask, MemorySegment layout, MemorySegment dbias, MemorySegment stream,
                                  MemorySegment qd, MemorySegment kd, MemorySegment vd, MemorySegment outd,
                                  MemorySegment doutd, MemorySegment lsed, MemorySegment dqd, MemorySegment dkd,
                                  MemorySegment dvd, MemorySegment alibid, MemorySegment biasd, MemorySegment maskd,
                                  MemorySegment layoutd, MemorySegment dbiasd) throws Throwable {
        return (int) h.invokeExact(p, q, k, v, out, dout, lse, dq, dk, dv, alibi, bias, mask, layout, dbias, stream,
                qd, kd, vd, outd, doutd, lsed, dqd, dkd, dvd, alibid, biasd, maskd, layoutd, dbiasd);
    }

    /**
     * Off-heap scratch for the heap tensors of a copy-path call (inputs copied in). Heap segments that
     * share bytes of one array share one scratch region, at the same offsets from each other as in the
     * array, so the native library's aliasing rule (per element) sees them as they are: fused views into
     * one array are accepted, an output sharing an element with another tensor is refused, as off-heap.
     */
    private static MemorySegment[] scratchCopies(Arena scratch, Object[] args, int[] outputs) {
        int n = args.length;
        MemorySegment[] seg = new MemorySegment[n];
        int[] group = new int[n];
        for (int i = 0; i < n; i++) {
            seg[i] = args[i] == null ? MemorySegment.NULL
                    : args[i] instanceof Tensor t ? t.segment() : ((Mask) args[i]).segment();
            group[i] = i;
        }
        // groups of overlapping heap segments (asOverlappingSlice compares the backing arrays too)
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++)
                if (onHeapSegment(args[i], seg[i]) && onHeapSegment(args[j], seg[j])
                        && seg[i].asOverlappingSlice(seg[j]).isPresent()) {
                    int gi = root(group, i), gj = root(group, j);
                    group[Math.max(gi, gj)] = Math.min(gi, gj);
                }
        MemorySegment[] d = new MemorySegment[n];
        for (int i = 0; i < n; i++) {
            if (!onHeapSegment(args[i], seg[i])) {
                d[i] = seg[i];
                continue;
            }
            if (root(group, i) != i) continue; // placed with its group's first member
            // a heap segment's address() is its byte offset in the array
            long lo = Long.MAX_VALUE, hi = Long.MIN_VALUE;
            for (int j = i; j < n; j++)
                if (onHeapSegment(args[j], seg[j]) && root(group, j) == i) {
                    lo = Math.min(lo, seg[j].address());
                    hi = Math.max(hi, seg[j].address() + seg[j].byteSize());
                }
            MemorySegment region = scratch.allocate(hi - lo, 64);
            for (int j = i; j < n; j++)
                if (onHeapSegment(args[j], seg[j]) && root(group, j) == i)
                    d[j] = region.asSlice(seg[j].address() - lo, seg[j].byteSize());
        }
        for (int i = 0; i < n; i++)
            if (onHeapSegment(args[i], seg[i]) && !isOutput(i, outputs)) d[i].copyFrom(seg[i]);
        return d;
    }

    private static boolean onHeapSegment(Object arg, MemorySegment s) {
        return arg != null && !s.isNative();
    }

    private static int root(int[] group, int i) {
        while (group[i] != i) i = group[i];
        return i;
    }

    private static void copyBack(Object[] args, MemorySegment[] d, int[] outputs) {
        for (int o : outputs)
            if (args[o] instanceof Tensor t && !t.segment().isNative()) t.copyElements(d[o], t.segment());
    }

    private static boolean isOutput(int i, int[] outputs) {
        for (int o : outputs) if (o == i) return true;
        return false;
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
