/* SPDX-License-Identifier: MIT
 * A library that test_preload_misuse opens with dlopen(RTLD_NOW | RTLD_DEEPBIND). Deep binding makes
 * ld.so resolve this library's symbols in its own scope (itself, then libc.so.6) before the global
 * one, so its malloc, free and realloc are glibc's even when libpyalloc.so is preloaded: the pointers
 * it hands out are foreign to pyalloc, and the program frees them through pyalloc's free. */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

EXPORT void *foreign_malloc(size_t n) { return malloc(n); }
EXPORT void *foreign_calloc(size_t n, size_t s) { return calloc(n, s); }
EXPORT void *foreign_realloc(void *p, size_t n) { return realloc(p, n); }
EXPORT void foreign_free(void *p) { free(p); }
EXPORT size_t foreign_usable_size(void *p) { return malloc_usable_size(p); }

EXPORT void *foreign_memalign(size_t a, size_t n)
{
    void *p = NULL;
    return posix_memalign(&p, a, n) == 0 ? p : NULL;
}

/* The address of the malloc this library calls, to compare with the program's. */
EXPORT void *foreign_malloc_address(void) { return (void *)&malloc; }
