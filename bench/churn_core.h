/* SPDX-License-Identifier: MIT
 * bench/churn_core.h: the churn loop shared by churn (one thread) and threads (N at once).
 * A table of `live` blocks of lo..hi bytes; each step frees a random slot and puts a block of a
 * random size there. Everything it touches is its own, so threads running it never share blocks. */
#ifndef BENCH_CHURN_CORE_H
#define BENCH_CHURN_CORE_H

#include "common.h"

static uint64_t churn_run(uint64_t seed, size_t live, uint64_t steps, size_t lo, size_t hi)
{
    rng_t r = rng_make(seed);
    void **slot = xmalloc(live * sizeof *slot);
    uint64_t ck = seed;

    for (size_t i = 0; i < live; i++) {
        size_t n = rng_range(&r, lo, hi);
        slot[i] = xmalloc(n);
        blk_stamp(slot[i], n, i);
    }
    for (uint64_t s = 0; s < steps; s++) {
        uint32_t j = rng_below(&r, (uint32_t)live);
        ck = ck_mix(ck, blk_read(slot[j]));
        free(slot[j]);
        size_t n = rng_range(&r, lo, hi);
        slot[j] = xmalloc(n);
        blk_stamp(slot[j], n, s);
    }
    for (size_t i = 0; i < live; i++) {
        ck = ck_mix(ck, blk_read(slot[i]));
        free(slot[i]);
    }
    free(slot);
    return ck;
}

#endif /* BENCH_CHURN_CORE_H */
