/* SPDX-License-Identifier: MIT
 * rptest: the pattern of rpmalloc's benchmark (as mimalloc-bench runs it: random sizes 16..16000
 * with a falloff towards small sizes, 1000 live blocks per thread, 100 operations per loop,
 * blocks handed to another thread every second loop). Each thread keeps a table of slots; every
 * loop it frees a varying number of slots (walking the table with a prime stride), frees every
 * block other threads handed it since the last loop, and mallocs a varying number of new blocks
 * into slots (a second prime stride); every second loop it also mallocs a batch of blocks and
 * pushes it onto the next thread's inbox. A third of the blocks come from malloc, a third from
 * aligned_alloc(8) and a third from aligned_alloc(16). Every block is written whole, as
 * mimalloc-bench's version does, so its memory is touched.
 * The checksum is a sum over every block freed, so it does not depend on which thread frees it.
 * usage: rptest [scale=1] [threads=2] [min=16] [max=16000] */
#include "common.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define SLOTS 1000
#define OPS 100
#define LOOPS 10000
#define CROSS_EVERY 2
#define FREE_STRIDE 13
#define ALLOC_STRIDE 7
#define MAX_THREADS 64
#define INBOX_MAX 4 /* batches waiting for a thread: a faster thread waits rather than pile up more */

/* Per-loop operation counts, in percent of OPS: the load varies from loop to loop. */
static const uint8_t alloc_pct[8] = { 60, 140, 90, 110, 75, 125, 100, 100 };
static const uint8_t free_pct[8] = { 80, 120, 50, 150, 95, 105, 70, 130 };

typedef struct batch {
    struct batch *next;
    size_t n;
    void **blk;
} batch_t;

typedef struct {
    int id, nthreads;
    uint64_t loops;
    uint64_t sum; /* sum of the checks of the blocks this thread freed */
    _Atomic(batch_t *) inbox;
    _Atomic int waiting; /* batches in inbox */
    _Atomic int done;    /* finished its loops: takes no more batches */
    char pad[64];
} worker_t;

static worker_t workers[MAX_THREADS];
static size_t size_min = 16, size_max = 16000;

/* A size in [min, max], small sizes more likely: max - min times u2 * |u0 + u1 - 1|, a falloff
 * over the range with a mean of a sixth of it. */
static size_t pick_size(rng_t *r)
{
    double u0 = (double)rng_next(r) * 0x1p-64, u1 = (double)rng_next(r) * 0x1p-64, u2 = (double)rng_next(r) * 0x1p-64;
    double t = u0 + u1 - 1.0;
    if (t < 0)
        t = -t;
    return size_min + (size_t)((double)(size_max - size_min) * u2 * t);
}

static void *block_new(rng_t *r, uint64_t tag)
{
    size_t n = pick_size(r);
    void *p;
    switch (tag % 3) {
    case 0: p = malloc(n); break;
    case 1: p = aligned_alloc(8, (n + 7) & ~(size_t)7); break;
    default: p = aligned_alloc(16, (n + 15) & ~(size_t)15); break;
    }
    if (!p) {
        fprintf(stderr, "rptest: allocation of %zu failed\n", n);
        abort();
    }
    if ((uintptr_t)p % ((tag % 3) == 2 ? 16 : 8) != 0) {
        fprintf(stderr, "rptest: misaligned block %p\n", p);
        abort();
    }
    memset(p, (int)(tag & 0xFF), n);
    blk_stamp(p, n, tag);
    return p;
}

static uint64_t block_free(void *p)
{
    uint64_t v = ck_mix(0, blk_read(p));
    free(p);
    return v;
}

/* Frees the batches b taken from to's inbox; returns the sum of their blocks' checks. */
static uint64_t drain(worker_t *to, batch_t *b)
{
    uint64_t sum = 0;
    for (batch_t *c = b; c; c = c->next)
        atomic_fetch_sub(&to->waiting, 1);
    while (b) {
        batch_t *next = b->next;
        for (size_t i = 0; i < b->n; i++)
            sum += block_free(b->blk[i]);
        free(b->blk);
        free(b);
        b = next;
    }
    return sum;
}

