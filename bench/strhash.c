/* SPDX-License-Identifier: MIT
 * strhash: a chained hash table of short strings. Each insert mallocs a copy of its key (8..64
 * bytes with the NUL, like strdup) and a 24-byte entry; the table grows to N keys and shrinks to
 * N/8 again, rehashing both ways, with a lookup of a random live key beside every change.
 * usage: strhash [scale=1] */
#include "common.h"

#define KEYS 100000
#define CYCLES 6

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    char *key;
} entry_t;

typedef struct {
    entry_t **bucket;
    size_t nbuckets, count;
} table_t;

/* The key of id: 7..63 letters, always the same for the same id. */
static size_t make_key(uint64_t id, char *buf)
{
    rng_t r = rng_make(id);
    size_t n = rng_range(&r, 7, 63);
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)('a' + rng_below(&r, 26));
    buf[n] = '\0';
    return n;
}

static uint64_t hash_str(const char *s, size_t n)
{
    return ck_bytes(0xCBF29CE484222325ULL, s, n);
}

static void table_resize(table_t *t, size_t nbuckets)
{
    entry_t **b = calloc(nbuckets, sizeof *b);
    if (!b) {
        fprintf(stderr, "strhash: calloc failed\n");
        abort();
    }
    for (size_t i = 0; i < t->nbuckets; i++) {
        entry_t *e = t->bucket[i];
        while (e) {
            entry_t *next = e->next;
            size_t k = e->hash & (nbuckets - 1);
            e->next = b[k];
            b[k] = e;
            e = next;
        }
    }
    free(t->bucket);
    t->bucket = b;
    t->nbuckets = nbuckets;
}

static entry_t **table_find(table_t *t, const char *key, uint64_t hash)
{
    entry_t **link = &t->bucket[hash & (t->nbuckets - 1)];
    while (*link && ((*link)->hash != hash || strcmp((*link)->key, key) != 0))
        link = &(*link)->next;
    return link;
}

static void table_insert(table_t *t, uint64_t id)
{
    char buf[64];
    size_t n = make_key(id, buf);
    entry_t *e = xmalloc(sizeof *e);
    e->hash = hash_str(buf, n);
    e->key = xmalloc(n + 1);
    memcpy(e->key, buf, n + 1);
    entry_t **link = &t->bucket[e->hash & (t->nbuckets - 1)];
    e->next = *link;
    *link = e;
    if (++t->count > t->nbuckets)
        table_resize(t, t->nbuckets * 2);
}

static void table_remove(table_t *t, uint64_t id)
{
    char buf[64];
    size_t n = make_key(id, buf);
    entry_t **link = table_find(t, buf, hash_str(buf, n));
    entry_t *e = *link;
    if (!e)
        return;
    *link = e->next;
    free(e->key);
    free(e);
    if (--t->count < t->nbuckets / 4 && t->nbuckets > 16)
        table_resize(t, t->nbuckets / 2);
}

/* Looks up the key of id: its hash and length if present, 0 if not. */
static uint64_t table_lookup(table_t *t, uint64_t id)
{
    char buf[64];
    size_t n = make_key(id, buf);
    entry_t *e = *table_find(t, buf, hash_str(buf, n));
    return e ? e->hash + strlen(e->key) : 0;
}

int main(int argc, char **argv)
{
    double scale = bench_arg_double(argc, argv, 1, 1.0);
    uint64_t cycles = bench_scaled(CYCLES, scale);
    uint64_t *live = xmalloc((KEYS + KEYS / 8 + 1) * sizeof *live);
    size_t nlive = 0;
    uint64_t next_id = 1, ck = 0;
    table_t t = { 0 };
    rng_t r = rng_make(11);
    table_resize(&t, 16);

    double t0 = bench_now();
    for (uint64_t c = 0; c < cycles; c++) {
        while (nlive < KEYS + KEYS / 8) {
            table_insert(&t, next_id);
            live[nlive++] = next_id++;
            ck = ck_mix(ck, table_lookup(&t, live[rng_below(&r, (uint32_t)nlive)]));
        }
        while (nlive > KEYS / 8) {
            size_t k = rng_below(&r, (uint32_t)nlive);
            table_remove(&t, live[k]);
            live[k] = live[--nlive];
            ck = ck_mix(ck, table_lookup(&t, live[rng_below(&r, (uint32_t)nlive)]));
        }
        ck = ck_mix(ck, t.count + t.nbuckets);
    }
    while (nlive > 0)
        table_remove(&t, live[--nlive]);
    free(t.bucket);
    free(live);
    bench_finish("strhash", ck, bench_now() - t0);
    return 0;
}
