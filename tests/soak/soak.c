/* SPDX-License-Identifier: MIT
 * Soak test (scripts/soak.sh; not in CI): rounds of stress for a given time, each with a random
 * number of threads, in one long-lived process, so that slow leaks and corruption show.
 *
 * Every round starts T threads (the first round the maximum, later ones 1..max at random). Each thread
 * runs random malloc/calloc/realloc/free on a table of its own, replaces entries of a table of
 * long-lived blocks shared by all threads (so blocks are freed by threads that did not allocate them,
 * some of which have exited), and passes blocks to other threads through a ring. Every block carries
 * a payload derived from (owner tag, sequence number) that is checked before every free and realloc.
 * Some threads exit leaving their blocks to the main thread. Every few rounds the process forks; the
 * child checks and frees the long-lived blocks it inherited, allocates, and exits.
 *
 * After each round, with only the long-lived blocks left, the RSS is sampled. The first `warmup` rounds
 * set the baseline; a later round whose RSS exceeds baseline * (1 + growth%) + slack fails the run
 * (growth without bound), as does any corrupted payload (exit 1). Progress goes to stdout, one line a
 * round. Built without pyalloc: run it under LD_PRELOAD=libpyalloc.so (scripts/soak.sh does).
 *
 * usage: pa_soak [--seconds S] [--max-threads N] [--seed X] [--round-ms MS] [--warmup ROUNDS]
 *                [--growth PERCENT] [--slack-mb MB] */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pa_test.h"

enum { LOCAL_SLOTS = 2048, SHARED_SLOTS = 32768, STRIPES = 64, RING = 8192, MAX_THREADS_CAP = 64 };

struct block {
    unsigned char *p;
    uint32_t size;
    uint32_t tag; /* who filled it: (round << 8) | thread, or a shared-table marker */
    uint64_t seq;
};

static struct {
    double seconds;
    int max_threads;
    uint64_t seed;
    int round_ms;
    int warmup;
    int growth_pct;
    int slack_mb;
} opt = {60, 16, 1, 1500, 3, 25, 48};

static struct block *shared; /* long-lived blocks; mmap'ed, not from the allocator under test */
static pthread_mutex_t stripe[STRIPES];

static struct {
    pthread_mutex_t lock;
    struct block slot[RING];
    size_t head, count;
} ring = {.lock = PTHREAD_MUTEX_INITIALIZER};

static atomic_int stop;
static atomic_ullong total_ops, total_checked;

static void die(const char *what, const struct block *b, size_t at)
{
    fprintf(stderr, "pa_soak: CORRUPTION: %s: block %p of %u bytes (tag %#x, seq %llu), byte %zu\n", what,
            (void *)b->p, b->size, b->tag, (unsigned long long)b->seq, at);
    fflush(NULL);
    _exit(1);
}

static size_t pick_size(uint64_t *rng)
{
    uint64_t r = t_rand(rng) % 100;
    if (r < 70)
        return 1 + t_rand(rng) % 128;
    if (r < 92)
        return 129 + t_rand(rng) % 384;
    return 513 + t_rand(rng) % 3584;
}

static void fill(struct block *b) { t_fill(b->p, b->size, b->tag, b->seq); }

static void check(const struct block *b, const char *what)
{
    size_t at = t_check(b->p, b->size, b->tag, b->seq);
    if (at != (size_t)-1)
        die(what, b, at);
    atomic_fetch_add_explicit(&total_checked, 1, memory_order_relaxed);
}

static int make(struct block *b, size_t size, uint32_t tag, uint64_t seq, int zeroed)
{
    b->p = zeroed ? T_CALLOC(1, size) : T_MALLOC(size);
    if (b->p == NULL)
        return -1;
    if (zeroed)
        for (size_t i = 0; i < size; i++)
            if (b->p[i] != 0) {
                b->size = (uint32_t)size;
                die("calloc returned non-zero memory", b, i);
            }
    b->size = (uint32_t)size;
    b->tag = tag;
    b->seq = seq;
    fill(b);
    return 0;
}

