/* SPDX-License-Identifier: MIT
 * sweep: each size alone — every class 8..512 in steps of 8, then 520, 600, 1024 and 4096 (past
 * PA_SMALL_MAX, the passthrough). For each size, rounds of: malloc a batch, write it, free it in a
 * scrambled order. Per-size ns per malloc+free go to stderr; stdout has only the checksum.
 * The two parts can run alone: the big sizes cost far more per block (page faults, heap trimming)
 * and would drown the small classes in one total.
 * usage: sweep [scale=1] [all|small|large] */
#include "common.h"

#define BATCH 1024
#define ROUNDS_PER_SIZE 100

static uint64_t sweep_size(size_t size, uint64_t rounds, const uint32_t *order, void **blk)
{
    uint64_t ck = size;
    for (uint64_t k = 0; k < rounds; k++) {
        for (uint32_t i = 0; i < BATCH; i++) {
            blk[i] = xmalloc(size);
            blk_stamp(blk[i], size, k + i);
        }
        for (uint32_t i = 0; i < BATCH; i++) {
            void *p = blk[order[i]];
            ck = ck_mix(ck, blk_read(p));
            free(p);
        }
    }
    return ck;
}

int main(int argc, char **argv)
{
    static const size_t big[] = { 520, 600, 1024, 4096 };
    double scale = bench_arg_double(argc, argv, 1, 1.0);
    const char *part = argc > 2 ? argv[2] : "all";
    int small = strcmp(part, "large") != 0, large = strcmp(part, "small") != 0;
    uint64_t rounds = bench_scaled(ROUNDS_PER_SIZE, scale);
    static uint32_t order[BATCH];
    static void *blk[BATCH];
    rng_t r = rng_make(7);
    for (uint32_t i = 0; i < BATCH; i++)
        order[i] = i;
    rng_shuffle_u32(&r, order, BATCH);

    size_t sizes[64 + sizeof big / sizeof big[0]];
    size_t nsizes = 0;
    for (size_t s = 8; small && s <= 512; s += 8)
        sizes[nsizes++] = s;
    for (size_t i = 0; large && i < sizeof big / sizeof big[0]; i++)
        sizes[nsizes++] = big[i];

    uint64_t ck = 0;
    double t0 = bench_now();
    for (size_t i = 0; i < nsizes; i++) {
        double ts = bench_now();
        ck = ck_mix(ck, sweep_size(sizes[i], rounds, order, blk));
        double ns = (bench_now() - ts) * 1e9 / (double)(rounds * BATCH);
        fprintf(stderr, "sweep size=%zu ns_per_pair=%.1f\n", sizes[i], ns);
    }
    bench_finish("sweep", ck, bench_now() - t0);
    return 0;
}
