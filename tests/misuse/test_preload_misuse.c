/* SPDX-License-Identifier: MIT
 * Misuse and foreign pointers in a program that knows nothing of pyalloc (not linked to it), run under
 * LD_PRELOAD=libpyalloc.so, through the plain malloc/free/realloc/malloc_usable_size names:
 *   - defined outcome "message and abort" (one "pyalloc: " line naming the fault and the address):
 *     double free; free of an address inside a block; free of a block that was handed to another
 *     thread and freed there; realloc of a freed block;
 *   - defined outcome "handed to glibc": pointers from glibc's allocator that pyalloc never served
 *     (__libc_malloc & co., as if allocated before the preload took over) and the blocks a library
 *     opened with dlopen(RTLD_NOW | RTLD_DEEPBIND) allocated in its constructor, which runs before
 *     pyalloc repairs the library (its malloc is glibc's until then, pyalloc's after). free, realloc
 *     (grow, shrink, to 0) and malloc_usable_size of them must work and keep the contents; the
 *     library must also be able to free and realloc those blocks itself.
 * usage: test_preload_misuse FOREIGN_LIB.so (run with LD_PRELOAD set to libpyalloc.so). */
#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "pa_test.h"
#include "death.h"

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

static const char *lib_path;
static void **shared_addr;          /* the address a child's message must name (MAP_SHARED) */
static int (*is_small)(const void *); /* pyalloc's pa_is_small, found with dlsym */

static struct {
    void *handle;
    void *(*malloc_)(size_t);
    void *(*realloc_)(void *, size_t);
    void (*free_)(void *);
    size_t (*usable)(void *);
    void *(*malloc_address)(void);
    void *(*ctor_block)(size_t);
    void *(*ctor_malloc_address)(void);
} lib;

static void *must_sym(void *handle, const char *name)
{
    void *f = dlsym(handle, name);
    if (f == NULL)
        fail_msg("dlsym(%s): %s", name, dlerror());
    return f;
}

/* --- the preload is in force ------------------------------------------------------------------ */

static void test_preload_in_force(void **state)
{
    (void)state;
    if (is_small == NULL)
        fail_msg("pa_is_small not found: run this test with LD_PRELOAD=libpyalloc.so");
    void *p = malloc(32);
    assert_non_null(p);
    assert_true(is_small(p));
    assert_int_equal(malloc_usable_size(p), 32); /* glibc would say 40 */
    free(p);
}

/* --- RTLD_DEEPBIND: glibc's malloc in the constructor, pyalloc's after ------------------------------ */

static void test_deepbind_library_repaired(void **state)
{
    (void)state;
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(libc);
    void *glibc_malloc = must_sym(libc, "malloc");
    void *global_malloc = must_sym(RTLD_DEFAULT, "malloc");
    if (global_malloc == glibc_malloc)
        fail_msg("malloc in the global scope is glibc's: the preload is not in force");
    if (lib.ctor_malloc_address() != glibc_malloc)
        fail_msg("the RTLD_DEEPBIND library's constructor called malloc %p, not glibc's %p",
                 lib.ctor_malloc_address(), glibc_malloc);
    if (lib.malloc_address() != global_malloc)
        fail_msg("the RTLD_DEEPBIND library's malloc is %p after dlopen, not pyalloc's %p",
                 lib.malloc_address(), global_malloc);
    void *p = lib.malloc_(32);
    assert_non_null(p);
    assert_true(is_small(p));
    assert_int_equal(lib.usable(p), 32);
    lib.free_(p);
    void *c = lib.ctor_block(4); /* 32 bytes, from the constructor */
    assert_false(is_small(c));
    assert_int_equal(malloc_usable_size(c), 40); /* glibc's chunk, as glibc sizes it */
}

