/* SPDX-License-Identifier: MIT
 * The reservation and the global pool of pages: reserve address space once, commit it an arena
 * (2 MiB) at a time, hand out pages, take empty ones back and give their memory to the OS.
 * Exports pa_arena_init, pa_pool_take, pa_pool_give, pa_pool_tick, pa_pool_expire_step (the
 * background thread's), pa_pool_trim. Everything here runs under pa_pool_lock; the fast paths only
 * read pa_base, pa_limit and pa_pages.
 *
 * When memory goes back (the hysteresis): an empty page waits on the dirty list, stamped with the
 * time it arrived, and is given back only once it has waited pa_opt.purge_delay ms. A program that
 * frees and allocates in waves faster than that reuses resident pages and never faults them in
 * again, however large the waves; one that has shrunk for good gets its memory back when the delay
 * is over, from the background thread (background.c) where there is one, else at the next pool
 * operation (or at once with malloc_trim), PA_PURGE_BATCH (32 MiB) per call.
 * Beyond a hard limit, max(dirty_min, live / dirty_ratio) (PA_DIRTY_DEFAULT, 1 GiB, by default),
 * the oldest pages go back at once, down to half the limit. The limit does not follow the pages in
 * use by default: one that did would call madvise all through a large teardown. */
#include "internal.h"

#include <time.h>

uintptr_t pa_base;
_Atomic uintptr_t pa_limit;
pa_page *pa_pages;
size_t pa_reserved;
pthread_mutex_t pa_pool_lock = PTHREAD_MUTEX_INITIALIZER;

static struct {
    pa_page_list dirty;         /* empty pages still resident: newest first, purged oldest first */
    size_t ndirty;
    pa_page_list clean;         /* empty pages whose memory went back to the OS */
    size_t hiwater;             /* pages ever handed out */
    size_t committed;           /* pages committed */
    size_t max;                 /* pages reserved */
    size_t live;                /* pages out of the pool */
    uint64_t purged;            /* pages given back to the OS, ever */
    uint64_t taken, returned;   /* pages handed to heaps and given back to the pool, ever */
} pool;

/* When the oldest dirty page expires (pool clock), or UINT32_MAX: read by pa_pool_tick unlocked. */
static _Atomic uint32_t pool_deadline = UINT32_MAX;

