/* SPDX-License-Identifier: MIT
 * White-box tests of the sampler (src/sample.c) against pyalloc_core; registered twice:
 *   test_sites off   PYALLOC_SITES unset: the countdowns never run out, whatever is allocated (every
 *                    small size, passthrough requests, from several threads), the counts they keep are
 *                    exact, the sampler's pseudo-heap holds no page: the allocator is as without the
 *                    feature
 *   test_sites on    PYALLOC_SITES=1, PYALLOC_SAMPLE_BYTES=4096: each size is sampled at the rate
 *                    1 - exp(-n/R) (within 5 standard errors of a binomial count), passthrough bytes
 *                    too; a sampled block lives in a page of the pseudo-heap, works as any block
 *                    (contents, realloc, usable size, free from another thread) and a double free or
 *                    an interior pointer of one aborts with the usual message; a sampled passthrough
 *                    block (every way into glibc) is aligned as asked and carries the filter's mark,
 *                    with calloc's zeros and realloc's contents
 * and, in both, the sampler's 1 - exp(-x) against libm's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pyalloc.h"
#include "../misuse/death.h"

double pa_sample_prob(double x); /* sample.c */

static uint64_t fired(void) { return atomic_load(&pa_sample_fired); }

/* Requests of 2^62 bytes and more, each of which fails: they run PA_CD_OFF out, and must neither
 * overflow the countdown (UBSan) nor start sampling while it is off. */
static volatile size_t v_huge[] = {SIZE_MAX, SIZE_MAX / 2 + 1, (size_t)1 << 62, SIZE_MAX - 4096};
static void huge_requests(void) {
    for (int r = 0; r < 3; r++)
        for (size_t i = 0; i < sizeof v_huge / sizeof v_huge[0]; i++) {
            errno = 0;
            assert_null(pa_malloc(v_huge[i]));
            assert_int_equal(errno, ENOMEM);
            void *q = pa_malloc(600);
            assert_non_null(q);
            assert_null(pa_realloc(q, v_huge[i]));
            pa_free(q);
        }
}

static void test_prob_matches_libm(void **state) {
    (void)state;
    for (double x = 1e-9; x < 50; x *= 1.07) {
        double want = -expm1(-x), got = pa_sample_prob(x);
        if (fabs(got - want) > 1e-13 * want) fail_msg("1 - exp(-%g): %.17g, libm %.17g", x, got, want);
    }
    assert_true(pa_sample_prob(0) == 0);
    assert_true(pa_sample_prob(100) == 1);
}

/* ---- off ---- */

static void *off_thread(void *arg) {
    (void)arg;
    for (int r = 0; r < 50; r++)
        for (size_t n = 0; n <= PA_SMALL; n++) pa_free(pa_malloc(n));
    return NULL;
}

static void test_off_countdown_never_fires(void **state) {
    (void)state;
    assert_true(pa_ready());
    assert_false(pa_opt.sites);
    assert_false(pa_sample_on);
    void *first = pa_malloc(1);
    pa_heap *h = pa_tls_heap;
    void *p = NULL;
    for (size_t n = 1; n < 100000; n *= 2) p = pa_realloc(p, n);
    pa_free(p);
    uint64_t before[PA_NDIRECT];
    for (size_t n = 0; n < PA_NDIRECT; n++) before[n] = pa_heap_allocs(h, n);
    /* every small size 1000 times (the first 8 MiB of each alone would make thousands of samples at
     * the default rate), passthrough requests, calloc, realloc, aligned; and other threads */
    for (int r = 0; r < 1000; r++) {
        for (size_t n = 0; n <= PA_SMALL; n++) {
            void *p = pa_malloc(n);
            assert_non_null(p);
            pa_free(p);
        }
    }
    for (int r = 0; r < 2000; r++) pa_free(pa_malloc(600 + (size_t)r * 100));
    for (int r = 0; r < 1000; r++) pa_free(pa_calloc(3, 100));
    pthread_t t[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, off_thread, NULL), 0);
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(fired(), 0);
    /* the counts the countdowns keep are exact: 1000 of each size, 3 x 100 for the calloc's 300, ... */
    for (size_t n = 0; n < PA_NDIRECT; n++) {
        uint64_t want = 1000 + (n == 300 ? 1000 : 0);
        uint64_t got = pa_heap_allocs(h, n) - before[n];
        if (got != want) fail_msg("size %zu: %llu allocations counted, %llu made", n, (unsigned long long)got,
                                  (unsigned long long)want);
        assert_true(h->cd[n] > PA_CD_OFF / 2); /* never near zero */
        assert_int_equal(h->smp.base[n], (uint64_t)PA_CD_OFF);
    }
    assert_true(h->sys_cd > PA_CD_OFF / 2); /* never near zero */
    huge_requests(); /* ... but these may take it anywhere: it is reset, and nothing fires */
    pa_free(pa_malloc(600));
    assert_true(h->sys_cd >= 0);
    assert_int_equal(fired(), 0);
    /* no page belongs to the pseudo-heap */
    size_t npages = pa_load_relaxed(&pa_limit) >> PA_PAGE_SHIFT;
    for (size_t i = 0; i < npages; i++) assert_true(pa_load_relaxed(&pa_pages[i].heap) != &pa_sample_heap);
    pa_free(first);
}

