/* SPDX-License-Identifier: MIT
 * Every tunable of pyalloc in one place, sizes in bytes (page counts are derived from them), and the
 * static assertions that tie the constants to each other and to include/pyalloc.h. The defaults of
 * the PYALLOC_* options are here too; docs/options.md states them and tests/unit checks that the
 * two agree. Exports nothing but these macros. */
#ifndef PA_CONFIG_H
#define PA_CONFIG_H

#include <stdint.h>

#include "pyalloc.h"

/* ---- sizes ---- */
#define PA_PAGE_SHIFT 15                        /* 32 KiB pages (pymalloc's pools): see design.md */
#define PA_PAGE_SIZE ((size_t)1 << PA_PAGE_SHIFT)
#define PA_PAGE_MASK (PA_PAGE_SIZE - 1)
#define PA_ARENA_PAGES 64                       /* committed together: 2 MiB, and 8 KiB of descriptors */
#define PA_ARENA_SIZE (PA_ARENA_PAGES * PA_PAGE_SIZE)
#define PA_PAGE_DESC_SIZE 128                   /* bytes of one page descriptor (types.h) */
#define PA_OS_PAGE 4096                         /* the kernel's page: commit and madvise granule */
#define PA_CARVE PA_OS_PAGE                     /* fresh blocks are carved an OS page at a time, so a
                                                   page's memory is touched only as it is used */

/* ---- size classes ---- */
#define PA_SMALL PA_SMALL_MAX                   /* 512: larger requests go to the system allocator */
#define PA_NCLASS (PA_SMALL / 8)                /* 64 classes, 8 bytes apart: 8, 16, ... 512 */
#define PA_NWORDS (PA_SMALL / 8 + 1)            /* (size + 7) >> 3 for size 0..512: the class table */
#define PA_NDIRECT (PA_SMALL + 1)               /* a heap's direct[] is indexed by the size itself */

/* ---- a heap's pages ---- */
#define PA_SPARE_MAX 2          /* empty pages a heap keeps for its next pages, without the pool lock */
#define PA_FULL_RETURN 32       /* a FULL page returns to avail once 1/32 of its blocks are free */
#define PA_IDLE_EPOCHS 16       /* another class may take an empty current page only once its own
                                   class has stayed empty while the heap started this many pages */
#define PA_HEAP_CHUNK ((size_t)64 << 10) /* heap structures are mapped this many bytes at a time */

/* ---- the pool and giving memory back (option defaults and limits: docs/options.md) ---- */
#define PA_RESERVE_DEFAULT ((uint64_t)64 << 30) /* PYALLOC_RESERVE_MB: address space only */
#define PA_RESERVE_MIN ((uint64_t)16 << 20)     /* ... halved down to this when mmap refuses */
#define PA_RESERVE_MAX ((uint64_t)4 << 40)
#define PA_DIRTY_DEFAULT ((uint64_t)1 << 30)    /* PYALLOC_DIRTY_KB: empty pages kept resident */
#define PA_DIRTY_MAX PA_RESERVE_MAX
#define PA_DIRTY_RATIO_MAX 1000                 /* PYALLOC_DIRTY_RATIO: 0 (off) or 1..1000 */
#define PA_PURGE_DELAY_DEFAULT 1000             /* PYALLOC_PURGE_DELAY_MS */
#define PA_PURGE_DELAY_MAX 3600000              /* an hour */
#define PA_PURGE_BATCH ((size_t)32 << 20)       /* the most one call gives back once pages expired */
#define PA_REALLOC_EXACT ((size_t)128 << 10)    /* realloc asks glibc for exact sizes from here on
                                                   (glibc maps such blocks and grows them by mremap) */

/* ---- allocation sites (sample.c; option defaults and limits: docs/options.md) ---- */
#define PA_SAMPLE_BYTES_DEFAULT ((uint64_t)512 << 10) /* PYALLOC_SAMPLE_BYTES: a sample per 512 KiB */
#define PA_SAMPLE_BYTES_MAX ((uint64_t)1 << 40)

