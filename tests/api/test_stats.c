/* SPDX-License-Identifier: MIT
 * pa_stats_get and pa_stats_print: the figures checked against allocations whose count, size and
 * thread are known. Every check compares two snapshots, so what the C runtime and cmocka allocate
 * around the test does not matter. Built for the libc names and for pa_*, in both alignment modes.
 * 200-byte requests are used because nothing else in the process asks for them: class 208 in the
 * default mode (8 bytes wasted each), class 200 in the classic one (none). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pa_test.h"

#define N 1000
#define REQ 200

static struct pa_class_stats class_of(const struct pa_stats *s, unsigned long long size)
{
    for (unsigned i = 0; i < s->nclasses; i++)
        if (s->classes[i].size == size)
            return s->classes[i];
    fail_msg("no class of %llu bytes in the report", size);
    struct pa_class_stats none = {0};
    return none;
}

static struct pa_stats snap(void)
{
    struct pa_stats s;
    assert_int_equal(pa_stats_get(&s, sizeof s), 0);
    return s;
}

static unsigned long long req_class(void) { return pa_alignment_mode() == 8 ? 200 : 208; }

static void test_refuses_a_short_buffer(void **state)
{
    (void)state;
    struct pa_stats s;
    size_t first = offsetof(struct pa_stats, pages_taken); /* the struct of the first pyalloc.h */
    assert_int_equal(pa_stats_get(&s, first - 1), -1);
    assert_int_equal(pa_stats_get(NULL, sizeof s), -1);
    /* a caller built against that header gets its fields, and nothing is written past them */
    memset(&s, 0xa5, sizeof s);
    assert_int_equal(pa_stats_get(&s, first), 0);
    assert_int_equal(s.page_size, 32768);
    const unsigned char *tail = (const unsigned char *)&s + first;
    for (size_t i = 0; i < sizeof s - first; i++)
        assert_int_equal(tail[i], 0xa5);
}

static void test_classes_follow_the_mode(void **state)
{
    (void)state;
    T_FREE(T_MALLOC(REQ)); /* this thread has a heap from now on */
    struct pa_stats s = snap();
    int mode = pa_alignment_mode();
    assert_int_equal(s.alignment, mode);
    assert_int_equal(s.nclasses, mode == 8 ? 64 : 33);
    assert_int_equal(s.classes[0].size, 8);
    assert_int_equal(s.classes[1].size, 16);
    assert_int_equal(s.classes[2].size, mode == 8 ? 24 : 32);
    assert_int_equal(s.classes[s.nclasses - 1].size, 512);
    assert_true(s.heaps_live >= 1);
    assert_true(s.arenas_committed >= 1);
    assert_int_equal(s.bytes_committed, s.arenas_committed * 64 * s.page_size); /* 64 pages an arena */
}

static void test_counts_known_allocations(void **state)
{
    (void)state;
    static void *b[N];
    struct pa_stats s0 = snap();
    for (int i = 0; i < N; i++) {
        b[i] = T_MALLOC(REQ);
        assert_non_null(b[i]);
    }
    struct pa_stats s1 = snap();
    struct pa_class_stats c0 = class_of(&s0, req_class()), c1 = class_of(&s1, req_class());
    assert_int_equal(s1.page_size, 32768);
    unsigned long long per_page = s1.page_size / req_class();
    if (s1.enabled) {
        assert_int_equal(c1.allocs - c0.allocs, N);
        assert_int_equal(c1.wasted - c0.wasted, (unsigned long long)N * (req_class() - REQ));
    }
    assert_int_equal(c1.in_use - c0.in_use, N);
    assert_true(c1.pages - c0.pages >= N / per_page);
    assert_true(c1.pages <= c0.pages + N / per_page + 2);
    assert_int_equal(c1.bytes_held, c1.pages * s1.page_size);
    assert_true(c1.peak_pages >= c1.pages);
    assert_true(c1.peak_in_use >= c1.in_use);
    assert_true(s1.in_use_bytes - s0.in_use_bytes >= (unsigned long long)N * req_class());

    for (int i = 0; i < N / 2; i++)
        T_FREE(b[i]);
    struct pa_stats s2 = snap();
    struct pa_class_stats c2 = class_of(&s2, req_class());
    assert_int_equal(c1.in_use - c2.in_use, N / 2);
    if (s2.enabled) {
        assert_int_equal(c2.frees - c1.frees, N / 2);
        assert_int_equal(c2.allocs, c1.allocs);
    }
    /* the totals are the sums of the rows */
    unsigned long long allocs = 0, in_use = 0, pages = 0;
    for (unsigned i = 0; i < s2.nclasses; i++) {
        allocs += s2.classes[i].allocs;
        in_use += s2.classes[i].in_use;
        pages += s2.classes[i].pages;
    }
    assert_int_equal(s2.total.allocs, allocs);
    assert_int_equal(s2.total.in_use, in_use);
    assert_int_equal(s2.total.pages, pages);
    for (int i = N / 2; i < N; i++)
        T_FREE(b[i]);
    struct pa_stats s3 = snap();
    struct pa_class_stats c3 = class_of(&s3, req_class());
    assert_int_equal(c2.in_use - c3.in_use, N / 2);
    assert_true(c3.peak_pages >= c1.pages); /* the peak outlives the pages */
}

