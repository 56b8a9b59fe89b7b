/* SPDX-License-Identifier: MIT
 * Everything that is not ours: blocks over 512 bytes, alignments over 16, and pointers pyalloc did not
 * hand out go to glibc's allocator through its exported __libc_* entry points (no dlsym on any path
 * that allocates, so no recursion). */
#include "internal.h"

#include <dlfcn.h>
#include <malloc.h>
#include <stdlib.h>

#if PA_PASSTHROUGH_LIBC
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

#define SYS_MEMALIGN __libc_memalign
#define SYS_VALLOC __libc_valloc
#define SYS_PVALLOC __libc_pvalloc

/* glibc exports no __libc_malloc_usable_size: look up libc's own malloc_usable_size once (in libc
 * itself, so neither our override nor a sanitizer's interceptor answers). dlsym runs only for a
 * foreign pointer, never under a lock of ours; if it allocates, our malloc serves it. */
typedef size_t (*usable_fn)(void *);
static _Atomic(usable_fn) sys_usable;

size_t pa_sys_usable_size(void *p) {
    usable_fn f = atomic_load_explicit(&sys_usable, memory_order_acquire);
    if (!f) {
        void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
        if (libc) f = (usable_fn)dlsym(libc, "malloc_usable_size");
        if (!f) {
            /* No dynamic glibc to ask: read glibc's chunk header (size field before the block;
             * bit 1 marks an mmapped chunk, whose header is 16 bytes). */
            size_t sz = ((size_t *)p)[-1];
            return (sz & ~(size_t)7) - ((sz & 2) ? 16 : 8);
        }
        atomic_store_explicit(&sys_usable, f, memory_order_release);
    }
    return f(p);
}

/* glibc initialises its allocator (ptmalloc_init) in whichever thread first calls it, without a
 * lock, and gives that thread main_arena, whose count of attached threads starts at 1 for the main
 * thread. Under pyalloc the main thread may never call it: then the first passthrough calls come
 * from worker threads, two of them can both take main_arena without counting it, and the second to
 * exit aborts in __malloc_arena_thread_freeres ("a->attached_threads > 0"). Start glibc's
 * allocator from our own start-up instead, in the thread that loads us. */
void pa_sys_prime(void) { __libc_free(__libc_malloc(1)); }

/* glibc's own malloc_trim, for the passthrough's memory (our override hides it by name). */
typedef int (*trim_fn)(size_t);
int pa_sys_trim(size_t pad) {
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    trim_fn f = libc ? (trim_fn)dlsym(libc, "malloc_trim") : NULL;
    return f ? f(pad) : 0;
}
#else
#define SYS_MEMALIGN memalign
#define SYS_VALLOC valloc
#define SYS_PVALLOC pvalloc
size_t pa_sys_usable_size(void *p) { return malloc_usable_size(p); }
int pa_sys_trim(size_t pad) { return malloc_trim(pad); }
void pa_sys_prime(void) {}
#endif

#if PA_STATS
/* While sampling: the thread's byte countdown, inline; a request that runs it out is sampled. */
static inline void *sys_sampled(void *p, size_t n) {
    pa_heap *h = pa_tls_heap;
    if (h->live && (h->smp.sys_cd -= (int64_t)n) < 0) return pa_sample_sys_due(h, p, n);
    return p;
}
/* ... and a block about to go back to glibc loses its record first, if the filter says it has one. */
static inline void sys_unsampled(void *p) {
    if (pa_unlikely(pa_sample_recorded(p))) pa_sample_sys_retire(p);
}
#endif

/* glibc served a request of n bytes with p (NULL: it failed). */
static inline void *sys_served(void *p, size_t n) {
    pa_stat_sys(n, PA_SYS_BYTES(p));
#if PA_STATS
    if (pa_unlikely(n >= PA_PEAK_LARGE)) pa_stat_large(n);
    if (PA_SAMPLING()) return sys_sampled(p, n);
#endif
    return p;
}

void *pa_sys_malloc(size_t n) { return sys_served(PA_SYS_MALLOC(n), n); }

void *pa_sys_calloc(size_t n, size_t s) { return sys_served(PA_SYS_CALLOC(n, s), n * s); }

void *pa_sys_realloc(void *p, size_t n) {
#if PA_STATS
    if (PA_SAMPLING()) sys_unsampled(p); /* p's record, if it has one, goes first */
#endif
    size_t old = PA_SYS_BYTES(p); /* read before: the call may free p */
    void *q = pa_sys_tab.realloc(p, n, PA_CALLER());
    if (!q && n) old = 0; /* failed: p is untouched (realloc(p, 0) freed it and returned NULL) */
    pa_stat_sys(n, (uint64_t)PA_SYS_BYTES(q) - old);
#if PA_STATS
    if (pa_unlikely(n >= PA_PEAK_LARGE)) pa_stat_large(n);
    if (PA_SAMPLING()) return sys_sampled(q, n);
#endif
    return q;
}

void pa_sys_free(void *p) {
    if (!p) return;
#if PA_STATS
    size_t u = pa_sys_block_bytes(p);
    pa_heap *h = pa_tls_heap;
    if (pa_likely(h->live)) h->sys_live -= u;
    else atomic_fetch_sub_explicit(&pa_orphan_sys_live, u, memory_order_relaxed);
    if (pa_unlikely(u >= PA_PEAK_LARGE)) pa_stat_large_free(); /* memory shrinks: a point if due */
    if (PA_SAMPLING()) sys_unsampled(p); /* its record, if it has one, goes before the block */
#endif
    pa_sys_tab.free(p, PA_CALLER());
}

void *pa_sys_memalign(size_t a, size_t n) { return sys_served(SYS_MEMALIGN(a, n), n); }
void *pa_sys_valloc(size_t n) { return sys_served(SYS_VALLOC(n), n); }
void *pa_sys_pvalloc(size_t n) { return sys_served(SYS_PVALLOC(n), n); }
