/* SPDX-License-Identifier: MIT
 * libFuzzer target: the input is a program of allocator operations on a table of live blocks, run
 * through the pa_* API (pyalloc_core; the sanitizer's own malloc stays in place and serves what
 * pyalloc passes through).
 *
 * Input: a sequence of 4-byte instructions [op] [slot] [size-lo] [size-hi] (a short tail is ignored).
 *   op % 10:  0 malloc   1 calloc   2 realloc   3 free   4 posix_memalign   5 aligned_alloc/memalign
 *             6 malloc_usable_size check   7 free on the helper thread   8 malloc on the helper thread
 *             9 free every live block
 *   slot % SLOTS picks the table entry. An allocation into an occupied slot frees the old block first
 *   (after verifying it); free/realloc of an empty slot is free(NULL)/realloc(NULL, n).
 *   size: hi < 0xF8 -> (hi << 8 | lo) % 1025 (0..1024: every class, the 512/513 boundary and the
 *   passthrough); 0xF8..0xFF -> ((hi & 7) << 8 | lo) * 16 (up to 32 KiB: pyalloc treats every size
 *   over 512 alike, and blocks the sanitizer's malloc must mmap would only slow the fuzzer down).
 *   For the aligned ops, the alignment is 1 << (op / 10 % 13) (1..4096; posix_memalign raises it to
 *   sizeof(void *)).
 *   op >= 250 (instead of the above): a write that damages a free list (issue 15), in a forked child:
 *   the slot's pool block is freed (by this thread for an even op, by another thread for an odd
 *   one) and the program writes a value made from size-lo/hi into its first word, then mallocs
 *   blocks of that size until the damaged link must have been followed. The child must die of
 *   SIGABRT with pyalloc's "heap corruption: free list of page" line (or, for a block of a page the
 *   helper thread owns, exit cleanly: the helper does not run in the child, so that list is never
 *   followed), never crash otherwise, and never hand out a block that overlaps a live one (every
 *   live block is verified).
 *
 * Every block is filled with a pattern derived from (slot, generation, size) right after it is
 * allocated and verified in full before free and realloc; after realloc the common prefix must have
 * survived, then the block is refilled. Each allocation is checked for: non-NULL, the alignment the
 * mode promises (t_required_align: 16 for >= 16-byte requests by default, 8 with PYALLOC_ALIGN=8) and
 * the requested alignment, usable size >= request, exactly the class size for a pool block, and
 * pa_is_small() true for 1..512-byte blocks with alignment <= 16 and false above 512. calloc blocks
 * must read as zero. A failed check aborts (libFuzzer records the input as a crash).
 * The mode comes from PYALLOC_ALIGN in the environment, read by pyalloc at its start-up: run the
 * target once without it and once with PYALLOC_ALIGN=8. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pa_test.h"
#include "pyalloc.h"

enum { SLOTS = 64 };

/* Found by this target and fixed in src/alloc.c: an aligned request of 0 bytes with an alignment of
 * 16 (posix_memalign(&p, 16, 0), aligned_alloc(16, 0), memalign(16, 0)) got a block of the 8-byte
 * class, only 8-aligned. Checked like every other request now; the api test has it too. */

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_ops: check failed: " __VA_ARGS__);                               \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int mode; /* pyalloc's alignment mode: 16 or 8 */

/* A live block: its contents are pattern(slot, gen, i) for i < size. */
struct slot {
    unsigned char *p;
    size_t size, align;
    uint64_t gen;
    int zero;
};
static struct slot table[SLOTS];
static uint64_t generation;

static unsigned char pattern(size_t s, uint64_t gen, size_t i)
{
    return (unsigned char)(s * 131u + gen * 7u + i * 13u + (i >> 8) * 29u + 1u);
}

static void fill(size_t s)
{
    struct slot *b = &table[s];
    for (size_t i = 0; i < b->size; i++)
        b->p[i] = pattern(s, b->gen, i);
}

