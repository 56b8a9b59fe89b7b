/* SPDX-License-Identifier: MIT
 * Declarations shared between pyalloc's files, grouped by the file that defines them,
 * and the small inline helpers of the fast paths. */
#ifndef PA_INTERNAL_H
#define PA_INTERNAL_H

#include "types.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

/* Everything declared below is internal to the library: hidden, so it is reached without the GOT. */
#pragma GCC visibility push(hidden)

#define PA_API __attribute__((visibility("default")))
#define PA_HIDDEN __attribute__((visibility("hidden")))
#define PA_NOINLINE __attribute__((noinline))
#define PA_COLD __attribute__((cold, noinline))
#define pa_likely(x) __builtin_expect(!!(x), 1)
#define pa_unlikely(x) __builtin_expect(!!(x), 0)

#define pa_relaxed memory_order_relaxed
#define pa_load_relaxed(p) atomic_load_explicit((p), memory_order_relaxed)
#define pa_store_relaxed(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)

/* The fast paths' reads of words other threads may write (pa_limit, a page's owner and carve
 * threshold). A relaxed load is a plain mov on x86-64, but compilers will not fold it into the
 * compare that uses it; reading through a volatile-free non-atomic lvalue lets them, one
 * instruction per read. The value is the same word a relaxed load returns (aligned, never torn),
 * and each is read once per call. Under ThreadSanitizer the relaxed load stays, so races are
 * still checked. */
#if defined(__SANITIZE_THREAD__)
#define pa_load_fast(p) pa_load_relaxed(p)
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define pa_load_fast(p) pa_load_relaxed(p)
#endif
#endif
#ifndef pa_load_fast
#define pa_load_fast(p) (*(const __typeof__(*(p) + 0) *)(p))
#endif

/* ---- msg.c: diagnostics that never allocate ---- */
/* Writes "pyalloc: <what> <addr>\n" to stderr and aborts. */
_Noreturn void pa_fatal(const char *what, const void *addr) PA_COLD;
/* Writes "pyalloc: <text>\n" without aborting; pa_warn_parts writes the parts one after another. */
void pa_warn(const char *text);
void pa_warn_parts(const char *const *parts, size_t count);
/* Formats into buf without allocating; returns bytes written. */
size_t pa_fmt_u64(char *buf, uint64_t v);
bool pa_fmt_path(char *buf, size_t cap, const char *pattern, const char *suffix); /* %p: the pid */
/* The reports' output (stats.c, sample.c): a buffer flushed with write(2), nothing allocated. After
 * a write fails nothing more is written, and failed says so. */
typedef struct pa_writer {
    int fd;
    bool failed;
    size_t n;
    char buf[4096];
} pa_writer;
void pa_w_flush(pa_writer *w);
void pa_w_mem(pa_writer *w, const char *s, size_t len);
void pa_w_str(pa_writer *w, const char *s);
size_t pa_fmt_hex(char *buf, uint64_t v);
void pa_write_all(int fd, const char *s, size_t n);

#ifdef PA_DEBUG
#define pa_assert(x) ((x) ? (void)0 : pa_assert_fail(#x, __FILE__, __LINE__))
_Noreturn void pa_assert_fail(const char *expr, const char *file, int line) PA_COLD;
#else
#define pa_assert(x) ((void)0)
#endif

#include "sites.h"