/* ---- on ---- */

static void test_on_rate_per_size(void **state) {
    (void)state;
    assert_true(pa_ready());
    assert_true(pa_opt.sites && pa_sample_on);
    const double R = (double)pa_opt.sample_bytes;
    assert_true(R == 4096);
    static const size_t sizes[] = {8, 64, 240, 512};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        const int k = 400000;
        uint64_t f0 = fired();
        for (int j = 0; j < k; j++) pa_free(pa_malloc(n));
        double p = -expm1(-(double)n / R), want = k * p, sd = sqrt(k * p * (1 - p));
        double got = (double)(fired() - f0);
        if (fabs(got - want) > 5 * sd)
            fail_msg("size %zu: %.0f sampled of %d, expected %.0f +- %.0f (5 sd)", n, got, k, want, 5 * sd);
    }
    /* passthrough requests: a byte countdown, so 1000-byte requests are sampled with 1 - exp(-1000/R) */
    const int k = 100000;
    uint64_t f0 = fired();
    for (int j = 0; j < k; j++) pa_free(pa_malloc(1000));
    double p = -expm1(-1000 / R), want = k * p, sd = sqrt(k * p * (1 - p));
    double got = (double)(fired() - f0);
    if (fabs(got - want) > 5 * sd) fail_msg("1000 B: %.0f sampled of %d, expected %.0f +- %.0f", got, k, want, 5 * sd);
}

static void test_on_counts_stay_exact(void **state) {
    (void)state;
    pa_free(pa_malloc(64));
    pa_heap *h = pa_tls_heap;
    uint64_t before = pa_heap_allocs(h, 64), f0 = fired();
    for (int j = 0; j < 100000; j++) pa_free(pa_malloc(64));
    assert_true(fired() > f0); /* the countdown ran out, and was reset, many times */
    assert_int_equal(pa_heap_allocs(h, 64) - before, 100000);
}

/* A block the sampler took (allocated when the countdown ran out), of size n. */
static void *sampled_block(size_t n) {
    for (int i = 0; i < 10000000; i++) {
        uint64_t f0 = fired();
        void *p = pa_malloc(n);
        if (fired() != f0) return p;
        pa_free(p);
    }
    fail_msg("no sample of %zu bytes in 10 million allocations", n);
    return NULL;
}

static void *free_elsewhere(void *p) {
    pa_free(p);
    return NULL;
}

static void test_on_sampled_blocks_work(void **state) {
    (void)state;
    for (size_t n = 16; n <= PA_SMALL; n += 48) {
        unsigned char *p = sampled_block(n);
        pa_page *pg = pa_page_of(p);
        assert_non_null(pg);
        assert_ptr_equal(pa_load_relaxed(&pg->heap), &pa_sample_heap);
        assert_true(pa_malloc_usable_size(p) >= n);
        memset(p, 0x5a, n);
        p = pa_realloc(p, n + 700); /* to the passthrough: copied, the sampled block freed */
        for (size_t i = 0; i < n; i++) assert_int_equal(p[i], 0x5a);
        pa_free(p);
        /* freed by another thread: the remote free reaches the sampler too */
        void *q = sampled_block(n);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, free_elsewhere, q), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
    }
    /* a passthrough block the sampler recorded, freed and reallocated */
    void *big = sampled_block(3000);
    assert_null(pa_page_of(big));
    huge_requests(); /* while on, each is due: served (failing) by glibc, nothing recorded */
    big = pa_realloc(big, 9000);
    pa_free(big);
}

/* ---- the passthrough's sampled blocks ---- */

enum { P_MALLOC, P_CALLOC, P_REALLOC, P_MEMALIGN64, P_MEMALIGN8K, P_POSIX, P_VALLOC, P_PVALLOC, P_NOPS };
static const char *const op_name[P_NOPS] = {"malloc", "calloc", "realloc", "memalign(64)",
                                            "memalign(8192)", "posix_memalign(128)", "valloc", "pvalloc"};

static void *pass_op(int op, size_t n) {
    void *p = NULL;
    switch (op) {
    case P_MALLOC: return pa_malloc(n);
    case P_CALLOC: return pa_calloc(1, n);
    case P_MEMALIGN64: return pa_memalign(64, n);
    case P_MEMALIGN8K: return pa_memalign(8192, n);
    case P_POSIX: return pa_posix_memalign(&p, 128, n) == 0 ? p : NULL;
    case P_VALLOC: return pa_valloc(n);
    case P_PVALLOC: return pa_pvalloc(n);
    default: return NULL;
    }
}

static uint32_t filter_at(const void *p) {
    return atomic_load(&pa_sample_filter[((uintptr_t)p >> 4) & (PA_SAMPLE_FILTER - 1)]);
}

