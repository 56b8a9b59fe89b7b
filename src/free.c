/* SPDX-License-Identifier: MIT
 * free and the checks behind it: foreign pointers to glibc, interior pointers and double frees to a
 * one-line message and abort. Exports pa_free, pa_free_local_check, pa_check_live. */
#include "fastpath.h"

#include <string.h>

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

/* For the page's owner: is b on its local free list or its thread_free list? */
static bool free_is_listed(const pa_page *pg, const pa_block *b) {
    return pa_block_list_contains(pg, pg->free, b) ||
           pa_block_list_contains(pg, atomic_load_explicit(&pg->thread_free, memory_order_acquire), b);
}

/* A free by the page's owner that failed a fast check: an interior pointer, or a first word that
 * looks like a free link. The owner can confirm against its own lists; a false alarm is freed
 * normally. */
void pa_free_local_check(pa_heap *h, pa_page *pg, pa_block *b) {
    if (!pa_block_is_start(pg, (uintptr_t)b & PA_PAGE_MASK)) pa_free_invalid("free", b);
    if (pa_block_looks_free(pg, b) && free_is_listed(pg, b))
        pa_fatal("free(): double free detected", b);
    pa_block_push(pg, b);
    pg->used--;
    pa_free_local_slow(h, pg);
}

void pa_check_live(const char *fn, pa_page *pg, const void *p) {
    const pa_block *b = p;
    if (pa_unlikely(pg->bsize == 0 || !pa_block_is_start(pg, (uintptr_t)p & PA_PAGE_MASK))) pa_free_invalid(fn, p);
    if (pa_unlikely(pa_block_looks_free(pg, b))) {
        bool mine = pa_load_relaxed(&pg->heap) == pa_tls_heap;
        if (!mine || free_is_listed(pg, b))
            free_fatal(fn, "(): pointer to a freed block (double free)", p);
    }
}