/* The first n bytes of p hold slot s's pattern (p may be the block realloc just moved). */
static void verify(size_t s, const unsigned char *p, size_t n, const char *when)
{
    const struct slot *b = &table[s];
    for (size_t i = 0; i < n; i++)
        CHECK(p[i] == pattern(s, b->gen, i), "slot %zu (%zu bytes, align %zu) %s: byte %zu is %#x, not %#x",
              s, b->size, b->align, when, i, p[i], pattern(s, b->gen, i));
}

/* A second thread that mallocs and frees on request, so blocks cross threads both ways. */
enum { H_NONE, H_MALLOC, H_FREE };
static pthread_mutex_t h_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t h_cond = PTHREAD_COND_INITIALIZER;
static int h_op;
static void *h_ptr;
static size_t h_size;
static int h_started;

static void *helper_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&h_lock);
    for (;;) {
        while (h_op == H_NONE)
            pthread_cond_wait(&h_cond, &h_lock);
        if (h_op == H_MALLOC)
            h_ptr = pa_malloc(h_size);
        else
            pa_free(h_ptr);
        h_op = H_NONE;
        pthread_cond_broadcast(&h_cond);
    }
    return NULL;
}

/* Runs op on the helper thread and waits for it; returns the block for H_MALLOC. */
static void *helper_run(int op, void *p, size_t n)
{
    pthread_mutex_lock(&h_lock);
    if (!h_started) {
        pthread_t t;
        CHECK(pthread_create(&t, NULL, helper_main, NULL) == 0, "cannot start the helper thread");
        pthread_detach(t);
        h_started = 1;
    }
    h_op = op;
    h_ptr = p;
    h_size = n;
    pthread_cond_broadcast(&h_cond);
    while (h_op != H_NONE)
        pthread_cond_wait(&h_cond, &h_lock);
    void *r = h_ptr;
    pthread_mutex_unlock(&h_lock);
    return r;
}

/* Checks a fresh block of n bytes asked with alignment align (0: plain malloc). */
static void check_block(const unsigned char *p, size_t n, size_t align, const char *fn)
{
    CHECK(p != NULL, "%s(%zu) returned NULL", fn, n);
    size_t need = t_required_align(n, mode);
    CHECK((uintptr_t)p % need == 0, "%s(%zu) = %p not %zu-aligned (mode %d)", fn, n, (void *)p, need, mode);
    if (align)
        CHECK((uintptr_t)p % align == 0, "%s(%zu, align %zu) = %p misaligned", fn, n, align, (void *)p);
    size_t usable = pa_malloc_usable_size((void *)p);
    CHECK(usable >= n, "%s(%zu): usable size %zu", fn, n, usable);
    int small = pa_is_small(p);
    if (n > PA_SMALL_MAX)
        CHECK(!small, "%s(%zu): a block over %d bytes in the pools", fn, n, PA_SMALL_MAX);
    else if (align <= 16)
        CHECK(small, "%s(%zu, align %zu): not served from the pools", fn, n, align);
    if (small)
        CHECK(usable == t_class_size(align > 8 ? t_round_up(n ? n : 1, 16) : n, mode),
              "%s(%zu, align %zu): usable size %zu is not the class size", fn, n, align, usable);
}

static void release(size_t s)
{
    struct slot *b = &table[s];
    if (!b->p)
        return;
    verify(s, b->p, b->size, "before free");
    pa_free(b->p);
    b->p = NULL;
}

static void adopt(size_t s, unsigned char *p, size_t n, size_t align, int zero)
{
    struct slot *b = &table[s];
    b->p = p;
    b->size = n;
    b->gen = ++generation;
    b->align = align;
    b->zero = zero;
    if (zero) {
        uint64_t any = 0;
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            uint64_t v;
            memcpy(&v, p + i, 8);
            any |= v;
        }
        for (; i < n; i++)
            any |= p[i];
        if (any != 0)
            for (i = 0; i < n; i++)
                CHECK(p[i] == 0, "calloc'ed block of %zu bytes has byte %zu = %#x", n, i, p[i]);
    }
    fill(s);
}