/* Every way into glibc, below and above PA_PEAK_LARGE: a block the sampler recorded is aligned as
 * the request asks and, below PA_PEAK_LARGE, has the mark free looks for, at most 1 KiB over;
 * calloc's is zero though glibc's free memory is dirty, realloc's keeps the old contents, each is
 * found by the filter until freed, and the live bytes come back to where they were. */
static void test_on_sampled_passthrough_blocks(void **state) {
    (void)state;
    static const size_t sizes[] = {600, 5000, 60000, 100000, 300000};
    for (int op = 0; op < P_NOPS; op++) {
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            size_t n = sizes[si];
            /* glibc's free memory of this size, dirty */
            void *dirty[64];
            for (int i = 0; i < 64; i++) memset(dirty[i] = pa_malloc(n), 0xff, n);
            for (int i = 0; i < 64; i++) pa_free(dirty[i]);
            uint64_t small0, large0;
            pa_live_bytes(&small0, &large0);
            unsigned char *p = NULL;
            for (int tries = 0; tries < 100000 && !p; tries++) {
                unsigned char *old = NULL;
                if (op == P_REALLOC) memset(old = pa_malloc(n / 2), 0x3c, n / 2);
                uint64_t f0 = fired();
                unsigned char *q = op == P_REALLOC ? pa_realloc(old, n) : pass_op(op, n);
                assert_non_null(q);
                if (fired() != f0) p = q;
                else pa_free(q);
            }
            if (!p) fail_msg("%s(%zu): never sampled", op_name[op], n);
            size_t align = op == P_MEMALIGN64 ? 64 : op == P_MEMALIGN8K ? 8192 : op == P_POSIX ? 128
                         : op == P_VALLOC || op == P_PVALLOC ? 4096 : 16;
            if ((uintptr_t)p % align) fail_msg("%s(%zu) sampled: %p not %zu-aligned", op_name[op], n, (void *)p, align);
            size_t want = op == P_PVALLOC ? (n + 4095) & ~(size_t)4095 : n, u = pa_malloc_usable_size(p);
            assert_true(u >= want);
            if (n < PA_PEAK_LARGE && !PA_SAMPLE_MARKED(u))
                fail_msg("%s(%zu) sampled: %zu usable bytes, without the mark", op_name[op], n, u);
            size_t asked = op == P_REALLOC ? want + want / 8 : want; /* realloc rounds up by at most 1/8 */
            if (n < PA_PEAK_LARGE && u > asked + 1024 + 16)
                fail_msg("%s(%zu) sampled: %zu usable bytes, more than 1 KiB over", op_name[op], n, u);
            if (op == P_CALLOC)
                for (size_t i = 0; i < n; i++)
                    if (p[i]) fail_msg("calloc(1, %zu) sampled: byte %zu is %#x", n, i, p[i]);
            if (op == P_REALLOC)
                for (size_t i = 0; i < n / 2; i++)
                    if (p[i] != 0x3c) fail_msg("realloc to %zu sampled: byte %zu lost", n, i);
            memset(p, 0xa5, want);
            uint32_t f = filter_at(p);
            if (!pa_sample_recorded(p)) fail_msg("%s(%zu) sampled but not in the filter", op_name[op], n);
            pa_free(p);
            assert_int_equal(filter_at(p), f - 1);
            uint64_t small1, large1;
            pa_live_bytes(&small1, &large1);
            assert_int_equal(large1, large0);
        }
    }
    /* realloc(p, 0) of a recorded block frees it, record and all, and returns NULL */
    void *p = sampled_block(3000);
    uint32_t f = filter_at(p);
    assert_true(f > 0);
    assert_null(pa_realloc(p, 0));
    assert_int_equal(filter_at(p), f - 1);
}

static void double_free_child(void *p) {
    pa_free(p);
    pa_free(p);
}

static void interior_child(void *p) { pa_free((char *)p + 16); }

static void fine_child(void *p) { pa_free(p); }

static void test_on_misuse_of_a_sampled_block(void **state) {
    (void)state;
    void *p = sampled_block(100);
    struct outcome o;
    run_in_child(double_free_child, p, &o);
    expect_abort(&o, "double free", NULL, p);
    run_in_child(interior_child, p, &o);
    expect_abort(&o, "invalid pointer", NULL, (char *)p + 16);
    run_in_child(fine_child, p, &o);
    expect_clean_exit(&o);
    pa_free(p);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "off") == 0) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_prob_matches_libm),
            cmocka_unit_test(test_off_countdown_never_fires),
        };
        return cmocka_run_group_tests_name("sites (sampling off)", tests, NULL, NULL);
    }
    if (argc == 2 && strcmp(argv[1], "on") == 0) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_prob_matches_libm),
            cmocka_unit_test(test_on_rate_per_size),
            cmocka_unit_test(test_on_counts_stay_exact),
            cmocka_unit_test(test_on_sampled_blocks_work),
            cmocka_unit_test(test_on_sampled_passthrough_blocks),
            cmocka_unit_test(test_on_misuse_of_a_sampled_block),
        };
        return cmocka_run_group_tests_name("sites (sampling on)", tests, NULL, NULL);
    }
    fprintf(stderr, "usage: test_sites off|on\n");
    return 2;
}
