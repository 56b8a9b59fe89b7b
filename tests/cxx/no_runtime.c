/* SPDX-License-Identifier: MIT
 * operator new called from a program with no C++ runtime loaded (a C program, linked with
 * -lpyalloc, calling the mangled names): the pools serve it; a failed nothrow form returns NULL;
 * a failed throwing form cannot throw std::bad_alloc, and aborts with pyalloc's message (the test
 * driver, run_no_runtime.sh, checks the message and the SIGABRT). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pyalloc.h"

void *cxx_new(size_t n) __asm__("_Znwm");
void *cxx_new_nothrow(size_t n, const void *tag) __asm__("_ZnwmRKSt9nothrow_t");
void cxx_delete(void *p) __asm__("_ZdlPv");

int main(void)
{
    static const char nothrow_tag = 0;
    void *p = cxx_new(24);
    if (!p || !pa_is_small(p)) {
        fprintf(stderr, "operator new(24) without a C++ runtime: %p\n", p);
        return 1;
    }
    cxx_delete(p);
    volatile size_t impossible = SIZE_MAX / 2;
    if (cxx_new_nothrow(impossible, &nothrow_tag) != NULL) {
        fprintf(stderr, "operator new(SIZE_MAX / 2, nothrow) did not fail\n");
        return 1;
    }
    printf("nothrow: NULL\n");
    fflush(stdout);
    cxx_new(impossible); /* aborts */
    fprintf(stderr, "operator new(SIZE_MAX / 2) returned\n");
    return 1;
}
