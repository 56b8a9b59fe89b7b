/* SPDX-License-Identifier: MIT
 * Compaction without moving blocks (PYALLOC_MESH=1). A pass freezes the sparse pages of the one
 * application thread (no more mallocs from them), then packs their 4 KiB regions onto the frames
 * (4 KiB pages) of a memfd: regions whose live bytes do not overlap share one frame, each keeping
 * its address, and regions with no live byte are given back. Exports pa_mesh_sparse, pa_mesh_tick,
 * pa_mesh_free, pa_mesh_is_live, pa_mesh_trim, the fork hooks and pa_mesh_counters_get.
 *
 * Why it is safe, and where it is not (design.md, "Compaction"):
 *  - Copying a region's live blocks into a frame and then mapping the frame over the region would
 *    lose a write made to the region in between. So a pass runs only inside an allocator call of
 *    the only thread of the process, with every signal blocked: nothing else can write then. A
 *    kernel write without a thread (Linux AIO or io_uring into a pinned buffer) cannot be ruled
 *    out, which is why meshing is an opt-in.
 *  - Once mapped, a shared frame is ordinary memory for every thread and every system call.
 *  - fork: a frame is MAP_SHARED, which a child would share. The prepare handler maps each run
 *    privately over itself (the same file offsets: atomic, nothing lost, no fault), so parent and
 *    child see copy-on-write snapshots; that memfd is never written or punched again.
 * Lanes: a pass walks the regions in address order; a region continues its run on the next frame
 * when it fits there (no new mapping), else a run starts on the frames found by probing that take
 * the longest stretch of the following regions, or on fresh frames. Each run is one VMA, and VMAs
 * are limited (vm.max_map_count), so a pass plans at most half of the headroom the program leaves.
 * Every pass repacks all frozen pages into the other half of the memfd and punches the half it
 * left: regions keep their live bytes, frames shrink as blocks die.
 * The system calls here are mesh's own (memfd, fallocate, mmap of the memfd, /proc reads, the
 * signal mask); errno is preserved around every call into this file. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MESH_REGION 4096                         /* the unit shared between pages: an OS page */
#define MESH_RPP ((uint32_t)(PA_PAGE_SIZE / MESH_REGION)) /* regions per page */
#define MESH_LIVE_WORDS (PA_PAGE_SIZE / 8 / 64)  /* a page's live blocks: one bit per block */
#define MESH_SPARSE_DIV 4      /* a page is sparse with at most a quarter of its blocks out */
#define MESH_MIN_SPARSE 16     /* pages that turned sparse since the last pass, for another pass */
#define MESH_BURY_MIN 64       /* dead frozen pages that make a slow path bury them */
#define MESH_INTERVAL_MS 10    /* passes at least this far apart, and ten times their own time */
#define MESH_PROBES 256        /* frames tried for a new run */
#define MESH_LOOKAHEAD 32      /* regions a run is judged by */
#define MESH_JUMP 4            /* leave fresh frames for a ride of at least this many regions */
#define MESH_VMA_MARGIN 1024   /* VMAs always left to the program beyond half the headroom */
#define MESH_MAX_REGIONS ((size_t)1 << 21) /* regions one pass considers (8 GiB of pages) */

_Static_assert(PA_PAGE_SIZE % MESH_REGION == 0 && MESH_RPP <= 8, "a page's regions fit a byte mask");
_Static_assert(PA_MESH_RWORDS * 64 * 8 == MESH_REGION, "a region bitmap has a bit per 8 bytes");

typedef struct mesh_rec {     /* per frozen page, 48 bytes */
    uint32_t map[MESH_RPP];   /* frame + 1 (file offset / 4 KiB) each region maps; 0: anonymous */
    uint8_t content;          /* regions with live bytes when mapped: each holds a ref on its frame */
    uint8_t stale;            /* mapped privately from a memfd of before a fork: no refs, no punch */
    uint16_t nlive;           /* live blocks */
    uint32_t live;            /* its live-block bitmap: words at mesh.bits + live - 1 (block j = bit j) */
    uint32_t next;            /* dead list, or the frozen pages of its class (page links) */
    uint32_t prev;            /* the frozen pages of its class */
    uint32_t seen;            /* not frozen yet: the pass that last found it sparse (nlive: its used) */
} mesh_rec;

pthread_mutex_t pa_mesh_lock = PTHREAD_MUTEX_INITIALIZER;

static struct {
    int fd;                    /* the memfd of this generation, -1 until a pass needs one */
    char *shadow;              /* all of it, shared: passes write frames through here */
    size_t half;               /* frames in each half of the memfd */
    int cur;                   /* the half the last pass filled */
    size_t top[2];             /* frames used in each half */
    uint16_t *refs;            /* per frame: regions with content mapped to it */
    uint64_t *focc;            /* per frame: its live words (PA_MESH_RWORDS each) */
    uint64_t focc_words;       /* live words on frames of the current half */
    mesh_rec *recs;            /* per page (indexed like the descriptors), for frozen pages */
    uint64_t *bits;            /* live-block bitmaps, as many words as the page's class needs */
    size_t bits_top;           /* words handed out */
    uint32_t bits_free[MESH_LIVE_WORDS + 1]; /* freed bitmaps by words (offset + 1, linked through
                                                their first word) */
    size_t npages;
    uint32_t dead;             /* frozen pages whose last block was freed (page links) */
    uint64_t ndead;
    uint64_t stale_pages;      /* frozen pages still on a memfd of before a fork */
    uint32_t epoch;            /* passes begun */
    uint32_t frozen[PA_NCLASS]; /* frozen live pages by class (page links), for thawing */
    int64_t budget;            /* the last pass's VMA budget: thaws split runs within it */
    long max_maps;             /* vm.max_map_count */
    int64_t pieces;            /* VMAs our mappings add, as the last pass planned them */
    bool failed;
    uint64_t rng;
    pa_mesh_counters c;
} mesh = {.fd = -1};

