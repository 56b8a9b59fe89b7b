/* SPDX-License-Identifier: MIT
 * Per-thread heaps: the generic malloc slow path (find or make a page with a free block), what a
 * local free does when a page fills or empties, frees from other threads, thread exit (abandon) and
 * the adoption of abandoned pages by other heaps. Exports pa_malloc_slow, pa_free_local_slow,
 * pa_free_remote, pa_heap_thread_exit. See types.h for who may touch a page and when. */
#include "internal.h"

#include <string.h>

/* Its free list is empty: every direct[] slot of a heap with no page points here. */
static pa_page page_empty = { .free = (pa_block *)1 };

#define PA_EMPTY_DIRECT { [0 ... PA_NDIRECT - 1] = &page_empty }
pa_heap pa_heap_empty = { .direct = PA_EMPTY_DIRECT };
pa_heap pa_heap_dead = { .direct = PA_EMPTY_DIRECT };
__thread pa_heap *pa_tls_heap __attribute__((tls_model("initial-exec"))) = &pa_heap_empty;

pthread_mutex_t pa_heaps_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t pa_abandoned_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t pa_notify_lock = PTHREAD_MUTEX_INITIALIZER;

static pa_heap *heaps;                         /* every heap ever made (pa_heaps_lock) */
static pa_page_list abandoned[PA_NCLASS];      /* pa_abandoned_lock */
static _Atomic uint32_t abandoned_n[PA_NCLASS]; /* lengths, read without the lock as a hint */

/* Points every size that maps to cls at the head of avail[cls]. */
static void heap_refresh_direct(pa_heap *h, uint32_t cls) {
    pa_page *cur = pa_page_at(h->avail[cls].head);
    if (!cur) cur = &page_empty;
    uint32_t lo = pa_class_size_lo[cls], hi = pa_class_size_hi[cls]; /* loaded once: the stores below
                                                                         could alias them */
    if (h->direct[hi] == cur) return;
    for (uint32_t n = lo; n <= hi; n++) h->direct[n] = cur;
}

