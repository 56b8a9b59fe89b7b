/* SPDX-License-Identifier: MIT
 * The public semantics of malloc and friends, one cmocka test per behaviour (after mimalloc test-api.c).
 * Built twice from this source: through the replaced libc names (linked to libpyalloc.so) and through
 * the pa_* names (see common/pa_test.h); registered in both alignment modes, the mode taken from
 * PYALLOC_ALIGN exactly as the allocator reads it at start-up. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pa_test.h"

#ifndef PA_TEST_PA_API
/* glibc's own entry to its allocator: a foreign pointer for our free/realloc. */
extern void *__libc_malloc(size_t size);
#endif

static int mode;

/* Sizes that cross every boundary the allocator has: class edges, the small limit, mmap threshold. */
static const size_t edge_sizes[] = {0,   1,   7,   8,   9,    15,   16,   17,   24,     31,     32,
                                    33,  40,  47,  48,  49,   63,   64,   65,   100,    127,    128,
                                    255, 256, 257, 500, 511,  512,  513,  600,  1000,   4095,   4096,
                                    4097, 5000, 65536, 131072, 200000, 1 << 20};
#define N_EDGE (sizeof edge_sizes / sizeof edge_sizes[0])

/* The compiler must not see through these: a size it knows can make it fold or warn away a call. */
static volatile size_t v_huge = SIZE_MAX;
static volatile size_t v_half = SIZE_MAX / 2 + 1;

static void assert_aligned(const void *p, size_t align)
{
    if (((uintptr_t)p & (align - 1)) != 0)
        fail_msg("%p is not %zu-aligned", p, align);
}

static int setup_mode(void **state)
{
    (void)state;
    mode = pa_alignment_mode();
    return 0;
}

/* --- the mode and the proof of service ------------------------------------------------------ */

static void test_mode_matches_env(void **state)
{
    (void)state;
    assert_int_equal(pa_alignment_mode(), t_expected_mode());
}

static void test_usable_size_proof(void **state)
{
    (void)state;
    void *p32 = T_MALLOC(32), *p24 = T_MALLOC(24);
    assert_non_null(p32);
    assert_non_null(p24);
    /* glibc says 40 and 24: only pyalloc says 32 for both in default mode. */
    assert_int_equal(T_USABLE(p32), 32);
    assert_int_equal(T_USABLE(p24), mode == 8 ? 24 : 32);
    assert_true(pa_is_small(p32));
    assert_true(pa_is_small(p24));
    T_FREE(p32);
    T_FREE(p24);
}

/* --- malloc --------------------------------------------------------------------------------- */

static void test_malloc_zero(void **state)
{
    (void)state;
    void *a = t_launder(T_MALLOC(0)), *b = t_launder(T_MALLOC(0));
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_int_equal(T_USABLE(a), 8);
    assert_int_equal(T_USABLE(b), 8);
    assert_true(pa_is_small(a));
    memset(a, 0x5a, 8);
    memset(b, 0xa5, 8);
    assert_int_equal(((unsigned char *)a)[7], 0x5a);
    T_FREE(a);
    T_FREE(b);
}

static void test_usable_size_null_and_is_small_negatives(void **state)
{
    (void)state;
    int local = 0;
    static int global;
    assert_int_equal(T_USABLE(NULL), 0);
    assert_false(pa_is_small(NULL));
    assert_false(pa_is_small(&local));
    assert_false(pa_is_small(&global));
    assert_false(pa_is_small((void *)test_usable_size_null_and_is_small_negatives));
    void *big = T_MALLOC(PA_SMALL_MAX + 1);
    assert_non_null(big);
    assert_false(pa_is_small(big));
    T_FREE(big);
}