/* ---- options.c: PYALLOC_* read from environ without allocating ---- */
typedef struct pa_options {
    int align;             /* 16 (default) or 8 (classic) */
    size_t reserve;        /* bytes of address space to reserve */
    size_t dirty_min;      /* empty pages the pool may keep resident however long they wait */
    unsigned dirty_ratio;  /* ... or live pages / dirty_ratio, whichever is larger */
    uint32_t purge_delay;  /* ms an empty page stays resident before its memory goes back */
    int background;        /* PYALLOC_BACKGROUND: PA_BG_AUTO, PA_BG_ON or PA_BG_OFF */
    size_t glibc_trim;     /* PYALLOC_GLIBC_TRIM_KB in bytes: fresh free memory in glibc's heap worth a
                              malloc_trim once the program is quiet; 0: never */
    int stats;             /* PYALLOC_STATS: 0 no report, 1 text, 2 json, 3 both, at exit */
    bool publish;          /* PYALLOC_PUBLISH: the figures for `pyalloc top` (monitor.c) */
    uint32_t timeline_ms;  /* PYALLOC_TIMELINE_MS: between timeline points, at first */
    int mesh;              /* PYALLOC_MESH: 1 compacts sparse pages onto shared frames (mesh.c) */
    char stats_file[1024]; /* PYALLOC_STATS_FILE, copied at start-up; "" = stderr */
    bool sites;            /* PYALLOC_SITES: sample allocations and their stacks (sample.c) */
    uint64_t sample_bytes; /* PYALLOC_SAMPLE_BYTES: about one sample per this many bytes */
    char sites_file[1024]; /* PYALLOC_SITES_FILE: where the sites go at exit ("": the default) */
} pa_options;
extern pa_options pa_opt;
void pa_options_read(void); /* pa_opt from the defaults and the environment */
enum { PA_BG_OFF = 0, PA_BG_AUTO = 1, PA_BG_ON = 2 };
/* Value of environment variable name, or NULL; never allocates. */
const char *pa_getenv(const char *name);

/* ---- os.c: the only calls into the kernel; errno is preserved ---- */
uint64_t pa_os_rss(void);   /* resident bytes (/proc/self/statm); 0 where /proc is not mounted */
long pa_os_threads(void);   /* the process's threads (/proc/self/stat); -1 if unknown */
long pa_os_read_proc(const char *path, char *buf, size_t cap); /* a small /proc file; -1 */
void *pa_os_reserve(size_t size, size_t align);
bool pa_os_commit(void *p, size_t size);
void pa_os_decommit(void *p, size_t size);
void *pa_os_map(size_t size);
void pa_os_unmap(void *p, size_t size);
bool pa_os_protect(void *p, size_t size, bool writable);

/* ---- sizeclass.h, sizeclass.c: size -> class ---- */
#include "sizeclass.h"

/* ---- arena.c: the reservation, and the global pool of pages ---- */
/* The reservation; the fast paths read these (separate variables: each one RIP-relative load). */
extern PA_HIDDEN uintptr_t pa_base;          /* first byte of page 0 */
extern PA_HIDDEN _Atomic uintptr_t pa_limit; /* committed bytes: "mine" means p - base < limit */
extern PA_HIDDEN pa_page *pa_pages;          /* descriptors, parallel to the pages */
extern size_t pa_reserved;         /* bytes reserved for pages */
extern pthread_mutex_t pa_pool_lock;
bool pa_arena_init(void);
pa_page *pa_pool_take(void);                 /* a page not in use, or NULL when the reservation is full */
void pa_pool_give(pa_page *pg);              /* an empty page back; may give memory to the OS */
size_t pa_pool_dirty_pages(void);
size_t pa_pool_trim(void);                    /* give every dirty pooled page back; returns pages */
typedef struct pa_pool_stats {
    uint64_t committed, purged, dirty; /* pages: committed, given back to the OS (ever), empty resident */
    uint64_t taken, returned;          /* pages handed to heaps, and given back to the pool, ever */
} pa_pool_stats;
void pa_pool_counters(pa_pool_stats *out);
void pa_pool_tick(void);                      /* give back the pages that waited out the delay */
/* For the background thread: give back at most one batch of expired pages (one lock hold); returns
 * the pages given back, and through *next when the next dirty page expires (UINT32_MAX: none). */
size_t pa_pool_expire_step(uint32_t now, uint32_t *next);
uint32_t pa_clock_ms(void);                   /* monotonic, coarse; never allocates */

static inline uint32_t pa_page_index(const pa_page *pg) { return (uint32_t)(pg - pa_pages); }
static inline pa_page *pa_page_at(uint32_t link) { return link ? &pa_pages[link - 1] : NULL; }
static inline uint32_t pa_page_link(const pa_page *pg) { return pg ? pa_page_index(pg) + 1 : 0; }

