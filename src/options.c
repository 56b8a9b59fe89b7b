/* SPDX-License-Identifier: MIT
 * PYALLOC_* options, read once at start-up by walking environ (getenv may not be safe this early,
 * and nothing here may allocate). Every option is documented in docs/options.md. */
#include "internal.h"

#include <string.h>

extern char **environ;

/* The defaults (config.h), stated in docs/options.md and checked against it by tests/unit: 16-byte
 * alignment; address space reserved (it costs nothing until committed); a hard limit on empty
 * resident pages, with the limit that follows the pages in use off; how long (ms) an empty page
 * stays resident. pa_opt starts with them too, for the statistics of a process whose start-up
 * failed or has not finished. */
#define OPTIONS_DEFAULTS                                                                           \
    {                                                                                              \
        .align = 16, .reserve = PA_RESERVE_DEFAULT, .dirty_min = PA_DIRTY_DEFAULT >> PA_PAGE_SHIFT, \
        .dirty_ratio = 0, .purge_delay = PA_PURGE_DELAY_DEFAULT,                                   \
    }
static const pa_options options_defaults = OPTIONS_DEFAULTS;
pa_options pa_opt = OPTIONS_DEFAULTS;

const char *pa_getenv(const char *name) {
    size_t n = strlen(name);
    if (!environ) return NULL;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
    return NULL;
}

/* Decimal digits only; returns def for anything else. */
static uint64_t options_number(const char *s, uint64_t def) {
    if (!s || !*s) return def;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > UINT64_MAX / 10 - 10) return def;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    return v;
}

void pa_options_read(void) {
    pa_opt = options_defaults;
    const char *a = pa_getenv("PYALLOC_ALIGN");
    if (a) {
        if (strcmp(a, "8") == 0) pa_opt.align = 8;
        else if (strcmp(a, "16") == 0) pa_opt.align = 16;
        else pa_warn("PYALLOC_ALIGN must be 8 or 16; using 16");
    }
    uint64_t mb = options_number(pa_getenv("PYALLOC_RESERVE_MB"), pa_opt.reserve >> 20);
    if (mb < PA_RESERVE_MIN >> 20) mb = PA_RESERVE_MIN >> 20;
    if (mb > PA_RESERVE_MAX >> 20) mb = PA_RESERVE_MAX >> 20;
    pa_opt.reserve = (size_t)mb << 20;
    uint64_t kb = options_number(pa_getenv("PYALLOC_DIRTY_KB"), pa_opt.dirty_min * (PA_PAGE_SIZE >> 10));
    pa_opt.dirty_min = (size_t)(kb / (PA_PAGE_SIZE >> 10));
    uint64_t ratio = options_number(pa_getenv("PYALLOC_DIRTY_RATIO"), pa_opt.dirty_ratio);
    pa_opt.dirty_ratio = (unsigned)(ratio > PA_DIRTY_RATIO_MAX ? PA_DIRTY_RATIO_MAX : ratio);
    const char *st = pa_getenv("PYALLOC_STATS");
    if (st && *st) {
        if (strcmp(st, "json") == 0) pa_opt.stats = 2;
        else if (strcmp(st, "1") == 0 || strcmp(st, "text") == 0) pa_opt.stats = 1;
        else if (strcmp(st, "0") != 0) pa_warn("PYALLOC_STATS must be 1, text, json or 0; no report");
    }
    const char *file = pa_getenv("PYALLOC_STATS_FILE");
    if (file && *file) {
        size_t len = strlen(file);
        if (len < sizeof pa_opt.stats_file) memcpy(pa_opt.stats_file, file, len + 1);
        else pa_warn("PYALLOC_STATS_FILE is too long; the report goes to stderr");
    }
    uint64_t ms = options_number(pa_getenv("PYALLOC_PURGE_DELAY_MS"), pa_opt.purge_delay);
    pa_opt.purge_delay = (uint32_t)(ms > PA_PURGE_DELAY_MAX ? PA_PURGE_DELAY_MAX : ms);
}