static _Atomic uint32_t mesh_sparse_pages; /* pages that turned sparse since the last pass */
static _Atomic uint64_t mesh_frozen_frees; /* blocks freed from frozen pages since the last pass */
static _Atomic uint64_t mesh_frozen_live;  /* live blocks in frozen pages after the last pass */
static _Atomic uint64_t mesh_dead_hint;    /* dead frozen pages waiting for mesh_bury */
static _Atomic uint32_t mesh_next_ms;      /* pool clock before which no pass starts */
static _Atomic uint32_t mesh_frozen_n[PA_NCLASS]; /* frozen live pages by class: a hint read unlocked */

/* ---- small helpers ---- */

/* The program's threads: the process's, less pyalloc's background thread (background.c), which
 * touches no block: it purges pool pages, trims glibc's heap and reads counters, under the locks a
 * pass takes too. */
static long mesh_threads(void) {
    long n = pa_os_threads();
    return n > 0 && pa_bg_running() ? n - 1 : n;
}

static uint64_t mesh_rand(void) {
    uint64_t x = mesh.rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    mesh.rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static inline mesh_rec *mesh_rec_of(const pa_page *pg) { return &mesh.recs[pa_page_index(pg)]; }
static inline char *mesh_region_addr(uint32_t page, uint32_t r) {
    return (char *)(pa_base + ((uintptr_t)page << PA_PAGE_SHIFT) + (uintptr_t)r * MESH_REGION);
}

static void *mesh_map_anon(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Gives frames [f, f + n) of the memfd back (their memory; the file keeps its size). */
static void mesh_punch(size_t f, size_t n) {
    if (n) (void)fallocate(mesh.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(f * MESH_REGION),
                           (off_t)(n * MESH_REGION));
}

/* The memfd, its shadow mapping and the side tables, made at the first pass. Under the lock. */
static bool mesh_tables(void) {
    if (mesh.failed) return false;
    if (!mesh.recs) {
        mesh.npages = pa_reserved >> PA_PAGE_SHIFT;
        mesh.half = mesh.npages * MESH_RPP;
        mesh.recs = mesh_map_anon(mesh.npages * sizeof(mesh_rec));
        mesh.bits = mesh_map_anon(mesh.npages * MESH_LIVE_WORDS * sizeof(uint64_t));
        mesh.refs = mesh_map_anon(2 * mesh.half * sizeof(uint16_t));
        mesh.focc = mesh_map_anon(2 * mesh.half * PA_MESH_RWORDS * sizeof(uint64_t));
        char buf[64];
        mesh.max_maps = 0;
        if (pa_os_read_proc("/proc/sys/vm/max_map_count", buf, sizeof buf) > 0)
            for (const char *d = buf; *d >= '0' && *d <= '9'; d++) mesh.max_maps = mesh.max_maps * 10 + (*d - '0');
        mesh.rng = (uint64_t)__builtin_ia32_rdtsc() | 1;
        if (!mesh.recs || !mesh.bits || !mesh.refs || !mesh.focc || mesh.max_maps <= 0) {
            mesh.failed = true;
            pa_warn("PYALLOC_MESH: cannot map its tables or read vm.max_map_count; meshing is off");
            return false;
        }
    }
    return true;
}

static bool mesh_ready(void) {
    if (!mesh_tables()) return false;
    if (mesh.fd < 0) {
        int fd = memfd_create("pyalloc-mesh", MFD_CLOEXEC);
        if (fd < 0) goto fail;
        size_t bytes = 2 * mesh.half * MESH_REGION;
        char *sh = MAP_FAILED;
        if (ftruncate(fd, (off_t)bytes) == 0)
            sh = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
        if (sh == MAP_FAILED) {
            close(fd);
            goto fail;
        }
        mesh.fd = fd;
        mesh.shadow = sh;
        mesh.cur = 1; /* the first pass fills half 0 */
        mesh.top[0] = mesh.top[1] = 0;
        mesh.pieces = 1; /* the shadow */
    }
    return true;
fail:
    mesh.failed = true;
    pa_warn("PYALLOC_MESH: cannot set up the shared frames (memfd, mmap or /proc); meshing is off");
    return false;
}

/* ---- frozen pages: their live blocks ---- */

static inline uint32_t live_words(const pa_page *pg) { return (pa_class_blocks(pg->cls) + 63) / 64; }
static inline uint64_t *live_of(const mesh_rec *rec) { return mesh.bits + rec->live - 1; }
static inline bool live_test(const mesh_rec *rec, uint32_t j) { return (live_of(rec)[j >> 6] >> (j & 63)) & 1; }
static inline void live_clear(mesh_rec *rec, uint32_t j) { live_of(rec)[j >> 6] &= ~(1ull << (j & 63)); }

static void live_alloc(const pa_page *pg, mesh_rec *rec) {
    uint32_t words = live_words(pg);
    if (mesh.bits_free[words]) {
        rec->live = mesh.bits_free[words];
        mesh.bits_free[words] = (uint32_t)live_of(rec)[0];
    } else {
        rec->live = (uint32_t)mesh.bits_top + 1;
        mesh.bits_top += words;
    }
}

static void live_release(const pa_page *pg, mesh_rec *rec) {
    uint32_t words = live_words(pg);
    live_of(rec)[0] = mesh.bits_free[words];
    mesh.bits_free[words] = rec->live;
    rec->live = 0;
}

/* The live blocks of pg (its owner's, unbiased, thread_free collected) into rec; returns their count. */
static uint32_t mesh_live_of(pa_page *pg, mesh_rec *rec) {
    uint32_t bsize = pg->bsize, carved = pa_load_relaxed(&pg->bump) / bsize, n = pa_class_blocks(pg->cls);
    if (!rec->live) live_alloc(pg, rec);
    uint64_t *live = live_of(rec);
    memset(live, 0, live_words(pg) * sizeof *live);
    for (uint32_t j = 0; j < carved; j++) live[j >> 6] |= 1ull << (j & 63);
    uint32_t count = carved;
    pa_block *b = pg->free;
    for (uint32_t i = 0; b != pa_list_end(pg) && i <= n; i++) {
        uintptr_t off = (uintptr_t)b - pa_page_start(pg);
        if (off >= PA_PAGE_SIZE || off % bsize) pa_fatal("corrupted free list in page", (void *)pa_page_start(pg));
        uint32_t j = (uint32_t)(off / bsize);
        if (live_test(rec, j)) {
            live_clear(rec, j);
            count--;
        }
        b = pa_block_next(pg, b);
    }
    return count;
}

/* The live 8-byte words of region r of a frozen page. */
static bool mesh_region_bits(const pa_page *pg, const mesh_rec *rec, uint32_t r, uint64_t *bits) {
    memset(bits, 0, PA_MESH_RWORDS * sizeof *bits);
    uint32_t bsize = pg->bsize, lo = r * MESH_REGION, hi = lo + MESH_REGION;
    uint32_t j0 = lo / bsize, j1 = (hi + bsize - 1) / bsize, n = pa_class_blocks(pg->cls);
    if (j1 > n) j1 = n;
    bool any = false;
    for (uint32_t j = j0; j < j1; j++) {
        if (!live_test(rec, j)) continue;
        uint32_t a = j * bsize, e = a + bsize;
        if (a < lo) a = lo;
        if (e > hi) e = hi;
        for (uint32_t w = (a - lo) / 8; w < (e - lo) / 8; w++) bits[w >> 6] |= 1ull << (w & 63);
        any = true;
    }
    return any;
}

static inline bool bits_fit(const uint64_t *occ, const uint64_t *bits) {
    uint64_t x = 0;
    for (int w = 0; w < PA_MESH_RWORDS; w++) x |= occ[w] & bits[w];
    return x == 0;
}

static inline bool bits_empty(const uint64_t *bits) {
    uint64_t x = 0;
    for (int w = 0; w < PA_MESH_RWORDS; w++) x |= bits[w];
    return x == 0;
}

/* Copies the words of bits from src to dst, a stretch of consecutive words at a time. */
static void mesh_copy_words(char *dst, const char *src, const uint64_t *bits) {
    uint32_t w = 0, nw = MESH_REGION / 8;
    while (w < nw) {
        if (!((bits[w >> 6] >> (w & 63)) & 1)) {
            w++;
            continue;
        }
        uint32_t e = w + 1;
        while (e < nw && ((bits[e >> 6] >> (e & 63)) & 1)) e++;
        memcpy(dst + (size_t)w * 8, src + (size_t)w * 8, (size_t)(e - w) * 8);
        w = e;
    }
}

/* ---- freezing and burying ---- */

static void frozen_push(pa_page *pg, mesh_rec *rec) {
    uint32_t cls = pg->cls, link = pa_page_link(pg);
    rec->prev = 0;
    rec->next = mesh.frozen[cls];
    if (rec->next) mesh.recs[rec->next - 1].prev = link;
    mesh.frozen[cls] = link;
    atomic_fetch_add_explicit(&mesh_frozen_n[cls], 1, memory_order_relaxed);
}

static void frozen_unlink(pa_page *pg, mesh_rec *rec) {
    uint32_t cls = pg->cls;
    if (rec->prev) mesh.recs[rec->prev - 1].next = rec->next;
    else mesh.frozen[cls] = rec->next;
    if (rec->next) mesh.recs[rec->next - 1].prev = rec->prev;
    rec->next = rec->prev = 0;
    atomic_fetch_sub_explicit(&mesh_frozen_n[cls], 1, memory_order_relaxed);
}

static void mesh_freeze(pa_heap *h, pa_page *pg, mesh_rec *rec, uint32_t nlive) {
    pa_page_detach(h, pg);
    memset(rec->map, 0, sizeof rec->map);
    rec->content = 0;
    rec->stale = 0;
    rec->nlive = (uint16_t)nlive;
    frozen_push(pg, rec);
    pa_store_relaxed(&pg->thresh, 0); /* no fast path accepts a block of it */
    atomic_store_explicit(&pg->heap, NULL, memory_order_relaxed);
    pg->where = PA_W_MESHED;
    pg->free = pa_list_end(pg);
    pg->used = (uint16_t)nlive;
    pg->used_bias = 0;
    atomic_store_explicit(&pg->meshed, PA_MESH_LIVE, memory_order_release);
    mesh.c.pages++;
}

/* Its last block is gone: its frames lose a ref each (those left with none are punched), and it
 * waits on the dead list for mesh_bury. Under the lock. */
static void mesh_page_dies(pa_page *pg, mesh_rec *rec) {
    frozen_unlink(pg, rec);
    atomic_store_explicit(&pg->meshed, PA_MESH_DEAD, memory_order_relaxed);
    for (uint32_t r = 0; r < MESH_RPP; r++) {
        if (!rec->map[r]) continue;
        if ((rec->content >> r) & 1) {
            mesh.c.regions--;
            if (!rec->stale && mesh.fd >= 0 && --mesh.refs[rec->map[r] - 1] == 0) {
                mesh_punch(rec->map[r] - 1, 1);
                mesh.c.frames--;
            }
        }
    }
    for (uint32_t r = 0; r < MESH_RPP; r++) mesh.c.holes -= !((rec->content >> r) & 1) && mesh.c.holes;
    if (rec->stale && mesh.stale_pages) mesh.stale_pages--;
    rec->next = mesh.dead;
    mesh.dead = pa_page_link(pg);
    mesh.ndead++;
    atomic_store_explicit(&mesh_dead_hint, mesh.ndead, memory_order_relaxed);
    mesh.c.pages--;
}

/* Dead frozen pages: anonymous memory again, back to the pool. Safe from any thread: no live block
 * is left in them. A page whose mapping cannot be replaced (the VMA limit) waits. Under the lock. */
static void mesh_bury(void) {
    uint32_t keep = 0, kept = 0;
    while (mesh.dead) {
        pa_page *pg = pa_page_at(mesh.dead);
        mesh_rec *rec = mesh_rec_of(pg);
        mesh.dead = rec->next;
        bool mapped = false;
        for (uint32_t r = 0; r < MESH_RPP; r++) mapped |= rec->map[r] != 0;
        if (mapped && mmap((void *)pa_page_start(pg), PA_PAGE_SIZE, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
            rec->next = keep;
            keep = pa_page_link(pg);
            kept++;
            continue;
        }
        memset(rec->map, 0, sizeof rec->map);
        rec->content = 0;
        live_release(pg, rec);
        atomic_store_explicit(&pg->meshed, PA_MESH_NONE, memory_order_relaxed);
        pg->where = PA_W_NONE;
        pg->used = 0;
        pa_pool_give(pg);
    }
    mesh.dead = keep;
    mesh.ndead = kept;
    atomic_store_explicit(&mesh_dead_hint, kept, memory_order_relaxed);
}

/* ---- frees into frozen pages ---- */

/* The words [off, off + len) of a frozen page leave the occupancy of the frames they are on. */
static void mesh_frame_clear(const pa_page *pg, const mesh_rec *rec, uint32_t off, uint32_t len) {
    (void)pg;
    if (rec->stale || mesh.fd < 0) return;
    for (uint32_t w = off / 8; w < (off + len) / 8; w++) {
        uint32_t r = w / (MESH_REGION / 8), b = w % (MESH_REGION / 8);
        if (!rec->map[r] || !((rec->content >> r) & 1)) continue;
        uint64_t *occ = mesh.focc + (size_t)(rec->map[r] - 1) * PA_MESH_RWORDS;
        if ((occ[b >> 6] >> (b & 63)) & 1) {
            occ[b >> 6] &= ~(1ull << (b & 63));
            mesh.focc_words--;
        }
    }
}

void pa_mesh_free(pa_page *pg, pa_block *b) {
    int saved = errno;
    pthread_mutex_lock(&pa_mesh_lock);
    if (atomic_load_explicit(&pg->meshed, memory_order_relaxed) != PA_MESH_LIVE) {
        pthread_mutex_unlock(&pa_mesh_lock);
        pa_fatal("free(): double free or invalid pointer (page not in use)", b);
    }
    mesh_rec *rec = mesh_rec_of(pg);
    uintptr_t off = (uintptr_t)b - pa_page_start(pg);
    uint32_t bsize = pg->bsize, j = (uint32_t)(off / bsize);
    if (off % bsize || j >= pa_load_relaxed(&pg->bump) / bsize) {
        pthread_mutex_unlock(&pa_mesh_lock);
        pa_free_invalid("free", b);
    }
    if (!live_test(rec, j)) {
        pthread_mutex_unlock(&pa_mesh_lock);
        pa_fatal("free(): double free detected", b);
    }
    live_clear(rec, j);
    pa_stat_free(pa_tls_heap, pg->cls);
    rec->nlive--;
    pg->used = rec->nlive;
    mesh.c.live--;
    mesh_frame_clear(pg, rec, (uint32_t)off, bsize);
    if (rec->nlive == 0) mesh_page_dies(pg, rec);
    pthread_mutex_unlock(&pa_mesh_lock);
    atomic_fetch_add_explicit(&mesh_frozen_frees, 1, memory_order_relaxed);
    pa_heap *h = pa_tls_heap;
    if (h->live) pa_mesh_tick(h);
    errno = saved;
}

bool pa_mesh_is_live(const pa_page *pg, const void *p) {
    pthread_mutex_lock(&pa_mesh_lock);
    bool ok = false;
    if (atomic_load_explicit(&pg->meshed, memory_order_relaxed) == PA_MESH_LIVE) {
        uintptr_t off = (uintptr_t)p - pa_page_start(pg);
        uint32_t j = (uint32_t)(off / pg->bsize);
        ok = off % pg->bsize == 0 && j < pa_load_relaxed(&pg->bump) / pg->bsize && live_test(mesh_rec_of(pg), j);
    }
    pthread_mutex_unlock(&pa_mesh_lock);
    return ok;
}

/* ---- a pass ---- */

/* Mappings of our memfd now ("pyalloc-mesh" in /proc/self/maps) and of the process in all. */
static void mesh_count_maps(long *all, long *ours) {
    static const char tag[] = "pyalloc-mesh";
    *all = *ours = -1;
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char buf[4096 + sizeof tag];
    size_t keep = 0;
    long lines = 0, hits = 0;
    ssize_t n;
    while ((n = read(fd, buf + keep, 4096)) > 0) {
        size_t len = keep + (size_t)n;
        for (size_t i = keep; i < len; i++) lines += buf[i] == '\n';
        for (size_t i = 0; i + sizeof tag - 1 <= len; i++)
            if (buf[i] == 'p' && memcmp(buf + i, tag, sizeof tag - 1) == 0) hits++;
        keep = len < sizeof tag - 2 ? len : sizeof tag - 2; /* a tag cut at the end of this chunk */
        memmove(buf, buf + len - keep, keep);
    }
    close(fd);
    *all = lines;
    *ours = hits;
}

/* VMAs a pass may add: half of the headroom the program leaves, less a margin. The anonymous
 * pieces our mappings split off count as the program's (so the budget errs low). replacing: the
 * pass replaces all our mappings (a repack), else it adds to them. */
static int64_t mesh_budget(bool replacing) {
    long all, ours;
    mesh_count_maps(&all, &ours);
    if (all <= 0 || ours < 0) return 0;
    int64_t others = (int64_t)all - ours;
    int64_t allowed = ((int64_t)mesh.max_maps - others) / 2 - MESH_VMA_MARGIN;
    if (!replacing) allowed -= ours;
    return allowed > 0 ? allowed : 0;
}

static inline uint64_t *frame_occ(const pa_mesh_plan *P, size_t f) { return P->occ + f * PA_MESH_RWORDS; }
static inline uint16_t frame_cnt(const pa_mesh_plan *P, size_t f) { return P->cnt[f]; }

static inline bool frame_fits(const pa_mesh_plan *P, size_t f, const uint64_t *bits) {
    return f >= P->top || bits_fit(frame_occ(P, f), bits);
}

/* How many of the regions from i on ride frames g, g+1, ...: each non-empty one must land on a
 * frame with content it fits (a gain); empty ones pass. */
static uint32_t plan_ride(const pa_mesh_plan *P, size_t i, size_t g) {
    uint32_t len = 0;
    for (size_t k = 0; k < MESH_LOOKAHEAD && i + k < P->n; k++) {
        const pa_mesh_region *c = &P->cand[i + k];
        if (!bits_empty(c->bits)) {
            size_t f = g + k;
            if (f >= P->top || !frame_cnt(P, f) || !bits_fit(frame_occ(P, f), c->bits)) break;
            len = (uint32_t)k + 1;
        }
        if (!c->adj) break;
    }
    return len;
}

void pa_mesh_plan_lanes(pa_mesh_plan *P) {
    long cur = -1; /* the frame region i takes if its run continues */
    for (size_t i = 0; i < P->n; i++) {
        pa_mesh_region *c = &P->cand[i];
        bool left = i > 0 && P->cand[i - 1].adj && P->plan[i - 1];
        if (bits_empty(c->bits)) { /* a hole: mapped along a run, else given back */
            P->plan[i] = cur >= 0 ? (uint32_t)cur + 1 : 0;
            cur = (cur >= 0 && c->adj) ? cur + 1 : -1;
            continue;
        }
        bool cont = cur >= 0 && frame_fits(P, (size_t)cur, c->bits);
        long f = -1;
        if (cont && (size_t)cur < P->top && frame_cnt(P, (size_t)cur)) {
            f = cur; /* riding: shares a frame, no new mapping */
        } else {
            bool room = P->pieces + 2 <= P->budget;
            if (room && P->nwithc) {
                uint32_t best = 0;
                size_t bestg = 0;
                for (int k = 0; k < MESH_PROBES && best < MESH_LOOKAHEAD; k++) {
                    size_t g = P->withc[mesh_rand() % P->nwithc];
                    uint32_t len = plan_ride(P, i, g);
                    if (len > best) best = len, bestg = g;
                }
                if (best >= (cont ? MESH_JUMP : 1)) f = (long)bestg;
            }
            if (f < 0 && cont) {
                f = cur; /* laying fresh frames on the current run */
            } else if (f < 0 && room) {
                f = (long)P->top; /* a new lane */
            } else if (f < 0) {
                P->plan[i] = 0; /* no VMA left: stays where it is */
                cur = -1;
                continue;
            }
            if (f != cur) P->pieces += 1 + !left;
        }
        uint64_t *occ = frame_occ(P, (size_t)f);
        if (!frame_cnt(P, (size_t)f)) P->withc[P->nwithc++] = (uint32_t)f;
        for (int w = 0; w < PA_MESH_RWORDS; w++) occ[w] |= c->bits[w];
        P->cnt[f]++;
        if ((size_t)f + 1 > P->top) P->top = (size_t)f + 1;
        P->plan[i] = (uint32_t)f + 1;
        cur = c->adj ? f + 1 : -1;
    }
}

/* Maps regions [i, j) of the plan, one run. */
static void exec_run(pa_mesh_plan *P, size_t i, size_t j) {
    for (size_t t = i; t < j; t++) {
        pa_mesh_region *c = &P->cand[t];
        if (bits_empty(c->bits)) continue;
        char *dst = mesh.shadow + (P->base + P->plan[t] - 1) * MESH_REGION;
        mesh_copy_words(dst, mesh_region_addr(c->page, c->r), c->bits);
    }
    void *at = mesh_region_addr(P->cand[i].page, P->cand[i].r);
    if (mmap(at, (j - i) * MESH_REGION, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, mesh.fd,
             (off_t)((P->base + P->plan[i] - 1) * MESH_REGION)) == MAP_FAILED)
        pa_fatal("mesh: cannot map shared frames (out of mappings?)", at);
}

/* A region the plan leaves anonymous. */
static void exec_anon(pa_mesh_region *c) {
    char *at = mesh_region_addr(c->page, c->r);
    bool empty = bits_empty(c->bits);
    if (!c->was) {
        if (empty) (void)madvise(at, MESH_REGION, MADV_DONTNEED);
        return;
    }
    char tmp[MESH_REGION];
    if (!empty) memcpy(tmp, at, MESH_REGION);
    if (mmap(at, MESH_REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
        MAP_FAILED)
        pa_fatal("mesh: cannot map anonymous memory back (out of mappings?)", at);
    if (!empty) mesh_copy_words(at, tmp, c->bits);
}

static void mesh_unmap_plan(pa_mesh_plan *P, size_t cap, size_t wcap) {
    if (P->cand) munmap(P->cand, cap * sizeof *P->cand);
    if (P->plan) munmap(P->plan, cap * sizeof *P->plan);
    if (P->withc) munmap(P->withc, wcap * sizeof *P->withc);
}

/* A pass. Incremental: h's sparse avail pages (not a class's current page) are frozen and packed
 * onto the frames in use (riding them where they fit) and fresh ones after them. Full (repack):
 * every frozen page is packed afresh into the other half of the memfd, and the half it leaves is
 * given back: frames thinned by frees fill up again. The caller holds the lock, is the only
 * thread of the process and has blocked every signal. */
static size_t mesh_pass(pa_heap *h, bool full, bool force) {
    size_t pending = 0; /* sparse pages seen for the first time: frozen next pass if still sparse */
    if (!mesh_ready()) return 0;
    mesh_bury();
    mesh.epoch++;
    pa_pool_stats pool;
    pa_pool_counters(&pool);
    size_t ncommitted = (size_t)pool.committed, want = 0, sparse = 0, mine = 0;
    for (size_t i = 0; i < ncommitted; i++) {
        pa_page *pg = &pa_pages[i];
        int state = atomic_load_explicit(&pg->meshed, memory_order_relaxed);
        if (state == PA_MESH_LIVE) {
            want += full;
        } else if (state == PA_MESH_NONE && pa_load_relaxed(&pg->heap) == h) {
            mine++;
            if (pg->where == PA_W_AVAIL && h->avail[pg->cls].head != i + 1 &&
                (uint32_t)(pg->used + pg->used_bias) * MESH_SPARSE_DIV <= pa_class_blocks(pg->cls))
                sparse++;
        }
    }
    /* Unless asked (malloc_trim), sparse pages must be an eighth of the heap's: a program that
     * churns refills them, and frozen pages would only make it take fresh ones. */
    if (!force && sparse * 8 < mine) {
        pending = sparse; /* not yet: looked at again by the next pass */
        sparse = 0;
    }
    want += sparse;
    if (!full && !sparse) return pending;
    int half = full ? 1 - mesh.cur : mesh.cur;
    pa_mesh_plan P = {.budget = mesh_budget(full), .base = (size_t)half * mesh.half, .top = mesh.top[half]};
    P.occ = mesh.focc + P.base * PA_MESH_RWORDS;
    P.cnt = mesh.refs + P.base;
    P.top0 = P.top;
    size_t cap = want * MESH_RPP;
    if (cap > MESH_MAX_REGIONS) cap = MESH_MAX_REGIONS;
    if (!cap) return 0;
    P.cand = mesh_map_anon(cap * sizeof *P.cand);
    P.plan = mesh_map_anon(cap * sizeof *P.plan);
    size_t wcap = cap + P.top + 64; /* frames with content: those of the half, and new ones */
    P.withc = mesh_map_anon(wcap * sizeof *P.withc);
    if (!P.cand || !P.plan || !P.withc) goto out;
    for (size_t f = 0; f < P.top; f++)
        if (frame_cnt(&P, f)) P.withc[P.nwithc++] = (uint32_t)f;

    for (size_t i = 0; i < ncommitted && P.n + MESH_RPP <= cap; i++) {
        pa_page *pg = &pa_pages[i];
        mesh_rec *rec = mesh_rec_of(pg);
        int state = atomic_load_explicit(&pg->meshed, memory_order_relaxed);
        if (state == PA_MESH_DEAD || (state == PA_MESH_LIVE && !full)) continue;
        if (state == PA_MESH_NONE) {
            if (pa_load_relaxed(&pg->heap) != h || pg->where != PA_W_AVAIL || h->avail[pg->cls].head == i + 1) continue;
            pg->used = (uint16_t)(pg->used + pg->used_bias);
            pg->used_bias = 0;
            pa_page_collect(pg);
            if (!sparse || (uint32_t)pg->used * MESH_SPARSE_DIV > pa_class_blocks(pg->cls) || pg->used == 0)
                continue;
            /* Unless asked, only a page seen sparse before (by its sparse event or an earlier
             * pass) that got no block handed out since: one the program refills stays with it. */
            bool stable = rec->seen && rec->seen <= mesh.epoch && pg->used <= rec->nlive;
            rec->seen = mesh.epoch + 1;
            rec->nlive = pg->used;
            if (!force && !stable) {
                pending++;
                continue;
            }
            mesh_freeze(h, pg, rec, mesh_live_of(pg, rec));
        }
        for (uint32_t r = 0; r < MESH_RPP; r++) {
            pa_mesh_region *c = &P.cand[P.n++];
            c->page = (uint32_t)i;
            c->r = (uint8_t)r;
            c->was = rec->map[r] != 0;
            c->adj = 0;
            mesh_region_bits(pg, rec, r, c->bits);
            if (P.n > 1) {
                pa_mesh_region *prev = &P.cand[P.n - 2];
                prev->adj = ((uint64_t)prev->page * MESH_RPP + prev->r + 1) == ((uint64_t)i * MESH_RPP + r);
            }
        }
    }
    pa_mesh_plan_lanes(&P);

    /* Fresh frames are allocated in one call, not one fault each. */
    if (P.top > P.top0) {
        (void)fallocate(mesh.fd, 0, (off_t)((P.base + P.top0) * MESH_REGION), (off_t)((P.top - P.top0) * MESH_REGION));
#ifdef MADV_POPULATE_WRITE
        (void)madvise(mesh.shadow + (P.base + P.top0) * MESH_REGION, (P.top - P.top0) * MESH_REGION,
                      MADV_POPULATE_WRITE);
#endif
    }
    /* Map the plan, region by region in address order. */
    for (size_t i = 0; i < P.n;) {
        if (!P.plan[i]) {
            exec_anon(&P.cand[i]);
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < P.n && P.cand[j - 1].adj && P.plan[j] == P.plan[j - 1] + 1) j++;
        exec_run(&P, i, j);
        i = j;
    }
    /* The frames are mapped where they belong; the shadow's own view of them goes (so it does not
     * count as resident). A repack gives back the half it left. */
    (void)madvise(mesh.shadow + P.base * MESH_REGION, P.top * MESH_REGION, MADV_DONTNEED);
    if (full) {
        size_t obase = (size_t)mesh.cur * mesh.half;
        mesh_punch(obase, mesh.top[mesh.cur]);
        memset(mesh.refs + obase, 0, mesh.top[mesh.cur] * sizeof *mesh.refs);
        memset(mesh.focc + obase * PA_MESH_RWORDS, 0, mesh.top[mesh.cur] * PA_MESH_RWORDS * sizeof *mesh.focc);
        mesh.top[mesh.cur] = 0;
        mesh.cur = half;
        mesh.c.regions = mesh.c.holes = mesh.c.live = mesh.focc_words = 0;
        mesh.stale_pages = 0;
    }
    mesh.top[half] = P.top;

    /* Records and counters. */
    for (size_t i = 0; i < P.n; i++) {
        pa_mesh_region *c = &P.cand[i];
        mesh_rec *rec = &mesh.recs[c->page];
        if (c->r == 0) {
            rec->content = 0;
            rec->stale = 0;
            mesh.c.live += rec->nlive;
        }
        bool content = !bits_empty(c->bits);
        rec->map[c->r] = P.plan[i] ? (uint32_t)(P.base + P.plan[i]) : 0;
        if (content && P.plan[i]) {
            rec->content |= (uint8_t)(1u << c->r);
            mesh.c.regions++;
            for (int w = 0; w < PA_MESH_RWORDS; w++) mesh.focc_words += (uint64_t)__builtin_popcountll(c->bits[w]);
        }
        mesh.c.holes += !content;
    }
    uint64_t frames = 0;
    for (size_t f = 0; f < P.top; f++) frames += frame_cnt(&P, f) != 0;
    mesh.c.frames = frames;
    mesh.c.passes++;
    mesh.pieces = full ? P.pieces + 1 : mesh.pieces + P.pieces;
    mesh.budget = full ? P.budget : P.budget + mesh.pieces - P.pieces;
    mesh.c.vmas = (uint64_t)mesh.pieces;
out:
    mesh_unmap_plan(&P, cap, wcap);
    return pending;
}

/* ---- thawing: a frozen page back to its heap ---- */

static char thaw_buf[PA_PAGE_SIZE]; /* under the lock, with one thread: no stack for a page */

/* pg (frozen, of h's class) becomes an ordinary page of h again: its live blocks copied into fresh
 * anonymous memory over it, its free blocks on its free list. The caller holds the lock, is the
 * only thread of the process and has blocked every signal. */
static bool mesh_thaw_page(pa_heap *h, pa_page *pg, mesh_rec *rec) {
    if (mesh.pieces + 2 > mesh.budget) return false; /* it splits a run: within the budget */
    char *base = (char *)pa_page_start(pg);
    uint32_t mapped = 0;
    for (uint32_t r = 0; r < MESH_RPP; r++) mapped |= (rec->map[r] != 0) << r;
    if (mapped) {
        for (uint32_t r = 0; r < MESH_RPP; r++)
            if ((rec->content >> r) & 1) memcpy(thaw_buf + r * MESH_REGION, base + r * MESH_REGION, MESH_REGION);
        if (mmap(base, PA_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
            MAP_FAILED)
            pa_fatal("mesh: cannot map anonymous memory back (out of mappings?)", base);
        for (uint32_t r = 0; r < MESH_RPP; r++)
            if ((rec->content >> r) & 1) memcpy(base + r * MESH_REGION, thaw_buf + r * MESH_REGION, MESH_REGION);
        mesh.pieces += 2;
    }
    /* its regions leave their frames */
    for (uint32_t r = 0; r < MESH_RPP; r++) {
        uint64_t bits[PA_MESH_RWORDS];
        bool live = mesh_region_bits(pg, rec, r, bits);
        if (!((rec->content >> r) & 1)) {
            if (!live && mesh.c.holes) mesh.c.holes--; /* a hole; or live words left anonymous */
            continue;
        }
        mesh.c.regions--;
        if (rec->stale || mesh.fd < 0) continue;
        uint64_t *occ = mesh.focc + (size_t)(rec->map[r] - 1) * PA_MESH_RWORDS;
        for (int w = 0; w < PA_MESH_RWORDS; w++) {
            mesh.focc_words -= (uint64_t)__builtin_popcountll(occ[w] & bits[w]);
            occ[w] &= ~bits[w];
        }
        if (--mesh.refs[rec->map[r] - 1] == 0) {
            mesh_punch(rec->map[r] - 1, 1);
            mesh.c.frames--;
        }
    }
    /* its free blocks, in address order, and its carve threshold back */
    uint32_t bsize = pg->bsize, carved = pa_load_relaxed(&pg->bump) / bsize;
    pa_block *list = pa_list_end(pg);
    for (uint32_t j = carved; j-- > 0;) {
        if (live_test(rec, j)) continue;
        pa_block *b = (pa_block *)(base + (size_t)j * bsize);
        pa_block_set_next(pg, b, list);
        list = b;
    }
    frozen_unlink(pg, rec);
    mesh.c.pages--;
    mesh.c.live -= rec->nlive;
    pg->free = list;
    pg->used = rec->nlive;
    pg->used_bias = 0;
    memset(rec->map, 0, sizeof rec->map);
    rec->content = 0;
    rec->stale = 0;
    live_release(pg, rec);
    pa_store_relaxed(&pg->thresh, pa_block_thresh(pg->magic, bsize, carved));
    atomic_store_explicit(&pg->meshed, PA_MESH_NONE, memory_order_relaxed);
    pa_page_attach(h, pg);
    return true;
}

bool pa_mesh_thaw(pa_heap *h, uint32_t cls) {
    if (!pa_opt.mesh || !atomic_load_explicit(&mesh_frozen_n[cls], memory_order_relaxed) || !h->live) return false;
    if (pthread_mutex_trylock(&pa_mesh_lock) != 0) return false;
    int saved = errno;
    bool done = false;
    if (mesh.frozen[cls] && mesh_threads() == 1) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pa_page *pg = pa_page_at(mesh.frozen[cls]);
        done = mesh_thaw_page(h, pg, mesh_rec_of(pg));
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    errno = saved;
    pthread_mutex_unlock(&pa_mesh_lock);
    return done;
}

/* A pass, if this thread is the process's only one: a repack when the frames are less than a
 * quarter full (or hold a memfd from before a fork), else an incremental one if pages turned
 * sparse. The next pass waits ten times as long as this one took (at least MESH_INTERVAL_MS), so
 * passes cost a program at most a tenth of its time. Under the lock; errno and the signal mask are
 * restored. Returns the pages frozen by this pass. */
static size_t mesh_try_pass(pa_heap *h, bool force_full) {
    uint32_t t0 = pa_clock_ms();
    atomic_store_explicit(&mesh_next_ms, t0 + MESH_INTERVAL_MS, memory_order_relaxed);
    if (!h || !h->live || mesh_threads() != 1) return 0;
    bool full = force_full || mesh.stale_pages ||
                (mesh.c.frames >= 64 && mesh.focc_words * 4 < mesh.c.frames * (MESH_REGION / 8));
    bool sparse = atomic_load_explicit(&mesh_sparse_pages, memory_order_relaxed) > 0;
    if (!full && !sparse) return 0;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    uint64_t before = mesh.c.pages;
    atomic_store_explicit(&mesh_frozen_frees, 0, memory_order_relaxed);
    size_t pending = mesh_pass(h, full, force_full);
    /* pages seen sparse once are looked at again by the next pass */
    atomic_store_explicit(&mesh_sparse_pages, pending ? MESH_MIN_SPARSE : 0, memory_order_relaxed);
    atomic_store_explicit(&mesh_frozen_live, mesh.c.live, memory_order_relaxed);
    uint32_t t1 = pa_clock_ms(), wait = (t1 - t0) * 10;
    atomic_store_explicit(&mesh_next_ms, t1 + (wait > MESH_INTERVAL_MS ? wait : MESH_INTERVAL_MS),
                          memory_order_relaxed);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return (size_t)(mesh.c.pages - before);
}

void pa_mesh_tick(pa_heap *h) {
    if (!pa_opt.mesh) return;
    bool dead = atomic_load_explicit(&mesh_dead_hint, memory_order_relaxed) >= MESH_BURY_MIN;
    /* Work for a pass: pages turned sparse, or an eighth of the frozen pages' blocks freed since. */
    bool work = atomic_load_explicit(&mesh_sparse_pages, memory_order_relaxed) >= MESH_MIN_SPARSE ||
                atomic_load_explicit(&mesh_frozen_frees, memory_order_relaxed) * 8 >
                    atomic_load_explicit(&mesh_frozen_live, memory_order_relaxed) + 64;
    bool due = work && (int32_t)(pa_clock_ms() - atomic_load_explicit(&mesh_next_ms, memory_order_relaxed)) >= 0;
    if (!dead && !due) return;
    if (pthread_mutex_trylock(&pa_mesh_lock) != 0) return;
    int saved = errno;
    if (dead) mesh_bury();
    if (due) (void)mesh_try_pass(h, false);
    errno = saved;
    pthread_mutex_unlock(&pa_mesh_lock);
}

void pa_mesh_sparse(pa_heap *h, pa_page *pg) {
    /* The first sighting of a sparse page: the next pass freezes it if no block came out of it
     * since (a page the program is refilling stays with it). */
    if (pthread_mutex_trylock(&pa_mesh_lock) == 0) {
        if (mesh_tables()) {
            mesh_rec *rec = mesh_rec_of(pg);
            rec->seen = mesh.epoch + 1;
            rec->nlive = pg->used;
        }
        pthread_mutex_unlock(&pa_mesh_lock);
    }
    atomic_fetch_add_explicit(&mesh_sparse_pages, 1, memory_order_relaxed);
    pa_mesh_tick(h);
}

size_t pa_mesh_trim(void) {
    if (!pa_opt.mesh) return 0;
    int saved = errno;
    pthread_mutex_lock(&pa_mesh_lock);
    mesh_bury();
    pa_heap *h = pa_tls_heap;
    size_t n = mesh_try_pass(h->live ? h : NULL, true);
    pthread_mutex_unlock(&pa_mesh_lock);
    errno = saved;
    return n;
}

/* ---- fork ---- */

void pa_mesh_fork_prepare(void) {
    if (mesh.fd < 0) return;
    int saved = errno;
    pa_pool_stats pool; /* the pool lock is not held yet (it comes after ours): read under it */
    pa_pool_counters(&pool);
    size_t ncommitted = (size_t)pool.committed;
    /* Every run of regions on consecutive frames becomes a private mapping of the same frames. */
    char *run = NULL;
    size_t run_len = 0, run_frame = 0;
    for (size_t i = 0; i <= ncommitted; i++) {
        pa_page *pg = i < ncommitted ? &pa_pages[i] : NULL;
        bool frozen = pg && atomic_load_explicit(&pg->meshed, memory_order_relaxed) != PA_MESH_NONE;
        mesh_rec *rec = frozen ? &mesh.recs[i] : NULL;
        for (uint32_t r = 0; r < MESH_RPP; r++) {
            uint32_t m = rec && !rec->stale ? rec->map[r] : 0;
            char *at = pg ? mesh_region_addr((uint32_t)i, r) : NULL;
            if (m && run && at == run + run_len * MESH_REGION && m - 1 == run_frame + run_len) {
                run_len++;
                continue;
            }
            if (run && mmap(run, run_len * MESH_REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED,
                            mesh.fd, (off_t)(run_frame * MESH_REGION)) == MAP_FAILED)
                pa_fatal("mesh: fork: cannot make shared frames private", run);
            run = NULL;
            if (m) {
                run = at;
                run_len = 1;
                run_frame = m - 1;
            }
            if (!pg) break;
        }
        if (rec && !rec->stale && atomic_load_explicit(&pg->meshed, memory_order_relaxed) == PA_MESH_LIVE)
            mesh.stale_pages++;
        if (rec) rec->stale = 1;
    }
    munmap(mesh.shadow, 2 * mesh.half * MESH_REGION);
    mesh.shadow = NULL;
    errno = saved;
}

void pa_mesh_fork_after(void) {
    if (mesh.fd < 0) return;
    int saved = errno;
    close(mesh.fd);
    mesh.fd = -1;
    memset(mesh.refs + (size_t)mesh.cur * mesh.half, 0, mesh.top[mesh.cur] * sizeof *mesh.refs);
    memset(mesh.focc + (size_t)mesh.cur * mesh.half * PA_MESH_RWORDS, 0,
           mesh.top[mesh.cur] * PA_MESH_RWORDS * sizeof *mesh.focc);
    mesh.focc_words = 0;
    mesh.top[0] = mesh.top[1] = 0;
    mesh.c.frames = 0;
    errno = saved;
}

void pa_mesh_counters_get(pa_mesh_counters *c) {
    pthread_mutex_lock(&pa_mesh_lock);
    *c = mesh.c;
    pthread_mutex_unlock(&pa_mesh_lock);
}
