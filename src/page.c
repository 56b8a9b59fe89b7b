/* SPDX-License-Identifier: MIT
 * Pages: one page's blocks (set a page up for a size class, carve fresh blocks from its untouched
 * tail, take in the blocks other threads freed into it), and a heap's pages (its avail, full and
 * spare lists and direct[] table): the malloc slow path that finds or starts a page with a free
 * block, the FULL-page protocol (bias, and the notification remote freers send), the idle-class
 * and spare-page policies, and what becomes of a page that empties.
 * Exports pa_page_init, pa_page_retire, pa_page_extend, pa_page_collect, pa_block_list_contains,
 * pa_page_empty, pa_malloc_slow, pa_page_unbias, pa_page_unfull, pa_page_emptied,
 * pa_page_insert_avail, pa_page_sweep, pa_page_notify, and pa_page_detach and pa_page_attach for mesh.c. Only the page's owner (or a holder of abandoned_lock,
 * for an abandoned page) calls these, but for pa_page_notify. See types.h for who may touch a
 * page and when. */
#include "internal.h"

/* Its free list is empty: every direct[] slot of a heap with no page of that size points here. */
pa_page pa_page_empty = {.free = (pa_block *)1};

void pa_page_init(pa_page *pg, pa_heap *h, uint32_t cls, uint64_t key) {
    uint32_t bsize = pa_class_size(cls);
    pg->key = (uintptr_t)key;
    pg->free = pa_list_end(pg);
    pg->magic = pa_block_magic(bsize);
    pg->start_magic = (uint64_t)pa_page_start(pg) * pg->magic;
    pa_store_relaxed(&pg->thresh, 0);
    pg->used = 0;
    pg->bsize = (uint16_t)bsize;
    pa_store_relaxed(&pg->bump, 0);
    pg->cls = (uint8_t)cls;
    pa_stat_page(cls, 1);
    pg->where = PA_W_AVAIL;
    atomic_store_explicit(&pg->fullstate, PA_FS_NONE, memory_order_relaxed);
    atomic_store_explicit(&pg->thread_free, NULL, memory_order_relaxed);
    pg->next = pg->prev = pg->notify_next = 0;
    atomic_store_explicit(&pg->heap, h, memory_order_release);
}

bool pa_page_extend(pa_page *pg) {
    uint32_t bsize = pg->bsize;
    uint32_t cap = pa_class_blocks(pg->cls) * bsize;
    uint32_t bump = pa_load_relaxed(&pg->bump);
    if (bump >= cap) return false;
    /* Carve every block that starts before the next 4 KiB boundary (at least one). */
    uint32_t end = (bump + PA_CARVE) & ~(uint32_t)(PA_CARVE - 1);
    if (end > cap) end = cap;
    uint32_t n = (end - bump + bsize - 1) / bsize;
    if (bump + n * bsize > cap) n = (cap - bump) / bsize;
    char *start = (char *)pa_page_start(pg) + bump;
    pa_block *after = pg->free;
    for (uint32_t i = n; i-- > 0;) {
        pa_block *b = (pa_block *)(start + (size_t)i * bsize);
        pa_block_set_next(pg, b, after);
        after = b;
    }
    pg->free = after;
    bump += n * bsize;
    pa_store_relaxed(&pg->bump, bump);
    pa_store_relaxed(&pg->thresh, pa_block_thresh(pg->magic, bsize, bump / bsize));
    return true;
}

uint32_t pa_page_collect(pa_page *pg) {
    if (!atomic_load_explicit(&pg->thread_free, memory_order_relaxed)) return 0;
    pa_block *head = atomic_exchange_explicit(&pg->thread_free, NULL, memory_order_acquire);
    if (!head) return 0;
    /* Remote freers push only block starts they checked, so a bad link here is a write into a
     * freed block; so is a list longer than the page holds (a link pointing back into the list). */
    if (pa_unlikely(!pa_block_in_page(pg, head))) pa_list_damaged(pg);
    uint32_t n = 1;
    pa_block *tail = head;
    for (pa_block *nx; (nx = pa_block_next_checked(pg, tail)) != pa_list_end(pg); tail = nx) {
        if (pa_unlikely(++n > pa_class_blocks(pg->cls))) pa_list_damaged(pg);
    }
    pa_block_set_next(pg, tail, pg->free);
    pg->free = head;
    pa_assert(pg->used >= n);
    pg->used = (uint16_t)(pg->used - n);
    return n;
}

