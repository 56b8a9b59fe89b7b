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

#ifdef __cplusplus
}
#endif
#endif /* PYALLOC_H */