static void drop(struct block *b, const char *what)
{
    if (b->p == NULL)
        return;
    check(b, what);
    T_FREE(b->p);
    b->p = NULL;
}

struct worker {
    pthread_t thread;
    int id, round;
    int leave_blocks; /* exit without freeing the local table: main frees it */
    uint64_t rng;
    uint64_t ops;
    struct block *local; /* LOCAL_SLOTS, mmap'ed */
};

static void ring_put(struct block *b)
{
    pthread_mutex_lock(&ring.lock);
    if (ring.count < RING) {
        ring.slot[(ring.head + ring.count++) % RING] = *b;
        b->p = NULL;
    }
    pthread_mutex_unlock(&ring.lock);
}

static int ring_take(struct block *out)
{
    int got = 0;
    pthread_mutex_lock(&ring.lock);
    if (ring.count > 0) {
        *out = ring.slot[ring.head];
        ring.head = (ring.head + 1) % RING;
        ring.count--;
        got = 1;
    }
    pthread_mutex_unlock(&ring.lock);
    return got;
}

static void *work(void *arg)
{
    struct worker *w = arg;
    uint32_t tag = (uint32_t)(w->round << 8 | w->id);
    uint64_t seq = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int burst = 0; burst < 256; burst++) {
            uint64_t r = t_rand(&w->rng) % 100;
            struct block *b = &w->local[t_rand(&w->rng) % LOCAL_SLOTS];
            if (r < 40) { /* replace a local block */
                drop(b, "local free");
                if (make(b, pick_size(&w->rng), tag, ++seq, r < 4) != 0)
                    die("malloc failed", b, 0);
            } else if (r < 55) { /* realloc: the prefix must survive */
                if (b->p == NULL)
                    continue;
                check(b, "before realloc");
                size_t n = pick_size(&w->rng);
                unsigned char *q = T_REALLOC(b->p, n);
                if (q == NULL)
                    die("realloc failed", b, 0);
                b->p = q;
                size_t keep = n < b->size ? n : b->size;
                b->size = (uint32_t)keep;
                check(b, "after realloc");
                b->size = (uint32_t)n;
                b->seq = ++seq;
                b->tag = tag;
                fill(b);
            } else if (r < 70) { /* free */
                drop(b, "local free");
            } else if (r < 85) { /* a long-lived block, freed by whoever replaces it next */
                size_t s = t_rand(&w->rng) % SHARED_SLOTS;
                struct block fresh;
                if (make(&fresh, pick_size(&w->rng), tag | 0x80000000u, ++seq, 0) != 0)
                    die("malloc failed", &fresh, 0);
                pthread_mutex_t *m = &stripe[s % STRIPES];
                pthread_mutex_lock(m);
                struct block old = shared[s];
                shared[s] = fresh;
                pthread_mutex_unlock(m);
                drop(&old, "long-lived free");
            } else if (r < 93) { /* hand a block to another thread */
                if (b->p != NULL)
                    ring_put(b);
            } else { /* take one handed over */
                struct block got;
                if (ring_take(&got))
                    drop(&got, "handed-over free");
            }
            w->ops++;
        }
    }
    if (!w->leave_blocks)
        for (size_t i = 0; i < LOCAL_SLOTS; i++)
            drop(&w->local[i], "local free at exit");
    atomic_fetch_add_explicit(&total_ops, w->ops, memory_order_relaxed);
    return NULL;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The child of a fork: every inherited long-lived block is intact and can be freed; it allocates. */
