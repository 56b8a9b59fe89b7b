/* SPDX-License-Identifier: MIT
 * Thread exit: malloc and free keep working after the allocator's own thread-exit hook has run
 * (jemalloc #283, #2825: glibc frees TLS and runs C++ thread_local destructors after pthread key
 * destructors). Here pthread key destructors that run in every destructor round malloc and free,
 * free blocks the thread made earlier, and leave blocks for main; a thread whose first allocation
 * happens inside a destructor; a thread that only frees; and blocks made by exited threads and
 * freed later by main, their contents intact, while main's new allocations adopt abandoned pages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "stress_common.h"

enum { THREADS = 200, LEFT = 32 };

/* Destructor rounds: glibc runs up to 4 (PTHREAD_DESTRUCTOR_ITERATIONS); the later ones come after
 * pyalloc's own thread-exit hook. ThreadSanitizer tears its thread state down in round 4 and any
 * malloc after that crashes inside TSan itself, so under TSan the last round is left out. */
#if defined(__SANITIZE_THREAD__)
#define DTOR_ROUNDS 3
#else
#define DTOR_ROUNDS 4
#endif

static pthread_key_t key_early, key_late;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* Blocks left behind (by thread bodies and by destructors), checked and freed by main. */
struct left {
    void *p;
    size_t size;
    uint64_t owner, seq;
};
static struct left *left_blocks;
static size_t n_left, cap_left;
static size_t dtor_runs;

static void leave(void *p, size_t size, uint64_t owner, uint64_t seq)
{
    pthread_mutex_lock(&lock);
    if (n_left < cap_left)
        left_blocks[n_left++] = (struct left){p, size, owner, seq};
    else
        abort();
    pthread_mutex_unlock(&lock);
}

struct tls_state {
    uint64_t id;
    int rounds;
    void *held; /* a block the thread made in its body, freed by the destructor */
    int heap;   /* the state itself came from the allocator */
};
static struct tls_state *static_states; /* for threads that must not allocate before exiting */

/* Runs for every destructor round: re-arms itself so it also runs after the allocator's hook. */
static void dtor(void *arg, pthread_key_t key)
{
    struct tls_state *st = arg;
    uint64_t rng = 0xd70dULL + st->id * 31 + (uint64_t)st->rounds;
    for (int i = 0; i < 50; i++) {
        size_t size = 1 + t_rand(&rng) % 600;
        void *p = T_MALLOC(size);
        if (p == NULL)
            abort();
        memset(p, 0x42, size);
        p = T_REALLOC(p, size + 100);
        if (p == NULL)
            abort();
        T_FREE(p);
    }
    T_FREE(st->held);
    st->held = NULL;
    size_t size = 8 + (size_t)st->rounds * 40;
    void *keep = T_MALLOC(size);
    if (keep == NULL)
        abort();
    t_fill(keep, size, st->id, 1000 + (uint64_t)st->rounds + (key == key_late ? 100 : 0));
    leave(keep, size, st->id, 1000 + (uint64_t)st->rounds + (key == key_late ? 100 : 0));
    pthread_mutex_lock(&lock);
    dtor_runs++;
    pthread_mutex_unlock(&lock);
    if (++st->rounds < DTOR_ROUNDS) {
        pthread_setspecific(key, st);
    } else if (st->heap) {
        /* the state itself came from the allocator: free it last, after every other round */
        T_FREE(st);
    }
}

static void dtor_early(void *arg) { dtor(arg, key_early); }
static void dtor_late(void *arg) { dtor(arg, key_late); }

