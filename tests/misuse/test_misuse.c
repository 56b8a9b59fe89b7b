/* SPDX-License-Identifier: MIT
 * Death tests: each misuse runs in a forked child whose stderr is captured through a pipe. The child
 * must die of SIGABRT after one line starting with "pyalloc: " that names the fault ("double free",
 * "invalid pointer", or a damaged free list) and the faulting address (the page's, for a damaged
 * list) in hex. Pointers from glibc's own allocator are not
 * misuse: free, realloc and malloc_usable_size must accept them. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "pa_test.h"
#include "death.h"

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

/* --- the misuses ---------------------------------------------------------------------------- */

struct args {
    size_t size;
    size_t offset;
};

/* The child stores the address its message must name in a MAP_SHARED page the parent reads. */
static void **shared_addr;

static void child_double_free(void *arg)
{
    struct args *a = arg;
    void *neighbour = T_MALLOC(a->size); /* keeps the page in use */
    void *p = T_MALLOC(a->size);
    (void)neighbour;
    *shared_addr = p;
    T_FREE(p);
    T_FREE(t_launder(p));
}

static void child_double_free_lone(void *arg)
{
    struct args *a = arg;
    void *p = T_MALLOC(a->size);
    *shared_addr = p;
    T_FREE(p);
    T_FREE(t_launder(p));
}

static void child_free_interior(void *arg)
{
    struct args *a = arg;
    unsigned char *p = T_MALLOC(a->size);
    *shared_addr = p + a->offset;
    T_FREE(t_launder(p + a->offset));
}

static void child_realloc_after_free(void *arg)
{
    struct args *a = arg;
    void *neighbour = T_MALLOC(a->size);
    void *p = T_MALLOC(a->size);
    (void)neighbour;
    *shared_addr = p;
    T_FREE(p);
    void *q = T_REALLOC(t_launder(p), a->size * 2);
    (void)q;
}

static void child_realloc_interior(void *arg)
{
    struct args *a = arg;
    unsigned char *p = T_MALLOC(a->size);
    *shared_addr = p + a->offset;
    void *q = T_REALLOC(t_launder(p + a->offset), a->size + 50);
    (void)q;
}

static void *thread_free(void *p)
{
    T_FREE(p);
    return NULL;
}

static void child_cross_thread_then_owner(void *arg)
{
    struct args *a = arg;
    void *neighbour = T_MALLOC(a->size);
    void *p = T_MALLOC(a->size);
    (void)neighbour;
    *shared_addr = p;
    pthread_t t;
    if (pthread_create(&t, NULL, thread_free, p) != 0 || pthread_join(t, NULL) != 0)
        _exit(90);
    T_FREE(t_launder(p));
}

static void child_owner_then_cross_thread(void *arg)
{
    struct args *a = arg;
    void *neighbour = T_MALLOC(a->size);
    void *p = T_MALLOC(a->size);
    (void)neighbour;
    *shared_addr = p;
    T_FREE(p);
    pthread_t t;
    if (pthread_create(&t, NULL, thread_free, t_launder(p)) != 0 || pthread_join(t, NULL) != 0)
        _exit(90);
}

static void *thread_alloc(void *arg)
{
    struct args *a = arg;
    return T_MALLOC(a->size);
}

static void child_dead_thread_block_twice(void *arg)
{
    /* a block whose owner thread has exited, freed twice by main */
    pthread_t t;
    void *p = NULL;
    if (pthread_create(&t, NULL, thread_alloc, arg) != 0 || pthread_join(t, &p) != 0 || !p)
        _exit(90);
    *shared_addr = p;
    T_FREE(p);
    T_FREE(t_launder(p));
}

