/* SPDX-License-Identifier: MIT
 * PYALLOC_* options: the defaults pa_options_read gives against the ones docs/options.md states
 * (its table is parsed here, so the test fails when either side changes alone), and what a bad
 * value does: this program runs itself (--child) under each, and the child's whole stderr must be
 * the one warning line, while the child allocates, starts threads and forks with the value the
 * line says it uses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#ifndef PA_OPTIONS_MD
#error "PA_OPTIONS_MD (the path of docs/options.md) is set by tests/unit/CMakeLists.txt"
#endif

/* One row of the table in docs/options.md: | `NAME` | default | values | effect | */
typedef struct {
    char name[64];
    char value[64];  /* the default as written between backticks, or the bare word (unset) */
    char human[64];  /* what follows it in parentheses, e.g. "64 GiB", or "" */
    char values[64]; /* the values column, e.g. "`0` to `1000`" */
} doc_row;

/* The n-th cell (from 0) of a table row, trimmed, into out. */
static bool cell(const char *line, int n, char *out, size_t cap) {
    const char *c = line;
    for (int i = 0; i <= n; i++) {
        c = strchr(c, '|');
        if (!c) return false;
        c++;
    }
    while (*c == ' ') c++;
    const char *end = strchr(c, '|');
    if (!end) return false;
    while (end > c && end[-1] == ' ') end--;
    size_t len = (size_t)(end - c) < cap - 1 ? (size_t)(end - c) : cap - 1;
    memcpy(out, c, len);
    out[len] = 0;
    return true;
}

static size_t read_rows(doc_row *rows, size_t cap) {
    FILE *f = fopen(PA_OPTIONS_MD, "r");
    if (!f) fail_msg("cannot open %s", PA_OPTIONS_MD);
    char line[4096], def[64];
    size_t n = 0;
    while (fgets(line, sizeof line, f) && n < cap) {
        doc_row r;
        memset(&r, 0, sizeof r);
        if (strncmp(line, "| `PYALLOC_", 11) != 0) continue;
        if (!cell(line, 0, r.name, sizeof r.name) || !cell(line, 1, def, sizeof def) ||
            !cell(line, 2, r.values, sizeof r.values))
            fail_msg("a row of %s without name, default and values: %s", PA_OPTIONS_MD, line);
        memmove(r.name, r.name + 1, strlen(r.name)); /* the backticks */
        r.name[strlen(r.name) - 1] = 0;
        if (sscanf(def, "`%63[^`]` (%63[^)])", r.value, r.human) < 1) snprintf(r.value, sizeof r.value, "%s", def);
        rows[n++] = r;
    }
    fclose(f);
    return n;
}

/* The bounds pa_options_read clamps a number option to (config.h), in the option's unit. */
static bool option_range(const char *name, unsigned long long *min, unsigned long long *max) {
    *min = 0;
    if (strcmp(name, "PYALLOC_RESERVE_MB") == 0) {
        *min = PA_RESERVE_MIN >> 20;
        *max = PA_RESERVE_MAX >> 20;
    } else if (strcmp(name, "PYALLOC_PURGE_DELAY_MS") == 0) {
        *max = PA_PURGE_DELAY_MAX;
    } else if (strcmp(name, "PYALLOC_DIRTY_KB") == 0) {
        *max = PA_DIRTY_MAX >> 10;
    } else if (strcmp(name, "PYALLOC_DIRTY_RATIO") == 0) {
        *max = PA_DIRTY_RATIO_MAX;
    } else if (strcmp(name, "PYALLOC_SAMPLE_BYTES") == 0) {
        *min = 1;
        *max = PA_SAMPLE_BYTES_MAX;
    } else if (strcmp(name, "PYALLOC_GLIBC_TRIM_KB") == 0) {
        *max = PA_GLIBC_TRIM_MAX >> 10;
    } else if (strcmp(name, "PYALLOC_TIMELINE_MS") == 0) {
        *min = PA_TIMELINE_MS_MIN;
        *max = PA_TIMELINE_MS_MAX;
    } else {
        return false;
    }
    return true;
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
    "PYALLOC_DIRTY_RATIO", "PYALLOC_STATS",      "PYALLOC_STATS_FILE",     "PYALLOC_BACKGROUND",
    "PYALLOC_GLIBC_TRIM_KB", "PYALLOC_TIMELINE_MS", "PYALLOC_PUBLISH", "PYALLOC_SITES",
    "PYALLOC_SAMPLE_BYTES", "PYALLOC_SITES_FILE", "PYALLOC_MESH",
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
    if (strcmp(name, "PYALLOC_MESH") == 0) return pa_opt.mesh;
    if (strcmp(name, "PYALLOC_SITES") == 0) return pa_opt.sites ? 1 : -1;
    if (strcmp(name, "PYALLOC_SAMPLE_BYTES") == 0) return (long long)pa_opt.sample_bytes;
    if (strcmp(name, "PYALLOC_SITES_FILE") == 0) return pa_opt.sites_file[0] ? 1 : -1;
    if (strcmp(name, "PYALLOC_BACKGROUND") == 0) return pa_opt.background;
    if (strcmp(name, "PYALLOC_GLIBC_TRIM_KB") == 0) return (long long)(pa_opt.glibc_trim >> 10);
    if (strcmp(name, "PYALLOC_TIMELINE_MS") == 0) return pa_opt.timeline_ms;
    if (strcmp(name, "PYALLOC_PUBLISH") == 0) return pa_opt.publish;
    fail_msg("docs/options.md documents %s, which this test does not know", name);
    return 0;
}

