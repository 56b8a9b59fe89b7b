/* SPDX-License-Identifier: MIT
 * realloc: string builders and vectors grown by realloc from nothing (realloc(NULL, n)) by small
 * steps to 2..6 KB, across the 512-byte small/large boundary, then shrunk step by step and freed.
 * Strings realloc to the exact length at every step; vectors keep a capacity that grows by half and
 * halves when a quarter full. Many builders are live at once, so blocks rarely sit at the heap top.
 * usage: realloc [scale=1] */
#include "common.h"

#define NBUILDERS 64
#define STEPS 20000000ULL

typedef struct {
    unsigned char *buf;
    size_t len, cap, target;
    uint64_t tag;
    int growing, geometric;
} builder_t;

static void resize(builder_t *b, size_t cap)
{
    unsigned char *p = realloc(b->buf, cap);
    if (!p) {
        fprintf(stderr, "realloc: realloc(%zu) failed\n", cap);
        abort();
    }
    b->buf = p;
    b->cap = cap;
}

static void restart(builder_t *b, rng_t *r)
{
    b->buf = NULL;
    b->len = b->cap = 0;
    b->target = rng_range(r, 2048, 6144);
    b->tag++;
    b->growing = 1;
}

static void grow(builder_t *b, rng_t *r)
{
    size_t need = b->len + rng_range(r, 1, 24);
    if (!b->geometric)
        resize(b, need);
    else if (need > b->cap)
        resize(b, need > b->cap + b->cap / 2 ? need : b->cap + b->cap / 2);
    for (size_t i = b->len; i < need; i++)
        b->buf[i] = (unsigned char)(b->tag + i);
    b->len = need;
}

/* Returns nonzero when the builder is done (shrunk to almost nothing and freed). */
static int shrink(builder_t *b, rng_t *r)
{
    size_t cut = rng_range(r, 1, 64);
    if (cut + 8 >= b->len) {
        free(b->buf);
        return 1;
    }
    b->len -= cut;
    if (!b->geometric)
        resize(b, b->len);
    else if (b->len < b->cap / 4)
        resize(b, b->cap / 2);
    return 0;
}

int main(int argc, char **argv)
{
    double scale = bench_arg_double(argc, argv, 1, 1.0);
    uint64_t steps = bench_scaled(STEPS, scale);
    static builder_t bld[NBUILDERS];
    rng_t r = rng_make(5);
    uint64_t ck = 0;

    double t0 = bench_now();
    for (int k = 0; k < NBUILDERS; k++) {
        bld[k].geometric = k & 1;
        bld[k].tag = (uint64_t)k << 32;
        restart(&bld[k], &r);
    }
    for (uint64_t s = 0; s < steps; s++) {
        builder_t *b = &bld[rng_below(&r, NBUILDERS)];
        if (b->growing) {
            grow(b, &r);
            if (b->len >= b->target) {
                b->growing = 0;
                ck = ck_bytes(ck, b->buf, b->len);
            }
        } else if (shrink(b, &r)) {
            restart(b, &r);
        } else {
            ck = ck_mix(ck, b->buf[b->len - 1]);
        }
    }
    for (int k = 0; k < NBUILDERS; k++) {
        if (bld[k].len)
            ck = ck_bytes(ck, bld[k].buf, bld[k].len);
        free(bld[k].buf);
    }
    bench_finish("realloc", ck, bench_now() - t0);
    return 0;
}