static void child_deepbind_pointers(void *arg)
{
    (void)arg;
    static const size_t sizes[] = {1, 8, 16, 24, 32, 100, 512, 513, 4096, 1 << 20};
    enum { NS = sizeof sizes / sizeof sizes[0] };
    for (size_t i = 0; i < NS; i++) {
        size_t n = sizes[i];
        unsigned char *p = lib.ctor_block(i);
        if (p == NULL || is_small(p) || malloc_usable_size(p) < n)
            _exit(10);
        t_fill(p, n, 7, i);
        /* grow through pyalloc's realloc: glibc's realloc serves it, contents kept */
        unsigned char *q = realloc(p, 2 * n + 1);
        if (q == NULL || t_check(q, n, 7, i) != (size_t)-1 || malloc_usable_size(q) < 2 * n + 1)
            _exit(11);
        /* shrink it again, then free it through pyalloc */
        q = realloc(q, n / 2 + 1);
        if (q == NULL || t_check(q, n / 2 + 1, 7, i) != (size_t)-1)
            _exit(12);
        free(q);
        /* straight free of another, and the library's own free (pyalloc's now) of a third */
        free(lib.ctor_block(NS + i));
        lib.free_(lib.ctor_block(2 * NS + i));
    }
    unsigned char *c = lib.ctor_block(3 * NS); /* calloc(10, 30) */
    if (c == NULL || c[0] != 0 || c[299] != 0 || malloc_usable_size(c) < 300)
        _exit(13);
    free(c);
    void *a = lib.ctor_block(3 * NS + 1); /* posix_memalign(64, 200) */
    if (a == NULL || (uintptr_t)a % 64 != 0 || malloc_usable_size(a) < 200)
        _exit(14);
    free(a);
    /* the library's realloc (pyalloc's now) of its constructor's block: glibc's realloc serves it */
    unsigned char *r = lib.ctor_block(3 * NS + 2); /* realloc(NULL, 20) */
    t_fill(r, 20, 8, 1);
    r = lib.realloc_(r, 5000);
    if (r == NULL || t_check(r, 20, 8, 1) != (size_t)-1 || lib.usable(r) < 5000)
        _exit(16);
    lib.free_(r);
    void *m = lib.ctor_block(3 * NS + 3); /* memalign(256, 100) */
    if (m == NULL || (uintptr_t)m % 256 != 0 || realloc(m, 0) != NULL) /* realloc(p, 0) frees a foreign block */
        _exit(15);
    /* pyalloc's blocks, next to the foreign ones, are untouched */
    void *mine = malloc(48);
    if (!is_small(mine))
        _exit(17);
    free(mine);
}

static void test_deepbind_pointers_freed_through_pyalloc(void **state)
{
    (void)state;
    struct outcome o;
    run_in_child(child_deepbind_pointers, NULL, &o);
    expect_clean_exit(&o);
}

/* --- glibc's allocator entry points: blocks pyalloc never saw ------------------------------------ */

static void child_libc_pointers(void *arg)
{
    (void)arg;
    unsigned char *p = __libc_malloc(100);
    if (p == NULL || is_small(p) || malloc_usable_size(p) < 100)
        _exit(10);
    t_fill(p, 100, 1, 2);
    p = realloc(p, 1000);
    if (p == NULL || t_check(p, 100, 1, 2) != (size_t)-1)
        _exit(11);
    free(p);
    p = __libc_realloc(NULL, 24);
    t_fill(p, 24, 3, 4);
    p = realloc(p, 16); /* shrink a foreign block to a pool size: it stays with glibc */
    if (p == NULL || t_check(p, 16, 3, 4) != (size_t)-1)
        _exit(12);
    free(p);
    p = __libc_calloc(10, 10);
    if (p == NULL || p[99] != 0 || malloc_usable_size(p) < 100)
        _exit(13);
    free(p);
    p = __libc_memalign(256, 100);
    if (p == NULL || (uintptr_t)p % 256 != 0 || malloc_usable_size(p) < 100)
        _exit(14);
    free(p);
    p = __libc_malloc(1 << 20); /* mmap'ed by glibc */
    if (p == NULL || malloc_usable_size(p) < (1 << 20))
        _exit(15);
    p = realloc(p, 10);
    if (p == NULL)
        _exit(16);
    free(p);
}

static void test_libc_pointers_freed_through_pyalloc(void **state)
{
    (void)state;
    struct outcome o;
    run_in_child(child_libc_pointers, NULL, &o);
    expect_clean_exit(&o);
}

/* --- the four faults, through the preloaded names -------------------------------------------------- */