/* Lists of pages (types.h): whoever owns the list (a heap's thread, or the lock that guards it)
 * calls these. */
static inline void pa_page_list_push(pa_page_list *l, pa_page *pg) { /* at the head */
    pg->prev = 0;
    pg->next = l->head;
    if (l->head) pa_page_at(l->head)->prev = pa_page_link(pg);
    else l->tail = pa_page_link(pg);
    l->head = pa_page_link(pg);
}
static inline void pa_page_list_insert_after(pa_page_list *l, pa_page *after, pa_page *pg) {
    pg->prev = pa_page_link(after);
    pg->next = after->next;
    if (after->next) pa_page_at(after->next)->prev = pa_page_link(pg);
    else l->tail = pa_page_link(pg);
    after->next = pa_page_link(pg);
}
static inline void pa_page_list_unlink(pa_page_list *l, pa_page *pg) {
    if (pg->prev) pa_page_at(pg->prev)->next = pg->next;
    else l->head = pg->next;
    if (pg->next) pa_page_at(pg->next)->prev = pg->prev;
    else l->tail = pg->prev;
    pg->next = pg->prev = 0;
}
static inline uintptr_t pa_page_start(const pa_page *pg) {
    return pa_base + ((uintptr_t)pa_page_index(pg) << PA_PAGE_SHIFT);
}
/* The page of p, or NULL when p is not in committed pool memory. */
static inline pa_page *pa_page_of(const void *p) {
    uintptr_t off = (uintptr_t)p - pa_base;
    if (off >= pa_load_relaxed(&pa_limit)) return NULL;
    return &pa_pages[off >> PA_PAGE_SHIFT];
}
/* True when p falls in the reserved range at all (committed or not). */
static inline bool pa_in_reservation(const void *p) {
    return (uintptr_t)p - pa_base < pa_reserved; /* 0 when nothing is reserved */
}

/* ---- page.c: one page's blocks, and a heap's pages ---- */
extern pa_page pa_page_empty;               /* no free block: direct[] of sizes without a page */
void pa_page_init(pa_page *pg, struct pa_heap *h, uint32_t cls, uint64_t key);
void pa_page_retire(pa_page *pg);           /* empty and out of use: no class, no block starts */
bool pa_page_extend(pa_page *pg);            /* carve fresh blocks; false if the page has none left */
uint32_t pa_page_collect(pa_page *pg);       /* move thread_free into free; returns blocks moved */
bool pa_block_list_contains(const pa_page *pg, pa_block *list, const pa_block *b);
void *pa_malloc_slow(pa_heap *h, size_t size);     /* the current page of size's class ran dry */
void *pa_malloc_counted(pa_heap *h, size_t size);  /* a block of h's, the allocation counted already */
void pa_page_unbias(pa_page *pg);                  /* a FULL page's used back to the true count */
void pa_page_unfull(pa_heap *h, pa_page *pg);      /* a FULL page of h has a free block again */
void pa_page_emptied(pa_heap *h, pa_page *pg);     /* h's page has no block out: keep or release */
void pa_page_insert_avail(pa_heap *h, pa_page *pg); /* onto avail, behind the current page */
void pa_page_detach(pa_heap *h, pa_page *pg);       /* off h's avail list (not its head): mesh.c freezes it */
void pa_page_attach(pa_heap *h, pa_page *pg);       /* h's again, on avail: mesh.c thawed it */
void pa_page_sweep(pa_heap *h, uint32_t cls);       /* give back h's pages of cls that remote frees emptied */
void pa_page_notify(pa_page *pg);                  /* a remote free landed in a FULL page */
/* The block-start test's constants for blocks of bsize bytes (types.h, "Valid block starts"):
 * magic = floor(2^64 / bsize) + 1, and thresh for the first k blocks carved. */
