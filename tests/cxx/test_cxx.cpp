// SPDX-License-Identifier: MIT
// C++'s operator new and delete replaced by pyalloc's (src/cxx.c), in every form libstdc++ exports.
// Built twice: a program that knows nothing of pyalloc, run under LD_PRELOAD=libpyalloc.so, and one
// linked with -lpyalloc; each run in both alignment modes. Checked: every form is pyalloc's and
// serves from the pools what fits; operator new's blocks of 16 bytes or more are 16-aligned in
// PYALLOC_ALIGN=8 mode too (__STDCPP_DEFAULT_NEW_ALIGNMENT__), aligned forms honour their alignment;
// sized, aligned and nothrow deletes free pyalloc's blocks and hand glibc's to glibc; a failed new
// calls the new-handler and retries, throws std::bad_alloc when there is none, and the nothrow
// forms return nullptr; delete of an interior pointer or twice aborts with pyalloc's message.
#include <dlfcn.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <new>

#include "pyalloc.h"
#include <string>
#include <vector>

extern "C" void *__libc_malloc(size_t);
extern "C" void *__libc_memalign(size_t, size_t);

static int failures;
#define CHECK(cond, ...)                                                                                   \
    do {                                                                                                   \
        if (!(cond)) {                                                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                \
            fprintf(stderr, __VA_ARGS__);                                                                  \
            fprintf(stderr, "\n");                                                                         \
            failures++;                                                                                    \
        }                                                                                                  \
    } while (0)

static int (*is_small)(const void *);
static int mode;

static bool aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

// The defining object of a symbol's global definition is libpyalloc (or, linked statically, us).
static bool from_pyalloc(const char *mangled)
{
    void *f = dlsym(RTLD_DEFAULT, mangled);
    Dl_info di;
    return f && dladdr(f, &di) && di.dli_fname && strstr(di.dli_fname, "libpyalloc");
}

static void test_every_form_is_pyalloc()
{
    static const char *const forms[] = {
        "_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t", "_ZnwmSt11align_val_t",
        "_ZnamSt11align_val_t", "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t",
        "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm", "_ZdlPvRKSt9nothrow_t", "_ZdaPvRKSt9nothrow_t",
        "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t", "_ZdlPvmSt11align_val_t", "_ZdaPvmSt11align_val_t",
        "_ZdlPvSt11align_val_tRKSt9nothrow_t", "_ZdaPvSt11align_val_tRKSt9nothrow_t"};
    for (const char *f : forms)
        CHECK(from_pyalloc(f), "%s is not libpyalloc's", f);
}

struct alignas(64) Line {
    char c[64];
};
struct alignas(4096) Page {
    char c[100];
};

static void test_forms_allocate_and_free()
{
    for (size_t n : {0, 1, 8, 24, 100, 512, 513, 5000}) {
        void *p = ::operator new(n);
        CHECK(p && is_small(p) == (n <= 512), "operator new(%zu)", n);
        ::operator delete(p);
        p = ::operator new[](n);
        CHECK(p && is_small(p) == (n <= 512), "operator new[](%zu)", n);
        ::operator delete[](p);
        p = ::operator new(n, std::nothrow);
        CHECK(p && is_small(p) == (n <= 512), "operator new(%zu, nothrow)", n);
        ::operator delete(p, std::nothrow);
        p = ::operator new[](n, std::nothrow);
        CHECK(p && is_small(p) == (n <= 512), "operator new[](%zu, nothrow)", n);
        ::operator delete[](p, std::nothrow);
        p = ::operator new(n);
        ::operator delete(p, n); // sized
        p = ::operator new[](n);
        ::operator delete[](p, n);
        for (size_t al : {8, 16, 32, 64, 4096}) {
            std::align_val_t a{al};
            p = ::operator new(n, a);
            CHECK(p && aligned(p, al) && malloc_usable_size(p) >= n, "operator new(%zu, align %zu)", n, al);
            CHECK(is_small(p) == (al <= 16 && n <= 512), "operator new(%zu, align %zu): pools iff it fits", n, al);
            ::operator delete(p, a);
            p = ::operator new[](n, a);
            CHECK(p && aligned(p, al), "operator new[](%zu, align %zu)", n, al);
            ::operator delete[](p, n, a); // sized and aligned
            p = ::operator new(n, a, std::nothrow);
            CHECK(p && aligned(p, al), "operator new(%zu, align %zu, nothrow)", n, al);
            ::operator delete(p, a, std::nothrow);
            p = ::operator new[](n, a, std::nothrow);
            CHECK(p && aligned(p, al), "operator new[](%zu, align %zu, nothrow)", n, al);
            ::operator delete[](p, a, std::nothrow);
            p = ::operator new(n, a);
            ::operator delete(p, n, a);
            p = ::operator new[](n, a);
            ::operator delete[](p, a);
        }
    }
    // what the compiler emits: new-expressions, over-aligned types, containers
    Line *l = new Line[3];
    CHECK(aligned(l, 64), "new Line[3] is not 64-aligned");
    delete[] l;
    Page *pg = new Page;
    CHECK(aligned(pg, 4096), "new Page is not 4096-aligned");
    delete pg;
    std::vector<std::string> v;
    for (int i = 0; i < 1000; i++)
        v.push_back(std::string(i % 50, 'x') + std::to_string(i));
    CHECK(v[999] == std::string(49, 'x') + "999", "vector of strings");
}

