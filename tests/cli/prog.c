/* SPDX-License-Identifier: MIT
 * cli_prog: the program the `pyalloc` command tests run. Knows nothing of pyalloc at link time (libc
 * and libdl only): pyalloc can only reach it through LD_PRELOAD, as `pyalloc run` does.
 *   usable              prints "usable=<malloc_usable_size(malloc(24))> mode=<pa_alignment_mode()>"
 *                       (mode 0: no pyalloc in the process); pyalloc: 32 (default) or 24 (align 8)
 *   alloc N SIZE [free] N blocks of SIZE bytes, held until exit unless "free"; plus 10 blocks of
 *                       4096 bytes and 5 of 64 bytes aligned to 64 (passthrough to glibc), freed
 *   fork N SIZE [_exit] a child process allocates N x SIZE and exits (with _exit(0): no exit
 *                       handlers, no report); the parent allocates nothing
 *   closeerr            closes stdout and stderr in an atexit handler, as cat, sort and ls do
 *   reopenerr FILE      in an atexit handler, closes stderr and opens FILE, which takes fd 2, and
 *                       writes one line to it
 *   daemon SECONDS      forks a child that leaves the parent's stdout and stderr (setsid, fds 0-2 to
 *                       /dev/null) and sleeps; prints "daemon=<pid>" and exits at once
 *   fds                 prints the open descriptors, "fds=0 1 2 ...", and for each one at or above
 *                       3 whether it is close-on-exec and what it is ("fd=N cloexec=1 link=...")
 *   figures             a run whose live bytes are known (the figures test): a peak in one function,
 *                       a leak in another, small and large blocks; prints its markers (CLOCK_MONOTONIC
 *                       ms) and the bytes each phase holds (malloc_usable_size, which pyalloc answers
 *                       with the bytes it counts), one key=value a line, with write(2): stdio would
 *                       allocate
 *   hold N SIZE SECS    N blocks of SIZE bytes and one of 1 MiB kept; prints "ready bytes=<usable
 *                       bytes held> pid=<pid>", then for SECS seconds mallocs and frees a 100 KiB
 *                       block every 20 ms (the moments the library takes its timeline points)
 *   env NAME...         prints NAME=<value or (unset)> for each
 *   exit CODE           exit(CODE)
 *   signal N            raise(N) with the default action
 *   sleep SECONDS       sleeps (for signals sent to `pyalloc run`)
 */
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void **allocate(long n, long size)
{
    void **v = calloc((size_t)n, sizeof *v);
    if (!v) exit(90);
    for (long i = 0; i < n; i++) {
        v[i] = malloc((size_t)size);
        if (!v[i]) exit(91);
        memset(v[i], (int)(i & 0xff), (size_t)size);
    }
    return v;
}

static const char *reopen_path;

/* ---- figures and hold ---- */

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "key=value\n" on stdout, without stdio. */
static void say(const char *key, long value)
{
    char line[96];
    int n = snprintf(line, sizeof line, "%s=%ld\n", key, value);
    if (write(1, line, (size_t)n) != n) exit(96);
}

/* For ms milliseconds, every 20 ms, a block of 100 KiB malloc'd and freed: the program is busy, and
 * the library takes its timeline points when they are due. */
static void busy(long ms)
{
    long end = now_ms() + ms;
    while (now_ms() < end) {
        void *volatile p = malloc(100 << 10);
        if (!p) exit(97);
        free(p);
        usleep(20000);
    }
}

#define PEAK_SMALL 200000 /* blocks of 100 bytes */
#define PEAK_LARGE 40     /* blocks of 256 KiB */
#define LEAK_SMALL 50000  /* blocks of 200 bytes */
#define LEAK_LARGE 10     /* blocks of 300 KiB */
static void *peak_blocks[PEAK_SMALL + PEAK_LARGE], *leak_blocks[LEAK_SMALL + LEAK_LARGE];

static long take(void **v, long n, size_t size)
{
    long bytes = 0;
    for (long i = 0; i < n; i++) {
        v[i] = malloc(size);
        if (!v[i]) exit(98);
        memset(v[i], 1, size);
        bytes += (long)malloc_usable_size(v[i]);
    }
    return bytes;
}

/* The peak: 20 MB in 100-byte blocks and 10 MiB in 256 KiB blocks, held for 500 ms, all freed. */
__attribute__((noinline)) static void peak(void)
{
    say("peak_begin_ms", now_ms());
    long small = take(peak_blocks, PEAK_SMALL, 100);
    long large = take(peak_blocks + PEAK_SMALL, PEAK_LARGE, 256 << 10);
    say("peak_end_ms", now_ms());
    say("peak_small", small);
    say("peak_large", large);
    busy(500);
    say("free_begin_ms", now_ms());
    for (long i = 0; i < PEAK_SMALL + PEAK_LARGE; i++) free(peak_blocks[i]);
    say("free_end_ms", now_ms());
}

/* The leak: 10 MB in 200-byte blocks and 3 MiB in 300 KiB blocks, never freed. */
__attribute__((noinline)) static void leak(void)
{
    say("leak_begin_ms", now_ms());
    say("leak_small", take(leak_blocks, LEAK_SMALL, 200));
    say("leak_large", take(leak_blocks + LEAK_SMALL, LEAK_LARGE, 300 << 10));
    say("leak_end_ms", now_ms());
}

