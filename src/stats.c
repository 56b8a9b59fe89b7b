/* SPDX-License-Identifier: MIT
 * Statistics: what the allocator did, per size class. The counters live in each thread's heap and
 * are bumped by that thread alone (malloc: one add by request size; free: one add by class, in the
 * freeing thread's heap, remote frees too), so the fast paths take no lock and share no cache line,
 * and in use = allocs - frees is exact at any instant; pages are counted at page events. Reading
 * sums every heap in the registry (counts_read: the one place that does). Nothing here allocates:
 * the report is formatted into a buffer on the stack and written with write(2).
 * Exports pa_stats_get, pa_stats_print, pa_stat_page, pa_live_bytes (the live figure of the peak
 * and the timeline, monitor.c), pa_stats_sys_bytes (the background thread's estimate of glibc's
 * fresh free memory), the shared counters of threads without a heap (pa_orphan_*) and the
 * PYALLOC_STATS report at exit (with the start-up work it needs: a copy of stderr, a record per
 * process in a %p report file). */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pyalloc.h"

#if PA_STATS
/* by threads without a heap of their own: passthrough requests, and small-block frees by class */
_Atomic uint64_t pa_orphan_sys_calls, pa_orphan_sys_bytes, pa_orphan_sys_live;
_Atomic uint64_t pa_orphan_nfree[PA_NCLASS];
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

/* ---- the counts: what the heaps say now ----
 * Every figure of the statistics, the peak and the timeline is read here, and only here: blocks
 * handed out (by request size) and freed (by class) and the passthrough's bytes, summed over the
 * heaps; pages held per class from the page events (pa_stat_page). Built without the counters,
 * blocks in use are read off the page descriptors instead (a block another thread freed counting
 * until its page's owner collects it). */

typedef struct counts {
    uint64_t allocs[PA_NCLASS], requested[PA_NCLASS], frees[PA_NCLASS], in_use[PA_NCLASS];
    uint64_t sys_calls, sys_bytes, sys_live;
    uint64_t heaps_live, heaps_abandoned, remote_frees, adopted;
} counts;

#if !PA_STATS
/* Blocks out per class, off the page descriptors. */
PA_COUNTER_READER static void counts_pages(counts *c) {
    size_t npages = pa_load_relaxed(&pa_limit) >> PA_PAGE_SHIFT;
    for (size_t i = 0; i < npages; i++) {
        uint16_t bsize = RD(pa_pages[i].bsize);
        uint8_t cls = RD(pa_pages[i].cls);
        if (bsize && cls < PA_NCLASS) c->in_use[cls] += (uint64_t)RD(pa_pages[i].used) + RD(pa_pages[i].used_bias);
    }
    for (uint32_t cls = 0; cls < PA_NCLASS; cls++) c->allocs[cls] = c->in_use[cls]; /* at least those */
}
#endif

/* Everything the threads count themselves, summed over the heaps (under heaps_lock) and the shared
 * counters of threads without one; then per class, blocks in use. Returns the bytes of those
 * blocks (blocks in use x class size). */
