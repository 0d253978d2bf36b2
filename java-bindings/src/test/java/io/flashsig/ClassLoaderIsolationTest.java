package io.flashsig;

import org.junit.jupiter.api.Test;

import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

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

    /** Runs IsolatedProbe in a fresh loader over {@code urls}; rethrows what the probe threw. */
    static String probeIn(URL... urls) throws Exception {
        try (URLClassLoader loader = new URLClassLoader(urls, ClassLoader.getPlatformClassLoader())) {
            @SuppressWarnings("unchecked")
            Callable<String> c = (Callable<String>) loader.loadClass(IsolatedProbe.class.getName()).getConstructor()
                    .newInstance();
            return c.call();
        }
    }

    static URL[] classpath() {
        return new URL[] {FlashSig.class.getProtectionDomain().getCodeSource().getLocation(),
                IsolatedProbe.class.getProtectionDomain().getCodeSource().getLocation()};
    }

    @Test
    void libraryPathOverride() throws Exception {
        String expected = new IsolatedProbe().call().split("\\|")[1];
        Path existing = NativeLibrary.path();
        try {
            System.setProperty(NativeLibrary.PATH_PROPERTY, existing.toString());
            String[] r = probeIn(classpath()).split("\\|");
            assertEquals(expected, r[1]);
            // a private copy beside the override, since this JVM has loaded that file already
            assertEquals(existing.getParent(), Path.of(r[2]).getParent());

            Path missing = existing.resolveSibling("no-such-libflashsig.so");
            System.setProperty(NativeLibrary.PATH_PROPERTY, missing.toString());
            RuntimeException e = assertThrows(RuntimeException.class, () -> probeIn(classpath()));
            assertEquals(FlashSigException.class.getName(), e.getClass().getName());
            assertTrue(e.getMessage().contains(missing.toString()) && e.getMessage().contains("Fix:"), e.getMessage());
        } finally {
            System.clearProperty(NativeLibrary.PATH_PROPERTY);
        }
    }

    @Test
    void missingResourceSaysWhatWasTried(@org.junit.jupiter.api.io.TempDir Path tmp) throws Exception {
        Path classes = Path.of(classpath()[0].toURI());
        try (Stream<Path> files = Files.walk(classes)) {
            for (Path f : (Iterable<Path>) files::iterator) {
                Path rel = classes.relativize(f);
                if (rel.toString().contains("native")) continue; // the jar without its library
                Path to = tmp.resolve(rel.toString());
                if (Files.isDirectory(f)) Files.createDirectories(to);
                else Files.copy(f, to);
            }
        }
        if (System.getenv(NativeLibrary.PATH_ENV) != null) return; // the environment override would win
        RuntimeException e = assertThrows(RuntimeException.class,
                () -> probeIn(tmp.toUri().toURL(), classpath()[1]));
        assertEquals(FlashSigException.class.getName(), e.getClass().getName());
        assertTrue(e.getMessage().contains("io/flashsig/native/" + NativeLibrary.platform() + "/libflashsig.so")
                && e.getMessage().contains(NativeLibrary.PATH_PROPERTY) && e.getMessage().contains("Fix:"), e.getMessage());
    }
}
