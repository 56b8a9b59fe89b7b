/* SPDX-License-Identifier: MIT
 * The page policies of a heap, each checked where it acts so that the test fails when the policy is
 * switched off or broken: a FULL page returns to avail only once 1/PA_FULL_RETURN of its blocks are
 * free; an emptied page that is not current is kept as a spare, without the pool lock, up to
 * PA_SPARE_MAX; another class takes an empty current page only after PA_IDLE_EPOCHS new pages; a
 * live thread that frees into an abandoned page of a class it allocates adopts the page. Each test
 * runs in threads of its own, so it starts from an empty heap. Sizes are multiples of 16: the same
 * classes in both alignment modes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "pyalloc.h"

/* cmocka's asserts may not fail in a thread other than the test's: in the heaps' own threads a
 * failed check prints where and why, and ends the process with status 1. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            _exit(1);                                                                              \
        }                                                                                          \
    } while (0)
#define CHECK_EQ(a, b) CHECK((a) == (b), "%llu != %llu", (unsigned long long)(a), (unsigned long long)(b))

typedef void (*thread_fn)(void *);

static void *thread_main(void *arg) {
    void **a = arg;
    ((thread_fn)(uintptr_t)a[0])(a[1]);
    return NULL;
}

/* fn(arg) in a new thread, which has exited (its heap abandoned) when this returns. */
static void in_thread(thread_fn fn, void *arg) {
    void *a[2] = {(void *)(uintptr_t)fn, arg};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, thread_main, a), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
}

/* A thread that works in steps the test orders: it posts done after each step, and waits for go
 * before the next. */
typedef struct {
    sem_t go, done;
} steps;

/* Starts fn(arg) and waits for its first step. */
static pthread_t start_steps(void *(*fn)(void *), void *arg, steps *st) {
    sem_init(&st->go, 0, 0);
    sem_init(&st->done, 0, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fn, arg), 0);
    sem_wait(&st->done);
    return t;
}

static pa_page *page_of(void *p) {
    pa_page *pg = pa_page_of(p);
    CHECK(pg != NULL, "NULL");
    return pg;
}

static uint32_t blocks_of(size_t size) { return pa_class_blocks(pa_class_for(size)); }

/* ---- FULL pages come back in bulk ---- */

enum { FULL_SIZE = 256 };

static void full_page(void *arg) {
    (void)arg;
    uint32_t nb = blocks_of(FULL_SIZE), k = nb / PA_FULL_RETURN;
    CHECK(k >= 2, "false");
    static void *b[4096];
    /* fill one page and start the next: the first is then on the full list */
    uint32_t n = 0;
    b[n++] = pa_malloc(FULL_SIZE);
    pa_page *first = page_of(b[0]);
    for (;;) {
        b[n] = pa_malloc(FULL_SIZE);
        if (page_of(b[n]) != first) break;
        n++;
    }
    CHECK_EQ(n, nb);
    CHECK_EQ(first->where, PA_W_FULL);
    for (uint32_t i = 0; i < k; i++) {
        pa_free(b[i]);
        if (i + 1 < k && first->where != PA_W_FULL)
            CHECK(0, "a full page of %u blocks went back to avail after %u frees, not %u", nb, i + 1, k);
    }
    CHECK_EQ(first->where, PA_W_AVAIL);
    CHECK_EQ(first->used + first->used_bias, nb - k); /* the true count, unbiased */
    for (uint32_t i = k; i <= n; i++) pa_free(b[i]);
}

static void test_full_page_returns_after_a_fraction_is_free(void **state) {
    (void)state;
    in_thread(full_page, NULL);
}

/* ---- spare pages ---- */

enum { SPARE_SIZE = 256 };

typedef struct {
    steps st;
    void *blocks[4096];
    uint32_t nblocks;
    pa_page *pages[PA_SPARE_MAX + 2];
} spare_state;

static void free_page_blocks(spare_state *s, uint32_t page) {
    uint32_t nb = blocks_of(SPARE_SIZE);
    for (uint32_t i = page * nb; i < (page + 1) * nb; i++) pa_free(s->blocks[i]);
}

static void spare_worker(void *arg) {
    spare_state *s = arg;
    uint32_t nb = blocks_of(SPARE_SIZE), npages = PA_SPARE_MAX + 2;
    /* npages full pages, and a current one */
    for (s->nblocks = 0; s->nblocks < npages * nb + 1; s->nblocks++) {
        s->blocks[s->nblocks] = pa_malloc(SPARE_SIZE);
        CHECK(s->blocks[s->nblocks] != NULL, "NULL");
    }
    for (uint32_t p = 0; p < npages; p++) {
        s->pages[p] = page_of(s->blocks[p * nb]);
        CHECK_EQ(page_of(s->blocks[(p + 1) * nb - 1]), s->pages[p]);
    }
    sem_post(&s->st.done);
    sem_wait(&s->st.go); /* the main thread holds the pool lock now */
    pa_heap *h = pa_tls_heap;
    for (uint32_t p = 0; p < PA_SPARE_MAX; p++) {
        free_page_blocks(s, p);
        CHECK_EQ(s->pages[p]->where, PA_W_SPARE);
        CHECK_EQ(h->nspare, p + 1);
    }
    sem_post(&s->st.done);
    sem_wait(&s->st.go); /* the lock is free again */
    free_page_blocks(s, PA_SPARE_MAX); /* one more empty page: the spares are full, so to the pool */
    pa_page *pooled = s->pages[PA_SPARE_MAX];
    CHECK(pooled->where == PA_W_DIRTY || pooled->where == PA_W_CLEAN, "false");
    CHECK_EQ(h->nspare, PA_SPARE_MAX);
    /* The next pages this heap starts are its spares, newest first: classes it has no page of. */
    void *q[PA_SPARE_MAX];
    for (uint32_t i = 0; i < PA_SPARE_MAX; i++) {
        q[i] = pa_malloc(SPARE_SIZE + 16 * (i + 1));
        CHECK_EQ(page_of(q[i]), s->pages[PA_SPARE_MAX - 1 - i]);
    }
    CHECK_EQ(h->nspare, 0);
    for (uint32_t i = 0; i < PA_SPARE_MAX; i++) pa_free(q[i]);
    free_page_blocks(s, PA_SPARE_MAX + 1);
    pa_free(s->blocks[npages * nb]);
}