static void test_usable_size_is_class_size(void **state)
{
    (void)state;
    for (size_t n = 0; n <= 4096; n++) {
        void *p = T_MALLOC(n);
        if (p == NULL)
            fail_msg("malloc(%zu) returned NULL", n);
        size_t u = T_USABLE(p);
        if (n <= PA_SMALL_MAX) {
            if (u != t_class_size(n, mode))
                fail_msg("mode %d: usable size of malloc(%zu) is %zu, want %zu", mode, n, u,
                         t_class_size(n, mode));
            if (!pa_is_small(p))
                fail_msg("malloc(%zu) did not come from the pools", n);
        } else {
            if (u < n)
                fail_msg("usable size of malloc(%zu) is %zu", n, u);
            if (pa_is_small(p))
                fail_msg("malloc(%zu) > PA_SMALL_MAX came from the pools", n);
        }
        memset(p, 0xee, u); /* the whole usable size is ours to write */
        T_FREE(p);
    }
}

static void test_alignment_every_size(void **state)
{
    (void)state;
    /* Keep several blocks of each size alive so the check covers more than one slot of a page. */
    enum { PER_SIZE = 5 };
    void *keep[PER_SIZE];
    for (size_t n = 1; n <= 4096; n++) {
        for (int k = 0; k < PER_SIZE; k++) {
            keep[k] = T_MALLOC(n);
            assert_non_null(keep[k]);
            if (((uintptr_t)keep[k] & (t_required_align(n, mode) - 1)) != 0)
                fail_msg("mode %d: malloc(%zu) = %p not %zu-aligned", mode, n, keep[k],
                         t_required_align(n, mode));
        }
        for (int k = 0; k < PER_SIZE; k++)
            T_FREE(keep[k]);
    }
}

static void test_blocks_do_not_overlap(void **state)
{
    (void)state;
    /* Many live blocks of every small class, each filled to its usable size with its own payload. */
    enum { PER_CLASS = 300 };
    static void *blocks[PA_SMALL_MAX / 8][PER_CLASS];
    for (size_t c = 0; c < PA_SMALL_MAX / 8; c++)
        for (size_t k = 0; k < PER_CLASS; k++) {
            blocks[c][k] = T_MALLOC((c + 1) * 8);
            assert_non_null(blocks[c][k]);
            t_fill(blocks[c][k], T_USABLE(blocks[c][k]), c, k);
        }
    for (size_t c = 0; c < PA_SMALL_MAX / 8; c++)
        for (size_t k = 0; k < PER_CLASS; k++) {
            size_t bad = t_check(blocks[c][k], T_USABLE(blocks[c][k]), c, k);
            if (bad != (size_t)-1)
                fail_msg("block %zu of malloc(%zu) overwritten at byte %zu", k, (c + 1) * 8, bad);
            T_FREE(blocks[c][k]);
        }
}

/* --- calloc --------------------------------------------------------------------------------- */

static void check_zero(const unsigned char *p, size_t n, const char *what, size_t size)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            fail_msg("%s(%zu): byte %zu is 0x%02x, not zero", what, size, i, p[i]);
}

static void test_calloc_zeroes_reused_blocks(void **state)
{
    (void)state;
    enum { N = 64 };
    void *p[N];
    for (size_t e = 0; e < N_EDGE; e++) {
        size_t n = edge_sizes[e];
        for (int k = 0; k < N; k++) {
            p[k] = T_MALLOC(n);
            assert_non_null(p[k]);
            memset(p[k], 0xab, T_USABLE(p[k]));
        }
        for (int k = N - 1; k >= 0; k--)
            T_FREE(p[k]);
        for (int k = 0; k < N; k++) {
            p[k] = T_CALLOC(1, n);
            assert_non_null(p[k]);
            assert_aligned(p[k], t_required_align(n, mode));
            if (n <= PA_SMALL_MAX)
                assert_int_equal(T_USABLE(p[k]), t_class_size(n, mode));
            check_zero(p[k], n, "calloc", n);
        }
        for (int k = 0; k < N; k++)
            T_FREE(p[k]);
        /* n * size with n > 1 */
        void *q = T_MALLOC(3 * n + 3);
        assert_non_null(q);
        memset(q, 0xcd, T_USABLE(q));
        T_FREE(q);
        q = T_CALLOC(3, n + 1);
        assert_non_null(q);
        check_zero(q, 3 * n + 3, "calloc(3, n+1) total", 3 * n + 3);
        T_FREE(q);
    }
}

