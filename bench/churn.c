/* SPDX-License-Identifier: MIT
 * churn: one thread, mixed sizes 8..512, a table of `live` blocks (a few hundred fit in cache, a
 * million do not); each step frees a random slot and mallocs a block of a new random size there.
 * usage: churn [scale=1] [live=100000] */
#include "common.h"
#include "churn_core.h"

#define CHURN_STEPS 10000000ULL

int main(int argc, char **argv)
{
    double scale = bench_arg_double(argc, argv, 1, 1.0);
    long live = bench_arg_long(argc, argv, 2, 100000);
    if (live < 1)
        live = 1;
    double t0 = bench_now();
    uint64_t ck = churn_run(42, (size_t)live, bench_scaled(CHURN_STEPS, scale), 8, 512);
    bench_finish("churn", ck, bench_now() - t0);
    return 0;
}