uint32_t pa_clock_ms(void) {
    struct timespec ts;
    /* The coarse clock is read from the vDSO: no system call, no allocation, a few ns. */
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static size_t pool_dirty_limit(void) {
    size_t byratio = pa_opt.dirty_ratio ? pool.live / pa_opt.dirty_ratio : 0;
    return byratio > pa_opt.dirty_min ? byratio : pa_opt.dirty_min;
}

static bool page_expired(const pa_page *pg, uint32_t now) {
    return (uint32_t)(now - pg->dirty_since) >= pa_opt.purge_delay;
}

bool pa_arena_init(void) {
    for (size_t size = pa_opt.reserve; size >= PA_RESERVE_MIN; size >>= 1) {
        size_t npages = size >> PA_PAGE_SHIFT;
        void *data = pa_os_reserve(size, PA_ARENA_SIZE);
        if (!data) continue;
        void *desc = pa_os_reserve(npages * sizeof(pa_page), PA_OS_PAGE);
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

static void pool_expire(uint32_t now);
#define PURGE_BATCH (PA_PURGE_BATCH >> PA_PAGE_SHIFT) /* pages */

static void dirty_unlink(pa_page *pg) {
    pa_page_list_unlink(&pool.dirty, pg);
    pool.ndirty--;
}

pa_page *pa_pool_take(void) {
    pa_page *pg = NULL;
    pthread_mutex_lock(&pa_pool_lock);
    if (pool.dirty.head) {
        pg = pa_page_at(pool.dirty.head);
        dirty_unlink(pg);
    } else if (pool.clean.head) {
        pg = pa_page_at(pool.clean.head);
        pa_page_list_unlink(&pool.clean, pg);
    } else if (pool.hiwater < pool.committed || pool_grow()) {
        pg = &pa_pages[pool.hiwater++];
    }
    if (pg) {
        pool.live++;
        pool.taken++;
        pg->where = pg->pooled = 0;
    }
    if (pool.dirty.tail) pool_expire(pa_clock_ms());
    pthread_mutex_unlock(&pa_pool_lock);
    return pg;
}

/* Give the memory of pg and of the dirty pooled pages next to it that are expired (all of them,
 * when force) back to the OS in one call, at most `most` pages. Returns the number of pages. */
static size_t pool_purge_run(pa_page *pg, uint32_t now, bool force, size_t most) {
    uint32_t lo = pa_page_index(pg), hi = lo;
    while (lo > 0 && hi - lo + 1 < most && pa_pages[lo - 1].pooled == PA_W_DIRTY &&
           (force || page_expired(&pa_pages[lo - 1], now)))
        lo--;
    while (hi + 1 < pool.committed && hi - lo + 1 < most && pa_pages[hi + 1].pooled == PA_W_DIRTY &&
           (force || page_expired(&pa_pages[hi + 1], now)))
        hi++;
    for (uint32_t i = lo; i <= hi; i++) {
        pa_page *q = &pa_pages[i];
        dirty_unlink(q);
        q->where = q->pooled = PA_W_CLEAN;
        pa_page_list_push(&pool.clean, q);
    }
    pa_os_decommit((void *)(pa_base + ((uintptr_t)lo << PA_PAGE_SHIFT)),
                   (size_t)(hi - lo + 1) << PA_PAGE_SHIFT);
    pool.purged += hi - lo + 1;
    return (size_t)(hi - lo + 1);
}

/* Give back pages that have waited out the delay (at most PURGE_BATCH per call, so no one malloc
 * stalls for long: the rest go at the next call), and the oldest ones beyond the hard limit; then
 * publish when the next page expires. Under the pool lock. */
static void pool_expire(uint32_t now) {
    size_t limit = pool_dirty_limit();
    if (pool.ndirty > limit) {
        while (pool.ndirty > limit / 2) pool_purge_run(pa_page_at(pool.dirty.tail), now, true, SIZE_MAX);
    }
    size_t done = 0;
    while (done < PURGE_BATCH && pool.dirty.tail && page_expired(pa_page_at(pool.dirty.tail), now))
        done += pool_purge_run(pa_page_at(pool.dirty.tail), now, false, PURGE_BATCH - done);
    uint32_t deadline = UINT32_MAX;
    if (pool.dirty.tail) {
        deadline = pa_page_at(pool.dirty.tail)->dirty_since + pa_opt.purge_delay;
        if (deadline == UINT32_MAX) deadline--; /* clock wrap: UINT32_MAX means "none" */
    }
    atomic_store_explicit(&pool_deadline, deadline, memory_order_relaxed);
}


void pa_pool_give(pa_page *pg) {
    pthread_mutex_lock(&pa_pool_lock);
    pa_assert(pg->where != PA_W_DIRTY && pg->where != PA_W_CLEAN);
    bool first = pool.ndirty == 0; /* the background thread may be sleeping with nothing to wait for */
    pa_page_retire(pg);
    pg->where = pg->pooled = PA_W_DIRTY;
    pa_page_list_push(&pool.dirty, pg);
    pool.ndirty++;
    pool.live--;
    pool.returned++;
    uint32_t now = pa_clock_ms();
    pg->dirty_since = now;
    pool_expire(now);
    first = first && pool.ndirty != 0;
    pthread_mutex_unlock(&pa_pool_lock);
    if (first) pa_bg_pool_work();
}

void pa_pool_tick(void) {
    uint32_t deadline = atomic_load_explicit(&pool_deadline, memory_order_relaxed);
    if (deadline == UINT32_MAX) return;
    uint32_t now = pa_clock_ms();
    /* Pages are waiting in the pool: memory has shrunk, a moment for the timeline (monitor.c). */
    if (pa_mon_due(now)) pa_mon_point();
    if ((int32_t)(now - deadline) < 0) return;
    pthread_mutex_lock(&pa_pool_lock);
    pool_expire(now);
    pthread_mutex_unlock(&pa_pool_lock);
}

size_t pa_pool_expire_step(uint32_t now, uint32_t *next) {
    pthread_mutex_lock(&pa_pool_lock);
    uint64_t before = pool.purged;
    pool_expire(now); /* also publishes the deadline: none once the dirty list is empty */
    size_t n = (size_t)(pool.purged - before);
    *next = atomic_load_explicit(&pool_deadline, memory_order_relaxed);
    pthread_mutex_unlock(&pa_pool_lock);
    return n;
}

size_t pa_pool_trim(void) {
    size_t n = 0;
    pthread_mutex_lock(&pa_pool_lock);
    uint32_t now = pa_clock_ms();
    while (pool.ndirty) n += pool_purge_run(pa_page_at(pool.dirty.tail), now, true, SIZE_MAX);
    atomic_store_explicit(&pool_deadline, UINT32_MAX, memory_order_relaxed);
    pthread_mutex_unlock(&pa_pool_lock);
    return n;
}

size_t pa_pool_dirty_pages(void) {
    pthread_mutex_lock(&pa_pool_lock);
    size_t n = pool.ndirty;
    pthread_mutex_unlock(&pa_pool_lock);
    return n;
}

void pa_pool_counters(pa_pool_stats *out) {
    pthread_mutex_lock(&pa_pool_lock);
    out->committed = pool.committed;
    out->purged = pool.purged;
    out->dirty = pool.ndirty;
    out->taken = pool.taken;
    out->returned = pool.returned;
    pthread_mutex_unlock(&pa_pool_lock);
}
