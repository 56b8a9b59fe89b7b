/* SPDX-License-Identifier: MIT
 * A C program for the preload test of gcc: compiled by gcc under LD_PRELOAD=libpyalloc.so and by gcc
 * on glibc, the two objects must be identical and the programs must print the same. It gives the
 * compiler some work (macro-generated functions, a switch, inlining, structs, recursion, loops to
 * vectorise) and prints a deterministic report. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- 64 small functions from one X-macro, called through a table -------------------------------- */
#define OPS(X)                                                                                     \
    X(0, +, 3) X(1, ^, 5) X(2, *, 7) X(3, -, 11) X(4, +, 13) X(5, ^, 17) X(6, *, 19) X(7, -, 23)   \
    X(8, +, 29) X(9, ^, 31) X(10, *, 37) X(11, -, 41) X(12, +, 43) X(13, ^, 47) X(14, *, 53)       \
    X(15, -, 59) X(16, +, 61) X(17, ^, 67) X(18, *, 71) X(19, -, 73) X(20, +, 79) X(21, ^, 83)     \
    X(22, *, 89) X(23, -, 97) X(24, +, 101) X(25, ^, 103) X(26, *, 107) X(27, -, 109)              \
    X(28, +, 113) X(29, ^, 127) X(30, *, 131) X(31, -, 137) X(32, +, 139) X(33, ^, 149)            \
    X(34, *, 151) X(35, -, 157) X(36, +, 163) X(37, ^, 167) X(38, *, 173) X(39, -, 179)            \
    X(40, +, 181) X(41, ^, 191) X(42, *, 193) X(43, -, 197) X(44, +, 199) X(45, ^, 211)            \
    X(46, *, 223) X(47, -, 227) X(48, +, 229) X(49, ^, 233) X(50, *, 239) X(51, -, 241)            \
    X(52, +, 251) X(53, ^, 257) X(54, *, 263) X(55, -, 269) X(56, +, 271) X(57, ^, 277)            \
    X(58, *, 281) X(59, -, 283) X(60, +, 293) X(61, ^, 307) X(62, *, 311) X(63, -, 313)

#define DEFINE_OP(n, op, k)                                                                        \
    static uint64_t op_##n(uint64_t x)                                                             \
    {                                                                                              \
        for (int i = 0; i < (n % 5) + 1; i++)                                                      \
            x = (x op (uint64_t)k) * 0x9E3779B97F4A7C15ULL + (x >> 29);                            \
        return x;                                                                                  \
    }
OPS(DEFINE_OP)

#define TABLE_ENTRY(n, op, k) op_##n,
static uint64_t (*const ops[64])(uint64_t) = {OPS(TABLE_ENTRY)};

#define CASE(n, op, k)                                                                             \
    case n:                                                                                        \
        return op_##n(x ^ (uint64_t)(n * k));
static uint64_t dispatch(unsigned which, uint64_t x)
{
    switch (which % 64) {
        OPS(CASE)
    }
    return x;
}

/* ---- a tiny expression evaluator: recursion and a parser ------------------------------------------ */
struct parser {
    const char *s;
};

static long expr(struct parser *p);

static long atom(struct parser *p)
{
    while (*p->s == ' ')
        p->s++;
    if (*p->s == '(') {
        p->s++;
        long v = expr(p);
        if (*p->s == ')')
            p->s++;
        return v;
    }
    if (*p->s == '-') {
        p->s++;
        return -atom(p);
    }
    long v = 0;
    while (*p->s >= '0' && *p->s <= '9')
        v = v * 10 + (*p->s++ - '0');
    return v;
}

static long term(struct parser *p)
{
    long v = atom(p);
    for (;;) {
        while (*p->s == ' ')
            p->s++;
        char c = *p->s;
        if (c != '*' && c != '/' && c != '%')
            return v;
        p->s++;
        long r = atom(p);
        if (c == '*')
            v *= r;
        else if (r != 0)
            v = c == '/' ? v / r : v % r;
    }
}

static long expr(struct parser *p)
{
    long v = term(p);
    for (;;) {
        while (*p->s == ' ')
            p->s++;
        char c = *p->s;
        if (c != '+' && c != '-')
            return v;
        p->s++;
        long r = term(p);
        v = c == '+' ? v + r : v - r;
    }
}

/* ---- a hash table of strings, sorted output --------------------------------------------------------- */
struct entry {
    char *key;
    long count;
    struct entry *next;
};

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

static int by_count(const void *a, const void *b)
{
    const struct entry *x = *(const struct entry *const *)a, *y = *(const struct entry *const *)b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return strcmp(x->key, y->key);
}

/* ---- loops for the vectoriser ---------------------------------------------------------------------- */
static double dot(const double *a, const double *b, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

int main(void)
{
    uint64_t x = 1;
    for (unsigned i = 0; i < 100000; i++)
        x = ops[i % 64](x) ^ dispatch(i * 7, x);
    printf("ops: %016llx\n", (unsigned long long)x);

    static const char *exprs[] = {"1 + 2 * 3", "(1 + 2) * 3", "100 / 7 % 5 - -3", "2*(3+(4*(5+6)))-7",
                                  "-(-(-5)) * 12 / 4", "((((((1))))))+((2))*3%2"};
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
        struct parser p = {exprs[i]};
        printf("expr %-24s = %ld\n", exprs[i], expr(&p));
    }

    enum { BUCKETS = 1024 };
    struct entry *table[BUCKETS] = {0};
    size_t distinct = 0;
    uint32_t seed = 12345;
    for (int i = 0; i < 50000; i++) {
        char word[16];
        seed = seed * 1103515245u + 12345u;
        int len = 1 + (seed >> 16) % 3;
        for (int j = 0; j < len; j++) {
            seed = seed * 1103515245u + 12345u;
            word[j] = (char)('a' + (seed >> 16) % 6);
        }
        word[len] = '\0';
        struct entry **slot = &table[hash(word) % BUCKETS];
        while (*slot && strcmp((*slot)->key, word) != 0)
            slot = &(*slot)->next;
        if (!*slot) {
            *slot = calloc(1, sizeof **slot);
            (*slot)->key = strdup(word);
            distinct++;
        }
        (*slot)->count++;
    }
    struct entry **all = malloc(distinct * sizeof *all);
    size_t k = 0;
    for (int b = 0; b < BUCKETS; b++)
        for (struct entry *e = table[b]; e; e = e->next)
            all[k++] = e;
    qsort(all, distinct, sizeof *all, by_count);
    printf("words: %zu distinct; top:", distinct);
    for (size_t i = 0; i < 8 && i < distinct; i++)
        printf(" %s=%ld", all[i]->key, all[i]->count);
    printf("\n");
    for (size_t i = 0; i < distinct; i++) {
        free(all[i]->key);
        free(all[i]);
    }
    free(all);

    double a[1000], b[1000];
    for (int i = 0; i < 1000; i++) {
        a[i] = i * 0.5;
        b[i] = (1000 - i) * 0.25;
    }
    printf("dot: %.3f\n", dot(a, b, 1000));
    return 0;
}
