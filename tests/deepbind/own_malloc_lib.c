/* SPDX-License-Identifier: MIT
 * A library, opened with RTLD_DEEPBIND, that brings its own malloc, free, calloc, realloc and
 * malloc_usable_size: its deep scope binds its calls to these, and pyalloc must leave them so. Blocks
 * come from a static arena and carry an 8-byte mark, so a block handed to the wrong free is caught. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))
#define MARK 0x6f776e6d616c6c63ull /* "ownmallc" */

static _Alignas(16) unsigned char arena[1 << 20];
static size_t used;
static unsigned long frees, bad_frees;

EXPORT void *malloc(size_t n)
{
    size_t need = 16 + ((n + 15) & ~(size_t)15);
    if (n > sizeof arena || used + need > sizeof arena)
        return NULL;
    unsigned char *b = arena + used;
    used += need;
    ((uint64_t *)b)[0] = MARK;
    ((uint64_t *)b)[1] = n;
    return b + 16;
}

EXPORT void free(void *p)
{
    if (!p)
        return;
    unsigned char *b = (unsigned char *)p - 16;
    if (b < arena || b >= arena + sizeof arena || ((uint64_t *)b)[0] != MARK)
        bad_frees++;
    else
        frees++;
}

EXPORT size_t malloc_usable_size(void *p) { return p ? (size_t)((uint64_t *)p)[-1] : 0; }

EXPORT void *calloc(size_t n, size_t s)
{
    void *p = malloc(n * s);
    if (p)
        memset(p, 0, n * s);
    return p;
}

EXPORT void *realloc(void *p, size_t n)
{
    void *q = malloc(n);
    if (q && p) {
        size_t old = malloc_usable_size(p);
        memcpy(q, p, old < n ? old : n);
        free(p);
    }
    return q;
}

EXPORT void *own_malloc_address(void) { return (void *)&malloc; }
EXPORT void *own_free_address(void) { return (void *)&free; }
EXPORT void *own_alloc(size_t n) { return malloc(n); }
EXPORT void own_free(void *p) { free(p); }
EXPORT int own_is_mine(const void *p) { return (const unsigned char *)p >= arena && (const unsigned char *)p < arena + sizeof arena; }
EXPORT unsigned long own_frees(void) { return frees; }
EXPORT unsigned long own_bad_frees(void) { return bad_frees; }