static void *body(void *arg)
{
    uint64_t id = (uint64_t)(uintptr_t)arg;
    uint64_t rng = 0xb0d1ULL + id;
    if (id % 4 == 3) {
        /* allocates nothing in its body: its first malloc happens in a key destructor */
        struct tls_state *st = &static_states[id];
        *st = (struct tls_state){id, 0, NULL, 0};
        pthread_setspecific(key_late, st);
        return NULL;
    }
    for (int i = 0; i < LEFT; i++) {
        size_t size = 1 + t_rand(&rng) % 600;
        void *p = T_MALLOC(size);
        if (p == NULL)
            abort();
        t_fill(p, size, id, (uint64_t)i);
        leave(p, size, id, (uint64_t)i);
    }
    struct tls_state *a = T_MALLOC(sizeof *a), *b = T_MALLOC(sizeof *b);
    if (a == NULL || b == NULL)
        abort();
    *a = (struct tls_state){id, 0, T_MALLOC(48), 1};
    *b = (struct tls_state){id, 0, T_MALLOC(700), 1};
    pthread_setspecific(key_early, a);
    pthread_setspecific(key_late, b);
    return NULL;
}

/* A thread that never allocates, only frees blocks main made. */
static void *free_only(void *arg)
{
    void **blocks = arg;
    for (int i = 0; i < 100; i++)
        T_FREE(blocks[i]);
    return NULL;
}

static void test_thread_exit(void **state)
{
    (void)state;
    size_t threads = (stress_scaled(THREADS) + 1) & ~(size_t)1; /* created in pairs */
    cap_left = threads * (LEFT + 2 * DTOR_ROUNDS);
    left_blocks = T_CALLOC(cap_left, sizeof *left_blocks);
    assert_non_null(left_blocks);
    static_states = T_CALLOC(threads + 1, sizeof *static_states);
    assert_non_null(static_states);

    STRESS_CHECK(pthread_key_create(&key_early, dtor_early));
    void *warm = T_MALLOC(16); /* the allocator may create its own key here, between ours */
    T_FREE(warm);
    STRESS_CHECK(pthread_key_create(&key_late, dtor_late));

    for (size_t i = 0; i < threads; i += 2) {
        pthread_t a, b;
        STRESS_CHECK(pthread_create(&a, NULL, body, (void *)(uintptr_t)i));
        STRESS_CHECK(pthread_create(&b, NULL, body, (void *)(uintptr_t)(i + 1)));
        STRESS_CHECK(pthread_join(a, NULL));
        STRESS_CHECK(pthread_join(b, NULL));
    }

    /* main allocates a lot now: pages abandoned by the exited threads get adopted */
    enum { FRESH = 20000 };
    static void *fresh[FRESH];
    for (size_t i = 0; i < FRESH; i++) {
        fresh[i] = T_MALLOC(1 + i % 600);
        assert_non_null(fresh[i]);
        t_fill(fresh[i], 1 + i % 600, 5555, i);
    }

    size_t corrupt = 0;
    for (size_t i = 0; i < n_left; i++) {
        struct left *l = &left_blocks[i];
        if (t_check(l->p, l->size, l->owner, l->seq) != (size_t)-1) {
            print_error("block of %zu bytes from thread %llu seq %llu corrupted\n", l->size,
                        (unsigned long long)l->owner, (unsigned long long)l->seq);
            corrupt++;
        }
        T_FREE(l->p);
    }
    for (size_t i = 0; i < FRESH; i++) {
        if (t_check(fresh[i], 1 + i % 600, 5555, i) != (size_t)-1)
            corrupt++;
        T_FREE(fresh[i]);
    }

    /* a thread that only frees */
    void *for_other[100];
    for (int i = 0; i < 100; i++)
        for_other[i] = T_MALLOC((size_t)(8 * (i + 1)));
    pthread_t f;
    STRESS_CHECK(pthread_create(&f, NULL, free_only, for_other));
    STRESS_CHECK(pthread_join(f, NULL));

    print_message("%zu threads, %zu blocks left behind, %zu destructor runs, through %s\n", threads,
                  n_left, dtor_runs, T_API_NAME);
    assert_int_equal(corrupt, 0);
    /* every thread ran each armed destructor DTOR_ROUNDS times */
    size_t armed = 0;
    for (size_t i = 0; i < threads; i++)
        armed += (i % 4 == 3) ? 1 : 2;
    assert_int_equal(dtor_runs, armed * DTOR_ROUNDS);
    T_FREE(left_blocks);
    T_FREE(static_states);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_thread_exit)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