static int fork_check(uint64_t seed)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        uint64_t rng = seed;
        for (size_t i = 0; i < SHARED_SLOTS; i++)
            drop(&shared[i], "long-lived free in a forked child");
        struct block tmp[512];
        for (int k = 0; k < 20; k++) {
            for (int i = 0; i < 512; i++)
                if (make(&tmp[i], pick_size(&rng), 0x7000000u, (uint64_t)k * 512 + i, i % 9 == 0) != 0)
                    _exit(3);
            for (int i = 0; i < 512; i++)
                drop(&tmp[i], "free in a forked child");
        }
        _exit(0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* pyalloc's own account of its pools, when it is loaded and has statistics (pa_stats_get, found with
 * dlsym so the program still runs on glibc alone): appended to each round's line. */
static void pool_summary(char *out, size_t cap)
{
    out[0] = '\0';
#ifdef PA_STATS_NCLASS
    static int (*get)(struct pa_stats *, size_t);
    static int looked;
    if (!looked) {
        get = (int (*)(struct pa_stats *, size_t))dlsym(RTLD_DEFAULT, "pa_stats_get");
        looked = 1;
    }
    static struct pa_stats st; /* static: large, and nothing here may allocate */
    if (get == NULL || get(&st, sizeof st) != 0)
        return;
    snprintf(out, cap, "  | pool: %llu pages (%.1f MiB), %llu blocks in use (%.1f MiB), %llu dirty, %llu MiB "
                       "given back, heaps %llu live %llu abandoned",
             st.total.pages, st.total.bytes_held / 1048576.0, st.total.in_use, st.in_use_bytes / 1048576.0,
             st.pages_dirty, st.bytes_given_back >> 20, st.heaps_live, st.heaps_abandoned);
#else
    (void)cap;
#endif
}

