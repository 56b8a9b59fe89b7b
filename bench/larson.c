/* SPDX-License-Identifier: MIT
 * larson: a server-like workload in the spirit of Larson and Krishnan's benchmark. A shared array
 * of blocks (min..max bytes, 8..512 unless told) is cut into one region per thread, filled by the
 * main thread; threads then replace random slots of a region (read the old block, free it, malloc
 * a new one), and threads are replaced all the time, so most frees are of blocks that a thread
 * which has exited allocated. Two ways to replace them:
 *   rounds  every round a fresh set of threads starts, each on a region other (now exited) threads
 *           filled; regions rotate between rounds and each round ends with a join (the default);
 *   chain   as the original benchmark: each region has its own chain of threads; when a thread has
 *           done its steps it starts its successor on the same region and exits, with no barrier,
 *           so one region's thread exit and start overlap the other regions' work.
 * The size range picks what it measures: 8..512 stays in pyalloc's pools, 513..1000 passes through
 * to glibc, 8..1000 mixes the two (a server whose requests allocate both).
 * usage: larson [scale=1] [threads=4] [min=8] [max=512] [rounds|chain] */
#include "common.h"
#include <pthread.h>

#define MAX_THREADS 64
/* rounds mode: blocks per region, rounds, steps per thread */
#define ROUNDS_REGION 10000
#define ROUNDS 24
#define ROUNDS_STEPS 100000
/* chain mode (Larson's own figures: 5000 blocks per thread, 100 passes over them per thread):
 * blocks per region, threads in each region's chain, steps per thread */
#define CHAIN_REGION 5000
#define CHAIN_THREADS 16
#define CHAIN_STEPS 500000

static size_t size_min = 8, size_max = 512;

typedef struct job {
    void **region;
    size_t nslots;
    uint64_t steps;
    rng_t rng;      /* chain mode: handed from each thread to its successor */
    uint64_t seed;  /* stamps: distinct for every thread */
    uint64_t checksum;
    uint32_t left;  /* chain mode: threads still to start after this one */
    pthread_t next; /* chain mode: the successor, for main to join */
} job_t;

static void run_steps(job_t *j)
{
    uint64_t ck = j->checksum;
    for (uint64_t s = 0; s < j->steps; s++) {
        void **slot = &j->region[rng_below(&j->rng, (uint32_t)j->nslots)];
        ck = ck_mix(ck, blk_read(*slot));
        free(*slot);
        size_t n = rng_range(&j->rng, size_min, size_max);
        *slot = xmalloc(n);
        blk_stamp(*slot, n, j->seed + s);
    }
    j->checksum = ck;
}

static void *rounds_worker(void *arg)
{
    run_steps(arg);
    return NULL;
}

static void *chain_worker(void *arg)
{
    job_t *j = arg;
    run_steps(j);
    if (j->left > 0) {
        j->left--;
        j->seed += j->steps;
        if (pthread_create(&j->next, NULL, chain_worker, j) != 0) {
            perror("pthread_create");
            abort();
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    double scale = bench_arg_double(argc, argv, 1, 1.0);
    long nthreads = bench_arg_long(argc, argv, 2, 4);
    if (nthreads < 1 || nthreads > MAX_THREADS)
        nthreads = 4;
    size_min = (size_t)bench_arg_long(argc, argv, 3, 8);
    size_max = (size_t)bench_arg_long(argc, argv, 4, 512);
    if (size_min < 8 || size_max < size_min || size_max > 65535) {
        fprintf(stderr, "larson: sizes must satisfy 8 <= min <= max <= 65535\n");
        return 2;
    }
    const char *mode = argc > 5 ? argv[5] : "rounds";
    int chain = strcmp(mode, "chain") == 0;
    if (!chain && strcmp(mode, "rounds") != 0) {
        fprintf(stderr, "larson: mode must be rounds or chain\n");
        return 2;
    }
    size_t region = chain ? CHAIN_REGION : ROUNDS_REGION;
    size_t total = (size_t)nthreads * region;
    void **slots = xmalloc(total * sizeof *slots);
    rng_t r = rng_make(13);
    uint64_t ck = 0;
    pthread_t tid[MAX_THREADS];
    job_t job[MAX_THREADS];

    double t0 = bench_now();
    for (size_t i = 0; i < total; i++) {
        size_t n = rng_range(&r, size_min, size_max);
        slots[i] = xmalloc(n);
        blk_stamp(slots[i], n, i);
    }
    if (chain) {
        uint64_t chain_len = bench_scaled(CHAIN_THREADS, scale);
        for (long t = 0; t < nthreads; t++) {
            job[t] = (job_t){ .region = slots + (size_t)t * region, .nslots = region, .steps = CHAIN_STEPS,
                              .rng = rng_make(1000 + (uint64_t)t), .seed = (uint64_t)t << 40,
                              .left = (uint32_t)(chain_len - 1) };
            if (pthread_create(&tid[t], NULL, chain_worker, &job[t]) != 0) {
                perror("pthread_create");
                return 1;
            }
        }
        /* Each thread writes its successor's id before it exits: join along the chain. */
        for (long t = 0; t < nthreads; t++) {
            for (uint64_t g = 0; g < chain_len; g++) {
                pthread_join(tid[t], NULL);
                tid[t] = job[t].next;
            }
            ck = ck_mix(ck, job[t].checksum);
        }
    } else {
        uint64_t rounds = bench_scaled(ROUNDS, scale);
        for (uint64_t round = 0; round < rounds; round++) {
            for (long t = 0; t < nthreads; t++) {
                size_t reg = (size_t)((uint64_t)t + round) % (size_t)nthreads;
                uint64_t seed = (round << 20) + (uint64_t)t;
                job[t] = (job_t){ .region = slots + reg * region, .nslots = region, .steps = ROUNDS_STEPS,
                                  .rng = rng_make(seed), .seed = seed };
                if (pthread_create(&tid[t], NULL, rounds_worker, &job[t]) != 0) {
                    perror("pthread_create");
                    return 1;
                }
            }
            for (long t = 0; t < nthreads; t++) {
                pthread_join(tid[t], NULL);
                ck = ck_mix(ck, job[t].checksum);
            }
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
