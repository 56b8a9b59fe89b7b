/* SPDX-License-Identifier: MIT
 * The figures over time: the peak of live bytes and when it happened, the timeline (a point every
 * PYALLOC_TIMELINE_MS), and their publication for `pyalloc top`: a memfd named "pyalloc", mapped
 * shared, that holds a snapshot under a seqlock; another process of the same user (or root) opens
 * it through /proc/PID/fd and maps it read-only. Exports pa_stat_growth, pa_stat_large, pa_mon_poll,
 * pa_mon_point, pa_mon_next, pa_mon_final, pa_mon_read, pa_mon_start_ms, pa_mon_hold and
 * pa_mon_release.
 *
 * When. Nothing here runs on a fast path. The peak is evaluated (live bytes summed, pa_live_bytes)
 * when a heap is about to take a page from outside its own lists (page.c calls pa_stat_growth) and
 * when a passthrough request of PA_PEAK_LARGE (64 KiB) or more is served, at most once per
 * max(PA_PEAK_STEP, live / 64) bytes of a heap's new pages and large requests (a countdown in the
 * heap), so that the evaluations of a growing program stay few however many threads it has; and at
 * every timeline point. Between evaluations live can rise by at most that step per heap plus the
 * free space of the pages the heaps already hold: the peak is a true live figure, below the true
 * peak by at most that much. A point is due every PYALLOC_TIMELINE_MS; the same two moments check
 * the clock for it (the coarse clock, read from the vDSO), and pa_mon_poll is there for a helper
 * thread to take points while the program makes no such call. A point is a full pa_stats_get, the
 * resident set size from /proc/self/statm (open, read, close: nothing allocates) and a snapshot
 * written into the publication. When the timeline is full (PA_TIMELINE_POINTS) neighbours merge,
 * keeping the higher live and RSS, and the interval doubles: any run length fits. A last point is
 * taken at exit, for the report.
 *
 * One thread at a time evaluates, takes a point or reads the timeline (the busy flag, taken with
 * an exchange: a thread that finds it taken skips its evaluation, since another is evaluating at
 * that very moment); no lock of the allocator is held when it is taken, and under it only
 * pa_stats_get's locks are taken.
 *
 * Publication. At start-up (the constructor) a memfd named "pyalloc" is made close-on-exec, moved
 * to the lowest free descriptor from PA_PUBLISH_FD_BASE (800), so that programs expecting low
 * numbers are not disturbed (where the descriptor limit is lower, it stays where memfd_create put
 * it), and mapped shared. PYALLOC_PUBLISH=0, or a kernel that refuses, leaves a private mapping of
 * the same layout: the report still gets its timeline. A forked child makes its own publication at
 * the same number (the inherited mapping is its parent's) and starts its own timeline and peak;
 * exec closes it. A memfd dies with the last process that maps it: nothing is left behind, even
 * after a crash. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pyalloc.h"

/* ---- the publication's layout: tools/pyalloc (`top`) reads it; a change of meaning or order
 * bumps PUB_LAYOUT, which top checks. docs/design.md describes it. ---- */
#define PUB_MAGIC 0x0a636f6c6c617970ull /* the bytes "pyalloc\n" */
#define PUB_LAYOUT 1

enum { /* the snapshot: one uint64_t each, in this order */
    S_T_MS,             /* when it was written, ms since start */
    S_SNAPSHOTS,        /* snapshots written so far */
    S_LIVE, S_SMALL, S_LARGE, S_RSS,
    S_PEAK_LIVE, S_PEAK_T_MS, S_PEAK_RSS,
    S_ALLOCS, S_FREES, S_IN_USE,              /* small blocks, all classes */
    S_SYS_CALLS, S_SYS_BYTES,                 /* passthrough requests */
    S_COMMITTED, S_GIVEN_BACK, S_DIRTY,       /* bytes */
    S_TAKEN, S_RETURNED, S_ADOPTED,           /* pages */
    S_HEAPS_LIVE, S_HEAPS_ABANDONED, S_REMOTE_FREES,
    S_TIMELINE_N, S_TIMELINE_INTERVAL,
    S_FIELDS
};
/* A row of the class table: size, allocs, frees, in_use, peak_in_use, peak_pages, pages,
 * bytes_held, wasted (struct pa_class_stats's order). */