/* The value of an option whose values are words, as written (NULL for the others). */
static const char *option_word(const char *name) {
    if (strcmp(name, "PYALLOC_BACKGROUND") == 0)
        return pa_opt.background == PA_BG_AUTO ? "auto" : pa_opt.background == PA_BG_ON ? "1" : "0";
    return NULL;
}

/* The unit a _KB or _MB option is given in, to check the human-readable figure beside it. */
static uint64_t option_unit(const char *name) {
    size_t n = strlen(name);
    if (n > 3 && strcmp(name + n - 3, "_KB") == 0) return 1 << 10;
    if (n > 3 && strcmp(name + n - 3, "_MB") == 0) return 1 << 20;
    if (n > 6 && strcmp(name + n - 6, "_BYTES") == 0) return 1;
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
        if (option_word(r->name)) {
            if (strcmp(option_word(r->name), r->value) != 0)
                fail_msg("%s: documented default `%s`, pa_options_read gives %s", r->name, r->value,
                         option_word(r->name));
            continue;
        }
        char *end;
        long long want = strtoll(r->value, &end, 10);
        if (*end || end == r->value) fail_msg("%s: documented default `%s` is not a number", r->name, r->value);
        if (got != want) fail_msg("%s: documented default %lld, pa_options_read gives %lld", r->name, want, got);
        uint64_t unit = option_unit(r->name);
        if (unit && human_bytes(r->human) != (uint64_t)want * unit)
            fail_msg("%s: `%s` is not %s", r->name, r->value, r->human);
        unsigned long long min, max, dmin, dmax;
        if (option_range(r->name, &min, &max)) {
            if (sscanf(r->values, "`%llu` to `%llu`", &dmin, &dmax) != 2)
                fail_msg("%s: values `%s` are not `MIN` to `MAX`", r->name, r->values);
            if (dmin != min || dmax != max)
                fail_msg("%s: documented %llu to %llu, pa_options_read clamps to %llu to %llu", r->name, dmin,
                         dmax, min, max);
        }
    }
    /* the defaults in bytes (config.h) are the ones stated */
    assert_int_equal(PA_DIRTY_DEFAULT, (uint64_t)option_value("PYALLOC_DIRTY_KB") << 10);
    assert_int_equal(PA_RESERVE_DEFAULT, (uint64_t)option_value("PYALLOC_RESERVE_MB") << 20);
    assert_int_equal(PA_SAMPLE_BYTES_DEFAULT, (uint64_t)option_value("PYALLOC_SAMPLE_BYTES"));
    if (align) setenv("PYALLOC_ALIGN", align, 1);
    free(align);
    pa_opt = saved;
}

/* ---- bad values, each in a process of its own ---- */

static void *child_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) pa_free(pa_malloc(100));
    return NULL;
}

