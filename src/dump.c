/* SPDX-License-Identifier: MIT
 * A test-only dump of every page at exit, for studying fragmentation (tools/meshsim.py reads it).
 * Compiled in only with -DPYALLOC_DEBUG_DUMP=ON (PA_DUMP=1); then PYALLOC_DUMP=path writes, from a
 * destructor, one text line per committed page: its class, how far it is carved, which 4 KiB parts
 * are resident (mincore) and the bitmap of its live blocks (carved and on neither free list).
 * Nothing here allocates: a static buffer, write(2), and one anonymous map for mincore's vector.
 * Exports nothing; the process must have one thread left when it exits (a test program's end). */
#include "internal.h"

#if PA_DUMP

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static char dump_buf[1 << 16];
static size_t dump_len;
static int dump_fd = -1;

static void dump_flush(void) {
    pa_write_all(dump_fd, dump_buf, dump_len);
    dump_len = 0;
}

static void dump_raw(const char *s, size_t n) {
    if (dump_len + n > sizeof dump_buf) dump_flush();
    memcpy(dump_buf + dump_len, s, n);
    dump_len += n;
}

static void dump_str(const char *s) { dump_raw(s, strlen(s)); }

static void dump_u64(uint64_t v) {
    char d[24];
    dump_raw(d, pa_fmt_u64(d, v));
}

/* Lines of a /proc/self file (a count of maps), or 0 if unreadable. */
static uint64_t dump_count_lines(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[4096];
    uint64_t lines = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) lines += buf[i] == '\n';
    close(fd);
    return lines;
}

/* Marks the blocks of list (a free list of pg) in bits; false if the list leaves the page. */
static bool dump_mark(const pa_page *pg, pa_block *list, uint8_t *bits) {
    uint32_t limit = pa_class_blocks(pg->cls);
    for (uint32_t i = 0; list && list != pa_list_end(pg); i++) {
        uintptr_t off = (uintptr_t)list - pa_page_start(pg);
        if (off >= PA_PAGE_SIZE || i > limit) return false;
        uint32_t j = (uint32_t)(off / pg->bsize);
        bits[j >> 3] |= (uint8_t)(1u << (j & 7));
        list = pa_block_next(pg, list);
    }
    return true;
}

static void dump_page(uint32_t idx, const unsigned char *res) {
    static const char hex[] = "0123456789abcdef";
    const pa_page *pg = &pa_pages[idx];
    uint32_t resident = 0;
    for (uint32_t k = 0; k < PA_PAGE_SIZE / 4096; k++) resident |= (uint32_t)(res[k] & 1) << k;
    if (pg->bsize == 0) {
        if (!resident) return;
        dump_str("R ");
        dump_u64(idx);
        dump_str(" ");
        dump_u64(resident);
        dump_str("\n");
        return;
    }
    uint8_t freebits[PA_PAGE_SIZE / 8 / 8];
    memset(freebits, 0, sizeof freebits);
    bool ok = dump_mark(pg, pg->free, freebits) &&
              dump_mark(pg, atomic_load_explicit(&pg->thread_free, memory_order_acquire), freebits);
    uint32_t carved = pa_load_relaxed(&pg->bump) / pg->bsize;
    dump_str("P ");
    dump_u64(idx);
    dump_str(" ");
    dump_u64(pg->cls);
    dump_str(" ");
    dump_u64(pg->bsize);
    dump_str(" ");
    dump_u64(pa_load_relaxed(&pg->bump));
    dump_str(" ");
    dump_u64(pg->where);
    dump_str(" ");
    dump_u64(resident);
    dump_str(ok ? " " : " ! ");
    /* Block j is bit j % 4 of hex digit j / 4; blocks never carved are not live. */
    uint32_t n = pa_class_blocks(pg->cls);
    for (uint32_t j = 0; j < n; j += 4) {
        uint32_t nib = 0;
        for (uint32_t b = 0; b < 4 && j + b < n; b++) {
            uint32_t k = j + b;
            bool live = k < carved && !(freebits[k >> 3] & (1u << (k & 7)));
            nib |= (uint32_t)live << b;
        }
        dump_raw(&hex[nib], 1);
    }
    dump_str("\n");
}

__attribute__((destructor)) static void dump_at_exit(void) {
    if (atomic_load_explicit(&pa_init_state, memory_order_acquire) != 2) return;
    const char *path = pa_getenv("PYALLOC_DUMP");
    if (!path || !*path) return;
    dump_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (dump_fd < 0) {
        pa_warn("cannot open PYALLOC_DUMP");
        return;
    }
    pa_pool_stats pool;
    pa_pool_counters(&pool);
    uint64_t committed = pool.committed, dirty = pool.dirty;
    size_t bytes = (size_t)committed << PA_PAGE_SHIFT;
    size_t vec_len = (bytes / 4096 + 4095) & ~(size_t)4095;
    unsigned char *vec = vec_len ? pa_os_map(vec_len) : NULL;
    if (vec && mincore((void *)pa_base, bytes, vec) != 0) {
        pa_os_unmap(vec, vec_len);
        vec = NULL;
    }
    dump_str("pyalloc-dump 1 align=");
    dump_u64((uint64_t)pa_opt.align);
    dump_str(" page=");
    dump_u64(PA_PAGE_SIZE);
    dump_str(" committed=");
    dump_u64(committed);
    dump_str(" dirty=");
    dump_u64(dirty);
    dump_str(" rss_kb=");
    dump_u64((pa_os_rss() / PA_OS_PAGE) * 4);
    dump_str(" maps=");
    dump_u64(dump_count_lines("/proc/self/maps"));
    dump_str(" mincore=");
    dump_u64(vec != NULL);
    dump_str("\n");
    static const unsigned char all[PA_PAGE_SIZE / 4096] = {1, 1, 1, 1, 1, 1, 1, 1};
    for (uint32_t i = 0; i < committed; i++) dump_page(i, vec ? vec + (size_t)i * (PA_PAGE_SIZE / 4096) : all);
    dump_flush();
    close(dump_fd);
    if (vec) pa_os_unmap(vec, vec_len);
}

#endif /* PA_DUMP */
