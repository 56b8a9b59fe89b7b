/* SPDX-License-Identifier: MIT
 * Libraries opened with RTLD_DEEPBIND use pyalloc's malloc family (src/deepbind.c). Built twice: a
 * program that knows nothing of pyalloc, run under LD_PRELOAD=libpyalloc.so, and one linked with
 * -lpyalloc; both link early_lib (whose constructor opens deep libraries before pyalloc's constructor
 * has run). The libraries come from the environment (CTest sets it):
 *   PA_DEEP_NOW     deep_lib bound at load time, full RELRO      PA_DEEP_LAZY    deep_lib, lazy binding
 *   PA_DEEP_NESTED  deep_lib, opened by the first one's dlopen   PA_DEEP_A/_B    copies for the threads test
 *   PA_DEEP_EARLY   opened in early_lib's constructor            PA_DEEP_BYPASS  the same, through glibc's dlopen
 *   PA_OWN          own_malloc_lib, which brings its own malloc
 *   PA_DEEP_RP_DIR  a directory (relative to this program's) in its RUNPATH only, holding deep_lib as
 *                   libpa_deep_rp1.so, libpa_deep_rp2.so and libpa_deep_rp3.so
 * Checked: the library frees the program's blocks, a string the program strdup-ed, reallocs one, asks
 * malloc_usable_size; the program frees every kind of block the library allocates; GOT slots, a
 * RELRO data word and a writable data word all hold pyalloc's definitions, and the RELRO pages are
 * read-only again; nested DEEPBIND loads; dlclose and dlopen again; two threads loading while two
 * others allocate; a library with its own malloc left alone; the caller's RUNPATH and $ORIGIN still
 * honoured; dlerror's state; dlmopen in the base namespace repaired and in a new one left alone. */
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pa_test.h"

typedef struct deep {
    void *handle;
    void *(*malloc_)(size_t);
    void *(*calloc_)(size_t, size_t);
    void *(*realloc_)(void *, size_t);
    void (*free_)(void *);
    size_t (*usable)(void *);
    void *(*memalign_)(size_t, size_t);
    void *(*aligned_alloc_)(size_t, size_t);
    void *(*posix_memalign_)(size_t, size_t);
    void *(*valloc_)(size_t);
    void *(*pvalloc_)(size_t);
    char *(*strdup_)(const char *);
    void *(*dlopen_)(const char *, int);
    void *(*malloc_address)(void);
    void *(*free_address)(void);
    void *(*dlopen_address)(void);
    void (*const *free_relro)(void *);
    void *(**malloc_data)(size_t);
} deep;

extern void *early_handle, *bypass_handle; /* early_lib: a reference, so that it is linked */
static int (*is_small)(const void *);
static void *global_malloc, *global_free, *global_dlopen;

static const char *env(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        fail_msg("%s is not set (CTest sets it)", name);
    return v;
}

static void *sym(void *h, const char *name)
{
    void *f = dlsym(h, name);
    if (!f)
        fail_msg("dlsym(%s): %s", name, dlerror());
    return f;
}

static void deep_bind(deep *d, void *h)
{
    d->handle = h;
    d->malloc_ = (void *(*)(size_t))sym(h, "deep_malloc");
    d->calloc_ = (void *(*)(size_t, size_t))sym(h, "deep_calloc");
    d->realloc_ = (void *(*)(void *, size_t))sym(h, "deep_realloc");
    d->free_ = (void (*)(void *))sym(h, "deep_free");
    d->usable = (size_t(*)(void *))sym(h, "deep_usable");
    d->memalign_ = (void *(*)(size_t, size_t))sym(h, "deep_memalign");
    d->aligned_alloc_ = (void *(*)(size_t, size_t))sym(h, "deep_aligned_alloc");
    d->posix_memalign_ = (void *(*)(size_t, size_t))sym(h, "deep_posix_memalign");
    d->valloc_ = (void *(*)(size_t))sym(h, "deep_valloc");
    d->pvalloc_ = (void *(*)(size_t))sym(h, "deep_pvalloc");
    d->strdup_ = (char *(*)(const char *))sym(h, "deep_strdup");
    d->dlopen_ = (void *(*)(const char *, int))sym(h, "deep_dlopen");
    d->malloc_address = (void *(*)(void))sym(h, "deep_malloc_address");
    d->free_address = (void *(*)(void))sym(h, "deep_free_address");
    d->dlopen_address = (void *(*)(void))sym(h, "deep_dlopen_address");
    d->free_relro = (void (*const *)(void *))sym(h, "deep_free_relro");
    d->malloc_data = (void *(**)(size_t))sym(h, "deep_malloc_data");
}

