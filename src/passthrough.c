/* SPDX-License-Identifier: MIT
 * Everything that is not ours: blocks over 512 bytes, alignments over 16, and pointers pyalloc did not
 * hand out go to glibc's allocator through its exported __libc_* entry points (no dlsym on any path
 * that allocates, so no recursion). */
#include "internal.h"

#include <dlfcn.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

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
/* Each request is counted in the thread's heap before glibc sees it (calls, bytes asked), and the
 * usable bytes of what glibc hands out and takes back after (live). Sampling (sites.h) counts the
 * same bytes down in the same heap: a subtraction from memory and a branch on its sign, the
 * request that runs it out the one to sample; while sampling is off it starts at PA_CD_OFF and
 * never runs out, so the passthrough tests no flag. A thread without a heap, and the sampled
 * requests, go out of line (sys_slow). */
enum { OP_MALLOC, OP_CALLOC, OP_REALLOC, OP_MEMALIGN, OP_VALLOC, OP_PVALLOC };

/* Counts a request of n bytes in live heap h; true if it is the one to sample. */
static inline bool sys_count(pa_heap *h, size_t n) {
    h->sys_calls++;
    __asm__("" : "+m"(h->sys_calls)); /* adds to memory, not SSE instructions */
    h->sys_bytes += n;
    __asm__("" : "+m"(h->sys_bytes));
    int64_t cd = (int64_t)((uint64_t)h->sys_cd - n); /* wraps for a request near 2^64, which fails */
    h->sys_cd = cd;
    return pa_unlikely(cd < 0);
}

/* glibc's block p (NULL: none) came, and a block of old usable bytes went, for a request of n. */
static inline void *sys_got(pa_heap *h, void *p, size_t n, size_t old) {
    uint64_t d = (uint64_t)PA_SYS_BYTES(p) - old;
    if (pa_likely(h != NULL)) h->sys_live += d;
    else atomic_fetch_add_explicit(&pa_orphan_sys_live, d, memory_order_relaxed);
    if (pa_unlikely(n >= PA_PEAK_LARGE)) pa_stat_large(n);
    return p;
}

_Static_assert(PA_PEAK_LARGE == 0x10000, "PA_SYS_CHECK tests u >= PA_PEAK_LARGE as u > 0xfffe");

/* The request to make of glibc for a sampled block of n bytes (n < PA_PEAK_LARGE): the least that
 * gets a chunk whose usable size has the mark. glibc's chunk for a request r is
 * max(32, (r + 8 + 15) & ~15) bytes, its usable size 8 less; the chunk it hands out is that or 16
 * bytes more (malloc, calloc and realloc do not split a free chunk to leave less than 32 bytes),
 * or 32 more (memalign keeps a tail of up to 32); an mmapped chunk's usable size is a multiple of
 * the page less 16. A chunk of 976 mod 1024 bytes then has 968, 984 or 1000 usable bytes mod 1024,
 * an mmapped one 1008: marked, all. (sys_slow checks, and does not record a block without it.) */
static size_t sys_mark_request(size_t n) {
    size_t chunk = n < 24 ? 32 : (n + 8 + 15) & ~(size_t)15;
    chunk += (976 - chunk) & 1023;
    return chunk - 8;
}

/* glibc's own answer to request op. */
static void *sys_plain(int op, void *p, size_t a, size_t n, const void *caller) {
    switch (op) {
    case OP_MALLOC: return PA_SYS_MALLOC(n);
    case OP_CALLOC: return PA_SYS_CALLOC(a, n);
    case OP_REALLOC: return pa_sys_tab.realloc(p, n, caller);
    case OP_MEMALIGN: return SYS_MEMALIGN(a, n);
    case OP_VALLOC: return SYS_VALLOC(n);
    default: return SYS_PVALLOC(n);
    }
}

/* The requests that do not take the inline path: the thread has no heap yet (h NULL: one is
 * attached, or the shared counters take the request), or this request is the one to sample (due),
 * or a realloc's block may have a record (p's old usable bytes; it goes first). op's arguments are
 * (p, a, n): realloc (p, -, n), calloc (-, count, size), memalign (-, alignment, n), the others
 * (-, -, n). A sampled request below PA_PEAK_LARGE bytes asks glibc for up to 1 KiB more, so that
 * its block has the mark (sys_mark_request); a larger one is glibc's own answer. */