static void test_calloc_zero(void **state)
{
    (void)state;
    void *a = T_CALLOC(0, 0), *b = T_CALLOC(0, 16), *c = T_CALLOC(16, 0);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    T_FREE(a);
    T_FREE(b);
    T_FREE(c);
}

/* --- realloc -------------------------------------------------------------------------------- */

static void realloc_pair(size_t from, size_t to)
{
    unsigned char *p = T_MALLOC(from);
    assert_non_null(p);
    t_fill(p, from, from, to);
    errno = 0;
    unsigned char *q = T_REALLOC(p, to);
    if (to == 0) {
        /* glibc semantics: realloc(p, 0) frees p and returns NULL. */
        if (q != NULL)
            fail_msg("realloc(p of %zu, 0) returned %p, not NULL", from, (void *)q);
        return;
    }
    if (q == NULL)
        fail_msg("realloc(%zu -> %zu) returned NULL", from, to);
    size_t keep = from < to ? from : to;
    size_t bad = t_check(q, keep, from, to);
    if (bad != (size_t)-1)
        fail_msg("realloc(%zu -> %zu) lost byte %zu", from, to, bad);
    if (T_USABLE(q) < to)
        fail_msg("realloc(%zu -> %zu): usable size %zu", from, to, T_USABLE(q));
    if (((uintptr_t)q & (t_required_align(to, mode) - 1)) != 0)
        fail_msg("realloc(%zu -> %zu) = %p not %zu-aligned", from, to, (void *)q,
                 t_required_align(to, mode));
    if (to > PA_SMALL_MAX && pa_is_small(q))
        fail_msg("realloc(%zu -> %zu) left a block > PA_SMALL_MAX in the pools", from, to);
    memset(q, 0x11, T_USABLE(q));
    T_FREE(q);
}

static void test_realloc_keeps_contents_across_classes(void **state)
{
    (void)state;
    for (size_t i = 1; i < N_EDGE; i++)
        for (size_t j = 0; j < N_EDGE; j++)
            realloc_pair(edge_sizes[i], edge_sizes[j]);
}

static void test_realloc_chain_through_passthrough(void **state)
{
    (void)state;
    /* 100 (pool) -> 5000 (glibc) -> 40 (back down) -> 513 -> 512 -> 1 -> 300 */
    static const size_t chain[] = {100, 5000, 40, 513, 512, 1, 300, 200000, 16};
    size_t cur = chain[0];
    unsigned char *p = T_MALLOC(cur);
    assert_non_null(p);
    t_fill(p, cur, 7, 0);
    size_t valid = cur;
    for (size_t i = 1; i < sizeof chain / sizeof chain[0]; i++) {
        size_t to = chain[i];
        p = T_REALLOC(p, to);
        assert_non_null(p);
        size_t keep = valid < to ? valid : to;
        size_t bad = t_check(p, keep, 7, 0);
        if (bad != (size_t)-1)
            fail_msg("chain step %zu (-> %zu) lost byte %zu", i, to, bad);
        assert_true(T_USABLE(p) >= to);
        assert_aligned(p, t_required_align(to, mode));
        /* refill so every step checks all the bytes it could have kept */
        t_fill(p, to, 7, 0);
        valid = to;
    }
    T_FREE(p);
}

/* A block realloc'd past 512 bytes (and below 128 KiB) is asked of glibc rounded up to an eighth of
 * its power of two, so a block grown or shrunk by small steps stays in place within a step instead
 * of moving whenever its neighbour in glibc's heap is in use. */
static size_t eighth_step(size_t n)
{
    size_t top = 1;
    while (top <= n / 2)
        top *= 2;
    return top / 8;
}