bool pa_block_list_contains(const pa_page *pg, pa_block *list, const pa_block *b) {
    if (!list || list == pa_list_end(pg)) return false;
    if (pa_unlikely(!pa_block_in_page(pg, list))) pa_list_damaged(pg);
    for (uint32_t i = 0; i < pa_class_blocks(pg->cls); i++) {
        if (list == b) return true;
        if ((list = pa_block_next_checked(pg, list)) == pa_list_end(pg)) return false;
    }
    pa_list_damaged(pg); /* longer than the page holds: a link points back into the list */
}

void pa_page_retire(pa_page *pg) {
    if (pg->bsize) pa_stat_page(pg->cls, -1);
    pg->bsize = 0;
    pg->free = (pa_block *)1;
    pg->used = 0;
    pa_store_relaxed(&pg->thresh, 0); /* no offset is a block start: frees into it are refused */
}

/* ---- a heap's pages ---- */

/* Points every size that maps to cls at the head of avail[cls]. */
static void queue_refresh_direct(pa_heap *h, uint32_t cls) {
    pa_page *cur = pa_page_at(h->avail[cls].head);
    if (!cur) cur = &pa_page_empty;
    uint32_t lo = pa_class_size_lo[cls], hi = pa_class_size_hi[cls]; /* loaded once: the stores below
                                                                         could alias them */
    if (h->direct[hi] == cur) return;
    for (uint32_t n = lo; n <= hi; n++) h->direct[n] = cur;
}

/* pg, on h's avail list, becomes the current page of its class. */
static void queue_make_current(pa_heap *h, pa_page *pg) {
    pa_page_list *l = &h->avail[pg->cls];
    if (l->head == pa_page_link(pg)) return;
    pa_page_list_unlink(l, pg);
    pa_page_list_push(l, pg);
    queue_refresh_direct(h, pg->cls);
}

/* pg onto h's avail list, behind the current page, which stays current (or as the current page
 * if there is none). */
void pa_page_insert_avail(pa_heap *h, pa_page *pg) {
    pa_page_list *l = &h->avail[pg->cls];
    pg->where = PA_W_AVAIL;
    pa_page *head = pa_page_at(l->head);
    if (head) {
        pa_page_list_insert_after(l, head, pg);
    } else {
        pa_page_list_push(l, pg);
        queue_refresh_direct(h, pg->cls);
    }
}

