/* SPDX-License-Identifier: MIT
 * fork() while other threads are inside the allocator (gperftools #499, #741; jemalloc #2019): a lock
 * held at the moment of fork, and not reset in the child, hangs the child's first malloc. Each round
 * forks while worker threads allocate, free and hand blocks to each other; the child allocates and
 * frees a few thousand blocks, frees blocks that the parent's (now absent) workers own, starts a
 * thread of its own, and _exit(0)s. The parent waits with a deadline: a hang is a failure.
 * Also: a process that calls exit() while its threads are still allocating must exit cleanly. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "stress_common.h"

enum { WORKERS = 3, SHARED = 256, ROUNDS = 40, CHILD_BLOCKS = 4000, CHILD_DEADLINE_S = 10 };

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
/* gcc 12's ASan and TSan runtimes are not fork-safe themselves: a worker holding ASan's allocator lock at
 * the fork hangs the child's first large malloc (seen: the child stuck in SizeClassAllocator64 under
 * pa_sys_malloc), and TSan kills a child that starts a thread. Under a sanitizer every block stays in
 * pyalloc's pools and the child starts no thread, so the test still covers pyalloc's own fork
 * handling; the normal builds run it in full. */
#define MAX_SIZE(n) ((n) < PA_SMALL_MAX ? (n) : PA_SMALL_MAX)
#define CHILD_THREAD 0
#else
#define MAX_SIZE(n) (n)
#define CHILD_THREAD 1
#endif

static atomic_int stop;
static _Atomic(void *) shared[SHARED]; /* blocks owned by workers, freed by whoever takes them */
static atomic_ulong worker_ops;

static void *worker(void *arg)
{
    uint64_t rng = 0x5eed0000ULL + (uintptr_t)arg;
    enum { LOCAL = 128 };
    void *local[LOCAL] = {0};
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        size_t k = t_rand(&rng) % LOCAL;
        T_FREE(local[k]);
        size_t size = 1 + t_rand(&rng) % MAX_SIZE(700);
        local[k] = T_MALLOC(size);
        if (local[k] == NULL)
            abort();
        memset(local[k], (int)size, size);
        /* swap a fresh block into the shared array; free what was there (often another thread's) */
        void *mine = T_MALLOC(1 + t_rand(&rng) % MAX_SIZE(520));
        if (mine == NULL)
            abort();
        void *old = atomic_exchange(&shared[t_rand(&rng) % SHARED], mine);
        T_FREE(old);
        if (t_rand(&rng) % 64 == 0) {
            void *r = T_REALLOC(T_CALLOC(3, 30), MAX_SIZE(2000));
            T_FREE(r);
        }
        atomic_fetch_add_explicit(&worker_ops, 1, memory_order_relaxed);
    }
    for (size_t k = 0; k < LOCAL; k++)
        T_FREE(local[k]);
    return NULL;
}

static void *child_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 500; i++) {
        void *p = T_MALLOC((size_t)(1 + i % 600));
        if (p == NULL)
            return (void *)1;
        T_FREE(p);
    }
    return NULL;
}

/* Runs in the child: only the forking thread exists here. Returns the exit code. */
static int child_work(int round)
{
    static void *blocks[CHILD_BLOCKS];
    uint64_t rng = 0xc41dULL + (uint64_t)round;
    alarm(CHILD_DEADLINE_S); /* a hung child dies of SIGALRM even if the parent could not wait */
    for (int i = 0; i < CHILD_BLOCKS; i++) {
        size_t size = 1 + t_rand(&rng) % MAX_SIZE(1000);
        blocks[i] = T_MALLOC(size);
        if (blocks[i] == NULL)
            return 2;
        t_fill(blocks[i], size, 99, (uint64_t)i);
        if (i % 3 == 0) {
            T_FREE(blocks[i]);
            blocks[i] = NULL;
        }
    }
    /* blocks owned by the parent's workers, whose threads do not exist in the child */
    for (int i = 0; i < SHARED; i++)
        T_FREE(atomic_exchange(&shared[i], NULL));
    if (CHILD_THREAD && round % 2 == 0) {
        pthread_t t;
        void *res = (void *)1;
        if (pthread_create(&t, NULL, child_thread, NULL) != 0 || pthread_join(t, &res) != 0 ||
            res != NULL)
            return 3;
    }
    rng = 0xc41dULL + (uint64_t)round;
    for (int i = 0; i < CHILD_BLOCKS; i++) {
        size_t size = 1 + t_rand(&rng) % MAX_SIZE(1000);
        if (blocks[i] != NULL) {
            if (t_check(blocks[i], size, 99, (uint64_t)i) != (size_t)-1)
                return 4;
            T_FREE(blocks[i]);
        }
    }
    return 0;
}

