/* SPDX-License-Identifier: MIT
 * lists: many singly linked lists of small random-size nodes (16..128 bytes) grown side by side,
 * so a list's nodes are scattered; then traversed, half of the lists freed and rebuilt, all
 * traversed again and freed. usage: lists [scale=1] */
#include "common.h"

#define NLISTS 64
#define NODES 200000
#define CYCLES 10

typedef struct lnode {
    struct lnode *next;
    uint32_t len;
    unsigned char data[];
} lnode_t;

typedef struct {
    lnode_t *head, *tail;
} list_t;

static void append(list_t *l, rng_t *r, uint64_t tag)
{
    size_t size = rng_range(r, 16, 128);
    lnode_t *n = xmalloc(size);
    n->next = NULL;
    n->len = (uint32_t)(size - sizeof *n);
    for (uint32_t i = 0; i < n->len; i += 8)
        n->data[i] = (unsigned char)(tag + i);
    if (l->tail)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
}

static uint64_t traverse(const list_t *l)
{
    uint64_t h = 0;
    for (const lnode_t *n = l->head; n; n = n->next) {
        uint64_t s = n->len;
        for (uint32_t i = 0; i < n->len; i += 8)
            s += n->data[i];
        h = ck_mix(h, s);
    }
    return h;
}

static void free_list(list_t *l)
{
    lnode_t *n = l->head;
    while (n) {
        lnode_t *next = n->next;
        free(n);
        n = next;
    }
    l->head = l->tail = NULL;
}

/* Appends `count` nodes, each to a random list among those selected by `mask` (bit 0: even
 * lists, bit 1: odd lists). */
static void grow(list_t *lists, rng_t *r, uint64_t count, unsigned mask)
{
    for (uint64_t i = 0; i < count; i++) {
        uint32_t k = rng_below(r, NLISTS);
        if (!(mask & (1u << (k & 1))))
            k ^= 1;
        append(&lists[k], r, i);
    }
}

int main(int argc, char **argv)
{
    double scale = bench_arg_double(argc, argv, 1, 1.0);
    uint64_t cycles = bench_scaled(CYCLES, scale);
    static list_t lists[NLISTS];
    rng_t r = rng_make(3);
    uint64_t ck = 0;

    double t0 = bench_now();
    for (uint64_t c = 0; c < cycles; c++) {
        grow(lists, &r, NODES, 3);
        for (int k = 0; k < NLISTS; k++)
            ck = ck_mix(ck, traverse(&lists[k]));
        for (int k = 0; k < NLISTS; k += 2)
            free_list(&lists[k]);
        grow(lists, &r, NODES / 2, 1);
        for (int k = 0; k < NLISTS; k++) {
            ck = ck_mix(ck, traverse(&lists[k]));
            free_list(&lists[k]);
        }
    }
    bench_finish("lists", ck, bench_now() - t0);
    return 0;
}
