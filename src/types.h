/* SPDX-License-Identifier: MIT
 * Every structure of pyalloc, and the invariants that tie them together.
 *
 * Address space. At start-up pyalloc reserves one range of address space (PROT_NONE, 64 GiB unless
 * PYALLOC_RESERVE_MB says otherwise) and commits it an arena (2 MiB) at a time as the program grows.
 * "Is this pointer mine?" is one subtraction and one compare against the committed length, so free,
 * realloc and malloc_usable_size never read memory they do not own.
 *
 * Arena -> page -> block. An arena is 64 pages of 32 KiB; a page (CPython's "pool") holds blocks of
 * one size class. The 64 size classes step by 8 bytes from 8 to 512. Page metadata lives out of band
 * in a second reservation, one 128-byte descriptor per page, indexed by (address - base) >> 15, so an
 * overflowing block can never corrupt it.
 *
 *   class  0  1  2  3  4  5  6  7 ...  63      default mode uses 8, 16 and every multiple of 16;
 *   bytes  8 16 24 32 40 48 56 64 ... 512      classic mode (PYALLOC_ALIGN=8) uses all 64.
 *
 * Blocks. A page hands out blocks from its free list and, when that runs dry, carves more from the
 * untouched tail of the page (bump, 4 KiB at a time) so memory is touched only when used. A free
 * block's first word holds the next free block XOR the page's random key; the last one holds the
 * page's end mark (its start address + 1) the same way. A live block's first word is cleared by
 * malloc. That makes a double free cheap to spot: a first word that decodes to an address in the
 * same page is suspect and is checked against the free lists.
 *
 * Free lists. A write past a block's end or into a freed block can overwrite a free block's link,
 * so no link is trusted: malloc's fast path hands out the head of a free list only if it is a
 * block start carved in that page (the whole-address test below); a head that fails is the end
 * mark, which sends malloc to its slow path, or damage, which aborts with a message naming the
 * page. Every walk of a list (collecting thread_free, the double-free confirmation) checks each
 * link the same way. A damaged link that still decodes to a block start of the same page is not
 * caught (design.md, "Misuse checks", says what is and is not).
 *
 * Valid block starts. magic = floor(2^64 / bsize) + 1 and step = magic * bsize mod 2^64 (0 < step
 * <= bsize). For an offset o, o * magic mod 2^64 is j * step when o = j * bsize, and at least
 * magic (>= 2^55) when o is inside the page but not a multiple of bsize. thresh = (k - 1) * step + 1
 * for the k blocks carved so far, so one multiply and one compare reject interior pointers, the
 * page's tail slack and blocks never handed out (tests/unit checks this for every class and
 * offset). The same test on a whole address p, (p * magic - start * magic) mod 2^64 < thresh,
 * also rejects every multiple of bsize outside the page (j * step >= k * step there, without
 * wrapping) and, of the other addresses, all but about one in 2^42: that is the check malloc makes
 * on the head of a free list before it follows it (see "Free lists").
 *
 * Ownership and threads. Every page in use belongs to one heap (one per thread), or is abandoned
 * (its thread exited); a page not in use is a heap's spare or sits in the global pool. The page's
 * heap pointer names its owner and is NULL otherwise; only the owner clears it, and only a thread
 * adopting the page (under abandoned_lock) sets it, to its own heap, so a thread that reads its own
 * heap there owns the page: free's fast path is that one compare. Page state is changed only by
 *   - its owner, without locks (free list, bump, used, list links);
 *   - other threads, which only push onto the atomic thread_free list, and, for a page marked FULL,
 *     tell the owner under notify_lock (fullstate NONE -> FULL by owner, FULL -> NOTIFIED by a remote
 *     freer, NOTIFIED -> NONE by the owner, under the lock);
 *   - anyone holding abandoned_lock, for abandoned pages (heap == NULL).
 * A page with a live block cannot be released, so a remote freer may read the page's heap pointer
 * and push without fear of the page being recycled under it. Heap structures are recycled, never
 * unmapped, so a stale heap pointer still names valid memory.
 *
 * Lock order: heaps < abandoned < mesh < notify < pool < sys (background.c's, for the table through
 * which glibc's free and realloc are reached); fork takes all six in that order (init.c). The
 * start-up's init_lock is never held together with any of them, and fork does not take it.
 */
#ifndef PA_TYPES_H
#define PA_TYPES_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* A free block: the first word of its memory. */
typedef struct pa_block {
    uintptr_t next; /* encoded: (struct pa_block *)next ^ page->key */
} pa_block;

enum pa_where { /* which list a page is on */
    PA_W_NONE = 0,  /* on no list: never used, or just taken from the pool (pa_page_init sets it up) */
    PA_W_AVAIL,     /* owner's avail[cls] list; the head is the current page */
    PA_W_FULL,      /* owner's full list: no free block when last looked */
    PA_W_ABANDONED, /* abandoned[cls]: its heap's thread exited */
    PA_W_DIRTY,     /* global pool, memory still resident */
    PA_W_CLEAN,     /* global pool, memory given back to the OS */
    PA_W_SPARE,     /* owner's spare list: empty, kept for its next page without the pool lock */
    PA_W_MESHED     /* frozen by mesh.c (PYALLOC_MESH=1): no heap, no free list, its regions maybe on
                       shared frames; frees go through pa_mesh_free */
};