static inline uint64_t pa_block_magic(uint32_t bsize) {
    return (uint64_t)(((unsigned __int128)1 << 64) / bsize) + 1;
}
static inline uint64_t pa_block_thresh(uint64_t magic, uint32_t bsize, uint32_t k) {
    return k ? (uint64_t)(k - 1) * (magic * bsize) + 1 : 0; /* magic * bsize mod 2^64 is the step */
}
static inline bool pa_block_is_start(const pa_page *pg, uintptr_t poff) {
    return (uint64_t)poff * pg->magic < pa_load_fast(&pg->thresh);
}
/* The same test on a whole address: is b a block start carved in pg (types.h, "Valid block
 * starts")? Rejects an address in any other page, and the end mark. */
static inline bool pa_block_in_page(const pa_page *pg, const pa_block *b) {
    return (uint64_t)(uintptr_t)b * pg->magic - pg->start_magic < pa_load_fast(&pg->thresh);
}

/* ---- free lists: every link of a free block is read and written through these ----
 * A free block's first word is the next free block XOR the page's key; a list ends in the page's
 * end mark (start + 1), so every link, the last one too, decodes to an address in its own page.
 * A link is followed only once checked (types.h, "Free lists"): the fast pop checks the head it
 * hands out, the slow paths check every link they walk. */
static inline pa_block *pa_list_end(const pa_page *pg) { return (pa_block *)(pa_page_start(pg) | 1); }
static inline bool pa_list_is_end(const pa_block *b) { return ((uintptr_t)b & 1) != 0; }
/* "heap corruption: free list of page P (class C) damaged ..." and abort (msg.c). */
_Noreturn void pa_list_damaged(const pa_page *pg) PA_COLD;
/* The block after b on its list (or the end mark), as stored: not yet checked. */
static inline pa_block *pa_block_next(const pa_page *pg, const pa_block *b) {
    return (pa_block *)(b->next ^ pg->key);
}
/* The block after b on its list, or the end mark; aborts if the link is neither. */
static inline pa_block *pa_block_next_checked(const pa_page *pg, const pa_block *b) {
    pa_block *nx = pa_block_next(pg, b);
    if (pa_unlikely(!pa_block_in_page(pg, nx)) && nx != pa_list_end(pg)) pa_list_damaged(pg);
    return nx;
}
static inline void pa_block_set_next(const pa_page *pg, pa_block *b, const pa_block *next) {
    b->next = (uintptr_t)next ^ pg->key;
}
/* b onto the page's local free list (owner only). */
static inline void pa_block_push(pa_page *pg, pa_block *b) {
    pa_block_set_next(pg, b, pg->free);
    pg->free = b;
}
/* b, the head of the page's local free list and checked with pa_block_in_page, off it, as a live
 * block. Its link becomes the head unchecked: the next pop checks it before handing it out. */
static inline void pa_block_pop(pa_page *pg, pa_block *b) {
    pg->free = pa_block_next(pg, b);
    b->next = 0; /* a live block never shows a free link, and never shows the key */
}
/* The head of pg's local free list is the end mark or a block start: false if it is damaged. */
static inline bool pa_list_head_ok(const pa_page *pg) {
    return pg->free == pa_list_end(pg) || pa_block_in_page(pg, pg->free);
}
/* The cheap double-free test: a live block's first word never decodes into its own page. */
static inline bool pa_block_looks_free(const pa_page *pg, const pa_block *b) {
    return (((uintptr_t)pa_block_next(pg, b) ^ (uintptr_t)b) >> PA_PAGE_SHIFT) == 0;
}

/* ---- heap.c: per-thread heaps, abandoned pages, thread exit ---- */
extern __thread pa_heap *pa_tls_heap __attribute__((tls_model("initial-exec")));
extern pa_heap pa_heap_empty;   /* a thread's heap before it has one: every direct[] slot empty */
extern pa_heap pa_heap_dead;    /* ... and after its exit hook */
extern pthread_mutex_t pa_heaps_lock, pa_abandoned_lock, pa_notify_lock;
pa_heap *pa_heap_attach(void); /* this thread's heap, created on first use; NULL if it cannot have one */
pa_heap *pa_heap_first(void);                       /* registry walk, under pa_heaps_lock */
pa_page *pa_heap_adopt(pa_heap *h, uint32_t cls);   /* an abandoned page of cls, now h's, or NULL */
void pa_heap_adopt_page(pa_heap *h, pa_page *pg);   /* under abandoned_lock: pg becomes h's */
void pa_heap_unabandon(pa_page *pg);                /* under abandoned_lock: off its abandoned list */
void pa_heap_thread_exit(void *arg);

