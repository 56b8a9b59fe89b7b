/* SPDX-License-Identifier: MIT
 * Linked with -lpyalloc (pkg-config) or pyalloc::pyalloc (find_package): prints
 * malloc_usable_size(malloc(32)), which is 32 only when pyalloc replaced malloc (glibc says 40),
 * then checks the installed header and the pa_* API. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

#include <pyalloc.h>

int main(void)
{
    void *p = malloc(32);
    printf("%zu\n", malloc_usable_size(p));
    if (!pa_is_small(p) || pa_alignment_mode() != 16) {
        fprintf(stderr, "pa_is_small(malloc(32)) = %d, pa_alignment_mode() = %d\n", pa_is_small(p),
                pa_alignment_mode());
        return 1;
    }
    free(p);
    p = pa_malloc(24);
    if (pa_malloc_usable_size(p) != 32) {
        fprintf(stderr, "pa_malloc_usable_size(pa_malloc(24)) = %zu\n", pa_malloc_usable_size(p));
        return 1;
    }
    pa_free(p);
    printf("%s\n", PA_VERSION_STRING);
    return 0;
}
