/* SPDX-License-Identifier: MIT
 * mstress: the pattern of mimalloc's stress test (mimalloc-bench's mstress): in each of a number
 * of iterations (200 at scale 1) a fresh set of threads starts (worker 0 is the main thread, whose
 * heap lives on); each thread mallocs many blocks of mixed sizes
 * (8..128 bytes for short-lived ones, 8..512 for the half it retains to its end; 1 in 100 is 100
 * times larger, 1 in 1000 a thousand, 1 in 10000 ten thousand times), frees two thirds of them
 * again at random, and swaps a quarter with a slot of a table shared by all threads, so blocks
 * travel between threads and survive their thread. Between iterations the main thread frees half
 * of the shared table, the rest stays for the next threads. Every block is filled with a pattern
 * and checked whole when freed (a mismatch aborts); the checksum is a sum over every block freed,
 * so it does not depend on which thread frees it.
 * usage: mstress [scale=1] [threads=2] */
#include "common.h"
#include <pthread.h>
#include <stdatomic.h>

#define ITERATIONS 200   /* times the scale */
#define ALLOCS 5000      /* per thread and iteration, times (thread id % 8 + 1) */
#define TRANSFERS 1000
#define MAX_THREADS 64

static _Atomic(uint64_t *) transfer[TRANSFERS];
static uint64_t iteration_seed;

typedef struct {
    int id;
    uint64_t allocs;
    uint64_t sum;
} worker_t;

static int chance(rng_t *r, uint32_t percent) { return rng_below(r, 100) < percent; }

/* A block of `words` words (times 100, 1000 or 10000 now and then), each word (words - i) ^ tag,
 * the first one read back as the length. */
static uint64_t *block_new(rng_t *r, size_t words, uint64_t tag)
{
    if (chance(r, 1)) {
        if (chance(r, 1))
            words *= 10000;
        else if (chance(r, 10))
            words *= 1000;
        else
            words *= 100;
    }
    uint64_t *p = xmalloc(words * sizeof *p);
    p[0] = words;
    for (size_t i = 1; i < words; i++)
        p[i] = (words - i) ^ tag;
    return p;
}

static uint64_t block_free(uint64_t *p)
{
    if (!p)
        return 0;
    size_t words = (size_t)p[0];
    uint64_t tag = words > 1 ? p[1] ^ (words - 1) : 0;
    for (size_t i = 2; i < words; i++) {
        if (p[i] != ((words - i) ^ tag)) {
            fprintf(stderr, "mstress: block %p corrupted at word %zu\n", (void *)p, i);
            abort();
        }
    }
    free(p);
    return ck_mix(words, tag);
}

static void *worker(void *arg)
{
    worker_t *w = arg;
    rng_t r = rng_make(iteration_seed + (uint64_t)w->id);
    uint64_t tag = (iteration_seed << 40) ^ ((uint64_t)w->id << 32);
    uint64_t allocs = w->allocs, retain = allocs / 2;
    uint64_t **data = NULL;
    size_t data_cap = 0, data_top = 0;
    uint64_t **kept = xmalloc(retain * sizeof *kept);
    size_t kept_top = 0;
    while (allocs > 0 || retain > 0) {
        if (retain == 0 || (allocs > 0 && chance(&r, 50))) {
            allocs--;
            if (data_top == data_cap) {
                data_cap += 100000;
                data = realloc(data, data_cap * sizeof *data);
                if (!data)
                    abort();
            }
            data[data_top++] = block_new(&r, (size_t)1 << rng_below(&r, 5), tag++);
        } else {
            retain--;
            kept[kept_top++] = block_new(&r, (size_t)1 << rng_below(&r, 7), tag++);
        }
        if (data_top > 0 && chance(&r, 66)) {
            size_t i = rng_below(&r, (uint32_t)data_top);
            w->sum += block_free(data[i]);
            data[i] = NULL;
        }
        if (data_top > 0 && chance(&r, 25)) {
            size_t i = rng_below(&r, (uint32_t)data_top);
            data[i] = atomic_exchange(&transfer[rng_below(&r, TRANSFERS)], data[i]);
        }
    }
    for (size_t i = 0; i < kept_top; i++)
        w->sum += block_free(kept[i]);
    for (size_t i = 0; i < data_top; i++)
        w->sum += block_free(data[i]);
    free(kept);
    free(data);
    return NULL;
}

int main(int argc, char **argv)
{
    double scale = bench_arg_double(argc, argv, 1, 1.0);
    long nthreads = bench_arg_long(argc, argv, 2, 2);
    if (nthreads < 1 || nthreads > MAX_THREADS)
        nthreads = 2;
    uint64_t iterations = bench_scaled(ITERATIONS, scale);
    rng_t r = rng_make(5);
    uint64_t sum = 0;
    pthread_t tid[MAX_THREADS];
    worker_t w[MAX_THREADS];

    double t0 = bench_now();
    for (uint64_t it = 0; it < iterations; it++) {
        iteration_seed = it + 1;
        for (long t = 0; t < nthreads; t++) {
            w[t] = (worker_t){ .id = (int)t, .allocs = ALLOCS * (uint64_t)(t % 8 + 1) };
            if (t > 0 && pthread_create(&tid[t], NULL, worker, &w[t]) != 0) {
                perror("pthread_create");
                return 1;
            }
        }
        worker(&w[0]); /* the main thread is worker 0, as in mimalloc's test: its heap lives on */
        sum += w[0].sum;
        for (long t = 1; t < nthreads; t++) {
            pthread_join(tid[t], NULL);
            sum += w[t].sum;
        }
        for (size_t i = 0; i < TRANSFERS; i++)
            if (it + 1 == iterations || chance(&r, 50))
                sum += block_free(atomic_exchange(&transfer[i], NULL));
    }
    bench_finish("mstress", ck_mix(0, sum), bench_now() - t0);
    return 0;
}