static __attribute__((noinline)) void *sys_slow(pa_heap *h, int op, void *p, size_t a, size_t n,
                                                          size_t old, bool due, const void *caller) {
    size_t asked = op == OP_CALLOC ? a * n : n; /* as the inline paths count (alloc.c checked calloc's) */
    size_t bytes = op == OP_PVALLOC ? (n + PA_OS_PAGE - 1) & ~(size_t)(PA_OS_PAGE - 1) : asked;
    if (!h) {
        h = pa_heap_attach(); /* as its first small block would: its next requests count without atomics */
        if (h) due = sys_count(h, asked);
        else {
            atomic_fetch_add_explicit(&pa_orphan_sys_calls, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&pa_orphan_sys_bytes, asked, memory_order_relaxed);
        }
    }
    bool sample = due && pa_sample_sys_due(h) && bytes != 0 && bytes >= n; /* pvalloc's may wrap */
    if (op == OP_REALLOC && PA_SYS_CHECK(old) && PA_SAMPLING() && pa_sample_recorded(p))
        pa_sample_sys_retire(p); /* p's record goes before glibc may have the block back */
    void *q;
    if (!sample || bytes >= PA_PEAK_LARGE) {
        q = sys_plain(op, p, a, n, caller);
    } else { /* the same request, made larger so that the block carries the mark */
        size_t r = sys_mark_request(bytes);
        switch (op) {
        case OP_MALLOC: q = PA_SYS_MALLOC(r); break;
        case OP_CALLOC: q = PA_SYS_CALLOC(1, r); break;
        case OP_REALLOC: q = pa_sys_tab.realloc(p, r, caller); break;
        case OP_MEMALIGN: q = SYS_MEMALIGN(a, r); break;
        default: q = SYS_MEMALIGN(PA_OS_PAGE, r); break; /* valloc, pvalloc (bytes: rounded up) */
        }
    }
    if (op == OP_REALLOC && !q && n) old = 0; /* failed: p is untouched (realloc(p, 0) freed it) */
    sys_got(h, q, bytes, op == OP_REALLOC ? old : 0);
    if (sample && q) /* unmarked, the record could not be found at the free: not recorded (counted) */
        pa_sample_sys_record(PA_SYS_CHECK(PA_SYS_BYTES(q)) ? q : NULL, bytes, (uintptr_t)__builtin_return_address(0));
    return q;
}

/* A block to be freed that may have a record, or is large (a timeline point may be due). */
static __attribute__((noinline)) PA_COLD void sys_free_marked(void *p, size_t u) {
    if (u >= PA_PEAK_LARGE) pa_stat_large_free(); /* memory shrinks: a point if due */
    if (PA_SAMPLING() && pa_sample_recorded(p)) pa_sample_sys_retire(p); /* before the block goes */
}

/* The body of a request's function: its bytes asked counted, then glibc's answer plain, or
 * sys_slow's. */
#define SYS_SERVE(op, a, n, asked, plain)                                                   \
    {                                                                                     \
        pa_heap *h_ = pa_tls_heap;                                                        \
        if (pa_unlikely(!h_->live)) return sys_slow(NULL, op, NULL, a, n, 0, false, PA_CALLER()); \
        if (sys_count(h_, asked)) return sys_slow(h_, op, NULL, a, n, 0, true, PA_CALLER()); \
        return sys_got(h_, plain, asked, 0);                                              \
    }

void *pa_sys_malloc(size_t n) SYS_SERVE(OP_MALLOC, 0, n, n, PA_SYS_MALLOC(n))
void *pa_sys_calloc(size_t n, size_t s) SYS_SERVE(OP_CALLOC, n, s, n * s, PA_SYS_CALLOC(n, s)) /* alloc.c checked n * s */

void *pa_sys_realloc(void *p, size_t n) {
    pa_heap *h = pa_tls_heap;
    size_t old = pa_sys_block_bytes(p); /* read before: the call may free p */
    if (pa_unlikely(!h->live)) return sys_slow(NULL, OP_REALLOC, p, 0, n, old, false, PA_CALLER());
    if (sys_count(h, n)) return sys_slow(h, OP_REALLOC, p, 0, n, old, true, PA_CALLER());
    if (PA_SYS_CHECK(old) && PA_SAMPLING() && pa_sample_recorded(p)) /* its record goes first */
        return sys_slow(h, OP_REALLOC, p, 0, n, old, false, PA_CALLER());
    void *q = pa_sys_tab.realloc(p, n, PA_CALLER());
    if (!q && n) old = 0; /* failed: p is untouched (realloc(p, 0) freed it and returned NULL) */
    return sys_got(h, q, n, old);
}

void pa_sys_free(void *p) {
    if (!p) return;
    size_t u = pa_sys_block_bytes(p);
    pa_heap *h = pa_tls_heap;
    if (pa_likely(h->live)) h->sys_live -= u;
    else atomic_fetch_sub_explicit(&pa_orphan_sys_live, u, memory_order_relaxed);
    if (PA_SYS_CHECK(u)) sys_free_marked(p, u);
    pa_sys_tab.free(p, PA_CALLER());
}

void *pa_sys_memalign(size_t a, size_t n) SYS_SERVE(OP_MEMALIGN, a, n, n, SYS_MEMALIGN(a, n))
void *pa_sys_valloc(size_t n) SYS_SERVE(OP_VALLOC, 0, n, n, SYS_VALLOC(n))
void *pa_sys_pvalloc(size_t n) SYS_SERVE(OP_PVALLOC, 0, n, n, SYS_PVALLOC(n))
#else
void *pa_sys_malloc(size_t n) { return PA_SYS_MALLOC(n); }
void *pa_sys_calloc(size_t n, size_t s) { return PA_SYS_CALLOC(n, s); }
void *pa_sys_realloc(void *p, size_t n) { return pa_sys_tab.realloc(p, n, PA_CALLER()); }
void pa_sys_free(void *p) {
    if (p) pa_sys_tab.free(p, PA_CALLER());
}
void *pa_sys_memalign(size_t a, size_t n) { return SYS_MEMALIGN(a, n); }
void *pa_sys_valloc(size_t n) { return SYS_VALLOC(n); }
void *pa_sys_pvalloc(size_t n) { return SYS_PVALLOC(n); }
#endif
