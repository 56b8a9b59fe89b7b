/* SPDX-License-Identifier: MIT
 * The background thread, "pyalloc-bg": memory goes back to the OS while the program is idle, for
 * pyalloc's pages and for glibc's heap. It sleeps on a futex until the pool's next dirty page
 * expires or work appears, gives expired pages back one purge batch per hold of the pool lock, and
 * calls glibc's own malloc_trim once the program has freed nothing into glibc's heap for the purge
 * delay. Exports pa_bg_init, pa_bg_start, pa_bg_pool_work, pa_bg_request (for the mesh pass), the
 * fork hooks, pa_bg_counters, pa_sys_tab (the table through which glibc's free and realloc are
 * reached, which the thread points at its hooks while it waits for glibc to go quiet), and
 * dl_iterate_phdr, in front of libc's, to know when a thread runs inside it.
 *
 * When it starts. Only once work exists (a page went to the pool, glibc was given a block back,
 * or a pass was requested): a program that never frees never gets the thread. PYALLOC_BACKGROUND
 * =auto (the default) waits until the process has a second thread of its own, counted from
 * /proc/self/stat (unshare(CLONE_NEWUSER) refuses a multi-threaded caller, and programs count their
 * threads); =1 starts it in single-threaded programs too; =0 never. Without the thread, memory goes
 * back at the program's next allocator call after the delay, as it always did.
 *
 * Where it starts. pthread_create takes glibc's stack-cache lock and calls malloc, so it runs with
 * no lock of pyalloc held, after the constructor (ld.so allocates before libc can start threads),
 * and never inside a free that glibc itself made: glibc frees a dead thread's TLS blocks while it
 * holds that very lock (nptl's __nptl_free_stacks), and frees in dlclose with the loader's locks.
 * Hence a free's slow path reads the address free() returns to (PA_CALLER), and the thread is started
 * from a free only when that is neither in libc nor in ld.so (_dl_find_object, lock-free); glibc
 * never calls malloc with the stack-cache lock held, so the malloc slow path, a new thread's first
 * allocation and a thread's exit hook are safe places too, except inside a dl_iterate_phdr callback
 * (the loader's innermost lock is held there). If pthread_create fails (EAGAIN,
 * seccomp) the program goes on as without the thread, and it is not tried again.
 *
 * glibc's heap. Its frees are invisible to pyalloc, and mallinfo2 and malloc_trim walk every free
 * chunk under the arena lock (a 4 GiB heap with 62,000 free chunks: 40 ms and 900 ms), so neither
 * is called in a loop. Instead free and realloc of glibc blocks jump through pa_sys_tab, whose page
 * is read-only; while the thread waits, it points the table at hooks, and the first free through
 * them wakes it (one indirect jump either way: nothing is added to the fast paths). Woken, it
 * points the table back at glibc and sets the hooks again a tenth of the delay later; once a whole
 * delay passes with no free, it calls mallinfo2 once and trims if enough new free memory is there.
 *
 * The thread blocks every signal, never calls malloc, never has a heap, and is detached; exit kills
 * it wherever it is, and nothing it touches is torn down before that. */
#include "internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <gnu/lib-names.h>
#include <limits.h>
#include <link.h>
#include <linux/futex.h>
#include <malloc.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/single_threaded.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "pyalloc.h"

#define NEVER UINT32_MAX /* no deadline */

enum { ST_OFF, ST_NONE, ST_STARTING, ST_RUNNING, ST_FAILED };

static _Atomic int bg_state = ST_OFF; /* ST_OFF until pa_bg_init, from the constructor */
_Atomic int pa_bg_want;
static _Atomic uint32_t bg_seq;       /* the futex the thread sleeps on; bumped by every wake */
static _Atomic uint32_t bg_work;      /* PA_BG_* passes asked for */
static _Atomic int bg_exiting;
static _Atomic uint32_t bg_next_count; /* pool clock after which threads may be counted again */
static _Atomic uint64_t bg_wakeups, bg_pages, sys_trims, sys_trim_bytes;
bool (*pa_bg_compact)(uint32_t now, uint32_t *next);

static bool due(uint32_t now, uint32_t at) { return at != NEVER && (int32_t)(now - at) >= 0; }
static uint32_t earliest(uint32_t a, uint32_t b) {
    if (a == NEVER) return b;
    if (b == NEVER) return a;
    return (int32_t)(a - b) <= 0 ? a : b;
}
static uint32_t after(uint32_t now, uint32_t ms) {
    uint32_t t = now + ms;
    return t == NEVER ? t - 1 : t;
}