/* ---- mesh.c: compaction without moving blocks (PYALLOC_MESH=1) ---- */
extern pthread_mutex_t pa_mesh_lock;
void pa_mesh_sparse(pa_heap *h, pa_page *pg);      /* pg (h's, on avail) fell to its sparse mark */
void pa_mesh_tick(pa_heap *h);                     /* a slow path of h's thread: a pass if one is due */
void pa_mesh_free(pa_page *pg, pa_block *b);       /* b in a page that mesh.c froze */
bool pa_mesh_thaw(pa_heap *h, uint32_t cls);        /* a frozen page of cls back on h's avail list */
bool pa_mesh_is_live(const pa_page *pg, const void *p); /* p a live block of a frozen page? */
size_t pa_mesh_trim(void);                         /* malloc_trim: a pass now (if allowed); pages */
void pa_mesh_fork_prepare(void);                   /* with pa_mesh_lock held: frames become private */
void pa_mesh_fork_after(void);                     /* parent and child: a new memfd from the next pass */
typedef struct pa_mesh_counters {
    uint64_t pages, regions, frames, holes, passes, vmas, live;
} pa_mesh_counters;
void pa_mesh_counters_get(pa_mesh_counters *c);
/* The planner, exposed for tests/unit: regions in address order onto the frames of one half. */
#define PA_MESH_RWORDS 8 /* a region's live words, one bit per 8 bytes of 4 KiB */
typedef struct pa_mesh_region {
    uint32_t page;     /* page index */
    uint8_t r;         /* which 4 KiB of it */
    uint8_t adj;       /* the next region of the plan is the next one in memory */
    uint8_t was;       /* mapped from the memfd now */
    uint8_t pad;
    uint64_t bits[PA_MESH_RWORDS];
} pa_mesh_region;
typedef struct pa_mesh_plan {
    pa_mesh_region *cand;   /* n regions in */
    uint32_t *plan;         /* out: frame + 1 for each region, 0: stays anonymous */
    uint32_t *withc;        /* frames with content (nwithc of them), grows */
    uint64_t *occ;          /* per frame: live words (PA_MESH_RWORDS each), grows */
    uint16_t *cnt;          /* per frame: regions with content on it, grows */
    size_t base;            /* the half's first frame in the memfd */
    size_t n, nwithc, top, top0; /* frames [0, top) may have content; beyond, fresh */
    int64_t pieces, budget; /* VMAs the plan adds, and the most it may */
} pa_mesh_plan;
void pa_mesh_plan_lanes(pa_mesh_plan *P);
static inline bool pa_page_meshed(const pa_page *pg) {
    return pa_unlikely(atomic_load_explicit(&pg->meshed, memory_order_relaxed) != PA_MESH_NONE);
}

/* ---- stats.c: counters kept per thread (in its heap), merged when read ---- */
#if PA_STATS
extern _Atomic uint64_t pa_orphan_sys_calls, pa_orphan_sys_bytes, pa_orphan_sys_live;
extern _Atomic uint64_t pa_orphan_nfree[PA_NCLASS];
/* A small block of class cls freed on a slow path, counted in the freeing thread's heap (the fast
 * path counts its own), or in the shared orphan counters for a thread without one. */
