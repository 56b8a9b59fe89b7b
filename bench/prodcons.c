/* SPDX-License-Identifier: MIT
 * prodcons: blocks allocated on one thread and freed on another. The producer mallocs batches of
 * blocks (8..512 bytes, and the batch itself, 264 bytes) and passes them through a bounded
 * mutex-and-condvar ring; the consumer reads every block back and frees it.
 * usage: prodcons [scale=1] */
#include "common.h"
#include <pthread.h>

#define BLOCKS 12000000ULL
#define BATCH 32
#define RING 64

typedef struct {
    uint32_t n;
    void *blk[BATCH];
} batch_t;

/* A bounded ring with hysteresis: a waiting producer is woken when the ring is half empty, a
 * waiting consumer when it is a quarter full (or at the end), so the threads hand over many batches
 * per wake-up instead of ping-ponging on every one. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    batch_t *slot[RING];
    size_t head, tail; /* head: next to take, tail: next to fill; tail - head <= RING */
    int producer_waits, consumer_waits;
} ring_t;

static ring_t ring = { .lock = PTHREAD_MUTEX_INITIALIZER,
                       .not_empty = PTHREAD_COND_INITIALIZER,
                       .not_full = PTHREAD_COND_INITIALIZER };

static void ring_put(batch_t *b)
{
    pthread_mutex_lock(&ring.lock);
    while (ring.tail - ring.head == RING) {
        ring.producer_waits = 1;
        pthread_cond_wait(&ring.not_full, &ring.lock);
    }
    ring.slot[ring.tail++ % RING] = b;
    if (ring.consumer_waits && (ring.tail - ring.head >= RING / 4 || !b)) {
        ring.consumer_waits = 0;
        pthread_cond_signal(&ring.not_empty);
    }
    pthread_mutex_unlock(&ring.lock);
}

static batch_t *ring_take(void)
{
    pthread_mutex_lock(&ring.lock);
    while (ring.tail == ring.head) {
        ring.consumer_waits = 1;
        pthread_cond_wait(&ring.not_empty, &ring.lock);
    }
    batch_t *b = ring.slot[ring.head++ % RING];
    if (ring.producer_waits && ring.tail - ring.head <= RING / 2) {
        ring.producer_waits = 0;
        pthread_cond_signal(&ring.not_full);
    }
    pthread_mutex_unlock(&ring.lock);
    return b;
}

static uint64_t nbatches;

static void *producer(void *arg)
{
    (void)arg;
    rng_t r = rng_make(21);
    for (uint64_t k = 0; k < nbatches; k++) {
        batch_t *b = xmalloc(sizeof *b);
        b->n = BATCH;
        for (uint32_t i = 0; i < BATCH; i++) {
            size_t n = rng_range(&r, 8, 512);
            b->blk[i] = xmalloc(n);
            blk_stamp(b->blk[i], n, k * BATCH + i);
        }
        ring_put(b);
    }
    ring_put(NULL);
    return NULL;
}

static void *consumer(void *arg)
{
    uint64_t ck = 0;
    batch_t *b;
    while ((b = ring_take()) != NULL) {
        for (uint32_t i = 0; i < b->n; i++) {
            ck = ck_mix(ck, blk_read(b->blk[i]));
            free(b->blk[i]);
        }
        free(b);
    }
    *(uint64_t *)arg = ck;
    return NULL;
}

int main(int argc, char **argv)
{
    double scale = bench_arg_double(argc, argv, 1, 1.0);
    nbatches = bench_scaled(BLOCKS / BATCH, scale);
    uint64_t ck = 0;
    pthread_t p, c;

    double t0 = bench_now();
    if (pthread_create(&c, NULL, consumer, &ck) != 0 || pthread_create(&p, NULL, producer, NULL) != 0) {
        perror("pthread_create");
        return 1;
    }
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    bench_finish("prodcons", ck, bench_now() - t0);
    return 0;
}