static void *spare_thread(void *arg) {
    spare_worker(arg);
    return NULL;
}

static void test_empty_pages_kept_as_spares_without_the_pool_lock(void **state) {
    (void)state;
    assert_true(pa_ready());
    static spare_state s;
    pthread_t t = start_steps(spare_thread, &s, &s.st);
    pa_pool_trim(); /* no dirty page left to expire: nothing has a reason to take the lock */
    pthread_mutex_lock(&pa_pool_lock);
    sem_post(&s.st.go);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    int waited = sem_timedwait(&s.st.done, &until);
    pthread_mutex_unlock(&pa_pool_lock);
    if (waited != 0) {
        sem_wait(&s.st.done);
        fail_msg("keeping an empty page as a spare waited for the pool lock");
    }
    sem_post(&s.st.go);
    assert_int_equal(pthread_join(t, NULL), 0);
}

/* ---- an idle class's empty page goes to the next class that needs one ---- */

static void idle_steal(void *arg) {
    (void)arg;
    void *p = pa_malloc(16);
    pa_heap *h = pa_tls_heap; /* made by that first malloc */
    pa_page *idle = page_of(p);
    pa_free(p); /* empty, and still the current page of its class */
    CHECK_EQ(idle->where, PA_W_AVAIL);
    CHECK_EQ(h->direct[16], idle);
    /* PA_IDLE_EPOCHS pages started for other classes: none of them may take it yet */
    void *q[PA_IDLE_EPOCHS + 1];
    for (uint32_t i = 0; i < PA_IDLE_EPOCHS; i++) {
        q[i] = pa_malloc(32 + 16 * i);
        if (page_of(q[i]) == idle)
            CHECK(0, "the empty page of a class idle for %u new pages was taken (needs %u)", i, PA_IDLE_EPOCHS);
    }
    /* the next class that needs a page takes it: it is resident already */
    size_t size = 32 + 16 * PA_IDLE_EPOCHS;
    q[PA_IDLE_EPOCHS] = pa_malloc(size);
    CHECK_EQ(page_of(q[PA_IDLE_EPOCHS]), idle);
    CHECK_EQ(idle->bsize, pa_class_size(pa_class_for(size)));
    CHECK(h->direct[16] != idle, "same pointer");
    p = pa_malloc(16); /* its old class starts a page of its own */
    CHECK(page_of(p) != idle, "same pointer");
    pa_free(p);
    for (uint32_t i = 0; i <= PA_IDLE_EPOCHS; i++) pa_free(q[i]);
}

static void test_idle_class_page_goes_to_the_next_class(void **state) {
    (void)state;
    in_thread(idle_steal, NULL);
}

/* ---- adoption on free ---- */

enum { ADOPT_SIZE = 128 };

typedef struct {
    void *b[3]; /* blocks a thread left when it exited */
    steps st;
} adopt_state;

static void leave_blocks(void *arg) {
    adopt_state *s = arg;
    for (int i = 0; i < 3; i++) s->b[i] = pa_malloc(ADOPT_SIZE);
}

static void free_without_the_class(void *arg) {
    adopt_state *s = arg;
    void *other = pa_malloc(64); /* a live heap, with no page of ADOPT_SIZE's class */
    pa_free(s->b[0]);
    pa_page *pg = page_of(s->b[1]);
    CHECK_EQ(pg->where, PA_W_ABANDONED);
    pa_heap *owner = atomic_load(&pg->heap);
    CHECK(owner == NULL, "abandoned, yet owned by %p", (void *)owner);
    pa_free(other);
}

static void *adopter(void *arg) {
    adopt_state *s = arg;
    void *mine = pa_malloc(ADOPT_SIZE); /* a page of the class, before any is abandoned */
    sem_post(&s->st.done);
    sem_wait(&s->st.go);
    pa_page *pg = page_of(s->b[1]);
    CHECK_EQ(pg->where, PA_W_ABANDONED);
    pa_free(s->b[1]);
    pa_heap *owner = atomic_load(&pg->heap);
    CHECK_EQ(owner, pa_tls_heap);
    CHECK_EQ(pg->where, PA_W_AVAIL);
    CHECK_EQ(pg->used + pg->used_bias, 1);
    pa_free(s->b[2]); /* now a local free */
    pa_free(mine);
    return NULL;
}

static void test_free_into_abandoned_page_adopts_it(void **state) {
    (void)state;
    static adopt_state s;
    pthread_t t = start_steps(adopter, &s, &s.st);
    in_thread(leave_blocks, &s);
    pa_page *pg = page_of(s.b[0]);
    assert_int_equal(pg->where, PA_W_ABANDONED);
    in_thread(free_without_the_class, &s); /* a thread that does not allocate the class: no adoption */
    sem_post(&s.st.go);
    assert_int_equal(pthread_join(t, NULL), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_page_returns_after_a_fraction_is_free),
        cmocka_unit_test(test_empty_pages_kept_as_spares_without_the_pool_lock),
        cmocka_unit_test(test_idle_class_page_goes_to_the_next_class),
        cmocka_unit_test(test_free_into_abandoned_page_adopts_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
