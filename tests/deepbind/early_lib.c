/* SPDX-License-Identifier: MIT
 * Linked into test_deepbind (before libpyalloc in its dependencies, so that its constructor runs
 * before pyalloc's): opens deep libraries with RTLD_DEEPBIND before pyalloc's constructor has run,
 * once through the exported dlopen (pyalloc's) and once through glibc's own dlopen, found in libc.so.6
 * and called directly, which bypasses pyalloc's: only the start-up repair can fix that one. The paths
 * come from PA_DEEP_EARLY and PA_DEEP_BYPASS. */
#include <dlfcn.h>
#include <stdlib.h>

#define EXPORT __attribute__((visibility("default")))

EXPORT void *early_handle, *bypass_handle;

__attribute__((constructor)) static void early_open(void)
{
    const char *early = getenv("PA_DEEP_EARLY"), *bypass = getenv("PA_DEEP_BYPASS");
    if (early)
        early_handle = dlopen(early, RTLD_NOW | RTLD_DEEPBIND);
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    void *(*glibc_dlopen)(const char *, int) = libc ? (void *(*)(const char *, int))dlsym(libc, "dlopen") : NULL;
    if (bypass && glibc_dlopen)
        bypass_handle = glibc_dlopen(bypass, RTLD_NOW | RTLD_DEEPBIND);
}