static inline void pa_stat_free(pa_heap *me, uint32_t cls) {
    if (pa_likely(me->live)) me->nfree[cls]++;
    else atomic_fetch_add_explicit(&pa_orphan_nfree[cls], 1, memory_order_relaxed);
}
#define PA_STAT(x) x
#else
static inline void pa_stat_free(pa_heap *me, uint32_t cls) { (void)me, (void)cls; }
#define PA_STAT(x) ((void)0)
#endif
extern _Atomic uint64_t pa_orphan_remote_frees;
/* Pages per class, now and at the peak: kept whether or not PA_STATS (a page event is rare). */
void pa_stat_page(uint32_t cls, int delta);
void pa_stats_at_exit(void); /* the PYALLOC_STATS report, if asked for */
/* The readers of the heaps' counters (stats.c, and sample.c's pa_heap_allocs), whose writers are
 * the fast paths' plain adds (one writer each,
 * a word at a time: a read sees the value before or after an add, never half of one). The peak
 * and the timeline read them while every thread runs, so ThreadSanitizer would report each pair;
 * it checks everything else. */
#if defined(__SANITIZE_THREAD__)
#define PA_COUNTER_READER __attribute__((no_sanitize("thread")))
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PA_COUNTER_READER __attribute__((no_sanitize("thread")))
#endif
#endif
#ifndef PA_COUNTER_READER
#define PA_COUNTER_READER
#endif
uint64_t pa_stats_sys_bytes(void); /* bytes asked of glibc, all heaps; UINT64_MAX if not counted */
/* Bytes live now: small blocks (blocks out x class size) and glibc blocks (usable sizes), for the
 * peak's evaluations (monitor.c, one thread at a time). pa_stats_get reads the same counters. */
void pa_live_bytes(uint64_t *small, uint64_t *large);

/* ---- monitor.c: the peak, the timeline and their publication for `pyalloc top` ---- */
/* A heap is about to take a page from outside its own lists (an abandoned page, an idle one, a
 * spare, the pool): a moment memory may have grown. Called by page.c's slow path. */
void pa_stat_growth(pa_heap *h);
/* A passthrough request of n >= PA_PEAK_LARGE bytes was served to this thread. */
void pa_stat_large(size_t n) PA_COLD;
void pa_stat_large_free(void) PA_COLD; /* ... and one of them is about to be freed */
/* The pool clock (pa_clock_ms) at which the next timeline point is due, and the test for it that
 * slow paths may make where they read that clock anyway (arena.c's pa_pool_tick). */
extern _Atomic uint32_t pa_mon_next;
static inline bool pa_mon_due(uint32_t now) {
    return (int32_t)(now - atomic_load_explicit(&pa_mon_next, memory_order_relaxed)) >= 0;
}
void pa_mon_point(void); /* a point now (unless another thread is taking one) */
/* For a helper thread (issue 10's background thread): takes the point that is due, if one is, and
 * returns the pool clock at which the next one is due. */
uint32_t pa_mon_poll(void);
void pa_mon_final(void); /* the point at exit, before the report */
typedef struct pa_mon_now {
    uint64_t peak_live, peak_t_ms, peak_rss; /* the highest live figure evaluated, when, RSS then */
    uint64_t t_ms, rss;                      /* ms since start, and the resident set size, now */
    uint64_t start_ms;                       /* CLOCK_MONOTONIC at start (or fork), ms */
} pa_mon_now;
void pa_mon_read(pa_mon_now *out);
uint64_t pa_mon_start_ms(void);
/* The timeline, for the report: *n points of PA_MON_POINT_FIELDS values each (t_ms, live, rss,
 * small, large, given back), and the interval between points now; between pa_mon_hold and
 * pa_mon_release no point is added or merged. NULL when there is none. */
#define PA_MON_POINT_FIELDS 6
const uint64_t *pa_mon_hold(size_t *n, uint64_t *interval_ms);
void pa_mon_release(void);

/* ---- free.c ---- */
_Noreturn void pa_free_invalid(const char *fn, const void *p) PA_COLD;
void pa_free_local_slow(pa_heap *h, pa_page *pg);   /* after the owner's free: page was FULL or is empty */
void pa_free_remote(pa_page *pg, pa_block *b);      /* b in pg, which this thread does not own */
/* Checks p as a live block of pg for realloc/usable size; aborts naming fn if it is not. */
void pa_check_live(const char *fn, pa_page *pg, const void *p);

