/* SPDX-License-Identifier: MIT
 * White-box tests of the meshing decision (src/mesh.c, pa_mesh_plan_lanes): which 4 KiB regions
 * share a frame, which runs form, what the VMA budget allows. The rule under every plan: regions
 * with content on one frame never overlap, and each frame's occupancy is the union of theirs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct {
    pa_mesh_region *r;
    uint32_t *plan, *withc;
    uint64_t *occ;
    uint16_t *cnt;
    size_t n;
    pa_mesh_plan P;
} fixture;

static void fx_init(fixture *f, size_t n, int64_t budget) {
    memset(f, 0, sizeof *f);
    f->n = n;
    f->r = calloc(n, sizeof *f->r);
    f->plan = calloc(n, sizeof *f->plan);
    f->withc = calloc(n + 64, sizeof *f->withc);
    f->occ = calloc((n + 64) * PA_MESH_RWORDS, sizeof *f->occ);
    f->cnt = calloc(n + 64, sizeof *f->cnt);
    assert_true(f->r && f->plan && f->withc && f->occ && f->cnt);
    for (size_t i = 0; i < n; i++) f->r[i].page = (uint32_t)(i / 8), f->r[i].r = (uint8_t)(i % 8);
    f->P = (pa_mesh_plan){.cand = f->r, .plan = f->plan, .withc = f->withc, .occ = f->occ, .cnt = f->cnt,
                          .n = n, .budget = budget};
}

static void fx_free(fixture *f) {
    free(f->r);
    free(f->plan);
    free(f->withc);
    free(f->occ);
    free(f->cnt);
}

/* Words [a, b) of region i are live. */
static void live(fixture *f, size_t i, unsigned a, unsigned b) {
    for (unsigned w = a; w < b; w++) f->r[i].bits[w / 64] |= 1ull << (w % 64);
}

static bool empty(const uint64_t *bits) {
    for (int w = 0; w < PA_MESH_RWORDS; w++)
        if (bits[w]) return false;
    return true;
}

/* The invariants of any plan. */
static void check_plan(fixture *f) {
    pa_mesh_plan *P = &f->P;
    uint64_t *uni = calloc((P->top + 1) * PA_MESH_RWORDS, sizeof *uni);
    uint16_t *cnt = calloc(P->top + 1, sizeof *cnt);
    assert_true(uni && cnt);
    for (size_t i = 0; i < f->n; i++) {
        if (!f->plan[i] || empty(f->r[i].bits)) continue;
        size_t fr = f->plan[i] - 1;
        assert_true(fr < P->top);
        for (int w = 0; w < PA_MESH_RWORDS; w++) {
            if (uni[fr * PA_MESH_RWORDS + w] & f->r[i].bits[w])
                fail_msg("region %zu overlaps another on frame %zu", i, fr);
            uni[fr * PA_MESH_RWORDS + w] |= f->r[i].bits[w];
        }
        cnt[fr]++;
    }
    for (size_t fr = 0; fr < P->top; fr++) {
        assert_int_equal(cnt[fr], f->cnt[fr]);
        assert_memory_equal(&uni[fr * PA_MESH_RWORDS], &f->occ[fr * PA_MESH_RWORDS], PA_MESH_RWORDS * 8);
    }
    assert_true(P->pieces <= P->budget);
    free(uni);
    free(cnt);
}

/* Two lone regions whose live words do not overlap share one frame; two that overlap do not. */
static void test_disjoint_share_overlapping_do_not(void **state) {
    (void)state;
    fixture f;
    fx_init(&f, 24, 1000);
    live(&f, 0, 0, 100);   /* page 0 */
    live(&f, 8, 100, 200); /* page 1: fits beside region 0 */
    live(&f, 16, 50, 150); /* page 2: overlaps both */
    pa_mesh_plan_lanes(&f.P);
    check_plan(&f);
    assert_int_equal(f.plan[0], f.plan[8]);
    assert_int_not_equal(f.plan[16], 0);
    assert_int_not_equal(f.plan[16], f.plan[0]);
    assert_int_equal(f.cnt[f.plan[0] - 1], 2);
    fx_free(&f);
}

/* Adjacent regions lay consecutive frames: one run, so one mapping, not one per region. */
static void test_adjacent_regions_form_one_run(void **state) {
    (void)state;
    fixture f;
    fx_init(&f, 8, 1000);
    for (size_t i = 0; i < 8; i++) {
        live(&f, i, 0, 64);
        f.r[i].adj = i + 1 < 8;
    }
    pa_mesh_plan_lanes(&f.P);
    check_plan(&f);
    for (size_t i = 1; i < 8; i++) assert_int_equal(f.plan[i], f.plan[i - 1] + 1);
    assert_int_equal(f.P.pieces, 2); /* the run, and the anonymous piece it splits off */
    fx_free(&f);
}