#define CLASS_FIELDS 9

typedef struct pub {
    /* Written once, before magic (the last header field a reader checks) */
    uint64_t magic;
    uint32_t layout, header_bytes;  /* PUB_LAYOUT; offsetof(pub, snap) */
    char version[16];               /* PA_VERSION_STRING, NUL-padded */
    uint64_t pid;
    uint64_t start_ms, start_unix_ms; /* CLOCK_MONOTONIC and CLOCK_REALTIME at start, ms */
    uint32_t page_size, alignment, counters, nclasses;
    uint32_t snap_off, snap_fields, class_off, class_fields;
    uint32_t timeline_off, point_fields, timeline_cap, total_bytes;
    /* The snapshot: odd while it is being written */
    _Atomic uint64_t seq;
    uint64_t snap[S_FIELDS];
    uint64_t classes[PA_NCLASS][CLASS_FIELDS];
    uint64_t timeline[PA_TIMELINE_POINTS][PA_MON_POINT_FIELDS];
} pub;
_Static_assert(offsetof(pub, seq) == 104 && offsetof(pub, snap) == 112, "the header's layout is fixed");
#define PUB_BYTES ((sizeof(pub) + PA_OS_PAGE - 1) & ~(size_t)(PA_OS_PAGE - 1))

enum { PT_T, PT_LIVE, PT_RSS, PT_SMALL, PT_LARGE, PT_GIVEN_BACK };

static struct {
    _Atomic int started;        /* the constructor ran */
    _Atomic int busy;           /* one evaluator at a time */
    pub *p;                     /* the publication, or its private twin; NULL: none could be mapped */
    int fd;                     /* the memfd's descriptor; -1: not publishing */
    dev_t dev;                  /* ... and its file, to know it again in a forked child */
    ino_t ino;
    pid_t pid;                  /* the process p belongs to */
    uint64_t start_ms;          /* CLOCK_MONOTONIC(_COARSE) at start, ms */
    uint64_t last_point;        /* ms since start of the last point */
    uint64_t interval;          /* ms between points now */
    size_t n;                   /* points in the timeline */
    _Atomic uint64_t step;      /* bytes of a heap's growth between evaluations */
    _Atomic uint64_t peak_live, peak_t, peak_rss;
    uint64_t peak_small, peak_large; /* the peak's parts (under busy) */
    uint64_t peak_t_live;       /* live when peak_t was set */
    struct pa_stats st;         /* a point's figures (under busy: not on a thread's stack) */
} mon = {.fd = -1};

/* ---- clocks and the resident set ---- */

static uint64_t clock_ms(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts); /* the coarse clocks are read from the vDSO: no system call */
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ms since start. */
static uint64_t mon_now(void) {
    uint64_t t = clock_ms(CLOCK_MONOTONIC_COARSE);
    return t > mon.start_ms ? t - mon.start_ms : 0;
}

/* ---- the busy flag ---- */

static bool mon_try_lock(void) {
    return !atomic_exchange_explicit(&mon.busy, 1, memory_order_acquire);
}
static void mon_unlock(void) { atomic_store_explicit(&mon.busy, 0, memory_order_release); }

/* For readers that must get it (the report): waits out an evaluation or a point in progress, a
 * bounded while (never for ever: a signal handler may report from inside one). */
static bool mon_lock_wait(void) {
    for (unsigned i = 0; i < 100000; i++) {
        if (mon_try_lock()) return true;
        sched_yield();
    }
    return false;
}

/* ---- the peak ---- */