static void deep_open_flags(deep *d, const char *path, int flags)
{
    void *h = dlopen(path, flags | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!h)
        fail_msg("dlopen(%s, RTLD_DEEPBIND): %s", path, dlerror());
    deep_bind(d, h);
}

static void deep_open(deep *d, const char *path) { deep_open_flags(d, path, RTLD_NOW); }

/* Every way the library reaches the allocator leads to pyalloc's definitions. */
static void check_bound(const deep *d, const char *what)
{
    if (d->malloc_address() != global_malloc)
        fail_msg("%s: the library's malloc is %p, pyalloc's is %p", what, d->malloc_address(), global_malloc);
    if (d->free_address() != global_free)
        fail_msg("%s: the library's free is %p, pyalloc's is %p", what, d->free_address(), global_free);
    if (d->dlopen_address() != global_dlopen)
        fail_msg("%s: the library's dlopen is %p, pyalloc's is %p", what, d->dlopen_address(), global_dlopen);
    if ((void *)*d->free_relro != global_free)
        fail_msg("%s: the RELRO pointer to free is %p, pyalloc's is %p", what, (void *)*d->free_relro, global_free);
    if ((void *)*d->malloc_data != global_malloc)
        fail_msg("%s: the data pointer to malloc is %p, pyalloc's is %p", what, (void *)*d->malloc_data, global_malloc);
}

/* The library and the program hand each other blocks of every kind. */
static void exercise(const deep *d)
{
    static const size_t sizes[] = {1, 8, 24, 100, 512, 513, 5000, 1 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        unsigned char *p = malloc(n);
        assert_non_null(p);
        t_fill(p, n, 1, i);
        assert_int_equal(d->usable(p), malloc_usable_size(p));
        unsigned char *q = d->realloc_(p, 2 * n + 1);
        assert_non_null(q);
        assert_true(t_check(q, n, 1, i) == (size_t)-1);
        d->free_(q);
        d->free_(malloc(n));
        void *r = d->malloc_(n); /* and the other way round */
        assert_non_null(r);
        assert_int_equal(is_small(r), n <= PA_SMALL_MAX);
        free(r);
    }
    char *s = strdup("a string the program strdup-ed, freed by the deep library");
    d->free_(s);
    s = d->strdup_("a string the deep library strdup-ed, freed by the program");
    assert_true(is_small(s));
    free(s);
    void *blocks[] = {d->calloc_(3, 10), d->memalign_(64, 100), d->memalign_(16, 40), d->aligned_alloc_(32, 64),
                      d->posix_memalign_(128, 300), d->posix_memalign_(16, 48), d->valloc_(100), d->pvalloc_(100),
                      (*d->malloc_data)(40)};
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) {
        assert_non_null(blocks[i]);
        free(blocks[i]);
    }
    void *c = d->calloc_(4, 8);
    assert_true(is_small(c));
    free(c);
    (*d->free_relro)(malloc(40));
}

static void test_preload_in_force(void **state)
{
    (void)state;
    void *p = malloc(32);
    assert_true(is_small(p));
    assert_int_equal(malloc_usable_size(p), 32);
    free(p);
}

