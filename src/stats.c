/* SPDX-License-Identifier: MIT
 * Statistics: what the allocator did, per size class. The counters live in each thread's heap and
 * are bumped by that thread alone (malloc: one add by request size; free: one add by class, in the
 * freeing thread's heap, remote frees too), so the fast paths take no lock and share no cache line,
 * and in use = allocs - frees is exact at any instant. Reading sums every heap in the registry and
 * walks the descriptors for the pages held. Nothing here allocates: the report is formatted into a buffer on the stack
 * and written with write(2). Exports pa_stats_get, pa_stats_print, pa_stat_page, pa_stats_sys_bytes,
 * the shared counters of threads without a heap (pa_orphan_*) and the PYALLOC_STATS report at exit. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "pyalloc.h"

#if PA_STATS
_Atomic uint64_t pa_orphan_sys_calls, pa_orphan_sys_bytes; /* by threads without a heap of their own */
_Atomic uint64_t pa_orphan_nfree[PA_NCLASS]; /* small-block frees, by class, of threads without a heap */
#endif

static _Atomic uint64_t class_pages[PA_NCLASS], class_pages_peak[PA_NCLASS];
_Atomic uint64_t pa_orphan_remote_frees; /* by threads without a heap of their own */

void pa_stat_page(uint32_t cls, int delta) {
    uint64_t now = atomic_fetch_add_explicit(&class_pages[cls], (uint64_t)(int64_t)delta,
                                             memory_order_relaxed) + (uint64_t)(int64_t)delta;
    uint64_t peak = atomic_load_explicit(&class_pages_peak[cls], memory_order_relaxed);
    while (delta > 0 && (int64_t)now > (int64_t)peak &&
           !atomic_compare_exchange_weak_explicit(&class_pages_peak[cls], &peak, now,
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* Another thread's counter: a relaxed load of a word it alone writes. */
#define RD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* Bytes asked of the system allocator so far, summed over every heap; UINT64_MAX when not counted
 * (PA_STATS off). For the background thread's estimate of glibc's fresh free memory. */
uint64_t pa_stats_sys_bytes(void) {
#if PA_STATS
    uint64_t n = atomic_load_explicit(&pa_orphan_sys_bytes, memory_order_relaxed);
    pthread_mutex_lock(&pa_heaps_lock);
    for (pa_heap *h = pa_heap_first(); h; h = h->next_heap) n += RD(h->sys_bytes);
    pthread_mutex_unlock(&pa_heaps_lock);
    return n;
#else
    return UINT64_MAX;
#endif
}

PA_API int pa_stats_get(struct pa_stats *out, size_t size) {
    if (!out || size < offsetof(struct pa_stats, pages_taken)) return -1;
    if (size < sizeof *out) { /* a caller built against an older pyalloc.h */
        struct pa_stats all;
        int r = pa_stats_get(&all, sizeof all);
        memcpy(out, &all, size);
        return r;
    }
    memset(out, 0, sizeof *out);
    bool ready = pa_ready();
    out->version = PA_VERSION_MAJOR * 10000 + PA_VERSION_MINOR * 100 + PA_VERSION_PATCH;
    out->alignment = pa_opt.align;
    out->enabled = PA_STATS;
    out->page_size = (unsigned)PA_PAGE_SIZE;
    uint64_t allocs[PA_NCLASS] = {0}, requested[PA_NCLASS] = {0}, used[PA_NCLASS] = {0};
#if PA_STATS
    uint64_t frees[PA_NCLASS] = {0};
#endif
    uint64_t pages[PA_NCLASS] = {0};
    if (ready) {
        pthread_mutex_lock(&pa_heaps_lock);
        for (pa_heap *h = pa_heap_first(); h; h = h->next_heap) {
            if (h->live) out->heaps_live++;
            else out->heaps_abandoned++;
            out->cross_thread_frees += RD(h->stats.remote_frees);
            out->pages_adopted += RD(h->stats.adopted);
#if PA_STATS
            for (uint32_t n = 0; n < PA_NDIRECT; n++) {
                uint64_t k = RD(h->nalloc[n]);
                uint32_t c = pa_class_for(n);
                allocs[c] += k;
                requested[c] += k * n;
            }
            for (uint32_t c = 0; c < PA_NCLASS; c++) frees[c] += RD(h->nfree[c]);
            out->passthrough_calls += RD(h->sys_calls);
            out->passthrough_bytes += RD(h->sys_bytes);
#endif
        }
        pthread_mutex_unlock(&pa_heaps_lock);
        out->cross_thread_frees += atomic_load_explicit(&pa_orphan_remote_frees, memory_order_relaxed);
#if PA_STATS
        out->passthrough_calls += atomic_load_explicit(&pa_orphan_sys_calls, memory_order_relaxed);
        out->passthrough_bytes += atomic_load_explicit(&pa_orphan_sys_bytes, memory_order_relaxed);
        for (uint32_t c = 0; c < PA_NCLASS; c++)
            frees[c] += atomic_load_explicit(&pa_orphan_nfree[c], memory_order_relaxed);
#endif
        /* Pages held now: every committed descriptor whose page is in use; and, without the
         * counters, the blocks out (a block freed by another thread counts as out until its
         * page's owner collects it). */
        size_t npages = pa_load_relaxed(&pa_limit) >> PA_PAGE_SHIFT;
        for (size_t i = 0; i < npages; i++) {
            uint16_t bsize = RD(pa_pages[i].bsize);
            uint8_t cls = RD(pa_pages[i].cls);
            if (bsize && cls < PA_NCLASS) {
                pages[cls]++;
                used[cls] += (uint64_t)RD(pa_pages[i].used) + RD(pa_pages[i].used_bias);
            }
        }
        pa_pool_stats pool;
        pa_pool_counters(&pool);
        out->arenas_committed = pool.committed / PA_ARENA_PAGES;
        out->bytes_committed = pool.committed * PA_PAGE_SIZE;
        out->pages_given_back = pool.purged;
        out->bytes_given_back = pool.purged * PA_PAGE_SIZE;
        out->pages_dirty = pool.dirty;
        out->pages_taken = pool.taken;
        out->pages_returned = pool.returned;
    }
    pa_bg_counters(out);
    /* The classes this mode serves (a class no request size maps to does not exist here). */
    unsigned k = 0;
    for (uint32_t c = 0; c < PA_NCLASS; c++) {
        if (!pa_class_served(c, pa_opt.align)) continue;
        struct pa_class_stats *s = &out->classes[k++];
        s->size = pa_class_size(c);
        s->allocs = allocs[c];
#if PA_STATS
        /* Exact at any instant: every free is counted where it happens, remote ones too. A racing
         * snapshot may read a free before the allocation it undoes. */
        s->frees = frees[c] < allocs[c] ? frees[c] : allocs[c];
        s->in_use = s->allocs - s->frees;
        (void)used;
#else
        s->in_use = used[c];
        s->allocs = s->in_use; /* not counted: at least the blocks out */
        s->frees = 0;
#endif
        s->pages = pages[c];
        s->peak_pages = atomic_load_explicit(&class_pages_peak[c], memory_order_relaxed);
        if (s->peak_pages < s->pages) s->peak_pages = s->pages;
        s->peak_in_use = s->peak_pages * pa_class_blocks(c);
        s->bytes_held = pages[c] * PA_PAGE_SIZE;
        s->wasted = allocs[c] * s->size - requested[c];
        out->total.allocs += s->allocs;
        out->total.frees += s->frees;
        out->total.in_use += s->in_use;
        out->total.peak_pages += s->peak_pages;
        out->total.peak_in_use += s->peak_in_use;
        out->total.pages += s->pages;
        out->total.bytes_held += s->bytes_held;
        out->total.wasted += s->wasted;
        out->in_use_bytes += s->in_use * s->size;
    }
    out->nclasses = k;
    return 0;
}

/* ---- the report: formatted on the stack, written with write(2) ---- */

typedef struct {
    int fd;
    int failed;
    size_t n;
    char buf[2048];
} writer;

static void w_flush(writer *w) {
    size_t done = 0;
    while (done < w->n) {
        ssize_t k = write(w->fd, w->buf + done, w->n - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            w->failed = 1;
            break;
        }
        done += (size_t)k;
    }
    w->n = 0;
}

static void w_str(writer *w, const char *s) {
    for (; *s; s++) {
        if (w->n == sizeof w->buf) w_flush(w);
        w->buf[w->n++] = *s;
    }
}

/* v right-aligned in width columns (0: as is). */
static void w_num(writer *w, uint64_t v, size_t width) {
    char d[24];
    size_t len = pa_fmt_u64(d, v);
    d[len] = 0;
    for (; width > len; width--) w_str(w, " ");
    w_str(w, d);
}

/* "name": v, */
static void w_field(writer *w, const char *name, uint64_t v, int last) {
    w_str(w, "\"");
    w_str(w, name);
    w_str(w, "\": ");
    w_num(w, v, 0);
    if (!last) w_str(w, ", ");
}

static void w_class_fields(writer *w, const struct pa_class_stats *s, int with_size) {
    if (with_size) w_field(w, "size", s->size, 0);
    w_field(w, "allocs", s->allocs, 0);
    w_field(w, "frees", s->frees, 0);
    w_field(w, "in_use", s->in_use, 0);
    w_field(w, "peak_in_use", s->peak_in_use, 0);
    w_field(w, "peak_pages", s->peak_pages, 0);
    w_field(w, "pages", s->pages, 0);
    w_field(w, "bytes_held", s->bytes_held, 0);
    w_field(w, "wasted", s->wasted, 1);
}

static const char *bg_state_name(unsigned long long state) {
    switch (state) {
    case PA_BG_STATE_RUNNING: return "running";
    case PA_BG_STATE_WAITING: return "not started";
    case PA_BG_STATE_FAILED: return "could not start";
    default: return "off";
    }
}

static void report_json(writer *w, const struct pa_stats *st) {
    w_str(w, "{\"pyalloc\": \"" PA_VERSION_STRING "\", ");
    w_field(w, "pid", (uint64_t)getpid(), 0);
    w_field(w, "alignment", (uint64_t)st->alignment, 0);
    w_field(w, "page_size", (uint64_t)st->page_size, 0);
    w_str(w, "\"counters\": ");
    w_str(w, st->enabled ? "true" : "false");
    w_str(w, ",\n \"classes\": [\n");
    for (unsigned i = 0; i < st->nclasses; i++) {
        w_str(w, "  {");
        w_class_fields(w, &st->classes[i], 1);
        w_str(w, i + 1 < st->nclasses ? "},\n" : "}\n");
    }
    w_str(w, " ],\n \"total\": {");
    w_class_fields(w, &st->total, 0);
    w_str(w, ", ");
    w_field(w, "in_use_bytes", st->in_use_bytes, 1);
    w_str(w, "},\n \"passthrough\": {");
    w_field(w, "calls", st->passthrough_calls, 0);
    w_field(w, "bytes", st->passthrough_bytes, 1);
    w_str(w, "},\n \"arenas\": {");
    w_field(w, "committed", st->arenas_committed, 0);
    w_field(w, "bytes_committed", st->bytes_committed, 0);
    w_field(w, "pages_given_back", st->pages_given_back, 0);
    w_field(w, "bytes_given_back", st->bytes_given_back, 0);
    w_field(w, "pages_dirty", st->pages_dirty, 0);
    w_field(w, "pages_taken", st->pages_taken, 0);
    w_field(w, "pages_returned", st->pages_returned, 1);
    w_str(w, "},\n \"heaps\": {");
    w_field(w, "live", st->heaps_live, 0);
    w_field(w, "abandoned", st->heaps_abandoned, 0);
    w_field(w, "pages_adopted", st->pages_adopted, 1);
    w_str(w, "},\n \"background\": {\"state\": \"");
    w_str(w, bg_state_name(st->bg_state));
    w_str(w, "\", ");
    w_field(w, "wakeups", st->bg_wakeups, 0);
    w_field(w, "pages_given_back", st->bg_pages_given_back, 0);
    w_field(w, "bytes_given_back", st->bg_bytes_given_back, 0);
    w_field(w, "glibc_trims", st->glibc_trims, 0);
    w_field(w, "glibc_trim_bytes", st->glibc_trim_bytes, 1);
    w_str(w, "},\n ");
    w_field(w, "cross_thread_frees", st->cross_thread_frees, 1);
    w_str(w, "}\n");
}

static void text_row(writer *w, const char *label, const struct pa_class_stats *s) {
    w_str(w, label);
    w_num(w, s->allocs, 13);
    w_num(w, s->frees, 13);
    w_num(w, s->in_use, 11);
    w_num(w, s->peak_in_use, 11);
    w_num(w, s->peak_pages, 6);
    w_num(w, s->pages, 8);
    w_num(w, (s->bytes_held + 1023) >> 10, 11);
    w_num(w, (s->wasted + 1023) >> 10, 11);
    w_str(w, "\n");
}

static void report_text(writer *w, const struct pa_stats *st) {
    w_str(w, "pyalloc " PA_VERSION_STRING " stats, pid ");
    w_num(w, (uint64_t)getpid(), 0);
    w_str(w, ", alignment ");
    w_num(w, (uint64_t)st->alignment, 0);
    w_str(w, st->enabled ? "\n" : " (built without counters: pages only)\n");
    w_str(w, "class       allocs        frees     in use   peak <=  peak pg   pages   held KiB wasted KiB\n");
    for (unsigned i = 0; i < st->nclasses; i++) {
        const struct pa_class_stats *s = &st->classes[i];
        if (!s->allocs && !s->pages) continue;
        w_num(w, s->size, 5);
        text_row(w, "", s);
    }
    text_row(w, "total", &st->total);
    w_str(w, "in use: ");
    w_num(w, st->in_use_bytes, 0);
    w_str(w, " bytes in small blocks\npassthrough to the system allocator: ");
    w_num(w, st->passthrough_calls, 0);
    w_str(w, " calls, ");
    w_num(w, st->passthrough_bytes, 0);
    w_str(w, " bytes\narenas: ");
    w_num(w, st->arenas_committed, 0);
    w_str(w, " committed (");
    w_num(w, st->bytes_committed >> 10, 0);
    w_str(w, " KiB); ");
    w_num(w, st->pages_given_back, 0);
    w_str(w, " pages given back (");
    w_num(w, st->bytes_given_back >> 10, 0);
    w_str(w, " KiB); ");
    w_num(w, st->pages_dirty, 0);
    w_str(w, " empty pages waiting; ");
    w_num(w, st->pages_taken, 0);
    w_str(w, " pages taken from the pool, ");
    w_num(w, st->pages_returned, 0);
    w_str(w, " returned\nheaps: ");
    w_num(w, st->heaps_live, 0);
    w_str(w, " live, ");
    w_num(w, st->heaps_abandoned, 0);
    w_str(w, " abandoned, ");
    w_num(w, st->pages_adopted, 0);
    w_str(w, " pages adopted; cross-thread frees: ");
    w_num(w, st->cross_thread_frees, 0);
    w_str(w, "\nbackground thread: ");
    w_str(w, bg_state_name(st->bg_state));
    w_str(w, "; ");
    w_num(w, st->bg_pages_given_back, 0);
    w_str(w, " pages given back (");
    w_num(w, st->bg_bytes_given_back >> 10, 0);
    w_str(w, " KiB); glibc trimmed ");
    w_num(w, st->glibc_trims, 0);
    w_str(w, " times (");
    w_num(w, st->glibc_trim_bytes >> 10, 0);
    w_str(w, " KiB)\n");
}

PA_API int pa_stats_print(int fd, int format) {
    struct pa_stats st;
    pa_stats_get(&st, sizeof st);
    writer w = {.fd = fd};
    if (format == PA_STATS_JSON) report_json(&w, &st);
    else report_text(&w, &st);
    w_flush(&w);
    return w.failed ? -1 : 0;
}

/* ---- PYALLOC_STATS: the report at exit ---- */

/* PYALLOC_STATS_FILE with each %p replaced by the pid, into buf; false if it does not fit. */
static bool stats_path(char *buf, size_t cap, const char *pattern) {
    size_t n = 0;
    for (const char *s = pattern; *s; s++) {
        if (s[0] == '%' && s[1] == 'p') {
            char d[24];
            size_t len = pa_fmt_u64(d, (uint64_t)getpid());
            if (n + len >= cap) return false;
            memcpy(buf + n, d, len);
            n += len;
            s++;
        } else {
            if (n + 1 >= cap) return false;
            buf[n++] = *s;
        }
    }
    buf[n] = 0;
    return true;
}

void pa_stats_at_exit(void) {
    if (!pa_opt.stats) return;
    int fd = 2, opened = 0;
    if (pa_opt.stats_file[0]) {
        char path[sizeof pa_opt.stats_file + 32];
        if (!stats_path(path, sizeof path, pa_opt.stats_file)) {
            pa_warn("PYALLOC_STATS_FILE is too long; the report goes to stderr");
        } else if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
            pa_warn("cannot open PYALLOC_STATS_FILE; the report goes to stderr");
            fd = 2;
        } else {
            opened = 1;
        }
    }
    int saved = errno;
    pa_stats_print(fd, pa_opt.stats == 2 ? PA_STATS_JSON : PA_STATS_TEXT);
    if (opened) close(fd);
    errno = saved;
}

__attribute__((destructor)) static void stats_destructor(void) {
    pa_bg_exiting();
    pa_stats_at_exit();
}