static void test_realloc_rounds_up_past_512(void **state)
{
    (void)state;
    static const size_t sizes[] = {513, 520, 600, 1000, 1025, 3000, 4097, 65537, 131071};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i], step = eighth_step(n), up = (n + step - 1) / step * step;
        unsigned char *p = T_MALLOC(300);
        assert_non_null(p);
        t_fill(p, 300, 5, 0);
        unsigned char *q = T_REALLOC(p, n); /* from the pools to glibc */
        assert_non_null(q);
        assert_true(t_check(q, 300, 5, 0) == (size_t)-1);
        if (T_USABLE(q) < up)
            fail_msg("realloc(%zu) gave %zu usable bytes, expected at least %zu", n, T_USABLE(q), up);
        t_fill(q, n, 5, 0);
        unsigned char *r = T_REALLOC(q, up);           /* grows within the step */
        assert_non_null(r);
        unsigned char *s2 = T_REALLOC(r, up - step + 1); /* shrinks within it */
        assert_non_null(s2);
        assert_true(t_check(s2, up - step + 1 < n ? up - step + 1 : n, 5, 0) == (size_t)-1);
#if !defined(PA_PASSTHROUGH_LIBC) || PA_PASSTHROUGH_LIBC
        /* glibc keeps a chunk that is big enough in place (a sanitizer's realloc, in the sanitizer
         * builds, may move on every call: there only the sizes and contents are checked) */
        assert_ptr_equal(r, q);
        assert_ptr_equal(s2, q);
#endif
        T_FREE(s2);
    }
}

static void test_realloc_null_is_malloc(void **state)
{
    (void)state;
    for (size_t e = 0; e < N_EDGE; e++) {
        size_t n = edge_sizes[e];
        void *p = T_REALLOC(NULL, n);
        assert_non_null(p);
        assert_true(T_USABLE(p) >= n);
        if (n <= PA_SMALL_MAX) {
            assert_int_equal(T_USABLE(p), t_class_size(n, mode));
            assert_true(pa_is_small(p));
        }
        T_FREE(p);
    }
}

static void test_realloc_zero_frees(void **state)
{
    (void)state;
    for (size_t e = 1; e < N_EDGE; e++) {
        void *p = T_MALLOC(edge_sizes[e]);
        assert_non_null(p);
        assert_null(T_REALLOC(p, 0));
    }
}

static void test_realloc_same_class_in_place(void **state)
{
    (void)state;
    /* A size that keeps its class, up to the usable size and down to the class below, or shrinks by
     * less than a quarter, keeps the block where it is (pymalloc's rule). */
    for (size_t n = 1; n <= PA_SMALL_MAX; n++) {
        unsigned char *p = T_MALLOC(n);
        assert_non_null(p);
        size_t u = T_USABLE(p);
        t_fill(p, n, n, 1);
        unsigned char *q = T_REALLOC(p, u);
        if (q != p)
            fail_msg("realloc(%zu-byte block, %zu) moved it within its class", n, u);
        assert_true(t_check(q, n, n, 1) == (size_t)-1);
        assert_int_equal(T_USABLE(q), t_class_size(u, mode));
        size_t lower = u > 8 ? u - (mode == 8 || u <= 16 ? 8 : 16) + 1 : 1; /* smallest size of the class */
        q = T_REALLOC(q, lower);
        if (q != p)
            fail_msg("realloc(%zu-byte block, %zu) moved it within its class", u, lower);
        size_t most = u - (u - 1) / 4; /* the smallest size less than a quarter below u */
        if (most < lower) {
            q = T_REALLOC(q, most);
            if (q != p)
                fail_msg("realloc(%zu-byte block, %zu) moved it for less than a quarter", u, most);
        }
        assert_true(t_check(q, n < most ? n : most, n, 1) == (size_t)-1);
        T_FREE(q);
    }
}

/* --- aligned allocation --------------------------------------------------------------------- */

static const size_t aligned_sizes[] = {0, 1, 8, 16, 24, 100, 512, 513, 4096, 10000};
#define N_ALIGNED_SIZES (sizeof aligned_sizes / sizeof aligned_sizes[0])

