/* SPDX-License-Identifier: MIT
 * pyalloc against the running glibc, in the same process: the rows of docs/compat.md that are
 * behaviour. Where pyalloc must give glibc's answer (success or failure, errno, the alignment asked
 * for) the same request goes to both and the answers are compared; where it answers differently on
 * purpose (block sizes, what malloc_trim and mallinfo2 see) the difference is what is checked.
 * glibc is reached through dlsym on libc.so.6, which finds libc's own definitions even where the
 * program's names are pyalloc's or a sanitizer's (ThreadSanitizer intercepts __libc_memalign too).
 * Built like test_api.c, for the libc names and for pa_*, in both alignment modes. */
#include <dlfcn.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pa_test.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
/* pyalloc_core then passes what it does not serve to the sanitizer's allocator, whose answers to
 * impossible requests are its own: only pyalloc's decisions are compared with glibc's. */
#define T_SYS_IS_GLIBC 0
#else
#define T_SYS_IS_GLIBC 1
#endif

static int mode;
static void *(*glibc_malloc)(size_t);
static void *(*glibc_realloc)(void *, size_t);
static void (*glibc_free)(void *);
static void *(*glibc_memalign)(size_t, size_t);
static void *(*glibc_aligned_alloc)(size_t, size_t);
static int (*glibc_posix_memalign)(void **, size_t, size_t);

static int setup(void **state)
{
    (void)state;
    mode = pa_alignment_mode();
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (!libc)
        return -1;
    glibc_malloc = (void *(*)(size_t))dlsym(libc, "malloc");
    glibc_realloc = (void *(*)(void *, size_t))dlsym(libc, "realloc");
    glibc_free = (void (*)(void *))dlsym(libc, "free");
    glibc_memalign = (void *(*)(size_t, size_t))dlsym(libc, "memalign");
    glibc_aligned_alloc = (void *(*)(size_t, size_t))dlsym(libc, "aligned_alloc");
    glibc_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(libc, "posix_memalign");
    return glibc_malloc && glibc_realloc && glibc_free && glibc_memalign && glibc_aligned_alloc &&
                   glibc_posix_memalign
               ? 0
               : -1;
}

static size_t pow2_ceil(size_t a) { return a <= 1 ? 1 : (size_t)1 << (64 - __builtin_clzll(a - 1)); }

/* Every alignment class glibc treats differently: 0, below 16, not a power of two below and above
 * 16, powers of two up to the largest, the first value with no power of two at or above it. */
static const size_t compat_aligns[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 17, 24, 31, 32, 33, 48, 64, 96, 100,
                                       4095, 4096, 4097, 65535, 65536, 65537, (size_t)1 << 40,
                                       ((size_t)1 << 40) + 1, (size_t)1 << 62, ((size_t)1 << 62) + 1,
                                       (size_t)1 << 63, ((size_t)1 << 63) + 1, SIZE_MAX};
static const size_t compat_sizes[] = {0, 1, 8, 24, 100, 512, 513, 5000, (size_t)PTRDIFF_MAX, SIZE_MAX};
#define N_ALIGNS (sizeof compat_aligns / sizeof compat_aligns[0])
#define N_SIZES (sizeof compat_sizes / sizeof compat_sizes[0])

/* pyalloc's and glibc's answer to the same aligned request must agree: both succeed, with at least
 * the alignment glibc gives (the requested one rounded up to a power of two), or both fail with the
 * same errno. */
static void compare_aligned(const char *fn, size_t a, size_t n, void *ours, int our_errno, void *theirs,
                            int their_errno)
{
    if (!T_SYS_IS_GLIBC && (a > 16 || n > PA_SMALL_MAX) && (!ours || !theirs)) {
        T_FREE(ours);
        glibc_free(theirs);
        return; /* an impossible request reached the sanitizer's allocator */
    }
    if ((ours == NULL) != (theirs == NULL))
        fail_msg("%s(%zu, %zu): pyalloc %s (errno %d), glibc %s (errno %d)", fn, a, n, ours ? "succeeds" : "fails",
                 our_errno, theirs ? "succeeds" : "fails", their_errno);
    if (!ours) {
        if (our_errno != their_errno)
            fail_msg("%s(%zu, %zu): pyalloc's errno %d, glibc's %d", fn, a, n, our_errno, their_errno);
        return;
    }
    size_t want = pow2_ceil(a);
    if (((uintptr_t)ours & (want - 1)) != 0)
        fail_msg("%s(%zu, %zu) = %p: not %zu-aligned", fn, a, n, ours, want);
    if (T_USABLE(ours) < n)
        fail_msg("%s(%zu, %zu): usable size %zu", fn, a, n, T_USABLE(ours));
    T_FREE(ours);
    glibc_free(theirs);
}