static void test_counts_passthrough(void **state)
{
    (void)state;
    struct pa_stats s0 = snap();
    void *p = T_MALLOC(100000), *q = T_CALLOC(10, 1000);
    assert_non_null(p);
    assert_non_null(q);
    struct pa_stats s1 = snap();
    T_FREE(p);
    T_FREE(q);
    if (!s1.enabled) { /* built with -DPYALLOC_STATS=OFF: not counted at all */
        assert_int_equal(s1.passthrough_calls, 0);
        return;
    }
    assert_int_equal(s1.passthrough_calls - s0.passthrough_calls, 2);
    assert_int_equal(s1.passthrough_bytes - s0.passthrough_bytes, 110000);
}

static void *free_one(void *arg)
{
    T_FREE(arg);
    return NULL;
}

/* Live bytes: small blocks x class size, and glibc's blocks at exactly their usable size through
 * every function that hands one out or takes it back (realloc growing, moving into a mapping and
 * freeing by realloc(p, 0) included), a free in another thread too; the peak covers them. */
static void test_live_bytes(void **state)
{
    (void)state;
    /* What the process keeps for good the first time: glibc's malloc_usable_size, looked up (dlsym),
     * and a thread's stack in glibc's cache, with its TLS blocks (aligned: passed to glibc). */
    void *w = T_MALLOC(1000);
    assert_true(T_USABLE(w) >= 1000);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, free_one, w), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    struct pa_stats s0 = snap();
    void *small[N];
    for (int i = 0; i < N; i++)
        assert_non_null(small[i] = T_MALLOC(REQ));
    void *p = T_MALLOC(100000), *q = T_CALLOC(10, 1000), *r = T_MALLOC(600), *a = NULL, *z = T_MALLOC(700);
    assert_non_null(p);
    assert_non_null(q);
    assert_non_null(r);
    assert_non_null(z);
    assert_non_null(r = T_REALLOC(r, 5000));
    assert_int_equal(T_POSIX_MEMALIGN(&a, 64, 4096), 0);
    void *v = T_VALLOC(10000);
    assert_non_null(v);
    assert_null(T_REALLOC(z, 0)); /* frees z */
    assert_non_null(r = T_REALLOC(r, 300000)); /* glibc maps it: another header size */
    struct pa_stats s1 = snap();
    unsigned long long usable = T_USABLE(p) + T_USABLE(q) + T_USABLE(r) + T_USABLE(a) + T_USABLE(v);
    assert_int_equal(pthread_create(&t, NULL, free_one, p), 0); /* counted in another heap */
    assert_int_equal(pthread_join(t, NULL), 0);
    T_FREE(q);
    T_FREE(r);
    T_FREE(a);
    T_FREE(v);
    for (int i = 0; i < N; i++)
        T_FREE(small[i]);
    struct pa_stats s2 = snap();
    assert_int_equal(s1.live_bytes, s1.in_use_bytes + s1.passthrough_live);
    assert_int_equal(s1.in_use_bytes - s0.in_use_bytes, (unsigned long long)N * req_class());
    assert_true(s1.peak_live_bytes >= s1.live_bytes);
    assert_true(s1.peak_t_ms <= s1.t_ms);
    assert_true(s1.rss_bytes > s1.live_bytes / 2); /* the blocks are barely touched */
    if (!s1.enabled) { /* built with -DPYALLOC_STATS=OFF: glibc's blocks are not counted */
        assert_int_equal(s1.passthrough_live, 0);
        return;
    }
    assert_int_equal(s1.passthrough_live - s0.passthrough_live, usable);
    assert_int_equal(s2.passthrough_live, s0.passthrough_live);
    assert_int_equal(s2.in_use_bytes, s0.in_use_bytes);
    /* the 300000-byte realloc evaluated the peak with every block live */
    assert_true(s2.peak_live_bytes >= s1.live_bytes);
}

