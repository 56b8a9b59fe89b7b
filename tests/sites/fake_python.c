/* SPDX-License-Identifier: MIT
 * A program that looks like a CPython interpreter of a version pyalloc does not know: it exports
 * _PyRuntime and Py_Version (3.12.1) in its dynamic symbol table, as python3.12 would. pyalloc must
 * refuse to read its frames, say why in the sites report, and still report its native frames. */
#include <stdlib.h>
#include <string.h>

__attribute__((visibility("default"))) const unsigned long Py_Version = 0x030C01F0;
__attribute__((visibility("default"))) char _PyRuntime[4096];

__attribute__((noinline)) void *fake_alloc(size_t n) {
    void *p = malloc(n); /* SITE:fake */
    memset(p, 1, 8);
    return p;
}

int main(void) {
    static void *kept[2000];
    for (int i = 0; i < 2000; i++) kept[i] = fake_alloc(3000);
    return kept[0] == NULL;
}