/* The step between evaluations at this live figure: max(PA_PEAK_STEP, live / 64). */
static uint64_t peak_step(uint64_t live) {
    uint64_t step = live >> PA_PEAK_STEP_SHIFT;
    return step > PA_PEAK_STEP ? step : PA_PEAK_STEP;
}

/* live evaluated at now. The peak is the highest figure evaluated; its time (and the RSS then) is
 * when live first came within two steps of it (growth evaluations are about a step apart): a
 * program that reaches its peak and holds it is seen reaching it, not at the plateau's last
 * evaluation. */
static void mon_peak(uint64_t now, uint64_t small, uint64_t large, uint64_t rss) {
    uint64_t live = small + large;
    if (live <= atomic_load_explicit(&mon.peak_live, memory_order_relaxed)) return;
    if (live > mon.peak_t_live + 2 * peak_step(live)) {
        mon.peak_t_live = live;
        atomic_store_explicit(&mon.peak_t, now, memory_order_relaxed);
        atomic_store_explicit(&mon.peak_rss, rss ? rss : pa_os_rss(), memory_order_relaxed);
    }
    mon.peak_small = small;
    mon.peak_large = large;
    atomic_store_explicit(&mon.peak_live, live, memory_order_relaxed);
}

static void mon_set_step(uint64_t live) { atomic_store_explicit(&mon.step, peak_step(live), memory_order_relaxed); }

static void mon_evaluate(uint64_t now) {
    uint64_t small, large;
    pa_live_bytes(&small, &large);
    mon_peak(now, small, large, 0);
    mon_set_step(small + large);
}

/* ---- the timeline and the snapshot ---- */

static void timeline_add(pub *p, const uint64_t *pt) {
    if (mon.n && p->timeline[mon.n - 1][PT_T] == pt[PT_T]) mon.n--; /* the same ms: replaced */
    if (mon.n == PA_TIMELINE_POINTS) {
        for (size_t i = 0; i < PA_TIMELINE_POINTS / 2; i++) {
            const uint64_t *a = p->timeline[2 * i], *b = p->timeline[2 * i + 1];
            uint64_t rss = a[PT_RSS] > b[PT_RSS] ? a[PT_RSS] : b[PT_RSS];
            memmove(p->timeline[i], b[PT_LIVE] > a[PT_LIVE] ? b : a, sizeof p->timeline[i]);
            p->timeline[i][PT_RSS] = rss;
        }
        mon.n = PA_TIMELINE_POINTS / 2;
        mon.interval *= 2;
    }
    memcpy(p->timeline[mon.n++], pt, sizeof p->timeline[0]);
}

static void snapshot_fill(pub *p, const struct pa_stats *st) {
    uint64_t *s = p->snap;
    s[S_T_MS] = st->t_ms;
    s[S_SNAPSHOTS]++;
    s[S_LIVE] = st->live_bytes;
    s[S_SMALL] = st->in_use_bytes;
    s[S_LARGE] = st->passthrough_live;
    s[S_RSS] = st->rss_bytes;
    s[S_PEAK_LIVE] = st->peak_live_bytes;
    s[S_PEAK_T_MS] = st->peak_t_ms;
    s[S_PEAK_RSS] = st->peak_rss_bytes;
    s[S_ALLOCS] = st->total.allocs;
    s[S_FREES] = st->total.frees;
    s[S_IN_USE] = st->total.in_use;
    s[S_SYS_CALLS] = st->passthrough_calls;
    s[S_SYS_BYTES] = st->passthrough_bytes;
    s[S_COMMITTED] = st->bytes_committed;
    s[S_GIVEN_BACK] = st->bytes_given_back;
    s[S_DIRTY] = st->pages_dirty * st->page_size;
    s[S_TAKEN] = st->pages_taken;
    s[S_RETURNED] = st->pages_returned;
    s[S_ADOPTED] = st->pages_adopted;
    s[S_HEAPS_LIVE] = st->heaps_live;
    s[S_HEAPS_ABANDONED] = st->heaps_abandoned;
    s[S_REMOTE_FREES] = st->cross_thread_frees;
    s[S_TIMELINE_N] = mon.n;
    s[S_TIMELINE_INTERVAL] = mon.interval;
    for (unsigned k = 0; k < st->nclasses && k < PA_NCLASS; k++) {
        const struct pa_class_stats *c = &st->classes[k];
        const uint64_t row[CLASS_FIELDS] = {c->size,       c->allocs, c->frees,      c->in_use, c->peak_in_use,
                                            c->peak_pages, c->pages,  c->bytes_held, c->wasted};
        memcpy(p->classes[k], row, sizeof row);
    }
}

