/* SPDX-License-Identifier: MIT
 * Size classes: 64 classes 8 bytes apart, 8 to 512 bytes. The default mode serves 8, 16 and every
 * multiple of 16 (a request of 9..512 bytes is rounded up to a multiple of 16, so its block is
 * 16-aligned); classic mode (PYALLOC_ALIGN=8) serves each multiple of 8 exactly. size -> class is
 * one load from a table built at start-up for the mode (sizeclass.c: pa_sizeclass_init), which
 * also gives the range of request sizes each class serves, for the heaps' direct[] tables.
 * Included by internal.h. */
#ifndef PA_SIZECLASS_H
#define PA_SIZECLASS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

extern uint8_t pa_class_of[PA_NWORDS]; /* (size + 7) >> 3 -> class, for the mode in force */
extern uint16_t pa_class_size_lo[PA_NCLASS], pa_class_size_hi[PA_NCLASS]; /* request sizes per
                                                                              class; lo > hi: none */
void pa_sizeclass_init(int align);

/* The class of a request of n <= PA_SMALL bytes. */
static inline uint32_t pa_class_for(size_t n) { return pa_class_of[(n + 7) >> 3]; }
static inline uint32_t pa_class_size(uint32_t cls) { return (cls + 1) * 8; }
static inline uint32_t pa_class_blocks(uint32_t cls) { return (uint32_t)(PA_PAGE_SIZE / pa_class_size(cls)); }

/* The block size that serves a request of n <= PA_SMALL bytes in alignment mode align (the rule
 * the table is built from). */
static inline uint32_t pa_class_round(uint32_t n, int align) {
    uint32_t size = n <= 8 ? 8 : (n + 7) & ~7u;
    return align == 16 && size > 8 ? (size + 15) & ~15u : size;
}
/* Whether class cls serves any request in mode align (33 classes do by default, 64 in classic). */
static inline bool pa_class_served(uint32_t cls, int align) {
    return pa_class_round(pa_class_size(cls), align) == pa_class_size(cls);
}

#endif /* PA_SIZECLASS_H */
