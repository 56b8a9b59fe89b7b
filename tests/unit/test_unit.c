/* SPDX-License-Identifier: MIT
 * White-box tests of the core: the block-start arithmetic for every class and offset, the size-class
 * table in both modes, a page's carve / free / collect cycle, the pool's purge limit, option parsing
 * and the allocation-free number formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "pyalloc.h"

/* The rule types.h states: o is a valid block start iff o % bsize == 0 and o / bsize < carved; the
 * whole-address test (malloc's check of a free list's head) also rejects every address outside the
 * page: each multiple of bsize from two pages below to two pages above it, the end mark, and a
 * million random addresses (a false pass is about 1 in 2^42). */
static void test_block_start_every_class_and_offset(void **state) {
    (void)state;
    pa_page pg;
    const uintptr_t start = (uintptr_t)0x7f1234560000; /* any page-aligned address */
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (uint32_t cls = 0; cls < PA_NCLASS; cls++) {
        uint32_t bsize = pa_class_size(cls), nblocks = pa_class_blocks(cls);
        memset(&pg, 0, sizeof pg);
        pg.magic = pa_block_magic(bsize);
        pg.start_magic = (uint64_t)start * pg.magic;
        uint64_t step = pg.magic * bsize;
        assert_true(step > 0 && step <= bsize);
        uint32_t ks[] = {0, 1, 2, nblocks / 2, nblocks - 1, nblocks};
        for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
            uint32_t k = ks[i];
            pa_store_relaxed(&pg.thresh, pa_block_thresh(pg.magic, bsize, k));
            for (uint32_t o = 0; o < PA_PAGE_SIZE; o++) {
                bool want = o % bsize == 0 && o / bsize < k;
                if (pa_block_is_start(&pg, o) != want) fail_msg("class %u k %u offset %u: got %d", bsize, k, o, !want);
                if (pa_block_in_page(&pg, (pa_block *)(start + o)) != want)
                    fail_msg("class %u k %u address offset %u: got %d", bsize, k, o, !want);
            }
            for (int64_t o = -2 * (int64_t)PA_PAGE_SIZE; o < 3 * (int64_t)PA_PAGE_SIZE; o += bsize) {
                if (o >= 0 && o < (int64_t)PA_PAGE_SIZE) continue;
                if (pa_block_in_page(&pg, (pa_block *)(start + o)))
                    fail_msg("class %u k %u: address offset %lld outside the page passes", bsize, k, (long long)o);
            }
            if (pa_block_in_page(&pg, (pa_block *)(start | 1))) fail_msg("class %u: the end mark passes", bsize);
            for (int r = 0; r < (k == nblocks ? 1000000 : 0); r++) {
                rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
                uintptr_t a = (uintptr_t)rng;
                if (a - start < PA_PAGE_SIZE) continue;
                if (pa_block_in_page(&pg, (pa_block *)a)) fail_msg("class %u: random address %#lx passes", bsize, (unsigned long)a);
            }
        }
    }
}

static void test_size_classes_follow_the_mode(void **state) {
    (void)state;
    int mode = pa_alignment_mode();
    const char *env = getenv("PYALLOC_ALIGN");
    assert_int_equal(mode, env && strcmp(env, "8") == 0 ? 8 : 16);
    for (uint32_t n = 0; n <= PA_SMALL; n++) {
        uint32_t size = pa_class_size(pa_class_for(n));
        uint32_t want = n <= 8 ? 8 : (mode == 16 ? (n + 15) & ~15u : (n + 7) & ~7u);
        assert_int_equal(size, want);
        void *p = pa_malloc(n);
        assert_non_null(p);
        assert_true(pa_is_small(p));
        assert_int_equal(pa_malloc_usable_size(p), want);
        uintptr_t align = want >= 16 && mode == 16 ? 16 : 8;
        assert_int_equal((uintptr_t)p % align, 0);
        pa_free(p);
    }
}

static uint32_t list_length(const pa_page *pg, pa_block *b) {
    uint32_t n = 0;
    while (!pa_list_is_end(b)) {
        n++;
        b = pa_block_next(pg, b);
    }
    return n;
}

