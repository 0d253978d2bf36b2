package io.flashsig;

import io.flashsig.ffi.fsig_attention_params;
import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.HexFormat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The committed io.flashsig.ffi bindings were generated from the header as it is now, and lay out 0.3's structs. */
class HeaderBindingsTest {
    @Test
    void bindingsMatchHeader() throws Exception {
        Path header = Path.of("..", "include", "flashsig.h").toAbsolutePath().normalize();
        Path recorded = Path.of("src", "main", "resources", "io", "flashsig", "flashsig.h.sha256");
        assertTrue(Files.isRegularFile(header), "cannot find " + header + " (run the tests from java-bindings/)");
        assertTrue(Files.isRegularFile(recorded), "cannot find " + recorded.toAbsolutePath()
                + ": run scripts/regen-bindings.sh");
        String actual = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(header)));
        assertEquals(Files.readString(recorded).trim(), actual,
                "include/flashsig.h changed since io.flashsig.ffi was generated: run scripts/regen-bindings.sh "
                        + "and commit the regenerated bindings with the header");
    }

    /**
     * fsig_attention_params of 0.3: 0.2's 96 bytes (up to logn_train) and the backward's workspace. The
     * C side holds the older prefixes with static_asserts; AttentionSpec and BackwardWorkspace write this one.
     */
    @Test
    void paramsLayoutIsThatOf03() {
        NativeLibrary.load();
        assertEquals(88, fsig_attention_params.logn_train$offset());
        assertEquals(96, fsig_attention_params.workspace$offset());
        assertEquals(104, fsig_attention_params.workspace_bytes$offset());
        assertEquals(112, fsig_attention_params.sizeof());
    }
}