static void check_aligned_block(void *p, size_t align, size_t size, const char *fn)
{
    if (p == NULL)
        fail_msg("%s(align %zu, size %zu) returned NULL", fn, align, size);
    if (((uintptr_t)p & (align - 1)) != 0)
        fail_msg("%s(align %zu, size %zu) = %p misaligned", fn, align, size, p);
    size_t u = T_USABLE(p);
    if (u < size)
        fail_msg("%s(align %zu, size %zu): usable size %zu", fn, align, size, u);
    if (size > 0) /* a sanitizer's malloc_usable_size may report a byte it does not let us write */
        memset(p, 0x77, u);
    T_FREE(p);
}

static void test_posix_memalign(void **state)
{
    (void)state;
    for (size_t a = sizeof(void *); a <= 65536; a *= 2)
        for (size_t s = 0; s < N_ALIGNED_SIZES; s++) {
            void *p = NULL;
            int rc = T_POSIX_MEMALIGN(&p, a, aligned_sizes[s]);
            if (rc != 0)
                fail_msg("posix_memalign(align %zu, size %zu) = %d", a, aligned_sizes[s], rc);
            check_aligned_block(p, a, aligned_sizes[s], "posix_memalign");
        }
}

static void test_aligned_alloc(void **state)
{
    (void)state;
    for (size_t a = 8; a <= 65536; a *= 2)
        for (size_t s = 0; s < N_ALIGNED_SIZES; s++) {
            /* C11 wants size a multiple of the alignment; test both that and the glibc leniency. */
            size_t size = aligned_sizes[s];
            check_aligned_block(T_ALIGNED_ALLOC(a, t_round_up(size, a)), a, t_round_up(size, a),
                                "aligned_alloc");
            check_aligned_block(T_ALIGNED_ALLOC(a, size), a, size, "aligned_alloc");
        }
}

static void test_memalign(void **state)
{
    (void)state;
    for (size_t a = 1; a <= 65536; a *= 2)
        for (size_t s = 0; s < N_ALIGNED_SIZES; s++)
            check_aligned_block(T_MEMALIGN(a, aligned_sizes[s]), a, aligned_sizes[s], "memalign");
}

static void test_valloc_pvalloc(void **state)
{
    (void)state;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (size_t s = 0; s < N_ALIGNED_SIZES; s++) {
        size_t n = aligned_sizes[s];
        check_aligned_block(T_VALLOC(n), page, n, "valloc");
        void *p = T_PVALLOC(n);
        if (p != NULL && T_USABLE(p) < t_round_up(n, page))
            fail_msg("pvalloc(%zu): usable size %zu below a whole page", n, T_USABLE(p));
        check_aligned_block(p, page, t_round_up(n, page), "pvalloc");
    }
}

static void test_small_aligned_requests_keep_class_rules(void **state)
{
    (void)state;
    /* Alignment <= 16 with a small size may come from the pools: it must still be aligned. */
    for (size_t a = 8; a <= 16; a *= 2)
        for (size_t n = 1; n <= PA_SMALL_MAX; n++) {
            void *p = T_MEMALIGN(a, n);
            assert_non_null(p);
            assert_aligned(p, a);
            assert_aligned(p, t_required_align(n, mode));
            assert_true(T_USABLE(p) >= n);
            T_FREE(p);
        }
}

/* --- failures and errno --------------------------------------------------------------------- */

static void test_malloc_huge_enomem(void **state)
{
    (void)state;
    const size_t sizes[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 4096, SIZE_MAX / 2 + 1, (size_t)1 << 62};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        volatile size_t n = sizes[i];
        errno = 0;
        void *p = T_MALLOC(n);
        if (p != NULL)
            fail_msg("malloc(%zu) succeeded", (size_t)n);
        assert_int_equal(errno, ENOMEM);
    }
}

