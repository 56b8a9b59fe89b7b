/* SPDX-License-Identifier: MIT
 * Memory given back: about 2 million small blocks of mixed sizes 16..256 are allocated and written,
 * then freed in a shuffled order. Empty pages wait PYALLOC_PURGE_DELAY_MS before they go back (so
 * waves of free/malloc do not fault them in again): once the delay has passed and the program
 * allocates again, at least 90% of the RSS growth must have been returned to the OS (glibc,
 * mimalloc 2.0 and tcmalloc keep all of it; see docs allocator-facts "Memory given back"). A second
 * round callocs the same blocks on the pages given back: every byte must be zero, and the peak must
 * not exceed the first round's by more than a quarter; malloc_trim then gives the memory back at
 * once, without waiting.
 * The pointer array is mmap'ed so it does not come from the allocator under test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>

#include <cmocka.h>

#include "stress_common.h"

#define MIN_GIVEN_BACK 0.90

/* The delay pyalloc waits before giving an empty page back (docs/options.md). */
static long purge_delay_ms(void)
{
    const char *s = getenv("PYALLOC_PURGE_DELAY_MS");
    return s && *s ? atol(s) : 1000;
}

/* Wait out the delay, then go on allocating for a few milliseconds, as a program does: 64 rounds
 * of 4096 16-byte blocks allocated and freed run the allocator's slow paths a few hundred times,
 * and each gives back at most 32 MiB of expired pages (so no one call stalls). */
static void wait_and_allocate(void)
{
    long ms = 2 * purge_delay_ms() + 100;
    struct timespec nap = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&nap, NULL);
    enum { N = 4096 };
    static void *b[N];
    for (int round = 0; round < 64; round++) {
        for (int i = 0; i < N; i++)
            b[i] = T_MALLOC(16);
        for (int i = 0; i < N; i++)
            T_FREE(b[i]);
    }
}

/* One round: allocate n blocks (calloc'ed and checked zero when zeroed), then free them shuffled.
 * Returns the RSS at the peak and after the free through *peak and *after. */
static void round_trip(void **blocks, size_t n, int zeroed, size_t *bytes, size_t *peak, size_t *after)
{
    uint64_t rng = 42; /* the same sizes in every round */
    size_t nonzero = 0;
    *bytes = 0;
    for (size_t i = 0; i < n; i++) {
        size_t size = 16 + (t_rand(&rng) % 241); /* 16..256 */
        blocks[i] = zeroed ? T_CALLOC(1, size) : T_MALLOC(size);
        if (blocks[i] == NULL)
            fail_msg("allocation of %zu bytes failed at block %zu", size, i);
        if (zeroed) {
            /* these blocks reuse pages given back after the first round: calloc must still zero */
            const unsigned char *b = blocks[i];
            for (size_t k = 0; k < size; k++)
                nonzero += b[k] != 0;
        }
        memset(blocks[i], 0x5a, size);
        *bytes += size;
    }
    *peak = t_rss_bytes();
    if (nonzero != 0)
        fail_msg("calloc returned %zu non-zero bytes in blocks on reused pages", nonzero);
    for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates: frees land all over the pages */
        size_t j = t_rand(&rng) % (i + 1);
        void *tmp = blocks[i];
        blocks[i] = blocks[j];
        blocks[j] = tmp;
    }
    for (size_t i = 0; i < n; i++)
        T_FREE(blocks[i]);
    *after = t_rss_bytes();
}

static void check_given_back(const char *what, size_t base, size_t peak, size_t after, size_t bytes)
{
    size_t growth = peak > base ? peak - base : 0;
    size_t back = peak > after ? peak - after : 0;
    print_message("%s through %s: %zu MiB requested; RSS base %zu MiB, peak %zu MiB, after free %zu MiB;"
                  " %.1f%% of the growth given back\n",
                  what, T_API_NAME, bytes >> 20, base >> 20, peak >> 20, after >> 20,
                  growth ? 100.0 * (double)back / (double)growth : 0.0);
    if (growth < bytes / 2) /* the blocks really were resident */
        fail_msg("%s: RSS grew by %zu MiB only, for %zu MiB of blocks", what, growth >> 20, bytes >> 20);
    if ((double)back < MIN_GIVEN_BACK * (double)growth)
        fail_msg("%s: only %zu of %zu MiB of RSS growth given back (need %.0f%%)", what, back >> 20,
                 growth >> 20, MIN_GIVEN_BACK * 100);
}

static void test_rss_falls_after_free(void **state)
{
    (void)state;
    size_t n = stress_scaled(2000000);
    void **blocks = mmap(NULL, n * sizeof(void *), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(blocks != MAP_FAILED);
    memset(blocks, 0, n * sizeof(void *)); /* fault the array in before the baseline */

    size_t base = t_rss_bytes(), bytes, peak1, after1, peak2, after2;
    round_trip(blocks, n, 0, &bytes, &peak1, &after1);
    print_message("right after the free, RSS %zu MiB (empty pages wait out the delay)\n", after1 >> 20);
    wait_and_allocate();
    after1 = t_rss_bytes();
    check_given_back("malloc round, after the delay", base, peak1, after1, bytes);
    /* again, on the pages given back: calloc zeroes, and the memory is reused, not added to */
    round_trip(blocks, n, 1, &bytes, &peak2, &after2);
    T_TRIM(0); /* no waiting: malloc_trim gives every empty page back now */
    after2 = t_rss_bytes();
    check_given_back("calloc round, after malloc_trim", after1, peak2, after2, bytes);
    if (peak2 > base + (peak1 - base) + (peak1 - base) / 4)
        fail_msg("the second round peaked at %zu MiB, the first at %zu MiB: memory not reused",
                 peak2 >> 20, peak1 >> 20);
    munmap(blocks, n * sizeof(void *));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_rss_falls_after_free)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
