// A tiny test harness: TEST(name) registers a function, EXPECT/REQUIRE record failures with file and
// line, and main runs every test (or those whose name contains argv's filter, less those whose name
// contains a filter written with a leading '-'). The executable exits
// 0 when everything passed, 1 on any failure, and kSkip (CTest SKIP_RETURN_CODE) when it skipped.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace th {

constexpr int kSkip = 77;

struct Test {
    const char* name;
    void (*fn)();
};

inline std::vector<Test>& registry() {
    static std::vector<Test> tests;
    return tests;
}

inline int& failures() {
    static int n = 0;
    return n;
}

// Failures beyond this many per test are counted but not printed (a broken kernel fails thousands
// of checks; the first few say everything).
inline int& printed_in_test() {
    static int n = 0;
    return n;
}

struct Registrar {
    Registrar(const char* name, void (*fn)()) { registry().push_back({name, fn}); }
};

[[gnu::format(printf, 3, 4)]] inline void fail(const char* file, int line, const char* fmt, ...) {
    ++failures();
    if (++printed_in_test() > 30) return;
    std::fprintf(stderr, "  FAIL %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    std::vfprintf(stderr, fmt, ap);
    va_end(ap);
    std::fputc('\n', stderr);
}

inline std::string format(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

// Runs the registered tests whose names contain any of the filters (all when none is given), except
// those whose names contain an exclusion ("-name").
inline int run_all(const std::vector<std::string>& filters) {
    int ran = 0, failed_tests = 0;
    bool any_inclusion = false;
    for (const std::string& f : filters) any_inclusion |= f[0] != '-';
    for (const Test& t : registry()) {
        bool selected = !any_inclusion, excluded = false;
        for (const std::string& f : filters) {
            if (f[0] == '-') excluded |= std::strstr(t.name, f.c_str() + 1) != nullptr;
            else selected |= std::strstr(t.name, f.c_str()) != nullptr;
        }
        if (!selected || excluded) continue;
        const int before = failures();
        printed_in_test() = 0;
        std::printf("[ RUN  ] %s\n", t.name);
        std::fflush(stdout);
        t.fn();
        const bool ok = failures() == before;
        failed_tests += !ok;
        ++ran;
        std::printf("[ %s ] %s\n", ok ? " OK " : "FAIL", t.name);
        std::fflush(stdout);
    }
    std::printf("%d test(s) ran, %d failed\n", ran, failed_tests);
    if (ran == 0) {
        std::fprintf(stderr, "no test matched the filter\n");
        return 1;
    }
    return failed_tests == 0 ? 0 : 1;
}

}  // namespace th

#define TH_CAT2(a, b) a##b
#define TH_CAT(a, b) TH_CAT2(a, b)
#define TEST(name)                                                              \
    static void name();                                                         \
    static ::th::Registrar TH_CAT(th_registrar_, name)(#name, &name);           \
    static void name()

#define EXPECT(cond, ...)                                                                 \
    do {                                                                                  \
        if (!(cond)) ::th::fail(__FILE__, __LINE__, "%s", ::th::format(__VA_ARGS__).c_str()); \
    } while (0)

// Stops the current test function on failure.
#define REQUIRE(cond, ...)                                                                     \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            ::th::fail(__FILE__, __LINE__, "%s", ::th::format(__VA_ARGS__).c_str());           \
            return;                                                                            \
        }                                                                                      \
    } while (0)
