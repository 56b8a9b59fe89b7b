/* SPDX-License-Identifier: MIT
 * Per-thread heaps: the thread's heap pointer (TLS) and the two sentinel heaps it points to before
 * the thread has a heap and after its exit hook, the registry of every heap, attaching a heap to a
 * thread (at its first small block, or its first passthrough request when counters are on), the
 * per-class lists of abandoned pages and their adoption, and thread exit (abandon).
 * Exports pa_tls_heap, pa_heap_empty, pa_heap_dead, the heaps, abandoned and notify locks,
 * pa_heap_attach, pa_heap_first, pa_heap_adopt, pa_heap_adopt_page, pa_heap_unabandon,
 * and pa_heap_thread_exit. */
#include "internal.h"

#include <string.h>

#define PA_EMPTY_DIRECT { [0 ... PA_NDIRECT - 1] = &pa_page_empty }
pa_heap pa_heap_empty = { .direct = PA_EMPTY_DIRECT };
pa_heap pa_heap_dead = { .direct = PA_EMPTY_DIRECT };
__thread pa_heap *pa_tls_heap __attribute__((tls_model("initial-exec"))) = &pa_heap_empty;

pthread_mutex_t pa_heaps_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t pa_abandoned_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t pa_notify_lock = PTHREAD_MUTEX_INITIALIZER;

static pa_heap *heaps;                         /* every heap ever made (pa_heaps_lock) */
static pa_page_list abandoned[PA_NCLASS];      /* pa_abandoned_lock */
static _Atomic uint32_t abandoned_n[PA_NCLASS]; /* lengths, read without the lock as a hint */

/* ---- heaps ---- */

static pa_heap *heap_create(void) {
    static char *chunk;
    static size_t chunk_left;
    pthread_mutex_lock(&pa_heaps_lock);
    pa_heap *h = heaps;
    while (h && h->live) h = h->next_heap;
    if (!h) {
        size_t sz = (sizeof(pa_heap) + 63) & ~(size_t)63;
        if (chunk_left < sz) {
            chunk_left = PA_HEAP_CHUNK;
            chunk = pa_os_map(chunk_left);
            if (!chunk) {
                chunk_left = 0;
                pthread_mutex_unlock(&pa_heaps_lock);
                return NULL;
            }
        }
        h = (pa_heap *)chunk;
        chunk += sz;
        chunk_left -= sz;
        memset(h, 0, sizeof *h);
        h->next_heap = heaps;
        heaps = h;
        h->rng = (uint64_t)(uintptr_t)h ^ ((uint64_t)__builtin_ia32_rdtsc() << 17);
        pa_sample_heap_init(h);
    }
    for (uint32_t n = 0; n < PA_NDIRECT; n++) h->direct[n] = &pa_page_empty;
    memset(h->avail, 0, sizeof h->avail);
    h->full = (pa_page_list){0, 0};
    h->idle = 0;
    atomic_store_explicit(&h->notified, 0, memory_order_relaxed);
    h->rng ^= (uint64_t)__builtin_ia32_rdtsc();
    h->live = 1;
    pthread_mutex_unlock(&pa_heaps_lock);
    return h;
}

pa_heap *pa_heap_first(void) { return heaps; }

pa_heap *pa_heap_attach(void) {
    pa_heap *h = pa_tls_heap;
    if (h == &pa_heap_dead) return NULL; /* after this thread's exit hook: nothing would reclaim a heap */
    if (h != &pa_heap_empty) return h;
    if (!pa_ready() || !(h = heap_create())) return NULL;
    pa_tls_heap = h; /* before setspecific, which may itself call malloc */
    pthread_setspecific(pa_thread_key, h);
    pa_bg_poll(PA_BG_SAFE); /* a new thread: under PYALLOC_BACKGROUND=auto a helper may now start */
    return h;
}

/* ---- abandoned pages, and their adoption ---- */