static void *free_them(void *arg)
{
    void **b = arg;
    for (int i = 0; i < N; i++)
        T_FREE(b[i]);
    return NULL;
}

static void *alloc_some(void *arg)
{
    (void)arg;
    void *p = T_MALLOC(REQ);
    T_FREE(p);
    return NULL;
}

static void test_counts_threads(void **state)
{
    (void)state;
    static void *b[N];
    for (int i = 0; i < N; i++)
        b[i] = T_MALLOC(REQ);
    struct pa_stats s0 = snap();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, free_them, b), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    struct pa_stats s1 = snap();
    assert_true(s1.cross_thread_frees - s0.cross_thread_frees >= N);
    /* a thread that allocated leaves an abandoned heap behind for the next thread to reuse */
    assert_int_equal(pthread_create(&t, NULL, alloc_some, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    struct pa_stats s2 = snap();
    assert_true(s2.heaps_abandoned >= 1);
    assert_int_equal(s2.heaps_live, s0.heaps_live);
    /* With the counters, the remote frees count as frees at once, in the freeing thread's heap
     * (alloc_some also mallocs and frees one), before the main thread, which owns the pages,
     * collects the blocks. Without them (-DPYALLOC_STATS=OFF) in use is read off the pages, where
     * the blocks count until collected. 2 * N more blocks then leave N more in use than before
     * the remote frees either way (the main thread collects before it takes a new page). */
    struct pa_class_stats c0 = class_of(&s0, req_class()), c2 = class_of(&s2, req_class());
    if (s2.enabled) {
        assert_int_equal(c2.frees - c0.frees, N + 1);
        assert_int_equal(c2.in_use, c0.in_use - N);
    } else {
        assert_int_equal(c2.in_use, c0.in_use);
    }
    static void *more[2 * N];
    for (int i = 0; i < 2 * N; i++)
        more[i] = T_MALLOC(REQ);
    struct pa_stats s3 = snap();
    assert_int_equal(class_of(&s3, req_class()).in_use, c0.in_use + N);
    for (int i = 0; i < 2 * N; i++)
        T_FREE(more[i]);
}

static void *leave_blocks(void *arg)
{
    void **b = arg;
    for (int i = 0; i < N; i++)
        b[i] = T_MALLOC(REQ);
    return NULL;
}

/* Pages through the pool and adopted: a thread takes pages from the pool and exits holding their
 * blocks; this thread, which allocates the class too, adopts each page as it frees into it, and
 * the pages go back to the pool as they empty (but for the heap's few spares). */
static void test_counts_pool_pages_and_adoption(void **state)
{
    (void)state;
    static void *b[N];
    void *keep = T_MALLOC(REQ); /* this thread allocates the class */
    struct pa_stats s0 = snap();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, leave_blocks, b), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    struct pa_stats s1 = snap();
    unsigned long long pages = N / (s1.page_size / req_class()); /* whole pages of those blocks */
    assert_true(s1.pages_taken - s0.pages_taken >= pages);
    assert_int_equal(s1.pages_adopted, s0.pages_adopted);
    for (int i = 0; i < N; i++)
        T_FREE(b[i]);
    struct pa_stats s2 = snap();
    assert_true(s2.pages_adopted - s1.pages_adopted >= pages);
    assert_true(s2.pages_returned > s1.pages_returned);
    assert_true(s2.pages_returned <= s2.pages_taken);
    T_FREE(keep);
}

