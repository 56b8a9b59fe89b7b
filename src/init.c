/* SPDX-License-Identifier: MIT
 * Start-up and fork. Initialisation is lazy and re-entrant: the first malloc may come from ld.so or
 * from a constructor before ours; whatever allocates while start-up is in progress (pthread_atfork
 * may) is served by the system allocator. Exports pa_init_slow, pa_init_state and pa_thread_key; the
 * fork handlers take every lock, the background thread's included. */
#include "internal.h"

_Atomic int pa_init_state;
pthread_key_t pa_thread_key;

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int init_running __attribute__((tls_model("initial-exec")));

/* fork: take every lock in the documented order, so the child starts with none held. */
static void fork_prepare(void) {
    pthread_mutex_lock(&pa_heaps_lock);
    pthread_mutex_lock(&pa_abandoned_lock);
    pthread_mutex_lock(&pa_mesh_lock);
    pa_mesh_fork_prepare(); /* shared frames become private: parent and child get snapshots */
    pthread_mutex_lock(&pa_notify_lock);
    pthread_mutex_lock(&pa_pool_lock);
    pa_bg_fork_prepare();
}

static void fork_release(void) {
    pthread_mutex_unlock(&pa_pool_lock);
    pthread_mutex_unlock(&pa_notify_lock);
    pa_mesh_fork_after();
    pthread_mutex_unlock(&pa_mesh_lock);
    pthread_mutex_unlock(&pa_abandoned_lock);
    pthread_mutex_unlock(&pa_heaps_lock);
}

static void fork_parent(void) {
    pa_bg_fork_parent();
    fork_release();
}

/* The child has no background thread: it gets one again when it has work for one. */
static void fork_child(void) {
    pa_bg_fork_child();
    fork_release();
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
        pa_sizeclass_init(pa_opt.align);
        pa_sys_prime(); /* see passthrough.c: glibc's allocator must not start in a worker thread */
        bool ok = pthread_key_create(&pa_thread_key, pa_heap_thread_exit) == 0 && pa_arena_init();
        if (ok) pthread_atfork(fork_prepare, fork_parent, fork_child);
        s = ok ? 2 : 3;
        atomic_store_explicit(&pa_init_state, s, memory_order_release);
    }
    pthread_mutex_unlock(&init_lock);
    init_running = 0;
    return s == 2;
}

/* Start early where we can, so options are read before threads race for the first malloc. A
 * background thread may be started only from here on: before constructors run, libc may not be
 * ready for pthread_create (ld.so calls malloc while it loads the program). */
__attribute__((constructor)) static void init_constructor(void) {
    if (pa_ready()) {
        pa_bg_init();
        pa_sample_start(); /* PYALLOC_SITES: outside malloc, where it may look around */
    }
}
