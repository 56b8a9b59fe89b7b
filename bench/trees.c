/* SPDX-License-Identifier: MIT
 * trees: binary trees built and torn down, after the benchmarks game's binarytrees: a stretch
 * tree of depth max+1, a long-lived tree of depth max, and for each depth 4, 6, ..., max as many
 * short-lived trees as keep the node count the same. Nodes are 24-byte blocks.
 * usage: trees [depth=18] */
#include "common.h"

typedef struct node {
    struct node *left, *right;
    uint64_t value;
} node_t;

static node_t *build(int depth, uint64_t value)
{
    node_t *n = xmalloc(sizeof *n);
    n->value = value;
    if (depth > 0) {
        n->left = build(depth - 1, 2 * value);
        n->right = build(depth - 1, 2 * value + 1);
    } else {
        n->left = n->right = NULL;
    }
    return n;
}

/* Node count in the low bits, values folded into the high bits. */
static uint64_t check(const node_t *n)
{
    uint64_t c = 1 + (n->value << 32);
    if (n->left)
        c += check(n->left) + check(n->right);
    return c;
}

static void destroy(node_t *n)
{
    if (n->left) {
        destroy(n->left);
        destroy(n->right);
    }
    free(n);
}

static uint64_t build_check_destroy(int depth, uint64_t value)
{
    node_t *t = build(depth, value);
    uint64_t c = check(t);
    destroy(t);
    return c;
}

int main(int argc, char **argv)
{
    int max_depth = (int)bench_arg_long(argc, argv, 1, 18);
    if (max_depth < 6)
        max_depth = 6;
    double t0 = bench_now();

    uint64_t ck = ck_mix(0, build_check_destroy(max_depth + 1, 1));
    node_t *long_lived = build(max_depth, 3);
    for (int d = 4; d <= max_depth; d += 2) {
        uint64_t iterations = 1ULL << (max_depth - d + 4);
        uint64_t sum = 0;
        for (uint64_t i = 0; i < iterations; i++)
            sum += build_check_destroy(d, i);
        ck = ck_mix(ck, sum);
    }
    ck = ck_mix(ck, check(long_lived));
    destroy(long_lived);
    bench_finish("trees", ck, bench_now() - t0);
    return 0;
}