/* A thread whose only requests pass through to glibc: it gets a heap at its first one, so its
 * counts are its own (the shared atomic counters are for threads that cannot have a heap). */
static void *large_only(void *arg)
{
    struct pa_stats *s = arg;
    s[0] = snap();
    void *p = T_MALLOC(100000);
    s[1] = snap();
    void *q = T_MALLOC(200000);
    s[2] = snap();
    T_FREE(p);
    T_FREE(q);
    return NULL;
}

static void test_passthrough_thread_gets_a_heap(void **state)
{
    (void)state;
    struct pa_stats s[3];
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, large_only, s), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    if (!s[0].enabled) return; /* -DPYALLOC_STATS=OFF: passthrough is not counted, no heap is made */
    assert_int_equal(s[1].heaps_live - s[0].heaps_live, 1);
    assert_int_equal(s[2].heaps_live, s[1].heaps_live);
    assert_int_equal(s[1].passthrough_calls - s[0].passthrough_calls, 1);
    assert_int_equal(s[2].passthrough_calls - s[1].passthrough_calls, 1);
    assert_int_equal(s[2].passthrough_bytes - s[0].passthrough_bytes, 300000);
}

/* Reads what fd's other end got. */
static size_t drain(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    ssize_t k;
    while (n + 1 < cap && (k = read(fd, buf + n, cap - 1 - n)) > 0)
        n += (size_t)k;
    buf[n] = 0;
    return n;
}

static void test_print_text_and_json(void **state)
{
    (void)state;
    static char buf[64 * 1024];
    int fds[2];
    void *p = T_MALLOC(REQ);

    assert_int_equal(pipe(fds), 0);
    assert_int_equal(pa_stats_print(fds[1], PA_STATS_TEXT), 0);
    close(fds[1]);
    drain(fds[0], buf, sizeof buf);
    close(fds[0]);
    assert_non_null(strstr(buf, "pyalloc " PA_VERSION_STRING " report: pid "));
    assert_non_null(strstr(buf, ", pages of 32.0 KiB\n"));
    char row[16];
    snprintf(row, sizeof row, "\n%5llu ", req_class());
    assert_non_null(strstr(buf, row));
    assert_non_null(strstr(buf, "\ntotal "));
    assert_non_null(strstr(buf, " KiB\n")); /* sizes in human units: a class holds whole 32 KiB pages */
    assert_non_null(strstr(buf, "\npassed to glibc:  "));

    assert_int_equal(pipe(fds), 0);
    assert_int_equal(pa_stats_print(fds[1], PA_STATS_JSON), 0);
    close(fds[1]);
    size_t n = drain(fds[0], buf, sizeof buf);
    close(fds[0]);
    assert_true(n > 0 && buf[0] == '{' && buf[n - 2] == '}' && buf[n - 1] == '\n');
    char pid[48];
    snprintf(pid, sizeof pid, "\"pid\": %ld, \"exe\": \"/", (long)getpid());
    assert_non_null(strstr(buf, pid));
    char cls[48];
    snprintf(cls, sizeof cls, "{\"size\": %llu, \"allocs\": ", req_class());
    assert_non_null(strstr(buf, cls));
    assert_non_null(strstr(buf, "\"cross_thread_frees\": "));
    assert_non_null(strstr(buf, "\"pages_taken\": "));
    assert_non_null(strstr(buf, "\"pages_adopted\": "));
    T_FREE(p);

    /* a closed descriptor is an error, not a crash */
    assert_int_equal(pa_stats_print(fds[1], PA_STATS_TEXT), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refuses_a_short_buffer),
        cmocka_unit_test(test_classes_follow_the_mode),
        cmocka_unit_test(test_counts_known_allocations),
        cmocka_unit_test(test_counts_passthrough),
        cmocka_unit_test(test_live_bytes),
        cmocka_unit_test(test_counts_threads),
        cmocka_unit_test(test_counts_pool_pages_and_adoption),
        cmocka_unit_test(test_passthrough_thread_gets_a_heap),
        cmocka_unit_test(test_print_text_and_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
