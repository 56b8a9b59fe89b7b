/* SPDX-License-Identifier: MIT
 * The fast paths of malloc and free, inlined both into the pa_* API (alloc.c, free.c) and into the
 * replacement symbols (override.c) so neither pays a call. malloc: one table load for the page,
 * one multiply-and-compare that checks the head of its free list is a block start of the page (the
 * end mark and a damaged link both fail it: one branch to the slow path), pop it. free: one compare says "ours", the page is found
 * by arithmetic, one compare of the page's owner says "this thread's" (any other page, in use by
 * another thread, abandoned or not in use, goes to pa_free_remote), one multiply checks the block
 * start, and the first word of the block is the cheap double-free check. */
#ifndef PA_FASTPATH_H
#define PA_FASTPATH_H

#include "internal.h"

void pa_free_local_check(pa_heap *h, pa_page *pg, pa_block *b);
void *pa_calloc_h(size_t n, size_t s);  /* pa_calloc and pa_realloc under hidden names (alloc.c) */
void *pa_realloc_h(void *p, size_t n);
void *pa_alloc_aligned_h(size_t a, size_t n); /* a a power of two: pools when a <= 16 (alloc.c) */

/* A block of the class that serves requests of `slot` bytes, counted as a request of n bytes, which
 * must be of the same class (operator new asks for its size rounded up to 16 in either mode: see
 * cxx.c). The slow path counts slot. */
static inline void *pa_fast_malloc_small_as(size_t slot, size_t n) {
    pa_heap *h = pa_tls_heap;
    pa_page *pg = h->direct[slot];
    pa_block *b = pg->free;
    if (pa_likely(pa_block_in_page(pg, b))) { /* a block start of this page: not the end mark,
                                                  not a damaged link (types.h, "Free lists") */
#if PA_STATS
        if (pa_unlikely(--h->cd[n] < 0)) return pa_malloc_sampled(h, n); /* counts it, too */
#endif
        pa_block_pop(pg, b);
        pg->used++;
        return b;
    }
    (void)n;
    return pa_malloc_slow(h, slot);
}

static inline void *pa_fast_malloc_small(size_t n) { return pa_fast_malloc_small_as(n, n); }

static inline void *pa_fast_malloc(size_t n) {
    if (pa_likely(n <= PA_SMALL)) return pa_fast_malloc_small(n);
    return pa_sys_malloc(n);
}

/* Inlined even at -O0, so that free()'s slow paths are entered from free() itself: they read its
 * caller's return address (PA_CALLER, internal.h). */
static inline __attribute__((always_inline)) void pa_fast_free(void *p) {
    uintptr_t off = (uintptr_t)p - pa_base;
    if (pa_unlikely(off >= pa_load_fast(&pa_limit))) { /* glibc's, or NULL (which glibc ignores) */
        if (pa_unlikely(off < pa_reserved)) pa_free_invalid("free", p); /* reserved, never committed */
        pa_sys_free(p);
        return;
    }
    pa_page *pg = &pa_pages[off >> PA_PAGE_SHIFT];
    pa_block *b = p;
    pa_heap *h = pa_tls_heap;
    if (pa_likely(pa_load_fast(&pg->heap) == h)) { /* this thread's (a FULL page too: see page_bias) */
        if (pa_likely((int)pa_block_is_start(pg, off & PA_PAGE_MASK) & (int)!pa_block_looks_free(pg, b))) {
            pa_block_push(pg, b);
            PA_STAT(h->nfree[pg->cls]++);
            if (pa_unlikely(--pg->used == 0)) pa_free_local_slow(h, pg);
            return;
        }
        pa_free_local_check(h, pg, b);
        return;
    }
    pa_free_remote(pg, b);
}

#endif /* PA_FASTPATH_H */