static void usage(const char *me)
{
    fprintf(stderr,
            "usage: %s [--seconds S] [--max-threads N] [--seed X] [--round-ms MS] [--warmup ROUNDS]\n"
            "          [--growth PERCENT] [--slack-mb MB]\n",
            me);
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage(argv[0]);
        const char *a = argv[i], *v = argv[++i];
        if (!strcmp(a, "--seconds"))
            opt.seconds = atof(v);
        else if (!strcmp(a, "--max-threads"))
            opt.max_threads = atoi(v);
        else if (!strcmp(a, "--seed"))
            opt.seed = strtoull(v, NULL, 0);
        else if (!strcmp(a, "--round-ms"))
            opt.round_ms = atoi(v);
        else if (!strcmp(a, "--warmup"))
            opt.warmup = atoi(v);
        else if (!strcmp(a, "--growth"))
            opt.growth_pct = atoi(v);
        else if (!strcmp(a, "--slack-mb"))
            opt.slack_mb = atoi(v);
        else
            usage(argv[0]);
    }
    if (opt.max_threads < 1 || opt.max_threads > MAX_THREADS_CAP || opt.round_ms < 10 || opt.warmup < 1)
        usage(argv[0]);
    setvbuf(stdout, NULL, _IOLBF, 0);

    shared = mmap(NULL, SHARED_SLOTS * sizeof *shared, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct worker *workers = mmap(NULL, MAX_THREADS_CAP * sizeof *workers, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED || workers == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&stripe[i], NULL);
    for (int i = 0; i < MAX_THREADS_CAP; i++) {
        workers[i].local = mmap(NULL, LOCAL_SLOTS * sizeof(struct block), PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (workers[i].local == MAP_FAILED) {
            perror("mmap");
            return 2;
        }
    }

    const char *mode = getenv("PYALLOC_ALIGN");
    printf("pa_soak: %.0f s, 1..%d threads, seed %llu, rounds of %d ms, PYALLOC_ALIGN=%s, malloc(32) "
           "usable size %zu (%s)\n",
           opt.seconds, opt.max_threads, (unsigned long long)opt.seed, opt.round_ms, mode ? mode : "16",
           malloc_usable_size(t_launder(malloc(32))), /* leaks 32 bytes, once */
           malloc_usable_size(t_launder(malloc(32))) == 32 ? "pyalloc" : "NOT pyalloc");

    uint64_t rng = opt.seed * 0x9E3779B97F4A7C15ULL + 1;
    double start = now();
    size_t baseline = 0, worst = 0;
    int round = 0, failed = 0;
    while (now() - start < opt.seconds || round < opt.warmup + 1) {
        round++;
        int threads = round == 1 ? opt.max_threads : 1 + (int)(t_rand(&rng) % (uint64_t)opt.max_threads);
        atomic_store(&stop, 0);
        unsigned long long ops_before = atomic_load(&total_ops);
        size_t peak = 0;
        for (int i = 0; i < threads; i++) {
            struct worker *w = &workers[i];
            w->id = i;
            w->round = round;
            w->ops = 0;
            w->rng = t_rand(&rng) | 1;
            w->leave_blocks = t_rand(&rng) % 4 == 0;
            if (pthread_create(&w->thread, NULL, work, w) != 0) {
                fprintf(stderr, "pa_soak: pthread_create failed\n");
                return 2;
            }
        }
        for (int t = 0; t < opt.round_ms; t += 50) {
            sleep_ms(50);
            size_t rss = t_rss_bytes();
            peak = rss > peak ? rss : peak;
        }
        atomic_store(&stop, 1);
        for (int i = 0; i < threads; i++)
            pthread_join(workers[i].thread, NULL);
        /* blocks of threads that exited without freeing them, and blocks still in the ring */
        for (int i = 0; i < threads; i++)
            for (size_t k = 0; k < LOCAL_SLOTS; k++)
                drop(&workers[i].local[k], "free of an exited thread's block");
        struct block b;
        while (ring_take(&b))
            drop(&b, "handed-over free");
        int forked = 0;
        if (round % 5 == 0) {
            int rc = fork_check(t_rand(&rng));
            if (rc != 0) {
                fprintf(stderr, "pa_soak: forked child failed: %d\n", rc);
                return 1;
            }
            forked = 1;
        }
        size_t live = 0, live_bytes = 0;
        for (size_t i = 0; i < SHARED_SLOTS; i++)
            if (shared[i].p) {
                live++;
                live_bytes += shared[i].size;
            }
        size_t rss = t_rss_bytes();
        if (round <= opt.warmup) {
            baseline = rss > baseline ? rss : baseline;
        }
        size_t bound = baseline + baseline / 100 * (size_t)opt.growth_pct + ((size_t)opt.slack_mb << 20);
        worst = rss > worst ? rss : worst;
        char pool[256];
        pool_summary(pool, sizeof pool);
        printf("round %4d  %5.0fs  threads %2d  ops %9llu  checked %11llu  long-lived %5zu (%6.1f MiB)  "
               "rss peak %6.1f MiB  end %6.1f MiB%s%s%s\n",
               round, now() - start, threads, atomic_load(&total_ops) - ops_before,
               (unsigned long long)atomic_load(&total_checked), live, live_bytes / 1048576.0,
               peak / 1048576.0, rss / 1048576.0, round <= opt.warmup ? "  (warm-up)" : "",
               forked ? "  fork ok" : "", pool);
        if (round > opt.warmup && rss > bound) {
            fprintf(stderr, "pa_soak: RSS %.1f MiB after round %d exceeds the bound %.1f MiB (baseline %.1f "
                            "MiB + %d%% + %d MiB): memory grows without bound\n",
                    rss / 1048576.0, round, bound / 1048576.0, baseline / 1048576.0, opt.growth_pct,
                    opt.slack_mb);
            failed = 1;
            break;
        }
    }
    for (size_t i = 0; i < SHARED_SLOTS; i++)
        drop(&shared[i], "long-lived free at the end");
    printf("pa_soak: %s: %d rounds, %llu operations, %llu payloads checked, RSS baseline %.1f MiB, "
           "worst %.1f MiB\n",
           failed ? "FAILED" : "passed", round, (unsigned long long)atomic_load(&total_ops),
           (unsigned long long)atomic_load(&total_checked), baseline / 1048576.0, worst / 1048576.0);
    return failed;
}