static void test_memalign_as_glibc(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ALIGNS; i++)
        for (size_t j = 0; j < N_SIZES; j++) {
            size_t a = compat_aligns[i], n = compat_sizes[j];
            errno = 0;
            void *ours = T_MEMALIGN(a, n);
            int e = errno;
            errno = 0;
            void *theirs = glibc_memalign(a, n);
            compare_aligned("memalign", a, n, ours, e, theirs, errno);
        }
}

/* glibc up to 2.37 makes aligned_alloc memalign; 2.38 refuses an alignment that is not a power of
 * two with EINVAL. Either way pyalloc answers as the glibc running. */
static void test_aligned_alloc_as_glibc(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ALIGNS; i++)
        for (size_t j = 0; j < N_SIZES; j++) {
            size_t a = compat_aligns[i], n = compat_sizes[j];
            errno = 0;
            void *ours = T_ALIGNED_ALLOC(a, n);
            int e = errno;
            errno = 0;
            void *theirs = glibc_aligned_alloc(a, n);
            compare_aligned("aligned_alloc", a, n, ours, e, theirs, errno);
        }
}

/* The case: Debian 12's glibc 2.36 rounds 48 up to 64 and succeeds. */
static void test_memalign_48(void **state)
{
    (void)state;
    void *p = T_MEMALIGN(48, 100);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    T_FREE(p);
}

static void test_posix_memalign_as_glibc(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ALIGNS; i++)
        for (size_t j = 0; j < N_SIZES; j++) {
            size_t a = compat_aligns[i], n = compat_sizes[j];
            void *ours = (void *)0x1, *theirs = (void *)0x1;
            errno = 0;
            int rc = T_POSIX_MEMALIGN(&ours, a, n), e = errno;
            errno = 0;
            int grc = glibc_posix_memalign(&theirs, a, n), ge = errno;
            if (!T_SYS_IS_GLIBC && (rc == ENOMEM || grc == ENOMEM)) {
                if (rc == 0)
                    T_FREE(ours);
                if (grc == 0)
                    glibc_free(theirs);
                continue;
            }
            if (rc != grc || e != ge)
                fail_msg("posix_memalign(%zu, %zu): pyalloc %d (errno %d), glibc %d (errno %d)", a, n, rc, e, grc, ge);
            if (rc != 0) {
                assert_ptr_equal(ours, (void *)0x1); /* untouched on failure, as glibc leaves it */
                continue;
            }
            compare_aligned("posix_memalign", a, n, ours, 0, theirs, 0);
        }
}

/* malloc(0): a unique block that can be freed, as glibc's (pyalloc's is 8 bytes, glibc's 24). */
static void test_malloc_zero_unique(void **state)
{
    (void)state;
    void *a = T_MALLOC(0), *b = T_MALLOC(0), *g = glibc_malloc(0);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(g);
    assert_ptr_not_equal(a, b);
    assert_int_equal(T_USABLE(a), 8);
    T_FREE(a);
    T_FREE(b);
    glibc_free(g);
}

/* realloc(p, 0) frees p and returns NULL, as glibc 2.36 does (its REALLOC_ZERO_BYTES_FREES);
 * realloc(NULL, 0) is malloc(0). */
static void test_realloc_zero_as_glibc(void **state)
{
    (void)state;
    assert_null(glibc_realloc(glibc_malloc(10), 0));
    static const size_t sizes[] = {1, 24, 512, 513, 100000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        errno = 777;
        assert_null(T_REALLOC(T_MALLOC(sizes[i]), 0));
        assert_int_equal(errno, 777);
    }
    void *p = T_REALLOC(NULL, 0);
    assert_non_null(p);
    T_FREE(p);
}

/* A successful call leaves errno alone, as glibc's do. */
static void test_errno_untouched_on_success(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 16, 24, 512, 513, 5000, 1 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        errno = 4242;
        void *p = T_MALLOC(sizes[i]);
        p = T_REALLOC(p, sizes[i] * 2 + 1);
        void *q = T_CALLOC(3, sizes[i]);
        void *r = T_MEMALIGN(64, sizes[i]);
        T_FREE(p);
        T_FREE(q);
        T_FREE(r);
        if (errno != 4242)
            fail_msg("a successful request of %zu bytes changed errno to %d", sizes[i], errno);
    }
}

/* malloc_trim gives pyalloc's empty pages back at once and says so (glibc says 1 when it released
 * memory). */
