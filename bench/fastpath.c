/* SPDX-License-Identifier: MIT
 * fastpath: the malloc+free fast path, for timing and for callgrind's instruction counts. Keeps
 * 256 blocks of mixed sizes 8..512 live; each iteration frees one slot, chosen in a scrambled
 * order, and mallocs a new block for it. Sizes and slots come from a precomputed table, so the
 * loop itself costs a handful of instructions. Prints `pairs=N` and the checksum.
 * usage: fastpath [pairs=10000000] */
#include "common.h"

#define LIVE 256
#define TABLE 4096

static uint16_t size_tab[TABLE];
static uint8_t slot_tab[TABLE];

/* The measured loop: one free and one malloc per iteration. Kept out of line and under a fixed
 * name so that callgrind's per-function split can find it. */
__attribute__((noinline, noclone)) uint64_t fastpath_pairs(void **slot, uint64_t n)
{
    uint64_t sum = 0;
    for (uint64_t i = 0; i < n; i++) {
        size_t k = i & (TABLE - 1);
        void **s = &slot[slot_tab[k]];
        sum += *(unsigned char *)*s;
        free(*s);
        unsigned char *p = malloc(size_tab[k]);
        *p = (unsigned char)i;
        *s = p;
    }
    return sum;
}

int main(int argc, char **argv)
{
    long pairs = bench_arg_long(argc, argv, 1, 10000000);
    if (pairs < 0)
        pairs = 0;
    static void *slot[LIVE];
    rng_t r = rng_make(23);
    for (int k = 0; k < TABLE; k++) {
        size_tab[k] = (uint16_t)rng_range(&r, 8, 512);
        slot_tab[k] = (uint8_t)rng_below(&r, LIVE);
    }
    for (int k = 0; k < LIVE; k++) {
        slot[k] = xmalloc(rng_range(&r, 8, 512));
        *(unsigned char *)slot[k] = (unsigned char)k;
    }

    double t0 = bench_now();
    uint64_t sum = fastpath_pairs(slot, (uint64_t)pairs);
    double secs = bench_now() - t0;
    for (int k = 0; k < LIVE; k++) {
        sum += *(unsigned char *)slot[k];
        free(slot[k]);
    }
    if (pairs > 0)
        fprintf(stderr, "fastpath: %.2f ns per malloc+free pair\n", secs * 1e9 / (double)pairs);
    printf("pairs=%ld\n", pairs);
    bench_finish("fastpath", ck_mix(sum, (uint64_t)pairs), secs);
    return 0;
}