/* ---- passthrough.c: everything that is not ours goes to glibc ---- */
#ifndef PA_PASSTHROUGH_LIBC
#define PA_PASSTHROUGH_LIBC 1 /* 0 in sanitizer builds of pyalloc_core: pass to the sanitizer's malloc,
                                 which the program keeps, so it sees every block handed between threads */
#endif
#if PA_PASSTHROUGH_LIBC
/* Declared with default visibility: they are glibc's, not hidden ones of ours (the pragma above). */
__attribute__((visibility("default"))) extern void *__libc_malloc(size_t);
__attribute__((visibility("default"))) extern void *__libc_calloc(size_t, size_t);
__attribute__((visibility("default"))) extern void *__libc_realloc(void *, size_t);
__attribute__((visibility("default"))) extern void __libc_free(void *);
#define PA_SYS_MALLOC __libc_malloc
#define PA_SYS_CALLOC __libc_calloc
#define PA_SYS_REALLOC __libc_realloc
#define PA_SYS_FREE __libc_free
#else
__attribute__((visibility("default"))) void *malloc(size_t);
__attribute__((visibility("default"))) void *calloc(size_t, size_t);
__attribute__((visibility("default"))) void *realloc(void *, size_t);
__attribute__((visibility("default"))) void free(void *);
#define PA_SYS_MALLOC malloc
#define PA_SYS_CALLOC calloc
#define PA_SYS_REALLOC realloc
#define PA_SYS_FREE free
#endif
#if PA_STATS
/* The bytes glibc's block p holds: its usable size, as glibc's malloc_usable_size computes it from
 * the chunk header in the word before the block (size | flags; an mmapped chunk, flag 2, has a
 * 16-byte header, any other an 8-byte one). Read the same way when glibc hands the block out and
 * when it is freed, so the sum of what was added and taken away is exactly what is live. */
static inline size_t pa_sys_block_bytes(const void *p) {
#if PA_PASSTHROUGH_LIBC
    size_t sz = ((const size_t *)p)[-1];
    return (sz & ~(size_t)7) - 8 - ((sz & 2) << 2);
#else
    extern __attribute__((visibility("default"))) size_t malloc_usable_size(void *);
    return malloc_usable_size((void *)p);
#endif
}
#define PA_SYS_BYTES(p) ((p) ? pa_sys_block_bytes(p) : 0)
#else
#define PA_SYS_BYTES(p) ((void)(p), (size_t)0)
#endif

/* Every request that reaches the system allocator is counted: calls, and the bytes asked of it
 * (for realloc past 512 bytes, the rounded size of alloc.c's realloc_size, not the program's); and
 * what it holds while live (usable bytes). Out of line (passthrough.c): what follows glibc's call
 * would otherwise make the inlined fast paths of malloc and free save registers for it. */
void *pa_sys_malloc(size_t n);
void *pa_sys_calloc(size_t n, size_t s);
void *pa_sys_realloc(void *p, size_t n);
void pa_sys_free(void *p);
/* glibc's free and realloc are reached through a table the background thread may point at its hooks
 * while it waits for glibc's heap to go quiet (background.c): one indirect jump, as through the GOT.
 * caller is the program's return address where free() or realloc() jumped to the passthrough
 * (PA_CALLER), which the hooks need to know whether they may start the thread. */
typedef struct pa_sys_table {
    void (*free)(void *, const void *caller);
    void *(*realloc)(void *, size_t, const void *caller);
    char rest_of_page[PA_OS_PAGE - 2 * sizeof(void *)]; /* nothing else on the page */
} pa_sys_table;
extern PA_HIDDEN pa_sys_table pa_sys_tab; /* on a page kept read-only */
/* While sampling (sites.h), a block to be reallocated or freed that may have a record (a large one,
 * or one whose usable size has the mark: PA_SYS_CHECK) is looked up in the filter of recorded
 * blocks first: its record goes before glibc has the block back. */
