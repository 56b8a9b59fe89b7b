/* SPDX-License-Identifier: MIT
 * The pattern of mimalloc's stress test (bench/mstress): the main thread works alongside a fresh
 * thread every round, and blocks travel between them through a shared table, so the main thread
 * frees blocks of exited threads (adopting their pages) whose other blocks the next threads free.
 * Those adopted pages are emptied by frees the main thread never sees; they must come back, not
 * pile up on its lists: RSS must level off, not grow with the rounds. Every block is checked when
 * freed. RSS is compared after the warm-up rounds and after all of them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "stress_common.h"

enum { TABLE = 512, ALLOCS = 6000 };
#define MAX_RSS_GROWTH ((size_t)8 << 20) /* bytes allowed between the warm-up and the end */

struct block {
    size_t size;
    uint64_t owner, seq;
};

static _Atomic(struct block *) table[TABLE];
static _Atomic size_t corrupt;

static struct block *block_new(uint64_t *rng, uint64_t owner, uint64_t seq)
{
    size_t size = sizeof(struct block) + (size_t)(8u << (t_rand(rng) % 6)); /* 32..280 bytes */
    struct block *b = T_MALLOC(size);
    if (b == NULL)
        abort();
    b->size = size;
    b->owner = owner;
    b->seq = seq;
    t_fill(b + 1, size - sizeof *b, owner, seq);
    return b;
}

static void block_free(struct block *b)
{
    if (b == NULL)
        return;
    if (t_check(b + 1, b->size - sizeof *b, b->owner, b->seq) != (size_t)-1)
        atomic_fetch_add(&corrupt, 1);
    T_FREE(b);
}

/* One round's work: allocate, free two thirds at random, swap a quarter through the table. */
static void *work(void *arg)
{
    uint64_t owner = (uint64_t)(uintptr_t)arg, rng = 0xada0ULL ^ owner;
    static _Thread_local struct block *mine[ALLOCS];
    size_t n = 0;
    for (uint64_t i = 0; i < ALLOCS; i++) {
        mine[n++] = block_new(&rng, owner, i);
        if (t_rand(&rng) % 3 != 0) {
            size_t k = t_rand(&rng) % n;
            block_free(mine[k]);
            mine[k] = NULL;
        }
        if (t_rand(&rng) % 4 == 0) {
            size_t k = t_rand(&rng) % n;
            mine[k] = atomic_exchange(&table[t_rand(&rng) % TABLE], mine[k]);
        }
    }
    for (size_t k = 0; k < n; k++)
        block_free(mine[k]);
    return NULL;
}

static void test_adopted_pages_come_back(void **state)
{
    (void)state;
    size_t rounds = stress_scaled(100), warmup = rounds / 5;
    size_t rss_warm = 0;
    uint64_t rng = 99;
    double t0 = stress_now();
    for (size_t r = 0; r < rounds; r++) {
        pthread_t t;
        STRESS_CHECK(pthread_create(&t, NULL, work, (void *)(uintptr_t)(2 * r + 1)));
        work((void *)(uintptr_t)(2 * r));
        STRESS_CHECK(pthread_join(t, NULL));
        for (size_t i = 0; i < TABLE; i++)
            if (t_rand(&rng) % 2 == 0)
                block_free(atomic_exchange(&table[i], NULL));
        if (r + 1 == warmup)
            rss_warm = t_rss_bytes();
    }
    for (size_t i = 0; i < TABLE; i++)
        block_free(atomic_exchange(&table[i], NULL));
    size_t rss_end = t_rss_bytes();
    print_message("%zu rounds in %.2f s through %s; RSS after %zu rounds %zu KiB, after all %zu KiB\n", rounds,
                  stress_now() - t0, T_API_NAME, warmup, rss_warm >> 10, rss_end >> 10);
    assert_int_equal(atomic_load(&corrupt), 0);
    assert_true(rss_warm > 0);
    if (rss_end > rss_warm + MAX_RSS_GROWTH)
        fail_msg("RSS grew by %zu KiB between round %zu and round %zu (limit %zu KiB)", (rss_end - rss_warm) >> 10,
                 warmup, rounds, MAX_RSS_GROWTH >> 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_adopted_pages_come_back)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
