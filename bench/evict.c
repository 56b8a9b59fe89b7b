/* SPDX-License-Identifier: MIT
 * evict: the memory an allocator keeps after scattered eviction, in C. A spike of N small blocks
 * of mixed sizes (half 16..64 B, a third 65..160 B, the rest 161..512 B), then 90 % of them freed
 * at random, 1.5 s with no allocator call, then 99 % gone, another 1.5 s. After each step the
 * table of survivors is compacted into a fresh one (the big one goes back to glibc), as a cache
 * that shrinks would, so what remains is the allocator's own keeping. RSS, PSS and the memory held
 * (pss_kb below) after each step on stdout as key=value: rss_<step>_kb, pss_<step>_kb, mem_<step>_kb
 * for the steps start spike evict90 idle90 evict99 idle99.
 * The reference allocates only the survivors of one level (the same blocks, in the same order),
 * steps start built idle: a perfectly compacting allocator matches it.
 * usage: evict evict [scale=1] [stop] [trim]   stop 90|99: exit() right after that step's idle, with
 *                                               the survivors still allocated (for PYALLOC_DUMP);
 *                                               trim: malloc_trim(0) after each eviction, before the
 *                                               idle, as a program that asks for its memory back does
 *        evict survivors 10|1 [scale=1]
 * scale 1 = 4 million blocks. The checksum covers the survivors of the last step, so `evict`
 * matches `survivors 1` and `evict 1 90` matches `survivors 10`. */
#include "common.h"

#include <dirent.h>
#include <malloc.h>
#include <sys/stat.h>

#define BLOCKS 4000000ULL

/* Block i's size and its eviction rank (0..9999: evicted at 90 % when < 9000, at 99 % when < 9900),
 * both from a hash of i, so a survivors-only run finds the same blocks without the spike. */
static uint64_t blk_hash(uint64_t i)
{
    rng_t r = rng_make(i * 0x9E3779B97F4A7C15ULL + 11);
    return rng_next(&r);
}

static size_t blk_size(uint64_t h)
{
    uint32_t kind = (uint32_t)(h % 6), x = (uint32_t)(h >> 8);
    if (kind < 3)
        return 16 + x % 49;        /* 16..64 */
    if (kind < 5)
        return 65 + x % 96;        /* 65..160 */
    return 161 + x % 352;          /* 161..512 */
}

static uint32_t blk_rank(uint64_t h) { return (uint32_t)((h >> 40) % 10000); }

/* PSS and the memory held, in KiB (0 if unreadable). A page mapped at two addresses (as a merged
 * page is) counts once in PSS and at every address touched in RSS; neither counts a memfd page no
 * address maps yet, and PSS shares file pages with other processes. The memory held is RSS of
 * anonymous and file pages (/proc/self/status) plus the pages of every memfd the process has open:
 * RSS without the double counting, and what the machine (or a cgroup) pays for. */
static long status_kb(FILE *f, const char *key)
{
    char line[256];
    size_t n = strlen(key);
    rewind(f);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0)
            return strtol(line + n, NULL, 10);
    return 0;
}

static void pss_kb(long *pss, long *held)
{
    *pss = *held = 0;
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    if (f) {
        *pss = status_kb(f, "Pss:");
        fclose(f);
    }
    f = fopen("/proc/self/status", "r");
    if (f) {
        *held = status_kb(f, "RssAnon:") + status_kb(f, "RssFile:");
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[64], target[256];
        struct stat st;
        if (strlen(e->d_name) > 20)
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%.20s", e->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n > 7 && strncmp(target, "/memfd:", 7) == 0 && fstat(atoi(e->d_name), &st) == 0)
            *held += (long)(st.st_blocks / 2);
    }
    closedir(d);
}

static void report(const char *step, int pct)
{
    char name[32];
    snprintf(name, sizeof name, pct ? "%s%d" : "%s", step, pct);
    long rss = bench_rss_kb(), pss, held;
    pss_kb(&pss, &held);
    static const char *sep = "";
    printf("%srss_%s_kb=%ld pss_%s_kb=%ld mem_%s_kb=%ld", sep, name, rss, name, pss, name, held);
    sep = " ";
}

