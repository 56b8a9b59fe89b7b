/* SPDX-License-Identifier: MIT
 * The only calls into the kernel for memory: reserve, commit, give back and protect address space;
 * and the two figures of the process that /proc gives (resident bytes, threads), read without
 * allocating. errno is preserved around each, because free() must not change it. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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

/* A small /proc file into buf (at most cap - 1 bytes, NUL-terminated); its length, or -1. */
long pa_os_read_proc(const char *path, char *buf, size_t cap) {
    int saved = errno;
    ssize_t n = -1;
    int fd;
    do fd = open(path, O_RDONLY | O_CLOEXEC); /* a signal may interrupt either call: again */
    while (fd < 0 && errno == EINTR);
    if (fd >= 0) {
        do n = read(fd, buf, cap - 1);
        while (n < 0 && errno == EINTR);
        close(fd);
    }
    errno = saved;
    if (n >= 0) buf[n] = 0;
    return (long)n;
}

uint64_t pa_os_rss(void) {
    char buf[128];
    if (pa_os_read_proc("/proc/self/statm", buf, sizeof buf) <= 0) return 0;
    const char *s = strchr(buf, ' '); /* past the first field, the size */
    uint64_t pages = 0;
    for (s = s ? s + 1 : ""; *s >= '0' && *s <= '9'; s++) pages = pages * 10 + (uint64_t)(*s - '0');
    return pages * PA_OS_PAGE;
}

long pa_os_threads(void) {
    char buf[1024];
    if (pa_os_read_proc("/proc/self/stat", buf, sizeof buf) <= 0) return -1;
    const char *s = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!s) return -1;
    for (int field = 2; field < 20; field++) { /* s is at the end of field 2 */
        s = strchr(s + 1, ' ');
        if (!s) return -1;
    }
    long v = 0;
    for (s++; *s >= '0' && *s <= '9'; s++) v = v * 10 + (*s - '0');
    return v;
}

