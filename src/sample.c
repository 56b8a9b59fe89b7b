/* SPDX-License-Identifier: MIT
 * Allocation sites (PYALLOC_SITES=1): which allocations are sampled, what is kept of each, and the
 * data `pyalloc stats --sites` reports from.
 *
 * Which: each allocation of n bytes with probability 1 - exp(-n/R), R = PYALLOC_SAMPLE_BYTES,
 * independently (sites.h). A sample of n bytes stands for n / (1 - exp(-n/R)) bytes (its weight),
 * so the sum of the weights of any set of samples (one site's, those live at the peak) is an
 * unbiased estimate of the bytes of the allocations it stands for, with variance
 * sum n^2 (1 - p) / p, about R times the bytes for blocks much smaller than R. The draws are
 * countdowns in the allocating thread's heap (heap->cd[n] per small request size, a byte countdown
 * for passthrough requests), so sampling costs malloc one decrement and branch, which it had
 * anyway as its allocation counter: allocations of size n = base[n] - cd[n] (pa_heap_allocs).
 *
 * Where: a sampled small block comes from a page of pa_sample_heap, a pseudo-heap no thread owns,
 * so its free fails free's one compare (page owner == this thread's heap), reaches pa_free_remote
 * and from there pa_sample_free_small, which retires the record and frees the block with the
 * owner's checks (block start, double free). A sampled passthrough block is counted in a filter of
 * counters by address bits, read without a lock by the passthrough's free and realloc while
 * sampling is on, for the blocks that may have a record (PA_SYS_CHECK: large ones, and those whose
 * usable size has the mark its request was made larger for); a non-zero counter sends them to the
 * record table. The passthrough's requests
 * count a byte countdown per thread (inline, passthrough.c), and only one that runs it out comes
 * here (pa_sample_sys_due).
 *
 * What: the record (address, size, weight, the sample's sequence number) names its stack, interned
 * with its native return addresses (unwind.c) and Python frames (pyframes.c); the objects the
 * addresses fall in are kept for the report's load map. "Live at the peak" is kept exactly at the
 * cost of a list append per free: the peak is a moment (a sequence number); a record freed after it
 * and allocated before it is copied to the peak's kept list; when the peak moves, the list is
 * emptied, since everything live now is live at the new peak. The peak is the highest estimate of
 * live sampled bytes (the sum of the live records' weights), a moment the samples themselves
 * define (monitor.c's peak is evaluated before the page or block that makes it is handed out, so a
 * peak of a few large blocks would miss them). "Live at exit" works the same way from the moment a Python
 * interpreter begins to finalize (it frees its objects then, leaks included), or is simply what is
 * live when the report is written, for other programs.
 *
 * Everything under sample_lock (leaf but for the pool lock, which taking a page for
 * pa_sample_heap needs); tables grow by mmap. Nothing here allocates; the stack is captured before
 * the lock is taken. The report's data is written at exit to PYALLOC_SITES_FILE.
 * Exports the functions of sites.h's sample.c section. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <string.h>
#include <unistd.h>

#include "pyalloc.h"

#define SMP_NATIVE 64  /* native frames kept per stack, innermost first */
#define SMP_PY 64      /* Python frames kept per stack, innermost first */
#define SMP_OBJS 16    /* distinct objects one stack registers */
#define SMP_STR_MAX 512 /* bytes of a Python name or file kept */

bool pa_sample_on;
size_t pa_sample_bits;
_Atomic uint64_t pa_sample_fired;

#define PA_EMPTY_DIRECT { [0 ... PA_NDIRECT - 1] = &pa_page_empty }
pa_heap pa_sample_heap = {.direct = PA_EMPTY_DIRECT, .live = 1, .rng = 0x6a09e667f3bcc909ull};

#if PA_STATS
static pthread_mutex_t sample_lock = PTHREAD_MUTEX_INITIALIZER;
static bool smp_ready;                     /* pa_sample_start ran: the unwinder is set up */
static __thread int smp_busy __attribute__((tls_model("initial-exec"))); /* inside the sampler */
static uint32_t smp_start_ms;
/* Recorded passthrough blocks by address bits (glibc's blocks are 16-aligned: the next 16 bits
 * spread them); a static array: untouched while sampling is off, it costs no memory. */
_Atomic uint32_t pa_sample_filter[PA_SAMPLE_FILTER];

/* ---- numbers: log and 1 - exp(-x) without libm ---- */

/* log(x) for a normal x > 0: x = m 2^e, m in [sqrt(1/2), sqrt(2)), log m = 2 atanh((m-1)/(m+1)),
 * whose series to t^15 leaves an error below 1e-13. */