#if PA_STATS
extern _Atomic uint32_t pa_sample_filter[PA_SAMPLE_FILTER];
static inline bool pa_sample_recorded(const void *p) {
    return p && atomic_load_explicit(&pa_sample_filter[((uintptr_t)p >> 4) & (PA_SAMPLE_FILTER - 1)],
                                     memory_order_relaxed) != 0;
}
#else
static inline bool pa_sample_recorded(const void *p) { return (void)p, false; }
#endif
void *pa_sys_memalign(size_t a, size_t n);
void *pa_sys_valloc(size_t n);
void *pa_sys_pvalloc(size_t n);
size_t pa_sys_usable_size(void *p);
int pa_sys_trim(size_t pad);        /* the system allocator's malloc_trim */
void pa_sys_prime(void);            /* start glibc's allocator in this thread (init.c) */

/* ---- background.c: the background thread that gives memory back while the program is idle ---- */
/* In a free slow path that free() jumps to (fastpath.h): free()'s caller. Optimised, free() reaches
 * its slow paths by a tail jump, so theirs is that return address; unoptimised, free() keeps its
 * frame. A path entered otherwise reads an address in pyalloc, which starts nothing. The helper is
 * started from a free only when the program called it: glibc frees with its own locks held. */
#ifdef __OPTIMIZE__
#define PA_CALLER() ((const void *)__builtin_return_address(0))
#else
#define PA_CALLER() PA_RETURN_ADDRESS_1()
#endif
/* The caller's return address, valid where frames are kept (-O0): the warning is for the rest. */
#define PA_RETURN_ADDRESS_1()                                                                      \
    (__extension__({                                                                               \
        _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wframe-address\"")    \
        const void *ra_ = __builtin_return_address(1);                                             \
        _Pragma("GCC diagnostic pop") ra_;                                                         \
    }))
#define PA_BG_SAFE ((const void *)1) /* a caller for pa_bg_poll: this context is known to be safe */
extern _Atomic int pa_bg_want;      /* work appeared and no helper runs: start one at a safe point */
void pa_bg_init(void);              /* from the constructor: options, libc's maps, the free hooks */
void pa_bg_pool_work(void);         /* the pool's dirty list went from empty to not (no lock held) */
void pa_bg_start(const void *caller) PA_COLD;
/* The helper thread exists. It never writes a block of the program's, so mesh.c counts a process
 * whose other thread is the helper as single-threaded. */
bool pa_bg_running(void);
bool pa_bg_caller_is_program(const void *caller); /* not libc's, ld.so's or pyalloc's own code */
/* At a point where no lock of pyalloc is held: start the helper if work waits for one. caller is
 * the program's return address (free paths), or PA_BG_SAFE where no glibc lock can be held. */
static inline void pa_bg_poll(const void *caller) {
    if (pa_unlikely(pa_load_relaxed(&pa_bg_want))) pa_bg_start(caller);
}
/* For the mesh pass of issue 10 B: ask the helper to run pa_bg_compact (if set) soon. */
#define PA_BG_COMPACT 1u
void pa_bg_request(unsigned work);
extern bool (*pa_bg_compact)(uint32_t now, uint32_t *next); /* true: run me again at *next */
void pa_bg_fork_prepare(void);
void pa_bg_fork_parent(void);
void pa_bg_fork_child(void);
void pa_bg_exiting(void);           /* process exit has begun: start no new glibc trim */
struct pa_stats;
void pa_bg_counters(struct pa_stats *out);

/* ---- init.c: lazy, re-entrant start-up; fork ---- */
extern _Atomic int pa_init_state; /* 0 not yet, 1 running, 2 ready, 3 failed */
bool pa_init_slow(void);
static inline bool pa_ready(void) {
    return pa_likely(atomic_load_explicit(&pa_init_state, memory_order_acquire) == 2) || pa_init_slow();
}
extern pthread_key_t pa_thread_key;

#pragma GCC visibility pop

#endif /* PA_INTERNAL_H */