enum pa_fullstate { PA_FS_NONE = 0, PA_FS_FULL, PA_FS_NOTIFIED };

/* A page frozen by mesh.c has a live-block bitmap there; frees check it under the mesh lock. It is
 * frozen while its owner is the only thread, so no other thread can be freeing into it then. */
enum pa_mesh_state { PA_MESH_NONE = 0, PA_MESH_LIVE, PA_MESH_DEAD };

struct pa_heap;

/* A list of pages linked through their next and prev (page index + 1; 0 = none): a heap's avail,
 * full and spare lists, the abandoned lists, the pool's dirty and clean lists (internal.h). */
typedef struct pa_page_list {
    uint32_t head, tail;
} pa_page_list;

/* One per page, 128 bytes: everything free and malloc touch is in the first 64. */
typedef struct pa_page {
    pa_block *free;                    /* local free list (owner only), ends in pa_list_end() */
    uintptr_t key;                     /* free-list link encoding */
    _Atomic(struct pa_heap *) heap;    /* owner; NULL when abandoned, spare or pooled: the one
                                          compare of free's fast path */
    _Atomic(pa_block *) thread_free;   /* blocks freed by other threads; NULL when empty */
    uint64_t magic;                    /* see "Valid block starts" */
    _Atomic uint64_t thresh;           /* grows as blocks are carved; 0: no block starts here */
    uint64_t start_magic;              /* page start * magic (mod 2^64): the whole-address test */
    uint16_t used;                     /* blocks out, counting those in thread_free */
    uint16_t bsize;                    /* block size; 0 when the page is not in use */
    uint8_t cls;
    uint8_t where;                     /* enum pa_where */
    _Atomic uint8_t fullstate;         /* enum pa_fullstate */
    uint8_t pad8;
    _Atomic uint32_t bump;             /* offset of the first block never carved (<= PA_PAGE_SIZE) */
    uint16_t used_bias;                /* FULL: the true count is used + used_bias (page.c) */
    uint16_t pad16;
    uint32_t next, prev;               /* list links: page index + 1, 0 = none */
    uint32_t notify_next;              /* heap's notified list, under notify_lock */
    uint8_t pooled;                    /* PA_W_DIRTY / PA_W_CLEAN while in the pool, else 0; written
                                          only under pool_lock, so the pool may read its neighbours' */
    _Atomic uint8_t meshed;            /* enum pa_mesh_state: read by any freer, written by mesh.c */
    uint8_t cold_pad[2];
    uint32_t dirty_since;              /* pool clock (ms) when it went on the dirty list */
    uint8_t cold[36];                  /* pads to 128; room for per-page statistics */
} pa_page;

_Static_assert(sizeof(pa_page) == PA_PAGE_DESC_SIZE, "page descriptor is two cache lines");

/* Per-thread statistics, merged when read (the pool counts its own pages taken and returned). */
typedef struct pa_heap_stats {
    uint64_t adopted;      /* abandoned pages taken over */
    uint64_t remote_frees; /* blocks this thread freed into other heaps' pages */
} pa_heap_stats;

/* A heap's sampling countdowns' bookkeeping (sample.c; its countdowns themselves are pa_heap.cd). */
typedef struct pa_heap_sample {
    uint64_t base[PA_NDIRECT]; /* small blocks of size n handed out, ever: base[n] - cd[n] */
    _Atomic uint32_t seq;      /* odd while base and cd are being reset: readers retry */
    uint64_t rng;              /* the countdowns' draws */
} pa_heap_sample;

typedef struct pa_heap {
    pa_page *direct[PA_NDIRECT]; /* by request size: the current page of that size's class (4 KiB,
                                    two instructions shorter than indexing by (size + 7) >> 3) */
    pa_page_list avail[PA_NCLASS]; /* pages with free blocks (when last looked) */
    pa_page_list full;           /* pages without (PA_W_FULL) */
    _Atomic uint32_t notified;   /* pages that got remote frees while FULL (notify_lock) */
    uint64_t rng;                /* page keys */
    struct pa_heap *next_heap;   /* registry of all heaps, live or free */
    uint8_t live;                /* owned by a running thread */
    uint8_t nspare;              /* pages on spare */
    uint64_t idle;               /* classes whose current page went empty (a hint: checked on use) */
    uint32_t epoch;              /* new pages this heap has started */
    uint32_t idle_since[PA_NCLASS]; /* epoch at which the class's current page went empty */
    pa_page_list spare;          /* empty pages kept back from the pool */
    pa_heap_stats stats;
    int64_t peak_left;           /* bytes of new pages and large requests before this heap evaluates
                                    the peak again (monitor.c) */
#if PA_STATS
    /* Counted by this thread only, summed over every heap when read (stats.c). */
    int64_t cd[PA_NDIRECT];      /* by request size: allocations left before the next sampled one
                                    (sample.c); counts the small blocks handed out, with smp.base */
    uint64_t nfree[PA_NCLASS];   /* small blocks this thread freed, by class (into any page) */
    uint64_t sys_calls, sys_bytes; /* requests passed to the system allocator */
    int64_t sys_cd;              /* bytes of passthrough requests left before the next sampled one */
    pa_heap_sample smp;
    uint64_t sys_live;           /* usable bytes of glibc blocks: + those this thread got, - those
                                    it freed (modulo 2^64: the sum over the heaps is what is live) */
#endif
} pa_heap;

#endif /* PA_TYPES_H */