static void child_foreign_pointers(void *arg)
{
    (void)arg;
    unsigned char *p = __libc_malloc(100);
    if (p == NULL || T_USABLE(p) < 100 || pa_is_small(p))
        _exit(10);
    t_fill(p, 100, 1, 2);
    p = T_REALLOC(p, 1000);
    if (p == NULL || t_check(p, 100, 1, 2) != (size_t)-1)
        _exit(11);
    T_FREE(p);
    p = __libc_malloc(24);
    if (p == NULL || T_USABLE(p) < 24)
        _exit(12);
    t_fill(p, 24, 3, 4);
    p = T_REALLOC(p, 16); /* shrink a foreign block */
    if (p == NULL || t_check(p, 16, 3, 4) != (size_t)-1)
        _exit(13);
    p = T_REALLOC(p, 200);
    if (p == NULL || t_check(p, 16, 3, 4) != (size_t)-1)
        _exit(14);
    T_FREE(p);
    p = __libc_calloc(10, 10);
    if (p == NULL || p[99] != 0 || T_USABLE(p) < 100)
        _exit(15);
    T_FREE(p);
    p = __libc_memalign(64, 100);
    if (p == NULL || T_USABLE(p) < 100)
        _exit(16);
    T_FREE(p);
    p = __libc_malloc(1 << 20); /* mmap'ed by glibc */
    if (p == NULL || T_USABLE(p) < (1 << 20))
        _exit(17);
    p = T_REALLOC(p, 10);
    if (p == NULL)
        _exit(18);
    T_FREE(p);
    if (T_REALLOC(__libc_malloc(50), 0) != NULL) /* realloc(p, 0) frees a foreign block too */
        _exit(19);
}

/* --- writes that damage a free list (issue 15): the next malloc that follows the link must stop
 * with "heap corruption: free list of page P (class C) damaged", P the page of the damaged block -- */

#define PAGE_OF(p) ((void *)((uintptr_t)(p) & ~(uintptr_t)(32768 - 1)))

/* Two blocks of a->size bytes side by side (q right after p in the same page). */
static void adjacent_pair(size_t size, unsigned char **p, unsigned char **q)
{
    enum { N = 256 };
    static unsigned char *held[N];
    size_t stride = T_USABLE(t_launder(T_MALLOC(size))); /* the class size */
    for (size_t i = 0; i < N; i++) {
        held[i] = T_MALLOC(size);
        for (size_t j = 0; j < i; j++) {
            if (held[j] + stride == held[i] && PAGE_OF(held[j]) == PAGE_OF(held[i])) {
                *p = held[j];
                *q = held[i];
                return;
            }
        }
    }
    _exit(91); /* fresh blocks are carved in address order: a pair must turn up */
}

/* A program writes past the end of p into its free neighbour q (a heap overflow), then mallocs. */
static void child_overflow_into_free(void *arg)
{
    struct args *a = arg;
    unsigned char *p, *q;
    adjacent_pair(a->size, &p, &q);
    size_t usable = T_USABLE(p);
    T_FREE(q);
    *shared_addr = PAGE_OF(q);
    memset(t_launder(p), 'A', usable + 8); /* 8 bytes too many: q's first word */
    for (int i = 0; i < 3; i++)
        (void)T_MALLOC(a->size);
}

/* A program writes into the first word of a block it freed (use after free), then mallocs. */
static void child_write_after_free(void *arg)
{
    struct args *a = arg;
    void *keep = T_MALLOC(a->size); /* keeps the page in use */
    uint64_t *p = T_MALLOC(a->size);
    (void)keep;
    T_FREE(p);
    *shared_addr = PAGE_OF(p);
    *(volatile uint64_t *)t_launder(p) = a->offset; /* the value the program wrote */
    for (int i = 0; i < 3; i++)
        (void)T_MALLOC(a->size);
}

/* Another thread frees two blocks (onto the page's thread_free list), the program then writes into
 * one of them; the owner meets the damage when it collects the list. */
static void child_write_after_remote_free(void *arg)
{
    struct args *a = arg;
    unsigned char *p, *q;
    adjacent_pair(a->size, &p, &q);
    pthread_t t;
    if (pthread_create(&t, NULL, thread_free, p) != 0 || pthread_join(t, NULL) != 0 ||
        pthread_create(&t, NULL, thread_free, q) != 0 || pthread_join(t, NULL) != 0)
        _exit(90);
    *shared_addr = PAGE_OF(q);
    *(volatile uint64_t *)t_launder(q) = a->offset;
    for (int i = 0; i < 70000; i++) /* more than a page holds: the page's remote frees get collected */
        (void)T_MALLOC(a->size);
}

