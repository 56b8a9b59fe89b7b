/* SPDX-License-Identifier: MIT
 * The C program of tests/sites: allocations of known sizes at known places, for pyalloc stats
 * --sites to find. Built -O2 -g -fomit-frame-pointer, so the unwinder cannot lean on frame pointers.
 *   sites_prog leakpeak   leak_fn keeps 200,000 x 104 B and 5,000 x 4,000 B to exit (a leak);
 *                         peak_fn then holds 200,000 x 200 B and 5,000 x 8,000 B and frees them
 *   sites_prog frames LIB chain_a -> chain_b -> chain_c call LIB's lib_leak (dlopen'ed) and keep
 *                         what it returns; realign_fn (a 64-byte aligned local: its CFA is a DWARF
 *                         expression) and alloca_fn (a frame of run-time size) allocate too
 * Each allocating line carries a SITE: marker that test_sites.py looks for. Prints nothing. */
#include <alloca.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline, noclone))

static void **kept;
static size_t nkept;

static void keep(void *p) {
    kept[nkept++] = p;
}

NOINLINE void leak_fn(void) {
    for (int i = 0; i < 200000; i++) keep(malloc(104)); /* SITE:leak_small */
    for (int i = 0; i < 5000; i++) keep(malloc(4000)); /* SITE:leak_large */
}

NOINLINE void peak_fn(void) {
    void **v = malloc(205000 * sizeof *v);
    for (int i = 0; i < 200000; i++) v[i] = malloc(200); /* SITE:peak_small */
    for (int i = 0; i < 5000; i++) v[200000 + i] = malloc(8000); /* SITE:peak_large */
    for (int i = 0; i < 205000; i++) {
        memset(v[i], i, 8);
        free(v[i]);
    }
    free(v);
}

/* A frame realigned for its 64-byte aligned local, of run-time size: gcc keeps the CFA in a DWARF
 * expression (DW_CFA_def_cfa_expression, through the saved realignment pointer) and the saved
 * registers' places too (DW_CFA_expression). */
NOINLINE void *realign_fn(size_t n) {
    _Alignas(64) char buf[64];
    char vla[n / 8 + 16];
    memset(buf, (int)n, sizeof buf);
    memset(vla, 2, sizeof vla);
    __asm__ volatile("" : : "r"(buf), "r"(vla) : "memory");
    void *p = malloc(n); /* SITE:realign */
    memcpy(p, buf, 8);
    return p;
}

/* A frame of run-time size: the CFA is rbp-based from the alloca on. */
NOINLINE void *alloca_fn(size_t n) {
    char *buf = alloca(n / 4 + 16);
    memset(buf, 1, n / 4 + 16);
    __asm__ volatile("" : : "r"(buf) : "memory");
    void *p = malloc(n); /* SITE:alloca */
    memcpy(p, buf, 8);
    return p;
}

typedef void *(*lib_fn)(size_t);
static lib_fn lib_leak;

NOINLINE void *chain_c(size_t n) {
    void *p = lib_leak(n);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}
NOINLINE void *chain_b(size_t n) {
    void *p = chain_c(n);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}
NOINLINE void *chain_a(size_t n) {
    void *p = chain_b(n);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

int main(int argc, char **argv) {
    kept = malloc(400000 * sizeof *kept);
    if (argc == 2 && strcmp(argv[1], "leakpeak") == 0) {
        leak_fn();
        peak_fn();
    } else if (argc == 3 && strcmp(argv[1], "frames") == 0) {
        void *lib = dlopen(argv[2], RTLD_NOW);
        if (!lib || !(lib_leak = (lib_fn)dlsym(lib, "lib_leak"))) {
            fprintf(stderr, "sites_prog: %s\n", dlerror());
            return 1;
        }
        for (int i = 0; i < 20000; i++) keep(chain_a(1000));
        for (int i = 0; i < 20000; i++) keep(realign_fn(600));
        for (int i = 0; i < 20000; i++) keep(alloca_fn(700));
    } else {
        fprintf(stderr, "usage: sites_prog leakpeak | frames LIB\n");
        return 2;
    }
    return 0;
}
