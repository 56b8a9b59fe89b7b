/* SPDX-License-Identifier: MIT
 * The replacement symbols: malloc, free, calloc, realloc, posix_memalign, aligned_alloc, memalign,
 * valloc, pvalloc, malloc_usable_size, cfree (glibc manual, "Replacing malloc"), malloc_trim,
 * which gives the pool's empty pages back at once, and C23's free_sized and free_aligned_sized.
 * malloc and free inline the fast paths; the rest are thin wrappers. reallocarray, strdup and friends
 * stay glibc's, which route them through these. Built into libpyalloc.so / .a, not into
 * pyalloc_core (C++'s operators are in cxx.c, dlopen in deepbind.c). */
#include "fastpath.h"

#include <malloc.h>
#include <stdlib.h>
#include "pyalloc.h"

#define PA_OVERRIDE __attribute__((visibility("default")))

PA_OVERRIDE void *malloc(size_t n) { return pa_fast_malloc(n); }
PA_OVERRIDE void free(void *p) { pa_fast_free(p); }
PA_OVERRIDE void cfree(void *p);
PA_OVERRIDE void cfree(void *p) { pa_fast_free(p); }
PA_OVERRIDE void *calloc(size_t n, size_t s) { return pa_calloc_h(n, s); }
PA_OVERRIDE void *realloc(void *p, size_t n) { return pa_realloc_h(p, n); }
PA_OVERRIDE int posix_memalign(void **out, size_t a, size_t n) { return pa_posix_memalign(out, a, n); }
PA_OVERRIDE void *aligned_alloc(size_t a, size_t n) { return pa_aligned_alloc(a, n); }
PA_OVERRIDE void *memalign(size_t a, size_t n) { return pa_memalign(a, n); }
PA_OVERRIDE void *valloc(size_t n) { return pa_valloc(n); }
PA_OVERRIDE void *pvalloc(size_t n) { return pa_pvalloc(n); }
PA_OVERRIDE size_t malloc_usable_size(void *p) { return pa_malloc_usable_size(p); }
PA_OVERRIDE int malloc_trim(size_t pad) { return pa_malloc_trim(pad); }
/* C23's sized frees (glibc 2.43 has them): free, which needs no size. Defined whatever glibc runs, so
 * that a program built against a newer one never hands pyalloc's blocks to glibc's. */
PA_OVERRIDE void free_sized(void *p, size_t n);
PA_OVERRIDE void free_sized(void *p, size_t n) {
    (void)n;
    pa_fast_free(p);
}
PA_OVERRIDE void free_aligned_sized(void *p, size_t a, size_t n);
PA_OVERRIDE void free_aligned_sized(void *p, size_t a, size_t n) {
    (void)a;
    (void)n;
    pa_fast_free(p);
}