static void mon_restart(void);

/* A point (under busy): the figures, the peak, the timeline, the snapshot. A peak evaluated since
 * the last point goes into the timeline too, as the point it was: the timeline then holds the
 * highest live figure of every interval, as merged points do. */
static void mon_point(uint64_t now) {
    if (getpid() != mon.pid) mon_restart(); /* forked, and a fork handler before ours allocated */
    struct pa_stats *st = &mon.st;
    pa_stats_get(st, sizeof *st);
    now = st->t_ms > now ? st->t_ms : now;
    mon_peak(now, st->in_use_bytes, st->passthrough_live, st->rss_bytes);
    st->peak_live_bytes = atomic_load_explicit(&mon.peak_live, memory_order_relaxed);
    st->peak_t_ms = atomic_load_explicit(&mon.peak_t, memory_order_relaxed);
    st->peak_rss_bytes = atomic_load_explicit(&mon.peak_rss, memory_order_relaxed);
    mon_set_step(st->live_bytes);
    pub *p = mon.p;
    if (p) {
        uint64_t seq = atomic_load_explicit(&p->seq, memory_order_relaxed);
        atomic_store_explicit(&p->seq, seq + 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_release); /* odd before the fields change */
        if (st->peak_t_ms < now && (mon.n == 0 || st->peak_t_ms > mon.last_point)) {
            const uint64_t peak[PA_MON_POINT_FIELDS] = {st->peak_t_ms, st->peak_live_bytes, st->peak_rss_bytes,
                                                        mon.peak_small, mon.peak_large, st->bytes_given_back};
            timeline_add(p, peak);
        }
        const uint64_t pt[PA_MON_POINT_FIELDS] = {now, st->live_bytes, st->rss_bytes, st->in_use_bytes,
                                                  st->passthrough_live, st->bytes_given_back};
        timeline_add(p, pt);
        snapshot_fill(p, st);
        atomic_store_explicit(&p->seq, seq + 2, memory_order_release);
    }
    mon.last_point = now;
    atomic_store_explicit(&pa_mon_next, pa_clock_ms() + (uint32_t)mon.interval, memory_order_relaxed);
}

/* A point if one is due, else an evaluation of the peak; false if another thread is at it. */
static bool mon_try(uint64_t now, bool point) {
    if (!mon_try_lock()) return false;
    int saved = errno;
    if (point) mon_point(now);
    else mon_evaluate(now);
    errno = saved;
    mon_unlock();
    return true;
}

_Atomic uint32_t pa_mon_next;

static bool point_due(void) { return pa_mon_due(pa_clock_ms()); }

void pa_stat_growth(pa_heap *h) {
    if (!atomic_load_explicit(&mon.started, memory_order_acquire)) return;
    bool point = point_due();
    if (!point && h->peak_left > (int64_t)PA_PAGE_SIZE) {
        h->peak_left -= (int64_t)PA_PAGE_SIZE;
        return;
    }
    if (mon_try(mon_now(), point)) h->peak_left = (int64_t)atomic_load_explicit(&mon.step, memory_order_relaxed);
}

