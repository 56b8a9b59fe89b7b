/* SPDX-License-Identifier: MIT
 * The library tests/sites/sites_prog opens with dlopen (after the program started): the unwinder
 * must find its frames' call-frame information too. Built -O2 -g -fomit-frame-pointer. */
#include <stdlib.h>
#include <string.h>

__attribute__((noinline, visibility("default"))) void *lib_leak(size_t n) {
    char *p = malloc(n); /* SITE:lib_leak */
    memset(p, 3, 8);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}
