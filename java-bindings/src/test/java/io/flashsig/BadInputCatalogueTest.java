package io.flashsig;

import io.flashsig.FlashSigException.Status;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * A catalogue of invalid calls (beyond BadInputTest): each names the status, the words its message must
 * contain (the argument and the rule), and runs on a fresh fixture whose every buffer — inputs, outputs
 * and 64 guard bytes on both sides — is compared byte for byte after the throw. Outputs hold a poison
 * pattern, so a write of any value shows.
 */
class BadInputCatalogueTest {
    static final long B = 2, NQ = 5, NK = 7, HQ = 4, HK = 2, D = 8;
    static final long[] QS = {B, NQ, HQ, D}, KS = {B, NK, HK, D}, LS = {B, HQ, NQ};
    static final int GUARD = 64;
    static final byte POISON = (byte) 0xCD;

    /** The tensors of one call, each in a block of its own with guards; every block is compared after the call. */
    static final class Fx implements AutoCloseable {
        final Arena arena = Arena.ofConfined();
        final DType dt;
        final List<MemorySegment> blocks = new ArrayList<>();
        /** Each block's bytes as set up (poison, or input values once filled): what it must still hold. */
        final Map<MemorySegment, byte[]> expected = new java.util.IdentityHashMap<>();
        final Tensor q, k, v, out, lse, dout, dq, dk, dv;
        private int seed = 1;

        Fx(DType dt) {
            this.dt = dt;
            q = in(dt, QS);
            k = in(dt, KS);
            v = in(dt, KS);
            dout = in(dt, QS);
            out = poisoned(dt, QS);
            lse = poisoned(DType.FP32, LS);
            dq = poisoned(dt, QS);
            dk = poisoned(dt, KS);
            dv = poisoned(dt, KS);
        }

        /** A guarded off-heap block; returns the data slice of {@code bytes} at {@code GUARD + skew}. */
        MemorySegment block(long bytes, long skew) {
            MemorySegment whole = arena.allocate(GUARD + skew + bytes + GUARD, 64);
            whole.fill(POISON);
            blocks.add(whole);
            expected.put(whole, whole.toArray(ValueLayout.JAVA_BYTE));
            return whole.asSlice(GUARD + skew, bytes);
        }

        /** A guarded heap block (a float[]), data slice at {@code GUARD + skew}. */
        MemorySegment heapBlock(long bytes, long skew) {
            MemorySegment whole = MemorySegment.ofArray(new float[(int) ((GUARD * 2 + skew + bytes + 3) / 4)]);
            whole.fill(POISON);
            blocks.add(whole);
            expected.put(whole, whole.toArray(ValueLayout.JAVA_BYTE));
            return whole.asSlice(GUARD + skew, bytes);
        }

        /** An input: contiguous, finite values. */
        Tensor in(DType t, long... shape) {
            Tensor x = Tensor.wrap(block(bytes(t, shape), 0), t, shape, Tensor.contiguousStrides(shape));
            fill(x);
            return x;
        }

        /** An output: contiguous, poison. */
        Tensor poisoned(DType t, long... shape) {
            return Tensor.wrap(block(bytes(t, shape), 0), t, shape, Tensor.contiguousStrides(shape));
        }

        /** A tensor over a block of {@code bytes} bytes at {@code skew}, with the given strides. */
        Tensor custom(DType t, long[] shape, long[] strides, long bytes, long skew) {
            return Tensor.wrap(block(bytes, skew), t, shape, strides);
        }

        void fill(Tensor x) {
            float[] f = new float[(int) x.elementCount()];
            for (int i = 0; i < f.length; i++) f[i] = ((seed = seed * 1103515245 + 12345) >>> 16) % 200 / 100f - 1;
            x.copyFrom(f);
            for (MemorySegment b : blocks) expected.put(b, b.toArray(ValueLayout.JAVA_BYTE)); // set-up only
        }

        @Override
        public void close() {
            arena.close();
        }
    }

    static long bytes(DType t, long... shape) {
        return Arrays.stream(shape).reduce(1, (a, b) -> a * b) * t.byteSize();
    }

    @FunctionalInterface
    interface BadCall {
        void run(Fx fx);
    }

    record Case(String name, DType dtype, Status status, String[] fragments, BadCall call) {
        @Override
        public String toString() {
            return name;
        }
    }