static uint64_t heap_key(pa_heap *h) {
    uint64_t z = (h->rng += 0x9e3779b97f4a7c15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

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
    }
    for (uint32_t n = 0; n < PA_NDIRECT; n++) h->direct[n] = &page_empty;
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

/* A FULL page goes back on avail only once 1/PA_FULL_RETURN of its blocks (at least one) are free
 * again: returning it at the first free would make a program that frees at random into packed
 * pages (any long-running churn) move a page to avail and back to full on every other malloc and
 * free. The FULL page keeps its owner, so its frees take the fast path, and its `used` is biased
 * so that the fast path's one test, `--used == 0`, fires at the K-th free instead of at the last:
 * used + used_bias is the true count. Only the owner biases and unbiases, and every slow path that
 * counts a FULL page's blocks (collect, unfull, abandon, stats) unbiases it first. */
static void page_bias(pa_page *pg) {
    uint32_t k = pa_class_blocks(pg->cls) / PA_FULL_RETURN;
    if (k == 0) k = 1;
    if (pg->used > k) {
        pg->used_bias = (uint16_t)(pg->used - k);
        pg->used = (uint16_t)k;
    }
}

static void page_unbias(pa_page *pg) {
    pg->used = (uint16_t)(pg->used + pg->used_bias);
    pg->used_bias = 0;
}

/* Pages that other threads freed into while they were FULL: back on avail (or re-armed). */
static void heap_make_full(pa_heap *h, pa_page *pg);

static void heap_take_notified(pa_heap *h) {
    pthread_mutex_lock(&pa_notify_lock);
    uint32_t list = atomic_load_explicit(&h->notified, memory_order_relaxed);
    atomic_store_explicit(&h->notified, 0, memory_order_relaxed);
    for (uint32_t l = list; l; l = pa_page_at(l)->notify_next)
        atomic_store_explicit(&pa_page_at(l)->fullstate, PA_FS_NONE, memory_order_seq_cst);
    pthread_mutex_unlock(&pa_notify_lock);
    while (list) {
        pa_page *pg = pa_page_at(list);
        list = pg->notify_next;
        if (pa_load_relaxed(&pg->heap) != h || pg->where != PA_W_FULL) continue;
        page_unbias(pg);
        pa_page_collect(pg);
        if (!pa_list_is_end(pg->free)) {
            pa_heap_unfull(h, pg);
        } else {
            heap_make_full(h, pg); /* re-arm the notification */
        }
    }
}

/* pg is on h->full: ask remote freers to tell us, then look once more (store-load order: a freer
 * pushes then reads fullstate; we write fullstate then read thread_free, so one of us sees the
 * other). Leaves the page on avail if blocks came back. */
static void heap_make_full(pa_heap *h, pa_page *pg) {
    uint8_t expect = PA_FS_NONE;
    atomic_compare_exchange_strong(&pg->fullstate, &expect, PA_FS_FULL); /* NOTIFIED: already queued */
    if (atomic_load(&pg->thread_free) != NULL) {
        pa_page_collect(pg);
        pa_heap_unfull(h, pg);
        /* now the head of avail, so that heap_find_page takes it */
        if (h->avail[pg->cls].head != pa_page_link(pg)) {
            pa_page_list_unlink(&h->avail[pg->cls], pg);
            pa_page_list_push(&h->avail[pg->cls], pg);
            heap_refresh_direct(h, pg->cls);
        }
        return;
    }
    page_bias(pg);
}

static void heap_page_to_full(pa_heap *h, pa_page *pg) {
    pa_page_list_unlink(&h->avail[pg->cls], pg);
    pg->where = PA_W_FULL;
    pa_page_list_push(&h->full, pg);
    heap_refresh_direct(h, pg->cls);
    heap_make_full(h, pg);
}

static pa_page *heap_adopt(pa_heap *h, uint32_t cls) {
    if (!pa_load_relaxed(&abandoned_n[cls])) return NULL;
    pthread_mutex_lock(&pa_abandoned_lock);
    pa_page *pg = pa_page_at(abandoned[cls].head);
    if (pg) {
        pa_page_list_unlink(&abandoned[cls], pg);
        atomic_fetch_sub_explicit(&abandoned_n[cls], 1, memory_order_relaxed);
        pg->where = PA_W_AVAIL;
        atomic_store_explicit(&pg->heap, h, memory_order_release);
    }
    pthread_mutex_unlock(&pa_abandoned_lock);
    if (pg) {
        h->stats.adopted++;
        pa_page_list_push(&h->avail[cls], pg);
        heap_refresh_direct(h, cls);
    }
    return pg;
}

/* An empty page that is the current page of another class. A class keeps its current page when it
 * empties (malloc-free-malloc of one block must not churn pages), but a program that moves from
 * size to size would keep one resident page per class it ever used; the next class that needs a
 * page takes one of those instead. */
static pa_page *heap_take_idle(pa_heap *h, uint32_t cls) {
    for (uint64_t todo = h->idle; todo; todo &= todo - 1) {
        uint32_t c = (uint32_t)__builtin_ctzll(todo);
        pa_page *pg = pa_page_at(h->avail[c].head);
        if (c == cls || !pg || pg->used != 0) { /* in use again since it emptied */
            h->idle &= ~((uint64_t)1 << c);
            continue;
        }
        /* Only a class the program has left: one that empties and refills (a realloc'd buffer
         * moving up through the classes) would otherwise trade pages back and forth, carving them
         * afresh each time. */
        if (h->epoch - h->idle_since[c] < PA_IDLE_EPOCHS) continue;
        h->idle &= ~((uint64_t)1 << c);
        pa_page_list_unlink(&h->avail[c], pg);
        heap_refresh_direct(h, c);
        pa_page_retire(pg);
        return pg;
    }
    return NULL;
}

/* A page of class cls with a free block, made current; NULL when the reservation is exhausted. */
static pa_page *heap_find_page(pa_heap *h, uint32_t cls) {
    for (;;) {
        pa_page *pg = pa_page_at(h->avail[cls].head);
        while (pg) {
            pa_page_collect(pg);
            if (!pa_list_is_end(pg->free) || pa_page_extend(pg)) {
                if (h->avail[cls].head != pa_page_link(pg)) {
                    pa_page_list_unlink(&h->avail[cls], pg);
                    pa_page_list_push(&h->avail[cls], pg);
                    heap_refresh_direct(h, cls);
                }
                return pg;
            }
            pa_page *next = pa_page_at(pg->next);
            heap_page_to_full(h, pg);
            if (pg->where == PA_W_AVAIL) return pg; /* remote frees arrived meanwhile: now the head */
            pg = next;
        }
        if (pa_load_relaxed(&h->notified)) {
            heap_take_notified(h);
            if (h->avail[cls].head) continue;
        }
        if (heap_adopt(h, cls)) continue;
        if ((pg = heap_take_idle(h, cls)) != NULL) {
            /* an empty current page of a class this thread stopped using: already resident */
        } else if (h->spare.head) {
            pg = pa_page_at(h->spare.head);
            pa_page_list_unlink(&h->spare, pg);
            h->nspare--;
            pa_pool_tick(); /* a new page: a moment to give back pool pages that waited out the delay */
        } else {
            pg = pa_pool_take();
            if (!pg) return NULL;
        }
        h->epoch++;
        pa_page_init(pg, h, cls, heap_key(h));
        pa_page_list_push(&h->avail[cls], pg);
        heap_refresh_direct(h, cls);
        pa_page_extend(pg);
        return pg;
    }
}

pa_heap *pa_heap_attach(void) {
    pa_heap *h = pa_tls_heap;
    if (h == &pa_heap_dead) return NULL; /* after this thread's exit hook: nothing would reclaim a heap */
    if (h != &pa_heap_empty) return h;
    if (!pa_ready() || !(h = heap_create())) return NULL;
    pa_tls_heap = h; /* before setspecific, which may itself call malloc */
    pthread_setspecific(pa_thread_key, h);
    return h;
}

void *pa_malloc_slow(pa_heap *h, size_t size) {
    if (h == &pa_heap_empty || h == &pa_heap_dead) {
        if (!(h = pa_heap_attach())) return pa_sys_malloc(size);
    }
    uint32_t cls = pa_class_for(size);
    pa_page *pg = heap_find_page(h, cls);
    if (!pg) return pa_sys_malloc(size);
    pa_block *b = pg->free;
    pa_assert(!pa_list_is_end(b));
    pa_block_pop(pg, b);
    pg->used++;
    PA_STAT(h->nalloc[size]++);
    return b;
}

/* Release an empty page that is not the current one of its class. */
static void heap_release(pa_heap *h, pa_page *pg) {
    if (atomic_load(&pg->fullstate) == PA_FS_NOTIFIED) heap_take_notified(h); /* unqueue it first */
    pa_page_list_unlink(&h->avail[pg->cls], pg);
    heap_refresh_direct(h, pg->cls);
    atomic_store_explicit(&pg->heap, NULL, memory_order_relaxed);
    if (h->nspare < PA_SPARE_MAX) { /* kept for this heap's next page: no pool lock either way */
        pa_page_retire(pg);
        pg->where = PA_W_SPARE;
        pa_page_list_push(&h->spare, pg);
        h->nspare++;
        return;
    }
    pa_pool_give(pg);
}

/* pg onto h's avail list, behind the current page, which stays current (or as the current page
 * if there is none). */
static void heap_insert_avail(pa_heap *h, pa_page *pg) {
    uint32_t cls = pg->cls;
    pg->where = PA_W_AVAIL;
    pa_page *head = pa_page_at(h->avail[cls].head);
    if (head) {
        pg->prev = pa_page_link(head);
        pg->next = head->next;
        if (head->next) pa_page_at(head->next)->prev = pa_page_link(pg);
        head->next = pa_page_link(pg);
    } else {
        pa_page_list_push(&h->avail[cls], pg);
        heap_refresh_direct(h, cls);
    }
}

/* A FULL page of h got a block back: onto avail, behind the current page. */
void pa_heap_unfull(pa_heap *h, pa_page *pg) {
    page_unbias(pg);
    pa_page_list_unlink(&h->full, pg);
    heap_insert_avail(h, pg);
    uint8_t expect = PA_FS_FULL;
    atomic_compare_exchange_strong(&pg->fullstate, &expect, PA_FS_NONE);
}

void pa_free_local_slow(pa_heap *h, pa_page *pg) {
    if (pg->where == PA_W_FULL) pa_heap_unfull(h, pg);
    /* An empty current page stays: a thread that mallocs and frees one block must not churn pages
     * (until another class needs a page: heap_take_idle). */
    if (pg->used == 0) {
        if (h->avail[pg->cls].head != pa_page_link(pg)) heap_release(h, pg);
        else {
            h->idle |= (uint64_t)1 << pg->cls;
            h->idle_since[pg->cls] = h->epoch;
        }
        pa_pool_tick(); /* a page emptied: pool pages that waited out the delay can go now */
    }
}

/* ---- frees of pages this thread does not own ---- */

static void free_notify(pa_page *pg) {
    pthread_mutex_lock(&pa_notify_lock);
    pa_heap *owner = pa_load_relaxed(&pg->heap);
    if (owner && atomic_load(&pg->fullstate) == PA_FS_FULL) {
        atomic_store(&pg->fullstate, PA_FS_NOTIFIED);
        pg->notify_next = atomic_load_explicit(&owner->notified, memory_order_relaxed);
        atomic_store_explicit(&owner->notified, pa_page_link(pg), memory_order_relaxed);
    }
    pthread_mutex_unlock(&pa_notify_lock);
}

static void free_abandoned(pa_page *pg, pa_block *b);

void pa_free_remote(pa_page *pg, pa_block *b) {
    pa_heap *owner = atomic_load_explicit(&pg->heap, memory_order_acquire);
    if (!owner) {
        free_abandoned(pg, b);
        return;
    }
    uintptr_t poff = (uintptr_t)b & PA_PAGE_MASK;
    if (pa_unlikely(!pa_block_is_start(pg, poff))) pa_free_invalid("free", b);
    /* No way to walk the owner's free list from here: a first word that decodes like a free link
     * (1 in 2^50 for live data, the key being secret) is taken as the double free it almost surely is. */
    if (pa_unlikely(pa_block_looks_free(pg, b))) pa_fatal("free(): double free detected", b);
    pa_block *head = atomic_load_explicit(&pg->thread_free, memory_order_relaxed);
    do {
        pa_block_set_next(pg, b, head ? head : pa_list_end(pg));
    } while (!atomic_compare_exchange_weak_explicit(&pg->thread_free, &head, b, memory_order_seq_cst,
                                                    memory_order_relaxed));
    if (pa_unlikely(atomic_load(&pg->fullstate) == PA_FS_FULL)) free_notify(pg);
    pa_heap *me = pa_tls_heap;
    if (me->live) me->stats.remote_frees++;
    else atomic_fetch_add_explicit(&pa_orphan_remote_frees, 1, memory_order_relaxed);
}

static void free_abandoned(pa_page *pg, pa_block *b) {
    pthread_mutex_lock(&pa_abandoned_lock);
    if (pa_load_relaxed(&pg->heap)) { /* adopted meanwhile */
        pthread_mutex_unlock(&pa_abandoned_lock);
        pa_free_remote(pg, b);
        return;
    }
    if (pg->where != PA_W_ABANDONED) {
        pthread_mutex_unlock(&pa_abandoned_lock);
        pa_fatal("free(): double free or invalid pointer (page not in use)", b);
    }
    if (!pa_block_is_start(pg, (uintptr_t)b & PA_PAGE_MASK)) {
        pthread_mutex_unlock(&pa_abandoned_lock);
        pa_free_invalid("free", b);
    }
    pa_page_collect(pg);
    if (pa_block_looks_free(pg, b) && pa_block_list_contains(pg, pg->free, b)) {
        pthread_mutex_unlock(&pa_abandoned_lock);
        pa_fatal("free(): double free detected", b);
    }
    pa_block_push(pg, b);
    pg->used--;
    pa_heap *me = pa_tls_heap;
    /* Adopt only into a heap that allocates this class: an owner collects its pages' remote frees
     * when it allocates, so a thread that only frees (a main thread reaping its workers) would hold
     * the page for ever while other threads' frees piled up on it. */
    bool adopt = me->live && me->avail[pg->cls].head != 0;
    if (pg->used == 0 || adopt) {
        pa_page_list_unlink(&abandoned[pg->cls], pg);
        atomic_fetch_sub_explicit(&abandoned_n[pg->cls], 1, memory_order_relaxed);
    }
    if (pg->used == 0) {
        pa_pool_give(pg);
    } else if (adopt) {
        /* Adopt it: this thread is freeing what a dead one allocated (a server's request
         * objects), and the next frees into the page should be local ones, not a trip through this
         * lock. Its free blocks serve this thread's mallocs of the class. */
        atomic_store_explicit(&pg->heap, me, memory_order_release);
        me->stats.adopted++;
        pthread_mutex_unlock(&pa_abandoned_lock);
        heap_insert_avail(me, pg);
        return;
    }
    pthread_mutex_unlock(&pa_abandoned_lock);
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
            page_unbias(pg);
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
    for (uint32_t n = 0; n < PA_NDIRECT; n++) h->direct[n] = &page_empty;
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
}
