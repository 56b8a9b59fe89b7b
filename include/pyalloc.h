/* SPDX-License-Identifier: MIT
 * pyalloc: a thread-safe pymalloc-style small-object allocator.
 * The public API. Linking -lpyalloc (or LD_PRELOAD=libpyalloc.so) replaces malloc and friends;
 * the pa_* names below give the same operations explicitly. Nothing internal is declared here. */
#ifndef PYALLOC_H
#define PYALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PA_VERSION_MAJOR 0
#define PA_VERSION_MINOR 1
#define PA_VERSION_PATCH 0
#define PA_VERSION_STRING "0.1.0"

/* Blocks up to this many bytes come from pyalloc's pools; larger ones go to the system allocator. */
#define PA_SMALL_MAX 512

void  *pa_malloc(size_t size);
void   pa_free(void *p);
void  *pa_calloc(size_t n, size_t size);
void  *pa_realloc(void *p, size_t size);
int    pa_posix_memalign(void **out, size_t alignment, size_t size);
void  *pa_aligned_alloc(size_t alignment, size_t size);
void  *pa_memalign(size_t alignment, size_t size);
void  *pa_valloc(size_t size);
void  *pa_pvalloc(size_t size);
size_t pa_malloc_usable_size(void *p);
/* Give every empty page back to the OS now, without waiting out PYALLOC_PURGE_DELAY_MS, and trim
 * the system allocator's heap (glibc's malloc_trim). Returns 1 if memory was given back. */
int    pa_malloc_trim(size_t pad);

/* 1 if p lies in pyalloc's pools (a block of <= PA_SMALL_MAX bytes it served), 0 otherwise. */
int pa_is_small(const void *p);

/* The alignment mode in force: 16 (default, x86-64 ABI) or 8 (PYALLOC_ALIGN=8, pymalloc classic). */
int pa_alignment_mode(void);

/* ---- statistics (PYALLOC_STATS=1|json at exit; or ask for them here) ------------------------
 * Counters are kept per thread and summed when read, so reading them is a snapshot: threads that
 * run meanwhile may be counted half-way. Nothing here allocates. */
#define PA_STATS_NCLASS 64

struct pa_class_stats {
    unsigned long long size;        /* block size of the class */
    unsigned long long allocs;      /* blocks handed out, ever */
    unsigned long long frees;       /* blocks freed, ever, by any thread */
    unsigned long long in_use;      /* blocks allocated now: allocs - frees (built without the
                                       counters: the blocks the pages hold, a block another thread
                                       freed counting until the page's owner collects it) */
    unsigned long long pages;       /* pages (page_size bytes) holding the class now */
    unsigned long long peak_pages;  /* most pages the class held at once */
    unsigned long long peak_in_use; /* most blocks out at once, to within a page per thread: the
                                       blocks peak_pages hold (an exact count would need a counter
                                       shared by every thread on every malloc and free) */
    unsigned long long bytes_held;  /* pages * page_size */
    unsigned long long wasted;      /* bytes lost to rounding requests up to size, summed over allocs */
};

struct pa_stats {
    unsigned long long version;     /* PA_VERSION_MAJOR * 10000 + MINOR * 100 + PATCH */
    int alignment;                  /* 16 or 8 */
    int enabled;                    /* 0 when built with -DPYALLOC_STATS=OFF: allocs, wasted and
                                       passthrough are not counted */
    unsigned nclasses;              /* classes of this mode: 33 (8, 16, 32, ... 512) or 64 */
    unsigned page_size;             /* bytes in a page: 32768 */
    struct pa_class_stats classes[PA_STATS_NCLASS]; /* the first nclasses, by size */
    struct pa_class_stats total;    /* summed; size is 0, peak_pages the sum of the peaks */
    unsigned long long in_use_bytes;
    unsigned long long passthrough_calls, passthrough_bytes; /* served by the system allocator */
    unsigned long long arenas_committed, bytes_committed;    /* arenas (64 pages) of pool memory */
    unsigned long long pages_given_back, bytes_given_back;   /* purged with MADV_DONTNEED, ever */
    unsigned long long pages_dirty;                          /* empty, resident, waiting out the delay */
    unsigned long long heaps_live, heaps_abandoned;          /* thread heaps: running, left by exits */
    unsigned long long cross_thread_frees;
    /* Added later; a program built against a pyalloc.h without them gets the fields it knows: */
    unsigned long long pages_taken;    /* pages the thread heaps took from the pool, ever (fresh or
                                          reused; a heap's own spare pages do not count) */
    unsigned long long pages_returned; /* empty pages given back to the pool, ever */
    unsigned long long pages_adopted;  /* abandoned pages taken over by a live thread, ever */
    /* Live bytes and the peak (0.1.0 with issue 11; absent from a smaller struct, as above): */
    unsigned long long passthrough_live; /* usable bytes of the system allocator's blocks live now */
    unsigned long long live_bytes;       /* in_use_bytes + passthrough_live */
    unsigned long long rss_bytes;        /* resident set size now (/proc/self/statm; 0 without /proc) */
    unsigned long long t_ms;             /* ms since pyalloc started in this process (or forked) */
    unsigned long long peak_live_bytes;  /* the highest live_bytes evaluated (docs/design.md says when,
                                            and by how much the true peak may exceed it) ... */
    unsigned long long peak_t_ms;        /* ... when (ms since start) ... */
    unsigned long long peak_rss_bytes;   /* ... and the resident set size then */
    /* The background thread that gives memory back while the program is idle (PYALLOC_BACKGROUND): */
    unsigned long long bg_state;                                 /* PA_BG_STATE_* */
    unsigned long long bg_wakeups;
    unsigned long long bg_pages_given_back, bg_bytes_given_back; /* by it (part of pages_given_back) */
    unsigned long long glibc_trims;      /* glibc's malloc_trim called by it */
    unsigned long long glibc_trim_bytes; /* the resident set shrank by this much across those trims */
    /* Compaction (PYALLOC_MESH=1): sparse pages frozen and packed onto shared 4 KiB frames. */
    unsigned long long mesh_passes;                          /* passes run */
    unsigned long long mesh_pages;                           /* frozen pages with live blocks */
    unsigned long long mesh_regions, mesh_frames;            /* their 4 KiB parts with live bytes, and
                                                                the frames those share */
    unsigned long long mesh_holes;                           /* their 4 KiB parts with none: given back */
    unsigned long long mesh_bytes_saved;                     /* (regions - frames + holes) * 4096 */
    unsigned long long mesh_vmas;                            /* mappings the shared frames take */
};

#define PA_BG_STATE_OFF 0     /* PYALLOC_BACKGROUND=0 */
#define PA_BG_STATE_WAITING 1 /* not started: no work for it yet, or (auto) a single-threaded program */
#define PA_BG_STATE_RUNNING 2
#define PA_BG_STATE_FAILED 3  /* pthread_create failed: memory goes back at the next allocator call */

/* Fill *out (size = sizeof *out): a program built against an older pyalloc.h, whose struct ends at
 * cross_thread_frees, passes its smaller size and gets the fields it knows. 0, or -1 if size is
 * smaller than that. */
int pa_stats_get(struct pa_stats *out, size_t size);

#define PA_STATS_TEXT 0
#define PA_STATS_JSON 1
/* Write the report to fd as a text table (PA_STATS_TEXT) or one JSON document (PA_STATS_JSON).
 * Returns 0, or -1 if writing failed. */
int pa_stats_print(int fd, int format);

#ifdef __cplusplus
}
#endif
#endif /* PYALLOC_H */
