/* SPDX-License-Identifier: MIT
 * bench/common.h: what every pyalloc benchmark shares.
 *
 * A benchmark is a plain C11 program linked against libc and pthread only; allocators are swapped
 * with LD_PRELOAD. Each one is deterministic (the PRNG below, fixed seeds), takes its size from
 * argv, prints timing notes to stderr and exactly one `checksum=<hex>` line to stdout, computed
 * from data it wrote into its blocks and read back, so an allocator that hands out overlapping or
 * corrupted blocks changes the checksum instead of looking fast. Include this header first. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BENCH_NOINLINE __attribute__((noinline))

/* ---- PRNG: xorshift64*, seeded through splitmix64 so that small seeds are fine ---- */

typedef struct { uint64_t s; } rng_t;

static inline rng_t rng_make(uint64_t seed)
{
    uint64_t z = seed + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    rng_t r = { z ? z : 1 };
    return r;
}

static inline uint64_t rng_next(rng_t *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, n), n < 2^32. */
static inline uint32_t rng_below(rng_t *r, uint32_t n)
{
    return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* Uniform in [lo, hi]. */
static inline size_t rng_range(rng_t *r, size_t lo, size_t hi)
{
    return lo + rng_below(r, (uint32_t)(hi - lo + 1));
}

static inline void rng_shuffle_u32(rng_t *r, uint32_t *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = rng_below(r, (uint32_t)i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

/* ---- checksum ---- */

static inline uint64_t ck_mix(uint64_t h, uint64_t v)
{
    h = (h ^ v) * 0x100000001B3ULL;
    return h ^ (h >> 29);
}

static inline uint64_t ck_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001B3ULL;
    return h;
}

/* A fresh block of n >= 8 bytes gets a few bytes written: a word at its start (tag and size, so
 * the block can be read back without knowing its size) and one byte at its end. */
static inline void blk_stamp(void *p, size_t n, uint64_t tag)
{
    uint64_t w = (tag << 16) | (uint64_t)(n & 0xFFFF);
    memcpy(p, &w, sizeof w);
    ((unsigned char *)p)[n - 1] = (unsigned char)(tag * 31 + 7);
}

/* Reads back what blk_stamp wrote: a value to mix into the checksum. */
static inline uint64_t blk_read(const void *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof w);
    size_t n = (size_t)(w & 0xFFFF);
    if (n < 8)
        n = 8;
    return w ^ ((uint64_t)((const unsigned char *)p)[n - 1] << 56);
}

/* ---- allocation that cannot silently fail ---- */

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "bench: malloc(%zu) failed\n", n);
        abort();
    }
    return p;
}

/* ---- time, memory, arguments, output ---- */

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Current resident set size in KiB, from /proc/self/statm (0 if unreadable). */
static inline long bench_rss_kb(void)
{
    long pages_total = 0, pages_res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    if (fscanf(f, "%ld %ld", &pages_total, &pages_res) != 2)
        pages_res = 0;
    fclose(f);
    return pages_res * (sysconf(_SC_PAGESIZE) / 1024);
}

static inline double bench_arg_double(int argc, char **argv, int i, double dflt)
{
    return (i < argc && argv[i][0]) ? strtod(argv[i], NULL) : dflt;
}

static inline long bench_arg_long(int argc, char **argv, int i, long dflt)
{
    return (i < argc && argv[i][0]) ? strtol(argv[i], NULL, 10) : dflt;
}

/* A count at full scale times the scale factor, at least 1. */
static inline uint64_t bench_scaled(uint64_t full, double scale)
{
    double v = (double)full * scale;
    return v < 1.0 ? 1 : (uint64_t)v;
}

static inline void bench_finish(const char *name, uint64_t checksum, double seconds)
{
    fprintf(stderr, "%s: %.3f s\n", name, seconds);
    printf("checksum=%016llx\n", (unsigned long long)checksum);
    fflush(stdout);
}

#endif /* BENCH_COMMON_H */
