/* SPDX-License-Identifier: MIT
 * A library that test_preload_misuse opens with dlopen(RTLD_NOW | RTLD_DEEPBIND). Deep binding makes
 * ld.so resolve this library's symbols in its own scope (itself, then libc.so.6) before the global
 * one, so its malloc is glibc's until pyalloc repairs its GOT, which it does when dlopen returns
 * (src/deepbind.c): its constructor, which runs inside dlopen, still allocates with glibc's malloc.
 * The blocks it allocates there are foreign to pyalloc, and the program frees them through pyalloc's
 * free; what the library allocates later is pyalloc's. */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

/* Allocated by the constructor, with the malloc of that moment: glibc's. */
enum { NCTOR = 40 };
static void *ctor_blocks[NCTOR];
static void *ctor_malloc;

__attribute__((constructor)) static void foreign_init(void)
{
    static const size_t sizes[] = {1, 8, 16, 24, 32, 100, 512, 513, 4096, 1 << 20};
    size_t n = sizeof sizes / sizeof sizes[0];
    ctor_malloc = (void *)&malloc;
    for (size_t i = 0; i < 3 * n; i++)
        ctor_blocks[i] = malloc(sizes[i % n]);
    ctor_blocks[3 * n] = calloc(10, 30);
    void *p = NULL;
    ctor_blocks[3 * n + 1] = posix_memalign(&p, 64, 200) == 0 ? p : NULL;
    ctor_blocks[3 * n + 2] = realloc(NULL, 20);
    ctor_blocks[3 * n + 3] = memalign(256, 100);
}

/* The constructor's block i, and the malloc the constructor called. */
EXPORT void *foreign_ctor_block(size_t i) { return i < NCTOR ? ctor_blocks[i] : NULL; }
EXPORT void *foreign_ctor_malloc_address(void) { return ctor_malloc; }

EXPORT void *foreign_malloc(size_t n) { return malloc(n); }
EXPORT void *foreign_realloc(void *p, size_t n) { return realloc(p, n); }
EXPORT void foreign_free(void *p) { free(p); }
EXPORT size_t foreign_usable_size(void *p) { return malloc_usable_size(p); }

/* The address of the malloc this library calls now, to compare with the program's. */
EXPORT void *foreign_malloc_address(void) { return (void *)&malloc; }