static void test_calloc_overflow_enomem(void **state)
{
    (void)state;
    const size_t pairs[][2] = {
        {SIZE_MAX / 2, 3}, {3, SIZE_MAX / 2}, {(size_t)1 << 32, (size_t)1 << 32}, {SIZE_MAX, SIZE_MAX},
        {1, SIZE_MAX},     {SIZE_MAX, 1},
        {65537, 281470681808896}, /* the product wraps to 65536: a calloc without the check succeeds */
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        volatile size_t a = pairs[i][0], b = pairs[i][1];
        errno = 0;
        void *p = T_CALLOC(a, b);
        if (p != NULL)
            fail_msg("calloc(%zu, %zu) succeeded", (size_t)a, (size_t)b);
        assert_int_equal(errno, ENOMEM);
    }
}

static void test_realloc_huge_keeps_old_block(void **state)
{
    (void)state;
    const size_t from[] = {1, 24, 100, 512, 5000};
    for (size_t i = 0; i < sizeof from / sizeof from[0]; i++) {
        unsigned char *p = T_MALLOC(from[i]);
        assert_non_null(p);
        t_fill(p, from[i], 3, i);
        errno = 0;
        void *q = T_REALLOC(p, v_huge);
        assert_null(q);
        assert_int_equal(errno, ENOMEM);
        errno = 0;
        q = T_REALLOC(p, v_half);
        assert_null(q);
        assert_int_equal(errno, ENOMEM);
        assert_true(t_check(p, from[i], 3, i) == (size_t)-1);
        assert_true(T_USABLE(p) >= from[i]);
        /* still a live block: it can grow and be freed */
        p = T_REALLOC(p, from[i] + 10);
        assert_non_null(p);
        assert_true(t_check(p, from[i], 3, i) == (size_t)-1);
        T_FREE(p);
    }
}

static void test_posix_memalign_einval(void **state)
{
    (void)state;
    const size_t bad[] = {0, 1, 2, 4, 12, 24, 48, 100, sizeof(void *) + 1, 3 * sizeof(void *),
                          SIZE_MAX, SIZE_MAX / 2};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *sentinel = (void *)0x1234;
        void *p = sentinel;
        int rc = T_POSIX_MEMALIGN(&p, bad[i], 64);
        if (rc != EINVAL)
            fail_msg("posix_memalign(align %zu) = %d, want EINVAL", bad[i], rc);
        if (p != sentinel)
            fail_msg("posix_memalign(align %zu) wrote *out on failure", bad[i]);
    }
}

static void test_posix_memalign_huge_enomem(void **state)
{
    (void)state;
    void *sentinel = (void *)0x1234;
    void *p = sentinel;
    assert_int_equal(T_POSIX_MEMALIGN(&p, 64, v_huge), ENOMEM);
    assert_ptr_equal(p, sentinel);
    assert_int_equal(T_POSIX_MEMALIGN(&p, 16, v_huge), ENOMEM);
    assert_ptr_equal(p, sentinel);
}

static void test_aligned_huge_enomem(void **state)
{
    (void)state;
    errno = 0;
    assert_null(T_MEMALIGN(64, v_huge));
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(T_ALIGNED_ALLOC(64, v_huge));
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(T_VALLOC(v_huge));
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(T_PVALLOC(v_huge));
    assert_int_equal(errno, ENOMEM);
}

static void test_free_null_and_errno(void **state)
{
    (void)state;
    enum { N = 20000 };
    static void *p[N];
    errno = 4321;
    T_FREE(NULL);
    assert_int_equal(errno, 4321);
    /* Enough blocks of several sizes that freeing them empties pages and may give memory back. */
    for (int i = 0; i < N; i++) {
        p[i] = T_MALLOC((size_t)(i % 7 == 0 ? 150000 : 16 + (i % 31) * 16));
        assert_non_null(p[i]);
    }
    for (int i = 0; i < N; i++) {
        errno = 4321;
        T_FREE(p[i]);
        if (errno != 4321)
            fail_msg("free of block %d changed errno to %d", i, errno);
    }
}

#ifndef PA_TEST_PA_API
/* --- glibc's own allocating functions call the replaced malloc ------------------------------- */