static double smp_log(double x) {
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    int e = (int)((u >> 52) & 0x7ff) - 1023;
    u = (u & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
    double m;
    memcpy(&m, &u, sizeof m);
    if (m > 1.4142135623730951) {
        m *= 0.5;
        e++;
    }
    double t = (m - 1) / (m + 1), t2 = t * t;
    double s = t2 * (1.0 / 3 + t2 * (1.0 / 5 + t2 * (1.0 / 7 + t2 * (1.0 / 9 + t2 * (1.0 / 11 + t2 * (1.0 / 13 + t2 / 15))))));
    return e * 0.69314718055994530942 + 2 * t * (1 + s);
}

/* 1 - exp(-x) for x >= 0: for x < 0.5 the series x (1 - x/2 (1 - x/3 (1 - ...))) to its 17th
 * term (what is left is below 1e-17 of the sum; no cancellation), else exp(-x) from exp(-x / 2^k),
 * x / 2^k below 0.5, squared k times. */
static double smp_expm1_series(double x) {
    static const double inv[18] = {0, 1, 1.0 / 2, 1.0 / 3, 1.0 / 4, 1.0 / 5, 1.0 / 6, 1.0 / 7, 1.0 / 8, 1.0 / 9,
                                   1.0 / 10, 1.0 / 11, 1.0 / 12, 1.0 / 13, 1.0 / 14, 1.0 / 15, 1.0 / 16, 1.0 / 17};
    double r = 1;
    for (int k = 17; k >= 2; k--) r = 1 - x * r * inv[k];
    return x * r;
}

double pa_sample_prob(double x) {
    if (x <= 0) return 0;
    if (x > 40) return 1;
    if (x < 0.5) return smp_expm1_series(x);
    int k = 0;
    double y = x;
    while (y >= 0.5) {
        y *= 0.5;
        k++;
    }
    double e = 1 - smp_expm1_series(y); /* exp(-y) */
    while (k-- > 0) e *= e;
    return 1 - e;
}

/* The bytes a sample of n bytes stands for: n / (1 - exp(-n/R)); for small blocks, from a table
 * made at start-up. */
static uint64_t smp_weights[PA_NDIRECT];

static uint64_t smp_weight_of(size_t n) {
    double p = pa_sample_prob((double)n / (double)pa_opt.sample_bytes);
    if (p <= 0) return 0;
    return (uint64_t)((double)n / p + 0.5);
}

static uint64_t smp_weight(size_t n) { return n < PA_NDIRECT ? smp_weights[n] : smp_weight_of(n); }

static uint64_t smp_rand(pa_heap *h) {
    uint64_t z = (h->smp.rng += 0x9e3779b97f4a7c15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* An exponential draw of mean scale: -log(U) * scale, U uniform in (0, 1]. */
static int64_t smp_draw(pa_heap *h, double scale) {
    double u = (double)((smp_rand(h) >> 11) + 1) * 0x1p-53;
    double g = -smp_log(u) * scale;
    return g >= (double)PA_CD_OFF ? PA_CD_OFF : (int64_t)g;
}

/* Allocations of size n before the next sampled one: floor(E R / n) with E exponential(1) is
 * geometric, P(>= k) = exp(-k n / R), so each allocation is sampled with 1 - exp(-n/R). */
static int64_t smp_draw_count(pa_heap *h, size_t n) {
    return n ? smp_draw(h, (double)pa_opt.sample_bytes / (double)n) : PA_CD_OFF; /* malloc(0): never */
}

/* ---- the countdowns ---- */

void pa_sample_heap_init(pa_heap *h) {
    h->smp.rng = (uint64_t)(uintptr_t)h ^ ((uint64_t)__builtin_ia32_rdtsc() << 21) ^ 0x243f6a8885a308d3ull;
    bool on = pa_opt.sites;
    for (size_t n = 0; n < PA_NDIRECT; n++) {
        int64_t c = on ? smp_draw_count(h, n) : PA_CD_OFF;
        h->cd[n] = c;
        h->smp.base[n] = (uint64_t)c;
    }
    h->sys_cd = on ? smp_draw(h, (double)pa_opt.sample_bytes) : PA_CD_OFF;
}

/* A seqlock read, with a bounded wait: a forked child's copy of a heap whose thread was between
 * the two stores of smp_redraw stays odd for ever (the child's fork handler evens it, but a handler
 * registered before it, monitor.c's, reads the counters first). After the wait the figure may be
 * off by one countdown's draw. */
PA_COUNTER_READER uint64_t pa_heap_allocs(const pa_heap *h, size_t n) {
    for (unsigned tries = 0;; tries++) {
        uint32_t s1 = atomic_load_explicit(&h->smp.seq, memory_order_acquire);
        uint64_t base = __atomic_load_n(&h->smp.base[n], __ATOMIC_RELAXED);
        int64_t cd = __atomic_load_n(&h->cd[n], __ATOMIC_RELAXED);
        atomic_thread_fence(memory_order_acquire);
        uint32_t s2 = atomic_load_explicit(&h->smp.seq, memory_order_relaxed);
        if ((!(s1 & 1) && s1 == s2) || tries == 64) return base - (uint64_t)cd;
        if (tries >= 8) sched_yield(); /* the writer may have been preempted between its stores */
    }
}

/* cd[n] ran out (it is -1: the allocation that took it there is counted once it is reset). */
static void smp_redraw(pa_heap *h, size_t n) {
    int64_t next = smp_draw_count(h, n);
    uint32_t s = atomic_load_explicit(&h->smp.seq, memory_order_relaxed);
    atomic_store_explicit(&h->smp.seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    h->smp.base[n] = h->smp.base[n] - (uint64_t)h->cd[n] + (uint64_t)next;
    h->cd[n] = next;
    atomic_store_explicit(&h->smp.seq, s + 2, memory_order_release);
    atomic_fetch_add_explicit(&pa_sample_fired, 1, memory_order_relaxed);
}

/* ---- tables: grown by mmap, under sample_lock ---- */

/* Grows *arr (of *cap elements of size elem) to hold at least need; false if mmap refuses. */
static bool smp_grow(void **arr, size_t *cap, size_t elem, size_t need, size_t first) {
    if (need <= *cap) return true;
    size_t ncap = *cap ? *cap : first;
    while (ncap < need) ncap *= 2;
    size_t bytes = (ncap * elem + PA_OS_PAGE - 1) & ~(size_t)(PA_OS_PAGE - 1);
    void *p = pa_os_map(bytes);
    if (!p) return false;
    if (*arr) {
        memcpy(p, *arr, *cap * elem);
        pa_os_unmap(*arr, (*cap * elem + PA_OS_PAGE - 1) & ~(size_t)(PA_OS_PAGE - 1));
    }
    *arr = p;
    *cap = ncap;
    return true;
}

static uint64_t smp_hash(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static uint64_t smp_hash_bytes(const void *p, size_t n, uint64_t h) {
    const uint8_t *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull; /* FNV-1a */
    return smp_hash(h);
}

/* An open-addressing index of uint32 ids (id + 1; 0 empty), power-of-two sized, kept at most half
 * full; the caller compares keys. */
typedef struct smp_index {
    uint32_t *slot;
    size_t cap;
} smp_index;

/* Rebuilt at twice the size from key(i) of ids 0..n-1. */
static bool smp_index_fit(smp_index *x, size_t n, uint64_t (*key)(uint32_t)) {
    if (2 * (n + 1) <= x->cap) return true;
    size_t ncap = x->cap ? x->cap * 2 : 1024;
    while (2 * (n + 1) > ncap) ncap *= 2;
    uint32_t *s = pa_os_map(ncap * sizeof *s);
    if (!s) return false;
    for (uint32_t i = 0; i < n; i++) {
        size_t j = key(i) & (ncap - 1);
        while (s[j]) j = (j + 1) & (ncap - 1);
        s[j] = i + 1;
    }
    if (x->slot) pa_os_unmap(x->slot, x->cap * sizeof *x->slot);
    x->slot = s;
    x->cap = ncap;
    return true;
}

/* ---- strings (Python names and files; objects' paths), interned ---- */

typedef struct smp_str {
    uint64_t hash;
    uint32_t off, len;
} smp_str;
static struct {
    char *buf;
    size_t used, cap;
    smp_str *s;
    size_t n, capn;
    smp_index idx;
} strs;

static uint64_t smp_str_key(uint32_t i) { return strs.s[i].hash; }

/* The id of the bytes just appended at strs.buf + strs.used (len of them), interned; 0 if no room.
 * Id 0 is the empty string: "unknown". */
static uint32_t smp_str_commit(size_t len) {
    const char *p = strs.buf + strs.used;
    uint64_t h = smp_hash_bytes(p, len, 0xcbf29ce484222325ull);
    if (strs.idx.cap) {
        for (size_t j = h & (strs.idx.cap - 1); strs.idx.slot[j]; j = (j + 1) & (strs.idx.cap - 1)) {
            const smp_str *e = &strs.s[strs.idx.slot[j] - 1];
            if (e->hash == h && e->len == len && memcmp(strs.buf + e->off, p, len) == 0) return strs.idx.slot[j] - 1;
        }
    }
    if (!smp_grow((void **)&strs.s, &strs.capn, sizeof *strs.s, strs.n + 1, 1024) ||
        !smp_index_fit(&strs.idx, strs.n + 1, smp_str_key))
        return 0;
    uint32_t id = (uint32_t)strs.n++;
    strs.s[id] = (smp_str){h, (uint32_t)strs.used, (uint32_t)len};
    strs.used += len;
    size_t j = h & (strs.idx.cap - 1);
    while (strs.idx.slot[j]) j = (j + 1) & (strs.idx.cap - 1);
    strs.idx.slot[j] = id + 1;
    return id;
}

static bool smp_str_room(size_t len) {
    return smp_grow((void **)&strs.buf, &strs.cap, 1, strs.used + len, 1 << 16);
}

static uint32_t smp_str_intern(const char *s, size_t len) {
    if (len > SMP_STR_MAX) len = SMP_STR_MAX;
    if (!smp_str_room(len)) return 0;
    if (len) memcpy(strs.buf + strs.used, s, len); /* "" at start-up: no buffer yet */
    return smp_str_commit(len);
}

/* A Python str object's text, as UTF-8. */
static uint32_t smp_str_py(const void *obj) {
    const void *data;
    size_t n;
    unsigned kind;
    if (!pa_py_str(obj, &data, &n, &kind)) return 0;
    if (kind == 8 || kind == 1) {
        if (kind == 8) return smp_str_intern(data, n);
        /* one byte per character: ASCII as is, Latin-1 as two bytes above 127 */
        if (!smp_str_room(2 * SMP_STR_MAX)) return 0;
        char *o = strs.buf + strs.used;
        size_t k = 0;
        for (size_t i = 0; i < n && k + 2 <= SMP_STR_MAX; i++) {
            uint8_t c = ((const uint8_t *)data)[i];
            if (c < 0x80) o[k++] = (char)c;
            else o[k++] = (char)(0xc0 | c >> 6), o[k++] = (char)(0x80 | (c & 0x3f));
        }
        return smp_str_commit(k);
    }
    if (!smp_str_room(SMP_STR_MAX)) return 0;
    char *o = strs.buf + strs.used;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = kind == 2 ? ((const uint16_t *)data)[i] : ((const uint32_t *)data)[i];
        unsigned len = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
        if (k + len > SMP_STR_MAX) break;
        if (len == 1) o[k++] = (char)c;
        else if (len == 2) o[k++] = (char)(0xc0 | c >> 6), o[k++] = (char)(0x80 | (c & 0x3f));
        else if (len == 3)
            o[k++] = (char)(0xe0 | c >> 12), o[k++] = (char)(0x80 | ((c >> 6) & 0x3f)), o[k++] = (char)(0x80 | (c & 0x3f));
        else
            o[k++] = (char)(0xf0 | c >> 18), o[k++] = (char)(0x80 | ((c >> 12) & 0x3f)),
            o[k++] = (char)(0x80 | ((c >> 6) & 0x3f)), o[k++] = (char)(0x80 | (c & 0x3f));
    }
    return smp_str_commit(k);
}

/* ---- objects: where the return addresses lie, for the report's load map ---- */

typedef struct smp_obj {
    uintptr_t map_start, map_end, l_addr;
    const void *link_map;
    uint32_t name;
    bool program;          /* the executable (ld.so names it ""; the report gets /proc/self/exe) */
    uint8_t build_id_len;
    uint8_t build_id[32];
} smp_obj;
static struct {
    smp_obj *o;
    size_t n, cap;
} objs;

/* The GNU build-id note of the object mapped at map_start (its program headers, as unwind.c reads
 * them); the object holds one of this thread's frames, so it is mapped. */
static void smp_obj_build_id(smp_obj *o) {
    uintptr_t first = o->map_start & ~(uintptr_t)(PA_OS_PAGE - 1);
    const ElfW(Ehdr) *eh = (const ElfW(Ehdr) *)first;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_phoff > PA_OS_PAGE ||
        eh->e_phnum > (PA_OS_PAGE - eh->e_phoff) / sizeof(ElfW(Phdr)))
        return;
    const ElfW(Phdr) *ph = (const ElfW(Phdr) *)(first + eh->e_phoff);
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type != PT_NOTE) continue;
        const uint8_t *p = (const uint8_t *)(o->l_addr + ph[i].p_vaddr), *end = p + ph[i].p_filesz;
        if ((uintptr_t)p < o->map_start || (uintptr_t)end > o->map_end) continue;
        while (p + 12 <= end) {
            uint32_t namesz, descsz, type;
            memcpy(&namesz, p, 4), memcpy(&descsz, p + 4, 4), memcpy(&type, p + 8, 4);
            const uint8_t *name = p + 12, *desc = name + ((namesz + 3) & ~3u);
            if (desc + descsz > end || desc < name) break;
            if (type == NT_GNU_BUILD_ID && namesz == 4 && memcmp(name, "GNU", 4) == 0 && descsz <= sizeof o->build_id) {
                memcpy(o->build_id, desc, descsz);
                o->build_id_len = (uint8_t)descsz;
                return;
            }
            p = desc + ((descsz + 3) & ~3u);
        }
    }
}

/* The object holding return address pc, into the load map if it is new. Returns its map_start. */
static uintptr_t smp_obj_note(uintptr_t pc) {
    pa_unwind_object_info info, *f = &info;
    if (!pa_unwind_object(pc, f)) return 0;
    for (size_t i = objs.n; i-- > 0;)
        if (objs.o[i].map_start == f->map_start && objs.o[i].link_map == f->link_map) return f->map_start;
    if (!smp_grow((void **)&objs.o, &objs.cap, sizeof *objs.o, objs.n + 1, 64)) return 0;
    smp_obj *o = &objs.o[objs.n++];
    memset(o, 0, sizeof *o);
    o->map_start = f->map_start;
    o->map_end = f->map_end;
    o->l_addr = f->l_addr;
    o->link_map = f->link_map;
    const char *name = ((const struct link_map *)f->link_map)->l_name;
    if (name && name[0]) o->name = smp_str_intern(name, strlen(name));
    else o->program = true;
    smp_obj_build_id(o);
    return f->map_start;
}

/* ---- stacks, interned ---- */

/* What a set of samples of one stack stands for: samples, bytes (the sum of their weights), blocks
 * (the sum of weight / size) and the variance of the bytes' estimate (the sum of w (w - size)). */
typedef struct smp_sum {
    uint64_t n;
    double bytes, blocks, var;
} smp_sum;
typedef struct smp_stack {
    uint64_t hash;
    uint32_t word, nwords;     /* its key in stk.words: header (npy << 32 | nnative), the return
                                  addresses, and per Python frame its code object and (last
                                  instruction << 1 | entry); the Python frames' names follow */
    smp_sum all;               /* every sample, ever */
    smp_sum peak, exit;        /* live at the peak, at exit: filled in by the writer */
} smp_stack;

static void smp_sum_add(smp_sum *s, uint64_t size, uint64_t weight) {
    s->n++;
    s->bytes += (double)weight;
    s->blocks += size ? (double)weight / (double)size : 0;
    s->var += (double)weight * (double)(weight - size);
}
static struct {
    uint64_t *words;
    size_t nw, capw;
    smp_stack *s;
    size_t n, cap;
    smp_index idx;
} stk;

static uint64_t smp_stack_key(uint32_t i) { return stk.s[i].hash; }

/* A Python frame's names as one word: file id (20 bits), name id (20 bits), line (23 bits), entry. */
static uint64_t smp_py_word(uint32_t file, uint32_t name, int32_t line, bool entry) {
    uint64_t l = line < 0 ? 0 : line >= (1 << 23) ? (1 << 23) - 1 : (uint64_t)line;
    if (file >= (1u << 20)) file = 0;
    if (name >= (1u << 20)) name = 0;
    return (uint64_t)file << 44 | (uint64_t)name << 24 | l << 1 | (entry ? 1 : 0);
}

typedef struct smp_cap {
    size_t nnat, npy;
    uintptr_t nat[SMP_NATIVE + 8];
    pa_pyframe py[SMP_PY];
} smp_cap;

static uint64_t smp_hash_words(const uint64_t *w, size_t n) {
    uint64_t h = 0x84222325cbf29ce4ull ^ n;
    for (size_t i = 0; i < n; i++) h = (h ^ w[i]) * 0x9e3779b97f4a7c15ull, h ^= h >> 29;
    return smp_hash(h);
}

/* The stack's id (interned), or UINT32_MAX if there is no room. A stack is known by its return
 * addresses and its Python frames' code objects and instructions, so a sample of a stack seen
 * before costs a hash and a compare; the names and lines are worked out once, for a new one. (A
 * code object freed and another made at its address, reached through the very same stack, would
 * be taken for the first: the price of not reading names at every sample.) */
static uint32_t smp_stack_intern(const smp_cap *c) {
    size_t nw = 1 + c->nnat + 2 * c->npy;
    if (!smp_grow((void **)&stk.words, &stk.capw, sizeof *stk.words, stk.nw + nw + c->npy, 1 << 14)) return UINT32_MAX;
    uint64_t *w = &stk.words[stk.nw];
    w[0] = (uint64_t)c->npy << 32 | c->nnat;
    for (size_t i = 0; i < c->nnat; i++) w[1 + i] = c->nat[i];
    for (size_t i = 0; i < c->npy; i++) {
        w[1 + c->nnat + 2 * i] = (uintptr_t)c->py[i].code;
        w[2 + c->nnat + 2 * i] = (uint64_t)(uint32_t)c->py[i].lasti << 1 | c->py[i].entry;
    }
    uint64_t h = smp_hash_words(w, nw);
    if (stk.idx.cap) {
        for (size_t j = h & (stk.idx.cap - 1); stk.idx.slot[j]; j = (j + 1) & (stk.idx.cap - 1)) {
            const smp_stack *e = &stk.s[stk.idx.slot[j] - 1];
            if (e->hash == h && e->nwords == nw && memcmp(&stk.words[e->word], w, nw * sizeof *w) == 0)
                return stk.idx.slot[j] - 1;
        }
    }
    if (!smp_grow((void **)&stk.s, &stk.cap, sizeof *stk.s, stk.n + 1, 1024) ||
        !smp_index_fit(&stk.idx, stk.n + 1, smp_stack_key))
        return UINT32_MAX;
    /* A new stack: its Python frames' names and lines ... */
    for (size_t i = 0; i < c->npy; i++) {
        const void *file, *name;
        int line;
        pa_py_frame_info(c->py[i].code, c->py[i].lasti, &file, &name, &line);
        w[nw + i] = smp_py_word(smp_str_py(file), smp_str_py(name), line, c->py[i].entry);
    }
    /* ... and its objects into the load map (consecutive frames are mostly in the same one). */
    uintptr_t lo = 1, hi = 0;
    for (size_t i = 0; i < c->nnat; i++) {
        if (c->nat[i] - 1 >= lo && c->nat[i] - 1 < hi) continue;
        pa_unwind_object_info info;
        if (pa_unwind_object(c->nat[i], &info)) lo = info.map_start, hi = info.map_end;
        smp_obj_note(c->nat[i]);
    }
    uint32_t id = (uint32_t)stk.n++;
    stk.s[id] = (smp_stack){.hash = h, .word = (uint32_t)stk.nw, .nwords = (uint32_t)nw};
    stk.nw += nw + c->npy;
    size_t j = h & (stk.idx.cap - 1);
    while (stk.idx.slot[j]) j = (j + 1) & (stk.idx.cap - 1);
    stk.idx.slot[j] = id + 1;
    return id;
}

/* ---- records of the live samples, by address ---- */

typedef struct smp_rec {
    uintptr_t addr;
    uint64_t size, weight, seq;
    uint32_t stack;
    uint8_t large; /* a passthrough block: counted in smp_filter */
} smp_rec;
static struct {
    smp_rec *r;
    size_t n, cap;
    smp_index idx;
} recs;

/* A moment whose live samples are kept: the records live then are those live now with seq <= seq,
 * and those freed since, copied to kept. */
typedef struct smp_kept {
    uint32_t stack;
    uint64_t size, weight;
} smp_kept;
typedef struct smp_mark {
    bool set;
    uint64_t seq;
    uint32_t t_ms;
    smp_kept *kept;
    size_t nkept, cap;
} smp_mark;
static smp_mark mark_peak, mark_exit;
static uint64_t smp_seq;                 /* samples recorded, ever: each record's seq */
static int64_t smp_live_est, smp_peak_est; /* weights of the live records: now, at the peak */
static uint64_t smp_dropped;             /* samples not recorded: no room, or a passthrough block without the mark */
static uint32_t smp_exit_source;         /* 1: the interpreter began to finalize */

static uint64_t smp_rec_key(uint32_t i) { return smp_hash(recs.r[i].addr); }

static uint32_t smp_now_ms(void) { return pa_clock_ms() - smp_start_ms; }

static void smp_mark_set(smp_mark *m, uint64_t seq, uint32_t t_ms) {
    m->set = true;
    m->seq = seq;
    m->t_ms = t_ms;
    m->nkept = 0;
}

/* Before any record changes: has a Python interpreter begun to finalize? */
static void smp_moments(void) {
    if (!mark_exit.set && pa_py_finalizing()) {
        smp_mark_set(&mark_exit, smp_seq, smp_now_ms());
        smp_exit_source = 1;
    }
}

static size_t smp_filter_slot(uintptr_t p) { return (p >> 4) & (PA_SAMPLE_FILTER - 1); }

static void smp_record(void *p, size_t n, const smp_cap *c, bool large) {
    smp_moments();
    uint32_t st = smp_stack_intern(c);
    if (st == UINT32_MAX || !smp_grow((void **)&recs.r, &recs.cap, sizeof *recs.r, recs.n + 1, 1024) ||
        !smp_index_fit(&recs.idx, recs.n + 1, smp_rec_key)) {
        smp_dropped++;
        return;
    }
    uint64_t w = smp_weight(n);
    uint32_t id = (uint32_t)recs.n++;
    __atomic_store_n(&smp_seq, smp_seq + 1, __ATOMIC_RELAXED);
    recs.r[id] = (smp_rec){(uintptr_t)p, n, w, smp_seq, st, large};
    size_t j = smp_rec_key(id) & (recs.idx.cap - 1);
    while (recs.idx.slot[j]) j = (j + 1) & (recs.idx.cap - 1);
    recs.idx.slot[j] = id + 1;
    smp_sum_add(&stk.s[st].all, n, w);
    if (large) atomic_fetch_add_explicit(&pa_sample_filter[smp_filter_slot((uintptr_t)p)], 1, memory_order_relaxed);
    smp_live_est += (int64_t)w;
    if (smp_live_est > smp_peak_est) {
        smp_peak_est = smp_live_est;
        smp_mark_set(&mark_peak, smp_seq, smp_now_ms());
    }
}

static void smp_keep(smp_mark *m, const smp_rec *r) {
    if (!m->set || r->seq > m->seq) return;
    if (!smp_grow((void **)&m->kept, &m->cap, sizeof *m->kept, m->nkept + 1, 1024)) {
        smp_dropped++;
        return;
    }
    m->kept[m->nkept++] = (smp_kept){r->stack, r->size, r->weight};
}

/* The record of the block at p goes (if it has one). */
static void smp_retire(uintptr_t p) {
    smp_moments();
    if (!recs.idx.cap) return;
    size_t mask = recs.idx.cap - 1, j = smp_hash(p) & mask;
    for (; recs.idx.slot[j]; j = (j + 1) & mask)
        if (recs.r[recs.idx.slot[j] - 1].addr == p) break;
    if (!recs.idx.slot[j]) return;
    uint32_t id = recs.idx.slot[j] - 1;
    smp_rec *r = &recs.r[id];
    smp_keep(&mark_peak, r);
    smp_keep(&mark_exit, r);
    smp_live_est -= (int64_t)r->weight;
    if (r->large) atomic_fetch_sub_explicit(&pa_sample_filter[smp_filter_slot(p)], 1, memory_order_relaxed);
    /* Delete slot j, shifting back the entries after it that probed past it. */
    for (size_t k = (j + 1) & mask; recs.idx.slot[k]; k = (k + 1) & mask) {
        size_t home = smp_rec_key(recs.idx.slot[k] - 1) & mask;
        if (((k - home) & mask) >= ((k - j) & mask)) {
            recs.idx.slot[j] = recs.idx.slot[k];
            j = k;
        }
    }
    recs.idx.slot[j] = 0;
    /* The last record moves into the hole. */
    uint32_t last = (uint32_t)--recs.n;
    if (id != last) {
        recs.r[id] = recs.r[last];
        size_t k = smp_rec_key(id) & mask;
        while (recs.idx.slot[k] != last + 1) k = (k + 1) & mask;
        recs.idx.slot[k] = id + 1;
    }
}

/* ---- the sampled paths ---- */

static inline __attribute__((always_inline)) void smp_capture(smp_cap *c, uintptr_t keep_from) {
    c->nnat = pa_unwind(c->nat, SMP_NATIVE + 8, keep_from);
    if (c->nnat > SMP_NATIVE) c->nnat = SMP_NATIVE;
    c->npy = pa_py_capture(c->py, SMP_PY);
}

void *pa_malloc_sampled(pa_heap *h, size_t n) {
    smp_redraw(h, n);
    if (!smp_ready || smp_busy) return pa_malloc_counted(h, n);
    smp_busy = 1;
    smp_cap c;
    smp_capture(&c, (uintptr_t)__builtin_return_address(0));
    pthread_mutex_lock(&sample_lock);
    void *p = pa_malloc_counted(&pa_sample_heap, n);
    if (p) smp_record(p, n, &c, pa_page_of(p) == NULL);
    pthread_mutex_unlock(&sample_lock);
    smp_busy = 0;
    return p;
}

void pa_sample_free_small(pa_page *pg, pa_block *b) {
    pthread_mutex_lock(&sample_lock);
    if (!pa_block_is_start(pg, (uintptr_t)b & PA_PAGE_MASK)) {
        pthread_mutex_unlock(&sample_lock);
        pa_free_invalid("free", b);
    }
    if (pa_block_looks_free(pg, b) &&
        (pa_block_list_contains(pg, pg->free, b) ||
         pa_block_list_contains(pg, atomic_load_explicit(&pg->thread_free, memory_order_acquire), b))) {
        pthread_mutex_unlock(&sample_lock);
        pa_fatal("free(): double free detected", b);
    }
    smp_retire((uintptr_t)b);
    pa_block_push(pg, b);
    pa_stat_free(pa_tls_heap, pg->cls);
    if (--pg->used == 0) pa_free_local_slow(&pa_sample_heap, pg);
    pthread_mutex_unlock(&sample_lock);
}

/* ---- the passthrough while sampling (internal.h decides which requests come here) ---- */

bool pa_sample_sys_due(pa_heap *h) {
    if (!pa_opt.sites) { /* a request of 2^62 bytes or more ran PA_CD_OFF out: it stays off */
        h->sys_cd = PA_CD_OFF;
        return false;
    }
    h->sys_cd = smp_draw(h, (double)pa_opt.sample_bytes);
    atomic_fetch_add_explicit(&pa_sample_fired, 1, memory_order_relaxed);
    return smp_ready && !smp_busy;
}

void pa_sample_sys_record(void *p, size_t n, uintptr_t keep_from) {
    if (!p) { /* a block free could not find the record of */
        pthread_mutex_lock(&sample_lock);
        smp_dropped++;
        pthread_mutex_unlock(&sample_lock);
        return;
    }
    smp_busy = 1;
    smp_cap c;
    smp_capture(&c, keep_from);
    pthread_mutex_lock(&sample_lock);
    smp_record(p, n, &c, true);
    pthread_mutex_unlock(&sample_lock);
    smp_busy = 0;
}

/* The record of passthrough block p, if it has one, goes: before glibc has the block back, since
 * another thread may be given it then. */
void pa_sample_sys_retire(void *p) {
    pthread_mutex_lock(&sample_lock);
    smp_retire((uintptr_t)p);
    pthread_mutex_unlock(&sample_lock);
}

/* ---- start-up and fork ---- */

static void smp_fork_prepare(void) { pthread_mutex_lock(&sample_lock); }
static void smp_fork_release(void) { pthread_mutex_unlock(&sample_lock); }
/* The child: only this thread runs; a heap whose thread was redrawing a countdown at the fork keeps
 * an odd sequence number, which readers would wait on: evened (its figure is off by that draw). */
static void smp_fork_child(void) {
    pthread_mutex_unlock(&sample_lock);
    pthread_mutex_lock(&pa_heaps_lock);
    for (pa_heap *h = pa_heap_first(); h; h = h->next_heap) {
        uint32_t s = atomic_load_explicit(&h->smp.seq, memory_order_relaxed);
        if (s & 1) atomic_store_explicit(&h->smp.seq, s + 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&pa_heaps_lock);
}

void pa_sample_start(void) {
    if (!pa_opt.sites || smp_ready) return;
    smp_start_ms = pa_clock_ms();
    for (size_t n = 0; n < PA_NDIRECT; n++) smp_weights[n] = smp_weight_of(n);
    pa_unwind_init();
    pa_py_init();
    smp_str_intern("", 0); /* id 0: unknown */
    /* After init.c's: fork's prepare handlers run in reverse order, so sample_lock is taken
     * before the pool lock, as the sampler takes them. */
    pthread_atfork(smp_fork_prepare, smp_fork_release, smp_fork_child);
    pa_sample_on = true;
    pa_sample_bits = PA_SAMPLE_BITS;
    smp_ready = true;
}

/* ---- the report's data, at exit ---- */

static void sw_u64(pa_writer *w, uint64_t v) {
    char d[24];
    pa_w_mem(w, " ", 1);
    pa_w_mem(w, d, pa_fmt_u64(d, v));
}

static void sw_hex(pa_writer *w, uint64_t v) {
    char d[24];
    pa_w_mem(w, " ", 1);
    pa_w_mem(w, d, pa_fmt_hex(d, v));
}

/* Text as one field: bytes below '!', '%' and above '~' as %XX. */
static void sw_text(pa_writer *w, const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    pa_w_mem(w, " ", 1);
    if (n == 0) pa_w_mem(w, "%", 1); /* an empty field is "%" alone */
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c <= ' ' || c == '%' || c > '~') {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            pa_w_mem(w, e, 3);
        } else {
            pa_w_mem(w, s + i, 1);
        }
    }
}