void pa_stat_large(size_t n) {
    if (!atomic_load_explicit(&mon.started, memory_order_acquire)) return;
    pa_heap *h = pa_tls_heap;
    bool point = point_due(), counted = h->live; /* the shared empty and dead heaps count nothing */
    if (!point && counted && h->peak_left > 0 && (uint64_t)h->peak_left > n) { /* n may be near 2^64 */
        h->peak_left -= (int64_t)n;
        return;
    }
    if (mon_try(mon_now(), point) && counted) h->peak_left = (int64_t)atomic_load_explicit(&mon.step, memory_order_relaxed);
}

void pa_stat_large_free(void) {
    if (point_due()) pa_mon_point();
}

void pa_mon_point(void) {
    if (atomic_load_explicit(&mon.started, memory_order_acquire)) mon_try(mon_now(), true);
}

uint32_t pa_mon_poll(void) {
    if (point_due()) pa_mon_point();
    return atomic_load_explicit(&pa_mon_next, memory_order_relaxed);
}

void pa_mon_final(void) {
    if (!atomic_load_explicit(&mon.started, memory_order_acquire) || !mon_lock_wait()) return;
    int saved = errno;
    mon_point(mon_now());
    errno = saved;
    mon_unlock();
}

void pa_mon_read(pa_mon_now *out) {
    bool started = atomic_load_explicit(&mon.started, memory_order_acquire);
    out->peak_live = atomic_load_explicit(&mon.peak_live, memory_order_relaxed);
    out->peak_t_ms = atomic_load_explicit(&mon.peak_t, memory_order_relaxed);
    out->peak_rss = atomic_load_explicit(&mon.peak_rss, memory_order_relaxed);
    out->t_ms = started ? mon_now() : 0;
    out->start_ms = started ? mon.start_ms : 0;
    out->rss = pa_os_rss();
}

uint64_t pa_mon_start_ms(void) {
    return atomic_load_explicit(&mon.started, memory_order_acquire) ? mon.start_ms : 0;
}

const uint64_t *pa_mon_hold(size_t *n, uint64_t *interval_ms) {
    *n = 0;
    *interval_ms = 0;
    if (!atomic_load_explicit(&mon.started, memory_order_acquire) || !mon.p || !mon_lock_wait()) return NULL;
    *n = mon.n;
    *interval_ms = mon.interval;
    return &mon.p->timeline[0][0];
}

void pa_mon_release(void) {
    if (atomic_load_explicit(&mon.started, memory_order_acquire) && mon.p) mon_unlock();
}

/* ---- making the publication ---- */

/* The memfd mapped shared (its descriptor in *fd), or with publishing off or refused a private
 * mapping (*fd -1); NULL if not even that. */