static size_t decode_size(uint8_t lo, uint8_t hi)
{
    if (hi >= 0xF8)
        return ((size_t)(hi & 0x07) << 8 | lo) * 16; /* up to 32 KiB */
    return ((size_t)hi << 8 | lo) % 1025;
}

static void do_realloc(size_t s, size_t n)
{
    struct slot *b = &table[s];
    if (!b->p) {
        unsigned char *q = pa_realloc(NULL, n);
        check_block(q, n, 0, "realloc(NULL)");
        adopt(s, q, n, 0, 0);
        return;
    }
    verify(s, b->p, b->size, "before realloc");
    size_t old = b->size;
    unsigned char *q = pa_realloc(b->p, n);
    if (n == 0) { /* glibc's semantics, which pyalloc keeps: free, return NULL */
        CHECK(q == NULL, "realloc(p, 0) returned %p", (void *)q);
        b->p = NULL;
        return;
    }
    CHECK(q != NULL, "realloc(%zu -> %zu) returned NULL", old, n);
    verify(s, q, old < n ? old : n, "after realloc");
    size_t need = t_required_align(n, mode);
    CHECK((uintptr_t)q % need == 0, "realloc(%zu -> %zu) = %p not %zu-aligned", old, n, (void *)q, need);
    CHECK(pa_malloc_usable_size(q) >= n, "realloc(%zu -> %zu): usable size %zu", old, n,
          pa_malloc_usable_size(q));
    if (n > PA_SMALL_MAX)
        CHECK(!pa_is_small(q), "realloc(%zu -> %zu) left the block in the pools", old, n);
    b->p = NULL;
    adopt(s, q, n, 0, 0);
}

static void do_aligned(size_t s, size_t n, size_t align, int posix, int variant)
{
    void *q = NULL;
    release(s);
    if (posix) {
        if (align < sizeof(void *))
            align = sizeof(void *);
        int rc = pa_posix_memalign(&q, align, n);
        CHECK(rc == 0, "posix_memalign(%zu, %zu) = %d", align, n, rc);
    } else {
        q = variant ? pa_memalign(align, n) : pa_aligned_alloc(align, n);
    }
    check_block(q, n, align, posix ? "posix_memalign" : variant ? "memalign" : "aligned_alloc");
    adopt(s, q, n, align, 0);
}

static void *free_on_thread(void *p)
{
    pa_free(p);
    return NULL;
}

/* The child of a corruption op: see the header. Exits 0 only if nothing followed the damaged link
 * and every block is intact; aborts (through pyalloc) when the damage is met, as it must be. */
static void corrupt_child(size_t s, int remote, uint64_t value)
{
    struct slot *b = &table[s];
    size_t n = b->size;
    unsigned char *victim = b->p;
    b->p = NULL;
    if (remote) {
        pthread_t t;
        if (pthread_create(&t, NULL, free_on_thread, victim) != 0 || pthread_join(t, NULL) != 0)
            _exit(0); /* no thread to be had: nothing was damaged */
    } else {
        pa_free(victim);
    }
    memcpy(victim, &value, sizeof value); /* the program's write into a freed block */
    enum { HELD = 2 * 32768 / 8 }; /* more than two pages of the smallest class */
    static unsigned char *held[HELD];
    for (size_t i = 0; i < HELD; i++) {
        held[i] = pa_malloc(n);
        CHECK(held[i] != NULL, "malloc(%zu) after the damage returned NULL", n);
        memset(held[i], 0xA5, n);
        if (i % 512 == 511 || i == HELD - 1)
            for (size_t t = 0; t < SLOTS; t++)
                if (table[t].p) verify(t, table[t].p, table[t].size, "after blocks were handed out over it");
    }
    _exit(0);
}

