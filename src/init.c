/* SPDX-License-Identifier: MIT
 * Start-up and fork. Initialisation is lazy and re-entrant: the first malloc may come from ld.so or
 * from a constructor before ours; whatever allocates while start-up is in progress (pthread_atfork
 * may) is served by the system allocator. Exports pa_init_slow and the size-class table. */
#include "internal.h"

_Atomic int pa_init_state;
pthread_key_t pa_thread_key;
uint8_t pa_class_of[PA_NWORDS];

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int init_running __attribute__((tls_model("initial-exec")));

/* Size -> class for the alignment mode: classic serves each multiple of 8 exactly; the default
 * rounds everything above 8 bytes up to a multiple of 16, so such blocks are 16-aligned. */
static void init_classes(int align) {
    for (uint32_t w = 0; w < PA_NWORDS; w++) {
        uint32_t size = w ? w * 8 : 8;
        if (align == 16 && size > 8) size = (size + 15) & ~15u;
        pa_class_of[w] = (uint8_t)(size / 8 - 1);
    }
    /* The request sizes each class serves, for the heaps' direct[] tables. */
    for (uint32_t c = 0; c < PA_NCLASS; c++) {
        pa_class_size_lo[c] = 1;
        pa_class_size_hi[c] = 0; /* empty range: no size maps here */
    }
    for (uint32_t n = PA_NDIRECT; n-- > 0;) {
        uint32_t c = pa_class_of[(n + 7) >> 3];
        if (pa_class_size_lo[c] > pa_class_size_hi[c]) pa_class_size_hi[c] = (uint16_t)n;
        pa_class_size_lo[c] = (uint16_t)n;
    }
}

/* fork: take every lock in the documented order, so the child starts with none held. */
static void fork_prepare(void) {
    pthread_mutex_lock(&pa_heaps_lock);
    pthread_mutex_lock(&pa_abandoned_lock);
    pthread_mutex_lock(&pa_notify_lock);
    pthread_mutex_lock(&pa_pool_lock);
}

static void fork_release(void) {
    pthread_mutex_unlock(&pa_pool_lock);
    pthread_mutex_unlock(&pa_notify_lock);
    pthread_mutex_unlock(&pa_abandoned_lock);
    pthread_mutex_unlock(&pa_heaps_lock);
}

bool pa_init_slow(void) {
    int s = atomic_load_explicit(&pa_init_state, memory_order_acquire);
    if (s == 2) return true;
    if (s == 3 || init_running) return false;
    init_running = 1;
    pthread_mutex_lock(&init_lock);
    s = atomic_load_explicit(&pa_init_state, memory_order_acquire);
    if (s == 0) {
        atomic_store_explicit(&pa_init_state, 1, memory_order_relaxed);
        pa_options_read();
        init_classes(pa_opt.align);
        pa_sys_prime(); /* see passthrough.c: glibc's allocator must not start in a worker thread */
        bool ok = pthread_key_create(&pa_thread_key, pa_heap_thread_exit) == 0 && pa_arena_init();
        if (ok) pthread_atfork(fork_prepare, fork_release, fork_release);
        s = ok ? 2 : 3;
        atomic_store_explicit(&pa_init_state, s, memory_order_release);
    }
    pthread_mutex_unlock(&init_lock);
    init_running = 0;
    return s == 2;
}

/* Start early where we can, so options are read before threads race for the first malloc. */
__attribute__((constructor)) static void init_constructor(void) { (void)pa_ready(); }
