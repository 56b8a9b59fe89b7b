/* SPDX-License-Identifier: MIT
 * The reservation and the global pool of pages: reserve address space once, commit it an arena
 * (1 MiB) at a time, hand out pages, take empty ones back and give their memory to the OS.
 * Exports pa_arena_init, pa_pool_take, pa_pool_give, pa_pool_trim. Everything here runs under
 * pa_pool_lock; the fast paths only read pa_base, pa_limit and pa_pages. */
#include "internal.h"

uintptr_t pa_base;
_Atomic uintptr_t pa_limit;
pa_page *pa_pages;
size_t pa_reserved;
pthread_mutex_t pa_pool_lock = PTHREAD_MUTEX_INITIALIZER;

static struct {
    uint32_t dirty, dirty_tail; /* empty pages still resident: newest first, purged oldest first */
    size_t ndirty;
    uint32_t clean;             /* empty pages whose memory went back to the OS */
    size_t hiwater;             /* pages ever handed out */
    size_t committed;           /* pages committed */
    size_t max;                 /* pages reserved */
    size_t live;                /* pages out of the pool */
} pool;

bool pa_arena_init(void) {
    for (size_t size = pa_opt.reserve; size >= ((size_t)16 << 20); size >>= 1) {
        size_t npages = size >> PA_PAGE_SHIFT;
        void *data = pa_os_reserve(size, PA_ARENA_SIZE);
        if (!data) continue;
        void *desc = pa_os_reserve(npages * sizeof(pa_page), 4096);
        if (!desc) {
            pa_os_unmap(data, size);
            continue;
        }
        pa_base = (uintptr_t)data;
        pa_pages = desc;
        pa_reserved = size;
        pool.max = npages;
        return true;
    }
    pa_warn("cannot reserve address space; every block goes to the system allocator");
    return false;
}

/* Commit the next arena and its descriptors. Under the pool lock. */
static bool pool_grow(void) {
    if (pool.committed + PA_ARENA_PAGES > pool.max) return false;
    char *data = (char *)pa_base + (pool.committed << PA_PAGE_SHIFT);
    pa_page *desc = &pa_pages[pool.committed];
    if (!pa_os_commit(desc, PA_ARENA_PAGES * sizeof(pa_page))) return false;
    if (!pa_os_commit(data, PA_ARENA_SIZE)) return false;
    pool.committed += PA_ARENA_PAGES;
    /* Descriptors are committed (zero) before the range check can admit a pointer into them. */
    atomic_store_explicit(&pa_limit, pool.committed << PA_PAGE_SHIFT, memory_order_release);
    return true;
}

static void dirty_unlink(pa_page *pg) {
    pa_page *n = pa_page_at(pg->next), *p = pa_page_at(pg->prev);
    if (p) p->next = pg->next; else pool.dirty = pg->next;
    if (n) n->prev = pg->prev; else pool.dirty_tail = pg->prev;
    pg->next = pg->prev = 0;
    pool.ndirty--;
}

pa_page *pa_pool_take(void) {
    pa_page *pg = NULL;
    pthread_mutex_lock(&pa_pool_lock);
    if (pool.dirty) {
        pg = pa_page_at(pool.dirty);
        dirty_unlink(pg);
        pg->zeroed = 0;
    } else if (pool.clean) {
        pg = pa_page_at(pool.clean);
        pool.clean = pg->next;
        pg->next = 0;
        pg->zeroed = 1;
    } else if (pool.hiwater < pool.committed || pool_grow()) {
        pg = &pa_pages[pool.hiwater++];
        pg->zeroed = 1;
    }
    if (pg) {
        pool.live++;
        pg->where = pg->pooled = 0;
    }
    pthread_mutex_unlock(&pa_pool_lock);
    return pg;
}

/* Give the memory of pg and of every dirty pooled page next to it back to the OS in one call. */
static void pool_purge_run(pa_page *pg) {
    uint32_t lo = pa_page_index(pg), hi = lo;
    while (lo > 0 && pa_pages[lo - 1].pooled == PA_W_DIRTY) lo--;
    while (hi + 1 < pool.committed && pa_pages[hi + 1].pooled == PA_W_DIRTY) hi++;
    for (uint32_t i = lo; i <= hi; i++) {
        pa_page *q = &pa_pages[i];
        dirty_unlink(q);
        q->where = q->pooled = PA_W_CLEAN;
        q->next = pool.clean;
        pool.clean = i + 1;
    }
    pa_os_decommit((void *)(pa_base + ((uintptr_t)lo << PA_PAGE_SHIFT)),
                   (size_t)(hi - lo + 1) << PA_PAGE_SHIFT);
}

static size_t pool_dirty_limit(void) {
    size_t byratio = pa_opt.dirty_ratio ? pool.live / pa_opt.dirty_ratio : 0;
    return byratio > pa_opt.dirty_min ? byratio : pa_opt.dirty_min;
}

void pa_pool_give(pa_page *pg) {
    pthread_mutex_lock(&pa_pool_lock);
    pa_assert(pg->where != PA_W_DIRTY && pg->where != PA_W_CLEAN);
    pg->bsize = 0;
    pg->free = (pa_block *)1;
    pg->used = 0;
    pa_store_relaxed(&pg->thresh, 0);
    pg->where = pg->pooled = PA_W_DIRTY;
    pg->prev = 0;
    pg->next = pool.dirty;
    if (pool.dirty) pa_page_at(pool.dirty)->prev = pa_page_link(pg);
    else pool.dirty_tail = pa_page_link(pg);
    pool.dirty = pa_page_link(pg);
    pool.ndirty++;
    pool.live--;
    size_t limit = pool_dirty_limit();
    if (pool.ndirty > limit) {
        /* Hysteresis: purge down to half the limit, oldest first, so a program that frees and
         * allocates in waves does not pay a purge and a page fault per page each wave. */
        while (pool.ndirty > limit / 2) pool_purge_run(pa_page_at(pool.dirty_tail));
    }
    pthread_mutex_unlock(&pa_pool_lock);
}

void pa_pool_trim(void) {
    pthread_mutex_lock(&pa_pool_lock);
    while (pool.ndirty) pool_purge_run(pa_page_at(pool.dirty_tail));
    pthread_mutex_unlock(&pa_pool_lock);
}

size_t pa_pool_dirty_pages(void) {
    pthread_mutex_lock(&pa_pool_lock);
    size_t n = pool.ndirty;
    pthread_mutex_unlock(&pa_pool_lock);
    return n;
}
