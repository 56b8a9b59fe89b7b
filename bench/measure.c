/* SPDX-License-Identifier: MIT
 * measure: runs one command and reports its wall time and rusage, as /usr/bin/time does.
 * The runner needs it because a child spawned by Python inherits the Python process's resident
 * pages in its ru_maxrss (fork copies the RSS counters; exec keeps the high-water mark), which would
 * bury a benchmark of a few megabytes under the runner's own 20. This launcher is small, so the
 * command's peak RSS is its own. If MEASURE_PRELOAD is set, the command (not this launcher) gets it
 * as LD_PRELOAD. usage: measure RESULT_FILE COMMAND [ARGS...]
 * RESULT_FILE gets one line: wall_s=... user_s=... sys_s=... maxrss_kb=... wait_status=... */
#include "common.h"
#include <errno.h>
#include <sys/resource.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: measure RESULT_FILE COMMAND [ARGS...]\n");
        return 2;
    }
    FILE *out = fopen(argv[1], "w");
    if (!out) {
        perror(argv[1]);
        return 2;
    }
    const char *preload = getenv("MEASURE_PRELOAD");
    double t0 = bench_now();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        if (preload && preload[0])
            setenv("LD_PRELOAD", preload, 1);
        unsetenv("MEASURE_PRELOAD");
        execvp(argv[2], argv + 2);
        fprintf(stderr, "measure: cannot run %s: %s\n", argv[2], strerror(errno));
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("wait4");
            return 2;
        }
    }
    double wall = bench_now() - t0;
    fprintf(out, "wall_s=%.6f user_s=%.6f sys_s=%.6f maxrss_kb=%ld wait_status=%d\n", wall,
            (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6,
            (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6, ru.ru_maxrss, status);
    fclose(out);
    return 0;
}
