/* SPDX-License-Identifier: MIT
 * PYALLOC_* options, read once at start-up by walking environ (getenv may not be safe this early,
 * and nothing here may allocate). Every option is documented in docs/options.md. */
#include "internal.h"

#include <string.h>

extern char **environ;

/* The defaults (config.h), stated in docs/options.md and checked against it by tests/unit: 16-byte
 * alignment; address space reserved (it costs nothing until committed); a hard limit on empty
 * resident pages, with the limit that follows the pages in use off; how long (ms) an empty page
 * stays resident; a background thread once the program has a second thread, which trims glibc's
 * heap when 1 MiB is newly free; the figures published for `pyalloc top`, a timeline point every
 * 100 ms at first. pa_opt starts with them too, for the statistics of a process whose start-up
 * failed or has not finished. */
#define OPTIONS_DEFAULTS                                                                           \
    {                                                                                              \
        .align = 16, .reserve = PA_RESERVE_DEFAULT, .dirty_min = PA_DIRTY_DEFAULT >> PA_PAGE_SHIFT, \
        .dirty_ratio = 0, .purge_delay = PA_PURGE_DELAY_DEFAULT, .background = PA_BG_AUTO,         \
        .glibc_trim = PA_GLIBC_TRIM_DEFAULT, .publish = true,                                      \
        .timeline_ms = PA_TIMELINE_MS_DEFAULT, .sample_bytes = PA_SAMPLE_BYTES_DEFAULT,               \
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

/* One line on stderr, "pyalloc: NAME=VALUE PROBLEM; INSTEAD", the value cut at 64 bytes. Options
 * are read once, so each bad value is reported once per process. */
static void options_warn(const char *name, const char *value, const char *problem, const char *instead) {
    char shown[68];
    size_t len = strlen(value);
    if (len > 64) {
        memcpy(shown, value, 61);
        memcpy(shown + 61, "...", 4);
        value = shown;
    }
    const char *parts[] = {name, "=", value, " ", problem, "; ", instead};
    pa_warn_parts(parts, sizeof parts / sizeof parts[0]);
}

/* prefix, v and suffix, as one string in buf (room for 48 bytes). */
static const char *options_with_number(char *buf, const char *prefix, uint64_t v, const char *suffix) {
    size_t n = strlen(prefix);
    memcpy(buf, prefix, n);
    n += pa_fmt_u64(buf + n, v);
    memcpy(buf + n, suffix, strlen(suffix) + 1);
    return buf;
}

/* PYALLOC_<name> as a decimal number from min to max, or def when it is not set. Anything but
 * digits (an empty value too) gives def, and a number out of range (one too long for 64 bits
 * too) the nearest bound, each with a warning. */
static uint64_t options_number(const char *name, uint64_t def, uint64_t min, uint64_t max) {
    const char *s = pa_getenv(name);
    if (!s) return def;
    char problem[48], instead[48];
    size_t digits = strspn(s, "0123456789");
    if (digits == 0 || s[digits] != 0) {
        options_warn(name, s, "is not a number", options_with_number(instead, "using ", def, ""));
        return def;
    }
    uint64_t v = 0;
    bool over = false;
    for (size_t i = 0; i < digits && !over; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) over = true;
        else v = v * 10 + d;
    }
    if (over || v > max) {
        options_warn(name, s, options_with_number(problem, "is above ", max, ""),
                     options_with_number(instead, "using ", max, ""));
        return max;
    }
    if (v < min) {
        options_warn(name, s, options_with_number(problem, "is below ", min, ""),
                     options_with_number(instead, "using ", min, ""));
        return min;
    }
    return v;
}

/* PYALLOC_<name>, a path, copied into out (1024 bytes); too long: a warning saying instead. */
static void options_path(const char *name, char *out, const char *instead) {
    const char *file = pa_getenv(name);
    if (!file || !*file) return;
    size_t len = strlen(file);
    if (len < sizeof pa_opt.stats_file) {
        memcpy(out, file, len + 1);
    } else {
        char problem[48];
        options_warn(name, file, options_with_number(problem, "is longer than ", sizeof pa_opt.stats_file - 1, " bytes"),
                     instead);
    }
}