static void test_page_carve_free_collect(void **state) {
    (void)state;
    assert_true(pa_ready());
    pa_page *pg = pa_pool_take();
    assert_non_null(pg);
    uint32_t cls = 5; /* 48 bytes: has tail slack */
    pa_page_init(pg, NULL, cls, 0x1234567890abcdefull);
    assert_true(pa_list_is_end(pg->free));
    uint32_t carved = 0;
    while (pa_page_extend(pg)) {
        uint32_t n = list_length(pg, pg->free);
        assert_true(n >= 1);
        carved += n;
        /* hand them all out, as malloc would */
        while (!pa_list_is_end(pg->free)) {
            pa_block *b = pg->free;
            assert_true(pa_block_is_start(pg, (uintptr_t)b & PA_PAGE_MASK));
            pa_block_pop(pg, b);
            assert_false(pa_block_looks_free(pg, b));
            pg->used++;
        }
    }
    assert_int_equal(carved, pa_class_blocks(cls));
    assert_int_equal(pg->used, carved);
    /* the tail slack is never a block start */
    assert_false(pa_block_is_start(pg, carved * 48));
    /* blocks pushed by "other threads" come back with the right count */
    uintptr_t start = pa_page_start(pg);
    for (uint32_t i = 0; i < 10; i++) {
        pa_block *b = (pa_block *)(start + i * 48);
        pa_block *head = atomic_load(&pg->thread_free);
        pa_block_set_next(pg, b, head ? head : pa_list_end(pg));
        atomic_store(&pg->thread_free, b);
        assert_true(pa_block_looks_free(pg, b));
    }
    assert_int_equal(pa_page_collect(pg), 10);
    assert_int_equal(pg->used, carved - 10);
    assert_int_equal(list_length(pg, pg->free), 10);
    assert_true(pa_block_list_contains(pg, pg->free, (pa_block *)(start + 9 * 48)));
    assert_false(pa_block_list_contains(pg, pg->free, (pa_block *)(start + 10 * 48)));
    atomic_store(&pg->heap, NULL);
    pa_pool_give(pg);
}

/* Take n pages and write them (so they are resident), then give them all back. */
static void pool_cycle(pa_page **pages, int n) {
    for (int i = 0; i < n; i++) {
        pages[i] = pa_pool_take();
        assert_non_null(pages[i]);
        memset((void *)pa_page_start(pages[i]), 0xab, PA_PAGE_SIZE);
    }
    for (int i = 0; i < n; i++) pa_pool_give(pages[i]);
}

static void test_pool_keeps_dirty_pages_bounded(void **state) {
    (void)state;
    assert_true(pa_ready());
    enum { N = 2000 };
    static pa_page *pages[N];
    pa_options saved = pa_opt;
    pa_pool_trim();

    /* A wave within the delay: every page stays resident for the next wave. */
    pa_opt.purge_delay = 3600000;
    pa_opt.dirty_min = 4 * N;
    pool_cycle(pages, N);
    assert_int_equal(pa_pool_dirty_pages(), N);
    pa_pool_tick();
    assert_int_equal(pa_pool_dirty_pages(), N);

    /* Beyond the hard limit the oldest go at once, down to half the limit. */
    pa_pool_trim();
    pa_opt.dirty_min = N / 4;
    pa_opt.dirty_ratio = 0;
    pool_cycle(pages, N);
    assert_true(pa_pool_dirty_pages() <= (size_t)N / 4);
    assert_true(pa_pool_dirty_pages() >= (size_t)N / 8);

    /* Pages that waited out the delay go back at the next tick, however few. */
    pa_pool_trim();
    pa_opt = saved;
    pa_opt.purge_delay = 20;
    pool_cycle(pages, 10);
    assert_int_equal(pa_pool_dirty_pages(), 10);
    struct timespec nap = {0, 60 * 1000000L};
    nanosleep(&nap, NULL);
    pa_pool_tick();
    assert_int_equal(pa_pool_dirty_pages(), 0);

    /* purged pages read back as zero when taken again */
    pa_opt = saved;
    pool_cycle(pages, 10);
    assert_int_equal(pa_pool_trim(), 10);
    assert_int_equal(pa_pool_dirty_pages(), 0);
    pa_page *pg = pa_pool_take();
    const unsigned char *mem = (const unsigned char *)pa_page_start(pg);
    for (size_t i = 0; i < PA_PAGE_SIZE; i++) assert_int_equal(mem[i], 0);
    pa_pool_give(pg);
    pa_pool_trim();
}

static void test_getenv_and_formatting(void **state) {
    (void)state;
    setenv("PYALLOC_TEST_OPTION", "value=1", 1);
    assert_string_equal(pa_getenv("PYALLOC_TEST_OPTION"), "value=1");
    assert_null(pa_getenv("PYALLOC_TEST_OPTIO"));
    assert_null(pa_getenv("PYALLOC_NOT_SET_ANYWHERE"));
    char buf[32];
    buf[pa_fmt_u64(buf, 0)] = 0;
    assert_string_equal(buf, "0");
    buf[pa_fmt_u64(buf, 18446744073709551615ull)] = 0;
    assert_string_equal(buf, "18446744073709551615");
    buf[pa_fmt_hex(buf, 0x7f00dead0010ull)] = 0;
    assert_string_equal(buf, "0x7f00dead0010");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_start_every_class_and_offset),
        cmocka_unit_test(test_size_classes_follow_the_mode),
        cmocka_unit_test(test_page_carve_free_collect),
        cmocka_unit_test(test_pool_keeps_dirty_pages_bounded),
        cmocka_unit_test(test_getenv_and_formatting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
