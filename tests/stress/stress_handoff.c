/* SPDX-License-Identifier: MIT
 * Threads hand blocks to each other (after mimalloc test-stress.c): producers allocate random sizes
 * 1..600, fill them with a payload derived from (thread, seq) and push them through a lock-protected
 * ring; consumers verify the payload and usable size, sometimes realloc the block first (a realloc
 * of a block another thread owns), and free it. Every block is accounted for at the end. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "stress_common.h"

enum { PRODUCERS = 4, CONSUMERS = 4, RING = 4096, MAX_SIZE = 600 };

struct item {
    unsigned char *p;
    size_t size;
    uint32_t thread;
    uint32_t seq;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    struct item slot[RING];
    size_t head, count;
    int producers_left;
} ring = {.lock = PTHREAD_MUTEX_INITIALIZER,
          .not_empty = PTHREAD_COND_INITIALIZER,
          .not_full = PTHREAD_COND_INITIALIZER};

static size_t per_producer;
static size_t consumed[CONSUMERS], errors[CONSUMERS];

static void ring_push(const struct item *batch, size_t n)
{
    pthread_mutex_lock(&ring.lock);
    for (size_t i = 0; i < n; i++) {
        while (ring.count == RING)
            pthread_cond_wait(&ring.not_full, &ring.lock);
        ring.slot[(ring.head + ring.count) % RING] = batch[i];
        ring.count++;
    }
    pthread_cond_broadcast(&ring.not_empty);
    pthread_mutex_unlock(&ring.lock);
}

/* Takes up to max items; returns 0 once the ring is empty and every producer is done. */
static size_t ring_pop(struct item *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&ring.lock);
    while (ring.count == 0 && ring.producers_left > 0)
        pthread_cond_wait(&ring.not_empty, &ring.lock);
    while (n < max && ring.count > 0) {
        out[n++] = ring.slot[ring.head];
        ring.head = (ring.head + 1) % RING;
        ring.count--;
    }
    pthread_cond_broadcast(&ring.not_full);
    pthread_mutex_unlock(&ring.lock);
    return n;
}

static void *producer(void *arg)
{
    uint32_t id = (uint32_t)(uintptr_t)arg;
    uint64_t rng = 0x1234567ULL + id * 7919;
    enum { BATCH = 32 };
    struct item batch[BATCH];
    size_t nb = 0;
    /* Keep a few blocks of our own alive too, so pages hold both local and handed-off blocks. */
    enum { OWN = 64 };
    void *own[OWN] = {0};
    for (size_t seq = 0; seq < per_producer; seq++) {
        size_t size = 1 + t_rand(&rng) % MAX_SIZE;
        unsigned char *p = T_MALLOC(size);
        if (p == NULL) {
            fprintf(stderr, "producer %u: malloc(%zu) failed\n", id, size);
            abort();
        }
        t_fill(p, size, id, seq);
        batch[nb++] = (struct item){p, size, id, (uint32_t)seq};
        if (nb == BATCH) {
            ring_push(batch, nb);
            nb = 0;
        }
        size_t k = t_rand(&rng) % OWN;
        T_FREE(own[k]);
        own[k] = T_MALLOC(1 + t_rand(&rng) % 300);
    }
    ring_push(batch, nb);
    for (size_t k = 0; k < OWN; k++)
        T_FREE(own[k]);
    pthread_mutex_lock(&ring.lock);
    ring.producers_left--;
    pthread_cond_broadcast(&ring.not_empty);
    pthread_mutex_unlock(&ring.lock);
    return NULL;
}

static void *consumer(void *arg)
{
    size_t id = (size_t)(uintptr_t)arg;
    uint64_t rng = 0xabcdefULL + id * 104729;
    struct item batch[64];
    size_t n;
    while ((n = ring_pop(batch, 64)) > 0) {
        for (size_t i = 0; i < n; i++) {
            struct item it = batch[i];
            if (T_USABLE(it.p) < it.size) {
                fprintf(stderr, "block (%u,%u) of %zu bytes: usable size %zu\n", it.thread, it.seq,
                        it.size, T_USABLE(it.p));
                errors[id]++;
            }
            size_t bad = t_check(it.p, it.size, it.thread, it.seq);
            if (bad != (size_t)-1) {
                fprintf(stderr, "block (%u,%u) of %zu bytes at %p: byte %zu corrupted\n", it.thread,
                        it.seq, it.size, (void *)it.p, bad);
                errors[id]++;
            }
            if (t_rand(&rng) % 8 == 0) {
                /* realloc a block owned by another thread: into another class or out of the pools */
                size_t to = 1 + t_rand(&rng) % (MAX_SIZE + 400);
                unsigned char *q = T_REALLOC(it.p, to);
                if (q == NULL) {
                    fprintf(stderr, "realloc(%zu -> %zu) failed\n", it.size, to);
                    abort();
                }
                size_t keep = to < it.size ? to : it.size;
                if (t_check(q, keep, it.thread, it.seq) != (size_t)-1) {
                    fprintf(stderr, "realloc(%zu -> %zu) of (%u,%u) lost contents\n", it.size, to,
                            it.thread, it.seq);
                    errors[id]++;
                }
                it.p = q;
            }
            errno = 4242;
            T_FREE(it.p); /* a free of another thread's block must leave errno alone too */
            if (errno != 4242) {
                fprintf(stderr, "free of a handed-off block changed errno to %d\n", errno);
                errors[id]++;
            }
            consumed[id]++;
        }
    }
    return NULL;
}

static void test_handoff(void **state)
{
    (void)state;
    pthread_t prod[PRODUCERS], cons[CONSUMERS];
    per_producer = stress_scaled(300000);
    ring.producers_left = PRODUCERS;
    double t0 = stress_now();
    for (size_t i = 0; i < CONSUMERS; i++)
        STRESS_CHECK(pthread_create(&cons[i], NULL, consumer, (void *)(uintptr_t)i));
    for (size_t i = 0; i < PRODUCERS; i++)
        STRESS_CHECK(pthread_create(&prod[i], NULL, producer, (void *)(uintptr_t)i));
    for (size_t i = 0; i < PRODUCERS; i++)
        STRESS_CHECK(pthread_join(prod[i], NULL));
    for (size_t i = 0; i < CONSUMERS; i++)
        STRESS_CHECK(pthread_join(cons[i], NULL));
    size_t total = 0, errs = 0;
    for (size_t i = 0; i < CONSUMERS; i++) {
        total += consumed[i];
        errs += errors[i];
    }
    print_message("%zu blocks handed off in %.2f s through %s\n", total, stress_now() - t0,
                  T_API_NAME);
    assert_int_equal(errs, 0);
    assert_int_equal(total, per_producer * PRODUCERS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_handoff)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
