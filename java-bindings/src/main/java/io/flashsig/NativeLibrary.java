package io.flashsig;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;
import java.util.Properties;

/**
 * Finds and loads libflashsig into this class loader, before any {@code io.flashsig.ffi} class is
 * touched (the generated bindings resolve symbols through {@code SymbolLookup.loaderLookup()}).
 *
 * <p>Order: the system property {@value #PATH_PROPERTY}, then the environment variable
 * {@value #PATH_ENV} (a path to a custom build), else the copy in the jar
 * ({@code io/flashsig/native/<os>-<arch>/libflashsig.so}), extracted once to
 * {@code ${java.io.tmpdir}/flashsig-<version>-<sha256 prefix>-<user>/} and reused while its hash matches.
 *
 * <p>The JVM lets one file be loaded by one class loader only. When a second class loader (an
 * application server, a test framework) loads FlashSig too, it gets a private copy of the file under a
 * unique name, which the dynamic linker then maps as a separate library instance.
 */
final class NativeLibrary {
    static final String PATH_PROPERTY = "io.flashsig.library.path";
    static final String PATH_ENV = "FLASHSIG_LIBRARY_PATH";
    private static final String FILE_NAME = "libflashsig.so";

    private static volatile Path loadedFrom;

    private NativeLibrary() {}

    /** Loads the library once per class loader; throws {@link FlashSigException} saying what was tried. */
    static void load() {
        if (loadedFrom != null) return;
        synchronized (NativeLibrary.class) {
            if (loadedFrom != null) return;
            loadedFrom = locateAndLoad();
        }
    }

    /** The file this class loader's copy of FlashSig was loaded from. */
    static Path path() {
        load();
        return loadedFrom;
    }

    private static Path locateAndLoad() {
        List<String> tried = new ArrayList<>();
        String override = System.getProperty(PATH_PROPERTY);
        String source = "-D" + PATH_PROPERTY;
        if (override == null || override.isBlank()) {
            override = System.getenv(PATH_ENV);
            source = "$" + PATH_ENV;
        }
        if (override != null && !override.isBlank()) {
            Path p = Path.of(override).toAbsolutePath();
            if (!Files.isRegularFile(p))
                throw failure(source + " = " + p + ", which is not a file",
                        "point it at a libflashsig.so built by CMake (target/native/libflashsig.so), or unset it "
                                + "to use the copy inside the flashsig jar", null);
            return loadFile(p, source);
        }

        String platform = platform();
        String resource = "io/flashsig/native/" + platform + "/" + FILE_NAME;
        tried.add("-D" + PATH_PROPERTY + " (not set)");
        tried.add("$" + PATH_ENV + " (not set)");
        tried.add("classpath resource " + resource);
        byte[] bytes;
        try (InputStream in = NativeLibrary.class.getClassLoader().getResourceAsStream(resource)) {
            if (in == null)
                throw failure("tried " + String.join(", ", tried) + ": none found",
                        platform.equals("linux-x86_64") || platform.equals("linux-aarch64")
                                ? "build the native library (run `mvn` from the repository root on a " + platform
                                        + " machine, which runs CMake; or scripts/cross-aarch64.sh for linux-aarch64) "
                                        + "so that the jar contains it, or set -D" + PATH_PROPERTY
                                        + "=/path/to/libflashsig.so"
                                : "FlashSig builds for linux-x86_64 and linux-aarch64 only; build libflashsig for "
                                        + platform + " with CMake and set -D" + PATH_PROPERTY + "=/path/to/it",
                        null);
            bytes = in.readAllBytes();
        } catch (IOException e) {
            throw failure("could not read classpath resource " + resource + ": " + e,
                    "check that the flashsig jar is not corrupt", e);
        }

        String sha = sha256(bytes);
        // per user too: another user's directory of the same name would not be writable
        String user = System.getProperty("user.name", "user").replaceAll("[^A-Za-z0-9_.-]", "_");
        Path dir = Path.of(System.getProperty("java.io.tmpdir"),
                "flashsig-" + version() + "-" + sha.substring(0, 16) + "-" + user);
        Path file = dir.resolve(FILE_NAME);
        try {
            if (!Files.isRegularFile(file) || !sha.equals(sha256(Files.readAllBytes(file)))) {
                Files.createDirectories(dir);
                // temp file + atomic rename: concurrent JVMs never see (or load) a half-written library
                Path tmp = Files.createTempFile(dir, "libflashsig-", ".tmp");
                try {
                    Files.write(tmp, bytes);
                    try {
                        Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
                    } catch (AtomicMoveNotSupportedException e) {
                        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING);
                    }
                } finally {
                    Files.deleteIfExists(tmp);
                }
            }
        } catch (IOException e) {
            throw failure("could not extract " + resource + " to " + file + ": " + e,
                    "make java.io.tmpdir (" + System.getProperty("java.io.tmpdir") + ") writable, "
                            + "or set -D" + PATH_PROPERTY + "=/path/to/libflashsig.so",
                    e);
        }
        return loadFile(file, "the copy extracted from the jar");
    }

    private static Path loadFile(Path file, String source) {
        try {
            System.load(file.toString());
            return file;
        } catch (UnsatisfiedLinkError e) {
            String msg = String.valueOf(e.getMessage());
            if (!msg.contains("another classloader")) {
                throw failure("System.load(" + file + ") from " + source + " failed: " + msg,
                        "check that the file is a libflashsig built for this platform (" + platform() + ")", e);
            }
        }
        // another class loader owns that path: load a private copy of our own
        Path copy;
        try {
            Path dir = file.getParent();
            copy = Files.createTempFile(dir, "libflashsig-loader-", ".so");
            Files.copy(file, copy, StandardCopyOption.REPLACE_EXISTING);
            copy.toFile().deleteOnExit();
        } catch (IOException e) {
            throw failure(file + " is already loaded by another class loader, and copying it for this one failed: " + e,
                    "make " + file.getParent() + " writable", e);
        }
        try {
            System.load(copy.toString());
            return copy;
        } catch (UnsatisfiedLinkError e) {
            throw failure(file + " is already loaded by another class loader; loading the private copy " + copy
                    + " failed too: " + e.getMessage(), "load FlashSig from one class loader only", e);
        }
    }

    /** The jar's folder for this machine's library: os-arch, e.g. linux-x86_64, linux-aarch64. */
    static String platform() {
        String os = System.getProperty("os.name", "").toLowerCase(Locale.ROOT);
        String arch = System.getProperty("os.arch", "").toLowerCase(Locale.ROOT);
        String o = os.startsWith("linux") ? "linux" : os.startsWith("mac") ? "macos" : os.startsWith("windows") ? "windows" : os;
        String a = arch.equals("amd64") || arch.equals("x86_64") ? "x86_64"
                : arch.equals("aarch64") || arch.equals("arm64") ? "aarch64" : arch;
        return o + "-" + a;
    }

    private static String version() {
        try (InputStream in = NativeLibrary.class.getResourceAsStream("flashsig.properties")) {
            if (in != null) {
                Properties p = new Properties();
                p.load(in);
                String v = p.getProperty("version", "");
                if (!v.isBlank() && !v.startsWith("${")) return v;
            }
        } catch (IOException ignored) {
            // the hash alone still names a unique directory
        }
        return "dev";
    }

    private static String sha256(byte[] bytes) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new AssertionError("every JDK has SHA-256", e);
        }
    }

    private static FlashSigException failure(String what, String fix, Throwable cause) {
        return new FlashSigException(FlashSigException.Status.LIBRARY_NOT_LOADED,
                "cannot load libflashsig: " + what + ". Fix: " + fix + ".", cause);
    }
}
