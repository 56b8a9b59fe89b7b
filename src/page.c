/* SPDX-License-Identifier: MIT
 * One page's blocks: set a page up for a size class, carve fresh blocks from its untouched tail,
 * and take in the blocks other threads freed into it. Exports pa_page_init, pa_page_extend,
 * pa_page_collect, pa_block_list_contains. Only the page's owner (or a holder of abandoned_lock)
 * calls these. */
#include "internal.h"

void pa_page_init(pa_page *pg, pa_heap *h, uint32_t cls, uint64_t key) {
    uint32_t bsize = pa_class_size(cls);
    pg->key = (uintptr_t)key;
    pg->free = pa_list_end(pg);
    pg->magic = (uint32_t)((((uint64_t)1) << 32) / bsize + 1);
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
    uint32_t step = pg->magic * bsize; /* mod 2^32 */
    pa_store_relaxed(&pg->thresh, (bump / bsize - 1) * step + 1);
    return true;
}

uint32_t pa_page_collect(pa_page *pg) {
    if (!atomic_load_explicit(&pg->thread_free, memory_order_relaxed)) return 0;
    pa_block *head = atomic_exchange_explicit(&pg->thread_free, NULL, memory_order_acquire);
    if (!head) return 0;
    uint32_t n = 1;
    pa_block *tail = head;
    for (pa_block *nx; !pa_list_is_end(nx = pa_block_next(pg, tail)); tail = nx) {
        n++;
        if (pa_unlikely(n > pa_class_blocks(pg->cls))) pa_fatal("corrupted free list in page", (void *)pa_page_start(pg));
    }
    pa_block_set_next(pg, tail, pg->free);
    pg->free = head;
    pa_assert(pg->used >= n);
    pg->used = (uint16_t)(pg->used - n);
    return n;
}

bool pa_block_list_contains(const pa_page *pg, pa_block *list, const pa_block *b) {
    uint32_t limit = pa_class_blocks(pg->cls);
    for (uint32_t i = 0; list && !pa_list_is_end(list) && i <= limit; i++) {
        if (list == b) return true;
        if (((uintptr_t)list ^ pa_page_start(pg)) >> PA_PAGE_SHIFT) return false; /* corrupt link */
        list = pa_block_next(pg, list);
    }
    return false;
}

void pa_page_retire(pa_page *pg) {
    if (pg->bsize) pa_stat_page(pg->cls, -1);
    pg->bsize = 0;
    pg->free = (pa_block *)1;
    pg->used = 0;
    pa_store_relaxed(&pg->thresh, 0); /* no offset is a block start: frees into it are refused */
}