/* pg off its abandoned list, for the pool or for adoption. Under pa_abandoned_lock. */
void pa_heap_unabandon(pa_page *pg) {
    pa_page_list_unlink(&abandoned[pg->cls], pg);
    atomic_fetch_sub_explicit(&abandoned_n[pg->cls], 1, memory_order_relaxed);
}

/* pg, abandoned, becomes h's. Under pa_abandoned_lock; the caller puts it on one of h's lists. */
void pa_heap_adopt_page(pa_heap *h, pa_page *pg) {
    pa_heap_unabandon(pg);
    pg->where = PA_W_AVAIL;
    atomic_store_explicit(&pg->heap, h, memory_order_release);
    h->stats.adopted++;
}

/* An abandoned page of class cls, now h's, or NULL. */
pa_page *pa_heap_adopt(pa_heap *h, uint32_t cls) {
    if (!pa_load_relaxed(&abandoned_n[cls])) return NULL;
    pthread_mutex_lock(&pa_abandoned_lock);
    pa_page *pg = pa_page_at(abandoned[cls].head);
    if (pg) pa_heap_adopt_page(h, pg);
    pthread_mutex_unlock(&pa_abandoned_lock);
    return pg;
}

/* ---- thread exit ---- */

static void heap_abandon(pa_heap *h) {
    pthread_mutex_lock(&pa_abandoned_lock);
    /* First detach every page from h, so remote freers stop pushing and queueing for it ... */
    pthread_mutex_lock(&pa_notify_lock);
    for (uint32_t c = 0; c <= PA_NCLASS; c++) {
        uint32_t l = c < PA_NCLASS ? h->avail[c].head : h->full.head;
        for (; l; l = pa_page_at(l)->next) {
            pa_page *pg = pa_page_at(l);
            atomic_store_explicit(&pg->heap, NULL, memory_order_release);
            atomic_store(&pg->fullstate, PA_FS_NONE);
        }
    }
    atomic_store_explicit(&h->notified, 0, memory_order_relaxed);
    pthread_mutex_unlock(&pa_notify_lock);
    /* ... then give back the empty ones and leave the rest to whoever needs their class next. */
    for (uint32_t c = 0; c <= PA_NCLASS; c++) {
        uint32_t l = c < PA_NCLASS ? h->avail[c].head : h->full.head;
        while (l) {
            pa_page *pg = pa_page_at(l);
            l = pg->next;
            pa_page_unbias(pg);
            pa_page_collect(pg);
            if (pg->used == 0) {
                pg->next = pg->prev = 0;
                pa_pool_give(pg);
            } else {
                pg->where = PA_W_ABANDONED;
                pa_page_list_push(&abandoned[pg->cls], pg);
                atomic_fetch_add_explicit(&abandoned_n[pg->cls], 1, memory_order_relaxed);
            }
        }
        if (c < PA_NCLASS) h->avail[c] = (pa_page_list){0, 0};
    }
    h->full = (pa_page_list){0, 0};
    while (h->spare.head) {
        pa_page *pg = pa_page_at(h->spare.head);
        pa_page_list_unlink(&h->spare, pg);
        pa_pool_give(pg);
    }
    h->nspare = 0;
    h->idle = 0;
    for (uint32_t n = 0; n < PA_NDIRECT; n++) h->direct[n] = &pa_page_empty;
    pthread_mutex_unlock(&pa_abandoned_lock);
    pa_pool_tick();
}

void pa_heap_thread_exit(void *arg) {
    pa_heap *h = arg;
    if (!h || h == &pa_heap_empty || h == &pa_heap_dead) return;
    pa_tls_heap = &pa_heap_dead; /* later mallocs of this thread go to the system allocator */
    heap_abandon(h);
    pthread_mutex_lock(&pa_heaps_lock);
    h->live = 0;
    pthread_mutex_unlock(&pa_heaps_lock);
    pa_bg_poll(PA_BG_SAFE); /* a key destructor runs with no lock of glibc's held */
}