static void bg_wake(void) {
    int saved = errno;
    atomic_fetch_add_explicit(&bg_seq, 1, memory_order_seq_cst);
    syscall(SYS_futex, &bg_seq, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    errno = saved;
}

/* ---- glibc's free and realloc, and the hooks that notice them ---- */

#if PA_PASSTHROUGH_LIBC
#define SYS_WATCH 1
#else
#define SYS_WATCH 0 /* sanitizer builds: the sanitizer's allocator is not glibc's */
#endif

static void sys_free_hook(void *p, const void *caller);
static void *sys_realloc_hook(void *p, size_t n, const void *caller);
static void sys_free_plain(void *p, const void *caller) { (void)caller, PA_SYS_FREE(p); }
static void *sys_realloc_plain(void *p, size_t n, const void *caller) { return (void)caller, PA_SYS_REALLOC(p, n); }

pa_sys_table pa_sys_tab __attribute__((aligned(PA_OS_PAGE))) = {.free = sys_free_plain, .realloc = sys_realloc_plain};
_Static_assert(sizeof(pa_sys_table) == PA_OS_PAGE, "the table has its page to itself");

static pthread_mutex_t sys_lock = PTHREAD_MUTEX_INITIALIZER; /* table writes (fork takes it) */
static bool sys_hooked;                                     /* under sys_lock */
static _Atomic int sys_kicked; /* a free went through the hooks since they were set */
static int (*sys_trim_fn)(size_t);
static struct mallinfo2 (*sys_info_fn)(void);

/* Point the table at the hooks or back at glibc. The page is writable only meanwhile: a function
 * pointer called on every free is what glibc removed __free_hook for. */
static bool sys_ro; /* the table's page is read-only (under sys_lock) */

static void sys_hooks_set_locked(bool on) {
    if (sys_hooked == on) return;
    if (sys_ro && !pa_os_protect(&pa_sys_tab, sizeof pa_sys_tab, true)) return; /* mprotect refused */
    pa_sys_tab.free = on ? sys_free_hook : sys_free_plain;
    pa_sys_tab.realloc = on ? sys_realloc_hook : sys_realloc_plain;
    sys_hooked = on;
    sys_ro = pa_os_protect(&pa_sys_tab, sizeof pa_sys_tab, false);
}

static void sys_hooks_set(bool on) {
    pthread_mutex_lock(&sys_lock);
    sys_hooks_set_locked(on);
    pthread_mutex_unlock(&sys_lock);
}

/* No helper runs or is starting (checked under sys_lock, under which a starting helper sets the
 * hooks): take them off, so that glibc's frees stop paying for them. */
static void sys_hooks_off_unwatched(void) {
    pthread_mutex_lock(&sys_lock);
    int st = atomic_load(&bg_state);
    if (st != ST_RUNNING && st != ST_STARTING) sys_hooks_set_locked(false);
    pthread_mutex_unlock(&sys_lock);
}

static PA_COLD void sys_kick(const void *caller) {
    int saved = errno;
    if (atomic_load(&bg_state) == ST_RUNNING) {
        bg_wake();
    } else {
        atomic_store(&pa_bg_want, 1);
        pa_bg_start(caller);
        sys_hooks_off_unwatched();
    }
    errno = saved;
}

static void sys_free_hook(void *p, const void *caller) {
    if (!atomic_load_explicit(&sys_kicked, memory_order_relaxed) && !atomic_exchange(&sys_kicked, 1))
        sys_kick(caller);
    PA_SYS_FREE(p);
}

static void *sys_realloc_hook(void *p, size_t n, const void *caller) {
    if (!atomic_load_explicit(&sys_kicked, memory_order_relaxed) && !atomic_exchange(&sys_kicked, 1))
        sys_kick(caller);
    return PA_SYS_REALLOC(p, n);
}

/* glibc's own malloc_trim (ours hides it by name) and mallinfo2, looked up in libc itself from the
 * constructor: dlopen takes the loader's locks, and dlsym may allocate, which the helper must not. */
static void sys_resolve(void) {
#if SYS_WATCH
    if (sys_trim_fn) return;
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (!libc) return;
    sys_info_fn = (struct mallinfo2 (*)(void))dlsym(libc, "mallinfo2");
    if (sys_info_fn) sys_trim_fn = (int (*)(size_t))dlsym(libc, "malloc_trim");
    dlclose(libc);
#endif
}

/* The helper's view of glibc's heap (its own: no other thread reads it). */
static struct {
    uint32_t rearm_at; /* when to point the table at the hooks again */
    uint32_t check_at; /* a delay after that, if no free came: look */
    bool have_base;
    uint64_t ford_base;  /* glibc's free bytes right after our last trim: not resident */
    uint64_t bytes_base; /* bytes pyalloc had asked glibc for by then (stats), which may since
                            have reused (and faulted in) trimmed free memory */
} sys;

static uint64_t sat_sub(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

/* The program has freed nothing into glibc's heap for a delay: trim it if that gives back enough.
 * New free memory is what mallinfo2 reports beyond what our last trim left (less what has been
 * allocated since, which may have reused it). A trim walks every free chunk, so it is made only
 * when it returns at least a page per chunk, and at least PYALLOC_GLIBC_TRIM_KB. */
static void sys_check(void) {
    struct mallinfo2 mi = sys_info_fn();
    uint64_t asked = pa_stats_sys_bytes(); /* UINT64_MAX when not counted */
    uint64_t known = 0;
    if (sys.have_base && asked != UINT64_MAX) known = sat_sub(sys.ford_base, asked - sys.bytes_base);
    uint64_t fresh = sat_sub(mi.fordblks, known);
    uint64_t need = (uint64_t)mi.ordblks * PA_OS_PAGE;
    if (need < pa_opt.glibc_trim) need = pa_opt.glibc_trim;
    if (fresh < need) return;
    uint64_t before = pa_os_rss();
    sys_trim_fn(0);
    uint64_t after_trim = pa_os_rss();
    atomic_fetch_add_explicit(&sys_trims, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&sys_trim_bytes, sat_sub(before, after_trim), memory_order_relaxed);
    sys.have_base = true;
    sys.ford_base = mi.fordblks;
    sys.bytes_base = asked;
}

static bool sys_watching(void) { return SYS_WATCH && pa_opt.glibc_trim && sys_trim_fn; }

/* Hooks set: a free wakes us (kicked). Kicked: hooks off for a tenth of the delay (a kick costs a
 * futex wake, so at most ten a delay), then on again; a delay with no kick: look. Returns when to
 * come back. */
static uint32_t sys_step(uint32_t now) {
    if (!sys_watching()) return NEVER;
    if (atomic_load(&sys_kicked)) {
        sys_hooks_set(false);
        atomic_store(&sys_kicked, 0);
        uint32_t part = pa_opt.purge_delay / PA_BG_REARM_PART;
        sys.rearm_at = after(now, part < 10 ? 10 : part);
        sys.check_at = NEVER;
    }
    if (due(now, sys.rearm_at)) {
        sys.rearm_at = NEVER;
        sys_hooks_set(true);
        sys.check_at = after(now, pa_opt.purge_delay);
    }
    if (due(now, sys.check_at)) {
        sys.check_at = NEVER;
        if (!atomic_load(&bg_exiting)) sys_check();
    }
    return earliest(sys.rearm_at, sys.check_at);
}

/* ---- the thread ---- */

static uint32_t compact_at = NEVER; /* helper's own */

static uint32_t compact_step(uint32_t now) {
    if (atomic_exchange(&bg_work, 0) & PA_BG_COMPACT) compact_at = now;
    if (!due(now, compact_at)) return compact_at;
    compact_at = NEVER;
    uint32_t next;
    if (pa_bg_compact && pa_bg_compact(now, &next)) compact_at = next;
    return compact_at;
}

/* Expired pages back to the OS, one batch per hold of the pool lock, so that a program thread
 * waits for at most one batch. Returns when the next dirty page expires. */
static uint32_t pool_step(uint32_t now) {
    for (;;) {
        uint32_t next;
        size_t n = pa_pool_expire_step(now, &next);
        atomic_fetch_add_explicit(&bg_pages, n, memory_order_relaxed);
        if (n == 0 || !due(now, next)) return next;
    }
}

static void bg_sleep(uint32_t seq, uint32_t now, uint32_t next) {
    struct timespec ts, *timeout = NULL;
    if (next != NEVER) {
        /* The pool clock is the coarse one (a tick of up to 4 ms): sleep a tick past the deadline. */
        uint32_t ms = (int32_t)(next - now) > 0 ? next - now : 0;
        ms += 5;
        ts.tv_sec = ms / 1000;
        ts.tv_nsec = (long)(ms % 1000) * 1000000L;
        timeout = &ts;
    }
    syscall(SYS_futex, &bg_seq, FUTEX_WAIT_PRIVATE, seq, timeout, NULL, 0);
}

static void *bg_main(void *arg) {
    (void)arg;
    prctl(PR_SET_NAME, "pyalloc-bg", 0, 0, 0);
    if (sys_watching()) {
        sys_hooks_set(true);
        sys.rearm_at = NEVER;
        sys.check_at = after(pa_clock_ms(), pa_opt.purge_delay); /* frees from before we started */
    }
    for (;;) {
        uint32_t seq = atomic_load(&bg_seq);
        uint32_t now = pa_clock_ms();
        atomic_fetch_add_explicit(&bg_wakeups, 1, memory_order_relaxed);
        uint32_t next = pool_step(now);
        next = earliest(next, sys_step(now));
        next = earliest(next, compact_step(now));
        next = earliest(next, pa_mon_poll()); /* the timeline's points while the program idles */
        bg_sleep(seq, now, next);
    }
    return NULL;
}

/* ---- starting it ---- */

/* Is caller (a return address) the program's, rather than libc's or ld.so's (or pyalloc's own, for
 * a shared libpyalloc: then the free did not come straight from the program)? The return address
 * is that of the innermost frame still live: glibc code that holds a lock while it frees is still on
 * the stack and is what free returns to; glibc functions that tail-called free hold nothing. */
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 35)
#pragma weak _dl_find_object
static void *libc_map, *ldso_map, *own_map; /* set by pa_bg_init, from the constructor */

static void *bg_map_of(const void *p) {
    struct dl_find_object o;
    return _dl_find_object((void *)p, &o) == 0 ? o.dlfo_link_map : NULL;
}

static void *bg_map_named(const char *name) {
    void *h = dlopen(name, RTLD_LAZY | RTLD_NOLOAD), *map = NULL;
    if (h) {
        if (dlinfo(h, RTLD_DI_LINKMAP, &map) != 0) map = NULL;
        dlclose(h);
    }
    return map;
}

static void bg_find_maps(void) {
    if (!_dl_find_object) return;
    ldso_map = bg_map_named(LD_SO);
    own_map = bg_map_of((const void *)pa_bg_caller_is_program);
    if (own_map && ((struct link_map *)own_map)->l_name[0] == 0)
        own_map = NULL; /* linked into the program itself: its frees and ours look alike */
    libc_map = bg_map_named(LIBC_SO);
}

bool pa_bg_caller_is_program(const void *caller) {
    if (!caller || !libc_map || !ldso_map) return false;
    void *m = bg_map_of(caller); /* NULL: code no object maps (a JIT's): the program's */
    return m != libc_map && m != ldso_map && (!own_map || m != own_map);
}
#else
static void bg_find_maps(void) {}
bool pa_bg_caller_is_program(const void *caller) {
    (void)caller;
    return false; /* no lock-free way to tell: start only from the safe places */
}
#endif

/* dl_iterate_phdr runs its callback holding the loader's innermost lock (dl_load_write_lock), and
 * pthread_create takes dl_load_tls_lock, which a dlopen in another thread holds while it waits for
 * the first: a thread started from a malloc or free made by the callback deadlocks (the deepbind
 * test's threads did, in 2 of 40 runs). The callback runs with its thread marked, and no thread is
 * started from it. pyalloc's own dl_iterate_phdr, in front of libc's (as dlopen is, deepbind.c). */
#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__) /* (theirs is in the program) */
typedef int (*iterate_cb)(struct dl_phdr_info *, size_t, void *);
typedef int (*iterate_fn)(iterate_cb, void *);
static _Atomic(iterate_fn) bg_real_iterate;
static __thread unsigned bg_in_iterate __attribute__((tls_model("initial-exec")));

static iterate_fn bg_iterate_next(void) {
    iterate_fn f = atomic_load_explicit(&bg_real_iterate, memory_order_acquire);
    if (!f) { /* before the constructor: an early library's own constructor */
        f = (iterate_fn)dlsym(RTLD_NEXT, "dl_iterate_phdr");
        atomic_store_explicit(&bg_real_iterate, f, memory_order_release);
    }
    return f;
}

PA_API int dl_iterate_phdr(iterate_cb callback, void *data) {
    iterate_fn f = bg_iterate_next();
    if (!f) return 0; /* no libc behind us: nothing is loaded that it could report */
    bg_in_iterate++;
    int r = f(callback, data);
    bg_in_iterate--;
    return r;
}
#else
static unsigned bg_in_iterate;
static void bg_iterate_next(void) {}
#endif

static bool bg_multithreaded(void) {
    if (__libc_single_threaded) return false; /* no thread was ever created */
    uint32_t now = pa_clock_ms(), next = atomic_load_explicit(&bg_next_count, memory_order_relaxed);
    if (next && !due(now, next)) return false;
    atomic_store_explicit(&bg_next_count, after(now, PA_BG_COUNT_MS) | 1, memory_order_relaxed);
    return pa_os_threads() >= 2;
}

static bool bg_spawn(void) {
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) return false;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, PA_BG_STACK);
    /* Created with every signal blocked, so that none ever runs on it. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int rc = pthread_create(&t, &attr, bg_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return rc == 0;
}

void pa_bg_start(const void *caller) {
    int st = atomic_load(&bg_state);
    if (st != ST_NONE) {
        if (st != ST_STARTING) atomic_store(&pa_bg_want, 0); /* running, off or failed: nothing to do */
        return;
    }
    if (bg_in_iterate) return;                                            /* later, from a safe place */
    if (caller != PA_BG_SAFE && !pa_bg_caller_is_program(caller)) return; /* ... likewise */
    if (pa_opt.background == PA_BG_AUTO && !bg_multithreaded()) return;
    if (!atomic_compare_exchange_strong(&bg_state, &st, ST_STARTING)) return;
    atomic_store(&pa_bg_want, 0);
    int saved = errno;
    bool ok = bg_spawn();
    atomic_store(&bg_state, ok ? ST_RUNNING : ST_FAILED);
    if (!ok && SYS_WATCH) sys_hooks_off_unwatched();
    errno = saved;
}