/* --- the tests ------------------------------------------------------------------------------ */

static struct outcome outcome;

#define RUN(fn, ...)                                                                               \
    do {                                                                                           \
        struct args a_ = {__VA_ARGS__};                                                            \
        *shared_addr = NULL;                                                                       \
        run_in_child(fn, &a_, &outcome);                                                           \
    } while (0)

static void test_double_free(void **state)
{
    (void)state;
    const size_t sizes[] = {1, 8, 16, 24, 64, 100, 256, 512};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        RUN(child_double_free, .size = sizes[i]);
        expect_abort(&outcome, "double free", NULL, *shared_addr);
    }
}

static void test_double_free_lone_block(void **state)
{
    (void)state;
    const size_t sizes[] = {8, 48, 512};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        RUN(child_double_free_lone, .size = sizes[i]);
        expect_abort(&outcome, "double free", NULL, *shared_addr);
    }
}

static void test_free_inside_block(void **state)
{
    (void)state;
    const size_t cases[][2] = {{64, 8}, {256, 100}, {256, 128}, {48, 16}, {512, 256}, {32, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        RUN(child_free_interior, .size = cases[i][0], .offset = cases[i][1]);
        expect_abort(&outcome, "invalid pointer", NULL, *shared_addr);
    }
}

static void test_realloc_after_free(void **state)
{
    (void)state;
    RUN(child_realloc_after_free, .size = 100);
    expect_abort(&outcome, "double free", "invalid pointer", *shared_addr);
    RUN(child_realloc_after_free, .size = 8);
    expect_abort(&outcome, "double free", "invalid pointer", *shared_addr);
}

static void test_realloc_inside_block(void **state)
{
    (void)state;
    RUN(child_realloc_interior, .size = 64, .offset = 8);
    expect_abort(&outcome, "invalid pointer", NULL, *shared_addr);
    RUN(child_realloc_interior, .size = 256, .offset = 100);
    expect_abort(&outcome, "invalid pointer", NULL, *shared_addr);
}

static void test_cross_thread_double_free(void **state)
{
    (void)state;
    RUN(child_cross_thread_then_owner, .size = 48);
    expect_abort(&outcome, "double free", NULL, *shared_addr);
    RUN(child_owner_then_cross_thread, .size = 48);
    expect_abort(&outcome, "double free", NULL, *shared_addr);
    RUN(child_dead_thread_block_twice, .size = 200);
    expect_abort(&outcome, "double free", NULL, *shared_addr);
}

static void test_damaged_free_list(void **state)
{
    (void)state;
    const size_t sizes[] = {8, 16, 24, 32, 48, 100, 256, 512};
    const uint64_t values[] = {0, 1, 0x4141414141414141ull, 0x00007f0000001000ull, 0xffffffffffffffffull};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        RUN(child_overflow_into_free, .size = sizes[i]);
        expect_abort(&outcome, "heap corruption: free list of page", NULL, *shared_addr);
        for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
            RUN(child_write_after_free, .size = sizes[i], .offset = values[v]);
            expect_abort(&outcome, "heap corruption: free list of page", NULL, *shared_addr);
        }
        RUN(child_write_after_remote_free, .size = sizes[i], .offset = values[2]);
        expect_abort(&outcome, "heap corruption: free list of page", NULL, *shared_addr);
    }
}

static void test_foreign_pointers_accepted(void **state)
{
    (void)state;
    RUN(child_foreign_pointers, .size = 0);
    expect_clean_exit(&outcome);
}

static int setup(void **state)
{
    (void)state;
    shared_addr = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return shared_addr == MAP_FAILED ? -1 : 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_double_free),
        cmocka_unit_test(test_double_free_lone_block),
        cmocka_unit_test(test_free_inside_block),
        cmocka_unit_test(test_realloc_after_free),
        cmocka_unit_test(test_realloc_inside_block),
        cmocka_unit_test(test_cross_thread_double_free),
        cmocka_unit_test(test_damaged_free_list),
        cmocka_unit_test(test_foreign_pointers_accepted),
    };
    print_message("pyalloc misuse tests through %s\n", T_API_NAME);
    return cmocka_run_group_tests(tests, setup, NULL);
}