static uint64_t queue_key(pa_heap *h) {
    uint64_t z = (h->rng += 0x9e3779b97f4a7c15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A FULL page goes back on avail only once 1/PA_FULL_RETURN of its blocks (at least one) are free
 * again: returning it at the first free would make a program that frees at random into packed
 * pages (any long-running churn) move a page to avail and back to full on every other malloc and
 * free. The FULL page keeps its owner, so its frees take the fast path, and its `used` is biased
 * so that the fast path's one test, `--used == 0`, fires at the K-th free instead of at the last:
 * used + used_bias is the true count. Only the owner biases and unbiases, and every slow path that
 * counts a FULL page's blocks (collect, unfull, abandon, stats) unbiases it first. */
static void queue_bias(pa_page *pg) {
    uint32_t k = pa_class_blocks(pg->cls) / PA_FULL_RETURN;
    if (k == 0) k = 1;
    if (pg->used > k) {
        pg->used_bias = (uint16_t)(pg->used - k);
        pg->used = (uint16_t)k;
    }
}

void pa_page_unbias(pa_page *pg) {
    pg->used = (uint16_t)(pg->used + pg->used_bias);
    pg->used_bias = 0;
}

/* PYALLOC_MESH: an avail page reports to mesh.c (a slow-path event) when its blocks out fall to a
 * quarter: the same bias, used + used_bias being the true count, with the fast path's `--used == 0`
 * firing at the mark. Unbiased before anything else counts its blocks (queue_find). */
static void queue_sparse_arm(pa_page *pg) {
    uint32_t mark = pa_class_blocks(pg->cls) / 4;
    if (mark && pg->used > mark) {
        pg->used_bias = (uint16_t)mark;
        pg->used = (uint16_t)(pg->used - mark);
    }
}

/* A FULL page of h got a block back: onto avail, behind the current page. */
void pa_page_unfull(pa_heap *h, pa_page *pg) {
    pa_page_unbias(pg);
    pa_page_list_unlink(&h->full, pg);
    pa_page_insert_avail(h, pg);
    uint8_t expect = PA_FS_FULL;
    atomic_compare_exchange_strong(&pg->fullstate, &expect, PA_FS_NONE);
    if (pa_opt.mesh) queue_sparse_arm(pg);
}

/* pg is on h->full: ask remote freers to tell us, then look once more (store-load order: a freer
 * pushes then reads fullstate; we write fullstate then read thread_free, so one of us sees the
 * other). Leaves the page on avail, as the current page, if blocks came back. */
static void queue_make_full(pa_heap *h, pa_page *pg) {
    uint8_t expect = PA_FS_NONE;
    atomic_compare_exchange_strong(&pg->fullstate, &expect, PA_FS_FULL); /* NOTIFIED: already queued */
    if (atomic_load(&pg->thread_free) != NULL) {
        pa_page_collect(pg);
        pa_page_unfull(h, pg);
        queue_make_current(h, pg); /* so that queue_find takes it */
        return;
    }
    queue_bias(pg);
}

static void queue_to_full(pa_heap *h, pa_page *pg) {
    pa_page_list_unlink(&h->avail[pg->cls], pg);
    pg->where = PA_W_FULL;
    pa_page_list_push(&h->full, pg);
    queue_refresh_direct(h, pg->cls);
    queue_make_full(h, pg);
}

/* A remote free landed in pg while it was FULL: queue it on its owner's notified list, once per
 * fill cycle (fullstate FULL -> NOTIFIED, under notify_lock). */
void pa_page_notify(pa_page *pg) {
    pthread_mutex_lock(&pa_notify_lock);
    pa_heap *owner = pa_load_relaxed(&pg->heap);
    if (owner && atomic_load(&pg->fullstate) == PA_FS_FULL) {
        atomic_store(&pg->fullstate, PA_FS_NOTIFIED);
        pg->notify_next = atomic_load_explicit(&owner->notified, memory_order_relaxed);
        atomic_store_explicit(&owner->notified, pa_page_link(pg), memory_order_relaxed);
    }
    pthread_mutex_unlock(&pa_notify_lock);
}

/* Pages that other threads freed into while they were FULL: back on avail (or re-armed). */
static void queue_take_notified(pa_heap *h) {
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
        pa_page_unbias(pg);
        pa_page_collect(pg);
        if (pa_unlikely(!pa_list_head_ok(pg))) pa_list_damaged(pg);
        if (pg->free != pa_list_end(pg)) {
            pa_page_unfull(h, pg);
        } else {
            queue_make_full(h, pg); /* re-arm the notification */
        }
    }
}

/* An empty page that is the current page of another class. A class keeps its current page when it
 * empties (malloc-free-malloc of one block must not churn pages), but a program that moves from
 * size to size would keep one resident page per class it ever used; the next class that needs a
 * page takes one of those instead. */
static pa_page *queue_take_idle(pa_heap *h, uint32_t cls) {
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
        queue_refresh_direct(h, c);
        pa_page_retire(pg);
        return pg;
    }
    return NULL;
}

/* A page of class cls with a free block, made current; NULL when the reservation is exhausted.
 * In order: h's pages of the class, those remote frees refilled while FULL, an abandoned page of
 * the class, the empty page of a class h has left, a spare page, a page from the pool. */
