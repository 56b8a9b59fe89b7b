/* SPDX-License-Identifier: MIT
 * Shared by the API, stress and misuse tests: one source builds two binaries.
 * Without PA_TEST_PA_API the T_* names are the replaced libc names (binary linked to `pyalloc`);
 * with it they are the explicit pa_* names (binary linked to `pyalloc_core`, as sanitizer builds do).
 * Also: the expected class size and alignment for a request, RSS from /proc/self/statm, a PRNG. */
#ifndef PA_TEST_H
#define PA_TEST_H

#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pyalloc.h"

#ifdef PA_TEST_PA_API
#define T_API_NAME "pa_*"
#define T_MALLOC pa_malloc
#define T_FREE pa_free
#define T_CALLOC pa_calloc
#define T_REALLOC pa_realloc
#define T_POSIX_MEMALIGN pa_posix_memalign
#define T_ALIGNED_ALLOC pa_aligned_alloc
#define T_MEMALIGN pa_memalign
#define T_VALLOC pa_valloc
#define T_PVALLOC pa_pvalloc
#define T_USABLE pa_malloc_usable_size
#define T_TRIM pa_malloc_trim
#else
#define T_API_NAME "libc names"
#define T_MALLOC malloc
#define T_FREE free
#define T_CALLOC calloc
#define T_REALLOC realloc
#define T_POSIX_MEMALIGN posix_memalign
#define T_ALIGNED_ALLOC aligned_alloc
#define T_MEMALIGN memalign
#define T_VALLOC valloc
#define T_PVALLOC pvalloc
#define T_USABLE malloc_usable_size
#define T_TRIM malloc_trim
#endif

/* The mode the test expects, from the same environment variable the allocator reads. */
static inline int t_expected_mode(void)
{
    const char *v = getenv("PYALLOC_ALIGN");
    return (v != NULL && strcmp(v, "8") == 0) ? 8 : 16;
}

static inline size_t t_round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* The block size pyalloc serves for a request of n <= PA_SMALL_MAX bytes in the given mode. */
static inline size_t t_class_size(size_t n, int mode)
{
    if (n == 0)
        n = 1;
    if (mode == 8)
        return t_round_up(n, 8);
    return n <= 8 ? 8 : t_round_up(n, 16);
}

/* The alignment a block for a request of n bytes must have (any size, any mode). */
static inline size_t t_required_align(size_t n, int mode)
{
    if (n > PA_SMALL_MAX)
        return 16;
    if (mode == 8)
        return 8;
    return t_class_size(n, mode) >= 16 ? 16 : 8;
}

/* Hides a pointer's origin from the compiler, for tests that use a block in ways it would warn about
 * (past a requested size of 0, after a failed realloc, after a free done on purpose). */
static inline void *t_launder(void *p)
{
    void *volatile v = p;
    return v;
}

/* Resident set size in bytes, from /proc/self/statm (read with read(2): no stdio allocation). */
static inline size_t t_rss_bytes(void)
{
    char buf[256];
    ssize_t len;
    int fd;
    unsigned long size = 0, resident = 0;
    fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0)
        return 0;
    buf[len] = '\0';
    if (sscanf(buf, "%lu %lu", &size, &resident) != 2)
        return 0;
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* xorshift64*: deterministic per-thread sequences without a shared lock. */
static inline uint64_t t_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* The payload byte i of the block (thread, seq): any corruption or mix-up of blocks shows. */
static inline unsigned char t_payload(uint64_t thread, uint64_t seq, size_t i)
{
    uint64_t h = (thread + 1) * 0x9E3779B97F4A7C15ULL ^ (seq + 1) * 0xC2B2AE3D27D4EB4FULL;
    h ^= (uint64_t)i * 0x165667B19E3779F9ULL;
    h ^= h >> 29;
    return (unsigned char)(h ^ (h >> 8));
}

static inline void t_fill(void *p, size_t n, uint64_t thread, uint64_t seq)
{
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = t_payload(thread, seq, i);
}

/* Index of the first wrong byte, or (size_t)-1 when the payload is intact. */
static inline size_t t_check(const void *p, size_t n, uint64_t thread, uint64_t seq)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != t_payload(thread, seq, i))
            return i;
    return (size_t)-1;
}

#endif /* PA_TEST_H */
