/* SPDX-License-Identifier: MIT
 * idle: memory given back while the program is idle. A spike of blocks is allocated and written by
 * T threads, freed in a scrambled order, and then the program makes no allocator call for 1.5 s:
 * an allocator that gives memory back only when it is called again gives nothing back here.
 *   small: 2 million blocks of 16..496 bytes (all of them freed)
 *   large: 200 000 blocks of 600..8000 bytes (glibc's side under pyalloc), freed with 1 in 16 kept,
 *          so that the free memory is scattered between live blocks
 * The threads stay alive, blocked, until the end: a thread that exits runs its allocator's exit
 * hook, which is an allocator call. RSS is read from /proc/self/statm with read(2), never with
 * stdio (whose buffers are allocated). Prints rss_start_kb, rss_peak_kb (after the spike),
 * rss_after_free_kb, rss_idle_kb (1.5 s later) and timed_s (the spike and the free, without the
 * idle time). usage: idle small|large [threads=1] [scale=1] */
#include "common.h"

#include <fcntl.h>
#include <pthread.h>

#define IDLE_NS 1500000000L

static long rss_kb(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    long total = 0, res = 0;
    if (sscanf(buf, "%ld %ld", &total, &res) != 2) /* sscanf on a string does not allocate */
        return 0;
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

typedef struct {
    pthread_t tid;
    int large;
    size_t count;
    uint64_t seed;
    uint64_t ck;
    void **blk;
    uint32_t *order;
} worker;

static pthread_barrier_t spiked, freed, done;

static void spike(worker *w)
{
    rng_t r = rng_make(w->seed);
    for (size_t i = 0; i < w->count; i++) {
        size_t n = w->large ? rng_range(&r, 600, 8000) : rng_range(&r, 16, 496);
        w->blk[i] = xmalloc(n);
        blk_stamp(w->blk[i], n, i);
    }
    for (size_t i = 0; i < w->count; i++)
        w->order[i] = (uint32_t)i;
    rng_shuffle_u32(&r, w->order, w->count);
}

static void free_all(worker *w)
{
    for (size_t i = 0; i < w->count; i++) {
        uint32_t k = w->order[i];
        w->ck = ck_mix(w->ck, blk_read(w->blk[k]));
        if (w->large && k % 16 == 0)
            continue; /* kept */
        free(w->blk[k]);
        w->blk[k] = NULL;
    }
}

static void *work(void *arg)
{
    worker *w = arg;
    spike(w);
    pthread_barrier_wait(&spiked);
    pthread_barrier_wait(&spiked); /* main has read the peak */
    free_all(w);
    pthread_barrier_wait(&freed);
    pthread_barrier_wait(&done); /* idle, blocked, until main has measured */
    return NULL;
}

int main(int argc, char **argv)
{
    int large = argc > 1 && strcmp(argv[1], "large") == 0;
    long threads = bench_arg_long(argc, argv, 2, 1);
    double scale = bench_arg_double(argc, argv, 3, 1.0);
    if (threads < 1)
        threads = 1;
    size_t total = (size_t)bench_scaled(large ? 200000 : 2000000, scale);
    size_t each = total / (size_t)threads;
    worker *ws = xmalloc((size_t)threads * sizeof *ws);
    for (long t = 0; t < threads; t++) {
        ws[t] = (worker){.large = large, .count = each, .seed = 101 + (uint64_t)t};
        ws[t].blk = xmalloc(each * sizeof(void *));
        ws[t].order = xmalloc(each * sizeof(uint32_t));
    }
    long rss_start = rss_kb(), rss_peak, rss_after;
    double t0 = bench_now(), secs;
    if (threads == 1) { /* the main thread alone: a single-threaded program */
        spike(&ws[0]);
        rss_peak = rss_kb();
        free_all(&ws[0]);
        secs = bench_now() - t0;
        rss_after = rss_kb();
    } else {
        pthread_barrier_init(&spiked, NULL, (unsigned)threads + 1);
        pthread_barrier_init(&freed, NULL, (unsigned)threads + 1);
        pthread_barrier_init(&done, NULL, (unsigned)threads + 1);
        for (long t = 0; t < threads; t++)
            pthread_create(&ws[t].tid, NULL, work, &ws[t]);
        pthread_barrier_wait(&spiked);
        rss_peak = rss_kb();
        pthread_barrier_wait(&spiked);
        pthread_barrier_wait(&freed);
        secs = bench_now() - t0;
        rss_after = rss_kb();
    }
    struct timespec nap = {IDLE_NS / 1000000000L, IDLE_NS % 1000000000L};
    while (nanosleep(&nap, &nap) != 0) {
    }
    long rss_idle = rss_kb();
    uint64_t ck = 0;
    if (threads == 1) {
        ck = ws[0].ck;
    } else {
        pthread_barrier_wait(&done);
        for (long t = 0; t < threads; t++) {
            pthread_join(ws[t].tid, NULL);
            ck = ck_mix(ck, ws[t].ck);
        }
    }
    printf("rss_start_kb=%ld rss_peak_kb=%ld rss_after_free_kb=%ld rss_idle_kb=%ld timed_s=%.6f\n",
           rss_start, rss_peak, rss_after, rss_idle, secs);
    bench_finish(large ? "idle large" : "idle small", ck, secs);
    return 0;
}
