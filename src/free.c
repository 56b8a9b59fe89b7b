/* SPDX-License-Identifier: MIT
 * free and the checks behind it: foreign pointers to glibc, interior pointers and double frees to a
 * one-line message and abort; what a free by the page's owner does when the page fills or empties;
 * frees into pages this thread does not own (another thread's: pushed onto the page's thread_free
 * list; an abandoned one's: under abandoned_lock, where the freeing thread may adopt the page).
 * Exports pa_free, pa_free_invalid, pa_list_damaged, pa_free_local_check, pa_free_local_slow,
 * pa_free_remote and pa_check_live. */
#include "fastpath.h"

#include <stdlib.h>
#include <string.h>

#include "pyalloc.h"

PA_API void pa_free(void *p) { pa_fast_free(p); }

/* "pyalloc: <fn>(): <fault> at 0x..." and abort. */
static _Noreturn void free_fatal(const char *fn, const char *fault, const void *p) {
    char what[96];
    size_t n = strlen(fn), m = strlen(fault);
    if (n > 32) n = 32;
    if (m > sizeof what - n - 1) m = sizeof what - n - 1;
    memcpy(what, fn, n);
    memcpy(what + n, fault, m);
    what[n + m] = 0;
    pa_fatal(what, p);
}

_Noreturn void pa_free_invalid(const char *fn, const void *p) { free_fatal(fn, "(): invalid pointer", p); }

_Noreturn void pa_list_damaged(const pa_page *pg) {
    char page[24], size[24];
    page[pa_fmt_hex(page, pa_page_start(pg))] = 0;
    size[pa_fmt_u64(size, pg->bsize)] = 0;
    const char *parts[] = {"heap corruption: free list of page ", page, " (class ", size,
                           ") damaged - a write past a block's end or after free?"};
    pa_warn_parts(parts, sizeof parts / sizeof parts[0]);
    abort();
}

/* For the page's owner: is b on its local free list or its thread_free list? */
static bool free_is_listed(const pa_page *pg, const pa_block *b) {
    return pa_block_list_contains(pg, pg->free, b) ||
           pa_block_list_contains(pg, atomic_load_explicit(&pg->thread_free, memory_order_acquire), b);
}

/* After a free by the page's owner: the page was FULL (its biased count ran out) or is empty. Always
 * inlined into the functions free() jumps to, so that PA_CALLER is free()'s caller; it is read only
 * when a background thread waits to be started. */
static inline __attribute__((always_inline)) void free_local_done(pa_heap *h, pa_page *pg) {
    if (pg->where == PA_W_FULL) {
        pa_page_unfull(h, pg);
    } else if (pg->used_bias && pg->used == 0) { /* an avail page at its sparse mark (mesh) */
        pa_page_unbias(pg);
        pa_mesh_sparse(h, pg);
        return;
    }
    if (pg->used == 0) {
        pa_page_emptied(h, pg);
        pa_pool_tick(); /* a page emptied: pool pages that waited out the delay can go now */
        /* it may have gone to the pool: work for the background thread (not from the sampler's
         * pseudo-heap, whose frees hold the sampler's lock, which a malloc in pthread_create takes) */
        if (pa_unlikely(pa_load_relaxed(&pa_bg_want)) && h != &pa_sample_heap) pa_bg_start(PA_CALLER());
    }
}

/* A free by the page's owner that failed a fast check: an interior pointer, or a first word that
 * looks like a free link. The owner can confirm against its own lists; a false alarm is freed
 * normally. */
void pa_free_local_check(pa_heap *h, pa_page *pg, pa_block *b) {
    if (!pa_block_is_start(pg, (uintptr_t)b & PA_PAGE_MASK)) pa_free_invalid("free", b);
    if (pa_block_looks_free(pg, b) && free_is_listed(pg, b))
        pa_fatal("free(): double free detected", b);
    pa_block_push(pg, b);
    pa_stat_free(h, pg->cls);
    pg->used--;
    free_local_done(h, pg);
}

void pa_free_local_slow(pa_heap *h, pa_page *pg) { free_local_done(h, pg); }

/* ---- frees into pages this thread does not own ---- */

static void free_abandoned(pa_page *pg, pa_block *b);
static void free_remote(pa_page *pg, pa_block *b);