// __STDCPP_DEFAULT_NEW_ALIGNMENT__ in both modes; in the classic mode the 16-rounding shows in the
// block size (malloc would give 24 bytes for 24), which also proves pyalloc's operator served it.
static void test_default_new_alignment()
{
    static_assert(__STDCPP_DEFAULT_NEW_ALIGNMENT__ == 16, "x86-64");
    for (size_t n = 1; n <= 600; n++) {
        void *p = ::operator new(n);
        size_t want = n >= 16 ? 16 : n >= 8 ? 8 : 1;
        CHECK(aligned(p, want), "operator new(%zu) = %p, mode %d", n, p, mode);
        if (n > 8 && n <= 512)
            CHECK(malloc_usable_size(p) == ((n + 15) & ~(size_t)15), "operator new(%zu): block of %zu", n,
                  malloc_usable_size(p));
        ::operator delete(p, n);
    }
    struct S136 {
        double d[17];
    };
    S136 *s = new S136();
    CHECK(aligned(s, 16), "new S136 (136 bytes) is not 16-aligned");
    delete s;
}

// pyalloc's statistics: operator new's blocks are counted in the class that serves them, and their
// deletes undo that (in classic mode a 24-byte request is served from the 32-byte class).
static int (*stats_get)(struct pa_stats *, size_t);
static unsigned long long class_in_use(const struct pa_stats &st, unsigned long long size)
{
    for (unsigned i = 0; i < st.nclasses; i++)
        if (st.classes[i].size == size)
            return st.classes[i].in_use;
    return 0;
}
static void test_statistics_follow_the_class()
{
    enum { N = 100 };
    void *p[N];
    pa_stats before, during, after;
    CHECK(stats_get(&before, sizeof before) == 0, "pa_stats_get");
    for (int i = 0; i < N; i++)
        p[i] = ::operator new(24);
    CHECK(stats_get(&during, sizeof during) == 0, "pa_stats_get");
    for (int i = 0; i < N; i++)
        ::operator delete(p[i], (size_t)24);
    CHECK(stats_get(&after, sizeof after) == 0, "pa_stats_get");
    if (!before.enabled)
        return; // built without counters: in_use is read off the pages, class by class, anyway
    CHECK(class_in_use(during, 32) == class_in_use(before, 32) + N, "class 32: %llu blocks in use, then %llu",
          class_in_use(before, 32), class_in_use(during, 32));
    CHECK(class_in_use(during, 24) == class_in_use(before, 24), "class 24 counted operator new(24)'s blocks");
    CHECK(class_in_use(after, 32) == class_in_use(before, 32), "class 32: %llu in use after the deletes, %llu before",
          class_in_use(after, 32), class_in_use(before, 32));
    CHECK(class_in_use(after, 24) == class_in_use(before, 24), "class 24 changed");
}

// Sized and aligned deletes of glibc's blocks go back to glibc.
static void test_delete_of_glibc_blocks()
{
    void *g = __libc_malloc(100);
    CHECK(!is_small(g), "__libc_malloc block counted as pyalloc's");
    ::operator delete(g, (size_t)100);
    ::operator delete[](__libc_malloc(24), (size_t)24);
    ::operator delete(__libc_malloc(24));
    ::operator delete(__libc_memalign(64, 100), std::align_val_t{64});
    ::operator delete(__libc_memalign(64, 100), (size_t)100, std::align_val_t{64});
    ::operator delete(__libc_malloc(5000), std::nothrow);
    void *p = ::operator new(40);
    ::operator delete(p, (size_t)500); // a size that does not match: undefined, and ignored
}

// A new-handler that makes room: the first attempt fails under RLIMIT_AS, the handler lifts the
// limit, the retry succeeds.
static rlimit saved_as;
static int handler_calls;
static void lift_limit()
{
    handler_calls++;
    setrlimit(RLIMIT_AS, &saved_as);
}
static void give_up()
{
    handler_calls++;
    std::set_new_handler(nullptr);
}
static void throw_bad_alloc()
{
    handler_calls++;
    throw std::bad_alloc();
}

static size_t vm_bytes()
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f) {
        if (fscanf(f, "%lu", &pages) != 1)
            pages = 0;
        fclose(f);
    }
    return pages * (size_t)sysconf(_SC_PAGESIZE);
}