static void do_corrupt(size_t s, int remote, uint64_t value)
{
    struct slot *b = &table[s];
    if (!b->p || b->size == 0 || !pa_is_small(b->p) || b->align > 16)
        return;
    for (size_t t = 0; t < SLOTS; t++)
        if (table[t].p) verify(t, table[t].p, table[t].size, "before a corruption op");
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        signal(SIGABRT, SIG_DFL);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        corrupt_child(s, remote, value);
    }
    close(fds[1]);
    char err[4096];
    size_t len = 0;
    for (ssize_t r; len < sizeof err - 1 && ((r = read(fds[0], err + len, sizeof err - 1 - len)) > 0 ||
                                             (r < 0 && errno == EINTR));)
        if (r > 0) len += (size_t)r;
    err[len] = 0;
    close(fds[0]);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
    /* Caught, or never followed: a block of a page the helper thread owns goes onto that page's
     * thread_free list, which nobody collects in the child (the helper does not exist there); the
     * child, having verified every live block, exits cleanly. tests/misuse asserts that damage on
     * the pages of a running owner is always met. Anything else is a failure. */
    int caught = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT &&
                 strstr(err, "pyalloc: heap corruption: free list of page") != NULL;
    int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0 && err[0] == 0;
    CHECK(caught || clean, "a write of %#llx into a freed %zu-byte block (%s free): status %#x, stderr [%s]",
          (unsigned long long)value, b->size, remote ? "remote" : "local", status, err);
}

static void release_all(void)
{
    for (size_t s = 0; s < SLOTS; s++)
        release(s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    mode = pa_alignment_mode();
    CHECK(mode == t_expected_mode(), "pyalloc runs in mode %d, PYALLOC_ALIGN asks for %d", mode,
          t_expected_mode());
    fprintf(stderr, "fuzz_ops: pyalloc alignment mode %d\n", mode);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    for (size_t at = 0; at + 4 <= len; at += 4) {
        uint8_t op = data[at], lo = data[at + 2], hi = data[at + 3];
        size_t s = data[at + 1] % SLOTS;
        size_t n = decode_size(lo, hi);
        size_t align = (size_t)1 << (op / 10 % 13);
        unsigned char *q;
        if (op >= 250) {
            uint64_t v = (uint64_t)(hi << 8 | lo) * 0x9e3779b97f4a7c15ull; /* any 64-bit word */
            do_corrupt(s, op & 1, v ^ (v >> 29));
            continue;
        }
        switch (op % 10) {
        case 0:
            release(s);
            q = pa_malloc(n);
            check_block(q, n, 0, "malloc");
            adopt(s, q, n, 0, 0);
            break;
        case 1: {
            size_t count = 1 + lo % 16, each = n / count;
            release(s);
            q = pa_calloc(count, each);
            check_block(q, count * each, 0, "calloc");
            adopt(s, q, count * each, 0, 1);
            break;
        }
        case 2:
            do_realloc(s, n);
            break;
        case 3:
            release(s);
            if (hi & 1)
                pa_free(NULL);
            break;
        case 4:
            do_aligned(s, n, align, 1, 0);
            break;
        case 5:
            do_aligned(s, n, align, 0, lo & 1);
            break;
        case 6:
            if (table[s].p) {
                verify(s, table[s].p, table[s].size, "usable-size check");
                CHECK(pa_malloc_usable_size(table[s].p) >= table[s].size, "usable size shrank");
            }
            break;
        case 7: /* a remote free: the block's owner is this thread (or the helper) */
            if (table[s].p) {
                verify(s, table[s].p, table[s].size, "before remote free");
                helper_run(H_FREE, table[s].p, 0);
                table[s].p = NULL;
            }
            break;
        case 8: /* a block owned by the helper thread, to be freed or realloc'ed here later */
            release(s);
            q = helper_run(H_MALLOC, NULL, n);
            check_block(q, n, 0, "malloc on the helper thread");
            adopt(s, q, n, 0, 0);
            break;
        case 9:
            release_all();
            break;
        }
    }
    release_all();
    return 0;
}
