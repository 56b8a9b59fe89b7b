/* SPDX-License-Identifier: MIT
 * larson: a server-like workload in the spirit of Larson and Krishnan's benchmark. A shared array
 * of blocks (8..512 bytes) is cut into one region per thread; in each round a fresh set of threads
 * starts, each takes a region that other (now exited) threads filled, and replaces random slots in
 * it: read the old block, free it, malloc a new one. Regions rotate between rounds, so nearly
 * every free is of a block another thread allocated, and that thread is gone.
 * usage: larson [scale=1] [threads=4] */
#include "common.h"
#include <pthread.h>

#define REGION 10000
#define ROUNDS 24
#define STEPS_PER_THREAD 100000
#define MAX_THREADS 64

typedef struct {
    void **region;
    uint64_t seed, checksum;
} job_t;

static void *worker(void *arg)
{
    job_t *j = arg;
    rng_t r = rng_make(j->seed);
    uint64_t ck = 0;
    for (uint64_t s = 0; s < STEPS_PER_THREAD; s++) {
        void **slot = &j->region[rng_below(&r, REGION)];
        ck = ck_mix(ck, blk_read(*slot));
        free(*slot);
        size_t n = rng_range(&r, 8, 512);
        *slot = xmalloc(n);
        blk_stamp(*slot, n, j->seed + s);
    }
    j->checksum = ck;
    return NULL;
}

int main(int argc, char **argv)
{
    double scale = bench_arg_double(argc, argv, 1, 1.0);
    long nthreads = bench_arg_long(argc, argv, 2, 4);
    if (nthreads < 1 || nthreads > MAX_THREADS)
        nthreads = 4;
    uint64_t rounds = bench_scaled(ROUNDS, scale);
    size_t total = (size_t)nthreads * REGION;
    void **slots = xmalloc(total * sizeof *slots);
    rng_t r = rng_make(13);
    uint64_t ck = 0;

    double t0 = bench_now();
    for (size_t i = 0; i < total; i++) {
        size_t n = rng_range(&r, 8, 512);
        slots[i] = xmalloc(n);
        blk_stamp(slots[i], n, i);
    }
    for (uint64_t round = 0; round < rounds; round++) {
        pthread_t tid[MAX_THREADS];
        job_t job[MAX_THREADS];
        for (long t = 0; t < nthreads; t++) {
            size_t region = (size_t)((uint64_t)t + round) % (size_t)nthreads;
            job[t] = (job_t){ .region = slots + region * REGION, .seed = (round << 20) + (uint64_t)t };
            if (pthread_create(&tid[t], NULL, worker, &job[t]) != 0) {
                perror("pthread_create");
                return 1;
            }
        }
        for (long t = 0; t < nthreads; t++) {
            pthread_join(tid[t], NULL);
            ck = ck_mix(ck, job[t].checksum);
        }
    }
    for (size_t i = 0; i < total; i++) {
        ck = ck_mix(ck, blk_read(slots[i]));
        free(slots[i]);
    }
    free(slots);
    bench_finish("larson", ck, bench_now() - t0);
    return 0;
}