static void test_malloc_trim_gives_pages_back(void **state)
{
    (void)state;
    enum { N = 20000 };
    static void *p[N];
    for (int i = 0; i < N; i++)
        p[i] = T_MALLOC(64);
    for (int i = 0; i < N; i++)
        T_FREE(p[i]);
    struct pa_stats before, after;
    assert_int_equal(pa_stats_get(&before, sizeof before), 0);
    assert_int_equal(T_TRIM(0), 1);
    assert_int_equal(pa_stats_get(&after, sizeof after), 0);
    assert_true(after.pages_given_back > before.pages_given_back);
    assert_int_equal(after.pages_dirty, 0);
}

/* When the reservation is full (the compat_*_reserve16 registration sets PYALLOC_RESERVE_MB=16, the
 * least there is) requests go on succeeding, from glibc; with the default 64 GiB every one of these
 * comes from the pools. */
static void test_pool_full_falls_back(void **state)
{
    (void)state;
    enum { N = 400000, SIZE = 64 }; /* 25.6 MB of blocks */
    const char *mb = getenv("PYALLOC_RESERVE_MB");
    size_t reserve = mb ? (size_t)strtoul(mb, NULL, 10) << 20 : 0;
    void **p = T_MALLOC(N * sizeof *p);
    assert_non_null(p);
    size_t small = 0;
    for (size_t i = 0; i < N; i++) {
        p[i] = T_MALLOC(SIZE);
        if (p[i] == NULL)
            fail_msg("malloc(%d) number %zu failed", SIZE, i);
        small += pa_is_small(p[i]) != 0;
    }
    if (reserve)
        assert_true(small < N && small * SIZE <= reserve);
    else
        assert_int_equal(small, N);
    for (size_t i = 0; i < N; i++)
        T_FREE(p[i]);
    T_FREE(p);
}

#ifndef PA_TEST_PA_API
/* glibc's mallinfo2 (and malloc_stats, malloc_info, mallopt) describe glibc's heap: the requests pyalloc
 * passes on, not the pools. */
static void test_mallinfo_sees_passthrough_only(void **state)
{
    (void)state;
    enum { N = 5000 };
    static void *small[N];
    struct mallinfo2 m0 = mallinfo2();
    for (int i = 0; i < N; i++)
        small[i] = malloc(100);
    struct mallinfo2 m1 = mallinfo2();
    void *big = malloc(100000); /* below glibc's mmap threshold: in its heap */
    struct mallinfo2 m2 = mallinfo2();
    assert_true(m1.uordblks - m0.uordblks < 64 * 1024); /* 500 KB of small blocks, none in glibc's heap */
    assert_true(m2.uordblks - m1.uordblks >= 100000);
    free(big);
    for (int i = 0; i < N; i++)
        free(small[i]);
}

/* cfree (gone from glibc's headers since 2.26, still in old binaries) is free. */
extern void cfree(void *p);
static void test_cfree(void **state)
{
    (void)state;
    cfree(NULL);
    cfree(malloc(24));
    cfree(malloc(4000));
    void *p = malloc(24);
    assert_true(pa_is_small(p));
    free(p);
}

/* C23's free_sized and free_aligned_sized (glibc 2.43): free, whatever glibc is running. */
extern void free_sized(void *p, size_t n);
extern void free_aligned_sized(void *p, size_t a, size_t n);
static void test_free_sized(void **state)
{
    (void)state;
    free_sized(NULL, 0);
    free_sized(malloc(24), 24);
    free_sized(malloc(4000), 4000);
    free_aligned_sized(aligned_alloc(64, 64), 64, 64);
    free_aligned_sized(aligned_alloc(16, 32), 16, 32);
    free_sized(glibc_malloc(100), 100); /* a glibc block goes back to glibc */
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memalign_as_glibc),
        cmocka_unit_test(test_aligned_alloc_as_glibc),
        cmocka_unit_test(test_memalign_48),
        cmocka_unit_test(test_posix_memalign_as_glibc),
        cmocka_unit_test(test_malloc_zero_unique),
        cmocka_unit_test(test_realloc_zero_as_glibc),
        cmocka_unit_test(test_errno_untouched_on_success),
        cmocka_unit_test(test_malloc_trim_gives_pages_back),
        cmocka_unit_test(test_pool_full_falls_back),
#ifndef PA_TEST_PA_API
        cmocka_unit_test(test_mallinfo_sees_passthrough_only),
        cmocka_unit_test(test_cfree),
        cmocka_unit_test(test_free_sized),
#endif
    };
    print_message("pyalloc against glibc through %s, PYALLOC_ALIGN=%s\n", T_API_NAME,
                  getenv("PYALLOC_ALIGN") ? getenv("PYALLOC_ALIGN") : "(unset)");
    return cmocka_run_group_tests(tests, setup, NULL);
}
