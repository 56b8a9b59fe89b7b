/* SPDX-License-Identifier: MIT
 * A thread that only frees must not collect pages it cannot give back. Each round a worker thread
 * allocates N blocks of 64 bytes and exits; the main thread, which allocates nothing of that size,
 * frees half of them (blocks of a dead thread's pages); the next round's worker frees the other half.
 * The program never holds more than N blocks (2.5 MiB). When a free by the main thread made it the
 * owner of the dead worker's pages, the next worker's frees piled up on those pages' remote lists,
 * which only an allocation of that size by the owner would have collected: RSS grew by about 2.5 MiB
 * a round (5 -> 128 MiB in 50 rounds). Here it must stay within 16 MiB of where round 5 left it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "stress_common.h"

enum { N = 40000, SIZE = 64, ROUNDS = 50 };
static void *cur[N], *prev[N];

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 1; i < N; i += 2)
        T_FREE(prev[i]); /* the other half of the last round's blocks */
    for (int i = 0; i < N; i++) {
        cur[i] = T_MALLOC(SIZE);
        if (cur[i] == NULL)
            abort();
        memset(cur[i], i & 0xff, SIZE);
    }
    return NULL;
}

static void test_reaper_thread_does_not_hoard(void **state)
{
    (void)state;
    T_FREE(T_MALLOC(8)); /* the main thread has a heap, but no 64-byte page */
    size_t rounds = stress_scaled(ROUNDS), settled = 0;
    for (size_t round = 1; round <= rounds; round++) {
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, worker, NULL), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
        for (int i = 0; i < N; i += 2) {
            const unsigned char *b = cur[i];
            if (b[0] != (unsigned char)(i & 0xff) || b[SIZE - 1] != (unsigned char)(i & 0xff))
                fail_msg("block %d corrupted", i);
            T_FREE(cur[i]);
        }
        memcpy(prev, cur, sizeof cur);
        size_t rss = t_rss_bytes();
        if (round == 5 || (rounds < 5 && round == 1))
            settled = rss;
        if (settled && rss > settled + ((size_t)16 << 20))
            fail_msg("round %zu: RSS %zu MiB, %zu MiB after round 5: memory the program freed is held",
                     round, rss >> 20, settled >> 20);
    }
    for (int i = 1; i < N; i += 2)
        T_FREE(prev[i]);
    print_message("%zu rounds, RSS %zu MiB at the end, %zu MiB after round 5\n", rounds,
                  t_rss_bytes() >> 20, settled >> 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_reaper_thread_does_not_hoard)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