static int figures(void)
{
    say("start_ms", now_ms());
    busy(500);
    peak();
    busy(500);
    leak();
    busy(500);
    say("exit_ms", now_ms());
    return 0;
}

static int hold(long n, long size, long secs)
{
    static void *blocks[1 << 20];
    if (n < 0 || n > (1 << 20)) return 2;
    long bytes = take(blocks, n, (size_t)size);
    void *big = malloc(1 << 20);
    if (!big) return 98;
    memset(big, 1, 1 << 20);
    bytes += (long)malloc_usable_size(big);
    char line[96];
    int k = snprintf(line, sizeof line, "ready bytes=%ld pid=%ld\n", bytes, (long)getpid());
    if (write(1, line, (size_t)k) != k) return 96;
    busy(secs * 1000);
    return 0;
}

static void close_std(void)
{
    fclose(stdout);
    fclose(stderr);
}

static void reopen_err(void)
{
    close(2);
    int fd = open(reopen_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd == 2) (void)!write(fd, "the program's own line\n", 23);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: cli_prog usable | alloc N SIZE [free] | fork N SIZE [_exit] | closeerr | "
                        "reopenerr FILE | daemon SECONDS | fds | figures | hold N SIZE SECONDS | env NAME... | "
                        "exit CODE | signal N | sleep SECONDS\n");
        return 2;
    }
    const char *what = argv[1];
    if (strcmp(what, "usable") == 0) {
        void *p = malloc(24);
        int mode = 0;
        int (*pa_mode)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "pa_alignment_mode");
        if (pa_mode) mode = pa_mode();
        printf("usable=%zu mode=%d\n", malloc_usable_size(p), mode);
        free(p);
        return 0;
    }
    if (strcmp(what, "alloc") == 0 && argc >= 4) {
        long n = atol(argv[2]), size = atol(argv[3]);
        void **v = allocate(n, size);
        for (int i = 0; i < 10; i++) free(malloc(4096));
        for (int i = 0; i < 5; i++) free(aligned_alloc(64, 64));
        if (argc >= 5 && strcmp(argv[4], "free") == 0) {
            for (long i = 0; i < n; i++) free(v[i]);
            free(v);
        }
        printf("allocated %ld x %ld\n", n, size);
        return 0; /* blocks not freed stay in use at exit: the report sees them */
    }
    if (strcmp(what, "fork") == 0 && argc >= 4) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) return 92;
        if (pid == 0) {
            allocate(atol(argv[2]), atol(argv[3]));
            if (argc >= 5 && strcmp(argv[4], "_exit") == 0) _exit(0);
            exit(0);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 93;
        printf("child %ld done\n", (long)pid);
        return 0;
    }
    if (strcmp(what, "closeerr") == 0) {
        atexit(close_std);
        printf("closing stdout and stderr at exit\n");
        return 0;
    }
    if (strcmp(what, "reopenerr") == 0 && argc >= 3) {
        reopen_path = argv[2];
        atexit(reopen_err);
        return 0;
    }
    if (strcmp(what, "daemon") == 0 && argc >= 3) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) return 92;
        if (pid == 0) {
            setsid();
            int null = open("/dev/null", O_RDWR);
            for (int fd = 0; fd < 3; fd++) dup2(null, fd);
            if (null > 2) close(null);
            sleep((unsigned)atoi(argv[2]));
            _exit(0);
        }
        printf("daemon=%ld\n", (long)pid);
        return 0;
    }
    if (strcmp(what, "fds") == 0) {
        DIR *d = opendir("/proc/self/fd");
        if (!d) return 95;
        int self = dirfd(d), seen[1024], n = 0;
        for (struct dirent *e; (e = readdir(d)) && n < 1024;) {
            int fd = atoi(e->d_name);
            if (e->d_name[0] != '.' && fd != self) seen[n++] = fd;
        }
        closedir(d);
        printf("fds=");
        for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", seen[i]);
        printf("\n");
        for (int i = 0; i < n; i++) {
            char path[64], link[256];
            snprintf(path, sizeof path, "/proc/self/fd/%d", seen[i]);
            ssize_t len = readlink(path, link, sizeof link - 1);
            link[len > 0 ? len : 0] = 0;
            if (seen[i] >= 3)
                printf("fd=%d cloexec=%d link=%s\n", seen[i], (fcntl(seen[i], F_GETFD) & FD_CLOEXEC) != 0, link);
        }
        return 0;
    }
    if (strcmp(what, "figures") == 0) return figures();
    if (strcmp(what, "hold") == 0 && argc >= 5) return hold(atol(argv[2]), atol(argv[3]), atol(argv[4]));
    if (strcmp(what, "env") == 0) {
        for (int i = 2; i < argc; i++) {
            const char *v = getenv(argv[i]);
            printf("%s=%s\n", argv[i], v ? v : "(unset)");
        }
        return 0;
    }
    if (strcmp(what, "exit") == 0 && argc >= 3) exit(atoi(argv[2]));
    if (strcmp(what, "signal") == 0 && argc >= 3) {
        int sig = atoi(argv[2]);
        signal(sig, SIG_DFL);
        raise(sig);
        return 94;
    }
    if (strcmp(what, "sleep") == 0 && argc >= 3) {
        printf("sleeping\n");
        fflush(stdout);
        sleep((unsigned)atoi(argv[2]));
        return 0;
    }
    fprintf(stderr, "cli_prog: bad arguments\n");
    return 2;
}