/* The child: works under the options it was given, then prints them, one NAME=value a line. */
static int child_main(void) {
    if (!pa_ready()) return 3;
    void *p = pa_malloc(24);
    if (!p || !pa_is_small(p)) return 4;
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, child_thread, NULL);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    pid_t pid = fork(); /* the options are not read again, in either process */
    if (pid == 0) {
        pa_free(pa_malloc(50));
        _exit(0);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || status != 0) return 5;
    pa_free(p);
    for (size_t i = 0; i < NOPTIONS; i++) {
        if (option_word(option_names[i])) printf("%s=%s\n", option_names[i], option_word(option_names[i]));
        else printf("%s=%lld\n", option_names[i], option_value(option_names[i]));
    }
    return 0;
}

/* Reads all of fd into buf. */
static void read_all(int fd, char *buf, size_t cap) {
    size_t n = 0;
    ssize_t k;
    while (n + 1 < cap && (k = read(fd, buf + n, cap - 1 - n)) > 0) n += (size_t)k;
    buf[n] = 0;
}

typedef struct {
    const char *setting; /* NAME=value */
    const char *says;    /* stderr is "pyalloc: NAME=value <says>\n" and nothing else; "": nothing */
    const char *result;  /* the NAME=value line the child must print */
} bad_value;

static const bad_value bad_values[] = {
    {"PYALLOC_PURGE_DELAY_MS=abc", "is not a number; using 1000", "PYALLOC_PURGE_DELAY_MS=1000"},
    {"PYALLOC_RESERVE_MB=lots", "is not a number; using 65536", "PYALLOC_RESERVE_MB=65536"},
    {"PYALLOC_DIRTY_KB=1GB", "is not a number; using 1048576", "PYALLOC_DIRTY_KB=1048576"},
    {"PYALLOC_DIRTY_RATIO=", "is not a number; using 0", "PYALLOC_DIRTY_RATIO=0"},
    {"PYALLOC_RESERVE_MB= 64", "is not a number; using 65536", "PYALLOC_RESERVE_MB=65536"},
    {"PYALLOC_DIRTY_KB=-1", "is not a number; using 1048576", "PYALLOC_DIRTY_KB=1048576"},
    {"PYALLOC_PURGE_DELAY_MS=99999999", "is above 3600000; using 3600000", "PYALLOC_PURGE_DELAY_MS=3600000"},
    {"PYALLOC_PURGE_DELAY_MS=123456789012345678901234567890", "is above 3600000; using 3600000",
     "PYALLOC_PURGE_DELAY_MS=3600000"},
    {"PYALLOC_RESERVE_MB=1", "is below 16; using 16", "PYALLOC_RESERVE_MB=16"},
    {"PYALLOC_RESERVE_MB=99999999", "is above 4194304; using 4194304", "PYALLOC_RESERVE_MB=4194304"},
    {"PYALLOC_DIRTY_RATIO=5000", "is above 1000; using 1000", "PYALLOC_DIRTY_RATIO=1000"},
    {"PYALLOC_DIRTY_KB=9999999999999", "is above 4294967296; using 4294967296", "PYALLOC_DIRTY_KB=4294967296"},
    {"PYALLOC_ALIGN=12", "is not 8 or 16; using 16", "PYALLOC_ALIGN=16"},
    {"PYALLOC_ALIGN=", "is not 8 or 16; using 16", "PYALLOC_ALIGN=16"},
    {"PYALLOC_MESH=yes", "is not 0 or 1; meshing stays off", "PYALLOC_MESH=0"},
    {"PYALLOC_SITES=yes", "is not 1 or 0; no sampling", "PYALLOC_SITES=-1"},
    {"PYALLOC_SAMPLE_BYTES=0", "is below 1; using 1", "PYALLOC_SAMPLE_BYTES=1"},
    {"PYALLOC_SAMPLE_BYTES=64k", "is not a number; using 524288", "PYALLOC_SAMPLE_BYTES=524288"},
    {"PYALLOC_SAMPLE_BYTES=2000000000000", "is above 1099511627776; using 1099511627776",
     "PYALLOC_SAMPLE_BYTES=1099511627776"},
    {"PYALLOC_BACKGROUND=yes", "is not auto, 1 or 0; using auto", "PYALLOC_BACKGROUND=auto"},
    {"PYALLOC_BACKGROUND=", "is not auto, 1 or 0; using auto", "PYALLOC_BACKGROUND=auto"},
    {"PYALLOC_GLIBC_TRIM_KB=1M", "is not a number; using 1024", "PYALLOC_GLIBC_TRIM_KB=1024"},
    {"PYALLOC_TIMELINE_MS=5", "is below 10; using 10", "PYALLOC_TIMELINE_MS=10"},
    {"PYALLOC_TIMELINE_MS=0.5", "is not a number; using 100", "PYALLOC_TIMELINE_MS=100"},
    {"PYALLOC_TIMELINE_MS=4000000", "is above 3600000; using 3600000", "PYALLOC_TIMELINE_MS=3600000"},
    {"PYALLOC_PUBLISH=yes", "is not 1 or 0; using 1", "PYALLOC_PUBLISH=1"},
    {"PYALLOC_PUBLISH=0", "", "PYALLOC_PUBLISH=0"},
    {"PYALLOC_TIMELINE_MS=250", "", "PYALLOC_TIMELINE_MS=250"},
    {"PYALLOC_STATS=yes", "is not 1, text, json, text,json or 0; no report", "PYALLOC_STATS=-1"},
    {"PYALLOC_STATS=text,jsn", "is not 1, text, json, text,json or 0; no report", "PYALLOC_STATS=-1"},
    /* good values, and the empty ones that mean unset: no line at all */
    {"PYALLOC_RESERVE_MB=1024", "", "PYALLOC_RESERVE_MB=1024"},
    {"PYALLOC_PURGE_DELAY_MS=0", "", "PYALLOC_PURGE_DELAY_MS=0"},
    {"PYALLOC_BACKGROUND=auto", "", "PYALLOC_BACKGROUND=auto"}, /* (1 would start a thread in the
                                                                    fork child: TSan cannot) */
    {"PYALLOC_BACKGROUND=0", "", "PYALLOC_BACKGROUND=0"},
    {"PYALLOC_GLIBC_TRIM_KB=0", "", "PYALLOC_GLIBC_TRIM_KB=0"},
    {"PYALLOC_DIRTY_KB=0032768", "", "PYALLOC_DIRTY_KB=32768"},
    {"PYALLOC_STATS=", "", "PYALLOC_STATS=-1"},
    {"PYALLOC_STATS_FILE=", "", "PYALLOC_STATS_FILE=-1"},
    {"PYALLOC_MESH=1", "", "PYALLOC_MESH=1"},
    {"PYALLOC_MESH=", "", "PYALLOC_MESH=0"},
    {"PYALLOC_SITES=", "", "PYALLOC_SITES=-1"},
    {"PYALLOC_SITES=0", "", "PYALLOC_SITES=-1"},
    {"PYALLOC_SAMPLE_BYTES=4096", "", "PYALLOC_SAMPLE_BYTES=4096"},
};

