package io.flashsig.nd4j.bench;

import io.flashsig.AttentionSpec;
import io.flashsig.nd4j.FlashSigNd4j;
import io.flashsig.nd4j.FlashSigNd4j.Layout;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.DynamicCustomOp;
import org.nd4j.linalg.api.ops.impl.transforms.custom.DotProductAttention;
import org.nd4j.linalg.factory.Nd4j;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;

import java.util.concurrent.TimeUnit;

/**
 * FlashSig vs ND4J's own attention on the same INDArrays in one JVM: fp32, B = 1, H = 8, d = 64,
 * Nq = Nk = N, non-causal softmax, scaled by 1/√d, ND4J's layout [B, H, d, N] (FlashSig reads it in
 * place through strides). Forward: FlashSig writes a preallocated out; ND4J's {@code DotProductAttention}
 * allocates its output (as it does in use). Forward + backward: FlashSig forward (with lse) then
 * backward; ND4J's {@code dot_product_attention_bp} (which recomputes the forward inside). FLOPs
 * forward = 4·B·H·N²·d; fwd+bwd = 3.5 × that. Run (see benchmarks/NOTES.md):
 * <pre>mvn -B -q -Pnd4j-bench -DskipTests -pl adapters/nd4j -am verify</pre>
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xmx8g"})
public class Nd4jVsFlashSig {
    @Param({"512", "1024", "4096"})
    public int n;

    static final int B = 1, H = 8, D = 64;
    private final AttentionSpec spec = AttentionSpec.softmax();
    private INDArray q, k, v, out, lse, dout, dq, dk, dv;

    @Setup(Level.Trial)
    public void setup() {
        Nd4j.getRandom().setSeed(1);
        q = Nd4j.randn(DataType.FLOAT, B, H, D, n);
        k = Nd4j.randn(DataType.FLOAT, B, H, D, n);
        v = Nd4j.randn(DataType.FLOAT, B, H, D, n);
        dout = Nd4j.randn(DataType.FLOAT, B, H, D, n);
        out = Nd4j.create(DataType.FLOAT, B, H, D, n);
        lse = Nd4j.create(DataType.FLOAT, B, H, n);
        dq = q.ulike();
        dk = k.ulike();
        dv = v.ulike();
    }

    @Benchmark
    public INDArray flashSigForward() {
        FlashSigNd4j.forward(spec, Layout.BHDN, q, k, v, out);
        return out;
    }

    @Benchmark
    public INDArray nd4jForward() {
        return Nd4j.exec(new DotProductAttention(q, k, v, null, true, false))[0];
    }

    @Benchmark
    public INDArray flashSigForwardBackward() {
        FlashSigNd4j.forward(spec, Layout.BHDN, q, k, v, null, out, lse);
        FlashSigNd4j.backward(spec, Layout.BHDN, q, k, v, null, out, dout, lse, dq, dk, dv);
        return dq;
    }

    @Benchmark
    public INDArray nd4jForwardBackward() {
        Nd4j.exec(DynamicCustomOp.builder("dot_product_attention_bp").addInputs(q, k, v, dout)
                .addIntegerArguments(1).addOutputs(dq, dk, dv).build());
        return dq;
    }
}