/* ---- the background thread (background.c) ---- */
#define PA_GLIBC_TRIM_DEFAULT ((uint64_t)1 << 20) /* PYALLOC_GLIBC_TRIM_KB: a malloc_trim returning
                                                     less is not worth its walk over the free chunks */
#define PA_GLIBC_TRIM_MAX PA_RESERVE_MAX
#define PA_BG_STACK ((size_t)128 << 10)  /* it calls only glibc's trim and mallinfo2, madvise, futex */
#define PA_BG_COUNT_MS 100               /* auto: the threads are counted at most this often */
#define PA_BG_REARM_PART 10              /* after a free into glibc's heap woke it, the thread sets its
                                            hooks again a tenth of the delay later (at least 10 ms) */

/* ---- the figures over time (monitor.c; option defaults and limits: docs/options.md) ---- */
#define PA_TIMELINE_MS_DEFAULT 100              /* PYALLOC_TIMELINE_MS: a point this often at first */
#define PA_TIMELINE_MS_MIN 10
#define PA_TIMELINE_MS_MAX 3600000
#define PA_TIMELINE_POINTS 2048                 /* when full, neighbours merge and the interval doubles */
#define PA_PEAK_STEP ((size_t)64 << 10)         /* a heap's new pages evaluate the peak at most once
                                                   per this many bytes of them ... */
#define PA_PEAK_STEP_SHIFT 6                    /* ... or per 1/64 of the small bytes live, if more */
#define PA_PEAK_LARGE ((size_t)64 << 10)        /* a passthrough request this large evaluates it too */
#define PA_PUBLISH_FD_BASE 800                  /* the publication's descriptor: the lowest free from
                                                   here, away from the numbers programs expect */

#ifndef PA_STATS
#define PA_STATS 1 /* per-thread counters for pa_stats_get (CMake option PYALLOC_STATS) */
#endif

/* ---- what the code relies on ---- */
_Static_assert(PA_SMALL == 512 && PA_SMALL % 16 == 0, "classes are 8 bytes apart, 16 in the default mode");
_Static_assert(PA_NCLASS == PA_STATS_NCLASS, "pa_stats has one row per class");
_Static_assert(PA_NCLASS <= 64, "a heap's idle classes are one 64-bit mask");
_Static_assert(PA_NWORDS == ((PA_SMALL + 7) >> 3) + 1 && PA_NDIRECT == PA_SMALL + 1, "table sizes");
_Static_assert(PA_PAGE_SIZE / 8 <= UINT16_MAX, "a page's block counts fit its uint16_t used");
_Static_assert((uint64_t)PA_PAGE_SIZE * PA_SMALL < ((uint64_t)1 << 55),
               "the block-start test (types.h): a page's largest thresh stays below magic >= 2^55");
_Static_assert(PA_PAGE_SIZE % PA_OS_PAGE == 0 && PA_CARVE % PA_OS_PAGE == 0 && PA_CARVE <= PA_PAGE_SIZE,
               "pages and carving are whole OS pages");
_Static_assert(PA_ARENA_PAGES * PA_PAGE_DESC_SIZE % PA_OS_PAGE == 0,
               "the descriptors of one arena fill whole OS pages: they are committed with it");
_Static_assert(PA_RESERVE_MIN % PA_ARENA_SIZE == 0 && PA_RESERVE_DEFAULT % PA_RESERVE_MIN == 0,
               "reservations are whole arenas");
_Static_assert(PA_DIRTY_DEFAULT % PA_PAGE_SIZE == 0 && PA_PURGE_BATCH % PA_PAGE_SIZE == 0, "whole pages");
_Static_assert(PA_FULL_RETURN >= 1 && PA_SPARE_MAX < 256, "counts");
_Static_assert(PA_TIMELINE_POINTS >= 4 && PA_TIMELINE_POINTS % 2 == 0, "the timeline merges pairs");
_Static_assert(PA_PEAK_STEP >= PA_PAGE_SIZE, "the peak step is whole pages");

#endif /* PA_CONFIG_H */
