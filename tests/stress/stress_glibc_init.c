/* SPDX-License-Identifier: MIT
 * glibc's own allocator must be started before threads race for it. Run under
 * LD_PRELOAD=libpyalloc.so, built without pyalloc: this process never calls glibc's malloc itself
 * before it forks (no stdio, no cmocka: only write(2)), so every child starts with whatever
 * pyalloc left. Each child starts 4 threads that wait on a barrier and then make their first
 * passthrough allocation (200 KB, above pyalloc's 512 bytes) at the same moment. If glibc's
 * allocator were first started there, two threads could both take main_arena uncounted and the
 * second to exit would abort in __malloc_arena_thread_freeres ("a->attached_threads > 0"): before
 * pyalloc started glibc's allocator itself, about 1 child in 20 did. Every child must exit 0.
 * usage: stress_glibc_init [children=300] */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 4

static pthread_barrier_t barrier;

static void *first_big_malloc(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&barrier);
    char *p = malloc(200000);
    if (p == NULL)
        _exit(3);
    memset(p, 0x5a, 200000);
    free(p);
    return NULL;
}

static void child(void)
{
    pthread_t t[THREADS];
    if (pthread_barrier_init(&barrier, NULL, THREADS) != 0)
        _exit(2);
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, first_big_malloc, NULL) != 0)
            _exit(2);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    _exit(0);
}

static void say(const char *s) { (void)!write(2, s, strlen(s)); }

static void say_num(long v)
{
    char buf[24];
    int n = 0;
    do
        buf[sizeof buf - 1 - n++] = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    (void)!write(2, buf + sizeof buf - n, (size_t)n);
}

int main(int argc, char **argv)
{
    long children = argc > 1 ? atol(argv[1]) : 300;
    long bad = 0;
    for (long i = 0; i < children; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            say("stress_glibc_init: fork failed\n");
            return 1;
        }
        if (pid == 0)
            child();
        int status = 0;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            bad++;
    }
    say("stress_glibc_init: ");
    say_num(bad);
    say(" of ");
    say_num(children);
    say(" children failed (each: 4 threads making their first glibc allocation at once)\n");
    return bad == 0 ? 0 : 1;
}
