/* SPDX-License-Identifier: MIT
 * Declarations of the allocation sites (issue 11, item 4), grouped by the file that defines them:
 * sample.c (which allocations are sampled, their records, the report's data), unwind.c (native
 * stacks) and pyframes.c (Python frames). Included by internal.h, inside its hidden-visibility
 * section; needs types.h. */
#ifndef PA_SITES_H
#define PA_SITES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "types.h"

/* ---- sample.c: sampling, records, the report's data ----
 * An allocation of n bytes is sampled with probability 1 - exp(-n/R), R = PYALLOC_SAMPLE_BYTES,
 * independently of every other, so that a sample weighted n / (1 - exp(-n/R)) makes every sum of
 * weights an unbiased estimate of the bytes it stands for. For small blocks the draw is a countdown
 * per request size in the heap (heap->cd[n], the number of allocations of that size before the next
 * sampled one: geometric, mean about R / n); for passthrough requests a countdown of bytes per
 * thread (exponential, mean R: the heap's sys_cd, counted down beside its count of bytes asked of
 * glibc). While sampling is off the countdowns start at PA_CD_OFF and never reach zero. */
#define PA_CD_OFF ((int64_t)1 << 62)
extern bool pa_sample_on; /* PYALLOC_SITES=1: the sampler has started (PA_SAMPLING) */
extern pa_heap pa_sample_heap; /* the pseudo-heap whose pages hold the sampled small blocks */
extern _Atomic uint64_t pa_sample_fired; /* countdowns that ran out, ever (tests: 0 while off) */
/* A new heap's countdowns (heap.c, at a heap's creation; a recycled heap keeps its own). */
void pa_sample_heap_init(pa_heap *h);
/* Small blocks of request size n h has handed out, ever (the countdown's bookkeeping; stats.c). */
uint64_t pa_heap_allocs(const pa_heap *h, size_t n);
/* The countdown of size n ran out in h's malloc: returns the block, sampled when the sampler is
 * ready (from pa_sample_heap's pages, with a record), else an ordinary one. */
void *pa_malloc_sampled(pa_heap *h, size_t n) PA_COLD;
/* The free of b, in a page of pa_sample_heap (free.c's remote free sends it here). */
void pa_sample_free_small(pa_page *pg, pa_block *b) PA_COLD;
/* A passthrough request ran h's byte countdown (h->sys_cd) out: the next one is drawn; true if this
 * request is to be recorded (the sampler is ready, and this thread is not inside it). */
bool pa_sample_sys_due(pa_heap *h) PA_COLD;
/* ... then the block p that served it, of n bytes, is recorded with the stack (the frames up to the
 * one returning to keep_from left out); p NULL: the sample is counted as dropped. */
void pa_sample_sys_record(void *p, size_t n, uintptr_t keep_from) PA_COLD;
/* The passthrough is about to free or reallocate p, which the filter says may be recorded
 * (pa_sample_recorded): its record goes first, before glibc has the block back. */
void pa_sample_sys_retire(void *p) PA_COLD;
#define PA_SAMPLE_FILTER (1u << 16) /* counters of recorded passthrough blocks, by address bits */
/* A recorded passthrough block below PA_PEAK_LARGE bytes has usable bytes u with the mark (its
 * request was made larger for it, passthrough.c), so that free and realloc look in the filter only
 * for blocks with the mark (u mod 1024 at least 960: 1 in 16 of glibc's others, whose usable
 * sizes are 8 mod 16) and for large ones. */
#define PA_SAMPLE_MARKED(u) (((u) & 0x3c0) == 0x3c0)
/* The passthrough's one test of a block's usable bytes u at free and realloc: u | pa_sample_bits
 * is above 0xfffe when u >= PA_PEAK_LARGE (a timeline point may be due), or, while sampling (the
 * bits are 0xffff & ~0x3c0; 0 while off), when u has the mark. */
extern size_t pa_sample_bits;
#define PA_SAMPLE_BITS ((size_t)0xffff & ~(size_t)0x3c0)
#define PA_SYS_CHECK(u) pa_unlikely(((u) | pa_sample_bits) > 0xfffe)
/* The library's constructor: the unwinder and the Python frames are set up, sampling starts. */
void pa_sample_start(void);

/* The passthrough's one test while sampling is off (internal.h, passthrough.c). */
#if PA_STATS
#define PA_SAMPLING() pa_unlikely(pa_sample_on)
#else
#define PA_SAMPLING() 0
#endif

/* ---- unwind.c: the native stack ---- */
typedef struct pa_unwind_object_info {
    uintptr_t map_start, map_end; /* the object, as _dl_find_object gives it */
    uintptr_t l_addr;             /* its load bias */
    const void *link_map;         /* its struct link_map */
} pa_unwind_object_info;
void pa_unwind_init(void);
/* The calling thread's return addresses, innermost first, at most max; the frames before the one
 * whose return address is keep_from (the allocator's own) are left out. */
size_t pa_unwind(uintptr_t *out, size_t max, uintptr_t keep_from);
/* The object holding return address pc (lock-free, allocation-free: _dl_find_object). */
bool pa_unwind_object(uintptr_t pc, pa_unwind_object_info *o);
/* [*lo, *hi) of the readable mapping that holds addr (/proc/self/maps, raw system calls). */
bool pa_unwind_find_mapping(uintptr_t addr, uintptr_t *lo, uintptr_t *hi);

/* ---- pyframes.c: the Python frames (CPython 3.11) ---- */
enum { PA_PY_NONE = 0, PA_PY_ON, PA_PY_OTHER }; /* no interpreter; 3.11; another version */
typedef struct pa_pyframe {
    const void *code; /* the frame's code object */
    int32_t lasti;    /* its last instruction (code units from the start; -1: none yet) */
    uint8_t entry;    /* the first frame of its _PyEval_EvalFrameDefault call */
} pa_pyframe;
void pa_py_init(void);
int pa_py_status(uint64_t *version);
/* The calling thread's Python frames, innermost first, at most max. */
size_t pa_py_capture(pa_pyframe *out, size_t max);
/* A captured frame's file and qualified name (str objects) and line (-1: none); the code object
 * must still be alive (it is, during the malloc that captured it). */
void pa_py_frame_info(const void *code, int32_t lasti, const void **file, const void **name, int *line);
bool pa_py_str(const void *s, const void **data, size_t *n, unsigned *kind);
bool pa_py_finalizing(void); /* the interpreter has begun to finalize (after atexit handlers) */
int pa_py_line(const uint8_t *table, size_t len, int firstline, int64_t lasti);

#endif /* PA_SITES_H */