static void smp_tally(const smp_mark *m, bool exit) {
    for (size_t i = 0; i < recs.n; i++) {
        const smp_rec *r = &recs.r[i];
        if (m->set && r->seq > m->seq) continue;
        smp_sum_add(exit ? &stk.s[r->stack].exit : &stk.s[r->stack].peak, r->size, r->weight);
    }
    for (size_t i = 0; i < m->nkept; i++) {
        const smp_kept *k = &m->kept[i];
        smp_sum_add(exit ? &stk.s[k->stack].exit : &stk.s[k->stack].peak, k->size, k->weight);
    }
}

static void sw_sum(pa_writer *w, const smp_sum *s) {
    sw_u64(w, s->n);
    sw_u64(w, (uint64_t)(s->bytes + 0.5));
    sw_u64(w, (uint64_t)(s->blocks + 0.5));
    sw_u64(w, (uint64_t)(s->var + 0.5));
}

/* The file the report is made from (format: tools/pyalloc_sites.py, "The library's data"). */
void pa_sample_write(void) {
    if (!smp_ready) return;
    char path[sizeof pa_opt.sites_file + 32];
    if (!pa_fmt_path(path, sizeof path, pa_opt.sites_file[0] ? pa_opt.sites_file : "pyalloc-sites.%p", "")) {
        pa_warn("PYALLOC_SITES_FILE is too long; the sites are not written");
        return;
    }
    int saved = errno;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        const char *parts[] = {"cannot open ", path, "; the sites are not written"};
        pa_warn_parts(parts, sizeof parts / sizeof parts[0]);
        errno = saved;
        return;
    }
    char exe[1024];
    ssize_t exe_len = readlink("/proc/self/exe", exe, sizeof exe);
    pthread_mutex_lock(&sample_lock);
    smp_moments();
    uint32_t now = smp_now_ms();
    for (size_t i = 0; i < stk.n; i++) stk.s[i].peak = stk.s[i].exit = (smp_sum){0, 0, 0, 0};
    if (mark_peak.set) smp_tally(&mark_peak, false);
    smp_tally(&mark_exit, true);
    pa_writer w = {.fd = fd};
    pa_w_str(&w, "pyalloc-sites 1\nversion");
    sw_text(&w, PA_VERSION_STRING, strlen(PA_VERSION_STRING));
    pa_w_str(&w, "\npid");
    sw_u64(&w, (uint64_t)getpid());
    pa_w_str(&w, "\nsample_bytes");
    sw_u64(&w, pa_opt.sample_bytes);
    pa_w_str(&w, "\nsamples");
    sw_u64(&w, smp_seq);
    sw_u64(&w, smp_dropped);
    uint64_t pyver;
    int pys = pa_py_status(&pyver);
    pa_w_str(&w, "\npython");
    pa_w_str(&w, pys == PA_PY_ON ? " 3.11" : pys == PA_PY_OTHER ? " other" : " none");
    sw_u64(&w, pyver);
    pa_w_str(&w, "\npeak");
    sw_u64(&w, mark_peak.set);
    sw_u64(&w, mark_peak.t_ms);
    pa_w_str(&w, " samples");
    pa_w_str(&w, "\nexit");
    sw_u64(&w, mark_exit.set ? mark_exit.t_ms : now);
    pa_w_str(&w, smp_exit_source ? " python-finalize" : " exit");
    pa_w_str(&w, "\n");
    for (size_t i = 0; i < objs.n; i++) {
        const smp_obj *o = &objs.o[i];
        pa_w_str(&w, "object");
        sw_u64(&w, i);
        sw_hex(&w, o->map_start);
        sw_hex(&w, o->map_end);
        sw_hex(&w, o->l_addr);
        char bid[2 * sizeof o->build_id + 1];
        for (unsigned k = 0; k < o->build_id_len; k++) {
            bid[2 * k] = "0123456789abcdef"[o->build_id[k] >> 4];
            bid[2 * k + 1] = "0123456789abcdef"[o->build_id[k] & 15];
        }
        sw_text(&w, bid, 2u * o->build_id_len);
        const smp_str *s = &strs.s[o->name];
        if (s->len) sw_text(&w, strs.buf + s->off, s->len);
        else if (o->program && exe_len > 0) sw_text(&w, exe, (size_t)exe_len);
        else sw_text(&w, "", 0);
        pa_w_str(&w, "\n");
    }
    for (size_t i = 0; i < strs.n; i++) {
        pa_w_str(&w, "string");
        sw_u64(&w, i);
        sw_text(&w, strs.buf + strs.s[i].off, strs.s[i].len);
        pa_w_str(&w, "\n");
    }
    for (size_t i = 0; i < stk.n; i++) {
        const smp_stack *s = &stk.s[i];
        const uint64_t *wd = &stk.words[s->word];
        pa_w_str(&w, "stack");
        sw_u64(&w, i);
        sw_sum(&w, &s->all);
        sw_sum(&w, &s->peak);
        sw_sum(&w, &s->exit);
        uint64_t nnat = wd[0] & 0xffffffffu, npy = wd[0] >> 32;
        sw_u64(&w, nnat);
        for (uint64_t k = 0; k < nnat; k++) sw_hex(&w, wd[1 + k]);
        sw_u64(&w, npy);
        for (uint64_t k = 0; k < npy; k++) {
            uint64_t pw = wd[s->nwords + k];
            sw_u64(&w, pw >> 44);
            sw_u64(&w, (pw >> 24) & 0xfffff);
            sw_u64(&w, (pw >> 1) & 0x7fffff);
            sw_u64(&w, pw & 1);
        }
        pa_w_str(&w, "\n");
    }
    pa_w_str(&w, "end\n");
    pthread_mutex_unlock(&sample_lock);
    pa_w_flush(&w);
    if (w.failed) pa_warn("the sites could not be written in full");
    close(fd);
    errno = saved;
}

__attribute__((destructor)) static void smp_destructor(void) { pa_sample_write(); }

#else /* !PA_STATS: the countdowns are the counters; a library built without them samples nothing */
void pa_sample_heap_init(pa_heap *h) { (void)h; }
uint64_t pa_heap_allocs(const pa_heap *h, size_t n) { return (void)h, (void)n, 0; }
void *pa_malloc_sampled(pa_heap *h, size_t n) { return pa_malloc_counted(h, n); }
void pa_sample_free_small(pa_page *pg, pa_block *b) { (void)pg, pa_free_invalid("free", b); } /* no such page */
bool pa_sample_sys_due(pa_heap *h) { return (void)h, false; }
void pa_sample_sys_record(void *p, size_t n, uintptr_t keep_from) { (void)p, (void)n, (void)keep_from; }
void pa_sample_sys_retire(void *p) { (void)p; }
void pa_sample_start(void) {}
#endif
