/* SPDX-License-Identifier: MIT
 * Death-test helpers shared by the misuse tests: run a function in a forked child with its stderr
 * captured, then assert it died of SIGABRT after exactly one "pyalloc: " line naming the fault and the
 * address, or that it exited cleanly without any pyalloc diagnostic. Include after <cmocka.h>. */
#ifndef PA_DEATH_H
#define PA_DEATH_H

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILD_DEADLINE_S 10

struct outcome {
    int status;
    char err[8192];
};

static void run_in_child(void (*fn)(void *), void *arg, struct outcome *out)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core); /* abort() on purpose: no core dump to write */
        signal(SIGABRT, SIG_DFL);
        signal(SIGSEGV, SIG_DFL); /* cmocka's handlers are inherited: a crash must show as a crash */
        signal(SIGBUS, SIG_DFL);
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        close(fds[1]);
        alarm(CHILD_DEADLINE_S);
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fds[0], out->err + len, sizeof out->err - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == sizeof out->err - 1)
            break;
    }
    out->err[len] = '\0';
    close(fds[0]);
    assert_int_equal(waitpid(pid, &out->status, 0), pid);
}

/* The line of stderr that starts with "pyalloc: " and contains word, or NULL. */
static const char *find_line(const char *err, const char *word, char *line, size_t cap)
{
    const char *s = err;
    while (*s) {
        const char *e = strchr(s, '\n');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n < cap && strncmp(s, "pyalloc: ", 9) == 0) {
            memcpy(line, s, n);
            line[n] = '\0';
            if (strstr(line, word) != NULL)
                return line;
        }
        if (!e)
            break;
        s = e + 1;
    }
    return NULL;
}

/* 1 if line contains a 0x... number equal to addr (any case, any zero padding). */
static int line_has_address(const char *line, const void *addr)
{
    for (const char *s = line; *s; s++)
        if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && isxdigit((unsigned char)s[2]) &&
            strtoumax(s + 2, NULL, 16) == (uintmax_t)(uintptr_t)addr)
            return 1;
    return 0;
}

/* Asserts the child died of SIGABRT with a "pyalloc: " line naming one of the words and addr. */
static void expect_abort(const struct outcome *o, const char *word1, const char *word2,
                         const void *addr)
{
    char line[1024];
    if (!WIFSIGNALED(o->status) || WTERMSIG(o->status) != SIGABRT) {
        if (WIFSIGNALED(o->status))
            fail_msg("child killed by signal %d, not SIGABRT; stderr: [%s]", WTERMSIG(o->status),
                     o->err);
        fail_msg("child exited %d instead of aborting; stderr: [%s]", WEXITSTATUS(o->status),
                 o->err);
    }
    int lines = 0;
    for (const char *s = o->err; s != NULL && *s; s = strchr(s, '\n') ? strchr(s, '\n') + 1 : NULL)
        lines += strncmp(s, "pyalloc: ", 9) == 0;
    if (lines != 1)
        fail_msg("%d lines start with \"pyalloc: \", expected one; stderr: [%s]", lines, o->err);
    const char *l = find_line(o->err, word1, line, sizeof line);
    if (l == NULL && word2 != NULL)
        l = find_line(o->err, word2, line, sizeof line);
    if (l == NULL)
        fail_msg("no line starting \"pyalloc: \" naming \"%s\"%s%s%s in stderr: [%s]", word1,
                 word2 ? " or \"" : "", word2 ? word2 : "", word2 ? "\"" : "", o->err);
    if (!line_has_address(l, addr))
        fail_msg("message [%s] does not name the address %p", l, addr);
}

static void expect_clean_exit(const struct outcome *o)
{
    if (WIFSIGNALED(o->status))
        fail_msg("child killed by signal %d; stderr: [%s]", WTERMSIG(o->status), o->err);
    assert_int_equal(WEXITSTATUS(o->status), 0);
    if (strstr(o->err, "pyalloc:") != NULL)
        fail_msg("unexpected diagnostic: [%s]", o->err);
}

#endif /* PA_DEATH_H */