static void test_libc_functions_use_our_malloc(void **state)
{
    (void)state;
    char *s = strdup("pyalloc");
    assert_non_null(s);
    assert_true(pa_is_small(s));
    assert_int_equal(malloc_usable_size(s), t_class_size(8, mode));
    assert_string_equal(s, "pyalloc");
    free(s);

    s = strndup("a longer string that is cut", 10);
    assert_non_null(s);
    assert_true(pa_is_small(s));
    assert_int_equal(strlen(s), 10);
    free(s);

    int *a = reallocarray(NULL, 6, sizeof(int)); /* 24 bytes */
    assert_non_null(a);
    assert_true(pa_is_small(a));
    assert_int_equal(malloc_usable_size(a), t_class_size(24, mode));
    for (int i = 0; i < 6; i++)
        a[i] = i * 3;
    a = reallocarray(a, 300, sizeof(int)); /* 1200 bytes: out of the pools */
    assert_non_null(a);
    assert_false(pa_is_small(a));
    for (int i = 0; i < 6; i++)
        assert_int_equal(a[i], i * 3);
    errno = 0;
    volatile size_t big = SIZE_MAX / 4;
    assert_null(reallocarray(t_launder(a), big, 8));
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(a[5], 15); /* the old block survives the failure */
    free(a);

    char *line = NULL;
    int n = asprintf(&line, "%d-%s", 42, "x");
    assert_int_equal(n, 4);
    assert_true(pa_is_small(line));
    free(line);
}

static void test_foreign_pointer_from_glibc(void **state)
{
    (void)state;
    /* Blocks from glibc's allocator reach our free, realloc and malloc_usable_size. */
    unsigned char *p = __libc_malloc(100);
    assert_non_null(p);
    assert_false(pa_is_small(p));
    assert_true(malloc_usable_size(p) >= 100);
    t_fill(p, 100, 9, 9);
    p = realloc(p, 300);
    assert_non_null(p);
    assert_true(t_check(p, 100, 9, 9) == (size_t)-1);
    free(p);
    free(__libc_malloc(24));
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mode_matches_env),
        cmocka_unit_test(test_usable_size_proof),
        cmocka_unit_test(test_malloc_zero),
        cmocka_unit_test(test_usable_size_null_and_is_small_negatives),
        cmocka_unit_test(test_usable_size_is_class_size),
        cmocka_unit_test(test_alignment_every_size),
        cmocka_unit_test(test_blocks_do_not_overlap),
        cmocka_unit_test(test_calloc_zeroes_reused_blocks),
        cmocka_unit_test(test_calloc_zero),
        cmocka_unit_test(test_realloc_keeps_contents_across_classes),
        cmocka_unit_test(test_realloc_chain_through_passthrough),
        cmocka_unit_test(test_realloc_rounds_up_past_512),
        cmocka_unit_test(test_realloc_null_is_malloc),
        cmocka_unit_test(test_realloc_zero_frees),
        cmocka_unit_test(test_realloc_same_class_in_place),
        cmocka_unit_test(test_posix_memalign),
        cmocka_unit_test(test_aligned_alloc),
        cmocka_unit_test(test_memalign),
        cmocka_unit_test(test_valloc_pvalloc),
        cmocka_unit_test(test_small_aligned_requests_keep_class_rules),
        cmocka_unit_test(test_malloc_huge_enomem),
        cmocka_unit_test(test_calloc_overflow_enomem),
        cmocka_unit_test(test_realloc_huge_keeps_old_block),
        cmocka_unit_test(test_posix_memalign_einval),
        cmocka_unit_test(test_posix_memalign_huge_enomem),
        cmocka_unit_test(test_aligned_huge_enomem),
        cmocka_unit_test(test_free_null_and_errno),
#ifndef PA_TEST_PA_API
        cmocka_unit_test(test_libc_functions_use_our_malloc),
        cmocka_unit_test(test_foreign_pointer_from_glibc),
#endif
    };
    print_message("pyalloc API tests through %s, PYALLOC_ALIGN=%s\n", T_API_NAME,
                  getenv("PYALLOC_ALIGN") ? getenv("PYALLOC_ALIGN") : "(unset)");
    return cmocka_run_group_tests(tests, setup_mode, NULL);
}
