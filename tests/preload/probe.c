/* SPDX-License-Identifier: MIT
 * A program that knows nothing of pyalloc (built without linking it): prints
 * malloc_usable_size(malloc(n)) for each n on the command line (default 32). Under
 * LD_PRELOAD=libpyalloc.so it prints pyalloc's class size (32 for 32), under glibc its own (40). */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        void *p = malloc(32);
        printf("%zu\n", malloc_usable_size(p));
        free(p);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        void *p = malloc(strtoul(argv[i], NULL, 10));
        printf("%zu\n", malloc_usable_size(p));
        free(p);
    }
    return 0;
}