static void *worker(void *arg)
{
    worker_t *w = arg;
    rng_t r = rng_make(77 + (uint64_t)w->id);
    uint64_t tag = (uint64_t)w->id << 40;
    void **slot = calloc(SLOTS, sizeof *slot);
    size_t free_at = 0, alloc_at = 0;
    worker_t *peer = &workers[(w->id + 1) % w->nthreads];
    for (uint64_t l = 0; l < w->loops; l++) {
        size_t nfree = (size_t)OPS * free_pct[l % 8] * 8 / 1000; /* 80% of the allocations, on average */
        size_t nalloc = (size_t)OPS * alloc_pct[(l / 8) % 8] / 100;
        for (size_t i = 0; i < nfree; i++) {
            if (slot[free_at]) {
                w->sum += block_free(slot[free_at]);
                slot[free_at] = NULL;
            }
            free_at = (free_at + FREE_STRIDE) % SLOTS;
        }
        w->sum += drain(w, atomic_exchange_explicit(&w->inbox, NULL, memory_order_acquire));
        for (size_t i = 0; i < nalloc; i++) {
            if (slot[alloc_at])
                w->sum += block_free(slot[alloc_at]);
            slot[alloc_at] = block_new(&r, tag++);
            alloc_at = (alloc_at + ALLOC_STRIDE) % SLOTS;
        }
        if (w->nthreads > 1 && l % CROSS_EVERY == 0) {
            batch_t *b = xmalloc(sizeof *b);
            b->n = nalloc;
            b->blk = xmalloc(nalloc * sizeof *b->blk);
            for (size_t i = 0; i < nalloc; i++)
                b->blk[i] = block_new(&r, tag++);
            /* Bounded: wait (taking in what others handed this thread meanwhile) while the peer
             * has INBOX_MAX batches to free; once it has finished, free the batch here. */
            while (atomic_load(&peer->waiting) >= INBOX_MAX && !atomic_load(&peer->done)) {
                w->sum += drain(w, atomic_exchange_explicit(&w->inbox, NULL, memory_order_acquire));
                sched_yield();
            }
            atomic_fetch_add(&peer->waiting, 1);
            b->next = atomic_load_explicit(&peer->inbox, memory_order_relaxed);
            while (!atomic_compare_exchange_weak_explicit(&peer->inbox, &b->next, b, memory_order_release,
                                                          memory_order_relaxed))
                ;
            if (atomic_load(&peer->done)) /* it may have missed this one: free what is there */
                w->sum += drain(peer, atomic_exchange_explicit(&peer->inbox, NULL, memory_order_acquire));
        }
    }
    atomic_store(&w->done, 1);
    w->sum += drain(w, atomic_exchange_explicit(&w->inbox, NULL, memory_order_acquire));
    for (size_t i = 0; i < SLOTS; i++)
        if (slot[i])
            w->sum += block_free(slot[i]);
    free(slot);
    return NULL;
}

int main(int argc, char **argv)
{
    double scale = bench_arg_double(argc, argv, 1, 1.0);
    long nthreads = bench_arg_long(argc, argv, 2, 2);
    if (nthreads < 1 || nthreads > MAX_THREADS)
        nthreads = 2;
    size_min = (size_t)bench_arg_long(argc, argv, 3, 16);
    size_max = (size_t)bench_arg_long(argc, argv, 4, 16000);
    if (size_min < 8 || size_max < size_min || size_max > 65535) {
        fprintf(stderr, "rptest: sizes must satisfy 8 <= min <= max <= 65535\n");
        return 2;
    }
    uint64_t loops = bench_scaled(LOOPS, scale);
    pthread_t tid[MAX_THREADS];

    double t0 = bench_now();
    for (long t = 0; t < nthreads; t++) {
        workers[t].id = (int)t;
        workers[t].nthreads = (int)nthreads;
        workers[t].loops = loops;
        if (pthread_create(&tid[t], NULL, worker, &workers[t]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    uint64_t sum = 0;
    for (long t = 0; t < nthreads; t++)
        pthread_join(tid[t], NULL);
    /* Batches pushed after their receiver finished: freed here. */
    for (long t = 0; t < nthreads; t++) {
        sum += workers[t].sum + drain(&workers[t], atomic_exchange(&workers[t].inbox, NULL));
    }
    bench_finish("rptest", ck_mix(0, sum), bench_now() - t0);
    return 0;
}