    static final AttentionSpec SOFTMAX = AttentionSpec.softmax(), RELU = AttentionSpec.of(Score.RELU),
            SIGMOID = AttentionSpec.of(Score.SIGMOID);

    static final List<Case> CASES = new ArrayList<>();

    static void add(String name, Status status, BadCall call, String... fragments) {
        CASES.add(new Case(name, DType.FP32, status, fragments, call));
    }

    static void add(String name, DType dt, Status status, BadCall call, String... fragments) {
        CASES.add(new Case(name, dt, status, fragments, call));
    }

    static void fwd(Fx f, AttentionSpec s, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse) {
        FlashSig.forward(s, q, k, v, out, lse);
    }

    static void bwd(Fx f, AttentionSpec s, Tensor out, Tensor dout, Tensor lse, Tensor dq, Tensor dk, Tensor dv) {
        FlashSig.backward(s, f.q, f.k, f.v, out, dout, lse, dq, dk, dv);
    }

    static {
        // ---- rank and dimensions ---------------------------------------------------------------------
        add("q rank 3", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.in(DType.FP32, B, NQ, HQ * D), f.k, f.v, f.out, f.lse),
                "q.ndim is 3 but must be 4");
        add("out rank 3", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.poisoned(DType.FP32, B, NQ, HQ * D), f.lse),
                "out.ndim is 3 but must be 4");
        add("lse rank 4", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.out, f.poisoned(DType.FP32, B, HQ, NQ, 1)),
                "lse.ndim is 4 but must be 3");
        add("dq rank 2", Status.INVALID_SHAPE, f -> bwd(f, SOFTMAX, f.out, f.dout, f.lse, f.poisoned(DType.FP32, B * NQ * HQ, D), f.dk, f.dv),
                "dq.ndim is 2 but must be 4");
        add("q batch 0", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.in(DType.FP32, 0, NQ, HQ, D), f.k, f.v, f.out, null),
                "q.shape[0] is 0", "must be >= 1");
        add("k seq 0", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.in(DType.FP32, B, 0, HK, D), f.v, f.out, null),
                "k.shape[1] is 0", "must be >= 1");
        add("q heads 0", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.in(DType.FP32, B, NQ, 0, D), f.k, f.v, f.out, null),
                "q.shape[2] is 0");
        add("v head_dim -1", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.k,
                Tensor.wrap(f.v.segment(), DType.FP32, new long[] {B, NK, HK, -1}, new long[] {NK * HK * D, HK * D, D, 1}), f.out, null),
                "v.shape[3] is -1");
        add("dk seq Long.MIN_VALUE", Status.INVALID_SHAPE, f -> bwd(f, RELU, null, f.dout, null, f.dq,
                Tensor.wrap(f.dk.segment(), DType.FP32, new long[] {B, Long.MIN_VALUE, HK, D}, Tensor.contiguousStrides(KS)), f.dv),
                "dk.shape[1] is -9223372036854775808");
        add("Hq % Hk != 0", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.in(DType.FP32, B, NQ, 3, D), f.k, f.v,
                f.poisoned(DType.FP32, B, NQ, 3, D), null), "heads_q = 3", "multiple of k.shape[2] (heads_k = 2)");
        add("Hk > Hq", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.in(DType.FP32, B, NQ, 1, D), f.k, f.v,
                f.poisoned(DType.FP32, B, NQ, 1, D), null), "heads_q = 1", "heads_k = 2");
        add("k batch", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.in(DType.FP32, 1, NK, HK, D), f.v, f.out, null),
                "k.shape[0] (batch) is 1 but must be 2, as in q");
        add("k head_dim", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.in(DType.FP32, B, NK, HK, 9), f.v, f.out, null),
                "k.shape[3] (head_dim) is 9 but must be 8, as in q");
        add("v seq", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.in(DType.FP32, B, NK - 1, HK, D), f.out, null),
                "v.shape[1] (seq_k) is 6 but must be 7, as in k");
        add("v heads", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.in(DType.FP32, B, NK, 1, D), f.out, null),
                "v.shape[2] (heads_k) is 1 but must be 2, as in k");
        add("v head_dim", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.in(DType.FP32, B, NK, HK, 4), f.out, null),
                "v.shape[3] (head_dim) is 4 but must be 8, as in k");
        add("out batch", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.poisoned(DType.FP32, 1, NQ, HQ, D), null),
                "out.shape[0] (batch) is 1 but must be 2, as in q");
        add("out seq", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.poisoned(DType.FP32, B, NK, HQ, D), null),
                "out.shape[1] (seq_q) is 7 but must be 5, as in q");
        add("out heads (kv heads)", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.poisoned(DType.FP32, B, NQ, HK, D), null),
                "out.shape[2] (heads_q) is 2 but must be 4, as in q");
        add("out head_dim", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.poisoned(DType.FP32, B, NQ, HQ, 16), null),
                "out.shape[3] (head_dim) is 16 but must be 8, as in q");
        add("lse batch", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.out, f.poisoned(DType.FP32, 1, HQ, NQ)),
                "lse.shape[0] (batch) is 1 but must be 2");
        add("lse heads = Hk", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.out, f.poisoned(DType.FP32, B, HK, NQ)),
                "lse.shape[1] (heads_q) is 2 but must be 4");
        add("lse seq = Nk", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.out, f.poisoned(DType.FP32, B, HQ, NK)),
                "lse.shape[2] (seq_q) is 7 but must be 5");
        add("dout seq", Status.INVALID_SHAPE, f -> bwd(f, SOFTMAX, f.out, f.in(DType.FP32, B, NK, HQ, D), f.lse, f.dq, f.dk, f.dv),
                "dout.shape[1] (seq_q) is 7 but must be 5, as in q");
        add("dq head_dim", Status.INVALID_SHAPE, f -> bwd(f, SOFTMAX, f.out, f.dout, f.lse, f.poisoned(DType.FP32, B, NQ, HQ, 7), f.dk, f.dv),
                "dq.shape[3] (head_dim) is 7 but must be 8, as in q");
        add("dk shaped like q", Status.INVALID_SHAPE, f -> bwd(f, SOFTMAX, f.out, f.dout, f.lse, f.dq, f.poisoned(DType.FP32, QS), f.dv),
                "dk.shape[1] (seq_k) is 5 but must be 7, as in k");
        add("dv heads", Status.INVALID_SHAPE, f -> bwd(f, SOFTMAX, f.out, f.dout, f.lse, f.dq, f.dk, f.poisoned(DType.FP32, B, NK, HQ, D)),
                "dv.shape[2] (heads_k) is 4 but must be 2, as in k");
        add("backward out seq", Status.INVALID_SHAPE, f -> bwd(f, SOFTMAX, f.in(DType.FP32, B, NQ + 1, HQ, D), f.dout, f.lse, f.dq, f.dk, f.dv),
                "out.shape[1] (seq_q) is 6 but must be 5");
        add("backward lse heads", Status.INVALID_SHAPE, f -> bwd(f, SOFTMAX, f.out, f.dout, f.in(DType.FP32, B, 1, NQ), f.dq, f.dk, f.dv),
                "lse.shape[1] (heads_q) is 1 but must be 4");
        // a broadcast q of 2^40 rows over 32 bytes is a valid input, but no out can match it here
        add("2^40 query rows (zero strides)", Status.INVALID_SHAPE, f -> fwd(f, SOFTMAX,
                f.custom(DType.FP32, new long[] {B, 1L << 40, HQ, D}, new long[] {0, 0, 0, 1}, D * 4, 0), f.k, f.v, f.out, null),
                "out.shape[1] (seq_q) is 5 but must be 1099511627776");

        // ---- overflow, strides, sizes ---------------------------------------------------------------
        add("shape product overflows (elements)", Status.INVALID_STRIDE, f -> fwd(f, SOFTMAX, f.q,
                f.custom(DType.FP32, new long[] {B, 1L << 40, HK, D}, new long[] {0, 1L << 40, D, 1}, 64, 0), f.v, f.out, null),
                "k: shape and strides address more than 2^63 elements");
        add("contiguous strides of a 2^62-element tensor overflow", Status.INVALID_STRIDE, f -> fwd(f, SOFTMAX, f.q, f.k,
                f.custom(DType.FP32, new long[] {B, 1L << 31, 1L << 31, D}, Tensor.contiguousStrides(B, 1L << 31, 1L << 31, D), 64, 0),
                f.out, null), "v: shape and strides address more than 2^63");
        add("extent overflows in bytes", Status.INVALID_STRIDE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v,
                f.custom(DType.FP32, new long[] {1, 1L << 61, 1, 1}, new long[] {1, 1, 1, 1}, 64, 0), null),
                "out: shape and strides address more than 2^63 bytes");
        add("stride Long.MAX_VALUE", Status.INVALID_STRIDE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v,
                f.custom(DType.FP32, QS, new long[] {Long.MAX_VALUE, HQ * D, D, 1}, bytes(DType.FP32, QS), 0), null),
                "out: shape and strides address more than 2^63");
        add("negative stride", Status.INVALID_STRIDE, f -> fwd(f, SOFTMAX, f.q,
                Tensor.wrap(f.k.segment(), DType.FP32, KS, new long[] {-1, HK * D, D, 1}), f.v, f.out, null),
                "k.strides[0] is -1 but strides must be >= 0");
        add("negative stride on lse", Status.INVALID_STRIDE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.out,
                Tensor.wrap(f.lse.segment(), DType.FP32, LS, new long[] {HQ * NQ, NQ, -1})), "lse.strides[2] is -1");
        add("strides step past the end", Status.BUFFER_TOO_SMALL, f -> fwd(f, SOFTMAX, f.q, f.k,
                Tensor.wrap(f.v.segment(), DType.FP32, KS, new long[] {NK * HK * D, 2 * HK * D, D, 1}), f.out, null),
                "v: shape and strides reach 1280 bytes but capacity_bytes is 896");
        add("out strides step past the end", Status.BUFFER_TOO_SMALL, f -> fwd(f, SOFTMAX, f.q, f.k, f.v,
                Tensor.wrap(f.out.segment(), DType.FP32, QS, new long[] {NQ * HQ * D + 1, HQ * D, D, 1}), null),
                "out: shape and strides reach 1284 bytes but capacity_bytes is 1280");
        add("q one byte short", Status.BUFFER_TOO_SMALL, f -> fwd(f, SOFTMAX,
                Tensor.wrap(f.q.segment().asSlice(0, 1279), DType.FP32, QS, Tensor.contiguousStrides(QS)), f.k, f.v, f.out, null),
                "q: shape and strides reach 1280 bytes but capacity_bytes is 1279");
        add("lse one element short", Status.BUFFER_TOO_SMALL, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.out,
                Tensor.wrap(f.lse.segment().asSlice(0, 156), DType.FP32, LS, Tensor.contiguousStrides(LS))),
                "lse: shape and strides reach 160 bytes but capacity_bytes is 156");
        add("dv one byte short (fp16)", DType.FP16, Status.BUFFER_TOO_SMALL, f -> bwd(f, RELU, null, f.dout, null, f.dq, f.dk,
                Tensor.wrap(f.dv.segment().asSlice(0, 447), DType.FP16, KS, Tensor.contiguousStrides(KS))),
                "dv: shape and strides reach 448 bytes but capacity_bytes is 447");
        add("empty segment", Status.BUFFER_TOO_SMALL, f -> fwd(f, SOFTMAX, f.q, f.k, f.v,
                Tensor.wrap(f.block(0, 0), DType.FP32, QS, Tensor.contiguousStrides(QS)), null), "out:", "capacity_bytes is 0");
        add("foreign segment one byte short", Status.BUFFER_TOO_SMALL, f -> fwd(f, SOFTMAX, f.q,
                Tensor.wrap(MemorySegment.ofAddress(f.k.segment().address()).reinterpret(895), DType.FP32, KS, Tensor.contiguousStrides(KS)),
                f.v, f.out, null), "k: shape and strides reach 896 bytes but capacity_bytes is 895");
        add("dq writes an element twice", Status.INVALID_STRIDE, f -> bwd(f, SOFTMAX, f.out, f.dout, f.lse,
                Tensor.wrap(f.dq.segment(), DType.FP32, QS, new long[] {NQ * HQ * D, HQ * D, 0, 1}), f.dk, f.dv),
                "dq.strides[2] = 0 makes elements overlap");
        add("dk rows interleaved", Status.INVALID_STRIDE, f -> bwd(f, RELU, null, f.dout, null, f.dq,
                Tensor.wrap(f.dk.segment(), DType.FP32, KS, new long[] {NK * HK * D, HK * D, D / 2, 1}), f.dv),
                "dk.strides[", "makes elements overlap");
        add("lse broadcast as an output", Status.INVALID_STRIDE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.out,
                Tensor.wrap(f.lse.segment(), DType.FP32, LS, new long[] {0, NQ, 1})), "lse.strides[0] = 0 makes elements overlap");

        // ---- dtypes ----------------------------------------------------------------------------------
        add("v fp16 in an fp32 call", Status.INVALID_DTYPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.in(DType.FP16, KS), f.out, null),
                "v is fp16 but q is fp32");
        add("out bf16 in an fp32 call", Status.INVALID_DTYPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.poisoned(DType.BF16, QS), null),
                "out is bf16 but q is fp32");
        add("k fp32 in a bf16 call", DType.BF16, Status.INVALID_DTYPE, f -> fwd(f, SOFTMAX, f.q, f.in(DType.FP32, KS), f.v, f.out, null),
                "k is fp32 but q is bf16");
        add("lse fp16", Status.INVALID_DTYPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.out, f.poisoned(DType.FP16, LS)),
                "lse is fp16 but must be fp32");
        add("lse bf16 in a bf16 call", DType.BF16, Status.INVALID_DTYPE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.out,
                f.poisoned(DType.BF16, LS)), "lse is bf16 but must be fp32");
        add("dout fp16 in an fp32 call", Status.INVALID_DTYPE, f -> bwd(f, SOFTMAX, f.out, f.in(DType.FP16, QS), f.lse, f.dq, f.dk, f.dv),
                "dout is fp16 but q is fp32");
        add("dq bf16 in an fp16 call", DType.FP16, Status.INVALID_DTYPE, f -> bwd(f, SOFTMAX, f.out, f.dout, f.lse,
                f.poisoned(DType.BF16, QS), f.dk, f.dv), "dq is bf16 but q is fp16");
        add("dk fp32 in an fp16 call", DType.FP16, Status.INVALID_DTYPE, f -> bwd(f, SIGMOID, null, f.dout, null, f.dq,
                f.poisoned(DType.FP32, KS), f.dv), "dk is fp32 but k is fp16");
        add("dv fp16 in a bf16 call", DType.BF16, Status.INVALID_DTYPE, f -> bwd(f, SIGMOID, null, f.dout, null, f.dq, f.dk,
                f.poisoned(DType.FP16, KS)), "dv is fp16 but k is bf16");
        add("backward out fp16 in an fp32 call", Status.INVALID_DTYPE, f -> bwd(f, SOFTMAX, f.in(DType.FP16, QS), f.dout, f.lse,
                f.dq, f.dk, f.dv), "out is fp16 but q is fp32");
        add("backward lse bf16", DType.BF16, Status.INVALID_DTYPE, f -> bwd(f, SOFTMAX, f.out, f.dout, f.in(DType.BF16, LS), f.dq,
                f.dk, f.dv), "lse is bf16 but must be fp32");

        // ---- alignment -------------------------------------------------------------------------------
        add("q off-heap at +1 byte", Status.MISALIGNED, f -> fwd(f, SOFTMAX,
                f.custom(DType.FP32, QS, Tensor.contiguousStrides(QS), bytes(DType.FP32, QS), 1), f.k, f.v, f.out, null),
                "q: data address", "not aligned to its fp32 element size (4 bytes)");
        add("out fp16 at +1 byte", DType.FP16, Status.MISALIGNED, f -> fwd(f, SOFTMAX, f.q, f.k, f.v,
                f.custom(DType.FP16, QS, Tensor.contiguousStrides(QS), bytes(DType.FP16, QS), 1), null),
                "out: data address", "fp16 element size (2 bytes)");
        add("lse at +2 bytes", Status.MISALIGNED, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.out,
                f.custom(DType.FP32, LS, Tensor.contiguousStrides(LS), bytes(DType.FP32, LS), 2)), "lse: data address");
        add("dk at +3 bytes", Status.MISALIGNED, f -> bwd(f, RELU, null, f.dout, null, f.dq,
                f.custom(DType.FP32, KS, Tensor.contiguousStrides(KS), bytes(DType.FP32, KS), 3), f.dv), "dk: data address");
        add("k heap float[] at +2 bytes", Status.MISALIGNED, f -> fwd(f, SOFTMAX, f.q,
                Tensor.wrap(f.heapBlock(bytes(DType.FP32, KS), 2), DType.FP32, KS, Tensor.contiguousStrides(KS)), f.v, f.out, null),
                "k: the heap segment is 2-byte aligned but FP32 needs 4");
        add("dv heap byte[] for bf16", DType.BF16, Status.MISALIGNED, f -> bwd(f, RELU, null, f.dout, null, f.dq, f.dk,
                Tensor.wrap(MemorySegment.ofArray(new byte[(int) bytes(DType.BF16, KS)]), DType.BF16, KS, Tensor.contiguousStrides(KS))),
                "dv: the heap segment is 1-byte aligned but BF16 needs 2");

        // ---- parameters ------------------------------------------------------------------------------
        add("scale -inf", Status.INVALID_PARAMS, f -> fwd(f, SOFTMAX.scale(Float.NEGATIVE_INFINITY), f.q, f.k, f.v, f.out, null),
                "params.scale must be finite");
        add("sigmoid bias +inf", Status.INVALID_PARAMS, f -> fwd(f, SIGMOID.sigmoidBias(Float.POSITIVE_INFINITY), f.q, f.k, f.v, f.out,
                null), "params.sigmoid_bias must be finite");
        add("alpha NaN", Status.INVALID_PARAMS, f -> fwd(f, RELU.alpha(Float.NaN), f.q, f.k, f.v, f.out, null),
                "params.alpha must be finite");
        add("alpha -inf (backward)", Status.INVALID_PARAMS, f -> bwd(f, RELU.alpha(Float.NEGATIVE_INFINITY), null, f.dout, null,
                f.dq, f.dk, f.dv), "params.alpha must be finite");
        add("alpha -1000: Nk^-alpha overflows", Status.INVALID_PARAMS, f -> fwd(f, RELU.alpha(-1000f), f.q, f.k, f.v, f.out, null),
                "params.alpha -1000 makes Nk^-alpha overflow for Nk = 7");
        add("window_right -2", Status.INVALID_PARAMS, f -> fwd(f, SOFTMAX.window(3, -2), f.q, f.k, f.v, f.out, f.lse),
                "params.window_right is -2", "-1 for unbounded");
        add("window_left Long.MIN_VALUE", Status.INVALID_PARAMS, f -> fwd(f, SIGMOID.window(Long.MIN_VALUE, 0), f.q, f.k, f.v, f.out,
                null), "params.window_left is -9223372036854775808");
        add("window_left -2 in backward", Status.INVALID_PARAMS, f -> bwd(f, SOFTMAX.window(-2, -1), f.out, f.dout, f.lse, f.dq,
                f.dk, f.dv), "params.window_left is -2");
        add("lse for relu", Status.INVALID_PARAMS, f -> fwd(f, RELU, f.q, f.k, f.v, f.out, f.lse),
                "lse is given but params.score is not softmax");
        add("lse for sigmoid backward", Status.INVALID_PARAMS, f -> bwd(f, SIGMOID, null, f.dout, f.lse, f.dq, f.dk, f.dv),
                "lse is given but params.score is not softmax");

        // ---- memory the Java side refuses --------------------------------------------------------------
        add("out in a closed arena", Status.SEGMENT_NOT_ACCESSIBLE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, closed(QS), null),
                "out: its arena is closed");
        add("lse in a closed arena", Status.SEGMENT_NOT_ACCESSIBLE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.out, closed(LS)),
                "lse: its arena is closed");
        add("dv in a closed arena", Status.SEGMENT_NOT_ACCESSIBLE, f -> bwd(f, RELU, null, f.dout, null, f.dq, f.dk, closed(KS)),
                "dv: its arena is closed");
        add("out confined to another thread", Status.SEGMENT_NOT_ACCESSIBLE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, otherThread(QS), null),
                "out: its segment is confined to another thread");
        add("dout confined to another thread", Status.SEGMENT_NOT_ACCESSIBLE, f -> bwd(f, RELU, null, otherThread(QS), null, f.dq,
                f.dk, f.dv), "dout: its segment is confined to another thread");
        add("read-only out (off-heap)", Status.SEGMENT_NOT_ACCESSIBLE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, readOnly(f.out), null),
                "out: its segment is read-only");
        add("read-only lse", Status.SEGMENT_NOT_ACCESSIBLE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.out, readOnly(f.lse)),
                "lse: its segment is read-only");
        add("read-only dq (heap, critical path)", Status.SEGMENT_NOT_ACCESSIBLE, f -> bwd(f, RELU, null, f.dout, null,
                readOnly(Tensor.wrap(f.heapBlock(bytes(DType.FP32, QS), 0), DType.FP32, QS, Tensor.contiguousStrides(QS))), f.dk, f.dv),
                "dq: its segment is read-only");
        add("read-only dk (heap, copy path)", Status.SEGMENT_NOT_ACCESSIBLE, f -> TestSupport.withMemory(TestSupport.Memory.HEAP_COPY,
                () -> bwd(f, RELU, null, f.dout, null, f.dq,
                        readOnly(Tensor.wrap(f.heapBlock(bytes(DType.FP32, KS), 0), DType.FP32, KS, Tensor.contiguousStrides(KS))), f.dv)),
                "dk: its segment is read-only");
        add("v is MemorySegment.NULL", Status.NULL_ARGUMENT, f -> fwd(f, SOFTMAX, f.q, f.k,
                Tensor.wrap(MemorySegment.NULL, DType.FP32, KS, Tensor.contiguousStrides(KS)), f.out, null), "v: data pointer is NULL");
        add("out at address 0 with a size", Status.NULL_ARGUMENT, f -> fwd(f, SOFTMAX, f.q, f.k, f.v,
                Tensor.wrap(MemorySegment.ofAddress(0).reinterpret(1 << 12), DType.FP32, QS, Tensor.contiguousStrides(QS)), null),
                "out: data pointer is NULL");
        add("dq null", Status.NULL_ARGUMENT, f -> bwd(f, RELU, null, f.dout, null, null, f.dk, f.dv), "dq is null");

        // ---- aliasing --------------------------------------------------------------------------------
        add("out overlaps k by one element", Status.ALIASING, f -> {
            MemorySegment m = f.block(896 + 1280 - 4, 0);
            Tensor k = Tensor.wrap(m.asSlice(0, 896), DType.FP32, KS, Tensor.contiguousStrides(KS));
            f.fill(k);
            fwd(f, SOFTMAX, f.q, k, f.v, Tensor.wrap(m.asSlice(892), DType.FP32, QS, Tensor.contiguousStrides(QS)), null);
        }, "out overlaps k");
        add("lse inside out", Status.ALIASING, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.out,
                Tensor.wrap(f.out.segment().asSlice(64, 160), DType.FP32, LS, Tensor.contiguousStrides(LS))), "lse overlaps out");
        add("dv is dout", Status.ALIASING, f -> bwd(f, RELU, null, f.dout, null, f.dq, f.dk,
                Tensor.wrap(f.dout.segment(), DType.FP32, KS, Tensor.contiguousStrides(KS))), "dv overlaps dout");
        add("dk and dv share memory", Status.ALIASING, f -> bwd(f, RELU, null, f.dout, null, f.dq, f.dk,
                Tensor.wrap(f.dk.segment(), DType.FP32, KS, Tensor.contiguousStrides(KS))), "dk overlaps dv");
        add("dq overlaps lse", Status.ALIASING, f -> {
            MemorySegment m = f.block(1280, 0);
            Tensor lse = Tensor.wrap(m.asSlice(1280 - 160), DType.FP32, LS, Tensor.contiguousStrides(LS));
            f.fill(lse);
            bwd(f, SOFTMAX, f.out, f.dout, lse, Tensor.wrap(m, DType.FP32, QS, Tensor.contiguousStrides(QS)), f.dk, f.dv);
        }, "dq overlaps lse");
        add("heap out over a read-only view of q (copy path)", Status.ALIASING, f -> TestSupport.withMemory(TestSupport.Memory.HEAP_COPY,
                () -> {
                    MemorySegment arr = f.heapBlock(bytes(DType.FP32, QS), 0);
                    Tensor q = Tensor.wrap(arr.asReadOnly(), DType.FP32, QS, Tensor.contiguousStrides(QS));
                    Tensor out = Tensor.wrap(arr, DType.FP32, QS, Tensor.contiguousStrides(QS));
                    fwd(f, SOFTMAX, q, f.k, f.v, out, null);
                }), "out overlaps q");
        add("heap dq over a read-only view of dout (critical path)", Status.ALIASING, f -> TestSupport.withMemory(
                TestSupport.Memory.HEAP_CRITICAL, () -> {
                    MemorySegment arr = f.heapBlock(bytes(DType.FP32, QS), 0);
                    bwd(f, RELU, null, Tensor.wrap(arr.asReadOnly(), DType.FP32, QS, Tensor.contiguousStrides(QS)), null,
                            Tensor.wrap(arr, DType.FP32, QS, Tensor.contiguousStrides(QS)), f.dk, f.dv);
                }), "dq overlaps dout");

        // ---- devices ---------------------------------------------------------------------------------
        add("out on cuda:0 next to cpu inputs", DType.FP16, Status.INVALID_DEVICE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v,
                Tensor.wrap(f.block(bytes(DType.FP16, QS), 0), DType.FP16, Device.cuda(0), QS, Tensor.contiguousStrides(QS)), null),
                "out is on cuda:0 but q is on cpu:0");
        add("lse on cuda:1", Status.INVALID_DEVICE, f -> fwd(f, SOFTMAX, f.q, f.k, f.v, f.out,
                Tensor.wrap(f.block(bytes(DType.FP32, LS), 0), DType.FP32, Device.cuda(1), LS, Tensor.contiguousStrides(LS))),
                "lse is on cuda:1 but q is on cpu:0");
    }

    static Tensor closed(long[] shape) {
        Arena a = Arena.ofConfined();
        Tensor t = Tensor.allocate(a, DType.FP32, shape);
        a.close();
        return t;
    }

    static Tensor otherThread(long[] shape) {
        return CompletableFuture.supplyAsync(() -> Tensor.allocate(Arena.ofConfined(), DType.FP32, shape)).join();
    }

    static Tensor readOnly(Tensor t) {
        return Tensor.wrap(t.segment().asReadOnly(), t.dtype(), t.shape(), t.strides());
    }

    static Stream<Arguments> cases() {
        return CASES.stream().map(c -> Arguments.of(c.name(), c));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void refusedAndNothingWritten(String name, Case c) {
        try (Fx f = new Fx(c.dtype())) {
            FlashSigException e = assertThrows(FlashSigException.class, () -> c.call().run(f), name);
            assertEquals(c.status(), e.status(), name + ": " + e.getMessage());
            for (String frag : c.fragments())
                assertTrue(e.getMessage().contains(frag), name + ": message '" + e.getMessage() + "' lacks '" + frag + "'");
            // every buffer of the case, those its call made included, still holds what it was set up with
            for (MemorySegment b : f.blocks) {
                int at = Arrays.mismatch(f.expected.get(b), b.toArray(ValueLayout.JAVA_BYTE));
                if (at >= 0) fail(name + ": byte " + (at - GUARD) + " of a buffer changed although the call failed");
            }
        }
    }

    /** The catalogue's size is part of the hardening issue's contract. */
    @Test
    void catalogueHasSixtyDistinctCases() {
        assertTrue(CASES.size() >= 60, "only " + CASES.size() + " cases");
        assertEquals(CASES.size(), CASES.stream().map(Case::name).distinct().count(), "case names repeat");
    }

    /** A read-only view of an input is fine (only outputs must be writable), on every path. */
    @Test
    void readOnlyInputsAreAccepted() {
        for (TestSupport.Memory m : TestSupport.Memory.values()) {
            try (Fx f = new Fx(DType.FP32)) {
                Tensor q = readOnly(f.q), k = readOnly(f.k), v = readOnly(f.v);
                TestSupport.withMemory(m, () -> FlashSig.forward(SOFTMAX, q, k, v, f.out, f.lse));
                for (float x : f.out.toFloatArray()) assertTrue(Float.isFinite(x), m + ": " + x);
                assertFalse(Arrays.equals(new float[(int) f.out.elementCount()], f.out.toFloatArray()));
            }
        }
    }
}