static void nap(void)
{
    struct timespec ts = {1, 500000000};
    nanosleep(&ts, NULL);
}

typedef struct {
    void **p;
    uint32_t *idx;
    size_t n;
} table_t;

static void table_make(table_t *t, size_t cap)
{
    t->p = xmalloc(cap * sizeof *t->p);
    t->idx = xmalloc(cap * sizeof *t->idx);
    t->n = 0;
}

static void table_add(table_t *t, void *p, uint32_t i)
{
    t->p[t->n] = p;
    t->idx[t->n++] = i;
}

static uint64_t table_sum(const table_t *t)
{
    uint64_t ck = 0;
    for (size_t k = 0; k < t->n; k++)
        ck = ck_mix(ck, blk_read(t->p[k]));
    return ck;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "evict";
    int survivors = strcmp(mode, "survivors") == 0;
    if (!survivors && strcmp(mode, "evict") != 0) {
        fprintf(stderr, "usage: evict evict [scale] [90|99] | evict survivors 10|1 [scale]\n");
        return 2;
    }
    long keep = survivors ? bench_arg_long(argc, argv, 2, 10) : 0;
    double scale = bench_arg_double(argc, argv, survivors ? 3 : 2, 1.0);
    long stop = survivors ? 0 : bench_arg_long(argc, argv, 3, 0);
    int trim = !survivors && argc > 4 && strcmp(argv[4], "trim") == 0;
    size_t count = (size_t)bench_scaled(BLOCKS, scale);
    uint64_t ck = 0;
    report("start", 0);
    double t0 = bench_now(), timed;

    if (survivors) {
        uint32_t below = keep == 1 ? 9900 : 9000;
        table_t t;
        table_make(&t, count / 8 + 16);
        for (size_t i = 0; i < count; i++) {
            uint64_t h = blk_hash(i);
            if (blk_rank(h) < below)
                continue;
            if (t.n == count / 8 + 16)
                break; /* cannot happen for the ranks above; keeps the table in bounds */
            size_t n = blk_size(h);
            void *p = xmalloc(n);
            blk_stamp(p, n, i);
            table_add(&t, p, (uint32_t)i);
        }
        timed = bench_now() - t0;
        report("built", 0);
        nap();
        report("idle", 0);
        ck = table_sum(&t);
        printf(" timed_s=%.6f\n", timed);
        bench_finish("evict-survivors", ck, timed);
        return 0;
    }

    table_t t;
    table_make(&t, count);
    for (size_t i = 0; i < count; i++) {
        size_t n = blk_size(blk_hash(i));
        void *p = xmalloc(n);
        blk_stamp(p, n, i);
        table_add(&t, p, (uint32_t)i);
    }
    timed = bench_now() - t0;
    report("spike", 0);
    static const uint32_t below[2] = {9000, 9900};
    for (int step = 0; step < 2; step++) {
        double t1 = bench_now();
        table_t kept;
        table_make(&kept, t.n / (step == 0 ? 8 : 4) + 16);
        for (size_t k = 0; k < t.n; k++) {
            if (blk_rank(blk_hash(t.idx[k])) < below[step]) {
                free(t.p[k]);
            } else if (kept.n < t.n / (step == 0 ? 8 : 4) + 16) {
                table_add(&kept, t.p[k], t.idx[k]);
            } else {
                fprintf(stderr, "evict: survivor table overflow\n");
                return 1;
            }
        }
        free(t.p);
        free(t.idx);
        t = kept;
        if (trim)
            malloc_trim(0);
        timed += bench_now() - t1;
        int pct = step == 0 ? 90 : 99;
        report("evict", pct);
        nap();
        report("idle", pct);
        ck = table_sum(&t);
        if (stop == pct)
            break;
    }
    printf(" timed_s=%.6f\n", timed);
    bench_finish("evict", ck, timed);
    if (stop)
        exit(0); /* the survivors stay allocated: an allocator's exit hook sees them */
    for (size_t k = 0; k < t.n; k++)
        free(t.p[k]);
    free(t.p);
    free(t.idx);
    return 0;
}