/* Runs the child with one setting; returns its stdout in out, its stderr in err. */
static void run_child(const char *setting, char *out, size_t outcap, char *err, size_t errcap) {
    static char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = 0;
    int po[2], pe[2];
    assert_int_equal(pipe(po), 0);
    assert_int_equal(pipe(pe), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(pe[0]);
        for (size_t i = 0; i < NOPTIONS; i++) unsetenv(option_names[i]);
        putenv((char *)setting);
        execl(self, self, "--child", (char *)NULL);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    read_all(pe[0], err, errcap); /* the child writes little: neither pipe fills up */
    read_all(po[0], out, outcap);
    close(po[0]);
    close(pe[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("%s: the child failed (status 0x%x), stderr: %s", setting, status, err);
}

static void test_bad_values_warn_once_and_say_what_is_used(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
        const bad_value *c = &bad_values[i];
        char out[1024], err[1024], want[512], result[128];
        run_child(c->setting, out, sizeof out, err, sizeof err);
        if (*c->says) snprintf(want, sizeof want, "pyalloc: %s %s\n", c->setting, c->says);
        else want[0] = 0;
        if (strcmp(err, want) != 0) fail_msg("%s: stderr was\n%s\nnot\n%s", c->setting, err, want);
        snprintf(result, sizeof result, "\n%s\n", c->result);
        char outnl[1100];
        snprintf(outnl, sizeof outnl, "\n%s", out);
        if (!strstr(outnl, result)) fail_msg("%s: the child used\n%s\nnot %s", c->setting, out, c->result);
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--child") == 0) return child_main();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_match_the_documented_ones),
        cmocka_unit_test(test_bad_values_warn_once_and_say_what_is_used),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
