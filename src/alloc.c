/* SPDX-License-Identifier: MIT
 * The allocation side of the API: malloc, calloc, realloc, the aligned family and
 * malloc_usable_size, each deciding between the pools (<= 512 bytes, alignment <= 16) and glibc.
 * Exports the pa_* functions of include/pyalloc.h but pa_free (free.c) and the statistics (stats.c),
 * and pa_calloc_h and pa_realloc_h, hidden aliases for override.c. */
#include "fastpath.h"

#include <errno.h>
#include <gnu/libc-version.h>
#include <string.h>

#include "pyalloc.h"

PA_API void *pa_malloc(size_t n) { return pa_fast_malloc(n); }

PA_API void *pa_calloc(size_t n, size_t s) {
    size_t total;
    if (pa_unlikely(__builtin_mul_overflow(n, s, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    if (total > PA_SMALL) return pa_sys_calloc(n, s);
    void *p = pa_fast_malloc_small(total);
    if (pa_likely(p != NULL)) memset(p, 0, total);
    return p;
}

/* What realloc asks glibc for: a size above 512 bytes and below 128 KiB is rounded up to one of 8
 * steps per doubling (at most 12.5% more; jemalloc's large classes are 4 per doubling). A block
 * grown by small steps, as string builders and vectors are, is then moved at most once per step,
 * not at every realloc that finds its neighbour in glibc's heap in use; shrinking by small steps
 * keeps it in place. From 128 KiB glibc maps the block and grows it with mremap: exact sizes. */
static inline size_t realloc_size(size_t n) {
    if (n <= PA_SMALL || n >= PA_REALLOC_EXACT) return n;
    size_t step = (size_t)1 << (60 - __builtin_clzll(n)); /* an eighth of n's power of two */
    return (n + step - 1) & ~(step - 1);
}

/* p is one of ours, in page pg. Out of line, so that pa_realloc of a glibc block saves no registers. */
__attribute__((noinline)) static void *realloc_small(pa_page *pg, void *p, size_t n) {
    pa_check_live("realloc", pg, p);
    if (n == 0) { /* glibc's semantics: free, and return NULL */
        pa_fast_free(p);
        return NULL;
    }
    size_t bsize = pg->bsize;
    /* Stay put when the size keeps its class, or shrinks by less than a quarter (as pymalloc). */
    if (n <= bsize && (pa_class_size(pa_class_for(n)) == bsize || 4 * n > 3 * bsize)) return p;
    void *q = n <= PA_SMALL ? pa_fast_malloc_small(n) : pa_sys_malloc(realloc_size(n));
    if (!q) return NULL; /* errno is ENOMEM; p is untouched */
    memcpy(q, p, n < bsize ? n : bsize);
    pa_fast_free(p);
    return q;
}

PA_API void *pa_realloc(void *p, size_t n) {
    uintptr_t off = (uintptr_t)p - pa_base;
    if (off < pa_load_fast(&pa_limit)) return realloc_small(&pa_pages[off >> PA_PAGE_SHIFT], p, n);
    if (!p) return pa_fast_malloc(n);
    if (pa_unlikely(off < pa_reserved)) pa_free_invalid("realloc", p); /* reserved, never committed */
    return pa_sys_realloc(p, realloc_size(n)); /* realloc(p, 0) frees there too and returns NULL */
}

/* Hidden names of the same functions for the libc-named wrappers in override.c, which then jump to
 * them directly instead of through the GOT (the exported names may be interposed). */
extern __typeof__(pa_calloc) pa_calloc_h __attribute__((alias("pa_calloc"), visibility("hidden")));
extern __typeof__(pa_realloc) pa_realloc_h __attribute__((alias("pa_realloc"), visibility("hidden")));

static inline bool pow2(size_t a) { return a && !(a & (a - 1)); }

/* An aligned block, a a power of two: from the pools when a <= 16 (a size that is a multiple of 16
 * gets a 16-aligned block in either mode, since pages are page-aligned), from glibc otherwise. */
void *pa_alloc_aligned_h(size_t a, size_t n) {
    if (a <= 16 && n <= PA_SMALL) {
        if (n == 0) n = 1;                      /* a unique block, still aligned as asked */
        if (a > 8) n = (n + 15) & ~(size_t)15;
        return pa_fast_malloc_small(n);
    }
    if (a <= 16) return pa_sys_malloc(n); /* glibc is 16-aligned */
    return pa_sys_memalign(a, n);
}

PA_API int pa_posix_memalign(void **out, size_t a, size_t n) {
    if (!pow2(a) || a % sizeof(void *) != 0) return EINVAL;
    void *p = pa_alloc_aligned_h(a, n);
    if (!p) return ENOMEM; /* errno is ENOMEM too, as glibc leaves it */
    *out = p;
    return 0;
}

/* glibc's memalign (_mid_memalign in malloc.c), for any alignment: up to 16 it is malloc; above, an
 * alignment that is not a power of two is rounded up to the next one, and one above SIZE_MAX / 2 + 1
 * (which has none) is EINVAL. Below 16 pyalloc rounds up too, so the block is at least that aligned. */
static void *memalign_any(size_t a, size_t n) {
    if (pa_unlikely(!pow2(a))) {
        if (a > SIZE_MAX / 2 + 1) {
            errno = EINVAL;
            return NULL;
        }
        a = a ? (size_t)1 << (64 - __builtin_clzll(a)) : 1;
    }
    return pa_alloc_aligned_h(a, n);
}

/* glibc 2.38 made aligned_alloc reject an alignment that is not a power of two (or 0) with EINVAL,
 * as C17 asks; up to 2.37 it is memalign. Decided by the glibc running, read once (its version
 * string is a constant: no allocation). */
static bool aligned_alloc_strict(void) {
    static _Atomic int strict; /* 0 unknown, 1 no, 2 yes */
    int s = atomic_load_explicit(&strict, memory_order_relaxed);
    if (pa_likely(s)) return s == 2;
    const char *v = gnu_get_libc_version();
    unsigned major = 0, minor = 0;
    while (*v >= '0' && *v <= '9') major = major * 10 + (unsigned)(*v++ - '0');
    if (*v == '.') v++;
    while (*v >= '0' && *v <= '9') minor = minor * 10 + (unsigned)(*v++ - '0');
    s = (major > 2 || (major == 2 && minor >= 38)) ? 2 : 1;
    atomic_store_explicit(&strict, s, memory_order_relaxed);
    return s == 2;
}

PA_API void *pa_aligned_alloc(size_t a, size_t n) {
    if (pa_likely(pow2(a))) return pa_alloc_aligned_h(a, n);
    if (aligned_alloc_strict()) {
        errno = EINVAL;
        return NULL;
    }
    return memalign_any(a, n);
}

PA_API void *pa_memalign(size_t a, size_t n) { return memalign_any(a, n); }

PA_API void *pa_valloc(size_t n) { return pa_sys_valloc(n); }
PA_API void *pa_pvalloc(size_t n) { return pa_sys_pvalloc(n); }

PA_API size_t pa_malloc_usable_size(void *p) {
    if (!p) return 0;
    pa_page *pg = pa_page_of(p);
    if (pg) {
        pa_check_live("malloc_usable_size", pg, p);
        return pg->bsize;
    }
    if (pa_unlikely(pa_in_reservation(p))) pa_free_invalid("malloc_usable_size", p);
    return pa_sys_usable_size(p);
}

PA_API int pa_is_small(const void *p) {
    pa_page *pg = pa_page_of(p);
    return pg && pg->bsize != 0;
}

PA_API int pa_alignment_mode(void) {
    (void)pa_ready();
    return pa_opt.align;
}

PA_API int pa_malloc_trim(size_t pad) {
    int ours = pa_ready() && (pa_mesh_trim() != 0) + (pa_pool_trim() != 0);
    int sys = pa_sys_trim(pad);
    return ours || sys;
}
