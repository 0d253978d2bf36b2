package io.flashsig;

import org.junit.jupiter.api.Test;

import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Path;
import java.util.concurrent.Callable;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;

/**
 * Two class loaders that each load FlashSig (as application servers and plugin hosts do) both work:
 * the JVM refuses one library file in two loaders, so each extra loader loads a private copy.
 */
class ClassLoaderIsolationTest {
    @Test
    void twoIsolatedClassLoaders() throws Exception {
        String here = new IsolatedProbe().call(); // this loader first, so both isolated loaders need copies
        URL classes = FlashSig.class.getProtectionDomain().getCodeSource().getLocation();
        URL testClasses = IsolatedProbe.class.getProtectionDomain().getCodeSource().getLocation();
        String[] results = new String[2];
        for (int i = 0; i < 2; i++) {
            // parent = platform loader: nothing of io.flashsig is shared with the application loader
            try (URLClassLoader loader = new URLClassLoader("isolated-" + i, new URL[] {classes, testClasses},
                    ClassLoader.getPlatformClassLoader())) {
                Class<?> probe = loader.loadClass(IsolatedProbe.class.getName());
                assertNotSame(IsolatedProbe.class, probe);
                @SuppressWarnings("unchecked")
                Callable<String> c = (Callable<String>) probe.getConstructor().newInstance();
                results[i] = c.call();
            }
        }
        String[] h = here.split("\\|"), a = results[0].split("\\|"), b = results[1].split("\\|");
        assertEquals(h[0], a[0]);
        assertEquals(h[0], b[0]);
        assertEquals(h[1], a[1], "same inputs, same result in every loader");
        assertEquals(h[1], b[1]);
        Path ph = Path.of(h[2]), pa = Path.of(a[2]), pb = Path.of(b[2]);
        assertNotEquals(ph, pa);
        assertNotEquals(ph, pb);
        assertNotEquals(pa, pb);
    }
}