static pa_page *queue_find(pa_heap *h, uint32_t cls) {
    for (;;) {
        pa_page *pg = pa_page_at(h->avail[cls].head);
        while (pg) {
            pa_page_unbias(pg); /* a sparse mark (mesh) */
            pa_page_collect(pg);
            if (pa_unlikely(!pa_list_head_ok(pg))) pa_list_damaged(pg);
            if (pg->free != pa_list_end(pg) || pa_page_extend(pg)) {
                queue_make_current(h, pg);
                return pg;
            }
            pa_page *next = pa_page_at(pg->next);
            queue_to_full(h, pg);
            if (pg->where == PA_W_AVAIL) return pg; /* remote frees arrived meanwhile: now the head */
            pg = next;
        }
        if (pa_load_relaxed(&h->notified)) {
            queue_take_notified(h);
            if (h->avail[cls].head) continue;
        }
        pa_stat_growth(h); /* a page from elsewhere: memory may have grown (monitor.c) */
        if ((pg = pa_heap_adopt(h, cls)) != NULL) {
            pa_page_list_push(&h->avail[cls], pg);
            queue_refresh_direct(h, cls);
            continue;
        }
        if (pa_mesh_thaw(h, cls)) continue; /* a frozen page of the class, before a fresh one */
        if ((pg = queue_take_idle(h, cls)) != NULL) {
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
        pa_page_init(pg, h, cls, queue_key(h));
        pa_page_list_push(&h->avail[cls], pg);
        queue_refresh_direct(h, cls);
        pa_page_extend(pg);
        return pg;
    }
}

void *pa_malloc_slow(pa_heap *h, size_t size) {
    if (h == &pa_heap_empty || h == &pa_heap_dead) {
        if (!(h = pa_heap_attach())) return pa_sys_malloc(size);
    }
    pa_mesh_tick(h);
#if PA_STATS
    if (pa_unlikely(--h->cd[size] < 0)) return pa_malloc_sampled(h, size); /* the fast path's count */
#endif
    void *b = pa_malloc_counted(h, size);
    pa_bg_poll(PA_BG_SAFE); /* glibc never calls malloc with a lock pthread_create takes */
    return b;
}

void *pa_malloc_counted(pa_heap *h, size_t size) {
    pa_page *cur = h->direct[size];
    pa_block *b = cur->free;
    if (pa_likely(pa_block_in_page(cur, b))) { /* the sampler's fallback: the page has a block */
        pa_block_pop(cur, b);
        cur->used++;
        return b;
    }
    /* the head is not a block start: it must be the end mark */
    if (pa_unlikely(cur != &pa_page_empty && cur->free != pa_list_end(cur))) pa_list_damaged(cur);
    pa_page *pg = queue_find(h, pa_class_for(size));
    if (!pg) return pa_sys_malloc(size);
    b = pg->free;
    if (pa_unlikely(!pa_block_in_page(pg, b))) pa_list_damaged(pg);
    pa_block_pop(pg, b);
    pg->used++;
    return b;
}

/* h's pages of class cls behind the current one that other threads' frees have emptied: given
 * back. Such frees go to a page's thread_free list, which h collects only when it looks at the
 * page, and h looks behind its current page only once that one is used up. A thread that adopts
 * pages whose other blocks other threads free (mimalloc's stress test: the main thread frees
 * blocks that exited threads handed it, the next threads free the rest) while its own frees keep
 * its current page supplied would otherwise hold every such page for ever: bench/mstress's peak
 * RSS grew with each round, to 5.2x glibc's after 200. Called when h adopts a page of cls. */
void pa_page_sweep(pa_heap *h, uint32_t cls) {
    pa_page *head = pa_page_at(h->avail[cls].head);
    for (pa_page *pg = head ? pa_page_at(head->next) : NULL, *next; pg; pg = next) {
        next = pa_page_at(pg->next);
        if (!atomic_load_explicit(&pg->thread_free, memory_order_relaxed)) continue;
        pa_page_unbias(pg); /* PYALLOC_MESH's sparse mark: used alone is not the count */
        pa_page_collect(pg);
        if (pg->used == 0) pa_page_emptied(h, pg);
    }
}

/* pg, h's, has no block out. The current page of its class stays (a thread that mallocs and
 * frees one block must not churn pages) until another class needs a page (queue_take_idle); any
 * other is kept as a spare for h's next page, without the pool lock, or given to the pool. */
void pa_page_emptied(pa_heap *h, pa_page *pg) {
    uint32_t cls = pg->cls;
    if (h->avail[cls].head == pa_page_link(pg)) {
        h->idle |= (uint64_t)1 << cls;
        h->idle_since[cls] = h->epoch;
        return;
    }
    if (atomic_load(&pg->fullstate) == PA_FS_NOTIFIED) queue_take_notified(h); /* unqueue it first */
    pa_page_list_unlink(&h->avail[cls], pg);
    queue_refresh_direct(h, cls);
    atomic_store_explicit(&pg->heap, NULL, memory_order_relaxed);
    if (h->nspare < PA_SPARE_MAX) {
        pa_page_retire(pg);
        pg->where = PA_W_SPARE;
        pa_page_list_push(&h->spare, pg);
        h->nspare++;
        return;
    }
    pa_pool_give(pg);
}

/* mesh.c freezes pg (h's, on avail, not the current page of its class): off h's lists. */
void pa_page_detach(pa_heap *h, pa_page *pg) {
    if (atomic_load(&pg->fullstate) == PA_FS_NOTIFIED) queue_take_notified(h); /* unqueue it first */
    pa_page_unbias(pg);
    pa_page_list_unlink(&h->avail[pg->cls], pg);
    queue_refresh_direct(h, pg->cls);
}

/* mesh.c thawed pg: h's again, on its avail list behind the current page. */
void pa_page_attach(pa_heap *h, pa_page *pg) {
    atomic_store_explicit(&pg->fullstate, PA_FS_NONE, memory_order_relaxed);
    pg->next = pg->prev = 0;
    atomic_store_explicit(&pg->heap, h, memory_order_release);
    pa_page_insert_avail(h, pg);
}
