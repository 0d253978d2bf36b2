#!/usr/bin/env bash
# Prepares gpu-carry/ (git-ignored) so that tests/gpu/gpu-session.sh can run the Java CUDA tests on a
# GPU machine that has no Java: a jlink'ed JDK runtime, the JUnit console launcher, and the Java API,
# its CUDA test classes and the training example compiled from this checkout. The session passes it
# to the device tool as `carry: ["gpu-carry"]` (≈ 46 MB; the tool's limit is 64 MiB with the tree).
#   scripts/gpu-carry.sh            (needs a JDK >= 25 under /usr/lib/jvm or JAVA_HOME, and Maven for
#                                    the JUnit console jar, fetched once into ~/.m2)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/gpu-carry"
junit_platform=1.10.2  # the platform of junit-jupiter ${junit.version} in the root pom

jdk=${JAVA_HOME:-}
if [[ -z $jdk || ! -x $jdk/bin/jlink ]] || ! "$jdk/bin/java" -version 2>&1 | grep -qE 'version "(2[5-9]|[3-9][0-9])'; then
  jdk=$(ls -d /usr/lib/jvm/*25* /usr/lib/jvm/*2[6-9]* 2>/dev/null | head -n 1 || true)
fi
[[ -n $jdk && -x $jdk/bin/jlink ]] || { echo "no JDK >= 25 with jlink (set JAVA_HOME)" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/classes" "$out/test-classes"

console="$HOME/.m2/repository/org/junit/platform/junit-platform-console-standalone/$junit_platform/junit-platform-console-standalone-$junit_platform.jar"
if [[ ! -f $console ]]; then
  mvn -q -B dependency:get -Dartifact="org.junit.platform:junit-platform-console-standalone:$junit_platform"
fi
cp "$console" "$out/junit-console.jar"

# The API (with the generated bindings) and the training example; the tests that need a device: the
# ones the cuda-emulated surefire runs execute (java-bindings/pom.xml, examples/training/pom.xml)
main_src=("$root/java-bindings/src/main/java" "$root/examples/training/src/main/java")
"$jdk/bin/javac" --release 25 -nowarn -d "$out/classes" $(find "${main_src[@]}" -name '*.java')
cp -r "$root/java-bindings/src/main/resources/." "$out/classes/"
tests=("$root/java-bindings/src/test/java/io/flashsig/"{CudaTest,CudaMaskTest,BackwardWorkspaceTest}.java
  "$root/examples/training/src/test/java/io/flashsig/examples/TrainTest.java")
"$jdk/bin/javac" --release 25 -nowarn -d "$out/test-classes" -cp "$out/classes:$out/junit-console.jar" \
  -sourcepath "$root/java-bindings/src/test/java:$root/examples/training/src/test/java" "${tests[@]}"

# java.base for the API, java.logging for the JUnit launcher
"$jdk/bin/jlink" --add-modules java.base,java.logging --compress zip-9 --strip-debug \
  --no-header-files --no-man-pages --output "$out/jdk"
du -sh "$out"
