/* SPDX-License-Identifier: MIT
 * Compaction (PYALLOC_MESH=1, set by CTest): frozen pages whose 4 KiB parts share memfd frames must
 * keep every live byte through passes, repacks, frees, page deaths, fork, threads and signals.
 * Every block carries a payload over its whole usable size, checked and rewritten after each step
 * (and pages thawed when the program grows again):
 * two parts wrongly sharing a frame, a lost write or a snapshot that is not one shows as a wrong
 * byte. Passes are forced with malloc_trim(); memory is judged as the machine pays it (RSS of
 * anonymous and file pages, plus the process's memfd pages), with margins a working compaction
 * meets and holes alone (empty 4 KiB parts given back) do not. */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "../misuse/death.h"
#include "stress_common.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1 /* shadow memory, never given back: memory then measures the sanitizer */
#else
#define SANITIZED 0
#endif
#ifdef __SANITIZE_THREAD__
#define TSAN 1
#else
#define TSAN 0
#endif

typedef struct {
    unsigned char *p;
    size_t n;     /* usable size */
    uint64_t gen; /* the payload it carries */
} blk;

static blk *blocks;
static size_t nblocks;

static size_t spike_count(void) { return stress_scaled(150000); }

/* The memory the machine pays for this process: RSS of anonymous and file pages plus memfd pages
 * (RSS itself counts a shared frame once per address touched, PSS not before one is). */
static size_t held_bytes(void)
{
    char line[256];
    size_t kb = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "RssAnon:", 8) == 0 || strncmp(line, "RssFile:", 8) == 0)
                kb += (size_t)strtoul(line + 8, NULL, 10);
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            char path[64], target[128];
            struct stat st;
            if (strlen(e->d_name) > 16)
                continue;
            snprintf(path, sizeof path, "/proc/self/fd/%.16s", e->d_name);
            ssize_t n = readlink(path, target, sizeof target - 1);
            if (n > 7 && strncmp(target, "/memfd:", 7) == 0 && fstat(atoi(e->d_name), &st) == 0)
                kb += (size_t)st.st_blocks / 2;
        }
        closedir(d);
    }
    return kb * 1024;
}

static void check_all(const char *when)
{
    for (size_t i = 0; i < nblocks; i++) {
        if (!blocks[i].p)
            continue;
        size_t bad = t_check(blocks[i].p, blocks[i].n, i, blocks[i].gen);
        if (bad != (size_t)-1)
            fail_msg("%s: block %zu (%p, %zu bytes, gen %llu): byte %zu wrong", when, i, (void *)blocks[i].p,
                     blocks[i].n, (unsigned long long)blocks[i].gen, bad);
    }
}

static void rewrite_all(uint64_t gen)
{
    for (size_t i = 0; i < nblocks; i++)
        if (blocks[i].p) {
            blocks[i].gen = gen;
            t_fill(blocks[i].p, blocks[i].n, i, gen);
        }
}

static void table(void)
{
    nblocks = spike_count();
    blocks = calloc(nblocks, sizeof *blocks);
    assert_non_null(blocks);
    memset(blocks, 0, nblocks * sizeof *blocks); /* resident before the memory is measured */
}

static void spike(void)
{
    if (!blocks)
        table();
    uint64_t rng = 42;
    for (size_t i = 0; i < nblocks; i++) {
        size_t n = 16 + t_rand(&rng) % 497;
        blocks[i].p = T_MALLOC(n);
        assert_non_null(blocks[i].p);
        blocks[i].n = T_USABLE(blocks[i].p);
        t_fill(blocks[i].p, blocks[i].n, i, 0);
    }
}