static void child_double_free(void *arg)
{
    size_t n = (size_t)(uintptr_t)arg;
    void *keep = malloc(n); /* keeps the page in use */
    void *p = malloc(n);
    (void)keep;
    *shared_addr = p;
    free(p);
    free(t_launder(p));
}

static void child_free_interior(void *arg)
{
    size_t n = (size_t)(uintptr_t)arg;
    unsigned char *p = malloc(n);
    *shared_addr = p + n / 2;
    free(t_launder(p + n / 2));
}

static void *thread_free(void *p)
{
    free(p);
    return NULL;
}

static void child_freed_by_other_thread(void *arg)
{
    size_t n = (size_t)(uintptr_t)arg;
    void *keep = malloc(n);
    void *p = malloc(n);
    (void)keep;
    *shared_addr = p;
    pthread_t t;
    if (pthread_create(&t, NULL, thread_free, p) != 0 || pthread_join(t, NULL) != 0)
        _exit(90);
    free(t_launder(p)); /* the block was handed over and freed there */
}

static void child_realloc_freed(void *arg)
{
    size_t n = (size_t)(uintptr_t)arg;
    void *keep = malloc(n);
    void *p = malloc(n);
    (void)keep;
    *shared_addr = p;
    free(p);
    void *q = realloc(t_launder(p), 3 * n);
    (void)q;
}

static void run_fault(void (*fn)(void *), size_t n, const char *word1, const char *word2)
{
    struct outcome o;
    *shared_addr = NULL;
    run_in_child(fn, (void *)(uintptr_t)n, &o);
    expect_abort(&o, word1, word2, *shared_addr);
}

static void test_double_free(void **state)
{
    (void)state;
    run_fault(child_double_free, 24, "double free", NULL);
    run_fault(child_double_free, 512, "double free", NULL);
}

static void test_free_inside_block(void **state)
{
    (void)state;
    run_fault(child_free_interior, 64, "invalid pointer", NULL);
    run_fault(child_free_interior, 400, "invalid pointer", NULL);
}

static void test_free_after_other_thread_freed(void **state)
{
    (void)state;
    run_fault(child_freed_by_other_thread, 48, "double free", NULL);
    run_fault(child_freed_by_other_thread, 300, "double free", NULL);
}

static void test_realloc_of_freed_block(void **state)
{
    (void)state;
    run_fault(child_realloc_freed, 100, "double free", "invalid pointer");
    run_fault(child_realloc_freed, 8, "double free", "invalid pointer");
}

static int setup(void **state)
{
    (void)state;
    shared_addr = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared_addr == MAP_FAILED)
        return -1;
    is_small = (int (*)(const void *))dlsym(RTLD_DEFAULT, "pa_is_small");
    lib.handle = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (lib.handle == NULL) {
        fprintf(stderr, "dlopen(%s, RTLD_DEEPBIND): %s\n", lib_path, dlerror());
        return -1;
    }
    lib.malloc_ = (void *(*)(size_t))must_sym(lib.handle, "foreign_malloc");
    lib.realloc_ = (void *(*)(void *, size_t))must_sym(lib.handle, "foreign_realloc");
    lib.free_ = (void (*)(void *))must_sym(lib.handle, "foreign_free");
    lib.usable = (size_t(*)(void *))must_sym(lib.handle, "foreign_usable_size");
    lib.malloc_address = (void *(*)(void))must_sym(lib.handle, "foreign_malloc_address");
    lib.ctor_block = (void *(*)(size_t))must_sym(lib.handle, "foreign_ctor_block");
    lib.ctor_malloc_address = (void *(*)(void))must_sym(lib.handle, "foreign_ctor_malloc_address");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FOREIGN_LIB.so (under LD_PRELOAD=libpyalloc.so)\n", argv[0]);
        return 2;
    }
    lib_path = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preload_in_force),
        cmocka_unit_test(test_deepbind_library_repaired),
        cmocka_unit_test(test_deepbind_pointers_freed_through_pyalloc),
        cmocka_unit_test(test_libc_pointers_freed_through_pyalloc),
        cmocka_unit_test(test_double_free),
        cmocka_unit_test(test_free_inside_block),
        cmocka_unit_test(test_free_after_other_thread_freed),
        cmocka_unit_test(test_realloc_of_freed_block),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
