/* SPDX-License-Identifier: MIT
 * A library that test_deepbind opens with dlopen(RTLD_DEEPBIND). Deep binding makes ld.so resolve its
 * symbols in its own scope (itself, then libc.so.6) before the global one, so without pyalloc's
 * repair every malloc-family call below would reach glibc's allocator while the program's reach
 * pyalloc. Built three ways (CMake): bound at load time with full RELRO (its GOT is read-only after
 * relocation), bound lazily, and a copy of the first under another name for the threads test. Each
 * way of reaching a function is here: a PLT call, an address taken through the GOT, and addresses
 * stored in data (one in RELRO-protected .data.rel.ro, one in writable .data). */
#include <dlfcn.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

EXPORT void *deep_malloc(size_t n) { return malloc(n); }
EXPORT void *deep_calloc(size_t n, size_t s) { return calloc(n, s); }
EXPORT void *deep_realloc(void *p, size_t n) { return realloc(p, n); }
EXPORT void deep_free(void *p) { free(p); }
EXPORT size_t deep_usable(void *p) { return malloc_usable_size(p); }
EXPORT void *deep_memalign(size_t a, size_t n) { return memalign(a, n); }
EXPORT void *deep_aligned_alloc(size_t a, size_t n) { return aligned_alloc(a, n); }
EXPORT void *deep_valloc(size_t n) { return valloc(n); }
EXPORT void *deep_pvalloc(size_t n) { return pvalloc(n); }
EXPORT void *deep_posix_memalign(size_t a, size_t n)
{
    void *p = NULL;
    return posix_memalign(&p, a, n) == 0 ? p : NULL;
}
/* strdup is glibc's; it allocates through malloc, which libc binds in the global scope */
EXPORT char *deep_strdup(const char *s) { return strdup(s); }
/* the library's own dlopen: its DEEPBIND loads must come back through pyalloc's */
EXPORT void *deep_dlopen(const char *path, int flags) { return dlopen(path, flags); }

/* The definitions this library's code reaches, to compare with the program's. */
EXPORT void *deep_malloc_address(void) { return (void *)&malloc; }
EXPORT void *deep_free_address(void) { return (void *)&free; }
EXPORT void *deep_dlopen_address(void) { return (void *)&dlopen; }
EXPORT void (*const deep_free_relro)(void *) = free; /* R_X86_64_64 in .data.rel.ro */
EXPORT void *(*deep_malloc_data)(size_t) = malloc;  /* R_X86_64_64 in .data */