/* Frees blocks at random until `keep` in 10000 of the spike remain. */
static void evict(unsigned keep)
{
    uint64_t rng = 7;
    for (size_t i = 0; i < nblocks; i++) {
        if (!blocks[i].p)
            continue;
        /* the same draw for a block at each step: the survivors of 1 % are among those of 10 % */
        uint64_t r = i * 0x9E3779B97F4A7C15ULL;
        (void)rng;
        if ((t_rand(&r) >> 40) % 10000 >= keep) {
            T_FREE(blocks[i].p);
            blocks[i].p = NULL;
        }
    }
}

static void unspike(void)
{
    for (size_t i = 0; i < nblocks; i++)
        T_FREE(blocks[i].p);
    free(blocks);
    blocks = NULL;
    nblocks = 0;
    T_TRIM(0);
}

static struct pa_stats stats_now(void)
{
    struct pa_stats st;
    assert_int_equal(pa_stats_get(&st, sizeof st), 0);
    return st;
}

/* 90 % then 99 % evicted, a pass forced after each: payloads intact and rewritable, and the memory
 * held over the start at most 35 % (90 %) or 10 % (99 %) of what the spike added (measured here:
 * 21 % and 3.5 %, 22 % and 4 % in classic mode); empty 4 KiB parts given back alone would keep
 * about 85 % and 27 %. */
static void test_passes_keep_payloads(void **state)
{
    (void)state;
    table();
    size_t base = held_bytes();
    spike();
    size_t peak = held_bytes();
    assert_true(SANITIZED || peak > base + spike_count() * 64);
    uint64_t gen = 1;
    unsigned keeps[2] = {1000, 100};
    double most[2] = {0.35, 0.10};
    for (int step = 0; step < 2; step++) {
        evict(keeps[step]);
        check_all("after eviction");
        struct pa_stats before = stats_now();
        T_TRIM(0);
        struct pa_stats st = stats_now();
        assert_true(st.mesh_passes > before.mesh_passes);
        assert_true(st.mesh_pages > 0);
        assert_true(st.mesh_frames * 2 < st.mesh_regions); /* at least two parts per frame on average */
        check_all("after a pass");
        rewrite_all(gen++);
        check_all("after rewriting through shared frames");
        size_t held = held_bytes();
        if (!SANITIZED && (double)(held - base) > most[step] * (double)(peak - base))
            fail_msg("keep %u/10000: %zu bytes held over the start, more than %.2f of the spike's %zu",
                     keeps[step], held - base, most[step], peak - base);
        /* frees into frozen pages, then another forced pass (a repack): the rest stays intact */
        for (size_t i = 0; i < nblocks; i += 3) {
            T_FREE(blocks[i].p);
            blocks[i].p = NULL;
        }
        T_TRIM(0);
        check_all("after frees and a repack");
        rewrite_all(gen++);
        check_all("after rewriting again");
    }
    uint64_t frozen = stats_now().mesh_pages;
    unspike();
    /* every frozen page of ours died (a few may hold the harness's own blocks) */
    assert_true(frozen > 100 && stats_now().mesh_pages <= 4);
}

/* fork after passes: the child sees the parent's blocks as they were at the fork, its own writes
 * stay its own, and the parent's writes after the fork never reach it; both can mesh again. */
static void test_fork_snapshot(void **state)
{
    (void)state;
    spike();
    evict(1000);
    T_TRIM(0);
    assert_true(stats_now().mesh_pages > 0);
    rewrite_all(5);
    int go[2], done[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(done), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char c;
        alarm(60);
        check_all("child, at the fork");
        rewrite_all(100);
        check_all("child, after its writes");
        if (write(done[1], "x", 1) != 1 || read(go[0], &c, 1) != 1)
            _exit(3);
        check_all("child, after the parent wrote"); /* still its own gen 100 */
        evict(100);
        T_TRIM(0);
        check_all("child, after its own pass");
        _exit(stats_now().mesh_passes > 0 ? 0 : 4);
    }
    char c;
    assert_int_equal(read(done[0], &c, 1), 1);
    check_all("parent, after the child wrote"); /* gen 5: the child's writes are not here */
    rewrite_all(6);
    assert_int_equal(write(go[1], "x", 1), 1);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("child failed: status %#x", status);
    check_all("parent, after the child exited");
    /* the parent's frozen pages sit on the old memfd, private now: the next pass rehomes them */
    struct pa_stats before = stats_now();
    T_TRIM(0);
    assert_true(stats_now().mesh_passes > before.mesh_passes);
    check_all("parent, after rehoming");
    rewrite_all(7);
    check_all("parent, after rewriting");
    for (int i = 0; i < 2; i++) {
        close(go[i]);
        close(done[i]);
    }
    unspike();
}

