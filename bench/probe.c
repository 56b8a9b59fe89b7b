/* SPDX-License-Identifier: MIT
 * probe: tells which shared object serves malloc in this process, so the runner can prove that an
 * LD_PRELOAD took (ld.so ignores a preload it cannot open, with only a warning). Prints
 * `malloc_from=<path> usable32=<malloc_usable_size(malloc(32))> align_mode=<pa_alignment_mode() or 0>`. */
#include "common.h"
#include <dlfcn.h>
#include <malloc.h>

int main(void)
{
    Dl_info info = { 0 };
    void *sym = dlsym(RTLD_DEFAULT, "malloc");
    if (!sym || !dladdr(sym, &info) || !info.dli_fname)
        info.dli_fname = "?";

    void *p = malloc(32);
    size_t usable = p ? malloc_usable_size(p) : 0;
    free(p);

    int align_mode = 0;
    int (*mode)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "pa_alignment_mode");
    if (mode)
        align_mode = mode();
    printf("malloc_from=%s usable32=%zu align_mode=%d\n", info.dli_fname, usable, align_mode);
    return 0;
}
