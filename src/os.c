/* SPDX-License-Identifier: MIT
 * The only calls into the kernel for memory: reserve, commit, give back and protect address space.
 * errno is preserved around each, because free() must not change it. */
#include "internal.h"

#include <errno.h>
#include <sys/mman.h>

void *pa_os_reserve(size_t size, size_t align) {
    int saved = errno;
    size_t total = size + align;
    void *p = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        errno = saved;
        return NULL;
    }
    uintptr_t start = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    /* Trim the unaligned head and the tail so the range is exactly what we use. */
    if (start > (uintptr_t)p) munmap(p, start - (uintptr_t)p);
    uintptr_t end = start + size, mend = (uintptr_t)p + total;
    if (mend > end) munmap((void *)end, mend - end);
    errno = saved;
    return (void *)start;
}

bool pa_os_commit(void *p, size_t size) {
    int saved = errno;
    bool ok = mprotect(p, size, PROT_READ | PROT_WRITE) == 0;
    errno = saved;
    return ok;
}

void pa_os_decommit(void *p, size_t size) {
    int saved = errno;
    /* MADV_DONTNEED: the pages read back as zero and leave RSS at once (MADV_FREE would leave them
     * counted until the kernel is under pressure, which is what users measure us by). */
    (void)madvise(p, size, MADV_DONTNEED);
    errno = saved;
}

void *pa_os_map(size_t size) {
    int saved = errno;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    errno = saved;
    return p == MAP_FAILED ? NULL : p;
}

void pa_os_unmap(void *p, size_t size) {
    int saved = errno;
    (void)munmap(p, size);
    errno = saved;
}

bool pa_os_protect(void *p, size_t size, bool writable) {
    int saved = errno;
    bool ok = mprotect(p, size, writable ? PROT_READ | PROT_WRITE : PROT_READ) == 0;
    errno = saved;
    return ok;
}