/* A program that grows again after a pass gets the frozen pages back (thawed) before fresh ones:
 * their live blocks stay intact and the new blocks come out of them. */
static void test_thaw_on_growth(void **state)
{
    (void)state;
    spike();
    evict(1000);
    T_TRIM(0);
    struct pa_stats st = stats_now();
    assert_true(st.mesh_pages > 0);
    uint64_t frozen = st.mesh_pages;
    uint64_t rng = 4242;
    for (size_t i = 0; i < nblocks; i++) {
        if (blocks[i].p)
            continue;
        blocks[i].p = T_MALLOC(16 + t_rand(&rng) % 497);
        assert_non_null(blocks[i].p);
        blocks[i].n = T_USABLE(blocks[i].p);
        blocks[i].gen = 77;
        t_fill(blocks[i].p, blocks[i].n, i, 77);
        if (i % 50000 == 0)
            check_all("while growing");
    }
    st = stats_now();
    if (st.mesh_pages * 4 > frozen)
        fail_msg("%llu of %llu frozen pages still frozen after the heap grew back", st.mesh_pages,
                 (unsigned long long)frozen);
    check_all("after growing back");
    unspike();
}

enum { THREADS = 4 };
static atomic_int threads_stop;

/* Each thread owns the survivors i with i % THREADS == t: checks, rewrites, frees and replaces. */
static void *owner(void *arg)
{
    uintptr_t t = (uintptr_t)arg;
    uint64_t rng = 99 + t, gen = 1000 + t * 1000000;
    while (!atomic_load_explicit(&threads_stop, memory_order_relaxed)) {
        for (size_t i = t; i < nblocks; i += THREADS) {
            if (!blocks[i].p)
                continue;
            if (t_check(blocks[i].p, blocks[i].n, i, blocks[i].gen) != (size_t)-1)
                abort();
            if (t_rand(&rng) % 16 == 0) { /* a free into a frozen page, from any thread */
                T_FREE(blocks[i].p);
                blocks[i].p = T_MALLOC(16 + t_rand(&rng) % 497);
                if (!blocks[i].p)
                    abort();
                blocks[i].n = T_USABLE(blocks[i].p);
            }
            blocks[i].gen = ++gen;
            t_fill(blocks[i].p, blocks[i].n, i, blocks[i].gen);
        }
    }
    return NULL;
}

/* Threads write their blocks on shared frames and free into frozen pages while frozen pages die
 * and are buried; no pass runs while they live. */
static void test_threads_on_frozen_pages(void **state)
{
    (void)state;
    spike();
    evict(1000);
    T_TRIM(0);
    assert_true(stats_now().mesh_pages > 0);
    atomic_store(&threads_stop, 0);
    uint64_t passes = stats_now().mesh_passes; /* read while no other thread runs: a snapshot */
    pthread_t th[THREADS];
    for (uintptr_t t = 0; t < THREADS; t++)
        STRESS_CHECK(pthread_create(&th[t], NULL, owner, (void *)t));
    for (int round = 0; round < 20; round++) {
        T_TRIM(0); /* refused while other threads run; dead pages are buried all the same */
        struct timespec nap = {0, 5000000};
        nanosleep(&nap, NULL);
    }
    atomic_store(&threads_stop, 1);
    for (int t = 0; t < THREADS; t++)
        STRESS_CHECK(pthread_join(th[t], NULL));
    assert_int_equal(stats_now().mesh_passes, passes);
    check_all("after the threads");
    T_TRIM(0); /* one thread again: a pass (not under TSan, which keeps a thread of its own once a
                  program has started one) */
    assert_true(TSAN || stats_now().mesh_passes > passes);
    check_all("after a pass");
    unspike();
}