static void test_bind_now_relro(void **state)
{
    (void)state;
    deep d;
    deep_open(&d, env("PA_DEEP_NOW"));
    check_bound(&d, "bound at load time");
    exercise(&d);
}

static void test_lazy(void **state)
{
    (void)state;
    deep d;
    /* its PLT slots are still unbound when pyalloc repairs it (RTLD_NOW would bind them all) */
    deep_open_flags(&d, env("PA_DEEP_LAZY"), RTLD_LAZY);
    check_bound(&d, "lazy binding");
    exercise(&d);
}

/* The pages PT_GNU_RELRO covers are read-only again after the repair wrote into them. */
struct relro_find {
    const char *path;
    uintptr_t start, end;
};

static int relro_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct relro_find *f = arg;
    if (!info->dlpi_name || strcmp(info->dlpi_name, f->path) != 0)
        return 0;
    for (size_t i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_GNU_RELRO) {
            uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
            f->start = (info->dlpi_addr + info->dlpi_phdr[i].p_vaddr) & ~(page - 1);
            f->end = (info->dlpi_addr + info->dlpi_phdr[i].p_vaddr + info->dlpi_phdr[i].p_memsz) & ~(page - 1);
        }
    return 1;
}

static void test_relro_read_only_again(void **state)
{
    (void)state;
    deep d;
    deep_open(&d, env("PA_DEEP_NOW"));
    check_bound(&d, "bound at load time");
    struct relro_find f = {.path = env("PA_DEEP_NOW")};
    dl_iterate_phdr(relro_cb, &f);
    if (f.end <= f.start)
        fail_msg("%s has no whole page under PT_GNU_RELRO", f.path);
    FILE *maps = fopen("/proc/self/maps", "r");
    assert_non_null(maps);
    char line[512];
    int covered = 0;
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || hi <= f.start || lo >= f.end)
            continue;
        if (strcmp(perms, "r--p") != 0)
            fail_msg("RELRO page range %lx-%lx of %s is %s after the repair", (unsigned long)f.start,
                     (unsigned long)f.end, f.path, perms);
        covered = 1;
    }
    fclose(maps);
    assert_true(covered);
}

static void test_nested_deepbind_dlopen(void **state)
{
    (void)state;
    deep outer, inner;
    deep_open(&outer, env("PA_DEEP_NOW"));
    void *h = outer.dlopen_(env("PA_DEEP_NESTED"), RTLD_NOW | RTLD_DEEPBIND);
    if (!h)
        fail_msg("the deep library's dlopen(%s): %s", env("PA_DEEP_NESTED"), dlerror());
    deep_bind(&inner, h);
    check_bound(&inner, "opened by a deep library");
    exercise(&inner);
}

static void test_dlclose_and_open_again(void **state)
{
    (void)state;
    for (int i = 0; i < 20; i++) {
        deep d;
        deep_open(&d, env("PA_DEEP_A"));
        check_bound(&d, "opened again");
        d.free_(malloc(24));
        assert_int_equal(dlclose(d.handle), 0);
    }
}

/* Two threads open and close deep libraries while two others allocate and free. */
static _Atomic int churn_stop;

static void *churn_thread(void *arg)
{
    uint64_t rng = (uintptr_t)arg + 1;
    void *slots[64] = {0};
    while (!churn_stop) {
        unsigned i = (unsigned)(t_rand(&rng) % 64);
        free(slots[i]);
        slots[i] = malloc(1 + t_rand(&rng) % 700);
    }
    for (int i = 0; i < 64; i++)
        free(slots[i]);
    return NULL;
}