static pub *pub_map(int *fd) {
    *fd = -1;
    if (pa_opt.publish) {
        int m = memfd_create("pyalloc", MFD_CLOEXEC);
        if (m >= 0) {
            void *p = MAP_FAILED;
            if (ftruncate(m, (off_t)PUB_BYTES) == 0)
                p = mmap(NULL, PUB_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
            if (p != MAP_FAILED) {
                *fd = m;
                return p;
            }
            close(m);
        }
    }
    return pa_os_map(PUB_BYTES);
}

/* Where the publication's descriptor goes: over want if that still is this process's memfd (a
 * forked child's inherited one), else the lowest free from PA_PUBLISH_FD_BASE; fd itself if
 * neither can be had. */
static int pub_place(int fd, int want) {
    struct stat st;
    if (want >= 0 && fstat(want, &st) == 0 && st.st_dev == mon.dev && st.st_ino == mon.ino &&
        dup3(fd, want, O_CLOEXEC) == want) {
        close(fd);
        return want;
    }
    int high = fcntl(fd, F_DUPFD_CLOEXEC, PA_PUBLISH_FD_BASE);
    if (high < 0) return fd; /* RLIMIT_NOFILE at or below the base */
    close(fd);
    return high;
}

static void pub_header(pub *p) {
    p->layout = PUB_LAYOUT;
    p->header_bytes = (uint32_t)offsetof(pub, snap);
    memset(p->version, 0, sizeof p->version);
    memcpy(p->version, PA_VERSION_STRING, strlen(PA_VERSION_STRING));
    p->pid = (uint64_t)mon.pid;
    p->start_ms = clock_ms(CLOCK_MONOTONIC);
    p->start_unix_ms = clock_ms(CLOCK_REALTIME);
    p->page_size = (uint32_t)PA_PAGE_SIZE;
    p->alignment = (uint32_t)pa_opt.align;
    p->counters = PA_STATS;
    uint32_t k = 0;
    for (uint32_t c = 0; c < PA_NCLASS; c++) k += pa_class_served(c, pa_opt.align);
    p->nclasses = k;
    p->snap_off = (uint32_t)offsetof(pub, snap);
    p->snap_fields = S_FIELDS;
    p->class_off = (uint32_t)offsetof(pub, classes);
    p->class_fields = CLASS_FIELDS;
    p->timeline_off = (uint32_t)offsetof(pub, timeline);
    p->point_fields = PA_MON_POINT_FIELDS;
    p->timeline_cap = PA_TIMELINE_POINTS;
    p->total_bytes = (uint32_t)PUB_BYTES;
    atomic_store_explicit(&p->seq, 0, memory_order_relaxed);
    memset(p->snap, 0, sizeof p->snap);
    __atomic_store_n(&p->magic, PUB_MAGIC, __ATOMIC_RELEASE); /* last: a reader checks it first */
}

/* This process's figures start now: the clock, the peak, the timeline; and a publication of its
 * own when the one it has is another process's (a forked child's). */
static void mon_restart(void) {
    pid_t pid = getpid();
    if (mon.pid && pid != mon.pid && mon.fd >= 0) { /* the parent's memfd: never written by us */
        pub *old = mon.p;
        int oldfd = mon.fd, fd;
        mon.p = pub_map(&fd);
        if (fd >= 0) {
            fd = pub_place(fd, oldfd);
        } else {
            struct stat st; /* no memfd of its own: do not leave the parent's where top would look */
            if (fstat(oldfd, &st) == 0 && st.st_dev == mon.dev && st.st_ino == mon.ino) close(oldfd);
        }
        mon.fd = fd;
        if (old) pa_os_unmap(old, PUB_BYTES);
    }
    mon.pid = pid;
    if (mon.fd >= 0) {
        struct stat st;
        if (fstat(mon.fd, &st) == 0) {
            mon.dev = st.st_dev;
            mon.ino = st.st_ino;
        }
    }
    mon.start_ms = clock_ms(CLOCK_MONOTONIC_COARSE);
    mon.interval = pa_opt.timeline_ms;
    mon.n = 0;
    atomic_store_explicit(&mon.peak_live, 0, memory_order_relaxed);
    atomic_store_explicit(&mon.peak_t, 0, memory_order_relaxed);
    atomic_store_explicit(&mon.peak_rss, 0, memory_order_relaxed);
    mon.peak_t_live = 0;
    atomic_store_explicit(&mon.step, PA_PEAK_STEP, memory_order_relaxed);
    mon.last_point = 0;
    atomic_store_explicit(&pa_mon_next, pa_clock_ms(), memory_order_relaxed);
    if (mon.p) pub_header(mon.p);
}

/* A forked child: only this thread runs, and no evaluation is in progress in it. */
static void mon_forked(void) {
    int saved = errno;
    atomic_store_explicit(&mon.busy, 0, memory_order_relaxed);
    mon_restart();
    mon_try(0, true);
    errno = saved;
}

__attribute__((constructor)) static void mon_start(void) {
    if (!pa_ready()) return;
    int saved = errno;
    int fd;
    mon.p = pub_map(&fd);
    mon.fd = fd >= 0 ? pub_place(fd, -1) : -1;
    mon_restart();
    atomic_store_explicit(&mon.started, 1, memory_order_release);
    pthread_atfork(NULL, NULL, mon_forked);
    mon_try(0, true); /* the first point, and a snapshot for top at once */
    errno = saved;
}
