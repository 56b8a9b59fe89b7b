/* SPDX-License-Identifier: MIT
 * Helpers for the stress tests: a scale factor so a sanitizer run can shrink the counts, a deadline
 * so no test spins forever, and checked pthread calls. Counts, not time, bound each test. */
#ifndef STRESS_COMMON_H
#define STRESS_COMMON_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pa_test.h"

/* PA_TEST_SCALE=percent scales the iteration counts (default 100); sanitizer runs may lower it. */
static inline size_t stress_scaled(size_t n)
{
    const char *v = getenv("PA_TEST_SCALE");
    long pct = v != NULL ? strtol(v, NULL, 10) : 100;
    if (pct <= 0)
        pct = 100;
    size_t r = n * (size_t)pct / 100;
    return r > 0 ? r : 1;
}

static inline double stress_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define STRESS_CHECK(call)                                                                         \
    do {                                                                                           \
        int stress_rc_ = (call);                                                                   \
        if (stress_rc_ != 0) {                                                                     \
            fprintf(stderr, "%s:%d: %s failed: %d\n", __FILE__, __LINE__, #call, stress_rc_);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif /* STRESS_COMMON_H */