static void test_new_handler_called_and_retried()
{
    const size_t big = (size_t)256 << 20;
    getrlimit(RLIMIT_AS, &saved_as);
    rlimit tight = saved_as;
    tight.rlim_cur = vm_bytes() + ((size_t)64 << 20);
    CHECK(setrlimit(RLIMIT_AS, &tight) == 0, "setrlimit");
    handler_calls = 0;
    std::set_new_handler(lift_limit);
    void *p = nullptr;
    try {
        p = ::operator new(big);
    } catch (const std::bad_alloc &) {
        CHECK(false, "bad_alloc although the handler made room");
    }
    std::set_new_handler(nullptr);
    setrlimit(RLIMIT_AS, &saved_as);
    CHECK(p != nullptr && handler_calls == 1, "handler called %d times, block %p", handler_calls, p);
    memset(p, 1, big);
    ::operator delete(p, big);
}

static void test_bad_alloc_and_nothrow()
{
    volatile size_t v_impossible = SIZE_MAX / 2; // hidden from the compiler
    const size_t impossible = v_impossible;
    for (int form = 0; form < 4; form++) {
        bool thrown = false;
        try {
            void *p = form == 0 ? ::operator new(impossible)
                      : form == 1 ? ::operator new[](impossible)
                      : form == 2 ? ::operator new(impossible, std::align_val_t{64})
                                  : ::operator new[](impossible, std::align_val_t{4096});
            CHECK(false, "form %d: operator new(SIZE_MAX / 2) returned %p", form, p);
        } catch (const std::bad_alloc &) {
            thrown = true;
        }
        CHECK(thrown, "form %d: no std::bad_alloc", form);
    }
    // the handler is called, and called again, until it gives up: then bad_alloc
    handler_calls = 0;
    std::set_new_handler(give_up);
    bool thrown = false;
    try {
        (void)::operator new(impossible);
    } catch (const std::bad_alloc &) {
        thrown = true;
    }
    CHECK(thrown && handler_calls == 1, "give_up: thrown %d, calls %d", thrown, handler_calls);
    // nothrow forms: nullptr, after the handler, whose bad_alloc does not escape
    CHECK(::operator new(impossible, std::nothrow) == nullptr, "nothrow new");
    CHECK(::operator new[](impossible, std::nothrow) == nullptr, "nothrow new[]");
    CHECK(::operator new(impossible, std::align_val_t{32}, std::nothrow) == nullptr, "aligned nothrow new");
    CHECK(::operator new[](impossible, std::align_val_t{32}, std::nothrow) == nullptr, "aligned nothrow new[]");
    handler_calls = 0;
    std::set_new_handler(throw_bad_alloc);
    CHECK(::operator new(impossible, std::nothrow) == nullptr && handler_calls == 1,
          "nothrow new with a throwing handler: calls %d", handler_calls);
    std::set_new_handler(nullptr);
    char *huge = new (std::nothrow) char[impossible];
    CHECK(huge == nullptr, "new (nothrow) char[SIZE_MAX / 2]");
}

// delete of an interior pointer and a double delete: pyalloc's one-line message, then abort.
static bool dies_with(void (*fn)(), const char *word)
{
    int fds[2];
    if (pipe(fds) != 0)
        return false;
    fflush(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
        rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        dup2(fds[1], 2);
        fn();
        _exit(0);
    }
    close(fds[1]);
    char buf[512] = {0};
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return n > 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && strncmp(buf, "pyalloc: ", 9) == 0 &&
           strstr(buf, word);
}
static void delete_interior()
{
    char *p = static_cast<char *>(::operator new(64));
    char *volatile q = p + 16;
    ::operator delete(q, (size_t)48);
}
static void delete_twice()
{
    void *keep = ::operator new(32);
    void *volatile p = ::operator new(32);
    ::operator delete(p, (size_t)32);
    ::operator delete[](p);
    (void)keep;
}

static void test_misuse_aborts()
{
    CHECK(dies_with(delete_interior, "invalid pointer"), "sized delete of an interior pointer");
    CHECK(dies_with(delete_twice, "double free"), "delete twice");
}

int main()
{
    is_small = (int (*)(const void *))dlsym(RTLD_DEFAULT, "pa_is_small");
    int (*alignment_mode)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "pa_alignment_mode");
    if (!is_small || !alignment_mode) {
        fprintf(stderr, "pyalloc is not loaded (run under LD_PRELOAD=libpyalloc.so)\n");
        return 1;
    }
    mode = alignment_mode();
    stats_get = (int (*)(struct pa_stats *, size_t))dlsym(RTLD_DEFAULT, "pa_stats_get");
    if (!stats_get) {
        fprintf(stderr, "pa_stats_get not found\n");
        return 1;
    }
    const char *env = getenv("PYALLOC_ALIGN");
    CHECK(mode == (env && strcmp(env, "8") == 0 ? 8 : 16), "mode %d", mode);
    test_every_form_is_pyalloc();
    test_forms_allocate_and_free();
    test_default_new_alignment();
    test_statistics_follow_the_class();
    test_delete_of_glibc_blocks();
    test_new_handler_called_and_retried();
    test_bad_alloc_and_nothrow();
    test_misuse_aborts();
    printf("%s: C++ operators, mode %d\n", failures ? "FAIL" : "ok", mode);
    return failures != 0;
}
