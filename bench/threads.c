/* SPDX-License-Identifier: MIT
 * threads: N threads each churning their own table of blocks (8..512 bytes), no sharing; the
 * total number of steps is fixed and split among the threads.
 * usage: threads [nthreads=2] [scale=1] */
#include "common.h"
#include "churn_core.h"
#include <pthread.h>

#define THREADS_STEPS 24000000ULL
#define THREADS_LIVE 20000

typedef struct {
    uint64_t seed, steps, checksum;
} job_t;

static void *worker(void *arg)
{
    job_t *j = arg;
    j->checksum = churn_run(j->seed, THREADS_LIVE, j->steps, 8, 512);
    return NULL;
}

int main(int argc, char **argv)
{
    long n = bench_arg_long(argc, argv, 1, 2);
    double scale = bench_arg_double(argc, argv, 2, 1.0);
    if (n < 1 || n > 256)
        n = 2;
    uint64_t steps = bench_scaled(THREADS_STEPS, scale) / (uint64_t)n;
    pthread_t tid[256];
    job_t job[256];

    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        job[i] = (job_t){ .seed = 1000 + (uint64_t)i, .steps = steps };
        if (pthread_create(&tid[i], NULL, worker, &job[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    uint64_t ck = 0;
    for (long i = 0; i < n; i++) {
        pthread_join(tid[i], NULL);
        ck = ck_mix(ck, job[i].checksum);
    }
    bench_finish("threads", ck, bench_now() - t0);
    return 0;
}