static void *open_thread(void *arg)
{
    const char *path = arg;
    for (int i = 0; i < 150; i++) {
        void *h = dlopen(path, RTLD_NOW | RTLD_DEEPBIND);
        if (!h)
            return (void *)"dlopen failed";
        void *(*malloc_address)(void) = (void *(*)(void))dlsym(h, "deep_malloc_address");
        void (*deep_free)(void *) = (void (*)(void *))dlsym(h, "deep_free");
        if (!malloc_address || !deep_free || malloc_address() != global_malloc)
            return (void *)"a library opened while other threads allocate keeps glibc's malloc";
        deep_free(malloc(40));
        deep_free(malloc(4000));
        if (dlclose(h) != 0)
            return (void *)"dlclose failed";
    }
    return NULL;
}

static void test_threads_open_while_others_allocate(void **state)
{
    (void)state;
    pthread_t churn[2], open[2];
    churn_stop = 0;
    for (uintptr_t i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&churn[i], NULL, churn_thread, (void *)i), 0);
    assert_int_equal(pthread_create(&open[0], NULL, open_thread, (void *)env("PA_DEEP_A")), 0);
    assert_int_equal(pthread_create(&open[1], NULL, open_thread, (void *)env("PA_DEEP_B")), 0);
    for (int i = 0; i < 2; i++) {
        void *err;
        assert_int_equal(pthread_join(open[i], &err), 0);
        if (err)
            fail_msg("%s", (const char *)err);
    }
    churn_stop = 1;
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(churn[i], NULL), 0);
}

static void test_own_malloc_left_alone(void **state)
{
    (void)state;
    void *h = dlopen(env("PA_OWN"), RTLD_NOW | RTLD_DEEPBIND);
    if (!h)
        fail_msg("dlopen(%s): %s", env("PA_OWN"), dlerror());
    void *(*malloc_address)(void) = (void *(*)(void))sym(h, "own_malloc_address");
    void *(*free_address)(void) = (void *(*)(void))sym(h, "own_free_address");
    void *(*alloc)(size_t) = (void *(*)(size_t))sym(h, "own_alloc");
    void (*own_free)(void *) = (void (*)(void *))sym(h, "own_free");
    int (*is_mine)(const void *) = (int (*)(const void *))sym(h, "own_is_mine");
    unsigned long (*frees)(void) = (unsigned long (*)(void))sym(h, "own_frees");
    unsigned long (*bad)(void) = (unsigned long (*)(void))sym(h, "own_bad_frees");
    assert_ptr_equal(malloc_address(), sym(h, "malloc"));
    assert_ptr_equal(free_address(), sym(h, "free"));
    assert_ptr_not_equal(malloc_address(), global_malloc);
    for (int i = 0; i < 10; i++) {
        void *p = alloc(100);
        assert_true(is_mine(p));
        assert_false(is_small(p));
        own_free(p);
    }
    assert_int_equal(frees(), 10);
    assert_int_equal(bad(), 0);
}

static void test_opened_before_pyalloc_constructor(void **state)
{
    (void)state;
    void **early = &early_handle, **bypass = &bypass_handle;
    if (!*early || !*bypass)
        fail_msg("early_lib's constructor did not open %s and %s", env("PA_DEEP_EARLY"), env("PA_DEEP_BYPASS"));
    deep d;
    deep_bind(&d, *early);
    check_bound(&d, "opened through pyalloc's dlopen before pyalloc's constructor");
    exercise(&d);
    deep_bind(&d, *bypass);
    check_bound(&d, "opened through glibc's own dlopen before pyalloc's constructor");
    exercise(&d);
}

/* The calling object's RUNPATH and $ORIGIN are used as they are without pyalloc: dlopen's caller is
 * still the program, with and without RTLD_DEEPBIND (each library is opened once, so that each open
 * searches). */
static void test_caller_search_path_kept(void **state)
{
    (void)state;
    void *h = dlopen("libpa_deep_rp1.so", RTLD_NOW);
    if (!h)
        fail_msg("dlopen(libpa_deep_rp1.so) through the program's RUNPATH: %s", dlerror());
    deep d;
    deep_open(&d, "libpa_deep_rp2.so");
    check_bound(&d, "found through the caller's RUNPATH");
    exercise(&d);
    char origin[512];
    snprintf(origin, sizeof origin, "$ORIGIN/%s/libpa_deep_rp3.so", env("PA_DEEP_RP_DIR"));
    deep_open(&d, origin);
    check_bound(&d, "found through the caller's $ORIGIN");
    exercise(&d);
}