void pa_options_read(void) {
    pa_opt = options_defaults;
    const char *a = pa_getenv("PYALLOC_ALIGN");
    if (a) {
        if (strcmp(a, "8") == 0) pa_opt.align = 8;
        else if (strcmp(a, "16") == 0) pa_opt.align = 16;
        else options_warn("PYALLOC_ALIGN", a, "is not 8 or 16", "using 16");
    }
    uint64_t mb = options_number("PYALLOC_RESERVE_MB", PA_RESERVE_DEFAULT >> 20, PA_RESERVE_MIN >> 20,
                                 PA_RESERVE_MAX >> 20);
    pa_opt.reserve = (size_t)mb << 20;
    uint64_t kb = options_number("PYALLOC_DIRTY_KB", PA_DIRTY_DEFAULT >> 10, 0, PA_DIRTY_MAX >> 10);
    pa_opt.dirty_min = (size_t)(kb / (PA_PAGE_SIZE >> 10)); /* pages */
    pa_opt.dirty_ratio = (unsigned)options_number("PYALLOC_DIRTY_RATIO", 0, 0, PA_DIRTY_RATIO_MAX);
    pa_opt.purge_delay =
        (uint32_t)options_number("PYALLOC_PURGE_DELAY_MS", PA_PURGE_DELAY_DEFAULT, 0, PA_PURGE_DELAY_MAX);
    const char *bg = pa_getenv("PYALLOC_BACKGROUND");
    if (bg) {
        if (strcmp(bg, "auto") == 0) pa_opt.background = PA_BG_AUTO;
        else if (strcmp(bg, "1") == 0) pa_opt.background = PA_BG_ON;
        else if (strcmp(bg, "0") == 0) pa_opt.background = PA_BG_OFF;
        else options_warn("PYALLOC_BACKGROUND", bg, "is not auto, 1 or 0", "using auto");
    }
    uint64_t trim_kb = options_number("PYALLOC_GLIBC_TRIM_KB", PA_GLIBC_TRIM_DEFAULT >> 10, 0, PA_GLIBC_TRIM_MAX >> 10);
    pa_opt.glibc_trim = (size_t)trim_kb << 10;
    pa_opt.timeline_ms = (uint32_t)options_number("PYALLOC_TIMELINE_MS", PA_TIMELINE_MS_DEFAULT,
                                                  PA_TIMELINE_MS_MIN, PA_TIMELINE_MS_MAX);
    const char *pub = pa_getenv("PYALLOC_PUBLISH");
    if (pub) {
        if (strcmp(pub, "0") == 0) pa_opt.publish = false;
        else if (strcmp(pub, "1") != 0) options_warn("PYALLOC_PUBLISH", pub, "is not 1 or 0", "using 1");
    }
    /* An empty PYALLOC_STATS or PYALLOC_STATS_FILE is the same as an unset one. */
    const char *st = pa_getenv("PYALLOC_STATS");
    if (st && *st) {
        if (strcmp(st, "json") == 0) pa_opt.stats = 2;
        else if (strcmp(st, "1") == 0 || strcmp(st, "text") == 0) pa_opt.stats = 1;
        else if (strcmp(st, "text,json") == 0 || strcmp(st, "json,text") == 0) pa_opt.stats = 3;
        else if (strcmp(st, "0") != 0)
            options_warn("PYALLOC_STATS", st, "is not 1, text, json, text,json or 0", "no report");
    }
    options_path("PYALLOC_STATS_FILE", pa_opt.stats_file, "the report goes to stderr");
    /* Allocation sites: an empty PYALLOC_SITES is the same as an unset one, too. */
    const char *sites = pa_getenv("PYALLOC_SITES");
    if (sites && *sites) {
        if (strcmp(sites, "1") == 0) {
            if (PA_STATS) pa_opt.sites = true; /* the sampling countdowns are the counters */
            else pa_warn("PYALLOC_SITES=1: this library is built without counters (PYALLOC_STATS=OFF); no sampling");
        } else if (strcmp(sites, "0") != 0) {
            options_warn("PYALLOC_SITES", sites, "is not 1 or 0", "no sampling");
        }
    }
    pa_opt.sample_bytes = options_number("PYALLOC_SAMPLE_BYTES", PA_SAMPLE_BYTES_DEFAULT, 1, PA_SAMPLE_BYTES_MAX);
    options_path("PYALLOC_SITES_FILE", pa_opt.sites_file, "the sites go to pyalloc-sites.%p");
    const char *mesh = pa_getenv("PYALLOC_MESH");
    if (mesh && *mesh) {
        if (strcmp(mesh, "1") == 0) pa_opt.mesh = 1;
        else if (strcmp(mesh, "0") != 0) options_warn("PYALLOC_MESH", mesh, "is not 0 or 1", "meshing stays off");
    }
}