void pa_bg_init(void) {
    (void)bg_iterate_next();
    if (pa_opt.background == PA_BG_OFF) return;
    int off = ST_OFF;
    bg_find_maps(); /* the loader's calls here and below: in the constructor, where no lock is held */
    sys_resolve();
    if (!atomic_compare_exchange_strong(&bg_state, &off, ST_NONE)) return;
    if (pa_pool_dirty_pages()) atomic_store(&pa_bg_want, 1); /* frees from before the constructor */
    if (SYS_WATCH && pa_opt.glibc_trim) sys_hooks_set(true); /* the first glibc free is work too */
}

void pa_bg_pool_work(void) {
    int st = atomic_load(&bg_state);
    if (st == ST_RUNNING) bg_wake();
    else if (st == ST_NONE || st == ST_STARTING) atomic_store(&pa_bg_want, 1);
}

void pa_bg_request(unsigned work) {
    atomic_fetch_or(&bg_work, work);
    pa_bg_pool_work();
}

void pa_bg_exiting(void) { atomic_store(&bg_exiting, 1); }

bool pa_bg_running(void) { return atomic_load(&bg_state) == ST_RUNNING; }

/* ---- fork ---- */

void pa_bg_fork_prepare(void) { pthread_mutex_lock(&sys_lock); }
void pa_bg_fork_parent(void) { pthread_mutex_unlock(&sys_lock); }
void pa_bg_fork_child(void) {
    pthread_mutex_unlock(&sys_lock);
    int st = atomic_load(&bg_state);
    if (st == ST_RUNNING || st == ST_STARTING) {
        atomic_store(&bg_state, ST_NONE);
        atomic_store(&pa_bg_want, 1); /* the child may have the parent's pending work */
    }
    atomic_store(&sys_kicked, 0);
    atomic_store(&bg_next_count, 0);
}

/* ---- statistics ---- */

void pa_bg_counters(struct pa_stats *out) {
    static const unsigned state[] = {[ST_OFF] = PA_BG_STATE_OFF, [ST_NONE] = PA_BG_STATE_WAITING,
                                     [ST_STARTING] = PA_BG_STATE_WAITING, [ST_RUNNING] = PA_BG_STATE_RUNNING,
                                     [ST_FAILED] = PA_BG_STATE_FAILED};
    out->bg_state = state[atomic_load(&bg_state)];
    out->bg_wakeups = atomic_load_explicit(&bg_wakeups, memory_order_relaxed);
    out->bg_pages_given_back = atomic_load_explicit(&bg_pages, memory_order_relaxed);
    out->bg_bytes_given_back = out->bg_pages_given_back * PA_PAGE_SIZE;
    out->glibc_trims = atomic_load_explicit(&sys_trims, memory_order_relaxed);
    out->glibc_trim_bytes = atomic_load_explicit(&sys_trim_bytes, memory_order_relaxed);
}