static void test_dlerror_state(void **state)
{
    (void)state;
    dlerror();
    void *h = dlopen(env("PA_DEEP_NOW"), RTLD_NOW | RTLD_DEEPBIND);
    assert_non_null(h);
    assert_null(dlerror());
    assert_null(dlopen("libpa-no-such-library.so", RTLD_NOW | RTLD_DEEPBIND));
    const char *err = dlerror();
    assert_non_null(err);
    assert_non_null(strstr(err, "libpa-no-such-library.so"));
    assert_null(dlopen("/nonexistent/libpa-none.so", RTLD_NOW | RTLD_DEEPBIND));
    err = dlerror();
    assert_non_null(err);
    assert_non_null(strstr(err, "/nonexistent/libpa-none.so"));
    assert_null(dlerror());
}

static void test_dlmopen(void **state)
{
    (void)state;
    void *h = dlmopen(LM_ID_BASE, env("PA_DEEP_B"), RTLD_NOW | RTLD_DEEPBIND);
    if (!h)
        fail_msg("dlmopen(LM_ID_BASE, %s): %s", env("PA_DEEP_B"), dlerror());
    deep d;
    deep_bind(&d, h);
    check_bound(&d, "dlmopen(LM_ID_BASE, RTLD_DEEPBIND)");
    exercise(&d);
    /* a new namespace has its own libc.so.6 and no pyalloc: its libraries keep that libc's malloc */
    void *ns = dlmopen(LM_ID_NEWLM, env("PA_DEEP_LAZY"), RTLD_NOW | RTLD_DEEPBIND);
    if (!ns)
        fail_msg("dlmopen(LM_ID_NEWLM, %s): %s", env("PA_DEEP_LAZY"), dlerror());
    Lmid_t lmid;
    assert_int_equal(dlinfo(ns, RTLD_DI_LMID, &lmid), 0);
    assert_true(lmid != LM_ID_BASE);
    void *ns_libc = dlmopen(lmid, "libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(ns_libc);
    deep n;
    deep_bind(&n, ns);
    assert_ptr_equal(n.malloc_address(), sym(ns_libc, "malloc"));
    assert_ptr_not_equal(n.malloc_address(), global_malloc);
    n.free_(n.malloc_(100));
    n.free_(n.strdup_("its own libc's block"));
}

static int setup(void **state)
{
    (void)state;
    is_small = (int (*)(const void *))dlsym(RTLD_DEFAULT, "pa_is_small");
    global_malloc = dlsym(RTLD_DEFAULT, "malloc");
    global_free = dlsym(RTLD_DEFAULT, "free");
    global_dlopen = dlsym(RTLD_DEFAULT, "dlopen");
    if (!is_small) {
        fprintf(stderr, "pa_is_small not found: pyalloc is not loaded (run under LD_PRELOAD=libpyalloc.so)\n");
        return -1;
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preload_in_force),
        /* first: a later DEEPBIND dlopen would repair the library glibc's dlopen loaded too */
        cmocka_unit_test(test_opened_before_pyalloc_constructor),
        cmocka_unit_test(test_bind_now_relro),
        cmocka_unit_test(test_lazy),
        cmocka_unit_test(test_relro_read_only_again),
        cmocka_unit_test(test_nested_deepbind_dlopen),
        cmocka_unit_test(test_dlclose_and_open_again),
        cmocka_unit_test(test_threads_open_while_others_allocate),
        cmocka_unit_test(test_own_malloc_left_alone),
        cmocka_unit_test(test_caller_search_path_kept),
        cmocka_unit_test(test_dlerror_state),
        cmocka_unit_test(test_dlmopen),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
