/* SPDX-License-Identifier: MIT
 * Diagnostics that never allocate: own number formatting and write(2).
 * Exports pa_fatal (one line naming the fault and the address, then abort), pa_warn and
 * pa_warn_parts (one line), the number formatting they use (pa_fmt_u64, pa_fmt_hex), and report
 * file names with the pid in them (pa_fmt_path); a buffered writer for the reports (pa_w_*). */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void pa_write_all(int fd, const char *s, size_t n) {
    int saved = errno;
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        s += w;
        n -= (size_t)w;
    }
    errno = saved;
}

size_t pa_fmt_u64(char *buf, uint64_t v) {
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
    return n;
}

size_t pa_fmt_hex(char *buf, uint64_t v) {
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v);
    buf[0] = '0';
    buf[1] = 'x';
    for (size_t i = 0; i < n; i++) buf[2 + i] = tmp[n - 1 - i];
    return n + 2;
}

static size_t msg_append(char *buf, size_t at, size_t cap, const char *s) {
    size_t n = strlen(s);
    if (n > cap - at) n = cap - at;
    memcpy(buf + at, s, n);
    return at + n;
}

void pa_warn_parts(const char *const *parts, size_t count) {
    char buf[256];
    size_t n = msg_append(buf, 0, sizeof buf - 1, "pyalloc: ");
    for (size_t i = 0; i < count; i++) n = msg_append(buf, n, sizeof buf - 1, parts[i]);
    buf[n++] = '\n';
    pa_write_all(2, buf, n); /* one write: one line, even beside other threads' output */
}

void pa_warn(const char *text) { pa_warn_parts(&text, 1); }

_Noreturn void pa_fatal(const char *what, const void *addr) {
    char buf[256];
    size_t n = msg_append(buf, 0, sizeof buf - 20, "pyalloc: ");
    n = msg_append(buf, n, sizeof buf - 24, what);
    n = msg_append(buf, n, sizeof buf - 20, " at ");
    n += pa_fmt_hex(buf + n, (uintptr_t)addr);
    buf[n++] = '\n';
    pa_write_all(2, buf, n);
    abort();
}

#ifdef PA_DEBUG
_Noreturn void pa_assert_fail(const char *expr, const char *file, int line) {
    char buf[384];
    size_t n = msg_append(buf, 0, sizeof buf - 24, "pyalloc: assertion failed: ");
    n = msg_append(buf, n, sizeof buf - 24, expr);
    n = msg_append(buf, n, sizeof buf - 24, " at ");
    n = msg_append(buf, n, sizeof buf - 24, file);
    buf[n++] = ':';
    n += pa_fmt_u64(buf + n, (uint64_t)line);
    buf[n++] = '\n';
    pa_write_all(2, buf, n);
    abort();
}
#endif

/* pattern with each %p replaced by the pid, then suffix, into buf (PYALLOC_STATS_FILE,
 * PYALLOC_SITES_FILE); false if it does not fit in cap bytes. */
bool pa_fmt_path(char *buf, size_t cap, const char *pattern, const char *suffix) {
    size_t n = 0;
    for (const char *s = pattern; *s; s++) {
        if (s[0] == '%' && s[1] == 'p') {
            char d[24];
            size_t len = pa_fmt_u64(d, (uint64_t)getpid());
            if (n + len >= cap) return false;
            memcpy(buf + n, d, len);
            n += len;
            s++;
        } else {
            if (n + 1 >= cap) return false;
            buf[n++] = *s;
        }
    }
    size_t len = strlen(suffix);
    if (n + len >= cap) return false;
    memcpy(buf + n, suffix, len + 1);
    return true;
}

void pa_w_flush(pa_writer *w) {
    size_t done = 0;
    while (done < w->n && !w->failed) {
        ssize_t k = write(w->fd, w->buf + done, w->n - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) w->failed = true; /* nothing more is written: the reader learns of a cut */
        else done += (size_t)k;
    }
    w->n = 0;
}

void pa_w_mem(pa_writer *w, const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (w->n == sizeof w->buf) pa_w_flush(w);
        w->buf[w->n++] = s[i];
    }
}

void pa_w_str(pa_writer *w, const char *s) { pa_w_mem(w, s, strlen(s)); }