void pa_free_remote(pa_page *pg, pa_block *b) {
    free_remote(pg, b);
    /* the last free into an abandoned page gives it to the pool: work for the background thread */
    if (pa_unlikely(pa_load_relaxed(&pa_bg_want))) pa_bg_start(PA_CALLER());
}

static void free_remote(pa_page *pg, pa_block *b) {
    if (pa_page_meshed(pg)) { /* frozen by mesh.c: no owner, a live-block bitmap */
        pa_mesh_free(pg, b);
        return;
    }
    pa_heap *owner = atomic_load_explicit(&pg->heap, memory_order_acquire);
    if (!owner) {
        free_abandoned(pg, b);
        return;
    }
    if (owner == &pa_sample_heap) { /* a sampled block: its record goes too */
        pa_sample_free_small(pg, b);
        return;
    }
    uintptr_t poff = (uintptr_t)b & PA_PAGE_MASK;
    if (pa_unlikely(!pa_block_is_start(pg, poff))) pa_free_invalid("free", b);
    /* No way to walk the owner's free list from here: a first word that decodes like a free link
     * (1 in 2^50 for live data, the key being secret) is taken as the double free it almost surely is. */
    if (pa_unlikely(pa_block_looks_free(pg, b))) pa_fatal("free(): double free detected", b);
    uint32_t cls = pg->cls; /* read while b is live: once pushed, the owner may release the page */
    pa_block *head = atomic_load_explicit(&pg->thread_free, memory_order_relaxed);
    do {
        pa_block_set_next(pg, b, head ? head : pa_list_end(pg));
    } while (!atomic_compare_exchange_weak_explicit(&pg->thread_free, &head, b, memory_order_seq_cst,
                                                    memory_order_relaxed));
    if (pa_unlikely(atomic_load(&pg->fullstate) == PA_FS_FULL)) pa_page_notify(pg);
    pa_heap *me = pa_tls_heap;
    pa_stat_free(me, cls);
    if (me->live) me->stats.remote_frees++;
    else atomic_fetch_add_explicit(&pa_orphan_remote_frees, 1, memory_order_relaxed);
}

static void free_abandoned(pa_page *pg, pa_block *b) {
    pthread_mutex_lock(&pa_abandoned_lock);
    if (pa_load_relaxed(&pg->heap)) { /* adopted meanwhile */
        pthread_mutex_unlock(&pa_abandoned_lock);
        free_remote(pg, b);
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
    pa_stat_free(me, pg->cls);
    if (pg->used == 0) {
        pa_heap_unabandon(pg);
        pa_pool_give(pg);
    } else if (me->live && me->avail[pg->cls].head != 0) {
        /* Adopt it: this thread is freeing what a dead one allocated (a server's request objects),
         * and the next frees into the page should be local ones, not a trip through this lock. Its
         * free blocks serve this thread's mallocs of the class. Only a heap that allocates the
         * class adopts: an owner collects its pages' remote frees when it allocates, so a thread
         * that only frees (a main thread reaping its workers) would hold the page for ever while
         * other threads' frees piled up on it. */
        pa_heap_adopt_page(me, pg);
        pthread_mutex_unlock(&pa_abandoned_lock);
        pa_page_insert_avail(me, pg);
        pa_page_sweep(me, pg->cls); /* one more page of the class: give back those emptied meanwhile */
        return;
    }
    pthread_mutex_unlock(&pa_abandoned_lock);
}

void pa_check_live(const char *fn, pa_page *pg, const void *p) {
    const pa_block *b = p;
    if (pa_page_meshed(pg)) {
        if (!pa_mesh_is_live(pg, p)) free_fatal(fn, "(): invalid pointer or freed block", p);
        return;
    }
    if (pa_unlikely(pg->bsize == 0 || !pa_block_is_start(pg, (uintptr_t)p & PA_PAGE_MASK))) pa_free_invalid(fn, p);
    if (pa_unlikely(pa_block_looks_free(pg, b))) {
        bool mine = pa_load_relaxed(&pg->heap) == pa_tls_heap;
        if (!mine || free_is_listed(pg, b))
            free_fatal(fn, "(): pointer to a freed block (double free)", p);
    }
}