/* A signal handler writes into a block of a sparse page, often, while passes run: the pass blocks
 * signals, so no write of the handler falls between a copy and its remap. */
static volatile uint64_t *sig_block;
static volatile sig_atomic_t sig_count;

static void on_alarm(int sig)
{
    (void)sig;
    if (sig_block) {
        *sig_block += 1;
        sig_count = sig_count + 1;
    }
}

static void test_signals_during_passes(void **state)
{
    (void)state;
    spike();
    /* the handler's block: one of the spike's, so its page turns sparse and is frozen */
    size_t victim = nblocks / 2;
    sig_block = (volatile uint64_t *)blocks[victim].p;
    blocks[victim].p = NULL; /* not checked as a payload */
    *sig_block = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    assert_int_equal(sigaction(SIGALRM, &sa, NULL), 0);
    struct itimerval it = {{0, 200}, {0, 200}};
    assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
    evict(1000);
    for (int round = 0; round < 6; round++) {
        T_TRIM(0);
        check_all("with signals");
        rewrite_all(10 + (uint64_t)round);
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    assert_int_equal(setitimer(ITIMER_REAL, &off, NULL), 0);
    signal(SIGALRM, SIG_DFL);
    assert_true(sig_count > 0);
    assert_int_equal(*sig_block, (uint64_t)sig_count);
    assert_true(stats_now().mesh_pages > 0);
    T_FREE((void *)sig_block);
    sig_block = NULL;
    unspike();
}

/* Misuse of a frozen page's blocks is still caught, with the usual one-line message. */
static void double_free_frozen(void *arg)
{
    T_FREE(arg);
    T_FREE(t_launder(arg));
}

static void interior_free_frozen(void *arg) { T_FREE(arg); }

static void valid_free_frozen(void *arg) { T_FREE(arg); }

static void usable_after_free_frozen(void *arg)
{
    T_FREE(arg);
    (void)T_USABLE(t_launder(arg));
}

static void test_misuse_in_frozen_pages(void **state)
{
    (void)state;
    spike();
    evict(100);
    T_TRIM(0);
    assert_true(stats_now().mesh_pages > 0);
    unsigned char *p = NULL;
    for (size_t i = 0; i < nblocks && !p; i++)
        p = blocks[i].p;
    assert_non_null(p);
    struct outcome out;
    run_in_child(valid_free_frozen, p, &out);
    expect_clean_exit(&out);
    run_in_child(double_free_frozen, p, &out);
    expect_abort(&out, "double free", NULL, p);
    run_in_child(interior_free_frozen, p + 8, &out);
    expect_abort(&out, "invalid pointer", NULL, p + 8);
    run_in_child(usable_after_free_frozen, p, &out);
    expect_abort(&out, "malloc_usable_size", NULL, p);
    check_all("after the children");
    unspike();
}

int main(void)
{
    const char *mesh = getenv("PYALLOC_MESH");
    if (!mesh || strcmp(mesh, "1") != 0) {
        fprintf(stderr, "stress_mesh: run with PYALLOC_MESH=1 (CTest sets it)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_passes_keep_payloads),
        cmocka_unit_test(test_fork_snapshot),
        cmocka_unit_test(test_signals_during_passes),
        cmocka_unit_test(test_misuse_in_frozen_pages),
        cmocka_unit_test(test_thaw_on_growth),
        cmocka_unit_test(test_threads_on_frozen_pages), /* last: under TSan no pass follows it */
    };
    return cmocka_run_group_tests_name(T_API_NAME, tests, NULL, NULL);
}
