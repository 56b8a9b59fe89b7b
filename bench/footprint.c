/* SPDX-License-Identifier: MIT
 * footprint: memory given back. Allocates a large set of small blocks (16..256 bytes), frees them
 * all in a scrambled order, and reports the resident set size before, at the peak and after, from
 * /proc/self/statm, on stdout as `rss_start_kb=... rss_peak_kb=... rss_after_free_kb=...`; then, as a
 * program that goes on running would, it idles for two seconds and allocates and frees a few thousand
 * small blocks, and reports `rss_idle_kb=` (allocators that give memory back after a delay, as
 * pyalloc and jemalloc do, have done so by then). The time of the work without the idle seconds is
 * `timed_s=`, which the runner reports instead of the process's wall time.
 * usage: footprint [scale=1] (scale 1 = 2 million blocks) */
#include "common.h"

#define BLOCKS 2000000ULL

int main(int argc, char **argv)
{
    double scale = bench_arg_double(argc, argv, 1, 1.0);
    size_t count = (size_t)bench_scaled(BLOCKS, scale);
    void **blk = xmalloc(count * sizeof *blk);
    uint32_t *order = xmalloc(count * sizeof *order);
    rng_t r = rng_make(17);
    uint64_t ck = 0;
    for (size_t i = 0; i < count; i++)
        order[i] = (uint32_t)i;
    rng_shuffle_u32(&r, order, count);
    memset(blk, 0, count * sizeof *blk);

    long rss_start = bench_rss_kb();
    double t0 = bench_now();
    for (size_t i = 0; i < count; i++) {
        size_t n = rng_range(&r, 16, 256);
        blk[i] = xmalloc(n);
        blk_stamp(blk[i], n, i);
    }
    long rss_peak = bench_rss_kb();
    for (size_t i = 0; i < count; i++) {
        void *p = blk[order[i]];
        ck = ck_mix(ck, blk_read(p));
        free(p);
    }
    long rss_after = bench_rss_kb();
    double secs = bench_now() - t0;

    struct timespec nap = {2, 0};
    nanosleep(&nap, NULL);
    enum { LATER = 8192 };
    for (size_t i = 0; i < LATER; i++) {
        blk[i % 1024] = xmalloc(16 + i % 241);
        if (i % 1024 == 1023)
            for (size_t k = 0; k < 1024; k++)
                free(blk[k]);
    }
    long rss_idle = bench_rss_kb();
    free(order);
    free(blk);
    printf("rss_start_kb=%ld rss_peak_kb=%ld rss_after_free_kb=%ld rss_idle_kb=%ld timed_s=%.6f\n",
           rss_start, rss_peak, rss_after, rss_idle, secs);
    bench_finish("footprint", ck, secs);
    return 0;
}
