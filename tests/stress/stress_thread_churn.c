/* SPDX-License-Identifier: MIT
 * Thousands of short-lived threads, a few at a time. Each allocates and frees a mix of sizes and
 * leaves some blocks behind for the main thread to free after it has exited, while the next batch
 * runs. An exited thread's heap is abandoned and later threads adopt its pages: RSS must level off,
 * not grow with the thread count.
 * RSS is compared after the warm-up threads and after all of them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "stress_common.h"

enum { AT_ONCE = 4, LEFT_BEHIND = 16, PER_THREAD = 400 };
#define MAX_RSS_GROWTH ((size_t)8 << 20) /* bytes allowed between the warm-up and the end */

struct job {
    uint32_t id;
    void *left[LEFT_BEHIND];
    size_t left_size[LEFT_BEHIND];
};

static void *short_lived(void *arg)
{
    struct job *job = arg;
    uint64_t rng = 0x7777ULL + job->id;
    enum { LIVE = 64 };
    void *live[LIVE] = {0};
    for (int i = 0; i < PER_THREAD; i++) {
        size_t k = t_rand(&rng) % LIVE;
        T_FREE(live[k]);
        size_t size = 1 + t_rand(&rng) % 512;
        live[k] = T_MALLOC(size);
        if (live[k] == NULL)
            abort();
        memset(live[k], 0x3c, size);
    }
    /* free most, keep a few live blocks for the main thread */
    for (size_t k = 0; k < LIVE; k++)
        T_FREE(live[k]);
    for (size_t k = 0; k < LEFT_BEHIND; k++) {
        job->left_size[k] = 1 + t_rand(&rng) % 600;
        job->left[k] = T_MALLOC(job->left_size[k]);
        if (job->left[k] == NULL)
            abort();
        t_fill(job->left[k], job->left_size[k], job->id, k);
    }
    return NULL;
}

/* Checks and frees the blocks a finished batch left behind; returns how many were corrupted. */
static size_t free_left_behind(struct job *jobs)
{
    size_t corrupt = 0;
    for (size_t i = 0; i < AT_ONCE; i++)
        for (size_t k = 0; k < LEFT_BEHIND; k++) {
            if (t_check(jobs[i].left[k], jobs[i].left_size[k], jobs[i].id, k) != (size_t)-1)
                corrupt++;
            T_FREE(jobs[i].left[k]);
        }
    return corrupt;
}

static void test_thread_churn_rss_bounded(void **state)
{
    (void)state;
    size_t total = stress_scaled(3000), warmup = total / 6;
    size_t rss_warm = 0, corrupt = 0;
    static struct job jobs[2][AT_ONCE]; /* the running batch and the one before it */
    pthread_t t[AT_ONCE];
    double t0 = stress_now();
    size_t batch = 0;
    for (size_t done = 0; done < total; done += AT_ONCE, batch++) {
        struct job *cur = jobs[batch % 2], *prev = jobs[(batch + 1) % 2];
        for (size_t i = 0; i < AT_ONCE; i++) {
            cur[i].id = (uint32_t)(done + i);
            STRESS_CHECK(pthread_create(&t[i], NULL, short_lived, &cur[i]));
        }
        /* The previous batch has exited; its blocks are freed here, by a thread that does not own
         * them, while the new batch may be adopting the very pages they sit in. */
        if (batch > 0)
            corrupt += free_left_behind(prev);
        for (size_t i = 0; i < AT_ONCE; i++)
            STRESS_CHECK(pthread_join(t[i], NULL));
        if (done + AT_ONCE >= warmup && rss_warm == 0)
            rss_warm = t_rss_bytes();
    }
    corrupt += free_left_behind(jobs[(batch + 1) % 2]);
    size_t rss_end = t_rss_bytes();
    print_message("%zu threads in %.2f s through %s; RSS after %zu threads %zu KiB, after all %zu KiB\n",
                  total, stress_now() - t0, T_API_NAME, warmup, rss_warm >> 10, rss_end >> 10);
    assert_int_equal(corrupt, 0);
    assert_true(rss_warm > 0);
    if (rss_end > rss_warm + MAX_RSS_GROWTH)
        fail_msg("RSS grew by %zu KiB between thread %zu and thread %zu (limit %zu KiB)",
                 (rss_end - rss_warm) >> 10, warmup, total, MAX_RSS_GROWTH >> 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_thread_churn_rss_bounded)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