/* A second stretch that fits the frames of the first rides them: every frame then holds two
 * regions, for one more run. */
static void test_a_stretch_rides_frames_it_fits(void **state) {
    (void)state;
    fixture f;
    fx_init(&f, 24, 1000);
    for (size_t i = 0; i < 6; i++) {
        live(&f, i, 0, 40 + (unsigned)i);         /* page 0 */
        live(&f, 16 + i, 300, 340 + (unsigned)i); /* page 2, not adjacent to page 0 */
        f.r[i].adj = i + 1 < 6;
        f.r[16 + i].adj = i + 1 < 6;
    }
    pa_mesh_plan_lanes(&f.P);
    check_plan(&f);
    for (size_t i = 0; i < 6; i++) assert_int_equal(f.plan[16 + i], f.plan[i]);
    assert_int_equal(f.P.top, 6);
    assert_int_equal(f.P.pieces, 4);
    fx_free(&f);
}

/* Empty regions cost nothing: mapped along a run (no content, no ref), else left alone. */
static void test_holes(void **state) {
    (void)state;
    fixture f;
    fx_init(&f, 16, 1000);
    live(&f, 0, 0, 8);
    live(&f, 2, 0, 8);
    f.r[0].adj = f.r[1].adj = 1; /* 0, 1 (empty), 2 adjacent */
    pa_mesh_plan_lanes(&f.P);
    check_plan(&f);
    assert_int_equal(f.plan[1], f.plan[0] + 1);
    assert_int_equal(f.plan[2], f.plan[0] + 2);
    assert_int_equal(f.cnt[f.plan[1] - 1], 0);
    for (size_t i = 3; i < 16; i++) assert_int_equal(f.plan[i], 0);
    fx_free(&f);
}

/* No budget, no mapping: every region stays where it is. A small budget stops the plan there. */
static void test_budget(void **state) {
    (void)state;
    fixture f;
    fx_init(&f, 64, 0);
    for (size_t i = 0; i < 64; i += 8) live(&f, i, (unsigned)i, (unsigned)i + 8);
    pa_mesh_plan_lanes(&f.P);
    check_plan(&f);
    for (size_t i = 0; i < 64; i++) assert_int_equal(f.plan[i], 0);
    assert_int_equal(f.P.pieces, 0);
    fx_free(&f);
    fx_init(&f, 64, 4);
    for (size_t i = 0; i < 64; i += 8) live(&f, i, (unsigned)i, (unsigned)i + 8);
    pa_mesh_plan_lanes(&f.P);
    check_plan(&f);
    size_t placed = 0;
    for (size_t i = 0; i < 64; i++) placed += f.plan[i] != 0;
    assert_true(placed >= 2 && placed < 8); /* two runs of budget: lone regions ride the first frame */
    fx_free(&f);
}

/* Random regions, densities and adjacency: the invariants hold and the frames are fewer. */
static void test_random_plans(void **state) {
    (void)state;
    uint64_t rng = 12345;
    for (int round = 0; round < 40; round++) {
        size_t n = 64 + (size_t)(round * 37 % 500);
        fixture f;
        fx_init(&f, n, round % 5 == 0 ? 10 : 100000);
        size_t with = 0;
        for (size_t i = 0; i < n; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            unsigned blocks = (unsigned)(rng >> 60) % 6, size = 2 + (unsigned)(rng >> 33) % 30;
            for (unsigned k = 0; k < blocks; k++) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                unsigned a = (unsigned)(rng >> 40) % (512 - size);
                live(&f, i, a, a + size);
            }
            with += blocks != 0;
            f.r[i].adj = i + 1 < n && (rng >> 20) % 8 != 0;
        }
        pa_mesh_plan_lanes(&f.P);
        check_plan(&f);
        size_t frames = 0;
        for (size_t fr = 0; fr < f.P.top; fr++) frames += f.cnt[fr] != 0;
        if (f.P.budget > 1000) assert_true(frames < with);
        fx_free(&f);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disjoint_share_overlapping_do_not),
        cmocka_unit_test(test_adjacent_regions_form_one_run),
        cmocka_unit_test(test_a_stretch_rides_frames_it_fits),
        cmocka_unit_test(test_holes),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_random_plans),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