PA_COUNTER_READER static uint64_t counts_read(counts *c) {
    memset(c, 0, sizeof *c);
    if (!pa_ready()) return 0;
    pthread_mutex_lock(&pa_heaps_lock);
    for (pa_heap *h = pa_heap_first(); h; h = h->next_heap) {
        if (h->live) c->heaps_live++;
        else c->heaps_abandoned++;
        c->remote_frees += RD(h->stats.remote_frees);
        c->adopted += RD(h->stats.adopted);
#if PA_STATS
        for (uint32_t n = 0; n < PA_NDIRECT; n++) {
            uint64_t k = pa_heap_allocs(h, n);
            uint32_t cls = pa_class_for(n);
            c->allocs[cls] += k;
            c->requested[cls] += k * n;
        }
        for (uint32_t cls = 0; cls < PA_NCLASS; cls++) c->frees[cls] += RD(h->nfree[cls]);
        c->sys_calls += RD(h->sys_calls);
        c->sys_bytes += RD(h->sys_bytes);
        c->sys_live += RD(h->sys_live);
#endif
    }
    pthread_mutex_unlock(&pa_heaps_lock);
    c->remote_frees += atomic_load_explicit(&pa_orphan_remote_frees, memory_order_relaxed);
    uint64_t bytes = 0;
#if PA_STATS
    c->sys_calls += atomic_load_explicit(&pa_orphan_sys_calls, memory_order_relaxed);
    c->sys_bytes += atomic_load_explicit(&pa_orphan_sys_bytes, memory_order_relaxed);
    c->sys_live += atomic_load_explicit(&pa_orphan_sys_live, memory_order_relaxed);
    /* Blocks glibc handed out before pyalloc counted (or to glibc itself) and freed through pyalloc
     * take away bytes that were never added: never below zero. */
    if ((int64_t)c->sys_live < 0) c->sys_live = 0;
    for (uint32_t cls = 0; cls < PA_NCLASS; cls++) {
        c->frees[cls] += atomic_load_explicit(&pa_orphan_nfree[cls], memory_order_relaxed);
        /* Exact at any instant: every free is counted where it happens, remote ones too. A racing
         * read may see a free before the allocation it undoes. */
        if (c->frees[cls] > c->allocs[cls]) c->frees[cls] = c->allocs[cls];
        c->in_use[cls] = c->allocs[cls] - c->frees[cls];
        bytes += c->in_use[cls] * pa_class_size(cls);
    }
#else
    counts_pages(c);
    for (uint32_t cls = 0; cls < PA_NCLASS; cls++) bytes += c->in_use[cls] * pa_class_size(cls);
#endif
    return bytes;
}

void pa_live_bytes(uint64_t *small, uint64_t *large) {
    static counts c; /* 2 KiB, off the stack of the thread that grows: monitor.c calls this under its
                        busy flag, one thread at a time */
    *small = counts_read(&c);
    *large = c.sys_live;
}

/* Bytes asked of the system allocator so far, summed over every heap; UINT64_MAX when not counted
 * (PA_STATS off). For the background thread's estimate of glibc's fresh free memory. */
