/* SPDX-License-Identifier: MIT
 * PYALLOC_* options: the defaults pa_options_read gives against the ones docs/options.md states
 * (its table is parsed here, so the test fails when either side changes alone). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#ifndef PA_OPTIONS_MD
#error "PA_OPTIONS_MD (the path of docs/options.md) is set by tests/unit/CMakeLists.txt"
#endif

/* One row of the table in docs/options.md: `NAME` | default | ... */
typedef struct {
    char name[64];
    char value[64];   /* the default as written between backticks, or the bare word (unset) */
    char human[64];   /* what follows it in parentheses, e.g. "64 GiB", or "" */
} doc_row;

static size_t read_rows(doc_row *rows, size_t cap) {
    FILE *f = fopen(PA_OPTIONS_MD, "r");
    if (!f) fail_msg("cannot open %s", PA_OPTIONS_MD);
    char line[4096];
    size_t n = 0;
    while (fgets(line, sizeof line, f) && n < cap) {
        doc_row r;
        memset(&r, 0, sizeof r);
        /* | `PYALLOC_X` | `16` (human) | ...     or     | `PYALLOC_X` | unset | ... */
        if (sscanf(line, "| `%63[A-Z0-9_]` | `%63[^`]` (%63[^)])", r.name, r.value, r.human) >= 2 ||
            sscanf(line, "| `%63[A-Z0-9_]` | %63[a-z] |", r.name, r.value) == 2)
            rows[n++] = r;
    }
    fclose(f);
    return n;
}

/* "64 GiB" -> bytes; 0 if it is not a size. */
static uint64_t human_bytes(const char *s) {
    unsigned long long v;
    char unit[8];
    if (sscanf(s, "%llu %7s", &v, unit) != 2) return 0;
    if (strcmp(unit, "KiB") == 0) return (uint64_t)v << 10;
    if (strcmp(unit, "MiB") == 0) return (uint64_t)v << 20;
    if (strcmp(unit, "GiB") == 0) return (uint64_t)v << 30;
    if (strcmp(unit, "TiB") == 0) return (uint64_t)v << 40;
    return 0;
}

static const char *const option_names[] = {
    "PYALLOC_ALIGN",       "PYALLOC_RESERVE_MB", "PYALLOC_PURGE_DELAY_MS", "PYALLOC_DIRTY_KB",
    "PYALLOC_DIRTY_RATIO", "PYALLOC_STATS",      "PYALLOC_STATS_FILE",
};
#define NOPTIONS (sizeof option_names / sizeof option_names[0])

/* The value pa_opt holds for a documented option, in the option's own unit; -1 for "unset". */
static long long option_value(const char *name) {
    if (strcmp(name, "PYALLOC_ALIGN") == 0) return pa_opt.align;
    if (strcmp(name, "PYALLOC_RESERVE_MB") == 0) return (long long)(pa_opt.reserve >> 20);
    if (strcmp(name, "PYALLOC_PURGE_DELAY_MS") == 0) return pa_opt.purge_delay;
    if (strcmp(name, "PYALLOC_DIRTY_KB") == 0) return (long long)(pa_opt.dirty_min * (PA_PAGE_SIZE >> 10));
    if (strcmp(name, "PYALLOC_DIRTY_RATIO") == 0) return pa_opt.dirty_ratio;
    if (strcmp(name, "PYALLOC_STATS") == 0) return pa_opt.stats ? pa_opt.stats : -1;
    if (strcmp(name, "PYALLOC_STATS_FILE") == 0) return pa_opt.stats_file[0] ? 1 : -1;
    fail_msg("docs/options.md documents %s, which this test does not know", name);
    return 0;
}

/* The unit a _KB or _MB option is given in, to check the human-readable figure beside it. */
static uint64_t option_unit(const char *name) {
    size_t n = strlen(name);
    if (n > 3 && strcmp(name + n - 3, "_KB") == 0) return 1 << 10;
    if (n > 3 && strcmp(name + n - 3, "_MB") == 0) return 1 << 20;
    return 0;
}

/* The defaults as pa_options_read gives them in an environment without PYALLOC_* variables. */
static void read_defaults(void) {
    for (size_t i = 0; i < NOPTIONS; i++) unsetenv(option_names[i]);
    pa_options_read();
}

static void test_defaults_match_the_documented_ones(void **state) {
    (void)state;
    assert_true(pa_ready());
    pa_options saved = pa_opt;
    char *align = getenv("PYALLOC_ALIGN") ? strdup(getenv("PYALLOC_ALIGN")) : NULL;
    read_defaults();
    doc_row rows[32];
    size_t n = read_rows(rows, 32);
    assert_int_equal(n, NOPTIONS); /* every option documented, and only those */
    for (size_t i = 0; i < n; i++) {
        const doc_row *r = &rows[i];
        long long got = option_value(r->name);
        if (strcmp(r->value, "unset") == 0) {
            if (got != -1) fail_msg("%s: documented unset, pa_options_read gives %lld", r->name, got);
            continue;
        }
        char *end;
        long long want = strtoll(r->value, &end, 10);
        if (*end || end == r->value) fail_msg("%s: documented default `%s` is not a number", r->name, r->value);
        if (got != want) fail_msg("%s: documented default %lld, pa_options_read gives %lld", r->name, want, got);
        uint64_t unit = option_unit(r->name);
        if (unit && human_bytes(r->human) != (uint64_t)want * unit)
            fail_msg("%s: `%s` is not %s", r->name, r->value, r->human);
    }
    /* the defaults in bytes (config.h) are the ones stated */
    assert_int_equal(PA_DIRTY_DEFAULT, (uint64_t)option_value("PYALLOC_DIRTY_KB") << 10);
    assert_int_equal(PA_RESERVE_DEFAULT, (uint64_t)option_value("PYALLOC_RESERVE_MB") << 20);
    if (align) setenv("PYALLOC_ALIGN", align, 1);
    free(align);
    pa_opt = saved;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_match_the_documented_ones),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
