/* SPDX-License-Identifier: MIT
 * The size-class tables of sizeclass.h, built once at start-up for the alignment mode.
 * Exports pa_class_of, pa_class_size_lo, pa_class_size_hi and pa_sizeclass_init. */
#include "internal.h"

uint8_t pa_class_of[PA_NWORDS];
uint16_t pa_class_size_lo[PA_NCLASS], pa_class_size_hi[PA_NCLASS];

void pa_sizeclass_init(int align) {
    for (uint32_t w = 0; w < PA_NWORDS; w++) pa_class_of[w] = (uint8_t)(pa_class_round(w * 8, align) / 8 - 1);
    for (uint32_t c = 0; c < PA_NCLASS; c++) {
        pa_class_size_lo[c] = 1;
        pa_class_size_hi[c] = 0; /* empty range: no size maps here */
    }
    for (uint32_t n = PA_NDIRECT; n-- > 0;) {
        uint32_t c = pa_class_for(n);
        if (pa_class_size_lo[c] > pa_class_size_hi[c]) pa_class_size_hi[c] = (uint16_t)n;
        pa_class_size_lo[c] = (uint16_t)n;
    }
}