PA_COUNTER_READER uint64_t pa_stats_sys_bytes(void) {
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
    out->version = PA_VERSION_MAJOR * 10000 + PA_VERSION_MINOR * 100 + PA_VERSION_PATCH;
    out->alignment = pa_opt.align;
    out->enabled = PA_STATS;
    out->page_size = (unsigned)PA_PAGE_SIZE;
    counts c;
    counts_read(&c);
    if (pa_ready()) {
        out->heaps_live = c.heaps_live;
        out->heaps_abandoned = c.heaps_abandoned;
        out->cross_thread_frees = c.remote_frees;
        out->pages_adopted = c.adopted;
        out->passthrough_calls = c.sys_calls;
        out->passthrough_bytes = c.sys_bytes;
        out->passthrough_live = c.sys_live;
        pa_pool_stats pool;
        pa_pool_counters(&pool);
        out->arenas_committed = pool.committed / PA_ARENA_PAGES;
        out->bytes_committed = pool.committed * PA_PAGE_SIZE;
        out->pages_given_back = pool.purged;
        out->bytes_given_back = pool.purged * PA_PAGE_SIZE;
        out->pages_dirty = pool.dirty;
        out->pages_taken = pool.taken;
        out->pages_returned = pool.returned;
        pa_mesh_counters mc;
        pa_mesh_counters_get(&mc);
        out->mesh_passes = mc.passes;
        out->mesh_pages = mc.pages;
        out->mesh_regions = mc.regions;
        out->mesh_frames = mc.frames;
        out->mesh_holes = mc.holes;
        out->mesh_bytes_saved = (mc.regions - (mc.frames < mc.regions ? mc.frames : mc.regions) + mc.holes) * 4096;
        out->mesh_vmas = mc.vmas;
    }
    pa_bg_counters(out);
    /* The classes this mode serves (a class no request size maps to does not exist here). */
    unsigned k = 0;
    for (uint32_t cls = 0; cls < PA_NCLASS; cls++) {
        if (!pa_class_served(cls, pa_opt.align)) continue;
        struct pa_class_stats *s = &out->classes[k++];
        s->size = pa_class_size(cls);
        s->allocs = c.allocs[cls];
        s->frees = c.frees[cls];
        s->in_use = c.in_use[cls];
        s->pages = atomic_load_explicit(&class_pages[cls], memory_order_relaxed);
        s->peak_pages = atomic_load_explicit(&class_pages_peak[cls], memory_order_relaxed);
        if (s->peak_pages < s->pages) s->peak_pages = s->pages;
        s->peak_in_use = s->peak_pages * pa_class_blocks(cls);
        s->bytes_held = s->pages * PA_PAGE_SIZE;
        s->wasted = c.allocs[cls] * s->size - c.requested[cls];
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
    out->live_bytes = out->in_use_bytes + out->passthrough_live;
    pa_mon_now mon;
    pa_mon_read(&mon);
    out->rss_bytes = mon.rss;
    out->t_ms = mon.t_ms;
    out->peak_live_bytes = mon.peak_live;
    out->peak_t_ms = mon.peak_t_ms;
    out->peak_rss_bytes = mon.peak_rss;
    if (out->live_bytes > out->peak_live_bytes) { /* now is the highest yet (not evaluated since) */
        out->peak_live_bytes = out->live_bytes;
        out->peak_t_ms = out->t_ms;
        out->peak_rss_bytes = out->rss_bytes;
    }
    return 0;
}

/* ---- the report: formatted on the stack, written with write(2) ---- */

/* s (len bytes) right-aligned in width columns (0: as is). */
static void w_right(pa_writer *w, const char *s, size_t len, size_t width) {
    for (; width > len; width--) pa_w_mem(w, " ", 1);
    pa_w_mem(w, s, len);
}

static void w_num(pa_writer *w, uint64_t v, size_t width) {
    char d[24];
    w_right(w, d, pa_fmt_u64(d, v), width);
}

/* A byte count in the text report's units: "N B" below 1 KiB, else KiB, MiB, GiB or TiB with one
 * decimal, in the smallest unit that keeps the rounded value under 1024 (integer arithmetic). */
static size_t fmt_size(char *d, uint64_t v) {
    static const char units[][4] = {"KiB", "MiB", "GiB", "TiB"};
    size_t n;
    if (v < 1024) {
        n = pa_fmt_u64(d, v);
        memcpy(d + n, " B", 2);
        return n + 2;
    }
    unsigned u = 0;
    uint64_t whole, tenths;
    for (;; u++) {
        unsigned shift = 10 * (u + 1);
        uint64_t unit = (uint64_t)1 << shift;
        whole = v >> shift;
        tenths = ((v & (unit - 1)) * 10 + unit / 2) >> shift;
        if (tenths == 10) {
            whole++;
            tenths = 0;
        }
        if (whole < 1024 || u == 3) break;
    }
    n = pa_fmt_u64(d, whole);
    d[n++] = '.';
    d[n++] = (char)('0' + tenths);
    d[n++] = ' ';
    memcpy(d + n, units[u], 3);
    return n + 3;
}

static void w_size(pa_writer *w, uint64_t v, size_t width) {
    char d[40];
    w_right(w, d, fmt_size(d, v), width);
}

/* ms as seconds with three decimals: "12.345 s". */
static void w_secs(pa_writer *w, uint64_t ms) {
    char d[32];
    size_t n = pa_fmt_u64(d, ms / 1000);
    d[n++] = '.';
    d[n++] = (char)('0' + ms / 100 % 10);
    d[n++] = (char)('0' + ms / 10 % 10);
    d[n++] = (char)('0' + ms % 10);
    memcpy(d + n, " s", 2);
    pa_w_mem(w, d, n + 2);
}

/* s as a JSON string: quotes, backslashes and control characters escaped. */
static void w_json_str(pa_writer *w, const char *s) {
    static const char hex[] = "0123456789abcdef";
    pa_w_str(w, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            pa_w_mem(w, e, 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            pa_w_mem(w, e, 6);
        } else {
            pa_w_mem(w, (const char *)&c, 1);
        }
    }
    pa_w_str(w, "\"");
}

/* "name": v, */
static void w_field(pa_writer *w, const char *name, uint64_t v, int last) {
    pa_w_str(w, "\"");
    pa_w_str(w, name);
    pa_w_str(w, "\": ");
    w_num(w, v, 0);
    if (!last) pa_w_str(w, ", ");
}

/* The program this process runs (/proc/self/exe), into buf; "" where /proc is not mounted. */
static const char *exe_path(char *buf, size_t cap) {
    ssize_t n = readlink("/proc/self/exe", buf, cap - 1);
    buf[n > 0 ? n : 0] = 0;
    return buf;
}

/* {"pyalloc": "0.1.0", "pid": N, "exe": "...", */
static void json_head(pa_writer *w) {
    char exe[512];
    pa_w_str(w, "{\"pyalloc\": \"" PA_VERSION_STRING "\", ");
    w_field(w, "pid", (uint64_t)getpid(), 0);
    pa_w_str(w, "\"exe\": ");
    w_json_str(w, exe_path(exe, sizeof exe));
    pa_w_str(w, ", ");
}

static void w_class_fields(pa_writer *w, const struct pa_class_stats *s, int with_size) {
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

/* The timeline's points, one a line. */
static void json_timeline(pa_writer *w) {
    static const char *const names[PA_MON_POINT_FIELDS] = {"t_ms",        "live_bytes",  "rss_bytes",
                                                           "small_bytes", "large_bytes", "given_back_bytes"};
    size_t n;
    uint64_t interval;
    const uint64_t *pt = pa_mon_hold(&n, &interval);
    w_field(w, "timeline_interval_ms", pt ? interval : 0, 0);
    pa_w_str(w, "\n \"timeline\": [");
    for (size_t i = 0; pt && i < n; i++, pt += PA_MON_POINT_FIELDS) {
        pa_w_str(w, i ? ",\n  {" : "\n  {");
        for (unsigned f = 0; f < PA_MON_POINT_FIELDS; f++) w_field(w, names[f], pt[f], f + 1 == PA_MON_POINT_FIELDS);
        pa_w_str(w, "}");
    }
    pa_mon_release();
    pa_w_str(w, n ? "\n ]" : "]");
}

static void report_json(pa_writer *w, const struct pa_stats *st) {
    json_head(w);
    w_field(w, "alignment", (uint64_t)st->alignment, 0);
    w_field(w, "page_size", (uint64_t)st->page_size, 0);
    pa_w_str(w, "\"counters\": ");
    pa_w_str(w, st->enabled ? "true" : "false");
    pa_w_str(w, ", ");
    w_field(w, "t_ms", st->t_ms, 0);
    w_field(w, "start_monotonic_ms", pa_mon_start_ms(), 1);
    pa_w_str(w, ",\n \"classes\": [\n");
    for (unsigned i = 0; i < st->nclasses; i++) {
        pa_w_str(w, "  {");
        w_class_fields(w, &st->classes[i], 1);
        pa_w_str(w, i + 1 < st->nclasses ? "},\n" : "}\n");
    }
    pa_w_str(w, " ],\n \"total\": {");
    w_class_fields(w, &st->total, 0);
    pa_w_str(w, ", ");
    w_field(w, "in_use_bytes", st->in_use_bytes, 1);
    pa_w_str(w, "},\n \"passthrough\": {");
    w_field(w, "calls", st->passthrough_calls, 0);
    w_field(w, "bytes", st->passthrough_bytes, 0);
    w_field(w, "live_bytes", st->passthrough_live, 1);
    pa_w_str(w, "},\n \"live\": {");
    w_field(w, "bytes", st->live_bytes, 0);
    w_field(w, "small_bytes", st->in_use_bytes, 0);
    w_field(w, "large_bytes", st->passthrough_live, 0);
    w_field(w, "rss_bytes", st->rss_bytes, 1);
    pa_w_str(w, "},\n \"peak\": {");
    w_field(w, "live_bytes", st->peak_live_bytes, 0);
    w_field(w, "t_ms", st->peak_t_ms, 0);
    w_field(w, "rss_bytes", st->peak_rss_bytes, 1);
    pa_w_str(w, "},\n \"arenas\": {");
    w_field(w, "committed", st->arenas_committed, 0);
    w_field(w, "bytes_committed", st->bytes_committed, 0);
    w_field(w, "pages_given_back", st->pages_given_back, 0);
    w_field(w, "bytes_given_back", st->bytes_given_back, 0);
    w_field(w, "pages_dirty", st->pages_dirty, 0);
    w_field(w, "pages_taken", st->pages_taken, 0);
    w_field(w, "pages_returned", st->pages_returned, 1);
    pa_w_str(w, "},\n \"heaps\": {");
    w_field(w, "live", st->heaps_live, 0);
    w_field(w, "abandoned", st->heaps_abandoned, 0);
    w_field(w, "pages_adopted", st->pages_adopted, 1);
    pa_w_str(w, "},\n \"mesh\": {");
    w_field(w, "passes", st->mesh_passes, 0);
    w_field(w, "pages", st->mesh_pages, 0);
    w_field(w, "regions", st->mesh_regions, 0);
    w_field(w, "frames", st->mesh_frames, 0);
    w_field(w, "holes", st->mesh_holes, 0);
    w_field(w, "bytes_saved", st->mesh_bytes_saved, 0);
    w_field(w, "vmas", st->mesh_vmas, 1);
    pa_w_str(w, "},\n \"background\": {\"state\": \"");
    pa_w_str(w, bg_state_name(st->bg_state));
    pa_w_str(w, "\", ");
    w_field(w, "wakeups", st->bg_wakeups, 0);
    w_field(w, "pages_given_back", st->bg_pages_given_back, 0);
    w_field(w, "bytes_given_back", st->bg_bytes_given_back, 0);
    w_field(w, "glibc_trims", st->glibc_trims, 0);
    w_field(w, "glibc_trim_bytes", st->glibc_trim_bytes, 1);
    pa_w_str(w, "},\n ");
    w_field(w, "cross_thread_frees", st->cross_thread_frees, 0);
    json_timeline(w);
    pa_w_str(w, "}\n");
}

/* The table's columns after "class": heading and width. Counts are exact; sizes in human units. */
static const struct {
    const char *head;
    unsigned width;
} text_cols[] = {{"allocs", 12}, {"frees", 12},     {"in use", 10}, {"peak <=", 10},
                 {"peak pages", 12}, {"pages", 8}, {"held", 12},   {"wasted", 12}};

static void text_row(pa_writer *w, const char *label, const struct pa_class_stats *s) {
    if (label) w_right(w, label, strlen(label), 5);
    else w_num(w, s->size, 5);
    uint64_t counts[] = {s->allocs, s->frees, s->in_use, s->peak_in_use, s->peak_pages, s->pages};
    unsigned c = 0;
    for (; c < sizeof counts / sizeof counts[0]; c++) w_num(w, counts[c], text_cols[c].width);
    w_size(w, s->bytes_held, text_cols[c++].width);
    w_size(w, s->wasted, text_cols[c].width);
    pa_w_str(w, "\n");
}

/* The one text layout: PYALLOC_STATS=1, pa_stats_print and `pyalloc stats` all print this. */
static void report_text(pa_writer *w, const struct pa_stats *st) {
    char exe[512];
    pa_w_str(w, "pyalloc " PA_VERSION_STRING " report: pid ");
    w_num(w, (uint64_t)getpid(), 0);
    if (*exe_path(exe, sizeof exe)) {
        pa_w_str(w, " (");
        pa_w_str(w, exe);
        pa_w_str(w, ")");
    }
    pa_w_str(w, ", alignment ");
    w_num(w, (uint64_t)st->alignment, 0);
    pa_w_str(w, ", pages of ");
    w_size(w, st->page_size, 0);
    pa_w_str(w, "\n");
    if (!st->enabled) pa_w_str(w, "(built without counters: allocs, frees, wasted and passthrough are not counted)\n");
    pa_w_str(w, "class");
    for (unsigned c = 0; c < sizeof text_cols / sizeof text_cols[0]; c++)
        w_right(w, text_cols[c].head, strlen(text_cols[c].head), text_cols[c].width);
    pa_w_str(w, "\n");
    unsigned shown = 0;
    for (unsigned i = 0; i < st->nclasses; i++) {
        const struct pa_class_stats *s = &st->classes[i];
        if (!s->allocs && !s->pages && !s->peak_pages) continue;
        text_row(w, NULL, s);
        shown++;
    }
    pa_w_str(w, "-----");
    for (unsigned c = 0; c < sizeof text_cols / sizeof text_cols[0]; c++) {
        static const char dashes[] = "------------";
        size_t len = strlen(text_cols[c].head);
        w_right(w, dashes, len, text_cols[c].width);
    }
    pa_w_str(w, "\n");
    text_row(w, "total", &st->total);
    if (shown < st->nclasses) {
        pa_w_str(w, "(");
        w_num(w, st->nclasses - shown, 0);
        pa_w_str(w, " of the ");
        w_num(w, st->nclasses, 0);
        pa_w_str(w, " size classes were not used and are not shown)\n");
    }
    pa_w_str(w, "\nin use:           ");
    w_num(w, st->total.in_use, 0);
    pa_w_str(w, " blocks, ");
    w_size(w, st->in_use_bytes, 0);
    pa_w_str(w, " (blocks x class size)\npassed to glibc:  ");
    w_num(w, st->passthrough_calls, 0);
    pa_w_str(w, " calls, ");
    w_size(w, st->passthrough_bytes, 0);
    pa_w_str(w, " (requests over ");
    w_num(w, PA_SMALL_MAX, 0);
    pa_w_str(w, " bytes or aligned beyond 16); ");
    w_size(w, st->passthrough_live, 0);
    pa_w_str(w, " live\nlive:             ");
    w_size(w, st->live_bytes, 0);
    pa_w_str(w, " (RSS ");
    w_size(w, st->rss_bytes, 0);
    pa_w_str(w, ") at ");
    w_secs(w, st->t_ms);
    pa_w_str(w, "; peak ");
    w_size(w, st->peak_live_bytes, 0);
    pa_w_str(w, " (RSS ");
    w_size(w, st->peak_rss_bytes, 0);
    pa_w_str(w, ") at ");
    w_secs(w, st->peak_t_ms);
    pa_w_str(w, "\narenas:           ");
    w_num(w, st->arenas_committed, 0);
    pa_w_str(w, " committed (");
    w_size(w, st->bytes_committed, 0);
    pa_w_str(w, "); ");
    w_num(w, st->pages_given_back, 0);
    pa_w_str(w, " pages given back to the OS (");
    w_size(w, st->bytes_given_back, 0);
    pa_w_str(w, "); ");
    w_num(w, st->pages_dirty, 0);
    pa_w_str(w, " empty pages kept\npages:            ");
    w_num(w, st->pages_taken, 0);
    pa_w_str(w, " taken from the pool, ");
    w_num(w, st->pages_returned, 0);
    pa_w_str(w, " returned to it, ");
    w_num(w, st->pages_adopted, 0);
    pa_w_str(w, " adopted from exited threads\nheaps:            ");
    w_num(w, st->heaps_live, 0);
    pa_w_str(w, " live, ");
    w_num(w, st->heaps_abandoned, 0);
    pa_w_str(w, " abandoned; ");
    w_num(w, st->cross_thread_frees, 0);
    pa_w_str(w, " cross-thread frees\nbackground:       ");
    pa_w_str(w, bg_state_name(st->bg_state));
    pa_w_str(w, "; ");
    w_num(w, st->bg_pages_given_back, 0);
    pa_w_str(w, " pages given back (");
    w_size(w, st->bg_bytes_given_back, 0);
    pa_w_str(w, "); glibc trimmed ");
    w_num(w, st->glibc_trims, 0);
    pa_w_str(w, " times (");
    w_size(w, st->glibc_trim_bytes, 0);
    pa_w_str(w, ")\n");
    if (st->mesh_passes) {
        pa_w_str(w, "mesh:             ");
        w_num(w, st->mesh_passes, 0);
        pa_w_str(w, " passes; ");
        w_num(w, st->mesh_pages, 0);
        pa_w_str(w, " pages frozen, ");
        w_num(w, st->mesh_regions, 0);
        pa_w_str(w, " 4 KiB parts on ");
        w_num(w, st->mesh_frames, 0);
        pa_w_str(w, " shared frames, ");
        w_num(w, st->mesh_holes, 0);
        pa_w_str(w, " given back; ");
        w_size(w, st->mesh_bytes_saved, 0);
        pa_w_str(w, " saved; ");
        w_num(w, st->mesh_vmas, 0);
        pa_w_str(w, " mappings\n");
    }
}

static int stats_write(int fd, int format, const struct pa_stats *st) {
    pa_writer w = {.fd = fd};
    if (format == PA_STATS_JSON) report_json(&w, st);
    else report_text(&w, st);
    pa_w_flush(&w);
    return w.failed ? -1 : 0;
}

PA_API int pa_stats_print(int fd, int format) {
    struct pa_stats st;
    pa_stats_get(&st, sizeof st);
    return stats_write(fd, format, &st);
}

/* ---- PYALLOC_STATS: the report at exit, and what tells of a process that left none ----
 * The report goes to stderr or to PYALLOC_STATS_FILE (%p: the pid); with both formats asked for
 * (text,json), to stderr one after the other, or to the file name with .txt and .json appended.
 *
 * Programs close their stderr before the library's destructor runs (cat, sort and ls do, in an
 * atexit handler). So when a report is to go to stderr, a close-on-exec copy of it is taken at
 * start-up, and at exit the report goes to the copy or to fd 2, whichever is still the file seen
 * at start-up (its device and inode): never to another file that took the number. A forked child
 * closes its copy: a daemon must not hold its parent's pipe open. No descriptor is taken, and none
 * touched, unless a report was asked for.
 *
 * With a %p file name, each process writes a one-line record into its file(s) at start-up (and
 * after fork) that the report replaces at exit: a file that still holds it tells of a process that
 * ended with _exit(), was killed, or exec'd a program without pyalloc. */

#define PA_STATS_COPY_FD 100 /* the copy's lowest number: above those shells and programs pick */

static const struct {
    int format;
    const char *suffix; /* appended to the file name when both formats are written */
} stats_formats[] = {{PA_STATS_TEXT, ".txt"}, {PA_STATS_JSON, ".json"}};

static int err_copy = -1;
static bool err_known;
static dev_t err_dev;
static ino_t err_ino;

static bool stats_wants(int format) { return (pa_opt.stats & (format == PA_STATS_JSON ? 2 : 1)) != 0; }

static bool is_stderr(int fd) {
    struct stat st;
    return fd >= 0 && err_known && fstat(fd, &st) == 0 && st.st_dev == err_dev && st.st_ino == err_ino;
}

/* Where a report to stderr can go now: -1 if the program closed (or replaced) both. */
static int stderr_now(void) {
    if (is_stderr(err_copy)) return err_copy;
    if (is_stderr(2)) return 2;
    return -1;
}

/* "pyalloc: <why>; the report goes to stderr", to stderr if it is still there. */
static void stats_warn(const char *why) {
    pa_writer w = {.fd = stderr_now()};
    if (w.fd < 0) return;
    pa_w_str(&w, "pyalloc: ");
    pa_w_str(&w, why);
    pa_w_str(&w, "; the report goes to stderr\n");
    pa_w_flush(&w);
}

/* Opens this process's report file for format; -1 (and *why set) if it cannot. */
static int stats_open(int format, const char **why) {
    char path[sizeof pa_opt.stats_file + 40];
    const char *suffix = "";
    if ((pa_opt.stats & 3) == 3) suffix = stats_formats[format == PA_STATS_JSON].suffix;
    if (!pa_fmt_path(path, sizeof path, pa_opt.stats_file, suffix)) {
        *why = "PYALLOC_STATS_FILE is too long";
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) *why = "cannot open PYALLOC_STATS_FILE";
    return fd;
}

/* The record a process leaves in its %p file(s) until its report replaces it. */
static void stats_started(void) {
    if (!pa_opt.stats || !strstr(pa_opt.stats_file, "%p")) return;
    for (unsigned f = 0; f < 2; f++) {
        const char *why;
        if (!stats_wants(stats_formats[f].format)) continue;
        pa_writer w = {.fd = stats_open(stats_formats[f].format, &why)};
        if (w.fd < 0) continue; /* said at exit, when the report cannot be written either */
        if (stats_formats[f].format == PA_STATS_JSON) {
            json_head(&w);
            pa_w_str(&w, "\"started\": true}\n");
        } else {
            char exe[512];
            pa_w_str(&w, "pyalloc " PA_VERSION_STRING ": pid ");
            w_num(&w, (uint64_t)getpid(), 0);
            pa_w_str(&w, " (");
            pa_w_str(&w, exe_path(exe, sizeof exe));
            pa_w_str(&w, ") started; its report replaces this line when it exits\n");
        }
        pa_w_flush(&w);
        close(w.fd);
    }
}

static void stats_forked(void) {
    int saved = errno;
    if (err_copy >= 0) close(err_copy);
    err_copy = -1;
    stats_started();
    errno = saved;
}

__attribute__((constructor)) static void stats_start(void) {
    (void)pa_ready(); /* the options */
    if (!pa_opt.stats) return;
    int saved = errno;
    struct stat st;
    if (fstat(2, &st) == 0) { /* else the program started without a stderr: none to report to */
        err_known = true;
        err_dev = st.st_dev;
        err_ino = st.st_ino;
        if (!pa_opt.stats_file[0]) {
            err_copy = fcntl(2, F_DUPFD_CLOEXEC, PA_STATS_COPY_FD);
            if (err_copy < 0) err_copy = fcntl(2, F_DUPFD_CLOEXEC, 3); /* RLIMIT_NOFILE below it */
        }
    }
    stats_started();
    pthread_atfork(NULL, NULL, stats_forked);
    errno = saved;
}

void pa_stats_at_exit(void) {
    if (!pa_opt.stats) return;
    int saved = errno;
    pa_mon_final(); /* the timeline's last point, and the peak evaluated once more */
    struct pa_stats st;
    pa_stats_get(&st, sizeof st);
    for (unsigned f = 0; f < 2; f++) {
        int format = stats_formats[f].format, fd = -1;
        const char *why = NULL;
        if (!stats_wants(format)) continue;
        if (pa_opt.stats_file[0]) {
            fd = stats_open(format, &why);
            if (fd >= 0) {
                stats_write(fd, format, &st);
                close(fd);
                continue;
            }
            stats_warn(why);
        }
        fd = stderr_now();
        if (fd >= 0) stats_write(fd, format, &st);
    }
    errno = saved;
}

__attribute__((destructor)) static void stats_destructor(void) {
    pa_bg_exiting();
    pa_stats_at_exit();
}