/* Waits for pid with a deadline; returns 1 when it exited 0, else reports and returns 0. */
static int wait_child(pid_t pid, int round, const char *what)
{
    double deadline = stress_now() + CHILD_DEADLINE_S + 2;
    int status = 0;
    pid_t r;
    while ((r = waitpid(pid, &status, WNOHANG)) == 0 && stress_now() < deadline)
        usleep(2000);
    if (r == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        print_error("%s round %d: child %d hung (killed after %d s)\n", what, round, (int)pid,
                    CHILD_DEADLINE_S + 2);
        return 0;
    }
    if (r < 0) {
        print_error("%s round %d: waitpid: %s\n", what, round, strerror(errno));
        return 0;
    }
    if (WIFSIGNALED(status)) {
        print_error("%s round %d: child killed by signal %d%s\n", what, round, WTERMSIG(status),
                    WTERMSIG(status) == SIGALRM ? " (hung: its own alarm fired)" : "");
        return 0;
    }
    if (WEXITSTATUS(status) != 0) {
        print_error("%s round %d: child exited %d\n", what, round, WEXITSTATUS(status));
        return 0;
    }
    return 1;
}

static void *allocate_forever(void *arg)
{
    uint64_t rng = 0xe417ULL + (uintptr_t)arg;
    void *keep[32] = {0};
    for (;;) {
        size_t k = t_rand(&rng) % 32;
        T_FREE(keep[k]);
        keep[k] = T_MALLOC(1 + t_rand(&rng) % MAX_SIZE(800));
    }
    return NULL;
}

/* exit() runs atexit handlers and library destructors while other threads are still allocating:
 * nothing the allocator tears down at exit may break them (or hang the exit). */
static void test_exit_while_allocating(void **state)
{
    (void)state;
    int rounds = (int)stress_scaled(10), failures = 0;
    for (int round = 0; round < rounds; round++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
            fail_msg("fork: %s", strerror(errno));
        if (pid == 0) {
            alarm(CHILD_DEADLINE_S);
            pthread_t t;
            for (uintptr_t i = 0; i < 3; i++)
                if (pthread_create(&t, NULL, allocate_forever, (void *)i) != 0)
                    _exit(5);
            usleep(5000 + 3000 * (useconds_t)round);
            exit(0);
        }
        failures += !wait_child(pid, round, "exit");
    }
    assert_int_equal(failures, 0);
}

static void test_fork_while_allocating(void **state)
{
    (void)state;
    pthread_t w[WORKERS];
    int rounds = (int)stress_scaled(ROUNDS);
    for (size_t i = 0; i < WORKERS; i++)
        STRESS_CHECK(pthread_create(&w[i], NULL, worker, (void *)(uintptr_t)i));
    /* let the workers get going so that a fork lands inside malloc/free */
    while (atomic_load(&worker_ops) < 1000)
        sched_yield();
    int failures = 0;
    for (int round = 0; round < rounds; round++) {
        unsigned long before = atomic_load(&worker_ops);
        while (atomic_load(&worker_ops) < before + 200)
            sched_yield();
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
            fail_msg("fork: %s", strerror(errno));
        if (pid == 0)
            _exit(child_work(round));
        failures += !wait_child(pid, round, "fork");
    }
    atomic_store(&stop, 1);
    for (size_t i = 0; i < WORKERS; i++)
        STRESS_CHECK(pthread_join(w[i], NULL));
    for (int i = 0; i < SHARED; i++)
        T_FREE(atomic_exchange(&shared[i], NULL));
    print_message("%d fork rounds, %lu worker operations, through %s\n", rounds,
                  atomic_load(&worker_ops), T_API_NAME);
    assert_int_equal(failures, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_exit_while_allocating),
                                       cmocka_unit_test(test_fork_while_allocating)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
